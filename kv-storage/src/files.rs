//! File-system steps that must be durable: directory fsyncs and directory
//! creation. A created, renamed or deleted file is only durable once its
//! directory has been fsynced.

use super::error::{StorageError, io_error};
use super::fs::Fs;
use std::path::Path;

/// fsyncs a directory so that entries created, renamed or removed in it
/// survive a crash.
pub(super) fn sync_dir(fs: &dyn Fs, dir: &Path) -> Result<(), StorageError> {
    fs.sync_dir(dir).map_err(io_error("fsync directory", dir))
}

/// Creates `dir` (and its parents) if missing, durably.
pub(super) fn ensure_dir(fs: &dyn Fs, dir: &Path) -> Result<(), StorageError> {
    if fs.is_dir(dir) {
        return Ok(());
    }
    fs.create_dir_all(dir)
        .map_err(io_error("create directory", dir))?;
    if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        sync_dir(fs, parent)?;
    }
    Ok(())
}

/// The file names in `dir`, sorted. Names that are not UTF-8 are returned
/// lossily; they match no pattern of ours and are reported as unknown.
pub(super) fn list_dir(fs: &dyn Fs, dir: &Path) -> Result<Vec<String>, StorageError> {
    let mut names = fs.list_dir(dir).map_err(io_error("list directory", dir))?;
    names.sort();
    Ok(names)
}
