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
use std::collections::HashSet;
use std::io::{self, Read, Write};

/// Below this many keys a delta is always tracked, whatever the state's
/// size (a small state's delta costs little either way).
pub(super) const MIN_TRACKED: usize = 4096;

/// The keys put or deleted since the last [`KvStateMachine::take_changed_keys`].
///
/// Not state: neither in snapshots nor in the digest, and a clone (a
/// capture for a snapshot) tracks nothing, so that capturing stays O(1).
/// Once more than half the keys changed, a delta would cost about what a
/// whole snapshot does: tracking stops (`None`) and the next snapshot must
/// be whole.
#[derive(Debug)]
pub(super) struct ChangedKeys(Option<HashSet<Key>>);

impl Default for ChangedKeys {
    fn default() -> Self {
        ChangedKeys(Some(HashSet::new()))
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
        if keys.len() >= MIN_TRACKED.max(key_count / 2) {
            self.0 = None;
            return;
        }
        keys.insert(key.clone());
    }
}

impl KvStateMachine {
    /// The keys put or deleted since the last call (or since this state
    /// was created or restored), and tracking starts afresh. None if they
    /// were too many to track: the next snapshot must then be whole.
    pub fn take_changed_keys(&mut self) -> Option<HashSet<Key>> {
        std::mem::take(&mut self.changed).0
    }

    /// Writes the changes from the state at `base_index` (whose changed
    /// keys since are `changed`) to this one, as a delta snapshot.
    pub fn write_delta_snapshot(
        &self,
        base_index: u64,
        changed: HashSet<Key>,
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
        let mut keys: Vec<Key> = changed.into_iter().collect();
        keys.sort_unstable();
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
        let mut header = [0u8; 12];
        read_exact_or(r, &mut header, SnapshotError::TruncatedHeader)?;
        let magic: [u8; 8] = header[0..8].try_into().expect("8 bytes");
        if magic != DELTA_MAGIC {
            return Err(SnapshotError::BadMagic { found: magic });
        }
        let version = u32::from_le_bytes(header[8..12].try_into().expect("4 bytes"));
        if version != DELTA_VERSION {
            return Err(SnapshotError::BadVersion {
                found: version,
                supported: DELTA_VERSION,
            });
        }
        let mut records = RecordReader::new(r);
        let (applied, dedup_limit, key_count, dedup_count) = match records.next()? {
            (
                _,
                Record::Meta {
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
        let changed_count = match records.next()? {
            (
                _,
                Record::DeltaBase {
                    base_index,
                    changed_count,
                },
            ) => {
                if base_index != self.applied_index {
                    return Err(SnapshotError::DeltaBaseMismatch {
                        expected: self.applied_index,
                        found: base_index,
                    });
                }
                changed_count
            }
            (record, _) => {
                let expected = "delta base";
                return Err(SnapshotError::UnexpectedRecord { record, expected });
            }
        };
        if applied <= self.applied_index {
            return Err(SnapshotError::DeltaGoesBack {
                base: self.applied_index,
                applied,
            });
        }
        if dedup_count > dedup_limit {
            return Err(SnapshotError::DedupOverLimit {
                count: dedup_count,
                limit: dedup_limit,
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
