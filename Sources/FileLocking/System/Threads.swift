// Threads, clocks and the signal that ends a blocking kernel wait: the C-library side of the
// engine's waiting. The policy (when to interrupt, what a wake-up means) lives in Engine/.

import Synchronization

#if canImport(Glibc)
    import Glibc
#elseif canImport(Musl)
    import Musl
#elseif canImport(Darwin)
    import Darwin
#endif

/// Nanoseconds of `CLOCK_MONOTONIC`, which does not jump with the wall clock.
struct MonotonicInstant: Comparable, Sendable {
    var nanoseconds: UInt64

    static var now: MonotonicInstant {
        var time = timespec()
        clock_gettime(CLOCK_MONOTONIC, &time)
        return MonotonicInstant(nanoseconds: UInt64(time.tv_sec) &* 1_000_000_000 &+ UInt64(time.tv_nsec))
    }

    static func < (lhs: Self, rhs: Self) -> Bool { lhs.nanoseconds < rhs.nanoseconds }

    func advanced(by duration: Duration) -> MonotonicInstant {
        let delta = duration.totalNanoseconds
        if delta <= 0 { return self }
        let (sum, overflow) = nanoseconds.addingReportingOverflow(UInt64(clamping: delta))
        return MonotonicInstant(nanoseconds: overflow ? .max : sum)
    }

    func duration(since earlier: MonotonicInstant) -> Duration {
        guard self > earlier else { return .zero }
        return .nanoseconds(Int64(clamping: nanoseconds - earlier.nanoseconds))
    }
}

extension Duration {
    /// The duration in whole nanoseconds (truncated toward zero), saturating at `Int64.min` and
    /// `Int64.max` (about 292 years either way).
    ///
    /// A `Duration` reaches far beyond that (`.seconds(Int64.max) * 1000`), and its `components`
    /// trap once the seconds no longer fit an `Int64`, so the range is checked by comparison first.
    var totalNanoseconds: Int64 {
        if self >= .nanoseconds(Int64.max) { return .max }
        if self <= .nanoseconds(Int64.min) { return .min }
        // Within ±292 years: the seconds fit, and so does the sum.
        let (seconds, attoseconds) = components
        let (scaled, overflow) = seconds.multipliedReportingOverflow(by: 1_000_000_000)
        let (sum, sumOverflow) = scaled.addingReportingOverflow(attoseconds / 1_000_000_000)
        if overflow || sumOverflow { return self < .zero ? .min : .max }
        return sum
    }
}

/// A kernel thread identity, stable while the thread lives.
struct ThreadHandle: Hashable, @unchecked Sendable {
    fileprivate var raw: pthread_t

    static var current: ThreadHandle { ThreadHandle(raw: pthread_self()) }

    /// A number that identifies the thread while it lives.
    var identifier: UInt {
        #if canImport(Darwin)
            UInt(bitPattern: raw)
        #else
            UInt(raw)
        #endif
    }

    static func == (lhs: Self, rhs: Self) -> Bool { lhs.identifier == rhs.identifier }
    func hash(into hasher: inout Hasher) { hasher.combine(identifier) }
}

private final class ThreadBody {
    let run: () -> Void
    init(_ run: @escaping () -> Void) { self.run = run }
}

enum Threads {
    /// Starts a detached kernel thread that runs `body`. Not a thread of Swift's cooperative pool,
    /// so it may block in the kernel for as long as it needs.
    static func spawnDetached(_ body: @escaping @Sendable () -> Void) -> Result<Void, Errno> {
        let context = Unmanaged.passRetained(ThreadBody(body)).toOpaque()
        var attributes = pthread_attr_t()
        pthread_attr_init(&attributes)
        defer { pthread_attr_destroy(&attributes) }
        pthread_attr_setdetachstate(&attributes, Int32(PTHREAD_CREATE_DETACHED))
        // Waiting threads need little stack; 256 KiB keeps many waiters cheap.
        pthread_attr_setstacksize(&attributes, 256 * 1024)
        // The thread starts with every signal blocked, so that signals meant for the process
        // (SIGINT, SIGTERM, ...) go to the host's threads, not to a helper of ours; a waiter
        // unblocks the interrupt signal itself for the length of its wait.
        var all = sigset_t()
        var previous = sigset_t()
        sigfillset(&all)
        pthread_sigmask(SIG_SETMASK, &all, &previous)
        defer { pthread_sigmask(SIG_SETMASK, &previous, nil) }
        #if canImport(Darwin)
            var thread: pthread_t?
        #else
            var thread = pthread_t()
        #endif
        let result = pthread_create(
            &thread, &attributes,
            { context in
                #if canImport(Darwin)
                    let body = Unmanaged<ThreadBody>.fromOpaque(context).takeRetainedValue()
                #else
                    let body = Unmanaged<ThreadBody>.fromOpaque(context!).takeRetainedValue()
                #endif
                body.run()
                return nil
            }, context)
        if result != 0 {
            Unmanaged<ThreadBody>.fromOpaque(context).release()
            return .failure(Errno(rawValue: result))
        }
        return .success(())
    }

    /// Sleeps the calling (non-pool) thread.
    static func sleep(_ duration: Duration) {
        let nanoseconds = max(0, duration.totalNanoseconds)
        var request = timespec(tv_sec: Int(nanoseconds / 1_000_000_000), tv_nsec: Int(nanoseconds % 1_000_000_000))
        var remaining = timespec()
        while nanosleep(&request, &remaining) == -1 && errno == EINTR { request = remaining }
    }
}

/// Counts forks: a child without exec sees a new generation, so state made by its parent (holds,
/// cached records) can be recognised as inherited.
enum ForkGeneration {
    private static let counter: Atomic<Int> = {
        ForkHandlers.register(prepare: {}, parent: {}, child: { ForkGeneration.counter.add(1, ordering: .relaxed) })
        return Atomic<Int>(0)
    }()

    static var current: Int { counter.load(ordering: .relaxed) }
}

/// `pthread_atfork` for handlers that reach their state through a static.
enum ForkHandlers {
    static func register(
        prepare: @escaping @convention(c) () -> Void, parent: @escaping @convention(c) () -> Void,
        child: @escaping @convention(c) () -> Void
    ) {
        pthread_atfork(prepare, parent, child)
    }
}

/// A pthread mutex with a condition variable whose timed wait uses the monotonic clock.
final class ConditionLock: @unchecked Sendable {
    private let mutex = UnsafeMutablePointer<pthread_mutex_t>.allocate(capacity: 1)
    private let condition = UnsafeMutablePointer<pthread_cond_t>.allocate(capacity: 1)

    init() { initialize() }

    /// In a child forked without exec: the parent's helper may have been waiting on `condition`;
    /// its copy is unusable (a phantom waiter), so start both afresh. The mutex is taken by the
    /// fork's prepare handler.
    func reinitializeInChild() { initialize() }

    private func initialize() {
        pthread_mutex_init(mutex, nil)
        var attributes = pthread_condattr_t()
        pthread_condattr_init(&attributes)
        #if !canImport(Darwin)
            pthread_condattr_setclock(&attributes, CLOCK_MONOTONIC)
        #endif
        pthread_cond_init(condition, &attributes)
        pthread_condattr_destroy(&attributes)
    }

    deinit {
        pthread_cond_destroy(condition)
        pthread_mutex_destroy(mutex)
        condition.deallocate()
        mutex.deallocate()
    }

    func lock() { pthread_mutex_lock(mutex) }
    func unlock() { pthread_mutex_unlock(mutex) }

    func withLock<T>(_ body: () throws -> T) rethrows -> T {
        pthread_mutex_lock(mutex)
        defer { pthread_mutex_unlock(mutex) }
        return try body()
    }

    /// Waits (with the mutex held by the caller) until signalled or `deadline` passes.
    func wait(until deadline: MonotonicInstant?) {
        guard let deadline else {
            pthread_cond_wait(condition, mutex)
            return
        }
        #if canImport(Darwin)
            let now = MonotonicInstant.now.nanoseconds
            let remaining = deadline.nanoseconds > now ? deadline.nanoseconds - now : 0
            var relative = timespec(tv_sec: Int(remaining / 1_000_000_000), tv_nsec: Int(remaining % 1_000_000_000))
            pthread_cond_timedwait_relative_np(condition, mutex, &relative)
        #else
            var absolute = timespec(
                tv_sec: Int(deadline.nanoseconds / 1_000_000_000), tv_nsec: Int(deadline.nanoseconds % 1_000_000_000))
            pthread_cond_timedwait(condition, mutex, &absolute)
        #endif
    }

    func signal() { pthread_cond_signal(condition) }
}

/// The signal that ends a thread's blocking `flock`/`fcntl` wait early.
///
/// `SIGURG` is used, as Go's runtime does for preemption: its default action is to ignore, so a
/// stray one harms nobody, and almost no program handles it. The handler does nothing; it is
/// installed without `SA_RESTART`, so the interrupted call returns `EINTR` and the waiter looks
/// at its deadline and cancellation. A host program that handles or deliberately ignores `SIGURG`
/// keeps it: the library then polls for timed waits. The disposition is checked again before
/// every interruptible wait, so a handler the host installs later is respected too.
enum InterruptSignal {
    static let number: Int32 = SIGURG

    private static func currentHandler() -> Int? {
        var current = sigaction()
        guard sigaction(number, nil, &current) == 0 else { return nil }
        #if canImport(Darwin)
            return unsafeBitCast(current.__sigaction_u.__sa_handler, to: Int.self)
        #else
            return unsafeBitCast(current.__sigaction_handler.sa_handler, to: Int.self)
        #endif
    }

    private static let handler: @convention(c) (Int32) -> Void = { _ in }

    /// Installs the handler once, only over the default disposition.
    private static let installed: Bool = {
        guard currentHandler() == unsafeBitCast(SIG_DFL, to: Int.self) else { return false }
        var action = sigaction()
        #if canImport(Darwin)
            action.__sigaction_u.__sa_handler = handler
        #else
            action.__sigaction_handler.sa_handler = handler
        #endif
        sigemptyset(&action.sa_mask)
        action.sa_flags = 0
        return sigaction(number, &action, nil) == 0
    }()

    /// Whether our handler is (still) the one installed; installs it on first use.
    static var isAvailable: Bool {
        installed && currentHandler() == unsafeBitCast(handler, to: Int.self)
    }

    /// Sends the signal to one thread of this process.
    static func interrupt(_ thread: ThreadHandle) {
        _ = pthread_kill(thread.raw, number)
    }

}

/// A thread's saved signal mask.
struct SignalMask {
    private var saved: sigset_t

    /// Unblocks `InterruptSignal` for the calling thread (a host program may block it in its
    /// threads, which would make a timed wait never end) and returns the mask to restore.
    static func unblockInterrupts() -> SignalMask {
        var set = sigset_t()
        sigemptyset(&set)
        sigaddset(&set, InterruptSignal.number)
        var old = sigset_t()
        pthread_sigmask(SIG_UNBLOCK, &set, &old)
        return SignalMask(saved: old)
    }

    /// Restores the mask. When the caller had the signal blocked, an interrupt sent just before
    /// the wait ended would stay pending and later break one of the caller's own system calls
    /// with `EINTR`; it is taken off the queue here.
    func restore() {
        var mask = saved
        pthread_sigmask(SIG_SETMASK, &mask, nil)
        guard sigismember(&mask, InterruptSignal.number) == 1 else { return }
        var pending = sigset_t()
        sigpending(&pending)
        guard sigismember(&pending, InterruptSignal.number) == 1 else { return }
        var only = sigset_t()
        sigemptyset(&only)
        sigaddset(&only, InterruptSignal.number)
        var received: Int32 = 0
        sigwait(&only, &received)
    }
}

/// Closes descriptors on a helper thread, for descriptors whose `close` can take milliseconds:
/// closing an inotify instance waits for a kernel grace period (5-15 ms measured here), which
/// would otherwise delay a waiter that has just got its lock.
final class DeferredCloser: @unchecked Sendable {
    static let shared = DeferredCloser()

    // Guarded by `lock`.
    private let lock = ConditionLock()
    private var pending: [Int32] = []
    private var isRunning = false

    private init() {
        // A child forked without exec has no helper thread: it closes its copies itself.
        ForkHandlers.register(
            prepare: { DeferredCloser.shared.lock.lock() },
            parent: { DeferredCloser.shared.lock.unlock() },
            child: { DeferredCloser.shared.resetInChild() })
    }

    private func resetInChild() {
        for descriptor in pending { System.close(descriptor) }
        pending = []
        isRunning = false
        lock.reinitializeInChild()
    }

    /// At most this many closes wait; beyond, the caller closes (so that a burst of watches does
    /// not hold the user's few inotify instances).
    private static let maximumPending = 8

    /// Closes `descriptor` soon, on the helper thread (at once, here, if it cannot be started or
    /// is behind).
    func close(_ descriptor: Int32) {
        let isQueued = lock.withLock { () -> Bool in
            guard pending.count < Self.maximumPending else { return false }
            if !isRunning {
                guard case .success = Threads.spawnDetached({ [self] in run() }) else { return false }
                isRunning = true
            }
            pending.append(descriptor)
            lock.signal()
            return true
        }
        if !isQueued { System.close(descriptor) }
    }

    private func run() {
        while true {
            let batch = lock.withLock { () -> [Int32] in
                while pending.isEmpty { lock.wait(until: nil) }
                defer { pending = [] }
                return pending
            }
            for descriptor in batch { System.close(descriptor) }
        }
    }
}
