//! The backup file format: what `GET /admin/backup` streams, `kvctl
//! backup` checks and `kv-node restore` reads. Here, without tokio, so
//! that the server, the CLI and the restore share one writer and one
//! reader.
//!
//! ```text
//! header (20 bytes): magic "RAFTKVBK" | format version u32 LE (1) | revision u64 LE
//! body:              the state machine's snapshot (`state_machine/records.rs`),
//!                    whose applied index is the revision
//! footer (20 bytes): body length u64 LE | CRC32C u32 LE | end marker "KVBKDONE"
//! ```
//!
//! The CRC32C covers every byte before it (header, body, body length), so
//! a flipped bit anywhere is caught even where the snapshot's own record
//! checksums do not look (the header); the end marker and the length make
//! a truncated copy say so. The body is written and read one record at a
//! time: neither side holds a second serialized copy of the store.
//!
//! Two readers: [`check_backup`] verifies header, length and checksum in
//! O(1) memory (kvctl, and the first pass of a restore); [`read_backup`]
//! also decodes every record into a [`KvStateMachine`], checking each
//! against the ones before it.

use crate::state_machine::{KvStateMachine, SnapshotError};
use std::io::{self, Read, Write};

/// The first bytes of every backup.
pub const BACKUP_MAGIC: [u8; 8] = *b"RAFTKVBK";
/// The last bytes of every complete backup.
pub const BACKUP_END_MAGIC: [u8; 8] = *b"KVBKDONE";
/// The format version this build writes and reads.
pub const BACKUP_VERSION: u32 = 1;
pub const BACKUP_HEADER_BYTES: u64 = 20;
pub const BACKUP_FOOTER_BYTES: u64 = 20;
/// Where the footer's end marker starts (after length and checksum).
const UNSUMMED_FROM: usize = 12;

/// Why a backup is refused. Every variant means "do not use this file".
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error("reading the backup failed: {0}")]
    Io(#[from] io::Error),
    #[error(
        "the file holds {bytes} bytes, fewer than a backup's header and footer ({min}): it is truncated or not a backup"
    )]
    TooShort { bytes: u64, min: u64 },
    #[error("not a backup file: it starts with {found:02x?}, not the backup magic")]
    BadMagic { found: [u8; 8] },
    #[error("backup format version {found} is not supported (this build reads {supported})")]
    BadVersion { found: u32, supported: u32 },
    #[error("the file ends early: it is truncated")]
    Truncated,
    #[error("the file does not end with the backup end marker: it is truncated or damaged")]
    MissingEnd,
    #[error(
        "the footer records a body of {footer} bytes but the file holds {actual}: truncated or damaged"
    )]
    LengthMismatch { footer: u64, actual: u64 },
    #[error(
        "checksum mismatch: {stored:#010x} stored, {computed:#010x} computed: the file is damaged"
    )]
    ChecksumMismatch { stored: u32, computed: u32 },
    #[error("the backup's contents do not decode: {0}")]
    Snapshot(#[from] SnapshotError),
    #[error("the header names revision {header} but the contents are at revision {state}")]
    RevisionMismatch { header: u64, state: u64 },
    #[error("{count} bytes follow the backup's footer")]
    TrailingBytes { count: usize },
}

/// What a backup holds, as its header and footer say.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BackupInfo {
    /// The store's revision (applied index) the copy was taken at.
    pub revision: u64,
    /// Bytes of the snapshot body.
    pub body_bytes: u64,
    /// Bytes of the whole file.
    pub total_bytes: u64,
}

/// Counts and checksums what passes through.
struct Summing<T> {
    inner: T,
    crc: u32,
    bytes: u64,
}

impl<T> Summing<T> {
    fn new(inner: T) -> Self {
        Summing {
            inner,
            crc: 0,
            bytes: 0,
        }
    }

    fn add(&mut self, data: &[u8]) {
        self.crc = crc32c::crc32c_append(self.crc, data);
        self.bytes += data.len() as u64;
    }
}

impl<W: Write> Write for Summing<W> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(data)?;
        self.add(&data[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

impl<R: Read> Read for Summing<R> {
    fn read(&mut self, into: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(into)?;
        self.add(&into[..n]);
        Ok(n)
    }
}

fn header_bytes(revision: u64) -> [u8; BACKUP_HEADER_BYTES as usize] {
    let mut header = [0u8; BACKUP_HEADER_BYTES as usize];
    header[0..8].copy_from_slice(&BACKUP_MAGIC);
    header[8..12].copy_from_slice(&BACKUP_VERSION.to_le_bytes());
    header[12..20].copy_from_slice(&revision.to_le_bytes());
    header
}

/// Checks a header; returns the revision it names.
fn parse_header(header: &[u8; BACKUP_HEADER_BYTES as usize]) -> Result<u64, BackupError> {
    let magic: [u8; 8] = header[0..8].try_into().expect("8 bytes");
    if magic != BACKUP_MAGIC {
        return Err(BackupError::BadMagic { found: magic });
    }
    let version = u32::from_le_bytes(header[8..12].try_into().expect("4 bytes"));
    if version != BACKUP_VERSION {
        return Err(BackupError::BadVersion {
            found: version,
            supported: BACKUP_VERSION,
        });
    }
    Ok(u64::from_le_bytes(
        header[12..20].try_into().expect("8 bytes"),
    ))
}

/// Writes a backup of `state` (a capture: see `KvStateMachine`'s O(1)
/// clone) to `w`, one snapshot record at a time.
pub fn write_backup(state: &KvStateMachine, w: &mut impl Write) -> io::Result<BackupInfo> {
    let revision = state.applied_index();
    let mut summing = Summing::new(w);
    summing.write_all(&header_bytes(revision))?;
    state.write_snapshot(&mut summing)?;
    let body_bytes = summing.bytes - BACKUP_HEADER_BYTES;
    summing.write_all(&body_bytes.to_le_bytes())?;
    let crc = summing.crc;
    let w = summing.inner;
    w.write_all(&crc.to_le_bytes())?;
    w.write_all(&BACKUP_END_MAGIC)?;
    w.flush()?;
    Ok(BackupInfo {
        revision,
        body_bytes,
        total_bytes: BACKUP_HEADER_BYTES + body_bytes + BACKUP_FOOTER_BYTES,
    })
}

/// Checks a whole backup read from `r` (header, length, end marker and
/// checksum) without decoding its records, in O(1) memory.
pub fn check_backup(r: &mut impl Read) -> Result<BackupInfo, BackupError> {
    let mut header = [0u8; BACKUP_HEADER_BYTES as usize];
    let mut header_len = 0usize;
    // The last 20 bytes seen are held back: they may be the footer.
    let mut tail: Vec<u8> = Vec::with_capacity(BACKUP_FOOTER_BYTES as usize + 64 * 1024);
    let mut crc = 0u32;
    let mut total = 0u64;
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        let n = match r.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(BackupError::Io(e)),
        };
        let data = &chunk[..n];
        if header_len < header.len() {
            let take = (header.len() - header_len).min(n);
            header[header_len..header_len + take].copy_from_slice(&data[..take]);
            header_len += take;
            if header_len == header.len() {
                // Refuse a file that is not a backup before reading it all.
                parse_header(&header)?;
            }
        }
        total += n as u64;
        tail.extend_from_slice(data);
        let keep = BACKUP_FOOTER_BYTES as usize;
        if tail.len() > keep {
            let summed = tail.len() - keep;
            crc = crc32c::crc32c_append(crc, &tail[..summed]);
            tail.drain(..summed);
        }
    }
    if header_len >= 8 && header[0..8] != BACKUP_MAGIC {
        let found = header[0..8].try_into().expect("8 bytes");
        return Err(BackupError::BadMagic { found });
    }
    let min = BACKUP_HEADER_BYTES + BACKUP_FOOTER_BYTES;
    if total < min {
        return Err(BackupError::TooShort { bytes: total, min });
    }
    let revision = parse_header(&header)?;
    let footer: [u8; BACKUP_FOOTER_BYTES as usize] = tail[..].try_into().expect("20 bytes");
    let body_bytes = check_footer(&footer, crc, total - min)?;
    Ok(BackupInfo {
        revision,
        body_bytes,
        total_bytes: total,
    })
}

/// Checks a footer against the checksum of everything before its
/// checksum field, except the body length (added here), and the body
/// length actually seen; returns the body length.
fn check_footer(
    footer: &[u8; BACKUP_FOOTER_BYTES as usize],
    crc_before_length: u32,
    actual_body_bytes: u64,
) -> Result<u64, BackupError> {
    if footer[UNSUMMED_FROM..] != BACKUP_END_MAGIC {
        return Err(BackupError::MissingEnd);
    }
    let length_bytes: [u8; 8] = footer[0..8].try_into().expect("8 bytes");
    let stored = u32::from_le_bytes(footer[8..UNSUMMED_FROM].try_into().expect("4 bytes"));
    let computed = crc32c::crc32c_append(crc_before_length, &length_bytes);
    if stored != computed {
        return Err(BackupError::ChecksumMismatch { stored, computed });
    }
    let footer_length = u64::from_le_bytes(length_bytes);
    if footer_length != actual_body_bytes {
        return Err(BackupError::LengthMismatch {
            footer: footer_length,
            actual: actual_body_bytes,
        });
    }
    Ok(footer_length)
}

/// Reads a whole backup from `r`, decoding and checking every record, and
/// insists that nothing follows it. Run [`check_backup`] first for the
/// clearest message about a damaged file: a damaged body may fail here
/// with the record that does not decode.
pub fn read_backup(r: &mut impl Read) -> Result<(BackupInfo, KvStateMachine), BackupError> {
    let mut summing = Summing::new(r);
    let mut header = [0u8; BACKUP_HEADER_BYTES as usize];
    read_exact_or_short(&mut summing, &mut header)?;
    let revision = parse_header(&header)?;
    let state = KvStateMachine::read_snapshot(&mut summing)?;
    let body_bytes = summing.bytes - BACKUP_HEADER_BYTES;
    let crc = summing.crc;
    let r = summing.inner;
    let mut footer = [0u8; BACKUP_FOOTER_BYTES as usize];
    read_exact_or_short(r, &mut footer)?;
    check_footer(&footer, crc, body_bytes)?;
    let mut rest = Vec::new();
    r.take(64).read_to_end(&mut rest)?;
    if !rest.is_empty() {
        return Err(BackupError::TrailingBytes { count: rest.len() });
    }
    if state.applied_index() != revision {
        return Err(BackupError::RevisionMismatch {
            header: revision,
            state: state.applied_index(),
        });
    }
    let info = BackupInfo {
        revision,
        body_bytes,
        total_bytes: BACKUP_HEADER_BYTES + body_bytes + BACKUP_FOOTER_BYTES,
    };
    Ok((info, state))
}

fn read_exact_or_short(r: &mut impl Read, into: &mut [u8]) -> Result<(), BackupError> {
    match r.read_exact(into) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Err(BackupError::Truncated),
        Err(e) => Err(BackupError::Io(e)),
    }
}

#[cfg(test)]
mod tests;
