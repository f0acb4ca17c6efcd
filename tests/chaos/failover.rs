//! Leader failover time: `kill -9` the leader, then time (1) until the
//! survivors name a new leader in `/status`, and (2) until a write first
//! succeeds. For (2), four writers send writes back to back (500 ms client
//! timeout each) to the survivors, starting 125 ms apart, so that a fresh
//! write goes out at least every ~125 ms whatever the earlier ones do.
//! (3) One more write is sent to a survivor at the kill and waited for as
//! long as the server takes, to show what a single client sees.

use crate::common::cluster::{Cluster, READY_TIMEOUT};
use crate::common::http::{self, Client};
use crate::common::kv::{self, ClientSeq};
use crate::common::say;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

/// A failover slower than this fails the measurement: the cluster did not
/// recover at all.
const FAILOVER_BOUND: Duration = Duration::from_secs(60);
const WRITERS: u64 = 4;

fn first_write_after(survivors: &[SocketAddr], killed: Instant, round: usize) -> Duration {
    let first: Arc<Mutex<Option<Duration>>> = Arc::new(Mutex::new(None));
    let writers: Vec<_> = (0..WRITERS)
        .map(|w| {
            let (survivors, first) = (survivors.to_vec(), first.clone());
            thread::spawn(move || {
                thread::sleep(Duration::from_millis(125 * w));
                let mut client = Client::new();
                for attempt in 0u64.. {
                    if first.lock().unwrap().is_some() || killed.elapsed() > FAILOVER_BOUND {
                        return;
                    }
                    let seq =
                        ClientSeq::new(&format!("failover-w{w}"), (round as u64) << 32 | attempt);
                    let addr = survivors[(attempt + w) as usize % survivors.len()];
                    let value = format!("r{round}w{w}a{attempt}");
                    let reply = kv::put(
                        &mut client,
                        addr,
                        "failover",
                        &value,
                        Some(&seq),
                        Duration::from_millis(500),
                    );
                    if matches!(reply, Ok(ref r) if r.status == 200) {
                        let took = killed.elapsed();
                        let mut first = first.lock().unwrap();
                        *first = Some(first.map_or(took, |t: Duration| t.min(took)));
                        return;
                    }
                    client.reset();
                    thread::sleep(Duration::from_millis(5));
                }
            })
        })
        .collect();
    for writer in writers {
        writer.join().expect("writer");
    }
    let took = *first.lock().unwrap();
    took.unwrap_or_else(|| {
        panic!("round {round}: no write succeeded {FAILOVER_BOUND:?} after killing the leader")
    })
}

/// Polls the survivors until they all name the same leader, other than
/// `old`.
fn new_leader_after(cluster: &Cluster, old: &str, killed: Instant) -> Option<Duration> {
    while killed.elapsed() < FAILOVER_BOUND {
        let named: Vec<Option<String>> = cluster
            .live_addrs()
            .iter()
            .map(|&addr| {
                let reply =
                    http::request(addr, "GET", "/status", None, Duration::from_millis(500)).ok()?;
                reply.json()["leader"].as_str().map(str::to_string)
            })
            .collect();
        if let Some(Some(first)) = named.first()
            && first != old
            && named.iter().all(|n| n.as_deref() == Some(first))
        {
            return Some(killed.elapsed());
        }
        thread::sleep(Duration::from_millis(10));
    }
    None
}

fn median_and_max(mut times: Vec<Duration>) -> (Duration, Duration) {
    times.sort();
    (times[times.len() / 2], times[times.len() - 1])
}

pub fn measure(kills: usize) {
    let mut cluster = Cluster::start("chaos-failover", 3);
    let (mut elections, mut writes, mut single) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..kills {
        let leader = cluster.wait_ready(READY_TIMEOUT);
        // Let the cluster settle so that every round starts alike.
        thread::sleep(Duration::from_millis(1_000));
        let leader = cluster.agreed_leader().unwrap_or(leader);
        let old = cluster.nodes[leader].name.clone();
        let killed = Instant::now();
        cluster.kill(leader);
        let survivors = cluster.live_addrs();
        let lone = {
            let addr = survivors[round % survivors.len()];
            thread::spawn(move || {
                let started = Instant::now();
                let seq = ClientSeq::new("failover-lone", round as u64 + 1);
                let reply = kv::put(
                    &mut Client::new(),
                    addr,
                    "lone",
                    "v",
                    Some(&seq),
                    Duration::from_secs(30),
                );
                let status = reply
                    .map(|r| r.status.to_string())
                    .unwrap_or_else(|e| e.to_string());
                (status, started.elapsed())
            })
        };
        let election = new_leader_after(&cluster, &old, killed);
        let write = first_write_after(&survivors, killed, round);
        let (lone_status, lone_took) = lone.join().expect("lone writer");
        say(&format!(
            "round {round}: killed {old} (leader); new leader named after {election:?}; first successful write after {write:?}; a write sent at the kill got {lone_status} after {lone_took:?}"
        ));
        elections.extend(election);
        writes.push(write);
        single.push(lone_took);
        cluster.start_node(leader);
    }
    let (election_median, election_max) = median_and_max(elections);
    let (write_median, write_max) = median_and_max(writes);
    let (single_median, single_max) = median_and_max(single);
    say(&format!(
        "leader failover over {kills} kills (kill -9 the leader ->): new leader named: median {election_median:?}, max {election_max:?}; first successful write: median {write_median:?}, max {write_max:?}; reply to a write sent at the kill: median {single_median:?}, max {single_max:?}"
    ));
}
