//! Replay: rebuilding the log and hard state from segment records, and
//! telling a torn write at the end of the log from corruption.

use super::batch::{self, BLOCK_BYTES, BadSegmentHeader, SegmentHeader};
use super::error::{StorageError, corrupt, io_error, warn};
use super::segment::{self, BadFrame, Record};
use raft_core::{Entry, HardState, LogIndex};
use std::fs;
use std::path::Path;

/// What replay found: the log after the snapshot and the latest hard state.
pub(super) struct Replayed {
    pub(super) hard_state: HardState,
    /// Contiguous, starting right after the snapshot index.
    pub(super) entries: Vec<Entry>,
    /// The hard state on disk was repaired and must be written again.
    pub(super) hard_state_lowered: bool,
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
}

impl SegmentScan {
    pub(super) fn torn_bytes(&self) -> u64 {
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
pub(super) fn replay_segment(
    path: &Path,
    is_last: bool,
    replay: &mut Replay,
    warnings: &mut Vec<String>,
) -> Result<SegmentScan, StorageError> {
    let buf = fs::read(path).map_err(io_error("read segment", path))?;
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
                return Ok(SegmentScan {
                    max_entry_index: None,
                    header: None,
                    next_batch_seq: 0,
                    valid_bytes: 0,
                    file_bytes,
                });
            }
            return Err(corrupt(path, 0, reason));
        }
    };
    let mut scan = SegmentScan {
        max_entry_index: None,
        header: Some(header),
        next_batch_seq: 0,
        valid_bytes: BLOCK_BYTES,
        file_bytes,
    };
    let salt = header.salt;
    let mut offset = BLOCK_BYTES as usize;
    while offset < buf.len() {
        let reason = match batch::check_batch(&buf, offset, salt) {
            Ok((batch, _, _)) if batch.seq != scan.next_batch_seq => format!(
                "batch {} where batch {} was expected",
                batch.seq, scan.next_batch_seq
            ),
            Ok((_, body, end)) => {
                replay_batch(body, path, offset, replay, &mut scan.max_entry_index)?;
                scan.next_batch_seq += 1;
                scan.valid_bytes = end as u64;
                offset = end;
                continue;
            }
            Err(reason) => reason,
        };
        if buf[offset..].iter().all(|&b| b == 0) && is_last {
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
        if !is_last {
            return Err(corrupt(
                path,
                offset as u64,
                format!(
                    "{reason}, in a segment that is not the last (damage to acknowledged data)"
                ),
            ));
        }
        if let Some(valid) = batch::next_valid_batch_header(&buf, offset, salt) {
            return Err(corrupt(
                path,
                offset as u64,
                format!(
                    "{reason}, followed by a valid batch at offset {valid} (damage to acknowledged data)"
                ),
            ));
        }
        replay.torn_tail = true;
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
/// must decode, since a crash cannot have produced a bad one.
fn replay_batch(
    body: &[u8],
    path: &Path,
    batch_offset: usize,
    replay: &mut Replay,
    max_entry_index: &mut Option<LogIndex>,
) -> Result<(), StorageError> {
    let records_start = batch_offset + batch::BATCH_HEADER_BYTES;
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
        if let Record::Entry(entry) = &record {
            *max_entry_index = (*max_entry_index).max(Some(entry.index));
        }
        replay.apply(record, path, offset)?;
        at = end;
    }
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
}

impl Replay {
    fn apply(&mut self, record: Record, path: &Path, offset: u64) -> Result<(), StorageError> {
        match record {
            Record::Entry(entry) => {
                if let Some(next) = self.next_index.filter(|&next| next != entry.index) {
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
                if let Some(next) = self.next_index.filter(|&next| index > next) {
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

    pub(super) fn finish(
        mut self,
        dir: &Path,
        snapshot_index: LogIndex,
        warnings: &mut Vec<String>,
    ) -> Result<Replayed, StorageError> {
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
        if self.hard_state.commit > last_index && self.torn_tail {
            // The hard state went out before its entries in a batch that was
            // never synced, so this node acknowledged none of them: forgetting
            // that they were committed is safe, the leader will say so again.
            warn(
                warnings,
                format!(
                    "lowering the commit index from {} to {last_index}: the entries it covered were in the torn write",
                    self.hard_state.commit
                ),
            );
            self.hard_state.commit = last_index;
            self.hard_state_lowered = true;
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
        })
    }
}
