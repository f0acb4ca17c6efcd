//! The vocabulary of the Raft paper as newtypes, so a term can never be
//! passed where a log index is expected.

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use std::fmt;

/// A member of the cluster. The driver maps its own names (URLs, host names)
/// onto these numbers; the core only compares them.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct NodeId(pub u64);

/// A Raft term: a logical clock that only moves forward.
#[derive(Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Term(pub u64);

/// A position in the replicated log. Index 0 is the empty prefix; the first
/// entry ever written has index 1.
#[derive(Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct LogIndex(pub u64);

impl LogIndex {
    pub const ZERO: LogIndex = LogIndex(0);

    pub fn next(self) -> LogIndex {
        LogIndex(self.0 + 1)
    }

    /// The index before this one; `ZERO` stays `ZERO`.
    pub fn prev(self) -> LogIndex {
        LogIndex(self.0.saturating_sub(1))
    }

    pub fn plus(self, n: u64) -> LogIndex {
        LogIndex(self.0 + n)
    }
}

impl Term {
    pub const ZERO: Term = Term(0);

    pub fn next(self) -> Term {
        Term(self.0 + 1)
    }
}

impl fmt::Debug for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "n{}", self.0)
    }
}
impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "n{}", self.0)
    }
}
impl fmt::Debug for Term {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}
impl fmt::Display for Term {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}
impl fmt::Debug for LogIndex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}
impl fmt::Display for LogIndex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// What an entry carries. The core looks only at the kind; the payload of a
/// `Normal` entry is opaque to it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum EntryKind {
    /// A client command for the state machine.
    Normal,
    /// The empty entry a new leader appends so that it can commit entries of
    /// earlier terms (Raft paper, section 5.4.2) and serve read-index reads.
    Noop,
    /// A membership change; the payload is a serialized [`crate::ConfChange`].
    ConfChange,
}

/// One log entry.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    pub term: Term,
    pub index: LogIndex,
    pub kind: EntryKind,
    pub data: Bytes,
}

impl Entry {
    /// Bytes this entry is charged against message and batch limits.
    pub fn size_bytes(&self) -> usize {
        self.data.len() + 24
    }
}

impl fmt::Debug for Entry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Entry({}@{} {:?} {}B)",
            self.index,
            self.term,
            self.kind,
            self.data.len()
        )
    }
}

/// The state that must be on stable storage before the node answers anyone
/// (Raft paper, Figure 2: currentTerm, votedFor; plus the commit index, which
/// lets a restarted node re-apply without waiting for a leader).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HardState {
    pub term: Term,
    pub vote: Option<NodeId>,
    pub commit: LogIndex,
}

/// The role a node plays in its current term.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Role {
    Follower,
    /// Asking for pre-votes: a probe that does not increment the term.
    PreCandidate,
    Candidate,
    Leader,
    /// A non-voting member that receives the log.
    Learner,
}

/// Volatile state the driver wants to observe: who leads, and what we are.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SoftState {
    pub role: Role,
    pub leader: Option<NodeId>,
    pub term: Term,
}

/// The metadata of a state-machine snapshot: it replaces the log up to and
/// including `index`, and carries the membership in force at that index.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotMeta {
    pub index: LogIndex,
    pub term: Term,
    pub membership: crate::Membership,
}
