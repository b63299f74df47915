#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif
@testable import FileLocking
import Subprocesses
import Testing

/// Values at the edges of their types, passed to the public API: each is a clear `FileLockError`
/// or a saturated meaning, never a trap (a trap would kill the test process).
@Suite("Caller values at the edges")
struct CallerValueTests {
    let folder: TemporaryFolder
    init() throws { folder = try TemporaryFolder() }

    /// Durations far beyond what `Duration.components` or nanoseconds in an `Int64` can hold.
    static let hugeDurations: [Duration] = [
        .nanoseconds(Int64.max), .seconds(Int64.max), .seconds(Int64.max) * 10,
        Duration(secondsComponent: Int64.max, attosecondsComponent: 999_999_999_999_999_999),
    ]

    // MARK: Timeouts in seconds (the command line's -w)

    @Test(arguments: [9.3e9, 1e10, 999_999_999_999.0, 1e12, 1e18, 9.3e18, 1e300, Double.greatestFiniteMagnitude])
    func hugeSecondsMeanPracticallyForever(seconds: Double) throws {
        let timeout = try FileLock.timeout(seconds: seconds, path: "x.lock")
        #expect(timeout >= .seconds(9_300_000_000))
        #expect(timeout <= .seconds(Int64.max))
    }

    @Test func secondsBeyondInt64NanosecondsKeepTheirFraction() throws {
        #expect(try FileLock.timeout(seconds: 1e10 + 0.5, path: "x") == .seconds(10_000_000_000) + .milliseconds(500))
        #expect(try FileLock.timeout(seconds: 0.25, path: "x") == .milliseconds(250))
    }

    @Test func theCommandAcceptsAHugeTimeout() throws {
        let path = folder.file("huge-timeout.lock")
        for seconds in ["1e10", "999999999999"] {
            let run = try ChildProcess(TestEnvironment.tool, ["run", "-w", seconds, path, "--", "true"])
            #expect(try run.waitForExit() == 0, "filelock run -w \(seconds) exits like the command")
        }
    }

    // MARK: Durations through the engine

    @Test(arguments: hugeDurations)
    func aHugeTimeoutOrPollIntervalWaitsUntilCancelled(duration: Duration) throws {
        let cancelled: @Sendable () -> Bool = { true }

        let path = folder.file("kernel.lock")
        let holder = try FileLock(at: path)
        try holder.acquire()
        let waiter = try FileLock(at: path, timeout: duration, pollInterval: duration)
        let kernelError = errorThrown { try waiter.acquire(timeout: duration, cancelCheck: cancelled) }
        #expect((kernelError as? FileLockError)?.code == .cancelled, "\(String(describing: kernelError))")
        holder.release()

        let softPath = folder.file("soft.lock")
        let softHolder = try SoftFileLock(at: softPath)
        try softHolder.acquire()
        let softWaiter = try SoftFileLock(at: softPath, timeout: duration, lifetime: duration, pollInterval: duration)
        let softError = errorThrown { try softWaiter.acquire(timeout: duration, cancelCheck: cancelled) }
        #expect((softError as? FileLockError)?.code == .cancelled, "\(String(describing: softError))")
        softHolder.release()

        let rangePath = folder.file("range.bin")
        let rangeHolder = try ByteRangeLock(at: rangePath)
        try rangeHolder.lock(ByteRange(start: 0, length: 10))
        let rangeWaiter = try ByteRangeLock(at: rangePath, pollInterval: duration)
        let rangeError = errorThrown {
            try rangeWaiter.lock(ByteRange(start: 5, length: 10), timeout: duration, cancelCheck: cancelled)
        }
        #expect((rangeError as? FileLockError)?.code == .cancelled, "\(String(describing: rangeError))")
    }

    @Test func aHugeTimeoutInATaskEndsWithCancellation() async throws {
        let path = folder.file("task.lock")
        let holder = try FileLock(at: path)
        try await holder.acquire()
        defer { holder.release() }
        let waiter = try FileLock(at: path)
        let timeout = Duration.seconds(Int64.max) * 10
        let task = Task { try await waiter.acquire(timeout: timeout) }
        guard await eventually("the task waits in the kernel", { waiter.waiterCount > 0 }) else { return }
        task.cancel()
        await #expect(throws: CancellationError.self) { try await task.value }
    }

    @Test func durationsSaturateAsNanoseconds() {
        #expect((Duration.seconds(Int64.max) * 10).totalNanoseconds == .max)
        #expect((Duration.seconds(Int64.min) * 10).totalNanoseconds == .min)
        #expect(Duration.nanoseconds(Int64.min).totalNanoseconds == .min)
        #expect(Duration.nanoseconds(-1_500_000_001).totalNanoseconds == -1_500_000_001)
        #expect(Duration.seconds(0.5e-9).totalNanoseconds == 0, "sub-nanosecond rounds toward zero")
        #expect(Duration.milliseconds(-999).formattedSeconds == "-0.999 s")
        #expect((Duration.seconds(Int64.max) * 10).formattedSeconds == "9223372036.854 s")
    }
}
