// The Swift side of the benchmark; run.sh compares its numbers with C and Python in one run.
//
//   filelock-benchmark cycle PATH N             ns per FileLock acquire+release
//   filelock-benchmark reacquire PATH N         ns per acquire+release while already held (reentrant)
//   filelock-benchmark waiter PATH MODE         like the C waiter: on each "go" line acquire, print the
//                                               monotonic ns at wake-up, release. MODE: blocking |
//                                               timeout (acquire(timeout: 60 s)) | async
//   filelock-benchmark soft-cycle PATH N        ns per SoftFileLock acquire+release
//   filelock-benchmark soft-waiter PATH [MODE]  waiter (as above) with SoftFileLock; MODE blocking
//                                               (acquire(timeout: nil), the default) | async
//   filelock-benchmark range-cycle PATH N       ns per ByteRangeLock lock + unlock of bytes 100-199
//   filelock-benchmark range-waiter PATH        waiter (as above) locking bytes 0-99 with ByteRangeLock
//   filelock-benchmark rw-cycle PATH N read|write
//                                               ns per ReadWriteLock acquireRead/acquireWrite + release
//   filelock-benchmark rw-waiter PATH read|write [async]
//                                               waiter (as above) taking ReadWriteLock's read or write
//                                               lock (acquire(timeout: nil), or async with a timeout)
//   filelock-benchmark srw-cycle PATH N read|write
//                                               ns per SoftReadWriteLock acquireRead/acquireWrite + release
//   filelock-benchmark lease-cycle PATH N       ns per SoftFileLease acquire + release
//   filelock-benchmark srw-wake PATH N read|write|lease CMD...
//                                               the holder for wake-ups of the heartbeat kinds (no C
//                                               program speaks their protocols): N times holds the write
//                                               lock (or the lease), starts nothing new but tells the
//                                               waiter CMD (started once) "go", waits 20 ms, notes the
//                                               time, releases, and prints the waiter's wake-up delay
//   filelock-benchmark srw-waiter PATH read|write|lease
//                                               the waiter: on each "go" acquire, print the monotonic ns
//                                               at wake-up, release
//   filelock-benchmark contend kernel|soft|range PATH COUNTER N
//                                               one contender (see baseline.c contend-worker): "ready",
//                                               wait for "go", N times lock (FileLock, SoftFileLock, or
//                                               ByteRangeLock bytes 0-99), read-increment-write COUNTER,
//                                               unlock; print the longest single wait in ns

#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif
import FileLocking

func nowNanoseconds() -> Int64 {
    var time = timespec()
    clock_gettime(CLOCK_MONOTONIC, &time)
    return Int64(time.tv_sec) * 1_000_000_000 + Int64(time.tv_nsec)
}

func say(_ line: String) {
    let bytes = Array((line + "\n").utf8)
    _ = bytes.withUnsafeBytes { write(1, $0.baseAddress, $0.count) }
}

let arguments = CommandLine.arguments
guard arguments.count >= 4 || (arguments.count == 3 && arguments[1].hasSuffix("-waiter")) else {
    say("usage: filelock-benchmark cycle|reacquire PATH N | waiter PATH blocking|timeout|async")
    exit(2)
}
let path = arguments[2]
if arguments[1] == "contend" {
    guard arguments.count >= 6, let count = Int(arguments[5]) else {
        say("usage: filelock-benchmark contend kernel|soft|range PATH COUNTER N")
        exit(2)
    }
    let kind = arguments[2]
    let lockPath = arguments[3]
    let counter = open(arguments[4], O_RDWR | O_CLOEXEC)
    guard counter >= 0 else {
        say("cannot open \(arguments[4])")
        exit(1)
    }
    let acquire: () throws -> Void
    let release: () throws -> Void
    switch kind {
    case "kernel", "soft":
        let lock: any CrossProcessLock = kind == "soft" ? try SoftFileLock(at: lockPath) : try FileLock(at: lockPath)
        acquire = { try lock.acquire(timeout: nil) }
        release = { lock.release() }
    case "range":
        let file = try ByteRangeLock(at: lockPath)
        let record = ByteRange(start: 0, length: 100)
        acquire = { try file.lock(record, timeout: nil) }
        release = { try file.unlock(record) }
    default:
        say("unknown kind \(kind)")
        exit(2)
    }
    say("ready")
    guard readLine() != nil else { exit(2) }
    var longest: Int64 = 0
    var buffer = [UInt8](repeating: 0, count: 32)
    for _ in 0..<count {
        let start = nowNanoseconds()
        try acquire()
        longest = max(longest, nowNanoseconds() - start)
        let read = pread(counter, &buffer, 32, 0)
        let value = Int(String(decoding: buffer.prefix(max(0, read)), as: UTF8.self)) ?? 0
        let text = Array(String(value + 1).utf8)
        _ = pwrite(counter, text, text.count, 0)
        try release()
    }
    close(counter)
    say(String(longest))
    exit(0)
}
if arguments[1].hasPrefix("range-") {
    let file = try ByteRangeLock(at: path)
    if arguments[1] == "range-cycle" {
        let count = Int(arguments[3])!
        let record = ByteRange(start: 100, length: 100)
        let start = nowNanoseconds()
        for _ in 0..<count {
            try file.lock(record, timeout: nil)
            try file.unlock(record)
        }
        say(String(Double(nowNanoseconds() - start) / Double(count)))
    } else {
        let record = ByteRange(start: 0, length: 100)
        while readLine() != nil {
            try file.lock(record, timeout: nil)
            let woke = nowNanoseconds()
            try file.unlock(record)
            say(String(woke))
        }
    }
    exit(0)
}
if arguments[1].hasPrefix("srw-") || arguments[1].hasPrefix("lease-") {
    let mode = arguments.count > 4 ? arguments[4] : (arguments.count > 3 ? arguments[3] : "write")
    func makeLock(_ mode: String) throws -> any CrossProcessLock {
        if mode == "lease" || arguments[1] == "lease-cycle" { return try SoftFileLease(at: path) }
        let lock = try SoftReadWriteLock(at: path, isSingleton: false)
        return mode == "read" ? lock.readLock : lock.writeLock
    }
    switch arguments[1] {
    case "srw-cycle", "lease-cycle":
        let count = Int(arguments[3])!
        let lock = try makeLock(mode)
        let start = nowNanoseconds()
        for _ in 0..<count {
            try lock.acquire(timeout: nil)
            lock.release()
        }
        say(String(Double(nowNanoseconds() - start) / Double(count)))
    case "srw-waiter":
        let lock = try makeLock(arguments[3])
        while readLine() != nil {
            try lock.acquire(timeout: nil)
            let woke = nowNanoseconds()
            lock.release()
            say(String(woke))
        }
    case "srw-wake":
        let count = Int(arguments[3])!
        let holder = try makeLock(arguments[4] == "lease" ? "lease" : "write")
        let waiter = try Waiter(Array(arguments.dropFirst(5)))
        for _ in 0..<count {
            try holder.acquire(timeout: nil)
            waiter.send("go")
            usleep(20_000)
            let released = nowNanoseconds()
            holder.release()
            guard let line = waiter.readLine(), let woke = Int64(line) else { exit(1) }
            say(String(woke - released))
            // The waiter releases right after waking; wait for it so the next hold is ours at once.
            usleep(2_000)
        }
    default:
        say("unknown command \(arguments[1])")
        exit(2)
    }
    exit(0)
}
if arguments[1].hasPrefix("rw-") {
    let readWrite = try ReadWriteLock(at: path, isSingleton: false)
    if arguments[1] == "rw-cycle", arguments.count >= 5 {
        let count = Int(arguments[3])!
        let side = arguments[4] == "write" ? readWrite.writeLock : readWrite.readLock
        let start = nowNanoseconds()
        for _ in 0..<count {
            try side.acquire(timeout: nil)
            side.release()
        }
        say(String(Double(nowNanoseconds() - start) / Double(count)))
    } else {
        let side = arguments[3] == "write" ? readWrite.writeLock : readWrite.readLock
        let isAsync = arguments.count > 4 && arguments[4] == "async"
        while readLine() != nil {
            if isAsync {
                let done = Atomicish()
                Task.detached {
                    try await side.acquire(timeout: .seconds(60))
                    done.set(nowNanoseconds())
                }
                let woke = done.wait()
                side.release(force: true)
                say(String(woke))
                continue
            }
            try side.acquire(timeout: nil)
            let woke = nowNanoseconds()
            side.release()
            say(String(woke))
        }
    }
    exit(0)
}
let lock: any CrossProcessLock = arguments[1].hasPrefix("soft") ? try SoftFileLock(at: path) : try FileLock(at: path)

switch arguments[1] {
case "cycle", "soft-cycle":
    let count = Int(arguments[3])!
    let start = nowNanoseconds()
    for _ in 0..<count {
        try lock.acquire(timeout: nil)
        lock.release()
    }
    say(String(Double(nowNanoseconds() - start) / Double(count)))
case "reacquire":
    let count = Int(arguments[3])!
    try lock.acquire(timeout: nil)
    let start = nowNanoseconds()
    for _ in 0..<count {
        try lock.acquire(timeout: nil)
        lock.release()
    }
    say(String(Double(nowNanoseconds() - start) / Double(count)))
    lock.release()
case "waiter", "soft-waiter":
    let mode = arguments.count > 3 ? arguments[3] : "blocking"
    while readLine() != nil {
        switch mode {
        case "blocking": try lock.acquire(timeout: nil)
        case "timeout": try lock.acquire(timeout: .seconds(60))
        case "async":
            let done = Atomicish()
            // Detached: top-level code is on the main actor, which waits below.
            Task.detached {
                try await lock.acquire(timeout: .seconds(60))
                done.set(nowNanoseconds())
            }
            let woke = done.wait()
            lock.release(force: true)
            say(String(woke))
            continue
        default:
            say("unknown mode \(mode)")
            exit(2)
        }
        let woke = nowNanoseconds()
        lock.release()
        say(String(woke))
    }
default:
    say("unknown command \(arguments[1])")
    exit(2)
}

/// A value handed from a task to the main thread.
final class Atomicish: @unchecked Sendable {
    private var mutex = pthread_mutex_t()
    private var condition = pthread_cond_t()
    private var value: Int64?
    init() {
        pthread_mutex_init(&mutex, nil)
        pthread_cond_init(&condition, nil)
    }
    func set(_ value: Int64) {
        pthread_mutex_lock(&mutex)
        self.value = value
        pthread_cond_signal(&condition)
        pthread_mutex_unlock(&mutex)
    }
    func wait() -> Int64 {
        pthread_mutex_lock(&mutex)
        while value == nil { pthread_cond_wait(&condition, &mutex) }
        defer { pthread_mutex_unlock(&mutex) }
        return value!
    }
}

/// A child process with its stdin and stdout piped (the waiter of `srw-wake`).
final class Waiter {
    let input: Int32
    let output: UnsafeMutablePointer<FILE>

    init(_ command: [String]) throws {
        var toChild: [Int32] = [0, 0]
        var fromChild: [Int32] = [0, 0]
        guard pipe(&toChild) == 0, pipe(&fromChild) == 0 else { throw CancellationError() }
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        posix_spawn_file_actions_adddup2(&actions, toChild[0], 0)
        posix_spawn_file_actions_adddup2(&actions, fromChild[1], 1)
        posix_spawn_file_actions_addclose(&actions, toChild[1])
        posix_spawn_file_actions_addclose(&actions, fromChild[0])
        var pid: pid_t = 0
        let argv = command.map { strdup($0) } + [nil]
        defer { for pointer in argv { free(pointer) } }
        guard posix_spawn(&pid, command[0], &actions, nil, argv, environ) == 0 else { throw CancellationError() }
        posix_spawn_file_actions_destroy(&actions)
        close(toChild[0])
        close(fromChild[1])
        input = toChild[1]
        output = fdopen(fromChild[0], "r")
    }

    func send(_ line: String) {
        let bytes = Array((line + "\n").utf8)
        _ = bytes.withUnsafeBytes { write(input, $0.baseAddress, $0.count) }
    }

    func readLine() -> String? {
        var buffer = [CChar](repeating: 0, count: 256)
        guard fgets(&buffer, 256, output) != nil else { return nil }
        let bytes = buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }
        return String(decoding: bytes, as: UTF8.self).trimmingCharacters(in: "\n")
    }
}

extension String {
    fileprivate func trimmingCharacters(in character: Character) -> String {
        var text = self
        while text.last == character { text.removeLast() }
        return text
    }
}
