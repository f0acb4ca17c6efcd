//! [`Durable`] on the real write-ahead log: the disk the driver's replica
//! writes to, with fsync timing for the metrics.
//!
//! Snapshots are written off the driver thread (issue 12): the driver hands
//! `start_snapshot` an O(1) capture of the state machine; a writer thread
//! prepares the snapshot on the persist stage, streams it into the snapshot
//! file and fsyncs it, and finishes it on the stage (the WAL segments it
//! covers are dropped), so that none of the fsyncs those steps wait for
//! stops the driver's ticks. Its completion comes back through the channel
//! from [`WalDisk::take_snapshot_completions`] to the driver, which then
//! calls `Replica::snapshot_written`: raft-core is told `SnapshotTaken`
//! only once the file is durable, and the older snapshot file (whose chunks
//! the driver may have been sending to a follower until then) is removed
//! after. The writer streams record by record through a buffered file, so
//! no serialized copy of the state is ever held in memory.
//!
//! A snapshot arriving from the leader is staged in a file and decoded by
//! a thread while it arrives (`staged_decoder`), so that the follower's
//! driver only waits for the last chunk's records when it is complete.
//!
//! The WAL itself is written and fsynced by the persist stage
//! (`persist_stage`), a thread that owns the [`Storage`]: each round's
//! writes are queued there and acknowledged later (`Durability::Later`),
//! through the channel from [`WalDisk::take_persist_completions`].

use crate::metrics::Metrics;
use crate::persist_stage::{PersistDone, PersistStage, RoundWrite, StageCaller};
use crate::staged_decoder::StagedDecoder;
use crate::storage::{
    SnapshotInfo, Storage, StorageError, StorageOptions, open_snapshot, read_chain_range_in,
};
use bytes::Bytes;
use kv_replica::replica::{DeltaOf, Durable, Recovered};
use kv_replica::state_machine::{KvStateMachine, SnapshotError};
use raft_core::{ChunkRequest, Durability, Entry, HardState, LogIndex, SnapshotMeta};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// A snapshot the writer thread prepared, wrote and finished on the
/// storage (or failed to), on its way back to the driver.
#[derive(Debug)]
pub struct SnapshotWritten {
    index: LogIndex,
    /// The storage's `finish_snapshot_keeping_older`: None if a snapshot
    /// installed from the leader overtook it.
    /// With the stored chain's files after it.
    outcome: Result<Option<(SnapshotInfo, Vec<PathBuf>)>, StorageError>,
    /// Length of the state inside the file: the size raft-core is told,
    /// whose chunks `snapshot_chunk` serves (the file adds a header and a
    /// footer).
    state_bytes: u64,
    /// How long serializing and fsyncing took, off the driver thread.
    elapsed: Duration,
}

/// The WAL and snapshot files of one node.
pub struct WalDisk {
    /// The thread that owns the storage and writes the WAL.
    stage: PersistStage,
    /// This round's writes, queued to the stage by `persist`.
    round: Vec<RoundWrite>,
    /// The stored snapshot and its chain's files (a whole snapshot, then
    /// the deltas on top of it), as the stage last reported them (only
    /// calls on the driver's behalf change it).
    snapshot: Option<(SnapshotMeta, Vec<PathBuf>)>,
    metrics: Arc<Metrics>,
    completions: mpsc::UnboundedSender<SnapshotWritten>,
    /// Until the driver takes it.
    completions_rx: Option<mpsc::UnboundedReceiver<SnapshotWritten>>,
    /// The writer of the snapshot in flight: joined before the storage (and
    /// its data-directory lock) goes away.
    writer: Option<std::thread::JoinHandle<()>>,
    /// A snapshot arriving from the leader, staged in a file (not in
    /// memory) with the bytes staged so far. Never fsynced: after a crash
    /// raft-core asks the leader for the snapshot from the start.
    staging: Option<(std::io::BufWriter<std::fs::File>, u64)>,
    /// Decodes the staged snapshot while it arrives (None if its thread
    /// could not start: the replica then decodes at the end, as before).
    decoder: Option<StagedDecoder>,
    /// A snapshot from the leader being installed on the persist stage:
    /// its index, and where the stage reports the stored snapshot after it.
    installing: Option<(LogIndex, InstallDone)>,
}

type InstallDone =
    std::sync::mpsc::Receiver<Result<Option<(SnapshotMeta, Vec<PathBuf>)>, StorageError>>;

/// The stored snapshot with its chain's files.
fn stored_chain(storage: &Storage) -> Option<(SnapshotMeta, Vec<PathBuf>)> {
    let (meta, _) = storage.snapshot_path()?;
    Some((meta, storage.snapshot_chain().to_vec()))
}

impl Drop for WalDisk {
    fn drop(&mut self) {
        if let Some(writer) = self.writer.take() {
            let _ = writer.join();
        }
    }
}

impl WalDisk {
    /// Opens (or creates) the data directory and recovers what it holds.
    pub fn open(dir: &Path, metrics: Arc<Metrics>) -> Result<(WalDisk, Recovered), StorageError> {
        let (storage, recovered) = Storage::open(dir, StorageOptions::default())?;
        // The chain's files: a whole snapshot's state, then each delta's.
        let mut parts = Vec::with_capacity(recovered.snapshot_chain.len());
        for path in &recovered.snapshot_chain {
            let (_, mut reader) = open_snapshot(path)?;
            let mut data =
                Vec::with_capacity(usize::try_from(reader.remaining_bytes()).unwrap_or_default());
            reader
                .read_to_end(&mut data)
                .map_err(|source| StorageError::Io {
                    op: "read snapshot",
                    path: path.clone(),
                    source,
                })?;
            parts.push(Bytes::from(data));
        }
        let (snapshot, snapshot_deltas) = match recovered.snapshot {
            Some((meta, _)) if !parts.is_empty() => {
                let whole = parts.remove(0);
                (Some((meta, whole)), parts)
            }
            _ => (None, Vec::new()),
        };
        // A transfer or install cut short by a crash: raft-core asks the
        // leader for the snapshot again from the start.
        for leftover in [STAGING_FILE, INSTALLING_FILE] {
            let _ = std::fs::remove_file(dir.join(leftover));
        }
        let (completions, completions_rx) = mpsc::unbounded_channel();
        let stored = stored_chain(&storage);
        let disk = WalDisk {
            stage: PersistStage::start(storage, metrics.clone())?,
            round: Vec::new(),
            snapshot: stored,
            metrics,
            completions,
            completions_rx: Some(completions_rx),
            writer: None,
            staging: None,
            decoder: None,
            installing: None,
        };
        let recovered = Recovered {
            hard_state: recovered.hard_state,
            snapshot,
            snapshot_deltas,
            entries: recovered.entries,
            damaged_up_to_term: recovered.damaged_up_to_term,
        };
        Ok((disk, recovered))
    }
}

/// Counts the state bytes on their way into the snapshot file.
struct CountingWriter<'a, W: Write + ?Sized> {
    inner: &'a mut W,
    bytes: &'a mut u64,
}

impl<W: Write + ?Sized> Write for CountingWriter<'_, W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        *self.bytes += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// An I/O error on the staging file (which stops the node, as any storage
/// I/O error does).
fn staging_error(op: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> StorageError {
    let path = path.to_path_buf();
    move |source| StorageError::Io { op, path, source }
}

/// The file in the data directory that received snapshot chunks go to.
const STAGING_FILE: &str = "snapshot.staging";
/// A staged snapshot being installed (renamed from [`STAGING_FILE`]).
const INSTALLING_FILE: &str = "snapshot.installing";

impl WalDisk {
    fn staging_path(&self) -> std::path::PathBuf {
        self.stage.dir().join(STAGING_FILE)
    }

    /// Waits for the install queued on the stage, if one is, and takes
    /// the stored snapshot it reports.
    /// A snapshot of our own that finished meanwhile at a higher index
    /// stays the stored one: the stage finished it after the install (it
    /// covers entries applied after it), and dropped the installed file.
    fn settle_install(&mut self) -> Result<(), StorageError> {
        if let Some((_, done)) = self.installing.take() {
            let installed = done.recv().unwrap_or(Err(StorageError::Failed))?;
            let ours_is_newer = match (&self.snapshot, &installed) {
                (Some((ours, _)), Some((installed, _))) => ours.index > installed.index,
                _ => false,
            };
            if !ours_is_newer {
                self.snapshot = installed;
            }
        }
        Ok(())
    }

    /// Where the persist stage acknowledges rounds (the newest round
    /// durable) or reports a storage failure, for the driver to step
    /// `Replica::persisted` or stop. Taken once.
    pub fn take_persist_completions(&mut self) -> Option<mpsc::UnboundedReceiver<PersistDone>> {
        self.stage.take_completions()
    }

    /// Runs `f` on the storage in the persist thread, after everything
    /// queued before (and this round's writes so far), and waits for it.
    fn call<T: Send + 'static>(
        &mut self,
        f: impl FnOnce(&mut Storage) -> Result<T, StorageError> + Send + 'static,
    ) -> Result<T, StorageError> {
        let writes = std::mem::take(&mut self.round);
        self.stage.call(move |storage| {
            for write in writes {
                match write {
                    RoundWrite::Append(entries) => storage.append(&entries)?,
                    RoundWrite::HardState(hard_state) => storage.set_hard_state(&hard_state)?,
                }
            }
            f(storage)
        })
    }

    /// Where finished snapshot writes arrive, for the driver to hand each to
    /// `Replica::snapshot_written`. Taken once.
    pub fn take_snapshot_completions(
        &mut self,
    ) -> Option<mpsc::UnboundedReceiver<SnapshotWritten>> {
        self.completions_rx.take()
    }
}

impl Durable for WalDisk {
    type Error = StorageError;

    fn append(&mut self, entries: &[Entry]) -> Result<(), StorageError> {
        self.round.push(RoundWrite::Append(entries.to_vec()));
        Ok(())
    }

    fn set_hard_state(&mut self, hard_state: &HardState) -> Result<(), StorageError> {
        self.round.push(RoundWrite::HardState(*hard_state));
        Ok(())
    }

    /// Waits for everything queued and syncs (the rounds go through
    /// `persist` instead, without waiting).
    fn sync(&mut self) -> Result<(), StorageError> {
        let metrics = self.metrics.clone();
        self.call(move |storage| {
            let started = Instant::now();
            let stats = storage.sync()?;
            metrics.fsync.observe(started.elapsed());
            metrics.fsync_bytes.inc_by(stats.bytes);
            Ok(())
        })
    }

    fn has_persist_stage(&self) -> bool {
        true
    }

    /// Hands the round to the persist thread; it is acknowledged through
    /// the completion channel once durable.
    fn persist(&mut self, ready: u64, must_sync: bool) -> Result<Durability, StorageError> {
        let writes = std::mem::take(&mut self.round);
        self.stage.round(ready, writes, must_sync)?;
        Ok(Durability::Later)
    }

    type SnapshotWritten = SnapshotWritten;

    fn writes_deltas(&self) -> bool {
        true
    }

    fn start_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        state: KvStateMachine,
        delta: Option<DeltaOf>,
    ) -> Result<(), StorageError> {
        if let Some(previous) = self.writer.take() {
            // Its completion was handled, so it is over or about to be.
            let _ = previous.join();
        }
        // The writer thread does all three steps: preparing and finishing
        // wait for the WAL's fsyncs on the persist stage (under a busy disk,
        // hundreds of milliseconds), which must not stop the driver's ticks
        // and heartbeats.
        let stage = self.stage.caller()?;
        let completions = self.completions.clone();
        let meta = meta.clone();
        let spawned = std::thread::Builder::new()
            .name("snapshot-writer".into())
            .spawn(move || {
                crate::background::lower_this_threads_priority();
                let started = Instant::now();
                let index = meta.index;
                let mut state_bytes = 0;
                let outcome = write_snapshot(&stage, &meta, &state, delta, &mut state_bytes);
                // Released before the driver hears of it: from now on the
                // live map owns every node again and stops copying paths.
                drop(state);
                // The driver may be gone (shutdown): nothing to tell then.
                let _ = completions.send(SnapshotWritten {
                    index,
                    outcome,
                    state_bytes,
                    elapsed: started.elapsed(),
                });
            });
        match spawned {
            Ok(handle) => {
                self.writer = Some(handle);
                Ok(())
            }
            Err(source) => Err(StorageError::SnapshotNotWritten {
                path: self.stage.dir().to_path_buf(),
                source,
            }),
        }
    }

    fn finish_snapshot(
        &mut self,
        done: SnapshotWritten,
    ) -> Result<Option<(SnapshotMeta, u64)>, StorageError> {
        let index = done.index;
        let stored = match &self.installing {
            Some((installing, _)) => Some(*installing),
            None => self.snapshot.as_ref().map(|(meta, _)| meta.index),
        };
        // None: installed from the leader before this one was finished on
        // the stage; a stored index at or above it: installed after.
        // Either way the installed one is current there and here.
        let (info, chain) = match done.outcome? {
            Some(done) if stored.is_none_or(|stored| stored < index) => done,
            _ => {
                tracing::info!(%index, "snapshot overtaken by one installed from the leader; dropped");
                return Ok(None);
            }
        };
        self.metrics.snapshot_save.observe(done.elapsed);
        tracing::info!(
            index = %info.meta.index,
            bytes = info.file_bytes,
            segments_removed = info.segments_removed,
            ms = done.elapsed.as_secs_f64() * 1e3,
            "snapshot saved"
        );
        self.snapshot = Some((info.meta.clone(), chain));
        // Chunks are read from the new file from now on: the older ones
        // can go (queued behind every write before, never waited for).
        self.stage
            .submit(|storage| storage.remove_older_snapshots())?;
        self.metrics.snapshot_index.set(info.meta.index.0);
        self.metrics.snapshots_taken.inc();
        self.metrics.snapshot_written_bytes.inc_by(info.file_bytes);
        Ok(Some((info.meta, done.state_bytes)))
    }

    fn snapshot_can_wait(error: &StorageError) -> bool {
        matches!(
            error,
            StorageError::SnapshotNotWritten { .. } | StorageError::NoSnapshotBase { .. }
        )
    }

    fn stage_snapshot_chunk(&mut self, offset: u64, data: &[u8]) -> Result<(), StorageError> {
        let path = self.staging_path();
        let io = |op| staging_error(op, &path);
        if offset == 0 || self.staging.is_none() {
            let file = kv_storage::fs::private(
                std::fs::OpenOptions::new()
                    .write(true)
                    .create(true)
                    .truncate(true),
            )
            .open(&path)
            .map_err(io("create snapshot staging"))?;
            self.staging = Some((std::io::BufWriter::new(file), 0));
            // Dropping the previous transfer's decoder abandons it.
            self.decoder = StagedDecoder::start(&path)
                .inspect_err(|error| {
                    tracing::warn!(%error, "snapshot decoder not started; decoding at the end")
                })
                .ok();
        }
        let (file, staged) = self.staging.as_mut().expect("just created");
        assert_eq!(offset, *staged, "snapshot chunks arrive in order");
        file.write_all(data).map_err(io("write snapshot staging"))?;
        *staged += data.len() as u64;
        if let Some(decoder) = &self.decoder {
            // The decoder reads the file: what it is told of must be there.
            file.flush().map_err(io("write snapshot staging"))?;
            decoder.staged(*staged);
        }
        Ok(())
    }

    fn take_decoded_snapshot(&mut self) -> Option<Result<KvStateMachine, SnapshotError>> {
        let decoder = self.decoder.take()?;
        let started = Instant::now();
        let decoded = decoder.finish();
        tracing::debug!(
            waited_ms = started.elapsed().as_secs_f64() * 1e3,
            "staged snapshot decoded while it arrived"
        );
        Some(decoded)
    }

    fn staged_snapshot_bytes(&self) -> u64 {
        self.staging.as_ref().map_or(0, |(_, staged)| *staged)
    }

    fn read_staged_snapshot<T>(
        &mut self,
        read: impl FnOnce(&mut dyn Read) -> T,
    ) -> Result<T, StorageError> {
        let path = self.staging_path();
        let io = |op| staging_error(op, &path);
        if let Some((file, _)) = self.staging.as_mut() {
            file.flush().map_err(io("write snapshot staging"))?;
        }
        let file = std::fs::File::open(&path).map_err(io("open snapshot staging"))?;
        let mut reader = std::io::BufReader::with_capacity(256 * 1024, file);
        Ok(read(&mut reader))
    }

    /// Queues the install on the persist stage and returns: copying and
    /// fsyncing a large snapshot must not stop the follower's ticks. The
    /// rounds after it (entries after the snapshot, the acknowledgement to
    /// the leader) are written and acknowledged only after it.
    fn install_staged_snapshot(&mut self, meta: &SnapshotMeta) -> Result<(), StorageError> {
        let staging = self.staging_path();
        let bytes = self.staged_snapshot_bytes();
        if let Some((mut file, _)) = self.staging.take() {
            file.flush()
                .map_err(staging_error("write snapshot staging", &staging))?;
        }
        self.decoder = None;
        self.settle_install()?;
        // Renamed, so that a new transfer may start staging meanwhile.
        let installing = self.stage.dir().join(INSTALLING_FILE);
        std::fs::rename(&staging, &installing)
            .map_err(staging_error("rename snapshot staging", &staging))?;
        let mut staged = std::fs::File::open(&installing)
            .map_err(staging_error("open snapshot staging", &installing))?;
        let (installed_tx, installed_rx) = std::sync::mpsc::sync_channel(1);
        let installed = meta.clone();
        self.stage.submit(move |storage| {
            let started = Instant::now();
            let result = storage
                .install_snapshot_with(&installed, |w| std::io::copy(&mut staged, w).map(|_| ()));
            // Not needed any more either way.
            let _ = std::fs::remove_file(&installing);
            match result {
                Ok(()) => {
                    tracing::info!(
                        index = %installed.index,
                        bytes,
                        ms = started.elapsed().as_secs_f64() * 1e3,
                        "snapshot installed from the leader"
                    );
                    let _ = installed_tx.send(Ok(stored_chain(storage)));
                    Ok(())
                }
                Err(error) => {
                    // The stage fails and reports it with the next round.
                    let _ = installed_tx.send(Err(StorageError::Failed));
                    Err(error)
                }
            }
        })?;
        self.installing = Some((meta.index, installed_rx));
        self.metrics.snapshot_index.set(meta.index.0);
        Ok(())
    }

    fn snapshot_chunk(&mut self, chunk: ChunkRequest) -> Result<Bytes, StorageError> {
        // An install from the leader is long over by the time this node
        // leads and sends it on (its election waited for the stage).
        self.settle_install()?;
        // The replica checked that `chunk.meta` is the stored snapshot.
        let Some((_, chain)) = &self.snapshot else {
            return Ok(Bytes::new());
        };
        // A chain is sent as its files' states one after another: the
        // follower reads the whole snapshot, then each delta on top.
        Ok(Bytes::from(read_chain_range_in(
            &kv_storage::fs::StdFs,
            chain,
            chunk.offset,
            chunk.len,
        )?))
    }
}

/// The writer thread's three steps on the storage: prepare (on the stage:
/// syncs the WAL and names the segments the snapshot covers), write and
/// fsync the file (here), finish (on the stage: make it current and drop
/// the segments it covers). A snapshot installed from the leader before
/// the prepare overtakes it (None), as one installed before the finish does.
fn write_snapshot(
    stage: &StageCaller,
    meta: &SnapshotMeta,
    state: &KvStateMachine,
    delta: Option<DeltaOf>,
    state_bytes: &mut u64,
) -> Result<Option<(SnapshotInfo, Vec<PathBuf>)>, StorageError> {
    let prepared = meta.clone();
    let is_delta = delta.is_some();
    let write = match stage.call(move |storage| {
        if is_delta {
            storage.prepare_delta_snapshot(&prepared)
        } else {
            storage.prepare_snapshot(&prepared)
        }
    }) {
        Ok(write) => write,
        Err(StorageError::StaleSnapshot { .. }) => return Ok(None),
        Err(error) => return Err(error),
    };
    let written = write.write(|w: &mut dyn Write| {
        let mut counted = CountingWriter {
            inner: w,
            bytes: state_bytes,
        };
        match delta {
            Some(delta) => state.write_delta_snapshot(delta.base.0, delta.changed, &mut counted),
            None => state.write_snapshot(&mut counted),
        }
    });
    stage.call(move |storage| {
        let info = storage.finish_snapshot_keeping_older(written)?;
        Ok(info.map(|info| (info, storage.snapshot_chain().to_vec())))
    })
}

#[cfg(test)]
impl WalDisk {
    /// Waits until every round queued is durable and returns the newest
    /// acknowledged since the last call (tests that drive a replica by hand,
    /// without the driver).
    fn wait_persisted(&mut self) -> Option<u64> {
        self.call(|_| Ok(())).expect("the persist stage runs");
        let done = self.stage.completions_mut()?;
        let mut newest = None;
        while let Ok(acked) = done.try_recv() {
            newest = newest.max(Some(acked.expect("the round was persisted")));
        }
        newest
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kv_replica::replica::Replica;
    use raft_core::{Config, Input, LogIndex, Membership, NodeId};

    fn put(round: usize) -> Input {
        Input::Propose {
            data: kv_replica::command::Command {
                request: None,
                client: None,
                op: kv_replica::command::Op::Put {
                    key: format!("k{round}"),
                    value: "v".into(),
                },
            }
            .encode(),
        }
    }

    /// Puts `count` keys one entry at a time, each settled, as the leader.
    fn put_rounds(replica: &mut Replica<WalDisk>, count: usize) {
        for round in 0..count {
            replica.step(put(round)).unwrap();
            settle_rounds(replica);
        }
    }

    /// Handles `Ready` rounds, acknowledging what the persist stage made
    /// durable, until there is nothing left (bounded).
    fn settle_rounds(replica: &mut Replica<WalDisk>) {
        for _ in 0..100 {
            let out = replica.process_ready(|_| {}).unwrap();
            let acked = replica.disk.wait_persisted();
            if let Some(ready) = acked {
                replica.persisted(ready);
            }
            if out.is_none() && acked.is_none() {
                return;
            }
        }
        panic!("Ready rounds never ran out");
    }

    /// Hands the replica the completion of its snapshot write in flight,
    /// if there is one, waiting for the writer thread (bounded).
    fn settle(
        replica: &mut Replica<WalDisk>,
        completions: &mut mpsc::UnboundedReceiver<SnapshotWritten>,
    ) -> Option<SnapshotMeta> {
        replica.snapshot_in_flight()?;
        let written = completions.blocking_recv().expect("the writer answers");
        replica.snapshot_written(written).unwrap()
    }

    /// Snapshot metadata at `index`, term 1, of the single voter 1.
    fn meta(index: u64) -> SnapshotMeta {
        SnapshotMeta {
            index: LogIndex(index),
            term: raft_core::Term(1),
            membership: Membership::new([NodeId(1)]),
        }
    }

    /// No-op entries of term 1 at `indexes`.
    fn noop_entries(indexes: std::ops::RangeInclusive<u64>) -> Vec<raft_core::Entry> {
        indexes
            .map(|index| raft_core::Entry {
                term: raft_core::Term(1),
                index: LogIndex(index),
                kind: raft_core::EntryKind::Noop,
                data: Bytes::new(),
            })
            .collect()
    }

    fn single_voter(dir: &Path) -> (Replica<WalDisk>, mpsc::UnboundedReceiver<SnapshotWritten>) {
        let (mut disk, recovered) = WalDisk::open(dir, Arc::new(Metrics::default())).unwrap();
        let completions = disk.take_snapshot_completions().unwrap();
        let id = NodeId(1);
        let replica =
            Replica::open(Config::new(id), recovered, Membership::new([id]), disk, 100).unwrap();
        (replica, completions)
    }

    /// The hard state the WAL holds now.
    fn stored_hard_state(replica: &mut Replica<WalDisk>) -> raft_core::HardState {
        replica
            .disk
            .call(|storage| Ok(storage.hard_state()))
            .unwrap()
    }

    /// A round that only moves the commit index, handed out while the
    /// persist stage holds nothing, is acknowledged at once: its hard state
    /// goes to the WAL with the next round, or on the next tick
    /// (`write_deferred_hard_state`). A crash before that loses only the
    /// commit index, which the node learns again.
    #[test]
    fn a_commit_only_round_waits_for_the_next_round_or_tick() {
        let dir = tempfile::tempdir().unwrap();
        let last;
        {
            let (mut replica, _completions) = single_voter(dir.path());
            replica.step(Input::Campaign).unwrap();
            put_rounds(&mut replica, 3);
            let commit = replica.node.commit_index();
            assert_eq!(commit, replica.node.last_index(), "all committed");
            let stored = stored_hard_state(&mut replica);
            assert!(
                stored.commit < commit,
                "the last commit-only round was deferred: {stored:?}, commit {commit:?}"
            );
            // The next put's round writes it (with its own, newer one).
            put_rounds(&mut replica, 1);
            let before_tick = stored_hard_state(&mut replica).commit;
            assert!(before_tick >= commit && before_tick < replica.node.commit_index());
            // A tick hands the newest to the stage; its acknowledgement
            // repeats a round already acknowledged.
            replica.write_deferred_hard_state().unwrap();
            settle_rounds(&mut replica);
            assert_eq!(
                stored_hard_state(&mut replica).commit,
                replica.node.commit_index()
            );
            replica.write_deferred_hard_state().unwrap();
            put_rounds(&mut replica, 1);
            last = replica.node.last_index();
            // Dropped without a tick: the crash case.
        }
        let (mut replica, _completions) = single_voter(dir.path());
        settle_rounds(&mut replica);
        assert_eq!(
            LogIndex(replica.state.applied_index()),
            LogIndex(last.0 - 1),
            "replayed up to the stored commit, the last put's entry is in the log"
        );
        replica.step(Input::Campaign).unwrap();
        settle_rounds(&mut replica);
        assert!(replica.state.applied_index() > last.0, "committed again");
    }

    /// Leases through a real replica: the countdown runs on ticks, a
    /// keepalive restarts it, and when it runs out the leader proposes an
    /// expire entry that deletes the lease's keys at one revision.
    #[test]
    fn a_lease_expires_on_the_leaders_ticks_unless_kept_alive() {
        use kv_replica::command::{Command, Op};
        let dir = tempfile::tempdir().unwrap();
        let (mut replica, _completions) = single_voter(dir.path());
        replica.set_lease_tick_ms(10);
        let drain = settle_rounds;
        replica.step(Input::Campaign).unwrap();
        drain(&mut replica);
        let propose = |replica: &mut Replica<WalDisk>, op| {
            let data = Command {
                request: None,
                client: None,
                op,
            }
            .encode();
            replica.step(Input::Propose { data }).unwrap();
            drain(replica);
        };
        propose(&mut replica, Op::LeaseGrant { ttl_ms: 1_000 });
        let id = replica.state.applied_index();
        assert!(replica.state.lease(id).is_some());
        for key in ["a", "b"] {
            let op = Op::PutWithLease {
                key: key.into(),
                value: "v".into(),
                lease: id,
            };
            propose(&mut replica, op);
        }
        let tick = |replica: &mut Replica<WalDisk>| {
            replica.step(Input::Tick).unwrap();
            drain(replica);
        };
        // Kept alive every 50 ticks (500 ms) for 500 ticks: still there.
        for round in 0..500 {
            if round % 50 == 0 {
                assert_eq!(replica.lease_keepalive(id), Ok(1_000));
            }
            tick(&mut replica);
        }
        assert_eq!(replica.state.len(), 2);
        // No more keepalives since 50 ticks: at 100 ticks (the full TTL)
        // it is still there, after that it expires.
        for _ in 0..50 {
            tick(&mut replica);
        }
        assert_eq!(replica.state.len(), 2, "expired before its TTL");
        for _ in 0..200 {
            tick(&mut replica);
        }
        assert_eq!(replica.state.len(), 0, "never expired");
        assert_eq!(replica.state.lease(id), None);
        assert_eq!(
            replica.lease_keepalive(id),
            Err(kv_replica::lease_clock::KeepaliveRefused::NotFound)
        );
    }

    /// Snapshot files in the data directory, by name.
    fn snapshot_files(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir.join("snapshots"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    /// Takes a snapshot and waits until it is durable.
    fn snapshot_now(
        replica: &mut Replica<WalDisk>,
        completions: &mut mpsc::UnboundedReceiver<SnapshotWritten>,
    ) -> SnapshotMeta {
        let meta = replica
            .start_snapshot()
            .unwrap()
            .expect("entries to snapshot");
        assert_eq!(settle(replica, completions).as_ref(), Some(&meta));
        // The older files' removal was queued on the stage: let it run.
        replica.disk.call(|_| Ok(())).unwrap();
        meta
    }

    /// The files of the stored snapshot's chain, by name.
    fn chain_files(replica: &Replica<WalDisk>) -> Vec<String> {
        let (_, chain) = replica.disk.snapshot.as_ref().expect("a snapshot");
        chain
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect()
    }

    /// A state that grows by new keys (a bulk load) keeps taking deltas:
    /// each holds only the new data, which a whole rewrite would write
    /// again. (Measured against the whole snapshot's own size, the first
    /// delta here, as large as it, would have forced one.)
    #[test]
    fn a_state_that_grows_by_new_keys_keeps_taking_deltas() {
        let dir = tempfile::tempdir().unwrap();
        let (mut replica, mut completions) = single_voter(dir.path());
        replica.step(Input::Campaign).unwrap();
        put_rounds(&mut replica, 200);
        snapshot_now(&mut replica, &mut completions);
        let mut chain_lengths = Vec::new();
        for batch in 1..=4 {
            for round in batch * 200..(batch + 1) * 200 {
                replica.step(put(round)).unwrap();
                settle_rounds(&mut replica);
            }
            snapshot_now(&mut replica, &mut completions);
            chain_lengths.push(chain_files(&replica).len());
        }
        assert_eq!(chain_lengths, [2, 3, 4, 5]);
        // The same data rewritten: its deltas now cost what a whole one
        // would, and the chain is rewritten whole (1) within a few.
        for _ in 0..4 {
            put_rounds(&mut replica, 1_000);
            snapshot_now(&mut replica, &mut completions);
            chain_lengths.push(chain_files(&replica).len());
            if chain_lengths.last() == Some(&1) {
                break;
            }
        }
        assert_eq!(chain_lengths.last(), Some(&1), "{chain_lengths:?}");
    }

    /// After a whole snapshot, the next ones are deltas of the keys written
    /// since, kept in a chain with it; a restart restores the chain, and a
    /// follower is sent it as one stream that decodes to the same state.
    /// Once the deltas add up to the whole snapshot's size (the state's
    /// size stays the same here), the next one is whole again and the
    /// chain's files go.
    #[test]
    fn snapshots_after_a_whole_one_are_deltas_and_a_restart_restores_their_chain() {
        let dir = tempfile::tempdir().unwrap();
        let (mut replica, mut completions) = single_voter(dir.path());
        replica.step(Input::Campaign).unwrap();
        put_rounds(&mut replica, 200);
        let whole = snapshot_now(&mut replica, &mut completions);
        let whole_bytes = replica.last_snapshot_bytes();
        assert_eq!(snapshot_files(dir.path()).len(), 1);
        // A few keys over again: a delta much smaller than the whole one.
        for round in 0..5 {
            replica.step(put(round)).unwrap();
            settle_rounds(&mut replica);
        }
        let first = snapshot_now(&mut replica, &mut completions);
        for round in 5..10 {
            replica.step(put(round)).unwrap();
            settle_rounds(&mut replica);
        }
        let second = snapshot_now(&mut replica, &mut completions);
        let files = snapshot_files(dir.path());
        assert_eq!(
            files,
            [whole.index, first.index, second.index].map(|i| format!("{:020}.snap", i.0))
        );
        assert_eq!(
            replica.last_snapshot_bytes(),
            whole_bytes,
            "the whole one's size"
        );
        // What a follower is sent: the chain as one stream.
        let sent = replica
            .disk
            .snapshot_chunk(ChunkRequest {
                meta: &second,
                offset: 0,
                len: u64::MAX,
            })
            .unwrap();
        assert!(sent.len() as u64 > whole_bytes);
        let (decoded, deltas) = KvStateMachine::read_snapshot_stream(&mut sent.as_ref()).unwrap();
        assert_eq!(deltas, 2);
        assert_eq!(decoded.applied_index(), second.index.0);
        let live = replica.state.clone();
        assert_eq!(decoded.digest(), {
            let mut at_second = live.clone();
            // Nothing was applied after the second snapshot.
            assert_eq!(at_second.applied_index(), second.index.0);
            at_second.take_changed_keys();
            at_second.digest()
        });
        drop(replica);
        let (mut reopened, mut completions) = single_voter(dir.path());
        assert_eq!(reopened.last_snapshot_index(), second.index);
        assert_eq!(reopened.state.digest(), live.digest());
        reopened.step(Input::Campaign).unwrap();
        settle_rounds(&mut reopened);
        // Rewriting every key makes deltas as large as the whole snapshot:
        // the one after them is whole, and the chain's files go.
        let mut chain_lengths = Vec::new();
        for _ in 0..4 {
            put_rounds(&mut reopened, 200);
            snapshot_now(&mut reopened, &mut completions);
            chain_lengths.push(chain_files(&reopened).len());
            assert_eq!(snapshot_files(dir.path()), chain_files(&reopened));
            if chain_lengths.last() == Some(&1) {
                break;
            }
        }
        assert_eq!(chain_lengths, [4, 1]);
    }

    /// completion is handed back, the log is not compacted and the core
    /// does not know the snapshot, and the replica goes on applying. After
    /// it, a restart recovers the snapshot and the log after it.
    #[test]
    fn a_snapshot_is_written_in_the_background_and_compacts_only_once_durable() {
        let dir = tempfile::tempdir().unwrap();
        let (mut replica, mut completions) = single_voter(dir.path());
        replica.step(Input::Campaign).unwrap();
        put_rounds(&mut replica, 10);
        let meta = replica
            .start_snapshot()
            .unwrap()
            .expect("entries to snapshot");
        assert_eq!(replica.snapshot_in_flight(), Some(meta.index));
        assert_eq!(replica.start_snapshot().unwrap(), None, "one at a time");
        for round in 10..20 {
            replica.step(put(round)).unwrap();
            settle_rounds(&mut replica);
        }
        assert_eq!(
            replica.last_snapshot_index(),
            LogIndex::ZERO,
            "not durable yet"
        );
        assert_eq!(replica.node.status().snapshot_index, LogIndex::ZERO);
        let taken = settle(&mut replica, &mut completions);
        assert_eq!(taken.as_ref(), Some(&meta));
        assert_eq!(replica.last_snapshot_index(), meta.index);
        // The size the core is told is the state's, whose chunks the disk
        // serves (not the file's): told the file's, a leader asked for
        // chunks past the state's end and no follower ever caught up.
        let state_bytes = replica
            .disk
            .snapshot_chunk(ChunkRequest {
                meta: &meta,
                offset: 0,
                len: u64::MAX,
            })
            .unwrap()
            .len() as u64;
        assert_eq!(replica.last_snapshot_bytes(), state_bytes);
        assert_eq!(replica.node.status().snapshot_index, meta.index);
        let applied = replica.node.applied_index();
        drop(replica);
        let (reopened, _) = single_voter(dir.path());
        assert_eq!(reopened.last_snapshot_index(), meta.index);
        assert_eq!(reopened.state.applied_index(), meta.index.0);
        assert!(
            reopened.node.last_index() >= applied,
            "the log after the snapshot is kept"
        );
    }

    /// A crash between the capture and the completion leaves the previous
    /// state: no snapshot, the whole log (the completion is never seen).
    #[test]
    fn a_snapshot_never_completed_leaves_the_whole_log() {
        let dir = tempfile::tempdir().unwrap();
        let (mut replica, completions) = single_voter(dir.path());
        replica.step(Input::Campaign).unwrap();
        put_rounds(&mut replica, 10);
        let last = replica.node.last_index();
        replica
            .start_snapshot()
            .unwrap()
            .expect("entries to snapshot");
        drop(completions);
        drop(replica);
        let (reopened, _) = single_voter(dir.path());
        // The file may be durable (the writer finished before the drop):
        // then recovery uses it and the log after it; else the whole log.
        assert_eq!(reopened.node.last_index(), last);
        let keys_or_log = reopened.state.len() + (last.0 - reopened.state.applied_index()) as usize;
        assert!(keys_or_log >= 10, "every write survives: {keys_or_log}");
    }

    /// The byte rule: a snapshot starts once the log applied since the last
    /// one reaches the floor, without any entry bound.
    #[test]
    fn the_byte_rule_starts_a_snapshot_once_the_log_outgrows_the_floor() {
        let dir = tempfile::tempdir().unwrap();
        let (mut replica, mut completions) = single_voter(dir.path());
        replica.snapshot_policy = kv_replica::replica::SnapshotPolicy {
            log_bytes_floor: Some(2_000),
            ..Default::default()
        };
        replica.step(Input::Campaign).unwrap();
        let mut rounds = 0;
        while replica.snapshot_in_flight().is_none() {
            assert!(rounds < 100, "no snapshot after {rounds} puts");
            replica.step(put(rounds)).unwrap();
            settle_rounds(&mut replica);
            rounds += 1;
        }
        // About 2,000 bytes at ~50 bytes per put entry.
        assert!((20..60).contains(&rounds), "{rounds} puts");
        assert!(settle(&mut replica, &mut completions).is_some());
    }

    /// The key-write bound: batched writes start a snapshot once the keys
    /// they wrote reach it, long before the entry bound counts as many
    /// entries, and a restart replays at most about that many keys.
    #[test]
    fn batched_writes_start_a_snapshot_at_the_key_write_bound() {
        let dir = tempfile::tempdir().unwrap();
        let (mut replica, mut completions) = single_voter(dir.path());
        replica.snapshot_policy = kv_replica::replica::SnapshotPolicy {
            max_entries: 1_000,
            max_key_writes: 1_500,
            ..Default::default()
        };
        replica.step(Input::Campaign).unwrap();
        let mput = |round: usize| Input::Propose {
            data: kv_replica::command::Command {
                request: None,
                client: None,
                op: kv_replica::command::Op::MultiPut {
                    entries: (0..100)
                        .map(|k| (format!("k{round}-{k}"), "v".into()))
                        .collect(),
                },
            }
            .encode(),
        };
        let mut rounds = 0;
        while replica.snapshot_in_flight().is_none() {
            assert!(rounds < 100, "no snapshot after {rounds} batches");
            replica.step(mput(rounds)).unwrap();
            settle_rounds(&mut replica);
            rounds += 1;
        }
        assert_eq!(rounds, 15, "1,500 keys in batches of 100");
        let taken = settle(&mut replica, &mut completions).expect("written");
        assert_eq!(replica.state.len(), 1_500);
        // The count starts again from the snapshot.
        for round in 15..29 {
            replica.step(mput(round)).unwrap();
            settle_rounds(&mut replica);
        }
        assert_eq!(replica.snapshot_in_flight(), None, "1,400 keys since");
        replica.step(mput(29)).unwrap();
        settle_rounds(&mut replica);
        assert!(replica.snapshot_in_flight().is_some(), "1,500 keys since");
        assert!(settle(&mut replica, &mut completions).unwrap().index > taken.index);
    }

    /// With `after_replay`, a restarted node starts no snapshot while it
    /// replays its own log (up to the commit index it recovered), however
    /// far past its bounds the replay goes, and starts one as soon as the
    /// replay is done.
    #[test]
    fn no_snapshot_starts_while_a_restart_replays_its_log() {
        let dir = tempfile::tempdir().unwrap();
        {
            let (mut replica, _completions) = single_voter(dir.path());
            replica.step(Input::Campaign).unwrap();
            put_rounds(&mut replica, 40);
            assert_eq!(replica.state.len(), 40);
        }
        let (mut disk, recovered) =
            WalDisk::open(dir.path(), Arc::new(Metrics::default())).unwrap();
        let mut completions = disk.take_snapshot_completions().unwrap();
        let replay_end = recovered.hard_state.commit.0;
        assert!(
            replay_end >= 40,
            "the commit index was written: {replay_end}"
        );
        let mut config = Config::new(NodeId(1));
        // One small entry per round, so that the replay takes many rounds.
        config.max_committed_bytes_per_ready = 1;
        let mut replica =
            Replica::open(config, recovered, Membership::new([NodeId(1)]), disk, 100).unwrap();
        replica.snapshot_policy = kv_replica::replica::SnapshotPolicy {
            max_entries: 5,
            after_replay: true,
            ..Default::default()
        };
        let mut rounds = 0;
        while replica.state.applied_index() < replay_end {
            assert!(rounds < 1_000, "the replay never ended");
            assert_eq!(
                replica.snapshot_in_flight(),
                None,
                "a snapshot during the replay, at {}",
                replica.state.applied_index()
            );
            replica.process_ready(|_| {}).unwrap();
            if let Some(ready) = replica.disk.wait_persisted() {
                replica.persisted(ready);
            }
            rounds += 1;
        }
        assert!(rounds > 10, "the replay took {rounds} rounds");
        replica.process_ready(|_| {}).unwrap();
        let taken = settle(&mut replica, &mut completions).expect("one right after the replay");
        assert!(taken.index.0 >= replay_end);
    }

    /// A snapshot installed from the leader while a snapshot of our own is
    /// being written overtakes it: finishing ours changes nothing and
    /// removes its file, and a restart finds the installed one.
    #[test]
    fn a_snapshot_installed_during_a_background_write_overtakes_it() {
        let dir = tempfile::tempdir().unwrap();
        {
            let (mut storage, _) = Storage::open(dir.path(), StorageOptions::default()).unwrap();
            storage.append(&noop_entries(1..=5)).unwrap();
            storage.sync().unwrap();
            let ours = storage.prepare_snapshot(&meta(5)).unwrap();
            storage.install_snapshot(&meta(9), b"installed").unwrap();
            let written = ours.write(|w: &mut dyn Write| w.write_all(b"ours"));
            assert_eq!(storage.finish_snapshot(written).unwrap(), None);
            let files: Vec<_> = std::fs::read_dir(dir.path().join("snapshots"))
                .unwrap()
                .map(|e| e.unwrap().file_name().into_string().unwrap())
                .collect();
            assert_eq!(files, ["00000000000000000009.snap"]);
        }
        let (_, recovered) = Storage::open(dir.path(), StorageOptions::default()).unwrap();
        assert_eq!(recovered.snapshot.map(|(m, _)| m.index), Some(LogIndex(9)));
    }

    /// Issue 12: a snapshot arriving from the leader is staged in a file of
    /// the data directory chunk by chunk (not in memory), read back as a
    /// stream, installed from the file, and the staging file removed; a
    /// transfer that starts over (offset 0) drops what was staged.
    #[test]
    fn received_snapshot_chunks_are_staged_on_disk_and_installed_from_there() {
        let dir = tempfile::tempdir().unwrap();
        let state = crate::staged_decoder::tests::state_of(50);
        let bytes = state.snapshot_bytes();
        let meta = SnapshotMeta {
            index: LogIndex(50),
            term: raft_core::Term(1),
            membership: Membership::new([NodeId(1)]),
        };
        let staging = dir.path().join(STAGING_FILE);
        {
            let (mut disk, _) = WalDisk::open(dir.path(), Arc::new(Metrics::default())).unwrap();
            disk.stage_snapshot_chunk(0, b"an abandoned transfer")
                .unwrap();
            for (i, chunk) in bytes.chunks(700).enumerate() {
                disk.stage_snapshot_chunk((i * 700) as u64, chunk).unwrap();
            }
            assert_eq!(disk.staged_snapshot_bytes(), bytes.len() as u64);
            // Decoded while it arrived (the abandoned transfer's decoder
            // was dropped at offset 0 of the second).
            let decoded = disk.take_decoded_snapshot().expect("a decoder ran");
            assert_eq!(decoded.unwrap(), state);
            let read_back = disk
                .read_staged_snapshot(|r| KvStateMachine::read_snapshot(&mut { r }))
                .unwrap()
                .unwrap();
            assert_eq!(read_back, state);
            assert_eq!(
                std::fs::metadata(&staging).unwrap().len(),
                bytes.len() as u64
            );
            disk.install_staged_snapshot(&meta).unwrap();
            assert!(!staging.exists(), "the staging file is removed");
            // Installed on the persist stage; read back once it is stored.
            let chunk = disk
                .snapshot_chunk(ChunkRequest {
                    meta: &meta,
                    offset: 5,
                    len: 100,
                })
                .unwrap();
            assert_eq!(&chunk[..], &bytes[5..105]);
            assert!(!dir.path().join(INSTALLING_FILE).exists());
        }
        let (_, recovered) = WalDisk::open(dir.path(), Arc::new(Metrics::default())).unwrap();
        let (installed, data) = recovered.snapshot.expect("installed");
        assert_eq!((installed, &data[..]), (meta, &bytes[..]));
    }

    /// A chain received from a leader (its whole snapshot, then its
    /// deltas, as one stream) decodes while it arrives, is stored as one
    /// file, restores after a restart, and takes no delta of ours on top:
    /// the next snapshot is whole.
    #[test]
    fn a_received_chain_is_installed_as_one_file_and_the_next_snapshot_is_whole() {
        let leader_dir = tempfile::tempdir().unwrap();
        let (mut leader, mut completions) = single_voter(leader_dir.path());
        leader.step(Input::Campaign).unwrap();
        put_rounds(&mut leader, 100);
        snapshot_now(&mut leader, &mut completions);
        for round in 0..10 {
            leader.step(put(round)).unwrap();
            settle_rounds(&mut leader);
            if round % 5 == 4 {
                snapshot_now(&mut leader, &mut completions);
            }
        }
        assert_eq!(chain_files(&leader).len(), 3);
        let meta = leader.disk.snapshot.as_ref().unwrap().0.clone();
        let stream = leader
            .disk
            .snapshot_chunk(ChunkRequest {
                meta: &meta,
                offset: 0,
                len: u64::MAX,
            })
            .unwrap();
        let mut expected = leader.state.clone();
        expected.take_changed_keys();

        let dir = tempfile::tempdir().unwrap();
        {
            let (mut disk, _) = WalDisk::open(dir.path(), Arc::new(Metrics::default())).unwrap();
            for (i, chunk) in stream.chunks(300).enumerate() {
                disk.stage_snapshot_chunk((i * 300) as u64, chunk).unwrap();
            }
            let decoded = disk
                .take_decoded_snapshot()
                .expect("a decoder ran")
                .unwrap();
            assert_eq!(decoded.digest(), expected.digest());
            disk.install_staged_snapshot(&meta).unwrap();
            // What the install round writes with it.
            disk.set_hard_state(&raft_core::HardState {
                term: meta.term,
                vote: None,
                commit: meta.index,
            })
            .unwrap();
            disk.sync().unwrap();
        }
        let (mut follower, mut completions) = single_voter(dir.path());
        assert_eq!(follower.state.digest(), expected.digest());
        assert_eq!(chain_files(&follower).len(), 1, "stored as one file");
        follower.step(Input::Campaign).unwrap();
        settle_rounds(&mut follower);
        put_rounds(&mut follower, 3);
        snapshot_now(&mut follower, &mut completions);
        assert_eq!(chain_files(&follower).len(), 1, "whole, not a delta on it");
        assert_eq!(snapshot_files(dir.path()).len(), 1);
        // And from then on, deltas.
        put_rounds(&mut follower, 3);
        snapshot_now(&mut follower, &mut completions);
        assert_eq!(chain_files(&follower).len(), 2);
        let live = follower.state.digest();
        drop(follower);
        let (reopened, _) = single_voter(dir.path());
        assert_eq!(reopened.state.digest(), live);
    }

    /// Found by the chaos test: a follower installed a snapshot from the
    /// leader, took two of its own at higher indexes, won an election and
    /// sent a snapshot to a lagging follower. Reading the chunk settled the
    /// install only then, took the installed (older, already removed) file
    /// for the stored one, and stopped the node on "No such file". The
    /// snapshot sent is the newest stored, whenever the install is settled.
    #[test]
    fn a_snapshot_of_our_own_taken_after_an_install_is_the_one_sent() {
        let dir = tempfile::tempdir().unwrap();
        let installed = crate::staged_decoder::tests::state_of(50);
        let (mut disk, _) = WalDisk::open(dir.path(), Arc::new(Metrics::default())).unwrap();
        let mut completions = disk.take_snapshot_completions().unwrap();
        disk.stage_snapshot_chunk(0, &installed.snapshot_bytes())
            .unwrap();
        disk.install_staged_snapshot(&meta(50)).unwrap();
        disk.append(&noop_entries(51..=60)).unwrap();
        disk.sync().unwrap();
        let ours = crate::staged_decoder::tests::state_of(60);
        disk.start_snapshot(&meta(60), ours.clone(), None).unwrap();
        let written = completions.blocking_recv().expect("the writer answers");
        let finished = disk.finish_snapshot(written).unwrap();
        assert_eq!(finished.map(|(m, _)| m.index), Some(LogIndex(60)));
        let bytes = ours.snapshot_bytes();
        let chunk = disk
            .snapshot_chunk(ChunkRequest {
                meta: &meta(60),
                offset: 0,
                len: bytes.len() as u64,
            })
            .expect("the stored snapshot is ours, at 60");
        assert_eq!(&chunk[..], &bytes[..]);
    }

    /// Issue 15, item 6: a snapshot whose file cannot be written (here its
    /// directory is gone; on a full disk, ENOSPC) leaves the replica
    /// running with its log, and a later attempt succeeds.
    #[test]
    fn a_snapshot_that_cannot_be_written_does_not_stop_the_replica() {
        let dir = tempfile::tempdir().unwrap();
        let (mut replica, mut completions) = single_voter(dir.path());
        replica.snapshot_policy.max_entries = 2;
        replica.step(Input::Campaign).unwrap();
        for _ in 0..10 {
            settle_rounds(&mut replica);
            settle(&mut replica, &mut completions);
        }
        let before = replica.last_snapshot_index();
        std::fs::remove_dir_all(dir.path().join("snapshots")).unwrap();
        for round in 0..20 {
            replica.step(put(round)).unwrap();
            // The replica keeps going without its snapshot.
            settle_rounds(&mut replica);
            settle(&mut replica, &mut completions);
        }
        for _ in 0..10 {
            settle_rounds(&mut replica);
        }
        assert_eq!(replica.last_snapshot_index(), before, "no snapshot taken");
        assert!(replica.node.applied_index().0 >= before.0 + 20);
        std::fs::create_dir(dir.path().join("snapshots")).unwrap();
        replica.start_snapshot().unwrap();
        let taken = settle(&mut replica, &mut completions);
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
