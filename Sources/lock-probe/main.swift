// "Another process" for the tests. Takes a lock and reports over stdout, one line per event, then
// waits for orders on stdin. Tests synchronise on these lines, never on sleeps.
//
//   lock-probe hold PATH [--timeout S]      acquire (blocking, or with timeout), print
//                                            "acquired PID", then on stdin "release" release it,
//                                            print "released" and exit. EOF on stdin also releases.
//   lock-probe try PATH                      tryAcquire: "acquired PID" (then as hold) or "busy"
//   lock-probe increment PATH COUNTER N [--no-lock]
//                                            N times: lock, read the number in COUNTER, write it + 1,
//                                            unlock; prints "ready", waits for "go", prints "done"
//   lock-probe witness PATH WITNESS N        N times: lock, create WITNESS with O_EXCL (a second
//                                            holder at once would fail: prints "overlap"), remove
//                                            it, unlock; "ready", waits for "go", then "done"
//
// Option --kind kernel|soft picks FileLock (default) or SoftFileLock.
//
// Errors print "error CODE WAITED_MS HOLDER_PID message" and exit 3.

#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif
import FileLocking

/// Writes one line straight to stdout (no buffering: the tests wait for it).
func say(_ line: String) {
    let bytes = Array((line + "\n").utf8)
    _ = bytes.withUnsafeBytes { write(1, $0.baseAddress, $0.count) }
}

func fail(_ error: any Error) -> Never {
    if let error = error as? FileLockError {
        let waited = error.waited.map { String($0.components.seconds * 1000 + $0.components.attoseconds / 1_000_000_000_000_000) } ?? "-"
        say("error \(error.code) \(waited) \(error.holder.map { String($0.pid) } ?? "-") \(error.message)")
    } else {
        say("error other - - \(error)")
    }
    exit(3)
}

func waitForRelease(_ lock: any CrossProcessLock) -> Never {
    while let line = readLine() {
        if line == "release" { break }
    }
    lock.release()
    say("released")
    exit(0)
}

var arguments = Array(CommandLine.arguments.dropFirst())
@MainActor func option(_ name: String) -> String? {
    guard let index = arguments.firstIndex(of: name), index + 1 < arguments.count else { return nil }
    defer { arguments.removeSubrange(index...index + 1) }
    return arguments[index + 1]
}
@MainActor func flag(_ name: String) -> Bool {
    guard let index = arguments.firstIndex(of: name) else { return false }
    arguments.remove(at: index)
    return true
}

let timeoutText = option("--timeout")
let kind = option("--kind") ?? "kernel"
let withoutLock = flag("--no-lock")
guard arguments.count >= 2 else {
    say("usage: lock-probe hold|try|increment PATH ...")
    exit(2)
}
let command = arguments[0]
let path = arguments[1]

do {
    let lock: any CrossProcessLock = kind == "soft" ? try SoftFileLock(at: path) : try FileLock(at: path)
    switch command {
    case "hold":
        let timeout = try timeoutText.map { try FileLock.timeout(seconds: Double($0) ?? .nan, path: path) }
        try lock.acquire(timeout: timeout)
        say("acquired \(getpid())")
        waitForRelease(lock)
    case "try":
        if try lock.tryAcquire() {
            say("acquired \(getpid())")
            waitForRelease(lock)
        }
        say("busy")
    case "increment":
        guard arguments.count >= 4, let count = Int(arguments[3]) else {
            say("usage: lock-probe increment PATH COUNTER N")
            exit(2)
        }
        let counter = open(arguments[2], O_RDWR | O_CREAT | O_CLOEXEC, 0o644)
        guard counter >= 0 else {
            say("error io - - cannot open counter")
            exit(3)
        }
        say("ready")
        guard readLine() == "go" else { exit(2) }
        for _ in 0..<count {
            if !withoutLock { try lock.acquire(timeout: nil) }
            var buffer = [UInt8](repeating: 0, count: 32)
            let read = pread(counter, &buffer, 32, 0)
            let value = Int(String(decoding: buffer.prefix(max(0, read)), as: UTF8.self)) ?? 0
            let text = Array(String(value + 1).utf8)
            _ = pwrite(counter, text, text.count, 0)
            if !withoutLock { lock.release() }
        }
        close(counter)
        say("done")
    case "witness":
        guard arguments.count >= 4, let count = Int(arguments[3]) else {
            say("usage: lock-probe witness PATH WITNESS N")
            exit(2)
        }
        let witness = arguments[2]
        say("ready")
        guard readLine() == "go" else { exit(2) }
        var overlaps = 0
        for _ in 0..<count {
            try lock.acquire(timeout: .seconds(120))
            let created = open(witness, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o600)
            if created < 0 {
                overlaps += 1
            } else {
                sched_yield()
                close(created)
                unlink(witness)
            }
            lock.release()
        }
        say(overlaps == 0 ? "done" : "overlap \(overlaps)")
    default:
        say("unknown command \(command)")
        exit(2)
    }
} catch {
    fail(error)
}
