//! WAL record framing, independent of files:
//!
//! ```text
//! [len: u32 LE][crc32c: u32 LE][kind: u8][payload: len - 1 bytes]
//! ```
//!
//! `len` counts the kind byte and the payload, which is exactly what the
//! CRC32C covers, so a zero length is never valid. Payloads are postcard.
//! Records travel inside batches (`batch`), whose salted checksum covers
//! them again; the per-record checksum also identifies a format-1 segment,
//! which was a bare sequence of records.

use super::error::StorageError;
use raft_core::{Entry, HardState, LogIndex};
use serde::Serialize;

/// Bytes of `len` plus `crc`.
pub(super) const HEADER_BYTES: usize = 8;

/// The largest `len` accepted: a 64 MiB entry plus room for its framing.
/// Anything larger is corruption, so a damaged length can never make the
/// reader allocate or skip gigabytes.
pub(super) const MAX_BODY_BYTES: usize = 64 * 1024 * 1024 + 64 * 1024;

const KIND_ENTRY: u8 = 1;
const KIND_HARD_STATE: u8 = 2;
const KIND_TRUNCATE: u8 = 3;

/// A record to write, borrowing its contents.
#[derive(Clone, Copy, Debug)]
pub(super) enum RecordRef<'a> {
    Entry(&'a Entry),
    HardState(&'a HardState),
    /// Entries from this index onward are discarded (a follower overwriting
    /// a conflicting suffix). Entries written after it continue from it.
    Truncate(LogIndex),
}

/// A record read back.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Record {
    Entry(Entry),
    HardState(HardState),
    Truncate(LogIndex),
}

/// Why the bytes at an offset are not a record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum BadFrame {
    /// The framing or checksum is wrong: a torn write looks like this, so it
    /// is forgivable at the very end of the log if nothing valid follows.
    Damaged(String),
    /// The checksum matches but the content does not decode: written that
    /// way by a bug or another version, never by a crash.
    Undecodable(String),
}

impl RecordRef<'_> {
    fn kind_name(self) -> &'static str {
        match self {
            RecordRef::Entry(_) => "entry",
            RecordRef::HardState(_) => "hard state",
            RecordRef::Truncate(_) => "truncate",
        }
    }
}

/// Appends one framed record to `out`.
pub(super) fn encode(record: RecordRef<'_>, out: &mut Vec<u8>) -> Result<(), StorageError> {
    let start = out.len();
    out.extend_from_slice(&[0; HEADER_BYTES]);
    match record {
        RecordRef::Entry(entry) => push_payload(out, KIND_ENTRY, entry),
        RecordRef::HardState(hard_state) => push_payload(out, KIND_HARD_STATE, hard_state),
        RecordRef::Truncate(index) => push_payload(out, KIND_TRUNCATE, &index),
    }
    let body = &out[start + HEADER_BYTES..];
    if body.len() > MAX_BODY_BYTES {
        let bytes = body.len();
        out.truncate(start);
        return Err(StorageError::RecordTooLarge {
            kind: record.kind_name(),
            bytes,
            max_bytes: MAX_BODY_BYTES,
        });
    }
    let len = u32::try_from(body.len()).expect("body length is capped below u32::MAX");
    let crc = crc32c::crc32c(body);
    out[start..start + 4].copy_from_slice(&len.to_le_bytes());
    out[start + 4..start + HEADER_BYTES].copy_from_slice(&crc.to_le_bytes());
    Ok(())
}

fn push_payload<T: Serialize>(out: &mut Vec<u8>, kind: u8, value: &T) {
    out.push(kind);
    // Writing into a Vec cannot fail, and these types always serialize.
    postcard::to_io(value, &mut *out).expect("postcard serializes WAL records into a Vec");
}

/// Decodes the record at `offset`, returning it and the offset just past it.
pub(super) fn decode_at(buf: &[u8], offset: usize) -> Result<(Record, usize), BadFrame> {
    let (kind, payload, end) = check_frame(buf, offset).map_err(BadFrame::Damaged)?;
    let record = match kind {
        KIND_ENTRY => Record::Entry(decode_payload(payload, "entry")?),
        KIND_HARD_STATE => Record::HardState(decode_payload(payload, "hard state")?),
        KIND_TRUNCATE => Record::Truncate(decode_payload(payload, "truncate")?),
        other => {
            return Err(BadFrame::Undecodable(format!(
                "unknown record kind {other} with a valid checksum"
            )));
        }
    };
    Ok((record, end))
}

fn decode_payload<'a, T: serde::Deserialize<'a>>(
    payload: &'a [u8],
    what: &str,
) -> Result<T, BadFrame> {
    match postcard::take_from_bytes::<T>(payload) {
        Ok((value, [])) => Ok(value),
        Ok((_, rest)) => Err(BadFrame::Undecodable(format!(
            "{what} record has {} unexpected trailing bytes",
            rest.len()
        ))),
        Err(error) => Err(BadFrame::Undecodable(format!(
            "{what} record does not decode: {error}"
        ))),
    }
}

/// Checks length and checksum at `offset`: `(kind, payload, end offset)`.
fn check_frame(buf: &[u8], offset: usize) -> Result<(u8, &[u8], usize), String> {
    let available = buf.len().saturating_sub(offset);
    if available < HEADER_BYTES + 1 {
        return Err(format!(
            "record header cut short: {available} bytes left, a record needs at least {}",
            HEADER_BYTES + 1
        ));
    }
    let word = |at: usize| u32::from_le_bytes(buf[at..at + 4].try_into().expect("4 bytes"));
    let len = word(offset) as usize;
    let stored_crc = word(offset + 4);
    if len == 0 {
        return Err("zero record length (a zero-filled region?)".to_string());
    }
    if len > MAX_BODY_BYTES {
        return Err(format!(
            "record length {len} exceeds the limit of {MAX_BODY_BYTES}"
        ));
    }
    let body_start = offset + HEADER_BYTES;
    if len > available - HEADER_BYTES {
        return Err(format!(
            "record of {len} bytes runs past the end of the file ({} bytes left)",
            available - HEADER_BYTES
        ));
    }
    let body = &buf[body_start..body_start + len];
    let computed_crc = crc32c::crc32c(body);
    if computed_crc != stored_crc {
        return Err(format!(
            "checksum mismatch: stored {stored_crc:08x}, computed {computed_crc:08x}"
        ));
    }
    Ok((body[0], &body[1..], body_start + len))
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use raft_core::{EntryKind, NodeId, Term};

    fn entry(index: u64, term: u64, data: &'static [u8]) -> Entry {
        Entry {
            term: Term(term),
            index: LogIndex(index),
            kind: EntryKind::Normal,
            data: Bytes::from_static(data),
        }
    }

    fn encoded(records: &[RecordRef<'_>]) -> Vec<u8> {
        let mut out = Vec::new();
        for record in records {
            encode(*record, &mut out).unwrap();
        }
        out
    }

    #[test]
    fn every_record_kind_reads_back_as_written() {
        let e = entry(7, 3, b"set x 1");
        let hs = HardState {
            term: Term(3),
            vote: Some(NodeId(2)),
            commit: LogIndex(5),
        };
        let buf = encoded(&[
            RecordRef::Entry(&e),
            RecordRef::HardState(&hs),
            RecordRef::Truncate(LogIndex(4)),
        ]);
        let (first, at) = decode_at(&buf, 0).unwrap();
        let (second, at) = decode_at(&buf, at).unwrap();
        let (third, at) = decode_at(&buf, at).unwrap();
        assert_eq!(at, buf.len());
        assert_eq!(first, Record::Entry(e));
        assert_eq!(second, Record::HardState(hs));
        assert_eq!(third, Record::Truncate(LogIndex(4)));
    }

    #[test]
    fn a_record_cut_at_any_length_is_damaged() {
        let e = entry(1, 1, b"payload");
        let buf = encoded(&[RecordRef::Entry(&e)]);
        for len in 0..buf.len() {
            let result = decode_at(&buf[..len], 0);
            assert!(
                matches!(result, Err(BadFrame::Damaged(_))),
                "{len}: {result:?}"
            );
        }
    }

    #[test]
    fn zeros_and_huge_lengths_are_damaged_without_allocating() {
        assert!(matches!(decode_at(&[0; 64], 0), Err(BadFrame::Damaged(_))));
        let mut buf = vec![0xff; 64];
        buf[..4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(decode_at(&buf, 0), Err(BadFrame::Damaged(r)) if r.contains("limit")));
    }

    #[test]
    fn a_valid_checksum_over_an_unknown_kind_is_undecodable_not_damaged() {
        let body = [9u8, 1, 2, 3];
        let mut buf = Vec::new();
        buf.extend_from_slice(&(body.len() as u32).to_le_bytes());
        buf.extend_from_slice(&crc32c::crc32c(&body).to_le_bytes());
        buf.extend_from_slice(&body);
        assert!(matches!(decode_at(&buf, 0), Err(BadFrame::Undecodable(_))));
    }

    #[test]
    fn an_oversized_entry_is_refused_and_leaves_the_buffer_as_it_was() {
        let big = Entry {
            data: Bytes::from(vec![7u8; MAX_BODY_BYTES]),
            ..entry(1, 1, b"")
        };
        let mut out = vec![1, 2, 3];
        let result = encode(RecordRef::Entry(&big), &mut out);
        assert!(matches!(result, Err(StorageError::RecordTooLarge { .. })));
        assert_eq!(out, [1, 2, 3]);
    }
}
