//! The persist stage (issue 12): the WAL's writes and fdatasync run on a
//! thread of their own, so that the driver thread goes on stepping
//! messages, proposals and ticks while an fsync is in flight.
//!
//! The thread owns the [`Storage`]. The driver hands it, in order:
//! - each `Ready` round's writes ([`Job::Round`]: entries, hard state),
//!   and returns `Durability::Later` to raft-core;
//! - the rare other steps on the storage ([`PersistStage::call`]: a snapshot
//!   installed from the leader, one of our own prepared or finished), which
//!   run after every job sent before them and whose result the driver
//!   waits for.
//!
//! The thread takes every job queued, writes the rounds in order and
//! makes them durable with one fsync (group commit: what arrives while an
//! fsync is in flight shares the next one), then sends the newest round's
//! number back on the completion channel; the driver steps
//! `Input::Persisted` with it (raft-core acknowledges every round up to
//! it). Before a call, the rounds before it are synced and acknowledged,
//! so a call finds the storage as the driver left it before this stage
//! existed. A storage error is sent back instead (the driver stops the
//! node) and leaves the storage failed: every later job fails too, and a
//! failed fsync leaves kv-storage's `FSYNC_FAILED` marker as before.

use crate::metrics::Metrics;
use crate::storage::{Storage, StorageError};
use raft_core::{Entry, HardState};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc as std_mpsc;
use std::time::Instant;
use tokio::sync::mpsc;

/// What the stage sends back: every round up to this number is durable,
/// or the storage failed.
pub type PersistDone = Result<u64, StorageError>;

/// One write of a round, in the round's order.
#[derive(Debug)]
pub(crate) enum RoundWrite {
    Append(Vec<Entry>),
    HardState(HardState),
}

type Call = Box<dyn FnOnce(&mut Storage) + Send>;

enum Job {
    /// A `Ready` round's writes; `must_sync` is false when it only moved
    /// the commit index (no fsync of its own, as before).
    Round {
        ready: u64,
        writes: Vec<RoundWrite>,
        must_sync: bool,
    },
    Call(Call),
}

/// The driver's end of the stage.
pub struct PersistStage {
    jobs: Option<std_mpsc::Sender<Job>>,
    thread: Option<std::thread::JoinHandle<()>>,
    done: Option<mpsc::UnboundedReceiver<PersistDone>>,
    dir: PathBuf,
}

impl Drop for PersistStage {
    /// Closes the queue and waits for the thread: what was queued is
    /// written, and the storage (and the data directory's lock) released,
    /// before the driver reports that it stopped.
    fn drop(&mut self) {
        self.jobs = None;
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl PersistStage {
    /// Starts the thread, which owns `storage` from now on.
    pub fn start(storage: Storage, metrics: Arc<Metrics>) -> Result<PersistStage, StorageError> {
        let dir = storage.dir().to_path_buf();
        let (jobs, jobs_rx) = std_mpsc::channel();
        let (done, done_rx) = mpsc::unbounded_channel();
        let thread = std::thread::Builder::new()
            .name("wal-persist".into())
            .spawn(move || run(storage, jobs_rx, done, metrics))
            .map_err(|source| StorageError::Io {
                op: "start the persist thread",
                path: dir.clone(),
                source,
            })?;
        Ok(PersistStage {
            jobs: Some(jobs),
            thread: Some(thread),
            done: Some(done_rx),
            dir,
        })
    }

    /// The data directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Where the acknowledgements arrive, for the driver. Taken once.
    pub fn take_completions(&mut self) -> Option<mpsc::UnboundedReceiver<PersistDone>> {
        self.done.take()
    }

    /// The completion channel while the driver has not taken it (tests
    /// that drive a replica by hand).
    #[cfg(test)]
    pub(crate) fn completions_mut(&mut self) -> Option<&mut mpsc::UnboundedReceiver<PersistDone>> {
        self.done.as_mut()
    }

    fn send(&self, job: Job) -> Result<(), StorageError> {
        // Gone only if the thread panicked: the storage is in an unknown
        // state, the node stops.
        self.jobs
            .as_ref()
            .and_then(|jobs| jobs.send(job).ok())
            .ok_or(StorageError::Failed)
    }

    /// Queues round `ready`'s writes; acknowledged on the completion
    /// channel once durable.
    pub(crate) fn round(
        &self,
        ready: u64,
        writes: Vec<RoundWrite>,
        must_sync: bool,
    ) -> Result<(), StorageError> {
        self.send(Job::Round {
            ready,
            writes,
            must_sync,
        })
    }

    /// Runs `f` on the storage after every job queued before it (the
    /// rounds among them durable) and waits for its result.
    pub fn call<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Storage) -> Result<T, StorageError> + Send + 'static,
    ) -> Result<T, StorageError> {
        self.caller()?.call(f)
    }

    /// Queues `f` to run on the storage after every job queued before it,
    /// without waiting. An error in it fails the storage like a failed
    /// write: the next round's acknowledgement reports it, and the node
    /// stops.
    pub fn submit(
        &self,
        f: impl FnOnce(&mut Storage) -> Result<(), StorageError> + Send + 'static,
    ) -> Result<(), StorageError> {
        self.send(Job::Call(Box::new(move |storage| {
            if let Err(error) = f(storage) {
                tracing::error!(%error, "a storage step queued on the persist stage failed");
                storage.mark_failed();
            }
        })))
    }

    /// A handle another thread uses to run calls on the stage and wait for
    /// them itself (the snapshot writer: its steps wait for the WAL's
    /// fsyncs, which the driver thread must not).
    pub fn caller(&self) -> Result<StageCaller, StorageError> {
        self.jobs
            .clone()
            .map(StageCaller)
            .ok_or(StorageError::Failed)
    }
}

/// See [`PersistStage::caller`]. The stage's thread runs until every
/// caller is dropped too.
#[derive(Clone)]
pub struct StageCaller(std_mpsc::Sender<Job>);

impl StageCaller {
    /// [`PersistStage::call`] from another thread.
    pub fn call<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Storage) -> Result<T, StorageError> + Send + 'static,
    ) -> Result<T, StorageError> {
        let (tx, rx) = std_mpsc::sync_channel(1);
        self.0
            .send(Job::Call(Box::new(move |storage| {
                let _ = tx.send(f(storage));
            })))
            .map_err(|_| StorageError::Failed)?;
        rx.recv().unwrap_or(Err(StorageError::Failed))
    }
}

/// The thread: batches of jobs until the driver's end is dropped.
fn run(
    mut storage: Storage,
    jobs: std_mpsc::Receiver<Job>,
    done: mpsc::UnboundedSender<PersistDone>,
    metrics: Arc<Metrics>,
) {
    let mut batch = Batch::default();
    let spares = crate::spare_maker::SpareMaker::start();
    while let Ok(first) = jobs.recv() {
        // Group commit: everything queued meanwhile shares one fsync.
        for job in std::iter::once(first).chain(jobs.try_iter()) {
            match job {
                Job::Round {
                    ready,
                    writes,
                    must_sync,
                } => batch.write(&mut storage, ready, writes, must_sync),
                Job::Call(call) => {
                    batch.finish(&mut storage, &done, &metrics);
                    // After a failure the call is dropped unrun: the
                    // driver's `call` gets `StorageError::Failed`.
                    if !batch.failed {
                        call(&mut storage);
                    }
                }
            }
        }
        batch.finish(&mut storage, &done, &metrics);
        if let Some(spares) = &spares {
            spares.tend(&mut storage);
        }
        metrics.wal_recycled_rolls.set(storage.wal_recycled_rolls());
    }
}

/// The rounds written since the last acknowledgement.
#[derive(Default)]
struct Batch {
    /// The newest round written.
    last: Option<u64>,
    must_sync: bool,
    error: Option<StorageError>,
    /// Sticky: after any error nothing more is written (an entry refused
    /// as too large leaves the storage usable, but the log would have a
    /// gap).
    failed: bool,
}

impl Batch {
    fn write(&mut self, storage: &mut Storage, ready: u64, writes: Vec<RoundWrite>, sync: bool) {
        self.last = Some(ready);
        self.must_sync |= sync;
        if self.failed {
            self.error.get_or_insert(StorageError::Failed);
            return;
        }
        for write in writes {
            let written = match write {
                RoundWrite::Append(entries) => storage.append(&entries),
                RoundWrite::HardState(hard_state) => storage.set_hard_state(&hard_state),
            };
            if let Err(e) = written {
                tracing::error!(error = %e, "the WAL write failed; the node stops");
                self.error = Some(e);
                self.failed = true;
                return;
            }
        }
    }

    /// Syncs what the rounds wrote (if any asked for it) and acknowledges
    /// the newest, or reports the error.
    fn finish(
        &mut self,
        storage: &mut Storage,
        done: &mpsc::UnboundedSender<PersistDone>,
        metrics: &Metrics,
    ) {
        let Some(last) = self.last.take() else {
            return;
        };
        let mut result = match self.error.take() {
            Some(e) => Err(e),
            None => Ok(last),
        };
        if std::mem::take(&mut self.must_sync) && result.is_ok() {
            let started = Instant::now();
            match storage.sync() {
                Ok(stats) => {
                    metrics.fsync.observe(started.elapsed());
                    metrics.fsync_bytes.inc_by(stats.bytes);
                }
                Err(e) => {
                    tracing::error!(error = %e, "the WAL sync failed; the node stops");
                    self.failed = true;
                    result = Err(e);
                }
            }
        }
        // The driver may be gone (shutdown): nothing to tell then.
        let _ = done.send(result);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::{Fs, FsFile, StdFs, StorageOptions};
    use bytes::Bytes;
    use kv_storage::fs::DirGuard;
    use raft_core::{EntryKind, LogIndex, Term};
    use std::io;
    use std::sync::Mutex;
    use std::time::Duration;

    /// What the test's file system does in the next WAL fdatasync.
    #[derive(Debug, Default)]
    struct Control {
        /// Fail it with EIO.
        fail: bool,
        /// Tell the test it started, then wait for its go-ahead.
        hold: Option<(std_mpsc::Sender<()>, std_mpsc::Receiver<()>)>,
        syncs: u64,
    }

    /// Real files whose data syncs the test can hold or fail.
    #[derive(Debug, Clone, Default)]
    struct TestFs(Arc<Mutex<Control>>);

    struct TestFile(Box<dyn FsFile>, TestFs);

    impl io::Write for TestFile {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.write(buf)
        }
        fn flush(&mut self) -> io::Result<()> {
            self.0.flush()
        }
    }

    impl TestFs {
        fn sync(&self) -> io::Result<()> {
            let hold = {
                let mut control = self.0.lock().unwrap();
                control.syncs += 1;
                if std::mem::take(&mut control.fail) {
                    return Err(io::Error::from_raw_os_error(5));
                }
                control.hold.take()
            };
            if let Some((started, go)) = hold {
                started.send(()).unwrap();
                go.recv_timeout(Duration::from_secs(10)).unwrap();
            }
            Ok(())
        }
    }

    impl FsFile for TestFile {
        fn write_all_at(&mut self, buf: &[u8], offset: u64) -> io::Result<()> {
            self.0.write_all_at(buf, offset)
        }
        fn sync_data(&mut self) -> io::Result<()> {
            self.1.sync()?;
            self.0.sync_data()
        }
        fn sync_all(&mut self) -> io::Result<()> {
            self.0.sync_all()
        }
        fn preallocate(&mut self, bytes: u64) -> io::Result<()> {
            self.0.preallocate(bytes)
        }
    }

    impl Fs for TestFs {
        fn is_dir(&self, path: &Path) -> bool {
            StdFs.is_dir(path)
        }
        fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
            StdFs.create_dir_all(dir)
        }
        fn list_dir(&self, dir: &Path) -> io::Result<Vec<String>> {
            StdFs.list_dir(dir)
        }
        fn sync_dir(&self, dir: &Path) -> io::Result<()> {
            StdFs.sync_dir(dir)
        }
        fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
            StdFs.read(path)
        }
        fn read_at(&self, path: &Path, offset: u64, buf: &mut [u8]) -> io::Result<()> {
            StdFs.read_at(path, offset, buf)
        }
        fn file_len(&self, path: &Path) -> io::Result<u64> {
            StdFs.file_len(path)
        }
        fn create_new(&self, path: &Path) -> io::Result<Box<dyn FsFile>> {
            Ok(Box::new(TestFile(StdFs.create_new(path)?, self.clone())))
        }
        fn create(&self, path: &Path) -> io::Result<Box<dyn FsFile>> {
            Ok(Box::new(TestFile(StdFs.create(path)?, self.clone())))
        }
        fn open_append(&self, path: &Path) -> io::Result<Box<dyn FsFile>> {
            Ok(Box::new(TestFile(StdFs.open_append(path)?, self.clone())))
        }
        fn open_write(&self, path: &Path) -> io::Result<Box<dyn FsFile>> {
            Ok(Box::new(TestFile(StdFs.open_write(path)?, self.clone())))
        }
        fn set_len(&self, path: &Path, len: u64) -> io::Result<()> {
            StdFs.set_len(path, len)
        }
        fn sync_file(&self, path: &Path, data_only: bool) -> io::Result<()> {
            if data_only {
                self.sync()?;
            }
            StdFs.sync_file(path, data_only)
        }
        fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
            StdFs.rename(from, to)
        }
        fn remove_file(&self, path: &Path) -> io::Result<()> {
            StdFs.remove_file(path)
        }
        fn lock_dir(&self, dir: &Path) -> Result<DirGuard, StorageError> {
            StdFs.lock_dir(dir)
        }
        fn unpredictable_u64(&self, seq: u64) -> u64 {
            StdFs.unpredictable_u64(seq)
        }
    }

    fn entry(index: u64) -> Entry {
        Entry {
            term: Term(1),
            index: LogIndex(index),
            kind: EntryKind::Normal,
            data: Bytes::from(format!("entry {index}")),
        }
    }

    fn round(index: u64) -> Vec<RoundWrite> {
        vec![
            RoundWrite::Append(vec![entry(index)]),
            RoundWrite::HardState(HardState {
                term: Term(1),
                vote: None,
                commit: LogIndex(index - 1),
            }),
        ]
    }

    fn start(dir: &Path, fs: &TestFs) -> (PersistStage, mpsc::UnboundedReceiver<PersistDone>) {
        let options = StorageOptions {
            preallocate: false,
            ..StorageOptions::default()
        };
        let (storage, _) = Storage::open_in(Arc::new(fs.clone()), dir, options).unwrap();
        let mut stage = PersistStage::start(storage, Arc::new(Metrics::default())).unwrap();
        let done = stage.take_completions().unwrap();
        (stage, done)
    }

    fn next(done: &mut mpsc::UnboundedReceiver<PersistDone>) -> PersistDone {
        done.blocking_recv().expect("the stage answers")
    }

    /// Pipelining and group commit: rounds queued while an fsync is in
    /// flight are written after it and share the next fsync, which
    /// acknowledges the newest of them (raft-core takes it for all). What
    /// was acknowledged survives a restart.
    #[test]
    fn rounds_queued_during_an_fsync_share_the_next_and_are_acknowledged_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let fs = TestFs::default();
        let (stage, mut done) = start(dir.path(), &fs);
        let (started_tx, started) = std_mpsc::channel();
        let (go, go_rx) = std_mpsc::channel();
        let syncs_before = {
            let mut control = fs.0.lock().unwrap();
            control.hold = Some((started_tx, go_rx));
            control.syncs
        };
        stage.round(1, round(1), true).unwrap();
        started.recv_timeout(Duration::from_secs(10)).unwrap();
        // The fsync of round 1 is in flight: the driver goes on.
        for ready in 2..=4 {
            stage.round(ready, round(ready), true).unwrap();
        }
        // A round that only moved the commit index, queued behind them.
        let commit_only = vec![RoundWrite::HardState(HardState {
            term: Term(1),
            vote: None,
            commit: LogIndex(4),
        })];
        stage.round(5, commit_only, false).unwrap();
        assert!(done.try_recv().is_err(), "nothing durable yet");
        go.send(()).unwrap();
        assert_eq!(next(&mut done).unwrap(), 1);
        assert_eq!(next(&mut done).unwrap(), 5, "one acknowledgement for 2..=5");
        assert_eq!(
            fs.0.lock().unwrap().syncs - syncs_before,
            2,
            "rounds 2 to 5 share one fsync"
        );
        drop(stage);
        let (_, recovered) = Storage::open(dir.path(), StorageOptions::default()).unwrap();
        let indexes: Vec<u64> = recovered.entries.iter().map(|e| e.index.0).collect();
        assert_eq!(indexes, [1, 2, 3, 4]);
        assert_eq!(recovered.hard_state.commit, LogIndex(4));
    }

    /// Fail-stop: a failed fdatasync is reported to the driver (which stops
    /// the node) instead of an acknowledgement, leaves kv-storage's
    /// `FSYNC_FAILED` marker, and every later round and call fails too.
    #[test]
    fn a_failed_fsync_is_reported_and_the_stage_writes_nothing_more() {
        let dir = tempfile::tempdir().unwrap();
        let fs = TestFs::default();
        let (stage, mut done) = start(dir.path(), &fs);
        stage.round(1, round(1), true).unwrap();
        assert_eq!(next(&mut done).unwrap(), 1);
        fs.0.lock().unwrap().fail = true;
        stage.round(2, round(2), true).unwrap();
        let failed = next(&mut done).unwrap_err();
        assert!(
            matches!(failed, StorageError::Io { .. }),
            "the fsync error is reported: {failed}"
        );
        assert!(dir.path().join(kv_storage::FSYNC_FAILED_MARKER).exists());
        stage.round(3, round(3), true).unwrap();
        assert!(next(&mut done).is_err(), "no round is written after it");
        assert!(stage.call(|_| Ok(())).is_err(), "no call runs after it");
        drop(stage);
        assert!(matches!(
            Storage::open(dir.path(), StorageOptions::default()),
            Err(StorageError::FsyncFailedEarlier { .. })
        ));
    }
    /// Another thread's call (the snapshot writer's prepare and finish)
    /// waits behind an fsync in flight; the driver's end does not: it
    /// queues rounds meanwhile, and the call runs after the rounds queued
    /// before it, with them durable.
    #[test]
    fn a_callers_wait_for_an_fsync_does_not_stop_the_driver() {
        let dir = tempfile::tempdir().unwrap();
        let fs = TestFs::default();
        let (stage, mut done) = start(dir.path(), &fs);
        let (started_tx, started) = std_mpsc::channel();
        let (go, go_rx) = std_mpsc::channel();
        fs.0.lock().unwrap().hold = Some((started_tx, go_rx));
        stage.round(1, round(1), true).unwrap();
        started.recv_timeout(Duration::from_secs(10)).unwrap();
        let caller = stage.caller().unwrap();
        let (called_tx, called) = std_mpsc::channel();
        let writer = std::thread::spawn(move || {
            let last = caller.call(|storage| Ok(storage.last_index())).unwrap();
            called_tx.send(last).unwrap();
        });
        // The call waits behind the held fsync; the driver goes on.
        stage.round(2, round(2), true).unwrap();
        assert!(called.recv_timeout(Duration::from_millis(50)).is_err());
        go.send(()).unwrap();
        // Round 2 may have been queued before the call or after it.
        let last = called.recv_timeout(Duration::from_secs(10)).unwrap();
        assert!([LogIndex(1), LogIndex(2)].contains(&last), "{last}");
        writer.join().unwrap();
        assert_eq!(next(&mut done).unwrap(), 1);
        assert_eq!(next(&mut done).unwrap(), 2);
    }

    /// A step submitted without waiting that fails stops the stage like a
    /// failed write: the next round reports an error instead of an
    /// acknowledgement.
    #[test]
    fn a_failed_submitted_step_fails_the_next_round() {
        let dir = tempfile::tempdir().unwrap();
        let fs = TestFs::default();
        let (stage, mut done) = start(dir.path(), &fs);
        stage.round(1, round(1), true).unwrap();
        assert_eq!(next(&mut done).unwrap(), 1);
        stage.submit(|_| Err(StorageError::Failed)).unwrap();
        stage.round(2, round(2), true).unwrap();
        assert!(next(&mut done).is_err(), "the failure is reported");
    }
}
