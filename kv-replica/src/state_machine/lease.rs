//! Leases in the state machine: the table of leases (id -> TTL and the keys
//! attached), granting, attaching and detaching keys, and revoking or
//! expiring a lease, which deletes its keys at one revision.
//!
//! A lease's id is the index of the entry that granted it: unique, the same
//! on every replica, and below 2^53 for any log a node can hold. When a
//! lease expires is not decided here: the leader counts down (see
//! `lease_clock`) and proposes an `Op::LeaseExpire`, so every replica
//! deletes the same keys at the same revision.

use super::{Key, KvStateMachine};

/// The TTLs a lease may have (API.md): one second to one day. kv-node
/// refuses others at the door; a snapshot holding one is refused as
/// corrupt.
pub const MIN_TTL_MS: u64 = 1_000;
pub const MAX_TTL_MS: u64 = 86_400_000;
use crate::command::{OpResult, Txn, TxnOp};
use imbl::OrdSet;

/// One lease as the state machine keeps it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Lease {
    pub(super) ttl_ms: u64,
    /// Invariant: exactly the keys whose `key_leases` entry names this
    /// lease; each is present in the data.
    pub(super) keys: OrdSet<Key>,
}

impl KvStateMachine {
    pub(super) fn grant_lease(&mut self, revision: u64, ttl_ms: u64) -> OpResult {
        // kv-node refuses other TTLs before proposing; an entry that still
        // carries one (forged, or from another client of the log) is
        // clamped like etcd's minimum TTL, so that every replica holds the
        // same lease and its snapshots stay restorable.
        let ttl_ms = ttl_ms.clamp(MIN_TTL_MS, MAX_TTL_MS);
        let lease = Lease {
            ttl_ms,
            keys: OrdSet::new(),
        };
        let previous = self.leases.insert(revision, lease);
        assert!(previous.is_none(), "lease {revision} granted twice");
        OpResult::LeaseGranted {
            id: revision,
            ttl_ms,
        }
    }

    /// Revokes (or expires) lease `id`: its keys are deleted through the
    /// one `delete` primitive, all at `revision`.
    pub(super) fn revoke_lease(&mut self, revision: u64, id: u64) -> OpResult {
        let Some(lease) = self.leases.remove(&id) else {
            return OpResult::LeaseNotFound { lease: id };
        };
        let mut deleted = 0;
        for key in &lease.keys {
            if self.delete(key).is_some() {
                deleted += 1;
            }
        }
        debug_assert!(
            lease
                .keys
                .iter()
                .all(|key| !self.key_leases.contains_key(key)),
            "keys of revoked lease {id} still attached"
        );
        OpResult::LeaseRevoked { revision, deleted }
    }

    /// A put that attaches `key` to `lease`, which must exist.
    pub(super) fn put_with_lease(
        &mut self,
        key: String,
        value: String,
        lease: u64,
        revision: u64,
    ) -> Option<String> {
        let shared = Key::from(key.as_str());
        let prev = self.put(key, value, revision);
        let entry = self
            .leases
            .get_mut(&lease)
            .expect("the caller checked that the lease exists");
        entry.keys.insert(shared.clone());
        self.key_leases.insert(shared, lease);
        prev
    }

    /// Detaches `key` from its lease, if it has one. Called by the `put`
    /// and `delete` primitives, so that every write of a key without a
    /// lease leaves it unattached.
    pub(super) fn detach_lease(&mut self, key: &str) {
        if self.key_leases.is_empty() {
            return;
        }
        if let Some(id) = self.key_leases.remove(key)
            && let Some(lease) = self.leases.get_mut(&id)
        {
            lease.keys.remove(key);
        }
    }

    /// The first lease a transaction's puts name that does not exist, in
    /// either branch: such a transaction applies nothing.
    pub(super) fn missing_txn_lease(&self, txn: &Txn) -> Option<u64> {
        txn.success
            .iter()
            .chain(&txn.failure)
            .find_map(|op| match op {
                TxnOp::PutWithLease { lease, .. } if !self.leases.contains_key(lease) => {
                    Some(*lease)
                }
                _ => None,
            })
    }

    /// A lease's TTL and attached keys (in key order), if it exists.
    pub fn lease(&self, id: u64) -> Option<(u64, Vec<Key>)> {
        self.leases
            .get(&id)
            .map(|lease| (lease.ttl_ms, lease.keys.iter().cloned().collect()))
    }

    /// Every lease as (id, ttl_ms), in id order.
    pub fn leases(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        self.leases.iter().map(|(id, lease)| (*id, lease.ttl_ms))
    }

    /// Number of leases.
    pub fn lease_count(&self) -> usize {
        self.leases.len()
    }

    /// The lease `key` is attached to, if any.
    pub fn lease_of(&self, key: &str) -> Option<u64> {
        self.key_leases.get(key).copied()
    }
}
