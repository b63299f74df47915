"""ns per Python filelock.SoftReadWriteLock acquire_read (or acquire_write) + release, or with
"lease" per SoftFileLease acquire + release."""
import sys
import time

from filelock import SoftFileLease, SoftReadWriteLock

count = int(sys.argv[2])
if sys.argv[3] == "lease":
    lock = SoftFileLease(sys.argv[1])
    acquire, release = lock.acquire, lock.release
else:
    lock = SoftReadWriteLock(sys.argv[1])
    acquire = lock.acquire_write if sys.argv[3] == "write" else lock.acquire_read
    release = lock.release
start = time.perf_counter_ns()
for _ in range(count):
    acquire()
    release()
print((time.perf_counter_ns() - start) / count)
