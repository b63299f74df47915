import Synchronization

/// Many readers or one writer, between processes on **one or many hosts** sharing a filesystem
/// (NFS, SMB, FUSE, a Kubernetes volume), in **Python `filelock`'s `filelock-rw/1` protocol**:
/// a `SoftReadWriteLock` here and Python's `filelock.SoftReadWriteLock` (4.2 and later) on the
/// same path share one lock.
///
/// ```swift
/// let lock = try SoftReadWriteLock(at: "/shared/nfs/catalog.lock")
/// let catalog = try lock.withReadLock(timeout: .seconds(30)) {
///     try loadCatalog()          // any number of readers, on any host
/// }
/// try lock.withWriteLock(timeout: .seconds(300)) {
///     try lock.writeLock.checkHold()   // before a write that must not happen unlocked
///     try rewriteCatalog()       // alone
/// }
/// ```
///
/// **How it works.** Nothing here is a kernel lock, which NFS does not share between hosts. The
/// lock is a folder `<lock>.rw` beside the path (the path itself is never created):
/// `gen/<20 digits>` are immutable snapshots naming the writer and the readers, each
/// generation published by hard-linking a fully written file to the next number, which only one
/// process can win on any POSIX or NFS filesystem; `holders/<token>` is each participant's record.
/// Folders are 0700, files 0600, and a symbolic link or a folder owned by another account in a
/// sticky folder is refused. Writers have preference: once a writer is named, no reader enters;
/// it is granted when the readers inside have left. The generation that granted a hold only
/// grows: ``fencingToken`` gives it to guard writes elsewhere.
///
/// **When a holder dies** (or its host crashes) its record stops changing: every holder
/// rewrites it each `heartbeatInterval` (on a few helper threads shared by the process), and any
/// participant, on any host, evicts a member whose record stayed unchanged for the
/// `staleThreshold` *as measured on its own monotonic clock*: no clocks are compared across
/// hosts, and no pid is trusted (a pid from another host means nothing). So a crashed holder
/// blocks others for at most the stale threshold (90 s by default; a holder's own longer
/// threshold, which it publishes, is honoured).
///
/// **A holder learns when it lost the lock** (evicted because its heartbeats stalled, a record
/// removed by hand): the `onLoss` callback and ``SoftReadWriteLock/Side/losses`` report it, and
/// `checkHold()`, `withReadLock`/`withWriteLock` (after the body), `checkedRelease()` and a
/// re-entrant acquire throw `.lockLost`. It never silently continues.
///
/// Waiting watches `gen/` (inotify) where the filesystem reports changes (local ones), else
/// polls every `pollInterval`; every try also refreshes the waiter's own record. It needs a
/// filesystem with hard links (NFS, SMB, ext4, bindfs, sshfs); a link that failed is judged by
/// comparing inodes. Python's lock compares inodes after every link, so it never commits on
/// sshfs (whose inode numbers differ per name): do not share a lock with Python there. Holds are per
/// thread (or task) and counted per mode; taking the other mode while holding throws
/// `.modeChangeNotAllowed`. By default there is one lock object per path in a process
/// (`isSingleton: true`, as Python's).
public struct SoftReadWriteLock: ReadWriteLocking, Hashable {
    let engine: LockEngine<SoftReadWritePrimitive>
    package var lockEngine: any LockEngineSurface { engine }

    /// Creates a lock object for `path`. Nothing is created until it is acquired.
    ///
    /// - Parameters:
    ///   - path: The lock's path: the log is the folder `<path>.rw` (made with any missing
    ///     folders on first use). Relative paths are resolved against the current folder now.
    ///   - timeout: The default for acquisitions without a timeout argument; `nil` waits forever.
    ///   - isBlocking: `false` makes acquisitions without a timeout argument try exactly once.
    ///   - heartbeatInterval: How often a holder rewrites its record (Python's default, 30 s).
    ///   - staleThreshold: How long a record may stay unchanged before others evict its holder;
    ///     `nil` is three heartbeat intervals (90 s). Must exceed `heartbeatInterval`. Choose it
    ///     longer than the longest pause a holder may suffer (a stalled server, a suspended VM).
    ///   - ownership: Whether holds belong to the acquiring thread or task, or to this lock object.
    ///   - isSingleton: Share one lock object per canonical path in this process (the default, as
    ///     Python's). All singletons of one path must be made with the same settings; the `onLoss`
    ///     of the first one made is the one called.
    ///   - pollInterval: The longest pause between tries while waiting (waiters also wake when
    ///     the log changes, where the filesystem reports it). Must be below `staleThreshold`.
    ///   - onLoss: Called (on a heartbeat thread, or the thread that asked) when a hold of this lock
    ///     object is found lost.
    /// - Throws: `FileLockError` with `.invalidPath`/`.isDirectory` for an empty or folder-like
    ///   path, `.invalidTimeout` for a negative timeout, `.invalidConfiguration` for bad settings or
    ///   a singleton of this path with other settings.
    public init(
        at path: String, timeout: Duration? = nil, isBlocking: Bool = true, heartbeatInterval: Duration = .seconds(30),
        staleThreshold: Duration? = nil, ownership: LockOwnership = .caller, isSingleton: Bool = true,
        pollInterval: Duration = .milliseconds(100), onLoss: (@Sendable (LockLoss) -> Void)? = nil
    ) throws {
        try self.init(
            lockPath: LockPath(path), timeout: timeout, isBlocking: isBlocking, heartbeatInterval: heartbeatInterval,
            staleThreshold: staleThreshold, ownership: ownership, isSingleton: isSingleton, pollInterval: pollInterval,
            onLoss: onLoss)
    }

    init(
        lockPath: LockPath, timeout: Duration?, isBlocking: Bool, heartbeatInterval: Duration, staleThreshold: Duration?,
        ownership: LockOwnership, isSingleton: Bool, pollInterval: Duration, onLoss: (@Sendable (LockLoss) -> Void)?
    ) throws {
        // `<name>.rw` must be a valid name (255 bytes on Linux filesystems; some FUSE and
        // overlay folders accept longer ones, which Python's lock and other hosts may not).
        if CPath.lastComponent(of: lockPath.absolute.pathBytes).count + 3 > 255 {
            throw FileLockError.system(.nameTooLong, path: lockPath.given, operation: "create the log folder '<name>.rw' of")
        }
        let heartbeat = try HeartbeatSettings.validated(
            interval: heartbeatInterval, staleThreshold: staleThreshold, pollInterval: pollInterval, path: lockPath.given)
        let configuration = try LockConfiguration(
            defaultTimeout: timeout, isBlocking: isBlocking, pollInterval: pollInterval, filePermissions: nil,
            ownership: ownership, heartbeat: heartbeat
        ).validated(path: lockPath.given)
        let primitive = SoftReadWritePrimitive(
            log: GenerationLog(lockPath: lockPath, staleThreshold: heartbeat.staleThreshold),
            heartbeatInterval: heartbeat.interval, pollInterval: pollInterval, reporter: LossReporter(callback: onLoss))
        engine = try LockEngine.make(
            primitive: primitive, configuration: configuration, canonicalPath: lockPath.absolute.appending(".rw"),
            isSingleton: isSingleton)
    }

    /// One mode of a ``SoftReadWriteLock`` as a lock of its own: everything
    /// ``CrossProcessLock`` and ``LossReportingLock`` offer, in that mode. `release` gives up only
    /// holds of this mode.
    public struct Side: LockSide, LossReportingLock {
        let engine: LockEngine<SoftReadWritePrimitive>
        package var lockEngine: any LockEngineSurface { engine }
        /// `.shared` for the read lock, `.exclusive` for the write lock.
        public let mode: LockMode

        /// For the read lock the writer (holding or waiting), for the write lock the writer or
        /// else a reader: the first participant in the way.
        public var holder: LockHolder? {
            engine.primitive.blockingHolder(for: LockRequest(mode), timeout: nil)
        }

        public func checkHold() throws { try throwIfHoldLost() }

        @discardableResult
        public func checkedRelease(force: Bool = false) throws -> Bool {
            try engine.checkedRelease(force: force, mode: mode)
        }

        public var losses: AsyncStream<LockLoss> { engine.primitive.reporter.stream() }
    }

    /// The read (shared) side: `lock.readLock.withLock { }` is `lock.withReadLock { }`.
    public var readLock: Side { Side(engine: engine, mode: .shared) }

    /// The write (exclusive) side: `lock.writeLock.withLock { }` is `lock.withWriteLock { }`.
    public var writeLock: Side { Side(engine: engine, mode: .exclusive) }

    // MARK: Settings and state

    /// The lock's path as given.
    public var path: String { engine.path }

    /// The folder that holds the log: `<path>.rw`, absolute.
    public var logFolder: String { engine.primitive.log.root.description }

    /// The timeout acquisitions use when none is passed; `nil` waits forever.
    public var defaultTimeout: Duration? { engine.configuration.defaultTimeout }

    /// Whether acquisitions without a timeout argument wait at all.
    public var isBlocking: Bool { engine.configuration.isBlocking }

    /// How often a holder rewrites its record.
    public var heartbeatInterval: Duration { engine.primitive.heartbeatInterval }

    /// How long a record may stay unchanged before its holder is evicted.
    public var staleThreshold: Duration { engine.primitive.staleThreshold }

    /// Whether holds belong to the acquiring thread or task, or to this lock object.
    public var ownership: LockOwnership { engine.configuration.ownership }

    /// Whether this lock object holds the lock, in either mode.
    public var isLocked: Bool { engine.isLocked }

    /// How many unreleased acquisitions this lock object has, in both modes.
    public var holdCount: Int { engine.holdCount }

    /// The mode in which the calling thread (or task) holds the lock, or `nil`.
    public var heldMode: LockMode? { engine.modeOfCurrentOwner }

    /// The generation of the commit that granted the caller's hold, or `nil` when it holds
    /// nothing: a fencing token. Every grant of this lock gets a larger one (until the log is
    /// removed by hand), so a store that remembers the largest token it accepted can refuse a
    /// write from a holder that was evicted and did not notice.
    public var fencingToken: UInt64? { engine.holdOfCurrentOwner()?.generation }

    /// The newest generation of the log (`nil` when there is none yet).
    public var generation: UInt64? { engine.primitive.table().generation }

    /// Every participant holding the lock (the writer, or the readers), each with the pid and
    /// host its record names and when the record last changed.
    public var holders: [LockHolder] { engine.primitive.holders() }

    /// A writer named in the log while readers are still inside: no new reader gets in.
    public var waitingWriter: LockHolder? { engine.primitive.table().holders.waitingWriter }

    /// The writer, the readers and a waiting writer at one look; empty when there is no log, or
    /// when it cannot be read (see ``readState()``).
    public var currentHolders: ReadWriteLockHolders { engine.primitive.table().holders }

    /// Who holds the lock and the log's newest generation, at one look.
    ///
    /// - Throws: `FileLockError` when the log exists but cannot be read (for example another
    ///   account's: its folders are 0700), instead of reporting the lock free as
    ///   ``currentHolders`` does.
    public func readState() throws -> SoftReadWriteLockState {
        let (holders, generation) = try engine.primitive.readTable()
        return SoftReadWriteLockState(holders: holders, generation: generation)
    }

    /// Every loss of a hold of this lock object from now on (see ``LossReportingLock``).
    public var losses: AsyncStream<LockLoss> { engine.primitive.reporter.stream() }

    /// Throws `.lockLost` when the caller's hold (in either mode) was lost.
    public func checkHold() throws {
        if let loss = engine.lossOfCurrentOwner() { throw loss.error }
    }

    // MARK: Releasing (acquiring: see ReadWriteLocking)

    /// Gives up one hold of the caller, in whichever mode it holds; the lock is free for others
    /// when the last hold goes (this process commits itself out of the log at once).
    ///
    /// - Parameter force: Drop every hold of this object at once (both modes, every thread).
    /// - Returns: `false` when the caller held nothing here.
    @discardableResult
    public func release(force: Bool = false) -> Bool {
        engine.release(force: force)
    }

    /// Gives up one hold as ``release(force:)`` does, then throws `.lockLost` when it had been lost.
    @discardableResult
    public func checkedRelease(force: Bool = false) throws -> Bool {
        try engine.checkedRelease(force: force)
    }

    /// Two values are equal when they are the same lock object (copies, or one singleton).
    public static func == (lhs: Self, rhs: Self) -> Bool { lhs.engine === rhs.engine }

    public func hash(into hasher: inout Hasher) { hasher.combine(ObjectIdentifier(engine)) }
}

/// Who holds a ``SoftReadWriteLock`` and its log's newest generation, at one look.
public struct SoftReadWriteLockState: Sendable, Hashable {
    /// The writer, the readers and a waiting writer (`unidentifiedCount` is always 0: every
    /// member names itself in its record).
    public var holders: ReadWriteLockHolders
    /// The newest generation; `nil` when there is no log yet.
    public var generation: UInt64?
}
