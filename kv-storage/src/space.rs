//! Disk space: reserving a segment's blocks up front, and asking how much
//! room the file system has left (for the free-space threshold).

use std::fs::File;
use std::io;
use std::path::Path;

/// Reserves `bytes` of blocks for `file` without changing its size
/// (`fallocate` with `FALLOC_FL_KEEP_SIZE`): appends then land in blocks
/// already allocated, and the file's length still marks the end of the data.
pub(super) fn preallocate(file: &File, bytes: u64) -> io::Result<()> {
    rustix::fs::fallocate(file, rustix::fs::FallocateFlags::KEEP_SIZE, 0, bytes)
        .map_err(io::Error::from)
}

/// Bytes available to an unprivileged writer on the file system holding
/// `path` (`statvfs`: `f_bavail * f_frsize`).
pub fn free_bytes(path: &Path) -> io::Result<u64> {
    let stat = rustix::fs::statvfs(path).map_err(io::Error::from)?;
    Ok(stat.f_bavail.saturating_mul(stat.f_frsize))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn free_space_of_a_temp_dir_is_reported_and_a_bad_path_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        assert!(free_bytes(dir.path()).unwrap() > 0);
        assert!(free_bytes(&dir.path().join("missing")).is_err());
    }

    #[test]
    fn preallocation_reserves_blocks_without_changing_the_length() {
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir().unwrap();
        let file = File::create(dir.path().join("f")).unwrap();
        match preallocate(&file, 1 << 20) {
            Ok(()) => {
                let meta = file.metadata().unwrap();
                assert_eq!(meta.len(), 0);
                assert!(meta.blocks() * 512 >= 1 << 20, "{} blocks", meta.blocks());
            }
            // Some file systems cannot reserve; the WAL then goes on without.
            Err(e) => assert_eq!(e.kind(), io::ErrorKind::Unsupported, "{e}"),
        }
    }
}
