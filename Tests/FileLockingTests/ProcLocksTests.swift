@testable import FileLocking
import Subprocesses
import Testing

#if os(Linux)
    private let hasProcFdinfo = true
#else
    private let hasProcFdinfo = false
#endif

/// Naming the holder of an open-file-description range lock reads every process's
/// `/proc/PID/fdinfo`; a timed-out `lock` bounds that look so a short timeout ends about on time.
/// (Wall-clock bounds would flake on a loaded machine: these tests inject the deadline and count
/// what was scanned instead.)
@Suite("Naming a range's holder", .enabled(if: hasProcFdinfo, "reads /proc/PID/fdinfo (Linux)"), .ownThreads)
struct RangeHolderLookupTests {
    let folder: TemporaryFolder
    init() throws { folder = try TemporaryFolder() }

    /// Another process holds bytes 0-9 of a new file; returns it, its pid and the file's path.
    func heldRange() throws -> (ChildProcess, pid: Int32, path: String) {
        let path = folder.file("held.bin")
        let holder = try ChildProcess(TestEnvironment.probe, ["range-hold", path, "0", "10"])
        let line = try holder.expectLine(startingWith: "acquired")
        return (holder, Int32(line.split(separator: " ")[1]) ?? -1, path)
    }

    @Test func aPassedDeadlineEndsTheScanBeforeItReadsAnything() throws {
        let (holder, _, path) = try heldRange()
        let status = try System.stat(path).get()
        let scan = ProcLocks.processesHoldingRecordLock(on: status, start: 0, end: 9, deadline: .now)
        #expect(scan.processesScanned == 0)
        #expect(scan.stoppedAtDeadline)
        #expect(scan.holders.isEmpty)
        holder.send("release")
    }

    @Test func withoutADeadlineTheScanFindsTheHolder() throws {
        let (holder, pid, path) = try heldRange()
        let status = try System.stat(path).get()
        let scan = ProcLocks.processesHoldingRecordLock(on: status, start: 0, end: 9)
        #expect(scan.holders.map(\.pid).contains(pid))
        #expect(!scan.stoppedAtDeadline)
        #expect(scan.processesScanned >= 1)
        holder.send("release")
    }

    @Test func aTimedOutLockGivesTheLookATenthOfItsTimeoutBetweenTwoAndTwentyMilliseconds() {
        #expect(RangePrimitive.holderLookupBudget(forTimeout: .nanoseconds(1)) == .milliseconds(2))
        #expect(RangePrimitive.holderLookupBudget(forTimeout: .milliseconds(100)) == .milliseconds(10))
        #expect(RangePrimitive.holderLookupBudget(forTimeout: .seconds(5)) == .milliseconds(300))
        #expect(RangePrimitive.holderLookupBudget(forTimeout: .seconds(Int64.max) * 10) == .milliseconds(300))
        #expect(RangePrimitive.holderLookupBudget(forTimeout: nil) == .milliseconds(2))
    }

    @Test func theHolderLookupHonoursItsDeadline() throws {
        let (holder, pid, path) = try heldRange()
        let file = try ByteRangeLock(at: path)
        let range = ByteRange(start: 0, length: 10)
        #expect(file.engine.primitive.holder(pid: -1, range: range, deadline: .now) == nil, "no time left: no scan, no holder")
        #expect(file.engine.primitive.holder(pid: -1, range: range)?.pid == pid)
        // The timed-out lock still says what happened, whether or not the look found the holder.
        let error = #expect(throws: FileLockError.self) { try file.lock(range, timeout: .milliseconds(1)) }
        #expect(error?.code == .timedOut)
        #expect(error?.message.contains(path) == true)
        holder.send("release")
    }
}
