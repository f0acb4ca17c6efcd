//! A cluster of real kv-node processes on loopback addresses 127.0.0.11,
//! 127.0.0.12, ..., one port for all, each with a temporary data dir and a
//! log file. Dropping the cluster kills every process, also on panic, and a
//! panicking test prints the tail of every node's log.
//!
//! Nodes run with `--exit-on-stdin-eof` and a pipe as standard input, so that
//! even a test process that dies without unwinding takes its nodes with it.

use super::binary::{free_port, kv_node_binary};
use super::http;
use serde_json::Value;
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

/// How long a loaded 2-core machine may take to elect a leader and become
/// ready after a start or a fault.
pub const READY_TIMEOUT: Duration = Duration::from_secs(60);

pub struct Node {
    pub name: String,
    pub ip: Ipv4Addr,
    pub data_dir: PathBuf,
    pub log_path: PathBuf,
    child: Option<(Child, ChildStdin)>,
    paused: bool,
    starts: u32,
}

impl Node {
    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    pub fn is_paused(&self) -> bool {
        self.paused
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|(child, _)| child.id())
    }
}

pub struct Cluster {
    pub name: String,
    pub port: u16,
    pub nodes: Vec<Node>,
    extra_args: Vec<String>,
    binary: PathBuf,
    // Taken last: the nodes are gone by then. Kept on disk after a panic.
    dir: Option<tempfile::TempDir>,
}

impl Cluster {
    /// Starts `size` nodes and waits until all are ready with one leader.
    pub fn start(name: &str, size: usize) -> Cluster {
        Cluster::start_with(name, size, &[])
    }

    /// As [`Cluster::start`], passing `extra_args` to every node.
    pub fn start_with(name: &str, size: usize, extra_args: &[&str]) -> Cluster {
        let mut cluster = Cluster::new(name, size, extra_args);
        for i in 0..size {
            cluster.start_node(i);
        }
        cluster.wait_ready(READY_TIMEOUT);
        cluster
    }

    /// Lays out `size` nodes without starting them.
    pub fn new(name: &str, size: usize, extra_args: &[&str]) -> Cluster {
        assert!((1..=9).contains(&size), "1..=9 nodes, got {size}");
        let ips: Vec<Ipv4Addr> = (0..size)
            .map(|i| Ipv4Addr::new(127, 0, 0, 11 + i as u8))
            .collect();
        let port = free_port(name, &ips);
        let dir = tempfile::Builder::new()
            .prefix(&format!("kvtest-{name}-"))
            .tempdir()
            .expect("temp dir");
        let nodes = ips
            .iter()
            .enumerate()
            .map(|(i, &ip)| Node {
                name: format!("node{}", i + 1),
                ip,
                data_dir: dir.path().join(format!("node{}", i + 1)),
                log_path: dir.path().join(format!("node{}.log", i + 1)),
                child: None,
                paused: false,
                starts: 0,
            })
            .collect();
        Cluster {
            name: name.to_string(),
            port,
            nodes,
            extra_args: extra_args.iter().map(|s| s.to_string()).collect(),
            binary: kv_node_binary(),
            dir: Some(dir),
        }
    }

    pub fn size(&self) -> usize {
        self.nodes.len()
    }

    pub fn dir(&self) -> &std::path::Path {
        self.dir.as_ref().expect("cluster dir").path()
    }

    pub fn addr(&self, i: usize) -> SocketAddr {
        SocketAddr::from((self.nodes[i].ip, self.port))
    }

    pub fn addrs(&self) -> Vec<SocketAddr> {
        (0..self.size()).map(|i| self.addr(i)).collect()
    }

    /// Addresses of the nodes that run and are not paused.
    pub fn live_addrs(&self) -> Vec<SocketAddr> {
        self.live().into_iter().map(|i| self.addr(i)).collect()
    }

    /// Indexes of the nodes that run and are not paused.
    pub fn live(&self) -> Vec<usize> {
        (0..self.size())
            .filter(|&i| self.nodes[i].is_running() && !self.nodes[i].paused)
            .collect()
    }

    fn peers_flag(&self) -> String {
        (0..self.size())
            .map(|i| format!("{}=http://{}", self.nodes[i].name, self.addr(i)))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Starts node `i` (again, with the same data dir); waits until it
    /// answers `/healthz`. Retries a start whose process exits at once (the
    /// port may still be held for a moment after a kill).
    pub fn start_node(&mut self, i: usize) {
        assert!(
            !self.nodes[i].is_running(),
            "{} already runs",
            self.nodes[i].name
        );
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            self.spawn(i);
            if self.wait_healthy(i, Duration::from_secs(20)) {
                return;
            }
            let exited = self.reap_if_exited(i);
            if !exited || Instant::now() > deadline {
                panic!(
                    "{} did not come up; log tail:\n{}",
                    self.nodes[i].name,
                    self.log_tail(i, 40)
                );
            }
            thread::sleep(Duration::from_millis(300));
        }
    }

    fn spawn(&mut self, i: usize) {
        let peers = self.peers_flag();
        let listen = self.addr(i).to_string();
        let node = &mut self.nodes[i];
        node.starts += 1;
        let mut log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&node.log_path)
            .expect("open node log");
        let _ = writeln!(log, "===== test harness: start #{} =====", node.starts);
        let mut child = Command::new(&self.binary)
            .args(["--id", &node.name, "--listen", &listen, "--peers", &peers])
            .arg("--data-dir")
            .arg(&node.data_dir)
            .arg("--exit-on-stdin-eof")
            .args(&self.extra_args)
            .env("NO_COLOR", "1")
            .env(
                "RUST_LOG",
                std::env::var("KV_NODE_LOG").unwrap_or("info".into()),
            )
            .stdin(Stdio::piped())
            .stdout(log.try_clone().expect("clone log"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {}: {e}", self.binary.display()));
        let stdin = child.stdin.take().expect("piped stdin");
        node.child = Some((child, stdin));
        node.paused = false;
    }

    fn reap_if_exited(&mut self, i: usize) -> bool {
        let node = &mut self.nodes[i];
        if let Some((child, _)) = node.child.as_mut()
            && let Ok(Some(_)) = child.try_wait()
        {
            node.child = None;
            return true;
        }
        false
    }

    fn wait_healthy(&mut self, i: usize, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            let reply = http::request(
                self.addr(i),
                "GET",
                "/healthz",
                None,
                Duration::from_secs(2),
            );
            if matches!(reply, Ok(ref r) if r.status == 200) {
                return true;
            }
            if self.reap_if_exited(i) {
                return false;
            }
            thread::sleep(Duration::from_millis(50));
        }
        false
    }

    /// `kill -9` node `i` and reap it.
    pub fn kill(&mut self, i: usize) {
        if let Some((mut child, stdin)) = self.nodes[i].child.take() {
            let _ = child.kill();
            let _ = child.wait();
            drop(stdin);
        }
        self.nodes[i].paused = false;
    }

    pub fn restart(&mut self, i: usize) {
        self.kill(i);
        self.start_node(i);
    }

    /// SIGSTOP node `i`.
    pub fn pause(&mut self, i: usize) {
        if let Some(pid) = self.nodes[i].pid() {
            signal("STOP", pid);
            self.nodes[i].paused = true;
        }
    }

    /// SIGCONT node `i`.
    pub fn resume(&mut self, i: usize) {
        if let Some(pid) = self.nodes[i].pid() {
            signal("CONT", pid);
        }
        self.nodes[i].paused = false;
    }

    pub fn status(&self, i: usize) -> Option<Value> {
        let reply = http::request(self.addr(i), "GET", "/status", None, Duration::from_secs(3));
        match reply {
            Ok(r) if r.status == 200 => Some(r.json()),
            _ => None,
        }
    }

    /// The leader's index if every live node is ready and names the same
    /// leader, which is live too.
    pub fn agreed_leader(&self) -> Option<usize> {
        let live = self.live();
        let mut leader: Option<String> = None;
        for &i in &live {
            let ready = http::request(self.addr(i), "GET", "/readyz", None, Duration::from_secs(3));
            if !matches!(ready, Ok(ref r) if r.status == 200) {
                return None;
            }
            let named = self.status(i)?["leader"].as_str()?.to_string();
            if leader.get_or_insert_with(|| named.clone()) != &named {
                return None;
            }
        }
        let leader = leader?;
        let index = self.nodes.iter().position(|n| n.name == leader)?;
        live.contains(&index).then_some(index)
    }

    /// Waits until every live node is ready and they agree on a live leader;
    /// returns the leader. Panics with the logs after `within`.
    pub fn wait_ready(&self, within: Duration) -> usize {
        self.try_wait_ready(within).unwrap_or_else(|| {
            panic!(
                "cluster {} not ready within {within:?}\n{}",
                self.name,
                self.all_log_tails(30)
            )
        })
    }

    pub fn try_wait_ready(&self, within: Duration) -> Option<usize> {
        let deadline = Instant::now() + within;
        loop {
            if let Some(leader) = self.agreed_leader() {
                return Some(leader);
            }
            if Instant::now() > deadline {
                return None;
            }
            thread::sleep(Duration::from_millis(100));
        }
    }

    /// The last `lines` lines of node `i`'s log.
    pub fn log_tail(&self, i: usize, lines: usize) -> String {
        let text = fs::read_to_string(&self.nodes[i].log_path).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    pub fn log(&self, i: usize) -> String {
        fs::read_to_string(&self.nodes[i].log_path).unwrap_or_default()
    }

    pub fn all_log_tails(&self, lines: usize) -> String {
        (0..self.size())
            .map(|i| {
                format!(
                    "----- {} ({}) log tail -----\n{}",
                    self.nodes[i].name,
                    self.nodes[i].log_path.display(),
                    self.log_tail(i, lines)
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Copies every node's log into `dir`, for a failed run to be studied.
    pub fn save_logs(&self, dir: &std::path::Path) {
        let _ = fs::create_dir_all(dir);
        for node in &self.nodes {
            let _ = fs::copy(&node.log_path, dir.join(format!("{}.log", node.name)));
        }
    }

    pub fn stop_all(&mut self) {
        for i in 0..self.size() {
            self.kill(i);
        }
    }
}

fn signal(name: &str, pid: u32) {
    let status = Command::new("kill")
        .args([format!("-{name}"), pid.to_string()])
        .status();
    assert!(
        matches!(status, Ok(s) if s.success()),
        "kill -{name} {pid}: {status:?}"
    );
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.stop_all();
        if thread::panicking() {
            let mut stderr = std::io::stderr();
            let _ = writeln!(stderr, "{}", self.all_log_tails(40));
            if let Some(dir) = self.dir.take() {
                let kept = dir.keep();
                let _ = writeln!(stderr, "data dirs and logs kept in {}", kept.display());
            }
        }
    }
}

/// A scratch file for one test's notes, beside the node logs.
pub fn create_file(cluster: &Cluster, name: &str) -> File {
    File::create(cluster.dir().join(name)).expect("create file")
}
