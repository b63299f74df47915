/// The surface every lock kind of this library offers: blocking, timed and non-blocking
/// acquisition, cancellation, reentrancy, forced release, scoped use in synchronous and `async`
/// code, and who holds the lock.
///
/// A lock is held by the thread that acquired it (or, in `async` code, by the task). The same
/// lock object acquired again by its holder counts up; another thread or task waits like any
/// other process. Locks made with `ownership: .lockObject` belong to the object instead (see
/// ``LockOwnership``).
public protocol CrossProcessLock: Sendable {
    /// The lock file's path as given at construction.
    var path: String { get }

    /// The timeout `acquire()` uses when none is passed; `nil` waits forever.
    var defaultTimeout: Duration? { get }

    /// Whether `acquire()` waits at all; `false` makes it try exactly once.
    var isBlocking: Bool { get }

    /// Acquires the lock for the calling thread, waiting at most `timeout`.
    ///
    /// - Parameters:
    ///   - timeout: How long to wait; `nil` waits forever, `.zero` tries exactly once.
    ///   - cancelCheck: Asked before each try and at every poll interval while waiting; returning
    ///     `true` ends the wait with `FileLockError.Code.cancelled`.
    /// - Throws: `FileLockError` with `.timedOut` (carrying how long it waited and the holder when
    ///   known), `.cancelled`, `.wouldDeadlock`, or a code for a bad path or system failure.
    func acquire(timeout: Duration?, cancelCheck: (() -> Bool)?) throws

    /// Acquires the lock for the current task without blocking a thread of the cooperative pool.
    ///
    /// - Parameter timeout: How long to wait; `nil` waits forever, `.zero` tries exactly once.
    /// - Throws: `CancellationError` when the task is cancelled while waiting (promptly: the wait
    ///   ends within microseconds), otherwise as the synchronous `acquire(timeout:cancelCheck:)`.
    func acquire(timeout: Duration?) async throws

    /// Tries once and never waits.
    ///
    /// - Returns: `true` when the caller now holds the lock (or already held it: the hold count
    ///   goes up), `false` when someone else holds it.
    /// - Throws: `FileLockError` for a bad path or a system failure, never for contention.
    func tryAcquire() throws -> Bool

    /// Gives up one hold of the caller; the lock is free for others when the last hold goes.
    ///
    /// With the default ``LockOwnership/caller`` ownership only the thread (or task) that acquired
    /// can release: a caller that holds nothing releases nothing and gets `false`, so a stray
    /// `release()` never drops another thread's lock. To end a hold from another thread, use
    /// `release(force: true)`, or create the lock with `ownership: .lockObject`.
    ///
    /// - Parameter force: Drop every hold of this object at once, whoever took them.
    /// - Returns: `false` when the caller held nothing here (nothing was released).
    @discardableResult
    func release(force: Bool) -> Bool

    /// Whether this lock object holds the lock (for any of its threads or tasks).
    var isLocked: Bool { get }

    /// How many unreleased acquisitions this lock object has.
    var holdCount: Int { get }

    /// Whether the calling thread (or task) holds the lock through this object.
    var isHeldByCaller: Bool { get }

    /// The first process holding the lock, or `nil` when it is free or the holder cannot be seen.
    var holder: LockHolder? { get }
}

extension CrossProcessLock {
    /// Acquires with the lock's default timeout (`nil`: forever), or tries once when the lock
    /// was made with `isBlocking: false`.
    ///
    /// - Throws: `FileLockError` as `acquire(timeout:cancelCheck:)`.
    public func acquire(cancelCheck: (() -> Bool)? = nil) throws {
        try acquire(timeout: isBlocking ? defaultTimeout : .zero, cancelCheck: cancelCheck)
    }

    /// Acquires with the lock's default timeout from `async` code.
    ///
    /// - Throws: `CancellationError` or `FileLockError` as `acquire(timeout:)`.
    public func acquire() async throws {
        try await acquire(timeout: isBlocking ? defaultTimeout : .zero)
    }

    /// Acquires the lock for the calling thread, waiting at most `timeout`, without a cancel check.
    ///
    /// - Throws: `FileLockError` as `acquire(timeout:cancelCheck:)`.
    @_disfavoredOverload
    public func acquire(timeout: Duration?) throws {
        try acquire(timeout: timeout, cancelCheck: nil)
    }

    /// Gives up one hold of the caller.
    ///
    /// - Returns: `false` when the caller held nothing here (see `release(force:)`).
    @discardableResult
    public func release() -> Bool {
        release(force: false)
    }

    /// Runs `body` while holding the lock, waiting at most `timeout`; releases even when `body` throws.
    ///
    /// - Throws: what `acquire(timeout:cancelCheck:)` throws, or what `body` throws.
    ///
    /// In `async` code the `async` form is chosen instead, so a task never blocks a thread of the
    /// cooperative pool while it waits.
    @_disfavoredOverload
    public func withLock<Result>(
        timeout: Duration?, cancelCheck: (() -> Bool)? = nil, _ body: () throws -> Result
    ) throws -> Result {
        try acquire(timeout: timeout, cancelCheck: cancelCheck)
        let result: Result
        do {
            result = try body()
        } catch {
            release()
            throw error
        }
        try releaseEndingScope()
        return result
    }

    /// Releases the hold a scope took; for a kind that can lose a hold (a lease), throws
    /// `.lockLost` when it was lost while the body ran: the body's work ran without the lock.
    private func releaseEndingScope() throws {
        if let reporting = self as? any LossReportingLock {
            try reporting.checkedRelease(force: false)
        } else {
            release()
        }
    }

    /// Runs `body` while holding the lock, with the lock's default timeout.
    @_disfavoredOverload
    public func withLock<Result>(_ body: () throws -> Result) throws -> Result {
        try withLock(timeout: isBlocking ? defaultTimeout : .zero, body)
    }

    /// Runs `body` while the current task holds the lock; releases even when `body` throws.
    ///
    /// - Throws: `CancellationError` when the task is cancelled while waiting, `FileLockError` as
    ///   `acquire(timeout:)`, or what `body` throws.
    /// The body runs on the caller's actor (if any); only the wait happens elsewhere.
    nonisolated(nonsending) public func withLock<Result>(
        timeout: Duration?, _ body: nonisolated(nonsending) () async throws -> Result
    ) async throws -> Result {
        try await acquire(timeout: timeout)
        let result: Result
        do {
            result = try await body()
        } catch {
            try? await releaseFromTask()
            throw error
        }
        try await releaseFromTask()
        return result
    }

    /// Releases one hold of the current task; for this library's kinds the release's file-system
    /// calls (a marker's rename and unlink, on NFS perhaps slow) run off the cooperative pool.
    /// Throws `.lockLost` as `releaseEndingScope`.
    private func releaseFromTask() async throws {
        if let lock = self as? any EngineBackedLock {
            try await lock.releaseOffThePool()
        } else if let reporting = self as? any LossReportingLock {
            try reporting.checkedRelease(force: false)
        } else {
            release()
        }
    }

    /// Runs `body` while the current task holds the lock, with the lock's default timeout.
    nonisolated(nonsending) public func withLock<Result>(
        _ body: nonisolated(nonsending) () async throws -> Result
    ) async throws -> Result {
        try await withLock(timeout: isBlocking ? defaultTimeout : .zero, body)
    }
}

/// A lock whose hold can end without its holder releasing it: a lease kept alive by heartbeats
/// (``SoftReadWriteLock``, ``SoftFileLease``), which another process evicts once its heartbeats
/// stop reaching the filesystem. Such a holder is told, never silently continues:
///
/// - the lock's `onLoss` callback and its ``losses`` sequence report each loss as it is found
///   (on a heartbeat thread, within a heartbeat interval, a lease's within two; a hold whose
///   heartbeats are held up reads as lost once they are overdue);
/// - ``checkHold()`` throws `.lockLost` (call it before a write that must not happen unlocked);
/// - `withLock { }` throws `.lockLost` after its body when the hold was lost meanwhile, and so do
///   ``checkedRelease(force:)`` and a re-entrant acquire.
public protocol LossReportingLock: CrossProcessLock {
    /// Throws `FileLockError` `.lockLost` when the caller's hold was lost (evicted, taken over);
    /// returns when it stands or the caller holds nothing.
    func checkHold() throws

    /// Gives up one hold as `release(force:)` does, then throws `.lockLost` when that hold had
    /// been lost: the work done under it ran without the lock.
    ///
    /// - Returns: `false` when the caller held nothing here.
    @discardableResult
    func checkedRelease(force: Bool) throws -> Bool

    /// Every loss of a hold of this lock object from now on, as it is found. Each access makes a
    /// new sequence (any number may listen); it keeps the newest 64 unread losses.
    var losses: AsyncStream<LockLoss> { get }
}
