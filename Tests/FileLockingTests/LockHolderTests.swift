@testable import FileLocking
import Subprocesses
import Testing

/// How holders and times read in messages: ISO 8601 in UTC, as `filelock status` prints.
@Suite("LockHolder and UnixTime")
struct LockHolderTests {
    @Test(arguments: [
        (UnixTime(seconds: 0), "1970-01-01T00:00:00Z"),
        (UnixTime(seconds: 1_796_068_500, nanoseconds: 101_000_000), "2026-11-30T19:55:00.101Z"),
        (UnixTime(seconds: 1_796_068_500, nanoseconds: 999_999), "2026-11-30T19:55:00Z"),
        (UnixTime(seconds: 951_782_400), "2000-02-29T00:00:00Z"),
        (UnixTime(seconds: -1), "1969-12-31T23:59:59Z"),
        (UnixTime(seconds: -62_135_596_800), "0001-01-01T00:00:00Z"),
        (UnixTime(seconds: -62_167_219_200), "0000-01-01T00:00:00Z"),
        (UnixTime(seconds: -62_167_219_201), "-0001-12-31T23:59:59Z"),
        (UnixTime(seconds: 253_402_300_799), "9999-12-31T23:59:59Z"),
        (UnixTime(seconds: 253_402_300_800), "+10000-01-01T00:00:00Z"),
        (UnixTime(seconds: .max), "+292277026596-12-04T15:30:07Z"),
        (UnixTime(seconds: .min), "-292277022657-01-27T08:29:52Z"),
    ])
    func timesReadAsISO8601InUTC(time: UnixTime, expected: String) {
        #expect(time.description == expected)
    }

    @Test func everyDayOfFourHundredYearsMatchesTheCalendar() {
        // Walk day by day from 1600-03-01 (a leap-century boundary) through 2400, counting the
        // calendar forwards by hand, and compare with what the description says.
        var (year, month, day) = (1600, 3, 1)
        var seconds: Int64 = -11_670_912_000  // 1600-03-01T00:00:00Z
        func daysIn(_ month: Int, _ year: Int) -> Int {
            switch month {
            case 2: (year % 4 == 0 && year % 100 != 0) || year % 400 == 0 ? 29 : 28
            case 4, 6, 9, 11: 30
            default: 31
            }
        }
        var mismatches: [String] = []
        while year < 2400 {
            func two(_ value: Int) -> String { value < 10 ? "0\(value)" : "\(value)" }
            let expected = "\(year)-\(two(month))-\(two(day))T00:00:00Z"
            let actual = UnixTime(seconds: seconds).description
            if actual != expected && mismatches.count < 5 { mismatches.append("\(actual) != \(expected)") }
            seconds += 86_400
            day += 1
            if day > daysIn(month, year) {
                day = 1
                month += 1
                if month > 12 {
                    month = 1
                    year += 1
                }
            }
        }
        #expect(mismatches.isEmpty, "\(mismatches)")
    }

    @Test func aHolderReadsWithItsDate() {
        let holder = LockHolder(
            pid: 42, host: "buildhost", since: UnixTime(seconds: 1_796_068_500, nanoseconds: 101_000_000))
        #expect(holder.description == "pid 42 on buildhost since 2026-11-30T19:55:00.101Z")
    }

    @Test func aProcessHolderHasNoSessionFields() {
        let holder = LockHolder(pid: 42, host: "buildhost", isShared: true, looksStale: true)
        #expect(holder.kind == .process)
        #expect(holder.kind.description == "process")
        #expect(holder.clientAddress == nil && holder.applicationName == nil)
        #expect(holder.description == "pid 42 on buildhost (shared) (looks stale)")
    }

    @Test func aServerSessionReadsWithItsServerClientAndApplication() {
        let holder = LockHolder.serverSession(
            pid: 4242, server: "db.example:5432", clientAddress: "10.0.0.7:51234", applicationName: "nightly-report",
            since: UnixTime(seconds: 1_796_068_500), isShared: true)
        #expect(holder.kind == .serverSession)
        #expect(holder.kind.description == "serverSession")
        #expect(holder.pid == 4242)
        #expect(holder.host == "db.example:5432")
        #expect(holder.clientAddress == "10.0.0.7:51234")
        #expect(holder.applicationName == "nightly-report")
        #expect(holder.since == UnixTime(seconds: 1_796_068_500))
        #expect(holder.isShared && !holder.looksStale)
        #expect(
            holder.description
                == "session (server pid 4242) on db.example:5432, client 10.0.0.7:51234, application 'nightly-report' "
                + "(shared) since 2026-11-30T19:55:00Z")
    }

    @Test func aServerSessionKnownOnlyByItsPid() {
        let holder = LockHolder.serverSession(pid: 7, looksStale: true)
        #expect(holder.description == "session (server pid 7) (looks stale)")
        #expect(holder != LockHolder(pid: 7, looksStale: true), "a session is not the process of the same pid")
    }

    @Test func aSoftTimeoutNamesTheHoldersStartAsADate() throws {
        let folder = try TemporaryFolder()
        let path = folder.file("dated.lock")
        let holder = try ChildProcess(TestEnvironment.probe, ["hold", path, "--kind", "soft"])
        try holder.expectLine(startingWith: "acquired")
        let lock = try SoftFileLock(at: path)
        let error = #expect(throws: FileLockError.self) { try lock.acquire(timeout: .milliseconds(20)) }
        let since = try #require(error?.holder?.since)
        #expect(error?.message.contains("since \(since)") == true, "\(error?.message ?? "")")
        #expect(error?.message.contains("since 1970") == false, "\(error?.message ?? "")")
        #expect(error?.message.contains("T") == true && error?.message.contains("Z") == true)
        holder.send("release")
        try holder.expectLine(startingWith: "released")
    }

    /// A holder's command line is anyone's bytes: control characters are escaped so that they
    /// cannot break or forge the message they appear in.
    @Test func commandLinesAreEscaped() {
        let raw = Array("python3\0-c\0print(1)\n\u{1B}[31mforged\0".utf8) + [0xFF, 0]
        let text = ProcessIdentity.commandLine(fromProcCmdline: raw)
        #expect(text == "python3 -c print(1)\\x0a\\x1b[31mforged \\xff", "\(text ?? "nil")")
        #expect(ProcessIdentity.commandLine(fromProcCmdline: [0, 0]) == nil)
        let long = ProcessIdentity.commandLine(fromProcCmdline: Array(String(repeating: "a", count: 500).utf8)) ?? ""
        #expect(long.count == ProcessIdentity.maximumCommandLength && long.hasSuffix("..."))
    }
}
