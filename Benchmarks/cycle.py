"""ns per Python filelock acquire+release."""
import sys
import time

from filelock import FileLock, SoftFileLock

lock = SoftFileLock(sys.argv[1]) if "--soft" in sys.argv else FileLock(sys.argv[1])
count = int(sys.argv[2])
start = time.perf_counter_ns()
for _ in range(count):
    lock.acquire()
    lock.release()
print((time.perf_counter_ns() - start) / count)
