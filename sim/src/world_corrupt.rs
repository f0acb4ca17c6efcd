//! A corrupting peer: messages rewritten in flight (see `FaultKind::Corrupt`
//! and `FaultKind::Hostile`). The plan says how often; the rewrite itself
//! is drawn from the run's generator like every other run-time choice.
//!
//! Within what Raft tolerates (safety must hold): a stale copy of an earlier
//! message on the same link is replayed, an AppendEntries loses the tail of
//! its entry list (a follower then commits no further than the last entry
//! it received), a commit index is lowered, a successful append response
//! acknowledges less. Beyond any valid range (no node may panic; safety is
//! not asked of a node fed forged data): indexes past every log, terms at
//! `u64::MAX`, entry lists that repeat or skip indexes, entries that rewrite
//! committed ones, snapshot chunks that disagree with their metadata.

use crate::world::World;
use bytes::Bytes;
use raft_core::{LogIndex, Message, MessageBody, NodeId, Term};
use std::collections::VecDeque;

/// Earlier messages kept per link for stale replays.
const REPLAY_DEPTH: usize = 16;

impl World {
    /// What leaves instead of `m`: `m` itself, rewritten, and maybe a
    /// stale copy of an earlier message on the same link.
    pub(crate) fn corrupt(&mut self, mut m: Message) -> Vec<Message> {
        if self.plan.healed || (self.plan.corrupt_ppm == 0 && self.plan.hostile_ppm == 0) {
            return vec![m];
        }
        let mut out = Vec::with_capacity(2);
        if self.plan.corrupt_ppm > 0 {
            let recent = self.recent.entry((m.from, m.to)).or_default();
            let stale = self.rng.chance_ppm(self.plan.corrupt_ppm) && !recent.is_empty();
            let replay =
                stale.then(|| recent[self.rng.range(0, recent.len() as u64 - 1) as usize].clone());
            let recent = self.recent.entry((m.from, m.to)).or_default();
            recent.push_back(m.clone());
            if recent.len() > REPLAY_DEPTH {
                recent.pop_front();
            }
            out.extend(replay);
            if self.rng.chance_ppm(self.plan.corrupt_ppm) {
                self.rewrite_tolerated(&mut m);
            }
        }
        if self.plan.hostile_ppm > 0 && self.rng.chance_ppm(self.plan.hostile_ppm) {
            self.rewrite_hostile(&mut m);
            self.hostile_sent += 1;
        }
        out.push(m);
        out
    }

    /// A rewrite an honest cluster must survive with every property intact.
    fn rewrite_tolerated(&mut self, m: &mut Message) {
        match &mut m.body {
            MessageBody::AppendEntries {
                entries,
                leader_commit,
                ..
            } => {
                if !entries.is_empty() && self.rng.coin() {
                    let keep = self.rng.range(0, entries.len() as u64 - 1) as usize;
                    entries.truncate(keep);
                } else {
                    *leader_commit = LogIndex(self.rng.range(0, leader_commit.0));
                }
            }
            MessageBody::Heartbeat { commit, .. } => {
                *commit = LogIndex(self.rng.range(0, commit.0));
            }
            MessageBody::AppendEntriesResponse {
                success: true,
                match_index,
                ..
            } => {
                *match_index = LogIndex(self.rng.range(0, match_index.0));
            }
            _ => {}
        }
    }

    /// A rewrite no honest node would send: the check is that no node panics.
    fn rewrite_hostile(&mut self, m: &mut Message) {
        let huge = |rng: &mut crate::rng::SimRng, near: u64| -> u64 {
            match rng.range(0, 2) {
                0 => u64::MAX,
                1 => u64::MAX - rng.range(0, 2),
                _ => near.saturating_add(rng.range(1, 1_000)),
            }
        };
        if self.rng.range(0, 5) == 0 {
            m.term = Term(huge(&mut self.rng, m.term.0));
            return;
        }
        match &mut m.body {
            MessageBody::AppendEntries {
                prev_log_index,
                prev_log_term,
                entries,
                leader_commit,
            } => match self.rng.range(0, 4) {
                0 => *leader_commit = LogIndex(huge(&mut self.rng, leader_commit.0)),
                1 => *prev_log_index = LogIndex(huge(&mut self.rng, prev_log_index.0)),
                2 if !entries.is_empty() => {
                    // Repeat or skip an index, then claim a high commit.
                    let k = self.rng.range(0, entries.len() as u64 - 1) as usize;
                    let mut extra = entries[k].clone();
                    extra.index = LogIndex(extra.index.0 + self.rng.range(0, 3));
                    entries.push(extra);
                    *leader_commit = LogIndex(leader_commit.0.saturating_add(10));
                }
                3 if !entries.is_empty() => {
                    // Entries from the start of the log with another term.
                    let shift = self.rng.range(1, entries[0].index.0.max(1));
                    for e in entries.iter_mut() {
                        e.index = LogIndex(e.index.0.saturating_sub(shift).max(1));
                        e.term = Term(e.term.0 + 1);
                    }
                    *prev_log_index = LogIndex(entries[0].index.0.saturating_sub(1));
                    *prev_log_term = Term(prev_log_term.0.saturating_sub(1));
                }
                _ => *prev_log_term = Term(huge(&mut self.rng, prev_log_term.0)),
            },
            MessageBody::AppendEntriesResponse {
                match_index,
                reject_index,
                conflict_index,
                ..
            } => match self.rng.range(0, 2) {
                0 => *match_index = LogIndex(huge(&mut self.rng, match_index.0)),
                1 => *reject_index = LogIndex(huge(&mut self.rng, reject_index.0)),
                _ => *conflict_index = LogIndex(huge(&mut self.rng, conflict_index.0)),
            },
            MessageBody::Heartbeat { commit, .. } => {
                *commit = LogIndex(huge(&mut self.rng, commit.0));
            }
            MessageBody::InstallSnapshot {
                meta,
                offset,
                total_bytes,
                data,
                ..
            } => match self.rng.range(0, 2) {
                0 => *data = Bytes::from(vec![0xA5; data.len().max(1)]),
                1 => *offset = huge(&mut self.rng, *total_bytes),
                _ => meta.index = LogIndex(huge(&mut self.rng, meta.index.0)),
            },
            MessageBody::InstallSnapshotResponse {
                snapshot_index,
                received,
                ..
            } => {
                if self.rng.coin() {
                    *snapshot_index = LogIndex(huge(&mut self.rng, snapshot_index.0));
                } else {
                    *received = huge(&mut self.rng, *received);
                }
            }
            MessageBody::RequestVote {
                last_log_index,
                last_log_term,
                ..
            } => {
                *last_log_index = LogIndex(huge(&mut self.rng, last_log_index.0));
                *last_log_term = Term(huge(&mut self.rng, last_log_term.0));
            }
            _ => m.term = Term(u64::MAX),
        }
    }
}

/// Per link, the last messages sent on it (for stale replays).
pub(crate) type Recent = std::collections::BTreeMap<(NodeId, NodeId), VecDeque<Message>>;
