//! What the kv-replica examples share: the key count from the command line,
//! a log entry for an op, and a state machine of N keys loaded in order.
use kv_replica::command::{Command, Op};
use kv_replica::state_machine::KvStateMachine;
use raft_core::{Entry, EntryKind, LogIndex, Term};

/// The first argument, a key count (default 1,000,000).
pub fn key_count() -> u64 {
    std::env::args()
        .nth(1)
        .map_or(1_000_000, |a| a.parse().expect("a count"))
}

/// A normal entry of term 1 at `index` carrying `op`, without a client.
pub fn entry(index: u64, op: Op) -> Entry {
    Entry {
        term: Term(1),
        index: LogIndex(index),
        kind: EntryKind::Normal,
        data: Command {
            request: None,
            client: None,
            op,
        }
        .encode(),
    }
}

/// Keys `k00000000`.. of 100-byte values, applied in order by 1,000-key
/// `mput`s from index 1.
pub fn ordered_state(n: u64) -> KvStateMachine {
    let mut state = KvStateMachine::new();
    for (index, chunk) in (0..n).collect::<Vec<_>>().chunks(1000).enumerate() {
        let entries = chunk
            .iter()
            .map(|i| (format!("k{i:08}"), format!("{i:0>100}")))
            .collect();
        state.apply_entry(&entry(index as u64 + 1, Op::MultiPut { entries }));
    }
    state
}
