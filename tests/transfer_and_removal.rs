//! Leadership transfer and leader removal end to end, with real kv-node
//! processes on loopback (issue 18):
//! - a transfer to an unreachable node ends with a clear error, about an
//!   election timeout after it was asked for, and writes are accepted again
//!   right after;
//! - in a two-node cluster the leader removes itself while its link to the
//!   other node is cut right after the removal commits; once the link heals
//!   the remaining node takes writes and serves every key.

mod common;
#[allow(dead_code)]
#[path = "chaos/firewall.rs"]
mod firewall;

use common::cluster::Cluster;
use common::http::{self, Client};
use common::kv::{self, ClientSeq};
use common::say;
use serde_json::json;
use std::thread;
use std::time::{Duration, Instant};

/// The chain this test's cuts live in (not the chaos test's).
const CHAIN: &str = "KVREMOVAL";

fn status_field(cluster: &Cluster, i: usize, field: &str) -> serde_json::Value {
    cluster
        .status(i)
        .map(|s| s[field].clone())
        .unwrap_or_default()
}

fn transfer(cluster: &Cluster, at: usize, to: &str) -> http::Response {
    let body = json!({ "to": to }).to_string();
    http::request(
        cluster.addr(at),
        "POST",
        "/cluster/transfer-leader",
        Some(body.as_bytes()),
        Duration::from_secs(30),
    )
    .unwrap_or_else(|e| panic!("transfer to {to}: {e}"))
}

#[test]
fn a_transfer_to_an_unreachable_node_fails_clearly_and_writes_resume_at_once() {
    let mut cluster = Cluster::start("xfer-unreachable", 3);
    let leader = cluster.wait_ready(common::cluster::READY_TIMEOUT);
    let others: Vec<usize> = (0..3).filter(|&i| i != leader).collect();
    let (target, gone) = (others[0], others[1]);
    kv::put_ok(&cluster.addrs(), "before", "1", &ClientSeq::new("xfer", 1));

    // A transfer to a live, caught-up node answers once it leads.
    let target_name = cluster.nodes[target].name.clone();
    let reply = transfer(&cluster, leader, &target_name);
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.json()["leader"], json!(target_name));
    assert_eq!(status_field(&cluster, target, "role"), json!("leader"));

    // Now one that cannot be reached: the transfer ends with an error.
    cluster.kill(gone);
    let gone_name = cluster.nodes[gone].name.clone();
    let started = Instant::now();
    let reply = transfer(&cluster, target, &gone_name);
    let took = started.elapsed();
    say(&format!(
        "transfer to an unreachable node answered {} after {took:?} (election timeout 150 ms)",
        reply.status
    ));
    assert_eq!(
        (reply.status, reply.error_code().as_str()),
        (503, "unavailable"),
        "an answer from the transfer, not the request timeout (504): {}",
        reply.text()
    );
    assert!(
        reply
            .text()
            .contains("did not complete within the election timeout"),
        "the error says why: {}",
        reply.text()
    );
    // Writes are accepted at once: the very next one, on the first try.
    let mut client = Client::new();
    let put = kv::put(
        &mut client,
        cluster.addr(target),
        "after",
        "2",
        None,
        Duration::from_secs(10),
    )
    .expect("the put is answered");
    assert_eq!(put.status, 200, "{}", put.text());
    assert_eq!(
        kv::get_linearizable(cluster.addr(target), "after").as_deref(),
        Some("2")
    );
    cluster.stop_all();
}

#[test]
fn the_last_voter_takes_writes_after_its_removed_leader_was_cut_off() {
    if let Some(why) = firewall::unavailable_reason() {
        say(&format!("SKIPPED leader removal with a cut link: {why}"));
        return;
    }
    let mut cluster = Cluster::start("remove-cut", 2);
    let leader = cluster.wait_ready(common::cluster::READY_TIMEOUT);
    let other = 1 - leader;
    let keys: Vec<String> = (0..20).map(|i| format!("k{i:02}")).collect();
    for (n, key) in keys.iter().enumerate() {
        kv::put_ok(
            &cluster.addrs(),
            key,
            &format!("v{n}"),
            &ClientSeq::new("remove-cut", n as u64 + 1),
        );
    }
    let mut wall =
        firewall::Firewall::install_chain(CHAIN, cluster.port).expect("iptables rules can be set");
    let (leader_ip, other_ip) = (cluster.nodes[leader].ip, cluster.nodes[other].ip);
    let leader_name = cluster.nodes[leader].name.clone();

    // The leader removes itself; the moment the removal is in force on it,
    // nothing it sends reaches the other node any more (its answers to the
    // other node's requests still do, as in the simulator's fault).
    let reply = http::request(
        cluster.addr(leader),
        "DELETE",
        &format!("/cluster/members/{leader_name}"),
        None,
        Duration::from_secs(30),
    )
    .expect("the removal is answered");
    wall.cut_one_way(leader_ip, other_ip).expect("cut");
    assert_eq!(reply.status, 200, "{}", reply.text());
    // Several election timeouts (150 ms): the removed leader's hand-over
    // times out and it gives up, while the other node may still be in the
    // joint configuration that counts it.
    thread::sleep(Duration::from_secs(2));
    say(&format!(
        "cut off: {} is {}, {} sees voters {}",
        leader_name,
        status_field(&cluster, leader, "role"),
        cluster.nodes[other].name,
        status_field(&cluster, other, "members")
    ));
    wall.heal().expect("heal");

    // The remaining node leads a configuration of its own, takes writes and
    // serves every key.
    let other_addr = cluster.addr(other);
    kv::put_ok(
        &[other_addr],
        "after",
        "yes",
        &ClientSeq::new("remove-cut", 100),
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    while status_field(&cluster, other, "members") != json!([cluster.nodes[other].name]) {
        assert!(
            Instant::now() < deadline,
            "the joint configuration was left: {:?}\n{}",
            cluster.status(other),
            cluster.all_log_tails(30)
        );
        thread::sleep(Duration::from_millis(100));
    }
    for (n, key) in keys.iter().enumerate() {
        assert_eq!(
            kv::get_linearizable(other_addr, key).as_deref(),
            Some(format!("v{n}").as_str()),
            "{key}"
        );
    }
    assert_eq!(
        kv::get_linearizable(other_addr, "after").as_deref(),
        Some("yes")
    );
    drop(wall);
    cluster.stop_all();
}
