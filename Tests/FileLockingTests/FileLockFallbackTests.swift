#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif
import FileLocking
import Subprocesses
import Testing

/// `fallsBackToSoft`: a `FileLock` on a filesystem without `flock` (simulated in real probe
/// processes by a preloaded shim whose `flock` fails with `ENOSYS`) locks with a marker file at
/// the lock path instead.
@Suite("FileLock falling back to a marker", .ownThreads)
struct FileLockFallbackTests {
    let folder: TemporaryFolder
    init() throws { folder = try TemporaryFolder() }

    static let hasShim = NoFlockTests.compiler != nil

    /// The environment of a process that sees no `flock`.
    func withoutFlock() throws -> [String: String] {
        let shim = try NoFlockTests.shim(
            """
            #include <errno.h>
            int flock(int fd, int operation) { (void)fd; (void)operation; errno = ENOSYS; return -1; }
            """, in: folder, name: "noflock")
        return ["LD_PRELOAD": shim]
    }

    @Test(.enabled(if: TestEnvironment.requires(hasShim), "needs Linux and a C compiler for the LD_PRELOAD shim"))
    func twoProcessesWithTheFallbackExcludeEachOther() throws {
        let environment = try withoutFlock()
        let lock = folder.file("nfs.lock")
        let counter = folder.file("counter")
        writeFile(counter, "0")
        let workers = try (0..<2).map { _ in
            try ChildProcess(
                TestEnvironment.probe, ["increment", lock, counter, "300", "--fallback"], environment: environment)
        }
        for worker in workers { try worker.expectLine(startingWith: "ready") }
        for worker in workers { worker.send("go") }
        for worker in workers { try worker.expectLine(startingWith: "done", timeout: 300) }
        #expect(readFile(counter) == "600")
        #expect(access(lock, F_OK) != 0, "the last release removed the marker")
    }

    @Test(.enabled(if: TestEnvironment.requires(hasShim), "needs Linux and a C compiler for the LD_PRELOAD shim"))
    func theMarkerIsAtTheLockPathAndNamesItsHolder() throws {
        let environment = try withoutFlock()
        let path = folder.file("marker.lock")
        let holder = try ChildProcess(TestEnvironment.probe, ["hold", path, "--fallback"], environment: environment)
        let pid = try #require(Int32(try holder.expectLine(startingWith: "acquired").split(separator: " ")[1]))
        #expect(try holder.readLine() == "mechanism marker")
        #expect(readFile(path)?.split(separator: "\n").first == "\(pid)", "a SoftFileLock marker at the lock path")
        #expect(try SoftFileLock(at: path).holder?.pid == pid)
        // Here flock works; a lock object that has not acquired yet still reads the marker.
        let lock = try FileLock(at: path, fallsBackToSoft: true)
        #expect(lock.holder?.pid == pid)
        #expect(lock.holder?.since != nil)

        let waiter = try ChildProcess(
            TestEnvironment.probe, ["hold", path, "--fallback", "--timeout", "0.2"], environment: environment)
        let line = try waiter.expectLine(startingWith: "error")
        #expect(line.hasPrefix("error timedOut "), "\(line)")
        #expect(line.split(separator: " ")[3] == "\(pid)", "the timeout names the marker's holder: \(line)")

        holder.send("release")
        try holder.expectLine(startingWith: "released")
        #expect(access(path, F_OK) != 0, "release removed the marker")
    }

    /// The crash behaviour of a marker: the kernel frees nothing, but on the same host the next
    /// acquirer proves the holder gone and breaks its marker.
    @Test(.enabled(if: TestEnvironment.requires(hasShim), "needs Linux and a C compiler for the LD_PRELOAD shim"))
    func theMarkerOfAKilledHolderIsBrokenByTheNextAcquirer() throws {
        let environment = try withoutFlock()
        let path = folder.file("killed.lock")
        let holder = try ChildProcess(TestEnvironment.probe, ["hold", path, "--fallback"], environment: environment)
        try holder.expectLine(startingWith: "acquired")
        holder.signal(SIGKILL)
        #expect(try holder.waitForExit() == 128 + SIGKILL)
        #expect(access(path, F_OK) == 0, "a killed holder's marker stays")
        let next = try ChildProcess(
            TestEnvironment.probe, ["hold", path, "--fallback", "--timeout", "60"], environment: environment)
        try next.expectLine(startingWith: "acquired")
        #expect(try next.readLine() == "mechanism marker")
        next.send("release")
        try next.expectLine(startingWith: "released")
    }

    /// Where no file can be created beside the lock file, no marker could be either: the lock
    /// reports the missing `flock` instead of leaving an empty file at the path, which would read
    /// as a held empty marker (to itself too).
    @Test(.enabled(if: TestEnvironment.requires(hasShim), "needs Linux and a C compiler for the LD_PRELOAD shim"))
    func whereNoProbeFileCanBeMadeTheMissingFlockIsReported() throws {
        let shim = try NoFlockTests.shim(
            """
            #define _GNU_SOURCE
            #include <dlfcn.h>
            #include <errno.h>
            #include <stdarg.h>
            #include <string.h>
            #include <sys/types.h>
            int flock(int fd, int operation) { (void)fd; (void)operation; errno = ENOSYS; return -1; }
            static int opening(const char *name, const char *path, int flags, va_list arguments) {
                mode_t mode = (mode_t)va_arg(arguments, int);
                if (strstr(path, "flock-probe")) { errno = EACCES; return -1; }
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
            """, in: folder, name: "noprobe")
        let path = folder.file("noprobe.lock")
        let probe = try ChildProcess(
            TestEnvironment.probe, ["hold", path, "--fallback", "--timeout", "5"], environment: ["LD_PRELOAD": shim])
        let line = try probe.expectLine(startingWith: "error")
        #expect(line.hasPrefix("error notSupportedByFilesystem"), "\(line)")
    }

    @Test func whereFlockWorksTheFallbackUsesFlock() throws {
        let path = folder.file("local.lock")
        let lock = try FileLock(at: path, fallsBackToSoft: true)
        #expect(lock.fallsBackToSoft)
        #expect(lock.mechanism == nil, "not known before the first acquisition")
        try lock.withLock {
            #expect(lock.holder?.pid == getpid())
        }
        #expect(lock.mechanism == .flock)
        #expect(access(path, F_OK) == 0, "a flock lock file stays")
        let names = try ChildProcess("/bin/ls", ["-a", folder.path]).readRemainingOutput()
        #expect(!names.contains("probe"), "the flock probe file was removed: \(names)")

        let plain = try FileLock(at: path)
        #expect(!plain.fallsBackToSoft)
        #expect(plain.mechanism == .flock)
    }

    @Test func aSingletonKeepsItsFallbackSetting() throws {
        let path = folder.file("singleton.lock")
        let first = try FileLock(at: path, isSingleton: true)
        let error = #expect(throws: FileLockError.self) { try FileLock(at: path, isSingleton: true, fallsBackToSoft: true) }
        #expect(error?.code == .invalidConfiguration)
        #expect(error?.message.contains("fallsBackToSoft") == true)
        withExtendedLifetime(first) {}
    }
}
