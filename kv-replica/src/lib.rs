//! kv-replica: one replica of the key-value store, sans I/O, shared by the
//! server (kv-node) and the simulator (sim).
//!
//! It owns what both must run identically: the command codec (`command`),
//! the deterministic KV state machine, its snapshot format and
//! digest (`state_machine`), the ready-handling loop over raft-core and the storage
//! traits it writes through (`replica`: `Replica`, `Durable`, `Recovered`).
//!
//! It must not depend on tokio, sockets, threads, clocks, HTTP or TLS, nor
//! on kv-node or sim: the world (disk, network, time) is the caller's.
#![forbid(unsafe_code)]

pub mod command;
pub mod replica;
pub mod state_machine;
