// "Another process" for the tests. Takes a lock and reports over stdout, one line per event, then
// waits for orders on stdin. Tests synchronise on these lines, never on sleeps.
//
//   lock-probe hold PATH [--timeout S]      acquire (blocking, or with timeout), print
//                                            "acquired PID", then on stdin "release" release it,
//                                            print "released" and exit. EOF on stdin also releases.
//   lock-probe try PATH                      tryAcquire: "acquired PID" (then as hold) or "busy"
//   lock-probe holder PATH                   prints "holder PID" (the lock's holder) or "holder none"
//   lock-probe increment PATH COUNTER N [--no-lock]
//                                            N times: lock, read the number in COUNTER, write it + 1,
//                                            unlock; prints "ready", waits for "go", prints "done"
//   lock-probe witness PATH WITNESS N        N times: lock, create WITNESS with O_EXCL (a second
//                                            holder at once would fail: prints "overlap"), remove
//                                            it, unlock; "ready", waits for "go", then "done"
//
//   lock-probe range-hold PATH START LENGTH [--shared] [--timeout S]
//                                            ByteRangeLock on the range: "acquired PID", then as hold
//   lock-probe range-try PATH START LENGTH   "acquired PID" (then as hold) or "busy"
//   lock-probe records PATH RECORDS N        N times: lock one 100-byte record (chosen at random),
//                                            bump its counter and rewrite its body in two halves;
//                                            "ready", waits for "go", then "done"
//
//   lock-probe race PATH                     rounds: on "go" tryAcquire once and print "won PID" or
//                                            "lost"; on "release" release if won, print "released"
//
//   lock-probe grant PATH                    ReadWriteLock: read lock and release ("read ok"), try the
//                                            write lock ("write ok" or "write CODE"), wait for a
//                                            line on stdin, try the write lock again ("write ...")
//   lock-probe fork-hold PATH [--while-held]
//                                            acquire and release, fork a child that idles until
//                                            stdin closes, acquire again, print "acquired PID
//                                            CHILDPID" (with --while-held: acquire, then fork), then
//                                            as hold; for tests that kill this holder
//   lock-probe pair PATH DATA N [--shared]  with --kind rw: N times, a writer (default) adds 1 to
//                                            both numbers in DATA ("A B"), one after the other with
//                                            a yield between; a reader (--shared) reads both and
//                                            counts the times they differ. "ready", waits for "go",
//                                            then "done TORN" (TORN: readings with A != B)
// --kind postgres is a PostgresLock named PATH on the server of --postgres URL (else the PG*
// variables), exclusive or with --shared shared; --heartbeat S sets its heartbeat interval.
// Option --kind kernel|soft|rw|soft-rw picks FileLock (default), SoftFileLock, ReadWriteLock or
// SoftReadWriteLock (the write lock, or with --shared the read lock); --heartbeat S and --stale S
// set a SoftReadWriteLock's intervals (a lost hold prints "lost REASON" when found); --kind lease
// is a SoftFileLease of --lease S (and --heartbeat S). For FileLock, --fallback
// sets fallsBackToSoft (and "hold"/"try" print "mechanism flock|marker" after "acquired"), and
// --removes-file sets removesFileOnRelease.
// --warnings sets FileLockWarnings.handler to print "warning CODE LOCKKIND FILESYSTEM MESSAGE"
// for each warning, and makes "hold", "try" and "range-hold" of the kernel kinds print
// "filesystem NAME" (the lock's networkFilesystem, or "local") after "acquired".
// increment --reopen opens COUNTER anew after each acquisition and closes it before the release
// (the close-to-open use that network filesystems need), with the number written 20 digits wide
// so the file's size never changes (a client's cached size cannot cut a read short).
//
// Errors print "error CODE WAITED_MS HOLDER_PID message" and exit 3.

#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif
import FileLocking
import PostgresLocking

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
let shared = flag("--shared")
let fallsBackToSoft = flag("--fallback")
let removesFile = flag("--removes-file")
let whileHeld = flag("--while-held")
let heartbeatText = option("--heartbeat")
let staleText = option("--stale")
let leaseText = option("--lease")
/// `--kind postgres`: the server's URL (else the PG* variables); PATH is the lock's name.
let postgresURL = option("--postgres")
/// A duration option in seconds.
func seconds(_ text: String?, or fallback: Duration?) -> Duration? {
    guard let text else { return fallback }
    return (try? FileLock.timeout(seconds: Double(text) ?? .nan, path: path)) ?? fallback
}
/// `hold` with `--kind soft-rw`: "generation N" (the hold's fencing token) after "acquired".
let saysGeneration = flag("--generation")
let printsWarnings = flag("--warnings")
let reopens = flag("--reopen")
if printsWarnings {
    FileLockWarnings.handler = { warning in
        say("warning \(warning.code) \(warning.lockKind) \(warning.filesystem.map(String.init(describing:)) ?? "-") \(warning.message)")
    }
}
guard arguments.count >= 2 else {
    say("usage: lock-probe hold|try|increment PATH ...")
    exit(2)
}
let command = arguments[0]
let path = arguments[1]

/// Runs the byte-range commands; `false` when `command` is not one of them.
@MainActor func runRangeCommand() throws -> Bool {
    guard command.hasPrefix("range-") || command == "records" else { return false }
    let file = try ByteRangeLock(at: path)
    func range(_ startIndex: Int) -> ByteRange {
        ByteRange(start: Int64(arguments[startIndex]) ?? -1, length: Int64(arguments[startIndex + 1]) ?? -1)
    }
    func holdUntilReleased(_ range: ByteRange) -> Never {
        say("acquired \(getpid())")
        if printsWarnings { say("filesystem \(file.networkFilesystem.map(String.init(describing:)) ?? "local")") }
        while let line = readLine(), line != "release" {}
        try? file.unlock(range)
        say("released")
        exit(0)
    }
    switch command {
    case "range-hold":
        let timeout = try timeoutText.map { try FileLock.timeout(seconds: Double($0) ?? .nan, path: path) }
        try file.lock(range(2), mode: shared ? .shared : .exclusive, timeout: timeout)
        holdUntilReleased(range(2))
    case "range-try":
        if try file.tryLock(range(2), mode: shared ? .shared : .exclusive) { holdUntilReleased(range(2)) }
        say("busy")
    case "records":
        let records = Int(arguments[2]) ?? 0
        let count = Int(arguments[3]) ?? 0
        say("ready")
        guard readLine() == "go" else { exit(2) }
        for _ in 0..<count {
            let record = Int64.random(in: 0..<Int64(records))
            let bytes = ByteRange(start: record * 100, length: 100)
            try file.withLock(bytes, timeout: .seconds(120)) {
                let old = try file.read(count: 100, at: bytes.start)
                var counter: UInt64 = 0
                for (index, byte) in old.prefix(8).enumerated() { counter |= UInt64(byte) << (8 * UInt64(index)) }
                counter += 1
                var new = (0..<8).map { UInt8(truncatingIfNeeded: counter >> (8 * UInt64($0))) }
                new += [UInt8](repeating: UInt8(truncatingIfNeeded: counter % 251), count: 92)
                // Two halves with a pause: unserialised writers would tear the record.
                try file.write(Array(new[50...]), at: bytes.start + 50)
                sched_yield()
                try file.write(Array(new[..<50]), at: bytes.start)
            }
        }
        say("done")
    default:
        say("unknown command \(command)")
        exit(2)
    }
    return true
}

do {
    if try runRangeCommand() { exit(0) }
    if command == "grant" {
        let readWrite = try ReadWriteLock(at: path)
        try readWrite.withReadLock(timeout: .seconds(10)) {}
        say("read ok")
        func tryWriting() {
            do {
                try readWrite.acquireWrite(timeout: .seconds(10))
                readWrite.release()
                say("write ok")
            } catch let error as FileLockError {
                say("write \(error.code)")
            } catch {
                say("write \(error)")
            }
        }
        tryWriting()
        _ = readLine()
        tryWriting()
        exit(0)
    }
    let softReadWrite =
        kind == "soft-rw"
        ? try SoftReadWriteLock(
            at: path, heartbeatInterval: seconds(heartbeatText, or: .seconds(30))!,
            staleThreshold: seconds(staleText, or: nil),
            onLoss: { loss in say("lost \(loss.reason)") }) : nil
    let lock: any CrossProcessLock =
        switch kind {
        case "soft": try SoftFileLock(at: path)
        case "rw": shared ? try ReadWriteLock(at: path).readLock : try ReadWriteLock(at: path).writeLock
        case "lease":
            try SoftFileLease(
                at: path, duration: seconds(leaseText, or: .seconds(30))!, heartbeatInterval: seconds(heartbeatText, or: nil),
                onLoss: { loss in say("lost \(loss.reason)") })
        case "soft-rw": shared ? softReadWrite!.readLock : softReadWrite!.writeLock
        case "postgres":
            try {
                let lock = try PostgresLock(
                    name: path, server: PostgresConnectionSettings(url: postgresURL),
                    heartbeatInterval: seconds(heartbeatText, or: .seconds(2))!,
                    onLoss: { loss in say("lost \(loss.reason)") })
                return shared ? lock.readLock : lock.writeLock
            }()
        default: try FileLock(at: path, fallsBackToSoft: fallsBackToSoft, removesFileOnRelease: removesFile)
        }
    func sayMechanism() {
        if printsWarnings {
            // Only the kernel kinds tell their filesystem.
            let filesystem: NetworkFilesystem?? =
                switch lock {
                case let lock as FileLock: .some(lock.networkFilesystem)
                case is ReadWriteLock.Side: .some(try? ReadWriteLock(at: path).networkFilesystem)
                default: nil
                }
            if let filesystem { say("filesystem \(filesystem.map(String.init(describing:)) ?? "local")") }
        }
        guard fallsBackToSoft, let lock = lock as? FileLock else { return }
        say("mechanism \(lock.mechanism.map { "\($0)" } ?? "unknown")")
    }
    switch command {
    case "hold":
        let timeout = try timeoutText.map { try FileLock.timeout(seconds: Double($0) ?? .nan, path: path) }
        try lock.acquire(timeout: timeout)
        say("acquired \(getpid())")
        sayMechanism()
        if saysGeneration { say("generation \(softReadWrite.flatMap(\.fencingToken).map(String.init) ?? "-")") }
        waitForRelease(lock)
    case "holder":
        say("holder \(lock.holder.map { String($0.pid) } ?? "none")")
    case "fork-hold":
        if !whileHeld {
            try lock.acquire(timeout: .seconds(60))
            lock.release()
        } else {
            try lock.acquire(timeout: .seconds(60))
        }
        // The child tells it runs (its fork handlers, which point its copies of the library's lock
        // files elsewhere, have run by then) before the parent reports: else a test that kills
        // the parent at once could find the lock still held by a child not yet scheduled.
        var started: [Int32] = [0, 0]
        guard pipe(&started) == 0 else {
            say("error io - - pipe")
            exit(3)
        }
        let child = fork()
        if child == 0 {
            var byte: UInt8 = 1
            close(started[0])
            _ = write(started[1], &byte, 1)
            close(started[1])
            while read(0, &byte, 1) > 0 {}
            _exit(0)
        }
        close(started[1])
        var signal: UInt8 = 0
        _ = read(started[0], &signal, 1)
        close(started[0])
        if !whileHeld { try lock.acquire(timeout: .seconds(60)) }
        say("acquired \(getpid()) \(child)")
        waitForRelease(lock)
    case "pair":
        guard arguments.count >= 4, let count = Int(arguments[3]) else {
            say("usage: lock-probe pair PATH DATA N [--shared]")
            exit(2)
        }
        let data = open(arguments[2], O_RDWR | O_CREAT | O_CLOEXEC, 0o644)
        guard data >= 0 else {
            say("error io - - cannot open data file")
            exit(3)
        }
        /// The two numbers, each in a 32-byte field (so that a writer can change one at a time).
        func field(_ index: Int) -> Int {
            var buffer = [UInt8](repeating: 0, count: 32)
            let read = pread(data, &buffer, 32, off_t(index * 32))
            return Int(String(decoding: buffer.prefix(max(0, read)).prefix { $0 != 0 }, as: UTF8.self)) ?? 0
        }
        func setField(_ index: Int, _ value: Int) {
            var text = Array(String(value).utf8)
            text += [UInt8](repeating: 0, count: 32 - text.count)
            _ = pwrite(data, text, 32, off_t(index * 32))
        }
        say("ready")
        guard readLine() == "go" else { exit(2) }
        var torn = 0
        for _ in 0..<count {
            if !withoutLock { try lock.acquire(timeout: .seconds(120)) }
            if shared {
                let first = field(0)
                sched_yield()
                if field(1) != first { torn += 1 }
            } else {
                setField(0, field(0) + 1)
                sched_yield()
                setField(1, field(1) + 1)
            }
            if !withoutLock { lock.release() }
        }
        close(data)
        say("done \(torn)")
    case "try":
        if try lock.tryAcquire() {
            say("acquired \(getpid())")
            sayMechanism()
            waitForRelease(lock)
        }
        say("busy")
    case "increment":
        guard arguments.count >= 4, let count = Int(arguments[3]) else {
            say("usage: lock-probe increment PATH COUNTER N")
            exit(2)
        }
        func openCounter() -> Int32 {
            let counter = open(arguments[2], O_RDWR | O_CREAT | O_CLOEXEC, 0o644)
            guard counter >= 0 else {
                say("error io - - cannot open counter")
                exit(3)
            }
            return counter
        }
        var counter = reopens ? -1 : openCounter()
        say("ready")
        guard readLine() == "go" else { exit(2) }
        for _ in 0..<count {
            if !withoutLock { try lock.acquire(timeout: nil) }
            if reopens { counter = openCounter() }
            var buffer = [UInt8](repeating: 0, count: 32)
            let read = pread(counter, &buffer, 32, 0)
            let digits = buffer.prefix(max(0, read)).drop { $0 == UInt8(ascii: "0") }
            let value = digits.isEmpty ? 0 : Int(String(decoding: digits, as: UTF8.self)) ?? 0
            var text = String(value + 1)
            if reopens { text = String(repeating: "0", count: max(0, 20 - text.count)) + text }
            let bytes = Array(text.utf8)
            _ = pwrite(counter, bytes, bytes.count, 0)
            if reopens {
                close(counter)
                counter = -1
            }
            if !withoutLock { lock.release() }
        }
        if counter >= 0 { close(counter) }
        say("done")
    case "race":
        while let line = readLine() {
            guard line == "go" else { break }
            let won = try lock.tryAcquire()
            say(won ? "won \(getpid())" : "lost")
            guard readLine() == "release" else { break }
            if won { lock.release() }
            say("released")
        }
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
