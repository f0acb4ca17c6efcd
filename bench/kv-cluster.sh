#!/usr/bin/env bash
# Starts, stops and inspects a local 3-node kv-node cluster on 127.0.0.1 for
# benchmarks: release build, default settings (fsync on), data in /tmp.
#
#   bench/kv-cluster.sh start    # nodes on 127.0.0.1:$KV_BASE_PORT..+2 (default 39510)
#   bench/kv-cluster.sh leader   # prints the leader's URL
#   bench/kv-cluster.sh pids     # prints the three PIDs
#   bench/kv-cluster.sh stop     # SIGTERM, then SIGKILL after 5 s, by PID
#
# The binary is copied to $KV_BENCH_DIR first so that a rebuild elsewhere does
# not change it under a running benchmark. KV_NODE_BIN overrides the binary.
# Diagnostics only (not the default settings): KV_EXTRA_ARGS adds flags, e.g.
# "--snapshot-entries 0"; KV_WRAPPER runs each node under a command, e.g.
# "eatmydata" (fsync made a no-op) to measure what fsync costs.
set -euo pipefail
base_port=${KV_BASE_PORT:-39510}
dir=${KV_BENCH_DIR:-/tmp/kvbench}
repo=$(cd "$(dirname "$0")/.." && pwd)
bin=${KV_NODE_BIN:-$repo/target/release/kv-node}
urls=(); for i in 0 1 2; do urls+=("http://127.0.0.1:$((base_port + i))"); done

start() {
    [[ -e $dir/pids ]] && { echo "already running? $dir/pids exists; stop first" >&2; exit 1; }
    check_ports_free $base_port $((base_port + 1)) $((base_port + 2))
    rm -rf "$dir"; mkdir -p "$dir"
    cp "$bin" "$dir/kv-node"
    for i in 0 1 2; do
        local peers=()
        for j in 0 1 2; do [[ $j != "$i" ]] && peers+=("node$((j + 1))=${urls[$j]}"); done
        local peer_list; peer_list=$(IFS=,; echo "${peers[*]}")
        # shellcheck disable=SC2086 # word splitting of the diagnostics is wanted
        ${KV_WRAPPER:-} "$dir/kv-node" ${KV_EXTRA_ARGS:-} --id "node$((i + 1))" --listen "127.0.0.1:$((base_port + i))" \
            --peers "$peer_list" --data-dir "$dir/node$((i + 1))" \
            >"$dir/node$((i + 1)).log" 2>&1 &
        echo $! >>"$dir/pids"
    done
    for _ in $(seq 100); do
        all_alive || { echo "a node exited; logs in $dir" >&2; stop; exit 1; }
        leader >/dev/null 2>&1 && { echo "kv-node cluster up, leader $(leader)"; return; }
        sleep 0.1
    done
    echo "no leader after 10 s; logs in $dir" >&2; exit 1
}

check_ports_free() {
    for p in "$@"; do
        if ss -ltnH "sport = :$p" | grep -q .; then
            echo "port $p is in use (another cluster?); set KV_BASE_PORT" >&2; exit 1
        fi
    done
}

all_alive() {
    for p in $(cat "$dir/pids"); do kill -0 "$p" 2>/dev/null || return 1; done
}

leader() {
    for u in "${urls[@]}"; do
        if curl -sf --max-time 1 "$u/status" | grep -q '"role":"leader"'; then echo "$u"; return 0; fi
    done
    return 1
}

stop() {
    [[ -e $dir/pids ]] || return 0
    local pids; pids=$(cat "$dir/pids")
    for p in $pids; do kill -TERM "$p" 2>/dev/null || true; done
    for _ in $(seq 50); do
        local alive=0
        for p in $pids; do kill -0 "$p" 2>/dev/null && alive=1; done
        [[ $alive == 0 ]] && break
        sleep 0.1
    done
    for p in $pids; do kill -KILL "$p" 2>/dev/null || true; done
    rm -f "$dir/pids"
}

case ${1:-} in
    start) start ;;
    stop) stop ;;
    leader) leader ;;
    pids) cat "$dir/pids" ;;
    leader-pid)
        l=$(leader); port=${l##*:}; sed -n "$((port - base_port + 1))p" "$dir/pids" ;;
    *) echo "usage: $0 start|stop|leader|leader-pid|pids" >&2; exit 2 ;;
esac
