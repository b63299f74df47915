"""The Python side of the interop tests, speaking lock-probe's line protocol.

    python_probe.py hold PATH         FileLock(PATH).acquire(); "acquired PID"; on "release": "released"
    python_probe.py try PATH          timeout=0: "acquired PID" (then as hold) or "busy"
    python_probe.py increment PATH COUNTER N
                                      "ready", waits for "go", N locked increments, "done"
"""
import os
import sys

from filelock import FileLock, Timeout


def say(line):
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def wait_for_release(lock):
    for line in sys.stdin:
        if line.strip() == "release":
            break
    lock.release()
    say("released")


def main():
    command, path = sys.argv[1], sys.argv[2]
    lock = FileLock(path)
    if command == "hold":
        lock.acquire()
        say(f"acquired {os.getpid()}")
        wait_for_release(lock)
    elif command == "try":
        try:
            lock.acquire(timeout=0)
        except Timeout:
            say("busy")
            return
        say(f"acquired {os.getpid()}")
        wait_for_release(lock)
    elif command == "increment":
        counter, count = sys.argv[3], int(sys.argv[4])
        fd = os.open(counter, os.O_RDWR | os.O_CREAT, 0o644)
        say("ready")
        if sys.stdin.readline().strip() != "go":
            return
        for _ in range(count):
            with lock:
                text = os.pread(fd, 32, 0)
                value = int(text) if text else 0
                os.pwrite(fd, str(value + 1).encode(), 0)
        os.close(fd)
        say("done")


main()
