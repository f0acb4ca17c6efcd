//! How long serializing a snapshot of N keys takes, and how long replaying
//! random single-key puts into it takes (what a restart pays per entry of
//! the log after its snapshot):
//! `cargo run --release -p kv-replica --example snapshot_write_time -- 10000000`.
//!
//! The keys are loaded in order, then half as many random puts overwrite
//! them, so that the values are scattered over the heap as they are in a
//! node that has served random writes for a while.
mod support {
    pub mod load;
}

use kv_replica::command::Op;
use kv_replica::state_machine::KvStateMachine;
use raft_core::Entry;
use std::time::Instant;
use support::load::entry;

/// Applies `count` random single-key puts over `keys` keys and prints what
/// each cost; the entries are encoded before the clock starts.
fn random_puts(state: &mut KvStateMachine, count: u64, keys: u64) {
    let start = state.applied_index() + 1;
    // xorshift64: a fixed sequence, no dependency.
    let mut x: u64 = 88_172_645_463_325_252;
    let entries: Vec<Entry> = (0..count)
        .map(|i| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let key = format!("k{:08}", x % keys);
            let value = format!("{i:0>100}");
            entry(start + i, Op::Put { key, value })
        })
        .collect();
    let started = Instant::now();
    for entry in &entries {
        state.apply_entry(entry);
    }
    let elapsed = started.elapsed();
    println!(
        "{count} random puts applied in {elapsed:.2?}: {:.2} us each",
        elapsed.as_secs_f64() * 1e6 / count as f64
    );
}

fn main() {
    let n = support::load::key_count();
    let mut state = support::load::ordered_state(n);
    random_puts(&mut state, n / 2, n);
    for _ in 0..3 {
        let started = Instant::now();
        state
            .write_snapshot(&mut std::io::sink())
            .expect("a sink takes everything");
        println!("snapshot written to io::sink in {:.2?}", started.elapsed());
    }
}
