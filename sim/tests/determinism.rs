//! The same seed gives the same run, event for event.

use sim::{SimOptions, run};

fn options(seed: u64) -> SimOptions {
    let mut o = SimOptions::new(seed);
    o.ticks = 4_000;
    o
}

#[test]
fn the_same_seed_twice_gives_the_same_trace_hash() {
    for seed in [3, 17, 101] {
        let first = run(options(seed));
        let second = run(options(seed));
        assert_eq!(first.trace_hash, second.trace_hash, "seed {seed}");
        assert_eq!(first.summary(), second.summary(), "seed {seed}");
        assert!(first.trace_events > 1_000, "seed {seed} traced too little");
    }
}

#[test]
fn different_seeds_give_different_traces() {
    let a = run(options(1)).trace_hash;
    let b = run(options(2)).trace_hash;
    assert_ne!(a, b);
}

#[test]
fn dropping_a_scheduled_fault_keeps_the_run_before_it() {
    // The plan and the run-time choices use separate streams, so a shrunk
    // schedule replays the same prefix (what the minimizer relies on).
    let full = run(options(5));
    assert!(full.schedule.len() >= 2, "seed 5 should draw faults");
    let mut fewer = options(5);
    fewer.keep_faults = Some((0..full.schedule.len() - 1).collect());
    let shrunk = run(fewer);
    assert_eq!(shrunk.schedule.len(), full.schedule.len() - 1);
    assert_eq!(
        shrunk.schedule[..],
        full.schedule[..full.schedule.len() - 1]
    );
}
