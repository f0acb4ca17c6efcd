//! kv-node: a replicated key-value store node built on raft-core.
//!
//! - `command`: the commands replicated through the log and their results.
//! - `state_machine`: the deterministic KV state machine (shared with `sim`).
//! - `storage`: the write-ahead log, hard state and snapshot files.
#![forbid(unsafe_code)]

pub mod command;
pub mod replica;
pub mod state_machine;
pub mod storage;
