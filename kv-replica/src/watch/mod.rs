//! Watches, sans I/O: the event history of the last revisions and the
//! watchers reading it, shared by kv-node and the simulator.
//!
//! The state machine records an event at each of its two mutation points
//! (`put`, `delete`), so every op that changes keys (put, delete, CAS,
//! multi-put, transaction, lease expiry) yields events without knowing
//! about watches. The replica hands them out with each round's output;
//! the caller feeds them to a [`WatchHub`] ([`WatchHub::apply`]), off the
//! thread that applies (kv-node: a task of its own).
//!
//! # Memory
//!
//! The hub keeps one history; a watcher is a filter and a cursor into it
//! (the next revision it needs), not a copy of its events. A watcher reads
//! its events with [`WatchHub::poll`], at most one batch of
//! [`WatchConfig::batch_bytes`] (whole revisions) at a time, so a watch from
//! revision 0 or on a huge prefix costs one batch, whatever the history.
//!
//! The history holds the events of the last `history_revisions` revisions,
//! and at most `history_bytes`; older revisions are dropped whole, and the
//! compact revision C moves up: events from C on are kept. A watcher whose
//! cursor falls below C (it did not read fast enough, or the node
//! installed a snapshot over revisions it had not read) is cut off: its
//! next poll answers [`Delivery::SlowConsumer`].

mod event;
#[cfg(test)]
mod tests;

pub use event::{EVENT_OVERHEAD_BYTES, EventRecorder, WatchEvent};

use std::collections::{BTreeMap, VecDeque};

/// Default number of revisions kept (`--watch-history`, API.md).
pub const DEFAULT_WATCH_HISTORY: u64 = 100_000;
/// Default bound on the bytes of kept events (keys, values and
/// [`EVENT_OVERHEAD_BYTES`] each).
pub const DEFAULT_WATCH_HISTORY_BYTES: usize = 256 << 20;
/// Default node-wide bound on open watches (`--max-watches`).
pub const DEFAULT_MAX_WATCHES: usize = 10_000;
/// Default largest batch one poll returns (at least one whole revision).
pub const DEFAULT_WATCH_BATCH_BYTES: usize = 64 << 10;
/// Most history events one poll looks at, so that a key watch behind a
/// flood of other keys costs bounded work per poll.
pub const MAX_SCAN_PER_POLL: usize = 16_384;

/// The hub's bounds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WatchConfig {
    pub history_revisions: u64,
    pub history_bytes: usize,
    pub max_watches: usize,
    pub batch_bytes: usize,
}

impl Default for WatchConfig {
    fn default() -> Self {
        WatchConfig {
            history_revisions: DEFAULT_WATCH_HISTORY,
            history_bytes: DEFAULT_WATCH_HISTORY_BYTES,
            max_watches: DEFAULT_MAX_WATCHES,
            batch_bytes: DEFAULT_WATCH_BATCH_BYTES,
        }
    }
}

/// Which keys a watch matches.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum WatchFilter {
    Key(String),
    /// Every key starting with the prefix; the empty prefix is every key.
    Prefix(String),
}

impl WatchFilter {
    pub fn matches(&self, key: &str) -> bool {
        match self {
            WatchFilter::Key(k) => k == key,
            WatchFilter::Prefix(p) => key.starts_with(p.as_str()),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct WatchId(pub u64);

/// Why a watch could not start.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum WatchError {
    #[error(
        "revision {from_revision} is compacted: this node keeps events from revision {compact_revision} on"
    )]
    Compacted {
        from_revision: u64,
        compact_revision: u64,
    },
    #[error("too many watches on this node (limit {limit}); retry later or on another node")]
    TooManyWatches { limit: usize },
}

/// A watch that started.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Started {
    pub id: WatchId,
    /// The hub's revision when the watch started (the first line's `revision`).
    pub revision: u64,
}

/// What one poll of a watcher found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Delivery {
    /// The next events, in revision order, whole revisions only. Empty
    /// when the poll stopped at its scan bound before finding any: poll
    /// again.
    Events(Vec<WatchEvent>),
    /// Nothing to read now: nothing for this watch up to `progress`.
    Idle { progress: u64 },
    /// The watcher is cut off (its last line); it must resume elsewhere or
    /// later with `from_revision`.
    SlowConsumer { message: String },
    /// No such watcher (cancelled).
    Gone,
}

#[derive(Debug)]
struct Watcher {
    filter: WatchFilter,
    /// The next revision this watcher needs; everything before it was
    /// delivered or did not match.
    next_revision: u64,
    /// Why it was cut off, once it was.
    cut: Option<String>,
}

/// The event history and its watchers. Deterministic: ordered maps only.
#[derive(Debug)]
pub struct WatchHub {
    config: WatchConfig,
    /// Events in revision order; every event at a revision `>=
    /// compact_revision` and `<= revision` is here.
    history: VecDeque<WatchEvent>,
    history_bytes: usize,
    compact_revision: u64,
    /// The applied revision the hub was last told of.
    revision: u64,
    watchers: BTreeMap<WatchId, Watcher>,
    next_id: u64,
    /// Known bugs switched on (`crate::bugs`).
    bugs: crate::bugs::ReplicaBugs,
}

impl WatchHub {
    /// A hub over a state applied up to `applied_index`, with no history
    /// yet: events from `applied_index + 1` on will be kept.
    pub fn new(config: WatchConfig, applied_index: u64) -> WatchHub {
        WatchHub {
            config,
            history: VecDeque::new(),
            history_bytes: 0,
            compact_revision: applied_index + 1,
            revision: applied_index,
            watchers: BTreeMap::new(),
            next_id: 1,
            bugs: crate::bugs::ReplicaBugs::default(),
        }
    }

    /// Switches known bugs on (only with the `buggy` feature).
    pub fn set_bugs(&mut self, bugs: crate::bugs::ReplicaBugs) {
        self.bugs = bugs;
    }

    pub fn config(&self) -> &WatchConfig {
        &self.config
    }

    /// The applied revision the hub was last told of.
    pub fn revision(&self) -> u64 {
        self.revision
    }

    /// Events from this revision on are kept.
    pub fn compact_revision(&self) -> u64 {
        self.compact_revision
    }

    /// Open watches (cut-off ones count until cancelled).
    pub fn watch_count(&self) -> usize {
        self.watchers.len()
    }

    pub fn history_len(&self) -> usize {
        self.history.len()
    }

    pub fn history_bytes(&self) -> usize {
        self.history_bytes
    }

    /// Takes in one round of applied changes: `events` in apply order,
    /// after which the state is applied up to `applied_index`. Returns the
    /// watchers that have something to read (new events or a cut-off).
    pub fn apply(&mut self, applied_index: u64, events: Vec<WatchEvent>) -> Vec<WatchId> {
        assert!(
            applied_index >= self.revision,
            "watch hub told of applied index {applied_index} after {}",
            self.revision
        );
        let previous = self.revision;
        let mut last = self.history.back().map_or(0, |e| e.revision);
        for event in &events {
            assert!(
                event.revision > previous && event.revision <= applied_index,
                "event at revision {} outside ({previous}, {applied_index}]",
                event.revision
            );
            assert!(
                event.revision >= last,
                "event at {} after {last}",
                event.revision
            );
            last = event.revision;
        }
        let mut wake = Vec::new();
        for (id, watcher) in self.watchers.iter_mut() {
            if watcher.cut.is_some() {
                continue;
            }
            let caught_up = watcher.next_revision > previous;
            let matched = events
                .iter()
                .any(|e| e.revision >= watcher.next_revision && watcher.filter.matches(&e.key));
            if matched || !caught_up {
                wake.push(*id);
            } else {
                // Nothing for it in this round: it stays caught up without
                // a poll (a key watch behind other keys never lags).
                watcher.next_revision = watcher.next_revision.max(applied_index + 1);
            }
        }
        for event in events {
            self.history_bytes += event.cost_bytes();
            self.history.push_back(event);
        }
        self.revision = applied_index;
        self.trim(&mut wake);
        wake
    }

    /// The state was replaced by a snapshot at `snapshot_index`: the events
    /// up to it are unknown here. Watchers that had not read that far are
    /// cut off. Returns them.
    pub fn snapshot_installed(&mut self, snapshot_index: u64) -> Vec<WatchId> {
        self.history.clear();
        self.history_bytes = 0;
        self.revision = self.revision.max(snapshot_index);
        self.compact_revision = self.compact_revision.max(snapshot_index + 1);
        let mut wake = Vec::new();
        let message = format!(
            "the node installed a snapshot at revision {snapshot_index}; resume with from_revision"
        );
        self.cut_below(&message, &mut wake);
        wake
    }

    /// Drops whole revisions beyond the count and byte bounds, then cuts
    /// off the watchers that had not read them.
    fn trim(&mut self, wake: &mut Vec<WatchId>) {
        let keep_from = (self.revision + 1).saturating_sub(self.config.history_revisions);
        self.compact_revision = self.compact_revision.max(keep_from);
        while self
            .history
            .front()
            .is_some_and(|e| e.revision < self.compact_revision)
        {
            self.pop_front();
        }
        while self.history_bytes > self.config.history_bytes {
            let Some(oldest) = self.history.front().map(|e| e.revision) else {
                break;
            };
            while self.history.front().is_some_and(|e| e.revision == oldest) {
                self.pop_front();
            }
            self.compact_revision = self.compact_revision.max(oldest + 1);
        }
        let message = format!(
            "the watch fell behind the history this node keeps (events from revision {} on); resume with from_revision",
            self.compact_revision
        );
        self.cut_below(&message, wake);
    }

    fn pop_front(&mut self) {
        if let Some(event) = self.history.pop_front() {
            self.history_bytes -= event.cost_bytes();
        }
    }

    fn cut_below(&mut self, message: &str, wake: &mut Vec<WatchId>) {
        for (id, watcher) in self.watchers.iter_mut() {
            if watcher.cut.is_none() && watcher.next_revision < self.compact_revision {
                watcher.cut = Some(message.to_string());
                if !wake.contains(id) {
                    wake.push(*id);
                }
            }
        }
    }

    /// Starts a watch. Without `from_revision` it delivers the events after
    /// the hub's revision; with it, every event at revision `>= R`
    /// (revision 0 means 1). `R` older than the history kept is
    /// [`WatchError::Compacted`].
    pub fn watch(
        &mut self,
        filter: WatchFilter,
        from_revision: Option<u64>,
    ) -> Result<Started, WatchError> {
        if self.watchers.len() >= self.config.max_watches {
            return Err(WatchError::TooManyWatches {
                limit: self.config.max_watches,
            });
        }
        let next_revision = match from_revision {
            None => self.revision + 1,
            Some(from) => {
                let from = from.max(1);
                if from < self.compact_revision {
                    return Err(WatchError::Compacted {
                        from_revision: from,
                        compact_revision: self.compact_revision,
                    });
                }
                if crate::bugs::ReplicaBugs::has(self.bugs.watch_resume_skips_revision) {
                    // Bug: resumes after the revision asked for.
                    from + 1
                } else {
                    from
                }
            }
        };
        let id = WatchId(self.next_id);
        self.next_id += 1;
        self.watchers.insert(
            id,
            Watcher {
                filter,
                next_revision,
                cut: None,
            },
        );
        Ok(Started {
            id,
            revision: self.revision,
        })
    }

    /// Forgets a watcher (its stream ended).
    pub fn cancel(&mut self, id: WatchId) {
        self.watchers.remove(&id);
    }

    /// The watcher's next batch: whole revisions, up to the batch bytes and
    /// [`MAX_SCAN_PER_POLL`] events looked at (at least one revision).
    pub fn poll(&mut self, id: WatchId) -> Delivery {
        let Some(watcher) = self.watchers.get_mut(&id) else {
            return Delivery::Gone;
        };
        if let Some(message) = &watcher.cut {
            return Delivery::SlowConsumer {
                message: message.clone(),
            };
        }
        debug_assert!(watcher.next_revision >= self.compact_revision);
        let start = self
            .history
            .partition_point(|e| e.revision < watcher.next_revision);
        let mut events = Vec::new();
        let mut bytes = 0usize;
        let mut current = None;
        let mut stopped_at = None;
        for (scanned, event) in self.history.range(start..).enumerate() {
            if current != Some(event.revision) {
                if scanned >= MAX_SCAN_PER_POLL || bytes >= self.config.batch_bytes {
                    // Stopped at a revision boundary: the rest next time.
                    stopped_at = Some(event.revision);
                    break;
                }
                current = Some(event.revision);
            }
            if watcher.filter.matches(&event.key) {
                bytes += event.cost_bytes();
                events.push(event.clone());
            }
        }
        watcher.next_revision = match stopped_at {
            Some(revision) => revision,
            None => watcher.next_revision.max(self.revision + 1),
        };
        if events.is_empty() && stopped_at.is_none() {
            Delivery::Idle {
                progress: (watcher.next_revision - 1).min(self.revision),
            }
        } else {
            Delivery::Events(events)
        }
    }
}
