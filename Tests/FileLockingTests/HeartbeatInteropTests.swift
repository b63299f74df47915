#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif
import FileLocking
import Subprocesses
import Testing

/// `SoftReadWriteLock` and `SoftFileLease` share their locks with Python `filelock`'s
/// (`SoftReadWriteLock`, `SoftFileLease`, 4.2 and later) both ways: exclusion, writer preference,
/// eviction and takeover of a stalled peer, the duration rule, and exact counters with workers
/// of both languages.
@Suite("SoftReadWriteLock and SoftFileLease with Python filelock", .ownThreads)
struct HeartbeatInteropTests {
    let folder: TemporaryFolder
    init() throws { folder = try TemporaryFolder() }

    func python(_ arguments: String...) throws -> ChildProcess {
        guard let python = TestEnvironment.python else {
            Issue.record("CI must provide a Python with filelock (set FILELOCK_TEST_PYTHON); .ci/run installs one")
            throw ChildProcessError(description: "no Python with filelock")
        }
        return try ChildProcess(python, [InteropTests.pythonScript] + arguments)
    }

    func probe(_ arguments: String...) throws -> ChildProcess {
        try ChildProcess(TestEnvironment.probe, arguments)
    }

    func release(_ child: ChildProcess) throws {
        child.send("release")
        try child.expectLine(startingWith: "released")
    }

    static let pythonAvailable = TestEnvironment.requires(TestEnvironment.python != nil)

    // MARK: SoftReadWriteLock

    @Test(.enabled(if: pythonAvailable, "needs Python filelock (FILELOCK_TEST_PYTHON)"))
    func aPythonWriterExcludesSwiftAndTheOtherWayRound() throws {
        let path = folder.file("srw.lock")
        let writer = try python("srw-hold", path, "write", "-1")
        let line = try writer.expectLine(startingWith: "acquired")
        #expect(line == "acquired \(writer.pid) 1", "Python's generation 1: \(line)")
        let lock = try SoftReadWriteLock(at: path, isSingleton: false)
        #expect(try !lock.tryAcquireRead())
        let error = #expect(throws: FileLockError.self) { try lock.acquireWrite(timeout: .milliseconds(300)) }
        #expect(error?.code == .timedOut && error?.holder?.pid == writer.pid, "\(error?.message ?? "")")
        #expect(lock.currentHolders.writer?.pid == writer.pid)
        try release(writer)
        try lock.acquireRead(timeout: .seconds(5))

        // Swift reads: Python reads beside it, Python's writer waits.
        let pythonReader = try python("srw-hold", path, "read", "5")
        try pythonReader.expectLine(startingWith: "acquired")
        let pythonWriter = try python("srw-hold", path, "write", "0.5")
        #expect(try pythonWriter.expectLine(startingWith: "timeout") == "timeout")
        #expect(Set(lock.currentHolders.readers.map(\.pid)) == [getpid(), pythonReader.pid])
        try release(pythonReader)
        lock.release()
        let after = try python("srw-hold", path, "write", "5")
        try after.expectLine(startingWith: "acquired")
        try release(after)
    }

    /// A Swift writer waiting for a Python reader shuts new Python readers out, and gets in when
    /// the reader leaves; a Python writer waiting does the same to Swift readers.
    @Test(.enabled(if: pythonAvailable, "needs Python filelock (FILELOCK_TEST_PYTHON)"))
    func waitingWritersShutOutReadersAcrossLanguages() throws {
        let path = folder.file("pref.lock")
        let lock = try SoftReadWriteLock(at: path, isSingleton: false)
        let pythonReader = try python("srw-hold", path, "read", "5")
        try pythonReader.expectLine(startingWith: "acquired")
        let swiftWriter = try probe("hold", path, "--kind", "soft-rw", "--timeout", "30")
        eventually("the Swift writer is named") { lock.waitingWriter?.pid == swiftWriter.pid }
        let lateReader = try python("srw-hold", path, "read", "0.5")
        #expect(try lateReader.expectLine(startingWith: "timeout") == "timeout")
        try release(pythonReader)
        try swiftWriter.expectLine(startingWith: "acquired")
        try release(swiftWriter)

        let swiftReader = try probe("hold", path, "--kind", "soft-rw", "--shared")
        try swiftReader.expectLine(startingWith: "acquired")
        let pythonWriter = try python("srw-hold", path, "write", "30")
        eventually("the Python writer is named") { lock.waitingWriter?.pid == pythonWriter.pid }
        #expect(try !lock.tryAcquireRead())
        try release(swiftReader)
        try pythonWriter.expectLine(startingWith: "acquired")
        try release(pythonWriter)
    }

    /// A stalled Python holder is evicted by Swift, and a stalled Swift holder by Python, after
    /// the threshold each publishes (0.6 s); the Swift holder, resumed, is told.
    @Test(.enabled(if: pythonAvailable, "needs Python filelock (FILELOCK_TEST_PYTHON)"))
    func stalledHoldersAreEvictedAcrossLanguages() throws {
        let path = folder.file("evict.lock")
        let pythonHolder = try python("srw-hold", path, "write", "-1", "0.2", "0.6")
        try pythonHolder.expectLine(startingWith: "acquired")
        pythonHolder.signal(SIGSTOP)
        let lock = try SoftReadWriteLock(
            at: path, heartbeatInterval: .milliseconds(200), staleThreshold: .milliseconds(600), isSingleton: false)
        try lock.acquireWrite(timeout: .seconds(10))
        lock.release()
        pythonHolder.signal(SIGKILL)
        _ = try pythonHolder.waitForExit()

        let swiftHolder = try probe("hold", path, "--kind", "soft-rw", "--heartbeat", "0.2", "--stale", "0.6")
        try swiftHolder.expectLine(startingWith: "acquired")
        // Alive, its heartbeat keeps Python out.
        let early = try python("srw-hold", path, "write", "2", "0.2", "0.6")
        #expect(try early.expectLine(startingWith: "timeout") == "timeout")
        swiftHolder.signal(SIGSTOP)
        let taker = try python("srw-hold", path, "write", "10", "0.2", "0.6")
        try taker.expectLine(startingWith: "acquired")
        swiftHolder.signal(SIGCONT)
        #expect(try swiftHolder.expectLine(startingWith: "lost", timeout: 10) == "lost evicted")
        try release(taker)
        try release(swiftHolder)
    }

    /// Two Swift and two Python processes, 50 increments each under the write lock: exact.
    @Test(.enabled(if: pythonAvailable, "needs Python filelock (FILELOCK_TEST_PYTHON)"))
    func swiftAndPythonWritersCountExactly() throws {
        let path = folder.file("count.lock")
        let counter = folder.file("counter")
        let workers = [
            try probe("increment", path, counter, "50", "--kind", "soft-rw"),
            try probe("increment", path, counter, "50", "--kind", "soft-rw"),
            try python("srw-increment", path, counter, "50"),
            try python("srw-increment", path, counter, "50"),
        ]
        for worker in workers { try worker.expectLine(startingWith: "ready") }
        for worker in workers { worker.send("go") }
        for worker in workers { try worker.expectLine(startingWith: "done", timeout: 300) }
        #expect(readFile(counter) == "200")
    }

    // MARK: SoftFileLease

    @Test(.enabled(if: pythonAvailable, "needs Python filelock (FILELOCK_TEST_PYTHON)"))
    func leasesAreSharedWithPythonAndTakenOverBothWays() throws {
        let path = folder.file("lease.lock")
        let pythonHolder = try python("lease-acquire", path, "0.6", "5")
        try pythonHolder.expectLine(startingWith: "acquired")
        let lease = try SoftFileLease(at: path, duration: .milliseconds(600))
        // Renewed by Python's heartbeat: never taken over.
        let error = #expect(throws: FileLockError.self) { try lease.acquire(timeout: .seconds(2)) }
        #expect(error?.code == .timedOut && error?.holder?.pid == pythonHolder.pid, "\(error?.message ?? "")")
        pythonHolder.signal(SIGSTOP)
        try lease.acquire(timeout: .seconds(10))
        pythonHolder.signal(SIGKILL)
        _ = try pythonHolder.waitForExit()
        // Python respects our renewed lease, then takes it over once we stall.
        let early = try python("lease-acquire", path, "0.6", "2")
        #expect(try early.expectLine(startingWith: "timeout") == "timeout")
        lease.release()

        let swiftHolder = try probe("hold", path, "--kind", "lease", "--lease", "0.6")
        try swiftHolder.expectLine(startingWith: "acquired")
        swiftHolder.signal(SIGSTOP)
        let taker = try python("lease-acquire", path, "0.6", "10")
        try taker.expectLine(startingWith: "acquired")
        swiftHolder.signal(SIGCONT)
        #expect(try swiftHolder.expectLine(startingWith: "lost", timeout: 10) == "lost taken over")
        try release(swiftHolder)
        try release(taker)
    }

    /// Both sides refuse a lease of another duration, as Python does.
    @Test(.enabled(if: pythonAvailable, "needs Python filelock (FILELOCK_TEST_PYTHON)"))
    func aLeaseOfAnotherDurationIsRefusedOnBothSides() throws {
        let path = folder.file("mismatch.lock")
        let swiftHolder = try probe("hold", path, "--kind", "lease", "--lease", "1")
        try swiftHolder.expectLine(startingWith: "acquired")
        let pythonContender = try python("lease-acquire", path, "2", "1")
        let line = try pythonContender.expectLine(startingWith: "mismatch")
        #expect(line.contains("1.0s") && line.contains("2.0s"), "\(line)")
        try release(swiftHolder)
        let pythonHolder = try python("lease-acquire", path, "2", "5")
        try pythonHolder.expectLine(startingWith: "acquired")
        let lease = try SoftFileLease(at: path, duration: .seconds(1))
        let error = #expect(throws: FileLockError.self) { try lease.acquire(timeout: .seconds(1)) }
        #expect(error?.code == .invalidConfiguration)
        try release(pythonHolder)
    }

    @Test(.enabled(if: pythonAvailable, "needs Python filelock (FILELOCK_TEST_PYTHON)"))
    func swiftAndPythonLeaseHoldersCountExactly() throws {
        let path = folder.file("count.lock")
        let counter = folder.file("counter")
        let workers = [
            try probe("increment", path, counter, "50", "--kind", "lease", "--lease", "5"),
            try probe("increment", path, counter, "50", "--kind", "lease", "--lease", "5"),
            try python("lease-increment", path, counter, "50", "5"),
            try python("lease-increment", path, counter, "50", "5"),
        ]
        for worker in workers { try worker.expectLine(startingWith: "ready") }
        for worker in workers { worker.send("go") }
        for worker in workers { try worker.expectLine(startingWith: "done", timeout: 300) }
        #expect(readFile(counter) == "200")
    }
}
