//! Transaction clients: transactions over a few keys of their own
//! (`TXN_KEYS`), with comparisons on values and revisions and branches of
//! puts, deletes and gets, sent through the same path as every write
//! (a seq, deduplication, retries). The linearizability checker takes each
//! one as a single operation over its key set (see
//! `linearizability::group`).
//!
//! # Revisions in the checker's terms
//!
//! Every value a client writes is unique (`c3.17.1`: client, seq, op), and
//! a write's retries carry the same seq, which deduplication applies once.
//! So a key holds revision R exactly when it holds the value written at R,
//! and "revision = R" can be checked as "value = V" for the value V a get
//! saw at revision R ("revision = 0" as "absent"). The client records the
//! comparison in those terms when it builds the transaction
//! ([`TxnCheck`]).

use crate::client::{Client, ClientCall, ClientRet};
use crate::rng::SimRng;
use kv_replica::command::{Compare, CompareOp, CompareTest, OpResult, Txn, TxnOp, TxnOpResult};

/// The keys transaction clients use, and no other client.
pub const TXN_KEYS: [&str; 3] = ["t0", "t1", "t2"];

/// One comparison in the checker's terms.
pub use crate::linearizability::TxnCompare as TxnCheck;

impl Client {
    /// Draws a transaction client's next operation: mostly transactions,
    /// some plain reads of a transaction key.
    pub fn next_txn_call(&mut self, rng: &mut SimRng) -> ClientCall {
        let pick = |rng: &mut SimRng| TXN_KEYS[rng.range(0, TXN_KEYS.len() as u64 - 1) as usize];
        if rng.range(0, 3) == 0 {
            return ClientCall::Get {
                key: pick(rng).to_string(),
            };
        }
        // Two or three distinct keys, in a drawn order.
        let mut keys: Vec<&str> = TXN_KEYS.to_vec();
        let drop = rng.range(0, 3) as usize;
        if drop < keys.len() {
            keys.remove(drop);
        }
        if rng.coin() {
            keys.reverse();
        }
        let mut compare = Vec::new();
        let mut checks = Vec::new();
        for key in keys.iter().take(rng.range(0, 2) as usize) {
            let (test, check) = self.draw_compare(key, rng);
            compare.push(Compare {
                key: key.to_string(),
                test,
            });
            checks.push(check);
        }
        let seq = self.next_seq;
        let mut next_value = 0;
        let mut branch = |rng: &mut SimRng, len: u64| {
            let mut ops = Vec::new();
            for key in keys.iter().take(len as usize) {
                let key = key.to_string();
                ops.push(match rng.range(0, 5) {
                    0..=2 => {
                        next_value += 1;
                        TxnOp::Put {
                            key,
                            value: format!("{}.{seq}.{next_value}", self.name),
                        }
                    }
                    3 => TxnOp::Delete { key },
                    _ => TxnOp::Get { key },
                });
            }
            ops
        };
        let success_len = rng.range(1, 3);
        let success = branch(rng, success_len);
        let failure_len = rng.range(0, 2);
        let failure = branch(rng, failure_len);
        ClientCall::Txn {
            txn: Txn {
                compare,
                success,
                failure,
            },
            checks,
        }
    }

    /// A comparison on `key` and its meaning in values.
    fn draw_compare(&self, key: &str, rng: &mut SimRng) -> (CompareTest, TxnCheck) {
        let check = |value: Option<String>, equal: bool| TxnCheck {
            key: key.to_string(),
            value,
            equal,
        };
        let op = |equal: bool| {
            if equal {
                CompareOp::Equal
            } else {
                CompareOp::NotEqual
            }
        };
        let equal = rng.range(0, 3) > 0;
        match (rng.range(0, 2), self.seen_revisions.get(key)) {
            (0, Some((revision, value))) => (
                CompareTest::Revision {
                    op: op(equal),
                    revision: *revision,
                },
                check(value.clone(), equal),
            ),
            (1, _) => (
                // Revision 0: the key is absent.
                CompareTest::Revision {
                    op: op(equal),
                    revision: 0,
                },
                check(None, equal),
            ),
            _ => {
                let seen = self.seen.get(key).cloned().flatten();
                let value = seen.unwrap_or_else(|| format!("{}.none", self.name));
                (
                    CompareTest::Value {
                        op: op(equal),
                        value: value.clone(),
                    },
                    check(Some(value), equal),
                )
            }
        }
    }

    /// Remembers what a transaction's answer revealed about its keys.
    pub fn observe_txn(&mut self, txn: &Txn, ret: &ClientRet) {
        let ClientRet::Write(OpResult::Txn {
            succeeded,
            revision,
            results,
        }) = ret
        else {
            return;
        };
        let branch = if *succeeded {
            &txn.success
        } else {
            &txn.failure
        };
        for (op, result) in branch.iter().zip(results) {
            match (op, result) {
                (TxnOp::Put { key, value } | TxnOp::PutWithLease { key, value, .. }, _) => {
                    self.seen.insert(key.clone(), Some(value.clone()));
                    self.seen_revisions
                        .insert(key.clone(), (*revision, Some(value.clone())));
                }
                (TxnOp::Delete { key }, _) => {
                    self.seen.insert(key.clone(), None);
                    self.seen_revisions.insert(key.clone(), (0, None));
                }
                (TxnOp::Get { key }, TxnOpResult::Get(found)) => {
                    let (value, at) = match found {
                        Some((_, value, at)) => (Some(value.clone()), *at),
                        None => (None, 0),
                    };
                    self.seen.insert(key.clone(), value.clone());
                    self.seen_revisions.insert(key.clone(), (at, value));
                }
                (TxnOp::Get { .. }, TxnOpResult::Prev(_)) => {}
            }
        }
    }
}
