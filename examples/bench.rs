//! Load generator for kv-node, and for etcd 3.4's JSON gateway, so that both
//! systems are measured by the same tool in the same way.
//!
//! Run (against a local cluster, load to one node):
//!
//! ```text
//! cargo run --release --example bench -- --url http://127.0.0.1:8080 \
//!     --concurrency 64 --duration 15s --workload put
//! cargo run --release --example bench -- --url http://127.0.0.1:8080 \
//!     --concurrency 16 --duration 15s --workload get --consistency linearizable
//! cargo run --release --example bench -- --target etcd --url http://127.0.0.1:2379 \
//!     --concurrency 16 --duration 15s --workload put
//! cargo run --release --example bench -- --concurrency 64 --workload txn
//! cargo run --release --example bench -- --workload watch-fanout --watchers 1000 \
//!     --rate 5000 --concurrency 64 --url LEADER,FOLLOWER1,FOLLOWER2
//! ```
//!
//! What it does:
//! 1. For `get` and `mixed` it first writes every key of the key space once
//!    (`--preload N` overrides the count; `--preload 0` skips it).
//! 2. `--concurrency` workers share one HTTP/1.1 keep-alive pool sized to the
//!    concurrency; each sends one request at a time, on a random 16-byte key
//!    drawn from the key space, with a 100-byte value for writes.
//! 3. After `--warmup` (not measured) it measures for `--duration`, printing
//!    a progress line each second to stderr, then ops/s, latency percentiles
//!    from an HDR histogram, and errors by class to stdout (`--json` adds one
//!    JSON line for scripts).
//! 4. With `--pid P` (repeatable) it also reports each process's CPU time
//!    (utime + stime from /proc/P/stat) across the measured window, CPU per
//!    1,000 ops, and VmRSS at the end.
//!
//! Every run is bounded: by `--duration` (plus warmup) and, optionally, by
//! `--max-ops`. Point it only at servers on this machine.
//!
//! `bench/run-all.sh` starts local 3-node clusters of kv-node and etcd
//! (`bench/kv-cluster.sh`, `bench/etcd-cluster.sh`), runs the whole matrix
//! and `bench/table.py` turns its JSON lines into the tables of
//! `bench/RESULTS.md`.

use anyhow::{Context, Result, bail};
use clap::{Parser, ValueEnum};
use hdrhistogram::Histogram;
use rand_chacha::ChaCha8Rng;
use rand_chacha::rand_core::{Rng, SeedableRng};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Workload {
    Put,
    Get,
    Mixed,
    /// A transaction of 2 comparisons (each key's revision below 2^50, so
    /// they hold) and 2 puts on two neighbouring keys: kv-node's
    /// `POST /txn`, etcd's `/v3/kv/txn`.
    Txn,
    /// `--watchers` watches on one prefix while a writer aims at `--rate`
    /// puts/s: delivery latency (write sent -> event received) and the
    /// write rate achieved with the watchers against without them
    /// (`bench_support/watch_fanout.rs`).
    WatchFanout,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Consistency {
    Linearizable,
    Lease,
    Stale,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Target {
    /// kv-node's HTTP API (API.md).
    Kv,
    /// etcd 3.4's JSON gateway (/v3/kv/put, /v3/kv/range).
    Etcd,
}

/// A load generator for kv-node (and etcd, for comparison).
#[derive(Clone, Debug, Parser)]
#[command(name = "bench")]
struct Args {
    /// Base URL of the node to load; a comma-separated list spreads workers
    /// over the nodes round-robin.
    #[arg(long, default_value = "http://127.0.0.1:8080", value_delimiter = ',')]
    url: Vec<String>,
    /// Concurrent requests in flight (one keep-alive connection each).
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
    /// Measured time, e.g. 15s, 500ms, 1m. 0s: only preload.
    #[arg(long, default_value = "15s", value_parser = parse_duration)]
    duration: Duration,
    /// Unmeasured time before the measurement (connections, leader caches).
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    warmup: Duration,
    #[arg(long, value_enum, default_value_t = Workload::Put)]
    workload: Workload,
    /// Share of reads in the mixed workload, in percent.
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u8).range(0..=100))]
    read_percent: u8,
    /// Read consistency; without it the server's default is used
    /// (linearizable for both kv-node and etcd). etcd has no lease reads.
    #[arg(long, value_enum)]
    consistency: Option<Consistency>,
    #[arg(long, value_enum, default_value_t = Target::Kv)]
    target: Target,
    /// Number of distinct keys.
    #[arg(long, default_value_t = 100_000)]
    keyspace: u64,
    /// Bytes per written value.
    #[arg(long, default_value_t = 100)]
    value_bytes: usize,
    /// Keys to write before measuring [default: the key space for get and
    /// mixed, 0 for put].
    #[arg(long)]
    preload: Option<u64>,
    /// Concurrency of the preload phase.
    #[arg(long, default_value_t = 64)]
    preload_concurrency: usize,
    /// Keys per preload request: above 1, kv-node gets `POST /kv/mput`
    /// and etcd one transaction of puts (etcd refuses more than 128 by
    /// default). For loading millions of keys before a run.
    #[arg(long, default_value_t = 1)]
    preload_batch: u64,
    /// Stop after this many requests in total (warmup included).
    #[arg(long)]
    max_ops: Option<u64>,
    /// Per-request timeout; a request over it counts as a "client timeout".
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    request_timeout: Duration,
    /// Seed of the key choice; each worker derives its own generator.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Server processes to report CPU and RSS for (repeatable).
    #[arg(long)]
    pid: Vec<u32>,
    /// Also print the result as one JSON line.
    #[arg(long)]
    json: bool,
    /// Tokio worker threads of the load generator.
    #[arg(long, default_value_t = 2)]
    threads: usize,
    /// The progress line counts, each second, the measured successes that
    /// took longer than this (to tell a burst of slow requests, such as a
    /// snapshot or a stalled fsync, from a tail spread over the run).
    #[arg(long, default_value_t = 5)]
    slow_ms: u64,
    /// Also write each of those slow requests to this file, one line of
    /// `<unix seconds at its end> <ms>`, to set them beside the servers'
    /// logs.
    #[arg(long)]
    slow_log: Option<std::path::PathBuf>,
    /// watch-fanout: tokio worker threads of the watchers' own runtime (the
    /// writer runs on the --threads runtime, so that reading a thousand
    /// streams does not delay the writes it measures).
    #[arg(long, default_value_t = 2)]
    watch_threads: usize,
    /// watch-fanout: open watches on the prefix, spread over the --url list.
    #[arg(long, default_value_t = 1000)]
    watchers: usize,
    /// watch-fanout: target writes per second (the writer uses
    /// --concurrency connections to the first --url).
    #[arg(long, default_value_t = 5000)]
    rate: u64,
}

#[path = "bench_support/watch_fanout.rs"]
mod watch_fanout;

fn parse_duration(text: &str) -> Result<Duration, String> {
    let split = text.find(|c: char| !c.is_ascii_digit() && c != '.');
    let (number, unit) = text.split_at(split.unwrap_or(text.len()));
    let number: f64 = number
        .parse()
        .map_err(|_| format!("bad duration {text:?}"))?;
    let seconds = match unit {
        "ms" => number / 1000.0,
        "" | "s" => number,
        "m" => number * 60.0,
        _ => return Err(format!("bad duration unit in {text:?} (use ms, s or m)")),
    };
    Ok(Duration::from_secs_f64(seconds))
}

/// Builds requests for one target; the only place that knows its wire format.
struct Protocol {
    target: Target,
    urls: Vec<String>,
    consistency: Option<Consistency>,
    value: String,
    keyspace: u64,
}

/// A revision every key in the benchmark stays below: the txn comparisons
/// hold, and they are still evaluated.
const TXN_REVISION_BOUND: u64 = 1 << 50;

/// The 16-byte key of index `index`.
fn key_of(index: u64) -> String {
    format!("bench{index:011}")
}

impl Protocol {
    fn new(args: &Args) -> Result<Protocol> {
        if args.target == Target::Etcd && args.consistency == Some(Consistency::Lease) {
            bail!("etcd has no lease reads: use linearizable or stale");
        }
        let urls = args.url.iter().map(|u| u.trim_end_matches('/').to_owned());
        // Printable, so that it is the same 100 bytes in JSON and in base64.
        let value: String = (0..args.value_bytes)
            .map(|i| char::from(b'a' + (i % 26) as u8))
            .collect();
        let value = match args.target {
            Target::Kv => value,
            Target::Etcd => base64_encode(value.as_bytes()),
        };
        Ok(Protocol {
            target: args.target,
            urls: urls.collect(),
            consistency: args.consistency,
            value,
            keyspace: args.keyspace,
        })
    }

    fn put(&self, client: &reqwest::Client, worker: usize, key: u64) -> reqwest::RequestBuilder {
        let base = &self.urls[worker % self.urls.len()];
        let key = key_of(key);
        match self.target {
            Target::Kv => client
                .put(format!("{base}/kv/{key}"))
                .header("content-type", "application/json")
                .body(format!(r#"{{"value":"{}"}}"#, self.value)),
            Target::Etcd => client.post(format!("{base}/v3/kv/put")).body(format!(
                r#"{{"key":"{}","value":"{}"}}"#,
                base64_encode(key.as_bytes()),
                self.value
            )),
        }
    }

    /// Puts keys `keys` in one request (preload).
    fn put_many(
        &self,
        client: &reqwest::Client,
        worker: usize,
        keys: std::ops::Range<u64>,
    ) -> reqwest::RequestBuilder {
        let base = &self.urls[worker % self.urls.len()];
        match self.target {
            Target::Kv => {
                let entries: Vec<String> = keys
                    .map(|k| format!(r#"{{"key":"{}","value":"{}"}}"#, key_of(k), self.value))
                    .collect();
                client
                    .post(format!("{base}/kv/mput"))
                    .header("content-type", "application/json")
                    .body(format!(r#"{{"entries":[{}]}}"#, entries.join(",")))
            }
            Target::Etcd => {
                let puts: Vec<String> = keys
                    .map(|k| {
                        format!(
                            r#"{{"request_put":{{"key":"{}","value":"{}"}}}}"#,
                            base64_encode(key_of(k).as_bytes()),
                            self.value
                        )
                    })
                    .collect();
                client
                    .post(format!("{base}/v3/kv/txn"))
                    .body(format!(r#"{{"success":[{}]}}"#, puts.join(",")))
            }
        }
    }

    fn get(&self, client: &reqwest::Client, worker: usize, key: u64) -> reqwest::RequestBuilder {
        let base = &self.urls[worker % self.urls.len()];
        let key = key_of(key);
        match self.target {
            Target::Kv => {
                let query = match self.consistency {
                    None => String::new(),
                    Some(c) => format!("?consistency={}", consistency_name(c)),
                };
                client.get(format!("{base}/kv/{key}{query}"))
            }
            Target::Etcd => {
                // etcd's range is linearizable unless asked to be serializable.
                let serializable = self.consistency == Some(Consistency::Stale);
                client.post(format!("{base}/v3/kv/range")).body(format!(
                    r#"{{"key":"{}","serializable":{serializable}}}"#,
                    base64_encode(key.as_bytes())
                ))
            }
        }
    }

    /// A transaction on keys `key` and `key + 1`: two comparisons, two puts.
    fn txn(&self, client: &reqwest::Client, worker: usize, key: u64) -> reqwest::RequestBuilder {
        let base = &self.urls[worker % self.urls.len()];
        let keys = [key_of(key), key_of((key + 1) % self.keyspace)];
        match self.target {
            Target::Kv => {
                let compare = keys.each_ref().map(|k| {
                    format!(
                        r#"{{"key":"{k}","target":"revision","op":"<","revision":{TXN_REVISION_BOUND}}}"#
                    )
                });
                let put =
                    keys.map(|k| format!(r#"{{"put":{{"key":"{k}","value":"{}"}}}}"#, self.value));
                client
                    .post(format!("{base}/txn"))
                    .header("content-type", "application/json")
                    .body(format!(
                        r#"{{"compare":[{}],"success":[{}],"failure":[]}}"#,
                        compare.join(","),
                        put.join(",")
                    ))
            }
            Target::Etcd => {
                let keys = keys.map(|k| base64_encode(k.as_bytes()));
                let compare = keys.each_ref().map(|k| {
                    format!(
                        r#"{{"key":"{k}","result":"LESS","target":"MOD","mod_revision":"{TXN_REVISION_BOUND}"}}"#
                    )
                });
                let put = keys.map(|k| {
                    format!(
                        r#"{{"request_put":{{"key":"{k}","value":"{}"}}}}"#,
                        self.value
                    )
                });
                client.post(format!("{base}/v3/kv/txn")).body(format!(
                    r#"{{"compare":[{}],"success":[{}]}}"#,
                    compare.join(","),
                    put.join(",")
                ))
            }
        }
    }

    /// Sends a request and reads its whole body (so the connection is reused);
    /// `Ok` on success, else the error class.
    async fn send(&self, request: reqwest::RequestBuilder, op: Op) -> Result<(), String> {
        let response = request.send().await.map_err(transport_class)?;
        let status = response.status();
        let body = response.bytes().await.map_err(transport_class)?;
        if !status.is_success() {
            let code = serde_json::from_slice::<serde_json::Value>(&body)
                .ok()
                .and_then(|v| v["error"]["code"].as_str().map(str::to_owned))
                .unwrap_or_default();
            return Err(format!("{} {code}", status.as_u16()).trim_end().to_owned());
        }
        // etcd answers a range over a missing key with 200 and no "kvs".
        if op == Op::Get && self.target == Target::Etcd && !contains(&body, b"\"kvs\"") {
            return Err("200 no kvs (not found)".to_owned());
        }
        // A transaction whose comparisons failed wrote nothing.
        if op == Op::Txn && !contains(&body, b"\"succeeded\":true") {
            return Err("200 txn comparison failed".to_owned());
        }
        Ok(())
    }
}

/// What one request of the closed-loop workloads is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Op {
    Put,
    Get,
    Txn,
}

fn consistency_name(c: Consistency) -> &'static str {
    match c {
        Consistency::Linearizable => "linearizable",
        Consistency::Lease => "lease",
        Consistency::Stale => "stale",
    }
}

fn transport_class(error: reqwest::Error) -> String {
    if error.is_timeout() {
        "client timeout".to_owned()
    } else if error.is_connect() {
        "connect error".to_owned()
    } else {
        "transport error (connection closed or reset)".to_owned()
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

fn base64_encode(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, &b)| n | (b as u32) << (16 - 8 * i));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// State shared by the workers and the progress loop.
struct Shared {
    protocol: Protocol,
    client: reqwest::Client,
    /// Set after the warmup: from then on, completed requests are recorded.
    measuring: AtomicBool,
    /// Set at the end of the measured window: workers stop issuing requests.
    stop: AtomicBool,
    /// Requests issued, checked against `max_ops`.
    issued: AtomicU64,
    max_ops: u64,
    /// Measured successes and errors, and the successes' latency sum (µs),
    /// for the progress line.
    ok_count: AtomicU64,
    error_count: AtomicU64,
    latency_sum_micros: AtomicU64,
    /// Measured successes over `--slow-ms`.
    slow_count: AtomicU64,
}

/// What one worker measured.
struct WorkerReport {
    latency_micros: Histogram<u64>,
    /// (unix time at the end, µs) of each measured success over `--slow-ms`,
    /// kept only with `--slow-log`.
    slow: Vec<(f64, u64)>,
    errors: BTreeMap<String, u64>,
}

async fn worker(shared: Arc<Shared>, args: Arc<Args>, id: usize) -> WorkerReport {
    let mut rng = ChaCha8Rng::seed_from_u64(args.seed.wrapping_mul(1_000_003) + id as u64);
    let mut latency_micros = Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("bounds");
    let mut errors = BTreeMap::new();
    let mut slow = Vec::new();
    while !shared.stop.load(Relaxed) && shared.issued.fetch_add(1, Relaxed) < shared.max_ops {
        let key = rng.next_u64() % args.keyspace;
        let op = match args.workload {
            Workload::Put | Workload::WatchFanout => Op::Put,
            Workload::Get => Op::Get,
            Workload::Txn => Op::Txn,
            Workload::Mixed if rng.next_u64() % 100 < u64::from(args.read_percent) => Op::Get,
            Workload::Mixed => Op::Put,
        };
        let request = match op {
            Op::Get => shared.protocol.get(&shared.client, id, key),
            Op::Put => shared.protocol.put(&shared.client, id, key),
            Op::Txn => shared.protocol.txn(&shared.client, id, key),
        };
        let measured = shared.measuring.load(Relaxed);
        let start = Instant::now();
        let outcome = shared.protocol.send(request, op).await;
        let micros = start.elapsed().as_micros() as u64;
        // Only requests that started and ended inside the window count.
        if !measured || shared.stop.load(Relaxed) {
            continue;
        }
        match outcome {
            Ok(()) => {
                latency_micros.saturating_record(micros.max(1));
                shared.ok_count.fetch_add(1, Relaxed);
                shared.latency_sum_micros.fetch_add(micros, Relaxed);
                if micros > args.slow_ms.saturating_mul(1000) {
                    shared.slow_count.fetch_add(1, Relaxed);
                    if args.slow_log.is_some() {
                        let now = std::time::SystemTime::now()
                            .duration_since(std::time::UNIX_EPOCH)
                            .map_or(0.0, |d| d.as_secs_f64());
                        slow.push((now, micros));
                    }
                }
            }
            Err(class) => {
                *errors.entry(class).or_insert(0) += 1;
                shared.error_count.fetch_add(1, Relaxed);
            }
        }
    }
    WorkerReport {
        latency_micros,
        errors,
        slow,
    }
}

/// Writes keys `0..count` once each, `concurrency` requests at a time,
/// `batch` keys per request. A failed request counts its keys as failed.
async fn preload(
    protocol: &Protocol,
    client: &reqwest::Client,
    count: u64,
    concurrency: usize,
    batch: u64,
) {
    let batch = batch.max(1);
    let next = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let tasks: Vec<_> = (0..concurrency)
        .map(|id| {
            let (next, failed) = (next.clone(), failed.clone());
            let request = move |key: u64| match batch {
                1 => protocol.put(client, id, key),
                _ => protocol.put_many(client, id, key..(key + batch).min(count)),
            };
            async move {
                loop {
                    let key = next.fetch_add(batch, Relaxed);
                    if key >= count {
                        break;
                    }
                    if let Err(class) = protocol.send(request(key), Op::Put).await
                        && failed.fetch_add(batch.min(count - key), Relaxed) < 5 * batch
                    {
                        eprintln!("preload: key {key}: {class}");
                    }
                }
            }
        })
        .collect();
    let all = futures_join_all(tasks);
    tokio::pin!(all);
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.tick().await;
    loop {
        tokio::select! {
            () = &mut all => break,
            _ = tick.tick() => eprintln!("preload: {}/{count}", next.load(Relaxed).min(count)),
        }
    }
    eprintln!(
        "preload: wrote {count} keys in {:.1}s, {} failed",
        started.elapsed().as_secs_f64(),
        failed.load(Relaxed)
    );
}

/// Awaits all futures concurrently on the current task (no extra crate).
async fn futures_join_all<F: std::future::Future<Output = ()>>(futures: Vec<F>) {
    let mut futures: Vec<_> = futures.into_iter().map(Box::pin).collect();
    std::future::poll_fn(|cx| {
        futures.retain_mut(|f| f.as_mut().poll(cx).is_pending());
        if futures.is_empty() {
            std::task::Poll::Ready(())
        } else {
            std::task::Poll::Pending
        }
    })
    .await
}

/// CPU time (utime + stime, in clock ticks) and VmRSS (KiB) of a process.
fn process_sample(pid: u32) -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces), from field 3 on.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let rss_kib = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0);
    Some((ticks, rss_kib))
}

fn clock_ticks_per_second() -> u64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100)
}

fn main() -> Result<()> {
    let args = Args::parse();
    if args.concurrency == 0 || args.keyspace < 2 || args.url.is_empty() {
        bail!("--concurrency and --url must be non-empty, --keyspace at least 2");
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.threads.max(1))
        .enable_all()
        .build()
        .context("tokio runtime")?;
    runtime.block_on(run(Arc::new(args)))
}

async fn run(args: Arc<Args>) -> Result<()> {
    if args.workload == Workload::WatchFanout {
        return watch_fanout::run(&args).await;
    }
    let client = reqwest::Client::builder()
        .no_proxy()
        .pool_max_idle_per_host(args.concurrency.max(args.preload_concurrency))
        .timeout(args.request_timeout)
        .connect_timeout(Duration::from_secs(2))
        .tcp_nodelay(true)
        .build()
        .context("HTTP client")?;
    let protocol = Protocol::new(&args)?;
    let preload_count = args.preload.unwrap_or(match args.workload {
        Workload::Put | Workload::Txn | Workload::WatchFanout => 0,
        Workload::Get | Workload::Mixed => args.keyspace,
    });
    if preload_count > 0 {
        preload(
            &protocol,
            &client,
            preload_count,
            args.preload_concurrency,
            args.preload_batch,
        )
        .await;
    }
    if args.duration.is_zero() {
        return Ok(());
    }
    let shared = Arc::new(Shared {
        protocol,
        client,
        measuring: AtomicBool::new(args.warmup.is_zero()),
        stop: AtomicBool::new(false),
        issued: AtomicU64::new(0),
        max_ops: args.max_ops.unwrap_or(u64::MAX),
        ok_count: AtomicU64::new(0),
        error_count: AtomicU64::new(0),
        latency_sum_micros: AtomicU64::new(0),
        slow_count: AtomicU64::new(0),
    });
    let workers: Vec<_> = (0..args.concurrency)
        .map(|id| tokio::spawn(worker(shared.clone(), args.clone(), id)))
        .collect();
    tokio::time::sleep(args.warmup).await;
    shared.measuring.store(true, Relaxed);
    let window = measure(&shared, &args, &workers).await;
    shared.stop.store(true, Relaxed);
    let mut reports = Vec::new();
    for w in workers {
        reports.push(w.await.context("worker panicked")?);
    }
    report(&args, window, reports)
}

/// What the measured window saw besides the requests.
struct Window {
    elapsed: Duration,
    /// Per `--pid`: CPU seconds used in the window and VmRSS (KiB) at its end.
    processes: Vec<(u32, f64, u64)>,
    /// The load generator's own CPU seconds.
    own_cpu_seconds: f64,
}

/// Runs the measured window, printing progress each second.
async fn measure(
    shared: &Shared,
    args: &Args,
    workers: &[tokio::task::JoinHandle<WorkerReport>],
) -> Window {
    let ticks_per_second = clock_ticks_per_second() as f64;
    let before: Vec<_> = args.pid.iter().map(|&p| process_sample(p)).collect();
    let own_before = process_sample(std::process::id());
    let start = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.tick().await;
    let (mut last_ok, mut last_sum, mut last_slow) = (0, 0, 0);
    while start.elapsed() < args.duration && !workers.iter().all(|w| w.is_finished()) {
        let remaining = args.duration.saturating_sub(start.elapsed());
        tokio::select! {
            _ = tick.tick() => {}
            () = tokio::time::sleep(remaining) => break,
        }
        let (ok, sum) = (
            shared.ok_count.load(Relaxed),
            shared.latency_sum_micros.load(Relaxed),
        );
        let slow = shared.slow_count.load(Relaxed);
        let interval_ok = ok - last_ok;
        let mean_ms = (sum - last_sum) as f64 / interval_ok.max(1) as f64 / 1000.0;
        eprintln!(
            "[{:>4.0}s] {interval_ok:>7} ops/s  mean {mean_ms:>7.3} ms  over {} ms {:>5}  errors {}  total {ok}",
            start.elapsed().as_secs_f64(),
            args.slow_ms,
            slow - last_slow,
            shared.error_count.load(Relaxed),
        );
        (last_ok, last_sum, last_slow) = (ok, sum, slow);
    }
    let elapsed = start.elapsed().min(args.duration);
    let cpu = |a: Option<(u64, u64)>, b: Option<(u64, u64)>| match (a, b) {
        (Some((t0, _)), Some((t1, rss))) => ((t1 - t0) as f64 / ticks_per_second, rss),
        _ => (f64::NAN, 0),
    };
    let processes = args
        .pid
        .iter()
        .zip(before)
        .map(|(&pid, b)| {
            let (cpu_seconds, rss) = cpu(b, process_sample(pid));
            (pid, cpu_seconds, rss)
        })
        .collect();
    let own_cpu_seconds = cpu(own_before, process_sample(std::process::id())).0;
    Window {
        elapsed,
        processes,
        own_cpu_seconds,
    }
}

fn report(args: &Args, window: Window, reports: Vec<WorkerReport>) -> Result<()> {
    let mut latency = Histogram::<u64>::new_with_bounds(1, 3_600_000_000, 3)?;
    let mut errors = BTreeMap::<String, u64>::new();
    let mut slow = Vec::new();
    for r in reports {
        latency.add(&r.latency_micros)?;
        slow.extend(r.slow);
        for (class, n) in r.errors {
            *errors.entry(class).or_insert(0) += n;
        }
    }
    if let Some(path) = &args.slow_log {
        slow.sort_by(|a, b| a.0.total_cmp(&b.0));
        let lines: String = slow
            .iter()
            .map(|(at, micros)| format!("{at:.6} {:.3}\n", *micros as f64 / 1000.0))
            .collect();
        std::fs::write(path, lines)?;
    }
    let ops = latency.len();
    let seconds = window.elapsed.as_secs_f64();
    let ops_per_second = ops as f64 / seconds;
    let ms = |q: f64| latency.value_at_quantile(q) as f64 / 1000.0;
    let consistency = args.consistency.map_or("default", consistency_name);
    println!(
        "target {:?}  workload {:?}  consistency {consistency}  concurrency {}  measured {seconds:.1}s  url {}",
        args.target,
        args.workload,
        args.concurrency,
        args.url.join(",")
    );
    println!(
        "ops {ops}  ops/s {ops_per_second:.0}  latency ms: p50 {:.3}  p99 {:.3}  p999 {:.3}  max {:.3}  mean {:.3}",
        ms(0.5),
        ms(0.99),
        ms(0.999),
        latency.max() as f64 / 1000.0,
        latency.mean() / 1000.0
    );
    let error_total: u64 = errors.values().sum();
    println!("errors {error_total}: {errors:?}");
    let per_thousand = |cpu_seconds: f64| cpu_seconds * 1000.0 * 1000.0 / ops.max(1) as f64;
    let cpu_total: f64 = window.processes.iter().map(|p| p.1).sum();
    for &(pid, cpu_seconds, rss_kib) in &window.processes {
        println!(
            "pid {pid}: cpu {cpu_seconds:.2}s ({:.1} ms per 1000 ops)  rss {:.1} MiB",
            per_thousand(cpu_seconds),
            rss_kib as f64 / 1024.0
        );
    }
    if !window.processes.is_empty() {
        println!(
            "servers: cpu {cpu_total:.2}s = {:.1} ms per 1000 ops; load generator cpu {:.2}s",
            per_thousand(cpu_total),
            window.own_cpu_seconds
        );
    }
    if args.json {
        let line = serde_json::json!({
            "target": format!("{:?}", args.target).to_lowercase(),
            "workload": format!("{:?}", args.workload).to_lowercase(),
            "consistency": consistency,
            "concurrency": args.concurrency,
            "seconds": seconds,
            "ops": ops,
            "ops_per_second": ops_per_second,
            "p50_ms": ms(0.5), "p99_ms": ms(0.99), "p999_ms": ms(0.999),
            "max_ms": latency.max() as f64 / 1000.0,
            "errors": errors,
            "server_cpu_seconds": cpu_total,
            "server_cpu_ms_per_1000_ops": per_thousand(cpu_total),
            "bench_cpu_seconds": window.own_cpu_seconds,
            "processes": window.processes.iter().map(|&(pid, cpu, rss)| {
                serde_json::json!({"pid": pid, "cpu_seconds": cpu, "rss_kib": rss})
            }).collect::<Vec<_>>(),
        });
        println!("{line}");
    }
    Ok(())
}
