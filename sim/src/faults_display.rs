//! How faults read in schedules, reports and traces.

use crate::faults::{Fault, Partition, ScheduledFault, SyncOn, Target};
use raft_core::NodeId;
use std::fmt;

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Node(id) => write!(f, "{id}"),
            Target::Leader => write!(f, "leader"),
        }
    }
}

fn list(ids: &[NodeId]) -> String {
    let names: Vec<String> = ids.iter().map(|id| id.to_string()).collect();
    format!("{{{}}}", names.join(","))
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Fault::Partition(Partition::Split { side }) => write!(f, "split {}", list(side)),
            Fault::Partition(Partition::OneWay { from, to }) => write!(f, "one-way {from}-x->{to}"),
            Fault::Partition(Partition::IsolateLeader) => write!(f, "isolate leader"),
            Fault::Partition(Partition::Bridge {
                bridge,
                left,
                right,
            }) => write!(
                f,
                "bridge {bridge} between {} and {}",
                list(left),
                list(right)
            ),
            Fault::Partition(Partition::LagFollower) => {
                write!(f, "cut a follower off until it needs a snapshot")
            }
            Fault::Crash { target } => write!(f, "crash {target}"),
            Fault::SyncCrash { target, on } => {
                let what = match on {
                    SyncOn::Any => "fsync",
                    SyncOn::Vote => "vote fsync",
                    SyncOn::Snapshot => "snapshot fsync",
                };
                write!(f, "crash {target} in its next {what}")
            }
            Fault::CrashMidSnapshot => write!(f, "crash a node mid snapshot transfer"),
            Fault::Pause { target, isolated } => {
                write!(
                    f,
                    "pause {target}{}",
                    if *isolated { " isolated" } else { "" }
                )
            }
            Fault::Diverge { tail } => write!(f, "diverge leader with {tail} uncommitted entries"),
            Fault::Figure8 { tail } => write!(f, "figure 8 with {tail} uncommitted entries"),
            Fault::Membership {
                change,
                burst,
                split,
            } => write!(
                f,
                "membership {change:?}{}{}",
                if *burst { " burst" } else { "" },
                if *split { " split" } else { "" }
            ),
            Fault::CampaignCrash { tail } => write!(
                f,
                "a voter campaigns with {tail} proposals and dies in that fsync"
            ),
            Fault::Transfer(shape) => write!(f, "transfer leadership {shape:?}"),
            Fault::QuickRestart { rival } => write!(
                f,
                "restart a follower inside the lease{}",
                if *rival { " as a rival campaigns" } else { "" }
            ),
            Fault::DamageRestart {
                target,
                lose_entries,
                lose_hard_state,
            } => write!(
                f,
                "crash {target}, lose its last {lose_entries} acknowledged entries{}, restart in repair mode",
                if *lose_hard_state {
                    " and its newest hard state"
                } else {
                    ""
                }
            ),
            Fault::DiskRot { target } => {
                write!(f, "power loss on {target}, rot an old WAL block, restart")
            }
            Fault::DiskFull {
                target,
                free_blocks,
            } => write!(f, "fill {target}'s disk ({free_blocks} blocks left)"),
            Fault::SlowDisks { factor } => write!(f, "every disk {factor}x slower"),
        }
    }
}

impl fmt::Display for ScheduledFault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "t={} +{} {}",
            self.at_tick, self.duration_ticks, self.fault
        )
    }
}
