//! A bounded sweep in every `cargo test`: 200 seeds, every fault kind
//! eligible (each seed draws its own mix), 3 and 5 nodes.

use sim::{SimOptions, run};

const SEEDS: u64 = 200;
const TICKS: u64 = 5_000;

/// The failure reports of the seeds that break a property.
fn sweep(seeds: impl Iterator<Item = u64>) -> Vec<String> {
    let mut failures = Vec::new();
    for seed in seeds {
        let mut o = SimOptions::new(seed);
        o.ticks = TICKS;
        // Every fourth seed runs five nodes.
        o.nodes = if seed % 4 == 3 { 5 } else { 3 };
        if let Some(text) = run(o).violation_report() {
            failures.push(text);
        }
    }
    failures
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
    let failures: Vec<String> = even.into_iter().chain(odd).collect();
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
