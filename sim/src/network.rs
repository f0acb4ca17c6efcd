//! The simulated network: which links are cut, and when a message arrives.
//! Latency, loss and duplication come from the fault plan.

use crate::faults::{FaultPlan, Partition};
use crate::rng::SimRng;
use raft_core::NodeId;

/// Link state between `n` nodes. A link is cut while at least one active
/// partition cuts it, so overlapping partitions heal independently.
#[derive(Clone, Debug)]
pub struct Network {
    nodes: usize,
    /// `cuts[from * nodes + to]`: how many active partitions cut the link.
    cuts: Vec<u32>,
    pub sent: u64,
    pub lost: u64,
    pub cut_off: u64,
    pub duplicated: u64,
}

/// Where copies of one message go: delays in steps from now.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Route {
    pub deliveries: [Option<u64>; 2],
}

impl Network {
    pub fn new(nodes: usize) -> Network {
        Network {
            nodes,
            cuts: vec![0; nodes * nodes],
            sent: 0,
            lost: 0,
            cut_off: 0,
            duplicated: 0,
        }
    }

    fn slot(&self, from: NodeId, to: NodeId) -> usize {
        (from.0 as usize - 1) * self.nodes + (to.0 as usize - 1)
    }

    pub fn is_cut(&self, from: NodeId, to: NodeId) -> bool {
        self.cuts[self.slot(from, to)] > 0
    }

    /// Decides the fate of a message sent now.
    pub fn route(&mut self, from: NodeId, to: NodeId, plan: &FaultPlan, rng: &mut SimRng) -> Route {
        self.sent += 1;
        if self.is_cut(from, to) {
            self.cut_off += 1;
            return Route::default();
        }
        let fate = plan.message_fate(rng);
        if fate.first.is_none() {
            self.lost += 1;
        }
        if fate.duplicate.is_some() {
            self.duplicated += 1;
        }
        Route {
            deliveries: [fate.first, fate.duplicate],
        }
    }

    /// The directed links a partition cuts. `leader` resolves
    /// [`Partition::IsolateLeader`].
    pub fn links(&self, partition: &Partition, leader: NodeId) -> Vec<(NodeId, NodeId)> {
        let all: Vec<NodeId> = (1..=self.nodes as u64).map(NodeId).collect();
        let between = |a: &[NodeId], b: &[NodeId]| {
            let mut links = Vec::new();
            for &x in a {
                for &y in b {
                    links.push((x, y));
                    links.push((y, x));
                }
            }
            links
        };
        match partition {
            Partition::Split { side } => {
                let rest: Vec<NodeId> = all.into_iter().filter(|id| !side.contains(id)).collect();
                between(side, &rest)
            }
            Partition::OneWay { from, to } => vec![(*from, *to)],
            Partition::IsolateLeader => {
                let rest: Vec<NodeId> = all.into_iter().filter(|&id| id != leader).collect();
                between(&[leader], &rest)
            }
            Partition::Bridge { left, right, .. } => between(left, right),
            // Resolved at run time against the leader (see `world_triggers`).
            Partition::LagFollower => Vec::new(),
        }
    }

    pub fn cut(&mut self, links: &[(NodeId, NodeId)]) {
        for &(from, to) in links {
            let slot = self.slot(from, to);
            self.cuts[slot] += 1;
        }
    }

    pub fn restore(&mut self, links: &[(NodeId, NodeId)]) {
        for &(from, to) in links {
            let slot = self.slot(from, to);
            self.cuts[slot] = self.cuts[slot].saturating_sub(1);
        }
    }

    pub fn heal_all(&mut self) {
        self.cuts.iter_mut().for_each(|c| *c = 0);
    }
}
