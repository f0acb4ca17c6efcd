//! `--workload watch-fanout`: many watchers on one prefix, one paced writer.
//!
//! 1. Baseline: the writer aims at `--rate` puts/s for `--duration` with no
//!    watcher open (`--concurrency` connections to the first `--url`, each
//!    on its own schedule; a connection behind schedule sends at once, so
//!    a saturated server shows as a lower achieved rate).
//! 2. `--watchers` watches on the prefix are opened, round-robin over the
//!    `--url` list (kv-node `GET /watch?prefix=`, etcd `POST /v3/watch`
//!    through the gRPC gateway), and the writer runs again.
//! 3. Each value is the time the put was sent, in µs since the start of
//!    this process; a watcher records now - that for each event: the
//!    delivery latency from write sent to event received, which includes
//!    the write's own commit (its latency is reported next to it).
//!
//! Reported: achieved write rate and write latency of both phases, the
//! share of throughput lost with watchers, delivery latency percentiles,
//! events delivered against events expected, and watch streams that ended
//! (kv-node cuts a consumer that falls too far behind).

use super::{Args, Target, base64_encode, clock_ticks_per_second, process_sample, transport_class};
use anyhow::{Context, Result};
use hdrhistogram::Histogram;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::time::{Duration, Instant};

const PREFIX: &str = "fan/";
/// Distinct keys the writer cycles through.
const KEYS: u64 = 1000;

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("bounds")
}

/// Microseconds since `epoch`.
fn micros_since(epoch: Instant) -> u64 {
    epoch.elapsed().as_micros() as u64
}

struct WritePhase {
    ok: u64,
    errors: u64,
    seconds: f64,
    latency_micros: Histogram<u64>,
    /// CPU seconds of the `--pid` servers, and of this process, in the phase.
    server_cpu_seconds: f64,
    bench_cpu_seconds: f64,
}

/// CPU ticks (utime + stime) of each process, in `pids` order.
fn cpu_ticks(pids: &[u32]) -> Vec<u64> {
    pids.iter()
        .map(|&p| process_sample(p).map_or(0, |(ticks, _)| ticks))
        .collect()
}

impl WritePhase {
    fn rate(&self) -> f64 {
        self.ok as f64 / self.seconds
    }
}

/// The paced writer: `args.concurrency` tasks, task `w` sends write
/// `j * concurrency + w` at `start + that / rate`.
async fn write_phase(args: &Args, client: &reqwest::Client, epoch: Instant) -> WritePhase {
    let base = args.url[0].trim_end_matches('/').to_owned();
    let own = [std::process::id()];
    let (servers_before, own_before) = (cpu_ticks(&args.pid), cpu_ticks(&own));
    let start = Instant::now();
    let end = start + args.duration;
    let connections = args.concurrency as u64;
    let tasks: Vec<_> = (0..connections)
        .map(|w| {
            let (client, base, target, rate) =
                (client.clone(), base.clone(), args.target, args.rate);
            tokio::spawn(async move {
                let mut latency = histogram();
                let (mut ok, mut errors) = (0u64, 0u64);
                for j in 0u64.. {
                    let index = j * connections + w;
                    let due = start + Duration::from_secs_f64(index as f64 / rate as f64);
                    if due >= end || Instant::now() >= end {
                        break;
                    }
                    tokio::time::sleep_until(due.into()).await;
                    let sent = Instant::now();
                    let stamp = micros_since(epoch).to_string();
                    let request = put(&client, &base, target, index % KEYS, &stamp);
                    match request.send().await.map_err(transport_class) {
                        Ok(response) if response.status().is_success() => {
                            let _ = response.bytes().await;
                            latency.saturating_record((sent.elapsed().as_micros() as u64).max(1));
                            ok += 1;
                        }
                        _ => errors += 1,
                    }
                }
                (ok, errors, latency)
            })
        })
        .collect();
    let mut phase = WritePhase {
        ok: 0,
        errors: 0,
        seconds: 0.0,
        latency_micros: histogram(),
        server_cpu_seconds: 0.0,
        bench_cpu_seconds: 0.0,
    };
    for task in tasks {
        if let Ok((ok, errors, latency)) = task.await {
            phase.ok += ok;
            phase.errors += errors;
            phase.latency_micros.add(&latency).expect("same bounds");
        }
    }
    phase.seconds = start
        .elapsed()
        .as_secs_f64()
        .max(args.duration.as_secs_f64());
    let ticks = clock_ticks_per_second() as f64;
    let used = |before: Vec<u64>, after: Vec<u64>| {
        before
            .iter()
            .zip(after)
            .map(|(b, a)| a.saturating_sub(*b))
            .sum::<u64>() as f64
            / ticks
    };
    phase.server_cpu_seconds = used(servers_before, cpu_ticks(&args.pid));
    phase.bench_cpu_seconds = used(own_before, cpu_ticks(&own));
    phase
}

fn put(
    client: &reqwest::Client,
    base: &str,
    target: Target,
    key: u64,
    stamp: &str,
) -> reqwest::RequestBuilder {
    let key = format!("{PREFIX}{key:04}");
    match target {
        Target::Kv => client
            .put(format!("{base}/kv/{key}"))
            .header("content-type", "application/json")
            .body(format!(r#"{{"value":"{stamp}"}}"#)),
        Target::Etcd => client.post(format!("{base}/v3/kv/put")).body(format!(
            r#"{{"key":"{}","value":"{}"}}"#,
            base64_encode(key.as_bytes()),
            base64_encode(stamp.as_bytes())
        )),
    }
}

/// What the watchers saw, shared between them.
#[derive(Default)]
struct Delivery {
    ready: AtomicUsize,
    failed_to_open: AtomicUsize,
    /// Streams that ended or broke before the run did.
    ended: AtomicUsize,
    events: AtomicU64,
    /// Stamps below this are of writes before the measured phase (a watch
    /// opened on a follower that was behind may replay a few): not counted.
    phase_start_micros: AtomicU64,
}

fn watch_request(client: &reqwest::Client, base: &str, target: Target) -> reqwest::RequestBuilder {
    match target {
        Target::Kv => client.get(format!("{base}/watch?prefix=fan%2F")),
        // range_end "fan0": every key starting with "fan/" ('0' follows '/').
        Target::Etcd => client.post(format!("{base}/v3/watch")).body(format!(
            r#"{{"create_request":{{"key":"{}","range_end":"{}"}}}}"#,
            base64_encode(PREFIX.as_bytes()),
            base64_encode(b"fan0")
        )),
    }
}

/// Every `"value":"..."` in one line (a kv-node event, or an etcd watch
/// response with several events), decoded to the stamp it carries.
#[cfg(test)]
fn stamps(line: &[u8], target: Target) -> Vec<u64> {
    let mut found = Vec::new();
    for_each_stamp(line, target, |stamp| found.push(stamp));
    found
}

/// Calls `f` with the stamp of every `"value":"..."` in `lines` (kv-node's
/// values are parsed in place, without an allocation).
fn for_each_stamp(lines: &[u8], target: Target, mut f: impl FnMut(u64)) {
    const FIELD: &[u8] = b"\"value\":\"";
    let mut rest = lines;
    while let Some(at) = rest.windows(FIELD.len()).position(|w| w == FIELD) {
        rest = &rest[at + FIELD.len()..];
        let Some(end) = rest.iter().position(|&b| b == b'"') else {
            break;
        };
        let stamp = match target {
            Target::Kv => digits(&rest[..end]),
            Target::Etcd => digits(&base64_decode(&rest[..end])),
        };
        if let Some(stamp) = stamp {
            f(stamp);
        }
        rest = &rest[end..];
    }
}

/// A decimal number, or None.
fn digits(text: &[u8]) -> Option<u64> {
    if text.is_empty() || text.len() > 19 {
        return None;
    }
    text.iter().try_fold(0u64, |n, &b| {
        b.is_ascii_digit().then(|| n * 10 + u64::from(b - b'0'))
    })
}

fn base64_decode(text: &[u8]) -> Vec<u8> {
    let value = |c: u8| match c {
        b'A'..=b'Z' => Some(c - b'A'),
        b'a'..=b'z' => Some(c - b'a' + 26),
        b'0'..=b'9' => Some(c - b'0' + 52),
        b'+' | b'-' => Some(62),
        b'/' | b'_' => Some(63),
        _ => None,
    };
    let sextets: Vec<u8> = text.iter().filter_map(|&c| value(c)).collect();
    let mut out = Vec::with_capacity(sextets.len() * 3 / 4);
    for chunk in sextets.chunks(4) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, &s)| n | u32::from(s) << (18 - 6 * i));
        for i in 0..chunk.len().saturating_sub(1) {
            out.push((n >> (16 - 8 * i)) as u8);
        }
    }
    out
}

/// One watcher: opens its stream, then records the delivery latency of
/// every event until `stop` is set or the stream ends.
async fn watcher(
    request: reqwest::RequestBuilder,
    target: Target,
    epoch: Instant,
    delivery: Arc<Delivery>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> Histogram<u64> {
    let mut latency = histogram();
    let mut response = match request.send().await {
        Ok(response) if response.status().is_success() => response,
        _ => {
            delivery.failed_to_open.fetch_add(1, Relaxed);
            return latency;
        }
    };
    delivery.ready.fetch_add(1, Relaxed);
    // The end of the last chunk after its last newline: a line cut in two.
    let mut partial: Vec<u8> = Vec::new();
    loop {
        let chunk = tokio::select! {
            _ = stop.changed() => return latency,
            chunk = response.chunk() => chunk,
        };
        let Ok(Some(chunk)) = chunk else {
            delivery.ended.fetch_add(1, Relaxed);
            return latency;
        };
        // The whole chunk at once: one clock read, one count update, and
        // the lines read where they are (no copy unless one is cut).
        let Some(last_newline) = chunk.iter().rposition(|&b| b == b'\n') else {
            partial.extend_from_slice(&chunk);
            continue;
        };
        let now = micros_since(epoch);
        let phase_start = delivery.phase_start_micros.load(Relaxed);
        let mut events = 0;
        let mut record = |stamp: u64| {
            if stamp >= phase_start {
                latency.saturating_record(now.saturating_sub(stamp).max(1));
                events += 1;
            }
        };
        if partial.is_empty() {
            for_each_stamp(&chunk[..=last_newline], target, &mut record);
        } else {
            // Stamps never hold a newline, so the cut line is found whole
            // once its end is added.
            let first_newline = chunk.iter().position(|&b| b == b'\n').expect("one newline");
            partial.extend_from_slice(&chunk[..=first_newline]);
            for_each_stamp(&partial, target, &mut record);
            partial.clear();
            for_each_stamp(
                &chunk[first_newline + 1..=last_newline],
                target,
                &mut record,
            );
        }
        partial.extend_from_slice(&chunk[last_newline + 1..]);
        delivery.events.fetch_add(events, Relaxed);
    }
}

pub async fn run(args: &Args) -> Result<()> {
    let epoch = Instant::now();
    let writer = reqwest::Client::builder()
        .no_proxy()
        .pool_max_idle_per_host(args.concurrency)
        .timeout(args.request_timeout)
        .connect_timeout(Duration::from_secs(2))
        .tcp_nodelay(true)
        .build()
        .context("HTTP client")?;
    // No overall timeout: a watch stream is meant to stay open.
    let watch_client = reqwest::Client::builder()
        .no_proxy()
        .connect_timeout(Duration::from_secs(5))
        .tcp_nodelay(true)
        .build()
        .context("HTTP client")?;
    eprintln!("warmup {:?}, then baseline without watchers", args.warmup);
    let warmup = Args {
        duration: args.warmup,
        ..args.clone()
    };
    write_phase(&warmup, &writer, epoch).await;
    let baseline = write_phase(args, &writer, epoch).await;
    eprintln!(
        "baseline: {:.0} writes/s; opening {} watchers",
        baseline.rate(),
        args.watchers
    );

    // The watchers on a runtime of their own: the writer's tasks do not
    // queue behind a thousand streams' reads.
    let watch_runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.watch_threads.max(1))
        .thread_name("bench-watchers")
        .enable_all()
        .build()
        .context("watchers' tokio runtime")?;
    let delivery = Arc::new(Delivery::default());
    delivery.phase_start_micros.store(u64::MAX, Relaxed);
    let (stop_sender, stop) = tokio::sync::watch::channel(false);
    let watchers: Vec<_> = (0..args.watchers)
        .map(|i| {
            let base = args.url[i % args.url.len()].trim_end_matches('/');
            let request = watch_request(&watch_client, base, args.target);
            watch_runtime.spawn(watcher(
                request,
                args.target,
                epoch,
                delivery.clone(),
                stop.clone(),
            ))
        })
        .collect();
    let opening = Instant::now();
    while delivery.ready.load(Relaxed) + delivery.failed_to_open.load(Relaxed) < args.watchers
        && opening.elapsed() < Duration::from_secs(60)
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let ready = delivery.ready.load(Relaxed);
    eprintln!(
        "{ready} watchers open after {:.1?}; writing again",
        opening.elapsed()
    );
    delivery
        .phase_start_micros
        .store(micros_since(epoch), Relaxed);
    let before = delivery.events.load(Relaxed);
    let loaded = write_phase(args, &writer, epoch).await;
    // Let the last events arrive: until the count stops moving for 1 s, at most 30 s.
    let expected = loaded.ok * ready as u64;
    let draining = Instant::now();
    let mut last = delivery.events.load(Relaxed);
    while draining.elapsed() < Duration::from_secs(30) && last - before < expected {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let now = delivery.events.load(Relaxed);
        if now == last {
            break;
        }
        last = now;
    }
    let _ = stop_sender.send(true);
    let mut latency = histogram();
    for w in watchers {
        if let Ok(h) = w.await {
            latency.add(&h).expect("same bounds");
        }
    }
    watch_runtime.shutdown_background();
    report(
        args, &baseline, &loaded, &delivery, ready, expected, &latency,
    );
    Ok(())
}

fn report(
    args: &Args,
    baseline: &WritePhase,
    loaded: &WritePhase,
    delivery: &Delivery,
    ready: usize,
    expected: u64,
    latency: &Histogram<u64>,
) {
    let ms = |h: &Histogram<u64>, q: f64| h.value_at_quantile(q) as f64 / 1000.0;
    let lost_percent = (1.0 - loaded.rate() / baseline.rate()) * 100.0;
    let delivered = delivery.events.load(Relaxed);
    println!(
        "target {:?}  workload watch-fanout  watchers {ready}/{}  rate target {}/s  writer connections {}  measured {:.1}s per phase",
        args.target,
        args.watchers,
        args.rate,
        args.concurrency,
        args.duration.as_secs_f64()
    );
    for (name, phase) in [("without watchers", baseline), ("with watchers", loaded)] {
        println!(
            "writes {name}: {:.0}/s  ok {}  errors {}  latency ms p50 {:.3} p99 {:.3}  cpu s: servers {:.2} bench {:.2}",
            phase.rate(),
            phase.ok,
            phase.errors,
            ms(&phase.latency_micros, 0.5),
            ms(&phase.latency_micros, 0.99),
            phase.server_cpu_seconds,
            phase.bench_cpu_seconds
        );
    }
    println!("write throughput lost with watchers: {lost_percent:.1}%");
    println!(
        "delivery (write sent -> event received) ms: p50 {:.3}  p99 {:.3}  max {:.3}; events {delivered} of {expected} expected; streams ended early {}, failed to open {}",
        ms(latency, 0.5),
        ms(latency, 0.99),
        latency.max() as f64 / 1000.0,
        delivery.ended.load(Relaxed),
        delivery.failed_to_open.load(Relaxed)
    );
    if args.json {
        let line = serde_json::json!({
            "target": format!("{:?}", args.target).to_lowercase(),
            "workload": "watch-fanout",
            "watchers": args.watchers,
            "watchers_open": ready,
            "rate_target": args.rate,
            "concurrency": args.concurrency,
            "baseline_writes_per_second": baseline.rate(),
            "loaded_writes_per_second": loaded.rate(),
            "baseline_write_p50_ms": ms(&baseline.latency_micros, 0.5),
            "loaded_write_p50_ms": ms(&loaded.latency_micros, 0.5),
            "throughput_lost_percent": lost_percent,
            "delivery_p50_ms": ms(latency, 0.5),
            "delivery_p99_ms": ms(latency, 0.99),
            "delivery_max_ms": latency.max() as f64 / 1000.0,
            "events": delivered,
            "events_expected": expected,
            "streams_ended": delivery.ended.load(Relaxed),
            "baseline_server_cpu_seconds": baseline.server_cpu_seconds,
            "loaded_server_cpu_seconds": loaded.server_cpu_seconds,
            "baseline_bench_cpu_seconds": baseline.bench_cpu_seconds,
            "loaded_bench_cpu_seconds": loaded.bench_cpu_seconds,
            "loaded_write_p99_ms": ms(&loaded.latency_micros, 0.99),
            "baseline_write_p99_ms": ms(&baseline.latency_micros, 0.99),
        });
        println!("{line}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamps_come_out_of_both_wire_formats() {
        let kv = br#"{"revision":9,"type":"put","key":"fan/0001","value":"12345"}"#;
        assert_eq!(stamps(kv, Target::Kv), vec![12345]);
        let etcd = format!(
            r#"{{"result":{{"events":[{{"kv":{{"key":"x","value":"{}"}}}},{{"kv":{{"value":"{}"}}}}]}}}}"#,
            base64_encode(b"77"),
            base64_encode(b"123456")
        );
        assert_eq!(stamps(etcd.as_bytes(), Target::Etcd), vec![77, 123456]);
        assert_eq!(base64_decode(base64_encode(b"abcd").as_bytes()), b"abcd");
    }
}
