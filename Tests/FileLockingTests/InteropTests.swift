#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif
import FileLocking
import Subprocesses
import Testing

/// A `FileLock` and the tools already on users' machines exclude each other on the same path.
@Suite("Interoperation with Python filelock and flock(1)", .ownThreads)
struct InteropTests {
    let folder: TemporaryFolder
    init() throws { folder = try TemporaryFolder() }

    static let pythonScript: String = {
        let here = #filePath
        return String(here[..<here.lastIndex(of: "/")!]) + "/Support/python_probe.py"
    }()

    func python(_ arguments: String...) throws -> ChildProcess {
        guard let python = TestEnvironment.python else {
            Issue.record("CI must provide a Python with filelock (set FILELOCK_TEST_PYTHON); .ci/run installs one")
            throw ChildProcessError(description: "no Python with filelock")
        }
        return try ChildProcess(python, [Self.pythonScript] + arguments)
    }

    func flock(_ arguments: String...) throws -> ChildProcess {
        guard let flock = TestEnvironment.flockCommand else {
            Issue.record("CI must provide flock(1) from util-linux; .ci/run installs it")
            throw ChildProcessError(description: "no flock(1)")
        }
        return try ChildProcess(flock, arguments)
    }

    @Test(.enabled(if: TestEnvironment.requires(TestEnvironment.python != nil), "Python filelock is not installed"))
    func pythonHoldsSwiftWaits() throws {
        let path = folder.file("py.lock")
        let holder = try python("hold", path)
        let pid = Int32(try holder.expectLine(startingWith: "acquired").split(separator: " ")[1])
        let lock = try FileLock(at: path)
        #expect(try !lock.tryAcquire())
        #expect(lock.holder?.pid == pid)
        let error = #expect(throws: FileLockError.self) { try lock.acquire(timeout: .milliseconds(100)) }
        #expect(error?.holder?.pid == pid)
        // A Swift thread blocked in the kernel wakes when Python releases.
        let result = ThreadResult()
        startThread {
            do {
                try lock.acquire(timeout: .seconds(60))
                lock.release()
                result.set("acquired")
            } catch { result.set("\(error)") }
        }
        guard eventually("the Swift waiter is blocked", { lock.waiterCount > 0 }) else { return }
        holder.send("release")
        try holder.expectLine(startingWith: "released")
        #expect(result.wait() == "acquired")
    }

    @Test(.enabled(if: TestEnvironment.requires(TestEnvironment.python != nil), "Python filelock is not installed"))
    func swiftHoldsPythonWaits() throws {
        let path = folder.file("swift.lock")
        let holder = try ChildProcess(TestEnvironment.probe, ["hold", path])
        try holder.expectLine(startingWith: "acquired")
        try python("try", path).expectLine(startingWith: "busy")
        let waiter = try python("hold", path)
        holder.send("release")
        try holder.expectLine(startingWith: "released")
        try waiter.expectLine(startingWith: "acquired")
        waiter.send("release")
        try waiter.expectLine(startingWith: "released")
    }

    @Test(.enabled(if: TestEnvironment.requires(TestEnvironment.python != nil), "Python filelock is not installed"))
    func swiftAndPythonIncrementOneCounterExactly() throws {
        let path = folder.file("mixed.lock")
        let counter = folder.file("mixed")
        let workers = [
            try ChildProcess(TestEnvironment.probe, ["increment", path, counter, "500"]),
            try python("increment", path, counter, "500"),
            try ChildProcess(TestEnvironment.probe, ["increment", path, counter, "500"]),
            try python("increment", path, counter, "500"),
        ]
        for worker in workers { try worker.expectLine(startingWith: "ready") }
        for worker in workers { worker.send("go") }
        for worker in workers { try worker.expectLine(startingWith: "done", timeout: 120) }
        #expect(readFile(counter) == "2000")
    }

    @Test(.enabled(if: TestEnvironment.requires(TestEnvironment.flockCommand != nil), "flock(1) is not installed"))
    func flockCommandHoldsSwiftWaits() throws {
        let path = folder.file("flock1.lock")
        let holder = try flock(path, "sh", "-c", "echo acquired; read line; echo released")
        try holder.expectLine(startingWith: "acquired")
        let lock = try FileLock(at: path)
        #expect(try !lock.tryAcquire())
        #expect(lock.holder != nil)
        holder.send("go")
        try holder.expectLine(startingWith: "released")
        #expect(try holder.waitForExit() == 0)
        #expect(try lock.tryAcquire())
        lock.release()
    }

    @Test(.enabled(if: TestEnvironment.requires(TestEnvironment.flockCommand != nil), "flock(1) is not installed"))
    func flockCommandWaitsForSwiftAndRunsAfterRelease() throws {
        let path = folder.file("flock3.lock")
        let lock = try FileLock(at: path)
        try lock.acquire()
        let waiter = try flock(path, "sh", "-c", "echo acquired")
        guard eventually("flock(1) is blocked", { lock.waiterCount > 0 }) else { return }
        lock.release()
        try waiter.expectLine(startingWith: "acquired")
        #expect(try waiter.waitForExit() == 0)
    }

    @Test(.enabled(if: TestEnvironment.requires(TestEnvironment.flockCommand != nil), "flock(1) is not installed"))
    func swiftHoldsFlockCommandFails() throws {
        let path = folder.file("flock2.lock")
        let lock = try FileLock(at: path)
        try lock.acquire()
        #expect(try flock("-n", path, "true").waitForExit() == 1)
        lock.release()
        #expect(try flock("-n", path, "true").waitForExit() == 0)
    }
}

/// Swift and Python share soft-lock markers: each sees the other's holder and breaks the
/// other's stale marker after the holder is killed.
@Suite("SoftFileLock interoperation with Python filelock", .ownThreads)
struct SoftInteropTests {
    let folder: TemporaryFolder
    init() throws { folder = try TemporaryFolder() }

    func python(_ arguments: String...) throws -> ChildProcess {
        guard let python = TestEnvironment.python else {
            Issue.record("CI must provide a Python with filelock (set FILELOCK_TEST_PYTHON); .ci/run installs one")
            throw ChildProcessError(description: "no Python with filelock")
        }
        return try ChildProcess(python, [InteropTests.pythonScript] + arguments + ["--soft"])
    }

    /// Python's SoftFileLease writes a filelock/2 marker whose content never changes (it renews by
    /// touching it every third of its duration): a SoftFileLock respects it as long as it is
    /// renewed, not as a malformed marker that goes after 2 s unchanged, and names its holder.
    @Test(.enabled(if: TestEnvironment.requires(TestEnvironment.python != nil), "Python filelock is not installed"))
    func aPythonLeaseIsRespectedWhileItIsRenewed() throws {
        let path = folder.file("py-lease.lock")
        guard let python = TestEnvironment.python else { return }
        let holder = try ChildProcess(python, [InteropTests.pythonScript, "lease-hold", path, "30"])
        let pid = Int32(try holder.expectLine(startingWith: "acquired").split(separator: " ")[1])
        let lock = try SoftFileLock(at: path)
        #expect(lock.holder?.pid == pid)
        let error = #expect(throws: FileLockError.self) { try lock.acquire(timeout: .seconds(3)) }
        #expect(error?.code == .timedOut, "a live lease is not broken after the 2 s of a malformed marker")
        #expect(error?.holder?.pid == pid)
        #expect(error?.message.contains("SoftFileLease") == true, "\(error?.message ?? "")")
        holder.send("release")
        try holder.expectLine(startingWith: "released")
        try lock.acquire(timeout: .seconds(10))
        lock.release()
    }

    @Test(.enabled(if: TestEnvironment.requires(TestEnvironment.python != nil), "Python filelock is not installed"))
    func pythonHoldsSwiftSeesItThenBreaksItAfterSigkill() throws {
        let path = folder.file("py-soft.lock")
        let holder = try python("hold", path)
        let pid = Int32(try holder.expectLine(startingWith: "acquired").split(separator: " ")[1])
        let lock = try SoftFileLock(at: path)
        #expect(lock.holder?.pid == pid)
        #expect(lock.holder?.looksStale == false)
        #expect(try !lock.tryAcquire())
        holder.signal(SIGKILL)
        #expect(try holder.waitForExit() == 128 + SIGKILL)
        #expect(lock.holder?.looksStale == true, "Python's start token is understood")
        try lock.acquire(timeout: .seconds(10))
        #expect(lock.isHeldByUs)
        lock.release()
    }

    @Test(.enabled(if: TestEnvironment.requires(TestEnvironment.python != nil), "Python filelock is not installed"))
    func swiftHoldsPythonSeesItThenBreaksItAfterSigkill() throws {
        let path = folder.file("swift-soft.lock")
        let holder = try ChildProcess(TestEnvironment.probe, ["hold", path, "--kind", "soft"])
        let pid = try holder.expectLine(startingWith: "acquired").split(separator: " ")[1]
        try python("try", path).expectLine(startingWith: "busy \(pid)")
        holder.signal(SIGKILL)
        #expect(try holder.waitForExit() == 128 + SIGKILL)
        let breaker = try python("acquire", path, "10")
        try breaker.expectLine(startingWith: "acquired")
        breaker.send("release")
        try breaker.expectLine(startingWith: "released")
    }

    @Test(.enabled(if: TestEnvironment.requires(TestEnvironment.python != nil), "Python filelock is not installed"))
    func swiftAndPythonIncrementOneCounterExactly() throws {
        let path = folder.file("soft-mixed.lock")
        let counter = folder.file("soft-mixed")
        let workers = [
            try ChildProcess(TestEnvironment.probe, ["increment", path, counter, "200", "--kind", "soft"]),
            try python("increment", path, counter, "200"),
            try ChildProcess(TestEnvironment.probe, ["increment", path, counter, "200", "--kind", "soft"]),
            try python("increment", path, counter, "200"),
        ]
        for worker in workers { try worker.expectLine(startingWith: "ready") }
        for worker in workers { worker.send("go") }
        for worker in workers { try worker.expectLine(startingWith: "done", timeout: 300) }
        #expect(readFile(counter) == "800")
    }
}

@Suite("Lock file replaced while waiting", .ownThreads)
struct ReplacedLockFileTests {
    /// Some programs delete the lock file while they hold it. A waiter that wins the lock on the
    /// deleted file must not count it as held: it starts over on the file now at the path.
    @Test(.enabled(if: TestEnvironment.requires(TestEnvironment.flockCommand != nil), "flock(1) is not installed"))
    func waiterStartsOverWhenItsFileWasDeleted() throws {
        let folder = try TemporaryFolder()
        let path = folder.file("replaced.lock")
        let script = """
            exec 8>'\(path)'; flock 8; echo locked-old; read x
            rm '\(path)'; exec 9>'\(path)'; flock 9; flock -u 8; exec 8>&-; echo swapped; read y
            flock -u 9; echo released
            """
        let shell = try ChildProcess("bash", ["-c", script])
        try shell.expectLine(startingWith: "locked-old")
        let lock = try FileLock(at: path)
        let result = ThreadResult()
        startThread {
            do {
                try lock.acquire(timeout: .seconds(60))
                result.set("acquired")
            } catch { result.set("\(error)") }
        }
        guard eventually("a waiter is blocked in the kernel", { lock.waiterCount > 0 }) else { return }
        shell.send("go")
        try shell.expectLine(startingWith: "swapped")
        // The waiter woke on the deleted file, noticed, and now waits on the new one.
        guard eventually("the waiter is blocked again", { lock.waiterCount > 0 || result.wait(timeout: 0) != nil })
        else { return }
        #expect(result.wait(timeout: 0.05) == nil, "acquired a deleted lock file while the new one is held")
        shell.send("go")
        try shell.expectLine(startingWith: "released")
        #expect(result.wait() == "acquired")
        #expect(try !FileLock(at: path).tryAcquire(), "the lock is held on the file at the path")
        // The waiting thread holds it; a forced release ends that hold from here.
        lock.release()
        #expect(lock.isLocked, "a thread that holds nothing cannot release another thread's hold")
        lock.release(force: true)
        #expect(!lock.isLocked)
    }
}
