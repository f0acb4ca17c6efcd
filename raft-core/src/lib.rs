//! raft-core: a pure, clockless, sans-IO Raft state machine.
#![forbid(unsafe_code)]

#[cfg(feature = "buggy")]
pub mod bugs;
mod config;
mod drain;
mod election;
pub mod harness;
mod input;
mod log;
mod membership;
mod message;
mod node;
mod progress;
pub mod quorum;
mod read_index;
mod ready;
mod replication;
mod types;

pub use config::{Config, ConfigError};
pub use input::{Accepted, Input, StepError};
pub use membership::{ConfChange, ConfChangeStep, Membership, MembershipError};
pub use message::{ForwardedEntry, Message, MessageBody};
pub use node::{InitialState, Node, Status};
pub use ready::{ReadState, Ready};
pub use types::{
    Entry, EntryKind, HardState, LogIndex, NodeId, Role, Snapshot, SnapshotMeta, SoftState, Term,
};
