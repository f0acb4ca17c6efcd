//! Everything that can happen to a node, as one enum, and what comes back.

use crate::membership::{ConfChange, MembershipError};
use crate::message::Message;
use crate::types::{EntryKind, LogIndex, NodeId, SnapshotMeta, Term};
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
    #[error(
        "this node's log lost acknowledged records and waits for a leader of a term above {bound} to repair it"
    )]
    LogDamaged { bound: Term },

    // A peer message refused at the door of `step` (see `validate.rs`): it
    // could not have come from an honest node, and it is dropped unread.
    #[error("message claims to come from this node ({from})")]
    FromSelf { from: NodeId },
    #[error("term {term} is beyond the largest term a peer may send ({limit})")]
    TermOutOfRange { term: Term, limit: Term },
    #[error("index {index} is beyond the largest index a peer may send ({limit})")]
    IndexOutOfRange { index: LogIndex, limit: LogIndex },
    #[error("entry {position} of the message has index {found}, expected {expected}")]
    EntriesNotContiguous {
        position: usize,
        expected: LogIndex,
        found: LogIndex,
    },
    #[error("entry {index} has term {term}, below the term {previous} before it")]
    EntryTermsDecrease {
        index: LogIndex,
        term: Term,
        previous: Term,
    },
    #[error("log term {log_term} is above the message term {message_term}")]
    LogTermAboveMessageTerm { log_term: Term, message_term: Term },
    #[error("entry {index} of term {term} contradicts the committed entry of term {committed}")]
    ConflictsWithCommitted {
        index: LogIndex,
        term: Term,
        committed: Term,
    },
    #[error("{from} answered about index {index}, beyond our last index {last}")]
    AckBeyondLastIndex {
        from: NodeId,
        index: LogIndex,
        last: LogIndex,
    },
    #[error("{from} answered read round {round}, beyond the newest sent ({sent})")]
    ReadRoundAhead { from: NodeId, round: u64, sent: u64 },
    #[error("snapshot chunk at {offset} of {len} bytes overruns its total of {total_bytes}")]
    SnapshotChunkOutOfRange {
        offset: u64,
        len: u64,
        total_bytes: u64,
    },
    #[error("snapshot chunk announces {len} bytes but carries {carried}")]
    SnapshotChunkLength { len: u64, carried: u64 },
    #[error("snapshot at {index} has no voters")]
    SnapshotWithoutVoters { index: LogIndex },
    #[error("{from} reports {received} snapshot bytes received of {total_bytes}")]
    SnapshotReceivedBeyondTotal {
        from: NodeId,
        received: u64,
        total_bytes: u64,
    },
    #[error("a peer may forward only normal entries, not {kind:?}")]
    ForwardedKindNotAllowed { kind: EntryKind },
}

impl StepError {
    /// A short, stable name per refusal of a peer message, for metrics
    /// labels; None for refusals of the driver's own inputs.
    pub fn peer_message_kind(&self) -> Option<&'static str> {
        Some(match self {
            StepError::FromSelf { .. } => "from_self",
            StepError::TermOutOfRange { .. } => "term_out_of_range",
            StepError::IndexOutOfRange { .. } => "index_out_of_range",
            StepError::EntriesNotContiguous { .. } => "entries_not_contiguous",
            StepError::EntryTermsDecrease { .. } => "entry_terms_decrease",
            StepError::LogTermAboveMessageTerm { .. } => "log_term_above_message_term",
            StepError::ConflictsWithCommitted { .. } => "conflicts_with_committed",
            StepError::AckBeyondLastIndex { .. } => "ack_beyond_last_index",
            StepError::ReadRoundAhead { .. } => "read_round_ahead",
            StepError::SnapshotChunkOutOfRange { .. } => "snapshot_chunk_out_of_range",
            StepError::SnapshotChunkLength { .. } => "snapshot_chunk_length",
            StepError::SnapshotWithoutVoters { .. } => "snapshot_without_voters",
            StepError::SnapshotReceivedBeyondTotal { .. } => "snapshot_received_beyond_total",
            StepError::ForwardedKindNotAllowed { .. } => "forwarded_kind_not_allowed",
            StepError::WrongRecipient { .. } => "wrong_recipient",
            _ => return None,
        })
    }
}
