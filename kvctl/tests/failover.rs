//! Trying the endpoints in order: which failures move on to the next node,
//! which stop, and the exit codes when nothing answers.

mod common;

use common::{FakeServer, closed_endpoint, kvctl, run};
use std::process::Command;
use std::time::Duration;

const UNAVAILABLE: &str = r#"{"error": {"code": "unavailable", "message": "no leader is known"}}"#;

#[test]
fn a_refused_connection_and_a_503_move_on_to_the_next_endpoint() {
    let dead = closed_endpoint();
    let no_leader = FakeServer::canned(503, UNAVAILABLE);
    let healthy = FakeServer::canned(200, r#"{"revision": 9, "prev": null}"#);
    let run = kvctl(&[&dead, &no_leader.url, &healthy.url], &["put", "k", "v"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(no_leader.only_request().path, "/kv/k");
    assert_eq!(healthy.only_request().path, "/kv/k");
}

#[test]
fn no_reachable_endpoint_exits_3_and_names_each_endpoint() {
    let (first, second) = (closed_endpoint(), closed_endpoint());
    let run = kvctl(&[&first, &second], &["get", "k"]);
    assert_eq!(run.code, 3, "{run:?}");
    assert!(run.stderr.starts_with("no endpoint reachable"), "{run:?}");
    assert!(
        run.stderr.contains(&first) && run.stderr.contains(&second),
        "{run:?}"
    );
}

#[test]
fn when_every_node_answers_503_the_servers_error_is_printed_with_exit_1() {
    let (a, b) = (
        FakeServer::canned(503, UNAVAILABLE),
        FakeServer::canned(503, UNAVAILABLE),
    );
    let run = kvctl(&[&a.url, &b.url], &["put", "k", "v"]);
    assert_eq!(run.code, 1, "{run:?}");
    assert_eq!(run.stderr, "unavailable: no leader is known\n");
    assert_eq!((a.requests().len(), b.requests().len()), (1, 1));
}

#[test]
fn a_definite_error_is_not_retried_on_another_endpoint() {
    let bad = FakeServer::canned(
        400,
        r#"{"error": {"code": "bad_request", "message": "nope"}}"#,
    );
    let other = FakeServer::canned(200, r#"{"revision": 1, "prev": null}"#);
    let run = kvctl(&[&bad.url, &other.url], &["put", "k", "v"]);
    assert_eq!(run.code, 1, "{run:?}");
    assert_eq!(run.stderr, "bad_request: nope\n");
    assert!(other.requests().is_empty());
}

fn slow_server() -> FakeServer {
    FakeServer::start(|_| {
        std::thread::sleep(Duration::from_millis(1500));
        (200, r#"{"revision": 1, "prev": null}"#.into())
    })
}

#[test]
fn a_write_that_times_out_without_dedup_ids_is_an_unknown_outcome_and_not_resent() {
    let slow = slow_server();
    let other = FakeServer::canned(200, r#"{"revision": 2, "prev": null}"#);
    let run = kvctl(
        &[&slow.url, &other.url],
        &["--timeout", "300ms", "put", "k", "v"],
    );
    assert_eq!(run.code, 1, "{run:?}");
    assert!(run.stderr.starts_with("outcome unknown"), "{run:?}");
    assert!(other.requests().is_empty(), "the write was sent twice");
}

#[test]
fn a_write_with_dedup_ids_is_resent_to_the_next_endpoint_after_a_timeout() {
    let slow = slow_server();
    let other = FakeServer::canned(200, r#"{"revision": 2, "prev": null}"#);
    let args = [
        "--timeout",
        "300ms",
        "put",
        "k",
        "v",
        "--client-id",
        "c",
        "--seq",
        "1",
    ];
    let run = kvctl(&[&slow.url, &other.url], &args);
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(other.only_request().body, slow.only_request().body);
}

#[test]
fn a_read_is_resent_to_the_next_endpoint_after_a_timeout() {
    let slow = slow_server();
    let other = FakeServer::canned(200, r#"{"key": "k", "value": "v", "revision": 1}"#);
    let run = kvctl(&[&slow.url, &other.url], &["--timeout", "0.3", "get", "k"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(run.stdout, "v\n");
}

#[test]
fn endpoints_come_from_kvctl_endpoints_and_may_omit_the_scheme() {
    let server = FakeServer::canned(200, r#"{"key": "k", "value": "v", "revision": 1}"#);
    let bare = server.url.trim_start_matches("http://");
    let dead = closed_endpoint();
    let run = run(Command::new(env!("CARGO_BIN_EXE_kvctl"))
        .env("KVCTL_ENDPOINTS", format!("{dead},{bare}/"))
        .args(["get", "k"]));
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(server.only_request().path, "/kv/k");
}

#[test]
fn a_non_json_error_body_is_shown_with_its_http_status() {
    let proxy = FakeServer::canned(502, "bad gateway");
    let run = kvctl(&[&proxy.url], &["get", "k"]);
    assert_eq!(run.code, 1, "{run:?}");
    assert_eq!(run.stderr, "http_502: bad gateway\n");
}

#[test]
fn help_documents_the_exit_codes() {
    let run = kvctl(&[], &["--help"]);
    assert_eq!(run.code, 0, "{run:?}");
    for line in [
        "Exit codes:",
        "3  no endpoint could be reached",
        "4  `cas` and `txn`: the comparison failed",
    ] {
        assert!(
            run.stdout.contains(line),
            "{line:?} missing from {}",
            run.stdout
        );
    }
}
