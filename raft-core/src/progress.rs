//! What a leader knows about each follower's log (Raft paper: nextIndex and
//! matchIndex), and how fast it may send to it.

use crate::types::LogIndex;
use std::collections::VecDeque;

/// How the leader is currently sending to a follower.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ReplicationState {
    /// The leader does not know where the follower's log agrees with its own:
    /// one AppendEntries at a time until a reply arrives.
    Probe,
    /// The follower's log is known to match: stream entries optimistically,
    /// up to a window of in-flight messages.
    Replicate,
    /// The follower needs entries that are compacted: the snapshot at
    /// `index` is on its way, and the follower has acknowledged `offset`
    /// bytes of it. One chunk is in flight at a time (`probe_sent`).
    Snapshot { index: LogIndex, offset: u64 },
}

#[derive(Clone, Debug)]
pub(crate) struct Progress {
    /// The highest index known to be replicated on the follower.
    pub match_index: LogIndex,
    /// The index of the next entry to send. Invariant: `next_index > match_index`.
    pub next_index: LogIndex,
    pub state: ReplicationState,
    /// In probe state: an append is outstanding, wait for its reply or a heartbeat.
    pub probe_sent: bool,
    /// Last index of each AppendEntries in flight, oldest first.
    pub inflight: VecDeque<LogIndex>,
    /// Heard from since the last check-quorum round.
    pub recent_active: bool,
    /// Ticks spent in snapshot state, to resend a snapshot that was lost.
    pub snapshot_ticks: u32,
    /// The newest read round the follower acknowledged.
    pub read_round: u64,
}

impl Progress {
    pub fn new(next_index: LogIndex) -> Progress {
        Progress {
            match_index: LogIndex::ZERO,
            next_index,
            state: ReplicationState::Probe,
            probe_sent: false,
            inflight: VecDeque::new(),
            recent_active: false,
            snapshot_ticks: 0,
            read_round: 0,
        }
    }

    /// True if the leader must not send more appends to this follower now.
    pub fn is_paused(&self, max_inflight: usize) -> bool {
        match self.state {
            ReplicationState::Probe => self.probe_sent,
            ReplicationState::Replicate => self.inflight.len() >= max_inflight,
            ReplicationState::Snapshot { .. } => self.probe_sent,
        }
    }

    pub fn become_probe(&mut self) {
        let next = match self.state {
            // Resume after the snapshot, whichever is further.
            ReplicationState::Snapshot { index, .. } => index.max(self.match_index).next(),
            _ => self.match_index.next(),
        };
        self.state = ReplicationState::Probe;
        self.next_index = next;
        self.probe_sent = false;
        self.inflight.clear();
    }

    pub fn become_replicate(&mut self) {
        self.state = ReplicationState::Replicate;
        self.next_index = self.match_index.next();
        self.probe_sent = false;
        self.inflight.clear();
    }

    pub fn become_snapshot(&mut self, index: LogIndex) {
        self.state = ReplicationState::Snapshot { index, offset: 0 };
        self.snapshot_ticks = 0;
        self.probe_sent = false;
        self.inflight.clear();
    }

    /// Records an AppendEntries whose last entry is `last` (None: no entries).
    pub fn sent_append(&mut self, last: Option<LogIndex>) {
        match self.state {
            ReplicationState::Replicate => {
                if let Some(last) = last {
                    self.next_index = last.next();
                    self.inflight.push_back(last);
                }
            }
            ReplicationState::Probe => self.probe_sent = true,
            ReplicationState::Snapshot { .. } => {
                unreachable!("appends are never sent in snapshot state")
            }
        }
    }

    /// A successful reply: the follower holds everything up to `index`.
    /// Returns false if the reply is stale (it tells us nothing new).
    pub fn update_match(&mut self, index: LogIndex) -> bool {
        let updated = index > self.match_index;
        if updated {
            self.match_index = index;
            self.probe_sent = false;
        }
        self.next_index = self.next_index.max(index.next());
        while self.inflight.front().is_some_and(|&last| last <= index) {
            self.inflight.pop_front();
        }
        updated
    }

    /// A rejection of the append whose previous index was `rejected`, with
    /// the follower's hint folded into `hint_next`. Returns false if stale.
    pub fn back_off(&mut self, rejected: LogIndex, hint_next: LogIndex) -> bool {
        match self.state {
            ReplicationState::Replicate => {
                if rejected <= self.match_index {
                    return false;
                }
                // Something was lost or the follower diverged: probe again.
                self.state = ReplicationState::Probe;
                self.inflight.clear();
                self.next_index = hint_next.max(self.match_index.next());
                self.probe_sent = false;
                true
            }
            ReplicationState::Probe => {
                if rejected != self.next_index.prev() {
                    return false;
                }
                // Never move forward on a rejection, never below match + 1.
                self.next_index = hint_next.min(rejected).max(self.match_index.next());
                self.probe_sent = false;
                true
            }
            ReplicationState::Snapshot { .. } => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_probing_follower_gets_one_append_at_a_time() {
        let mut p = Progress::new(LogIndex(5));
        assert!(!p.is_paused(4));
        p.sent_append(Some(LogIndex(7)));
        assert!(p.is_paused(4));
        assert_eq!(p.next_index, LogIndex(5), "probing does not advance next");
    }

    #[test]
    fn a_replicating_follower_pipelines_up_to_the_window() {
        let mut p = Progress::new(LogIndex(1));
        p.become_replicate();
        p.sent_append(Some(LogIndex(3)));
        p.sent_append(Some(LogIndex(6)));
        assert!(p.is_paused(2));
        assert_eq!(p.next_index, LogIndex(7));
        p.update_match(LogIndex(3));
        assert!(!p.is_paused(2), "the acknowledged message frees its slot");
    }

    #[test]
    fn a_rejection_backs_up_in_one_step_but_never_below_match() {
        let mut p = Progress::new(LogIndex(10));
        p.match_index = LogIndex(3);
        assert!(p.back_off(LogIndex(9), LogIndex(5)));
        assert_eq!(p.next_index, LogIndex(5));
        assert!(
            !p.back_off(LogIndex(9), LogIndex(2)),
            "stale rejection ignored"
        );
        assert!(p.back_off(LogIndex(4), LogIndex(1)));
        assert_eq!(p.next_index, LogIndex(4));
    }

    #[test]
    fn a_rejection_while_replicating_falls_back_to_probe() {
        let mut p = Progress::new(LogIndex(1));
        p.become_replicate();
        p.sent_append(Some(LogIndex(5)));
        assert!(p.back_off(LogIndex(5), LogIndex(3)));
        assert_eq!(p.state, ReplicationState::Probe);
        assert_eq!(p.next_index, LogIndex(3));
    }
}
