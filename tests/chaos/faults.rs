//! The nemesis: a seeded schedule of faults injected into a running cluster
//! and healed again, with a timeline of what happened when.

use crate::common::cluster::Cluster;
use crate::common::http;
use crate::common::rng::Rng;
use crate::firewall::Firewall;
use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::thread;
use std::time::{Duration, Instant};

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum FaultKind {
    /// A random minority is cut off from the majority.
    PartitionMinority,
    /// The leader is cut off from every other node.
    IsolateLeader,
    /// Two halves that see each other only through one bridge node.
    Bridge,
    /// `kill -9` a random node, restart it with its data dir later.
    KillNode,
    /// `kill -9` the leader, restart it later.
    KillLeader,
    /// SIGSTOP a random node, SIGCONT later.
    PauseNode,
    /// SIGSTOP the leader, SIGCONT later.
    PauseLeader,
    /// `kill -9` every node, restart them all.
    RestartAll,
}

impl FaultKind {
    pub const ALL: [FaultKind; 8] = [
        FaultKind::PartitionMinority,
        FaultKind::IsolateLeader,
        FaultKind::Bridge,
        FaultKind::KillNode,
        FaultKind::KillLeader,
        FaultKind::PauseNode,
        FaultKind::PauseLeader,
        FaultKind::RestartAll,
    ];

    pub fn name(self) -> &'static str {
        match self {
            FaultKind::PartitionMinority => "partition-minority",
            FaultKind::IsolateLeader => "isolate-leader",
            FaultKind::Bridge => "bridge",
            FaultKind::KillNode => "kill-node",
            FaultKind::KillLeader => "kill-leader",
            FaultKind::PauseNode => "pause-node",
            FaultKind::PauseLeader => "pause-leader",
            FaultKind::RestartAll => "restart-all",
        }
    }

    /// Faults aimed at the leader: the time from their start to the first
    /// successful write is a failover time.
    pub fn targets_leader(self) -> bool {
        matches!(
            self,
            FaultKind::IsolateLeader | FaultKind::KillLeader | FaultKind::PauseLeader
        )
    }
}

/// One fault on the timeline; times are nanoseconds since the run's epoch.
#[derive(Clone, Debug)]
pub struct FaultEvent {
    pub kind: FaultKind,
    pub start_ns: u64,
    pub healed_ns: u64,
    pub detail: String,
}

/// How long faults last and how long the cluster rests between them.
#[derive(Clone, Copy, Debug)]
pub struct Pacing {
    pub hold_ms: (u64, u64),
    pub gap_ms: (u64, u64),
}

/// What must be undone to heal a fault.
enum Undo {
    Firewall,
    Restart(Vec<usize>),
    Resume(usize),
}

pub struct Nemesis<'a> {
    pub cluster: &'a mut Cluster,
    pub firewall: &'a mut Firewall,
    pub rng: Rng,
    pub epoch: Instant,
}

impl Nemesis<'_> {
    fn now_ns(&self) -> u64 {
        self.epoch.elapsed().as_nanos() as u64
    }

    /// Injects faults from `kinds` (each pass over them in a fresh shuffled
    /// order, so every kind comes up) until `until`; every fault is healed
    /// before the next one starts.
    pub fn run(&mut self, kinds: &[FaultKind], until: Instant, pacing: Pacing) -> Vec<FaultEvent> {
        let mut timeline = Vec::new();
        let mut queue: Vec<FaultKind> = Vec::new();
        while Instant::now() < until {
            if queue.is_empty() {
                queue = kinds.to_vec();
                self.rng.shuffle(&mut queue);
            }
            let kind = queue.pop().expect("kinds is not empty");
            let (detail, undo) = self.inject(kind);
            // The fault is in effect from here: the process is reaped or
            // stopped, the rules are in place.
            let start_ns = self.now_ns();
            let hold = self.rng.between(pacing.hold_ms.0, pacing.hold_ms.1);
            thread::sleep(Duration::from_millis(hold));
            self.undo(undo);
            timeline.push(FaultEvent {
                kind,
                start_ns,
                healed_ns: self.now_ns(),
                detail,
            });
            let gap = self.rng.between(pacing.gap_ms.0, pacing.gap_ms.1);
            thread::sleep(Duration::from_millis(gap));
        }
        timeline
    }

    fn ip(&self, i: usize) -> Ipv4Addr {
        self.cluster.nodes[i].ip
    }

    fn names(&self, nodes: &[usize]) -> String {
        let names: Vec<&str> = nodes
            .iter()
            .map(|&i| self.cluster.nodes[i].name.as_str())
            .collect();
        format!("{{{}}}", names.join(","))
    }

    /// The node most live nodes name as leader, asked quickly; a random node
    /// if none is known (the detail says so).
    fn leader_or_random(&mut self) -> (usize, &'static str) {
        let mut votes: BTreeMap<String, usize> = BTreeMap::new();
        for i in self.cluster.live() {
            let reply = http::request(
                self.cluster.addr(i),
                "GET",
                "/status",
                None,
                Duration::from_secs(1),
            );
            if let Ok(reply) = reply
                && let Some(leader) = reply.json()["leader"].as_str()
            {
                *votes.entry(leader.to_string()).or_default() += 1;
            }
        }
        let named = votes.into_iter().max_by_key(|(_, count)| *count);
        if let Some((name, _)) = named
            && let Some(i) = self.cluster.nodes.iter().position(|n| n.name == name)
        {
            return (i, "leader");
        }
        let size = self.cluster.size() as u64;
        (
            self.rng.below(size) as usize,
            "random node, no leader known",
        )
    }

    fn shuffled_nodes(&mut self) -> Vec<usize> {
        let mut nodes: Vec<usize> = (0..self.cluster.size()).collect();
        self.rng.shuffle(&mut nodes);
        nodes
    }

    fn split(&mut self, side: &[usize], other: &[usize]) {
        let side: Vec<Ipv4Addr> = side.iter().map(|&i| self.ip(i)).collect();
        let other: Vec<Ipv4Addr> = other.iter().map(|&i| self.ip(i)).collect();
        self.firewall
            .split(&side, &other)
            .unwrap_or_else(|e| panic!("cannot partition: {e}"));
    }

    fn inject(&mut self, kind: FaultKind) -> (String, Undo) {
        let size = self.cluster.size();
        match kind {
            FaultKind::PartitionMinority => {
                let nodes = self.shuffled_nodes();
                let (minority, majority) = nodes.split_at((size - 1) / 2);
                self.split(minority, majority);
                let detail = format!("{} | {}", self.names(minority), self.names(majority));
                (detail, Undo::Firewall)
            }
            FaultKind::IsolateLeader => {
                let (leader, what) = self.leader_or_random();
                let others: Vec<usize> = (0..size).filter(|&i| i != leader).collect();
                self.split(&[leader], &others);
                let detail = format!(
                    "{} ({what}) | {}",
                    self.names(&[leader]),
                    self.names(&others)
                );
                (detail, Undo::Firewall)
            }
            FaultKind::Bridge => {
                let nodes = self.shuffled_nodes();
                let half = (size - 1) / 2;
                let (left, rest) = nodes.split_at(half.max(1));
                let (bridge, right) = rest.split_at(1);
                self.split(left, right);
                let detail = format!(
                    "{} - {} - {}",
                    self.names(left),
                    self.names(bridge),
                    self.names(right)
                );
                (detail, Undo::Firewall)
            }
            FaultKind::KillNode | FaultKind::KillLeader => {
                let (victim, what) = if kind == FaultKind::KillLeader {
                    self.leader_or_random()
                } else {
                    (self.rng.below(size as u64) as usize, "random node")
                };
                self.cluster.kill(victim);
                (
                    format!("kill -9 {} ({what})", self.names(&[victim])),
                    Undo::Restart(vec![victim]),
                )
            }
            FaultKind::PauseNode | FaultKind::PauseLeader => {
                let (victim, what) = if kind == FaultKind::PauseLeader {
                    self.leader_or_random()
                } else {
                    (self.rng.below(size as u64) as usize, "random node")
                };
                self.cluster.pause(victim);
                (
                    format!("SIGSTOP {} ({what})", self.names(&[victim])),
                    Undo::Resume(victim),
                )
            }
            FaultKind::RestartAll => {
                let all: Vec<usize> = (0..size).collect();
                self.cluster.stop_all();
                (format!("kill -9 all {size}"), Undo::Restart(all))
            }
        }
    }

    fn undo(&mut self, undo: Undo) {
        match undo {
            Undo::Firewall => self.firewall.heal().expect("heal the firewall"),
            Undo::Restart(nodes) => {
                for i in nodes {
                    if !self.cluster.nodes[i].is_running() {
                        self.cluster.start_node(i);
                    }
                }
            }
            Undo::Resume(i) => self.cluster.resume(i),
        }
    }

    /// Removes every fault: no cuts, no paused or stopped node.
    pub fn heal_all(&mut self) {
        self.firewall.heal().expect("heal the firewall");
        for i in 0..self.cluster.size() {
            if self.cluster.nodes[i].is_paused() {
                self.cluster.resume(i);
            }
            if !self.cluster.nodes[i].is_running() {
                self.cluster.start_node(i);
            }
        }
    }
}
