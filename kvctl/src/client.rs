//! HTTP to the cluster: one request, sent to the endpoints in order until
//! one answers, and the failures a command can end with.

use reqwest::Method;
use reqwest::blocking::Client as HttpClient;
use serde_json::Value;
use std::fmt;
use std::process::ExitCode;
use std::time::Duration;

/// The longest wait for a TCP connection, so that a dead endpoint costs
/// little before the next one is tried.
const CONNECT_TIMEOUT_MAX: Duration = Duration::from_secs(2);

/// One request of API.md.
#[derive(Clone, Debug)]
pub struct Call {
    pub method: Method,
    /// Path and query, already percent-encoded: `/kv/a%2Fb?consistency=stale`.
    pub path: String,
    pub body: Option<Value>,
    /// Whether a request that may have reached a node (a timeout, a dropped
    /// connection) can be sent again elsewhere: reads, and writes that carry
    /// a `(client_id, seq)` the server deduplicates.
    pub retry_safe: bool,
}

impl Call {
    pub fn get(path: String) -> Call {
        Call {
            method: Method::GET,
            path,
            body: None,
            retry_safe: true,
        }
    }

    pub fn write(method: Method, path: String, body: Option<Value>, retry_safe: bool) -> Call {
        Call {
            method,
            path,
            body,
            retry_safe,
        }
    }
}

/// A 2xx answer.
#[derive(Clone, Debug)]
pub struct Reply {
    pub endpoint: String,
    pub body: Value,
}

/// An error body `{"error": {"code", "message"}}`, or what stood for one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerError {
    pub endpoint: String,
    pub status: u16,
    pub code: String,
    pub message: String,
    /// The body as the server sent it, printed under `--output json`.
    pub body: Value,
}

impl ServerError {
    pub(crate) fn from_reply(endpoint: &str, status: u16, body: Value, text: &str) -> ServerError {
        let error = body.get("error");
        let field = |name: &str| {
            error
                .and_then(|e| e.get(name))
                .and_then(Value::as_str)
                .map(str::to_string)
        };
        ServerError {
            endpoint: endpoint.to_string(),
            status,
            code: field("code").unwrap_or_else(|| format!("http_{status}")),
            message: field("message").unwrap_or_else(|| text.trim().to_string()),
            body,
        }
    }
}

/// How a command failed; each maps to one exit code (see `--help`).
#[derive(Debug)]
pub enum Failure {
    /// The server answered with an error.
    Server(ServerError),
    /// A write reached a node but no answer came back: it may have applied.
    OutcomeUnknown { endpoint: String, detail: String },
    /// Every endpoint failed before answering: `(endpoint, reason)`.
    Unreachable(Vec<(String, String)>),
    /// Bad arguments found after parsing.
    Usage(String),
    /// A request kvctl can tell will not succeed (promoting a non-member).
    Client(String),
}

impl Failure {
    pub fn exit_code(&self) -> ExitCode {
        ExitCode::from(match self {
            Failure::Server(_) | Failure::OutcomeUnknown { .. } | Failure::Client(_) => 1,
            Failure::Usage(_) => 2,
            Failure::Unreachable(_) => 3,
        })
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::Server(e) => write!(f, "{}: {}", e.code, e.message),
            Failure::OutcomeUnknown { endpoint, detail } => write!(
                f,
                "outcome unknown: {endpoint}: {detail}; the write may or may not have \
                 been applied (retry with the same --client-id and --seq to be safe)"
            ),
            Failure::Unreachable(reasons) => {
                write!(f, "no endpoint reachable")?;
                for (endpoint, reason) in reasons {
                    write!(f, "\n  {endpoint}: {reason}")?;
                }
                Ok(())
            }
            Failure::Usage(message) => write!(f, "usage: {message}"),
            Failure::Client(message) => write!(f, "error: {message}"),
        }
    }
}

/// What one attempt at one endpoint came to.
#[derive(Debug)]
pub enum Attempt {
    Answered(Reply),
    Refused(ServerError),
    /// The request never reached the node (connection refused, DNS...).
    NotSent(String),
    /// The request may have reached the node: timeout, dropped connection.
    MaybeSent(String),
}

#[derive(Clone, Debug)]
pub struct Client {
    http: HttpClient,
    pub endpoints: Vec<String>,
}

impl Client {
    pub fn new(endpoints: &[String], timeout: Duration) -> Result<Client, Failure> {
        let endpoints = normalize_endpoints(endpoints)?;
        let http = HttpClient::builder()
            .timeout(timeout)
            .connect_timeout(timeout.min(CONNECT_TIMEOUT_MAX))
            .no_proxy()
            .build()
            .map_err(|e| Failure::Usage(format!("cannot build the HTTP client: {e}")))?;
        Ok(Client { http, endpoints })
    }

    /// Sends `call` to each endpoint in turn until one answers something
    /// other than 503. See `Call::retry_safe` for when a timeout moves on.
    pub fn send(&self, call: &Call) -> Result<Reply, Failure> {
        let mut unreachable = Vec::new();
        let mut unavailable = None;
        for endpoint in &self.endpoints {
            match self.attempt(endpoint, call) {
                Attempt::Answered(reply) => return Ok(reply),
                Attempt::Refused(e) if e.status == 503 => unavailable = Some(e),
                Attempt::Refused(e) => return Err(Failure::Server(e)),
                Attempt::NotSent(reason) => unreachable.push((endpoint.clone(), reason)),
                Attempt::MaybeSent(reason) if call.retry_safe => {
                    unreachable.push((endpoint.clone(), reason))
                }
                Attempt::MaybeSent(detail) => {
                    return Err(Failure::OutcomeUnknown {
                        endpoint: endpoint.clone(),
                        detail,
                    });
                }
            }
        }
        // A node that answered 503 was reachable: say what it said.
        Err(match unavailable {
            Some(e) => Failure::Server(e),
            None => Failure::Unreachable(unreachable),
        })
    }

    /// One request to one endpoint, without failover.
    pub fn attempt(&self, endpoint: &str, call: &Call) -> Attempt {
        let url = format!("{endpoint}{}", call.path);
        let mut request = self.http.request(call.method.clone(), &url);
        if let Some(body) = &call.body {
            request = request.json(body);
        }
        let response = match request.send() {
            Ok(response) => response,
            // The endpoint is printed next to the reason: drop the URL.
            Err(e) if e.is_connect() || e.is_builder() => {
                return Attempt::NotSent(describe(&e.without_url()));
            }
            Err(e) => return Attempt::MaybeSent(describe(&e.without_url())),
        };
        let status = response.status().as_u16();
        let text = match response.text() {
            Ok(text) => text,
            Err(e) => return Attempt::MaybeSent(describe(&e.without_url())),
        };
        let body = if text.trim().is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or_else(|_| Value::String(text.clone()))
        };
        if (200..300).contains(&status) {
            Attempt::Answered(Reply {
                endpoint: endpoint.to_string(),
                body,
            })
        } else {
            Attempt::Refused(ServerError::from_reply(endpoint, status, body, &text))
        }
    }
}

/// Trims trailing slashes and adds `http://` where no scheme is given.
fn normalize_endpoints(endpoints: &[String]) -> Result<Vec<String>, Failure> {
    let endpoints: Vec<String> = endpoints
        .iter()
        .map(|e| e.trim().trim_end_matches('/'))
        .filter(|e| !e.is_empty())
        .map(|e| {
            if e.contains("://") {
                e.to_string()
            } else {
                format!("http://{e}")
            }
        })
        .collect();
    if endpoints.is_empty() {
        return Err(Failure::Usage("--endpoints is empty".into()));
    }
    Ok(endpoints)
}

/// An error with its chain of causes, which reqwest keeps out of `Display`.
fn describe(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

/// Percent-encodes one path segment or query value: everything but the
/// unreserved characters of RFC 3986, so `/`, `?`, `%` and spaces in keys
/// survive the trip.
pub fn encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encoding_keeps_unreserved_characters_and_escapes_the_rest() {
        assert_eq!(encode("a-b_c.d~9"), "a-b_c.d~9");
        assert_eq!(encode("a/b c?%"), "a%2Fb%20c%3F%25");
        assert_eq!(encode("é"), "%C3%A9");
    }

    #[test]
    fn endpoints_get_a_scheme_and_lose_trailing_slashes() {
        let given = vec!["127.0.0.1:8080/".to_string(), " https://h:1 ".to_string()];
        let endpoints = normalize_endpoints(&given).unwrap();
        assert_eq!(endpoints, vec!["http://127.0.0.1:8080", "https://h:1"]);
        assert!(normalize_endpoints(&[String::new()]).is_err());
    }

    #[test]
    fn an_error_body_gives_its_code_and_message() {
        let body = serde_json::json!({"error": {"code": "stale_seq", "message": "old"}});
        let e = ServerError::from_reply("http://x", 409, body, "");
        assert_eq!((e.code.as_str(), e.message.as_str()), ("stale_seq", "old"));
        let e = ServerError::from_reply("http://x", 502, Value::Null, "bad gateway\n");
        assert_eq!(
            (e.code.as_str(), e.message.as_str()),
            ("http_502", "bad gateway")
        );
    }
}
