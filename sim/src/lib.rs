//! sim: a seeded, deterministic simulator for raft-core and the KV state
//! machine, and a linearizability checker for client histories.
//!
//! The simulator runs the real code: each node is a
//! [`kv_replica::replica::Replica`] (raft-core plus the KV state machine plus
//! the ready-handling loop kv-node runs) over a simulated disk, and its
//! clients wait in [`kv_replica::waiters::Waiters`], the bookkeeping of
//! kv-node's driver (F1 included); only the network, the disk and time are
//! fake. One seed decides everything. sim depends on kv-replica,
//! kv-storage and raft-core, never on kv-node (no tokio, sockets or
//! threads here).
//!
//! - `faults`: the one declarative plan of every fault knob, drawn per seed.
//! - `network`, `disk`: the fake world; they ask the plan what happens.
//!   `block_fs`: the block-level disk that kv-storage (kv-node's real WAL,
//!   snapshot files and recovery) runs on in `blockdisk` runs.
//! - `world`, `world_clients`, `world_faults`: the event loop;
//!   `world_triggers`: faults fired by events (Figure 8, splits after a
//!   membership change, crashes mid snapshot transfer);
//!   `world_membership`: membership changes and spare nodes;
//!   `world_final`: the final heal, liveness and the end-of-run checks;
//!   `world_transfer`: leadership transfers, restarts inside the lease, a
//!   campaign that dies in its fsync; `world_corrupt`: a corrupting peer.
//! - `panics`: node-code panics are violations, the simulator's own are bugs.
//! - `client`: clients and the history they record; `history` hands it to
//!   `linearizability`.
//! - `checks`: the safety properties checked after every step.
//! - `report`, `minimize`: what a run prints, and shrinking a failing one.
#![forbid(unsafe_code)]

pub mod block_fs;
#[cfg(feature = "buggy")]
pub mod bugs;
pub mod checks;
pub mod client;
pub mod disk;
pub mod faults;
mod faults_display;
pub mod history;
pub mod lease_client;
pub mod linearizability;
pub mod minimize;
pub mod network;
pub mod options;
pub mod panics;
pub mod report;
pub mod rng;
pub mod schedule;
pub mod trace;
pub mod txn_client;
pub mod watch_client;
pub mod world;
mod world_clients;
mod world_corrupt;
mod world_faults;
mod world_final;
mod world_leases;
mod world_membership;
mod world_nodes;
mod world_transfer;
mod world_triggers;
mod world_watch;

pub use faults::{FaultKind, FaultSelection};
pub use options::{ConfigHook, SimOptions};
pub use report::{RunReport, Summary, run};
