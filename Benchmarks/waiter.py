"""Python filelock as a waiter for the C holder: on each "go", acquire, print wake-up ns, release."""
import sys
import time

from filelock import FileLock, SoftFileLock

lock = SoftFileLock(sys.argv[1]) if "--soft" in sys.argv else FileLock(sys.argv[1])
for _ in sys.stdin:
    lock.acquire()
    woke = time.clock_gettime_ns(time.CLOCK_MONOTONIC)
    lock.release()
    print(woke, flush=True)
