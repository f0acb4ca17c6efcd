//! Lease clients in the world: keepalives served as kv-node's driver serves
//! them (`kv-node/src/driver/lease.rs`: the countdown restarts when the
//! keepalive arrives, the answer waits for a ReadIndex round confirming the
//! leadership, then asks the replica again), the first application of each
//! lease's expiry, and the lease checks (see `lease_client`).

use crate::client::{ClientCall, ClientKind, ClientRet, Outcome, Waiting};
use crate::disk::SimDisk;
use crate::faults::STEPS_PER_TICK;
use crate::lease_client::{LeaseLife, LeasePhase};
use crate::options::LIVENESS_BOUND_TICKS;
use crate::world::World;
use kv_replica::lease_clock::{EXPIRE_RETRY_TICKS, KeepaliveRefused};
use kv_replica::replica::Replica;
use raft_core::{Input, NodeId};

/// The answer to a keepalive once its read index is applied; None if the
/// node no longer leads (the client may retry elsewhere).
pub(crate) fn answer_keepalive(replica: &mut Replica<SimDisk>, lease: u64) -> Option<ClientRet> {
    match replica.lease_keepalive(lease) {
        Ok(ttl_ms) => Some(ClientRet::KeptAlive { ttl_ms }),
        Err(KeepaliveRefused::NotFound) => Some(ClientRet::LeaseGone),
        Err(KeepaliveRefused::NotLeader) => None,
    }
}

impl World {
    /// A keepalive arrives at `node`: restart the countdown (if it leads)
    /// and start the ReadIndex round that confirms the leadership.
    pub(crate) fn submit_keepalive(&mut self, c: usize, node: NodeId, lease: u64) {
        let now = self.now;
        let Some(replica) = self.node_mut(node).replica_mut() else {
            return self.attempt_refused(c);
        };
        if replica.lease_keepalive(lease) == Err(KeepaliveRefused::NotLeader) {
            return self.attempt_refused(c);
        }
        if let Some(life) = self.leases.iter_mut().find(|l| l.id == lease) {
            life.last_sent = Some(now);
        }
        self.keepalive_arrival.insert(c, now);
        let context = self.next_context;
        self.next_context += 1;
        self.clients[c].busy.as_mut().expect("busy").waiting = Waiting::Read {
            node: node.0,
            context,
        };
        let accepted = self.step_undriven(
            node,
            Input::ReadIndex {
                context,
                lease: false,
            },
        );
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

    /// A lease client's operation `op` ended: records what it means for its
    /// leases and moves the client on. Returns the steps to wait before its
    /// next operation (None for other clients).
    pub(crate) fn lease_op_ended(&mut self, c: usize, op: usize) -> Option<u64> {
        let ClientKind::Lease(owner) = &self.clients[c].kind else {
            return None;
        };
        let before = owner.phase.clone();
        let record = &self.history[op];
        let ret = (record.outcome == Outcome::Ok)
            .then_some(record.ret.as_ref())
            .flatten()
            .cloned();
        if let (ClientCall::Keepalive { lease }, Some(ClientRet::KeptAlive { .. })) =
            (&record.call, &ret)
            && let Some(arrived) = self.keepalive_arrival.get(&c).copied()
            && let Some(life) = self.leases.iter_mut().find(|l| l.id == *lease)
        {
            life.last_answered = Some(life.last_answered.unwrap_or(0).max(arrived));
        }
        if let (ClientCall::Write(kv_replica::command::Op::PutWithLease { key, lease, .. }), _) =
            (&record.call, &ret)
            && let Some(life) = self.leases.iter_mut().find(|l| l.id == *lease)
        {
            // Attached if it applied, perhaps: an unknown put counts too.
            life.keys.push(key.clone());
        }
        self.keepalive_arrival.remove(&c);
        let count = self.leases.len();
        let granted = self.clients[c].lease_answered(ret.as_ref(), &mut self.rng, count);
        if let Some((id, ttl_ms)) = granted {
            self.trace
                .note(self.now, || format!("c{} holds lease {id}", c + 1));
            self.leases.push(LeaseLife {
                owner: c,
                id,
                ttl_ms,
                keys: Vec::new(),
                last_answered: None,
                last_sent: None,
                granted_step: self.now,
                stopped: false,
                expired_step: None,
            });
        }
        let ClientKind::Lease(owner) = &self.clients[c].kind else {
            unreachable!("checked above");
        };
        let stopped = match (&before, &owner.phase) {
            (LeasePhase::KeepAlive { lease, .. }, LeasePhase::Grant)
            | (LeasePhase::Attach { lease, .. }, LeasePhase::Grant) => Some(*lease),
            _ => None,
        };
        let ttl_ticks = match &owner.phase {
            LeasePhase::KeepAlive { lease, .. } => self.leases[*lease].ttl_ticks(),
            _ => 3,
        };
        if let Some(lease) = stopped {
            self.leases[lease].stopped = true;
            let id = self.leases[lease].id;
            self.trace
                .note(self.now, || format!("c{} stops keeping lease {id}", c + 1));
        }
        // A keepalive every third of the TTL or so.
        let think = self.rng.range(1, (ttl_ticks / 3).max(1)) * STEPS_PER_TICK;
        Some(think)
    }

    /// After a step of `id`: the leases whose expiry it applied.
    pub(crate) fn observe_lease_expiries(&mut self, id: NodeId) {
        if self.leases.is_empty() {
            return;
        }
        let Some(replica) = self.node(id).replica() else {
            return;
        };
        let applied = replica.state.applied_index();
        let now = self.now;
        let mut expired = Vec::new();
        for (i, life) in self.leases.iter().enumerate() {
            if life.expired_step.is_none()
                && applied >= life.id
                && replica.state.lease(life.id).is_none()
            {
                expired.push(i);
            }
        }
        for i in expired {
            self.leases[i].expired_step = Some(now);
            let life = self.leases[i].clone();
            self.trace.note(now, || {
                format!("{id} applied the expiry of lease {}", life.id)
            });
            let fastest = self.nodes.iter().map(|n| n.tick_period).min().unwrap_or(1);
            if let Some(earliest) = life.earliest_expiry(fastest)
                && now < earliest
            {
                let detail = format!(
                    "lease {} (ttl {} ms = {} ticks) of c{} expired at tick {}, \
                     but a keepalive that arrived at tick {} was answered: not before tick {}",
                    life.id,
                    life.ttl_ms,
                    life.ttl_ticks(),
                    life.owner + 1,
                    now / STEPS_PER_TICK,
                    life.last_answered.unwrap_or(0) / STEPS_PER_TICK,
                    earliest / STEPS_PER_TICK,
                );
                return self.fail("a lease outlives its keepalives", detail);
            }
        }
    }

    /// At the end: every lease its owner stopped keeping alive expired by
    /// its deadline, once the faults healed (see `lease_client`).
    pub(crate) fn check_lease_expiries(&mut self) {
        let Some(healed) = self.probe.healed_step else {
            return;
        };
        let slowest = self.nodes.iter().map(|n| n.tick_period).max().unwrap_or(1);
        let bound = LIVENESS_BOUND_TICKS + EXPIRE_RETRY_TICKS;
        for life in &self.leases {
            if !life.stopped || life.expired_step.is_some() {
                continue;
            }
            let deadline = life.expiry_deadline(healed, slowest, bound);
            if self.now >= deadline {
                let detail = format!(
                    "lease {} (ttl {} ms) of c{}, last kept alive at tick {:?}, \
                     had not expired by tick {} (deadline tick {})",
                    life.id,
                    life.ttl_ms,
                    life.owner + 1,
                    life.last_sent.map(|s| s / STEPS_PER_TICK),
                    self.now / STEPS_PER_TICK,
                    deadline / STEPS_PER_TICK,
                );
                return self.fail("a stopped lease expires", detail);
            }
        }
    }
}
