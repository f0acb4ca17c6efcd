//! kv-replica: one replica of the key-value store, sans I/O, shared by the
//! server (kv-node) and the simulator (sim).
//!
//! It owns what both must run identically: the command codec (`command`),
//! the deterministic KV state machine, its snapshot format and digest
//! (`state_machine`), the ready-handling loop over raft-core and the storage
//! traits it writes through (`replica`: `Replica`, `Durable`, `Recovered`),
//! and the requests waiting on a replica as plain data the driver steps
//! with each round's output (`waiters`: writes by request number, reads by
//! read index, F1; `membership_waiters`: proposals waiting to be in force),
//! and the backup file format (`backup`: header, snapshot body, checksummed
//! footer), which kv-node writes and restores and kvctl checks.
//!
//! It must not depend on tokio, sockets, threads, clocks, HTTP or TLS, nor
//! on kv-node or sim: the world (disk, network, time) is the caller's.
#![forbid(unsafe_code)]

pub mod backup;
pub mod bugs;
pub mod command;
pub mod lease_clock;
pub mod membership_waiters;
pub mod replica;
mod replica_leases;
pub mod state_machine;
pub mod waiters;
pub mod watch;
