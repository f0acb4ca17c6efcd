#!/usr/bin/env python3
"""What one 4 KiB write + fdatasync costs on this machine's disk, by how the
file's blocks were prepared (issue 12's one-connection latency floor):

- append:    the file grows with each write (the size changes: ext4 commits
             its journal in every fdatasync);
- fallocate: blocks reserved but unwritten (each first write converts an
             extent: a journal commit again) -- what kv-node's WAL does;
- overwrite: blocks already written once (data only, no journal).

    python3 bench/fsync-kinds.py [DIR] [COUNT]    # DIR on the disk to test (default /tmp)
"""
import os
import sys
import time

directory = sys.argv[1] if len(sys.argv) > 1 else "/tmp"
count = int(sys.argv[2]) if len(sys.argv) > 2 else 2000
block = b"x" * 4096


def measure(name, prepare):
    path = os.path.join(directory, f"fsync-kinds-{name}")
    if os.path.exists(path):
        os.unlink(path)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        prepare(fd)
        os.fsync(fd)
        times = []
        for i in range(count):
            started = time.perf_counter()
            os.pwrite(fd, block, i * 4096)
            os.fdatasync(fd)
            times.append(time.perf_counter() - started)
    finally:
        os.close(fd)
        os.unlink(path)
    times.sort()
    p = lambda q: times[int(q * (len(times) - 1))] * 1e3
    print(f"{name:10} p50 {p(0.5):.3f} ms  p90 {p(0.9):.3f} ms  p99 {p(0.99):.3f} ms")


measure("append", lambda fd: None)
measure("fallocate", lambda fd: os.posix_fallocate(fd, 0, count * 4096))
measure("overwrite", lambda fd: os.pwrite(fd, b"\0" * (count * 4096), 0))
