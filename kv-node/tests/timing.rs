//! Leases rest on every member counting the same ticks (issue 11, bug 3):
//! peer batches carry the sender's lease timing, and a node refuses batches
//! whose timing differs from its own, so a cluster with mixed timing flags
//! does not form and says why. Two in-process nodes on 127.0.0.1.

use clap::Parser;
use kv_node::cli::Cli;
use kv_node::server::{self, RunningNode};
use std::path::Path;
use std::time::{Duration, Instant};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

async fn start(dir: &Path, name: &str, port: u16, peers: &str, election_ms: &str) -> RunningNode {
    let data = dir.join(name);
    let args = [
        "kv-node",
        "--id",
        name,
        "--listen",
        &format!("127.0.0.1:{port}"),
        "--data-dir",
        data.to_str().unwrap(),
        "--peers",
        peers,
        "--election-timeout-ms",
        election_ms,
    ];
    let cli = Cli::try_parse_from(args).unwrap();
    server::start(cli.validate().unwrap()).await.unwrap()
}

/// Starts two nodes with these election timeouts; returns whether a leader
/// was elected within `wait`, and how many batches each refused.
async fn two_nodes(election_ms: [&str; 2], wait: Duration) -> (bool, [u64; 2]) {
    let dir = tempfile::tempdir().unwrap();
    let ports = [free_port(), free_port()];
    let peers = format!(
        "a=http://127.0.0.1:{},b=http://127.0.0.1:{}",
        ports[0], ports[1]
    );
    let a = start(dir.path(), "a", ports[0], &peers, election_ms[0]).await;
    let b = start(dir.path(), "b", ports[1], &peers, election_ms[1]).await;
    let started = Instant::now();
    let mut elected = false;
    while started.elapsed() < wait {
        let status = a.driver.status().await.unwrap();
        if status.leader.is_some() {
            elected = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let refused = [
        a.metrics.peer_batches_refused.get(),
        b.metrics.peer_batches_refused.get(),
    ];
    a.shutdown().await.unwrap();
    b.shutdown().await.unwrap();
    (elected, refused)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_with_different_election_timeouts_refuse_each_others_batches() {
    // The control: the same timing elects a leader.
    let (elected, refused) = two_nodes(["150", "150"], Duration::from_secs(20)).await;
    assert!(elected, "two nodes with the same timing elect a leader");
    assert_eq!(refused, [0, 0]);
    // Mixed timing: every batch is refused both ways, so no vote arrives
    // and no leader is elected (two voters need each other's vote).
    let (elected, refused) = two_nodes(["150", "300"], Duration::from_secs(3)).await;
    assert!(!elected, "a cluster with mixed lease timing must not form");
    assert!(
        refused[0] > 0 && refused[1] > 0,
        "both nodes refused the other's batches: {refused:?}"
    );
}
