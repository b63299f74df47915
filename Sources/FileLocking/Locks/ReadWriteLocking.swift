/// The surface both read-write kinds share (``ReadWriteLock``, ``SoftReadWriteLock``): each mode
/// as a lock of its own (``readLock``, ``writeLock``), and the read and write forms of acquiring
/// and of scoped use, synchronous and `async`, built on them.
public protocol ReadWriteLocking: Sendable {
    /// One mode of the lock as a ``CrossProcessLock`` of its own.
    associatedtype Side: CrossProcessLock
    /// The read (shared) side: `lock.readLock.withLock { }` is `lock.withReadLock { }`.
    var readLock: Side { get }
    /// The write (exclusive) side: `lock.writeLock.withLock { }` is `lock.withWriteLock { }`.
    var writeLock: Side { get }
}

extension ReadWriteLocking {
    // MARK: Acquiring

    /// Takes the read lock for the calling thread, waiting at most `timeout` (`nil`: forever).
    ///
    /// - Parameter cancelCheck: Asked before each try and at every poll interval while waiting;
    ///   `true` ends the wait with `.cancelled`.
    /// - Throws: `FileLockError` with `.timedOut` (naming the writer in the way), `.cancelled`,
    ///   `.modeChangeNotAllowed` when the caller holds the write lock, or a code for a bad path.
    public func acquireRead(timeout: Duration?, cancelCheck: (() -> Bool)? = nil) throws {
        try readLock.acquire(timeout: timeout, cancelCheck: cancelCheck)
    }

    /// Takes the read lock with the lock's default timeout.
    public func acquireRead() throws {
        try readLock.acquire()
    }

    /// Takes the write lock for the calling thread, waiting at most `timeout` (`nil`: forever):
    /// first for another writer to finish, then for the readers inside to leave (no new reader
    /// gets in meanwhile).
    ///
    /// - Throws: `FileLockError` with `.timedOut` (naming the writer or a reader), `.cancelled`,
    ///   `.modeChangeNotAllowed` when the caller holds the read lock, or a code for a bad path
    ///   (and for a kernel ``ReadWriteLock`` `.permissionDenied` when this user may only read the
    ///   lock file; for a ``SoftReadWriteLock`` `.lockLost` when a hold it re-enters was lost).
    public func acquireWrite(timeout: Duration?, cancelCheck: (() -> Bool)? = nil) throws {
        try writeLock.acquire(timeout: timeout, cancelCheck: cancelCheck)
    }

    /// Takes the write lock with the lock's default timeout.
    public func acquireWrite() throws {
        try writeLock.acquire()
    }

    /// Takes the read lock for the current task without blocking a thread of the cooperative pool.
    ///
    /// - Throws: `CancellationError` when the task is cancelled while waiting, else as
    ///   ``acquireRead(timeout:cancelCheck:)``.
    public func acquireRead(timeout: Duration?) async throws {
        try await readLock.acquire(timeout: timeout)
    }

    /// Takes the read lock for the current task with the lock's default timeout.
    public func acquireRead() async throws {
        try await readLock.acquire()
    }

    /// Takes the write lock for the current task without blocking a thread of the cooperative pool.
    ///
    /// - Throws: `CancellationError` when the task is cancelled while waiting, else as
    ///   ``acquireWrite(timeout:cancelCheck:)``.
    public func acquireWrite(timeout: Duration?) async throws {
        try await writeLock.acquire(timeout: timeout)
    }

    /// Takes the write lock for the current task with the lock's default timeout.
    public func acquireWrite() async throws {
        try await writeLock.acquire()
    }

    /// Tries once for the read lock; `false` when a writer holds or waits for it.
    public func tryAcquireRead() throws -> Bool {
        try readLock.tryAcquire()
    }

    /// Tries once for the write lock; `false` when anyone else holds it.
    public func tryAcquireWrite() throws -> Bool {
        try writeLock.tryAcquire()
    }

    // MARK: Scoped use

    /// Runs `body` holding the read lock, waiting at most `timeout`; releases even when it throws.
    @_disfavoredOverload
    public func withReadLock<Result>(
        timeout: Duration?, cancelCheck: (() -> Bool)? = nil, _ body: () throws -> Result
    ) throws -> Result {
        try readLock.withLock(timeout: timeout, cancelCheck: cancelCheck, body)
    }

    /// Runs `body` holding the read lock, with the lock's default timeout.
    @_disfavoredOverload
    public func withReadLock<Result>(_ body: () throws -> Result) throws -> Result {
        try readLock.withLock(body)
    }

    /// Runs `body` holding the write lock, waiting at most `timeout`; releases even when it throws.
    @_disfavoredOverload
    public func withWriteLock<Result>(
        timeout: Duration?, cancelCheck: (() -> Bool)? = nil, _ body: () throws -> Result
    ) throws -> Result {
        try writeLock.withLock(timeout: timeout, cancelCheck: cancelCheck, body)
    }

    /// Runs `body` holding the write lock, with the lock's default timeout.
    @_disfavoredOverload
    public func withWriteLock<Result>(_ body: () throws -> Result) throws -> Result {
        try writeLock.withLock(body)
    }

    /// Runs `body` while the current task holds the read lock; releases even when it throws. The
    /// body runs on the caller's actor (if any); only the wait happens elsewhere.
    nonisolated(nonsending) public func withReadLock<Result>(
        timeout: Duration?, _ body: nonisolated(nonsending) () async throws -> Result
    ) async throws -> Result {
        try await readLock.withLock(timeout: timeout, body)
    }

    /// Runs `body` while the current task holds the read lock, with the lock's default timeout.
    nonisolated(nonsending) public func withReadLock<Result>(
        _ body: nonisolated(nonsending) () async throws -> Result
    ) async throws -> Result {
        try await readLock.withLock(body)
    }

    /// Runs `body` while the current task holds the write lock; releases even when it throws.
    nonisolated(nonsending) public func withWriteLock<Result>(
        timeout: Duration?, _ body: nonisolated(nonsending) () async throws -> Result
    ) async throws -> Result {
        try await writeLock.withLock(timeout: timeout, body)
    }

    /// Runs `body` while the current task holds the write lock, with the lock's default timeout.
    nonisolated(nonsending) public func withWriteLock<Result>(
        _ body: nonisolated(nonsending) () async throws -> Result
    ) async throws -> Result {
        try await writeLock.withLock(body)
    }
}
