//! The API.md requests as functions, and retrying wrappers for tests that
//! want a definite answer while the cluster heals.

use super::http::{Client, HttpError, Response, encode_segment};
use serde_json::{Value, json};
use std::net::SocketAddr;
use std::thread;
use std::time::{Duration, Instant};

/// A client's identity for deduplication: `(client_id, seq)`.
#[derive(Clone, Debug)]
pub struct ClientSeq {
    pub client_id: String,
    pub seq: u64,
}

impl ClientSeq {
    pub fn new(client_id: &str, seq: u64) -> Self {
        ClientSeq {
            client_id: client_id.to_string(),
            seq,
        }
    }
}

fn with_seq(mut body: Value, seq: Option<&ClientSeq>) -> Vec<u8> {
    if let Some(seq) = seq {
        body["client_id"] = json!(seq.client_id);
        body["seq"] = json!(seq.seq);
    }
    body.to_string().into_bytes()
}

pub fn put(
    client: &mut Client,
    addr: SocketAddr,
    key: &str,
    value: &str,
    seq: Option<&ClientSeq>,
    timeout: Duration,
) -> Result<Response, HttpError> {
    let body = with_seq(json!({ "value": value }), seq);
    let path = format!("/kv/{}", encode_segment(key));
    client.request(addr, "PUT", &path, Some(&body), timeout)
}

pub fn delete(
    client: &mut Client,
    addr: SocketAddr,
    key: &str,
    seq: Option<&ClientSeq>,
    timeout: Duration,
) -> Result<Response, HttpError> {
    let body = with_seq(json!({}), seq);
    let path = format!("/kv/{}", encode_segment(key));
    client.request(addr, "DELETE", &path, Some(&body), timeout)
}

pub fn cas(
    client: &mut Client,
    addr: SocketAddr,
    key: &str,
    expected: Option<&str>,
    value: Option<&str>,
    seq: Option<&ClientSeq>,
    timeout: Duration,
) -> Result<Response, HttpError> {
    let body = with_seq(json!({ "expected": expected, "value": value }), seq);
    let path = format!("/kv/{}/cas", encode_segment(key));
    client.request(addr, "POST", &path, Some(&body), timeout)
}

/// `consistency` is "linearizable", "lease" or "stale".
pub fn get(
    client: &mut Client,
    addr: SocketAddr,
    key: &str,
    consistency: &str,
    timeout: Duration,
) -> Result<Response, HttpError> {
    let path = format!("/kv/{}?consistency={consistency}", encode_segment(key));
    client.request(addr, "GET", &path, None, timeout)
}

/// `GET /kv?prefix=..&limit=..&consistency=..`.
pub fn scan(
    client: &mut Client,
    addr: SocketAddr,
    prefix: &str,
    limit: usize,
    consistency: &str,
    timeout: Duration,
) -> Result<Response, HttpError> {
    let path = format!(
        "/kv?prefix={}&limit={limit}&consistency={consistency}",
        encode_segment(prefix)
    );
    client.request(addr, "GET", &path, None, timeout)
}

/// Status codes after which a retry with the same `(client_id, seq)` is the
/// right move: no leader yet (503) or outcome unknown (504).
fn retryable(status: u16) -> bool {
    status == 503 || status == 504
}

/// Repeats `attempt` on each address in turn until it returns a reply that
/// is not 503/504, or `within` has passed. Transport errors are retried too:
/// a write must carry a `(client_id, seq)` so that a retry applies at most
/// once. Returns the last reply or error.
pub fn until_definite(
    addrs: &[SocketAddr],
    within: Duration,
    mut attempt: impl FnMut(SocketAddr) -> Result<Response, HttpError>,
) -> Result<Response, String> {
    let deadline = Instant::now() + within;
    let mut last = String::from("no attempt");
    for round in 0usize.. {
        let addr = addrs[round % addrs.len()];
        match attempt(addr) {
            Ok(reply) if !retryable(reply.status) => return Ok(reply),
            Ok(reply) => last = format!("{addr}: {} {}", reply.status, reply.text()),
            Err(e) => last = format!("{addr}: {e}"),
        }
        if Instant::now() >= deadline {
            break;
        }
        thread::sleep(Duration::from_millis(50));
    }
    Err(format!("no definite reply within {within:?}; last: {last}"))
}

/// A put through `addrs` (retried with the same seq) that must succeed.
pub fn put_ok(addrs: &[SocketAddr], key: &str, value: &str, seq: &ClientSeq) -> Value {
    let mut client = Client::new();
    let reply = until_definite(addrs, Duration::from_secs(60), |addr| {
        put(
            &mut client,
            addr,
            key,
            value,
            Some(seq),
            Duration::from_secs(10),
        )
    })
    .unwrap_or_else(|e| panic!("put {key}={value}: {e}"));
    assert_eq!(reply.status, 200, "put {key}={value}: {}", reply.text());
    reply.json()
}

/// A linearizable read at `addr` that must get a definite answer: the
/// value, or `None` for 404.
pub fn get_linearizable(addr: SocketAddr, key: &str) -> Option<String> {
    let mut client = Client::new();
    let reply = until_definite(&[addr], Duration::from_secs(60), |addr| {
        get(
            &mut client,
            addr,
            key,
            "linearizable",
            Duration::from_secs(10),
        )
    })
    .unwrap_or_else(|e| panic!("get {key} from {addr}: {e}"));
    match reply.status {
        200 => Some(
            reply.json()["value"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
        ),
        404 => None,
        _ => panic!("get {key} from {addr}: {} {}", reply.status, reply.text()),
    }
}

/// Every `(key, value)` under `prefix` at `addr`, read with `consistency`.
pub fn scan_all(
    addr: SocketAddr,
    prefix: &str,
    consistency: &str,
) -> Result<Vec<(String, String)>, String> {
    let mut client = Client::new();
    let reply = until_definite(&[addr], Duration::from_secs(30), |addr| {
        scan(
            &mut client,
            addr,
            prefix,
            10_000,
            consistency,
            Duration::from_secs(10),
        )
    })?;
    if reply.status != 200 {
        return Err(format!("scan at {addr}: {} {}", reply.status, reply.text()));
    }
    let json = reply.json();
    if json["more"].as_bool() != Some(false) {
        return Err(format!("scan at {addr} has more than 10000 keys"));
    }
    let entries = json["entries"].as_array().cloned().unwrap_or_default();
    Ok(entries
        .iter()
        .map(|e| {
            (
                e["key"].as_str().unwrap_or_default().to_string(),
                e["value"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect())
}
