//! Segment recycling (`wal.rs`): rolls reuse the files of compacted
//! segments, recovery drops their stale blocks, and a crash at any step
//! leaves the same log.

use super::tests::entry;
use super::*;
use crate::fs::{DirGuard, Fs, FsFile, StdFs};
use batch::BLOCK_BYTES;
use raft_core::{Membership, NodeId, Term};
use std::fs;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::sync::atomic::{AtomicU64, Ordering::SeqCst};

/// Eight blocks. In the first phase a segment holds a header, the opening
/// hard state and two large entries (four blocks each): ten blocks, so a
/// spare is longer than a segment of small batches needs.
const SEGMENT_BYTES: u64 = 8 * BLOCK_BYTES;
const SPARE_BYTES: u64 = 10 * BLOCK_BYTES;

fn options() -> StorageOptions {
    StorageOptions {
        segment_size_bytes: SEGMENT_BYTES,
        preallocate: false,
        ..StorageOptions::default()
    }
}

/// An entry whose batch takes four blocks, so that a segment of them
/// leaves stale blocks behind the small batches of its next life.
fn large_entry(index: u64) -> Entry {
    Entry {
        data: bytes::Bytes::from(vec![index as u8; 14_000]),
        ..entry(index, 1)
    }
}

fn meta(index: u64) -> SnapshotMeta {
    SnapshotMeta {
        index: LogIndex(index),
        term: Term(1),
        membership: Membership::new([NodeId(1)]),
    }
}

fn sync_one(storage: &mut Storage, entry: Entry) {
    storage.append(&[entry]).unwrap();
    storage.sync().unwrap();
}

fn files_ending(dir: &Path, suffix: &str) -> Vec<PathBuf> {
    let mut found: Vec<PathBuf> = fs::read_dir(dir.join(WAL_DIR))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().ends_with(suffix))
        .collect();
    found.sort();
    found
}

fn cut_files(dir: &Path) -> usize {
    fs::read_dir(dir.join(WAL_CUT_DIR)).map_or(0, |listing| listing.count())
}

/// Large entries 1..=12 in six full segments, then a snapshot at 12:
/// two of the six covered segments become spares, four are deleted.
fn storage_with_spares(dir: &Path) -> Storage {
    let (mut storage, _) = Storage::open(dir, options()).unwrap();
    for index in 1..=12 {
        sync_one(&mut storage, large_entry(index));
    }
    storage
        .save_snapshot(&meta(12), |w| w.write_all(b"state at 12"))
        .unwrap();
    assert_eq!(files_ending(dir, ".spare").len(), wal::MAX_SPARES);
    assert_eq!(files_ending(dir, ".wal").len(), 1);
    storage
}

#[test]
fn a_roll_reuses_a_spare_file_and_the_reused_segment_reads_back() {
    let dir = tempfile::tempdir().unwrap();
    let mut storage = storage_with_spares(dir.path());
    let spare_inodes: Vec<u64> = files_ending(dir.path(), ".spare")
        .iter()
        .map(|p| fs::metadata(p).unwrap().ino())
        .collect();
    // Six small batches fill the active segment; the roll takes a spare.
    for index in 13..=19 {
        sync_one(&mut storage, entry(index, 1));
    }
    assert_eq!(storage.wal_recycled_rolls(), 1);
    assert_eq!(files_ending(dir.path(), ".spare").len(), 1);
    let active = storage.wal.segment_paths().pop().unwrap();
    assert!(spare_inodes.contains(&fs::metadata(&active).unwrap().ino()));
    // Header, opening hard state, entry 19: the rest is the old segment's.
    assert_eq!(fs::metadata(&active).unwrap().len(), SPARE_BYTES);
    drop(storage);
    let (storage, recovered) = Storage::open(dir.path(), options()).unwrap();
    assert!(recovered.warnings.is_empty(), "{:?}", recovered.warnings);
    let expected: Vec<Entry> = (13..=19).map(|i| entry(i, 1)).collect();
    assert_eq!(recovered.entries, expected);
    assert_eq!(storage.last_index(), LogIndex(19));
}

#[test]
fn a_recycled_last_segment_opens_clean_truncated_at_its_valid_end_without_cut_files() {
    let dir = tempfile::tempdir().unwrap();
    let mut storage = storage_with_spares(dir.path());
    for index in 13..=19 {
        sync_one(&mut storage, entry(index, 1));
    }
    let active = storage.wal.segment_paths().pop().unwrap();
    drop(storage);
    let (_, recovered) = Storage::open(dir.path(), options()).unwrap();
    assert!(recovered.warnings.is_empty(), "{:?}", recovered.warnings);
    assert_eq!(recovered.damaged_up_to_term, None);
    assert_eq!(fs::metadata(&active).unwrap().len(), 3 * BLOCK_BYTES);
    assert_eq!(cut_files(dir.path()), 0);
}

#[test]
fn a_recycled_segment_that_is_rolled_past_is_truncated_to_its_valid_end() {
    let dir = tempfile::tempdir().unwrap();
    let mut storage = storage_with_spares(dir.path());
    // 13..=18 fill the fresh segment, 19..=24 the first recycled one.
    for index in 13..=25 {
        sync_one(&mut storage, entry(index, 1));
    }
    assert_eq!(storage.wal_recycled_rolls(), 2);
    let paths = storage.wal.segment_paths();
    let closed = &paths[paths.len() - 2];
    let len = fs::metadata(closed).unwrap().len();
    assert_eq!(len, SEGMENT_BYTES, "valid to its end, not the spare's");
    drop(storage);
    let (_, recovered) = Storage::open(dir.path(), options()).unwrap();
    assert!(recovered.warnings.is_empty(), "{:?}", recovered.warnings);
    assert_eq!(
        recovered.entries.last().map(|e| e.index),
        Some(LogIndex(25))
    );
}

/// A storage whose active segment is recycled and holds small entries
/// 19..=21 after its opening hard state; returns the segment's path.
fn recycled_active_with_three_batches(dir: &Path) -> PathBuf {
    let mut storage = storage_with_spares(dir);
    for index in 13..=21 {
        sync_one(&mut storage, entry(index, 1));
    }
    assert_eq!(storage.wal_recycled_rolls(), 1);
    storage.wal.segment_paths().pop().unwrap()
}

#[test]
fn a_torn_batch_in_a_recycled_segment_is_a_torn_tail_dropped_with_the_stale_blocks() {
    let dir = tempfile::tempdir().unwrap();
    let active = recycled_active_with_three_batches(dir.path());
    // Batch 3 (entry 21) at block 4: its body torn, its header intact.
    let mut raw = fs::read(&active).unwrap();
    let at = 4 * BLOCK_BYTES as usize + batch::BATCH_HEADER_BYTES + 5;
    raw[at] ^= 0xff;
    fs::write(&active, &raw).unwrap();
    let (_, recovered) = Storage::open(dir.path(), options()).unwrap();
    assert_eq!(recovered.damaged_up_to_term, None);
    assert_eq!(
        recovered.entries.last().map(|e| e.index),
        Some(LogIndex(20))
    );
    assert_eq!(recovered.warnings.len(), 1, "{:?}", recovered.warnings);
    assert!(recovered.warnings[0].contains("torn write"));
    assert_eq!(fs::metadata(&active).unwrap().len(), 4 * BLOCK_BYTES);
    assert_eq!(cut_files(dir.path()), 0);
}

#[test]
fn damage_followed_by_a_valid_batch_in_a_recycled_segment_is_damage_to_acknowledged_data() {
    let dir = tempfile::tempdir().unwrap();
    let active = recycled_active_with_three_batches(dir.path());
    // Batch 2 (entry 20) at block 3 lost; batch 3 after it is valid.
    let mut raw = fs::read(&active).unwrap();
    raw[3 * BLOCK_BYTES as usize..4 * BLOCK_BYTES as usize].fill(0);
    fs::write(&active, &raw).unwrap();
    let (_, recovered) = Storage::open(dir.path(), options()).unwrap();
    assert!(recovered.damaged_up_to_term.is_some());
    assert_eq!(
        recovered.entries.last().map(|e| e.index),
        Some(LogIndex(19))
    );
    assert!(cut_files(dir.path()) > 0, "damage is kept aside");
}

#[test]
fn spares_beyond_the_pool_or_too_short_are_deleted_at_open() {
    let dir = tempfile::tempdir().unwrap();
    drop(storage_with_spares(dir.path()));
    let wal_dir = dir.path().join(WAL_DIR);
    fs::write(wal_dir.join(format!("{:020}.spare", 90)), [0u8; 100]).unwrap();
    let (_, recovered) = Storage::open(dir.path(), options()).unwrap();
    assert!(recovered.warnings.is_empty(), "{:?}", recovered.warnings);
    assert_eq!(files_ending(dir.path(), ".spare").len(), wal::MAX_SPARES);
    assert!(!wal_dir.join(format!("{:020}.spare", 90)).exists());
}

/// Real files that fail every call from the `crash_at`-th mutating one on,
/// as a process killed there leaves them (every write of the storage is
/// followed by an fdatasync, so the files are also what a power loss
/// keeps, but for names whose directory was not fsynced: the simulator's
/// block disk covers those, `sim/tests/wal_recycling.rs`).
#[derive(Debug, Clone)]
struct KilledAt {
    calls: Arc<AtomicU64>,
    crash_at: u64,
}

impl KilledAt {
    /// Fails every call from the `crash_at`-th mutating one on (u64::MAX:
    /// never, to count a run's steps).
    fn at(crash_at: u64) -> KilledAt {
        KilledAt {
            calls: Arc::new(AtomicU64::new(0)),
            crash_at,
        }
    }

    fn step(&self) -> io::Result<()> {
        if self.calls.fetch_add(1, SeqCst) >= self.crash_at {
            return Err(io::Error::other("killed"));
        }
        Ok(())
    }
}

struct KilledFile(Box<dyn FsFile>, KilledAt);

impl io::Write for KilledFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.1.step()?;
        self.0.write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.0.flush()
    }
}

impl FsFile for KilledFile {
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

impl Fs for KilledAt {
    fn is_dir(&self, path: &Path) -> bool {
        StdFs.is_dir(path)
    }
    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        self.step()?;
        StdFs.create_dir_all(dir)
    }
    fn list_dir(&self, dir: &Path) -> io::Result<Vec<String>> {
        StdFs.list_dir(dir)
    }
    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        self.step()?;
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
        self.step()?;
        Ok(Box::new(KilledFile(StdFs.create_new(path)?, self.clone())))
    }
    fn create(&self, path: &Path) -> io::Result<Box<dyn FsFile>> {
        self.step()?;
        Ok(Box::new(KilledFile(StdFs.create(path)?, self.clone())))
    }
    fn open_append(&self, path: &Path) -> io::Result<Box<dyn FsFile>> {
        Ok(Box::new(KilledFile(StdFs.open_append(path)?, self.clone())))
    }
    fn open_write(&self, path: &Path) -> io::Result<Box<dyn FsFile>> {
        Ok(Box::new(KilledFile(StdFs.open_write(path)?, self.clone())))
    }
    fn set_len(&self, path: &Path, len: u64) -> io::Result<()> {
        self.step()?;
        StdFs.set_len(path, len)
    }
    fn sync_file(&self, path: &Path, data_only: bool) -> io::Result<()> {
        self.step()?;
        StdFs.sync_file(path, data_only)
    }
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        self.step()?;
        StdFs.rename(from, to)
    }
    fn remove_file(&self, path: &Path) -> io::Result<()> {
        self.step()?;
        StdFs.remove_file(path)
    }
    fn lock_dir(&self, dir: &Path) -> Result<DirGuard, StorageError> {
        StdFs.lock_dir(dir)
    }
    fn unpredictable_u64(&self, seq: u64) -> u64 {
        StdFs.unpredictable_u64(seq)
    }
}

/// Snapshot at 12 (spares made), then small entries from 13 until two
/// rolls recycled spares, syncing each, on `fs`. Returns the last entry
/// whose sync returned Ok, stopping at the first error.
fn recycle_twice(fs: &KilledAt, dir: &Path) -> u64 {
    let Ok((mut storage, _)) = Storage::open_in(Arc::new(fs.clone()), dir, options()) else {
        return 12;
    };
    if storage
        .save_snapshot(&meta(12), |w| w.write_all(b"state at 12"))
        .is_err()
    {
        return 12;
    }
    let mut acknowledged = 12;
    for index in 13..=26 {
        if storage.append(&[entry(index, 1)]).is_err() || storage.sync().is_err() {
            break;
        }
        acknowledged = index;
    }
    acknowledged
}

#[test]
fn a_process_killed_at_any_step_of_compaction_and_recycling_reopens_to_the_same_log() {
    let template = tempfile::tempdir().unwrap();
    {
        let (mut storage, _) = Storage::open(template.path(), options()).unwrap();
        for index in 1..=12 {
            sync_one(&mut storage, large_entry(index));
        }
    }
    let unlimited = KilledAt::at(u64::MAX);
    let copy = copy_dir(template.path());
    assert_eq!(recycle_twice(&unlimited, copy.path()), 26);
    let steps = unlimited.calls.load(SeqCst);
    assert!(steps > 40, "{steps} steps");
    for crash_at in 0..steps {
        let dir = copy_dir(template.path());
        let fs = KilledAt::at(crash_at);
        let acknowledged = recycle_twice(&fs, dir.path());
        let (mut storage, recovered) = Storage::open(dir.path(), options())
            .unwrap_or_else(|e| panic!("killed at step {crash_at}: {e}"));
        assert_eq!(recovered.damaged_up_to_term, None, "step {crash_at}");
        let last = storage.last_index().0;
        // The batch being written when the process died may be there too.
        assert!(
            last == acknowledged || last == acknowledged + 1,
            "killed at step {crash_at}: log ends at {last}, acknowledged {acknowledged}"
        );
        let spares = files_ending(dir.path(), ".spare").len();
        assert!(
            spares <= wal::MAX_SPARES,
            "step {crash_at}: {spares} spares"
        );
        // And it goes on: more rolls (recycling what is left) and a reopen.
        for index in last + 1..=last + 14 {
            sync_one(&mut storage, entry(index, 1));
        }
        drop(storage);
        let (storage, _) = Storage::open(dir.path(), options()).unwrap();
        assert_eq!(storage.last_index(), LogIndex(last + 14), "step {crash_at}");
    }
}

fn copy_dir(from: &Path) -> tempfile::TempDir {
    let copy = tempfile::tempdir().unwrap();
    for sub in [WAL_DIR, SNAPSHOT_DIR] {
        let Ok(listing) = fs::read_dir(from.join(sub)) else {
            continue;
        };
        fs::create_dir_all(copy.path().join(sub)).unwrap();
        for item in listing {
            let path = item.unwrap().path();
            fs::copy(&path, copy.path().join(sub).join(path.file_name().unwrap())).unwrap();
        }
    }
    copy
}

/// Seed 773 of the simulator at 5 nodes: repair of a recycled last segment
/// makes a new segment, so the damaged one stops being last. A process
/// killed after that, before the cut, left the recycled segment's stale
/// blocks in a segment that is not the last, where they read as damage
/// with no hard state after it: the node could never start again.
#[test]
fn a_process_killed_at_any_step_of_a_repair_of_a_recycled_segment_reopens_in_repair_mode() {
    let damaged = |dir: &Path| {
        let active = recycled_active_with_three_batches(dir);
        // Batch 2 (entry 20) at block 3 lost; batch 3 after it is valid,
        // and stale blocks of the file's former segment follow.
        let mut raw = fs::read(&active).unwrap();
        assert!(raw.len() as u64 > 5 * BLOCK_BYTES, "stale blocks follow");
        raw[3 * BLOCK_BYTES as usize..4 * BLOCK_BYTES as usize].fill(0);
        fs::write(&active, &raw).unwrap();
    };
    let unlimited = KilledAt::at(u64::MAX);
    let dir = tempfile::tempdir().unwrap();
    damaged(dir.path());
    Storage::open_in(Arc::new(unlimited.clone()), dir.path(), options()).unwrap();
    let steps = unlimited.calls.load(SeqCst);
    assert!(steps > 5, "{steps} steps");
    for crash_at in 0..steps {
        let dir = tempfile::tempdir().unwrap();
        damaged(dir.path());
        let fs = KilledAt::at(crash_at);
        assert!(
            Storage::open_in(Arc::new(fs), dir.path(), options()).is_err(),
            "step {crash_at} is before the end"
        );
        let (storage, recovered) = Storage::open(dir.path(), options())
            .unwrap_or_else(|e| panic!("killed at step {crash_at}: {e}"));
        assert!(recovered.damaged_up_to_term.is_some(), "step {crash_at}");
        assert_eq!(storage.last_index(), LogIndex(19), "step {crash_at}");
        drop(storage);
        // Repaired on disk: the next open finds a clean log.
        let (storage, _) = Storage::open(dir.path(), options()).unwrap();
        assert_eq!(storage.last_index(), LogIndex(19), "step {crash_at}");
    }
}

/// Small entries synced one by one on a fresh storage until it asks for a
/// spare (its active segment half full); returns the last index written.
fn write_until_a_spare_is_wanted(storage: &mut Storage, from: u64) -> (u64, SpareFill) {
    for index in from..from + 100 {
        sync_one(storage, entry(index, 1));
        if let Some(fill) = storage.spare_wanted() {
            return (index, fill);
        }
    }
    panic!("no spare wanted after 100 batches");
}

#[test]
fn a_spare_made_from_zeros_is_rolled_into_at_once_and_reads_back() {
    let dir = tempfile::tempdir().unwrap();
    let (mut storage, _) = Storage::open(dir.path(), options()).unwrap();
    sync_one(&mut storage, entry(1, 1));
    assert!(
        storage.spare_wanted().is_none(),
        "a fresh segment is not worth leaving yet"
    );
    let (last, fill) = write_until_a_spare_is_wanted(&mut storage, 2);
    assert!(storage.spare_wanted().is_none(), "one fill at a time");
    let spare = fill.run(|| Ok(())).unwrap();
    assert!(spare.to_string_lossy().ends_with(".spare"));
    assert_eq!(fs::metadata(&spare).unwrap().len(), SEGMENT_BYTES);
    assert!(files_ending(dir.path(), ".fill").is_empty());
    storage.spare_filled(Ok(spare)).unwrap();
    // The active segment was a new file: the WAL moved into the spare.
    assert_eq!(storage.wal_recycled_rolls(), 1);
    assert!(files_ending(dir.path(), ".spare").is_empty());
    assert!(
        storage.spare_wanted().is_none(),
        "a recycled segment asks for the next spare only when half full"
    );
    for index in last + 1..=last + 3 {
        sync_one(&mut storage, entry(index, 1));
    }
    drop(storage);
    let (storage, recovered) = Storage::open(dir.path(), options()).unwrap();
    assert!(recovered.warnings.is_empty(), "{:?}", recovered.warnings);
    assert_eq!(recovered.damaged_up_to_term, None);
    assert_eq!(storage.last_index(), LogIndex(last + 3));
    assert_eq!(recovered.entries.len() as u64, last + 3);
}

#[test]
fn a_spare_that_cannot_be_made_leaves_no_file_and_the_wal_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let (mut storage, _) = Storage::open(dir.path(), options()).unwrap();
    let (last, fill) = write_until_a_spare_is_wanted(&mut storage, 1);
    // As a full disk does: the fill stops with an error after one chunk.
    let made = fill.run(|| Err(io::Error::other("no space left on device")));
    assert!(made.is_err());
    assert!(
        files_ending(dir.path(), ".fill").is_empty(),
        "the partial file is removed"
    );
    storage.spare_filled(made).unwrap();
    assert_eq!(storage.wal_recycled_rolls(), 0);
    // Asked again later; meanwhile the WAL rolls into new files as before.
    assert!(storage.spare_wanted().is_some());
    storage.spare_filled(Err(StorageError::Failed)).unwrap();
    for index in last + 1..=last + 20 {
        sync_one(&mut storage, entry(index, 1));
    }
    drop(storage);
    let (storage, recovered) = Storage::open(dir.path(), options()).unwrap();
    assert_eq!(storage.last_index(), LogIndex(last + 20));
    assert!(recovered.warnings.is_empty(), "{:?}", recovered.warnings);
}

#[test]
fn a_fill_file_left_by_a_crash_is_removed_at_open_and_spare_names_never_repeat() {
    let dir = tempfile::tempdir().unwrap();
    drop(storage_with_spares(dir.path()));
    let wal_dir = dir.path().join(WAL_DIR);
    let fill = wal_dir.join(format!("{:020}.fill", 40));
    fs::write(&fill, vec![0u8; 3 * BLOCK_BYTES as usize]).unwrap();
    let (mut storage, recovered) = Storage::open(dir.path(), options()).unwrap();
    assert!(recovered.warnings.is_empty(), "{:?}", recovered.warnings);
    assert!(!fill.exists());
    // Rolls use up both spares; a spare made from zeros and the spares of
    // the next compaction all get names above every name seen so far.
    let mut index = 13;
    while storage.wal_recycled_rolls() < 2 {
        sync_one(&mut storage, large_entry(index));
        index += 1;
    }
    let (last, fill) = loop {
        sync_one(&mut storage, entry(index, 1));
        if let Some(fill) = storage.spare_wanted() {
            break (index, fill);
        }
        index += 1;
    };
    let made = fill.run(|| Ok(())).unwrap();
    let number = |p: &Path| -> u64 {
        p.file_name().unwrap().to_str().unwrap()[..20]
            .parse()
            .unwrap()
    };
    assert!(number(&made) > 40, "{}", made.display());
    storage.spare_filled(Ok(made.clone())).unwrap();
    assert_eq!(files_ending(dir.path(), ".spare"), vec![made.clone()]);
    for index in last + 1..=last + 12 {
        sync_one(&mut storage, large_entry(index));
    }
    storage
        .save_snapshot(&meta(last + 12), |w| w.write_all(b"state"))
        .unwrap();
    let spares = files_ending(dir.path(), ".spare");
    assert_eq!(spares.len(), wal::MAX_SPARES);
    for spare in &spares {
        assert!(number(spare) > 40, "{}", spare.display());
    }
    drop(storage);
    let (storage, _) = Storage::open(dir.path(), options()).unwrap();
    assert_eq!(storage.last_index(), LogIndex(last + 12));
}

/// Fresh storage, entries until a spare is wanted, the spare made and
/// rolled into, then more entries, all on `fs`. Returns the last entry
/// whose sync returned Ok.
fn fill_and_roll(fs: &KilledAt, dir: &Path) -> u64 {
    let Ok((mut storage, _)) = Storage::open_in(Arc::new(fs.clone()), dir, options()) else {
        return 0;
    };
    let mut acknowledged = 0;
    let mut filled = false;
    for index in 1..=12 {
        if storage.append(&[entry(index, 1)]).is_err() || storage.sync().is_err() {
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
    assert!(filled, "a spare was wanted");
    acknowledged
}

#[test]
fn a_process_killed_at_any_step_of_making_a_spare_and_rolling_into_it_reopens_to_the_same_log() {
    let unlimited = KilledAt::at(u64::MAX);
    let dir = tempfile::tempdir().unwrap();
    assert_eq!(fill_and_roll(&unlimited, dir.path()), 12);
    let steps = unlimited.calls.load(SeqCst);
    assert!(steps > 20, "{steps} steps");
    for crash_at in 0..steps {
        let dir = tempfile::tempdir().unwrap();
        let fs = KilledAt::at(crash_at);
        let acknowledged = fill_and_roll(&fs, dir.path());
        let (mut storage, recovered) = Storage::open(dir.path(), options())
            .unwrap_or_else(|e| panic!("killed at step {crash_at}: {e}"));
        assert_eq!(recovered.damaged_up_to_term, None, "step {crash_at}");
        let last = storage.last_index().0;
        assert!(
            last == acknowledged || last == acknowledged + 1,
            "killed at step {crash_at}: log ends at {last}, acknowledged {acknowledged}"
        );
        assert!(
            files_ending(dir.path(), ".fill").is_empty(),
            "step {crash_at}"
        );
        for index in last + 1..=last + 14 {
            sync_one(&mut storage, entry(index, 1));
        }
        drop(storage);
        let (storage, _) = Storage::open(dir.path(), options()).unwrap();
        assert_eq!(storage.last_index(), LogIndex(last + 14), "step {crash_at}");
    }
}

#[test]
fn a_file_name_numbered_at_the_top_of_the_range_is_refused_at_open_with_a_typed_error() {
    let dir = tempfile::tempdir().unwrap();
    drop(Storage::open(dir.path(), options()).unwrap());
    let forged = dir.path().join(WAL_DIR).join(format!("{}.spare", u64::MAX));
    fs::write(&forged, [0u8; 10]).unwrap();
    let Err(error) = Storage::open(dir.path(), options()) else {
        panic!("a forged spare number at u64::MAX must be refused");
    };
    assert!(matches!(error, StorageError::Corrupt { .. }), "{error}");
    assert!(
        error.to_string().contains("no number for the next spare"),
        "{error}"
    );
}
