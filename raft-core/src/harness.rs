//! A deterministic in-memory cluster for tests, examples and benchmarks:
//! single-threaded, perfect storage that persists every `Ready` at once,
//! and a network that delivers in order unless a link is cut.
//!
//! It follows the driver contract of [`Ready`](crate::Ready) exactly, so
//! tests written against it exercise the same paths a real driver does. The
//! chaos simulator (`sim`) is the harsher world; this one is for focused,
//! readable scenarios and traces.

use crate::{
    Accepted, ChunkRequest, Config, Durability, Entry, HardState, InitialState, Input, LogIndex,
    Membership, Message, Node, NodeId, ReadState, ReadyHandler, Role, SnapshotChunk, SnapshotMeta,
    StepError, Term,
};
use bytes::Bytes;
use std::collections::{BTreeMap, BTreeSet, VecDeque};

/// What a node has written to its "disk".
#[derive(Clone, Debug, Default)]
pub struct MemStorage {
    pub hard_state: HardState,
    /// The newest snapshot and its bytes.
    pub snapshot: Option<(SnapshotMeta, Bytes)>,
    /// The log after the snapshot, contiguous.
    pub entries: Vec<Entry>,
    /// A snapshot being received from the leader.
    pub staging: Vec<u8>,
    /// Set by [`Cluster::restart_damaged`]: the node lost acknowledged
    /// records and restarts with this bound until its log is repaired (as
    /// kv-node keeps it in a marker file).
    pub damaged_up_to_term: Option<Term>,
}

impl MemStorage {
    fn snapshot_index(&self) -> LogIndex {
        self.snapshot
            .as_ref()
            .map_or(LogIndex::ZERO, |(m, _)| m.index)
    }

    fn append(&mut self, entries: &[Entry]) {
        let Some(first) = entries.first() else { return };
        // Entries are contiguous after the snapshot: cut by position.
        let keep = (first.index.0 - self.snapshot_index().0 - 1) as usize;
        self.entries.truncate(keep);
        self.entries.extend_from_slice(entries);
    }
}

/// The bytes of the harness's snapshot at `index`: `size` deterministic
/// bytes, so that a transfer in chunks can be checked byte for byte.
pub fn snapshot_payload(index: LogIndex, size: usize) -> Bytes {
    (0..size)
        .map(|i| (i as u64).wrapping_mul(31).wrapping_add(index.0) as u8)
        .collect::<Vec<u8>>()
        .into()
}

/// One node's share of the cluster during one `Ready`: perfect storage
/// that is durable at once, and the shared network.
struct Round<'a> {
    disk: &'a mut MemStorage,
    applied: &'a mut Vec<Entry>,
    applied_count: &'a mut u64,
    keep_applied: bool,
    snapshot_states: &'a BTreeMap<(LogIndex, Term), Vec<Entry>>,
    isolated: &'a BTreeSet<NodeId>,
    in_flight: &'a mut VecDeque<Message>,
    read_states: &'a mut Vec<ReadState>,
    dropped_reads: &'a mut Vec<u64>,
}

impl ReadyHandler for Round<'_> {
    type Error = std::convert::Infallible;

    fn send(&mut self, message: Message) -> Result<(), Self::Error> {
        if !self.isolated.contains(&message.from) && !self.isolated.contains(&message.to) {
            self.in_flight.push_back(message);
        }
        Ok(())
    }

    fn snapshot_chunk(&mut self, chunk: ChunkRequest) -> Result<Bytes, Self::Error> {
        let ChunkRequest { meta, offset, len } = chunk;
        let (stored, bytes) = self
            .disk
            .snapshot
            .as_ref()
            .expect("the sender has a snapshot");
        assert_eq!(stored, meta, "only the stored snapshot is sent");
        let end = (offset + len).min(bytes.len() as u64);
        Ok(bytes.slice(offset as usize..end as usize))
    }

    fn stage_snapshot_chunk(&mut self, chunk: SnapshotChunk) -> Result<(), Self::Error> {
        let staging = &mut self.disk.staging;
        if chunk.offset == 0 {
            staging.clear();
        }
        assert_eq!(chunk.offset, staging.len() as u64, "chunks arrive in order");
        staging.extend_from_slice(&chunk.data);
        Ok(())
    }

    fn install_snapshot(&mut self, meta: &SnapshotMeta) -> Result<(), Self::Error> {
        let data = Bytes::from(std::mem::take(&mut self.disk.staging));
        assert_eq!(
            data,
            snapshot_payload(meta.index, data.len()),
            "the snapshot arrived intact"
        );
        self.disk.snapshot = Some((meta.clone(), data));
        self.disk.entries.clear();
        *self.applied = self.snapshot_states[&(meta.index, meta.term)].clone();
        Ok(())
    }

    fn append(&mut self, entries: &[Entry]) -> Result<(), Self::Error> {
        self.disk.append(entries);
        Ok(())
    }

    fn set_hard_state(&mut self, hard_state: &HardState) -> Result<(), Self::Error> {
        self.disk.hard_state = *hard_state;
        Ok(())
    }

    fn persist(&mut self, _ready: u64, _must_sync: bool) -> Result<Durability, Self::Error> {
        Ok(Durability::Now)
    }

    fn apply(&mut self, entries: Vec<Entry>) -> Result<(), Self::Error> {
        *self.applied_count += entries.len() as u64;
        if self.keep_applied {
            self.applied.extend(entries);
        }
        Ok(())
    }

    fn reads(&mut self, read_states: Vec<ReadState>, dropped_reads: Vec<u64>) {
        self.read_states.extend(read_states);
        self.dropped_reads.extend(dropped_reads);
    }
}

/// A cluster of nodes driven by hand.
pub struct Cluster {
    pub nodes: BTreeMap<NodeId, Node>,
    pub storage: BTreeMap<NodeId, MemStorage>,
    /// Every entry each node's state machine applied, in order.
    pub applied: BTreeMap<NodeId, Vec<Entry>>,
    /// Confirmed reads, per node.
    pub read_states: BTreeMap<NodeId, Vec<ReadState>>,
    pub dropped_reads: BTreeMap<NodeId, Vec<u64>>,
    /// Messages sent and not yet delivered, in send order.
    pub in_flight: VecDeque<Message>,
    /// One line per delivered message: `t=12 n1->n2 Append{...}`.
    pub trace: Vec<String>,
    /// Record the trace (off for benchmarks).
    pub tracing: bool,
    /// Keep applied entries in `applied` (off for benchmarks: only counted).
    pub keep_applied: bool,
    /// How many entries each node applied.
    pub applied_count: BTreeMap<NodeId, u64>,
    /// Logical time: the number of `tick_all` calls.
    pub time: u64,
    /// Nodes cut off from everyone: messages to or from them are dropped.
    pub isolated: BTreeSet<NodeId>,
    /// The size of the snapshots `compact` takes.
    pub snapshot_size: usize,
    /// The applied entries each snapshot stands for, by (index, term): what
    /// a node that installs the snapshot has applied.
    snapshot_states: BTreeMap<(LogIndex, Term), Vec<Entry>>,
    configs: BTreeMap<NodeId, Config>,
    /// The voters the cluster was created with: every node (re)starts from
    /// them and what it persisted, as a real node does.
    bootstrap: Membership,
}

impl Cluster {
    /// `n` voters with ids 1..=n and default configuration.
    pub fn new(n: u64) -> Cluster {
        Cluster::with_config(n, |_| {})
    }

    /// `n` voters, each configuration adjusted by `adjust`.
    pub fn with_config(n: u64, adjust: impl Fn(&mut Config)) -> Cluster {
        let ids: Vec<NodeId> = (1..=n).map(NodeId).collect();
        let mut cluster = Cluster {
            nodes: BTreeMap::new(),
            storage: BTreeMap::new(),
            applied: BTreeMap::new(),
            read_states: BTreeMap::new(),
            dropped_reads: BTreeMap::new(),
            in_flight: VecDeque::new(),
            trace: Vec::new(),
            tracing: true,
            keep_applied: true,
            applied_count: BTreeMap::new(),
            time: 0,
            isolated: BTreeSet::new(),
            snapshot_size: 10_000,
            snapshot_states: BTreeMap::new(),
            configs: BTreeMap::new(),
            bootstrap: Membership::new(ids.iter().copied()),
        };
        for &id in &ids {
            let mut config = Config::new(id);
            adjust(&mut config);
            cluster.configs.insert(id, config);
            cluster.storage.insert(id, MemStorage::default());
            cluster.start(id);
        }
        cluster
    }

    /// Starts `id` from what it persisted only, with the initial voters as
    /// bootstrap: any membership it knows must come from its snapshot and
    /// its log, so a configuration lost on restart shows in tests.
    fn start(&mut self, id: NodeId) {
        let bootstrap = self.bootstrap.clone();
        let disk = self.storage[&id].clone();
        let applied = match &disk.snapshot {
            Some((meta, _)) => self.snapshot_states[&(meta.index, meta.term)].clone(),
            None => Vec::new(),
        };
        let node = Node::new(
            self.configs[&id].clone(),
            InitialState {
                hard_state: disk.hard_state,
                snapshot_bytes: disk.snapshot.as_ref().map_or(0, |(_, d)| d.len() as u64),
                snapshot: disk.snapshot.map(|(m, _)| m),
                entries: disk.entries,
                bootstrap,
                damaged_up_to_term: disk.damaged_up_to_term,
            },
        )
        .expect("valid configuration");
        self.nodes.insert(id, node);
        self.applied.insert(id, applied);
    }

    /// Crashes `id` and starts it again from its storage. Its in-memory
    /// state machine starts empty and re-applies from the log.
    pub fn restart(&mut self, id: u64) {
        let id = NodeId(id);
        self.in_flight.retain(|m| m.to != id);
        self.start(id);
    }

    /// Crashes `id`, lets `damage` destroy part of what it had persisted
    /// (records it acknowledged), and starts it again in repair mode, bounded
    /// by the term it had before the damage: what a storage that detects the
    /// damage and still knows the term reports.
    pub fn restart_damaged(&mut self, id: u64, damage: impl FnOnce(&mut MemStorage)) {
        let node_id = NodeId(id);
        let disk = self.storage.get_mut(&node_id).expect("storage exists");
        let bound = disk
            .hard_state
            .term
            .max(disk.damaged_up_to_term.unwrap_or(Term::ZERO));
        damage(disk);
        disk.damaged_up_to_term = Some(bound);
        self.restart(id);
    }

    pub fn node(&self, id: u64) -> &Node {
        &self.nodes[&NodeId(id)]
    }

    /// Steps one input into one node.
    pub fn step(&mut self, id: u64, input: Input) -> Result<Accepted, StepError> {
        self.nodes
            .get_mut(&NodeId(id))
            .expect("node exists")
            .step(input)
    }

    pub fn propose(&mut self, id: u64, data: &[u8]) -> Result<Accepted, StepError> {
        self.step(
            id,
            Input::Propose {
                data: Bytes::copy_from_slice(data),
            },
        )
    }

    /// Sets the snapshot chunk size of every node (for tests of chunking):
    /// takes effect at each node's next restart, so call it first.
    pub fn with_chunk_bytes(&mut self, bytes: u64) {
        for config in self.configs.values_mut() {
            config.snapshot_chunk_bytes = bytes;
        }
        let ids: Vec<NodeId> = self.nodes.keys().copied().collect();
        for id in ids {
            self.start(id);
        }
    }

    /// Takes a snapshot of node `id` at its applied index and compacts its
    /// log, as a driver does every so many entries.
    pub fn compact(&mut self, id: u64) {
        let id = NodeId(id);
        let node = self.nodes.get_mut(&id).expect("node exists");
        let meta = node
            .snapshot_meta_at(node.applied_index())
            .expect("applied index is in the log");
        let data = snapshot_payload(meta.index, self.snapshot_size);
        let size_bytes = data.len() as u64;
        let applied = self.applied[&id].clone();
        self.snapshot_states
            .insert((meta.index, meta.term), applied);
        let disk = self.storage.get_mut(&id).expect("storage exists");
        let drop = (meta.index.0 - disk.snapshot_index().0) as usize;
        disk.entries.drain(..drop.min(disk.entries.len()));
        disk.snapshot = Some((meta.clone(), data));
        node.step(Input::SnapshotTaken { meta, size_bytes })
            .expect("snapshot at the applied index is accepted");
    }

    /// Drains `Ready` from every node that has one, acting on it as a
    /// driver must. Returns true if anything happened.
    pub fn drain_ready(&mut self) -> bool {
        let mut any = false;
        let ids: Vec<NodeId> = self.nodes.keys().copied().collect();
        for id in ids {
            while self.nodes[&id].has_ready() {
                any = true;
                self.handle_ready(id);
            }
        }
        any
    }

    /// Drains `Ready` from node `id` only (for scenarios that must hold
    /// back what another node would send). Returns true if it had any.
    pub fn drain_ready_of(&mut self, id: u64) -> bool {
        let id = NodeId(id);
        let mut any = false;
        while self.nodes[&id].has_ready() {
            any = true;
            self.handle_ready(id);
        }
        any
    }

    fn handle_ready(&mut self, id: NodeId) {
        let node = self.nodes.get_mut(&id).expect("node exists");
        let mut round = Round {
            disk: self.storage.get_mut(&id).expect("storage exists"),
            applied: self.applied.get_mut(&id).expect("applied exists"),
            applied_count: self.applied_count.entry(id).or_default(),
            keep_applied: self.keep_applied,
            snapshot_states: &self.snapshot_states,
            isolated: &self.isolated,
            in_flight: &mut self.in_flight,
            read_states: self.read_states.entry(id).or_default(),
            dropped_reads: self.dropped_reads.entry(id).or_default(),
        };
        match node.handle_ready(&mut round) {
            Ok(_) => {}
            Err(never) => match never {},
        }
    }

    /// Delivers the oldest message in flight. Returns false if none.
    pub fn deliver_one(&mut self) -> bool {
        let Some(m) = self.in_flight.pop_front() else {
            return false;
        };
        if self.isolated.contains(&m.from) || self.isolated.contains(&m.to) {
            return true;
        }
        if self.tracing {
            self.trace.push(format!("t={} {}", self.time, m.describe()));
        }
        let to = m.to;
        if let Some(node) = self.nodes.get_mut(&to) {
            node.step(Input::Message(m))
                .expect("message is for this node");
        }
        true
    }

    /// Drains readies and delivers messages until the cluster is quiet
    /// (bounded, so a livelock fails loudly instead of hanging).
    pub fn settle(&mut self) {
        for _ in 0..100_000 {
            let drained = self.drain_ready();
            let delivered = self.deliver_one();
            if !drained && !delivered {
                return;
            }
        }
        panic!("cluster did not settle within 100000 rounds");
    }

    /// One tick on every node, then settle.
    pub fn tick_all(&mut self) {
        self.time += 1;
        let ids: Vec<NodeId> = self.nodes.keys().copied().collect();
        for id in ids {
            self.nodes
                .get_mut(&id)
                .expect("node exists")
                .step(Input::Tick)
                .expect("tick never fails");
        }
        self.settle();
    }

    /// Ticks until a single leader is known to everyone reachable, at most
    /// `max_ticks` times. Returns the leader.
    pub fn elect(&mut self, max_ticks: u64) -> Option<NodeId> {
        for _ in 0..max_ticks {
            self.tick_all();
            if let Some(leader) = self.leader() {
                return Some(leader);
            }
        }
        None
    }

    /// Makes node `id` leader by campaigning it directly.
    pub fn campaign(&mut self, id: u64) {
        self.step(id, Input::Campaign).expect("campaign accepted");
        self.settle();
    }

    /// The leader of the highest term, if one exists among connected nodes.
    pub fn leader(&self) -> Option<NodeId> {
        self.nodes
            .values()
            .filter(|n| n.role() == Role::Leader && !self.isolated.contains(&n.id()))
            .max_by_key(|n| n.term())
            .map(|n| n.id())
    }

    pub fn isolate(&mut self, id: u64) {
        self.isolated.insert(NodeId(id));
    }

    pub fn heal(&mut self) {
        self.isolated.clear();
    }

    /// The indexes of the entries a node applied.
    pub fn applied_indexes(&self, id: u64) -> Vec<LogIndex> {
        self.applied[&NodeId(id)].iter().map(|e| e.index).collect()
    }

    /// The payloads of the normal entries a node applied.
    pub fn applied_data(&self, id: u64) -> Vec<Bytes> {
        self.applied[&NodeId(id)]
            .iter()
            .filter(|e| e.kind == crate::EntryKind::Normal)
            .map(|e| e.data.clone())
            .collect()
    }

    /// Takes the trace recorded so far.
    pub fn take_trace(&mut self) -> Vec<String> {
        std::mem::take(&mut self.trace)
    }
}
