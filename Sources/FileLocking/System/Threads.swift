// Threads, fork handlers and a condition lock: the C-library side of the engine's waiting (clocks
// in Clock.swift, the interrupting signal in Signals.swift). The policy (when to interrupt, what a
// wake-up means) lives in Engine/.

import Synchronization

#if canImport(Glibc)
    import Glibc
#elseif canImport(Musl)
    import Musl
#elseif canImport(Darwin)
    import Darwin
#endif

/// A kernel thread identity, stable while the thread lives.
struct ThreadHandle: Hashable, @unchecked Sendable {
    var raw: pthread_t

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
        // With the helpers' fork handling (in the child: first the count, then the helpers).
        ForkRegistry.registerHandlers(countingForks: {
            ForkGeneration.counter.add(1, ordering: .relaxed)
            ForkRegistry.child()
        })
        return Atomic<Int>(0)
    }()

    static var current: Int { counter.load(ordering: .relaxed) }

    /// How many forks this process (and, in a child, its parent before it) has made: counted as
    /// each fork begins, so parent and child both see the new count. An open file made before it
    /// changed may be shared with a child, which keeps any lock later taken through it alive.
    static var forks: Int { forkCount.load(ordering: .relaxed) }

    private static let forkCount = Atomic<Int>(0)

    /// Called by the prepare handler, before the fork.
    static func countFork() { forkCount.add(1, ordering: .relaxed) }
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
