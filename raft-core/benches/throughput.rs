//! Committed entries per second of a 3-node in-memory cluster driven in one
//! thread, with 100-byte entries, and allocations per entry.
//!
//! Run: `cargo bench -p raft-core`. Each iteration commits `ENTRIES` entries
//! on a fresh, already-elected cluster; divan reports time per iteration,
//! entries/s (items) and allocations.

use bytes::Bytes;
use divan::counter::ItemsCount;
use raft_core::harness::Cluster;
use raft_core::{Input, NodeId};

#[global_allocator]
static ALLOC: divan::AllocProfiler = divan::AllocProfiler::system();

const ENTRIES: usize = 20_000;

fn main() {
    divan::main();
}

fn elected_cluster() -> Cluster {
    let mut c = Cluster::new(3);
    c.tracing = false;
    c.keep_applied = false;
    c.campaign(1);
    c
}

fn payload() -> Bytes {
    Bytes::from(vec![7u8; 100])
}

fn applied_on_leader(c: &Cluster) -> u64 {
    c.applied_count.get(&NodeId(1)).copied().unwrap_or(0)
}

/// One proposal at a time: each is committed before the next is proposed.
#[divan::bench(sample_count = 10)]
fn one_proposer(bencher: divan::Bencher) {
    bencher
        .counter(ItemsCount::new(ENTRIES))
        .with_inputs(elected_cluster)
        .bench_local_values(|mut c| {
            let data = payload();
            for _ in 0..ENTRIES {
                c.step(1, Input::Propose { data: data.clone() }).unwrap();
                c.settle();
            }
            assert!(applied_on_leader(&c) >= ENTRIES as u64);
            c
        });
}

/// Proposals in batches of `batch`, each batch sharing one round of
/// replication (what a driver's group commit does under load).
#[divan::bench(args = [64, 1024], sample_count = 10)]
fn batched(bencher: divan::Bencher, batch: usize) {
    bencher
        .counter(ItemsCount::new(ENTRIES))
        .with_inputs(elected_cluster)
        .bench_local_values(|mut c| {
            let data = payload();
            for _ in 0..ENTRIES / batch {
                for _ in 0..batch {
                    c.step(1, Input::Propose { data: data.clone() }).unwrap();
                }
                c.settle();
            }
            assert!(applied_on_leader(&c) >= (ENTRIES / batch * batch) as u64);
            c
        });
}
