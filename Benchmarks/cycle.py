"""ns per Python filelock acquire+release."""
import sys
import time

from filelock import FileLock

lock = FileLock(sys.argv[1])
count = int(sys.argv[2])
start = time.perf_counter_ns()
for _ in range(count):
    lock.acquire()
    lock.release()
print((time.perf_counter_ns() - start) / count)
