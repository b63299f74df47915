/// The engine as the lock kinds' shared surface uses it, without its primitive's type: a kind
/// outside this module (`PostgresLock`) conforms to `EngineBackedLock` through it, while the file
/// kinds' primitives stay internal.
package protocol LockEngineSurface: AnyObject, Sendable {
    var path: String { get }
    var configuration: LockConfiguration { get }
    var isLocked: Bool { get }
    var holdCount: Int { get }
    var isHeldByCurrentOwner: Bool { get }
    /// The first holder the primitive sees, or `nil`.
    var firstHolder: LockHolder? { get }
    func acquire(mode: LockMode, timeout: Duration?, cancelCheck: (() -> Bool)?) throws
    func acquire(mode: LockMode, timeout: Duration?) async throws
    func tryAcquire(mode: LockMode) throws -> Bool
    @discardableResult func release(force: Bool, mode: LockMode?) -> Bool
    @discardableResult func checkedRelease(force: Bool, mode: LockMode?) throws -> Bool
    @discardableResult func checkedReleaseFromTask(force: Bool, mode: LockMode?) async throws -> Bool
    func lossOfCurrentOwner(mode: LockMode?) -> LockLoss?
    func holdCount(mode: LockMode) -> Int
    var modeOfCurrentOwner: LockMode? { get }
}

extension LockEngine: LockEngineSurface {
    package var firstHolder: LockHolder? { primitive.holders().first }
}

/// A lock kind that is a primitive plugged into the shared lockEngine. Conforming types get the whole
/// `CrossProcessLock` surface from here, so each kind only says how it is built and what it adds.
package protocol EngineBackedLock: CrossProcessLock, Hashable {
    /// The kind's engine (`engine`, a `LockEngine` of the kind's primitive).
    var lockEngine: any LockEngineSurface { get }
    /// The mode this lock object acquires in (`.exclusive`, except a read-write lock's read side).
    var lockMode: LockMode { get }
    /// The only mode `release` gives up, or `nil` for any (a read-write lock's side releases only
    /// its own mode's holds).
    var releaseMode: LockMode? { get }
}

extension EngineBackedLock {
    package var lockMode: LockMode { .exclusive }

    package var releaseMode: LockMode? { nil }

    /// The lock file's path as given at construction.
    public var path: String { lockEngine.path }

    /// The timeout `acquire()` uses when none is passed; `nil` waits forever.
    public var defaultTimeout: Duration? { lockEngine.configuration.defaultTimeout }

    /// Whether `acquire()` waits at all.
    public var isBlocking: Bool { lockEngine.configuration.isBlocking }

    public func acquire(timeout: Duration?, cancelCheck: (() -> Bool)?) throws {
        try lockEngine.acquire(mode: lockMode, timeout: timeout, cancelCheck: cancelCheck)
    }

    public func acquire(timeout: Duration?) async throws {
        try await lockEngine.acquire(mode: lockMode, timeout: timeout)
    }

    public func tryAcquire() throws -> Bool {
        try lockEngine.tryAcquire(mode: lockMode)
    }

    @discardableResult
    public func release(force: Bool) -> Bool {
        lockEngine.release(force: force, mode: releaseMode)
    }

    /// `release()` from a task, with the file-system calls on the helper threads; throws
    /// `.lockLost` when the hold given up had been lost.
    func releaseOffThePool() async throws {
        try await lockEngine.checkedReleaseFromTask(force: false, mode: releaseMode)
    }


    /// Whether holds belong to the acquiring thread or task, or to this lock object.
    public var ownership: LockOwnership { lockEngine.configuration.ownership }

    public var isLocked: Bool { lockEngine.isLocked }

    public var holdCount: Int { lockEngine.holdCount }

    /// Whether the calling thread (or task) holds the lock through this object.
    public var isHeldByCaller: Bool { lockEngine.isHeldByCurrentOwner }

    public var holder: LockHolder? { lockEngine.firstHolder }

    /// Two values are equal when they are the same lock object (copies, or one singleton).
    public static func == (lhs: Self, rhs: Self) -> Bool { lhs.lockEngine === rhs.lockEngine }

    public func hash(into hasher: inout Hasher) { hasher.combine(ObjectIdentifier(lockEngine)) }
}

extension EngineBackedLock {
    /// What `LossReportingLock.checkHold()` does, for the kinds that conform.
    package func throwIfHoldLost() throws {
        if let loss = lockEngine.lossOfCurrentOwner(mode: releaseMode) { throw loss.error }
    }
}

/// One mode of a two-mode lock as a lock of its own (a read-write lock's `readLock` and
/// `writeLock`, a `PostgresLock`'s shared and exclusive sides): acquisitions take `mode`, and
/// `release` gives up only holds of this mode (`false` when the caller holds the other), while
/// `release(force: true)` drops this mode's holds of every thread.
package protocol LockSide: EngineBackedLock {
    /// `.shared` for the read (shared) side, `.exclusive` for the write side.
    var mode: LockMode { get }
}

extension LockSide {
    package var lockMode: LockMode { mode }

    package var releaseMode: LockMode? { mode }

    /// Whether this lock object holds the lock in this mode (for any of its threads or tasks).
    public var isLocked: Bool { lockEngine.holdCount(mode: mode) > 0 }

    /// How many unreleased acquisitions in this mode this lock object has.
    public var holdCount: Int { lockEngine.holdCount(mode: mode) }

    /// Whether the calling thread (or task) holds the lock in this mode.
    public var isHeldByCaller: Bool { lockEngine.modeOfCurrentOwner == mode }

    /// Two sides are equal when they are the same mode of the same lock object.
    public static func == (lhs: Self, rhs: Self) -> Bool { lhs.lockEngine === rhs.lockEngine && lhs.mode == rhs.mode }

    public func hash(into hasher: inout Hasher) {
        hasher.combine(ObjectIdentifier(lockEngine))
        hasher.combine(mode)
    }
}
