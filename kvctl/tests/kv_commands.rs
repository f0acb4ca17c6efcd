//! Request formation, output and exit codes of put, get, del, cas, scan and
//! mput, against a fake server.

mod common;

use common::{FakeServer, kvctl};
use serde_json::json;

#[test]
fn put_sends_the_value_and_dedup_ids_to_the_encoded_key() {
    let server = FakeServer::canned(200, r#"{"revision": 42, "prev": "old"}"#);
    let run = kvctl(
        &[&server.url],
        &["put", "a/b c", "-1", "--client-id", "c1", "--seq", "7"],
    );
    assert_eq!(run.code, 0, "{run:?}");
    let request = server.only_request();
    assert_eq!(request.method, "PUT");
    assert_eq!(request.path, "/kv/a%2Fb%20c");
    assert_eq!(
        request.body,
        Some(json!({"value": "-1", "client_id": "c1", "seq": 7}))
    );
    assert_eq!(run.stdout, "OK revision=42 prev=\"old\"\n");
}

#[test]
fn put_with_a_client_id_but_no_seq_is_a_usage_error() {
    let run = kvctl(
        &["http://127.0.0.1:1"],
        &["put", "k", "v", "--client-id", "c1"],
    );
    assert_eq!(run.code, 2, "{run:?}");
}

#[test]
fn get_asks_for_the_consistency_and_prints_the_bare_value() {
    let server = FakeServer::canned(200, r#"{"key": "k", "value": "v 1", "revision": 3}"#);
    let run = kvctl(&[&server.url], &["get", "k", "--consistency", "stale"]);
    assert_eq!(run.code, 0, "{run:?}");
    let request = server.only_request();
    assert_eq!(
        (request.method.as_str(), request.path.as_str()),
        ("GET", "/kv/k?consistency=stale")
    );
    assert_eq!(request.body, None);
    assert_eq!(run.stdout, "v 1\n");
}

#[test]
fn get_with_json_output_prints_the_servers_json() {
    let body = json!({"key": "k", "value": "v", "revision": 3});
    let server = FakeServer::canned(200, &body.to_string());
    let run = kvctl(&[&server.url], &["-o", "json", "get", "k"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(run.json(), body);
    assert_eq!(server.only_request().path, "/kv/k");
}

#[test]
fn get_of_a_missing_key_prints_code_and_message_and_exits_1() {
    let server = FakeServer::canned(
        404,
        r#"{"error": {"code": "not_found", "message": "key \"k\" not found"}}"#,
    );
    let run = kvctl(&[&server.url], &["get", "k"]);
    assert_eq!(run.code, 1, "{run:?}");
    assert_eq!(run.stderr, "not_found: key \"k\" not found\n");
    assert_eq!(run.stdout, "");
}

#[test]
fn a_server_error_under_json_output_prints_the_error_body_too() {
    let error = json!({"error": {"code": "stale_seq", "message": "seq 1 is old"}});
    let server = FakeServer::canned(409, &error.to_string());
    let run = kvctl(
        &[&server.url],
        &[
            "--output",
            "json",
            "del",
            "k",
            "--client-id",
            "c",
            "--seq",
            "1",
        ],
    );
    assert_eq!(run.code, 1, "{run:?}");
    assert_eq!(run.json(), error);
    assert!(run.stderr.starts_with("stale_seq: seq 1 is old"), "{run:?}");
}

#[test]
fn del_without_dedup_ids_sends_no_body() {
    let server = FakeServer::canned(200, r#"{"revision": 43, "prev": null}"#);
    let run = kvctl(&[&server.url], &["del", "k"]);
    assert_eq!(run.code, 0, "{run:?}");
    let request = server.only_request();
    assert_eq!(
        (request.method.as_str(), request.path.as_str()),
        ("DELETE", "/kv/k")
    );
    assert_eq!(request.body, None);
    assert_eq!(run.stdout, "OK revision=43 prev=-\n");
}

#[test]
fn cas_from_an_expected_value_to_a_new_one_succeeds_with_exit_0() {
    let server = FakeServer::canned(
        200,
        r#"{"succeeded": true, "revision": 44, "current": "new"}"#,
    );
    let run = kvctl(
        &[&server.url],
        &["cas", "k", "--expected", "old", "--value", "new"],
    );
    assert_eq!(run.code, 0, "{run:?}");
    let request = server.only_request();
    assert_eq!(
        (request.method.as_str(), request.path.as_str()),
        ("POST", "/kv/k/cas")
    );
    assert_eq!(
        request.body,
        Some(json!({"expected": "old", "value": "new"}))
    );
    assert_eq!(run.stdout, "OK revision=44 current=\"new\"\n");
}

#[test]
fn cas_absent_and_delete_send_nulls() {
    let server = FakeServer::canned(
        200,
        r#"{"succeeded": true, "revision": 5, "current": null}"#,
    );
    let run = kvctl(
        &[&server.url],
        &[
            "cas",
            "k",
            "--absent",
            "--delete",
            "--client-id",
            "c",
            "--seq",
            "2",
        ],
    );
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(
        server.only_request().body,
        Some(json!({"expected": null, "value": null, "client_id": "c", "seq": 2}))
    );
}

#[test]
fn cas_whose_comparison_fails_prints_the_current_value_and_exits_4() {
    let server = FakeServer::canned(
        200,
        r#"{"succeeded": false, "revision": 44, "current": "actual"}"#,
    );
    let run = kvctl(
        &[&server.url],
        &["cas", "k", "--expected", "old", "--value", "new"],
    );
    assert_eq!(run.code, 4, "{run:?}");
    assert_eq!(run.stdout, "FAILED revision=44 current=\"actual\"\n");
    let run = kvctl(
        &[&server.url],
        &["-o", "json", "cas", "k", "--absent", "--value", "x"],
    );
    assert_eq!(run.code, 4, "{run:?}");
    assert_eq!(run.json()["current"], "actual");
}

#[test]
fn cas_needs_exactly_one_comparison_and_one_new_state() {
    for args in [
        &["cas", "k", "--value", "v"][..],
        &["cas", "k", "--absent"],
        &["cas", "k", "--absent", "--expected", "a", "--value", "v"],
        &["cas", "k", "--absent", "--value", "v", "--delete"],
    ] {
        let run = kvctl(&["http://127.0.0.1:1"], args);
        assert_eq!(run.code, 2, "{args:?}: {run:?}");
    }
}

#[test]
fn scan_sends_prefix_and_limit_and_prints_a_table() {
    let server = FakeServer::canned(
        200,
        r#"{"entries": [{"key": "a1", "value": "x", "revision": 3},
                        {"key": "a22", "value": "two\nlines", "revision": 14}], "more": true}"#,
    );
    let run = kvctl(&[&server.url], &["scan", "a b", "--limit", "2"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(server.only_request().path, "/kv?prefix=a%20b&limit=2");
    assert_eq!(
        run.stdout,
        "KEY  VALUE       REVISION\na1   x           3\na22  two\\nlines  14\n"
    );
    assert!(run.stderr.contains("more keys follow"), "{run:?}");
}

#[test]
fn scan_without_a_prefix_lists_everything() {
    let server = FakeServer::canned(200, r#"{"entries": [], "more": false}"#);
    let run = kvctl(&[&server.url], &["scan", "--consistency", "lease"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(server.only_request().path, "/kv?prefix=&consistency=lease");
    assert_eq!(run.stdout, "");
}

#[test]
fn mput_sends_every_entry_in_one_request() {
    let server = FakeServer::canned(200, r#"{"revision": 45}"#);
    let run = kvctl(&[&server.url], &["mput", "a=1", "b=x=y", "c="]);
    assert_eq!(run.code, 0, "{run:?}");
    let request = server.only_request();
    assert_eq!(
        (request.method.as_str(), request.path.as_str()),
        ("POST", "/kv/mput")
    );
    assert_eq!(
        request.body,
        Some(json!({"entries": [
            {"key": "a", "value": "1"},
            {"key": "b", "value": "x=y"},
            {"key": "c", "value": ""}
        ]}))
    );
    assert_eq!(run.stdout, "OK revision=45 keys=3\n");
}

#[test]
fn mput_of_an_entry_without_equals_is_a_usage_error() {
    let run = kvctl(&["http://127.0.0.1:1"], &["mput", "a=1", "b"]);
    assert_eq!(run.code, 2, "{run:?}");
    assert!(run.stderr.contains("KEY=VALUE"), "{run:?}");
}
