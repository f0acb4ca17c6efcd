//! The data directory's lock: one process at a time may own a data dir.
//! Two nodes appending to one WAL would interleave records and corrupt it.

use super::error::{StorageError, io_error};
use std::fs::{File, OpenOptions, TryLockError};
use std::io::Write;
use std::path::Path;

const LOCK_FILE_NAME: &str = "LOCK";

/// Holds an exclusive `flock` on `<dir>/LOCK` until dropped. The kernel drops
/// the lock when the process dies, so a crash never leaves a stale lock.
#[derive(Debug)]
pub(super) struct DirLock {
    _file: File,
}

impl DirLock {
    pub(super) fn acquire(dir: &Path) -> Result<DirLock, StorageError> {
        let path = dir.join(LOCK_FILE_NAME);
        // Not `truncate(true)`: the file may belong to a live owner whose pid
        // we must not erase before we know the lock is ours.
        let mut file = crate::fs::private(
            OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false),
        )
        .open(&path)
        .map_err(io_error("open lock file", &path))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                return Err(StorageError::Locked {
                    dir: dir.to_path_buf(),
                    lock_file: path,
                });
            }
            Err(TryLockError::Error(source)) => return Err(io_error("lock", &path)(source)),
        }
        // The pid is only a hint for an operator wondering who holds the
        // lock, so it is not fsynced, and failing to write it (a full disk)
        // must not stop the node from starting.
        if let Err(error) = file
            .set_len(0)
            .and_then(|()| writeln!(file, "{}", std::process::id()))
        {
            tracing::warn!(%error, lock_file = %path.display(), "cannot write the pid into the lock file");
        }
        Ok(DirLock { _file: file })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_on_the_same_dir_is_refused_until_the_first_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let first = DirLock::acquire(dir.path()).unwrap();
        let second = DirLock::acquire(dir.path());
        assert!(
            matches!(second, Err(StorageError::Locked { .. })),
            "{second:?}"
        );
        drop(first);
        DirLock::acquire(dir.path()).expect("the lock is free again");
    }
}
