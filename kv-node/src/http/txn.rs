//! `POST /txn`: the JSON form of a transaction, its limits, and its reply.

use super::kv::{check_key, check_value, client_seq, write};
use super::{ApiError, AppState, Reply, parse_json};
use kv_replica::command::{
    Compare, CompareOp, CompareTest, MAX_TXN_COMPARES, MAX_TXN_OPS, Op, Txn, TxnOp,
};
use serde::Deserialize;
use std::collections::BTreeSet;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TxnBody {
    #[serde(default)]
    compare: Vec<CompareBody>,
    #[serde(default)]
    success: Vec<OpBody>,
    #[serde(default)]
    failure: Vec<OpBody>,
    client_id: Option<String>,
    seq: Option<u64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CompareBody {
    key: String,
    target: String,
    op: String,
    value: Option<String>,
    revision: Option<u64>,
}

#[derive(Deserialize)]
#[serde(rename_all = "lowercase", deny_unknown_fields)]
enum OpBody {
    Put {
        key: String,
        value: String,
        lease: Option<u64>,
    },
    Delete {
        key: String,
    },
    Get {
        key: String,
    },
}

pub(super) async fn txn(state: &AppState, body: &[u8]) -> Reply {
    let body: TxnBody = parse_json(body)?;
    if body.compare.len() > MAX_TXN_COMPARES {
        return Err(ApiError::BadRequest(format!(
            "{} comparisons: at most {MAX_TXN_COMPARES}",
            body.compare.len()
        )));
    }
    let compare = body
        .compare
        .into_iter()
        .map(|c| compare(state, c))
        .collect::<Result<_, _>>()?;
    let success = branch(state, "success", body.success)?;
    let failure = branch(state, "failure", body.failure)?;
    let client = client_seq(body.client_id, body.seq)?;
    let op = Op::Txn(Txn {
        compare,
        success,
        failure,
    });
    write(state, client, op).await
}

fn compare(state: &AppState, body: CompareBody) -> Result<Compare, ApiError> {
    check_key(&body.key)?;
    let op = match body.op.as_str() {
        "==" => CompareOp::Equal,
        "!=" => CompareOp::NotEqual,
        "<" => CompareOp::Less,
        ">" => CompareOp::Greater,
        other => {
            return Err(ApiError::BadRequest(format!(
                "compare op {other:?}: expected ==, !=, < or >"
            )));
        }
    };
    let test = match (body.target.as_str(), body.value, body.revision) {
        ("value", Some(value), None) => {
            if !matches!(op, CompareOp::Equal | CompareOp::NotEqual) {
                return Err(ApiError::BadRequest(format!(
                    "compare on the value of {:?} takes == or !=, not {}",
                    body.key, body.op
                )));
            }
            check_value(state, &value)?;
            CompareTest::Value { op, value }
        }
        ("revision", None, Some(revision)) => CompareTest::Revision { op, revision },
        ("value", _, _) => {
            return Err(ApiError::BadRequest(
                "a compare on \"value\" needs a string \"value\" and no \"revision\"".into(),
            ));
        }
        ("revision", _, _) => {
            return Err(ApiError::BadRequest(
                "a compare on \"revision\" needs an integer \"revision\" and no \"value\"".into(),
            ));
        }
        (other, _, _) => {
            return Err(ApiError::BadRequest(format!(
                "compare target {other:?}: expected \"value\" or \"revision\""
            )));
        }
    };
    Ok(Compare {
        key: body.key,
        test,
    })
}

fn branch(state: &AppState, name: &str, ops: Vec<OpBody>) -> Result<Vec<TxnOp>, ApiError> {
    if ops.len() > MAX_TXN_OPS {
        return Err(ApiError::BadRequest(format!(
            "{} ops in {name}: at most {MAX_TXN_OPS}",
            ops.len()
        )));
    }
    let mut written = BTreeSet::new();
    let mut write_once = |key: &str| {
        if written.insert(key.to_owned()) {
            Ok(())
        } else {
            Err(ApiError::BadRequest(format!(
                "key {key:?} is written twice in {name}"
            )))
        }
    };
    ops.into_iter()
        .map(|op| match op {
            OpBody::Put { key, value, lease } => {
                check_key(&key)?;
                check_value(state, &value)?;
                write_once(&key)?;
                Ok(match lease {
                    Some(lease) => TxnOp::PutWithLease { key, value, lease },
                    None => TxnOp::Put { key, value },
                })
            }
            OpBody::Delete { key } => {
                check_key(&key)?;
                write_once(&key)?;
                Ok(TxnOp::Delete { key })
            }
            OpBody::Get { key } => {
                check_key(&key)?;
                Ok(TxnOp::Get { key })
            }
        })
        .collect()
}
