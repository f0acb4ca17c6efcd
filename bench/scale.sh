#!/usr/bin/env bash
# Issue 12's scale run: does the cluster stay up and fast as the data grows?
# For each system in turn (never both at once: a 1M-key preload takes both
# cores), a fresh 3-node cluster with default settings (fsync on):
#
#   1. preload KEYS keys of 100-byte values at 64 connections (errors counted);
#   2. random puts over the whole key space at each of CONCURRENCY for DURATION,
#      then linearizable gets at each of CONCURRENCY;
#   3. the leader's term before and after every run (a change = an election),
#      and the bytes each server process wrote to disk during the puts
#      (sectors the data's block device wrote) per byte of user data
#      written (ops x (16-byte key + value)), i.e. WAL + snapshots on 3 nodes
#      divided by 3; for kv-node also the snapshots' share alone (the bytes
#      of the snapshot files the leader finished writing during the run,
#      kv_snapshot_written_bytes_total; until stop 37 this was the snapshots
#      taken x the size of the last chain, which overstated deltas).
#
#   SYSTEMS="kv etcd" KEYS=1000000 DURATION=60s bench/scale.sh
#   SYSTEMS=kv KEYS=10000000 PRELOAD_BATCH=500 bench/scale.sh   # preload by mput
#   bench/table.py bench/out/scale-*/results.jsonl
#
# One JSON line per run in $OUT/results.jsonl, with "term_before",
# "term_after" and "disk_bytes_per_user_byte" added to the bench's own line.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"
SYSTEMS=${SYSTEMS:-"kv etcd"}
KEYS=${KEYS:-1000000}
CONCURRENCY=${CONCURRENCY:-"64 16"}
READ_CONCURRENCY=${READ_CONCURRENCY:-"16 64"}
DURATION=${DURATION:-60s}
READ_DURATION=${READ_DURATION:-20s}
VALUE_BYTES=${VALUE_BYTES:-100}
# Keys per preload request (kv-node: one mput; etcd: one txn, at most 128).
PRELOAD_BATCH=${PRELOAD_BATCH:-1}
# Seconds to leave the cluster idle between the preload and the first run
# (0: none): what a run measures once the preload's last snapshots are done.
SETTLE_S=${SETTLE_S:-0}
out=${OUT:-bench/out/scale-$(date -u +%Y%m%dT%H%M%SZ)}
mkdir -p "$out"
results=$out/results.jsonl

if [[ ${BUILD:-1} == 1 ]]; then
    cargo build --release -p kv-node --bin kv-node && cargo build --release --example bench
fi
bench=$out/bench
cp target/release/examples/bench "$bench"
{
    git rev-parse HEAD
    git status --short
    echo "KV_NODE_BIN=${KV_NODE_BIN:-target/release/kv-node} KEYS=$KEYS DURATION=$DURATION"
} >"$out/commit"

# The leader's term: kv-node's /status, etcd's maintenance status (raft_term).
term() {
    local system=$1 url=$2
    if [[ $system == kv ]]; then
        curl -sf --max-time 2 "$url/status" | grep -o '"term":[0-9]*' | grep -o '[0-9]*$'
    else
        curl -sf --max-time 2 -X POST "$url/v3/maintenance/status" -d '{}' |
            grep -o '"raft_term":"[0-9]*"' | grep -o '[0-9]\+'
    fi
}

# kv-node only: "snapshots_taken snapshot_written_bytes" from the leader's
# /metrics (the bytes of the snapshot files it wrote, whole and delta).
snapshots() {
    local system=$1 url=$2
    if [[ $system == kv ]]; then
        curl -sf --max-time 2 "$url/metrics" |
            awk '/^kv_snapshots_total / {n=$2} /^kv_snapshot_written_bytes_total / {b=$2} END {printf "%d %d\n", n, b}'
    else
        echo "0 0"
    fi
}

# Bytes written by the block device that holds the clusters' data (/tmp):
# sectors written (/sys/class/block/DEV/stat, field 7) x 512, i.e. WAL,
# snapshots and the file system's journal, as the disk sees them. Nothing
# else may write meanwhile (the machine is otherwise idle in these runs).
# Not the processes' own write_bytes (/proc/PID/io): on kernels with large
# page-cache folios (seen on 6.18) that counts a whole folio for each small
# write into it, e.g. 256 KiB per 4 KiB WAL append into a spare written in
# 256 KiB chunks, 20x what the device wrote.
data_dev=$(basename "$(df --output=source /tmp | tail -n1)")
written() {
    awk '{printf "%.0f\n", $7 * 512}' "/sys/class/block/$data_dev/stat"
}

running=""
cleanup() { [[ -n $running ]] && "bench/$running-cluster.sh" stop; }
trap cleanup EXIT

for system in $SYSTEMS; do
    "bench/$system-cluster.sh" start
    running=$system
    leader=$("bench/$system-cluster.sh" leader)
    pids=$("bench/$system-cluster.sh" pids)
    pid_flags=""
    for p in $pids; do pid_flags+=" --pid $p"; done
    common="--target $system --url $leader --keyspace $KEYS --value-bytes $VALUE_BYTES$pid_flags"

    # run LABEL ARGS...: one bench run, its JSON line tagged and extended.
    run() {
        local label=$1; shift
        local t0 w0 line t1 w1
        t0=$(term "$system" "$leader")
        w0=$(written)
        s0=$(snapshots "$system" "$leader")
        echo "== $system $label: $* (load average: $(cut -d' ' -f1-3 /proc/loadavg))" >&2
        # shellcheck disable=SC2086
        line=$("$bench" --json $common "$@" | tee -a "$out/$system.log" | tail -n1)
        t1=$(term "$system" "$leader")
        w1=$(written)
        s1=$(snapshots "$system" "$leader")
        python3 - "$line" "$system" "$label" "$t0" "$t1" "$w0" "$w1" "$VALUE_BYTES" "$s0" "$s1" >>"$results" <<'EOF'
import json, sys
line, system, label, t0, t1, w0, w1, value_bytes, s0, s1 = sys.argv[1:]
r = json.loads(line)
r.update(system=system, label=label, term_before=int(t0), term_after=int(t1))
user = r["ops"] * (16 + int(value_bytes))
if r.get("workload") == "put" and user:
    r["disk_bytes_per_user_byte"] = round((int(w1) - int(w0)) / 3 / user, 2)
    # The bytes of the snapshot files the leader wrote during the run.
    taken = int(s1.split()[0]) - int(s0.split()[0])
    if system == "kv":
        r["snapshots_taken"] = taken
        r["snapshot_bytes_per_user_byte"] = round((int(s1.split()[1]) - int(s0.split()[1])) / user, 2)
print(json.dumps(r))
EOF
        tail -n1 "$results" >&2
    }

    # The preload prints no JSON line: its summary ("wrote N keys in S s,
    # F failed") becomes one.
    t0=$(term "$system" "$leader")
    # shellcheck disable=SC2086
    summary=$("$bench" $common --workload put --preload "$KEYS" --preload-batch "$PRELOAD_BATCH" --duration 0s 2>&1 |
        tee -a "$out/$system.log" | grep 'preload: wrote' | tail -n1)
    t1=$(term "$system" "$leader")
    python3 - "$summary" "$system" "$t0" "$t1" >>"$results" <<'EOF'
import json, re, sys
summary, system, t0, t1 = sys.argv[1:]
m = re.search(r"wrote (\d+) keys in ([\d.]+)s, (\d+) failed", summary)
print(json.dumps(dict(system=system, label="preload", keys=int(m[1]), seconds=float(m[2]),
                      failed=int(m[3]), term_before=int(t0), term_after=int(t1))))
EOF
    tail -n1 "$results" >&2
    sleep "$SETTLE_S"
    for c in $CONCURRENCY; do
        run "put-$c" --workload put --preload 0 --concurrency "$c" --duration "$DURATION"
    done
    for c in $READ_CONCURRENCY; do
        run "get-$c" --workload get --consistency linearizable --preload 0 --concurrency "$c" --duration "$READ_DURATION"
    done
    du -sb "/tmp/${system}bench" >>"$out/$system.log" 2>/dev/null || true
    "bench/$system-cluster.sh" stop
    running=""
done
echo "results in $results" >&2
