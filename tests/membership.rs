//! Membership changes end to end, with real kv-node processes on loopback:
//! a 3-node cluster grows to 5 while a client writes (one joiner promotes
//! itself with `--auto-promote`, one is promoted through the API), a node
//! is replaced (a new one added, an old one removed), the leader removes
//! itself; no acknowledged write is lost and every member converges.

mod common;
#[allow(dead_code)]
#[path = "common/joiner.rs"]
mod joiner;

use common::cluster::Cluster;
use common::http::{self, Client};
use common::kv::{self, ClientSeq};
use joiner::Joiner;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

const WAIT: Duration = Duration::from_secs(90);

/// `GET /cluster/members` at the first of `addrs` that answers: name -> voter.
fn members(addrs: &[SocketAddr]) -> Option<BTreeMap<String, bool>> {
    for &addr in addrs {
        let Ok(reply) = http::request(
            addr,
            "GET",
            "/cluster/members",
            None,
            Duration::from_secs(3),
        ) else {
            continue;
        };
        if reply.status != 200 {
            continue;
        }
        let list = reply.json()["members"].as_array()?.clone();
        return Some(
            list.iter()
                .map(|m| {
                    (
                        m["id"].as_str().unwrap_or("").to_string(),
                        m["voter"] == json!(true),
                    )
                })
                .collect(),
        );
    }
    None
}

/// Waits until `addrs` report exactly `voters` as voters and no learners.
fn wait_voters(addrs: &[SocketAddr], voters: &[&str]) {
    let want: Vec<(&str, bool)> = voters.iter().map(|v| (*v, true)).collect();
    wait_members(addrs, &want);
}

/// Waits until `addrs` report exactly `want` (name, voter).
fn wait_members(addrs: &[SocketAddr], want: &[(&str, bool)]) {
    let want: BTreeMap<String, bool> = want.iter().map(|(n, v)| (n.to_string(), *v)).collect();
    let deadline = Instant::now() + WAIT;
    let mut last = None;
    while Instant::now() < deadline {
        last = members(addrs);
        if last.as_ref() == Some(&want) {
            return;
        }
        thread::sleep(Duration::from_millis(200));
    }
    panic!("members did not become {want:?}; last {last:?}");
}

/// A membership request retried on 409 (change in flight), 503 and 504
/// until it gets another answer; returns it.
fn change(addrs: &[SocketAddr], method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
    let body = body.map(|b| b.to_string());
    let deadline = Instant::now() + WAIT;
    let mut last;
    for round in 0usize.. {
        let addr = addrs[round % addrs.len()];
        match http::request(
            addr,
            method,
            path,
            body.as_deref().map(str::as_bytes),
            Duration::from_secs(40),
        ) {
            Ok(r) if ![409, 503, 504].contains(&r.status) => return (r.status, r.json()),
            Ok(r) => last = format!("{} {}", r.status, r.text()),
            Err(e) => last = e.to_string(),
        }
        assert!(
            Instant::now() < deadline,
            "{method} {path}: no answer; last {last}"
        );
        thread::sleep(Duration::from_millis(200));
    }
    unreachable!()
}

fn leader_of(addrs: &[SocketAddr]) -> Option<String> {
    addrs.iter().find_map(|&a| {
        let r = http::request(a, "GET", "/status", None, Duration::from_secs(3)).ok()?;
        r.json()["leader"].as_str().map(str::to_string)
    })
}

/// A client that writes `w/<n>` = `v<n>` with seq n through the current
/// member addresses, recording each acknowledged write.
struct Writer {
    stop: Arc<AtomicBool>,
    handle: thread::JoinHandle<Vec<(String, String)>>,
}

fn start_writer(addrs: Arc<Mutex<Vec<SocketAddr>>>) -> Writer {
    let stop = Arc::new(AtomicBool::new(false));
    let stopping = stop.clone();
    let handle = thread::spawn(move || {
        let mut acked = Vec::new();
        let mut client = Client::new();
        for n in 1u64.. {
            if stopping.load(Ordering::Relaxed) {
                break;
            }
            let (key, value) = (format!("w/{n:05}"), format!("v{n}"));
            let seq = ClientSeq::new("membership-writer", n);
            let targets = addrs.lock().unwrap().clone();
            let reply = kv::until_definite(&targets, Duration::from_secs(30), |addr| {
                kv::put(
                    &mut client,
                    addr,
                    &key,
                    &value,
                    Some(&seq),
                    Duration::from_secs(10),
                )
            });
            match reply {
                Ok(r) if r.status == 200 => acked.push((key, value)),
                // Not acknowledged: whether it applied is not known, and
                // nothing below depends on it.
                _ => {}
            }
            thread::sleep(Duration::from_millis(20));
        }
        acked
    });
    Writer { stop, handle }
}

#[test]
fn grow_replace_and_remove_the_leader_without_losing_acknowledged_writes() {
    let mut cluster = Cluster::start("membership", 3);
    let via = cluster.addr(0);
    let ip = |last: u8| Ipv4Addr::new(127, 0, 0, last);
    let addrs = Arc::new(Mutex::new(cluster.addrs()));
    let writer = start_writer(addrs.clone());

    // Grow to 5: node4 promotes itself, node5 is promoted through a
    // follower (which forwards to the leader).
    let node4 = Joiner::start(cluster.dir(), "node4", ip(14), via, &["--auto-promote"]);
    let node5 = Joiner::start(cluster.dir(), "node5", ip(15), cluster.addr(1), &[]);
    let base = cluster.addrs();
    wait_members(
        &base,
        &[
            ("node1", true),
            ("node2", true),
            ("node3", true),
            ("node4", true),
            ("node5", false),
        ],
    );
    let (status, body) = change(
        &base,
        "POST",
        "/cluster/members",
        Some(json!({"id": "node5", "voter": true})),
    );
    assert_eq!(status, 200, "{body}");
    wait_voters(&base, &["node1", "node2", "node3", "node4", "node5"]);
    addrs.lock().unwrap().extend([node4.addr, node5.addr]);

    // Replace node3 by node6.
    let node6 = Joiner::start(cluster.dir(), "node6", ip(16), via, &["--auto-promote"]);
    wait_voters(
        &base,
        &["node1", "node2", "node3", "node4", "node5", "node6"],
    );
    let (status, body) = change(&base, "DELETE", "/cluster/members/node3", None);
    assert!(status == 200 || status == 404, "{status} {body}");
    let members_now = [
        cluster.addr(0),
        cluster.addr(1),
        node4.addr,
        node5.addr,
        node6.addr,
    ];
    wait_voters(&members_now, &["node1", "node2", "node4", "node5", "node6"]);
    *addrs.lock().unwrap() = members_now.to_vec();
    // The removed node says so when asked to write.
    let deadline = Instant::now() + WAIT;
    loop {
        let reply = kv::put(
            &mut Client::new(),
            cluster.addr(2),
            "x",
            "y",
            None,
            Duration::from_secs(10),
        );
        if matches!(&reply, Ok(r) if r.status == 503 && r.error_code() == "removed") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "node3 does not say it was removed: {reply:?}"
        );
        thread::sleep(Duration::from_millis(200));
    }
    cluster.kill(2);

    // The leader removes itself.
    let leader = leader_of(&members_now).expect("a leader");
    let (status, body) = change(
        &members_now,
        "DELETE",
        &format!("/cluster/members/{leader}"),
        None,
    );
    assert!(status == 200 || status == 404, "{status} {body}");
    let rest: Vec<(&str, SocketAddr)> = [
        ("node1", cluster.addr(0)),
        ("node2", cluster.addr(1)),
        ("node4", node4.addr),
        ("node5", node5.addr),
        ("node6", node6.addr),
    ]
    .into_iter()
    .filter(|(name, _)| *name != leader)
    .collect();
    let rest_addrs: Vec<SocketAddr> = rest.iter().map(|(_, a)| *a).collect();
    let rest_names: Vec<&str> = rest.iter().map(|(n, _)| *n).collect();
    wait_voters(&rest_addrs, &rest_names);
    *addrs.lock().unwrap() = rest_addrs.clone();
    thread::sleep(Duration::from_secs(1));

    writer.stop.store(true, Ordering::Relaxed);
    let acked = writer.handle.join().expect("writer");
    assert!(
        acked.len() > 20,
        "too few writes acknowledged: {}",
        acked.len()
    );

    // Every acknowledged write is there, read linearizably from the members.
    for (i, (key, value)) in acked.iter().enumerate() {
        let addr = rest_addrs[i % rest_addrs.len()];
        assert_eq!(
            kv::get_linearizable(addr, key).as_deref(),
            Some(value.as_str()),
            "{key}"
        );
    }
    // Every member converges on the same keys.
    let deadline = Instant::now() + WAIT;
    loop {
        let scans: Vec<_> = rest_addrs
            .iter()
            .map(|&a| kv::scan_all(a, "w/", "stale").ok())
            .collect();
        if scans.iter().all(|s| s.is_some() && *s == scans[0]) {
            break;
        }
        assert!(Instant::now() < deadline, "members did not converge");
        thread::sleep(Duration::from_millis(300));
    }
    common::say(&format!(
        "membership: {} writes acknowledged through 3 -> 5 -> replace -> leader {leader} removed",
        acked.len()
    ));
    drop((node4, node5, node6));
}
