//! A small blocking HTTP/1.1 client over `std::net`, with keep-alive and a
//! hard deadline per request.
//!
//! Tests need to tell apart "certainly not delivered" (the connection was
//! refused) from "outcome unknown" (the request may have reached the server),
//! which a general-purpose client hides; this one says which, per request.

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

/// A reply: status code and body.
#[derive(Clone, Debug)]
pub struct Response {
    pub status: u16,
    pub body: Vec<u8>,
}

impl Response {
    /// The body as JSON, or `Null` if it is not JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or(serde_json::Value::Null)
    }

    /// `error.code` of an API error body, or "" if there is none.
    pub fn error_code(&self) -> String {
        self.json()["error"]["code"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Why a request got no reply.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HttpError {
    /// The connection could not be opened: the request was certainly not
    /// delivered.
    NotSent(String),
    /// No complete reply before the deadline: the request may have been
    /// delivered and may still take effect.
    Timeout,
    /// The connection broke after the request may have been delivered.
    Broken(String),
}

impl HttpError {
    /// True when the server may have acted on the request.
    pub fn outcome_unknown(&self) -> bool {
        !matches!(self, HttpError::NotSent(_))
    }
}

impl std::fmt::Display for HttpError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HttpError::NotSent(e) => write!(f, "not sent: {e}"),
            HttpError::Timeout => write!(f, "timed out"),
            HttpError::Broken(e) => write!(f, "connection broke: {e}"),
        }
    }
}

/// Keeps one idle connection per address. Not shared between threads: each
/// client thread has its own.
#[derive(Default)]
pub struct Client {
    idle: HashMap<SocketAddr, TcpStream>,
}

/// The largest reply accepted; replies here are small JSON documents, apart
/// from scans of a few thousand keys.
const MAX_REPLY_BYTES: usize = 64 << 20;

impl Client {
    pub fn new() -> Self {
        Client::default()
    }

    /// Sends one request and waits for its reply until `timeout` has passed.
    /// Any failure drops the connection, so that a late reply can never be
    /// taken for the reply to a later request.
    pub fn request(
        &mut self,
        addr: SocketAddr,
        method: &str,
        path_and_query: &str,
        body: Option<&[u8]>,
        timeout: Duration,
    ) -> Result<Response, HttpError> {
        let deadline = Instant::now() + timeout;
        let mut stream = match self.idle.remove(&addr) {
            Some(stream) => stream,
            None => connect(addr, timeout)?,
        };
        let result = exchange(&mut stream, addr, method, path_and_query, body, deadline);
        if let Ok((_, keep_alive)) = &result
            && *keep_alive
        {
            self.idle.insert(addr, stream);
        }
        result.map(|(response, _)| response)
    }

    /// Drops every idle connection.
    pub fn reset(&mut self) {
        self.idle.clear();
    }
}

/// One request on a fresh connection.
pub fn request(
    addr: SocketAddr,
    method: &str,
    path_and_query: &str,
    body: Option<&[u8]>,
    timeout: Duration,
) -> Result<Response, HttpError> {
    Client::new().request(addr, method, path_and_query, body, timeout)
}

fn connect(addr: SocketAddr, timeout: Duration) -> Result<TcpStream, HttpError> {
    let stream = TcpStream::connect_timeout(&addr, timeout.max(Duration::from_millis(1)))
        .map_err(|e| HttpError::NotSent(e.to_string()))?;
    let _ = stream.set_nodelay(true);
    Ok(stream)
}

fn remaining(deadline: Instant) -> Result<Duration, HttpError> {
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        Err(HttpError::Timeout)
    } else {
        Ok(left)
    }
}

fn io_error(e: io::Error) -> HttpError {
    match e.kind() {
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => HttpError::Timeout,
        _ => HttpError::Broken(e.to_string()),
    }
}

/// Writes the request and reads the reply; returns whether the connection may
/// be reused.
fn exchange(
    stream: &mut TcpStream,
    addr: SocketAddr,
    method: &str,
    path_and_query: &str,
    body: Option<&[u8]>,
    deadline: Instant,
) -> Result<(Response, bool), HttpError> {
    let body = body.unwrap_or_default();
    let mut request = format!(
        "{method} {path_and_query} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    request.extend_from_slice(body);
    stream
        .set_write_timeout(Some(remaining(deadline)?))
        .map_err(io_error)?;
    // A server may answer (413, say) and close before reading a large body;
    // its reply is still worth reading, so a failed write is not yet final.
    let write_error = stream.write_all(&request).err();
    match read_response(stream, deadline) {
        Ok(reply) => Ok(reply),
        Err(read_error) => Err(write_error.map(io_error).unwrap_or(read_error)),
    }
}

fn read_response(stream: &mut TcpStream, deadline: Instant) -> Result<(Response, bool), HttpError> {
    let mut buf = Vec::with_capacity(1024);
    let header_end = loop {
        if let Some(end) = find(&buf, b"\r\n\r\n") {
            break end + 4;
        }
        if buf.len() > 64 << 10 {
            return Err(HttpError::Broken("reply headers over 64 KiB".into()));
        }
        read_more(stream, &mut buf, deadline)?;
    };
    let head = String::from_utf8_lossy(&buf[..header_end]).into_owned();
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status: u16 = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| HttpError::Broken(format!("bad status line {status_line:?}")))?;
    let mut content_length = None;
    let mut chunked = false;
    let mut keep_alive = true;
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let (name, value) = (name.trim().to_ascii_lowercase(), value.trim());
        match name.as_str() {
            "content-length" => content_length = value.parse::<usize>().ok(),
            "transfer-encoding" => chunked = value.eq_ignore_ascii_case("chunked"),
            "connection" => keep_alive = !value.eq_ignore_ascii_case("close"),
            _ => {}
        }
    }
    let mut rest = buf.split_off(header_end);
    let body = if chunked {
        read_chunked(stream, rest, deadline)?
    } else if let Some(length) = content_length {
        if length > MAX_REPLY_BYTES {
            return Err(HttpError::Broken(format!("reply of {length} bytes")));
        }
        while rest.len() < length {
            read_more(stream, &mut rest, deadline)?;
        }
        rest.truncate(length);
        rest
    } else {
        // No length: the body runs to the end of the connection.
        keep_alive = false;
        loop {
            match read_more(stream, &mut rest, deadline) {
                Ok(()) => {}
                Err(HttpError::Broken(_)) => break rest,
                Err(e) => return Err(e),
            }
        }
    };
    Ok((Response { status, body }, keep_alive))
}

fn read_chunked(
    stream: &mut TcpStream,
    mut buf: Vec<u8>,
    deadline: Instant,
) -> Result<Vec<u8>, HttpError> {
    let mut body = Vec::new();
    loop {
        let line_end = loop {
            if let Some(end) = find(&buf, b"\r\n") {
                break end;
            }
            read_more(stream, &mut buf, deadline)?;
        };
        let size_text = String::from_utf8_lossy(&buf[..line_end]).into_owned();
        let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
            .map_err(|_| HttpError::Broken(format!("bad chunk size {size_text:?}")))?;
        if body.len() + size > MAX_REPLY_BYTES {
            return Err(HttpError::Broken("chunked reply too large".into()));
        }
        buf.drain(..line_end + 2);
        while buf.len() < size + 2 {
            read_more(stream, &mut buf, deadline)?;
        }
        body.extend_from_slice(&buf[..size]);
        buf.drain(..size + 2);
        if size == 0 {
            return Ok(body);
        }
    }
}

fn read_more(
    stream: &mut TcpStream,
    buf: &mut Vec<u8>,
    deadline: Instant,
) -> Result<(), HttpError> {
    stream
        .set_read_timeout(Some(remaining(deadline)?))
        .map_err(io_error)?;
    let mut chunk = [0u8; 16 << 10];
    match stream.read(&mut chunk) {
        Ok(0) => Err(HttpError::Broken("connection closed".into())),
        Ok(n) => {
            buf.extend_from_slice(&chunk[..n]);
            Ok(())
        }
        Err(e) if e.kind() == io::ErrorKind::Interrupted => Ok(()),
        Err(e) => Err(io_error(e)),
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Percent-encodes a key for use as one path segment.
pub fn encode_segment(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}
