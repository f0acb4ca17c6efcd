//! The driver: one thread owns the [`Replica`] (no lock around the core),
//! steps inputs into it and hands each `Ready` to `Replica::process_ready`.
//!
//! HTTP handlers and the peer transport talk to it only through
//! [`DriverHandle`]: a bounded channel of requests, each with a oneshot
//! reply. The loop drains everything queued before it handles a `Ready`.
//! The loop runs on a thread of its own with a single-threaded tokio
//! runtime for its timer and channels.
//!
//! The WAL is written and fsynced by the disk's persist stage, not here
//! (issue 12): a round's writes are queued to it and raft-core told
//! `Durability::Later`; the stage acknowledges the newest round made
//! durable on its own channel (`persisted`), and the driver steps it
//! (`Replica::persisted`). Meanwhile the loop goes on stepping messages,
//! proposals and ticks, and the rounds they produce queue behind the fsync
//! in flight and share the next one (group commit). raft-core holds back
//! what must wait for durability (votes, a follower's acknowledgements)
//! and applies nothing not durable here. A storage error reported by the
//! stage stops the node, as one returned by `process_ready` does.
//!
//! Nothing that grows with the data runs here: a snapshot is captured as an
//! O(1) clone of the state machine and written by the storage's writer
//! thread, whose completion arrives on its own channel (`snapshots`); a
//! scan walks at most its byte budget and copies reference counts only.

mod handle;
mod lease;
mod membership;
mod spin;
mod transfer;

pub(crate) use handle::Request;
pub use handle::{DriverError, DriverHandle, NodeStatus, ReadAnswer, ReadQuery, is_ready};
pub use lease::{LeaseAnswer, LeaseQuery, LeaseSummary};

use crate::directory::Directory;
use crate::disk_space::DiskSpace;
use crate::metrics::Metrics;
use crate::peer::transport::PeerSender;
use crate::settings::ReadPolicy;
use handle::{Reply, stopped};
use kv_replica::command::OpResult;
use kv_replica::replica::{Durable, Output, Replica, ReplicaError};
use kv_replica::state_machine::SCAN_BUDGET_BYTES;
use kv_replica::waiters::Waiters;
use raft_core::{Input, LogIndex, MessageBody};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot, watch};

/// Requests queued for the driver before new ones are refused with 503.
const REQUEST_QUEUE: usize = 16 * 1024;
/// The most requests handled between two `Ready` rounds.
const MAX_DRAIN: usize = 8 * 1024;
/// How often waiters whose HTTP request gave up are forgotten.
const SWEEP_INTERVAL: Duration = Duration::from_secs(1);
/// One turn of the driver's loop longer than this is logged as a stall
/// (`kv_driver_stalls_total`): a few heartbeat intervals, below the
/// 150 ms election timeout.
const STALL_WARNING: Duration = Duration::from_millis(100);

/// The committed entries one `Ready` hands out to apply, in bytes (the
/// core's default is 16 MiB). Applying 16 MiB of 500-key `mput`s into a
/// 10M-key map took the driver 100-600 ms in one go, past the election
/// timeout (leader changes while loading 10M keys, `bench/scale.sh`); 1 MiB
/// still took 20-28 ms of CPU, which a machine short of CPU stretched to
/// 100-165 ms turns (stop 28). 256 KiB keeps one `Ready` to a few ms.
pub const COMMITTED_BYTES_PER_READY: usize = 256 << 10;
/// How long one turn of the loop goes on handling `Ready`s while more
/// follow: the rest waits until ticks, acknowledgements and requests
/// queued meanwhile are taken in, so a backlog of committed entries
/// never holds heartbeats back for longer than about this.
const READY_BUDGET: Duration = Duration::from_millis(10);

/// What woke the driver's loop: handled after the `select!`, so that one
/// place times the turn it starts (`Driver::note_stall`).
enum Woken<W, E> {
    Shutdown,
    Tick,
    Sweep,
    Persisted(Option<Result<u64, E>>),
    SnapshotWritten(Option<W>),
    Request(Option<Request>),
    /// The last turn left `Ready`s for this one (`READY_BUDGET`).
    MoreReady,
    /// A poll (`--spin-wait-us`) found no input.
    Nothing,
}

impl<W, E> Woken<W, E> {
    fn name(&self) -> &'static str {
        match self {
            Woken::Shutdown => "shutdown",
            Woken::Tick => "tick",
            Woken::Sweep => "sweep",
            Woken::Persisted(_) => "persisted",
            Woken::SnapshotWritten(_) => "snapshot written",
            Woken::Request(_) => "request",
            Woken::MoreReady => "more ready",
            Woken::Nothing => "nothing",
        }
    }

    /// Whether the turn this starts may be followed by a poll: one woken
    /// by an input that a lone write's round trip waits for (a client
    /// request, a peer batch, the persist stage's acknowledgement).
    fn may_poll_after(&self) -> bool {
        matches!(self, Woken::Request(Some(_)) | Woken::Persisted(Some(_)))
    }
}

/// The CPU time the calling thread has used (a syscall, well under a
/// microsecond; read once per turn of the driver's loop).
fn thread_cpu_time() -> Duration {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ThreadCPUTime);
    Duration::new(
        u64::try_from(t.tv_sec).unwrap_or(0),
        u32::try_from(t.tv_nsec).unwrap_or(0),
    )
}

/// The requests one turn of the loop handled, for its stall warning.
#[derive(Default)]
struct RequestsTimed {
    count: usize,
    total: Duration,
    slowest: Duration,
    slowest_kind: &'static str,
}

/// Why the driver stopped the node.
#[derive(Debug, thiserror::Error)]
#[error("replica failed: {0}")]
pub struct DriverFailed(pub String);

struct PendingRead {
    query: ReadQuery,
    reply: Reply<ReadAnswer>,
}

/// The loop's state: the replica and everyone waiting on it.
struct Driver<D: Durable> {
    replica: Replica<D>,
    peers: PeerSender,
    metrics: Arc<Metrics>,
    /// Writes proposed here until applied locally, and reads until their
    /// read index is applied (kv-replica's waiters, which the simulator
    /// runs too).
    waiters: Waiters<Reply<OpResult>, PendingRead>,
    /// Membership changes and address-book entries proposed here.
    membership: membership::MembershipState,
    /// Numbers reads for the core's `ReadIndex`.
    next_read_context: u64,
    /// Leadership transfers asked for here, answered when they end.
    transfers: Vec<transfer::TransferWaiter>,
    /// The free-space threshold for new proposals.
    disk_space: DiskSpace,
    /// Rate limit of the warning about refused peer messages: when the last
    /// one was logged, and how many were refused since.
    refusal_warned_at: Option<std::time::Instant>,
    refusals_unlogged: u64,
    /// `POST /admin/snapshot` requests waiting for the snapshot in flight.
    snapshot_waiters: Vec<Reply<Option<u64>>>,
    /// Writes that add data are refused while the live keys and values
    /// exceed this many bytes (`--quota-bytes`; 0: no quota).
    quota_bytes: u64,
    /// Where each round's applied changes go for watchers (never waits).
    watch_feed: Option<crate::watch::FeedSender>,
    /// When a message from each peer was last stepped here, for the log
    /// line of a role change: it tells a silent peer from a driver that
    /// fell behind its inbox.
    heard_from: std::collections::BTreeMap<raft_core::NodeId, Instant>,
    /// Requests queued for this thread when the turn began (the same log
    /// line).
    inbox_len: usize,
}

/// At most one warning about refused peer messages per this long.
const REFUSAL_WARNING_INTERVAL: Duration = Duration::from_secs(10);

/// The driver thread's runtime, built before the thread so that the peer
/// sender tasks can be started on it (`transport::start`). They run between
/// the driver's turns, on its thread: a message the driver hands them goes
/// out on the socket without waking another thread, which on the path of a
/// write (the leader's appends, each follower's acknowledgement) saves a
/// thread wake-up at each end.
pub fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .enable_time()
        .build()
}

/// Starts the driver thread on `runtime` (from [`runtime`]). It runs until `shutdown` turns true or the
/// replica fails; the returned receiver gets which, once everything the
/// driver owned is dropped.
/// `directory` is the address book the driver keeps up to date; `joining`
/// says the node was started with `--join` (it is not "removed" before it
/// was ever a member).
#[allow(clippy::too_many_arguments)]
pub fn spawn<D>(
    runtime: tokio::runtime::Runtime,
    replica: Replica<D>,
    snapshots: mpsc::UnboundedReceiver<D::SnapshotWritten>,
    persisted: mpsc::UnboundedReceiver<Result<u64, D::Error>>,
    quota_bytes: u64,
    peers: PeerSender,
    directory: Directory,
    joining: bool,
    metrics: Arc<Metrics>,
    tick: Duration,
    request_timeout: Duration,
    spin_wait: Duration,
    shutdown: watch::Receiver<bool>,
    disk_space: DiskSpace,
    watch_feed: Option<crate::watch::FeedSender>,
) -> std::io::Result<(DriverHandle, oneshot::Receiver<Result<(), DriverFailed>>)>
where
    D: Durable + Send + 'static,
    D::SnapshotWritten: Send,
{
    let (tx, rx) = mpsc::channel(REQUEST_QUEUE);
    let node = replica.node.id();
    let handle = DriverHandle::new(
        tx,
        node,
        request_timeout,
        directory.clone(),
        runtime.handle().clone(),
    );
    let leader = replica.node.leader();
    // Published before the first message can arrive (see `Directory::admits`).
    directory.set_configuration(replica.node.membership().members());
    let membership = membership::MembershipState::new(directory, joining);
    metrics.quota_bytes.set(quota_bytes);
    let driver = Driver {
        replica,
        peers,
        metrics,
        waiters: Waiters::new(node, leader),
        membership,
        next_read_context: 1,
        transfers: Vec::new(),
        disk_space,
        refusal_warned_at: None,
        refusals_unlogged: 0,
        heard_from: Default::default(),
        inbox_len: 0,
        snapshot_waiters: Vec::new(),
        quota_bytes,
        watch_feed,
    };
    let (done_tx, done_rx) = oneshot::channel();
    // Log lines of the core and the driver carry the node's name, which
    // matters when several nodes share one terminal.
    let span = tracing::Span::current();
    std::thread::Builder::new()
        .name("raft-driver".into())
        .spawn(move || {
            let _span = span.entered();
            // `run` consumes the driver: the storage is flushed and its
            // lock released before the result is reported.
            let result =
                runtime.block_on(driver.run(rx, snapshots, persisted, tick, spin_wait, shutdown));
            // The peer tasks go with the runtime, before the result is told.
            drop(runtime);
            let _ = done_tx.send(result);
        })?;
    Ok((handle, done_rx))
}

impl<D: Durable> Driver<D> {
    async fn run(
        mut self,
        mut rx: mpsc::Receiver<Request>,
        mut snapshots: mpsc::UnboundedReceiver<D::SnapshotWritten>,
        mut persisted: mpsc::UnboundedReceiver<Result<u64, D::Error>>,
        tick: Duration,
        spin_wait: Duration,
        mut shutdown: watch::Receiver<bool>,
    ) -> Result<(), DriverFailed> {
        let mut ticker = tokio::time::interval(tick);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut sweeper = tokio::time::interval(SWEEP_INTERVAL);
        self.update_metrics();
        self.sync_addresses();
        let mut more_ready = false;
        let mut spin = spin::SpinWait::new(spin_wait);
        let result = loop {
            let woken = tokio::select! {
                biased;
                _ = shutdown.changed() => Woken::Shutdown,
                _ = ticker.tick() => Woken::Tick,
                _ = sweeper.tick() => Woken::Sweep,
                done = persisted.recv() => Woken::Persisted(done),
                written = snapshots.recv() => Woken::SnapshotWritten(written),
                request = rx.recv() => Woken::Request(request),
                () = std::future::ready(()), if more_ready => Woken::MoreReady,
                // Lets the peer streams' tasks and the sockets be polled,
                // then comes back (`spin.rs`).
                () = tokio::task::yield_now(), if spin.polling() => Woken::Nothing,
            };
            if let Woken::Nothing = woken {
                if let Some(ended) = spin.poll_again() {
                    self.metrics
                        .driver_poll_seconds
                        .inc_by(ended.lasted.as_secs_f64());
                    if ended.ran_out {
                        self.metrics.driver_poll_ran_out.inc();
                    }
                }
                continue;
            }
            if let Some(lasted) = spin.input_arrived() {
                self.metrics
                    .driver_poll_seconds
                    .inc_by(lasted.as_secs_f64());
                self.metrics.driver_poll_hits.inc();
            }
            let may_poll = woken.may_poll_after();
            self.metrics.driver_turns.inc();
            self.inbox_len = rx.len();
            let busy_since = Instant::now();
            let cpu_since = thread_cpu_time();
            let woken_by = woken.name();
            let mut requests = RequestsTimed::default();
            match woken {
                Woken::Shutdown => {
                    if *shutdown.borrow() {
                        break self.write_deferred_hard_state();
                    }
                }
                Woken::Tick => {
                    if !self.silenced_by_removal() {
                        self.step_logged(Input::Tick);
                    }
                    if let Err(e) = self.write_deferred_hard_state() {
                        break Err(e);
                    }
                }
                Woken::Sweep => self.sweep(),
                Woken::Persisted(done) => {
                    if let Err(e) = self.persisted(done, &mut persisted) {
                        break Err(e);
                    }
                }
                Woken::SnapshotWritten(Some(written)) => {
                    if let Err(e) = self.snapshot_written(written) {
                        break Err(e);
                    }
                }
                Woken::SnapshotWritten(None) => {
                    break Err(DriverFailed("the snapshot writer is gone".into()));
                }
                Woken::Request(Some(request)) => self.handle_timed(request, &mut requests),
                Woken::Request(None) => break Ok(()),
                Woken::MoreReady | Woken::Nothing => {}
            }
            // Take in everything already queued, then handle one `Ready`:
            // its writes go to the persist stage as one round.
            for _ in 0..MAX_DRAIN {
                match rx.try_recv() {
                    Ok(request) => self.handle_timed(request, &mut requests),
                    Err(_) => break,
                }
            }
            let ready_since = Instant::now();
            match self.process_ready() {
                Ok(more) => more_ready = more,
                Err(e) => break Err(e),
            }
            self.note_stall(woken_by, busy_since, cpu_since, ready_since, &requests);
            // Light: one input and nothing queued behind it. Under load the
            // next input is queued already, or worth waiting for to batch.
            spin.after_turn(may_poll && requests.count <= 1 && self.inbox_len == 0 && !more_ready);
            // The peer streams' tasks share this thread: they send what
            // this turn made and read what arrived before the next turn.
            // Without the yield the loop runs on while its channels have
            // work (tokio's budget allows 128 receives), and under a heavy
            // load the peers heard nothing for an election timeout.
            tokio::task::yield_now().await;
        };
        self.fail_everyone();
        result
    }

    /// Handles one request, timing it for the stall warning.
    fn handle_timed(&mut self, request: Request, timed: &mut RequestsTimed) {
        let kind = request.name();
        let started = Instant::now();
        if let Request::Peer(messages) = &request
            && let Some(m) = messages.first()
        {
            // A batch comes from one sender (`check_batch`).
            self.heard_from.insert(m.from, started);
        }
        self.handle(request);
        let took = started.elapsed();
        timed.count += 1;
        timed.total += took;
        if took >= timed.slowest {
            timed.slowest = took;
            timed.slowest_kind = kind;
        }
    }

    /// Hands the entries raft-core's last compaction removed, if any, to
    /// a background thread to free.
    fn free_compacted_entries(&mut self) {
        let compacted = self.replica.node.take_compacted_entries();
        if !compacted.is_empty() {
            crate::background::free_later(compacted);
        }
    }

    /// Warns when one turn of the loop kept the thread that ticks and
    /// sends heartbeats busy for longer than an election timeout's worth
    /// of heartbeats could bear (etcd warns likewise of slow applies).
    /// `cpu_ms` is the CPU time the thread got in the turn: far below `ms`,
    /// the thread was kept off the CPU (other threads, a starved machine).
    /// `ready_ms` is the part spent handling `Ready`s (stepping outputs,
    /// applying, handing rounds to the persist stage), the rest handling
    /// what woke the loop and the requests queued.
    fn note_stall(
        &self,
        woken: &'static str,
        busy_since: Instant,
        cpu_since: Duration,
        ready_since: Instant,
        requests: &RequestsTimed,
    ) {
        let busy = busy_since.elapsed();
        if busy >= STALL_WARNING {
            self.metrics.driver_stalls.inc();
            tracing::warn!(
                woken_by = woken,
                ms = busy.as_secs_f64() * 1e3,
                cpu_ms = thread_cpu_time().saturating_sub(cpu_since).as_secs_f64() * 1e3,
                ready_ms = ready_since.elapsed().as_secs_f64() * 1e3,
                requests = requests.count,
                requests_ms = requests.total.as_secs_f64() * 1e3,
                slowest_request = requests.slowest_kind,
                slowest_request_ms = requests.slowest.as_secs_f64() * 1e3,
                "the driver thread was busy for one turn of its loop longer than {} ms",
                STALL_WARNING.as_millis()
            );
        }
    }

    /// The persist stage made rounds durable (`done`, and whatever else
    /// it acknowledged meanwhile): the newest is stepped, which covers the
    /// ones before it. A storage error, or the stage gone, stops the node.
    fn persisted(
        &mut self,
        done: Option<Result<u64, D::Error>>,
        more: &mut mpsc::UnboundedReceiver<Result<u64, D::Error>>,
    ) -> Result<(), DriverFailed> {
        let mut newest = None;
        let mut next = done;
        loop {
            match next {
                Some(Ok(ready)) => newest = newest.max(Some(ready)),
                Some(Err(e)) => return Err(DriverFailed(format!("storage failed: {e}"))),
                None => return Err(DriverFailed("the persist stage is gone".into())),
            }
            match more.try_recv() {
                Ok(done) => next = Some(done),
                Err(_) => break,
            }
        }
        if let Some(ready) = newest {
            self.replica.persisted(ready);
        }
        Ok(())
    }

    /// A commit index the replica held back from the persist stage goes
    /// to it now (on a tick, and before the driver stops).
    fn write_deferred_hard_state(&mut self) -> Result<(), DriverFailed> {
        self.replica
            .write_deferred_hard_state()
            .map_err(|e| DriverFailed(e.to_string()))
    }

    fn handle(&mut self, request: Request) {
        match request {
            Request::Propose {
                request,
                data,
                reply,
                ..
            } if self.membership.is_removed(&self.replica.node) => {
                let _ = request;
                let _ = data;
                let _ = reply.send(Err(membership::removed_error()));
            }
            Request::Propose {
                adds_data: true,
                reply,
                ..
            } if self.quota_bytes > 0 && self.replica.state.live_bytes() > self.quota_bytes => {
                self.metrics.quota_refused.inc();
                let _ = reply.send(Err(DriverError::QuotaExceeded(format!(
                    "the store holds {} bytes of keys and values, over the quota of {} bytes (--quota-bytes); delete data to write again",
                    self.replica.state.live_bytes(),
                    self.quota_bytes
                ))));
            }
            Request::Propose { reply, .. } if self.disk_space.refusal().is_some() => {
                self.metrics.proposals_refused.inc();
                let message = self.disk_space.refusal().unwrap_or_default();
                let _ = reply.send(Err(DriverError::DiskFull(message)));
            }
            Request::Propose {
                request,
                data,
                reply,
                ..
            } => match self.replica.step(Input::Propose { data }) {
                Ok(accepted) => {
                    self.metrics.proposals.inc();
                    self.waiters.write_proposed(request, &accepted, reply);
                }
                Err(e) => {
                    self.metrics.proposals_refused.inc();
                    let _ = reply.send(Err(DriverError::Unavailable(format!(
                        "write not proposed: {e}"
                    ))));
                }
            },
            Request::Read {
                policy,
                query,
                reply,
            } => self.start_read(policy, query, reply),
            Request::Peer(messages) => {
                self.metrics
                    .peer_messages_received
                    .inc_by(messages.len() as u64);
                for m in messages {
                    if let MessageBody::AppendEntriesResponse { success: false, .. } = m.body {
                        self.metrics.append_rejections.inc();
                    }
                    self.step_peer_message(m);
                }
            }
            Request::Status(reply) => {
                let _ = reply.send(self.status());
            }
            Request::TransferLeader { to, reply } => {
                match self.replica.step(Input::TransferLeadership { to }) {
                    Ok(_) => {
                        // Only one transfer is pending at a time in the core.
                        transfer::supersede(&mut self.transfers, to);
                        self.transfers.push(transfer::TransferWaiter { to, reply });
                    }
                    Err(e) => {
                        let _ = reply.send(Err(DriverError::Unavailable(format!(
                            "transfer refused: {e}"
                        ))));
                    }
                }
            }
            Request::Snapshot(reply) => self.snapshot_requested(reply),
            Request::ProposeCluster { data, reply } => self.propose_cluster(data, reply),
            Request::ConfChange { change, reply } => self.propose_conf_change(change, reply),
        }
    }

    /// `POST /admin/snapshot`: starts a snapshot (unless one is in flight)
    /// and answers once it is durable; with nothing new to snapshot, at once.
    fn snapshot_requested(&mut self, reply: Reply<Option<u64>>) {
        if self.replica.snapshot_in_flight().is_none() {
            match self.replica.start_snapshot() {
                Ok(Some(_)) => {}
                Ok(None) if self.replica.snapshot_in_flight().is_none() => {
                    let _ = reply.send(Ok(None));
                    return;
                }
                Ok(None) => {}
                Err(e) => {
                    // A storage failure stops the node; the loop sees it on
                    // the next `process_ready` (the storage stays failed).
                    tracing::error!(error = %e, "snapshot failed");
                    let _ = reply.send(Err(DriverError::Unavailable(format!(
                        "snapshot failed: {e}"
                    ))));
                    return;
                }
            }
        }
        self.snapshot_waiters.push(reply);
    }

    /// The writer thread finished a snapshot: the replica makes it the
    /// stored one and compacts (or retries later, or stops the node).
    fn snapshot_written(&mut self, written: D::SnapshotWritten) -> Result<(), DriverFailed> {
        let result = self.replica.snapshot_written(written);
        // Before the answers: `/status` shows the new snapshot's size then.
        self.update_metrics();
        self.free_compacted_entries();
        let answer = match &result {
            Ok(Some(meta)) => Ok(Some(meta.index.0)),
            Ok(None) => Err(DriverError::Unavailable(
                "the snapshot was not taken (see the log); retry".into(),
            )),
            Err(e) => Err(DriverError::Unavailable(format!("snapshot failed: {e}"))),
        };
        for reply in self.snapshot_waiters.drain(..) {
            let _ = reply.send(answer.clone());
        }
        result.map_err(|e| DriverFailed(e.to_string()))?;
        // The loop handles the `Ready`s next, within its budget.
        Ok(())
    }

    fn start_read(&mut self, policy: ReadPolicy, query: ReadQuery, reply: Reply<ReadAnswer>) {
        // Lease requests always take a ReadIndex round (`lease.rs`).
        let policy = match &query {
            ReadQuery::Lease(lease) => match self.lease_arrived(lease) {
                Some(answer) => {
                    let _ = reply.send(Ok(ReadAnswer::Lease(answer)));
                    return;
                }
                None => ReadPolicy::Linearizable,
            },
            _ => policy,
        };
        let lease = match policy {
            ReadPolicy::Stale => {
                self.metrics.reads.inc();
                let _ = reply.send(Ok(self.answer(&query)));
                return;
            }
            ReadPolicy::Lease => true,
            ReadPolicy::Linearizable => false,
        };
        let context = self.next_read_context;
        self.next_read_context += 1;
        match self.replica.step(Input::ReadIndex { context, lease }) {
            Ok(_) => {
                self.waiters
                    .read_requested(context, PendingRead { query, reply });
            }
            Err(e) => {
                self.metrics.reads_dropped.inc();
                let _ = reply.send(Err(DriverError::Unavailable(format!(
                    "read not served: {e}"
                ))));
            }
        }
    }

    fn answer(&mut self, query: &ReadQuery) -> ReadAnswer {
        let state = &self.replica.state;
        match query {
            ReadQuery::Lease(lease) => ReadAnswer::Lease(self.answer_lease(lease)),
            ReadQuery::Get { key } => {
                ReadAnswer::Get(state.get(key).map(|(v, rev)| (v.to_string(), rev)))
            }
            ReadQuery::Scan { prefix, limit } => {
                let (entries, more) = state.scan(prefix, *limit, SCAN_BUDGET_BYTES);
                ReadAnswer::Scan { entries, more }
            }
            // O(1): the maps are persistent (see kv-replica's state machine).
            ReadQuery::Backup => ReadAnswer::Backup(Box::new(state.clone())),
        }
    }

    /// Steps a peer message. One the core refuses (malformed, forged, or
    /// naming indexes that cannot exist) is dropped, counted by kind in
    /// /metrics, and logged at most once per `REFUSAL_WARNING_INTERVAL`.
    fn step_peer_message(&mut self, m: raft_core::Message) {
        let (from, kind) = (m.from, m.body.name());
        let Err(e) = self.replica.step(Input::Message(m)) else {
            return;
        };
        let Some(label) = e.peer_message_kind() else {
            tracing::debug!(error = %e, "peer message refused by the core");
            return;
        };
        self.metrics.peer_message_refused(label);
        self.refusals_unlogged += 1;
        let now = Instant::now();
        if self
            .refusal_warned_at
            .is_none_or(|at| now.duration_since(at) >= REFUSAL_WARNING_INTERVAL)
        {
            tracing::warn!(
                %from,
                message = kind,
                error = %e,
                refused_since_last_warning = self.refusals_unlogged,
                "refused a peer message"
            );
            self.refusal_warned_at = Some(now);
            self.refusals_unlogged = 0;
        }
    }

    fn step_logged(&mut self, input: Input) {
        if let Err(e) = self.replica.step(input) {
            tracing::debug!(error = %e, "input refused by the core");
        }
    }

    /// Handles `Ready`s until none is left or the turn's budget is spent;
    /// true if more are left for the next turn.
    fn process_ready(&mut self) -> Result<bool, DriverFailed> {
        let started = Instant::now();
        let mut more = false;
        loop {
            if started.elapsed() >= READY_BUDGET {
                more = self.replica.node.has_ready();
                break;
            }
            let peers = &self.peers;
            let output = self
                .replica
                .process_ready(|m| peers.send(m))
                .map_err(|e: ReplicaError<D::Error>| DriverFailed(e.to_string()))?;
            let Some(mut output) = output else { break };
            if let Some(feed) = &mut self.watch_feed {
                feed.feed(&mut output, self.replica.state.applied_index());
            }
            self.metrics.ready_rounds.inc();
            // The log and the state machine an installed snapshot replaced.
            self.free_compacted_entries();
            if let Some(replaced) = output.replaced_state.take() {
                crate::background::free_later(replaced);
            }
            // Before the answers go out: a client that reads /metrics after
            // its write was answered sees the write counted.
            self.update_metrics();
            self.handle_output(output);
        }
        self.serve_confirmed_reads();
        self.sync_addresses();
        self.settle_membership();
        transfer::settle(&self.replica.node, &mut self.transfers);
        self.update_metrics();
        Ok(more)
    }

    fn handle_output(&mut self, output: Output) {
        if let Some(soft) = output.soft_state {
            let leader = soft.leader.map(|id| self.membership.directory.name_of(id));
            let now = Instant::now();
            let heard_ms_ago: Vec<String> = self
                .heard_from
                .iter()
                .map(|(id, at)| {
                    let name = self.membership.directory.name_of(*id);
                    format!("{name}={}", now.duration_since(*at).as_millis())
                })
                .collect();
            tracing::info!(
                role = ?soft.role,
                leader = leader.as_deref().unwrap_or("none"),
                leader_id = ?soft.leader,
                term = %soft.term,
                heard_ms_ago = %heard_ms_ago.join(","),
                inbox = self.inbox_len,
                "raft state changed"
            );
        }
        let settled = self.waiters.on_output(&output);
        for (reply, result) in settled.applied {
            let result = result.ok_or_else(|| {
                DriverError::OutcomeUnknown("the applied entry carried no result".into())
            });
            let _ = reply.send(result);
        }
        // F1: a write sent to a leader that lost leadership is answered now
        // (504, outcome unknown) rather than at the request timeout.
        for reply in settled.leader_changed {
            let _ = reply.send(Err(DriverError::OutcomeUnknown(
                "the leader changed before the write was applied; outcome unknown".into(),
            )));
        }
        for pending in settled.dropped_reads {
            self.metrics.reads_dropped.inc();
            let _ = pending.reply.send(Err(DriverError::Unavailable(
                "leadership could not be confirmed for this read; retry".into(),
            )));
        }
    }

    /// Serves every confirmed read whose read index is applied.
    fn serve_confirmed_reads(&mut self) {
        let applied = LogIndex(self.replica.state.applied_index());
        for pending in self.waiters.ready_reads(applied) {
            self.metrics.reads.inc();
            let _ = pending.reply.send(Ok(self.answer(&pending.query)));
        }
    }

    /// Forgets waiters whose HTTP request already gave up (504).
    fn sweep(&mut self) {
        self.disk_space.refresh();
        self.waiters
            .retain(|reply| !reply.is_closed(), |read| !read.reply.is_closed());
        self.membership.sweep();
    }

    /// On shutdown or failure: writes in flight have an unknown outcome,
    /// reads were not served.
    fn fail_everyone(&mut self) {
        self.membership.fail_all();
        for w in self.transfers.drain(..) {
            let _ = w.reply.send(Err(stopped()));
        }
        for reply in self.snapshot_waiters.drain(..) {
            let _ = reply.send(Err(stopped()));
        }
        let (writes, reads) = self.waiters.drain();
        for reply in writes {
            let _ = reply.send(Err(DriverError::OutcomeUnknown(
                "the node stopped before the write was applied".into(),
            )));
        }
        for pending in reads {
            let _ = pending.reply.send(Err(stopped()));
        }
    }

    fn status(&self) -> NodeStatus {
        let node = &self.replica.node;
        let membership = node.membership();
        let members = membership.members();
        let (voters, learners) = members.into_iter().partition(|id| membership.is_voter(*id));
        NodeStatus {
            id: node.id(),
            role: node.role(),
            term: node.term().0,
            leader: node.leader(),
            commit_index: node.commit_index().0,
            last_applied: self.replica.state.applied_index(),
            last_log_index: node.last_index().0,
            snapshot_index: self.replica.last_snapshot_index().0,
            voters,
            learners,
            keys: self.replica.state.len(),
            live_bytes: self.replica.state.live_bytes(),
            quota_bytes: self.quota_bytes,
            match_index: node
                .status()
                .match_index
                .into_iter()
                .map(|(id, index)| (id, index.0))
                .collect(),
            removed: self.membership.is_removed(node),
            damaged_up_to_term: node.status().damaged_up_to_term.map(|t| t.0),
        }
    }

    fn update_metrics(&self) {
        let node = &self.replica.node;
        let m = &self.metrics;
        m.set_role(node.role());
        m.term.set(node.term().0);
        m.commit_index.set(node.commit_index().0);
        m.applied_index.set(self.replica.state.applied_index());
        m.last_log_index.set(node.last_index().0);
        m.snapshot_index.set(self.replica.last_snapshot_index().0);
        // The replica knows its chain's size; the disk opens no file for it.
        m.snapshot_bytes.set(self.replica.snapshot_chain_bytes());
        m.leader_known.set(u64::from(node.leader().is_some()));
        m.live_bytes.set(self.replica.state.live_bytes());
    }
}
