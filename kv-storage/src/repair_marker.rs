//! The repair marker: `<dir>/REPAIR`, written when recovery cut damaged
//! acknowledged records, kept until the log is repaired.
//!
//! It holds the repair bound: the term of the exact hard state read after
//! the damage, at least every term the node voted or acknowledged in before
//! it. raft-core starts the node in repair mode with it (`repair.rs` there:
//! no votes, no campaigns until the log holds an entry of a newer term).
//! Once the cut is done the log itself looks clean, so this file is what
//! keeps a restart before the repair in repair mode. `Storage::open`
//! removes it once the log's last term (or the snapshot's) is above the
//! bound: only a leader of a newer term writes such an entry.
//!
//! ```text
//! repair-bound-term <term>\n crc32c <8 hex digits of the crc32c of the first line>\n
//! ```

use super::error::{StorageError, io_error};
use super::files::sync_dir;
use super::fs::Fs;
use raft_core::Term;
use std::io::Write;
use std::path::Path;

pub(super) const REPAIR_MARKER: &str = "REPAIR";

/// The bound in the marker, if there is one.
pub(super) fn read(fs: &dyn Fs, dir: &Path) -> Result<Option<Term>, StorageError> {
    let path = dir.join(REPAIR_MARKER);
    let text = match fs.read(&path) {
        Ok(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_error("read repair marker", &path)(e)),
    };
    let bad = |reason: &str| StorageError::BadRepairMarker {
        file: path.clone(),
        reason: reason.to_string(),
    };
    let mut lines = text.lines();
    let (Some(first), Some(second)) = (lines.next(), lines.next()) else {
        return Err(bad("fewer than two lines"));
    };
    let stored = second
        .strip_prefix("crc32c ")
        .and_then(|hex| u32::from_str_radix(hex, 16).ok())
        .ok_or_else(|| bad("no checksum line"))?;
    if stored != crc32c::crc32c(first.as_bytes()) {
        return Err(bad("checksum mismatch"));
    }
    let term = first
        .strip_prefix("repair-bound-term ")
        .and_then(|t| t.parse::<u64>().ok())
        .ok_or_else(|| bad("no term"))?;
    Ok(Some(Term(term)))
}

/// Writes the marker durably (temp file, fsync, rename, directory fsync).
pub(super) fn write(fs: &dyn Fs, dir: &Path, bound: Term) -> Result<(), StorageError> {
    let path = dir.join(REPAIR_MARKER);
    let temp = dir.join(format!("{REPAIR_MARKER}.tmp"));
    let first = format!("repair-bound-term {}", bound.0);
    let text = format!("{first}\ncrc32c {:08x}\n", crc32c::crc32c(first.as_bytes()));
    let mut file = fs
        .create(&temp)
        .map_err(io_error("create repair marker", &temp))?;
    file.write_all(text.as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(io_error("write repair marker", &temp))?;
    fs.rename(&temp, &path)
        .map_err(io_error("rename repair marker", &path))?;
    sync_dir(fs, dir)
}

/// Removes the marker durably once the log is repaired.
pub(super) fn remove(fs: &dyn Fs, dir: &Path) -> Result<(), StorageError> {
    let path = dir.join(REPAIR_MARKER);
    match fs.remove_file(&path) {
        Ok(()) => sync_dir(fs, dir),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io_error("remove repair marker", &path)(e)),
    }
}
