//! raft-core: a pure, clockless, sans-IO Raft state machine.
//!
//! The core never touches a clock, a socket, a thread or a disk. A driver
//! feeds it [`Input`]s through [`Node::step`] and drains what it must do
//! through [`Node::ready`]; randomness comes only from the seed in
//! [`Config`]. The same inputs always give the same outputs.
//!
//! The loop every driver runs (see [`Ready`] for the ordering contract):
//!
//! ```
//! use bytes::Bytes;
//! use raft_core::{Config, InitialState, Input, Membership, Node, NodeId, Role};
//!
//! // A single-node cluster: it elects itself and commits on its own.
//! let id = NodeId(1);
//! let mut node = Node::new(
//!     Config::new(id),
//!     InitialState { bootstrap: Membership::new([id]), ..InitialState::default() },
//! )
//! .expect("valid configuration");
//!
//! let mut disk = Vec::new(); // stands in for a write-ahead log
//! let mut applied = Vec::new(); // stands in for the state machine
//! for tick in 0..100 {
//!     node.step(Input::Tick).unwrap(); // time passes only when the driver says so
//!     if tick == 50 {
//!         node.step(Input::Propose { data: Bytes::from_static(b"x=1") }).unwrap();
//!     }
//!     while node.has_ready() {
//!         let rd = node.ready();
//!         // 1. rd.soft_state: role and leader changes, for routing requests.
//!         // 2. Persist entries and hard state, fsync, then acknowledge.
//!         disk.extend(rd.entries.iter().cloned());
//!         if rd.must_persist() {
//!             node.step(Input::Persisted { ready: rd.number }).unwrap();
//!         }
//!         // 3. Send rd.messages to peers (none here: no peers).
//!         assert!(rd.messages.is_empty());
//!         // 4. Apply committed entries, then acknowledge.
//!         if let Some(last) = rd.committed_entries.last() {
//!             let index = last.index;
//!             applied.extend(rd.committed_entries);
//!             node.step(Input::Applied { index }).unwrap();
//!         }
//!         // 5. Serve rd.read_states once applied up to their index.
//!     }
//! }
//! assert_eq!(node.role(), Role::Leader);
//! assert!(applied.iter().any(|e| e.data == Bytes::from_static(b"x=1")));
//! ```
//!
//! Where things live: `node.rs` holds the state and the term rules that run
//! before any role code; `election.rs`, `replication.rs` and `read_index.rs`
//! hold the role handlers; `repair.rs` keeps a node whose storage lost
//! acknowledged records out of elections until it is repaired; `drain.rs`
//! assembles `Ready`; `log.rs`,
//! `progress.rs`, `quorum.rs` and `membership.rs` are leaf modules.
#![forbid(unsafe_code)]

pub mod bugs;
mod config;
mod drain;
mod election;
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
mod removal;
mod repair;
mod replication;
mod types;
mod validate;

pub use config::{Config, ConfigError};
pub use input::{Accepted, Input, StepError};
pub use membership::{ConfChange, ConfChangeStep, Membership, MembershipError};
pub use message::{ForwardedEntry, Message, MessageBody};
pub use node::{InitialState, Node, Status};
pub use ready::{ReadState, Ready, SnapshotChunk};
pub use types::{
    Entry, EntryKind, HardState, LogIndex, NodeId, Role, SnapshotMeta, SoftState, Term,
};
pub use validate::{MAX_PEER_INDEX, MAX_PEER_TERM};
