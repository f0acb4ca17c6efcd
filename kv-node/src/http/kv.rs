//! The key-value routes: bodies, limits, and replies from `OpResult`s.

use super::{ApiError, AppState, Reply, json_response, parse_json};
use crate::driver::{ReadAnswer, ReadQuery};
use crate::settings::ReadPolicy;
use kv_replica::command::{ClientSeq, Op, OpResult, TxnOpResult};
use kv_replica::state_machine::MAX_KEY_BYTES;
use serde::Deserialize;
use serde_json::json;
use warp::http::StatusCode;

/// The longest `client_id` accepted.
const MAX_CLIENT_ID_BYTES: usize = 256;
/// The most entries a prefix scan returns.
const MAX_LIST_LIMIT: usize = 10_000;
const DEFAULT_LIST_LIMIT: usize = 100;

/// The key from its (percent-encoded) path segment.
/// The key named by the path segments after `/kv/`: each segment
/// percent-decoded, joined by `/` (so `a/b` and `a%2Fb` name one key).
pub(super) fn decode_key(segments: &[&str]) -> Result<String, ApiError> {
    let mut key = String::new();
    for (i, segment) in segments.iter().enumerate() {
        if i > 0 {
            key.push('/');
        }
        let decoded = percent_encoding::percent_decode_str(segment)
            .decode_utf8()
            .map_err(|_| {
                ApiError::BadRequest("key is not valid UTF-8 once percent-decoded".into())
            })?;
        key.push_str(&decoded);
        // Stop early on a hostile path: the limit is checked below anyway.
        if key.len() > MAX_KEY_BYTES {
            break;
        }
    }
    check_key(&key)?;
    Ok(key)
}

pub(super) fn check_key(key: &str) -> Result<(), ApiError> {
    if key.is_empty() {
        return Err(ApiError::BadRequest("key must not be empty".into()));
    }
    if key.len() > MAX_KEY_BYTES {
        return Err(ApiError::TooLarge(format!(
            "key of {} bytes is over the limit of {MAX_KEY_BYTES}",
            key.len()
        )));
    }
    Ok(())
}

pub(super) fn check_value(state: &AppState, value: &str) -> Result<(), ApiError> {
    if value.len() > state.max_value_bytes {
        return Err(ApiError::TooLarge(format!(
            "value of {} bytes is over the limit of {}",
            value.len(),
            state.max_value_bytes
        )));
    }
    Ok(())
}

/// `client_id` and `seq`: deduplication only when both are given.
pub(super) fn client_seq(
    client_id: Option<String>,
    seq: Option<u64>,
) -> Result<Option<ClientSeq>, ApiError> {
    match (client_id, seq) {
        (Some(client_id), Some(seq)) => {
            if client_id.len() > MAX_CLIENT_ID_BYTES {
                return Err(ApiError::BadRequest(format!(
                    "client_id is longer than {MAX_CLIENT_ID_BYTES} bytes"
                )));
            }
            Ok(Some(ClientSeq { client_id, seq }))
        }
        _ => Ok(None),
    }
}

#[derive(Deserialize)]
struct PutBody {
    value: String,
    /// Attaches the key to this lease; without it the key is detached.
    lease: Option<u64>,
    client_id: Option<String>,
    seq: Option<u64>,
}

#[derive(Deserialize, Default)]
struct DeleteBody {
    client_id: Option<String>,
    seq: Option<u64>,
}

/// Both fields are required, `null` included: a missing `expected` must not
/// silently mean "the key must be absent".
#[derive(Deserialize)]
struct CasBody {
    #[serde(deserialize_with = "present")]
    expected: Option<String>,
    #[serde(deserialize_with = "present")]
    value: Option<String>,
    client_id: Option<String>,
    seq: Option<u64>,
}

fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    Option::<String>::deserialize(d)
}

#[derive(Deserialize)]
struct MultiPutEntry {
    key: String,
    value: String,
}

#[derive(Deserialize)]
struct MultiPutBody {
    entries: Vec<MultiPutEntry>,
    client_id: Option<String>,
    seq: Option<u64>,
}

pub(super) async fn put(state: &AppState, key: String, body: &[u8]) -> Reply {
    let body: PutBody = parse_json(body)?;
    check_value(state, &body.value)?;
    let client = client_seq(body.client_id, body.seq)?;
    let op = match body.lease {
        Some(lease) => Op::PutWithLease {
            key,
            value: body.value,
            lease,
        },
        None => Op::Put {
            key,
            value: body.value,
        },
    };
    write(state, client, op).await
}

pub(super) async fn delete(state: &AppState, key: String, body: &[u8]) -> Reply {
    let body: DeleteBody = if body.iter().all(u8::is_ascii_whitespace) {
        DeleteBody::default()
    } else {
        parse_json(body)?
    };
    let client = client_seq(body.client_id, body.seq)?;
    write(state, client, Op::Delete { key }).await
}

pub(super) async fn cas(state: &AppState, key: String, body: &[u8]) -> Reply {
    let body: CasBody = parse_json(body)?;
    for value in body.expected.iter().chain(body.value.iter()) {
        check_value(state, value)?;
    }
    let client = client_seq(body.client_id, body.seq)?;
    let op = Op::Cas {
        key,
        expected: body.expected,
        value: body.value,
    };
    write(state, client, op).await
}

pub(super) async fn multi_put(state: &AppState, body: &[u8]) -> Reply {
    let body: MultiPutBody = parse_json(body)?;
    if body.entries.is_empty() {
        return Err(ApiError::BadRequest("entries must not be empty".into()));
    }
    let mut entries = Vec::with_capacity(body.entries.len());
    for entry in body.entries {
        check_key(&entry.key)?;
        check_value(state, &entry.value)?;
        entries.push((entry.key, entry.value));
    }
    let client = client_seq(body.client_id, body.seq)?;
    write(state, client, Op::MultiPut { entries }).await
}

pub(super) async fn write(state: &AppState, client: Option<ClientSeq>, op: Op) -> Reply {
    let result = state.driver.write(client, op).await?;
    let body = match result {
        OpResult::Put { revision, prev } | OpResult::Delete { revision, prev } => {
            json!({"revision": revision, "prev": prev})
        }
        OpResult::Cas {
            succeeded,
            revision,
            current,
        } => json!({"succeeded": succeeded, "revision": revision, "current": current}),
        OpResult::MultiPut { revision } => json!({"revision": revision}),
        OpResult::Txn {
            succeeded,
            revision,
            results,
        } => {
            let results: Vec<_> = results
                .into_iter()
                .map(|result| match result {
                    TxnOpResult::Prev(prev) => json!({"prev": prev}),
                    TxnOpResult::Get(Some((key, value, revision))) => {
                        json!({"key": key, "value": value, "revision": revision})
                    }
                    TxnOpResult::Get(None) => serde_json::Value::Null,
                })
                .collect();
            json!({"succeeded": succeeded, "revision": revision, "results": results})
        }
        OpResult::LeaseGranted { id, ttl_ms } => json!({"id": id, "ttl_ms": ttl_ms}),
        OpResult::LeaseRevoked { revision, deleted } => {
            json!({"revision": revision, "deleted": deleted})
        }
        OpResult::LeaseNotFound { lease } => {
            return Err(ApiError::LeaseNotFound(format!(
                "lease {lease} is unknown, expired or revoked"
            )));
        }
        OpResult::StaleSeq {
            client_id,
            seq,
            newest,
        } => {
            return Err(ApiError::StaleSeq {
                client_id,
                seq,
                newest,
            });
        }
    };
    Ok(json_response(StatusCode::OK, &body))
}

/// Query parameters of reads.
struct ReadParams {
    policy: ReadPolicy,
    prefix: String,
    limit: usize,
}

fn read_params(state: &AppState, query: &str) -> Result<ReadParams, ApiError> {
    let mut params = ReadParams {
        policy: state.read_policy(),
        prefix: String::new(),
        limit: DEFAULT_LIST_LIMIT,
    };
    for (name, value) in form_urlencoded::parse(query.as_bytes()) {
        match name.as_ref() {
            "consistency" => {
                params.policy = ReadPolicy::parse(&value).ok_or_else(|| {
                    ApiError::BadRequest(format!(
                        "consistency must be linearizable, lease or stale, not {value:?}"
                    ))
                })?;
            }
            "prefix" => params.prefix = value.into_owned(),
            "limit" => {
                params.limit = value
                    .parse::<usize>()
                    .ok()
                    .filter(|l| *l <= MAX_LIST_LIMIT)
                    .ok_or_else(|| {
                        ApiError::BadRequest(format!(
                            "limit must be a number from 0 to {MAX_LIST_LIMIT}, not {value:?}"
                        ))
                    })?;
            }
            _ => {}
        }
    }
    Ok(params)
}

pub(super) async fn get(state: &AppState, key: String, query: &str) -> Reply {
    let params = read_params(state, query)?;
    let answer = state
        .driver
        .read(params.policy, ReadQuery::Get { key: key.clone() })
        .await?;
    match answer {
        ReadAnswer::Get(Some((value, revision))) => Ok(json_response(
            StatusCode::OK,
            &json!({"key": key, "value": value, "revision": revision}),
        )),
        ReadAnswer::Get(None) => Err(ApiError::NotFound(format!("key {key:?} not found"))),
        _ => unreachable!("a get is answered with a value"),
    }
}

pub(super) async fn list(state: &AppState, query: &str) -> Reply {
    let params = read_params(state, query)?;
    if params.prefix.len() > MAX_KEY_BYTES {
        return Err(ApiError::TooLarge(format!(
            "prefix is over {MAX_KEY_BYTES} bytes"
        )));
    }
    let query = ReadQuery::Scan {
        prefix: params.prefix,
        limit: params.limit,
    };
    match state.driver.read(params.policy, query).await? {
        ReadAnswer::Scan { entries, more } => {
            let entries: Vec<_> = entries
                .into_iter()
                .map(|(key, value, revision)| json!({"key": &*key, "value": &*value, "revision": revision}))
                .collect();
            Ok(json_response(
                StatusCode::OK,
                &json!({"entries": entries, "more": more}),
            ))
        }
        _ => unreachable!("a scan is answered with entries"),
    }
}
