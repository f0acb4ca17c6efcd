//! Issue 15: nodes whose disks lose acknowledged records (the `damage`
//! fault kind, on demand only) restart in repair mode, and the cluster
//! stays safe (no double vote, no committed entry lost, linearizable) and
//! live. The same sweep with raft-core's `vote_while_damaged` bug is in
//! `bug_catalogue.rs`.

use sim::faults::FaultSelection;
use sim::{SimOptions, run};

#[test]
fn a_sweep_with_disk_damage_breaks_no_property() {
    let faults = FaultSelection::parse("damage,loss,partition,crash,reorder").unwrap();
    let mut failures = Vec::new();
    for seed in 1..=30 {
        let mut o = SimOptions::new(seed);
        o.ticks = 5_000;
        o.faults = faults.clone();
        let report = run(o);
        assert!(report.faults_injected > 0, "seed {seed}: no fault fired");
        if let Some(text) = report.violation_report() {
            failures.push(text);
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

/// Seed 1881 at two nodes (a sweep of `sim --seeds 1..2001 --nodes 2`): a
/// transfer fault removed n1, then disk rot cut n1's log back to the
/// configuration {n1, n2}, in which its vote is needed, so it refused to
/// start (`DamagedVoteNeeded`, by design). The simulator now injects damage
/// only while the initial configuration is unchanged.
#[test]
fn seed_1881_at_two_nodes_damages_no_node_whose_vote_an_older_configuration_needs() {
    let mut o = SimOptions::new(1881);
    o.nodes = 2;
    let report = run(o);
    assert!(report.passed(), "{}", report.violation_report().unwrap());
}
