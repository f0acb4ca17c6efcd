//! Delta snapshots: the keys written since the last snapshot, written on
//! top of it, so that a snapshot of a large state costs what changed, not
//! the whole state (issue 12: at 10M keys a whole snapshot is 1.3 GB, and
//! the restart bound asks for one every 1.5M key writes).
//!
//! Work in progress on this branch: the state machine's side (which keys
//! changed, the delta format, applying a delta on top of a state). The
//! storage's chain of files, the replica's choice between a whole snapshot
//! and a delta, and the merged restore come next.
//!
//! ```text
//! header:  DELTA_MAGIC (8 bytes) | DELTA_VERSION (u32 LE)
//! records: framed as in a whole snapshot (`records.rs`):
//!   Meta { applied_index, dedup_limit, key_count, dedup_count }: the state after
//!   DeltaBase { base_index, changed_count }: the state it goes on top of
//!   next changed_count: Key { key, value, revision } or Tombstone { key },
//!                       keys strictly ascending
//!   then, whole, as in a version 3 snapshot: Dedup, Address, Lease, LeaseKey
//!   last: Trailer { record_count }
//! ```

use super::records::{
    DELTA_MAGIC, DELTA_VERSION, Record, RecordReader, SNAPSHOT_VERSION, SnapshotError,
    read_exact_or, write_record,
};
use super::{Key, KvStateMachine, StoredValue};
use std::io::{self, Read, Write};

/// Below this many keys a delta is always tracked, whatever the state's
/// size (a small state's delta costs little either way).
pub(super) const MIN_TRACKED: usize = 4096;

/// The keys put or deleted since the last [`KvStateMachine::take_changed_keys`],
/// in the order written, a key once per write (the delta's writer sorts
/// them and drops the repeats, off the driver's thread).
///
/// A list in fixed-size chunks, not a set: a hash set of millions of keys
/// stops its thread for a tenth of a second each time it doubles and
/// rehashes, and one growing vector is copied whole when it doubles (both
/// stopped the drivers for 100-450 ms during a 10M-key bulk load and cost
/// elections); chunks are never copied.
///
/// Not state: neither in snapshots nor in the digest, and a clone (a
/// capture for a snapshot) tracks nothing, so that capturing stays O(1).
/// Once the writes outnumber the keys, a delta could cost more than a
/// whole snapshot: tracking stops (`None`) and the next snapshot must be
/// whole. (Up to there a delta is still smaller than the whole snapshot
/// it saves; a bulk load of new keys, where half the keys may be new since
/// the last snapshot, is written in deltas.)
#[derive(Debug)]
pub(super) struct ChangedKeys(Option<KeyList>);

impl Default for ChangedKeys {
    fn default() -> Self {
        ChangedKeys(Some(KeyList::default()))
    }
}

/// Keys per chunk of a [`KeyList`] (24 bytes each: 1.5 MiB).
const CHUNK_KEYS: usize = 64 * 1024;
#[cfg(test)]
pub(super) const CHUNK_KEYS_FOR_TESTS: usize = CHUNK_KEYS;

/// Keys in write order, repeats included, kept in chunks of
/// [`CHUNK_KEYS`] so that growing it never copies what it holds.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct KeyList {
    chunks: Vec<Vec<Key>>,
    len: usize,
}

impl KeyList {
    pub(super) fn push(&mut self, key: Key) {
        match self.chunks.last_mut() {
            Some(chunk) if chunk.len() < CHUNK_KEYS => chunk.push(key),
            _ => {
                let mut chunk = Vec::with_capacity(CHUNK_KEYS);
                chunk.push(key);
                self.chunks.push(chunk);
            }
        }
        self.len += 1;
    }

    /// Keys pushed, repeats included.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The keys in order, each once (for the delta's writer, off the
    /// driver's thread).
    pub fn into_sorted(self) -> Vec<Key> {
        let mut keys: Vec<Key> = self.chunks.into_iter().flatten().collect();
        keys.sort_unstable();
        keys.dedup();
        keys
    }
}

impl<const N: usize> From<[&str; N]> for KeyList {
    fn from(keys: [&str; N]) -> Self {
        let mut list = KeyList::default();
        for key in keys {
            list.push(Key::from(key));
        }
        list
    }
}

impl Clone for ChangedKeys {
    fn clone(&self) -> Self {
        ChangedKeys(None)
    }
}

impl PartialEq for ChangedKeys {
    fn eq(&self, _other: &Self) -> bool {
        true
    }
}

impl Eq for ChangedKeys {}

impl ChangedKeys {
    /// `key` was put or deleted in a state of `key_count` keys.
    pub(super) fn note(&mut self, key: &Key, key_count: usize) {
        let Some(keys) = &mut self.0 else {
            return;
        };
        if keys.len() >= MIN_TRACKED.max(key_count) {
            self.0 = None;
            return;
        }
        keys.push(key.clone());
    }
}

impl KvStateMachine {
    /// The keys put or deleted since the last call (or since this state
    /// was created or restored), in write order with repeats, and tracking
    /// starts afresh. None if they were too many to track: the next
    /// snapshot must then be whole.
    pub fn take_changed_keys(&mut self) -> Option<KeyList> {
        std::mem::take(&mut self.changed).0
    }

    /// Writes the changes from the state at `base_index` (whose changed
    /// keys since are `changed`, in any order, repeats allowed) to this
    /// one, as a delta snapshot.
    pub fn write_delta_snapshot(
        &self,
        base_index: u64,
        changed: KeyList,
        w: &mut impl Write,
    ) -> io::Result<()> {
        if base_index >= self.applied_index {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "a delta at {} cannot go on top of {base_index}",
                    self.applied_index
                ),
            ));
        }
        let keys = changed.into_sorted();
        w.write_all(&DELTA_MAGIC)?;
        w.write_all(&DELTA_VERSION.to_le_bytes())?;
        let mut buffer = Vec::new();
        let meta = Record::Meta {
            applied_index: self.applied_index,
            dedup_limit: self.dedup_limit as u64,
            key_count: self.data.len() as u64,
            dedup_count: self.dedup.len() as u64,
        };
        write_record(w, &mut buffer, &meta)?;
        let base = Record::DeltaBase {
            base_index,
            changed_count: keys.len() as u64,
        };
        write_record(w, &mut buffer, &base)?;
        for key in &keys {
            let record = match self.data.get(key) {
                Some(stored) => Record::Key {
                    key,
                    value: &stored.value,
                    revision: stored.revision,
                },
                None => Record::Tombstone { key },
            };
            write_record(w, &mut buffer, &record)?;
        }
        self.write_tables(w, &mut buffer, 2 + keys.len() as u64)
    }

    /// Applies a delta written by [`Self::write_delta_snapshot`] on top of
    /// this state, which must be its base, checking every record. On an
    /// error the state is half changed: the caller drops it.
    pub fn apply_delta_snapshot(&mut self, r: &mut impl Read) -> Result<(), SnapshotError> {
        let (_, head, mut records) = read_head(r, true)?;
        let (base_index, changed_count) = head.base.expect("a delta's head has its base");
        if base_index != self.applied_index {
            return Err(SnapshotError::DeltaBaseMismatch {
                expected: self.applied_index,
                found: base_index,
            });
        }
        let Head {
            applied,
            dedup_limit,
            key_count,
            dedup_count,
            ..
        } = head;
        if applied <= self.applied_index {
            return Err(SnapshotError::DeltaGoesBack {
                base: self.applied_index,
                applied,
            });
        }
        self.applied_index = applied;
        self.dedup_limit = usize::try_from(dedup_limit).unwrap_or(usize::MAX);
        let mut last: Option<Key> = None;
        for _ in 0..changed_count {
            self.apply_delta_key(records.next()?, &mut last)?;
        }
        if self.data.len() as u64 != key_count {
            return Err(SnapshotError::KeyCountMismatch {
                claimed: key_count,
                actual: self.data.len() as u64,
            });
        }
        // The tables come whole: the base's are dropped.
        self.dedup = Default::default();
        self.dedup_by_index = Default::default();
        self.addresses = Default::default();
        self.leases = Default::default();
        self.key_leases = Default::default();
        self.restore_tables(&mut records, SNAPSHOT_VERSION, dedup_count, true)?;
        // What a restore tracks from: this state.
        self.changed = ChangedKeys::default();
        Ok(())
    }

    /// One `Key` or `Tombstone` record of a delta, keys strictly ascending
    /// (`last`: the one before).
    fn apply_delta_key(
        &mut self,
        (record, decoded): (u64, Record),
        last: &mut Option<Key>,
    ) -> Result<(), SnapshotError> {
        let (key, stored) = match decoded {
            Record::Key {
                key,
                value,
                revision,
            } => {
                self.check_restored_index(record, revision)?;
                let stored = StoredValue {
                    value: value.into(),
                    revision,
                };
                (key, Some(stored))
            }
            Record::Tombstone { key } => (key, None),
            _ => {
                let expected = "key or tombstone";
                return Err(SnapshotError::UnexpectedRecord { record, expected });
            }
        };
        if last.as_deref().is_some_and(|last| key <= last) {
            return Err(SnapshotError::OutOfOrder { record });
        }
        let key = Key::from(key);
        *last = Some(key.clone());
        if let Some((old_key, old)) = self.data.remove_with_key(&key) {
            self.live_bytes -= (old_key.len() + old.value.len()) as u64;
        }
        if let Some(stored) = stored {
            self.live_bytes += (key.len() + stored.value.len()) as u64;
            self.data.insert(key, stored);
        }
        Ok(())
    }

    /// Reads a whole snapshot and the deltas that follow it in the same
    /// stream, up to the stream's end (what a follower is sent of a chain):
    /// the state, and how many deltas there were. Bytes after the whole
    /// snapshot that are not a delta on top of it are refused.
    pub fn read_snapshot_stream(
        r: &mut impl Read,
    ) -> Result<(KvStateMachine, usize), SnapshotError> {
        let mut state = Self::read_snapshot(r)?;
        let mut deltas = 0;
        loop {
            let mut first = [0u8; 1];
            let read = loop {
                match r.read(&mut first) {
                    Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
                    other => break other?,
                }
            };
            if read == 0 {
                return Ok((state, deltas));
            }
            state.apply_delta_snapshot(&mut (&first[..]).chain(&mut *r))?;
            deltas += 1;
        }
    }

    /// Reads a whole snapshot and the deltas on top of it, in order: the
    /// state at the last delta's index.
    pub fn read_snapshot_chain<R: Read>(
        whole: &mut R,
        deltas: &mut [R],
    ) -> Result<KvStateMachine, SnapshotError> {
        let mut state = Self::read_snapshot(whole)?;
        for delta in deltas {
            state.apply_delta_snapshot(delta)?;
        }
        Ok(state)
    }
}

/// One input of a merged restore: the key records of a whole snapshot or
/// of a delta, read one ahead.
struct KeySource<'r, R: Read> {
    records: RecordReader<'r, R>,
    /// The index of the state this input ends at: no revision above it.
    applied: u64,
    /// Key records not read yet.
    remaining: u64,
    /// The next key and its value (None: a tombstone), read ahead.
    head: Option<(Key, Option<StoredValue>)>,
    /// Whether tombstones may appear (a delta).
    delta: bool,
    /// The key read last, for the order check.
    last: Option<Key>,
}

impl<R: Read> KeySource<'_, R> {
    /// Reads the next key record into `head` (None once they are all read),
    /// checking order and revision.
    fn advance(&mut self) -> Result<(), SnapshotError> {
        if self.remaining == 0 {
            self.head = None;
            return Ok(());
        }
        self.remaining -= 1;
        let (record, decoded) = self.records.next()?;
        let (key, stored) = match decoded {
            Record::Key {
                key,
                value,
                revision,
            } => {
                if revision == 0 || revision > self.applied {
                    return Err(SnapshotError::IndexOutOfRange {
                        record,
                        index: revision,
                        applied: self.applied,
                    });
                }
                let stored = StoredValue {
                    value: value.into(),
                    revision,
                };
                (key, Some(stored))
            }
            Record::Tombstone { key } if self.delta => (key, None),
            _ => {
                let expected = if self.delta {
                    "key or tombstone"
                } else {
                    "key"
                };
                return Err(SnapshotError::UnexpectedRecord { record, expected });
            }
        };
        if self.last.as_deref().is_some_and(|last| key <= last) {
            return Err(SnapshotError::OutOfOrder { record });
        }
        let key = Key::from(key);
        self.last = Some(key.clone());
        self.head = Some((key, stored));
        Ok(())
    }

    /// Reads the records after the keys up to and with the trailer, for an
    /// input whose tables a newer delta replaces: their frames are checked
    /// and their count, not their contents.
    fn skip_tables(&mut self) -> Result<(), SnapshotError> {
        loop {
            let actual = self.records.records_read();
            match self.records.next()? {
                (_, Record::Trailer { record_count }) if record_count == actual => return Ok(()),
                (_, Record::Trailer { record_count }) => {
                    return Err(SnapshotError::RecordCountMismatch {
                        trailer: record_count,
                        actual,
                    });
                }
                (_, Record::Dedup { .. } | Record::Address { .. })
                | (_, Record::Lease { .. } | Record::LeaseKey { .. }) => {}
                (record, _) => {
                    let expected = "dedup, address, lease, lease key or trailer";
                    return Err(SnapshotError::UnexpectedRecord { record, expected });
                }
            }
        }
    }
}

/// What a snapshot's or a delta's first records say.
pub(super) struct Head {
    pub(super) applied: u64,
    pub(super) dedup_limit: u64,
    pub(super) key_count: u64,
    pub(super) dedup_count: u64,
    /// A delta's base and number of changed keys.
    pub(super) base: Option<(u64, u64)>,
}

/// Reads the header and meta record (and a delta's base record) of a
/// whole snapshot or a delta, checking magic, version and the dedup count.
pub(super) fn read_head<R: Read>(
    r: &mut R,
    delta: bool,
) -> Result<(u32, Head, RecordReader<'_, R>), SnapshotError> {
    let mut header = [0u8; 12];
    read_exact_or(r, &mut header, SnapshotError::TruncatedHeader)?;
    let magic: [u8; 8] = header[0..8].try_into().expect("8 bytes");
    let version = u32::from_le_bytes(header[8..12].try_into().expect("4 bytes"));
    let (expected_magic, versions) = if delta {
        (DELTA_MAGIC, DELTA_VERSION..=DELTA_VERSION)
    } else {
        (super::records::SNAPSHOT_MAGIC, 1..=SNAPSHOT_VERSION)
    };
    if magic != expected_magic {
        return Err(SnapshotError::BadMagic { found: magic });
    }
    if !versions.contains(&version) {
        return Err(SnapshotError::BadVersion {
            found: version,
            supported: *versions.end(),
        });
    }
    let mut records = RecordReader::new(r);
    let mut head = match records.next()? {
        (
            _,
            Record::Meta {
                applied_index,
                dedup_limit,
                key_count,
                dedup_count,
            },
        ) => Head {
            applied: applied_index,
            dedup_limit,
            key_count,
            dedup_count,
            base: None,
        },
        (record, _) => {
            let expected = "meta";
            return Err(SnapshotError::UnexpectedRecord { record, expected });
        }
    };
    if head.dedup_count > head.dedup_limit {
        return Err(SnapshotError::DedupOverLimit {
            count: head.dedup_count,
            limit: head.dedup_limit,
        });
    }
    if delta {
        match records.next()? {
            (
                _,
                Record::DeltaBase {
                    base_index,
                    changed_count,
                },
            ) => head.base = Some((base_index, changed_count)),
            (record, _) => {
                let expected = "delta base";
                return Err(SnapshotError::UnexpectedRecord { record, expected });
            }
        }
    }
    Ok((version, head, records))
}

impl KvStateMachine {
    /// Restores the state at the last of `deltas` from a whole snapshot and
    /// the deltas on top of it, each read from its own stream, in one pass:
    /// their keys are merged in key order (the newest input's entry for a
    /// key wins, a tombstone drops it) and the map is built as from one
    /// whole snapshot, so a chain costs what its bytes do, not a random
    /// update per changed key. The tables come from the newest input.
    /// Gives the same state as [`Self::read_snapshot_chain`].
    pub fn restore_merged<R: Read>(
        whole: &mut R,
        deltas: &mut [R],
    ) -> Result<KvStateMachine, SnapshotError> {
        let (whole_version, whole_head, whole_records) = read_head(whole, false)?;
        let mut version = whole_version;
        let mut previous = whole_head.applied;
        let mut newest = (
            whole_head.dedup_limit,
            whole_head.key_count,
            whole_head.dedup_count,
        );
        let mut sources = vec![KeySource {
            records: whole_records,
            applied: whole_head.applied,
            remaining: whole_head.key_count,
            head: None,
            delta: false,
            last: None,
        }];
        for delta in deltas.iter_mut() {
            let (_, head, records) = read_head(delta, true)?;
            let (base, changed_count) = head.base.expect("a delta's head has its base");
            if base != previous {
                return Err(SnapshotError::DeltaBaseMismatch {
                    expected: previous,
                    found: base,
                });
            }
            if head.applied <= base {
                return Err(SnapshotError::DeltaGoesBack {
                    base,
                    applied: head.applied,
                });
            }
            previous = head.applied;
            version = SNAPSHOT_VERSION;
            newest = (head.dedup_limit, head.key_count, head.dedup_count);
            sources.push(KeySource {
                records,
                applied: head.applied,
                remaining: changed_count,
                head: None,
                delta: true,
                last: None,
            });
        }
        let (dedup_limit, key_count, dedup_count) = newest;
        let mut machine =
            KvStateMachine::with_dedup_limit(usize::try_from(dedup_limit).unwrap_or(usize::MAX));
        machine.applied_index = previous;
        for source in &mut sources {
            source.advance()?;
        }
        let mut built = 0u64;
        let mut live_bytes = 0u64;
        // The inputs whose head is the smallest key, oldest first; reused.
        let mut holders: Vec<usize> = Vec::with_capacity(sources.len());
        let data = super::snapshot::build_in_order(|| {
            loop {
                // One pass finds the smallest key at the head of any input
                // and every input that holds it (a chain of a bulk load in
                // random order interleaves its keys across all its files,
                // so this runs once per key with every input in play).
                holders.clear();
                let mut smallest: Option<&Key> = None;
                for (i, source) in sources.iter().enumerate() {
                    let Some((key, _)) = &source.head else {
                        continue;
                    };
                    match smallest.map(|smallest| key.cmp(smallest)) {
                        Some(std::cmp::Ordering::Greater) => {}
                        Some(std::cmp::Ordering::Equal) => holders.push(i),
                        None | Some(std::cmp::Ordering::Less) => {
                            smallest = Some(key);
                            holders.clear();
                            holders.push(i);
                        }
                    }
                }
                if holders.is_empty() {
                    return Ok(None);
                }
                // The newest input that holds it decides.
                let mut winner = None;
                for &i in &holders {
                    winner = sources[i].head.take();
                    sources[i].advance()?;
                }
                if let Some((key, Some(stored))) = winner {
                    built += 1;
                    live_bytes += (key.len() + stored.value.len()) as u64;
                    return Ok(Some((key, stored)));
                }
            }
        })?;
        if built != key_count {
            return Err(SnapshotError::KeyCountMismatch {
                claimed: key_count,
                actual: built,
            });
        }
        machine.data = data;
        machine.live_bytes = live_bytes;
        let (newest_source, older) = sources.split_last_mut().expect("the whole snapshot");
        for source in older {
            source.skip_tables()?;
        }
        let delta = newest_source.delta;
        machine.restore_tables(&mut newest_source.records, version, dedup_count, delta)?;
        Ok(machine)
    }
}
