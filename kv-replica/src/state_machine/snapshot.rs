//! Writing the whole state machine as a snapshot and restoring it, record
//! by record, checking every record against the ones before it.

use super::records::{
    Record, RecordReader, SNAPSHOT_MAGIC, SNAPSHOT_VERSION, SNAPSHOT_VERSION_WITHOUT_LEASES,
    SnapshotError, write_record,
};
use super::{DedupEntry, Key, KvStateMachine, StoredValue};
use std::borrow::Cow;
use std::io::{self, Read, Write};
use std::sync::Arc;

/// Key records from which a restore builds the map on a second thread
/// (lower in unit tests, so that they cover both ways).
#[cfg(not(test))]
const PARALLEL_RESTORE_KEYS: u64 = 100_000;
#[cfg(test)]
const PARALLEL_RESTORE_KEYS: u64 = 1_000;
/// Keys handed to that thread at once.
const RESTORE_BATCH: usize = 4096;

/// Keys whose values the snapshot writer loads ahead of encoding them.
const PREFETCH_WINDOW: usize = 16;

/// Reads the first byte of each value in `window`, so that the cache
/// misses on them are in flight together rather than one after another.
/// Each value is an allocation of its own, scattered over the heap once
/// keys are overwritten in a random order: with 10M keys after 5M random
/// puts, writing a snapshot to `io::sink` took 2.1-2.4 s without this and
/// 1.3 s with it (windows of 4, 8, 32, 64: 1.9, 1.5, 1.5, 1.5 s;
/// `examples/snapshot_write_time.rs`).
fn touch_values(window: &[(&Key, &StoredValue)]) {
    let first_bytes = window
        .iter()
        .map(|(_, stored)| stored.value.as_bytes().first().copied().unwrap_or(0) as u64)
        .fold(0u64, u64::wrapping_add);
    std::hint::black_box(first_bytes);
}

impl KvStateMachine {
    /// Streams the whole state (applied index, every key with its value and
    /// revision, the dedup table) to `w`, one record at a time. Fails with
    /// `InvalidData` if a single record would exceed
    /// [`MAX_SNAPSHOT_RECORD_BYTES`] (a value far above any sane limit).
    pub fn write_snapshot(&self, w: &mut impl Write) -> io::Result<()> {
        w.write_all(&SNAPSHOT_MAGIC)?;
        let version = if self.leases.is_empty() {
            SNAPSHOT_VERSION_WITHOUT_LEASES
        } else {
            SNAPSHOT_VERSION
        };
        w.write_all(&version.to_le_bytes())?;
        let mut buffer = Vec::new();
        let meta = Record::Meta {
            applied_index: self.applied_index,
            dedup_limit: self.dedup_limit as u64,
            key_count: self.data.len() as u64,
            dedup_count: self.dedup.len() as u64,
        };
        write_record(w, &mut buffer, &meta)?;
        let mut keys = self.data.iter();
        let mut window = Vec::with_capacity(PREFETCH_WINDOW);
        loop {
            window.clear();
            window.extend(keys.by_ref().take(PREFETCH_WINDOW));
            if window.is_empty() {
                break;
            }
            touch_values(&window);
            for (key, stored) in &window {
                let record = Record::Key {
                    key,
                    value: &stored.value,
                    revision: stored.revision,
                };
                write_record(w, &mut buffer, &record)?;
            }
        }
        self.write_tables(w, &mut buffer, 1 + self.data.len() as u64)
    }

    /// Writes what every snapshot, whole or delta, carries whole: the dedup
    /// entries, the address book, the leases and their keys, then the
    /// trailer, which counts `records_before` (the records written before
    /// these) with them.
    pub(super) fn write_tables(
        &self,
        w: &mut impl Write,
        buffer: &mut Vec<u8>,
        records_before: u64,
    ) -> io::Result<()> {
        for (client_id, entry) in &self.dedup {
            let record = Record::Dedup {
                client_id,
                seq: entry.seq,
                index: entry.index,
                result: Cow::Borrowed(&entry.result),
            };
            write_record(w, buffer, &record)?;
        }
        for (name, url) in &self.addresses {
            write_record(w, buffer, &Record::Address { name, url })?;
        }
        for (id, lease) in &self.leases {
            let record = Record::Lease {
                id: *id,
                ttl_ms: lease.ttl_ms,
            };
            write_record(w, buffer, &record)?;
        }
        for (id, lease) in &self.leases {
            for key in &lease.keys {
                let record = Record::LeaseKey { lease: *id, key };
                write_record(w, buffer, &record)?;
            }
        }
        let record_count = records_before
            + self.dedup.len() as u64
            + self.addresses.len() as u64
            + self.leases.len() as u64
            + self.key_leases.len() as u64;
        write_record(w, buffer, &Record::Trailer { record_count })
    }

    /// Reads a snapshot written by [`KvStateMachine::write_snapshot`],
    /// checking every record, and stops right after its trailer. The next
    /// entry to apply is `applied_index() + 1`.
    pub fn read_snapshot(r: &mut impl Read) -> Result<KvStateMachine, SnapshotError> {
        let (version, head, mut records) = super::delta::read_head(r, false)?;
        let super::delta::Head {
            applied,
            dedup_limit,
            key_count,
            dedup_count,
            ..
        } = head;
        // A limit beyond usize (only on 32-bit targets) can never be reached.
        let dedup_limit = usize::try_from(dedup_limit).unwrap_or(usize::MAX);
        let mut machine = KvStateMachine::with_dedup_limit(dedup_limit);
        machine.applied_index = applied;
        machine.restore_keys(&mut records, key_count)?;
        machine.restore_tables(&mut records, version, dedup_count, false)?;
        Ok(machine)
    }

    /// Reads what [`Self::write_tables`] wrote, up to and with the trailer,
    /// into tables that are empty. `version` is the format's (a delta's
    /// tables are those of version 3); `delta`: a delta, whose tables may
    /// be those of a state without leases whatever the version.
    pub(super) fn restore_tables<R: Read>(
        &mut self,
        records: &mut RecordReader<'_, R>,
        version: u32,
        dedup_count: u64,
        delta: bool,
    ) -> Result<(), SnapshotError> {
        for _ in 0..dedup_count {
            self.restore_dedup_entry(records.next()?)?;
        }

        // Records after the dedup entries come in phases: addresses, then
        // leases, then lease keys; a record of an earlier phase after a
        // later one is refused.
        let mut phase = 0;
        let mut last_lease_key: Option<(u64, Key)> = None;
        loop {
            let actual = records.records_read();
            match records.next()? {
                // Version 3 is written only for a state with leases.
                (record, Record::Trailer { .. })
                    if version >= 3 && !delta && self.leases.is_empty() =>
                {
                    let expected = "lease";
                    return Err(SnapshotError::UnexpectedRecord { record, expected });
                }
                (_, Record::Trailer { record_count }) if record_count == actual => {
                    return Ok(());
                }
                (_, Record::Trailer { record_count }) => {
                    return Err(SnapshotError::RecordCountMismatch {
                        trailer: record_count,
                        actual,
                    });
                }
                (record, Record::Address { name, url }) if version >= 2 && phase == 0 => {
                    if let Some((last, _)) = self.addresses.last_key_value()
                        && name <= last.as_str()
                    {
                        return Err(SnapshotError::OutOfOrder { record });
                    }
                    self.addresses.insert(name.to_owned(), url.to_owned());
                }
                (record, Record::Lease { id, ttl_ms }) if version >= 3 && phase <= 1 => {
                    phase = 1;
                    self.restore_lease(record, id, ttl_ms)?;
                }
                (record, Record::LeaseKey { lease, key }) if version >= 3 => {
                    phase = 2;
                    self.restore_lease_key(record, lease, key, &mut last_lease_key)?;
                }
                (record, _) => {
                    let expected = match version {
                        1 => "trailer",
                        2 => "address or trailer",
                        _ => "address, lease, lease key or trailer, in that order",
                    };
                    return Err(SnapshotError::UnexpectedRecord { record, expected });
                }
            }
        }
    }

    /// Adds one `Lease` record during a restore: ids ascending, each the
    /// index of a real entry.
    fn restore_lease(&mut self, record: u64, id: u64, ttl_ms: u64) -> Result<(), SnapshotError> {
        self.check_restored_index(record, id)?;
        if !(super::MIN_TTL_MS..=super::MAX_TTL_MS).contains(&ttl_ms) {
            return Err(SnapshotError::BadLeaseTtl {
                record,
                lease: id,
                ttl_ms,
            });
        }
        if self.leases.get_max().is_some_and(|(last, _)| id <= *last) {
            return Err(SnapshotError::OutOfOrder { record });
        }
        let lease = super::lease::Lease {
            ttl_ms,
            keys: imbl::OrdSet::new(),
        };
        self.leases.insert(id, lease);
        Ok(())
    }

    /// Adds one `LeaseKey` record during a restore: (lease, key) ascending,
    /// the lease known, the key present and attached to no other lease.
    fn restore_lease_key(
        &mut self,
        record: u64,
        lease: u64,
        key: &str,
        last: &mut Option<(u64, Key)>,
    ) -> Result<(), SnapshotError> {
        let bad = || SnapshotError::BadLeaseKey {
            record,
            lease,
            key: key.to_owned(),
        };
        if !self.data.contains_key(key) || self.key_leases.contains_key(key) {
            return Err(bad());
        }
        let Some(entry) = self.leases.get_mut(&lease) else {
            return Err(bad());
        };
        if let Some((last_lease, last_key)) = last
            && (lease, key) <= (*last_lease, &**last_key)
        {
            return Err(SnapshotError::OutOfOrder { record });
        }
        let key = Key::from(key);
        *last = Some((lease, key.clone()));
        entry.keys.insert(key.clone());
        self.key_leases.insert(key, lease);
        Ok(())
    }

    /// Restores the `Key` records. From [`PARALLEL_RESTORE_KEYS`] keys on,
    /// a second thread builds the map while this one reads, checks and
    /// decodes the records: inserting into the map is about half of a
    /// restore, and a restart with 10 million keys has to serve in seconds
    /// (issue 12). The result is the same either way.
    fn restore_keys<R: Read>(
        &mut self,
        records: &mut RecordReader<'_, R>,
        key_count: u64,
    ) -> Result<(), SnapshotError> {
        let mut last: Option<Key> = None;
        if key_count < PARALLEL_RESTORE_KEYS {
            return self.restore_keys_here(records, key_count, &mut last);
        }
        let mut remaining = key_count;
        let data = build_in_order(|| {
            if remaining == 0 {
                return Ok(None);
            }
            remaining -= 1;
            self.restore_key(records.next()?, &mut last).map(Some)
        })?;
        self.data = data;
        Ok(())
    }

    /// [`Self::restore_keys`] on this thread alone.
    fn restore_keys_here<R: Read>(
        &mut self,
        records: &mut RecordReader<'_, R>,
        key_count: u64,
        last: &mut Option<Key>,
    ) -> Result<(), SnapshotError> {
        for _ in 0..key_count {
            let (key, stored) = self.restore_key(records.next()?, last)?;
            self.data.insert(key, stored);
        }
        Ok(())
    }

    /// Checks and decodes one `Key` record of a restore: keys strictly
    /// ascending (`last`: the one before), revision a real index.
    fn restore_key(
        &mut self,
        (record, decoded): (u64, Record),
        last: &mut Option<Key>,
    ) -> Result<(Key, StoredValue), SnapshotError> {
        let Record::Key {
            key,
            value,
            revision,
        } = decoded
        else {
            let expected = "key";
            return Err(SnapshotError::UnexpectedRecord { record, expected });
        };
        self.check_restored_index(record, revision)?;
        if last.as_deref().is_some_and(|last| key <= last) {
            return Err(SnapshotError::OutOfOrder { record });
        }
        let stored = StoredValue {
            value: value.into(),
            revision,
        };
        self.live_bytes += (key.len() + value.len()) as u64;
        let key = Key::from(key);
        *last = Some(key.clone());
        Ok((key, stored))
    }

    /// Adds one `Dedup` record during a restore, checking order and index.
    fn restore_dedup_entry(
        &mut self,
        (record, decoded): (u64, Record),
    ) -> Result<(), SnapshotError> {
        let Record::Dedup {
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
        if let Some((last, _)) = self.dedup.get_max()
            && client_id <= &**last
        {
            return Err(SnapshotError::OutOfOrder { record });
        }
        let client_id = Key::from(client_id);
        if self
            .dedup_by_index
            .insert((index, client_id.clone()))
            .is_some()
        {
            return Err(SnapshotError::DuplicateDedupIndex { record, index });
        }
        let entry = DedupEntry {
            seq,
            index,
            result: result.into_owned(),
        };
        self.dedup.insert(client_id, Arc::new(entry));
        Ok(())
    }

    /// A revision or dedup index in a snapshot must be a real entry at or
    /// before the snapshot's applied index.
    pub(super) fn check_restored_index(
        &self,
        record: u64,
        index: u64,
    ) -> Result<(), SnapshotError> {
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

    /// Restores from a stream that must end with the snapshot: bytes after
    /// it are refused like a corrupt snapshot.
    pub fn read_whole_snapshot(r: &mut impl Read) -> Result<KvStateMachine, SnapshotError> {
        let machine = Self::read_snapshot(r)?;
        let mut rest = Vec::new();
        r.take(64).read_to_end(&mut rest)?;
        if !rest.is_empty() {
            return Err(SnapshotError::TrailingBytes { count: rest.len() });
        }
        Ok(machine)
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

/// Builds a map from entries that `next` yields in strictly ascending key
/// order, on a second thread while `next` reads (as a whole snapshot's
/// restore does), or here if no thread is to be had.
pub(super) fn build_in_order(
    mut next: impl FnMut() -> Result<Option<(Key, StoredValue)>, SnapshotError>,
) -> Result<imbl::OrdMap<Key, StoredValue>, SnapshotError> {
    std::thread::scope(|scope| {
        let (batches, received) = std::sync::mpsc::sync_channel::<Vec<_>>(4);
        let builder = std::thread::Builder::new()
            .name("snapshot-restore".into())
            .spawn_scoped(scope, move || {
                let mut data = imbl::OrdMap::new();
                for batch in received {
                    for (key, stored) in batch {
                        data.insert(key, stored);
                    }
                }
                data
            });
        let Ok(builder) = builder else {
            let mut data = imbl::OrdMap::new();
            while let Some((key, stored)) = next()? {
                data.insert(key, stored);
            }
            return Ok(data);
        };
        let mut read = || -> Result<(), SnapshotError> {
            let mut batch = Vec::new();
            while let Some(entry) = next()? {
                batch.push(entry);
                if batch.len() == RESTORE_BATCH && batches.send(std::mem::take(&mut batch)).is_err()
                {
                    break;
                }
            }
            let _ = batches.send(batch);
            Ok(())
        };
        let read = read();
        drop(batches);
        let data = builder
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
        read?;
        Ok(data)
    })
}
