/// Whether a hold excludes everyone (a writer) or only exclusive holders (a reader).
public enum LockMode: Sendable, Hashable {
    /// Shared with other shared holders; excludes exclusive ones.
    case shared
    /// Excludes every other holder.
    case exclusive
}

/// How a primitive waits for a lock that is held elsewhere.
enum WaitStyle: Sendable {
    /// `waitOnce` blocks in the kernel until the lock is free; the kernel wakes it on release.
    /// A signal (see `InterruptSignal`) ends the call early for timeouts and cancellation.
    case kernel
    /// Nothing wakes a waiter: try again after a pause that starts at `initial` and doubles up to
    /// `maximum` (marker files, remote locks).
    case polling(initial: Duration, maximum: Duration)
}

/// The result of one try.
enum AttemptOutcome<Hold: Sendable>: Sendable {
    /// The lock is ours.
    case acquired(Hold)
    /// Someone else holds it (or a signal ended a kernel wait).
    case busy
    /// The attempt is void (for example the lock file was replaced): abandon it and begin again.
    case restart
}

/// One kind of lock reduced to what only it knows: how to try once, how to wait efficiently,
/// how to release, and who holds it. `LockEngine` builds everything else on top: timeouts,
/// cancellation, reentrancy, thread and task ownership, self-deadlock detection, errors.
protocol LockPrimitive: Sendable {
    /// State carried from `begin` through tries and waits (for example an open descriptor).
    associatedtype Attempt: Sendable
    /// What a successful acquisition owns until release.
    associatedtype Hold: Sendable

    /// The path the user gave, for messages.
    var path: String { get }
    var waitStyle: WaitStyle { get }

    /// Prepares an acquisition (opens the file). Throws for bad paths and system errors.
    func begin(_ mode: LockMode) throws -> Attempt
    /// Tries once without waiting.
    func tryOnce(_ attempt: Attempt, _ mode: LockMode) throws -> AttemptOutcome<Hold>
    /// Waits in the kernel until acquired; `.busy` when a signal ended the wait. Only called
    /// for `.kernel` primitives.
    func waitOnce(_ attempt: Attempt, _ mode: LockMode) throws -> AttemptOutcome<Hold>
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
    /// Releases a hold. Must not fail: a release that cannot be done cleanly still frees
    /// everything the hold owned.
    func release(_ hold: Hold)
    /// Lets go of a hold inherited across `fork` without touching the lock, which still belongs to
    /// the parent (closes descriptors only).
    func forget(_ hold: Hold)
    /// Who holds the lock now, as far as can be seen; empty when free or unknown.
    func holders() -> [LockHolder]
    /// Why the lock stays held, when the kind knows better than "wait longer" (for a timeout's
    /// message); `nil` for the generic advice.
    func busyHint() -> String?
}

extension LockPrimitive {
    func prepareToWait(_ attempt: Attempt) {}

    func busyHint() -> String? { nil }

    func pause(_ attempt: Attempt, upTo duration: Duration) {
        Threads.sleep(duration)
    }

    func pause(_ attempt: Attempt, upTo duration: Duration) async throws {
        try await Task.sleep(for: duration)
    }

    func waitOnce(_ attempt: Attempt, _ mode: LockMode) throws -> AttemptOutcome<Hold> {
        try tryOnce(attempt, mode)
    }
}
