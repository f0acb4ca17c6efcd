//! member, status, transfer-leader, snapshot, read-policy and bench against
//! fake servers.

mod common;

use common::{FakeServer, closed_endpoint, kvctl};
use serde_json::json;

const MEMBERS: &str = r#"{"members": [
    {"id": "node1", "url": "http://127.0.0.1:8080", "voter": true},
    {"id": "node4", "url": "http://127.0.0.1:8083", "voter": false}]}"#;

fn status_body(id: &str, role: &str, leader: &str) -> String {
    json!({"id": id, "role": role, "term": 3, "leader": leader, "commit_index": 17,
           "last_applied": 16, "last_log_index": 17, "snapshot_index": 0,
           "members": ["node1", "node2"]})
    .to_string()
}

#[test]
fn member_list_prints_voters_and_learners() {
    let server = FakeServer::canned(200, MEMBERS);
    let run = kvctl(&[&server.url], &["member", "list"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(server.only_request().path, "/cluster/members");
    assert_eq!(
        run.stdout,
        "ID     URL                    ROLE\n\
         node1  http://127.0.0.1:8080  voter\n\
         node4  http://127.0.0.1:8083  learner\n"
    );
}

#[test]
fn member_add_as_learner_posts_voter_false() {
    let server = FakeServer::canned(200, "{}");
    let run = kvctl(
        &[&server.url],
        &["member", "add", "node4", "http://h:4", "--learner"],
    );
    assert_eq!(run.code, 0, "{run:?}");
    let request = server.only_request();
    assert_eq!(
        (request.method.as_str(), request.path.as_str()),
        ("POST", "/cluster/members")
    );
    assert_eq!(
        request.body,
        Some(json!({"id": "node4", "url": "http://h:4", "voter": false}))
    );
}

#[test]
fn member_add_answered_501_prints_the_servers_error() {
    let server = FakeServer::canned(
        501,
        r#"{"error": {"code": "not_implemented", "message": "membership changes over HTTP are not implemented yet"}}"#,
    );
    let run = kvctl(&[&server.url], &["member", "add", "node4", "http://h:4"]);
    assert_eq!(run.code, 1, "{run:?}");
    assert_eq!(
        run.stderr,
        "not_implemented: membership changes over HTTP are not implemented yet\n"
    );
    assert_eq!(server.only_request().body.unwrap()["voter"], true);
}

#[test]
fn member_remove_deletes_the_member_path() {
    let server = FakeServer::canned(200, "{}");
    let run = kvctl(&[&server.url], &["member", "remove", "node 3"]);
    assert_eq!(run.code, 0, "{run:?}");
    let request = server.only_request();
    assert_eq!(
        (request.method.as_str(), request.path.as_str()),
        ("DELETE", "/cluster/members/node%203")
    );
}

#[test]
fn member_promote_looks_up_the_learner_then_posts_it_as_a_voter() {
    let server = FakeServer::start(|request| match request.method.as_str() {
        "GET" => (200, MEMBERS.into()),
        _ => (200, "{}".into()),
    });
    let run = kvctl(&[&server.url], &["member", "promote", "node4"]);
    assert_eq!(run.code, 0, "{run:?}");
    let requests = server.requests();
    assert_eq!(requests.len(), 2, "{requests:?}");
    assert_eq!(
        (requests[0].method.as_str(), requests[0].path.as_str()),
        ("GET", "/cluster/members")
    );
    assert_eq!(
        (requests[1].method.as_str(), requests[1].path.as_str()),
        ("POST", "/cluster/members")
    );
    assert_eq!(
        requests[1].body,
        Some(json!({"id": "node4", "url": "http://127.0.0.1:8083", "voter": true}))
    );
}

#[test]
fn member_promote_of_a_stranger_fails_without_a_write() {
    let server = FakeServer::canned(200, MEMBERS);
    let run = kvctl(&[&server.url], &["member", "promote", "node9"]);
    assert_eq!(run.code, 1, "{run:?}");
    assert!(run.stderr.contains("node9 is not a member"), "{run:?}");
    assert_eq!(server.only_request().method, "GET");
}

#[test]
fn status_prints_a_row_per_endpoint_and_marks_the_unreachable() {
    let leader = FakeServer::canned(200, &status_body("node1", "leader", "node1"));
    let follower = FakeServer::canned(200, &status_body("node2", "follower", "node1"));
    let dead = closed_endpoint();
    let run = kvctl(&[&leader.url, &dead, &follower.url], &["status"]);
    assert_eq!(run.code, 0, "{run:?}");
    let lines: Vec<&str> = run.stdout.lines().collect();
    assert_eq!(lines.len(), 4, "{run:?}");
    let words = |line: &str| {
        line.split_whitespace()
            .map(str::to_string)
            .collect::<Vec<_>>()
    };
    assert_eq!(
        words(lines[0]),
        ["ID", "URL", "ROLE", "TERM", "COMMIT", "APPLIED", "LEADER"]
    );
    assert_eq!(
        words(lines[1]),
        ["node1", &leader.url, "leader", "3", "17", "16", "node1"]
    );
    assert_eq!(
        words(lines[2]),
        ["-", &dead, "UNREACHABLE", "-", "-", "-", "-"]
    );
    assert_eq!(
        words(lines[3]),
        ["node2", &follower.url, "follower", "3", "17", "16", "node1"]
    );
    assert!(
        run.stderr.contains(&format!("{dead}: unreachable")),
        "{run:?}"
    );
    assert_eq!(leader.only_request().path, "/status");
}

#[test]
fn status_as_json_gives_each_endpoints_reply_or_failure() {
    let node = FakeServer::canned(200, &status_body("node1", "leader", "node1"));
    let dead = closed_endpoint();
    let run = kvctl(&[&node.url, &dead], &["-o", "json", "status"]);
    assert_eq!(run.code, 0, "{run:?}");
    let all = run.json();
    assert_eq!(all[0]["endpoint"], node.url.as_str());
    assert_eq!(all[0]["reply"]["role"], "leader");
    assert_eq!(all[1]["endpoint"], dead.as_str());
    assert!(all[1]["unreachable"].is_string(), "{all}");
}

#[test]
fn status_with_no_reachable_node_exits_3() {
    let run = kvctl(&[&closed_endpoint(), &closed_endpoint()], &["status"]);
    assert_eq!(run.code, 3, "{run:?}");
}

#[test]
fn transfer_leader_is_sent_to_the_node_that_says_it_leads() {
    let follower = FakeServer::canned(200, &status_body("node1", "follower", "node2"));
    let leader = FakeServer::start(|request| match request.method.as_str() {
        "GET" => (200, status_body("node2", "leader", "node2")),
        _ => (200, r#"{"transferring_to": "node3"}"#.into()),
    });
    let run = kvctl(&[&follower.url, &leader.url], &["transfer-leader", "node3"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(follower.only_request().method, "GET");
    let requests = leader.requests();
    let post = requests
        .iter()
        .find(|r| r.method == "POST")
        .expect("a POST");
    assert_eq!(post.path, "/cluster/transfer-leader");
    assert_eq!(post.body, Some(json!({"to": "node3"})));
}

#[test]
fn snapshot_asks_every_endpoint() {
    let (a, b) = (
        FakeServer::canned(200, r#"{"taken": true, "snapshot_index": 40}"#),
        FakeServer::canned(200, r#"{"taken": false, "snapshot_index": 12}"#),
    );
    let run = kvctl(&[&a.url, &b.url], &["snapshot"]);
    assert_eq!(run.code, 0, "{run:?}");
    for server in [&a, &b] {
        let request = server.only_request();
        assert_eq!(
            (request.method.as_str(), request.path.as_str()),
            ("POST", "/admin/snapshot")
        );
    }
    assert!(
        run.stdout.contains("taken") && run.stdout.contains("40"),
        "{run:?}"
    );
}

#[test]
fn snapshot_with_one_node_down_exits_1() {
    let a = FakeServer::canned(200, r#"{"taken": true, "snapshot_index": 40}"#);
    let run = kvctl(&[&a.url, &closed_endpoint()], &["snapshot"]);
    assert_eq!(run.code, 1, "{run:?}");
    assert!(run.stdout.contains("UNREACHABLE"), "{run:?}");
}

#[test]
fn read_policy_sets_the_policy_on_every_endpoint_or_shows_it() {
    let server = FakeServer::canned(200, r#"{"policy": "stale"}"#);
    let run = kvctl(&[&server.url], &["read-policy", "stale"]);
    assert_eq!(run.code, 0, "{run:?}");
    let request = server.only_request();
    assert_eq!(
        (request.method.as_str(), request.path.as_str()),
        ("PUT", "/admin/read-policy")
    );
    assert_eq!(request.body, Some(json!({"policy": "stale"})));
    let run = kvctl(&[&server.url], &["read-policy"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(server.requests()[1].method, "GET");
    assert!(run.stdout.contains("stale"), "{run:?}");
    assert_eq!(kvctl(&[&server.url], &["read-policy", "eventual"]).code, 2);
}

#[test]
fn bench_runs_puts_and_gets_for_the_duration_and_reports_percentiles() {
    let server = FakeServer::start(|request| match request.method.as_str() {
        "PUT" => (200, r#"{"revision": 1, "prev": null}"#.into()),
        _ => (
            404,
            r#"{"error": {"code": "not_found", "message": "absent"}}"#.into(),
        ),
    });
    let args = [
        "-o",
        "json",
        "bench",
        "--workers",
        "2",
        "--duration",
        "300ms",
        "--keys",
        "10",
    ];
    let run = kvctl(&[&server.url], &args);
    assert_eq!(run.code, 0, "{run:?}");
    let summary = run.json();
    let ops = summary["ops"].as_u64().unwrap();
    assert!(
        ops > 0 && ops == server.requests().len() as u64,
        "{summary}"
    );
    assert!(summary["put"]["p99_ms"].as_f64().is_some(), "{summary}");
    assert!(
        server
            .requests()
            .iter()
            .all(|r| r.path.starts_with("/kv/bench%2F"))
    );
    let run = kvctl(
        &[&server.url],
        &["bench", "--duration", "100ms", "--workers", "1"],
    );
    assert_eq!(run.code, 0, "{run:?}");
    assert!(
        run.stdout.contains("ops/s") && run.stdout.contains("P99"),
        "{run:?}"
    );
}

#[test]
fn bench_against_nothing_reachable_exits_3() {
    let run = kvctl(&[&closed_endpoint()], &["bench", "--duration", "100ms"]);
    assert_eq!(run.code, 3, "{run:?}");
}
