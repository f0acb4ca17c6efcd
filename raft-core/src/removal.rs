//! Nodes outside the configuration they know committed: how they keep the
//! voters they left behind from waiting for their vote forever.
//!
//! Membership takes effect here when its entry commits, and each node learns
//! of commits on its own. So a removed (or demoted) node `n` may know that
//! the change that took its vote away committed while others do not: they
//! still count `n` in the outgoing half of the joint configuration, and may
//! need its vote. `n` grants it only to a log at least as up to date as its
//! own, and its log may hold entries nobody else has (a removed leader's last
//! proposals); `n` never campaigns, as it is no voter. Nothing changes until
//! someone tells the others that the change committed, and the one who could
//! (the removed leader handing over) may give up, crash or be cut off. That
//! is issue 18: two voters {1, 2}, node 1 removes itself, the Leave commits
//! on node 1 only, node 2 waits forever.
//!
//! The fix: whoever asks such a node for its vote also gets a
//! [`MessageBody::CommitNotice`], the last entry of `n`'s committed prefix
//! that the asker can hold. The asker checks the entry against its own log
//! and, if it matches, commits up to it: it leaves the configuration that
//! counts `n` and campaigns in the new one.
//!
//! Safety. The notice changes no vote, no term and no log; it only moves a
//! commit index, and only to an entry that is committed:
//! - `n`'s commit index only ever covers committed entries (it learned them
//!   from a leader, or counted them itself as leader), and committed entries
//!   stay committed in every later term. So the fact holds whatever the term
//!   of the sender or the receiver, and the notice skips the term rules.
//! - The receiver commits index `i` only if its own entry at `i` has the
//!   term `n` reported. By Log Matching its whole log up to `i` is then the
//!   same as `n`'s, i.e. committed. Heartbeats move a follower's commit
//!   index under the same proof (`commit` is capped at the match index).
//! - Election safety, Log Matching and Leader Completeness are argued on
//!   votes and appends, which stay exactly as the Raft paper has them.
//!
//! Liveness. The left-behind voters need `n`'s vote only while they do not
//! know that the change removing `n` (entry `L`) committed. `L` committed
//! under the joint configuration, so a majority of the new voters hold it.
//! Each of them that asks `n` for its vote (a pre-vote is enough) learns
//! that `L` committed, leaves the joint configuration, and from then on
//! needs only the new voters: they elect the most up to date among them.
//! The same holds for a demoted node, for a removed follower, and for a
//! removed leader that restarted, since the commit index is durable.
//!
//! Why not the other ways. A removed leader that keeps leading until the new
//! voters acknowledge the Leave (etcd-raft's default) does not help once it
//! crashes, or once a candidate's higher term deposes it (without pre-vote,
//! that happens as soon as the partition heals). Granting votes against the
//! committed prefix only would weaken the vote rule itself: an outgoing
//! voter's acknowledgement of entries past its commit index may have counted
//! for their commit (an entry committed by the joint configuration in the
//! same step as the Leave, or after the node was added back), and a vote
//! that ignores them could elect a leader without them.

use crate::bugs::Bug;
use crate::message::MessageBody;
use crate::node::Node;
use crate::quorum::VoteResult;
use crate::types::{LogIndex, NodeId, Role, Term};

impl Node {
    /// A vote request reached us. If we are outside the configuration we
    /// know committed, tell the candidate how far our log is committed, as
    /// far as it can hold our entries. Runs before the term rules: the fact
    /// is valid in every term.
    pub(crate) fn notify_commit_if_outside(&mut self, candidate: NodeId, last_log_index: LogIndex) {
        if self.is_promotable() {
            return;
        }
        if self.bug(Bug::RemovedLeaderGivesUp) {
            return;
        }
        let index = self.log.committed.min(last_log_index);
        let Some(log_term) = self.log.term(index) else {
            // Compacted away: the candidate is far behind, a leader will
            // send it a snapshot.
            return;
        };
        if index == LogIndex::ZERO {
            return;
        }
        tracing::debug!(%candidate, %index, "outside the configuration: telling a candidate what committed");
        self.send(candidate, MessageBody::CommitNotice { index, log_term });
    }

    /// `MessageBody::CommitNotice`: commit up to the entry if our log holds
    /// it (see the module documentation for why this is safe). A candidate
    /// whose configuration changed counts its votes again.
    pub(crate) fn handle_commit_notice(&mut self, from: NodeId, index: LogIndex, log_term: Term) {
        // A leader's commit index moves only by its own count.
        if self.role == Role::Leader
            || index <= self.log.committed
            || !self.log.matches(index, log_term)
        {
            return;
        }
        tracing::info!(%from, %index, "learned from a node outside the configuration that the log is committed");
        self.commit_to(index);
        if matches!(self.role, Role::Candidate | Role::PreCandidate)
            && self.election_result() == VoteResult::Won
        {
            let pre_vote = self.role == Role::PreCandidate;
            self.on_election_won(pre_vote);
        }
    }
}
