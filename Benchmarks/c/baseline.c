// C baselines for the benchmark, compiled by run.sh. Every mode prints one number per line.
//
//   baseline cycle PATH N            ns per open+flock(LOCK_EX)+flock(LOCK_UN)+close
//   baseline waiter PATH             the C waiter: on each "go" line, blocking flock, print the
//                                    monotonic ns at wake-up, unlock; exits on EOF
//   baseline holder PATH N CMD...    drives a waiter command N times: lock, tell the waiter "go",
//                                    wait until the kernel lists it as blocked (/proc/locks),
//                                    note the time, unlock; prints wake-up latencies in ns
//   baseline holder-timed PATH N CMD...
//                                    the same for waiters that poll instead of blocking in the
//                                    kernel (Python filelock): release 20-70 ms after "go", at a
//                                    random phase of the waiter's poll interval
//   baseline range-cycle PATH N      ns per fcntl(F_OFD_SETLK) lock + unlock of bytes 100-199 of an open file
//   baseline range-waiter PATH       like waiter, with a blocking F_OFD_SETLKW on bytes 0-99
//   baseline range-holder PATH N CMD...
//                                    like holder, holding bytes 0-99 with an OFD lock
//   baseline rw-cycle PATH N read|write [reopen]
//                                    ns per SQLite-protocol acquire + release with OFD locks on an
//                                    open file (read: read pending, read shared, unlock pending;
//                                    write: write reserved, pending, shared; then unlock all);
//                                    reopen: open and close the file in every cycle too
//   baseline rw-waiter PATH read|write
//                                    like range-waiter, taking the read or write lock as above with
//                                    F_OFD_SETLKW for every step
//   baseline rw-holder PATH N CMD...  like holder, holding SQLite's EXCLUSIVE lock (OFD write lock on
//                                    the pending, reserved and shared bytes); rw-holder-timed: as
//                                    holder-timed (for waiters that poll: Python's ReadWriteLock)
//   baseline soft-cycle PATH N       ns per marker cycle: open(O_CREAT|O_EXCL)+write(record)+close+unlink
//   baseline soft-holder PATH N CMD...
//                                    like holder-timed, with a marker file: create it, tell the
//                                    waiter "go", release (unlink) 20-70 ms later
//   baseline contend-worker flock|excl|ofd LOCK COUNTER N
//                                    one contender: prints "ready", waits for "go", then N times
//                                    lock, read-increment-write COUNTER, unlock; prints the
//                                    longest single wait for the lock in ns. excl: an O_EXCL marker
//                                    (record written, then closed; released by unlink), retried
//                                    after a 50 µs pause while it exists
//   baseline contend P N COUNTER CMD...
//                                    runs P copies of the contender CMD (each doing N rounds) at
//                                    once: sets COUNTER to 0, starts them, waits for every "ready",
//                                    sends "go" to all; prints ns per acquisition (wall time of the
//                                    whole run / P*N) and the longest wait of any; fails (exit 1)
//                                    when COUNTER is not P*N at the end
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static long long now_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (long long)t.tv_sec * 1000000000LL + t.tv_nsec;
}

static int open_lock(const char *path) {
    int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW | O_NOCTTY, 0666);
    if (fd < 0) { perror("open"); exit(1); }
    return fd;
}

static int cycle(const char *path, long n) {
    long long start = now_ns();
    for (long i = 0; i < n; i++) {
        int fd = open_lock(path);
        if (flock(fd, LOCK_EX) != 0) { perror("flock"); return 1; }
        flock(fd, LOCK_UN);
        close(fd);
    }
    printf("%.1f\n", (double)(now_ns() - start) / n);
    return 0;
}

#ifndef F_OFD_SETLK
#define F_OFD_GETLK 36
#define F_OFD_SETLK 37
#define F_OFD_SETLKW 38
#endif

static int range_lock(int fd, int command, short type, off_t start, off_t length) {
    struct flock lock = { .l_type = type, .l_whence = SEEK_SET, .l_start = start, .l_len = length, .l_pid = 0 };
    return fcntl(fd, command, &lock);
}

static int range_cycle(const char *path, long n) {
    int fd = open_lock(path);
    long long start = now_ns();
    for (long i = 0; i < n; i++) {
        if (range_lock(fd, F_OFD_SETLK, F_WRLCK, 100, 100) != 0) { perror("fcntl"); return 1; }
        range_lock(fd, F_OFD_SETLK, F_UNLCK, 100, 100);
    }
    printf("%.1f\n", (double)(now_ns() - start) / n);
    return 0;
}

static int range_waiter(const char *path) {
    char line[64];
    int fd = open_lock(path);
    setvbuf(stdout, NULL, _IOLBF, 0);
    while (fgets(line, sizeof line, stdin)) {
        if (range_lock(fd, F_OFD_SETLKW, F_WRLCK, 0, 100) != 0) { perror("fcntl"); return 1; }
        long long woke = now_ns();
        range_lock(fd, F_OFD_SETLK, F_UNLCK, 0, 100);
        printf("%lld\n", woke);
    }
    return 0;
}

// SQLite's lock bytes (os_unix.c): pending at 1 GiB, reserved after it, then 510 shared bytes.
#define PENDING_BYTE 0x40000000LL
#define RESERVED_BYTE (PENDING_BYTE + 1)
#define SHARED_FIRST (PENDING_BYTE + 2)
#define SHARED_SIZE 510

static int rw_acquire(int fd, int write, int command) {
    if (!write) {
        if (range_lock(fd, command, F_RDLCK, PENDING_BYTE, 1) != 0) return -1;
        int rc = range_lock(fd, command, F_RDLCK, SHARED_FIRST, SHARED_SIZE);
        range_lock(fd, F_OFD_SETLK, F_UNLCK, PENDING_BYTE, 1);
        return rc;
    }
    if (range_lock(fd, command, F_WRLCK, RESERVED_BYTE, 1) != 0) return -1;
    if (range_lock(fd, command, F_WRLCK, PENDING_BYTE, 1) != 0) return -1;
    return range_lock(fd, command, F_WRLCK, SHARED_FIRST, SHARED_SIZE);
}

static int rw_cycle(const char *path, long n, int write, int reopen) {
    int fd = reopen ? -1 : open_lock(path);
    long long start = now_ns();
    for (long i = 0; i < n; i++) {
        if (reopen) fd = open_lock(path);
        if (rw_acquire(fd, write, F_OFD_SETLK) != 0) { perror("fcntl"); return 1; }
        range_lock(fd, F_OFD_SETLK, F_UNLCK, 0, 0);
        if (reopen) close(fd);
    }
    printf("%.1f\n", (double)(now_ns() - start) / n);
    return 0;
}

static int rw_waiter(const char *path, int write) {
    char line[64];
    int fd = open_lock(path);
    setvbuf(stdout, NULL, _IOLBF, 0);
    while (fgets(line, sizeof line, stdin)) {
        if (rw_acquire(fd, write, F_OFD_SETLKW) != 0) { perror("fcntl"); return 1; }
        long long woke = now_ns();
        range_lock(fd, F_OFD_SETLK, F_UNLCK, 0, 0);
        printf("%lld\n", woke);
    }
    return 0;
}

static int soft_cycle(const char *path, long n) {
    char record[128];
    int length = snprintf(record, sizeof record, "%d\nbenchmark-host\n", getpid());
    long long start = now_ns();
    for (long i = 0; i < n; i++) {
        int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
        if (fd < 0) { perror("open"); return 1; }
        if (write(fd, record, (size_t)length) != length) { perror("write"); return 1; }
        close(fd);
        unlink(path);
    }
    printf("%.1f\n", (double)(now_ns() - start) / n);
    return 0;
}

static int waiter(const char *path) {
    char line[64];
    setvbuf(stdout, NULL, _IOLBF, 0);
    while (fgets(line, sizeof line, stdin)) {
        int fd = open_lock(path);
        if (flock(fd, LOCK_EX) != 0) { perror("flock"); return 1; }
        long long woke = now_ns();
        flock(fd, LOCK_UN);
        close(fd);
        printf("%lld\n", woke);
    }
    return 0;
}

// Whether /proc/locks lists a blocked FLOCK waiter on this device and inode.
static int has_waiter(unsigned maj, unsigned min, unsigned long ino) {
    FILE *f = fopen("/proc/locks", "r");
    char line[256];
    int found = 0;
    if (!f) return 1;
    char needle[64];
    snprintf(needle, sizeof needle, "%02x:%02x:%lu ", maj, min, ino);
    while (fgets(line, sizeof line, f)) {
        if (strstr(line, "->") && strstr(line, needle)) { found = 1; break; }
    }
    fclose(f);
    return found;
}

static int holder(const char *path, long n, char **command, int timed, int soft, int range, int rw) {
    int to_child[2], from_child[2];
    if (pipe(to_child) || pipe(from_child)) { perror("pipe"); return 1; }
    pid_t pid = fork();
    if (pid == 0) {
        dup2(to_child[0], 0);
        dup2(from_child[1], 1);
        close(to_child[0]); close(to_child[1]); close(from_child[0]); close(from_child[1]);
        execvp(command[0], command);
        perror("exec");
        _exit(127);
    }
    close(to_child[0]);
    close(from_child[1]);
    FILE *in = fdopen(from_child[0], "r");
    FILE *out = fdopen(to_child[1], "w");
    setvbuf(out, NULL, _IOLBF, 0);
    int fd = soft ? -1 : open_lock(path);
    struct stat st;
    if (!soft) fstat(fd, &st);
    char line[64];
    char record[128];
    int length = snprintf(record, sizeof record, "%d\nbenchmark-host\n", getpid());
    for (long i = 0; i < n; i++) {
        if (soft) {
            int marker = -1;
            while ((marker = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600)) < 0) usleep(100);
            if (write(marker, record, (size_t)length) != length) { perror("write"); return 1; }
            close(marker);
        } else if (rw) {
            if (range_lock(fd, F_OFD_SETLK, F_WRLCK, PENDING_BYTE, 2 + SHARED_SIZE) != 0) { perror("fcntl"); return 1; }
        } else if (range) {
            if (range_lock(fd, F_OFD_SETLK, F_WRLCK, 0, 100) != 0) { perror("fcntl"); return 1; }
        } else if (flock(fd, LOCK_EX) != 0) { perror("flock"); return 1; }
        fputs("go\n", out);
        if (timed) {
            usleep(20000 + (useconds_t)(random() % 50000));
        } else {
            while (!has_waiter(major(st.st_dev), minor(st.st_dev), st.st_ino)) usleep(200);
            // Let the waiter settle in the kernel wait (its other threads, if any, go idle too).
            usleep(2000);
        }
        long long released = now_ns();
        if (soft) unlink(path);
        else if (rw) range_lock(fd, F_OFD_SETLK, F_UNLCK, 0, 0);
        else if (range) range_lock(fd, F_OFD_SETLK, F_UNLCK, 0, 100);
        else flock(fd, LOCK_UN);
        if (!fgets(line, sizeof line, in)) { fprintf(stderr, "waiter ended\n"); return 1; }
        printf("%lld\n", atoll(line) - released);
    }
    fclose(out);
    int status;
    waitpid(pid, &status, 0);
    return 0;
}

static long counter_bump(int counter) {
    char text[32];
    ssize_t got = pread(counter, text, sizeof text - 1, 0);
    text[got > 0 ? got : 0] = 0;
    long value = atol(text) + 1;
    int length = snprintf(text, sizeof text, "%ld", value);
    if (pwrite(counter, text, (size_t)length, 0) != length) { perror("pwrite"); exit(1); }
    return value;
}

static int contend_worker(const char *kind, const char *path, const char *counter_path, long n) {
    int counter = open(counter_path, O_RDWR | O_CLOEXEC);
    if (counter < 0) { perror("open counter"); return 1; }
    int is_flock = strcmp(kind, "flock") == 0, is_excl = strcmp(kind, "excl") == 0, is_ofd = strcmp(kind, "ofd") == 0;
    if (!is_flock && !is_excl && !is_ofd) { fprintf(stderr, "unknown kind %s\n", kind); return 2; }
    int range_fd = is_ofd ? open_lock(path) : -1;
    char record[128];
    int length = snprintf(record, sizeof record, "%d\nbenchmark-host\n", getpid());
    char line[64];
    setvbuf(stdout, NULL, _IOLBF, 0);
    puts("ready");
    if (!fgets(line, sizeof line, stdin)) return 2;
    long long longest = 0;
    for (long i = 0; i < n; i++) {
        long long start = now_ns();
        int fd = -1;
        if (is_flock) {
            fd = open_lock(path);
            if (flock(fd, LOCK_EX) != 0) { perror("flock"); return 1; }
        } else if (is_excl) {
            int marker;
            while ((marker = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600)) < 0) {
                if (errno != EEXIST) { perror("open marker"); return 1; }
                usleep(50);
            }
            if (write(marker, record, (size_t)length) != length) { perror("write"); return 1; }
            close(marker);
        } else if (range_lock(range_fd, F_OFD_SETLKW, F_WRLCK, 0, 100) != 0) { perror("fcntl"); return 1; }
        long long waited = now_ns() - start;
        if (waited > longest) longest = waited;
        counter_bump(counter);
        if (is_flock) { flock(fd, LOCK_UN); close(fd); }
        else if (is_excl) unlink(path);
        else range_lock(range_fd, F_OFD_SETLK, F_UNLCK, 0, 100);
    }
    if (range_fd >= 0) close(range_fd);
    close(counter);
    printf("%lld\n", longest);
    return 0;
}

static int contend(long processes, long n, const char *counter_path, char **command) {
    int counter = open(counter_path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (counter < 0 || write(counter, "0", 1) != 1) { perror("counter"); return 1; }
    FILE *ins[processes], *outs[processes];
    pid_t pids[processes];
    char line[128];
    for (long p = 0; p < processes; p++) {
        int to_child[2], from_child[2];
        if (pipe2(to_child, O_CLOEXEC) || pipe2(from_child, O_CLOEXEC)) { perror("pipe"); return 1; }
        pids[p] = fork();
        if (pids[p] == 0) {
            dup2(to_child[0], 0);
            dup2(from_child[1], 1);
            execvp(command[0], command);
            perror("exec");
            _exit(127);
        }
        close(to_child[0]);
        close(from_child[1]);
        ins[p] = fdopen(from_child[0], "r");
        outs[p] = fdopen(to_child[1], "w");
        setvbuf(outs[p], NULL, _IOLBF, 0);
    }
    for (long p = 0; p < processes; p++) {
        if (!fgets(line, sizeof line, ins[p]) || strncmp(line, "ready", 5) != 0) {
            fprintf(stderr, "contender %ld did not start: %s\n", p, line);
            return 1;
        }
    }
    long long start = now_ns();
    for (long p = 0; p < processes; p++) fputs("go\n", outs[p]);
    long long longest = 0;
    int failed = 0;
    for (long p = 0; p < processes; p++) {
        if (!fgets(line, sizeof line, ins[p])) { fprintf(stderr, "contender %ld ended without a result\n", p); failed = 1; continue; }
        long long waited = atoll(line);
        if (waited > longest) longest = waited;
    }
    long long elapsed = now_ns() - start;
    for (long p = 0; p < processes; p++) {
        int status;
        fclose(outs[p]);
        fclose(ins[p]);
        waitpid(pids[p], &status, 0);
        if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) failed = 1;
    }
    char text[32];
    ssize_t got = pread(counter, text, sizeof text - 1, 0);
    text[got > 0 ? got : 0] = 0;
    close(counter);
    if (atol(text) != processes * n) {
        fprintf(stderr, "error: counter is %s, expected %ld (lost updates: the lock did not exclude)\n", text, processes * n);
        return 1;
    }
    if (failed) { fprintf(stderr, "error: a contender failed\n"); return 1; }
    printf("%.1f %lld\n", (double)elapsed / (double)(processes * n), longest);
    return 0;
}

int main(int argc, char **argv) {
    if (argc >= 6 && strcmp(argv[1], "contend-worker") == 0) return contend_worker(argv[2], argv[3], argv[4], atol(argv[5]));
    if (argc >= 6 && strcmp(argv[1], "contend") == 0) return contend(atol(argv[2]), atol(argv[3]), argv[4], argv + 5);
    if (argc >= 4 && strcmp(argv[1], "cycle") == 0) return cycle(argv[2], atol(argv[3]));
    if (argc >= 3 && strcmp(argv[1], "waiter") == 0) return waiter(argv[2]);
    if (argc >= 5 && strcmp(argv[1], "holder") == 0) return holder(argv[2], atol(argv[3]), argv + 4, 0, 0, 0, 0);
    if (argc >= 5 && strcmp(argv[1], "holder-timed") == 0) return holder(argv[2], atol(argv[3]), argv + 4, 1, 0, 0, 0);
    if (argc >= 5 && strcmp(argv[1], "soft-holder") == 0) return holder(argv[2], atol(argv[3]), argv + 4, 1, 1, 0, 0);
    if (argc >= 5 && strcmp(argv[1], "range-holder") == 0) return holder(argv[2], atol(argv[3]), argv + 4, 0, 0, 1, 0);
    if (argc >= 4 && strcmp(argv[1], "range-cycle") == 0) return range_cycle(argv[2], atol(argv[3]));
    if (argc >= 3 && strcmp(argv[1], "range-waiter") == 0) return range_waiter(argv[2]);
    if (argc >= 5 && strcmp(argv[1], "rw-holder") == 0) return holder(argv[2], atol(argv[3]), argv + 4, 0, 0, 0, 1);
    if (argc >= 5 && strcmp(argv[1], "rw-holder-timed") == 0) return holder(argv[2], atol(argv[3]), argv + 4, 1, 0, 0, 1);
    if (argc >= 5 && strcmp(argv[1], "rw-cycle") == 0)
        return rw_cycle(argv[2], atol(argv[3]), strcmp(argv[4], "write") == 0, argc >= 6 && strcmp(argv[5], "reopen") == 0);
    if (argc >= 4 && strcmp(argv[1], "rw-waiter") == 0) return rw_waiter(argv[2], strcmp(argv[3], "write") == 0);
    if (argc >= 4 && strcmp(argv[1], "soft-cycle") == 0) return soft_cycle(argv[2], atol(argv[3]));
    fprintf(stderr, "usage: baseline cycle PATH N | waiter PATH | holder PATH N CMD...\n");
    return 2;
}
