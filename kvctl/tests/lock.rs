//! `kvctl lock` against a real 3-node kv-node cluster: two lockers never
//! overlap, the command's status comes back, a lost lease kills the
//! command (exit 6), a holder killed with SIGKILL frees the lock after the
//! TTL, and a dead cluster exits 3. The kv-node binary is looked up as in
//! `end_to_end.rs`; without it the cluster tests say so and pass.

mod common;

use common::{FakeServer, closed_endpoint, kvctl};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
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

/// Three nodes on 127.0.0.1; the endpoints start with a dead one, so every
/// request of the lock recipe also goes through failover.
struct Cluster {
    _nodes: Vec<Proc>,
    endpoints: String,
    _dir: tempfile::TempDir,
}

fn start_cluster(binary: &Path) -> Cluster {
    let dir = tempfile::tempdir().unwrap();
    let ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
    let url = |i: usize| format!("http://127.0.0.1:{}", ports[i]);
    let mut nodes = Vec::new();
    for (i, port) in ports.iter().enumerate() {
        let peers: Vec<String> = (0..3)
            .filter(|&j| j != i)
            .map(|j| format!("node{}={}", j + 1, url(j)))
            .collect();
        let data_dir = dir.path().join(format!("node{}", i + 1));
        let log = std::fs::File::create(data_dir.with_extension("log")).unwrap();
        let mut command = Command::new(binary);
        for (name, _) in std::env::vars_os() {
            if name.to_string_lossy().starts_with("KV_NODE_") {
                command.env_remove(name);
            }
        }
        let child = command
            .args(["--id", &format!("node{}", i + 1)])
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .args(["--peers", &peers.join(",")])
            .arg("--data-dir")
            .arg(&data_dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start kv-node");
        nodes.push(Proc(child));
    }
    let endpoints = format!("{},{},{},{}", closed_endpoint(), url(0), url(1), url(2));
    // Up when a write goes through: at most 30 s, 300 tries.
    let deadline = Instant::now() + Duration::from_secs(30);
    for attempt in 0..300 {
        let run = kvctl(&[&endpoints], &["--timeout", "1s", "put", "ready", "1"]);
        if run.code == 0 {
            break;
        }
        assert!(
            attempt < 299 && Instant::now() < deadline,
            "the cluster never took a write: {run:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    Cluster {
        _nodes: nodes,
        endpoints,
        _dir: dir,
    }
}

fn lock_command(endpoints: &str, args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_kvctl"));
    command
        .env_remove("KVCTL_ENDPOINTS")
        .args(["--endpoints", endpoints, "--timeout", "2s", "lock"])
        .args(args)
        .stdin(Stdio::null());
    command
}

/// Waits for a process, at most `limit` (bounded polls).
fn wait_for(child: &mut Child, limit: Duration, what: &str) -> ExitStatus {
    let deadline = Instant::now() + limit;
    for _ in 0..10_000 {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        assert!(Instant::now() < deadline, "{what} did not finish");
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("{what}: no exit after 10,000 polls");
}

/// Waits until `path` holds a non-empty line, at most 30 s.
fn read_when_written(path: &Path) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    for _ in 0..3_000 {
        if let Ok(text) = std::fs::read_to_string(path)
            && text.ends_with('\n')
        {
            return text.trim().to_string();
        }
        assert!(
            Instant::now() < deadline,
            "{} never written",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    panic!("{} never written", path.display());
}

#[test]
fn two_lockers_never_hold_the_lock_at_once_and_statuses_come_back() {
    let Some(binary) = kv_node_binary() else {
        eprintln!("skipped: no kv-node binary (run `cargo build -p kv-node` or set KV_NODE_BIN)");
        return;
    };
    let cluster = start_cluster(&binary);
    let dir = tempfile::tempdir().unwrap();
    let markers = dir.path().join("markers");
    const ROUNDS: usize = 4;
    let lockers: Vec<_> = ["A", "B"]
        .into_iter()
        .map(|id| {
            let (endpoints, markers) = (cluster.endpoints.clone(), markers.clone());
            std::thread::spawn(move || {
                for _ in 0..ROUNDS {
                    let script = r#"echo "enter $ID" >> "$F"; sleep 0.3; echo "exit $ID" >> "$F""#;
                    let mut child = lock_command(&endpoints, &["race", "--", "sh", "-c", script])
                        .env("ID", id)
                        .env("F", &markers)
                        .stdout(Stdio::null())
                        .spawn()
                        .unwrap();
                    let status = wait_for(&mut child, Duration::from_secs(60), "kvctl lock");
                    assert!(status.success(), "locker {id}: {status}");
                }
            })
        })
        .collect();
    for locker in lockers {
        locker.join().unwrap();
    }
    let text = std::fs::read_to_string(&markers).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 4 * ROUNDS, "{text}");
    for pair in lines.chunks(2) {
        let who = pair[0].strip_prefix("enter ").expect(&text);
        assert_eq!(pair[1], format!("exit {who}"), "overlap:\n{text}");
    }

    // The command's status and the environment it gets.
    let e = [cluster.endpoints.as_str()];
    let run = kvctl(&e, &["lock", "code", "--", "sh", "-c", "exit 7"]);
    assert_eq!(run.code, 7, "{run:?}");
    let run = kvctl(
        &e,
        &["lock", "env", "--", "sh", "-c", "echo $KVCTL_LOCK_KEY"],
    );
    assert_eq!(
        (run.code, run.stdout.as_str()),
        (0, "locks/env\n"),
        "{run:?}"
    );
    // Released: the key is gone.
    assert_eq!(kvctl(&e, &["get", "locks/env"]).code, 1);

    // A lease revoked under the holder: the command is killed, exit 6.
    let lease_file = dir.path().join("lease");
    let mut holder = Proc(
        lock_command(
            &cluster.endpoints,
            &[
                "lost",
                "--",
                "sh",
                "-c",
                r#"echo $KVCTL_LOCK_LEASE > "$F"; exec sleep 60"#,
            ],
        )
        .env("F", &lease_file)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap(),
    );
    let lease = read_when_written(&lease_file);
    assert_eq!(kvctl(&e, &["lease", "revoke", &lease]).code, 0);
    let status = wait_for(&mut holder.0, Duration::from_secs(30), "the holder");
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut holder.0.stderr.take().unwrap(), &mut stderr).unwrap();
    assert_eq!(status.code(), Some(6), "{stderr}");
    assert!(stderr.contains("lost the lock locks/lost"), "{stderr}");
}

#[test]
fn a_holder_killed_with_sigkill_frees_the_lock_after_its_ttl() {
    let Some(binary) = kv_node_binary() else {
        eprintln!("skipped: no kv-node binary (run `cargo build -p kv-node` or set KV_NODE_BIN)");
        return;
    };
    let cluster = start_cluster(&binary);
    let dir = tempfile::tempdir().unwrap();
    let (pid_file, markers) = (dir.path().join("pid"), dir.path().join("markers"));
    let mut holder = Proc(
        lock_command(
            &cluster.endpoints,
            &[
                "--ttl",
                "2s",
                "killed",
                "--",
                "sh",
                "-c",
                r#"echo $$ > "$P"; echo "enter A" >> "$F"; exec sleep 60"#,
            ],
        )
        .env("P", &pid_file)
        .env("F", &markers)
        .stdout(Stdio::null())
        .spawn()
        .unwrap(),
    );
    let command_pid = read_when_written(&pid_file);
    let mut waiter = Proc(
        lock_command(
            &cluster.endpoints,
            &["killed", "--", "sh", "-c", r#"echo "enter B" >> "$F""#],
        )
        .env("F", &markers)
        .stdout(Stdio::null())
        .spawn()
        .unwrap(),
    );
    // The waiter waits on the holder; then the holder dies without a word.
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(std::fs::read_to_string(&markers).unwrap(), "enter A\n");
    holder.0.kill().unwrap();
    holder.0.wait().unwrap();
    let status = wait_for(&mut waiter.0, Duration::from_secs(60), "the waiter");
    assert!(status.success(), "{status}");
    assert_eq!(
        std::fs::read_to_string(&markers).unwrap(),
        "enter A\nenter B\n"
    );
    // The holder's command died with it (it would otherwise run on
    // without the lock): gone, or a zombie nobody has reaped yet.
    let stat = Path::new("/proc").join(&command_pid).join("stat");
    let deadline = Instant::now() + Duration::from_secs(10);
    for _ in 0..1_000 {
        match std::fs::read_to_string(&stat) {
            Err(_) => return,
            Ok(text) if text.split(") ").nth(1).is_some_and(|s| s.starts_with('Z')) => return,
            Ok(text) => assert!(
                Instant::now() < deadline,
                "the command outlived kvctl: {text}"
            ),
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    panic!("the command outlived kvctl");
}

#[test]
fn lock_on_a_dead_cluster_exits_3_and_runs_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("ran");
    let (a, b) = (closed_endpoint(), closed_endpoint());
    let run = kvctl(
        &[&a, &b],
        &["lock", "x", "--", "touch", marker.to_str().unwrap()],
    );
    assert_eq!(run.code, 3, "{run:?}");
    assert!(run.stderr.starts_with("no endpoint reachable"), "{run:?}");
    assert!(!marker.exists());
}

#[test]
fn an_acquire_whose_answer_is_lost_is_resent_with_the_same_client_id_and_seq() {
    // A fake node: the first transaction is answered too late (after
    // kvctl's --timeout), so its outcome is unknown; the retry must be
    // the same (client_id, seq), which the server deduplicates.
    let txns = Arc::new(AtomicUsize::new(0));
    let counter = txns.clone();
    let node =
        FakeServer::start(
            move |request| match (request.method.as_str(), request.path.as_str()) {
                ("POST", "/lease") => (200, r#"{"id": 5, "ttl_ms": 3000}"#.into()),
                ("POST", "/lease/5/keepalive") => (200, r#"{"id": 5, "ttl_ms": 3000}"#.into()),
                ("POST", "/txn") => {
                    if counter.fetch_add(1, Ordering::SeqCst) == 0 {
                        std::thread::sleep(Duration::from_millis(1500));
                    }
                    (
                        200,
                        r#"{"succeeded": true, "revision": 9, "results": [{"prev": null}]}"#.into(),
                    )
                }
                ("DELETE", "/lease/5") => (200, r#"{"revision": 10, "deleted": 1}"#.into()),
                _ => (
                    404,
                    r#"{"error": {"code": "not_found", "message": "?"}}"#.into(),
                ),
            },
        );
    let run = kvctl(
        &[&node.url],
        &[
            "--timeout",
            "500ms",
            "lock",
            "job",
            "--",
            "sh",
            "-c",
            "echo $KVCTL_LOCK_REVISION",
        ],
    );
    assert_eq!((run.code, run.stdout.as_str()), (0, "9\n"), "{run:?}");
    let sent: Vec<_> = node
        .requests()
        .into_iter()
        .filter(|r| r.path == "/txn")
        .map(|r| r.body.unwrap())
        .collect();
    assert!(sent.len() >= 2, "the transaction was not resent: {sent:?}");
    for body in &sent {
        assert_eq!(body["client_id"], "kvctl-lock-5", "{sent:?}");
        assert_eq!(body["seq"], 1, "{sent:?}");
        assert_eq!(body["success"][0]["put"]["lease"], 5);
        assert_eq!(body["compare"][0]["revision"], 0);
    }
    // Released at the end.
    assert!(
        node.requests()
            .iter()
            .any(|r| r.method == "DELETE" && r.path == "/lease/5")
    );
}
