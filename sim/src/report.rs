//! What a run reports: one summary line, and on a violation the seed, the
//! tick, the property and the end of the trace.

use crate::checks::Violation;
use crate::client::{OpCounts, Recorded, count};
use crate::faults::{STEPS_PER_TICK, ScheduledFault};
use crate::options::SimOptions;
use crate::world::World;
use serde::Serialize;
use std::fmt;

/// The outcome of one seed.
#[derive(Clone, Debug)]
pub struct RunReport {
    pub seed: u64,
    pub nodes: usize,
    /// Ticks simulated (up to the violation, if one stopped the run).
    pub ticks: u64,
    pub ops: OpCounts,
    pub elections: usize,
    pub faults_injected: u64,
    /// The fault kinds this seed switched on.
    pub fault_kinds: String,
    pub schedule: Vec<ScheduledFault>,
    pub messages_sent: u64,
    pub messages_lost: u64,
    pub trace_events: u64,
    pub trace_hash: u64,
    pub violation: Option<Violation>,
    /// The linearizability search gave no verdict (out of budget).
    pub inconclusive: Option<String>,
    pub trace_tail: Vec<String>,
    pub history: Vec<Recorded>,
    /// Background snapshot writes: durable, and lost to a crash.
    pub snapshot_writes: crate::world::SnapshotWrites,
    /// Persist stages' syncs: rounds made durable later, and queued rounds
    /// lost to a crash before they were.
    pub persist_syncs: crate::world::PersistSyncs,
    /// WAL segments the nodes' block disks saw recycled (kv-storage reusing
    /// a compacted segment's file): 0 without `blockdisk`.
    pub wal_segments_recycled: u64,
}

/// The parts of a report that a snapshot test pins down.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Summary {
    pub seed: u64,
    pub ticks: u64,
    pub ops_ok: u64,
    pub ops_failed: u64,
    pub ops_unknown: u64,
    pub elections: usize,
    pub faults_injected: u64,
    pub fault_kinds: String,
    pub schedule: Vec<String>,
    pub messages_sent: u64,
    pub messages_lost: u64,
    pub trace_events: u64,
    pub trace_hash: String,
    pub violation: Option<String>,
}

/// Runs one seed to the end (or to its first violation).
pub fn run(options: SimOptions) -> RunReport {
    let mut world = World::new(options);
    world.run();
    world.into_report()
}

impl World {
    pub fn into_report(self) -> RunReport {
        let wal_segments_recycled = self.wal_segments_recycled();
        RunReport {
            seed: self.opts.seed,
            nodes: self.opts.nodes,
            ticks: self.now.min(self.end_step) / STEPS_PER_TICK,
            ops: count(&self.history),
            elections: self.checker.elections(),
            faults_injected: self.faults_fired,
            fault_kinds: self.plan.kinds_label(),
            schedule: self.plan.schedule.clone(),
            messages_sent: self.network.sent,
            messages_lost: self.network.lost + self.network.cut_off,
            trace_events: self.trace.events,
            trace_hash: self.trace.hash(),
            violation: self.violation,
            inconclusive: self.linearizability_unknown,
            trace_tail: self.trace.tail_lines(),
            history: self.history,
            snapshot_writes: self.snapshot_writes,
            persist_syncs: self.persist_syncs,
            wal_segments_recycled,
        }
    }
}

impl World {
    /// Summed over the nodes' block disks (see `BlockFs::recycled_segments`).
    fn wal_segments_recycled(&self) -> u64 {
        use crate::world::NodeState;
        self.nodes
            .iter()
            .filter_map(|node| match &node.state {
                NodeState::Up(replica) => replica.disk.block_fs().cloned(),
                NodeState::Down(image) => image.block.clone(),
            })
            .map(|fs| fs.recycled_segments())
            .sum()
    }
}

impl RunReport {
    pub fn passed(&self) -> bool {
        self.violation.is_none()
    }

    pub fn summary(&self) -> Summary {
        Summary {
            seed: self.seed,
            ticks: self.ticks,
            ops_ok: self.ops.ok,
            ops_failed: self.ops.failed,
            ops_unknown: self.ops.unknown,
            elections: self.elections,
            faults_injected: self.faults_injected,
            fault_kinds: self.fault_kinds.clone(),
            schedule: self.schedule.iter().map(|f| f.to_string()).collect(),
            messages_sent: self.messages_sent,
            messages_lost: self.messages_lost,
            trace_events: self.trace_events,
            trace_hash: format!("{:016x}", self.trace_hash),
            violation: self.violation.as_ref().map(|v| v.to_string()),
        }
    }

    /// The violation report: seed, tick, property, the end of the trace.
    pub fn violation_report(&self) -> Option<String> {
        let v = self.violation.as_ref()?;
        let mut out = format!(
            "VIOLATION seed={} tick={} property: {}\n  {}\n  faults: {}\n  schedule:\n",
            self.seed,
            v.step / STEPS_PER_TICK,
            v.property,
            v.detail.replace('\n', "\n  "),
            self.fault_kinds,
        );
        for (i, f) in self.schedule.iter().enumerate() {
            out.push_str(&format!("    #{i} {f}\n"));
        }
        out.push_str(&format!("  last {} trace lines:\n", self.trace_tail.len()));
        for line in &self.trace_tail {
            out.push_str(&format!("    {line}\n"));
        }
        Some(out)
    }
}

impl fmt::Display for RunReport {
    /// `seed=7 ticks=10000 ops=812/97/12 elections=5 faults=7 trace=...`
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "seed={} ticks={} ops ok/failed/unknown={}/{}/{} elections={} faults={} [{}] trace={:016x}",
            self.seed,
            self.ticks,
            self.ops.ok,
            self.ops.failed,
            self.ops.unknown,
            self.elections,
            self.faults_injected,
            self.fault_kinds,
            self.trace_hash,
        )?;
        if self.wal_segments_recycled > 0 {
            write!(f, " wal_recycled={}", self.wal_segments_recycled)?;
        }
        if let Some(v) = &self.violation {
            write!(f, " VIOLATION {}", v.property)?;
        }
        if self.inconclusive.is_some() {
            write!(f, " (linearizability inconclusive)")?;
        }
        Ok(())
    }
}
