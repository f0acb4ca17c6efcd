//! Leader failover time: `kill -9` the leader, then time until a write sent
//! to the surviving nodes first succeeds. Repeated over a number of kills,
//! restarting the old leader and waiting for a healthy cluster in between.

use crate::common::cluster::{Cluster, READY_TIMEOUT};
use crate::common::http::Client;
use crate::common::kv::{self, ClientSeq};
use crate::common::say;
use std::thread;
use std::time::{Duration, Instant};

/// A failover slower than this fails the measurement: the cluster did not
/// recover at all.
const FAILOVER_BOUND: Duration = Duration::from_secs(60);

/// Writes back to back (1 s client timeout) to the surviving nodes in turn
/// until one succeeds; returns how long that took from `killed`.
fn first_write_after(cluster: &Cluster, killed: Instant, round: usize) -> Duration {
    let survivors = cluster.live_addrs();
    let mut client = Client::new();
    for attempt in 0u64.. {
        let seq = ClientSeq::new("failover", (round as u64) << 32 | attempt);
        let addr = survivors[attempt as usize % survivors.len()];
        let reply = kv::put(
            &mut client,
            addr,
            "failover",
            &format!("r{round}a{attempt}"),
            Some(&seq),
            Duration::from_secs(1),
        );
        if matches!(reply, Ok(ref r) if r.status == 200) {
            return killed.elapsed();
        }
        client.reset();
        assert!(
            killed.elapsed() < FAILOVER_BOUND,
            "round {round}: no write succeeded {FAILOVER_BOUND:?} after killing the leader"
        );
        thread::sleep(Duration::from_millis(5));
    }
    unreachable!()
}

pub fn measure(kills: usize) {
    let mut cluster = Cluster::start("chaos-failover", 3);
    let mut times = Vec::new();
    for round in 0..kills {
        let leader = cluster.wait_ready(READY_TIMEOUT);
        // Let the cluster settle so that every round starts alike.
        thread::sleep(Duration::from_millis(1_000));
        let leader = cluster.agreed_leader().unwrap_or(leader);
        let killed = Instant::now();
        cluster.kill(leader);
        let took = first_write_after(&cluster, killed, round);
        say(&format!(
            "round {round}: killed {} (leader); first successful write after {took:?}",
            cluster.nodes[leader].name
        ));
        times.push(took);
        cluster.start_node(leader);
    }
    times.sort();
    let median = times[times.len() / 2];
    let max = times[times.len() - 1];
    say(&format!(
        "leader failover (kill -9 the leader -> first successful write) over {kills} kills: median {median:?}, max {max:?}, min {:?}",
        times[0]
    ));
}
