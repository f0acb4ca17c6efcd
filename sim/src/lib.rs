//! sim: a seeded, deterministic simulator for raft-core and the KV state
//! machine, and a linearizability checker for client histories.
#![forbid(unsafe_code)]

pub mod linearizability;
