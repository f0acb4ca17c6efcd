//! The HTTP layer against a real single-node replica in a temporary data
//! directory (through `warp::test`), and against a driver that never
//! answers (for 503 and 504).

use super::{AppState, routes};
use crate::driver::{self, DriverHandle};
use crate::ids::{Member, Members, node_id_of};
use crate::metrics::Metrics;
use crate::peer::transport::PeerSender;
use crate::settings::ReadPolicy;
use crate::wal_disk::WalDisk;
use kv_replica::replica::Replica;
use raft_core::{Config, Membership};
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

const MAX_VALUE: usize = 1024;

fn members() -> Members {
    let this = Member {
        name: "node1".into(),
        id: node_id_of("node1"),
        url: "http://127.0.0.1:1".into(),
    };
    Members::new(this, vec![]).unwrap()
}

fn app_state(driver: DriverHandle, metrics: Arc<Metrics>) -> Arc<AppState> {
    Arc::new(AppState::new(
        driver,
        members(),
        metrics,
        ReadPolicy::Linearizable,
        MAX_VALUE,
        4 * MAX_VALUE,
    ))
}

/// A single-node cluster that has elected itself.
struct TestNode {
    state: Arc<AppState>,
    _stop: watch::Sender<bool>,
    _dir: tempfile::TempDir,
}

/// No quota, unless a test asks for one.
const QUOTA_BYTES: u64 = 0;

async fn single_node() -> TestNode {
    single_node_with_quota(QUOTA_BYTES).await
}

async fn single_node_with_quota(quota_bytes: u64) -> TestNode {
    single_node_with(quota_bytes, SPIN_WAIT).await
}

/// The default `--spin-wait-us`.
const SPIN_WAIT: Duration = Duration::from_micros(200);

async fn single_node_with(quota_bytes: u64, spin_wait: Duration) -> TestNode {
    let dir = tempfile::tempdir().unwrap();
    let metrics = Arc::new(Metrics::default());
    let (mut disk, recovered) = WalDisk::open(dir.path(), metrics.clone()).unwrap();
    let snapshots = disk.take_snapshot_completions().unwrap();
    let persisted = disk.take_persist_completions().unwrap();
    let members = members();
    let replica = Replica::open(
        Config::new(members.this.id),
        recovered,
        Membership::new([members.this.id]),
        disk,
        100,
    )
    .unwrap();
    let (stop, stop_rx) = watch::channel(false);
    let (driver, _done) = driver::spawn(
        driver::runtime().unwrap(),
        replica,
        snapshots,
        persisted,
        quota_bytes,
        PeerSender::none(),
        crate::directory::Directory::new(members.clone()),
        false,
        metrics.clone(),
        Duration::from_millis(5),
        Duration::from_secs(5),
        spin_wait,
        stop_rx,
        crate::disk_space::DiskSpace::unlimited(),
        None,
    )
    .unwrap();
    let state = app_state(driver, metrics);
    for _ in 0..200 {
        let status = state.driver.status().await.unwrap();
        // Everything in the log applied: the leader's entry of its term
        // too, which commits only once the persist stage acknowledged it
        // (until then a membership change is refused as in progress).
        if status.leader.is_some()
            && driver::is_ready(&status)
            && status.last_applied >= status.last_log_index
        {
            return TestNode {
                state,
                _stop: stop,
                _dir: dir,
            };
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("single node did not elect itself");
}

async fn call(state: &Arc<AppState>, method: &str, path: &str, body: &str) -> (u16, Value) {
    let response = warp::test::request()
        .method(method)
        .path(path)
        .body(body)
        .reply(&routes(state.clone()))
        .await;
    let status = response.status().as_u16();
    let body = serde_json::from_slice(response.body()).unwrap_or(Value::Null);
    (status, body)
}

fn error_code(body: &Value) -> &str {
    body["error"]["code"].as_str().unwrap_or("<no error body>")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transaction_runs_one_branch_atomically_and_is_deduplicated() {
    let node = single_node().await;
    let s = &node.state;
    let (_, body) = call(s, "PUT", "/kv/a", r#"{"value":"1"}"#).await;
    let a_revision = body["revision"].as_u64().unwrap();
    let txn = format!(
        r#"{{"compare": [{{"key": "a", "target": "value", "op": "==", "value": "1"}},
                        {{"key": "b", "target": "revision", "op": "==", "revision": 0}},
                        {{"key": "a", "target": "revision", "op": "<", "revision": {}}}],
            "success": [{{"put": {{"key": "a", "value": "2"}}}}, {{"put": {{"key": "b", "value": "x"}}}},
                        {{"get": {{"key": "a"}}}}, {{"delete": {{"key": "c"}}}}],
            "failure": [{{"get": {{"key": "a"}}}}],
            "client_id": "c1", "seq": 1}}"#,
        a_revision + 1
    );
    let (status, first) = call(s, "POST", "/txn", &txn).await;
    assert_eq!(status, 200, "{first}");
    let revision = first["revision"].as_u64().unwrap();
    assert_eq!(
        first,
        json!({"succeeded": true, "revision": revision, "results": [
            {"prev": "1"}, {"prev": null},
            {"key": "a", "value": "2", "revision": revision}, {"prev": null}]})
    );
    // A retry answers the first result; the same transaction anew fails its
    // comparisons and runs the failure branch.
    let (_, again) = call(s, "POST", "/txn", &txn).await;
    assert_eq!(again, first);
    let (_, other) = call(s, "POST", "/txn", &txn.replace("\"seq\": 1", "\"seq\": 2")).await;
    assert_eq!(other["succeeded"], false, "{other}");
    assert_eq!(
        other["results"],
        json!([{"key": "a", "value": "2", "revision": revision}])
    );
    // Both branches may be empty; a transaction with no comparison succeeds.
    let (status, body) = call(s, "POST", "/txn", "{}").await;
    assert_eq!(
        (status, &body["succeeded"], &body["results"]),
        (200, &json!(true), &json!([]))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_transactions_are_refused_and_change_nothing() {
    let node = single_node().await;
    let s = &node.state;
    let put = |key: &str| format!(r#"{{"put": {{"key": "{key}", "value": "v"}}}}"#);
    let many_ops = vec![r#"{"get": {"key": "k"}}"#.to_string(); 129].join(",");
    let cases = [
        ("not JSON", "{".to_string()),
        ("unknown field", r#"{"compares": []}"#.to_string()),
        (
            "unknown op",
            r#"{"success": [{"upsert": {"key": "a", "value": "1"}}]}"#.to_string(),
        ),
        (
            "value compared by order",
            r#"{"compare": [{"key": "a", "target": "value", "op": "<", "value": "1"}]}"#
                .to_string(),
        ),
        (
            "revision compare without a revision",
            r#"{"compare": [{"key": "a", "target": "revision", "op": "==", "value": "1"}]}"#
                .to_string(),
        ),
        (
            "unknown target",
            r#"{"compare": [{"key": "a", "target": "version", "op": "==", "revision": 1}]}"#
                .to_string(),
        ),
        (
            "unknown compare op",
            r#"{"compare": [{"key": "a", "target": "revision", "op": "<=", "revision": 1}]}"#
                .to_string(),
        ),
        ("empty key", format!(r#"{{"success": [{}]}}"#, put(""))),
        (
            "key written twice",
            format!(r#"{{"failure": [{}, {}]}}"#, put("a"), put("a")),
        ),
        ("129 ops", format!(r#"{{"success": [{many_ops}]}}"#)),
    ];
    for (what, body) in cases {
        let (status, reply) = call(s, "POST", "/txn", &body).await;
        assert_eq!(
            (status, error_code(&reply)),
            (400, "bad_request"),
            "{what}: {reply}"
        );
        assert!(
            reply["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty())
        );
    }
    let (status, reply) = call(s, "GET", "/txn", "").await;
    assert_eq!((status, error_code(&reply)), (405, "method_not_allowed"));
    let (status, _) = call(s, "GET", "/kv/a", "").await;
    assert_eq!(status, 404, "nothing was written");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_may_span_several_path_segments() {
    let node = single_node().await;
    let s = &node.state;
    let (status, body) = call(s, "PUT", "/kv/services/web/1", r#"{"value":"up"}"#).await;
    assert_eq!(status, 200, "{body}");
    // The same key, percent-encoded or split differently.
    for path in [
        "/kv/services/web/1",
        "/kv/services%2Fweb%2F1",
        "/kv/services/web%2F1",
    ] {
        let (status, body) = call(s, "GET", path, "").await;
        assert_eq!(status, 200, "{path}: {body}");
        assert_eq!(
            (&body["key"], &body["value"]),
            (&json!("services/web/1"), &json!("up"))
        );
    }
    let (_, body) = call(s, "GET", "/kv?prefix=services%2Fweb%2F", "").await;
    assert_eq!(body["entries"][0]["key"], "services/web/1", "{body}");

    // CAS is the last segment; a key whose last segment is `cas` is
    // reached percent-encoded.
    let (status, body) = call(
        s,
        "POST",
        "/kv/services/web/1/cas",
        r#"{"expected":"up","value":"down"}"#,
    )
    .await;
    assert_eq!((status, &body["succeeded"]), (200, &json!(true)), "{body}");
    let (status, _) = call(s, "PUT", "/kv/services/web%2Fcas", r#"{"value":"v"}"#).await;
    assert_eq!(status, 200);
    let (_, body) = call(s, "GET", "/kv/services%2Fweb%2Fcas", "").await;
    assert_eq!(body["value"], "v");
    let (status, body) = call(s, "GET", "/kv/services/web/cas", "").await;
    assert_eq!((status, error_code(&body)), (405, "method_not_allowed"));

    // Empty segments are part of the key; an empty key is refused.
    let (status, _) = call(s, "PUT", "/kv/a//b/", r#"{"value":"x"}"#).await;
    assert_eq!(status, 200);
    let (_, body) = call(s, "GET", "/kv/a%2F%2Fb%2F", "").await;
    assert_eq!(body["value"], "x");
    let (status, body) = call(s, "PUT", "/kv/", r#"{"value":"x"}"#).await;
    assert_eq!((status, error_code(&body)), (400, "bad_request"));
    let (status, body) = call(s, "DELETE", "/kv/services/web/1", "").await;
    assert_eq!((status, &body["prev"]), (200, &json!("down")));

    // A path of many segments is held to the key limit.
    let long = "/kv/".to_string() + &"ab/".repeat(2000);
    let (status, body) = call(s, "PUT", &long, r#"{"value":"x"}"#).await;
    assert_eq!((status, error_code(&body)), (413, "too_large"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_and_reads_follow_the_contract() {
    let node = single_node().await;
    let s = &node.state;
    let (status, body) = call(s, "PUT", "/kv/a%2Fb", r#"{"value":"1"}"#).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["prev"], Value::Null);
    let revision = body["revision"].as_u64().unwrap();

    let (status, body) = call(s, "GET", "/kv/a%2Fb", "").await;
    assert_eq!(
        (status, &body),
        (
            200,
            &json!({"key": "a/b", "value": "1", "revision": revision})
        )
    );
    for consistency in ["lease", "stale", "linearizable"] {
        let (status, _) = call(
            s,
            "GET",
            &format!("/kv/a%2Fb?consistency={consistency}"),
            "",
        )
        .await;
        assert_eq!(status, 200, "{consistency}");
    }

    let (_, body) = call(s, "PUT", "/kv/a%2Fb", r#"{"value":"2"}"#).await;
    assert_eq!(body["prev"], "1");
    let (_, body) = call(
        s,
        "POST",
        "/kv/a%2Fb/cas",
        r#"{"expected":"1","value":"3"}"#,
    )
    .await;
    assert_eq!(
        (&body["succeeded"], &body["current"]),
        (&json!(false), &json!("2"))
    );
    let (_, body) = call(
        s,
        "POST",
        "/kv/a%2Fb/cas",
        r#"{"expected":"2","value":null}"#,
    )
    .await;
    assert_eq!(
        (&body["succeeded"], &body["current"]),
        (&json!(true), &Value::Null)
    );
    let (status, body) = call(
        s,
        "POST",
        "/kv/mput",
        r#"{"entries":[{"key":"p1","value":"x"},{"key":"p2","value":"y"}]}"#,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let (_, body) = call(s, "GET", "/kv?prefix=p&limit=1", "").await;
    assert_eq!(body["entries"][0]["key"], "p1");
    assert_eq!(body["more"], true);
    let (status, body) = call(s, "DELETE", "/kv/missing", "").await;
    assert_eq!((status, &body["prev"]), (200, &Value::Null));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retried_write_applies_once_and_an_older_seq_is_stale() {
    let node = single_node().await;
    let s = &node.state;
    let put = r#"{"value":"v","client_id":"c1","seq":5}"#;
    let (_, first) = call(s, "PUT", "/kv/k", put).await;
    let (_, again) = call(s, "PUT", "/kv/k", put).await;
    assert_eq!(first, again);
    let (status, body) = call(
        s,
        "PUT",
        "/kv/k",
        r#"{"value":"w","client_id":"c1","seq":4}"#,
    )
    .await;
    assert_eq!((status, error_code(&body)), (409, "stale_seq"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_bad_request_gets_its_error_class() {
    let node = single_node().await;
    let s = &node.state;
    let long_key = "k".repeat(kv_replica::state_machine::MAX_KEY_BYTES + 1);
    let big_value = format!(r#"{{"value":"{}"}}"#, "v".repeat(MAX_VALUE + 1));
    let huge_body = format!(r#"{{"value":"{}"}}"#, "v".repeat(8 * MAX_VALUE));
    let cases: Vec<(&str, String, String, u16, &str)> = vec![
        (
            "PUT",
            "/kv/k".into(),
            "{not json".into(),
            400,
            "bad_request",
        ),
        (
            "PUT",
            "/kv/k".into(),
            r#"{"valu":"x"}"#.into(),
            400,
            "bad_request",
        ),
        (
            "PUT",
            "/kv/k".into(),
            r#"{"value":5}"#.into(),
            400,
            "bad_request",
        ),
        ("PUT", "/kv/k".into(), String::new(), 400, "bad_request"),
        (
            "PUT",
            "/kv/%FF".into(),
            r#"{"value":"x"}"#.into(),
            400,
            "bad_request",
        ),
        ("GET", "/kv/".into(), String::new(), 400, "bad_request"),
        (
            "GET",
            "/kv/k?consistency=eventual".into(),
            String::new(),
            400,
            "bad_request",
        ),
        (
            "GET",
            "/kv?limit=-1".into(),
            String::new(),
            400,
            "bad_request",
        ),
        (
            "POST",
            "/kv/k/cas".into(),
            r#"{"value":"x"}"#.into(),
            400,
            "bad_request",
        ),
        (
            "POST",
            "/kv/mput".into(),
            r#"{"entries":[]}"#.into(),
            400,
            "bad_request",
        ),
        (
            "PUT",
            "/admin/read-policy".into(),
            r#"{"policy":"fast"}"#.into(),
            400,
            "bad_request",
        ),
        (
            "POST",
            "/cluster/transfer-leader".into(),
            r#"{"to":"nobody"}"#.into(),
            400,
            "bad_request",
        ),
        (
            "POST",
            "/raft/messages".into(),
            "garbage".into(),
            400,
            "bad_request",
        ),
        ("GET", "/kv/absent".into(), String::new(), 404, "not_found"),
        (
            "GET",
            "/no/such/route".into(),
            String::new(),
            404,
            "not_found",
        ),
        (
            "PATCH",
            "/kv/k".into(),
            String::new(),
            405,
            "method_not_allowed",
        ),
        (
            "POST",
            "/healthz".into(),
            String::new(),
            405,
            "method_not_allowed",
        ),
        ("GET", "/kv/mput".into(), String::new(), 404, "not_found"),
        (
            "PUT",
            format!("/kv/{long_key}"),
            r#"{"value":"x"}"#.into(),
            413,
            "too_large",
        ),
        ("PUT", "/kv/k".into(), big_value, 413, "too_large"),
        ("PUT", "/kv/k".into(), huge_body, 413, "too_large"),
        (
            "POST",
            "/cluster/members".into(),
            r#"{"id":"bad name","url":"http://x"}"#.into(),
            400,
            "bad_request",
        ),
        (
            "POST",
            "/cluster/members".into(),
            r#"{"id":"n4","url":"ftp://x"}"#.into(),
            400,
            "bad_request",
        ),
        (
            "POST",
            "/cluster/members".into(),
            r#"{"url":"http://x"}"#.into(),
            400,
            "bad_request",
        ),
        (
            "DELETE",
            "/cluster/members/node2".into(),
            String::new(),
            404,
            "not_found",
        ),
    ];
    for (method, path, body, status, code) in cases {
        let (got_status, got) = call(s, method, &path, &body).await;
        let shown = &path[..path.len().min(40)];
        assert_eq!(
            (got_status, error_code(&got)),
            (status, code),
            "{method} {shown}: {got}"
        );
        assert!(
            got["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty())
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operations_routes_answer() {
    let node = single_node().await;
    let s = &node.state;
    assert_eq!(
        call(s, "GET", "/healthz", "").await,
        (200, json!({"ok": true}))
    );
    assert_eq!(call(s, "GET", "/readyz", "").await.0, 200);
    let (_, status) = call(s, "GET", "/status", "").await;
    assert_eq!(
        (&status["id"], &status["role"], &status["leader"]),
        (&json!("node1"), &json!("leader"), &json!("node1"))
    );
    let (_, members) = call(s, "GET", "/cluster/members", "").await;
    assert_eq!(members["members"][0]["id"], "node1");
    let (status, body) = call(s, "PUT", "/admin/read-policy", r#"{"policy":"stale"}"#).await;
    assert_eq!((status, &body["policy"]), (200, &json!("stale")));
    assert_eq!(s.read_policy(), ReadPolicy::Stale);
    call(s, "PUT", "/kv/x", r#"{"value":"1"}"#).await;
    let (status, body) = call(s, "POST", "/admin/snapshot", "").await;
    assert_eq!((status, &body["taken"]), (200, &json!(true)), "{body}");
    // Answered once the background write is durable and the core knows it.
    let (_, status) = call(s, "GET", "/status", "").await;
    assert_eq!(
        status["snapshot_index"], body["snapshot_index"],
        "{status} {body}"
    );
    let response = warp::test::request()
        .path("/metrics")
        .reply(&routes(s.clone()))
        .await;
    let text = String::from_utf8_lossy(response.body());
    assert!(text.contains("kv_raft_role 2"), "{text}");
    assert!(text.contains("kv_http_request_duration_seconds_count{route=\"kv_put\"}"));
}

/// Issue 12: over `--quota-bytes`, writes that add data get 507
/// quota_exceeded and nothing is applied; deletes and reads go on, and once
/// deletes bring the store under the quota, writes are accepted again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_that_add_data_over_the_quota_get_507_while_deletes_and_reads_go_on() {
    let node = single_node_with_quota(20).await;
    let s = &node.state;
    let (status, body) = call(s, "PUT", "/kv/big", r#"{"value":"0123456789abcdefghij"}"#).await;
    assert_eq!(status, 200, "under the quota when it was proposed: {body}");
    let (_, status_body) = call(s, "GET", "/status", "").await;
    assert_eq!(
        (&status_body["live_bytes"], &status_body["quota_bytes"]),
        (&json!(23), &json!(20))
    );
    for (method, path, body) in [
        ("PUT", "/kv/more", r#"{"value":"x"}"#),
        (
            "POST",
            "/kv/mput",
            r#"{"entries":[{"key":"m","value":"1"}]}"#,
        ),
        ("POST", "/kv/c/cas", r#"{"expected":null,"value":"1"}"#),
    ] {
        let (status, reply) = call(s, method, path, body).await;
        assert_eq!(
            (status, error_code(&reply)),
            (507, "quota_exceeded"),
            "{method} {path}: {reply}"
        );
    }
    assert_eq!(
        call(s, "GET", "/kv/more", "").await.0,
        404,
        "nothing applied"
    );
    assert_eq!(call(s, "GET", "/kv/big", "").await.0, 200, "reads go on");
    let (status, _) = call(
        s,
        "POST",
        "/kv/big/cas",
        r#"{"expected":"nope","value":null}"#,
    )
    .await;
    assert_eq!(status, 200, "a CAS that can only delete is not refused");
    let (status, reply) = call(s, "DELETE", "/kv/big", "").await;
    assert_eq!(status, 200, "deletes go on: {reply}");
    let (status, reply) = call(s, "PUT", "/kv/more", r#"{"value":"x"}"#).await;
    assert_eq!(status, 200, "under the quota again: {reply}");
    let response = warp::test::request()
        .path("/metrics")
        .reply(&routes(s.clone()))
        .await;
    let text = String::from_utf8_lossy(response.body());
    assert!(text.contains("kv_quota_refused_total 3"), "{text}");
    assert!(text.contains("kv_quota_bytes 20"), "{text}");
    assert!(text.contains("kv_live_bytes 5"), "{text}");
}

/// The peer streams' tasks share the driver's thread (`driver::runtime`):
/// under a steady load, a task there runs between every two turns of the
/// driver's loop. Without the yield at the end of each turn the loop ran
/// on while its channels had work, and under the 10M-key preload the
/// peers heard nothing for an election timeout (BENCHMARKS.md, stop 29).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_on_the_drivers_thread_runs_between_every_two_turns() {
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    let node = single_node().await;
    let metrics = node.state.metrics.clone();
    let stop = Arc::new(AtomicBool::new(false));
    let widest = Arc::new(AtomicU64::new(0));
    let probe = {
        let (metrics, stop, widest) = (metrics.clone(), stop.clone(), widest.clone());
        node.state.driver.runtime().spawn(async move {
            let mut last = metrics.driver_turns.get();
            let mut polls = 0u64;
            while !stop.load(Ordering::Relaxed) {
                tokio::task::yield_now().await;
                let now = metrics.driver_turns.get();
                widest.fetch_max(now - last, Ordering::Relaxed);
                last = now;
                polls += 1;
            }
            polls
        })
    };
    let turns_before = metrics.driver_turns.get();
    let writers: Vec<_> = (0..32)
        .map(|w| {
            let state = node.state.clone();
            tokio::spawn(async move {
                for i in 0..60 {
                    let body = r#"{"value":"v"}"#;
                    let (status, _) = call(&state, "PUT", &format!("/kv/w{w}-{i}"), body).await;
                    assert_eq!(status, 200);
                }
            })
        })
        .collect();
    for writer in writers {
        writer.await.unwrap();
    }
    stop.store(true, Ordering::Relaxed);
    let polls = probe.await.unwrap();
    let turns = metrics.driver_turns.get() - turns_before;
    assert!(turns >= 10, "the writes took {turns} turns");
    assert!(
        polls >= turns / 2,
        "the probe ran {polls} times in {turns} turns"
    );
    assert!(
        widest.load(Ordering::Relaxed) <= 2,
        "up to {} turns ran back to back without the probe",
        widest.load(Ordering::Relaxed)
    );
}

/// `--spin-wait-us`: a lone write's turn is light, so the driver polls
/// after it (the poll ends with the write's acknowledgement, its budget,
/// or a busy CPU, and counts its time in every case); with a zero budget
/// it never polls.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_driver_polls_after_a_lone_write_unless_its_budget_is_zero() {
    for (budget, polls) in [(SPIN_WAIT, true), (Duration::ZERO, false)] {
        let node = single_node_with(QUOTA_BYTES, budget).await;
        let metrics = node.state.metrics.clone();
        for i in 0..20 {
            let (status, _) =
                call(&node.state, "PUT", &format!("/kv/k{i}"), r#"{"value":"v"}"#).await;
            assert_eq!(status, 200);
        }
        assert_eq!(
            metrics.driver_poll_seconds.get() > 0.0,
            polls,
            "budget {budget:?}: polled {} s",
            metrics.driver_poll_seconds.get()
        );
        if !polls {
            assert_eq!(metrics.driver_poll_hits.get(), 0);
            assert_eq!(metrics.driver_poll_ran_out.get(), 0);
        }
    }
}

#[tokio::test]
async fn a_write_that_is_never_applied_times_out_with_504() {
    let (driver, _rx) = DriverHandle::detached(Duration::from_millis(50), 8);
    let (status, body) = call(
        &app_state(driver, Arc::default()),
        "PUT",
        "/kv/k",
        r#"{"value":"x"}"#,
    )
    .await;
    assert_eq!((status, error_code(&body)), (504, "timeout"));
}

#[tokio::test]
async fn requests_to_a_stopped_or_overloaded_driver_get_503() {
    let (driver, rx) = DriverHandle::detached(Duration::from_millis(50), 1);
    let state = app_state(driver, Arc::default());
    // The queue holds one request; the first write waits there (and times
    // out as an unknown outcome), the second finds the queue full.
    let first = call(&state, "PUT", "/kv/k", r#"{"value":"x"}"#);
    let second = async {
        tokio::time::sleep(Duration::from_millis(10)).await;
        call(&state, "PUT", "/kv/k", r#"{"value":"x"}"#).await
    };
    let ((s1, b1), (s2, b2)) = tokio::join!(first, second);
    assert_eq!((s1, error_code(&b1)), (504, "timeout"));
    assert_eq!((s2, error_code(&b2)), (503, "unavailable"));
    drop(rx);
    let (status, body) = call(&state, "GET", "/kv/k", "").await;
    assert_eq!((status, error_code(&body)), (503, "unavailable"));
    assert_eq!(call(&state, "GET", "/readyz", "").await.0, 503);
}

mod members;
