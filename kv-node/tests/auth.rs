//! Bearer tokens and the request limit on one in-process node over real
//! HTTP: who may read, write, administer and send raft messages, and what
//! an overloaded node answers.

use clap::Parser;
use kv_node::cli::Cli;
use kv_node::server::{self, RunningNode};
use serde_json::{Value, json};
use std::path::Path;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const READ: &str = "read-token-aaaaaaaaaaaaaaaa";
const WRITE: &str = "write-token-bbbbbbbbbbbbbbbb";
const ADMIN: &str = "admin-token-cccccccccccccccc";
const PEER: &str = "peer-token-dddddddddddddddd";

async fn start(dir: &Path, extra: &[&str]) -> RunningNode {
    let tokens = dir.join("tokens");
    std::fs::write(
        &tokens,
        format!("# role token\nread {READ}\nwrite {WRITE}\nadmin {ADMIN}\n"),
    )
    .unwrap();
    let peer = dir.join("peer-token");
    std::fs::write(&peer, format!("{PEER}\n")).unwrap();
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

/// Status and error code of a reply.
async fn outcome(request: reqwest::RequestBuilder) -> (u16, String) {
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let body: Value = response.json().await.unwrap_or(Value::Null);
    let code = body["error"]["code"].as_str().unwrap_or("").to_string();
    (status, code)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_token_may_do_what_its_role_allows_and_no_more() {
    let dir = tempfile::tempdir().unwrap();
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let node = start(dir.path(), &[]).await;
    let base = format!("http://{}", node.local_addr);
    // /healthz and /readyz need no token.
    wait_ready(&client, &base).await;
    assert_eq!(
        outcome(client.get(format!("{base}/healthz"))).await,
        (200, String::new())
    );

    let put = |token: Option<&str>| {
        let request = client
            .put(format!("{base}/kv/k"))
            .json(&json!({"value": "v"}));
        match token {
            Some(t) => request.bearer_auth(t),
            None => request,
        }
    };
    assert_eq!(outcome(put(None)).await, (401, "unauthorized".into()));
    assert_eq!(
        outcome(put(Some("no-such-token-0000000000"))).await,
        (401, "unauthorized".into())
    );
    assert_eq!(
        outcome(client.get(format!("{base}/kv/k"))).await,
        (401, "unauthorized".into())
    );
    assert_eq!(outcome(put(Some(READ))).await, (403, "forbidden".into()));
    assert_eq!(outcome(put(Some(WRITE))).await.0, 200);
    assert_eq!(
        outcome(client.get(format!("{base}/kv/k")).bearer_auth(READ))
            .await
            .0,
        200
    );
    // Unknown routes say nothing without a token.
    assert_eq!(
        outcome(client.get(format!("{base}/nowhere"))).await,
        (401, "unauthorized".into())
    );

    // Admin routes need an admin token.
    let snapshot = |t: &str| client.post(format!("{base}/admin/snapshot")).bearer_auth(t);
    assert_eq!(outcome(snapshot(WRITE)).await, (403, "forbidden".into()));
    assert_eq!(outcome(snapshot(ADMIN)).await.0, 200);
    let members_add = client
        .post(format!("{base}/cluster/members"))
        .bearer_auth(WRITE)
        .json(&json!({"id": "n4", "url": "http://127.0.0.1:1"}));
    assert_eq!(outcome(members_add).await, (403, "forbidden".into()));

    // Raft messages: a client token, even an admin one, is refused; the
    // credential derived from the cluster token for this node passes the
    // check (and this garbage then fails to parse); the cluster token
    // itself never travels and is refused.
    let credential = kv_node::auth::PeerSecret::new(PEER.as_bytes()).credential_for("solo");
    let raft = |t: Option<&str>| {
        let request = client
            .post(format!("{base}/raft/messages"))
            .body(vec![1u8, 2, 3]);
        match t {
            Some(t) => request.bearer_auth(t),
            None => request,
        }
    };
    assert_eq!(outcome(raft(None)).await, (401, "unauthorized".into()));
    assert_eq!(outcome(raft(Some(ADMIN))).await, (403, "forbidden".into()));
    assert_eq!(
        outcome(raft(Some(&credential))).await,
        (400, "bad_request".into())
    );
    assert_eq!(
        outcome(raft(Some(PEER))).await,
        (401, "unauthorized".into())
    );
    // ... and the cluster token is no client token.
    assert_eq!(outcome(put(Some(PEER))).await, (401, "unauthorized".into()));

    node.shutdown().await.unwrap();
}

/// Every route of API.md with the least role it needs (`None`: open), and
/// a body that keeps the node whole when the request is let through.
fn route_table() -> Vec<(
    &'static str,
    &'static str,
    Option<Value>,
    Option<&'static str>,
)> {
    vec![
        ("GET", "/healthz", None, None),
        ("GET", "/readyz", None, None),
        ("GET", "/kv/k", None, Some("read")),
        ("GET", "/kv?prefix=k", None, Some("read")),
        ("GET", "/status", None, Some("read")),
        ("GET", "/metrics", None, Some("read")),
        ("GET", "/cluster/members", None, Some("read")),
        ("PUT", "/kv/k", Some(json!({"value": "v"})), Some("write")),
        ("DELETE", "/kv/gone", None, Some("write")),
        (
            "POST",
            "/kv/k/cas",
            Some(json!({"expected": null, "value": "x"})),
            Some("write"),
        ),
        (
            "POST",
            "/kv/mput",
            Some(json!({"entries": [{"key": "a", "value": "1"}]})),
            Some("write"),
        ),
        (
            "POST",
            "/txn",
            Some(json!({"compare": [], "success": [{"get": {"key": "a"}}]})),
            Some("write"),
        ),
        ("GET", "/admin/read-policy", None, Some("admin")),
        (
            "PUT",
            "/admin/read-policy",
            Some(json!({"policy": "linearizable"})),
            Some("admin"),
        ),
        ("POST", "/admin/snapshot", None, Some("admin")),
        ("GET", "/admin/backup", None, Some("admin")),
        (
            "POST",
            "/cluster/members",
            Some(json!({"id": "n4", "url": "http://127.0.0.1:1", "voter": false})),
            Some("admin"),
        ),
        ("DELETE", "/cluster/members/n4", None, Some("admin")),
        (
            "POST",
            "/cluster/transfer-leader",
            Some(json!({"to": "solo"})),
            Some("admin"),
        ),
    ]
}

/// Each route answers 401 without a token and with an unknown one, 403 to
/// every role below the one it needs, and lets the needed role and every
/// higher one through (whatever it then answers, never 401 or 403).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_needs_its_role() {
    let dir = tempfile::tempdir().unwrap();
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let node = start(dir.path(), &[]).await;
    let base = format!("http://{}", node.local_addr);
    wait_ready(&client, &base).await;
    let roles = [("read", READ), ("write", WRITE), ("admin", ADMIN)];
    let rank = |role: &str| roles.iter().position(|(name, _)| *name == role).unwrap();
    for (method, path, body, needs) in route_table() {
        let request = |token: Option<&str>| {
            let mut request = client.request(method.parse().unwrap(), format!("{base}{path}"));
            if let Some(body) = &body {
                request = request.json(body);
            }
            match token {
                Some(t) => request.bearer_auth(t),
                None => request,
            }
        };
        let what = format!("{method} {path}");
        let (status, _) = outcome(request(None)).await;
        let (unknown, _) = outcome(request(Some("no-such-token-0000000000"))).await;
        let (peer, _) = outcome(request(Some(PEER))).await;
        match needs {
            None => {
                assert_eq!(status, 200, "{what} is open");
                assert_eq!(unknown, 200, "{what} is open, whatever the token");
            }
            Some(needs) => {
                assert_eq!(status, 401, "{what} without a token");
                assert_eq!(unknown, 401, "{what} with an unknown token");
                assert_eq!(peer, 401, "{what} with the cluster token");
                for (role, token) in roles {
                    let (status, code) = outcome(request(Some(token))).await;
                    if rank(role) < rank(needs) {
                        assert_eq!(
                            (status, code.as_str()),
                            (403, "forbidden"),
                            "{what} with a {role} token (needs {needs})"
                        );
                    } else {
                        assert!(
                            status != 401 && status != 403,
                            "{what} with a {role} token (needs {needs}): {status} {code}"
                        );
                    }
                }
            }
        }
    }
    // The admin's add and remove of n4 both went through: n4 is gone.
    let members: Value = client
        .get(format!("{base}/cluster/members"))
        .bearer_auth(READ)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        members["members"].as_array().map(Vec::len),
        Some(1),
        "{members}"
    );
    node.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_over_the_concurrency_limit_get_503_with_retry_after() {
    let dir = tempfile::tempdir().unwrap();
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let node = start(dir.path(), &["--max-concurrent-requests", "1"]).await;
    let base = format!("http://{}", node.local_addr);
    wait_ready(&client, &base).await;

    // A write whose body never finishes holds the only slot.
    let mut slow = tokio::net::TcpStream::connect(node.local_addr)
        .await
        .unwrap();
    slow.write_all(
        format!(
            "PUT /kv/slow HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {WRITE}\r\n\
             content-length: 100\r\n\r\n{{\"value\""
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;

    let response = client
        .get(format!("{base}/kv/k"))
        .bearer_auth(READ)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 503);
    assert_eq!(response.headers()["retry-after"], "1");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "unavailable");
    // Health probes do not queue behind clients.
    assert_eq!(
        client
            .get(format!("{base}/healthz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );

    // Once the slow request ends, the slot is free again.
    slow.write_all(&[b' '; 100 - 8]).await.unwrap();
    let mut reply = [0u8; 12];
    slow.read_exact(&mut reply).await.unwrap();
    assert!(reply.starts_with(b"HTTP/1.1 "), "{reply:?}");
    drop(slow);
    let mut status = 0;
    for _ in 0..100 {
        status = client
            .get(format!("{base}/kv/k"))
            .bearer_auth(READ)
            .send()
            .await
            .unwrap()
            .status()
            .as_u16();
        if status != 503 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(status, 404);
    node.shutdown().await.unwrap();
}
