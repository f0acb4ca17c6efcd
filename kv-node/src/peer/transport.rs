//! Peer transport: raft messages between nodes, in batches over HTTP.
//!
//! Outbound, each peer has its own bounded queue and sender task, so a slow
//! or dead peer never holds up the others. The task gathers whatever is
//! queued into one batch (postcard-encoded [`PeerBatch`]) and POSTs it to the
//! peer's `/raft/messages` over kept-alive connections, with a few batches
//! in flight at once. A full queue drops messages: Raft tolerates loss and
//! retransmits what matters. Connections leave from this node's own listen
//! IP, so that tests can cut links with firewall rules between addresses.
//! Over TLS the peer's certificate must chain to the cluster CA
//! (`tls.rs`); with a cluster token each batch carries, as a bearer token,
//! the credential derived for the receiving node (`auth.rs`), never the
//! token itself.
//!
//! Inbound, `inbound.rs` checks a received batch and puts batches back in
//! their sending order before any of it reaches the core.

use super::client::PeerClient;
use crate::auth::PeerSecret;
use crate::ids::{Member, Members};
use crate::metrics::{Metrics, PeerMetrics};
use crate::settings::LeaseTiming;
use raft_core::{Message, MessageBody, NodeId};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{Semaphore, mpsc};

/// Path of the peer endpoint.
pub const MESSAGES_PATH: &str = "/raft/messages";
/// Messages queued per peer before new ones are dropped.
const PEER_QUEUE: usize = 8 * 1024;
/// Batches in flight to one peer at once.
const INFLIGHT_BATCHES: usize = 4;
/// A batch stops growing before its estimated size passes this share of
/// the batch limit (`--max-peer-batch-bytes`, which every member shares):
/// the estimate leaves out postcard's few bytes of framing per field.
const BATCH_FILL_PERCENT: usize = 75;
const TARGET_BATCH_MESSAGES: usize = 4096;

/// What travels in one `POST /raft/messages`.
#[derive(Debug, Serialize, Deserialize)]
pub struct PeerBatch {
    pub from: NodeId,
    /// The sender's start time (ns since the epoch): a new epoch restarts
    /// the numbering of `seq`.
    pub epoch: u64,
    /// Numbers the batches of one sender to one peer, from 1, in the order
    /// they were built. Several batches are in flight at once over separate
    /// connections, so they may arrive out of order; the receiver puts them
    /// back in order (see `inbound.rs`).
    pub seq: u64,
    /// The sender's lease timing; the receiver refuses a batch whose timing
    /// differs from its own (see `LeaseTiming`).
    pub timing: LeaseTiming,
    pub messages: Vec<Message>,
}

/// A peer refused this node's batch because this node is not a member of
/// the configuration that peer has in force (`403 not_a_member`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NotAMemberReport {
    /// The peer's commit index when it refused: its configuration took
    /// effect at or below it. The driver believes the refusal only if its
    /// own commit index is lower (the peer knows a newer configuration);
    /// a peer that lags behind this node's own addition is ignored.
    pub commit_index: u64,
    pub peer: String,
}

/// The highest-reaching report so far, shared by the sender tasks.
type Reports = Arc<std::sync::Mutex<Option<NotAMemberReport>>>;

/// The driver's side of the transport: non-blocking, never waits.
#[derive(Clone)]
pub struct PeerSender {
    queues: BTreeMap<NodeId, (mpsc::Sender<Message>, Arc<Metrics>, String)>,
    /// What a new peer's sender task needs; `None` for a sender that can
    /// never reach anyone (tests).
    spawner: Option<Arc<Spawner>>,
}

/// Everything shared by the sender tasks, kept so that peers learnt at run
/// time (membership changes) get a task like the ones started with the node.
struct Spawner {
    from: NodeId,
    epoch: u64,
    timing: LeaseTiming,
    client: PeerClient,
    metrics: Arc<Metrics>,
    inflight: usize,
    /// Derives each peer's credential; `None` without a cluster token.
    secret: Option<PeerSecret>,
    /// Estimated bytes a batch may grow to (see [`BATCH_FILL_PERCENT`]).
    target_batch_bytes: usize,
    reports: Reports,
    /// The server's runtime: the driver thread, which adds peers, runs a
    /// runtime of its own that must not carry network tasks.
    runtime: tokio::runtime::Handle,
}

impl PeerSender {
    /// A sender with no peers that cannot learn any (tests).
    pub fn none() -> PeerSender {
        PeerSender {
            queues: BTreeMap::new(),
            spawner: None,
        }
    }

    /// Starts (or, for a known peer at a new URL, restarts) the sender task
    /// of `peer`. The old task, if any, ends once its queue is dropped.
    pub fn add(&mut self, peer: &Member) {
        let Some(spawner) = &self.spawner else {
            tracing::warn!(peer = %peer.name, "this node cannot reach new peers");
            return;
        };
        let (tx, rx) = mpsc::channel(PEER_QUEUE);
        self.queues
            .insert(peer.id, (tx, spawner.metrics.clone(), peer.name.clone()));
        let task = PeerTask {
            from: spawner.from,
            epoch: spawner.epoch,
            timing: spawner.timing,
            name: peer.name.clone(),
            url: format!("{}{MESSAGES_PATH}", peer.url),
            client: spawner.client.clone(),
            metrics: spawner.metrics.clone(),
            inflight: Arc::new(Semaphore::new(spawner.inflight)),
            authorization: spawner.secret.as_ref().and_then(|s| {
                // Marked sensitive so that no debug output shows it.
                let credential = s.credential_for(&peer.name);
                let mut value =
                    reqwest::header::HeaderValue::from_str(&format!("Bearer {credential}")).ok()?;
                value.set_sensitive(true);
                Some(value)
            }),
            target_batch_bytes: spawner.target_batch_bytes,
            reports: spawner.reports.clone(),
        };
        spawner.runtime.spawn(task.run(rx));
    }

    /// The highest commit index at which a peer said this node is not a
    /// member of its configuration, if any peer did.
    pub fn not_a_member_report(&self) -> Option<NotAMemberReport> {
        let spawner = self.spawner.as_ref()?;
        spawner
            .reports
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Queues `m` for its recipient; drops it if that queue is full.
    pub fn send(&self, m: Message) {
        match self.queues.get(&m.to) {
            Some((queue, metrics, name)) => {
                if queue.try_send(m).is_err()
                    && let Some(peer) = metrics.peers.get(name)
                {
                    peer.messages_dropped.inc();
                }
            }
            None => tracing::debug!(to = %m.to, "no route to node; message dropped"),
        }
    }
}

/// Starts one sender task per peer on the current runtime; peers added
/// later with [`PeerSender::add`] get theirs on the same runtime.
pub fn start(
    members: &Members,
    client: PeerClient,
    metrics: Arc<Metrics>,
    secret: Option<PeerSecret>,
    timing: LeaseTiming,
    max_batch_bytes: usize,
) -> PeerSender {
    let inflight = std::env::var("KV_NODE_PEER_INFLIGHT")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(INFLIGHT_BATCHES);
    let epoch = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(1, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
    let mut sender = PeerSender {
        queues: BTreeMap::new(),
        spawner: Some(Arc::new(Spawner {
            from: members.this.id,
            epoch,
            timing,
            client,
            metrics,
            inflight,
            secret,
            target_batch_bytes: max_batch_bytes / 100 * BATCH_FILL_PERCENT,
            reports: Reports::default(),
            runtime: tokio::runtime::Handle::current(),
        })),
    };
    for peer in members.peers.values() {
        sender.add(peer);
    }
    sender
}

struct PeerTask {
    from: NodeId,
    epoch: u64,
    timing: LeaseTiming,
    name: String,
    url: String,
    client: PeerClient,
    metrics: Arc<Metrics>,
    inflight: Arc<Semaphore>,
    /// `Bearer <credential for this peer>`, when peers authenticate with
    /// a cluster token.
    authorization: Option<reqwest::header::HeaderValue>,
    target_batch_bytes: usize,
    reports: Reports,
}

impl PeerTask {
    async fn run(self, mut rx: mpsc::Receiver<Message>) {
        let mut last_error_logged: Option<Instant> = None;
        let mut seq = 0;
        let this = Arc::new(self);
        // A message taken from the queue that did not fit the last batch.
        let mut carried: Option<Message> = None;
        loop {
            let first = match carried.take() {
                Some(m) => m,
                None => match rx.recv().await {
                    Some(m) => m,
                    None => return,
                },
            };
            // Wait for a free slot first, so that the batch takes in
            // everything that queued up meanwhile.
            let Ok(permit) = this.inflight.clone().acquire_owned().await else {
                return;
            };
            let messages;
            (messages, carried) = fill_batch(first, &mut rx, this.target_batch_bytes);
            let count = messages.len() as u64;
            seq += 1;
            let body = match postcard::to_allocvec(&PeerBatch {
                from: this.from,
                epoch: this.epoch,
                seq,
                timing: this.timing,
                messages,
            }) {
                Ok(body) => body,
                Err(e) => {
                    tracing::error!(peer = %this.name, error = %e, "cannot encode a batch");
                    continue;
                }
            };
            let timeout = Duration::from_secs(if body.len() > (1 << 20) { 60 } else { 2 });
            let task = this.clone();
            let log_error = last_error_logged.is_none_or(|t| t.elapsed() > Duration::from_secs(5));
            if log_error {
                last_error_logged = None;
            }
            tokio::spawn(async move {
                let _permit = permit;
                let result = task
                    .client
                    .request(
                        reqwest::Method::POST,
                        &task.url,
                        task.authorization.as_ref(),
                        "application/octet-stream",
                        body,
                        timeout,
                    )
                    .await
                    .map_err(|e| e.to_string())
                    .and_then(|(status, reply)| {
                        if status.is_success() {
                            Ok(())
                        } else {
                            if status == reqwest::StatusCode::FORBIDDEN {
                                task.note_not_a_member(&reply);
                            }
                            let reply = &reply[..reply.len().min(200)];
                            Err(format!("{status}: {}", String::from_utf8_lossy(reply)))
                        }
                    });
                let peer = task.peer_metrics();
                match result {
                    Ok(_) => {
                        if let Some(p) = peer {
                            p.batches_sent.inc();
                            p.messages_sent.inc_by(count);
                        }
                    }
                    Err(e) => {
                        if let Some(p) = peer {
                            p.send_errors.inc();
                        }
                        if log_error {
                            tracing::warn!(peer = %task.name, error = %e, "sending to peer failed");
                        } else {
                            tracing::debug!(peer = %task.name, error = %e, "sending to peer failed");
                        }
                    }
                }
            });
            if log_error {
                last_error_logged = Some(Instant::now());
            }
        }
    }

    /// Records a `403 not_a_member` refusal for the driver (see
    /// [`NotAMemberReport`]); other 403s (a wrong credential) are only
    /// logged as send errors.
    fn note_not_a_member(&self, reply: &[u8]) {
        #[derive(Deserialize)]
        struct Reply {
            error: Refusal,
        }
        #[derive(Deserialize)]
        struct Refusal {
            code: String,
            commit_index: Option<u64>,
        }
        let Ok(Reply { error }) = serde_json::from_slice::<Reply>(reply) else {
            return;
        };
        let (true, Some(commit_index)) = (error.code == "not_a_member", error.commit_index) else {
            return;
        };
        let mut report = self.reports.lock().unwrap_or_else(|e| e.into_inner());
        if report
            .as_ref()
            .is_none_or(|r| r.commit_index < commit_index)
        {
            *report = Some(NotAMemberReport {
                commit_index,
                peer: self.name.clone(),
            });
        }
    }

    fn peer_metrics(&self) -> Option<&PeerMetrics> {
        self.metrics.peers.get(&self.name)
    }
}

/// One batch: `first`, then whatever is queued while the estimated size
/// stays within `target_bytes`. The first message always goes (one entry
/// or one snapshot chunk fits the limit: `cli.rs` checks it); a message
/// that does not fit is returned, to start the next batch. So a batch
/// passes `target_bytes` only if its one message does.
fn fill_batch(
    first: Message,
    rx: &mut mpsc::Receiver<Message>,
    target_bytes: usize,
) -> (Vec<Message>, Option<Message>) {
    let mut bytes = message_bytes(&first);
    let mut messages = vec![first];
    while messages.len() < TARGET_BATCH_MESSAGES {
        let Ok(m) = rx.try_recv() else { break };
        let size = message_bytes(&m);
        if bytes + size > target_bytes {
            return (messages, Some(m));
        }
        bytes += size;
        messages.push(m);
    }
    (messages, None)
}

/// A rough size, for batch limits: at least postcard's encoding of the
/// message (varints take at most 10 bytes; entries count 24 each).
fn message_bytes(m: &Message) -> usize {
    64 + match &m.body {
        MessageBody::AppendEntries { entries, .. } => entries.iter().map(|e| e.size_bytes()).sum(),
        MessageBody::InstallSnapshot { data, .. } => data.len(),
        MessageBody::Propose { entries } => entries.iter().map(|e| e.data.len() + 16).sum(),
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use raft_core::{Entry, EntryKind, LogIndex, Term};

    fn append(entry_bytes: usize) -> Message {
        Message {
            from: NodeId(1),
            to: NodeId(2),
            term: Term(1),
            body: MessageBody::AppendEntries {
                prev_log_index: LogIndex(0),
                prev_log_term: Term(0),
                entries: vec![Entry {
                    index: LogIndex(1),
                    term: Term(1),
                    kind: EntryKind::Normal,
                    data: vec![7u8; entry_bytes].into(),
                }],
                leader_commit: LogIndex(0),
            },
        }
    }

    #[tokio::test]
    async fn batches_stay_under_the_limit_and_carry_the_rest_over() {
        let limit = 4 << 20;
        let target = limit / 100 * BATCH_FILL_PERCENT;
        let (tx, mut rx) = mpsc::channel(64);
        // Twenty 1 MiB messages queued at once (entries, or snapshot chunks).
        for _ in 0..20 {
            tx.try_send(append(1 << 20)).unwrap();
        }
        let mut first = rx.try_recv().ok();
        let mut batches = 0;
        while let Some(m) = first.take() {
            let (messages, carried) = fill_batch(m, &mut rx, target);
            let body = postcard::to_allocvec(&PeerBatch {
                from: NodeId(1),
                epoch: 1,
                seq: 1,
                timing: LeaseTiming::default(),
                messages,
            })
            .unwrap();
            assert!(body.len() <= limit, "batch of {} bytes", body.len());
            batches += 1;
            first = carried.or_else(|| rx.try_recv().ok());
        }
        assert!(batches >= 7, "20 MiB in {batches} batches of at most 3 MiB");
    }
}
