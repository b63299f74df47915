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
        let done = await eventually("the task acquired", timeout: 20) { engine.primitive.counts.tries.load(ordering: .relaxed) >= 3 }
        if !done { waiter.cancel() }
        try await waiter.value
        #expect(engine.primitive.counts.taskPauses.load(ordering: .relaxed) == 2)
        #expect(engine.primitive.counts.threadPauses.load(ordering: .relaxed) == 0)
        engine.release(force: true)
    }

    /// A polling primitive whose tries block (a stalled NFS server) until the gate opens.
    struct StalledPrimitive: LockPrimitive {
        final class Gate: Sendable {
            let isOpen = Atomic(false)
            let blocked = Atomic(0)
        }

        let gate = Gate()
        let path: String
        var waitStyle: WaitStyle { .polling(initial: .milliseconds(1), maximum: .milliseconds(1)) }

        func begin(_ mode: LockMode) throws -> Int { 0 }
        func tryOnce(_ attempt: Int, _ mode: LockMode) throws -> AttemptOutcome<Int> {
            gate.blocked.add(1, ordering: .relaxed)
            while !gate.isOpen.load(ordering: .relaxed) { usleep(1000) }
            gate.blocked.subtract(1, ordering: .relaxed)
            return .acquired(1)
        }
        func abandon(_ attempt: Int) {}
        func release(_ hold: Int) {}
        func forget(_ hold: Int) {}
        func holders() -> [LockHolder] { [] }
    }

    /// Tasks whose marker-file tries hang must not take the cooperative pool's threads (as many
    /// as cores) with them: the tries run on the bounded helper threads. Were the pool blocked,
    /// no task could check anything, so a kernel thread watches, and opens the gates after 20 s.
    @Test func stalledTriesOfWaitingTasksLeaveTheCooperativePoolFree() async throws {
        final class Watch: Sendable {
            let probeRan = Atomic(false)
            let rescued = Atomic(false)
        }
        let path = "/engine-tests/stalled-\(UInt64.random(in: 0...UInt64.max))"
        let configuration = try LockConfiguration(
            defaultTimeout: nil, isBlocking: true, pollInterval: .seconds(1), filePermissions: nil
        ).validated(path: path)
        let engines = (0..<6).map { _ in
            LockEngine(
                primitive: StalledPrimitive(path: path), configuration: configuration,
                node: PathRegistry.node(for: CPath(path)))
        }
        let gates = engines.map { $0.primitive.gate }
        let watch = Watch()
        startThread {
            let deadline = ChildProcess.now() + 20
            while ChildProcess.now() < deadline {
                let stalled = gates.allSatisfy { $0.blocked.load(ordering: .relaxed) == 1 }
                if stalled && watch.probeRan.load(ordering: .relaxed) { break }
                usleep(1000)
            }
            if !watch.probeRan.load(ordering: .relaxed) { watch.rescued.store(true, ordering: .relaxed) }
            for gate in gates { gate.isOpen.store(true, ordering: .relaxed) }
        }
        let waiters = engines.map { engine in Task.detached { try await engine.acquire(mode: .exclusive, timeout: nil) } }
        // A task that needs a pool thread while the tries hang.
        let probe = Task.detached { watch.probeRan.store(true, ordering: .relaxed) }
        for waiter in waiters { try await waiter.value }
        await probe.value
        let rescued = watch.rescued.load(ordering: .relaxed)
        #expect(!rescued, "stalled tries blocked the cooperative pool")
        #expect(BlockingCallPool.shared.threadCount <= BlockingCallPool.shared.maximumThreads)
        for engine in engines { engine.release(force: true) }
    }

    @Test func aWaitingThreadPausesThroughThePrimitive() throws {
        let engine = try engine("thread")
        try engine.acquire(mode: .exclusive, timeout: nil, cancelCheck: nil)
        #expect(engine.primitive.counts.threadPauses.load(ordering: .relaxed) == 2)
        #expect(engine.primitive.counts.taskPauses.load(ordering: .relaxed) == 0)
        engine.release(force: true)
    }
}
