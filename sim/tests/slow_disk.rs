//! The `slowdisk` fault kind (on demand only): every node's fsyncs and
//! snapshot writes slow down together, as when the members share one disk
//! and one of them writes a large snapshot (issue 12: at 10M keys, three
//! 1.3 GB snapshots at once slowed every fsync of the cluster for seconds,
//! and one preload saw a leader step down). Rounds then stay in flight for
//! many ticks while heartbeats, elections and crashes go on.

use sim::faults::{Fault, FaultSelection};
use sim::{SimOptions, run};

fn options(seed: u64, faults: &str) -> SimOptions {
    let mut o = SimOptions::new(seed);
    o.ticks = 4_000;
    o.faults = FaultSelection::parse(faults).unwrap();
    o
}

#[test]
fn slow_disks_make_fewer_larger_syncs() {
    let (mut slow, mut normal) = (0, 0);
    for seed in 1..=10 {
        let report = run(options(seed, "slowdisk,loss"));
        assert!(report.passed(), "{}", report.violation_report().unwrap());
        assert!(
            report
                .schedule
                .iter()
                .any(|f| matches!(f.fault, Fault::SlowDisks { .. })),
            "seed {seed}: no slow-disk fault drawn"
        );
        slow += report.persist_syncs.durable;
        normal += run(options(seed, "loss")).persist_syncs.durable;
    }
    assert!(
        slow < normal,
        "slow disks should batch more rounds per sync: {slow} syncs against {normal}"
    );
}

#[test]
fn a_sweep_with_slow_disks_breaks_no_property() {
    let mut failures = Vec::new();
    for seed in 1..=30 {
        let report = run(options(
            seed,
            "slowdisk,loss,partition,crash,pause,transfer",
        ));
        assert!(report.faults_injected > 0, "seed {seed}: no fault fired");
        if let Some(text) = report.violation_report() {
            failures.push(text);
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}
