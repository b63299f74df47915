#define _GNU_SOURCE
#include "filelock_shims.h"
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <unistd.h>
#include <stdlib.h>
#if defined(__linux__)
#include <sys/eventfd.h>
#include <sys/random.h>
#include <sys/statfs.h>
#include <sys/syscall.h>
#ifndef RENAME_EXCHANGE
#define RENAME_EXCHANGE (1 << 1)
#endif
#ifndef RENAME_NOREPLACE
#define RENAME_NOREPLACE (1 << 0)
#endif
#elif defined(__APPLE__)
#include <sys/mount.h>
#include <sys/param.h>
#endif

int filelock_exchange_names(const char *first, const char *second) {
#if defined(__GLIBC__) && (__GLIBC__ > 2 || (__GLIBC__ == 2 && __GLIBC_MINOR__ >= 28))
    // glibc's wrapper (2.28 and later), so that a preloaded shim can stand in for a filesystem
    // without the exchange (NFS, CIFS, FUSE answer EINVAL) in tests.
    return renameat2(AT_FDCWD, first, AT_FDCWD, second, RENAME_EXCHANGE);
#elif defined(__linux__) && defined(SYS_renameat2)
    return (int)syscall(SYS_renameat2, AT_FDCWD, first, AT_FDCWD, second, RENAME_EXCHANGE);
#elif defined(__APPLE__)
    return renamex_np(first, second, RENAME_SWAP);
#else
    (void)first;
    (void)second;
    errno = ENOSYS;
    return -1;
#endif
}

int filelock_rename_no_replace(const char *from, const char *to) {
#if defined(__GLIBC__) && (__GLIBC__ > 2 || (__GLIBC__ == 2 && __GLIBC_MINOR__ >= 28))
    return renameat2(AT_FDCWD, from, AT_FDCWD, to, RENAME_NOREPLACE);
#elif defined(__linux__) && defined(SYS_renameat2)
    return (int)syscall(SYS_renameat2, AT_FDCWD, from, AT_FDCWD, to, RENAME_NOREPLACE);
#elif defined(__APPLE__)
    return renamex_np(from, to, RENAME_EXCL);
#else
    (void)from;
    (void)to;
    errno = ENOSYS;
    return -1;
#endif
}

int filelock_eventfd(void) {
#if defined(__linux__)
    return eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
#else
    errno = ENOSYS;
    return -1;
#endif
}

int filelock_replace_descriptor(int source, int target) {
#if defined(__linux__)
    return dup3(source, target, O_CLOEXEC);
#else
    if (dup2(source, target) < 0) return -1;
    return fcntl(target, F_SETFD, FD_CLOEXEC) < 0 ? -1 : target;
#endif
}

int filelock_random_bytes(void *bytes, unsigned long count) {
#if defined(__linux__)
    unsigned char *next = bytes;
    while (count > 0) {
        ssize_t got = getrandom(next, count, 0);
        if (got < 0) {
            if (errno == EINTR) continue;
            return -1;
        }
        next += got;
        count -= (unsigned long)got;
    }
    return 0;
#else
    arc4random_buf(bytes, count);
    return 0;
#endif
}

int filelock_statfs(const char *path, int descriptor, unsigned long long *type, char *name, int nameSize) {
    if (nameSize > 0) name[0] = 0;
    *type = 0;
#if defined(__linux__) || defined(__APPLE__)
    struct statfs raw;
    if ((path ? statfs(path, &raw) : fstatfs(descriptor, &raw)) != 0) return -1;
#if defined(__linux__)
    // Kept as 32 bits: f_type is signed on 32-bit systems, and every magic number fits.
    *type = (unsigned long long)(unsigned int)raw.f_type;
#else
    if (nameSize > 0) snprintf(name, (size_t)nameSize, "%s", raw.f_fstypename);
#endif
    return 0;
#else
    (void)path;
    (void)descriptor;
    errno = ENOSYS;
    return -1;
#endif
}
