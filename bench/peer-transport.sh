#!/bin/bash
# Usage: bench/peer-transport.sh (needs target/release/kv-node and target/release/examples/bench)
# Stream vs POST peer transport, same binary, back to back.
cd "$(dirname "$0")/.."
for round in 1 2; do
for mode in stream post; do
  if [ $mode = post ]; then export KV_NODE_PEER_TRANSPORT=post; else unset KV_NODE_PEER_TRANSPORT; fi
  rm -rf /tmp/streambench
  KV_BENCH_DIR=/tmp/streambench bench/kv-cluster.sh start >/dev/null 2>&1
  L=$(bench/kv-cluster.sh leader 2>/dev/null)
  target/release/examples/bench --url $L --preload 10000 --duration 0s --concurrency 64 >/dev/null 2>&1
  for c in 1 64; do
    echo "round=$round mode=$mode conns=$c $(target/release/examples/bench --url $L --workload put --preload 0 --concurrency $c --duration 8s 2>&1 | grep "^ops ")"
  done
  KV_BENCH_DIR=/tmp/streambench bench/kv-cluster.sh stop >/dev/null 2>&1
done
done
