#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif
import FileLocking
import Subprocesses
import Synchronization
import Testing

/// What every whole-file lock kind promises, run over each kind (`WholeFileKind`): a new kind
/// joins by adding a case there. The per-kind suites keep only what is specific to their kind.
@Suite("Every lock kind's contract", .ownThreads)
struct ContractTests {
    let folder: TemporaryFolder
    init() throws { folder = try TemporaryFolder() }

    func probe(_ kind: WholeFileKind, _ arguments: String...) throws -> ChildProcess {
        try ChildProcess(TestEnvironment.probe, arguments + kind.probeArguments)
    }

    func probe(_ kind: ContractKind, _ arguments: String...) throws -> ChildProcess {
        try ChildProcess(TestEnvironment.probe, arguments + kind.probeArguments)
    }

    @Test(arguments: ContractKind.all)
    func reentrancyCountsUpAndDown(kind: ContractKind) throws {
        let path = folder.file("r.lock")
        let lock = try kind.make(path)
        try lock.acquire()
        try lock.acquire()
        #expect(try lock.tryAcquire())
        #expect(lock.holdCount == 3)
        #expect(lock.release())
        #expect(lock.release())
        #expect(lock.isLocked)
        let other = try kind.make(path)
        #expect(try !other.tryAcquire(), "one hold left keeps others out")
        #expect(lock.release())
        #expect(!lock.isLocked)
        #expect(try other.tryAcquire())
        other.release()
    }

    @Test(arguments: ContractKind.all)
    func forcedReleaseDropsEveryHold(kind: ContractKind) throws {
        let path = folder.file("f.lock")
        let lock = try kind.make(path)
        for _ in 0..<5 { try lock.acquire() }
        #expect(lock.holdCount == 5)
        #expect(lock.release(force: true))
        #expect(!lock.isLocked && lock.holdCount == 0)
        #expect(!lock.release(force: true), "nothing left")
        let other = try kind.make(path)
        #expect(try other.tryAcquire())
        other.release()
    }

    @Test(arguments: ContractKind.all)
    func withLockReleasesWhenTheBodyThrows(kind: ContractKind) throws {
        struct Boom: Error {}
        let lock = try kind.make(folder.file("w.lock"))
        #expect(throws: Boom.self) { try lock.withLock(timeout: .seconds(5)) { throw Boom() } }
        #expect(!lock.isLocked)
        #expect(try lock.withLock(timeout: .seconds(1)) { 42 } == 42)
    }

    @Test(arguments: ContractKind.all)
    func asyncWithLockReleasesWhenTheBodyThrows(kind: ContractKind) async throws {
        struct Boom: Error {}
        let lock = try kind.make(folder.file("aw.lock"))
        await #expect(throws: Boom.self) { try await lock.withLock(timeout: .seconds(5)) { throw Boom() } }
        #expect(!lock.isLocked)
        let other = try kind.make(folder.file("aw.lock"))
        #expect(try other.tryAcquire(), "released for other objects too")
        other.release()
    }

    @Test(arguments: ContractKind.all)
    func asyncReentrancyInOneTask(kind: ContractKind) async throws {
        let lock = try kind.make(folder.file("asyncre.lock"))
        try await lock.withLock(timeout: .seconds(5)) {
            try await lock.withLock(timeout: .seconds(5)) {
                #expect(lock.holdCount == 2)
            }
        }
        #expect(!lock.isLocked)
    }

    @Test(arguments: WholeFileKind.allCases)
    func missingParentFoldersAreCreated(kind: WholeFileKind) throws {
        let path = folder.file("x/y/z/deep.lock")
        let lock = try kind.make(path)
        try lock.acquire()
        #expect(access(kind.artifact(path), F_OK) == 0)
        lock.release()
    }

    @Test(arguments: ContractKind.all)
    func aSecondObjectOnThePathIsExcludedInOneThread(kind: ContractKind) throws {
        let path = folder.file("two.lock")
        let first = try kind.make(path)
        let second = try kind.make(path)
        try first.acquire()
        defer { first.release() }
        #expect(try !second.tryAcquire())
        let error = #expect(throws: FileLockError.self) { try second.acquire(timeout: .milliseconds(100)) }
        #expect(error?.code == .timedOut)
        #expect(error?.message.contains(path) == true)
    }

    @Test(arguments: ContractKind.all)
    func selfDeadlockIsReportedInsteadOfHanging(kind: ContractKind) throws {
        let path = folder.file("dead.lock")
        let first = try kind.make(path)
        let second = try kind.make(path)
        try first.acquire()
        defer { first.release() }
        let error = #expect(throws: FileLockError.self) { try second.acquire(timeout: nil) }
        #expect(error?.code == .wouldDeadlock)
        #expect(error?.message.contains(path) == true)
        #expect(error?.message.contains("isSingleton") == true)
    }

    @Test(arguments: ContractKind.all)
    func selfDeadlockIsReportedInATask(kind: ContractKind) async throws {
        let path = folder.file("deadtask.lock")
        let first = try kind.make(path)
        let second = try kind.make(path)
        try await first.acquire(timeout: nil)
        let error = await #expect(throws: FileLockError.self) { try await second.acquire(timeout: nil) }
        #expect(error?.code == .wouldDeadlock)
        first.release()
    }

    @Test(arguments: ContractKind.all)
    func aSingletonIsOneReentrantObjectPerPath(kind: ContractKind) throws {
        let path = folder.file("single.lock")
        let first = try kind.make(path, isSingleton: true)
        let second = try kind.make(folder.path + "/./single.lock", isSingleton: true)
        try first.acquire()
        try second.acquire(timeout: nil)
        #expect(first.holdCount == 2)
        second.release()
        first.release()
        #expect(!first.isLocked)
        let error = #expect(throws: FileLockError.self) { _ = try kind.make(path, timeout: .seconds(2), isSingleton: true) }
        #expect(error?.code == .invalidConfiguration)
    }

    @Test(arguments: ContractKind.all)
    func defaultsAreUsed(kind: ContractKind) throws {
        let path = folder.file("defaults.lock")
        let holder = try kind.make(path)
        try holder.acquire()
        defer { holder.release() }
        let nonBlocking = try kind.make(path, isBlocking: false)
        let tried = #expect(throws: FileLockError.self) { try nonBlocking.acquire() }
        #expect(tried?.code == .timedOut)
        let timed = try kind.make(path, timeout: .milliseconds(50))
        let waited = #expect(throws: FileLockError.self) { try timed.acquire() }
        #expect(waited?.code == .timedOut)
        #expect((waited?.waited ?? .zero) >= .milliseconds(50))
        // The holder is this very process (another lock object): the message says so.
        #expect(waited?.message.contains("(this process: another thread, task or lock object)") == true, "\(waited?.message ?? "")")
    }

    @Test(arguments: ContractKind.all)
    func aCancelCheckEndsAWait(kind: ContractKind) throws {
        let path = folder.file("cc.lock")
        let holder = try kind.make(path)
        try holder.acquire()
        defer { holder.release() }
        let lock = try kind.make(path, pollInterval: .milliseconds(5))
        let asked = Atomic<Int>(0)
        let error = #expect(throws: FileLockError.self) {
            try lock.acquire(timeout: nil) { asked.add(1, ordering: .relaxed).newValue >= 3 }
        }
        #expect(error?.code == .cancelled)
        #expect(asked.load(ordering: .relaxed) >= 3)
    }

    @Test(arguments: ContractKind.all)
    func cancellingAWaitingTaskEndsItsWait(kind: ContractKind) async throws {
        let path = folder.file("cancel.lock")
        let holder = try kind.make(path)
        try await holder.acquire(timeout: nil)
        let lock = try kind.make(path)
        let waiter = Task { try await lock.acquire(timeout: .seconds(600)) }
        try await Task.sleep(for: .milliseconds(20))
        waiter.cancel()
        await #expect(throws: CancellationError.self) { try await waiter.value }
        #expect(!lock.isLocked)
        holder.release()
        #expect(try lock.tryAcquire(), "the cancelled wait left nothing behind")
        lock.release()
    }

    /// Another process holds the lock: try says no, a timeout names the holder, and the lock is
    /// ours once it lets go.
    @Test(arguments: ContractKind.all)
    func tryAndTimeoutNameTheHolderInAnotherProcess(kind: ContractKind) throws {
        let path = folder.file("held.lock")
        let holder = try probe(kind, "hold", path)
        let pid = Int32(try holder.expectLine(startingWith: "acquired").split(separator: " ")[1])
        let lock = try kind.make(path)
        #expect(try !lock.tryAcquire())
        #expect(kind.names(lock.holder, process: pid), "\(lock.holder.map(String.init(describing:)) ?? "no holder")")
        let error = #expect(throws: FileLockError.self) { try lock.acquire(timeout: .seconds(3)) }
        #expect(error?.code == .timedOut)
        #expect(kind.names(error?.holder, process: pid))
        #expect((error?.waited ?? .zero) >= .milliseconds(300))
        #expect(error?.message.contains(path) == true)
        #expect(error?.message.contains(kind.holderText(pid ?? 0)) == true, "\(error?.message ?? "")")
        #expect(error?.message.contains("this process") == false, "\(error?.message ?? "")")
        holder.send("release")
        try holder.expectLine(startingWith: "released")
        #expect(try lock.tryAcquire())
        lock.release()
    }

    @Test(arguments: ContractKind.all)
    func fourProcessesIncrementExactly(kind: ContractKind) throws {
        let lock = folder.file("counter.lock")
        let counter = folder.file("counter")
        let workers = try (0..<4).map { _ in try probe(kind, "increment", lock, counter, "500") }
        for worker in workers { try worker.expectLine(startingWith: "ready") }
        for worker in workers { worker.send("go") }
        for worker in workers {
            try worker.expectLine(startingWith: "done", timeout: 300)
            #expect(try worker.waitForExit() == 0)
        }
        #expect(readFile(counter) == "2000")
    }

    @Test(arguments: WholeFileKind.allCases)
    func aSymbolicLinkOrADirectoryIsRefused(kind: WholeFileKind) throws {
        let target = folder.file("target")
        writeFile(target, "precious")
        let link = folder.file("link.lock")
        symlink(target, kind.artifact(link))
        let linkError = #expect(throws: FileLockError.self) { try kind.make(link).acquire(timeout: .seconds(1)) }
        #expect(linkError?.code == .isSymbolicLink)
        #expect(linkError?.message.contains(link) == true)
        #expect(readFile(target) == "precious")
        let directory = folder.file("dir.lock")
        guard kind != .softReadWrite else {
            // Its artifact is a folder: a file standing there is refused instead.
            writeFile(kind.artifact(directory), "")
            let fileError = #expect(throws: FileLockError.self) { try kind.make(directory).acquire(timeout: .seconds(1)) }
            #expect(fileError?.code == .isSymbolicLink, "\(fileError?.message ?? "")")
            return
        }
        mkdir(directory, 0o755)
        let directoryError = #expect(throws: FileLockError.self) { try kind.make(directory).acquire(timeout: .seconds(1)) }
        #expect(directoryError?.code == .isDirectory)
    }

    /// The bad paths of `BadInputTests`, for every kind: the code, the path in the message, and
    /// nothing created or changed on the way.
    @Test(arguments: WholeFileKind.allCases)
    func badPathsAreRefusedWithTheirCode(kind: WholeFileKind) throws {
        func refusal(_ path: String) -> FileLockError? {
            let error = #expect(throws: FileLockError.self) { try kind.make(path).acquire(timeout: .seconds(1)) }
            #expect(error?.message.contains(path.count > 200 ? "x.lock'" : path) == true, "\(error?.message ?? "")")
            return error
        }
        let dangling = folder.file("dangling.lock")
        symlink(folder.file("nowhere"), kind.artifact(dangling))
        #expect(refusal(dangling)?.code == .isSymbolicLink)
        #expect(access(folder.file("nowhere"), F_OK) != 0, "the link's target was not created")

        writeFile(folder.file("plain"), "x")
        #expect(refusal(folder.file("plain/sub/x.lock"))?.code == .invalidPath)
        #expect(readFile(folder.file("plain")) == "x")

        let longName = folder.file(String(repeating: "n", count: 300) + ".x.lock")
        let nameError = #expect(throws: FileLockError.self) { try kind.make(longName).acquire(timeout: .seconds(1)) }
        #expect(nameError?.code == .nameTooLong)

        let longPath = folder.path + String(repeating: "/abcdefgh", count: 600) + "/x.lock"
        #expect(refusal(longPath)?.code == .nameTooLong)
        #expect(access(folder.file("abcdefgh"), F_OK) != 0, "no folder is created on the way to the refusal")

        let negative = try kind.make(folder.file("neg.lock"))
        let timeoutError = #expect(throws: FileLockError.self) { try negative.acquire(timeout: .seconds(-3)) }
        #expect(timeoutError?.code == .invalidTimeout)
    }

    // Permission checks do not apply to root, so as root the probe runs as `nobody`.
    @Test(
        .enabled(if: TestEnvironment.requires(TestEnvironment.isRoot), "needs root to switch to nobody"),
        arguments: WholeFileKind.allCases)
    func noPermissionIsSaidWithThePath(kind: WholeFileKind) throws {
        let locked = folder.file("private")
        mkdir(locked, 0o755)
        let path = locked + "/x.lock"
        let creating = try folder.probeAsNobody(["hold", path] + kind.probeArguments)
        let line = try creating.expectLine(startingWith: "error")
        #expect(line.hasPrefix("error permissionDenied") && line.contains(path), "\(line)")
        #expect(access(path, F_OK) != 0)

        // For a marker lock an existing file is a held lock (waited for, not opened), as in Python.
        guard !kind.isMarker && kind != .softReadWrite else { return }
        let secret = folder.file("secret.lock")
        writeFile(secret, "")
        chmod(secret, 0o600)
        let opening = try folder.probeAsNobody(["hold", secret] + kind.probeArguments)
        let openLine = try opening.expectLine(startingWith: "error")
        #expect(openLine.hasPrefix("error permissionDenied") && openLine.contains(secret), "\(openLine)")
    }

    @Test(
        .enabled(if: TestEnvironment.requires(TestEnvironment.isRoot), "needs root for a private read-only mount"),
        arguments: WholeFileKind.allCases)
    func aReadOnlyFilesystemIsSaid(kind: WholeFileKind) throws {
        let (child, path) = try folder.probeOnReadOnlyMount(["hold", "LOCK"] + kind.probeArguments)
        let line = try child.expectLine(startingWith: "error")
        #expect(line.hasPrefix("error readOnlyFilesystem") && line.contains(path), "\(line)")
    }

    /// Breaking an abandoned empty marker never removes a file that a kernel lock holds: the
    /// kernel kinds leave an empty file too, and one removed under its holder lets the next
    /// acquirer lock a new file beside it.
    @Test(arguments: [WholeFileKind.kernel, .readWrite])
    func breakingAnEmptyMarkerSparesAFileAKernelLockHolds(kind: WholeFileKind) throws {
        let path = folder.file("fenced.lock")
        let holder = try probe(kind, "hold", path)
        try holder.expectLine(startingWith: "acquired")
        var times = [timespec(tv_sec: 1, tv_nsec: 0), timespec(tv_sec: 1, tv_nsec: 0)]
        #expect(utimensat(AT_FDCWD, path, &times, 0) == 0, "the empty file looks abandoned (old)")
        let outcome = try SoftFileLock(at: path).breakMarker()
        #expect(outcome == .holderAlive(nil), "\(outcome)")
        #expect(access(path, F_OK) == 0, "the held file is still there")
        holder.send("release")
        try holder.expectLine(startingWith: "released")
        #expect(try SoftFileLock(at: path).breakMarker() == .broken(nil), "once free, an old empty file is broken")
    }
}
