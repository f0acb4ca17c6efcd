//! The membership routes on a single-node cluster: adding a learner (no
//! process behind it, which a learner never needs for quorum), listing,
//! idempotent repeats, refusals and removal.

use super::{call, error_code, single_node};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_learner_is_added_listed_and_removed() {
    let node = single_node().await;
    let s = &node.state;
    let add = r#"{"id":"node2","url":"http://127.0.0.1:9/","voter":false}"#;
    let (status, body) = call(s, "POST", "/cluster/members", add).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body,
        json!({"id": "node2", "url": "http://127.0.0.1:9", "voter": false, "changed": true})
    );
    let (_, list) = call(s, "GET", "/cluster/members", "").await;
    assert_eq!(
        list["members"],
        json!([
            {"id": "node1", "url": "http://127.0.0.1:1", "voter": true},
            {"id": "node2", "url": "http://127.0.0.1:9", "voter": false},
        ])
    );
    let (_, status_body) = call(s, "GET", "/status", "").await;
    assert_eq!(status_body["learners"], json!(["node2"]));

    // The same request again changes nothing; a voter asked to be a voter
    // neither.
    let (status, body) = call(s, "POST", "/cluster/members", add).await;
    assert_eq!((status, &body["changed"]), (200, &json!(false)), "{body}");
    let (status, body) = call(
        s,
        "POST",
        "/cluster/members",
        r#"{"id":"node1","voter":true}"#,
    )
    .await;
    assert_eq!((status, &body["changed"]), (200, &json!(false)), "{body}");

    let (status, body) = call(s, "DELETE", "/cluster/members/node2", "").await;
    assert_eq!((status, &body), (200, &json!({"removed": "node2"})));
    let (_, list) = call(s, "GET", "/cluster/members", "").await;
    assert_eq!(list["members"].as_array().unwrap().len(), 1, "{list}");
    let (status, body) = call(s, "DELETE", "/cluster/members/node2", "").await;
    assert_eq!((status, error_code(&body)), (404, "not_found"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_that_cannot_be_made_are_refused_with_their_codes() {
    let node = single_node().await;
    let s = &node.state;
    // The last voter cannot go: raft-core refuses, nothing is proposed.
    let (status, body) = call(s, "DELETE", "/cluster/members/node1", "").await;
    assert_eq!((status, error_code(&body)), (400, "bad_request"), "{body}");
    // Demoting a voter by a repeated add is refused.
    let (status, body) = call(
        s,
        "POST",
        "/cluster/members",
        r#"{"id":"node1","voter":false}"#,
    )
    .await;
    assert_eq!((status, error_code(&body)), (400, "bad_request"), "{body}");
    // A new node needs a URL.
    let (status, body) = call(s, "POST", "/cluster/members", r#"{"id":"node3"}"#).await;
    assert_eq!((status, error_code(&body)), (400, "bad_request"), "{body}");
    // The leader transfers to itself without a request elsewhere.
    let (status, body) = call(s, "POST", "/cluster/transfer-leader", r#"{"to":"node1"}"#).await;
    assert_eq!(status, 200, "{body}");
}
