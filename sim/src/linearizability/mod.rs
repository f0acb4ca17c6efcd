//! Linearizability checking of key-value client histories.
//!
//! A history is the list of operations that clients invoked against the store,
//! each with the time it was invoked, the time its reply arrived and what the
//! reply said. [`check`] decides whether some total order of the operations
//! exists that (1) respects real time: an operation that completed before
//! another was invoked comes first, and (2) is a legal sequential execution of
//! the KV semantics of `API.md`, starting from an empty store.
//!
//! # How
//!
//! The checker follows Wing & Gong as refined by Lowe and by Porcupine:
//!
//! 1. **Per key.** Linearizability is compositional (Herlihy & Wing), so the
//!    history is split into one sub-history per key and each is checked on its
//!    own. A [`Call::MultiPut`] becomes one blind put per key it touches. This
//!    checks *per-key* linearizability only: a multi-put that was applied to one
//!    key but not to another, or whose keys were seen to change at different
//!    points, is **not** detected.
//! 2. **Depth-first search** over linearization orders, on Porcupine's list of
//!    call and return events: the next operation to linearize is any call that
//!    comes before the first pending return; reaching a return event means the
//!    operation it closes could not be placed in time, so the search backtracks.
//! 3. **Memoization** of every (set of linearized operations, state of the key)
//!    pair already explored, with the set kept as a bitset and hashed
//!    incrementally (Zobrist hashing), so each configuration is expanded once.
//!
//! # Unknown outcomes
//!
//! An operation whose reply was lost (timeout, `504`, dropped connection) has
//! `ret: None`. It may have taken effect at any point after its invoke, even
//! long after the client gave up, or never. The search treats its return as
//! happening at +infinity (so it never forces an order on later operations),
//! leaves its return value unconstrained, and may finish without linearizing it.
//! `complete` is ignored for such an operation. An operation with a known reply
//! but no completion time (`complete: None`, `ret: Some`) must take effect, at
//! any point after its invoke.
//!
//! Before searching, unknown-outcome operations that cannot matter are dropped:
//! reads, and writes of a value that no other operation of the key ever
//! observes or compares against (making such a write take effect can never
//! help explain an observation, and removing it from a valid order keeps the
//! order valid). This keeps chaos-test histories full of `504`s tractable.
//!
//! Operations that failed for sure (`400`, `409`, `413`, `503`) had no effect
//! and must simply be left out of the history by the caller.
//!
//! # Time
//!
//! `invoke` and `complete` are numbers on any monotonic scale shared by all
//! clients (simulated ticks, or wall-clock nanoseconds on one machine). Two
//! operations are ordered only if one completed strictly before the other was
//! invoked; equal times count as overlapping.
//!
//! # Example
//!
//! ```
//! use sim::linearizability::{check, Call, CheckResult, Operation, Ret};
//!
//! let history = vec![
//!     Operation::completed(1, 0, 10, Call::put("k", "a"), Ret::Put { prev: None }),
//!     // Completed before the read began, so the read must see "a".
//!     Operation::completed(2, 20, 30, Call::get("k"), Ret::Get { value: None }),
//! ];
//! assert!(matches!(check(&history), CheckResult::Violation { .. }));
//! ```

mod events;
mod explain;
mod group;
#[cfg(test)]
mod group_tests;
mod memo;
mod model;
#[cfg(test)]
mod random_tests;
mod search;
#[cfg(test)]
mod tests;

use std::fmt;

use serde::{Deserialize, Serialize};

use self::model::KeyHistory;
use self::search::SearchOutcome;

/// Default step budget for one key's search. A step tries one operation or
/// undoes one; a release build does some tens of millions a second, and the
/// memo grows by at most one configuration per step. Ordinary histories of
/// hundreds of operations per key need a few steps per operation.
pub const DEFAULT_STEP_BUDGET_PER_KEY: u64 = 50_000_000;

/// One client operation as the client saw it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Operation {
    /// Which client issued the operation. Only used in reports: a client's own
    /// operations are ordered by their times like everyone else's.
    pub client: u64,
    /// When the client sent the request.
    pub invoke: u64,
    /// When the reply arrived; `None` if it never did. Must not be before
    /// `invoke`.
    pub complete: Option<u64>,
    /// What was asked.
    pub call: Call,
    /// What the reply said; `None` if the outcome is unknown (see the module
    /// docs). Its variant must match `call`.
    pub ret: Option<Ret>,
}

/// A request to the store.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Call {
    /// Read the key.
    Get { key: String },
    /// Set the key to `value`.
    Put { key: String, value: String },
    /// Remove the key (succeeds on a missing key too).
    Delete { key: String },
    /// If the key holds `expected` (`None`: if it is absent), set it to
    /// `value` (`None`: delete it).
    Cas {
        key: String,
        expected: Option<String>,
        value: Option<String>,
    },
    /// Set every key to its value, atomically. If a key appears more than once
    /// the last entry wins.
    MultiPut { entries: Vec<(String, String)> },
    /// A transaction: if every comparison holds, run `success`, else
    /// `failure`, atomically. Checked as one operation over its keys (see
    /// `group`).
    Txn {
        compare: Vec<TxnCompare>,
        success: Vec<TxnStep>,
        failure: Vec<TxnStep>,
    },
}

/// One comparison of a transaction: holds when the key's value (`None`:
/// absent) `== value` if `equal`, `!= value` otherwise.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct TxnCompare {
    pub key: String,
    pub value: Option<String>,
    pub equal: bool,
}

/// One op of a transaction's branch.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum TxnStep {
    Put { key: String, value: String },
    Delete { key: String },
    Get { key: String },
}

impl TxnStep {
    pub fn key(&self) -> &str {
        match self {
            TxnStep::Put { key, .. } | TxnStep::Delete { key } | TxnStep::Get { key } => key,
        }
    }
}

/// A successful reply.
///
/// Where a client did not look at (or could not parse) part of a reply, it
/// reports the `*Ack` variant: `Put { prev: None }` means "the key was absent
/// before this put", whereas `PutAck` means "the put happened, its previous
/// value was not observed".
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Ret {
    /// Reply to [`Call::Get`]; `None` for `404 not_found`.
    Get { value: Option<String> },
    /// Reply to [`Call::Put`] with the value it replaced (`None`: absent).
    Put { prev: Option<String> },
    /// Reply to [`Call::Put`] whose `prev` was not observed.
    PutAck,
    /// Reply to [`Call::Delete`] with the value it removed (`None`: absent).
    Delete { prev: Option<String> },
    /// Reply to [`Call::Delete`] whose `prev` was not observed.
    DeleteAck,
    /// Reply to [`Call::Cas`]: whether the comparison held, and the key's value
    /// after the operation (the new value on success, the actual one on
    /// failure).
    Cas {
        succeeded: bool,
        current: Option<String>,
    },
    /// Reply to [`Call::MultiPut`].
    MultiPut,
    /// A transaction that certainly took effect, whose reply was not seen
    /// (it constrains nothing, but the operation must be placed before its
    /// `complete`).
    Applied,
    /// Reply to [`Call::Txn`]: which branch ran, and per op of that branch
    /// the value a get saw or the value a put or delete replaced.
    Txn {
        succeeded: bool,
        results: Vec<Option<String>>,
    },
}

/// The verdict on a history.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum CheckResult {
    /// Every key's sub-history is linearizable. `keys` distinct keys were
    /// checked; `ops` is the number of operations in the history.
    Ok { keys: usize, ops: usize },
    /// No linearization exists for `key`. `ops_in_key` are the operations that
    /// touch the key, in history order; `explanation` refers to them by their
    /// position there (`#3`) and shows the longest linearizable prefix found
    /// and the operations that could not be placed after it.
    Violation {
        key: String,
        ops_in_key: Vec<Operation>,
        explanation: String,
    },
    /// The search for `key` ran out of its step budget before reaching a
    /// verdict, and no other key has a violation.
    Unknown { key: String, reason: String },
    /// The history itself is not well formed (a reply that does not match its
    /// call, a completion before the invoke): a bug in the test harness.
    /// `op_index` is the position in the history given to [`check`].
    Malformed { op_index: usize, reason: String },
}

impl CheckResult {
    /// True for [`CheckResult::Ok`].
    pub fn is_ok(&self) -> bool {
        matches!(self, CheckResult::Ok { .. })
    }

    /// True for [`CheckResult::Violation`].
    pub fn is_violation(&self) -> bool {
        matches!(self, CheckResult::Violation { .. })
    }
}

/// Checks `history` with [`DEFAULT_STEP_BUDGET_PER_KEY`].
pub fn check(history: &[Operation]) -> CheckResult {
    check_with_budget(history, DEFAULT_STEP_BUDGET_PER_KEY)
}

/// Checks `history`, giving each key's search at most `step_budget_per_key`
/// steps (one step tries one operation or undoes one). A key that runs out
/// yields [`CheckResult::Unknown`], unless another key has a violation, which
/// takes precedence. Keys are checked in byte order, and the first violating
/// key is reported.
pub fn check_with_budget(history: &[Operation], step_budget_per_key: u64) -> CheckResult {
    let groups = group::groups(history);
    let grouped: std::collections::BTreeSet<&str> = groups
        .iter()
        .flat_map(|g| g.iter().map(String::as_str))
        .collect();
    let partition = match model::partition(history, &grouped) {
        Ok(partition) => partition,
        Err(malformed) => {
            return CheckResult::Malformed {
                op_index: malformed.op_index,
                reason: malformed.reason,
            };
        }
    };
    let keys = partition.len() + grouped.len();
    let mut first_unknown = None;
    for keys in &groups {
        let (verdict, positions) = group::check_group(history, keys, step_budget_per_key);
        let key = keys.iter().cloned().collect::<Vec<_>>().join(",");
        match verdict {
            group::GroupVerdict::Linearizable => {}
            group::GroupVerdict::Violation(explanation) => {
                return CheckResult::Violation {
                    key,
                    ops_in_key: positions.iter().map(|&i| history[i].clone()).collect(),
                    explanation,
                };
            }
            group::GroupVerdict::OutOfBudget(reason) => {
                first_unknown.get_or_insert(CheckResult::Unknown { key, reason });
            }
        }
    }
    for key_history in &partition {
        match check_key(history, key_history, step_budget_per_key) {
            KeyVerdict::Linearizable => {}
            KeyVerdict::Violation(explanation) => {
                return CheckResult::Violation {
                    key: key_history.key.to_owned(),
                    ops_in_key: key_history.original_ops(history),
                    explanation,
                };
            }
            KeyVerdict::OutOfBudget(reason) => {
                first_unknown.get_or_insert_with(|| CheckResult::Unknown {
                    key: key_history.key.to_owned(),
                    reason,
                });
            }
        }
    }
    first_unknown.unwrap_or(CheckResult::Ok {
        keys,
        ops: history.len(),
    })
}

enum KeyVerdict {
    Linearizable,
    Violation(String),
    OutOfBudget(String),
}

fn check_key(history: &[Operation], key_history: &KeyHistory<'_>, step_budget: u64) -> KeyVerdict {
    if let Some(op) = key_history.first_observation_of_unwritten_value() {
        return KeyVerdict::Violation(explain::unwritten_value(history, key_history, op));
    }
    match search::search(&key_history.ops, key_history.values.len() + 1, step_budget) {
        SearchOutcome::Linearizable => KeyVerdict::Linearizable,
        SearchOutcome::NotLinearizable { deepest_prefix } => KeyVerdict::Violation(
            explain::no_linearization(history, key_history, &deepest_prefix),
        ),
        SearchOutcome::OutOfBudget => KeyVerdict::OutOfBudget(format!(
            "the search over {} operations of key {:?} ({} of unknown outcome) \
             used its budget of {step_budget} steps without a verdict",
            key_history.ops.len(),
            key_history.key,
            key_history.unknown_outcome_count(),
        )),
    }
}

impl Operation {
    /// An operation whose reply arrived at `complete`.
    pub fn completed(client: u64, invoke: u64, complete: u64, call: Call, ret: Ret) -> Self {
        Operation {
            client,
            invoke,
            complete: Some(complete),
            call,
            ret: Some(ret),
        }
    }

    /// An operation whose outcome is unknown: it may take effect at any point
    /// after `invoke`, or never.
    pub fn unknown(client: u64, invoke: u64, call: Call) -> Self {
        Operation {
            client,
            invoke,
            complete: None,
            call,
            ret: None,
        }
    }
}

impl Call {
    /// The keys the call touches, in byte order, once each.
    pub fn keys(&self) -> Vec<&str> {
        let mut keys: Vec<&str> = match self {
            Call::Get { key }
            | Call::Put { key, .. }
            | Call::Delete { key }
            | Call::Cas { key, .. } => {
                vec![key]
            }
            Call::MultiPut { entries } => entries.iter().map(|(k, _)| k.as_str()).collect(),
            Call::Txn {
                compare,
                success,
                failure,
            } => compare
                .iter()
                .map(|c| c.key.as_str())
                .chain(success.iter().chain(failure).map(TxnStep::key))
                .collect(),
        };
        keys.sort_unstable();
        keys.dedup();
        keys
    }

    /// `Get { key }`.
    pub fn get(key: &str) -> Self {
        Call::Get { key: key.into() }
    }

    /// `Put { key, value }`.
    pub fn put(key: &str, value: &str) -> Self {
        Call::Put {
            key: key.into(),
            value: value.into(),
        }
    }

    /// `Delete { key }`.
    pub fn delete(key: &str) -> Self {
        Call::Delete { key: key.into() }
    }

    /// `Cas { key, expected, value }`.
    pub fn cas(key: &str, expected: Option<&str>, value: Option<&str>) -> Self {
        Call::Cas {
            key: key.into(),
            expected: expected.map(Into::into),
            value: value.map(Into::into),
        }
    }
}

impl fmt::Display for CheckResult {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CheckResult::Ok { keys, ops } => {
                write!(f, "linearizable: {ops} operations on {keys} keys")
            }
            CheckResult::Violation {
                key, explanation, ..
            } => write!(f, "not linearizable on key {key:?}:\n{explanation}"),
            CheckResult::Unknown { key, reason } => {
                write!(f, "no verdict for key {key:?}: {reason}")
            }
            CheckResult::Malformed { op_index, reason } => {
                write!(f, "malformed history at operation {op_index}: {reason}")
            }
        }
    }
}
