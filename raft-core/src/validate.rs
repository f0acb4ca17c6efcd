//! The door of `step`: every peer message is checked before any of it is
//! read, and one that no honest node could have sent is refused with a typed
//! [`StepError`] and dropped. Behind the door the handlers may rely on what
//! is checked here; their `assert!`s then guard only states our own code
//! produced.
//!
//! Rules that compare the message with our own state (our log, our rounds)
//! apply only to messages of our term or newer: a stale message may
//! legitimately disagree with what happened since, and the term rules drop
//! it anyway.

use crate::input::StepError;
use crate::message::{Message, MessageBody};
use crate::node::Node;
use crate::types::{Entry, EntryKind, LogIndex, Term};

/// The largest term a peer may send. Far above anything an honest cluster
/// reaches, and far enough below `u64::MAX` that adopting it and then
/// campaigning (and pre-voting one term further) cannot overflow.
pub const MAX_PEER_TERM: Term = Term(u64::MAX / 4);
/// The largest log index a peer may name, with the same margin.
pub const MAX_PEER_INDEX: LogIndex = LogIndex(u64::MAX / 4);

impl Node {
    /// Checks a peer message against every rule; see the module comment.
    pub(crate) fn validate(&self, m: &Message) -> Result<(), StepError> {
        if m.from == self.config.id {
            return Err(StepError::FromSelf { from: m.from });
        }
        check_term(m.term)?;
        let current = m.term >= self.term;
        let leading_this_term = self.role == crate::Role::Leader && m.term == self.term;
        match &m.body {
            MessageBody::RequestVote {
                last_log_index,
                last_log_term,
                ..
            } => {
                check_index(*last_log_index)?;
                check_log_term(*last_log_term, m.term)
            }
            MessageBody::RequestVoteResponse { .. } | MessageBody::TimeoutNow => Ok(()),
            // A commit notice is a fact valid in every term; the receiver
            // checks its own entry's term at `index` before using it.
            MessageBody::CommitNotice { index, log_term } => {
                check_index(*index)?;
                check_log_term(*log_term, m.term)
            }
            MessageBody::AppendEntries {
                prev_log_index,
                prev_log_term,
                entries,
                leader_commit,
            } => {
                check_index(*prev_log_index)?;
                check_index(*leader_commit)?;
                check_log_term(*prev_log_term, m.term)?;
                check_entries(*prev_log_index, *prev_log_term, m.term, entries)?;
                if current {
                    self.check_against_committed(*prev_log_index, *prev_log_term)?;
                    for e in entries {
                        self.check_against_committed(e.index, e.term)?;
                    }
                }
                Ok(())
            }
            MessageBody::AppendEntriesResponse {
                match_index,
                conflict_index,
                reject_index,
                ..
            } => {
                for index in [*match_index, *conflict_index, *reject_index] {
                    check_index(index)?;
                }
                if leading_this_term {
                    // An honest follower answers appends we sent: every
                    // index it names is within our log (its log end + 1 at
                    // most, for the conflict hint).
                    let last = self.log.last_index();
                    let beyond = |index: LogIndex, limit: LogIndex| {
                        (index > limit).then_some(StepError::AckBeyondLastIndex {
                            from: m.from,
                            index,
                            last,
                        })
                    };
                    if let Some(err) = beyond(*match_index, last)
                        .or_else(|| beyond(*reject_index, last))
                        .or_else(|| beyond(*conflict_index, last.next()))
                    {
                        return Err(err);
                    }
                }
                Ok(())
            }
            MessageBody::Heartbeat { commit, .. } => check_index(*commit),
            MessageBody::HeartbeatResponse { read_round } => {
                let sent = self.reads.current_round();
                if leading_this_term && *read_round > sent {
                    return Err(StepError::ReadRoundAhead {
                        from: m.from,
                        round: *read_round,
                        sent,
                    });
                }
                Ok(())
            }
            MessageBody::InstallSnapshot {
                meta,
                offset,
                len,
                total_bytes,
                data,
            } => {
                check_index(meta.index)?;
                check_log_term(meta.term, m.term)?;
                if offset
                    .checked_add(*len)
                    .is_none_or(|end| end > *total_bytes)
                {
                    return Err(StepError::SnapshotChunkOutOfRange {
                        offset: *offset,
                        len: *len,
                        total_bytes: *total_bytes,
                    });
                }
                let carried = data.len() as u64;
                if carried != *len {
                    return Err(StepError::SnapshotChunkLength { len: *len, carried });
                }
                if meta.membership.voters.is_empty() {
                    return Err(StepError::SnapshotWithoutVoters { index: meta.index });
                }
                if current {
                    self.check_against_committed(meta.index, meta.term)?;
                }
                Ok(())
            }
            MessageBody::InstallSnapshotResponse {
                snapshot_index,
                received,
                last_index,
            } => {
                check_index(*snapshot_index)?;
                if let Some(last_index) = last_index {
                    check_index(*last_index)?;
                }
                if leading_this_term {
                    let last = self.log.last_index();
                    if let Some(index) = last_index.filter(|&i| i > last) {
                        return Err(StepError::AckBeyondLastIndex {
                            from: m.from,
                            index,
                            last,
                        });
                    }
                    if *snapshot_index == self.snapshot_meta.index
                        && *received > self.snapshot_bytes
                    {
                        return Err(StepError::SnapshotReceivedBeyondTotal {
                            from: m.from,
                            received: *received,
                            total_bytes: self.snapshot_bytes,
                        });
                    }
                }
                Ok(())
            }
            // A peer forwards only client commands: no-ops and membership
            // changes are the leader's own, validated and one at a time.
            MessageBody::Propose { entries } => {
                match entries.iter().find(|e| e.kind != EntryKind::Normal) {
                    Some(e) => Err(StepError::ForwardedKindNotAllowed { kind: e.kind }),
                    None => Ok(()),
                }
            }
            MessageBody::ReadIndex { .. } => Ok(()),
            MessageBody::ReadIndexResponse { index, .. } => match index {
                Some(index) => check_index(*index),
                None => Ok(()),
            },
        }
    }

    /// An entry at or below our commit index is committed: every leader of
    /// this term or later holds it (Leader Completeness), so a message that
    /// names another term there cannot be honest. Compacted indexes are
    /// committed too but their terms are gone; they are skipped.
    fn check_against_committed(&self, index: LogIndex, term: Term) -> Result<(), StepError> {
        if index > self.log.committed {
            return Ok(());
        }
        match self.log.term(index) {
            Some(committed) if committed != term => Err(StepError::ConflictsWithCommitted {
                index,
                term,
                committed,
            }),
            _ => Ok(()),
        }
    }
}

fn check_term(term: Term) -> Result<(), StepError> {
    if term > MAX_PEER_TERM {
        return Err(StepError::TermOutOfRange {
            term,
            limit: MAX_PEER_TERM,
        });
    }
    Ok(())
}

fn check_index(index: LogIndex) -> Result<(), StepError> {
    if index > MAX_PEER_INDEX {
        return Err(StepError::IndexOutOfRange {
            index,
            limit: MAX_PEER_INDEX,
        });
    }
    Ok(())
}

/// A term found in a log cannot be newer than the term of its sender.
fn check_log_term(log_term: Term, message_term: Term) -> Result<(), StepError> {
    if log_term > message_term {
        return Err(StepError::LogTermAboveMessageTerm {
            log_term,
            message_term,
        });
    }
    Ok(())
}

/// Entries follow `prev_log_index` one by one, with terms that never go
/// down (from `prev_log_term` on) and never exceed the sender's term.
fn check_entries(
    prev_log_index: LogIndex,
    prev_log_term: Term,
    message_term: Term,
    entries: &[Entry],
) -> Result<(), StepError> {
    let mut expected = prev_log_index;
    let mut previous = prev_log_term;
    for (position, e) in entries.iter().enumerate() {
        // Bounded by MAX_PEER_INDEX below, so this cannot overflow.
        expected = expected.next();
        if e.index != expected {
            return Err(StepError::EntriesNotContiguous {
                position,
                expected,
                found: e.index,
            });
        }
        check_index(e.index)?;
        check_log_term(e.term, message_term)?;
        if e.term < previous {
            return Err(StepError::EntryTermsDecrease {
                index: e.index,
                term: e.term,
                previous,
            });
        }
        previous = e.term;
    }
    Ok(())
}
