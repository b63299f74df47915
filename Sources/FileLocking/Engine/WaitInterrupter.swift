/// Ends blocking kernel waits at their deadline, on cancellation, or at each cancel-check tick,
/// by sending `InterruptSignal` to the waiting thread.
///
/// The waiter itself sits in the kernel call, so it wakes as soon as the lock is released (no
/// polling of the lock). Only the end of the wait needs this helper thread. A signal can land
/// just before the waiter enters the kernel call and be lost; so after a deadline passes the
/// signal is repeated every millisecond until the waiter unregisters.
final class WaitInterrupter: BackgroundThreads, @unchecked Sendable {
    static let shared = WaitInterrupter()

    private struct Entry {
        var thread: ThreadHandle
        var deadline: MonotonicInstant?
        var tick: Duration?
        var nextFire: MonotonicInstant
    }

    private static let repeatInterval = Duration.milliseconds(1)

    private init() { super.init(maximumThreads: 1) }

    /// A forked child waits in none of its parent's waits.
    override func resetInChild() { entries = [:] }

    // Guarded by `lock`.
    private var entries: [Int: Entry] = [:]
    private var nextIdentifier = 0

    /// Arranges for the calling thread to be interrupted at `deadline` (then repeatedly) and every
    /// `tick` before it. Returns an identifier for `expire` and `unregister`, or `nil` when the
    /// helper thread cannot be started (the caller then polls instead).
    func register(deadline: MonotonicInstant?, tick: Duration?) -> Int? {
        let now = MonotonicInstant.now
        var firstFire = deadline ?? MonotonicInstant(nanoseconds: .max)
        if let tick { firstFire = min(firstFire, now.advanced(by: tick)) }
        let entry = Entry(thread: .current, deadline: deadline, tick: tick, nextFire: firstFire)
        return lock.withLock { () -> Int? in
            if runningThreads == 0 {
                guard startThread({ [self] in run() }) else { return nil }
            }
            nextIdentifier += 1
            entries[nextIdentifier] = entry
            lock.signal()
            return nextIdentifier
        }
    }

    /// Makes the deadline of a registered wait now: the waiter is interrupted at once.
    func expire(_ identifier: Int) {
        lock.withLock {
            guard entries[identifier] != nil else { return }
            let now = MonotonicInstant.now
            entries[identifier]!.deadline = now
            entries[identifier]!.nextFire = now
            lock.signal()
        }
    }

    /// Stops interrupting the waiter. After this returns no signal is sent for this wait.
    func unregister(_ identifier: Int) {
        lock.withLock { _ = entries.removeValue(forKey: identifier) }
    }

    private func run() {
        lock.withLock {
            while true {
                let now = MonotonicInstant.now
                var earliest: MonotonicInstant?
                for (identifier, entry) in entries {
                    var entry = entry
                    if entry.nextFire <= now {
                        InterruptSignal.interrupt(entry.thread)
                        if let deadline = entry.deadline, deadline <= now {
                            entry.nextFire = now.advanced(by: Self.repeatInterval)
                        } else {
                            entry.nextFire = entry.deadline ?? MonotonicInstant(nanoseconds: .max)
                            if let tick = entry.tick { entry.nextFire = min(entry.nextFire, now.advanced(by: tick)) }
                        }
                        entries[identifier] = entry
                    }
                    earliest = min(earliest ?? entry.nextFire, entry.nextFire)
                }
                if let earliest, earliest.nanoseconds == .max {
                    lock.wait(until: nil)
                } else {
                    lock.wait(until: earliest)
                }
            }
        }
    }
}
