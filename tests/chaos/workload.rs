//! The chaos clients: each a thread doing put / linearizable get / cas /
//! delete with its own `(client_id, seq)` over a small key set, against a
//! random node per request, and recording what it saw.
//!
//! What goes into the history (for the linearizability checker):
//! - a definite reply (200, or 404 for a get) as a completed operation;
//! - a write with an unknown outcome (504, timeout, broken connection) as an
//!   operation that may take effect at any time after its invoke, or never;
//! - nothing for a definite failure (503, connection refused): it had no
//!   effect. Reads of unknown outcome are left out too: they constrain
//!   nothing.
//!
//! Replies the API does not allow (a 409 for a seq that only grows, a 400, a
//! 500, a body that does not parse) are anomalies, and fail the run.

use crate::common::http::{Client, HttpError, Response};
use crate::common::kv::{self, ClientSeq};
use crate::common::rng::Rng;
use serde_json::Value;
use sim::linearizability::{Call, Operation, Ret};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// Longer than the nodes' `--request-timeout-ms`, so that a live node
/// answers 504 before the client gives up; a paused node never answers.
pub const CLIENT_TIMEOUT: Duration = Duration::from_secs(3);

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum OpKind {
    Get,
    Put,
    Cas,
    Delete,
}

impl OpKind {
    pub fn is_write(self) -> bool {
        self != OpKind::Get
    }

    pub fn name(self) -> &'static str {
        match self {
            OpKind::Get => "get",
            OpKind::Put => "put",
            OpKind::Cas => "cas",
            OpKind::Delete => "delete",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Ok,
    /// Certainly not applied (503, refused connection).
    Failed,
    /// May or may not have been applied.
    Unknown,
}

/// One request as the client saw it, for the statistics.
#[derive(Clone, Debug)]
pub struct Attempt {
    pub kind: OpKind,
    pub node: usize,
    pub invoke_ns: u64,
    pub complete_ns: u64,
    pub outcome: Outcome,
}

#[derive(Default)]
pub struct ClientLog {
    pub history: Vec<Operation>,
    pub attempts: Vec<Attempt>,
    pub anomalies: Vec<String>,
}

pub struct Shared {
    pub addrs: Vec<SocketAddr>,
    pub keys: Vec<String>,
    pub epoch: Instant,
    pub stop: Arc<AtomicBool>,
    /// Clients stop by this time even if never told to.
    pub hard_deadline: Instant,
    pub run_tag: String,
    /// `linearizable` normally; `stale` only to see the checker catch the
    /// stale reads (a self-check of the harness, `KVCHAOS_READS=stale`).
    pub read_consistency: String,
}

impl Shared {
    pub fn now_ns(&self) -> u64 {
        self.epoch.elapsed().as_nanos() as u64
    }
}

/// Runs one client until told to stop; returns what it saw.
pub fn run_client(id: u64, shared: &Shared, mut rng: Rng) -> ClientLog {
    let mut log = ClientLog::default();
    let mut client = Client::new();
    let client_id = format!("{}-c{id}", shared.run_tag);
    let mut seq = 0u64;
    // The value this client last saw per key, to make CAS succeed often.
    let mut seen: BTreeMap<String, Option<String>> = BTreeMap::new();
    while !shared.stop.load(Ordering::Relaxed) && Instant::now() < shared.hard_deadline {
        let node = rng.below(shared.addrs.len() as u64) as usize;
        let addr = shared.addrs[node];
        let key = rng.pick(&shared.keys).clone();
        let roll = rng.below(100);
        let kind = match roll {
            0..40 => OpKind::Get,
            40..65 => OpKind::Put,
            65..85 => OpKind::Cas,
            _ => OpKind::Delete,
        };
        let value = if kind.is_write() {
            seq += 1;
            format!("{id}.{seq}")
        } else {
            String::new()
        };
        let cseq = ClientSeq {
            client_id: client_id.clone(),
            seq,
        };
        let call = match kind {
            OpKind::Get => Call::get(&key),
            OpKind::Put => Call::put(&key, &value),
            OpKind::Delete => Call::delete(&key),
            OpKind::Cas => {
                let expected = if rng.percent(80) {
                    seen.get(&key).cloned().flatten()
                } else {
                    None
                };
                let new = (!rng.percent(15)).then(|| value.clone());
                Call::Cas {
                    key: key.clone(),
                    expected,
                    value: new,
                }
            }
        };
        let invoke_ns = shared.now_ns();
        let reply = match &call {
            Call::Get { .. } => kv::get(
                &mut client,
                addr,
                &key,
                &shared.read_consistency,
                CLIENT_TIMEOUT,
            ),
            Call::Put { value, .. } => {
                kv::put(&mut client, addr, &key, value, Some(&cseq), CLIENT_TIMEOUT)
            }
            Call::Delete { .. } => kv::delete(&mut client, addr, &key, Some(&cseq), CLIENT_TIMEOUT),
            Call::Cas {
                expected, value, ..
            } => kv::cas(
                &mut client,
                addr,
                &key,
                expected.as_deref(),
                value.as_deref(),
                Some(&cseq),
                CLIENT_TIMEOUT,
            ),
            Call::MultiPut { .. } | Call::Txn { .. } => unreachable!("not generated"),
        };
        let complete_ns = shared.now_ns().max(invoke_ns);
        let outcome = match interpret(&call, &reply) {
            Interpreted::Done(ret) => {
                if let Some(observed) = observed_value(&ret) {
                    seen.insert(key.clone(), observed);
                }
                log.history
                    .push(Operation::completed(id, invoke_ns, complete_ns, call, ret));
                Outcome::Ok
            }
            Interpreted::Failed => Outcome::Failed,
            Interpreted::Unknown => {
                if kind.is_write() {
                    log.history.push(Operation::unknown(id, invoke_ns, call));
                }
                Outcome::Unknown
            }
            Interpreted::Anomaly(what) => {
                log.anomalies.push(format!(
                    "client {client_id} seq {seq} {} {key} at node{}: {what}",
                    kind.name(),
                    node + 1
                ));
                // Whatever it was, it may have been applied.
                if kind.is_write() {
                    log.history.push(Operation::unknown(id, invoke_ns, call));
                }
                Outcome::Unknown
            }
        };
        if outcome != Outcome::Ok {
            client.reset();
        }
        log.attempts.push(Attempt {
            kind,
            node,
            invoke_ns,
            complete_ns,
            outcome,
        });
        if outcome == Outcome::Failed {
            // No leader or the node is down: do not spin.
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    log
}

/// The key's value after the operation, if the reply tells it.
fn observed_value(ret: &Ret) -> Option<Option<String>> {
    match ret {
        Ret::Get { value } => Some(value.clone()),
        Ret::Cas { current, .. } => Some(current.clone()),
        _ => None,
    }
}

pub enum Interpreted {
    Done(Ret),
    Failed,
    Unknown,
    Anomaly(String),
}

/// Maps a reply to what the checker must know.
pub fn interpret(call: &Call, reply: &Result<Response, HttpError>) -> Interpreted {
    let response = match reply {
        Ok(response) => response,
        Err(HttpError::NotSent(_)) => return Interpreted::Failed,
        Err(_) => return Interpreted::Unknown,
    };
    let json = response.json();
    match (response.status, call) {
        (200, _) => match parse_ok(call, &json) {
            Some(ret) => Interpreted::Done(ret),
            None => Interpreted::Anomaly(format!("unparsable 200 reply {}", response.text())),
        },
        (404, Call::Get { .. }) if response.error_code() == "not_found" => {
            Interpreted::Done(Ret::Get { value: None })
        }
        (503, _) => Interpreted::Failed,
        (504, _) => Interpreted::Unknown,
        (status, _) => Interpreted::Anomaly(format!("reply {status} {}", response.text())),
    }
}

fn optional_string(value: &Value) -> Option<Option<String>> {
    match value {
        Value::Null => Some(None),
        Value::String(s) => Some(Some(s.clone())),
        _ => None,
    }
}

fn parse_ok(call: &Call, json: &Value) -> Option<Ret> {
    Some(match call {
        Call::Get { .. } => Ret::Get {
            value: Some(json["value"].as_str()?.to_string()),
        },
        Call::Put { .. } => Ret::Put {
            prev: optional_string(&json["prev"])?,
        },
        Call::Delete { .. } => Ret::Delete {
            prev: optional_string(&json["prev"])?,
        },
        Call::Cas { .. } => Ret::Cas {
            succeeded: json["succeeded"].as_bool()?,
            current: optional_string(&json["current"])?,
        },
        Call::MultiPut { .. } | Call::Txn { .. } => return None,
    })
}

/// What the acknowledged-writes client saw.
#[derive(Default)]
pub struct SentinelLog {
    /// Keys whose put was acknowledged, with their values: every one must
    /// be on every node at the end.
    pub acked: BTreeMap<String, String>,
    pub unknown: usize,
    pub attempts: Vec<Attempt>,
}

/// The prefix of the acknowledged-writes client's keys.
pub const SENTINEL_PREFIX: &str = "acked/";

/// Keys are `acked/` and 7 digits; the first 4 name a bucket of 1,000 keys,
/// read back with one prefix scan each.
pub fn sentinel_bucket(key: &str) -> String {
    key[..SENTINEL_PREFIX.len() + 4].to_string()
}

/// Puts fresh keys one after another (each written once, never changed), so
/// that a lost acknowledged write shows up as a missing key at the end.
pub fn run_sentinel(shared: &Shared, mut rng: Rng) -> SentinelLog {
    let mut log = SentinelLog::default();
    let mut client = Client::new();
    let client_id = format!("{}-sentinel", shared.run_tag);
    for n in 1u64.. {
        if shared.stop.load(Ordering::Relaxed) || Instant::now() >= shared.hard_deadline {
            break;
        }
        let node = rng.below(shared.addrs.len() as u64) as usize;
        let key = format!("{SENTINEL_PREFIX}{n:07}");
        let value = format!("s{n}");
        let seq = ClientSeq::new(&client_id, n);
        let invoke_ns = shared.now_ns();
        let reply = kv::put(
            &mut client,
            shared.addrs[node],
            &key,
            &value,
            Some(&seq),
            CLIENT_TIMEOUT,
        );
        let outcome = match &reply {
            Ok(r) if r.status == 200 => {
                log.acked.insert(key, value);
                Outcome::Ok
            }
            Ok(r) if r.status == 503 => Outcome::Failed,
            Err(HttpError::NotSent(_)) => Outcome::Failed,
            _ => {
                log.unknown += 1;
                Outcome::Unknown
            }
        };
        if outcome != Outcome::Ok {
            client.reset();
        }
        // Paced: this client checks durability, not throughput, and its
        // keys must stay few enough to read back (see SENTINEL_BUCKET).
        std::thread::sleep(Duration::from_millis(40));
        log.attempts.push(Attempt {
            kind: OpKind::Put,
            node,
            invoke_ns,
            complete_ns: shared.now_ns(),
            outcome,
        });
    }
    log
}
