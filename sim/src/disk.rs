//! A simulated disk under the must-sync contract: writes are buffered until
//! `sync`, a crash keeps only what was synced, and a restart recovers from it.
//!
//! With a persist stage ([`SimDisk::persist_stage`], as kv-node's WAL
//! thread) a round's writes are made durable later, in two steps the world
//! ends at events of their own, as kv-node's thread does them:
//! - `persist` hands the round to the stage (its writes are kept aside, as
//!   kv-node's driver sends them over a channel) and returns
//!   `Durability::Later`;
//! - the stage takes every round handed to it and writes them
//!   ([`SimDisk::take_queued`]: on a block disk kv-storage's `append` and
//!   `set_hard_state`; the batch reaches the page cache in the fsync's
//!   `write`, just before the fdatasync);
//! - its fsync ends ([`SimDisk::complete_persist`]) and the newest round
//!   taken is acknowledged; rounds handed meanwhile wait for the next one
//!   (group commit).
//!
//! A crash before the stage took a round loses it. A crash while the
//! stage's fsync is in flight lands between the write and the fdatasync
//! ([`SimDisk::crash_in_stage_sync`]): on a block disk the batch is written
//! into the page cache and the process dies in the fsync, so a process
//! crash leaves it there for the next process to read and a power loss
//! writes, loses or tears its blocks; on the simple disk the rounds taken
//! survive or not, as the world draws. As kv-node's stage does before its
//! other calls, a snapshot started, finished or installed first writes and
//! syncs the rounds handed to it.
//!
//! In `blockdisk` runs the disk is instead kv-storage itself (the WAL,
//! snapshot files and recovery kv-node runs) over the block-level
//! simulated file system of `block_fs`: the disk image is that file
//! system, and a restart runs the real recovery on it.

use crate::block_fs::BlockFs;
use bytes::Bytes;
use kv_replica::replica::{Durable, Recovered};
use kv_replica::state_machine::KvStateMachine;
use kv_storage::fs::Fs;
use kv_storage::{Storage, StorageBugs, StorageError, StorageOptions};
use raft_core::{ChunkRequest, Durability, Entry, HardState, LogIndex, SnapshotMeta, Term};
use std::path::Path;
use std::sync::Arc;

/// The data directory on a node's block disk.
pub const DATA_DIR: &str = "/data";

/// kv-storage's options in the simulator: small segments, so that rolls,
/// snapshots that retire covered segments, and rolls that recycle them
/// (spares) happen often: a sweep reports how many (`wal_recycled=`).
pub fn block_storage_options(bugs: StorageBugs) -> StorageOptions {
    StorageOptions {
        segment_size_bytes: 32 * 1024,
        preallocate: false,
        bugs,
    }
}

/// What survives a crash.
#[derive(Clone, Debug, Default)]
pub struct DiskImage {
    pub hard_state: HardState,
    pub snapshot: Option<(SnapshotMeta, Bytes)>,
    /// The log after the snapshot, contiguous.
    pub entries: Vec<Entry>,
    /// The hard state synced before the current one: what a damaged disk
    /// falls back to when it loses the newest hard-state record.
    pub previous_hard_state: HardState,
    /// Set by [`DiskImage::damage_acknowledged`], as kv-node's `REPAIR`
    /// marker: the node restarts in repair mode with this bound (raft-core
    /// ignores it once the log holds an entry of a newer term).
    pub damaged_up_to_term: Option<Term>,
    /// Set in `blockdisk` runs: the node's block disk, which kv-storage
    /// recovers from at restart (the fields above are then unused).
    pub block: Option<BlockFs>,
    /// A fault rotted a block of this disk since the node last started.
    pub rotted: bool,
}

impl DiskImage {
    /// An empty block disk whose randomness is drawn from `seed`.
    pub fn block(seed: u64) -> DiskImage {
        DiskImage {
            block: Some(BlockFs::new(seed)),
            ..DiskImage::default()
        }
    }

    fn snapshot_index(&self) -> LogIndex {
        self.snapshot
            .as_ref()
            .map_or(LogIndex::ZERO, |(meta, _)| meta.index)
    }

    fn append(&mut self, entries: &[Entry]) {
        let Some(first) = entries.first() else { return };
        let base = self.snapshot_index();
        assert!(
            first.index > base,
            "append at {} at or below the snapshot at {base}",
            first.index
        );
        let keep = (first.index.0 - base.0 - 1) as usize;
        assert!(
            keep <= self.entries.len(),
            "append at {} leaves a gap after {} stored entries from {}",
            first.index,
            self.entries.len(),
            base.next()
        );
        self.entries.truncate(keep);
        self.entries.extend_from_slice(entries);
    }

    fn save_snapshot(&mut self, meta: &SnapshotMeta, data: &Bytes) {
        let covered =
            (meta.index.0.saturating_sub(self.snapshot_index().0) as usize).min(self.entries.len());
        self.entries.drain(..covered);
        self.snapshot = Some((meta.clone(), data.clone()));
    }

    fn install_snapshot(&mut self, meta: &SnapshotMeta, data: &Bytes) {
        self.entries.clear();
        self.snapshot = Some((meta.clone(), data.clone()));
    }

    /// What a restarting replica loads.
    pub fn recover(&self) -> Recovered {
        Recovered {
            hard_state: self.hard_state,
            snapshot: self.snapshot.clone(),
            snapshot_deltas: Vec::new(),
            entries: self.entries.clone(),
            damaged_up_to_term: self.damaged_up_to_term,
        }
    }

    fn set_hard_state(&mut self, hard_state: HardState) {
        if hard_state != self.hard_state {
            self.previous_hard_state = self.hard_state;
            self.hard_state = hard_state;
        }
    }

    /// Damage to acknowledged records, as a disk that tears, loses or rots
    /// synced blocks does it and as kv-node's recovery then finds it: the
    /// newest `lose_entries` entries are gone, and with `lose_hard_state`
    /// the newest hard-state record too (back to the one before; the log is
    /// then cut to what that term allows, as the records lost with it held
    /// the rest). The storage still knows a bound on the terms the node had
    /// (kv-node reads the exact hard state after the damage; the simulator
    /// knows it): the node restarts in repair mode with it.
    pub fn damage_acknowledged(&mut self, lose_entries: usize, lose_hard_state: bool) {
        let bound = self
            .hard_state
            .term
            .max(self.damaged_up_to_term.unwrap_or(Term::ZERO));
        let snapshot = self
            .snapshot
            .as_ref()
            .map(|(meta, _)| (meta.index, meta.term));
        let (snapshot_index, snapshot_term) = snapshot.unwrap_or((LogIndex::ZERO, Term::ZERO));
        self.entries
            .truncate(self.entries.len().saturating_sub(lose_entries));
        if lose_hard_state && self.previous_hard_state.term >= snapshot_term {
            self.hard_state = self.previous_hard_state;
            let term = self.hard_state.term;
            let keep = self.entries.partition_point(|e| e.term <= term);
            self.entries.truncate(keep);
        }
        let last = self.entries.last().map_or(snapshot_index, |e| e.index);
        self.hard_state.commit = self.hard_state.commit.min(last).max(snapshot_index);
        self.damaged_up_to_term = Some(bound);
    }
}

/// A write not yet synced.
#[derive(Clone, Debug)]
enum Write {
    Append(Vec<Entry>),
    HardState(HardState),
    InstallSnapshot(SnapshotMeta, Bytes),
}

/// When an armed disk fails its fsync.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SyncFailure {
    /// The next sync, whatever it writes.
    Next,
    /// The next sync that writes a vote.
    NextVote,
    /// The next snapshot write: a snapshot taken fails its background
    /// write, one received fails the sync that stores it; either way the
    /// node stops before the snapshot is durable.
    NextSnapshot,
}

#[derive(Debug, thiserror::Error)]
pub enum SimDiskError {
    #[error("fsync failed (injected): the node stops")]
    SyncFailed,
    #[error("no snapshot stored to send the one at index {index}")]
    NoSnapshot { index: LogIndex },
    #[error(transparent)]
    Storage(#[from] StorageError),
}

impl SimDiskError {
    /// A full disk refused a write.
    pub fn is_disk_full(&self) -> bool {
        matches!(self, SimDiskError::Storage(StorageError::Io { source, .. })
            if source.kind() == std::io::ErrorKind::StorageFull)
    }
}

/// kv-storage on a block disk.
#[derive(Debug)]
struct BlockStore {
    storage: Storage,
    fs: BlockFs,
    /// After an injected fsync failure, each dirty block reached the disk
    /// with this probability (ppm).
    sync_survive_ppm: u64,
}

/// A snapshot write in flight: the capture it writes. The world ends it
/// with [`SimDisk::write_snapshot`] at a later event, as kv-node's
/// background thread does; a crash before then loses it.
#[derive(Debug)]
struct SnapshotJob {
    meta: SnapshotMeta,
    state: KvStateMachine,
    /// Written as a delta on top of the stored snapshot (block disk only).
    delta: Option<kv_replica::replica::DeltaOf>,
    /// The real storage's half of the write, on a block disk.
    write: Option<kv_storage::SnapshotWrite>,
}

/// What a background snapshot write hands back: the snapshot, durable, or
/// the injected failure that stops the node.
#[derive(Debug)]
pub struct SimSnapshotWritten {
    meta: SnapshotMeta,
    /// Written as a delta on top of the stored snapshot.
    delta: bool,
    result: Result<Bytes, SimDiskError>,
    /// On a block disk: the file the real storage wrote, to finish.
    file: Option<kv_storage::WrittenSnapshot>,
}

impl SimSnapshotWritten {
    /// Whether this write is a delta on top of the stored snapshot.
    pub fn is_delta(&self) -> bool {
        self.delta
    }
}

/// The disk of one node.
#[derive(Debug, Default)]
pub struct SimDisk {
    durable: DiskImage,
    pending: Vec<Write>,
    job: Option<SnapshotJob>,
    /// A snapshot arriving from the leader (the simulated disk's staging
    /// file; lost in a crash like kv-node's, which is never fsynced).
    staging: Vec<u8>,
    /// Set when a snapshot write starts, taken by the world to schedule
    /// the event that ends it.
    pub snapshot_started: bool,
    /// The newest snapshot written, synced or not (what leaders send).
    latest_snapshot: Option<(SnapshotMeta, Bytes)>,
    /// Set by the world from the fault plan.
    pub armed: Option<SyncFailure>,
    /// Entries written since the checker last looked, in write order.
    pub appended: Vec<Entry>,
    pub syncs: u64,
    /// Some in `blockdisk` runs: every call goes to kv-storage.
    block: Option<BlockStore>,
    /// What kv-storage's recovery repaired at the last open (for the trace).
    pub recovery_warnings: Vec<String>,
    /// Rounds are made durable by a persist stage, later (set by the world
    /// when the node starts).
    pub persist_stage: bool,
    /// The writes of the round being handled, not yet handed to the stage.
    round_writes: Vec<Write>,
    /// The writes of the rounds handed to the stage and not yet taken.
    stage_queue: Vec<Write>,
    /// The newest round handed to the persist stage and not yet taken by
    /// it, and whether any of them asked for a sync.
    queued: Option<(u64, bool)>,
    /// The newest round the stage took and wrote, not yet acknowledged,
    /// and whether its fsync is still to come (false once a call synced
    /// it, or when no round taken asked for one).
    in_sync: Option<(u64, bool)>,
    /// Set when a round is handed to an idle stage, taken by the world to
    /// schedule the event at which the stage takes it.
    pub persist_started: bool,
    /// Entries the stage took so far (all rounds of this incarnation), and
    /// how many of them the rounds it last took reach.
    entries_taken: u64,
    entries_in_sync: u64,
    /// How many of the entries appended (in order) are durable and
    /// acknowledged: the world logs them for the checker then.
    pub entries_durable: u64,
}

/// What the persist stage's event did.
#[derive(Debug, PartialEq, Eq)]
pub enum StageStep {
    /// Nothing was waiting.
    Idle,
    /// Rounds were taken and written; their fsync is in flight.
    Syncing,
    /// Every round up to this one is durable: acknowledge it.
    Durable(u64),
}

impl SimDisk {
    /// A disk holding what survived a crash.
    pub fn from_image(durable: DiskImage) -> SimDisk {
        SimDisk {
            latest_snapshot: durable.snapshot.clone(),
            durable,
            ..SimDisk::default()
        }
    }

    /// Opens the disk of a (re)starting node: a block disk through the real
    /// recovery of kv-storage, else the image as synced.
    pub fn open(
        image: DiskImage,
        bugs: StorageBugs,
        sync_survive_ppm: u64,
    ) -> Result<(SimDisk, Recovered), SimDiskError> {
        let Some(fs) = &image.block else {
            let recovered = image.recover();
            return Ok((SimDisk::from_image(image), recovered));
        };
        let fs = fs.next_process();
        let shared: Arc<dyn Fs> = Arc::new(fs.clone());
        let dir = Path::new(DATA_DIR);
        let options = block_storage_options(bugs);
        let (storage, recovered) = match Storage::open_in(shared.clone(), dir, options.clone()) {
            // The operator's part (README, "Storage"): the machine was
            // restarted (the crash after the failed fsync dropped the page
            // cache), so the marker goes and the node starts.
            Err(StorageError::FsyncFailedEarlier { marker, .. }) => {
                fs.remove_file(&marker)
                    .and_then(|()| fs.sync_dir(dir))
                    .map_err(|source| StorageError::Io {
                        op: "remove fsync marker",
                        path: marker,
                        source,
                    })?;
                Storage::open_in(shared, dir, options)?
            }
            other => other?,
        };
        // The chain's files: a whole snapshot, then the deltas on top.
        let mut parts = Vec::new();
        for path in &recovered.snapshot_chain {
            let (meta, data) = kv_storage::read_snapshot(&fs, path)?;
            parts.push((meta, Bytes::from(data)));
        }
        let snapshot_deltas: Vec<Bytes> = parts.iter().skip(1).map(|(_, d)| d.clone()).collect();
        let snapshot = match (parts.first(), parts.last()) {
            (Some((_, whole)), Some((latest, _))) => Some((latest.clone(), whole.clone())),
            _ => None,
        };
        let disk = SimDisk {
            recovery_warnings: recovered.warnings.clone(),
            durable: DiskImage {
                hard_state: recovered.hard_state,
                block: Some(fs.clone()),
                ..DiskImage::default()
            },
            latest_snapshot: snapshot.clone(),
            block: Some(BlockStore {
                storage,
                fs,
                sync_survive_ppm,
            }),
            ..SimDisk::default()
        };
        let recovered = Recovered {
            hard_state: recovered.hard_state,
            snapshot,
            snapshot_deltas,
            entries: recovered.entries,
            damaged_up_to_term: recovered.damaged_up_to_term,
        };
        Ok((disk, recovered))
    }

    /// The node died: unsynced writes are gone. A block disk's process is
    /// dead (its storage writes nothing more, not even at drop); the world
    /// then decides what the page cache does.
    pub fn crash(self) -> DiskImage {
        if let Some(block) = self.block {
            let fs = block.fs.clone();
            fs.next_process();
            drop(block);
            return DiskImage {
                block: Some(fs),
                ..DiskImage::default()
            };
        }
        self.durable
    }

    /// The block disk, in `blockdisk` runs.
    pub fn block_fs(&self) -> Option<&BlockFs> {
        self.block.as_ref().map(|b| &b.fs)
    }

    /// Arms the block disk's next fsync to fail if `fails`: with EIO, or
    /// (one time in two) by killing the process inside it.
    fn arm_block(&mut self, fails: bool) {
        if let Some(block) = &self.block
            && fails
        {
            if self.syncs.is_multiple_of(2) {
                block.fs.fail_next_sync(block.sync_survive_ppm);
            } else {
                block.fs.kill_in_next_sync();
            }
            self.armed = None;
        }
    }

    pub fn durable(&self) -> &DiskImage {
        &self.durable
    }

    /// The background write of the snapshot in flight, if any: serializes
    /// the capture and makes it durable at once (kv-node writes a temp
    /// file, fsyncs and renames it: all or nothing), unless a newer
    /// snapshot is already durable or an armed fault fails it.
    pub fn write_snapshot(&mut self) -> Option<SimSnapshotWritten> {
        let SnapshotJob {
            meta,
            state,
            delta,
            write,
        } = self.job.take()?;
        let is_delta = delta.is_some();
        let data = match delta {
            Some(delta) => {
                let mut bytes = Vec::new();
                state
                    .write_delta_snapshot(delta.base.0, delta.changed, &mut bytes)
                    .expect("a delta of the capture serializes");
                Bytes::from(bytes)
            }
            None => Bytes::from(state.snapshot_bytes()),
        };
        if let Some(write) = write {
            // The real write (temp file, fsync, rename, directory fsync) on
            // the block disk, with the armed fault inside its fsync.
            self.arm_block(self.armed == Some(SyncFailure::NextSnapshot));
            let file = write.write(|w| w.write_all(&data));
            if let Some(block) = &self.block {
                block.fs.disarm();
            }
            let result = Ok(data);
            return Some(SimSnapshotWritten {
                meta,
                delta: is_delta,
                result,
                file: Some(file),
            });
        }
        if self.armed == Some(SyncFailure::NextSnapshot) {
            self.armed = None;
            let result = Err(SimDiskError::SyncFailed);
            return Some(SimSnapshotWritten {
                meta,
                delta: is_delta,
                result,
                file: None,
            });
        }
        if self.durable.snapshot_index() < meta.index {
            self.durable.save_snapshot(&meta, &data);
        }
        let result = Ok(data);
        Some(SimSnapshotWritten {
            meta,
            delta: is_delta,
            result,
            file: None,
        })
    }

    /// The persist stage wakes: it takes every round handed to it and
    /// writes them (kv-node's thread: `Storage::append` and
    /// `set_hard_state`, buffered until the fsync's write). If any round
    /// taken asks for a sync, the fsync is now in flight (`Syncing`: the
    /// world ends it later with [`SimDisk::complete_persist`]); otherwise
    /// the rounds are acknowledged at once (`Durable`).
    pub fn take_queued(&mut self) -> Result<StageStep, SimDiskError> {
        self.take_writes()?;
        match self.in_sync {
            None => Ok(StageStep::Idle),
            Some((_, true)) => Ok(StageStep::Syncing),
            Some((ready, false)) => {
                self.in_sync = None;
                self.entries_durable = self.entries_in_sync;
                Ok(StageStep::Durable(ready))
            }
        }
    }

    /// Moves the rounds handed to the stage to those it took, writing them.
    fn take_writes(&mut self) -> Result<(), SimDiskError> {
        if let Some((ready, must_sync)) = self.queued.take() {
            let writes = std::mem::take(&mut self.stage_queue);
            for write in &writes {
                if let Write::Append(entries) = write {
                    self.entries_taken += entries.len() as u64;
                }
            }
            self.entries_in_sync = self.entries_taken;
            self.write_now(writes)?;
            let syncing = self.in_sync.is_some_and(|(_, sync)| sync);
            self.in_sync = Some((ready, syncing || must_sync));
        }
        Ok(())
    }

    /// The stage's fsync ends: what the rounds taken wrote is durable (if
    /// any asked for it) and the newest is returned, which the world hands
    /// to `Replica::persisted`; None if nothing was taken.
    pub fn complete_persist(&mut self) -> Result<Option<u64>, SimDiskError> {
        let Some((ready, must_sync)) = self.in_sync.take() else {
            return Ok(None);
        };
        if must_sync {
            self.sync_now()?;
            self.tend_spares()?;
        }
        self.entries_durable = self.entries_in_sync;
        Ok(Some(ready))
    }

    /// As kv-node's persist thread after a batch (`spare_maker.rs`): a
    /// spare segment the storage wants is made from zeros and handed back,
    /// which may roll the WAL into it. kv-node makes it on another thread
    /// and hands it back before a later batch; its writes touch only its
    /// own file, so making it here, between two of the stage's events, is
    /// one of the orders that can take. A crash later finds its file
    /// under either name, or its name lost (the directory is fsynced only
    /// by the roll that uses it).
    fn tend_spares(&mut self) -> Result<(), SimDiskError> {
        let Some(block) = &mut self.block else {
            return Ok(());
        };
        block.storage.make_wanted_spare_now()?;
        Ok(())
    }

    /// Whether rounds wait in the persist stage (handed or taken).
    pub fn persist_queued(&self) -> bool {
        self.queued.is_some() || self.in_sync.is_some()
    }

    /// Whether rounds were handed to the stage since it last took some.
    pub fn persist_waiting(&self) -> bool {
        self.queued.is_some()
    }

    /// Whether the stage's fsync is in flight: a crash now lands between
    /// its write and its fdatasync.
    pub fn stage_syncing(&self) -> bool {
        self.in_sync.is_some_and(|(_, sync)| sync)
    }

    /// The process dies inside the stage's fsync (a crash while it is in
    /// flight): on a block disk the batch is written into the page cache
    /// and the fdatasync never returns (the world then decides whether the
    /// machine loses power); on the simple disk, with `kept` the writes
    /// taken reached the disk (the page cache outlived the process), else
    /// they are lost. Rounds handed and not taken are lost either way.
    pub fn crash_in_stage_sync(&mut self, kept: bool) {
        if !self.stage_syncing() {
            return;
        }
        self.in_sync = None;
        if let Some(block) = &mut self.block {
            block.fs.kill_in_next_sync();
            // Dies in its first fdatasync: what it wrote before stays.
            let _ = block.storage.sync();
            block.fs.disarm();
            return;
        }
        if kept {
            self.armed = None;
            let _ = self.sync_now();
        }
        self.pending.clear();
    }

    /// Applies writes the stage took: to kv-storage on a block disk (which
    /// buffers them until its next sync), else to the writes to sync.
    fn write_now(&mut self, writes: Vec<Write>) -> Result<(), SimDiskError> {
        for write in writes {
            let Some(block) = &mut self.block else {
                self.pending.push(write);
                continue;
            };
            match write {
                Write::Append(entries) => {
                    // A marker for the armed-failure test; the data is in
                    // the WAL.
                    self.pending.push(Write::Append(Vec::new()));
                    block.storage.append(&entries)?;
                }
                Write::HardState(hs) => {
                    self.pending.push(Write::HardState(hs));
                    block.storage.set_hard_state(&hs)?;
                }
                Write::InstallSnapshot(..) => unreachable!("installed by a call, not a round"),
            }
        }
        Ok(())
    }

    /// kv-node's stage writes and syncs the rounds handed to it before it
    /// runs any other call on the storage: the same here. They stay to be
    /// acknowledged at the stage's event, only durable earlier.
    fn flush_queued(&mut self) -> Result<(), SimDiskError> {
        self.take_writes()?;
        if let Some((ready, true)) = self.in_sync {
            self.sync_now()?;
            self.in_sync = Some((ready, false));
        }
        Ok(())
    }

    fn pending_vote(&self) -> bool {
        self.pending.iter().any(|w| match w {
            Write::HardState(hs) => {
                hs.vote.is_some()
                    && (hs.vote != self.durable.hard_state.vote
                        || hs.term != self.durable.hard_state.term)
            }
            _ => false,
        })
    }
}

impl SimDisk {
    /// Makes every write so far durable, or fails as armed.
    fn sync_now(&mut self) -> Result<(), SimDiskError> {
        let fails = match self.armed {
            Some(SyncFailure::Next) => !self.pending.is_empty(),
            Some(SyncFailure::NextVote) => self.pending_vote(),
            Some(SyncFailure::NextSnapshot) => self
                .pending
                .iter()
                .any(|w| matches!(w, Write::InstallSnapshot(..))),
            None => false,
        };
        if self.block.is_some() {
            self.arm_block(fails);
            let block = self.block.as_mut().expect("checked");
            self.pending.clear();
            let synced = block.storage.sync();
            block.fs.disarm();
            synced?;
            self.syncs += 1;
            self.durable.hard_state = block.storage.hard_state();
            return Ok(());
        }
        if fails {
            self.pending.clear();
            self.armed = None;
            return Err(SimDiskError::SyncFailed);
        }
        self.syncs += 1;
        for write in self.pending.drain(..) {
            match write {
                Write::Append(entries) => self.durable.append(&entries),
                Write::HardState(hs) => self.durable.set_hard_state(hs),
                Write::InstallSnapshot(meta, data) => self.durable.install_snapshot(&meta, &data),
            }
        }
        Ok(())
    }
}

impl Durable for SimDisk {
    type Error = SimDiskError;

    fn append(&mut self, entries: &[Entry]) -> Result<(), SimDiskError> {
        if self.persist_stage {
            // Written by the stage once it takes the round.
            if !entries.is_empty() {
                self.appended.extend_from_slice(entries);
                self.round_writes.push(Write::Append(entries.to_vec()));
            }
            return Ok(());
        }
        if let Some(block) = &mut self.block {
            self.appended.extend_from_slice(entries);
            if !entries.is_empty() {
                // A marker for the armed-failure test; the data is in the WAL.
                self.pending.push(Write::Append(Vec::new()));
            }
            return Ok(block.storage.append(entries)?);
        }
        if !entries.is_empty() {
            self.appended.extend_from_slice(entries);
            self.pending.push(Write::Append(entries.to_vec()));
        }
        Ok(())
    }

    fn set_hard_state(&mut self, hard_state: &HardState) -> Result<(), SimDiskError> {
        if self.persist_stage {
            self.round_writes.push(Write::HardState(*hard_state));
            return Ok(());
        }
        self.pending.push(Write::HardState(*hard_state));
        if let Some(block) = &mut self.block {
            block.storage.set_hard_state(hard_state)?;
        }
        Ok(())
    }

    fn sync(&mut self) -> Result<(), SimDiskError> {
        self.flush_queued()?;
        let writes = std::mem::take(&mut self.round_writes);
        self.write_now(writes)?;
        self.sync_now()
    }

    fn has_persist_stage(&self) -> bool {
        self.persist_stage
    }

    fn persist(&mut self, ready: u64, must_sync: bool) -> Result<Durability, SimDiskError> {
        if !self.persist_stage {
            if must_sync {
                self.sync_now()?;
                self.tend_spares()?;
            }
            return Ok(Durability::Now);
        }
        let queued_sync = self.queued.is_some_and(|(_, sync)| sync);
        self.persist_started |= !self.persist_queued();
        self.queued = Some((ready, queued_sync || must_sync));
        self.stage_queue.append(&mut self.round_writes);
        Ok(Durability::Later)
    }

    type SnapshotWritten = SimSnapshotWritten;

    /// The block disk keeps chains in kv-storage's files, as kv-node does;
    /// the in-memory image keeps one snapshot.
    fn writes_deltas(&self) -> bool {
        self.block.is_some()
    }

    fn start_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        state: KvStateMachine,
        delta: Option<kv_replica::replica::DeltaOf>,
    ) -> Result<(), SimDiskError> {
        assert!(
            delta.is_none() || self.block.is_some(),
            "only the block disk writes deltas"
        );
        assert!(self.job.is_none(), "one snapshot write at a time");
        self.flush_queued()?;
        // On a block disk the real storage names the segments the snapshot
        // will cover now, on the replica's thread, as kv-node's does.
        let write = match &mut self.block {
            Some(block) if delta.is_some() => Some(block.storage.prepare_delta_snapshot(meta)?),
            Some(block) => Some(block.storage.prepare_snapshot(meta)?),
            None => None,
        };
        let meta = meta.clone();
        self.job = Some(SnapshotJob {
            meta,
            state,
            delta,
            write,
        });
        self.snapshot_started = true;
        Ok(())
    }

    fn finish_snapshot(
        &mut self,
        written: SimSnapshotWritten,
    ) -> Result<Option<(SnapshotMeta, u64)>, SimDiskError> {
        let data = written.result?;
        self.flush_queued()?;
        if let (Some(block), Some(file)) = (&mut self.block, written.file) {
            if block.storage.finish_snapshot(file)?.is_none() {
                return Ok(None);
            }
            let size = data.len() as u64;
            self.latest_snapshot = Some((written.meta.clone(), data));
            return Ok(Some((written.meta, size)));
        }
        let newer = self
            .latest_snapshot
            .as_ref()
            .is_none_or(|(meta, _)| meta.index < written.meta.index);
        if !newer {
            return Ok(None);
        }
        let size = data.len() as u64;
        self.latest_snapshot = Some((written.meta.clone(), data));
        Ok(Some((written.meta, size)))
    }

    fn snapshot_can_wait(error: &SimDiskError) -> bool {
        matches!(
            error,
            SimDiskError::Storage(
                StorageError::SnapshotNotWritten { .. } | StorageError::NoSnapshotBase { .. }
            )
        )
    }

    fn stage_snapshot_chunk(&mut self, offset: u64, data: &[u8]) -> Result<(), SimDiskError> {
        if offset == 0 {
            self.staging.clear();
        }
        self.staging.extend_from_slice(data);
        Ok(())
    }

    fn staged_snapshot_bytes(&self) -> u64 {
        self.staging.len() as u64
    }

    fn read_staged_snapshot<T>(
        &mut self,
        read: impl FnOnce(&mut dyn std::io::Read) -> T,
    ) -> Result<T, SimDiskError> {
        Ok(read(&mut self.staging.as_slice()))
    }

    fn install_staged_snapshot(&mut self, meta: &SnapshotMeta) -> Result<(), SimDiskError> {
        self.flush_queued()?;
        let data = Bytes::from(std::mem::take(&mut self.staging));
        if self.block.is_some() {
            self.arm_block(self.armed == Some(SyncFailure::NextSnapshot));
            let block = self.block.as_mut().expect("checked");
            let installed = block.storage.install_snapshot(meta, &data);
            block.fs.disarm();
            installed?;
            self.latest_snapshot = Some((meta.clone(), data));
            return Ok(());
        }
        self.latest_snapshot = Some((meta.clone(), data.clone()));
        self.pending
            .push(Write::InstallSnapshot(meta.clone(), data));
        Ok(())
    }

    fn snapshot_chunk(&mut self, chunk: ChunkRequest) -> Result<Bytes, SimDiskError> {
        // The replica checked that `chunk.meta` is the stored snapshot (the
        // rule is kv-replica's, the same for every disk).
        let ChunkRequest { meta, offset, len } = chunk;
        if let Some(block) = &self.block {
            if block.storage.snapshot_path().is_none() {
                return Err(SimDiskError::NoSnapshot { index: meta.index });
            }
            let chain = block.storage.snapshot_chain().to_vec();
            let data = kv_storage::read_chain_range_in(&block.fs, &chain, offset, len)?;
            return Ok(Bytes::from(data));
        }
        let Some((_, data)) = &self.latest_snapshot else {
            return Err(SimDiskError::NoSnapshot { index: meta.index });
        };
        let end = offset.saturating_add(len).min(data.len() as u64) as usize;
        Ok(data.slice((offset as usize).min(end)..end))
    }
}
