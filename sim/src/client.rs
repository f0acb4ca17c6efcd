//! Simulated clients and the history they record.
//!
//! Each client has one operation outstanding at a time over a small key set.
//! Writes carry `(client_id, seq)`; a write whose outcome is unknown (its
//! node crashed, or no answer within the timeout) is retried with the same
//! seq, which the state machine's deduplication makes safe, or given up and
//! recorded as unknown.

use crate::rng::SimRng;
use kv_replica::command::{Op, OpResult, RequestId, Txn};
use std::collections::BTreeMap;

/// How many times a write with an unknown outcome is sent in all.
pub const MAX_ATTEMPTS: u32 = 4;
/// Ticks a client waits for an answer before it calls the outcome unknown.
pub const TIMEOUT_TICKS: u64 = 60;

/// What a client asked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClientCall {
    Get {
        key: String,
    },
    Write(Op),
    /// A transaction (`txn_client`): the write proposed, and its
    /// comparisons in the checker's terms (see `txn_client::TxnCheck`).
    Txn {
        txn: Txn,
        checks: Vec<crate::txn_client::TxnCheck>,
    },
    /// A lease keepalive (`lease_client`): a ReadIndex round on the node.
    Keepalive {
        lease: u64,
    },
}

impl ClientCall {
    /// Reads and keepalives: an attempt without an answer had no effect.
    pub fn is_read(&self) -> bool {
        matches!(self, ClientCall::Get { .. } | ClientCall::Keepalive { .. })
    }

    /// The op proposed for a write.
    pub fn write_op(&self) -> Option<Op> {
        match self {
            ClientCall::Write(op) => Some(op.clone()),
            ClientCall::Txn { txn, .. } => Some(Op::Txn(txn.clone())),
            ClientCall::Get { .. } | ClientCall::Keepalive { .. } => None,
        }
    }
}

/// What it was told.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClientRet {
    Get(Option<String>),
    Write(OpResult),
    /// A keepalive answered by the leader: the lease's TTL.
    KeptAlive {
        ttl_ms: u64,
    },
    /// A keepalive answered `lease_not_found`.
    LeaseGone,
}

/// What a client does.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClientKind {
    /// Gets, puts, deletes, CAS and multi-puts over the world's keys.
    Kv,
    /// Transactions and gets over the transaction keys (`txn_client`).
    Txn,
    /// Grants leases, attaches keys and keeps them alive (`lease_client`).
    Lease(crate::lease_client::LeaseOwner),
}

/// How an operation ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Pending,
    Ok,
    /// Certainly had no effect (refused, or a read that got no answer).
    Failed,
    /// A write that may or may not have taken effect.
    Unknown,
}

/// One operation in the history. Times are in simulator steps.
#[derive(Clone, Debug)]
pub struct Recorded {
    pub client: u64,
    pub invoke_step: u64,
    pub complete_step: Option<u64>,
    pub call: ClientCall,
    pub ret: Option<ClientRet>,
    pub outcome: Outcome,
    /// Writes: the seq and the request id of every attempt.
    pub seq: u64,
    pub attempts: Vec<RequestId>,
}

/// The attempt a client is waiting on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Waiting {
    /// Not sent yet (backing off before a retry).
    Nothing,
    Write {
        node: u64,
        request: RequestId,
    },
    /// A read waiting on `node`; its read index, once known, is kept by
    /// the node's waiters.
    Read {
        node: u64,
        context: u64,
    },
    /// Sent to a paused node, which has not looked at it yet.
    Queued {
        node: u64,
    },
}

/// A client's operation in flight.
#[derive(Clone, Debug)]
pub struct InFlight {
    /// Position in the history.
    pub op: usize,
    pub waiting: Waiting,
    /// Identifies the current attempt, so stale timeouts are ignored.
    pub attempt: u32,
}

#[derive(Clone, Debug)]
pub struct Client {
    pub id: u64,
    pub name: String,
    pub next_seq: u64,
    pub busy: Option<InFlight>,
    /// The last value this client saw for each key (CAS expectations).
    pub seen: BTreeMap<String, Option<String>>,
    /// The revision and value a transaction's get last saw for each key
    /// (revision comparisons).
    pub seen_revisions: BTreeMap<String, (u64, Option<String>)>,
    pub kind: ClientKind,
}

impl Client {
    pub fn new(id: u64) -> Client {
        Client::of_kind(id, ClientKind::Kv)
    }

    pub fn of_kind(id: u64, kind: ClientKind) -> Client {
        Client {
            id,
            name: format!("c{id}"),
            next_seq: 1,
            busy: None,
            seen: BTreeMap::new(),
            seen_revisions: BTreeMap::new(),
            kind,
        }
    }

    /// Draws the next operation over `keys`.
    pub fn next_call(&mut self, keys: &[String], rng: &mut SimRng) -> ClientCall {
        let key = keys[rng.range(0, keys.len() as u64 - 1) as usize].clone();
        let value = format!("{}.{}", self.name, self.next_seq);
        match rng.range(0, 99) {
            0..=29 => ClientCall::Get { key },
            30..=54 => ClientCall::Write(Op::Put { key, value }),
            55..=64 => ClientCall::Write(Op::Delete { key }),
            65..=84 => {
                let expected = match self.seen.get(&key) {
                    Some(seen) if rng.range(0, 3) > 0 => seen.clone(),
                    _ => None,
                };
                let value = if rng.range(0, 9) == 0 {
                    None
                } else {
                    Some(value)
                };
                ClientCall::Write(Op::Cas {
                    key,
                    expected,
                    value,
                })
            }
            _ => {
                let other = keys[rng.range(0, keys.len() as u64 - 1) as usize].clone();
                ClientCall::Write(Op::MultiPut {
                    entries: vec![(key, value.clone()), (other, value)],
                })
            }
        }
    }

    /// Remembers what an answer revealed about the keys.
    pub fn observe(&mut self, call: &ClientCall, ret: &ClientRet) {
        match (call, ret) {
            (ClientCall::Get { key }, ClientRet::Get(value)) => {
                self.seen.insert(key.clone(), value.clone());
            }
            (ClientCall::Write(Op::Put { key, value }), _) => {
                self.seen.insert(key.clone(), Some(value.clone()));
            }
            (ClientCall::Write(Op::Delete { key }), _) => {
                self.seen.insert(key.clone(), None);
            }
            (
                ClientCall::Write(Op::Cas { key, .. }),
                ClientRet::Write(OpResult::Cas { current, .. }),
            ) => {
                self.seen.insert(key.clone(), current.clone());
            }
            (ClientCall::Write(Op::MultiPut { entries }), _) => {
                for (key, value) in entries {
                    self.seen.insert(key.clone(), Some(value.clone()));
                }
            }
            _ => {}
        }
    }
}

/// Counts for the run's summary line.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OpCounts {
    pub ok: u64,
    pub failed: u64,
    pub unknown: u64,
}

pub fn count(history: &[Recorded]) -> OpCounts {
    let mut counts = OpCounts::default();
    for op in history {
        match op.outcome {
            Outcome::Ok => counts.ok += 1,
            Outcome::Failed => counts.failed += 1,
            Outcome::Unknown | Outcome::Pending => counts.unknown += 1,
        }
    }
    counts
}
