//! raft-core: a pure, clockless, sans-IO Raft state machine.
//!
//! The core never touches a clock, a socket, a thread or a disk. A driver
//! feeds it [`Input`]s through [`Node::step`] and drains what it must do
//! through [`Node::ready`]; randomness comes only from the seed in
//! [`Config`]. The same inputs always give the same outputs.
//!
//! What a `Ready` asks for, step by step, is a [`ReadyHandler`];
//! [`Node::handle_ready`] is the one loop that walks a `Ready` through it in
//! the order of the contract (see [`Ready`]) and acknowledges `Persisted` and
//! `Applied`. kv-replica (kv-node and the simulator), the test harness and
//! the examples all run it:
//!
//! ```
//! use bytes::Bytes;
//! use raft_core::{
//!     ChunkRequest, Config, Durability, Entry, InitialState, Input, Membership, Message, Node,
//!     NodeId, ReadyHandler, Role,
//! };
//!
//! /// A single node with a vector for a disk and one for a state machine.
//! #[derive(Default)]
//! struct World {
//!     disk: Vec<Entry>,
//!     applied: Vec<Entry>,
//! }
//!
//! impl ReadyHandler for World {
//!     type Error = std::io::Error;
//!     fn send(&mut self, _message: Message) -> std::io::Result<()> {
//!         unreachable!("a single node has no peers")
//!     }
//!     fn snapshot_chunk(&mut self, _: ChunkRequest) -> std::io::Result<Bytes> {
//!         unreachable!("no snapshot is taken here")
//!     }
//!     fn append(&mut self, entries: &[Entry]) -> std::io::Result<()> {
//!         // Truncate from the first index, then append (a write-ahead log).
//!         self.disk.truncate(entries[0].index.0 as usize - 1);
//!         self.disk.extend_from_slice(entries);
//!         Ok(())
//!     }
//!     fn persist(&mut self, _ready: u64, _must_sync: bool) -> std::io::Result<Durability> {
//!         Ok(Durability::Now) // fsync here, or hand the write to a persist stage
//!     }
//!     fn apply(&mut self, entries: Vec<Entry>) -> std::io::Result<()> {
//!         self.applied.extend(entries);
//!         Ok(())
//!     }
//! }
//!
//! // A single-node cluster: it elects itself and commits on its own.
//! let id = NodeId(1);
//! let mut node = Node::new(
//!     Config::new(id),
//!     InitialState { bootstrap: Membership::new([id]), ..InitialState::default() },
//! )
//! .expect("valid configuration");
//! let mut world = World::default();
//! for tick in 0..100 {
//!     node.step(Input::Tick).unwrap(); // time passes only when the driver says so
//!     if tick == 50 {
//!         node.step(Input::Propose { data: Bytes::from_static(b"x=1") }).unwrap();
//!     }
//!     while node.handle_ready(&mut world).unwrap() {}
//! }
//! assert_eq!(node.role(), Role::Leader);
//! assert!(world.applied.iter().any(|e| e.data == Bytes::from_static(b"x=1")));
//! assert_eq!(world.disk.len(), world.applied.len());
//! ```
//!
//! Where things live: `node.rs` holds the state and the term rules that run
//! before any role code; `election.rs`, `replication.rs` and `read_index.rs`
//! hold the role handlers; `repair.rs` keeps a node whose storage lost
//! acknowledged records out of elections until it is repaired; `drain.rs`
//! assembles `Ready` and `ready_handler.rs` walks it; `log.rs`,
//! `progress.rs`, `quorum.rs` and `membership.rs` are leaf modules.
#![forbid(unsafe_code)]

pub mod bugs;
mod config;
mod drain;
mod election;
mod entries;
#[cfg(feature = "harness")]
pub mod harness;
mod input;
mod log;
mod membership;
mod message;
mod node;
mod progress;
mod quorum;
mod read_index;
mod ready;
mod ready_handler;
mod removal;
mod repair;
mod replication;
mod types;
mod validate;

pub use config::{Config, ConfigError};
pub use entries::RemovedEntries;
pub use input::{Accepted, Input, StepError};
pub use membership::{ConfChange, ConfChangeStep, Membership, MembershipError};
pub use message::{ForwardedEntry, Message, MessageBody};
pub use node::{InitialState, Node, Status};
pub use ready::{ReadState, Ready, SnapshotChunk};
pub use ready_handler::{ChunkRequest, Durability, ReadyHandler};
pub use types::{
    Entry, EntryKind, HardState, LogIndex, NodeId, Role, SnapshotMeta, SoftState, Term,
};
pub use validate::{MAX_PEER_INDEX, MAX_PEER_TERM};
