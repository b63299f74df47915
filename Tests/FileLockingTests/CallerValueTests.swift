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

    // MARK: ByteRangeLock counts, offsets and ranges

    @Test func readingANegativeCountIsAClearError() throws {
        let path = folder.file("negative-count.bin")
        let file = try ByteRangeLock(at: path)
        let error = #expect(throws: FileLockError.self) { _ = try file.read(count: -1, at: 0) }
        #expect(error?.code == .invalidConfiguration)
        #expect(error?.message.contains(path) == true)
    }

    @Test func readingAHugeCountReadsWhatIsThere() throws {
        let file = try ByteRangeLock(at: folder.file("huge-count.bin"))
        try file.write([1, 2, 3], at: 0)
        #expect(try file.read(count: .max, at: 0) == [1, 2, 3])
        #expect(try file.read(count: .max, at: 1) == [2, 3])
        #expect(try file.read(count: .max, at: .max) == [])
        #expect(try file.read(count: 0, at: 0) == [])
    }

    @Test func negativeOffsetsAreAClearError() throws {
        let path = folder.file("negative-offset.bin")
        let file = try ByteRangeLock(at: path)
        for error in [
            errorThrown { _ = try file.read(count: 1, at: -1) },
            errorThrown { try file.write([1], at: .min) },
            errorThrown { try file.seek(to: -1) },
        ] {
            let failure = error as? FileLockError
            #expect(failure?.code == .invalidConfiguration, "\(String(describing: error))")
            #expect(failure?.message.contains(path) == true)
        }
    }

    @Test func seekingBeyondTheFilesystemsLargestFileIsAClearError() throws {
        let path = folder.file("seek-far.bin")
        let file = try ByteRangeLock(at: path)
        try file.seek(to: 1 << 20)
        #expect(try file.offset == 1 << 20)
        // ext4 ends files at 16 TiB and says EINVAL beyond; tmpfs lets the offset reach Int64.max.
        let error = errorThrown { try file.seek(to: .max) }
        if let error {
            let failure = error as? FileLockError
            #expect(failure?.code == .invalidConfiguration, "\(error)")
            #expect(failure?.message.contains(path) == true)
        }
    }

    @Test func writingPastTheLargestOffsetIsAClearError() throws {
        let path = folder.file("past-max.bin")
        let file = try ByteRangeLock(at: path)
        let error = #expect(throws: FileLockError.self) { try file.write([1, 2], at: .max) }
        #expect(error?.code == .invalidConfiguration)
        #expect(error?.message.contains(path) == true)
    }

    @Test func aNestedWithLockOfAnOverflowingRangeIsRejected() throws {
        let path = folder.file("nested-overflow.bin")
        let file = try ByteRangeLock(at: path)
        var errors: [(any Error)?] = []
        try file.withLock(ByteRange(start: 0, length: 10)) {
            errors.append(errorThrown { try file.withLock(ByteRange(start: .max, length: .max)) {} })
            errors.append(errorThrown { try file.withLock(ByteRange(start: 5, length: .min)) {} })
        }
        for error in errors {
            let failure = error as? FileLockError
            #expect(failure?.code == .invalidConfiguration, "\(String(describing: error))")
            #expect(failure?.message.contains("invalid byte range") == true)
        }
    }

    @Test func invalidRangesStillDescribeThemselves() {
        #expect(ByteRange(start: 0, length: .min).description == "bytes 0 with length -9223372036854775808")
        #expect(ByteRange(start: .min, length: -1).description.contains("-1"))
        #expect(ByteRange(start: .max, length: .max).description.contains("beyond"))
        #expect(!ByteRange(start: 0, length: .max).overlaps(ByteRange(start: 0, length: -1)))
        #expect(ByteRange(start: .max, length: .max).overlaps(ByteRange(start: .max - 1, length: 5)))
    }

    @Test func permissionsBeyondPermissionBitsAreRejectedBeforeCreating() throws {
        let path = folder.file("permissions.bin")
        let error = #expect(throws: FileLockError.self) { _ = try ByteRangeLock(at: path, filePermissions: .max) }
        #expect(error?.code == .invalidConfiguration)
        #expect(error?.message.contains(path) == true)
        #expect(access(path, F_OK) != 0, "nothing was created")
    }

    @Test func unixTimeDescribesNanosecondsOutsideASecond() {
        #expect(UnixTime(seconds: 0, nanoseconds: 2_000_000_000).description == "1970-01-01T00:00:02Z")
        #expect(UnixTime(seconds: 0, nanoseconds: -1).description == "1969-12-31T23:59:59.999Z")
        #expect(!UnixTime(seconds: .max, nanoseconds: .max).description.isEmpty)
        #expect(!UnixTime(seconds: .min, nanoseconds: .min).description.isEmpty)
        #expect(LockHolder(pid: .min, since: UnixTime(seconds: .min, nanoseconds: .min)).description.contains("since"))
    }
}
