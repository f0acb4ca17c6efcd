//! `kvctl bench`: a small closed-loop load test. Each worker sends one
//! request at a time for the given duration; latencies go into a vector that
//! is sorted once at the end for the percentiles. (The fuller load generator
//! is the workspace's `examples/bench.rs`.)

use crate::Context;
use crate::cli::{BenchArgs, Output};
use crate::client::Method;
use crate::client::{Attempt, Call, Client, Failure, encode};
use crate::output::{millis, print_json, print_table};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// Pause after a failed request before the worker tries the next endpoint,
/// so that a dead cluster is not hammered in a tight loop.
const BACKOFF_AFTER_ERROR: Duration = Duration::from_millis(20);

#[derive(Default)]
struct WorkerResult {
    put_latencies: Vec<Duration>,
    get_latencies: Vec<Duration>,
    /// Error code (or `unreachable`, `transport`) to count.
    errors: BTreeMap<String, u64>,
}

/// xorshift64*: enough to spread keys, and no dependency.
struct KeyPicker(u64);

impl KeyPicker {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
}

pub fn bench(ctx: &Context, args: &BenchArgs) -> Result<u8, Failure> {
    if args.workers == 0 || args.keys == 0 {
        return Err(Failure::Usage(
            "--workers and --keys must be at least 1".into(),
        ));
    }
    let started = Instant::now();
    let deadline = started + args.duration;
    let results: Vec<WorkerResult> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..args.workers)
            .map(|worker| scope.spawn(move || run_worker(&ctx.client, args, worker, deadline)))
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("a bench worker panicked"))
            .collect()
    });
    let elapsed = started.elapsed();

    let mut puts = Vec::new();
    let mut gets = Vec::new();
    let mut errors: BTreeMap<String, u64> = BTreeMap::new();
    for result in results {
        puts.extend(result.put_latencies);
        gets.extend(result.get_latencies);
        for (code, count) in result.errors {
            *errors.entry(code).or_default() += count;
        }
    }
    let mut all: Vec<Duration> = puts.iter().chain(&gets).copied().collect();
    for latencies in [&mut puts, &mut gets, &mut all] {
        latencies.sort_unstable();
    }
    let error_count: u64 = errors.values().sum();
    let seconds = elapsed.as_secs_f64();
    let rows = [("put", &puts), ("get", &gets), ("all", &all)];

    match ctx.output {
        Output::Json => {
            let mut summary = json!({
                "workers": args.workers,
                "duration_s": seconds,
                "ops": all.len(),
                "ops_per_s": all.len() as f64 / seconds,
                "errors": errors,
            });
            for (name, latencies) in rows {
                summary[name] = json_stats(latencies);
            }
            print_json(&summary);
        }
        Output::Table => {
            println!(
                "{} workers, {:.2}s, {} ops ({:.1} ops/s), {} errors",
                args.workers,
                seconds,
                all.len(),
                all.len() as f64 / seconds,
                error_count
            );
            let table: Vec<Vec<String>> = rows
                .iter()
                .map(|(name, latencies)| {
                    let count = latencies.len();
                    vec![
                        name.to_string(),
                        count.to_string(),
                        format!("{:.1}", count as f64 / seconds),
                        percentile(latencies, 50.0).map_or("-".into(), millis),
                        percentile(latencies, 99.0).map_or("-".into(), millis),
                        latencies.last().copied().map_or("-".into(), millis),
                    ]
                })
                .collect();
            print_table(&["OP", "COUNT", "OPS/S", "P50", "P99", "MAX"], &table);
            for (code, count) in &errors {
                eprintln!("errors: {code}: {count}");
            }
        }
    }
    Ok(
        match (all.is_empty(), errors.keys().all(|c| c == "unreachable")) {
            (false, _) => 0,
            (true, true) if error_count > 0 => 3,
            _ => 1,
        },
    )
}

fn run_worker(client: &Client, args: &BenchArgs, worker: usize, deadline: Instant) -> WorkerResult {
    let mut result = WorkerResult::default();
    let mut picker = KeyPicker(0x9E37_79B9_7F4A_7C15 ^ (worker as u64 + 1));
    let mut endpoint_index = worker % client.endpoints.len();
    let value = "x".repeat(args.value_size);
    let consistency = args
        .consistency
        .map(|c| format!("?consistency={}", c.as_str()))
        .unwrap_or_default();
    while Instant::now() < deadline {
        let key = format!("{}{:08}", args.key_prefix, picker.next() % args.keys);
        let is_read = picker.next() % 100 < u64::from(args.read_percent);
        let call = if is_read {
            Call::get(format!("/kv/{}{consistency}", encode(&key)))
        } else {
            let body = json!({"value": value});
            Call::write(
                Method::PUT,
                format!("/kv/{}", encode(&key)),
                Some(body),
                false,
            )
        };
        let endpoint = &client.endpoints[endpoint_index];
        let start = Instant::now();
        let failed = match client.attempt(endpoint, &call) {
            Attempt::Answered(_) => None,
            // A key not written yet is an answer like any other.
            Attempt::Refused(e) if is_read && e.status == 404 => None,
            Attempt::Refused(e) => Some(e.code),
            Attempt::NotSent(_) => Some("unreachable".into()),
            Attempt::TlsFailed(_) => Some("tls".into()),
            Attempt::MaybeSent(_) => Some("transport".into()),
        };
        let latency = start.elapsed();
        match failed {
            None if is_read => result.get_latencies.push(latency),
            None => result.put_latencies.push(latency),
            Some(code) => {
                *result.errors.entry(code).or_default() += 1;
                endpoint_index = (endpoint_index + 1) % client.endpoints.len();
                std::thread::sleep(BACKOFF_AFTER_ERROR);
            }
        }
    }
    result
}

/// Nearest-rank percentile of sorted latencies.
fn percentile(sorted: &[Duration], percent: f64) -> Option<Duration> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((percent / 100.0) * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

fn json_stats(sorted: &[Duration]) -> Value {
    let ms = |d: Option<Duration>| d.map(|d| d.as_secs_f64() * 1000.0);
    json!({
        "count": sorted.len(),
        "p50_ms": ms(percentile(sorted, 50.0)),
        "p99_ms": ms(percentile(sorted, 99.0)),
        "max_ms": ms(sorted.last().copied()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_use_the_nearest_rank() {
        let sorted: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        assert_eq!(percentile(&sorted, 50.0), Some(Duration::from_millis(50)));
        assert_eq!(percentile(&sorted, 99.0), Some(Duration::from_millis(99)));
        assert_eq!(
            percentile(&sorted[..1], 99.0),
            Some(Duration::from_millis(1))
        );
        assert_eq!(percentile(&[], 50.0), None);
    }
}
