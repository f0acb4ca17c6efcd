//! kv-storage: the durable storage of a raftkv node: write-ahead log, hard
//! state, snapshot files, recovery and `check`.
//!
//! It owns every byte a node writes to disk and the rules for reading them
//! back after a crash. It runs over the small file-system trait of `fs`
//! ([`Fs`]): kv-node runs it on real files ([`StdFs`], [`Storage::open`]),
//! the simulator on a block-level model of a disk that tears, loses,
//! reorders and rots writes (`sim/src/block_fs.rs`, [`Storage::open_in`]),
//! so recovery is the same code in both. It depends on raft-core only (its
//! types); never on kv-replica, kv-node or sim, and never on tokio,
//! sockets or threads. Known storage bugs, for the simulator's catalogue,
//! are in `bugs` (feature `buggy`).
//!
//! One [`Storage`] owns a data directory:
//!
//! ```text
//! <dir>/LOCK                 held with flock while a Storage is open
//! <dir>/wal/<seq>-<first index>.wal
//! <dir>/wal/<seq>.spare                 compacted segments kept for reuse (at most 2)
//! <dir>/wal-cut/<segment>.<offset>.cut   torn tails and damage cut off at open, kept
//! <dir>/snapshots/<index>.snap
//! <dir>/FSYNC_FAILED         left by a failed fsync; open refuses while present
//! <dir>/REPAIR               acknowledged records were cut: repair mode until repaired
//! ```
//!
//! What recovery does with damage:
//! - A torn, never-acknowledged last batch (no valid batch after it, in the
//!   last segment) is cut into a side file with a warning. In a recycled
//!   segment (`wal`) the blocks after the valid batches are the file's
//!   former segment's, and are truncated away without a side file.
//! - Damage to acknowledged records (a bad batch followed by a valid one, a
//!   bad batch or header in a closed segment, a batch that does not continue
//!   the log because earlier ones were lost) cuts the log before the damage
//!   and keeps everything from there on in side files. The hard state is
//!   the one read after the damage (every batch carries one), so the term
//!   and vote are exact; the node then starts in repair mode
//!   (`Recovered::damaged_up_to_term`, raft-core `repair.rs`). If no
//!   hard-state record follows the damage, open refuses with
//!   [`StorageError::HardStateLost`] and changes nothing.
//!
//! The driver persists each `Ready` with [`Storage::install_snapshot`] (if
//! any), [`Storage::append`], [`Storage::set_hard_state`], then one
//! [`Storage::sync`]. Nothing is durable until `sync` returns.
//!
//! - `batch`: the segment layout: header block, padded and salted batches.
//! - `segment`: record framing inside a batch.
//! - `wal`: segment files, rollover, compaction.
//! - `replay`: rebuilding the log on open; torn tail versus corruption.
//! - `check`: `kv-node check`, verifying (and repairing) a data directory.
//! - `repair_marker`: the `REPAIR` file that keeps a damaged node in repair mode.
//! - `space`: preallocation and free space.
//! - `snapshot_file`: the snapshot file format, atomic writes, validation.
//! - `lock`: the data directory lock.
//! - `files`: directory fsync helpers.
//! - `fs`: the file-system trait and `StdFs`.
//! - `bugs`: the catalogue of known storage bugs (issue 15).
//! - `error`: [`StorageError`].

mod batch;
pub mod bugs;
mod check;
mod error;
mod files;
pub mod fs;
mod lock;
mod repair_marker;
mod replay;
mod segment;
mod snapshot_file;
mod space;
mod wal;

#[cfg(test)]
mod model_tests;
#[cfg(test)]
mod recycle_tests;
#[cfg(test)]
mod tests;

pub use bugs::StorageBugs;
pub use check::{CheckReport, check, check_in};
pub use error::StorageError;
pub use fs::{Fs, FsFile, StdFs};
pub use snapshot_file::{
    SnapshotReader, open_snapshot, read_chain_range_in, read_snapshot, read_snapshot_range,
    read_snapshot_range_in,
};
pub use space::free_bytes;
pub use wal::SpareFill;

use error::{io_error, warn};
use fs::DirGuard;
use raft_core::{Entry, HardState, LogIndex, SnapshotMeta, Term};
use snapshot_file::SnapshotHeader;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use wal::Wal;

/// The largest entry payload the log accepts. Larger proposals should be
/// refused before they reach raft-core.
pub const MAX_ENTRY_DATA_BYTES: usize = 64 * 1024 * 1024;

const WAL_DIR: &str = "wal";
const WAL_CUT_DIR: &str = "wal-cut";
const SNAPSHOT_DIR: &str = "snapshots";
/// Left in the data directory when an fsync fails (see
/// [`StorageError::FsyncFailedEarlier`]).
pub const FSYNC_FAILED_MARKER: &str = "FSYNC_FAILED";

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StorageOptions {
    /// A segment is closed and a new one started once it reaches this size.
    pub segment_size_bytes: u64,
    /// Reserve each new segment's space when it is created (`fallocate`),
    /// so that appends to it do not fail on a disk that fills up meanwhile.
    pub preallocate: bool,
    /// Known bugs to switch on (only with the `buggy` feature; see `bugs`).
    pub bugs: StorageBugs,
}

impl Default for StorageOptions {
    fn default() -> Self {
        StorageOptions {
            segment_size_bytes: 64 * 1024 * 1024,
            preallocate: true,
            bugs: StorageBugs::default(),
        }
    }
}

impl StorageOptions {
    fn validate(&self) -> Result<(), StorageError> {
        if self.segment_size_bytes == 0 {
            return Err(StorageError::InvalidOption {
                option: "segment_size_bytes",
                reason: "must be positive".to_string(),
            });
        }
        Ok(())
    }
}

/// What [`Storage::open`] found on disk.
#[derive(Debug)]
pub struct Recovered {
    /// The latest hard state written (default on a fresh directory).
    pub hard_state: HardState,
    /// The newest valid snapshot; read it with [`open_snapshot`].
    pub snapshot: Option<(SnapshotMeta, PathBuf)>,
    /// Its files, oldest first: a whole snapshot, then the deltas on top of
    /// it up to `snapshot` (just `snapshot`'s own file when it is whole).
    pub snapshot_chain: Vec<PathBuf>,
    /// The log after the snapshot: contiguous, starting at its index + 1
    /// (or at 1 without a snapshot).
    pub entries: Vec<Entry>,
    /// Damage that recovery repaired (a torn write cut off, a half-written
    /// snapshot removed). Also logged with `tracing::warn!`.
    pub warnings: Vec<String>,
    /// Some when this node lost records it had acknowledged (now or in an
    /// earlier run) and no leader of a newer term has repaired its log yet:
    /// start raft-core with `InitialState::damaged_up_to_term` set to it.
    pub damaged_up_to_term: Option<Term>,
}

/// The cost of one [`Storage::sync`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SyncStats {
    /// Bytes written since the previous sync.
    pub bytes: u64,
    pub duration: Duration,
}

/// A snapshot that is now durable.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SnapshotInfo {
    pub meta: SnapshotMeta,
    pub path: PathBuf,
    pub file_bytes: u64,
    /// WAL segments deleted because the snapshot covers them.
    pub segments_removed: usize,
}

/// A snapshot file to write, from [`Storage::prepare_snapshot`]: it holds
/// no borrow of the storage, so another thread can write it.
#[derive(Debug)]
pub struct SnapshotWrite {
    fs: Arc<dyn Fs>,
    dir: PathBuf,
    header: SnapshotHeader,
}

impl SnapshotWrite {
    pub fn meta(&self) -> &SnapshotMeta {
        &self.header.meta
    }

    /// Writes the snapshot file (temp file, fsync, rename, directory
    /// fsync), streaming the state from `write`. Durable on return.
    pub fn write(
        self,
        write: impl FnOnce(&mut dyn Write) -> std::io::Result<()>,
    ) -> WrittenSnapshot {
        let result = snapshot_file::write(&*self.fs, &self.dir, &self.header, write);
        WrittenSnapshot {
            header: self.header,
            result,
        }
    }
}

/// A snapshot file written (or not), for [`Storage::finish_snapshot`].
#[derive(Debug)]
pub struct WrittenSnapshot {
    header: SnapshotHeader,
    /// The file and its size in bytes.
    result: Result<(PathBuf, u64), StorageError>,
}

impl WrittenSnapshot {
    pub fn meta(&self) -> &SnapshotMeta {
        &self.header.meta
    }
}

/// The durable state of one Raft node: its log, hard state and snapshot.
pub struct Storage {
    fs: Arc<dyn Fs>,
    dir: PathBuf,
    snapshot_dir: PathBuf,
    wal: Wal,
    snapshot: Option<(SnapshotMeta, PathBuf)>,
    /// The files of `snapshot`'s chain, oldest first (see
    /// [`Recovered::snapshot_chain`]); kept while it is current.
    chain: Vec<PathBuf>,
    /// Set by an I/O error that may have left the files in an unknown state:
    /// every later call fails, so the node stops instead of limping on.
    failed: bool,
    /// Declared last so that it is released after the WAL is flushed.
    _lock: DirGuard,
}

impl std::fmt::Debug for Storage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Storage")
            .field("dir", &self.dir)
            .field("last_index", &self.wal.last_index())
            .field("snapshot", &self.snapshot)
            .field("failed", &self.failed)
            .finish()
    }
}

impl Storage {
    /// Opens (creating if needed) the data directory `dir`, takes its lock
    /// and recovers its contents.
    pub fn open(dir: &Path, options: StorageOptions) -> Result<(Storage, Recovered), StorageError> {
        Storage::open_in(Arc::new(StdFs), dir, options)
    }

    /// [`Storage::open`] on any file system (the simulator's).
    pub fn open_in(
        fs: Arc<dyn Fs>,
        dir: &Path,
        options: StorageOptions,
    ) -> Result<(Storage, Recovered), StorageError> {
        options.validate()?;
        let trust_cache = StorageBugs::has(options.bugs.open_trusts_page_cache);
        let fsr = &*fs;
        files::ensure_dir(fsr, dir)?;
        let lock = fsr.lock_dir(dir)?;
        check_fsync_marker(fsr, dir)?;
        let mut warnings = Vec::new();
        let snapshot_dir = dir.join(SNAPSHOT_DIR);
        files::ensure_dir(fsr, &snapshot_dir)?;
        let chain = snapshot_file::recover_chain(fsr, &snapshot_dir, &mut warnings, true)?;
        let chain_paths: Vec<PathBuf> = chain.iter().flatten().map(|(_, p)| p.clone()).collect();
        let latest = chain.and_then(|mut chain| chain.pop());
        let (wal_start_seq, snapshot_index) =
            latest.as_ref().map_or((0, LogIndex::ZERO), |(h, _)| {
                (h.wal_start_seq, h.meta.index)
            });
        let marker = repair_marker::read(fsr, dir)?;
        let (wal, replayed) = Wal::open(
            fs.clone(),
            &dir.join(WAL_DIR),
            &dir.join(WAL_CUT_DIR),
            &options,
            wal_start_seq,
            snapshot_index,
            &mut warnings,
            // Durable before anything is cut: from then on the log alone
            // does not show that records were lost.
            &mut |_, bound| repair_marker::write(fsr, dir, bound.max(marker.unwrap_or(Term::ZERO))),
        )?;
        // What the previous run left in the page cache is made durable
        // before anything is built on it (the WAL did its own files).
        if !trust_cache {
            files::sync_dir(fsr, &snapshot_dir)?;
            files::sync_dir(fsr, dir)?;
        }
        let snapshot = latest.map(|(header, path)| (header.meta, path));
        let last_term = replayed
            .entries
            .last()
            .map(|e| e.term)
            .or(snapshot.as_ref().map(|(meta, _)| meta.term))
            .unwrap_or(Term::ZERO);
        let damaged_up_to_term = match repair_marker::read(fsr, dir)? {
            // Only a leader of a newer term writes an entry of a newer term.
            Some(bound) if last_term > bound => {
                repair_marker::remove(fsr, dir)?;
                tracing::info!(%bound, %last_term, "the log was repaired: repair marker removed");
                None
            }
            Some(bound) => {
                warn(
                    &mut warnings,
                    format!(
                        "this node lost acknowledged records: it grants no votes until a leader of a term above {bound} repairs its log"
                    ),
                );
                Some(bound)
            }
            None => None,
        };
        let storage = Storage {
            fs,
            dir: dir.to_path_buf(),
            snapshot_dir,
            wal,
            snapshot: snapshot.clone(),
            chain: chain_paths.clone(),
            failed: false,
            _lock: lock,
        };
        let recovered = Recovered {
            hard_state: replayed.hard_state,
            snapshot,
            snapshot_chain: chain_paths,
            entries: replayed.entries,
            warnings,
            damaged_up_to_term,
        };
        Ok((storage, recovered))
    }

    /// Appends `entries` (contiguous). If they start at or below the last
    /// index, the log from `entries[0].index` on is discarded first, on disk
    /// too. Buffered: durable after the next [`Storage::sync`].
    pub fn append(&mut self, entries: &[Entry]) -> Result<(), StorageError> {
        self.check_usable()?;
        let Some(first) = entries.first() else {
            return Ok(());
        };
        let (last, snapshot_index) = (self.last_index(), self.snapshot_index());
        assert!(
            first.index > snapshot_index,
            "append at {} would overwrite the snapshot at {snapshot_index}",
            first.index
        );
        assert!(
            first.index <= last.next(),
            "append at {} leaves a gap after the last index {last}",
            first.index
        );
        for pair in entries.windows(2) {
            assert!(
                pair[1].index == pair[0].index.next(),
                "appended entries are not contiguous: {} then {}",
                pair[0].index,
                pair[1].index
            );
        }
        if let Some(big) = entries.iter().find(|e| e.data.len() > MAX_ENTRY_DATA_BYTES) {
            return Err(StorageError::RecordTooLarge {
                kind: "entry",
                bytes: big.data.len(),
                max_bytes: MAX_ENTRY_DATA_BYTES,
            });
        }
        let result = self.wal.append(entries);
        self.fail_on_error(result)
    }

    /// Records the hard state. Buffered: durable after the next sync.
    ///
    /// In a batch, set it after appending the entries its commit index
    /// covers: then a torn write can only take the hard state with them.
    /// (Recovery copes with the other order by lowering the commit index.)
    pub fn set_hard_state(&mut self, hard_state: &HardState) -> Result<(), StorageError> {
        self.check_usable()?;
        let result = self.wal.set_hard_state(hard_state);
        self.fail_on_error(result)
    }

    /// Makes everything appended and set since the last sync durable with a
    /// single flush and fdatasync.
    pub fn sync(&mut self) -> Result<SyncStats, StorageError> {
        self.check_usable()?;
        let result = self.wal.sync();
        self.fail_on_error(result)
    }

    /// The last entry's index, or the snapshot index if no entry follows it.
    pub fn last_index(&self) -> LogIndex {
        self.wal.last_index()
    }

    /// WAL rolls since open that reused the file of a compacted segment
    /// (see `wal.rs`, segment recycling).
    pub fn wal_recycled_rolls(&self) -> u64 {
        self.wal.recycled_rolls()
    }

    /// A spare WAL segment to make from zeros off the thread that writes
    /// the WAL (see `Wal::spare_wanted`): run it anywhere, then give the
    /// result to [`Storage::spare_filled`]. None while one is out, a
    /// spare is kept, or the active segment is not yet worth leaving.
    pub fn spare_wanted(&mut self) -> Option<SpareFill> {
        self.check_usable().ok()?;
        self.wal.spare_wanted()
    }

    /// The result of a [`SpareFill`] from `spare_wanted`: the next roll
    /// reuses the spare. A spare that could not be made is not an error
    /// of the storage's (logged; the roll creates a file as before).
    /// It may roll the WAL into the spare at once (see `Wal::spare_filled`);
    /// an error there fails the storage like a failed write.
    pub fn spare_filled(
        &mut self,
        made: Result<PathBuf, StorageError>,
    ) -> Result<(), StorageError> {
        self.check_usable()?;
        let result = self.wal.spare_filled(made);
        self.fail_on_error(result)
    }

    /// Makes the spare the storage wants, if any, here and at once (no
    /// pause between chunks), and adopts it: what the simulator and tests
    /// do in place of kv-node's `wal-spare` thread. True if one was made;
    /// an error is one `spare_filled` returns.
    pub fn make_wanted_spare_now(&mut self) -> Result<bool, StorageError> {
        let Some(fill) = self.spare_wanted() else {
            return Ok(false);
        };
        let made = fill.run(|| Ok(()));
        self.spare_filled(made).map(|()| true)
    }

    /// The hard state last set (durable once synced).
    pub fn hard_state(&self) -> HardState {
        self.wal.hard_state()
    }

    /// The current snapshot and its file, if any.
    pub fn snapshot_path(&self) -> Option<(SnapshotMeta, PathBuf)> {
        self.snapshot.clone()
    }

    /// The files of the current snapshot's chain, oldest first: a whole
    /// snapshot, then its deltas (empty without a snapshot). Its state is
    /// theirs read in this order.
    pub fn snapshot_chain(&self) -> &[PathBuf] {
        &self.chain
    }

    /// Saves a snapshot of the local state machine taken at `meta.index`
    /// (which must be in the log), streaming its bytes from `write`. Once
    /// it is durable, WAL segments it covers and older snapshots are deleted.
    /// A crash at any point leaves the previous snapshot usable.
    /// The three steps of [`Storage::prepare_snapshot`] in one call.
    pub fn save_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        write: impl FnOnce(&mut dyn Write) -> std::io::Result<()>,
    ) -> Result<SnapshotInfo, StorageError> {
        let written = self.prepare_snapshot(meta)?.write(write);
        match self.finish_snapshot(written)? {
            Some(info) => Ok(info),
            None => unreachable!("nothing can overtake a snapshot saved in one call"),
        }
    }

    /// Starts saving a snapshot at `meta.index` (which must be in the log)
    /// in three steps, so that the long one can run on another thread:
    /// this one names the first WAL segment the snapshot keeps;
    /// [`SnapshotWrite::write`] (anywhere, holding no borrow of the
    /// storage) writes the file, fsyncs and renames it; then
    /// [`Storage::finish_snapshot`] makes it the current snapshot and
    /// deletes what it covers. A crash between any two steps leaves
    /// either the previous snapshot with the whole log, or the new one
    /// (recovery picks the newest valid file and skips the segments before
    /// the one it names).
    pub fn prepare_snapshot(&mut self, meta: &SnapshotMeta) -> Result<SnapshotWrite, StorageError> {
        self.prepare(meta, None)
    }

    /// [`Storage::prepare_snapshot`] for a delta on top of the current
    /// snapshot: its file is written with the current one as its base, and
    /// the current chain is kept with it. Without a current snapshot there
    /// is nothing to go on top of: [`StorageError::NoSnapshotBase`].
    pub fn prepare_delta_snapshot(
        &mut self,
        meta: &SnapshotMeta,
    ) -> Result<SnapshotWrite, StorageError> {
        let Some(base) = self.snapshot.as_ref().map(|(meta, _)| meta.index) else {
            return Err(StorageError::NoSnapshotBase { index: meta.index });
        };
        self.prepare(meta, Some(base))
    }

    fn prepare(
        &mut self,
        meta: &SnapshotMeta,
        base: Option<LogIndex>,
    ) -> Result<SnapshotWrite, StorageError> {
        self.check_usable()?;
        self.check_newer(meta)?;
        assert!(
            meta.index <= self.last_index(),
            "snapshot at {} is beyond the last index {}",
            meta.index,
            self.last_index()
        );
        // Written first (usually nothing is pending: the driver synced this
        // round), so that a full segment rolls now and counts as covered.
        if !self.wal.has_bug_undurable_hard_state() {
            let synced = self.wal.sync().map(|_| ());
            self.fail_on_error(synced)?;
        }
        // Segments only ever follow the ones covered now, and every segment
        // opens with a durable hard state, so naming the first uncovered
        // segment stays right however the log grows meanwhile.
        let covered = self.wal.covered_prefix(meta.index);
        Ok(SnapshotWrite {
            fs: Arc::clone(&self.fs),
            dir: self.snapshot_dir.clone(),
            header: SnapshotHeader {
                meta: meta.clone(),
                wal_start_seq: self.wal.seq_at(covered),
                base,
            },
        })
    }

    /// Ends a snapshot write: if it succeeded and is still newer than the
    /// current snapshot, makes it the current one and deletes the WAL
    /// segments and older snapshot files it covers; if a snapshot was
    /// installed meanwhile, removes the file written and returns None.
    /// A failed temp file is [`StorageError::SnapshotNotWritten`]: nothing
    /// durable changed, the node may go on and retry.
    pub fn finish_snapshot(
        &mut self,
        written: WrittenSnapshot,
    ) -> Result<Option<SnapshotInfo>, StorageError> {
        self.finish_snapshot_removing(written, true)
    }

    /// [`Storage::finish_snapshot`] without removing the older snapshot
    /// files, for a caller that may still be reading the previous one (a
    /// driver serving its chunks to a follower until it hears of the new
    /// one); [`Storage::remove_older_snapshots`] removes them after. A
    /// crash in between leaves them behind, and recovery picks the newest.
    pub fn finish_snapshot_keeping_older(
        &mut self,
        written: WrittenSnapshot,
    ) -> Result<Option<SnapshotInfo>, StorageError> {
        self.finish_snapshot_removing(written, false)
    }

    /// Removes every snapshot file but the current one (and temp files).
    pub fn remove_older_snapshots(&mut self) -> Result<(), StorageError> {
        self.check_usable()?;
        if self.snapshot.is_none() {
            return Ok(());
        }
        let result = snapshot_file::remove_others(&*self.fs, &self.snapshot_dir, &self.chain);
        self.fail_on_error(result)
    }

    fn finish_snapshot_removing(
        &mut self,
        written: WrittenSnapshot,
        remove_older: bool,
    ) -> Result<Option<SnapshotInfo>, StorageError> {
        self.check_usable()?;
        let meta = written.header.meta.clone();
        if meta.index <= self.snapshot_index() {
            // Overtaken by an installed snapshot (whose own write may have
            // removed our temp file, failing our rename: that is fine too).
            if let Ok((path, _)) = &written.result
                && Some(path) != self.snapshot.as_ref().map(|(_, p)| p)
            {
                let removed = self.fs.remove_file(path);
                tracing::debug!(?removed, path = %path.display(), "overtaken snapshot removed");
            }
            return Ok(None);
        }
        let (path, file_bytes) = match written.result {
            Err(StorageError::Io { op, path, source })
                if snapshot_file::TEMP_FILE_OPS.contains(&op) =>
            {
                return Err(StorageError::SnapshotNotWritten { path, source });
            }
            other => self.fail_on_error(other)?,
        };
        if let Some(base) = written.header.base
            && Some(base) != self.snapshot.as_ref().map(|(meta, _)| meta.index)
        {
            // Its base is no longer the current snapshot (one installed
            // meanwhile is older than the delta): it goes on top of nothing.
            let removed = self.fs.remove_file(&path);
            tracing::debug!(?removed, path = %path.display(), "delta on a replaced base removed");
            return Err(StorageError::NoSnapshotBase { index: meta.index });
        }
        let result = self.finish_snapshot_inner(&meta, &path, &written.header, remove_older);
        let segments_removed = self.fail_on_error(result)?;
        Ok(Some(SnapshotInfo {
            meta,
            path,
            file_bytes,
            segments_removed,
        }))
    }

    fn finish_snapshot_inner(
        &mut self,
        meta: &SnapshotMeta,
        path: &Path,
        header: &SnapshotHeader,
        remove_older: bool,
    ) -> Result<usize, StorageError> {
        let wal_start_seq = header.wal_start_seq;
        // The active segment then holds the latest hard state durably, so
        // the segments deleted below never hold its only copy.
        if !self.wal.has_bug_undurable_hard_state() {
            self.wal.sync()?;
        }
        let covered = (0..self.wal.segment_count() - 1)
            .take_while(|&position| self.wal.seq_at(position) < wal_start_seq)
            .count();
        self.snapshot = Some((meta.clone(), path.to_path_buf()));
        if header.base.is_none() {
            self.chain.clear();
        }
        self.chain.push(path.to_path_buf());
        self.wal.remove_oldest(covered)?;
        if remove_older {
            snapshot_file::remove_others(&*self.fs, &self.snapshot_dir, &self.chain)?;
        }
        Ok(covered)
    }

    /// Stores a snapshot received from the leader and discards the whole
    /// log: the next entry appended has index `meta.index + 1`. Durable on
    /// return.
    pub fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        data: &[u8],
    ) -> Result<(), StorageError> {
        self.install_snapshot_with(meta, |w| w.write_all(data))
    }

    /// [`Storage::install_snapshot`] streaming the state from `write` (a
    /// file the chunks were staged in), so that it is never in memory whole.
    pub fn install_snapshot_with(
        &mut self,
        meta: &SnapshotMeta,
        write: impl FnOnce(&mut dyn Write) -> std::io::Result<()>,
    ) -> Result<(), StorageError> {
        self.check_usable()?;
        self.check_newer(meta)?;
        let result = self.install_snapshot_inner(meta, write);
        self.fail_on_error(result)
    }

    fn install_snapshot_inner(
        &mut self,
        meta: &SnapshotMeta,
        write: impl FnOnce(&mut dyn Write) -> std::io::Result<()>,
    ) -> Result<(), StorageError> {
        // First a fresh segment holding the hard state, then the snapshot
        // naming it: its rename is the moment the old log stops counting.
        let wal_start_seq = self.wal.restart_after(meta.index)?;
        let header = SnapshotHeader {
            meta: meta.clone(),
            wal_start_seq,
            base: None,
        };
        let (path, _) = snapshot_file::write(&*self.fs, &self.snapshot_dir, &header, write)?;
        self.snapshot = Some((meta.clone(), path.clone()));
        self.chain = vec![path];
        self.wal.remove_oldest(self.wal.segment_count() - 1)?;
        snapshot_file::remove_others(&*self.fs, &self.snapshot_dir, &self.chain)
    }

    /// The data directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The file system the storage runs on.
    pub fn fs(&self) -> &Arc<dyn Fs> {
        &self.fs
    }

    fn snapshot_index(&self) -> LogIndex {
        self.snapshot
            .as_ref()
            .map_or(LogIndex::ZERO, |(meta, _)| meta.index)
    }

    fn check_newer(&self, meta: &SnapshotMeta) -> Result<(), StorageError> {
        let current = self.snapshot_index();
        if meta.index <= current {
            return Err(StorageError::StaleSnapshot {
                index: meta.index,
                current,
            });
        }
        Ok(())
    }

    fn check_usable(&self) -> Result<(), StorageError> {
        if self.failed {
            return Err(StorageError::Failed);
        }
        Ok(())
    }

    /// Refuses every later step: the caller saw one fail whose effect on
    /// the files is unknown.
    pub fn mark_failed(&mut self) {
        self.failed = true;
    }

    fn fail_on_error<T>(&mut self, result: Result<T, StorageError>) -> Result<T, StorageError> {
        if let Err(StorageError::Io { op, source, .. }) = &result {
            self.failed = true;
            if op.starts_with("fsync") || op.starts_with("fdatasync") {
                leave_fsync_marker(&*self.fs, &self.dir, &format!("{op}: {source}"));
            }
        }
        result
    }
}

/// Refuses to open while the marker of an earlier failed fsync exists.
pub(crate) fn check_fsync_marker(fs: &dyn Fs, dir: &Path) -> Result<(), StorageError> {
    let marker = dir.join(FSYNC_FAILED_MARKER);
    match fs.read(&marker) {
        Ok(reason) => Err(StorageError::FsyncFailedEarlier {
            marker,
            reason: String::from_utf8_lossy(&reason).trim().to_string(),
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(io_error("read fsync marker", &marker)(source)),
    }
}

/// Leaves the fsync-failure marker, best effort: the node is stopping
/// anyway, and a disk that failed an fsync may fail this write too (the
/// error is then in the log).
fn leave_fsync_marker(fs: &dyn Fs, dir: &Path, reason: &str) {
    let marker = dir.join(FSYNC_FAILED_MARKER);
    let written = fs.create(&marker).and_then(|mut file| {
        writeln!(file, "{reason}")?;
        file.sync_all()
    });
    match written.and_then(|()| fs.sync_dir(dir)) {
        Ok(()) => {
            tracing::error!(marker = %marker.display(), "fsync failed; the node will refuse to start until the marker is removed")
        }
        Err(error) => {
            tracing::error!(%error, marker = %marker.display(), "fsync failed and the marker could not be written")
        }
    }
}
