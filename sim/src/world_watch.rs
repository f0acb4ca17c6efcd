//! Watchers in the world: each node's watch hub, fed as kv-node's driver
//! feeds its hub (`kv-node/src/watch.rs`: each round's snapshot install
//! and events, then the applied index), the committed-event reference,
//! and the watchers' connections, cut-offs and resumes (see
//! `watch_client`).

use crate::faults::STEPS_PER_TICK;
use crate::watch_client::{Connection, Session};
use crate::world::{Event, World};
use kv_replica::replica::Output;
use kv_replica::watch::{Delivery, WatchConfig, WatchError, WatchEvent, WatchHub};
use raft_core::NodeId;
use std::collections::BTreeMap;

/// The hubs keep few revisions and send small batches, so that resumes
/// meet `compacted` answers, watchers get cut off, and polls take several
/// batches.
pub const WATCH_CONFIG: WatchConfig = WatchConfig {
    history_revisions: 48,
    history_bytes: 64 << 10,
    max_watches: 16,
    batch_bytes: 512,
};

/// Polls of one watcher per step (a poll returns at least one revision).
const MAX_POLLS: usize = 256;

impl World {
    /// A node (re)started: a fresh hub over its applied state.
    pub(crate) fn open_hub(&mut self, id: NodeId) {
        let bugs = self.opts.replica_bugs;
        let lease_tick_ms = self.opts.lease_tick_ms;
        let Some(replica) = self.node_mut(id).replica_mut() else {
            return;
        };
        replica.record_watch_events(true);
        replica.set_bugs(bugs);
        replica.set_lease_tick_ms(lease_tick_ms);
        let mut hub = WatchHub::new(WATCH_CONFIG, replica.state.applied_index());
        hub.set_bugs(bugs);
        self.hubs[id.0 as usize - 1] = Some(hub);
    }

    /// A node crashed: its hub and its watchers' connections are gone.
    pub(crate) fn close_hub(&mut self, id: NodeId) {
        self.hubs[id.0 as usize - 1] = None;
        for w in 0..self.watchers.len() {
            if self.watchers[w]
                .connection
                .as_ref()
                .is_some_and(|c| c.node == id.0)
            {
                self.disconnect(w);
            }
        }
    }

    /// Feeds a round's changes to the reference and to the node's hub,
    /// then lets the node's watchers read.
    pub(crate) fn feed_watches(&mut self, id: NodeId, outputs: &mut [Output]) {
        let mut fed = false;
        for out in outputs.iter_mut() {
            let events = std::mem::take(&mut out.events);
            if out.applied.is_empty() && out.snapshot_installed.is_none() {
                continue;
            }
            fed = true;
            let mut by_revision: BTreeMap<u64, Vec<WatchEvent>> = BTreeMap::new();
            for event in &events {
                by_revision
                    .entry(event.revision)
                    .or_default()
                    .push(event.clone());
            }
            // Entries applied before a snapshot installed in the same round
            // lost their events (`Output::events`): only later ones count.
            let installed = out.snapshot_installed.map_or(0, |i| i.0);
            for applied in &out.applied {
                let revision = applied.index.0;
                if revision > installed {
                    let events = by_revision.remove(&revision).unwrap_or_default();
                    self.reference.record(revision, events);
                }
            }
            let Some(hub) = self.hubs[id.0 as usize - 1].as_mut() else {
                continue;
            };
            if let Some(index) = out.snapshot_installed {
                hub.snapshot_installed(index.0);
            }
            let applied = out
                .applied
                .last()
                .map_or(hub.revision(), |a| a.index.0)
                .max(hub.revision());
            hub.apply(applied, events);
        }
        if fed {
            self.poll_watchers(id);
        }
    }

    /// Lets every watcher connected to `id` read what its hub holds.
    fn poll_watchers(&mut self, id: NodeId) {
        for w in 0..self.watchers.len() {
            let Some(connection) = self.watchers[w].connection.clone() else {
                continue;
            };
            if connection.node != id.0 {
                continue;
            }
            self.poll_watcher(w, &connection);
        }
    }

    fn poll_watcher(&mut self, w: usize, connection: &Connection) {
        for _ in 0..MAX_POLLS {
            let Some(hub) = self.hubs[connection.node as usize - 1].as_mut() else {
                return;
            };
            let delivery = hub.poll(connection.watch);
            let watcher = &mut self.watchers[w];
            let session = watcher.sessions.last_mut().expect("a connected session");
            match delivery {
                Delivery::Events(events) => {
                    if let Some(last) = events.last() {
                        session.seen_up_to = session.seen_up_to.max(last.revision);
                    }
                    session.events.extend(events);
                }
                Delivery::Idle { progress } => {
                    session.seen_up_to = session.seen_up_to.max(progress);
                    return;
                }
                Delivery::SlowConsumer { message } => {
                    watcher.cut_offs += 1;
                    let name = watcher.name.clone();
                    self.trace
                        .note(self.now, || format!("{name} cut off: {message}"));
                    return self.disconnect(w);
                }
                Delivery::Gone => return self.disconnect(w),
            }
        }
    }

    /// Ends the watcher's connection; it resumes a little later.
    fn disconnect(&mut self, w: usize) {
        let Some(connection) = self.watchers[w].connection.take() else {
            return;
        };
        if let Some(hub) = self.hubs[connection.node as usize - 1].as_mut() {
            hub.cancel(connection.watch);
        }
        let backoff = self.rng.range(1, 20) * STEPS_PER_TICK;
        self.schedule_in(backoff, Event::WatcherWake(w));
    }

    /// A watcher (re)connects to some node, resuming where it stopped.
    pub(crate) fn watcher_wake(&mut self, w: usize) {
        if self.watchers[w].connection.is_some() {
            return;
        }
        let node = NodeId(self.rng.range(1, self.nodes.len() as u64));
        let live = self.node(node).is_live() && self.hubs[node.0 as usize - 1].is_some();
        if !live {
            let backoff = self.rng.range(1, 20) * STEPS_PER_TICK;
            return self.schedule_in(backoff, Event::WatcherWake(w));
        }
        let incarnation = self.node(node).incarnation;
        let filter = self.watchers[w].filter.clone();
        let mut from = self.watchers[w].resume_from();
        let mut after_compacted = false;
        let hub = self.hubs[node.0 as usize - 1].as_mut().expect("checked");
        let started = match hub.watch(filter.clone(), from) {
            Err(WatchError::Compacted {
                compact_revision, ..
            }) => {
                // Legal: those revisions are gone here. Resume from the
                // compact revision, claiming nothing before it.
                self.watchers[w].compacted += 1;
                after_compacted = true;
                from = Some(compact_revision);
                hub.watch(filter, from)
            }
            other => other,
        };
        let started = match started {
            Ok(started) => started,
            Err(e) => {
                let name = self.watchers[w].name.clone();
                self.trace
                    .note(self.now, || format!("{name} refused by {node}: {e}"));
                let backoff = self.rng.range(1, 20) * STEPS_PER_TICK;
                return self.schedule_in(backoff, Event::WatcherWake(w));
            }
        };
        let start = from.unwrap_or(started.revision + 1).max(1);
        let watcher = &mut self.watchers[w];
        watcher.sessions.push(Session {
            node: node.0,
            start,
            seen_up_to: start - 1,
            events: Vec::new(),
            after_compacted,
        });
        let connection = Connection {
            node: node.0,
            incarnation,
            watch: started.id,
        };
        watcher.connection = Some(connection.clone());
        let session = watcher.sessions.len() - 1;
        let name = watcher.name.clone();
        self.trace.note(self.now, || {
            format!("{name} watches on {node} from revision {start}")
        });
        let drop_after = self.rng.range(30, 400) * STEPS_PER_TICK;
        self.schedule_in(
            drop_after,
            Event::WatcherDrop {
                watcher: w,
                session,
            },
        );
        self.poll_watcher(w, &connection);
    }

    /// The watcher's connection drops (if it is still that session's).
    pub(crate) fn watcher_drop(&mut self, w: usize, session: usize) {
        if self.watchers[w].connection.is_some() && self.watchers[w].sessions.len() == session + 1 {
            self.disconnect(w);
        }
    }

    /// At the end: every watcher saw exactly the committed events.
    pub(crate) fn check_watchers(&mut self) {
        for w in 0..self.watchers.len() {
            if let Err(detail) = self.watchers[w].check(&self.reference) {
                return self.fail("watchers see every committed event once", detail);
            }
        }
    }
}
