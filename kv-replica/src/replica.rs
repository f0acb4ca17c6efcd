//! One replica: a raft-core node, the KV state machine and durable storage,
//! with the ready-handling loop that both kv-node and the simulator run.
//!
//! Only the world differs between the two: the [`Durable`] implementation
//! (a real WAL or a simulated disk) and what `send` does with a message.

use crate::state_machine::{Applied, KvStateMachine, SnapshotError};
use bytes::Bytes;
use raft_core::{
    Config, ConfigError, Durability, Entry, HardState, InitialState, Input, LogIndex, Membership,
    Message, Node, ReadState, ReadyHandler, SnapshotChunk, SnapshotMeta, SoftState, Term,
};

/// The storage a replica writes to. Writes may be buffered until `sync`;
/// only what was synced survives a crash.
pub trait Durable {
    type Error: std::error::Error + Send + Sync + 'static;
    /// Appends entries; if the first index is at or below the last stored
    /// index, the stored suffix from there is discarded first.
    fn append(&mut self, entries: &[Entry]) -> Result<(), Self::Error>;
    fn set_hard_state(&mut self, hard_state: &HardState) -> Result<(), Self::Error>;
    /// Makes every earlier write durable.
    fn sync(&mut self) -> Result<(), Self::Error>;
    /// Stores a snapshot this replica took, and drops the log it covers.
    fn save_snapshot(&mut self, meta: &SnapshotMeta, data: &[u8]) -> Result<(), Self::Error>;
    /// Whether `error`, from `save_snapshot`, left the storage as it was
    /// (a full disk refused the snapshot file): the replica then goes on
    /// and tries again later instead of stopping.
    fn snapshot_can_wait(_error: &Self::Error) -> bool {
        false
    }
    /// Stores a snapshot received from the leader and discards the whole log.
    fn install_snapshot(&mut self, meta: &SnapshotMeta, data: &[u8]) -> Result<(), Self::Error>;
    /// Bytes `offset..offset + len` of the newest snapshot (the one at
    /// `meta`, which the replica checked is the stored one; fewer at its
    /// end), for one InstallSnapshot chunk. A
    /// file-backed store reads just that range, so that sending a snapshot
    /// never holds a second copy of the state in memory.
    fn snapshot_chunk(
        &mut self,
        meta: &SnapshotMeta,
        offset: u64,
        len: u64,
    ) -> Result<Bytes, Self::Error>;
}

/// What storage recovered, to rebuild a replica from.
#[derive(Debug, Default)]
pub struct Recovered {
    pub hard_state: HardState,
    pub snapshot: Option<(SnapshotMeta, Bytes)>,
    pub entries: Vec<Entry>,
    /// Set when storage lost records this node had acknowledged: the node
    /// starts in repair mode (`InitialState::damaged_up_to_term`).
    pub damaged_up_to_term: Option<Term>,
}

/// Why a replica cannot go on. Every variant stops the node.
#[derive(Debug, thiserror::Error)]
pub enum ReplicaError<E: std::error::Error + 'static> {
    #[error("storage failed: {0}")]
    Storage(#[source] E),
    #[error("invalid configuration or recovered state: {0}")]
    Config(#[from] ConfigError),
    #[error("snapshot is unreadable: {0}")]
    Snapshot(#[from] SnapshotError),
    #[error("snapshot at index {meta_index} holds a state applied up to {state_index}")]
    SnapshotMismatch { meta_index: u64, state_index: u64 },
}

/// What one round of ready handling produced for the world outside.
#[derive(Debug, Default)]
pub struct Output {
    pub soft_state: Option<SoftState>,
    /// Results of applied commands, for the waiting requests.
    pub applied: Vec<Applied>,
    pub read_states: Vec<ReadState>,
    pub dropped_reads: Vec<u64>,
    /// True if this round wrote and synced anything.
    pub synced: bool,
}

pub struct Replica<D: Durable> {
    pub node: Node,
    pub state: KvStateMachine,
    pub disk: D,
    /// Take a snapshot after this many applied entries (0: never).
    pub snapshot_every: u64,
    last_snapshot_index: LogIndex,
    /// A snapshot arriving from the leader in chunks, until it is complete.
    staging: Vec<u8>,
    /// Rounds to wait before the next automatic snapshot attempt after one
    /// the storage refused without harm (`Durable::snapshot_can_wait`).
    snapshot_retry_rounds: u32,
}

/// Rounds of ready handling between automatic snapshot attempts on a disk
/// that refused one (a few seconds at the default tick).
const SNAPSHOT_RETRY_ROUNDS: u32 = 1000;

impl<D: Durable> Replica<D> {
    /// Rebuilds a replica from what storage recovered. `bootstrap` is the
    /// membership of a brand-new cluster.
    pub fn open(
        config: Config,
        recovered: Recovered,
        bootstrap: Membership,
        disk: D,
        dedup_limit: usize,
    ) -> Result<Replica<D>, ReplicaError<D::Error>> {
        let snapshot_bytes = recovered
            .snapshot
            .as_ref()
            .map_or(0, |(_, data)| data.len() as u64);
        let (state, snapshot_meta) = match recovered.snapshot {
            Some((meta, data)) => {
                let state = restore_snapshot_state(&meta, &data)?;
                (state, Some(meta))
            }
            None => (KvStateMachine::with_dedup_limit(dedup_limit), None),
        };
        let last_snapshot_index = snapshot_meta.as_ref().map_or(LogIndex::ZERO, |m| m.index);
        let node = Node::new(
            config,
            InitialState {
                hard_state: recovered.hard_state,
                snapshot: snapshot_meta,
                snapshot_bytes,
                entries: recovered.entries,
                bootstrap,
                damaged_up_to_term: recovered.damaged_up_to_term,
            },
        )?;
        Ok(Replica {
            node,
            state,
            disk,
            snapshot_every: 0,
            last_snapshot_index,
            staging: Vec::new(),
            snapshot_retry_rounds: 0,
        })
    }

    /// Steps an input into the node.
    pub fn step(&mut self, input: Input) -> Result<raft_core::Accepted, raft_core::StepError> {
        self.node.step(input)
    }

    /// Handles one `Ready` through raft-core's one loop
    /// ([`Node::handle_ready`]): observe, send (the node holds back what
    /// must wait for durability), persist and sync, acknowledge, apply,
    /// answer reads. Returns None if there was nothing to do.
    pub fn process_ready(
        &mut self,
        send: impl FnMut(Message),
    ) -> Result<Option<Output>, ReplicaError<D::Error>> {
        let mut out = Output::default();
        let mut round = Round {
            state: &mut self.state,
            disk: &mut self.disk,
            staging: &mut self.staging,
            last_snapshot_index: &mut self.last_snapshot_index,
            out: &mut out,
            send,
        };
        if !self.node.handle_ready(&mut round)? {
            return Ok(None);
        }
        self.snapshot_retry_rounds = self.snapshot_retry_rounds.saturating_sub(1);
        if self.snapshot_every > 0
            && self.snapshot_retry_rounds == 0
            && self.node.applied_index().0 >= self.last_snapshot_index.0 + self.snapshot_every
        {
            match self.take_snapshot() {
                Err(ReplicaError::Storage(e)) if D::snapshot_can_wait(&e) => {
                    tracing::warn!(error = %e, retry_after_rounds = SNAPSHOT_RETRY_ROUNDS, "snapshot not taken; will retry");
                    self.snapshot_retry_rounds = SNAPSHOT_RETRY_ROUNDS;
                }
                other => {
                    other?;
                }
            }
        }
        Ok(Some(out))
    }

    /// Snapshots the state machine at its applied index and compacts the log.
    pub fn take_snapshot(&mut self) -> Result<Option<SnapshotMeta>, ReplicaError<D::Error>> {
        let applied = self.node.applied_index();
        if applied <= self.last_snapshot_index {
            return Ok(None);
        }
        let meta = self
            .node
            .snapshot_meta_at(applied)
            .expect("the applied index is in the log");
        let data = self.state.snapshot_bytes();
        self.disk
            .save_snapshot(&meta, &data)
            .map_err(ReplicaError::Storage)?;
        let size_bytes = data.len() as u64;
        self.node
            .step(Input::SnapshotTaken {
                meta: meta.clone(),
                size_bytes,
            })
            .expect("snapshot at the applied index is accepted");
        self.last_snapshot_index = meta.index;
        Ok(Some(meta))
    }

    pub fn last_snapshot_index(&self) -> LogIndex {
        self.last_snapshot_index
    }
}

/// A replica's share of one `Ready`: what raft-core's loop calls, step by
/// step, in the contract's order.
struct Round<'a, D: Durable, S: FnMut(Message)> {
    state: &'a mut KvStateMachine,
    disk: &'a mut D,
    staging: &'a mut Vec<u8>,
    last_snapshot_index: &'a mut LogIndex,
    out: &'a mut Output,
    send: S,
}

impl<D: Durable, S: FnMut(Message)> ReadyHandler for Round<'_, D, S> {
    type Error = ReplicaError<D::Error>;

    fn soft_state(&mut self, soft: &SoftState) {
        self.out.soft_state = Some(*soft);
    }

    fn send(&mut self, message: Message) -> Result<(), Self::Error> {
        (self.send)(message);
        Ok(())
    }

    fn snapshot_chunk(
        &mut self,
        meta: &SnapshotMeta,
        offset: u64,
        len: u64,
    ) -> Result<Bytes, Self::Error> {
        // Only the stored snapshot is sent: the core names the snapshot it
        // was last told of (taken, installed or recovered), which is the one
        // this replica stored. Checked here, once, for every kind of storage.
        assert_eq!(
            meta.index, *self.last_snapshot_index,
            "the core asks to send the snapshot at {}, but the stored one is at {}",
            meta.index, self.last_snapshot_index
        );
        self.disk
            .snapshot_chunk(meta, offset, len)
            .map_err(ReplicaError::Storage)
    }

    // Chunks are staged in memory: if we crash mid-transfer, the core
    // restarts too and asks the leader for the snapshot from the start.
    fn stage_snapshot_chunk(&mut self, chunk: SnapshotChunk) -> Result<(), Self::Error> {
        if chunk.offset == 0 {
            self.staging.clear();
        }
        assert_eq!(
            chunk.offset,
            self.staging.len() as u64,
            "snapshot chunks arrive in order"
        );
        self.staging.extend_from_slice(&chunk.data);
        Ok(())
    }

    fn install_snapshot(&mut self, meta: &SnapshotMeta) -> Result<(), Self::Error> {
        let data = Bytes::from(std::mem::take(self.staging));
        // Validate before anything is replaced: a corrupt transfer must not
        // destroy the log we have.
        let state = restore_snapshot_state(meta, &data)?;
        self.disk
            .install_snapshot(meta, &data)
            .map_err(ReplicaError::Storage)?;
        *self.state = state;
        *self.last_snapshot_index = meta.index;
        Ok(())
    }

    fn append(&mut self, entries: &[Entry]) -> Result<(), Self::Error> {
        self.disk.append(entries).map_err(ReplicaError::Storage)
    }

    fn set_hard_state(&mut self, hard_state: &HardState) -> Result<(), Self::Error> {
        self.disk
            .set_hard_state(hard_state)
            .map_err(ReplicaError::Storage)
    }

    fn persist(&mut self, _ready: u64, must_sync: bool) -> Result<Durability, Self::Error> {
        // A round that only moved the commit index is written without an
        // fsync of its own (`Ready::must_sync`): on the path of a lone write
        // that saves the one between the followers' acknowledgements and
        // the reply.
        if must_sync {
            self.disk.sync().map_err(ReplicaError::Storage)?;
            self.out.synced = true;
        }
        Ok(Durability::Now)
    }

    fn apply(&mut self, entries: Vec<Entry>) -> Result<(), Self::Error> {
        for entry in &entries {
            self.out.applied.push(self.state.apply_entry(entry));
        }
        Ok(())
    }

    fn reads(&mut self, read_states: Vec<ReadState>, dropped_reads: Vec<u64>) {
        self.out.read_states = read_states;
        self.out.dropped_reads = dropped_reads;
    }
}

/// Decodes a snapshot's state and checks that it is the state its metadata
/// describes: a mismatch (a corrupt file, a buggy or hostile peer) stops the
/// node with a clear error instead of applying from the wrong place.
fn restore_snapshot_state<E: std::error::Error + 'static>(
    meta: &SnapshotMeta,
    data: &[u8],
) -> Result<KvStateMachine, ReplicaError<E>> {
    let state = KvStateMachine::restore_from_bytes(data)?;
    if state.applied_index() != meta.index.0 {
        return Err(ReplicaError::SnapshotMismatch {
            meta_index: meta.index.0,
            state_index: state.applied_index(),
        });
    }
    Ok(state)
}
