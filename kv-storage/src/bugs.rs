//! The catalogue of known storage bugs (issue 15), one flag each, the way
//! raft-core's `bugs.rs` catalogues protocol bugs: each re-introduces what
//! the storage did before the fix, and the simulator's bug-catalogue tests
//! switch it on (with the `buggy` feature) and show a seed sweep finds it.
//!
//! Without the `buggy` feature [`StorageBugs::has`] is a constant `false`,
//! so normal builds keep none of the buggy paths live.

/// Which storage bugs to switch on ([`crate::StorageOptions::bugs`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StorageBugs {
    /// Item 2: recovery cuts damage to acknowledged records in the last
    /// segment (a bad batch followed by valid ones) as if it were a torn,
    /// never-acknowledged tail: silently, with a warning, and without
    /// repair mode. The node then forgets a vote or an entry it
    /// acknowledged.
    pub ack_damage_cut_as_torn_tail: bool,
    /// Item 1: a new segment's opening hard-state record stays buffered
    /// after a roll, and a snapshot deletes the closed segments without
    /// syncing first: a crash then loses the only durable copy of the term
    /// and vote, and the node never restarts.
    pub snapshot_deletes_undurable_hard_state: bool,
    /// Item 3: open replays what the page cache holds and marks it durable
    /// without fdatasyncing the segments and fsyncing the directories: a
    /// power loss after a process crash loses what the node acknowledged
    /// after its restart.
    pub open_trusts_page_cache: bool,
}

impl StorageBugs {
    /// Every flag, by name (for `sim --bug`).
    pub const NAMES: [&'static str; 3] = [
        "ack_damage_cut_as_torn_tail",
        "snapshot_deletes_undurable_hard_state",
        "open_trusts_page_cache",
    ];

    /// The bugs with the flag called `name` on, if there is one.
    pub fn named(name: &str) -> Option<StorageBugs> {
        let mut bugs = StorageBugs::default();
        match name {
            "ack_damage_cut_as_torn_tail" => bugs.ack_damage_cut_as_torn_tail = true,
            "snapshot_deletes_undurable_hard_state" => {
                bugs.snapshot_deletes_undurable_hard_state = true
            }
            "open_trusts_page_cache" => bugs.open_trusts_page_cache = true,
            _ => return None,
        }
        Some(bugs)
    }

    /// Whether `flag` (a field of `self`) is in force: never without the
    /// `buggy` feature.
    #[inline(always)]
    pub(crate) fn has(flag: bool) -> bool {
        cfg!(feature = "buggy") && flag
    }
}
