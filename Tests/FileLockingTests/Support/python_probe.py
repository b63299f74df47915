"""The Python side of the interop tests, speaking lock-probe's line protocol.

    python_probe.py hold PATH         FileLock(PATH).acquire(); "acquired PID"; on "release": "released"
    python_probe.py try PATH          timeout=0: "acquired PID" (then as hold) or "busy"
    python_probe.py increment PATH COUNTER N
                                      "ready", waits for "go", N locked increments, "done"
    python_probe.py lease-hold PATH DURATION
                                      SoftFileLease(PATH, lease_duration=DURATION): "acquired PID",
                                      then as hold
    python_probe.py acquire PATH SECONDS
                                      acquire(timeout=SECONDS): "acquired PID" (then as hold) or
                                      "timeout"
    python_probe.py soft-rw-write PATH SECONDS
                                      filelock.SoftReadWriteLock(PATH): the write lock within
                                      SECONDS: "acquired PID" (then as hold) or "timeout"

A trailing --soft uses filelock.SoftFileLock instead of FileLock; "busy" then names the holder's
pid as SoftFileLock reads it: "busy PID".

filelock.ReadWriteLock (MODE: read or write):

    python_probe.py rw-hold PATH MODE [SECONDS]
                                      acquire in MODE (timeout SECONDS, default forever): "acquired
                                      PID" (then as hold) or "timeout"
    python_probe.py rw-try PATH MODE  timeout=0: "acquired PID" (then as hold) or "busy"
    python_probe.py rw-increment PATH COUNTER N
                                      as increment, under the write lock

filelock.SoftReadWriteLock (the filelock-rw/1 log in PATH.rw), MODE read or write; HB and STALE
are its heartbeat_interval and stale_threshold in seconds (default 30 and 90):

    python_probe.py srw-hold PATH MODE SECONDS [HB STALE]
                                      acquire in MODE (timeout SECONDS, -1 forever): "acquired PID
                                      GENERATION" (then as hold) or "timeout"
    python_probe.py srw-increment PATH COUNTER N
                                      as increment, under the write lock
    python_probe.py lease-acquire PATH DURATION SECONDS
                                      SoftFileLease acquire(timeout=SECONDS): "acquired PID" (then
                                      as hold), "timeout", or "mismatch MESSAGE"
    python_probe.py lease-increment PATH COUNTER N DURATION
                                      as increment, under a SoftFileLease

Plain SQLite transactions on PATH as a database (Python's sqlite3, autocommit mode, so that the
statements below are the whole transaction; release rolls back, so the file is never written).
LEVEL: shared (BEGIN; SELECT ...), reserved (BEGIN IMMEDIATE) or exclusive (BEGIN EXCLUSIVE):

    python_probe.py sqlite-hold PATH LEVEL [SECONDS]
                                      busy timeout SECONDS (default 60): "acquired PID" (then as
                                      hold) or "timeout"
    python_probe.py sqlite-try PATH LEVEL
                                      busy timeout 0: "acquired PID" (then as hold) or "busy"
    python_probe.py sqlite-increment PATH COUNTER N
                                      as increment, inside BEGIN EXCLUSIVE ... ROLLBACK
    python_probe.py sqlite-check PATH "size BYTES integrity RESULT" (PRAGMA integrity_check)
    python_probe.py sqlite-make-wal PATH
                                      makes PATH a WAL database with a table: "journal_mode wal"
"""
import os
import sqlite3
import sys

from filelock import FileLock, ReadWriteLock, SoftFileLock, Timeout


def say(line):
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def wait_for_release(lock):
    for line in sys.stdin:
        if line.strip() == "release":
            break
    lock.release()
    say("released")


def increment_counter(counter, count, locked):
    """The increment command's loop: "ready", "go", COUNT increments of COUNTER inside locked()."""
    fd = os.open(counter, os.O_RDWR | os.O_CREAT, 0o644)
    say("ready")
    if sys.stdin.readline().strip() != "go":
        return
    for _ in range(count):
        with locked():
            text = os.pread(fd, 32, 0)
            value = int(text) if text else 0
            os.pwrite(fd, str(value + 1).encode(), 0)
    os.close(fd)
    say("done")


def read_write(command, args):
    path = args[2]
    lock = ReadWriteLock(path)
    if command == "rw-increment":
        increment_counter(args[3], int(args[4]), lambda: lock.write_lock(timeout=120))
        return
    mode = args[3]
    if mode not in ("read", "write"):
        raise SystemExit(f"unknown mode {mode}")
    acquire = lock.acquire_read if mode == "read" else lock.acquire_write
    timeout = 0 if command == "rw-try" else (float(args[4]) if len(args) > 4 else -1)
    try:
        acquire(timeout=timeout)
    except Timeout:
        say("busy" if command == "rw-try" else "timeout")
        return
    say(f"acquired {os.getpid()}")
    wait_for_release(lock)


SQLITE_BEGIN = {
    "shared": ("BEGIN", "SELECT count(*) FROM sqlite_master"),
    "reserved": ("BEGIN IMMEDIATE",),
    "exclusive": ("BEGIN EXCLUSIVE",),
}


def plain_sqlite(command, args):
    path = args[2]
    if command == "sqlite-check":
        size = os.stat(path).st_size
        connection = sqlite3.connect(path, isolation_level=None, timeout=10)
        (result,) = connection.execute("PRAGMA integrity_check").fetchone()
        connection.close()
        say(f"size {size} integrity {result}")
        return
    if command == "sqlite-make-wal":
        connection = sqlite3.connect(path, isolation_level=None)
        (mode,) = connection.execute("PRAGMA journal_mode=WAL").fetchone()
        connection.execute("CREATE TABLE t (x)")
        connection.execute("INSERT INTO t VALUES (1)")
        connection.close()
        say(f"journal_mode {mode}")
        return
    if command == "sqlite-increment":
        connection = sqlite3.connect(path, isolation_level=None, timeout=120)

        class Exclusive:
            def __enter__(self):
                connection.execute("BEGIN EXCLUSIVE")

            def __exit__(self, *_):
                connection.execute("ROLLBACK")

        increment_counter(args[3], int(args[4]), Exclusive)
        connection.close()
        return
    level = args[3]
    timeout = 0 if command == "sqlite-try" else (float(args[4]) if len(args) > 4 else 60)
    connection = sqlite3.connect(path, isolation_level=None, timeout=timeout)
    try:
        for statement in SQLITE_BEGIN[level]:
            connection.execute(statement).fetchall()
    except sqlite3.OperationalError as error:
        if "locked" not in str(error) and "busy" not in str(error):
            raise
        say("busy" if command == "sqlite-try" else "timeout")
        return
    say(f"acquired {os.getpid()}")
    for line in sys.stdin:
        if line.strip() == "release":
            break
    connection.execute("ROLLBACK")
    connection.close()
    say("released")


def lease_hold(path, duration):
    """filelock.SoftFileLease(PATH, lease_duration=DURATION): "acquired PID", then as hold."""
    from filelock import SoftFileLease

    lease = SoftFileLease(path, lease_duration=duration)
    lease.acquire()
    say(f"acquired {os.getpid()}")
    wait_for_release(lease)


def soft_read_write(command, args):
    from filelock import SoftReadWriteLock

    path = args[2]
    if command == "srw-increment":
        lock = SoftReadWriteLock(path)
        increment_counter(args[3], int(args[4]), lambda: lock.write_lock(timeout=120))
        return
    mode, timeout = args[3], float(args[4])
    settings = {}
    if len(args) > 6:
        settings = {"heartbeat_interval": float(args[5]), "stale_threshold": float(args[6])}
    lock = SoftReadWriteLock(path, **settings)
    acquire = lock.acquire_read if mode == "read" else lock.acquire_write
    try:
        acquire(timeout=timeout)
    except Timeout:
        say("timeout")
        return
    say(f"acquired {os.getpid()} {lock.generation}")
    wait_for_release(lock)


def lease_commands(command, args):
    from filelock import SoftFileLease

    path = args[2]
    if command == "lease-increment":
        lease = SoftFileLease(path, lease_duration=float(args[5]))
        increment_counter(args[3], int(args[4]), lambda: lease)
        return
    lease = SoftFileLease(path, lease_duration=float(args[3]))
    try:
        lease.acquire(timeout=float(args[4]))
    except Timeout:
        say("timeout")
        return
    except ValueError as error:
        say(f"mismatch {error}")
        return
    say(f"acquired {os.getpid()}")
    wait_for_release(lease)


def soft_read_write_hold(path, seconds):
    """filelock.SoftReadWriteLock(PATH)'s write lock: "acquired PID" (then as hold) or "timeout"."""
    from filelock import SoftReadWriteLock

    lock = SoftReadWriteLock(path)
    try:
        lock.acquire_write(timeout=seconds)
    except Timeout:
        say("timeout")
        return
    say(f"acquired {os.getpid()}")
    for line in sys.stdin:
        if line.strip() == "release":
            break
    lock.release()
    say("released")


def main():
    if sys.argv[1].startswith("srw-"):
        soft_read_write(sys.argv[1], sys.argv)
        return
    if sys.argv[1] in ("lease-acquire", "lease-increment"):
        lease_commands(sys.argv[1], sys.argv)
        return
    if sys.argv[1] == "lease-hold":
        lease_hold(sys.argv[2], float(sys.argv[3]))
        return
    if sys.argv[1] == "soft-rw-write":
        soft_read_write_hold(sys.argv[2], float(sys.argv[3]))
        return
    if sys.argv[1].startswith("rw-"):
        read_write(sys.argv[1], sys.argv)
        return
    if sys.argv[1].startswith("sqlite-"):
        plain_sqlite(sys.argv[1], sys.argv)
        return
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
        increment_counter(args[3], int(args[4]), lambda: lock)


main()
