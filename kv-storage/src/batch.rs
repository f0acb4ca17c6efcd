//! The WAL segment layout (format version 2): a header block, then synced
//! batches, each starting on a 4 KiB block boundary.
//!
//! ```text
//! block 0:  [magic "RKVWAL\0\0": 8][version: u32 LE][salt: u64 LE][seq: u64 LE]
//!           [crc32c of the 28 bytes before: u32 LE]
//!           (recycled segments only: [magic "RKVRECYC": 8][crc32c of the
//!           40 bytes before: u32 LE])[zeros to 4096]
//! batch:    [magic "RKVB": 4][batch seq: u64 LE][body len: u32 LE]
//!           [body crc: u32 LE][header crc: u32 LE]
//!           [body: records, see `segment`][zeros to the next 4096 boundary]
//! ```
//!
//! Why each part is there:
//! - One batch is what one `sync` writes, followed by one fdatasync. The
//!   padding means a later batch never rewrites a block that holds an
//!   earlier, acknowledged one: a torn or lost write can only damage the
//!   batch being written, which nobody was told about yet.
//! - Batch sequence numbers run 0, 1, 2 ... within a segment. Batch `n + 1`
//!   is only written after the fdatasync of batch `n` returned, so a valid
//!   batch after a damaged one proves the damaged one was acknowledged:
//!   that is corruption, never a torn tail.
//! - Both checksums are CRC32C seeded with the segment's random salt, so
//!   bytes that a client put into a value can never pass for a batch header
//!   (the client cannot know the salt), and a block left over from another
//!   segment does not either.
//! - A recycled segment (the file of a compacted one, reused by a roll,
//!   see `wal`) holds the blocks of its former life after its valid data.
//!   Its header says so in a second checksummed record that readers
//!   before it ignore (they check the first 32 bytes only), so that
//!   recovery drops those stale blocks instead of keeping them as a torn
//!   tail: they carry another salt, so they never validate as batches.
//! - Candidate batch headers only sit on block boundaries, so the scan for
//!   "is anything valid after the damage" costs one 24-byte check per 4 KiB.

use super::segment;

/// The unit of padding and alignment.
pub(super) const BLOCK_BYTES: u64 = 4096;
/// The on-disk format this code writes and reads.
pub(super) const FORMAT_VERSION: u32 = 2;
pub(super) const BATCH_HEADER_BYTES: usize = 24;

const SEGMENT_MAGIC: &[u8; 8] = b"RKVWAL\0\0";
const SEGMENT_HEADER_BYTES: usize = 32;
const BATCH_MAGIC: &[u8; 4] = b"RKVB";
const RECYCLED_MAGIC: &[u8; 8] = b"RKVRECYC";
const RECYCLED_RECORD_END: usize = SEGMENT_HEADER_BYTES + 12;

/// What block 0 of a segment holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct SegmentHeader {
    pub(super) salt: u64,
    pub(super) seq: u64,
    /// The file held another segment before: the bytes after the valid
    /// batches are that segment's (or a torn batch), never acknowledged.
    pub(super) recycled: bool,
}

/// Why block 0 is not a valid segment header.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum BadSegmentHeader {
    /// Short, zeros or garbage: a segment whose creation a crash cut short
    /// looks like this (or a damaged header).
    Damaged(String),
    /// A well-formed header of another format version.
    Version(u32),
    /// No header, but a format-1 record at offset 0: a WAL written by a
    /// kv-node before format 2.
    FormatOne,
}

pub(super) fn encode_segment_header(header: SegmentHeader) -> Vec<u8> {
    let mut block = Vec::with_capacity(BLOCK_BYTES as usize);
    block.extend_from_slice(SEGMENT_MAGIC);
    block.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    block.extend_from_slice(&header.salt.to_le_bytes());
    block.extend_from_slice(&header.seq.to_le_bytes());
    let crc = crc32c::crc32c(&block);
    block.extend_from_slice(&crc.to_le_bytes());
    if header.recycled {
        block.extend_from_slice(RECYCLED_MAGIC);
        let crc = crc32c::crc32c(&block);
        block.extend_from_slice(&crc.to_le_bytes());
    }
    block.resize(BLOCK_BYTES as usize, 0);
    block
}

pub(super) fn decode_segment_header(buf: &[u8]) -> Result<SegmentHeader, BadSegmentHeader> {
    if buf.len() < SEGMENT_HEADER_BYTES || &buf[..8] != SEGMENT_MAGIC {
        if segment::decode_at(buf, 0).is_ok() {
            return Err(BadSegmentHeader::FormatOne);
        }
        return Err(BadSegmentHeader::Damaged(format!(
            "no segment header ({} bytes, magic missing)",
            buf.len().min(SEGMENT_HEADER_BYTES)
        )));
    }
    let stored = u32_at(buf, 28);
    let computed = crc32c::crc32c(&buf[..28]);
    if stored != computed {
        return Err(BadSegmentHeader::Damaged(format!(
            "segment header checksum mismatch: stored {stored:08x}, computed {computed:08x}"
        )));
    }
    let version = u32_at(buf, 8);
    if version != FORMAT_VERSION {
        return Err(BadSegmentHeader::Version(version));
    }
    // A damaged recycled record reads as "not recycled": recovery then
    // keeps the stale blocks as a torn tail, which loses nothing.
    let recycled = buf.len() >= RECYCLED_RECORD_END
        && &buf[SEGMENT_HEADER_BYTES..SEGMENT_HEADER_BYTES + 8] == RECYCLED_MAGIC
        && u32_at(buf, RECYCLED_RECORD_END - 4) == crc32c::crc32c(&buf[..RECYCLED_RECORD_END - 4]);
    Ok(SegmentHeader {
        salt: u64_at(buf, 12),
        seq: u64_at(buf, 20),
        recycled,
    })
}

/// Appends batch `seq` holding `body` to `out`, padded so that it ends on a
/// block boundary (the caller starts every batch on one).
pub(super) fn encode_batch(salt: u64, seq: u64, body: &[u8], out: &mut Vec<u8>) {
    let start = out.len();
    let len = u32::try_from(body.len()).expect("the WAL caps a batch body below 4 GiB");
    let body_crc = salted_crc(salt, &[body]);
    out.extend_from_slice(BATCH_MAGIC);
    out.extend_from_slice(&seq.to_le_bytes());
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&body_crc.to_le_bytes());
    let header_crc = salted_crc(salt, &[&out[start..]]);
    out.extend_from_slice(&header_crc.to_le_bytes());
    out.extend_from_slice(body);
    let written = (out.len() - start) as u64;
    out.resize(start + align_up(written) as usize, 0);
}

/// A batch header that checks out: its sequence number and body length.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct BatchHeader {
    pub(super) seq: u64,
    pub(super) body_len: u32,
    body_crc: u32,
}

/// Checks the batch header at `offset` (magic and salted header checksum
/// only: 24 bytes of work, whatever the body length claims).
pub(super) fn check_batch_header(
    buf: &[u8],
    offset: usize,
    salt: u64,
) -> Result<BatchHeader, String> {
    let available = buf.len().saturating_sub(offset);
    if available < BATCH_HEADER_BYTES {
        return Err(format!(
            "batch header cut short: {available} bytes left of {BATCH_HEADER_BYTES}"
        ));
    }
    let header = &buf[offset..offset + BATCH_HEADER_BYTES];
    if &header[..4] != BATCH_MAGIC {
        return Err("no batch header (magic missing)".to_string());
    }
    let stored = u32_at(header, 20);
    let computed = salted_crc(salt, &[&header[..20]]);
    if stored != computed {
        return Err(format!(
            "batch header checksum mismatch: stored {stored:08x}, computed {computed:08x}"
        ));
    }
    Ok(BatchHeader {
        seq: u64_at(header, 4),
        body_len: u32_at(header, 12),
        body_crc: u32_at(header, 16),
    })
}

/// Checks the whole batch at `offset`: returns its header, its body and the
/// block-aligned offset where the next batch starts.
pub(super) fn check_batch(
    buf: &[u8],
    offset: usize,
    salt: u64,
) -> Result<(BatchHeader, &[u8], usize), String> {
    let header = check_batch_header(buf, offset, salt)?;
    let body_start = offset + BATCH_HEADER_BYTES;
    let body_len = header.body_len as usize;
    if body_len > buf.len() - body_start {
        return Err(format!(
            "batch {} of {body_len} bytes runs past the end of the file ({} bytes left)",
            header.seq,
            buf.len() - body_start
        ));
    }
    let body = &buf[body_start..body_start + body_len];
    let computed = salted_crc(salt, &[body]);
    if computed != header.body_crc {
        return Err(format!(
            "batch {} body checksum mismatch: stored {:08x}, computed {computed:08x}",
            header.seq, header.body_crc
        ));
    }
    // May lie past the end of the file if a crash cut the padding short.
    let end = align_up((BATCH_HEADER_BYTES + body_len) as u64) as usize + offset;
    Ok((header, body, end))
}

/// The first block boundary after `from` holding a valid batch header.
/// Bounded: one header check per block.
pub(super) fn next_valid_batch_header(buf: &[u8], from: usize, salt: u64) -> Option<usize> {
    let first = align_up(from as u64 + 1) as usize;
    (first..buf.len())
        .step_by(BLOCK_BYTES as usize)
        .find(|&at| check_batch_header(buf, at, salt).is_ok())
}

pub(super) fn align_up(bytes: u64) -> u64 {
    bytes.div_ceil(BLOCK_BYTES) * BLOCK_BYTES
}

fn salted_crc(salt: u64, parts: &[&[u8]]) -> u32 {
    let mut crc = crc32c::crc32c(&salt.to_le_bytes());
    for part in parts {
        crc = crc32c::crc32c_append(crc, part);
    }
    crc
}

fn u32_at(buf: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(buf[at..at + 4].try_into().expect("4 bytes"))
}

fn u64_at(buf: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(buf[at..at + 8].try_into().expect("8 bytes"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_is_padded_to_a_block_and_reads_back() {
        let mut out = encode_segment_header(SegmentHeader {
            salt: 7,
            seq: 3,
            recycled: false,
        });
        encode_batch(7, 0, b"records", &mut out);
        assert_eq!(out.len() as u64, 2 * BLOCK_BYTES);
        assert_eq!(
            decode_segment_header(&out),
            Ok(SegmentHeader {
                salt: 7,
                seq: 3,
                recycled: false
            })
        );
        let (header, body, end) = check_batch(&out, BLOCK_BYTES as usize, 7).unwrap();
        assert_eq!((header.seq, body, end), (0, &b"records"[..], out.len()));
    }

    #[test]
    fn a_recycled_header_says_so_and_its_first_32_bytes_are_an_ordinary_header() {
        let header = SegmentHeader {
            salt: 5,
            seq: 9,
            recycled: true,
        };
        let mut block = encode_segment_header(header);
        assert_eq!(decode_segment_header(&block), Ok(header));
        let plain = encode_segment_header(SegmentHeader {
            recycled: false,
            ..header
        });
        assert_eq!(block[..SEGMENT_HEADER_BYTES], plain[..SEGMENT_HEADER_BYTES]);
        block[RECYCLED_RECORD_END - 1] ^= 1;
        assert_eq!(decode_segment_header(&block).map(|h| h.recycled), Ok(false));
    }

    #[test]
    fn a_batch_written_under_another_salt_does_not_check_out() {
        let mut out = Vec::new();
        encode_batch(1, 0, b"value that looks like a batch", &mut out);
        assert!(check_batch_header(&out, 0, 2).is_err());
        assert!(check_batch(&out, 0, 1).is_ok());
    }

    #[test]
    fn a_flipped_body_byte_fails_the_body_checksum_but_not_the_header() {
        let mut out = Vec::new();
        encode_batch(9, 4, b"0123456789", &mut out);
        out[BATCH_HEADER_BYTES + 3] ^= 1;
        assert!(check_batch_header(&out, 0, 9).is_ok());
        let error = check_batch(&out, 0, 9).unwrap_err();
        assert!(error.contains("body checksum"), "{error}");
    }

    #[test]
    fn the_scan_for_a_later_batch_only_looks_at_block_boundaries() {
        let mut out = vec![0xAB; BLOCK_BYTES as usize];
        // A valid header off the boundary is not found; one on it is.
        let mut misplaced = vec![0; 100];
        encode_batch(5, 1, b"x", &mut misplaced);
        out.extend_from_slice(&misplaced[..BLOCK_BYTES as usize]);
        assert_eq!(next_valid_batch_header(&out, 0, 5), None);
        encode_batch(5, 2, b"y", &mut out);
        let at = next_valid_batch_header(&out, 0, 5).unwrap();
        assert_eq!(at as u64 % BLOCK_BYTES, 0);
    }

    #[test]
    fn a_format_one_segment_and_another_version_are_told_apart_from_damage() {
        assert!(matches!(
            decode_segment_header(&[0; 4096]),
            Err(BadSegmentHeader::Damaged(_))
        ));
        let mut header = encode_segment_header(SegmentHeader {
            salt: 1,
            seq: 1,
            recycled: false,
        });
        header[8] = 9;
        let crc = crc32c::crc32c(&header[..28]);
        header[28..32].copy_from_slice(&crc.to_le_bytes());
        assert_eq!(
            decode_segment_header(&header),
            Err(BadSegmentHeader::Version(9))
        );
        let mut old = Vec::new();
        segment::encode(
            segment::RecordRef::HardState(&raft_core::HardState::default()),
            &mut old,
        )
        .unwrap();
        assert_eq!(
            decode_segment_header(&old),
            Err(BadSegmentHeader::FormatOne)
        );
    }
}
