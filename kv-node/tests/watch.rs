//! `GET /watch` against real nodes on 127.0.0.1 (in-process): event order
//! for every kind of write, resuming with `from_revision`, 410 and 400,
//! the watch limit, progress lines, a slow consumer, history rebuilt from
//! the WAL on restart, roles under auth, and a follower's watch.

use clap::Parser;
use kv_node::cli::Cli;
use kv_node::server::{self, RunningNode};
use serde_json::{Value, json};
use std::path::Path;
use std::time::{Duration, Instant};

fn http() -> reqwest::Client {
    reqwest::Client::builder().no_proxy().build().unwrap()
}

async fn start_node(args: &[String]) -> RunningNode {
    let mut all = vec!["kv-node".to_string()];
    all.extend(args.iter().cloned());
    let cli = Cli::try_parse_from(all).unwrap();
    server::start(cli.validate().unwrap()).await.unwrap()
}

async fn solo(dir: &Path, extra: &[&str]) -> (RunningNode, String) {
    let mut args: Vec<String> = [
        "--id",
        "solo",
        "--listen",
        "127.0.0.1:0",
        "--data-dir",
        dir.to_str().unwrap(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.extend(extra.iter().map(|s| s.to_string()));
    let node = start_node(&args).await;
    let base = format!("http://{}", node.local_addr);
    wait_ready(&http(), &base).await;
    (node, base)
}

async fn wait_ready(client: &reqwest::Client, base: &str) {
    for _ in 0..500 {
        if let Ok(r) = client.get(format!("{base}/readyz")).send().await
            && r.status() == 200
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("node at {base} never became ready");
}

/// An open watch, read line by line.
struct Watch {
    response: reqwest::Response,
    buffer: Vec<u8>,
}

impl Watch {
    async fn open(base: &str, query: &str) -> Watch {
        let response = http()
            .get(format!("{base}/watch?{query}"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "watch {query}");
        assert_eq!(
            response.headers()["content-type"],
            "application/x-ndjson",
            "watch {query}"
        );
        Watch {
            response,
            buffer: Vec::new(),
        }
    }

    /// The next line, or None when the stream ended or nothing came within
    /// `within`.
    async fn line(&mut self, within: Duration) -> Option<Value> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            if let Some(end) = self.buffer.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = self.buffer.drain(..=end).collect();
                return Some(serde_json::from_slice(&line).unwrap());
            }
            match tokio::time::timeout_at(deadline, self.response.chunk()).await {
                Ok(Ok(Some(chunk))) => self.buffer.extend_from_slice(&chunk),
                _ => return None,
            }
        }
    }

    /// The next `n` lines that are events (progress lines skipped).
    async fn events(&mut self, n: usize) -> Vec<Value> {
        let mut events = Vec::new();
        for _ in 0..n + 10 {
            if events.len() == n {
                break;
            }
            let line = self
                .line(Duration::from_secs(10))
                .await
                .unwrap_or_else(|| panic!("stream ended after {events:?}"));
            if line.get("progress").is_none() {
                events.push(line);
            }
        }
        assert_eq!(events.len(), n, "{events:?}");
        events
    }
}

async fn send(method: reqwest::Method, url: String, body: Value) -> Value {
    let response = http()
        .request(method, url)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    response.json().await.unwrap()
}

async fn put(base: &str, key: &str, value: &str) -> u64 {
    let reply = send(
        reqwest::Method::PUT,
        format!("{base}/kv/{key}"),
        json!({"value": value}),
    )
    .await;
    reply["revision"].as_u64().unwrap()
}

fn event(revision: u64, kind: &str, key: &str, value: Option<&str>) -> Value {
    match value {
        Some(v) => json!({"revision": revision, "type": kind, "key": key, "value": v}),
        None => json!({"revision": revision, "type": kind, "key": key}),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_sees_every_kind_of_write_in_order_and_resumes_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let (_node, base) = solo(dir.path(), &[]).await;
    let mut watch = Watch::open(&base, "prefix=w/").await;
    let first = watch.line(Duration::from_secs(5)).await.unwrap();
    assert_eq!(first["watching"], true);
    let start = first["revision"].as_u64().unwrap();

    let r1 = put(&base, "w/a", "1").await;
    assert!(r1 > start);
    let r2 = send(
        reqwest::Method::POST,
        format!("{base}/kv/mput"),
        json!({"entries": [{"key": "w/b", "value": "2"}, {"key": "w/c", "value": "3"}, {"key": "x", "value": "9"}]}),
    )
    .await["revision"]
        .as_u64()
        .unwrap();
    let r3 = send(reqwest::Method::DELETE, format!("{base}/kv/w/a"), json!({})).await["revision"]
        .as_u64()
        .unwrap();
    // Deleting a missing key changes nothing: no event.
    send(
        reqwest::Method::DELETE,
        format!("{base}/kv/w/zz"),
        json!({}),
    )
    .await;
    let r4 = send(
        reqwest::Method::POST,
        format!("{base}/txn"),
        json!({"compare": [{"key": "w/b", "target": "value", "op": "==", "value": "2"}],
               "success": [{"put": {"key": "w/d", "value": "4"}}, {"delete": {"key": "w/b"}}],
               "failure": []}),
    )
    .await["revision"]
        .as_u64()
        .unwrap();
    let r5 = send(
        reqwest::Method::POST,
        format!("{base}/kv/w/c/cas"),
        json!({"expected": "3", "value": "5"}),
    )
    .await["revision"]
        .as_u64()
        .unwrap();
    put(&base, "other", "no event").await;
    let r6 = put(&base, "w/e", "6").await;

    let expected = vec![
        event(r1, "put", "w/a", Some("1")),
        event(r2, "put", "w/b", Some("2")),
        event(r2, "put", "w/c", Some("3")),
        event(r3, "delete", "w/a", None),
        event(r4, "put", "w/d", Some("4")),
        event(r4, "delete", "w/b", None),
        event(r5, "put", "w/c", Some("5")),
        event(r6, "put", "w/e", Some("6")),
    ];
    assert_eq!(watch.events(expected.len()).await, expected);

    // Resuming after the third event gets exactly the rest.
    let mut resumed = Watch::open(&base, &format!("prefix=w/&from_revision={}", r3 + 1)).await;
    assert!(resumed.line(Duration::from_secs(5)).await.unwrap()["watching"] == true);
    assert_eq!(resumed.events(4).await, expected[4..].to_vec());
    // A key watch from revision 0 replays that key's history only.
    let mut key = Watch::open(&base, "key=w/c&from_revision=0").await;
    key.line(Duration::from_secs(5)).await.unwrap();
    assert_eq!(
        key.events(2).await,
        vec![expected[2].clone(), expected[6].clone()]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_watches_are_400_and_old_revisions_410() {
    let dir = tempfile::tempdir().unwrap();
    let (_node, base) = solo(dir.path(), &["--watch-history", "5", "--max-watches", "2"]).await;
    let client = http();
    for query in [
        "",
        "key=a&prefix=b",
        "key=",
        "key=a&from_revision=-3",
        "key=a&from_revision=abc",
        "prefix=a&other=1",
    ] {
        let r = client
            .get(format!("{base}/watch?{query}"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400, "{query}");
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["error"]["code"], "bad_request", "{query}");
    }
    let r = client.post(format!("{base}/watch")).send().await.unwrap();
    assert_eq!(r.status(), 405);

    let mut last = 0;
    for i in 0..20 {
        last = put(&base, "k", &i.to_string()).await;
    }
    let r = client
        .get(format!("{base}/watch?key=k&from_revision=1"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 410);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "compacted");
    let compact = body["error"]["compact_revision"].as_u64().unwrap();
    assert_eq!(compact, last - 4, "the last 5 revisions are kept");
    let mut watch = Watch::open(&base, &format!("key=k&from_revision={compact}")).await;
    watch.line(Duration::from_secs(5)).await.unwrap();
    let got = watch.events(5).await;
    assert_eq!(got[0]["revision"], compact);
    assert_eq!(got[4]["revision"], last);

    // The watch limit: two are open with `watch` above and this one.
    let _second = Watch::open(&base, "prefix=").await;
    let r = client
        .get(format!("{base}/watch?prefix="))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 503);
    assert_eq!(r.headers()["retry-after"], "1");
    // Closing one frees its place (the pump notices within the progress
    // interval at most).
    drop(watch);
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let r = client
            .get(format!("{base}/watch?prefix="))
            .send()
            .await
            .unwrap();
        if r.status() == 200 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the closed watch was never freed"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_watch_gets_progress_and_a_slow_one_is_cut_off() {
    let dir = tempfile::tempdir().unwrap();
    let (_node, base) = solo(dir.path(), &["--watch-history", "3"]).await;
    let mut idle = Watch::open(&base, "key=nothing-here").await;
    let start = idle.line(Duration::from_secs(5)).await.unwrap()["revision"]
        .as_u64()
        .unwrap();
    let last = put(&base, "elsewhere", "x").await;
    let progress = idle.line(Duration::from_secs(15)).await.unwrap();
    let progress = progress["progress"].as_u64().unwrap();
    assert!(
        progress >= last && last > start,
        "{progress} {last} {start}"
    );

    // A consumer that does not read while large values are written falls
    // out of a 3-revision history; its last line says so.
    let mut slow = Watch::open(&base, "prefix=big/").await;
    let value = "v".repeat(100 << 10);
    for i in 0..300 {
        put(&base, &format!("big/{i}"), &value).await;
    }
    let mut lines = 0;
    let last_line = loop {
        match slow.line(Duration::from_secs(10)).await {
            Some(line) => {
                lines += 1;
                if line.get("error").is_some() {
                    break line;
                }
                assert!(lines < 400, "never cut off");
            }
            None => panic!("stream ended without the slow_consumer line after {lines} lines"),
        }
    };
    assert_eq!(last_line["error"]["code"], "slow_consumer");
    assert!(slow.line(Duration::from_secs(5)).await.is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_is_rebuilt_from_the_wal_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let (node, base) = solo(dir.path(), &[]).await;
    for i in 0..5 {
        put(&base, "before", &i.to_string()).await;
    }
    let snapshot: Value = http()
        .post(format!("{base}/admin/snapshot"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let mut after = Vec::new();
    for i in 0..3 {
        after.push(put(&base, "after", &i.to_string()).await);
    }
    // An open watch does not hold the shutdown up: its stream ends.
    let mut open = Watch::open(&base, "prefix=").await;
    open.line(Duration::from_secs(5)).await.unwrap();
    node.shutdown().await.unwrap();
    let end = tokio::time::timeout(Duration::from_secs(10), open.response.chunk()).await;
    assert!(
        matches!(end, Ok(Ok(None)) | Ok(Err(_))),
        "the watch stream did not end with the node: {end:?}"
    );

    let (_node, base) = solo(dir.path(), &[]).await;
    let r = http()
        .get(format!("{base}/watch?prefix=&from_revision=1"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 410, "snapshot reply {snapshot}");
    let body: Value = r.json().await.unwrap();
    let compact = body["error"]["compact_revision"].as_u64().unwrap();
    assert!(compact <= after[0], "{compact} > {}", after[0]);
    let mut watch = Watch::open(&base, &format!("key=after&from_revision={compact}")).await;
    watch.line(Duration::from_secs(5)).await.unwrap();
    let revisions: Vec<u64> = watch
        .events(3)
        .await
        .iter()
        .map(|e| e["revision"].as_u64().unwrap())
        .collect();
    assert_eq!(revisions, after);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_needs_the_read_role_under_auth() {
    let dir = tempfile::tempdir().unwrap();
    let tokens = dir.path().join("tokens");
    std::fs::write(
        &tokens,
        "read reader-token-aaaaaaaaaaaa\nadmin admin-token-bbbbbbbbbbbbbb\n",
    )
    .unwrap();
    let peer = dir.path().join("peer-token");
    std::fs::write(&peer, "peer-token-cccccccccccccccc\n").unwrap();
    let data = dir.path().join("data");
    let args: Vec<String> = [
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
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let node = start_node(&args).await;
    let base = format!("http://{}", node.local_addr);
    wait_ready(&http(), &base).await;
    let anonymous = http()
        .get(format!("{base}/watch?prefix="))
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), 401);
    let reader = http()
        .get(format!("{base}/watch?prefix="))
        .bearer_auth("reader-token-aaaaaaaaaaaa")
        .send()
        .await
        .unwrap();
    assert_eq!(reader.status(), 200);
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_followers_watch_sees_the_leaders_writes() {
    let dir = tempfile::tempdir().unwrap();
    let ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
    let peers = (0..3)
        .map(|i| format!("n{i}=http://127.0.0.1:{}", ports[i]))
        .collect::<Vec<_>>()
        .join(",");
    let mut nodes = Vec::new();
    for (i, port) in ports.iter().enumerate() {
        let args: Vec<String> = vec![
            "--id".into(),
            format!("n{i}"),
            "--listen".into(),
            format!("127.0.0.1:{port}"),
            "--data-dir".into(),
            dir.path().join(format!("n{i}")).to_str().unwrap().into(),
            "--peers".into(),
            peers.clone(),
        ];
        nodes.push(start_node(&args).await);
    }
    let base = |i: usize| format!("http://127.0.0.1:{}", ports[i]);
    // The leader, once every node names the same one (bounded).
    let deadline = Instant::now() + Duration::from_secs(20);
    let leader = loop {
        let mut names = Vec::new();
        for i in 0..3 {
            if let Ok(r) = http().get(format!("{}/status", base(i))).send().await
                && let Ok(s) = r.json::<Value>().await
            {
                names.push(s["leader"].as_str().map(String::from));
            }
        }
        if names.len() == 3
            && let Some(Some(name)) = names.first()
            && names.iter().all(|n| n.as_deref() == Some(name))
        {
            break name[1..].parse::<usize>().unwrap();
        }
        assert!(Instant::now() < deadline, "no agreed leader: {names:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let follower = (leader + 1) % 3;
    let mut watch = Watch::open(&base(follower), "prefix=f/").await;
    watch.line(Duration::from_secs(5)).await.unwrap();
    let r1 = put(&base(leader), "f/1", "a").await;
    let r2 = put(&base(leader), "f/2", "b").await;
    assert_eq!(
        watch.events(2).await,
        vec![
            event(r1, "put", "f/1", Some("a")),
            event(r2, "put", "f/2", Some("b"))
        ]
    );
    drop(nodes);
}
