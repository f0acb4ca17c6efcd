//! Replay: rebuilding the log and hard state from segment records, and
//! telling a torn write at the end of the log from corruption.

use super::batch::{self, BLOCK_BYTES, BadSegmentHeader, SegmentHeader};
use super::bugs::StorageBugs;
use super::error::{StorageError, corrupt, io_error, warn};
use super::fs::Fs;
use super::segment::{self, BadFrame, Record};
use raft_core::{Entry, HardState, LogIndex, Term};
use std::path::{Path, PathBuf};

/// Acknowledged records recovery found damaged or missing. The log kept
/// ends before them; everything from here on is cut aside, never destroyed,
/// and the node starts in repair mode (raft-core `repair.rs`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Damage {
    /// The segment and the block-aligned offset where the damage starts.
    pub(super) file: PathBuf,
    pub(super) offset: u64,
    pub(super) reason: String,
}

/// What replay found: the log after the snapshot and the latest hard state.
pub(super) struct Replayed {
    pub(super) hard_state: HardState,
    /// Contiguous, starting right after the snapshot index.
    pub(super) entries: Vec<Entry>,
    /// The hard state on disk was repaired and must be written again.
    pub(super) hard_state_lowered: bool,
    /// Damage to acknowledged records; `hard_state` is then the exact one
    /// (read after the damage) with its commit index lowered to the log kept.
    pub(super) damage: Option<Damage>,
    /// With damage: the repair bound, the highest term in the hard state or
    /// any record read (they agree unless the log is inconsistent).
    pub(super) repair_bound: Option<Term>,
}

/// What reading one segment found. Reading never changes the file: the
/// caller cuts a torn tail (or sets it aside) as the rules allow.
#[derive(Clone, Debug)]
pub(super) struct SegmentScan {
    /// The highest entry index written into the segment.
    pub(super) max_entry_index: Option<LogIndex>,
    /// The header, or None if the segment's creation was torn by a crash
    /// (allowed for the last segment only, see below).
    pub(super) header: Option<SegmentHeader>,
    /// The sequence number the next batch appended must carry.
    pub(super) next_batch_seq: u64,
    /// The block-aligned end of the last valid batch: where appends go on.
    pub(super) valid_bytes: u64,
    /// The file's length; bytes from `valid_bytes` on are a torn tail.
    pub(super) file_bytes: u64,
    /// The block-aligned end of the last valid batch, after damage too
    /// (where `valid_bytes` stops): what of a recycled file is this
    /// segment's, the rest being stale blocks.
    pub(super) batches_end: u64,
}

impl SegmentScan {
    /// Whether the file held another segment before (its header says so):
    /// the bytes after `valid_bytes` are then that segment's stale blocks,
    /// dropped at open rather than kept as a torn tail.
    pub(super) fn recycled(&self) -> bool {
        self.header.is_some_and(|h| h.recycled)
    }
}

impl SegmentScan {
    /// A segment of `file_bytes` with no valid header, so nothing in it.
    fn nothing_valid(file_bytes: u64) -> SegmentScan {
        SegmentScan {
            max_entry_index: None,
            header: None,
            next_batch_seq: 0,
            valid_bytes: 0,
            file_bytes,
            batches_end: 0,
        }
    }

    /// The bytes open would cut into a side file: none in a recycled
    /// segment, whose tail is dropped (see `replay_segment`).
    pub(super) fn torn_bytes(&self) -> u64 {
        if self.recycled() {
            return 0;
        }
        self.file_bytes.saturating_sub(self.valid_bytes)
    }
}

/// The most bytes a segment whose creation was torn can hold: its header
/// block and the opening hard-state batch (a single block). A segment is
/// only used after both were fdatasynced, so a larger file with a bad
/// header lost a header that was durable: corruption.
const TORN_CREATION_MAX_BYTES: u64 = 2 * BLOCK_BYTES;

/// Reads one segment into `replay`.
///
/// The rules (see `batch` for why they hold): a segment that is not the
/// last was closed by a roll that fdatasynced it, so any damage in it is
/// corruption. In the last segment, a damaged batch with no valid batch
/// header on any later block boundary is the batch being written when the
/// node stopped, never acknowledged: a torn tail. A damaged batch followed
/// by a valid one was acknowledged: corruption.
///
/// A recycled last segment holds, after its valid batches, the blocks of
/// the segment the file held before. They carry another salt, so they
/// never validate, and the rules above hold unchanged: a valid batch of
/// this segment after damage is damage. Without one, the tail is stale
/// blocks, perhaps with the batch being written torn over them: batch
/// `n + 1` is written only after batch `n`'s fdatasync, so nothing there
/// was acknowledged, and open drops it without a side file (it can be a
/// whole segment's worth of old bytes).
pub(super) fn replay_segment(
    fs: &dyn Fs,
    path: &Path,
    is_last: bool,
    replay: &mut Replay,
    warnings: &mut Vec<String>,
) -> Result<SegmentScan, StorageError> {
    let buf = fs.read(path).map_err(io_error("read segment", path))?;
    let file_bytes = buf.len() as u64;
    let header = match batch::decode_segment_header(&buf) {
        Ok(header) => header,
        Err(BadSegmentHeader::FormatOne) => {
            return Err(StorageError::UnsupportedFormat {
                file: path.to_path_buf(),
                version: 1,
            });
        }
        Err(BadSegmentHeader::Version(version)) => {
            return Err(StorageError::UnsupportedFormat {
                file: path.to_path_buf(),
                version,
            });
        }
        Err(BadSegmentHeader::Damaged(reason)) => {
            if is_last && file_bytes <= TORN_CREATION_MAX_BYTES {
                replay.torn_tail = true;
                warn(
                    warnings,
                    format!(
                        "{} ({file_bytes} bytes) was being created when the node stopped ({reason}); it holds nothing acknowledged",
                        path.display()
                    ),
                );
                return Ok(SegmentScan::nothing_valid(file_bytes));
            }
            // A segment is used only once its header is durable: this lost
            // acknowledged records (all of them, as the salt is gone).
            replay.damaged(path, 0, format!("{reason} (damage to acknowledged data)"));
            return Ok(SegmentScan::nothing_valid(file_bytes));
        }
    };
    let mut scan = SegmentScan {
        max_entry_index: None,
        header: Some(header),
        next_batch_seq: 0,
        valid_bytes: BLOCK_BYTES,
        file_bytes,
        batches_end: BLOCK_BYTES,
    };
    let salt = header.salt;
    let mut offset = BLOCK_BYTES as usize;
    // After damage the sequence resumes at whatever batch comes next.
    let mut resuming = false;
    while offset < buf.len() {
        let reason = match batch::check_batch(&buf, offset, salt) {
            Ok((batch, _, _)) if batch.seq != scan.next_batch_seq && !resuming => format!(
                "batch {} where batch {} was expected",
                batch.seq, scan.next_batch_seq
            ),
            Ok((batch, body, end)) => {
                resuming = false;
                replay_batch(body, path, offset, replay, &mut scan)?;
                scan.next_batch_seq = batch.seq + 1;
                scan.batches_end = (end as u64).min(file_bytes);
                offset = end;
                continue;
            }
            Err(reason) => reason,
        };
        let recycled = header.recycled;
        if buf[offset..].iter().all(|&b| b == 0) && is_last && !recycled {
            // Space the file system extended the file by without the data
            // that was to fill it: an unsynced batch.
            replay.torn_tail = true;
            warn(
                warnings,
                format!(
                    "a torn write at the end of {}: {} zero bytes from offset {offset}",
                    path.display(),
                    buf.len() - offset
                ),
            );
            break;
        }
        let next_valid = batch::next_valid_batch_header(&buf, offset, salt);
        let tail_bug = StorageBugs::has(replay.bugs.ack_damage_cut_as_torn_tail);
        if !is_last || (next_valid.is_some() && !tail_bug) {
            // Batch n + 1 is written only after batch n was fdatasynced, and
            // a segment is closed only after it was: this one was acknowledged.
            let why = match next_valid {
                Some(valid) => format!("followed by a valid batch at offset {valid}"),
                None => "in a segment that is not the last".to_string(),
            };
            replay.damaged(
                path,
                offset as u64,
                format!("{reason}, {why} (damage to acknowledged data)"),
            );
            match next_valid {
                Some(valid) => {
                    offset = valid;
                    resuming = true;
                    continue;
                }
                None => break,
            }
        }
        replay.torn_tail = true;
        if recycled {
            // Stale blocks are the normal end of a recycled segment: only
            // a batch header of this segment says a write was torn here.
            if batch::check_batch_header(&buf, offset, salt).is_ok() {
                warn(
                    warnings,
                    format!(
                        "a torn write at the end of recycled segment {} at offset {offset} was never acknowledged ({reason}); it and the {} bytes of older segments after it are dropped",
                        path.display(),
                        buf.len() - offset
                    ),
                );
            }
            break;
        }
        warn(
            warnings,
            format!(
                "a torn write at the end of {}: {} bytes from offset {offset} were never acknowledged ({reason})",
                path.display(),
                buf.len() - offset
            ),
        );
        break;
    }
    Ok(scan)
}

/// Replays the records of one batch whose checksum matched: every record
/// must decode, since a crash cannot have produced a bad one. A batch whose
/// first log record does not continue the log follows lost batches: that
/// is damage, and from there on only hard-state records count.
fn replay_batch(
    body: &[u8],
    path: &Path,
    batch_offset: usize,
    replay: &mut Replay,
    scan: &mut SegmentScan,
) -> Result<(), StorageError> {
    let records_start = batch_offset + batch::BATCH_HEADER_BYTES;
    let mut records = Vec::new();
    let mut at = 0;
    while at < body.len() {
        let offset = (records_start + at) as u64;
        let (record, end) = segment::decode_at(body, at).map_err(|bad| {
            let reason = match bad {
                BadFrame::Damaged(reason) | BadFrame::Undecodable(reason) => reason,
            };
            corrupt(
                path,
                offset,
                format!("{reason}, inside a batch with a valid checksum"),
            )
        })?;
        records.push((record, offset));
        at = end;
    }
    if replay.damage.is_none()
        && let Some(gap) = replay.gap_before(records.iter().map(|(r, _)| r))
    {
        replay.damaged(
            path,
            batch_offset as u64,
            format!("{gap}: acknowledged batches before this one are missing"),
        );
    }
    if replay.damage.is_some() {
        for (record, _) in records {
            match record {
                Record::HardState(hard_state) => replay.later_hard_state(hard_state),
                Record::Entry(entry) => replay.max_term_seen = replay.max_term_seen.max(entry.term),
                Record::Truncate(_) => {}
            }
        }
        return Ok(());
    }
    for (record, offset) in records {
        if let Record::Entry(entry) = &record {
            scan.max_entry_index = scan.max_entry_index.max(Some(entry.index));
        }
        replay.apply(record, path, offset)?;
    }
    scan.valid_bytes = batch::align_up((records_start + body.len()) as u64);
    Ok(())
}

/// The log as replay rebuilds it, record by record.
#[derive(Default)]
pub(super) struct Replay {
    hard_state: HardState,
    /// Contiguous.
    entries: Vec<Entry>,
    /// The index the next entry record must carry; unknown until the first
    /// entry or truncation (older segments may have been compacted away).
    next_index: Option<LogIndex>,
    /// Set when the end of the log is a torn, never-acknowledged write.
    torn_tail: bool,
    /// Set once any hard-state record was read: every segment opens with
    /// one, so a log without one lost the only copy of the term and vote.
    saw_hard_state: bool,
    /// Set when the commit index had to be lowered after a torn write.
    hard_state_lowered: bool,
    /// The first damage to acknowledged records. From there on the log is
    /// not rebuilt; later valid batches only tell the latest hard state.
    damage: Option<Damage>,
    /// Set by damage, cleared by a later hard-state record: the damaged
    /// records may have held a newer term and vote than any read so far.
    hard_state_maybe_lost: bool,
    /// The highest term of any record read, before or after damage.
    max_term_seen: Term,
    /// The snapshot the log follows: without one, the first entry must be
    /// right after it, or acknowledged batches before it were lost.
    snapshot_index: LogIndex,
    /// Known bugs switched on (see `bugs`).
    pub(super) bugs: StorageBugs,
    /// The commit index of the last hard state read before the damage:
    /// the kept log is known committed up to it, not beyond (the lost
    /// records may have truncated and overwritten the kept log's tail).
    commit_before_damage: LogIndex,
}

impl Replay {
    pub(super) fn new(snapshot_index: LogIndex) -> Replay {
        Replay {
            snapshot_index,
            ..Replay::default()
        }
    }

    /// Notes damage to acknowledged records at `offset` of `path`.
    fn damaged(&mut self, path: &Path, offset: u64, reason: String) {
        self.hard_state_maybe_lost = true;
        if self.damage.is_none() {
            self.commit_before_damage = self.hard_state.commit;
            self.damage = Some(Damage {
                file: path.to_path_buf(),
                offset,
                reason,
            });
        }
    }

    /// Whether a log record at `index` beyond the log's end is where the log
    /// resumes after the snapshot: the log was cut below the snapshot index
    /// (damage to batches the snapshot covers), and the entries missing in
    /// between are in the snapshot. Found by the simulator (`blockdisk`).
    fn resumes_after_snapshot(&self, index: LogIndex) -> bool {
        let resume = self.snapshot_index.next();
        self.next_index
            .is_some_and(|next| next < index && next < resume && index <= resume)
    }

    /// A hard-state record after the damage: newer than any before it.
    fn later_hard_state(&mut self, hard_state: HardState) {
        self.max_term_seen = self.max_term_seen.max(hard_state.term);
        self.hard_state = hard_state;
        self.saw_hard_state = true;
        self.hard_state_maybe_lost = false;
    }

    /// Whether the first log record of a batch fails to continue the log
    /// (a truncation or entry beyond its end, or an entry before it without
    /// a truncation): what lost batches leave behind.
    fn gap_before<'a>(&self, mut records: impl Iterator<Item = &'a Record>) -> Option<String> {
        let first_log_record = records.find(|r| !matches!(r, Record::HardState(_)))?;
        let Some(next) = self.next_index else {
            // The oldest segment kept may start before the snapshot, never
            // after the entry that follows it.
            let first = self.snapshot_index.next();
            return match first_log_record {
                Record::Entry(entry) if entry.index > first => Some(format!(
                    "the log starts at entry {} where entry {first} was expected",
                    entry.index
                )),
                _ => None,
            };
        };
        match first_log_record {
            Record::Entry(entry)
                if entry.index != next && !self.resumes_after_snapshot(entry.index) =>
            {
                Some(format!(
                    "entry {} where entry {next} was expected",
                    entry.index
                ))
            }
            Record::Truncate(index) if *index > next && !self.resumes_after_snapshot(*index) => {
                Some(format!(
                    "truncation at {index} beyond the end of the log at {next}"
                ))
            }
            _ => None,
        }
    }

    fn apply(&mut self, record: Record, path: &Path, offset: u64) -> Result<(), StorageError> {
        match &record {
            Record::Entry(entry) => self.max_term_seen = self.max_term_seen.max(entry.term),
            Record::HardState(hs) => self.max_term_seen = self.max_term_seen.max(hs.term),
            Record::Truncate(_) => {}
        }
        match record {
            Record::Entry(entry) => {
                if self.resumes_after_snapshot(entry.index) {
                    self.entries.clear();
                } else if let Some(next) = self.next_index.filter(|&next| next != entry.index) {
                    return Err(corrupt(
                        path,
                        offset,
                        format!("entry {} where entry {next} was expected", entry.index),
                    ));
                }
                let Some(next) = entry.index.0.checked_add(1) else {
                    return Err(corrupt(
                        path,
                        offset,
                        format!("entry index {} is out of range", entry.index),
                    ));
                };
                self.next_index = Some(raft_core::LogIndex(next));
                self.entries.push(entry);
            }
            Record::Truncate(index) => {
                if self.resumes_after_snapshot(index) {
                    self.entries.clear();
                } else if let Some(next) = self.next_index.filter(|&next| index > next) {
                    return Err(corrupt(
                        path,
                        offset,
                        format!("truncation at {index} beyond the end of the log at {next}"),
                    ));
                }
                match self.entries.first() {
                    Some(first) if index > first.index => {
                        self.entries.truncate((index.0 - first.index.0) as usize);
                    }
                    _ => self.entries.clear(),
                }
                self.next_index = Some(index);
            }
            Record::HardState(hard_state) => {
                self.hard_state = hard_state;
                self.saw_hard_state = true;
            }
        }
        Ok(())
    }

    /// Lowers the recovered commit index to `to` (it covered entries that
    /// are no longer in the log), saying why.
    fn lower_commit(&mut self, to: LogIndex, why: &str, warnings: &mut Vec<String>) {
        warn(
            warnings,
            format!(
                "lowering the commit index from {} to {to}: {why}",
                self.hard_state.commit
            ),
        );
        self.hard_state.commit = to;
        self.hard_state_lowered = true;
    }

    pub(super) fn finish(
        mut self,
        dir: &Path,
        snapshot_index: LogIndex,
        warnings: &mut Vec<String>,
    ) -> Result<Replayed, StorageError> {
        if let Some(damage) = &self.damage
            && self.hard_state_maybe_lost
        {
            // No hard-state record follows the damage: the term and vote it
            // may have held are unknown, so no safe bound exists for repair
            // (every batch written carries one, so only damage at the very
            // end of the log, or of an older format-2 log, gets here).
            return Err(StorageError::HardStateLost {
                file: damage.file.clone(),
                offset: damage.offset,
                reason: damage.reason.clone(),
            });
        }
        if !self.saw_hard_state && (snapshot_index > LogIndex::ZERO || !self.entries.is_empty()) {
            // Defaulting to term 0 and no vote here could let this node vote
            // twice in a term; raft-core would also refuse a log whose terms
            // exceed the current term, without naming storage as the cause.
            return Err(StorageError::MissingHardState {
                dir: dir.to_path_buf(),
                snapshot_index,
            });
        }
        let covered = self.entries.partition_point(|e| e.index <= snapshot_index);
        self.entries.drain(..covered);
        if let Some(first) = self.entries.first()
            && first.index != snapshot_index.next()
        {
            return Err(corrupt(
                dir,
                0,
                format!(
                    "the log resumes at entry {} after the snapshot at {snapshot_index}: entries are missing",
                    first.index
                ),
            ));
        }
        let last_index = self.entries.last().map_or(snapshot_index, |e| e.index);
        // Known committed in the kept log: up to the commit index read
        // before the damage (the snapshot is committed whatever follows).
        let kept_commit = self
            .commit_before_damage
            .max(snapshot_index)
            .min(last_index);
        if self.damage.is_some() && self.hard_state.commit > kept_commit {
            // The entries it covered are cut aside with the damage, or may
            // have been overwritten in it; the leader that repairs this
            // node will say again what is committed.
            self.lower_commit(
                kept_commit,
                "the log is cut before damaged records",
                warnings,
            );
        } else if self.hard_state.commit > last_index && self.torn_tail {
            // The hard state went out before its entries in a batch that was
            // never synced, so this node acknowledged none of them: forgetting
            // that they were committed is safe, the leader will say so again.
            self.lower_commit(
                last_index,
                "the entries it covered were in the torn write",
                warnings,
            );
        } else if self.hard_state.commit > last_index {
            return Err(corrupt(
                dir,
                0,
                format!(
                    "the hard state commits entry {} but the log ends at {last_index}: entries are missing",
                    self.hard_state.commit
                ),
            ));
        }
        Ok(Replayed {
            hard_state: self.hard_state,
            entries: self.entries,
            hard_state_lowered: self.hard_state_lowered,
            repair_bound: self
                .damage
                .as_ref()
                .map(|_| self.hard_state.term.max(self.max_term_seen)),
            damage: self.damage,
        })
    }
}
