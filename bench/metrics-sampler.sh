#!/usr/bin/env bash
# Samples a local kv-node cluster's snapshot progress once a second beside a
# benchmark: for each node its applied index, stored snapshot index, chain
# bytes and snapshots taken (from /metrics), and the data directory's size.
#
#   bench/metrics-sampler.sh /tmp/samples.log &   # then run bench/scale.sh
#
# PORTS (default the bench cluster's "39510 39511 39512"), DIR (default
# /tmp/kvbench) and SAMPLES (default 400, one a second) override; every
# request is bounded by a 1 s timeout.
set -uo pipefail
out=${1:?usage: bench/metrics-sampler.sh OUTFILE}
ports=${PORTS:-"39510 39511 39512"}
dir=${DIR:-/tmp/kvbench}
: >"$out"
for _ in $(seq "${SAMPLES:-400}"); do
    line="$(date +%s)"
    for p in $ports; do
        m=$(curl -sf --max-time 1 "http://127.0.0.1:$p/metrics" 2>/dev/null |
            grep -E "^(kv_snapshots_total|kv_raft_snapshot_index|kv_raft_applied_index|kv_snapshot_bytes) " |
            awk '{printf "%s=%s ", $1, $2}')
        line="$line | $p $m"
    done
    echo "$line $(du -sm "$dir" 2>/dev/null | cut -f1)MB" >>"$out"
    sleep 1
done
