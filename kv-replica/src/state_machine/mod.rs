//! The deterministic key-value state machine, shared by kv-node and the
//! simulator.
//!
//! Every replica that applies the same log entries ends in the same state, so
//! nothing here may depend on anything but the entries: ordered maps only
//! (`imbl::OrdMap`/`OrdSet`, `BTreeMap`), no clock, no randomness, no
//! hash-map iteration.
//!
//! # Why persistent maps
//!
//! The keys and the dedup table live in `imbl`'s `OrdMap`: a B-tree whose
//! nodes are shared between clones (copy on write, path copying). Cloning
//! the whole state machine is O(1), so the driver captures a snapshot with
//! a clone and another thread serializes and fsyncs it while the driver
//! goes on applying (issue 12). A write made while a capture is alive
//! copies only the nodes on its path (about log16(n) nodes of 16 slots);
//! values are `Arc<str>` and keys are [`Key`] (inline up to 23 bytes, else
//! an `Arc<str>`), so a copied node clones pointers or a few inline bytes,
//! never a value: memory during a snapshot is the live data plus the copied
//! nodes, far below twice the data. Without a live capture every node is
//! uniquely owned and is changed in place. Iteration order is key order,
//! exactly as with `BTreeMap`, so the snapshot format and digest are
//! unchanged.
//!
//! This module holds the map and its operations (applying entries, reads,
//! the dedup table); `records` the snapshot format's records and framing,
//! `snapshot` writing and restoring whole snapshots, `digest` the hash the
//! simulator compares across replicas.

mod delta;
pub use delta::KeyList;
#[cfg(test)]
mod delta_tests;
mod digest;
mod lease;
#[cfg(test)]
mod lease_tests;
mod records;
mod snapshot;
#[cfg(test)]
mod snapshot_tests;
#[cfg(test)]
mod tests;
mod txn;

pub use lease::{MAX_TTL_MS, MIN_TTL_MS};
pub use records::{MAX_SNAPSHOT_RECORD_BYTES, SNAPSHOT_MAGIC, SNAPSHOT_VERSION, SnapshotError};

use crate::command::{
    CLUSTER_COMMAND_TAG, ClientSeq, ClusterCommand, Command, Op, OpResult, RequestId,
};
use crate::watch::{EventRecorder, WatchEvent};
use imbl::{OrdMap, OrdSet};
use raft_core::{Entry, EntryKind, LogIndex};
use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::Arc;

/// Longest key accepted by the HTTP layer, in bytes (API.md: 1..=4096).
pub const MAX_KEY_BYTES: usize = 4096;
/// Default longest value accepted by the HTTP layer, in bytes (1 MiB; the
/// limit is configurable but must stay well under
/// [`MAX_SNAPSHOT_RECORD_BYTES`], or snapshots can no longer be written).
pub const MAX_VALUE_BYTES: usize = 1 << 20;
/// Default bound on the number of clients in the dedup table.
pub const DEFAULT_DEDUP_LIMIT: usize = 100_000;
/// Default byte budget of one prefix scan answer (API.md: at most 4 MiB of
/// keys and values, then `more: true`).
pub const SCAN_BUDGET_BYTES: usize = 4 << 20;
/// What one scanned entry costs the budget beyond its key and value: the
/// JSON framing around them (`{"key":"","value":"","revision":N}`).
pub const SCAN_ENTRY_OVERHEAD_BYTES: usize = 48;

/// A key as the map stores it: up to 23 bytes inline (no heap pointer to
/// follow on every comparison down the B-tree, which at 10M keys was a
/// cache miss per comparison), longer keys behind an `Arc<str>`. Cloning
/// is a copy or a reference count, never a copy of the bytes, so a node
/// copied while a snapshot capture is alive stays cheap.
pub type Key = smol_str::SmolStr;

/// One entry of a scan: key, value, revision. Key and value are shared with
/// the map (a reference count, no copy), so a scan costs the driver thread
/// pointer copies only; rendering happens on the caller's thread.
pub type ScanEntry = (Key, Arc<str>, u64);

/// What applying one log entry produced.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Applied {
    /// The index of the entry; the state machine's applied index is now this.
    pub index: LogIndex,
    /// The proposal to wake, if the entry was a command with a request id.
    pub request: Option<RequestId>,
    /// `None` for `Noop` and `ConfChange` entries and for a `Normal` entry
    /// whose payload could not be decoded.
    pub result: Option<OpResult>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct StoredValue {
    /// Shared, so that a node copied while a snapshot capture is alive
    /// copies a pointer, not the value.
    value: Arc<str>,
    /// Index of the last write that changed the key; never above the applied
    /// index.
    revision: u64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct DedupEntry {
    /// The newest seq applied for this client.
    seq: u64,
    /// Index of the entry that applied `seq`; unique across clients, since one
    /// entry carries one client.
    index: u64,
    /// What applying `seq` returned, handed back to retries.
    result: OpResult,
}

/// The replicated key-value state. `clone` is O(1) (see the module doc).
///
/// # Deduplication
///
/// For each `client_id` the table keeps the newest applied `seq` and its
/// result: the same `(client_id, seq)` again returns the stored result and
/// applies nothing; a lower seq returns [`OpResult::StaleSeq`] and applies
/// nothing; a higher seq is applied and replaces the stored one.
///
/// The table holds at most `dedup_limit` clients ([`DEFAULT_DEDUP_LIMIT`] =
/// 100,000 unless built with [`KvStateMachine::with_dedup_limit`]). When a new
/// client would exceed it, the client whose last write has the smallest log
/// index is evicted; that choice depends only on the log, so every replica
/// evicts the same client. The consequence: a retry from an evicted client is
/// not recognised and may apply a second time, and an older seq from it is no
/// longer refused as stale. All replicas must therefore use the same limit; it
/// is carried inside snapshots so that a restored replica keeps it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KvStateMachine {
    /// Index of the last entry applied (0 before the first). Entries arrive
    /// strictly in order: the next one must be `applied_index + 1`.
    applied_index: u64,
    data: OrdMap<Key, StoredValue>,
    /// Invariant: the sum of key and value lengths over `data` (the live
    /// data that `--quota-bytes` bounds). Derived, so neither in snapshots
    /// nor in the digest.
    live_bytes: u64,
    /// Entries behind `Arc`: a dedup result may carry a large `prev` value.
    dedup: OrdMap<Key, Arc<DedupEntry>>,
    /// The same clients as `dedup`, ordered by the index of their last write,
    /// so that finding the one to evict is O(log n).
    dedup_by_index: OrdSet<(u64, Key)>,
    /// Invariant: `dedup.len() <= dedup_limit` after every apply.
    dedup_limit: usize,
    /// The cluster's address book: node name -> base URL, written by
    /// [`ClusterCommand::SetAddress`]. It may name nodes that are no longer
    /// members; raft-core's membership says who is one.
    addresses: BTreeMap<String, String>,
    /// Leases by id (the index of the grant), with the keys attached.
    leases: OrdMap<u64, lease::Lease>,
    /// The lease each attached key belongs to (the other side of
    /// `lease::Lease::keys`).
    key_leases: OrdMap<Key, u64>,
    /// Changes for watchers, recorded by `put` and `delete` (the lowest
    /// mutation points, so every op that changes keys emits events) when
    /// switched on; not replicated state (see [`EventRecorder`]).
    events: EventRecorder,
    /// Known bugs switched on (`crate::bugs`; configuration, not state).
    bugs: crate::bugs::BugSwitch,
    /// Puts and deletes applied by this instance (not state: see
    /// [`KeyWrites`]).
    key_writes: KeyWrites,
    /// The keys written since the last capture for a delta snapshot (not
    /// state: see [`delta::ChangedKeys`]).
    changed: delta::ChangedKeys,
}

/// How many times this instance wrote to its map (each put and delete,
/// whichever op made it): what replaying a log costs is about one B-tree
/// descent per key written, whatever the entries' count or size, so the
/// snapshot policy bounds it ([`crate::replica::SnapshotPolicy`]). A count
/// of work done here, not replicated state: a restored instance starts
/// from 0, and it is neither in snapshots nor in the digest, nor compared.
#[derive(Clone, Copy, Debug, Default)]
struct KeyWrites(u64);

impl PartialEq for KeyWrites {
    fn eq(&self, _other: &Self) -> bool {
        true
    }
}

impl Eq for KeyWrites {}

impl Default for KvStateMachine {
    fn default() -> Self {
        Self::new()
    }
}

impl KvStateMachine {
    /// An empty state machine with the default dedup bound.
    pub fn new() -> Self {
        Self::with_dedup_limit(DEFAULT_DEDUP_LIMIT)
    }

    /// An empty state machine that remembers at most `dedup_limit` clients
    /// (0 disables deduplication: every seq is applied).
    pub fn with_dedup_limit(dedup_limit: usize) -> Self {
        KvStateMachine {
            applied_index: 0,
            data: OrdMap::new(),
            live_bytes: 0,
            dedup: OrdMap::new(),
            dedup_by_index: OrdSet::new(),
            dedup_limit,
            addresses: BTreeMap::new(),
            leases: OrdMap::new(),
            key_leases: OrdMap::new(),
            events: EventRecorder::default(),
            bugs: crate::bugs::BugSwitch::default(),
            key_writes: KeyWrites::default(),
            changed: delta::ChangedKeys::default(),
        }
    }

    /// Applies the next committed entry. `Noop` and `ConfChange` entries only
    /// advance the applied index.
    ///
    /// Panics if `entry.index` is not `applied_index() + 1`: applying out of
    /// order would silently diverge from the other replicas.
    pub fn apply_entry(&mut self, entry: &Entry) -> Applied {
        let index = entry.index.0;
        assert!(
            index == self.applied_index + 1,
            "entry {index} applied out of order: applied index is {}, expected entry {}",
            self.applied_index,
            self.applied_index + 1
        );
        self.applied_index = index;
        let (request, result) = match entry.kind {
            EntryKind::Noop | EntryKind::ConfChange => (None, None),
            EntryKind::Normal if entry.data.first() == Some(&CLUSTER_COMMAND_TAG) => {
                self.apply_cluster_command(index, &entry.data);
                (None, None)
            }
            EntryKind::Normal => match Command::decode(&entry.data) {
                Ok(command) => (command.request, Some(self.apply_command(index, command))),
                Err(error) => {
                    // Only a bug or corruption (caught elsewhere by checksums)
                    // can put such bytes in a committed entry. Every replica
                    // sees the same bytes, so skipping them keeps replicas equal.
                    tracing::warn!(index, %error, "undecodable normal entry applied as a no-op");
                    (None, None)
                }
            },
        };
        Applied {
            index: entry.index,
            request,
            result,
        }
    }

    fn apply_cluster_command(&mut self, index: u64, data: &[u8]) {
        match ClusterCommand::decode(data) {
            Some(Ok(ClusterCommand::SetAddress { name, url })) => {
                self.addresses.insert(name, url);
            }
            Some(Err(error)) => {
                tracing::warn!(index, %error, "undecodable cluster command applied as a no-op");
            }
            None => unreachable!("entry {index} carries the cluster command tag"),
        }
    }

    fn apply_command(&mut self, index: u64, command: Command) -> OpResult {
        let Some(ClientSeq { client_id, seq }) = command.client else {
            return self.apply_op(index, command.op);
        };
        if let Some(seen) = self.dedup.get(client_id.as_str()) {
            if seq == seen.seq {
                return seen.result.clone();
            }
            if seq < seen.seq {
                return OpResult::StaleSeq {
                    client_id,
                    seq,
                    newest: seen.seq,
                };
            }
        }
        let result = self.apply_op(index, command.op);
        self.remember(client_id, seq, index, result.clone());
        result
    }

    fn remember(&mut self, client_id: String, seq: u64, index: u64, result: OpResult) {
        let client_id = Key::from(client_id);
        let entry = Arc::new(DedupEntry { seq, index, result });
        if let Some(old) = self.dedup.insert(client_id.clone(), entry) {
            let removed = self
                .dedup_by_index
                .remove(&(old.index, client_id.clone()))
                .is_some();
            debug_assert!(
                removed,
                "client {client_id:?} missing from the eviction index"
            );
        }
        let inserted = self.dedup_by_index.insert((index, client_id)).is_none();
        assert!(inserted, "two dedup entries at index {index}");
        while self.dedup.len() > self.dedup_limit {
            let (oldest_index, oldest_client) = self
                .dedup_by_index
                .remove_min()
                .expect("eviction index holds the same clients as the dedup table");
            let evicted = self.dedup.remove(&oldest_client);
            debug_assert!(
                evicted.is_some_and(|e| e.index == oldest_index),
                "eviction index out of step for {oldest_client:?} at {oldest_index}"
            );
        }
    }

    fn apply_op(&mut self, revision: u64, op: Op) -> OpResult {
        match op {
            Op::Put { key, value } => {
                let prev = self.put(key, value, revision);
                OpResult::Put { revision, prev }
            }
            Op::Delete { key } => {
                let prev = self.delete(&key);
                OpResult::Delete { revision, prev }
            }
            Op::Cas {
                key,
                expected,
                value,
            } => {
                let current = self.data.get(key.as_str()).map(|stored| &*stored.value);
                if current != expected.as_deref() {
                    return OpResult::Cas {
                        succeeded: false,
                        revision,
                        current: current.map(str::to_owned),
                    };
                }
                match &value {
                    Some(new) => {
                        self.put(key, new.clone(), revision);
                    }
                    None => {
                        self.delete(&key);
                    }
                }
                OpResult::Cas {
                    succeeded: true,
                    revision,
                    current: value,
                }
            }
            Op::MultiPut { entries } => {
                for (key, value) in entries {
                    self.put(key, value, revision);
                }
                OpResult::MultiPut { revision }
            }
            Op::Txn(txn) => self.apply_txn(revision, txn),
            Op::PutWithLease { key, value, lease } => {
                if !self.leases.contains_key(&lease) {
                    return OpResult::LeaseNotFound { lease };
                }
                let prev = self.put_with_lease(key, value, lease, revision);
                OpResult::Put { revision, prev }
            }
            Op::LeaseGrant { ttl_ms } => self.grant_lease(revision, ttl_ms),
            Op::LeaseRevoke { id } | Op::LeaseExpire { id } => self.revoke_lease(revision, id),
        }
    }

    /// Sets `key`, keeping `live_bytes` in step; returns the previous value.
    fn put(&mut self, key: String, value: String, revision: u64) -> Option<String> {
        self.key_writes.0 += 1;
        self.detach_lease(&key);
        let key_len = key.len() as u64;
        let value_len = value.len() as u64;
        let key = Key::from(key);
        self.changed.note(&key, self.data.len());
        let value: Arc<str> = value.into();
        self.events.record(revision, &key, Some(&value));
        let stored = StoredValue { value, revision };
        let prev = self.data.insert(key, stored);
        let removed = prev
            .as_ref()
            .map_or(0, |old| key_len + old.value.len() as u64);
        self.live_bytes = self.live_bytes + key_len + value_len - removed;
        prev.map(|old| old.value.to_string())
    }

    /// Removes `key`, keeping `live_bytes` in step; returns its value.
    /// Removing a missing key changes nothing and records no event.
    fn delete(&mut self, key: &str) -> Option<String> {
        self.key_writes.0 += 1;
        self.detach_lease(key);
        let (key, old) = self.data.remove_with_key(key)?;
        self.changed.note(&key, self.data.len());
        self.events.record(self.applied_index, &key, None);
        self.live_bytes -= (key.len() + old.value.len()) as u64;
        Some(old.value.to_string())
    }

    /// Switches known bugs on (only with the `buggy` feature; see `bugs`).
    pub fn set_bugs(&mut self, bugs: crate::bugs::ReplicaBugs) {
        self.bugs = crate::bugs::BugSwitch(bugs);
    }

    pub fn bugs(&self) -> crate::bugs::ReplicaBugs {
        self.bugs.0
    }

    /// Switches recording of watch events on or off (off by default).
    pub fn record_events(&mut self, on: bool) {
        self.events.set_on(on);
    }

    pub fn records_events(&self) -> bool {
        self.events.is_on()
    }

    /// The changes applied since the last call, in apply order (empty
    /// unless recording is on).
    pub fn take_events(&mut self) -> Vec<WatchEvent> {
        self.events.take()
    }

    /// The value of `key` and the revision of the last write that changed it.
    pub fn get(&self, key: &str) -> Option<(&str, u64)> {
        self.data
            .get(key)
            .map(|stored| (&*stored.value, stored.revision))
    }

    /// Up to `limit` entries whose key starts with `prefix`, in byte order of
    /// keys, whose keys and values add up to at most `budget_bytes` (each
    /// entry also counting [`SCAN_ENTRY_OVERHEAD_BYTES`]; the first entry
    /// is always returned, so that a client paging on always progresses),
    /// and whether more entries match. The work is bounded by what is
    /// returned, and nothing is copied but reference counts.
    pub fn scan(&self, prefix: &str, limit: usize, budget_bytes: usize) -> (Vec<ScanEntry>, bool) {
        let mut matching = self
            .data
            .range::<_, str>((Bound::Included(prefix), Bound::Unbounded))
            .take_while(|(key, _)| key.starts_with(prefix))
            .peekable();
        let mut entries = Vec::new();
        let mut used = 0usize;
        while entries.len() < limit {
            let Some((key, stored)) = matching.peek() else {
                break;
            };
            let cost = key.len() + stored.value.len() + SCAN_ENTRY_OVERHEAD_BYTES;
            if !entries.is_empty() && used + cost > budget_bytes {
                break;
            }
            used += cost;
            entries.push((Key::clone(key), Arc::clone(&stored.value), stored.revision));
            matching.next();
        }
        let more = matching.peek().is_some();
        (entries, more)
    }

    /// Puts and deletes this instance applied since it was built or
    /// restored (see `KeyWrites`).
    pub fn key_writes(&self) -> u64 {
        self.key_writes.0
    }

    /// Bytes of live keys and values (what `--quota-bytes` bounds).
    pub fn live_bytes(&self) -> u64 {
        self.live_bytes
    }

    /// The address book: node name -> base URL.
    pub fn addresses(&self) -> &BTreeMap<String, String> {
        &self.addresses
    }

    /// Forgets the address book. A backup restored into a new cluster
    /// must not point raft traffic at the old cluster's URLs; the new
    /// cluster's first leader records the `--peers` addresses again.
    pub fn clear_addresses(&mut self) {
        self.addresses.clear();
    }

    /// Index of the last entry applied (0 before the first).
    pub fn applied_index(&self) -> u64 {
        self.applied_index
    }

    /// Number of keys.
    pub fn len(&self) -> usize {
        self.data.len()
    }

    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// Number of clients currently in the dedup table.
    pub fn dedup_len(&self) -> usize {
        self.dedup.len()
    }

    pub fn dedup_limit(&self) -> usize {
        self.dedup_limit
    }

    /// The newest seq applied for `client_id`, if the client is still in the
    /// dedup table.
    pub fn newest_seq(&self, client_id: &str) -> Option<u64> {
        self.dedup.get(client_id).map(|entry| entry.seq)
    }
}
