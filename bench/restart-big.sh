#!/usr/bin/env bash
# Issue 12's restart target: a node holding KEYS keys (default 10,000,000 of
# 100-byte values, about 1.1 GiB of live data) restarts after kill -9 and
# serves its first read in under 10 s.
#
# One node alone (a single-node cluster: the restart path is the same as a
# member's, and three 10M-key nodes would not fit beside other work in this
# machine's memory), release build, default flags, fsync on:
#   1. load KEYS keys with POST /kv/mput batches of BATCH, WRITERS at once
#      (with SHUFFLE=1 in a random order, the same every run: replaying
#      random inserts costs several times more per key than ascending ones);
#   2. POST /admin/snapshot (not with SNAPSHOT=0: then the node restarts
#      from whatever its own snapshot rules left, the state an operator
#      finds after a bulk load), then TAIL_BATCHES more batches (a WAL tail
#      that overwrites keys the snapshot holds); with TAIL_PUTS_SECONDS,
#      then also that long of random single-key puts over the keys
#      (examples/bench, 64 connections: a tail of many small entries, the
#      costliest to replay), then one more write of the probe key;
#      with SETTLE_S=N, the node is then left idle N seconds before the
#      first kill, so that a snapshot the load started can finish (the
#      restart of a node that had time to settle, rather than of one
#      killed in the middle of its snapshot write);
#   3. kill -9, start again, RESTARTS times: seconds until a stale read of
#      an overwritten key answers the tail's value, until /readyz is 200,
#      and the peak RSS of the restarted process.
#
#   bench/restart-big.sh                    # 10M keys, several minutes
#   KEYS=1000000 bench/restart-big.sh       # a quick one
#   TAIL_PUTS_SECONDS=60 bench/restart-big.sh   # plus ~1-2M single puts
#   BUILD=0 KV_NODE_BIN=/path/kv-node bench/restart-big.sh
#
# JSON lines in $OUT/results.jsonl. Every wait is bounded; the node is
# stopped by PID on exit.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"
export KEYS=${KEYS:-10000000} BATCH=${BATCH:-2000} VALUE_BYTES=${VALUE_BYTES:-100}
export WRITERS=${WRITERS:-4} TAIL_BATCHES=${TAIL_BATCHES:-20} RESTARTS=${RESTARTS:-3}
export TAIL_PUTS_SECONDS=${TAIL_PUTS_SECONDS:-0} SNAPSHOT=${SNAPSHOT:-1} SHUFFLE=${SHUFFLE:-0} SETTLE_S=${SETTLE_S:-0}
# Below the ephemeral range (32768-60999 here): a probe of a port nobody
# listens on can otherwise connect to itself and read its own request back.
export PORT=${KV_PORT:-29680}
export WORK_DIR=${KV_BENCH_DIR:-/tmp/kv-restartbench}
out=${OUT:-bench/out/restart-$(date -u +%Y%m%dT%H%M%SZ)}
mkdir -p "$out"
export RESULTS=$repo/$out/results.jsonl
if [[ ${BUILD:-1} == 1 ]]; then
    cargo build --release -p kv-node --bin kv-node && cargo build --release --example bench
fi
bin=${KV_NODE_BIN:-target/release/kv-node}
rm -rf "$WORK_DIR"; mkdir -p "$WORK_DIR"
cp "$bin" "$WORK_DIR/kv-node"
cp target/release/examples/bench "$WORK_DIR/bench"
git rev-parse HEAD >"$out/commit"

python3 - <<'PY'
import http.client, json, os, random, subprocess, threading, time

KEYS = int(os.environ["KEYS"]); BATCH = int(os.environ["BATCH"])
VALUE_BYTES = int(os.environ["VALUE_BYTES"]); WRITERS = int(os.environ["WRITERS"])
TAIL_BATCHES = int(os.environ["TAIL_BATCHES"]); RESTARTS = int(os.environ["RESTARTS"])
TAIL_PUTS_SECONDS = int(os.environ["TAIL_PUTS_SECONDS"])
SNAPSHOT = os.environ["SNAPSHOT"] == "1"
SHUFFLE = os.environ["SHUFFLE"] == "1"
SETTLE_S = float(os.environ["SETTLE_S"])
PORT = int(os.environ["PORT"]); WORK = os.environ["WORK_DIR"]
results = open(os.environ["RESULTS"], "a")
proc = None


def record(kind, **fields):
    results.write(json.dumps(dict(kind=kind, **fields)) + "\n"); results.flush()
    print(f"== {kind}: " + ", ".join(f"{k}={v}" for k, v in fields.items()), flush=True)


def key(i):
    # The bench tool's key names, so that its random puts overwrite these.
    return f"bench{i:011d}"


def value(i, gen):
    head = f"{gen}-{i:08d}-"
    return head + "x" * (VALUE_BYTES - len(head))


def request(method, path, body=None, timeout=10.0):
    conn = http.client.HTTPConnection("127.0.0.1", PORT, timeout=timeout)
    try:
        conn.request(method, path, body=body, headers={"Content-Type": "application/json"})
        reply = conn.getresponse()
        return reply.status, reply.read()
    finally:
        conn.close()


def start():
    global proc
    log = open(os.path.join(WORK, "node.log"), "a")
    proc = subprocess.Popen([os.path.join(WORK, "kv-node"), "--id", "node1", "--listen",
                             f"127.0.0.1:{PORT}", "--data-dir", os.path.join(WORK, "node1")],
                            stdout=log, stderr=log)


def rss_kib():
    with open(f"/proc/{proc.pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return 0


def wait_for(what, probe, within):
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            if probe():
                return
        except (OSError, http.client.HTTPException):
            pass
        if proc.poll() is not None:
            raise SystemExit(f"restart-big: the node exited ({proc.returncode}) waiting for {what}")
        time.sleep(0.02)
    raise SystemExit(f"restart-big: {what} not within {within} s")


def mput(batches, gen):
    def writer(w):
        conn = None
        for b in range(w, len(batches), WRITERS):
            body = json.dumps({"entries": [{"key": key(n), "value": value(n, gen)} for n in batches[b]],
                               "client_id": f"load-{gen}-{w}", "seq": b + 1}).encode()
            deadline = time.monotonic() + 120
            while True:
                try:
                    if conn is None:
                        conn = http.client.HTTPConnection("127.0.0.1", PORT, timeout=60)
                    conn.request("POST", "/kv/mput", body=body, headers={"Content-Type": "application/json"})
                    reply = conn.getresponse(); text = reply.read()
                    if reply.status == 200:
                        break
                    if reply.status not in (503, 504):
                        raise SystemExit(f"mput: {reply.status} {text[:200]}")
                except (OSError, http.client.HTTPException):
                    conn = None
                if time.monotonic() > deadline:
                    raise SystemExit(f"mput batch {b}: no success within 120 s")
                time.sleep(0.05)
    threads = [threading.Thread(target=writer, args=(w,)) for w in range(WRITERS)]
    for t in threads: t.start()
    for t in threads: t.join()


try:
    start()
    wait_for("the first /readyz", lambda: request("GET", "/readyz", timeout=1)[0] == 200, 30)
    started = time.monotonic()
    order = list(range(KEYS))
    if SHUFFLE:
        random.Random(12).shuffle(order)
    mput([order[s:s + BATCH] for s in range(0, KEYS, BATCH)], 0)
    load_s = time.monotonic() - started
    record("load", keys=KEYS, seconds=round(load_s, 1), keys_per_s=round(KEYS / load_s))
    if SNAPSHOT:
        t0 = time.monotonic()
        code, body = request("POST", "/admin/snapshot", timeout=600)
        assert code == 200, body
        record("snapshot", seconds=round(time.monotonic() - t0, 2), answer=json.loads(body))
    mput([list(range(b * BATCH, (b + 1) * BATCH)) for b in range(TAIL_BATCHES)], 1)
    probe_gen = 1
    if TAIL_PUTS_SECONDS > 0:
        status = json.loads(request("GET", "/status")[1])
        before = status.get("last_applied")
        subprocess.run([os.path.join(WORK, "bench"), "--target", "kv", "--url", f"http://127.0.0.1:{PORT}",
                        "--workload", "put", "--keyspace", str(KEYS), "--value-bytes", str(VALUE_BYTES),
                        "--preload", "0", "--concurrency", "64", "--duration", f"{TAIL_PUTS_SECONDS}s"],
                       check=True, stdout=subprocess.DEVNULL)
        # The probe written last: a read of it after a restart proves the
        # whole tail was replayed.
        mput([[0]], 2)
        probe_gen = 2
        status = json.loads(request("GET", "/status")[1])
        after = status.get("last_applied")
        record("tail-puts", seconds=TAIL_PUTS_SECONDS, entries=(after - before) if before and after else None)
    time.sleep(SETTLE_S)
    code, body = request("GET", "/status")
    status = json.loads(body)
    du = subprocess.run(["du", "-sb", os.path.join(WORK, "node1")], capture_output=True, text=True).stdout.split()[0]
    record("before-restart", live_bytes=status.get("live_bytes"), keys=status.get("keys"),
           last_applied=status.get("last_applied"), snapshot_index=status.get("snapshot_index"),
           snapshot_bytes=status.get("snapshot_bytes"), data_dir_bytes=int(du), rss_kib=rss_kib())
    probe = key(0)
    for r in range(RESTARTS):
        proc.kill(); proc.wait()
        t0 = time.monotonic()
        start()
        def read_ok():
            code, body = request("GET", f"/kv/{probe}?consistency=stale", timeout=1)
            return code == 200 and json.loads(body)["value"] == value(0, probe_gen)
        wait_for("a stale read after the restart", read_ok, 120)
        read_s = time.monotonic() - t0
        wait_for("/readyz after the restart", lambda: request("GET", "/readyz", timeout=1)[0] == 200, 120)
        ready_s = time.monotonic() - t0
        record("restart", round=r + 1, first_read_s=round(read_s, 2), ready_s=round(ready_s, 2),
               peak_rss_kib=rss_kib(), loadavg=open("/proc/loadavg").read().split()[0])
finally:
    if proc is not None and proc.poll() is None:
        proc.kill()
PY
echo "results in $RESULTS"
