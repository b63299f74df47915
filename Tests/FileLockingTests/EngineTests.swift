#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif
import Subprocesses
import Synchronization
import Testing

@testable import FileLocking

/// The engine with a primitive of the test's own: which waiting hooks it uses.
@Suite struct EngineTests {
    /// Busy for two tries, then free; counts the pauses asked of it. Its own pauses return at
    /// once, while the poll interval is an hour: an engine that slept by itself would hang.
    struct CountingPrimitive: LockPrimitive {
        final class Counts: Sendable {
            let tries = Atomic(0)
            let threadPauses = Atomic(0)
            let taskPauses = Atomic(0)
        }

        let counts = Counts()
        let path: String
        var waitStrategy: WaitStrategy { .polling(initial: .seconds(3600), maximum: .seconds(3600)) }

        func begin(_ request: LockRequest) throws -> Int { 0 }
        func tryOnce(_ attempt: Int, _ request: LockRequest) throws -> AttemptOutcome<Int> {
            counts.tries.add(1, ordering: .relaxed).newValue >= 3 ? .acquired(1) : .busy
        }
        func pause(_ attempt: Int, upTo duration: Duration) { counts.threadPauses.add(1, ordering: .relaxed) }
        func pause(_ attempt: Int, upTo duration: Duration) async throws { counts.taskPauses.add(1, ordering: .relaxed) }
        func abandon(_ attempt: Int) {}
        func release(_ hold: Int) {}
        func forget(_ hold: Int) {}
        func holders() -> [LockHolder] { [] }
    }

    func engine(_ name: String) throws -> LockEngine<CountingPrimitive> {
        let path = "/engine-tests/\(name)-\(UInt64.random(in: 0...UInt64.max))"
        let configuration = try LockConfiguration(
            defaultTimeout: nil, isBlocking: true, pollInterval: .seconds(3600), filePermissions: nil
        ).validated(path: path)
        return LockEngine(
            primitive: CountingPrimitive(path: path), configuration: configuration, node: PathRegistry.node(for: CPath(path)))
    }

    @Test func aWaitingTaskPausesThroughThePrimitive() async throws {
        let engine = try engine("task")
        let waiter = Task { try await engine.acquire(mode: .exclusive, timeout: nil) }
        let done = await eventually("the task acquired", timeout: 120) { engine.primitive.counts.tries.load(ordering: .relaxed) >= 3 }
        if !done { waiter.cancel() }
        try await waiter.value
        #expect(engine.primitive.counts.taskPauses.load(ordering: .relaxed) == 2)
        #expect(engine.primitive.counts.threadPauses.load(ordering: .relaxed) == 0)
        engine.release(force: true)
    }

    /// A polling primitive that notes where its tries run: busy twice, then free.
    struct WhereTriesRunPrimitive: LockPrimitive {
        final class Notes: Sendable {
            let tries = Atomic(0)
            let triesOnHelpers = Atomic(0)
        }

        let notes = Notes()
        let path: String
        var waitStrategy: WaitStrategy { .polling(initial: .milliseconds(1), maximum: .milliseconds(1)) }

        func begin(_ request: LockRequest) throws -> Int { 0 }
        func tryOnce(_ attempt: Int, _ request: LockRequest) throws -> AttemptOutcome<Int> {
            if BlockingCallPool.shared.isCurrentThreadAHelper { notes.triesOnHelpers.add(1, ordering: .relaxed) }
            return notes.tries.add(1, ordering: .relaxed).newValue >= 3 ? .acquired(1) : .busy
        }
        func pause(_ attempt: Int, upTo duration: Duration) async throws {}
        func abandon(_ attempt: Int) {}
        func release(_ hold: Int) {}
        func forget(_ hold: Int) {}
        func holders() -> [LockHolder] { [] }
    }

    /// The tries of a waiting task (for marker files: open, create, read, fstat, which a stalled
    /// NFS server can block for minutes) run on the bounded helper threads, never on the
    /// cooperative pool, whose few threads every task of the process shares.
    @Test func theTriesOfAWaitingTaskRunOnHelperThreads() async throws {
        let path = "/engine-tests/where-\(UInt64.random(in: 0...UInt64.max))"
        let configuration = try LockConfiguration(
            defaultTimeout: nil, isBlocking: true, pollInterval: .seconds(1), filePermissions: nil
        ).validated(path: path)
        let engine = LockEngine(
            primitive: WhereTriesRunPrimitive(path: path), configuration: configuration,
            node: PathRegistry.node(for: CPath(path)))
        try await engine.acquire(mode: .exclusive, timeout: .seconds(30))
        let tries = engine.primitive.notes.tries.load(ordering: .relaxed)
        let onHelpers = engine.primitive.notes.triesOnHelpers.load(ordering: .relaxed)
        #expect(tries == 3 && onHelpers == 3, "\(onHelpers) of \(tries) tries ran on helper threads")
        #expect(BlockingCallPool.shared.threadCount <= BlockingCallPool.shared.maximumThreads)
        engine.release(force: true)
    }

    /// A task's release (a marker's rename and unlink) runs on the helper threads too.
    @Test func aTasksReleaseRunsOnHelperThreads() async throws {
        final class Released: Sendable { let onHelper = Atomic(0) }
        struct ReleaseNotingPrimitive: LockPrimitive {
            let released = Released()
            let path: String
            var waitStrategy: WaitStrategy { .polling(initial: .milliseconds(1), maximum: .milliseconds(1)) }
            func begin(_ request: LockRequest) throws -> Int { 0 }
            func tryOnce(_ attempt: Int, _ request: LockRequest) throws -> AttemptOutcome<Int> { .acquired(1) }
            func abandon(_ attempt: Int) {}
            func release(_ hold: Int) {
                released.onHelper.store(BlockingCallPool.shared.isCurrentThreadAHelper ? 1 : -1, ordering: .relaxed)
            }
            func forget(_ hold: Int) {}
            func holders() -> [LockHolder] { [] }
        }
        let path = "/engine-tests/release-\(UInt64.random(in: 0...UInt64.max))"
        let configuration = try LockConfiguration(
            defaultTimeout: nil, isBlocking: true, pollInterval: .seconds(1), filePermissions: nil
        ).validated(path: path)
        let engine = LockEngine(
            primitive: ReleaseNotingPrimitive(path: path), configuration: configuration,
            node: PathRegistry.node(for: CPath(path)))
        try await engine.acquire(mode: .exclusive, timeout: nil)
        let released = await engine.releaseFromTask(force: false)
        #expect(released)
        #expect(engine.primitive.released.onHelper.load(ordering: .relaxed) == 1)
    }

    /// A call still queued for a helper thread (all of them stuck on a stalled server) ends at
    /// once when its task is cancelled.
    @Test func aQueuedBlockingCallEndsWhenItsTaskIsCancelled() async throws {
        final class Gate: Sendable { let isOpen = Atomic(false) }
        let pool = BlockingCallPool(maximumThreads: 2)
        let gate = Gate()
        let stuck = (0..<2).map { _ in
            Task.detached { try await pool.run { while !gate.isOpen.load(ordering: .relaxed) { usleep(1000) } } }
        }
        guard await eventually("both helpers are stuck", { pool.threadCount == 2 }) else { return }
        let queued = Task.detached { try await pool.run { 42 } }
        try await Task.sleep(for: .milliseconds(20))
        queued.cancel()
        let outcome = await queued.result
        let wasCancelled = (try? outcome.get()) == nil
        #expect(wasCancelled, "the queued call ran although its task was cancelled and no helper was free")
        gate.isOpen.store(true, ordering: .relaxed)
        for task in stuck { try await task.value }
    }

    @Test func aWaitingThreadPausesThroughThePrimitive() throws {
        let engine = try engine("thread")
        try engine.acquire(mode: .exclusive, timeout: nil, cancelCheck: nil)
        #expect(engine.primitive.counts.threadPauses.load(ordering: .relaxed) == 2)
        #expect(engine.primitive.counts.taskPauses.load(ordering: .relaxed) == 0)
        engine.release(force: true)
    }

    /// A lock on a pretend server, for the `.remote` wait strategy: one holder; waiters suspend
    /// on the server until it is free, their deadline passes or their task is cancelled, and the
    /// server counts the waits still running (a cancelled or timed-out wait must leave none).
    final class PretendServer: Sendable {
        struct State {
            var isHeld = false
            var waiters: [Int: CheckedContinuation<Bool, Never>] = [:]
            var nextWaiter = 0
            var tries = 0
            var remoteWaits = 0
        }

        let state = Mutex(State())

        var waiting: Int { state.withLock { $0.waiters.count } }

        func take() -> Bool {
            state.withLock { state in
                state.tries += 1
                if state.isHeld { return false }
                state.isHeld = true
                return true
            }
        }

        func free() {
            let woken = state.withLock { state in
                state.isHeld = false
                defer { state.waiters = [:] }
                return Array(state.waiters.values)
            }
            for waiter in woken { waiter.resume(returning: true) }
        }

        /// Suspends until freed (`true`), or until `deadline` (`false`); cancellation ends it.
        func waitUntilFree(until deadline: MonotonicInstant?) async throws -> Bool {
            let identifier = state.withLock { state in
                state.remoteWaits += 1
                state.nextWaiter += 1
                return state.nextWaiter
            }
            let end: @Sendable () -> Void = { [self] in
                let waiter = state.withLock { $0.waiters.removeValue(forKey: identifier) }
                waiter?.resume(returning: false)
            }
            let timer = Task.detached {
                guard let deadline else { return }
                try await Task.sleep(for: deadline.duration(since: MonotonicInstant.now))
                end()
            }
            defer { timer.cancel() }
            let freed = await withTaskCancellationHandler {
                await withCheckedContinuation { continuation in
                    let isFreeAlready = state.withLock { state in
                        if !state.isHeld { return true }
                        state.waiters[identifier] = continuation
                        return false
                    }
                    if isFreeAlready { continuation.resume(returning: true) }
                }
            } onCancel: {
                end()
            }
            try Task.checkCancellation()
            return freed
        }
    }

    struct RemotePrimitive: LockPrimitive {
        let server: PretendServer
        let path: String
        var waitStrategy: WaitStrategy { .remote }

        func begin(_ request: LockRequest) throws -> Int { 0 }
        func tryOnce(_ attempt: Int, _ request: LockRequest) throws -> AttemptOutcome<Int> {
            server.take() ? .acquired(1) : .busy
        }
        func waitRemotely(_ attempt: Int, _ request: LockRequest, until deadline: MonotonicInstant?) async throws
            -> AttemptOutcome<Int>
        {
            guard try await server.waitUntilFree(until: deadline) else { return .busy }
            return try tryOnce(attempt, request)
        }
        func abandon(_ attempt: Int) {}
        func release(_ hold: Int) { server.free() }
        func forget(_ hold: Int) {}
        func holders() -> [LockHolder] { [] }
    }

    /// By default with an hour's poll interval: a wait that polled instead of waiting on the server
    /// would hang.
    func remoteEngine(_ server: PretendServer, pollInterval: Duration = .seconds(3600)) throws -> LockEngine<RemotePrimitive> {
        let path = "/engine-tests/remote-\(UInt64.random(in: 0...UInt64.max))"
        let configuration = try LockConfiguration(
            defaultTimeout: nil, isBlocking: true, pollInterval: pollInterval, filePermissions: nil
        ).validated(path: path)
        return LockEngine(
            primitive: RemotePrimitive(server: server, path: path), configuration: configuration,
            node: PathRegistry.node(for: CPath(path)))
    }

    /// A remote wait is the server's: the waiter wakes when the lock is freed, not on a poll tick,
    /// from a task and from a thread alike.
    @Test func aRemoteWaitWakesWhenTheServerFreesTheLock() async throws {
        let server = PretendServer()
        #expect(server.take())
        let engine = try remoteEngine(server)
        let waiter = Task.detached { try await engine.acquire(mode: .exclusive, timeout: .seconds(120)) }
        guard await eventually("the task waits on the server", { server.waiting == 1 }) else { return }
        server.free()
        try await waiter.value
        #expect(engine.isLocked)
        let tries = server.state.withLock { $0.tries }
        #expect(tries == 3, "one try before the wait, one after, and the test's own: \(tries)")

        let thread = ThreadResult()
        _ = Threads.spawnDetached {
            do {
                try engine.acquire(mode: .exclusive, timeout: .seconds(120), cancelCheck: nil)
                thread.set("acquired")
                engine.release(force: false)
            } catch { thread.set("\(error)") }
        }
        guard await eventually("the thread waits on the server", { server.waiting == 1 }) else { return }
        engine.release(force: true)
        await eventually("the thread got the lock", timeout: 120) { thread.peek() != nil }
        #expect(thread.peek() == "acquired")
    }

    /// A remote wait ends at its deadline with a timeout, and on cancellation (task or cancel
    /// check) at once, leaving no wait running on the server.
    @Test func aRemoteWaitEndsAtItsDeadlineAndOnCancellation() async throws {
        let server = PretendServer()
        #expect(server.take())
        let engine = try remoteEngine(server)

        let timedOut = await errorThrown { try await engine.acquire(mode: .exclusive, timeout: .milliseconds(50)) }
        let timedOutCode = (timedOut as? FileLockError)?.code
        #expect(timedOutCode == .timedOut)
        #expect(server.waiting == 0)

        let waiter = Task.detached { try await engine.acquire(mode: .exclusive, timeout: nil) }
        guard await eventually("the task waits on the server", { server.waiting == 1 }) else { return }
        waiter.cancel()
        let cancelled = await errorThrown { try await waiter.value }
        #expect(cancelled is CancellationError)
        #expect(server.waiting == 0)

        // A cancel check is asked at each poll interval, while the one wait goes on on the server.
        let checked = try remoteEngine(server, pollInterval: .milliseconds(5))
        let waitsBefore = server.state.withLock { $0.remoteWaits }
        let stop = Atomic(false)
        let thread = ThreadResult()
        _ = Threads.spawnDetached {
            do {
                try checked.acquire(mode: .exclusive, timeout: nil, cancelCheck: { stop.load(ordering: .relaxed) })
                thread.set("acquired")
            } catch let error as FileLockError { thread.set("\(error.code)") } catch { thread.set("\(error)") }
        }
        guard await eventually("the thread waits on the server", { server.waiting == 1 }) else { return }
        stop.store(true, ordering: .relaxed)
        await eventually("the thread's wait ended", timeout: 120) { thread.peek() != nil }
        #expect(thread.peek() == "cancelled")
        #expect(server.waiting == 0)
        #expect(!checked.isLocked)
        let waits = server.state.withLock { $0.remoteWaits } - waitsBefore
        #expect(waits == 1, "one wait on the server, not one per cancel check: \(waits)")
    }

    /// Synchronous callers of a remote lock on every thread of the cooperative pool (one more
    /// than there are cores): their waits run on the library's own thread, so they still end
    /// instead of waiting for a pool thread that never comes. In a process of its own (an exit
    /// test), since it takes the whole pool for a while.
    @Test func synchronousRemoteWaitsOnEveryPoolThreadEnd() async {
        await #expect(processExitsWith: .success) {
            let server = PretendServer()
            _ = server.take()
            let engine = try EngineTests().remoteEngine(server, pollInterval: .milliseconds(5))
            let callers = Int(sysconf(Int32(_SC_NPROCESSORS_ONLN))) + 1
            final class Ended: Sendable { let count = Atomic(0) }
            let ended = Ended()
            for _ in 0..<callers {
                Task.detached {
                    _ = try? engine.acquire(mode: .exclusive, timeout: .milliseconds(200), cancelCheck: nil)
                    ended.count.add(1, ordering: .relaxed)
                }
            }
            // This thread blocks too; the callers must end without it.
            let deadline = MonotonicInstant.now.advanced(by: .seconds(60))
            while ended.count.load(ordering: .relaxed) < callers && MonotonicInstant.now < deadline {
                Threads.sleep(.milliseconds(1))
            }
            exit(ended.count.load(ordering: .relaxed) == callers && server.waiting == 0 ? 0 : 1)
        }
    }

    /// Kernel-wait threads are kept for the next wait, at most the cap at once (beyond, the
    /// caller is told to poll), and end after their idle lifetime.
    @Test func kernelWaitThreadsAreReusedCappedAndEndWhenIdle() throws {
        let threads = KernelWaitThreads(maximumThreads: 2, idleLifetime: .milliseconds(200))
        let ran = ThreadResult()
        let first = threads.runIfFree { ran.set("first") }
        #expect(first)
        #expect(ran.wait() == "first")
        guard eventually("the thread is idle", { threads.busyThreads == 0 }) else { return }
        let second = ThreadResult()
        let reused = threads.runIfFree { second.set("second") }
        #expect(reused)
        #expect(second.wait() == "second")
        #expect(threads.threadCount == 1, "the idle thread took the second wait")

        final class Gate: Sendable { let isOpen = Atomic(false) }
        let gate = Gate()
        for _ in 0..<2 {
            let started = threads.runIfFree { while !gate.isOpen.load(ordering: .relaxed) { Threads.sleep(.milliseconds(1)) } }
            #expect(started)
        }
        guard eventually("both threads are busy", { threads.busyThreads == 2 }) else { return }
        let third = threads.runIfFree {}
        #expect(!third, "a third wait beyond the cap of 2 got a thread")
        gate.isOpen.store(true, ordering: .relaxed)
        guard eventually("both threads ended after their idle lifetime", { threads.threadCount == 0 }) else { return }
        let again = ThreadResult()
        let restarted = threads.runIfFree { again.set("again") }
        #expect(restarted)
        #expect(again.wait() == "again")
    }
}
