//! `kv-node check`: verify a data directory without changing it, or repair
//! what the recovery rules allow (which is exactly what `Storage::open`
//! does: cut a torn, never-acknowledged tail into a side file, remove an
//! unfinished snapshot, finish an interrupted compaction, and cut the log
//! before damaged acknowledged records, keeping them in side files and
//! leaving the node in repair mode).

use super::error::StorageError;
use super::fs::{Fs, StdFs};
use super::{SNAPSHOT_DIR, Storage, StorageOptions, WAL_DIR, snapshot_file, wal};
use raft_core::{HardState, LogIndex, Term};
use std::path::Path;
use std::sync::Arc;

/// What a check found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CheckReport {
    /// The newest valid snapshot's index.
    pub snapshot_index: Option<LogIndex>,
    pub hard_state: HardState,
    /// The log after the snapshot: first and last index, if any entries.
    pub log_range: Option<(LogIndex, LogIndex)>,
    /// Bytes of torn tail found at the end of the WAL, or from damaged
    /// acknowledged records to the end of the log (cut aside, if repairing).
    pub torn_bytes: u64,
    /// Damage to acknowledged records: where it starts and why (cut aside,
    /// if repairing).
    pub damage: Option<String>,
    /// Some when the node would start (or, repaired, starts) in repair
    /// mode: it grants no votes until a leader of a term above this one has
    /// written into its log.
    pub damaged_up_to_term: Option<Term>,
    /// Everything found that recovery repairs (or, with `repair`, repaired).
    pub warnings: Vec<String>,
    /// Whether the directory was repaired.
    pub repaired: bool,
}

impl CheckReport {
    /// Nothing to repair.
    pub fn is_clean(&self) -> bool {
        self.warnings.is_empty() && self.torn_bytes == 0 && self.damaged_up_to_term.is_none()
    }
}

/// Verifies the data directory `dir`. Without `repair` nothing on disk
/// changes; with it, the directory is opened as a node would open it.
/// Damage that the rules do not allow to cut is an error either way.
pub fn check(dir: &Path, repair: bool) -> Result<CheckReport, StorageError> {
    check_in(Arc::new(StdFs), dir, repair)
}

/// [`check`] on any file system.
pub fn check_in(fs: Arc<dyn Fs>, dir: &Path, repair: bool) -> Result<CheckReport, StorageError> {
    if !fs.is_dir(dir) {
        return Err(StorageError::Io {
            op: "open data directory",
            path: dir.to_path_buf(),
            source: std::io::Error::from(std::io::ErrorKind::NotFound),
        });
    }
    if repair {
        let options = StorageOptions {
            preallocate: false,
            ..StorageOptions::default()
        };
        let (storage, recovered) = Storage::open_in(fs, dir, options)?;
        let report = CheckReport {
            snapshot_index: recovered.snapshot.as_ref().map(|(meta, _)| meta.index),
            hard_state: recovered.hard_state,
            log_range: log_range(&recovered.entries),
            torn_bytes: 0,
            damage: None,
            damaged_up_to_term: recovered.damaged_up_to_term,
            repaired: !recovered.warnings.is_empty(),
            warnings: recovered.warnings,
        };
        drop(storage);
        return Ok(report);
    }
    let fs = &*fs;
    let _lock = fs.lock_dir(dir)?;
    super::check_fsync_marker(fs, dir)?;
    let mut warnings = Vec::new();
    let latest = snapshot_file::recover_latest(fs, &dir.join(SNAPSHOT_DIR), &mut warnings, false)?;
    let (start_seq, snapshot_index) = latest.as_ref().map_or((0, LogIndex::ZERO), |(h, _)| {
        (h.wal_start_seq, h.meta.index)
    });
    let (replayed, torn_bytes) = wal::verify(
        fs,
        &dir.join(WAL_DIR),
        start_seq,
        snapshot_index,
        &mut warnings,
    )?;
    let damage = replayed
        .damage
        .as_ref()
        .map(|d| format!("{} at offset {}: {}", d.file.display(), d.offset, d.reason));
    let marker = super::repair_marker::read(fs, dir)?;
    let last_term = replayed
        .entries
        .last()
        .map(|e| e.term)
        .or(latest.as_ref().map(|(h, _)| h.meta.term))
        .unwrap_or(Term::ZERO);
    // As `Storage::open` would decide it.
    let damaged_up_to_term = match (replayed.damage.as_ref(), marker) {
        (Some(_), marker) => replayed
            .repair_bound
            .map(|bound| bound.max(marker.unwrap_or(Term::ZERO))),
        (None, Some(bound)) if last_term <= bound => Some(bound),
        (None, _) => None,
    };
    Ok(CheckReport {
        snapshot_index: latest.map(|(header, _)| header.meta.index),
        hard_state: replayed.hard_state,
        log_range: log_range(&replayed.entries),
        torn_bytes,
        damage,
        damaged_up_to_term,
        warnings,
        repaired: false,
    })
}

fn log_range(entries: &[raft_core::Entry]) -> Option<(LogIndex, LogIndex)> {
    Some((entries.first()?.index, entries.last()?.index))
}
