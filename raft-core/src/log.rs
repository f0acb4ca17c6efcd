//! The in-memory Raft log: the entries after the last snapshot, and the
//! cursors that say what has been handed out to persist, what is durable,
//! what is committed and what has been handed out to apply.
//!
//! Invariants (checked by `assert_invariants` in debug builds):
//! `snapshot_index <= applied <= handed_out <= committed <= last_index()`,
//! `handed_out <= persisted`, and `persisted < persist_from`.

use crate::entries::{Entries, RemovedEntries};
use crate::types::{Entry, LogIndex, Term};

#[derive(Debug)]
pub(crate) struct RaftLog {
    /// The last index covered by the snapshot; entries up to it are gone.
    snapshot_index: LogIndex,
    snapshot_term: Term,
    /// `entries[i]` has index `snapshot_index + 1 + i`.
    entries: Entries,
    /// The highest index known to be committed (Raft paper: commitIndex).
    pub committed: LogIndex,
    /// The highest index handed to the driver to apply.
    pub handed_out: LogIndex,
    /// The highest index the driver reports applied (Raft paper: lastApplied).
    pub applied: LogIndex,
    /// Entries from here on have not yet been handed to the driver to persist.
    persist_from: LogIndex,
    /// Every entry up to here is durable on this node and agrees with `entries`.
    pub persisted: LogIndex,
    /// The entries the last compaction (or snapshot install) removed, not
    /// yet dropped: freeing hundreds of thousands of entries takes the
    /// thread that does it a tenth of a second, so the driver may take
    /// them ([`crate::Node::take_compacted_entries`]) and free them off
    /// its thread. Replaced (and so dropped here) by the next compaction.
    compacted: RemovedEntries,
}

impl RaftLog {
    /// A log that starts after a snapshot at (`index`, `term`); `entries` must
    /// follow it contiguously and are taken to be durable already.
    pub fn restore(index: LogIndex, term: Term, entries: Vec<Entry>) -> Result<RaftLog, String> {
        for (offset, entry) in entries.iter().enumerate() {
            let expected = index.plus(offset as u64 + 1);
            if entry.index != expected {
                return Err(format!(
                    "entry {} found where {expected} was expected",
                    entry.index
                ));
            }
        }
        let last = index.plus(entries.len() as u64);
        Ok(RaftLog {
            snapshot_index: index,
            snapshot_term: term,
            entries: entries.into(),
            committed: index,
            handed_out: index,
            applied: index,
            persist_from: last.next(),
            persisted: last,
            compacted: RemovedEntries::default(),
        })
    }

    /// The entries the last compaction removed, to be freed by the caller.
    pub fn take_compacted(&mut self) -> RemovedEntries {
        std::mem::take(&mut self.compacted)
    }

    pub fn snapshot_index(&self) -> LogIndex {
        self.snapshot_index
    }

    pub fn first_index(&self) -> LogIndex {
        self.snapshot_index.next()
    }

    pub fn last_index(&self) -> LogIndex {
        self.snapshot_index.plus(self.entries.len() as u64)
    }

    pub fn last_term(&self) -> Term {
        self.entries.back().map_or(self.snapshot_term, |e| e.term)
    }

    /// The term of the entry at `index`, or None if it is compacted away or
    /// beyond the end. Index 0 has term 0.
    pub fn term(&self, index: LogIndex) -> Option<Term> {
        if index == self.snapshot_index {
            return Some(self.snapshot_term);
        }
        self.entry(index).map(|e| e.term)
    }

    pub fn entry(&self, index: LogIndex) -> Option<&Entry> {
        if index <= self.snapshot_index {
            return None;
        }
        self.entries
            .get((index.0 - self.snapshot_index.0 - 1) as usize)
    }

    pub fn matches(&self, index: LogIndex, term: Term) -> bool {
        self.term(index) == Some(term)
    }

    /// Raft paper, section 5.4.1: a candidate's log is at least as up to date
    /// as ours if its last term is higher, or equal with an index as high.
    pub fn is_up_to_date(&self, last_index: LogIndex, last_term: Term) -> bool {
        (last_term, last_index) >= (self.last_term(), self.last_index())
    }

    /// Entries from `from` on, at least one (if any) and at most `max_bytes`.
    pub fn slice(&self, from: LogIndex, max_bytes: usize) -> Vec<Entry> {
        assert!(
            from > self.snapshot_index,
            "slice from {from} reaches into the snapshot at {}",
            self.snapshot_index
        );
        let mut out = Vec::new();
        let mut bytes = 0;
        let start = (from.0 - self.snapshot_index.0 - 1) as usize;
        for entry in self.entries.iter_from(start) {
            bytes += entry.size_bytes();
            if !out.is_empty() && bytes > max_bytes {
                break;
            }
            out.push(entry.clone());
        }
        out
    }

    /// Appends entries that follow the last index (a leader's own proposals).
    pub fn append(&mut self, entry: Entry) {
        assert_eq!(
            entry.index,
            self.last_index().next(),
            "append of {} does not follow last index {}",
            entry.index,
            self.last_index()
        );
        assert!(
            entry.term >= self.last_term(),
            "append of term {} after term {}",
            entry.term,
            self.last_term()
        );
        self.entries.push_back(entry);
    }

    /// The first index in `entries` whose term disagrees with ours, if any.
    /// Entries at or below the snapshot are committed and agree by definition.
    pub fn find_conflict(&self, entries: &[Entry]) -> Option<LogIndex> {
        entries
            .iter()
            .find(|e| e.index > self.snapshot_index && !self.matches(e.index, e.term))
            .map(|e| e.index)
    }

    /// Follower side of AppendEntries after the consistency check passed:
    /// drops our suffix from the first conflict and appends the rest.
    pub fn merge(&mut self, entries: &[Entry]) {
        let Some(conflict) = self.find_conflict(entries) else {
            return;
        };
        assert!(
            conflict > self.committed,
            "conflict at {conflict} would overwrite committed entries up to {}",
            self.committed
        );
        if conflict <= self.last_index() {
            self.truncate_from(conflict);
        }
        let skip = (conflict.0 - entries[0].index.0) as usize;
        for entry in &entries[skip..] {
            self.entries.push_back(entry.clone());
        }
    }

    fn truncate_from(&mut self, index: LogIndex) {
        let keep = (index.0 - self.snapshot_index.0 - 1) as usize;
        self.entries.truncate(keep);
        self.persist_from = self.persist_from.min(index);
        self.persisted = self.persisted.min(index.prev());
    }

    /// The first index with the term of the entry at `index` (for the
    /// ConflictIndex hint), searching back no further than the snapshot.
    pub fn first_index_of_term_at(&self, index: LogIndex) -> LogIndex {
        let term = self.term(index);
        let mut first = index;
        while first.prev() > self.snapshot_index && self.term(first.prev()) == term {
            first = first.prev();
        }
        first
    }

    /// The last index holding `term`, if the log has any entry of it.
    pub fn last_index_of_term(&self, term: Term) -> Option<LogIndex> {
        self.entries
            .iter_from(0)
            .rev()
            .skip_while(|e| e.term > term)
            .find(|e| e.term == term)
            .map(|e| e.index)
    }

    pub fn commit_to(&mut self, index: LogIndex) -> bool {
        if index <= self.committed {
            return false;
        }
        assert!(
            index <= self.last_index(),
            "commit {index} beyond last index {}",
            self.last_index()
        );
        self.committed = index;
        true
    }

    /// Entries to persist that were not handed out yet; marks them handed out.
    pub fn take_unpersisted(&mut self) -> Vec<Entry> {
        if self.persist_from > self.last_index() {
            return Vec::new();
        }
        let start = (self.persist_from.0 - self.snapshot_index.0 - 1) as usize;
        let out: Vec<Entry> = self.entries.iter_from(start).cloned().collect();
        self.persist_from = self.last_index().next();
        out
    }

    pub fn has_unpersisted(&self) -> bool {
        self.persist_from <= self.last_index()
    }

    /// The driver reports everything up to (`index`, `term`) durable.
    pub fn persisted_to(&mut self, index: LogIndex, term: Term) {
        // A later truncation may have replaced what that write contained;
        // then a later acknowledgement will cover the replacement.
        if index > self.persisted && index < self.persist_from && self.matches(index, term) {
            self.persisted = index;
        }
    }

    /// The upper bound of what may be applied: committed and durable here.
    fn applicable(&self) -> LogIndex {
        self.committed.min(self.persisted)
    }

    pub fn has_committed_to_hand_out(&self) -> bool {
        self.applicable() > self.handed_out
    }

    /// Committed entries not handed out yet, up to `max_bytes` (at least one).
    pub fn take_committed(&mut self, max_bytes: usize) -> Vec<Entry> {
        let upto = self.applicable();
        if upto <= self.handed_out {
            return Vec::new();
        }
        let mut out = Vec::new();
        let mut bytes = 0;
        let mut index = self.handed_out.next();
        while index <= upto {
            let entry = self.entry(index).expect("committed entry is in the log");
            bytes += entry.size_bytes();
            if !out.is_empty() && bytes > max_bytes {
                break;
            }
            out.push(entry.clone());
            index = index.next();
        }
        self.handed_out = out.last().map_or(self.handed_out, |e| e.index);
        out
    }

    /// Drops entries up to `index`, which a snapshot now covers.
    pub fn compact(&mut self, index: LogIndex) {
        if index <= self.snapshot_index {
            return;
        }
        assert!(
            index <= self.applied,
            "compaction to {index} beyond applied {}",
            self.applied
        );
        let term = self.term(index).expect("compaction point is in the log");
        let drop = (index.0 - self.snapshot_index.0) as usize;
        // Whole chunks are moved out; the removed entries are not touched.
        self.compacted = self.entries.remove_front(drop);
        self.snapshot_index = index;
        self.snapshot_term = term;
    }

    /// Replaces the whole log with a snapshot received from the leader.
    pub fn restore_snapshot(&mut self, index: LogIndex, term: Term) {
        assert!(
            index > self.committed,
            "snapshot at {index} does not advance commit {}",
            self.committed
        );
        self.compacted = self.entries.take_all();
        self.snapshot_index = index;
        self.snapshot_term = term;
        self.committed = index;
        self.handed_out = index;
        self.applied = index;
        self.persist_from = index.next();
        self.persisted = index;
    }

    pub fn assert_invariants(&self) {
        debug_assert!(self.snapshot_index <= self.applied, "{self:?}");
        debug_assert!(self.applied <= self.handed_out, "{self:?}");
        debug_assert!(self.handed_out <= self.committed, "{self:?}");
        debug_assert!(self.committed <= self.last_index(), "{self:?}");
        debug_assert!(self.handed_out <= self.persisted, "{self:?}");
        debug_assert!(self.persisted < self.persist_from, "{self:?}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::EntryKind;
    use bytes::Bytes;

    fn entry(index: u64, term: u64) -> Entry {
        Entry {
            index: LogIndex(index),
            term: Term(term),
            kind: EntryKind::Normal,
            data: Bytes::new(),
        }
    }

    fn log_with_terms(terms: &[u64]) -> RaftLog {
        let entries = terms
            .iter()
            .enumerate()
            .map(|(i, &t)| entry(i as u64 + 1, t))
            .collect();
        RaftLog::restore(LogIndex(0), Term(0), entries).unwrap()
    }

    #[test]
    fn merge_truncates_from_the_first_conflict_and_appends_the_rest() {
        let mut log = log_with_terms(&[1, 1, 2, 2]);
        log.merge(&[entry(3, 2), entry(4, 3), entry(5, 3)]);
        let terms: Vec<u64> = (1..=5).map(|i| log.term(LogIndex(i)).unwrap().0).collect();
        assert_eq!(terms, vec![1, 1, 2, 3, 3]);
        assert_eq!(
            log.persisted,
            LogIndex(3),
            "truncation lowers the durable mark"
        );
        assert_eq!(log.take_unpersisted().len(), 2);
    }

    #[test]
    fn merge_of_entries_we_already_hold_changes_nothing() {
        let mut log = log_with_terms(&[1, 1, 2]);
        log.merge(&[entry(1, 1), entry(2, 1)]);
        assert_eq!(
            log.last_index(),
            LogIndex(3),
            "a stale append must not truncate"
        );
        assert!(!log.has_unpersisted());
    }

    #[test]
    #[should_panic(expected = "would overwrite committed")]
    fn merge_never_overwrites_a_committed_entry() {
        let mut log = log_with_terms(&[1, 1, 2]);
        log.commit_to(LogIndex(3));
        log.merge(&[entry(3, 3)]);
    }

    #[test]
    fn conflict_hint_points_at_the_first_index_of_the_conflicting_term() {
        let log = log_with_terms(&[1, 2, 2, 2, 3]);
        assert_eq!(log.first_index_of_term_at(LogIndex(4)), LogIndex(2));
        assert_eq!(log.last_index_of_term(Term(2)), Some(LogIndex(4)));
        assert_eq!(log.last_index_of_term(Term(4)), None);
    }

    #[test]
    fn committed_entries_are_handed_out_once_and_never_beyond_what_is_durable() {
        let mut log = log_with_terms(&[1, 1]);
        log.append(entry(3, 1));
        log.commit_to(LogIndex(3));
        assert_eq!(
            log.take_committed(usize::MAX).len(),
            2,
            "entry 3 is not durable yet"
        );
        assert!(log.take_committed(usize::MAX).is_empty());
        log.take_unpersisted();
        log.persisted_to(LogIndex(3), Term(1));
        let rest = log.take_committed(usize::MAX);
        assert_eq!(rest.len(), 1);
        assert_eq!(rest[0].index, LogIndex(3));
    }

    #[test]
    fn compaction_keeps_the_term_of_the_snapshot_point() {
        let mut log = log_with_terms(&[1, 2, 3]);
        log.commit_to(LogIndex(3));
        log.take_committed(usize::MAX);
        log.applied = LogIndex(2);
        log.compact(LogIndex(2));
        assert_eq!(log.term(LogIndex(2)), Some(Term(2)));
        assert_eq!(log.term(LogIndex(1)), None);
        assert_eq!(log.first_index(), LogIndex(3));
        assert_eq!(log.last_index(), LogIndex(3));
    }

    #[test]
    fn up_to_date_compares_last_term_then_last_index() {
        let log = log_with_terms(&[1, 2, 2]);
        assert!(log.is_up_to_date(LogIndex(1), Term(3)));
        assert!(log.is_up_to_date(LogIndex(3), Term(2)));
        assert!(!log.is_up_to_date(LogIndex(2), Term(2)));
        assert!(!log.is_up_to_date(LogIndex(9), Term(1)));
    }
}
