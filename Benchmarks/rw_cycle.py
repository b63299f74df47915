"""ns per Python filelock.ReadWriteLock acquire_read (or acquire_write) + release."""
import sys
import time

from filelock import ReadWriteLock

lock = ReadWriteLock(sys.argv[1])
count = int(sys.argv[2])
acquire = lock.acquire_write if sys.argv[3] == "write" else lock.acquire_read
start = time.perf_counter_ns()
for _ in range(count):
    acquire()
    lock.release()
print((time.perf_counter_ns() - start) / count)
