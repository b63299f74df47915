"""One contender for run.sh's contention section (see baseline.c contend-worker): prints "ready",
waits for "go", then N times acquires a Python filelock lock, read-increment-writes COUNTER and
releases; prints the longest single wait for the lock in ns."""
import os
import sys
import time

from filelock import FileLock, SoftFileLock

path, counter_path, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
lock = SoftFileLock(path) if "--soft" in sys.argv else FileLock(path)
counter = os.open(counter_path, os.O_RDWR)
print("ready", flush=True)
sys.stdin.readline()
longest = 0
for _ in range(count):
    start = time.perf_counter_ns()
    lock.acquire()
    waited = time.perf_counter_ns() - start
    longest = max(longest, waited)
    value = int(os.pread(counter, 32, 0) or b"0") + 1
    os.pwrite(counter, str(value).encode(), 0)
    lock.release()
os.close(counter)
print(longest, flush=True)
