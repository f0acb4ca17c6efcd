//! Writing the whole state machine as a snapshot and restoring it, record
//! by record, checking every record against the ones before it.

use super::records::{
    Record, RecordReader, SNAPSHOT_MAGIC, SNAPSHOT_VERSION, SnapshotError, read_exact_or,
    write_record,
};
use super::{DedupEntry, KvStateMachine, StoredValue};
use std::borrow::Cow;
use std::io::{self, Read, Write};
use std::sync::Arc;

impl KvStateMachine {
    /// Streams the whole state (applied index, every key with its value and
    /// revision, the dedup table) to `w`, one record at a time. Fails with
    /// `InvalidData` if a single record would exceed
    /// [`MAX_SNAPSHOT_RECORD_BYTES`] (a value far above any sane limit).
    pub fn write_snapshot(&self, w: &mut impl Write) -> io::Result<()> {
        w.write_all(&SNAPSHOT_MAGIC)?;
        w.write_all(&SNAPSHOT_VERSION.to_le_bytes())?;
        let mut buffer = Vec::new();
        let meta = Record::Meta {
            applied_index: self.applied_index,
            dedup_limit: self.dedup_limit as u64,
            key_count: self.data.len() as u64,
            dedup_count: self.dedup.len() as u64,
        };
        write_record(w, &mut buffer, &meta)?;
        for (key, stored) in &self.data {
            let record = Record::Key {
                key,
                value: &stored.value,
                revision: stored.revision,
            };
            write_record(w, &mut buffer, &record)?;
        }
        for (client_id, entry) in &self.dedup {
            let record = Record::Dedup {
                client_id,
                seq: entry.seq,
                index: entry.index,
                result: Cow::Borrowed(&entry.result),
            };
            write_record(w, &mut buffer, &record)?;
        }
        for (name, url) in &self.addresses {
            write_record(w, &mut buffer, &Record::Address { name, url })?;
        }
        let record_count =
            1 + self.data.len() as u64 + self.dedup.len() as u64 + self.addresses.len() as u64;
        write_record(w, &mut buffer, &Record::Trailer { record_count })
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
            let actual = records.records_read();
            match records.next()? {
                (_, Record::Trailer { record_count }) if record_count == actual => {
                    return Ok(machine);
                }
                (_, Record::Trailer { record_count }) => {
                    return Err(SnapshotError::RecordCountMismatch {
                        trailer: record_count,
                        actual,
                    });
                }
                (record, Record::Address { name, url }) if version >= 2 => {
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
    fn restore_key(&mut self, (record, decoded): (u64, Record)) -> Result<(), SnapshotError> {
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
        if let Some((last, _)) = self.data.get_max()
            && key <= &**last
        {
            return Err(SnapshotError::OutOfOrder { record });
        }
        let stored = StoredValue {
            value: value.into(),
            revision,
        };
        self.live_bytes += (key.len() + value.len()) as u64;
        self.data.insert(key.into(), stored);
        Ok(())
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
        let client_id: Arc<str> = client_id.into();
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
