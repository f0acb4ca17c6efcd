//! The typed errors of the storage layer, and the small helpers that build them.

use raft_core::LogIndex;
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

/// Everything that can go wrong in [`crate::Storage`].
///
/// `Io` and `Corrupt` are fatal for a node: it should stop with the message
/// rather than limp on (a failed fsync may have lost writes it cannot see).
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// A file-system operation failed: a full disk, a failed fsync, a
    /// permission problem.
    #[error("storage I/O error: {op} {}: {source}", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// Data on disk does not read back as written, somewhere a crash cannot
    /// explain (anything but a torn record at the very end of the log).
    #[error("corrupt storage: {} at byte offset {offset}: {reason}", file.display())]
    Corrupt {
        file: PathBuf,
        offset: u64,
        reason: String,
    },
    /// A WAL segment in an on-disk format this version does not read.
    /// Format 1 (kv-node before the batch format) is refused rather than
    /// converted: wipe the data directory and let the node rejoin (it is
    /// sent a snapshot), or run the older version.
    #[error("{} is in WAL format {version}; this kv-node reads format {} only (wipe the data directory and rejoin the cluster, or run the kv-node that wrote it)", file.display(), super::batch::FORMAT_VERSION)]
    UnsupportedFormat { file: PathBuf, version: u32 },
    /// A snapshot (or log) exists but no hard-state record was found: the
    /// only copy of the term and vote is gone, and starting at term 0 could
    /// make this node vote twice in a term.
    #[error("no hard state (term and vote) found in the WAL of {}, which holds entries or follows a snapshot (at index {snapshot_index}): the term and vote are lost", dir.display())]
    MissingHardState {
        dir: PathBuf,
        snapshot_index: LogIndex,
    },
    /// Acknowledged records are damaged and no readable hard-state record
    /// follows the damage: the term and vote it may have held are unknown,
    /// so the node cannot even be started in repair mode (it might vote
    /// twice in a term). Nothing was changed on disk.
    #[error("corrupt storage: {} at byte offset {offset}: {reason}; no hard state (term and vote) can be read after it, so the node cannot be repaired safely (remove it from the cluster, wipe the data directory and add it back as a new member)", file.display())]
    HardStateLost {
        file: PathBuf,
        offset: u64,
        reason: String,
    },
    /// The repair marker (`REPAIR`) does not read back as written.
    #[error("corrupt repair marker {}: {reason}", file.display())]
    BadRepairMarker { file: PathBuf, reason: String },
    /// An fsync failed in an earlier run. Linux reports such an error once
    /// and may then drop the dirty pages, so what the page cache shows may
    /// not be on disk; the node refuses to start until an operator acts
    /// (README, "Storage": check the device, reboot or drop caches, run
    /// `kv-node check`, then delete the marker file).
    #[error("an fsync failed in an earlier run ({reason}); refusing to start until an operator has checked the disk and removed {}", marker.display())]
    FsyncFailedEarlier { marker: PathBuf, reason: String },
    /// Another process (or another `Storage` in this one) holds the data
    /// directory's lock file.
    #[error("data directory {} is locked by another process (lock file {})", dir.display(), lock_file.display())]
    Locked { dir: PathBuf, lock_file: PathBuf },
    /// A single record would exceed the framing limit.
    #[error("a {kind} record of {bytes} bytes exceeds the limit of {max_bytes} bytes")]
    RecordTooLarge {
        kind: &'static str,
        bytes: usize,
        max_bytes: usize,
    },
    /// A snapshot no newer than the one already stored.
    #[error("snapshot at index {index} is not newer than the stored snapshot at index {current}")]
    StaleSnapshot { index: LogIndex, current: LogIndex },
    /// A snapshot's temp file could not be written (ENOSPC, most likely).
    /// Nothing else changed: the previous snapshot and the whole WAL are
    /// intact, the storage stays usable, and the snapshot can be retried.
    #[error("snapshot not written ({}): {source}; the previous snapshot and the log are intact", path.display())]
    SnapshotNotWritten {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// A delta snapshot at `index` has no snapshot to go on top of (none is
    /// stored, or the one it was taken on was replaced meanwhile by one
    /// installed from the leader). Nothing durable changed: the storage
    /// stays usable, and a whole snapshot can be written instead.
    #[error("no snapshot for the delta at {index} to go on top of; write a whole one")]
    NoSnapshotBase { index: LogIndex },
    /// `StorageOptions` failed validation.
    #[error("invalid storage option {option}: {reason}")]
    InvalidOption {
        option: &'static str,
        reason: String,
    },
    /// An earlier write or fsync failed, so what is on disk is unknown. The
    /// node must restart and recover from what is durable.
    #[error("storage is unusable after an earlier I/O error; restart the node to recover")]
    Failed,
}

/// `map_err(io_error("fdatasync", &path))`: an I/O error with its context.
pub(super) fn io_error(op: &'static str, path: &Path) -> impl FnOnce(io::Error) -> StorageError {
    let path = path.to_path_buf();
    move |source| StorageError::Io { op, path, source }
}

pub(super) fn corrupt(file: &Path, offset: u64, reason: impl fmt::Display) -> StorageError {
    StorageError::Corrupt {
        file: file.to_path_buf(),
        offset,
        reason: reason.to_string(),
    }
}

/// Records a recovery warning for `Recovered.warnings` and the log.
pub(super) fn warn(warnings: &mut Vec<String>, message: String) {
    tracing::warn!("{message}");
    warnings.push(message);
}
