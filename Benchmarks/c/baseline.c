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
//   baseline soft-cycle PATH N       ns per marker cycle: open(O_CREAT|O_EXCL)+write(record)+close+unlink
//   baseline soft-holder PATH N CMD...
//                                    like holder-timed, with a marker file: create it, tell the
//                                    waiter "go", release (unlink) 20-70 ms later
#define _GNU_SOURCE
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

static int holder(const char *path, long n, char **command, int timed, int soft, int range) {
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

int main(int argc, char **argv) {
    if (argc >= 4 && strcmp(argv[1], "cycle") == 0) return cycle(argv[2], atol(argv[3]));
    if (argc >= 3 && strcmp(argv[1], "waiter") == 0) return waiter(argv[2]);
    if (argc >= 5 && strcmp(argv[1], "holder") == 0) return holder(argv[2], atol(argv[3]), argv + 4, 0, 0, 0);
    if (argc >= 5 && strcmp(argv[1], "holder-timed") == 0) return holder(argv[2], atol(argv[3]), argv + 4, 1, 0, 0);
    if (argc >= 5 && strcmp(argv[1], "soft-holder") == 0) return holder(argv[2], atol(argv[3]), argv + 4, 1, 1, 0);
    if (argc >= 5 && strcmp(argv[1], "range-holder") == 0) return holder(argv[2], atol(argv[3]), argv + 4, 0, 0, 1);
    if (argc >= 4 && strcmp(argv[1], "range-cycle") == 0) return range_cycle(argv[2], atol(argv[3]));
    if (argc >= 3 && strcmp(argv[1], "range-waiter") == 0) return range_waiter(argv[2]);
    if (argc >= 4 && strcmp(argv[1], "soft-cycle") == 0) return soft_cycle(argv[2], atol(argv[3]));
    fprintf(stderr, "usage: baseline cycle PATH N | waiter PATH | holder PATH N CMD...\n");
    return 2;
}
