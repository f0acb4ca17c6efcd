//! Proof that the `blockdisk` runs can fail: each known storage bug of
//! `kv_storage::bugs::StorageBugs` (issue 15), switched on alone in the
//! real storage the simulated nodes run, is found by a sweep over a stated
//! range of seeds (`open_trusts_page_cache` no longer is: its tests are
//! ignored, and `open_syncs_replayed.rs` shows it). Like `bug_catalogue.rs`,
//! with the storage flags; the table is in `sim/BUG_CATALOGUE.md`.

use kv_storage::StorageBugs;
use sim::faults::FaultSelection;
use sim::{SimOptions, run};

/// Sweeps `seeds` of the fault mix `faults` with `bugs` on and asserts
/// that some seed breaks one of `expected`. The range starts just before
/// the first seed known to find the bug (measured with
/// the release simulator over every seed below; see BUG_CATALOGUE.md).
fn assert_found_in(
    bugs: StorageBugs,
    faults: &str,
    seeds: std::ops::RangeInclusive<u64>,
    expected: &[&str],
    staged: bool,
) {
    let limit = *seeds.end();
    let mut seen = Vec::new();
    for seed in seeds {
        // The baseline rows were measured with the key-value clients only
        // and every node syncing at once (no persist stage); the staged
        // ones with the key-value clients only and persist stages on.
        let mut o = SimOptions::new(seed).kv_clients_only();
        o.persist_stage = staged;
        o.faults = FaultSelection::parse(faults).unwrap();
        o.storage_bugs = bugs;
        let Some(v) = run(o).violation else {
            continue;
        };
        if expected.contains(&v.property) {
            return;
        }
        seen.push((seed, v.property));
    }
    panic!(
        "{bugs:?} not found within {limit} seeds as one of {expected:?}; other failures: {seen:?}"
    );
}

/// What losing an acknowledged vote or entry can break.
const SAFETY: &[&str] = &[
    "at most one leader per term",
    "leader completeness",
    "committed entries never change",
    "committed entries survive a restart",
    "state machine safety",
    "log matching",
    "linearizability",
];

/// Item 2: rot in an acknowledged batch of the last segment, cut as a
/// torn tail: the node forgets entries (and its vote) it acknowledged and
/// votes at once. Found at seeds 2, 118, 215, 219 and 286 of 1..300 as
/// "restart recovers" (the cut took every hard state) and 211 as leader
/// completeness since stop 38's chain rule changed which snapshots are
/// deltas (before: 187, 215 and 286 since spare segments are made from
/// zeros and every segment is recycled; 23 and 33 of 1..60 before that;
/// before WAL segment recycling 2 and 52, and 43 as leader completeness);
/// the sweep starts just before the first.
#[test]
fn ack_damage_cut_as_a_torn_tail_is_found() {
    let bugs = StorageBugs {
        ack_damage_cut_as_torn_tail: true,
        ..StorageBugs::default()
    };
    // Found as a refused restart (the cut log no longer holds the commit
    // index) or as a safety violation, whichever the seed reaches first;
    // without the bug these seeds pass.
    let mut expected = SAFETY.to_vec();
    expected.push("restart recovers");
    assert_found_in(bugs, "blockdisk,loss,crash", 1..=2, &expected, false);
}

/// Item 1: a roll leaves the new segment's hard state buffered and a
/// snapshot deletes the closed segments: a crash before the next sync
/// loses the term and vote, and the node never restarts (typed
/// `MissingHardState`). Found at seeds 78, 94, 149, 184 of 1..200 since
/// spare segments are made from zeros (before: 88 since WAL segment
/// recycling; 11 and 88 of 1..100 before it); the sweep starts just
/// before the first.
#[test]
fn a_snapshot_deleting_the_only_durable_hard_state_is_found() {
    let bugs = StorageBugs {
        snapshot_deletes_undurable_hard_state: true,
        ..StorageBugs::default()
    };
    assert_found_in(
        bugs,
        "blockdisk,loss,crash",
        75..=80,
        &["restart recovers"],
        false,
    );
}

/// Item 3: a process killed inside its fsync restarts and replays the
/// unsynced batch from the page cache without syncing it; later batches
/// are synced, a power loss then tears the replayed one: damage to
/// records the node acknowledged after its restart, which protocol-aware
/// recovery catches (repair mode) and the "only rot damages acknowledged
/// records" check reports, or, when the damage leaves no hard state after
/// it, the node cannot restart. Rare since background snapshots changed
/// the seeds (771 of 1..1000 since WAL segment recycling, 518 before), and
/// not found in seeds 1..1500 since spare segments are made from zeros:
/// every segment is then recycled, and the fsync of a recycled segment's
/// truncation when it rolls makes the replayed batch durable too, so the
/// window is only between recovery and the node's first sync. Kept (run
/// with `--ignored`) for the day the swarm reaches it again; the bug is
/// shown by `open_syncs_replayed.rs`, which holds that window open.
#[test]
#[ignore = "not found in seeds 1..1500 since spare segments (see open_syncs_replayed.rs)"]
fn open_trusting_the_page_cache_is_found() {
    let bugs = StorageBugs {
        open_trusts_page_cache: true,
        ..StorageBugs::default()
    };
    assert_found_in(
        bugs,
        "blockdisk,fsync,restart,crash",
        765..=775,
        &["only rot damages acknowledged records", "restart recovers"],
        false,
    );
}

/// Item 3 with persist stages on, as kv-node runs. As rare as without
/// them: of seeds 1..=1000, 500 and 550 find it (without stages: 518 of
/// seeds 1..1500; with the earlier stage model, whose write and fsync
/// were one event, 1303 of seeds 1..1500), each through a process killed
/// inside an fsync and a power loss after a later batch was synced; the
/// sweep starts just before the first. Not found in seeds 1..1500 since
/// spare segments are made from zeros, as without stages (see above).
#[test]
#[ignore = "not found in seeds 1..1500 since spare segments (see open_syncs_replayed.rs)"]
fn open_trusting_the_page_cache_is_found_with_persist_stages() {
    let bugs = StorageBugs {
        open_trusts_page_cache: true,
        ..StorageBugs::default()
    };
    assert_found_in(
        bugs,
        "blockdisk,fsync,restart,crash",
        495..=505,
        &["only rot damages acknowledged records", "restart recovers"],
        true,
    );
}

/// Item 2 with persist stages on: found at seeds 23 and 218 (leader
/// completeness), 31, 43, 138 and 285 ("restart recovers") of 1..300
/// since stop 38's chain rule (before: 144, 151, 218 and 239 since
/// stop 33 acknowledges commit-only rounds at once; 43, the only one of
/// 1..300, since
/// spare segments are made from zeros; since WAL segment recycling before
/// that: 143, 149, 182, 184, 228, 230, 248 of 1..300; before it: 3, 11,
/// 43 of 1..60); the sweep starts just before the first.
#[test]
fn ack_damage_cut_as_a_torn_tail_is_found_with_persist_stages() {
    let bugs = StorageBugs {
        ack_damage_cut_as_torn_tail: true,
        ..StorageBugs::default()
    };
    let mut expected = SAFETY.to_vec();
    expected.push("restart recovers");
    assert_found_in(bugs, "blockdisk,loss,crash", 20..=23, &expected, true);
}

/// Item 1 with persist stages on: seeds 101, 137, 169, 215 of 1..300
/// since stop 33 acknowledges commit-only rounds at once (their hard
/// states reach the WAL later, so fewer are there when the segment rolls);
/// before: 1, 36, 45, 93, 118, 126, 168, ...
/// of 1..500 since spare segments are made from zeros (an early roll out
/// of each new file makes more rolls; before: 57, 184, 398, 409, 428, 466
/// since WAL segment recycling, and 316 and 398 before it). The window is the same as without
/// stages (the segment rolled by the last fsync, the snapshot deleting the
/// closed segments, a crash before the next fsync), but a snapshot that
/// ends while the stage holds rounds to sync syncs them first, as kv-node's
/// stage does before any call, which writes the buffered hard state.
#[test]
fn a_snapshot_deleting_the_only_durable_hard_state_is_found_with_persist_stages() {
    let bugs = StorageBugs {
        snapshot_deletes_undurable_hard_state: true,
        ..StorageBugs::default()
    };
    assert_found_in(
        bugs,
        "blockdisk,loss,crash",
        96..=101,
        &["restart recovers"],
        true,
    );
}
