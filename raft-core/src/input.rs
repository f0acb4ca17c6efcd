//! Everything that can happen to a node, as one enum, and what comes back.

use crate::membership::{ConfChange, MembershipError};
use crate::message::Message;
use crate::types::{LogIndex, NodeId, SnapshotMeta, Term};
use bytes::Bytes;

/// The one way into a node: [`crate::Node::step`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Input {
    /// One unit of logical time passed.
    Tick,
    /// A message from a peer.
    Message(Message),
    /// A client command to replicate. A follower forwards it to the leader.
    Propose { data: Bytes },
    /// A membership change, replicated through the log (leader only).
    ProposeConfChange(ConfChange),
    /// Asks for a read index. `context` is the driver's id for the request
    /// and comes back in a `ReadState`. With `lease`, a leader whose lease
    /// holds answers without a quorum round.
    ReadIndex { context: u64, lease: bool },
    /// Start an election now.
    Campaign,
    /// Hand leadership to `to` once it has caught up.
    TransferLeadership { to: NodeId },
    /// Everything `Ready` number `ready` asked to persist is durable.
    Persisted { ready: u64 },
    /// The state machine has applied every entry up to `index`.
    Applied { index: LogIndex },
    /// The driver stored a snapshot of the state machine at `meta.index`,
    /// `size_bytes` long; the core may drop the log prefix it covers. The
    /// snapshot's data stays with the driver, which attaches chunks of it to
    /// `InstallSnapshot` messages.
    SnapshotTaken { meta: SnapshotMeta, size_bytes: u64 },
}

/// What a successful step did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Accepted {
    /// The input was taken in; look at the next `Ready`.
    Done,
    /// The proposal was appended to the leader's log at this position.
    Appended { index: LogIndex, term: Term },
    /// The proposal or read was forwarded to the leader.
    Forwarded { leader: NodeId },
}

/// Why an input was refused. A refused proposal was certainly not appended.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum StepError {
    #[error("no leader is known")]
    NoLeader,
    #[error("this node is not the leader")]
    NotLeader,
    #[error("a leadership transfer is in progress")]
    TransferInProgress,
    #[error("{uncommitted} entries are waiting to commit; try again later")]
    Backpressure { uncommitted: usize },
    #[error("another membership change is still in progress")]
    ConfChangeInProgress,
    #[error("membership change refused: {0}")]
    Membership(#[from] MembershipError),
    #[error("node {0} is not a voter")]
    NotAVoter(NodeId),
    #[error("message addressed to {to}, not to this node")]
    WrongRecipient { to: NodeId },
    #[error("applied index {applied} is beyond the entries handed out ({handed_out})")]
    AppliedBeyondHandedOut {
        applied: LogIndex,
        handed_out: LogIndex,
    },
    #[error("snapshot at {index} is beyond the applied index {applied}")]
    SnapshotBeyondApplied { index: LogIndex, applied: LogIndex },
    #[error("node is removed from the cluster")]
    Removed,
}
