//! Process metrics, kept in `prometheus-client` counters, gauges and
//! histograms and exposed by `GET /metrics` in the OpenMetrics text format.
//!
//! The metric handles are shared atomics, written by the driver, the
//! transport and the HTTP layer; the registry holds a clone of each, so
//! rendering reads the same values without locks on the hot paths.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram;
use prometheus_client::registry::{Metric, Registry};
use raft_core::Role;
use std::collections::BTreeMap;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

/// Upper bounds of latency buckets, in seconds.
const LATENCY_BOUNDS: [f64; 16] = [
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002, 0.004, 0.008, 0.016, 0.032, 0.064, 0.128,
    0.256, 0.512, 1.024, 5.0,
];

/// The content type of [`Metrics::render`]'s text.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// A gauge of a non-negative quantity (an index, a term, a size).
pub type U64Gauge = Gauge<u64, AtomicU64>;

/// A latency histogram with fixed buckets, observed in `Duration`s, with
/// its count readable (the crate exposes it only to its own tests).
#[derive(Clone, Debug)]
pub struct Histogram {
    histogram: histogram::Histogram,
    count: Counter,
}

impl Default for Histogram {
    fn default() -> Histogram {
        Histogram {
            histogram: latency_histogram(),
            count: Counter::default(),
        }
    }
}

impl Histogram {
    pub fn observe(&self, elapsed: Duration) {
        self.histogram.observe(elapsed.as_secs_f64());
        self.count.inc();
    }

    pub fn count(&self) -> u64 {
        self.count.get()
    }
}

/// Counters for one outbound peer queue: handles into the per-peer
/// families, labelled with the peer's name.
#[derive(Debug, Default)]
pub struct PeerMetrics {
    pub batches_sent: Counter,
    pub messages_sent: Counter,
    pub send_errors: Counter,
    /// Messages dropped because the peer's queue was full, or because
    /// the peer could not be reached when they were to go.
    pub messages_dropped: Counter,
    /// Message streams opened to the peer (one lives while the link works).
    pub streams_opened: Counter,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PeerLabel {
    peer: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabel {
    route: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResponseLabels {
    route: &'static str,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabel {
    kind: &'static str,
}

/// One counter per peer, labelled with its name.
type PeerCounters = Family<PeerLabel, Counter>;

type HistogramFamily<L> = Family<L, histogram::Histogram, fn() -> histogram::Histogram>;

/// Registers a new metric of type `M` (a counter, gauge or family) and
/// hands back its handle.
fn add<M: Metric + Clone + Default>(registry: &mut Registry, name: &str, help: &str) -> M {
    let metric = M::default();
    registry.register(name, help, metric.clone());
    metric
}

fn latency_histogram() -> histogram::Histogram {
    histogram::Histogram::new(LATENCY_BOUNDS)
}

#[derive(Debug)]
pub struct Metrics {
    /// 0 follower, 1 candidate (or pre-candidate), 2 leader, 3 learner.
    pub role: U64Gauge,
    pub term: U64Gauge,
    pub commit_index: U64Gauge,
    pub applied_index: U64Gauge,
    pub last_log_index: U64Gauge,
    pub snapshot_index: U64Gauge,
    /// Size of the latest snapshot's state, in bytes.
    pub snapshot_bytes: U64Gauge,
    pub leader_known: U64Gauge,
    /// Bytes of live keys and values, and the `--quota-bytes` they are held
    /// to (0: none).
    pub live_bytes: U64Gauge,
    pub quota_bytes: U64Gauge,
    /// WAL rolls since start that reused a spare segment file (a gauge of
    /// the storage's own count: it restarts at 0 with the process).
    pub wal_recycled_rolls: U64Gauge,
    pub proposals: Counter,
    pub proposals_refused: Counter,
    /// Writes refused with 507 because the store is over its quota.
    pub quota_refused: Counter,
    pub reads: Counter,
    pub reads_dropped: Counter,
    pub fsync: Histogram,
    /// Writing a snapshot file (after the state is serialized).
    pub snapshot_save: Histogram,
    pub fsync_bytes: Counter,
    pub ready_rounds: Counter,
    pub snapshots_taken: Counter,
    /// Bytes of the snapshot files this node wrote (whole and delta).
    pub snapshot_written_bytes: Counter,
    pub driver_stalls: Counter,
    pub driver_turns: Counter,
    /// `--spin-wait-us`: time the driver polled for input instead of
    /// sleeping, and the turns whose input such a poll took.
    pub driver_poll_seconds: Counter<f64, AtomicU64>,
    pub driver_poll_hits: Counter,
    pub driver_poll_ran_out: Counter,
    pub peer_messages_received: Counter,
    pub peer_batches_refused: Counter,
    /// AppendEntries rejections received (log repair, or reordered batches).
    pub append_rejections: Counter,
    /// Connections closed at once because `--max-connections` were open.
    pub connections_refused: Counter,
    /// Fixed at start: one entry per peer name.
    pub peers: BTreeMap<String, PeerMetrics>,
    /// Latency by route name; routes are a fixed, small set.
    requests: HistogramFamily<RouteLabel>,
    responses: Family<ResponseLabels, Counter>,
    /// Peer messages the core refused, by kind of refusal (a small, fixed
    /// set: `raft_core::StepError::peer_message_kind`).
    peer_messages_refused: Family<KindLabel, Counter>,
    registry: Registry,
}

impl Default for Metrics {
    fn default() -> Metrics {
        Metrics::new([])
    }
}

impl Metrics {
    // One metric a line: the registrations read as a table.
    #[rustfmt::skip]
    pub fn new<'a>(peer_names: impl IntoIterator<Item = &'a str>) -> Metrics {
        let mut registry = Registry::default();
        let r = &mut registry;
        let role = add(r, "kv_raft_role", "0 follower, 1 candidate, 2 leader, 3 learner");
        let term = add(r, "kv_raft_term", "current term");
        let commit_index = add(r, "kv_raft_commit_index", "commit index");
        let applied_index = add(r, "kv_raft_applied_index", "applied index");
        let last_log_index = add(r, "kv_raft_last_log_index", "last log index");
        let snapshot_index = add(r, "kv_raft_snapshot_index", "index of the latest snapshot");
        let snapshot_bytes = add(r, "kv_snapshot_bytes", "size of the latest snapshot's state in bytes");
        let leader_known = add(r, "kv_raft_leader_known", "1 if a leader is known");
        let live_bytes = add(r, "kv_live_bytes", "bytes of live keys and values");
        let quota_bytes = add(r, "kv_quota_bytes", "live bytes over which writes that add data are refused (0: no quota)");
        let wal_recycled_rolls = add(r, "kv_wal_recycled_rolls", "WAL segments since start written into a spare file (a compacted segment or one made from zeros) instead of a new one");

        // Counters are registered without their `_total` suffix, which the
        // encoder appends.
        let proposals = add(r, "kv_proposals", "writes proposed to raft");
        let proposals_refused = add(r, "kv_proposals_refused", "writes refused before proposing (503)");
        let quota_refused = add(r, "kv_quota_refused", "writes refused with 507 because the store is over its quota");
        let reads = add(r, "kv_reads", "reads served");
        let reads_dropped = add(r, "kv_reads_dropped", "read-index requests dropped");
        let fsync_bytes = add(r, "kv_fsync_bytes", "bytes made durable");
        let ready_rounds = add(r, "kv_ready_rounds", "Ready batches handled");
        let snapshots_taken = add(r, "kv_snapshots", "snapshots taken");
        let snapshot_written_bytes = add(r, "kv_snapshot_written_bytes", "bytes of snapshot files this node wrote (whole snapshots and deltas; not those installed from a leader)");
        let driver_stalls = add(r, "kv_driver_stalls", "turns of the driver loop that took over 100 ms (heartbeats wait meanwhile)");
        let driver_turns = add(r, "kv_driver_turns", "turns of the driver loop");
        let driver_poll_seconds = add(r, "kv_driver_poll_seconds", "time the driver loop polled for input instead of sleeping (--spin-wait-us)");
        let driver_poll_hits = add(r, "kv_driver_poll_hits", "turns of the driver loop whose input a poll took, without a wake-up");
        let driver_poll_ran_out = add(r, "kv_driver_poll_ran_out", "polls of the driver loop that ran their whole budget (--spin-wait-us) without an input: CPU spent for nothing");
        let peer_messages_received = add(r, "kv_peer_messages_received", "raft messages received from peers");
        let peer_batches_refused = add(r, "kv_peer_batches_refused", "peer batches refused (bad encoding, unknown sender, or a sender that is not a member)");
        let append_rejections = add(r, "kv_append_rejections", "AppendEntries rejections received from followers");
        let connections_refused = add(r, "kv_connections_refused", "connections closed at once because --max-connections were open");

        let fsync = Histogram::default();
        r.register("kv_fsync_seconds", "WAL fsync latency", fsync.histogram.clone());
        let snapshot_save = Histogram::default();
        r.register("kv_snapshot_save_seconds", "writing a snapshot file", snapshot_save.histogram.clone());

        let batches_sent: PeerCounters = add(r, "kv_peer_batches_sent", "batches sent to a peer");
        let messages_sent: PeerCounters = add(r, "kv_peer_messages_sent", "messages sent to a peer");
        let send_errors: PeerCounters = add(r, "kv_peer_send_errors", "failed batch sends to a peer");
        let messages_dropped: PeerCounters = add(r, "kv_peer_messages_dropped", "messages dropped on a full peer queue or an unreachable peer");
        let streams_opened: PeerCounters = add(r, "kv_peer_streams_opened", "message streams opened to a peer");
        let peers = peer_names
            .into_iter()
            .map(|name| {
                let label = PeerLabel {
                    peer: name.to_string(),
                };
                let metrics = PeerMetrics {
                    batches_sent: batches_sent.get_or_create_owned(&label),
                    messages_sent: messages_sent.get_or_create_owned(&label),
                    send_errors: send_errors.get_or_create_owned(&label),
                    messages_dropped: messages_dropped.get_or_create_owned(&label),
                    streams_opened: streams_opened.get_or_create_owned(&label),
                };
                (name.to_string(), metrics)
            })
            .collect();

        let peer_messages_refused = add(r, "kv_peer_messages_refused", "peer messages the raft core refused as malformed or forged, by kind");
        let requests = HistogramFamily::<RouteLabel>::new_with_constructor(latency_histogram);
        r.register("kv_http_request_duration_seconds", "HTTP request latency by route", requests.clone());
        let responses = add(r, "kv_http_responses", "HTTP responses by route and status");

        Metrics {
            role,
            term,
            commit_index,
            applied_index,
            last_log_index,
            snapshot_index,
            snapshot_bytes,
            leader_known,
            live_bytes,
            quota_bytes,
            wal_recycled_rolls,
            proposals,
            proposals_refused,
            quota_refused,
            reads,
            reads_dropped,
            fsync,
            snapshot_save,
            fsync_bytes,
            ready_rounds,
            snapshots_taken,
            snapshot_written_bytes,
            driver_stalls,
            driver_turns,
            driver_poll_seconds,
            driver_poll_hits,
            driver_poll_ran_out,
            peer_messages_received,
            peer_batches_refused,
            append_rejections,
            connections_refused,
            peers,
            requests,
            responses,
            peer_messages_refused,
            registry,
        }
    }

    pub fn set_role(&self, role: Role) {
        let code = match role {
            Role::Follower => 0,
            Role::PreCandidate | Role::Candidate => 1,
            Role::Leader => 2,
            Role::Learner => 3,
        };
        self.role.set(code);
    }

    /// Records one answered HTTP request.
    pub fn observe_request(&self, route: &'static str, status: u16, elapsed: Duration) {
        self.requests
            .get_or_create(&RouteLabel { route })
            .observe(elapsed.as_secs_f64());
        self.responses
            .get_or_create(&ResponseLabels { route, status })
            .inc();
    }

    /// Records one peer message the core refused, by kind of refusal.
    pub fn peer_message_refused(&self, kind: &'static str) {
        self.peer_messages_refused
            .get_or_create(&KindLabel { kind })
            .inc();
    }

    /// How many peer messages were refused with this kind (for tests).
    pub fn peer_messages_refused(&self, kind: &'static str) -> u64 {
        self.peer_messages_refused
            .get(&KindLabel { kind })
            .map_or(0, |counter| counter.get())
    }

    /// The OpenMetrics text exposition (see [`CONTENT_TYPE`]).
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(8 << 10);
        encode(&mut out, &self.registry).expect("writing to a String cannot fail");
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rendering_lists_gauges_histograms_and_peers() {
        let metrics = Metrics::new(["node2"]);
        metrics.set_role(Role::Leader);
        metrics.fsync.observe(Duration::from_micros(300));
        metrics.proposals.inc_by(3);
        metrics.observe_request("kv_put", 200, Duration::from_millis(2));
        metrics.peer_message_refused("stale_term");
        let text = metrics.render();
        assert!(text.contains("kv_raft_role 2\n"), "{text}");
        assert!(text.contains("kv_proposals_total 3\n"), "{text}");
        assert!(
            text.contains("kv_fsync_seconds_bucket{le=\"0.0005\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains("kv_fsync_seconds_bucket{le=\"0.0001\"} 0\n"),
            "{text}"
        );
        assert!(text.contains("kv_fsync_seconds_count 1\n"), "{text}");
        assert!(
            text.contains("kv_peer_send_errors_total{peer=\"node2\"} 0\n"),
            "{text}"
        );
        assert!(
            text.contains("kv_http_request_duration_seconds_count{route=\"kv_put\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains("kv_http_responses_total{route=\"kv_put\",status=\"200\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains("kv_peer_messages_refused_total{kind=\"stale_term\"} 1\n"),
            "{text}"
        );
        assert!(text.ends_with("# EOF\n"), "{text}");
        assert_eq!(metrics.peer_messages_refused("stale_term"), 1);
    }
}
