#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif
@testable import FileLocking
import Synchronization
import Testing

/// Runs `body` on a new kernel thread and returns its result.
func onAnotherThread<Result: Sendable>(_ body: @escaping @Sendable () -> Result) -> Result {
    let result = Mutex<Result?>(nil)
    startThread { result.withLock { $0 = body() } }
    while true {
        if let value = result.withLock({ $0 }) { return value }
        usleep(200)
    }
}

@Suite("Who holds a lock: threads, tasks, lock objects and forked children", .ownThreads)
struct OwnershipTests {
    let folder: TemporaryFolder
    init() throws { folder = try TemporaryFolder() }

    /// A child forked without exec has its parent's thread identity; it must not count up the
    /// parent's hold and run the critical section beside it.
    @Test(arguments: WholeFileKind.allCases)
    func aForkedChildDoesNotReenterItsParentsHold(kind: WholeFileKind) throws {
        let path = folder.file("fork-reenter.lock")
        let lock = try kind.make(path)
        try lock.acquire()
        // What the child does, first here (another object, another thread): code run for the first
        // time in the child makes the runtime's type metadata, whose lock another thread may have
        // held at the fork.
        let other = try kind.make(path)
        let rehearsed = onAnotherThread { () -> Bool in
            (try? other.tryAcquire()) == false && (try? other.acquire(timeout: .milliseconds(1))) == nil
        }
        #expect(rehearsed)
        let child = forkChild()
        if child == 0 {
            var failures: Int32 = 0
            if lock.isLocked || lock.holdCount != 0 || lock.isHeldByCaller { failures |= 1 }
            if (try? lock.tryAcquire()) != false { failures |= 2 }
            do {
                try lock.acquire(timeout: .milliseconds(30))
                failures |= 4
            } catch let error as FileLockError where error.code == .timedOut {
            } catch {
                failures |= 8
            }
            if lock.release() { failures |= 16 }
            _exit(failures)
        }
        let failures = waitForChild(child)
        #expect(failures == 0, "child: 1 inherited state, 2 tryAcquire re-entered, 4 acquire re-entered, 8 other error, 16 released")
        #expect(lock.holdCount == 1)
        #expect(try !kind.make(path).tryAcquire(), "the parent still holds the lock")
        lock.release()
    }

    /// With the parent's hold gone, a forked child acquires through the inherited object like any
    /// other process and releases what it took.
    @Test(arguments: WholeFileKind.allCases)
    func aForkedChildAcquiresAfresh(kind: WholeFileKind) throws {
        let path = folder.file("fork-fresh.lock")
        let lock = try kind.make(path)
        try lock.acquire()
        let child = forkChild()
        if child == 0 {
            // Waits for the parent's release, then holds the lock on its own.
            guard (try? lock.acquire(timeout: .seconds(20))) != nil, lock.holdCount == 1 else { _exit(1) }
            guard lock.release(), !lock.isLocked else { _exit(2) }
            _exit(0)
        }
        #expect(lock.release())
        #expect(waitForChild(child) == 0)
        let other = try kind.make(path)
        #expect(try other.tryAcquire(), "the child's hold was released")
        other.release()
    }

    @Test(arguments: WholeFileKind.allCases)
    func releaseByAThreadThatHoldsNothingSaysSo(kind: WholeFileKind) throws {
        let lock = try kind.make(folder.file("stray.lock"))
        try lock.acquire()
        let released = onAnotherThread { lock.release() }
        #expect(!released, "a thread that holds nothing released something")
        #expect(lock.isLocked)
        #expect(lock.release())
        #expect(!lock.release(), "nothing left to release")
    }

    /// `ownership: .lockObject` (Python's `thread_local=False`): a hold taken on one thread is
    /// given back on another, and the lock is then free for other processes and objects.
    @Test(arguments: WholeFileKind.allCases)
    func lockObjectOwnershipLetsAnotherThreadRelease(kind: WholeFileKind) throws {
        let path = folder.file("object.lock")
        let lock = try kind.make(path, ownership: .lockObject)
        onAnotherThread { try? lock.acquire(timeout: .seconds(5)) }
        #expect(lock.isLocked)
        #expect(lock.isHeldByCaller, "the object's hold is every caller's")
        #expect(try !kind.make(path).tryAcquire(), "other objects are excluded")
        #expect(try lock.tryAcquire(), "acquiring again from another thread counts up")
        #expect(lock.holdCount == 2)
        #expect(onAnotherThread { lock.release() })
        #expect(lock.release())
        #expect(!lock.isLocked)
        let other = try kind.make(path)
        #expect(try other.tryAcquire(), "released from another thread, the lock is free")
        other.release()
    }

    @Test(arguments: WholeFileKind.allCases)
    func lockObjectOwnershipLetsAnotherTaskRelease(kind: WholeFileKind) async throws {
        let path = folder.file("object-task.lock")
        let lock = try kind.make(path, ownership: .lockObject)
        try await Task.detached { try await lock.acquire(timeout: .seconds(5)) }.value
        let released = await Task.detached { lock.release() }.value
        #expect(released)
        #expect(!lock.isLocked)
    }

    /// A hold counts up only in its own mode: asking for the other mode (an upgrade from shared
    /// to exclusive, a downgrade from exclusive to shared) is a clear error, not a count.
    @Test func reentryCountsOnlyInTheSameMode() throws {
        let path = folder.file("modes.lock")
        let lock = try FileLock(at: path)
        try lock.acquire(mode: .shared, timeout: nil, cancelCheck: nil)
        try lock.acquire(mode: .shared, timeout: nil, cancelCheck: nil)
        #expect(lock.holdCount == 2)
        let upgrade = #expect(throws: FileLockError.self) { try lock.acquire(mode: .exclusive, timeout: nil, cancelCheck: nil) }
        #expect(upgrade?.code == .modeChangeNotAllowed)
        #expect(upgrade?.message.contains(path) == true)
        #expect(lock.holdCount == 2)
        lock.release(force: true)
        try lock.acquire(mode: .exclusive, timeout: nil, cancelCheck: nil)
        let downgrade = #expect(throws: FileLockError.self) { try lock.acquire(mode: .shared, timeout: .zero, cancelCheck: nil) }
        #expect(downgrade?.code == .modeChangeNotAllowed)
        #expect(try lock.tryAcquire(), "the same mode still counts up")
        #expect(lock.holdCount == 2)
        lock.release(force: true)
    }

    @Test func aSingletonMismatchNamesTheSettingThatDiffers() throws {
        let path = folder.file("singleton.lock")
        let first = try SoftFileLock(at: path, lifetime: .seconds(5), isSingleton: true)
        let error = #expect(throws: FileLockError.self) {
            _ = try SoftFileLock(at: path, isSingleton: true)
        }
        #expect(error?.code == .invalidConfiguration)
        let message = error?.message ?? ""
        #expect(message.contains("lifetime: 5.0 seconds"), "\(message)")
        #expect(message.contains("lifetime: nil"), "\(message)")
        let ownershipError = #expect(throws: FileLockError.self) {
            _ = try SoftFileLock(at: path, lifetime: .seconds(5), ownership: .lockObject, isSingleton: true)
        }
        #expect(ownershipError?.message.contains("ownership: .lockObject") == true)
        _ = first
    }

    /// A child forked after the parent's helper threads ran (the interrupter, a kernel-wait
    /// thread) starts its own: a timed wait from a thread ends at its deadline, and a kernel-wait
    /// thread starts for a wait. (The child uses no Swift concurrency: after `fork` only the
    /// calling thread exists, and the parent's queued tasks would run in the child.)
    @Test func aForkedChildStartsItsOwnHelperThreads() async throws {
        let path = folder.file("fork-helpers.lock")
        let holder = try FileLock(at: path)
        try await holder.acquire()
        let waiter = try FileLock(at: path)
        let warmedOnAThread = errorThrown { try waiter.acquire(timeout: .milliseconds(20)) }
        let warmedInATask = await errorThrown { try await waiter.acquire(timeout: .milliseconds(20)) }
        #expect((warmedOnAThread as? FileLockError)?.code == .timedOut)
        #expect((warmedInATask as? FileLockError)?.code == .timedOut)
        let child = forkChild()
        if child == 0 {
            // 2: the wait did not time out; 3: it took too long; 4, 5: no kernel-wait thread ran.
            let start = MonotonicInstant.now
            let onAThread = errorThrown { try waiter.acquire(timeout: .milliseconds(200)) }
            if (onAThread as? FileLockError)?.code != .timedOut { _exit(2) }
            if MonotonicInstant.now.duration(since: start) > .seconds(10) { _exit(3) }
            let ran = ThreadResult()
            if !KernelWaitThreads.shared.runIfFree({ ran.set("ran") }) { _exit(4) }
            _exit(ran.wait(timeout: 10) == "ran" ? 0 : 5)
        }
        var status: Int32 = 0
        while waitpid(child, &status, 0) == -1 && errno == EINTR {}
        #expect((status >> 8) & 0xff == 0, "the child exited with \((status >> 8) & 0xff)")
        holder.release()
    }
}
