//! A kv-node process started with `--join` next to a [`Cluster`]: its own
//! loopback address and port, a data dir and log file in the cluster's
//! directory. Dropping it kills the process.
//!
//! Included by `tests/membership.rs` with `#[path]`, next to `mod common`.
//!
//! [`Cluster`]: crate::common::cluster::Cluster

use crate::common::binary::{free_port, kv_node_binary};
use crate::common::http;
use std::fs::{self, OpenOptions};
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

pub struct Joiner {
    pub name: String,
    pub addr: SocketAddr,
    pub log_path: PathBuf,
    child: Option<(Child, ChildStdin)>,
}

impl Joiner {
    /// Starts `name` on `ip` joining through `via` (a member's address) and
    /// waits until it answers `/healthz`.
    pub fn start(
        dir: &Path,
        name: &str,
        ip: Ipv4Addr,
        via: SocketAddr,
        extra_args: &[&str],
    ) -> Joiner {
        let port = free_port(name, &[ip]);
        let addr = SocketAddr::from((ip, port));
        let log_path = dir.join(format!("{name}.log"));
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .expect("open joiner log");
        let mut child = Command::new(kv_node_binary())
            .args(["--id", name, "--listen", &addr.to_string()])
            .args(["--join", &format!("http://{via}")])
            .arg("--data-dir")
            .arg(dir.join(name))
            .arg("--exit-on-stdin-eof")
            .args(extra_args)
            .env("NO_COLOR", "1")
            .env(
                "RUST_LOG",
                std::env::var("KV_NODE_LOG").unwrap_or("info".into()),
            )
            .stdin(Stdio::piped())
            .stdout(log.try_clone().expect("clone log"))
            .stderr(log)
            .spawn()
            .expect("spawn kv-node");
        let stdin = child.stdin.take().expect("piped stdin");
        let joiner = Joiner {
            name: name.to_string(),
            addr,
            log_path,
            child: Some((child, stdin)),
        };
        let deadline = Instant::now() + Duration::from_secs(40);
        while Instant::now() < deadline {
            let reply = http::request(addr, "GET", "/healthz", None, Duration::from_secs(2));
            if matches!(reply, Ok(ref r) if r.status == 200) {
                return joiner;
            }
            thread::sleep(Duration::from_millis(100));
        }
        panic!("{name} did not come up:\n{}", joiner.log_tail(40));
    }

    pub fn log_tail(&self, lines: usize) -> String {
        let text = fs::read_to_string(&self.log_path).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    pub fn kill(&mut self) {
        if let Some((mut child, stdin)) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
            drop(stdin);
        }
    }
}

impl Drop for Joiner {
    fn drop(&mut self) {
        self.kill();
    }
}
