//! End-to-end tests of real kv-node processes on loopback (issue 4, "Tests"):
//! three nodes on 127.0.0.11..13, temporary data dirs, the HTTP API of
//! API.md. Every wait is bounded; timeouts are generous for a loaded 2-core
//! machine and nothing asserts on speed.

mod common;

use common::cluster::{Cluster, READY_TIMEOUT};
use common::http::{self, Client};
use common::kv::{self, ClientSeq, get_linearizable, put_ok, until_definite};
use std::collections::BTreeMap;
use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::PathBuf;
use std::thread;
use std::time::{Duration, Instant};

const T: Duration = Duration::from_secs(10);

fn follower_of(cluster: &Cluster, leader: usize) -> usize {
    (0..cluster.size()).find(|&i| i != leader).unwrap()
}

/// Writes `count` keys `{prefix}{n}` = `v{n}` through `addrs` and returns them.
fn write_keys(
    addrs: &[std::net::SocketAddr],
    prefix: &str,
    count: usize,
    client_id: &str,
) -> BTreeMap<String, String> {
    let mut written = BTreeMap::new();
    for n in 0..count {
        let (key, value) = (format!("{prefix}{n}"), format!("v{n}"));
        put_ok(
            addrs,
            &key,
            &value,
            &ClientSeq::new(client_id, n as u64 + 1),
        );
        written.insert(key, value);
    }
    written
}

/// Polls until node `i` holds every key of `expected` in its local state
/// (stale reads), or panics after `within`.
fn wait_until_node_holds(
    cluster: &Cluster,
    i: usize,
    expected: &BTreeMap<String, String>,
    within: Duration,
) {
    let deadline = Instant::now() + within;
    let mut client = Client::new();
    loop {
        let missing: Vec<&String> = expected
            .iter()
            .filter(|(key, value)| {
                let reply = kv::get(&mut client, cluster.addr(i), key, "stale", T);
                !matches!(reply, Ok(ref r) if r.status == 200 && r.json()["value"] == **value)
            })
            .map(|(key, _)| key)
            .collect();
        if missing.is_empty() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{} still misses {} keys after {within:?}, e.g. {:?}",
            cluster.nodes[i].name,
            missing.len(),
            &missing[..missing.len().min(5)]
        );
        thread::sleep(Duration::from_millis(200));
    }
}

fn assert_all_readable_linearizably(
    cluster: &Cluster,
    nodes: &[usize],
    expected: &BTreeMap<String, String>,
) {
    for &i in nodes {
        for (key, value) in expected {
            assert_eq!(
                get_linearizable(cluster.addr(i), key).as_deref(),
                Some(value.as_str()),
                "key {key} read from {}",
                cluster.nodes[i].name
            );
        }
    }
}

/// The server turns transparent huge pages off for itself: with them,
/// the allocator's purged memory came back as 2 MiB pages zeroed on the
/// driver thread, and the put p999 at 64 connections tripled (BENCHMARKS.md,
/// stop 28). The kernel reports the flag in /proc/PID/status (Linux 5.0+).
#[test]
fn the_server_runs_without_transparent_huge_pages() {
    let cluster = Cluster::start("e2e-no-thp", 1);
    cluster.wait_ready(READY_TIMEOUT);
    let pid = cluster.nodes[0].pid().expect("the node runs");
    let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let Some(line) = status.lines().find(|l| l.starts_with("THP_enabled:")) else {
        eprintln!("this kernel does not report THP_enabled; nothing to check");
        return;
    };
    assert_eq!(line.split_whitespace().nth(1), Some("0"), "{line}");
}

#[test]
fn a_write_through_a_follower_is_read_linearizably_from_every_node() {
    let cluster = Cluster::start("e2e-follower-write", 3);
    let leader = cluster.wait_ready(READY_TIMEOUT);
    let follower = follower_of(&cluster, leader);

    let reply = put_ok(
        &[cluster.addr(follower)],
        "greeting",
        "hello",
        &ClientSeq::new("writer", 1),
    );
    assert!(reply["revision"].as_u64().unwrap() > 0, "{reply}");
    assert_eq!(reply["prev"], serde_json::Value::Null);

    for i in 0..cluster.size() {
        assert_eq!(
            get_linearizable(cluster.addr(i), "greeting").as_deref(),
            Some("hello"),
            "read from {}",
            cluster.nodes[i].name
        );
    }
}

#[test]
fn racing_cas_from_several_clients_has_exactly_one_winner() {
    let cluster = Cluster::start("e2e-cas-race", 3);
    let addrs = cluster.addrs();
    for round in 0..5 {
        let key = format!("lock{round}");
        let racers: Vec<_> = (0..6)
            .map(|c| {
                let addr = addrs[c % addrs.len()];
                let key = key.clone();
                thread::spawn(move || {
                    let mut client = Client::new();
                    let seq = ClientSeq::new(&format!("racer{c}"), round + 1);
                    let me = format!("racer{c}");
                    let reply = until_definite(&[addr], Duration::from_secs(60), |addr| {
                        kv::cas(&mut client, addr, &key, None, Some(&me), Some(&seq), T)
                    })
                    .unwrap_or_else(|e| panic!("cas {key} by {me}: {e}"));
                    assert_eq!(reply.status, 200, "cas by {me}: {}", reply.text());
                    let json = reply.json();
                    (
                        me,
                        json["succeeded"].as_bool().unwrap(),
                        json["current"].clone(),
                    )
                })
            })
            .collect();
        let outcomes: Vec<_> = racers.into_iter().map(|r| r.join().unwrap()).collect();
        let winners: Vec<&String> = outcomes
            .iter()
            .filter(|(_, won, _)| *won)
            .map(|(me, _, _)| me)
            .collect();
        assert_eq!(winners.len(), 1, "round {round}: {outcomes:?}");
        let winner = winners[0];
        for (me, _, current) in &outcomes {
            assert_eq!(
                current,
                winner.as_str(),
                "{me} saw {current} in round {round}"
            );
        }
        assert_eq!(
            get_linearizable(addrs[0], &key).as_deref(),
            Some(winner.as_str())
        );
    }
}

#[test]
fn a_retried_write_applies_once_and_a_lower_seq_is_refused_as_stale() {
    let cluster = Cluster::start("e2e-dedup", 3);
    let addrs = cluster.addrs();
    let seq5 = ClientSeq::new("retrier", 5);

    let first = put_ok(&addrs[..1], "k", "mine", &seq5);
    // Another client overwrites the key; a retry of seq 5 must not apply
    // again (the value stays "theirs") and must answer the first result.
    put_ok(&addrs[1..2], "k", "theirs", &ClientSeq::new("other", 1));
    for &addr in &addrs {
        let retry = put_ok(&[addr], "k", "mine", &seq5);
        assert_eq!(retry, first, "retry through {addr}");
    }
    assert_eq!(get_linearizable(addrs[2], "k").as_deref(), Some("theirs"));

    // The same holds for deletes and CAS.
    let seq6 = ClientSeq::new("retrier", 6);
    let mut client = Client::new();
    let delete_once = |client: &mut Client| {
        let reply = until_definite(&addrs, Duration::from_secs(60), |addr| {
            kv::delete(client, addr, "k", Some(&seq6), T)
        })
        .unwrap();
        assert_eq!(reply.status, 200, "{}", reply.text());
        reply.json()
    };
    let deleted = delete_once(&mut client);
    assert_eq!(deleted["prev"], "theirs");
    put_ok(&addrs[1..2], "k", "again", &ClientSeq::new("other", 2));
    assert_eq!(delete_once(&mut client), deleted);
    assert_eq!(get_linearizable(addrs[0], "k").as_deref(), Some("again"));

    // A lower seq than the newest seen (6) is refused and not applied.
    for lower in [5, 1] {
        let seq = ClientSeq::new("retrier", lower);
        let stale = kv::put(&mut client, addrs[0], "k", "old", Some(&seq), T).unwrap();
        assert_eq!(stale.status, 409, "seq {lower}: {}", stale.text());
        assert_eq!(stale.error_code(), "stale_seq");
    }
    assert_eq!(get_linearizable(addrs[0], "k").as_deref(), Some("again"));
}

#[test]
fn killing_the_leader_elects_another_and_loses_no_acknowledged_write_and_it_catches_up() {
    let mut cluster = Cluster::start("e2e-kill-leader", 3);
    let old_leader = cluster.wait_ready(READY_TIMEOUT);
    let mut written = write_keys(&cluster.addrs(), "before", 30, "w1");

    cluster.kill(old_leader);
    let new_leader = cluster.wait_ready(READY_TIMEOUT);
    assert_ne!(new_leader, old_leader);
    let survivors = cluster.live();
    assert_all_readable_linearizably(&cluster, &survivors, &written);
    written.extend(write_keys(&cluster.live_addrs(), "after", 30, "w2"));

    cluster.start_node(old_leader);
    cluster.wait_ready(READY_TIMEOUT);
    wait_until_node_holds(&cluster, old_leader, &written, READY_TIMEOUT);
    assert_all_readable_linearizably(&cluster, &[old_leader], &written);
}

#[test]
fn restarting_the_whole_cluster_keeps_all_data() {
    let mut cluster = Cluster::start("e2e-full-restart", 3);
    let written = write_keys(&cluster.addrs(), "key", 40, "w");
    cluster.stop_all();
    for i in 0..cluster.size() {
        cluster.start_node(i);
    }
    cluster.wait_ready(READY_TIMEOUT);
    assert_all_readable_linearizably(&cluster, &[0, 1, 2], &written);
    for i in 0..cluster.size() {
        wait_until_node_holds(&cluster, i, &written, READY_TIMEOUT);
    }
}

/// The last WAL segment of a node (segments sort by name).
fn last_segment(data_dir: &std::path::Path) -> PathBuf {
    let mut segments: Vec<PathBuf> = fs::read_dir(data_dir.join("wal"))
        .expect("wal dir")
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "wal"))
        .collect();
    segments.sort();
    segments.pop().expect("a WAL segment")
}

/// WAL format 2 (kv-storage/src/batch.rs): a 4 KiB segment header
/// block holding the salt at bytes 12..20, then batches on 4 KiB
/// boundaries: `["RKVB"][seq: u64][body len: u32][body crc][header crc]
/// [body]`, both checksums CRC32C seeded with the salt.
const BLOCK: usize = 4096;

fn salted_crc(salt: u64, parts: &[&[u8]]) -> u32 {
    let mut crc = crc32c::crc32c(&salt.to_le_bytes());
    for part in parts {
        crc = crc32c::crc32c_append(crc, part);
    }
    crc
}

/// The salt, and the sequence number and body of the last batch of a
/// format-2 segment (the segment must hold at least one batch).
fn last_batch(segment: &[u8]) -> (u64, u64, Vec<u8>) {
    let salt = u64::from_le_bytes(segment[12..20].try_into().unwrap());
    let mut last = None;
    let mut at = BLOCK;
    while at + 24 <= segment.len() {
        let header = &segment[at..at + 24];
        let header_crc = u32::from_le_bytes(header[20..24].try_into().unwrap());
        if &header[..4] == b"RKVB" && salted_crc(salt, &[&header[..20]]) == header_crc {
            let seq = u64::from_le_bytes(header[4..12].try_into().unwrap());
            let len = u32::from_le_bytes(header[12..16].try_into().unwrap()) as usize;
            last = Some((seq, segment[at + 24..at + 24 + len].to_vec()));
        }
        at += BLOCK;
    }
    let (seq, body) = last.expect("a batch in the last segment");
    (salt, seq, body)
}

/// Kills two followers and leaves each WAL with a torn write at its end, as
/// a crash in the middle of writing a batch that was never fsynced (so
/// never acknowledged) would: one gets a few bytes of garbage where the
/// next batch would start, the other the first half of a well-formed next
/// batch (a valid header, a body cut short). Returns the two followers.
fn kill_followers_and_tear_their_wal_tails(cluster: &mut Cluster, leader: usize) -> [usize; 2] {
    let followers: Vec<usize> = (0..3).filter(|&i| i != leader).collect();
    let (garbage, half) = (followers[0], followers[1]);
    cluster.kill(garbage);
    let segment = last_segment(&cluster.nodes[garbage].data_dir);
    let mut file = OpenOptions::new().append(true).open(&segment).unwrap();
    file.write_all(&[0x5a, 0x00, 0x00, 0x00, 0xde, 0xad, 0xbe, 0xef, 0x01, 0x02])
        .unwrap();
    drop(file);
    cluster.kill(half);
    let segment = last_segment(&cluster.nodes[half].data_dir);
    let bytes = fs::read(&segment).unwrap();
    assert_eq!(bytes.len() % BLOCK, 0, "batches end on block boundaries");
    let (salt, seq, body) = last_batch(&bytes);
    assert!(body.len() > 2, "no batch body in {}", segment.display());
    let mut next = Vec::new();
    next.extend_from_slice(b"RKVB");
    next.extend_from_slice(&(seq + 1).to_le_bytes());
    next.extend_from_slice(&(body.len() as u32).to_le_bytes());
    next.extend_from_slice(&salted_crc(salt, &[&body]).to_le_bytes());
    let header_crc = salted_crc(salt, &[&next[..20]]);
    next.extend_from_slice(&header_crc.to_le_bytes());
    next.extend_from_slice(&body[..body.len() / 2]);
    let mut file = OpenOptions::new().append(true).open(&segment).unwrap();
    file.write_all(&next).unwrap();
    [garbage, half]
}

#[test]
fn a_torn_wal_tail_is_cut_off_with_a_warning_and_the_node_serves() {
    let mut cluster = Cluster::start("e2e-torn-tail", 3);
    let leader = cluster.wait_ready(READY_TIMEOUT);
    let mut written = write_keys(&cluster.addrs(), "key", 20, "w1");
    let torn = kill_followers_and_tear_their_wal_tails(&mut cluster, leader);

    for i in torn {
        cluster.start_node(i);
    }
    cluster.wait_ready(READY_TIMEOUT);
    written.extend(write_keys(&cluster.addrs(), "later", 10, "w2"));
    for i in torn {
        let log = cluster.log(i);
        assert!(
            log.lines()
                .any(|l| l.contains("WARN") && l.to_lowercase().contains("torn")),
            "{} logged no warning about a torn tail:\n{}",
            cluster.nodes[i].name,
            cluster.log_tail(i, 30)
        );
        wait_until_node_holds(&cluster, i, &written, READY_TIMEOUT);
    }
    assert_all_readable_linearizably(&cluster, &torn, &written);
}

/// Finding F2 in tests/FOUND_BUGS.md. Cutting into the last *whole* record
/// is not a torn write (that record was fsynced and acknowledged), so this
/// is outside the crash model; still, the follower that lost its last
/// acknowledged entry is never repaired by the leader.
#[test]
#[ignore = "finding F2 (outside the crash model): a follower whose acknowledged WAL tail was cut never catches up"]
fn a_follower_that_lost_its_last_acknowledged_entry_catches_up() {
    let mut cluster = Cluster::start("e2e-lost-tail", 3);
    let leader = cluster.wait_ready(READY_TIMEOUT);
    let mut written = write_keys(&cluster.addrs(), "key", 20, "w1");
    let follower = follower_of(&cluster, leader);
    cluster.kill(follower);
    let segment = last_segment(&cluster.nodes[follower].data_dir);
    let len = fs::metadata(&segment).unwrap().len();
    OpenOptions::new()
        .write(true)
        .open(&segment)
        .unwrap()
        .set_len(len - 3)
        .unwrap();
    cluster.start_node(follower);
    cluster.wait_ready(READY_TIMEOUT);
    written.extend(write_keys(&cluster.addrs(), "later", 10, "w2"));
    wait_until_node_holds(&cluster, follower, &written, Duration::from_secs(30));
}

#[test]
fn each_malformed_request_gets_its_api_error_and_applies_nothing() {
    let cluster = Cluster::start("e2e-malformed", 3);
    let addr = cluster.addr(0);
    let mut client = Client::new();
    let mut send = |method: &str, path: &str, body: Option<&[u8]>| {
        client.request(addr, method, path, body, T).unwrap()
    };
    let big_value = format!(r#"{{"value": "{}"}}"#, "x".repeat((1 << 20) + 1));
    let long_key = format!("/kv/{}", "k".repeat(4097));
    // (what, method, path, body, status, code)
    type Case<'a> = (&'a str, &'a str, &'a str, Option<&'a [u8]>, u16, &'a str);
    let cases: Vec<Case> = vec![
        (
            "bad JSON",
            "PUT",
            "/kv/a",
            Some(b"{\"value\": "),
            400,
            "bad_request",
        ),
        (
            "JSON of the wrong shape",
            "PUT",
            "/kv/a",
            Some(b"[1, 2]"),
            400,
            "bad_request",
        ),
        (
            "missing value",
            "PUT",
            "/kv/a",
            Some(b"{\"seq\": 1}"),
            400,
            "bad_request",
        ),
        (
            "missing expected",
            "POST",
            "/kv/a/cas",
            Some(b"{\"value\": \"v\"}"),
            400,
            "bad_request",
        ),
        (
            "value not a string",
            "PUT",
            "/kv/a",
            Some(b"{\"value\": 7}"),
            400,
            "bad_request",
        ),
        (
            "key not UTF-8",
            "PUT",
            "/kv/%FF",
            Some(b"{\"value\": \"v\"}"),
            400,
            "bad_request",
        ),
        (
            "key too long",
            "PUT",
            &long_key,
            Some(b"{\"value\": \"v\"}"),
            413,
            "too_large",
        ),
        (
            "value too large",
            "PUT",
            "/kv/a",
            Some(big_value.as_bytes()),
            413,
            "too_large",
        ),
        (
            "unknown route",
            "GET",
            "/no/such/route",
            None,
            404,
            "not_found",
        ),
        ("wrong method", "PATCH", "/kv/a", Some(b"{}"), 405, ""),
        ("wrong method on cas", "GET", "/kv/a/cas", None, 405, ""),
    ];
    for (what, method, path, body, status, code) in cases {
        let reply = send(method, path, body);
        assert_eq!(reply.status, status, "{what}: {}", reply.text());
        let json = reply.json();
        assert!(
            json["error"]["code"].is_string() && json["error"]["message"].is_string(),
            "{what}: not an API error body: {}",
            reply.text()
        );
        if !code.is_empty() {
            assert_eq!(reply.error_code(), code, "{what}");
        }
    }
    // Stale seq: 409, and nothing applied.
    let ok = send(
        "PUT",
        "/kv/b",
        Some(br#"{"value": "new", "client_id": "c", "seq": 2}"#),
    );
    assert_eq!(ok.status, 200, "{}", ok.text());
    let stale = send(
        "PUT",
        "/kv/b",
        Some(br#"{"value": "old", "client_id": "c", "seq": 1}"#),
    );
    assert_eq!(
        (stale.status, stale.error_code().as_str()),
        (409, "stale_seq")
    );

    assert_eq!(
        get_linearizable(addr, "a"),
        None,
        "a refused write was applied"
    );
    assert_eq!(get_linearizable(addr, "b").as_deref(), Some("new"));
    // The node is still healthy after all that.
    let health = http::request(addr, "GET", "/healthz", None, T).unwrap();
    assert_eq!(health.status, 200);
}
