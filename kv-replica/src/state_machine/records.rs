//! The snapshot format's records: the one `Record` type both written and
//! read, their framing (length, checksum, payload) and the reader that checks
//! each frame before decoding it.

use crate::command::OpResult;
use serde::{Deserialize, Serialize};
use std::borrow::Cow;
use std::io::{self, Read, Write};

/// The first bytes of every snapshot.
pub const SNAPSHOT_MAGIC: [u8; 8] = *b"RAFTKVSM";
/// The newest snapshot format this build writes and reads.
/// Version 2 added the address book (`Address` records); version 3 the
/// leases (`Lease` and `LeaseKey` records). A state without leases is
/// still written as version 2, byte for byte as before; versions 1 and 2
/// are still read.
pub const SNAPSHOT_VERSION: u32 = 3;
/// The first bytes of a delta snapshot (`delta.rs`): a magic of its own, so
/// that no reader takes a delta for a whole state.
pub const DELTA_MAGIC: [u8; 8] = *b"RAFTKVDL";
/// The delta format's version.
pub const DELTA_VERSION: u32 = 1;
/// The version written for a state without leases.
pub(super) const SNAPSHOT_VERSION_WITHOUT_LEASES: u32 = 2;
/// Largest record payload a snapshot may hold. A reader refuses larger length
/// fields instead of trusting them, and a writer refuses to produce them.
pub const MAX_SNAPSHOT_RECORD_BYTES: u32 = 64 << 20;

// ---------------------------------------------------------------------------
// Snapshot format (version 2; version 1 lacks the Address records)
//
//   header:  magic (8 bytes, SNAPSHOT_MAGIC) | version (u32 little-endian)
//   records: length (u32 LE) | crc (u32 LE) | payload (`length` bytes)
//
// The CRC32C covers the four length bytes and then the payload, so a damaged
// length is caught too. Payloads are postcard encodings of `Record`
// (postcard's wire format is stable within 1.x):
//
//   record 0:             Meta { applied_index, dedup_limit, key_count, dedup_count }
//   next key_count:       Key { key, value, revision }, keys strictly ascending
//   next dedup_count:     Dedup { client_id, seq, index, result }, ids ascending
//   then (version 2):     Address { name, url }, names ascending
//   then (version 3):     Lease { id, ttl_ms }, ids ascending
//   then (version 3):     LeaseKey { lease, key }, (lease, key) ascending; the
//                         key must be present and attached to no other lease
//   last:                 Trailer { record_count }: records before the trailer
//
// The reader stops after the trailer, so a snapshot may sit inside a longer
// stream; `restore_from_bytes` insists that nothing follows it.
// ---------------------------------------------------------------------------

/// Why a snapshot could not be read. Records are numbered from 0, after the
/// header.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("reading the snapshot failed: {0}")]
    Io(#[from] io::Error),
    #[error("snapshot ends inside its header")]
    TruncatedHeader,
    #[error("bad snapshot magic {found:02x?}")]
    BadMagic { found: [u8; 8] },
    #[error("snapshot version {found} is not supported (this build reads {supported})")]
    BadVersion { found: u32, supported: u32 },
    #[error("snapshot ends inside or before record {record}")]
    Truncated { record: u64 },
    #[error("record {record} claims {length} bytes, over the {max}-byte limit")]
    RecordTooLarge { record: u64, length: u32, max: u32 },
    #[error("record {record}: checksum {stored:#010x} stored, {computed:#010x} computed")]
    CrcMismatch {
        record: u64,
        stored: u32,
        computed: u32,
    },
    #[error("record {record} does not decode: {source}")]
    Decode {
        record: u64,
        #[source]
        source: postcard::Error,
    },
    #[error("record {record} has {count} bytes left over after its contents")]
    RecordTrailingBytes { record: u64, count: usize },
    #[error("record {record} is not the {expected} record expected there")]
    UnexpectedRecord { record: u64, expected: &'static str },
    #[error("record {record}: keys or client ids not strictly ascending")]
    OutOfOrder { record: u64 },
    #[error("record {record}: index {index} is 0 or beyond the applied index {applied}")]
    IndexOutOfRange {
        record: u64,
        index: u64,
        applied: u64,
    },
    #[error("record {record}: a second dedup entry at index {index}")]
    DuplicateDedupIndex { record: u64, index: u64 },
    #[error("snapshot holds {count} dedup clients, over its own limit {limit}")]
    DedupOverLimit { count: u64, limit: u64 },
    #[error("trailer counts {trailer} records, but {actual} came before it")]
    RecordCountMismatch { trailer: u64, actual: u64 },
    #[error(
        "record {record}: key {key:?} is absent, attached twice, or its lease {lease} is unknown"
    )]
    BadLeaseKey {
        record: u64,
        lease: u64,
        key: String,
    },
    #[error("record {record}: lease {lease} has a TTL of {ttl_ms} ms, outside the allowed range")]
    BadLeaseTtl {
        record: u64,
        lease: u64,
        ttl_ms: u64,
    },
    #[error("{count} bytes follow the snapshot trailer")]
    TrailingBytes { count: usize },
    #[error("delta goes on top of index {found}, but the state is at {expected}")]
    DeltaBaseMismatch { expected: u64, found: u64 },
    #[error("delta at index {applied} does not follow its base {base}")]
    DeltaGoesBack { base: u64, applied: u64 },
    #[error("after the delta the state holds {actual} keys, the delta says {claimed}")]
    KeyCountMismatch { claimed: u64, actual: u64 },
}

/// One snapshot record, as written and as read: one type, so the variant
/// order that postcard encodes as the tag cannot drift between writer and
/// reader. Written records borrow from the state machine; a read record
/// borrows strings from the reader's buffer and owns its `OpResult`.
#[derive(Serialize, Deserialize)]
pub(super) enum Record<'a> {
    Meta {
        applied_index: u64,
        dedup_limit: u64,
        key_count: u64,
        dedup_count: u64,
    },
    Key {
        key: &'a str,
        value: &'a str,
        revision: u64,
    },
    Dedup {
        client_id: &'a str,
        seq: u64,
        index: u64,
        /// Encoded exactly as a bare `OpResult` (a `Cow` is transparent to
        /// serde).
        result: Cow<'a, OpResult>,
    },
    Trailer {
        record_count: u64,
    },
    // New variants go last: the variant's position is its tag on disk.
    Address {
        name: &'a str,
        url: &'a str,
    },
    /// Lease `id` (the index of its grant) with its TTL.
    Lease {
        id: u64,
        ttl_ms: u64,
    },
    /// `key` is attached to lease `lease`.
    LeaseKey {
        lease: u64,
        key: &'a str,
    },
    /// A delta's second record: the applied index of the state it goes on
    /// top of, and how many `Key` and `Tombstone` records follow.
    DeltaBase {
        base_index: u64,
        changed_count: u64,
    },
    /// In a delta: `key` was deleted since the base.
    Tombstone {
        key: &'a str,
    },
}

pub(super) const RECORD_FRAME_BYTES: usize = 8;

fn record_crc(length_bytes: [u8; 4], payload: &[u8]) -> u32 {
    crc32c::crc32c_append(crc32c::crc32c(&length_bytes), payload)
}

/// Frames one record into `buffer` (reused across records, so only one record
/// is ever held in memory) and writes it.
pub(super) fn write_record(
    w: &mut impl Write,
    buffer: &mut Vec<u8>,
    record: &Record,
) -> io::Result<()> {
    buffer.clear();
    buffer.extend_from_slice(&[0; RECORD_FRAME_BYTES]);
    *buffer = postcard::to_extend(record, std::mem::take(buffer)).map_err(io::Error::other)?;
    let payload_len = buffer.len() - RECORD_FRAME_BYTES;
    let length = u32::try_from(payload_len)
        .ok()
        .filter(|&length| length <= MAX_SNAPSHOT_RECORD_BYTES)
        .ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "snapshot record of {payload_len} bytes is over the \
                     {MAX_SNAPSHOT_RECORD_BYTES}-byte limit"
                ),
            )
        })?;
    let length_bytes = length.to_le_bytes();
    let crc = record_crc(length_bytes, &buffer[RECORD_FRAME_BYTES..]);
    buffer[0..4].copy_from_slice(&length_bytes);
    buffer[4..8].copy_from_slice(&crc.to_le_bytes());
    w.write_all(buffer)
}

pub(super) fn read_exact_or(
    r: &mut impl Read,
    into: &mut [u8],
    truncated: SnapshotError,
) -> Result<(), SnapshotError> {
    match r.read_exact(into) {
        Ok(()) => Ok(()),
        Err(error) if error.kind() == io::ErrorKind::UnexpectedEof => Err(truncated),
        Err(error) => Err(SnapshotError::Io(error)),
    }
}

/// Reads framed records one at a time into a reused buffer.
pub(super) struct RecordReader<'r, R: Read> {
    r: &'r mut R,
    buffer: Vec<u8>,
    /// Number of the next record to read (= records read so far).
    next_record: u64,
}

impl<'r, R: Read> RecordReader<'r, R> {
    /// Reads the records that follow a snapshot header already read from `r`.
    pub(super) fn new(r: &'r mut R) -> Self {
        RecordReader {
            r,
            buffer: Vec::new(),
            next_record: 0,
        }
    }

    /// Records read so far, which is also the number of the next one.
    pub(super) fn records_read(&self) -> u64 {
        self.next_record
    }

    /// The next record with its number, framing and checksum checked.
    pub(super) fn next(&mut self) -> Result<(u64, Record<'_>), SnapshotError> {
        let record = self.next_record;
        self.next_record += 1;
        let truncated = || SnapshotError::Truncated { record };
        let mut frame = [0u8; RECORD_FRAME_BYTES];
        read_exact_or(self.r, &mut frame, truncated())?;
        let length_bytes: [u8; 4] = frame[0..4].try_into().expect("4 bytes");
        let length = u32::from_le_bytes(length_bytes);
        let stored = u32::from_le_bytes(frame[4..8].try_into().expect("4 bytes"));
        if length > MAX_SNAPSHOT_RECORD_BYTES {
            return Err(SnapshotError::RecordTooLarge {
                record,
                length,
                max: MAX_SNAPSHOT_RECORD_BYTES,
            });
        }
        // `take` + `read_to_end` grows the buffer with the bytes that actually
        // arrive, so a damaged length cannot make us allocate up front.
        self.buffer.clear();
        let read = self
            .r
            .by_ref()
            .take(u64::from(length))
            .read_to_end(&mut self.buffer)?;
        if read != length as usize {
            return Err(truncated());
        }
        let computed = record_crc(length_bytes, &self.buffer);
        if computed != stored {
            return Err(SnapshotError::CrcMismatch {
                record,
                stored,
                computed,
            });
        }
        let (decoded, rest) = postcard::take_from_bytes::<Record>(&self.buffer)
            .map_err(|source| SnapshotError::Decode { record, source })?;
        if !rest.is_empty() {
            let count = rest.len();
            return Err(SnapshotError::RecordTrailingBytes { record, count });
        }
        Ok((record, decoded))
    }
}
