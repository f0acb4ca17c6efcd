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
        let (tx, rx) = std_mpsc::sync_channel(1);
        self.send(Job::Call(Box::new(move |storage| {
            let _ = tx.send(f(storage));
        })))?;
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
