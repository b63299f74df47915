#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif
import FileLocking
import Subprocesses
import Testing

/// How many lock waiters the kernel lists for `path` (Linux `/proc/locks`, lines marked `->`).
func rangeWaiterCount(_ path: String) -> Int {
    var status = stat()
    guard stat(path, &status) == 0, let table = readFile("/proc/locks") else { return 0 }
    return table.split(separator: "\n").filter { $0.contains("->") && $0.contains(":\(status.st_ino) ") }.count
}

/// The reference's `os.lockf` examples, with real processes on the other side.
@Suite("ByteRangeLock", .ownThreads)
struct ByteRangeLockTests {
    let folder: TemporaryFolder
    init() throws { folder = try TemporaryFolder() }

    func probe(_ arguments: String...) throws -> ChildProcess {
        try ChildProcess(TestEnvironment.probe, arguments)
    }

    /// Another process takes bytes `start` to `start + length` now, and gives them back.
    func expectFreeForAnotherProcess(_ path: String, _ start: String, _ length: String) throws {
        let other = try probe("range-try", path, start, length)
        try other.expectLine(startingWith: "acquired")
        other.send("release")
        try other.expectLine(startingWith: "released")
    }

    /// A child forked without exec shares the object's open file and so its locks: the inherited
    /// object refuses to lock or unlock there (it would take or free the parent's ranges), still
    /// reads, and a new object in the child excludes the parent, as with `lockf`.
    @Test func aForkedChildCannotLockThroughItsParentsObject() throws {
        let path = folder.file("fork.bin")
        let lock = try ByteRangeLock(at: path)
        try lock.write([1, 2, 3], at: 0)
        try lock.lock(ByteRange(start: 0, length: 10))
        // What the child does, first here: code run for the first time in the child makes the
        // runtime's generic metadata (seen: `Result.mapError` in `read`), whose lock another
        // thread of this process may have held at the fork (a hang in CI, gdb stack).
        _ = try? lock.read(count: 3, at: 0)
        if let rehearsal = try? ByteRangeLock(at: path) {
            _ = try? rehearsal.tryLock(ByteRange(start: 0, length: 10))
            if (try? rehearsal.tryLock(ByteRange(start: 20, length: 5))) == true {
                try? rehearsal.unlock(ByteRange(start: 20, length: 5))
            }
        }
        let child = forkChild()
        if child == 0 {
            var failures: Int32 = 0
            func refused(_ body: () throws -> Void) -> Bool {
                do { try body() } catch let error as FileLockError { return error.code == .invalidConfiguration } catch {}
                return false
            }
            if !refused({ _ = try lock.tryLock(ByteRange(start: 0, length: 10)) }) { failures |= 1 }
            if !refused({ try lock.unlock(ByteRange(start: 0, length: 10)) }) { failures |= 2 }
            if (try? lock.read(count: 3, at: 0)) != [1, 2, 3] { failures |= 4 }
            if let own = try? ByteRangeLock(at: path) {
                if (try? own.tryLock(ByteRange(start: 0, length: 10))) != false { failures |= 8 }
                if (try? own.tryLock(ByteRange(start: 20, length: 5))) != true { failures |= 16 }
            } else {
                failures |= 32
            }
            _exit(failures)
        }
        let failures = waitForChild(child)
        #expect(failures & 1 == 0, "the child locked through the inherited object")
        #expect(failures & 2 == 0, "the child unlocked through the inherited object")
        #expect(failures & 4 == 0, "the child could not read through the inherited object")
        #expect(failures & 8 == 0, "the child's own object got a range its parent holds")
        #expect(failures & 16 == 0, "the child's own object could not lock a free range")
        #expect(failures & ~31 == 0, "child ended with \(failures)")
        let other = try ByteRangeLock(at: path)
        #expect(try !other.tryLock(ByteRange(start: 0, length: 10)), "the parent's range was freed")
        try lock.unlock(ByteRange(start: 0, length: 10))
        #expect(try other.tryLock(ByteRange(start: 0, length: 10)))
    }

    @Test func wholeFileLockExcludesAnotherProcess() throws {
        let path = folder.file("data.txt")
        let holder = try probe("range-hold", path, "0", "0")
        let pid = Int32(try holder.expectLine(startingWith: "acquired").split(separator: " ")[1])
        let file = try ByteRangeLock(at: path)
        #expect(try !file.tryLock())
        let conflict = try #require(try file.conflict())
        #expect(conflict.range == .wholeFile)
        #expect(conflict.mode == .exclusive)
        #expect(conflict.holder?.pid == pid)
        holder.send("release")
        try holder.expectLine(startingWith: "released")
        #expect(try file.tryLock())
        try file.write(Array("Important data\n".utf8), at: 0)
        try file.unlock()
    }

    /// A task's timed-out wait names the other process's range, as a thread's does.
    @Test func anAsyncTimeoutNamesTheHolder() async throws {
        let path = folder.file("async-timeout.bin")
        let holder = try probe("range-hold", path, "100", "50")
        let pid = Int32(try holder.expectLine(startingWith: "acquired").split(separator: " ")[1])
        let file = try ByteRangeLock(at: path)
        let thrown = await errorThrown { try await file.lock(ByteRange(start: 120, length: 10), timeout: .seconds(3)) }
        let error = try #require(thrown as? FileLockError)
        #expect(error.code == .timedOut)
        #expect(error.holder?.pid == pid)
        #expect(error.message.contains("bytes 120-129 of"), "\(error.message)")
        holder.send("release")
        try holder.expectLine(startingWith: "released")
    }

    @Test func nonBlockingAttemptFailsWhileHeld() throws {
        let path = folder.file("shared.txt")
        let holder = try probe("range-hold", path, "0", "0")
        try holder.expectLine(startingWith: "acquired")
        let file = try ByteRangeLock(at: path)
        #expect(try !file.lockf(.tryLock))
        holder.send("release")
        try holder.expectLine(startingWith: "released")
        #expect(try file.lockf(.tryLock))
    }

    @Test func testBeforeLock() throws {
        let path = folder.file("status.log")
        let file = try ByteRangeLock(at: path)
        #expect(try file.lockf(.test), "free")
        let holder = try probe("range-hold", path, "0", "0")
        try holder.expectLine(startingWith: "acquired")
        #expect(try !file.lockf(.test), "held by another process")
        holder.send("release")
        try holder.expectLine(startingWith: "released")
        #expect(try file.lockf(.test))
        try file.lockf(.lock)
        #expect(try file.lockf(.test), "our own lock is no conflict")
        let other = try probe("range-try", path, "0", "0")
        try other.expectLine(startingWith: "busy")
    }

    @Test func fourProcessesUpdateFiftyRecordsWithoutCorruption() throws {
        let path = folder.file("database.bin")
        let file = try ByteRangeLock(at: path)
        try file.write([UInt8](repeating: 0, count: 50 * 100), at: 0)
        let perWorker = 400
        let workers = try (0..<4).map { _ in try probe("records", path, "50", String(perWorker)) }
        for worker in workers { try worker.expectLine(startingWith: "ready") }
        for worker in workers { worker.send("go") }
        for worker in workers { try worker.expectLine(startingWith: "done", timeout: 300) }
        var total: UInt64 = 0
        for record in 0..<50 {
            let bytes = try file.read(count: 100, at: Int64(record * 100))
            var counter: UInt64 = 0
            for (index, byte) in bytes.prefix(8).enumerated() { counter |= UInt64(byte) << (8 * UInt64(index)) }
            total += counter
            let body = UInt8(truncatingIfNeeded: counter % 251)
            #expect(bytes.dropFirst(8).allSatisfy { $0 == body }, "record \(record) is torn")
        }
        #expect(total == UInt64(4 * perWorker), "every update of every record counted")
    }

    @Test func timeoutPatternReportsTheHolder() throws {
        let path = folder.file("timed_lock.txt")
        let holder = try probe("range-hold", path, "0", "0")
        let pid = Int32(try holder.expectLine(startingWith: "acquired").split(separator: " ")[1])
        let file = try ByteRangeLock(at: path)
        let started = ChildProcess.now()
        // A tenth of the timeout (here 300 ms) is spent naming the holder: ample on a busy machine.
        let error = #expect(throws: FileLockError.self) { try file.lock(timeout: .seconds(3)) }
        #expect(error?.code == .timedOut)
        #expect((error?.waited ?? .zero) >= .seconds(3))
        #expect(ChildProcess.now() - started < 8)
        #expect(error?.holder?.pid == pid)
        #expect(error?.message.contains(path) == true)
    }

    @Test func aWaiterWakesWhenTheRangeIsFreed() throws {
        let path = folder.file("wake.bin")
        let holder = try probe("range-hold", path, "0", "100")
        try holder.expectLine(startingWith: "acquired")
        let file = try ByteRangeLock(at: path)
        let result = ThreadResult()
        startThread {
            do {
                try file.lock(ByteRange(start: 50, length: 10), timeout: .seconds(60))
                result.set("acquired")
            } catch { result.set("\(error)") }
        }
        guard eventually("the waiter is blocked", { rangeWaiterCount(path) > 0 }) else { return }
        holder.send("release")
        #expect(result.wait() == "acquired")
    }

    @Test func explicitUnlockOfASectionThenLockingTheRest() throws {
        let path = folder.file("explicit.txt")
        let file = try ByteRangeLock(at: path)
        try file.lockf(.lock, length: 50)
        try file.write(Array("Locked data".utf8), at: 0)
        try file.lockf(.unlock, length: 50)
        try file.seek(to: 50)
        try file.lockf(.lock, length: 0)
        try file.write(Array("Second locked section".utf8), at: 50)
        try expectFreeForAnotherProcess(path, "0", "50")
        try probe("range-try", path, "50", "10").expectLine(startingWith: "busy")
        try probe("range-try", path, "100000", "1").expectLine(startingWith: "busy")
    }

    @Test func negativeLengthLocksTheBytesBeforeTheOffset() throws {
        let path = folder.file("before.bin")
        let file = try ByteRangeLock(at: path)
        try file.seek(to: 200)
        try file.lockf(.lock, length: -100)
        try probe("range-try", path, "100", "100").expectLine(startingWith: "busy")
        try expectFreeForAnotherProcess(path, "200", "10")
        let error = #expect(throws: FileLockError.self) { try file.lockf(.lock, length: -500) }
        #expect(error?.message.contains(path) == true)
    }

    @Test func unlockingTheMiddleSplitsTheRange() throws {
        let path = folder.file("split.bin")
        let file = try ByteRangeLock(at: path)
        try file.lock(ByteRange(start: 0, length: 300))
        try file.unlock(ByteRange(start: 100, length: 100))
        try expectFreeForAnotherProcess(path, "100", "100")
        try probe("range-try", path, "0", "100").expectLine(startingWith: "busy")
        try probe("range-try", path, "200", "100").expectLine(startingWith: "busy")
    }

    @Test func sharedLocksShareAndExcludeWriters() throws {
        let path = folder.file("readers.bin")
        let file = try ByteRangeLock(at: path)
        try file.lock(ByteRange(start: 0, length: 10), mode: .shared)
        let reader = try probe("range-try", path, "0", "10", "--shared")
        try reader.expectLine(startingWith: "acquired")
        try probe("range-try", path, "0", "10").expectLine(startingWith: "busy")
        reader.send("release")
        try reader.expectLine(startingWith: "released")
    }

    @Test func twoObjectsOnOneFileExcludeEachOtherInOneProcess() throws {
        let path = folder.file("threads.bin")
        let first = try ByteRangeLock(at: path)
        let second = try ByteRangeLock(at: path)
        try first.lock(ByteRange(start: 0, length: 10))
        #expect(try !second.tryLock(ByteRange(start: 5, length: 10)))
        #expect(try second.tryLock(ByteRange(start: 10, length: 10)))
    }

    @Test func closingAnotherDescriptorOfTheFileKeepsOurLock() throws {
        // The OFD advantage: with POSIX locks this close would drop the lock (see the test below).
        let path = folder.file("ofd.bin")
        let file = try ByteRangeLock(at: path)
        try file.lock(ByteRange(start: 0, length: 100))
        let unrelated = open(path, O_RDONLY | O_CLOEXEC)
        #expect(unrelated >= 0)
        close(unrelated)
        try probe("range-try", path, "0", "100").expectLine(startingWith: "busy")
    }

    @Test(.enabled(if: TestEnvironment.requires(TestEnvironment.python != nil), "Python is not installed"))
    func thePosixTrapThatOpenFileLocksAvoid() throws {
        // Python's fcntl.lockf takes POSIX locks: closing any other descriptor of the file in that
        // process silently drops them.
        let path = folder.file("trap.bin")
        writeFile(path, "")
        let python = try ChildProcess(
            TestEnvironment.python ?? "python3",
            [
                "-c",
                """
                import fcntl, os, sys
                fd = os.open(sys.argv[1], os.O_RDWR)
                fcntl.lockf(fd, fcntl.LOCK_EX, 100, 0, 0)
                print("locked", flush=True); sys.stdin.readline()
                os.close(os.open(sys.argv[1], os.O_RDONLY))
                print("closed-other", flush=True); sys.stdin.readline()
                """,
                path,
            ])
        try python.expectLine(startingWith: "locked")
        let file = try ByteRangeLock(at: path)
        #expect(try !file.tryLock(ByteRange(start: 0, length: 100)))
        python.send("go")
        try python.expectLine(startingWith: "closed-other")
        #expect(try file.tryLock(ByteRange(start: 0, length: 100)), "the POSIX lock was dropped by an unrelated close")
        python.send("go")
    }

    @Test(.enabled(if: TestEnvironment.requires(TestEnvironment.python != nil), "Python is not installed"))
    func pythonLocksBytes0To99() throws {
        let path = folder.file("py-range.bin")
        writeFile(path, "")
        for call in ["os.lockf(fd, os.F_LOCK, 100)", "fcntl.lockf(fd, fcntl.LOCK_EX, 100, 0, 0)"] {
            let python = try ChildProcess(
                TestEnvironment.python ?? "python3",
                [
                    "-c",
                    """
                    import fcntl, os, sys
                    fd = os.open(sys.argv[1], os.O_RDWR)
                    \(call)
                    print("locked", os.getpid(), flush=True); sys.stdin.readline()
                    """,
                    path,
                ])
            let pid = Int32(try python.expectLine(startingWith: "locked").split(separator: " ")[1])
            let file = try ByteRangeLock(at: path)
            #expect(try !file.tryLock(ByteRange(start: 50, length: 100)), "\(call)")
            #expect(try file.conflict(for: ByteRange(start: 50, length: 100))?.holder?.pid == pid)
            #expect(try file.tryLock(ByteRange(start: 100, length: 100)), "\(call)")
            python.send("go")
            try python.waitForExit()
        }
    }

    @Test(.enabled(if: TestEnvironment.requires(TestEnvironment.python != nil), "Python is not installed"))
    func swiftLocksBytes0To99() throws {
        let path = folder.file("swift-range.bin")
        let holder = try probe("range-hold", path, "0", "100")
        try holder.expectLine(startingWith: "acquired")
        let python = try ChildProcess(
            TestEnvironment.python ?? "python3",
            [
                "-c",
                """
                import fcntl, os, sys
                fd = os.open(sys.argv[1], os.O_RDWR)
                def attempt(length, start):
                    try:
                        fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB, length, start, 0)
                        fcntl.lockf(fd, fcntl.LOCK_UN, length, start, 0)
                        return "free"
                    except OSError:
                        return "busy"
                print(attempt(100, 50), attempt(100, 100), flush=True)
                os.lseek(fd, 50, os.SEEK_SET)
                try:
                    os.lockf(fd, os.F_TLOCK, 100); print("free", flush=True)
                except OSError:
                    print("busy", flush=True)
                """,
                path,
            ])
        #expect(try python.readLine() == "busy free")
        #expect(try python.readLine() == "busy")
    }

    @Test func asyncLockAndCancellation() async throws {
        let path = folder.file("async.bin")
        let holder = try ByteRangeLock(at: path)
        try await holder.lock(ByteRange(start: 0, length: 10))
        let file = try ByteRangeLock(at: path)
        let waiter = Task { try await file.lock(ByteRange(start: 0, length: 10), timeout: .seconds(600)) }
        guard await eventually("the task waits in the kernel", { rangeWaiterCount(path) > 0 }) else { return }
        waiter.cancel()
        await #expect(throws: CancellationError.self) { try await waiter.value }
        try holder.unlock(ByteRange(start: 0, length: 10))
        let value = try await file.withLock(ByteRange(start: 0, length: 10)) { 7 }
        #expect(value == 7)
    }

    @Test func threeProcessesTakeTurnsOnTheWholeFile() throws {
        // The reference's process_sync example: each waits its turn, then holds alone.
        let path = folder.file("process.lock")
        let first = try probe("range-hold", path, "0", "0", "--timeout", "60")
        try first.expectLine(startingWith: "acquired")
        let others = try (0..<2).map { _ in try probe("range-hold", path, "0", "0", "--timeout", "60") }
        guard eventually("both others wait", { rangeWaiterCount(path) >= 2 }) else { return }
        first.send("release")
        try first.expectLine(startingWith: "released")
        // Exactly one of the others gets it; the second follows only after the first lets go.
        var order: [ChildProcess] = []
        let deadline = ChildProcess.now() + 60
        while order.count < 2 && ChildProcess.now() < deadline {
            for other in others where !order.contains(where: { $0 === other }) {
                if let line = try? other.readLine(timeout: 0.05), line.hasPrefix("acquired") {
                    order.append(other)
                    if order.count == 1 {
                        try probe("range-try", path, "0", "0").expectLine(startingWith: "busy")
                        other.send("release")
                        try other.expectLine(startingWith: "released")
                    }
                }
            }
        }
        try #require(order.count == 2, "both waiting processes got their turn")
        order[1].send("release")
        try order[1].expectLine(startingWith: "released")
    }

    @Test(.enabled(if: TestEnvironment.requires(NoFlockTests.compiler != nil), "needs Linux and a C compiler for the shim"))
    func noLocksAvailableIsAClearError() throws {
        let source = folder.file("nolck.c")
        writeFile(
            source,
            """
            #define _GNU_SOURCE
            #include <dlfcn.h>
            #include <errno.h>
            #include <stdarg.h>
            int fcntl(int fd, int cmd, ...) {
                va_list list; va_start(list, cmd); void *arg = va_arg(list, void *); va_end(list);
                if (cmd == 37 || cmd == 38) { errno = ENOLCK; return -1; }
                int (*real)(int, int, ...) = (int (*)(int, int, ...))dlsym(RTLD_NEXT, "fcntl");
                return real(fd, cmd, arg);
            }
            """)
        let shim = folder.file("nolck.so")
        #expect(runShell("'\(NoFlockTests.compiler ?? "cc")' -shared -fPIC -o '\(shim)' '\(source)' -ldl") == 0)
        let path = folder.file("nolck.bin")
        let child = try ChildProcess(TestEnvironment.probe, ["range-hold", path, "0", "10"], environment: ["LD_PRELOAD": shim])
        let line = try child.expectLine(startingWith: "error")
        #expect(line.hasPrefix("error notSupportedByFilesystem"), "\(line)")
        #expect(line.contains("no locks available"))
        #expect(line.contains(path))
    }

    @Test func invalidRangesAreRejected() throws {
        let path = folder.file("bad.bin")
        let file = try ByteRangeLock(at: path)
        let error = #expect(throws: FileLockError.self) { try file.lock(ByteRange(start: -1, length: 10)) }
        #expect(error?.code == .invalidConfiguration)
        #expect(error?.message.contains(path) == true)
        #expect(throws: FileLockError.self) { try file.lock(ByteRange(start: 0, length: -10)) }
    }

    @Test func aSymbolicLinkIsRefused() throws {
        let target = folder.file("target")
        writeFile(target, "precious")
        symlink(target, folder.file("link.bin"))
        let error = #expect(throws: FileLockError.self) { _ = try ByteRangeLock(at: folder.file("link.bin")) }
        #expect(error?.code == .isSymbolicLink)
    }
}

@Suite("ByteRangeLock edge cases", .ownThreads)
struct ByteRangeLockEdgeTests {
    let folder: TemporaryFolder
    init() throws { folder = try TemporaryFolder() }

    @Test func rangesBeyondInt64AreRejectedNotACrash() throws {
        let file = try ByteRangeLock(at: folder.file("huge.bin"))
        let error = #expect(throws: FileLockError.self) { try file.lock(ByteRange(start: .max - 5, length: 10)) }
        #expect(error?.code == .invalidConfiguration)
        #expect(ByteRange(start: .max - 5, length: 10).description.contains("beyond"))
    }

    @Test func nestedOverlappingWithLockIsRefused() throws {
        let path = folder.file("nested.bin")
        let file = try ByteRangeLock(at: path)
        try file.withLock(ByteRange(start: 0, length: 100)) {
            // Bound first, not written inside #expect: see errorThrown(by:).
            let error = errorThrown { try file.withLock(ByteRange(start: 10, length: 10), mode: .shared) {} }
            #expect((error as? FileLockError)?.code == .invalidConfiguration, "\(String(describing: error))")
            // Disjoint ranges nest fine, and the outer range stays locked throughout.
            try file.withLock(ByteRange(start: 200, length: 10)) {}
            try ChildProcess(TestEnvironment.probe, ["range-try", path, "10", "10"]).expectLine(startingWith: "busy")
        }
    }

    @Test func anExclusiveLockOnAReadOnlyFileIsAClearError() throws {
        let path = folder.file("readonly.bin")
        writeFile(path, "data")
        let file = try ByteRangeLock(at: path, readOnly: true)
        let error = #expect(throws: FileLockError.self) { _ = try file.tryLock(mode: .exclusive) }
        #expect(error?.code == .permissionDenied)
        #expect(try file.tryLock(mode: .shared))
    }

    @Test func lockfTestLikeGlibcOnlySeesWriters() throws {
        let path = folder.file("test.bin")
        let reader = try ChildProcess(TestEnvironment.probe, ["range-hold", path, "0", "10", "--shared"])
        try reader.expectLine(startingWith: "acquired")
        let file = try ByteRangeLock(at: path)
        #expect(try file.lockf(.test, length: 10), "a shared holder does not fail F_TEST")
        #expect(try !file.lockf(.tryLock, length: 10), "but it does keep a writer out")
        let conflict = try #require(try file.conflict(for: ByteRange(start: 0, length: 10)))
        #expect(conflict.mode == .shared)
        #expect(conflict.holder?.pid == reader.pid)
    }

    @Test func aCancelledAsyncWaitLeavesTheRangeFree() async throws {
        let path = folder.file("cancel-free.bin")
        let holder = try ChildProcess(TestEnvironment.probe, ["range-hold", path, "0", "10"])
        try holder.expectLine(startingWith: "acquired")
        let file = try ByteRangeLock(at: path)
        let waiter = Task { try await file.lock(ByteRange(start: 0, length: 10), timeout: .seconds(600)) }
        guard await eventually("the task waits in the kernel", { rangeWaiterCount(path) > 0 }) else { return }
        waiter.cancel()
        await #expect(throws: CancellationError.self) { try await waiter.value }
        holder.send("release")
        try holder.expectLine(startingWith: "released")
        let other = try ChildProcess(TestEnvironment.probe, ["range-try", path, "0", "10"])
        try other.expectLine(startingWith: "acquired")
        other.send("release")
    }
}
