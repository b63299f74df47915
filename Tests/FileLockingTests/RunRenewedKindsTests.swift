#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif
import FileLocking
import Subprocesses
import Testing

/// `filelock run`, `status` and `break` with `--kind soft-rw` (a SoftReadWriteLock) and
/// `--kind lease` (a SoftFileLease): the kinds whose holds are renewed by a heartbeat, and can
/// be lost while the command runs.
extension CommandLineTests {
    /// Starts `filelock ARGUMENTS` with its stderr merged into stdout (the child is `filelock`
    /// itself: its pid is the holder's).
    func startTool(_ arguments: [String]) throws -> ChildProcess {
        try ChildProcess("/bin/sh", ["-c", "exec \"$0\" \"$@\" 2>&1", Self.tool] + arguments)
    }

    /// A soft-rw writer keeps readers out (-w gives the conflict exit code, -n too); then two
    /// readers are inside at once and keep a writer out; `status` names them with the ages of
    /// their records and the log's generation, in text and JSON, guessed from the log folder.
    @Test func softRWWriterExcludesReadersAndReadersShare() throws {
        let path = folder.file("catalog.lock")
        let writer = try ChildProcess(
            Self.tool, ["run", "--kind", "soft-rw", path, "--", "sh", "-c", "echo inside; read line"])
        try writer.expectLine(startingWith: "inside")
        let (timedOut, output) = try filelock("run", "-s", "-w", "0.5", "-E", "75", "--kind", "soft-rw", path, "--", "echo", "ran")
        #expect(timedOut == 75, "\(output)")
        #expect(!output.contains("ran"), "a reader ran beside the writer: \(output)")
        #expect(try filelock("run", "-n", "-s", "--kind", "soft-rw", path, "--", "true").0 == 1)
        #expect(try filelock("run", "-nE9", "--kind", "soft-rw", path, "true").0 == 9, "a second writer")
        let (held, text) = try filelock("status", "--kind", "soft-rw", path)
        #expect(held == 1, "\(text)")
        #expect(text.contains("held (soft read-write lock"), "\(text)")
        #expect(text.contains("writer: pid \(writer.pid) on ") && text.contains("record updated"), "\(text)")
        #expect(text.contains("s ago by this host's clock") && text.contains("log: ") && text.contains(", generation "), "\(text)")
        #expect(access(path, F_OK) != 0, "the lock path itself is never created")
        writer.send("go")
        #expect(try writer.waitForExit() == 0)

        let reader = ["run", "--kind", "soft-rw", "-s", path, "--", "sh", "-c", "echo inside; read line"]
        let first = try ChildProcess(Self.tool, reader)
        try first.expectLine(startingWith: "inside")
        let second = try ChildProcess(Self.tool, ["run", "-n"] + reader.dropFirst())
        try second.expectLine(startingWith: "inside")
        // Both are inside now: neither has been told to leave.
        #expect(try filelock("run", "-n", "--kind", "soft-rw", path, "--", "true").0 == 1, "a writer got in beside readers")

        let (code, json) = try filelock("status", "--json", path)
        #expect(code == 1, "\(json)")
        #expect(json.contains("\"kind\":\"soft-rw\"") && json.contains("\"guessed\":true") && json.contains("\"held\":true"), "\(json)")
        #expect(json.contains("\"waiting\":null") && json.contains("\"waitingWriter\":null"), "\(json)")
        #expect(json.contains("\"generation\":") && !json.contains("\"generation\":null"), "\(json)")
        #expect(json.contains("\"staleThreshold\":90.0") && json.contains("\"log\":\"\(path).rw\""), "\(json)")
        for pid in [first.pid, second.pid] {
            let object = holderObject(in: json, pid: pid) ?? ""
            #expect(object.contains("\"shared\":true") && object.contains("\"stale\":false"), "reader \(pid): \(json)")
            #expect(object.contains("\"host\":\"") && object.contains("\"since\":\"") && object.contains("\"age\":"), "\(json)")
            #expect(!object.contains("\"age\":null") && object.contains("\"command\":\"\(Self.tool) run"), "\(json)")
        }
        let (_, readers) = try filelock("status", path)
        #expect(readers.contains("reader: pid \(first.pid)") && readers.contains("reader: pid \(second.pid)"), "\(readers)")
        #expect(readers.contains("guessed from the folder"), "\(readers)")
        first.send("go")
        second.send("go")
        #expect(try first.waitForExit() == 0)
        #expect(try second.waitForExit() == 0)
        let (free, freeText) = try filelock("status", path)
        #expect(free == 0 && freeText.contains("free (soft read-write lock"), "the readers left the log: \(freeText)")
    }

    /// `status --stale-threshold` judges records as a member with that threshold would (a
    /// holder's own longer one honoured): a reader that publishes a short threshold and stops
    /// renewing (stopped) looks stale by it, not by the default 90 s.
    @Test func statusJudgesSoftRWRecordsByTheGivenStaleThreshold() throws {
        let path = folder.file("aging.lock")
        let reader = try ChildProcess(
            Self.tool,
            ["run", "--kind", "soft-rw", "-s", "--heartbeat", "0.1", "--stale-threshold", "0.4", path, "--", "sh", "-c",
             "echo inside; read line"])
        try reader.expectLine(startingWith: "inside")
        reader.signal(SIGSTOP)
        defer { reader.signal(SIGCONT) }
        // Its record ages (the library judges whole seconds of its modification time).
        usleep(1_500_000)
        let (_, fresh) = try filelock("status", "--json", path)
        #expect(holderObject(in: fresh, pid: reader.pid)?.contains("\"stale\":false") == true, "\(fresh)")
        let (code, json) = try filelock("status", "--json", "--stale-threshold", "0.4", path)
        #expect(code == 1, "\(json)")
        #expect(holderObject(in: json, pid: reader.pid)?.contains("\"stale\":true") == true, "\(json)")
        #expect(json.contains("\"staleThreshold\":0.4"), "\(json)")
        let (_, text) = try filelock("status", "--stale-threshold", "0.4", path)
        #expect(text.contains("reader: pid \(reader.pid)") && text.contains("looks stale"), "\(text)")
        #expect(text.contains("note: a member whose record stays unchanged"), "\(text)")
        let (refused, message) = try filelock("status", "--kind", "rw", "--stale-threshold", "5", path)
        #expect(refused == 2 && message.contains("--stale-threshold is for --kind soft-rw"), "\(message)")
        reader.signal(SIGCONT)
        reader.send("go")
        // Stopped for longer than its threshold allows, the reader cannot know whether it was
        // evicted meanwhile: its hold counts as lost, and `run` says so with 70.
        #expect(try reader.waitForExit() == 70)
    }

    /// A writer waiting for a reader names it (the -v report, after a second, is the handshake),
    /// shows in `status` as the waiting writer, and on SIGTERM leaves the log at once: the next
    /// reader gets in without waiting for the stale threshold.
    @Test func anInterruptedSoftRWWaiterLeavesTheLog() throws {
        let path = folder.file("waiter.lock")
        let reader = try ChildProcess(
            Self.tool, ["run", "--kind", "soft-rw", "-s", path, "--", "sh", "-c", "echo inside; read line"])
        try reader.expectLine(startingWith: "inside")
        let writer = try startTool(["run", "-v", "--kind", "soft-rw", path, "--", "echo", "writer ran"])
        let waiting = try writer.expectLine(startingWith: "filelock: waiting for")
        #expect(waiting.contains("held by pid \(reader.pid)"), "\(waiting)")
        let (_, text) = try filelock("status", "--kind", "soft-rw", path)
        #expect(text.contains("waiting writer: pid \(writer.pid)"), "\(text)")
        #expect(try filelock("run", "-n", "-s", "--kind", "soft-rw", path, "true").0 == 1, "a writer waits: no new reader")
        writer.signal(SIGTERM)
        let rest = try writer.readRemainingOutput()
        #expect(try writer.waitForExit() == 128 + SIGTERM, "\(rest)")
        #expect(!rest.contains("writer ran"), "\(rest)")
        let (code, json) = try filelock("status", "--json", "--kind", "soft-rw", path)
        #expect(code == 1 && json.contains("\"waitingWriter\":null"), "\(json)")
        #expect(try filelock("run", "-n", "-s", "--kind", "soft-rw", path, "true").0 == 0, "the waiter left the log")
        reader.send("go")
        #expect(try reader.waitForExit() == 0)
    }

    /// A lease excludes another lease (-n, -w with -E); status names its holder with mode=lease,
    /// its duration and last renewal, guessed from the marker; a contender of another duration
    /// is told to agree; `break` refuses a fresh lease; -s is refused.
    @Test func aLeaseExcludesAnotherLease() throws {
        let path = folder.file("nightly.lock")
        let holder = try ChildProcess(Self.tool, ["run", "--kind", "lease", path, "--", "sh", "-c", "echo inside; read line"])
        try holder.expectLine(startingWith: "inside")
        #expect(try filelock("run", "-n", "--kind", "lease", path, "--", "true").0 == 1)
        let (timedOut, output) = try filelock("run", "-w", "0.3", "-E", "9", "--kind", "lease", path, "--", "echo", "ran")
        #expect(timedOut == 9, "\(output)")
        #expect(!output.contains("ran"), "\(output)")
        let (held, text) = try filelock("status", path)
        #expect(held == 1, "\(text)")
        #expect(text.contains("held (lease") && text.contains("holder: pid \(holder.pid) on "), "\(text)")
        #expect(text.contains("mode=lease, duration 30 s, last renewed") && text.contains("s ago by this host's clock"), "\(text)")
        let (_, json) = try filelock("status", "--json", path)
        #expect(json.contains("\"kind\":\"lease\"") && json.contains("\"guessed\":true") && json.contains("\"held\":true"), "\(json)")
        #expect(json.contains("\"marker\":\"filelock/2\"") && json.contains("\"mode\":\"lease\""), "\(json)")
        #expect(json.contains("\"duration\":30.0") && json.contains("\"modifiedAgo\":"), "\(json)")
        #expect(holderObject(in: json, pid: holder.pid)?.contains("\"stale\":false") == true, "\(json)")
        let (mismatch, message) = try filelock("run", "-n", "--kind", "lease", "--lease-duration", "10", path, "true")
        #expect(mismatch == 2 && message.contains("--lease-duration"), "\(message)")
        let (refused, refusal) = try filelock("break", path)
        #expect(refused == 1 && refusal.contains("is a lease held by pid \(holder.pid)"), "\(refusal)")
        #expect(access(path, F_OK) == 0)
        holder.send("go")
        #expect(try holder.waitForExit() == 0)
        #expect(access(path, F_OK) != 0, "the marker goes on release")
        #expect(try filelock("status", "--kind", "lease", path).0 == 0)
        let (shared, sharedMessage) = try filelock("run", "-s", "--kind", "lease", path, "true")
        #expect(shared == 2 && sharedMessage.contains("exclusive only"), "\(sharedMessage)")
    }

    /// A lease left unrenewed for its duration (its marker's mtime an hour old, its holder on
    /// another host) looks stale in status and is broken by `break`, which names it.
    @Test func anExpiredLeaseLooksStaleAndIsBroken() throws {
        let path = folder.file("expired.lock")
        writeFile(path, "filelock/2\npid=4242\nhost=buildhost-07\nmode=lease\ntoken=0123456789abcdef\nduration=5.0\n")
        runShell("touch -d '1 hour ago' '\(path)'")
        let (code, text) = try filelock("status", "--kind", "lease", path)
        #expect(code == 1 && text.contains("pid 4242 on buildhost-07") && text.contains("looks stale"), "\(text)")
        let (broken, message) = try filelock("break", path)
        #expect(broken == 0 && message.contains("broke the lease of pid 4242 on buildhost-07"), "\(message)")
        #expect(access(path, F_OK) != 0)
    }

    /// Python filelock's SoftReadWriteLock writer and SoftFileLease holder are the same locks to
    /// `run` and `status` (guessed, naming Python's process).
    @Test(.enabled(if: TestEnvironment.requires(TestEnvironment.python != nil), "Python filelock is not installed"))
    func pythonSoftReadWriteAndLeaseHoldersAreSeen() throws {
        let path = folder.file("python-rw.lock")
        let script = """
            import os, sys
            from filelock import SoftReadWriteLock
            lock = SoftReadWriteLock(sys.argv[1], is_singleton=False)
            lock.acquire_write()
            print("acquired", os.getpid(), flush=True)
            sys.stdin.readline()
            lock.release()
            print("released", flush=True)
            """
        let writer = try ChildProcess(TestEnvironment.python!, ["-c", script, path])
        try writer.expectLine(startingWith: "acquired")
        #expect(try filelock("run", "-n", "-s", "--kind", "soft-rw", path, "--", "true").0 == 1)
        let (code, text) = try filelock("status", path)
        #expect(code == 1 && text.contains("writer: pid \(writer.pid) on ") && text.contains("record updated"), "\(text)")
        writer.send("release")
        try writer.expectLine(startingWith: "released")
        #expect(try filelock("run", "-n", "-s", "--kind", "soft-rw", path, "--", "true").0 == 0)

        let leasePath = folder.file("python-lease.lock")
        let holder = try ChildProcess(TestEnvironment.python!, [InteropTests.pythonScript, "lease-hold", leasePath, "30"])
        try holder.expectLine(startingWith: "acquired")
        #expect(try filelock("run", "-n", "--kind", "lease", leasePath, "--", "true").0 == 1)
        let (leaseCode, leaseText) = try filelock("status", leasePath)
        #expect(leaseCode == 1 && leaseText.contains("pid \(holder.pid) on ") && leaseText.contains("mode=lease"), "\(leaseText)")
        holder.send("release")
        try holder.expectLine(startingWith: "released")
        #expect(try filelock("run", "-n", "--kind", "lease", leasePath, "--", "true").0 == 0)
    }

    /// The hold lost while the command runs (its holder record deleted, as a forced eviction
    /// would): filelock says so, sends SIGTERM to the command and exits with 70 once it ends,
    /// and leaves the log.
    @Test func aLostSoftRWHoldStopsTheCommand() throws {
        let path = folder.file("lost.lock")
        let script = "trap 'echo got-term; exit 5' TERM; echo ready; while :; do sleep 0.05; done"
        let run = try startTool(["run", "--kind", "soft-rw", "--heartbeat", "0.1", path, "--", "sh", "-c", script])
        try run.expectLine(startingWith: "ready")
        #expect(runShell("rm '\(path).rw/holders/'*") == 0)
        let output = try run.readRemainingOutput()
        #expect(try run.waitForExit() == 70, "\(output)")
        #expect(output.contains("got-term"), "the command was sent SIGTERM: \(output)")
        #expect(output.contains("lost the write lock on \(path) (evicted"), "\(output)")
        #expect(output.contains("ended with status 5") && output.contains("exiting with 70"), "\(output)")
        let (code, text) = try filelock("status", "--kind", "soft-rw", path)
        #expect(code == 0, "the lost holder left the log: \(text)")
    }

    /// The same for a lease whose marker is removed: lost (removed), SIGTERM, exit 70.
    @Test func aLostLeaseStopsTheCommand() throws {
        let path = folder.file("lost-lease.lock")
        let script = "trap 'echo got-term; exit 6' TERM; echo ready; while :; do sleep 0.05; done"
        let run = try startTool(["run", "--kind", "lease", "--lease-duration", "1", path, "--", "sh", "-c", script])
        try run.expectLine(startingWith: "ready")
        #expect(unlink(path) == 0)
        let output = try run.readRemainingOutput()
        #expect(try run.waitForExit() == 70, "\(output)")
        #expect(output.contains("got-term") && output.contains("lost the lease on \(path) (removed"), "\(output)")
        #expect(output.contains("ended with status 6"), "\(output)")
    }

    /// A loss that happens after the last renewal and before the command ends (here the command
    /// itself removes the record or the marker, and ends at once) is found at release: the
    /// command's work may have run without the lock, so filelock exits with 70 and says so.
    @Test(arguments: [("soft-rw", "write lock", "rm \"$0\".rw/holders/*; exit 4"), ("lease", "lease", "rm \"$0\"; exit 4")])
    func aLossFoundAtReleaseExitsWith70(_ kind: String, _ what: String, _ script: String) throws {
        let path = folder.file("found-at-release.lock")
        let (code, output) = try filelock("run", "--kind", kind, path, "--", "sh", "-c", script, path)
        #expect(code == 70, "\(output)")
        #expect(output.contains("lost the \(what) on \(path)"), "\(output)")
        #expect(output.contains("found when releasing it after the command ended with status 4"), "\(output)")
    }

    /// `break` never removes a soft read-write lock's log under its holders, --force or not; a
    /// log that names no one is left alone too.
    @Test func breakRefusesASoftRWLock() throws {
        let path = folder.file("rw-log.lock")
        let holder = try ChildProcess(Self.tool, ["run", "--kind", "soft-rw", "-s", path, "--", "sh", "-c", "echo inside; read line"])
        try holder.expectLine(startingWith: "inside")
        for options in [[], ["--force"]] {
            let (code, message) = try filelock(["break"] + options + [path])
            #expect(code == 1, "\(options): \(message)")
            #expect(message.contains("soft read-write lock") && message.contains("pid \(holder.pid)"), "\(message)")
            #expect(message.contains("not broken by hand"), "\(message)")
        }
        holder.send("go")
        #expect(try holder.waitForExit() == 0)
        let (code, message) = try filelock("break", path)
        #expect(code == 0 && message.contains("names no holder"), "\(message)")
        #expect(access(path + ".rw/gen", F_OK) == 0, "the log stays")
    }

    @Test(arguments: [
        (["--kind", "soft-rw", "--range", "0:10"], "--range"),
        (["--kind", "soft-rw", "--fallback-to-soft"], "--fallback-to-soft"),
        (["--kind", "soft-rw", "--remove-on-release"], "--remove-on-release"),
        (["--kind", "soft-rw", "--lease-duration", "5"], "--lease-duration"),
        (["--kind", "soft-rw", "--heartbeat", "10", "--stale-threshold", "5"], "must exceed --heartbeat"),
        (["--kind", "soft-rw", "--heartbeat", "-1"], "--heartbeat must be a number of seconds"),
        (["--kind", "lease", "-s"], "exclusive only"),
        (["--kind", "lease", "--range", "0:10"], "--range"),
        (["--kind", "lease", "--remove-on-release"], "--remove-on-release"),
        (["--kind", "lease", "--stale-threshold", "5"], "--stale-threshold"),
        (["--kind", "lease", "--heartbeat", "30"], "must be below --lease-duration"),
        (["--kind", "lease", "--lease-duration", "0"], "--lease-duration must be a number of seconds"),
        (["--heartbeat", "5"], "--heartbeat is for --kind soft-rw, lease and postgres"),
        (["--kind", "rw", "--stale-threshold", "5"], "--stale-threshold is for --kind soft-rw"),
        (["--kind", "soft", "--lease-duration", "5"], "--lease-duration is for --kind lease"),
    ])
    func renewedKindsRefuseOptionsThatDoNotApply(_ options: [String], _ expected: String) throws {
        let path = folder.file("refused.lock")
        // Both readers of the command line: the quick one, and ArgumentParser's (a repeated -v).
        for extra in [[], ["-v", "--verbose"]] {
            let (code, message) = try filelock(["run"] + extra + options + [path, "--", "echo", "ran"])
            #expect(code == 2, "\(options): \(message)")
            #expect(message.contains(expected), "\(options): \(message)")
            #expect(!message.contains("ran\n"), "\(options): \(message)")
        }
        #expect(access(path, F_OK) != 0 && access(path + ".rw", F_OK) != 0, "a refused run created the lock")
    }
}
