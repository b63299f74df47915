#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif
import FileLocking
import Subprocesses
import Testing

/// A `ReadWriteLock`, Python `filelock`'s `ReadWriteLock` and plain SQLite transactions on the same
/// file exclude one another both ways, as SQLite's readers and writers do: real processes, the
/// lock bytes checked in the kernel's lock table rather than assumed.
@Suite("ReadWriteLock interoperation with Python filelock and SQLite", .ownThreads)
struct ReadWriteInteropTests {
    let folder: TemporaryFolder
    init() throws { folder = try TemporaryFolder() }

    enum Mode: String, CaseIterable, Sendable {
        case read, write
    }

    /// SQLite's lock levels a transaction can hold (PENDING is only ever held while waiting).
    enum SQLiteLevel: String, CaseIterable, Sendable {
        /// `BEGIN; SELECT ...`
        case shared
        /// `BEGIN IMMEDIATE`: a writer that still lets readers in.
        case reserved
        /// `BEGIN EXCLUSIVE`
        case exclusive

        /// Whether a `ReadWriteLock` holder in `mode` and this level can be held at once: SQLite's
        /// own rule (SHARED and RESERVED admit readers; a writer needs the reserved byte too).
        func isCompatible(with mode: Mode) -> Bool { mode == .read && self != .exclusive }
    }

    func python(_ arguments: String...) throws -> ChildProcess {
        guard let python = TestEnvironment.python else {
            Issue.record("CI must provide a Python with filelock (set FILELOCK_TEST_PYTHON); .ci/run installs one")
            throw ChildProcessError(description: "no Python with filelock")
        }
        return try ChildProcess(python, [InteropTests.pythonScript] + arguments)
    }

    /// The pid in an "acquired PID" line.
    func acquiredPID(_ child: ChildProcess) throws -> Int32 {
        let line = try child.expectLine(startingWith: "acquired")
        return Int32(line.split(separator: " ")[1]) ?? -1
    }

    func release(_ child: ChildProcess) throws {
        child.send("release")
        try child.expectLine(startingWith: "released")
    }

    func acquire(_ lock: ReadWriteLock, _ mode: Mode, timeout: Duration?) throws {
        switch mode {
        case .read: try lock.acquireRead(timeout: timeout)
        case .write: try lock.acquireWrite(timeout: timeout)
        }
    }

    func tryAcquire(_ lock: ReadWriteLock, _ mode: Mode) throws -> Bool {
        switch mode {
        case .read: try lock.tryAcquireRead()
        case .write: try lock.tryAcquireWrite()
        }
    }

    /// After everyone let go the lock file is still what SQLite calls an empty database: no byte
    /// written, and SQLite finds nothing wrong with it.
    func expectValidEmptyDatabase(_ path: String, sourceLocation: SourceLocation = #_sourceLocation) throws {
        let check = try python("sqlite-check", path)
        let line = try check.readLine()
        #expect(line == "size 0 integrity ok", sourceLocation: sourceLocation)
        #expect(try check.waitForExit() == 0, sourceLocation: sourceLocation)
    }

    // Own holders are counted, not named: an open-file-description lock shows no pid in
    // /proc/locks, and the library finds its process through /proc/PID/fdinfo, newest process
    // first. A child that another test is just starting shares our open files (close-on-exec only
    // closes them at exec), so for that moment the lookup can name the child. Foreign holders'
    // POSIX locks carry their pid and are named exactly.

    // MARK: Exclusion, pair by pair, both ways

    @Test(
        .enabled(if: TestEnvironment.requires(TestEnvironment.python != nil), "Python filelock is not installed"),
        arguments: Mode.allCases, Mode.allCases)
    func swiftHoldsPythonReadWriteLockTries(swift: Mode, python pythonMode: Mode) throws {
        let path = folder.file("swift-holds.lock")
        let lock = try ReadWriteLock(at: path)
        try acquire(lock, swift, timeout: .seconds(10))
        let other = try python("rw-try", path, pythonMode.rawValue)
        let answer = try other.readLine()
        if swift == .read && pythonMode == .read {
            #expect(answer.hasPrefix("acquired"), "readers share: \(answer)")
            try release(other)
        } else {
            #expect(answer == "busy", "Python \(pythonMode) while Swift holds \(swift): \(answer)")
        }
        lock.release()
        // Free again for Python in that mode.
        let after = try python("rw-try", path, pythonMode.rawValue)
        _ = try acquiredPID(after)
        try release(after)
        try expectValidEmptyDatabase(path)
    }

    @Test(
        .enabled(if: TestEnvironment.requires(TestEnvironment.python != nil), "Python filelock is not installed"),
        arguments: Mode.allCases, Mode.allCases)
    func pythonReadWriteLockHoldsSwiftTries(python pythonMode: Mode, swift: Mode) throws {
        let path = folder.file("python-holds.lock")
        let holder = try python("rw-hold", path, pythonMode.rawValue)
        let pid = try acquiredPID(holder)
        let lock = try ReadWriteLock(at: path)
        let holders = lock.holders.map { "\($0.pid) \($0.isShared ? "shared" : "exclusive")" }
        #expect(holders == ["\(pid) \(pythonMode == .read ? "shared" : "exclusive")"])
        let acquired = try tryAcquire(lock, swift)
        if swift == .read && pythonMode == .read {
            #expect(acquired, "readers share")
            lock.release()
        } else {
            #expect(!acquired, "Swift \(swift) while Python holds \(pythonMode)")
            let error = #expect(throws: FileLockError.self) { try acquire(lock, swift, timeout: .milliseconds(100)) }
            #expect(error?.code == .timedOut)
            #expect(error?.holder?.pid == pid, "the error names the Python process")
        }
        try release(holder)
        #expect(try tryAcquire(lock, swift), "free once Python let go")
        lock.release()
        try expectValidEmptyDatabase(path)
    }

    @Test(
        .enabled(if: TestEnvironment.requires(TestEnvironment.python != nil), "Python filelock is not installed"),
        arguments: Mode.allCases, SQLiteLevel.allCases)
    func swiftHoldsSQLiteTries(swift: Mode, level: SQLiteLevel) throws {
        let path = folder.file("swift-holds-sqlite.lock")
        let lock = try ReadWriteLock(at: path)
        try acquire(lock, swift, timeout: .seconds(10))
        let other = try python("sqlite-try", path, level.rawValue)
        let answer = try other.readLine()
        if level.isCompatible(with: swift) {
            #expect(answer.hasPrefix("acquired"), "SQLite \(level) beside a Swift \(swift) lock: \(answer)")
            try release(other)
        } else {
            #expect(answer == "busy", "SQLite \(level) while Swift holds \(swift): \(answer)")
        }
        lock.release()
        let after = try python("sqlite-try", path, level.rawValue)
        _ = try acquiredPID(after)
        try release(after)
        try expectValidEmptyDatabase(path)
    }

    @Test(
        .enabled(if: TestEnvironment.requires(TestEnvironment.python != nil), "Python filelock is not installed"),
        arguments: SQLiteLevel.allCases, Mode.allCases)
    func sqliteHoldsSwiftTries(level: SQLiteLevel, swift: Mode) throws {
        let path = folder.file("sqlite-holds.lock")
        let holder = try python("sqlite-hold", path, level.rawValue)
        let pid = try acquiredPID(holder)
        let lock = try ReadWriteLock(at: path)
        let acquired = try tryAcquire(lock, swift)
        if level.isCompatible(with: swift) {
            #expect(acquired, "Swift \(swift) beside SQLite \(level)")
            lock.release()
        } else {
            #expect(!acquired, "Swift \(swift) while SQLite holds \(level)")
            let error = #expect(throws: FileLockError.self) { try acquire(lock, swift, timeout: .milliseconds(100)) }
            #expect(error?.code == .timedOut)
            #expect(error?.holder?.pid == pid, "the error names the SQLite process")
        }
        try release(holder)
        #expect(try tryAcquire(lock, swift), "free once SQLite let go")
        lock.release()
        try expectValidEmptyDatabase(path)
    }

    // MARK: Waiting across implementations

    #if os(Linux)
        /// A Swift thread blocked in the kernel (seen in `/proc/locks` as a blocked request) wakes
        /// when the Python holder releases.
        @Test(
            .enabled(if: TestEnvironment.requires(TestEnvironment.python != nil), "Python filelock is not installed"),
            arguments: [(Mode.write, Mode.read), (.write, .write), (.read, .write)])
        func swiftWaiterWakesWhenPythonReleases(python pythonMode: Mode, swift: Mode) throws {
            let path = folder.file("wake.lock")
            let holder = try python("rw-hold", path, pythonMode.rawValue)
            _ = try acquiredPID(holder)
            let lock = try ReadWriteLock(at: path)
            let result = ThreadResult()
            startThread {
                do {
                    try acquire(lock, swift, timeout: .seconds(60))
                    lock.release()
                    result.set("acquired")
                } catch { result.set("\(error)") }
            }
            guard
                eventually(
                    "the Swift waiter is blocked in the kernel",
                    { KernelLockTable.entries(on: path).contains { $0.isBlocked && $0.kind == "OFDLCK" } })
            else { return }
            #expect(result.peek() == nil, "acquired while Python holds the \(pythonMode) lock")
            try release(holder)
            #expect(result.wait() == "acquired")
            try expectValidEmptyDatabase(path)
        }

        /// The other way: a Python or SQLite waiter (SQLite's busy handler, which polls) enters once
        /// the Swift holder releases, not before.
        @Test(
            .enabled(if: TestEnvironment.requires(TestEnvironment.python != nil), "Python filelock is not installed"),
            arguments: [
                (Mode.write, ["rw-hold", "read", "60"]), (.write, ["rw-hold", "write", "60"]),
                (.read, ["rw-hold", "write", "60"]), (.write, ["sqlite-hold", "shared", "60"]),
                (.read, ["sqlite-hold", "exclusive", "60"]),
            ])
        func foreignWaiterEntersWhenSwiftReleases(swift: Mode, waiter arguments: [String]) throws {
            let path = folder.file("foreign-waits.lock")
            let lock = try ReadWriteLock(at: path)
            try acquire(lock, swift, timeout: .seconds(10))
            let waiter = try python(arguments[0], path, arguments[1], arguments[2])
            if swift == .read {
                // A writer waiting for a reader holds the pending byte (Python's between its retries).
                guard eventually("the foreign writer waits", { lock.waitingWriter?.pid == waiter.pid }) else { return }
            } else {
                // A waiter for a writer shows nowhere; a try in its mode shows it would wait.
                let tryCommand = arguments[0] == "rw-hold" ? "rw-try" : "sqlite-try"
                #expect(try python(tryCommand, path, arguments[1]).readLine() == "busy")
            }
            // Nobody else got the lock meanwhile (a waiting SQLite writer does hold SHARED). Our own
            // holds are counted, not named (see the note at the top).
            let holders = lock.holders
            #expect(holders.filter { !$0.isShared }.count == (swift == .write ? 1 : 0))
            #expect(!holders.contains { $0.pid == waiter.pid && !$0.isShared }, "the waiter writes")
            lock.release()
            #expect(try acquiredPID(waiter) == waiter.pid)
            #expect(try !tryAcquire(lock, .write))
            try release(waiter)
            try expectValidEmptyDatabase(path)
        }

        /// Writer preference across implementations: a Swift writer waiting for a Python reader
        /// holds SQLite's pending byte, so new Python readers and SQLite readers stay out.
        @Test(.enabled(if: TestEnvironment.requires(TestEnvironment.python != nil), "Python filelock is not installed"))
        func swiftWaitingWriterShutsOutNewPythonReaders() throws {
            let path = folder.file("preference.lock")
            let reader = try python("rw-hold", path, "read")
            _ = try acquiredPID(reader)
            let lock = try ReadWriteLock(at: path)
            let result = ThreadResult()
            let order = ThreadResult()
            let done = ThreadResult()
            startThread {
                do {
                    try lock.acquireWrite(timeout: .seconds(60))
                    result.set("acquired")
                    // Hold until told: the test checks that the writer is in before it releases.
                    _ = order.wait()
                    lock.release()
                    done.set("released")
                } catch { result.set("\(error)") }
            }
            guard
                eventually(
                    "the Swift writer is blocked in the kernel",
                    { KernelLockTable.entries(on: path).contains { $0.isBlocked && $0.kind == "OFDLCK" } })
            else { return }
            #expect(lock.waitingWriter != nil, "the Swift writer waits with the pending byte")
            // In the kernel: reserved and pending write-locked, the shared range a blocked request.
            let entries = KernelLockTable.entries(on: path).filter { $0.kind == "OFDLCK" }.map(\.description)
            #expect(entries.contains("OFDLCK WRITE 1073741824-1073741825"))
            #expect(entries.contains("-> OFDLCK WRITE 1073741826-1073742335"))
            let late = try python("rw-hold", path, "read", "0.3")
            #expect(try late.readLine() == "timeout", "a new Python reader got past the waiting Swift writer")
            #expect(try python("rw-try", path, "read").readLine() == "busy")
            #expect(try python("sqlite-try", path, "shared").readLine() == "busy")
            #expect(result.peek() == nil)
            try release(reader)
            #expect(result.wait() == "acquired")
            #expect(try python("rw-try", path, "read").readLine() == "busy", "the Swift writer holds it")
            order.set("release")
            #expect(done.wait() == "released")
            let after = try python("rw-try", path, "read")
            _ = try acquiredPID(after)
            try release(after)
            try expectValidEmptyDatabase(path)
        }

        /// The other way: an SQLite writer waiting (busy handler) for a Swift reader holds the
        /// pending byte, and a new Swift reader stays out, naming that writer.
        @Test(.enabled(if: TestEnvironment.requires(TestEnvironment.python != nil), "Python filelock is not installed"))
        func sqliteWaitingWriterShutsOutNewSwiftReaders() throws {
            let path = folder.file("preference-sqlite.lock")
            let reader = try ChildProcess(TestEnvironment.probe, ["hold", path, "--kind", "rw", "--shared"])
            _ = try acquiredPID(reader)
            let writer = try python("sqlite-hold", path, "exclusive", "60")
            let lock = try ReadWriteLock(at: path)
            guard eventually("the SQLite writer waits with the pending byte", { lock.waitingWriter?.pid == writer.pid })
            else { return }
            #expect(try !lock.tryAcquireRead(), "a new Swift reader got past the waiting SQLite writer")
            let error = #expect(throws: FileLockError.self) { try lock.acquireRead(timeout: .milliseconds(200)) }
            #expect(error?.code == .timedOut)
            #expect(error?.holder?.pid == writer.pid, "the error names the waiting writer")
            try release(reader)
            #expect(try acquiredPID(writer) == writer.pid)
            #expect(lock.holders.map(\.pid) == [writer.pid])
            try release(writer)
            #expect(try lock.tryAcquireRead())
            lock.release()
            try expectValidEmptyDatabase(path)
        }

        /// The lock bytes, checked in the kernel's lock table instead of assumed: Python's and
        /// SQLite's POSIX locks, and this library's open-file-description locks, on the same ranges.
        @Test(
            .enabled(if: TestEnvironment.requires(TestEnvironment.python != nil), "Python filelock is not installed"),
            arguments: LockTableCase.allCases)
        func kernelLockTableShowsSQLiteBytes(_ holderCase: LockTableCase) throws {
            let path = folder.file("table.lock")
            let lock = try ReadWriteLock(at: path)
            var holder: ChildProcess?
            let kind: String
            let pid: Int32?
            switch holderCase {
            case .pythonRead, .pythonWrite, .sqliteShared, .sqliteReserved, .sqliteExclusive:
                let child = try python(holderCase.pythonArguments[0], path, holderCase.pythonArguments[1])
                pid = try acquiredPID(child)
                holder = child
                kind = "POSIX"
            case .swiftRead:
                try lock.acquireRead(timeout: .seconds(10))
                kind = "OFDLCK"
                pid = nil
            case .swiftWrite:
                try lock.acquireWrite(timeout: .seconds(10))
                kind = "OFDLCK"
                pid = nil
            }
            let entries = KernelLockTable.entries(on: path)
            let described = entries.map(\.description).sorted()
            #expect(described == holderCase.expectedRanges.map { "\(kind) \($0)" })
            #expect(entries.allSatisfy { $0.pid == pid ?? -1 }, "\(entries)")
            // And the library reads them back: one holder, in the mode SQLite would say (named
            // when it is another process's POSIX lock: see the note at the top).
            let holders = lock.holders
            #expect(holders.map(\.isShared) == [holderCase.isShared])
            if let pid { #expect(holders.map(\.pid) == [pid]) }
            if let holder { try release(holder) } else { lock.release() }
            #expect(KernelLockTable.entries(on: path).isEmpty, "a lock left behind")
            try expectValidEmptyDatabase(path)
        }
    #endif

    // MARK: Many writers, one counter

    /// Swift writers (lock-probe), Python `filelock` writers and SQLite `BEGIN EXCLUSIVE`
    /// transactions increment one counter file: the count ends exact.
    @Test(.enabled(if: TestEnvironment.requires(TestEnvironment.python != nil), "Python filelock is not installed"))
    func swiftPythonAndSQLiteWritersIncrementOneCounterExactly() throws {
        let path = folder.file("mixed-rw.lock")
        let counter = folder.file("mixed-rw")
        let workers = [
            try ChildProcess(TestEnvironment.probe, ["increment", path, counter, "300", "--kind", "rw"]),
            try python("rw-increment", path, counter, "150"),
            try ChildProcess(TestEnvironment.probe, ["increment", path, counter, "300", "--kind", "rw"]),
            try python("rw-increment", path, counter, "150"),
            try python("sqlite-increment", path, counter, "100"),
        ]
        for worker in workers { try worker.expectLine(startingWith: "ready") }
        for worker in workers { worker.send("go") }
        for worker in workers { try worker.expectLine(startingWith: "done", timeout: 300) }
        #expect(readFile(counter) == "1000")
        try expectValidEmptyDatabase(path)
    }

    // MARK: WAL

    /// An SQLite database in WAL mode takes its readers' and writers' locks elsewhere: the lock
    /// refuses it, saying so, and leaves no lock behind.
    @Test(.enabled(if: TestEnvironment.requires(TestEnvironment.python != nil), "Python filelock is not installed"))
    func walDatabaseIsRefused() throws {
        let path = folder.file("wal.db")
        let maker = try python("sqlite-make-wal", path)
        #expect(try maker.readLine() == "journal_mode wal")
        #expect(try maker.waitForExit() == 0)
        let lock = try ReadWriteLock(at: path)
        let readError = #expect(throws: FileLockError.self) { try lock.tryAcquireRead() }
        #expect(readError?.code == .invalidConfiguration)
        #expect(readError?.message.contains("WAL") == true, "\(readError?.message ?? "")")
        let writeError = #expect(throws: FileLockError.self) { try lock.acquireWrite(timeout: .seconds(5)) }
        #expect(writeError?.code == .invalidConfiguration)
        #expect(writeError?.message.contains("WAL") == true, "\(writeError?.message ?? "")")
        #expect(!lock.isLocked)
        #if os(Linux)
            #expect(KernelLockTable.entries(on: path).isEmpty, "a refused acquisition left a lock behind")
        #endif
        // SQLite still writes to it as before.
        let writer = try python("sqlite-try", path, "exclusive")
        _ = try acquiredPID(writer)
        try release(writer)
    }
}

/// Who holds the lock in `kernelLockTableShowsSQLiteBytes`, and the ranges the kernel must show.
enum LockTableCase: String, CaseIterable, Sendable, CustomTestStringConvertible {
    case pythonRead, pythonWrite, sqliteShared, sqliteReserved, sqliteExclusive, swiftRead, swiftWrite

    var testDescription: String { rawValue }

    var pythonArguments: [String] {
        switch self {
        case .pythonRead: ["rw-hold", "read"]
        case .pythonWrite: ["rw-hold", "write"]
        case .sqliteShared: ["sqlite-hold", "shared"]
        case .sqliteReserved: ["sqlite-hold", "reserved"]
        case .sqliteExclusive: ["sqlite-hold", "exclusive"]
        case .swiftRead, .swiftWrite: []
        }
    }

    var isShared: Bool {
        switch self {
        case .pythonRead, .sqliteShared, .sqliteReserved, .swiftRead: true
        case .pythonWrite, .sqliteExclusive, .swiftWrite: false
        }
    }

    /// Sorted "TYPE FIRST-LAST": SQLite's pending byte is 0x40000000 (1073741824), the reserved
    /// byte the next, the shared range the 510 after (1073741826-1073742335). The kernel merges
    /// adjacent ranges of one owner and type.
    var expectedRanges: [String] {
        switch self {
        case .pythonRead, .sqliteShared, .swiftRead: ["READ 1073741826-1073742335"]
        case .sqliteReserved: ["READ 1073741826-1073742335", "WRITE 1073741825-1073741825"]
        case .pythonWrite, .sqliteExclusive, .swiftWrite: ["WRITE 1073741824-1073742335"]
        }
    }
}

#if os(Linux)
    /// The kernel's record and whole-file locks on one file, read from `/proc/locks` (independent of
    /// the library's own reader of it).
    enum KernelLockTable {
        struct Entry: CustomStringConvertible {
            /// `POSIX`, `OFDLCK` or `FLOCK`.
            var kind: String
            var isWrite: Bool
            /// -1 for open-file-description locks.
            var pid: Int32
            var start: String
            var end: String
            /// A request waiting for the lock (`->` in `/proc/locks`).
            var isBlocked: Bool

            var description: String {
                "\(isBlocked ? "-> " : "")\(kind) \(isWrite ? "WRITE" : "READ") \(start)-\(end)"
            }
        }

        /// Read until two looks agree: the kernel writes /proc/locks a page per read, each from
        /// where the list stands then, so under other processes' locking a line can be read twice
        /// or missed.
        static func entries(on path: String) -> [Entry] {
            var previous = entriesOnce(on: path)
            for _ in 0..<9 {
                let current = entriesOnce(on: path)
                if current.map(\.description) == previous.map(\.description) { return current }
                previous = current
            }
            return previous
        }

        private static func entriesOnce(on path: String) -> [Entry] {
            var status = stat()
            guard stat(path, &status) == 0, let table = readFile("/proc/locks") else { return [] }
            let device = UInt64(status.st_dev)
            let major = ((device >> 8) & 0xfff) | ((device >> 32) & ~UInt64(0xfff))
            let minor = (device & 0xff) | ((device >> 12) & ~UInt64(0xff))
            func hex(_ value: UInt64) -> String {
                let digits = String(value, radix: 16)
                return digits.count < 2 ? "0" + digits : digits
            }
            let file = "\(hex(major)):\(hex(minor)):\(status.st_ino)"
            var result: [Entry] = []
            for line in table.split(separator: "\n") {
                var fields = line.split(separator: " ").dropFirst()
                let isBlocked = fields.first == "->"
                if isBlocked { fields = fields.dropFirst() }
                let values = Array(fields)
                guard values.count >= 7, values[4] == file else { continue }
                result.append(
                    Entry(
                        kind: String(values[0]), isWrite: values[2] == "WRITE", pid: Int32(values[3]) ?? 0,
                        start: String(values[5]), end: String(values[6]), isBlocked: isBlocked))
            }
            return result
        }
    }
#endif
