//! Every fault knob of a run, in one declarative plan drawn from the seed.
//!
//! The plan says how often the network loses, duplicates and delays
//! messages, how fast each node's clock runs, and which discrete faults
//! (partitions, crashes, pauses, divergence) happen when. The network and the
//! disk ask it what happens; they never roll dice on their own. Each seed
//! enables a different mix of fault kinds (swarm testing: a run with fewer
//! kinds switched on explores those more deeply).

use crate::rng::SimRng;
use raft_core::NodeId;
use std::collections::BTreeSet;

/// Simulated time runs in steps; a node's tick is about this many steps, so
/// that message latency and clock skew have sub-tick resolution.
pub const STEPS_PER_TICK: u64 = 20;

/// One kind of fault that a run may switch on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum FaultKind {
    /// Random splits, one-way links, an isolated leader, a bridge node.
    Partition,
    /// Messages lost at random.
    Loss,
    /// Messages delivered twice.
    Duplicate,
    /// A long latency tail, so that messages overtake each other.
    Reorder,
    /// A node stops and later restarts from its synced disk.
    Crash,
    /// A node dies inside an fsync: what it sent went out, what it wrote is lost.
    Fsync,
    /// A node stops taking ticks and messages, then resumes with a backlog.
    Pause,
    /// Nodes' clocks tick at different rates.
    Skew,
    /// A leader with an uncommitted tail is cut off, a new leader overwrites
    /// the tail, the old leader returns.
    Diverge,
    /// Raft's Figure 8, scripted on events: two leaders in a row are cut off
    /// with their own uncommitted entries, the first is re-elected and cut
    /// off again the moment its commit index first advances.
    Figure8,
    /// Membership changes proposed on the leader: learners added and
    /// promoted, voters added, removed (the leader too) and replaced, with
    /// spare nodes that join from an empty log.
    Membership,
    /// The cluster starts from a single voter (the other nodes wait with an
    /// empty configuration) and grows by learners and promotions, and
    /// shrinks back; a voter that campaigns and takes proposals in one
    /// batch dies in the fsync of its new term (what it sent went out).
    Grow,
    /// A long tail of message delays, longer than the election timeout and
    /// the transfer timeout: a TimeoutNow, vote or append response arrives
    /// terms later.
    Delay,
    /// Leadership transfers under load: to a lagging target, to one that
    /// catches up by snapshot, aborted, cancelled (a transfer to the leader
    /// itself), retried while pending, and with the target removed.
    Transfer,
    /// A follower restarts inside the leader's lease (lease reads stay on).
    Restart,
    /// A corrupting peer rewrites messages in flight within what Raft
    /// tolerates: stale copies replayed, entry lists cut short, commit
    /// indexes lowered. Honest nodes must stay safe.
    Corrupt,
    /// A hostile peer rewrites indexes, terms and entry lists beyond any
    /// valid range. The check is that no node panics: raft-core refuses
    /// such messages at the door with a typed `StepError`.
    Hostile,
    /// A node crashes and its disk loses acknowledged records (the newest
    /// entries, sometimes the newest hard state): it restarts in repair
    /// mode (issue 15). On demand only (`--faults damage`, see
    /// [`ON_DEMAND_ONLY`]). It fires only while no node waits for repair,
    /// on a node whose configuration can elect a leader without it. It
    /// does not mix with `membership`: a change that leaves a waiting
    /// voter's vote needed, or a restart whose cut log holds an older
    /// configuration, stalls the cluster by design (seeds 11 and 17 of
    /// `damage,loss,partition,crash,membership`).
    Damage,
    /// The nodes run the real storage (kv-storage's WAL, snapshot files and
    /// recovery) over a block-level simulated disk (`block_fs`): every crash
    /// is a process crash or a power loss that tears, loses and reorders the
    /// unsynced blocks; fsyncs fail with EIO (`fsync` faults), old WAL
    /// blocks rot and disks fill up (faults of their own). Drawn by the
    /// swarm from a side stream (see [`DRAWN_APART`]).
    BlockDisk,
    /// Every node's disk slows down at once for a while, as when the
    /// members share one device or one of them writes a large snapshot
    /// beside the WAL: the persist stage's fsyncs and the background
    /// snapshot writes take several times longer on all nodes, long enough
    /// for heartbeats and elections to happen between a round's write and
    /// its durability. On demand only (`--faults slowdisk`, see
    /// [`ON_DEMAND_ONLY`]).
    SlowDisk,
}

/// Kinds the swarm draws from a side stream of the plan's generator, after
/// the others: adding them left the draw of every other kind, and the
/// schedule of their faults, unchanged for every seed.
pub const DRAWN_APART: [FaultKind; 1] = [FaultKind::BlockDisk];

/// How often the swarm switches a side-stream kind on (ppm).
pub const DRAWN_APART_PPM: u64 = 500_000;

/// The knobs of the block-level disk (`blockdisk` runs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlockDiskPlan {
    /// Part of the crashes that lose the page cache (the rest kill the
    /// process only), in percent.
    pub power_loss_percent: u64,
    /// What a power loss does to each dirty block.
    pub odds: crate::block_fs::CrashOdds,
    /// After a failed fsync, each dirty block reached the disk with this
    /// probability (ppm).
    pub sync_survive_ppm: u64,
}

/// Kinds the swarm never draws, so that adding them leaves every existing
/// seed's run (and the bug catalogue's measurements) unchanged; `--faults
/// KIND` runs them. Move one into the swarm together with a re-measured
/// `sim/BUG_CATALOGUE.md`.
pub const ON_DEMAND_ONLY: [FaultKind; 2] = [FaultKind::Damage, FaultKind::SlowDisk];

/// Whether a `RemoveLeader` membership fault with `split` cuts the removed
/// leader off one way once its removal commits (issue 18 §1): with the bug
/// `removed_leader_gives_up` this strands the voter left behind.
pub const CUT_REMOVED_LEADER: bool = true;

/// Kinds the swarm does not draw yet because they find raft-core bugs
/// not fixed yet; `--faults KIND` runs them on demand. Empty since the
/// fixes of issues 11 and 18 landed (`hostile`, `grow` and `transfer` are
/// drawn like every other kind).
pub const AWAITING_CORE_FIXES: [FaultKind; 0] = [];

impl FaultKind {
    pub const ALL: [FaultKind; 20] = [
        FaultKind::Partition,
        FaultKind::Loss,
        FaultKind::Duplicate,
        FaultKind::Reorder,
        FaultKind::Crash,
        FaultKind::Fsync,
        FaultKind::Pause,
        FaultKind::Skew,
        FaultKind::Diverge,
        FaultKind::Figure8,
        FaultKind::Membership,
        FaultKind::Grow,
        FaultKind::Delay,
        FaultKind::Transfer,
        FaultKind::Restart,
        FaultKind::Corrupt,
        FaultKind::Hostile,
        FaultKind::Damage,
        FaultKind::BlockDisk,
        FaultKind::SlowDisk,
    ];

    /// Kinds the swarm may switch on.
    pub fn in_swarm(self) -> bool {
        !AWAITING_CORE_FIXES.contains(&self)
            && !ON_DEMAND_ONLY.contains(&self)
            && !DRAWN_APART.contains(&self)
    }

    pub fn name(self) -> &'static str {
        match self {
            FaultKind::Partition => "partition",
            FaultKind::Loss => "loss",
            FaultKind::Duplicate => "dup",
            FaultKind::Reorder => "reorder",
            FaultKind::Crash => "crash",
            FaultKind::Fsync => "fsync",
            FaultKind::Pause => "pause",
            FaultKind::Skew => "skew",
            FaultKind::Diverge => "diverge",
            FaultKind::Figure8 => "figure8",
            FaultKind::Membership => "membership",
            FaultKind::Grow => "grow",
            FaultKind::Delay => "delay",
            FaultKind::Transfer => "transfer",
            FaultKind::Restart => "restart",
            FaultKind::Corrupt => "corrupt",
            FaultKind::Hostile => "hostile",
            FaultKind::Damage => "damage",
            FaultKind::BlockDisk => "blockdisk",
            FaultKind::SlowDisk => "slowdisk",
        }
    }

    pub fn parse(name: &str) -> Option<FaultKind> {
        FaultKind::ALL.into_iter().find(|k| k.name() == name)
    }
}

/// Which fault kinds a run may use.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FaultSelection {
    /// Each seed switches each kind on with probability 1/2 (swarm testing).
    Swarm,
    /// Exactly these kinds (intensities still come from the seed).
    Exactly(BTreeSet<FaultKind>),
}

/// The byte floor of the snapshot rule per entry of `snapshot_every`: about
/// the size of a simulated entry, so that both rules fire in a run.
pub const SNAPSHOT_LOG_BYTES_PER_ENTRY: u64 = 48;

/// Steps a background snapshot write takes at most, drawn per write: long
/// enough for crashes, elections and installs to happen in between.
pub const SNAPSHOT_WRITE_STEPS_MAX: u64 = 5 * STEPS_PER_TICK;

/// Steps a persist stage's fsync takes at most, drawn per sync (`disk.rs`)
/// on the slowest disks: up to a tick, so that messages, proposals and
/// ticks arrive while one is in flight and crashes land between a round's
/// write and its durability. A tick stands for kv-node's 15 ms, a step for
/// 0.75 ms: an fdatasync of a few KiB takes 0.1 to 2 ms on an NVMe disk, a
/// few ms on a network volume, 10 ms or more on a disk that seeks.
pub const PERSIST_STEPS_MAX: u64 = STEPS_PER_TICK;

/// Each node's disk is one of these speeds (the most steps its fsyncs
/// take, each drawn from 1 to it), drawn from the seed per node (a node
/// keeps its disk across restarts): half of them fast, a quarter medium, a
/// quarter slow (`World::fsync_steps_max`).
pub const PERSIST_STEPS_BY_DISK: [u64; 4] = [2, 2, 7, PERSIST_STEPS_MAX];

impl FaultSelection {
    /// Parses `all`, `none` or a comma-separated list of kind names.
    pub fn parse(text: &str) -> Result<FaultSelection, String> {
        match text {
            "all" => return Ok(FaultSelection::Swarm),
            "none" => return Ok(FaultSelection::Exactly(BTreeSet::new())),
            _ => {}
        }
        let mut kinds = BTreeSet::new();
        for name in text.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let kind = FaultKind::parse(name).ok_or_else(|| {
                let known: Vec<_> = FaultKind::ALL.iter().map(|k| k.name()).collect();
                format!(
                    "unknown fault {name:?}; known: all, none, {}",
                    known.join(",")
                )
            })?;
            kinds.insert(kind);
        }
        Ok(FaultSelection::Exactly(kinds))
    }
}

/// Where a node fault lands: a fixed node, or whoever leads when it fires.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    Node(NodeId),
    Leader,
}

/// The shape of a network partition.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Partition {
    /// `side` cannot talk to the rest, in either direction.
    Split { side: Vec<NodeId> },
    /// Messages from `from` to `to` are lost; the other direction works.
    OneWay { from: NodeId, to: NodeId },
    /// Whoever leads when it fires is cut off from everyone.
    IsolateLeader,
    /// `left` and `right` cannot talk to each other; `bridge` talks to both.
    Bridge {
        bridge: NodeId,
        left: Vec<NodeId>,
        right: Vec<NodeId>,
    },
    /// A follower is cut off until the leader's snapshot covers more than its
    /// log (so that it must catch up by InstallSnapshot), or at least for
    /// the fault's duration when replicas take no snapshots.
    LagFollower,
}

/// Which fsync an armed disk fails.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SyncOn {
    /// The next fsync that writes anything.
    Any,
    /// The next fsync that writes a vote.
    Vote,
    /// The next fsync that writes a snapshot (taken, or received whole).
    Snapshot,
}

/// A membership change, resolved against the configuration in force when
/// it fires (which nodes it names is decided then).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MembershipChange {
    /// A node outside the configuration joins as a learner.
    AddLearner,
    /// A learner becomes a voter (a learner is added first if there is none).
    Promote,
    /// A node outside the configuration joins as a voter directly.
    AddVoter,
    /// A voter other than the leader leaves.
    RemoveVoter,
    /// The leader removes itself.
    RemoveLeader,
    /// `count` voters other than the leader are replaced by as many nodes
    /// from outside the configuration, in one joint change.
    Replace { count: u8 },
}

/// One discrete fault. It starts at `at_tick` and heals `duration_ticks`
/// later (a crashed node restarts then).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fault {
    Partition(Partition),
    Crash {
        target: Target,
    },
    /// Arms the target's disk: its next fsync of the kind `on` fails and the
    /// node dies (what it sent went out, what it wrote is lost).
    SyncCrash {
        target: Target,
        on: SyncOn,
    },
    /// Whichever node next receives a snapshot chunk that is not the last
    /// one crashes right after staging it, mid-transfer.
    CrashMidSnapshot,
    /// With `isolated`, the node is also cut off while paused and for a
    /// while after it resumes: a leader comes back as a zombie that has
    /// not heard of the new term (a GC pause plus a partition).
    Pause {
        target: Target,
        isolated: bool,
    },
    /// Cuts the leader off right after giving it `tail` proposals of its own.
    Diverge {
        tail: u32,
    },
    /// Figure 8 (see [`FaultKind::Figure8`]); the first leader gets `tail`
    /// proposals of its own. Heals after the duration whatever phase it
    /// reached.
    Figure8 {
        tail: u32,
    },
    /// Proposes `change` on the leader. With `burst`, a second replacement
    /// is proposed at once, before the first commits (the core refuses it
    /// unless a bug lets two changes be in flight). With `split`, the moment
    /// the leader's configuration first makes the incoming nodes voters, the
    /// leader and the incoming voters are cut off from everyone else for the
    /// fault's duration: only a joint quorum keeps the two sides from both
    /// deciding.
    ///
    /// For `RemoveLeader`, `split` cuts the removed leader off one way (its
    /// messages are lost, acknowledgements still reach it) in the step in
    /// which its removal commits, for the fault's duration.
    Membership {
        change: MembershipChange,
        burst: bool,
        split: bool,
    },
    /// A voter (the leader, else the first node) restarts, then campaigns
    /// and takes `tail` proposals in one batch, and its fsync of that batch
    /// fails: with a single voter it leads at once, and whatever it sent
    /// before the fsync went out. It comes back after the fault's duration.
    CampaignCrash {
        tail: u32,
    },
    /// A leadership transfer of the given shape.
    Transfer(TransferShape),
    /// A follower of the leader crashes and restarts a tick or two later,
    /// inside the leader's lease. With `rival`, another follower is first
    /// cut off from the leader (not from the rest) so that it campaigns
    /// about when the restarted follower comes back: a restarted voter
    /// that votes at once lets it win while the old leader's lease, which
    /// rests on that voter's acknowledgements, still holds.
    QuickRestart {
        rival: bool,
    },
    /// The target crashes, its disk loses its newest `lose_entries`
    /// acknowledged entries (and, with `lose_hard_state`, its newest
    /// hard-state record), and it restarts in repair mode after the
    /// fault's duration (`DiskImage::damage_acknowledged`).
    DamageRestart {
        target: Target,
        lose_entries: u32,
        lose_hard_state: bool,
    },
    /// `blockdisk`: the target crashes (power loss), a bit of an old block
    /// of its WAL rots, and it restarts after the fault's duration: the
    /// real recovery must find the damage and start it in repair mode.
    DiskRot {
        target: Target,
    },
    /// `blockdisk`: the target's disk holds only `free_blocks` more blocks
    /// for the fault's duration (ENOSPC beyond).
    DiskFull {
        target: Target,
        free_blocks: u64,
    },
    /// Every node's fsyncs and snapshot writes take up to `factor` times
    /// as many steps for the fault's duration.
    SlowDisks {
        factor: u64,
    },
}

/// How a leadership transfer fault goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TransferShape {
    /// To a random other voter, while clients keep writing.
    UnderLoad,
    /// To the voter with the lowest match index.
    ToLagging,
    /// To a follower cut off until the leader's snapshot covers more than
    /// its log; the transfer starts the moment it is let back.
    ToSnapshotCatchUp,
    /// To a voter cut off for the fault's duration: the transfer times out.
    Aborted,
    /// To a lagging voter, then to the leader itself a few ticks later,
    /// which cancels it.
    Cancelled,
    /// To a cut-off voter, asked again every few ticks while it is pending.
    Retried,
    /// To a lagging voter, then the target's removal is proposed at once.
    TargetRemoved,
    /// To a random voter, whose TimeoutNow is held past the transfer's
    /// timeout (the leader leads on and renews its lease), then delivered
    /// while nothing reaches the old leader: the lease it renewed after
    /// sending TimeoutNow must not serve reads once the target takes over
    /// (issue 11 bug 2).
    HeldTimeoutNow,
}

impl TransferShape {
    pub const ALL: [TransferShape; 8] = [
        TransferShape::UnderLoad,
        TransferShape::ToLagging,
        TransferShape::ToSnapshotCatchUp,
        TransferShape::Aborted,
        TransferShape::Cancelled,
        TransferShape::Retried,
        TransferShape::TargetRemoved,
        TransferShape::HeldTimeoutNow,
    ];
}

/// A fault with its place in time.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScheduledFault {
    pub at_tick: u64,
    pub duration_ticks: u64,
    pub fault: Fault,
}

/// What the network does with one message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Fate {
    /// Steps until delivery, or None if the message is lost.
    pub first: Option<u64>,
    /// Steps until a duplicate arrives, if one does.
    pub duplicate: Option<u64>,
}

/// All the knobs of one run. Probabilities are in parts per million.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FaultPlan {
    pub enabled: BTreeSet<FaultKind>,
    pub latency_min_steps: u64,
    pub latency_max_steps: u64,
    pub slow_ppm: u64,
    pub slow_max_steps: u64,
    pub loss_ppm: u64,
    pub duplicate_ppm: u64,
    /// A message is held this long (steps) with probability
    /// `delay_tail_ppm`: longer than the election and transfer timeouts.
    pub delay_tail_ppm: u64,
    pub delay_tail_min_steps: u64,
    pub delay_tail_max_steps: u64,
    /// A message is rewritten within what Raft tolerates (stale copy,
    /// shorter entry list, lower commit index) with this probability.
    pub corrupt_ppm: u64,
    /// A message is rewritten beyond any valid range with this probability.
    pub hostile_ppm: u64,
    /// Only node 1 is a voter at the start; the others join by membership
    /// changes (the way kv-node grows a cluster from one node).
    pub single_voter_start: bool,
    /// Each node's tick lasts STEPS_PER_TICK +/- this percentage.
    pub skew_percent: u64,
    /// Replicas snapshot after at most this many applied entries (0:
    /// never), and, by kv-node's byte rule, once the log applied since the
    /// last snapshot reaches the snapshot's size or
    /// `SNAPSHOT_LOG_BYTES_PER_ENTRY` times this, whichever is larger
    /// (see [`FaultPlan::snapshot_policy`]).
    pub snapshot_every: u64,
    /// Clients ask for lease reads part of the time. Only with clocks that
    /// stay within the lease's drift margin and without pauses: a paused
    /// leader's lease is an assumption about time the simulator breaks.
    pub lease_reads: bool,
    /// Node configuration drawn per seed: small limits split batches so that
    /// an entry can be replicated without the ones after it.
    pub max_message_bytes: usize,
    pub max_inflight_messages: usize,
    /// Snapshots travel in chunks of this many bytes. The simulator's
    /// snapshots are a few hundred bytes, so the small sizes split a
    /// transfer into several chunks that can be lost, reordered, duplicated
    /// and interrupted by a crash.
    pub snapshot_chunk_bytes: u64,
    /// Nodes beyond the initial voters, started with an empty configuration
    /// so that they can join through membership changes.
    pub spare_nodes: usize,
    /// Mean client think time between operations.
    pub think_ticks: u64,
    /// The fault schedule, sorted by start tick.
    pub schedule: Vec<ScheduledFault>,
    /// Set in the final phase: the network stops misbehaving.
    pub healed: bool,
    /// Some in `blockdisk` runs: nodes run kv-storage on a block disk.
    pub block_disk: Option<BlockDiskPlan>,
}

/// The shape of the run the plan is drawn for.
#[derive(Clone, Copy, Debug)]
pub struct PlanShape {
    pub nodes: usize,
    /// Faults start at or after this tick...
    pub first_fault_tick: u64,
    /// ...and are healed by this tick.
    pub heal_tick: u64,
}

impl FaultPlan {
    /// The snapshot policy every replica of the run gets (kv-node's rules
    /// at the simulator's scale).
    /// The entry bound counts from each node's last snapshot (no phase):
    /// the schedule the catalogue's seeds were found with. kv-node's
    /// phased points are a pure function of two indexes, tested in
    /// kv-replica.
    pub fn snapshot_policy(&self) -> kv_replica::replica::SnapshotPolicy {
        kv_replica::replica::SnapshotPolicy {
            max_entries: self.snapshot_every,
            max_key_writes: kv_replica::replica::SnapshotPolicy::key_writes_for(
                self.snapshot_every,
            ),
            after_replay: false,
            entry_phase_percent: None,
            log_bytes_floor: (self.snapshot_every > 0)
                .then_some(self.snapshot_every * SNAPSHOT_LOG_BYTES_PER_ENTRY),
            stagger_percent: 0,
        }
    }

    /// Draws the plan for one seed.
    pub fn draw(selection: &FaultSelection, shape: PlanShape, rng: &mut SimRng) -> FaultPlan {
        // Seeded from what the main stream would draw next, without
        // advancing it: the side stream's draws leave the plan as it was.
        let mut apart = SimRng::new(rng.clone().next_u64(), 2);
        let mut enabled: BTreeSet<FaultKind> = match selection {
            FaultSelection::Swarm => FaultKind::ALL
                .into_iter()
                .filter(|k| k.in_swarm())
                .filter(|_| rng.chance_ppm(500_000))
                .collect(),
            FaultSelection::Exactly(kinds) => kinds.clone(),
        };
        if *selection == FaultSelection::Swarm {
            for kind in DRAWN_APART {
                if apart.chance_ppm(DRAWN_APART_PPM) {
                    enabled.insert(kind);
                }
            }
        }
        let on = |k| enabled.contains(&k);
        let latency_min_steps = rng.range(1, 4);
        let mut plan = FaultPlan {
            latency_min_steps,
            latency_max_steps: latency_min_steps + rng.range(0, 12),
            slow_ppm: if on(FaultKind::Reorder) {
                rng.pick(&[20_000, 100_000, 300_000])
            } else {
                0
            },
            slow_max_steps: STEPS_PER_TICK * rng.range(2, 12),
            loss_ppm: if on(FaultKind::Loss) {
                rng.pick(&[10_000, 50_000, 200_000])
            } else {
                0
            },
            duplicate_ppm: if on(FaultKind::Duplicate) {
                rng.pick(&[10_000, 50_000, 200_000])
            } else {
                0
            },
            delay_tail_ppm: if on(FaultKind::Delay) {
                rng.pick(&[2_000, 10_000, 50_000])
            } else {
                0
            },
            // Election timeouts are 10 to 20 ticks, a transfer times out
            // after 10: held 25 to 200 ticks, a message arrives terms later.
            delay_tail_min_steps: 25 * STEPS_PER_TICK,
            delay_tail_max_steps: STEPS_PER_TICK * rng.pick(&[60, 200]),
            corrupt_ppm: if on(FaultKind::Corrupt) {
                rng.pick(&[5_000, 20_000, 100_000])
            } else {
                0
            },
            hostile_ppm: if on(FaultKind::Hostile) {
                rng.pick(&[1_000, 10_000, 50_000])
            } else {
                0
            },
            single_voter_start: on(FaultKind::Grow),
            skew_percent: if on(FaultKind::Skew) {
                rng.pick(&[5, 10, 25])
            } else {
                0
            },
            snapshot_every: rng.pick(&[0, 50, 200]),
            lease_reads: false,
            think_ticks: rng.pick(&[6, 15, 30]),
            max_message_bytes: rng.pick(&[1 << 20, 512, 1]),
            max_inflight_messages: rng.pick(&[256, 4, 1]),
            snapshot_chunk_bytes: rng.pick(&[16, 64, 256, 4096]),
            spare_nodes: 0,
            schedule: Vec::new(),
            healed: false,
            block_disk: None,
            enabled,
        };
        // Restarts inside the lease and transfers (whose late TimeoutNow
        // must end the lease) are only worth simulating with lease reads in
        // the mix: seeds with them always read from the lease.
        let lease_coin = rng.coin()
            || plan.enabled.contains(&FaultKind::Restart)
            || plan.enabled.contains(&FaultKind::Transfer);
        plan.lease_reads =
            !plan.enabled.contains(&FaultKind::Pause) && plan.skew_percent <= 10 && lease_coin;
        if plan.enabled.contains(&FaultKind::Figure8) {
            // Figure 8 needs an earlier-term entry to be acknowledged
            // without the new leader's no-op after it: one entry per message.
            plan.max_message_bytes = 1;
            // At one entry per message, a window of one makes a lagging
            // follower catch up too slowly to converge by the end.
            plan.max_inflight_messages = plan.max_inflight_messages.max(4);
        }
        if plan.enabled.contains(&FaultKind::Membership) || plan.single_voter_start {
            plan.spare_nodes = 2;
        }
        let shape = PlanShape {
            nodes: shape.nodes + plan.spare_nodes,
            ..shape
        };
        plan.schedule = crate::schedule::draw(&plan.enabled, shape, rng);
        if plan.enabled.contains(&FaultKind::BlockDisk) {
            plan.block_disk = Some(BlockDiskPlan {
                power_loss_percent: apart.pick(&[50, 90]),
                odds: crate::block_fs::CrashOdds {
                    written_percent: apart.pick(&[30, 60]),
                    lost_percent: apart.pick(&[20, 35]),
                },
                sync_survive_ppm: apart.pick(&[0, 500_000]),
            });
            plan.schedule
                .extend(crate::schedule::draw_block_faults(shape, &mut apart));
            // Stable: the other faults keep their order.
            plan.schedule.sort_by_key(|f| f.at_tick);
        }
        plan
    }

    /// What happens to one message sent now.
    pub fn message_fate(&self, rng: &mut SimRng) -> Fate {
        let latency = |rng: &mut SimRng| {
            if !self.healed && self.slow_ppm > 0 && rng.chance_ppm(self.slow_ppm) {
                rng.range(self.latency_max_steps, self.slow_max_steps)
            } else {
                rng.range(self.latency_min_steps, self.latency_max_steps)
            }
        };
        if self.healed {
            return Fate {
                first: Some(latency(rng)),
                duplicate: None,
            };
        }
        let first = if self.loss_ppm > 0 && rng.chance_ppm(self.loss_ppm) {
            None
        } else if self.delay_tail_ppm > 0 && rng.chance_ppm(self.delay_tail_ppm) {
            Some(rng.range(self.delay_tail_min_steps, self.delay_tail_max_steps))
        } else {
            Some(latency(rng))
        };
        let duplicate = if self.duplicate_ppm > 0 && rng.chance_ppm(self.duplicate_ppm) {
            Some(latency(rng))
        } else {
            None
        };
        Fate { first, duplicate }
    }

    /// The length of node `id`'s tick in steps.
    pub fn tick_period_steps(&self, rng: &mut SimRng) -> u64 {
        if self.skew_percent == 0 {
            return STEPS_PER_TICK;
        }
        let spread = STEPS_PER_TICK * self.skew_percent / 100;
        rng.range(STEPS_PER_TICK - spread, STEPS_PER_TICK + spread)
            .max(1)
    }

    /// Keeps only the scheduled faults whose positions are in `keep`.
    pub fn keep_faults(&mut self, keep: &[usize]) {
        let schedule = std::mem::take(&mut self.schedule);
        self.schedule = schedule
            .into_iter()
            .enumerate()
            .filter(|(i, _)| keep.contains(i))
            .map(|(_, f)| f)
            .collect();
    }

    /// The enabled kinds as a compact list, for reports.
    pub fn kinds_label(&self) -> String {
        if self.enabled.is_empty() {
            return "none".to_string();
        }
        let names: Vec<&str> = self.enabled.iter().map(|k| k.name()).collect();
        names.join(",")
    }
}
