#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif
import Synchronization

/// Runs a command in the foreground (sharing our stdin, stdout and stderr), forwarding SIGINT,
/// SIGTERM and SIGHUP to it, and returns its exit code (128 + signal when a signal ended it, as
/// shells and flock(1) report it).
package enum ForegroundCommand {
    private static let child = Atomic<Int32>(0)
    private static let forwarded: [Int32] = [SIGINT, SIGTERM, SIGHUP]
    /// A forwarded signal that arrived while `recordInterrupts` was in force (0: none).
    private static let interrupt = Atomic<Int32>(0)
    /// The signal `terminate` asked for (0: none), whether it was sent, and whether the command
    /// has ended.
    private static let termination = Atomic<Int32>(0)
    private static let terminationSent = Atomic<Bool>(false)
    private static let hasEnded = Atomic<Bool>(false)
    /// Seconds from `terminate`'s signal to SIGKILL.
    private static let killDelay = Atomic<UInt32>(0)

    /// From now until `run` starts the command, SIGINT, SIGTERM and SIGHUP (those not ignored)
    /// are recorded instead of ending this process, so that a caller that waits for a lock
    /// first can give up cleanly (see `interruptingSignal`); `run` then starts no command.
    package static func recordInterrupts() {
        var handled = sigset_t()
        sigemptyset(&handled)
        for signal in forwarded where !isIgnored(signal) {
            sigaddset(&handled, signal)
            var action = sigaction()
            #if canImport(Darwin)
                action.__sigaction_u.__sa_handler = { received in
                    _ = ForegroundCommand.interrupt.compareExchange(
                        expected: 0, desired: received, ordering: .sequentiallyConsistent)
                }
            #else
                action.__sigaction_handler.sa_handler = { received in
                    _ = ForegroundCommand.interrupt.compareExchange(
                        expected: 0, desired: received, ordering: .sequentiallyConsistent)
                }
            #endif
            sigemptyset(&action.sa_mask)
            action.sa_flags = SA_RESTART
            sigaction(signal, &action, nil)
        }
        // Received even if whoever started us had them blocked (as `run` does for the command).
        pthread_sigmask(SIG_UNBLOCK, &handled, nil)
    }

    /// The first signal recorded since `recordInterrupts`, or `nil`.
    package static var interruptingSignal: Int32? {
        let signal = interrupt.load(ordering: .sequentiallyConsistent)
        return signal == 0 ? nil : signal
    }

    /// What `terminate` did.
    package enum Termination: Equatable, Sendable {
        /// The command was sent the signal.
        case signalled(pid: Int32)
        /// No command runs yet: `run` will not start one.
        case notStarted
        /// The command had already ended.
        case ended
    }

    /// Ends the command: sends it `signal` now, or makes `run` start none if it has not started
    /// yet, then SIGKILL if it still runs `killAfter` seconds later (0: never). Only the first
    /// call acts; any thread may call it.
    @discardableResult
    package static func terminate(with signal: Int32, killAfter seconds: UInt32) -> Termination {
        // The delay first: `run` may deliver as soon as it sees the signal.
        if termination.load(ordering: .sequentiallyConsistent) == 0 {
            killDelay.store(seconds, ordering: .sequentiallyConsistent)
        }
        _ = termination.compareExchange(expected: 0, desired: signal, ordering: .sequentiallyConsistent)
        if hasEnded.load(ordering: .sequentiallyConsistent) { return .ended }
        let pid = child.load(ordering: .sequentiallyConsistent)
        guard pid > 0 else { return .notStarted }
        deliverTermination(to: pid)
        return .signalled(pid: pid)
    }

    /// Sends the requested termination signal to `pid`, once, and arms the SIGKILL that follows.
    private static func deliverTermination(to pid: Int32) {
        let signal = termination.load(ordering: .sequentiallyConsistent)
        guard signal != 0, !terminationSent.exchange(true, ordering: .sequentiallyConsistent) else { return }
        let delay = killDelay.load(ordering: .sequentiallyConsistent)
        if delay > 0 {
            var action = sigaction()
            #if canImport(Darwin)
                action.__sigaction_u.__sa_handler = { _ in
                    let target = ForegroundCommand.child.load(ordering: .sequentiallyConsistent)
                    if target > 0 { kill(target, SIGKILL) }
                }
            #else
                action.__sigaction_handler.sa_handler = { _ in
                    let target = ForegroundCommand.child.load(ordering: .sequentiallyConsistent)
                    if target > 0 { kill(target, SIGKILL) }
                }
            #endif
            sigemptyset(&action.sa_mask)
            action.sa_flags = SA_RESTART
            sigaction(SIGALRM, &action, nil)
            alarm(delay)
        }
        kill(pid, signal)
    }

    package static func run(_ arguments: [String]) throws -> Int32 {
        try run(arguments.map { Array($0.utf8) })
    }

    /// Runs a command given as bytes (arguments and file names need not be UTF-8).
    ///
    /// Starts none, and returns 128 + the signal, when `recordInterrupts` recorded a signal or
    /// `terminate` was called before the start.
    package static func run(_ arguments: [[UInt8]]) throws -> Int32 {
        // Block the forwarded signals until the child's pid is known and the handlers are in
        // place, so none is lost or kills us while the command runs unsupervised.
        var blocked = sigset_t()
        sigemptyset(&blocked)
        for signal in forwarded { sigaddset(&blocked, signal) }
        var previous = sigset_t()
        pthread_sigmask(SIG_BLOCK, &blocked, &previous)
        defer { pthread_sigmask(SIG_SETMASK, &previous, nil) }
        // A signal we were started with ignored (nohup, background jobs) stays ignored for the
        // command too, and is not forwarded.
        let handled = forwarded.filter { !isIgnored($0) }
        // Asked to stop before the start (the signals are blocked from here on: one arriving now
        // waits, and goes to the command).
        if let signal = interruptingSignal { return 128 + signal }
        let requested = termination.load(ordering: .sequentiallyConsistent)
        if requested != 0 { return 128 + requested }

        #if canImport(Darwin)
            var attributes: posix_spawnattr_t? = nil
        #else
            var attributes = posix_spawnattr_t()
        #endif
        posix_spawnattr_init(&attributes)
        defer { posix_spawnattr_destroy(&attributes) }
        // The command starts with default dispositions and nothing blocked.
        var defaults = sigset_t()
        sigemptyset(&defaults)
        for signal in handled { sigaddset(&defaults, signal) }
        var empty = sigset_t()
        sigemptyset(&empty)
        posix_spawnattr_setsigdefault(&attributes, &defaults)
        posix_spawnattr_setsigmask(&attributes, &empty)
        posix_spawnattr_setflags(&attributes, Int16(POSIX_SPAWN_SETSIGDEF | POSIX_SPAWN_SETSIGMASK))

        let argv: [UnsafeMutablePointer<CChar>?] = arguments.map { argument in
            let copy = UnsafeMutablePointer<CChar>.allocate(capacity: argument.count + 1)
            for (index, byte) in argument.enumerated() { copy[index] = CChar(bitPattern: byte) }
            copy[argument.count] = 0
            return copy
        } + [nil]
        defer { for pointer in argv { pointer?.deallocate() } }
        var pid = pid_t()
        #if canImport(Darwin)
            let environment = _NSGetEnviron().pointee
        #else
            let environment = environ
        #endif
        let result = posix_spawnp(&pid, argv[0]!, nil, &attributes, argv, environment)
        guard result == 0 else {
            let name = String(decoding: arguments[0], as: UTF8.self)
            throw ChildProcessError(description: "cannot run '\(name)': \(String(cString: strerror(result)))", errno: result)
        }
        child.store(Int32(pid), ordering: .sequentiallyConsistent)
        // A `terminate` between the look above and the store: it found no child to signal.
        deliverTermination(to: Int32(pid))
        for signal in handled {
            var action = sigaction()
            #if canImport(Darwin)
                action.__sigaction_u.__sa_handler = { received in
                    let target = ForegroundCommand.child.load(ordering: .sequentiallyConsistent)
                    if target > 0 { kill(target, received) }
                }
            #else
                action.__sigaction_handler.sa_handler = { received in
                    let target = ForegroundCommand.child.load(ordering: .sequentiallyConsistent)
                    if target > 0 { kill(target, received) }
                }
            #endif
            sigemptyset(&action.sa_mask)
            action.sa_flags = SA_RESTART
            sigaction(signal, &action, nil)
        }
        // Deliver the forwarded signals now, even if whoever started us had them blocked.
        pthread_sigmask(SIG_UNBLOCK, &blocked, nil)

        var status: Int32 = 0
        while waitpid(pid, &status, 0) == -1 && errno == EINTR {}
        child.store(0, ordering: .sequentiallyConsistent)
        hasEnded.store(true, ordering: .sequentiallyConsistent)
        if terminationSent.load(ordering: .sequentiallyConsistent) { alarm(0) }
        if (status & 0x7f) == 0 { return (status >> 8) & 0xff }
        return 128 + (status & 0x7f)
    }

    private static func isIgnored(_ signal: Int32) -> Bool {
        var current = sigaction()
        sigaction(signal, nil, &current)
        #if canImport(Darwin)
            return unsafeBitCast(current.__sigaction_u.__sa_handler, to: Int.self) == unsafeBitCast(SIG_IGN, to: Int.self)
        #else
            return unsafeBitCast(current.__sigaction_handler.sa_handler, to: Int.self)
                == unsafeBitCast(SIG_IGN, to: Int.self)
        #endif
    }
}
