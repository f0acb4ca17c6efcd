//! Transactions: comparisons on values and revisions, then one branch of
//! puts, deletes and gets, all at the revision of the entry that runs them.

use super::KvStateMachine;
use crate::command::{CompareOp, CompareTest, OpResult, Txn, TxnOp, TxnOpResult};
use std::cmp::Ordering;

impl KvStateMachine {
    pub(super) fn apply_txn(&mut self, revision: u64, txn: Txn) -> OpResult {
        if let Some(lease) = self.missing_txn_lease(&txn) {
            return OpResult::LeaseNotFound { lease };
        }
        let succeeded = txn.compare.iter().all(|compare| {
            let stored = self.data.get(compare.key.as_str());
            match &compare.test {
                CompareTest::Value { op, value } => {
                    let equal = stored.is_some_and(|s| *s.value == **value);
                    match op {
                        CompareOp::Equal => equal,
                        CompareOp::NotEqual => !equal,
                        // The HTTP layer refuses ordering on values; a
                        // command that carries one compares false, the
                        // same on every replica.
                        CompareOp::Less | CompareOp::Greater => false,
                    }
                }
                CompareTest::Revision { op, revision } => {
                    let current = stored.map_or(0, |s| s.revision);
                    let ordering = current.cmp(revision);
                    match op {
                        CompareOp::Equal => ordering == Ordering::Equal,
                        CompareOp::NotEqual => ordering != Ordering::Equal,
                        CompareOp::Less => ordering == Ordering::Less,
                        CompareOp::Greater => ordering == Ordering::Greater,
                    }
                }
            }
        });
        let mut branch = if succeeded { txn.success } else { txn.failure };
        // Bug `txn_drops_last_op`: the last op is answered, not applied.
        let dropped = if crate::bugs::ReplicaBugs::has(self.bugs.0.txn_drops_last_op) {
            branch.pop()
        } else {
            None
        };
        let mut results: Vec<TxnOpResult> = branch
            .into_iter()
            .map(|op| match op {
                TxnOp::Put { key, value } => TxnOpResult::Prev(self.put(key, value, revision)),
                TxnOp::PutWithLease { key, value, lease } => {
                    TxnOpResult::Prev(self.put_with_lease(key, value, lease, revision))
                }
                TxnOp::Delete { key } => TxnOpResult::Prev(self.delete(&key)),
                TxnOp::Get { key } => TxnOpResult::Get(
                    self.get(&key)
                        .map(|(value, revision)| (key, value.to_owned(), revision)),
                ),
            })
            .collect();
        if let Some(op) = dropped {
            results.push(match op {
                TxnOp::Get { key } => TxnOpResult::Get(
                    self.get(&key)
                        .map(|(value, revision)| (key, value.to_owned(), revision)),
                ),
                TxnOp::Put { key, .. }
                | TxnOp::PutWithLease { key, .. }
                | TxnOp::Delete { key } => {
                    TxnOpResult::Prev(self.get(&key).map(|(value, _)| value.to_owned()))
                }
            });
        }
        OpResult::Txn {
            succeeded,
            revision,
            results,
        }
    }
}
