//! The file system the storage runs on: the few operations it needs, as a
//! trait, so that kv-node runs it over real files ([`StdFs`]) and the
//! simulator over a block-level model of a disk that tears, loses, reorders
//! and rots writes (sim `block_fs.rs`). Recovery is then the same code in
//! both.
//!
//! The contract is POSIX's, and what it does not promise is what the
//! simulator breaks: a write is only durable after `sync_data`/`sync_all`
//! of its file returned Ok; a created, renamed or removed name only after
//! `sync_dir` of its directory returned Ok. After a failed sync nothing is
//! known about the unsynced data.

use crate::error::StorageError;
use crate::lock::DirLock;
use std::any::Any;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom};
use std::path::Path;

/// A file opened for writing: at its end through `io::Write`, or at an
/// offset through `write_all_at` (a recycled WAL segment overwrites the
/// blocks of an older one; see kv-storage `wal.rs`).
pub trait FsFile: io::Write + Send {
    /// Writes all of `buf` at `offset` (pwrite), extending the file if it
    /// runs past the end. Not durable until `sync_data`, like any write.
    /// On a file opened for appending the offset must be its length.
    fn write_all_at(&mut self, buf: &[u8], offset: u64) -> io::Result<()>;
    /// fdatasync: the data written so far is durable on Ok.
    fn sync_data(&mut self) -> io::Result<()>;
    /// fsync: data and metadata (the length) durable on Ok.
    fn sync_all(&mut self) -> io::Result<()>;
    /// Reserves `bytes` for the file without changing its length.
    fn preallocate(&mut self, bytes: u64) -> io::Result<()>;
}

/// A directory lock, released when dropped.
pub type DirGuard = Box<dyn Any + Send>;

/// The file-system operations the storage uses. Paths are absolute or
/// relative to the process's directory, as the caller gave them.
pub trait Fs: Send + Sync + std::fmt::Debug {
    fn is_dir(&self, path: &Path) -> bool;
    /// Creates `dir` and its missing parents (not durable until the
    /// parent's `sync_dir`).
    fn create_dir_all(&self, dir: &Path) -> io::Result<()>;
    /// The names in `dir`, in any order.
    fn list_dir(&self, dir: &Path) -> io::Result<Vec<String>>;
    /// Makes the names created, renamed or removed in `dir` durable.
    fn sync_dir(&self, dir: &Path) -> io::Result<()>;
    /// The whole file (`NotFound` if missing).
    fn read(&self, path: &Path) -> io::Result<Vec<u8>>;
    /// Exactly `buf.len()` bytes from `offset` (`UnexpectedEof` past the end).
    fn read_at(&self, path: &Path, offset: u64, buf: &mut [u8]) -> io::Result<()>;
    fn file_len(&self, path: &Path) -> io::Result<u64>;
    /// A new file (`AlreadyExists` if there is one), written by appending.
    fn create_new(&self, path: &Path) -> io::Result<Box<dyn FsFile>>;
    /// A file created or truncated to empty, written by appending.
    fn create(&self, path: &Path) -> io::Result<Box<dyn FsFile>>;
    /// An existing file, written by appending at its end.
    fn open_append(&self, path: &Path) -> io::Result<Box<dyn FsFile>>;
    /// An existing file, written at explicit offsets (`write_all_at`), not
    /// opened for appending: Linux's pwrite ignores the offset under
    /// O_APPEND.
    fn open_write(&self, path: &Path) -> io::Result<Box<dyn FsFile>>;
    /// Cuts (or extends with zeros) `path` to `len` bytes.
    fn set_len(&self, path: &Path, len: u64) -> io::Result<()>;
    /// fdatasync (`data_only`) or fsync of an existing file by name.
    fn sync_file(&self, path: &Path, data_only: bool) -> io::Result<()>;
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;
    fn remove_file(&self, path: &Path) -> io::Result<()>;
    /// Takes the exclusive lock of a data directory.
    fn lock_dir(&self, dir: &Path) -> Result<DirGuard, StorageError>;
    /// A value nobody outside can predict: the checksum salt of a new
    /// segment. The simulator draws it from its seed.
    fn unpredictable_u64(&self, seq: u64) -> u64;
}

/// Real files, for kv-node.
#[derive(Clone, Copy, Debug, Default)]
pub struct StdFs;

struct StdFile(File);

impl io::Write for StdFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.write(buf)
    }
    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        self.0.write_all(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.0.flush()
    }
}

impl FsFile for StdFile {
    fn write_all_at(&mut self, buf: &[u8], offset: u64) -> io::Result<()> {
        std::os::unix::fs::FileExt::write_all_at(&self.0, buf, offset)
    }
    fn sync_data(&mut self) -> io::Result<()> {
        self.0.sync_data()
    }
    fn sync_all(&mut self) -> io::Result<()> {
        self.0.sync_all()
    }
    fn preallocate(&mut self, bytes: u64) -> io::Result<()> {
        crate::space::preallocate(&self.0, bytes)
    }
}

/// Files the node creates are readable by its own user only (0600).
pub fn private(options: &mut OpenOptions) -> &mut OpenOptions {
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(options, 0o600);
    options
}

impl Fs for StdFs {
    fn is_dir(&self, path: &Path) -> bool {
        path.is_dir()
    }
    /// Directories the node creates are its own only (0700): the data is
    /// readable through them.
    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        let mut builder = fs::DirBuilder::new();
        builder.recursive(true);
        #[cfg(unix)]
        std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
        builder.create(dir)
    }
    fn list_dir(&self, dir: &Path) -> io::Result<Vec<String>> {
        let mut names = Vec::new();
        for item in fs::read_dir(dir)? {
            names.push(item?.file_name().to_string_lossy().into_owned());
        }
        Ok(names)
    }
    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        File::open(dir)?.sync_all()
    }
    fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
        fs::read(path)
    }
    fn read_at(&self, path: &Path, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        let mut file = File::open(path)?;
        file.seek(SeekFrom::Start(offset))?;
        file.read_exact(buf)
    }
    fn file_len(&self, path: &Path) -> io::Result<u64> {
        Ok(fs::metadata(path)?.len())
    }
    fn create_new(&self, path: &Path) -> io::Result<Box<dyn FsFile>> {
        let file = private(OpenOptions::new().append(true).create_new(true)).open(path)?;
        Ok(Box::new(StdFile(file)))
    }
    fn create(&self, path: &Path) -> io::Result<Box<dyn FsFile>> {
        let file =
            private(OpenOptions::new().write(true).create(true).truncate(true)).open(path)?;
        Ok(Box::new(StdFile(file)))
    }
    fn open_append(&self, path: &Path) -> io::Result<Box<dyn FsFile>> {
        Ok(Box::new(StdFile(
            OpenOptions::new().append(true).open(path)?,
        )))
    }
    fn open_write(&self, path: &Path) -> io::Result<Box<dyn FsFile>> {
        Ok(Box::new(StdFile(
            OpenOptions::new().write(true).open(path)?,
        )))
    }
    fn set_len(&self, path: &Path, len: u64) -> io::Result<()> {
        OpenOptions::new().write(true).open(path)?.set_len(len)
    }
    fn sync_file(&self, path: &Path, data_only: bool) -> io::Result<()> {
        // fsync through a read-only handle works on Linux for both.
        let file = File::open(path)?;
        if data_only {
            file.sync_data()
        } else {
            file.sync_all()
        }
    }
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        fs::rename(from, to)
    }
    fn remove_file(&self, path: &Path) -> io::Result<()> {
        fs::remove_file(path)
    }
    fn lock_dir(&self, dir: &Path) -> Result<DirGuard, StorageError> {
        Ok(Box::new(DirLock::acquire(dir)?))
    }
    /// `RandomState` is seeded from the operating system's randomness, so
    /// a client cannot predict the salt.
    fn unpredictable_u64(&self, seq: u64) -> u64 {
        use std::hash::{BuildHasher, Hasher};
        let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
        hasher.write_u64(seq);
        hasher.finish()
    }
}
