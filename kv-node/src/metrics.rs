//! Process metrics, rendered by hand in the Prometheus text format.
//!
//! Everything is an atomic or a short mutex-held map, written by the driver,
//! the transport and the HTTP layer, read by `GET /metrics`.

use raft_core::Role;
use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

/// Upper bounds of latency buckets, in seconds.
const LATENCY_BOUNDS: [f64; 16] = [
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002, 0.004, 0.008, 0.016, 0.032, 0.064, 0.128,
    0.256, 0.512, 1.024, 5.0,
];

/// A latency histogram with fixed buckets.
#[derive(Debug, Default)]
pub struct Histogram {
    buckets: [AtomicU64; LATENCY_BOUNDS.len()],
    count: AtomicU64,
    sum_nanos: AtomicU64,
}

impl Histogram {
    pub fn observe(&self, elapsed: Duration) {
        let seconds = elapsed.as_secs_f64();
        if let Some(i) = LATENCY_BOUNDS.iter().position(|b| seconds <= *b) {
            self.buckets[i].fetch_add(1, Relaxed);
        }
        self.count.fetch_add(1, Relaxed);
        let nanos = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
        self.sum_nanos.fetch_add(nanos, Relaxed);
    }

    pub fn count(&self) -> u64 {
        self.count.load(Relaxed)
    }

    fn render(&self, out: &mut String, name: &str, labels: &str) {
        let sep = if labels.is_empty() { "" } else { "," };
        let mut cumulative = 0;
        for (bound, bucket) in LATENCY_BOUNDS.iter().zip(&self.buckets) {
            cumulative += bucket.load(Relaxed);
            let _ = writeln!(
                out,
                "{name}_bucket{{{labels}{sep}le=\"{bound}\"}} {cumulative}"
            );
        }
        let count = self.count.load(Relaxed);
        let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {count}");
        let sum = self.sum_nanos.load(Relaxed) as f64 / 1e9;
        let braces = if labels.is_empty() {
            String::new()
        } else {
            format!("{{{labels}}}")
        };
        let _ = writeln!(out, "{name}_sum{braces} {sum}");
        let _ = writeln!(out, "{name}_count{braces} {count}");
    }
}

/// Picks one counter of a peer, for rendering.
type PeerField = fn(&PeerMetrics) -> &AtomicU64;

/// Counters for one outbound peer queue.
#[derive(Debug, Default)]
pub struct PeerMetrics {
    pub batches_sent: AtomicU64,
    pub messages_sent: AtomicU64,
    pub send_errors: AtomicU64,
    /// Messages dropped because the peer's queue was full.
    pub messages_dropped: AtomicU64,
}

#[derive(Debug, Default)]
pub struct Metrics {
    /// 0 follower, 1 candidate (or pre-candidate), 2 leader, 3 learner.
    pub role: AtomicU64,
    pub term: AtomicU64,
    pub commit_index: AtomicU64,
    pub applied_index: AtomicU64,
    pub last_log_index: AtomicU64,
    pub snapshot_index: AtomicU64,
    /// Size of the latest snapshot's state, in bytes.
    pub snapshot_bytes: AtomicU64,
    pub leader_known: AtomicU64,
    pub proposals: AtomicU64,
    pub proposals_refused: AtomicU64,
    pub reads: AtomicU64,
    pub reads_dropped: AtomicU64,
    pub fsync: Histogram,
    /// Writing a snapshot file (after the state is serialized).
    pub snapshot_save: Histogram,
    pub fsync_bytes: AtomicU64,
    pub ready_rounds: AtomicU64,
    pub snapshots_taken: AtomicU64,
    pub peer_messages_received: AtomicU64,
    pub peer_batches_refused: AtomicU64,
    /// Connections closed at once because `--max-connections` were open.
    pub connections_refused: AtomicU64,
    /// AppendEntries rejections received (log repair, or reordered batches).
    pub append_rejections: AtomicU64,
    /// Fixed at start: one entry per peer name.
    pub peers: BTreeMap<String, PeerMetrics>,
    /// Latency by route name; routes are a fixed, small set.
    requests: Mutex<BTreeMap<&'static str, Histogram>>,
    responses: Mutex<BTreeMap<(&'static str, u16), u64>>,
    /// Peer messages the core refused, by kind of refusal (a small, fixed
    /// set: `raft_core::StepError::peer_message_kind`).
    peer_messages_refused: Mutex<BTreeMap<&'static str, u64>>,
}

impl Metrics {
    pub fn new<'a>(peer_names: impl IntoIterator<Item = &'a str>) -> Metrics {
        Metrics {
            peers: peer_names
                .into_iter()
                .map(|name| (name.to_string(), PeerMetrics::default()))
                .collect(),
            ..Metrics::default()
        }
    }

    pub fn set_role(&self, role: Role) {
        let code = match role {
            Role::Follower => 0,
            Role::PreCandidate | Role::Candidate => 1,
            Role::Leader => 2,
            Role::Learner => 3,
        };
        self.role.store(code, Relaxed);
    }

    /// Records one answered HTTP request.
    pub fn observe_request(&self, route: &'static str, status: u16, elapsed: Duration) {
        if let Ok(mut requests) = self.requests.lock() {
            requests.entry(route).or_default().observe(elapsed);
        }
        if let Ok(mut responses) = self.responses.lock() {
            *responses.entry((route, status)).or_default() += 1;
        }
    }

    /// Records one peer message the core refused, by kind of refusal.
    pub fn peer_message_refused(&self, kind: &'static str) {
        if let Ok(mut refused) = self.peer_messages_refused.lock() {
            *refused.entry(kind).or_default() += 1;
        }
    }

    /// How many peer messages were refused with this kind (for tests).
    pub fn peer_messages_refused(&self, kind: &str) -> u64 {
        self.peer_messages_refused
            .lock()
            .map(|r| r.get(kind).copied().unwrap_or(0))
            .unwrap_or(0)
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(8 << 10);
        let gauges: [(&str, &str, &AtomicU64); 8] = [
            (
                "kv_raft_role",
                "0 follower, 1 candidate, 2 leader, 3 learner",
                &self.role,
            ),
            ("kv_raft_term", "current term", &self.term),
            ("kv_raft_commit_index", "commit index", &self.commit_index),
            (
                "kv_raft_applied_index",
                "applied index",
                &self.applied_index,
            ),
            (
                "kv_raft_last_log_index",
                "last log index",
                &self.last_log_index,
            ),
            (
                "kv_raft_snapshot_index",
                "index of the latest snapshot",
                &self.snapshot_index,
            ),
            (
                "kv_snapshot_bytes",
                "size of the latest snapshot's state in bytes",
                &self.snapshot_bytes,
            ),
            (
                "kv_raft_leader_known",
                "1 if a leader is known",
                &self.leader_known,
            ),
        ];
        for (name, help, value) in gauges {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge");
            let _ = writeln!(out, "{name} {}", value.load(Relaxed));
        }
        let counters: [(&str, &str, &AtomicU64); 11] = [
            (
                "kv_proposals_total",
                "writes proposed to raft",
                &self.proposals,
            ),
            (
                "kv_proposals_refused_total",
                "writes refused before proposing (503)",
                &self.proposals_refused,
            ),
            ("kv_reads_total", "reads served", &self.reads),
            (
                "kv_reads_dropped_total",
                "read-index requests dropped",
                &self.reads_dropped,
            ),
            (
                "kv_fsync_bytes_total",
                "bytes made durable",
                &self.fsync_bytes,
            ),
            (
                "kv_ready_rounds_total",
                "Ready batches handled",
                &self.ready_rounds,
            ),
            (
                "kv_snapshots_total",
                "snapshots taken",
                &self.snapshots_taken,
            ),
            (
                "kv_peer_messages_received_total",
                "raft messages received from peers",
                &self.peer_messages_received,
            ),
            (
                "kv_peer_batches_refused_total",
                "peer batches refused (bad encoding, unknown sender, or a sender that is not a member)",
                &self.peer_batches_refused,
            ),
            (
                "kv_connections_refused_total",
                "connections closed at once because --max-connections were open",
                &self.connections_refused,
            ),
            (
                "kv_append_rejections_total",
                "AppendEntries rejections received from followers",
                &self.append_rejections,
            ),
        ];
        for (name, help, value) in counters {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
            let _ = writeln!(out, "{name} {}", value.load(Relaxed));
        }
        let name = "kv_fsync_seconds";
        let _ = writeln!(
            out,
            "# HELP {name} WAL fsync latency\n# TYPE {name} histogram"
        );
        self.fsync.render(&mut out, name, "");
        let name = "kv_snapshot_save_seconds";
        let _ = writeln!(
            out,
            "# HELP {name} writing a snapshot file\n# TYPE {name} histogram"
        );
        self.snapshot_save.render(&mut out, name, "");

        let peer_counters: [(&str, &str, PeerField); 4] = [
            (
                "kv_peer_batches_sent_total",
                "batches sent to a peer",
                |p| &p.batches_sent,
            ),
            (
                "kv_peer_messages_sent_total",
                "messages sent to a peer",
                |p| &p.messages_sent,
            ),
            (
                "kv_peer_send_errors_total",
                "failed batch sends to a peer",
                |p| &p.send_errors,
            ),
            (
                "kv_peer_messages_dropped_total",
                "messages dropped on a full peer queue",
                |p| &p.messages_dropped,
            ),
        ];
        for (name, help, field) in peer_counters {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
            for (peer, metrics) in &self.peers {
                let _ = writeln!(
                    out,
                    "{name}{{peer=\"{peer}\"}} {}",
                    field(metrics).load(Relaxed)
                );
            }
        }

        let name = "kv_peer_messages_refused_total";
        let _ = writeln!(
            out,
            "# HELP {name} peer messages the raft core refused as malformed or forged, by kind\n# TYPE {name} counter"
        );
        if let Ok(refused) = self.peer_messages_refused.lock() {
            for (kind, count) in refused.iter() {
                let _ = writeln!(out, "{name}{{kind=\"{kind}\"}} {count}");
            }
        }

        let name = "kv_http_request_duration_seconds";
        let _ = writeln!(
            out,
            "# HELP {name} HTTP request latency by route\n# TYPE {name} histogram"
        );
        if let Ok(requests) = self.requests.lock() {
            for (route, histogram) in requests.iter() {
                histogram.render(&mut out, name, &format!("route=\"{route}\""));
            }
        }
        let name = "kv_http_responses_total";
        let _ = writeln!(
            out,
            "# HELP {name} HTTP responses by route and status\n# TYPE {name} counter"
        );
        if let Ok(responses) = self.responses.lock() {
            for ((route, status), count) in responses.iter() {
                let _ = writeln!(
                    out,
                    "{name}{{route=\"{route}\",status=\"{status}\"}} {count}"
                );
            }
        }
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
        metrics.observe_request("kv_put", 200, Duration::from_millis(2));
        let text = metrics.render();
        assert!(text.contains("kv_raft_role 2\n"));
        assert!(text.contains("kv_fsync_seconds_bucket{le=\"0.0005\"} 1\n"));
        assert!(text.contains("kv_fsync_seconds_count 1\n"));
        assert!(text.contains("kv_peer_send_errors_total{peer=\"node2\"} 0\n"));
        assert!(text.contains("kv_http_request_duration_seconds_count{route=\"kv_put\"} 1\n"));
        assert!(text.contains("kv_http_responses_total{route=\"kv_put\",status=\"200\"} 1\n"));
    }
}
