//! A simulated disk under the must-sync contract: writes are buffered until
//! `sync`, a crash keeps only what was synced, and a restart recovers from it.

use bytes::Bytes;
use kv_replica::replica::{Durable, Recovered};
use kv_replica::state_machine::KvStateMachine;
use raft_core::{Entry, HardState, LogIndex, SnapshotMeta, Term};

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
}

impl DiskImage {
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
}

/// A snapshot write in flight: the capture it writes. The world ends it
/// with [`SimDisk::write_snapshot`] at a later event, as kv-node's
/// background thread does; a crash before then loses it.
#[derive(Debug)]
struct SnapshotJob {
    meta: SnapshotMeta,
    state: KvStateMachine,
}

/// What a background snapshot write hands back: the snapshot, durable, or
/// the injected failure that stops the node.
#[derive(Debug)]
pub struct SimSnapshotWritten {
    meta: SnapshotMeta,
    result: Result<Bytes, SimDiskError>,
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

    /// The node died: unsynced writes are gone.
    pub fn crash(self) -> DiskImage {
        self.durable
    }

    pub fn durable(&self) -> &DiskImage {
        &self.durable
    }

    /// The background write of the snapshot in flight, if any: serializes
    /// the capture and makes it durable at once (kv-node writes a temp
    /// file, fsyncs and renames it: all or nothing), unless a newer
    /// snapshot is already durable or an armed fault fails it.
    pub fn write_snapshot(&mut self) -> Option<SimSnapshotWritten> {
        let SnapshotJob { meta, state } = self.job.take()?;
        if self.armed == Some(SyncFailure::NextSnapshot) {
            self.armed = None;
            let result = Err(SimDiskError::SyncFailed);
            return Some(SimSnapshotWritten { meta, result });
        }
        let data = Bytes::from(state.snapshot_bytes());
        if self.durable.snapshot_index() < meta.index {
            self.durable.save_snapshot(&meta, &data);
        }
        let result = Ok(data);
        Some(SimSnapshotWritten { meta, result })
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

impl Durable for SimDisk {
    type Error = SimDiskError;

    fn append(&mut self, entries: &[Entry]) -> Result<(), SimDiskError> {
        if !entries.is_empty() {
            self.appended.extend_from_slice(entries);
            self.pending.push(Write::Append(entries.to_vec()));
        }
        Ok(())
    }

    fn set_hard_state(&mut self, hard_state: &HardState) -> Result<(), SimDiskError> {
        self.pending.push(Write::HardState(*hard_state));
        Ok(())
    }

    fn sync(&mut self) -> Result<(), SimDiskError> {
        let fails = match self.armed {
            Some(SyncFailure::Next) => !self.pending.is_empty(),
            Some(SyncFailure::NextVote) => self.pending_vote(),
            Some(SyncFailure::NextSnapshot) => self
                .pending
                .iter()
                .any(|w| matches!(w, Write::InstallSnapshot(..))),
            None => false,
        };
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

    type SnapshotWritten = SimSnapshotWritten;

    fn start_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        state: KvStateMachine,
    ) -> Result<(), SimDiskError> {
        assert!(self.job.is_none(), "one snapshot write at a time");
        let meta = meta.clone();
        self.job = Some(SnapshotJob { meta, state });
        self.snapshot_started = true;
        Ok(())
    }

    fn finish_snapshot(
        &mut self,
        written: SimSnapshotWritten,
    ) -> Result<Option<(SnapshotMeta, u64)>, SimDiskError> {
        let data = written.result?;
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
        let data = Bytes::from(std::mem::take(&mut self.staging));
        self.latest_snapshot = Some((meta.clone(), data.clone()));
        self.pending
            .push(Write::InstallSnapshot(meta.clone(), data));
        Ok(())
    }

    fn snapshot_chunk(
        &mut self,
        meta: &SnapshotMeta,
        offset: u64,
        len: u64,
    ) -> Result<Bytes, SimDiskError> {
        // The replica checked that `meta` is the stored snapshot (the rule
        // is kv-replica's, the same for every disk).
        let Some((_, data)) = &self.latest_snapshot else {
            return Err(SimDiskError::NoSnapshot { index: meta.index });
        };
        let end = offset.saturating_add(len).min(data.len() as u64) as usize;
        Ok(data.slice((offset as usize).min(end)..end))
    }
}
