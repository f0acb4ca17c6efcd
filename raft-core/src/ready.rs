//! What the core asks the driver to do, in one batch, in order.

use crate::message::Message;
use crate::types::{Entry, HardState, LogIndex, SnapshotMeta, SoftState};
use bytes::Bytes;

/// One batch of work for the driver, drained with [`crate::Node::ready`].
///
/// [`crate::Node::handle_ready`] walks it through a driver's
/// [`crate::ReadyHandler`] in this order; a driver that drains it by hand
/// must keep it. The fields are listed in the order the driver acts on them:
///
/// 1. Observe `soft_state` (role and leader changes) for routing requests.
/// 2. Persist: stage `snapshot_chunks` (parts of a snapshot arriving from
///    the leader; a chunk at offset 0 starts a new one). If `snapshot` is
///    set, the staged snapshot is complete: install it, discard the whole
///    log, and restore the state machine from it. Then truncate the log from the first index of `entries`
///    (a follower may be overwriting a conflicting suffix), append `entries`,
///    write `hard_state`, and make all of it durable (one fsync; many
///    proposals share it). Then step [`crate::Input::Persisted`] with
///    `number`.
/// 3. Send `messages`. They may go out before step 2 is durable, in
///    parallel with the fsync: the core holds back every message whose
///    correctness depends on this node's durable state (a vote, a follower's
///    append or snapshot acknowledgement) until `Persisted` arrives, and hands
///    it out in a later `Ready`. A leader's own appends are sent at once
///    (Raft thesis, section 10.2.1); the leader counts itself towards a
///    quorum only once its own write is acknowledged.
/// 4. Apply `committed_entries` to the state machine, in order, then step
///    [`crate::Input::Applied`]. They never run ahead of what this node has
///    persisted, and each index is handed out exactly once.
/// 5. Answer `read_states`: serve each read once the state machine has
///    applied up to its index. Fail `dropped_reads` (leadership was lost or
///    could not be confirmed); they are safe to retry.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Ready {
    /// Identifies this batch for the `Persisted` acknowledgement.
    pub number: u64,
    pub soft_state: Option<SoftState>,
    pub snapshot_chunks: Vec<SnapshotChunk>,
    pub snapshot: Option<SnapshotMeta>,
    pub hard_state: Option<HardState>,
    pub entries: Vec<Entry>,
    pub messages: Vec<Message>,
    pub committed_entries: Vec<Entry>,
    pub read_states: Vec<ReadState>,
    pub dropped_reads: Vec<u64>,
    /// True if step 2 must end with an fsync: entries, a snapshot, or a
    /// new term or vote. A change of the commit index alone needs none
    /// (etcd-raft's `MustSync` makes the same choice): a crash can only
    /// lose it, a restarted node learns it again from the leader, and every
    /// entry it covers was synced in an earlier round. Leaders commit in
    /// every round under load, so this saves an fsync per round.
    pub must_sync: bool,
}

impl Ready {
    /// True if step 2 has anything to write.
    pub fn must_persist(&self) -> bool {
        self.snapshot.is_some()
            || !self.snapshot_chunks.is_empty()
            || self.hard_state.is_some()
            || !self.entries.is_empty()
    }

    pub fn is_empty(&self) -> bool {
        self.soft_state.is_none()
            && !self.must_persist()
            && self.messages.is_empty()
            && self.committed_entries.is_empty()
            && self.read_states.is_empty()
            && self.dropped_reads.is_empty()
    }
}

/// A confirmed read: once the state machine has applied `index`, a read
/// issued with `context` sees every write that completed before it began.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReadState {
    pub context: u64,
    pub index: LogIndex,
}

/// Part of a snapshot received from the leader, to stage until complete.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SnapshotChunk {
    pub meta: SnapshotMeta,
    pub offset: u64,
    pub total_bytes: u64,
    pub data: Bytes,
}
