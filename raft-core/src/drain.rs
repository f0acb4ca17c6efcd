//! Assembling the `Ready` batch, and taking back the driver's
//! acknowledgement that a batch is durable.

use crate::ForwardedEntry;
use crate::bugs::Bug;
use crate::message::{Message, MessageBody};
use crate::node::{Node, PendingPersist};
use crate::ready::Ready;
use crate::types::Role;

impl Node {
    /// True if `ready` would return anything.
    pub fn has_ready(&self) -> bool {
        !self.msgs.is_empty()
            || !self.held_msgs.is_empty()
            || !self.forward_buffer.is_empty()
            || self
                .lead
                .as_ref()
                .is_some_and(|lead| lead.broadcast_pending || self.reads.round_requested())
            || self.soft_state() != self.last_soft_state
            || self.hard_state() != self.last_hard_state
            || self.log.has_unpersisted()
            || self.log.has_committed_to_hand_out()
            || self.pending_snapshot.is_some()
            || !self.snapshot_chunks.is_empty()
            || !self.read_states.is_empty()
            || !self.dropped_reads.is_empty()
    }

    /// Drains the next batch of work. See [`Ready`] for the order in which
    /// the driver must act on its fields.
    pub fn ready(&mut self) -> Ready {
        if self.role == Role::Leader {
            if self.reads.round_requested() {
                self.start_read_round();
            }
            if self.leading().broadcast_pending {
                self.broadcast_appends();
            }
        }
        self.flush_forwarded_proposals();

        self.ready_number += 1;
        let mut rd = Ready {
            number: self.ready_number,
            ..Ready::default()
        };
        let soft = self.soft_state();
        if soft != self.last_soft_state {
            rd.soft_state = Some(soft);
            self.last_soft_state = soft;
        }
        rd.snapshot_chunks = std::mem::take(&mut self.snapshot_chunks);
        rd.snapshot = self.pending_snapshot.take();
        let hard = self.hard_state();
        let term_or_vote_changed =
            (hard.term, hard.vote) != (self.last_hard_state.term, self.last_hard_state.vote);
        if hard != self.last_hard_state {
            rd.hard_state = Some(hard);
            self.last_hard_state = hard;
        }
        rd.entries = self.log.take_unpersisted();
        rd.must_sync = rd.snapshot.is_some() || !rd.entries.is_empty() || term_or_vote_changed;
        let handed_out_before = self.log.handed_out;
        rd.committed_entries = self
            .log
            .take_committed(self.config.max_committed_bytes_per_ready);
        if self.bug(Bug::ApplyTwice)
            && !rd.committed_entries.is_empty()
            && let Some(again) = self.log.entry(handed_out_before)
        {
            rd.committed_entries.insert(0, again.clone());
        }
        rd.read_states = std::mem::take(&mut self.read_states);
        rd.dropped_reads = std::mem::take(&mut self.dropped_reads);
        rd.messages = std::mem::take(&mut self.msgs);
        for m in &rd.messages {
            self.debug_assert_durable(m);
        }

        let held = std::mem::take(&mut self.held_msgs);
        if rd.must_persist() {
            self.unacked.push_back(PendingPersist {
                number: rd.number,
                last_entry: rd.entries.last().map(|e| (e.index, e.term)),
                hard_state: rd.hard_state,
                messages: held,
            });
        } else if let Some(last) = self.unacked.back_mut() {
            // They may depend on a write that is still in flight.
            last.messages.extend(held);
        } else {
            rd.messages.extend(held);
        }
        rd
    }

    fn flush_forwarded_proposals(&mut self) {
        if self.forward_buffer.is_empty() {
            return;
        }
        let entries: Vec<ForwardedEntry> = std::mem::take(&mut self.forward_buffer);
        match self.leader {
            Some(leader) if leader != self.config.id && self.role != Role::Leader => {
                self.send(leader, MessageBody::Propose { entries });
            }
            // The leader is gone; the proposers' drivers time out.
            _ => tracing::debug!(
                count = entries.len(),
                "dropping proposals: no leader to forward to"
            ),
        }
    }

    /// `Input::Persisted`: every batch up to `number` is durable.
    pub(crate) fn on_persisted(&mut self, number: u64) {
        while self.unacked.front().is_some_and(|p| p.number <= number) {
            let done = self.unacked.pop_front().expect("front exists");
            if let Some((index, term)) = done.last_entry {
                self.log.persisted_to(index, term);
            }
            if let Some(hard) = done.hard_state {
                self.durable_hard_state = hard;
            }
            self.msgs.extend(done.messages);
        }
        if self.role == Role::Leader && self.maybe_commit() {
            self.request_broadcast();
        }
    }

    /// Checks the ordering contract for a message about to leave: anything
    /// that promises durable state finds that state durable.
    fn debug_assert_durable(&self, m: &Message) {
        if self.any_bug() {
            return;
        }
        if !matches!(
            m.body,
            MessageBody::RequestVote { pre_vote: true, .. }
                | MessageBody::RequestVoteResponse { pre_vote: true, .. }
        ) {
            debug_assert!(
                m.term <= self.durable_hard_state.term,
                "{} sent in term {} before the term was durable ({:?})",
                m.body.name(),
                m.term,
                self.durable_hard_state
            );
        }
        match m.body {
            MessageBody::RequestVoteResponse {
                pre_vote: false,
                granted: true,
            } => debug_assert!(
                self.durable_hard_state.term >= m.term
                    && (self.durable_hard_state.term > m.term
                        || self.durable_hard_state.vote == Some(m.to)),
                "vote for {} in term {} sent before it was durable ({:?})",
                m.to,
                m.term,
                self.durable_hard_state
            ),
            MessageBody::RequestVote {
                pre_vote: false, ..
            } => debug_assert!(
                self.durable_hard_state.term >= m.term,
                "vote request of term {} sent before the term was durable",
                m.term
            ),
            MessageBody::AppendEntriesResponse {
                success: true,
                match_index,
                ..
            } => debug_assert!(
                match_index <= self.log.persisted || self.durable_hard_state.term > m.term,
                "acknowledged {match_index} before it was durable (durable up to {})",
                self.log.persisted
            ),
            _ => {}
        }
    }
}
