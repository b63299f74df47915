/// An exclusive lock on a shared or network filesystem that **survives a crashed host**: a
/// marker file kept fresh by a heartbeat, which any process on any host may take over once it
/// stops being renewed for the lease's duration. In **Python `filelock`'s `filelock/2` lease
/// format**: a `SoftFileLease` here and Python's `filelock.SoftFileLease` (4.2 and later) on the
/// same path share one lock.
///
/// ```swift
/// let lease = try SoftFileLease(at: "/shared/nfs/jobs/nightly.lock", duration: .seconds(60))
/// try lease.withLock(timeout: .seconds(600)) {
///     for batch in batches {
///         try lease.checkHold()    // stop at once if the lease was lost
///         try process(batch)
///     }
/// }
/// ```
///
/// This is the answer for jobs on NFS or Kubernetes volumes whose crashes today wedge every
/// other host: a ``SoftFileLock`` marker from another host is never judged by liveness (its pid
/// means nothing here), while a lease is judged by time alone, **on the observer's own
/// monotonic clock** (no clocks are compared across hosts): the holder touches its marker every
/// `heartbeatInterval` (a third of the duration by default), and a contender that sees the
/// marker's times (and inode) unchanged for the whole `duration` takes it over. On the holder's
/// host, a dead holder is taken over at once (its pid is gone, or names a newer process).
///
/// Taking over swaps the contender's own marker in, atomically: by exchanging the two names
/// (`renameat2(RENAME_EXCHANGE)`) where the filesystem can, and where it cannot (NFS, SMB, FUSE)
/// under an exclusively created claim `<lock>.break-claim` with a plain rename, so an expired
/// lease can be taken over there too (Python's lease cannot: it needs the exchange).
///
/// **A holder learns when it lost the lease** (taken over because its heartbeats stalled for the
/// duration, or its marker removed): `onLoss`, ``losses``, ``checkHold()``, `withLock { }`
/// (after the body), ``checkedRelease(force:)`` and a re-entrant acquire report it (`.lockLost`).
/// Heartbeats run on a few helper threads shared by the whole process.
///
/// Every contender for a path must use the same duration: a live lease of another duration is
/// an `.invalidConfiguration` error, as in Python. Choose a duration longer than the longest
/// pause a holder may suffer (a stalled server, a suspended VM): a holder paused longer is taken
/// over while it still works (it is told when it resumes). Waiting polls every `pollInterval`;
/// on a local filesystem a folder watch wakes waiters as soon as the marker goes.
public struct SoftFileLease: EngineBackedLock, LossReportingLock {
    let engine: LockEngine<SoftPrimitive>
    package var lockEngine: any LockEngineSurface { engine }

    /// Creates a lease object for the marker at `path`. Nothing is created until it is acquired.
    ///
    /// - Parameters:
    ///   - path: The marker file (made with any missing folders). Relative paths are resolved
    ///     against the current folder now.
    ///   - duration: How long the marker may stay unrenewed before others take it over
    ///     (Python's default, 30 s). Every contender for the path must use the same.
    ///   - heartbeatInterval: How often the holder renews; `nil` is a third of `duration`. Must
    ///     be below `duration`.
    ///   - timeout: The default for `acquire()` and `withLock { }`; `nil` waits forever.
    ///   - isBlocking: `false` makes `acquire()` try exactly once.
    ///   - filePermissions: Permission bits for the marker; `nil` means `0o644` less the umask.
    ///   - ownership: Whether holds belong to the acquiring thread or task, or to this object.
    ///   - isSingleton: Share one lease object per canonical path in this process.
    ///   - pollInterval: The longest pause between tries while waiting; below `duration`.
    ///   - onLoss: Called (on a heartbeat thread, or the thread that asked) when a hold of this object
    ///     is found lost.
    /// - Throws: `FileLockError` for a bad path, a negative timeout, or `.invalidConfiguration`
    ///   for a duration or interval out of range.
    public init(
        at path: String, duration: Duration = .seconds(30), heartbeatInterval: Duration? = nil,
        timeout: Duration? = nil, isBlocking: Bool = true, filePermissions: UInt32? = nil,
        ownership: LockOwnership = .caller, isSingleton: Bool = false, pollInterval: Duration = .milliseconds(50),
        onLoss: (@Sendable (LockLoss) -> Void)? = nil
    ) throws {
        try self.init(
            lockPath: LockPath(path), duration: duration, heartbeatInterval: heartbeatInterval, timeout: timeout,
            isBlocking: isBlocking, filePermissions: filePermissions, ownership: ownership, isSingleton: isSingleton,
            pollInterval: pollInterval, onLoss: onLoss)
    }

    init(
        lockPath: LockPath, duration: Duration, heartbeatInterval: Duration?, timeout: Duration?, isBlocking: Bool,
        filePermissions: UInt32?, ownership: LockOwnership, isSingleton: Bool, pollInterval: Duration,
        onLoss: (@Sendable (LockLoss) -> Void)?
    ) throws {
        try SoftFileLock.checkRoomForHelperNames(lockPath)
        guard duration > .zero, duration < .seconds(Int64(Int32.max)) else {
            throw FileLockError(
                .invalidConfiguration, path: lockPath.given,
                message: "lease duration \(duration) for lock '\(lockPath.given)' must be positive (and below 68 years), "
                    + "for example .seconds(30)")
        }
        let heartbeat = try HeartbeatSettings.validated(
            interval: heartbeatInterval ?? duration / 3, staleThreshold: duration, pollInterval: pollInterval,
            path: lockPath.given, names: ("heartbeatInterval", "duration"))
        let configuration = try LockConfiguration(
            defaultTimeout: timeout, isBlocking: isBlocking, pollInterval: pollInterval, filePermissions: filePermissions,
            ownership: ownership, heartbeat: heartbeat
        ).validated(path: lockPath.given)
        var primitive = SoftPrimitive(
            lockPath: lockPath, filePermissions: filePermissions, lifetime: nil, pollInterval: pollInterval)
        primitive.lease = SoftPrimitive.LeaseSettings(
            duration: duration, durationSeconds: duration.inSeconds, heartbeatInterval: heartbeat.interval,
            reporter: LossReporter(callback: onLoss))
        engine = try LockEngine.make(
            primitive: primitive, configuration: configuration, canonicalPath: lockPath.absolute,
            isSingleton: isSingleton)
    }

    /// The absolute path of the marker.
    public var canonicalPath: String { engine.primitive.lockPath.absolute.description }

    /// How long the marker may stay unrenewed before others take it over.
    public var duration: Duration { engine.primitive.lease?.duration ?? .zero }

    /// How often the holder renews the marker.
    public var heartbeatInterval: Duration { engine.primitive.lease?.heartbeatInterval ?? .zero }

    public func checkHold() throws { try throwIfHoldLost() }

    @discardableResult
    public func checkedRelease(force: Bool = false) throws -> Bool {
        try engine.checkedRelease(force: force)
    }

    public var losses: AsyncStream<LockLoss> { engine.primitive.lease!.reporter.stream() }
}
