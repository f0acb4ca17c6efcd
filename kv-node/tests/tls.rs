//! TLS with certificates made at run time (rcgen): a 3-node in-process
//! cluster over mutual TLS with tokens replicates a write; membership
//! changes and leader transfers asked of a follower are forwarded to the
//! leader over TLS with the caller's token; a certificate from another CA
//! is refused both ways.

use clap::Parser;
use kv_node::cli::Cli;
use kv_node::peer::{ClientOptions, PeerClient};
use kv_node::server::{self, RunningNode};
use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
use reqwest::Method;
use serde_json::Value;
use std::path::Path;
use std::time::Duration;

const WRITE: &str = "write-token-bbbbbbbbbbbbbbbb";
const ADMIN: &str = "admin-token-cccccccccccccccc";
const PEER: &str = "peer-token-dddddddddddddddd";

struct Ca {
    pem: String,
    issuer: Issuer<'static, KeyPair>,
}

fn new_ca(name: &str) -> Ca {
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, name);
    let pem = params.self_signed(&key).unwrap().pem();
    Ca {
        pem,
        issuer: Issuer::new(params, key),
    }
}

/// A certificate for 127.0.0.1 and localhost: (cert PEM, key PEM).
fn leaf(ca: &Ca) -> (String, String) {
    let key = KeyPair::generate().unwrap();
    let params = CertificateParams::new(vec!["localhost".into(), "127.0.0.1".into()]).unwrap();
    let cert = params.signed_by(&key, &ca.issuer).unwrap();
    (cert.pem(), key.serialize_pem())
}

fn client(ca: &Ca, identity: Option<&(String, String)>) -> PeerClient {
    let config = kv_node::tls::client_config(
        ca.pem.as_bytes(),
        identity.map(|(c, k)| (c.as_bytes(), k.as_bytes())),
    )
    .unwrap();
    PeerClient::new(
        Some(config),
        ClientOptions {
            local_address: None,
            connect_timeout: Duration::from_secs(2),
            pool_max_idle_per_host: 4,
        },
    )
    .unwrap()
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Starts node `name` with its own certificate from `ca`.
async fn start(dir: &Path, name: &str, port: u16, peers: &str, ca: &Ca) -> RunningNode {
    let (cert, key) = leaf(ca);
    let file = |suffix: &str, text: &str| {
        let path = dir.join(format!("{name}.{suffix}"));
        std::fs::write(&path, text).unwrap();
        path.to_str().unwrap().to_string()
    };
    let args = [
        "kv-node".to_string(),
        "--id".into(),
        name.into(),
        "--listen".into(),
        format!("127.0.0.1:{port}"),
        "--data-dir".into(),
        dir.join(name).to_str().unwrap().into(),
        "--peers".into(),
        peers.into(),
        "--tls-cert".into(),
        file("crt", &cert),
        "--tls-key".into(),
        file("key", &key),
        "--tls-ca".into(),
        file("ca", &ca.pem),
        "--tls-client-auth".into(),
        "--auth-token-file".into(),
        file("tokens", &format!("write {WRITE}\nadmin {ADMIN}\n")),
        "--peer-token-file".into(),
        file("peer", PEER),
    ];
    let cli = Cli::try_parse_from(args).unwrap();
    server::start(cli.validate().unwrap()).await.unwrap()
}

async fn get(client: &PeerClient, url: &str) -> Result<(u16, Value), String> {
    let auth = reqwest::header::HeaderValue::from_str(&format!("Bearer {WRITE}")).unwrap();
    let (status, body) = client
        .request(
            Method::GET,
            url,
            Some(&auth),
            "application/json",
            Vec::new(),
            Duration::from_secs(5),
        )
        .await
        .map_err(|e| e.to_string())?;
    Ok((
        status.as_u16(),
        serde_json::from_slice(&body).unwrap_or(Value::Null),
    ))
}

/// Three nodes n0..n2 over mutual TLS with tokens, certificates from one
/// CA; returns their ports, the nodes and a client with a certificate of
/// that CA.
async fn start_cluster(dir: &Path) -> (Vec<u16>, Vec<RunningNode>, PeerClient) {
    let ca = new_ca("cluster CA");
    let ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
    let peers = (0..3)
        .map(|i| format!("n{i}=https://127.0.0.1:{}", ports[i]))
        .collect::<Vec<_>>()
        .join(",");
    let mut nodes = Vec::new();
    for (i, port) in ports.iter().enumerate() {
        nodes.push(start(dir, &format!("n{i}"), *port, &peers, &ca).await);
    }
    let identity = leaf(&ca);
    let client = client(&ca, Some(&identity));
    (ports, nodes, client)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_three_node_cluster_replicates_over_mutual_tls_with_tokens() {
    let dir = tempfile::tempdir().unwrap();
    let (ports, nodes, client) = start_cluster(dir.path()).await;
    let auth = reqwest::header::HeaderValue::from_str(&format!("Bearer {WRITE}")).unwrap();

    // Retried until a leader is elected (503 meanwhile).
    let mut status = 0;
    for _ in 0..300 {
        let put = client
            .request(
                Method::PUT,
                &format!("https://127.0.0.1:{}/kv/greeting", ports[0]),
                Some(&auth),
                "application/json",
                br#"{"value": "hello over TLS"}"#.to_vec(),
                Duration::from_secs(5),
            )
            .await;
        if let Ok((s, _)) = put {
            status = s.as_u16();
            if status == 200 {
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(status, 200, "the write never succeeded");
    let (status, body) = get(
        &client,
        &format!("https://127.0.0.1:{}/kv/greeting", ports[2]),
    )
    .await
    .unwrap();
    assert_eq!(
        (status, body["value"].as_str()),
        (200, Some("hello over TLS"))
    );

    // The same node does not talk plain HTTP.
    let plain = reqwest::Client::builder().no_proxy().build().unwrap();
    assert!(
        plain
            .get(format!("http://127.0.0.1:{}/healthz", ports[1]))
            .send()
            .await
            .is_err()
    );
    for node in nodes {
        node.shutdown().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_from_another_ca_is_refused_both_ways() {
    let dir = tempfile::tempdir().unwrap();
    let ca = new_ca("cluster CA");
    let other = new_ca("another CA");
    let port = free_port();
    let node = start(dir.path(), "solo", port, "", &ca).await;
    let url = format!("https://127.0.0.1:{port}/healthz");

    let good = leaf(&ca);
    assert_eq!(get(&client(&ca, Some(&good)), &url).await.unwrap().0, 200);
    // A client certificate signed by another CA, or none, is refused.
    let stranger = leaf(&other);
    assert!(get(&client(&ca, Some(&stranger)), &url).await.is_err());
    assert!(get(&client(&ca, None), &url).await.is_err());
    // A client that trusts only the other CA refuses this node.
    assert!(get(&client(&other, Some(&stranger)), &url).await.is_err());
    node.shutdown().await.unwrap();
}

/// Sends `body` to `url` with `token` (if any); status and JSON reply.
async fn call(
    client: &PeerClient,
    method: Method,
    url: &str,
    token: Option<&str>,
    body: &str,
) -> (u16, Value) {
    let auth =
        token.map(|t| reqwest::header::HeaderValue::from_str(&format!("Bearer {t}")).unwrap());
    let (status, reply) = client
        .request(
            method,
            url,
            auth.as_ref(),
            "application/json",
            body.as_bytes().to_vec(),
            Duration::from_secs(30),
        )
        .await
        .unwrap();
    (
        status.as_u16(),
        serde_json::from_slice(&reply).unwrap_or(Value::Null),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_forwards_membership_changes_over_tls_with_the_callers_token() {
    let dir = tempfile::tempdir().unwrap();
    let (ports, nodes, client) = start_cluster(dir.path()).await;
    let base = |i: usize| format!("https://127.0.0.1:{}", ports[i]);

    // Wait for a leader, then pick a follower to ask.
    let mut leader = None;
    for _ in 0..300 {
        let (status, body) = call(
            &client,
            Method::GET,
            &format!("{}/status", base(0)),
            Some(ADMIN),
            "",
        )
        .await;
        if status == 200
            && let Some(name) = body["leader"].as_str()
        {
            leader = Some(name.to_string());
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let leader = leader.expect("a leader is elected");
    let follower = (0..3).find(|i| format!("n{i}") != leader).unwrap();
    let members = format!("{}/cluster/members", base(follower));

    // The follower checks the caller's token itself: none is 401, a write
    // token 403, and nothing is forwarded.
    let add = r#"{"id": "n9", "url": "https://127.0.0.1:9", "voter": false}"#;
    assert_eq!(
        call(&client, Method::POST, &members, None, add).await.0,
        401
    );
    assert_eq!(
        call(&client, Method::POST, &members, Some(WRITE), add)
            .await
            .0,
        403
    );
    // A member URL must use the cluster's scheme.
    let plain = r#"{"id": "n9", "url": "http://127.0.0.1:9", "voter": false}"#;
    let (status, body) = call(&client, Method::POST, &members, Some(ADMIN), plain).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (400, Some("bad_request")),
        "{body}"
    );

    // An admin's change through the follower reaches the leader over TLS,
    // carrying the admin's token: the learner is added, then removed.
    let (status, body) = call(&client, Method::POST, &members, Some(ADMIN), add).await;
    assert_eq!(status, 200, "adding through a follower: {body}");
    // The leader answered once the change applied there; the follower
    // lists it once it has applied it too (bounded wait).
    let mut list = serde_json::Value::Null;
    for _ in 0..100 {
        let (status, body) = call(&client, Method::GET, &members, Some(ADMIN), "").await;
        assert_eq!(status, 200);
        list = body;
        let listed = list["members"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["id"] == "n9" && m["url"] == "https://127.0.0.1:9");
        if listed {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        list["members"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["id"] == "n9" && m["url"] == "https://127.0.0.1:9"),
        "n9 is listed: {list}"
    );
    let remove = format!("{members}/n9");
    let (status, body) = call(&client, Method::DELETE, &remove, Some(ADMIN), "").await;
    assert_eq!(status, 200, "removing through a follower: {body}");

    // A leader transfer through the follower, to the follower itself.
    let transfer = format!("{}/cluster/transfer-leader", base(follower));
    let to = format!(r#"{{"to": "n{follower}"}}"#);
    assert_eq!(
        call(&client, Method::POST, &transfer, Some(WRITE), &to)
            .await
            .0,
        403
    );
    let (status, body) = call(&client, Method::POST, &transfer, Some(ADMIN), &to).await;
    assert_eq!(status, 200, "transfer through a follower: {body}");
    for node in nodes {
        node.shutdown().await.unwrap();
    }
}
