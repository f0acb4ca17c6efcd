//! Leadership transfers, restarts inside the lease, and a single voter that
//! dies in the fsync of its campaign (see `FaultKind::Transfer`,
//! `FaultKind::Restart`, `FaultKind::Grow`).

use crate::disk::SyncFailure;
use crate::faults::{Partition, STEPS_PER_TICK, TransferShape};
use crate::world::{Event, World};
use kv_replica::command::{Command, Op};
use raft_core::{ConfChange, ConfChangeStep, Input, Message, MessageBody, NodeId, Role};

/// Ticks between the asks of a retried transfer.
const RETRY_TICKS: u64 = 5;

/// How long a rival follower stays cut off from the leader.
const RIVAL_CUT_TICKS: u64 = 40;

/// A transfer whose TimeoutNow from `leader` to `target` is held back.
pub(crate) struct HoldTimeoutNow {
    fault: usize,
    leader: NodeId,
    target: NodeId,
    /// The first TimeoutNow is on its way, late.
    held: bool,
}

impl World {
    /// The voters of `leader`'s configuration other than itself.
    fn other_voters(&self, leader: NodeId) -> Vec<NodeId> {
        let Some(r) = self.node(leader).replica() else {
            return Vec::new();
        };
        let m = r.node.membership();
        m.voters
            .iter()
            .chain(&m.outgoing)
            .copied()
            .filter(|&v| v != leader && (v.0 as usize) <= self.nodes.len())
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect()
    }

    /// The other voter with the lowest match index on `leader`.
    fn most_lagging_voter(&self, leader: NodeId) -> Option<NodeId> {
        let status = self.node(leader).replica()?.node.status();
        self.other_voters(leader)
            .into_iter()
            .min_by_key(|v| status.match_index.get(v).copied().unwrap_or_default())
    }

    fn random_voter(&mut self, leader: NodeId) -> Option<NodeId> {
        let voters = self.other_voters(leader);
        if voters.is_empty() {
            return None;
        }
        Some(voters[self.rng.range(0, voters.len() as u64 - 1) as usize])
    }

    /// Asks `leader` to hand leadership to `to`; the refusal is traced.
    fn ask_transfer(&mut self, i: usize, leader: NodeId, to: NodeId) {
        if !self.node(leader).is_live() {
            return;
        }
        let accepted = self
            .step_node(leader, Input::TransferLeadership { to })
            .is_some();
        self.trace.note(self.now, || {
            format!(
                "fault #{i}: {leader} {} a transfer to {to}",
                if accepted { "takes" } else { "refuses" }
            )
        });
    }

    /// Starts a transfer fault; None without a leader or another voter.
    pub(crate) fn transfer_start(&mut self, i: usize, shape: TransferShape) -> Option<String> {
        let leader = self.leader()?;
        let duration_ticks = self.plan.schedule[i].duration_ticks.max(1);
        let target = match shape {
            TransferShape::ToSnapshotCatchUp => {
                return self
                    .lag_start(i, true)
                    .map(|text| format!("{text}, then transfer to it"));
            }
            TransferShape::UnderLoad
            | TransferShape::Aborted
            | TransferShape::Retried
            | TransferShape::HeldTimeoutNow => self.random_voter(leader)?,
            TransferShape::ToLagging | TransferShape::Cancelled | TransferShape::TargetRemoved => {
                self.most_lagging_voter(leader)?
            }
        };
        match shape {
            TransferShape::Aborted | TransferShape::Retried => {
                let links = self.network.links(&Partition::IsolateLeader, target);
                self.cut_links(i, &links);
                self.schedule_in(duration_ticks * STEPS_PER_TICK, Event::FaultEnd(i));
            }
            TransferShape::TargetRemoved => {
                let voters = self.other_voters(leader).len() + 1;
                // Not while a node awaits repair: removing another voter
                // can leave a configuration in which the damaged node's
                // vote is needed, and it grants none until a leader
                // repairs it (by design), so no leader is ever elected
                // (seed 540: n3 rotted at tick 169, n1's removal proposed
                // at 170, {n2, n3} left to win). Damage is injected only
                // in an unchanged configuration (`may_damage`) for the
                // same reason.
                if voters > 1 && !self.awaiting_repair() {
                    let change = ConfChange::Enter(vec![ConfChangeStep::Remove(target)]);
                    let accepted = self
                        .step_node(leader, Input::ProposeConfChange(change))
                        .is_some();
                    self.trace.note(self.now, || {
                        format!("fault #{i}: {leader} proposes removing {target}: {accepted}")
                    });
                }
            }
            TransferShape::HeldTimeoutNow => {
                self.hold_timeout_now = Some(HoldTimeoutNow {
                    fault: i,
                    leader,
                    target,
                    held: false,
                });
            }
            _ => {}
        }
        self.ask_transfer(i, leader, target);
        let again = match shape {
            TransferShape::Cancelled => Some((leader, self.rng.range(1, 4))),
            TransferShape::Retried => Some((target, RETRY_TICKS)),
            _ => None,
        };
        if let Some((to, after_ticks)) = again {
            self.schedule_in(
                after_ticks * STEPS_PER_TICK,
                Event::TransferAgain {
                    fault: i,
                    leader,
                    to,
                    rounds_left: duration_ticks / RETRY_TICKS,
                },
            );
        }
        Some(format!(
            "{leader} transfers leadership to {target} ({shape:?})"
        ))
    }

    /// A follow-up ask of a cancelled or retried transfer, while `leader`
    /// still leads.
    pub(crate) fn transfer_again(
        &mut self,
        i: usize,
        leader: NodeId,
        to: NodeId,
        rounds_left: u64,
    ) {
        let leads = self
            .node(leader)
            .replica()
            .is_some_and(|r| r.node.role() == Role::Leader);
        if !leads {
            return;
        }
        self.ask_transfer(i, leader, to);
        if to != leader && rounds_left > 1 {
            self.schedule_in(
                RETRY_TICKS * STEPS_PER_TICK,
                Event::TransferAgain {
                    fault: i,
                    leader,
                    to,
                    rounds_left: rounds_left - 1,
                },
            );
        }
    }

    /// Takes the TimeoutNow of a held transfer out of the network and lets
    /// it go after the transfer has timed out and the leader has renewed
    /// its lease; other messages pass through.
    pub(crate) fn maybe_hold_timeout_now(&mut self, m: Message) -> Option<Message> {
        let Some(hold) = &mut self.hold_timeout_now else {
            return Some(m);
        };
        if hold.leader != m.from || hold.target != m.to || m.body != MessageBody::TimeoutNow {
            return Some(m);
        }
        let fault = hold.fault;
        if hold.held {
            // The leader repeats TimeoutNow while the transfer is pending:
            // the repeats are lost, the first one arrives late.
            self.trace.note(self.now, || {
                format!(
                    "fault #{fault}: repeated TimeoutNow {} -> {} lost",
                    m.from, m.to
                )
            });
            return None;
        }
        hold.held = true;
        // The transfer times out after the minimum election timeout (10
        // ticks); heartbeat rounds after that renew the lease.
        let hold_ticks = self.rng.range(12, 20);
        self.trace.note(self.now, || {
            format!(
                "fault #{fault}: TimeoutNow {} -> {} held {hold_ticks} ticks",
                m.from, m.to
            )
        });
        self.schedule_in(
            hold_ticks * STEPS_PER_TICK,
            Event::LateTimeoutNow { fault, message: m },
        );
        None
    }

    /// Delivers a held TimeoutNow and cuts every link into the old leader
    /// for the fault's duration, so it learns of no newer term while its
    /// lease lasts.
    pub(crate) fn late_timeout_now(&mut self, i: usize, m: Message) {
        self.hold_timeout_now = None;
        if !self.plan.healed {
            let leader = m.from;
            let links: Vec<(NodeId, NodeId)> = (1..=self.nodes.len() as u64)
                .map(NodeId)
                .filter(|&n| n != leader)
                .map(|n| (n, leader))
                .collect();
            self.cut_links(i, &links);
            let ticks = self.plan.schedule[i].duration_ticks.clamp(15, 40);
            self.schedule_in(ticks * STEPS_PER_TICK, Event::FaultEnd(i));
            // Readers that stay with the node they saw leading.
            self.steer_reads = Some((leader, self.now + ticks * STEPS_PER_TICK));
        }
        // Straight to the target: the point is its arrival, not its loss.
        self.schedule_in(1, Event::Deliver(m));
    }

    /// A follower let back after lagging: transfer leadership to it.
    pub(crate) fn transfer_to(&mut self, i: usize, follower: NodeId) {
        if let Some(leader) = self.leader()
            && leader != follower
        {
            self.ask_transfer(i, leader, follower);
        }
    }

    /// Crashes a follower of the leader and restarts it a tick or two
    /// later, well inside the leader's lease; with `rival`, first cuts
    /// another follower off from the leader so that it campaigns then.
    pub(crate) fn quick_restart(&mut self, i: usize, rival: bool) -> Option<String> {
        let leader = self.leader()?;
        let mut followers: Vec<NodeId> = self
            .other_voters(leader)
            .into_iter()
            .filter(|&n| self.node(n).replica().is_some())
            .collect();
        if followers.is_empty() {
            return None;
        }
        self.rng.shuffle(&mut followers);
        let follower = followers[0];
        let down_ticks = self.plan.schedule[i].duration_ticks.clamp(1, 3);
        if rival && followers.len() >= 2 {
            let rival = followers[1];
            let links = vec![(leader, rival), (rival, leader)];
            self.cut_links(i, &links);
            self.schedule_in(RIVAL_CUT_TICKS * STEPS_PER_TICK, Event::FaultEnd(i));
            // Readers that stay with the leader whose lease is at stake.
            self.steer_reads = Some((leader, self.now + RIVAL_CUT_TICKS * STEPS_PER_TICK));
            // Just before the rival's election timer (10 to 20 ticks) fires.
            let after = self.rng.range(8, 16) * STEPS_PER_TICK;
            self.schedule_in(
                after,
                Event::CrashFor {
                    node: follower,
                    down_ticks,
                    cut: Some((i, leader)),
                },
            );
            return Some(format!(
                "cut {rival} off from {leader}, restart {follower} as {rival} campaigns"
            ));
        }
        self.crash_for(follower, down_ticks);
        Some(format!(
            "restart follower {follower} of {leader} within {down_ticks} ticks"
        ))
    }

    /// Crashes `node` if it is up and restarts it `down_ticks` later.
    pub(crate) fn crash_for(&mut self, node: NodeId, down_ticks: u64) {
        if self.plan.healed || self.node(node).replica().is_none() {
            return;
        }
        self.crash_node(node, "restart inside the lease");
        self.schedule_restart(node, down_ticks * STEPS_PER_TICK);
    }

    /// A voter restarts, campaigns and takes `tail` proposals in one batch,
    /// and dies in the fsync of that batch (what it sent went out).
    pub(crate) fn campaign_crash(&mut self, i: usize, tail: u32) -> Option<String> {
        let id = self.leader().unwrap_or(NodeId(1));
        self.node(id).replica()?;
        self.crash_node(id, "fault: restart to campaign");
        self.start_node(id);
        let replica = self.node_mut(id).replica_mut()?;
        if !replica.node.membership().is_voter(id) {
            return None;
        }
        replica.disk.armed = Some(SyncFailure::NextVote);
        self.node_mut(id).sync_crash_down_ticks = self.plan.schedule[i].duration_ticks.max(1);
        let mut inputs = vec![Input::Campaign];
        for k in 0..tail {
            let command = Command {
                request: None,
                client: None,
                op: Op::Put {
                    key: "__campaign".into(),
                    value: format!("{i}.{k}"),
                },
            };
            inputs.push(Input::Propose {
                data: command.encode(),
            });
        }
        self.step_inputs(id, inputs);
        Some(format!(
            "{id} restarts, campaigns with {tail} proposals in one batch and dies in that fsync"
        ))
    }
}
