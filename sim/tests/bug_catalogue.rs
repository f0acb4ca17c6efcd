//! Proof that the simulator can fail: each known protocol bug of
//! `raft_core::bugs::Bugs`, switched on alone, is found by a sweep from
//! seed 1 within a stated number of seeds (default options: 3 nodes,
//! 10,000 ticks, every fault kind eligible). The table with the seeds each
//! bug needed is in `sim/BUG_CATALOGUE.md`.

use raft_core::Config;
use raft_core::bugs::Bugs;
use sim::{SimOptions, run};
use std::sync::Arc;

/// Sweeps seeds 1..=limit with `bugs` on; returns the first failing seed
/// and the property it broke. Seeds that only hit the known raft-core
/// bugs (`sim/FOUND_BUGS.md`) are passed over.
fn first_failing_seed(bugs: Bugs, limit: u64) -> Option<(u64, &'static str)> {
    (1..=limit).find_map(|seed| {
        let mut o = SimOptions::new(seed);
        o.config_hook = Some(Arc::new(move |c: &mut Config| c.bugs = bugs));
        run(o).violation.map(|v| (seed, v.property))
    })
}

/// Sweeps seeds 1..=limit with `bugs` on and asserts that some seed breaks
/// one of the `expected` (safety) properties. Seeds that fail otherwise are
/// passed over: with membership bugs, a run often ends unconverged or
/// without a leader before a safety property breaks, and a liveness
/// failure may be a known raft-core bug (`sim/FOUND_BUGS.md`).
fn assert_found_as(bugs: Bugs, limit: u64, expected: &[&str]) {
    let found = (1..=limit).find_map(|seed| {
        let mut o = SimOptions::new(seed);
        o.config_hook = Some(Arc::new(move |c: &mut Config| c.bugs = bugs));
        let v = run(o).violation?;
        expected.contains(&v.property).then_some(seed)
    });
    assert!(found.is_some(), "{bugs:?} not found within {limit} seeds");
}

fn assert_found(bugs: Bugs, limit: u64, expected: &[&str]) {
    let found = first_failing_seed(bugs, limit);
    let Some((seed, property)) = found else {
        panic!("{bugs:?} not found within {limit} seeds");
    };
    assert!(
        expected.contains(&property),
        "{bugs:?} found at seed {seed} but as {property:?}, expected one of {expected:?}"
    );
}

#[test]
fn applying_an_entry_twice_is_found() {
    let bugs = Bugs {
        apply_twice: true,
        ..Bugs::default()
    };
    assert_found(bugs, 3, &["no entry applied twice"]);
}

#[test]
fn skipping_the_prev_term_check_is_found() {
    let bugs = Bugs {
        skip_prev_term_check: true,
        ..Bugs::default()
    };
    assert_found(
        bugs,
        20,
        &["log matching", "committed entries never change"],
    );
}

#[test]
fn voting_for_a_stale_log_is_found() {
    let bugs = Bugs {
        vote_for_stale_log: true,
        ..Bugs::default()
    };
    assert_found(
        bugs,
        20,
        &["leader completeness", "committed entries never change"],
    );
}

#[test]
fn voting_before_persisting_the_vote_is_found() {
    let bugs = Bugs {
        vote_before_persist: true,
        ..Bugs::default()
    };
    assert_found(bugs, 50, &["at most one leader per term", "log matching"]);
}

#[test]
fn reading_without_confirming_leadership_is_found() {
    let bugs = Bugs {
        read_without_quorum: true,
        ..Bugs::default()
    };
    assert_found(bugs, 20, &["linearizability"]);
}

/// Found through the event-triggered Figure 8 fault (one entry per
/// message, the re-elected leader cut off at its first commit advance).
#[test]
fn committing_an_earlier_term_entry_by_counting_is_found() {
    let bugs = Bugs {
        commit_previous_term: true,
        ..Bugs::default()
    };
    assert_found_as(
        bugs,
        30,
        &[
            "leader completeness",
            "committed entries never change",
            "state machine safety",
        ],
    );
}

/// Found through a membership fault that replaces voters and splits the
/// leader and the incoming voters off the moment the joint configuration
/// commits: the new voters alone then commit what the old ones never see.
#[test]
fn deciding_with_only_the_new_majority_while_joint_is_found() {
    let bugs = Bugs {
        joint_new_majority_only: true,
        ..Bugs::default()
    };
    assert_found_as(
        bugs,
        30,
        &[
            "leader completeness",
            "committed entries never change",
            "log matching",
            "state machine safety",
        ],
    );
}

/// Found through a membership fault that proposes two replacements at
/// once (a burst) and splits as above; rarer, as both changes must commit
/// in one advance for the old voters to miss both.
#[test]
fn two_conf_changes_in_flight_at_once_is_found() {
    let bugs = Bugs {
        concurrent_conf_changes: true,
        ..Bugs::default()
    };
    assert_found_as(
        bugs,
        100,
        &[
            "leader completeness",
            "committed entries never change",
            "log matching",
            "state machine safety",
        ],
    );
}
