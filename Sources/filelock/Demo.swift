#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif
import ArgumentParser
import FileLocking
import PostgresLocking
import Subprocesses

/// `filelock demo`: the lost-update race between processes, and its fix; with `--kind rw`, torn
/// reads of data that writers change in two steps, and a read-write lock's readers never seeing
/// them.
struct Demo: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Show the lost-update race between processes (or torn reads), and a lock fixing it.",
        discussion: """
            Starts PROCESSES worker processes that each add 1 to a shared counter file INCREMENTS \
            times: first without a lock (read-modify-write steps interleave and updates are lost), \
            then with a FileLock around each increment (the count is exact).

            With --kind rw, 2 writer processes each add 1 to both of two numbers in a data file, \
            one after the other, INCREMENTS times, while PROCESSES reader processes read both \
            numbers until the writers are done and count the readings where they differ: without a \
            lock readers see a writer half-way (torn reads) and writers may lose updates; with a \
            ReadWriteLock (readers share its read lock, each writer takes its write lock) no reading \
            is torn and both numbers end exact. --kind soft-rw does the same with a SoftReadWriteLock \
            (its log in a folder beside the lock path, as on NFS); --kind lease counts as the first \
            form does, with a SoftFileLease (a marker renewed by a heartbeat).

            A soft read-write lock commits two generations of its log (each written and synced to \
            disk) per acquisition, so with --kind soft-rw the default is 50 increments (1000 for the \
            others).

            Examples:
              filelock demo
              filelock demo --processes 8 --increments 500
              filelock demo --kind soft        # a marker-file lock, as on NFS
              filelock demo --kind range       # a byte-range lock on the counter's own bytes
              filelock demo --kind rw          # readers and writers: torn reads, then none
              filelock demo --kind soft-rw     # the same with a SoftReadWriteLock (for NFS)
              filelock demo --kind lease       # a SoftFileLease, renewed by a heartbeat
              filelock demo --kind postgres    # a PostgresLock (starts a throw-away server)

            --kind postgres takes a PostgreSQL advisory lock instead of a file lock: on the server \
            of --postgres URL, or when none is given on a throw-away server of its own (PostgreSQL \
            must be installed), started for the demo and removed after it.
            """
    )

    @Option(
        help: """
            kernel (FileLock), soft (SoftFileLock), range (ByteRangeLock on the counter file), rw \
            (ReadWriteLock: readers and writers), soft-rw (SoftReadWriteLock: readers and writers, as on \
            NFS), lease (SoftFileLease) or postgres (PostgresLock).
            """)
    var kind: DemoKind = .kernel

    @Option(help: ArgumentHelp("--kind postgres: the server to lock on (default: a throw-away one).", valueName: "url"))
    var postgres: String?

    @Option(name: [.short, .long], help: "How many worker processes run at once (with --kind rw and soft-rw: readers, beside 2 writers).")
    var processes: Int = 4

    @Option(
        name: [.short, .long],
        help: "How many increments each worker (with --kind rw and soft-rw: each writer) makes (default 1000; 50 for soft-rw, 250 for postgres).")
    var increments: Int?

    func validate() throws {
        guard (1...256).contains(processes) else { throw ValidationError("--processes must be 1...256") }
        if let increments, !(1...10_000_000).contains(increments) {
            throw ValidationError("--increments must be 1...10000000")
        }
        if postgres != nil && kind != .postgres && kind != .kernel {
            throw ValidationError("--postgres locks on a PostgreSQL server; it does not go with --kind \(kind.rawValue)")
        }
    }

    /// The kind shown: `--kind`, or with `--postgres` alone a PostgresLock.
    var chosenKind: DemoKind { postgres != nil ? .postgres : kind }

    /// `--increments`, or the kind's default.
    var count: Int { increments ?? (chosenKind == .softRW ? 50 : chosenKind == .postgres ? 250 : 1000) }

    /// The lock's name in the table.
    var lockName: String {
        switch chosenKind {
        case .kernel: "FileLock"
        case .soft: "SoftFileLock"
        case .range: "ByteRangeLock"
        case .rw: "ReadWriteLock"
        case .softRW: "SoftReadWriteLock"
        case .lease: "SoftFileLease"
        case .postgres: "PostgresLock"
        }
    }

    /// The width of the table's first column: "with SoftReadWriteLock" needs more than the others.
    var labelWidth: Int { max(20, lockName.count + 7) }

    func run() throws {
        if chosenKind == .rw || chosenKind == .softRW { return try runReadersAndWriters() }
        var template = Array("/tmp/filelock-demo-XXXXXX".utf8CString)
        guard let made = mkdtemp(&template) else { throw ValidationError("cannot create a temporary folder in /tmp") }
        let folder = String(cString: made)
        defer {
            for name in ["counter", "counter.lock"] { unlink(folder + "/" + name) }
            rmdir(folder)
        }
        var server: DemoServer?
        var url = postgres
        if chosenKind == .postgres && url == nil {
            do {
                server = try DemoServer.start()
            } catch {
                note("\(error)")
                throw ExitCode(2)
            }
            url = server?.url
            print("filelock demo: a throw-away PostgreSQL server in \(server?.folder ?? "?") (removed afterwards)")
        }
        defer { server?.stop() }
        if let url {
            // The workers find the server in their environment, not on their command lines (where
            // `ps` would show a password).
            setenv(DemoWorker.postgresVariable, url, 1)
            // Says what is wrong with the server once, before any worker starts.
            do {
                _ = try PostgresLock(name: "filelock-demo", server: try PostgresConnectionSettings(url: url)).holdersNow()
            } catch let error as FileLockError {
                note(error.message)
                throw ExitCode(2)
            }
        }
        let expected = processes * count
        print("filelock demo: \(processes) processes x \(count) increments of one counter file")
        print("")
        print(pad("", labelWidth) + pad("expected", 10) + pad("got", 10) + pad("lost", 10) + pad("time", 12))
        let lockName = "with " + lockName
        for useLock in [false, true] {
            let counter = folder + "/counter"
            unlink(counter)
            let (got, seconds) = try runRound(folder: folder, useLock: useLock)
            print(
                pad(useLock ? lockName : "without a lock", -labelWidth) + pad(String(expected), 10)
                    + pad(String(got), 10) + pad(String(expected - got), 10)
                    + pad(String(Int((seconds * 1000).rounded())) + " ms", 12))
        }
        print("")
        print("Without a lock, two workers read the same value and one increment overwrites the other.")
        print("\(lockName.dropFirst(5)) makes each read-modify-write run alone.")
    }

    /// Starts the workers, lets them go at once, and returns the final count and the time taken.
    private func runRound(folder: String, useLock: Bool) throws -> (Int, Double) {
        var arguments = [
            "demo-worker", folder + "/counter.lock", folder + "/counter", String(count), "--kind", chosenKind.rawValue,
        ]
        if !useLock { arguments.append("--no-lock") }

        let workers = try (0..<processes).map { _ in try ChildProcess(executablePath(), arguments) }
        for worker in workers { try worker.expectLine(startingWith: "ready") }
        let start = ChildProcess.now()
        for worker in workers { worker.send("go") }
        for worker in workers {
            let line = try worker.expectLine(startingWith: "", timeout: 600)
            guard line == "done" else { throw ValidationError("a worker failed: \(line)") }
        }
        let seconds = ChildProcess.now() - start
        for worker in workers { _ = try worker.waitForExit() }
        let value = readCounter(folder + "/counter")
        return (value, seconds)
    }

    /// How many writers `--kind rw` starts.
    static let writers = 2

    /// `--kind rw`: writers keep two numbers equal (between their two writes they differ), readers
    /// check them; first without a lock, then with a ReadWriteLock.
    private func runReadersAndWriters() throws {
        var template = Array("/tmp/filelock-demo-XXXXXX".utf8CString)
        guard let made = mkdtemp(&template) else { throw ValidationError("cannot create a temporary folder in /tmp") }
        let folder = String(cString: made)
        defer {
            for name in ["data", "data.lock", "stop"] { unlink(folder + "/" + name) }
            // A soft read-write lock's log: data.lock.rw/gen and holders (emptied by the last leaver
            // but for the snapshots).
            removeTree(folder + "/data.lock.rw")
            rmdir(folder)
        }
        let expected = Self.writers * count
        print(
            "filelock demo: \(Self.writers) writers x \(count) updates of two numbers that must stay equal, "
                + "\(processes) readers checking them")
        print("")
        print(
            pad("", labelWidth) + pad("reads", 10) + pad("torn", 10) + pad("expected", 10) + pad("first", 10) + pad("second", 10)
                + pad("time", 12))
        for useLock in [false, true] {
            let round = try runReadWriteRound(folder: folder, useLock: useLock)
            print(
                pad(useLock ? "with \(lockName)" : "without a lock", -labelWidth) + pad(String(round.reads), 10)
                    + pad(String(round.torn), 10) + pad(String(expected), 10) + pad(String(round.first), 10)
                    + pad(String(round.second), 10) + pad(String(Int((round.seconds * 1000).rounded())) + " ms", 12))
        }
        print("")
        print("Without a lock, readers catch a writer between its two writes (torn: the numbers differ),")
        print("and writers that read-modify-write at once overwrite each other's updates.")
        print("\(lockName) lets the readers read together and each writer write alone: nothing torn, nothing lost.")
    }

    /// One round of `--kind rw`: the writers write, the readers read until the writers are done.
    private func runReadWriteRound(folder: String, useLock: Bool) throws
        -> (reads: Int, torn: Int, first: Int, second: Int, seconds: Double)
    {
        let data = folder + "/data"
        let stop = folder + "/stop"
        unlink(data)
        unlink(stop)
        var arguments = ["demo-worker", folder + "/data.lock", data, String(count), "--kind", chosenKind.rawValue]
        if !useLock { arguments.append("--no-lock") }
        let writers = try (0..<Self.writers).map { _ in try ChildProcess(executablePath(), arguments) }
        let readers = try (0..<processes).map { _ in
            try ChildProcess(executablePath(), arguments + ["--reader", "--stop", stop])
        }
        for worker in writers + readers { try worker.expectLine(startingWith: "ready") }
        let start = ChildProcess.now()
        for worker in writers + readers { worker.send("go") }
        for worker in writers {
            let line = try worker.expectLine(startingWith: "", timeout: 600)
            guard line == "done" else { throw ValidationError("a writer failed: \(line)") }
        }
        let seconds = ChildProcess.now() - start
        // The readers read until the writers are done, then stop.
        close(open(stop, O_WRONLY | O_CREAT | O_CLOEXEC, 0o644))
        var reads = 0
        var torn = 0
        for worker in readers {
            let line = try worker.expectLine(startingWith: "", timeout: 600)
            let parts = line.split(separator: " ")
            guard parts.count == 3, parts[0] == "done", let count = Int(parts[1]), let mismatches = Int(parts[2]) else {
                throw ValidationError("a reader failed: \(line)")
            }
            reads += count
            torn += mismatches
        }
        for worker in writers + readers { _ = try worker.waitForExit() }
        let numbers = readFields(data)
        return (reads, torn, numbers.0, numbers.1, seconds)
    }

    private func pad(_ text: String, _ width: Int) -> String {
        let size = abs(width)
        guard text.count < size else { return text + " " }
        let padding = String(repeating: " ", count: size - text.count)
        return width < 0 ? text + padding : padding + text
    }
}

/// The lock kinds the demo can show.
enum DemoKind: String, ExpressibleByArgument, CaseIterable {
    case kernel
    case soft
    case range
    case rw
    case softRW = "soft-rw"
    case lease
    case postgres
}

/// One worker of the demo (started by `filelock demo`, not meant to be run by hand).
struct DemoWorker: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "demo-worker", abstract: "One worker process of 'filelock demo'.", shouldDisplay: false)

    @Argument var lockPath: String
    @Argument var counterPath: String
    @Argument var increments: Int
    @Flag var noLock = false
    @Option var kind: DemoKind = .kernel
    /// With --kind rw: read the two numbers (until the file `stop` exists) instead of writing them.
    @Flag var reader = false
    @Option var stop: String?
    /// With --kind postgres, the variable that names the server (set by `filelock demo`); the
    /// lock's name is the lock path.
    static let postgresVariable = "FILELOCK_DEMO_POSTGRES_URL"

    func run() throws {
        if kind == .rw || kind == .softRW { return try runReadWrite() }
        let counter = open(counterPath, O_RDWR | O_CREAT | O_CLOEXEC, 0o644)
        guard counter >= 0 else { throw ValidationError("cannot open \(counterPath)") }
        defer { close(counter) }
        let locked: (() -> Void) throws -> Void
        switch kind {
        case .kernel:
            let lock = try FileLock(at: lockPath)
            locked = { body in try lock.withLock(body) }
        case .soft:
            let lock = try SoftFileLock(at: lockPath)
            locked = { body in try lock.withLock(body) }
        case .range:
            // The counter's own first 32 bytes: a record lock, no separate lock file.
            let file = try ByteRangeLock(at: counterPath)
            locked = { body in try file.withLock(ByteRange(start: 0, length: 32), body) }
        case .lease:
            let lease = try SoftFileLease(at: lockPath)
            locked = { body in try lease.withLock(body) }
        case .postgres:
            let url = getenv(Self.postgresVariable).map { String(cString: $0) }
            let lock = try PostgresLock(name: lockPath, server: try PostgresConnectionSettings(url: url))
            locked = { body in try lock.withLock(body) }
        case .rw, .softRW:
            return try runReadWrite()  // (taken above, before the counter is opened)
        }
        say("ready")
        guard readLine() == "go" else { return }
        for _ in 0..<increments {
            if noLock {
                increment(counter)
            } else {
                try locked { increment(counter) }
            }
        }
        say("done")
    }

    /// A writer adds 1 to both numbers in the data file, one after the other; a reader reads both
    /// until the file `stop` exists and says "done READS TORN".
    private func runReadWrite() throws {
        let data = open(counterPath, O_RDWR | O_CREAT | O_CLOEXEC, 0o644)
        guard data >= 0 else { throw ValidationError("cannot open \(counterPath)") }
        defer { close(data) }
        let withLock: (() -> Void) throws -> Void
        if kind == .softRW {
            let lock = try SoftReadWriteLock(at: lockPath, isSingleton: false)
            let side = reader ? lock.readLock : lock.writeLock
            withLock = { body in try side.withLock(body) }
        } else {
            let lock = try ReadWriteLock(at: lockPath, isSingleton: false)
            let side = reader ? lock.readLock : lock.writeLock
            withLock = { body in try side.withLock(body) }
        }
        say("ready")
        guard readLine() == "go" else { return }
        func locked(_ body: () -> Void) throws {
            if noLock { body() } else { try withLock(body) }
        }
        if reader {
            var reads = 0
            var torn = 0
            repeat {
                try locked {
                    let first = field(data, 0)
                    sched_yield()
                    if field(data, 1) != first { torn += 1 }
                }
                reads += 1
            } while stop.map({ access($0, F_OK) != 0 }) ?? false
            say("done \(reads) \(torn)")
        } else {
            for _ in 0..<increments {
                try locked {
                    setField(data, 0, field(data, 0) + 1)
                    // A writer that has more to do between its two writes (as most have): readers
                    // that do not wait for it see the first number changed and the second not yet.
                    usleep(50)
                    setField(data, 1, field(data, 1) + 1)
                }
            }
            say("done")
        }
    }

    private func increment(_ counter: Int32) {
        var buffer = [UInt8](repeating: 0, count: 32)
        let count = pread(counter, &buffer, buffer.count, 0)
        let value = Int(String(decoding: buffer.prefix(max(0, count)), as: UTF8.self)) ?? 0
        // A fixed width (zero-padded): a shorter number written over a longer one would leave
        // the longer one's last digits behind (999 over 1000 reads 9990) and count up, not down.
        let digits = String(value + 1)
        let text = Array((String(repeating: "0", count: max(0, 20 - digits.count)) + digits).utf8)
        _ = pwrite(counter, text, text.count, 0)
    }
}

func say(_ line: String) {
    let bytes = Array((line + "\n").utf8)
    _ = bytes.withUnsafeBytes { write(1, $0.baseAddress, $0.count) }
}

/// Number `index` of the `--kind rw` demo's data file: decimal text in a 32-byte field of its own
/// (so that a writer can change one without the other).
func field(_ descriptor: Int32, _ index: Int) -> Int {
    var buffer = [UInt8](repeating: 0, count: 32)
    let count = pread(descriptor, &buffer, 32, off_t(index * 32))
    return Int(String(decoding: buffer.prefix(max(0, count)).prefix { $0 != 0 }, as: UTF8.self)) ?? 0
}

func setField(_ descriptor: Int32, _ index: Int, _ value: Int) {
    var text = Array(String(value).utf8)
    text += [UInt8](repeating: 0, count: 32 - text.count)
    _ = pwrite(descriptor, text, 32, off_t(index * 32))
}

/// Both numbers of the `--kind rw` demo's data file.
func readFields(_ path: String) -> (Int, Int) {
    let descriptor = open(path, O_RDONLY | O_CLOEXEC)
    guard descriptor >= 0 else { return (0, 0) }
    defer { close(descriptor) }
    return (field(descriptor, 0), field(descriptor, 1))
}

func readCounter(_ path: String) -> Int {
    let descriptor = open(path, O_RDONLY | O_CLOEXEC)
    guard descriptor >= 0 else { return 0 }
    defer { close(descriptor) }
    var buffer = [UInt8](repeating: 0, count: 32)
    let count = read(descriptor, &buffer, buffer.count)
    return Int(String(decoding: buffer.prefix(max(0, count)), as: UTF8.self)) ?? 0
}

/// This executable's own path, to start workers.
func executablePath() -> String {
    #if os(Linux)
        var buffer = [CChar](repeating: 0, count: 4096)
        let count = readlink("/proc/self/exe", &buffer, buffer.count - 1)
        if count > 0 {
            return String(decoding: buffer.prefix(count).map { UInt8(bitPattern: $0) }, as: UTF8.self)
        }
    #elseif canImport(Darwin)
        var size = UInt32(4096)
        var buffer = [CChar](repeating: 0, count: Int(size))
        if _NSGetExecutablePath(&buffer, &size) == 0 { return String(cString: buffer) }
    #endif
    return CommandLine.arguments[0]
}

/// Removes a folder and everything in it (the demo's own temporary files only).
func removeTree(_ path: String) {
    guard let folder = opendir(path) else { unlink(path); return }
    var names: [String] = []
    while let entry = readdir(folder) {
        let name = withUnsafeBytes(of: entry.pointee.d_name) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
        if name != "." && name != ".." { names.append(name) }
    }
    closedir(folder)
    for name in names {
        let child = path + "/" + name
        var status = stat()
        if lstat(child, &status) == 0, (status.st_mode & S_IFMT) == S_IFDIR { removeTree(child) } else { unlink(child) }
    }
    rmdir(path)
}
