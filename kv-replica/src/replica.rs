//! One replica: a raft-core node, the KV state machine and durable storage,
//! with its steps of raft-core's Ready loop, which both kv-node and the
//! simulator run.
//!
//! Only the world differs between the two: the [`Durable`] implementation
//! (a real WAL or a simulated disk) and what `send` does with a message.

use crate::state_machine::{Applied, KeyList, KvStateMachine, SnapshotError};
use crate::watch::WatchEvent;
use bytes::Bytes;
use raft_core::{
    ChunkRequest, Config, ConfigError, Durability, Entry, HardState, InitialState, Input, LogIndex,
    Membership, Message, Node, ReadState, ReadyHandler, SnapshotChunk, SnapshotMeta, SoftState,
    Term,
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
    /// Ends round `ready`'s writes (raft-core's persist step). `must_sync`
    /// is false when the round only moved the commit index
    /// (`Ready::must_sync`). The default makes them durable now.
    ///
    /// A disk with a persist stage (kv-node: a thread of its own; the
    /// simulator: a later event, with crashes possible in between) hands
    /// them to it and returns [`Durability::Later`]: the world then calls
    /// [`Replica::persisted`] with the newest round made durable, in the
    /// order of the rounds (one fsync may cover several). Until then the
    /// core holds back what depends on them (votes, a follower's
    /// acknowledgements) and applies nothing they hold. The stage keeps
    /// the rounds' writes in order, and every other write (a snapshot
    /// installed, one of our own finished) after the rounds before it;
    /// what the disk reads back (snapshot chunks) reflects them. An error
    /// in the stage stops the node, as one returned here would.
    fn persist(&mut self, _ready: u64, must_sync: bool) -> Result<Durability, Self::Error> {
        if must_sync {
            self.sync()?;
        }
        Ok(Durability::Now)
    }
    /// Whether `persist` hands rounds to a persist stage (`Durability::Later`).
    /// Only then is a commit-only round kept back from the disk while the
    /// stage is idle (see `RoundsInFlight`): without a stage, writing it
    /// costs no wake-up.
    fn has_persist_stage(&self) -> bool {
        false
    }
    /// What a snapshot write started by `start_snapshot` hands back when it
    /// ends, through the world's own channel, to
    /// [`Replica::snapshot_written`].
    type SnapshotWritten;
    /// Starts writing a snapshot of `state` (a capture: an O(1) clone of the
    /// state machine at `meta.index`) and returns at once. The write and its
    /// fsync happen elsewhere (kv-node: a background thread; the simulator:
    /// a later event, with crashes possible in between); when it is over,
    /// the world hands its `SnapshotWritten` to `Replica::snapshot_written`.
    /// At most one is in flight.
    ///
    /// With `delta`, the snapshot is written as a delta on top of the
    /// stored one (`delta.base`), holding only `delta.changed`; only asked
    /// of a disk that [`Durable::writes_deltas`].
    fn start_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        state: KvStateMachine,
        delta: Option<DeltaOf>,
    ) -> Result<(), Self::Error>;
    /// Whether this disk writes delta snapshots and keeps their chains
    /// (default: no, every snapshot is whole).
    fn writes_deltas(&self) -> bool {
        false
    }
    /// Ends a snapshot write on the replica's thread: if it succeeded and is
    /// newer than the stored snapshot, makes it the stored one, drops the
    /// log it covers and returns its metadata and size in bytes; if a newer
    /// snapshot was installed meanwhile, discards it and returns None.
    fn finish_snapshot(
        &mut self,
        written: Self::SnapshotWritten,
    ) -> Result<Option<(SnapshotMeta, u64)>, Self::Error>;
    /// Whether `error`, from `start_snapshot` or `finish_snapshot`, left the
    /// storage as it was (a full disk refused the snapshot file): the
    /// replica then goes on and tries again later instead of stopping.
    fn snapshot_can_wait(_error: &Self::Error) -> bool {
        false
    }
    /// Stages bytes `offset..` of a snapshot arriving from the leader
    /// (`offset` 0 starts a new one, dropping what was staged). Staged
    /// bytes need not be durable: after a crash raft-core asks the leader
    /// for the snapshot from the start. A file-backed store stages on disk,
    /// so that a large snapshot is never held in memory.
    fn stage_snapshot_chunk(&mut self, offset: u64, data: &[u8]) -> Result<(), Self::Error>;
    /// Bytes staged so far.
    fn staged_snapshot_bytes(&self) -> u64;
    /// Streams the staged snapshot to `read`.
    fn read_staged_snapshot<T>(
        &mut self,
        read: impl FnOnce(&mut dyn std::io::Read) -> T,
    ) -> Result<T, Self::Error>;
    /// The staged snapshot, already decoded, if this disk decodes the
    /// chunks while they arrive (kv-node: on a thread of its own, so that a
    /// large restore does not stop the follower's driver after the last
    /// chunk); called once the last chunk is staged. `None`: the replica
    /// reads the staged bytes back and decodes them itself.
    fn take_decoded_snapshot(&mut self) -> Option<Result<KvStateMachine, SnapshotError>> {
        None
    }
    /// Stores the staged snapshot (at `meta`) and discards the whole log.
    fn install_staged_snapshot(&mut self, meta: &SnapshotMeta) -> Result<(), Self::Error>;
    /// The bytes of the newest snapshot that `chunk` names (its `meta` was
    /// checked by the replica to be the stored one; fewer at its end), for
    /// one InstallSnapshot message. A
    /// file-backed store reads just that range, so that sending a snapshot
    /// never holds a second copy of the state in memory.
    fn snapshot_chunk(&mut self, chunk: ChunkRequest) -> Result<Bytes, Self::Error>;
}

/// A snapshot to write as a delta: what changed since the stored one.
#[derive(Debug)]
pub struct DeltaOf {
    /// The stored snapshot's index, which the delta goes on top of.
    pub base: LogIndex,
    /// The keys put or deleted since then (in write order, with repeats).
    pub changed: KeyList,
}

/// What storage recovered, to rebuild a replica from.
#[derive(Debug, Default)]
pub struct Recovered {
    pub hard_state: HardState,
    /// The stored snapshot's metadata, and the state bytes of the whole
    /// snapshot its chain starts with (its own, when it is whole).
    pub snapshot: Option<(SnapshotMeta, Bytes)>,
    /// The deltas on top of that whole snapshot, oldest first, up to the
    /// stored snapshot (empty when it is whole).
    pub snapshot_deltas: Vec<Bytes>,
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

/// When a replica snapshots on its own (see [`Replica::process_ready`]).
///
/// A snapshot pays when the log written since the last one is as large as
/// the snapshot itself: every byte of log then costs at most one byte of
/// snapshot written, whatever the size of the data, and restart replays
/// at most about a snapshot's worth of log (raised by the stagger: up to
/// 1.8 times with kv-node's five-member spread). The floor keeps small
/// stores from snapshotting every few entries; the entry bound caps the log
/// for entries too small for the byte rule to notice soon (no-ops, tiny
/// puts).
///
/// The key-write bound caps what a restart replays in time rather than in
/// bytes: replaying costs about one random B-tree descent per key written
/// (2-3 us at 10M keys), against a fraction of that per key for loading
/// the snapshot. Batched writes (`mput`, transactions) write many keys per
/// entry, so neither the entry bound nor the byte rule (which lets the log
/// grow to a whole snapshot's size) bounds them: 10M keys loaded in a
/// random order by `mput`s of 2,000 left a 4.8M-key tail, replayed in
/// about 9 s of a 10.5 s restart. With one key per entry this bound and
/// the entry bound count alike.
///
/// With a phase, the entry bound is aligned on the log, shifted per node:
/// a node snapshots when its applied index reaches a point `k *
/// max_entries - phase`, at least half a bound after its last snapshot.
/// Members apply the same indexes, so with phases spread over the bound
/// they snapshot in turn and stay so whatever happened before (an
/// install, a manual snapshot, a restart). On one shared disk, three
/// 1.3 GB snapshots at once (10M keys) slowed every fsync for about 10 s;
/// one at a time leaves a quorum of two that is not writing a snapshot.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SnapshotPolicy {
    /// Snapshot after this many applied entries (raised by the stagger),
    /// or with a phase about this many, between half and one and a half
    /// times as many (0: no bound).
    pub max_entries: u64,
    /// This node's entry-bound snapshots fall this share of `max_entries`
    /// (0..100 percent) before the bound's multiples (kv-node spreads its
    /// members evenly by their rank). None: the bound counts from the last
    /// snapshot, raised by the stagger (the simulator's schedule, which its
    /// catalogue of seeds was found with).
    pub entry_phase_percent: Option<u64>,
    /// Snapshot once this many keys were written (puts and deletes, each key
    /// of a batch counted) since the last snapshot (0: no bound). Not
    /// staggered: kv-node and the simulator set it to one and a half entry
    /// bounds ([`SnapshotPolicy::key_writes_for`]), the longest the phased
    /// entry bound waits, so that with one key per entry the entry bound
    /// always comes first and keeps the members in turn (a lower key bound
    /// would cut in before a late point again and again and keep a member
    /// off its phase).
    pub max_key_writes: u64,
    /// Start no snapshot before the log recovered at open is replayed (up
    /// to the commit index recovered with it). A capture held during the
    /// replay makes every replayed write copy its path in the map, and the
    /// write competes with the replay for the machine: a restart is then
    /// slower by the snapshot it takes, when it is in a hurry to serve
    /// (kv-node; the simulator keeps its schedule).
    pub after_replay: bool,
    /// Snapshot once the log applied since the last snapshot
    /// ([`ENTRY_OVERHEAD_BYTES`] plus the payload per entry) reaches the
    /// last snapshot's size, or this floor if that is larger. None: the
    /// byte rule is off.
    pub log_bytes_floor: Option<u64>,
    /// The byte rule's threshold raised by this many percent on this node,
    /// so that the members of a cluster (which apply the same log) do not
    /// all write their snapshots at the same moment and compete for the
    /// disk and the cores (kv-node spreads its members evenly by rank, as
    /// for `entry_phase_percent`; 0 by default).
    pub stagger_percent: u64,
}

impl SnapshotPolicy {
    fn staggered(&self, threshold: u64) -> u64 {
        threshold.saturating_add(threshold.saturating_mul(self.stagger_percent) / 100)
    }

    /// Whether `key_writes` since the last snapshot reach the key-write
    /// bound.
    fn key_write_bound_reached(&self, key_writes: u64) -> bool {
        self.max_key_writes > 0 && key_writes >= self.max_key_writes
    }

    /// The key-write bound that goes with an entry bound of `max_entries`:
    /// one and a half of it (see [`SnapshotPolicy::max_key_writes`]).
    pub fn key_writes_for(max_entries: u64) -> u64 {
        max_entries.saturating_add(max_entries / 2)
    }

    /// Whether the entry bound asks for a snapshot at `applied`, the last
    /// one being at `last`: the first point `k * max_entries - phase` at
    /// least half a bound after `last` has been reached.
    fn entry_bound_reached(&self, applied: u64, last: u64) -> bool {
        let bound = self.max_entries;
        if bound == 0 {
            return false;
        }
        let Some(phase_percent) = self.entry_phase_percent else {
            return applied.saturating_sub(last) >= self.staggered(bound);
        };
        let phase = bound.saturating_mul(phase_percent % 100) / 100;
        let earliest = last.saturating_add(phase).saturating_add(bound / 2);
        let next = earliest.div_ceil(bound).saturating_mul(bound);
        applied.saturating_add(phase) >= next
    }
}

/// What each log entry costs on disk beyond its payload (term, index,
/// kind, framing), for the byte rule of [`SnapshotPolicy`].
pub const ENTRY_OVERHEAD_BYTES: u64 = 32;

/// What was applied since the last snapshot was captured, for the
/// policy's byte rule and key-write bound.
#[derive(Clone, Copy, Debug, Default)]
struct SinceSnapshot {
    /// Log bytes ([`ENTRY_OVERHEAD_BYTES`] plus the payload per entry).
    log_bytes: u64,
    /// Puts and deletes ([`KvStateMachine::key_writes`]).
    key_writes: u64,
}

impl SinceSnapshot {
    fn add(&mut self, other: SinceSnapshot) {
        self.log_bytes += other.log_bytes;
        self.key_writes += other.key_writes;
    }
}

/// The sizes of the stored snapshot's chain: a whole snapshot and the
/// deltas written on top of it since.
#[derive(Clone, Copy, Debug, Default)]
struct ChainSizes {
    whole_bytes: u64,
    /// The live bytes (keys and values) of the state the whole snapshot
    /// holds: with `whole_bytes`, what a whole snapshot costs per live
    /// byte, to estimate one of the state as it is now.
    whole_live_bytes: u64,
    delta_bytes: u64,
    deltas: u64,
}

impl ChainSizes {
    fn whole(whole_bytes: u64, whole_live_bytes: u64) -> ChainSizes {
        ChainSizes {
            whole_bytes,
            whole_live_bytes,
            ..ChainSizes::default()
        }
    }

    fn total(&self) -> u64 {
        self.whole_bytes + self.delta_bytes
    }

    /// The size a whole snapshot of a state of `live_bytes` would have,
    /// at the stored whole snapshot's bytes per live byte (the whole
    /// snapshot's own size when that is unknown).
    fn whole_now(&self, live_bytes: u64) -> u64 {
        if self.whole_live_bytes == 0 {
            return self.whole_bytes;
        }
        let estimate = u128::from(self.whole_bytes) * u128::from(live_bytes)
            / u128::from(self.whole_live_bytes);
        u64::try_from(estimate).unwrap_or(u64::MAX)
    }

    /// Whether one more delta may go on top: the chain is still smaller
    /// than twice a whole snapshot of the state now (`live_bytes`), and
    /// its deltas are fewer than [`MAX_CHAIN_DELTAS`]. Measured against
    /// the state now, not the whole snapshot's: a state that grows by new
    /// keys (a bulk load) adds deltas that are its new data, which a whole
    /// rewrite would write again, so it is never rewritten for growing;
    /// a state that stays the same size is rewritten once its deltas add
    /// up to its whole snapshot, so that deltas never cost more.
    fn takes_a_delta(&self, live_bytes: u64) -> bool {
        self.deltas < MAX_CHAIN_DELTAS
            && self.total() < self.whole_now(live_bytes).saturating_mul(2)
    }
}

/// A chain is rewritten whole once it holds this many deltas: a restore
/// reads each of them.
const MAX_CHAIN_DELTAS: u64 = 32;

/// The snapshot whose write is in flight.
#[derive(Clone, Debug)]
struct SnapshotInFlight {
    index: LogIndex,
    /// Written as a delta on top of the stored snapshot.
    delta: bool,
    /// The live bytes of the state captured.
    live_bytes: u64,
    /// What was counted toward the snapshot when it was captured, given
    /// back if the write fails and will be retried.
    since: SinceSnapshot,
}

/// What one round of ready handling produced for the world outside.
#[derive(Debug, Default)]
pub struct Output {
    pub soft_state: Option<SoftState>,
    /// Results of applied commands, for the waiting requests.
    pub applied: Vec<Applied>,
    pub read_states: Vec<ReadState>,
    pub dropped_reads: Vec<u64>,
    /// True if this round wrote anything that must be synced (synced
    /// already, or handed to the disk's persist stage).
    pub synced: bool,
    /// Changes applied this round, for watchers (empty unless
    /// [`Replica::record_watch_events`]); all after `snapshot_installed`.
    pub events: Vec<WatchEvent>,
    /// The index of a snapshot installed this round: watchers lose the
    /// revisions up to it.
    pub snapshot_installed: Option<LogIndex>,
    /// The state machine a snapshot installed this round replaced, for the
    /// world to free where it likes (dropping it frees every key).
    pub replaced_state: Option<KvStateMachine>,
}

pub struct Replica<D: Durable> {
    pub node: Node,
    pub state: KvStateMachine,
    pub disk: D,
    /// When to snapshot on its own (default: never).
    pub snapshot_policy: SnapshotPolicy,
    last_snapshot_index: LogIndex,
    /// Size in bytes of the stored snapshot's whole snapshot (0 without
    /// one): what the byte rule compares the log with.
    last_snapshot_bytes: u64,
    /// The stored snapshot's chain.
    chain: ChainSizes,
    /// The next snapshot must be whole: the changed keys since the stored
    /// snapshot are not known (none yet, a write refused, one installed
    /// from the leader or recovered from what a leader sent).
    whole_next: bool,
    /// The index the state machine tracks its changed keys since (the last
    /// capture, restore or install): a delta needs it to be the stored
    /// snapshot's.
    tracked_since: LogIndex,
    /// What was applied since the last snapshot was captured.
    since_snapshot: SinceSnapshot,
    /// The commit index recovered at open: until the state machine has
    /// applied up to it (the restart's replay of its own log), the policy
    /// starts no snapshot (see [`SnapshotPolicy::after_replay`]).
    replay_end: LogIndex,
    /// Invariant: at most one snapshot write is in flight; while one is,
    /// no other starts.
    snapshot_in_flight: Option<SnapshotInFlight>,
    /// Rounds to wait before the next automatic snapshot attempt after one
    /// the storage refused without harm (`Durable::snapshot_can_wait`).
    snapshot_retry_rounds: u32,
    /// The leader's lease countdowns, stepped on every tick
    /// (`replica_leases`).
    pub(crate) lease_clock: crate::lease_clock::LeaseClock,
    /// Rounds handed to the disk's persist stage and acknowledged.
    rounds: RoundsInFlight,
}

/// Which rounds the disk's persist stage holds, and a commit-only hard
/// state not handed to it yet.
///
/// A round that only moves the commit index needs no fsync
/// (`Ready::must_sync`), but handed to a persist stage it still costs a
/// wake-up of the stage's thread and one of the driver's for the
/// acknowledgement, on every node for every lone write. When the stage
/// holds nothing (and the disk has one: `Durable::has_persist_stage`), the
/// round is acknowledged at once instead and its hard state waits
/// ([`RoundsInFlight::deferred`]): the next round writes it
/// (unless its own hard state supersedes it), or the next tick does. A
/// crash may lose it, as it may lose any unsynced commit index; the
/// leader tells it again.
#[derive(Debug, Default)]
struct RoundsInFlight {
    /// The newest round the disk answered `Durability::Later` for.
    handed_out: u64,
    /// The newest round acknowledged (`Replica::persisted`).
    acknowledged: u64,
    /// The hard state of the newest round, acknowledged at once, with that
    /// round's number; taken by the next round that goes to the stage.
    deferred: Option<(u64, HardState)>,
}

impl RoundsInFlight {
    fn stage_is_idle(&self) -> bool {
        self.acknowledged >= self.handed_out
    }
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
        let whole_bytes = recovered
            .snapshot
            .as_ref()
            .map_or(0, |(_, data)| data.len() as u64);
        let chain = ChainSizes {
            whole_bytes,
            // Unknown from the files (a merged restore never holds the
            // whole snapshot's state alone): the whole snapshot's own size
            // stands for one now, which rewrites a grown chain sooner.
            whole_live_bytes: 0,
            delta_bytes: recovered
                .snapshot_deltas
                .iter()
                .map(|d| d.len() as u64)
                .sum(),
            deltas: recovered.snapshot_deltas.len() as u64,
        };
        let snapshot_bytes = chain.total();
        // A whole snapshot that a leader sent with deltas after it cannot
        // take deltas of ours: they would be read as one (the merge reads
        // each file as a whole snapshot or a delta).
        let mut whole_next = true;
        let (state, snapshot_meta) = match recovered.snapshot {
            Some((meta, data)) => {
                let (state, received_deltas) =
                    restore_chain_state(&meta, &data, &recovered.snapshot_deltas)?;
                whole_next = received_deltas > 0;
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
        // The commit index as the core took it in (checked against the log,
        // at least the snapshot's index).
        let replay_end = node.commit_index();
        Ok(Replica {
            node,
            state,
            disk,
            snapshot_policy: SnapshotPolicy::default(),
            last_snapshot_index,
            last_snapshot_bytes: chain.whole_bytes,
            chain,
            whole_next,
            tracked_since: last_snapshot_index,
            since_snapshot: SinceSnapshot::default(),
            replay_end,
            snapshot_in_flight: None,
            snapshot_retry_rounds: 0,
            lease_clock: crate::lease_clock::LeaseClock::new(crate::lease_clock::DEFAULT_TICK_MS),
            rounds: RoundsInFlight::default(),
        })
    }

    /// Switches known bugs on (only with the `buggy` feature; see `bugs`).
    pub fn set_bugs(&mut self, bugs: crate::bugs::ReplicaBugs) {
        self.state.set_bugs(bugs);
        self.lease_clock.set_bugs(bugs);
    }

    /// Records the changes each round applies into [`Output::events`]
    /// (off by default; kv-node switches it on to serve watches). Call it
    /// before the first round, so that the log replayed on restart feeds
    /// the watch history too.
    pub fn record_watch_events(&mut self, on: bool) {
        self.state.record_events(on);
    }

    /// Steps an input into the node. A tick also steps the lease
    /// countdowns, which may propose expire entries.
    pub fn step(&mut self, input: Input) -> Result<raft_core::Accepted, raft_core::StepError> {
        let tick = matches!(input, Input::Tick);
        let accepted = self.node.step(input)?;
        if tick {
            self.tick_leases();
        }
        Ok(accepted)
    }

    /// Hands a deferred commit-only hard state (see [`RoundsInFlight`]) to
    /// the disk, numbered as the round it came from (already acknowledged:
    /// its acknowledgement changes nothing). The world calls it on each
    /// tick and before it stops.
    pub fn write_deferred_hard_state(&mut self) -> Result<(), ReplicaError<D::Error>> {
        let Some((ready, hard_state)) = self.rounds.deferred.take() else {
            return Ok(());
        };
        self.disk
            .set_hard_state(&hard_state)
            .map_err(ReplicaError::Storage)?;
        if self
            .disk
            .persist(ready, false)
            .map_err(ReplicaError::Storage)?
            == Durability::Later
        {
            self.rounds.handed_out = ready;
        }
        Ok(())
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
            last_snapshot_index: &mut self.last_snapshot_index,
            last_snapshot_bytes: &mut self.last_snapshot_bytes,
            chain: &mut self.chain,
            whole_next: &mut self.whole_next,
            tracked_since: &mut self.tracked_since,
            since_snapshot: &mut self.since_snapshot,
            rounds: &mut self.rounds,
            round_hard_state: None,
            out: &mut out,
            send,
        };
        if !self.node.handle_ready(&mut round)? {
            return Ok(None);
        }
        self.snapshot_retry_rounds = self.snapshot_retry_rounds.saturating_sub(1);
        if self.snapshot_retry_rounds == 0 && self.snapshot_due() {
            self.start_snapshot()?;
        }
        Ok(Some(out))
    }

    /// The disk's persist stage made every round up to `ready` durable
    /// ([`Durable::persist`] returned `Durability::Later`): the core may
    /// now send what it held back for them and apply what they hold.
    /// Called in the order of the rounds; handle the next `Ready` after.
    pub fn persisted(&mut self, ready: u64) {
        self.rounds.acknowledged = self.rounds.acknowledged.max(ready);
        self.node
            .step(Input::Persisted { ready })
            .expect("acknowledging a round handed out never fails");
    }

    /// Whether the policy asks for a snapshot now.
    fn snapshot_due(&self) -> bool {
        let policy = &self.snapshot_policy;
        let (applied, last) = (self.node.applied_index().0, self.last_snapshot_index.0);
        self.snapshot_in_flight.is_none()
            && applied > last
            && (!policy.after_replay || applied >= self.replay_end.0)
            && (policy.entry_bound_reached(applied, last)
                || policy.key_write_bound_reached(self.since_snapshot.key_writes)
                || policy.log_bytes_floor.is_some_and(|floor| {
                    self.since_snapshot.log_bytes
                        >= policy.staggered(floor.max(self.last_snapshot_bytes))
                }))
    }

    /// Captures the state machine at its applied index (an O(1) clone) and
    /// starts writing it as a snapshot; returns its metadata, or None if
    /// there is nothing new to snapshot or a write is already in flight.
    /// The log is compacted only when the write is durable
    /// ([`Replica::snapshot_written`]): until then a crash restarts from
    /// the previous snapshot and the whole log, as if none was started.
    pub fn start_snapshot(&mut self) -> Result<Option<SnapshotMeta>, ReplicaError<D::Error>> {
        let applied = self.node.applied_index();
        if applied <= self.last_snapshot_index || self.snapshot_in_flight.is_some() {
            return Ok(None);
        }
        debug_assert_eq!(applied.0, self.state.applied_index());
        let meta = self
            .node
            .snapshot_meta_at(applied)
            .expect("the applied index is in the log");
        // Tracking restarts at every capture, whole or delta.
        let changed = self.state.take_changed_keys();
        let delta = changed
            .filter(|_| self.delta_possible())
            .map(|changed| DeltaOf {
                base: self.last_snapshot_index,
                changed,
            });
        self.tracked_since = applied;
        let is_delta = delta.is_some();
        match self.disk.start_snapshot(&meta, self.state.clone(), delta) {
            Ok(()) => {}
            Err(e) if D::snapshot_can_wait(&e) => {
                self.snapshot_refused(&e);
                return Ok(None);
            }
            Err(e) => return Err(ReplicaError::Storage(e)),
        }
        self.snapshot_in_flight = Some(SnapshotInFlight {
            index: meta.index,
            delta: is_delta,
            live_bytes: self.state.live_bytes(),
            since: std::mem::take(&mut self.since_snapshot),
        });
        Ok(Some(meta))
    }

    /// A snapshot write started by [`Replica::start_snapshot`] ended: once
    /// it is durable the core learns of it (`SnapshotTaken`) and the log it
    /// covers is dropped. Returns its metadata, or None if it was refused
    /// without harm (retried later) or overtaken by a snapshot installed
    /// from the leader meanwhile.
    pub fn snapshot_written(
        &mut self,
        written: D::SnapshotWritten,
    ) -> Result<Option<SnapshotMeta>, ReplicaError<D::Error>> {
        let in_flight = self
            .snapshot_in_flight
            .take()
            .expect("a snapshot write ends only after it started");
        let (meta, size_bytes) = match self.disk.finish_snapshot(written) {
            Ok(Some(done)) => done,
            Ok(None) => {
                self.whole_next = true;
                return Ok(None);
            }
            Err(e) if D::snapshot_can_wait(&e) => {
                self.since_snapshot.add(in_flight.since);
                self.snapshot_refused(&e);
                return Ok(None);
            }
            Err(e) => return Err(ReplicaError::Storage(e)),
        };
        assert_eq!(
            meta.index, in_flight.index,
            "the snapshot written is at {}, the one started at {}",
            meta.index, in_flight.index
        );
        if meta.index <= self.last_snapshot_index {
            // A newer snapshot was installed meanwhile; the disk keeps it.
            self.whole_next = true;
            return Ok(None);
        }
        if in_flight.delta {
            self.chain.delta_bytes += size_bytes;
            self.chain.deltas += 1;
        } else {
            self.chain = ChainSizes::whole(size_bytes, in_flight.live_bytes);
        }
        self.whole_next = false;
        self.node
            .step(Input::SnapshotTaken {
                meta: meta.clone(),
                size_bytes: self.chain.total(),
            })
            .expect("a snapshot at or below the applied index is accepted");
        self.last_snapshot_index = meta.index;
        self.last_snapshot_bytes = self.chain.whole_bytes;
        Ok(Some(meta))
    }

    /// Whether the snapshot about to be captured can be a delta on top of
    /// the stored one: the disk writes them, the changed keys are known
    /// since exactly the stored snapshot, and its chain still takes one
    /// ([`ChainSizes::takes_a_delta`]; else it is rewritten whole).
    fn delta_possible(&self) -> bool {
        self.disk.writes_deltas()
            && !self.whole_next
            && self.last_snapshot_index > LogIndex::ZERO
            && self.tracked_since == self.last_snapshot_index
            && self.chain.takes_a_delta(self.state.live_bytes())
    }

    fn snapshot_refused(&mut self, error: &D::Error) {
        // The keys changed since the stored snapshot are lost with the
        // capture.
        self.whole_next = true;
        tracing::warn!(error = %error, retry_after_rounds = SNAPSHOT_RETRY_ROUNDS, "snapshot not taken; will retry");
        self.snapshot_retry_rounds = SNAPSHOT_RETRY_ROUNDS;
    }

    /// The index of the snapshot being written, if one is.
    pub fn snapshot_in_flight(&self) -> Option<LogIndex> {
        self.snapshot_in_flight.as_ref().map(|s| s.index)
    }

    /// Size in bytes of the stored snapshot's chain, its whole snapshot and
    /// the deltas on top (what a follower is sent; 0 without one).
    pub fn snapshot_chain_bytes(&self) -> u64 {
        self.chain.total()
    }

    /// Size in bytes of the stored snapshot (0 without one).
    pub fn last_snapshot_bytes(&self) -> u64 {
        self.last_snapshot_bytes
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
    last_snapshot_index: &'a mut LogIndex,
    last_snapshot_bytes: &'a mut u64,
    chain: &'a mut ChainSizes,
    whole_next: &'a mut bool,
    tracked_since: &'a mut LogIndex,
    since_snapshot: &'a mut SinceSnapshot,
    rounds: &'a mut RoundsInFlight,
    /// This round's hard state, written at `persist` (after its entries,
    /// as the contract orders) unless the round is deferred whole.
    round_hard_state: Option<HardState>,
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

    fn snapshot_chunk(&mut self, chunk: ChunkRequest) -> Result<Bytes, Self::Error> {
        // Only the stored snapshot is sent: the core names the snapshot it
        // was last told of (taken, installed or recovered), which is the one
        // this replica stored. Checked here, once, for every kind of storage.
        assert_eq!(
            chunk.meta.index, *self.last_snapshot_index,
            "the core asks to send the snapshot at {}, but the stored one is at {}",
            chunk.meta.index, self.last_snapshot_index
        );
        self.disk
            .snapshot_chunk(chunk)
            .map_err(ReplicaError::Storage)
    }

    // Chunks are staged by the disk (kv-node: in a file): if we crash
    // mid-transfer, the core restarts too and asks the leader for the
    // snapshot from the start.
    fn stage_snapshot_chunk(&mut self, chunk: SnapshotChunk) -> Result<(), Self::Error> {
        let staged = self.disk.staged_snapshot_bytes();
        assert!(
            chunk.offset == 0 || chunk.offset == staged,
            "snapshot chunk at {} arrives after {staged} staged bytes",
            chunk.offset
        );
        self.disk
            .stage_snapshot_chunk(chunk.offset, &chunk.data)
            .map_err(ReplicaError::Storage)
    }

    fn install_snapshot(&mut self, meta: &SnapshotMeta) -> Result<(), Self::Error> {
        // Validate before anything is replaced: a corrupt transfer must not
        // destroy the log we have. Streamed: the state is built as the
        // records are read, never a second copy in memory.
        let size_bytes = self.disk.staged_snapshot_bytes();
        let state = match self.disk.take_decoded_snapshot() {
            Some(decoded) => check_snapshot_index(meta, decoded?)?,
            None => self
                .disk
                .read_staged_snapshot(|r| read_snapshot_state(meta, r))
                .map_err(ReplicaError::Storage)??,
        };
        self.disk
            .install_staged_snapshot(meta)
            .map_err(ReplicaError::Storage)?;
        let recording = self.state.records_events();
        let bugs = self.state.bugs();
        // Handed out rather than dropped here: freeing a large state takes
        // time the world may want to spend on another thread.
        self.out.replaced_state = Some(std::mem::replace(self.state, state));
        self.state.record_events(recording);
        self.state.set_bugs(bugs);
        self.out.events.clear();
        self.out.snapshot_installed = Some(meta.index);
        *self.last_snapshot_index = meta.index;
        *self.last_snapshot_bytes = size_bytes;
        // Not a delta on top of it (`whole_next`): its live bytes matter
        // only once ours replaces it.
        *self.chain = ChainSizes::whole(size_bytes, 0);
        // What the leader sent may hold deltas after its whole snapshot,
        // stored as one file: ours cannot go on top of it.
        *self.whole_next = true;
        *self.tracked_since = meta.index;
        *self.since_snapshot = SinceSnapshot::default();
        // The install round's own hard state covers the snapshot.
        self.rounds.deferred = None;
        Ok(())
    }

    fn append(&mut self, entries: &[Entry]) -> Result<(), Self::Error> {
        self.disk.append(entries).map_err(ReplicaError::Storage)
    }

    fn set_hard_state(&mut self, hard_state: &HardState) -> Result<(), Self::Error> {
        self.round_hard_state = Some(*hard_state);
        Ok(())
    }

    fn persist(&mut self, ready: u64, must_sync: bool) -> Result<Durability, Self::Error> {
        // A round that only moved the commit index is written without an
        // fsync of its own (`Ready::must_sync`): on the path of a lone write
        // that saves the one between the followers' acknowledgements and
        // the reply.
        self.out.synced = must_sync;
        // Entries, a snapshot or a new term or vote all sync; a round that
        // does not wrote at most its hard state (and staged snapshot
        // chunks, which need not be durable).
        if !must_sync && self.disk.has_persist_stage() && self.rounds.stage_is_idle() {
            if let Some(hard_state) = self.round_hard_state.take() {
                self.rounds.deferred = Some((ready, hard_state));
            }
            return Ok(Durability::Now);
        }
        // A deferred hard state goes out with the next round, unless the
        // round's own (newer) one supersedes it.
        let deferred = self
            .rounds
            .deferred
            .take()
            .map(|(_, hard_state)| hard_state);
        if let Some(hard_state) = self.round_hard_state.take().or(deferred) {
            self.disk
                .set_hard_state(&hard_state)
                .map_err(ReplicaError::Storage)?;
        }
        let durability = self
            .disk
            .persist(ready, must_sync)
            .map_err(ReplicaError::Storage)?;
        if durability == Durability::Later {
            self.rounds.handed_out = ready;
        }
        Ok(durability)
    }

    fn apply(&mut self, entries: Vec<Entry>) -> Result<(), Self::Error> {
        let key_writes_before = self.state.key_writes();
        for entry in &entries {
            self.since_snapshot.log_bytes += ENTRY_OVERHEAD_BYTES + entry.data.len() as u64;
            self.out.applied.push(self.state.apply_entry(entry));
        }
        self.since_snapshot.key_writes += self.state.key_writes() - key_writes_before;
        if self.state.records_events() {
            self.out.events.append(&mut self.state.take_events());
        }
        Ok(())
    }

    fn reads(&mut self, read_states: Vec<ReadState>, dropped_reads: Vec<u64>) {
        self.out.read_states = read_states;
        self.out.dropped_reads = dropped_reads;
    }
}

/// [`restore_snapshot_state`] over a stream that must end with the snapshot.
fn read_snapshot_state<E: std::error::Error + 'static>(
    meta: &SnapshotMeta,
    mut r: &mut dyn std::io::Read,
) -> Result<KvStateMachine, ReplicaError<E>> {
    let (state, _) = KvStateMachine::read_snapshot_stream(&mut r)?;
    check_snapshot_index(meta, state)
}

/// Decodes a stored snapshot's state from its chain (a whole snapshot,
/// possibly followed in the same bytes by deltas a leader sent with it,
/// then our own deltas on top) and checks that it is the state its
/// metadata describes: a mismatch (a corrupt file, a buggy or hostile
/// peer) stops the node with a clear error instead of applying from the
/// wrong place. Also returns how many deltas followed the whole snapshot
/// in its own bytes.
fn restore_chain_state<E: std::error::Error + 'static>(
    meta: &SnapshotMeta,
    whole: &[u8],
    deltas: &[Bytes],
) -> Result<(KvStateMachine, usize), ReplicaError<E>> {
    if deltas.is_empty() {
        let (state, received) = KvStateMachine::read_snapshot_stream(&mut { whole })?;
        return Ok((check_snapshot_index(meta, state)?, received));
    }
    let mut whole_reader = whole;
    let mut readers: Vec<&[u8]> = deltas.iter().map(|d| &d[..]).collect();
    let state = KvStateMachine::restore_merged(&mut whole_reader, &mut readers)?;
    if !whole_reader.is_empty() || readers.iter().any(|rest| !rest.is_empty()) {
        // Deltas of ours on a received chain: never written (`whole_next`).
        return Err(ReplicaError::Snapshot(SnapshotError::TrailingBytes {
            count: whole_reader.len() + readers.iter().map(|r| r.len()).sum::<usize>(),
        }));
    }
    Ok((check_snapshot_index(meta, state)?, 0))
}

fn check_snapshot_index<E: std::error::Error + 'static>(
    meta: &SnapshotMeta,
    state: KvStateMachine,
) -> Result<KvStateMachine, ReplicaError<E>> {
    if state.applied_index() != meta.index.0 {
        return Err(ReplicaError::SnapshotMismatch {
            meta_index: meta.index.0,
            state_index: state.applied_index(),
        });
    }
    Ok(state)
}

#[cfg(test)]
mod tests {
    use super::{ChainSizes, MAX_CHAIN_DELTAS, SnapshotPolicy};

    /// A chain of a 1,000-byte whole snapshot of 800 live bytes, with
    /// deltas of `delta_bytes` in all.
    fn chain(delta_bytes: u64, deltas: u64) -> ChainSizes {
        ChainSizes {
            delta_bytes,
            deltas,
            ..ChainSizes::whole(1_000, 800)
        }
    }

    /// Data of a steady size: deltas until they add up to the whole
    /// snapshot (the rule before the estimate, which it keeps).
    #[test]
    fn a_chain_of_steady_data_takes_deltas_until_they_add_up_to_its_whole_snapshot() {
        assert!(chain(0, 0).takes_a_delta(800));
        assert!(chain(999, 5).takes_a_delta(800));
        assert!(!chain(1_000, 5).takes_a_delta(800));
    }

    /// Data that grew: measured against a whole snapshot of the data now,
    /// so that a bulk load's deltas (its new data) do not force a rewrite.
    #[test]
    fn a_chain_of_grown_data_is_measured_against_a_whole_snapshot_now() {
        // 4x the live bytes: a whole snapshot now would be about 4,000.
        let grown = chain(5_000, 3);
        assert_eq!(grown.whole_now(3_200), 4_000);
        assert!(grown.takes_a_delta(3_200), "6,000 < 2 x 4,000");
        assert!(!chain(7_000, 3).takes_a_delta(3_200), "8,000 = 2 x 4,000");
        // Data deleted down to a quarter: rewritten sooner.
        assert_eq!(chain(0, 0).whole_now(200), 250);
        assert!(!chain(0, 0).takes_a_delta(200), "1,000 >= 2 x 250");
    }

    /// Without the whole snapshot's live bytes (a restart, an install),
    /// its own size stands for one now.
    #[test]
    fn a_chain_of_unknown_live_bytes_is_measured_against_its_whole_snapshot() {
        let recovered = ChainSizes {
            delta_bytes: 999,
            deltas: 2,
            ..ChainSizes::whole(1_000, 0)
        };
        assert_eq!(recovered.whole_now(1 << 40), 1_000);
        assert!(recovered.takes_a_delta(1 << 40));
        let full = ChainSizes {
            delta_bytes: 1_000,
            ..recovered
        };
        assert!(!full.takes_a_delta(1 << 40));
    }

    /// However small the deltas, a restore reads at most so many files.
    #[test]
    fn a_chain_takes_at_most_max_chain_deltas() {
        assert!(chain(1, MAX_CHAIN_DELTAS - 1).takes_a_delta(800));
        assert!(!chain(1, MAX_CHAIN_DELTAS).takes_a_delta(800));
        // No overflow at the extremes.
        let huge = ChainSizes::whole(u64::MAX, 1);
        assert_eq!(huge.whole_now(u64::MAX), u64::MAX);
        assert!(!huge.takes_a_delta(u64::MAX), "total is not below u64::MAX");
    }

    /// Where a node with this phase snapshots by the entry bound alone,
    /// from index 0 up to `until`.
    fn entry_bound_snapshots(bound: u64, phase_percent: u64, until: u64) -> Vec<u64> {
        let policy = SnapshotPolicy {
            max_entries: bound,
            entry_phase_percent: Some(phase_percent),
            ..SnapshotPolicy::default()
        };
        let mut last = 0;
        let mut taken = Vec::new();
        for applied in 1..=until {
            if policy.entry_bound_reached(applied, last) {
                taken.push(applied);
                last = applied;
            }
        }
        taken
    }

    /// Three members with phases spread over the bound snapshot in turn,
    /// a third of a bound apart, each once per bound.
    #[test]
    fn members_with_spread_phases_snapshot_in_turn() {
        assert_eq!(entry_bound_snapshots(300, 0, 1000), [300, 600, 900]);
        assert_eq!(entry_bound_snapshots(300, 33, 1000), [201, 501, 801]);
        assert_eq!(entry_bound_snapshots(300, 66, 1000), [402, 702]);
        assert_eq!(
            entry_bound_snapshots(1, 0, 3),
            [1, 2, 3],
            "a bound of 1: every entry"
        );
        assert!(
            entry_bound_snapshots(0, 0, 1000).is_empty(),
            "0: no entry bound"
        );
    }

    /// A snapshot off the node's points (installed from the leader, taken
    /// by hand) is followed by the next point at least half a bound on:
    /// the node falls back into its turn at once, never sooner than half
    /// a bound, never later than one and a half.
    #[test]
    fn after_a_snapshot_off_its_points_a_node_falls_back_into_turn() {
        let policy = SnapshotPolicy {
            max_entries: 300,
            entry_phase_percent: Some(33),
            ..SnapshotPolicy::default()
        };
        // Points of this node: 201, 501, 801, ...
        let next_after = |last: u64| (last + 1..).find(|&a| policy.entry_bound_reached(a, last));
        assert_eq!(
            next_after(200),
            Some(501),
            "1 entry before a point: the one after"
        );
        assert_eq!(
            next_after(340),
            Some(501),
            "161 entries on: at least half a bound"
        );
        assert_eq!(
            next_after(360),
            Some(801),
            "141 entries: too soon, the next point"
        );
        for last in 0..2000 {
            let gap = next_after(last).unwrap() - last;
            assert!((150..=450).contains(&gap), "after {last}: {gap}");
        }
    }

    /// Without a phase the bound counts from the last snapshot, raised by
    /// the stagger.
    #[test]
    fn without_a_phase_the_bound_counts_from_the_last_snapshot() {
        let policy = SnapshotPolicy {
            max_entries: 300,
            stagger_percent: 10,
            ..SnapshotPolicy::default()
        };
        assert!(!policy.entry_bound_reached(429, 100));
        assert!(policy.entry_bound_reached(430, 100));
    }

    /// The key-write bound counts keys, not entries, is not staggered, and
    /// 0 turns it off; the bound that goes with an entry bound is one and
    /// a half of it.
    #[test]
    fn the_key_write_bound_counts_keys_without_a_stagger() {
        let policy = SnapshotPolicy {
            max_key_writes: 1_500,
            stagger_percent: 66,
            ..SnapshotPolicy::default()
        };
        assert!(!policy.key_write_bound_reached(1_499));
        assert!(policy.key_write_bound_reached(1_500));
        assert!(!SnapshotPolicy::default().key_write_bound_reached(u64::MAX));
        assert_eq!(SnapshotPolicy::key_writes_for(1_000_000), 1_500_000);
        assert_eq!(
            SnapshotPolicy::key_writes_for(0),
            0,
            "no entry bound, no key bound"
        );
        assert_eq!(
            SnapshotPolicy::key_writes_for(u64::MAX),
            u64::MAX,
            "saturates"
        );
    }

    /// With one key per entry the phased entry bound always comes before
    /// the key-write bound that goes with it, whatever the last snapshot:
    /// the key bound never pulls a member off its turn.
    #[test]
    fn with_one_key_per_entry_the_entry_bound_comes_first() {
        for phase in [0, 33, 66] {
            let policy = SnapshotPolicy {
                max_entries: 300,
                max_key_writes: SnapshotPolicy::key_writes_for(300),
                entry_phase_percent: Some(phase),
                ..SnapshotPolicy::default()
            };
            for last in 0..2_000 {
                let entry_point = (last + 1..)
                    .find(|&a| policy.entry_bound_reached(a, last))
                    .unwrap();
                let key_point = (last + 1..)
                    .find(|&a| policy.key_write_bound_reached(a - last))
                    .unwrap();
                assert!(entry_point <= key_point, "phase {phase}, last {last}");
            }
        }
    }

    /// The stagger raises both thresholds by its percentage, and none
    /// leaves them as they are.
    #[test]
    fn a_staggered_policy_raises_its_thresholds_by_the_percentage() {
        let plain = SnapshotPolicy::default();
        assert_eq!(plain.staggered(10_000), 10_000);
        let late = SnapshotPolicy {
            stagger_percent: 25,
            ..SnapshotPolicy::default()
        };
        assert_eq!(late.staggered(10_000), 12_500);
        assert_eq!(late.staggered(u64::MAX), u64::MAX, "saturates");
    }
}
