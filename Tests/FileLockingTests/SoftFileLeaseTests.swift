#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif
import FileLocking
import Subprocesses
import Synchronization
import Testing

/// `SoftFileLease`: Python's `filelock/2` lease marker, renewed by a heartbeat, taken over once
/// it stands unrenewed for its duration (and at once when its holder on this host is dead),
/// also where `renameat2` exchange is refused; a holder is told when it lost the lease.
@Suite("SoftFileLease", .ownThreads)
struct SoftFileLeaseTests {
    let folder: TemporaryFolder
    init() throws { folder = try TemporaryFolder() }

    func probe(_ arguments: [String], environment: [String: String] = [:]) throws -> ChildProcess {
        try ChildProcess(TestEnvironment.probe, arguments, environment: environment)
    }

    /// Without exchange: `renameat2` fails with `EINVAL`, as on NFS (an `LD_PRELOAD` shim).
    func breakerEnvironment(exchange: Bool) throws -> [String: String] {
        guard !exchange else { return [:] }
        let shim = try NoFlockTests.shim(
            """
            #define _GNU_SOURCE
            #include <errno.h>
            #include <stdio.h>
            int renameat2(int from, const char *old, int to, const char *new, unsigned int flags) {
                (void)from; (void)old; (void)to; (void)new; (void)flags;
                errno = EINVAL;
                return -1;
            }
            """, in: folder, name: "noexchange")
        return ["LD_PRELOAD": shim]
    }

    func matches(_ text: String, _ pattern: String) -> Bool {
        var expression = regex_t()
        guard regcomp(&expression, "^" + pattern + "$", REG_EXTENDED | REG_NOSUB) == 0 else { return false }
        defer { regfree(&expression) }
        return regexec(&expression, text, 0, nil, 0) == 0
    }

    @Test func theMarkerIsPythonsLeaseRecord() throws {
        let path = folder.file("format.lock")
        let lease = try SoftFileLease(at: path, duration: .milliseconds(1500))
        try lease.acquire(timeout: .seconds(1))
        let text = readFile(path) ?? ""
        #expect(
            matches(
                text,
                "filelock/2\npid=\(getpid())\nhost=\(SoftFileLock.hostName)\nmode=lease\ntoken=[0-9a-f]{32}\nduration=1\\.5\n(start=[0-9]+\n)?"
            ), "\(text)")
        var status = stat()
        #expect(lstat(path, &status) == 0 && status.st_mode & 0o777 == 0o644 & ~currentUmask())
        #expect(lease.holder?.pid == getpid() && lease.holder?.since != nil)
        let state = try SoftFileLock(at: path).inspectMarker()
        guard case .lease(let holder, let duration) = state else {
            Issue.record("inspectMarker: \(state)")
            return
        }
        #expect(holder.pid == getpid() && duration == .milliseconds(1500) && !holder.looksStale)
        lease.release()
        #expect(access(path, F_OK) != 0)
        #expect(lease.duration == .milliseconds(1500) && lease.heartbeatInterval == .milliseconds(500))
    }

    func currentUmask() -> mode_t {
        let mask = umask(0o022)
        umask(mask)
        return mask
    }

    @Test func settingsAreValidated() throws {
        let path = folder.file("settings.lock")
        let cases: [(Duration, Duration?)] = [(.zero, nil), (.seconds(-1), nil), (.seconds(3), .seconds(3)), (.seconds(3), .zero)]
        for (duration, heartbeat) in cases {
            let error = #expect(throws: FileLockError.self) {
                _ = try SoftFileLease(at: path, duration: duration, heartbeatInterval: heartbeat)
            }
            #expect(error?.code == .invalidConfiguration, "\(duration) \(String(describing: heartbeat))")
        }
    }

    /// A renewed lease is never taken over; a stopped holder's is, after the duration; the
    /// holder, resumed, is told.
    @Test(arguments: SoftFileLockTests.exchangeCases)
    func anUnrenewedLeaseIsTakenOverAndItsHolderTold(exchange: Bool) throws {
        let path = folder.file("renew.lock")
        let holder = try probe(["hold", path, "--kind", "lease", "--lease", "0.6"])
        try holder.expectLine(startingWith: "acquired")
        let environment = try breakerEnvironment(exchange: exchange)
        // Five durations: renewed every 0.2 s, the lease stays.
        let contender = try probe(["hold", path, "--kind", "lease", "--lease", "0.6", "--timeout", "3"], environment: environment)
        #expect(try contender.expectLine(startingWith: "error").hasPrefix("error timedOut"))
        holder.signal(SIGSTOP)
        let start = ChildProcess.now()
        let taker = try probe(["hold", path, "--kind", "lease", "--lease", "0.6", "--timeout", "10"], environment: environment)
        try taker.expectLine(startingWith: "acquired")
        let waited = ChildProcess.now() - start
        #expect(waited >= 0.3, "taken over after \(waited) s, too early for a 0.6 s lease")
        #expect(readFile(path)?.contains("pid=\(taker.pid)\n") == true)
        holder.signal(SIGCONT)
        #expect(try holder.expectLine(startingWith: "lost", timeout: 10) == "lost taken over")
        holder.send("release")
        try holder.expectLine(startingWith: "released")
        #expect(readFile(path)?.contains("pid=\(taker.pid)\n") == true, "the old holder's release spared the new marker")
        taker.send("release")
        try taker.expectLine(startingWith: "released")
        #expect(access(path, F_OK) != 0)
    }

    /// On this host a dead holder's lease is taken over at once, whatever its duration.
    @Test func aKilledHoldersLeaseIsTakenOverAtOnce() throws {
        let path = folder.file("killed.lock")
        let holder = try probe(["hold", path, "--kind", "lease", "--lease", "600"])
        try holder.expectLine(startingWith: "acquired")
        holder.signal(SIGKILL)
        _ = try holder.waitForExit()
        let lease = try SoftFileLease(at: path, duration: .seconds(600))
        try lease.acquire(timeout: .seconds(5))
        lease.release()
    }

    @Test func aLeaseOfAnotherDurationIsAClearError() throws {
        let path = folder.file("mismatch.lock")
        let holder = try probe(["hold", path, "--kind", "lease", "--lease", "1"])
        try holder.expectLine(startingWith: "acquired")
        let lease = try SoftFileLease(at: path, duration: .seconds(2))
        let error = #expect(throws: FileLockError.self) { try lease.acquire(timeout: .seconds(1)) }
        #expect(error?.code == .invalidConfiguration)
        #expect(error?.message.contains("lease of 1.0s") == true && error?.message.contains("2.0s") == true, "\(error?.message ?? "")")
        holder.send("release")
        try holder.expectLine(startingWith: "released")
    }

    /// A marker removed under its holder (by hand, a forced break) is a lost lease, said every way.
    @Test func aRemovedMarkerIsALostLease() throws {
        let path = folder.file("removed.lock")
        let reported = Mutex<[LockLoss]>([])
        let lease = try SoftFileLease(
            at: path, duration: .milliseconds(600), onLoss: { loss in reported.withLock { $0.append(loss) } })
        try lease.acquire(timeout: .seconds(1))
        #expect(unlink(path) == 0)
        eventually("the loss is reported", timeout: 10) { !reported.withLock { $0.isEmpty } }
        #expect(reported.withLock { $0.first?.reason } == .removed)
        let checked = #expect(throws: FileLockError.self) { try lease.checkHold() }
        #expect(checked?.code == .lockLost)
        let released = #expect(throws: FileLockError.self) { try lease.checkedRelease() }
        #expect(released?.code == .lockLost)
        #expect(try lease.tryAcquire(), "a new hold after the loss")
        try lease.checkHold()
        #expect(try lease.checkedRelease())
    }

    /// A heartbeat held up on a stalled filesystem (its FUSE daemon stopped) holds up neither the
    /// other holds' heartbeats (they run on other threads) nor the news: the stalled lease reads
    /// as lost (`refresh failed`) once its heartbeats are overdue, though no beat could tell.
    @Test(.enabled(if: TestEnvironment.requires(SoftFileLockTests.bindfs != nil && TestEnvironment.isRoot), "needs bindfs and root"))
    func aStalledFilesystemHoldsUpNeitherOtherHeartbeatsNorTheNews() throws {
        let shared = folder.file("shared")
        let mount = folder.file("mount")
        mkdir(shared, 0o755)
        mkdir(mount, 0o755)
        // In the foreground, so that its pid is known (a `pkill -f` would match its own shell).
        let daemon = try ChildProcess(SoftFileLockTests.bindfs ?? "bindfs", ["-f", "--no-allow-other", shared, mount])
        defer {
            daemon.signal(SIGCONT)
            runShell("umount '\(mount)' || fusermount -u '\(mount)'")
            _ = try? daemon.waitForExit()
        }
        eventually("the mount is up") { runShell("mountpoint -q '\(mount)'") == 0 }
        let stalled = try SoftFileLease(at: mount + "/stalled.lock", duration: .seconds(2), heartbeatInterval: .milliseconds(200))
        try stalled.acquire(timeout: .seconds(1))
        let local = try SoftReadWriteLock(
            at: folder.file("local.lock"), heartbeatInterval: .milliseconds(100), staleThreshold: .seconds(1), isSingleton: false)
        try local.acquireRead(timeout: .seconds(1))
        daemon.signal(SIGSTOP)
        let stopped = ChildProcess.now()
        // The local hold's record keeps changing while the lease's beat hangs in the stopped mount.
        let record = folder.file("local.lock.rw/holders/") + ((try? FileManagerLite.entries(folder.file("local.lock.rw/holders")))?.first ?? "")
        let before = readFile(record)
        usleep(600_000)
        #expect(readFile(record) != before, "another hold's heartbeat went on")
        try local.checkHold()
        eventually("the stalled lease reads as lost", timeout: 10) { (try? stalled.checkHold()) == nil }
        let told = ChildProcess.now() - stopped
        #expect(told < 2.0, "told \(told) s after its filesystem stalled, within the 2 s duration")
        let error = errorThrown { try stalled.checkHold() } as? FileLockError
        #expect(error?.code == .lockLost && error?.message.contains("refresh failed") == true, "\(error?.message ?? "")")
        daemon.signal(SIGCONT)
        stalled.release()
        local.release()
    }

    /// Four processes, each 100 increments under the lease: exact.
    @Test func fourProcessesIncrementExactly() throws {
        let path = folder.file("count.lock")
        let counter = folder.file("counter")
        let workers = try (0..<4).map { _ in try probe(["increment", path, counter, "100", "--kind", "lease", "--lease", "5"]) }
        for worker in workers { try worker.expectLine(startingWith: "ready") }
        for worker in workers { worker.send("go") }
        for worker in workers { try worker.expectLine(startingWith: "done", timeout: 300) }
        #expect(readFile(counter) == "400")
    }
}
