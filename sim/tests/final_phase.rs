//! The final phase tells a cluster that catches up from one that is stuck.

use raft_core::Config;
use sim::faults::FaultSelection;
use sim::{SimOptions, run};
use std::sync::Arc;

/// Seeds of issue 18 that drew one entry per message and a voter far
/// behind at the final heal: it catches up one entry per round trip, which
/// takes longer than the liveness bound, but it is not stuck.
#[test]
fn voters_that_catch_up_one_entry_per_message_after_the_heal_pass() {
    let two_nodes = FaultSelection::parse("membership,loss,partition").unwrap();
    for (seed, nodes, faults) in [
        (2394, 2, two_nodes.clone()),
        (3758, 2, two_nodes.clone()),
        (3928, 2, two_nodes.clone()),
        (3397, 2, two_nodes),
        (
            426,
            1,
            FaultSelection::parse(
                "loss,dup,reorder,crash,fsync,pause,skew,diverge,figure8,membership",
            )
            .unwrap(),
        ),
    ] {
        let mut o = SimOptions::new(seed);
        o.nodes = nodes;
        o.faults = faults;
        let report = run(o);
        assert!(report.passed(), "{}", report.violation_report().unwrap());
    }
}

/// Liveness stays a real check: a cluster that can never elect a leader
/// (election timeouts longer than the run) fails it at the first deadline.
#[test]
fn a_cluster_that_never_elects_a_leader_fails_liveness() {
    let mut o = SimOptions::new(1);
    o.ticks = 1_000;
    o.faults = FaultSelection::parse("none").unwrap();
    o.config_hook = Some(Arc::new(|c: &mut Config| {
        c.election_ticks_min = 1_000_000;
        c.election_ticks_max = 1_000_001;
    }));
    let report = run(o);
    let v = report.violation.expect("no leader, so no write commits");
    assert_eq!(v.property, "liveness", "{v}");
    assert!(v.detail.contains("stopped growing at None"), "{v}");
    // Heal at tick 600, the bound is 150 ticks, no catching up to wait for.
    assert_eq!(v.step / sim::faults::STEPS_PER_TICK, 750, "{v}");
}
