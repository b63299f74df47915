import Synchronization

/// The settings every lock kind shares, fixed at construction.
package struct LockConfiguration: Sendable, Equatable {
    /// Used by `acquire()` without a timeout argument; `nil` waits forever.
    var defaultTimeout: Duration?
    /// `false` makes `acquire()` try exactly once.
    var isBlocking: Bool
    /// How often a cancel check is asked, and the longest pause of a polling wait.
    var pollInterval: Duration
    /// Permission bits for files the lock creates; `nil` leaves them to the umask.
    var filePermissions: UInt32?
    /// Marker locks: the age after which a marker may be broken although its holder lives.
    var lifetime: Duration? = nil
    /// Whether holds belong to the acquiring thread or task, or to the lock object.
    var ownership: LockOwnership = .caller
    /// Heartbeat kinds: how often a holder refreshes, and when an unrefreshed one is stale.
    var heartbeat: HeartbeatSettings? = nil

    init(
        defaultTimeout: Duration?, isBlocking: Bool, pollInterval: Duration, filePermissions: UInt32?,
        lifetime: Duration? = nil, ownership: LockOwnership = .caller, heartbeat: HeartbeatSettings? = nil
    ) {
        self.defaultTimeout = defaultTimeout
        self.isBlocking = isBlocking
        self.pollInterval = pollInterval
        self.filePermissions = filePermissions
        self.lifetime = lifetime
        self.ownership = ownership
        self.heartbeat = heartbeat
    }

    /// The settings of a lock that is no file (a lock on a server): no permissions or lifetime;
    /// `heartbeatInterval` is how often its holders check in (part of what singletons must agree on).
    package init(
        defaultTimeout: Duration?, isBlocking: Bool, pollInterval: Duration, ownership: LockOwnership,
        heartbeatInterval: Duration? = nil
    ) {
        self.init(
            defaultTimeout: defaultTimeout, isBlocking: isBlocking, pollInterval: pollInterval, filePermissions: nil,
            ownership: ownership,
            heartbeat: heartbeatInterval.map { HeartbeatSettings(interval: $0, staleThreshold: $0 * 3) })
    }

    package func validated(path: String) throws -> LockConfiguration {
        if let defaultTimeout { try LockEngineSupport.validate(timeout: defaultTimeout, path: path) }
        if let filePermissions, filePermissions > 0o7777 {
            throw FileLockError(
                .invalidConfiguration, path: path,
                message: "file permissions 0o\(String(filePermissions, radix: 8)) for lock '\(path)' are not "
                    + "permission bits; use a value such as 0o644")
        }
        // Shorter intervals would only spin: waits for kernel locks end in the kernel, marker
        // waits wake through a folder watch, and a cancel check every millisecond is prompt.
        guard pollInterval >= .milliseconds(1) else {
            throw FileLockError(
                .invalidConfiguration, path: path,
                message: "poll interval \(pollInterval) for lock '\(path)' must be at least 1 ms (for example "
                    + ".milliseconds(50))")
        }
        return self
    }
}

extension LockConfiguration {
    var summary: String {
        var parts = ["timeout: \(defaultTimeout.map { "\($0)" } ?? "nil")", "isBlocking: \(isBlocking)"]
        parts.append("pollInterval: \(pollInterval)")
        parts.append("filePermissions: \(filePermissions.map { "0o" + String($0, radix: 8) } ?? "nil")")
        parts.append("lifetime: \(lifetime.map { "\($0)" } ?? "nil")")
        parts.append("ownership: .\(ownership)")
        if let heartbeat {
            parts.append("heartbeatInterval: \(heartbeat.interval), staleThreshold: \(heartbeat.staleThreshold)")
        }
        return parts.joined(separator: ", ")
    }
}

/// How often a heartbeat kind's holder refreshes its record, and how long an unrefreshed record
/// stands before others may evict it.
struct HeartbeatSettings: Sendable, Equatable {
    var interval: Duration
    var staleThreshold: Duration

    /// Checks `0 < interval < staleThreshold` and `pollInterval < staleThreshold`, as Python's.
    static func validated(
        interval: Duration, staleThreshold: Duration?, pollInterval: Duration, path: String,
        names: (interval: String, threshold: String) = ("heartbeatInterval", "staleThreshold")
    ) throws -> HeartbeatSettings {
        guard interval > .zero, interval < .seconds(Int64(Int32.max)) else {
            throw FileLockError(
                .invalidConfiguration, path: path,
                message: "\(names.interval) \(interval) for lock '\(path)' must be positive (and below 68 years), for example "
                    + ".seconds(30)")
        }
        let threshold = staleThreshold ?? interval * 3
        guard threshold > interval, threshold < .seconds(Int64(Int32.max)) else {
            throw FileLockError(
                .invalidConfiguration, path: path,
                message: "\(names.threshold) \(threshold) for lock '\(path)' must exceed \(names.interval) (\(interval)): a "
                    + "holder must refresh more than once before it counts as stale (the default is three intervals)")
        }
        guard pollInterval < threshold else {
            throw FileLockError(
                .invalidConfiguration, path: path,
                message: "pollInterval \(pollInterval) for lock '\(path)' must be below \(names.threshold) (\(threshold)): a "
                    + "waiter refreshes its record at every poll")
        }
        return HeartbeatSettings(interval: interval, staleThreshold: threshold)
    }
}

enum LockEngineSupport {
    /// How often in a row a primitive may ask to start over before the engine gives up.
    static let maximumRestarts = 100

    static func validate(timeout: Duration, path: String) throws {
        if timeout < .zero { throw FileLockError.invalidTimeout(path: path, "\(timeout)") }
    }
}

/// The one acquisition engine: turns a primitive's "try once / wait / release" into blocking,
/// timed, non-blocking and cancellable acquisition, reentrancy per thread or task, mutual
/// exclusion between threads and tasks of one process, and self-deadlock detection.
///
/// Each owner (thread or task) that acquires gets its own `Hold` from the primitive: for kernel
/// locks its own open file, so the kernel itself excludes two threads using one lock object and
/// wakes the next one on release. A second acquire by the same owner only counts up.
package final class LockEngine<Primitive: LockPrimitive>: Sendable {
    struct HoldRecord {
        var owner: Owner
        var hold: Primitive.Hold
        var count: Int
        var mode: LockMode
        /// The fork generation that took it: a child forked without exec must not release
        /// (unlock, unlink) what its parent still holds.
        var generation: Int
    }

    package let primitive: Primitive
    package let configuration: LockConfiguration
    let node: PathNode
    private let holds = Mutex<[HoldRecord]>([])

    init(primitive: Primitive, configuration: LockConfiguration, node: PathNode) {
        self.primitive = primitive
        self.configuration = configuration
        self.node = node
    }

    deinit {
        // A lock object that goes away releases what it still holds, like closing a file.
        let remaining = holds.withLock { records in
            defer { records.removeAll() }
            return records
        }
        for record in remaining { finishRelease(record) }
    }

    package var path: String { primitive.path }

    /// `error` about this engine's lock as its primitive names it (a lock file, or a named lock
    /// on a server).
    func aboutThisLock(_ error: FileLockError) -> FileLockError {
        var error = error
        error.resource = primitive.resource
        return error
    }

    /// A new engine for a lock that is no file, or with `isSingleton` the one engine of this kind
    /// for `key` (a string that names the lock wherever it lives, such as a server and a name).
    package static func make(
        primitive: Primitive, configuration: LockConfiguration, key: String, isSingleton: Bool
    ) throws -> LockEngine {
        try make(primitive: primitive, configuration: configuration, canonicalPath: CPath(key), isSingleton: isSingleton)
    }

    /// A new engine, or with `isSingleton` the one engine of this kind for `canonicalPath`.
    static func make(
        primitive: Primitive, configuration: LockConfiguration, canonicalPath: CPath, isSingleton: Bool
    ) throws -> LockEngine {
        let node = PathRegistry.node(for: canonicalPath)
        guard isSingleton else { return LockEngine(primitive: primitive, configuration: configuration, node: node) }
        let kind = ObjectIdentifier(Primitive.self)
        return try node.state.withLock { state in
            if let existing = state.singletons[kind]?.object as? LockEngine {
                guard existing.configuration == configuration else {
                    throw FileLockError(
                        .invalidConfiguration, resource: primitive.resource,
                        message: "a singleton lock for '\(canonicalPath)' already exists with other settings "
                            + "(\(existing.configuration.summary)); create every singleton of one path with the "
                            + "same settings (asked for \(configuration.summary))")
                }
                return existing
            }
            let engine = LockEngine(primitive: primitive, configuration: configuration, node: node)
            state.singletons[kind] = WeakReference(object: engine)
            return engine
        }
    }

    // MARK: State

    // Holds taken before a fork belong to the parent: in a forked child they count for nothing
    // (the child's thread has its parent's identity, so matching the owner alone would let the
    // child run the critical section together with its parent).

    package var isLocked: Bool {
        let generation = ForkGeneration.current
        return holds.withLock { $0.contains { $0.generation == generation } }
    }

    package var holdCount: Int {
        let generation = ForkGeneration.current
        return holds.withLock { $0.reduce(0) { $0 + ($1.generation == generation ? $1.count : 0) } }
    }

    package var isHeldByCurrentOwner: Bool {
        let owner = currentOwner
        let generation = ForkGeneration.current
        return holds.withLock { $0.contains { $0.owner == owner && $0.generation == generation } }
    }

    /// The mode in which the calling thread (or task) holds the lock here, or `nil`.
    package var modeOfCurrentOwner: LockMode? {
        let owner = currentOwner
        let generation = ForkGeneration.current
        return holds.withLock { $0.first { $0.owner == owner && $0.generation == generation }?.mode }
    }

    /// How many unreleased acquisitions in `mode` this lock object has (in this process).
    package func holdCount(mode: LockMode) -> Int {
        let generation = ForkGeneration.current
        return holds.withLock { $0.reduce(0) { $0 + ($1.generation == generation && $1.mode == mode ? $1.count : 0) } }
    }

    /// Who acquires or releases now: the calling thread or task, or with `.lockObject` ownership
    /// this lock object whoever calls.
    private var currentOwner: Owner {
        guard configuration.ownership == .caller else {
            return Owner(kind: .lockObject, identifier: UInt(bitPattern: ObjectIdentifier(self)))
        }
        return Owner.current
    }

    /// Counts up when `owner` already holds the lock in `mode` (in this process, not a parent
    /// before fork).
    ///
    /// - Throws: `.modeChangeNotAllowed` when it holds the lock in the other mode: a shared
    ///   holder asking for exclusive (an upgrade) would wait for itself among the other readers,
    ///   and an exclusive holder asking for shared (a downgrade) would give up the exclusion it
    ///   counted on; as in Python `filelock`, release first, then acquire in the other mode.
    private func reenter(_ owner: Owner, mode: LockMode) throws -> Bool {
        let generation = ForkGeneration.current
        let (held, loss): (LockMode?, LockLoss?) = holds.withLock { records in
            guard let index = records.firstIndex(where: { $0.owner == owner && $0.generation == generation }) else {
                return (nil, nil)
            }
            if let loss = primitive.loss(of: records[index].hold) { return (records[index].mode, loss) }
            if records[index].mode == mode { records[index].count += 1 }
            return (records[index].mode, nil)
        }
        guard let held else { return false }
        // A hold that was lost is not counted up: the caller must learn it, release, and start over.
        if let loss { throw loss.error }
        guard held == mode else {
            let (wanted, have) = mode == .exclusive ? ("exclusive", "shared") : ("shared", "exclusive")
            let holderName = configuration.ownership == .caller ? "this thread or task" : "this lock object (ownership: .lockObject)"
            throw FileLockError(
                .modeChangeNotAllowed, resource: primitive.resource,
                message: "cannot take lock '\(path)' \(wanted): \(holderName) already holds it \(have) "
                    + "(\(mode == .exclusive ? "an upgrade" : "a downgrade"), which is not allowed); release it "
                    + "first, then acquire it \(wanted)")
        }
        return true
    }

    private func record(_ hold: Primitive.Hold, owner: Owner, mode: LockMode) {
        let generation = ForkGeneration.current
        node.recordHolding(
            owner: owner, lockObject: ObjectIdentifier(self), kind: ObjectIdentifier(Primitive.self), generation: generation)
        holds.withLock { $0.append(HoldRecord(owner: owner, hold: hold, count: 1, mode: mode, generation: generation)) }
    }

    private func validate(timeout: Duration) throws {
        do {
            try LockEngineSupport.validate(timeout: timeout, path: path)
        } catch let error as FileLockError {
            throw aboutThisLock(error)
        }
    }

    // MARK: Acquire (synchronous)

    /// Acquires for the calling thread (or task), waiting at most `timeout` (`nil` forever).
    package func acquire(mode: LockMode, timeout: Duration?, cancelCheck: (() -> Bool)?) throws {
        if let timeout { try validate(timeout: timeout) }
        let owner = currentOwner
        if try reenter(owner, mode: mode) { return }
        let hold = try obtain(LockRequest(mode), timeout: timeout, cancelCheck: cancelCheck, owner: owner)
        record(hold, owner: owner, mode: mode)
    }

    /// Tries once for the calling thread (or task); `false` when held elsewhere.
    package func tryAcquire(mode: LockMode) throws -> Bool {
        let owner = currentOwner
        if try reenter(owner, mode: mode) { return true }
        guard let hold = try tryObtain(LockRequest(mode)) else { return false }
        record(hold, owner: owner, mode: mode)
        return true
    }

    /// Gets a hold for `request` on the calling thread, waiting at most `timeout`, without
    /// recording it: the hold is the caller's to keep and release (`ByteRangeLock`, whose ranges
    /// the kernel keeps for its open file, uncounted). `owner`: whose self-deadlock to look for.
    func obtain(
        _ request: LockRequest, timeout: Duration?, cancelCheck: (() -> Bool)?, owner: Owner? = nil
    ) throws -> Primitive.Hold {
        if let timeout { try validate(timeout: timeout) }
        let start = MonotonicInstant.now
        let (attempt, hold) = try tryAcquiring(request)
        if let hold { return hold }
        let schedule = schedule(request, start: start, timeout: timeout, mustNoticeCancellation: cancelCheck != nil)
        try checkBeforeWaiting(attempt, schedule, owner: owner, canBeCancelled: cancelCheck != nil)
        return try wait(attempt, schedule, cancelCheck: cancelCheck, token: nil)
    }

    /// Tries once for `request`, without recording the hold; `nil` when held elsewhere.
    func tryObtain(_ request: LockRequest) throws -> Primitive.Hold? {
        let (attempt, hold) = try tryAcquiring(request)
        if hold == nil { primitive.abandon(attempt) }
        return hold
    }

    /// Begins and tries once, restarting while the primitive asks to (or finds the lock file
    /// gone: `LockFileGone`). Returns the attempt and its hold when acquired, or the attempt alone
    /// when busy.
    private func tryAcquiring(_ request: LockRequest) throws -> (Primitive.Attempt, Primitive.Hold?) {
        var restarts = 0
        while true {
            let attempt: Primitive.Attempt
            do {
                attempt = try primitive.begin(request)
            } catch is LockFileGone {
                try WaitSchedule.count(&restarts, path: path)
                continue
            }
            let outcome: AttemptOutcome<Primitive.Hold>
            do {
                outcome = try primitive.tryOnce(attempt, request)
            } catch is LockFileGone {
                outcome = .restart
            } catch {
                primitive.abandon(attempt)
                throw error
            }
            switch outcome {
            case .acquired(let hold): return (attempt, hold)
            case .busy: return (attempt, nil)
            case .restart:
                primitive.abandon(attempt)
                try WaitSchedule.count(&restarts, path: path)
            }
        }
    }

    /// `tryAcquiring` for a primitive that suspends instead of blocking, from a task: `begin` where the task runs (it must
    /// not block), the try suspended on the server's answer.
    private func tryAcquiringFromTask(_ request: LockRequest) async throws -> (Primitive.Attempt, Primitive.Hold?) {
        var restarts = 0
        while true {
            let attempt = try primitive.begin(request)
            let outcome: AttemptOutcome<Primitive.Hold>
            do {
                outcome = try await primitive.tryOnceFromTask(attempt, request)
            } catch {
                primitive.abandon(attempt)
                throw error
            }
            switch outcome {
            case .acquired(let hold): return (attempt, hold)
            case .busy: return (attempt, nil)
            case .restart:
                primitive.abandon(attempt)
                try WaitSchedule.count(&restarts, path: path)
            }
        }
    }

    /// The checks between a failed try and a wait: zero timeout, self-deadlock (only for a wait
    /// that nothing but the lock can end: no timeout, no cancel check).
    private func checkBeforeWaiting(
        _ attempt: Primitive.Attempt, _ schedule: WaitSchedule, owner: Owner?, canBeCancelled: Bool
    ) throws {
        if schedule.timeout == .zero {
            primitive.abandon(attempt)
            throw timedOutError(schedule, triedOnce: true)
        }
        if let owner, schedule.timeout == nil, !canBeCancelled,
            node.ownerHoldsThroughAnotherObject(owner, lockObject: ObjectIdentifier(self), kind: ObjectIdentifier(Primitive.self))
        {
            primitive.abandon(attempt)
            throw aboutThisLock(FileLockError.wouldDeadlock(path: path))
        }
    }

    // MARK: Acquire (async)

    /// Acquires for the current task without blocking a thread of the cooperative pool (see
    /// `waitFromTask`).
    package func acquire(mode: LockMode, timeout: Duration?) async throws {
        if let timeout { try validate(timeout: timeout) }
        try Task.checkCancellation()
        let owner = currentOwner
        if try reenter(owner, mode: mode) { return }
        let hold = try await obtain(LockRequest(mode), timeout: timeout, owner: owner)
        record(hold, owner: owner, mode: mode)
    }

    /// `obtain` from a task: the tries on the helper threads, the wait as `waitFromTask`.
    func obtain(_ request: LockRequest, timeout: Duration?, owner: Owner? = nil) async throws -> Primitive.Hold {
        if let timeout { try validate(timeout: timeout) }
        try Task.checkCancellation()
        let start = MonotonicInstant.now
        let (attempt, hold): (Primitive.Attempt, Primitive.Hold?)
        if primitive.suspendsInsteadOfBlocking {
            (attempt, hold) = try await tryAcquiringFromTask(request)
        } else if primitive.triesWithoutBlocking {
            (attempt, hold) = try tryAcquiring(request)
        } else {
            (attempt, hold) = try await offThePool { [self] in try tryAcquiring(request) }
        }
        if let hold { return hold }
        // A task can be cancelled, but nothing cancels it in a self-deadlock: still report it.
        // Only a try (zero timeout) reads the lock file here (to name the holder): only then the
        // hop to a helper thread, and whatever ends it gives up the attempt (an open file).
        let schedule = schedule(request, start: start, timeout: timeout, mustNoticeCancellation: false)
        if timeout == .zero && !primitive.triesWithoutBlocking {
            do {
                try await offThePool { [self] in
                    try checkBeforeWaiting(attempt, schedule, owner: owner, canBeCancelled: false)
                }
            } catch is CancellationError {
                abandonFromTask(attempt)
                throw CancellationError()
            }
        } else {
            try checkBeforeWaiting(attempt, schedule, owner: owner, canBeCancelled: false)
        }
        return try await waitFromTask(attempt, schedule)
    }

    // MARK: Release

    /// Releases one hold of the calling owner; a caller that holds nothing releases nothing (it
    /// must not drop another thread's lock) and gets `false`. `force` drops every hold of every
    /// owner (holds inherited across fork are let go without touching the parent's lock).
    @discardableResult
    package func release(force: Bool, mode: LockMode? = nil) -> Bool {
        let (found, released) = takeHolds(force: force, owner: currentOwner, mode: mode)
        for record in released { finishRelease(record) }
        return found
    }

    /// `release(force:mode:)`, then throws the loss (`.lockLost`) if a hold it gave up (or
    /// counted down) had been lost: the caller's work under it ran without the lock.
    @discardableResult
    package func checkedRelease(force: Bool, mode: LockMode? = nil) throws -> Bool {
        let hold = holdOfCurrentOwner(mode: mode)
        let found = release(force: force, mode: mode)
        // Looked at after the release: releasing may be what finds the loss (a marker displaced).
        if found, let hold, let loss = primitive.loss(of: hold) { throw loss.error }
        return found
    }

    /// `checkedRelease` from a task, the release's file-system calls on the helper threads.
    @discardableResult
    package func checkedReleaseFromTask(force: Bool, mode: LockMode? = nil) async throws -> Bool {
        let hold = holdOfCurrentOwner(mode: mode)
        let found = await releaseFromTask(force: force, mode: mode)
        if found, let hold, let loss = primitive.loss(of: hold) { throw loss.error }
        return found
    }

    /// The loss of the calling owner's hold (in `mode`, if given), or `nil` while it stands or
    /// when it holds nothing.
    package func lossOfCurrentOwner(mode: LockMode? = nil) -> LockLoss? {
        let owner = currentOwner
        let generation = ForkGeneration.current
        return holds.withLock { records in
            records.first { $0.owner == owner && $0.generation == generation && (mode == nil || $0.mode == mode) }
                .flatMap { primitive.loss(of: $0.hold) }
        }
    }

    /// Every hold of this object (this process) and its owner's mode, for a kind's holder list.
    package var currentHolds: [(mode: LockMode, hold: Primitive.Hold)] {
        let generation = ForkGeneration.current
        return holds.withLock { $0.filter { $0.generation == generation }.map { ($0.mode, $0.hold) } }
    }

    /// The hold of the calling owner (in `mode`, if given), if any.
    package func holdOfCurrentOwner(mode: LockMode? = nil) -> Primitive.Hold? {
        let owner = currentOwner
        let generation = ForkGeneration.current
        return holds.withLock {
            $0.first { $0.owner == owner && $0.generation == generation && (mode == nil || $0.mode == mode) }?.hold
        }
    }

    /// `release(force:)` from a task: the owner is the task, the file-system calls of the release
    /// run on the helper threads.
    @discardableResult
    func releaseFromTask(force: Bool, mode: LockMode? = nil) async -> Bool {
        let (found, released) = takeHolds(force: force, owner: currentOwner, mode: mode)
        if primitive.suspendsInsteadOfBlocking {
            for record in released {
                node.removeHolding(owner: record.owner, lockObject: ObjectIdentifier(self), generation: record.generation)
                if record.generation == ForkGeneration.current {
                    await primitive.releaseFromTask(record.hold)
                } else {
                    primitive.forget(record.hold)
                }
            }
        } else if !released.isEmpty {
            // Not cancellable: a task cancelled in its `withLock` body still releases, off the pool.
            await BlockingCallPool.shared.runToTheEnd { [self] in for record in released { finishRelease(record) } }
        }
        return found
    }

    /// Counts down (or with `force` drops) holds, only those in `mode` when one is given; returns
    /// whether the owner held any, and the records whose last hold went, still to be released.
    private func takeHolds(force: Bool, owner: Owner, mode: LockMode?) -> (found: Bool, released: [HoldRecord]) {
        let generation = ForkGeneration.current
        if force {
            let released = holds.withLock { records in
                let taken = records.filter { mode == nil || $0.mode == mode }
                records.removeAll { mode == nil || $0.mode == mode }
                return taken
            }
            return (released.contains { $0.generation == generation }, released)
        }
        return holds.withLock { records in
            guard
                let index = records.firstIndex(where: {
                    $0.owner == owner && $0.generation == generation && (mode == nil || $0.mode == mode)
                })
            else {
                return (false, [])
            }
            records[index].count -= 1
            guard records[index].count == 0 else { return (true, []) }
            return (true, [records.remove(at: index)])
        }
    }

    private func finishRelease(_ record: HoldRecord) {
        node.removeHolding(owner: record.owner, lockObject: ObjectIdentifier(self), generation: record.generation)
        if record.generation == ForkGeneration.current {
            primitive.release(record.hold)
        } else {
            primitive.forget(record.hold)
        }
    }
}
