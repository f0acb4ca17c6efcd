//! Makes spare WAL segments from zeros on a thread of its own, for the
//! persist stage (kv-storage `Storage::spare_wanted`).
//!
//! A WAL roll that finds no spare creates a new file, whose fdatasyncs then
//! write the inode as well as the data (ext4: two I/Os per put at one
//! connection; 0.55-0.57 ms against 0.48-0.50 ms per put measured here).
//! Compaction keeps spares only as fast as snapshots come, so when the
//! active segment is half full and no spare is kept, one is made here,
//! paced, while the persist thread goes on writing. Like etcd's WAL file
//! pipeline, which preallocates the next segment in the background.

use crate::storage::{SpareFill, Storage, StorageError};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::Duration;

/// Free space a fill must leave: a spare is an optimization, never worth
/// the room that hard states, snapshots and compaction need.
const MIN_FREE_AFTER_FILL: u64 = 1 << 30;
/// Pause after each chunk (256 KiB) so that the zeros share the disk with
/// the WAL's own writes instead of queueing ahead of them.
const PACE: Duration = Duration::from_millis(1);

type Made = Result<PathBuf, StorageError>;

/// The persist thread's end: hands out fills and takes back spares.
pub(crate) struct SpareMaker {
    fills: Option<mpsc::Sender<SpareFill>>,
    made: mpsc::Receiver<Made>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl SpareMaker {
    /// Starts the thread; None if it cannot be started (then rolls create
    /// files, as without spares).
    pub(crate) fn start() -> Option<SpareMaker> {
        let (fills, fills_rx) = mpsc::channel::<SpareFill>();
        let (made_tx, made) = mpsc::channel();
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        let thread = std::thread::Builder::new()
            .name("wal-spare".into())
            .spawn(move || {
                for fill in fills_rx {
                    let result = make(fill, &stopped);
                    if made_tx.send(result).is_err() {
                        return;
                    }
                }
            })
            .map_err(|error| tracing::warn!(%error, "cannot start the spare WAL segment thread"))
            .ok()?;
        Some(SpareMaker {
            fills: Some(fills),
            made,
            stop,
            thread: Some(thread),
        })
    }

    /// Gives the storage the spares made since the last call, then asks it
    /// whether it wants another. Called by the persist thread between
    /// batches, so a spare made is in the pool before the next roll.
    ///
    /// Adopting a spare may roll the WAL into it; a storage error there
    /// leaves the storage failed, so the next round's write reports it and
    /// the node stops, as for any failed write.
    pub(crate) fn tend(&self, storage: &mut Storage) {
        while let Ok(made) = self.made.try_recv() {
            if let Ok(spare) = &made {
                tracing::debug!(spare = %spare.display(), "spare WAL segment made");
            }
            if let Err(error) = storage.spare_filled(made) {
                tracing::error!(%error, "rolling the WAL into a spare segment failed; the node stops");
                return;
            }
        }
        if let Some(fill) = storage.spare_wanted() {
            let sent = self.fills.as_ref().map(|fills| fills.send(fill));
            if !matches!(sent, Some(Ok(()))) {
                // The thread is gone: no spare comes back, and the storage
                // must not wait for one.
                let _ = storage.spare_filled(Err(StorageError::Failed));
            }
        }
    }
}

impl Drop for SpareMaker {
    /// Stops a fill in progress (its file is removed) and waits for the
    /// thread, so nothing writes in the data directory after the storage
    /// is released.
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        self.fills = None;
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Makes one spare, if the file system has room for it and the margin.
fn make(fill: SpareFill, stop: &AtomicBool) -> Made {
    let dir = fill.dir().to_path_buf();
    let free = crate::storage::free_bytes(&dir).map_err(|source| StorageError::Io {
        op: "measure free space for a spare WAL segment",
        path: dir.clone(),
        source,
    })?;
    if free < fill.bytes().saturating_add(MIN_FREE_AFTER_FILL) {
        return Err(StorageError::Io {
            op: "make a spare WAL segment",
            path: dir,
            source: std::io::Error::other(format!(
                "{free} bytes free: a spare of {} bytes would leave less than {MIN_FREE_AFTER_FILL}",
                fill.bytes()
            )),
        });
    }
    fill.run(|| {
        if stop.load(Ordering::Relaxed) {
            return Err(std::io::Error::other("the node is stopping"));
        }
        std::thread::sleep(PACE);
        Ok(())
    })
}
