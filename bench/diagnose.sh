#!/usr/bin/env bash
# Where a kv-node write's time goes: the same write load on a fresh 3-node
# cluster in variants that each remove one cost, plus the leader's own
# counters (fsyncs, ready rounds, peer batches per write) from /metrics.
#
#   bench/diagnose.sh                              # all variants, 8 s per point
#   VARIANTS="default no-snapshots" CONCURRENCY="1 64" bench/diagnose.sh
#
# Variants (diagnostics, not the settings of the headline numbers):
#   default       kv-node as shipped
#   no-snapshots  --snapshot-entries 0: no snapshot of the 100k-key state
#                 every 10,000 entries on the driver thread
#   no-fsync      every node under eatmydata (fsync and fdatasync are no-ops;
#                 apt-get install eatmydata): the cost of the disk
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"
VARIANTS=${VARIANTS:-"default no-snapshots no-fsync"}
CONCURRENCY=${CONCURRENCY:-"1 16 64"}
DURATION=${DURATION:-8s}
KEYS=${KEYS:-100000}
out=${OUT:-bench/out/diagnose-$(date -u +%Y%m%dT%H%M%SZ)}
mkdir -p "$out"
bench=target/release/examples/bench
trap 'bench/kv-cluster.sh stop' EXIT

counters() {
    curl -sf "$1/metrics" | awk '
        /^kv_proposals_total /            { p = $2 }
        /^kv_fsync_seconds_count /        { n = $2 }
        /^kv_fsync_seconds_sum /          { s = $2 }
        /^kv_ready_rounds_total /         { r = $2 }
        /^kv_peer_batches_sent_total/     { b += $2 }
        /^kv_snapshots_total /            { snap = $2 }
        END { print p, n, s, r, b, snap }'
}

for variant in $VARIANTS; do
    case $variant in
        default) extra="" wrapper="" ;;
        no-snapshots) extra="--snapshot-entries 0" wrapper="" ;;
        no-fsync) extra="" wrapper="eatmydata" ;;
        *) echo "unknown variant $variant" >&2; exit 2 ;;
    esac
    KV_EXTRA_ARGS=$extra KV_WRAPPER=$wrapper bench/kv-cluster.sh start
    leader=$(bench/kv-cluster.sh leader)
    pids=(); for p in $(bench/kv-cluster.sh pids); do pids+=(--pid "$p"); done
    "$bench" --url "$leader" --preload "$KEYS" --duration 0s 2>/dev/null
    for c in $CONCURRENCY; do
        read -r p0 n0 s0 r0 b0 k0 < <(counters "$leader")
        line=$("$bench" --url "$leader" --workload put --concurrency "$c" --duration "$DURATION" \
            "${pids[@]}" --json 2>/dev/null | tail -n1)
        read -r p1 n1 s1 r1 b1 k1 < <(counters "$leader")
        extra_json=$(awk -v p="$((p1 - p0))" -v n="$((n1 - n0))" -v s0="$s0" -v s1="$s1" \
            -v r="$((r1 - r0))" -v b="$((b1 - b0))" -v k="$((k1 - k0))" 'BEGIN {
            printf "\"leader_fsyncs_per_write\":%.3f,\"leader_fsync_ms_mean\":%.3f,", n / p, (s1 - s0) * 1000 / (n ? n : 1)
            printf "\"leader_ready_rounds_per_write\":%.3f,\"leader_peer_batches_per_write\":%.3f,", r / p, b / p
            printf "\"leader_snapshots\":%d,", k }')
        echo "{\"variant\":\"$variant\",\"loadavg\":\"$(cut -d' ' -f1 /proc/loadavg)\",$extra_json${line#\{}" |
            tee -a "$out/results.jsonl"
    done
    bench/kv-cluster.sh stop
done
echo "results in $out/results.jsonl" >&2
