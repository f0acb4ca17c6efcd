//! How simulated clients talk to the nodes: proposals through
//! `Input::Propose`, linearizable reads through `Input::ReadIndex`, answers
//! from what each node's replica applied.

use crate::client::{
    ClientCall, ClientRet, InFlight, MAX_ATTEMPTS, Outcome, Recorded, TIMEOUT_TICKS, Waiting,
};
use crate::faults::STEPS_PER_TICK;
use crate::world::{Event, World};
use kv_replica::command::{ClientSeq, Command, OpResult, RequestId};
use kv_replica::replica::Output;
use kv_replica::state_machine::Applied;
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
            let call = self.clients[c].next_call(&self.keys, &mut self.rng);
            let seq = match call {
                ClientCall::Write(_) => {
                    let seq = self.clients[c].next_seq;
                    self.clients[c].next_seq += 1;
                    seq
                }
                ClientCall::Get { .. } => 0,
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
        let node = NodeId(self.rng.range(1, self.nodes.len() as u64));
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
        match call {
            ClientCall::Write(write) => {
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
                // Registered first: the answer may come within this step.
                self.requests.insert(request, (c, op));
                self.writers
                    .insert(request, (c as u64 + 1, self.history[op].seq));
                self.history[op].attempts.push(request);
                self.clients[c].busy.as_mut().expect("busy").waiting = Waiting::Write {
                    node: node.0,
                    request,
                };
                let data = command.encode();
                if self.step_node(node, Input::Propose { data }).is_none() {
                    self.requests.remove(&request);
                    self.history[op].attempts.pop();
                    self.attempt_refused(c);
                }
            }
            ClientCall::Get { .. } => {
                let context = self.next_context;
                self.next_context += 1;
                self.reads.insert(context, c);
                self.clients[c].busy.as_mut().expect("busy").waiting = Waiting::Read {
                    node: node.0,
                    context,
                    index: None,
                };
                let lease = self.plan.lease_reads && self.rng.coin();
                if self
                    .step_node(node, Input::ReadIndex { context, lease })
                    .is_none()
                {
                    self.reads.remove(&context);
                    self.attempt_refused(c);
                }
            }
        }
    }

    /// The attempt certainly had no effect.
    fn attempt_refused(&mut self, c: usize) {
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
        if matches!(busy.waiting, Waiting::Read { .. })
            || matches!(self.history[op].call, ClientCall::Get { .. })
        {
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
    fn finish(&mut self, c: usize, outcome: Outcome, ret: Option<ClientRet>) {
        let Some(busy) = self.clients[c].busy.take() else {
            return;
        };
        let op = busy.op;
        for request in &self.history[op].attempts {
            self.requests.remove(request);
        }
        if let Waiting::Read { context, .. } = busy.waiting {
            self.reads.remove(&context);
        }
        let record = &mut self.history[op];
        record.outcome = outcome;
        if outcome == Outcome::Ok {
            record.complete_step = Some(self.now);
            if let Some(ret) = &ret {
                self.clients[c].observe(&record.call, ret);
            }
            record.ret = ret;
        }
        self.trace.note(self.now, || {
            format!(
                "c{} completes #{op} {outcome:?} {:?}",
                c + 1,
                self.history[op].ret
            )
        });
        let think = self.think_steps();
        self.schedule_in(think, Event::ClientWake(c));
    }

    /// Every request waiting on a crashed node has an unknown outcome.
    pub(crate) fn node_lost_requests(&mut self, id: NodeId) {
        self.requests.retain(|r, _| r.node != id.0);
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

    /// Wakes the clients whose answers a step on `id` produced.
    pub(crate) fn answer_clients(&mut self, id: NodeId, applied: &[Applied], outputs: Vec<Output>) {
        for a in applied {
            let Some(request) = a.request else { continue };
            if self.probe.requests.contains(&request) && self.probe.satisfied_step.is_none() {
                self.probe.satisfied_step = Some(self.now);
                self.trace
                    .note(self.now, || "liveness probe committed".into());
            }
            if request.node != id.0 {
                continue;
            }
            let Some((c, op)) = self.requests.remove(&request) else {
                continue;
            };
            if self.clients[c].busy.as_ref().is_none_or(|b| b.op != op) {
                continue;
            }
            match &a.result {
                Some(OpResult::StaleSeq { .. }) | None => {
                    let detail = format!("c{} op #{op} was answered {:?}", c + 1, a.result);
                    return self.fail("deduplication", detail);
                }
                Some(result) => {
                    let ret = ClientRet::Write(result.clone());
                    self.finish(c, Outcome::Ok, Some(ret));
                }
            }
        }
        for out in outputs {
            for rs in out.read_states {
                let Some(&c) = self.reads.get(&rs.context) else {
                    continue;
                };
                if let Some(b) = self.clients[c].busy.as_mut()
                    && let Waiting::Read { index, .. } = &mut b.waiting
                {
                    *index = Some(rs.index);
                }
            }
            for context in out.dropped_reads {
                if let Some(&c) = self.reads.get(&context) {
                    self.trace
                        .note(self.now, || format!("{id} drops read {context}"));
                    self.finish(c, Outcome::Failed, None);
                }
            }
        }
        self.serve_reads(id);
    }

    /// Serves every confirmed read on `id` whose index the node applied.
    fn serve_reads(&mut self, id: NodeId) {
        let Some(replica) = self.node(id).replica() else {
            return;
        };
        let applied = LogIndex(replica.state.applied_index());
        let mut ready = Vec::new();
        for (c, client) in self.clients.iter().enumerate() {
            let Some(busy) = &client.busy else { continue };
            if let Waiting::Read {
                node,
                index: Some(index),
                ..
            } = busy.waiting
                && node == id.0
                && index <= applied
                && let ClientCall::Get { key } = &self.history[busy.op].call
            {
                let value = replica.state.get(key).map(|(v, _)| v.to_string());
                ready.push((c, value));
            }
        }
        for (c, value) in ready {
            self.finish(c, Outcome::Ok, Some(ClientRet::Get(value)));
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
