//! `--minimize` shrinks a failing run to a small schedule that still fails.

use raft_core::Config;
use raft_core::bugs::Bugs;
use sim::minimize::minimize;
use sim::{SimOptions, run};
use std::sync::Arc;

#[test]
fn a_log_matching_failure_shrinks_to_a_few_faults_and_replays() {
    let mut o = SimOptions::new(9);
    let bugs = Bugs {
        skip_prev_term_check: true,
        ..Bugs::default()
    };
    o.config_hook = Some(Arc::new(move |c: &mut Config| c.bugs = bugs));
    let original = run(o.clone());
    let shrunk = minimize(o).expect("seed 9 fails with the bug on");
    let kept = shrunk
        .options
        .keep_faults
        .as_ref()
        .expect("faults were shrunk");
    assert!(kept.len() < original.schedule.len() / 4, "kept {kept:?}");
    assert!(shrunk.options.ticks < SimOptions::new(9).ticks);
    assert_eq!(
        shrunk.report.violation.as_ref().map(|v| v.property),
        original.violation.as_ref().map(|v| v.property)
    );
    // The shrunk options replay the same failure.
    let replay = run(shrunk.options.clone());
    assert_eq!(replay.trace_hash, shrunk.report.trace_hash);
    assert!(shrunk.command_line().contains("--keep-faults"));
}
