// The signal that ends a thread's blocking kernel wait, and a thread's signal mask.

#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

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
