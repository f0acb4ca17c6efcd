//! WAL segment recycling (kv-storage `wal.rs`) on the block disk: a power
//! loss at every file-system step of a compaction that makes spares and of
//! the rolls that reuse them (the spare's new header written, synced, the
//! rename, the directory fsync, the truncation at the next roll) reopens
//! to a log holding every acknowledged entry, with no damage reported.

use kv_storage::fs::{DirGuard, Fs, FsFile};
use kv_storage::{Storage, StorageError, StorageOptions};
use raft_core::{Entry, EntryKind, LogIndex, Membership, NodeId, SnapshotMeta, Term};
use sim::block_fs::{BlockFs, CrashOdds};
use std::io;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::SeqCst};

const DIR: &str = "/data";

fn options() -> StorageOptions {
    StorageOptions {
        segment_size_bytes: 8 * 4096,
        preallocate: false,
        ..StorageOptions::default()
    }
}

fn entry(index: u64, bytes: usize) -> Entry {
    Entry {
        term: Term(1),
        index: LogIndex(index),
        kind: EntryKind::Normal,
        data: bytes::Bytes::from(vec![index as u8; bytes]),
    }
}

/// The block disk, losing power at its `crash_at`-th mutating call.
#[derive(Debug, Clone)]
struct PowerLossAt {
    disk: BlockFs,
    calls: Arc<AtomicU64>,
    crash_at: u64,
    odds: CrashOdds,
}

impl PowerLossAt {
    /// Counts a call; at the chosen one the power goes (the call does not
    /// happen), and every handle of this process is dead from then on.
    fn step(&self) -> io::Result<()> {
        if self.calls.fetch_add(1, SeqCst) == self.crash_at {
            self.disk.crash(true, self.odds);
        }
        Ok(())
    }
}

struct File(Box<dyn FsFile>, PowerLossAt);

impl io::Write for File {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.1.step()?;
        self.0.write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.0.flush()
    }
}

impl FsFile for File {
    fn write_all_at(&mut self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.1.step()?;
        self.0.write_all_at(buf, offset)
    }
    fn sync_data(&mut self) -> io::Result<()> {
        self.1.step()?;
        self.0.sync_data()
    }
    fn sync_all(&mut self) -> io::Result<()> {
        self.1.step()?;
        self.0.sync_all()
    }
    fn preallocate(&mut self, bytes: u64) -> io::Result<()> {
        self.0.preallocate(bytes)
    }
}

impl Fs for PowerLossAt {
    fn is_dir(&self, path: &Path) -> bool {
        self.disk.is_dir(path)
    }
    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        self.step()?;
        self.disk.create_dir_all(dir)
    }
    fn list_dir(&self, dir: &Path) -> io::Result<Vec<String>> {
        self.disk.list_dir(dir)
    }
    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        self.step()?;
        self.disk.sync_dir(dir)
    }
    fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
        self.disk.read(path)
    }
    fn read_at(&self, path: &Path, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        self.disk.read_at(path, offset, buf)
    }
    fn file_len(&self, path: &Path) -> io::Result<u64> {
        self.disk.file_len(path)
    }
    fn create_new(&self, path: &Path) -> io::Result<Box<dyn FsFile>> {
        self.step()?;
        Ok(Box::new(File(self.disk.create_new(path)?, self.clone())))
    }
    fn create(&self, path: &Path) -> io::Result<Box<dyn FsFile>> {
        self.step()?;
        Ok(Box::new(File(self.disk.create(path)?, self.clone())))
    }
    fn open_append(&self, path: &Path) -> io::Result<Box<dyn FsFile>> {
        Ok(Box::new(File(self.disk.open_append(path)?, self.clone())))
    }
    fn open_write(&self, path: &Path) -> io::Result<Box<dyn FsFile>> {
        Ok(Box::new(File(self.disk.open_write(path)?, self.clone())))
    }
    fn set_len(&self, path: &Path, len: u64) -> io::Result<()> {
        self.step()?;
        self.disk.set_len(path, len)
    }
    fn sync_file(&self, path: &Path, data_only: bool) -> io::Result<()> {
        self.step()?;
        self.disk.sync_file(path, data_only)
    }
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        self.step()?;
        self.disk.rename(from, to)
    }
    fn remove_file(&self, path: &Path) -> io::Result<()> {
        self.step()?;
        self.disk.remove_file(path)
    }
    fn lock_dir(&self, dir: &Path) -> Result<DirGuard, StorageError> {
        self.disk.lock_dir(dir)
    }
    fn unpredictable_u64(&self, seq: u64) -> u64 {
        self.disk.unpredictable_u64(seq)
    }
}

/// A disk whose WAL holds large entries 1..=12 in six full segments
/// (ten blocks each, longer than a segment of small batches).
fn prepared_disk(seed: u64) -> BlockFs {
    let disk = BlockFs::new(seed).next_process();
    let (mut storage, _) = Storage::open_in(Arc::new(disk.clone()), Path::new(DIR), options())
        .expect("open a fresh disk");
    for index in 1..=12 {
        storage.append(&[entry(index, 14_000)]).unwrap();
        storage.sync().unwrap();
    }
    drop(storage);
    disk
}

/// Snapshot at 12 (two covered segments become spares), then small
/// entries from 13 on, one sync each, until two rolls recycled spares.
/// Returns the last entry whose sync returned Ok.
fn compact_and_recycle(fs: &PowerLossAt) -> u64 {
    let Ok((mut storage, _)) = Storage::open_in(Arc::new(fs.clone()), Path::new(DIR), options())
    else {
        return 12;
    };
    let meta = SnapshotMeta {
        index: LogIndex(12),
        term: Term(1),
        membership: Membership::new([NodeId(1)]),
    };
    if storage
        .save_snapshot(&meta, |w| w.write_all(b"state at 12"))
        .is_err()
    {
        return 12;
    }
    let mut acknowledged = 12;
    for index in 13..=26 {
        if storage.append(&[entry(index, 100)]).is_err() || storage.sync().is_err() {
            break;
        }
        acknowledged = index;
    }
    acknowledged
}

#[test]
fn a_power_loss_at_any_step_of_compaction_and_recycling_keeps_every_acknowledged_entry() {
    let steps =
        every_power_loss_keeps_what_was_acknowledged(prepared_disk, compact_and_recycle, (26, 2));
    assert!(steps > 40, "{steps} steps");
}

/// A fresh disk, small entries until the storage wants a spare, the spare
/// made from zeros (kv-node's `wal-spare` thread) and rolled into at once,
/// then more entries. Returns the last entry whose sync returned Ok.
fn fill_and_roll(fs: &PowerLossAt) -> u64 {
    let Ok((mut storage, _)) = Storage::open_in(Arc::new(fs.clone()), Path::new(DIR), options())
    else {
        return 0;
    };
    let mut acknowledged = 0;
    let mut filled = false;
    for index in 1..=20 {
        if storage.append(&[entry(index, 100)]).is_err() || storage.sync().is_err() {
            return acknowledged;
        }
        acknowledged = index;
        if !filled {
            match storage.make_wanted_spare_now() {
                Ok(made) => filled = made,
                Err(_) => return acknowledged,
            }
        }
    }
    acknowledged
}

#[test]
fn a_power_loss_at_any_step_of_making_a_spare_and_rolling_into_it_keeps_every_acknowledged_entry() {
    let steps = every_power_loss_keeps_what_was_acknowledged(
        |seed| BlockFs::new(seed).next_process(),
        fill_and_roll,
        (20, 1),
    );
    assert!(steps > 20, "{steps} steps");
}

/// Runs `work` on a disk from `prepare` once to count its file-system
/// steps (with no loss it must acknowledge `clean.0` entries and recycle
/// `clean.1` spares), then once per step with the power
/// lost there, in three crash models: the reopened log holds every entry
/// acknowledged (and perhaps the one being written), reports no damage,
/// and goes on. Returns the number of steps.
fn every_power_loss_keeps_what_was_acknowledged(
    prepare: fn(u64) -> BlockFs,
    work: fn(&PowerLossAt) -> u64,
    clean: (u64, u64),
) -> u64 {
    let all_steps = {
        let fs = PowerLossAt {
            disk: prepare(1),
            calls: Arc::new(AtomicU64::new(0)),
            crash_at: u64::MAX,
            odds: CrashOdds {
                written_percent: 0,
                lost_percent: 0,
            },
        };
        assert_eq!(work(&fs), clean.0);
        assert_eq!(fs.disk.recycled_segments(), clean.1, "spares reused");
        fs.calls.load(SeqCst)
    };
    let odds = [(0, 100), (100, 0), (34, 33)];
    for crash_at in 0..=all_steps {
        for (round, (written_percent, lost_percent)) in odds.into_iter().enumerate() {
            let seed = crash_at * 10 + round as u64;
            let fs = PowerLossAt {
                disk: prepare(seed),
                calls: Arc::new(AtomicU64::new(0)),
                crash_at,
                odds: CrashOdds {
                    written_percent,
                    lost_percent,
                },
            };
            let acknowledged = work(&fs);
            let disk = fs.disk.next_process();
            let (mut storage, recovered) =
                Storage::open_in(Arc::new(disk.clone()), Path::new(DIR), options())
                    .unwrap_or_else(|e| panic!("power lost at step {crash_at} (seed {seed}): {e}"));
            let context = format!(
                "power lost at step {crash_at} (seed {seed}), acknowledged {acknowledged}: {:?}",
                recovered.warnings
            );
            assert_eq!(recovered.damaged_up_to_term, None, "{context}");
            let last = storage.last_index().0;
            assert!(
                last == acknowledged || last == acknowledged + 1,
                "log ends at {last}; {context}"
            );
            let first = recovered.entries.first().map(|e| e.index.0);
            let snapshot = recovered.snapshot.as_ref().map_or(0, |(m, _)| m.index.0);
            assert!(first.is_none_or(|first| first == snapshot + 1), "{context}");
            // The log goes on: more rolls, and a reopen after a clean stop.
            for index in last + 1..=last + 14 {
                storage.append(&[entry(index, 100)]).unwrap();
                storage.sync().unwrap();
            }
            drop(storage);
            let disk = disk.next_process();
            let (storage, _) = Storage::open_in(Arc::new(disk), Path::new(DIR), options())
                .unwrap_or_else(|e| panic!("reopen after {context}: {e}"));
            assert_eq!(storage.last_index(), LogIndex(last + 14), "{context}");
        }
    }
    all_steps
}
