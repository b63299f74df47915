/// Whether a hold excludes everyone (a writer) or only exclusive holders (a reader).
public enum LockMode: Sendable, Hashable {
    /// Shared with other shared holders; excludes exclusive ones.
    case shared
    /// Excludes every other holder.
    case exclusive
}

/// What one acquisition asks a primitive for: a mode and, for kinds that lock parts of a file,
/// which bytes (whole-file kinds ignore the range).
package struct LockRequest: Sendable, Hashable {
    package var mode: LockMode
    var range: ByteRange = .wholeFile

    package init(_ mode: LockMode, range: ByteRange = .wholeFile) {
        self.mode = mode
        self.range = range
    }

    /// The whole lock, exclusively.
    package static let exclusive = LockRequest(.exclusive)
    /// The whole lock, shared.
    package static let shared = LockRequest(.shared)
}

/// How a primitive waits for a lock that is held elsewhere; the engine runs the wait, the
/// primitive picks its kind.
package enum WaitStrategy: Sendable {
    /// `waitInKernel` blocks in the kernel until the lock is free; the kernel wakes it on release.
    /// A signal (see `InterruptSignal`) ends the call early for timeouts and cancellation.
    case kernel
    /// Nothing wakes a waiter: try again after a pause that starts at `initial` and doubles up to
    /// `maximum` (marker files); the primitive's `pause` may end early (a folder watch).
    case polling(initial: Duration, maximum: Duration)
    /// `waitRemotely` waits on a server (a network lock): bounded by the deadline it is given,
    /// and ended on task cancellation by the primitive itself, since no signal ends a network wait.
    case remote
}

/// How a kernel wait ended.
package enum KernelWaitEnd: Sendable {
    /// The kernel gave us the lock.
    case locked
    /// A signal ended the wait (deadline, cancellation, a cancel-check tick).
    case interrupted
}

/// The result of one try.
package enum AttemptOutcome<Hold: Sendable>: Sendable {
    /// The lock is ours.
    case acquired(Hold)
    /// Someone else holds it (or a signal ended a kernel wait, or a remote wait reached its
    /// deadline).
    case busy
    /// The attempt is void (for example the lock file was replaced): abandon it and begin again.
    case restart

    package var isBusy: Bool {
        if case .busy = self { return true }
        return false
    }
}

/// Thrown by a primitive's `begin`, `tryOnce`, `waitInKernel` or `confirm` when the lock file is
/// gone under the attempt in the way network filesystems say it (`ESTALE`: the file or its folder
/// was deleted or replaced on the server, so the client's handle names nothing): the engine
/// abandons the attempt and begins again, as after `.restart` (counted against
/// `maximumRestarts`, so a handle that stays stale ends in an error, not a loop).
struct LockFileGone: Error {}

/// One kind of lock reduced to what only it knows: how to try once, how to wait efficiently,
/// how to release, and who holds it. `LockEngine` builds everything else on top: timeouts,
/// cancellation, reentrancy, thread and task ownership, self-deadlock detection, errors.
package protocol LockPrimitive: Sendable {
    /// State carried from `begin` through tries and waits (for example an open descriptor).
    associatedtype Attempt: Sendable
    /// What a successful acquisition owns until release.
    associatedtype Hold: Sendable

    /// The path (or name) the user gave, for messages.
    var path: String { get }
    /// What errors name: the lock file at `path` (the default), or a lock on a server by its name.
    var resource: LockResource { get }
    /// How a waiter waits; see `WaitStrategy`.
    var waitStrategy: WaitStrategy { get }
    /// Whether `begin` and `tryOnce` never block (no file-system call that a stalled server could
    /// hold up): then a task tries where it runs instead of on a helper thread.
    var triesWithoutBlocking: Bool { get }

    /// Prepares an acquisition (opens the file). Throws for bad paths and system errors.
    func begin(_ request: LockRequest) throws -> Attempt
    /// Tries once without waiting.
    func tryOnce(_ attempt: Attempt, _ request: LockRequest) throws -> AttemptOutcome<Hold>
    /// Waits in the kernel until the lock is taken (`.locked`, to be checked by `confirm`), or a
    /// signal ended the wait (`.interrupted`). Only called for `.kernel` primitives.
    func waitInKernel(_ attempt: Attempt, _ request: LockRequest) throws -> KernelWaitEnd
    /// Checks a lock that `waitInKernel` just took (for example that the lock file is still the
    /// one at the path): `.acquired`, or `.busy`/`.restart` to go on.
    func confirm(_ attempt: Attempt, _ request: LockRequest) throws -> AttemptOutcome<Hold>
    /// Waits on the server until acquired, or `.busy` at `deadline` (`nil`: no deadline); throws
    /// `CancellationError` as soon as the task is cancelled, leaving nothing waiting on the
    /// server and nothing held. Only called for `.remote` primitives.
    func waitRemotely(
        _ attempt: Attempt, _ request: LockRequest, until deadline: MonotonicInstant?
    ) async throws -> AttemptOutcome<Hold>
    /// Whether a task's tries and releases suspend in `tryOnceFromTask` and `releaseFromTask`
    /// (a lock on a server, whose calls are network round trips) instead of blocking a helper
    /// thread in `tryOnce` and `release`; `begin` must then not block either.
    var suspendsInsteadOfBlocking: Bool { get }
    /// A try from a task that suspends on the server's answer. Only called when
    /// `suspendsInsteadOfBlocking`.
    func tryOnceFromTask(_ attempt: Attempt, _ request: LockRequest) async throws -> AttemptOutcome<Hold>
    /// A release from a task that suspends instead of blocking. Only called when
    /// `suspendsInsteadOfBlocking`.
    func releaseFromTask(_ hold: Hold) async
    /// Called once before the first pause of a polling wait (off the cooperative pool for a task):
    /// the place for blocking set-up such as a folder watch.
    func prepareToWait(_ attempt: Attempt)
    /// Pauses a polling wait for at most `duration`; may return early when the lock may have
    /// become free (for example a folder watch saw the marker go).
    func pause(_ attempt: Attempt, upTo duration: Duration)
    /// The async form of `pause`, for a waiting task: holds no thread while it waits, and
    /// throws `CancellationError` as soon as the task is cancelled.
    func pause(_ attempt: Attempt, upTo duration: Duration) async throws
    /// Gives up an attempt that did not acquire (closes what `begin` opened).
    func abandon(_ attempt: Attempt)
    /// Whether `abandon` is quick (closing a descriptor); `false` when it works with the
    /// filesystem (a soft read-write lock's waiter leaves the log): a task then has it done on the
    /// helper threads, never on the cooperative pool.
    var abandonsWithoutBlocking: Bool { get }
    /// Releases a hold. Must not fail: a release that cannot be done cleanly still frees
    /// everything the hold owned.
    func release(_ hold: Hold)
    /// Lets go of a hold inherited across `fork` without touching the lock, which still belongs to
    /// the parent (closes descriptors only).
    func forget(_ hold: Hold)
    /// Who holds the lock now, as far as can be seen; empty when free or unknown.
    func holders() -> [LockHolder]
    /// Who stands in the way of `request`, for the error of a try or wait that did not get it;
    /// `timeout` is what the caller allowed (`.zero` for a try), so that a slow look-up can be
    /// kept short.
    func blockingHolder(for request: LockRequest, timeout: Duration?) -> LockHolder?
    /// What the request locks, as an error names it (`bytes 0-99 of '/x'`); `nil` for "lock '/x'".
    func subject(of request: LockRequest) -> String?
    /// Why the lock stays held, when the kind knows better than "wait longer" (for a timeout's
    /// message); `nil` for the generic advice.
    func busyHint() -> String?
    /// Whether `hold` was lost without a release (evicted, taken over); `nil` while it stands.
    /// Kinds that cannot lose a hold (the kernel keeps it) leave the default.
    func loss(of hold: Hold) -> LockLoss?
}

extension LockPrimitive {
    package var resource: LockResource { .file(path) }

    package var suspendsInsteadOfBlocking: Bool { false }

    package func tryOnceFromTask(_ attempt: Attempt, _ request: LockRequest) async throws -> AttemptOutcome<Hold> {
        preconditionFailure("tryOnceFromTask is only called for primitives that suspend instead of blocking")
    }

    package func releaseFromTask(_ hold: Hold) async {
        preconditionFailure("releaseFromTask is only called for primitives that suspend instead of blocking")
    }

    package var triesWithoutBlocking: Bool { false }

    package func prepareToWait(_ attempt: Attempt) {}

    package func busyHint() -> String? { nil }

    package func loss(of hold: Hold) -> LockLoss? { nil }

    package var abandonsWithoutBlocking: Bool { true }

    package func blockingHolder(for request: LockRequest, timeout: Duration?) -> LockHolder? { holders().first }

    package func subject(of request: LockRequest) -> String? { nil }

    package func pause(_ attempt: Attempt, upTo duration: Duration) {
        Threads.sleep(duration)
    }

    package func pause(_ attempt: Attempt, upTo duration: Duration) async throws {
        try await Task.sleep(for: duration)
    }

    package func waitInKernel(_ attempt: Attempt, _ request: LockRequest) throws -> KernelWaitEnd {
        preconditionFailure("waitInKernel is only called for primitives whose wait strategy is .kernel")
    }

    package func confirm(_ attempt: Attempt, _ request: LockRequest) throws -> AttemptOutcome<Hold> {
        preconditionFailure("confirm is only called for primitives whose wait strategy is .kernel")
    }

    package func waitRemotely(
        _ attempt: Attempt, _ request: LockRequest, until deadline: MonotonicInstant?
    ) async throws -> AttemptOutcome<Hold> {
        preconditionFailure("waitRemotely is only called for primitives whose wait strategy is .remote")
    }
}
