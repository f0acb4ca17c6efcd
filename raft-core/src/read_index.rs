//! Linearizable reads without writing to the log (Raft thesis, section
//! 6.4): the read index is the leader's commit index once its own no-op is
//! committed, released after a quorum answers a heartbeat round sent after
//! the request arrived. Lease reads skip the round while the lease holds.

use crate::bugs::Bug;
use crate::input::{Accepted, StepError};
use crate::message::MessageBody;
use crate::node::Node;
use crate::ready::ReadState;
use crate::types::{LogIndex, NodeId, Role};
use std::collections::{BTreeSet, VecDeque};

/// Who asked for a read: this node's driver (None) or a follower.
pub(crate) type Requester = Option<NodeId>;

#[derive(Debug)]
struct PendingRead {
    requester: Requester,
    context: u64,
    index: LogIndex,
    /// The heartbeat round that confirms this read; 0 until one is sent.
    round: u64,
}

/// A leader's read-index bookkeeping.
#[derive(Debug, Default)]
pub(crate) struct ReadQueue {
    /// The newest heartbeat round sent. Rounds only grow, across terms too.
    round: u64,
    /// Start a round at the next `ready`: a heartbeat is due or reads wait.
    round_requested: bool,
    /// The local tick at which each recent round was sent, oldest first.
    round_ticks: VecDeque<(u64, u64)>,
    /// Reads waiting for their round to be acknowledged, oldest first.
    pending: VecDeque<PendingRead>,
    /// Reads that arrived before this leader's no-op committed.
    before_noop: Vec<(Requester, u64, bool)>,
    /// The lease holds while the local tick is below this.
    lease_until: u64,
    /// TimeoutNow was sent in this term: its target may win an election
    /// that skips the followers' lease check at any time, even after the
    /// transfer was given up (the message may only be late). No lease read
    /// is safe again until the next term.
    lease_revoked: bool,
}

impl ReadQueue {
    pub fn request_round(&mut self) {
        self.round_requested = true;
    }

    pub fn round_requested(&self) -> bool {
        self.round_requested
    }

    pub fn current_round(&self) -> u64 {
        self.round
    }

    /// For the rest of this term (TimeoutNow went out), serve no lease reads.
    pub fn end_lease(&mut self) {
        self.lease_until = 0;
        self.lease_revoked = true;
    }

    pub fn reset_for_new_term(&mut self) {
        debug_assert!(self.pending.is_empty() && self.before_noop.is_empty());
        self.round_ticks.clear();
        self.lease_until = 0;
        self.lease_revoked = false;
    }

    /// Holds a read that arrived before this leader's no-op committed.
    pub fn wait_for_noop(&mut self, requester: Requester, context: u64, lease: bool) {
        self.before_noop.push((requester, context, lease));
    }

    pub fn has_reads_waiting_for_noop(&self) -> bool {
        !self.before_noop.is_empty()
    }

    pub fn take_reads_waiting_for_noop(&mut self) -> Vec<(Requester, u64, bool)> {
        std::mem::take(&mut self.before_noop)
    }

    /// Queues a read at `index` for the next heartbeat round to confirm.
    pub fn wait_for_round(&mut self, requester: Requester, context: u64, index: LogIndex) {
        self.pending.push_back(PendingRead {
            requester,
            context,
            index,
            round: 0,
        });
        self.round_requested = true;
    }

    /// Whether the lease holds at local tick `now`. With
    /// `ignore_revocation` (a known bug) a transfer does not end it.
    pub fn lease_holds(&self, now: u64, ignore_revocation: bool) -> bool {
        (ignore_revocation || !self.lease_revoked) && now < self.lease_until
    }

    /// Starts a heartbeat round sent at local tick `now`; the reads that
    /// wait without a round are confirmed by this one. Returns its number.
    pub fn start_round(&mut self, now: u64) -> u64 {
        self.round_requested = false;
        self.round += 1;
        let round = self.round;
        self.round_ticks.push_back((round, now));
        while self.round_ticks.len() > 64 {
            self.round_ticks.pop_front();
        }
        for read in self.pending.iter_mut().filter(|r| r.round == 0) {
            read.round = round;
        }
        round
    }

    /// A quorum acknowledged rounds up to `confirmed`: extends the lease by
    /// `lease_ticks` from the send time of that round, and returns the reads
    /// it confirms as (requester, context, index), oldest first.
    pub fn confirm(&mut self, confirmed: u64, lease_ticks: u64) -> Vec<(Requester, u64, LogIndex)> {
        if let Some(&(_, sent_at)) = self.round_ticks.iter().find(|(r, _)| *r == confirmed) {
            self.lease_until = self.lease_until.max(sent_at + lease_ticks);
        }
        let mut released = Vec::new();
        while self
            .pending
            .front()
            .is_some_and(|r| r.round != 0 && r.round <= confirmed)
        {
            let read = self.pending.pop_front().expect("front exists");
            released.push((read.requester, read.context, read.index));
        }
        released
    }

    /// Removes every waiting read, for a leader that steps down.
    pub fn drain_all(&mut self) -> Vec<(Requester, u64)> {
        self.round_requested = false;
        self.lease_until = 0;
        self.round_ticks.clear();
        self.pending
            .drain(..)
            .map(|r| (r.requester, r.context))
            .chain(self.before_noop.drain(..).map(|(r, c, _)| (r, c)))
            .collect()
    }
}

impl Node {
    /// `Input::ReadIndex`: serve on the leader, forward from a follower.
    pub(crate) fn read_index(&mut self, context: u64, lease: bool) -> Result<Accepted, StepError> {
        if self.role == Role::Leader {
            self.leader_read_index(None, context, lease);
            return Ok(Accepted::Done);
        }
        match self.leader {
            Some(leader) if leader != self.config.id => {
                self.forwarded_reads.insert(context);
                self.send(leader, MessageBody::ReadIndex { context, lease });
                Ok(Accepted::Forwarded { leader })
            }
            _ => Err(StepError::NoLeader),
        }
    }

    pub(crate) fn leader_read_index(&mut self, requester: Requester, context: u64, lease: bool) {
        if self.log.term(self.log.committed) != Some(self.term) {
            // Until our no-op commits we may not know the latest commit index.
            self.reads.wait_for_noop(requester, context, lease);
            return;
        }
        let index = self.log.committed;
        #[allow(unused_mut)]
        let mut confirmed = self.is_sole_voter() || (lease && self.lease_holds());
        if self.bug(Bug::ReadWithoutQuorum) {
            confirmed = true;
        }
        if confirmed {
            self.release_read(requester, context, index);
        } else {
            self.reads.wait_for_round(requester, context, index);
        }
    }

    fn is_sole_voter(&self) -> bool {
        let mut me = BTreeSet::new();
        me.insert(self.config.id);
        self.quorum().has_quorum(&me)
    }

    fn lease_holds(&self) -> bool {
        let ignore_revocation = self.bug(Bug::LeaseAfterAbortedTransfer);
        self.config.check_quorum
            && self.transferee().is_none()
            && self.reads.lease_holds(self.ticks, ignore_revocation)
    }

    fn release_read(&mut self, requester: Requester, context: u64, index: LogIndex) {
        match requester {
            None => self.read_states.push(ReadState { context, index }),
            Some(follower) => self.send(
                follower,
                MessageBody::ReadIndexResponse {
                    context,
                    index: Some(index),
                },
            ),
        }
    }

    /// Called when the commit index moves: reads held for the no-op may go.
    pub(crate) fn on_commit_advanced(&mut self) {
        if self.role != Role::Leader || !self.reads.has_reads_waiting_for_noop() {
            return;
        }
        if self.log.term(self.log.committed) == Some(self.term) {
            for (requester, context, lease) in self.reads.take_reads_waiting_for_noop() {
                self.leader_read_index(requester, context, lease);
            }
        }
    }

    /// Sends a heartbeat round to every follower; the reads waiting without
    /// a round are confirmed by this one.
    pub(crate) fn start_read_round(&mut self) {
        let round = self.reads.start_round(self.ticks);
        let committed = self.log.committed;
        for id in self.followers() {
            let lead = self.leading();
            let commit = committed.min(lead.progress[&id].match_index);
            lead.commit_sent.insert(id, commit);
            self.send(
                id,
                MessageBody::Heartbeat {
                    commit,
                    read_round: round,
                },
            );
        }
        self.on_read_round_acked();
    }

    /// The newest round a quorum (counting ourselves) has acknowledged.
    fn confirmed_round(&self) -> u64 {
        let me = self.config.id;
        let progress = &self.leading_ref().progress;
        let mut candidates: Vec<u64> = progress.values().map(|pr| pr.read_round).collect();
        candidates.push(self.reads.current_round());
        candidates.sort_unstable_by(|a, b| b.cmp(a));
        candidates.dedup();
        for round in candidates {
            let mut heard: BTreeSet<NodeId> = progress
                .iter()
                .filter(|(_, pr)| pr.read_round >= round)
                .map(|(&id, _)| id)
                .collect();
            heard.insert(me);
            if self.quorum().has_quorum(&heard) {
                return round;
            }
        }
        0
    }

    /// Releases the reads whose round a quorum acknowledged, and extends the
    /// lease from the send time of that round.
    pub(crate) fn on_read_round_acked(&mut self) {
        let confirmed = self.confirmed_round();
        if confirmed == 0 {
            return;
        }
        let lease_ticks = (self.config.election_ticks_min - self.config.lease_drift_ticks) as u64;
        for (requester, context, index) in self.reads.confirm(confirmed, lease_ticks) {
            self.release_read(requester, context, index);
        }
    }
}
