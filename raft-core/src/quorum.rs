//! Quorum arithmetic: pure functions over sets of voters, with no knowledge of
//! the rest of the crate (after etcd-raft's `quorum/` package).

use crate::types::{LogIndex, NodeId};
use std::collections::{BTreeMap, BTreeSet};

/// The outcome of counting votes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VoteResult {
    Won,
    Lost,
    Pending,
}

/// The smallest number of voters that forms a majority of `n`.
pub fn majority(n: usize) -> usize {
    n / 2 + 1
}

/// The highest index that a majority of `voters` has reached, given each
/// voter's acknowledged index (absent voters count as 0). An empty voter set
/// imposes no constraint and yields `LogIndex(u64::MAX)`, so that a joint
/// configuration with an empty outgoing half reduces to the incoming half.
pub fn majority_index(voters: &BTreeSet<NodeId>, acked: &BTreeMap<NodeId, LogIndex>) -> LogIndex {
    if voters.is_empty() {
        return LogIndex(u64::MAX);
    }
    let mut indexes: Vec<LogIndex> = voters
        .iter()
        .map(|v| acked.get(v).copied().unwrap_or(LogIndex::ZERO))
        .collect();
    // Sorted descending, the majority-th value is held by a majority.
    indexes.sort_unstable_by(|a, b| b.cmp(a));
    indexes[majority(voters.len()) - 1]
}

/// Counts a vote among `voters`. Votes from non-voters are ignored.
pub fn vote_result(voters: &BTreeSet<NodeId>, votes: &BTreeMap<NodeId, bool>) -> VoteResult {
    if voters.is_empty() {
        return VoteResult::Won;
    }
    let (mut granted, mut missing) = (0, 0);
    for v in voters {
        match votes.get(v) {
            Some(true) => granted += 1,
            Some(false) => {}
            None => missing += 1,
        }
    }
    let need = majority(voters.len());
    if granted >= need {
        VoteResult::Won
    } else if granted + missing >= need {
        VoteResult::Pending
    } else {
        VoteResult::Lost
    }
}

/// Joint consensus (Raft thesis, section 4.3): a decision needs a majority of
/// both the incoming and the outgoing voters.
pub fn joint_vote_result(
    incoming: &BTreeSet<NodeId>,
    outgoing: &BTreeSet<NodeId>,
    votes: &BTreeMap<NodeId, bool>,
) -> VoteResult {
    match (vote_result(incoming, votes), vote_result(outgoing, votes)) {
        (VoteResult::Won, VoteResult::Won) => VoteResult::Won,
        (VoteResult::Lost, _) | (_, VoteResult::Lost) => VoteResult::Lost,
        _ => VoteResult::Pending,
    }
}

/// The index committed under joint consensus: the lower of the two majorities.
pub fn joint_majority_index(
    incoming: &BTreeSet<NodeId>,
    outgoing: &BTreeSet<NodeId>,
    acked: &BTreeMap<NodeId, LogIndex>,
) -> LogIndex {
    majority_index(incoming, acked).min(majority_index(outgoing, acked))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(ids: &[u64]) -> BTreeSet<NodeId> {
        ids.iter().map(|&i| NodeId(i)).collect()
    }

    fn acks(pairs: &[(u64, u64)]) -> BTreeMap<NodeId, LogIndex> {
        pairs
            .iter()
            .map(|&(n, i)| (NodeId(n), LogIndex(i)))
            .collect()
    }

    #[test]
    fn majority_of_three_is_two_and_of_four_is_three() {
        assert_eq!(majority(1), 1);
        assert_eq!(majority(3), 2);
        assert_eq!(majority(4), 3);
        assert_eq!(majority(5), 3);
    }

    #[test]
    fn majority_index_is_the_median_reached_by_a_majority() {
        let voters = set(&[1, 2, 3]);
        assert_eq!(
            majority_index(&voters, &acks(&[(1, 9), (2, 5), (3, 2)])),
            LogIndex(5)
        );
        // A missing voter counts as having nothing.
        assert_eq!(majority_index(&voters, &acks(&[(1, 9)])), LogIndex(0));
        // Acks from non-voters do not count.
        assert_eq!(
            majority_index(&voters, &acks(&[(1, 9), (7, 9)])),
            LogIndex(0)
        );
    }

    #[test]
    fn joint_index_is_bounded_by_both_halves() {
        let new = set(&[1, 2, 3]);
        let old = set(&[3, 4, 5]);
        let acked = acks(&[(1, 10), (2, 10), (3, 4), (4, 4), (5, 1)]);
        assert_eq!(joint_majority_index(&new, &old, &acked), LogIndex(4));
        assert_eq!(joint_majority_index(&new, &set(&[]), &acked), LogIndex(10));
    }

    #[test]
    fn votes_win_lose_or_wait() {
        let voters = set(&[1, 2, 3]);
        let mut votes = BTreeMap::new();
        votes.insert(NodeId(1), true);
        assert_eq!(vote_result(&voters, &votes), VoteResult::Pending);
        votes.insert(NodeId(2), false);
        assert_eq!(vote_result(&voters, &votes), VoteResult::Pending);
        votes.insert(NodeId(3), false);
        assert_eq!(vote_result(&voters, &votes), VoteResult::Lost);
        votes.insert(NodeId(3), true);
        assert_eq!(vote_result(&voters, &votes), VoteResult::Won);
    }

    #[test]
    fn joint_vote_needs_both_majorities() {
        let new = set(&[1, 2, 3]);
        let old = set(&[1, 4, 5]);
        let votes: BTreeMap<_, _> = [(NodeId(1), true), (NodeId(2), true), (NodeId(3), true)]
            .into_iter()
            .collect();
        assert_eq!(joint_vote_result(&new, &old, &votes), VoteResult::Pending);
        let mut votes = votes;
        votes.insert(NodeId(4), false);
        votes.insert(NodeId(5), false);
        assert_eq!(joint_vote_result(&new, &old, &votes), VoteResult::Lost);
    }
}
