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
        let done = await eventually("the task acquired", timeout: 20) { engine.primitive.counts.tries.load(ordering: .relaxed) >= 3 }
        if !done { waiter.cancel() }
        try await waiter.value
        #expect(engine.primitive.counts.taskPauses.load(ordering: .relaxed) == 2)
        #expect(engine.primitive.counts.threadPauses.load(ordering: .relaxed) == 0)
        engine.release(force: true)
    }

    @Test func aWaitingThreadPausesThroughThePrimitive() throws {
        let engine = try engine("thread")
        try engine.acquire(mode: .exclusive, timeout: nil, cancelCheck: nil)
        #expect(engine.primitive.counts.threadPauses.load(ordering: .relaxed) == 2)
        #expect(engine.primitive.counts.taskPauses.load(ordering: .relaxed) == 0)
        engine.release(force: true)
    }
}
