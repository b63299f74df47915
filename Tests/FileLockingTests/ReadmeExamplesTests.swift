#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif
import FileLocking
import PostgresLocking
import Synchronization
import Testing

// The README's examples, verbatim apart from the lock path, so that they keep compiling.
@Suite("README examples")
struct ReadmeExamplesTests {
    let folder: TemporaryFolder
    init() throws { folder = try TemporaryFolder() }

    @Test func synchronousExamples() throws {
        let lock = try FileLock(at: folder.file("my-cache.lock"))

        // Scoped: released when the closure returns or throws.
        try lock.withLock(timeout: .seconds(5)) {
            // only one process, thread or task at a time runs this
        }

        // Never waits.
        if try lock.tryAcquire() {
            defer { lock.release() }
            print("updating without waiting")
        }

        // Explicit, with a timeout; the error says who holds the lock and how long we waited.
        do {
            try lock.acquire(timeout: .milliseconds(200))
            defer { lock.release() }
            print("updating without waiting")
        } catch let error as FileLockError where error.code == .timedOut {
            print("busy: \(error.holder.map(String.init(describing:)) ?? "unknown holder")")
        }
        #expect(!lock.isLocked)
    }

    @Test func asyncExample() async throws {
        let path = folder.file("my-cache.lock")
        let before = readmeDownloads.load(ordering: .relaxed)

        func refreshCache() async throws {
            let lock = try FileLock(at: path)
            try await lock.withLock(timeout: .seconds(30)) {
                try await downloadIntoCache()
            }
        }
        try await refreshCache()
        #expect(readmeDownloads.load(ordering: .relaxed) == before + 1)
    }
}

extension ReadmeExamplesTests {
    @Test func softFileLockExample() throws {
        let folder = try TemporaryFolder()
        let lock = try SoftFileLock(at: folder.file("queue.lock"))
        try lock.withLock(timeout: .seconds(30)) {
            // one process at a time, across every host that mounts /shared/nfs
            if let holder = lock.holder {
                print("held by pid \(holder.pid) on \(holder.host ?? "?") since \(holder.since!)\(holder.looksStale ? " (stale)" : "")")
            }
            #expect(lock.holder?.pid == getpid())
        }
    }
}

extension ReadmeExamplesTests {
    @Test func byteRangeLockExample() throws {
        let folder = try TemporaryFolder()
        let records = try ByteRangeLock(at: folder.file("database.bin"))
        let record = ByteRange(start: 7 * 100, length: 100)  // length 0: to the end of the file, however it grows
        try records.withLock(record, timeout: .seconds(5)) {
            var bytes = try records.read(count: 100, at: record.start)
            if !bytes.isEmpty { bytes[0] &+= 1 }
            try records.write(bytes, at: record.start)
        }
        if let conflict = try records.conflict(for: record) {  // F_TEST, with who holds it
            print("\(conflict.range) is held by \(conflict.holder.map(String.init(describing:)) ?? "another process")")
        }

        // Code ported from C or Python's os.lockf reads the same: lengths count from the current offset.
        try records.seek(to: 50)
        try records.lockf(.lock, length: 100)  // F_LOCK bytes 50-149; .tryLock, .unlock, .test as in lockf
        try records.lockf(.unlock, length: 100)
        #expect(try records.conflict(for: record) == nil)
    }
}

extension ReadmeExamplesTests {
    @Test func readWriteLockExample() throws {
        let folder = try TemporaryFolder()
        let index = Mutex<[String]>(["first"])
        func loadIndex() throws -> [String] { index.withLock { $0 } }
        func saveIndex(_ entries: [String]) throws { index.withLock { $0 = entries } }

        let lock = try ReadWriteLock(at: folder.file("index.lock"))
        let entries = try lock.withReadLock(timeout: .seconds(5)) {
            try loadIndex()  // any number of readers at once
        }
        try lock.withWriteLock(timeout: .seconds(30)) {
            try saveIndex(entries + ["new"])  // alone: no reader, no other writer
        }
        for holder in lock.holders {  // the writer, or every reader, with its command line
            print("\(holder.isShared ? "reader" : "writer"): \(holder)")
        }
        #expect(try loadIndex() == ["first", "new"])
        #expect(lock.holders.isEmpty)
    }

    @Test func heartbeatKindsExample() throws {
        let folder = try TemporaryFolder()
        let saved = Mutex<(entries: [String], token: UInt64)>(([], 0))
        let processed = Mutex<[String]>([])
        func loadCatalog() throws -> [String] { ["x"] }
        func saveCatalog(_ entries: [String], fencingToken: UInt64) throws { saved.withLock { $0 = (entries, fencingToken) } }
        func process(_ batch: String) throws { processed.withLock { $0.append(batch) } }

        // Many readers or one writer, on any host that mounts /shared/nfs.
        let catalog = try SoftReadWriteLock(at: folder.file("catalog.lock"))
        let entries = try catalog.withReadLock(timeout: .seconds(30)) { try loadCatalog() }
        try catalog.withWriteLock(timeout: .seconds(300)) {
            try catalog.checkHold()  // .lockLost if we were evicted meanwhile
            try saveCatalog(entries, fencingToken: catalog.fencingToken!)
        }

        // One holder at a time, taken over once its heartbeat stops for the lease's duration.
        let nightly = try SoftFileLease(at: folder.file("nightly.lock"), duration: .seconds(60)) { loss in
            print("lost the lease: \(loss)")  // on a heartbeat thread, within two heartbeats
        }
        try nightly.withLock(timeout: .seconds(600)) {
            for batch in ["a", "b"] {
                try nightly.checkHold()  // stop at once if the lease was lost
                try process(batch)
            }
        }
        #expect(saved.withLock { $0.entries } == ["x"] && saved.withLock { $0.token } == 3, "read: 1, its release: 2, the write: 3")
        #expect(processed.withLock { $0 } == ["a", "b"])
    }
}

private let readmeDownloads = Atomic<Int>(0)
private func downloadIntoCache() async throws { readmeDownloads.add(1, ordering: .relaxed) }

/// The README's `PostgresLock` example, against the tests' throw-away server (its URL instead of
/// db.internal's).
@Suite(
    "README PostgresLock example",
    .enabled(if: TestEnvironment.requires(PostgresServer.isAvailable), "PostgreSQL (initdb, postgres) is not installed"))
struct ReadmePostgresExampleTests {
    @Test func asyncExample() async throws {
        let testServer = try #require(PostgresServer.shared)
        let before = reportsWritten.load(ordering: .relaxed)
        try await runNightlyReport(url: testServer.socketURL)
        let after = reportsWritten.load(ordering: .relaxed)
        #expect(after == before + 1)
    }
}

private let reportsWritten = Atomic<Int>(0)

private func writeTheReport() async throws { reportsWritten.add(1, ordering: .relaxed) }

private func runNightlyReport(url: String) async throws {
    let server = try PostgresConnectionSettings(url: url)  // or PG* variables
    let lock = try PostgresLock(name: "nightly-report", server: server)
    try await lock.withLock(timeout: .seconds(30)) {
        try await lock.verifyHold()  // a round trip: still ours? (before a write that must not run unlocked)
        try await writeTheReport()
    }
}
