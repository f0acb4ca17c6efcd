//! A local 3-node cluster: `cargo run --release --example local-cluster`.
//!
//! Starts three kv-node processes on 127.0.0.1:8080, 8081 and 8082 with
//! their data in ./data/node1..3, waits until they have elected a leader,
//! prints their URLs and a few curl lines, and stops all three on Ctrl-C.
//!
//! How: examples cannot ask Cargo for the `kv-node` binary's path, so this
//! example re-executes itself: `local-cluster --node <kv-node flags>` runs
//! `kv_node::server::main_with_args`, the very code of the `kv-node`
//! binary. Each child holds a pipe from this process on its stdin and shuts
//! down gracefully when it closes (`--exit-on-stdin-eof`), so the nodes
//! never outlive the example, however it ends. Ctrl-C also reaches the
//! children directly (same process group).
//!
//! Environment: `LOCAL_CLUSTER_PORT` (first port, default 8080) and
//! `LOCAL_CLUSTER_DATA` (data root, default ./data). Extra arguments are
//! passed to every node, e.g. `-- --read-policy lease`.

use std::ffi::OsString;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

const NODES: u16 = 3;

fn main() -> ExitCode {
    let args: Vec<OsString> = std::env::args_os().collect();
    if args.get(1).is_some_and(|a| a == "--node") {
        let node_args = std::iter::once(OsString::from("kv-node")).chain(args[2..].iter().cloned());
        return kv_node::server::main_with_args(node_args);
    }
    match supervise(&args[1..]) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("local-cluster: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn supervise(extra: &[OsString]) -> anyhow::Result<()> {
    let base_port: u16 = std::env::var("LOCAL_CLUSTER_PORT")
        .ok()
        .map(|p| p.parse())
        .transpose()?
        .unwrap_or(8080);
    let data = std::env::var("LOCAL_CLUSTER_DATA").unwrap_or_else(|_| "data".into());
    let ports: Vec<u16> = (0..NODES).map(|i| base_port + i).collect();
    let peers = ports
        .iter()
        .enumerate()
        .map(|(i, port)| format!("node{}=http://127.0.0.1:{port}", i + 1))
        .collect::<Vec<_>>()
        .join(",");
    let exe = std::env::current_exe()?;
    let mut children: Vec<(String, Child)> = Vec::new();
    for (i, port) in ports.iter().enumerate() {
        let name = format!("node{}", i + 1);
        let child = Command::new(&exe)
            .arg("--node")
            .args([
                "--id",
                &name,
                "--port",
                &port.to_string(),
                "--peers",
                &peers,
            ])
            .args(["--data-dir", &format!("{data}/{name}")])
            .arg("--exit-on-stdin-eof")
            .args(extra)
            .stdin(Stdio::piped())
            .spawn()?;
        children.push((name, child));
    }

    let deadline = Instant::now() + Duration::from_secs(10);
    while !ports.iter().all(|p| ready(*p)) {
        if Instant::now() > deadline {
            eprintln!("local-cluster: the nodes are not ready after 10 s; see their logs above");
            break;
        }
        if let Some(failed) = exited(&mut children) {
            anyhow::bail!("{failed} exited during startup (is the port in use?)");
        }
        std::thread::sleep(Duration::from_millis(50));
    }

    let (a, b, c) = (ports[0], ports[1], ports[2]);
    println!();
    println!("3-node cluster running (data in {data}/node1..3):");
    for (i, port) in ports.iter().enumerate() {
        println!("  node{}  http://127.0.0.1:{port}", i + 1);
    }
    println!();
    println!("Try:");
    println!("  curl -s -XPUT localhost:{b}/kv/greeting -d '{{\"value\": \"hello\"}}'");
    println!("  curl -s localhost:{c}/kv/greeting");
    println!(
        "  curl -s -XPOST localhost:{a}/kv/greeting/cas -d '{{\"expected\": \"hello\", \"value\": \"hi\"}}'"
    );
    println!("  curl -s 'localhost:{a}/kv?prefix=gr'");
    println!("  curl -s localhost:{a}/status");
    println!("  curl -s localhost:{a}/metrics | grep kv_raft");
    println!();
    println!("Ctrl-C stops all three.");

    // Nothing to do but watch: Ctrl-C reaches the children directly, and
    // if this process dies their stdin closes and they stop.
    loop {
        if let Some(failed) = exited(&mut children) {
            eprintln!("local-cluster: {failed} stopped; stopping the others");
            for (_, child) in &mut children {
                drop(child.stdin.take());
            }
            for (_, child) in &mut children {
                let _ = child.wait();
            }
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The name of a child that has exited, if any.
fn exited(children: &mut [(String, Child)]) -> Option<String> {
    children
        .iter_mut()
        .find_map(|(name, child)| match child.try_wait() {
            Ok(Some(status)) => Some(format!("{name} ({status})")),
            _ => None,
        })
}

/// `GET /readyz` with a bare HTTP/1.0 request: 200 once a leader is known.
fn ready(port: u16) -> bool {
    let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_millis(500)));
    if stream
        .write_all(b"GET /readyz HTTP/1.0\r\nHost: localhost\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut head = [0u8; 12];
    stream.read_exact(&mut head).is_ok() && head.ends_with(b"200")
}
