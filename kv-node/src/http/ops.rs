//! Operations routes: health, readiness, status, metrics, cluster and
//! admin, and the peer endpoint that receives raft messages.

use super::{ApiError, AppState, Reply, json_response, parse_json};
use crate::driver::is_ready;
use crate::settings::ReadPolicy;
use raft_core::Role;
use serde::Deserialize;
use serde_json::json;
use warp::http::{Response, StatusCode, header};

fn role_name(role: Role) -> &'static str {
    match role {
        Role::Leader => "leader",
        Role::Follower => "follower",
        Role::Candidate | Role::PreCandidate => "candidate",
        Role::Learner => "learner",
    }
}

pub(super) async fn readyz(state: &AppState) -> Reply {
    let status = state.driver.status().await?;
    if is_ready(&status) {
        Ok(json_response(StatusCode::OK, &json!({"ready": true})))
    } else if status.leader.is_none() {
        Err(ApiError::Unavailable("no leader is known".into()))
    } else {
        // Open to anyone (load balancers probe without a token): say why,
        // but not the indexes, which `/status` gives to readers.
        Err(ApiError::Unavailable(
            "catching up: this node has not applied all it knows is committed".into(),
        ))
    }
}

pub(super) async fn status(state: &AppState) -> Reply {
    let s = state.driver.status().await?;
    let directory = state.driver.directory();
    let names = |ids: &[raft_core::NodeId]| -> Vec<String> {
        ids.iter().map(|id| directory.name_of(*id)).collect()
    };
    let body = json!({
        "id": state.members.this.name,
        "role": role_name(s.role),
        "term": s.term,
        "leader": s.leader.map(|l| directory.name_of(l)),
        "commit_index": s.commit_index,
        "last_applied": s.last_applied,
        "last_log_index": s.last_log_index,
        "snapshot_index": s.snapshot_index,
        "snapshot_bytes": state.metrics.snapshot_bytes.get(),
        "members": names(&s.voters),
        "learners": names(&s.learners),
        "keys": s.keys,
        "live_bytes": s.live_bytes,
        "quota_bytes": s.quota_bytes,
        "removed": s.removed,
        "damaged_up_to_term": s.damaged_up_to_term,
    });
    Ok(json_response(StatusCode::OK, &body))
}

pub(super) fn metrics(state: &AppState) -> Response<Vec<u8>> {
    let mut response = Response::new(state.metrics.render().into_bytes());
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static(crate::metrics::CONTENT_TYPE),
    );
    response
}

#[derive(Deserialize)]
struct TransferBody {
    to: String,
}

/// Runs on the leader (`members::transfer_leader` forwards to it).
pub(super) async fn transfer_leader(state: &AppState, body: &[u8]) -> Reply {
    let body: TransferBody = parse_json(body)?;
    let to = state
        .driver
        .directory()
        .read()
        .by_name(&body.to)
        .ok_or_else(|| ApiError::BadRequest(format!("{:?} is not a member", body.to)))?
        .id;
    // Answers once the transfer ended: the target leads, or an error (503)
    // says why not, within about an election timeout.
    state.driver.transfer_leader(to).await?;
    Ok(json_response(
        StatusCode::OK,
        &json!({"transferring_to": body.to, "leader": body.to}),
    ))
}

pub(super) async fn snapshot(state: &AppState) -> Reply {
    let taken = state.driver.snapshot().await?;
    let index = taken.unwrap_or_else(|| state.metrics.snapshot_index.get());
    Ok(json_response(
        StatusCode::OK,
        &json!({"taken": taken.is_some(), "snapshot_index": index}),
    ))
}

pub(super) fn read_policy(state: &AppState) -> Response<Vec<u8>> {
    json_response(
        StatusCode::OK,
        &json!({"policy": state.read_policy().as_str()}),
    )
}

#[derive(Deserialize)]
struct ReadPolicyBody {
    policy: String,
}

pub(super) fn set_read_policy(state: &AppState, body: &[u8]) -> Reply {
    let body: ReadPolicyBody = parse_json(body)?;
    let policy = ReadPolicy::parse(&body.policy).ok_or_else(|| {
        ApiError::BadRequest(format!(
            "policy must be linearizable, lease or stale, not {:?}",
            body.policy
        ))
    })?;
    state.set_read_policy(policy);
    tracing::info!(policy = policy.as_str(), "default read policy changed");
    Ok(read_policy(state))
}

/// Decodes a peer batch and checks it may reach the core: a known sender
/// that is a member, messages from it to us, the same lease timing.
pub(super) fn check_batch(
    state: &AppState,
    body: &[u8],
) -> Result<crate::peer::transport::PeerBatch, ApiError> {
    let decoded = crate::peer::inbound::decode_batch(body, &state.driver.directory().read());
    let batch = match decoded {
        Ok(batch) => batch,
        Err(e) => {
            state.metrics.peer_batches_refused.inc();
            if let Some(suppressed) = state.refusal_log.admit(std::time::Instant::now()) {
                tracing::warn!(error = %e, bytes = body.len(), suppressed, "refused a peer batch");
            }
            return Err(ApiError::BadRequest(e.to_string()));
        }
    };
    // A removed member keeps its credential, and must not depose a leader
    // with a higher term: its messages never reach the core. The reply tells it why, and how far our log is
    // committed, so that it can tell whether the news is newer than its
    // own knowledge (`transport::NotAMemberReport`).
    // Read before the configuration, which the driver publishes before the
    // commit index of the same round, so the number is rarely ahead of the
    // configuration. Either way is harmless: too low, the sender ignores
    // the news; too high, a sender added back meanwhile stays quiet only
    // until the leader brings its commit index past it.
    let commit_index = state.metrics.commit_index.get();
    let directory = state.driver.directory();
    if !directory.admits(batch.from) {
        state.metrics.peer_batches_refused.inc();
        let name = directory.name_of(batch.from);
        tracing::debug!(from = %name, "refused a peer batch: the sender was removed");
        return Err(ApiError::NotAMember {
            message: format!(
                "{name} is not a member of this node's configuration: it was removed from the cluster"
            ),
            commit_index,
        });
    }
    // Leases are safe only when every member counts the same ticks
    // (`LeaseTiming`): a mixed cluster does not form, and says why.
    if let Some(ours) = state.timing
        && batch.timing != ours
    {
        state.metrics.peer_batches_refused.inc();
        let why = format!(
            "timing mismatch: the sender runs {:?}, this node {ours:?}; every member must run with the same --tick-ms and --election-timeout-ms",
            batch.timing
        );
        if let Some(suppressed) = state.refusal_log.admit(std::time::Instant::now()) {
            tracing::error!(from = %batch.from, suppressed, "{why}");
        }
        return Err(ApiError::BadRequest(why));
    }
    Ok(batch)
}

pub(super) async fn raft_messages(state: &AppState, body: &[u8]) -> Reply {
    let batch = check_batch(state, body)?;
    state.inbound.deliver(batch, &state.driver).await?;
    let mut response = Response::new(Vec::new());
    *response.status_mut() = StatusCode::NO_CONTENT;
    Ok(response)
}
