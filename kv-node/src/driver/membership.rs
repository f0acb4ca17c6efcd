//! The driver's side of membership changes: proposing address-book
//! entries and `ConfChange`s on the leader and answering them once they are
//! in force, keeping the [`Directory`] and the transport in step with the
//! replicated address book, seeding that book with `--peers`, and telling
//! whether this node was removed.

use super::{Driver, DriverError, Reply};
use crate::directory::Directory;
use bytes::Bytes;
use kv_replica::membership_waiters::{ChangeOutcome, CoreNow, MembershipWaiters};
use kv_replica::replica::Durable;
use raft_core::{Accepted, ConfChange, Input, LogIndex, Membership, Node, Role, StepError, Term};
use std::collections::BTreeMap;

/// What the driver keeps for membership.
pub(super) struct MembershipState {
    pub(super) directory: Directory,
    /// The address book as last copied into `directory`.
    synced: BTreeMap<String, String>,
    /// Proposals made here as leader, answered once in force.
    waiters: MembershipWaiters<Reply<u64>>,
    /// The term in which this node, as leader, seeded the address book.
    seeded_term: Option<Term>,
    /// Started with `--join`: an empty or foreign membership does not mean
    /// "removed" until this node has been a member.
    joining: bool,
    was_member: bool,
    /// The membership last logged, so that each change is logged once,
    /// with node names.
    logged: Option<Membership>,
    /// A peer refused this node as no member of a configuration newer
    /// than this node knows (see `NotAMemberReport`): until this node's
    /// own commit index reaches the report's, it counts as removed and does
    /// not tick (no campaigns, no heartbeats). It still answers messages,
    /// so the voters it left behind get its commit notices (`removal.rs`),
    /// and a leader that added it back brings it up to date.
    reported_removed: Option<crate::peer::transport::NotAMemberReport>,
}

pub(super) fn removed_error() -> DriverError {
    DriverError::Removed(
        "this node was removed from the cluster and serves no writes; \
         send requests to a member (GET /cluster/members on one lists them)"
            .into(),
    )
}

impl MembershipState {
    pub(super) fn new(directory: Directory, joining: bool) -> MembershipState {
        MembershipState {
            directory,
            synced: BTreeMap::new(),
            waiters: MembershipWaiters::default(),
            seeded_term: None,
            joining,
            was_member: false,
            logged: None,
            reported_removed: None,
        }
    }

    /// True if the newest configuration this node knows names other nodes
    /// but not this one as a voter or learner, after this node was a member
    /// (or, without `--join`, at all: a node started with `--peers` is in
    /// its bootstrap configuration). Only the outgoing half of a joint
    /// configuration still holding it counts as removed too: a removed
    /// node often never receives the entry that leaves the joint
    /// configuration, since the leader stops replicating to it.
    pub(super) fn is_removed(&self, node: &Node) -> bool {
        let membership = node.membership();
        let me = node.id();
        let known_removed = !membership.members().is_empty()
            && !membership.voters.contains(&me)
            && !membership.learners.contains(&me)
            && (self.was_member || !self.joining);
        known_removed || self.reported_removed.is_some()
    }

    pub(super) fn sweep(&mut self) {
        self.waiters.retain(|reply| !reply.is_closed());
    }

    pub(super) fn fail_all(&mut self) {
        for reply in self.waiters.drain() {
            let _ = reply.send(Err(DriverError::OutcomeUnknown(
                "the node stopped before the change was applied".into(),
            )));
        }
    }
}

/// raft-core's refusal of a membership proposal, in the driver's classes.
fn refused(e: StepError) -> DriverError {
    match e {
        StepError::ConfChangeInProgress => DriverError::ChangeInProgress(
            "another membership change is in flight; retry once it is done".into(),
        ),
        StepError::Membership(e) => DriverError::BadChange(e.to_string()),
        e => DriverError::Unavailable(format!("membership change not proposed: {e}")),
    }
}

impl<D: Durable> Driver<D> {
    /// Before each tick: true if a peer reported that this node is not a
    /// member of a configuration newer than this node knows, in which case
    /// the tick is skipped. Logs when that starts and ends.
    pub(super) fn silenced_by_removal(&mut self) -> bool {
        let commit = self.replica.node.commit_index().0;
        let report = self
            .peers
            .not_a_member_report()
            .filter(|r| commit < r.commit_index);
        match (&self.membership.reported_removed, &report) {
            (None, Some(r)) => tracing::warn!(
                peer = %r.peer,
                peer_commit_index = r.commit_index,
                commit_index = commit,
                "a peer refused this node: it is no member of the peer's newer configuration, \
                 so this node was removed from the cluster; it stops campaigning and serves \
                 no writes; stop it, or add it back"
            ),
            (Some(_), None) => tracing::info!(
                commit_index = commit,
                "this node caught up past the configuration that refused it; it decides by its own log again"
            ),
            _ => {}
        }
        self.membership.reported_removed = report;
        self.membership.reported_removed.is_some()
    }

    pub(super) fn propose_cluster(&mut self, data: Bytes, reply: Reply<u64>) {
        if self.replica.node.role() != Role::Leader {
            let _ = reply.send(Err(DriverError::Unavailable(
                "this node is not the leader".into(),
            )));
            return;
        }
        let stepped = self.replica.step(Input::Propose { data });
        self.wait_for_proposal(stepped, false, reply);
    }

    pub(super) fn propose_conf_change(&mut self, change: ConfChange, reply: Reply<u64>) {
        tracing::info!(?change, "proposing a membership change");
        let stepped = self.replica.step(Input::ProposeConfChange(change));
        self.wait_for_proposal(stepped, true, reply);
    }

    /// A membership proposal (a configuration change if `conf_change`)
    /// waits until it is in force or lost; refused, it answers at once.
    fn wait_for_proposal(
        &mut self,
        stepped: Result<Accepted, StepError>,
        conf_change: bool,
        reply: Reply<u64>,
    ) {
        let refusal = match stepped {
            Ok(Accepted::Appended { index, term }) => {
                return self
                    .membership
                    .waiters
                    .proposed(index, term, conf_change, reply);
            }
            Ok(_) => DriverError::Unavailable("this node is not the leader".into()),
            Err(e) => refused(e),
        };
        let _ = reply.send(Err(refusal));
    }

    /// After a round: copies a changed address book into the directory and
    /// connects to new peers.
    pub(super) fn sync_addresses(&mut self) {
        let book = self.replica.state.addresses();
        if *book == self.membership.synced {
            return;
        }
        let changed = self
            .membership
            .directory
            .merge(book.iter().map(|(n, u)| (n.as_str(), u.as_str())));
        for peer in &changed {
            tracing::info!(peer = %peer.name, url = %peer.url, "learnt a peer address");
            self.peers.add(peer);
        }
        self.membership.synced = book.clone();
    }

    /// After a round: answers waiters whose proposal is in force or lost,
    /// seeds the address book as a new leader, notes membership.
    pub(super) fn settle_membership(&mut self) {
        self.log_membership_change();
        let node = &self.replica.node;
        let me = node.id();
        if node.membership().voters.contains(&me) || node.membership().learners.contains(&me) {
            self.membership.was_member = true;
        }
        let now = CoreNow {
            applied: LogIndex(self.replica.state.applied_index()),
            term: node.term(),
            leading: node.role() == Role::Leader,
            joint: node.membership().is_joint(),
        };
        let (term, leading) = (now.term, now.leading);
        for (reply, outcome) in self.membership.waiters.settle(now, |i| node.log_term(i)) {
            let answer = match outcome {
                ChangeOutcome::InForce { index } => Ok(index.0),
                ChangeOutcome::Replaced => Err(DriverError::Unavailable(
                    "the proposal was replaced by another leader's entry; not applied".into(),
                )),
                ChangeOutcome::UnknownAfterApply => Err(DriverError::OutcomeUnknown(
                    "leadership changed around the change; outcome unknown".into(),
                )),
                ChangeOutcome::UnknownBeforeApply => Err(DriverError::OutcomeUnknown(
                    "leadership changed before the change was applied; outcome unknown".into(),
                )),
            };
            let _ = reply.send(answer);
        }
        if leading && self.membership.seeded_term != Some(term) {
            self.seed_address_book(term);
        }
    }

    /// Logs the membership in force when it changed, naming nodes by their
    /// names (raft-core logs ids, at debug level).
    fn log_membership_change(&mut self) {
        let membership = self.replica.node.membership();
        if self.membership.logged.as_ref() == Some(membership) {
            return;
        }
        let names = |ids: &std::collections::BTreeSet<raft_core::NodeId>| {
            ids.iter()
                .map(|&id| self.membership.directory.name_of(id))
                .collect::<Vec<_>>()
                .join(",")
        };
        tracing::info!(
            voters = %names(&membership.voters),
            learners = %names(&membership.learners),
            outgoing = %names(&membership.outgoing),
            "membership changed"
        );
        self.membership.logged = Some(membership.clone());
        // The peer endpoint admits raft messages from these nodes only.
        self.membership
            .directory
            .set_configuration(membership.members());
    }

    /// A new leader records, for every member it knows an address of that
    /// the replicated book lacks, that address: so the book starts from
    /// `--peers`, and a later joiner learns every member's URL from the log.
    /// Its own address is recorded when it changed too (a restart elsewhere).
    fn seed_address_book(&mut self, term: Term) {
        let members = self.replica.node.membership().members();
        let missing: Vec<(String, String)> = {
            let table = self.membership.directory.read();
            let book = self.replica.state.addresses();
            table
                .all()
                .filter(|m| members.contains(&m.id))
                .filter(|m| match book.get(&m.name) {
                    None => true,
                    Some(url) => m.id == table.this.id && *url != m.url,
                })
                .map(|m| (m.name.clone(), m.url.clone()))
                .collect()
        };
        for (name, url) in missing {
            let data = kv_replica::command::ClusterCommand::SetAddress { name, url }.encode();
            if let Err(e) = self.replica.step(Input::Propose { data }) {
                tracing::debug!(error = %e, "address book not seeded yet");
                return;
            }
        }
        self.membership.seeded_term = Some(term);
    }
}
