//! kvctl against a real single-node kv-node. The kv-node binary is looked up
//! next to kvctl's (`target/debug/kv-node`, built with `cargo build -p
//! kv-node`) or at `$KV_NODE_BIN`; without it the test says so and passes.

mod common;

use common::{Run, kvctl};
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Kills the node when the test ends, however it ends.
struct Node(Child);

impl Drop for Node {
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

/// A port nothing listens on right now: bound on 127.0.0.1:0, then released.
fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

fn start_node(binary: &PathBuf, port: u16, data_dir: &std::path::Path) -> Node {
    let mut command = Command::new(binary);
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("KV_NODE_") {
            command.env_remove(name);
        }
    }
    let log = std::fs::File::create(data_dir.with_extension("log")).unwrap();
    let child = command
        .args(["--id", "node1", "--listen", &format!("127.0.0.1:{port}")])
        .arg("--data-dir")
        .arg(data_dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("start kv-node");
    Node(child)
}

/// Waits, at most 15 s and 150 polls, until the node says it leads.
fn wait_for_leader(endpoint: &str, node: &mut Node) {
    let deadline = Instant::now() + Duration::from_secs(15);
    for _ in 0..150 {
        if let Ok(Some(status)) = node.0.try_wait() {
            panic!("kv-node exited early with {status}");
        }
        let run = kvctl(&[endpoint], &["--timeout", "1s", "-o", "json", "status"]);
        if run.code == 0 && run.json()[0]["reply"]["role"] == "leader" {
            return;
        }
        assert!(Instant::now() < deadline, "no leader within 15 s: {run:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("no leader after 150 polls");
}

fn ok(run: Run) -> Run {
    assert_eq!(run.code, 0, "{run:?}");
    run
}

#[test]
fn put_get_del_cas_scan_and_status_work_against_a_real_single_node() {
    let Some(binary) = kv_node_binary() else {
        eprintln!("skipped: no kv-node binary (run `cargo build -p kv-node` or set KV_NODE_BIN)");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("node1");
    let port = free_port();
    let endpoint = format!("http://127.0.0.1:{port}");
    let mut node = start_node(&binary, port, &data_dir);
    wait_for_leader(&endpoint, &mut node);
    let e = [endpoint.as_str()];

    ok(kvctl(&e, &["put", "greeting", "hello"]));
    assert_eq!(ok(kvctl(&e, &["get", "greeting"])).stdout, "hello\n");
    // Keys with a slash, a space and a percent sign survive the URL.
    ok(kvctl(&e, &["put", "dir/a b%", "x"]));
    let got = ok(kvctl(
        &e,
        &["-o", "json", "get", "dir/a b%", "--consistency", "stale"],
    ));
    assert_eq!(got.json()["key"], "dir/a b%");

    let failed = kvctl(
        &e,
        &["cas", "greeting", "--expected", "bye", "--value", "v2"],
    );
    assert_eq!(failed.code, 4, "{failed:?}");
    assert!(failed.stdout.contains("current=\"hello\""), "{failed:?}");
    ok(kvctl(
        &e,
        &["cas", "greeting", "--expected", "hello", "--value", "v2"],
    ));
    ok(kvctl(&e, &["cas", "fresh", "--absent", "--value", "new"]));
    assert_eq!(
        ok(kvctl(&e, &["get", "greeting", "--consistency", "lease"])).stdout,
        "v2\n"
    );

    ok(kvctl(&e, &["mput", "dir/b=2", "dir/c=3"]));
    let scan = ok(kvctl(&e, &["-o", "json", "scan", "dir/", "--limit", "2"])).json();
    let keys: Vec<&str> = scan["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|entry| entry["key"].as_str().unwrap())
        .collect();
    assert_eq!(
        (keys, &scan["more"]),
        (vec!["dir/a b%", "dir/b"], &serde_json::json!(true))
    );
    let table = ok(kvctl(&e, &["scan", "dir/"]));
    assert_eq!(
        table.stdout.lines().count(),
        4,
        "a header and three keys: {table:?}"
    );

    // Transactions, compact and as JSON from a file.
    let took = ok(kvctl(
        &e,
        &[
            "txn",
            "--if",
            "lock rev== 0",
            "--if",
            "greeting == v2",
            "--then",
            "put lock me",
            "--then",
            "get lock",
            "--else",
            "get lock",
        ],
    ));
    assert!(took.stdout.starts_with("SUCCEEDED revision="), "{took:?}");
    assert!(took.stdout.contains("lock = me"), "{took:?}");
    let busy = kvctl(
        &e,
        &[
            "-o",
            "json",
            "txn",
            "--if",
            "lock rev== 0",
            "--then",
            "put lock you",
            "--else",
            "get lock",
        ],
    );
    assert_eq!(busy.code, 4, "the comparison failed: {busy:?}");
    assert_eq!(busy.json()["results"][0]["value"], "me");
    let file = dir.path().join("txn.json");
    std::fs::write(
        &file,
        r#"{"compare": [{"key": "lock", "target": "value", "op": "==", "value": "me"}],
            "success": [{"delete": {"key": "lock"}}]}"#,
    )
    .unwrap();
    let released = ok(kvctl(
        &e,
        &["-o", "json", "txn", "--file", file.to_str().unwrap()],
    ));
    assert_eq!(released.json()["results"][0]["prev"], "me");
    let bad = kvctl(&e, &["txn", "--if", "lock <= 1", "--then", "get lock"]);
    assert_eq!(
        bad.code, 2,
        "a malformed comparison is a usage error: {bad:?}"
    );

    // A retried write with the same (client_id, seq) is applied once.
    let dedup = [
        "-o",
        "json",
        "put",
        "once",
        "1",
        "--client-id",
        "c1",
        "--seq",
        "5",
    ];
    let first = ok(kvctl(&e, &dedup)).json();
    let again = ok(kvctl(&e, &dedup)).json();
    assert_eq!(first["revision"], again["revision"]);

    ok(kvctl(&e, &["del", "greeting"]));
    let missing = kvctl(&e, &["get", "greeting"]);
    assert_eq!(missing.code, 1, "{missing:?}");
    assert!(missing.stderr.starts_with("not_found: "), "{missing:?}");

    let status = ok(kvctl(&e, &["status"]));
    let row: Vec<&str> = status
        .stdout
        .lines()
        .nth(1)
        .unwrap()
        .split_whitespace()
        .collect();
    assert_eq!(
        (row[0], row[1], row[2], row[6]),
        ("node1", e[0], "leader", "node1"),
        "{status:?}"
    );
    let members = ok(kvctl(&e, &["member", "list"]));
    assert!(members.stdout.contains("node1"), "{members:?}");
    ok(kvctl(&e, &["snapshot"]));
    ok(kvctl(&e, &["read-policy", "lease"]));
    assert!(ok(kvctl(&e, &["read-policy"])).stdout.contains("lease"));
    ok(kvctl(
        &e,
        &["bench", "--duration", "200ms", "--workers", "2"],
    ));
    drop(node);
}
