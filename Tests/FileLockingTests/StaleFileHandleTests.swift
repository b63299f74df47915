#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif
import FileLocking
import Subprocesses
import Testing

/// `ESTALE` means "the file is gone" (an NFS client's handle for a file that another client
/// deleted or replaced on the server): every kind begins its attempt again on the file now at the
/// path instead of failing, at most `maximumRestarts` times in a row. Simulated in real probe
/// processes by a preloaded shim that fails one chosen call with `ESTALE`.
@Suite("ESTALE: the lock file is gone, begin again", .ownThreads)
struct StaleFileHandleTests {
    let folder: TemporaryFolder
    init() throws { folder = try TemporaryFolder() }

    static let hasShim = NoFlockTests.compiler != nil

    /// A shim that fails the call named by `ESTALE_ON` with `ESTALE`, on a file whose path
    /// contains `ESTALE_NAME`: once (or every time with `ESTALE_ALWAYS`), creating the file
    /// `ESTALE_SEEN` when it does. Calls: `open`, `create` (an open with `O_EXCL`), `flock`
    /// (non-blocking), `flock-wait`, `fcntl` (`F_OFD_SETLK`), `fcntl-wait` (`F_OFD_SETLKW`).
    func shim() throws -> String {
        try NoFlockTests.shim(
            """
            #define _GNU_SOURCE
            #include <dlfcn.h>
            #include <errno.h>
            #include <fcntl.h>
            #include <stdarg.h>
            #include <stdio.h>
            #include <stdlib.h>
            #include <string.h>
            #include <sys/file.h>
            #include <sys/types.h>
            #include <unistd.h>
            static int injected = 0;
            static int strike(const char *call, const char *path) {
                const char *on = getenv("ESTALE_ON"), *name = getenv("ESTALE_NAME");
                if ((injected && !getenv("ESTALE_ALWAYS")) || !on || !name || !path) return 0;
                if (strcmp(on, call) != 0 || !strstr(path, name)) return 0;
                if (!injected && getenv("ESTALE_SEEN")) {
                    int fd = ((int (*)(const char *, int, ...))dlsym(RTLD_NEXT, "open"))(
                        getenv("ESTALE_SEEN"), O_CREAT | O_WRONLY | O_CLOEXEC, 0644);
                    if (fd >= 0) close(fd);
                }
                injected = 1;
                errno = ESTALE;
                return 1;
            }
            static int strikeDescriptor(const char *call, int fd) {
                char link[64], target[4096];
                snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
                ssize_t count = readlink(link, target, sizeof target - 1);
                if (count <= 0) return 0;
                target[count] = 0;
                return strike(call, target);
            }
            static int opening(const char *name, const char *path, int flags, va_list arguments) {
                mode_t mode = (mode_t)va_arg(arguments, int);
                if (strike((flags & O_EXCL) ? "create" : "open", path)) return -1;
                return ((int (*)(const char *, int, ...))dlsym(RTLD_NEXT, name))(path, flags, mode);
            }
            int open(const char *path, int flags, ...) {
                va_list arguments; va_start(arguments, flags);
                int result = opening("open", path, flags, arguments);
                va_end(arguments); return result;
            }
            int open64(const char *path, int flags, ...) {
                va_list arguments; va_start(arguments, flags);
                int result = opening("open64", path, flags, arguments);
                va_end(arguments); return result;
            }
            int flock(int fd, int operation) {
                if (strikeDescriptor((operation & LOCK_NB) ? "flock" : "flock-wait", fd)) return -1;
                return ((int (*)(int, int))dlsym(RTLD_NEXT, "flock"))(fd, operation);
            }
            static int locking(const char *name, int fd, int command, void *argument) {
                if ((command == F_OFD_SETLK || command == F_OFD_SETLKW)
                    && strikeDescriptor(command == F_OFD_SETLK ? "fcntl" : "fcntl-wait", fd)) return -1;
                return ((int (*)(int, int, ...))dlsym(RTLD_NEXT, name))(fd, command, argument);
            }
            int fcntl(int fd, int command, ...) {
                va_list arguments; va_start(arguments, command);
                void *argument = va_arg(arguments, void *);
                va_end(arguments); return locking("fcntl", fd, command, argument);
            }
            int fcntl64(int fd, int command, ...) {
                va_list arguments; va_start(arguments, command);
                void *argument = va_arg(arguments, void *);
                va_end(arguments); return locking("fcntl64", fd, command, argument);
            }
            """, in: folder, name: "estale-once")
    }

    /// A probe whose `call` on `stale-once.lock` fails with `ESTALE` once (or always).
    func probe(_ arguments: [String], failing call: String, always: Bool = false) throws -> ChildProcess {
        var environment = [
            "LD_PRELOAD": try shim(), "ESTALE_ON": call, "ESTALE_NAME": "stale-once", "ESTALE_SEEN": folder.file("seen"),
        ]
        if always { environment["ESTALE_ALWAYS"] = "1" }
        return try ChildProcess(TestEnvironment.probe, arguments, environment: environment)
    }

    /// Each call that can meet a stale handle, for each kind that makes it: the acquisition
    /// begins again and gets the lock.
    @Test(
        .enabled(if: TestEnvironment.requires(hasShim), "needs Linux and a C compiler for the LD_PRELOAD shim"),
        arguments: [
            ("open", ["--kind", "kernel"]), ("flock", ["--kind", "kernel"]), ("open", ["--kind", "rw"]),
            ("fcntl", ["--kind", "rw"]), ("create", ["--kind", "soft"]),
        ])
    func aStaleHandleOnceIsAFileGoneAndTheAcquisitionBeginsAgain(call: String, kind: [String]) throws {
        let path = folder.file("stale-once.lock")
        let holder = try probe(["hold", path, "--timeout", "30"] + kind, failing: call)
        let line = try holder.readLine()
        #expect(access(folder.file("seen"), F_OK) == 0, "the shim failed \(call) once")
        // (Nothing is sent to a probe that failed: it has exited, and writing to it would end the
        // test process with SIGPIPE.)
        guard line.hasPrefix("acquired") else {
            Issue.record("\(call) \(kind): \(line)")
            return
        }
        holder.send("release")
        try holder.expectLine(startingWith: "released")
    }

    /// A kernel wait that ends with `ESTALE` (the lock file was deleted or replaced on the server
    /// while we waited) begins again on the file at the path, and gets it when the holder leaves.
    @Test(
        .enabled(if: TestEnvironment.requires(hasShim), "needs Linux and a C compiler for the LD_PRELOAD shim"),
        arguments: [("flock-wait", ["--kind", "kernel"]), ("fcntl-wait", ["--kind", "rw"])])
    func aStaleHandleInAKernelWaitBeginsAgain(call: String, kind: [String]) throws {
        let path = folder.file("stale-once.lock")
        let holder = try ChildProcess(TestEnvironment.probe, ["hold", path] + kind)
        try holder.expectLine(startingWith: "acquired")
        let waiter = try probe(["hold", path, "--timeout", "60"] + kind, failing: call)
        guard eventually("the waiter's kernel wait met ESTALE", { access(folder.file("seen"), F_OK) == 0 }) else { return }
        holder.send("release")
        try holder.expectLine(startingWith: "released")
        let line = try waiter.readLine()
        guard line.hasPrefix("acquired") else {
            Issue.record("\(call) \(kind): \(line)")
            return
        }
        waiter.send("release")
        try waiter.expectLine(startingWith: "released")
    }

    /// A handle that stays stale is an error after `maximumRestarts` new attempts, never a loop.
    @Test(
        .enabled(if: TestEnvironment.requires(hasShim), "needs Linux and a C compiler for the LD_PRELOAD shim"),
        arguments: [("flock", ["--kind", "kernel"]), ("create", ["--kind", "soft"])])
    func aHandleThatStaysStaleEndsInAnError(call: String, kind: [String]) throws {
        let path = folder.file("stale-once.lock")
        let holder = try probe(["hold", path, "--timeout", "30"] + kind, failing: call, always: true)
        let line = try holder.readLine()
        #expect(line.hasPrefix("error io") && line.contains("gave up"), "\(call) \(kind): \(line)")
        #expect(try holder.waitForExit() == 3)
    }

    /// A `ByteRangeLock` keeps one open file and cannot open another: a stale handle is an error
    /// that says the file is gone.
    @Test(.enabled(if: TestEnvironment.requires(hasShim), "needs Linux and a C compiler for the LD_PRELOAD shim"))
    func aByteRangeLockSaysItsFileIsGone() throws {
        let path = folder.file("stale-once.bin")
        let holder = try probe(["range-hold", path, "0", "10"], failing: "fcntl")
        let line = try holder.readLine()
        #expect(line.hasPrefix("error io") && line.contains("gone") && line.contains("new ByteRangeLock"), "\(line)")
    }
}
