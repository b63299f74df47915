import Subprocesses
import Testing

@Suite("filelock demo", .ownThreads)
struct DemoCommandTests {
    @Test func demoShowsLostUpdatesWithoutALockAndNoneWithIt() throws {
        let demo = try ChildProcess(
            TestEnvironment.tool, ["demo", "--processes", "3", "--increments", "300"])
        let output = try demo.readRemainingOutput(timeout: 120)
        #expect(try demo.waitForExit() == 0)
        let rows = output.split(separator: "\n").map { $0.split(separator: " ").map(String.init) }
        let locked = try #require(rows.first { $0.starts(with: ["with", "FileLock"]) }, "\(output)")
        #expect(locked[2...4] == ["900", "900", "0"], "\(output)")
        let unlocked = try #require(rows.first { $0.starts(with: ["without", "a", "lock"]) }, "\(output)")
        #expect(unlocked[3] == "900")
        #expect(Int(unlocked[4])! + Int(unlocked[5])! == 900)
    }

    @Test(arguments: [("soft", "SoftFileLock"), ("range", "ByteRangeLock"), ("lease", "SoftFileLease")])
    func demoForEveryLockKind(kind: String, name: String) throws {
        let demo = try ChildProcess(
            TestEnvironment.tool, ["demo", "--kind", kind, "--processes", "3", "--increments", "200"])
        let output = try demo.readRemainingOutput(timeout: 120)
        #expect(try demo.waitForExit() == 0)
        let rows = output.split(separator: "\n").map { $0.split(separator: " ").map(String.init) }
        let locked = try #require(rows.first { $0.starts(with: ["with", name]) }, "\(output)")
        #expect(locked[2...4] == ["600", "600", "0"], "\(output)")
    }

    /// Readers without a lock catch writers half-way (torn readings); with a ReadWriteLock none
    /// is torn and both numbers end exact.
    @Test func demoReadWriteShowsTornReadsWithoutALockAndNoneWithIt() throws {
        let demo = try ChildProcess(
            TestEnvironment.tool, ["demo", "--kind", "rw", "--processes", "3", "--increments", "200"])
        let output = try demo.readRemainingOutput(timeout: 120)
        #expect(try demo.waitForExit() == 0)
        let rows = output.split(separator: "\n").map { $0.split(separator: " ").map(String.init) }
        #expect(output.contains("2 writers x 200 updates") && output.contains("3 readers"), "\(output)")
        // reads, torn, expected, first, second, time
        let unlocked = try #require(rows.first { $0.starts(with: ["without", "a", "lock"]) }, "\(output)")
        #expect(unlocked.count == 10, "\(output)")
        let unlockedReads = try #require(Int(unlocked[3]), "\(output)")
        let unlockedTorn = try #require(Int(unlocked[4]), "\(output)")
        #expect(unlockedTorn > 0 && unlockedTorn <= unlockedReads, "torn readings without a lock: \(output)")
        #expect(unlocked[5] == "400", "\(output)")
        let locked = try #require(rows.first { $0.starts(with: ["with", "ReadWriteLock"]) }, "\(output)")
        #expect(locked.count == 9, "\(output)")
        let lockedReads = try #require(Int(locked[2]), "\(output)")
        #expect(lockedReads >= 3, "every reader read at least once: \(output)")
        #expect(locked[3...6] == ["0", "400", "400", "400"], "\(output)")
    }

    /// The same with a SoftReadWriteLock (a log of generations, each committed to disk: few
    /// increments keep it short): nothing torn, both numbers exact.
    @Test func demoSoftReadWriteTearsNothingWithTheLock() throws {
        let demo = try ChildProcess(
            TestEnvironment.tool, ["demo", "--kind", "soft-rw", "--processes", "2", "--increments", "20"])
        let output = try demo.readRemainingOutput(timeout: 120)
        #expect(try demo.waitForExit() == 0)
        let rows = output.split(separator: "\n").map { $0.split(separator: " ").map(String.init) }
        #expect(output.contains("2 writers x 20 updates") && output.contains("2 readers"), "\(output)")
        #expect(rows.contains { $0.starts(with: ["without", "a", "lock"]) }, "\(output)")
        let locked = try #require(rows.first { $0.starts(with: ["with", "SoftReadWriteLock"]) }, "\(output)")
        #expect(locked.count == 9, "\(output)")
        let lockedReads = try #require(Int(locked[2]), "\(output)")
        #expect(lockedReads >= 2, "every reader read at least once: \(output)")
        #expect(locked[3...6] == ["0", "40", "40", "40"], "\(output)")
    }

    @Test func demoRejectsBadCounts() throws {
        let demo = try ChildProcess(TestEnvironment.tool, ["demo", "--processes", "0"])
        #expect(try demo.waitForExit() != 0)
    }
}
