//! The write-ahead log: append, truncate, roll over, replay, compact.
//!
//! Segment files live in `<dir>/wal/` and are named
//! `<sequence>-<first index>.wal`, both as 20 zero-padded decimal digits. The
//! sequence number gives the replay order; the first index (the index the next
//! entry had when the segment was created) is for people and tools. Ordering by
//! index alone would break after a truncation that reaches back before the
//! active segment: the next segment would be named lower than the one before.
//!
//! Each segment is a header block and synced batches (layout and why in
//! `batch`). Records are collected in memory and written as one padded
//! batch by `sync`, followed by one fdatasync: nothing is written between
//! syncs, so no write ever touches a block holding acknowledged records.
//!
//! Every segment opens with a batch holding the current hard state, and a
//! new segment is fdatasynced (with its directory) before it is used, so
//! deleting any prefix of older segments never removes the only durable
//! copy of the term and vote.
//!
//! Segment recycling (RocksDB's `recycle_log_file_num`): compaction renames
//! up to [`MAX_SPARES`] full-size segments to `<seq>.spare` instead of
//! deleting them, and a roll reuses one. Its batches then overwrite blocks
//! the file already has, so their fdatasync writes data only: no inode
//! (size, extent state), one I/O instead of two. The invariants kept:
//! - A file with a segment's name has that segment's durable header: a
//!   roll writes the new header (salt, seq, "recycled") into the spare and
//!   fdatasyncs it before the rename, then fsyncs the directory.
//! - The blocks after a recycled segment's valid batches belong to its
//!   former life and carry another salt, so they never validate; replay's
//!   rules (torn tail versus damage) hold unchanged. Open drops them
//!   instead of keeping them as a torn tail (see `replay_segment`).
//! - A segment that is not the last is valid to its end: a roll truncates
//!   a recycled active segment to its valid end (durably) before the next
//!   segment's name exists.
//! - A spare is space the WAL keeps reserved: at most `MAX_SPARES`
//!   segments' worth on top of the live ones, and what it saves is the
//!   allocation of the next segment. The free-space threshold (kv-node
//!   `disk_space.rs`) measures the file system, so it counts them as used.

use super::StorageOptions;
use super::SyncStats;
use super::batch::{self, BLOCK_BYTES, SegmentHeader};
use super::bugs::StorageBugs;
use super::error::{StorageError, corrupt, io_error, warn};
use super::files::{ensure_dir, list_dir, sync_dir};
use super::fs::{Fs, FsFile};
use super::replay::{Damage, Replay, Replayed, replay_segment};
use super::segment::{self, RecordRef};
use raft_core::{Entry, HardState, LogIndex, Term};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

/// A batch body is written out (with an fdatasync) once it reaches this
/// size even without a `sync`, so that its length fits the batch header.
const MAX_BATCH_BODY_BYTES: usize = 256 * 1024 * 1024;

/// Spare segments kept for reuse. Two cover a compaction that frees two
/// segments at once before the next roll; more would only hold disk space.
pub(super) const MAX_SPARES: usize = 2;

#[derive(Clone, Debug)]
struct SegmentInfo {
    seq: u64,
    path: PathBuf,
    /// The highest entry index written into this segment, truncated or not;
    /// `None` if it holds no entries. A snapshot at or above it covers it.
    max_entry_index: Option<LogIndex>,
}

pub(super) struct Wal {
    fs: Arc<dyn Fs>,
    dir: PathBuf,
    /// Live segments in write order; the last one is active. Never empty.
    segments: Vec<SegmentInfo>,
    /// The active segment, opened for appending.
    active: Box<dyn FsFile>,
    /// The end of the active segment's valid batches, where the next one
    /// is written: always a multiple of the block.
    active_bytes: u64,
    /// The active segment is a recycled file: it may be longer than
    /// `active_bytes` (stale blocks), so a roll truncates it first.
    active_recycled: bool,
    /// Files of compacted segments, ready for reuse by `roll`; at most
    /// `MAX_SPARES`, each at least `segment_size_bytes` long.
    spares: Vec<PathBuf>,
    /// Rolls that reused a spare since open (for metrics and the simulator).
    recycled_rolls: u64,
    /// The number the next spare file is named with: above every spare,
    /// fill and segment number found at open.
    next_spare_number: u64,
    /// A `SpareFill` handed out is not back yet (`spare_filled`).
    spare_filling: bool,
    /// The active segment's checksum salt.
    salt: u64,
    /// The sequence number of the next batch in the active segment.
    next_batch_seq: u64,
    /// Records written since the last sync: the body of the next batch.
    pending: Vec<u8>,
    /// Whether `pending` holds a hard-state record. Every batch written
    /// carries one (the current hard state is added if none was set), so
    /// that a valid batch after a damaged one tells the exact term and vote
    /// the damage may have taken (see `replay`).
    pending_has_hard_state: bool,
    segment_size_bytes: u64,
    preallocate: bool,
    /// Set when a batch write or fdatasync failed: nothing more is written.
    poisoned: bool,
    /// The hard state last written, repeated at the head of each segment.
    hard_state: HardState,
    /// The last entry's index, or the snapshot index if no entry follows it.
    last_index: LogIndex,
    /// Reused encoding buffer, so appends do not allocate per record.
    scratch: Vec<u8>,
    bugs: StorageBugs,
}

fn segment_file_name(seq: u64, first_index: LogIndex) -> String {
    format!("{seq:020}-{:020}.wal", first_index.0)
}

/// Spares are numbered on their own (`Wal::next_spare_number`), so that a
/// spare made from zeros never takes the name of a later one.
fn spare_file_name(number: u64) -> String {
    format!("{number:020}.spare")
}

/// A spare being made from zeros (`SpareFill`): renamed to a `.spare` once
/// whole and durable; one found at open was cut short and is deleted.
fn fill_file_name(number: u64) -> String {
    format!("{number:020}.fill")
}

/// The number of a `<20 digits><suffix>` file name.
fn parse_numbered(name: &str, suffix: &str) -> Option<u64> {
    name.strip_suffix(suffix)
        .filter(|n| n.len() == 20 && n.bytes().all(|b| b.is_ascii_digit()))?
        .parse()
        .ok()
}

fn parse_segment_file_name(name: &str) -> Option<u64> {
    let (seq, first_index) = name.strip_suffix(".wal")?.split_once('-')?;
    let digits = |s: &str| s.len() == 20 && s.bytes().all(|b| b.is_ascii_digit());
    if !digits(seq) || !digits(first_index) {
        return None;
    }
    seq.parse().ok()
}

impl Wal {
    /// Opens (or creates) the WAL in `dir` and replays it. Segments numbered
    /// below `start_seq` predate the snapshot and are deleted; entries at or
    /// below `snapshot_index` are dropped from the result. A torn tail is
    /// moved into `cut_dir`, never destroyed. Before returning, every
    /// segment replayed is fdatasynced and the directory fsynced: what was
    /// replayed from the page cache after a crash is then really on disk.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn open(
        fs: Arc<dyn Fs>,
        dir: &Path,
        cut_dir: &Path,
        options: &StorageOptions,
        start_seq: u64,
        snapshot_index: LogIndex,
        warnings: &mut Vec<String>,
        record_damage: &mut dyn FnMut(&Damage, Term) -> Result<(), StorageError>,
    ) -> Result<(Wal, Replayed), StorageError> {
        let fsr = &*fs;
        ensure_dir(fsr, dir)?;
        let listing = list_segments(fsr, dir, warnings)?;
        let mut segments = listing.segments;
        // File names are input: one numbered u64::MAX leaves no number above.
        let mut next_spare_number = listing.highest_number.checked_add(1).ok_or_else(|| {
            corrupt(
                dir,
                0,
                format!(
                    "a file numbered {} leaves no number for the next spare",
                    listing.highest_number
                ),
            )
        })?;
        remove_fill_files(fsr, dir, &listing.fills)?;
        let mut spares = keep_spares(fsr, dir, listing.spares, options.segment_size_bytes)?;
        let stale = segments.iter().take_while(|s| s.seq < start_seq).count();
        if stale > 0 {
            tracing::info!(stale, "finishing an interrupted WAL compaction");
            retire_segment_files(
                fsr,
                dir,
                segments.drain(..stale),
                &mut spares,
                &mut next_spare_number,
                options.segment_size_bytes,
            )?;
        }

        check_first_segment(dir, &segments, start_seq)?;

        let mut replay = Replay::new(snapshot_index);
        replay.bugs = options.bugs;
        let trust_cache = StorageBugs::has(options.bugs.open_trusts_page_cache);
        let count = segments.len();
        let mut last_scan = None;
        for (position, segment) in segments.iter_mut().enumerate() {
            let is_last = position + 1 == count;
            let scan = replay_segment(fsr, &segment.path, is_last, &mut replay, warnings)?;
            if let Some(header) = scan.header
                && header.seq != segment.seq
            {
                return Err(corrupt(
                    &segment.path,
                    0,
                    format!(
                        "the header says segment {}, the name {}",
                        header.seq, segment.seq
                    ),
                ));
            }
            segment.max_entry_index = scan.max_entry_index;
            last_scan = Some(scan);
        }
        let replayed = replay.finish(dir, snapshot_index, warnings)?;
        let last_index = replayed.entries.last().map_or(snapshot_index, |e| e.index);
        if let Some(damage) = &replayed.damage {
            let bound = replayed.repair_bound.expect("set with damage");
            record_damage(damage, bound)?;
            if let (Some(last), Some(scan)) = (segments.last(), &last_scan)
                && scan.recycled()
                && scan.file_bytes > scan.batches_end
            {
                // Repair makes a new segment, and the last one then stops
                // being last: its stale blocks would read as damage with no
                // hard state after it (seed 773 at 5 nodes, a crash between
                // the new segment and the cut). Nothing acknowledged is
                // there (see `replay_segment`), as at a clean open.
                drop_tail(fsr, &last.path, scan.batches_end)?;
            }
            let mut wal = Wal::open_after_damage(
                fs, dir, cut_dir, options, segments, &replayed, last_index, warnings,
            )?;
            wal.next_spare_number = next_spare_number;
            wal.spares = spares;
            return Ok((wal, replayed));
        }

        if let Some(scan) = &last_scan {
            let last = segments.last().expect("a scan means a segment");
            if scan.file_bytes != scan.valid_bytes && scan.recycled() {
                // Stale blocks of the file's former segments, perhaps with
                // a torn batch over them: nothing acknowledged (see
                // `replay_segment`), and up to a segment's size.
                drop_tail(fsr, &last.path, scan.valid_bytes)?;
            } else if scan.file_bytes != scan.valid_bytes {
                // A torn tail, or padding the crash cut short (re-extended).
                cut_tail(fsr, &last.path, cut_dir, scan.valid_bytes)?;
            }
            if scan.header.is_none() {
                remove_segment_files(fsr, dir, segments.pop().into_iter())?;
            }
        }
        if !trust_cache {
            for segment in &segments {
                sync_file(fsr, &segment.path)?;
            }
            sync_dir(fsr, dir)?;
        }

        let (active, active_bytes, header, next_batch_seq) = match (segments.last(), last_scan) {
            (Some(last), Some(scan)) if scan.header.is_some() => {
                // Positional writes from `valid_bytes`, which is now the
                // file's length.
                let file = fsr
                    .open_write(&last.path)
                    .map_err(io_error("open segment", &last.path))?;
                let header = scan.header.expect("checked above");
                (file, scan.valid_bytes, header, scan.next_batch_seq)
            }
            _ => {
                let seq = segments.last().map_or(start_seq.max(1), |s| s.seq + 1);
                let path = dir.join(segment_file_name(seq, last_index.next()));
                let header = new_segment_header(fsr, seq);
                let file = create_segment_file(fsr, dir, &path, header, options, warnings)?;
                segments.push(SegmentInfo {
                    seq,
                    path,
                    max_entry_index: None,
                });
                (file, BLOCK_BYTES, header, 0)
            }
        };
        let mut wal = Wal {
            fs,
            dir: dir.to_path_buf(),
            segments,
            active,
            active_bytes,
            active_recycled: false,
            spares,
            recycled_rolls: 0,
            next_spare_number,
            spare_filling: false,
            salt: header.salt,
            next_batch_seq,
            pending: Vec::new(),
            pending_has_hard_state: false,
            segment_size_bytes: options.segment_size_bytes,
            preallocate: options.preallocate,
            poisoned: false,
            hard_state: replayed.hard_state,
            last_index,
            scratch: Vec::new(),
            bugs: options.bugs,
        };
        if wal.next_batch_seq == 0 || replayed.hard_state_lowered {
            // A new segment needs its opening hard state; a repaired hard
            // state must replace the one on disk.
            wal.push_record(RecordRef::HardState(&replayed.hard_state))?;
            wal.sync()?;
        }
        Ok((wal, replayed))
    }

    /// After damage to acknowledged records (the marker of repair is
    /// durable already): cuts the log before it, in an order that a crash
    /// at any point leaves for the next open to finish the same way.
    /// 1. A new segment holding the exact hard state (read after the damage,
    ///    its commit index lowered), durable: the segments moved below may
    ///    hold its only copy.
    /// 2. The segments after the damaged one move into `cut_dir` whole.
    /// 3. The damaged segment's bytes from the damage on are copied into a
    ///    side file and the segment is truncated there (moved whole if its
    ///    header is what was damaged).
    ///
    /// Until step 3 is done the next open finds the same damage and the
    /// same hard state; after it, the log is clean and the marker alone
    /// keeps the node in repair mode.
    #[allow(clippy::too_many_arguments)]
    fn open_after_damage(
        fs: Arc<dyn Fs>,
        dir: &Path,
        cut_dir: &Path,
        options: &StorageOptions,
        mut segments: Vec<SegmentInfo>,
        replayed: &Replayed,
        last_index: LogIndex,
        warnings: &mut Vec<String>,
    ) -> Result<Wal, StorageError> {
        let damage = replayed.damage.as_ref().expect("called on damage");
        let position = segments
            .iter()
            .position(|s| s.path == damage.file)
            .expect("the damage names a replayed segment");
        let replayed_count = segments.len();
        let seq = segments.last().expect("damage means a segment").seq + 1;
        let path = dir.join(segment_file_name(seq, last_index.next()));
        let header = new_segment_header(&*fs, seq);
        let active = create_segment_file(&*fs, dir, &path, header, options, warnings)?;
        segments.push(SegmentInfo {
            seq,
            path,
            max_entry_index: None,
        });
        let mut wal = Wal {
            fs: fs.clone(),
            dir: dir.to_path_buf(),
            segments,
            active,
            active_bytes: BLOCK_BYTES,
            active_recycled: false,
            spares: Vec::new(),
            recycled_rolls: 0,
            next_spare_number: 0,
            spare_filling: false,
            salt: header.salt,
            next_batch_seq: 0,
            pending: Vec::new(),
            pending_has_hard_state: false,
            segment_size_bytes: options.segment_size_bytes,
            preallocate: options.preallocate,
            poisoned: false,
            hard_state: replayed.hard_state,
            last_index,
            scratch: Vec::new(),
            bugs: options.bugs,
        };
        wal.push_record(RecordRef::HardState(&replayed.hard_state))?;
        wal.sync()?;

        let fs = &*fs;
        ensure_dir(fs, cut_dir)?;
        let later: Vec<SegmentInfo> = wal.segments.drain(position + 1..replayed_count).collect();
        for segment in &later {
            move_to_cut(fs, &segment.path, cut_dir)?;
        }
        let damaged = wal.segments[position].clone();
        if damage.offset < BLOCK_BYTES {
            move_to_cut(fs, &damaged.path, cut_dir)?;
            wal.segments.remove(position);
        } else {
            cut_tail(fs, &damaged.path, cut_dir, damage.offset)?;
        }
        sync_dir(fs, cut_dir)?;
        for segment in &wal.segments {
            sync_file(fs, &segment.path)?;
        }
        sync_dir(fs, dir)?;
        warn(
            warnings,
            format!(
                "acknowledged records are damaged in {} at offset {} ({}): the log is cut there and {} later segment(s) set aside in {}; the node starts in repair mode",
                damage.file.display(),
                damage.offset,
                damage.reason,
                later.len(),
                cut_dir.display()
            ),
        );
        Ok(wal)
    }

    pub(super) fn last_index(&self) -> LogIndex {
        self.last_index
    }

    pub(super) fn hard_state(&self) -> HardState {
        self.hard_state
    }

    /// Appends `entries`, first discarding the log from `entries[0].index` if
    /// it overlaps. The caller has checked contiguity and sizes.
    pub(super) fn append(&mut self, entries: &[Entry]) -> Result<(), StorageError> {
        let Some(first) = entries.first() else {
            return Ok(());
        };
        if first.index <= self.last_index {
            self.push_record(RecordRef::Truncate(first.index))?;
        }
        for entry in entries {
            self.push_record(RecordRef::Entry(entry))?;
        }
        Ok(())
    }

    pub(super) fn set_hard_state(&mut self, hard_state: &HardState) -> Result<(), StorageError> {
        if *hard_state == self.hard_state {
            return Ok(());
        }
        self.push_record(RecordRef::HardState(hard_state))
    }

    /// Makes everything written so far durable: one padded batch, one
    /// fdatasync (group commit: many appends share it). Then rolls to a new
    /// segment if the active one is full.
    pub(super) fn sync(&mut self) -> Result<SyncStats, StorageError> {
        let started = Instant::now();
        let bytes = self.write_batch()?;
        if bytes > 0 && self.active_bytes >= self.segment_size_bytes {
            self.roll(self.last_index.next())?;
        }
        Ok(SyncStats {
            bytes,
            duration: started.elapsed(),
        })
    }

    /// How many of the oldest segments hold only entries at or below
    /// `index`. The active segment never counts.
    pub(super) fn covered_prefix(&self, index: LogIndex) -> usize {
        let closed = &self.segments[..self.segments.len() - 1];
        closed
            .iter()
            .take_while(|s| s.max_entry_index.is_none_or(|max| max <= index))
            .count()
    }

    /// The sequence number of the segment at `position` (0 is the oldest).
    pub(super) fn seq_at(&self, position: usize) -> u64 {
        self.segments[position].seq
    }

    pub(super) fn segment_count(&self) -> usize {
        self.segments.len()
    }

    /// Rolls that reused a spare segment since open.
    pub(super) fn recycled_rolls(&self) -> u64 {
        self.recycled_rolls
    }

    /// Removes the `count` oldest segments, oldest first (full-size ones
    /// become spares while there is room), then fsyncs the directory.
    pub(super) fn remove_oldest(&mut self, count: usize) -> Result<(), StorageError> {
        assert!(
            count < self.segments.len(),
            "removing {count} of {} segments would remove the active one",
            self.segments.len()
        );
        assert!(
            self.pending.is_empty() || self.has_bug_undurable_hard_state(),
            "segments are removed only after a sync: the active segment must hold the durable hard state"
        );
        retire_segment_files(
            &*self.fs,
            &self.dir,
            self.segments.drain(..count),
            &mut self.spares,
            &mut self.next_spare_number,
            self.segment_size_bytes,
        )
    }

    /// A spare to make from zeros, off the thread that writes the WAL,
    /// when the next roll would otherwise create a new file: the active
    /// segment is half full, no spare is kept and none is being made.
    /// Compaction keeps spares only as fast as snapshots come, and one
    /// batch per put (a single connection) fills a segment with 4 KiB
    /// blocks long before the byte rule takes a snapshot. A new file's
    /// fdatasync writes its inode too (two I/Os); a spare's, data only.
    /// The caller runs it (`SpareFill::run`) and hands the result back to
    /// `spare_filled`.
    pub(super) fn spare_wanted(&mut self) -> Option<SpareFill> {
        let half_full = self.active_bytes.saturating_mul(2) >= self.segment_size_bytes;
        // A new file's writes cost two I/Os each: once a node is seen
        // writing, it moves to a spare early (`spare_filled`).
        let writing = !self.active_recycled && self.active_bytes >= EARLY_SPARE_BYTES;
        if self.spare_filling || self.poisoned || !self.spares.is_empty() || !(half_full || writing)
        {
            return None;
        }
        let number = take_number(&mut self.next_spare_number)?;
        self.spare_filling = true;
        Some(SpareFill {
            fs: self.fs.clone(),
            dir: self.dir.clone(),
            fill: self.dir.join(fill_file_name(number)),
            spare: self.dir.join(spare_file_name(number)),
            bytes: self.segment_size_bytes,
        })
    }

    /// Takes back what `spare_wanted` handed out: a spare made is kept for
    /// the next roll (if the pool has room and it is whole). A spare that
    /// could not be made is no error of the WAL's: the next roll creates a
    /// new file, as without spares.
    ///
    /// If the active segment is a new file (not recycled) and nothing is
    /// pending, the WAL rolls into the spare at once rather than when the
    /// segment is full: the rest of the segment's writes would each cost
    /// an inode write.
    pub(super) fn spare_filled(
        &mut self,
        made: Result<PathBuf, StorageError>,
    ) -> Result<(), StorageError> {
        self.spare_filling = false;
        let spare = match made {
            Ok(spare) => spare,
            Err(error) => {
                tracing::warn!(%error, "no spare WAL segment could be made; the next roll creates a new file");
                return Ok(());
            }
        };
        let whole = self
            .fs
            .file_len(&spare)
            .is_ok_and(|len| len >= self.segment_size_bytes);
        if !whole || self.spares.len() >= MAX_SPARES || self.poisoned {
            if let Err(error) = self.fs.remove_file(&spare) {
                tracing::warn!(%error, spare = %spare.display(), "cannot remove an unneeded spare");
            }
            return Ok(());
        }
        self.spares.push(spare);
        if !self.active_recycled && self.pending.is_empty() {
            self.roll(self.last_index.next())?;
        }
        Ok(())
    }

    /// Discards the whole log for a snapshot at `snapshot_index`: rolls to a
    /// new, durable segment holding only the hard state, and returns its
    /// sequence number. Older segments stay until the snapshot naming this
    /// sequence number is durable; recovery then ignores them.
    pub(super) fn restart_after(&mut self, snapshot_index: LogIndex) -> Result<u64, StorageError> {
        self.write_batch()?;
        self.roll(snapshot_index.next())?;
        self.last_index = snapshot_index;
        Ok(self.segments.last().expect("never empty").seq)
    }

    /// Whether the bug `snapshot_deletes_undurable_hard_state` is on.
    pub(super) fn has_bug_undurable_hard_state(&self) -> bool {
        StorageBugs::has(self.bugs.snapshot_deletes_undurable_hard_state)
    }

    fn active_path(&self) -> &Path {
        &self.segments.last().expect("never empty").path
    }

    /// Adds a record to the pending batch.
    fn push_record(&mut self, record: RecordRef<'_>) -> Result<(), StorageError> {
        if self.pending.len() >= MAX_BATCH_BODY_BYTES {
            self.write_batch()?;
        }
        segment::encode(record, &mut self.pending)?;
        match record {
            RecordRef::Entry(entry) => {
                let active = self.segments.last_mut().expect("never empty");
                active.max_entry_index = active.max_entry_index.max(Some(entry.index));
                self.last_index = entry.index;
            }
            RecordRef::Truncate(index) => self.last_index = index.prev(),
            RecordRef::HardState(hard_state) => {
                self.hard_state = *hard_state;
                self.pending_has_hard_state = true;
            }
        }
        Ok(())
    }

    /// Writes the pending records as one padded batch at the end of the
    /// active segment and fdatasyncs it. Returns the bytes written.
    fn write_batch(&mut self) -> Result<u64, StorageError> {
        if self.pending.is_empty() {
            return Ok(0);
        }
        if !self.pending_has_hard_state {
            // Last, so that it follows the entries its commit index covers
            // (it is the hard state already in force: a repeat).
            segment::encode(RecordRef::HardState(&self.hard_state), &mut self.pending)?;
        }
        self.scratch.clear();
        batch::encode_batch(
            self.salt,
            self.next_batch_seq,
            &self.pending,
            &mut self.scratch,
        );
        if let Err(source) = self.active.write_all_at(&self.scratch, self.active_bytes) {
            return Err(io_error("write", self.active_path())(source));
        }
        let path = self.active_path().to_path_buf();
        self.active
            .sync_data()
            .map_err(io_error("fdatasync", &path))?;
        let bytes = self.scratch.len() as u64;
        self.active_bytes += bytes;
        self.next_batch_seq += 1;
        self.pending.clear();
        self.pending_has_hard_state = false;
        if self.scratch.capacity() > MAX_RETAINED_SCRATCH_BYTES {
            self.scratch = Vec::new();
            self.pending = Vec::new();
        }
        Ok(bytes)
    }

    /// Starts a new segment (the active one was synced by the caller) whose
    /// header and opening hard state are durable before it is used: only
    /// then may a snapshot delete the segments before it.
    fn roll(&mut self, first_index: LogIndex) -> Result<(), StorageError> {
        assert!(self.pending.is_empty(), "roll after a sync only");
        if self.active_recycled {
            // It stops being the last segment: it must end with its valid
            // data before the next segment's name exists.
            drop_tail(&*self.fs, self.active_path(), self.active_bytes)?;
        }
        let seq = self.segments.last().expect("never empty").seq + 1;
        let path = self.dir.join(segment_file_name(seq, first_index));
        let mut header = new_segment_header(&*self.fs, seq);
        self.active_recycled = !self.spares.is_empty();
        if let Some(spare) = self.spares.pop() {
            header.recycled = true;
            self.active = recycle_segment_file(&*self.fs, &self.dir, &spare, &path, header)?;
            self.recycled_rolls += 1;
            tracing::info!(seq, spare = %spare.display(), "WAL segment recycled");
        } else {
            let mut ignored = Vec::new();
            self.active = create_segment_file(
                &*self.fs,
                &self.dir,
                &path,
                header,
                &StorageOptions {
                    segment_size_bytes: self.segment_size_bytes,
                    preallocate: self.preallocate,
                    bugs: self.bugs,
                },
                &mut ignored,
            )?;
        }
        self.active_bytes = BLOCK_BYTES;
        self.salt = header.salt;
        self.next_batch_seq = 0;
        self.segments.push(SegmentInfo {
            seq,
            path,
            max_entry_index: None,
        });
        let hard_state = self.hard_state;
        self.push_record(RecordRef::HardState(&hard_state))?;
        if !self.has_bug_undurable_hard_state() {
            self.write_batch()?;
        }
        Ok(())
    }

    /// Adds raw bytes to the pending batch: tests forge records the API
    /// would never write, inside a batch with a valid checksum. The batch
    /// is written exactly as forged (no hard state added).
    #[cfg(test)]
    pub(super) fn push_raw(&mut self, bytes: &[u8]) {
        self.pending.extend_from_slice(bytes);
        self.pending_has_hard_state = true;
    }

    #[cfg(test)]
    pub(super) fn segment_paths(&self) -> Vec<PathBuf> {
        self.segments.iter().map(|s| s.path.clone()).collect()
    }
}

/// The segment the snapshot names as the first it needs (`start_seq`) must
/// open the WAL: without it, entries after the snapshot are gone.
fn check_first_segment(
    dir: &Path,
    segments: &[SegmentInfo],
    start_seq: u64,
) -> Result<(), StorageError> {
    if start_seq > 0 && segments.first().is_none_or(|first| first.seq != start_seq) {
        return Err(corrupt(
            dir,
            0,
            format!(
                "WAL segment {start_seq}, which the snapshot names as the first it needs, is missing"
            ),
        ));
    }
    Ok(())
}

/// Replays the WAL in `dir` without changing anything: what `Wal::open`
/// would find, and how many torn bytes it would cut.
pub(super) fn verify(
    fs: &dyn Fs,
    dir: &Path,
    start_seq: u64,
    snapshot_index: LogIndex,
    warnings: &mut Vec<String>,
) -> Result<(Replayed, u64), StorageError> {
    let mut segments = if fs.is_dir(dir) {
        list_segments(fs, dir, warnings)?.segments
    } else {
        Vec::new()
    };
    let stale = segments.iter().take_while(|s| s.seq < start_seq).count();
    for segment in segments.drain(..stale) {
        warn(
            warnings,
            format!(
                "{} predates the snapshot (an interrupted compaction)",
                segment.path.display()
            ),
        );
    }
    check_first_segment(dir, &segments, start_seq)?;
    let mut replay = Replay::new(snapshot_index);
    let mut torn_bytes = 0;
    let count = segments.len();
    let mut scans = Vec::new();
    for (position, segment) in segments.iter().enumerate() {
        let scan = replay_segment(
            fs,
            &segment.path,
            position + 1 == count,
            &mut replay,
            warnings,
        )?;
        torn_bytes += scan.torn_bytes();
        scans.push(scan);
    }
    let replayed = replay.finish(dir, snapshot_index, warnings)?;
    if let Some(damage) = &replayed.damage {
        // Open cuts from the damage to the end of the log.
        let position = segments
            .iter()
            .position(|s| s.path == damage.file)
            .expect("the damage names a replayed segment");
        torn_bytes = scans[position].file_bytes - damage.offset.min(scans[position].file_bytes)
            + scans[position + 1..]
                .iter()
                .map(|s| s.file_bytes)
                .sum::<u64>();
    }
    Ok((replayed, torn_bytes))
}

impl Drop for Wal {
    /// Writes what is pending as a last batch, as a buffered writer would
    /// flush on drop: a clean shutdown loses nothing. Skipped after a failed
    /// write (the file's state is unknown).
    fn drop(&mut self) {
        if self.poisoned || self.pending.is_empty() {
            return;
        }
        if let Err(error) = self.write_batch() {
            tracing::warn!(%error, "the last batch was not written at close");
        }
    }
}

/// Scratch buffers above this are released after use.
const MAX_RETAINED_SCRATCH_BYTES: usize = 4 * 1024 * 1024;

/// A header with a fresh salt that a client cannot predict.
fn new_segment_header(fs: &dyn Fs, seq: u64) -> SegmentHeader {
    SegmentHeader {
        salt: fs.unpredictable_u64(seq),
        seq,
        recycled: false,
    }
}

/// Creates a segment holding just its header block, durably (file and
/// directory), with its space reserved up front when `preallocate` is on:
/// appends within it then do not fail for want of space.
fn create_segment_file(
    fs: &dyn Fs,
    dir: &Path,
    path: &Path,
    header: SegmentHeader,
    options: &StorageOptions,
    warnings: &mut Vec<String>,
) -> Result<Box<dyn FsFile>, StorageError> {
    let mut file = fs
        .create_new(path)
        .map_err(io_error("create segment", path))?;
    if options.preallocate
        && let Err(error) = file.preallocate(options.segment_size_bytes)
    {
        // Not fatal: the space is then taken as batches are written; the
        // free-space threshold is what keeps that from failing.
        warn(
            warnings,
            format!("cannot preallocate {}: {error}", path.display()),
        );
    }
    file.write_all(&batch::encode_segment_header(header))
        .map_err(io_error("write segment header", path))?;
    file.sync_data().map_err(io_error("fdatasync", path))?;
    sync_dir(fs, dir)?;
    Ok(file)
}

/// Turns the spare file `spare` into the segment `path`: the new header
/// (a fresh salt, marked recycled) is durable before the name is, so a
/// crash leaves either a spare (whatever its header) or a segment whose
/// header is its own, followed by stale blocks of another salt.
fn recycle_segment_file(
    fs: &dyn Fs,
    dir: &Path,
    spare: &Path,
    path: &Path,
    header: SegmentHeader,
) -> Result<Box<dyn FsFile>, StorageError> {
    debug_assert!(header.recycled, "a recycled segment's header says so");
    // Not O_APPEND: every batch is written at its offset over old blocks.
    let mut file = fs
        .open_write(spare)
        .map_err(io_error("open spare segment", spare))?;
    file.write_all_at(&batch::encode_segment_header(header), 0)
        .map_err(io_error("write segment header", spare))?;
    file.sync_data().map_err(io_error("fdatasync", spare))?;
    fs.rename(spare, path)
        .map_err(io_error("rename spare segment", spare))?;
    sync_dir(fs, dir)?;
    Ok(file)
}

/// Truncates a recycled segment at `valid_bytes`, durably (fsync: the
/// length is metadata), dropping the stale blocks after its valid data.
fn drop_tail(fs: &dyn Fs, path: &Path, valid_bytes: u64) -> Result<(), StorageError> {
    fs.set_len(path, valid_bytes)
        .map_err(io_error("truncate segment", path))?;
    fs.sync_file(path, false)
        .map_err(io_error("fsync segment", path))
}

/// fdatasyncs a segment written by an earlier run.
fn sync_file(fs: &dyn Fs, path: &Path) -> Result<(), StorageError> {
    fs.sync_file(path, true)
        .map_err(io_error("fdatasync", path))
}

/// Moves the tail of `path` from `from` on (a torn tail, or damage) into a
/// side file in `cut_dir`, durably, then truncates the segment there.
/// Zeros alone are not worth keeping.
pub(super) fn cut_tail(
    fs: &dyn Fs,
    path: &Path,
    cut_dir: &Path,
    from: u64,
) -> Result<(), StorageError> {
    let data = fs.read(path).map_err(io_error("read segment", path))?;
    let start = (from as usize).min(data.len());
    let tail = &data[start..];
    if tail.iter().any(|&b| b != 0) {
        ensure_dir(fs, cut_dir)?;
        let side = cut_dir.join(format!("{}.{from}.cut", file_name(path)));
        let mut file = fs
            .create(&side)
            .map_err(io_error("create cut file", &side))?;
        file.write_all(tail)
            .and_then(|()| file.sync_all())
            .map_err(io_error("write cut file", &side))?;
        sync_dir(fs, cut_dir)?;
        tracing::warn!(bytes = tail.len(), side = %side.display(), "cut bytes kept in a side file");
    }
    fs.set_len(path, from)
        .map_err(io_error("truncate segment", path))?;
    fs.sync_file(path, false)
        .map_err(io_error("fsync segment", path))
}

/// Moves a whole segment into `cut_dir` (as `<name>.0.cut`), keeping it.
/// The caller fsyncs both directories.
fn move_to_cut(fs: &dyn Fs, path: &Path, cut_dir: &Path) -> Result<(), StorageError> {
    let side = cut_dir.join(format!("{}.0.cut", file_name(path)));
    fs.rename(path, &side)
        .map_err(io_error("move segment aside", path))?;
    tracing::warn!(segment = %path.display(), side = %side.display(), "segment set aside");
    Ok(())
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .map_or_else(|| "segment".into(), |n| n.to_string_lossy().into_owned())
}

/// Removes segments that a durable snapshot covers: a full-size one
/// becomes a spare while the pool has room (its name no longer parses as
/// a segment, so a crash at any point leaves it a spare or a segment below
/// the snapshot's start, which the next open retires again), others are
/// deleted. Then fsyncs the directory.
fn retire_segment_files(
    fs: &dyn Fs,
    dir: &Path,
    segments: impl Iterator<Item = SegmentInfo>,
    spares: &mut Vec<PathBuf>,
    next_spare_number: &mut u64,
    segment_size_bytes: u64,
) -> Result<(), StorageError> {
    let mut removed = Vec::new();
    for segment in segments {
        let full = fs
            .file_len(&segment.path)
            .is_ok_and(|len| len >= segment_size_bytes);
        let number = if spares.len() < MAX_SPARES && full {
            take_number(next_spare_number)
        } else {
            None
        };
        if let Some(number) = number {
            let spare = dir.join(spare_file_name(number));
            fs.rename(&segment.path, &spare)
                .map_err(io_error("rename segment to a spare", &segment.path))?;
            spares.push(spare);
        } else {
            removed.push(segment);
        }
    }
    remove_segment_files(fs, dir, removed.into_iter())
}

/// The spares found at open that the pool keeps (full-size, at most
/// `MAX_SPARES`); the rest are deleted.
fn keep_spares(
    fs: &dyn Fs,
    dir: &Path,
    found: Vec<PathBuf>,
    segment_size_bytes: u64,
) -> Result<Vec<PathBuf>, StorageError> {
    let mut kept = Vec::new();
    let mut removed = false;
    for spare in found {
        let full = fs
            .file_len(&spare)
            .is_ok_and(|len| len >= segment_size_bytes);
        if full && kept.len() < MAX_SPARES {
            kept.push(spare);
            continue;
        }
        match fs.remove_file(&spare) {
            Ok(()) => removed = true,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_error("remove spare segment", &spare)(e)),
        }
    }
    if removed {
        sync_dir(fs, dir)?;
    }
    Ok(kept)
}

fn remove_segment_files(
    fs: &dyn Fs,
    dir: &Path,
    segments: impl Iterator<Item = SegmentInfo>,
) -> Result<(), StorageError> {
    let paths: Vec<PathBuf> = segments.map(|s| s.path).collect();
    remove_files(
        fs,
        dir,
        paths.iter().map(PathBuf::as_path),
        "remove segment",
    )
}

/// Deletes `paths` (one already gone is fine), then fsyncs `dir`.
fn remove_files<'a>(
    fs: &dyn Fs,
    dir: &Path,
    paths: impl Iterator<Item = &'a Path>,
    op: &'static str,
) -> Result<(), StorageError> {
    for path in paths {
        match fs.remove_file(path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_error(op, path)(e)),
        }
    }
    sync_dir(fs, dir)
}

/// What the WAL directory holds.
struct Listing {
    /// In sequence order.
    segments: Vec<SegmentInfo>,
    spares: Vec<PathBuf>,
    /// Spares whose making was cut short.
    fills: Vec<PathBuf>,
    /// The highest segment, spare or fill number: new spares go above it.
    highest_number: u64,
}

/// The segments in `dir` in sequence order, and the spare files.
fn list_segments(
    fs: &dyn Fs,
    dir: &Path,
    warnings: &mut Vec<String>,
) -> Result<Listing, StorageError> {
    let mut segments = Vec::new();
    let mut spares = Vec::new();
    let mut fills = Vec::new();
    let mut highest_number = 0;
    for name in list_dir(fs, dir)? {
        let path = dir.join(&name);
        if let Some(number) = parse_numbered(&name, ".spare") {
            highest_number = highest_number.max(number);
            spares.push(path);
            continue;
        }
        if let Some(number) = parse_numbered(&name, ".fill") {
            highest_number = highest_number.max(number);
            fills.push(path);
            continue;
        }
        match parse_segment_file_name(&name) {
            Some(seq) => {
                highest_number = highest_number.max(seq);
                segments.push(SegmentInfo {
                    seq,
                    path,
                    max_entry_index: None,
                });
            }
            None => warn(
                warnings,
                format!(
                    "ignoring unexpected file {} in the WAL directory",
                    path.display()
                ),
            ),
        }
    }
    segments.sort_by_key(|s| s.seq);
    for pair in segments.windows(2) {
        if pair[0].seq == pair[1].seq {
            return Err(corrupt(
                &pair[1].path,
                0,
                format!("two segments share sequence number {}", pair[1].seq),
            ));
        }
    }
    Ok(Listing {
        segments,
        spares,
        fills,
        highest_number,
    })
}

/// Deletes spares whose making a crash cut short.
fn remove_fill_files(fs: &dyn Fs, dir: &Path, fills: &[PathBuf]) -> Result<(), StorageError> {
    if fills.is_empty() {
        return Ok(());
    }
    remove_files(
        fs,
        dir,
        fills.iter().map(PathBuf::as_path),
        "remove unfinished spare",
    )
}

/// The next spare number, or None once they ran out (near `u64::MAX`,
/// reachable only through a forged file name: no spare is made then).
fn take_number(next: &mut u64) -> Option<u64> {
    let number = *next;
    *next = next.checked_add(1)?;
    Some(number)
}

/// A new (not recycled) active segment this full asks for a spare to roll
/// into (`Wal::spare_wanted`): enough writes to show the node is being
/// written to, few enough that a test cluster that writes little never
/// makes one.
const EARLY_SPARE_BYTES: u64 = 4 << 20;

/// Zeros written (and fdatasynced) in one step while a spare is made: no
/// single flush of it holds the disk long against the WAL's own (a WAL
/// batch of 64 connections' puts is about as large).
const FILL_CHUNK_BYTES: usize = 256 << 10;

/// A spare segment to make from zeros (`Wal::spare_wanted`), on any thread:
/// it touches only its own files.
pub struct SpareFill {
    fs: Arc<dyn Fs>,
    dir: PathBuf,
    fill: PathBuf,
    spare: PathBuf,
    bytes: u64,
}

impl SpareFill {
    /// Writes the file full of zeros under its fill name, durably, and
    /// renames it to a spare. `between_chunks` runs after each chunk (the
    /// caller paces the writes, or stops them by returning an error). On
    /// error the fill file is removed: a full disk gets its space back.
    pub fn run(
        self,
        mut between_chunks: impl FnMut() -> std::io::Result<()>,
    ) -> Result<PathBuf, StorageError> {
        let fs = &*self.fs;
        let made = (|| {
            let mut file = fs
                .create_new(&self.fill)
                .map_err(io_error("create spare segment", &self.fill))?;
            let zeros = vec![0u8; FILL_CHUNK_BYTES];
            let mut written = 0u64;
            while written < self.bytes {
                let n = (self.bytes - written).min(FILL_CHUNK_BYTES as u64);
                file.write_all(&zeros[..n as usize])
                    .map_err(io_error("write spare segment", &self.fill))?;
                written += n;
                file.sync_data()
                    .map_err(io_error("fdatasync spare segment", &self.fill))?;
                between_chunks().map_err(io_error("make spare segment", &self.fill))?;
            }
            // Durable under the new name at the roll that uses it (which
            // fsyncs the directory); a crash before leaves a fill file or
            // a spare, both whole or removed at open.
            fs.rename(&self.fill, &self.spare)
                .map_err(io_error("rename spare segment", &self.fill))?;
            Ok(self.spare.clone())
        })();
        if made.is_err() {
            let _ = fs.remove_file(&self.fill);
        }
        made
    }

    /// The WAL directory it is made in.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The size of the spare.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }
}

impl std::fmt::Debug for SpareFill {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SpareFill")
            .field("spare", &self.spare)
            .field("bytes", &self.bytes)
            .finish()
    }
}
