//! Event-triggered faults: scheduled like the others, but armed when they
//! start and fired by what a node does rather than by the clock. The world
//! looks at a node right after it stepped and before its messages leave, so
//! a cut made then also drops what the step sent.
//!
//! - Figure 8 (Raft paper, figure 8): leader A is cut off with entries of
//!   its own; the next leader B is cut off the moment it is elected (its
//!   no-op never leaves) and A returns; once A leads again, it is cut off
//!   the moment its commit index first advances and B returns. With the
//!   correct commit rule A's first commit covers its new no-op, which the
//!   follower that acknowledged it now holds, so B cannot win that
//!   follower's vote; with `commit_previous_term` A commits an entry of its
//!   earlier term alone, and B is elected without it.
//! - A split after a membership change commits (see `Fault::Membership`).
//! - A crash in the middle of a snapshot transfer.
//! - A follower cut off until it needs a snapshot.

use crate::faults::{Partition, STEPS_PER_TICK};
use crate::world::{Event, World};
use raft_core::{Input, LogIndex, MessageBody, NodeId, Role, Term};

/// How often a lagging follower checks whether it may come back.
const LAG_RECHECK_TICKS: u64 = 20;

/// How often the re-election of Figure 8's first leader is nudged.
const KICK_TICKS: u64 = 5;

type Links = Vec<(NodeId, NodeId)>;

#[derive(Debug)]
pub(crate) enum Figure8Phase {
    /// A is cut off; waiting for another node to lead a later term.
    NewLeader { a_links: Links },
    /// B is cut off, A is back; waiting for A to lead again.
    ReElect {
        b: NodeId,
        b_term: Term,
        b_links: Links,
    },
    /// A leads `term`; waiting for its commit index to pass `baseline`.
    Commit {
        b_links: Links,
        term: Term,
        baseline: LogIndex,
    },
    /// A is cut off again and B is back, until the fault's end.
    Done,
}

#[derive(Debug)]
pub(crate) enum Armed {
    Figure8 {
        a: NodeId,
        a_term: Term,
        phase: Figure8Phase,
    },
    /// Cut `leader` and `incoming` off from the rest once `incoming` are
    /// voters in the leader's configuration, while it still leads `term`.
    Split {
        leader: NodeId,
        term: Term,
        incoming: Vec<NodeId>,
        duration_ticks: u64,
    },
    CrashMidSnapshot {
        duration_ticks: u64,
    },
    LagFollower {
        follower: NodeId,
        /// Transfer leadership to the follower the moment it is let back.
        transfer: bool,
    },
    /// Cut `leader`'s outgoing links (acknowledgements still reach it) in
    /// the step in which its own removal commits, while it leads `term`.
    CutRemovedLeader {
        leader: NodeId,
        term: Term,
        duration_ticks: u64,
    },
}

impl World {
    pub(crate) fn cut_links(&mut self, i: usize, links: &[(NodeId, NodeId)]) {
        self.network.cut(links);
        self.active_links
            .entry(i)
            .or_default()
            .extend_from_slice(links);
    }

    /// Restores the links of fault `i` that are in `links`, keeping its others.
    fn uncut_links(&mut self, i: usize, links: &[(NodeId, NodeId)]) {
        let Some(active) = self.active_links.get_mut(&i) else {
            return;
        };
        for link in links {
            if let Some(pos) = active.iter().position(|l| l == link) {
                active.swap_remove(pos);
                self.network.restore(std::slice::from_ref(link));
            }
        }
    }

    /// (role, term, commit index) of a node that is up.
    fn view(&self, id: NodeId) -> Option<(Role, Term, LogIndex)> {
        let node = &self.node(id).replica()?.node;
        Some((node.role(), node.term(), node.commit_index()))
    }

    /// Starts a Figure 8 fault; None if there is no leader or one is running.
    pub(crate) fn figure8_start(&mut self, i: usize, tail: u32) -> Option<String> {
        let a = self.leader()?;
        if self
            .armed
            .values()
            .any(|armed| matches!(armed, Armed::Figure8 { .. }))
        {
            return None;
        }
        let a_term = self.view(a)?.1;
        let a_links = self.network.links(&Partition::IsolateLeader, a);
        self.cut_links(i, &a_links);
        self.armed.insert(
            i,
            Armed::Figure8 {
                a,
                a_term,
                phase: Figure8Phase::NewLeader { a_links },
            },
        );
        self.propose_own_entries(a, i, tail, "__figure8");
        let duration = self.plan.schedule[i].duration_ticks * STEPS_PER_TICK;
        self.schedule_in(duration, Event::FaultEnd(i));
        Some(format!(
            "figure 8: cut off leader {a} of term {a_term} with {tail} new entries"
        ))
    }

    /// Looks at node `id` after it stepped, before its messages leave.
    pub(crate) fn on_node_stepped(&mut self, id: NodeId) {
        let keys: Vec<usize> = self.armed.keys().copied().collect();
        for i in keys {
            let Some(armed) = self.armed.remove(&i) else {
                continue;
            };
            if let Some(still) = self.check_armed(i, id, armed) {
                self.armed.insert(i, still);
            }
        }
    }

    /// Fires `armed` if node `id` triggers it; returns it if still armed.
    fn check_armed(&mut self, i: usize, id: NodeId, armed: Armed) -> Option<Armed> {
        match armed {
            Armed::Figure8 { a, a_term, phase } => {
                let phase = self.figure8_step(i, id, a, a_term, phase)?;
                Some(Armed::Figure8 { a, a_term, phase })
            }
            Armed::Split {
                leader,
                term,
                incoming,
                duration_ticks,
            } => {
                if id != leader {
                    return Some(Armed::Split {
                        leader,
                        term,
                        incoming,
                        duration_ticks,
                    });
                }
                let replica = self.node(id).replica()?;
                let node = &replica.node;
                if node.role() != Role::Leader || node.term() != term {
                    self.trace.note(self.now, || {
                        format!("fault #{i}: {leader} stopped leading before the change committed")
                    });
                    return None;
                }
                let voters = &node.membership().voters;
                if !incoming.iter().all(|n| voters.contains(n)) {
                    return Some(Armed::Split {
                        leader,
                        term,
                        incoming,
                        duration_ticks,
                    });
                }
                let mut side = incoming;
                side.push(leader);
                side.sort();
                let links = self
                    .network
                    .links(&Partition::Split { side: side.clone() }, leader);
                self.cut_links(i, &links);
                self.schedule_in(duration_ticks * STEPS_PER_TICK, Event::FaultEnd(i));
                self.trace.note(self.now, || {
                    format!("fault #{i}: the change committed on {leader}: split {side:?} off")
                });
                None
            }
            Armed::CutRemovedLeader {
                leader,
                term,
                duration_ticks,
            } => {
                let keep = Armed::CutRemovedLeader {
                    leader,
                    term,
                    duration_ticks,
                };
                if id != leader {
                    return Some(keep);
                }
                let node = &self.node(id).replica()?.node;
                if node.term() != term {
                    return None;
                }
                let membership = node.membership();
                if membership.is_joint() || membership.voters.contains(&leader) {
                    return Some(keep);
                }
                let links: Vec<(NodeId, NodeId)> = self
                    .all_ids()
                    .into_iter()
                    .filter(|&n| n != leader)
                    .map(|n| (leader, n))
                    .collect();
                self.cut_links(i, &links);
                self.schedule_in(duration_ticks * STEPS_PER_TICK, Event::FaultEnd(i));
                self.trace.note(self.now, || {
                    format!("fault #{i}: {leader}'s removal committed: cut its outgoing links")
                });
                None
            }
            other => Some(other),
        }
    }

    fn figure8_step(
        &mut self,
        i: usize,
        id: NodeId,
        a: NodeId,
        a_term: Term,
        phase: Figure8Phase,
    ) -> Option<Figure8Phase> {
        let Some((role, term, commit)) = self.view(id) else {
            return Some(phase);
        };
        match phase {
            Figure8Phase::NewLeader { a_links } if id != a && role == Role::Leader => {
                if term <= a_term {
                    return Some(Figure8Phase::NewLeader { a_links });
                }
                let b_links = self.network.links(&Partition::IsolateLeader, id);
                self.cut_links(i, &b_links);
                self.uncut_links(i, &a_links);
                self.schedule_in(STEPS_PER_TICK, Event::Kick(i));
                self.trace.note(self.now, || {
                    format!(
                        "fault #{i}: figure 8: cut off new leader {id} of term {term}; {a} returns"
                    )
                });
                Some(Figure8Phase::ReElect {
                    b: id,
                    b_term: term,
                    b_links,
                })
            }
            Figure8Phase::ReElect { b, b_term, b_links }
                if role == Role::Leader && term > b_term =>
            {
                if id != a {
                    self.trace.note(self.now, || {
                        format!(
                            "fault #{i}: figure 8: {id} leads term {term} after {b}, not {a}: heal"
                        )
                    });
                    self.restore_links(i);
                    return None;
                }
                Some(Figure8Phase::Commit {
                    b_links,
                    term,
                    baseline: commit,
                })
            }
            Figure8Phase::Commit {
                b_links,
                term: a_lead_term,
                baseline,
            } if id == a => {
                if role != Role::Leader || term != a_lead_term {
                    self.restore_links(i);
                    return None;
                }
                if commit <= baseline {
                    return Some(Figure8Phase::Commit {
                        b_links,
                        term: a_lead_term,
                        baseline,
                    });
                }
                let a_links = self.network.links(&Partition::IsolateLeader, a);
                self.cut_links(i, &a_links);
                self.uncut_links(i, &b_links);
                self.trace.note(self.now, || {
                    format!("fault #{i}: figure 8: {a} committed {commit} in term {term}: cut it off again")
                });
                Some(Figure8Phase::Done)
            }
            other => Some(other),
        }
    }

    /// Nudges Figure 8's first leader to campaign while it waits for it.
    pub(crate) fn kick(&mut self, i: usize) {
        let Some(Armed::Figure8 {
            a,
            phase: Figure8Phase::ReElect { .. },
            ..
        }) = self.armed.get(&i)
        else {
            return;
        };
        let a = *a;
        self.schedule_in(KICK_TICKS * STEPS_PER_TICK, Event::Kick(i));
        if self.node(a).is_live() && self.view(a).is_some_and(|v| v.0 == Role::Follower) {
            let _ = self.step_node(a, Input::Campaign);
        }
    }

    /// After `to` took a message: a crash armed for the middle of a
    /// snapshot transfer fires if the message was a chunk before the last.
    pub(crate) fn maybe_crash_mid_snapshot(&mut self, to: NodeId, body: &MessageBody) {
        let MessageBody::InstallSnapshot {
            offset,
            total_bytes,
            data,
            ..
        } = body
        else {
            return;
        };
        // Saturating: a forged message (`hostile`, `corrupt`) may carry any offset.
        if offset.saturating_add(data.len() as u64) >= *total_bytes {
            return;
        }
        let Some((&i, _)) = self
            .armed
            .iter()
            .find(|(_, a)| matches!(a, Armed::CrashMidSnapshot { .. }))
        else {
            return;
        };
        let Some(Armed::CrashMidSnapshot { duration_ticks }) = self.armed.remove(&i) else {
            return;
        };
        if self.node(to).replica().is_none() {
            return;
        }
        self.trace.note(self.now, || {
            format!(
                "fault #{i}: {to} crashes after chunk {offset}..{} of {total_bytes}",
                offset + data.len() as u64
            )
        });
        self.crash_node(to, "mid snapshot transfer");
        self.schedule_restart(to, duration_ticks.max(1) * STEPS_PER_TICK);
    }

    /// Starts a lagging-follower partition; None without a leader.
    pub(crate) fn lag_start(&mut self, i: usize, transfer: bool) -> Option<String> {
        let leader = self.leader()?;
        let members = self.node(leader).replica()?.node.membership().members();
        let followers: Vec<NodeId> = members
            .into_iter()
            .filter(|&n| n != leader && (n.0 as usize) <= self.nodes.len())
            .collect();
        if followers.is_empty() {
            return None;
        }
        let follower = followers[self.rng.range(0, followers.len() as u64 - 1) as usize];
        let links = self.network.links(&Partition::IsolateLeader, follower);
        self.cut_links(i, &links);
        self.armed
            .insert(i, Armed::LagFollower { follower, transfer });
        let duration = self.plan.schedule[i].duration_ticks * STEPS_PER_TICK;
        self.schedule_in(duration, Event::FaultEnd(i));
        Some(format!(
            "cut off follower {follower} until it needs a snapshot"
        ))
    }

    /// True if lagging fault `i` should stay: snapshots are on and no
    /// leader's snapshot covers more than the follower's log yet.
    pub(crate) fn keep_lagging(&self, i: usize) -> bool {
        let Some(Armed::LagFollower { follower, .. }) = self.armed.get(&i) else {
            return false;
        };
        if self.plan.snapshot_every == 0 || self.plan.healed {
            return false;
        }
        let Some(lagging) = self.node(*follower).replica() else {
            return false;
        };
        let last = lagging.node.last_index();
        let covered = self
            .leader()
            .and_then(|l| self.node(l).replica())
            .is_some_and(|r| r.node.status().snapshot_index > last);
        !covered
    }

    pub(crate) fn recheck_lag(&mut self, i: usize) {
        self.schedule_in(LAG_RECHECK_TICKS * STEPS_PER_TICK, Event::FaultEnd(i));
    }
}
