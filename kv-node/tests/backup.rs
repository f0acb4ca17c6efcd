//! Backup and restore on in-process nodes over real HTTP, and the
//! `kv-node restore` binary: `GET /admin/backup` streams a checked copy
//! holding every write answered before it; restore seeds identical data
//! directories for every member of a new cluster, whose revisions continue
//! above the backup's and whose leases expire after their TTL; a damaged
//! or truncated file, or a non-empty directory, is refused with exit 2 and
//! nothing written.

use clap::Parser;
use kv_node::cli::Cli;
use kv_node::server::{self, RunningNode};
use kv_replica::backup::read_backup;
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

async fn start(id: &str, dir: &Path) -> RunningNode {
    let cli = Cli::try_parse_from([
        "kv-node",
        "--id",
        id,
        "--listen",
        "127.0.0.1:0",
        "--data-dir",
        dir.to_str().unwrap(),
    ])
    .unwrap();
    server::start(cli.validate().unwrap()).await.unwrap()
}

struct Api {
    client: reqwest::Client,
    base: String,
}

impl Api {
    async fn new(node: &RunningNode) -> Api {
        let api = Api {
            client: reqwest::Client::builder().no_proxy().build().unwrap(),
            base: format!("http://{}", node.local_addr),
        };
        for _ in 0..1000 {
            if let Ok(r) = api.client.get(format!("{}/readyz", api.base)).send().await
                && r.status() == 200
            {
                return api;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("node never became ready");
    }

    async fn call(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        let method = method.parse().unwrap();
        let mut request = self.client.request(method, format!("{}{path}", self.base));
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let text = response.text().await.unwrap();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    /// `GET /admin/backup`: the revision header and the body.
    async fn backup(&self) -> (u64, Vec<u8>) {
        let response = self
            .client
            .get(format!("{}/admin/backup", self.base))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), 200);
        assert_eq!(
            response.headers()["content-type"],
            "application/octet-stream"
        );
        let revision = response.headers()["x-kv-revision"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        (revision, response.bytes().await.unwrap().to_vec())
    }
}

/// A store with keys, a lease of 1 s with a key on it: the backup file,
/// its revision and the revision of the last write answered before it.
async fn store_and_backup(dir: &Path) -> (PathBuf, u64, u64) {
    let node = start("old1", &dir.join("old")).await;
    let api = Api::new(&node).await;
    let mut last = 0;
    for i in 0..20 {
        let (status, body) = api
            .call(
                "PUT",
                &format!("/kv/k{i}"),
                Some(json!({"value": i.to_string()})),
            )
            .await;
        assert_eq!(status, 200, "{body}");
        last = body["revision"].as_u64().unwrap();
    }
    let (_, grant) = api
        .call("POST", "/lease", Some(json!({"ttl_ms": 1000})))
        .await;
    let lease = grant["id"].as_u64().unwrap();
    let put = json!({"value": "soon gone", "lease": lease});
    let (status, _) = api.call("PUT", "/kv/leased", Some(put)).await;
    assert_eq!(status, 200);
    // Keep the lease alive while the backup is taken.
    api.call("POST", &format!("/lease/{lease}/keepalive"), None)
        .await;
    let (revision, bytes) = api.backup().await;
    assert!(
        revision > last,
        "backup at {revision}, last write at {last}"
    );
    let path = dir.join("store.backup");
    std::fs::write(&path, &bytes).unwrap();
    node.shutdown().await.unwrap();
    (path, revision, last)
}

fn restore(from: &Path, data_dir: &Path, id: &str, peers: &str) -> (i32, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_kv-node"))
        .args(["restore", "--from"])
        .arg(from)
        .arg("--data-dir")
        .arg(data_dir)
        .args(["--id", id, "--peers", peers])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&output.stdout).to_string()
        + &String::from_utf8_lossy(&output.stderr);
    (output.status.code().unwrap_or(-1), text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_holds_every_answered_write_at_its_revision() {
    let dir = tempfile::tempdir().unwrap();
    let (path, revision, _) = store_and_backup(dir.path()).await;
    let bytes = std::fs::read(&path).unwrap();
    let (info, state) = read_backup(&mut bytes.as_slice()).unwrap();
    assert_eq!(info.revision, revision);
    assert_eq!(state.applied_index(), revision);
    for i in 0..20 {
        let (value, _) = state.get(&format!("k{i}")).unwrap();
        assert_eq!(value, i.to_string());
    }
    let lease = state.lease_of("leased").expect("the key is on its lease");
    assert_eq!(state.lease(lease).unwrap().0, 1000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backup_takes_only_get_and_names_its_route() {
    let dir = tempfile::tempdir().unwrap();
    let node = start("solo", dir.path()).await;
    let api = Api::new(&node).await;
    let (status, body) = api.call("POST", "/admin/backup", None).await;
    assert_eq!(status, 405, "{body}");
    assert_eq!(body["error"]["code"], "method_not_allowed");
    let (revision, bytes) = api.backup().await;
    let (info, _) = read_backup(&mut bytes.as_slice()).unwrap();
    assert_eq!(info.revision, revision);
    let metrics = api.client.get(format!("{}/metrics", api.base));
    let text = metrics.send().await.unwrap().text().await.unwrap();
    assert!(text.contains("route=\"backup\""), "{text}");
    node.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restored_node_holds_the_data_writes_above_it_and_expires_its_leases() {
    let dir = tempfile::tempdir().unwrap();
    let (path, revision, _) = store_and_backup(dir.path()).await;
    let new_dir = dir.path().join("new");
    let (code, text) = restore(&path, &new_dir, "fresh1", "");
    assert_eq!(code, 0, "{text}");
    assert!(
        text.contains(&format!("restored revision {revision}")),
        "{text}"
    );

    let node = start("fresh1", &new_dir).await;
    let api = Api::new(&node).await;
    let (status, body) = api.call("GET", "/kv/k7", None).await;
    assert_eq!((status, body["value"].as_str()), (200, Some("7")));
    let (status, body) = api
        .call("PUT", "/kv/new", Some(json!({"value": "x"})))
        .await;
    assert_eq!(status, 200);
    assert!(body["revision"].as_u64().unwrap() > revision, "{body}");
    // The lease restarts its full TTL under the new leader, then expires.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (status, _) = api.call("GET", "/kv/leased", None).await;
        if status == 404 {
            break;
        }
        assert!(Instant::now() < deadline, "the leased key never expired");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The old cluster's address book is not carried over.
    let (_, members) = api.call("GET", "/cluster/members", None).await;
    assert_eq!(members["members"][0]["id"], "fresh1", "{members}");
    node.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_member_is_restored_to_the_same_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let (path, revision, _) = store_and_backup(dir.path()).await;
    let peers = "n1=http://127.0.0.1:1,n2=http://127.0.0.1:2,n3=http://127.0.0.1:3";
    let mut snapshots = Vec::new();
    for id in ["n1", "n2", "n3"] {
        let data = dir.path().join(id);
        let (code, text) = restore(&path, &data, id, peers);
        assert_eq!(code, 0, "{text}");
        assert!(text.contains("3-member cluster"), "{text}");
        let file = data.join("snapshots").join(format!("{revision:020}.snap"));
        snapshots.push(std::fs::read(&file).unwrap());
    }
    assert_eq!(snapshots[0], snapshots[1]);
    assert_eq!(snapshots[1], snapshots[2]);
}

fn assert_untouched(dir: &Path, before: Option<Vec<PathBuf>>) {
    let now = std::fs::read_dir(dir).ok().map(|entries| {
        let mut names: Vec<PathBuf> = entries.map(|e| e.unwrap().path()).collect();
        names.sort();
        names
    });
    assert_eq!(now, before, "{} changed", dir.display());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_or_truncated_backup_is_refused_with_exit_2_and_nothing_written() {
    let dir = tempfile::tempdir().unwrap();
    let (path, _, _) = store_and_backup(dir.path()).await;
    let bytes = std::fs::read(&path).unwrap();
    let bad = dir.path().join("bad.backup");
    let absent = dir.path().join("absent");
    let empty = dir.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    let mut cases: Vec<(String, Vec<u8>)> = Vec::new();
    for len in [
        0,
        10,
        20,
        39,
        bytes.len() / 2,
        bytes.len() - 20,
        bytes.len() - 1,
    ] {
        cases.push((format!("truncated to {len}"), bytes[..len].to_vec()));
    }
    for at in [
        3,
        15,
        40,
        bytes.len() / 2,
        bytes.len() - 15,
        bytes.len() - 2,
    ] {
        let mut flipped = bytes.clone();
        flipped[at] ^= 0x10;
        cases.push((format!("bit flip at {at}"), flipped));
    }
    let mut longer = bytes.clone();
    longer.extend_from_slice(b"extra");
    cases.push(("bytes after the end".into(), longer));
    cases.push(("not a backup".into(), b"hello, world".repeat(10)));
    for (what, content) in cases {
        std::fs::write(&bad, &content).unwrap();
        for target in [&absent, &empty] {
            let (code, text) = restore(&bad, target, "n1", "");
            assert_eq!(code, 2, "{what}: {text}");
            assert!(text.contains("refused"), "{what}: {text}");
        }
        assert_untouched(&absent, None);
        assert_untouched(&empty, Some(vec![]));
    }
    let (code, text) = restore(&dir.path().join("no-such-file"), &absent, "n1", "");
    assert_eq!(code, 2, "{text}");
    assert_untouched(&absent, None);
    // The good file still restores.
    assert_eq!(restore(&path, &empty, "n1", "").0, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_non_empty_data_dir_is_refused_with_exit_2_and_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    let (path, _, _) = store_and_backup(dir.path()).await;
    let used = dir.path().join("old");
    let mut before: Vec<PathBuf> = std::fs::read_dir(&used)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    before.sort();
    let (code, text) = restore(&path, &used, "old1", "");
    assert_eq!(code, 2, "{text}");
    assert!(text.contains("not empty"), "{text}");
    assert_untouched(&used, Some(before));
    // Bad flags are refused too.
    let (code, text) = restore(&path, &dir.path().join("x"), "n1", "no-url-here");
    assert_eq!(code, 2, "{text}");
    assert!(!dir.path().join("x").exists());
}
