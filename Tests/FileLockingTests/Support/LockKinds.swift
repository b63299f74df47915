import Testing
import FileLocking
import PostgresLocking

/// The whole-file lock kinds, for the scenarios every kind must pass (`ContractTests` and the
/// fork and ownership tests): a new kind joins them by adding a case here.
enum WholeFileKind: String, CaseIterable, Sendable, CustomTestStringConvertible {
    case kernel
    case soft
    /// `FileLock` that deletes its lock file on release (`removesFileOnRelease`).
    case kernelRemovingFile
    /// `ReadWriteLock`'s write lock (SQLite's protocol on record locks).
    case readWrite
    /// `SoftReadWriteLock`'s write lock (Python's `filelock-rw/1` log in `<path>.rw`).
    case softReadWrite
    /// `SoftFileLease` (Python's `filelock/2` lease marker).
    case lease

    func make(
        _ path: String, timeout: Duration? = nil, isBlocking: Bool = true, ownership: LockOwnership = .caller,
        isSingleton: Bool = false, pollInterval: Duration = .milliseconds(50)
    ) throws -> any CrossProcessLock {
        switch self {
        case .kernel:
            try FileLock(
                at: path, timeout: timeout, isBlocking: isBlocking, ownership: ownership, isSingleton: isSingleton,
                pollInterval: pollInterval)
        case .kernelRemovingFile:
            try FileLock(
                at: path, timeout: timeout, isBlocking: isBlocking, ownership: ownership, isSingleton: isSingleton,
                pollInterval: pollInterval, removesFileOnRelease: true)
        case .readWrite:
            try ReadWriteLock(
                at: path, timeout: timeout, isBlocking: isBlocking, ownership: ownership, isSingleton: isSingleton,
                pollInterval: pollInterval
            ).writeLock
        case .soft:
            try SoftFileLock(
                at: path, timeout: timeout, isBlocking: isBlocking, ownership: ownership, isSingleton: isSingleton,
                pollInterval: pollInterval)
        case .softReadWrite:
            try SoftReadWriteLock(
                at: path, timeout: timeout, isBlocking: isBlocking, ownership: ownership, isSingleton: isSingleton,
                pollInterval: pollInterval
            ).writeLock
        case .lease:
            try SoftFileLease(
                at: path, timeout: timeout, isBlocking: isBlocking, ownership: ownership, isSingleton: isSingleton,
                pollInterval: pollInterval)
        }
    }

    /// A marker kind: an existing file at the path is a held lock (waited for, never opened).
    var isMarker: Bool { self == .soft || self == .lease }

    /// What the kind makes on disk at `path`: the path itself, or for `softReadWrite` its log
    /// folder `<path>.rw` (the path itself is never touched).
    func artifact(_ path: String) -> String { self == .softReadWrite ? path + ".rw" : path }

    var testDescription: String { rawValue }

    /// The `lock-probe` options that make the same kind.
    var probeArguments: [String] {
        switch self {
        case .kernel: ["--kind", "kernel"]
        case .soft: ["--kind", "soft"]
        case .kernelRemovingFile: ["--kind", "kernel", "--removes-file"]
        case .readWrite: ["--kind", "rw"]
        case .softReadWrite: ["--kind", "soft-rw"]
        case .lease: ["--kind", "lease"]
        }
    }
}

/// Every kind the contract suite covers: the whole-file kinds and the lock on a server
/// (`PostgresLock` on the tests' throw-away cluster). A test's path names the server lock too
/// (its name is the path, `/./` collapsed), so each test's lock is its own.
enum ContractKind: Sendable, CustomTestStringConvertible {
    case file(WholeFileKind)
    case postgres

    /// The file kinds, and the server kind where PostgreSQL is installed (always in CI, where its
    /// absence fails the tests; elsewhere `PostgresLockTests` reports it skipped).
    static var all: [ContractKind] {
        WholeFileKind.allCases.map { .file($0) } + (TestEnvironment.requires(PostgresServer.isAvailable) ? [.postgres] : [])
    }

    func make(
        _ path: String, timeout: Duration? = nil, isBlocking: Bool = true, ownership: LockOwnership = .caller,
        isSingleton: Bool = false, pollInterval: Duration = .milliseconds(50)
    ) throws -> any CrossProcessLock {
        switch self {
        case .file(let kind):
            return try kind.make(
                path, timeout: timeout, isBlocking: isBlocking, ownership: ownership, isSingleton: isSingleton,
                pollInterval: pollInterval)
        case .postgres:
            let server = try #require(PostgresServer.shared, "the PostgreSQL test server did not start")
            return try PostgresLock(
                name: path.replacing("/./", with: "/"), server: server.settings, timeout: timeout, isBlocking: isBlocking,
                ownership: ownership, isSingleton: isSingleton)
        }
    }

    var probeArguments: [String] {
        switch self {
        case .file(let kind): kind.probeArguments
        case .postgres: ["--kind", "postgres", "--postgres", PostgresServer.shared?.socketURL ?? "postgres://unavailable"]
        }
    }

    /// Whether `holder` is the process `pid` (for the server kind: a session whose application
    /// name names it).
    func names(_ holder: LockHolder?, process pid: Int32?) -> Bool {
        guard let holder, let pid else { return false }
        switch self {
        case .file: return holder.pid == pid
        case .postgres: return holder.kind == .serverSession && holder.applicationName?.hasPrefix("filelock \(pid)@") == true
        }
    }

    /// How an error's message names the holder process `pid`.
    func holderText(_ pid: Int32) -> String {
        switch self {
        case .file: "pid \(pid)"
        case .postgres: "application 'filelock \(pid)@"
        }
    }

    var testDescription: String {
        switch self {
        case .file(let kind): kind.rawValue
        case .postgres: "postgres"
        }
    }
}
