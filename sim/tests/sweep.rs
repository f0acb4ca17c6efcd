//! A bounded sweep in every `cargo test`: 200 seeds, every fault kind
//! eligible (each seed draws its own mix), 3 and 5 nodes.

use sim::options::KNOWN_CORE_BUGS;
use sim::{SimOptions, run};

const SEEDS: u64 = 200;
const TICKS: u64 = 5_000;

/// Failures, and seeds that hit a known raft-core bug (counted apart until
/// the core fixes it; see `sim/FOUND_BUGS.md`).
fn sweep(seeds: impl Iterator<Item = u64>) -> (Vec<String>, Vec<u64>) {
    let mut failures = Vec::new();
    let mut known = Vec::new();
    for seed in seeds {
        let mut o = SimOptions::new(seed);
        o.ticks = TICKS;
        // Every fourth seed runs five nodes.
        o.nodes = if seed % 4 == 3 { 5 } else { 3 };
        let report = run(o);
        if let Some(v) = report.violation.as_ref()
            && KNOWN_CORE_BUGS.contains(&v.property)
        {
            known.push(seed);
        } else if let Some(text) = report.violation_report() {
            failures.push(text);
        }
    }
    (failures, known)
}

#[test]
fn two_hundred_seeds_with_random_faults_break_no_property() {
    // Two threads: the machine has two cores. Each seed is independent.
    let (even, odd) = std::thread::scope(|s| {
        let even = s.spawn(|| sweep((0..SEEDS).step_by(2)));
        let odd = s.spawn(|| sweep((1..SEEDS).step_by(2)));
        (
            even.join().expect("sweep thread"),
            odd.join().expect("sweep thread"),
        )
    });
    let failures: Vec<String> = even.0.into_iter().chain(odd.0).collect();
    let known: Vec<u64> = even.1.into_iter().chain(odd.1).collect();
    if !known.is_empty() {
        eprintln!("seeds hitting a known raft-core bug: {known:?}");
    }
    assert!(known.len() <= 20, "too many known-bug seeds: {known:?}");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
