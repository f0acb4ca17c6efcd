//! kv-node: a replicated key-value store node: the world (threads, disk,
//! network, HTTP) around kv-replica's sans-IO replica. The state machine,
//! command codec, the replica's steps of raft-core's Ready loop and the
//! storage traits live in kv-replica, the on-disk formats and recovery in
//! kv-storage; this crate adds only I/O. Nothing in raft-core, kv-replica,
//! kv-storage or sim may depend on it.
//!
//! - `storage`: kv-storage re-exported: the write-ahead log, hard state and
//!   snapshot files, run over real files.
//! - `wal_disk`: kv-replica's `Durable` on `storage`, for the real node,
//!   with the background snapshot writer thread; `persist_stage`: the
//!   thread that writes and fsyncs the WAL, off the driver thread;
//!   `staged_decoder`: a snapshot from the leader decoded while it arrives.
//! - `driver`: the thread that owns the replica; requests reach it by channel.
//! - `directory`: the address book (node name -> URL) the node runs with.
//! - `peer`: the one HTTP(S) client between nodes, raft messages out
//!   (`transport`) and in (`inbound`), `--join`, forwarding to the leader.
//! - `http`: the client API (API.md), transactions, and the peer endpoint.
//! - `server`: wiring, startup, graceful shutdown; the binary's entry.
//! - `cli`, `settings`, `ids`: flags, the settings both sides share, node
//!   names and ids; `metrics`: the prometheus-client registry;
//!   `log_limit`: rate-limited logging of refusals.
//! - `auth`: bearer tokens, roles, and the access each request needs;
//!   `secret_file`: the warning for secrets open to other users.
//! - `check_command`, `restore_command`: the `kv-node check` and
//!   `kv-node restore` subcommands.
//! - `tls`: rustls configurations; `accept`: the accept loop (plain HTTP
//!   or TLS) with the connection limit and header timeout.
#![forbid(unsafe_code)]

pub mod accept;
pub mod auth;
pub mod background;
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
pub mod persist_stage;
pub mod restore_command;
pub mod secret_file;
pub mod server;
pub mod settings;
mod spare_maker;
pub mod staged_decoder;
pub mod tls;
pub mod wal_disk;
pub mod watch;

/// The storage code lives in the kv-storage crate (shared with the
/// simulator); kv-node runs it over real files (`StdFs`).
pub use kv_storage as storage;
