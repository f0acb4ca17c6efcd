//! The Raft node: its state, the term rules that run before anything else,
//! and dispatch by role. Elections, replication, reads and output assembly
//! live in their own files as further `impl Node` blocks.

use crate::bugs::Bug;
use crate::config::{Config, ConfigError};
use crate::input::{Accepted, Input, StepError};
use crate::log::RaftLog;
use crate::membership::{ConfChange, Membership};
use crate::message::{ForwardedEntry, Message, MessageBody};
use crate::progress::Progress;
use crate::read_index::ReadQueue;
use crate::ready::{ReadState, SnapshotChunk};
use crate::types::{
    Entry, EntryKind, HardState, LogIndex, NodeId, Role, SnapshotMeta, SoftState, Term,
};
use bytes::Bytes;
use rand_chacha::ChaCha8Rng;
use rand_chacha::rand_core::{Rng, SeedableRng};
use std::collections::{BTreeMap, BTreeSet, VecDeque};

/// What the driver loaded from stable storage to rebuild a node.
#[derive(Clone, Debug, Default)]
pub struct InitialState {
    pub hard_state: HardState,
    /// The snapshot the state machine was restored from, if any.
    pub snapshot: Option<SnapshotMeta>,
    /// The size of that snapshot in bytes (what a lagging follower is sent).
    pub snapshot_bytes: u64,
    /// The durable log after the snapshot, contiguous.
    pub entries: Vec<Entry>,
    /// The voters of a brand-new cluster; ignored when a snapshot exists.
    /// Committed membership changes in `entries` are replayed on top.
    pub bootstrap: Membership,
    /// Set when storage lost records this node had acknowledged: a bound on
    /// every term it may have voted or acknowledged a leader in before the
    /// damage. The node then grants no (pre-)votes and does not campaign
    /// until its log holds an entry of a newer term (`repair.rs`). Ignored
    /// if the log already holds one.
    pub damaged_up_to_term: Option<Term>,
}

/// A read-only view of a node, for status pages and tests.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Status {
    pub id: NodeId,
    pub role: Role,
    pub term: Term,
    pub vote: Option<NodeId>,
    pub leader: Option<NodeId>,
    pub commit_index: LogIndex,
    pub applied_index: LogIndex,
    pub last_log_index: LogIndex,
    pub last_log_term: Term,
    pub snapshot_index: LogIndex,
    pub membership: Membership,
    /// Leader only: each follower's match index.
    pub match_index: BTreeMap<NodeId, LogIndex>,
    /// Some while the node waits to be repaired after storage damage: it
    /// votes and campaigns again once its log holds an entry of a term
    /// above this one.
    pub damaged_up_to_term: Option<Term>,
}

/// Messages held until a `Ready` they depend on is durable.
#[derive(Debug)]
pub(crate) struct PendingPersist {
    pub number: u64,
    pub last_entry: Option<(LogIndex, Term)>,
    pub hard_state: Option<HardState>,
    pub messages: Vec<Message>,
}

/// Follower: a snapshot transfer in progress. A later chunk continues it
/// only if it belongs to the same bytes, and the metadata alone does not
/// say so: two leaders (or one leader before and after a restart) may hold
/// different files for the same index and term (the encoding of a state
/// need not be unique). Within one leader's term the file for a snapshot
/// index never changes (a leader keeps one snapshot per index), so the
/// transfer is keyed on the sender, its term and the total size as well.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct StagedSnapshot {
    pub meta: SnapshotMeta,
    pub total_bytes: u64,
    pub leader: NodeId,
    pub term: Term,
    pub received: u64,
}

/// What only a leader keeps (Raft paper, Figure 2's volatile state on
/// leaders, plus what transfers, membership changes and check-quorum add).
#[derive(Debug)]
pub(crate) struct LeaderState {
    /// Every other member's replication progress (next and match index).
    pub progress: BTreeMap<NodeId, Progress>,
    /// The index of the latest membership change proposed; another may only
    /// be proposed once this one is committed.
    pub pending_conf_index: LogIndex,
    /// The node leadership is being handed to; proposals are refused
    /// meanwhile.
    pub lead_transferee: Option<NodeId>,
    pub transfer_elapsed: u32,
    /// Send appends to every follower at the next `ready`.
    pub broadcast_pending: bool,
    /// The commit index last told to each follower in a heartbeat.
    pub commit_sent: BTreeMap<NodeId, LogIndex>,
    /// Ticks since the last check-quorum round.
    pub check_quorum_elapsed: u32,
}

/// A Raft node. See the crate documentation for the driving loop.
#[derive(Debug)]
pub struct Node {
    pub(crate) config: Config,
    pub(crate) rng: ChaCha8Rng,

    // Persistent state (Raft paper, Figure 2).
    pub(crate) term: Term,
    pub(crate) vote: Option<NodeId>,
    pub(crate) log: RaftLog,
    /// Some while the log lost acknowledged records and no leader of a
    /// newer term has repaired it (`repair.rs`). Invariant: when Some, it
    /// is at least the last log term and below the current term.
    pub(crate) damaged_up_to_term: Option<Term>,

    /// The membership in force: the latest committed configuration.
    pub(crate) membership: Membership,
    /// Committed configurations above the snapshot, by the index that set them.
    pub(crate) membership_history: Vec<(LogIndex, Membership)>,
    /// The snapshot the log starts after (what a lagging follower is sent).
    pub(crate) snapshot_meta: SnapshotMeta,
    pub(crate) snapshot_bytes: u64,
    /// Follower: the snapshot being received, and how many bytes are staged.
    pub(crate) snapshot_staging: Option<StagedSnapshot>,

    pub(crate) role: Role,
    pub(crate) leader: Option<NodeId>,

    /// Local ticks since start; the clock of leases.
    pub(crate) ticks: u64,
    /// With check-quorum, (pre-)votes are refused until `ticks` reaches
    /// this: see `in_leader_lease`.
    pub(crate) votes_refused_until: u64,
    /// Ticks since the last sign of a live leader (or since a campaign began).
    pub(crate) election_elapsed: u32,
    /// This term's randomized election timeout, in
    /// `[election_ticks_min, election_ticks_max)`.
    pub(crate) election_timeout: u32,
    pub(crate) heartbeat_elapsed: u32,

    /// Candidate and pre-candidate: the votes received this round.
    pub(crate) votes: BTreeMap<NodeId, bool>,

    /// What only a leader keeps: `Some` exactly while `role` is Leader,
    /// built when it wins and dropped when it steps down.
    pub(crate) lead: Option<LeaderState>,

    pub(crate) reads: ReadQueue,
    /// Follower: read contexts forwarded to the leader and not yet answered.
    pub(crate) forwarded_reads: BTreeSet<u64>,
    /// Follower: proposals to forward to the leader at the next `ready`.
    pub(crate) forward_buffer: Vec<ForwardedEntry>,

    // Output, drained by `ready`.
    pub(crate) msgs: Vec<Message>,
    /// Messages that may only leave once this node's state is durable.
    pub(crate) held_msgs: Vec<Message>,
    pub(crate) unacked: VecDeque<PendingPersist>,
    pub(crate) read_states: Vec<ReadState>,
    pub(crate) dropped_reads: Vec<u64>,
    pub(crate) snapshot_chunks: Vec<SnapshotChunk>,
    pub(crate) pending_snapshot: Option<SnapshotMeta>,
    pub(crate) ready_number: u64,
    pub(crate) last_soft_state: SoftState,
    /// The hard state last handed out to persist.
    pub(crate) last_hard_state: HardState,
    /// The hard state known durable.
    pub(crate) durable_hard_state: HardState,
}

impl Node {
    /// Builds a node from its configuration and what storage recovered.
    pub fn new(config: Config, initial: InitialState) -> Result<Node, ConfigError> {
        config.validate()?;
        let bad = |why: String| ConfigError::BadInitialState(why);
        let (snap_index, snap_term, base_membership) = match &initial.snapshot {
            Some(meta) => (meta.index, meta.term, meta.membership.clone()),
            None => (LogIndex::ZERO, Term::ZERO, initial.bootstrap.clone()),
        };
        let mut log = RaftLog::restore(snap_index, snap_term, initial.entries).map_err(bad)?;
        let hs = initial.hard_state;
        if hs.commit > log.last_index() {
            return Err(bad(format!(
                "commit {} beyond last index {}",
                hs.commit,
                log.last_index()
            )));
        }
        if log.last_term() > hs.term {
            return Err(bad(format!(
                "log term {} above current term {}",
                log.last_term(),
                hs.term
            )));
        }
        // A snapshot implies its index is committed.
        log.commit_to(hs.commit.max(snap_index));
        let damaged_up_to_term = initial
            .damaged_up_to_term
            .filter(|&bound| log.last_term() <= bound)
            .filter(|_| !crate::bugs::switched_on(&config, Bug::VoteWhileDamaged));
        let (term, vote) =
            crate::repair::starting_term_and_vote(hs.term, hs.vote, damaged_up_to_term);
        if initial.snapshot.is_none() && log.last_index() == LogIndex::ZERO {
            // A new cluster: its first entry records the initial voters, so
            // that nodes added later learn them from the log.
            let voters: Vec<NodeId> = initial.bootstrap.voters.iter().copied().collect();
            if !voters.is_empty() {
                log.append(Entry {
                    term: Term::ZERO,
                    index: LogIndex(1),
                    kind: EntryKind::ConfChange,
                    data: ConfChange::Bootstrap(voters).encode(),
                });
            }
        }
        let mut node = Node {
            rng: ChaCha8Rng::seed_from_u64(config.seed),
            term,
            vote,
            log,
            damaged_up_to_term,
            membership: base_membership.clone(),
            membership_history: vec![(snap_index, base_membership.clone())],
            snapshot_meta: SnapshotMeta {
                index: snap_index,
                term: snap_term,
                membership: base_membership,
            },
            snapshot_bytes: initial.snapshot_bytes,
            snapshot_staging: None,
            role: Role::Follower,
            leader: None,
            ticks: 0,
            // A node that never held a term acknowledged nothing a lease
            // could rest on; one that did may have, just before it crashed.
            votes_refused_until: if config.check_quorum && hs.term > Term::ZERO {
                u64::from(config.election_ticks_min)
            } else {
                0
            },
            election_elapsed: 0,
            election_timeout: config.election_ticks_min,
            heartbeat_elapsed: 0,
            votes: BTreeMap::new(),
            lead: None,
            reads: ReadQueue::default(),
            forwarded_reads: BTreeSet::new(),
            forward_buffer: Vec::new(),
            msgs: Vec::new(),
            held_msgs: Vec::new(),
            unacked: VecDeque::new(),
            read_states: Vec::new(),
            dropped_reads: Vec::new(),
            snapshot_chunks: Vec::new(),
            pending_snapshot: None,
            ready_number: 0,
            last_soft_state: SoftState {
                role: Role::Follower,
                leader: None,
                term,
            },
            last_hard_state: hs,
            durable_hard_state: hs,
            config,
        };
        node.apply_committed_conf_changes(snap_index);
        let me = node.config.id;
        let others: BTreeSet<NodeId> = (node.membership.voters.iter())
            .chain(&node.membership.outgoing)
            .copied()
            .filter(|&v| v != me)
            .collect();
        if node.is_damaged() && node.membership.is_voter(me) && !node.quorum().has_quorum(&others) {
            // No leader can be elected without its vote, so none can
            // repair it (`repair.rs`).
            return Err(ConfigError::DamagedVoteNeeded(me));
        }
        node.role = node.follower_role();
        node.last_soft_state = node.soft_state();
        node.reset_election_timer();
        Ok(node)
    }

    /// The one way in. See [`Input`] for what each input means.
    pub fn step(&mut self, input: Input) -> Result<Accepted, StepError> {
        let result = match input {
            Input::Tick => {
                self.tick();
                Ok(Accepted::Done)
            }
            Input::Message(m) => {
                if m.to != self.config.id {
                    return Err(StepError::WrongRecipient { to: m.to });
                }
                if let Err(err) = self.validate(&m) {
                    tracing::debug!(from = %m.from, kind = m.body.name(), %err, "refusing peer message");
                    return Err(err);
                }
                self.step_message(m);
                Ok(Accepted::Done)
            }
            Input::Propose { data } => self.propose(EntryKind::Normal, data),
            Input::ProposeConfChange(change) => self.propose_conf_change(change),
            Input::ReadIndex { context, lease } => self.read_index(context, lease),
            Input::Campaign => {
                if !self.is_promotable() {
                    return Err(StepError::NotAVoter(self.config.id));
                }
                self.refuse_campaign_if_damaged()?;
                if self.role != Role::Leader {
                    self.campaign(false);
                }
                Ok(Accepted::Done)
            }
            Input::TransferLeadership { to } => self.transfer_leadership(to),
            Input::Persisted { ready } => {
                self.on_persisted(ready);
                Ok(Accepted::Done)
            }
            Input::Applied { index } => {
                if index > self.log.handed_out {
                    return Err(StepError::AppliedBeyondHandedOut {
                        applied: index,
                        handed_out: self.log.handed_out,
                    });
                }
                self.log.applied = self.log.applied.max(index);
                Ok(Accepted::Done)
            }
            Input::SnapshotTaken { meta, size_bytes } => self.snapshot_taken(meta, size_bytes),
        };
        self.check_repaired();
        self.log.assert_invariants();
        assert_eq!(
            self.lead.is_some(),
            self.role == Role::Leader,
            "leader state exists exactly while leading"
        );
        result
    }

    // ----- Term rules: one place, before any role code runs. -----

    fn step_message(&mut self, m: Message) {
        // Facts about the committed log hold in every term (`removal.rs`).
        match m.body {
            MessageBody::CommitNotice { index, log_term } => {
                self.handle_commit_notice(m.from, index, log_term);
                return;
            }
            MessageBody::RequestVote { last_log_index, .. } => {
                self.notify_commit_if_outside(m.from, last_log_index)
            }
            _ => {}
        }
        if m.term > self.term {
            match &m.body {
                MessageBody::RequestVote {
                    pre_vote, transfer, ..
                } => {
                    if self.in_leader_lease() && !transfer {
                        // We heard from a live leader within the minimum
                        // election timeout: this candidate is disruptive.
                        tracing::debug!(from = %m.from, "ignoring vote request inside leader lease");
                        return;
                    }
                    if !pre_vote {
                        self.become_follower(m.term, None);
                    }
                }
                // A granted pre-vote carries the term we would campaign in.
                MessageBody::RequestVoteResponse {
                    pre_vote: true,
                    granted: true,
                } => {}
                MessageBody::AppendEntries { .. }
                | MessageBody::Heartbeat { .. }
                | MessageBody::InstallSnapshot { .. }
                | MessageBody::TimeoutNow => self.become_follower(m.term, Some(m.from)),
                _ => self.become_follower(m.term, None),
            }
        } else if m.term < self.term {
            match m.body {
                // Tell a stale leader or pre-candidate about the newer term so
                // that it steps down instead of retrying forever.
                MessageBody::AppendEntries { .. } | MessageBody::Heartbeat { .. } => {
                    self.send(m.from, MessageBody::HeartbeatResponse { read_round: 0 });
                }
                MessageBody::RequestVote { pre_vote: true, .. } => self.send(
                    m.from,
                    MessageBody::RequestVoteResponse {
                        pre_vote: true,
                        granted: false,
                    },
                ),
                // Never leave a forwarded read unanswered.
                MessageBody::ReadIndex { context, .. } => self.send(
                    m.from,
                    MessageBody::ReadIndexResponse {
                        context,
                        index: None,
                    },
                ),
                _ => {
                    tracing::trace!(from = %m.from, kind = m.body.name(), "ignoring stale-term message")
                }
            }
            return;
        }

        if let MessageBody::RequestVote { .. } = m.body {
            self.handle_vote_request(m);
            return;
        }
        match self.role {
            Role::Leader => self.step_leader(m),
            Role::Candidate | Role::PreCandidate => self.step_candidate(m),
            Role::Follower | Role::Learner => self.step_follower(m),
        }
    }

    fn step_leader(&mut self, m: Message) {
        if let Some(pr) = self.progress_mut(m.from) {
            pr.recent_active = true;
        }
        match m.body {
            MessageBody::AppendEntriesResponse { .. } => self.handle_append_response(m),
            MessageBody::HeartbeatResponse { read_round } => {
                self.handle_heartbeat_response(m.from, read_round)
            }
            MessageBody::InstallSnapshotResponse {
                snapshot_index,
                received,
                last_index,
            } => self.handle_snapshot_response(m.from, snapshot_index, received, last_index),
            MessageBody::Propose { entries } => {
                for e in entries {
                    // A forwarded proposal that cannot be taken is dropped:
                    // the proposer's driver times out with an unknown outcome.
                    if let Err(err) = self.propose(e.kind, e.data) {
                        tracing::debug!(from = %m.from, %err, "dropping forwarded proposal");
                    }
                }
            }
            MessageBody::ReadIndex { context, lease } => {
                self.leader_read_index(Some(m.from), context, lease)
            }
            _ => tracing::trace!(from = %m.from, kind = m.body.name(), "leader ignores"),
        }
    }

    fn step_candidate(&mut self, m: Message) {
        match m.body {
            MessageBody::RequestVoteResponse { pre_vote, granted } => {
                self.handle_vote_response(m.from, m.term, pre_vote, granted)
            }
            // A leader of our term exists: stop campaigning and follow it.
            MessageBody::AppendEntries { .. }
            | MessageBody::Heartbeat { .. }
            | MessageBody::InstallSnapshot { .. } => {
                self.become_follower(m.term, Some(m.from));
                self.step_follower(m);
            }
            _ => tracing::trace!(from = %m.from, kind = m.body.name(), "candidate ignores"),
        }
    }

    fn step_follower(&mut self, m: Message) {
        match m.body {
            MessageBody::AppendEntries {
                prev_log_index,
                prev_log_term,
                entries,
                leader_commit,
            } => {
                self.heard_from_leader(m.from);
                self.handle_append(
                    m.from,
                    prev_log_index,
                    prev_log_term,
                    entries,
                    leader_commit,
                );
            }
            MessageBody::Heartbeat { commit, read_round } => {
                self.heard_from_leader(m.from);
                let commit = commit.min(self.log.last_index());
                self.commit_to(commit);
                self.send(m.from, MessageBody::HeartbeatResponse { read_round });
            }
            MessageBody::InstallSnapshot {
                meta,
                offset,
                total_bytes,
                data,
                ..
            } => {
                self.heard_from_leader(m.from);
                self.handle_install_snapshot(m.from, meta, offset, total_bytes, data);
            }
            MessageBody::TimeoutNow => {
                if self.is_promotable() && !self.is_damaged() {
                    tracing::info!(from = %m.from, "leadership transferred to us: campaigning");
                    self.campaign(true);
                }
            }
            MessageBody::ReadIndexResponse { context, index } => {
                if self.forwarded_reads.remove(&context) {
                    match index {
                        Some(index) => self.read_states.push(ReadState { context, index }),
                        None => self.dropped_reads.push(context),
                    }
                }
            }
            MessageBody::Propose { entries } => {
                // The sender thought we lead; pass it on if we know who does.
                if self.leader.is_some_and(|l| l != self.config.id) {
                    self.forward_buffer.extend(entries);
                }
            }
            MessageBody::ReadIndex { context, .. } => self.send(
                m.from,
                MessageBody::ReadIndexResponse {
                    context,
                    index: None,
                },
            ),
            _ => tracing::trace!(from = %m.from, kind = m.body.name(), "follower ignores"),
        }
    }

    fn heard_from_leader(&mut self, leader: NodeId) {
        self.election_elapsed = 0;
        if self.leader != Some(leader) {
            self.set_leader(Some(leader));
        }
    }

    // ----- Role transitions. -----

    /// The role a non-leader takes in the current membership.
    pub(crate) fn follower_role(&self) -> Role {
        if self.membership.is_voter(self.config.id) {
            Role::Follower
        } else {
            Role::Learner
        }
    }

    pub(crate) fn is_promotable(&self) -> bool {
        self.membership.is_voter(self.config.id)
    }

    /// Whether the election timer may start a campaign: a voter of the
    /// configuration in force, or of the latest one its uncommitted log
    /// tail makes (the Raft thesis, section 4.1: a server uses the latest
    /// configuration in its log). The second case is a learner being made
    /// a voter whose log is ahead of every voter's: say the only voter
    /// appended the change and one more entry, sent both, and lost the
    /// second (unsynced) in a crash. Its elections must win the new
    /// configuration too (`election_configs`), whose new voter refuses the
    /// shorter log, so nobody else can lead: the learner must (simulator
    /// seed 1104 at 1 node, `sim/tests/found_bugs.rs`). Safe: every election
    /// still wins a majority of each configuration the candidate knows,
    /// the one in force first.
    pub(crate) fn may_campaign(&self) -> bool {
        if self.is_promotable() {
            return true;
        }
        let configs = self.election_configs();
        configs.len() > 1 && configs.last().is_some_and(|c| c.is_voter(self.config.id))
    }

    pub(crate) fn become_follower(&mut self, term: Term, leader: Option<NodeId>) {
        if term > self.term {
            self.term = term;
            self.vote = None;
            // Reads forwarded in the old term went to a leader that will
            // ignore them as stale, even if it leads the new term too.
            self.dropped_reads
                .extend(std::mem::take(&mut self.forwarded_reads));
        }
        assert!(
            term == self.term,
            "become follower of old term {term} in {}",
            self.term
        );
        if self.role == Role::Leader {
            self.abandon_leadership();
        }
        self.role = self.follower_role();
        self.votes.clear();
        self.set_leader(leader);
        self.reset_election_timer();
    }

    /// The leader state, on paths that only run while leading.
    pub(crate) fn leading(&mut self) -> &mut LeaderState {
        self.lead.as_mut().expect("a leader keeps its leader state")
    }

    pub(crate) fn leading_ref(&self) -> &LeaderState {
        self.lead.as_ref().expect("a leader keeps its leader state")
    }

    /// A follower's replication progress, while leading.
    pub(crate) fn progress_mut(&mut self, id: NodeId) -> Option<&mut Progress> {
        self.lead.as_mut()?.progress.get_mut(&id)
    }

    /// The transfer target while a transfer is pending (never without one).
    pub(crate) fn transferee(&self) -> Option<NodeId> {
        self.lead.as_ref().and_then(|lead| lead.lead_transferee)
    }

    /// The other members a leader replicates to (none when not leading).
    pub(crate) fn followers(&self) -> Vec<NodeId> {
        self.lead
            .iter()
            .flat_map(|lead| lead.progress.keys().copied())
            .collect()
    }

    /// Sends appends to every follower at the next `ready`, if still leading
    /// (a commit may have just made a removed leader step down).
    pub(crate) fn request_broadcast(&mut self) {
        if let Some(lead) = &mut self.lead {
            lead.broadcast_pending = true;
        }
    }

    fn start_transfer(&mut self, to: NodeId) {
        let lead = self.leading();
        lead.lead_transferee = Some(to);
        lead.transfer_elapsed = 0;
    }

    /// Drops what only a leader keeps, failing reads it cannot confirm.
    fn abandon_leadership(&mut self) {
        self.lead = None;
        for (requester, context) in self.reads.drain_all() {
            match requester {
                None => self.dropped_reads.push(context),
                Some(follower) => self.send(
                    follower,
                    MessageBody::ReadIndexResponse {
                        context,
                        index: None,
                    },
                ),
            }
        }
    }

    pub(crate) fn set_leader(&mut self, leader: Option<NodeId>) {
        if self.leader != leader {
            // Forwarded reads went to a node that may never answer now.
            self.dropped_reads
                .extend(std::mem::take(&mut self.forwarded_reads));
        }
        self.leader = leader;
    }

    pub(crate) fn reset_election_timer(&mut self) {
        self.election_elapsed = 0;
        let span = (self.config.election_ticks_max - self.config.election_ticks_min) as u64;
        self.election_timeout =
            self.config.election_ticks_min + (self.rng.next_u64() % span) as u32;
    }

    /// True while we heard from a leader within the minimum election timeout
    /// (Raft thesis, section 4.2.3): then a vote request is disruptive. A
    /// leader's lease rests on this promise, so it must survive a restart:
    /// a restarted node knows no leader, yet it may have acknowledged the
    /// heartbeat round the lease counts from just before it crashed. So for
    /// the minimum election timeout after start it grants no (pre-)votes
    /// either (Raft thesis, section 6.4).
    fn in_leader_lease(&self) -> bool {
        if !self.config.check_quorum {
            return false;
        }
        #[allow(unused_mut)]
        let mut just_started = self.ticks < self.votes_refused_until;
        if self.bug(Bug::VoteAtOnceAfterRestart) {
            just_started = false;
        }
        just_started
            || (self.leader.is_some() && self.election_elapsed < self.config.election_ticks_min)
    }

    // ----- Time. -----

    fn tick(&mut self) {
        self.ticks += 1;
        if self.role == Role::Leader {
            self.tick_leader();
            return;
        }
        self.election_elapsed = self.election_elapsed.saturating_add(1);
        // The cheap checks first: `may_campaign` may read the log tail.
        if self.election_elapsed >= self.election_timeout
            && !self.is_damaged()
            && self.may_campaign()
        {
            tracing::debug!(term = %self.term, "election timeout");
            self.campaign(false);
        }
    }

    fn tick_leader(&mut self) {
        self.heartbeat_elapsed += 1;
        let election_ticks_min = self.config.election_ticks_min;
        let lead = self.leading();
        lead.check_quorum_elapsed += 1;
        if lead.lead_transferee.is_some() {
            lead.transfer_elapsed += 1;
            if lead.transfer_elapsed >= election_ticks_min {
                tracing::info!(to = ?lead.lead_transferee, "leadership transfer timed out");
                lead.lead_transferee = None;
                if !self.is_promotable() {
                    // A removed leader that could not hand over goes anyway.
                    self.become_follower(self.term, None);
                    return;
                }
            }
        }
        if self.leading().check_quorum_elapsed >= election_ticks_min {
            self.leading().check_quorum_elapsed = 0;
            if self.config.check_quorum && !self.quorum_active() {
                tracing::info!(term = %self.term, "lost contact with a quorum: stepping down");
                self.become_follower(self.term, None);
                return;
            }
        }
        let election_ticks_max = self.config.election_ticks_max;
        let lead = self.leading();
        for pr in lead.progress.values_mut() {
            if let crate::progress::ReplicationState::Snapshot { .. } = pr.state {
                pr.snapshot_ticks += 1;
                // A chunk or its answer was lost: send it again, resuming
                // from what the follower acknowledged.
                if pr.probe_sent && pr.snapshot_ticks >= election_ticks_max {
                    pr.probe_sent = false;
                    pr.snapshot_ticks = 0;
                    lead.broadcast_pending = true;
                }
            }
        }
        if self.heartbeat_elapsed >= self.config.heartbeat_ticks {
            self.heartbeat_elapsed = 0;
            self.reads.request_round();
        }
        // A Leave held back by a transfer that has since been given up.
        self.maybe_leave_joint();
    }

    /// Check-quorum: were we heard from by a quorum since the last round?
    fn quorum_active(&mut self) -> bool {
        let lead = self.leading();
        let mut active: BTreeSet<NodeId> = lead
            .progress
            .iter()
            .filter(|(_, pr)| pr.recent_active)
            .map(|(&id, _)| id)
            .collect();
        for pr in lead.progress.values_mut() {
            pr.recent_active = false;
        }
        active.insert(self.config.id);
        self.quorum().has_quorum(&active)
    }

    // ----- Proposals. -----

    pub(crate) fn propose(&mut self, kind: EntryKind, data: Bytes) -> Result<Accepted, StepError> {
        match self.role {
            Role::Leader => {
                if self.transferee().is_some() {
                    return Err(StepError::TransferInProgress);
                }
                let uncommitted = (self.log.last_index().0 - self.log.committed.0) as usize;
                if uncommitted >= self.config.max_uncommitted_entries {
                    return Err(StepError::Backpressure { uncommitted });
                }
                let (index, term) = self.append_entry(kind, data);
                Ok(Accepted::Appended { index, term })
            }
            _ => match self.leader {
                Some(leader) if leader != self.config.id => {
                    self.forward_buffer.push(ForwardedEntry { kind, data });
                    Ok(Accepted::Forwarded { leader })
                }
                _ => Err(StepError::NoLeader),
            },
        }
    }

    /// Leader: appends an entry of the current term and schedules replication.
    pub(crate) fn append_entry(&mut self, kind: EntryKind, data: Bytes) -> (LogIndex, Term) {
        let index = self.log.last_index().next();
        self.log.append(Entry {
            term: self.term,
            index,
            kind,
            data,
        });
        self.request_broadcast();
        (index, self.term)
    }

    fn propose_conf_change(&mut self, change: ConfChange) -> Result<Accepted, StepError> {
        if self.role != Role::Leader {
            return Err(StepError::NotLeader);
        }
        #[allow(unused_mut)]
        let mut one_at_a_time = true;
        if self.bug(Bug::ConcurrentConfChanges) {
            one_at_a_time = false;
        }
        if one_at_a_time && self.leading_ref().pending_conf_index > self.log.committed {
            return Err(StepError::ConfChangeInProgress);
        }
        // Validate against the configuration in force; it is the one the
        // change will be applied to, as no other change is in flight.
        self.apply_conf_change(&change)?;
        let accepted = self.propose(EntryKind::ConfChange, change.encode())?;
        if let Accepted::Appended { index, .. } = accepted {
            self.leading().pending_conf_index = index;
        }
        Ok(accepted)
    }

    /// `Input::TransferLeadership` (Raft thesis, section 3.10). A transfer
    /// ends when the target campaigns, when it times out an election timeout
    /// after it was first asked for, when leadership is transferred to this
    /// node itself (a cancel), or when the target stops being a voter.
    fn transfer_leadership(&mut self, to: NodeId) -> Result<Accepted, StepError> {
        if self.role != Role::Leader {
            return Err(StepError::NotLeader);
        }
        if !self.is_promotable() {
            // Removed: the hand-over in progress is the only way out, and a
            // cancel would let a non-member take proposals again.
            return Err(StepError::Removed);
        }
        if to != self.config.id && !self.membership.is_voter(to) {
            return Err(StepError::NotAVoter(to));
        }
        if let Some(pending) = self.transferee() {
            if pending == to {
                // A retry: its timeout still counts from the first request,
                // or a client retrying could block proposals for ever.
                return Ok(Accepted::Done);
            }
            tracing::info!(from = %pending, %to, "leadership transfer abandoned for another");
            self.leading().lead_transferee = None;
        }
        if to == self.config.id {
            // Already leader: any pending transfer is cancelled above.
            return Ok(Accepted::Done);
        }
        tracing::info!(%to, "transferring leadership");
        self.start_transfer(to);
        if !self.maybe_send_timeout_now(to) {
            self.send_append(to);
        }
        Ok(Accepted::Done)
    }

    /// Leader: tells the transfer target to campaign once it holds our whole
    /// log, whichever answer showed it (append, snapshot or heartbeat
    /// response; a heartbeat response also repeats a lost TimeoutNow).
    /// Returns true if it was sent.
    pub(crate) fn maybe_send_timeout_now(&mut self, from: NodeId) -> bool {
        let last = self.log.last_index();
        let caught_up = self
            .lead
            .as_ref()
            .and_then(|lead| lead.progress.get(&from))
            .is_some_and(|pr| pr.match_index == last);
        if self.transferee() == Some(from) && caught_up {
            self.send_timeout_now(from);
            return true;
        }
        false
    }

    pub(crate) fn send_timeout_now(&mut self, to: NodeId) {
        // The target may win before our lease runs out: stop serving from it.
        self.reads.end_lease();
        self.send(to, MessageBody::TimeoutNow);
        if !self.is_promotable() {
            // Removed, and the target holds our whole log: it can win
            // without us, and nobody would tell us of its term.
            tracing::info!(%to, "handed over after removal: stepping down");
            self.become_follower(self.term, None);
        }
    }

    // ----- Commit and membership. -----

    /// Advances the commit index and applies committed membership changes.
    pub(crate) fn commit_to(&mut self, index: LogIndex) -> bool {
        let old = self.log.committed;
        if !self.log.commit_to(index) {
            return false;
        }
        self.apply_committed_conf_changes(old);
        true
    }

    /// Applies the membership changes committed after `from`.
    fn apply_committed_conf_changes(&mut self, from: LogIndex) {
        let mut index = from.next().max(self.log.first_index());
        while index <= self.log.committed {
            let entry = self
                .log
                .entry(index)
                .expect("committed entry is in the log");
            if entry.kind == EntryKind::ConfChange {
                match ConfChange::decode(&entry.data)
                    .map_err(|e| e.to_string())
                    .and_then(|c| self.apply_conf_change(&c).map_err(|e| e.to_string()))
                {
                    Ok(next) => self.set_membership(index, next),
                    // Proposals are validated before they are appended, so a
                    // bad committed change means a bug; skip it identically
                    // on every node.
                    Err(err) => tracing::error!(%index, %err, "ignoring invalid membership change"),
                }
            }
            index = index.next();
        }
    }

    fn set_membership(&mut self, index: LogIndex, next: Membership) {
        // Drivers log the change with node names (kv-node's driver does).
        tracing::debug!(%index, ?next, "membership changed");
        self.membership = next.clone();
        self.membership_history.push((index, next));
        let me = self.config.id;
        if let Some(target) = self.transferee()
            && !self.membership.is_voter(target)
        {
            // The target can no longer win an election: waiting for the
            // timeout would only refuse proposals meanwhile.
            tracing::info!(%target, "leadership transfer abandoned: the target is no voter");
            self.leading().lead_transferee = None;
        }
        if self.role == Role::Leader {
            let last = self.log.last_index();
            let members = self.membership.members();
            let lead = self.leading();
            lead.progress.retain(|id, _| members.contains(id));
            for id in members {
                if id != me {
                    lead.progress
                        .entry(id)
                        .or_insert_with(|| Progress::new(last.next()));
                }
            }
            if !self.membership.is_voter(me) {
                self.hand_over_after_removal();
            }
        } else if matches!(self.role, Role::Follower | Role::Learner) || !self.is_promotable() {
            // A follower may have become a learner or a voter; a candidate
            // that lost its vote stops campaigning.
            self.role = self.follower_role();
        }
    }

    /// Leader: the change that removed us committed. Stepping down at once
    /// can strand the remaining voters: those that did not yet hear of the
    /// commit stay in a configuration that still counts us, and need a vote
    /// we refuse them when our log is longer. So, as the Raft dissertation
    /// (section 4.2.2) suggests, keep leading (refusing proposals) only to
    /// hand over: bring the most up-to-date remaining voter level with our
    /// log and tell it to campaign; its election deposes us. If that fails
    /// within an election timeout, step down anyway.
    fn hand_over_after_removal(&mut self) {
        self.send_commit_to_all();
        let target = self
            .leading_ref()
            .progress
            .iter()
            .filter(|(id, _)| self.membership.is_voter(**id))
            .max_by_key(|(id, pr)| (pr.match_index, std::cmp::Reverse(**id)))
            .map(|(&id, _)| id);
        let Some(target) = target else {
            tracing::info!("removed from the voters: stepping down");
            self.become_follower(self.term, None);
            return;
        };
        tracing::info!(%target, "removed from the voters: handing leadership over");
        self.start_transfer(target);
        if !self.maybe_send_timeout_now(target) {
            self.send_appends_to(target);
        }
    }

    /// Leader: once a joint configuration is committed and no other change
    /// is in flight, propose leaving it. A leader elected while a joint
    /// configuration is in force does the same once its no-op commits.
    pub(crate) fn maybe_leave_joint(&mut self) {
        // A target that the Leave removes (or demotes) cannot keep the
        // leadership it would win: give the transfer up, so the change that
        // removes it ends the transfer at once (issue 18 D) instead of the
        // pending transfer holding the Leave back until its timeout.
        let Some(lead) = &self.lead else {
            return;
        };
        let no_change_in_flight = lead.pending_conf_index <= self.log.committed;
        if let Some(target) = lead.lead_transferee
            && self.membership.is_joint()
            && no_change_in_flight
            && !self.membership.voters.contains(&target)
        {
            tracing::info!(%target, "leadership transfer abandoned: the Leave removes the target");
            self.leading().lead_transferee = None;
        }
        // Not while handing over: the Leave would lengthen our log after
        // the target was found caught up, and it would lose the election
        // TimeoutNow starts. The new leader (or we, once the transfer is
        // given up; see `tick_leader`) leaves the joint configuration.
        if self.membership.is_joint() && no_change_in_flight && self.transferee().is_none() {
            let (index, _) = self.append_entry(EntryKind::ConfChange, ConfChange::Leave.encode());
            self.leading().pending_conf_index = index;
        }
    }

    /// The configuration that decides: the membership in force (with a
    /// known bug, only its new voters while joint).
    pub(crate) fn quorum(&self) -> std::borrow::Cow<'_, Membership> {
        if self.bug(Bug::JointNewMajorityOnly) && self.membership.is_joint() {
            let mut m = self.membership.clone();
            m.outgoing.clear();
            return std::borrow::Cow::Owned(m);
        }
        std::borrow::Cow::Borrowed(&self.membership)
    }

    /// The membership after `change` (with a known bug, a change may start
    /// from a joint configuration, forgetting its outgoing half).
    fn apply_conf_change(&self, change: &ConfChange) -> Result<Membership, crate::MembershipError> {
        if self.bug(Bug::ConcurrentConfChanges) && self.membership.is_joint() {
            let mut flat = self.membership.clone();
            flat.outgoing.clear();
            return flat.apply(change);
        }
        self.membership.apply(change)
    }

    /// The membership in force at `index` (at or above the snapshot).
    pub(crate) fn membership_at(&self, index: LogIndex) -> Membership {
        self.membership_history
            .iter()
            .rev()
            .find(|(at, _)| *at <= index)
            .map(|(_, m)| m.clone())
            .unwrap_or_else(|| self.snapshot_meta.membership.clone())
    }

    // ----- Snapshots taken by the driver. -----

    /// The metadata a snapshot of the state machine at `index` must carry,
    /// for an index between the current snapshot and the applied index.
    pub fn snapshot_meta_at(&self, index: LogIndex) -> Option<SnapshotMeta> {
        if index < self.log.snapshot_index() || index > self.log.applied {
            return None;
        }
        Some(SnapshotMeta {
            index,
            term: self.log.term(index)?,
            membership: self.membership_at(index),
        })
    }

    fn snapshot_taken(
        &mut self,
        meta: SnapshotMeta,
        size_bytes: u64,
    ) -> Result<Accepted, StepError> {
        if meta.index <= self.log.snapshot_index() {
            return Ok(Accepted::Done);
        }
        if meta.index > self.log.applied {
            return Err(StepError::SnapshotBeyondApplied {
                index: meta.index,
                applied: self.log.applied,
            });
        }
        assert_eq!(
            Some(&meta),
            self.snapshot_meta_at(meta.index).as_ref(),
            "snapshot metadata does not match the log"
        );
        self.log.compact(meta.index);
        let keep_from = self
            .membership_history
            .iter()
            .rposition(|(at, _)| *at <= meta.index)
            .unwrap_or(0);
        self.membership_history.drain(..keep_from);
        self.snapshot_meta = meta;
        self.snapshot_bytes = size_bytes;
        Ok(Accepted::Done)
    }

    // ----- Output helpers. -----

    pub(crate) fn send(&mut self, to: NodeId, body: MessageBody) {
        let term = match &body {
            // A pre-vote asks for the term we would campaign in.
            MessageBody::RequestVote { pre_vote: true, .. } => self.term.next(),
            _ => self.term,
        };
        self.send_in_term(to, term, body);
    }

    /// Sends a message stamped with `term` (a granted pre-vote answers in
    /// the term it was asked for, which may be well above ours).
    pub(crate) fn send_in_term(&mut self, to: NodeId, term: Term, body: MessageBody) {
        let message = Message {
            from: self.config.id,
            to,
            term,
            body,
        };
        if self.needs_durable_state(&message) {
            self.held_msgs.push(message);
        } else {
            self.msgs.push(message);
        }
    }

    /// Messages that promise something about this node's durable state:
    /// votes and acknowledgements, and any message of a term that is not
    /// durable yet. The last rule matters for a leader that wins alone (one
    /// voter, any learners): it becomes leader in the step that raised its
    /// term, and an append of that term that left before the fsync could
    /// survive a crash that forgets the term; the restarted node would then
    /// lead the same term again with other entries at the same indexes
    /// (Log Matching broken). Pre-votes change no state and are exempt.
    fn needs_durable_state(&self, m: &Message) -> bool {
        if self.bug(Bug::VoteBeforePersist)
            && matches!(m.body, MessageBody::RequestVoteResponse { .. })
        {
            return false;
        }
        let pre_vote = matches!(
            m.body,
            MessageBody::RequestVote { pre_vote: true, .. }
                | MessageBody::RequestVoteResponse { pre_vote: true, .. }
        );
        #[allow(unused_mut)]
        let mut term_durable = m.term <= self.durable_hard_state.term;
        if self.bug(Bug::LeadBeforeTermDurable) && self.role == Role::Leader {
            term_durable = true;
        }
        if !pre_vote && !term_durable {
            return true;
        }
        matches!(
            m.body,
            MessageBody::RequestVoteResponse {
                pre_vote: false,
                ..
            } | MessageBody::RequestVote {
                pre_vote: false,
                ..
            } | MessageBody::AppendEntriesResponse { .. }
                | MessageBody::InstallSnapshotResponse { .. }
        )
    }

    pub(crate) fn soft_state(&self) -> SoftState {
        SoftState {
            role: self.role,
            leader: self.leader,
            term: self.term,
        }
    }

    pub(crate) fn hard_state(&self) -> HardState {
        HardState {
            term: self.term,
            vote: self.vote,
            commit: self.log.committed,
        }
    }

    // ----- Read-only accessors. -----

    pub fn id(&self) -> NodeId {
        self.config.id
    }
    pub fn role(&self) -> Role {
        self.role
    }
    pub fn term(&self) -> Term {
        self.term
    }
    pub fn leader(&self) -> Option<NodeId> {
        self.leader
    }
    /// The entries the last compaction (`SnapshotTaken`) or snapshot
    /// install removed from the log, for the driver to free where it
    /// likes: freeing half a million entries holds a thread for about a
    /// tenth of a second, longer than a heartbeat interval. Entries not
    /// taken are freed at the next compaction.
    pub fn take_compacted_entries(&mut self) -> crate::RemovedEntries {
        self.log.take_compacted()
    }

    /// The term of the hard state last acknowledged durable (`Persisted`).
    /// A node that leads a term it has not yet made durable sends nothing
    /// of that term (`needs_durable_state`) and commits nothing in it; if
    /// it crashes first, it never led that term as far as anyone can tell.
    pub fn durable_term(&self) -> Term {
        self.durable_hard_state.term
    }
    pub fn commit_index(&self) -> LogIndex {
        self.log.committed
    }
    pub fn applied_index(&self) -> LogIndex {
        self.log.applied
    }
    pub fn last_index(&self) -> LogIndex {
        self.log.last_index()
    }
    pub fn membership(&self) -> &Membership {
        &self.membership
    }
    /// Leader: the node leadership is being handed to, while a transfer is
    /// pending (proposals are refused meanwhile).
    pub fn lead_transferee(&self) -> Option<NodeId> {
        self.transferee()
    }
    pub fn config(&self) -> &Config {
        &self.config
    }
    /// The term of the entry at `index`, if it is still in the log.
    pub fn log_term(&self, index: LogIndex) -> Option<Term> {
        self.log.term(index)
    }
    /// The entry at `index`, if it is still in the log (for invariant checks).
    pub fn log_entry(&self, index: LogIndex) -> Option<&Entry> {
        self.log.entry(index)
    }

    pub fn status(&self) -> Status {
        Status {
            id: self.config.id,
            role: self.role,
            term: self.term,
            vote: self.vote,
            leader: self.leader,
            commit_index: self.log.committed,
            applied_index: self.log.applied,
            last_log_index: self.log.last_index(),
            last_log_term: self.log.last_term(),
            snapshot_index: self.log.snapshot_index(),
            membership: self.membership.clone(),
            match_index: self
                .lead
                .iter()
                .flat_map(|lead| &lead.progress)
                .map(|(&id, pr)| (id, pr.match_index))
                .collect(),
            damaged_up_to_term: self.damaged_up_to_term,
        }
    }
}
