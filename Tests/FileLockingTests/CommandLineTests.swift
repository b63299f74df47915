#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif
import FileLocking
import Subprocesses
import Testing

/// `filelock` run as a user runs it: exit codes, output, signals, other tools on the same file.
@Suite("filelock command", .ownThreads)
struct CommandLineTests {
    let folder: TemporaryFolder
    init() throws { folder = try TemporaryFolder() }

    static let tool = TestEnvironment.tool

    /// Runs `filelock ARGUMENTS` with stderr merged into stdout; returns (exit code, output).
    func filelock(_ arguments: String...) throws -> (Int32, String) {
        try filelock(arguments)
    }

    func filelock(_ arguments: [String]) throws -> (Int32, String) {
        let quoted = ([Self.tool] + arguments).map { "'" + $0.replacingSingleQuotes() + "'" }.joined(separator: " ")
        let shell = try ChildProcess("/bin/sh", ["-c", quoted + " 2>&1"])
        let output = try shell.readRemainingOutput(timeout: 60)
        return (try shell.waitForExit(), output)
    }

    @Test func runPassesTheCommandsExitStatus() throws {
        let path = folder.file("run.lock")
        #expect(try filelock("run", path, "--", "sh", "-c", "exit 7").0 == 7)
        #expect(try filelock("run", path, "true").0 == 0, "flock(1) style, without --")
        #expect(try filelock("run", path, "--", "sh", "-c", "kill -TERM $$").0 == 128 + SIGTERM)
        // Forms only ArgumentParser reads (the quick reader passes them on) run the same way.
        #expect(try filelock("run", "--", path, "sh", "-c", "exit 5").0 == 5)
        #expect(try filelock("run", "-w", "9", "-w", "10", path, "sh", "-c", "exit 4").0 == 4)
        #expect(try filelock("run", "--range=", "0:10", path, "sh", "-c", "exit 6").0 == 6, "quick reading fails validation")
    }

    /// A lock file name that is not UTF-8 is the same file for flock(1) and for us (it used to
    /// become U+FFFD, another file), and a command's arguments reach it as the same bytes. Both
    /// argument readers: the quick one (`-n`) and ArgumentParser's (`--nonblock --verbose -v`
    /// repeats a flag, which only ArgumentParser reads).
    @Test(.enabled(if: TestEnvironment.requires(TestEnvironment.flockCommand != nil), "needs flock(1)"))
    func nonUTF8LockFilesAndArgumentsStayBytes() throws {
        let script = """
            lock="$1"/bad$'\\xff'.lock
            flock -o "$lock" sleep 60 >/dev/null 2>&1 &
            holder=$!
            until [ -e "$lock" ]; do sleep 0.01; done
            sleep 0.2
            "$2" run -n "$lock" -- echo GOT; echo "quick=$?"
            "$2" run --nonblock -E 3 "$lock" -- echo GOT; echo "parsed=$?"
            "$2" status "$lock"; echo "status=$?"
            pkill -P $holder; kill $holder
            "$2" run "$1"/free.lock -- printf %s $'\\xfe' | od -An -tx1
            """
        let shell = try ChildProcess("/bin/bash", ["-c", script, "bash", folder.path, Self.tool])
        let output = try shell.readRemainingOutput(timeout: 60)
        _ = try shell.waitForExit()
        #expect(!output.contains("GOT"), "the command ran while flock(1) held the file: \(output)")
        #expect(output.contains("quick=1") && output.contains("parsed=3"), "\(output)")
        #expect(output.contains("bad\\xff.lock: held") && output.contains("status=1"), "\(output)")
        #expect(output.contains(" fe"), "the command's argument arrives as the byte 0xfe: \(output)")
    }

    /// A path ending in `/` names a folder: refused as flock(1) refuses it, not turned into a
    /// lock file (a `FilePath` would drop the slash).
    @Test func aLockPathEndingInASlashIsRefused() throws {
        let path = folder.file("newdir") + "/"
        let (code, output) = try filelock("run", path, "--", "true")
        #expect(code == 2, "\(output)")
        #expect(output.contains("names a directory"), "\(output)")
        #expect(access(folder.file("newdir"), F_OK) != 0, "nothing was created")
    }

    /// Two tmpfs mounts number their first files alike (inode 2 on anonymous devices): a flock
    /// on one must not be reported as the holder of the other.
    @Test(.enabled(if: TestEnvironment.requires(TestEnvironment.isRoot && TestEnvironment.flockCommand != nil), "needs root and flock(1)"))
    func statusDoesNotMistakeAnotherMountsFileForTheLock() throws {
        let script = """
            set -e
            mount -t tmpfs none "$1/a"; mount -t tmpfs none "$1/b"
            touch "$1/a/x.lock" "$1/b/y.lock"
            [ "$(stat -c %i "$1/a/x.lock")" = "$(stat -c %i "$1/b/y.lock")" ] || echo "inodes differ"
            flock -o "$1/a/x.lock" sleep 30 >/dev/null 2>&1 &
            holder=$!
            while "$2" status "$1/a/x.lock" >/dev/null; do sleep 0.01; done
            set +e
            "$2" status "$1/b/y.lock" >/dev/null; echo "other=$?"
            "$2" status "$1/a/x.lock" >/dev/null; echo "same=$?"
            pkill -P $holder; kill $holder
            """
        mkdir(folder.file("a"), 0o755)
        mkdir(folder.file("b"), 0o755)
        let shell = try ChildProcess("unshare", ["-m", "sh", "-c", script, "sh", folder.path, Self.tool])
        let output = try shell.readRemainingOutput(timeout: 60)
        _ = try shell.waitForExit()
        #expect(output.contains("other=0"), "the other mount's file was reported held: \(output)")
        #expect(output.contains("same=1"), "\(output)")
    }

    @Test func flockStyleJoinedValuesAndShellCommands() throws {
        let path = folder.file("flock-style.lock")
        let (code, output) = try filelock("run", "-w5", "-E75", path, "-c", "echo \"$0\" ran; exit 9")
        #expect(code == 9)
        #expect(output.contains("ran"), "\(output)")
        #expect(try filelock("run", path, "-c", "echo", "two").0 == 2, "-c takes one command line")
        #expect(try filelock("run", path, "--", "-c", "exit 3").0 == 127, "after --, -c is a program name")
    }

    @Test func flockStyleBundlesWithAValue() throws {
        // As util-linux flock(1) reads them (scripts use them): `-nE9` is `-n -E 9`.
        let path = folder.file("bundles.lock")
        let holder = try ChildProcess(TestEnvironment.probe, ["hold", path])
        try holder.expectLine(startingWith: "acquired")
        let (code, output) = try filelock("run", "-nE9", path, "true")
        #expect(code == 9, "\(output)")
        #expect(try filelock("run", "-xnE", "8", path, "true").0 == 8)
        #expect(try filelock("run", "-nw5", path, "true").0 == 1, "-n: no wait")
        holder.send("release")
        try holder.expectLine(startingWith: "released")
        #expect(try filelock("run", "-sw1", path, "sh", "-c", "exit 4").0 == 4)
        #expect(try filelock("run", "-xnw", "5", path, "sh", "-c", "exit 5").0 == 5)
        let (refused, message) = try filelock("run", "-nwsoon", path, "true")
        #expect(refused == 2)
        #expect(message.contains("soon") && !message.contains("'\(path)' is invalid"), "\(message)")
    }

    @Test func aCommandThatCannotStartExits127AndReleases() throws {
        for kind in ["kernel", "soft"] {
            let path = folder.file("missing-\(kind).lock")
            let (code, message) = try filelock("run", "--kind", kind, path, "--", "/nonexistent/command")
            #expect(code == 127)
            #expect(message.contains("/nonexistent/command"), "\(message)")
            #expect(try filelock("run", "-n", "--kind", kind, path, "--", "true").0 == 0, "\(kind) lock released")
        }
        #expect(access(folder.file("missing-soft.lock"), F_OK) != 0, "the soft marker is gone")
        // Found but not runnable: 126, as shells say it.
        let notExecutable = folder.file("data.txt")
        writeFile(notExecutable, "not a program")
        #expect(try filelock("run", folder.file("x.lock"), "--", notExecutable).0 == 126)
    }

    @Test(.enabled(if: TestEnvironment.requires(TestEnvironment.flockCommand != nil), "flock(1) is not installed"))
    func conflictWithFlockCommandGivesTheConflictExitCode() throws {
        let path = folder.file("conflict.lock")
        let holder = try ChildProcess(TestEnvironment.flockCommand!, [path, "sh", "-c", "echo held; read line"])
        try holder.expectLine(startingWith: "held")
        #expect(try filelock("run", "-n", path, "--", "true").0 == 1)
        #expect(try filelock("run", "-n", "-E", "75", path, "--", "true").0 == 75)
        let started = ChildProcess.now()
        let (code, output) = try filelock("run", "-w", "0.3", "--verbose", path, "--", "true")
        #expect(code == 1)
        #expect(ChildProcess.now() - started >= 0.3)
        #expect(output.contains("timed out"), "\(output)")
        let (statusCode, status) = try filelock("status", path)
        #expect(statusCode == 1)
        #expect(status.contains("pid \(holder.pid)"), "\(status)")
        holder.send("go")
        try holder.waitForExit()
        #expect(try filelock("run", "-n", path, "--", "true").0 == 0)
        #expect(try filelock("status", path).0 == 0)
    }

    @Test(.enabled(if: TestEnvironment.requires(TestEnvironment.python != nil), "Python filelock is not installed"))
    func conflictWithPythonFilelock() throws {
        let path = folder.file("python.lock")
        let holder = try ChildProcess(TestEnvironment.python!, [InteropTests.pythonScript, "hold", path])
        try holder.expectLine(startingWith: "acquired")
        #expect(try filelock("run", "-n", path, "--", "true").0 == 1)
        holder.send("release")
        try holder.expectLine(startingWith: "released")
        #expect(try filelock("run", "-n", path, "--", "true").0 == 0)
    }

    @Test func verboseWaitSaysWhoHoldsTheLock() throws {
        let path = folder.file("waiting.lock")
        let lock = try FileLock(at: path)
        try lock.acquire()
        startThread {
            usleep(1_600_000)
            lock.release(force: true)
        }
        let (code, output) = try filelock("run", "-v", "-w", "30", path, "--", "echo", "ran")
        #expect(code == 0)
        #expect(output.contains("waiting for \(path) (held by pid \(getpid())"), "\(output)")
        #expect(output.contains("ran"))
    }

    @Test func signalsAreForwardedAndTheLockReleasedAfterTheCommandEnds() throws {
        let path = folder.file("signal.lock")
        let script = "trap 'echo got-term; exit 3' TERM; echo ready; while :; do sleep 0.05; done"
        let run = try ChildProcess(Self.tool, ["run", path, "--", "sh", "-c", script])
        try run.expectLine(startingWith: "ready")
        #expect(try !FileLock(at: path).tryAcquire())
        run.signal(SIGTERM)
        try run.expectLine(startingWith: "got-term")
        #expect(try run.waitForExit() == 3)
        let lock = try FileLock(at: path)
        #expect(try lock.tryAcquire())
        lock.release()
    }

    @Test func theLockIsNotInheritedByTheCommand() throws {
        // A background process the command leaves behind must not keep the lock.
        let path = folder.file("inherit.lock")
        let (code, output) = try filelock("run", path, "--", "sh", "-c", "sleep 30 >/dev/null 2>&1 & echo $!")
        #expect(code == 0)
        let leftover = try #require(Int32(output.split(separator: "\n").last ?? ""))
        defer { kill(leftover, SIGKILL) }
        let lock = try FileLock(at: path)
        #expect(try lock.tryAcquire(), "the leftover process holds the lock")
        lock.release()
    }

    @Test func aKilledSoftRunLeavesAStaleMarkerTheNextRunBreaks() throws {
        let path = folder.file("soft.lock")
        let run = try ChildProcess(Self.tool, ["run", "--kind", "soft", path, "--", "sh", "-c", "echo ready; sleep 30"])
        try run.expectLine(startingWith: "ready")
        run.signal(SIGKILL)
        try run.waitForExit()
        let (statusCode, json) = try filelock("status", "--json", path)
        #expect(statusCode == 1)
        #expect(json.contains("\"kind\":\"soft\""), "\(json)")
        #expect(json.contains("\"pid\":\(run.pid)"), "\(json)")
        #expect(json.contains("\"stale\":true"), "\(json)")
        #expect(try filelock("run", "--kind", "soft", "-w", "10", path, "--", "true").0 == 0)
        #expect(access(path, F_OK) != 0)
    }

    @Test func statusJSONOfAFreeAndAHeldSoftLock() throws {
        let path = folder.file("status.lock")
        let (freeCode, _) = try filelock("status", "--kind", "soft", path)
        #expect(freeCode == 0)
        let holder = try ChildProcess(TestEnvironment.probe, ["hold", path, "--kind", "soft"])
        let pid = try holder.expectLine(startingWith: "acquired").split(separator: " ")[1]
        let (code, json) = try filelock("status", "--json", path)
        #expect(code == 1)
        #expect(json.hasPrefix("{\"path\":"), "\(json)")
        #expect(json.contains("\"held\":true"))
        #expect(json.contains("\"pid\":\(pid)"))
        #expect(json.contains("\"stale\":false"))
        #expect(json.contains("lock-probe"), "the holder's command line")
    }

    @Test func breakRefusesALiveHolderBreaksAStaleOneAndForcesOnRequest() throws {
        let path = folder.file("break.lock")
        let holder = try ChildProcess(TestEnvironment.probe, ["hold", path, "--kind", "soft"])
        try holder.expectLine(startingWith: "acquired")
        let (refused, message) = try filelock("break", path)
        #expect(refused == 1)
        #expect(message.contains("looks alive"), "\(message)")
        #expect(access(path, F_OK) == 0)
        let (forced, forcedMessage) = try filelock("break", "--force", path)
        #expect(forced == 0)
        #expect(forcedMessage.contains("broke the marker of pid \(holder.pid)"), "\(forcedMessage)")
        #expect(access(path, F_OK) != 0)

        let child = try ChildProcess("/bin/true", [])
        try child.waitForExit()
        writeFile(path, "\(child.pid)\n\(ProcessIdentity_hostName())\n")
        let (broken, brokenMessage) = try filelock("break", path)
        #expect(broken == 0, "\(brokenMessage)")
        #expect(access(path, F_OK) != 0)
    }

    @Test func statusBreakAndRunAgreeOnAnEmptyMarker() throws {
        let path = folder.file("empty.lock")
        writeFile(path, "")
        runShell("touch -d '1 hour ago' '\(path)'")
        let (code, text) = try filelock("status", "--kind", "soft", path)
        #expect(code == 1, "\(text)")
        #expect(text.contains("held") && text.contains("empty"), "\(text)")
        let (_, json) = try filelock("status", "--json", "--kind", "soft", path)
        #expect(json.contains("\"held\":true") && json.contains("\"marker\":\"empty\""), "\(json)")
        #expect(try filelock("run", "-n", "--kind", "soft", path, "true").0 == 1, "run waits for it")
        // Without --kind, an empty file is a free kernel lock file (what flock leaves), said with a note.
        let (guessedCode, guessed) = try filelock("status", path)
        #expect(guessedCode == 0)
        #expect(guessed.contains("--kind soft"), "\(guessed)")
        // An hour old by its mtime: abandoned, broken without --force, and said how it was judged.
        let (broken, message) = try filelock("break", path)
        #expect(broken == 0, "\(message)")
        #expect(message.contains("broke the empty marker") && message.contains("this host's clock"), "\(message)")
        #expect(access(path, F_OK) != 0)
        // A fresh one may be between create and write: only --force breaks it.
        writeFile(path, "")
        #expect(try filelock("break", path).0 == 1)
        #expect(access(path, F_OK) == 0)
        let (forced, forcedMessage) = try filelock("break", "--force", path)
        #expect(forced == 0, "\(forcedMessage)")
        #expect(access(path, F_OK) != 0)
    }

    @Test func statusBreakAndRunAgreeOnAMalformedMarker() throws {
        let path = folder.file("malformed.lock")
        writeFile(path, "garbage")
        runShell("touch -d '1 hour ago' '\(path)'")
        let (code, text) = try filelock("status", path)
        #expect(code == 1, "\(text)")
        #expect(text.contains("held (soft lock") && text.contains("no holder record"), "\(text)")
        let (_, json) = try filelock("status", "--json", path)
        #expect(json.contains("\"held\":true") && json.contains("\"marker\":\"malformed\""), "\(json)")
        #expect(try filelock("run", "-n", "--kind", "soft", path, "true").0 == 1)
        // The grace does not restart in every new process: the marker's mtime says it is old.
        let (broken, message) = try filelock("break", path)
        #expect(broken == 0, "\(message)")
        #expect(message.contains("broke the malformed marker") && message.contains("this host's clock"), "\(message)")
        #expect(access(path, F_OK) != 0)
        writeFile(path, "garbage")
        let (refused, refusal) = try filelock("break", path)
        #expect(refused == 1)
        #expect(refusal.contains("malformed") && refusal.contains("--force"), "\(refusal)")
        #expect(access(path, F_OK) == 0)
    }

    @Test func onlyAHolderOnThisHostIsShownWithACommandLine() throws {
        // A live local pid recorded by another host names some unrelated process here.
        let unrelated = try ChildProcess("/bin/cat", [])
        defer { unrelated.closeInput() }
        let path = folder.file("remote.lock")
        writeFile(path, "\(unrelated.pid)\nbuildhost-07\n")
        let (code, text) = try filelock("status", path)
        #expect(code == 1)
        #expect(text.contains("pid \(unrelated.pid) on buildhost-07") && !text.contains("running"), "\(text)")
        let (_, json) = try filelock("status", "--json", path)
        #expect(json.contains("\"command\":null"), "\(json)")
        let (refused, refusal) = try filelock("break", path)
        #expect(refused == 1)
        #expect(refusal.contains("another host") && !refusal.contains("running"), "\(refusal)")
        let (timedOut, waiting) = try filelock("run", "-v", "-w", "1.2", "--kind", "soft", path, "true")
        #expect(timedOut == 1)
        #expect(waiting.contains("waiting for \(path) (held by pid \(unrelated.pid)") && !waiting.contains("running"), "\(waiting)")
        // The same pid recorded on this host is its holder: its command line is shown.
        writeFile(path, "\(unrelated.pid)\n\(SoftFileLock.hostName)\n")
        let (_, local) = try filelock("status", path)
        #expect(local.contains("running /bin/cat"), "\(local)")
    }

    @Test func statusAndBreakRefuseWhatIsNoLockFileAsRunDoes() throws {
        let target = folder.file("target")
        writeFile(target, "precious")
        mkdir(folder.file("dir.lock"), 0o755)
        symlink(target, folder.file("link.lock"))
        mkfifo(folder.file("fifo.lock"), 0o644)
        for name in ["dir.lock", "link.lock", "fifo.lock"] {
            let path = folder.file(name)
            for command in [["status"], ["status", "--kind", "kernel"], ["status", "--json"], ["break"], ["break", "--force"]] {
                let (code, message) = try filelock(command + [path])
                #expect(code == 2, "\(command) \(name): \(message)")
                #expect(message.contains("'\(path)'"), "\(command) \(name): \(message)")
            }
            // (A kernel `run` locks a FIFO, as flock(1) does; a soft lock refuses it.)
            #expect(try filelock("run", "--kind", "soft", path, "true").0 == 2, "\(name)")
        }
        #expect(readFile(target) == "precious")
    }

    @Test(.enabled(if: TestEnvironment.requires(TestEnvironment.isRoot), "needs root to switch to nobody"))
    func statusAsAnotherUserOfAnUnreadableMarkerSaysHeld() throws {
        let path = folder.file("private.lock")
        let lock = try SoftFileLock(at: path, filePermissions: 0o600)
        try lock.acquire()
        defer { lock.release() }
        let (code, text) = try folder.toolAsNobody(["status", path])
        #expect(code == 1, "\(text)")
        #expect(text.contains("held (soft lock") && text.contains("may not read"), "\(text)")
        let (_, json) = try folder.toolAsNobody(["status", "--json", path])
        #expect(json.contains("\"held\":true") && json.contains("\"marker\":\"unreadable\""), "\(json)")
        #expect(try folder.toolAsNobody(["break", path]).0 == 1)
        #expect(lock.isHeldByUs)
    }

    @Test func statusEscapesControlCharactersFromTheMarkerAndThePath() throws {
        let path = folder.file("esc\u{1B}[2J.lock")
        writeFile(path, "1\nev\u{1B}[31mil\u{7}\n")
        let (code, text) = try filelock("status", path)
        #expect(code == 1)
        #expect(text.contains("ev\\x1b[31mil\\x07") && text.contains("esc\\x1b[2J.lock"), "\(text)")
        #expect(!text.contains("\u{1B}") && !text.contains("\u{7}"), "\(text)")
        let (_, refusal) = try filelock("break", path)
        #expect(!refusal.contains("\u{1B}") && refusal.contains("ev\\x1b[31mil"), "\(refusal)")
        let (_, json) = try filelock("status", "--json", path)
        #expect(json.contains("ev\\u001b[31mil\\u0007"), "\(json)")
    }

    @Test(.enabled(if: TestEnvironment.requires(TestEnvironment.flockCommand != nil), "flock(1) is not installed"))
    func aKernelLockCannotBeBroken() throws {
        let path = folder.file("kernel.lock")
        let holder = try ChildProcess(TestEnvironment.flockCommand!, [path, "sh", "-c", "echo held; read line"])
        try holder.expectLine(startingWith: "held")
        let (code, message) = try filelock("break", path)
        #expect(code == 1)
        #expect(message.contains("cannot be broken"), "\(message)")
        #expect(message.contains("pid \(holder.pid)"))
    }

    @Test func usageMistakesAndBadPathsExitWithTwo() throws {
        #expect(try filelock("run", folder.file("x.lock")).0 == 2, "no command")
        #expect(try filelock("run", "--range", "a:b", folder.file("x.lock"), "true").0 == 2)
        #expect(try filelock("run", "-w", "-1", folder.file("x.lock"), "true").0 == 2)
        #expect(try filelock("run", "-w", "1e12", folder.file("x.lock"), "true").0 == 2)
        #expect(try filelock("nonsense").0 == 2)
        let (code, message) = try filelock("run", folder.path, "--", "true")
        #expect(code == 2)
        #expect(message.contains(folder.path) && message.contains("directory"), "\(message)")
        #expect(try filelock("--version").1.hasPrefix("0."))
        for command in ["run", "status", "break", "demo"] {
            let (helpCode, help) = try filelock(command, "--help")
            #expect(helpCode == 0)
            #expect(help.contains("Example"), "\(command) --help shows examples")
        }
    }

    @Test(.enabled(if: TestEnvironment.requires(TestEnvironment.isRoot), "needs root to switch to nobody"))
    func aSharedRangeOfAnotherUsersReadOnlyFileNeedsOnlyReadAccess() throws {
        let path = folder.file("readonly.bin")
        writeFile(path, "records")
        chmod(path, 0o444)
        let (code, output) = try folder.toolAsNobody(["run", "-s", "--range", "0:10", path, "--", "echo", "ran"])
        #expect(code == 0, "\(output)")
        #expect(output.contains("ran"), "\(output)")
        // An exclusive lock needs write access (OFD write locks need a file open for writing).
        let (exclusiveCode, message) = try folder.toolAsNobody(["run", "--range", "0:10", path, "--", "true"])
        #expect(exclusiveCode == 2)
        #expect(message.contains("permission denied") && message.contains(path), "\(message)")
        #expect(message.contains("filelock run -s"), "the message should offer a shared range: \(message)")
        // A missing file is still created for a shared range.
        #expect(try filelock("run", "-s", "--range", "0:10", folder.file("new.bin"), "--", "true").0 == 0)
        #expect(access(folder.file("new.bin"), F_OK) == 0)
    }

    @Test func aRangeBeyondInt64IsRefusedBeforeTheFileIsCreated() throws {
        let path = folder.file("overflow.bin")
        let (code, message) = try filelock("run", "--range", "9223372036854775807:1", path, "--", "true")
        #expect(code == 2)
        #expect(message.contains("--range"), "\(message)")
        #expect(access(path, F_OK) != 0, "the refused run created the file")
        #expect(try filelock("run", "--range", "9223372036854775806:1", path, "--", "true").0 == 0, "the last byte")
    }

    @Test func rangeLocksTheBytesOfTheFileItself() throws {
        let path = folder.file("records.bin")
        let run = try ChildProcess(Self.tool, ["run", "--range", "0:100", path, "--", "sh", "-c", "echo ready; read line"])
        try run.expectLine(startingWith: "ready")
        let file = try ByteRangeLock(at: path)
        #expect(try !file.tryLock(ByteRange(start: 50, length: 10)))
        #expect(try file.tryLock(ByteRange(start: 100, length: 10)))
        run.send("go")
        #expect(try run.waitForExit() == 0)
    }

    // MARK: Read-write locks (--kind rw)

    /// Two readers inside at once (the second gets in with -n while the first stays), then a
    /// writer that waits for them (its -v report, after a second, is the handshake) and names a
    /// reader; `status` lists both readers and the waiting writer, which keeps new readers out;
    /// once the readers leave, the writer runs and `status` shows it.
    @Test func rwReadersShareTheLockAndAWriterWaitsForThem() throws {
        let path = folder.file("rw.lock")
        let reader = ["run", "--kind", "rw", "-s", path, "--", "sh", "-c", "echo inside; read line"]
        let first = try ChildProcess(Self.tool, reader)
        try first.expectLine(startingWith: "inside")
        let second = try ChildProcess(Self.tool, ["run", "-n"] + reader.dropFirst())
        try second.expectLine(startingWith: "inside")
        // Both are inside now: neither has been told to leave.
        let (busy, _) = try filelock("run", "-n", "-E", "75", "--kind", "rw", path, "--", "true")
        #expect(busy == 75, "a writer got in beside two readers")

        let writer = try ChildProcess(
            "/bin/sh",
            ["-c", "exec \"$0\" \"$@\" 2>&1", Self.tool, "run", "-v", "--kind", "rw", path, "--", "sh", "-c", "echo writing; read line"])
        let waiting = try writer.expectLine(startingWith: "filelock: waiting for")
        #expect(waiting.contains("held by pid \(first.pid)") || waiting.contains("held by pid \(second.pid)"), "\(waiting)")
        #expect(waiting.contains("running \(Self.tool) run"), "\(waiting)")

        let (code, json) = try filelock("status", "--json", "--kind", "rw", path)
        #expect(code == 1, "\(json)")
        #expect(json.contains("\"kind\":\"rw\"") && json.contains("\"held\":true") && json.contains("\"guessed\":false"), "\(json)")
        for pid in [first.pid, second.pid] {
            let object = holderObject(in: json, pid: pid)
            #expect(object?.contains("\"shared\":true") == true, "reader \(pid): \(json)")
            #expect(object?.contains("\"command\":\"\(Self.tool) run") == true, "reader \(pid): \(json)")
            #expect(object?.contains("\"host\":\"") == true, "reader \(pid): \(json)")
        }
        #expect(json.contains("\"waitingWriter\":{\"pid\":\(writer.pid),"), "\(json)")
        let waitingObject = holderObject(in: json, pid: writer.pid)
        #expect(waitingObject?.contains("\"shared\":false") == true, "\(json)")
        #expect(waitingObject?.contains("run -v --kind rw") == true, "\(json)")
        let (_, text) = try filelock("status", "--kind", "rw", path)
        #expect(text.contains("held (read-write lock"), "\(text)")
        #expect(text.contains("reader: pid \(first.pid)") && text.contains("reader: pid \(second.pid)"), "\(text)")
        #expect(text.contains("waiting writer: pid \(writer.pid)"), "\(text)")
        // A writer waits: no new reader gets in (SQLite's writer preference).
        #expect(try filelock("run", "-n", "-s", "--kind", "rw", path, "--", "true").0 == 1)

        first.send("go")
        second.send("go")
        #expect(try first.waitForExit() == 0)
        #expect(try second.waitForExit() == 0)
        try writer.expectLine(startingWith: "filelock: got the lock")
        try writer.expectLine(startingWith: "writing")
        let (held, heldJSON) = try filelock("status", "--json", path)
        #expect(held == 1)
        #expect(heldJSON.contains("\"kind\":\"rw\"") && heldJSON.contains("\"guessed\":true"), "guessed: \(heldJSON)")
        #expect(holderObject(in: heldJSON, pid: writer.pid)?.contains("\"shared\":false") == true, "\(heldJSON)")
        #expect(heldJSON.contains("\"waitingWriter\":null"), "\(heldJSON)")
        let (_, heldText) = try filelock("status", path)
        #expect(heldText.contains("writer: pid \(writer.pid)") && heldText.contains("guessed"), "\(heldText)")
        #expect(try filelock("run", "-n", "-s", "--kind", "rw", path, "--", "true").0 == 1, "a reader got in beside the writer")
        writer.send("go")
        #expect(try writer.waitForExit() == 0)
        #expect(try filelock("status", "--kind", "rw", path).0 == 0)
    }

    /// A reader of another program (the library's ReadWriteLock in lock-probe) keeps `run --kind
    /// rw` writers out: -n and a timeout give the conflict exit code; readers still get in.
    /// Another user's reader cannot be named (its `/proc/PID/fdinfo` is closed to this user), but
    /// the lock is still reported held, and `break` still refuses it.
    @Test(.enabled(if: TestEnvironment.requires(TestEnvironment.isRoot), "needs root to switch to nobody"))
    func rwHeldByAnotherUserIsReportedHeld() throws {
        let path = folder.file("other-user.lock")
        writeFile(path, "")
        chmod(path, 0o666)
        let reader = try ChildProcess(TestEnvironment.probe, ["hold", path, "--kind", "rw", "--shared"])
        try reader.expectLine(startingWith: "acquired")
        let (code, output) = try folder.toolAsNobody(["status", "--kind", "rw", "--json", path])
        #expect(code == 1, "held: \(output)")
        #expect(output.contains("\"held\":true") && output.contains("\"unidentified\":1"), "\(output)")
        let (textCode, text) = try folder.toolAsNobody(["status", path])
        #expect(textCode == 1 && text.contains("cannot see"), "\(text)")
        let (breakCode, breakText) = try folder.toolAsNobody(["break", path])
        #expect(breakCode == 1 && breakText.contains("cannot see"), "\(breakText)")
        reader.send("release")
        try reader.expectLine(startingWith: "released")
        let (freeCode, free) = try folder.toolAsNobody(["status", "--kind", "rw", path])
        #expect(freeCode == 0 && free.contains("free"), "\(free)")
    }

    /// An SQLite transaction on a read-write lock's file writes the database's first page: status
    /// takes such a file for a (free) read-write lock, not for a malformed soft marker, and says
    /// when it is a WAL database, which the lock refuses.
    @Test func statusKnowsAnSQLiteDatabaseForAReadWriteLock() throws {
        let path = folder.file("written.lock")
        var page = Array("SQLite format 3".utf8) + [0, 0x10, 0x00, 1, 1]
        page += [UInt8](repeating: 0, count: 4096 - page.count)
        writeBytes(path, page)
        let (code, output) = try filelock("status", path)
        #expect(code == 0 && output.contains("free (read-write lock") && output.contains("SQLite database"), "\(output)")
        let (_, json) = try filelock("status", "--json", path)
        #expect(json.contains("\"kind\":\"rw\"") && json.contains("\"format\":\"sqlite\""), "\(json)")
        page[18] = 2
        page[19] = 2
        writeBytes(path, page)
        let (walCode, wal) = try filelock("status", "--kind", "rw", path)
        #expect(walCode == 0 && wal.contains("WAL mode"), "\(wal)")
    }

    @Test func rwWriterIsKeptOutByAReaderOfAnotherProgram() throws {
        let path = folder.file("rw-probe.lock")
        let holder = try ChildProcess(TestEnvironment.probe, ["hold", path, "--kind", "rw", "--shared"])
        try holder.expectLine(startingWith: "acquired")
        #expect(try filelock("run", "-n", "--kind", "rw", path, "--", "true").0 == 1)
        #expect(try filelock("run", "-x", "-n", "-E", "75", "--kind", "rw", path, "--", "true").0 == 75)
        #expect(try filelock("run", "-nE9", "--kind", "rw", path, "true").0 == 9, "flock(1)-style bundle")
        let (timedOut, message) = try filelock("run", "-v", "-w", "1", "-E", "74", "--kind", "rw", path, "--", "echo", "ran")
        #expect(timedOut == 74, "\(message)")
        #expect(message.contains("timed out") && message.contains("pid \(holder.pid)") && !message.contains("ran\n"), "\(message)")
        let (shared, output) = try filelock("run", "-n", "-s", "--kind", "rw", path, "--", "echo", "reader ran")
        #expect(shared == 0 && output.contains("reader ran"), "\(output)")
        let (_, json) = try filelock("status", "--json", path)
        #expect(json.contains("\"kind\":\"rw\"") && json.contains("\"guessed\":true"), "\(json)")
        #expect(holderObject(in: json, pid: holder.pid)?.contains("lock-probe hold") == true, "\(json)")
        // A flock on the same file is another lock: the read-write lock does not hold it.
        #expect(try filelock("run", "-n", path, "--", "true").0 == 0)
        holder.send("release")
        try holder.expectLine(startingWith: "released")
        #expect(try filelock("run", "-n", "--kind", "rw", path, "--", "true").0 == 0)
        #expect(try filelock("status", "--kind", "rw", path).0 == 0)
    }

    /// A read-write lock's file is empty, as an abandoned soft marker: `break` must not remove it
    /// while its holders hold it.
    @Test func breakRefusesAHeldReadWriteLock() throws {
        let path = folder.file("rw-break.lock")
        let holder = try ChildProcess(TestEnvironment.probe, ["hold", path, "--kind", "rw"])
        try holder.expectLine(startingWith: "acquired")
        runShell("touch -d '1 hour ago' '\(path)'")
        let (code, message) = try filelock("break", path)
        #expect(code == 1, "\(message)")
        #expect(message.contains("read-write lock") && message.contains("pid \(holder.pid)"), "\(message)")
        #expect(access(path, F_OK) == 0, "the held lock file was removed")
    }

    @Test(arguments: [["--range", "0:10"], ["--fallback-to-soft"], ["--remove-on-release"], ["-s", "--remove-on-release"]])
    func rwRefusesOptionsThatDoNotApply(_ options: [String]) throws {
        let path = folder.file("rw-refused.lock")
        let option = options.last!.hasPrefix("--") ? options.last! : options.first!
        for order in [["--kind", "rw"] + options, options + ["--kind=rw"]] {
            let (code, message) = try filelock(["run"] + order + [path, "--", "echo", "ran"])
            #expect(code == 2, "\(order): \(message)")
            #expect(message.contains(option) && message.contains("--kind rw"), "\(order): \(message)")
            #expect(!message.contains("ran\n"), "\(order): \(message)")
        }
        #expect(access(path, F_OK) != 0, "a refused run created the lock file")
    }
}

/// The host name as markers record it (computed the same way, independently: plain names only).
func ProcessIdentity_hostName() -> String {
    var buffer = [CChar](repeating: 0, count: 256)
    gethostname(&buffer, 255)
    return String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
}

/// The object of the holder with `pid` in `filelock status --json` output (holders or the waiting
/// writer): from `{"pid":PID,` to its closing brace.
func holderObject(in json: String, pid: Int32) -> String? {
    guard let start = json.range(of: "{\"pid\":\(pid),") else { return nil }
    guard let end = json[start.upperBound...].firstIndex(of: "}") else { return nil }
    return String(json[start.lowerBound...end])
}

extension String {
    fileprivate func replacingSingleQuotes() -> String {
        split(separator: "'", omittingEmptySubsequences: false).joined(separator: "'\\''")
    }
}
