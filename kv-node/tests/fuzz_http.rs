//! Fuzzing the HTTP surface of a real single-node kv-node (started with
//! `server::start` on 127.0.0.1:0 over a temporary data dir), through
//! `http::routes` and `warp::test`:
//!
//! - random requests: methods, paths with percent-encoded keys (invalid
//!   UTF-8, empty, over the 4096-byte limit), query strings, and JSON bodies
//!   for every route (random JSON trees using the real field names, wrong
//!   types, deep nesting, mutated valid bodies, random bytes). Every answer
//!   is a JSON reply with a status other than 500, in bounded time, and the
//!   node still serves afterwards;
//! - `POST /raft/messages`: random and mutated batches from a known peer,
//!   whose well-formed messages reach the Raft core: the node must stay up.
//!
//! Each target runs twice: with auth off, and with client tokens and a
//! cluster token on. With auth on every request carries a random
//! credential (none, a read, write or admin token, an unknown or over-long
//! token, the peer credential, a malformed header) and the answer must also
//! agree with the route-role table (`auth::Access::of`): 401 without a
//! valid credential, 403 when the role is too low, neither when it is
//! enough.
//!
//! Run longer with `FUZZ_CASES=N` (FUZZING.md).

mod fuzz_harness;

use bytes::Bytes;
use clap::Parser;
use fuzz_harness::{config, hex};
use kv_node::auth::{Access, Auth, PeerSecret, Role};
use kv_node::cli::{Cli, ReadPolicy};
use kv_node::http::{AppState, routes};
use kv_node::ids::{Member, Members, node_id_of};
use kv_node::peer::transport::PeerBatch;
use kv_node::server::{self, RunningNode};
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::TestRunner;
use raft_core::{Entry, EntryKind, LogIndex, Message, MessageBody, Term};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Far above a healthy reply; a write waits at most the node's request
/// timeout (5 s by default).
const DEADLINE: Duration = Duration::from_secs(15);

struct Node {
    node: RunningNode,
    _dir: tempfile::TempDir,
}

async fn start() -> Node {
    let dir = tempfile::tempdir().unwrap();
    let cli = Cli::try_parse_from([
        "kv-node",
        "--id",
        "solo",
        "--listen",
        "127.0.0.1:0",
        "--data-dir",
        dir.path().to_str().unwrap(),
        "--max-value-bytes",
        "2048",
        "--request-timeout-ms",
        "1000",
    ])
    .unwrap();
    let node = server::start(cli.validate().unwrap()).await.unwrap();
    for _ in 0..500 {
        if let Ok(status) = node.driver.status().await
            && status.leader.is_some()
            && kv_node::driver::is_ready(&status)
        {
            return Node { node, _dir: dir };
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("the node never became ready");
}

const READ: &str = "read-token-aaaaaaaaaaaaaaaa";
const WRITE: &str = "write-token-bbbbbbbbbbbbbbbb";
const ADMIN: &str = "admin-token-cccccccccccccccc";
const PEER: &str = "peer-token-dddddddddddddddd";

/// The token checks of the auth-on runs: the three client roles and the
/// cluster token, as `--auth-token-file` and `--peer-token-file` give them.
fn auth() -> Auth {
    Auth::from_tokens(
        Some(vec![
            (READ.into(), Role::Read),
            (WRITE.into(), Role::Write),
            (ADMIN.into(), Role::Admin),
        ]),
        Some(PEER.into()),
        "solo",
    )
}

/// The credential "n2" presents to "solo" for raft messages.
fn peer_credential() -> String {
    PeerSecret::new(PEER.as_bytes()).credential_for("solo")
}

/// What a request presents in `Authorization`, and what it may do.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Credential {
    None,
    Client(Role),
    Peer,
    /// Not a valid credential: an unknown or over-long token, the cluster
    /// token itself (it never travels), a malformed header.
    Invalid(String),
}

impl Credential {
    fn header(&self) -> Option<String> {
        match self {
            Credential::None => None,
            Credential::Client(Role::Read) => Some(format!("Bearer {READ}")),
            Credential::Client(Role::Write) => Some(format!("Bearer {WRITE}")),
            Credential::Client(Role::Admin) => Some(format!("Bearer {ADMIN}")),
            Credential::Peer => Some(format!("Bearer {}", peer_credential())),
            Credential::Invalid(header) => Some(header.clone()),
        }
    }
}

fn credential() -> impl Strategy<Value = Credential> {
    prop_oneof![
        2 => Just(Credential::None),
        2 => Just(Credential::Client(Role::Read)),
        2 => Just(Credential::Client(Role::Write)),
        3 => Just(Credential::Client(Role::Admin)),
        1 => Just(Credential::Peer),
        1 => prop_oneof![
            Just(format!("Bearer {PEER}")),
            Just(format!("Bearer {}", "a".repeat(600))),
            Just(format!("bearer {ADMIN}x")),
            Just(format!("Basic {ADMIN}")),
            Just("Bearer".to_string()),
            "Bearer [ -~]{0,40}",
        ]
        .prop_map(Credential::Invalid),
    ]
}

/// The statuses the role table allows for `credential` on a route that
/// needs `access`: `Some(401)` or `Some(403)` when it must be refused,
/// `None` when it must get past the check (any status but 401 and 403).
fn refusal(access: Access, credential: &Credential) -> Option<u16> {
    match (access, credential) {
        (Access::Open, _) => None,
        (_, Credential::None | Credential::Invalid(_)) => Some(401),
        (Access::Peer, Credential::Peer) => None,
        (Access::Peer, Credential::Client(_)) => Some(403),
        (Access::Client(_), Credential::Peer) => Some(401),
        (Access::Client(needed), Credential::Client(role)) if *role >= needed => None,
        (Access::Client(_), Credential::Client(_)) => Some(403),
    }
}

/// The routes over the node's driver. With `peer`, a member "n2" is known,
/// so that its batches pass the sender check and reach the core. With
/// `auth`, tokens are checked.
fn state(node: &Node, peer: bool, auth: Option<Auth>) -> Arc<AppState> {
    let member = |name: &str| Member {
        name: name.into(),
        id: node_id_of(name),
        url: "http://127.0.0.1:1".into(),
    };
    let peers = if peer { vec![member("n2")] } else { vec![] };
    let state = AppState::new(
        node.node.driver.clone(),
        Members::new(member("solo"), peers).unwrap(),
        node.node.metrics.clone(),
        ReadPolicy::Linearizable,
        2048,
        8192,
    );
    Arc::new(match auth {
        Some(auth) => state.with_limits(
            Some(Arc::new(auth)),
            1024,
            kv_node::settings::MAX_PEER_BATCH_BYTES,
        ),
        None => state,
    })
}

#[derive(Clone, Debug)]
struct Request {
    method: &'static str,
    path: String,
    body: Vec<u8>,
    credential: Credential,
}

fn key() -> impl Strategy<Value = String> {
    let raw = prop_oneof![
        4 => prop::collection::vec(any::<u8>(), 0..12),
        1 => (0usize..3).prop_map(|extra| vec![b'k'; 4095 + extra]),
        1 => "[a-z]{1,4}".prop_map(String::into_bytes),
    ];
    // Percent-encode every byte: the path stays a valid URI while the key
    // decodes to anything, invalid UTF-8 included.
    raw.prop_map(|bytes| bytes.iter().map(|b| format!("%{b:02X}")).collect())
}

fn query() -> impl Strategy<Value = String> {
    let value = prop_oneof![
        Just("linearizable".to_string()),
        Just("stale".to_string()),
        Just("10001".to_string()),
        Just("-1".to_string()),
        Just("99999999999999999999999".to_string()),
        "[a-z0-9%]{0,6}",
    ];
    prop::collection::vec(
        (
            prop::sample::select(vec!["consistency", "limit", "prefix", "x"]),
            value,
        ),
        0..3,
    )
    .prop_map(|pairs| {
        pairs
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("&")
    })
}

fn path() -> impl Strategy<Value = String> {
    (
        prop::sample::select(vec![
            "/kv/{}",
            "/kv/{}",
            "/kv/{}/cas",
            "/kv/mput",
            "/kv",
            "/txn",
            "/admin/read-policy",
            "/admin/snapshot",
            "/admin/{}",
            "/cluster/transfer-leader",
            "/cluster/members",
            "/cluster/members/{}",
            "/raft/messages",
            "/raft/{}",
            "/status",
            "/metrics",
            "/healthz",
            "/readyz",
            "/{}/{}",
        ]),
        key(),
        query(),
    )
        .prop_map(|(template, key, query)| {
            let path = template.replace("{}", &key);
            if query.is_empty() {
                path
            } else {
                format!("{path}?{query}")
            }
        })
}

/// Arbitrary JSON, biased towards the API's field names.
fn json() -> impl Strategy<Value = serde_json::Value> {
    use serde_json::Value;
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>()
            .prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        ".{0,10}".prop_map(Value::String),
        (0usize..3).prop_map(|n| Value::String("v".repeat(2047 + n))),
    ];
    leaf.prop_recursive(4, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::vec(
                (
                    prop::sample::select(vec![
                        "value",
                        "expected",
                        "client_id",
                        "seq",
                        "entries",
                        "key",
                        "to",
                        "policy",
                        "id",
                        "url",
                        "voter",
                        "compare",
                        "success",
                        "failure",
                        "other",
                    ]),
                    inner
                ),
                0..5
            )
            .prop_map(|fields| Value::Object(
                fields
                    .into_iter()
                    .map(|(k, v)| (k.to_string(), v))
                    .collect()
            )),
        ]
    })
}

fn valid_body() -> impl Strategy<Value = String> {
    prop::sample::select(vec![
        r#"{"value": "v"}"#,
        r#"{"value": "v", "client_id": "c", "seq": 3}"#,
        r#"{"expected": null, "value": "x"}"#,
        r#"{"expected": "x", "value": null, "client_id": "c", "seq": 4}"#,
        r#"{"entries": [{"key": "a", "value": "1"}, {"key": "b", "value": "2"}]}"#,
        r#"{"client_id": "c", "seq": 5}"#,
        r#"{"policy": "lease"}"#,
        r#"{"to": "solo"}"#,
        r#"{"to": "n7"}"#,
        // Learners only: a voter nobody runs would cost the node its quorum.
        r#"{"id": "n5", "url": "http://127.0.0.1:1", "voter": false}"#,
        r#"{"id": "n6", "url": "https://127.0.0.1:1", "voter": false}"#,
        r#"{"id": "solo", "url": "http://127.0.0.1:2", "voter": false}"#,
        r#"{"compare": [{"key": "a", "target": "value", "op": "==", "value": "1"}],
            "success": [{"put": {"key": "a", "value": "2"}}], "failure": [{"get": {"key": "a"}}]}"#,
        "",
    ])
    .prop_map(str::to_string)
}

fn body() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        4 => json().prop_map(|v| serde_json::to_vec(&v).unwrap()),
        3 => (valid_body(), any::<usize>(), any::<u8>()).prop_map(|(body, at, byte)| {
            let mut bytes = body.into_bytes();
            if !bytes.is_empty() && byte % 2 == 0 {
                let at = at % bytes.len();
                bytes[at] = byte;
            }
            bytes
        }),
        1 => (1usize..3000).prop_map(|depth| {
            let mut bytes = vec![b'['; depth];
            bytes.extend(vec![b']'; depth / 2]);
            bytes
        }),
        1 => prop::collection::vec(any::<u8>(), 0..64),
        1 => Just(vec![b' '; 9000]),
    ]
}

/// A request; with `auth`, it carries a random credential.
fn request(auth: bool) -> impl Strategy<Value = Request> {
    let credential = if auth {
        credential().boxed()
    } else {
        Just(Credential::None).boxed()
    };
    (
        prop::sample::select(vec!["GET", "PUT", "POST", "DELETE", "PATCH", "HEAD"]),
        path(),
        body(),
        credential,
    )
        .prop_map(|(method, path, body, credential)| Request {
            method,
            path,
            body,
            credential,
        })
}

async fn send(
    filter: &(
         impl warp::Filter<Extract = (warp::reply::Response,), Error = warp::Rejection>
         + Clone
         + Send
         + Sync
         + 'static
     ),
    request: &Request,
) -> warp::http::Response<Bytes> {
    let mut builder = warp::test::request()
        .method(request.method)
        .path(&request.path)
        .body(request.body.clone());
    if let Some(header) = request.credential.header() {
        builder = builder.header("authorization", header);
    }
    let reply = builder.reply(filter);
    match tokio::time::timeout(DEADLINE, reply).await {
        Ok(response) => response,
        Err(_) => panic!(
            "{} {} with body {}: no reply within {DEADLINE:?}",
            request.method,
            request.path.chars().take(200).collect::<String>(),
            hex(&request.body)
        ),
    }
}

/// Runs `cases` values of `strategy` through `check` on the current runtime
/// (proptest's runner is synchronous: values are drawn first, then sent).
async fn run_async<S, F, Fut>(name: &str, default_cases: u32, strategy: S, check: F)
where
    S: Strategy,
    S::Value: std::fmt::Debug,
    F: Fn(S::Value) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let started = Instant::now();
    let config = config(default_cases);
    let mut runner = TestRunner::new(config.clone());
    for _ in 0..config.cases {
        let value = strategy.new_tree(&mut runner).unwrap().current();
        check(value).await;
    }
    eprintln!(
        "fuzz target {name}: {} cases in {:.1?}",
        config.cases,
        started.elapsed()
    );
}

/// Random requests with auth off (`auth: false`) or on; see the module doc.
async fn fuzz_requests(name: &str, with_auth: bool) {
    let node = start().await;
    let filter = routes(state(&node, false, with_auth.then(auth)));
    run_async(name, 400, request(with_auth), |request| {
        let filter = filter.clone();
        async move {
            let response = send(&filter, &request).await;
            let status = response.status().as_u16();
            let what = format!(
                "{} {} with {:?} and body {} -> {status}: {}",
                request.method,
                request.path.chars().take(200).collect::<String>(),
                request.credential,
                hex(&request.body),
                String::from_utf8_lossy(response.body())
            );
            // 501 is the documented answer of the membership routes.
            assert!(
                status < 500 || [501, 503, 504].contains(&status),
                "{what}: an internal error"
            );
            let path = request.path.split('?').next().unwrap_or_default();
            let method: warp::http::Method = request.method.parse().unwrap();
            if with_auth {
                match refusal(Access::of(&method, path), &request.credential) {
                    Some(expected) => assert_eq!(status, expected, "{what}: the role table"),
                    None => assert!(
                        (status != 401 && status != 403) || path.starts_with("/raft"),
                        "{what}: refused a credential the role table lets through"
                    ),
                }
            }
            let is_metrics = path == "/metrics" && status == 200;
            if !is_metrics && method != warp::http::Method::HEAD {
                let reply: serde_json::Value = serde_json::from_slice(response.body())
                    .unwrap_or_else(|e| panic!("{what}: not JSON: {e}"));
                if status >= 400 {
                    assert!(reply["error"]["code"].is_string(), "{what}");
                }
            }
        }
    })
    .await;
    // The node still serves.
    let status = node.node.driver.status().await.expect("the node is alive");
    assert!(status.leader.is_some());
    node.node.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fuzz_http_requests_get_json_replies_and_never_a_500() {
    fuzz_requests("http_requests", false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fuzz_http_requests_with_tokens_follow_the_role_table() {
    fuzz_requests("http_requests_with_auth", true).await;
}

/// Messages no honest peer sends: the core must refuse them (counted by
/// kind in /metrics), never panic.
fn hostile_body() -> impl Strategy<Value = MessageBody> {
    prop_oneof![
        // Entries that repeat an index, or leave a gap, with a high commit.
        (0u64..4, 1u64..3, any::<bool>()).prop_map(|(prev, n, gap)| {
            let step = if gap { 2 } else { 0 };
            MessageBody::AppendEntries {
                prev_log_index: LogIndex(prev),
                prev_log_term: Term(0),
                entries: (0..=n)
                    .map(|i| Entry {
                        term: Term(1),
                        index: LogIndex(prev + 1 + i * step),
                        kind: EntryKind::Normal,
                        data: Bytes::from_static(b"\x00\x00\x00\x01k\x01v"),
                    })
                    .collect(),
                leader_commit: LogIndex(u64::MAX / 8),
            }
        }),
        // An acknowledgement far beyond the leader's log.
        (1u64..u64::MAX).prop_map(|index| MessageBody::AppendEntriesResponse {
            success: true,
            match_index: LogIndex(index),
            conflict_index: LogIndex(0),
            conflict_term: None,
            reject_index: LogIndex(0),
        }),
        // A heartbeat answer for a read round never sent.
        (u64::MAX / 2..u64::MAX)
            .prop_map(|read_round| MessageBody::HeartbeatResponse { read_round }),
    ]
}

/// A peer batch from "n2" to "solo" of a few messages, possibly mutated.
fn peer_batch() -> impl Strategy<Value = Vec<u8>> {
    let body = prop_oneof![
        (0u64..4, 0u64..4, 0u64..8).prop_map(|(prev, term, commit)| MessageBody::AppendEntries {
            prev_log_index: LogIndex(prev),
            prev_log_term: Term(term),
            entries: vec![Entry {
                term: Term(term),
                index: LogIndex(prev + 1),
                kind: EntryKind::Normal,
                data: Bytes::from_static(b"\x00\x00\x00\x01k\x01v"),
            }],
            leader_commit: LogIndex(commit),
        }),
        (0u64..8, any::<u64>()).prop_map(|(commit, read_round)| MessageBody::Heartbeat {
            commit: LogIndex(commit),
            read_round
        }),
        any::<u64>().prop_map(|read_round| MessageBody::HeartbeatResponse { read_round }),
        (any::<bool>(), any::<bool>())
            .prop_map(|(pre_vote, granted)| MessageBody::RequestVoteResponse { pre_vote, granted }),
        (any::<u64>(), any::<bool>())
            .prop_map(|(context, lease)| MessageBody::ReadIndex { context, lease }),
        (0u64..8, any::<u64>(), prop::option::of(0u64..8)).prop_map(
            |(snapshot_index, received, last_index)| MessageBody::InstallSnapshotResponse {
                snapshot_index: LogIndex(snapshot_index),
                received,
                last_index: last_index.map(LogIndex),
            }
        ),
    ];
    let term = prop_oneof![6 => 0u64..3, 1 => Just(u64::MAX)];
    let body = prop_oneof![3 => body, 1 => hostile_body()];
    (
        prop::collection::vec((term, body), 0..4),
        any::<u64>(),
        prop::option::of((any::<usize>(), 1u8..=255)),
        prop::option::of(prop::collection::vec(any::<u8>(), 0..48)),
    )
        .prop_map(|(messages, seq, flip, random)| {
            if let Some(random) = random {
                return random;
            }
            let from = node_id_of("n2");
            let batch = PeerBatch {
                from,
                epoch: 1,
                seq,
                timing: Default::default(),
                messages: messages
                    .into_iter()
                    .map(|(term, body)| Message {
                        from,
                        to: node_id_of("solo"),
                        term: Term(term),
                        body,
                    })
                    .collect(),
            };
            let mut bytes = postcard::to_allocvec(&batch).unwrap();
            if let Some((at, mask)) = flip {
                let at = at % bytes.len();
                bytes[at] ^= mask;
            }
            bytes
        })
}

/// Peer batches reach the core of a live node: "n2" is made a learner of
/// its cluster first, so that the driver's address book knows the sender
/// and its batches are delivered, not refused as from an unknown node
/// (small terms: a forged leader of a newer term may depose the node, which
/// Raft allows from a member; hostile messages are refused by the core).
/// What is checked: every batch gets an answer, none stops the driver, and
/// messages did reach the core (some refused, counted by kind).
async fn fuzz_peer_batches(name: &str, with_auth: bool, cases: u32) {
    let node = start().await;
    let filter = routes(state(&node, true, with_auth.then(auth)));
    let add = Request {
        method: "POST",
        path: "/cluster/members".into(),
        body: br#"{"id": "n2", "url": "http://127.0.0.1:1", "voter": false}"#.to_vec(),
        credential: if with_auth {
            Credential::Client(Role::Admin)
        } else {
            Credential::None
        },
    };
    let response = send(&filter, &add).await;
    assert_eq!(
        response.status().as_u16(),
        200,
        "{}",
        String::from_utf8_lossy(response.body())
    );
    // With auth on, most batches carry the peer credential; the others a
    // client token (even admin: 403) or nothing (401), and never reach the
    // core.
    let credential = if with_auth {
        prop_oneof![
            8 => Just(Credential::Peer),
            1 => Just(Credential::Client(Role::Admin)),
            1 => Just(Credential::None),
        ]
        .boxed()
    } else {
        Just(Credential::None).boxed()
    };
    run_async(
        name,
        cases,
        (peer_batch(), credential),
        |(body, credential)| {
            let filter = filter.clone();
            let driver = node.node.driver.clone();
            async move {
                let request = Request {
                    method: "POST",
                    path: "/raft/messages".into(),
                    body,
                    credential,
                };
                let response = send(&filter, &request).await;
                let status = response.status().as_u16();
                let allowed: &[u16] = match refusal(Access::Peer, &request.credential) {
                    Some(refused) if with_auth => &[refused],
                    _ => &[200, 204, 400],
                };
                assert!(
                    allowed.contains(&status),
                    "{} with {:?}: {status} {}",
                    hex(&request.body),
                    request.credential,
                    String::from_utf8_lossy(response.body())
                );
                driver
                    .status()
                    .await
                    .unwrap_or_else(|e| panic!("{}: the node stopped: {e}", hex(&request.body)));
            }
        },
    )
    .await;
    let metrics = &node.node.metrics;
    let delivered = metrics.peer_messages_received.get();
    assert!(delivered > 0, "no batch reached the driver");
    let refused: u64 = [
        "entries_not_contiguous",
        "ack_beyond_last_index",
        "read_round_ahead",
        "term_out_of_range",
    ]
    .iter()
    .map(|kind| metrics.peer_messages_refused(kind))
    .sum();
    assert!(refused > 0, "no hostile message reached the core");
    assert!(
        metrics
            .render()
            .contains("kv_peer_messages_refused_total{kind="),
        "refusals are in /metrics"
    );
    node.node.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fuzz_http_peer_batches_never_stop_the_node() {
    fuzz_peer_batches("http_peer_batches", false, 2000).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fuzz_http_peer_batches_with_the_peer_credential_never_stop_the_node() {
    fuzz_peer_batches("http_peer_batches_with_auth", true, 1000).await;
}
