//! kv-node: a replicated key-value store node: the world (threads, disk,
//! network, HTTP) around kv-replica's sans-IO replica. The state machine,
//! command codec, Ready loop and storage traits live in kv-replica; this
//! crate adds only I/O. Nothing in kv-replica, raft-core or sim may depend
//! on it.
//!
//! - `storage`: kv-storage re-exported: the write-ahead log, hard state and
//!   snapshot files, run over real files.
//! - `wal_disk`: kv-replica's `Durable` on `storage`, for the real node.
//! - `driver`: the thread that owns the replica; requests reach it by channel.
//! - `directory`: the address book (node name -> URL) the node runs with.
//! - `join`: `--join`, asking a running cluster to add this node.
//! - `transport`: raft messages to peers over HTTP; `inbound`: from them.
//! - `http`: the client API (API.md) and the peer endpoint.
//! - `server`: wiring, startup, graceful shutdown; the binary's entry.
//! - `cli`, `ids`, `metrics`: flags, node names and ids, Prometheus text.
//! - `auth`: bearer tokens, roles, and the access each request needs.
//! - `tls`: rustls configurations; `accept`: the accept loop (plain HTTP
//!   or TLS) with the connection limit and header timeout; `peer`: the
//!   HTTP(S) client between nodes, the transport, join and forwarding.
#![forbid(unsafe_code)]

pub mod accept;
pub mod auth;
pub mod check_command;
pub mod cli;
pub mod directory;
pub mod disk_space;
pub mod driver;
pub mod http;
pub mod ids;
pub mod log_limit;
pub mod metrics;
pub mod peer;
pub mod server;
pub mod settings;
pub mod tls;
pub mod wal_disk;

/// The storage code lives in the kv-storage crate (shared with the
/// simulator); kv-node runs it over real files (`StdFs`).
pub use kv_storage as storage;
