//! Leases on one kv-node in-process on 127.0.0.1:0, over real HTTP: keys
//! vanish after the TTL once keepalives stop, keepalives keep them, a
//! revoke deletes them at once, and bad requests answer 400 or 404.

use clap::Parser;
use kv_node::cli::Cli;
use kv_node::server::{self, RunningNode};
use serde_json::{Value, json};
use std::path::Path;
use std::time::{Duration, Instant};

async fn start(dir: &Path) -> RunningNode {
    let cli = Cli::try_parse_from([
        "kv-node",
        "--id",
        "solo",
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
        for _ in 0..500 {
            if let Ok(r) = api.client.get(format!("{}/readyz", api.base)).send().await
                && r.status() == 200
            {
                return api;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("node never became ready");
    }

    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> (u16, Value) {
        let mut request = self.client.request(method, format!("{}{path}", self.base));
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let text = response.text().await.unwrap();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    async fn grant(&self, ttl_ms: u64) -> u64 {
        let (status, body) = self
            .call(
                reqwest::Method::POST,
                "/lease",
                Some(json!({"ttl_ms": ttl_ms})),
            )
            .await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["ttl_ms"], ttl_ms);
        body["id"].as_u64().unwrap()
    }

    async fn put(&self, key: &str, lease: Option<u64>) -> (u16, Value) {
        let mut body = json!({"value": "v"});
        if let Some(lease) = lease {
            body["lease"] = lease.into();
        }
        self.call(reqwest::Method::PUT, &format!("/kv/{key}"), Some(body))
            .await
    }

    async fn exists(&self, key: &str) -> bool {
        let (status, _) = self
            .call(reqwest::Method::GET, &format!("/kv/{key}"), None)
            .await;
        assert!(status == 200 || status == 404, "get {key}: {status}");
        status == 200
    }

    async fn keepalive(&self, id: u64) -> (u16, Value) {
        self.call(
            reqwest::Method::POST,
            &format!("/lease/{id}/keepalive"),
            None,
        )
        .await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_vanish_after_the_ttl_without_keepalives_and_stay_with_them() {
    let dir = tempfile::tempdir().unwrap();
    let node = start(dir.path()).await;
    let api = Api::new(&node).await;
    let kept = api.grant(1_000).await;
    let dropped = api.grant(1_000).await;
    assert_ne!(kept, dropped);
    assert_eq!(api.put("kept/1", Some(kept)).await.0, 200);
    assert_eq!(api.put("dropped/1", Some(dropped)).await.0, 200);
    assert_eq!(api.put("dropped/2", Some(dropped)).await.0, 200);
    assert_eq!(api.put("plain", None).await.0, 200);

    let (status, info) = api
        .call(reqwest::Method::GET, &format!("/lease/{dropped}"), None)
        .await;
    assert_eq!(status, 200, "{info}");
    assert_eq!(info["keys"], json!(["dropped/1", "dropped/2"]));
    assert!(info["remaining_ms"].as_u64().unwrap() <= 1_000);

    // Keep one lease alive for 3 TTLs; the other expires meanwhile.
    let started = Instant::now();
    while started.elapsed() < Duration::from_millis(3_000) {
        let (status, body) = api.keepalive(kept).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body, json!({"id": kept, "ttl_ms": 1_000}));
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(api.exists("kept/1").await, "a key kept alive vanished");
    assert!(!api.exists("dropped/1").await);
    assert!(!api.exists("dropped/2").await);
    assert!(api.exists("plain").await);
    let (status, body) = api.keepalive(dropped).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (404, Some("lease_not_found"))
    );
    // The expired lease is gone from the list.
    let (_, list) = api.call(reqwest::Method::GET, "/lease", None).await;
    let ids: Vec<u64> = list["leases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["id"].as_u64().unwrap())
        .collect();
    assert_eq!(ids, [kept]);

    // Keepalives stop: the kept key goes too, within a bounded wait.
    let stopped = Instant::now();
    while api.exists("kept/1").await {
        assert!(
            stopped.elapsed() < Duration::from_secs(10),
            "key still there 10 s after the last keepalive"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    node.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoke_deletes_the_keys_and_a_plain_put_detaches_one() {
    let dir = tempfile::tempdir().unwrap();
    let node = start(dir.path()).await;
    let api = Api::new(&node).await;
    let id = api.grant(60_000).await;
    api.put("a", Some(id)).await;
    api.put("b", Some(id)).await;
    api.put("b", None).await;
    // A transaction's put attaches too.
    let (status, body) = api
        .call(
            reqwest::Method::POST,
            "/txn",
            Some(json!({"success": [{"put": {"key": "c", "value": "1", "lease": id}}]})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = api
        .call(reqwest::Method::DELETE, &format!("/lease/{id}"), None)
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["deleted"], 2);
    assert!(body["revision"].as_u64().unwrap() > 0);
    assert!(!api.exists("a").await);
    assert!(api.exists("b").await);
    assert!(!api.exists("c").await);
    // The lease is gone: every use of it is a 404 and applies nothing.
    let (status, body) = api
        .call(reqwest::Method::DELETE, &format!("/lease/{id}"), None)
        .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (404, Some("lease_not_found"))
    );
    let (status, body) = api.put("d", Some(id)).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (404, Some("lease_not_found"))
    );
    assert!(!api.exists("d").await);
    let (status, _) = api
        .call(
            reqwest::Method::POST,
            "/txn",
            Some(json!({"success": [{"put": {"key": "e", "value": "1"}}, {"put": {"key": "f", "value": "1", "lease": id}}]})),
        )
        .await;
    assert_eq!(status, 404);
    assert!(!api.exists("e").await);
    let (status, _) = api
        .call(reqwest::Method::GET, &format!("/lease/{id}"), None)
        .await;
    assert_eq!(status, 404);
    node.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_lease_requests_answer_400_and_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let node = start(dir.path()).await;
    let api = Api::new(&node).await;
    let post = reqwest::Method::POST;
    for body in [
        json!({"ttl_ms": 999}),
        json!({"ttl_ms": 86_400_001}),
        json!({"ttl_ms": "10"}),
        json!({"ttl_ms": -1}),
        json!({}),
        json!({"ttl_ms": 5000, "extra": 1}),
    ] {
        let (status, reply) = api.call(post.clone(), "/lease", Some(body.clone())).await;
        assert_eq!(status, 400, "{body} answered {reply}");
        assert_eq!(reply["error"]["code"], "bad_request");
    }
    for path in [
        "/lease/abc",
        "/lease/0",
        "/lease/9007199254740992",
        "/lease/-1",
    ] {
        let (status, _) = api.call(reqwest::Method::GET, path, None).await;
        assert_eq!(status, 400, "{path}");
        let (status, _) = api
            .call(post.clone(), &format!("{path}/keepalive"), None)
            .await;
        assert_eq!(status, 400, "{path}/keepalive");
    }
    let (status, _) = api
        .call(
            reqwest::Method::PUT,
            "/kv/a",
            Some(json!({"value": "v", "lease": "7"})),
        )
        .await;
    assert_eq!(status, 400);
    let (status, _) = api.call(reqwest::Method::PUT, "/lease", None).await;
    assert_eq!(status, 405);
    let (status, body) = api.keepalive(12345).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (404, Some("lease_not_found"))
    );
    let (_, list) = api.call(reqwest::Method::GET, "/lease", None).await;
    assert_eq!(list, json!({"leases": []}));
    assert!(!api.exists("a").await);
    node.shutdown().await.unwrap();
}
