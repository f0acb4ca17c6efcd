//! Watches in the node: kv-replica's [`WatchHub`] behind a lock, fed by
//! its own task, and one pump task per open watch.
//!
//! The driver never waits on a watcher: after each round it sends the
//! round's events to the hub task over an unbounded channel ([`feed`]) and
//! goes on. The hub task takes them into the history and wakes the
//! watchers that have something to read. Each watch's pump polls the hub
//! for its next batch, renders it as NDJSON lines and sends it into the
//! watch's bounded channel, which the HTTP body drains; when the client
//! reads slowly the channel fills, the pump waits, its cursor in the
//! history stops, and once the history passes it the hub cuts it off
//! (`slow_consumer`, the last line).

use bytes::Bytes;
use kv_replica::replica::Output;
use kv_replica::watch::{
    Delivery, Started, WatchConfig, WatchError, WatchEvent, WatchFilter, WatchHub, WatchId,
};
use std::collections::HashMap;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::sync::{Notify, mpsc};
use tokio::time::Instant;

/// Interval without a line after which a watch gets `{"progress": N}`.
pub const PROGRESS_INTERVAL: Duration = Duration::from_secs(5);
/// Batches (each at most the hub's batch bytes plus one revision) a watch
/// buffers between its pump and its HTTP body.
pub const WATCH_BUFFER_BATCHES: usize = 8;

/// One round of the driver, for the hub.
#[derive(Debug)]
pub struct WatchFeed {
    pub snapshot_installed: Option<u64>,
    pub events: Vec<WatchEvent>,
    /// The state is applied up to here after the round.
    pub applied_index: u64,
}

/// The driver's end of the feed.
pub struct FeedSender {
    tx: mpsc::UnboundedSender<WatchFeed>,
    fed_index: u64,
}

impl FeedSender {
    /// Hands a round's events to the hub (never blocks). Rounds that
    /// applied nothing are not sent.
    pub fn feed(&mut self, output: &mut Output, applied_index: u64) {
        let snapshot_installed = output.snapshot_installed.map(|i| i.0);
        if applied_index == self.fed_index && snapshot_installed.is_none() {
            return;
        }
        self.fed_index = applied_index;
        let _ = self.tx.send(WatchFeed {
            snapshot_installed,
            events: std::mem::take(&mut output.events),
            applied_index,
        });
    }
}

struct Shared {
    hub: WatchHub,
    wakers: HashMap<WatchId, Arc<Notify>>,
    /// The driver stopped: no more events will come.
    stopped: bool,
}

/// Why a watch could not start.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error(transparent)]
    Hub(#[from] WatchError),
    #[error("the node is shutting down")]
    Stopped,
}

/// The node's watches.
pub struct Watches {
    shared: Mutex<Shared>,
    progress_interval: Duration,
}

impl Watches {
    /// Starts the hub task over a state applied up to `applied_index`.
    /// Must be called inside a tokio runtime. The task ends when the
    /// returned sender is dropped (the driver stopped).
    pub fn start(config: WatchConfig, applied_index: u64) -> (Arc<Watches>, FeedSender) {
        Self::start_with_progress(config, applied_index, PROGRESS_INTERVAL)
    }

    pub fn start_with_progress(
        config: WatchConfig,
        applied_index: u64,
        progress_interval: Duration,
    ) -> (Arc<Watches>, FeedSender) {
        let watches = Arc::new(Watches {
            shared: Mutex::new(Shared {
                hub: WatchHub::new(config, applied_index),
                wakers: HashMap::new(),
                stopped: false,
            }),
            progress_interval,
        });
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(run_hub(watches.clone(), rx));
        let sender = FeedSender {
            tx,
            fed_index: applied_index,
        };
        (watches, sender)
    }

    fn lock(&self) -> MutexGuard<'_, Shared> {
        // A panic while holding the lock is a bug in the hub; its state is
        // still consistent enough to serve the other watchers.
        self.shared.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Open watches on this node.
    pub fn count(&self) -> usize {
        self.lock().hub.watch_count()
    }

    /// The hub's applied revision.
    pub fn revision(&self) -> u64 {
        self.lock().hub.revision()
    }

    /// Starts a watch: its start and the body of its stream, whose first
    /// line is `{"watching": true, "revision": N}`.
    pub fn open(
        self: &Arc<Self>,
        filter: WatchFilter,
        from_revision: Option<u64>,
    ) -> Result<(Started, LineStream), OpenError> {
        let notify = Arc::new(Notify::new());
        let started = {
            let mut shared = self.lock();
            if shared.stopped {
                return Err(OpenError::Stopped);
            }
            let started = shared.hub.watch(filter, from_revision)?;
            shared.wakers.insert(started.id, notify.clone());
            started
        };
        let (tx, rx) = mpsc::channel(WATCH_BUFFER_BATCHES);
        let first = format!("{{\"watching\":true,\"revision\":{}}}\n", started.revision);
        // Room for at least one line: the channel is new.
        let _ = tx.try_send(Bytes::from(first));
        let guard = Registration {
            watches: self.clone(),
            id: started.id,
        };
        tokio::spawn(pump(guard, notify, tx));
        Ok((started, LineStream(rx)))
    }

    fn poll(&self, id: WatchId) -> Delivery {
        self.lock().hub.poll(id)
    }
}

/// Takes feeds in, a few rounds per lock, and wakes the watchers.
async fn run_hub(watches: Arc<Watches>, mut rx: mpsc::UnboundedReceiver<WatchFeed>) {
    const ROUNDS_PER_LOCK: usize = 64;
    while let Some(first) = rx.recv().await {
        let mut feeds = vec![first];
        while feeds.len() < ROUNDS_PER_LOCK {
            match rx.try_recv() {
                Ok(feed) => feeds.push(feed),
                Err(_) => break,
            }
        }
        let wake: Vec<Arc<Notify>> = {
            let mut shared = watches.lock();
            let mut ids = Vec::new();
            for feed in feeds {
                if let Some(index) = feed.snapshot_installed {
                    ids.extend(shared.hub.snapshot_installed(index));
                }
                ids.extend(shared.hub.apply(feed.applied_index, feed.events));
            }
            ids.sort_unstable();
            ids.dedup();
            ids.iter()
                .filter_map(|id| shared.wakers.get(id).cloned())
                .collect()
        };
        for notify in wake {
            notify.notify_one();
        }
    }
    // The driver stopped: every stream ends (its pump finds its watch
    // gone), so that a graceful shutdown does not wait on open watches.
    let wake: Vec<Arc<Notify>> = {
        let mut shared = watches.lock();
        shared.stopped = true;
        let ids: Vec<WatchId> = shared.wakers.keys().copied().collect();
        for id in ids {
            shared.hub.cancel(id);
        }
        shared.wakers.values().cloned().collect()
    };
    for notify in wake {
        notify.notify_one();
    }
}

/// Cancels the watch in the hub when its pump ends, however it ends.
struct Registration {
    watches: Arc<Watches>,
    id: WatchId,
}

impl Drop for Registration {
    fn drop(&mut self) {
        let mut shared = self.watches.lock();
        shared.hub.cancel(self.id);
        shared.wakers.remove(&self.id);
    }
}

/// Moves one watch's events from the hub to its HTTP body.
async fn pump(registration: Registration, notify: Arc<Notify>, tx: mpsc::Sender<Bytes>) {
    let watches = &registration.watches;
    let interval = watches.progress_interval;
    let mut progress_due = Instant::now() + interval;
    // Bounded by the client: the loop ends when the body is dropped, the
    // watch is cut off or the node stops.
    loop {
        match watches.poll(registration.id) {
            Delivery::Events(events) if events.is_empty() => tokio::task::yield_now().await,
            Delivery::Events(events) => {
                if tx.send(render(&events)).await.is_err() {
                    return;
                }
                progress_due = Instant::now() + interval;
            }
            Delivery::Idle { progress } => {
                if Instant::now() >= progress_due {
                    let line = format!("{{\"progress\":{progress}}}\n");
                    if tx.send(Bytes::from(line)).await.is_err() {
                        return;
                    }
                    progress_due = Instant::now() + interval;
                    continue;
                }
                tokio::select! {
                    _ = notify.notified() => {}
                    _ = tokio::time::sleep_until(progress_due) => {}
                    _ = tx.closed() => return,
                }
            }
            Delivery::SlowConsumer { message } => {
                let line = serde_json::json!({
                    "error": {"code": "slow_consumer", "message": message}
                });
                let _ = tx.send(Bytes::from(format!("{line}\n"))).await;
                return;
            }
            Delivery::Gone => return,
        }
    }
}

#[derive(serde::Serialize)]
struct EventLine<'a> {
    revision: u64,
    #[serde(rename = "type")]
    kind: &'static str,
    key: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    value: Option<&'a str>,
}

/// Events as NDJSON lines, one per event.
pub fn render(events: &[WatchEvent]) -> Bytes {
    let mut out = Vec::with_capacity(events.iter().map(WatchEvent::cost_bytes).sum());
    for event in events {
        let line = EventLine {
            revision: event.revision,
            kind: if event.is_delete() { "delete" } else { "put" },
            key: &event.key,
            value: event.value.as_deref(),
        };
        serde_json::to_writer(&mut out, &line).expect("an event line serializes");
        out.push(b'\n');
    }
    Bytes::from(out)
}

/// The body of a watch response: its lines as they come.
pub struct LineStream(mpsc::Receiver<Bytes>);

impl futures_util::Stream for LineStream {
    type Item = Result<Bytes, std::convert::Infallible>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.0.poll_recv(cx).map(|line| line.map(Ok))
    }
}
