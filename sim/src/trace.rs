//! The run's trace: an FNV-1a hash over every event (the determinism
//! fingerprint), the last few events for violation reports, and optionally
//! every line printed as it happens.
//!
//! Messages are recorded as a small copyable summary and only formatted when
//! a line is printed, so tracing costs little per message.

use raft_core::{Message, MessageBody};
use std::collections::VecDeque;

/// How many recent events a violation report shows.
pub const TAIL_LINES: usize = 50;

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

/// A 64-bit FNV-1a hasher.
#[derive(Clone, Copy, Debug)]
pub struct Fnv(pub u64);

impl Default for Fnv {
    fn default() -> Self {
        Fnv(FNV_OFFSET)
    }
}

impl Fnv {
    pub fn bytes(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 ^= u64::from(b);
            self.0 = self.0.wrapping_mul(FNV_PRIME);
        }
    }

    /// One multiply per word: a fingerprint, not a portable FNV of bytes.
    pub fn u64(&mut self, value: u64) {
        self.0 ^= value;
        self.0 = self.0.wrapping_mul(FNV_PRIME);
    }

    pub fn str(&mut self, value: &str) {
        self.u64(value.len() as u64);
        self.bytes(value.as_bytes());
    }
}

/// The fields of a message that the trace keeps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MessageSummary {
    pub from: u64,
    pub to: u64,
    pub term: u64,
    pub name: &'static str,
    pub fields: [u64; 4],
}

impl MessageSummary {
    pub fn of(m: &Message) -> MessageSummary {
        let fields = match &m.body {
            MessageBody::RequestVote {
                last_log_index,
                last_log_term,
                ..
            } => [last_log_index.0, last_log_term.0, 0, 0],
            MessageBody::RequestVoteResponse { granted, .. } => [u64::from(*granted), 0, 0, 0],
            MessageBody::AppendEntries {
                prev_log_index,
                prev_log_term,
                entries,
                leader_commit,
            } => [
                prev_log_index.0,
                prev_log_term.0,
                entries.len() as u64,
                leader_commit.0,
            ],
            MessageBody::AppendEntriesResponse {
                success,
                match_index,
                conflict_index,
                reject_index,
                ..
            } => [
                u64::from(*success),
                match_index.0,
                conflict_index.0,
                reject_index.0,
            ],
            MessageBody::Heartbeat { commit, read_round } => [commit.0, *read_round, 0, 0],
            MessageBody::HeartbeatResponse { read_round } => [*read_round, 0, 0, 0],
            MessageBody::InstallSnapshot {
                meta, offset, len, ..
            } => [meta.index.0, meta.term.0, *offset, *len],
            MessageBody::InstallSnapshotResponse {
                snapshot_index,
                received,
                last_index,
            } => [
                snapshot_index.0,
                *received,
                last_index.map_or(0, |i| i.0 + 1),
                0,
            ],
            MessageBody::TimeoutNow => [0; 4],
            MessageBody::CommitNotice { index, log_term } => [index.0, log_term.0, 0, 0],
            MessageBody::Propose { entries } => [entries.len() as u64, 0, 0, 0],
            MessageBody::ReadIndex { context, .. } => [*context, 0, 0, 0],
            MessageBody::ReadIndexResponse { context, index } => {
                [*context, index.map_or(0, |i| i.0 + 1), 0, 0]
            }
        };
        MessageSummary {
            from: m.from.0,
            to: m.to.0,
            term: m.term.0,
            name: m.body.name(),
            fields,
        }
    }

    fn describe(&self) -> String {
        let [a, b, c, d] = self.fields;
        let detail = match self.name {
            "PreVote" | "Vote" => format!("last:({a},{b})"),
            "PreVoteResp" | "VoteResp" => format!("granted:{}", a == 1),
            "Append" if c == 0 => format!("prev:({a},{b}) entries:none commit:{d}"),
            "Append" => format!("prev:({a},{b}) entries:{}..{} commit:{d}", a + 1, a + c),
            "AppendResp" if a == 1 => format!("ok match:{b}"),
            "AppendResp" => format!("reject:{d} hint:{c}"),
            "Heartbeat" => format!("commit:{a} round:{b}"),
            "HeartbeatResp" => format!("round:{a}"),
            "Snapshot" => format!("at:({a},{b}) bytes:{c}+{d}"),
            "SnapshotResp" if c == 0 => format!("at:{a} received:{b}"),
            "SnapshotResp" => format!("at:{a} last:{}", c - 1),
            "Propose" => format!("entries:{a}"),
            "ReadIndex" => format!("ctx:{a}"),
            "ReadIndexResp" if b == 0 => format!("ctx:{a} index:none"),
            "ReadIndexResp" => format!("ctx:{a} index:{}", b - 1),
            _ => String::new(),
        };
        format!(
            "n{}->n{} {}{{term:{} {detail}}}",
            self.from, self.to, self.name, self.term
        )
    }
}

/// One traced event.
#[derive(Clone, Debug)]
pub enum TraceEvent {
    Deliver(MessageSummary),
    /// Dropped on arrival: the receiver was down or the link was cut.
    Drop(MessageSummary, &'static str),
    /// Anything else, already formatted (faults, client operations, roles).
    Note(String),
}

/// The trace of one run.
#[derive(Debug)]
pub struct Trace {
    hash: Fnv,
    tail: VecDeque<(u64, TraceEvent)>,
    print: bool,
    pub events: u64,
}

impl Trace {
    pub fn new(print: bool) -> Trace {
        Trace {
            hash: Fnv::default(),
            tail: VecDeque::with_capacity(TAIL_LINES + 1),
            print,
            events: 0,
        }
    }

    pub fn hash(&self) -> u64 {
        self.hash.0
    }

    pub fn record(&mut self, step: u64, event: TraceEvent) {
        self.events += 1;
        self.hash.u64(step);
        match &event {
            TraceEvent::Deliver(s) | TraceEvent::Drop(s, _) => {
                self.hash.u64(s.from);
                self.hash.u64(s.to);
                self.hash.u64(s.term);
                self.hash.str(s.name);
                for f in s.fields {
                    self.hash.u64(f);
                }
                if let TraceEvent::Drop(_, why) = &event {
                    self.hash.str(why);
                }
            }
            TraceEvent::Note(text) => self.hash.str(text),
        }
        if self.print {
            println!("{}", format_line(step, &event));
        }
        if self.tail.len() == TAIL_LINES {
            self.tail.pop_front();
        }
        self.tail.push_back((step, event));
    }

    /// Records a note (a fault, a client operation, a role change).
    pub fn note(&mut self, step: u64, text: impl FnOnce() -> String) {
        self.record(step, TraceEvent::Note(text()));
    }

    /// The last events, formatted.
    pub fn tail_lines(&self) -> Vec<String> {
        self.tail
            .iter()
            .map(|(step, event)| format_line(*step, event))
            .collect()
    }
}

/// `t=12.05 n1->n2 Append{...}`: the tick, then the step within it.
pub fn format_line(step: u64, event: &TraceEvent) -> String {
    let tick = step / crate::faults::STEPS_PER_TICK;
    let sub = step % crate::faults::STEPS_PER_TICK;
    let body = match event {
        TraceEvent::Deliver(s) => s.describe(),
        TraceEvent::Drop(s, why) => format!("{} dropped ({why})", s.describe()),
        TraceEvent::Note(text) => text.clone(),
    };
    format!("t={tick}.{sub:02} {body}")
}
