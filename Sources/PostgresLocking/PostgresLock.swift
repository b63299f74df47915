import FileLocking
import Synchronization

/// A lock for processes on machines that share no filesystem: a PostgreSQL **session-level
/// advisory lock**, with the surface of the file locks (blocking, try, timeouts, cancellation,
/// reentrancy, forced release, `withLock { }`, sync and `async`, shared and exclusive holds, who
/// holds it).
///
/// ```swift
/// import PostgresLocking
///
/// let server = try PostgresConnectionSettings(url: "postgres://jobs@db.internal/app")
/// let lock = try PostgresLock(name: "nightly-report", server: server)
/// try await lock.withLock(timeout: .seconds(30)) {
///     try await runNightlyReport()
/// }
/// ```
///
/// **The key.** A lock named `name` is the advisory lock on the 64-bit key that the server
/// computes as `hashtextextended(name, 0)`, so SQL, `psql` and other languages take the same lock
/// with `SELECT pg_advisory_lock(hashtextextended('nightly-report', 0))` (and
/// `pg_advisory_lock_shared` for a shared hold). `PostgresLock(key:server:)` takes a raw key
/// instead. Advisory locks belong to one database: every process must connect to the same one.
///
/// **A session of its own per hold.** A session-level advisory lock belongs to the server session
/// that took it and lasts until that session unlocks it or ends; so each hold gets a connection
/// that nothing else uses, and a released lock's connection is kept for the next acquisition
/// (at most 8 idle per server, each closed after 10 s unused). For the same reason a
/// transaction-pooling proxy (PgBouncer with `pool_mode = transaction`, or statement mode) breaks
/// these locks: it hands each statement to whichever server session is free, so the lock is
/// taken on one session and unlocked, checked or kept on others. Connect directly, or through
/// session pooling.
///
/// **Waiting is the server's**: a waiter sits in `pg_advisory_lock`, bounded by `lock_timeout`
/// for a timeout, and wakes the moment the holder unlocks or its session ends. Cancelling a task
/// (or a `cancelCheck`) cancels the wait on the server (`pg_cancel_backend` from another of this
/// process's sessions, so the role must be allowed to cancel its own sessions, as every role is)
/// and waits for its answer: a lock granted just then is unlocked at once, and the waiting
/// session is closed, never reused. Where the cancel cannot be sent within 3 s, the connection
/// is closed, and the server ends the orphaned wait within 250 ms on PostgreSQL 14 and later
/// (`client_connection_check_interval`, set on each session); older servers keep it until its
/// `lock_timeout`, or for a wait without a timeout until the lock is free. Each session also
/// lifts `statement_timeout` (and `idle_session_timeout`, `transaction_timeout`), which a role
/// or server may set and which would end a long wait or an idle holder.
///
/// **A lost lock is reported.** A lock lives as long as its session: when the connection drops
/// (a network failure, a server restart) or the server ends the session (`pg_terminate_backend`),
/// the lock is free for others at once. The holder learns it through `onLoss`, ``losses``,
/// ``checkHold()``, `withLock { }` (which throws `.lockLost` after its body),
/// ``checkedRelease(force:)`` and a re-entrant acquire: at once when the connection closes, and
/// within four `heartbeatInterval`s when the server stops answering (each holder checks
/// `pg_locks` on its session every interval, and a check unanswered for two intervals is a loss:
/// a server slow for a moment is tolerated, one stalled longer than that is not; raise the
/// interval for a server that may pause longer;
/// TCP keepalives probe the connection after 10 s of silence). A release the server does not
/// confirm is a loss too (`checkedRelease` and `withLock` throw `.lockLost`). The server frees the lock of a client that vanished without closing its connection
/// only once it notices: its `tcp_keepalives_idle`, `tcp_keepalives_interval` and
/// `tcp_keepalives_count` settings bound that (the Linux default is over two hours; set them, for
/// example to 60, 10 and 6). `idle_session_timeout` does not end a holder (its heartbeat keeps it
/// busy) unless set below the heartbeat interval.
///
/// **Forked children.** A child forked without exec cannot use its parent's sessions (a lock
/// object there throws `.invalidConfiguration`), but it keeps copies of their sockets, and the
/// server ends no session while any copy is open. The library therefore unlocks (
/// `pg_advisory_unlock_all()`) before it closes a session; a session it can no longer reach
/// keeps its locks until every process holding its socket has exited or exec'd.
///
/// **Fencing.** A lost lock may already be held by another process while the first one still
/// works. Before a write that must not happen without the lock, call ``checkHold()`` (a round trip
/// that asks the server); for writes in the same database, make the write itself conditional on
/// the hold (see ``heldSession``). ``LockLoss/fencingToken`` and ``fencingToken`` name a hold:
/// the server process's id in the high 32 bits, this process's acquisition count in the low.
public struct PostgresLock: EngineBackedLock, LossReportingLock, ReadWriteLocking {
    let engine: LockEngine<PostgresPrimitive>
    package var lockEngine: any LockEngineSurface { engine }

    /// Creates a lock object for the advisory lock called `name` on `server`. Nothing is sent to
    /// the server until it is acquired.
    ///
    /// - Parameters:
    ///   - name: The lock's name: any text of 1 to 4096 bytes without NUL characters. The key is
    ///     `hashtextextended(name, 0)`, computed by the server.
    ///   - server: Where to connect; the default reads the `PG*` environment variables.
    ///   - timeout: The default for `acquire()` and `withLock { }`; `nil` waits forever.
    ///   - isBlocking: `false` makes `acquire()` try exactly once.
    ///   - ownership: Whether holds belong to the acquiring thread or task, or to this object.
    ///   - isSingleton: Share one lock object per server, database and name in this process.
    ///   - heartbeatInterval: How often a holder checks on the server that it still holds the
    ///     lock (at least 100 ms); a session that stops answering is reported lost within four
    ///     intervals (a check may take two to answer), a closed connection at once.
    ///   - onLoss: Called (in a task of its own) when a hold of this lock object is found lost.
    ///     For a singleton, the `onLoss` of the first object made is the one called.
    /// - Throws: `FileLockError` `.invalidConfiguration` for an empty, over-long or NUL-carrying
    ///   name or an interval out of range, `.invalidTimeout` for a negative timeout; nothing is
    ///   sent to the server.
    public init(
        name: String, server: PostgresConnectionSettings? = nil, timeout: Duration? = nil, isBlocking: Bool = true,
        ownership: LockOwnership = .caller, isSingleton: Bool = false, heartbeatInterval: Duration = .seconds(2),
        onLoss: (@Sendable (LockLoss) -> Void)? = nil
    ) throws {
        let shown = String(truncatingUTF8: name, toBytes: 80) + (name.utf8.count > 80 ? "…" : "")
        guard !name.isEmpty else { throw PostgresLock.invalid(name, "a lock name must not be empty") }
        guard !name.utf8.contains(0) else {
            throw PostgresLock.invalid(shown, "a lock name must not contain a NUL character (PostgreSQL text cannot hold one)")
        }
        guard name.utf8.count <= 4096 else {
            throw PostgresLock.invalid(shown, "a lock name may have at most 4096 bytes (this one has \(name.utf8.count))")
        }
        try self.init(
            key: .name(name), server: server, timeout: timeout, isBlocking: isBlocking, ownership: ownership,
            isSingleton: isSingleton, heartbeatInterval: heartbeatInterval, onLoss: onLoss)
    }

    /// Creates a lock object for the advisory lock on the raw 64-bit `key` (as
    /// `pg_advisory_lock(key)` takes it).
    ///
    /// - Parameters: as ``init(name:server:timeout:isBlocking:ownership:isSingleton:heartbeatInterval:onLoss:)``.
    public init(
        key: Int64, server: PostgresConnectionSettings? = nil, timeout: Duration? = nil, isBlocking: Bool = true,
        ownership: LockOwnership = .caller, isSingleton: Bool = false, heartbeatInterval: Duration = .seconds(2),
        onLoss: (@Sendable (LockLoss) -> Void)? = nil
    ) throws {
        try self.init(
            key: .raw(key), server: server, timeout: timeout, isBlocking: isBlocking, ownership: ownership,
            isSingleton: isSingleton, heartbeatInterval: heartbeatInterval, onLoss: onLoss)
    }

    init(
        key: AdvisoryKey, server: PostgresConnectionSettings?, timeout: Duration?, isBlocking: Bool,
        ownership: LockOwnership, isSingleton: Bool, heartbeatInterval: Duration, onLoss: (@Sendable (LockLoss) -> Void)?
    ) throws {
        guard heartbeatInterval >= .milliseconds(100), heartbeatInterval <= .seconds(3600) else {
            throw FileLockError(
                .invalidConfiguration, resource: .named(key.display),
                message: "heartbeatInterval \(heartbeatInterval) for lock '\(key.display)' must be between 100 ms and "
                    + "1 hour, for example .seconds(2)")
        }
        let settings = try server ?? PostgresConnectionSettings()
        let configuration = try LockConfiguration(
            defaultTimeout: timeout, isBlocking: isBlocking, pollInterval: .milliseconds(50), ownership: ownership,
            heartbeatInterval: heartbeatInterval
        ).validated(path: key.display)
        let primitive = PostgresPrimitive(
            key: key, settings: settings, heartbeatInterval: heartbeatInterval, reporter: LossReporter(callback: onLoss))
        engine = try LockEngine.make(
            primitive: primitive, configuration: configuration, key: "\(settings.lockSpace)#\(key.registryName)",
            isSingleton: isSingleton)
    }

    private static func invalid(_ name: String, _ why: String) -> FileLockError {
        FileLockError(.invalidConfiguration, resource: .named(name), message: "invalid lock name '\(name)': \(why)")
    }

    /// The lock's name, or `key N` for a raw key.
    public var name: String { engine.primitive.key.display }

    /// Where the lock lives.
    public var server: PostgresConnectionSettings { engine.primitive.settings }

    /// How often a holder checks that it still holds the lock.
    public var heartbeatInterval: Duration { engine.primitive.heartbeatInterval }

    /// The shared side: `lock.readLock.withLock { }` holds the lock shared
    /// (`pg_advisory_lock_shared`), beside other shared holders.
    public var readLock: Side { Side(engine: engine, mode: .shared) }

    /// The exclusive side, the same as the lock itself.
    public var writeLock: Side { Side(engine: engine, mode: .exclusive) }

    /// Who holds the lock now, from `pg_locks` and `pg_stat_activity` (the first when several
    /// share it); `nil` when free or when the server cannot be reached.
    public var holder: LockHolder? { engine.primitive.holders().first }

    /// Every session that holds the lock: the server process's id, the client's address,
    /// `application_name` (ours name the host and process, as `filelock 4242@build-07`) and since
    /// when (for ours, when the lock was granted; for others, when their session began).
    ///
    /// - Throws: `FileLockError` when the server cannot be asked.
    public func holders() async throws -> [LockHolder] {
        let primitive = engine.primitive
        do {
            return try await primitive.fetchHolders().get()
        } catch {
            throw PostgresErrors.lockError(error, key: primitive.key, settings: primitive.settings, doing: "look up")
        }
    }

    /// `holders()` for synchronous code (blocks the calling thread for a round trip).
    public func holdersNow() throws -> [LockHolder] {
        let primitive = engine.primitive
        do {
            return try primitive.fetchHolders().wait()
        } catch {
            throw PostgresErrors.lockError(error, key: primitive.key, settings: primitive.settings, doing: "look up")
        }
    }

    /// The server session holding the caller's hold (its backend process id) and the lock's
    /// 64-bit key; `nil` when the caller holds nothing here. A write in the same database can be
    /// made conditional on the hold:
    /// `... WHERE EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND pid = $pid AND granted
    /// AND classid::bigint = ($key >> 32) & 4294967295 AND objid::bigint = $key & 4294967295 AND objsubid = 1)`.
    public var heldSession: (backendPID: Int32, key: Int64)? {
        engine.holdOfCurrentOwner().map { ($0.session.backendPID, $0.key) }
    }

    /// The fencing token of the caller's hold (see the type's notes); `nil` when it holds nothing.
    public var fencingToken: UInt64? { engine.holdOfCurrentOwner()?.fencingToken }

    /// Throws `.lockLost` when the caller's hold was lost, judged by what is known locally (the
    /// connection closed, a heartbeat failed). ``verifyHold()`` asks the server.
    public func checkHold() throws { try throwIfHoldLost() }

    /// Asks the server whether the caller's hold stands (a round trip on its session): throws
    /// `.lockLost` when it does not (and reports the loss); returns when it stands or the caller
    /// holds nothing.
    public func verifyHold() async throws {
        try throwIfHoldLost()
        guard let hold = engine.holdOfCurrentOwner() else { return }
        try await engine.primitive.verify(hold)
        try throwIfHoldLost()
    }

    @discardableResult
    public func checkedRelease(force: Bool = false) throws -> Bool {
        try engine.checkedRelease(force: force)
    }

    public var losses: AsyncStream<LockLoss> { engine.primitive.reporter.stream() }

    /// Closes the idle connections this process keeps for `server` (they close by themselves
    /// after 10 s unused); held locks keep theirs.
    public static func closeIdleConnections(to server: PostgresConnectionSettings) {
        SessionPool.shared(for: server).closeIdle()
    }

    /// One mode of a ``PostgresLock`` as a lock of its own: everything ``CrossProcessLock`` and
    /// ``LossReportingLock`` offer, in that mode. `release` gives up only holds of this mode.
    public struct Side: LockSide, LossReportingLock {
        let engine: LockEngine<PostgresPrimitive>
        package var lockEngine: any LockEngineSurface { engine }
        /// `.shared` for the read (shared) side, `.exclusive` for the write side.
        public let mode: LockMode

        public func checkHold() throws { try throwIfHoldLost() }

        @discardableResult
        public func checkedRelease(force: Bool = false) throws -> Bool {
            try engine.checkedRelease(force: force, mode: mode)
        }

        public var losses: AsyncStream<LockLoss> { engine.primitive.reporter.stream() }
    }
}
