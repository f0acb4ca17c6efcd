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
//!
//! # Fan-out cost
//!
//! What a watcher costs is paid per wake-up, not per event: a task switch,
//! a lock, a channel send and one socket write. So the hub task wakes the
//! watchers at most once per [`WAKE_INTERVAL`] (rounds that come faster
//! are taken together, a batch of several rounds per wake-up), and a batch
//! is rendered once for all the watchers of the same filter that read the
//! same revisions ([`Shared::rendered`]): the others get the same bytes.

use bytes::Bytes;
use kv_replica::replica::Output;
use kv_replica::watch::{
    Delivery, Started, WatchConfig, WatchError, WatchEvent, WatchFilter, WatchHub, WatchId,
};
use std::collections::HashMap;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
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
/// Shortest time between two wake-ups of the watchers by the hub task:
/// an event applied after a quiet spell goes out at once, rounds that
/// follow within this time go out together at its end.
pub const WAKE_INTERVAL: Duration = Duration::from_millis(5);
/// Rounds the inbox gathers before the hub task takes them while no watch
/// is open.
pub const IDLE_FEED_ROUNDS: usize = 64;
/// Most bytes the HTTP body takes from its channel for one write.
const BODY_CHUNK_BYTES: usize = 256 << 10;

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
    watches: Arc<Watches>,
    fed_index: u64,
}

impl FeedSender {
    /// Hands a round's events to the hub (never waits on it: the inbox's
    /// lock is only ever held to push or take the whole queue). Rounds
    /// that applied nothing are not sent.
    ///
    /// The hub task is woken at once only while a watch is open; otherwise
    /// every [`IDLE_FEED_ROUNDS`] rounds. Waking it for every round cost a
    /// thread wake-up per round on every node, watched or not. A watch
    /// opened meanwhile misses nothing: `open` takes the inbox itself.
    pub fn feed(&mut self, output: &mut Output, applied_index: u64) {
        let snapshot_installed = output.snapshot_installed.map(|i| i.0);
        if applied_index == self.fed_index && snapshot_installed.is_none() {
            return;
        }
        self.fed_index = applied_index;
        let waiting = {
            let mut inbox = self.watches.inbox();
            inbox.feeds.push(WatchFeed {
                snapshot_installed,
                events: std::mem::take(&mut output.events),
                applied_index,
            });
            inbox.feeds.len()
        };
        // SeqCst, paired with `open`: either this load sees the watch, or
        // the opener's take of the inbox comes after the push above.
        if self.watches.open_watches.load(Ordering::SeqCst) > 0 || waiting >= IDLE_FEED_ROUNDS {
            self.watches.inbox_ready.notify_one();
        }
    }
}

impl Drop for FeedSender {
    /// The driver stopped: the hub task ends every watch.
    fn drop(&mut self) {
        self.watches.inbox().closed = true;
        self.watches.inbox_ready.notify_one();
    }
}

/// Rounds the driver applied that the hub has not taken yet.
#[derive(Default)]
struct Inbox {
    feeds: Vec<WatchFeed>,
    /// The driver dropped its `FeedSender`.
    closed: bool,
}

struct Shared {
    hub: WatchHub,
    wakers: HashMap<WatchId, Arc<Notify>>,
    /// The driver stopped: no more events will come.
    stopped: bool,
    /// The last batch rendered for each filter, by what identifies its
    /// content. Emptied at each wake-up of the watchers, so it holds at
    /// most one batch per filter read since (each also in the channel of
    /// the watch that rendered it).
    rendered: HashMap<WatchFilter, (BatchKey, Bytes)>,
    /// Watchers with events taken into the hub that the hub task has not
    /// woken yet.
    due: Vec<WatchId>,
}

/// What identifies a polled batch for one filter: its first and last
/// revisions and its length. A poll returns every matching event of whole
/// revisions from its first to its last, and applied revisions never
/// change, so two batches of one filter with the same key are the same
/// events.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct BatchKey {
    first: u64,
    last: u64,
    len: usize,
}

impl BatchKey {
    fn of(events: &[WatchEvent]) -> Option<BatchKey> {
        Some(BatchKey {
            first: events.first()?.revision,
            last: events.last()?.revision,
            len: events.len(),
        })
    }
}

/// One poll of a watcher, its events rendered.
enum Polled {
    /// NDJSON lines of the next batch.
    Lines(Bytes),
    /// The poll stopped at its scan bound before finding any event.
    Again,
    Idle {
        progress: u64,
    },
    SlowConsumer {
        message: String,
    },
    Gone,
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
    /// Never held with a wait inside: the driver pushes, the hub and
    /// openers take everything (under `shared`, so rounds go in in order).
    inbox: Mutex<Inbox>,
    inbox_ready: Notify,
    /// The watches open (`Shared::wakers`), read by the driver without the
    /// lock to decide whether the hub task needs waking.
    open_watches: AtomicUsize,
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
                rendered: HashMap::new(),
                due: Vec::new(),
            }),
            inbox: Mutex::new(Inbox::default()),
            inbox_ready: Notify::new(),
            open_watches: AtomicUsize::new(0),
            progress_interval,
        });
        tokio::spawn(run_hub(watches.clone()));
        let sender = FeedSender {
            watches: watches.clone(),
            fed_index: applied_index,
        };
        (watches, sender)
    }

    fn inbox(&self) -> MutexGuard<'_, Inbox> {
        self.inbox.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Takes every round waiting in the inbox into the hub, in order (the
    /// caller holds `shared`), adding the watchers they concern to `due`.
    /// Returns whether the driver stopped feeding.
    fn take_inbox(&self, shared: &mut Shared) -> bool {
        let (feeds, closed) = {
            let mut inbox = self.inbox();
            (std::mem::take(&mut inbox.feeds), inbox.closed)
        };
        for feed in feeds {
            if let Some(index) = feed.snapshot_installed {
                let ids = shared.hub.snapshot_installed(index);
                shared.due.extend(ids);
            }
            let ids = shared.hub.apply(feed.applied_index, feed.events);
            shared.due.extend(ids);
        }
        closed
    }

    /// Wakes the watchers due (once each) and returns when the interval
    /// this starts ends; `None` if nobody was due (a quiet spell).
    fn wake_due(&self) -> Option<Instant> {
        let wake: Vec<Arc<Notify>> = {
            let mut shared = self.lock();
            if shared.due.is_empty() {
                return None;
            }
            let mut due = std::mem::take(&mut shared.due);
            due.sort_unstable();
            due.dedup();
            shared.rendered.clear();
            due.iter()
                .filter_map(|id| shared.wakers.get(id).cloned())
                .collect()
        };
        for notify in wake {
            notify.notify_one();
        }
        Some(Instant::now() + WAKE_INTERVAL)
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

    /// The hub's applied revision, the inbox taken in first.
    pub fn revision(&self) -> u64 {
        let mut shared = self.lock();
        self.take_inbox(&mut shared);
        shared.hub.revision()
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
            // Counted before the inbox is taken (see `FeedSender::feed`):
            // a round the driver pushes after this sees the watch.
            self.open_watches.fetch_add(1, Ordering::SeqCst);
            // Every round applied before this request is in the hub first:
            // a write acknowledged to the client is in the history it
            // watches (and in a 410's compact revision). The hub task
            // wakes the watchers those rounds concern.
            self.take_inbox(&mut shared);
            if !shared.due.is_empty() {
                self.inbox_ready.notify_one();
            }
            let started = match shared.hub.watch(filter.clone(), from_revision) {
                Ok(started) => started,
                Err(e) => {
                    self.open_watches.fetch_sub(1, Ordering::SeqCst);
                    return Err(e.into());
                }
            };
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
        tokio::spawn(pump(guard, filter, notify, tx));
        Ok((started, LineStream(rx)))
    }

    /// The watcher's next batch, rendered, or the lines of the same batch
    /// another watcher of `filter` rendered.
    fn poll(&self, id: WatchId, filter: &WatchFilter) -> Polled {
        let (key, events) = {
            let mut shared = self.lock();
            let events = match shared.hub.poll(id) {
                Delivery::Events(events) => events,
                Delivery::Idle { progress } => return Polled::Idle { progress },
                Delivery::SlowConsumer { message } => return Polled::SlowConsumer { message },
                Delivery::Gone => return Polled::Gone,
            };
            let Some(key) = BatchKey::of(&events) else {
                return Polled::Again;
            };
            if let Some((cached, lines)) = shared.rendered.get(filter)
                && *cached == key
            {
                return Polled::Lines(lines.clone());
            }
            (key, events)
        };
        // Rendered outside the lock; the pumps of the same filter that
        // poll meanwhile render it too, the same bytes.
        let lines = render(&events);
        self.lock()
            .rendered
            .insert(filter.clone(), (key, lines.clone()));
        Polled::Lines(lines)
    }
}

/// Takes the driver's rounds into the hub as they come and wakes the
/// watchers they concern: at once after a quiet spell, then at most once
/// per [`WAKE_INTERVAL`] (rounds taken within an interval wake their
/// watchers together at its end). Taking rounds in is never delayed, so
/// the hub's history lags the applied index only by the inbox.
async fn run_hub(watches: Arc<Watches>) {
    let mut interval_ends: Option<Instant> = None;
    loop {
        match interval_ends {
            None => watches.inbox_ready.notified().await,
            Some(deadline) => tokio::select! {
                () = watches.inbox_ready.notified() => {}
                () = tokio::time::sleep_until(deadline) => {
                    interval_ends = watches.wake_due();
                    continue;
                }
            },
        }
        let closed = {
            let mut shared = watches.lock();
            watches.take_inbox(&mut shared)
        };
        if closed {
            break;
        }
        if interval_ends.is_none() {
            interval_ends = watches.wake_due();
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
        if shared.wakers.remove(&self.id).is_some() {
            self.watches.open_watches.fetch_sub(1, Ordering::SeqCst);
        }
    }
}

/// Moves one watch's events from the hub to its HTTP body.
async fn pump(
    registration: Registration,
    filter: WatchFilter,
    notify: Arc<Notify>,
    tx: mpsc::Sender<Bytes>,
) {
    let watches = &registration.watches;
    let interval = watches.progress_interval;
    let mut progress_due = Instant::now() + interval;
    // Bounded by the client: the loop ends when the body is dropped, the
    // watch is cut off or the node stops.
    loop {
        match watches.poll(registration.id, &filter) {
            Polled::Again => tokio::task::yield_now().await,
            Polled::Lines(lines) => {
                if tx.send(lines).await.is_err() {
                    return;
                }
                progress_due = Instant::now() + interval;
            }
            Polled::Idle { progress } => {
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
            Polled::SlowConsumer { message } => {
                let line = serde_json::json!({
                    "error": {"code": "slow_consumer", "message": message}
                });
                let _ = tx.send(Bytes::from(format!("{line}\n"))).await;
                return;
            }
            Polled::Gone => return,
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

/// The body of a watch response: its lines as they come, every batch
/// waiting in the channel in one chunk (one socket write), up to
/// [`BODY_CHUNK_BYTES`].
pub struct LineStream(mpsc::Receiver<Bytes>);

impl futures_util::Stream for LineStream {
    type Item = Result<Bytes, std::convert::Infallible>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let first = match self.0.poll_recv(cx) {
            Poll::Ready(Some(first)) => first,
            Poll::Ready(None) => return Poll::Ready(None),
            Poll::Pending => return Poll::Pending,
        };
        if first.len() >= BODY_CHUNK_BYTES || self.0.is_empty() {
            return Poll::Ready(Some(Ok(first)));
        }
        let mut chunk = bytes::BytesMut::from(&first[..]);
        while chunk.len() < BODY_CHUNK_BYTES {
            match self.0.try_recv() {
                Ok(more) => chunk.extend_from_slice(&more),
                Err(_) => break,
            }
        }
        Poll::Ready(Some(Ok(chunk.freeze())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::StreamExt;

    fn prefix(p: &str) -> WatchFilter {
        WatchFilter::Prefix(p.into())
    }

    /// Watches without a hub task or pumps: the test polls by hand.
    fn by_hand() -> Watches {
        Watches {
            shared: Mutex::new(Shared {
                hub: WatchHub::new(WatchConfig::default(), 0),
                wakers: HashMap::new(),
                stopped: false,
                rendered: HashMap::new(),
                due: Vec::new(),
            }),
            inbox: Mutex::new(Inbox::default()),
            inbox_ready: Notify::new(),
            open_watches: AtomicUsize::new(0),
            progress_interval: PROGRESS_INTERVAL,
        }
    }

    fn lines(polled: Polled) -> Bytes {
        match polled {
            Polled::Lines(lines) => lines,
            _ => panic!("no lines"),
        }
    }

    #[test]
    fn watchers_of_one_filter_share_one_rendering_and_others_get_their_own() {
        let watches = by_hand();
        let filters = [
            prefix("a/"),
            prefix("a/"),
            WatchFilter::Key("a/1".into()),
            prefix("b/"),
        ];
        let ids: Vec<WatchId> = {
            let mut shared = watches.lock();
            let ids = filters
                .iter()
                .map(|f| shared.hub.watch(f.clone(), None).unwrap().id)
                .collect();
            shared.hub.apply(
                3,
                vec![
                    WatchEvent::put(1, "a/1", "x"),
                    WatchEvent::put(2, "a/2", "y"),
                    WatchEvent::delete(3, "b/1"),
                ],
            );
            ids
        };
        let got: Vec<Bytes> = ids
            .iter()
            .zip(&filters)
            .map(|(id, filter)| lines(watches.poll(*id, filter)))
            .collect();
        let both = "{\"revision\":1,\"type\":\"put\",\"key\":\"a/1\",\"value\":\"x\"}\n\
                    {\"revision\":2,\"type\":\"put\",\"key\":\"a/2\",\"value\":\"y\"}\n";
        assert_eq!(&got[0][..], both.as_bytes());
        // The second watcher of the filter gets the very same bytes.
        assert_eq!(got[1], got[0]);
        assert_eq!(got[1].as_ptr(), got[0].as_ptr());
        assert_eq!(
            &got[2][..],
            b"{\"revision\":1,\"type\":\"put\",\"key\":\"a/1\",\"value\":\"x\"}\n"
        );
        assert_eq!(
            &got[3][..],
            b"{\"revision\":3,\"type\":\"delete\",\"key\":\"b/1\"}\n"
        );
        // Nothing more for anyone.
        for (id, filter) in ids.iter().zip(&filters) {
            assert!(matches!(
                watches.poll(*id, filter),
                Polled::Idle { progress: 3 }
            ));
        }
    }

    #[test]
    fn a_watcher_behind_does_not_get_the_batch_of_one_caught_up() {
        let watches = by_hand();
        let filter = prefix("");
        let (behind, ahead) = {
            let mut shared = watches.lock();
            let behind = shared.hub.watch(filter.clone(), None).unwrap().id;
            shared.hub.apply(1, vec![WatchEvent::put(1, "k", "1")]);
            let ahead = shared.hub.watch(filter.clone(), None).unwrap().id;
            shared.hub.apply(2, vec![WatchEvent::put(2, "k", "2")]);
            (behind, ahead)
        };
        let ahead_lines = lines(watches.poll(ahead, &filter));
        assert_eq!(
            &ahead_lines[..],
            b"{\"revision\":2,\"type\":\"put\",\"key\":\"k\",\"value\":\"2\"}\n"
        );
        let behind_lines = lines(watches.poll(behind, &filter));
        assert_eq!(
            &behind_lines[..],
            b"{\"revision\":1,\"type\":\"put\",\"key\":\"k\",\"value\":\"1\"}\n\
              {\"revision\":2,\"type\":\"put\",\"key\":\"k\",\"value\":\"2\"}\n"
        );
    }

    #[tokio::test]
    async fn the_body_takes_every_queued_batch_in_order_in_one_chunk() {
        let (tx, rx) = mpsc::channel(WATCH_BUFFER_BATCHES);
        let mut stream = LineStream(rx);
        for line in ["a\n", "b\n", "c\n"] {
            tx.try_send(Bytes::from(line)).unwrap();
        }
        assert_eq!(&stream.next().await.unwrap().unwrap()[..], b"a\nb\nc\n");
        tx.try_send(Bytes::from("d\n")).unwrap();
        drop(tx);
        assert_eq!(&stream.next().await.unwrap().unwrap()[..], b"d\n");
        assert!(stream.next().await.is_none());
    }

    /// Reads the stream until `revision`, bounded in lines and time.
    async fn revisions_until(stream: &mut LineStream, revision: u64) -> Vec<u64> {
        let mut seen = Vec::new();
        let mut text = Vec::new();
        for _ in 0..1000 {
            let chunk = tokio::time::timeout(Duration::from_secs(20), stream.next())
                .await
                .expect("lines keep coming")
                .expect("the stream is open")
                .unwrap();
            text.extend_from_slice(&chunk);
            while let Some(end) = text.iter().position(|&b| b == b'\n') {
                let line: serde_json::Value = serde_json::from_slice(&text[..end]).unwrap();
                text.drain(..=end);
                if let Some(r) = line.get("revision").and_then(|r| r.as_u64())
                    && line.get("key").is_some()
                {
                    seen.push(r);
                }
            }
            if seen.last() == Some(&revision) {
                return seen;
            }
        }
        panic!("revision {revision} never came; saw {seen:?}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn rounds_fed_faster_than_wake_ups_all_arrive_in_order_to_every_watcher() {
        let (watches, mut feed) = Watches::start(WatchConfig::default(), 0);
        let mut streams = Vec::new();
        for filter in [prefix("k"), prefix("k"), WatchFilter::Key("k7".into())] {
            streams.push(watches.open(filter, None).unwrap().1);
        }
        for revision in 1..=200u64 {
            let mut output = Output {
                events: vec![WatchEvent::put(
                    revision,
                    &format!("k{}", revision % 10),
                    "v",
                )],
                ..Output::default()
            };
            feed.feed(&mut output, revision);
        }
        let all: Vec<u64> = (1..=200).collect();
        assert_eq!(revisions_until(&mut streams[0], 200).await, all);
        assert_eq!(revisions_until(&mut streams[1], 200).await, all);
        let sevens: Vec<u64> = (1..=200).filter(|r| r % 10 == 7).collect();
        assert_eq!(revisions_until(&mut streams[2], 197).await, sevens);
    }

    /// Feeds the hub one round that applied `revision`: a put of `k`.
    fn feed_put(feed: &mut FeedSender, revision: u64) {
        let mut output = Output {
            events: vec![WatchEvent::put(revision, "k", "v")],
            ..Output::default()
        };
        feed.feed(&mut output, revision);
    }

    /// A round the driver fed is in the hub before a watch opens, even if
    /// the hub task has not run since (a current-thread runtime: it cannot
    /// run between the feed and the open), so a 410 names the compact
    /// revision of every acknowledged write and a watch from the newest
    /// revision starts there.
    #[tokio::test(flavor = "current_thread")]
    async fn a_watch_opened_right_after_a_round_sees_it_in_the_history() {
        let config = WatchConfig {
            history_revisions: 5,
            ..WatchConfig::default()
        };
        let (watches, mut feed) = Watches::start(config, 0);
        for revision in 1..=20u64 {
            feed_put(&mut feed, revision);
        }
        match watches.open(WatchFilter::Key("k".into()), Some(1)) {
            Err(OpenError::Hub(WatchError::Compacted {
                compact_revision, ..
            })) => assert_eq!(compact_revision, 16, "the last 5 of 20 revisions are kept"),
            Err(other) => panic!("{other}"),
            Ok(_) => panic!("revision 1 should be compacted"),
        }
        let (started, mut stream) = watches
            .open(WatchFilter::Key("k".into()), Some(20))
            .unwrap();
        assert_eq!(started.revision, 20);
        assert_eq!(revisions_until(&mut stream, 20).await, vec![20]);
    }

    /// Without an open watch the hub task is not woken for every round,
    /// but it takes them in every `IDLE_FEED_ROUNDS` rounds, so the inbox
    /// stays bounded; the count of open watches follows opens, refused
    /// opens and ends.
    #[tokio::test(flavor = "current_thread")]
    async fn the_hub_is_woken_per_round_only_while_a_watch_is_open() {
        let config = WatchConfig {
            history_revisions: 5,
            ..WatchConfig::default()
        };
        let (watches, mut feed) = Watches::start(config, 0);
        let inbox_len = |w: &Watches| w.inbox().feeds.len();
        for revision in 1..IDLE_FEED_ROUNDS as u64 {
            feed_put(&mut feed, revision);
        }
        tokio::task::yield_now().await;
        assert_eq!(
            inbox_len(&watches),
            IDLE_FEED_ROUNDS - 1,
            "no watch: not woken yet"
        );
        feed_put(&mut feed, IDLE_FEED_ROUNDS as u64);
        tokio::task::yield_now().await;
        assert_eq!(inbox_len(&watches), 0, "woken at the bound");

        assert!(watches.open(WatchFilter::Key("k".into()), Some(1)).is_err());
        assert_eq!(
            watches.open_watches.load(Ordering::SeqCst),
            0,
            "a refused open is not counted"
        );
        let (_, stream) = watches.open(WatchFilter::Key("k".into()), None).unwrap();
        assert_eq!(watches.open_watches.load(Ordering::SeqCst), 1);
        feed_put(&mut feed, IDLE_FEED_ROUNDS as u64 + 1);
        tokio::task::yield_now().await;
        assert_eq!(
            inbox_len(&watches),
            0,
            "a watch is open: woken for the round"
        );

        drop(stream);
        // The pump notices the dropped body on its next send.
        feed_put(&mut feed, IDLE_FEED_ROUNDS as u64 + 2);
        for _ in 0..1000 {
            if watches.open_watches.load(Ordering::SeqCst) == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        assert_eq!(
            watches.open_watches.load(Ordering::SeqCst),
            0,
            "the ended watch is not counted"
        );
    }
}
