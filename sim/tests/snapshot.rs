//! One fixed seed's summary, pinned: any change to the simulator, the core
//! or the state machine that changes the run shows up here for review.

use sim::{SimOptions, run};

#[test]
fn seed_42_summary() {
    let mut o = SimOptions::new(42);
    o.ticks = 3_000;
    let report = run(o);
    assert!(report.passed(), "{:?}", report.violation_report());
    insta::assert_yaml_snapshot!(report.summary());
}
