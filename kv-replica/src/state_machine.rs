//! The deterministic key-value state machine, shared by kv-node and the
//! simulator.
//!
//! Every replica that applies the same log entries ends in the same state, so
//! nothing here may depend on anything but the entries: ordered maps only
//! (`BTreeMap`/`BTreeSet`), no clock, no randomness, no hash-map iteration.
//!
//! The file has three parts: applying entries and reading (the state machine
//! proper), the snapshot format, and the digest the simulator compares.

use crate::command::{
    CLUSTER_COMMAND_TAG, ClientSeq, ClusterCommand, Command, Op, OpResult, RequestId,
};
use raft_core::{Entry, EntryKind, LogIndex};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::io::{self, Read, Write};
use std::ops::Bound;

/// Longest key accepted by the HTTP layer, in bytes (API.md: 1..=4096).
pub const MAX_KEY_BYTES: usize = 4096;
/// Default longest value accepted by the HTTP layer, in bytes (1 MiB; the
/// limit is configurable but must stay well under
/// [`MAX_SNAPSHOT_RECORD_BYTES`], or snapshots can no longer be written).
pub const MAX_VALUE_BYTES: usize = 1 << 20;
/// Default bound on the number of clients in the dedup table.
pub const DEFAULT_DEDUP_LIMIT: usize = 100_000;

/// The first bytes of every snapshot.
pub const SNAPSHOT_MAGIC: [u8; 8] = *b"RAFTKVSM";
/// The snapshot format this build writes and reads.
/// Version 2 added the address book (`Address` records); version 1
/// snapshots, which have none, are still read.
pub const SNAPSHOT_VERSION: u32 = 2;
/// Largest record payload a snapshot may hold. A reader refuses larger length
/// fields instead of trusting them, and a writer refuses to produce them.
pub const MAX_SNAPSHOT_RECORD_BYTES: u32 = 64 << 20;

/// What applying one log entry produced.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Applied {
    /// The index of the entry; the state machine's applied index is now this.
    pub index: LogIndex,
    /// The proposal to wake, if the entry was a command with a request id.
    pub request: Option<RequestId>,
    /// `None` for `Noop` and `ConfChange` entries and for a `Normal` entry
    /// whose payload could not be decoded.
    pub result: Option<OpResult>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct StoredValue {
    value: String,
    /// Index of the last write that changed the key; never above the applied
    /// index.
    revision: u64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct DedupEntry {
    /// The newest seq applied for this client.
    seq: u64,
    /// Index of the entry that applied `seq`; unique across clients, since one
    /// entry carries one client.
    index: u64,
    /// What applying `seq` returned, handed back to retries.
    result: OpResult,
}

/// The replicated key-value state.
///
/// # Deduplication
///
/// For each `client_id` the table keeps the newest applied `seq` and its
/// result: the same `(client_id, seq)` again returns the stored result and
/// applies nothing; a lower seq returns [`OpResult::StaleSeq`] and applies
/// nothing; a higher seq is applied and replaces the stored one.
///
/// The table holds at most `dedup_limit` clients ([`DEFAULT_DEDUP_LIMIT`] =
/// 100,000 unless built with [`KvStateMachine::with_dedup_limit`]). When a new
/// client would exceed it, the client whose last write has the smallest log
/// index is evicted; that choice depends only on the log, so every replica
/// evicts the same client. The consequence: a retry from an evicted client is
/// not recognised and may apply a second time, and an older seq from it is no
/// longer refused as stale. All replicas must therefore use the same limit; it
/// is carried inside snapshots so that a restored replica keeps it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KvStateMachine {
    /// Index of the last entry applied (0 before the first). Entries arrive
    /// strictly in order: the next one must be `applied_index + 1`.
    applied_index: u64,
    data: BTreeMap<String, StoredValue>,
    dedup: BTreeMap<String, DedupEntry>,
    /// The same clients as `dedup`, ordered by the index of their last write,
    /// so that finding the one to evict is O(log n).
    dedup_by_index: BTreeSet<(u64, String)>,
    /// Invariant: `dedup.len() <= dedup_limit` after every apply.
    dedup_limit: usize,
    /// The cluster's address book: node name -> base URL, written by
    /// [`ClusterCommand::SetAddress`]. It may name nodes that are no longer
    /// members; raft-core's membership says who is one.
    addresses: BTreeMap<String, String>,
}

impl Default for KvStateMachine {
    fn default() -> Self {
        Self::new()
    }
}

impl KvStateMachine {
    /// An empty state machine with the default dedup bound.
    pub fn new() -> Self {
        Self::with_dedup_limit(DEFAULT_DEDUP_LIMIT)
    }

    /// An empty state machine that remembers at most `dedup_limit` clients
    /// (0 disables deduplication: every seq is applied).
    pub fn with_dedup_limit(dedup_limit: usize) -> Self {
        KvStateMachine {
            applied_index: 0,
            data: BTreeMap::new(),
            dedup: BTreeMap::new(),
            dedup_by_index: BTreeSet::new(),
            dedup_limit,
            addresses: BTreeMap::new(),
        }
    }

    /// Applies the next committed entry. `Noop` and `ConfChange` entries only
    /// advance the applied index.
    ///
    /// Panics if `entry.index` is not `applied_index() + 1`: applying out of
    /// order would silently diverge from the other replicas.
    pub fn apply_entry(&mut self, entry: &Entry) -> Applied {
        let index = entry.index.0;
        assert!(
            index == self.applied_index + 1,
            "entry {index} applied out of order: applied index is {}, expected entry {}",
            self.applied_index,
            self.applied_index + 1
        );
        self.applied_index = index;
        let (request, result) = match entry.kind {
            EntryKind::Noop | EntryKind::ConfChange => (None, None),
            EntryKind::Normal if entry.data.first() == Some(&CLUSTER_COMMAND_TAG) => {
                self.apply_cluster_command(index, &entry.data);
                (None, None)
            }
            EntryKind::Normal => match Command::decode(&entry.data) {
                Ok(command) => (command.request, Some(self.apply_command(index, command))),
                Err(error) => {
                    // Only a bug or corruption (caught elsewhere by checksums)
                    // can put such bytes in a committed entry. Every replica
                    // sees the same bytes, so skipping them keeps replicas equal.
                    tracing::warn!(index, %error, "undecodable normal entry applied as a no-op");
                    (None, None)
                }
            },
        };
        Applied {
            index: entry.index,
            request,
            result,
        }
    }

    fn apply_cluster_command(&mut self, index: u64, data: &[u8]) {
        match ClusterCommand::decode(data) {
            Some(Ok(ClusterCommand::SetAddress { name, url })) => {
                self.addresses.insert(name, url);
            }
            Some(Err(error)) => {
                tracing::warn!(index, %error, "undecodable cluster command applied as a no-op");
            }
            None => unreachable!("entry {index} carries the cluster command tag"),
        }
    }

    fn apply_command(&mut self, index: u64, command: Command) -> OpResult {
        let Some(ClientSeq { client_id, seq }) = command.client else {
            return self.apply_op(index, command.op);
        };
        if let Some(seen) = self.dedup.get(&client_id) {
            if seq == seen.seq {
                return seen.result.clone();
            }
            if seq < seen.seq {
                return OpResult::StaleSeq {
                    client_id,
                    seq,
                    newest: seen.seq,
                };
            }
        }
        let result = self.apply_op(index, command.op);
        self.remember(client_id, seq, index, result.clone());
        result
    }

    fn remember(&mut self, client_id: String, seq: u64, index: u64, result: OpResult) {
        let entry = DedupEntry { seq, index, result };
        if let Some(old) = self.dedup.insert(client_id.clone(), entry) {
            let removed = self.dedup_by_index.remove(&(old.index, client_id.clone()));
            debug_assert!(
                removed,
                "client {client_id:?} missing from the eviction index"
            );
        }
        let inserted = self.dedup_by_index.insert((index, client_id));
        assert!(inserted, "two dedup entries at index {index}");
        while self.dedup.len() > self.dedup_limit {
            let (oldest_index, oldest_client) = self
                .dedup_by_index
                .pop_first()
                .expect("eviction index holds the same clients as the dedup table");
            let evicted = self.dedup.remove(&oldest_client);
            debug_assert!(
                evicted.is_some_and(|e| e.index == oldest_index),
                "eviction index out of step for {oldest_client:?} at {oldest_index}"
            );
        }
    }

    fn apply_op(&mut self, revision: u64, op: Op) -> OpResult {
        match op {
            Op::Put { key, value } => {
                let prev = self.data.insert(key, StoredValue { value, revision });
                OpResult::Put {
                    revision,
                    prev: prev.map(|old| old.value),
                }
            }
            Op::Delete { key } => {
                let prev = self.data.remove(&key);
                OpResult::Delete {
                    revision,
                    prev: prev.map(|old| old.value),
                }
            }
            Op::Cas {
                key,
                expected,
                value,
            } => {
                let current = self.data.get(&key).map(|stored| stored.value.as_str());
                if current != expected.as_deref() {
                    return OpResult::Cas {
                        succeeded: false,
                        revision,
                        current: current.map(str::to_owned),
                    };
                }
                match &value {
                    Some(new) => {
                        let stored = StoredValue {
                            value: new.clone(),
                            revision,
                        };
                        self.data.insert(key, stored);
                    }
                    None => {
                        self.data.remove(&key);
                    }
                }
                OpResult::Cas {
                    succeeded: true,
                    revision,
                    current: value,
                }
            }
            Op::MultiPut { entries } => {
                for (key, value) in entries {
                    self.data.insert(key, StoredValue { value, revision });
                }
                OpResult::MultiPut { revision }
            }
        }
    }

    /// The value of `key` and the revision of the last write that changed it.
    pub fn get(&self, key: &str) -> Option<(&str, u64)> {
        self.data
            .get(key)
            .map(|stored| (stored.value.as_str(), stored.revision))
    }

    /// Up to `limit` entries `(key, value, revision)` whose key starts with
    /// `prefix`, in byte order of keys, and whether more entries match.
    pub fn scan(&self, prefix: &str, limit: usize) -> (Vec<(String, String, u64)>, bool) {
        let mut matching = self
            .data
            .range::<str, _>((Bound::Included(prefix), Bound::Unbounded))
            .take_while(|(key, _)| key.starts_with(prefix));
        let entries = matching
            .by_ref()
            .take(limit)
            .map(|(key, stored)| (key.clone(), stored.value.clone(), stored.revision))
            .collect();
        let more = matching.next().is_some();
        (entries, more)
    }

    /// The address book: node name -> base URL.
    pub fn addresses(&self) -> &BTreeMap<String, String> {
        &self.addresses
    }

    /// Index of the last entry applied (0 before the first).
    pub fn applied_index(&self) -> u64 {
        self.applied_index
    }

    /// Number of keys.
    pub fn len(&self) -> usize {
        self.data.len()
    }

    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// Number of clients currently in the dedup table.
    pub fn dedup_len(&self) -> usize {
        self.dedup.len()
    }

    pub fn dedup_limit(&self) -> usize {
        self.dedup_limit
    }

    /// The newest seq applied for `client_id`, if the client is still in the
    /// dedup table.
    pub fn newest_seq(&self, client_id: &str) -> Option<u64> {
        self.dedup.get(client_id).map(|entry| entry.seq)
    }
}

// ---------------------------------------------------------------------------
// Snapshot format, version 1
//
//   header:  magic (8 bytes, SNAPSHOT_MAGIC) | version (u32 little-endian)
//   records: length (u32 LE) | crc (u32 LE) | payload (`length` bytes)
//
// The CRC32C covers the four length bytes and then the payload, so a damaged
// length is caught too. Payloads are postcard encodings of `RecordOut` /
// `RecordIn` (same shape; postcard's wire format is stable within 1.x):
//
//   record 0:             Meta { applied_index, dedup_limit, key_count, dedup_count }
//   next key_count:       Key { key, value, revision }, keys strictly ascending
//   next dedup_count:     Dedup { client_id, seq, index, result }, ids ascending
//   then (version 2):     Address { name, url }, names ascending, until the trailer
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
    #[error("{count} bytes follow the snapshot trailer")]
    TrailingBytes { count: usize },
}

#[derive(Serialize)]
enum RecordOut<'a> {
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
        result: &'a OpResult,
    },
    Trailer {
        record_count: u64,
    },
    Address {
        name: &'a str,
        url: &'a str,
    },
}

/// The reading twin of [`RecordOut`]: same variants in the same order.
#[derive(Deserialize)]
enum RecordIn<'a> {
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
        result: OpResult,
    },
    Trailer {
        record_count: u64,
    },
    Address {
        name: &'a str,
        url: &'a str,
    },
}

const RECORD_FRAME_BYTES: usize = 8;

fn record_crc(length_bytes: [u8; 4], payload: &[u8]) -> u32 {
    crc32c::crc32c_append(crc32c::crc32c(&length_bytes), payload)
}

/// Frames one record into `buffer` (reused across records, so only one record
/// is ever held in memory) and writes it.
fn write_record(w: &mut impl Write, buffer: &mut Vec<u8>, record: &RecordOut) -> io::Result<()> {
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

fn read_exact_or(
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
struct RecordReader<'r, R: Read> {
    r: &'r mut R,
    buffer: Vec<u8>,
    /// Number of the next record to read (= records read so far).
    next_record: u64,
}

impl<R: Read> RecordReader<'_, R> {
    fn next(&mut self) -> Result<(u64, RecordIn<'_>), SnapshotError> {
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
        let (decoded, rest) = postcard::take_from_bytes::<RecordIn>(&self.buffer)
            .map_err(|source| SnapshotError::Decode { record, source })?;
        if !rest.is_empty() {
            let count = rest.len();
            return Err(SnapshotError::RecordTrailingBytes { record, count });
        }
        Ok((record, decoded))
    }
}

impl KvStateMachine {
    /// Streams the whole state (applied index, every key with its value and
    /// revision, the dedup table) to `w`, one record at a time. Fails with
    /// `InvalidData` if a single record would exceed
    /// [`MAX_SNAPSHOT_RECORD_BYTES`] (a value far above any sane limit).
    pub fn write_snapshot(&self, w: &mut impl Write) -> io::Result<()> {
        w.write_all(&SNAPSHOT_MAGIC)?;
        w.write_all(&SNAPSHOT_VERSION.to_le_bytes())?;
        let mut buffer = Vec::new();
        let meta = RecordOut::Meta {
            applied_index: self.applied_index,
            dedup_limit: self.dedup_limit as u64,
            key_count: self.data.len() as u64,
            dedup_count: self.dedup.len() as u64,
        };
        write_record(w, &mut buffer, &meta)?;
        for (key, stored) in &self.data {
            let record = RecordOut::Key {
                key,
                value: &stored.value,
                revision: stored.revision,
            };
            write_record(w, &mut buffer, &record)?;
        }
        for (client_id, entry) in &self.dedup {
            let record = RecordOut::Dedup {
                client_id,
                seq: entry.seq,
                index: entry.index,
                result: &entry.result,
            };
            write_record(w, &mut buffer, &record)?;
        }
        for (name, url) in &self.addresses {
            write_record(w, &mut buffer, &RecordOut::Address { name, url })?;
        }
        let record_count =
            1 + self.data.len() as u64 + self.dedup.len() as u64 + self.addresses.len() as u64;
        write_record(w, &mut buffer, &RecordOut::Trailer { record_count })
    }

    /// Reads a snapshot written by [`KvStateMachine::write_snapshot`],
    /// checking every record, and stops right after its trailer. The next
    /// entry to apply is `applied_index() + 1`.
    pub fn read_snapshot(r: &mut impl Read) -> Result<KvStateMachine, SnapshotError> {
        let mut header = [0u8; 12];
        read_exact_or(r, &mut header, SnapshotError::TruncatedHeader)?;
        let magic: [u8; 8] = header[0..8].try_into().expect("8 bytes");
        if magic != SNAPSHOT_MAGIC {
            return Err(SnapshotError::BadMagic { found: magic });
        }
        let version = u32::from_le_bytes(header[8..12].try_into().expect("4 bytes"));
        if version != SNAPSHOT_VERSION && version != 1 {
            return Err(SnapshotError::BadVersion {
                found: version,
                supported: SNAPSHOT_VERSION,
            });
        }
        let mut records = RecordReader {
            r,
            buffer: Vec::new(),
            next_record: 0,
        };

        let (applied, dedup_limit, key_count, dedup_count) = match records.next()? {
            (
                _,
                RecordIn::Meta {
                    applied_index,
                    dedup_limit,
                    key_count,
                    dedup_count,
                },
            ) => (applied_index, dedup_limit, key_count, dedup_count),
            (record, _) => {
                let expected = "meta";
                return Err(SnapshotError::UnexpectedRecord { record, expected });
            }
        };
        if dedup_count > dedup_limit {
            return Err(SnapshotError::DedupOverLimit {
                count: dedup_count,
                limit: dedup_limit,
            });
        }
        // A limit beyond usize (only on 32-bit targets) can never be reached.
        let dedup_limit = usize::try_from(dedup_limit).unwrap_or(usize::MAX);
        let mut machine = KvStateMachine::with_dedup_limit(dedup_limit);
        machine.applied_index = applied;
        for _ in 0..key_count {
            machine.restore_key(records.next()?)?;
        }
        for _ in 0..dedup_count {
            machine.restore_dedup_entry(records.next()?)?;
        }

        loop {
            let actual = records.next_record;
            match records.next()? {
                (_, RecordIn::Trailer { record_count }) if record_count == actual => {
                    return Ok(machine);
                }
                (_, RecordIn::Trailer { record_count }) => {
                    return Err(SnapshotError::RecordCountMismatch {
                        trailer: record_count,
                        actual,
                    });
                }
                (record, RecordIn::Address { name, url }) if version >= 2 => {
                    if let Some((last, _)) = machine.addresses.last_key_value()
                        && name <= last.as_str()
                    {
                        return Err(SnapshotError::OutOfOrder { record });
                    }
                    machine.addresses.insert(name.to_owned(), url.to_owned());
                }
                (record, _) => {
                    let expected = if version >= 2 {
                        "address or trailer"
                    } else {
                        "trailer"
                    };
                    return Err(SnapshotError::UnexpectedRecord { record, expected });
                }
            }
        }
    }

    /// Adds one `Key` record during a restore, checking order and revision.
    fn restore_key(&mut self, (record, decoded): (u64, RecordIn)) -> Result<(), SnapshotError> {
        let RecordIn::Key {
            key,
            value,
            revision,
        } = decoded
        else {
            let expected = "key";
            return Err(SnapshotError::UnexpectedRecord { record, expected });
        };
        self.check_restored_index(record, revision)?;
        if let Some((last, _)) = self.data.last_key_value()
            && key <= last.as_str()
        {
            return Err(SnapshotError::OutOfOrder { record });
        }
        let stored = StoredValue {
            value: value.to_owned(),
            revision,
        };
        self.data.insert(key.to_owned(), stored);
        Ok(())
    }

    /// Adds one `Dedup` record during a restore, checking order and index.
    fn restore_dedup_entry(
        &mut self,
        (record, decoded): (u64, RecordIn),
    ) -> Result<(), SnapshotError> {
        let RecordIn::Dedup {
            client_id,
            seq,
            index,
            result,
        } = decoded
        else {
            let expected = "dedup";
            return Err(SnapshotError::UnexpectedRecord { record, expected });
        };
        self.check_restored_index(record, index)?;
        if let Some((last, _)) = self.dedup.last_key_value()
            && client_id <= last.as_str()
        {
            return Err(SnapshotError::OutOfOrder { record });
        }
        if !self.dedup_by_index.insert((index, client_id.to_owned())) {
            return Err(SnapshotError::DuplicateDedupIndex { record, index });
        }
        let entry = DedupEntry { seq, index, result };
        self.dedup.insert(client_id.to_owned(), entry);
        Ok(())
    }

    /// A revision or dedup index in a snapshot must be a real entry at or
    /// before the snapshot's applied index.
    fn check_restored_index(&self, record: u64, index: u64) -> Result<(), SnapshotError> {
        if index == 0 || index > self.applied_index {
            return Err(SnapshotError::IndexOutOfRange {
                record,
                index,
                applied: self.applied_index,
            });
        }
        Ok(())
    }

    /// The snapshot as one buffer. Panics only if a record is over
    /// [`MAX_SNAPSHOT_RECORD_BYTES`], which the value size limit rules out.
    pub fn snapshot_bytes(&self) -> Vec<u8> {
        let mut bytes = Vec::new();
        if let Err(error) = self.write_snapshot(&mut bytes) {
            panic!("cannot snapshot the state machine: {error}");
        }
        bytes
    }

    /// Restores from a buffer that holds exactly one snapshot.
    pub fn restore_from_bytes(bytes: &[u8]) -> Result<KvStateMachine, SnapshotError> {
        let mut rest = bytes;
        let machine = Self::read_snapshot(&mut rest)?;
        if !rest.is_empty() {
            return Err(SnapshotError::TrailingBytes { count: rest.len() });
        }
        Ok(machine)
    }
}

// ---------------------------------------------------------------------------
// Digest
// ---------------------------------------------------------------------------

/// FNV-1a, 64 bits: tiny, dependency-free and the same on every platform.
struct Fnv1a(u64);

impl Fnv1a {
    const OFFSET_BASIS: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;

    fn bytes(&mut self, bytes: &[u8]) {
        for &byte in bytes {
            self.0 ^= u64::from(byte);
            self.0 = self.0.wrapping_mul(Self::PRIME);
        }
    }

    fn u64(&mut self, value: u64) {
        self.bytes(&value.to_le_bytes());
    }

    /// Length first, so that ("ab", "c") and ("a", "bc") hash differently.
    fn str(&mut self, value: &str) {
        self.u64(value.len() as u64);
        self.bytes(value.as_bytes());
    }
}

impl KvStateMachine {
    /// A deterministic hash of the applied index, every key with its value and
    /// revision, and the dedup table (clients, seqs, indexes, results), so
    /// that the simulator can check that replicas at the same index agree.
    /// The dedup limit is configuration and is not included.
    pub fn digest(&self) -> u64 {
        let mut hash = Fnv1a(Fnv1a::OFFSET_BASIS);
        hash.u64(self.applied_index);
        hash.u64(self.data.len() as u64);
        for (key, stored) in &self.data {
            hash.str(key);
            hash.str(&stored.value);
            hash.u64(stored.revision);
        }
        hash.u64(self.dedup.len() as u64);
        let mut encoded = Vec::new();
        for (client_id, entry) in &self.dedup {
            hash.str(client_id);
            hash.u64(entry.seq);
            hash.u64(entry.index);
            encoded.clear();
            encoded = postcard::to_extend(&entry.result, encoded).expect("an OpResult serializes");
            hash.u64(encoded.len() as u64);
            hash.bytes(&encoded);
        }
        // Only when present, so that digests of clusters without an address
        // book stay what they were.
        if !self.addresses.is_empty() {
            hash.u64(self.addresses.len() as u64);
            for (name, url) in &self.addresses {
                hash.str(name);
                hash.str(url);
            }
        }
        hash.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use raft_core::Term;

    #[test]
    fn the_address_book_is_applied_and_survives_a_snapshot() {
        let mut machine = KvStateMachine::new();
        let set = |index, name: &str, url: &str| Entry {
            term: Term(1),
            index: LogIndex(index),
            kind: EntryKind::Normal,
            data: ClusterCommand::SetAddress {
                name: name.into(),
                url: url.into(),
            }
            .encode(),
        };
        let applied = machine.apply_entry(&set(1, "node4", "http://127.0.0.1:1"));
        assert_eq!((applied.request, applied.result), (None, None));
        machine.apply_entry(&set(2, "node2", "http://127.0.0.1:2"));
        machine.apply_entry(&set(3, "node4", "http://127.0.0.1:4"));
        let expected: BTreeMap<String, String> = [
            ("node2".to_string(), "http://127.0.0.1:2".to_string()),
            ("node4".to_string(), "http://127.0.0.1:4".to_string()),
        ]
        .into();
        assert_eq!(machine.addresses(), &expected);
        let restored = KvStateMachine::restore_from_bytes(&machine.snapshot_bytes()).unwrap();
        assert_eq!(restored, machine);
        assert_eq!(restored.digest(), machine.digest());
    }

    #[test]
    fn a_version_1_snapshot_without_addresses_is_still_read() {
        let mut machine = KvStateMachine::new();
        machine.apply_entry(&normal(
            1,
            &command(
                None,
                Op::Put {
                    key: "k".into(),
                    value: "v".into(),
                },
            ),
        ));
        let mut bytes = machine.snapshot_bytes();
        bytes[8..12].copy_from_slice(&1u32.to_le_bytes());
        assert_eq!(KvStateMachine::restore_from_bytes(&bytes).unwrap(), machine);
    }

    fn normal(index: u64, command: &Command) -> Entry {
        Entry {
            term: Term(1),
            index: LogIndex(index),
            kind: EntryKind::Normal,
            data: command.encode(),
        }
    }

    fn command(client: Option<(&str, u64)>, op: Op) -> Command {
        Command {
            request: None,
            client: client.map(|(client_id, seq)| ClientSeq {
                client_id: client_id.to_owned(),
                seq,
            }),
            op,
        }
    }

    /// Applies `op` as the next entry, without dedup.
    fn apply(machine: &mut KvStateMachine, op: Op) -> OpResult {
        apply_as(machine, None, op)
    }

    fn apply_as(machine: &mut KvStateMachine, client: Option<(&str, u64)>, op: Op) -> OpResult {
        let index = machine.applied_index() + 1;
        let applied = machine.apply_entry(&normal(index, &command(client, op)));
        assert_eq!(applied.index, LogIndex(index));
        applied.result.expect("a normal entry has a result")
    }

    fn put(key: &str, value: &str) -> Op {
        Op::Put {
            key: key.into(),
            value: value.into(),
        }
    }

    fn cas(key: &str, expected: Option<&str>, value: Option<&str>) -> Op {
        Op::Cas {
            key: key.into(),
            expected: expected.map(Into::into),
            value: value.map(Into::into),
        }
    }

    #[test]
    fn put_returns_the_previous_value() {
        let mut machine = KvStateMachine::new();
        let first = apply(&mut machine, put("k", "v1"));
        assert_eq!(
            first,
            OpResult::Put {
                revision: 1,
                prev: None
            }
        );
        let second = apply(&mut machine, put("k", "v2"));
        assert_eq!(
            second,
            OpResult::Put {
                revision: 2,
                prev: Some("v1".into())
            }
        );
        assert_eq!(machine.get("k"), Some(("v2", 2)));
    }

    #[test]
    fn delete_of_a_missing_key_succeeds_with_prev_none() {
        let mut machine = KvStateMachine::new();
        let result = apply(&mut machine, Op::Delete { key: "k".into() });
        assert_eq!(
            result,
            OpResult::Delete {
                revision: 1,
                prev: None
            }
        );
        apply(&mut machine, put("k", "v"));
        let result = apply(&mut machine, Op::Delete { key: "k".into() });
        let prev = Some("v".into());
        assert_eq!(result, OpResult::Delete { revision: 3, prev });
        assert_eq!(machine.get("k"), None);
        assert!(machine.is_empty());
    }

    #[test]
    fn cas_with_the_right_expected_value_swaps_and_returns_the_new_value() {
        let mut machine = KvStateMachine::new();
        apply(&mut machine, put("k", "old"));
        let result = apply(&mut machine, cas("k", Some("old"), Some("new")));
        let current = Some("new".into());
        let expected_result = OpResult::Cas {
            succeeded: true,
            revision: 2,
            current,
        };
        assert_eq!(result, expected_result);
        assert_eq!(machine.get("k"), Some(("new", 2)));
    }

    #[test]
    fn cas_with_a_wrong_expected_value_fails_returns_the_actual_value_and_changes_nothing() {
        let mut machine = KvStateMachine::new();
        apply(&mut machine, put("k", "actual"));
        let result = apply(&mut machine, cas("k", Some("other"), Some("new")));
        let current = Some("actual".into());
        let expected_result = OpResult::Cas {
            succeeded: false,
            revision: 2,
            current,
        };
        assert_eq!(result, expected_result);
        assert_eq!(machine.get("k"), Some(("actual", 1)));
        // Expecting a value of a missing key fails with current None.
        let result = apply(&mut machine, cas("missing", Some("x"), Some("y")));
        let expected_result = OpResult::Cas {
            succeeded: false,
            revision: 3,
            current: None,
        };
        assert_eq!(result, expected_result);
        assert_eq!(machine.get("missing"), None);
    }

    #[test]
    fn cas_expecting_absence_creates_a_missing_key_and_fails_on_a_present_one() {
        let mut machine = KvStateMachine::new();
        let created = apply(&mut machine, cas("k", None, Some("v")));
        let current = Some("v".into());
        let expected_result = OpResult::Cas {
            succeeded: true,
            revision: 1,
            current,
        };
        assert_eq!(created, expected_result);
        let refused = apply(&mut machine, cas("k", None, Some("w")));
        let current = Some("v".into());
        let expected_result = OpResult::Cas {
            succeeded: false,
            revision: 2,
            current,
        };
        assert_eq!(refused, expected_result);
        assert_eq!(machine.get("k"), Some(("v", 1)));
    }

    #[test]
    fn cas_with_value_none_deletes_the_key_when_the_comparison_holds() {
        let mut machine = KvStateMachine::new();
        apply(&mut machine, put("k", "v"));
        let result = apply(&mut machine, cas("k", Some("v"), None));
        let expected_result = OpResult::Cas {
            succeeded: true,
            revision: 2,
            current: None,
        };
        assert_eq!(result, expected_result);
        assert_eq!(machine.get("k"), None);
    }

    #[test]
    fn multi_put_applies_every_entry_at_one_revision_and_the_last_duplicate_wins() {
        let mut machine = KvStateMachine::new();
        apply(&mut machine, put("a", "old"));
        let entries = vec![
            ("a".into(), "1".into()),
            ("b".into(), "2".into()),
            ("a".into(), "3".into()),
        ];
        let result = apply(&mut machine, Op::MultiPut { entries });
        assert_eq!(result, OpResult::MultiPut { revision: 2 });
        assert_eq!(machine.get("a"), Some(("3", 2)));
        assert_eq!(machine.get("b"), Some(("2", 2)));
        assert_eq!(machine.len(), 2);
    }

    #[test]
    fn revision_of_a_key_is_the_index_of_the_last_write_that_changed_it() {
        let mut machine = KvStateMachine::new();
        apply(&mut machine, put("a", "1"));
        apply(&mut machine, put("b", "1"));
        let noop = Entry {
            term: Term(2),
            index: LogIndex(3),
            kind: EntryKind::Noop,
            data: Default::default(),
        };
        assert_eq!(machine.apply_entry(&noop).result, None);
        apply(&mut machine, put("a", "2"));
        apply(&mut machine, cas("b", Some("nope"), Some("x")));
        apply(&mut machine, Op::Delete { key: "zz".into() });
        assert_eq!(machine.get("a"), Some(("2", 4)));
        assert_eq!(machine.get("b"), Some(("1", 2)));
        assert_eq!(machine.applied_index(), 6);
    }

    #[test]
    fn scan_returns_keys_with_the_prefix_in_byte_order_up_to_the_limit() {
        let mut machine = KvStateMachine::new();
        for key in ["p/b", "p/a", "p/\u{e9}", "p/Z", "q", "p", "o/x", "p/a/1"] {
            apply(&mut machine, put(key, key));
        }
        let (all, more) = machine.scan("p/", 100);
        let keys: Vec<&str> = all.iter().map(|(key, _, _)| key.as_str()).collect();
        assert_eq!(keys, ["p/Z", "p/a", "p/a/1", "p/b", "p/\u{e9}"]);
        assert!(!more);
        let (first_two, more) = machine.scan("p/", 2);
        assert_eq!(
            first_two,
            [
                ("p/Z".into(), "p/Z".into(), 4),
                ("p/a".into(), "p/a".into(), 2)
            ]
        );
        assert!(more);
        let (exactly_five, more) = machine.scan("p/", 5);
        assert_eq!(exactly_five.len(), 5);
        assert!(!more, "no sixth key matches");
        let (none, more) = machine.scan("p/", 0);
        assert!(none.is_empty() && more);
        let (everything, more) = machine.scan("", 100);
        assert_eq!(everything.len(), 8);
        assert!(!more);
        assert_eq!(machine.scan("r", 10), (vec![], false));
    }

    #[test]
    fn a_retried_seq_returns_the_first_result_and_applies_once() {
        let mut machine = KvStateMachine::new();
        let first = apply_as(&mut machine, Some(("c1", 7)), put("k", "v1"));
        apply(&mut machine, put("k", "v2"));
        let retry = apply_as(&mut machine, Some(("c1", 7)), put("k", "v1"));
        assert_eq!(retry, first);
        assert_eq!(
            retry,
            OpResult::Put {
                revision: 1,
                prev: None
            }
        );
        assert_eq!(
            machine.get("k"),
            Some(("v2", 2)),
            "the retry changed nothing"
        );
        assert_eq!(machine.applied_index(), 3);
        let next = apply_as(&mut machine, Some(("c1", 8)), put("k", "v3"));
        let prev = Some("v2".into());
        assert_eq!(next, OpResult::Put { revision: 4, prev });
        assert_eq!(machine.newest_seq("c1"), Some(8));
    }

    #[test]
    fn a_stale_seq_is_rejected_and_nothing_is_applied() {
        let mut machine = KvStateMachine::new();
        apply_as(&mut machine, Some(("c1", 5)), put("k", "v5"));
        let digest_before = {
            let mut copy = machine.clone();
            copy.applied_index += 1;
            copy.digest()
        };
        let stale = apply_as(&mut machine, Some(("c1", 4)), put("k", "v4"));
        let expected_result = OpResult::StaleSeq {
            client_id: "c1".into(),
            seq: 4,
            newest: 5,
        };
        assert_eq!(stale, expected_result);
        assert_eq!(machine.get("k"), Some(("v5", 1)));
        assert_eq!(machine.newest_seq("c1"), Some(5));
        assert_eq!(machine.digest(), digest_before, "only the index moved");
    }

    #[test]
    fn dedup_evicts_the_client_whose_last_write_is_oldest() {
        let mut machine = KvStateMachine::with_dedup_limit(2);
        apply_as(&mut machine, Some(("a", 1)), put("k", "a1")); // index 1
        apply_as(&mut machine, Some(("b", 1)), put("k", "b1")); // index 2
        apply_as(&mut machine, Some(("a", 2)), put("k", "a2")); // index 3
        apply_as(&mut machine, Some(("c", 1)), put("k", "c1")); // index 4: evicts b
        assert_eq!(machine.dedup_len(), 2);
        assert_eq!(machine.newest_seq("a"), Some(2));
        assert_eq!(machine.newest_seq("b"), None);
        assert_eq!(machine.newest_seq("c"), Some(1));
        // The documented consequence: b's retry is applied a second time.
        let retry = apply_as(&mut machine, Some(("b", 1)), put("k", "b1"));
        let prev = Some("c1".into());
        assert_eq!(retry, OpResult::Put { revision: 5, prev });
        assert_eq!(machine.newest_seq("a"), None, "a was now the oldest");
    }

    #[test]
    fn dedup_eviction_is_the_same_on_every_replica() {
        let run = || {
            let mut machine = KvStateMachine::with_dedup_limit(3);
            for round in 0..40u64 {
                let client = format!("client-{}", (round * 7) % 5);
                apply_as(&mut machine, Some((&client, round)), put("k", &client));
            }
            machine
        };
        let (one, two) = (run(), run());
        assert_eq!(one, two);
        assert_eq!(one.digest(), two.digest());
        assert_eq!(one.dedup_len(), 3);
    }

    #[test]
    fn a_dedup_limit_of_zero_applies_every_retry() {
        let mut machine = KvStateMachine::with_dedup_limit(0);
        apply_as(&mut machine, Some(("c", 1)), put("k", "v"));
        let retry = apply_as(&mut machine, Some(("c", 1)), put("k", "v"));
        let prev = Some("v".into());
        assert_eq!(retry, OpResult::Put { revision: 2, prev });
        assert_eq!(machine.dedup_len(), 0);
    }

    #[test]
    fn noop_conf_change_and_undecodable_entries_only_advance_the_index() {
        let mut machine = KvStateMachine::new();
        apply(&mut machine, put("k", "v"));
        let digest_of = |machine: &KvStateMachine, index| {
            let mut copy = machine.clone();
            copy.applied_index = index;
            copy.digest()
        };
        let kinds = [EntryKind::Noop, EntryKind::ConfChange, EntryKind::Normal];
        for (offset, kind) in kinds.into_iter().enumerate() {
            let index = 2 + offset as u64;
            let entry = Entry {
                term: Term(1),
                index: LogIndex(index),
                kind,
                data: bytes::Bytes::from_static(&[0xff, 0xff, 0xff]),
            };
            let expected_digest = digest_of(&machine, index);
            let applied = machine.apply_entry(&entry);
            let expected_applied = Applied {
                index: LogIndex(index),
                request: None,
                result: None,
            };
            assert_eq!(applied, expected_applied);
            assert_eq!(machine.digest(), expected_digest);
        }
        assert_eq!(machine.applied_index(), 4);
    }

    #[test]
    fn applied_carries_the_request_id_of_the_command() {
        let mut machine = KvStateMachine::new();
        let request = Some(RequestId { node: 2, id: 41 });
        let command = Command {
            request,
            client: None,
            op: put("k", "v"),
        };
        assert_eq!(machine.apply_entry(&normal(1, &command)).request, request);
    }

    #[test]
    #[should_panic(expected = "entry 3 applied out of order: applied index is 1, expected entry 2")]
    fn applying_an_entry_out_of_order_panics_with_the_numbers() {
        let mut machine = KvStateMachine::new();
        apply(&mut machine, put("k", "v"));
        machine.apply_entry(&normal(3, &command(None, put("k", "w"))));
    }

    #[test]
    #[should_panic(expected = "entry 5 applied out of order: applied index is 0, expected entry 1")]
    fn the_first_entry_applied_must_be_index_one() {
        KvStateMachine::new().apply_entry(&normal(5, &command(None, put("k", "v"))));
    }

    /// A small state with keys, an overwritten key, a deleted key and dedup
    /// entries, including a stored CAS failure.
    fn small_machine() -> KvStateMachine {
        let mut machine = KvStateMachine::with_dedup_limit(10);
        apply_as(&mut machine, Some(("c1", 1)), put("alpha", "1"));
        apply(&mut machine, put("beta", "2"));
        apply_as(&mut machine, Some(("c2", 9)), cas("alpha", Some("x"), None));
        apply(&mut machine, put("gone", "x"));
        apply(&mut machine, Op::Delete { key: "gone".into() });
        apply_as(&mut machine, Some(("c1", 2)), put("beta", "3"));
        machine
    }

    #[test]
    fn snapshot_round_trip_restores_an_equal_machine_that_stays_equal() {
        let mut original = small_machine();
        let mut restored = KvStateMachine::restore_from_bytes(&original.snapshot_bytes()).unwrap();
        assert_eq!(restored, original);
        assert_eq!(restored.digest(), original.digest());
        assert_eq!(restored.dedup_limit(), 10);
        for machine in [&mut original, &mut restored] {
            apply_as(machine, Some(("c1", 2)), put("beta", "again")); // a retry
            apply_as(machine, Some(("c2", 8)), put("beta", "stale"));
            apply(machine, put("gamma", "4"));
        }
        assert_eq!(restored.digest(), original.digest());
        assert_eq!(restored.snapshot_bytes(), original.snapshot_bytes());
        assert_eq!(restored.applied_index(), 9);
    }

    #[test]
    fn snapshot_of_an_empty_machine_round_trips() {
        let empty = KvStateMachine::new();
        let restored = KvStateMachine::restore_from_bytes(&empty.snapshot_bytes()).unwrap();
        assert_eq!(restored, empty);
    }

    #[test]
    fn snapshot_is_read_from_a_stream_and_stops_at_its_trailer() {
        let machine = small_machine();
        let mut stream = machine.snapshot_bytes();
        stream.extend_from_slice(b"next");
        let mut reader = stream.as_slice();
        let restored = KvStateMachine::read_snapshot(&mut reader).unwrap();
        assert_eq!(restored, machine);
        assert_eq!(reader, b"next");
        assert!(matches!(
            KvStateMachine::restore_from_bytes(&stream),
            Err(SnapshotError::TrailingBytes { count: 4 })
        ));
    }

    #[test]
    fn every_single_bit_flip_in_a_snapshot_gives_an_error() {
        let bytes = small_machine().snapshot_bytes();
        for bit in 0..bytes.len() * 8 {
            let mut damaged = bytes.clone();
            damaged[bit / 8] ^= 1 << (bit % 8);
            let result = KvStateMachine::restore_from_bytes(&damaged);
            assert!(result.is_err(), "flipping bit {bit} went unnoticed");
        }
    }

    #[test]
    fn truncation_at_every_offset_gives_a_truncated_error() {
        let bytes = small_machine().snapshot_bytes();
        for cut in 0..bytes.len() {
            match KvStateMachine::restore_from_bytes(&bytes[..cut]) {
                Err(SnapshotError::TruncatedHeader) => assert!(cut < 12),
                Err(SnapshotError::Truncated { .. }) => assert!(cut >= 12),
                other => panic!("cut at {cut}: expected a truncation error, got {other:?}"),
            }
        }
    }

    #[test]
    fn a_damaged_header_is_reported_as_bad_magic_or_bad_version() {
        let bytes = small_machine().snapshot_bytes();
        let mut wrong_magic = bytes.clone();
        wrong_magic[0] = b'X';
        assert!(matches!(
            KvStateMachine::restore_from_bytes(&wrong_magic),
            Err(SnapshotError::BadMagic { found }) if found[0] == b'X'
        ));
        let mut wrong_version = bytes;
        wrong_version[8..12].copy_from_slice(&7u32.to_le_bytes());
        assert!(matches!(
            KvStateMachine::restore_from_bytes(&wrong_version),
            Err(SnapshotError::BadVersion {
                found: 7,
                supported: SNAPSHOT_VERSION
            })
        ));
    }

    #[test]
    fn a_damaged_payload_is_reported_with_its_record_number() {
        let bytes = small_machine().snapshot_bytes();
        let meta_length = u32::from_le_bytes(bytes[12..16].try_into().unwrap()) as usize;
        // The first byte of record 1's payload (the first key record).
        let offset = 12 + RECORD_FRAME_BYTES + meta_length + RECORD_FRAME_BYTES;
        let mut damaged = bytes;
        damaged[offset] ^= 0x40;
        assert!(matches!(
            KvStateMachine::restore_from_bytes(&damaged),
            Err(SnapshotError::CrcMismatch { record: 1, .. })
        ));
    }

    #[test]
    fn a_huge_record_length_is_refused_without_allocating_it() {
        let mut bytes = SNAPSHOT_MAGIC.to_vec();
        bytes.extend_from_slice(&SNAPSHOT_VERSION.to_le_bytes());
        bytes.extend_from_slice(&u32::MAX.to_le_bytes());
        bytes.extend_from_slice(&0u32.to_le_bytes());
        assert!(matches!(
            KvStateMachine::restore_from_bytes(&bytes),
            Err(SnapshotError::RecordTooLarge {
                record: 0,
                length: u32::MAX,
                max: MAX_SNAPSHOT_RECORD_BYTES
            })
        ));
        // Under the cap but far beyond the data: truncated, not allocated.
        let length = MAX_SNAPSHOT_RECORD_BYTES;
        bytes[12..16].copy_from_slice(&length.to_le_bytes());
        assert!(matches!(
            KvStateMachine::restore_from_bytes(&bytes),
            Err(SnapshotError::Truncated { record: 0 })
        ));
    }

    /// Frames `records` after a valid header, checksums and all.
    fn well_framed(records: &[RecordOut]) -> Vec<u8> {
        let mut bytes = SNAPSHOT_MAGIC.to_vec();
        bytes.extend_from_slice(&SNAPSHOT_VERSION.to_le_bytes());
        let mut buffer = Vec::new();
        for record in records {
            write_record(&mut bytes, &mut buffer, record).unwrap();
        }
        bytes
    }

    fn meta(key_count: u64, dedup_count: u64) -> RecordOut<'static> {
        RecordOut::Meta {
            applied_index: 5,
            dedup_limit: 1,
            key_count,
            dedup_count,
        }
    }

    fn key_record(key: &str, revision: u64) -> RecordOut<'_> {
        RecordOut::Key {
            key,
            value: "v",
            revision,
        }
    }

    #[test]
    fn a_well_framed_snapshot_with_inconsistent_contents_is_refused() {
        let keys_out_of_order = well_framed(&[
            meta(2, 0),
            key_record("b", 1),
            key_record("a", 2),
            RecordOut::Trailer { record_count: 3 },
        ]);
        assert!(matches!(
            KvStateMachine::restore_from_bytes(&keys_out_of_order),
            Err(SnapshotError::OutOfOrder { record: 2 })
        ));
        let revision_beyond_applied = well_framed(&[meta(1, 0), key_record("a", 6)]);
        assert!(matches!(
            KvStateMachine::restore_from_bytes(&revision_beyond_applied),
            Err(SnapshotError::IndexOutOfRange {
                record: 1,
                index: 6,
                applied: 5
            })
        ));
        let over_limit = well_framed(&[meta(0, 2)]);
        assert!(matches!(
            KvStateMachine::restore_from_bytes(&over_limit),
            Err(SnapshotError::DedupOverLimit { count: 2, limit: 1 })
        ));
        let missing_key = well_framed(&[meta(1, 0), RecordOut::Trailer { record_count: 1 }]);
        assert!(matches!(
            KvStateMachine::restore_from_bytes(&missing_key),
            Err(SnapshotError::UnexpectedRecord {
                record: 1,
                expected: "key"
            })
        ));
        let wrong_count = well_framed(&[meta(0, 0), RecordOut::Trailer { record_count: 7 }]);
        assert!(matches!(
            KvStateMachine::restore_from_bytes(&wrong_count),
            Err(SnapshotError::RecordCountMismatch {
                trailer: 7,
                actual: 1
            })
        ));
    }

    #[test]
    fn digest_changes_with_values_revisions_and_the_applied_index() {
        let base = small_machine();
        let mut other_value = base.clone();
        other_value.data.get_mut("beta").unwrap().value = "4".into();
        let mut other_revision = base.clone();
        other_revision.data.get_mut("beta").unwrap().revision = 5;
        let mut other_index = base.clone();
        other_index.applied_index += 1;
        let digests = [
            base.digest(),
            other_value.digest(),
            other_revision.digest(),
            other_index.digest(),
        ];
        let distinct: BTreeSet<u64> = digests.into_iter().collect();
        assert_eq!(distinct.len(), 4);
    }

    mod random_histories {
        use super::*;
        use proptest::prelude::*;

        #[derive(Clone, Debug)]
        enum Step {
            Noop,
            Garbage,
            Write {
                client: Option<(String, u64)>,
                op: Op,
            },
        }

        fn key() -> impl Strategy<Value = String> {
            prop::sample::select(vec!["a", "ab", "b", "b/1", "c"]).prop_map(String::from)
        }

        fn value() -> impl Strategy<Value = String> {
            prop::sample::select(vec!["", "x", "y", "zz"]).prop_map(String::from)
        }

        fn op() -> impl Strategy<Value = Op> {
            prop_oneof![
                (key(), value()).prop_map(|(key, value)| Op::Put { key, value }),
                key().prop_map(|key| Op::Delete { key }),
                (key(), prop::option::of(value()), prop::option::of(value())).prop_map(
                    |(key, expected, value)| Op::Cas {
                        key,
                        expected,
                        value
                    }
                ),
                prop::collection::vec((key(), value()), 0..4)
                    .prop_map(|entries| Op::MultiPut { entries }),
            ]
        }

        fn step() -> impl Strategy<Value = Step> {
            let client = prop::option::of((0..5u8, 0..6u64))
                .prop_map(|client| client.map(|(id, seq)| (format!("c{id}"), seq)));
            prop_oneof![
                1 => Just(Step::Noop),
                1 => Just(Step::Garbage),
                10 => (client, op()).prop_map(|(client, op)| Step::Write { client, op }),
            ]
        }

        fn entry(index: u64, step: &Step) -> Entry {
            let (kind, data) = match step {
                Step::Noop => (EntryKind::Noop, bytes::Bytes::new()),
                Step::Garbage => (EntryKind::Normal, bytes::Bytes::from_static(&[9, 9, 9])),
                Step::Write { client, op } => {
                    let client = client.as_ref().map(|(id, seq)| (id.as_str(), *seq));
                    (EntryKind::Normal, command(client, op.clone()).encode())
                }
            };
            Entry {
                term: Term(1),
                index: LogIndex(index),
                kind,
                data,
            }
        }

        proptest! {
            #[test]
            fn a_replica_restored_from_a_snapshot_midway_ends_with_the_same_digest(
                steps in prop::collection::vec(step(), 0..60),
                split in 0usize..61,
            ) {
                let split = split.min(steps.len());
                let entries: Vec<Entry> = steps
                    .iter()
                    .enumerate()
                    .map(|(position, step)| entry(position as u64 + 1, step))
                    .collect();
                let mut straight = KvStateMachine::with_dedup_limit(3);
                let mut via_snapshot = KvStateMachine::with_dedup_limit(3);
                for entry in &entries[..split] {
                    via_snapshot.apply_entry(entry);
                }
                via_snapshot =
                    KvStateMachine::restore_from_bytes(&via_snapshot.snapshot_bytes()).unwrap();
                for entry in &entries[..split] {
                    straight.apply_entry(entry);
                }
                prop_assert_eq!(straight.digest(), via_snapshot.digest());
                for entry in &entries[split..] {
                    let left = straight.apply_entry(entry);
                    let right = via_snapshot.apply_entry(entry);
                    prop_assert_eq!(left, right);
                }
                prop_assert_eq!(straight.digest(), via_snapshot.digest());
                prop_assert_eq!(straight.snapshot_bytes(), via_snapshot.snapshot_bytes());
                prop_assert!(straight.dedup_len() <= 3);
            }
        }
    }
}
