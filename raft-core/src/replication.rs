//! Log replication (Raft paper, section 5.3): AppendEntries on both sides,
//! fast backtracking with conflict hints, pipelining, commitment and
//! snapshots for followers that fell behind the compacted log.

use crate::bugs::Bug;
use crate::message::{Message, MessageBody};
use crate::node::{Node, StagedSnapshot};
use crate::progress::ReplicationState;
use crate::ready::SnapshotChunk;
use crate::types::{Entry, LogIndex, NodeId, SnapshotMeta, Term};
use bytes::Bytes;
use std::collections::BTreeMap;

impl Node {
    // ----- Follower side. -----

    pub(crate) fn handle_append(
        &mut self,
        leader: NodeId,
        mut prev_log_index: LogIndex,
        mut prev_log_term: Term,
        mut entries: Vec<Entry>,
        leader_commit: LogIndex,
    ) {
        let committed = self.log.committed;
        if prev_log_index < committed {
            // Our committed prefix agrees with every current leader's log
            // (leader completeness): skip the part of the message it covers.
            entries.retain(|e| e.index > committed);
            prev_log_index = committed;
            prev_log_term = self
                .log
                .term(committed)
                .expect("committed index is in the log");
        }
        #[allow(unused_mut)]
        let mut consistent = self.log.matches(prev_log_index, prev_log_term);
        if self.bug(Bug::SkipPrevTermCheck) && prev_log_index <= self.log.last_index() {
            consistent = true;
        }
        if !consistent {
            let (conflict_index, conflict_term) = if prev_log_index > self.log.last_index() {
                (self.log.last_index().next(), None)
            } else {
                let term = self.log.term(prev_log_index);
                (self.log.first_index_of_term_at(prev_log_index), term)
            };
            tracing::debug!(%leader, prev = %prev_log_index, %conflict_index, "rejecting append");
            self.send(
                leader,
                MessageBody::AppendEntriesResponse {
                    success: false,
                    match_index: LogIndex::ZERO,
                    conflict_index,
                    conflict_term,
                    reject_index: prev_log_index,
                },
            );
            return;
        }
        let last_new = prev_log_index.plus(entries.len() as u64);
        if !entries.is_empty() {
            self.log.merge(&entries);
        }
        // Only what this message proved to match may be marked committed.
        self.commit_to(leader_commit.min(last_new));
        self.send(
            leader,
            MessageBody::AppendEntriesResponse {
                success: true,
                match_index: last_new,
                conflict_index: LogIndex::ZERO,
                conflict_term: None,
                reject_index: LogIndex::ZERO,
            },
        );
    }

    /// A chunk of the leader's snapshot. Chunks are staged by the driver in
    /// order; the last one installs the snapshot and replaces our log.
    pub(crate) fn handle_install_snapshot(
        &mut self,
        leader: NodeId,
        meta: SnapshotMeta,
        offset: u64,
        total_bytes: u64,
        data: Bytes,
    ) {
        let snapshot_index = meta.index;
        let reply =
            |received: u64, last_index: Option<LogIndex>| MessageBody::InstallSnapshotResponse {
                snapshot_index,
                received,
                last_index,
            };
        if meta.index <= self.log.committed {
            // Stale or duplicate: we are past it already.
            self.snapshot_staging = None;
            self.send(leader, reply(0, Some(self.log.committed)));
            return;
        }
        if self.log.matches(meta.index, meta.term) {
            // We hold the snapshot's last entry: just learn it is committed.
            self.snapshot_staging = None;
            self.commit_to(meta.index);
            self.send(leader, reply(0, Some(meta.index)));
            return;
        }
        let term = self.term;
        let same_transfer = |s: &StagedSnapshot| {
            s.meta == meta && s.total_bytes == total_bytes && s.leader == leader && s.term == term
        };
        if offset == 0 {
            self.snapshot_staging = Some(StagedSnapshot {
                meta: meta.clone(),
                total_bytes,
                leader,
                term,
                received: 0,
            });
        }
        let received = match &mut self.snapshot_staging {
            Some(staged) if same_transfer(staged) && staged.received == offset => {
                // The door checked offset + len <= total_bytes.
                staged.received += data.len() as u64;
                self.snapshot_chunks.push(SnapshotChunk {
                    meta: meta.clone(),
                    offset,
                    total_bytes,
                    data,
                });
                staged.received
            }
            // Out of order: tell the leader where to resume.
            Some(staged) if same_transfer(staged) => staged.received,
            // A transfer we know nothing of (we restarted), or other bytes
            // (another leader, another file): start over.
            _ => 0,
        };
        if received < total_bytes {
            self.send(leader, reply(received, None));
            return;
        }
        tracing::info!(index = %meta.index, term = %meta.term, "installing snapshot from leader");
        self.snapshot_staging = None;
        self.log.restore_snapshot(meta.index, meta.term);
        self.membership = meta.membership.clone();
        self.membership_history = vec![(meta.index, meta.membership.clone())];
        self.role = self.follower_role();
        self.snapshot_meta = meta.clone();
        self.snapshot_bytes = total_bytes;
        self.pending_snapshot = Some(meta);
        self.send(leader, reply(received, Some(self.log.last_index())));
    }

    // ----- Leader side. -----

    pub(crate) fn handle_append_response(&mut self, m: Message) {
        let MessageBody::AppendEntriesResponse {
            success,
            match_index,
            conflict_index,
            conflict_term,
            reject_index,
        } = m.body
        else {
            unreachable!("handle_append_response takes append responses")
        };
        let from = m.from;
        let hint_next = if success {
            LogIndex::ZERO
        } else {
            self.next_index_from_hint(conflict_index, conflict_term)
        };
        let last = self.log.last_index();
        let Some(pr) = self.progress_mut(from) else {
            return;
        };
        if success {
            assert!(
                match_index <= last,
                "{from} acknowledged {match_index} beyond our last index {last}"
            );
            if pr.update_match(match_index) {
                if pr.state == ReplicationState::Probe {
                    pr.become_replicate();
                }
                if self.maybe_commit() {
                    self.request_broadcast();
                }
            }
            self.maybe_send_timeout_now(from);
            self.send_appends_to(from);
            self.send_commit_if_stale(from);
        } else if pr.back_off(reject_index, hint_next) {
            tracing::debug!(%from, next = %pr.next_index, "follower rejected append: backing up");
            self.send_appends_to(from);
        }
    }

    /// Where to resume after a rejection: past our last entry of the
    /// follower's conflicting term if we have that term, else at the first
    /// index the follower holds of it (or its log end).
    fn next_index_from_hint(
        &self,
        conflict_index: LogIndex,
        conflict_term: Option<Term>,
    ) -> LogIndex {
        if let Some(term) = conflict_term
            && let Some(last) = self.log.last_index_of_term(term)
        {
            return last.next();
        }
        conflict_index.max(LogIndex(1))
    }

    pub(crate) fn handle_heartbeat_response(&mut self, from: NodeId, read_round: u64) {
        let last = self.log.last_index();
        let max_inflight = self.config.max_inflight_messages;
        let Some(pr) = self.progress_mut(from) else {
            return;
        };
        pr.read_round = pr.read_round.max(read_round);
        if pr.match_index < last {
            if pr.state == ReplicationState::Replicate && pr.is_paused(max_inflight) {
                // The window is full and the follower still lacks entries:
                // an append may be lost. Let one more through to find out.
                pr.inflight.pop_front();
            }
            if pr.state == ReplicationState::Probe {
                pr.probe_sent = false;
            }
            self.send_append(from);
        }
        self.on_read_round_acked();
        self.maybe_send_timeout_now(from);
    }

    pub(crate) fn handle_snapshot_response(
        &mut self,
        from: NodeId,
        snapshot_index: LogIndex,
        received: u64,
        last_index: Option<LogIndex>,
    ) {
        let resend_per_answer = self.bug(Bug::ResendChunkPerAnswer);
        let Some(pr) = self.progress_mut(from) else {
            return;
        };
        match (last_index, pr.state) {
            (Some(last), _) => {
                pr.update_match(last);
                if let ReplicationState::Snapshot { .. } = pr.state {
                    pr.become_probe();
                }
                if self.maybe_commit() {
                    self.request_broadcast();
                }
                // A transfer target that caught up by snapshot may hold our
                // whole log now, and no append response would follow.
                if self.maybe_send_timeout_now(from) {
                    return;
                }
            }
            // A copy of the answer that sent the chunk now in flight (the
            // network duplicated it, or the follower answered a duplicated
            // chunk). Sending the chunk again for each copy would keep
            // every copy alive, and duplication would multiply them without
            // bound (simulator seed 1800 at one node: millions of chunks in
            // one tick). A lost chunk is resent by the tick instead.
            (None, ReplicationState::Snapshot { index, offset })
                if index == snapshot_index
                    && received == offset
                    && pr.probe_sent
                    && !resend_per_answer =>
            {
                return;
            }
            (None, ReplicationState::Snapshot { index, .. }) if index == snapshot_index => {
                pr.state = ReplicationState::Snapshot {
                    index,
                    offset: received,
                };
                pr.probe_sent = false;
                pr.snapshot_ticks = 0;
            }
            // An answer about a transfer we have given up on.
            (None, _) => return,
        }
        self.send_appends_to(from);
    }

    /// Sends as many appends to `to` as its state and window allow.
    pub(crate) fn send_appends_to(&mut self, to: NodeId) {
        let last = self.log.last_index();
        loop {
            let Some(pr) = self.lead.as_ref().and_then(|lead| lead.progress.get(&to)) else {
                return;
            };
            if pr.is_paused(self.config.max_inflight_messages) {
                return;
            }
            if pr.state == ReplicationState::Replicate && pr.next_index > last {
                return;
            }
            if pr.state == ReplicationState::Probe && pr.match_index == last {
                return;
            }
            let was_replicating = pr.state == ReplicationState::Replicate;
            self.send_append(to);
            if !was_replicating {
                return;
            }
        }
    }

    /// Sends one AppendEntries (or the snapshot) to `to`, if not paused.
    pub(crate) fn send_append(&mut self, to: NodeId) {
        let Some(pr) = self.lead.as_ref().and_then(|lead| lead.progress.get(&to)) else {
            return;
        };
        if pr.is_paused(self.config.max_inflight_messages) {
            return;
        }
        let next = pr.next_index;
        if let ReplicationState::Snapshot { .. } = pr.state {
            self.send_snapshot_chunk(to);
            return;
        }
        if next <= self.log.snapshot_index() {
            tracing::info!(%to, index = %self.snapshot_meta.index, "follower needs compacted entries: sending snapshot");
            let index = self.snapshot_meta.index;
            self.leading()
                .progress
                .get_mut(&to)
                .expect("progress exists")
                .become_snapshot(index);
            self.send_snapshot_chunk(to);
            return;
        }
        let prev_log_index = next.prev();
        let prev_log_term = self
            .log
            .term(prev_log_index)
            .expect("prev index is in the log");
        let entries = if next <= self.log.last_index() {
            self.log.slice(next, self.config.max_message_bytes)
        } else {
            Vec::new()
        };
        let last_sent = entries.last().map(|e| e.index);
        let leader_commit = self.log.committed;
        let lead = self.leading();
        lead.progress
            .get_mut(&to)
            .expect("progress checked above")
            .sent_append(last_sent);
        // The follower takes the commit index only as far as this message
        // proves its log matches ours.
        let proven = last_sent.unwrap_or(prev_log_index);
        lead.commit_sent.insert(to, leader_commit.min(proven));
        self.send(
            to,
            MessageBody::AppendEntries {
                prev_log_index,
                prev_log_term,
                entries,
                leader_commit,
            },
        );
    }

    /// Sends the next chunk of our snapshot. If a newer snapshot replaced
    /// the one being sent, the transfer starts over with the newer one: the
    /// driver keeps only the newest.
    fn send_snapshot_chunk(&mut self, to: NodeId) {
        let meta = self.snapshot_meta.clone();
        let total_bytes = self.snapshot_bytes;
        let chunk = self.config.snapshot_chunk_bytes;
        let pr = self
            .leading()
            .progress
            .get_mut(&to)
            .expect("progress exists");
        let offset = match pr.state {
            ReplicationState::Snapshot { index, offset } if index == meta.index => offset,
            _ => {
                pr.become_snapshot(meta.index);
                0
            }
        };
        pr.probe_sent = true;
        pr.snapshot_ticks = 0;
        let len = chunk.min(total_bytes.saturating_sub(offset));
        self.send(
            to,
            MessageBody::InstallSnapshot {
                meta,
                offset,
                len,
                total_bytes,
                data: Bytes::new(),
            },
        );
    }

    /// Sends pending appends to every follower, and heartbeats to tell idle
    /// followers of a commit index they have not heard of.
    pub(crate) fn broadcast_appends(&mut self) {
        self.leading().broadcast_pending = false;
        for id in self.followers() {
            self.send_appends_to(id);
            self.send_commit_if_stale(id);
        }
    }

    /// Tells every follower the commit index now, as far as its log is
    /// known to match ours.
    pub(crate) fn send_commit_to_all(&mut self) {
        let committed = self.log.committed;
        for id in self.followers() {
            let lead = self.leading();
            let commit = committed.min(lead.progress[&id].match_index);
            lead.commit_sent.insert(id, commit);
            let read_round = self.reads.current_round();
            self.send(id, MessageBody::Heartbeat { commit, read_round });
        }
    }

    /// A follower with nothing more to receive still needs to learn the
    /// commit index to apply (and to serve reads) without waiting for the
    /// next heartbeat.
    fn send_commit_if_stale(&mut self, id: NodeId) {
        let committed = self.log.committed;
        let Some(lead) = self.lead.as_mut() else {
            return;
        };
        let Some(pr) = lead.progress.get(&id) else {
            return;
        };
        let commit = committed.min(pr.match_index);
        if lead.commit_sent.get(&id).is_none_or(|&sent| sent < commit) {
            lead.commit_sent.insert(id, commit);
            let read_round = self.reads.current_round();
            self.send(id, MessageBody::Heartbeat { commit, read_round });
        }
    }

    /// Advances the commit index to what a quorum holds, under the rule of
    /// Raft paper section 5.4.2: only an entry of the current term is
    /// committed by counting replicas.
    pub(crate) fn maybe_commit(&mut self) -> bool {
        let mut acked: BTreeMap<NodeId, LogIndex> = self
            .leading_ref()
            .progress
            .iter()
            .map(|(&id, pr)| (id, pr.match_index))
            .collect();
        acked.insert(self.config.id, self.log.persisted);
        let index = self.quorum().committed_index(&acked);
        if index <= self.log.committed {
            return false;
        }
        #[allow(unused_mut)]
        let mut of_current_term = self.log.term(index) == Some(self.term);
        if self.bug(Bug::CommitPreviousTerm) {
            of_current_term = true;
        }
        if !of_current_term {
            return false;
        }
        self.commit_to(index);
        self.on_commit_advanced();
        self.maybe_leave_joint();
        true
    }
}
