#!/usr/bin/env bash
# usage: bench/storage-format-cost.sh LABEL BIN ; runs put at c=1 and c=64 (10 s each), then restart timing.
set -euo pipefail
label=$1; bin=$2
repo=$(cd "$(dirname "$0")/.." && pwd)
export KV_BASE_PORT=39710 KV_BENCH_DIR=${KV_BENCH_DIR:-/tmp/kvbench-storage} KV_NODE_BIN=$bin
bench=${BENCH_BIN:-$repo/target/release/examples/bench}
$repo/bench/kv-cluster.sh start
leader=$($repo/bench/kv-cluster.sh leader)
for c in 1 64; do
  $bench --url "$leader" --concurrency $c --duration 10s --workload put --json 2>/dev/null | grep '^{' | sed "s/^/$label c=$c /"
done
$repo/bench/kv-cluster.sh stop
# Restart time: node2 alone over its data dir, spawn until /status answers.
for i in 1 2 3; do
  start=$(date +%s.%N)
  $KV_BENCH_DIR/kv-node --id node2 --listen 127.0.0.1:39711 --peers node1=http://127.0.0.1:39710,node3=http://127.0.0.1:39712 --data-dir $KV_BENCH_DIR/node2 > $KV_BENCH_DIR/restart.log 2>&1 &
  pid=$!
  for _ in $(seq 400); do curl -sf --max-time 1 http://127.0.0.1:39711/status >/dev/null 2>&1 && break; sleep 0.01; done
  end=$(date +%s.%N)
  echo "$label restart $i: $(echo "$end - $start" | bc) s, wal $(du -sb $KV_BENCH_DIR/node2/wal | cut -f1) bytes, segments $(ls $KV_BENCH_DIR/node2/wal | wc -l)"
  kill -TERM $pid; wait $pid 2>/dev/null || true
done
