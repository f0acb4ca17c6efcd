//! The free-space threshold: below it a node refuses new proposals (503
//! `disk_full`) so that the room left goes to what keeps it alive and frees
//! space: hard-state records, the entries already in flight, snapshots and
//! the compaction they allow. Reads keep being served.

use std::io;
use std::path::PathBuf;
use std::sync::Arc;

/// Asks how many bytes are free. Injectable so tests need no full disk.
pub type FreeSpaceProbe = Arc<dyn Fn() -> io::Result<u64> + Send + Sync>;

/// The cached answer of the probe; the driver refreshes it once a second.
pub struct DiskSpace {
    probe: Option<FreeSpaceProbe>,
    min_free_bytes: u64,
    /// The free bytes measured when below the threshold, else None.
    low: Option<u64>,
}

impl DiskSpace {
    /// No threshold: never refuses.
    pub fn unlimited() -> DiskSpace {
        DiskSpace {
            probe: None,
            min_free_bytes: 0,
            low: None,
        }
    }

    /// The file system holding `dir`; 0 turns the threshold off.
    pub fn for_dir(dir: PathBuf, min_free_bytes: u64) -> DiskSpace {
        let probe: FreeSpaceProbe = Arc::new(move || crate::storage::free_bytes(&dir));
        DiskSpace::with_probe(probe, min_free_bytes)
    }

    pub fn with_probe(probe: FreeSpaceProbe, min_free_bytes: u64) -> DiskSpace {
        let mut space = DiskSpace {
            probe: (min_free_bytes > 0).then_some(probe),
            min_free_bytes,
            low: None,
        };
        space.refresh();
        space
    }

    /// Measures again. A failing probe keeps the previous answer (logged):
    /// refusing every write because statvfs failed would be worse.
    pub fn refresh(&mut self) {
        let Some(probe) = &self.probe else {
            return;
        };
        match probe() {
            Ok(free) => {
                let low = (free < self.min_free_bytes).then_some(free);
                if low.is_some() != self.low.is_some() {
                    if low.is_some() {
                        tracing::warn!(
                            free_bytes = free,
                            min_free_bytes = self.min_free_bytes,
                            "disk almost full: refusing new writes"
                        );
                    } else {
                        tracing::info!(
                            free_bytes = free,
                            "disk space recovered: accepting writes again"
                        );
                    }
                }
                self.low = low;
            }
            Err(error) => tracing::warn!(%error, "cannot measure free disk space"),
        }
    }

    /// Why a new proposal must be refused now, if it must.
    pub fn refusal(&self) -> Option<String> {
        self.low.map(|free| {
            format!(
                "disk almost full: {free} bytes free, below the threshold of {} bytes (--min-free-disk-mb); writes are refused until space is freed",
                self.min_free_bytes
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

    #[test]
    fn writes_are_refused_below_the_threshold_and_accepted_again_when_space_frees() {
        let free = Arc::new(AtomicU64::new(10_000));
        let probe_free = free.clone();
        let mut space =
            DiskSpace::with_probe(Arc::new(move || Ok(probe_free.load(Relaxed))), 5_000);
        assert_eq!(space.refusal(), None);
        free.store(4_999, Relaxed);
        space.refresh();
        let refusal = space.refusal().expect("below the threshold");
        assert!(refusal.contains("disk almost full"), "{refusal}");
        free.store(5_000, Relaxed);
        space.refresh();
        assert_eq!(space.refusal(), None);
    }

    #[test]
    fn a_failing_probe_keeps_the_last_answer_and_a_zero_threshold_never_refuses() {
        let mut space = DiskSpace::with_probe(Arc::new(|| Ok(1)), 0);
        assert_eq!(space.refusal(), None);
        let calls = Arc::new(AtomicU64::new(0));
        let counted = calls.clone();
        space = DiskSpace::with_probe(
            Arc::new(move || {
                if counted.fetch_add(1, Relaxed) == 0 {
                    Ok(1)
                } else {
                    Err(io::Error::other("statvfs failed"))
                }
            }),
            100,
        );
        assert!(space.refusal().is_some());
        space.refresh();
        assert!(space.refusal().is_some());
        assert_eq!(calls.load(Relaxed), 2);
    }
}
