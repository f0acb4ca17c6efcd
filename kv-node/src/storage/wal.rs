//! The write-ahead log: append, truncate, roll over, replay, compact.
//!
//! Segment files live in `<dir>/wal/` and are named
//! `<sequence>-<first index>.wal`, both as 20 zero-padded decimal digits. The
//! sequence number gives the replay order; the first index (the index the next
//! entry had when the segment was created) is for people and tools. Ordering by
//! index alone would break after a truncation that reaches back before the
//! active segment: the next segment would be named lower than the one before.
//!
//! Every segment starts with the current hard state, so deleting any prefix of
//! segments whose entries a snapshot covers never loses the vote or term.

use super::StorageOptions;
use super::SyncStats;
use super::error::{StorageError, corrupt, io_error, warn};
use super::files::{ensure_dir, list_dir, sync_dir};
use super::replay::{Replay, Replayed, replay_segment};
use super::segment::{self, RecordRef};
use raft_core::{Entry, HardState, LogIndex};
use std::fs::{self, File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

#[derive(Clone, Debug)]
struct SegmentInfo {
    seq: u64,
    path: PathBuf,
    /// The highest entry index written into this segment, truncated or not;
    /// `None` if it holds no entries. A snapshot at or above it covers it.
    max_entry_index: Option<LogIndex>,
}

pub(super) struct Wal {
    dir: PathBuf,
    /// Live segments in write order; the last one is active. Never empty.
    segments: Vec<SegmentInfo>,
    /// The active segment, positioned at its end.
    active: BufWriter<File>,
    /// Size of the active segment including bytes still in the buffer.
    active_bytes: u64,
    /// Bytes written since the last `sync`, in any segment.
    bytes_since_sync: u64,
    segment_size_bytes: u64,
    write_buffer_bytes: usize,
    /// The hard state last written, repeated at the head of each segment.
    hard_state: HardState,
    /// The last entry's index, or the snapshot index if no entry follows it.
    last_index: LogIndex,
    /// Reused encoding buffer, so appends do not allocate per record.
    scratch: Vec<u8>,
}

fn segment_file_name(seq: u64, first_index: LogIndex) -> String {
    format!("{seq:020}-{:020}.wal", first_index.0)
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
    /// below `snapshot_index` are dropped from the result.
    pub(super) fn open(
        dir: &Path,
        options: &StorageOptions,
        start_seq: u64,
        snapshot_index: LogIndex,
        warnings: &mut Vec<String>,
    ) -> Result<(Wal, Replayed), StorageError> {
        ensure_dir(dir)?;
        let mut segments = list_segments(dir, warnings)?;
        let stale = segments.iter().take_while(|s| s.seq < start_seq).count();
        if stale > 0 {
            tracing::info!(stale, "finishing an interrupted WAL compaction");
            remove_segment_files(dir, segments.drain(..stale))?;
        }

        if start_seq > 0 && segments.first().is_none_or(|first| first.seq != start_seq) {
            return Err(corrupt(
                dir,
                0,
                format!(
                    "WAL segment {start_seq}, which the snapshot names as the first it needs, is missing"
                ),
            ));
        }

        let mut replay = Replay::default();
        let count = segments.len();
        for (position, segment) in segments.iter_mut().enumerate() {
            let is_last = position + 1 == count;
            segment.max_entry_index =
                replay_segment(&segment.path, is_last, &mut replay, warnings)?;
        }
        let replayed = replay.finish(dir, snapshot_index, warnings)?;
        let last_index = replayed.entries.last().map_or(snapshot_index, |e| e.index);

        let (active, active_bytes) = match segments.last() {
            Some(last) => {
                let file = OpenOptions::new()
                    .append(true)
                    .open(&last.path)
                    .map_err(io_error("open segment", &last.path))?;
                let len = file.metadata().map_err(io_error("stat", &last.path))?.len();
                (file, len)
            }
            None => {
                let seq = start_seq.max(1);
                let path = dir.join(segment_file_name(seq, last_index.next()));
                segments.push(SegmentInfo {
                    seq,
                    path: path.clone(),
                    max_entry_index: None,
                });
                (create_segment_file(dir, &path)?, 0)
            }
        };
        let mut wal = Wal {
            dir: dir.to_path_buf(),
            segments,
            active: BufWriter::with_capacity(options.write_buffer_bytes, active),
            active_bytes,
            bytes_since_sync: 0,
            segment_size_bytes: options.segment_size_bytes,
            write_buffer_bytes: options.write_buffer_bytes,
            hard_state: replayed.hard_state,
            last_index,
            scratch: Vec::new(),
        };
        if wal.active_bytes == 0 || replayed.hard_state_lowered {
            // A new segment or one cut back to nothing needs its head; a
            // repaired hard state must replace the one on disk.
            wal.write_to_active(RecordRef::HardState(&replayed.hard_state))?;
            wal.sync()?;
        }
        Ok((wal, replayed))
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
            self.write(RecordRef::Truncate(first.index))?;
        }
        for entry in entries {
            self.write(RecordRef::Entry(entry))?;
        }
        Ok(())
    }

    pub(super) fn set_hard_state(&mut self, hard_state: &HardState) -> Result<(), StorageError> {
        if *hard_state == self.hard_state {
            return Ok(());
        }
        self.write(RecordRef::HardState(hard_state))
    }

    /// Makes everything written so far durable with one flush and one
    /// fdatasync (group commit: many appends share it).
    pub(super) fn sync(&mut self) -> Result<SyncStats, StorageError> {
        let started = Instant::now();
        if self.bytes_since_sync > 0 {
            self.sync_active()?;
        }
        let bytes = std::mem::take(&mut self.bytes_since_sync);
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

    /// Deletes the `count` oldest segments, oldest first, then fsyncs the
    /// directory.
    pub(super) fn remove_oldest(&mut self, count: usize) -> Result<(), StorageError> {
        assert!(
            count < self.segments.len(),
            "removing {count} of {} segments would remove the active one",
            self.segments.len()
        );
        remove_segment_files(&self.dir, self.segments.drain(..count))
    }

    /// Discards the whole log for a snapshot at `snapshot_index`: rolls to a
    /// new, durable segment holding only the hard state, and returns its
    /// sequence number. Older segments stay until the snapshot naming this
    /// sequence number is durable; recovery then ignores them.
    pub(super) fn restart_after(&mut self, snapshot_index: LogIndex) -> Result<u64, StorageError> {
        self.roll(snapshot_index.next())?;
        self.last_index = snapshot_index;
        self.sync_active()?;
        Ok(self.segments.last().expect("never empty").seq)
    }

    fn active_path(&self) -> &Path {
        &self.segments.last().expect("never empty").path
    }

    fn write(&mut self, record: RecordRef<'_>) -> Result<(), StorageError> {
        if self.active_bytes >= self.segment_size_bytes {
            let next_index = match record {
                RecordRef::Entry(entry) => entry.index,
                RecordRef::Truncate(index) => index,
                RecordRef::HardState(_) => self.last_index.next(),
            };
            self.roll(next_index)?;
        }
        self.write_to_active(record)
    }

    fn write_to_active(&mut self, record: RecordRef<'_>) -> Result<(), StorageError> {
        self.scratch.clear();
        segment::encode(record, &mut self.scratch)?;
        if let Err(source) = self.active.write_all(&self.scratch) {
            return Err(io_error("write", self.active_path())(source));
        }
        let bytes = self.scratch.len() as u64;
        self.active_bytes += bytes;
        self.bytes_since_sync += bytes;
        match record {
            RecordRef::Entry(entry) => {
                let active = self.segments.last_mut().expect("never empty");
                active.max_entry_index = active.max_entry_index.max(Some(entry.index));
                self.last_index = entry.index;
            }
            RecordRef::Truncate(index) => self.last_index = index.prev(),
            RecordRef::HardState(hard_state) => self.hard_state = *hard_state,
        }
        Ok(())
    }

    fn sync_active(&mut self) -> Result<(), StorageError> {
        if let Err(source) = self.active.flush() {
            return Err(io_error("write", self.active_path())(source));
        }
        let path = self.active_path().to_path_buf();
        self.active
            .get_ref()
            .sync_data()
            .map_err(io_error("fdatasync", &path))
    }

    /// Closes the active segment (durably: only the last segment may have a
    /// torn tail) and starts a new one with the hard state at its head.
    fn roll(&mut self, first_index: LogIndex) -> Result<(), StorageError> {
        self.sync_active()?;
        let seq = self.segments.last().expect("never empty").seq + 1;
        let path = self.dir.join(segment_file_name(seq, first_index));
        let file = create_segment_file(&self.dir, &path)?;
        self.active = BufWriter::with_capacity(self.write_buffer_bytes, file);
        self.active_bytes = 0;
        self.segments.push(SegmentInfo {
            seq,
            path,
            max_entry_index: None,
        });
        let hard_state = self.hard_state;
        self.write_to_active(RecordRef::HardState(&hard_state))
    }

    #[cfg(test)]
    pub(super) fn segment_paths(&self) -> Vec<PathBuf> {
        self.segments.iter().map(|s| s.path.clone()).collect()
    }
}

fn create_segment_file(dir: &Path, path: &Path) -> Result<File, StorageError> {
    let file = OpenOptions::new()
        .append(true)
        .create_new(true)
        .open(path)
        .map_err(io_error("create segment", path))?;
    sync_dir(dir)?;
    Ok(file)
}

fn remove_segment_files(
    dir: &Path,
    segments: impl Iterator<Item = SegmentInfo>,
) -> Result<(), StorageError> {
    for segment in segments {
        match fs::remove_file(&segment.path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_error("remove segment", &segment.path)(e)),
        }
    }
    sync_dir(dir)
}

fn list_segments(dir: &Path, warnings: &mut Vec<String>) -> Result<Vec<SegmentInfo>, StorageError> {
    let mut segments = Vec::new();
    for name in list_dir(dir)? {
        let path = dir.join(&name);
        match parse_segment_file_name(&name) {
            Some(seq) => segments.push(SegmentInfo {
                seq,
                path,
                max_entry_index: None,
            }),
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
    Ok(segments)
}
