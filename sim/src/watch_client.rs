//! Watcher clients and their check.
//!
//! A watcher watches a key or a prefix on one node, through that node's
//! `kv_replica::watch::WatchHub` (the very hub kv-node serves watches
//! from), fed with what the node applies. It is cut off when its node
//! crashes, when the hub cuts it (a slow consumer, a snapshot installed
//! over revisions it had not read), and at random (a dropped connection);
//! it then resumes on some node with `from_revision` = the revision after
//! the last one it has seen in full. A `compacted` answer is legal (that
//! node no longer has those revisions): the watcher then resumes from the
//! compact revision the answer names, and claims nothing about the
//! revisions in between.
//!
//! The check: each session (one watch, from its first revision to the last
//! revision it saw in full) received exactly the committed events of its
//! key or prefix in that range, in revision order, and consecutive
//! sessions continue each other (next start = last seen + 1) unless a
//! `compacted` answer came in between. So across reconnects there is no
//! gap and no duplicate. The committed events come from [`Reference`]:
//! the events of every revision as the first node to apply it recorded
//! them (every committed revision is applied by some node before any
//! snapshot covers it).

use kv_replica::watch::{WatchEvent, WatchFilter, WatchId};
use std::collections::{BTreeMap, BTreeSet};

/// The committed events, per revision.
#[derive(Debug, Default)]
pub struct Reference {
    /// Events of each applied revision that changed keys.
    pub events: BTreeMap<u64, Vec<WatchEvent>>,
    /// Every revision some node applied entry by entry.
    pub applied: BTreeSet<u64>,
}

impl Reference {
    /// Records one applied revision and its events (the first node to
    /// apply it decides; the replicas agree, which other checks verify).
    pub fn record(&mut self, revision: u64, events: Vec<WatchEvent>) {
        if self.applied.insert(revision) && !events.is_empty() {
            self.events.insert(revision, events);
        }
    }

    /// The committed events matching `filter` in `[from, to]`, or the
    /// first revision in that range no node applied entry by entry.
    pub fn matching(
        &self,
        filter: &WatchFilter,
        from: u64,
        to: u64,
    ) -> Result<Vec<WatchEvent>, u64> {
        if from > to {
            return Ok(Vec::new());
        }
        let covered = self.applied.range(from..=to).count() as u64;
        if covered != to - from + 1 {
            let missing = (from..=to)
                .find(|r| !self.applied.contains(r))
                .expect("a revision is missing");
            return Err(missing);
        }
        Ok(self
            .events
            .range(from..=to)
            .flat_map(|(_, events)| events.iter())
            .filter(|e| filter.matches(&e.key))
            .cloned()
            .collect())
    }
}

/// One watch of a watcher, from its start to its cut-off.
#[derive(Clone, Debug)]
pub struct Session {
    pub node: u64,
    /// The first revision it covers.
    pub start: u64,
    /// The last revision it has seen in full (`start - 1` before any).
    pub seen_up_to: u64,
    pub events: Vec<WatchEvent>,
    /// It started after a `compacted` answer: it does not continue the
    /// session before it.
    pub after_compacted: bool,
}

/// A watcher's connection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Connection {
    pub node: u64,
    pub incarnation: u32,
    pub watch: WatchId,
}

#[derive(Clone, Debug)]
pub struct Watcher {
    pub name: String,
    pub filter: WatchFilter,
    pub connection: Option<Connection>,
    pub sessions: Vec<Session>,
    /// `compacted` answers received (legal; counted for the report).
    pub compacted: u64,
    /// Cut-offs by the hub (slow consumer, snapshot installed).
    pub cut_offs: u64,
}

impl Watcher {
    pub fn new(name: String, filter: WatchFilter) -> Watcher {
        Watcher {
            name,
            filter,
            connection: None,
            sessions: Vec::new(),
            compacted: 0,
            cut_offs: 0,
        }
    }

    /// The revision to resume from, if it watched before.
    pub fn resume_from(&self) -> Option<u64> {
        self.sessions.last().map(|s| s.seen_up_to + 1)
    }

    /// Checks every session against the committed events.
    pub fn check(&self, reference: &Reference) -> Result<(), String> {
        let mut previous: Option<&Session> = None;
        for (n, session) in self.sessions.iter().enumerate() {
            if let Some(previous) = previous {
                let continues = session.start == previous.seen_up_to + 1;
                let jumped = session.after_compacted && session.start > previous.seen_up_to;
                if !continues && !jumped {
                    return Err(format!(
                        "{} session {n} on n{} starts at revision {} after the previous one saw up to {}",
                        self.name, session.node, session.start, previous.seen_up_to
                    ));
                }
            }
            let expected = reference
                .matching(&self.filter, session.start, session.seen_up_to)
                .map_err(|missing| {
                    format!(
                        "{} session {n} on n{} saw up to revision {}, but no node applied revision {missing}",
                        self.name, session.node, session.seen_up_to
                    )
                })?;
            if expected != session.events {
                let first_difference = expected
                    .iter()
                    .zip(&session.events)
                    .position(|(a, b)| a != b)
                    .unwrap_or(expected.len().min(session.events.len()));
                let show = |events: &[WatchEvent]| {
                    let end = (first_difference + 3).min(events.len());
                    format!("{:?}", &events[first_difference.min(end)..end])
                };
                return Err(format!(
                    "{} ({:?}) session {n} on n{} over revisions {}..={}: event {first_difference} \
                     differs: expected {} (of {}), received {} (of {})",
                    self.name,
                    self.filter,
                    session.node,
                    session.start,
                    session.seen_up_to,
                    show(&expected),
                    expected.len(),
                    show(&session.events),
                    session.events.len(),
                ));
            }
            previous = Some(session);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reference() -> Reference {
        let mut r = Reference::default();
        r.record(1, vec![WatchEvent::put(1, "a", "1")]);
        r.record(2, vec![]);
        r.record(
            3,
            vec![WatchEvent::put(3, "a", "2"), WatchEvent::put(3, "b", "1")],
        );
        r.record(4, vec![WatchEvent::delete(4, "a")]);
        r
    }

    fn session(start: u64, seen_up_to: u64, events: Vec<WatchEvent>) -> Session {
        Session {
            node: 1,
            start,
            seen_up_to,
            events,
            after_compacted: false,
        }
    }

    fn watcher(sessions: Vec<Session>) -> Watcher {
        let mut w = Watcher::new("w1".into(), WatchFilter::Key("a".into()));
        w.sessions = sessions;
        w
    }

    #[test]
    fn exact_sessions_across_a_reconnect_pass() {
        let w = watcher(vec![
            session(1, 2, vec![WatchEvent::put(1, "a", "1")]),
            session(
                3,
                4,
                vec![WatchEvent::put(3, "a", "2"), WatchEvent::delete(4, "a")],
            ),
        ]);
        assert_eq!(w.check(&reference()), Ok(()));
    }

    #[test]
    fn a_skipped_event_on_reconnect_fails() {
        let w = watcher(vec![
            session(1, 2, vec![WatchEvent::put(1, "a", "1")]),
            session(3, 4, vec![WatchEvent::delete(4, "a")]),
        ]);
        assert!(w.check(&reference()).is_err());
    }

    #[test]
    fn a_duplicated_event_fails() {
        let w = watcher(vec![
            session(
                1,
                3,
                vec![WatchEvent::put(1, "a", "1"), WatchEvent::put(3, "a", "2")],
            ),
            session(
                4,
                4,
                vec![WatchEvent::put(3, "a", "2"), WatchEvent::delete(4, "a")],
            ),
        ]);
        assert!(w.check(&reference()).is_err());
    }

    #[test]
    fn a_gap_between_sessions_fails_unless_compacted() {
        let mut w = watcher(vec![
            session(1, 1, vec![WatchEvent::put(1, "a", "1")]),
            session(4, 4, vec![WatchEvent::delete(4, "a")]),
        ]);
        assert!(w.check(&reference()).is_err());
        w.sessions[1].after_compacted = true;
        assert_eq!(w.check(&reference()), Ok(()));
    }

    #[test]
    fn a_revision_no_node_applied_is_reported() {
        let w = watcher(vec![session(1, 9, vec![WatchEvent::put(1, "a", "1")])]);
        assert!(
            w.check(&reference())
                .unwrap_err()
                .contains("no node applied")
        );
    }
}
