//! Drawing the discrete faults of a run (partitions, crashes, pauses,
//! divergence) and their times from the seed.

use crate::faults::{
    Fault, FaultKind, MembershipChange, Partition, PlanShape, ScheduledFault, SyncOn, Target,
    TransferShape,
};
use crate::rng::SimRng;
use raft_core::NodeId;
use std::collections::BTreeSet;

fn random_target(nodes: usize, rng: &mut SimRng) -> Target {
    if rng.coin() {
        Target::Leader
    } else {
        Target::Node(NodeId(rng.range(1, nodes as u64)))
    }
}

fn draw_partition(nodes: usize, rng: &mut SimRng) -> Partition {
    let mut ids: Vec<NodeId> = (1..=nodes as u64).map(NodeId).collect();
    rng.shuffle(&mut ids);
    match rng.range(0, 4) {
        0 => {
            let cut = rng.range(1, (nodes as u64 - 1).max(1)) as usize;
            let mut side = ids[..cut].to_vec();
            side.sort();
            Partition::Split { side }
        }
        1 if nodes >= 2 => Partition::OneWay {
            from: ids[0],
            to: ids[1],
        },
        // One node has no link to cut one way.
        1 => Partition::IsolateLeader,
        2 => Partition::IsolateLeader,
        4 => Partition::LagFollower,
        _ => {
            let bridge = ids[0];
            let rest = &ids[1..];
            let half = rest.len() / 2;
            let (mut left, mut right) = (rest[..half].to_vec(), rest[half..].to_vec());
            left.sort();
            right.sort();
            Partition::Bridge {
                bridge,
                left,
                right,
            }
        }
    }
}

fn draw_membership_change(rng: &mut SimRng) -> MembershipChange {
    match rng.range(0, 6) {
        0 => MembershipChange::AddLearner,
        1 => MembershipChange::Promote,
        2 => MembershipChange::AddVoter,
        3 => MembershipChange::RemoveVoter,
        4 => MembershipChange::RemoveLeader,
        _ => MembershipChange::Replace {
            count: rng.range(1, 2) as u8,
        },
    }
}

/// A step of growing a cluster from one voter and shrinking it back, or a
/// crash in the fsync of a campaign.
fn draw_growth(rng: &mut SimRng) -> Fault {
    if rng.range(0, 3) == 0 {
        return Fault::CampaignCrash {
            tail: rng.range(1, 3) as u32,
        };
    }
    let change = rng.pick(&[
        MembershipChange::AddLearner,
        MembershipChange::Promote,
        MembershipChange::Promote,
        MembershipChange::RemoveVoter,
        MembershipChange::RemoveLeader,
    ]);
    Fault::Membership {
        change,
        burst: false,
        split: rng.coin(),
    }
}

/// The faults of a `blockdisk` run's disks: rot and full disks.
pub fn draw_block_faults(shape: PlanShape, rng: &mut SimRng) -> Vec<ScheduledFault> {
    let mut schedule = Vec::new();
    if shape.heal_tick <= shape.first_fault_tick + 20 {
        return schedule;
    }
    let max_per_kind = ((shape.heal_tick - shape.first_fault_tick) / 500).max(1);
    for _ in 0..rng.range(1, 2 * max_per_kind) {
        let at_tick = rng.range(shape.first_fault_tick, shape.heal_tick - 10);
        let longest = 100.min(shape.heal_tick - at_tick);
        let duration_ticks = rng.range(1.min(longest), longest);
        let target = random_target(shape.nodes, rng);
        let fault = if rng.coin() {
            Fault::DiskRot { target }
        } else {
            Fault::DiskFull {
                target,
                free_blocks: rng.pick(&[0, 2, 8]),
            }
        };
        schedule.push(ScheduledFault {
            at_tick,
            duration_ticks,
            fault,
        });
    }
    schedule
}

pub fn draw(
    enabled: &BTreeSet<FaultKind>,
    shape: PlanShape,
    rng: &mut SimRng,
) -> Vec<ScheduledFault> {
    let mut schedule = Vec::new();
    if shape.heal_tick <= shape.first_fault_tick + 20 {
        return schedule;
    }
    let window = shape.heal_tick - shape.first_fault_tick;
    // Up to about one fault of each kind per 500 ticks.
    let max_per_kind = (window / 500).max(1);
    for kind in enabled {
        let (max_duration, count) = match kind {
            FaultKind::Partition => (400, rng.range(1, 2 * max_per_kind)),
            FaultKind::Crash => (300, rng.range(1, max_per_kind)),
            FaultKind::Fsync => (50, rng.range(1, 2 * max_per_kind)),
            FaultKind::Pause => (120, rng.range(1, max_per_kind)),
            FaultKind::Diverge => (300, rng.range(1, max_per_kind)),
            FaultKind::Figure8 => (300, rng.range(1, max_per_kind)),
            FaultKind::Membership => (300, rng.range(1, 2 * max_per_kind)),
            FaultKind::Grow => (100, rng.range(2, 3 * max_per_kind)),
            FaultKind::Transfer => (100, rng.range(1, 2 * max_per_kind)),
            FaultKind::Restart => (3, rng.range(1, 2 * max_per_kind)),
            FaultKind::Damage => (30, rng.range(1, 2 * max_per_kind)),
            FaultKind::SlowDisk => (300, rng.range(1, max_per_kind)),
            _ => continue,
        };
        for _ in 0..count {
            let at_tick = rng.range(shape.first_fault_tick, shape.heal_tick - 10);
            let longest = max_duration.min(shape.heal_tick - at_tick);
            let mut duration_ticks = rng.range(1.min(longest), longest);
            let fault = match kind {
                FaultKind::Partition => Fault::Partition(draw_partition(shape.nodes, rng)),
                FaultKind::Crash if rng.range(0, 3) == 0 => Fault::CrashMidSnapshot,
                FaultKind::Crash => Fault::Crash {
                    target: random_target(shape.nodes, rng),
                },
                FaultKind::Fsync => Fault::SyncCrash {
                    target: random_target(shape.nodes, rng),
                    on: rng.pick(&[SyncOn::Any, SyncOn::Vote, SyncOn::Snapshot]),
                },
                FaultKind::Figure8 => {
                    // Two elections and two re-elections need time.
                    duration_ticks = duration_ticks.max(150.min(longest));
                    Fault::Figure8 {
                        tail: rng.range(1, 4) as u32,
                    }
                }
                FaultKind::Membership => Fault::Membership {
                    change: draw_membership_change(rng),
                    burst: rng.range(0, 3) == 0,
                    split: rng.coin(),
                },
                FaultKind::Grow => draw_growth(rng),
                FaultKind::Transfer => Fault::Transfer(rng.pick(&TransferShape::ALL)),
                FaultKind::Restart => Fault::QuickRestart { rival: rng.coin() },
                FaultKind::Damage => Fault::DamageRestart {
                    target: random_target(shape.nodes, rng),
                    lose_entries: rng.range(1, 6) as u32,
                    lose_hard_state: rng.coin(),
                },
                FaultKind::SlowDisk => Fault::SlowDisks {
                    factor: rng.pick(&[4, 10, 30]),
                },
                FaultKind::Pause => Fault::Pause {
                    target: random_target(shape.nodes, rng),
                    isolated: rng.coin(),
                },
                _ => Fault::Diverge {
                    tail: rng.range(1, 5) as u32,
                },
            };
            schedule.push(ScheduledFault {
                at_tick,
                duration_ticks,
                fault,
            });
        }
    }
    // Stable sort: equal start ticks keep their drawing order.
    schedule.sort_by_key(|f| f.at_tick);
    schedule
}
