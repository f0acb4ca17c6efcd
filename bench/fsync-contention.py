#!/usr/bin/env python3
"""What a commit's fsyncs cost when the members share one disk (issue 12's
one-connection latency): N threads, each with its own file of written
zeros (as kv-node's WAL segments), write 150 bytes and fdatasync at the
same moment, then wait 0.3 ms, COUNT times. A three-member commit needs
two of three durable, so the second-fastest of three is what one put
waits for.

    python3 bench/fsync-contention.py [DIR] [COUNT]   # DIR on the disk to test (default /tmp)

Prints, for 1, 2 and 3 threads, the median of the k-th fastest fdatasync
of each round.
"""
import os
import statistics
import sys
import threading
import time

directory = sys.argv[1] if len(sys.argv) > 1 else "/tmp"
count = int(sys.argv[2]) if len(sys.argv) > 2 else 2000
record = b"x" * 150


def run(threads):
    barrier = threading.Barrier(threads)
    times = [[0.0] * count for _ in range(threads)]
    paths = [os.path.join(directory, f"fsync-contention-{i}") for i in range(threads)]

    def worker(i):
        fd = os.open(paths[i], os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            os.write(fd, bytes(16 << 20))
            os.fsync(fd)
            offset = 0
            for n in range(count):
                barrier.wait()
                started = time.perf_counter()
                os.pwrite(fd, record, offset)
                os.fdatasync(fd)
                times[i][n] = time.perf_counter() - started
                offset += len(record)
                barrier.wait()
                if i == 0:
                    time.sleep(0.0003)
        finally:
            os.close(fd)
            os.unlink(paths[i])

    workers = [threading.Thread(target=worker, args=(i,)) for i in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    ranked = [sorted(times[i][n] for i in range(threads)) for n in range(count)]
    for k in range(threads):
        median = statistics.median(r[k] for r in ranked) * 1e6
        print(f"{threads} at once: fastest #{k + 1}: median {median:.0f} us")


for threads in (1, 2, 3):
    run(threads)
