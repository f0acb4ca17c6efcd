//! Backup and restore with real kv-node processes on loopback: a 3-node
//! cluster under concurrent writes is backed up through a follower
//! mid-load; the file is restored into a NEW 3-node cluster (fresh data
//! dirs, another port, the same node names); there every write answered
//! before the backup request was sent is present with its value, a new
//! write gets a revision above the backup's, and a key on a lease in the
//! backup is deleted once the lease's TTL has run in the new cluster.
//! Every wait is bounded.

mod common;

use common::binary::kv_node_binary;
use common::cluster::{Cluster, READY_TIMEOUT};
use common::http::{self, Client};
use common::kv;
use serde_json::json;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

const T: Duration = Duration::from_secs(10);
const WRITERS: usize = 3;
/// Long enough that the new cluster answers its first read well within it.
const LEASE_TTL_MS: u64 = 20_000;

/// One acknowledged write: unique key, its value, when the 200 arrived.
struct Acked {
    key: String,
    value: String,
    at: Instant,
}

/// Writes fresh keys through `addr` until `stop`, keeping the ones
/// answered 200 (an unanswered one may or may not be in the backup).
fn writer(id: usize, addr: SocketAddr, stop: Arc<AtomicBool>) -> Vec<Acked> {
    let mut client = Client::new();
    let mut acked = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(120);
    for n in 0..20_000 {
        if stop.load(Ordering::Relaxed) || Instant::now() > deadline {
            break;
        }
        let key = format!("load/w{id}/{n:05}");
        let value = format!("value-{id}-{n}");
        if let Ok(reply) = kv::put(&mut client, addr, &key, &value, None, T)
            && reply.status == 200
        {
            acked.push(Acked {
                key,
                value,
                at: Instant::now(),
            });
        }
    }
    acked
}

fn must(addr: SocketAddr, method: &str, path: &str, body: serde_json::Value) -> serde_json::Value {
    let reply = kv::until_definite(&[addr], Duration::from_secs(60), |addr| {
        http::request(addr, method, path, Some(body.to_string().as_bytes()), T)
    })
    .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
    assert_eq!(reply.status, 200, "{method} {path}: {}", reply.text());
    reply.json()
}

#[test]
fn a_backup_taken_under_load_restores_into_a_new_cluster() {
    let source = Cluster::start("backup-source", 3);
    let leader = source.wait_ready(READY_TIMEOUT);
    let follower = (0..3).find(|&i| i != leader).unwrap();
    let lease = must(
        source.addr(leader),
        "POST",
        "/lease",
        json!({"ttl_ms": LEASE_TTL_MS}),
    )["id"]
        .as_u64()
        .unwrap();
    must(
        source.addr(leader),
        "PUT",
        "/kv/leased/key",
        json!({"value": "on a lease", "lease": lease}),
    );

    let stop = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = (0..WRITERS)
        .map(|id| {
            let addr = source.addr(id % 3);
            let stop = stop.clone();
            thread::spawn(move || writer(id, addr, stop))
        })
        .collect();
    thread::sleep(Duration::from_millis(1500));

    // The backup, through a follower, mid-load.
    let sent = Instant::now();
    let reply = http::request(
        source.addr(follower),
        "GET",
        "/admin/backup",
        None,
        Duration::from_secs(60),
    )
    .expect("the backup answers");
    assert_eq!(reply.status, 200, "{}", reply.text());
    thread::sleep(Duration::from_millis(500));
    stop.store(true, Ordering::Relaxed);
    let acked: Vec<Acked> = writers
        .into_iter()
        .flat_map(|w| w.join().expect("writer"))
        .collect();
    let before: BTreeMap<&str, &str> = acked
        .iter()
        .filter(|w| w.at < sent)
        .map(|w| (w.key.as_str(), w.value.as_str()))
        .collect();
    let after = acked.len() - before.len();
    assert!(
        !before.is_empty(),
        "no write was answered before the backup"
    );
    common::say(&format!(
        "backup: {} writes answered before the request, {after} after",
        before.len()
    ));
    let bytes = reply.body;
    assert_eq!(&bytes[0..8], b"RAFTKVBK");
    let revision = u64::from_le_bytes(bytes[12..20].try_into().unwrap());
    let file = source.dir().join("cluster.backup");
    std::fs::write(&file, &bytes).unwrap();
    let mut source = source;
    source.stop_all();

    // A new cluster, every node restored from the same file.
    let mut target = Cluster::new("backup-target", 3, &[]);
    let peers = (0..3)
        .map(|i| format!("{}=http://{}", target.nodes[i].name, target.addr(i)))
        .collect::<Vec<_>>()
        .join(",");
    for i in 0..3 {
        let output = Command::new(kv_node_binary())
            .args(["restore", "--from"])
            .arg(&file)
            .arg("--data-dir")
            .arg(&target.nodes[i].data_dir)
            .args(["--id", &target.nodes[i].name, "--peers", &peers])
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "restore {}: {}",
            target.nodes[i].name,
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let started = Instant::now();
    for i in 0..3 {
        target.start_node(i);
    }
    let new_leader = target.wait_ready(READY_TIMEOUT);
    let at = target.addr(new_leader);

    // The leased key, while its TTL (restarted by the new leader) runs.
    let first_read = kv::get_linearizable(at, "leased/key");
    if started.elapsed() < Duration::from_millis(LEASE_TTL_MS) {
        assert_eq!(first_read.as_deref(), Some("on a lease"));
    } else {
        common::say(
            "backup: the new cluster took longer than the TTL to answer; presence not checked",
        );
    }

    let restored: BTreeMap<String, String> = kv::scan_all(at, "load/", "linearizable")
        .expect("scan the restored cluster")
        .into_iter()
        .collect();
    for (key, value) in &before {
        assert_eq!(
            restored.get(*key).map(String::as_str),
            Some(*value),
            "{key}, answered before the backup, is not restored"
        );
    }
    let written = kv::put_ok(
        &target.addrs(),
        "after/restore",
        "new",
        &kv::ClientSeq::new("backup-test", 1),
    );
    let new_revision = written["revision"].as_u64().unwrap();
    assert!(
        new_revision > revision,
        "a write after the restore got revision {new_revision}, the backup is at {revision}"
    );

    // The lease expires in the new cluster: its key goes.
    let deadline = Instant::now() + Duration::from_millis(LEASE_TTL_MS) + Duration::from_secs(90);
    while kv::get_linearizable(at, "leased/key").is_some() {
        assert!(Instant::now() < deadline, "the leased key never expired");
        thread::sleep(Duration::from_millis(250));
    }
    // The other nodes agree.
    for i in 0..3 {
        assert_eq!(kv::get_linearizable(target.addr(i), "leased/key"), None);
    }
    target.stop_all();
}
