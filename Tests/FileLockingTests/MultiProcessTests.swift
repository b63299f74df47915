#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif
@testable import FileLocking
import Subprocesses
import Testing

/// Other processes are real processes: `lock-probe`, driven over its stdin/stdout.
@Suite("FileLock between processes", .ownThreads)
struct MultiProcessTests {
    let folder: TemporaryFolder
    init() throws { folder = try TemporaryFolder() }

    func probe(_ arguments: String...) throws -> ChildProcess {
        try ChildProcess(TestEnvironment.probe, arguments)
    }

    @Test func withoutTheLockUpdatesAreLost() throws {
        // The control experiment: proves the exclusion test above can fail.
        let lock = folder.file("nolock.lock")
        let counter = folder.file("nolock")
        var lost = false
        for _ in 0..<5 where !lost {
            writeFile(counter, "0")
            let workers = try (0..<4).map { _ in try probe("increment", lock, counter, "2000", "--no-lock") }
            for worker in workers { try worker.expectLine(startingWith: "ready") }
            for worker in workers { worker.send("go") }
            for worker in workers { try worker.expectLine(startingWith: "done", timeout: 120) }
            lost = Int(readFile(counter) ?? "") != 8000
        }
        #expect(lost, "four unlocked writers never lost an update in five runs")
    }

    @Test func tryAcquireFailsWhileAnotherProcessHolds() throws {
        let path = folder.file("try.lock")
        let holder = try probe("hold", path)
        let line = try holder.expectLine(startingWith: "acquired")
        let lock = try FileLock(at: path)
        #expect(try !lock.tryAcquire())
        #expect(lock.holder?.pid == Int32(line.split(separator: " ")[1]))
        let other = try probe("try", path)
        try other.expectLine(startingWith: "busy")
        holder.send("release")
        try holder.expectLine(startingWith: "released")
        #expect(try lock.tryAcquire())
        #expect(lock.holder?.pid == getpid())
        lock.release()
        #expect(lock.holder == nil)
    }

    @Test func timeoutIsHonouredAndReportsTheHolder() throws {
        let path = folder.file("timeout.lock")
        let holder = try probe("hold", path)
        let pid = Int32(try holder.expectLine(startingWith: "acquired").split(separator: " ")[1])
        let lock = try FileLock(at: path)
        let started = ChildProcess.now()
        let error = #expect(throws: FileLockError.self) { try lock.acquire(timeout: .milliseconds(300)) }
        let elapsed = ChildProcess.now() - started
        #expect(error?.code == .timedOut)
        #expect(error?.path == path)
        #expect(error?.holder?.pid == pid)
        #expect((error?.waited ?? .zero) >= .milliseconds(300))
        #expect(error?.message.contains(path) == true)
        #expect(error?.message.contains("pid \(pid!)") == true)
        #expect(elapsed >= 0.3)
        // Generous: a loaded 2-core machine may be slow, but a timeout never turns into a hang.
        #expect(elapsed < 5)
        holder.send("release")
        try holder.expectLine(startingWith: "released")
    }

    @Test func aWaitingProcessWakesWhenTheHolderReleases() throws {
        let path = folder.file("wake.lock")
        let holder = try probe("hold", path)
        try holder.expectLine(startingWith: "acquired")
        let waiter = try probe("hold", path, "--timeout", "60")
        let lock = try FileLock(at: path)
        guard eventually("a waiter is blocked in the kernel", { lock.waiterCount > 0 }) else { return }
        holder.send("release")
        try holder.expectLine(startingWith: "released")
        try waiter.expectLine(startingWith: "acquired")
        waiter.send("release")
        try waiter.expectLine(startingWith: "released")
    }

    @Test func sigkillOfTheHolderFreesTheLockAtOnce() throws {
        let path = folder.file("kill.lock")
        let holder = try probe("hold", path)
        try holder.expectLine(startingWith: "acquired")
        let waiter = try probe("hold", path)
        let lock = try FileLock(at: path)
        guard eventually("a waiter is blocked in the kernel", { lock.waiterCount > 0 }) else { return }
        holder.signal(SIGKILL)
        #expect(try holder.waitForExit() == 128 + SIGKILL)
        try waiter.expectLine(startingWith: "acquired")
        waiter.send("release")
        try waiter.expectLine(startingWith: "released")
        #expect(try lock.tryAcquire())
        lock.release()
    }

    @Test func aBlockedThreadHereWakesWhenAProcessReleases() throws {
        let path = folder.file("thread-wake.lock")
        let holder = try probe("hold", path)
        try holder.expectLine(startingWith: "acquired")
        let lock = try FileLock(at: path)
        let waiterDone = ThreadResult()
        startThread {
            do {
                try lock.acquire(timeout: .seconds(60))
                lock.release()
                waiterDone.set("acquired")
            } catch { waiterDone.set("\(error)") }
        }
        guard eventually("a waiter is blocked in the kernel", { lock.waiterCount > 0 }) else { return }
        holder.send("release")
        #expect(waiterDone.wait() == "acquired")
    }

    @Test func cancellingATaskThatWaitsForAnotherProcess() async throws {
        let path = folder.file("task-cancel.lock")
        let holder = try probe("hold", path)
        try holder.expectLine(startingWith: "acquired")
        let lock = try FileLock(at: path)
        let waiter = Task { try await lock.acquire(timeout: .seconds(120)) }
        guard await eventually("a waiter is blocked in the kernel", { lock.waiterCount > 0 }) else { return }
        let started = ChildProcess.now()
        waiter.cancel()
        await #expect(throws: CancellationError.self) { try await waiter.value }
        // Only "not the timeout": the task resumes on the cooperative pool, which other tests
        // running in parallel may keep busy for seconds.
        #expect(ChildProcess.now() - started < 60, "cancellation ends the wait, not the 120 s timeout")
        #expect(!lock.isLocked)
        holder.send("release")
        try holder.expectLine(startingWith: "released")
        try await lock.withLock { #expect(lock.isLocked) }
    }

    @Test func asyncAcquireWakesWhenTheHolderReleases() async throws {
        let path = folder.file("async-wake.lock")
        let holder = try probe("hold", path)
        try holder.expectLine(startingWith: "acquired")
        let lock = try FileLock(at: path)
        let waiter = Task { try await lock.withLock(timeout: .seconds(60)) { lock.holdCount } }
        guard await eventually("a waiter is blocked in the kernel", { lock.waiterCount > 0 }) else { return }
        holder.send("release")
        #expect(try await waiter.value == 1)
    }
}

/// A value set by another thread, waited for with a generous bound.
final class ThreadResult: @unchecked Sendable {
    private let lock = FileLockTestMutex()
    private var value: String?

    func set(_ value: String) { lock.run { self.value = value } }

    func peek() -> String? { lock.run { value } }

    func wait(timeout: Double = 60) -> String? {
        let deadline = ChildProcess.now() + timeout
        while true {
            if let value = lock.run({ value }) { return value }
            if ChildProcess.now() >= deadline { return nil }
            usleep(500)
        }
    }
}

final class FileLockTestMutex: @unchecked Sendable {
    private var mutex = pthread_mutex_t()
    init() { pthread_mutex_init(&mutex, nil) }
    func run<T>(_ body: () -> T) -> T {
        pthread_mutex_lock(&mutex)
        defer { pthread_mutex_unlock(&mutex) }
        return body()
    }
}
