//! What a run is asked to do.

use crate::faults::FaultSelection;
use raft_core::Config;
use std::fmt;
use std::sync::Arc;

/// Adjusts each node's configuration (tests switch protocol bugs on here).
pub type ConfigHook = Arc<dyn Fn(&mut Config) + Send + Sync>;

/// Adjusts each node's snapshot policy after the plan set it (tests give
/// kv-node's rules a scale at which they fire in a run).
pub type SnapshotPolicyHook = Arc<dyn Fn(&mut kv_replica::replica::SnapshotPolicy) + Send + Sync>;

/// How long after the final heal a new write must commit.
pub const LIVENESS_BOUND_TICKS: u64 = 150;

/// After that bound, how often the final phase looks again whether the
/// voters a commit needs are still catching up (see `world_final`).
pub const CATCH_UP_WINDOW_TICKS: u64 = 50;

/// The most the final phase is extended while voters catch up.
pub const MAX_CATCH_UP_TICKS: u64 = 3_000;

#[derive(Clone)]
pub struct SimOptions {
    pub seed: u64,
    /// Cluster size, 1..=9 (3 or 5 in practice).
    pub nodes: usize,
    /// Simulated ticks in the whole run, final phase included.
    pub ticks: u64,
    pub clients: usize,
    pub faults: FaultSelection,
    /// Print every trace line as it happens.
    pub print_trace: bool,
    /// Stop issuing client operations after this many (shrinking).
    pub max_ops: Option<u64>,
    /// Draw the fault plan as for a run of this many ticks (shrinking: a
    /// shorter run keeps the original schedule, cut at its heal tick).
    pub plan_ticks: Option<u64>,
    /// Keep only these positions of the drawn fault schedule (shrinking).
    pub keep_faults: Option<Vec<usize>>,
    /// Run the linearizability checker at the end.
    pub check_linearizability: bool,
    pub config_hook: Option<ConfigHook>,
    pub snapshot_policy_hook: Option<SnapshotPolicyHook>,
    /// Cut a removed leader off one way once its removal commits (see
    /// [`crate::faults::CUT_REMOVED_LEADER`]).
    pub cut_removed_leader: bool,
    /// Known storage bugs switched on in `blockdisk` runs (kv-storage
    /// `bugs.rs`; only with the `buggy` feature).
    pub storage_bugs: kv_storage::StorageBugs,
    /// Transaction clients (`txn_client`), besides `clients`.
    pub txn_clients: usize,
    /// Lease clients (`lease_client`).
    pub lease_clients: usize,
    /// Watchers (`watch_client`).
    pub watchers: usize,
    /// Nodes persist through a stage that makes rounds durable later (as
    /// kv-node does), three incarnations in four, drawn from the seed;
    /// false: every node syncs each round at once (the bug catalogues'
    /// baseline rows; each bug also has a row with stages on).
    pub persist_stage: bool,
    /// Known replica bugs switched on (kv-replica `bugs.rs`; only with the
    /// `buggy` feature).
    pub replica_bugs: kv_replica::bugs::ReplicaBugs,
    /// The tick length the replicas' lease clocks assume. The lease checks
    /// take a tick for [`crate::lease_client::LEASE_TICK_MS`]; another value
    /// is a lease clock that runs fast (larger) or slow (smaller), which
    /// the tests use to show that both lease checks can fail.
    pub lease_tick_ms: u64,
}

impl SimOptions {
    /// Three nodes, 10,000 ticks, four clients, every fault kind eligible.
    pub fn new(seed: u64) -> SimOptions {
        SimOptions {
            seed,
            nodes: 3,
            ticks: 10_000,
            clients: 4,
            faults: FaultSelection::Swarm,
            print_trace: false,
            max_ops: None,
            plan_ticks: None,
            keep_faults: None,
            check_linearizability: true,
            config_hook: None,
            snapshot_policy_hook: None,
            cut_removed_leader: crate::faults::CUT_REMOVED_LEADER,
            storage_bugs: kv_storage::StorageBugs::default(),
            txn_clients: 1,
            lease_clients: 1,
            watchers: 3,
            persist_stage: true,
            replica_bugs: kv_replica::bugs::ReplicaBugs::default(),
            lease_tick_ms: crate::lease_client::LEASE_TICK_MS,
        }
    }

    /// Only the key-value clients: no transaction or lease clients and no
    /// watchers. A run so configured is the run of the same seed before
    /// those clients existed.
    pub fn kv_clients_only(mut self) -> SimOptions {
        self.txn_clients = 0;
        self.lease_clients = 0;
        self.watchers = 0;
        self
    }

    /// The runs the protocol and storage bug catalogues' baseline rows
    /// were measured on: key-value clients only, every node syncing each
    /// round at once (the rows with persist stages use `kv_clients_only`).
    pub fn catalogue_baseline(self) -> SimOptions {
        SimOptions {
            persist_stage: false,
            ..self.kv_clients_only()
        }
    }

    /// Ticks of the final phase, in which every fault is healed.
    pub fn final_phase_ticks(&self) -> u64 {
        (self.ticks / 2).min(400)
    }

    /// The tick at which every fault heals.
    pub fn heal_tick(&self) -> u64 {
        self.ticks - self.final_phase_ticks()
    }

    /// The heal tick the fault plan is drawn for.
    pub fn plan_heal_tick(&self) -> u64 {
        let ticks = self.plan_ticks.unwrap_or(self.ticks);
        ticks - (ticks / 2).min(400)
    }

    /// Clients start no new operation from this tick on, so that the run
    /// ends quiet and the replicas can be compared.
    pub fn quiet_tick(&self) -> u64 {
        self.ticks - self.final_phase_ticks() / 4
    }

    /// Clients stop retrying from this tick on (an operation still open
    /// ends with an unknown outcome), so that no proposal is in flight when
    /// the replicas are compared at the end.
    pub fn settle_tick(&self) -> u64 {
        self.ticks - self.final_phase_ticks() / 8
    }
}

impl fmt::Debug for SimOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SimOptions")
            .field("seed", &self.seed)
            .field("nodes", &self.nodes)
            .field("ticks", &self.ticks)
            .field("clients", &self.clients)
            .field("faults", &self.faults)
            .field("max_ops", &self.max_ops)
            .field("plan_ticks", &self.plan_ticks)
            .field("keep_faults", &self.keep_faults)
            .field("config_hook", &self.config_hook.is_some())
            .field("snapshot_policy_hook", &self.snapshot_policy_hook.is_some())
            .field("cut_removed_leader", &self.cut_removed_leader)
            .field("storage_bugs", &self.storage_bugs)
            .field("txn_clients", &self.txn_clients)
            .field("lease_clients", &self.lease_clients)
            .field("watchers", &self.watchers)
            .field("persist_stage", &self.persist_stage)
            .field("replica_bugs", &self.replica_bugs)
            .field("lease_tick_ms", &self.lease_tick_ms)
            .finish()
    }
}
