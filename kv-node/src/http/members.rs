//! Membership routes (`/cluster/members`) and the leader-only cluster
//! operations, which a follower forwards to the leader (`forward.rs`).
//!
//! A change runs on the leader in two proposals: first the new address
//! goes into the replicated address book (so that every node, and every
//! later joiner, can reach the member), then the `ConfChange`. raft-core
//! allows one change in flight; a second gets `409 change_in_progress`.

use super::{ApiError, AppState, Reply, json_response, parse_json};
use crate::driver::NodeStatus;
use crate::ids::{check_name, node_id_of};
use crate::peer::forward::{self, Target};
use raft_core::{ConfChange, ConfChangeStep, NodeId};
use serde::Deserialize;
use serde_json::json;
use std::time::{Duration, Instant};
use warp::http::{Method, StatusCode};

/// How long a promotion waits for a learner to catch up with the leader.
const CATCH_UP_WAIT: Duration = Duration::from_secs(10);
/// How far (in entries) a learner may trail the commit index to be promoted.
const CATCH_UP_SLACK: u64 = 16;

pub(super) async fn list(state: &AppState) -> Reply {
    let NodeStatus {
        voters, learners, ..
    } = state.driver.status().await?;
    let directory = state.driver.directory();
    let members: Vec<_> = voters
        .iter()
        .map(|id| (*id, true))
        .chain(learners.iter().map(|id| (*id, false)))
        .map(|(id, voter)| {
            json!({"id": directory.name_of(id), "url": directory.url_of(id), "voter": voter})
        })
        .collect();
    Ok(json_response(StatusCode::OK, &json!({"members": members})))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AddBody {
    id: String,
    /// May be left out for a node that is a member already (promotion).
    url: Option<String>,
    #[serde(default)]
    voter: bool,
}

/// `POST /cluster/members`: adds a learner, promotes a learner, or adds a
/// new node as a voter (learner first, promoted once caught up).
pub(super) async fn add(
    state: &AppState,
    query: &str,
    body: &[u8],
    authorization: Option<&str>,
) -> Reply {
    let request: AddBody = parse_json(body)?;
    check_name(&request.id).map_err(|e| ApiError::BadRequest(e.to_string()))?;
    // Every member is reached over the scheme of this node's peer traffic.
    let scheme = state.peer_client.scheme();
    if let Some(url) = &request.url
        && (!url.starts_with(&format!("{scheme}://")) || url.len() > 1024)
    {
        return Err(ApiError::BadRequest(format!(
            "url must start with {scheme}:// (the scheme of this cluster's peer traffic) and be at most 1024 bytes, got {url:?}"
        )));
    }
    let status = match forward::target(state, query).await? {
        Target::Leader(url) => {
            return forward::send(
                state,
                &url,
                Method::POST,
                "/cluster/members",
                body,
                authorization,
            )
            .await;
        }
        Target::Local(status) => status,
    };
    let id = node_id_of(&request.id);
    let is_voter = status.voters.contains(&id);
    let is_learner = status.learners.contains(&id);
    let known_url = state.driver.directory().url_of(id);
    let url = match (&request.url, &known_url) {
        (Some(url), _) => url.trim_end_matches('/').to_string(),
        (None, Some(url)) if is_voter || is_learner => url.clone(),
        _ => {
            return Err(ApiError::BadRequest(format!(
                "{} is not a member; its url is required",
                request.id
            )));
        }
    };
    // A member's address is where every node sends its raft traffic, with
    // the peer credential for that member. Changing it through the client
    // API would let a client (even an admin) redirect that traffic to
    // itself, so it is fixed while the node is a member: remove the node
    // and add it again to move it. The same URL again is a harmless retry.
    // (`voters` includes the outgoing half of a joint configuration.)
    if (is_voter || is_learner) && known_url.as_deref() != Some(url.as_str()) {
        return Err(ApiError::MemberUrlConflict(format!(
            "{} is a member at {}; its url cannot be changed while it is a member \
             (remove it and add it again at the new url)",
            request.id,
            known_url.as_deref().unwrap_or("an unknown url"),
        )));
    }
    if is_voter && !request.voter {
        // A joiner restarted with --join must never demote itself by a
        // repeated request; demotion is a removal and a new add.
        return Err(ApiError::BadRequest(format!(
            "{} is a voter; remove it to make it a learner again",
            request.id
        )));
    }
    if known_url.as_deref() != Some(url.as_str()) {
        state.driver.record_address(&request.id, &url).await?;
    }
    let mut changed = false;
    if !is_voter && !is_learner {
        add_step(state, ConfChangeStep::AddLearner(id)).await?;
        changed = true;
    }
    if request.voter && !is_voter {
        wait_caught_up(state, id).await?;
        add_step(state, ConfChangeStep::AddVoter(id)).await?;
        changed = true;
    }
    Ok(json_response(
        StatusCode::OK,
        &json!({"id": request.id, "url": url, "voter": request.voter, "changed": changed}),
    ))
}

async fn add_step(state: &AppState, step: ConfChangeStep) -> Result<u64, ApiError> {
    Ok(state
        .driver
        .change_membership(ConfChange::Enter(vec![step]))
        .await?)
}

/// Waits until learner `id` is within [`CATCH_UP_SLACK`] entries of the
/// commit index, as the leader sees it. A learner that does not catch up
/// in [`CATCH_UP_WAIT`] stays a learner: `503`, promote it later.
async fn wait_caught_up(state: &AppState, id: NodeId) -> Result<(), ApiError> {
    let started = Instant::now();
    loop {
        let status = state.driver.status().await?;
        let matched = status.match_index.get(&id).copied().unwrap_or(0);
        if status.leader != Some(status.id) {
            return Err(ApiError::Unavailable(
                "leadership moved while waiting for the learner; retry".into(),
            ));
        }
        if matched + CATCH_UP_SLACK >= status.commit_index {
            return Ok(());
        }
        if started.elapsed() > CATCH_UP_WAIT {
            return Err(ApiError::Unavailable(format!(
                "learner {} has not caught up (match index {matched}, commit index {}) \
                 within {} s; it stays a learner, promote it later",
                state.driver.directory().name_of(id),
                status.commit_index,
                CATCH_UP_WAIT.as_secs()
            )));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `DELETE /cluster/members/{id}`.
pub(super) async fn remove(
    state: &AppState,
    name: &str,
    query: &str,
    authorization: Option<&str>,
) -> Reply {
    let status = match forward::target(state, query).await? {
        Target::Leader(url) => {
            let path = format!("/cluster/members/{name}");
            return forward::send(state, &url, Method::DELETE, &path, &[], authorization).await;
        }
        Target::Local(status) => status,
    };
    let id = node_id_of(name);
    if !status.voters.contains(&id) && !status.learners.contains(&id) {
        return Err(ApiError::NotFound(format!("{name} is not a member")));
    }
    add_step(state, ConfChangeStep::Remove(id)).await?;
    Ok(json_response(StatusCode::OK, &json!({"removed": name})))
}

/// `POST /cluster/transfer-leader`, forwarded to the leader from a follower.
pub(super) async fn transfer_leader(
    state: &AppState,
    query: &str,
    body: &[u8],
    authorization: Option<&str>,
) -> Reply {
    match forward::target(state, query).await? {
        Target::Leader(url) => {
            let path = "/cluster/transfer-leader";
            forward::send(state, &url, Method::POST, path, body, authorization).await
        }
        Target::Local(_) => super::ops::transfer_leader(state, body).await,
    }
}
