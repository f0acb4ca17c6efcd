//! Proof that the watch, lease and transaction checks can fail (issue 14):
//! each known replica bug of `kv_replica::bugs::ReplicaBugs`, switched on
//! alone in the replicas (and their watch hubs), is found by a sweep from
//! seed 1 with the default options within a stated number of seeds, as the
//! property its check guards. The table is in `sim/BUG_CATALOGUE.md`.

use kv_replica::bugs::ReplicaBugs;
use sim::{SimOptions, run};

/// Sweeps seeds 1..=limit with `bugs` on: the first failing seed must be
/// `first` and break `property`.
fn assert_found_first(bugs: ReplicaBugs, limit: u64, first: u64, property: &str) {
    for seed in 1..=limit {
        let mut o = SimOptions::new(seed);
        o.replica_bugs = bugs;
        let Some(v) = run(o).violation else {
            continue;
        };
        assert_eq!(
            (seed, v.property),
            (first, property),
            "{bugs:?}: {}",
            v.detail
        );
        return;
    }
    panic!("{bugs:?} not found within {limit} seeds as {property:?}");
}

/// A watch resumed with `from_revision = R` skips revision R: the watcher
/// that resumes after a cut-off misses the events of the revision after
/// the last one it saw. First found at seed 3.
#[test]
fn a_watch_resume_that_skips_a_revision_is_found() {
    let bugs = ReplicaBugs {
        watch_resume_skips_revision: true,
        ..ReplicaBugs::default()
    };
    assert_found_first(bugs, 10, 3, "watchers see every committed event once");
}

/// A keepalive is answered but does not restart the countdown: the lease
/// expires its TTL after its leader started counting, while its owner's
/// keepalives were answered. First found at seed 1.
#[test]
fn a_keepalive_that_does_not_restart_the_countdown_is_found() {
    let bugs = ReplicaBugs {
        lease_keepalive_not_counted: true,
        ..ReplicaBugs::default()
    };
    assert_found_first(bugs, 10, 1, "a lease outlives its keepalives");
}

/// A transaction applies its branch but the last op, answering as if it
/// applied all: not atomic. The transaction group's linearizability
/// check finds it at seed 3.
#[test]
fn a_transaction_that_drops_its_last_op_is_found() {
    let bugs = ReplicaBugs {
        txn_drops_last_op: true,
        ..ReplicaBugs::default()
    };
    assert_found_first(bugs, 10, 3, "linearizability");
}

/// The first seed of 1..=limit whose run breaks a property, with `tweak`.
fn first_failure(limit: u64, tweak: fn(&mut SimOptions)) -> Option<(u64, &'static str)> {
    (1..=limit).find_map(|seed| {
        let mut o = SimOptions::new(seed);
        tweak(&mut o);
        run(o).violation.map(|v| (seed, v.property))
    })
}

/// A lease clock that runs ten times fast (it takes a tick for 500 ms
/// where the simulator's tick stands for 50 ms) expires leases whose
/// keepalives were answered: the safety check fails. Seed 3 (seed 1
/// until spare WAL segments made from zeros changed what block disks do).
#[test]
fn a_lease_clock_that_runs_fast_is_found() {
    let found = first_failure(10, |o| o.lease_tick_ms = 500);
    assert_eq!(found, Some((3, "a lease outlives its keepalives")));
}

/// A lease clock that runs fifty times slow (a tick for 1 ms) keeps
/// stopped leases long past their TTL: the liveness check fails once the
/// faults healed.
#[test]
fn a_lease_clock_that_runs_slow_is_found() {
    let found = first_failure(10, |o| o.lease_tick_ms = 1);
    assert_eq!(
        found.map(|(_, property)| property),
        Some("a stopped lease expires")
    );
}
