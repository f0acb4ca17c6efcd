//! The simulated world: a clock, an event queue, the nodes (each a real
//! `kv_replica::replica::Replica` over a simulated disk), the network and the
//! clients. Everything happens in one thread, in event order, with all
//! randomness from the seed.
//!
//! Client handling lives in `world_clients.rs`, fault injection in
//! `world_faults.rs`.

use crate::checks::{Checker, Violation, Writers};
use crate::client::{Client, Recorded};
use crate::disk::{DiskImage, SimDisk};
use crate::faults::{FaultPlan, PlanShape, STEPS_PER_TICK};
use crate::network::Network;
use crate::options::SimOptions;
use crate::rng::SimRng;
use crate::trace::{MessageSummary, Trace, TraceEvent};
use crate::world_triggers::Armed;
use kv_replica::command::RequestId;
use kv_replica::membership_waiters::MembershipWaiters;
use kv_replica::replica::Replica;
use kv_replica::waiters::Waiters;
use kv_replica::watch::WatchFilter;
use raft_core::{Input, Message, MessageBody, NodeId, Role};
use std::collections::{BTreeMap, BTreeSet, VecDeque};

/// The properties still checked once a hostile peer sent forged data: a
/// panic of node code, a restart that fails, a message storm.
pub(crate) const PANIC_PROPERTIES: [&str; 3] = [
    "node code does not panic",
    "restart recovers",
    STORM_PROPERTY,
];

/// Events queued at once beyond which the run is a message storm: a
/// protocol path that answers each copy of a message with more than one
/// (seed 1800 at one node: every duplicated snapshot answer resent its
/// chunk, millions within one tick, until the process ran out of memory).
/// Normal runs stay at a few thousand. Hostile input does not excuse it.
pub(crate) const MAX_QUEUED_EVENTS: usize = 200_000;
pub(crate) const STORM_PROPERTY: &str = "messages in flight stay bounded";

/// Something that happens at a point in simulated time.
#[derive(Debug)]
pub(crate) enum Event {
    Tick(NodeId),
    Deliver(Message),
    ClientWake(usize),
    /// A watcher (re)connects.
    WatcherWake(usize),
    /// A watcher's connection drops, if it is still that session's.
    WatcherDrop {
        watcher: usize,
        session: usize,
    },
    ClientTimeout {
        client: usize,
        op: usize,
        attempt: u32,
    },
    FaultStart(usize),
    FaultEnd(usize),
    RestoreLinks(usize),
    /// Nudges an event-triggered fault that waits for an election.
    Kick(usize),
    Restart {
        node: NodeId,
        incarnation: u32,
    },
    /// A cancelled or retried leadership transfer asks again.
    TransferAgain {
        fault: usize,
        leader: NodeId,
        to: NodeId,
        rounds_left: u64,
    },
    /// A node that is up crashes and restarts `down_ticks` later.
    CrashFor {
        node: NodeId,
        down_ticks: u64,
        /// Also cut the messages of fault `cut.0` from `cut.1` to `node`.
        cut: Option<(usize, NodeId)>,
    },
    /// A held TimeoutNow of fault `fault` is let go.
    LateTimeoutNow {
        fault: usize,
        message: Message,
    },
    /// A node's background snapshot write ends (if the node is still the
    /// incarnation that started it).
    SnapshotWritten {
        node: NodeId,
        incarnation: u32,
    },
    /// A node's persist stage takes the rounds handed to it and writes
    /// them (if the node is still the incarnation that handed them).
    PersistTaken {
        node: NodeId,
        incarnation: u32,
    },
    /// A node's persist stage's fsync ends: the rounds it took are durable
    /// (if the node is still the incarnation that handed them).
    Persisted {
        node: NodeId,
        incarnation: u32,
    },
    Heal,
    Probe,
    LivenessDeadline,
}

// A down node's image is read and replaced whole, a few times per run:
// its size does not matter.
#[allow(clippy::large_enum_variant)]
pub(crate) enum NodeState {
    Up(Box<Replica<SimDisk>>),
    Down(DiskImage),
}

/// Delivered to a paused node and handled when it resumes.
#[derive(Debug)]
pub(crate) enum Backlog {
    Message(Message),
    Client {
        client: usize,
        op: usize,
        attempt: u32,
    },
}

pub(crate) struct SimNode {
    pub id: NodeId,
    pub state: NodeState,
    pub paused: bool,
    pub backlog: VecDeque<Backlog>,
    /// Steps between this node's ticks (clock skew).
    pub tick_period: u64,
    pub incarnation: u32,
    /// Down time after an injected fsync failure kills it.
    pub sync_crash_down_ticks: u64,
    /// Client requests waiting on this incarnation: kv-replica's waiters,
    /// the very bookkeeping kv-node's driver runs.
    pub waiters: ClientWaiters,
    /// Membership changes this node appended as leader, by fault number,
    /// settled as kv-node's driver settles its membership waiters.
    pub changes: MembershipWaiters<usize>,
    /// Entries this incarnation appended in rounds its persist stage has
    /// not made durable yet, each with its predecessor's term: checked
    /// once durable, dropped by a crash.
    pub logged_pending: std::collections::VecDeque<(raft_core::Entry, Option<raft_core::Term>)>,
    /// How many entries of this incarnation were logged from
    /// `logged_pending` (its front is the next one).
    pub logged_count: u64,
}

/// A write attempt waiting on a node: client, history position, request.
pub(crate) type WriteWaiter = (usize, usize, RequestId);
/// A read waiting on a node: client and read context.
pub(crate) type ReadWaiter = (usize, u64);
pub(crate) type ClientWaiters = Waiters<WriteWaiter, ReadWaiter>;

impl SimNode {
    pub fn replica(&self) -> Option<&Replica<SimDisk>> {
        match &self.state {
            NodeState::Up(r) => Some(r),
            NodeState::Down(_) => None,
        }
    }

    pub fn replica_mut(&mut self) -> Option<&mut Replica<SimDisk>> {
        match &mut self.state {
            NodeState::Up(r) => Some(r),
            NodeState::Down(_) => None,
        }
    }

    /// Up and not paused: takes ticks, messages and requests.
    pub fn is_live(&self) -> bool {
        !self.paused && matches!(self.state, NodeState::Up(_))
    }
}

/// The liveness probe of the final phase.
#[derive(Debug, Default)]
pub(crate) struct Probe {
    pub requests: BTreeSet<RequestId>,
    pub healed_step: Option<u64>,
    pub satisfied_step: Option<u64>,
}

pub struct World {
    pub(crate) opts: SimOptions,
    pub(crate) plan: FaultPlan,
    pub(crate) rng: SimRng,
    pub(crate) now: u64,
    pub(crate) end_step: u64,
    /// (step, sequence number) -> slot in `events`: the order of events.
    /// Events live in a slab so the ordered map moves small keys only.
    queue: BTreeMap<(u64, u64), usize>,
    queue_seq: u64,
    events: Vec<Option<Event>>,
    free_slots: Vec<usize>,
    pub(crate) nodes: Vec<SimNode>,
    pub(crate) network: Network,
    pub(crate) clients: Vec<Client>,
    pub(crate) history: Vec<Recorded>,
    /// Every write attempt ever: request id -> (client, seq).
    pub(crate) writers: Writers,
    pub(crate) next_request: u64,
    pub(crate) next_context: u64,
    pub(crate) keys: Vec<String>,
    pub(crate) checker: Checker,
    pub(crate) trace: Trace,
    pub(crate) faults_fired: u64,
    /// Links cut by each active scheduled fault.
    pub(crate) active_links: BTreeMap<usize, Vec<(NodeId, NodeId)>>,
    /// The node each active pause fault paused.
    pub(crate) paused_by: BTreeMap<usize, NodeId>,
    /// The node whose disk each active `DiskFull` fault filled.
    pub(crate) full_disks: BTreeMap<usize, NodeId>,
    /// The slow-down factor of each active `SlowDisks` fault.
    pub(crate) slow_disks: BTreeMap<usize, u64>,
    /// Whether a configuration change was ever accepted in this run: a
    /// log cut by disk damage may then go back to an older configuration.
    pub(crate) config_changed: bool,
    /// Event-triggered faults waiting for their event, by schedule position.
    pub(crate) armed: BTreeMap<usize, Armed>,
    pub(crate) probe: Probe,
    pub(crate) catch_up: crate::world_final::CatchUp,
    pub(crate) violation: Option<Violation>,
    /// Set when the linearizability search ran out of budget.
    pub(crate) linearizability_unknown: Option<String>,
    pub(crate) outbox: Vec<Message>,
    /// Recent messages per link, for a corrupting peer's stale replays.
    pub(crate) recent: crate::world_corrupt::Recent,
    /// Messages a hostile peer rewrote beyond any valid range.
    pub(crate) hostile_sent: u64,
    /// A transfer whose TimeoutNow is to be held (`TransferShape::HeldTimeoutNow`).
    pub(crate) hold_timeout_now: Option<crate::world_transfer::HoldTimeoutNow>,
    /// Reads go to this node until this step: clients that keep reading
    /// from the node they last saw leading.
    pub(crate) steer_reads: Option<(NodeId, u64)>,
    /// What became of the background snapshot writes.
    pub(crate) snapshot_writes: SnapshotWrites,
    /// Each node's watch hub (by node id - 1), while it is up.
    pub(crate) hubs: Vec<Option<kv_replica::watch::WatchHub>>,
    pub(crate) watchers: Vec<crate::watch_client::Watcher>,
    /// The committed events, for the watchers' check.
    pub(crate) reference: crate::watch_client::Reference,
    /// Every lease the lease clients were granted.
    pub(crate) leases: Vec<crate::lease_client::LeaseLife>,
    /// When each lease client's keepalive in flight arrived at its node.
    pub(crate) keepalive_arrival: BTreeMap<usize, u64>,
    /// What became of the persist stages' rounds.
    pub(crate) persist_syncs: PersistSyncs,
}

/// Counts of persist-stage syncs (`SimDisk::persist_stage`), per run.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PersistSyncs {
    /// Syncs that made queued rounds durable and acknowledged them.
    pub durable: u64,
    /// Crashes that lost rounds queued and not yet durable.
    pub lost_to_crash: u64,
    /// Of those, crashes that landed inside the stage's fsync, between its
    /// write and its fdatasync.
    pub in_fsync: u64,
}

/// Counts of background snapshot writes, reported per run.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SnapshotWrites {
    /// Written, durable and handed to the core.
    pub durable: u64,
    /// Captured, then lost to a crash before they were durable.
    pub lost_to_crash: u64,
    /// Of the durable ones, those written as deltas (block disks only).
    pub deltas_durable: u64,
    /// Restarts that rebuilt the state from a whole snapshot and deltas.
    pub chains_restored: u64,
}

/// The kind of every client: the KV clients, then the transaction and
/// lease clients.
fn client_kinds(opts: &SimOptions) -> Vec<crate::client::ClientKind> {
    use crate::client::ClientKind;
    let mut kinds = vec![ClientKind::Kv; opts.clients];
    kinds.extend(std::iter::repeat_n(ClientKind::Txn, opts.txn_clients));
    kinds.extend(std::iter::repeat_n(
        ClientKind::Lease(Default::default()),
        opts.lease_clients,
    ));
    kinds
}

impl World {
    pub fn new(opts: SimOptions) -> World {
        assert!((1..=9).contains(&opts.nodes), "1..=9 nodes");
        let mut plan_rng = SimRng::new(opts.seed, 0);
        let shape = PlanShape {
            nodes: opts.nodes,
            first_fault_tick: 20,
            heal_tick: opts.plan_heal_tick(),
        };
        let mut plan = FaultPlan::draw(&opts.faults, shape, &mut plan_rng);
        if let Some(keep) = &opts.keep_faults {
            plan.keep_faults(keep);
        }
        let key_count = plan_rng.range(2, 5);
        let keys = (0..key_count).map(|k| format!("k{k}")).collect();
        let mut rng = SimRng::new(opts.seed, 1);
        let mut world = World {
            end_step: opts.ticks * STEPS_PER_TICK,
            queue: BTreeMap::new(),
            queue_seq: 0,
            events: Vec::new(),
            free_slots: Vec::new(),
            nodes: Vec::new(),
            network: Network::new(opts.nodes + plan.spare_nodes),
            clients: client_kinds(&opts)
                .into_iter()
                .enumerate()
                .map(|(c, kind)| Client::of_kind(c as u64 + 1, kind))
                .collect(),
            history: Vec::new(),
            writers: Writers::new(),
            next_request: 1,
            next_context: 1,
            keys,
            checker: Checker::default(),
            trace: Trace::new(opts.print_trace),
            faults_fired: 0,
            active_links: BTreeMap::new(),
            paused_by: BTreeMap::new(),
            full_disks: BTreeMap::new(),
            slow_disks: BTreeMap::new(),
            config_changed: false,
            armed: BTreeMap::new(),
            probe: Probe::default(),
            catch_up: Default::default(),
            violation: None,
            linearizability_unknown: None,
            outbox: Vec::new(),
            recent: Default::default(),
            hostile_sent: 0,
            hold_timeout_now: None,
            steer_reads: None,
            snapshot_writes: SnapshotWrites::default(),
            hubs: (0..opts.nodes + plan.spare_nodes).map(|_| None).collect(),
            watchers: Vec::new(),
            reference: Default::default(),
            leases: Vec::new(),
            keepalive_arrival: BTreeMap::new(),
            persist_syncs: PersistSyncs::default(),
            now: 0,
            rng: SimRng::new(0, 0),
            plan,
            opts,
        };
        for i in 1..=(world.opts.nodes + world.plan.spare_nodes) as u64 {
            let tick_period = world.plan.tick_period_steps(&mut rng);
            world.nodes.push(SimNode {
                id: NodeId(i),
                state: NodeState::Down(match world.plan.block_disk {
                    Some(_) => {
                        DiskImage::block(world.opts.seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ i)
                    }
                    None => DiskImage::default(),
                }),
                paused: false,
                backlog: VecDeque::new(),
                tick_period,
                incarnation: 0,
                sync_crash_down_ticks: 0,
                waiters: Waiters::new(NodeId(i), None),
                changes: MembershipWaiters::default(),
                logged_pending: Default::default(),
                logged_count: 0,
            });
            let first_tick = rng.range(1, tick_period);
            world.schedule(first_tick, Event::Tick(NodeId(i)));
        }
        world.rng = rng;
        for i in 0..world.nodes.len() {
            world.start_node(NodeId(i as u64 + 1));
        }
        for c in 0..world.clients.len() {
            let at = world.rng.range(1, 10 * STEPS_PER_TICK);
            world.schedule(at, Event::ClientWake(c));
        }
        for w in 0..world.opts.watchers {
            let filter = match w % 4 {
                0 => WatchFilter::Prefix(String::new()),
                1 => WatchFilter::Key(world.keys[w % world.keys.len()].clone()),
                2 => WatchFilter::Prefix("t".into()),
                _ => WatchFilter::Prefix("l".into()),
            };
            let name = format!("w{}", w + 1);
            world
                .watchers
                .push(crate::watch_client::Watcher::new(name, filter));
            let at = world.rng.range(1, 10 * STEPS_PER_TICK);
            world.schedule(at, Event::WatcherWake(w));
        }
        for (i, f) in world.plan.schedule.clone().iter().enumerate() {
            if f.at_tick < world.opts.heal_tick() {
                world.schedule(f.at_tick * STEPS_PER_TICK, Event::FaultStart(i));
            }
        }
        world.schedule(world.opts.heal_tick() * STEPS_PER_TICK, Event::Heal);
        world
    }

    /// Queues `event` at absolute step `at`.
    pub(crate) fn schedule(&mut self, at: u64, event: Event) {
        self.queue_seq += 1;
        let slot = match self.free_slots.pop() {
            Some(slot) => {
                self.events[slot] = Some(event);
                slot
            }
            None => {
                self.events.push(Some(event));
                self.events.len() - 1
            }
        };
        self.queue.insert((at, self.queue_seq), slot);
    }

    pub(crate) fn schedule_in(&mut self, steps: u64, event: Event) {
        self.schedule(self.now + steps.max(1), event);
    }

    /// Restarts node `id` after `steps`, unless it restarted (or crashed
    /// again) meanwhile: the event names its current incarnation.
    pub(crate) fn schedule_restart(&mut self, id: NodeId, steps: u64) {
        let incarnation = self.node(id).incarnation;
        self.schedule_in(
            steps,
            Event::Restart {
                node: id,
                incarnation,
            },
        );
    }

    pub(crate) fn node(&self, id: NodeId) -> &SimNode {
        &self.nodes[id.0 as usize - 1]
    }

    pub(crate) fn node_mut(&mut self, id: NodeId) -> &mut SimNode {
        &mut self.nodes[id.0 as usize - 1]
    }

    pub(crate) fn fail(&mut self, property: &'static str, detail: String) {
        self.record(Violation {
            step: self.now,
            property,
            detail,
        });
    }

    /// Records the first violation. Once a hostile message went out, only
    /// panics count: a node fed forged data owes no other property.
    pub(crate) fn record(&mut self, v: Violation) {
        if self.hostile_sent > 0 && !PANIC_PROPERTIES.contains(&v.property) {
            self.trace.note(self.now, || {
                format!("after hostile messages, not checked: {v}")
            });
            return;
        }
        self.violation.get_or_insert(v);
    }

    /// The node that leads the highest term, among the nodes that are up.
    pub(crate) fn leader(&self) -> Option<NodeId> {
        self.nodes
            .iter()
            .filter_map(|n| n.replica())
            .filter(|r| r.node.role() == Role::Leader)
            .max_by_key(|r| r.node.term())
            .map(|r| r.node.id())
    }

    /// Runs to the end or to the first violation.
    pub fn run(&mut self) {
        loop {
            self.run_until_end();
            if self.violation.is_some() {
                break;
            }
            self.now = self.now.max(self.end_step);
            match self.extension_ticks() {
                Some(ticks) => self.end_step += ticks * STEPS_PER_TICK,
                None => break,
            }
        }
        if self.violation.is_none() {
            self.now = self.now.max(self.end_step);
            self.final_checks();
        }
    }

    /// Handles events up to the end step or the first violation.
    fn run_until_end(&mut self) {
        while let Some((&(at, _), _)) = self.queue.first_key_value() {
            if at >= self.end_step || self.violation.is_some() {
                break;
            }
            let (_, slot) = self.queue.pop_first().expect("queue is not empty");
            let event = self.events[slot]
                .take()
                .expect("a queued slot holds its event");
            self.free_slots.push(slot);
            self.now = at;
            self.handle(event);
            if self.queue.len() > MAX_QUEUED_EVENTS {
                self.fail(
                    STORM_PROPERTY,
                    format!("{} events queued at once", self.queue.len()),
                );
            }
        }
    }

    fn handle(&mut self, event: Event) {
        match event {
            Event::Tick(id) => {
                let period = self.node(id).tick_period;
                self.schedule_in(period, Event::Tick(id));
                if self.node(id).is_live() {
                    self.write_deferred_hard_state(id);
                    self.step_node(id, Input::Tick);
                }
            }
            Event::Deliver(m) => self.deliver(m),
            Event::ClientWake(c) => self.client_wake(c),
            Event::WatcherWake(w) => self.watcher_wake(w),
            Event::WatcherDrop { watcher, session } => self.watcher_drop(watcher, session),
            Event::ClientTimeout {
                client,
                op,
                attempt,
            } => self.client_timeout(client, op, attempt),
            Event::FaultStart(i) => self.fault_start(i),
            Event::FaultEnd(i) => self.fault_end(i),
            Event::RestoreLinks(i) => self.restore_links(i),
            Event::Kick(i) => self.kick(i),
            Event::Restart { node, incarnation } => {
                if self.node(node).incarnation == incarnation {
                    self.start_node(node);
                }
            }
            Event::TransferAgain {
                fault,
                leader,
                to,
                rounds_left,
            } => self.transfer_again(fault, leader, to, rounds_left),
            Event::CrashFor {
                node,
                down_ticks,
                cut,
            } => {
                if let Some((fault, from)) = cut
                    && !self.plan.healed
                    && self.active_links.contains_key(&fault)
                {
                    // The restarted voter hears nothing of the old leader,
                    // whose lease still rests on its last acknowledgement.
                    self.cut_links(fault, &[(from, node)]);
                }
                self.crash_for(node, down_ticks)
            }
            Event::LateTimeoutNow { fault, message } => self.late_timeout_now(fault, message),
            Event::SnapshotWritten { node, incarnation } => {
                self.snapshot_written(node, incarnation)
            }
            Event::PersistTaken { node, incarnation } => self.persist_taken(node, incarnation),
            Event::Persisted { node, incarnation } => self.persisted(node, incarnation),
            Event::Heal => self.heal(),
            Event::Probe => self.probe(),
            Event::LivenessDeadline => self.liveness_deadline(),
        }
    }

    fn deliver(&mut self, m: Message) {
        let to = m.to;
        let why = if self.network.is_cut(m.from, to) {
            Some("link cut")
        } else if self.node(to).replica().is_none() {
            Some("node down")
        } else {
            None
        };
        if let Some(why) = why {
            self.trace
                .record(self.now, TraceEvent::Drop(MessageSummary::of(&m), why));
            return;
        }
        if self.node(to).paused {
            self.node_mut(to).backlog.push_back(Backlog::Message(m));
            return;
        }
        self.trace
            .record(self.now, TraceEvent::Deliver(MessageSummary::of(&m)));
        if self.armed.is_empty() || !matches!(m.body, MessageBody::InstallSnapshot { .. }) {
            self.step_node(to, Input::Message(m));
            return;
        }
        let body = m.body.clone();
        self.step_node(to, Input::Message(m));
        self.maybe_crash_mid_snapshot(to, &body);
    }

    /// Sends a message through the network.
    pub(crate) fn send(&mut self, m: Message) {
        let Some(m) = self.maybe_hold_timeout_now(m) else {
            return;
        };
        for m in self.corrupt(m) {
            self.route(m);
        }
    }

    fn route(&mut self, m: Message) {
        let route = self.network.route(m.from, m.to, &self.plan, &mut self.rng);
        match route.deliveries {
            [Some(a), Some(b)] => {
                self.schedule_in(a, Event::Deliver(m.clone()));
                self.schedule_in(b, Event::Deliver(m));
            }
            [Some(a), None] | [None, Some(a)] => self.schedule_in(a, Event::Deliver(m)),
            [None, None] => {}
        }
    }
}
