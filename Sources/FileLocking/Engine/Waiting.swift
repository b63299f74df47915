import Synchronization

/// The decisions of one wait, made in one place for both ways of waiting (a thread blocked in
/// `LockEngine.wait`, a task suspended in `LockEngine.waitFromTask`): when the deadline has
/// passed, how long the next pause is, when a primitive that keeps asking to start over is given
/// up on. The two drivers only carry out the steps, each with its own way to block.
struct WaitSchedule {
    let request: LockRequest
    let start: MonotonicInstant
    /// What the caller allowed; `nil` waits forever.
    let timeout: Duration?
    let deadline: MonotonicInstant?
    /// The longest pause while a cancellation must be noticed by looking (a cancel check, or a
    /// task's cancellation where the pause cannot be ended early); `nil`: no such cap.
    let cancelTick: Duration?
    private var pause: Duration
    private let maximumPause: Duration
    private var restarts = 0
    /// Whether `prepareToWait` has yet to be called (before the first pause).
    var needsPreparing = true

    init(
        request: LockRequest, start: MonotonicInstant, timeout: Duration?, cancelTick: Duration?,
        initialPause: Duration, maximumPause: Duration
    ) {
        self.request = request
        self.start = start
        self.timeout = timeout
        deadline = timeout.map { start.advanced(by: $0) }
        self.cancelTick = cancelTick
        pause = initialPause
        self.maximumPause = maximumPause
    }

    func hasExpired(at now: MonotonicInstant) -> Bool {
        deadline.map { now >= $0 } ?? false
    }

    /// The next pause of a polling wait (never past the deadline, nor longer than the cancel
    /// tick); pauses double from the initial one up to the maximum.
    mutating func nextPause(at now: MonotonicInstant) -> Duration {
        var sleep = pause
        if let deadline { sleep = min(sleep, deadline.duration(since: now)) }
        if let cancelTick { sleep = min(sleep, cancelTick) }
        pause = pause < maximumPause / 2 ? pause * 2 : maximumPause
        return sleep
    }

    /// What to do after a try or wait that did not fail.
    enum Next<Hold> {
        case acquired(Hold)
        /// Still held elsewhere: wait again with the same attempt.
        case waitAgain
        /// The attempt is void: abandon it and begin a new one.
        case beginAgain
    }

    /// - Parameter counting: Whether a start-over counts against `maximumRestarts` (not one that
    ///   follows a real wait, which someone else's progress explains).
    /// - Throws: when the primitive asked to start over more than `maximumRestarts` times in a row.
    mutating func next<Hold>(after outcome: AttemptOutcome<Hold>, path: String, counting: Bool = true) throws -> Next<Hold> {
        switch outcome {
        case .acquired(let hold):
            return .acquired(hold)
        case .busy:
            restarts = 0
            return .waitAgain
        case .restart:
            if counting { try WaitSchedule.count(&restarts, path: path) }
            return .beginAgain
        }
    }

    /// Counts one more start-over in a row (a new attempt that found the lock file gone at once).
    mutating func countRestart(path: String) throws {
        try WaitSchedule.count(&restarts, path: path)
    }

    /// Counts one more start-over in a row; a primitive that asks without end (a file that keeps
    /// vanishing, an NFS handle that stays stale) is an error, not a busy loop.
    static func count(_ restarts: inout Int, path: String) throws {
        restarts += 1
        guard restarts > LockEngineSupport.maximumRestarts else { return }
        throw FileLockError(
            .io, path: path,
            message: "gave up on lock file '\(path)' after \(LockEngineSupport.maximumRestarts) tries: it kept being "
                + "deleted or replaced (or could not be checked) right after each lock; find the program that removes it")
    }
}

extension LockEngine {
    /// The schedule of a wait by this engine's primitive, for `request` from `start`.
    func schedule(
        _ request: LockRequest, start: MonotonicInstant, timeout: Duration?, mustNoticeCancellation: Bool
    ) -> WaitSchedule {
        var initial = Duration.milliseconds(1)
        var maximum = configuration.pollInterval
        if case .polling(let first, let longest) = primitive.waitStrategy {
            initial = first
            maximum = longest
        }
        return WaitSchedule(
            request: request, start: start, timeout: timeout,
            cancelTick: mustNoticeCancellation ? configuration.pollInterval : nil, initialPause: initial,
            maximumPause: maximum)
    }

    /// The error of a try or wait that did not get the lock, naming who holds it.
    func timedOutError(_ schedule: WaitSchedule, triedOnce: Bool = false) -> FileLockError {
        let waited = MonotonicInstant.now.duration(since: schedule.start)
        return aboutThisLock(
            FileLockError.timedOut(
                path: path, waited: waited,
                holder: primitive.blockingHolder(for: schedule.request, timeout: schedule.timeout),
                what: primitive.subject(of: schedule.request), triedOnce: triedOnce, hint: primitive.busyHint()))
    }

    private func cancelledError(_ schedule: WaitSchedule) -> FileLockError {
        FileLockError(
            .cancelled, resource: primitive.resource,
            message: "waiting for lock '\(path)' was cancelled by the cancel check after "
                + MonotonicInstant.now.duration(since: schedule.start).formattedSeconds)
    }

    // MARK: Waiting on a thread

    /// Waits for `attempt` on the calling thread, in the way the primitive's strategy says: in
    /// the kernel (ended by a signal at the deadline, at each cancel-check tick and on the token's
    /// cancellation), by pausing and trying again, or on a server. Consumes the attempt: on any
    /// failure it is abandoned. Throws `.timedOut`, `.cancelled` (cancel check) or
    /// `CancellationError` (token).
    func wait(
        _ attempt: Primitive.Attempt, _ schedule: WaitSchedule, cancelCheck: (() -> Bool)?, token: CancellationToken?
    ) throws -> Primitive.Hold {
        let interrupts = startInterrupts(schedule, cancelCheck: cancelCheck, token: token)
        do {
            guard token?.attach(interrupts.registration) ?? true else {
                primitive.abandon(attempt)
                throw CancellationError()
            }
            let hold = try waitLoop(attempt, schedule, step: interrupts.step, cancelCheck: cancelCheck, token: token)
            interrupts.stop()
            return hold
        } catch {
            // A failure waits for the interrupts to stop: after the deadline they come every
            // millisecond, and naming the holder may take a while (a look through /proc).
            interrupts.stop()
            throw error is WaitExpired ? timedOutError(schedule) : error
        }
    }

    /// `wait` that hands its outcome to `deliver` as soon as it is known, before it stops the
    /// interrupts of a kernel wait: a waiting task resumes without waiting for the tidying up.
    func wait(
        _ attempt: Primitive.Attempt, _ schedule: WaitSchedule, cancelCheck: (() -> Bool)?, token: CancellationToken?,
        deliver: (Result<Primitive.Hold, any Error>) -> Void
    ) {
        let interrupts = startInterrupts(schedule, cancelCheck: cancelCheck, token: token)
        guard token?.attach(interrupts.registration) ?? true else {
            interrupts.stop()
            primitive.abandon(attempt)
            return deliver(.failure(CancellationError()))
        }
        let result = Result {
            try waitLoop(attempt, schedule, step: interrupts.step, cancelCheck: cancelCheck, token: token)
        }
        guard case .failure(let error) = result else {
            deliver(result)
            return interrupts.stop()
        }
        interrupts.stop()
        deliver(.failure(error is WaitExpired ? timedOutError(schedule) : error))
    }

    /// How a thread's wait waits, and the interrupts (signals at the deadline, at each cancel-check
    /// tick, on cancellation) that a kernel wait needs.
    private struct Interrupts {
        var step: WaitStep
        var registration: Int?
        var savedMask: SignalMask?

        func stop() {
            if let registration { WaitInterrupter.shared.unregister(registration) }
            savedMask?.restore()
        }
    }

    private func startInterrupts(
        _ schedule: WaitSchedule, cancelCheck: (() -> Bool)?, token: CancellationToken?
    ) -> Interrupts {
        var interrupts = Interrupts(step: .kernel)
        let needsInterrupts = schedule.deadline != nil || cancelCheck != nil || token != nil
        switch primitive.waitStrategy {
        case .kernel: interrupts.step = !needsInterrupts || InterruptSignal.isAvailable ? .kernel : .pause
        case .polling: interrupts.step = .pause
        case .remote: interrupts.step = .remote
        }
        if interrupts.step == .kernel && needsInterrupts {
            interrupts.savedMask = SignalMask.unblockInterrupts()
            interrupts.registration = WaitInterrupter.shared.register(
                deadline: schedule.deadline, tick: cancelCheck == nil ? nil : configuration.pollInterval)
            // Without the helper thread nothing could end a kernel wait: poll instead.
            if interrupts.registration == nil { interrupts.step = .pause }
        }
        return interrupts
    }

    /// The rounds of a thread's wait. Consumes the attempt: on any failure it is abandoned.
    private func waitLoop(
        _ attempt: Primitive.Attempt, _ schedule: WaitSchedule, step: WaitStep, cancelCheck: (() -> Bool)?,
        token: CancellationToken?
    ) throws -> Primitive.Hold {
        var schedule = schedule
        var attempt = attempt
        var isAttemptOpen = true
        var hasWaited = false
        defer { if isAttemptOpen { primitive.abandon(attempt) } }
        while true {
            var countsRestart = true
            if let token, token.isCancelled { throw CancellationError() }
            if let cancelCheck, cancelCheck() { throw cancelledError(schedule) }
            let now = MonotonicInstant.now
            if schedule.hasExpired(at: now) { throw WaitExpired() }
            let outcome: AttemptOutcome<Primitive.Hold>
            do {
                outcome = try round(
                    attempt, &schedule, step: step, hasWaited: &hasWaited, countsRestart: &countsRestart,
                    cancelCheck: cancelCheck, token: token, now: now)
            } catch is LockFileGone {
                // The lock file is gone under the attempt (ESTALE): begin again, counted.
                outcome = .restart
                countsRestart = true
            }
            switch try schedule.next(after: outcome, path: path, counting: countsRestart) {
            case .acquired(let hold):
                isAttemptOpen = false
                return hold
            case .waitAgain:
                continue
            case .beginAgain:
                primitive.abandon(attempt)
                isAttemptOpen = false
                attempt = try beginAgain(&schedule)
                isAttemptOpen = true
            }
        }
    }

    /// Begins a new attempt after one was void, again while the lock file is found gone at once
    /// (counted, as every start-over in a row).
    private func beginAgain(_ schedule: inout WaitSchedule) throws -> Primitive.Attempt {
        while true {
            do {
                return try primitive.begin(schedule.request)
            } catch is LockFileGone {
                try schedule.countRestart(path: path)
            }
        }
    }

    /// One round of a thread's wait: a try and a kernel wait, a pause and a try, or a wait on the
    /// server. Throws `LockFileGone` when the lock file is gone under the attempt.
    private func round(
        _ attempt: Primitive.Attempt, _ schedule: inout WaitSchedule, step: WaitStep, hasWaited: inout Bool,
        countsRestart: inout Bool, cancelCheck: (() -> Bool)?, token: CancellationToken?, now: MonotonicInstant
    ) throws -> AttemptOutcome<Primitive.Hold> {
        let outcome: AttemptOutcome<Primitive.Hold>
        switch step {
        case .kernel:
            // A kernel wait may end on a lock file that the holder we waited for removed (or
            // renamed away): starting over then is the normal course of things (the next
            // round waits on the file now at the path), so it is not counted against
            // `maximumRestarts`. A try comes first in every round but the first (which follows
            // the caller's own try): a free file that keeps vanishing restarts in the try, and
            // is counted, so a wait can never spin on it unbounded.
            if hasWaited, case let tried = try primitive.tryOnce(attempt, schedule.request), !tried.isBusy {
                outcome = tried
            } else {
                hasWaited = true
                switch try primitive.waitInKernel(attempt, schedule.request) {
                case .interrupted:
                    outcome = .busy
                case .locked:
                    outcome = try primitive.confirm(attempt, schedule.request)
                    if case .restart = outcome { countsRestart = false }
                }
            }
        case .pause:
            let sleep = schedule.nextPause(at: now)
            if schedule.needsPreparing {
                primitive.prepareToWait(attempt)
                schedule.needsPreparing = false
            }
            primitive.pause(attempt, upTo: sleep)
            outcome = try primitive.tryOnce(attempt, schedule.request)
        case .remote:
            let current = attempt
            let request = schedule.request
            let deadline = schedule.deadline
            do {
                outcome = try ThreadBridge.run(
                    tick: configuration.pollInterval, deadline: deadline,
                    isCancelled: { (token?.isCancelled ?? false) || (cancelCheck?() ?? false) }
                ) { [primitive] in
                    try await primitive.waitRemotely(current, request, until: deadline)
                }
            } catch is CancellationError {
                if token?.isCancelled == true { throw CancellationError() }
                if let cancelCheck, cancelCheck() { throw cancelledError(schedule) }
                // Ended by the bridge past the deadline: a timeout.
                outcome = .busy
            }
        }
        return outcome
    }

    // MARK: Waiting in a task

    /// Waits for `attempt` from a task without blocking a thread of the cooperative pool: a kernel
    /// wait blocks a thread of its own (at most `KernelWaitThreads.maximum` at once), a polling
    /// wait suspends in the primitive's async `pause` with its tries on the helper threads, a
    /// remote wait suspends in the primitive. Consumes the attempt.
    func waitFromTask(_ attempt: Primitive.Attempt, _ schedule: WaitSchedule) async throws -> Primitive.Hold {
        switch primitive.waitStrategy {
        case .kernel:
            return try await waitOnKernelThread(attempt, schedule)
        case .polling:
            return try await waitInTask(attempt, schedule, remotely: false).hold
        case .remote:
            return try await waitInTask(attempt, schedule, remotely: true).hold
        }
    }

    /// Waits for a kernel lock from a task: on a thread of its own, blocked in the kernel and
    /// woken by the release, while fewer than `KernelWaitThreads.maximum` such threads exist;
    /// beyond that (or if no thread can be started) by polling, each try on the helper threads,
    /// until a place frees up; so a thousand waiting tasks cost a bounded number of threads.
    private func waitOnKernelThread(_ attempt: Primitive.Attempt, _ schedule: WaitSchedule) async throws -> Primitive.Hold {
        var attempt = attempt
        var schedule = schedule
        while true {
            let token = CancellationToken()
            let current = attempt
            let plan = schedule
            let outcome: Result<Primitive.Hold, any Error>? = await withTaskCancellationHandler {
                await withCheckedContinuation { continuation in
                    let isRunning = KernelWaitThreads.shared.runIfFree { [self] in
                        // The task resumes as soon as the wait ends; the thread tidies up after.
                        wait(current, plan, cancelCheck: nil, token: token) { continuation.resume(returning: $0) }
                    }
                    if !isRunning { continuation.resume(returning: nil) }
                }
            } onCancel: {
                token.cancel()
            }
            if let outcome { return try outcome.get() }
            let polled = try await waitInTask(attempt, schedule, remotely: false, untilAKernelWaitIsFree: true)
            if let hold = polled.hold { return hold }
            attempt = polled.attempt
            schedule = polled.schedule
        }
    }

    private struct TaskWaitOutcome {
        var hold: Primitive.Hold!
        /// Without a hold: a kernel-wait thread became free; wait in the kernel with this (open)
        /// attempt and schedule instead.
        var attempt: Primitive.Attempt!
        var schedule: WaitSchedule
    }

    /// The task's wait loop: pauses and tries (on the helper threads), or waits on the server.
    /// `untilAKernelWaitIsFree`: for a kernel lock's waiter over the thread cap, which goes back
    /// to a kernel wait (woken by the release) as soon as a place frees up.
    private func waitInTask(
        _ attempt: Primitive.Attempt, _ schedule: WaitSchedule, remotely: Bool, untilAKernelWaitIsFree: Bool = false
    ) async throws -> TaskWaitOutcome {
        var schedule = schedule
        var attempt = attempt
        var isAttemptOpen = true
        defer { if isAttemptOpen { abandonFromTask(attempt) } }
        while true {
            // A pause may end without suspending (a change already seen): still honour a cancel.
            try Task.checkCancellation()
            let now = MonotonicInstant.now
            if schedule.hasExpired(at: now) {
                let expired = schedule
                throw try await offThePool { [self] in timedOutError(expired) }
            }
            let current = attempt
            let request = schedule.request
            let outcome: AttemptOutcome<Primitive.Hold>
            if remotely {
                outcome = try await primitive.waitRemotely(current, request, until: schedule.deadline)
            } else {
                let sleep = schedule.nextPause(at: now)
                if schedule.needsPreparing {
                    try await offThePool { [primitive] in primitive.prepareToWait(current) }
                    schedule.needsPreparing = false
                }
                try await primitive.pause(current, upTo: sleep)
                do {
                    outcome = try await offThePool { [primitive] in try primitive.tryOnce(current, request) }
                } catch is LockFileGone {
                    outcome = .restart
                }
            }
            switch try schedule.next(after: outcome, path: path) {
            case .acquired(let hold):
                isAttemptOpen = false
                return TaskWaitOutcome(hold: hold, schedule: schedule)
            case .waitAgain:
                if untilAKernelWaitIsFree && KernelWaitThreads.inUse < KernelWaitThreads.maximum {
                    isAttemptOpen = false
                    return TaskWaitOutcome(attempt: attempt, schedule: schedule)
                }
            case .beginAgain:
                abandonFromTask(attempt)
                isAttemptOpen = false
                while true {
                    do {
                        attempt = try await offThePool { [primitive] in try primitive.begin(request) }
                        break
                    } catch is LockFileGone {
                        try schedule.countRestart(path: path)
                    }
                }
                isAttemptOpen = true
            }
        }
    }

    /// Gives up a task's attempt: at once where that is quick, else on the helper threads,
    /// without waiting for it (a soft read-write lock's waiter leaving the log may retry for a
    /// while on a slow filesystem; the task goes on meanwhile).
    func abandonFromTask(_ attempt: Primitive.Attempt) {
        guard !primitive.abandonsWithoutBlocking else {
            primitive.abandon(attempt)
            return
        }
        let primitive = primitive
        Task.detached { await BlockingCallPool.shared.runToTheEnd { primitive.abandon(attempt) } }
    }

    /// Runs blocking file-system calls of a task's acquisition or release (opening, creating,
    /// reading, checking, renaming; on NFS each may stall for as long as the server does) on the
    /// bounded helper threads, so that a stalled server never blocks the cooperative pool.
    func offThePool<Value: Sendable>(_ body: @escaping @Sendable () throws -> Value) async throws -> Value {
        try await BlockingCallPool.shared.run(body)
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

/// The threads that `async` kernel waits block on: at most `maximum` at once in the process (each
/// has a 256 KiB stack); waiters beyond poll instead. A thread whose wait ended stays for the next
/// one (a warm thread, no `pthread_create` per wait) and ends after `idleLifetime` without work.
final class KernelWaitThreads: BackgroundThreads, @unchecked Sendable {
    static let shared = KernelWaitThreads(maximumThreads: 64, idleLifetime: .seconds(10))

    typealias Job = @Sendable () -> Void

    /// How long a thread without a wait stays.
    let idleLifetime: Duration

    // Guarded by `lock`.
    private var jobs: [Job] = []
    private var idle = 0

    /// A set of its own (tests); kernel waits use `shared`.
    init(maximumThreads: Int, idleLifetime: Duration) {
        self.idleLifetime = idleLifetime
        super.init(maximumThreads: maximumThreads)
    }

    /// A forked child has none of the parent's threads. Jobs still queued are dropped: each is a
    /// parent task's wait (its continuation is never resumed in the child, which has no such task).
    override func resetInChild() {
        jobs = []
        idle = 0
    }

    /// Runs `job` on a thread of its own: an idle one, or a new one under the cap. `false` when
    /// every place is taken (or no thread can be started): the caller polls instead.
    func runIfFree(_ job: @escaping Job) -> Bool {
        lock.withLock {
            if idle > jobs.count {
                jobs.append(job)
                lock.signal()
                return true
            }
            return startThread { [self] in work(job) }
        }
    }

    private func work(_ first: @escaping Job) {
        var next: Job? = first
        while let job = next {
            job()
            next = lock.withLock { () -> Job? in
                idle += 1
                defer { idle -= 1 }
                let end = MonotonicInstant.now.advanced(by: idleLifetime)
                while jobs.isEmpty {
                    if MonotonicInstant.now >= end {
                        threadEnded()
                        return nil
                    }
                    lock.wait(until: end)
                }
                return jobs.removeFirst()
            }
        }
    }

    /// The most threads blocked in kernel waits at once.
    static var maximum: Int { shared.maximumThreads }

    /// How many threads are taken by waits now.
    static var inUse: Int { shared.busyThreads }

    /// How many of this set's threads are taken by jobs (or about to take a queued one).
    var busyThreads: Int { lock.withLock { runningThreads - idle + jobs.count } }

    /// How many threads exist, busy or idle.
    var threadCount: Int { lock.withLock { runningThreads } }
}

/// A thread's wait passed its deadline (the error, which names the holder, is built once the
/// wait's interrupts have stopped).
private struct WaitExpired: Error {}

/// What one round of a thread's wait does.
enum WaitStep {
    case kernel, pause, remote
}

private final class BridgeBox<Value: Sendable>: @unchecked Sendable {
    let lock = ConditionLock()
    var result: Result<Value, any Error>?  // guarded by `lock`
}

/// Runs async work (a remote wait) for a synchronous caller: the calling thread blocks until the
/// work ends, asking `isCancelled` every `tick` and cancelling the work when it says so, or when
/// the work overruns `deadline` by `grace` (a primitive should end its wait at the deadline
/// itself; this bounds one that does not).
///
/// The work runs on `BridgeExecutor`'s thread, not on the cooperative pool: a synchronous
/// caller may itself be on a pool thread (one of a few), and work that needed a pool thread while
/// every one of them blocked here would never run.
enum ThreadBridge {
    static let grace = Duration.seconds(1)

    static func run<Value: Sendable>(
        tick: Duration, deadline: MonotonicInstant?, isCancelled: () -> Bool,
        _ body: @escaping @Sendable () async throws -> Value
    ) throws -> Value {
        let box = BridgeBox<Value>()
        let executor: (any TaskExecutor)? = BridgeExecutor.shared.isAvailable ? BridgeExecutor.shared : nil
        let task = Task.detached(executorPreference: executor) {
            let result: Result<Value, any Error>
            do { result = .success(try await body()) } catch { result = .failure(error) }
            box.lock.withLock {
                box.result = result
                box.lock.signal()
            }
        }
        var isTaskCancelled = false
        while true {
            let result = box.lock.withLock { () -> Result<Value, any Error>? in
                if box.result == nil { box.lock.wait(until: MonotonicInstant.now.advanced(by: tick)) }
                return box.result
            }
            if let result { return try result.get() }
            let isOverdue = deadline.map { MonotonicInstant.now >= $0.advanced(by: grace) } ?? false
            if !isTaskCancelled && (isOverdue || isCancelled()) {
                task.cancel()
                isTaskCancelled = true
            }
        }
    }
}

/// A task executor on a thread of the library's own, for `ThreadBridge`: jobs run one after
/// another (remote waits suspend, they do not block it).
final class BridgeExecutor: BackgroundThreads, TaskExecutor, @unchecked Sendable {
    static let shared = BridgeExecutor()

    // Guarded by `lock`.
    private var jobs: [UnownedJob] = []

    private init() { super.init(maximumThreads: 1) }

    /// A forked child has no thread running the parent's jobs (nor the tasks waiting for them).
    override func resetInChild() { jobs = [] }

    /// Whether its thread runs (started now if need be); `false` when none can be started.
    var isAvailable: Bool {
        lock.withLock { runningThreads > 0 || startThread { [self] in run() } }
    }

    func enqueue(_ job: consuming ExecutorJob) {
        let job = UnownedJob(job)
        lock.withLock {
            jobs.append(job)
            lock.signal()
        }
    }

    private func run() {
        while true {
            let job = lock.withLock { () -> UnownedJob in
                while jobs.isEmpty { lock.wait(until: nil) }
                return jobs.removeFirst()
            }
            job.runSynchronously(on: asUnownedTaskExecutor())
        }
    }
}
