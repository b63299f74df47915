#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif
import FileLocking
import Subprocesses
import Synchronization
import Testing

/// `ReadWriteLock`: many readers or one writer, with real processes (`lock-probe --kind rw`).
/// The exclusive contract (reentrancy, forced release, bad paths, fork) runs for its write lock in
/// `ContractTests` and the other suites over `WholeFileKind`; the interop with Python and SQLite
/// is in `ReadWriteInteropTests`.
@Suite("ReadWriteLock", .ownThreads)
struct ReadWriteLockTests {
    let folder: TemporaryFolder
    init() throws { folder = try TemporaryFolder() }

    func reader(_ path: String, _ arguments: String...) throws -> ChildProcess {
        try ChildProcess(TestEnvironment.probe, arguments.isEmpty ? ["hold", path, "--kind", "rw", "--shared"] : arguments + ["--kind", "rw", "--shared"])
    }

    func writer(_ path: String, _ arguments: String...) throws -> ChildProcess {
        try ChildProcess(TestEnvironment.probe, arguments.isEmpty ? ["hold", path, "--kind", "rw"] : arguments + ["--kind", "rw"])
    }

    /// A lock object of its own (not the path's singleton), as another part of a program might make.
    func separate(_ path: String, timeout: Duration? = nil) throws -> ReadWriteLock {
        try ReadWriteLock(at: path, timeout: timeout, isSingleton: false)
    }

    @Test func manyReadersHoldAtOnceAndExcludeAWriter() throws {
        let path = folder.file("readers.lock")
        let readers = try (0..<3).map { _ in try reader(path) }
        var pids: Set<Int32> = []
        for reader in readers {
            let line = try reader.expectLine(startingWith: "acquired")
            pids.insert(Int32(line.split(separator: " ")[1]) ?? 0)
        }
        let lock = try separate(path)
        #expect(try lock.tryAcquireRead(), "a fourth reader joins")
        #expect(lock.release())
        #expect(try !lock.tryAcquireWrite())
        let holders = lock.holders
        #expect(Set(holders.map(\.pid)) == pids)
        #expect(holders.allSatisfy { $0.isShared })
        #expect(holders.allSatisfy { $0.command?.contains("lock-probe") == true })
        let error = #expect(throws: FileLockError.self) { try lock.acquireWrite(timeout: .seconds(3)) }
        #expect(error?.code == .timedOut)
        #expect(error.flatMap(\.holder).map { pids.contains($0.pid) } == true)
        #expect(error?.message.contains("the write lock") == true)
        for reader in readers { reader.send("release") }
        for reader in readers { try reader.expectLine(startingWith: "released") }
        #expect(try lock.tryAcquireWrite())
        lock.release()
        #expect(try FileStatusProbe.size(path) == 0, "the lock file stays empty (a valid empty SQLite database)")
    }

    @Test func aWriterExcludesReadersAndWriters() throws {
        let path = folder.file("writer.lock")
        let holder = try writer(path)
        let pid = Int32(try holder.expectLine(startingWith: "acquired").split(separator: " ")[1])
        let lock = try separate(path)
        #expect(try !lock.tryAcquireRead())
        #expect(try !lock.tryAcquireWrite())
        #expect(lock.holders.map(\.pid) == [pid])
        #expect(lock.holders.first?.isShared == false)
        let error = #expect(throws: FileLockError.self) { try lock.acquireRead(timeout: .seconds(3)) }
        #expect(error?.holder?.pid == pid)
        #expect(error?.message.contains("the read lock") == true)
        try reader(path, "try", path).expectLine(startingWith: "busy")
        holder.send("release")
        try holder.expectLine(startingWith: "released")
        #expect(try lock.tryAcquireRead())
        lock.release()
    }

    /// Two writers and four readers over one data file of two numbers that the writers keep equal
    /// (changing one, yielding, then the other): with the lock no reader ever sees them differ,
    /// and no increment is lost.
    @Test func writersKeepAnInvariantThatReadersCheck() throws {
        let path = folder.file("pair.lock")
        let data = folder.file("pair")
        let rounds = 300
        var workers: [ChildProcess] = []
        for _ in 0..<2 { workers.append(try writer(path, "pair", path, data, String(rounds))) }
        for _ in 0..<4 { workers.append(try reader(path, "pair", path, data, String(rounds))) }
        for worker in workers { try worker.expectLine(startingWith: "ready") }
        for worker in workers { worker.send("go") }
        var torn = 0
        for worker in workers {
            let line = try worker.expectLine(startingWith: "done", timeout: 120)
            torn += Int(line.split(separator: " ")[1]) ?? -1_000_000
        }
        #expect(torn == 0)
        let fields = try FileStatusProbe.fields(data)
        #expect(fields == [2 * rounds, 2 * rounds], "every increment counted")
    }

    /// Readers that keep overlapping do not starve a writer: two reader threads relay the read
    /// lock, each letting go only while the other holds it, so that at no moment is it free. Once
    /// the writer waits, no new reader enters (the relay then lets go after 1 s without its
    /// partner), and the writer gets in. Without writer preference it would wait for ever.
    @Test func aWriterGetsInWhileReadersKeepOverlapping() throws {
        let path = folder.file("relay.lock")
        let relay = ReaderRelay()
        let finished = [ThreadResult(), ThreadResult()]
        for side in 0..<2 {
            let lock = try separate(path)
            let result = finished[side]
            startThread {
                do {
                    result.set("\(try relay.run(side, lock))")
                } catch { result.set("\(error)") }
            }
        }
        guard eventually("both readers hold at once", { relay.bothHaveHeld }) else { return }
        // Another process, so that nothing but the kernel's record locks is shared with the relay.
        let writer = try writer(path, "hold", path, "--timeout", "20")
        let line = try writer.expectLine(startingWith: "", timeout: 60)
        #expect(line.hasPrefix("acquired"), "the writer got in: \(line)")
        writer.send("release")
        relay.stop()
        for result in finished {
            let rounds = Int(result.wait() ?? "") ?? 0
            #expect(rounds >= 1, "the relay ran")
        }
    }

    /// A writer that waits for a reader closes the entry to new readers (SQLite's writer
    /// preference), and both the waiting writer and the waiting reader are woken by the kernel.
    @Test func aWaitingWriterHoldsBackNewReadersUntilItIsDone() throws {
        let path = folder.file("prefer.lock")
        let inside = try reader(path)
        try inside.expectLine(startingWith: "acquired")
        let waitingWriter = try writer(path, "hold", path, "--timeout", "60")
        let lock = try separate(path)
        guard eventually("the writer waits with the readers' entry closed", { lock.waitingWriter?.pid == waitingWriter.pid })
        else { return }
        #expect(try !lock.tryAcquireRead(), "no new reader while a writer waits")
        let lateReader = try reader(path, "hold", path, "--timeout", "60")
        inside.send("release")
        try inside.expectLine(startingWith: "released")
        try waitingWriter.expectLine(startingWith: "acquired")
        #expect(lock.waitingWriter == nil)
        waitingWriter.send("release")
        try waitingWriter.expectLine(startingWith: "released")
        try lateReader.expectLine(startingWith: "acquired")
        lateReader.send("release")
        try lateReader.expectLine(startingWith: "released")
    }

    @Test func aKilledReaderOrWriterFreesItsPartAtOnce() throws {
        let path = folder.file("killed.lock")
        let lock = try separate(path)

        let reader = try self.reader(path)
        try reader.expectLine(startingWith: "acquired")
        #expect(try !lock.tryAcquireWrite())
        reader.signal(SIGKILL)
        _ = try reader.waitForExit()
        #expect(try lock.tryAcquireWrite(), "a killed reader's lock is gone")
        lock.release()

        let writer = try self.writer(path)
        try writer.expectLine(startingWith: "acquired")
        #expect(try !lock.tryAcquireRead())
        writer.signal(SIGKILL)
        _ = try writer.waitForExit()
        #expect(try lock.tryAcquireRead(), "a killed writer's lock is gone")
        lock.release()

        // A writer killed while it waits for a reader (holding the pending byte) leaves the
        // entry open again.
        let inside = try self.reader(path)
        try inside.expectLine(startingWith: "acquired")
        let waiting = try self.writer(path, "hold", path, "--timeout", "60")
        guard eventually("the writer waits", { lock.waitingWriter?.pid == waiting.pid }) else { return }
        #expect(try !lock.tryAcquireRead())
        waiting.signal(SIGKILL)
        _ = try waiting.waitForExit()
        #expect(try lock.tryAcquireRead(), "a killed waiting writer leaves nothing behind")
        lock.release()
        inside.send("release")
        try inside.expectLine(startingWith: "released")
    }

    /// A holder's forked child (without exec) must not keep the holder's lock alive: the child
    /// shares the open files, so the library points its copies elsewhere. Both ways a child can
    /// share the lock: forked while the lock was held, and forked while an open file of the lock
    /// was kept for reuse, which the holder then locked.
    @Test(arguments: [(WholeFileKind.readWrite, false), (.readWrite, true), (.kernel, true)])
    func aKilledHolderFreesTheLockWhileItsForkedChildLives(kind: WholeFileKind, whileHeld: Bool) throws {
        let path = folder.file("forked.lock")
        let holder = try ChildProcess(
            TestEnvironment.probe, ["fork-hold", path] + kind.probeArguments + (whileHeld ? ["--while-held"] : []))
        let words = try holder.expectLine(startingWith: "acquired").split(separator: " ")
        let child = Int32(words.count == 3 ? words[2] : "") ?? 0
        let lock = try kind.make(path)
        #expect(try !lock.tryAcquire())
        holder.signal(SIGKILL)
        _ = try holder.waitForExit()
        #expect(child > 0 && kill(child, 0) == 0, "the forked child still lives")
        #expect(try lock.tryAcquire(), "the killed holder's lock is free, though its child lives")
        lock.release()
        holder.closeInput()
        guard eventually("the forked child ends", { kill(child, 0) != 0 }) else { return }
    }

    /// A `FileLock` (flock) and a `ReadWriteLock` (record locks) on one path never wait for each
    /// other: holding one while waiting for the other is no self-deadlock.
    @Test func holdingAFileLockOnThePathIsNoDeadlockForAReadWriteLock() throws {
        let path = folder.file("two-kinds.lock")
        let holder = try writer(path)
        try holder.expectLine(startingWith: "acquired")
        let result = ThreadResult()
        startThread {
            do {
                let fileLock = try FileLock(at: path)
                try fileLock.acquire(timeout: nil)
                defer { fileLock.release() }
                let readWrite = try ReadWriteLock(at: path, isSingleton: false)
                try readWrite.acquireWrite(timeout: nil)
                readWrite.release()
                result.set("acquired")
            } catch { result.set("\(error)") }
        }
        guard eventually("the writer waits", { TestEnvironment.recordLockWaiters(on: path) > 0 || result.peek() != nil })
        else { return }
        #expect(result.peek() == nil, "\(result.peek() ?? "")")
        holder.send("release")
        try holder.expectLine(startingWith: "released")
        #expect(result.wait() == "acquired")
    }

    @Test func aBlockedReaderWakesWhenTheWriterReleases() throws {
        let path = folder.file("wake.lock")
        let holder = try writer(path)
        try holder.expectLine(startingWith: "acquired")
        let lock = try separate(path)
        let result = ThreadResult()
        startThread {
            do {
                try lock.acquireRead(timeout: .seconds(60))
                result.set("acquired")
                lock.release()
            } catch { result.set("\(error)") }
        }
        guard eventually("the reader waits in the kernel", { TestEnvironment.recordLockWaiters(on: path) > 0 }) else { return }
        #expect(result.peek() == nil)
        holder.send("release")
        try holder.expectLine(startingWith: "released")
        #expect(result.wait() == "acquired")
    }

    @Test func threadsOfOneProcessShareReadsAndExcludeWrites() throws {
        let path = folder.file("threads.lock")
        let lock = try ReadWriteLock(at: path)
        try lock.acquireRead()
        let result = ThreadResult()
        startThread {
            do {
                // Another thread reads at the same time through the same singleton...
                guard try lock.tryAcquireRead() else { return result.set("read refused") }
                lock.release()
                // ...but cannot write while this thread reads.
                result.set(try lock.tryAcquireWrite() ? "wrote" : "write refused")
            } catch { result.set("\(error)") }
        }
        #expect(result.wait() == "write refused")
        lock.release()
        #expect(lock.holdCount == 0)
    }

    @Test func reentrancyCountsPerModeAndModeChangesAreRefused() throws {
        let path = folder.file("modes.lock")
        let lock = try ReadWriteLock(at: path)
        try lock.acquireRead()
        try lock.acquireRead()
        #expect(lock.heldMode == .shared)
        #expect(lock.readLock.holdCount == 2 && lock.writeLock.holdCount == 0)
        #expect(lock.readLock.isHeldByCaller && !lock.writeLock.isHeldByCaller)
        let upgrade = #expect(throws: FileLockError.self) { try lock.acquireWrite(timeout: .seconds(1)) }
        #expect(upgrade?.code == .modeChangeNotAllowed)
        #expect(upgrade?.message.contains("upgrade") == true)
        #expect(lock.release() && lock.release())
        #expect(!lock.release(), "nothing left to release")

        // (Not inside a `withWriteLock` closure: see the note on closures in `#expect` in the guide.)
        try lock.acquireWrite()
        let downgrade = #expect(throws: FileLockError.self) { try lock.tryAcquireRead() }
        #expect(downgrade?.code == .modeChangeNotAllowed)
        #expect(downgrade?.message.contains("downgrade") == true)
        #expect(try lock.tryAcquireWrite(), "the write lock counts up")
        #expect(lock.release() && lock.release())
        #expect(!lock.isLocked)
    }

    /// Each side releases only its own mode's holds.
    @Test func aSideReleasesOnlyItsOwnMode() throws {
        let lock = try separate(folder.file("sides.lock"))
        try lock.acquireRead()
        #expect(!lock.writeLock.release(), "the write side holds nothing")
        #expect(!lock.writeLock.release(force: true), "nor does a forced release of it drop the read hold")
        #expect(lock.heldMode == .shared && lock.holdCount == 1)
        #expect(lock.readLock.release())
        try lock.acquireWrite()
        try lock.acquireWrite()
        #expect(!lock.readLock.release())
        #expect(lock.holdCount == 2)
        #expect(lock.writeLock.release() && lock.writeLock.release())
        #expect(!lock.isLocked)
    }

    /// A try's error names the holder too, here another lock object of this process (whose own
    /// open files are looked at first, whatever the budget; another process's are looked for
    /// within a budget of at least 5 ms, which a loaded machine may not give, so that part is
    /// the contract suite's, with a longer timeout).
    @Test func aTryNamesTheHolder() throws {
        let path = folder.file("try-named.lock")
        let holder = try separate(path)
        try holder.acquireWrite()
        let lock = try separate(path)
        let tried = #expect(throws: FileLockError.self) { try lock.acquireRead(timeout: .zero) }
        #expect(tried?.holder?.pid == getpid(), "\(tried?.message ?? "")")
        #expect(tried?.message.contains("this process") == true, "\(tried?.message ?? "")")
        holder.release()
    }

    @Test func theDefaultIsOneSingletonPerPath() throws {
        let path = folder.file("single.lock")
        let first = try ReadWriteLock(at: path)
        let second = try ReadWriteLock(at: path)
        #expect(first == second)
        try first.withReadLock {
            #expect(second.heldMode == .shared, "the same object: this thread's hold shows")
        }
        let error = #expect(throws: FileLockError.self) { try ReadWriteLock(at: path, timeout: .seconds(3)) }
        #expect(error?.code == .invalidConfiguration)
        #expect(try separate(path) != first)
    }

    @Test func forcedReleaseDropsBothModesOfEveryThread() throws {
        let path = folder.file("force.lock")
        let lock = try separate(path)
        try lock.acquireRead()
        try lock.acquireRead()
        let result = ThreadResult()
        startThread {
            do {
                try lock.acquireRead(timeout: .seconds(5))
                result.set("reading")
            } catch { result.set("\(error)") }
        }
        #expect(result.wait() == "reading")
        #expect(lock.holdCount == 3)
        #expect(lock.release(force: true))
        #expect(lock.holdCount == 0)
        let other = try separate(path)
        #expect(try other.tryAcquireWrite(), "nothing of it is left in the kernel")
        other.release()
    }

    @Test func asyncReadersAndWritersAndCancellation() async throws {
        let path = folder.file("async.lock")
        let lock = try separate(path)
        let value = try await lock.withReadLock(timeout: .seconds(5)) { 7 }
        #expect(value == 7)
        let holder = try writer(path)
        try holder.expectLine(startingWith: "acquired")
        let waiter = Task { try await lock.acquireRead(timeout: .seconds(60)) }
        guard await eventually("the task waits in the kernel", { TestEnvironment.recordLockWaiters(on: path) > 0 })
        else { return }
        waiter.cancel()
        let outcome = await waiter.result
        #expect(throws: CancellationError.self) { try outcome.get() }
        #expect(!lock.isLocked)
        let writing = Task { try await lock.withWriteLock(timeout: .seconds(60)) { lock.heldMode } }
        guard await eventually("the writer task waits", { TestEnvironment.recordLockWaiters(on: path) > 0 }) else { return }
        holder.send("release")
        try holder.expectLine(startingWith: "released")
        let mode = try await writing.value
        #expect(mode == .exclusive)
        #expect(!lock.isLocked)
    }

    @Test func aWALDatabaseIsRefused() throws {
        let path = folder.file("wal.db")
        // An SQLite header (100 bytes) whose file format versions (bytes 18 and 19) say WAL.
        var header = Array("SQLite format 3".utf8) + [0]
        header += [0x10, 0x00, 2, 2] + [UInt8](repeating: 0, count: 80)
        writeBytes(path, header)
        let lock = try separate(path)
        let error = #expect(throws: FileLockError.self) { try lock.acquireRead(timeout: .seconds(1)) }
        #expect(error?.code == .invalidConfiguration)
        #expect(error?.message.contains("WAL") == true)
        let writeError = #expect(throws: FileLockError.self) { try lock.tryAcquireWrite() }
        #expect(writeError?.code == .invalidConfiguration)
        #expect(!lock.isLocked)
        // Nothing stays locked behind the refusal.
        #expect(TestEnvironment.recordLocks(on: path) == 0)

        // A rollback-journal database (versions 1) is fine; a file that is no database is refused
        // (as Python's ReadWriteLock cannot open it).
        header[18] = 1
        header[19] = 1
        writeBytes(path, header)
        #expect(try lock.tryAcquireWrite())
        lock.release()
        writeFile(path, "{\"some\": \"data\"}")
        let dataError = #expect(throws: FileLockError.self) { try lock.tryAcquireRead() }
        #expect(dataError?.code == .invalidConfiguration)
        #expect(dataError?.message.contains("neither empty nor an SQLite database") == true)
        #expect(readFile(path) == "{\"some\": \"data\"}", "the data is untouched")
    }

    /// The lock file deleted and created anew while a waiter waits: the waiter locks the file now
    /// at the path, not the deleted one that a newcomer can no longer see.
    @Test func aWaiterFollowsAReplacedLockFile() throws {
        let path = folder.file("replaced.lock")
        let holder = try writer(path)
        try holder.expectLine(startingWith: "acquired")
        let lock = try separate(path)
        let result = ThreadResult()
        startThread {
            do {
                try lock.acquireWrite(timeout: .seconds(60))
                result.set("acquired")
            } catch { result.set("\(error)") }
        }
        guard eventually("the writer waits", { TestEnvironment.recordLockWaiters(on: path) > 0 }) else { return }
        #expect(unlink(path) == 0)
        holder.send("release")
        try holder.expectLine(startingWith: "released")
        #expect(result.wait() == "acquired")
        // A newcomer on the path now meets the waiter's lock.
        let newcomer = try writer(path, "try", path)
        try newcomer.expectLine(startingWith: "busy")
        lock.release(force: true)
    }

    /// A read lock taken while the file was read-only for this user keeps no read-only file for
    /// the writer: once the user may write, the same lock object writes.
    @Test(.enabled(if: TestEnvironment.requires(TestEnvironment.isRoot), "needs root to switch to nobody"))
    func aWriterIsNotHeldBackByAReadOnlyFileKeptFromAReader() throws {
        let path = folder.file("grant.lock")
        writeFile(path, "")
        chmod(path, 0o644)
        let probe = try folder.probeAsNobody(["grant", path])
        try probe.expectLine(startingWith: "read ok")
        let refused = try probe.expectLine(startingWith: "write")
        #expect(refused.contains("permissionDenied"), "\(refused)")
        chmod(path, 0o666)
        probe.send("granted")
        let second = try probe.expectLine(startingWith: "write")
        #expect(second == "write ok", "\(second)")
    }

    @Test func aReadOnlyLockFileAllowsReadsOnly() throws {
        guard !TestEnvironment.isRoot else {
            // Root may write any file: run the check as nobody.
            let path = folder.file("ro.lock")
            writeFile(path, "")
            chmod(path, 0o444)
            let reading = try folder.probeAsNobody(["try", path, "--kind", "rw", "--shared"])
            try reading.expectLine(startingWith: "acquired")
            reading.send("release")
            let writing = try folder.probeAsNobody(["try", path, "--kind", "rw"])
            let line = try writing.expectLine(startingWith: "error")
            #expect(line.contains("permissionDenied") && line.contains("write access"))
            return
        }
        let path = folder.file("ro.lock")
        writeFile(path, "")
        chmod(path, 0o444)
        let lock = try separate(path)
        #expect(try lock.tryAcquireRead())
        lock.release()
        let error = #expect(throws: FileLockError.self) { try lock.tryAcquireWrite() }
        #expect(error?.code == .permissionDenied)
    }
}

/// Small file helpers for the read-write tests.
enum FileStatusProbe {
    static func size(_ path: String) throws -> Int {
        var status = stat()
        guard stat(path, &status) == 0 else { throw ChildProcessError(description: "cannot stat \(path)", errno: errno) }
        return Int(status.st_size)
    }

    /// The two 32-byte number fields `lock-probe pair` keeps.
    static func fields(_ path: String) throws -> [Int] {
        let descriptor = open(path, O_RDONLY | O_CLOEXEC)
        guard descriptor >= 0 else { throw ChildProcessError(description: "cannot open \(path)", errno: errno) }
        defer { close(descriptor) }
        return (0..<2).map { index in
            var buffer = [UInt8](repeating: 0, count: 32)
            let count = pread(descriptor, &buffer, 32, off_t(index * 32))
            return Int(String(decoding: buffer.prefix(max(0, count)).prefix { $0 != 0 }, as: UTF8.self)) ?? -1
        }
    }
}

func writeBytes(_ path: String, _ bytes: [UInt8]) {
    let descriptor = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
    guard descriptor >= 0 else { return }
    _ = bytes.withUnsafeBytes { write(descriptor, $0.baseAddress, $0.count) }
    close(descriptor)
}

extension TestEnvironment {
    /// The `/proc/locks` lines of the file at `path` (record locks held or waited for).
    static func recordLockLines(on path: String) -> [String] {
        // Until two looks agree: see `KernelLockTable.entries`.
        var previous = recordLockLinesOnce(on: path)
        for _ in 0..<9 {
            let current = recordLockLinesOnce(on: path)
            if current.map(Self.withoutNumber) == previous.map(Self.withoutNumber) { return current }
            previous = current
        }
        return previous
    }

    /// A line without its leading position number, which moves as other locks come and go.
    private static func withoutNumber(_ line: String) -> Substring {
        line.drop { $0 != " " }
    }

    private static func recordLockLinesOnce(on path: String) -> [String] {
        var status = stat()
        guard stat(path, &status) == 0, let table = readFile("/proc/locks") else { return [] }
        return table.split(separator: "\n").map(String.init).filter {
            $0.contains(":\(status.st_ino) ") && ($0.contains("POSIX") || $0.contains("OFDLCK"))
        }
    }

    /// How many record-lock waiters (`->` lines) the file has.
    static func recordLockWaiters(on path: String) -> Int {
        recordLockLines(on: path).filter { $0.contains("->") }.count
    }

    /// How many record locks are held on the file.
    static func recordLocks(on path: String) -> Int {
        recordLockLines(on: path).filter { !$0.contains("->") }.count
    }
}

/// Two reader threads that pass the read lock between them so that it is never free: a reader
/// lets go only while the other holds it (or after 1 s alone: a writer has closed the entry; a
/// thread descheduled for that long on a loaded machine could also end it).
final class ReaderRelay: Sendable {
    private struct State {
        var holding = [false, false]
        var stopped = false
        var bothHaveHeld = false
    }

    private let state = Mutex(State())

    var bothHaveHeld: Bool { state.withLock { $0.bothHaveHeld } }

    func stop() { state.withLock { $0.stopped = true } }

    /// Runs one side until stopped; returns how many times it held the lock.
    func run(_ side: Int, _ lock: ReadWriteLock) throws -> Int {
        var rounds = 0
        while !state.withLock({ $0.stopped }) {
            try lock.acquireRead(timeout: .seconds(60))
            rounds += 1
            state.withLock { state in
                state.holding[side] = true
                if state.holding[1 - side] { state.bothHaveHeld = true }
            }
            let giveUp = ChildProcess.now() + 1
            // Let go only while the partner holds (checked and marked at once, so that the two
            // never let go together), or alone after 1 s.
            while !state.withLock({ state -> Bool in
                guard state.holding[1 - side] || ChildProcess.now() > giveUp || state.stopped else { return false }
                state.holding[side] = false
                return true
            }) {
                usleep(100)
            }
            lock.release()
        }
        return rounds
    }
}
