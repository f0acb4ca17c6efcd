//! Replay: rebuilding the log and hard state from segment records, and
//! telling a torn write at the end of the log from corruption.

use super::error::{StorageError, corrupt, io_error, warn};
use super::segment::{self, BadFrame, Record};
use raft_core::{Entry, HardState, LogIndex};
use std::fs::{self, OpenOptions};
use std::path::Path;

/// What replay found: the log after the snapshot and the latest hard state.
pub(super) struct Replayed {
    pub(super) hard_state: HardState,
    /// Contiguous, starting right after the snapshot index.
    pub(super) entries: Vec<Entry>,
    /// The hard state on disk was repaired and must be written again.
    pub(super) hard_state_lowered: bool,
}

/// Reads one segment into `replay` and returns the highest entry index in
/// it. A damaged record at the end of the last segment is a torn write and
/// is cut off; anywhere else it is corruption.
pub(super) fn replay_segment(
    path: &Path,
    is_last: bool,
    replay: &mut Replay,
    warnings: &mut Vec<String>,
) -> Result<Option<LogIndex>, StorageError> {
    let mut max_entry_index = None;
    let buf = fs::read(path).map_err(io_error("read segment", path))?;
    let mut offset = 0;
    while offset < buf.len() {
        let reason = match segment::decode_at(&buf, offset) {
            Ok((record, end)) => {
                if let Record::Entry(entry) = &record {
                    max_entry_index = max_entry_index.max(Some(entry.index));
                }
                replay.apply(record, path, offset as u64)?;
                offset = end;
                continue;
            }
            Err(BadFrame::Undecodable(reason)) => {
                return Err(corrupt(path, offset as u64, reason));
            }
            Err(BadFrame::Damaged(reason)) => reason,
        };
        if !is_last {
            return Err(corrupt(
                path,
                offset as u64,
                format!("{reason}, in a segment that is not the last"),
            ));
        }
        if let Some(valid) = segment::next_valid_frame(&buf, offset) {
            return Err(corrupt(
                path,
                offset as u64,
                format!("{reason}, followed by a valid record at offset {valid}"),
            ));
        }
        replay.cut_torn_tail = true;
        warn(
            warnings,
            format!(
                "cutting a torn write off the end of {}: {} bytes from offset {offset} ({reason})",
                path.display(),
                buf.len() - offset
            ),
        );
        let file = OpenOptions::new()
            .write(true)
            .open(path)
            .map_err(io_error("open segment", path))?;
        file.set_len(offset as u64)
            .map_err(io_error("truncate segment", path))?;
        file.sync_all().map_err(io_error("fsync segment", path))?;
        break;
    }
    Ok(max_entry_index)
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
    /// Set when a torn write was cut off the end of the log.
    cut_torn_tail: bool,
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
            Record::HardState(hard_state) => self.hard_state = hard_state,
        }
        Ok(())
    }

    pub(super) fn finish(
        mut self,
        dir: &Path,
        snapshot_index: LogIndex,
        warnings: &mut Vec<String>,
    ) -> Result<Replayed, StorageError> {
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
        if self.hard_state.commit > last_index && self.cut_torn_tail {
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
