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
        var waitStyle: WaitStyle { .polling(initial: .seconds(3600), maximum: .seconds(3600)) }

        func begin(_ mode: LockMode) throws -> Int { 0 }
        func tryOnce(_ attempt: Int, _ mode: LockMode) throws -> AttemptOutcome<Int> {
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
        var waitStyle: WaitStyle { .polling(initial: .milliseconds(1), maximum: .milliseconds(1)) }

        func begin(_ mode: LockMode) throws -> Int { 0 }
        func tryOnce(_ attempt: Int, _ mode: LockMode) throws -> AttemptOutcome<Int> {
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
            var waitStyle: WaitStyle { .polling(initial: .milliseconds(1), maximum: .milliseconds(1)) }
            func begin(_ mode: LockMode) throws -> Int { 0 }
            func tryOnce(_ attempt: Int, _ mode: LockMode) throws -> AttemptOutcome<Int> { .acquired(1) }
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
}
