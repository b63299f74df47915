/// A lock kind that is a primitive plugged into the shared engine. Conforming types get the whole
/// `CrossProcessLock` surface from here, so each kind only says how it is built and what it adds.
protocol EngineBackedLock: CrossProcessLock, Hashable {
    associatedtype Primitive: LockPrimitive
    var engine: LockEngine<Primitive> { get }
    /// The mode this lock object acquires in (`.exclusive`, except a read-write lock's read side).
    var lockMode: LockMode { get }
    /// The only mode `release` gives up, or `nil` for any (a read-write lock's side releases only
    /// its own mode's holds).
    var releaseMode: LockMode? { get }
}

extension EngineBackedLock {
    var lockMode: LockMode { .exclusive }

    var releaseMode: LockMode? { nil }

    /// The lock file's path as given at construction.
    public var path: String { engine.path }

    /// The timeout `acquire()` uses when none is passed; `nil` waits forever.
    public var defaultTimeout: Duration? { engine.configuration.defaultTimeout }

    /// Whether `acquire()` waits at all.
    public var isBlocking: Bool { engine.configuration.isBlocking }

    public func acquire(timeout: Duration?, cancelCheck: (() -> Bool)?) throws {
        try engine.acquire(mode: lockMode, timeout: timeout, cancelCheck: cancelCheck)
    }

    public func acquire(timeout: Duration?) async throws {
        try await engine.acquire(mode: lockMode, timeout: timeout)
    }

    public func tryAcquire() throws -> Bool {
        try engine.tryAcquire(mode: lockMode)
    }

    @discardableResult
    public func release(force: Bool) -> Bool {
        engine.release(force: force, mode: releaseMode)
    }

    /// `release()` from a task, with the file-system calls on the helper threads; throws
    /// `.lockLost` when the hold given up had been lost.
    func releaseOffThePool() async throws {
        try await engine.checkedReleaseFromTask(force: false, mode: releaseMode)
    }


    /// Whether holds belong to the acquiring thread or task, or to this lock object.
    public var ownership: LockOwnership { engine.configuration.ownership }

    public var isLocked: Bool { engine.isLocked }

    public var holdCount: Int { engine.holdCount }

    /// Whether the calling thread (or task) holds the lock through this object.
    public var isHeldByCaller: Bool { engine.isHeldByCurrentOwner }

    public var holder: LockHolder? { engine.primitive.holders().first }

    /// Two values are equal when they are the same lock object (copies, or one singleton).
    public static func == (lhs: Self, rhs: Self) -> Bool { lhs.engine === rhs.engine }

    public func hash(into hasher: inout Hasher) { hasher.combine(ObjectIdentifier(engine)) }
}

extension EngineBackedLock {
    /// What `LossReportingLock.checkHold()` does, for the kinds that conform.
    func throwIfHoldLost() throws {
        if let loss = engine.lossOfCurrentOwner(mode: releaseMode) { throw loss.error }
    }
}
