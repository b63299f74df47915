import FileLocking
import NIOCore
import PostgresNIO
import Synchronization

/// The heartbeats of every held `PostgresLock` of the process on one timer: taking and releasing
/// a lock only adds and removes an entry (no timer set or cancelled per hold, no wake-up of a
/// network thread), and a hold released within its first interval never costs a query.
///
/// Each tick (half the shortest interval registered) starts the check of every hold that is due,
/// and reports a hold lost whose check has gone unanswered for two intervals (one slow answer,
/// a server busy for a moment, is tolerated). The timer stops at the first tick that finds no
/// holds.
final class HoldWatch: Sendable {
    static let shared = HoldWatch()

    /// One watched hold: when its next check is due, and since when a check is outstanding.
    private struct Entry {
        let interval: Duration
        let check: @Sendable (_ done: @escaping @Sendable () -> Void) -> Void
        let overdue: @Sendable () -> Void
        var due: MonotonicInstant
        var checkStarted: MonotonicInstant?
    }

    private struct State {
        var entries: [ObjectIdentifier: Entry] = [:]
        var timer: RepeatedTask?
        var tick: Duration = .seconds(3600)
    }

    private let state = Mutex(State())

    /// Watches `hold`: `check` every `interval` (it calls `done` when answered); `overdue` when a
    /// check stays unanswered for two intervals.
    func add(
        _ hold: AnyObject, every interval: Duration, check: @escaping @Sendable (_ done: @escaping @Sendable () -> Void) -> Void,
        overdue: @escaping @Sendable () -> Void
    ) {
        let entry = Entry(
            interval: interval, check: check, overdue: overdue, due: MonotonicInstant.now.advanced(by: interval),
            checkStarted: nil)
        let start = state.withLock { state -> Duration? in
            state.entries[ObjectIdentifier(hold)] = entry
            let tick = interval / 2
            guard state.timer == nil || tick < state.tick else { return nil }
            state.timer?.cancel()
            state.timer = nil
            state.tick = tick
            return tick
        }
        if let start { startTimer(every: start) }
    }

    func remove(_ hold: AnyObject) {
        _ = state.withLock { $0.entries.removeValue(forKey: ObjectIdentifier(hold)) }
    }

    private func startTimer(every tick: Duration) {
        let loop = PostgresConnection.defaultEventLoopGroup.next()
        let amount = TimeAmount.nanoseconds(tick.totalNanoseconds)
        let timer = loop.scheduleRepeatedTask(initialDelay: amount, delay: amount) { [self] _ in run() }
        let kept = state.withLock { state -> Bool in
            guard state.timer == nil, state.tick == tick else { return false }
            state.timer = timer
            return true
        }
        if !kept { timer.cancel() }
    }

    private func run() {
        let now = MonotonicInstant.now
        var checks: [(ObjectIdentifier, @Sendable (_ done: @escaping @Sendable () -> Void) -> Void)] = []
        var overdue: [@Sendable () -> Void] = []
        state.withLock { state in
            if state.entries.isEmpty {
                state.timer?.cancel()
                state.timer = nil
                state.tick = .seconds(3600)
                return
            }
            for (key, entry) in state.entries {
                if let started = entry.checkStarted {
                    if now.duration(since: started) >= entry.interval * 2 {
                        overdue.append(entry.overdue)
                        state.entries[key] = nil
                    }
                } else if entry.due <= now {
                    state.entries[key]?.checkStarted = now
                    checks.append((key, entry.check))
                }
            }
        }
        for report in overdue { report() }
        for (key, check) in checks {
            check { [self] in
                state.withLock { state in
                    guard let entry = state.entries[key] else { return }
                    state.entries[key]?.checkStarted = nil
                    state.entries[key]?.due = MonotonicInstant.now.advanced(by: entry.interval)
                }
            }
        }
    }
}
