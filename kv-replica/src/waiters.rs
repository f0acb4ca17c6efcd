//! Requests waiting on one replica, as plain data the driver steps with each
//! round's [`Output`]: writes waiting for their entry to be applied here (by
//! request number), reads waiting for their read index to be confirmed and
//! then applied, and the rule that a write gone to a leader that is no
//! longer the leader is answered at once (F1).
//!
//! Generic over what a waiter is: kv-node keeps the reply channel of an HTTP
//! request, the simulator a client and its operation. Both run this code, so
//! the simulator exercises the driver's bookkeeping. Everything is kept in
//! ordered maps, so the order of answers is the same on every run.

use crate::command::OpResult;
use crate::replica::Output;
use raft_core::{Accepted, LogIndex, NodeId};
use std::collections::BTreeMap;

/// A write proposed on this node, and the leader it went to.
#[derive(Debug)]
struct PendingWrite<W> {
    waiter: W,
    /// This node if it appended the write as leader, else the leader it
    /// forwarded the write to.
    leader: Option<NodeId>,
}

/// Every request waiting on one replica.
#[derive(Debug)]
pub struct Waiters<W, R> {
    /// The replica's node: only its own requests are answered here.
    node: NodeId,
    /// The leader as of the last output stepped in.
    leader: Option<NodeId>,
    /// Writes by request number (`RequestId::id` of this node's proposals).
    writes: BTreeMap<u64, PendingWrite<W>>,
    /// Reads waiting for their read index, by context.
    reads_unconfirmed: BTreeMap<u64, R>,
    /// Reads whose read index is known, by that index, waiting for it to be
    /// applied; with their context, so a caller can still cancel one.
    reads_confirmed: BTreeMap<LogIndex, Vec<(u64, R)>>,
}

/// What one output settled, each list in the order to answer it.
#[derive(Debug)]
pub struct Settled<W, R> {
    /// Writes whose entry this node applied, with what applying it returned
    /// (`None`: the entry carried no result, which only a bug produces).
    pub applied: Vec<(W, Option<OpResult>)>,
    /// F1: writes sent to a leader that is no longer the leader. The old
    /// leader may or may not have kept them, and nothing that arrives in
    /// time will say which: the outcome is unknown now rather than at the
    /// request's timeout.
    pub leader_changed: Vec<W>,
    /// Reads the core could not confirm: not served, safe to retry.
    pub dropped_reads: Vec<R>,
}

impl<W, R> Waiters<W, R> {
    /// No one waiting yet on `node`, whose core currently knows `leader`.
    pub fn new(node: NodeId, leader: Option<NodeId>) -> Self {
        Waiters {
            node,
            leader,
            writes: BTreeMap::new(),
            reads_unconfirmed: BTreeMap::new(),
            reads_confirmed: BTreeMap::new(),
        }
    }

    /// A write the core took in (`accepted`, from `Input::Propose`) waits
    /// under its request number until this node applies it.
    pub fn write_proposed(&mut self, request: u64, accepted: &Accepted, waiter: W) {
        let leader = match accepted {
            Accepted::Forwarded { leader } => Some(*leader),
            Accepted::Appended { .. } | Accepted::Done => Some(self.node),
        };
        let previous = self.writes.insert(request, PendingWrite { waiter, leader });
        assert!(
            previous.is_none(),
            "request number {request} proposed twice"
        );
    }

    /// A read the core took in (`Input::ReadIndex` with `context`) waits
    /// for its read index.
    pub fn read_requested(&mut self, context: u64, waiter: R) {
        let previous = self.reads_unconfirmed.insert(context, waiter);
        assert!(previous.is_none(), "read context {context} used twice");
    }

    /// Steps one round's output: applied writes are answered, a change of
    /// leader fails the writes sent elsewhere (after the writes this round
    /// applied: those are answered with their result), confirmed reads wait
    /// for their index, dropped reads are answered.
    pub fn on_output(&mut self, output: &Output) -> Settled<W, R> {
        let mut settled = Settled {
            applied: Vec::new(),
            leader_changed: Vec::new(),
            dropped_reads: Vec::new(),
        };
        for applied in &output.applied {
            let Some(request) = applied.request else {
                continue;
            };
            if request.node != self.node.0 {
                continue;
            }
            if let Some(write) = self.writes.remove(&request.id) {
                settled.applied.push((write.waiter, applied.result.clone()));
            }
        }
        if let Some(soft) = output.soft_state
            && soft.leader != self.leader
        {
            self.leader = soft.leader;
            settled.leader_changed = self.fail_writes_sent_elsewhere();
        }
        for read in &output.read_states {
            if let Some(waiter) = self.reads_unconfirmed.remove(&read.context) {
                self.reads_confirmed
                    .entry(read.index)
                    .or_default()
                    .push((read.context, waiter));
            }
        }
        for context in &output.dropped_reads {
            if let Some(waiter) = self.reads_unconfirmed.remove(context) {
                settled.dropped_reads.push(waiter);
            }
        }
        settled
    }

    fn fail_writes_sent_elsewhere(&mut self) -> Vec<W> {
        let leader = self.leader;
        let (stale, kept) = std::mem::take(&mut self.writes)
            .into_iter()
            .partition(|(_, write)| write.leader != leader);
        self.writes = kept;
        stale.into_values().map(|write| write.waiter).collect()
    }

    /// Takes the confirmed reads whose read index is at or below `applied`
    /// (the state machine's applied index): they may be served now, in the
    /// order of their read index.
    pub fn ready_reads(&mut self, applied: LogIndex) -> Vec<R> {
        let later = self.reads_confirmed.split_off(&LogIndex(applied.0 + 1));
        let ready = std::mem::replace(&mut self.reads_confirmed, later);
        ready
            .into_values()
            .flatten()
            .map(|(_, waiter)| waiter)
            .collect()
    }

    /// Stops waiting for a write (its client went away); returns its waiter.
    pub fn remove_write(&mut self, request: u64) -> Option<W> {
        self.writes.remove(&request).map(|write| write.waiter)
    }

    /// Stops waiting for a read, confirmed or not; returns its waiter.
    pub fn remove_read(&mut self, context: u64) -> Option<R> {
        if let Some(waiter) = self.reads_unconfirmed.remove(&context) {
            return Some(waiter);
        }
        let (&index, reads) = self
            .reads_confirmed
            .iter_mut()
            .find(|(_, reads)| reads.iter().any(|(c, _)| *c == context))?;
        let position = reads.iter().position(|(c, _)| *c == context)?;
        let (_, waiter) = reads.remove(position);
        if reads.is_empty() {
            self.reads_confirmed.remove(&index);
        }
        Some(waiter)
    }

    /// Keeps only the waiters the predicates keep (kv-node forgets those
    /// whose HTTP request already gave up).
    pub fn retain(
        &mut self,
        mut keep_write: impl FnMut(&W) -> bool,
        mut keep_read: impl FnMut(&R) -> bool,
    ) {
        self.writes.retain(|_, write| keep_write(&write.waiter));
        self.reads_unconfirmed.retain(|_, waiter| keep_read(waiter));
        for reads in self.reads_confirmed.values_mut() {
            reads.retain(|(_, waiter)| keep_read(waiter));
        }
        self.reads_confirmed.retain(|_, reads| !reads.is_empty());
    }

    /// Takes every waiter (the node stops): writes, then reads.
    pub fn drain(&mut self) -> (Vec<W>, Vec<R>) {
        let writes = std::mem::take(&mut self.writes)
            .into_values()
            .map(|write| write.waiter)
            .collect();
        let unconfirmed = std::mem::take(&mut self.reads_unconfirmed).into_values();
        let confirmed = std::mem::take(&mut self.reads_confirmed)
            .into_values()
            .flatten()
            .map(|(_, waiter)| waiter);
        (writes, unconfirmed.chain(confirmed).collect())
    }

    /// The leader as of the last output.
    pub fn leader(&self) -> Option<NodeId> {
        self.leader
    }

    /// Writes waiting.
    pub fn writes_waiting(&self) -> usize {
        self.writes.len()
    }

    /// Reads waiting, confirmed or not.
    pub fn reads_waiting(&self) -> usize {
        self.reads_unconfirmed.len() + self.reads_confirmed.values().map(Vec::len).sum::<usize>()
    }
}

#[cfg(test)]
mod tests;
