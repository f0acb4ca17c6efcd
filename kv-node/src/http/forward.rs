//! Forwarding leader-only cluster operations (membership changes, leader
//! transfer) from a follower to the leader, over the client API.
//!
//! The forwarded request carries `?forwarded=1`; a node receiving it that
//! is not the leader (leadership moved meanwhile) answers `503` instead of
//! forwarding again, so a request never travels in circles.

use super::ApiError;
use super::AppState;
use crate::driver::NodeStatus;
use raft_core::Role;
use std::sync::OnceLock;
use std::time::Duration;
use warp::http::{Method, Response, StatusCode, header};

/// A forwarded change may wait for a learner to catch up and for two
/// proposals to apply: room for all of that.
const FORWARD_TIMEOUT: Duration = Duration::from_secs(30);

/// Where an operation runs.
pub(super) enum Target {
    /// Here: this node leads (its status as of the check).
    Local(NodeStatus),
    /// At the leader, at this base URL.
    Leader(String),
}

fn forwarded(query: &str) -> bool {
    form_urlencoded::parse(query.as_bytes()).any(|(k, v)| k == "forwarded" && v == "1")
}

/// Decides where an operation that only the leader can run goes.
pub(super) async fn target(state: &AppState, query: &str) -> Result<Target, ApiError> {
    let status = state.driver.status().await?;
    if status.role == Role::Leader {
        return Ok(Target::Local(status));
    }
    let Some(leader) = status.leader.filter(|l| *l != status.id) else {
        return Err(ApiError::Unavailable("no leader is known; retry".into()));
    };
    if forwarded(query) {
        return Err(ApiError::Unavailable(
            "forwarded to this node as the leader, but it no longer leads; retry".into(),
        ));
    }
    match state.driver.directory().url_of(leader) {
        Some(url) => Ok(Target::Leader(url)),
        None => Err(ApiError::Unavailable(format!(
            "the leader {leader} has no known address; retry"
        ))),
    }
}

fn client() -> &'static reqwest::Client {
    static CLIENT: OnceLock<reqwest::Client> = OnceLock::new();
    CLIENT.get_or_init(|| {
        reqwest::Client::builder()
            .no_proxy()
            .connect_timeout(Duration::from_millis(500))
            .timeout(FORWARD_TIMEOUT)
            .build()
            .unwrap_or_default()
    })
}

/// Sends the operation to the leader at `base` and hands its reply back
/// unchanged. A request that could not be sent is a `503`; one that was
/// sent but got no reply has an unknown outcome (`504`).
pub(super) async fn send(
    base: &str,
    method: Method,
    path: &str,
    body: &[u8],
) -> Result<Response<Vec<u8>>, ApiError> {
    let url = format!("{base}{path}?forwarded=1");
    let method = reqwest::Method::from_bytes(method.as_str().as_bytes())
        .map_err(|e| ApiError::BadRequest(e.to_string()))?;
    let mut request = client().request(method, &url);
    if !body.is_empty() {
        request = request
            .header(header::CONTENT_TYPE.as_str(), "application/json")
            .body(body.to_vec());
    }
    let reply = request.send().await.map_err(|e| {
        if e.is_connect() {
            ApiError::Unavailable(format!("cannot reach the leader at {base}: {e}"))
        } else {
            ApiError::Timeout(format!("no reply from the leader at {base}: {e}"))
        }
    })?;
    let status =
        StatusCode::from_u16(reply.status().as_u16()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let bytes = reply
        .bytes()
        .await
        .map_err(|e| ApiError::Timeout(format!("the leader's reply was cut: {e}")))?;
    let mut response = Response::new(bytes.to_vec());
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    Ok(response)
}
