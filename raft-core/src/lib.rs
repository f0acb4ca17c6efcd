//! raft-core: a pure, clockless, sans-IO Raft state machine.
#![forbid(unsafe_code)]

#[cfg(feature = "buggy")]
pub mod bugs;
mod config;
mod input;
mod membership;
mod message;
pub mod quorum;
mod ready;
mod types;

pub use config::{Config, ConfigError};
pub use input::{Accepted, Input, StepError};
pub use membership::{ConfChange, ConfChangeStep, Membership, MembershipError};
pub use message::{ForwardedEntry, Message, MessageBody};
pub use ready::{ReadState, Ready};
pub use types::{
    Entry, EntryKind, HardState, LogIndex, NodeId, Role, Snapshot, SnapshotMeta, SoftState, Term,
};
