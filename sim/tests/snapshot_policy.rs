//! kv-node's snapshot rules that the simulator's default runs never reach
//! (issue 12, stop 32): the key-write bound, which snapshots once enough
//! keys were written whatever the entries' count, and `after_replay`,
//! which starts none while a restart replays its own log. Here they are
//! set low enough to fire in every run, beside crashes, restarts, lost
//! messages and partitions, on the block disk too.

use kv_replica::replica::SnapshotPolicy;
use sim::faults::FaultSelection;
use sim::{SimOptions, run};
use std::sync::Arc;

fn options(seed: u64, faults: &str) -> SimOptions {
    let mut o = SimOptions::new(seed);
    o.ticks = 4_000;
    o.faults = FaultSelection::parse(faults).unwrap();
    o
}

/// A key-write bound of a few keys, no other rule, and no snapshot during
/// a restart's replay.
fn key_bound_only(policy: &mut SnapshotPolicy) {
    *policy = SnapshotPolicy {
        max_key_writes: 7,
        after_replay: true,
        ..SnapshotPolicy::default()
    };
}

#[test]
fn snapshots_by_the_key_write_bound_break_no_property() {
    let mut failures = Vec::new();
    let mut durable = 0;
    for seed in 1..=24 {
        let mut o = options(seed, "crash,restart,loss,partition,blockdisk");
        o.snapshot_policy_hook = Some(Arc::new(key_bound_only));
        let report = run(o);
        assert!(report.faults_injected > 0, "seed {seed}: no fault fired");
        durable += report.snapshot_writes.durable;
        if let Some(text) = report.violation_report() {
            failures.push(text);
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
    // About 285 a run when written (6,846 in these 24).
    assert!(durable > 24 * 50, "only {durable} snapshots in 24 runs");
}

/// The bound alone decides: with every other rule off, a run without it
/// takes no snapshot at all.
#[test]
fn without_the_key_write_bound_the_same_runs_take_none() {
    for seed in 1..=4 {
        let mut o = options(seed, "loss");
        o.snapshot_policy_hook = Some(Arc::new(|policy: &mut SnapshotPolicy| {
            key_bound_only(policy);
            policy.max_key_writes = 0;
        }));
        assert_eq!(run(o).snapshot_writes.durable, 0, "seed {seed}");
        let mut o = options(seed, "loss");
        o.snapshot_policy_hook = Some(Arc::new(key_bound_only));
        assert!(run(o).snapshot_writes.durable > 0, "seed {seed}");
    }
}
