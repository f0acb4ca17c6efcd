//! File-system steps that must be durable: directory fsyncs and directory
//! creation. A created, renamed or deleted file is only durable once its
//! directory has been fsynced.

use super::error::{StorageError, io_error};
use std::fs::{self, File};
use std::path::Path;

/// fsyncs a directory so that entries created, renamed or removed in it
/// survive a crash.
pub(super) fn sync_dir(dir: &Path) -> Result<(), StorageError> {
    let handle = File::open(dir).map_err(io_error("open directory", dir))?;
    handle.sync_all().map_err(io_error("fsync directory", dir))
}

/// Creates `dir` (and its parents) if missing, durably.
pub(super) fn ensure_dir(dir: &Path) -> Result<(), StorageError> {
    if dir.is_dir() {
        return Ok(());
    }
    fs::create_dir_all(dir).map_err(io_error("create directory", dir))?;
    if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        sync_dir(parent)?;
    }
    Ok(())
}

/// The file names in `dir`, sorted. Names that are not UTF-8 are returned
/// lossily; they match no pattern of ours and are reported as unknown.
pub(super) fn list_dir(dir: &Path) -> Result<Vec<String>, StorageError> {
    let mut names = Vec::new();
    for item in fs::read_dir(dir).map_err(io_error("list directory", dir))? {
        let item = item.map_err(io_error("list directory", dir))?;
        names.push(item.file_name().to_string_lossy().into_owned());
    }
    names.sort();
    Ok(names)
}
