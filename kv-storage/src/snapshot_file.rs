//! Snapshot files in `<dir>/snapshots/`, named `<index>.snap` (20 digits):
//!
//! ```text
//! [magic "RKVSNAP\0": 8][version: u32 LE][header_len: u32 LE]
//! [header_crc: u32 LE, CRC32C of version, header_len and header]
//! [header: postcard SnapshotHeader]
//! [state: the state machine's bytes, opaque here]
//! [state_len: u64 LE][state_crc: u32 LE, CRC32C of state][end magic "RKVSEND\0": 8]
//! ```
//!
//! The footer lets [`open_snapshot`] reject a truncated file from its size
//! alone, and lets [`SnapshotReader`] verify the state bytes as they stream.
//! A snapshot is written to `<index>.snap.tmp`, fsynced, renamed, and the
//! directory fsynced, so a crash leaves either the old file set or the new.

use super::error::{StorageError, corrupt, io_error, warn};
use super::files::{list_dir, sync_dir};
use super::fs::{Fs, StdFs};
use raft_core::{LogIndex, SnapshotMeta};
use serde::{Deserialize, Serialize};
use std::fs::File;
use std::io::{self, BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

const MAGIC: &[u8; 8] = b"RKVSNAP\0";
const END_MAGIC: &[u8; 8] = b"RKVSEND\0";
/// Version 2 added the header's `base` (delta snapshots); version 1 files
/// are still read.
const VERSION: u32 = 2;
/// magic + version + header_len + header_crc.
const PREFIX_BYTES: u64 = 8 + 4 + 4 + 4;
/// state_len + state_crc + end magic.
const FOOTER_BYTES: u64 = 8 + 4 + 8;
/// A membership list is small; a larger header length is corruption.
const MAX_HEADER_BYTES: u32 = 1024 * 1024;
/// A snapshot being written is made durable this many bytes at a time.
/// One fsync of a whole large snapshot (118 MB at 1M keys) at the end
/// hands the device all of it at once, and every WAL fsync meanwhile
/// waits behind it: writes stall for the length of the flush. Synced in
/// steps, the WAL's fsyncs wait behind one step at most. Measured on the
/// bench machine (a 4 KiB write + fdatasync loop beside a 1 GiB writer):
/// WAL fdatasync p99 4.1-5.4 ms with 8 MiB steps, 0.7-0.9 ms with 1 MiB
/// steps, and the writer still ran at 0.5-1 GB/s (BENCHMARKS.md, stop 31).
pub const SYNC_STEP_BYTES: u64 = 1 << 20;
const SUFFIX: &str = ".snap";
const TEMP_SUFFIX: &str = ".snap.tmp";

/// The `StorageError::Io` operations that concern only a snapshot's temp
/// file: when one fails, nothing durable changed.
pub(super) const TEMP_FILE_OPS: &[&str] = &["create snapshot", "write snapshot", "fsync snapshot"];

/// What the header records besides the Raft metadata.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct SnapshotHeader {
    pub(super) meta: SnapshotMeta,
    /// WAL segments numbered below this predate the snapshot and hold nothing
    /// it needs. For an installed snapshot this is how the discarded log stays
    /// discarded across a crash: the rename of this file is the commit point.
    pub(super) wal_start_seq: u64,
    /// For a delta: the index of the snapshot it goes on top of, whose file
    /// must be kept (the chain of a snapshot runs from a whole one through
    /// its deltas). None: a whole snapshot.
    pub(super) base: Option<LogIndex>,
}

/// The header of a version 1 file, which had no `base`.
#[derive(Deserialize)]
struct SnapshotHeaderV1 {
    meta: SnapshotMeta,
    wal_start_seq: u64,
}

/// Where the parts of a validated snapshot file are.
struct Layout {
    header: SnapshotHeader,
    state_offset: u64,
    state_len: u64,
    state_crc: u32,
}

fn file_name(index: LogIndex) -> String {
    format!("{:020}{SUFFIX}", index.0)
}

fn parse_file_name(name: &str) -> Option<LogIndex> {
    let digits = name.strip_suffix(SUFFIX)?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok().map(LogIndex)
}

/// Writes a snapshot durably and returns its path and size in bytes.
pub(super) fn write(
    fs: &dyn Fs,
    dir: &Path,
    header: &SnapshotHeader,
    write_state: impl FnOnce(&mut dyn Write) -> io::Result<()>,
) -> Result<(PathBuf, u64), StorageError> {
    let name = file_name(header.meta.index);
    let final_path = dir.join(&name);
    let temp_path = dir.join(format!("{name}.tmp"));
    let written = write_temp(fs, &temp_path, header, write_state);
    let bytes = match written {
        Ok(bytes) => bytes,
        Err(error) => {
            // Best effort: a leftover temp file is also removed at open.
            let _ = fs.remove_file(&temp_path);
            return Err(error);
        }
    };
    fs.rename(&temp_path, &final_path)
        .map_err(io_error("rename snapshot", &final_path))?;
    sync_dir(fs, dir)?;
    Ok((final_path, bytes))
}

fn write_temp(
    fs: &dyn Fs,
    path: &Path,
    header: &SnapshotHeader,
    write_state: impl FnOnce(&mut dyn Write) -> io::Result<()>,
) -> Result<u64, StorageError> {
    let header_bytes = postcard::to_stdvec(header).expect("a snapshot header serializes");
    let header_len = u32::try_from(header_bytes.len())
        .ok()
        .filter(|&len| len <= MAX_HEADER_BYTES)
        .ok_or(StorageError::RecordTooLarge {
            kind: "snapshot header",
            bytes: header_bytes.len(),
            max_bytes: MAX_HEADER_BYTES as usize,
        })?;
    let file = fs.create(path).map_err(io_error("create snapshot", path))?;
    let file = SyncInSteps {
        file,
        unsynced: 0,
        step: SYNC_STEP_BYTES,
    };
    // The state's checksum is taken under the buffer, over 256 KiB at a
    // time: over each record's few bytes (as they are written) it was a
    // tenth of the writer's CPU at 1M keys.
    let mut out = BufWriter::with_capacity(
        256 * 1024,
        StateCrc {
            inner: file,
            counting: false,
            crc: 0,
            bytes: 0,
        },
    );
    let result = (|| {
        out.write_all(MAGIC)?;
        out.write_all(&VERSION.to_le_bytes())?;
        out.write_all(&header_len.to_le_bytes())?;
        out.write_all(&header_crc(VERSION, header_len, &header_bytes).to_le_bytes())?;
        out.write_all(&header_bytes)?;
        out.flush()?;
        out.get_mut().counting = true;
        write_state(&mut out)?;
        out.flush()?;
        let state = out.get_mut();
        state.counting = false;
        let (state_len, state_crc) = (state.bytes, state.crc);
        out.write_all(&state_len.to_le_bytes())?;
        out.write_all(&state_crc.to_le_bytes())?;
        out.write_all(END_MAGIC)?;
        out.flush()?;
        Ok(PREFIX_BYTES + u64::from(header_len) + state_len + FOOTER_BYTES)
    })();
    let bytes = result.map_err(io_error("write snapshot", path))?;
    out.get_mut()
        .inner
        .file
        .sync_all()
        .map_err(io_error("fsync snapshot", path))?;
    Ok(bytes)
}

/// Passes writes through to `file` and fsyncs it (data only) after every
/// `step` bytes; see [`SYNC_STEP_BYTES`].
struct SyncInSteps {
    file: Box<dyn super::fs::FsFile>,
    unsynced: u64,
    step: u64,
}

impl Write for SyncInSteps {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.file.write(buf)?;
        self.unsynced += n as u64;
        if self.unsynced >= self.step {
            self.file.sync_data()?;
            self.unsynced = 0;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

fn header_crc(version: u32, header_len: u32, header: &[u8]) -> u32 {
    let crc = crc32c::crc32c(&version.to_le_bytes());
    let crc = crc32c::crc32c_append(crc, &header_len.to_le_bytes());
    crc32c::crc32c_append(crc, header)
}

/// Counts and checksums, while `counting`, the bytes on their way to the
/// file: the state's, between the header and the footer.
struct StateCrc<W: Write> {
    inner: W,
    counting: bool,
    crc: u32,
    bytes: u64,
}

impl<W: Write> Write for StateCrc<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        if self.counting {
            self.crc = crc32c::crc32c_append(self.crc, &buf[..n]);
            self.bytes += n as u64;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Reads bytes `offset..offset + len` of a snapshot file's state (fewer at
/// its end), for one InstallSnapshot chunk: a seek and one read, so sending
/// a snapshot never holds it whole in memory. The receiver checks the state
/// as a whole (its records carry their own CRCs).
pub fn read_snapshot_range(path: &Path, offset: u64, len: u64) -> Result<Vec<u8>, StorageError> {
    read_snapshot_range_in(&StdFs, path, offset, len)
}

/// [`read_snapshot_range`] on any file system.
pub fn read_snapshot_range_in(
    fs: &dyn Fs,
    path: &Path,
    offset: u64,
    len: u64,
) -> Result<Vec<u8>, StorageError> {
    let layout = read_layout(fs, path)?;
    let start = offset.min(layout.state_len);
    let end = offset.saturating_add(len).min(layout.state_len);
    let mut data = vec![0; (end - start) as usize];
    fs.read_at(path, layout.state_offset + start, &mut data)
        .map_err(io_error("read snapshot", path))?;
    Ok(data)
}

/// Reads bytes `offset..offset + len` of a chain's state (fewer at its
/// end): the states of its files, oldest first, one after the other, as a
/// follower is sent them and restores them ([`read_snapshot_range`] for
/// each file).
pub fn read_chain_range_in(
    fs: &dyn Fs,
    chain: &[PathBuf],
    offset: u64,
    len: u64,
) -> Result<Vec<u8>, StorageError> {
    let mut data = Vec::new();
    let mut start = offset;
    let mut wanted = len;
    for path in chain {
        if wanted == 0 {
            break;
        }
        let state_len = read_layout(fs, path)?.state_len;
        if start >= state_len {
            start -= state_len;
            continue;
        }
        let part = read_snapshot_range_in(fs, path, start, wanted)?;
        wanted -= part.len() as u64;
        data.extend_from_slice(&part);
        start = 0;
    }
    Ok(data)
}

/// Reads a whole snapshot file on any file system, checking its state's
/// checksum: its metadata and state bytes.
pub fn read_snapshot(fs: &dyn Fs, path: &Path) -> Result<(SnapshotMeta, Vec<u8>), StorageError> {
    let layout = read_layout(fs, path)?;
    let mut data = vec![0; layout.state_len as usize];
    fs.read_at(path, layout.state_offset, &mut data)
        .map_err(io_error("read snapshot", path))?;
    let computed = crc32c::crc32c(&data);
    if computed != layout.state_crc {
        let reason = format!(
            "state checksum mismatch: stored {:08x}, computed {computed:08x}",
            layout.state_crc
        );
        return Err(corrupt(path, layout.state_offset, reason));
    }
    Ok((layout.header.meta, data))
}

/// Opens a snapshot file, validates its header and size, and returns its
/// metadata with a reader positioned at the state bytes. The reader checks
/// the state's CRC as it reaches the end and fails with `InvalidData` if it
/// does not match.
pub fn open_snapshot(path: &Path) -> Result<(SnapshotMeta, SnapshotReader), StorageError> {
    let layout = read_layout(&StdFs, path)?;
    let mut file = File::open(path).map_err(io_error("open snapshot", path))?;
    file.seek(SeekFrom::Start(layout.state_offset))
        .map_err(io_error("seek snapshot", path))?;
    let reader = SnapshotReader {
        inner: BufReader::with_capacity(256 * 1024, file),
        remaining: layout.state_len,
        crc: 0,
        expected_crc: layout.state_crc,
        path: path.to_path_buf(),
    };
    Ok((layout.header.meta, reader))
}

/// The state bytes of a snapshot, checksummed as they are read.
#[derive(Debug)]
pub struct SnapshotReader {
    inner: BufReader<File>,
    remaining: u64,
    crc: u32,
    expected_crc: u32,
    path: PathBuf,
}

impl SnapshotReader {
    /// State bytes not read yet.
    pub fn remaining_bytes(&self) -> u64 {
        self.remaining
    }
}

impl Read for SnapshotReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() || self.remaining == 0 {
            return Ok(0);
        }
        let want = buf
            .len()
            .min(usize::try_from(self.remaining).unwrap_or(usize::MAX));
        let n = self.inner.read(&mut buf[..want])?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!(
                    "snapshot {} ended {} bytes early",
                    self.path.display(),
                    self.remaining
                ),
            ));
        }
        self.crc = crc32c::crc32c_append(self.crc, &buf[..n]);
        self.remaining -= n as u64;
        if self.remaining == 0 && self.crc != self.expected_crc {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "snapshot {} state checksum mismatch: stored {:08x}, computed {:08x}",
                    self.path.display(),
                    self.expected_crc,
                    self.crc
                ),
            ));
        }
        Ok(n)
    }
}

/// Reads and checks everything but the state bytes themselves.
fn read_layout(fs: &dyn Fs, path: &Path) -> Result<Layout, StorageError> {
    let read_error = io_error("read snapshot", path);
    let file_len = fs.file_len(path).map_err(io_error("open snapshot", path))?;
    if file_len < PREFIX_BYTES + FOOTER_BYTES {
        let reason = format!("{file_len} bytes is too short for a snapshot file");
        return Err(corrupt(path, 0, reason));
    }
    let mut prefix = [0u8; PREFIX_BYTES as usize];
    fs.read_at(path, 0, &mut prefix).map_err(read_error)?;
    let word = |at: usize| u32::from_le_bytes(prefix[at..at + 4].try_into().expect("4 bytes"));
    if &prefix[..8] != MAGIC {
        return Err(corrupt(path, 0, "not a snapshot file (bad magic)"));
    }
    let (version, header_len, stored_crc) = (word(8), word(12), word(16));
    if !(1..=VERSION).contains(&version) {
        let reason = format!("unsupported snapshot version {version}, expected 1 to {VERSION}");
        return Err(corrupt(path, 8, reason));
    }
    if header_len > MAX_HEADER_BYTES
        || PREFIX_BYTES + u64::from(header_len) + FOOTER_BYTES > file_len
    {
        let reason = format!("header length {header_len} does not fit a {file_len}-byte file");
        return Err(corrupt(path, 12, reason));
    }
    let mut header_bytes = vec![0u8; header_len as usize];
    fs.read_at(path, PREFIX_BYTES, &mut header_bytes)
        .map_err(io_error("read snapshot", path))?;
    let computed_crc = header_crc(version, header_len, &header_bytes);
    if computed_crc != stored_crc {
        let reason = format!(
            "header checksum mismatch: stored {stored_crc:08x}, computed {computed_crc:08x}"
        );
        return Err(corrupt(path, 16, reason));
    }
    let decoded = if version == 1 {
        postcard::take_from_bytes::<SnapshotHeaderV1>(&header_bytes).map(|(v1, rest)| {
            let header = SnapshotHeader {
                meta: v1.meta,
                wal_start_seq: v1.wal_start_seq,
                base: None,
            };
            (header, rest)
        })
    } else {
        postcard::take_from_bytes::<SnapshotHeader>(&header_bytes)
    };
    let header = match decoded {
        Ok((header, [])) => header,
        Ok(_) => return Err(corrupt(path, PREFIX_BYTES, "trailing bytes in the header")),
        Err(e) => {
            return Err(corrupt(
                path,
                PREFIX_BYTES,
                format!("header does not decode: {e}"),
            ));
        }
    };

    if let Some(base) = header.base
        && base >= header.meta.index
    {
        let reason = format!("a delta at {} on top of {base}", header.meta.index);
        return Err(corrupt(path, PREFIX_BYTES, reason));
    }

    let footer_offset = file_len - FOOTER_BYTES;
    let mut footer = [0u8; FOOTER_BYTES as usize];
    fs.read_at(path, footer_offset, &mut footer)
        .map_err(io_error("read snapshot", path))?;
    if &footer[12..] != END_MAGIC {
        let reason = "no end marker: the file is truncated or was never finished";
        return Err(corrupt(path, footer_offset + 12, reason));
    }
    let state_len = u64::from_le_bytes(footer[..8].try_into().expect("8 bytes"));
    let state_crc = u32::from_le_bytes(footer[8..12].try_into().expect("4 bytes"));
    let state_offset = PREFIX_BYTES + u64::from(header_len);
    if state_offset.checked_add(state_len) != Some(footer_offset) {
        let reason = format!(
            "state of {state_len} bytes does not fit between offsets {state_offset} and {footer_offset}"
        );
        return Err(corrupt(path, footer_offset, reason));
    }
    Ok(Layout {
        header,
        state_offset,
        state_len,
        state_crc,
    })
}

/// Finds the newest valid snapshot in `dir` whose chain is complete: the
/// files from a whole snapshot through the deltas on top of it up to that
/// one, oldest first. Removes temp files left by a crash mid-write and
/// skips (with a warning) damaged files and broken chains.
/// With `repair` off (`kv-node check` without `--repair`) nothing is
/// removed: leftover temp files are only reported.
pub(super) fn recover_chain(
    fs: &dyn Fs,
    dir: &Path,
    warnings: &mut Vec<String>,
    repair: bool,
) -> Result<Option<Vec<(SnapshotHeader, PathBuf)>>, StorageError> {
    let mut candidates = Vec::new();
    let mut removed_temp_files = false;
    for name in list_dir(fs, dir)? {
        let path = dir.join(&name);
        if name.ends_with(TEMP_SUFFIX) && !repair {
            warn(warnings, format!("unfinished snapshot {}", path.display()));
        } else if name.ends_with(TEMP_SUFFIX) {
            fs.remove_file(&path)
                .map_err(io_error("remove snapshot temp file", &path))?;
            let message = format!("removed unfinished snapshot {}", path.display());
            warn(warnings, message);
            removed_temp_files = true;
        } else if let Some(index) = parse_file_name(&name) {
            candidates.push((index, path));
        } else {
            let message = format!(
                "ignoring unexpected file {} in the snapshot directory",
                path.display()
            );
            warn(warnings, message);
        }
    }
    if removed_temp_files {
        sync_dir(fs, dir)?;
    }
    let mut valid = std::collections::BTreeMap::new();
    for (index, path) in candidates {
        match read_layout(fs, &path) {
            Ok(layout) if layout.header.meta.index == index => {
                valid.insert(index, (layout.header, path));
            }
            Ok(layout) => {
                let message = format!(
                    "ignoring snapshot {}: its header says index {}",
                    path.display(),
                    layout.header.meta.index
                );
                warn(warnings, message);
            }
            Err(error @ StorageError::Corrupt { .. }) => {
                warn(warnings, format!("ignoring damaged snapshot: {error}"));
            }
            Err(error) => return Err(error),
        }
    }
    // The newest snapshot whose chain (down to a whole one) is all there.
    for (&index, (header, path)) in valid.iter().rev() {
        let mut chain = vec![(header.clone(), path.clone())];
        let mut base = header.base;
        while let Some(below) = base {
            let Some((header, path)) = valid.get(&below) else {
                break;
            };
            chain.push((header.clone(), path.clone()));
            base = header.base;
        }
        if base.is_none() {
            chain.reverse();
            return Ok(Some(chain));
        }
        let message = format!(
            "ignoring snapshot {}: the delta at {index} misses the snapshot at {} below it",
            path.display(),
            base.expect("the chain broke there")
        );
        warn(warnings, message);
    }
    Ok(None)
}

/// [`recover_chain`]'s newest snapshot.
pub(super) fn recover_latest(
    fs: &dyn Fs,
    dir: &Path,
    warnings: &mut Vec<String>,
    repair: bool,
) -> Result<Option<(SnapshotHeader, PathBuf)>, StorageError> {
    Ok(recover_chain(fs, dir, warnings, repair)?.and_then(|mut chain| chain.pop()))
}

/// Removes every snapshot file in `dir` except those in `keep` (a chain),
/// then fsyncs `dir`.
pub(super) fn remove_others(fs: &dyn Fs, dir: &Path, keep: &[PathBuf]) -> Result<(), StorageError> {
    let mut removed = false;
    for name in list_dir(fs, dir)? {
        let path = dir.join(&name);
        if !keep.contains(&path)
            && (parse_file_name(&name).is_some() || name.ends_with(TEMP_SUFFIX))
        {
            fs.remove_file(&path)
                .map_err(io_error("remove snapshot", &path))?;
            removed = true;
        }
    }
    if removed {
        sync_dir(fs, dir)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use raft_core::{Membership, NodeId, Term};
    use std::fs::{self, OpenOptions};

    fn header(index: u64) -> SnapshotHeader {
        SnapshotHeader {
            meta: SnapshotMeta {
                index: LogIndex(index),
                term: Term(2),
                membership: Membership::new([NodeId(1), NodeId(2), NodeId(3)]),
            },
            wal_start_seq: 4,
            base: None,
        }
    }

    fn read_all(path: &Path) -> io::Result<Vec<u8>> {
        let (_, mut reader) = open_snapshot(path).expect("valid header");
        let mut state = Vec::new();
        reader.read_to_end(&mut state)?;
        Ok(state)
    }

    /// A file that records its writes and where the syncs fell.
    struct Recorded(std::sync::Arc<std::sync::Mutex<(u64, Vec<u64>)>>);

    impl Write for Recorded {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().0 += buf.len() as u64;
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl crate::fs::FsFile for Recorded {
        fn write_all_at(&mut self, _: &[u8], _: u64) -> io::Result<()> {
            unreachable!("a snapshot is written in order")
        }
        fn sync_data(&mut self) -> io::Result<()> {
            let mut r = self.0.lock().unwrap();
            let at = r.0;
            r.1.push(at);
            Ok(())
        }
        fn sync_all(&mut self) -> io::Result<()> {
            self.sync_data()
        }
        fn preallocate(&mut self, _: u64) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_large_snapshot_is_synced_in_steps() {
        let record = std::sync::Arc::new(std::sync::Mutex::new((0, Vec::new())));
        let mut out = SyncInSteps {
            file: Box::new(Recorded(record.clone())),
            unsynced: 0,
            step: 100,
        };
        for _ in 0..25 {
            out.write_all(&[7u8; 30]).unwrap();
        }
        let (written, syncs) = record.lock().unwrap().clone();
        assert_eq!(written, 750);
        assert_eq!(
            syncs,
            vec![120, 240, 360, 480, 600, 720],
            "a sync once at least a step is unsynced"
        );
    }

    #[test]
    fn a_written_snapshot_reads_back_its_meta_and_state() {
        let dir = tempfile::tempdir().unwrap();
        let (path, bytes) = write(&StdFs, dir.path(), &header(9), |w| {
            w.write_all(b"state bytes")
        })
        .unwrap();
        assert_eq!(fs::metadata(&path).unwrap().len(), bytes);
        let (meta, _) = open_snapshot(&path).unwrap();
        assert_eq!(meta, header(9).meta);
        assert_eq!(read_all(&path).unwrap(), b"state bytes");
    }

    #[test]
    fn a_truncated_snapshot_file_is_rejected_at_open() {
        let dir = tempfile::tempdir().unwrap();
        let (path, bytes) =
            write(&StdFs, dir.path(), &header(9), |w| w.write_all(&[5; 1000])).unwrap();
        for len in [0, 10, PREFIX_BYTES + 3, bytes / 2, bytes - 1] {
            let file = OpenOptions::new().write(true).open(&path).unwrap();
            file.set_len(len).unwrap();
            let result = open_snapshot(&path);
            assert!(
                matches!(result, Err(StorageError::Corrupt { .. })),
                "{len}: {result:?}"
            );
        }
    }

    #[test]
    fn a_flipped_bit_in_the_state_fails_the_read_with_invalid_data() {
        let dir = tempfile::tempdir().unwrap();
        let (path, _) = write(&StdFs, dir.path(), &header(9), |w| w.write_all(&[5; 1000])).unwrap();
        let mut raw = fs::read(&path).unwrap();
        let middle = raw.len() / 2;
        raw[middle] ^= 0x10;
        fs::write(&path, raw).unwrap();
        let error = read_all(&path).unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::InvalidData);
    }

    #[test]
    fn a_flipped_bit_in_the_header_is_corrupt() {
        let dir = tempfile::tempdir().unwrap();
        let (path, _) = write(&StdFs, dir.path(), &header(9), |w| w.write_all(b"x")).unwrap();
        let mut raw = fs::read(&path).unwrap();
        raw[PREFIX_BYTES as usize + 2] ^= 0x01;
        fs::write(&path, raw).unwrap();
        assert!(matches!(
            open_snapshot(&path),
            Err(StorageError::Corrupt { offset: 16, .. })
        ));
    }

    #[test]
    fn a_failing_state_writer_leaves_no_file_behind() {
        let dir = tempfile::tempdir().unwrap();
        let result = write(&StdFs, dir.path(), &header(9), |_| {
            Err(io::Error::other("state machine broke"))
        });
        assert!(matches!(result, Err(StorageError::Io { .. })), "{result:?}");
        assert!(list_dir(&StdFs, dir.path()).unwrap().is_empty());
    }

    #[test]
    fn recovery_skips_a_damaged_newer_snapshot_and_removes_temp_files() {
        let dir = tempfile::tempdir().unwrap();
        let (older, _) = write(&StdFs, dir.path(), &header(5), |w| w.write_all(b"old")).unwrap();
        let (newer, _) = write(&StdFs, dir.path(), &header(9), |w| w.write_all(b"new")).unwrap();
        fs::write(dir.path().join("00000000000000000012.snap.tmp"), b"half").unwrap();
        let file = OpenOptions::new().write(true).open(&newer).unwrap();
        file.set_len(30).unwrap();
        let mut warnings = Vec::new();
        let (found, path) = recover_latest(&StdFs, dir.path(), &mut warnings, true)
            .unwrap()
            .unwrap();
        assert_eq!((found, path), (header(5), older));
        assert_eq!(warnings.len(), 2, "{warnings:?}");
        assert!(!dir.path().join("00000000000000000012.snap.tmp").exists());
    }
}
