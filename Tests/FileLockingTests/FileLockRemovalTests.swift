#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif
import FileLocking
import Subprocesses
import Testing

/// `removesFileOnRelease`, and the check every acquirer makes that keeps it safe: once locked,
/// the path must still name the file that was locked.
@Suite("FileLock removing its file on release", .ownThreads)
struct FileLockRemovalTests {
    let folder: TemporaryFolder
    init() throws { folder = try TemporaryFolder() }

    func probe(_ arguments: String...) throws -> ChildProcess {
        try ChildProcess(TestEnvironment.probe, arguments)
    }

    @Test func theFileIsGoneAfterTheLastRelease() throws {
        let path = folder.file("removed.lock")
        let lock = try FileLock(at: path, removesFileOnRelease: true)
        #expect(lock.removesFileOnRelease)
        try lock.acquire()
        try lock.acquire()
        #expect(access(path, F_OK) == 0)
        lock.release()
        #expect(access(path, F_OK) == 0, "a reentrant hold is still held")
        lock.release()
        #expect(access(path, F_OK) != 0, "the lock file is still there after release")
        try lock.withLock { #expect(access(path, F_OK) == 0) }
        #expect(access(path, F_OK) != 0)

        let keeping = try FileLock(at: path)
        #expect(!keeping.removesFileOnRelease)
        try keeping.withLock {}
        #expect(access(path, F_OK) == 0, "the default keeps the file")
    }

    /// The holder deletes the file before it unlocks; a waiter blocked on that file then wins a
    /// lock on a deleted file, which must not count: it starts over on a new file at the path.
    @Test func aWaiterThatLockedTheRemovedFileStartsOver() throws {
        let path = folder.file("waiter.lock")
        let holder = try probe("hold", path, "--removes-file")
        try holder.expectLine(startingWith: "acquired")
        let lock = try FileLock(at: path)
        let result = ThreadResult()
        startThread {
            do {
                try lock.acquire(timeout: .seconds(60))
                result.set("acquired")
            } catch { result.set("\(error)") }
        }
        guard eventually("a waiter is blocked in the kernel", { lock.waiterCount > 0 }) else { return }
        holder.send("release")
        try holder.expectLine(startingWith: "released")
        #expect(result.wait() == "acquired")
        #expect(access(path, F_OK) == 0, "the waiter holds the deleted file, not one at the path")
        let other = try probe("try", path)
        try other.expectLine(startingWith: "busy")
        lock.release(force: true)
    }

    /// A lock file renamed away (by some other program) while a waiter waits on it: the waiter
    /// wins the renamed file, whose link count is still 1, so only comparing it with what the
    /// path names shows that it guards nothing.
    @Test func aWaiterWhoseFileWasRenamedAwayStartsOver() throws {
        let path = folder.file("renamed.lock")
        let holder = try probe("hold", path)
        try holder.expectLine(startingWith: "acquired")
        let lock = try FileLock(at: path)
        let result = ThreadResult()
        startThread {
            do {
                try lock.acquire(timeout: .seconds(60))
                result.set("acquired")
            } catch { result.set("\(error)") }
        }
        guard eventually("a waiter is blocked in the kernel", { lock.waiterCount > 0 }) else { return }
        #expect(rename(path, path + ".old") == 0)
        holder.send("release")
        try holder.expectLine(startingWith: "released")
        #expect(result.wait() == "acquired")
        let other = try probe("try", path)
        let line = try other.readLine()
        #expect(line == "busy", "another process got the lock on the file at the path while the waiter holds one")
        if line.hasPrefix("acquired") { other.send("release") }
        lock.release(force: true)
    }

    /// Eight processes, each adding 1 to a counter file 300 times under the lock, every one
    /// deleting the lock file on each release: no update is lost.
    @Test func eightProcessesRemovingTheFileLoseNoUpdate() throws {
        let lock = folder.file("race.lock")
        let counter = folder.file("counter")
        writeFile(counter, "0")
        let workers = try (0..<8).map { _ in try probe("increment", lock, counter, "300", "--removes-file") }
        for worker in workers { try worker.expectLine(startingWith: "ready") }
        for worker in workers { worker.send("go") }
        for worker in workers { try worker.expectLine(startingWith: "done", timeout: 300) }
        #expect(readFile(counter) == "2400")
        #expect(access(lock, F_OK) != 0, "the last release removed the lock file")
    }

    /// Removing and keeping holders mixed: the keepers check too.
    @Test func removingAndKeepingProcessesTogetherLoseNoUpdate() throws {
        let lock = folder.file("mixed.lock")
        let counter = folder.file("mixed-counter")
        writeFile(counter, "0")
        let workers = try (0..<6).map { index in
            try index.isMultiple(of: 2)
                ? probe("increment", lock, counter, "300", "--removes-file") : probe("increment", lock, counter, "300")
        }
        for worker in workers { try worker.expectLine(startingWith: "ready") }
        for worker in workers { worker.send("go") }
        for worker in workers { try worker.expectLine(startingWith: "done", timeout: 300) }
        #expect(readFile(counter) == "1800")
    }

    @Test func aSingletonKeepsItsRemovalSetting() throws {
        let path = folder.file("singleton.lock")
        let first = try FileLock(at: path, isSingleton: true, removesFileOnRelease: true)
        let error = #expect(throws: FileLockError.self) { try FileLock(at: path, isSingleton: true) }
        #expect(error?.code == .invalidConfiguration)
        #expect(error?.message.contains("removesFileOnRelease") == true)
        #expect(try FileLock(at: path, isSingleton: true, removesFileOnRelease: true) == first)
    }
}
