//! Bounded sweeps of one- and two-node clusters in every `cargo test`: the
//! sizes where a single removal or transfer leaves no majority to spare.
//! Half the seeds draw their own fault mix, half run membership changes
//! with loss and partitions (and the other kinds that stay on in sweeps).

use sim::faults::FaultSelection;
use sim::{SimOptions, run};

const SEEDS: u64 = 200;
const TICKS: u64 = 5_000;

/// The failure reports of the seeds that break a property.
fn sweep(nodes: usize, seeds: impl Iterator<Item = u64>) -> Vec<String> {
    let membership =
        FaultSelection::parse("membership,loss,partition,crash,restart,delay,corrupt").unwrap();
    let mut failures = Vec::new();
    for seed in seeds {
        let mut o = SimOptions::new(seed);
        o.ticks = TICKS;
        o.nodes = nodes;
        if seed % 2 == 1 {
            o.faults = membership.clone();
        }
        if let Some(text) = run(o).violation_report() {
            failures.push(text);
        }
    }
    failures
}

fn sweep_on_two_threads(nodes: usize) {
    let (even, odd) = std::thread::scope(|s| {
        let even = s.spawn(|| sweep(nodes, (0..SEEDS).step_by(2)));
        let odd = s.spawn(|| sweep(nodes, (1..SEEDS).step_by(2)));
        (
            even.join().expect("sweep thread"),
            odd.join().expect("sweep thread"),
        )
    });
    let failures: Vec<String> = even.into_iter().chain(odd).collect();
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn one_node_clusters_that_grow_by_membership_changes_break_no_property() {
    sweep_on_two_threads(1);
}

#[test]
fn two_node_clusters_with_membership_changes_break_no_property() {
    sweep_on_two_threads(2);
}
