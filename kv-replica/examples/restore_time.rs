//! How long restoring a snapshot of N keys takes (issue 12's restart
//! target), and how long building the map alone takes:
//! `cargo run --release -p kv-replica --example restore_time -- 1000000`.
mod support {
    pub mod load;
}

use kv_replica::state_machine::KvStateMachine;
use std::time::Instant;

fn main() {
    let n = support::load::key_count();
    let started = Instant::now();
    let state = support::load::ordered_state(n);
    println!("applied {n} keys in {:.2?}", started.elapsed());
    let bytes = state.snapshot_bytes();
    println!("snapshot: {} bytes", bytes.len());
    for _ in 0..3 {
        let started = Instant::now();
        let restored = KvStateMachine::restore_from_bytes(&bytes).expect("restores");
        println!("restored in {:.2?}", started.elapsed());
        let started = Instant::now();
        drop(restored);
        println!("dropped in {:.2?}", started.elapsed());
    }
    let keys: Vec<std::sync::Arc<str>> = (0..n).map(|i| format!("k{i:08}").into()).collect();
    let started = Instant::now();
    let mut map = imbl::OrdMap::new();
    for (i, key) in keys.into_iter().enumerate() {
        map.insert(key, i);
    }
    println!(
        "imbl OrdMap of {n} ascending inserts alone: {:.2?}",
        started.elapsed()
    );
}
