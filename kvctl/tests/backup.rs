//! `kvctl backup FILE`: against a fake server, a reply that is not a
//! complete backup leaves FILE as it was (exit 1) and a refused token is
//! exit 5; against a real kv-node (looked up as in `end_to_end.rs`; without
//! it the test says so and passes), the file written is one `kv-node
//! restore` accepts, and the restored node serves the data.

mod common;

use common::{FakeServer, Run, kvctl};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn leftovers(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn a_reply_that_is_not_a_backup_leaves_the_file_as_it_was() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("store.backup");
    std::fs::write(&file, "the previous backup").unwrap();
    for body in [
        "",
        "{\"not\": \"a backup\"}",
        "RAFTKVBK\u{1}\0\0\0 and then it stops",
    ] {
        let server = FakeServer::canned(200, body);
        let run = kvctl(&[&server.url], &["backup", file.to_str().unwrap()]);
        assert_eq!(run.code, 1, "{body:?}: {run:?}");
        assert!(run.stderr.contains("refused"), "{run:?}");
        let request = server.only_request();
        assert_eq!(
            (request.method.as_str(), request.path.as_str()),
            ("GET", "/admin/backup")
        );
        assert_eq!(
            std::fs::read_to_string(&file).unwrap(),
            "the previous backup"
        );
        assert_eq!(leftovers(dir.path()), ["store.backup"]);
    }
}

#[test]
fn a_refused_token_is_exit_5_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("store.backup");
    let body = r#"{"error": {"code": "forbidden", "message": "needs admin"}}"#;
    let server = FakeServer::canned(403, body);
    let run = kvctl(&[&server.url], &["backup", file.to_str().unwrap()]);
    assert_eq!(run.code, 5, "{run:?}");
    assert!(leftovers(dir.path()).is_empty());
}

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

fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

fn start_node(binary: &Path, id: &str, port: u16, data_dir: &Path) -> Node {
    let mut command = Command::new(binary);
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("KV_NODE_") {
            command.env_remove(name);
        }
    }
    let log = std::fs::File::create(data_dir.with_extension("log")).unwrap();
    let child = command
        .args(["--id", id, "--listen", &format!("127.0.0.1:{port}")])
        .arg("--data-dir")
        .arg(data_dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("start kv-node");
    Node(child)
}

/// Runs kvctl until it exits 0 (at most 15 s and 150 tries).
fn until_ok(endpoint: &str, args: &[&str], node: &mut Node) -> Run {
    let deadline = Instant::now() + Duration::from_secs(15);
    for _ in 0..150 {
        if let Ok(Some(status)) = node.0.try_wait() {
            panic!("kv-node exited early with {status}");
        }
        let run = kvctl(&[endpoint], args);
        if run.code == 0 {
            return run;
        }
        assert!(
            Instant::now() < deadline,
            "{args:?} never succeeded: {run:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("{args:?} never succeeded");
}

#[test]
fn the_file_kvctl_backup_writes_is_one_kv_node_restore_accepts() {
    let Some(binary) = kv_node_binary() else {
        eprintln!("kv-node binary not found (cargo build -p kv-node); skipping");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let endpoint = format!("http://127.0.0.1:{port}");
    let mut node = start_node(&binary, "node1", port, &dir.path().join("old"));
    until_ok(&endpoint, &["put", "greeting", "hello"], &mut node);
    let put = until_ok(&endpoint, &["-o", "json", "put", "other", "x"], &mut node);
    let written: u64 = put.json()["revision"].as_u64().unwrap();

    let file = dir.path().join("store.backup");
    let run = kvctl(
        &[&endpoint],
        &["-o", "json", "backup", file.to_str().unwrap()],
    );
    assert_eq!(run.code, 0, "{run:?}");
    let revision = run.json()["revision"].as_u64().unwrap();
    assert!(revision >= written, "{run:?}");
    assert_eq!(
        run.json()["bytes"].as_u64(),
        Some(std::fs::metadata(&file).unwrap().len())
    );
    let run = kvctl(&[&endpoint], &["backup", file.to_str().unwrap()]);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(run.stdout.starts_with("backup of revision "), "{run:?}");
    assert_eq!(leftovers(dir.path()), ["old", "old.log", "store.backup"]);
    drop(node);

    let restored = dir.path().join("new");
    let output = Command::new(&binary)
        .args(["restore", "--from"])
        .arg(&file)
        .arg("--data-dir")
        .arg(&restored)
        .args(["--id", "fresh"])
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    let port = free_port();
    let endpoint = format!("http://127.0.0.1:{port}");
    let mut node = start_node(&binary, "fresh", port, &restored);
    let run = until_ok(&endpoint, &["get", "greeting"], &mut node);
    assert_eq!(run.stdout, "hello\n");
}
