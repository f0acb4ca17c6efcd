//! Leader election (Raft paper, section 5.2) with pre-vote (Raft thesis,
//! section 9.6).

use crate::bugs::Bug;
use crate::membership::{ConfChange, Membership};
use crate::message::MessageBody;
use crate::node::LeaderState;
use crate::node::Node;
use crate::progress::Progress;
use crate::quorum::VoteResult;
use crate::types::{EntryKind, NodeId, Role, Term};
use bytes::Bytes;
use std::collections::BTreeMap;

impl Node {
    /// Starts an election: a pre-vote round first unless pre-vote is off or
    /// the current leader handed over leadership (`transfer`).
    pub(crate) fn campaign(&mut self, transfer: bool) {
        assert!(
            self.may_campaign(),
            "{} campaigns without a vote",
            self.config.id
        );
        if self.config.pre_vote && !transfer {
            self.become_pre_candidate();
        } else {
            self.become_candidate(transfer);
        }
    }

    fn become_pre_candidate(&mut self) {
        assert_ne!(self.role, Role::Leader, "a leader does not campaign");
        // A pre-vote changes neither term nor vote.
        self.role = Role::PreCandidate;
        self.set_leader(None);
        self.votes.clear();
        self.reset_election_timer();
        tracing::debug!(term = %self.term.next(), "starting pre-vote");
        self.request_votes(true, false);
    }

    fn become_candidate(&mut self, transfer: bool) {
        assert_ne!(self.role, Role::Leader, "a leader does not campaign");
        self.term = self.term.next();
        self.vote = Some(self.config.id);
        self.role = Role::Candidate;
        self.set_leader(None);
        self.votes.clear();
        self.reset_election_timer();
        tracing::debug!(term = %self.term, "starting election");
        self.request_votes(false, transfer);
    }

    /// The configurations an election must win: the one in force (the
    /// latest committed) and each one that the membership changes in our
    /// uncommitted log tail would make, in order.
    ///
    /// Why not the committed one alone: a change may have committed without
    /// us knowing it. Two voters n5 and n6 of {n4, n5, n6} hold the joint
    /// entry and the Leave that replaces them with {n4, n2, n3}, but never
    /// heard that they committed; the new voters then commit entry e
    /// without them. Counting only {n4, n5, n6}, n5 and n6 elect one of
    /// them without e: leader completeness broken (simulator seed 3989 at 5
    /// nodes). The Raft thesis (section 4.1) has every server use the latest
    /// configuration in its log. Here membership takes effect at commit, so
    /// an election also has to win every configuration its log holds
    /// beyond that. A change that committed without our knowing is in the
    /// log of any candidate that can win our configuration: its joint entry
    /// committed with a majority of ours, one of whom must vote for the
    /// candidate, and votes go only to logs at least as up to date, which
    /// (by leader completeness of the earlier terms) hold it. So the voters
    /// of the newer configurations, who hold every entry they committed,
    /// judge the candidate too. Winning more configurations only ever
    /// removes winners, so election safety is untouched. A lost commit
    /// index is not exotic: a commit-only hard state is written without a
    /// sync, so a power loss can take it back.
    pub(crate) fn election_configs(&self) -> Vec<Membership> {
        let mut configs = vec![self.quorum().into_owned()];
        let mut index = self.log.committed.next();
        while index <= self.log.last_index() {
            if let Some(entry) = self.log.entry(index)
                && entry.kind == EntryKind::ConfChange
                && let Ok(change) = ConfChange::decode(&entry.data)
                && let Some(last) = configs.last()
                && let Ok(next) = last.apply(&change)
            {
                configs.push(next);
            }
            index = index.next();
        }
        configs
    }

    /// Counts `self.votes` in every configuration of [`Self::election_configs`]:
    /// won when won in all, lost when lost in any.
    pub(crate) fn election_result(&self) -> VoteResult {
        self.election_result_in(&self.election_configs())
    }

    fn election_result_in(&self, configs: &[Membership]) -> VoteResult {
        let mut result = VoteResult::Won;
        for config in configs {
            match config.vote_result(&self.votes) {
                VoteResult::Lost => return VoteResult::Lost,
                VoteResult::Pending => result = VoteResult::Pending,
                VoteResult::Won => {}
            }
        }
        result
    }

    /// Votes for ourselves and asks every other voter of every configuration
    /// the election must win. The real requests are held until our term and
    /// vote are durable.
    fn request_votes(&mut self, pre_vote: bool, transfer: bool) {
        let me = self.config.id;
        self.votes.insert(me, true);
        let configs = self.election_configs();
        if self.election_result_in(&configs) == VoteResult::Won {
            self.on_election_won(pre_vote);
            return;
        }
        let last_log_index = self.log.last_index();
        let last_log_term = self.log.last_term();
        let voters: Vec<NodeId> = configs
            .iter()
            .flat_map(|m| m.voters.iter().chain(&m.outgoing))
            .copied()
            .filter(|&v| v != me)
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
        for voter in voters {
            self.send(
                voter,
                MessageBody::RequestVote {
                    pre_vote,
                    last_log_index,
                    last_log_term,
                    transfer,
                },
            );
        }
    }

    pub(crate) fn on_election_won(&mut self, pre_vote: bool) {
        if pre_vote {
            self.become_candidate(false);
        } else {
            self.become_leader();
        }
    }

    pub(crate) fn handle_vote_request(&mut self, m: crate::Message) {
        let MessageBody::RequestVote {
            pre_vote,
            last_log_index,
            last_log_term,
            ..
        } = m.body
        else {
            unreachable!("handle_vote_request takes vote requests")
        };
        // The term rules ran already: a real vote request is of our term now.
        debug_assert!(pre_vote || m.term == self.term);
        let can_vote = self.vote == Some(m.from)
            || (self.vote.is_none() && self.leader.is_none())
            || (pre_vote && m.term > self.term);
        #[allow(unused_mut)]
        let mut up_to_date = self.log.is_up_to_date(last_log_index, last_log_term);
        if self.bug(Bug::VoteForStaleLog) {
            up_to_date = true;
        }
        // A damaged log may have lost this term's vote and the entries the
        // up-to-date check protects (`repair.rs`).
        let granted = can_vote && up_to_date && !self.is_damaged();
        if granted && !pre_vote {
            self.vote = Some(m.from);
            self.election_elapsed = 0;
        }
        tracing::debug!(from = %m.from, pre_vote, granted, "vote request");
        // A granted pre-vote answers in the term asked for, however far
        // ahead of ours: the pre-candidate counts only answers in that term.
        let term = if pre_vote && granted {
            m.term
        } else {
            self.term
        };
        self.send_in_term(
            m.from,
            term,
            MessageBody::RequestVoteResponse { pre_vote, granted },
        );
    }

    pub(crate) fn handle_vote_response(
        &mut self,
        from: NodeId,
        term: Term,
        pre_vote: bool,
        granted: bool,
    ) {
        let expected = match self.role {
            Role::PreCandidate => pre_vote && (!granted || term == self.term.next()),
            Role::Candidate => !pre_vote && term == self.term,
            _ => false,
        };
        if !expected {
            return;
        }
        self.votes.insert(from, granted);
        match self.election_result() {
            VoteResult::Won => self.on_election_won(pre_vote),
            VoteResult::Lost => {
                tracing::debug!(term = %self.term, pre_vote, "election lost");
                self.become_follower(self.term, None);
            }
            VoteResult::Pending => {}
        }
    }

    pub(crate) fn become_leader(&mut self) {
        assert_eq!(
            self.role,
            Role::Candidate,
            "only a candidate becomes leader"
        );
        let me = self.config.id;
        tracing::info!(term = %self.term, "became leader");
        self.role = Role::Leader;
        self.set_leader(Some(me));
        self.votes.clear();
        self.heartbeat_elapsed = 0;
        let next = self.log.last_index().next();
        self.lead = Some(LeaderState {
            progress: self
                .membership
                .members()
                .into_iter()
                .filter(|&id| id != me)
                .map(|id| (id, Progress::new(next)))
                .collect(),
            // Any membership change in the uncommitted tail may be in flight.
            pending_conf_index: self.log.last_index(),
            lead_transferee: None,
            transfer_elapsed: 0,
            broadcast_pending: false,
            commit_sent: BTreeMap::new(),
            check_quorum_elapsed: 0,
        });
        self.reads.reset_for_new_term();
        // Section 5.4.2: commit a no-op of our own term so that entries of
        // earlier terms commit, and reads can be served.
        self.append_entry(EntryKind::Noop, Bytes::new());
    }
}
