//! What the state machine's key type costs a random overwrite in a large
//! map (issue 12, 10M keys): `imbl::OrdMap` keyed by `Arc<str>` (every
//! comparison down the B-tree follows a heap pointer) against the inline
//! `Key` (up to 23 bytes in place).
//! `cargo run --release -p kv-replica --example map_keys -- 10000000 inline`
//! (or `arc`); one kind per run, so that the peak RSS printed is its own.
use imbl::OrdMap;
use kv_replica::state_machine::Key;
use std::borrow::Borrow;
use std::sync::Arc;
use std::time::Instant;

/// What a key maps to in the state machine: a shared value and a revision.
#[derive(Clone)]
struct Stored {
    _value: Arc<str>,
    _revision: u64,
}

const OVERWRITES: u64 = 2_000_000;

fn run<K: Ord + Clone + From<String> + Borrow<str>>(kind: &str, keys: u64) {
    let value: Arc<str> = "x".repeat(100).into();
    let started = Instant::now();
    let mut map: OrdMap<K, Stored> = OrdMap::new();
    for i in 0..keys {
        let stored = Stored {
            _value: value.clone(),
            _revision: i,
        };
        map.insert(K::from(format!("bench{i:011}")), stored);
    }
    let built = started.elapsed();
    // xorshift: the same random key order for both kinds.
    let mut x = 88_172_645_463_325_252u64;
    let started = Instant::now();
    for revision in 0..OVERWRITES {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let key = K::from(format!("bench{:011}", x % keys));
        let stored = Stored {
            _value: "y".repeat(100).into(),
            _revision: revision,
        };
        map.insert(key, stored);
    }
    let elapsed = started.elapsed();
    println!(
        "{kind}: {keys} keys built in {built:.2?}; {OVERWRITES} random overwrites in {elapsed:.2?} = {:.0} ns each",
        elapsed.as_nanos() as f64 / OVERWRITES as f64
    );
    if let Ok(status) = std::fs::read_to_string("/proc/self/status") {
        for line in status.lines().filter(|l| l.starts_with("VmHWM")) {
            println!("{line}");
        }
    }
}

fn main() {
    let mut args = std::env::args().skip(1);
    let keys: u64 = args
        .next()
        .map_or(1_000_000, |a| a.parse().expect("a key count"));
    match args.next().as_deref().unwrap_or("inline") {
        "arc" => run::<Arc<str>>("Arc<str>", keys),
        "inline" => run::<Key>("Key (inline)", keys),
        other => panic!("unknown key kind {other:?}: arc or inline"),
    }
}
