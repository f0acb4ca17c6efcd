//! Proposals made here as leader that wait for their entry to be applied
//! (address-book entries) and, for a membership change, for the joint
//! configuration it entered to be left again: plain data the driver settles
//! after every round.

use raft_core::{LogIndex, Term};

/// A proposal appended to this leader's log at `index` in `term`.
#[derive(Debug)]
struct IndexWaiter<T> {
    index: LogIndex,
    term: Term,
    /// A `ConfChange`: also wait until the joint configuration it may have
    /// entered is left again (raft-core proposes the leave by itself).
    wait_leave: bool,
    waiter: T,
}

/// How a waiting proposal ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChangeOutcome {
    /// Applied here as proposed (and any joint configuration left).
    InForce { index: LogIndex },
    /// Another leader's entry took its place: certainly not applied.
    Replaced,
    /// Its index was applied, but the entry there is compacted away and the
    /// term moved on: whether it was ours is unknown.
    UnknownAfterApply,
    /// The term moved on before its index was applied: it may or may not
    /// still commit.
    UnknownBeforeApply,
}

/// What the core says now, as the settling rules need it.
#[derive(Clone, Copy, Debug)]
pub struct CoreNow {
    /// The state machine's applied index.
    pub applied: LogIndex,
    pub term: Term,
    /// This node is the leader.
    pub leading: bool,
    /// The configuration in force is joint.
    pub joint: bool,
}

/// Every membership proposal waiting on this node.
#[derive(Debug)]
pub struct MembershipWaiters<T> {
    waiting: Vec<IndexWaiter<T>>,
}

impl<T> Default for MembershipWaiters<T> {
    fn default() -> Self {
        MembershipWaiters {
            waiting: Vec::new(),
        }
    }
}

impl<T> MembershipWaiters<T> {
    /// A proposal the core appended at `index` in `term`
    /// (`Accepted::Appended`) waits; `wait_leave` for a `ConfChange`.
    pub fn proposed(&mut self, index: LogIndex, term: Term, wait_leave: bool, waiter: T) {
        self.waiting.push(IndexWaiter {
            index,
            term,
            wait_leave,
            waiter,
        });
    }

    /// Takes the proposals that ended, in the order they were proposed.
    /// `log_term` is the core's term of a log index (None once compacted).
    pub fn settle(
        &mut self,
        now: CoreNow,
        log_term: impl Fn(LogIndex) -> Option<Term>,
    ) -> Vec<(T, ChangeOutcome)> {
        let mut ended = Vec::new();
        let mut keep = Vec::new();
        for w in std::mem::take(&mut self.waiting) {
            // Is the entry applied at `w.index` the one proposed? Its term
            // says so; once compacted away, an unchanged term does.
            let ours = (now.applied >= w.index).then(|| match log_term(w.index) {
                Some(t) => Some(t == w.term),
                None => (now.term == w.term).then_some(true),
            });
            let outcome = match ours {
                Some(Some(true))
                    if w.wait_leave && now.joint && now.leading && now.term == w.term =>
                {
                    keep.push(w);
                    continue;
                }
                Some(Some(true)) => ChangeOutcome::InForce { index: w.index },
                Some(Some(false)) => ChangeOutcome::Replaced,
                Some(None) => ChangeOutcome::UnknownAfterApply,
                None if now.term != w.term => ChangeOutcome::UnknownBeforeApply,
                None => {
                    keep.push(w);
                    continue;
                }
            };
            ended.push((w.waiter, outcome));
        }
        self.waiting = keep;
        ended
    }

    /// Keeps only the waiters `keep` keeps.
    pub fn retain(&mut self, mut keep: impl FnMut(&T) -> bool) {
        self.waiting.retain(|w| keep(&w.waiter));
    }

    /// Takes every waiter (the node stops).
    pub fn drain(&mut self) -> Vec<T> {
        self.waiting.drain(..).map(|w| w.waiter).collect()
    }

    pub fn len(&self) -> usize {
        self.waiting.len()
    }

    pub fn is_empty(&self) -> bool {
        self.waiting.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now(applied: u64, term: u64, leading: bool, joint: bool) -> CoreNow {
        CoreNow {
            applied: LogIndex(applied),
            term: Term(term),
            leading,
            joint,
        }
    }

    #[test]
    fn an_address_entry_is_in_force_once_its_index_is_applied_in_its_term() {
        let mut waiters = MembershipWaiters::default();
        waiters.proposed(LogIndex(5), Term(2), false, "a");
        assert!(
            waiters
                .settle(now(4, 2, true, false), |_| Some(Term(2)))
                .is_empty()
        );
        let ended = waiters.settle(now(5, 2, true, false), |_| Some(Term(2)));
        assert_eq!(
            ended,
            vec![("a", ChangeOutcome::InForce { index: LogIndex(5) })]
        );
        assert!(waiters.is_empty());
    }

    #[test]
    fn a_conf_change_waits_while_its_leader_is_in_the_joint_configuration() {
        let mut waiters = MembershipWaiters::default();
        waiters.proposed(LogIndex(5), Term(2), true, "c");
        assert!(
            waiters
                .settle(now(5, 2, true, true), |_| Some(Term(2)))
                .is_empty()
        );
        assert_eq!(waiters.len(), 1);
        let ended = waiters.settle(now(6, 2, true, false), |_| Some(Term(2)));
        assert_eq!(
            ended,
            vec![("c", ChangeOutcome::InForce { index: LogIndex(5) })]
        );
    }

    #[test]
    fn an_entry_replaced_by_another_leader_is_reported_not_applied() {
        let mut waiters = MembershipWaiters::default();
        waiters.proposed(LogIndex(5), Term(2), false, "a");
        let ended = waiters.settle(now(5, 3, false, false), |_| Some(Term(3)));
        assert_eq!(ended, vec![("a", ChangeOutcome::Replaced)]);
    }

    #[test]
    fn a_new_term_before_the_index_is_applied_makes_the_outcome_unknown() {
        let mut waiters = MembershipWaiters::default();
        waiters.proposed(LogIndex(5), Term(2), false, "a");
        waiters.proposed(LogIndex(3), Term(2), false, "b");
        let ended = waiters.settle(now(4, 3, false, false), |_| None);
        assert_eq!(
            ended,
            vec![
                ("a", ChangeOutcome::UnknownBeforeApply),
                ("b", ChangeOutcome::UnknownAfterApply)
            ]
        );
    }
}
