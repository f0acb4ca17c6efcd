//! How long restoring a snapshot of N keys takes (issue 12's restart
//! target), and how long building the map alone takes:
//! `cargo run --release -p kv-replica --example restore_time -- 1000000`.
use kv_replica::command::{Command, Op};
use kv_replica::state_machine::KvStateMachine;
use raft_core::{Entry, EntryKind, LogIndex, Term};
use std::time::Instant;

fn main() {
    let n: u64 = std::env::args()
        .nth(1)
        .map_or(1_000_000, |a| a.parse().expect("a count"));
    let mut state = KvStateMachine::new();
    let started = Instant::now();
    let mut index = 0;
    for chunk in (0..n).collect::<Vec<_>>().chunks(1000) {
        index += 1;
        let entries = chunk
            .iter()
            .map(|i| (format!("k{i:08}"), format!("{:0>100}", i)))
            .collect();
        state.apply_entry(&Entry {
            term: Term(1),
            index: LogIndex(index),
            kind: EntryKind::Normal,
            data: Command {
                request: None,
                client: None,
                op: Op::MultiPut { entries },
            }
            .encode(),
        });
    }
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
