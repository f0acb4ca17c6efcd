//! One chaos run, start to verdict: start the cluster and the clients, let
//! the nemesis inject faults, heal everything, read every key from every
//! node, then check and report.

use crate::common::binary::profile_dir;
use crate::common::cluster::{Cluster, READY_TIMEOUT};
use crate::common::rng::Rng;
use crate::common::say;
use crate::faults::{FaultKind, Nemesis, Pacing};
use crate::firewall::{self, Firewall};
use crate::report;
use crate::verify;
use crate::workload::{self, ClientLog, SentinelLog, Shared};
use std::fs::{self, File};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

#[derive(Clone, Debug)]
pub struct Config {
    pub label: String,
    pub seed: u64,
    pub nodes: usize,
    pub clients: usize,
    pub keys: usize,
    /// How long the nemesis injects faults.
    pub fault_time: Duration,
    pub pacing: Pacing,
    pub kinds: Vec<FaultKind>,
}

/// Healthy time before the first fault, to measure the healthy rate.
const WARMUP: Duration = Duration::from_secs(5);
/// Clients keep going this long after everything is healed.
const COOLDOWN: Duration = Duration::from_secs(3);
/// After healing, a write must succeed within this bound.
pub const WRITE_AFTER_HEAL_BOUND: Duration = Duration::from_secs(30);

/// The node flags of a chaos cluster: a request gives up (504) before the
/// client does, and snapshots are frequent enough that lagging nodes catch
/// up from one.
const NODE_FLAGS: &[&str] = &["--request-timeout-ms", "2000", "--snapshot-entries", "2000"];

/// Only one chaos run at a time on this machine: the iptables chain is
/// global.
fn machine_lock() -> File {
    let file = File::create(std::env::temp_dir().join("kvchaos.lock")).expect("lock file");
    file.lock().expect("lock kvchaos.lock");
    file
}

pub fn run(config: &Config) {
    if let Some(reason) = firewall::unavailable_reason() {
        say(&format!(
            "SKIPPED: chaos test '{}' needs iptables as root to cut links: {reason}",
            config.label
        ));
        return;
    }
    let _lock = machine_lock();
    let out_dir = profile_dir()
        .parent()
        .map(|target| target.join("chaos"))
        .unwrap_or_else(|| PathBuf::from("chaos"))
        .join(format!("{}-seed-{}", config.label, config.seed));
    let _ = fs::remove_dir_all(&out_dir);
    fs::create_dir_all(&out_dir).expect("create the chaos output dir");
    say(&format!(
        "chaos '{}': seed {}, {} nodes, {} clients, {} keys, {:?} of faults; output in {}",
        config.label,
        config.seed,
        config.nodes,
        config.clients,
        config.keys,
        config.fault_time,
        out_dir.display()
    ));

    let mut rng = Rng::new(config.seed);
    let mut cluster =
        Cluster::start_with(&format!("chaos-{}", config.label), config.nodes, NODE_FLAGS);
    let mut firewall = Firewall::install(cluster.port).unwrap_or_else(|e| panic!("{e}"));
    let epoch = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    let _stop_clients_on_panic = StopOnDrop(stop.clone());
    let shared = Arc::new(Shared {
        addrs: cluster.addrs(),
        keys: (0..config.keys).map(|k| format!("k{k}")).collect(),
        epoch,
        stop: stop.clone(),
        hard_deadline: epoch + config.fault_time * 2 + Duration::from_secs(600),
        run_tag: format!("s{}", config.seed),
        read_consistency: std::env::var("KVCHAOS_READS").unwrap_or("linearizable".into()),
    });
    let clients: Vec<thread::JoinHandle<ClientLog>> = (0..config.clients as u64)
        .map(|id| {
            let (shared, rng) = (shared.clone(), rng.fork());
            thread::spawn(move || workload::run_client(id, &shared, rng))
        })
        .collect();
    let sentinel: thread::JoinHandle<SentinelLog> = {
        let (shared, rng) = (shared.clone(), rng.fork());
        thread::spawn(move || workload::run_sentinel(&shared, rng))
    };

    thread::sleep(WARMUP);
    let (timeline, healed_ns) = {
        let mut nemesis = Nemesis {
            cluster: &mut cluster,
            firewall: &mut firewall,
            rng: rng.fork(),
            epoch,
        };
        let timeline = nemesis.run(
            &config.kinds,
            Instant::now() + config.fault_time,
            config.pacing,
        );
        nemesis.heal_all();
        (timeline, shared.now_ns())
    };
    let mut failures = Vec::new();
    if cluster.try_wait_ready(READY_TIMEOUT).is_none() {
        failures.push(format!(
            "the cluster was not ready within {READY_TIMEOUT:?} of healing"
        ));
    }
    let write_after_heal = verify::time_to_first_write(&cluster, WRITE_AFTER_HEAL_BOUND);
    match write_after_heal {
        Some(took) => say(&format!(
            "first write after healing succeeded after {took:?}"
        )),
        None => failures.push(format!(
            "no write succeeded within {WRITE_AFTER_HEAL_BOUND:?} of healing"
        )),
    }
    thread::sleep(COOLDOWN);
    stop.store(true, Ordering::Relaxed);
    let end_ns = shared.now_ns();
    let mut logs: Vec<ClientLog> = clients
        .into_iter()
        .map(|c| c.join().expect("client"))
        .collect();
    let sentinel = sentinel.join().expect("sentinel");

    let final_reads = verify::read_every_key_from_every_node(&cluster, &shared);
    failures.extend(final_reads.problems.iter().cloned());
    let mut history: Vec<_> = logs.iter_mut().flat_map(|l| l.history.drain(..)).collect();
    history.extend(final_reads.history);
    failures.extend(logs.iter().flat_map(|l| l.anomalies.iter().cloned()));
    failures.extend(verify::converged(&cluster, &shared.keys, &sentinel));

    let checked = Instant::now();
    let verdict = sim::linearizability::check(&history);
    say(&format!(
        "linearizability: {} ({} operations, checked in {:?})",
        verdict_line(&verdict),
        history.len(),
        checked.elapsed()
    ));
    match &verdict {
        sim::linearizability::CheckResult::Ok { .. } => {}
        sim::linearizability::CheckResult::Unknown { .. } => {
            say(&format!("WARNING: the checker gave no verdict: {verdict}"));
        }
        _ => failures.push(format!("{verdict}")),
    }

    let mut attempts: Vec<_> = logs
        .iter()
        .flat_map(|l| l.attempts.iter().cloned())
        .collect();
    attempts.extend(sentinel.attempts.iter().cloned());
    let summary = report::summary(&timeline, &attempts, 0, end_ns);
    say(&format!(
        "acknowledged-write client: {} acked puts, {} unknown; all acked ones checked on every node\n{summary}healed at {:.2} s",
        sentinel.acked.len(),
        sentinel.unknown,
        healed_ns as f64 / 1e9
    ));
    let history_path = out_dir.join("history.json");
    verify::write_history(&history_path, config, &timeline, &history, &verdict);
    let _ = fs::write(out_dir.join("summary.txt"), &summary);
    cluster.save_logs(&out_dir);
    drop(firewall);
    drop(cluster);
    if !failures.is_empty() {
        panic!(
            "chaos run '{}' FAILED with seed {} (rerun: KVCHAOS_SEED={} cargo test --test chaos); history: {}; node logs in {}\n- {}",
            config.label,
            config.seed,
            config.seed,
            history_path.display(),
            out_dir.display(),
            failures.join("\n- ")
        );
    }
    say(&format!(
        "chaos run '{}' passed (seed {}); history: {}",
        config.label,
        config.seed,
        history_path.display()
    ));
}

/// Tells the clients to stop when dropped, also when the run panics.
struct StopOnDrop(Arc<AtomicBool>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

fn verdict_line(verdict: &sim::linearizability::CheckResult) -> String {
    let text = verdict.to_string();
    text.lines().next().unwrap_or_default().to_string()
}
