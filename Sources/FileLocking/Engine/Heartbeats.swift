import Synchronization

/// The heartbeats of every held lease-like lock of the process (``SoftReadWriteLock``,
/// ``SoftFileLease``) on a few shared helper threads, not a thread per lock: each registration
/// runs its beat every interval; a beat returns `false` to stop (its hold was lost or released).
///
/// One thread starts with the first registration and waits on a condition until the next beat is
/// due. A beat that blocks (a stalled network filesystem) holds up only its own thread: when the
/// last free thread starts a beat, another is started (up to `maximumThreads`), so the other
/// holds keep beating. Past that, a hold whose beats are late is still told in time: its
/// `loss(of:)` judges the time since its last refresh itself (see ``LockLoss``). A child forked
/// without exec has no heartbeats: what it inherited belongs to its parent, whose threads keep
/// beating.
final class Heartbeats: BackgroundThreads, @unchecked Sendable {
    static let shared = Heartbeats()

    final class Registration: @unchecked Sendable {
        let interval: Duration
        let beat: @Sendable () -> Bool
        // Guarded by the helper's lock.
        var due: MonotonicInstant
        var isCancelled = false
        /// The thread running its beat now, if any.
        var runningOn: ThreadHandle?

        init(interval: Duration, firstDue: MonotonicInstant, beat: @escaping @Sendable () -> Bool) {
            self.interval = interval
            self.beat = beat
            due = firstDue
        }
    }

    // Guarded by `lock`.
    private var registrations: [Registration] = []
    /// The threads waiting for a beat to fall due, each with when it wakes.
    private var waits: [ThreadHandle: MonotonicInstant] = [:]
    /// How long a thread waits with nothing due: the shortest interval registered so far, so
    /// that a registration made later (due an interval after it is made) is never due before the
    /// thread wakes anyway, and need not wake it.
    private var idleWait = Duration.seconds(60)

    private init() { super.init(maximumThreads: 4) }

    override func resetInChild() {
        registrations = []
        waits = [:]
    }

    /// Runs `beat` every `interval` until it returns `false` or `cancel` is called; the first
    /// beat at `firstDue` (default: an interval from now).
    func register(
        every interval: Duration, firstDue: MonotonicInstant? = nil, _ beat: @escaping @Sendable () -> Bool
    ) -> Registration {
        let registration = Registration(
            interval: interval, firstDue: firstDue ?? MonotonicInstant.now.advanced(by: interval), beat: beat)
        lock.withLock {
            registrations.append(registration)
            idleWait = min(idleWait, interval)
            if runningThreads == 0 { _ = startThread { [self] in run() } }
            // Woken only when this beat is due before a waiting thread wakes anyway (a hold taken
            // and released again and again must not wake it each time); a thread not waiting
            // looks at the registrations before it waits again.
            if let earliest = waits.values.min(), registration.due < earliest { lock.signal() }
        }
        return registration
    }

    /// Stops a registration; returns once a beat of it that is running has ended, so that a
    /// release never races its own heartbeat.
    func cancel(_ registration: Registration) {
        var isRunning = lock.withLock {
            registration.isCancelled = true
            registrations.removeAll { $0 === registration }
            // A beat that releases its own lock (a loss callback) must not wait for itself.
            return registration.runningOn != nil && registration.runningOn != ThreadHandle.current
        }
        while isRunning {
            Threads.sleep(.milliseconds(1))
            isRunning = lock.withLock { registration.runningOn != nil }
        }
    }

    private func run() {
        lock.lock()
        while true {
            let now = MonotonicInstant.now
            if let due = registrations.first(where: { $0.due <= now && $0.runningOn == nil }) {
                due.runningOn = ThreadHandle.current
                // The last free thread takes a beat that may block: make another one ready.
                if waits.isEmpty { _ = startThread { [self] in run() } }
                lock.unlock()
                let goesOn = due.beat()
                lock.lock()
                due.runningOn = nil
                due.due = MonotonicInstant.now.advanced(by: due.interval)
                if !goesOn || due.isCancelled { registrations.removeAll { $0 === due } }
                continue
            }
            let next = registrations.filter { $0.runningOn == nil }.map(\.due).min()
            let until = next ?? MonotonicInstant.now.advanced(by: idleWait)
            waits[ThreadHandle.current] = until
            lock.wait(until: until)
            waits[ThreadHandle.current] = nil
        }
    }
}

/// Why a held lock stopped being ours without our release.
public struct LockLossReason: Sendable, Hashable, CustomStringConvertible {
    private let value: String

    private init(_ value: String) { self.value = value }

    public var description: String { value }

    /// Another process judged our record stale (it stopped changing for the stale threshold, on
    /// that process's clock) and removed us: our heartbeats did not reach the filesystem in time
    /// (a paused process, a stalled or partitioned network filesystem).
    public static let evicted = LockLossReason("evicted")
    /// Another process took the lock over: our marker was replaced.
    public static let takenOver = LockLossReason("taken over")
    /// Our marker or record disappeared (removed by hand or by `filelock break --force`).
    public static let removed = LockLossReason("removed")
    /// Heartbeats kept failing (I/O errors) for longer than the lock stays fresh without them.
    public static let refreshFailed = LockLossReason("refresh failed")
    /// The lock server ended our session, which held the lock: its connection dropped (a
    /// network failure, the server restarted) or its server process was terminated
    /// (`pg_terminate_backend`), or it stopped answering within the heartbeat's bound.
    public static let sessionEnded = LockLossReason("session ended")
}

/// A hold that ended without its holder releasing it: the lock may be held by someone else now,
/// and whatever it protected may have been changed meanwhile. The holder must stop, and release.
public struct LockLoss: Sendable, CustomStringConvertible {
    /// The lock's path as given, or the name of a lock on a server.
    public var path: String
    /// The mode that was held.
    public var mode: LockMode
    /// What happened.
    public var reason: LockLossReason
    /// The fencing token of the lost hold, where the kind has one (a soft read-write lock's
    /// generation).
    public var fencingToken: UInt64?
    /// The `.lockLost` error that `checkHold()`, `checkedRelease()`, a re-entrant acquire and the
    /// end of `withLock { }` throw for this hold.
    public var error: FileLockError
    /// What was found, without the advice to the caller that `error` adds (for the
    /// command-line tool's own message).
    package let detail: String

    public var description: String { error.message }

    /// A loss of the lock file at `path`.
    init(path: String, mode: LockMode, reason: LockLossReason, fencingToken: UInt64?, detail: String) {
        self.init(resource: .file(path), mode: mode, reason: reason, fencingToken: fencingToken, detail: detail)
    }

    /// A loss of the lock `resource` names (a lock file, or a named lock on a server).
    package init(resource: LockResource, mode: LockMode, reason: LockLossReason, fencingToken: UInt64?, detail: String) {
        let path = resource.name
        self.path = path
        self.mode = mode
        self.reason = reason
        self.fencingToken = fencingToken
        self.detail = detail
        let held = mode == .exclusive ? "exclusive" : "shared"
        error = FileLockError(
            .lockLost, resource: resource,
            message: "the \(held) hold on lock '\(path)' was lost (\(reason)): \(detail); stop the work it protected "
                + "(another process may hold the lock now), release, and acquire again")
    }
}

/// Tells those who listen that a hold was lost: the callback given at construction, and every
/// `losses` sequence made so far.
package final class LossReporter: Sendable {
    private let callback: (@Sendable (LockLoss) -> Void)?
    private let listeners = Mutex<(next: Int, continuations: [Int: AsyncStream<LockLoss>.Continuation])>((0, [:]))

    package init(callback: (@Sendable (LockLoss) -> Void)?) {
        self.callback = callback
    }

    package func report(_ loss: LockLoss) {
        callback?(loss)
        for continuation in listeners.withLock({ Array($0.continuations.values) }) { continuation.yield(loss) }
    }

    package func stream() -> AsyncStream<LockLoss> {
        let (stream, continuation) = AsyncStream<LockLoss>.makeStream(bufferingPolicy: .bufferingNewest(64))
        let key = listeners.withLock { listeners -> Int in
            defer { listeners.next += 1 }
            listeners.continuations[listeners.next] = continuation
            return listeners.next
        }
        continuation.onTermination = { [weak self] _ in
            _ = self?.listeners.withLock { $0.continuations.removeValue(forKey: key) }
        }
        return stream
    }

    deinit {
        for continuation in listeners.withLock({ Array($0.continuations.values) }) { continuation.finish() }
    }
}

/// When a hold was last refreshed, on the boot clock: written by its heartbeat, read by anyone
/// who asks whether the hold still stands.
final class RefreshClock: Sendable {
    private let nanoseconds: Atomic<UInt64>

    init(_ instant: MonotonicInstant) { nanoseconds = Atomic(instant.nanoseconds) }

    var last: MonotonicInstant { MonotonicInstant(nanoseconds: nanoseconds.load(ordering: .acquiring)) }

    func set(_ instant: MonotonicInstant) { nanoseconds.store(instant.nanoseconds, ordering: .releasing) }

    /// How long since the last refresh.
    var silence: Duration { BootClock.now.duration(since: last) }

    /// Whether heartbeats have been silent so long that the hold cannot be trusted (others may
    /// evict it soon, or have): midway between the interval and the threshold. A heartbeat keeps
    /// the silence near the interval; only a beat held up (its thread blocked on a stalled
    /// filesystem, or none to run it) gets this far.
    func isOverdue(interval: Duration, threshold: Duration) -> Bool {
        silence >= interval + (threshold - interval) / 2
    }
}

/// Whether a hold was lost, set once by its heartbeat (or its release).
package final class LossMark: Sendable {
    private let loss = Mutex<LockLoss?>(nil)

    package init() {}

    package var value: LockLoss? { loss.withLock { $0 } }

    /// Records `lost` unless a loss was recorded already; `true` when this call recorded it.
    package func mark(_ lost: LockLoss) -> Bool {
        loss.withLock { current in
            guard current == nil else { return false }
            current = lost
            return true
        }
    }
}
