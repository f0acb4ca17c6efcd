//! Leases across a leader kill, with real kv-node processes on loopback:
//! the owner keeps its lease alive through a follower; the leader that
//! counted it is killed with -9; the new leader restarts the countdown at
//! the full TTL, so the key survives while keepalives continue; once they
//! stop, the key vanishes, never earlier than the TTL after the last
//! keepalive answered 200. Every wait is bounded.

mod common;

use common::cluster::Cluster;
use common::http::Client;
use common::kv;
use serde_json::json;
use std::net::SocketAddr;
use std::thread;
use std::time::{Duration, Instant};

const T: Duration = Duration::from_secs(10);
const TTL_MS: u64 = 3_000;

/// Sends `method path body` to `addr` until a definite 200 (bounded).
fn until_ok(
    client: &mut Client,
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: &str,
) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(reply) = client.request(addr, method, path, Some(body.as_bytes()), T)
            && reply.status == 200
        {
            return reply.json();
        }
        assert!(
            Instant::now() < deadline,
            "{method} {path} never answered 200"
        );
        thread::sleep(Duration::from_millis(100));
    }
}

/// Whether `key` is present, read linearizably through `addr`; None when
/// the node could not answer definitely.
fn present(client: &mut Client, addr: SocketAddr, key: &str) -> Option<bool> {
    match kv::get(client, addr, key, "linearizable", T) {
        Ok(reply) if reply.status == 200 => Some(true),
        Ok(reply) if reply.status == 404 => Some(false),
        _ => None,
    }
}

#[test]
fn a_lease_survives_its_leaders_death_while_kept_alive_and_expires_after() {
    let mut cluster = Cluster::start("leases", 3);
    let leader = cluster.wait_ready(T);
    let follower = (0..3).find(|&i| i != leader).unwrap();
    let via = cluster.addr(follower);
    let mut client = Client::new();

    let grant = until_ok(
        &mut client,
        cluster.addr(leader),
        "POST",
        "/lease",
        &json!({"ttl_ms": TTL_MS}).to_string(),
    );
    let id = grant["id"].as_u64().unwrap();
    let put = json!({"value": "up", "lease": id}).to_string();
    until_ok(&mut client, via, "PUT", "/kv/services/web/1", &put);

    // Keepalives through the follower, every TTL/6, for 4 TTLs, with the
    // leader killed after the first.
    let keepalive = format!("/lease/{id}/keepalive");
    let mut last_answered: Option<Instant> = None;
    let started = Instant::now();
    let mut killed = false;
    while started.elapsed() < Duration::from_millis(4 * TTL_MS) {
        if !killed && started.elapsed() > Duration::from_millis(TTL_MS) {
            cluster.kill(leader);
            killed = true;
        }
        let sent = Instant::now();
        match client.request(via, "POST", &keepalive, None, T) {
            Ok(reply) if reply.status == 200 => {
                assert_eq!(reply.json(), json!({"id": id, "ttl_ms": TTL_MS}));
                last_answered = Some(sent);
            }
            // No leader yet, or the forward met the dead leader.
            Ok(reply) if reply.status == 503 || reply.status == 504 => {}
            Ok(reply) => panic!("keepalive answered {} {}", reply.status, reply.text()),
            Err(_) => {}
        }
        // Whenever the last keepalive answered is within the TTL, the key
        // must be there.
        if let Some(at) = last_answered
            && at.elapsed() < Duration::from_millis(TTL_MS)
            && let Some(is_there) = present(&mut client, via, "services/web/1")
            && at.elapsed() < Duration::from_millis(TTL_MS)
        {
            assert!(
                is_there,
                "the key vanished {:?} after a keepalive answered 200",
                at.elapsed()
            );
        }
        thread::sleep(Duration::from_millis(TTL_MS / 6));
    }
    assert!(killed);
    let new_leader = cluster.wait_ready(T);
    assert_ne!(new_leader, leader);
    let last = last_answered.expect("some keepalive was answered");
    assert!(
        present(&mut client, via, "services/web/1").unwrap_or(true)
            || last.elapsed() >= Duration::from_millis(TTL_MS)
    );

    // The new leader counts the lease: it reports it with its keys.
    let info = until_ok(&mut client, via, "GET", &format!("/lease/{id}"), "");
    assert_eq!(info["keys"], json!(["services/web/1"]));
    assert!(info["remaining_ms"].as_u64().unwrap() <= TTL_MS);

    // Keepalives stop: the key vanishes, not before the TTL has passed
    // since the last keepalive answered, and within a bounded wait.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if present(&mut client, via, "services/web/1") == Some(false) {
            let waited = last.elapsed();
            assert!(
                waited >= Duration::from_millis(TTL_MS),
                "the key vanished {waited:?} after the last keepalive answered, under the TTL"
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the key outlived its lease by a minute"
        );
        thread::sleep(Duration::from_millis(100));
    }
    let reply = client.request(via, "POST", &keepalive, None, T).unwrap();
    assert_eq!(
        (reply.status, reply.error_code().as_str()),
        (404, "lease_not_found")
    );
    // The killed node comes back and agrees.
    cluster.start_node(leader);
    cluster.wait_ready(Duration::from_secs(60));
    let deadline = Instant::now() + Duration::from_secs(30);
    while kv::get(
        &mut client,
        cluster.addr(leader),
        "services/web/1",
        "stale",
        T,
    )
    .map(|r| r.status)
        != Ok(404)
    {
        assert!(
            Instant::now() < deadline,
            "the restarted node still holds the expired key"
        );
        thread::sleep(Duration::from_millis(100));
    }
}
