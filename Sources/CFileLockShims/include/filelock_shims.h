// C calls that Swift cannot import directly (a macro or a raw system call). Used only by
// Sources/FileLocking/System/.
#ifndef FILELOCK_SHIMS_H
#define FILELOCK_SHIMS_H

/// Atomically swaps the names `first` and `second` (both must exist): Linux
/// renameat2(RENAME_EXCHANGE), macOS renamex_np(RENAME_SWAP). Returns 0, or -1 with errno set
/// (EINVAL/ENOSYS/ENOTSUP where the filesystem or kernel cannot).
int filelock_exchange_names(const char *first, const char *second);

/// Renames `from` to `to` only if `to` does not exist (renameat2 RENAME_NOREPLACE).
int filelock_rename_no_replace(const char *from, const char *to);

/// A new non-blocking, close-on-exec Linux eventfd (counter 0); -1 with errno set, ENOSYS
/// elsewhere. (The Glibc module does not carry <sys/eventfd.h>.)
int filelock_eventfd(void);

/// Points descriptor `target` at the open file of `source`, close-on-exec (Linux dup3 with
/// O_CLOEXEC; dup2 and fcntl elsewhere). Returns `target`, or -1 with errno set.
int filelock_replace_descriptor(int source, int target);

/// Fills `count` bytes at `bytes` from the system's random source in one call where it can
/// (Linux getrandom, arc4random_buf elsewhere). Returns 0, or -1 with errno set.
int filelock_random_bytes(void *bytes, unsigned long count);
/// statfs(2) of `path`, or with `path` NULL fstatfs(2) of `descriptor`: the filesystem's type
/// number (Linux f_type, 0 elsewhere) into `type`, and its type name (macOS f_fstypename, empty
/// elsewhere) into `name`, NUL-terminated, cut to `nameSize` bytes. Returns 0, or -1 with errno set.
/// (Glibc's Swift module does not carry <sys/statfs.h>.)
int filelock_statfs(const char *path, int descriptor, unsigned long long *type, char *name, int nameSize);

#endif
