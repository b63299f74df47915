#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif
@testable import FileLocking
import Synchronization
import Subprocesses
import Testing

@Suite("FileLock in one process")
struct FileLockTests {
    let folder: TemporaryFolder
    init() throws { folder = try TemporaryFolder() }

    @Test func acquireAndReleaseKeepsTheLockFile() throws {
        let lock = try FileLock(at: folder.file("a.lock"))
        #expect(!lock.isLocked)
        try lock.acquire()
        #expect(lock.isLocked)
        #expect(lock.holdCount == 1)
        #expect(lock.isHeldByCaller)
        lock.release()
        #expect(!lock.isLocked)
        #expect(access(folder.file("a.lock"), F_OK) == 0, "the lock file stays after release")
    }

    @Test func threadsOfOneProcessExcludeEachOtherThroughOneObject() throws {
        let path = folder.file("threads.lock")
        let lock = try FileLock(at: path)
        let inside = Atomic<Int>(0)
        let overlaps = Atomic<Int>(0)
        let total = Atomic<Int>(0)
        let threads = 4
        let rounds = 200
        let done = Atomic<Int>(0)
        for _ in 0..<threads {
            startThread {
                for _ in 0..<rounds {
                    try? lock.withLock {
                        if inside.add(1, ordering: .sequentiallyConsistent).newValue != 1 {
                            overlaps.add(1, ordering: .relaxed)
                        }
                        total.add(1, ordering: .relaxed)
                        sched_yield()
                        inside.subtract(1, ordering: .sequentiallyConsistent)
                    }
                }
                done.add(1, ordering: .sequentiallyConsistent)
            }
        }
        eventually("all threads finished", timeout: 120) { done.load(ordering: .sequentiallyConsistent) == threads }
        #expect(overlaps.load(ordering: .relaxed) == 0)
        #expect(total.load(ordering: .relaxed) == threads * rounds)
    }

    @Test func aThreadWaitsForAnotherThreadsHoldAndWakesOnRelease() throws {
        let lock = try FileLock(at: folder.file("handoff.lock"))
        try lock.acquire()
        let acquired = Atomic<Bool>(false)
        let started = Atomic<Bool>(false)
        startThread {
            started.store(true, ordering: .sequentiallyConsistent)
            try? lock.acquire(timeout: .seconds(30))
            acquired.store(true, ordering: .sequentiallyConsistent)
            lock.release()
        }
        guard eventually("the thread started", { started.load(ordering: .sequentiallyConsistent) }) else { return }
        guard eventually("the thread is blocked in the kernel", { lock.waiterCount > 0 }) else { return }
        let acquiredEarly = acquired.load(ordering: .sequentiallyConsistent)
        #expect(!acquiredEarly)
        lock.release()
        eventually("the waiting thread acquired", timeout: 60) { acquired.load(ordering: .sequentiallyConsistent) }
    }

    @Test func tasksExcludeEachOtherThroughOneObject() async throws {
        let lock = try FileLock(at: folder.file("tasks.lock"))
        let counters = Counters()
        try await withThrowingTaskGroup(of: Void.self) { group in
            for _ in 0..<4 {
                group.addTask {
                    for _ in 0..<50 {
                        try await lock.withLock {
                            if counters.inside.add(1, ordering: .sequentiallyConsistent).newValue != 1 {
                                counters.overlaps.add(1, ordering: .relaxed)
                            }
                            await Task.yield()
                            counters.inside.subtract(1, ordering: .sequentiallyConsistent)
                        }
                    }
                }
            }
            try await group.waitForAll()
        }
        let overlaps = counters.overlaps.load(ordering: .relaxed)
        #expect(overlaps == 0)
        #expect(!lock.isLocked)
    }

    @Test func asyncWaitsDoNotOccupyTheCooperativePool() async throws {
        // More waiting tasks than the pool has threads (one per core): if a wait blocked a pool
        // thread, the task below could never run and the holder never release.
        let path = folder.file("pool.lock")
        let holder = try FileLock(at: path)
        try await holder.acquire(timeout: nil)
        let lock = try FileLock(at: path)
        let waiters = 8
        defer { holder.release(force: true) }
        let acquired = Counters()
        // The watchdog is a kernel thread, so it runs even if the pool were stuck; it releases
        // the holder either way, so a regression fails the test instead of hanging it.
        let watchdog = ThreadResult()
        let poolSawAllWaiting = ThreadResult()
        startThread {
            let sawAll = poolSawAllWaiting.wait(timeout: 30) != nil
            watchdog.set(sawAll ? "pool ran" : "pool stuck with \(lock.waiterCount) waiting")
            holder.release(force: true)
        }
        try await withThrowingTaskGroup(of: Void.self) { group in
            for _ in 0..<waiters {
                group.addTask {
                    try await lock.withLock(timeout: .seconds(120)) {
                        _ = acquired.overlaps.add(1, ordering: .relaxed)
                    }
                }
            }
            // Needs a free pool thread while all the waiters wait.
            let poolStillRuns = await Task { await eventually("all waiters are blocked") { lock.waiterCount >= waiters } }.value
            #expect(poolStillRuns)
            poolSawAllWaiting.set("yes")
            try await group.waitForAll()
        }
        #expect(watchdog.wait() == "pool ran")
        #expect(acquired.overlaps.load(ordering: .relaxed) == waiters)
    }

    @Test func cancellingAWaitingTaskEndsItsWait() async throws {
        let path = folder.file("cancel.lock")
        let holder = try FileLock(at: path)
        try await holder.acquire()
        defer { holder.release() }
        let lock = try FileLock(at: path)
        let waiter = Task { try await lock.acquire(timeout: nil) }
        // Let the task reach its kernel wait; cancellation must work at any point anyway.
        guard await eventually("a waiter is blocked in the kernel", { lock.waiterCount > 0 }) else { return }
        waiter.cancel()
        await #expect(throws: CancellationError.self) { try await waiter.value }
        #expect(!lock.isLocked)
    }

    /// A thousand tasks wait for one held lock: the threads they block in the kernel stay under
    /// the cap (the rest poll, their tries on the helper threads), and after the release every one
    /// of them gets the lock in turn; none is lost. In a process of its own (an exit test): it
    /// takes every kernel-wait thread of the process for a while, which would turn other tests'
    /// waiters into polling ones.
    @Test func aThousandWaitingTasksUseBoundedThreadsAndAllGetTheLock() async {
        await #expect(processExitsWith: .success) {
            func threadCount() -> Int { System.folderEntries("/proc/self/task").count }
            let folder = try TemporaryFolder()
            let path = folder.file("thousand.lock")
            let holder = try FileLock(at: path)
            try await holder.acquire(timeout: nil)
            let lock = try FileLock(at: path, pollInterval: .milliseconds(5))
            let before = threadCount()
            final class Turns: Sendable {
                let taken = Atomic<Int>(0)
                let overlaps = Atomic<Int>(0)
                let inside = Atomic<Int>(0)
            }
            let turns = Turns()
            let waiters = (0..<1000).map { _ in
                Task.detached {
                    try await lock.withLock(timeout: .seconds(300)) {
                        if turns.inside.add(1, ordering: .relaxed).newValue > 1 { turns.overlaps.add(1, ordering: .relaxed) }
                        turns.taken.add(1, ordering: .relaxed)
                        turns.inside.subtract(1, ordering: .relaxed)
                    }
                }
            }
            let capped = await eventually("the kernel waiters reach the cap", timeout: 120) {
                KernelWaitThreads.inUse >= KernelWaitThreads.maximum
            }
            let during = threadCount()
            // 2: the cap was never reached; 3: too many threads; 4: a waiter lost; 5: two inside at once.
            guard capped else { exit(2) }
            guard during - before < KernelWaitThreads.maximum + BlockingCallPool.shared.maximumThreads + 100 else { exit(3) }
            holder.release()
            for waiter in waiters { try await waiter.value }
            guard turns.taken.load(ordering: .relaxed) == 1000, !lock.isLocked else { exit(4) }
            exit(turns.overlaps.load(ordering: .relaxed) == 0 ? 0 : 5)
        }
    }

    /// A task cancelled before its wait begins gives up the file it opened for its try.
    @Test func cancelledAcquisitionsLeaveNoOpenFiles() async throws {
        let path = folder.file("fds.lock")
        let holder = try FileLock(at: path)
        try await holder.acquire(timeout: nil)
        func openDescriptorsOnTheLockFile() -> Int {
            System.folderEntries("/proc/self/fd").filter { entry in
                var buffer = [CChar](repeating: 0, count: 4096)
                let count = readlink("/proc/self/fd/" + entry, &buffer, buffer.count - 1)
                return count > 0 && String(decoding: buffer.prefix(count).map { UInt8(bitPattern: $0) }, as: UTF8.self) == path
            }.count
        }
        let before = openDescriptorsOnTheLockFile()
        let lock = try FileLock(at: path)
        for round in 0..<300 {
            let waiter = Task.detached { try await lock.acquire(timeout: nil) }
            // Cancelled at every stage: before the try, during it (on a helper thread), before the wait.
            if round % 3 != 0 { usleep(UInt32(round % 7) * 20) }
            waiter.cancel()
            _ = await waiter.result
        }
        let after = openDescriptorsOnTheLockFile()
        #expect(after == before, "\(after - before) descriptors of the lock file stayed open")
        holder.release()
    }

    @Test func aForkedChildDoesNotUnlockItsParentsLock() throws {
        let path = folder.file("fork.lock")
        let lock = try FileLock(at: path)
        try lock.acquire()
        let child = forkChild()
        if child == 0 {
            lock.release()  // inherited hold on the shared open file: must not unlock it
            _exit(0)
        }
        #expect(waitForChild(child) == 0)
        #expect(try !FileLock(at: path).tryAcquire(), "the child's release unlocked the parent's lock")
        lock.release()
    }

    @Test func negativeTimeoutIsRejected() throws {
        let path = folder.file("neg.lock")
        let error = #expect(throws: FileLockError.self) { _ = try FileLock(at: path, timeout: .seconds(-1)) }
        #expect(error?.code == .invalidTimeout)
        #expect(error?.message.contains(path) == true)
        let lock = try FileLock(at: path)
        let acquireError = #expect(throws: FileLockError.self) { try lock.acquire(timeout: .milliseconds(-5)) }
        #expect(acquireError?.code == .invalidTimeout)
    }

    @Test(arguments: [Double.nan, .infinity, -.infinity, -0.5])
    func nonFiniteOrNegativeSecondsAreRejected(seconds: Double) throws {
        let error = #expect(throws: FileLockError.self) { _ = try FileLock.timeout(seconds: seconds, path: "x.lock") }
        #expect(error?.code == .invalidTimeout)
        #expect(error?.message.contains("x.lock") == true)
    }

    @Test func secondsConvertToDurations() throws {
        #expect(try FileLock.timeout(seconds: 1.5, path: "x") == .milliseconds(1500))
        #expect(try FileLock.timeout(seconds: 0, path: "x") == .zero)
    }
}

/// These change the process-wide umask, so they run one at a time.
@Suite("File permissions", .serialized)
struct FilePermissionTests {
    let folder: TemporaryFolder
    init() throws { folder = try TemporaryFolder() }

    @Test func explicitFilePermissionsOverrideTheUmask() throws {
        let path = folder.file("mode.lock")
        let lock = try FileLock(at: path, filePermissions: 0o666)
        let old = umask(0o077)
        defer { umask(old) }
        try lock.withLock {}
        var status = stat()
        stat(path, &status)
        #expect(status.st_mode & 0o777 == 0o666)
    }

    @Test func withoutPermissionsTheUmaskDecides() throws {
        let path = folder.file("umask.lock")
        let old = umask(0o027)
        defer { umask(old) }
        try FileLock(at: path).withLock {}
        var status = stat()
        stat(path, &status)
        #expect(status.st_mode & 0o777 == 0o640)
    }
}

final class Counters: Sendable {
    let inside = Atomic<Int>(0)
    let overlaps = Atomic<Int>(0)
}

/// Starts a detached kernel thread.
func startThread(_ body: @escaping @Sendable () -> Void) {
    final class Box {
        let body: @Sendable () -> Void
        init(_ body: @escaping @Sendable () -> Void) { self.body = body }
    }
    let context = Unmanaged.passRetained(Box(body)).toOpaque()
    #if canImport(Darwin)
        var thread: pthread_t?
    #else
        var thread = pthread_t()
    #endif
    pthread_create(
        &thread, nil,
        { context in
            #if canImport(Darwin)
                Unmanaged<Box>.fromOpaque(context).takeRetainedValue().body()
            #else
                Unmanaged<Box>.fromOpaque(context!).takeRetainedValue().body()
            #endif
            return nil
        }, context)
    #if canImport(Darwin)
        pthread_detach(thread!)
    #else
        pthread_detach(thread)
    #endif
}
