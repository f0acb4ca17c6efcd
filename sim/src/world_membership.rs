//! Membership changes at random points: the world proposes
//! `ConfChange::Enter` on the leader, naming nodes chosen against the
//! configuration in force when the fault fires. Spare nodes start with an
//! empty configuration and learn it from the log (entry 1 is the
//! bootstrap configuration) or from a snapshot.

use crate::faults::MembershipChange;
use crate::world::World;
use crate::world_triggers::Armed;
use kv_replica::membership_waiters::{ChangeOutcome, CoreNow};
use raft_core::{Accepted, ConfChange, ConfChangeStep, Input, LogIndex, Membership, NodeId, Role};

impl World {
    /// After a step of `id`: the membership changes it proposed as leader
    /// that are now in force or lost, by kv-replica's rules (the ones
    /// kv-node's driver answers `POST /cluster/members` by), traced.
    pub(crate) fn settle_changes(&mut self, id: NodeId) {
        let node = &mut self.nodes[id.0 as usize - 1];
        if node.changes.is_empty() {
            return;
        }
        let mut changes = std::mem::take(&mut node.changes);
        let Some(replica) = node.replica() else {
            return;
        };
        let core = &replica.node;
        let now = CoreNow {
            applied: LogIndex(replica.state.applied_index()),
            term: core.term(),
            leading: core.role() == Role::Leader,
            joint: core.membership().is_joint(),
        };
        let ended = changes.settle(now, |index| core.log_term(index));
        node.changes = changes;
        for (i, outcome) in ended {
            let text = match outcome {
                ChangeOutcome::InForce { index } => format!("in force at {index}"),
                ChangeOutcome::Replaced => "replaced by another leader's entry".into(),
                ChangeOutcome::UnknownAfterApply | ChangeOutcome::UnknownBeforeApply => {
                    "outcome unknown (leadership changed)".into()
                }
            };
            self.trace
                .note(self.now, || format!("fault #{i}: {id}'s change {text}"));
        }
    }

    /// Every node slot, spares included.
    pub(crate) fn all_ids(&self) -> Vec<NodeId> {
        (1..=self.nodes.len() as u64).map(NodeId).collect()
    }

    /// The fewest voters a change may leave: one fewer than the initial
    /// cluster, so that a majority of them stays easy to keep alive.
    /// A cluster grown from one voter may shrink back to one.
    fn min_voters(&self) -> usize {
        if self.plan.single_voter_start {
            return 1;
        }
        self.opts.nodes.saturating_sub(1).max(1)
    }

    fn pick(&mut self, from: &[NodeId]) -> Option<NodeId> {
        if from.is_empty() {
            return None;
        }
        Some(from[self.rng.range(0, from.len() as u64 - 1) as usize])
    }

    /// The steps of `change` against `config`, avoiding `busy` nodes; None
    /// if the configuration does not allow it (too few voters, no spare).
    fn resolve_change(
        &mut self,
        change: MembershipChange,
        leader: NodeId,
        config: &Membership,
        busy: &[NodeId],
    ) -> Option<Vec<ConfChangeStep>> {
        let free = |ids: Vec<NodeId>| -> Vec<NodeId> {
            ids.into_iter().filter(|n| !busy.contains(n)).collect()
        };
        let outsiders = free(
            self.all_ids()
                .into_iter()
                .filter(|&n| !config.is_member(n))
                .collect(),
        );
        let learners = free(config.learners.iter().copied().collect());
        let others = free(
            config
                .voters
                .iter()
                .copied()
                .filter(|&v| v != leader)
                .collect(),
        );
        let can_remove = config.voters.len() > self.min_voters();
        use ConfChangeStep::{AddLearner, AddVoter, Remove};
        match change {
            MembershipChange::AddLearner => Some(vec![AddLearner(self.pick(&outsiders)?)]),
            MembershipChange::Promote => match self.pick(&learners) {
                Some(learner) => Some(vec![AddVoter(learner)]),
                None => Some(vec![AddLearner(self.pick(&outsiders)?)]),
            },
            MembershipChange::AddVoter => Some(vec![AddVoter(self.pick(&outsiders)?)]),
            MembershipChange::RemoveVoter if can_remove => Some(vec![Remove(self.pick(&others)?)]),
            MembershipChange::RemoveVoter => Some(vec![Remove(self.pick(&learners)?)]),
            MembershipChange::RemoveLeader if can_remove => Some(vec![Remove(leader)]),
            MembershipChange::RemoveLeader => None,
            MembershipChange::Replace { count } => {
                let mut incoming: Vec<NodeId> = learners.into_iter().chain(outsiders).collect();
                let mut outgoing = others;
                let mut steps = Vec::new();
                let mut removed = Vec::new();
                for _ in 0..count {
                    let (Some(new), Some(old)) = (self.pick(&incoming), self.pick(&outgoing))
                    else {
                        break;
                    };
                    incoming.retain(|&n| n != new);
                    outgoing.retain(|&n| n != old);
                    steps.push(AddVoter(new));
                    removed.push(Remove(old));
                }
                steps.extend(removed);
                (!steps.is_empty()).then_some(steps)
            }
        }
    }

    /// Proposes `steps` on `leader`; true if the leader appended the change.
    fn propose_change(&mut self, i: usize, leader: NodeId, steps: &[ConfChangeStep]) -> bool {
        let change = ConfChange::Enter(steps.to_vec());
        // Registered before the `Ready` is handled, as kv-node's driver
        // registers its membership waiters.
        let stepped = self.step_undriven(leader, Input::ProposeConfChange(change));
        if let Some(Accepted::Appended { index, term }) = stepped {
            (self.node_mut(leader).changes).proposed(index, term, true, i);
        }
        if self.violation.is_none() {
            self.drive(leader);
        }
        let accepted = stepped.is_some();
        self.trace.note(self.now, || {
            format!(
                "fault #{i}: {leader} {} {steps:?}",
                if accepted { "proposes" } else { "refuses" }
            )
        });
        accepted
    }

    /// Fires a membership fault; None if no leader or nothing to change.
    pub(crate) fn membership_start(
        &mut self,
        i: usize,
        change: MembershipChange,
        burst: bool,
        split: bool,
    ) -> Option<String> {
        let leader = self.leader()?;
        let (term, config) = {
            let node = &self.node(leader).replica()?.node;
            (node.term(), node.membership().clone())
        };
        let steps = self.resolve_change(change, leader, &config, &[])?;
        if !self.propose_change(i, leader, &steps) {
            return Some(format!("membership change {steps:?} refused by {leader}"));
        }
        let voter_added = |steps: &[ConfChangeStep]| -> Vec<NodeId> {
            steps
                .iter()
                .filter_map(|s| match *s {
                    ConfChangeStep::AddVoter(n) => Some(n),
                    _ => None,
                })
                .collect()
        };
        let mut incoming = voter_added(&steps);
        let mut text = format!("{leader} proposes {steps:?}");
        if burst {
            let busy: Vec<NodeId> = steps
                .iter()
                .map(|s| match *s {
                    ConfChangeStep::AddVoter(n)
                    | ConfChangeStep::AddLearner(n)
                    | ConfChangeStep::Remove(n) => n,
                })
                .collect();
            let second = MembershipChange::Replace { count: 1 };
            if let Some(more) = self.resolve_change(second, leader, &config, &busy)
                && self.node(leader).is_live()
                && self.propose_change(i, leader, &more)
            {
                incoming.extend(voter_added(&more));
                text.push_str(&format!(", then {more:?} at once"));
            }
        }
        if split && self.opts.cut_removed_leader && steps == [ConfChangeStep::Remove(leader)] {
            let duration_ticks = self.plan.schedule[i].duration_ticks;
            self.armed.insert(
                i,
                Armed::CutRemovedLeader {
                    leader,
                    term,
                    duration_ticks,
                },
            );
            text.push_str(", cut it off one way once its removal commits");
        } else if split && !incoming.is_empty() {
            let duration_ticks = self.plan.schedule[i].duration_ticks;
            self.armed.insert(
                i,
                Armed::Split {
                    leader,
                    term,
                    incoming,
                    duration_ticks,
                },
            );
            text.push_str(", split once it commits");
        }
        Some(text)
    }

    /// The configuration the run ends with: that of the node with the
    /// highest commit index (the leader's, once the final phase settled).
    pub(crate) fn final_members(&self) -> Vec<NodeId> {
        let best = self
            .nodes
            .iter()
            .filter_map(|n| n.replica())
            .max_by_key(|r| (r.node.commit_index(), r.node.term()));
        match best {
            Some(r) => r
                .node
                .membership()
                .members()
                .into_iter()
                .filter(|n| (n.0 as usize) <= self.nodes.len())
                .collect(),
            None => self.all_ids(),
        }
    }

    /// Spare nodes wait with an empty configuration for a change to name them.
    pub(crate) fn bootstrap_for(&self, id: NodeId) -> Membership {
        if self.plan.single_voter_start {
            // Grown from one voter: only node 1 starts in a configuration.
            return if id == NodeId(1) {
                Membership::new([NodeId(1)])
            } else {
                Membership::default()
            };
        }
        if (id.0 as usize) <= self.opts.nodes {
            Membership::new((1..=self.opts.nodes as u64).map(NodeId))
        } else {
            Membership::default()
        }
    }
}
