// PostgresLock against a raw advisory-lock loop on one PostgresNIO connection, in one run.
// Run by Benchmarks/postgres.sh, which starts a throw-away server.
//
//   postgres-benchmark cycle-raw URL N     N x (pg_advisory_lock; pg_advisory_unlock) on one
//                                          connection: prints ns per cycle
//   postgres-benchmark cycle-lock URL N    N x PostgresLock acquire+release (synchronous): ns/cycle
//   postgres-benchmark cycle-async URL N   the same from a task
//   postgres-benchmark wake-raw URL N      N rounds: a holder in another process releases, the
//   postgres-benchmark wake-lock URL N     waiter here (raw pg_advisory_lock, or PostgresLock)
//                                          wakes; prints "P50 P99" in ns from release to acquired
//   postgres-benchmark holder URL          (the other process) on "hold": locks, "held"; on
//                                          "release": unlocks, prints the monotonic ns just before

#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif
import FileLocking
import Logging
import PostgresLocking
import PostgresNIO
import Subprocesses

let key: Int64 = 0x66_6c_6f_63_6b_62  // "flockb"
let name = "filelock-benchmark"
let logger = Logger(label: "benchmark", factory: { _ in SwiftLogNoOpLogHandler() })

func monotonicNanoseconds() -> UInt64 {
    var time = timespec()
    clock_gettime(CLOCK_MONOTONIC, &time)
    return UInt64(time.tv_sec) * 1_000_000_000 + UInt64(time.tv_nsec)
}

func say(_ line: String) {
    let bytes = Array((line + "\n").utf8)
    _ = bytes.withUnsafeBytes { write(1, $0.baseAddress, $0.count) }
}

/// A connection of its own for the raw baseline, made from the same settings.
func rawConnection(_ settings: PostgresConnectionSettings) async throws -> PostgresConnection {
    var configuration: PostgresConnection.Configuration
    switch settings.endpoint {
    case .unixSocket:
        configuration = .init(
            unixSocketPath: settings.server, username: settings.user, password: settings.password, database: settings.database)
    case .tcp(let host, let port):
        configuration = .init(
            host: host, port: port, username: settings.user, password: settings.password, database: settings.database,
            tls: .disable)
    }
    return try await PostgresConnection.connect(configuration: configuration, id: 1, logger: logger)
}

/// Runs `query` to its end (every row read: the statement has finished on the server).
func run(_ connection: PostgresConnection, _ query: PostgresQuery) async throws {
    for try await _ in try await connection.query(query, logger: logger) {}
}

/// The lock's key as the lock computes it (`hashtextextended(name, 0)`), for the raw side.
func nameKey(_ connection: PostgresConnection) async throws -> Int64 {
    let rows = try await connection.query("SELECT hashtextextended(\(name), 0)", logger: logger)
    for try await value in rows.decode(Int64.self) { return value }
    return key
}

let arguments = CommandLine.arguments
guard arguments.count >= 3 else {
    say("usage: postgres-benchmark cycle-raw|cycle-lock|cycle-async|wake-raw|wake-lock|holder URL [N]")
    exit(2)
}
let mode = arguments[1]
let settings = try PostgresConnectionSettings(url: arguments[2])
let count = arguments.count > 3 ? Int(arguments[3]) ?? 1000 : 1000

switch mode {
case "cycle-raw":
    // Both async loops run in a task off the main actor (each hop back to it would cost alike).
    try await Task.detached {
        let connection = try await rawConnection(settings)
        let k = try await nameKey(connection)
        for _ in 0..<100 {
            try await run(connection, "SELECT pg_advisory_lock(\(k))")
            try await run(connection, "SELECT pg_advisory_unlock(\(k))")
        }
        let start = monotonicNanoseconds()
        for _ in 0..<count {
            try await run(connection, "SELECT pg_advisory_lock(\(k))")
            try await run(connection, "SELECT pg_advisory_unlock(\(k))")
        }
        say("\((monotonicNanoseconds() - start) / UInt64(count))")
        try await connection.closeGracefully()
    }.value
case "cycle-lock":
    let lock = try PostgresLock(name: name, server: settings)
    for _ in 0..<100 {
        try lock.acquire()
        lock.release()
    }
    let start = monotonicNanoseconds()
    for _ in 0..<count {
        try lock.acquire()
        lock.release()
    }
    say("\((monotonicNanoseconds() - start) / UInt64(count))")
case "cycle-async":
    try await Task.detached {
        let lock = try PostgresLock(name: name, server: settings)
        for _ in 0..<100 {
            try await lock.withLock { () async in }
        }
        let start = monotonicNanoseconds()
        for _ in 0..<count {
            try await lock.withLock { () async in }
        }
        say("\((monotonicNanoseconds() - start) / UInt64(count))")
    }.value
case "holder":
    let connection = try await rawConnection(settings)
    let k = try await nameKey(connection)
    while let line = readLine() {
        switch line {
        case "hold":
            try await run(connection, "SELECT pg_advisory_lock(\(k))")
            say("held")
        case "release":
            let released = monotonicNanoseconds()
            try await run(connection, "SELECT pg_advisory_unlock(\(k))")
            say("\(released)")
        default:
            break
        }
    }
    try await connection.closeGracefully()
case "wake-raw", "wake-lock":
    let holder = try ChildProcess(arguments[0], ["holder", arguments[2]])
    let raw = mode == "wake-raw" ? try await rawConnection(settings) : nil
    var k = key
    if let raw { k = try await nameKey(raw) }
    // Acquired in the waiting task, released here: the hold belongs to the lock object.
    let lock = try PostgresLock(name: name, server: settings, ownership: .lockObject)
    var latencies: [UInt64] = []
    for _ in 0..<count {
        holder.send("hold")
        _ = try holder.expectLine(startingWith: "held")
        let waiter = Task {
            if let raw {
                try await run(raw, "SELECT pg_advisory_lock(\(k))")
            } else {
                try await lock.acquire()
            }
            return monotonicNanoseconds()
        }
        // Time for the waiter to reach the server and wait there.
        try await Task.sleep(for: .milliseconds(10))
        holder.send("release")
        let released = UInt64(try holder.readLine()) ?? 0
        let acquired = try await waiter.value
        latencies.append(acquired > released ? acquired - released : 0)
        if let raw {
            try await run(raw, "SELECT pg_advisory_unlock(\(k))")
        } else {
            lock.release()
        }
    }
    holder.closeInput()
    _ = try holder.waitForExit()
    latencies.sort()
    say("\(latencies[latencies.count / 2]) \(latencies[min(latencies.count - 1, latencies.count * 99 / 100)])")
    try await raw?.closeGracefully()
default:
    say("unknown mode \(mode)")
    exit(2)
}
