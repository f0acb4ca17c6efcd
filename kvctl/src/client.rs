//! HTTP to the cluster: one request, sent to the endpoints in order until
//! one answers, and the failures a command can end with.
//!
//! One hyper client serves `http://` and `https://` endpoints alike (TLS
//! from `tls.rs`), driven by a one-worker tokio runtime so that callers stay
//! blocking; every request carries `Authorization: Bearer <token>` when a
//! token is given. The API for commands:
//!
//! - `client.get(path)`, `post(path, body)`, `put(path, body)`,
//!   `delete(path)`: one request with failover, `Ok(Reply)` on 2xx
//!   (`reply.status`, `reply.body` as JSON), `Err(Failure)` otherwise;
//! - `client.send(&Call)`: the same with control over retries;
//! - `client.attempt(endpoint, &Call)`: one endpoint, no failover;
//! - `client.stream(path)`: a long-lived `GET` read line by line
//!   (NDJSON), with failover until one endpoint answers 2xx.

use crate::tls::{TlsFiles, TlsSummary, explain, find_rustls_error};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper_util::client::legacy::Client as HyperClient;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;
use std::collections::VecDeque;
use std::fmt;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

pub use hyper::Method;

/// The longest wait for a TCP connection, so that a dead endpoint costs
/// little before the next one is tried.
const CONNECT_TIMEOUT_MAX: Duration = Duration::from_secs(2);

/// The longest line `Lines` accepts from a stream (a watch event).
const MAX_LINE_BYTES: usize = 16 << 20;

/// Exit code when a node refused the credentials (401/403) or a TLS
/// handshake failed: retrying will not help, the setup must change.
pub const CREDENTIALS_EXIT: u8 = 5;

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
    pub status: u16,
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

    /// 401 (no valid token) or 403 (the token's role is too low).
    pub fn is_credentials(&self) -> bool {
        matches!(self.status, 401 | 403)
    }

    /// `endpoint X refused the token: code: message (hint)`.
    pub fn credentials_message(&self, token_given: bool) -> String {
        // The server's message says what was wrong with a token; without
        // one, say how to give it.
        let hint = if token_given {
            ""
        } else {
            " (no token was given: use --token, --token-file, KVCTL_TOKEN or KVCTL_TOKEN_FILE)"
        };
        let what = if token_given {
            "the token"
        } else {
            "the request without a token"
        };
        format!(
            "endpoint {} refused {what}: {}: {}{hint}",
            self.endpoint, self.code, self.message
        )
    }
}

/// How a command failed; each maps to one exit code (see `--help`).
#[derive(Debug)]
pub enum Failure {
    /// The server answered with an error.
    Server(ServerError),
    /// A node answered 401 or 403: the token is missing, unknown, or its
    /// role is too low. `token_given` says whether one was sent.
    Credentials {
        error: ServerError,
        token_given: bool,
    },
    /// No endpoint answered and at least one failed its TLS handshake:
    /// `(endpoint, reason)` for every endpoint tried.
    Tls(Vec<(String, String)>),
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
            Failure::Credentials { .. } | Failure::Tls(_) => CREDENTIALS_EXIT,
        })
    }

    /// The error body a server sent, printed under `--output json`.
    pub fn server_body(&self) -> Option<&Value> {
        match self {
            Failure::Server(e) | Failure::Credentials { error: e, .. } => {
                (!e.body.is_null()).then_some(&e.body)
            }
            _ => None,
        }
    }
}

fn write_reasons(f: &mut fmt::Formatter<'_>, reasons: &[(String, String)]) -> fmt::Result {
    for (endpoint, reason) in reasons {
        write!(f, "\n  {endpoint}: {reason}")?;
    }
    Ok(())
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::Server(e) => write!(f, "{}: {}", e.code, e.message),
            Failure::Credentials { error, token_given } => {
                write!(f, "{}", error.credentials_message(*token_given))
            }
            Failure::Tls(reasons) => {
                write!(f, "TLS failed: no endpoint could be reached securely")?;
                write_reasons(f, reasons)
            }
            Failure::OutcomeUnknown { endpoint, detail } => write!(
                f,
                "outcome unknown: {endpoint}: {detail}; the write may or may not have \
                 been applied (retry with the same --client-id and --seq to be safe)"
            ),
            Failure::Unreachable(reasons) => {
                write!(f, "no endpoint reachable")?;
                write_reasons(f, reasons)
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
    /// The TLS handshake failed (the reason names what failed); the node
    /// did not process the request.
    TlsFailed(String),
}

impl Attempt {
    /// A 401/403 answer or a failed handshake: the credentials, not the
    /// node, are the problem.
    pub fn is_credentials_failure(&self) -> bool {
        match self {
            Attempt::Refused(e) => e.is_credentials(),
            Attempt::TlsFailed(_) => true,
            _ => false,
        }
    }
}

/// How to reach the cluster: timeouts, the token and the TLS files.
#[derive(Clone, Debug)]
pub struct ClientOptions {
    /// Timeout of each request (the whole exchange; the connection gets at
    /// most `CONNECT_TIMEOUT_MAX` of it).
    pub timeout: Duration,
    /// Sent as `Authorization: Bearer <token>`.
    pub token: Option<String>,
    pub tls: TlsFiles,
}

impl ClientOptions {
    pub fn plain(timeout: Duration) -> ClientOptions {
        ClientOptions {
            timeout,
            token: None,
            tls: TlsFiles::default(),
        }
    }
}

type Connector = hyper_rustls::HttpsConnector<HttpConnector>;

struct Inner {
    /// One worker thread drives every connection; callers block on it.
    runtime: tokio::runtime::Runtime,
    http: HyperClient<Connector, Full<Bytes>>,
    authorization: Option<HeaderValue>,
    timeout: Duration,
    tls: TlsSummary,
}

#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
    pub endpoints: Vec<String>,
}

impl fmt::Debug for Client {
    // Never prints the token.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("endpoints", &self.endpoints)
            .field("token", &self.inner.authorization.is_some())
            .finish()
    }
}

/// Why one exchange failed.
enum ExchangeError {
    NotSent(String),
    MaybeSent(String),
    Tls(String),
}

impl Client {
    /// A client without token or TLS files (`https://` endpoints are checked
    /// against the system CA bundle).
    pub fn new(endpoints: &[String], timeout: Duration) -> Result<Client, Failure> {
        Client::with_options(endpoints, &ClientOptions::plain(timeout))
    }

    pub fn with_options(endpoints: &[String], options: &ClientOptions) -> Result<Client, Failure> {
        let endpoints = normalize_endpoints(endpoints)?;
        let (tls_config, tls) = crate::tls::client_config(&options.tls).map_err(Failure::Usage)?;
        let authorization = match &options.token {
            None => None,
            Some(token) => {
                let mut value =
                    HeaderValue::from_str(&format!("Bearer {token}")).map_err(|_| {
                        Failure::Usage("the token holds characters a header cannot carry".into())
                    })?;
                value.set_sensitive(true);
                Some(value)
            }
        };
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("kvctl-http")
            .enable_all()
            .build()
            .map_err(|e| Failure::Usage(format!("cannot start the HTTP runtime: {e}")))?;
        let mut connector = HttpConnector::new();
        connector.enforce_http(false);
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(options.timeout.min(CONNECT_TIMEOUT_MAX)));
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls_config)
            .https_or_http()
            .enable_http1()
            .wrap_connector(connector);
        let http = {
            let _entered = runtime.enter();
            HyperClient::builder(TokioExecutor::new()).build(https)
        };
        Ok(Client {
            inner: Arc::new(Inner {
                runtime,
                http,
                authorization,
                timeout: options.timeout,
                tls,
            }),
            endpoints,
        })
    }

    /// Whether requests carry a token.
    pub fn has_token(&self) -> bool {
        self.inner.authorization.is_some()
    }

    /// `GET path` with failover; `Ok` on 2xx.
    pub fn get(&self, path: &str) -> Result<Reply, Failure> {
        self.send(&Call::get(path.to_string()))
    }

    /// `POST path` with a JSON body (or none); not retried after a timeout.
    pub fn post(&self, path: &str, body: Option<Value>) -> Result<Reply, Failure> {
        self.send(&Call::write(Method::POST, path.to_string(), body, false))
    }

    /// `PUT path` with a JSON body; not retried after a timeout.
    pub fn put(&self, path: &str, body: Option<Value>) -> Result<Reply, Failure> {
        self.send(&Call::write(Method::PUT, path.to_string(), body, false))
    }

    /// `DELETE path`; not retried after a timeout.
    pub fn delete(&self, path: &str) -> Result<Reply, Failure> {
        self.send(&Call::write(Method::DELETE, path.to_string(), None, false))
    }

    /// Sends `call` to each endpoint in turn until one answers something
    /// other than 503. See `Call::retry_safe` for when a timeout moves on.
    pub fn send(&self, call: &Call) -> Result<Reply, Failure> {
        let mut tracker = Tracker::default();
        for endpoint in &self.endpoints {
            match self.attempt(endpoint, call) {
                Attempt::Answered(reply) => return Ok(reply),
                Attempt::MaybeSent(detail) if !call.retry_safe => {
                    return Err(Failure::OutcomeUnknown {
                        endpoint: endpoint.clone(),
                        detail,
                    });
                }
                other => tracker.note(endpoint, other, self.has_token())?,
            }
        }
        Err(tracker.failure())
    }

    /// One request to one endpoint, without failover.
    pub fn attempt(&self, endpoint: &str, call: &Call) -> Attempt {
        let url = format!("{endpoint}{}", call.path);
        let body = call.body.as_ref().map(|b| b.to_string().into_bytes());
        let exchange = async {
            let response = self.request(call.method.clone(), &url, body).await?;
            let status = response.status().as_u16();
            let bytes = response
                .into_body()
                .collect()
                .await
                .map_err(|e| self.classify(&url, &e, false))?
                .to_bytes();
            Ok::<_, ExchangeError>((status, bytes))
        };
        let outcome = self
            .inner
            .runtime
            .block_on(async { tokio::time::timeout(self.inner.timeout, exchange).await });
        let (status, bytes) = match outcome {
            Ok(Ok(answer)) => answer,
            Ok(Err(ExchangeError::NotSent(reason))) => return Attempt::NotSent(reason),
            Ok(Err(ExchangeError::MaybeSent(reason))) => return Attempt::MaybeSent(reason),
            Ok(Err(ExchangeError::Tls(reason))) => return Attempt::TlsFailed(reason),
            Err(_) => {
                return Attempt::MaybeSent(format!(
                    "no answer within {:?} (--timeout)",
                    self.inner.timeout
                ));
            }
        };
        let text = String::from_utf8_lossy(&bytes);
        let body = if text.trim().is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or_else(|_| Value::String(text.to_string()))
        };
        if (200..300).contains(&status) {
            Attempt::Answered(Reply {
                endpoint: endpoint.to_string(),
                status,
                body,
            })
        } else {
            Attempt::Refused(ServerError::from_reply(endpoint, status, body, &text))
        }
    }

    /// Opens a long-lived `GET path` (for example a watch) on the first
    /// endpoint that answers 2xx and returns its body line by line. Fails
    /// over as `send` does for a read; `--timeout` bounds only the wait for
    /// the response head, not the stream.
    pub fn stream(&self, path: &str) -> Result<Lines, Failure> {
        let mut tracker = Tracker::default();
        for endpoint in &self.endpoints {
            match self.open_stream(endpoint, path) {
                Ok(lines) => return Ok(lines),
                Err(attempt) => tracker.note(endpoint, attempt, self.has_token())?,
            }
        }
        Err(tracker.failure())
    }

    /// Opens a long-lived `GET` of `path` on one endpoint (no failover):
    /// its lines, or what the attempt came to (an error answer is read
    /// whole, within the timeout).
    pub fn open_stream(&self, endpoint: &str, path: &str) -> Result<Lines, Attempt> {
        let response = self.open_get(endpoint, path)?;
        Ok(Lines {
            client: self.clone(),
            endpoint: endpoint.to_string(),
            body: response.into_body(),
            buffer: Vec::new(),
            ready: VecDeque::new(),
            done: false,
            silence: None,
        })
    }

    /// Opens a `GET` whose body may be large (a backup) on the first
    /// endpoint that answers 2xx, failing over as [`Client::stream`];
    /// `--timeout` bounds the wait for the response head and each chunk.
    pub fn download(&self, path: &str) -> Result<Download, Failure> {
        let mut tracker = Tracker::default();
        for endpoint in &self.endpoints {
            match self.open_get(endpoint, path) {
                Ok(response) => {
                    return Ok(Download {
                        client: self.clone(),
                        endpoint: endpoint.clone(),
                        headers: response.headers().clone(),
                        body: response.into_body(),
                    });
                }
                Err(attempt) => tracker.note(endpoint, attempt, self.has_token())?,
            }
        }
        Err(tracker.failure())
    }

    /// Sends a `GET` to one endpoint and waits for a 2xx response head, or
    /// says what the attempt came to (an error answer is read whole,
    /// within the timeout).
    fn open_get(&self, endpoint: &str, path: &str) -> Result<hyper::Response<Incoming>, Attempt> {
        let url = format!("{endpoint}{path}");
        let opened = self.inner.runtime.block_on(async {
            tokio::time::timeout(self.inner.timeout, self.request(Method::GET, &url, None)).await
        });
        Err(match opened {
            Ok(Ok(response)) if response.status().is_success() => return Ok(response),
            Ok(Ok(response)) => {
                let status = response.status().as_u16();
                let read = self.inner.runtime.block_on(async {
                    let read = tokio::time::timeout(self.inner.timeout, async {
                        response.into_body().collect().await
                    });
                    match read.await {
                        Ok(Ok(collected)) => Some(collected.to_bytes()),
                        _ => None,
                    }
                });
                let text = read
                    .map(|b| String::from_utf8_lossy(&b).to_string())
                    .unwrap_or_default();
                let body = serde_json::from_str(&text).unwrap_or(Value::Null);
                Attempt::Refused(ServerError::from_reply(endpoint, status, body, &text))
            }
            Ok(Err(ExchangeError::NotSent(reason))) => Attempt::NotSent(reason),
            Ok(Err(ExchangeError::MaybeSent(reason))) => Attempt::MaybeSent(reason),
            Ok(Err(ExchangeError::Tls(reason))) => Attempt::TlsFailed(reason),
            Err(_) => Attempt::MaybeSent(format!(
                "no answer within {:?} (--timeout)",
                self.inner.timeout
            )),
        })
    }

    /// Sends one request and waits for the response head.
    async fn request(
        &self,
        method: Method,
        url: &str,
        body: Option<Vec<u8>>,
    ) -> Result<hyper::Response<Incoming>, ExchangeError> {
        let uri: hyper::Uri = url
            .parse()
            .map_err(|e| ExchangeError::NotSent(format!("bad URL {url:?}: {e}")))?;
        let has_body = body.is_some();
        let body = Bytes::from(body.unwrap_or_default());
        let build = || {
            let mut request = hyper::Request::builder()
                .method(method.clone())
                .uri(uri.clone());
            if has_body {
                request = request.header(header::CONTENT_TYPE, "application/json");
            }
            if let Some(authorization) = &self.inner.authorization {
                request = request.header(header::AUTHORIZATION, authorization.clone());
            }
            request.body(Full::new(body.clone()))
        };
        // A request the client cancelled before sending it (its connection
        // closed first) is sent again on a new connection, a bounded number
        // of times. Over TLS 1.3 this is how a server's refusal of the
        // handshake (a missing client certificate) can first show: the
        // alert closes the connection before the request goes out; the next
        // try reads the alert and names it.
        const TRIES: usize = 3;
        let mut tries = 0;
        loop {
            tries += 1;
            let request =
                build().map_err(|e| ExchangeError::NotSent(format!("bad request: {e}")))?;
            match self.inner.http.request(request).await {
                Ok(response) => return Ok(response),
                Err(e) if tries < TRIES && is_canceled_before_sending(&e) => {}
                Err(e) => {
                    let connect = e.is_connect();
                    return Err(self.classify(url, &e, connect));
                }
            }
        }
    }

    /// A TLS failure anywhere in the chain wins (the node did not process
    /// the request: the handshake comes first), and so does an answer to
    /// `http://` that is not HTTP (a TLS port answers a plain request with
    /// an alert record); otherwise `connect` says whether the request could
    /// have been sent.
    fn classify(
        &self,
        url: &str,
        error: &(dyn std::error::Error + 'static),
        connect: bool,
    ) -> ExchangeError {
        if let Some(tls) = find_rustls_error(error) {
            return ExchangeError::Tls(explain(tls, &self.inner.tls));
        }
        if url.starts_with("http://") && is_parse_error(error) {
            return ExchangeError::Tls(
                "TLS error: the endpoint did not answer in plain HTTP; it probably serves \
                 TLS: use an https:// endpoint"
                    .into(),
            );
        }
        let text = describe(error);
        if connect {
            ExchangeError::NotSent(text)
        } else {
            ExchangeError::MaybeSent(text)
        }
    }
}

/// Whether hyper cancelled the request before sending it (the pooled or
/// new connection closed first): nothing reached the node.
fn is_canceled_before_sending(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut current = Some(error);
    // Bounded: a chain is a few levels deep.
    for _ in 0..32 {
        let Some(e) = current else { return false };
        if let Some(hyper_error) = e.downcast_ref::<hyper::Error>() {
            return hyper_error.is_canceled();
        }
        current = e.source();
    }
    false
}

/// What the endpoints tried so far came to, for the final failure.
#[derive(Default)]
struct Tracker {
    reasons: Vec<(String, String)>,
    tls_failed: bool,
    unavailable: Option<ServerError>,
}

impl Tracker {
    /// Records one failed attempt; an answer that ends the command (an
    /// error other than 503) is returned as the failure at once.
    fn note(&mut self, endpoint: &str, attempt: Attempt, token_given: bool) -> Result<(), Failure> {
        match attempt {
            Attempt::Answered(_) => {}
            Attempt::Refused(e) if e.status == 503 => self.unavailable = Some(e),
            Attempt::Refused(error) if error.is_credentials() => {
                return Err(Failure::Credentials { error, token_given });
            }
            Attempt::Refused(e) => return Err(Failure::Server(e)),
            Attempt::TlsFailed(reason) => {
                self.tls_failed = true;
                self.reasons.push((endpoint.to_string(), reason));
            }
            Attempt::NotSent(reason) | Attempt::MaybeSent(reason) => {
                self.reasons.push((endpoint.to_string(), reason));
            }
        }
        Ok(())
    }

    fn failure(self) -> Failure {
        // A node that answered 503 was reachable: say what it said.
        match self.unavailable {
            Some(e) => Failure::Server(e),
            None if self.tls_failed => Failure::Tls(self.reasons),
            None => Failure::Unreachable(self.reasons),
        }
    }
}

/// The body of a long-lived response, one line at a time (without the
/// line end; empty lines are skipped). Blocks until a line is complete.
pub struct Lines {
    client: Client,
    /// The endpoint that answered.
    pub endpoint: String,
    body: Incoming,
    buffer: Vec<u8>,
    ready: VecDeque<String>,
    done: bool,
    /// A stream silent this long counts as broken (None: wait forever).
    silence: Option<Duration>,
}

impl Iterator for Lines {
    /// A line, or why the stream broke (then the iteration ends).
    type Item = Result<String, Failure>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if let Some(line) = self.ready.pop_front() {
                return Some(Ok(line));
            }
            if self.done {
                return None;
            }
            let silence = self.silence;
            let frame = self.client.inner.runtime.block_on(async {
                match silence {
                    Some(limit) => tokio::time::timeout(limit, self.body.frame()).await.ok(),
                    None => Some(self.body.frame().await),
                }
            });
            let Some(frame) = frame else {
                self.done = true;
                return Some(Err(Failure::Client(format!(
                    "{}: nothing received for {:?}",
                    self.endpoint,
                    self.silence.unwrap_or_default()
                ))));
            };
            match frame {
                None => {
                    self.done = true;
                    let rest = std::mem::take(&mut self.buffer);
                    self.push_line(&rest);
                }
                Some(Err(e)) => {
                    self.done = true;
                    return Some(Err(Failure::Client(format!(
                        "{}: the stream broke: {}",
                        self.endpoint,
                        describe(&e)
                    ))));
                }
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        self.buffer.extend_from_slice(&data);
                        while let Some(end) = self.buffer.iter().position(|&b| b == b'\n') {
                            let line: Vec<u8> = self.buffer.drain(..=end).collect();
                            self.push_line(&line);
                        }
                        if self.buffer.len() > MAX_LINE_BYTES {
                            self.done = true;
                            return Some(Err(Failure::Client(format!(
                                "{}: a line longer than {MAX_LINE_BYTES} bytes",
                                self.endpoint
                            ))));
                        }
                    }
                }
            }
        }
    }
}

impl Lines {
    /// Counts the stream as broken after `limit` without any bytes.
    pub fn with_silence_limit(mut self, limit: Duration) -> Lines {
        self.silence = Some(limit);
        self
    }

    fn push_line(&mut self, bytes: &[u8]) {
        let text = String::from_utf8_lossy(bytes);
        let line = text.trim_end_matches(['\n', '\r']);
        if !line.trim().is_empty() {
            self.ready.push_back(line.to_string());
        }
    }
}

/// The body of a large response (a backup), chunk by chunk.
pub struct Download {
    client: Client,
    /// The endpoint that answered.
    pub endpoint: String,
    pub headers: hyper::HeaderMap,
    body: Incoming,
}

impl Download {
    /// The next chunk of the body, None at its end; a stream that breaks
    /// or stays silent for `--timeout` is an error.
    pub fn next_chunk(&mut self) -> Result<Option<Bytes>, Failure> {
        let timeout = self.client.inner.timeout;
        loop {
            let frame = self
                .client
                .inner
                .runtime
                .block_on(async { tokio::time::timeout(timeout, self.body.frame()).await });
            let broke = |why: String| {
                Failure::Client(format!("{}: the download broke: {why}", self.endpoint))
            };
            match frame {
                Err(_) => return Err(broke(format!("nothing received for {timeout:?}"))),
                Ok(None) => return Ok(None),
                Ok(Some(Err(e))) => return Err(broke(describe(&e))),
                Ok(Some(Ok(frame))) => {
                    if let Ok(data) = frame.into_data() {
                        return Ok(Some(data));
                    }
                }
            }
        }
    }
}

/// Whether `error`'s chain holds a hyper error for an answer that is not
/// HTTP at all.
fn is_parse_error(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut current = Some(error);
    for _ in 0..32 {
        let Some(e) = current else { return false };
        if e.downcast_ref::<hyper::Error>()
            .is_some_and(hyper::Error::is_parse)
        {
            return true;
        }
        current = e.source();
    }
    false
}

/// Reads a token file: its first non-empty line, trimmed (as kv-node's
/// `--peer-token-file`).
pub fn read_token_file(path: &PathBuf) -> Result<String, Failure> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| Failure::Usage(format!("cannot read --token-file {}: {e}", path.display())))?;
    text.lines()
        .map(str::trim)
        .find(|line| !line.is_empty())
        .map(str::to_string)
        .ok_or_else(|| Failure::Usage(format!("--token-file {} is empty", path.display())))
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

/// An error with its chain of causes, which hyper keeps out of `Display`.
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
    use std::io::{BufRead, BufReader, Write};
    use std::net::TcpListener;

    /// A one-connection server: reads the request head, sends `response`
    /// (raw bytes, in the given pieces), returns the head it read.
    fn serve_once(pieces: Vec<Vec<u8>>) -> (String, std::thread::JoinHandle<String>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let handle = std::thread::spawn(move || {
            let (stream, _) = listener.accept().unwrap();
            stream
                .set_read_timeout(Some(Duration::from_secs(10)))
                .unwrap();
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut head = String::new();
            for _ in 0..100 {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                head.push_str(&line);
            }
            let mut stream = stream;
            for piece in pieces {
                stream.write_all(&piece).unwrap();
                stream.flush().unwrap();
                std::thread::sleep(Duration::from_millis(20));
            }
            head
        });
        (url, handle)
    }

    fn options(token: Option<&str>) -> ClientOptions {
        ClientOptions {
            token: token.map(str::to_string),
            ..ClientOptions::plain(Duration::from_secs(5))
        }
    }

    #[test]
    fn the_token_travels_as_a_bearer_header_and_a_401_names_the_endpoint() {
        let body =
            r#"{"error": {"code": "unauthorized", "message": "the bearer token is not valid"}}"#;
        let response = format!(
            "HTTP/1.1 401 Unauthorized\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        let (url, server) = serve_once(vec![response.into_bytes()]);
        let client =
            Client::with_options(std::slice::from_ref(&url), &options(Some("tok-123"))).unwrap();
        let failure = client.get("/kv/a").unwrap_err();
        let head = server.join().unwrap().to_ascii_lowercase();
        assert!(head.contains("authorization: bearer tok-123"), "{head}");
        assert_eq!(failure.exit_code(), ExitCode::from(CREDENTIALS_EXIT));
        assert_eq!(
            failure.to_string(),
            format!(
                "endpoint {url} refused the token: unauthorized: the bearer token is not valid"
            )
        );
        assert!(
            !format!("{client:?}").contains("tok-123"),
            "Debug hides the token"
        );
    }

    #[test]
    fn without_a_token_no_header_is_sent_and_the_hint_names_the_flags() {
        let body = r#"{"error": {"code": "unauthorized", "message": "needs a token"}}"#;
        let response = format!(
            "HTTP/1.1 401 Unauthorized\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        let (url, server) = serve_once(vec![response.into_bytes()]);
        let client = Client::with_options(&[url], &options(None)).unwrap();
        let failure = client
            .post("/kv/mput", Some(serde_json::json!({})))
            .unwrap_err();
        let head = server.join().unwrap().to_ascii_lowercase();
        assert!(!head.contains("authorization"), "{head}");
        assert!(head.contains("content-type: application/json"), "{head}");
        assert!(failure.to_string().contains("--token-file"), "{failure}");
    }

    #[test]
    fn a_stream_yields_its_lines_across_chunk_boundaries() {
        let chunk = |text: &str| format!("{:x}\r\n{text}\r\n", text.len()).into_bytes();
        let pieces = vec![
            b"HTTP/1.1 200 OK\r\nContent-Type: application/x-ndjson\r\n\
              Transfer-Encoding: chunked\r\n\r\n"
                .to_vec(),
            chunk("{\"a\":1}\n{\"b\""),
            chunk(":2}\n\n"),
            chunk("{\"c\":3}"),
            b"0\r\n\r\n".to_vec(),
        ];
        let (url, server) = serve_once(pieces);
        let client = Client::with_options(std::slice::from_ref(&url), &options(Some("t"))).unwrap();
        let lines = client.stream("/watch?prefix=a").unwrap();
        assert_eq!(lines.endpoint, url);
        let got: Vec<String> = lines.map(|l| l.unwrap()).collect();
        assert_eq!(got, vec![r#"{"a":1}"#, r#"{"b":2}"#, r#"{"c":3}"#]);
        assert!(server.join().unwrap().starts_with("GET /watch?prefix=a "));
    }

    #[test]
    fn plain_http_to_a_server_answering_tls_is_a_tls_failure() {
        // A TLS server's answer to a plain request: an alert record.
        let (url, _server) = serve_once(vec![vec![0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 0x32]]);
        let client = Client::with_options(std::slice::from_ref(&url), &options(None)).unwrap();
        let failure = client.put("/kv/a", Some(serde_json::json!({"value": "v"})));
        let text = failure.unwrap_err().to_string();
        assert!(
            text.contains(&format!(
                "{url}: TLS error: the endpoint did not answer in plain HTTP"
            )),
            "{text}"
        );
    }

    #[test]
    fn https_to_a_plain_http_server_is_a_tls_failure_naming_the_endpoint() {
        let (url, _server) = serve_once(vec![
            b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n".to_vec(),
        ]);
        let https = url.replace("http://", "https://");
        let client = Client::with_options(std::slice::from_ref(&https), &options(None)).unwrap();
        let failure = client.get("/status").unwrap_err();
        assert_eq!(failure.exit_code(), ExitCode::from(CREDENTIALS_EXIT));
        let text = failure.to_string();
        assert!(
            text.contains(&format!(
                "{https}: TLS error: the endpoint does not speak TLS"
            )),
            "{text}"
        );
    }

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
