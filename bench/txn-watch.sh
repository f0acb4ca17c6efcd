#!/usr/bin/env bash
# Issue 14's measurements on local 3-node clusters of kv-node and etcd 3.4:
# transactions (2 comparisons, 2 puts) at each concurrency, load to the
# leader, and watch fan-out (watchers spread over the three nodes, a paced
# writer to the leader). One JSON line per run.
#
#   bench/txn-watch.sh
#   SYSTEMS=kv TXN_CONCURRENCY="16" FANOUT="100:1000" DURATION=5s bench/txn-watch.sh
#   # FANOUT is a list of WATCHERS:RATE (writes/s) pairs.
#
# Both clusters run at once and the systems alternate point by point, so
# that both see the same background load on this shared machine. Every run
# is bounded by --duration (watch-fanout: warmup, two phases and at most
# 30 s of draining).
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"
SYSTEMS=${SYSTEMS:-"kv etcd"}
TXN_CONCURRENCY=${TXN_CONCURRENCY:-"16 64"}
FANOUT=${FANOUT:-"1000:5000"}
DURATION=${DURATION:-10s}
WRITERS=${WRITERS:-64}
out=${OUT:-bench/out/txn-watch-$(date -u +%Y%m%dT%H%M%SZ)}
mkdir -p "$out"
results=$out/results.jsonl
# A thousand watch streams are a thousand sockets here and on the servers.
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
# Our own ports and data, apart from other benchmarks on this machine.
export KV_BASE_PORT=${KV_BASE_PORT:-39610} KV_BENCH_DIR=${KV_BENCH_DIR:-/tmp/kvbench-txnwatch}
export ETCD_BENCH_DIR=${ETCD_BENCH_DIR:-/tmp/etcdbench-txnwatch}

if [[ ${BUILD:-1} == 1 ]]; then
    cargo build --release -p kv-node && cargo build --release --example bench
fi
bench=$out/bench
cp target/release/examples/bench "$bench"
{
    git rev-parse HEAD
    git status --short
} >"$out/commit"

run() {
    local system=$1 label=$2; shift 2
    echo "== $system $label: $* (load average: $(cut -d' ' -f1-3 /proc/loadavg))" >&2
    "$bench" --json "$@" | tee -a "$out/$system.log" | tail -n1 |
        sed "s/^{/{\"system\":\"$system\",\"label\":\"$label\",\"loadavg\":\"$(cut -d' ' -f1 /proc/loadavg)\",/" >>"$results"
}

declare -A leader all pids
running=()
cleanup() { for s in "${running[@]}"; do "bench/$s-cluster.sh" stop; done; }
trap cleanup EXIT
for system in $SYSTEMS; do
    "bench/$system-cluster.sh" start
    running+=("$system")
done
for system in $SYSTEMS; do
    leader[$system]=$("bench/$system-cluster.sh" leader)
    pids[$system]=""
    for p in $("bench/$system-cluster.sh" pids); do pids[$system]+=" --pid $p"; done
    # The leader first (the writer's node), then the others, for the watchers.
    if [[ $system == kv ]]; then
        ports=$((KV_BASE_PORT)) ; list=()
        for i in 0 1 2; do list+=("http://127.0.0.1:$((ports + i))"); done
    else
        list=(http://127.0.0.1:12379 http://127.0.0.1:22379 http://127.0.0.1:32379)
    fi
    urls=${leader[$system]}
    for u in "${list[@]}"; do [[ $u != "${leader[$system]}" ]] && urls+=",$u"; done
    all[$system]=$urls
done
for c in $TXN_CONCURRENCY; do
    for system in $SYSTEMS; do
        # shellcheck disable=SC2086
        run "$system" txn --target "$system" --url "${leader[$system]}" ${pids[$system]} \
            --workload txn --concurrency "$c" --duration "$DURATION"
    done
done
for pair in $FANOUT; do
    for system in $SYSTEMS; do
        # shellcheck disable=SC2086
        run "$system" "fanout-$pair" --target "$system" --url "${all[$system]}" ${pids[$system]} \
            --workload watch-fanout --watchers "${pair%%:*}" --rate "${pair##*:}" \
            --concurrency "$WRITERS" --duration "$DURATION"
    done
done
echo "results in $results" >&2
