//! Who votes, who only listens, and how that changes through the log.

use crate::quorum::{self, VoteResult};
use crate::types::{LogIndex, NodeId};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

/// The configuration in force. While `outgoing` is non-empty the cluster is
/// in joint consensus and every decision needs a majority of both halves.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Membership {
    pub voters: BTreeSet<NodeId>,
    /// The previous voters while a joint configuration is in force.
    pub outgoing: BTreeSet<NodeId>,
    pub learners: BTreeSet<NodeId>,
}

/// One step of a membership change.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ConfChangeStep {
    AddVoter(NodeId),
    AddLearner(NodeId),
    Remove(NodeId),
}

/// A membership change as it is proposed and stored in a `ConfChange` entry.
/// `Enter` with several steps (or one that changes the voters) goes through a
/// joint configuration; `Leave` ends it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ConfChange {
    Enter(Vec<ConfChangeStep>),
    Leave,
    /// The initial voters, written as entry 1 of every new cluster's log so
    /// that a node joining later learns the configuration from the log.
    Bootstrap(Vec<NodeId>),
}

/// Why a membership change cannot be applied.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum MembershipError {
    #[error("a joint configuration is already in force; leave it first")]
    AlreadyJoint,
    #[error("not in a joint configuration")]
    NotJoint,
    #[error("the change would leave no voters")]
    NoVoters,
    #[error("node {0} is not a member")]
    UnknownMember(NodeId),
    #[error("the bootstrap configuration differs from the one in force")]
    BootstrapMismatch,
    #[error("malformed membership change of {0} bytes")]
    Malformed(usize),
}

impl Membership {
    pub fn new(voters: impl IntoIterator<Item = NodeId>) -> Membership {
        Membership {
            voters: voters.into_iter().collect(),
            ..Membership::default()
        }
    }

    pub fn is_joint(&self) -> bool {
        !self.outgoing.is_empty()
    }

    /// True if `id` votes in either half.
    pub fn is_voter(&self, id: NodeId) -> bool {
        self.voters.contains(&id) || self.outgoing.contains(&id)
    }

    pub fn is_member(&self, id: NodeId) -> bool {
        self.is_voter(id) || self.learners.contains(&id)
    }

    /// Every member, voter or learner, in order.
    pub fn members(&self) -> BTreeSet<NodeId> {
        self.voters
            .iter()
            .chain(&self.outgoing)
            .chain(&self.learners)
            .copied()
            .collect()
    }

    pub fn committed_index(&self, acked: &BTreeMap<NodeId, LogIndex>) -> LogIndex {
        quorum::joint_majority_index(&self.voters, &self.outgoing, acked)
    }

    pub fn vote_result(&self, votes: &BTreeMap<NodeId, bool>) -> VoteResult {
        quorum::joint_vote_result(&self.voters, &self.outgoing, votes)
    }

    /// True if the nodes in `heard` form a quorum (of both halves if joint).
    pub fn has_quorum(&self, heard: &BTreeSet<NodeId>) -> bool {
        let votes: BTreeMap<NodeId, bool> = heard.iter().map(|&n| (n, true)).collect();
        self.vote_result(&votes) == VoteResult::Won
    }

    /// The configuration after `change`. Entering keeps the current voters as
    /// the outgoing half, so the change is safe for any set of steps.
    pub fn apply(&self, change: &ConfChange) -> Result<Membership, MembershipError> {
        match change {
            ConfChange::Bootstrap(voters) => {
                let initial = Membership::new(voters.iter().copied());
                let empty = self.members().is_empty();
                if !empty && *self != initial {
                    return Err(MembershipError::BootstrapMismatch);
                }
                if initial.voters.is_empty() {
                    return Err(MembershipError::NoVoters);
                }
                Ok(initial)
            }
            ConfChange::Leave => {
                if !self.is_joint() {
                    return Err(MembershipError::NotJoint);
                }
                let mut next = self.clone();
                next.outgoing.clear();
                Ok(next)
            }
            ConfChange::Enter(steps) => {
                if self.is_joint() {
                    return Err(MembershipError::AlreadyJoint);
                }
                let mut next = self.clone();
                next.outgoing = self.voters.clone();
                for step in steps {
                    match *step {
                        ConfChangeStep::AddVoter(id) => {
                            next.learners.remove(&id);
                            next.voters.insert(id);
                        }
                        ConfChangeStep::AddLearner(id) => {
                            next.voters.remove(&id);
                            next.learners.insert(id);
                        }
                        ConfChangeStep::Remove(id) => {
                            if !self.is_member(id) {
                                return Err(MembershipError::UnknownMember(id));
                            }
                            next.voters.remove(&id);
                            next.learners.remove(&id);
                        }
                    }
                }
                if next.voters.is_empty() {
                    return Err(MembershipError::NoVoters);
                }
                // A change that leaves the voters as they were needs no joint phase.
                if next.voters == next.outgoing {
                    next.outgoing.clear();
                }
                Ok(next)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replacing_a_voter_enters_and_leaves_a_joint_configuration() {
        let m = Membership::new([NodeId(1), NodeId(2), NodeId(3)]);
        let joint = m
            .apply(&ConfChange::Enter(vec![
                ConfChangeStep::AddVoter(NodeId(4)),
                ConfChangeStep::Remove(NodeId(1)),
            ]))
            .unwrap();
        assert!(joint.is_joint());
        assert!(joint.is_voter(NodeId(1)), "outgoing voters still vote");
        assert_eq!(
            joint.apply(&ConfChange::Enter(vec![])),
            Err(MembershipError::AlreadyJoint)
        );
        let done = joint.apply(&ConfChange::Leave).unwrap();
        assert!(!done.is_voter(NodeId(1)));
        assert!(done.is_voter(NodeId(4)));
    }

    #[test]
    fn adding_a_learner_needs_no_joint_phase() {
        let m = Membership::new([NodeId(1)]);
        let next = m
            .apply(&ConfChange::Enter(vec![ConfChangeStep::AddLearner(
                NodeId(2),
            )]))
            .unwrap();
        assert!(!next.is_joint());
        assert!(next.is_member(NodeId(2)) && !next.is_voter(NodeId(2)));
    }

    #[test]
    fn bootstrap_sets_an_empty_configuration_and_must_match_an_existing_one() {
        let joiner = Membership::default();
        let boot = ConfChange::Bootstrap(vec![NodeId(1), NodeId(2)]);
        assert_eq!(
            joiner.apply(&boot),
            Ok(Membership::new([NodeId(1), NodeId(2)]))
        );
        let same = Membership::new([NodeId(1), NodeId(2)]);
        assert_eq!(same.apply(&boot), Ok(same.clone()));
        let other = Membership::new([NodeId(3)]);
        assert_eq!(other.apply(&boot), Err(MembershipError::BootstrapMismatch));
    }

    #[test]
    fn removing_every_voter_is_refused() {
        let m = Membership::new([NodeId(1)]);
        assert_eq!(
            m.apply(&ConfChange::Enter(vec![ConfChangeStep::Remove(NodeId(1))])),
            Err(MembershipError::NoVoters)
        );
    }
}

impl ConfChange {
    /// A compact, self-describing encoding for the payload of a
    /// `ConfChange` entry: `[0]` for Leave, `[1][count u32 LE]` followed
    /// by `[kind u8][node u64 LE]` per step for Enter, and `[2][count u32
    /// LE]` followed by `[node u64 LE]` per voter for Bootstrap.
    pub fn encode(&self) -> bytes::Bytes {
        let mut out = Vec::new();
        match self {
            ConfChange::Leave => out.push(0),
            ConfChange::Bootstrap(voters) => {
                out.push(2);
                out.extend_from_slice(&(voters.len() as u32).to_le_bytes());
                for v in voters {
                    out.extend_from_slice(&v.0.to_le_bytes());
                }
            }
            ConfChange::Enter(steps) => {
                out.push(1);
                out.extend_from_slice(&(steps.len() as u32).to_le_bytes());
                for step in steps {
                    let (kind, id) = match *step {
                        ConfChangeStep::AddVoter(id) => (0u8, id),
                        ConfChangeStep::AddLearner(id) => (1, id),
                        ConfChangeStep::Remove(id) => (2, id),
                    };
                    out.push(kind);
                    out.extend_from_slice(&id.0.to_le_bytes());
                }
            }
        }
        out.into()
    }

    pub fn decode(bytes: &[u8]) -> Result<ConfChange, MembershipError> {
        let malformed = || MembershipError::Malformed(bytes.len());
        match bytes.first() {
            Some(0) if bytes.len() == 1 => Ok(ConfChange::Leave),
            Some(1) if bytes.len() >= 5 => {
                let count = u32::from_le_bytes(bytes[1..5].try_into().unwrap()) as usize;
                let body = &bytes[5..];
                if body.len() != count.checked_mul(9).ok_or_else(malformed)? {
                    return Err(malformed());
                }
                let steps = body
                    .chunks_exact(9)
                    .map(|c| {
                        let id = NodeId(u64::from_le_bytes(c[1..9].try_into().unwrap()));
                        match c[0] {
                            0 => Ok(ConfChangeStep::AddVoter(id)),
                            1 => Ok(ConfChangeStep::AddLearner(id)),
                            2 => Ok(ConfChangeStep::Remove(id)),
                            _ => Err(malformed()),
                        }
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                Ok(ConfChange::Enter(steps))
            }
            Some(2) if bytes.len() >= 5 => {
                let count = u32::from_le_bytes(bytes[1..5].try_into().unwrap()) as usize;
                let body = &bytes[5..];
                if body.len() != count.checked_mul(8).ok_or_else(malformed)? {
                    return Err(malformed());
                }
                Ok(ConfChange::Bootstrap(
                    body.chunks_exact(8)
                        .map(|c| NodeId(u64::from_le_bytes(c.try_into().unwrap())))
                        .collect(),
                ))
            }
            _ => Err(malformed()),
        }
    }
}

#[cfg(test)]
mod codec_tests {
    use super::*;

    #[test]
    fn conf_changes_round_trip_and_garbage_is_refused() {
        for change in [
            ConfChange::Leave,
            ConfChange::Bootstrap(vec![NodeId(1), NodeId(2)]),
            ConfChange::Enter(vec![
                ConfChangeStep::AddVoter(NodeId(4)),
                ConfChangeStep::AddLearner(NodeId(5)),
                ConfChangeStep::Remove(NodeId(1)),
            ]),
        ] {
            assert_eq!(ConfChange::decode(&change.encode()), Ok(change));
        }
        assert!(ConfChange::decode(&[]).is_err());
        assert!(ConfChange::decode(&[1, 1, 0, 0, 0, 7]).is_err());
        assert!(ConfChange::decode(&[1, 255, 255, 255, 255]).is_err());
        assert!(ConfChange::decode(&[0, 0]).is_err());
    }
}
