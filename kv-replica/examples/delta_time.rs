//! What a delta snapshot costs against a whole one, and what a merged
//! restore of a chain costs against a whole snapshot's:
//! `cargo run --release -p kv-replica --example delta_time -- 10000000 [DELTAS]`.
//!
//! N keys loaded in order, a whole snapshot, then DELTAS (default 3)
//! rounds of N/8 random single-key puts, each followed by a delta (all to
//! memory).
mod support {
    pub mod load;
}

use kv_replica::command::Op;
use kv_replica::state_machine::KvStateMachine;
use std::time::Instant;
use support::load::entry;

fn main() {
    let n = support::load::key_count();
    let mut state = support::load::ordered_state(n);
    let started = Instant::now();
    let mut whole = Vec::new();
    state.write_snapshot(&mut whole).unwrap();
    println!(
        "whole snapshot of {n} keys: {} MB in {:.2?}",
        whole.len() >> 20,
        started.elapsed()
    );
    state.take_changed_keys();
    let mut x: u64 = 88_172_645_463_325_252;
    let mut deltas = Vec::new();
    let rounds: usize = std::env::args()
        .nth(2)
        .map_or(3, |a| a.parse().expect("DELTAS is a count"));
    for round in 0..rounds {
        let base = state.applied_index();
        let start = base + 1;
        for i in 0..n / 8 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let key = format!("k{:08}", x % n);
            let value = format!("{round}{i:0>99}");
            state.apply_entry(&entry(start + i, Op::Put { key, value }));
        }
        let changed = state.take_changed_keys().expect("tracked");
        let keys = changed.len();
        let started = Instant::now();
        let mut delta = Vec::new();
        state
            .write_delta_snapshot(base, changed, &mut delta)
            .unwrap();
        println!(
            "delta {round}: {keys} keys changed, {} MB in {:.2?}",
            delta.len() >> 20,
            started.elapsed()
        );
        deltas.push(delta);
    }
    let started = Instant::now();
    let mut whole_now = Vec::new();
    state.write_snapshot(&mut whole_now).unwrap();
    println!(
        "whole snapshot at the end: {} MB in {:.2?}",
        whole_now.len() >> 20,
        started.elapsed()
    );
    drop(state);
    let started = Instant::now();
    let restored = KvStateMachine::restore_from_bytes(&whole_now).unwrap();
    println!("restore of the whole snapshot: {:.2?}", started.elapsed());
    let digest = restored.digest();
    drop(restored);
    let started = Instant::now();
    let mut readers: Vec<&[u8]> = deltas.iter().map(Vec::as_slice).collect();
    let merged = KvStateMachine::restore_merged(&mut whole.as_slice(), &mut readers).unwrap();
    println!(
        "merged restore of the whole snapshot and {rounds} deltas: {:.2?}",
        started.elapsed()
    );
    assert_eq!(merged.digest(), digest);
    drop(merged);
    let started = Instant::now();
    let mut readers: Vec<&[u8]> = deltas.iter().map(Vec::as_slice).collect();
    let chained = KvStateMachine::read_snapshot_chain(&mut whole.as_slice(), &mut readers).unwrap();
    println!(
        "restore of the whole snapshot, then the {rounds} deltas applied key by key: {:.2?}",
        started.elapsed()
    );
    assert_eq!(chained.digest(), digest);
}
