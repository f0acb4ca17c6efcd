//! raftkv: the root package. It only hosts the workspace's top-level
//! `examples/` and `tests/`, and re-exports the member crates for them.

pub use kv_node;
pub use raft_core;
pub use sim;
