//! The harness shared by the root integration tests: real kv-node
//! processes on loopback addresses, a small HTTP client, the API requests as
//! functions, and a seeded random generator.
//!
//! Each test binary uses a different part of it.
#![allow(dead_code)]

pub mod binary;
pub mod cluster;
pub mod http;
pub mod kv;
pub mod rng;
pub mod snapshot_helpers;

use std::io::Write;

/// Prints a line that `cargo test`'s output capture does not swallow, for
/// what a person running the tests must see (a skip, a chaos summary).
pub fn say(line: &str) {
    let _ = writeln!(std::io::stderr(), "{line}");
}
