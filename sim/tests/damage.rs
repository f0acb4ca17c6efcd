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
