//! The final phase: every fault heals, a probe write measures liveness, and
//! the run ends with the checks that need the whole run (convergence,
//! durability of acknowledged writes, linearizability).
//!
//! Liveness is a bound with one allowance. A write must commit within
//! `LIVENESS_BOUND_TICKS` of the heal, unless the voters a commit needs are
//! still catching up: a seed may draw one entry per message and one message
//! in flight, and a voter hundreds of entries behind then takes longer than
//! the bound although nothing is stuck. So each deadline without a commit
//! looks at the quorum's log ([`World::quorum_last_index`]): if it grew since
//! the last look, the deadline moves on by `CATCH_UP_WINDOW_TICKS`, for at
//! most `MAX_CATCH_UP_TICKS` in all; if it did not, the cluster is stuck and
//! the run fails. A cluster with no leader, or whose leader cannot get a
//! quorum to accept entries, makes no such progress and fails at the first
//! deadline, as before. The end of the run is extended the same way while a
//! member of the final configuration is still applying what it is sent.

use crate::client::{ClientRet, Outcome};
use crate::faults::STEPS_PER_TICK;
use crate::options::{CATCH_UP_WINDOW_TICKS, LIVENESS_BOUND_TICKS, MAX_CATCH_UP_TICKS};
use crate::world::{Event, World};
use kv_replica::command::{Command, Op, RequestId};
use raft_core::{Input, LogIndex, NodeId};
use std::collections::BTreeMap;

/// What the final phase tracks to tell catching up from stuck.
#[derive(Debug, Default)]
pub(crate) struct CatchUp {
    /// The quorum's last index at the previous liveness look.
    pub quorum_mark: Option<LogIndex>,
    /// The lowest applied index among the final members at the previous
    /// look at the end of the run.
    pub applied_mark: Option<u64>,
    /// Ticks the run was extended by.
    pub extended_ticks: u64,
}

impl World {
    /// The final phase: every fault heals, and liveness is measured.
    pub(crate) fn heal(&mut self) {
        self.trace.note(self.now, || "final heal".into());
        self.plan.healed = true;
        self.network.heal_all();
        self.active_links.clear();
        self.paused_by.clear();
        self.armed.clear();
        self.full_disks.clear();
        self.slow_disks.clear();
        for id in self.all_ids() {
            self.unfill_disk(id);
            if let Some(r) = self.node_mut(id).replica_mut() {
                r.disk.armed = None;
            }
            if self.node(id).paused {
                self.resume(id);
            }
            self.start_node(id);
        }
        self.probe.healed_step = Some(self.now);
        self.catch_up.quorum_mark = self.quorum_last_index();
        self.schedule_in(STEPS_PER_TICK, Event::Probe);
        self.schedule_in(
            LIVENESS_BOUND_TICKS * STEPS_PER_TICK,
            Event::LivenessDeadline,
        );
    }

    /// The highest index held by a quorum of the current leader's
    /// configuration (both halves if joint), from each voter's own log:
    /// what the leader could commit once those entries are acknowledged.
    /// None without a leader.
    pub(crate) fn quorum_last_index(&self) -> Option<LogIndex> {
        let leader = self.leader()?;
        let membership = self.node(leader).replica()?.node.membership().clone();
        let acked: BTreeMap<NodeId, LogIndex> = membership
            .voters
            .iter()
            .chain(&membership.outgoing)
            .filter_map(|&id| {
                let replica = self.nodes.get(id.0 as usize - 1)?.replica()?;
                Some((id, replica.node.last_index()))
            })
            .collect();
        Some(membership.committed_index(&acked))
    }

    /// True while catching up may still extend the final phase.
    fn may_extend(&self) -> bool {
        self.catch_up.extended_ticks < MAX_CATCH_UP_TICKS
    }

    /// Final phase: proposes a write every few ticks until one commits.
    pub(crate) fn probe(&mut self) {
        if self.probe.satisfied_step.is_some() {
            return;
        }
        let node = NodeId(self.rng.range(1, self.nodes.len() as u64));
        if self.node(node).is_live() {
            let request = RequestId {
                node: node.0,
                id: self.next_request,
            };
            self.next_request += 1;
            self.probe.requests.insert(request);
            let command = Command {
                request: Some(request),
                client: None,
                op: Op::Put {
                    key: "__probe".into(),
                    value: format!("{}", request.id),
                },
            };
            self.step_node(
                node,
                Input::Propose {
                    data: command.encode(),
                },
            );
        }
        self.schedule_in(5 * STEPS_PER_TICK, Event::Probe);
    }

    /// No write committed yet: fails unless the quorum is catching up.
    pub(crate) fn liveness_deadline(&mut self) {
        if self.probe.satisfied_step.is_some() {
            return;
        }
        let quorum = self.quorum_last_index();
        let caught_up_more = match (quorum, self.catch_up.quorum_mark) {
            (Some(now), Some(before)) => now > before,
            (Some(_), None) => true,
            (None, _) => false,
        };
        let healed = self.probe.healed_step.unwrap_or(self.now);
        let waited_ticks = (self.now - healed) / STEPS_PER_TICK;
        if caught_up_more && waited_ticks < LIVENESS_BOUND_TICKS + MAX_CATCH_UP_TICKS {
            self.catch_up.quorum_mark = quorum;
            self.trace.note(self.now, || {
                format!("liveness: no commit yet, the quorum caught up to {quorum:?}: wait")
            });
            return self.schedule_in(
                CATCH_UP_WINDOW_TICKS * STEPS_PER_TICK,
                Event::LivenessDeadline,
            );
        }
        let mut detail = format!(
            "no write committed within {waited_ticks} ticks of the final heal, and the quorum's log stopped growing at {quorum:?}"
        );
        for node in &self.nodes {
            let Some(r) = node.replica() else {
                detail.push_str(&format!("\n{} is down", node.id));
                continue;
            };
            let s = r.node.status();
            let m = &s.membership;
            detail.push_str(&format!(
                "\n{} {:?} term {} vote {:?} last {}@{} commit {} voters {:?} outgoing {:?} learners {:?}",
                s.id, s.role, s.term, s.vote, s.last_log_index, s.last_log_term, s.commit_index,
                m.voters, m.outgoing, m.learners
            ));
        }
        self.fail("liveness", detail);
    }

    /// At the planned end of the run: the ticks to run on, if a member of
    /// the final configuration is still catching up (or the liveness probe
    /// is still waiting on a quorum that catches up).
    pub(crate) fn extension_ticks(&mut self) -> Option<u64> {
        if self.violation.is_some()
            || self.hostile_sent > 0
            || !self.may_extend()
            || self.probe.healed_step.is_none()
        {
            return None;
        }
        let extend = if self.probe.satisfied_step.is_none() {
            // The pending liveness deadline decides: it fails or waits on.
            true
        } else {
            let lowest = self.lowest_applied_index();
            let more = lowest.is_some_and(|now| self.catch_up.applied_mark.is_none_or(|b| now > b));
            self.catch_up.applied_mark = lowest;
            more && self.convergence().is_err()
        };
        extend.then(|| {
            self.catch_up.extended_ticks += CATCH_UP_WINDOW_TICKS;
            self.trace.note(self.now, || {
                "a member is still catching up: the run goes on".to_string()
            });
            CATCH_UP_WINDOW_TICKS
        })
    }

    /// The lowest applied index among the members of the final
    /// configuration that are up.
    fn lowest_applied_index(&self) -> Option<u64> {
        let members = self.final_members();
        self.nodes
            .iter()
            .filter(|n| members.contains(&n.id))
            .filter_map(|n| n.replica())
            .map(|r| r.state.applied_index())
            .min()
    }

    /// Every member of the final configuration reached the same state (a
    /// removed node, or a spare never added, hears nothing more). Ok holds
    /// the applied index they agree on.
    fn convergence(&self) -> Result<u64, String> {
        let members = self.final_members();
        let mut states = Vec::new();
        for node in self.nodes.iter().filter(|n| members.contains(&n.id)) {
            match node.replica() {
                Some(r) => states.push((node.id, r.state.applied_index(), r.state.digest())),
                None => return Err(format!("{} is down at the end", node.id)),
            }
        }
        let (first_id, first_index, first_digest) = states[0];
        for &(id, index, digest) in &states[1..] {
            if index != first_index || digest != first_digest {
                return Err(format!(
                    "{first_id} applied {first_index} (digest {first_digest:016x}), {id} applied {index} (digest {digest:016x})"
                ));
            }
        }
        Ok(first_index)
    }

    /// Checks that need the whole run: convergence, durability of
    /// acknowledged writes, liveness.
    pub(crate) fn final_checks(&mut self) {
        for op in &mut self.history {
            if op.outcome == Outcome::Pending {
                op.outcome = if op.call.is_read() {
                    Outcome::Failed
                } else {
                    Outcome::Unknown
                };
            }
        }
        if self.hostile_sent > 0 {
            // Forged data owes no convergence, liveness or linearizability.
            return;
        }
        if self.probe.healed_step.is_some() && self.probe.satisfied_step.is_none() {
            // The run ended before a deadline could decide.
            self.catch_up.quorum_mark = Some(LogIndex(u64::MAX));
            return self.liveness_deadline();
        }
        let first_index = match self.convergence() {
            Ok(index) => index,
            Err(detail) => return self.fail("replicas converge", detail),
        };
        // No acknowledged write was lost.
        for (n, op) in self.history.iter().enumerate() {
            let Some(ClientRet::Write(result)) = &op.ret else {
                continue;
            };
            let Some(revision) = result.revision() else {
                continue;
            };
            let holds = revision <= first_index
                && self
                    .checker
                    .applied_request(revision)
                    .flatten()
                    .is_some_and(|r| op.attempts.contains(&r));
            if !holds {
                let detail = format!(
                    "op #{n} of c{} was acknowledged at revision {revision}, which holds another entry",
                    op.client
                );
                return self.fail("acknowledged writes survive", detail);
            }
        }
        self.check_history();
        if self.violation.is_none() {
            self.check_watchers();
        }
        if self.violation.is_none() {
            self.check_lease_expiries();
        }
    }
}
