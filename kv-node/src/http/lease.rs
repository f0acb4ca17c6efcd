//! The lease routes (API.md, "Leases"): grant and revoke are writes, sent
//! through the log from any node; keepalive, get and list are answered by
//! the leader after a ReadIndex round (`driver/lease.rs`), so a follower
//! forwards them to it with the caller's credentials (`peer/forward.rs`).

use super::kv::{client_seq, write};
use super::{ApiError, AppState, Reply, json_response, parse_json};
use crate::driver::{LeaseAnswer, LeaseQuery, LeaseSummary, ReadAnswer, ReadQuery};
use crate::peer::forward::{self, Target};
use crate::settings::ReadPolicy;
use kv_replica::command::Op;
use serde::Deserialize;
use serde_json::json;
use warp::http::{Method, StatusCode};

pub use kv_replica::state_machine::{MAX_TTL_MS, MIN_TTL_MS};
/// Lease ids are log indexes, below 2^53 (exact in every JSON number).
const MAX_LEASE_ID: u64 = (1 << 53) - 1;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct GrantBody {
    ttl_ms: u64,
    client_id: Option<String>,
    seq: Option<u64>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RevokeBody {
    client_id: Option<String>,
    seq: Option<u64>,
}

fn lease_id(text: &str) -> Result<u64, ApiError> {
    text.parse::<u64>()
        .ok()
        .filter(|id| (1..=MAX_LEASE_ID).contains(id))
        .ok_or_else(|| {
            ApiError::BadRequest(format!(
                "lease id must be an integer from 1 to 2^53 - 1, not {text:?}"
            ))
        })
}

/// `POST /lease`.
pub(super) async fn grant(state: &AppState, body: &[u8]) -> Reply {
    let body: GrantBody = parse_json(body)?;
    if !(MIN_TTL_MS..=MAX_TTL_MS).contains(&body.ttl_ms) {
        return Err(ApiError::BadRequest(format!(
            "ttl_ms must be from {MIN_TTL_MS} to {MAX_TTL_MS}, not {}",
            body.ttl_ms
        )));
    }
    let client = client_seq(body.client_id, body.seq)?;
    let op = Op::LeaseGrant {
        ttl_ms: body.ttl_ms,
    };
    write(state, client, op).await
}

/// `DELETE /lease/{id}`: revokes the lease and deletes its keys.
pub(super) async fn revoke(state: &AppState, id: &str, body: &[u8]) -> Reply {
    let id = lease_id(id)?;
    let body: RevokeBody = if body.iter().all(u8::is_ascii_whitespace) {
        RevokeBody::default()
    } else {
        parse_json(body)?
    };
    let client = client_seq(body.client_id, body.seq)?;
    write(state, client, Op::LeaseRevoke { id }).await
}

/// `POST /lease/{id}/keepalive`.
pub(super) async fn keepalive(
    state: &AppState,
    id: &str,
    query: &str,
    auth: Option<&str>,
) -> Reply {
    let id = lease_id(id)?;
    let path = format!("/lease/{id}/keepalive");
    let wanted = LeaseQuery::Keepalive { id };
    on_leader(state, query, auth, Method::POST, &path, wanted).await
}

/// `GET /lease/{id}`.
pub(super) async fn get(state: &AppState, id: &str, query: &str, auth: Option<&str>) -> Reply {
    let id = lease_id(id)?;
    let path = format!("/lease/{id}");
    let wanted = LeaseQuery::Get { id };
    on_leader(state, query, auth, Method::GET, &path, wanted).await
}

/// `GET /lease`.
pub(super) async fn list(state: &AppState, query: &str, authorization: Option<&str>) -> Reply {
    on_leader(
        state,
        query,
        authorization,
        Method::GET,
        "/lease",
        LeaseQuery::List,
    )
    .await
}

/// Runs `lease` on this node if it leads, else forwards the request to the
/// leader and hands its reply back.
async fn on_leader(
    state: &AppState,
    query: &str,
    authorization: Option<&str>,
    method: Method,
    path: &str,
    lease: LeaseQuery,
) -> Reply {
    if let Target::Leader(url) = forward::target(state, query).await? {
        return forward::send(state, &url, method, path, &[], authorization).await;
    }
    let answer = state
        .driver
        .read(ReadPolicy::Linearizable, ReadQuery::Lease(lease))
        .await?;
    let ReadAnswer::Lease(answer) = answer else {
        unreachable!("a lease query is answered about leases");
    };
    let body = match answer {
        LeaseAnswer::NotFound(id) => {
            return Err(ApiError::LeaseNotFound(format!(
                "lease {id} is unknown, expired or revoked"
            )));
        }
        LeaseAnswer::NotLeader => {
            return Err(ApiError::Unavailable(
                "this node stopped leading before the lease request was answered; retry".into(),
            ));
        }
        LeaseAnswer::KeptAlive { id, ttl_ms } => json!({"id": id, "ttl_ms": ttl_ms}),
        LeaseAnswer::Info { summary, keys } => {
            let keys: Vec<&str> = keys.iter().map(|key| &**key).collect();
            let mut body = summary_json(&summary);
            body["keys"] = json!(keys);
            body
        }
        LeaseAnswer::List(leases) => {
            let leases: Vec<_> = leases.iter().map(summary_json).collect();
            json!({ "leases": leases })
        }
    };
    Ok(json_response(StatusCode::OK, &body))
}

fn summary_json(summary: &LeaseSummary) -> serde_json::Value {
    json!({"id": summary.id, "ttl_ms": summary.ttl_ms, "remaining_ms": summary.remaining_ms})
}
