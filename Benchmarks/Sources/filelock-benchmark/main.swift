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
