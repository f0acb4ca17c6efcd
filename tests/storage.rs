//! Crash and disk tests of kv-node's storage with real processes (issue 15):
//! a segment roll, a snapshot and a `kill -9` keep the term and vote;
//! `kv-node check` on clean, torn and damaged data directories; a full
//! disk on a small tmpfs (writes refused with 503 `disk_full`, reads
//! served, a restart below the threshold, writes again once space frees).
//!
//! Every wait is bounded; nothing asserts on speed.

mod common;

use common::binary::kv_node_binary;
use common::cluster::{Cluster, READY_TIMEOUT};
use common::http::Client;
use common::kv;
use common::say;
use common::snapshot_helpers::{admin_snapshot, status_number};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::thread;
use std::time::{Duration, Instant};

const T: Duration = Duration::from_secs(10);
const MIB: usize = 1 << 20;
const BLOCK: usize = 4096;

fn check(dir: &Path, repair: bool) -> Output {
    let mut command = Command::new(kv_node_binary());
    command.arg("check").arg("--data-dir").arg(dir);
    if repair {
        command.arg("--repair");
    }
    command.output().expect("run kv-node check")
}

fn text(output: &Output) -> String {
    format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        output.status.code(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// The WAL's segment files (`.wal`; compacted segments kept for reuse
/// are `.spare`).
fn segments(data_dir: &Path) -> Vec<PathBuf> {
    wal_files(data_dir, "wal")
}

fn wal_files(data_dir: &Path, extension: &str) -> Vec<PathBuf> {
    let mut paths: Vec<PathBuf> = fs::read_dir(data_dir.join("wal"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == extension))
        .collect();
    paths.sort();
    paths
}

fn put_ok(client: &mut Client, cluster: &Cluster, key: &str, value: &str) {
    let reply = kv::put(client, cluster.addr(0), key, value, None, T).expect("put");
    assert_eq!(reply.status, 200, "put {key}: {}", reply.text());
}

/// Issue 15, item 1: a round that rolls the WAL segment, then a snapshot
/// that deletes every older segment, then `kill -9`: the node restarts,
/// with the term and vote it had.
#[test]
fn a_roll_a_snapshot_and_kill_9_keep_the_term_and_vote_and_the_node_restarts() {
    // Only the snapshots asked for below: with the byte rule on, a single
    // node snapshots at its 64 MiB floor, before the WAL has rolled twice.
    let mut cluster = Cluster::start_with(
        "storage-roll",
        1,
        &["--snapshot-entries", "0", "--snapshot-min-log-mb", "0"],
    );
    let data_dir = cluster.nodes[0].data_dir.clone();
    let term = status_number(&cluster, 0, "term").expect("term in /status");
    let mut client = Client::new();
    let value = "v".repeat(MIB - 64);
    // 64 MiB segments. The first (a new file) is left early for a spare
    // made from zeros, once 4 MiB are written; the second, recycled, is
    // left full after about 70 values of 1 MiB.
    for i in 0..200 {
        put_ok(&mut client, &cluster, &format!("k{i}"), &value);
        if segments(&data_dir).len() >= 3 {
            break;
        }
    }
    assert!(segments(&data_dir).len() >= 3, "the WAL rolled over twice");
    put_ok(&mut client, &cluster, "last", "written after the roll");
    let before = segments(&data_dir).len();
    // Ask until a snapshot covers "last", so that every closed segment is
    // retired.
    let last_index = status_number(&cluster, 0, "commit_index").expect("commit index");
    let (mut taken, mut covered) = (false, 0);
    for _ in 0..3 {
        let (new, index) = admin_snapshot(cluster.addr(0));
        taken |= new;
        covered = covered.max(index);
        if covered >= last_index {
            break;
        }
    }
    assert!(taken, "snapshot taken");
    assert!(
        covered >= last_index,
        "snapshot at {covered}, last write at {last_index}"
    );
    cluster.kill(0);
    // How many segments there are depends on when the spares were made
    // (a segment left early for one is short); the snapshot retires every
    // closed one, and keeps the full-size one for reuse (short ones are
    // deleted). A spare being made from zeros may be cut short by the
    // kill (a `.fill`, removed at the restart).
    let after = segments(&data_dir).len();
    assert!(
        after < before && after <= 2,
        "older segments retired: {before} -> {after}"
    );
    let spares = wal_files(&data_dir, "spare").len();
    assert!((1..=2).contains(&spares), "a spare kept: {spares}");

    let report = check(&data_dir, false);
    let report_text = text(&report);
    assert_eq!(report.status.code(), Some(0), "{report_text}");
    assert!(
        report_text.contains(&format!("hard state: term {term} vote ")),
        "term {term} kept: {report_text}"
    );
    assert!(
        !report_text.contains("vote none"),
        "vote kept: {report_text}"
    );

    cluster.start_node(0);
    cluster.wait_ready(READY_TIMEOUT);
    client.reset();
    let reply = kv::get(&mut client, cluster.addr(0), "last", "linearizable", T).unwrap();
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert!(reply.text().contains("written after the roll"));
    assert!(status_number(&cluster, 0, "term").unwrap() >= term);
}

/// `kv-node check` on a clean directory, a torn tail (repairable, kept in a
/// side file) and damage to an acknowledged batch (found; repair cuts it
/// aside and leaves the node in repair mode, which a sole voter cannot
/// leave: it then refuses to start, naming why).
#[test]
fn kv_node_check_tells_clean_torn_and_damaged_data_directories_apart() {
    let mut cluster = Cluster::start("storage-check", 1);
    let data_dir = cluster.nodes[0].data_dir.clone();
    let mut client = Client::new();
    for i in 0..20 {
        put_ok(&mut client, &cluster, &format!("key{i}"), "value");
    }
    cluster.kill(0);

    let clean = check(&data_dir, false);
    assert_eq!(clean.status.code(), Some(0), "{}", text(&clean));
    assert!(text(&clean).contains("clean"), "{}", text(&clean));

    // A torn, never-acknowledged batch at the end of the last segment.
    let last = segments(&data_dir).pop().unwrap();
    let mut raw = fs::read(&last).unwrap();
    let acknowledged = raw.len();
    raw.extend(b"RKVB half a batch header and some bytes".repeat(3));
    fs::write(&last, &raw).unwrap();
    let torn = check(&data_dir, false);
    assert_eq!(torn.status.code(), Some(1), "{}", text(&torn));
    assert!(text(&torn).contains("torn"), "{}", text(&torn));
    assert_eq!(fs::read(&last).unwrap(), raw, "check alone changes nothing");

    let repaired = check(&data_dir, true);
    assert_eq!(repaired.status.code(), Some(0), "{}", text(&repaired));
    assert_eq!(fs::metadata(&last).unwrap().len() as usize, acknowledged);
    let kept: Vec<_> = fs::read_dir(data_dir.join("wal-cut")).unwrap().collect();
    assert_eq!(kept.len(), 1, "the cut bytes are kept in a side file");
    let again = check(&data_dir, false);
    assert_eq!(again.status.code(), Some(0), "{}", text(&again));

    // A flipped byte in the body of an acknowledged batch (the first
    // segment's opening hard state, before later batches).
    let first = segments(&data_dir).remove(0);
    let mut raw = fs::read(&first).unwrap();
    raw[BLOCK + 30] ^= 0x10;
    fs::write(&first, &raw).unwrap();
    let damaged = check(&data_dir, false);
    assert_eq!(damaged.status.code(), Some(1), "{}", text(&damaged));
    assert!(
        text(&damaged).contains("damaged acknowledged records"),
        "{}",
        text(&damaged)
    );
    assert!(text(&damaged).contains("repair mode"), "{}", text(&damaged));
    assert_eq!(
        fs::read(&first).unwrap(),
        raw,
        "check alone changes nothing"
    );
    let repaired = check(&data_dir, true);
    assert_eq!(repaired.status.code(), Some(0), "{}", text(&repaired));
    assert!(
        text(&repaired).contains("repair mode"),
        "{}",
        text(&repaired)
    );
    let kept: Vec<_> = fs::read_dir(data_dir.join("wal-cut")).unwrap().collect();
    assert!(kept.len() >= 2, "the damaged bytes are kept in side files");
    let started = Command::new(kv_node_binary())
        .args(["--id", "node1", "--port", "1"])
        .arg("--data-dir")
        .arg(&data_dir)
        .output()
        .expect("run kv-node");
    assert!(!started.status.success(), "{}", text(&started));
    assert!(
        text(&started).contains("no leader can be elected without its vote"),
        "{}",
        text(&started)
    );
}

/// Unmounts the tmpfs when the test ends, however it ends.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(size: &str) -> Option<Tmpfs> {
        let dir = tempfile::Builder::new()
            .prefix("kvtest-tmpfs-")
            .tempdir()
            .ok()?
            .keep();
        let mounted = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(&dir)
            .output()
            .is_ok_and(|o| o.status.success());
        if mounted {
            Some(Tmpfs(dir))
        } else {
            let _ = fs::remove_dir(&dir);
            None
        }
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
        let _ = fs::remove_dir(&self.0);
    }
}

/// Issue 15, item 6, on a real full file system: a 24 MiB tmpfs, an 8 MiB
/// filler file, `--min-free-disk-mb 6`. Needs `mount` (root); without it
/// the threshold is covered by `disk_space.rs`'s tests with an injected
/// probe, and this test says it is skipped.
#[test]
fn a_nearly_full_disk_refuses_writes_with_disk_full_serves_reads_restarts_and_recovers() {
    let Some(tmpfs) = Tmpfs::mount("24m") else {
        say("SKIPPED a_nearly_full_disk...: cannot mount a tmpfs here (not root?)");
        return;
    };
    let filler = tmpfs.0.join("filler");
    fs::write(&filler, vec![7u8; 8 * MIB]).unwrap();
    let mut cluster = Cluster::new("storage-full", 1, &["--min-free-disk-mb", "6"]);
    cluster.nodes[0].data_dir = tmpfs.0.join("node1");
    cluster.start_node(0);
    cluster.wait_ready(READY_TIMEOUT);
    let mut client = Client::new();
    put_ok(&mut client, &cluster, "kept", "readable on a full disk");

    // Paced below the once-a-second free-space check, so that the
    // threshold, not ENOSPC, is what stops the writes.
    let value = "f".repeat(MIB - 64);
    let mut refused = None;
    for i in 0..40 {
        let reply = kv::put(
            &mut client,
            cluster.addr(0),
            &format!("f{i}"),
            &value,
            None,
            T,
        )
        .expect("the node keeps answering");
        if reply.status == 503 {
            refused = Some(reply);
            break;
        }
        assert_eq!(reply.status, 200, "{}", reply.text());
        thread::sleep(Duration::from_millis(400));
    }
    let refused = refused.expect("writes refused before the disk is full");
    assert_eq!(refused.error_code(), "disk_full", "{}", refused.text());
    assert!(
        refused.text().contains("disk almost full"),
        "{}",
        refused.text()
    );
    let read = kv::get(&mut client, cluster.addr(0), "kept", "linearizable", T).unwrap();
    assert_eq!(read.status, 200, "reads are served: {}", read.text());

    // A restart below the threshold: the node starts, serves reads and
    // still refuses writes (the restart itself writes a hard state, in
    // the room the threshold kept).
    cluster.kill(0);
    cluster.start_node(0);
    cluster.wait_ready(READY_TIMEOUT);
    client.reset();
    let read = kv::get(&mut client, cluster.addr(0), "kept", "linearizable", T).unwrap();
    assert_eq!(read.status, 200, "reads after a restart: {}", read.text());
    let reply = kv::put(&mut client, cluster.addr(0), "more", "x", None, T).unwrap();
    assert_eq!(reply.error_code(), "disk_full", "{}", reply.text());

    // Space frees: writes are accepted again within a few checks.
    fs::remove_file(&filler).unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let reply = kv::put(&mut client, cluster.addr(0), "more", "x", None, T).unwrap();
        if reply.status == 200 {
            break;
        }
        assert_eq!(reply.error_code(), "disk_full", "{}", reply.text());
        assert!(Instant::now() < deadline, "writes never accepted again");
        thread::sleep(Duration::from_millis(200));
    }
    cluster.stop_all();
    drop(tmpfs);
}
