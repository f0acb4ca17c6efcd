//! The checks after healing: a write succeeds within a bound, every key is
//! read from every node (into the history), the nodes converge to one state,
//! no acknowledged write is lost; and the history file.

use crate::common::cluster::Cluster;
use crate::common::http::Client;
use crate::common::kv::{self, ClientSeq};
use crate::common::say;
use crate::faults::FaultEvent;
use crate::run::Config;
use crate::workload::{self, Interpreted, SENTINEL_PREFIX, SentinelLog, Shared};
use serde_json::json;
use sim::linearizability::{Call, CheckResult, Operation};
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::thread;
use std::time::{Duration, Instant};

/// How long the nodes get to converge once everything is healed.
const CONVERGE_BOUND: Duration = Duration::from_secs(60);

/// The time until a put through any node succeeds, retried with the same
/// `(client_id, seq)`; `None` if none did within `bound`.
pub fn time_to_first_write(cluster: &Cluster, bound: Duration) -> Option<Duration> {
    let started = Instant::now();
    let addrs = cluster.addrs();
    let mut client = Client::new();
    let seq = ClientSeq::new("after-heal-probe", 1);
    for attempt in 0usize.. {
        let addr = addrs[attempt % addrs.len()];
        let reply = kv::put(
            &mut client,
            addr,
            "probe",
            "after-heal",
            Some(&seq),
            Duration::from_secs(3),
        );
        if matches!(reply, Ok(ref r) if r.status == 200) {
            return Some(started.elapsed());
        }
        client.reset();
        if started.elapsed() >= bound {
            return None;
        }
        thread::sleep(Duration::from_millis(50));
    }
    None
}

pub struct FinalReads {
    pub history: Vec<Operation>,
    pub problems: Vec<String>,
}

/// A linearizable read of every key from every node, each retried until it
/// gets a definite answer (bounded), recorded as operations of a client of
/// its own per node.
pub fn read_every_key_from_every_node(cluster: &Cluster, shared: &Shared) -> FinalReads {
    let mut reads = FinalReads {
        history: Vec::new(),
        problems: Vec::new(),
    };
    for (node, &addr) in cluster.addrs().iter().enumerate() {
        let mut client = Client::new();
        for key in &shared.keys {
            let call = Call::get(key);
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                let invoke_ns = shared.now_ns();
                let reply = kv::get(
                    &mut client,
                    addr,
                    key,
                    "linearizable",
                    Duration::from_secs(5),
                );
                let complete_ns = shared.now_ns();
                match workload::interpret(&call, &reply) {
                    Interpreted::Done(ret) => {
                        let reader = 1_000_000 + node as u64;
                        reads.history.push(Operation::completed(
                            reader,
                            invoke_ns,
                            complete_ns,
                            call.clone(),
                            ret,
                        ));
                        break;
                    }
                    Interpreted::Anomaly(what) => {
                        reads
                            .problems
                            .push(format!("final read of {key} at node{}: {what}", node + 1));
                        break;
                    }
                    Interpreted::Failed | Interpreted::Unknown => {
                        client.reset();
                        if Instant::now() > deadline {
                            reads.problems.push(format!(
                                "final read of {key} at node{} got no answer in 30 s",
                                node + 1
                            ));
                            break;
                        }
                        thread::sleep(Duration::from_millis(100));
                    }
                }
            }
        }
    }
    reads
}

/// One node's state as stale reads show it: the workload keys and the
/// acknowledged-write client's keys. `Err` if the node did not answer.
fn local_state(
    cluster: &Cluster,
    node: usize,
    keys: &[String],
    buckets: &BTreeSet<String>,
) -> Result<BTreeMap<String, String>, String> {
    let addr = cluster.addr(node);
    let mut client = Client::new();
    let mut state = BTreeMap::new();
    for key in keys {
        let reply = kv::get(&mut client, addr, key, "stale", Duration::from_secs(5))
            .map_err(|e| format!("stale read of {key}: {e}"))?;
        match reply.status {
            200 => {
                let value = reply.json()["value"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string();
                state.insert(key.clone(), value);
            }
            404 => {}
            status => return Err(format!("stale read of {key}: {status} {}", reply.text())),
        }
    }
    for bucket in buckets {
        state.extend(kv::scan_all(addr, bucket, "stale")?);
    }
    Ok(state)
}

/// Checks, within [`CONVERGE_BOUND`], that every node holds the same state
/// and that every acknowledged sentinel write is in it. Returns problems.
pub fn converged(cluster: &Cluster, keys: &[String], sentinel: &SentinelLog) -> Vec<String> {
    let buckets: BTreeSet<String> = sentinel
        .acked
        .keys()
        .map(|k| workload::sentinel_bucket(k))
        .collect();
    let deadline = Instant::now() + CONVERGE_BOUND;
    let started = Instant::now();
    let mut last_problem;
    loop {
        let states: Vec<_> = (0..cluster.size())
            .map(|i| local_state(cluster, i, keys, &buckets))
            .collect();
        last_problem = match states.iter().position(|s| s.is_err()) {
            Some(i) => format!(
                "node{} did not answer: {:?}",
                i + 1,
                states[i].as_ref().err()
            ),
            None => {
                let states: Vec<BTreeMap<String, String>> =
                    states.into_iter().map(|s| s.unwrap()).collect();
                match (1..states.len()).find(|&i| states[i] != states[0]) {
                    Some(i) => difference(&states[0], &states[i], i),
                    None => {
                        say(&format!(
                            "all {} nodes converged to the same {} keys after {:?}",
                            states.len(),
                            states[0].len(),
                            started.elapsed()
                        ));
                        return lost_acknowledged_writes(&states[0], sentinel);
                    }
                }
            }
        };
        if Instant::now() > deadline {
            return vec![format!(
                "the nodes did not converge within {CONVERGE_BOUND:?}: {last_problem}"
            )];
        }
        thread::sleep(Duration::from_millis(500));
    }
}

fn difference(a: &BTreeMap<String, String>, b: &BTreeMap<String, String>, other: usize) -> String {
    let all: BTreeSet<&String> = a.keys().chain(b.keys()).collect();
    let differing: Vec<String> = all
        .into_iter()
        .filter(|k| a.get(*k) != b.get(*k))
        .take(5)
        .map(|k| {
            format!(
                "{k}: node1 {:?} vs node{} {:?}",
                a.get(k),
                other + 1,
                b.get(k)
            )
        })
        .collect();
    format!("states differ, e.g. {}", differing.join("; "))
}

fn lost_acknowledged_writes(
    state: &BTreeMap<String, String>,
    sentinel: &SentinelLog,
) -> Vec<String> {
    let lost: Vec<String> = sentinel
        .acked
        .iter()
        .filter(|(key, value)| state.get(*key) != Some(*value))
        .map(|(key, value)| format!("{key}={value} (found {:?})", state.get(key)))
        .collect();
    if lost.is_empty() {
        return Vec::new();
    }
    vec![format!(
        "{} acknowledged writes lost, e.g. {}",
        lost.len(),
        lost[..lost.len().min(10)].join(", ")
    )]
}

/// Writes the run's history and timeline as JSON.
pub fn write_history(
    path: &Path,
    config: &Config,
    timeline: &[FaultEvent],
    history: &[Operation],
    verdict: &CheckResult,
) {
    let timeline: Vec<_> = timeline
        .iter()
        .map(|e| {
            json!({"kind": e.kind.name(), "start_ns": e.start_ns, "healed_ns": e.healed_ns, "detail": e.detail})
        })
        .collect();
    let document = json!({
        "label": config.label,
        "seed": config.seed,
        "nodes": config.nodes,
        "clients": config.clients,
        "keys": config.keys,
        "prefix_of_acknowledged_write_keys": SENTINEL_PREFIX,
        "verdict": verdict.to_string(),
        "timeline": timeline,
        "history": history,
    });
    let text = serde_json::to_string(&document).expect("history as JSON");
    std::fs::write(path, text).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
}
