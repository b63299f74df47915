import Synchronization

/// The settings every lock kind shares, fixed at construction.
struct LockConfiguration: Sendable, Equatable {
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

    func validated(path: String) throws -> LockConfiguration {
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
        return parts.joined(separator: ", ")
    }
}

enum LockEngineSupport {
    /// How often in a row a primitive may ask to start over before the engine gives up.
    static let maximumRestarts = 100

    static func validate(timeout: Duration, path: String) throws {
        if timeout < .zero { throw FileLockError.invalidTimeout(path: path, "\(timeout)") }
    }
}

/// Ends an `async` waiter's kernel wait when its task is cancelled.
final class CancellationToken: Sendable {
    private struct State {
        var isCancelled = false
        var registration: Int?
    }

    private let state = Mutex(State())

    var isCancelled: Bool { state.withLock { $0.isCancelled } }

    func cancel() {
        let registration = state.withLock { state -> Int? in
            state.isCancelled = true
            return state.registration
        }
        if let registration { WaitInterrupter.shared.expire(registration) }
    }

    /// Links a registered wait to the token; `false` when the token was already cancelled.
    func attach(_ registration: Int?) -> Bool {
        state.withLock { state in
            state.registration = registration
            return !state.isCancelled
        }
    }
}

/// The one acquisition engine: turns a primitive's "try once / wait / release" into blocking,
/// timed, non-blocking and cancellable acquisition, reentrancy per thread or task, mutual
/// exclusion between threads and tasks of one process, and self-deadlock detection.
///
/// Each owner (thread or task) that acquires gets its own `Hold` from the primitive: for kernel
/// locks its own open file, so the kernel itself excludes two threads using one lock object and
/// wakes the next one on release. A second acquire by the same owner only counts up.
final class LockEngine<Primitive: LockPrimitive>: Sendable {
    struct HoldRecord {
        var owner: Owner
        var hold: Primitive.Hold
        var count: Int
        var mode: LockMode
        /// The fork generation that took it: a child forked without exec must not release
        /// (unlock, unlink) what its parent still holds.
        var generation: Int
    }

    let primitive: Primitive
    let configuration: LockConfiguration
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

    var path: String { primitive.path }

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
                        .invalidConfiguration, path: primitive.path,
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

    var isLocked: Bool {
        let generation = ForkGeneration.current
        return holds.withLock { $0.contains { $0.generation == generation } }
    }

    var holdCount: Int {
        let generation = ForkGeneration.current
        return holds.withLock { $0.reduce(0) { $0 + ($1.generation == generation ? $1.count : 0) } }
    }

    var isHeldByCurrentOwner: Bool {
        let owner = currentOwner
        let generation = ForkGeneration.current
        return holds.withLock { $0.contains { $0.owner == owner && $0.generation == generation } }
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
        let held: LockMode? = holds.withLock { records in
            guard let index = records.firstIndex(where: { $0.owner == owner && $0.generation == generation }) else {
                return nil
            }
            if records[index].mode == mode { records[index].count += 1 }
            return records[index].mode
        }
        guard let held else { return false }
        guard held == mode else {
            let (wanted, have) = mode == .exclusive ? ("exclusive", "shared") : ("shared", "exclusive")
            throw FileLockError(
                .modeChangeNotAllowed, path: path,
                message: "cannot take lock '\(path)' \(wanted): this thread or task already holds it \(have) "
                    + "(\(mode == .exclusive ? "an upgrade" : "a downgrade"), which is not allowed); release it "
                    + "first, then acquire it \(wanted)")
        }
        return true
    }

    private func record(_ hold: Primitive.Hold, owner: Owner, mode: LockMode) {
        let generation = ForkGeneration.current
        node.recordHolding(owner: owner, lockObject: ObjectIdentifier(self), generation: generation)
        holds.withLock { $0.append(HoldRecord(owner: owner, hold: hold, count: 1, mode: mode, generation: generation)) }
    }

    // MARK: Acquire (synchronous)

    /// Acquires for the calling thread (or task), waiting at most `timeout` (`nil` forever).
    func acquire(mode: LockMode, timeout: Duration?, cancelCheck: (() -> Bool)?) throws {
        if let timeout { try LockEngineSupport.validate(timeout: timeout, path: path) }
        let owner = currentOwner
        if try reenter(owner, mode: mode) { return }
        let start = MonotonicInstant.now
        let (attempt, hold) = try tryAcquiring(mode)
        if let hold {
            record(hold, owner: owner, mode: mode)
            return
        }
        try checkBeforeWaiting(attempt, owner: owner, timeout: timeout, canBeCancelled: cancelCheck != nil, start: start)
        let deadline = timeout.map { start.advanced(by: $0) }
        let acquired = try wait(
            attempt, mode: mode, start: start, deadline: deadline, cancelCheck: cancelCheck, token: nil)
        record(acquired, owner: owner, mode: mode)
    }

    /// Tries once for the calling thread (or task); `false` when held elsewhere.
    func tryAcquire(mode: LockMode) throws -> Bool {
        let owner = currentOwner
        if try reenter(owner, mode: mode) { return true }
        let (attempt, hold) = try tryAcquiring(mode)
        if let hold {
            record(hold, owner: owner, mode: mode)
            return true
        }
        primitive.abandon(attempt)
        return false
    }

    /// Begins and tries once, restarting while the primitive asks to. Returns the attempt and
    /// its hold when acquired, or the attempt alone when busy.
    private func tryAcquiring(_ mode: LockMode) throws -> (Primitive.Attempt, Primitive.Hold?) {
        var restarts = 0
        while true {
            try checkRestarts(&restarts)
            let attempt = try primitive.begin(mode)
            let outcome: AttemptOutcome<Primitive.Hold>
            do {
                outcome = try primitive.tryOnce(attempt, mode)
            } catch {
                primitive.abandon(attempt)
                throw error
            }
            switch outcome {
            case .acquired(let hold): return (attempt, hold)
            case .busy: return (attempt, nil)
            case .restart: primitive.abandon(attempt)
            }
        }
    }

    /// A primitive asks to start over when the lock file was replaced under it; one that asks
    /// without end (a file that keeps vanishing, an NFS handle that stays stale) is an error,
    /// not a busy loop.
    private func checkRestarts(_ restarts: inout Int) throws {
        restarts += 1
        guard restarts > LockEngineSupport.maximumRestarts else { return }
        throw FileLockError(
            .io, path: path,
            message: "gave up on lock file '\(path)' after \(LockEngineSupport.maximumRestarts) tries: it kept being "
                + "deleted or replaced (or could not be checked) right after each lock; find the program that removes it")
    }

    /// The checks between a failed try and a wait: zero timeout, self-deadlock (only for a wait
    /// that nothing but the lock can end: no timeout, no cancel check).
    private func checkBeforeWaiting(
        _ attempt: Primitive.Attempt, owner: Owner, timeout: Duration?, canBeCancelled: Bool, start: MonotonicInstant
    ) throws {
        if timeout == .zero {
            primitive.abandon(attempt)
            throw FileLockError.timedOut(
                path: path, waited: MonotonicInstant.now.duration(since: start), holder: primitive.holders().first,
                triedOnce: true, hint: primitive.busyHint())
        }
        if timeout == nil && !canBeCancelled && node.ownerHoldsThroughAnotherObject(owner, lockObject: ObjectIdentifier(self)) {
            primitive.abandon(attempt)
            throw FileLockError.wouldDeadlock(path: path)
        }
    }

    /// Waits for `attempt` on the calling thread. Consumes the attempt: on any failure it is
    /// abandoned. Throws `.timedOut`, `.cancelled` (cancel check) or `CancellationError` (token).
    func wait(
        _ attempt: Primitive.Attempt, mode: LockMode, start: MonotonicInstant, deadline: MonotonicInstant?,
        cancelCheck: (() -> Bool)?, token: CancellationToken?
    ) throws -> Primitive.Hold {
        var attempt = attempt
        var isAttemptOpen = true
        defer { if isAttemptOpen { primitive.abandon(attempt) } }

        let needsInterrupts = deadline != nil || cancelCheck != nil || token != nil
        var usesKernelWait: Bool
        var pause = Duration.milliseconds(1)
        var maximumPause = configuration.pollInterval
        var restarts = 0
        var isPrepared = false
        switch primitive.waitStyle {
        case .kernel:
            usesKernelWait = !needsInterrupts || InterruptSignal.isAvailable
        case .polling(let initial, let maximum):
            usesKernelWait = false
            pause = initial
            maximumPause = maximum
        }

        var registration: Int?
        var savedMask: SignalMask?
        if usesKernelWait && needsInterrupts {
            savedMask = SignalMask.unblockInterrupts()
            registration = WaitInterrupter.shared.register(
                deadline: deadline, tick: cancelCheck == nil ? nil : configuration.pollInterval)
            // Without the helper thread nothing could end a kernel wait: poll instead.
            if registration == nil { usesKernelWait = false }
        }
        defer {
            if let registration { WaitInterrupter.shared.unregister(registration) }
            savedMask?.restore()
        }
        if let token, !token.attach(registration) { throw CancellationError() }

        while true {
            if let token, token.isCancelled { throw CancellationError() }
            if let cancelCheck, cancelCheck() {
                throw FileLockError(
                    .cancelled, path: path,
                    message: "waiting for lock '\(path)' was cancelled by the cancel check after "
                        + MonotonicInstant.now.duration(since: start).formattedSeconds)
            }
            let now = MonotonicInstant.now
            if let deadline, now >= deadline {
                throw FileLockError.timedOut(
                    path: path, waited: now.duration(since: start), holder: primitive.holders().first,
                    hint: primitive.busyHint())
            }
            let outcome: AttemptOutcome<Primitive.Hold>
            if usesKernelWait {
                outcome = try primitive.waitOnce(attempt, mode)
            } else {
                var sleep = pause
                if let deadline { sleep = min(sleep, deadline.duration(since: now)) }
                if cancelCheck != nil || token != nil { sleep = min(sleep, configuration.pollInterval) }
                if !isPrepared {
                    primitive.prepareToWait(attempt)
                    isPrepared = true
                }
                primitive.pause(attempt, upTo: sleep)
                pause = pause < maximumPause / 2 ? pause * 2 : maximumPause
                outcome = try primitive.tryOnce(attempt, mode)
            }
            switch outcome {
            case .acquired(let hold):
                isAttemptOpen = false
                return hold
            case .busy:
                restarts = 0
            case .restart:
                primitive.abandon(attempt)
                isAttemptOpen = false
                try checkRestarts(&restarts)
                attempt = try primitive.begin(mode)
                isAttemptOpen = true
            }
        }
    }

    // MARK: Acquire (async)

    /// Acquires for the current task without blocking a thread of the cooperative pool: a kernel
    /// wait runs on a thread of its own; a polling wait suspends in the primitive's async `pause`
    /// (a folder watch for marker files, else `Task.sleep`).
    func acquire(mode: LockMode, timeout: Duration?) async throws {
        if let timeout { try LockEngineSupport.validate(timeout: timeout, path: path) }
        try Task.checkCancellation()
        let owner = currentOwner
        if try reenter(owner, mode: mode) { return }
        let start = MonotonicInstant.now
        let (attempt, hold) = try await offThePool { [self] in try tryAcquiring(mode) }
        if let hold {
            record(hold, owner: owner, mode: mode)
            return
        }
        // A task can be cancelled, but nothing cancels it in a self-deadlock: still report it.
        // Only a try (zero timeout) reads the lock file here (to name the holder): only then the
        // hop to a helper thread, and whatever ends it gives up the attempt (an open file).
        if timeout == .zero {
            do {
                try await offThePool { [self] in
                    try checkBeforeWaiting(attempt, owner: owner, timeout: timeout, canBeCancelled: false, start: start)
                }
            } catch is CancellationError {
                primitive.abandon(attempt)
                throw CancellationError()
            }
        } else {
            try checkBeforeWaiting(attempt, owner: owner, timeout: timeout, canBeCancelled: false, start: start)
        }
        let deadline = timeout.map { start.advanced(by: $0) }
        let acquired: Primitive.Hold
        switch primitive.waitStyle {
        case .kernel:
            acquired = try await waitOnOwnThread(attempt, mode: mode, start: start, deadline: deadline)
        case .polling(let initial, let maximum):
            guard case .acquired(let hold) = try await poll(
                attempt, mode: mode, start: start, deadline: deadline, initial: initial, maximum: maximum)
            else { preconditionFailure("a polling primitive's wait ends acquired or throws") }
            acquired = hold
        }
        record(acquired, owner: owner, mode: mode)
    }

    /// Runs blocking file-system calls of a task's acquisition or release (opening, creating,
    /// reading, checking, renaming; on NFS each may stall for as long as the server does) on the
    /// bounded helper threads, so that a stalled server never blocks the cooperative pool.
    private func offThePool<Value: Sendable>(_ body: @escaping @Sendable () throws -> Value) async throws -> Value {
        try await BlockingCallPool.shared.run(body)
    }

    /// Waits for a kernel lock from a task: on a thread of its own, blocked in the kernel and
    /// woken by the release, while fewer than `KernelWaitThreads.maximum` such threads exist;
    /// beyond that (or if no thread can be started) by polling, each try on the helper threads,
    /// until a place frees up; so a thousand waiting tasks cost a bounded number of threads.
    func waitOnOwnThread(
        _ attempt: Primitive.Attempt, mode: LockMode, start: MonotonicInstant, deadline: MonotonicInstant?
    ) async throws -> Primitive.Hold {
        var attempt = attempt
        while true {
            if KernelWaitThreads.take() {
                let token = CancellationToken()
                let current = attempt
                let outcome: Result<Primitive.Hold, any Error>? = await withTaskCancellationHandler {
                    await withCheckedContinuation { continuation in
                        let spawned = Threads.spawnDetached { [self] in
                            let result = Result {
                                try wait(current, mode: mode, start: start, deadline: deadline, cancelCheck: nil, token: token)
                            }
                            KernelWaitThreads.giveBack()
                            continuation.resume(returning: result)
                        }
                        if case .failure = spawned {
                            KernelWaitThreads.giveBack()
                            continuation.resume(returning: nil)
                        }
                    }
                } onCancel: {
                    token.cancel()
                }
                if let outcome { return try outcome.get() }
            }
            switch try await poll(
                attempt, mode: mode, start: start, deadline: deadline, initial: .milliseconds(1),
                maximum: configuration.pollInterval, untilAKernelWaitIsFree: true)
            {
            case .acquired(let hold): return hold
            case .kernelWaitAvailable(let open): attempt = open
            }
        }
    }

    private enum PollOutcome {
        case acquired(Primitive.Hold)
        /// A kernel-wait thread became free: wait in the kernel with this (open) attempt instead.
        case kernelWaitAvailable(Primitive.Attempt)
    }

    /// Polls for the lock. `untilAKernelWaitIsFree`: for a kernel lock's waiter over the thread
    /// cap, which goes back to a kernel wait (woken by the release) as soon as a place frees up.
    private func poll(
        _ attempt: Primitive.Attempt, mode: LockMode, start: MonotonicInstant, deadline: MonotonicInstant?,
        initial: Duration, maximum: Duration, untilAKernelWaitIsFree: Bool = false
    ) async throws -> PollOutcome {
        var attempt = attempt
        var isAttemptOpen = true
        defer { if isAttemptOpen { primitive.abandon(attempt) } }
        var pause = initial
        var restarts = 0
        var isPrepared = false
        while true {
            // A pause may end without suspending (a change already seen): still honour a cancel.
            try Task.checkCancellation()
            let now = MonotonicInstant.now
            if let deadline, now >= deadline {
                let (holder, hint) = try await offThePool { [primitive] in (primitive.holders().first, primitive.busyHint()) }
                throw FileLockError.timedOut(path: path, waited: now.duration(since: start), holder: holder, hint: hint)
            }
            var sleep = pause
            if let deadline { sleep = min(sleep, deadline.duration(since: now)) }
            if !isPrepared {
                let current = attempt
                try await offThePool { [primitive] in primitive.prepareToWait(current) }
                isPrepared = true
            }
            try await primitive.pause(attempt, upTo: sleep)
            pause = pause < maximum / 2 ? pause * 2 : maximum
            let current = attempt
            switch try await offThePool({ [primitive] in try primitive.tryOnce(current, mode) }) {
            case .acquired(let hold):
                isAttemptOpen = false
                return .acquired(hold)
            case .busy:
                restarts = 0
                if untilAKernelWaitIsFree && KernelWaitThreads.inUse < KernelWaitThreads.maximum {
                    isAttemptOpen = false
                    return .kernelWaitAvailable(attempt)
                }
            case .restart:
                primitive.abandon(attempt)
                isAttemptOpen = false
                try checkRestarts(&restarts)
                attempt = try await offThePool { [primitive] in try primitive.begin(mode) }
                isAttemptOpen = true
            }
        }
    }

    // MARK: Release

    /// Releases one hold of the calling owner; a caller that holds nothing releases nothing (it
    /// must not drop another thread's lock) and gets `false`. `force` drops every hold of every
    /// owner (holds inherited across fork are let go without touching the parent's lock).
    @discardableResult
    func release(force: Bool) -> Bool {
        let (found, released) = takeHolds(force: force, owner: currentOwner)
        for record in released { finishRelease(record) }
        return found
    }

    /// `release(force:)` from a task: the owner is the task, the file-system calls of the release
    /// run on the helper threads.
    @discardableResult
    func releaseFromTask(force: Bool) async -> Bool {
        let (found, released) = takeHolds(force: force, owner: currentOwner)
        if !released.isEmpty {
            // Not cancellable: a task cancelled in its `withLock` body still releases, off the pool.
            await BlockingCallPool.shared.runToTheEnd { [self] in for record in released { finishRelease(record) } }
        }
        return found
    }

    /// Counts down (or with `force` drops) holds; returns whether the owner held any, and the
    /// records whose last hold went, still to be released.
    private func takeHolds(force: Bool, owner: Owner) -> (found: Bool, released: [HoldRecord]) {
        let generation = ForkGeneration.current
        if force {
            let released = holds.withLock { records in
                defer { records.removeAll() }
                return records
            }
            return (released.contains { $0.generation == generation }, released)
        }
        return holds.withLock { records in
            guard let index = records.firstIndex(where: { $0.owner == owner && $0.generation == generation }) else {
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

/// The threads that `async` kernel waits block on, counted: at most `maximum` at once in the
/// process (each has a 256 KiB stack); waiters beyond poll instead.
enum KernelWaitThreads {
    static let maximum = 64
    private static let count = Atomic<Int>(0)

    /// Takes a place for one more thread; `false` when all are taken.
    static func take() -> Bool {
        if count.add(1, ordering: .relaxed).newValue <= maximum { return true }
        count.subtract(1, ordering: .relaxed)
        return false
    }

    static func giveBack() {
        count.subtract(1, ordering: .relaxed)
    }

    /// How many are taken now (for tests).
    static var inUse: Int { count.load(ordering: .relaxed) }
}
