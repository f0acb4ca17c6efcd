//! [`Durable`] on the real write-ahead log: the disk the driver's replica
//! writes to, with fsync timing for the metrics.

use crate::metrics::Metrics;
use crate::storage::{Storage, StorageError, StorageOptions, open_snapshot, read_snapshot_range};
use bytes::Bytes;
use kv_replica::replica::{Durable, Recovered};
use raft_core::{Entry, HardState, SnapshotMeta};
use std::io::{Read, Write};
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

/// The WAL and snapshot files of one node.
pub struct WalDisk {
    storage: Storage,
    metrics: Arc<Metrics>,
}

impl WalDisk {
    /// Opens (or creates) the data directory and recovers what it holds.
    pub fn open(dir: &Path, metrics: Arc<Metrics>) -> Result<(WalDisk, Recovered), StorageError> {
        let (storage, recovered) = Storage::open(dir, StorageOptions::default())?;
        let snapshot = match recovered.snapshot {
            Some((_, path)) => {
                let (meta, mut reader) = open_snapshot(&path)?;
                let mut data = Vec::with_capacity(
                    usize::try_from(reader.remaining_bytes()).unwrap_or_default(),
                );
                reader
                    .read_to_end(&mut data)
                    .map_err(|source| StorageError::Io {
                        op: "read snapshot",
                        path: path.clone(),
                        source,
                    })?;
                Some((meta, Bytes::from(data)))
            }
            None => None,
        };
        if let Some((_, data)) = &snapshot {
            metrics.snapshot_bytes.set(data.len() as u64);
        }
        let disk = WalDisk { storage, metrics };
        let recovered = Recovered {
            hard_state: recovered.hard_state,
            snapshot,
            entries: recovered.entries,
            damaged_up_to_term: recovered.damaged_up_to_term,
        };
        Ok((disk, recovered))
    }
}

impl Durable for WalDisk {
    type Error = StorageError;

    fn append(&mut self, entries: &[Entry]) -> Result<(), StorageError> {
        self.storage.append(entries)
    }

    fn set_hard_state(&mut self, hard_state: &HardState) -> Result<(), StorageError> {
        self.storage.set_hard_state(hard_state)
    }

    fn sync(&mut self) -> Result<(), StorageError> {
        let started = Instant::now();
        let stats = self.storage.sync()?;
        self.metrics.fsync.observe(started.elapsed());
        self.metrics.fsync_bytes.inc_by(stats.bytes);
        Ok(())
    }

    fn save_snapshot(&mut self, meta: &SnapshotMeta, data: &[u8]) -> Result<(), StorageError> {
        let started = Instant::now();
        let info = self
            .storage
            .save_snapshot(meta, |w: &mut dyn Write| w.write_all(data))?;
        let elapsed = started.elapsed();
        self.metrics.snapshot_save.observe(elapsed);
        tracing::info!(
            index = %meta.index,
            bytes = info.file_bytes,
            segments_removed = info.segments_removed,
            ms = elapsed.as_secs_f64() * 1e3,
            "snapshot saved"
        );
        self.metrics.snapshot_index.set(meta.index.0);
        self.metrics.snapshot_bytes.set(data.len() as u64);
        self.metrics.snapshots_taken.inc();
        Ok(())
    }

    fn snapshot_can_wait(error: &StorageError) -> bool {
        matches!(error, StorageError::SnapshotNotWritten { .. })
    }

    fn install_snapshot(&mut self, meta: &SnapshotMeta, data: &[u8]) -> Result<(), StorageError> {
        self.storage.install_snapshot(meta, data)?;
        tracing::info!(index = %meta.index, bytes = data.len(), "snapshot installed from the leader");
        self.metrics.snapshot_index.set(meta.index.0);
        self.metrics.snapshot_bytes.set(data.len() as u64);
        Ok(())
    }

    fn snapshot_chunk(
        &mut self,
        meta: &SnapshotMeta,
        offset: u64,
        len: u64,
    ) -> Result<Bytes, StorageError> {
        // The replica checked that `meta` is the stored snapshot.
        let _ = meta;
        let Some((_, path)) = self.storage.snapshot_path() else {
            return Ok(Bytes::new());
        };
        Ok(Bytes::from(read_snapshot_range(&path, offset, len)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kv_replica::replica::Replica;
    use raft_core::{Config, Input, Membership, NodeId};

    /// Issue 15, item 6: a snapshot whose file cannot be written (here its
    /// directory is gone; on a full disk, ENOSPC) leaves the replica
    /// running with its log, and a later attempt succeeds.
    #[test]
    fn a_snapshot_that_cannot_be_written_does_not_stop_the_replica() {
        let dir = tempfile::tempdir().unwrap();
        let metrics = Arc::new(Metrics::default());
        let (disk, recovered) = WalDisk::open(dir.path(), metrics).unwrap();
        let id = NodeId(1);
        let mut replica =
            Replica::open(Config::new(id), recovered, Membership::new([id]), disk, 100).unwrap();
        replica.snapshot_every = 2;
        replica.step(Input::Campaign).unwrap();
        for _ in 0..10 {
            replica.process_ready(|_| {}).unwrap();
        }
        let before = replica.last_snapshot_index();
        std::fs::remove_dir_all(dir.path().join("snapshots")).unwrap();
        for round in 0..20u8 {
            replica
                .step(Input::Propose {
                    data: kv_replica::command::Command {
                        request: None,
                        client: None,
                        op: kv_replica::command::Op::Put {
                            key: format!("k{round}"),
                            value: "v".into(),
                        },
                    }
                    .encode(),
                })
                .unwrap();
            replica
                .process_ready(|_| {})
                .expect("the replica keeps going without its snapshot");
        }
        for _ in 0..10 {
            replica.process_ready(|_| {}).unwrap();
        }
        assert_eq!(replica.last_snapshot_index(), before, "no snapshot taken");
        assert!(replica.node.applied_index().0 >= before.0 + 20);
        std::fs::create_dir(dir.path().join("snapshots")).unwrap();
        let taken = replica.take_snapshot().unwrap();
        assert!(taken.is_some(), "a later attempt succeeds");
    }

    /// Issue 15: a data directory whose acknowledged records are damaged
    /// starts the replica's raft-core in repair mode, above the term it had;
    /// as the only voter it refuses to start (nobody could repair it).
    #[test]
    fn damage_to_acknowledged_records_starts_the_replica_in_repair_mode() {
        use kv_replica::replica::ReplicaError;
        use raft_core::{ConfigError, Entry, EntryKind, HardState, LogIndex, Term};
        let dir = tempfile::tempdir().unwrap();
        let hard_state = HardState {
            term: Term(4),
            vote: Some(NodeId(2)),
            commit: LogIndex(1),
        };
        let first_batch_end = {
            let (mut storage, _) = Storage::open(dir.path(), StorageOptions::default()).unwrap();
            let mut end = 0;
            for index in 1..=3 {
                let entry = Entry {
                    term: Term(4),
                    index: LogIndex(index),
                    kind: EntryKind::Normal,
                    data: Bytes::new(),
                };
                storage.append(&[entry]).unwrap();
                storage.set_hard_state(&hard_state).unwrap();
                storage.sync().unwrap();
                if index == 1 {
                    end = dir_segment_bytes(dir.path());
                }
            }
            end
        };
        let segment = std::fs::read_dir(dir.path().join("wal"))
            .unwrap()
            .next()
            .unwrap()
            .unwrap()
            .path();
        let mut raw = std::fs::read(&segment).unwrap();
        raw[first_batch_end as usize + 30] ^= 1;
        std::fs::write(&segment, &raw).unwrap();

        let open = |voters: &[u64]| {
            let (disk, recovered) =
                WalDisk::open(dir.path(), Arc::new(Metrics::default())).unwrap();
            assert_eq!(recovered.damaged_up_to_term, Some(Term(4)));
            let membership = Membership::new(voters.iter().copied().map(NodeId));
            Replica::open(Config::new(NodeId(1)), recovered, membership, disk, 100)
        };
        match open(&[1]) {
            Err(ReplicaError::Config(ConfigError::DamagedVoteNeeded(id))) => {
                assert_eq!(id, NodeId(1))
            }
            Err(other) => panic!("expected DamagedVoteNeeded, got {other}"),
            Ok(_) => panic!("a damaged sole voter started"),
        }
        let replica = open(&[1, 2, 3]).unwrap();
        let status = replica.node.status();
        assert_eq!(status.damaged_up_to_term, Some(Term(4)));
        assert_eq!(status.term, Term(5), "starts above the bound");
        assert_eq!(
            status.last_log_index,
            LogIndex(1),
            "the log ends before the damage"
        );
    }

    fn dir_segment_bytes(dir: &Path) -> u64 {
        std::fs::read_dir(dir.join("wal"))
            .unwrap()
            .map(|e| e.unwrap().metadata().unwrap().len())
            .sum()
    }
}
