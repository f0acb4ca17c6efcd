//! `kvctl watch` against a real single-node kv-node that is killed and
//! restarted mid-watch: kvctl resumes from the revision after the last
//! event it printed and prints every event once. The kv-node binary is
//! looked up as in `end_to_end.rs`; without it the test says so and passes.

mod common;

use common::kvctl;
use serde_json::Value;
use std::io::Read;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Kills the process when the test ends, however it ends.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn kv_node_binary() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("KV_NODE_BIN") {
        return Some(PathBuf::from(path));
    }
    let kvctl = PathBuf::from(env!("CARGO_BIN_EXE_kvctl"));
    let path = kvctl.with_file_name(format!("kv-node{}", std::env::consts::EXE_SUFFIX));
    path.exists().then_some(path)
}

fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

fn start_node(binary: &Path, port: u16, data_dir: &Path) -> Proc {
    let mut command = Command::new(binary);
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("KV_NODE_") {
            command.env_remove(name);
        }
    }
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(data_dir.with_extension("log"))
        .unwrap();
    let child = command
        .args(["--id", "node1", "--listen", &format!("127.0.0.1:{port}")])
        .arg("--data-dir")
        .arg(data_dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("start kv-node");
    Proc(child)
}

/// Puts `key` until it succeeds (the node may be starting), at most 15 s.
fn put(endpoint: &str, key: &str, value: &str) {
    let deadline = Instant::now() + Duration::from_secs(15);
    for _ in 0..150 {
        let run = kvctl(&[endpoint], &["--timeout", "1s", "put", key, value]);
        if run.code == 0 {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "put {key} never succeeded: {run:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("put {key}: no success after 150 tries");
}

#[test]
fn kvctl_watch_resumes_after_the_node_restarts_and_prints_each_event_once() {
    let Some(binary) = kv_node_binary() else {
        eprintln!("skipped: no kv-node binary (run `cargo build -p kv-node` or set KV_NODE_BIN)");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("node1");
    let port = free_port();
    let endpoint = format!("http://127.0.0.1:{port}");
    let node = start_node(&binary, port, &data_dir);
    put(&endpoint, "other", "x");

    let mut watch = Proc(
        Command::new(env!("CARGO_BIN_EXE_kvctl"))
            .env_remove("KVCTL_ENDPOINTS")
            .args(["--endpoints", &endpoint, "-o", "json"])
            .args(["watch", "w/", "--prefix", "--max-events", "4"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start kvctl watch"),
    );
    // Give the watch time to connect before the first write (it watches
    // from now); a write it misses only makes the test wait and fail.
    std::thread::sleep(Duration::from_millis(500));
    put(&endpoint, "w/1", "a");
    put(&endpoint, "w/2", "b");
    // The node is killed and comes back on the same port and data dir:
    // its history is rebuilt from the WAL, and kvctl resumes there.
    drop(node);
    let _node = start_node(&binary, port, &data_dir);
    put(&endpoint, "w/3", "c");
    put(&endpoint, "w/4", "d");

    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = watch.0.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "kvctl watch did not finish");
        std::thread::sleep(Duration::from_millis(100));
    };
    let mut stdout = String::new();
    watch
        .0
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut stdout)
        .unwrap();
    let mut stderr = String::new();
    watch
        .0
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    assert!(status.success(), "{status}: {stdout}\n{stderr}");
    let events: Vec<Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let keys: Vec<&str> = events.iter().map(|e| e["key"].as_str().unwrap()).collect();
    assert_eq!(keys, ["w/1", "w/2", "w/3", "w/4"], "{stderr}");
    let revisions: Vec<u64> = events
        .iter()
        .map(|e| e["revision"].as_u64().unwrap())
        .collect();
    assert!(revisions.windows(2).all(|w| w[0] < w[1]), "{revisions:?}");
    assert!(events.iter().all(|e| e["type"] == "put"));
    assert!(
        stderr.contains("resuming"),
        "the stream never broke: {stderr}"
    );
}
