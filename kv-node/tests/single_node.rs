//! One kv-node in-process on 127.0.0.1:0: the driver, the WAL and the HTTP
//! server together, over real HTTP; then a restart from the same data dir.

use clap::Parser;
use kv_node::cli::Cli;
use kv_node::server::{self, RunningNode, StartError};
use serde_json::{Value, json};
use std::path::Path;
use std::time::Duration;

async fn start(dir: &Path, listen: &str) -> Result<RunningNode, StartError> {
    let cli = Cli::try_parse_from([
        "kv-node",
        "--id",
        "solo",
        "--listen",
        listen,
        "--data-dir",
        dir.to_str().unwrap(),
        "--snapshot-entries",
        "50",
    ])
    .unwrap();
    server::start(cli.validate().unwrap()).await
}

async fn wait_ready(client: &reqwest::Client, base: &str) {
    for _ in 0..300 {
        if let Ok(r) = client.get(format!("{base}/readyz")).send().await
            && r.status() == 200
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("node at {base} never became ready");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_single_node_serves_writes_and_keeps_them_across_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let node = start(dir.path(), "127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", node.local_addr);
    wait_ready(&client, &base).await;

    // Concurrent writes share fsyncs (group commit) and all succeed.
    let writes = (0..200).map(|i| {
        let client = client.clone();
        let url = format!("{base}/kv/key{i}");
        async move {
            let r = client
                .put(url)
                .json(&json!({"value": format!("v{i}")}))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200);
        }
    });
    futures_util::future::join_all(writes).await;
    let fsyncs = node.metrics.fsync.count();
    assert!(
        fsyncs < 200,
        "expected group commit, got {fsyncs} fsyncs for 200 writes"
    );

    let got: Value = client
        .get(format!("{base}/kv/key7"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(got["value"], "v7");
    // Snapshots are written in the background: the index moves once the
    // writer is done (bounded wait).
    let mut status = Value::Null;
    for _ in 0..200 {
        status = client
            .get(format!("{base}/status"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if status["snapshot_index"].as_u64().unwrap() >= 50 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(status["snapshot_index"].as_u64().unwrap() >= 50, "{status}");

    // A second node on the same data dir is refused by the lock; a second
    // bind on the same port is reported.
    let other = tempfile::tempdir().unwrap();
    assert!(matches!(
        start(dir.path(), "127.0.0.1:0").await,
        Err(StartError::Storage { .. })
    ));
    assert!(matches!(
        start(other.path(), &node.local_addr.to_string()).await,
        Err(StartError::Bind { .. })
    ));

    node.shutdown().await.unwrap();

    let node = start(dir.path(), "127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", node.local_addr);
    wait_ready(&client, &base).await;
    for i in [0, 7, 199] {
        let got: Value = client
            .get(format!("{base}/kv/key{i}"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(got["value"], format!("v{i}"), "key{i} after restart");
    }
    node.shutdown().await.unwrap();
}
