//! Issue 15, item 3 (`open_trusts_page_cache`), aimed at directly on the
//! block disk: a process killed inside its fsync leaves its last batch in
//! the page cache; the next process's recovery reads it and reports it as
//! the log. Unless recovery makes it durable, a power loss right after
//! takes it away: the node would have acknowledged an entry it no longer
//! has.
//!
//! The swarm finds this bug rarely, and since every WAL segment is
//! recycled (spare segments made from zeros) not at all in 1..1500 seeds:
//! the first fdatasync of the same file, or the fsync of the truncation
//! when a recycled segment rolls, makes the batch durable anyway, so the
//! window is only between recovery and the node's first sync
//! (`sim/BUG_CATALOGUE.md`). This test holds the window open.

use kv_storage::{Storage, StorageBugs};
use raft_core::{Entry, EntryKind, LogIndex, Term};
use sim::block_fs::{BlockFs, CrashOdds};
use sim::disk::block_storage_options;
use std::path::Path;
use std::sync::Arc;

fn entry(index: u64) -> Entry {
    Entry {
        term: Term(1),
        index: LogIndex(index),
        kind: EntryKind::Normal,
        data: bytes::Bytes::from(vec![index as u8; 100]),
    }
}

/// The last index the restarted process recovered, and the last index
/// after a power loss that follows its recovery at once.
fn recovered_then_after_power_loss(bugs: StorageBugs) -> (LogIndex, LogIndex) {
    let dir = Path::new("/data");
    let disk = BlockFs::new(7);
    let first = disk.next_process();
    let (mut storage, _) =
        Storage::open_in(Arc::new(first.clone()), dir, block_storage_options(bugs)).unwrap();
    for index in 1..=3 {
        storage.append(&[entry(index)]).unwrap();
        storage.sync().unwrap();
    }
    storage.append(&[entry(4)]).unwrap();
    first.kill_in_next_sync();
    assert!(storage.sync().is_err(), "killed inside the fsync");
    drop(storage);
    // kill -9: the machine and its page cache stay up.
    let all_lost = CrashOdds {
        written_percent: 0,
        lost_percent: 100,
    };
    disk.crash(false, all_lost);

    let second = disk.next_process();
    let (storage, _) =
        Storage::open_in(Arc::new(second), dir, block_storage_options(bugs)).unwrap();
    let recovered = storage.last_index();
    drop(storage);
    // The power goes before the process syncs anything: every block not
    // yet durable is lost.
    disk.crash(true, all_lost);

    let third = disk.next_process();
    let (storage, _) = Storage::open_in(Arc::new(third), dir, block_storage_options(bugs)).unwrap();
    (recovered, storage.last_index())
}

#[test]
fn recovery_makes_what_it_replayed_from_the_page_cache_durable() {
    let (recovered, after) = recovered_then_after_power_loss(StorageBugs::default());
    assert_eq!(
        recovered,
        LogIndex(4),
        "the batch killed in its fsync is replayed"
    );
    assert_eq!(
        after,
        LogIndex(4),
        "and it outlives a power loss right after"
    );
}

#[test]
fn open_trusting_the_page_cache_loses_what_it_replayed_in_a_power_loss() {
    let bugs = StorageBugs {
        open_trusts_page_cache: true,
        ..StorageBugs::default()
    };
    let (recovered, after) = recovered_then_after_power_loss(bugs);
    assert_eq!(recovered, LogIndex(4));
    assert_eq!(after, LogIndex(3), "the entry the node recovered is gone");
}
