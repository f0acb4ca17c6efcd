#!/usr/bin/env bash
# Runs the benchmark matrix of issue 4 on local 3-node clusters of kv-node and
# etcd 3.4, load sent to the leader, and writes one JSON line per run.
#
#   bench/run-all.sh                      # everything, 15 s per point
#   SYSTEMS=kv CONCURRENCY="16 64" DURATION=5s bench/run-all.sh
#   bench/table.py bench/out/*/results.jsonl   # markdown tables
#
# Starts a fresh cluster of each system, preloads 100k keys into each (RSS is
# sampled after it), then linearizable reads and writes at each concurrency,
# alternating the systems. Every run is bounded by --duration.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"
SYSTEMS=${SYSTEMS:-"kv etcd"}
CONCURRENCY=${CONCURRENCY:-"1 16 64 256"}
WORKLOADS=${WORKLOADS:-"get put"}
DURATION=${DURATION:-15s}
KEYS=${KEYS:-100000}
out=${OUT:-bench/out/$(date -u +%Y%m%dT%H%M%SZ)}
mkdir -p "$out"
results=$out/results.jsonl

# BUILD=0 skips the build (e.g. with KV_NODE_BIN naming a binary built elsewhere).
if [[ ${BUILD:-1} == 1 ]]; then
    cargo build --release -p kv-node && cargo build --release --example bench
fi
bench=$out/bench
cp target/release/examples/bench "$bench"
{
    git rev-parse HEAD
    git status --short
    echo "KV_NODE_BIN=${KV_NODE_BIN:-target/release/kv-node}"
} >"$out/commit"


# One bench run; appends its JSON line (tagged with the system) to results.
run() {
    local system=$1 label=$2; shift 2
    echo "== $system $label: $* (load average: $(cut -d' ' -f1-3 /proc/loadavg))" >&2
    "$bench" --json "$@" | tee -a "$out/$system.log" | tail -n1 |
        sed "s/^{/{\"system\":\"$system\",\"label\":\"$label\",\"loadavg\":\"$(cut -d' ' -f1 /proc/loadavg)\",/" >>"$results"
}

# Both clusters run at once (an idle cluster costs about 1% CPU per node) and
# the systems alternate point by point, so that both see the same background
# load on this shared machine.
declare -A common
running=()
cleanup() { for s in "${running[@]}"; do "bench/$s-cluster.sh" stop; done; }
trap cleanup EXIT
for system in $SYSTEMS; do
    "bench/$system-cluster.sh" start
    running+=("$system")
done
for system in $SYSTEMS; do
    leader=$("bench/$system-cluster.sh" leader)
    pids=""
    for p in $("bench/$system-cluster.sh" pids); do pids+=" --pid $p"; done
    common[$system]="--target $system --url $leader --keyspace $KEYS$pids"
    # Preload alone, then sample RSS per node (the json line's rss_kib).
    # shellcheck disable=SC2086
    "$bench" ${common[$system]} --preload "$KEYS" --duration 0s
    # shellcheck disable=SC2086
    run "$system" after-preload ${common[$system]} --workload get --preload 0 --concurrency 1 --duration 1s --warmup 0s
done
for workload in $WORKLOADS; do
    for c in $CONCURRENCY; do
        for system in $SYSTEMS; do
            consistency=""; [[ $workload == get ]] && consistency="--consistency linearizable"
            # shellcheck disable=SC2086
            run "$system" matrix ${common[$system]} --workload "$workload" $consistency \
                --preload 0 --concurrency "$c" --duration "$DURATION"
        done
    done
done
echo "results in $results" >&2
