//! The holes of issue 13, tried from outside against real nodes on
//! 127.0.0.1 (in-process, or the binary where the exit status matters):
//! the peer endpoint always needs a peer credential, a member cannot be
//! re-pointed through the client API, an address an admin chose never
//! receives a credential another node accepts, and a removed member is
//! refused and learns that it was removed.

use clap::Parser;
use kv_node::auth::PeerSecret;
use kv_node::cli::Cli;
use kv_node::ids::node_id_of;
use kv_node::peer::transport::PeerBatch;
use kv_node::server::{self, RunningNode};
use kv_node::settings::LeaseTiming;
use raft_core::{LogIndex, Message, MessageBody, Term};
use serde_json::{Value, json};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::AsyncReadExt;

const ADMIN: &str = "admin-token-cccccccccccccccc";
const PEER: &str = "peer-token-dddddddddddddddd";

/// How a test cluster authenticates.
#[derive(Clone, Copy, PartialEq)]
enum Security {
    /// Client tokens and a cluster token.
    Tokens,
    /// Only `--peer-token-file`: the client API is open.
    PeerTokenOnly,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn node_args(dir: &Path, name: &str, port: u16, peers: &str, security: Security) -> Vec<String> {
    let tokens = dir.join("tokens");
    std::fs::write(&tokens, format!("admin {ADMIN}\n")).unwrap();
    let peer = dir.join("peer-token");
    std::fs::write(&peer, format!("{PEER}\n")).unwrap();
    let mut args: Vec<String> = vec![
        "kv-node".into(),
        "--id".into(),
        name.into(),
        "--listen".into(),
        format!("127.0.0.1:{port}"),
        "--data-dir".into(),
        dir.join(name).to_str().unwrap().into(),
        "--peer-token-file".into(),
        peer.to_str().unwrap().into(),
    ];
    if !peers.is_empty() {
        args.extend(["--peers".into(), peers.into()]);
    }
    if security == Security::Tokens {
        args.extend(["--auth-token-file".into(), tokens.to_str().unwrap().into()]);
    }
    args
}

async fn start(args: &[String]) -> RunningNode {
    let cli = Cli::try_parse_from(args).unwrap();
    server::start(cli.validate().unwrap()).await.unwrap()
}

struct Cluster {
    ports: Vec<u16>,
    peers: String,
    nodes: Vec<Option<RunningNode>>,
    http: reqwest::Client,
}

impl Cluster {
    async fn start(dir: &Path, security: Security) -> Cluster {
        let ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
        let peers = (0..3)
            .map(|i| format!("n{i}=http://127.0.0.1:{}", ports[i]))
            .collect::<Vec<_>>()
            .join(",");
        let mut nodes = Vec::new();
        for (i, port) in ports.iter().enumerate() {
            let args = node_args(dir, &format!("n{i}"), *port, &peers, security);
            nodes.push(Some(start(&args).await));
        }
        let http = reqwest::Client::builder().no_proxy().build().unwrap();
        Cluster {
            ports,
            peers,
            nodes,
            http,
        }
    }

    fn url(&self, i: usize, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.ports[i])
    }

    async fn status(&self, i: usize) -> Option<Value> {
        let response = self
            .http
            .get(self.url(i, "/status"))
            .bearer_auth(ADMIN)
            .timeout(Duration::from_secs(2))
            .send()
            .await
            .ok()?;
        response.json().await.ok()
    }

    /// The index of the leader all running nodes agree on, waiting up to 20 s.
    async fn leader(&self) -> usize {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            let mut seen = Vec::new();
            for i in 0..3 {
                if self.nodes[i].is_some()
                    && let Some(s) = self.status(i).await
                {
                    seen.push(s["leader"].as_str().map(String::from));
                }
            }
            if let Some(Some(name)) = seen.first()
                && seen.iter().all(|l| l.as_deref() == Some(name))
            {
                return name[1..].parse().unwrap();
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("no leader agreed on within 20 s");
    }

    async fn stop(&mut self, i: usize) {
        if let Some(node) = self.nodes[i].take() {
            node.shutdown().await.unwrap();
        }
    }

    async fn stop_all(mut self) {
        for i in 0..3 {
            self.stop(i).await;
        }
    }
}

/// Status and error code of a reply, and the body.
async fn outcome(request: reqwest::RequestBuilder) -> (u16, String, Value) {
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let body: Value = response.json().await.unwrap_or(Value::Null);
    let code = body["error"]["code"].as_str().unwrap_or("").to_string();
    (status, code, body)
}

/// A well-formed batch from `from` to `to` holding one RequestVote in `term`.
fn vote_batch(from: &str, to: &str, term: u64) -> Vec<u8> {
    postcard::to_allocvec(&PeerBatch {
        from: node_id_of(from),
        epoch: 1,
        seq: 1,
        timing: LeaseTiming {
            tick_ms: 15,
            election_ticks_min: 10,
            lease_drift_ticks: 2,
            check_quorum: true,
        },
        messages: vec![Message {
            from: node_id_of(from),
            to: node_id_of(to),
            term: Term(term),
            body: MessageBody::RequestVote {
                pre_vote: false,
                last_log_index: LogIndex(1_000_000),
                last_log_term: Term(term),
                transfer: true,
            },
        }],
    })
    .unwrap()
}

/// A listener standing for an attacker's address: it records the
/// `Authorization` header of every request it gets.
async fn attacker() -> (String, Arc<Mutex<Vec<String>>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let seen = Arc::new(Mutex::new(Vec::new()));
    let record = seen.clone();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let record = record.clone();
            tokio::spawn(async move {
                let mut head = vec![0u8; 8192];
                let mut filled = 0;
                // Headers only; bounded in size and time.
                while filled < head.len() {
                    let read = tokio::time::timeout(
                        Duration::from_secs(2),
                        socket.read(&mut head[filled..]),
                    )
                    .await;
                    match read {
                        Ok(Ok(n)) if n > 0 => filled += n,
                        _ => break,
                    }
                    if head[..filled].windows(4).any(|w| w == b"\r\n\r\n") {
                        break;
                    }
                }
                let text = String::from_utf8_lossy(&head[..filled]).to_string();
                let authorization = text
                    .lines()
                    .find_map(|l| {
                        l.split_once(':')
                            .filter(|(k, _)| k.eq_ignore_ascii_case("authorization"))
                            .map(|(_, v)| v.trim().to_string())
                    })
                    .unwrap_or_default();
                record.lock().unwrap().push(authorization);
            });
        }
    });
    (url, seen)
}

#[test]
fn client_tokens_without_a_peer_credential_do_not_start_whatever_the_peer_list() {
    let dir = tempfile::tempdir().unwrap();
    let tokens = dir.path().join("tokens");
    std::fs::write(&tokens, format!("admin {ADMIN}\n")).unwrap();
    let data = dir.path().join("data");
    // A single node, and a joiner: neither has --peers.
    for extra in [&[][..], &["--join", "http://127.0.0.1:1"][..]] {
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_kv-node"))
            .args(["--id", "solo", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(&data)
            .arg("--auth-token-file")
            .arg(&tokens)
            .args(extra)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{extra:?}: {stderr}");
        assert!(stderr.contains("needs a peer credential"), "{stderr}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_peer_endpoint_of_a_single_node_needs_the_credential_made_for_it() {
    let dir = tempfile::tempdir().unwrap();
    let args = node_args(dir.path(), "solo", 0, "", Security::Tokens);
    let node = start(&args).await;
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    let base = format!("http://{}", node.local_addr);
    let secret = PeerSecret::new(PEER.as_bytes());
    let batch = vote_batch("n9", "solo", 50);
    for path in [
        "/raft/messages",
        "/raft/stream",
        "/raft/snapshot",
        "/raft/anything",
        "/raft",
    ] {
        let post = |token: Option<String>| {
            let request = http.post(format!("{base}{path}")).body(batch.clone());
            match token {
                Some(t) => request.bearer_auth(t),
                None => request,
            }
        };
        assert_eq!(outcome(post(None)).await.0, 401, "{path} without a token");
        assert_eq!(outcome(post(Some(ADMIN.into()))).await.0, 403, "{path}");
        // The cluster token itself, another node's credential and an
        // over-long token are no credential here.
        for wrong in [
            PEER.to_string(),
            secret.credential_for("n2"),
            "x".repeat(100_000),
        ] {
            assert_eq!(outcome(post(Some(wrong))).await.0, 401, "{path}");
        }
    }
    // With the right credential the check passes; the sender is unknown.
    let (status, _, _) = outcome(
        http.post(format!("{base}/raft/messages"))
            .bearer_auth(secret.credential_for("solo"))
            .body(batch),
    )
    .await;
    assert_eq!(status, 400);

    // The message stream: with the credential but without the upgrade
    // headers, a 400 that says what to send.
    let credential = secret.credential_for("solo");
    let (status, _, body) = outcome(
        http.post(format!("{base}/raft/stream"))
            .bearer_auth(&credential)
            .body(Vec::new()),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert!(body.to_string().contains("Upgrade"), "{body}");
    // Upgraded, a batch from an unknown sender is refused in the last
    // frame, and the node closes the stream.
    let replies =
        stream_one_frame(node.local_addr, &credential, &vote_batch("n9", "solo", 50)).await;
    let Some(kv_node::peer::stream::StreamReply::Refused { code, message, .. }) = replies.last()
    else {
        panic!("no refusal: {replies:?}");
    };
    assert_eq!(code, "bad_request", "{message}");
    assert!(message.contains("unknown node"), "{message}");
    node.shutdown().await.unwrap();
}

/// Opens `/raft/stream` on a raw connection, sends `frame`, and reads
/// replies until the node closes the stream (at most 50, within 10 s).
async fn stream_one_frame(
    addr: std::net::SocketAddr,
    credential: &str,
    frame: &[u8],
) -> Vec<kv_node::peer::stream::StreamReply> {
    use kv_node::peer::stream::{read_reply, write_frame};
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut io = BufReader::new(tcp);
    let head = format!(
        "POST /raft/stream HTTP/1.1\r\nhost: {addr}\r\nauthorization: Bearer {credential}\r\nconnection: upgrade\r\nupgrade: kv-raft-stream/1\r\ncontent-length: 0\r\n\r\n"
    );
    io.get_mut().write_all(head.as_bytes()).await.unwrap();
    let mut status = String::new();
    io.read_line(&mut status).await.unwrap();
    assert!(status.starts_with("HTTP/1.1 101"), "{status}");
    loop {
        let mut line = String::new();
        io.read_line(&mut line).await.unwrap();
        if line == "\r\n" || line.is_empty() {
            break;
        }
    }
    write_frame(io.get_mut(), frame).await.unwrap();
    io.get_mut().flush().await.unwrap();
    let mut replies = Vec::new();
    let read_all = async {
        while let Ok(Some(reply)) = read_reply(&mut io).await {
            replies.push(reply);
            if replies.len() >= 50 {
                break;
            }
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(10), read_all).await;
    replies
}

/// Re-pointing an existing member is refused (409), whoever asks and
/// wherever; the same URL again is harmless; a new member an admin adds
/// at its own address gets raft traffic, but with a credential that no
/// other node accepts.
async fn a_member_cannot_be_repointed(security: Security) {
    let dir = tempfile::tempdir().unwrap();
    let cluster = Cluster::start(dir.path(), security).await;
    let leader = cluster.leader().await;
    let follower = (leader + 1) % 3;
    let victim = (leader + 2) % 3;
    let (evil_url, seen) = attacker().await;
    let add = |at: usize, body: Value| {
        let request = cluster
            .http
            .post(cluster.url(at, "/cluster/members"))
            .json(&body);
        match security {
            Security::Tokens => request.bearer_auth(ADMIN),
            Security::PeerTokenOnly => request,
        }
    };
    for at in [leader, follower] {
        for voter in [true, false] {
            let (status, code, body) = outcome(add(
                at,
                json!({"id": format!("n{victim}"), "url": evil_url, "voter": voter}),
            ))
            .await;
            assert_eq!(
                (status, code.as_str()),
                (409, "member_url_conflict"),
                "voter {voter} at n{at}: {body}"
            );
        }
    }
    // The same URL again: a harmless retry.
    let (status, _, body) = outcome(add(
        follower,
        json!({"id": format!("n{victim}"), "url": format!("http://127.0.0.1:{}", cluster.ports[victim]), "voter": true}),
    ))
    .await;
    assert_eq!(
        (status, body["changed"].as_bool()),
        (200, Some(false)),
        "{body}"
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(
        seen.lock().unwrap().is_empty(),
        "raft traffic was re-pointed"
    );
    let members = outcome(
        cluster
            .http
            .get(cluster.url(leader, "/cluster/members"))
            .bearer_auth(ADMIN),
    )
    .await
    .2;
    assert!(!members.to_string().contains(&evil_url), "{members}");

    // An admin may add a new node at an address of its choosing ...
    let (status, _, body) = outcome(add(
        leader,
        json!({"id": "evil", "url": evil_url, "voter": false}),
    ))
    .await;
    assert_eq!(status, 200, "{body}");
    let deadline = Instant::now() + Duration::from_secs(10);
    while seen.lock().unwrap().is_empty() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let received: Vec<String> = seen.lock().unwrap().clone();
    assert!(!received.is_empty(), "the new learner got no raft traffic");
    // ... but what arrives there never holds the cluster token, and is no
    // credential at any member.
    let batch = vote_batch(&format!("n{leader}"), &format!("n{victim}"), 1_000);
    for authorization in received.iter().take(5) {
        assert!(!authorization.contains(PEER), "the cluster token leaked");
        let token = authorization.trim_start_matches("Bearer ").to_string();
        let (status, _, _) = outcome(
            cluster
                .http
                .post(cluster.url(victim, "/raft/messages"))
                .bearer_auth(token)
                .body(batch.clone()),
        )
        .await;
        assert_eq!(
            status, 401,
            "a credential sent to the new node works at n{victim}"
        );
    }
    // The cluster still serves.
    let put = cluster
        .http
        .put(cluster.url(follower, "/kv/after"))
        .json(&json!({"value": "ok"}));
    let put = match security {
        Security::Tokens => put.bearer_auth(ADMIN),
        Security::PeerTokenOnly => put,
    };
    assert_eq!(outcome(put).await.0, 200);
    cluster.stop_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_cannot_repoint_a_member_or_learn_a_peer_credential() {
    a_member_cannot_be_repointed(Security::Tokens).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_only_a_peer_token_nobody_can_repoint_a_member() {
    a_member_cannot_be_repointed(Security::PeerTokenOnly).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_member_is_refused_and_learns_that_it_was_removed() {
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = Cluster::start(dir.path(), Security::Tokens).await;
    let leader = cluster.leader().await;
    let removed = (leader + 1) % 3;
    let other = (leader + 2) % 3;
    // The removed node is down while it is removed, so it does not know.
    cluster.stop(removed).await;
    let (status, _, body) = outcome(
        cluster
            .http
            .delete(cluster.url(leader, &format!("/cluster/members/n{removed}")))
            .bearer_auth(ADMIN),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let term_before = cluster.status(leader).await.unwrap()["term"]
        .as_u64()
        .unwrap();

    // A batch from it, with its credential for the leader and a much
    // higher term, is refused before it reaches the core.
    let secret = PeerSecret::new(PEER.as_bytes());
    let (status, code, body) = outcome(
        cluster
            .http
            .post(cluster.url(leader, "/raft/messages"))
            .bearer_auth(secret.credential_for(&format!("n{leader}")))
            .body(vote_batch(
                &format!("n{removed}"),
                &format!("n{leader}"),
                term_before + 100,
            )),
    )
    .await;
    assert_eq!((status, code.as_str()), (403, "not_a_member"), "{body}");
    assert!(
        body["error"]["commit_index"].as_u64().unwrap() > 0,
        "{body}"
    );

    // Restarted with its old log, it campaigns, is refused, and learns.
    let args = node_args(
        dir.path(),
        &format!("n{removed}"),
        cluster.ports[removed],
        &cluster.peers.clone(),
        Security::Tokens,
    );
    cluster.nodes[removed] = Some(start(&args).await);
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut status = Value::Null;
    while Instant::now() < deadline {
        status = cluster.status(removed).await.unwrap_or(Value::Null);
        if status["removed"] == json!(true) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(status["removed"], json!(true), "{status}");
    let (status, code, _) = outcome(
        cluster
            .http
            .put(cluster.url(removed, "/kv/k"))
            .bearer_auth(ADMIN)
            .json(&json!({"value": "v"})),
    )
    .await;
    assert_eq!((status, code.as_str()), (503, "removed"));

    // The remaining members never took the forged term (an election of
    // their own on a loaded machine may still move the term a little),
    // and keep serving.
    for i in [leader, other] {
        let s = cluster.status(i).await.unwrap();
        assert!(s["term"].as_u64().unwrap() < term_before + 100, "{s}");
    }
    let (status, _, _) = outcome(
        cluster
            .http
            .put(cluster.url(other, "/kv/k"))
            .bearer_auth(ADMIN)
            .json(&json!({"value": "v"})),
    )
    .await;
    assert_eq!(status, 200);
    cluster.stop_all().await;
}
