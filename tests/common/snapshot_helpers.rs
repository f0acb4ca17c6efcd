//! Helpers for the snapshot tests (tests/snapshots.rs): batched writes with
//! `POST /kv/mput`, `/status` and `/metrics` numbers, `POST /admin/snapshot`,
//! sizes on disk, and a bounded poll.

use super::cluster::Cluster;
use super::http::{self, Client, HttpError, Response};
use super::kv::{ClientSeq, until_definite};
use serde_json::{Value, json};
use std::fs;
use std::net::SocketAddr;
use std::path::Path;
use std::thread;
use std::time::{Duration, Instant};

/// `POST /kv/mput` of `entries` in one log entry.
pub fn mput(
    client: &mut Client,
    addr: SocketAddr,
    entries: &[(String, String)],
    seq: Option<&ClientSeq>,
    timeout: Duration,
) -> Result<Response, HttpError> {
    let entries: Vec<Value> = entries
        .iter()
        .map(|(key, value)| json!({"key": key, "value": value}))
        .collect();
    let mut body = json!({ "entries": entries });
    if let Some(seq) = seq {
        body["client_id"] = json!(seq.client_id);
        body["seq"] = json!(seq.seq);
    }
    let body = body.to_string().into_bytes();
    client.request(addr, "POST", "/kv/mput", Some(&body), timeout)
}

/// An mput through `addrs` (retried with the same seq, so applied once)
/// that must succeed; returns its revision.
pub fn mput_ok(
    client: &mut Client,
    addrs: &[SocketAddr],
    entries: &[(String, String)],
    seq: &ClientSeq,
) -> u64 {
    let reply = until_definite(addrs, Duration::from_secs(60), |addr| {
        mput(client, addr, entries, Some(seq), Duration::from_secs(10))
    })
    .unwrap_or_else(|e| panic!("mput of {} entries: {e}", entries.len()));
    assert_eq!(reply.status, 200, "mput: {}", reply.text());
    reply.json()["revision"]
        .as_u64()
        .unwrap_or_else(|| panic!("mput reply without a revision: {}", reply.text()))
}

/// A numeric field of node `i`'s `/status`, if it answers.
pub fn status_number(cluster: &Cluster, i: usize, field: &str) -> Option<u64> {
    cluster.status(i)?[field].as_u64()
}

/// The value of an unlabelled metric of node `i`'s `/metrics`.
pub fn metric(cluster: &Cluster, i: usize, name: &str) -> Option<f64> {
    let reply = http::request(
        cluster.addr(i),
        "GET",
        "/metrics",
        None,
        Duration::from_secs(5),
    )
    .ok()
    .filter(|r| r.status == 200)?;
    reply.text().lines().find_map(|line| {
        let (metric, value) = line.split_once(' ')?;
        (metric == name).then(|| value.trim().parse().ok())?
    })
}

/// `POST /admin/snapshot` at `addr`: `(taken, snapshot_index)`.
pub fn admin_snapshot(addr: SocketAddr) -> (bool, u64) {
    let reply = http::request(
        addr,
        "POST",
        "/admin/snapshot",
        None,
        Duration::from_secs(30),
    )
    .unwrap_or_else(|e| panic!("POST /admin/snapshot at {addr}: {e}"));
    assert_eq!(
        reply.status,
        200,
        "POST /admin/snapshot at {addr}: {}",
        reply.text()
    );
    let json = reply.json();
    (
        json["taken"]
            .as_bool()
            .unwrap_or_else(|| panic!("no `taken` in {json}")),
        json["snapshot_index"]
            .as_u64()
            .unwrap_or_else(|| panic!("no `snapshot_index` in {json}")),
    )
}

/// Polls `probe` every 100 ms until it returns `Some`, or panics after
/// `within` with `what` and the last value `describe` gives.
pub fn wait_for<T>(
    within: Duration,
    what: &str,
    mut probe: impl FnMut() -> Option<T>,
    describe: impl Fn() -> String,
) -> T {
    let deadline = Instant::now() + within;
    loop {
        if let Some(found) = probe() {
            return found;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: not within {within:?}; last seen: {}",
            describe()
        );
        thread::sleep(Duration::from_millis(100));
    }
}

/// The total size of the regular files under `dir`, recursively.
pub fn dir_bytes(dir: &Path) -> u64 {
    let Ok(items) = fs::read_dir(dir) else {
        return 0;
    };
    items
        .filter_map(Result::ok)
        .map(|item| match item.metadata() {
            Ok(meta) if meta.is_dir() => dir_bytes(&item.path()),
            Ok(meta) => meta.len(),
            Err(_) => 0,
        })
        .sum()
}

/// The number of files in `dir` whose name ends with `suffix`.
pub fn count_files(dir: &Path, suffix: &str) -> usize {
    fs::read_dir(dir)
        .map(|items| {
            items
                .filter_map(Result::ok)
                .filter(|item| item.file_name().to_string_lossy().ends_with(suffix))
                .count()
        })
        .unwrap_or(0)
}

/// Counts the lines of node `i`'s log that contain `text`, after the
/// harness's marker of its `start`-th start (1-based; 0 counts all).
pub fn log_lines_since_start(cluster: &Cluster, i: usize, start: u32, text: &str) -> usize {
    let log = cluster.log(i);
    let marker = format!("===== test harness: start #{start} =====");
    let since = if start == 0 {
        &log[..]
    } else {
        log.find(&marker).map_or("", |at| &log[at..])
    };
    since.lines().filter(|line| line.contains(text)).count()
}
