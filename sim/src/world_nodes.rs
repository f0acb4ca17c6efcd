//! The nodes' life cycle: configuration, start and restart from the synced
//! disk, crash, and the driving of each step through the real
//! ready-handling loop of `kv_replica::replica::Replica`.

use crate::disk::{DiskImage, SimDisk, StageStep};
use crate::faults::{PERSIST_STEPS_BY_DISK, SNAPSHOT_WRITE_STEPS_MAX, STEPS_PER_TICK};
use crate::panics::node_code;
use crate::world::{Event, NodeState, World};
use kv_replica::membership_waiters::MembershipWaiters;
use kv_replica::replica::{Output, Replica};
use kv_replica::state_machine::{Applied, DEFAULT_DEDUP_LIMIT};
use kv_replica::waiters::Waiters;
use raft_core::{Config, Input, NodeId};

impl World {
    /// The property a panic in node code stands for.
    fn panic_property(&self, text: &str) -> &'static str {
        // The state machine refuses an entry it already applied; once a
        // hostile peer sent forged data, any panic is just a panic.
        if text.contains("applied out of order") && self.hostile_sent == 0 {
            "no entry applied twice"
        } else {
            "node code does not panic"
        }
    }

    /// The configuration of node `id` in its current incarnation.
    fn config(&self, id: NodeId) -> Config {
        let mut config = Config::new(id);
        config.max_message_bytes = self.plan.max_message_bytes;
        config.max_inflight_messages = self.plan.max_inflight_messages;
        config.snapshot_chunk_bytes = self.plan.snapshot_chunk_bytes;
        let incarnation = u64::from(self.node(id).incarnation);
        config.seed = self.opts.seed.wrapping_mul(0x9e37_79b9_7f4a_7c15)
            ^ (id.0 << 32)
            ^ incarnation.wrapping_mul(0xff51_afd7_ed55_8ccd);
        if let Some(hook) = &self.opts.config_hook {
            hook(&mut config);
        }
        config
    }

    /// Whether this incarnation of node `id` persists through a stage that
    /// makes rounds durable later (as kv-node does), or at once: drawn from
    /// the seed, three in four, so that runs mix both.
    fn persist_stage(&self, id: NodeId) -> bool {
        if !self.opts.persist_stage {
            return false;
        }
        let incarnation = u64::from(self.node(id).incarnation);
        let mixed = (self.opts.seed ^ 0x5e75_7a6e)
            .wrapping_mul(0x9e37_79b9_7f4a_7c15)
            .wrapping_add(id.0.wrapping_mul(0xff51_afd7_ed55_8ccd))
            .wrapping_add(incarnation.wrapping_mul(0xc4ce_b9fe_1a85_ec53));
        (mixed ^ (mixed >> 29)).wrapping_mul(0x94d0_49bb_1331_11eb) >> 62 != 0
    }

    /// The most steps an fsync of node `id`'s persist stage takes: its
    /// disk's speed, times the slow-down of an active `SlowDisks` fault.
    fn fsync_steps_max(&self, id: NodeId) -> u64 {
        self.disk_speed_max(id) * self.disk_slowdown()
    }

    /// How many times slower every disk is now: the largest factor of the
    /// active `SlowDisks` faults, 1 without one.
    fn disk_slowdown(&self) -> u64 {
        self.slow_disks.values().copied().max().unwrap_or(1)
    }

    /// The most steps an fsync of node `id`'s disk takes at its own speed
    /// ([`PERSIST_STEPS_BY_DISK`]), drawn from the seed.
    fn disk_speed_max(&self, id: NodeId) -> u64 {
        let mixed = (self.opts.seed ^ 0xd15c_5eed)
            .wrapping_mul(0x9e37_79b9_7f4a_7c15)
            .wrapping_add(id.0.wrapping_mul(0xff51_afd7_ed55_8ccd));
        let pick = (mixed ^ (mixed >> 31)).wrapping_mul(0x94d0_49bb_1331_11eb) >> 62;
        PERSIST_STEPS_BY_DISK[pick as usize]
    }

    /// Starts (or restarts) a node from what its disk synced.
    pub(crate) fn start_node(&mut self, id: NodeId) {
        let NodeState::Down(image) = &self.node(id).state else {
            return;
        };
        let image = image.clone();
        let membership = self.bootstrap_for(id);
        let config = self.config(id);
        let survive_ppm = self.plan.block_disk.map_or(0, |b| b.sync_survive_ppm);
        let storage_bugs = self.opts.storage_bugs;
        let disk = match node_code(|| SimDisk::open(image.clone(), storage_bugs, survive_ppm)) {
            Ok(Ok(opened)) => opened,
            // The disk is still full: it starts once there is room again.
            Ok(Err(e)) if e.is_disk_full() => {
                self.trace
                    .note(self.now, || format!("{id} cannot start: {e}"));
                return self.schedule_restart(id, 20 * STEPS_PER_TICK);
            }
            Ok(Err(e)) => return self.fail("restart recovers", format!("{id}: {e}")),
            Err(text) => return self.fail("restart recovers", format!("{id}: {text}")),
        };
        let (mut disk, recovered) = disk;
        disk.persist_stage = self.persist_stage(id);
        let warnings = std::mem::take(&mut disk.recovery_warnings);
        for warning in &warnings {
            self.trace
                .note(self.now, || format!("{id} recovery: {warning}"));
        }
        // Within the disk model only rot damages what was acknowledged:
        // torn, lost and reordered writes and failed fsyncs touch only the
        // batch being written, which recovery must cut as a torn tail.
        let damage_found = warnings
            .iter()
            .find(|w| w.starts_with("acknowledged records are damaged"));
        if let Some(damage) = damage_found
            && !image.rotted
        {
            return self.fail(
                "only rot damages acknowledged records",
                format!("{id}: {damage}"),
            );
        }
        if let Some(bound) = recovered.damaged_up_to_term {
            self.trace.note(self.now, || {
                format!("{id} lost acknowledged records: repair mode up to term {bound}")
            });
        }
        self.snapshot_writes.chains_restored += u64::from(!recovered.snapshot_deltas.is_empty());
        let opened =
            node_code(|| Replica::open(config, recovered, membership, disk, DEFAULT_DEDUP_LIMIT));
        let mut replica = match opened {
            Ok(Ok(replica)) => replica,
            Ok(Err(e)) => return self.fail("restart recovers", format!("{id}: {e}")),
            Err(text) => return self.fail("restart recovers", format!("{id}: {text}")),
        };
        replica.snapshot_policy = self.plan.snapshot_policy();
        if let Some(hook) = &self.opts.snapshot_policy_hook {
            hook(&mut replica.snapshot_policy);
        }
        if let Err(v) = self.checker.on_start(self.now, &replica) {
            self.record(v);
        }
        let node = self.node_mut(id);
        node.waiters = Waiters::new(id, replica.node.leader());
        node.changes = MembershipWaiters::default();
        node.logged_pending.clear();
        node.logged_count = 0;
        node.state = NodeState::Up(Box::new(replica));
        node.paused = false;
        node.backlog.clear();
        if self.now > 0 {
            self.trace.note(self.now, || format!("{id} restarts"));
        }
        self.open_hub(id);
        self.drive(id);
    }

    /// Crashes a node: unsynced writes are lost, its requests fail.
    pub(crate) fn crash_node(&mut self, id: NodeId, why: &str) {
        let node = self.node_mut(id);
        let state = std::mem::replace(&mut node.state, NodeState::Down(DiskImage::default()));
        let NodeState::Up(replica) = state else {
            node.state = state;
            return;
        };
        let in_flight = replica.snapshot_in_flight();
        let queued = replica.disk.persist_queued();
        let in_fsync = replica.disk.stage_syncing();
        let awaiting_repair = replica.node.status().damaged_up_to_term;
        let mut replica = replica;
        if in_fsync {
            // The crash lands inside the stage's fsync: the batch is in the
            // page cache, not synced. On the simple disk, whether it
            // outlives the process is drawn (kill -9 or power loss); on a
            // block disk the page cache's fate is drawn below.
            let kept = replica.disk.block_fs().is_none() && self.rng.coin();
            replica.disk.crash_in_stage_sync(kept);
            self.trace.note(self.now, || {
                let kept = if kept { ", its batch kept" } else { "" };
                format!("{id} dies inside its persist stage's fsync{kept}")
            });
        }
        let mut image = replica.disk.crash();
        if image.block.is_some() {
            // Only a hint for the faults (`may_damage`): the REPAIR marker
            // on the block disk is what the restart reads.
            image.damaged_up_to_term = awaiting_repair;
        }
        if let (Some(fs), Some(block)) = (&image.block, self.plan.block_disk) {
            // The operator's restart after an fsync error is a reboot: the
            // page cache goes.
            // A process killed inside its fsync (`kill_in_next_sync`) is a
            // kill -9: the machine, and its page cache, stay up.
            let killed_in_fsync = why.contains(crate::block_fs::KILLED_IN_FSYNC);
            let power_loss = why.contains("Input/output error")
                || why.contains("power loss")
                || (!killed_in_fsync && self.rng.range(0, 99) < block.power_loss_percent);
            fs.crash(power_loss, block.odds);
            if power_loss {
                self.trace.note(self.now, || format!("{id} loses power"));
            }
        }
        let node = self.node_mut(id);
        node.state = NodeState::Down(image);
        node.incarnation += 1;
        node.logged_pending.clear();
        node.logged_count = 0;
        node.paused = false;
        node.backlog.clear();
        self.snapshot_writes.lost_to_crash += u64::from(in_flight.is_some());
        self.persist_syncs.lost_to_crash += u64::from(queued);
        self.persist_syncs.in_fsync += u64::from(in_fsync);
        self.trace.note(self.now, || match in_flight {
            // Captured but not durable: lost, the log it covers stays.
            Some(index) => format!("{id} crashes ({why}) with its snapshot at {index} unwritten"),
            None => format!("{id} crashes ({why})"),
        });
        self.node_lost_requests(id);
        self.close_hub(id);
    }

    /// Steps one input into a live node and handles what comes out.
    pub(crate) fn step_node(&mut self, id: NodeId, input: Input) -> Option<raft_core::Accepted> {
        let accepted = self.step_undriven(id, input);
        if self.violation.is_none() {
            self.drive(id);
        }
        accepted
    }

    /// Steps several inputs into a live node before its `Ready` is handled,
    /// as a driver that batches what arrived while it was busy does.
    pub(crate) fn step_inputs(&mut self, id: NodeId, inputs: Vec<Input>) {
        for input in inputs {
            self.step_undriven(id, input);
        }
        if self.violation.is_none() {
            self.drive(id);
        }
    }

    /// Steps one input without handling the `Ready` it produces.
    pub(crate) fn step_undriven(
        &mut self,
        id: NodeId,
        input: Input,
    ) -> Option<raft_core::Accepted> {
        if self.violation.is_some() {
            return None;
        }
        let replica = self.node_mut(id).replica_mut()?;
        let from_client = matches!(
            input,
            Input::Propose { .. } | Input::ReadIndex { .. } | Input::ProposeConfChange(_)
        );
        let conf_change = matches!(input, Input::ProposeConfChange(_));
        let stepped = node_code(|| replica.step(input));
        if conf_change && matches!(stepped, Ok(Ok(_))) {
            self.config_changed = true;
        }
        match stepped {
            Ok(Err(e)) if from_client => {
                self.trace.note(self.now, || format!("{id} refuses: {e}"));
                None
            }
            Ok(result) => result.ok(),
            Err(text) => {
                self.fail(self.panic_property(&text), format!("{id}: {text}"));
                None
            }
        }
    }

    /// Hands a node's deferred commit-only hard state to its disk, as
    /// kv-node's driver does on each tick; the tick's `drive` then starts
    /// the persist stage on it. A failed write stops the node.
    pub(crate) fn write_deferred_hard_state(&mut self, id: NodeId) {
        if self.violation.is_some() {
            return;
        }
        let Some(replica) = self.node_mut(id).replica_mut() else {
            return;
        };
        match node_code(|| {
            replica
                .write_deferred_hard_state()
                .map_err(|e| e.to_string())
        }) {
            Ok(Ok(())) => {}
            Err(text) => self.fail(self.panic_property(&text), format!("{id}: {text}")),
            Ok(Err(storage)) => self.stop_on_storage_error(id, &storage),
        }
    }

    /// A storage step failed: the node stops, as kv-node's driver stops
    /// it, and restarts after its down time.
    fn stop_on_storage_error(&mut self, id: NodeId, why: &str) {
        let down = self.node(id).sync_crash_down_ticks.max(1);
        self.crash_node(id, why);
        self.schedule_restart(id, down * STEPS_PER_TICK);
    }

    /// Drains every `Ready` of a node through the real ready-handling loop,
    /// sends what it sent, checks the invariants and answers clients.
    pub(crate) fn drive(&mut self, id: NodeId) {
        let mut outbox = std::mem::take(&mut self.outbox);
        let mut outputs: Vec<Output> = Vec::new();
        let Some(replica) = self.node_mut(id).replica_mut() else {
            return;
        };
        let result = node_code(|| {
            loop {
                match replica.process_ready(|m| outbox.push(m)) {
                    Ok(Some(out)) => outputs.push(out),
                    Ok(None) => return Ok(()),
                    Err(e) => return Err(e.to_string()),
                }
            }
        });
        // Event-triggered faults see the step before its messages leave.
        if matches!(result, Ok(Ok(()))) && !self.armed.is_empty() {
            self.on_node_stepped(id);
        }
        // Whatever was sent left before any failure.
        for m in outbox.drain(..) {
            self.send(m);
        }
        self.outbox = outbox;
        match result {
            Err(text) => {
                return self.fail(self.panic_property(&text), format!("{id}: {text}"));
            }
            Ok(Err(storage)) => return self.stop_on_storage_error(id, &storage),
            Ok(Ok(())) => {}
        }
        self.feed_watches(id, &mut outputs);
        let applied: Vec<Applied> = outputs
            .iter()
            .flat_map(|o| o.applied.iter().cloned())
            .collect();
        let node = &mut self.nodes[id.0 as usize - 1];
        let NodeState::Up(replica) = &mut node.state else {
            return;
        };
        let mut appended = std::mem::take(&mut replica.disk.appended);
        if replica.disk.persist_stage {
            // Logged once durable (`persisted`), as a failed fsync's
            // entries never count.
            let logged = crate::checks::Checker::with_prev_terms(replica, &appended);
            node.logged_pending.extend(logged);
            appended.clear();
        }
        let snapshot_started = std::mem::take(&mut replica.disk.snapshot_started);
        let persist_started = std::mem::take(&mut replica.disk.persist_started);
        if let Err(v) =
            self.checker
                .after_step(self.now, replica, &appended, &applied, &self.writers)
        {
            self.record(v);
            return;
        }
        for out in &outputs {
            if let Some(ss) = out.soft_state {
                self.trace.note(self.now, || {
                    format!(
                        "{id} is {:?} of term {} (leader {:?})",
                        ss.role, ss.term, ss.leader
                    )
                });
            }
        }
        let incarnation = node.incarnation;
        if snapshot_started {
            self.schedule_snapshot_written(id, incarnation);
        }
        if persist_started {
            self.schedule_persist_taken(id, incarnation);
        }
        self.answer_clients(id, &applied, outputs);
        self.observe_lease_expiries(id);
        self.settle_changes(id);
    }

    /// The persist stage takes the rounds handed to it at the next step
    /// (kv-node: the WAL thread wakes on its channel, or goes on to the
    /// next batch once an fsync ends).
    fn schedule_persist_taken(&mut self, id: NodeId, incarnation: u32) {
        self.schedule_in(
            1,
            Event::PersistTaken {
                node: id,
                incarnation,
            },
        );
    }

    /// The persist stage's fsync ends a few steps from now.
    fn schedule_persisted(&mut self, id: NodeId, incarnation: u32) {
        let steps = self.rng.range(1, self.fsync_steps_max(id));
        self.schedule_in(
            steps,
            Event::Persisted {
                node: id,
                incarnation,
            },
        );
    }

    /// The persist stage of a node takes the rounds handed to it and writes
    /// them; its fsync then runs until [`World::persisted`], unless no round
    /// asked for one (acknowledged at once). A crash since they were handed
    /// lost them (another incarnation); a paused node's stage waits too; a
    /// failed write stops the node.
    pub(crate) fn persist_taken(&mut self, id: NodeId, incarnation: u32) {
        let node = self.node(id);
        if node.incarnation != incarnation || node.replica().is_none() {
            return;
        }
        if node.paused {
            self.schedule_persist_taken(id, incarnation);
            return;
        }
        let Some(replica) = self.node_mut(id).replica_mut() else {
            return;
        };
        let result = node_code(|| {
            let step = replica.disk.take_queued()?;
            if let StageStep::Durable(ready) = step {
                replica.persisted(ready);
            }
            Ok::<_, crate::disk::SimDiskError>(step)
        });
        match result {
            Err(text) => self.fail(self.panic_property(&text), format!("{id}: {text}")),
            Ok(Err(storage)) => self.stop_on_storage_error(id, &storage.to_string()),
            Ok(Ok(StageStep::Idle)) => {}
            Ok(Ok(StageStep::Syncing)) => self.schedule_persisted(id, incarnation),
            Ok(Ok(StageStep::Durable(_))) => {
                self.persist_syncs.durable += 1;
                self.acknowledged(id);
            }
        }
    }

    /// The persist stage's fsync of a node ends: the rounds it took are
    /// durable (kv-node: the WAL thread's acknowledgement reaches the
    /// driver): the replica is told, and goes on; rounds handed meanwhile
    /// are taken next. A crash since they were handed lost them (another
    /// incarnation); a paused node's stage waits too; a failed sync stops
    /// the node as a failed write does.
    pub(crate) fn persisted(&mut self, id: NodeId, incarnation: u32) {
        let node = self.node(id);
        if node.incarnation != incarnation || node.replica().is_none() {
            return;
        }
        if node.paused {
            self.schedule_persisted(id, incarnation);
            return;
        }
        let Some(replica) = self.node_mut(id).replica_mut() else {
            return;
        };
        let result = node_code(|| {
            let done = replica.disk.complete_persist()?;
            if let Some(ready) = done {
                replica.persisted(ready);
            }
            Ok::<_, crate::disk::SimDiskError>((done, replica.disk.persist_waiting()))
        });
        match result {
            Err(text) => self.fail(self.panic_property(&text), format!("{id}: {text}")),
            Ok(Err(storage)) => self.stop_on_storage_error(id, &storage.to_string()),
            Ok(Ok((done, waiting))) => {
                self.persist_syncs.durable += u64::from(done.is_some());
                if waiting {
                    self.schedule_persist_taken(id, incarnation);
                }
                self.acknowledged(id);
            }
        }
    }

    /// Rounds of node `id` were acknowledged: the entries they appended are
    /// logged for the checker, and the node goes on.
    fn acknowledged(&mut self, id: NodeId) {
        let node = self.node_mut(id);
        let durable = node.replica().map_or(0, |r| r.disk.entries_durable);
        let count = durable.saturating_sub(node.logged_count) as usize;
        let count = count.min(node.logged_pending.len());
        node.logged_count += count as u64;
        let logged: Vec<_> = node.logged_pending.drain(..count).collect();
        if let Err(v) = self.checker.logged(self.now, id, &logged) {
            return self.record(v);
        }
        self.drive(id);
    }

    /// The background write of a snapshot ends a few steps from now.
    fn schedule_snapshot_written(&mut self, id: NodeId, incarnation: u32) {
        let steps = self
            .rng
            .range(1, SNAPSHOT_WRITE_STEPS_MAX * self.disk_slowdown());
        self.schedule_in(
            steps,
            Event::SnapshotWritten {
                node: id,
                incarnation,
            },
        );
    }

    /// The background write of a node's snapshot ends (kv-node: the writer
    /// thread's completion reaches the driver). A crash since it started
    /// lost it (another incarnation); a paused node's writer waits too.
    pub(crate) fn snapshot_written(&mut self, id: NodeId, incarnation: u32) {
        let node = self.node(id);
        if node.incarnation != incarnation || node.replica().is_none() {
            return;
        }
        if node.paused {
            self.schedule_snapshot_written(id, incarnation);
            return;
        }
        let Some(replica) = self.node_mut(id).replica_mut() else {
            return;
        };
        let Some(written) = replica.disk.write_snapshot() else {
            return;
        };
        let index = replica.snapshot_in_flight();
        let is_delta = written.is_delta();
        let result = node_code(|| replica.snapshot_written(written));
        match result {
            Err(text) => self.fail(self.panic_property(&text), format!("{id}: {text}")),
            Ok(Err(storage)) => {
                self.stop_on_storage_error(id, &format!("snapshot write failed: {storage}"));
            }
            Ok(Ok(taken)) => {
                self.snapshot_writes.durable += u64::from(taken.is_some());
                self.snapshot_writes.deltas_durable += u64::from(taken.is_some() && is_delta);
                self.trace.note(self.now, || match (taken, index) {
                    (Some(meta), _) => format!("{id} snapshot at {} durable", meta.index),
                    (None, index) => format!("{id} snapshot at {index:?} overtaken or refused"),
                });
                self.drive(id);
            }
        }
    }
}
