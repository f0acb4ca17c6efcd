#!/usr/bin/env python3
"""WAL fdatasync latency beside a large file written with an fdatasync every
STEP (kv-storage's SYNC_STEP_BYTES for snapshots).

    python3 bench/sync-step.py STEP_MIB TOTAL_MIB [RATE_MIB_PER_S]

A thread writes 4 KiB at a time into a preallocated "WAL" file and
fdatasyncs each write, as a node under load does. After 1 s the main thread
writes TOTAL_MIB to a new "snapshot" file in 256 KiB writes, fdatasyncing
every STEP_MIB, optionally paced to RATE. Prints the WAL fdatasync
p50/p99/max before and during the big write. Files go to /tmp/disktest and
are removed at the end. Used to choose SYNC_STEP_BYTES (stop 31).
"""
import shutil
import os, time, threading, sys
step = int(float(sys.argv[1])*1024*1024); total = int(sys.argv[2])*1024*1024; rate = float(sys.argv[3]) if len(sys.argv)>3 else 0
d='/tmp/disktest'; os.makedirs(d, exist_ok=True)
stop=False; lat=[]
def wal():
    fd=os.open(d+'/wal', os.O_WRONLY|os.O_CREAT, 0o644)
    os.posix_fallocate(fd,0,64<<20); os.fsync(fd)
    buf=b'x'*4096; off=0
    while not stop:
        t=time.perf_counter(); os.pwrite(fd,buf,off); os.fdatasync(fd); lat.append(time.perf_counter()-t)
        off=(off+4096)%(64<<20)
        time.sleep(0.0005)
th=threading.Thread(target=wal); th.start(); time.sleep(1)
base=sorted(lat); n0=len(lat)
fd=os.open(d+'/snap', os.O_WRONLY|os.O_CREAT|os.O_TRUNC, 0o644)
chunk=b'y'*(256*1024); w=0; uns=0; t0=time.perf_counter()
while w<total:
    os.write(fd,chunk); w+=len(chunk); uns+=len(chunk)
    if uns>=step: os.fdatasync(fd); uns=0
    if rate: 
        ahead = w/(rate*1024*1024) - (time.perf_counter()-t0)
        if ahead>0: time.sleep(ahead)
os.fsync(fd); el=time.perf_counter()-t0
during=sorted(lat[n0:]); stop=True; th.join()
def q(a,p): return a[min(len(a)-1,int(len(a)*p))]*1000
print(f"step {step>>20}MB rate {rate} write {total>>20}MB in {el:.2f}s ({total/el/1e6:.0f} MB/s); base p50 {q(base,.5):.2f} p99 {q(base,.99):.2f}; during n={len(during)} p50 {q(during,.5):.2f} p99 {q(during,.99):.2f} max {during[-1]*1000:.1f}")
os.unlink(d+'/snap')
shutil.rmtree(d, ignore_errors=True)
