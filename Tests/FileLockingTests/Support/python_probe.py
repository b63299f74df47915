"""The Python side of the interop tests, speaking lock-probe's line protocol.

    python_probe.py hold PATH         FileLock(PATH).acquire(); "acquired PID"; on "release": "released"
    python_probe.py try PATH          timeout=0: "acquired PID" (then as hold) or "busy"
    python_probe.py increment PATH COUNTER N
                                      "ready", waits for "go", N locked increments, "done"
    python_probe.py acquire PATH SECONDS
                                      acquire(timeout=SECONDS): "acquired PID" (then as hold) or
                                      "timeout"

A trailing --soft uses filelock.SoftFileLock instead of FileLock; "busy" then names the holder's
pid as SoftFileLock reads it: "busy PID".
"""
import os
import sys

from filelock import FileLock, SoftFileLock, Timeout


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
    soft = "--soft" in sys.argv
    args = [a for a in sys.argv if a != "--soft"]
    command, path = args[1], args[2]
    lock = SoftFileLock(path) if soft else FileLock(path)
    if command == "hold":
        lock.acquire()
        say(f"acquired {os.getpid()}")
        wait_for_release(lock)
    elif command == "try":
        try:
            lock.acquire(timeout=0)
        except Timeout:
            say(f"busy {lock.pid}" if soft else "busy")
            return
        say(f"acquired {os.getpid()}")
        wait_for_release(lock)
    elif command == "acquire":
        try:
            lock.acquire(timeout=float(args[3]))
        except Timeout:
            say("timeout")
            return
        say(f"acquired {os.getpid()}")
        wait_for_release(lock)
    elif command == "increment":
        counter, count = args[3], int(args[4])
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
