#!/usr/bin/env python3
"""Markdown tables from bench/run-all.sh's results.jsonl files.

    bench/table.py bench/out/*/results.jsonl

A later line for the same (system, workload, concurrency) replaces an earlier
one, so reruns of single points can be appended to a results file."""
import json
import sys

rows, rss = {}, {}
for path in sys.argv[1:]:
    for line in open(path):
        r = json.loads(line)
        if r.get("label") == "after-preload":
            rss[r["system"]] = r
        else:
            rows[(r["system"], r["workload"], r["concurrency"])] = r


def cell(r, key, fmt):
    return fmt.format(r[key]) if r else "-"


def errors(r):
    return ", ".join(f"{k}: {v}" for k, v in r["errors"].items()) if r and r["errors"] else "0"


for workload, title in (("put", "Writes (PUT, 100-byte values)"), ("get", "Linearizable reads (GET)")):
    concurrencies = sorted({c for (s, w, c) in rows if w == workload})
    if not concurrencies:
        continue
    print(f"### {title}\n")
    print("| conns | kv-node ops/s | p50 ms | p99 ms | p999 ms | etcd ops/s | p50 ms | p99 ms | p999 ms "
          "| ops/s kv/etcd | p99 kv/etcd | errors kv / etcd | load avg kv / etcd |")
    print("|" + "---|" * 13)
    for c in concurrencies:
        k, e = rows.get(("kv", workload, c)), rows.get(("etcd", workload, c))
        ratio = f"{k['ops_per_second'] / e['ops_per_second']:.2f}x" if k and e else "-"
        p99 = f"{k['p99_ms'] / e['p99_ms']:.2f}" if k and e else "-"
        print(f"| {c} | {cell(k, 'ops_per_second', '{:,.0f}')} | {cell(k, 'p50_ms', '{:.2f}')} "
              f"| {cell(k, 'p99_ms', '{:.2f}')} | {cell(k, 'p999_ms', '{:.2f}')} "
              f"| {cell(e, 'ops_per_second', '{:,.0f}')} | {cell(e, 'p50_ms', '{:.2f}')} "
              f"| {cell(e, 'p99_ms', '{:.2f}')} | {cell(e, 'p999_ms', '{:.2f}')} | {ratio} | {p99} "
              f"| {errors(k)} / {errors(e)} | {k['loadavg'] if k else '-'} / {e['loadavg'] if e else '-'} |")
    print()

print("### Server CPU per 1,000 operations (utime+stime, summed over the 3 nodes)\n")
print("| workload | conns | kv-node ms CPU / 1000 ops | etcd ms CPU / 1000 ops | load generator CPU s (kv / etcd) |")
print("|---|---|---|---|---|")
for workload in ("put", "get"):
    for c in sorted({c for (s, w, c) in rows if w == workload}):
        k, e = rows.get(("kv", workload, c)), rows.get(("etcd", workload, c))
        print(f"| {workload} | {c} | {cell(k, 'server_cpu_ms_per_1000_ops', '{:.0f}')} "
              f"| {cell(e, 'server_cpu_ms_per_1000_ops', '{:.0f}')} "
              f"| {cell(k, 'bench_cpu_seconds', '{:.1f}')} / {cell(e, 'bench_cpu_seconds', '{:.1f}')} |")
print()

if rss:
    print("### RSS per node after preloading the key space (VmRSS)\n")
    print("| system | node 1 MiB | node 2 MiB | node 3 MiB |")
    print("|---|---|---|---|")
    for system, r in sorted(rss.items()):
        print(f"| {system} | " + " | ".join(f"{p['rss_kib'] / 1024:.1f}" for p in r["processes"]) + " |")
