//! How simulated clients talk to the nodes: proposals through
//! `Input::Propose`, linearizable reads through `Input::ReadIndex`, answers
//! from what each node's replica applied.

use crate::client::{
    ClientCall, ClientKind, ClientRet, InFlight, MAX_ATTEMPTS, Outcome, Recorded, TIMEOUT_TICKS,
    Waiting,
};
use crate::faults::STEPS_PER_TICK;
use crate::world::{Event, World};
use kv_replica::command::{ClientSeq, Command, OpResult, RequestId};
use kv_replica::membership_waiters::MembershipWaiters;
use kv_replica::replica::Output;
use kv_replica::state_machine::Applied;
use kv_replica::waiters::Waiters;
use raft_core::{Input, LogIndex, NodeId};

impl World {
    fn think_steps(&mut self) -> u64 {
        let mean = self.plan.think_ticks * STEPS_PER_TICK;
        self.rng.range(1, 2 * mean)
    }

    fn accepting_new_ops(&self) -> bool {
        self.now < self.opts.quiet_tick() * STEPS_PER_TICK
            && self
                .opts
                .max_ops
                .is_none_or(|max| (self.history.len() as u64) < max)
    }

    pub(crate) fn client_wake(&mut self, c: usize) {
        if self.clients[c].busy.is_none() {
            if !self.accepting_new_ops() {
                return;
            }
            let call = match &self.clients[c].kind {
                ClientKind::Kv => self.clients[c].next_call(&self.keys, &mut self.rng),
                ClientKind::Txn => self.clients[c].next_txn_call(&mut self.rng),
                ClientKind::Lease(_) => {
                    self.clients[c].next_lease_call(&mut self.rng, &self.leases)
                }
            };
            let seq = if call.write_op().is_some() {
                let seq = self.clients[c].next_seq;
                self.clients[c].next_seq += 1;
                seq
            } else {
                0
            };
            let op = self.history.len();
            self.trace
                .note(self.now, || format!("c{} invokes #{op} {call:?}", c + 1));
            self.history.push(Recorded {
                client: c as u64 + 1,
                invoke_step: self.now,
                complete_step: None,
                call,
                ret: None,
                outcome: Outcome::Pending,
                seq,
                attempts: Vec::new(),
            });
            self.clients[c].busy = Some(InFlight {
                op,
                waiting: Waiting::Nothing,
                attempt: 0,
            });
        }
        let Some(busy) = &mut self.clients[c].busy else {
            return;
        };
        if busy.waiting != Waiting::Nothing {
            return;
        }
        if self.now >= self.opts.settle_tick() * STEPS_PER_TICK {
            // Too late to try again: the run is settling.
            let outcome = if self.history[busy.op].attempts.is_empty() {
                Outcome::Failed
            } else {
                Outcome::Unknown
            };
            return self.finish(c, outcome, None);
        }
        let Some(busy) = &mut self.clients[c].busy else {
            return;
        };
        busy.attempt += 1;
        let attempt = busy.attempt;
        let busy_op = busy.op;
        let mut drawn = NodeId(self.rng.range(1, self.nodes.len() as u64));
        if matches!(self.history[busy_op].call, ClientCall::Keepalive { .. })
            && let Some(leader) = self.leader()
            && self.rng.range(0, 3) > 0
        {
            // Keepalives go to the leader (a client that follows redirects),
            // mostly.
            drawn = leader;
        }
        let node = match self.steer_reads {
            Some((to, until))
                if self.now < until
                    && matches!(self.history[busy_op].call, ClientCall::Get { .. }) =>
            {
                to
            }
            _ => drawn,
        };
        self.schedule_in(
            TIMEOUT_TICKS * STEPS_PER_TICK,
            Event::ClientTimeout {
                client: c,
                op: busy_op,
                attempt,
            },
        );
        if self.node(node).replica().is_none() {
            // Connection refused: nothing was sent.
            return self.attempt_refused(c);
        }
        if self.node(node).paused {
            self.clients[c].busy.as_mut().expect("busy").waiting = Waiting::Queued { node: node.0 };
            self.node_mut(node)
                .backlog
                .push_back(crate::world::Backlog::Client {
                    client: c,
                    op: busy_op,
                    attempt,
                });
            return;
        }
        self.submit(c, node);
    }

    /// Sends the client's current operation to `node`, which is live.
    pub(crate) fn submit(&mut self, c: usize, node: NodeId) {
        let op = self.clients[c].busy.as_ref().expect("busy").op;
        let call = self.history[op].call.clone();
        if let Some(write) = call.write_op() {
            {
                let request = RequestId {
                    node: node.0,
                    id: self.next_request,
                };
                self.next_request += 1;
                let command = Command {
                    request: Some(request),
                    client: Some(ClientSeq {
                        client_id: self.clients[c].name.clone(),
                        seq: self.history[op].seq,
                    }),
                    op: write,
                };
                self.writers
                    .insert(request, (c as u64 + 1, self.history[op].seq));
                self.history[op].attempts.push(request);
                self.clients[c].busy.as_mut().expect("busy").waiting = Waiting::Write {
                    node: node.0,
                    request,
                };
                let data = command.encode();
                // The waiter is registered before the `Ready` is handled, as
                // kv-node's driver does: the answer may come in this round.
                let accepted = self.step_undriven(node, Input::Propose { data });
                if let Some(accepted) = &accepted {
                    let waiter = (c, op, request);
                    (self.node_mut(node).waiters).write_proposed(request.id, accepted, waiter);
                }
                if self.violation.is_none() {
                    self.drive(node);
                }
                if accepted.is_none() {
                    self.history[op].attempts.pop();
                    self.attempt_refused(c);
                }
            }
        } else if let ClientCall::Keepalive { lease } = call {
            self.submit_keepalive(c, node, lease);
        } else {
            {
                let context = self.next_context;
                self.next_context += 1;
                self.clients[c].busy.as_mut().expect("busy").waiting = Waiting::Read {
                    node: node.0,
                    context,
                };
                // Steered readers ask for lease reads: the lease is what the
                // steering fault tests.
                let steered = self
                    .steer_reads
                    .is_some_and(|(to, until)| to == node && self.now < until);
                let lease = self.plan.lease_reads && (self.rng.coin() || steered);
                let accepted = self.step_undriven(node, Input::ReadIndex { context, lease });
                if accepted.is_some() {
                    (self.node_mut(node).waiters).read_requested(context, (c, context));
                }
                if self.violation.is_none() {
                    self.drive(node);
                }
                if accepted.is_none() {
                    self.attempt_refused(c);
                }
            }
        }
    }

    /// The attempt certainly had no effect.
    pub(crate) fn attempt_refused(&mut self, c: usize) {
        let Some(busy) = &mut self.clients[c].busy else {
            return;
        };
        busy.waiting = Waiting::Nothing;
        let op = busy.op;
        if self.history[op].attempts.is_empty() {
            // Nothing of this operation was ever proposed.
            self.finish(c, Outcome::Failed, None);
        } else if busy.attempt >= 2 * MAX_ATTEMPTS {
            self.finish(c, Outcome::Unknown, None);
        } else {
            // An earlier attempt may still take effect: try again.
            let backoff = self.rng.range(STEPS_PER_TICK, 5 * STEPS_PER_TICK);
            self.schedule_in(backoff, Event::ClientWake(c));
        }
    }

    /// The current attempt's outcome became unknown (timeout, crash).
    fn attempt_unknown(&mut self, c: usize) {
        let Some(busy) = &mut self.clients[c].busy else {
            return;
        };
        let op = busy.op;
        if matches!(busy.waiting, Waiting::Read { .. }) || self.history[op].call.is_read() {
            // A read without an answer had no effect.
            return self.finish(c, Outcome::Failed, None);
        }
        busy.waiting = Waiting::Nothing;
        if busy.attempt >= MAX_ATTEMPTS {
            return self.finish(c, Outcome::Unknown, None);
        }
        let backoff = self.rng.range(STEPS_PER_TICK, 5 * STEPS_PER_TICK);
        self.schedule_in(backoff, Event::ClientWake(c));
    }

    pub(crate) fn client_timeout(&mut self, c: usize, op: usize, attempt: u32) {
        let current = self.clients[c]
            .busy
            .as_ref()
            .is_some_and(|b| b.op == op && b.attempt == attempt && b.waiting != Waiting::Nothing);
        if current {
            self.attempt_unknown(c);
        }
    }

    /// Ends the client's current operation.
    pub(crate) fn finish(&mut self, c: usize, outcome: Outcome, ret: Option<ClientRet>) {
        let Some(busy) = self.clients[c].busy.take() else {
            return;
        };
        let op = busy.op;
        for i in 0..self.history[op].attempts.len() {
            let request = self.history[op].attempts[i];
            self.node_mut(NodeId(request.node))
                .waiters
                .remove_write(request.id);
        }
        if let Waiting::Read { node, context } = busy.waiting {
            self.node_mut(NodeId(node)).waiters.remove_read(context);
        }
        let record = &mut self.history[op];
        record.outcome = outcome;
        if outcome == Outcome::Ok {
            record.complete_step = Some(self.now);
            if let Some(ret) = &ret {
                match &record.call {
                    ClientCall::Txn { txn, .. } => self.clients[c].observe_txn(txn, ret),
                    call => self.clients[c].observe(call, ret),
                }
            }
            record.ret = ret;
        }
        let lease_think = self.lease_op_ended(c, op);
        self.trace.note(self.now, || {
            format!(
                "c{} completes #{op} {outcome:?} {:?}",
                c + 1,
                self.history[op].ret
            )
        });
        let think = lease_think.unwrap_or_else(|| self.think_steps());
        self.schedule_in(think, Event::ClientWake(c));
    }

    /// Every request waiting on a crashed node has an unknown outcome.
    pub(crate) fn node_lost_requests(&mut self, id: NodeId) {
        self.node_mut(id).waiters = Waiters::new(id, None);
        self.node_mut(id).changes = MembershipWaiters::default();
        for c in 0..self.clients.len() {
            let on_node = match self.clients[c].busy.as_ref().map(|b| &b.waiting) {
                Some(Waiting::Write { node, .. })
                | Some(Waiting::Read { node, .. })
                | Some(Waiting::Queued { node }) => *node == id.0,
                _ => false,
            };
            if on_node {
                self.attempt_unknown(c);
            }
        }
    }

    /// Wakes the clients whose answers a step on `id` produced: steps the
    /// node's waiters with each output, as kv-node's driver does, then
    /// answers writes, then (F1) writes sent to a leader that lost
    /// leadership, then dropped reads, then reads whose index is applied.
    pub(crate) fn answer_clients(&mut self, id: NodeId, applied: &[Applied], outputs: Vec<Output>) {
        for a in applied {
            let Some(request) = a.request else { continue };
            if self.probe.requests.contains(&request) && self.probe.satisfied_step.is_none() {
                self.probe.satisfied_step = Some(self.now);
                self.trace
                    .note(self.now, || "liveness probe committed".into());
            }
        }
        let (mut writes, mut leader_changed, mut dropped) = (Vec::new(), Vec::new(), Vec::new());
        for out in &outputs {
            let settled = self.node_mut(id).waiters.on_output(out);
            writes.extend(settled.applied);
            leader_changed.extend(settled.leader_changed);
            dropped.extend(settled.dropped_reads);
        }
        for ((c, op, _), result) in writes {
            if self.clients[c].busy.as_ref().is_none_or(|b| b.op != op) {
                continue;
            }
            match result {
                Some(OpResult::StaleSeq { .. }) | None => {
                    let detail = format!("c{} op #{op} was answered {result:?}", c + 1);
                    return self.fail("deduplication", detail);
                }
                Some(result) => self.finish(c, Outcome::Ok, Some(ClientRet::Write(result))),
            }
        }
        for (c, op, request) in leader_changed {
            let current = self.clients[c].busy.as_ref().is_some_and(|b| {
                b.op == op
                    && b.waiting
                        == (Waiting::Write {
                            node: id.0,
                            request,
                        })
            });
            self.trace.note(self.now, || {
                format!(
                    "{id} fails c{}'s write {}: the leader changed",
                    c + 1,
                    request.id
                )
            });
            if current {
                self.attempt_unknown(c);
            }
        }
        for (c, context) in dropped {
            self.trace
                .note(self.now, || format!("{id} drops read {context}"));
            self.finish(c, Outcome::Failed, None);
        }
        self.serve_reads(id);
    }

    /// Serves every confirmed read on `id` whose index the node applied.
    fn serve_reads(&mut self, id: NodeId) {
        let Some(applied) = self.node(id).replica().map(|r| r.state.applied_index()) else {
            return;
        };
        let mut ready = self.node_mut(id).waiters.ready_reads(LogIndex(applied));
        // In client order, as the simulator always answered them.
        ready.sort_unstable();
        let mut answers = Vec::new();
        for (c, _) in ready {
            let Some(busy) = &self.clients[c].busy else {
                continue;
            };
            let call = self.history[busy.op].call.clone();
            let replica = self.node_mut(id).replica_mut().expect("checked above");
            match call {
                ClientCall::Get { key } => {
                    let value = replica.state.get(&key).map(|(v, _)| v.to_string());
                    answers.push((c, Some(ClientRet::Get(value))));
                }
                ClientCall::Keepalive { lease } => {
                    answers.push((c, crate::world_leases::answer_keepalive(replica, lease)));
                }
                _ => {}
            }
        }
        for (c, ret) in answers {
            match ret {
                Some(ret) => self.finish(c, Outcome::Ok, Some(ret)),
                None => self.finish(c, Outcome::Failed, None),
            }
        }
    }

    /// A paused node resumes: it handles its backlog in arrival order.
    pub(crate) fn resume(&mut self, id: NodeId) {
        self.node_mut(id).paused = false;
        self.trace.note(self.now, || format!("{id} resumes"));
        while let Some(item) = self.node_mut(id).backlog.pop_front() {
            if !self.node(id).is_live() {
                break;
            }
            match item {
                crate::world::Backlog::Message(m) => {
                    self.step_node(id, Input::Message(m));
                }
                crate::world::Backlog::Client {
                    client,
                    op,
                    attempt,
                } => {
                    let current = self.clients[client].busy.as_ref().is_some_and(|b| {
                        b.op == op
                            && b.attempt == attempt
                            && b.waiting == Waiting::Queued { node: id.0 }
                    });
                    if current {
                        self.submit(client, id);
                    }
                }
            }
        }
    }
}
