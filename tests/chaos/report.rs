//! Figures of a chaos run: throughput healthy vs. under each fault class,
//! latency percentiles, failover times, the longest stretch without a
//! successful write, and the fault timeline.

use crate::faults::{FaultEvent, FaultKind};
use crate::workload::{Attempt, OpKind, Outcome};
use std::collections::BTreeMap;
use std::fmt::Write;

const NS_PER_SEC: f64 = 1e9;

fn secs(ns: u64) -> f64 {
    ns as f64 / NS_PER_SEC
}

/// The `p`-th percentile (0..=100) of sorted values.
fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

fn ms(ns: u64) -> String {
    format!("{:.1} ms", ns as f64 / 1e6)
}

/// The time from each leader fault's start to the first write invoked after
/// it that succeeded, per fault kind; `None` when no write succeeded before
/// the run ended.
pub fn failover_times(
    timeline: &[FaultEvent],
    attempts: &[Attempt],
) -> Vec<(FaultKind, Option<u64>)> {
    timeline
        .iter()
        .filter(|event| event.kind.targets_leader())
        .map(|event| {
            let first = attempts
                .iter()
                .filter(|a| a.kind.is_write() && a.outcome == Outcome::Ok)
                .filter(|a| a.invoke_ns >= event.start_ns)
                .map(|a| a.complete_ns)
                .min();
            (event.kind, first.map(|done| done - event.start_ns))
        })
        .collect()
}

/// The longest stretch between `from_ns` and `to_ns` with no successful
/// write completing: (length, start, end).
pub fn longest_write_gap(attempts: &[Attempt], from_ns: u64, to_ns: u64) -> (u64, u64, u64) {
    let mut done: Vec<u64> = attempts
        .iter()
        .filter(|a| a.kind.is_write() && a.outcome == Outcome::Ok)
        .map(|a| a.complete_ns)
        .filter(|&t| t >= from_ns && t <= to_ns)
        .collect();
    done.sort_unstable();
    let mut best = (0, from_ns, from_ns);
    let mut previous = from_ns;
    for t in done.into_iter().chain(std::iter::once(to_ns)) {
        if t - previous > best.0 {
            best = (t - previous, previous, t);
        }
        previous = t;
    }
    best
}

/// Successful operations per second inside `windows`, overall.
fn rate_in(attempts: &[Attempt], windows: &[(u64, u64)]) -> Option<f64> {
    let total_ns: u64 = windows.iter().map(|(a, b)| b - a).sum();
    if total_ns == 0 {
        return None;
    }
    let count = attempts
        .iter()
        .filter(|a| a.outcome == Outcome::Ok)
        .filter(|a| {
            windows
                .iter()
                .any(|&(s, e)| a.complete_ns >= s && a.complete_ns < e)
        })
        .count();
    Some(count as f64 / secs(total_ns))
}

/// The stretches of `[from, to)` that no fault covers.
fn healthy_windows(timeline: &[FaultEvent], from_ns: u64, to_ns: u64) -> Vec<(u64, u64)> {
    let mut windows = Vec::new();
    let mut cursor = from_ns;
    for event in timeline {
        if event.start_ns > cursor {
            windows.push((cursor, event.start_ns.min(to_ns)));
        }
        cursor = cursor.max(event.healed_ns);
    }
    if to_ns > cursor {
        windows.push((cursor, to_ns));
    }
    windows
}

/// Throughput healthy and per fault class: (class, ops/s, seconds covered).
pub fn throughput_by_class(
    timeline: &[FaultEvent],
    attempts: &[Attempt],
    from_ns: u64,
    to_ns: u64,
) -> Vec<(String, f64, f64)> {
    let mut rows = Vec::new();
    let healthy = healthy_windows(timeline, from_ns, to_ns);
    if let Some(rate) = rate_in(attempts, &healthy) {
        let covered: u64 = healthy.iter().map(|(a, b)| b - a).sum();
        rows.push(("healthy".to_string(), rate, secs(covered)));
    }
    let mut by_kind: BTreeMap<FaultKind, Vec<(u64, u64)>> = BTreeMap::new();
    for event in timeline {
        by_kind
            .entry(event.kind)
            .or_default()
            .push((event.start_ns, event.healed_ns));
    }
    for (kind, windows) in by_kind {
        if let Some(rate) = rate_in(attempts, &windows) {
            let covered: u64 = windows.iter().map(|(a, b)| b - a).sum();
            rows.push((kind.name().to_string(), rate, secs(covered)));
        }
    }
    rows
}

/// The printed summary.
pub fn summary(timeline: &[FaultEvent], attempts: &[Attempt], from_ns: u64, to_ns: u64) -> String {
    let mut out = String::new();
    let count = |outcome| attempts.iter().filter(|a| a.outcome == outcome).count();
    let (ok, failed, unknown) = (
        count(Outcome::Ok),
        count(Outcome::Failed),
        count(Outcome::Unknown),
    );
    let _ = writeln!(
        out,
        "operations: {} attempted, {ok} ok, {failed} failed for sure (503, refused), {unknown} unknown (504, timeout, broken)",
        attempts.len()
    );
    let _ = writeln!(
        out,
        "throughput: {:.0} ok ops/s over {:.1} s",
        ok as f64 / secs(to_ns - from_ns).max(1e-9),
        secs(to_ns - from_ns)
    );
    let nodes = attempts.iter().map(|a| a.node + 1).max().unwrap_or(0);
    let per_node: Vec<String> = (0..nodes)
        .map(|node| {
            let of = |outcome| {
                attempts
                    .iter()
                    .filter(|a| a.node == node && a.outcome == outcome)
                    .count()
            };
            format!(
                "node{} {}/{}/{}",
                node + 1,
                of(Outcome::Ok),
                of(Outcome::Failed),
                of(Outcome::Unknown)
            )
        })
        .collect();
    let _ = writeln!(out, "by node (ok/failed/unknown): {}", per_node.join(", "));
    for kind in [OpKind::Get, OpKind::Put, OpKind::Cas, OpKind::Delete] {
        let mut latencies: Vec<u64> = attempts
            .iter()
            .filter(|a| a.kind == kind && a.outcome == Outcome::Ok)
            .map(|a| a.complete_ns - a.invoke_ns)
            .collect();
        latencies.sort_unstable();
        let _ = writeln!(
            out,
            "latency {:<6} n={:<6} p50 {} p90 {} p99 {} max {}",
            kind.name(),
            latencies.len(),
            ms(percentile(&latencies, 50.0)),
            ms(percentile(&latencies, 90.0)),
            ms(percentile(&latencies, 99.0)),
            ms(latencies.last().copied().unwrap_or(0)),
        );
    }
    let _ = writeln!(out, "ok ops/s by period:");
    for (class, rate, covered) in throughput_by_class(timeline, attempts, from_ns, to_ns) {
        let _ = writeln!(out, "  {class:<20} {rate:>8.0} ops/s over {covered:.1} s");
    }
    let failovers = failover_times(timeline, attempts);
    if !failovers.is_empty() {
        let _ = writeln!(
            out,
            "time from a leader fault to the first successful write:"
        );
        for (kind, time) in &failovers {
            let shown = time.map(ms).unwrap_or_else(|| "none before the end".into());
            let _ = writeln!(out, "  {:<20} {shown}", kind.name());
        }
    }
    let (gap, start, end) = longest_write_gap(attempts, from_ns, to_ns);
    let _ = writeln!(
        out,
        "longest window without a successful write: {} (from {:.2} s to {:.2} s)",
        ms(gap),
        secs(start),
        secs(end)
    );
    let _ = writeln!(out, "fault timeline:");
    for event in timeline {
        let _ = writeln!(
            out,
            "  {:>7.2} s - {:>7.2} s  {:<20} {}",
            secs(event.start_ns),
            secs(event.healed_ns),
            event.kind.name(),
            event.detail
        );
    }
    out
}
