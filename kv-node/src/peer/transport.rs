//! Peer transport: raft messages between nodes, in batches.
//!
//! Outbound, each peer has its own bounded queue and sender task, so a slow
//! or dead peer never holds up the others. The task gathers whatever is
//! queued into one batch (postcard-encoded [`PeerBatch`]) and writes it on
//! the one long-lived message stream it keeps open to the peer
//! (`stream.rs`: an HTTP connection upgraded at `/raft/stream`), so that
//! batches arrive in order and none waits for a reply. A peer that serves
//! no stream (an older version) gets batches as `POST /raft/messages`
//! requests instead, a few in flight at once. A full queue drops messages,
//! and so does an unreachable peer: Raft tolerates loss and retransmits
//! what matters. Connections leave from this node's own listen IP, so that
//! tests can cut links with firewall rules between addresses. Over TLS the
//! peer's certificate must chain to the cluster CA (`tls.rs`); with a
//! cluster token the stream request (or each batch) carries, as a bearer
//! token, the credential derived for the receiving node (`auth.rs`), never
//! the token itself.
//!
//! Inbound, `inbound.rs` checks a received batch and puts `POST` batches
//! back in their sending order before any of it reaches the core.

use super::client::{PeerClient, Upgrade, UpgradedIo};
use super::stream::{self, StreamReply};
use crate::auth::PeerSecret;
use crate::ids::{Member, Members};
use crate::metrics::{Metrics, PeerMetrics};
use crate::settings::LeaseTiming;
use raft_core::{Message, MessageBody, NodeId};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::AsyncWriteExt;
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
/// A stream must be open (the peer answered `101`) within this long.
const STREAM_OPEN_TIMEOUT: Duration = Duration::from_secs(2);
/// The first wait before opening a stream again after a failure; it
/// doubles up to [`MAX_RECONNECT_BACKOFF`].
const MIN_RECONNECT_BACKOFF: Duration = Duration::from_millis(20);
const MAX_RECONNECT_BACKOFF: Duration = Duration::from_millis(500);
/// A stream that lasted this long resets the backoff.
const STABLE_STREAM: Duration = Duration::from_secs(1);
/// How long a sender stays with batches after a peer served no stream.
const POST_FALLBACK: Duration = Duration::from_secs(60);

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
    /// The driver thread's runtime (`driver::runtime`): the tasks run
    /// between the driver's turns, so a message leaves without a thread
    /// hand-off.
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
            stream_url: format!("{}{}", peer.url, stream::STREAM_PATH),
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
            force_post: forced_post(),
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

/// Starts one sender task per peer on `runtime` (the driver's); peers
/// added later with [`PeerSender::add`] get theirs on the same runtime.
pub fn start(
    runtime: tokio::runtime::Handle,
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
            runtime,
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
    stream_url: String,
    client: PeerClient,
    metrics: Arc<Metrics>,
    inflight: Arc<Semaphore>,
    /// `Bearer <credential for this peer>`, when peers authenticate with
    /// a cluster token.
    authorization: Option<reqwest::header::HeaderValue>,
    target_batch_bytes: usize,
    reports: Reports,
    /// `KV_NODE_PEER_TRANSPORT=post`, read once when the task starts.
    force_post: bool,
}

/// Why a stream session ended.
enum SessionEnd {
    /// The queue closed: the peer was removed or re-added; the task ends.
    QueueClosed,
    /// The connection failed or went silent; `carried` is a message taken
    /// from the queue that was not sent yet.
    Broken { carried: Option<Message> },
}

/// Stops a task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl PeerTask {
    /// Sends what is queued for the peer over one stream (`stream.rs`),
    /// opening a new one whenever it breaks; with a peer that does not
    /// serve streams (an older version), or with
    /// `KV_NODE_PEER_TRANSPORT=post`, in batches over `POST /raft/messages`.
    async fn run(self, mut rx: mpsc::Receiver<Message>) {
        let this = Arc::new(self);
        let mut post_until: Option<Instant> = None;
        let mut backoff = MIN_RECONNECT_BACKOFF;
        let mut seq = 0;
        let mut carried: Option<Message> = None;
        let mut last_error_logged: Option<Instant> = None;
        loop {
            let first = match carried.take() {
                Some(m) => m,
                None => match rx.recv().await {
                    Some(m) => m,
                    None => return,
                },
            };
            if this.force_post || post_until.is_some_and(|t| t.elapsed() < POST_FALLBACK) {
                match this.post_batches(first, &mut rx, &mut seq).await {
                    Some(m) => carried = Some(m),
                    None => return,
                }
                continue;
            }
            post_until = None;
            let opened = this
                .client
                .upgrade(
                    &this.stream_url,
                    this.authorization.as_ref(),
                    stream::PROTOCOL,
                    STREAM_OPEN_TIMEOUT,
                )
                .await;
            let failure = match opened {
                Ok(Upgrade::Switched(io)) => {
                    if let Some(p) = this.peer_metrics() {
                        p.streams_opened.inc();
                    }
                    let opened_at = Instant::now();
                    match this.stream(io, first, &mut rx, &mut seq).await {
                        SessionEnd::QueueClosed => return,
                        SessionEnd::Broken { carried: rest } => {
                            carried = rest;
                            // A stream that keeps breaking at once (a
                            // peer refusing every batch) is not reopened
                            // in a tight loop.
                            if opened_at.elapsed() < STABLE_STREAM {
                                tokio::time::sleep(backoff).await;
                                backoff = (backoff * 2).min(MAX_RECONNECT_BACKOFF);
                            } else {
                                backoff = MIN_RECONNECT_BACKOFF;
                            }
                            continue;
                        }
                    }
                }
                Ok(Upgrade::Refused(status, _))
                    if status == reqwest::StatusCode::NOT_FOUND
                        || status == reqwest::StatusCode::METHOD_NOT_ALLOWED =>
                {
                    tracing::info!(peer = %this.name, "the peer serves no message stream; sending batches");
                    post_until = Some(Instant::now());
                    carried = Some(first);
                    continue;
                }
                Ok(Upgrade::Refused(status, reply)) => {
                    if status == reqwest::StatusCode::FORBIDDEN {
                        this.note_not_a_member(&reply);
                    }
                    let reply = &reply[..reply.len().min(200)];
                    format!("{status}: {}", String::from_utf8_lossy(reply))
                }
                Err(e) => e.to_string(),
            };
            // The peer is unreachable or refuses: what queued up meanwhile
            // is stale (Raft sends again what still matters), so it goes,
            // and the next attempt waits a little longer.
            let mut dropped = 1;
            while rx.try_recv().is_ok() {
                dropped += 1;
            }
            if let Some(p) = this.peer_metrics() {
                p.send_errors.inc();
                p.messages_dropped.inc_by(dropped);
            }
            if last_error_logged.is_none_or(|t| t.elapsed() > Duration::from_secs(5)) {
                tracing::warn!(peer = %this.name, error = %failure, "opening a message stream to the peer failed");
                last_error_logged = Some(Instant::now());
            } else {
                tracing::debug!(peer = %this.name, error = %failure, "opening a message stream to the peer failed");
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(MAX_RECONNECT_BACKOFF);
        }
    }

    /// One stream session: writes batches of what is queued, in order,
    /// until the queue closes, a write fails, or the receiver goes silent
    /// or refuses a batch.
    async fn stream(
        &self,
        io: Box<dyn UpgradedIo>,
        first: Message,
        rx: &mut mpsc::Receiver<Message>,
        seq: &mut u64,
    ) -> SessionEnd {
        let (mut reader, mut writer) = tokio::io::split(io);
        let (ended_tx, mut ended) = tokio::sync::oneshot::channel::<String>();
        let reports = self.reports.clone();
        let name = self.name.clone();
        let _reader = AbortOnDrop(tokio::spawn(async move {
            let why = loop {
                match tokio::time::timeout(stream::SILENCE_LIMIT, stream::read_reply(&mut reader))
                    .await
                {
                    Ok(Ok(Some(StreamReply::Alive))) => {}
                    Ok(Ok(Some(StreamReply::Refused {
                        code,
                        message,
                        commit_index,
                    }))) => {
                        if let ("not_a_member", Some(commit_index)) = (code.as_str(), commit_index)
                        {
                            note_not_a_member(&reports, &name, commit_index);
                        }
                        break format!("the peer refused a batch: {code}: {message}");
                    }
                    Ok(Ok(None)) => break "the peer closed the stream".to_string(),
                    Ok(Err(e)) => break e.to_string(),
                    Err(_) => {
                        break format!(
                            "nothing heard from the peer for {:?}",
                            stream::SILENCE_LIMIT
                        );
                    }
                }
            };
            let _ = ended_tx.send(why);
        }));
        let mut pending = Some(first);
        loop {
            let m = match pending.take() {
                Some(m) => m,
                None => tokio::select! {
                    m = rx.recv() => match m {
                        Some(m) => m,
                        None => return SessionEnd::QueueClosed,
                    },
                    why = &mut ended => {
                        self.stream_broke(why.unwrap_or_default());
                        return SessionEnd::Broken { carried: None };
                    }
                },
            };
            let (messages, rest) = fill_batch(m, rx, self.target_batch_bytes);
            pending = rest;
            let count = messages.len() as u64;
            *seq += 1;
            let frame = match stream::encode_batch_frame(&self.batch(*seq, messages)) {
                Ok(frame) => frame,
                Err(e) => {
                    tracing::error!(peer = %self.name, error = %e, "cannot encode a batch");
                    continue;
                }
            };
            let write = async {
                writer.write_all(&frame).await?;
                writer.flush().await
            };
            tokio::select! {
                written = write => match written {
                    Ok(()) => {
                        if let Some(p) = self.peer_metrics() {
                            p.batches_sent.inc();
                            p.messages_sent.inc_by(count);
                        }
                    }
                    Err(e) => {
                        self.stream_broke(e.to_string());
                        return SessionEnd::Broken { carried: pending };
                    }
                },
                why = &mut ended => {
                    self.stream_broke(why.unwrap_or_default());
                    return SessionEnd::Broken { carried: pending };
                }
            }
        }
    }

    fn stream_broke(&self, why: String) {
        if let Some(p) = self.peer_metrics() {
            p.send_errors.inc();
        }
        tracing::debug!(peer = %self.name, error = %why, "message stream to the peer ended");
    }

    fn batch(&self, seq: u64, messages: Vec<Message>) -> PeerBatch {
        PeerBatch {
            from: self.from,
            epoch: self.epoch,
            seq,
            timing: self.timing,
            messages,
        }
    }

    /// Sends batches over `POST /raft/messages`, a few in flight at once,
    /// until [`POST_FALLBACK`] has passed; returns the message taken from
    /// the queue that is still to send, or `None` once the queue closed.
    async fn post_batches(
        self: &Arc<Self>,
        first: Message,
        rx: &mut mpsc::Receiver<Message>,
        seq: &mut u64,
    ) -> Option<Message> {
        let started = Instant::now();
        let mut last_error_logged: Option<Instant> = None;
        let mut carried = Some(first);
        loop {
            let first = match carried.take() {
                Some(m) => m,
                None => rx.recv().await?,
            };
            if started.elapsed() >= POST_FALLBACK && !self.force_post {
                return Some(first);
            }
            // Wait for a free slot first, so that the batch takes in
            // everything that queued up meanwhile.
            let Ok(permit) = self.inflight.clone().acquire_owned().await else {
                return None;
            };
            let messages;
            (messages, carried) = fill_batch(first, rx, self.target_batch_bytes);
            let count = messages.len() as u64;
            *seq += 1;
            let body = match postcard::to_allocvec(&self.batch(*seq, messages)) {
                Ok(body) => body,
                Err(e) => {
                    tracing::error!(peer = %self.name, error = %e, "cannot encode a batch");
                    continue;
                }
            };
            let timeout = Duration::from_secs(if body.len() > (1 << 20) { 60 } else { 2 });
            let task = self.clone();
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
        if let ("not_a_member", Some(commit_index)) = (error.code.as_str(), error.commit_index) {
            note_not_a_member(&self.reports, &self.name, commit_index);
        }
    }

    fn peer_metrics(&self) -> Option<&PeerMetrics> {
        self.metrics.peers.get(&self.name)
    }
}

/// `KV_NODE_PEER_TRANSPORT=post` sends batches over `POST /raft/messages`
/// only (to compare the two, and as a way back should streams misbehave).
fn forced_post() -> bool {
    std::env::var("KV_NODE_PEER_TRANSPORT").is_ok_and(|v| v == "post")
}

/// Keeps the highest-reaching `not_a_member` report.
fn note_not_a_member(reports: &Reports, peer: &str, commit_index: u64) {
    let mut report = reports.lock().unwrap_or_else(|e| e.into_inner());
    if report
        .as_ref()
        .is_none_or(|r| r.commit_index < commit_index)
    {
        *report = Some(NotAMemberReport {
            commit_index,
            peer: peer.to_string(),
        });
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
