"""Python filelock.SoftReadWriteLock (read or write) or SoftFileLease ("lease") as a waiter for
filelock-benchmark srw-wake: on each "go", acquire, print the wake-up ns, release."""
import sys
import time

from filelock import SoftFileLease, SoftReadWriteLock

if sys.argv[2] == "lease":
    lock = SoftFileLease(sys.argv[1])
    acquire = lock.acquire
else:
    lock = SoftReadWriteLock(sys.argv[1])
    acquire = lock.acquire_write if sys.argv[2] == "write" else lock.acquire_read
for _ in sys.stdin:
    acquire()
    woke = time.clock_gettime_ns(time.CLOCK_MONOTONIC)
    lock.release()
    print(woke, flush=True)
