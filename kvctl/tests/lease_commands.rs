//! Request formation, output and exit codes of the lease commands and of
//! `put --lease`, against a fake server.

mod common;

use common::{FakeServer, kvctl};
use serde_json::json;

#[test]
fn grant_sends_the_ttl_in_ms_and_prints_the_bare_id() {
    let server = FakeServer::canned(200, r#"{"id": 7, "ttl_ms": 10000}"#);
    let run = kvctl(&[&server.url], &["lease", "grant", "10s"]);
    assert_eq!(run.code, 0, "{run:?}");
    let request = server.only_request();
    assert_eq!(
        (request.method.as_str(), request.path.as_str()),
        ("POST", "/lease")
    );
    assert_eq!(request.body, Some(json!({"ttl_ms": 10000})));
    assert_eq!(run.stdout, "7\n");
}

#[test]
fn put_with_a_lease_sends_it_in_the_body() {
    let server = FakeServer::canned(200, r#"{"revision": 9, "prev": null}"#);
    let run = kvctl(&[&server.url], &["put", "svc/a", "up", "--lease", "7"]);
    assert_eq!(run.code, 0, "{run:?}");
    let request = server.only_request();
    assert_eq!(request.path, "/kv/svc%2Fa");
    assert_eq!(request.body, Some(json!({"value": "up", "lease": 7})));
}

#[test]
fn keepalive_once_revoke_get_and_list_use_their_routes() {
    let server = FakeServer::canned(200, r#"{"id": 7, "ttl_ms": 10000}"#);
    let run = kvctl(&[&server.url], &["lease", "keepalive", "7", "--once"]);
    assert_eq!(run.code, 0, "{run:?}");
    let request = server.only_request();
    assert_eq!(
        (request.method.as_str(), request.path.as_str()),
        ("POST", "/lease/7/keepalive")
    );
    assert_eq!(run.stdout, "kept alive id=7 ttl_ms=10000\n");

    let server = FakeServer::canned(200, r#"{"revision": 61, "deleted": 2}"#);
    let run = kvctl(&[&server.url], &["lease", "revoke", "7"]);
    assert_eq!(run.code, 0, "{run:?}");
    let request = server.only_request();
    assert_eq!(
        (request.method.as_str(), request.path.as_str()),
        ("DELETE", "/lease/7")
    );
    assert_eq!(run.stdout, "OK revision=61 deleted=2\n");

    let body = r#"{"id": 7, "ttl_ms": 10000, "remaining_ms": 8123, "keys": ["a", "b"]}"#;
    let server = FakeServer::canned(200, body);
    let run = kvctl(&[&server.url], &["lease", "get", "7"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(server.only_request().path, "/lease/7");
    assert_eq!(run.stdout, "id=7 ttl_ms=10000 remaining_ms=8123 keys=a,b\n");

    let body = r#"{"leases": [{"id": 7, "ttl_ms": 10000, "remaining_ms": 8123}]}"#;
    let server = FakeServer::canned(200, body);
    let run = kvctl(&[&server.url], &["-o", "json", "lease", "list"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(server.only_request().path, "/lease");
    assert_eq!(run.json()["leases"][0]["remaining_ms"], 8123);
}

#[test]
fn a_keepalive_of_a_gone_lease_exits_1_with_lease_not_found() {
    let body = r#"{"error": {"code": "lease_not_found", "message": "lease 7 is unknown"}}"#;
    let server = FakeServer::canned(404, body);
    let run = kvctl(&[&server.url], &["lease", "keepalive", "7"]);
    assert_eq!(run.code, 1, "{run:?}");
    assert!(run.stderr.contains("lease_not_found"), "{run:?}");
}

#[test]
fn a_bad_ttl_or_id_is_a_usage_error() {
    for args in [
        &["lease", "grant", "soon"][..],
        &["lease", "revoke", "x"],
        &["put", "k", "v", "--lease", "-1"],
    ] {
        let run = kvctl(&["http://127.0.0.1:1"], args);
        assert_eq!(run.code, 2, "{args:?}: {run:?}");
    }
}
