//! Forwarding leader-only cluster operations (membership changes, leader
//! transfer) from a follower to the leader, over the client API.
//!
//! The forwarded request carries `?forwarded=1`; a node receiving it that
//! is not the leader (leadership moved meanwhile) answers `503` instead of
//! forwarding again, so a request never travels in circles.

use crate::driver::NodeStatus;
use crate::http::{ApiError, AppState};
use raft_core::Role;
use std::time::Duration;
use warp::http::{Method, Response, StatusCode, header};

/// A forwarded change may wait for a learner to catch up and for two
/// proposals to apply: room for all of that.
const FORWARD_TIMEOUT: Duration = Duration::from_secs(30);

/// Where an operation runs.
pub enum Target {
    /// Here: this node leads (its status as of the check).
    Local(NodeStatus),
    /// At the leader, at this base URL.
    Leader(String),
}

fn forwarded(query: &str) -> bool {
    form_urlencoded::parse(query.as_bytes()).any(|(k, v)| k == "forwarded" && v == "1")
}

/// Decides where an operation that only the leader can run goes.
pub async fn target(state: &AppState, query: &str) -> Result<Target, ApiError> {
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

/// Sends the operation to the leader at `base` through the node's peer
/// client (its TLS setup), with the caller's own `Authorization` header:
/// the leader checks the caller's rights as if it had been asked itself,
/// and a follower never lends its own credentials. The leader's reply is
/// handed back unchanged. A request that could not be sent is a `503`;
/// one that was sent but got no reply has an unknown outcome (`504`).
pub async fn send(
    state: &AppState,
    base: &str,
    method: Method,
    path: &str,
    body: &[u8],
    authorization: Option<&str>,
) -> Result<Response<Vec<u8>>, ApiError> {
    let url = format!("{base}{path}?forwarded=1");
    let method = reqwest::Method::from_bytes(method.as_str().as_bytes())
        .map_err(|e| ApiError::BadRequest(e.to_string()))?;
    let authorization = authorization
        .map(|value| {
            let mut value = reqwest::header::HeaderValue::from_str(value).map_err(|_| {
                ApiError::BadRequest("the Authorization header is not valid".into())
            })?;
            value.set_sensitive(true);
            Ok::<_, ApiError>(value)
        })
        .transpose()?;
    let (status, bytes) = state
        .peer_client
        .request(
            method,
            &url,
            authorization.as_ref(),
            "application/json",
            body.to_vec(),
            FORWARD_TIMEOUT,
        )
        .await
        .map_err(|e| {
            if e.is_connect() {
                ApiError::Unavailable(format!("cannot reach the leader at {base}: {e}"))
            } else {
                ApiError::Timeout(format!("no reply from the leader at {base}: {e}"))
            }
        })?;
    let status = StatusCode::from_u16(status.as_u16()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut response = Response::new(bytes.to_vec());
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    Ok(response)
}
