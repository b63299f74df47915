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

    package static func run(_ arguments: [String]) throws -> Int32 {
        try run(arguments.map { Array($0.utf8) })
    }

    /// Runs a command given as bytes (arguments and file names need not be UTF-8).
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
