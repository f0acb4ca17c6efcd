//! Resource limits against one in-process node over plain HTTP on
//! 127.0.0.1 (issue 13, item 5): slow headers and slow bodies are cut
//! off, open connections are capped, and a peer batch over the limit is
//! refused before it is buffered whole.

use clap::Parser;
use kv_node::auth::PeerSecret;
use kv_node::cli::Cli;
use kv_node::server::{self, RunningNode};
use std::path::Path;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const WRITE: &str = "write-token-bbbbbbbbbbbbbbbb";
const PEER: &str = "peer-token-dddddddddddddddd";

async fn start(dir: &Path, extra: &[&str]) -> RunningNode {
    let tokens = dir.join("tokens");
    std::fs::write(&tokens, format!("write {WRITE}\n")).unwrap();
    let peer = dir.join("peer-token");
    std::fs::write(&peer, PEER).unwrap();
    let data = dir.join("data");
    let mut args = vec![
        "kv-node",
        "--id",
        "solo",
        "--listen",
        "127.0.0.1:0",
        "--data-dir",
        data.to_str().unwrap(),
        "--auth-token-file",
        tokens.to_str().unwrap(),
        "--peer-token-file",
        peer.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    let cli = Cli::try_parse_from(args).unwrap();
    server::start(cli.validate().unwrap()).await.unwrap()
}

/// Reads until the server closes the connection (or 10 s pass): what it
/// sent, and whether it closed.
async fn read_until_closed(stream: &mut TcpStream) -> (String, bool) {
    let mut got = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut buf = [0u8; 4096];
    while Instant::now() < deadline {
        match tokio::time::timeout(Duration::from_millis(200), stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return (String::from_utf8_lossy(&got).into(), true),
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
            Err(_) => {}
        }
    }
    (String::from_utf8_lossy(&got).into(), false)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_headers_are_cut_off_over_plain_http() {
    let dir = tempfile::tempdir().unwrap();
    let node = start(dir.path(), &["--header-timeout-ms", "300"]).await;
    let mut slow = TcpStream::connect(node.local_addr).await.unwrap();
    // Headers that never end.
    slow.write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n")
        .await
        .unwrap();
    let (_, closed) = read_until_closed(&mut slow).await;
    assert!(
        closed,
        "a request whose headers never end kept its connection"
    );
    // An idle connection is closed too.
    let mut idle = TcpStream::connect(node.local_addr).await.unwrap();
    let (_, closed) = read_until_closed(&mut idle).await;
    assert!(closed, "an idle connection stayed open");
    node.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_body_gets_408_and_frees_its_slot() {
    let dir = tempfile::tempdir().unwrap();
    let node = start(
        dir.path(),
        &["--body-timeout-ms", "300", "--max-concurrent-requests", "1"],
    )
    .await;
    let mut slow = TcpStream::connect(node.local_addr).await.unwrap();
    slow.write_all(
        format!(
            "PUT /kv/slow HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {WRITE}\r\n\
             content-length: 100\r\n\r\n{{\"value\""
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    let (reply, _) = read_until_closed(&mut slow).await;
    assert!(reply.starts_with("HTTP/1.1 408"), "{reply}");
    assert!(reply.contains("request_timeout"), "{reply}");
    // The only slot is free again.
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    let response = http
        .put(format!("http://{}/kv/k", node.local_addr))
        .bearer_auth(WRITE)
        .json(&serde_json::json!({"value": "v"}))
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .unwrap();
    assert_ne!(response.status(), 503);
    node.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_over_the_limit_are_closed_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let node = start(dir.path(), &["--max-connections", "2"]).await;
    let addr = node.local_addr;
    let held = [
        TcpStream::connect(addr).await.unwrap(),
        TcpStream::connect(addr).await.unwrap(),
    ];
    // Let the server accept both before the third arrives.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut third = TcpStream::connect(addr).await.unwrap();
    let _ = third
        .write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n")
        .await;
    let (reply, closed) = read_until_closed(&mut third).await;
    assert!(
        closed && reply.is_empty(),
        "third connection served: {reply:?}"
    );
    drop(held);
    // Slots come back once connections close.
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    let mut status = 0;
    for _ in 0..100 {
        if let Ok(r) = http.get(format!("http://{addr}/healthz")).send().await {
            status = r.status().as_u16();
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(status, 200);
    let metrics = http
        .get(format!("http://{addr}/metrics"))
        .bearer_auth(WRITE)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("kv_connections_refused_total") && !l.ends_with(" 0")),
        "{metrics}"
    );
    node.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_batch_over_the_chunk_sized_limit_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let node = start(dir.path(), &[]).await;
    let credential = PeerSecret::new(PEER.as_bytes()).credential_for("solo");
    let stream = TcpStream::connect(node.local_addr).await.unwrap();
    let (mut reader, mut writer) = stream.into_split();
    let body_bytes = 5usize << 20;
    let writing = tokio::spawn(async move {
        let head = format!(
            "POST /raft/messages HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {credential}\r\n\
             content-length: {body_bytes}\r\n\r\n"
        );
        writer.write_all(head.as_bytes()).await?;
        let chunk = vec![0u8; 64 << 10];
        for _ in 0..body_bytes / chunk.len() {
            writer.write_all(&chunk).await?;
        }
        Ok::<_, std::io::Error>(())
    });
    let mut reply = vec![0u8; 12];
    tokio::time::timeout(Duration::from_secs(20), reader.read_exact(&mut reply))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        &reply,
        b"HTTP/1.1 413",
        "{}",
        String::from_utf8_lossy(&reply)
    );
    let _ = writing.await;
    // The default is 4 MiB, far below a snapshot: chunks travel one per message.
    let cli = Cli::try_parse_from(["kv-node", "--id", "a"]).unwrap();
    assert_eq!(cli.validate().unwrap().max_peer_batch_bytes, 4 << 20);
    // One entry must always fit: a limit below the largest write body is refused.
    let cli =
        Cli::try_parse_from(["kv-node", "--id", "a", "--max-peer-batch-bytes", "1048576"]).unwrap();
    assert!(cli.validate().is_err());
    node.shutdown().await.unwrap();
}
