/// Many readers or one writer, between processes, threads and tasks, on a lock file kept by the
/// kernel with record locks in **SQLite's own locking protocol**.
///
/// ```swift
/// let lock = try ReadWriteLock(at: "/var/cache/app/index.lock")
/// let entries = try lock.withReadLock(timeout: .seconds(5)) {
///     try loadIndex()              // any number of readers at once
/// }
/// try lock.withWriteLock(timeout: .seconds(30)) {
///     try rebuildIndex()           // alone: no reader, no other writer
/// }
/// ```
///
/// The lock file is treated as an SQLite database: a reader takes SQLite's SHARED lock and a
/// writer its EXCLUSIVE lock, on the bytes SQLite locks (at 1 GiB; the file stays empty). So a
/// `ReadWriteLock`, Python `filelock`'s `ReadWriteLock` and any SQLite connection on the same file
/// (`sqlite3 FILE 'BEGIN EXCLUSIVE; ...'`, Python's `sqlite3`) exclude one another exactly as SQLite's
/// readers and writers do. Writers have preference, as in SQLite: once a writer waits, no new
/// reader gets in; the writer enters as soon as the readers inside have left, and waiting readers
/// enter together when it releases.
///
/// Every wait is a kernel wait, woken the moment the lock is freed; timeouts, cancel checks and
/// task cancellation end it promptly. The kernel frees a holder's part when it exits or is killed
/// (even `SIGKILL`); a crashed writer leaves nothing behind. A child forked without exec holds
/// none of its parent's locks and does not keep them alive.
///
/// Holds are per thread (or task), counted per mode: a holder may read-lock again while it reads,
/// but may not switch modes while it holds: taking the write lock while holding the read lock (an
/// upgrade, which would wait for itself) or the other way round throws `.modeChangeNotAllowed`.
/// Release, then acquire in the other mode. By default there is one lock object per path in a
/// process (`isSingleton: true`, as Python's), so code in different places shares the counts.
///
/// **Use it on local filesystems.** SQLite warns that record locks on network filesystems are
/// often broken, and so does this lock; across hosts use ``SoftFileLock``. Give it a lock file of
/// its own: a non-empty file that is no SQLite database is refused (Python's lock cannot open it
/// either), and so is an SQLite database in WAL mode (its readers and writers lock elsewhere); an
/// SQLite database in rollback-journal mode shares its locks with SQLite. Do not open an SQLite connection on the lock file in the same
/// process: SQLite's POSIX locks belong to the process, and closing any descriptor of the file in
/// that process (the library closes its own) drops them.
///
/// On macOS (no open-file-description locks) the locks are POSIX locks, which belong to the
/// process: holders within one process do not exclude one another, and one holder's release drops
/// the others' locks on the file. There, hold a `ReadWriteLock` from one thread or task at a time
/// per process (other processes are excluded as on Linux). This is not tested in CI (Linux only).
public struct ReadWriteLock: ReadWriteLocking, Hashable {
    let engine: LockEngine<ReadWritePrimitive>
    package var lockEngine: any LockEngineSurface { engine }

    /// Creates a lock object for the lock file at `path`. Nothing is opened until it is acquired.
    ///
    /// - Parameters:
    ///   - path: The lock file (created empty, with any missing folders, on first use). Relative
    ///     paths are resolved against the current folder now.
    ///   - timeout: The default for acquisitions without a timeout argument; `nil` waits forever.
    ///   - isBlocking: `false` makes acquisitions without a timeout argument try exactly once.
    ///   - filePermissions: Permission bits for the lock file (for example `0o666` so that every
    ///     user can share it); `nil` lets the umask decide. A user who may only read the file can
    ///     take read locks, not write locks.
    ///   - ownership: Whether holds belong to the acquiring thread or task, or to this lock object
    ///     (see ``LockOwnership``).
    ///   - isSingleton: Share one lock object per canonical path in this process (the default, as
    ///     Python's `ReadWriteLock`, unlike ``FileLock``), so that reentrancy and mode checks work
    ///     without passing the object around. All singletons of one path must be created with the
    ///     same settings (else `.invalidConfiguration`); pass `false` for an object of your own.
    ///   - pollInterval: How often a cancel check is asked while waiting.
    /// - Throws: `FileLockError` with `.invalidPath`/`.isDirectory` for an empty or folder-like
    ///   path, `.invalidTimeout` for a negative timeout, `.invalidConfiguration` for bad settings or
    ///   a singleton of this path with other settings.
    public init(
        at path: String, timeout: Duration? = nil, isBlocking: Bool = true, filePermissions: UInt32? = nil,
        ownership: LockOwnership = .caller, isSingleton: Bool = true, pollInterval: Duration = .milliseconds(50)
    ) throws {
        try self.init(
            lockPath: LockPath(path), timeout: timeout, isBlocking: isBlocking, filePermissions: filePermissions,
            ownership: ownership, isSingleton: isSingleton, pollInterval: pollInterval)
    }

    init(
        lockPath: LockPath, timeout: Duration?, isBlocking: Bool, filePermissions: UInt32?, ownership: LockOwnership,
        isSingleton: Bool, pollInterval: Duration
    ) throws {
        let configuration = try LockConfiguration(
            defaultTimeout: timeout, isBlocking: isBlocking, pollInterval: pollInterval, filePermissions: filePermissions,
            ownership: ownership
        ).validated(path: lockPath.given)
        engine = try LockEngine.make(
            primitive: ReadWritePrimitive(lockPath: lockPath, filePermissions: filePermissions),
            configuration: configuration, canonicalPath: lockPath.absolute, isSingleton: isSingleton)
    }

    /// One mode of a ``ReadWriteLock`` as a lock of its own: everything ``CrossProcessLock``
    /// offers (`withLock { }`, `acquire`, `tryAcquire`, `release`, sync and `async`) in that mode:
    /// `release` gives up only holds of this mode (`false` when the caller holds the other), and
    /// `release(force: true)` drops this mode's holds of every thread. Pass `lock.readLock` or
    /// `lock.writeLock` wherever a `some CrossProcessLock` is expected.
    public struct Side: LockSide {
        let engine: LockEngine<ReadWritePrimitive>
        package var lockEngine: any LockEngineSurface { engine }
        /// `.shared` for the read lock, `.exclusive` for the write lock.
        public let mode: LockMode

        /// For the read lock the writer (holding, or waiting with the readers' entry closed), for
        /// the write lock the writer or else a reader: the first process in the way.
        public var holder: LockHolder? {
            engine.primitive.lockTable(budget: nil).holder(inTheWayOf: mode)
        }
    }

    /// The read (shared) side: `lock.readLock.withLock { }` is `lock.withReadLock { }`.
    public var readLock: Side { Side(engine: engine, mode: .shared) }

    /// The write (exclusive) side: `lock.writeLock.withLock { }` is `lock.withWriteLock { }`.
    public var writeLock: Side { Side(engine: engine, mode: .exclusive) }

    // MARK: Settings and state

    /// The lock file's path as given.
    public var path: String { engine.path }

    /// The absolute path that is opened: the key for singletons.
    public var canonicalPath: String { engine.primitive.lockPath.absolute.description }

    /// The network or FUSE filesystem the lock file is on, or `nil` on a local filesystem.
    ///
    /// Record locks there may not exclude processes on other hosts (on FUSE, not even processes
    /// that use another mount of the same files): see ``NetworkFilesystem``. Found once per lock
    /// object and kept: by the first acquisition (`fstatfs` of the lock file, which also reports
    /// it once to ``FileLockWarnings/handler``), or before that by `statfs` of the lock file's
    /// folder (of the nearest existing folder above it when it is missing).
    public var networkFilesystem: NetworkFilesystem? {
        engine.primitive.filesystem.filesystem(ofFolder: engine.primitive.lockPath.parent)
    }

    /// The timeout acquisitions use when none is passed; `nil` waits forever.
    public var defaultTimeout: Duration? { engine.configuration.defaultTimeout }

    /// Whether acquisitions without a timeout argument wait at all.
    public var isBlocking: Bool { engine.configuration.isBlocking }

    /// Whether holds belong to the acquiring thread or task, or to this lock object.
    public var ownership: LockOwnership { engine.configuration.ownership }

    /// Whether this lock object holds the lock, in either mode.
    public var isLocked: Bool { engine.isLocked }

    /// How many unreleased acquisitions this lock object has, in both modes.
    public var holdCount: Int { engine.holdCount }

    /// The mode in which the calling thread (or task) holds the lock, or `nil`.
    public var heldMode: LockMode? { engine.modeOfCurrentOwner }

    /// Every process holding the lock: the writer first (exclusive), or the readers (shared), each
    /// process once per mode, with its command line where this user may read it. From the kernel's
    /// lock table (Linux `/proc/locks`, and `/proc/PID/fdinfo` for open-file-description locks,
    /// which takes a look through every process's open files: milliseconds); empty when free or
    /// on other systems. Processes this user may not inspect are missing: see ``currentHolders``.
    public var holders: [LockHolder] { engine.primitive.holders() }

    /// A writer that has closed the entry to new readers and waits for the readers inside to leave
    /// (SQLite's PENDING lock), or `nil`.
    public var waitingWriter: LockHolder? { engine.primitive.lockTable(budget: nil).pendingWriter }

    /// What a lock file holds, as `filelock status` tells read-write lock files apart.
    package enum FileFormat: Sendable {
        /// Nothing (what every kernel lock leaves).
        case empty
        /// An SQLite database in rollback-journal mode (an SQLite transaction wrote it).
        case sqlite
        /// An SQLite database in WAL mode, which a `ReadWriteLock` refuses.
        case sqliteWAL
        /// Anything else.
        case other
    }

    /// What the lock file holds; `nil` when it is missing or cannot be read.
    package var fileFormat: FileFormat? { engine.primitive.fileFormat() }

    /// The writer, the readers and a waiting writer at one look, with the number of locks whose
    /// process cannot be named (see ``ReadWriteLockHolders``).
    public var currentHolders: ReadWriteLockHolders { engine.primitive.lockTable(budget: nil).snapshot }

    // MARK: Releasing (acquiring: see ReadWriteLocking)

    /// Gives up one hold of the caller, in whichever mode it holds; the lock is free for others
    /// when the last hold goes.
    ///
    /// - Parameter force: Drop every hold of this object at once (both modes, every thread).
    /// - Returns: `false` when the caller held nothing here.
    @discardableResult
    public func release(force: Bool = false) -> Bool {
        engine.release(force: force)
    }

    /// Two values are equal when they are the same lock object (copies, or one singleton).
    public static func == (lhs: Self, rhs: Self) -> Bool { lhs.engine === rhs.engine }

    public func hash(into hasher: inout Hasher) { hasher.combine(ObjectIdentifier(engine)) }
}

/// Who holds a ``ReadWriteLock`` at one look.
public struct ReadWriteLockHolders: Sendable, Hashable {
    /// The process holding the write lock, or `nil`.
    public var writer: LockHolder?
    /// The processes holding the read lock, each once.
    public var readers: [LockHolder]
    /// A writer waiting for the readers inside to leave, with the entry closed to new readers.
    public var waitingWriter: LockHolder?
    /// Locks on the lock file whose process could not be found: the kernel shows the lock but not
    /// whose it is (an open-file-description lock of a process whose `/proc/PID/fdinfo` this user
    /// may not read: another user's, unless running as root). The lock is held all the same.
    public var unidentifiedCount: Int

    /// Whether anyone holds the lock (or a writer waits, which keeps new readers out), named or not.
    public var isHeld: Bool { writer != nil || !readers.isEmpty || waitingWriter != nil || unidentifiedCount > 0 }
}
