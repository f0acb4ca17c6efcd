#!/usr/bin/env bash
# Starts, stops and inspects a local 3-node etcd 3.4 cluster on 127.0.0.1 for
# side-by-side benchmarks: default settings (fsync on), data in /tmp.
# Needs Debian's etcd-server (apt-get install -y etcd-server etcd-client).
#
#   bench/etcd-cluster.sh start    # clients on 127.0.0.1:12379, 22379, 32379
#   bench/etcd-cluster.sh leader   # prints the leader's client URL
#   bench/etcd-cluster.sh pids
#   bench/etcd-cluster.sh stop     # SIGTERM, then SIGKILL after 5 s, by PID
set -euo pipefail
dir=${ETCD_BENCH_DIR:-/tmp/etcdbench}
bin=${ETCD_BIN:-$(command -v etcd || echo /usr/bin/etcd)}
names=(infra1 infra2 infra3)
client_ports=(12379 22379 32379)
peer_ports=(12380 22380 32380)

start() {
    [[ -e $dir/pids ]] && { echo "already running? $dir/pids exists; stop first" >&2; exit 1; }
    for p in "${client_ports[@]}" "${peer_ports[@]}"; do
        if ss -ltnH "sport = :$p" | grep -q .; then echo "port $p is in use" >&2; exit 1; fi
    done
    rm -rf "$dir"; mkdir -p "$dir"
    local cluster=""
    for i in 0 1 2; do cluster+="${cluster:+,}${names[$i]}=http://127.0.0.1:${peer_ports[$i]}"; done
    for i in 0 1 2; do
        "$bin" --name "${names[$i]}" --data-dir "$dir/${names[$i]}" \
            --listen-client-urls "http://127.0.0.1:${client_ports[$i]}" \
            --advertise-client-urls "http://127.0.0.1:${client_ports[$i]}" \
            --listen-peer-urls "http://127.0.0.1:${peer_ports[$i]}" \
            --initial-advertise-peer-urls "http://127.0.0.1:${peer_ports[$i]}" \
            --initial-cluster "$cluster" --initial-cluster-token bench \
            --initial-cluster-state new --logger zap --log-level warn \
            >"$dir/${names[$i]}.log" 2>&1 &
        echo $! >>"$dir/pids"
    done
    for _ in $(seq 100); do
        for p in $(cat "$dir/pids"); do
            kill -0 "$p" 2>/dev/null || { echo "etcd $p exited; logs in $dir" >&2; stop; exit 1; }
        done
        leader >/dev/null 2>&1 && { echo "etcd cluster up, leader $(leader)"; return; }
        sleep 0.1
    done
    echo "no leader after 10 s; logs in $dir" >&2; exit 1
}

# The member whose own id is the leader id in /v3/maintenance/status.
leader() {
    for p in "${client_ports[@]}"; do
        local s; s=$(curl -sf --max-time 1 -X POST "http://127.0.0.1:$p/v3/maintenance/status" -d '{}') || continue
        local me leader
        me=$(grep -o '"member_id":"[0-9]*"' <<<"$s" | grep -o '[0-9]\+')
        leader=$(grep -o '"leader":"[0-9]*"' <<<"$s" | grep -o '[0-9]\+')
        if [[ -n $me && $me == "$leader" ]]; then echo "http://127.0.0.1:$p"; return 0; fi
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
    *) echo "usage: $0 start|stop|leader|pids" >&2; exit 2 ;;
esac
