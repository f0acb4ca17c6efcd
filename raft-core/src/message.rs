//! Messages between nodes. Every message carries the sender's term; the term
//! rules in `node.rs` look at nothing else before dispatching by role.

use crate::types::{Entry, LogIndex, NodeId, SnapshotMeta, Term};
use bytes::Bytes;
use serde::{Deserialize, Serialize};

/// A message from one node to another.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    pub from: NodeId,
    pub to: NodeId,
    /// The sender's current term (for a pre-vote request: the term it would
    /// campaign in).
    pub term: Term,
    pub body: MessageBody,
}

/// The body of a message, by RPC.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum MessageBody {
    /// RequestVote (Raft paper, Figure 2); with `pre_vote` a probe that
    /// changes no state on the receiver (Raft thesis, section 9.6).
    RequestVote {
        pre_vote: bool,
        last_log_index: LogIndex,
        last_log_term: Term,
        /// Set when the leader asked the candidate to campaign
        /// (leadership transfer): receivers skip the leader-lease check.
        transfer: bool,
    },
    RequestVoteResponse {
        pre_vote: bool,
        granted: bool,
    },
    /// AppendEntries: `entries` follow the entry at `prev_log_index`, which
    /// must have `prev_log_term` on the receiver.
    AppendEntries {
        prev_log_index: LogIndex,
        prev_log_term: Term,
        entries: Vec<Entry>,
        leader_commit: LogIndex,
    },
    /// The answer to AppendEntries. On success `match_index` is the last index
    /// the follower now holds durably in agreement with the leader. On
    /// rejection the conflict hint lets the leader back up in one step:
    /// `conflict_term` is the follower's term at `prev_log_index` (None if its
    /// log is shorter) and `conflict_index` is the first index the follower
    /// holds with that term (or its last index + 1 if its log is shorter).
    AppendEntriesResponse {
        success: bool,
        match_index: LogIndex,
        conflict_index: LogIndex,
        conflict_term: Option<Term>,
        /// The `prev_log_index` of the request this answers (for stale detection).
        reject_index: LogIndex,
    },
    /// A leader's periodic proof of life. `read_round` identifies the
    /// heartbeat round so that read-index requests can be confirmed in batches.
    Heartbeat {
        commit: LogIndex,
        read_round: u64,
    },
    HeartbeatResponse {
        read_round: u64,
    },
    /// One chunk of the leader's snapshot, for a follower that needs
    /// compacted entries: bytes `offset..offset + len` of `total_bytes`.
    /// The core leaves `data` empty; the driver fills it from the snapshot
    /// file on the way out, so the state is never held twice in memory.
    InstallSnapshot {
        meta: SnapshotMeta,
        offset: u64,
        len: u64,
        total_bytes: u64,
        data: Bytes,
    },
    /// Answers a snapshot chunk. With `last_index` the follower's log now
    /// ends at that index (installed, or not needed); otherwise the follower
    /// has staged `received` bytes of the snapshot at `snapshot_index` and
    /// wants the rest from there (a transfer resumes, it does not restart).
    InstallSnapshotResponse {
        snapshot_index: LogIndex,
        received: u64,
        last_index: Option<LogIndex>,
    },
    /// Tells a caught-up follower to campaign at once (leadership transfer).
    TimeoutNow,
    /// A fact, valid in every term: the entry at `index` with term
    /// `log_term` is committed. A node outside the configuration it knows
    /// committed sends it to whoever still asks for its vote, so that the
    /// asker can leave the configuration that needs that vote
    /// (`removal.rs` holds the safety argument).
    CommitNotice {
        index: LogIndex,
        log_term: Term,
    },
    /// Proposals a follower forwards to the leader it knows.
    Propose {
        entries: Vec<ForwardedEntry>,
    },
    /// A read-index request a follower forwards to the leader.
    ReadIndex {
        context: u64,
        lease: bool,
    },
    /// The leader's answer to a forwarded read-index request: `index` is the
    /// read index, or None if the leader could not serve it.
    ReadIndexResponse {
        context: u64,
        index: Option<LogIndex>,
    },
}

/// A proposal on its way from a follower to the leader.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ForwardedEntry {
    pub kind: crate::EntryKind,
    pub data: Bytes,
}

impl MessageBody {
    /// Short name for traces and metrics.
    pub fn name(&self) -> &'static str {
        match self {
            MessageBody::RequestVote { pre_vote: true, .. } => "PreVote",
            MessageBody::RequestVote { .. } => "Vote",
            MessageBody::RequestVoteResponse { pre_vote: true, .. } => "PreVoteResp",
            MessageBody::RequestVoteResponse { .. } => "VoteResp",
            MessageBody::AppendEntries { .. } => "Append",
            MessageBody::AppendEntriesResponse { .. } => "AppendResp",
            MessageBody::Heartbeat { .. } => "Heartbeat",
            MessageBody::HeartbeatResponse { .. } => "HeartbeatResp",
            MessageBody::InstallSnapshot { .. } => "Snapshot",
            MessageBody::InstallSnapshotResponse { .. } => "SnapshotResp",
            MessageBody::TimeoutNow => "TimeoutNow",
            MessageBody::CommitNotice { .. } => "CommitNotice",
            MessageBody::Propose { .. } => "Propose",
            MessageBody::ReadIndex { .. } => "ReadIndex",
            MessageBody::ReadIndexResponse { .. } => "ReadIndexResp",
        }
    }
}

impl Message {
    /// One readable line, as used by trace snapshots:
    /// `n1->n2 Append{term:2 prev:(5,1) entries:6..8 commit:5}`.
    pub fn describe(&self) -> String {
        let (from, to, t) = (self.from, self.to, self.term);
        let detail = match &self.body {
            MessageBody::RequestVote {
                pre_vote,
                last_log_index,
                last_log_term,
                transfer,
            } => format!(
                "{}{{term:{t} last:({last_log_index},{last_log_term}){}}}",
                if *pre_vote { "PreVote" } else { "Vote" },
                if *transfer { " transfer" } else { "" }
            ),
            MessageBody::RequestVoteResponse { pre_vote, granted } => format!(
                "{}{{term:{t} granted:{granted}}}",
                if *pre_vote { "PreVoteResp" } else { "VoteResp" }
            ),
            MessageBody::AppendEntries {
                prev_log_index,
                prev_log_term,
                entries,
                leader_commit,
            } => {
                let range = match (entries.first(), entries.last()) {
                    (Some(a), Some(b)) => format!("{}..{}", a.index, b.index),
                    _ => "none".to_string(),
                };
                format!(
                    "Append{{term:{t} prev:({prev_log_index},{prev_log_term}) entries:{range} commit:{leader_commit}}}"
                )
            }
            MessageBody::AppendEntriesResponse {
                success: true,
                match_index,
                ..
            } => format!("AppendResp{{term:{t} ok match:{match_index}}}"),
            MessageBody::AppendEntriesResponse {
                conflict_index,
                conflict_term,
                reject_index,
                ..
            } => format!(
                "AppendResp{{term:{t} reject:{reject_index} hint:({conflict_index},{})}}",
                conflict_term.map_or("none".to_string(), |c| c.to_string())
            ),
            MessageBody::Heartbeat { commit, read_round } => {
                format!("Heartbeat{{term:{t} commit:{commit} round:{read_round}}}")
            }
            MessageBody::HeartbeatResponse { read_round } => {
                format!("HeartbeatResp{{term:{t} round:{read_round}}}")
            }
            MessageBody::InstallSnapshot {
                meta,
                offset,
                len,
                total_bytes,
                ..
            } => format!(
                "Snapshot{{term:{t} at:({},{}) bytes:{offset}+{len}/{total_bytes}}}",
                meta.index, meta.term
            ),
            MessageBody::InstallSnapshotResponse {
                snapshot_index,
                received,
                last_index,
            } => match last_index {
                Some(last) => format!("SnapshotResp{{term:{t} at:{snapshot_index} last:{last}}}"),
                None => format!("SnapshotResp{{term:{t} at:{snapshot_index} received:{received}}}"),
            },
            MessageBody::TimeoutNow => format!("TimeoutNow{{term:{t}}}"),
            MessageBody::CommitNotice { index, log_term } => {
                format!("CommitNotice{{term:{t} committed:({index},{log_term})}}")
            }
            MessageBody::Propose { entries } => {
                format!("Propose{{term:{t} entries:{}}}", entries.len())
            }
            MessageBody::ReadIndex { context, lease } => {
                format!("ReadIndex{{term:{t} ctx:{context} lease:{lease}}}")
            }
            MessageBody::ReadIndexResponse { context, index } => format!(
                "ReadIndexResp{{term:{t} ctx:{context} index:{}}}",
                index.map_or("none".to_string(), |i| i.to_string())
            ),
        };
        format!("{from}->{to} {detail}")
    }
}
