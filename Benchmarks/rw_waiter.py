"""Python filelock.ReadWriteLock as a waiter for the C holder: on each "go", acquire the read (or
write) lock, print the wake-up ns, release."""
import sys
import time

from filelock import ReadWriteLock

lock = ReadWriteLock(sys.argv[1])
acquire = lock.acquire_write if sys.argv[2] == "write" else lock.acquire_read
for _ in sys.stdin:
    acquire()
    woke = time.clock_gettime_ns(time.CLOCK_MONOTONIC)
    lock.release()
    print(woke, flush=True)
