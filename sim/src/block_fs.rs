//! A block-level simulated file system under kv-storage's `Fs` trait: the
//! disk that the real WAL and snapshot code runs on in `blockdisk` runs.
//!
//! Each file has a page cache (what the process reads and writes) and its
//! durable blocks (what survives a power loss), 4 KiB each. A write dirties
//! the blocks it touches; `sync_data`/`sync_all` makes the file's dirty
//! blocks and length durable. Names created, renamed or removed in a
//! directory are durable only after `sync_dir` of that directory.
//!
//! What a crash does (the fault model of issue 15):
//! - A process crash (kill -9) keeps the page cache: unsynced writes are
//!   still read back by the next run, and still not durable.
//! - A power loss drops the page cache. Each dirty block independently is
//!   written, lost, or torn (a prefix of its 512-byte sectors written and the
//!   sector being written filled with garbage): writeback is out of order
//!   within an unsynced batch, and a torn rewrite of a block damages the
//!   bytes already in it. An unsynced length change may or may not
//!   survive; each directory's unsynced name changes survive together or not.
//! - An fsync can fail (EIO): each dirty block may or may not have reached
//!   the disk, and the cache marks them clean either way (as Linux does).
//! - Bit rot flips a bit in an old block of a WAL segment: one that a later
//!   sync of the same file followed (never the header block, whose loss
//!   looks like a torn creation by design, nor the newest batch, whose loss
//!   looks like a torn write; see kv-storage `replay.rs`), nor one synced
//!   before the header block (a recycled segment's stale blocks, which
//!   nothing reads: rot there would be a fault that tests nothing).
//! - A capacity: writes beyond it fail with ENOSPC.
//!
//! Directories are durable once created (the storage creates its three
//! once, and fsyncs their parent). Every random choice comes from the
//! file system's own generator, seeded from the run seed and the node: a
//! seed replays exactly.

use crate::rng::SimRng;
use kv_storage::StorageError;
use kv_storage::fs::{DirGuard, Fs, FsFile};
use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

pub const BLOCK_BYTES: usize = 4096;
const SECTOR_BYTES: usize = 512;

/// How a power loss treats each dirty block, in percent (the rest torn).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CrashOdds {
    pub written_percent: u64,
    pub lost_percent: u64,
}

#[derive(Clone, Debug, Default)]
struct Inode {
    cache: Vec<u8>,
    durable: Vec<u8>,
    /// Blocks written since they were last made durable.
    dirty: BTreeSet<usize>,
    /// The length changed since the last sync.
    len_dirty: bool,
    /// Per durable block: the sync generation that made it durable.
    generation: Vec<u64>,
}

impl Inode {
    fn mark_dirty(&mut self, from: usize, to: usize) {
        if to > from {
            self.dirty
                .extend(from / BLOCK_BYTES..to.div_ceil(BLOCK_BYTES));
        }
    }

    fn persist_block(&mut self, block: usize, generation: u64) {
        let start = block * BLOCK_BYTES;
        let end = ((block + 1) * BLOCK_BYTES).min(self.cache.len());
        if start >= end {
            return;
        }
        if self.durable.len() < end {
            self.durable.resize(end, 0);
        }
        self.durable[start..end].copy_from_slice(&self.cache[start..end]);
        self.set_generation(block, generation);
    }

    fn set_generation(&mut self, block: usize, generation: u64) {
        if self.generation.len() <= block {
            self.generation.resize(block + 1, 0);
        }
        self.generation[block] = generation;
    }

    fn sync(&mut self, generation: u64) {
        for block in std::mem::take(&mut self.dirty) {
            self.persist_block(block, generation);
        }
        self.durable.truncate(self.cache.len());
        self.generation
            .truncate(self.cache.len().div_ceil(BLOCK_BYTES));
        self.len_dirty = false;
    }

    fn blocks(&self) -> u64 {
        self.cache.len().div_ceil(BLOCK_BYTES) as u64
    }
}

#[derive(Debug)]
struct State {
    inodes: BTreeMap<u64, Inode>,
    next_inode: u64,
    /// The names the process sees, and those that survive a power loss.
    names: BTreeMap<PathBuf, u64>,
    durable_names: BTreeMap<PathBuf, u64>,
    dirs: BTreeSet<PathBuf>,
    /// Directories with name changes not synced yet.
    dirty_dirs: BTreeSet<PathBuf>,
    generation: u64,
    /// Handles of earlier incarnations fail every call: a dead process
    /// writes nothing more (its storage's drop must not flush).
    incarnation: u64,
    capacity_blocks: Option<u64>,
    /// The next sync fails with EIO; each dirty block reaches the disk with
    /// this probability (ppm).
    fail_next_sync: Option<u64>,
    /// The process is killed inside its next sync (kill -9): nothing is
    /// synced, the page cache keeps what was written.
    kill_in_next_sync: bool,
    rng: SimRng,
    /// Counts of what the model did, for the trace.
    pub torn_blocks: u64,
    pub lost_blocks: u64,
    /// Renames of a spare WAL file to a segment: kv-storage recycling one.
    recycled_segments: u64,
}

/// One node's disk. Cloning gives another handle on the same disk.
#[derive(Clone, Debug)]
pub struct BlockFs {
    state: Arc<Mutex<State>>,
    incarnation: u64,
}

fn dead() -> io::Error {
    io::Error::other("the process that opened this file crashed")
}

/// What the storage error says when the process was killed in an fsync.
pub const KILLED_IN_FSYNC: &str = "killed inside its fsync";

fn parent(path: &Path) -> PathBuf {
    path.parent().map(Path::to_path_buf).unwrap_or_default()
}

impl BlockFs {
    /// An empty disk whose randomness is drawn from `seed`.
    pub fn new(seed: u64) -> BlockFs {
        let mut dirs = BTreeSet::new();
        dirs.insert(PathBuf::from("/"));
        BlockFs {
            state: Arc::new(Mutex::new(State {
                inodes: BTreeMap::new(),
                next_inode: 1,
                names: BTreeMap::new(),
                durable_names: BTreeMap::new(),
                dirs,
                dirty_dirs: BTreeSet::new(),
                generation: 0,
                incarnation: 0,
                capacity_blocks: None,
                fail_next_sync: None,
                kill_in_next_sync: false,
                rng: SimRng::new(seed, 3),
                torn_blocks: 0,
                lost_blocks: 0,
                recycled_segments: 0,
            })),
            incarnation: 0,
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Node code that panicked while holding the lock is reported by the
        // world; the disk's state is still what it was.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn live(&self) -> io::Result<MutexGuard<'_, State>> {
        let state = self.lock();
        if state.incarnation != self.incarnation {
            return Err(dead());
        }
        Ok(state)
    }

    /// A handle for the next process to run on this disk; every earlier
    /// handle is dead from now on.
    pub fn next_process(&self) -> BlockFs {
        let mut state = self.lock();
        state.incarnation += 1;
        BlockFs {
            state: self.state.clone(),
            incarnation: state.incarnation,
        }
    }

    /// The process died; with `power_loss` the page cache is gone too, and
    /// each dirty block is written, lost or torn as `odds` say.
    pub fn crash(&self, power_loss: bool, odds: CrashOdds) {
        let mut state = self.lock();
        state.incarnation += 1;
        // An fsync failure armed for the dead process is not the next one's.
        state.fail_next_sync = None;
        state.kill_in_next_sync = false;
        if !power_loss {
            return;
        }
        let state = &mut *state;
        state.generation += 1;
        let generation = state.generation;
        for inode in state.inodes.values_mut() {
            power_loss_of(
                inode,
                generation,
                odds,
                &mut state.rng,
                &mut state.torn_blocks,
                &mut state.lost_blocks,
            );
        }
        for dir in std::mem::take(&mut state.dirty_dirs) {
            if state.rng.coin() {
                sync_names(state, &dir);
            }
        }
        state.names = state.durable_names.clone();
        let live: BTreeSet<u64> = state.names.values().copied().collect();
        state.inodes.retain(|id, _| live.contains(id));
    }

    /// Flips one bit in an old block of a WAL segment (see the module
    /// comment); returns where, or None if no block qualifies.
    pub fn rot_old_block(&self) -> Option<String> {
        let mut state = self.lock();
        let state = &mut *state;
        let mut candidates = Vec::new();
        for (path, id) in &state.durable_names {
            if path.extension().is_none_or(|e| e != "wal") {
                continue;
            }
            let inode = &state.inodes[id];
            let newest = inode.generation.iter().copied().max().unwrap_or(0);
            // Blocks synced before the header block are a recycled file's
            // former life, which nothing reads: rot there finds nothing.
            let header = inode.generation.first().copied().unwrap_or(0);
            let full_blocks = inode.durable.len() / BLOCK_BYTES;
            for block in 1..full_blocks.min(inode.generation.len()) {
                let generation = inode.generation[block];
                if generation < newest && generation >= header {
                    candidates.push((path.clone(), *id, block));
                }
            }
        }
        if candidates.is_empty() {
            return None;
        }
        let (path, id, block) =
            candidates[state.rng.range(0, candidates.len() as u64 - 1) as usize].clone();
        // Within the batch's first bytes, where its header and records are
        // (a flip in the zero padding would change nothing checked).
        let offset = block * BLOCK_BYTES + state.rng.range(0, 63) as usize;
        let bit = 1u8 << state.rng.range(0, 7);
        let inode = state.inodes.get_mut(&id).expect("named");
        inode.durable[offset] ^= bit;
        if offset < inode.cache.len() {
            inode.cache[offset] ^= bit;
        }
        Some(format!("{} offset {offset}", path.display()))
    }

    /// Writes beyond `extra_blocks` more than the disk holds now fail with
    /// ENOSPC; None lifts the limit.
    pub fn set_capacity(&self, extra_blocks: Option<u64>) {
        let mut state = self.lock();
        let used: u64 = state.inodes.values().map(Inode::blocks).sum();
        state.capacity_blocks = extra_blocks.map(|extra| used + extra);
    }

    /// The next fsync fails with EIO; each dirty block reaches the disk
    /// with probability `survive_ppm`.
    pub fn fail_next_sync(&self, survive_ppm: u64) {
        self.lock().fail_next_sync = Some(survive_ppm);
    }

    /// The process is killed inside its next fsync: what it wrote stays in
    /// the page cache, unsynced, for the next process to read.
    pub fn kill_in_next_sync(&self) {
        self.lock().kill_in_next_sync = true;
    }

    /// Whether `path` survives a power loss now.
    pub fn is_durable(&self, path: &Path) -> bool {
        self.lock().durable_names.contains_key(path)
    }

    /// Drops an fsync failure armed for a call that did not fsync.
    pub fn disarm(&self) {
        let mut state = self.lock();
        state.fail_next_sync = None;
        state.kill_in_next_sync = false;
    }

    /// Whether the disk refuses writes for want of space.
    pub fn is_limited(&self) -> bool {
        self.lock().capacity_blocks.is_some()
    }

    /// WAL segments kv-storage made of spare files so far (it renames a
    /// `.spare` to a `.wal`): shows that sweeps reach recycling.
    pub fn recycled_segments(&self) -> u64 {
        self.lock().recycled_segments
    }

    /// (torn, lost) blocks so far.
    pub fn damage_counts(&self) -> (u64, u64) {
        let state = self.lock();
        (state.torn_blocks, state.lost_blocks)
    }

    fn inode_of(state: &State, path: &Path) -> io::Result<u64> {
        state
            .names
            .get(path)
            .copied()
            .ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))
    }

    fn new_file(&self, path: &Path, must_be_new: bool) -> io::Result<Box<dyn FsFile>> {
        let mut state = self.live()?;
        if !state.dirs.contains(&parent(path)) {
            return Err(io::ErrorKind::NotFound.into());
        }
        let id = match state.names.get(path).copied() {
            Some(_) if must_be_new => return Err(io::ErrorKind::AlreadyExists.into()),
            Some(id) => {
                let inode = state.inodes.get_mut(&id).expect("named");
                inode.cache.clear();
                inode.dirty.clear();
                inode.len_dirty = true;
                id
            }
            None => {
                let id = state.next_inode;
                state.next_inode += 1;
                state.inodes.insert(id, Inode::default());
                state.names.insert(path.to_path_buf(), id);
                state.dirty_dirs.insert(parent(path));
                id
            }
        };
        Ok(Box::new(SimFile {
            fs: self.clone(),
            inode: id,
        }))
    }

    fn sync_inode(&self, id: u64) -> io::Result<()> {
        let mut state = self.live()?;
        let state = &mut *state;
        let Some(inode) = state.inodes.get_mut(&id) else {
            return Ok(());
        };
        if std::mem::take(&mut state.kill_in_next_sync) {
            state.incarnation += 1;
            return Err(io::Error::other(KILLED_IN_FSYNC));
        }
        if let Some(survive_ppm) = state.fail_next_sync.take() {
            // Linux marks the pages clean whether or not they were written.
            for block in std::mem::take(&mut inode.dirty) {
                if state.rng.chance_ppm(survive_ppm) {
                    inode.persist_block(block, state.generation);
                }
            }
            return Err(io::Error::from_raw_os_error(5));
        }
        state.generation += 1;
        inode.sync(state.generation);
        Ok(())
    }
}

fn sync_names(state: &mut State, dir: &Path) {
    let under = |p: &Path| p.parent() == Some(dir);
    state.durable_names.retain(|p, _| !under(p));
    for (p, id) in &state.names {
        if under(p) {
            state.durable_names.insert(p.clone(), *id);
        }
    }
}

fn power_loss_of(
    inode: &mut Inode,
    generation: u64,
    odds: CrashOdds,
    rng: &mut SimRng,
    torn: &mut u64,
    lost: &mut u64,
) {
    let new_len = if !inode.len_dirty || rng.coin() {
        inode.cache.len()
    } else {
        inode.durable.len()
    };
    let mut disk = std::mem::take(&mut inode.durable);
    disk.resize(new_len, 0);
    for block in std::mem::take(&mut inode.dirty) {
        let start = block * BLOCK_BYTES;
        let end = ((block + 1) * BLOCK_BYTES).min(new_len);
        if start >= end {
            continue;
        }
        // The new contents of `from..to` (zeros past the cached end).
        let write_new = |disk: &mut [u8], from: usize, to: usize| {
            let cached = inode.cache.len().clamp(from, to);
            disk[from..cached].copy_from_slice(&inode.cache[from..cached]);
            disk[cached..to].fill(0);
        };
        let roll = rng.range(0, 99);
        if roll < odds.written_percent {
            write_new(&mut disk, start, end);
        } else if roll < odds.written_percent + odds.lost_percent {
            *lost += 1;
            continue;
        } else {
            *torn += 1;
            let sectors = rng.range(0, (BLOCK_BYTES / SECTOR_BYTES - 1) as u64) as usize;
            let garbage_from = (start + sectors * SECTOR_BYTES).min(end);
            write_new(&mut disk, start, garbage_from);
            let garbage_to = (garbage_from + SECTOR_BYTES).min(end);
            for byte in &mut disk[garbage_from..garbage_to] {
                *byte = rng.next_u64() as u8;
            }
        }
        if inode.generation.len() <= block {
            inode.generation.resize(block + 1, 0);
        }
        inode.generation[block] = generation;
    }
    inode.generation.truncate(new_len.div_ceil(BLOCK_BYTES));
    inode.cache = disk.clone();
    inode.durable = disk;
    inode.len_dirty = false;
}

/// A file open for appending.
struct SimFile {
    fs: BlockFs,
    inode: u64,
}

impl SimFile {
    /// Writes `buf` at `offset` into the page cache: the blocks touched are
    /// dirty, so a power loss writes, loses or tears each of them, an
    /// overwritten block then keeping its old contents, the new, or a mix
    /// (the same model as an append; see the module comment).
    fn write_at(&mut self, buf: &[u8], offset: usize) -> io::Result<()> {
        let mut state = self.fs.live()?;
        let end = offset + buf.len();
        if let Some(capacity) = state.capacity_blocks {
            let used: u64 = state.inodes.values().map(Inode::blocks).sum();
            let inode = &state.inodes[&self.inode];
            let grown = inode.cache.len().max(end).div_ceil(BLOCK_BYTES) as u64;
            if used - inode.blocks() + grown > capacity {
                return Err(io::ErrorKind::StorageFull.into());
            }
        }
        let inode = state.inodes.get_mut(&self.inode).ok_or_else(dead)?;
        if end > inode.cache.len() {
            inode.cache.resize(end, 0);
            inode.len_dirty = true;
        }
        inode.cache[offset..end].copy_from_slice(buf);
        inode.mark_dirty(offset, end);
        Ok(())
    }
}

impl io::Write for SimFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let end = self
            .fs
            .live()?
            .inodes
            .get(&self.inode)
            .ok_or_else(dead)?
            .cache
            .len();
        self.write_at(buf, end)?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl FsFile for SimFile {
    fn write_all_at(&mut self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.write_at(buf, offset as usize)
    }
    fn sync_data(&mut self) -> io::Result<()> {
        self.fs.sync_inode(self.inode)
    }
    fn sync_all(&mut self) -> io::Result<()> {
        self.fs.sync_inode(self.inode)
    }
    fn preallocate(&mut self, _bytes: u64) -> io::Result<()> {
        Err(io::ErrorKind::Unsupported.into())
    }
}

impl Fs for BlockFs {
    fn is_dir(&self, path: &Path) -> bool {
        self.lock().dirs.contains(path)
    }
    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        let mut state = self.live()?;
        for ancestor in dir.ancestors().filter(|a| !a.as_os_str().is_empty()) {
            state.dirs.insert(ancestor.to_path_buf());
        }
        Ok(())
    }
    fn list_dir(&self, dir: &Path) -> io::Result<Vec<String>> {
        let state = self.live()?;
        if !state.dirs.contains(dir) {
            return Err(io::ErrorKind::NotFound.into());
        }
        let files = state.names.keys();
        let dirs = state.dirs.iter();
        Ok(files
            .chain(dirs)
            .filter(|p| p.parent() == Some(dir))
            .filter_map(|p| p.file_name())
            .map(|n| n.to_string_lossy().into_owned())
            .collect())
    }
    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        let mut state = self.live()?;
        if state.fail_next_sync.take().is_some() {
            return Err(io::Error::from_raw_os_error(5));
        }
        state.dirty_dirs.remove(dir);
        sync_names(&mut state, dir);
        Ok(())
    }
    fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
        let state = self.live()?;
        let id = BlockFs::inode_of(&state, path)?;
        Ok(state.inodes[&id].cache.clone())
    }
    fn read_at(&self, path: &Path, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        let state = self.live()?;
        let id = BlockFs::inode_of(&state, path)?;
        let data = &state.inodes[&id].cache;
        let start = usize::try_from(offset).unwrap_or(usize::MAX);
        let Some(bytes) = start
            .checked_add(buf.len())
            .and_then(|end| data.get(start..end))
        else {
            return Err(io::ErrorKind::UnexpectedEof.into());
        };
        buf.copy_from_slice(bytes);
        Ok(())
    }
    fn file_len(&self, path: &Path) -> io::Result<u64> {
        let state = self.live()?;
        let id = BlockFs::inode_of(&state, path)?;
        Ok(state.inodes[&id].cache.len() as u64)
    }
    fn create_new(&self, path: &Path) -> io::Result<Box<dyn FsFile>> {
        self.new_file(path, true)
    }
    fn create(&self, path: &Path) -> io::Result<Box<dyn FsFile>> {
        self.new_file(path, false)
    }
    fn open_append(&self, path: &Path) -> io::Result<Box<dyn FsFile>> {
        let state = self.live()?;
        let id = BlockFs::inode_of(&state, path)?;
        Ok(Box::new(SimFile {
            fs: self.clone(),
            inode: id,
        }))
    }
    fn open_write(&self, path: &Path) -> io::Result<Box<dyn FsFile>> {
        self.open_append(path)
    }
    fn set_len(&self, path: &Path, len: u64) -> io::Result<()> {
        let mut state = self.live()?;
        let id = BlockFs::inode_of(&state, path)?;
        let inode = state.inodes.get_mut(&id).expect("named");
        let len = len as usize;
        let old = inode.cache.len();
        inode.cache.resize(len, 0);
        inode.dirty.retain(|&b| b * BLOCK_BYTES < len);
        inode.mark_dirty(old.min(len), old.max(len).min(len));
        inode.len_dirty = true;
        Ok(())
    }
    fn sync_file(&self, path: &Path, _data_only: bool) -> io::Result<()> {
        let id = BlockFs::inode_of(&*self.live()?, path)?;
        self.sync_inode(id)
    }
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        let mut state = self.live()?;
        let id = BlockFs::inode_of(&state, from)?;
        if !state.dirs.contains(&parent(to)) {
            return Err(io::ErrorKind::NotFound.into());
        }
        let extension = |p: &Path| p.extension().map(|e| e.to_string_lossy().into_owned());
        if extension(from).as_deref() == Some("spare") && extension(to).as_deref() == Some("wal") {
            state.recycled_segments += 1;
        }
        state.names.remove(from);
        state.names.insert(to.to_path_buf(), id);
        state.dirty_dirs.insert(parent(from));
        state.dirty_dirs.insert(parent(to));
        Ok(())
    }
    fn remove_file(&self, path: &Path) -> io::Result<()> {
        let mut state = self.live()?;
        BlockFs::inode_of(&state, path)?;
        state.names.remove(path);
        state.dirty_dirs.insert(parent(path));
        Ok(())
    }
    fn lock_dir(&self, _dir: &Path) -> Result<DirGuard, StorageError> {
        // One process per node's disk: the world sees to it.
        Ok(Box::new(()))
    }
    fn unpredictable_u64(&self, _seq: u64) -> u64 {
        self.lock().rng.next_u64()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    const ODDS: CrashOdds = CrashOdds {
        written_percent: 0,
        lost_percent: 100,
    };

    fn setup() -> (BlockFs, PathBuf) {
        let fs = BlockFs::new(7).next_process();
        let dir = PathBuf::from("/d");
        fs.create_dir_all(&dir).unwrap();
        (fs, dir.join("f"))
    }

    #[test]
    fn synced_data_and_names_survive_a_power_loss_and_unsynced_data_does_not() {
        let (fs, path) = setup();
        let mut file = fs.create_new(&path).unwrap();
        file.write_all(&[1; 5000]).unwrap();
        file.sync_data().unwrap();
        fs.sync_dir(Path::new("/d")).unwrap();
        file.write_all(&[2; 100]).unwrap();
        fs.crash(true, ODDS);
        let fs = fs.next_process();
        let data = fs.read(&path).unwrap();
        assert!([5000, 5100].contains(&data.len()), "{}", data.len());
        assert!(data[..5000].iter().all(|&b| b == 1));
        // Block 1 was dirty and lost: only its old durable bytes are there.
        assert!(data[5000..].iter().all(|&b| b == 0));
    }

    #[test]
    fn a_name_not_synced_may_vanish_and_a_process_crash_keeps_the_cache() {
        let (fs, path) = setup();
        let mut file = fs.create_new(&path).unwrap();
        file.write_all(b"abc").unwrap();
        fs.crash(false, ODDS);
        assert!(
            file.write_all(b"x").is_err(),
            "a dead process writes nothing"
        );
        let next = fs.next_process();
        assert_eq!(next.read(&path).unwrap(), b"abc");
        next.crash(true, ODDS);
        let after = next.next_process();
        // The name was never synced: gone, or there with lost contents.
        match after.read(&path) {
            Ok(data) => assert!(data.iter().all(|&b| b == 0), "{data:?}"),
            Err(e) => assert_eq!(e.kind(), io::ErrorKind::NotFound),
        }
    }

    #[test]
    fn a_failed_fsync_reports_eio_and_a_full_disk_enospc() {
        let (fs, path) = setup();
        let mut file = fs.create_new(&path).unwrap();
        file.write_all(&[1; 10]).unwrap();
        fs.fail_next_sync(0);
        assert_eq!(file.sync_data().unwrap_err().raw_os_error(), Some(5));
        fs.set_capacity(Some(0));
        file.write_all(&[1; 4000]).unwrap();
        let full = file.write_all(&[1; 200]).unwrap_err();
        assert_eq!(full.kind(), io::ErrorKind::StorageFull);
        fs.set_capacity(None);
        file.write_all(&[1; 200]).unwrap();
    }

    #[test]
    fn rot_touches_only_blocks_a_later_sync_followed() {
        let (fs, path) = setup();
        fs.sync_dir(Path::new("/d")).unwrap();
        let wal = PathBuf::from("/d/1.wal");
        let mut file = fs.create_new(&wal).unwrap();
        file.write_all(&[0; BLOCK_BYTES]).unwrap();
        file.sync_data().unwrap();
        file.write_all(&[5; BLOCK_BYTES]).unwrap();
        file.sync_data().unwrap();
        fs.sync_dir(Path::new("/d")).unwrap();
        assert_eq!(fs.rot_old_block(), None, "block 1 is the newest batch");
        file.write_all(&[6; BLOCK_BYTES]).unwrap();
        file.sync_data().unwrap();
        let at = fs.rot_old_block().expect("block 1 is old now");
        assert!(at.contains("1.wal"), "{at}");
        let data = fs.read(&wal).unwrap();
        assert!(data[BLOCK_BYTES..2 * BLOCK_BYTES].iter().any(|&b| b != 5));
        assert!(data[2 * BLOCK_BYTES..].iter().all(|&b| b == 6));
        assert!(fs.read(&path).is_err());
    }
}
