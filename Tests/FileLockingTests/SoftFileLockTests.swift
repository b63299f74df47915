#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif
@testable import FileLocking
import Subprocesses
import Testing

/// Marker-file locks, with real processes for holders, breakers and waiters.
@Suite("SoftFileLock", .ownThreads)
struct SoftFileLockTests {
    let folder: TemporaryFolder
    init() throws { folder = try TemporaryFolder() }

    func probe(_ arguments: String...) throws -> ChildProcess {
        try ChildProcess(TestEnvironment.probe, arguments + ["--kind", "soft"])
    }

    /// A process id that belongs to no process now.
    func deadPID() throws -> Int32 {
        let child = try ChildProcess("/bin/true", [])
        try child.waitForExit()
        return child.pid
    }

    func writeMarker(_ path: String, _ contents: String, ageSeconds: Int = 0) {
        writeFile(path, contents)
        if ageSeconds > 0 { runShell("touch -d '\(ageSeconds) seconds ago' '\(path)'") }
    }

    @Test func markerHoldsThisProcessesRecordAndGoesOnRelease() throws {
        let path = folder.file("soft.lock")
        let lock = try SoftFileLock(at: path)
        try lock.acquire()
        let contents = try #require(readFile(path))
        let lines = contents.split(separator: "\n")
        #expect(lines.first == Substring(String(getpid())))
        #expect(lines.count == 3, "pid, host and start token: \(contents)")
        #expect(contents.hasSuffix("\n"))
        var status = stat()
        stat(path, &status)
        // As Python filelock: 0o644 less the umask, so other users can read who holds it.
        let mask = umask(0o022)
        umask(mask)
        #expect(status.st_mode & 0o777 == 0o644 & ~mask)
        #expect(lock.isHeldByUs)
        #expect(lock.holder?.pid == getpid())
        #expect(lock.holder?.looksStale == false)
        #expect(lock.holder?.since != nil)
        lock.release()
        #expect(access(path, F_OK) != 0, "the marker is removed on release")
        #expect(!lock.isHeldByUs)
    }

    @Test func reentrancyAndForcedRelease() throws {
        let lock = try SoftFileLock(at: folder.file("re.lock"))
        try lock.acquire()
        try lock.acquire()
        #expect(lock.holdCount == 2)
        lock.release()
        #expect(access(folder.file("re.lock"), F_OK) == 0)
        try lock.acquire()
        lock.release(force: true)
        #expect(access(folder.file("re.lock"), F_OK) != 0)
    }

    @Test func tryAcquireFailsWhileAnotherProcessHoldsAndSeesItsPid() throws {
        let path = folder.file("held.lock")
        let holder = try probe("hold", path)
        let pid = Int32(try holder.expectLine(startingWith: "acquired").split(separator: " ")[1])
        let lock = try SoftFileLock(at: path)
        #expect(try !lock.tryAcquire())
        #expect(lock.holder?.pid == pid)
        #expect(lock.holder?.host == ProcessIdentity.hostName)
        #expect(!lock.isHeldByUs)
        let error = #expect(throws: FileLockError.self) { try lock.acquire(timeout: .milliseconds(50)) }
        #expect(error?.code == .timedOut)
        #expect(error?.holder?.pid == pid)
        holder.send("release")
        try holder.expectLine(startingWith: "released")
        #expect(try lock.tryAcquire())
        lock.release()
    }

    @Test func aWaiterRecoversPromptlyAfterTheHolderIsKilled() throws {
        let path = folder.file("killed.lock")
        let holder = try probe("hold", path)
        try holder.expectLine(startingWith: "acquired")
        let waiter = try probe("hold", path, "--timeout", "60")
        holder.signal(SIGKILL)
        #expect(try holder.waitForExit() == 128 + SIGKILL)
        let started = ChildProcess.now()
        try waiter.expectLine(startingWith: "acquired")
        #expect(ChildProcess.now() - started < 10, "stale detection, not a timeout, freed the lock")
        waiter.send("release")
        try waiter.expectLine(startingWith: "released")
        #expect(access(path, F_OK) != 0)
    }

    @Test func aRecycledPidIsBroken() throws {
        // A live process (this one) but another start token: the pid was reused.
        #expect(ProcessIdentity.ownStartToken != nil, "start tokens are readable here")
        let path = folder.file("recycled.lock")
        writeMarker(path, "\(getpid())\n\(ProcessIdentity.hostName)\n12345\n")
        let lock = try SoftFileLock(at: path)
        #expect(lock.holder?.looksStale == true)
        #expect(try lock.tryAcquire())
        #expect(lock.isHeldByUs)
        lock.release()
    }

    @Test func aMarkerWithoutAStartTokenNamingThisProcessIsHeldByUs() throws {
        // As the stale check (ours, alive) and Python filelock judge it; a token that differs
        // names an earlier process with our pid.
        let path = folder.file("no-token.lock")
        writeMarker(path, "\(getpid())\n\(ProcessIdentity.hostName)\n")
        let lock = try SoftFileLock(at: path)
        #expect(lock.holder?.looksStale == false)
        #expect(lock.isHeldByUs)
        writeMarker(path, "\(getpid())\n\(ProcessIdentity.hostName)\n12345\n")
        #expect(!lock.isHeldByUs)
        writeMarker(path, "\(getpid())\nsome-other-host\n")
        #expect(!lock.isHeldByUs)
    }

    @Test func aLiveHolderWithItsOwnTokenIsNotBroken() throws {
        let path = folder.file("live.lock")
        let token = try #require(ProcessIdentity.ownStartToken)
        writeMarker(path, "\(getpid())\n\(ProcessIdentity.hostName)\n\(token.decimal)\n", ageSeconds: 60)
        let lock = try SoftFileLock(at: path)
        #expect(lock.holder?.looksStale == false)
        #expect(try !lock.tryAcquire())
        #expect(readFile(path)?.hasPrefix("\(getpid())\n") == true)
    }

    @Test func aDeadHolderOnThisHostIsBroken() throws {
        let path = folder.file("dead.lock")
        writeMarker(path, "\(try deadPID())\n\(ProcessIdentity.hostName)\n")
        let lock = try SoftFileLock(at: path)
        #expect(lock.holder?.looksStale == true)
        #expect(try lock.tryAcquire())
        lock.release()
    }

    @Test func aMarkerFromAnotherHostIsNeverBrokenByLiveness() throws {
        let path = folder.file("remote.lock")
        writeMarker(path, "\(try deadPID())\nsome-other-host\n", ageSeconds: 3600)
        let lock = try SoftFileLock(at: path)
        #expect(lock.holder?.host == "some-other-host")
        #expect(lock.holder?.looksStale == false)
        #expect(try !lock.tryAcquire())
        let error = #expect(throws: FileLockError.self) { try lock.acquire(timeout: .milliseconds(30)) }
        #expect(error?.holder?.host == "some-other-host")
        #expect(readFile(path)?.contains("some-other-host") == true)
    }

    @Test(arguments: ["garbage", "12\n", "1\n2\n3\n4\n", "abc\nhost\n", "99999999999\nhost\n", "5\nhost\nnot-a-token\n", "4242\nvm"])
    func aMalformedMarkerIsBrokenOnlyAfterTwoSecondsUnchanged(contents: String) throws {
        // Timed on this host's clock from when we first see it (not by its mtime, which an NFS
        // server's clock sets): an old mtime alone does not make it stale.
        let path = folder.file("malformed.lock")
        writeMarker(path, contents, ageSeconds: 3600)
        let lock = try SoftFileLock(at: path)
        #expect(try !lock.tryAcquire(), "a writer may be between create and write")
        let started = ChildProcess.now()
        try lock.acquire(timeout: .seconds(20))
        #expect(ChildProcess.now() - started >= 1.5)
        #expect(lock.isHeldByUs)
        lock.release()
    }

    @Test func inspectMarkerTellsApartWhatHolderReportsAsNil() throws {
        let path = folder.file("inspected.lock")
        let lock = try SoftFileLock(at: path)
        #expect(try lock.inspectMarker() == .absent)
        writeMarker(path, "", ageSeconds: 60)
        let empty = try lock.inspectMarker()
        guard case .empty(let modified) = empty else { Issue.record("\(empty)"); return }
        #expect(abs(modified.seconds + 60 - Int64(time(nil))) <= 5, "the marker's mtime")
        writeMarker(path, "garbage")
        let malformed = try lock.inspectMarker()
        guard case .malformed(_, let size) = malformed else { Issue.record("\(malformed)"); return }
        #expect(size == 7)
        writeMarker(path, "\(getpid())\n\(SoftFileLock.hostName)\n")
        let record = try lock.inspectMarker()
        #expect(record == .record(try #require(lock.holder)))
        #expect(lock.holder?.host == ProcessIdentity.hostName)
        #expect(lock.holder?.looksStale == false)
    }

    @Test func inspectMarkerRefusesWhatIsNoRegularFile() throws {
        mkdir(folder.file("dir.lock"), 0o755)
        symlink(folder.file("target"), folder.file("link.lock"))
        mkfifo(folder.file("fifo.lock"), 0o644)
        let expected: [(String, FileLockError.Code)] = [
            ("dir.lock", .isDirectory), ("link.lock", .isSymbolicLink), ("fifo.lock", .invalidPath),
        ]
        for (name, code) in expected {
            let lock = try SoftFileLock(at: folder.file(name))
            let error = #expect(throws: FileLockError.self) { try lock.inspectMarker() }
            #expect(error?.code == code, "\(name)")
            #expect(error?.message.contains(folder.file(name)) == true, "\(name)")
        }
        #expect(access(folder.file("target"), F_OK) != 0, "the link was not followed")
    }

    @Test(arguments: ["", "garbage"])
    func breakMarkerJudgesAnEmptyOrMalformedMarkerByItsModificationTime(contents: String) throws {
        // One call has no earlier look to time the marker by (the grace restarted in every new
        // process): it goes by the mtime on this host's clock.
        let path = folder.file("unparsable.lock")
        writeMarker(path, contents)
        let lock = try SoftFileLock(at: path)
        #expect(try lock.breakMarker() == .holderAlive(nil), "a writer may be between create and write")
        #expect(access(path, F_OK) == 0)
        runShell("touch -d '3 seconds ago' '\(path)'")
        #expect(try lock.breakMarker() == .broken(nil))
        #expect(access(path, F_OK) != 0)
        writeMarker(path, contents)
        #expect(try lock.breakMarker(force: true) == .broken(nil), "--force breaks a fresh one")
        #expect(access(path, F_OK) != 0)
    }

    @Test func aMarkerThatChangesIsNotAbandoned() throws {
        let path = folder.file("changing.lock")
        let lock = try SoftFileLock(at: path)
        for round in 0..<6 {
            writeMarker(path, "garbage \(round)")
            #expect(try !lock.tryAcquire())
            usleep(500_000)
        }
    }

    @Test func anEmptyMarkerIsNeverBrokenAsInPythonFilelock() throws {
        // Python filelock before 3.22 keeps the marker empty for the whole hold.
        let path = folder.file("empty.lock")
        writeMarker(path, "", ageSeconds: 3600)
        let lock = try SoftFileLock(at: path)
        let error = #expect(throws: FileLockError.self) { try lock.acquire(timeout: .seconds(3)) }
        #expect(error?.code == .timedOut)
        #expect(access(path, F_OK) == 0)
    }

    static let bindfs: String? = ["/usr/bin/bindfs", "/bin/bindfs"].first { access($0, X_OK) == 0 }

    /// A network-like filesystem for real: two FUSE (bindfs) mounts of one folder, which refuse
    /// `renameat2(RENAME_EXCHANGE)` with `EINVAL` as NFS does. Eight breakers, half on each
    /// mount, race on a fresh stale marker every round; exactly one wins.
    @Test(.enabled(if: TestEnvironment.requires(bindfs != nil && TestEnvironment.isRoot), "needs bindfs and root"))
    func breakersOnTwoFUSEMountsOfOneFolderHaveOneWinner() throws {
        let shared = folder.file("shared")
        let mounts = [folder.file("mount-a"), folder.file("mount-b")]
        for made in [shared] + mounts { mkdir(made, 0o755) }
        for mount in mounts {
            #expect(runShell("'\(Self.bindfs ?? "bindfs")' --no-allow-other '\(shared)' '\(mount)'") == 0)
        }
        defer { for mount in mounts { runShell("umount '\(mount)' || fusermount -u '\(mount)'") } }
        let racers = try (0..<8).map { index in
            try ChildProcess(TestEnvironment.probe, ["race", mounts[index % 2] + "/fuse.lock", "--kind", "soft"])
        }
        let dead = try deadPID()
        for round in 0..<15 {
            writeMarker(shared + "/fuse.lock", "\(dead)\n\(ProcessIdentity.hostName)\n")
            for racer in racers { racer.send("go") }
            let answers = try racers.map { try $0.readLine() }
            let winners = answers.filter { $0.hasPrefix("won") }
            #expect(winners.count == 1, "round \(round): \(answers)")
            for racer in racers { racer.send("release") }
            for racer in racers { try racer.expectLine(startingWith: "released") }
            #expect(access(shared + "/fuse.lock", F_OK) != 0, "round \(round)")
            let leftovers = try ChildProcess("/bin/sh", ["-c", "ls -a '\(shared)' | grep -cE 'break|release' || true"])
            #expect(try leftovers.readLine() == "0", "round \(round): helper files left behind")
        }
        for racer in racers { racer.closeInput() }
        for racer in racers { _ = try racer.waitForExit() }
    }

    /// The helper names of breaking and releasing (`<name>.break...`) stay within 255 bytes, so a
    /// marker whose name is near that limit can still be broken and released.
    @Test(arguments: exchangeCases)
    func aStaleMarkerWithALongNameIsBroken(exchange: Bool) throws {
        let path = folder.file(String(repeating: "n", count: 250) + ".lock")
        writeMarker(path, "\(try deadPID())\n\(ProcessIdentity.hostName)\n")
        let racer = try ChildProcess(
            TestEnvironment.probe, ["race", path, "--kind", "soft"], environment: try breakerEnvironment(exchange: exchange))
        racer.send("go")
        #expect(try racer.readLine().hasPrefix("won"))
        racer.send("release")
        try racer.expectLine(startingWith: "released")
        #expect(access(path, F_OK) != 0)
        racer.closeInput()
    }

    /// A timeout says why a soft lock stays held where the kind knows: an empty marker, a holder
    /// on another host, a stale marker that could not be broken (here another breaker's claim);
    /// a try says it did not wait.
    @Test func timeoutsSayWhyTheLockStaysHeld() throws {
        let path = folder.file("why.lock")
        let lock = try SoftFileLock(at: path)
        writeMarker(path, "")
        let empty = #expect(throws: FileLockError.self) { try lock.acquire(timeout: .milliseconds(20)) }
        #expect(empty?.message.contains("empty") == true && empty?.message.contains("filelock break") == true)
        writeMarker(path, "4242\nbuildhost-07\n")
        let foreign = #expect(throws: FileLockError.self) { try lock.acquire(timeout: .zero) }
        #expect(foreign?.message.contains("not waiting") == true, "\(foreign?.message ?? "")")
        #expect(foreign?.message.contains("another host") == true, "\(foreign?.message ?? "")")
        writeMarker(path, "\(try deadPID())\n\(ProcessIdentity.hostName)\n")
        writeMarker(path + ".break-claim", "filelock/claim\n1\nanother-host\n")
        let stale = #expect(throws: FileLockError.self) { try lock.acquire(timeout: .milliseconds(20)) }
        #expect(stale?.message.contains("could not be broken") == true, "\(stale?.message ?? "")")
        #expect(try lock.breakMarker() == .breakInProgress(lock.holder))
    }

    /// A file larger than any marker, or holding a NUL byte, is some other file the lock was
    /// pointed at by mistake (a data file): never deleted as an abandoned marker, however old,
    /// unless broken with force.
    @Test(arguments: ["1\n" + String(repeating: "h", count: 2000) + "\n", "{\"a\": 1}\u{0}"])
    func aFileThatIsNoMarkerIsNeverBroken(contents: String) throws {
        let path = folder.file("data.json")
        writeMarker(path, contents, ageSeconds: 3600)
        let lock = try SoftFileLock(at: path)
        let error = #expect(throws: FileLockError.self) { try lock.acquire(timeout: .seconds(3)) }
        #expect(error?.code == .invalidPath)
        #expect(error?.message.contains("no lock marker") == true)
        let breakError = #expect(throws: FileLockError.self) { _ = try lock.breakMarker() }
        #expect(breakError?.code == .invalidPath)
        var status = stat()
        #expect(stat(path, &status) == 0 && Int(status.st_size) == contents.utf8.count, "the file is untouched")
        #expect(try lock.breakMarker(force: true) != .noMarker)
        #expect(access(path, F_OK) != 0)
    }

    /// Markers are created 0o644 less the umask by default, as Python's: another user's process
    /// can read who holds the lock.
    @Test(.enabled(if: TestEnvironment.requires(TestEnvironment.isRoot), "needs root to switch to nobody"))
    func anotherUserSeesWhoHoldsADefaultMarker() throws {
        let path = folder.file("shared-view.lock")
        let lock = try SoftFileLock(at: path)
        try lock.acquire()
        defer { lock.release() }
        let child = try folder.probeAsNobody(["holder", path, "--kind", "soft"])
        #expect(try child.readLine() == "holder \(getpid())")
    }

    @Test(.enabled(if: TestEnvironment.requires(TestEnvironment.isRoot), "needs root to switch to nobody"))
    func anotherUsersUnreadableMarkerMeansWaitNotFail() throws {
        let path = folder.file("private.lock")
        let lock = try SoftFileLock(at: path, filePermissions: 0o600)
        try lock.acquire()
        defer { lock.release() }
        let child = try folder.probeAsNobody(["hold", path, "--kind", "soft", "--timeout", "1"])
        let line = try child.expectLine(startingWith: "error")
        #expect(line.hasPrefix("error timedOut"), "\(line)")
    }

    @Test func aForkedChildDoesNotReleaseItsParentsLock() throws {
        let path = folder.file("fork.lock")
        let lock = try SoftFileLock(at: path)
        try lock.acquire()
        let child = forkChild()
        if child == 0 {
            lock.release()  // inherited hold: must leave the parent's marker alone
            _exit(access(path, F_OK) == 0 ? 0 : 1)
        }
        #expect(waitForChild(child) == 0, "the child's release removed the parent's marker")
        #expect(lock.isHeldByUs)
        #expect(try !SoftFileLock(at: path).tryAcquire())
        lock.release()
    }

    @Test func lifetimeBreaksEvenALiveHoldersMarker() throws {
        let path = folder.file("lifetime.lock")
        let holder = try probe("hold", path)
        try holder.expectLine(startingWith: "acquired")
        runShell("touch -d '5 seconds ago' '\(path)'")
        let strict = try SoftFileLock(at: path)
        #expect(try !strict.tryAcquire(), "without a lifetime a live holder keeps it")
        let expiring = try SoftFileLock(at: path, lifetime: .seconds(2))
        #expect(expiring.holder?.looksStale == true)
        #expect(try expiring.tryAcquire())
        #expect(expiring.isHeldByUs)
        // The old holder's release must not remove our marker.
        holder.send("release")
        try holder.expectLine(startingWith: "released")
        #expect(expiring.isHeldByUs)
        expiring.release()
    }

    @Test func releaseAfterOurMarkerWasReplacedLeavesTheSuccessorsMarker() throws {
        let path = folder.file("replaced.lock")
        let lock = try SoftFileLock(at: path)
        try lock.acquire()
        unlink(path)
        writeMarker(path, "1\nsuccessor-host\n")
        lock.release()
        #expect(readFile(path) == "1\nsuccessor-host\n")
    }

    /// A breaker may swap its marker in between the holder's look at the path and its removal
    /// (with a `lifetime`, a working holder can be broken). The release must not delete the
    /// breaker's marker. A shim makes the swap happen at exactly that moment: the first `unlink`
    /// or `rename` of the lock path first renames the successor's marker over it.
    ///
    /// As another user (`nobody`), the successor's marker (root's) cannot be hard-linked back
    /// (`fs.protected_hardlinks`): the put-back must not depend on a hard link.
    @Test(
        .enabled(if: TestEnvironment.requires(NoFlockTests.compiler != nil && TestEnvironment.isRoot), "needs a C compiler and root"),
        arguments: [false, true])
    func releaseNeverRemovesASuccessorsMarker(asAnotherUser: Bool) throws {
        let path = folder.file("succ.lock")
        let successor = folder.file("successor-marker")
        writeMarker(successor, "1\nsuccessor-host\n")
        let shim = try NoFlockTests.shim(
            """
            #define _GNU_SOURCE
            #include <dlfcn.h>
            #include <stdio.h>
            #include <stdlib.h>
            #include <string.h>
            static int swapped;
            static void swapInSuccessor(const char *path) {
                const char *target = getenv("SHIM_TARGET");
                if (swapped || !target || strcmp(path, target) != 0) return;
                swapped = 1;
                int (*real)(const char *, const char *) = (int (*)(const char *, const char *))dlsym(RTLD_NEXT, "rename");
                real(getenv("SHIM_SUCCESSOR"), target);
            }
            int unlink(const char *path) {
                swapInSuccessor(path);
                return ((int (*)(const char *))dlsym(RTLD_NEXT, "unlink"))(path);
            }
            int rename(const char *from, const char *to) {
                swapInSuccessor(from);
                return ((int (*)(const char *, const char *))dlsym(RTLD_NEXT, "rename"))(from, to);
            }
            """, in: folder, name: "swap")
        let environment = ["LD_PRELOAD": shim, "SHIM_TARGET": path, "SHIM_SUCCESSOR": successor]
        let holder: ChildProcess
        if asAnotherUser {
            _ = try folder.probeAsNobody(["holder", path])  // copies the probe where nobody can run it
            holder = try ChildProcess(
                "setpriv", ["--reuid=nobody", "--regid=nogroup", "--clear-groups", folder.file("lock-probe"), "hold", path, "--kind", "soft"],
                environment: environment)
        } else {
            holder = try ChildProcess(TestEnvironment.probe, ["hold", path, "--kind", "soft"], environment: environment)
        }
        try holder.expectLine(startingWith: "acquired")
        holder.send("release")
        try holder.expectLine(startingWith: "released")
        #expect(readFile(path) == "1\nsuccessor-host\n", "the release removed the successor's marker")
        let leftovers = try ChildProcess("/bin/sh", ["-c", "ls -a '\(folder.path)' | grep -c release || true"])
        #expect(try leftovers.readLine() == "0", "no .release files left behind")
    }

    /// Without the exchange (NFS, SMB, FUSE), `break --force` and `break` of an old malformed
    /// marker work as they do elsewhere.
    @Test(.enabled(if: TestEnvironment.requires(NoFlockTests.compiler != nil), "needs a C compiler for the shim"))
    func breakingWithoutExchangeHonoursForceAndAge() throws {
        let environment = try breakerEnvironment(exchange: false)
        func breakCommand(_ arguments: [String]) throws -> Int32 {
            let tool = try ChildProcess(TestEnvironment.tool, ["break"] + arguments, environment: environment)
            _ = try tool.readRemainingOutput()
            return try tool.waitForExit()
        }
        let live = folder.file("live.lock")
        writeMarker(live, "\(getpid())\n\(ProcessIdentity.hostName)\n")
        #expect(try breakCommand([live]) == 1, "a live holder is not broken without --force")
        #expect(try breakCommand(["--force", live]) == 0)
        #expect(access(live, F_OK) != 0)
        let old = folder.file("old.lock")
        writeMarker(old, "half-written", ageSeconds: 3600)
        #expect(try breakCommand([old]) == 0, "an hour-old malformed marker is broken by its age")
        #expect(access(old, F_OK) != 0)
        let empty = folder.file("empty.lock")
        writeMarker(empty, "")
        #expect(try breakCommand(["--force", empty]) == 0)
        #expect(access(empty, F_OK) != 0)
    }

    /// A claim whose breaker died is removed at once when it names a gone process of this host,
    /// and after 5 s unchanged otherwise; a file at the claim's name that is no claim stays.
    @Test func anAbandonedClaimIsRemoved() throws {
        let dead = try deadPID()
        let path = folder.file("claimed.lock")
        let claim = path + ".break-claim"
        writeMarker(path, "\(dead)\n\(ProcessIdentity.hostName)\n")
        writeMarker(claim, "filelock/claim\n\(dead)\n\(ProcessIdentity.hostName)\n")
        let lock = try SoftFileLock(at: path)
        try lock.acquire(timeout: .seconds(20))
        #expect(lock.isHeldByUs)
        lock.release()
        #expect(access(claim, F_OK) != 0)

        // A claimant that lives (on another host, say): its claim counts as abandoned only after 5 s.
        writeMarker(path, "\(dead)\n\(ProcessIdentity.hostName)\n")
        writeMarker(claim, "filelock/claim\n1\nanother-host\n")
        #expect(try !lock.tryAcquire(), "a fresh claim of a live breaker is respected")
        try lock.acquire(timeout: .seconds(30))
        lock.release()
        #expect(access(claim, F_OK) != 0)

        // A claim cut short (even empty) by a breaker that died while writing it is a claim too:
        // one look (`filelock break`) judges it by its age.
        writeMarker(path, "\(dead)\n\(ProcessIdentity.hostName)\n")
        writeMarker(claim, "", ageSeconds: 3600)
        #expect(try lock.breakMarker() != .breakInProgress(lock.holder), "an hour-old empty claim is abandoned")
        #expect(access(claim, F_OK) != 0)
        #expect(access(path, F_OK) != 0)

        // Someone's own file that happens to have the claim's name is never removed.
        writeMarker(path, "\(dead)\n\(ProcessIdentity.hostName)\n")
        writeMarker(claim, "precious")
        #expect(try !lock.tryAcquire())
        #expect(readFile(claim) == "precious")
    }

    /// A waiter that cannot break a stale marker pauses; it must not spin on the folder events of
    /// its own failed attempts. Two cases: another breaker's live claim stands; the marker is
    /// another user's in a sticky folder (`/tmp`), which only its owner may replace. Bound: half
    /// a core while it waits 2 s (spinning used all of one).
    @Test(
        .enabled(if: TestEnvironment.requires(TestEnvironment.isRoot), "needs root to switch to nobody"),
        arguments: ["claim", "sticky"])
    func aWaiterThatCannotBreakDoesNotSpin(obstacle: String) throws {
        let sticky = folder.file("sticky")
        let mode: mode_t = obstacle == "sticky" ? 0o1777 : 0o777
        mkdir(sticky, 0o755)
        chmod(sticky, mode)
        let path = sticky + "/spin.lock"
        writeMarker(path, "\(try deadPID())\n\(ProcessIdentity.hostName)\n")
        if obstacle == "claim" { writeMarker(path + ".break-claim", "filelock/claim\n1\nanother-host\n") }
        let waiter = try folder.probeAsNobody(["hold", path, "--kind", "soft", "--timeout", "2"])
        let line = try waiter.readLine(timeout: 60)
        #expect(line.hasPrefix("error timedOut"), "\(line)")
        var usage = rusage()
        var status: Int32 = 0
        wait4(waiter.pid, &status, 0, &usage)
        let seconds = Double(usage.ru_utime.tv_sec + usage.ru_stime.tv_sec)
            + Double(usage.ru_utime.tv_usec + usage.ru_stime.tv_usec) / 1e6
        #expect(seconds < 1.0, "the waiter used \(seconds) s of CPU in 2 s of waiting")
    }

    /// A marker path that leaves no room within PATH_MAX for the names used beside it is
    /// refused at once (it could be taken but never broken).
    @Test func aMarkerPathWithoutRoomForItsHelperNamesIsRefused() throws {
        let path = folder.path + String(repeating: "/abcdefgh", count: 448) + "/x.lock"
        let error = #expect(throws: FileLockError.self) { _ = try SoftFileLock(at: path) }
        #expect(error?.code == .nameTooLong)
        #expect(error?.message.contains("64") == true)
    }

    /// The environment of breakers on a filesystem without `renameat2(RENAME_EXCHANGE)` (NFS,
    /// CIFS and FUSE answer `EINVAL`): a preloaded shim refuses the exchange.
    func breakerEnvironment(exchange: Bool) throws -> [String: String] {
        guard !exchange else { return [:] }
        let shim = try NoFlockTests.shim(
            """
            #define _GNU_SOURCE
            #include <errno.h>
            #include <stdio.h>
            int renameat2(int from, const char *old, int to, const char *new, unsigned int flags) {
                (void)from; (void)old; (void)to; (void)new; (void)flags;
                errno = EINVAL;
                return -1;
            }
            """, in: folder, name: "noexchange")
        return ["LD_PRELOAD": shim]
    }

    static let exchangeCases: [Bool] = NoFlockTests.compiler != nil || TestEnvironment.isCI ? [true, false] : [true]

    /// sshfs reports a lost exclusive create as `EPERM` (SFTP version 3 has no "exists" status;
    /// measured on `TwoHostBed`'s sshfs bed): with a marker at the path that is a busy lock, not a
    /// permission problem. Simulated by a shim that turns `EEXIST` of such a create into `EPERM`;
    /// a real permission problem (nothing at the path) stays an error.
    @Test(.enabled(if: TestEnvironment.requires(NoFlockTests.compiler != nil), "needs Linux and a C compiler for the LD_PRELOAD shim"))
    func aLostExclusiveCreateReportedAsEPERMIsABusyLock() throws {
        let shim = try NoFlockTests.shim(
            """
            #define _GNU_SOURCE
            #include <dlfcn.h>
            #include <errno.h>
            #include <fcntl.h>
            #include <stdarg.h>
            #include <string.h>
            #include <sys/types.h>
            static int opening(const char *name, const char *path, int flags, va_list arguments) {
                mode_t mode = (mode_t)va_arg(arguments, int);
                int result = ((int (*)(const char *, int, ...))dlsym(RTLD_NEXT, name))(path, flags, mode);
                if (result < 0 && errno == EEXIST && (flags & O_EXCL) && strstr(path, "sftp")) errno = EPERM;
                if (result < 0 && strstr(path, "denied")) errno = EPERM;
                return result;
            }
            int open(const char *path, int flags, ...) {
                va_list arguments; va_start(arguments, flags);
                int result = opening("open", path, flags, arguments);
                va_end(arguments); return result;
            }
            int open64(const char *path, int flags, ...) {
                va_list arguments; va_start(arguments, flags);
                int result = opening("open64", path, flags, arguments);
                va_end(arguments); return result;
            }
            """, in: folder, name: "sftp-eperm")
        let path = folder.file("sftp.lock")
        let holder = try probe("hold", path)
        try holder.expectLine(startingWith: "acquired")
        let other = try ChildProcess(TestEnvironment.probe, ["try", path, "--kind", "soft"], environment: ["LD_PRELOAD": shim])
        #expect(try other.readLine() == "busy")
        holder.send("release")
        try holder.expectLine(startingWith: "released")
        let denied = try ChildProcess(
            TestEnvironment.probe, ["try", folder.file("denied/x.lock"), "--kind", "soft"], environment: ["LD_PRELOAD": shim])
        let line = try denied.readLine()
        #expect(line.hasPrefix("error permissionDenied"), "\(line)")
    }

    @Test(arguments: exchangeCases)
    func eightBreakersRacingOnAStaleMarkerHoldOneAtATime(exchange: Bool) throws {
        let path = folder.file("race.lock")
        let witness = folder.file("witness")
        writeMarker(path, "\(try deadPID())\n\(ProcessIdentity.hostName)\n")
        let environment = try breakerEnvironment(exchange: exchange)
        let racers = try (0..<8).map { _ in
            try ChildProcess(TestEnvironment.probe, ["witness", path, witness, "25", "--kind", "soft"], environment: environment)
        }
        for racer in racers { try racer.expectLine(startingWith: "ready") }
        for racer in racers { racer.send("go") }
        for racer in racers { #expect(try racer.readLine(timeout: 300) == "done") }
        #expect(access(path, F_OK) != 0)
        #expect(access(witness, F_OK) != 0)
        let leftovers = try ChildProcess("/bin/sh", ["-c", "ls -a '\(folder.path)' | grep -cE 'break|release' || true"])
        #expect(try leftovers.readLine() == "0", "no .break files left behind")
    }

    /// Which breakers can exchange names: all, none (NFS), or half of them (local users of an NFS
    /// server's folder beside its clients, a FUSE mount beside its backing folder).
    enum ExchangeMix: String, CaseIterable, Sendable {
        case everyBreaker, noBreaker, halfOfTheBreakers
    }

    static let exchangeMixes: [ExchangeMix] = NoFlockTests.compiler != nil || TestEnvironment.isCI
        ? ExchangeMix.allCases : [.everyBreaker]

    @Test(arguments: exchangeMixes)
    func eightBreakersOnAFreshStaleMarkerEveryRoundExactlyOneWins(mix: ExchangeMix) throws {
        let path = folder.file("rounds.lock")
        let withExchange = try breakerEnvironment(exchange: true)
        let withoutExchange = try breakerEnvironment(exchange: false)
        let racers = try (0..<8).map { index in
            let canExchange = mix == .everyBreaker || (mix == .halfOfTheBreakers && index % 2 == 0)
            return try ChildProcess(
                TestEnvironment.probe, ["race", path, "--kind", "soft"],
                environment: canExchange ? withExchange : withoutExchange)
        }
        let dead = try deadPID()
        for round in 0..<(mix == .halfOfTheBreakers ? 200 : 30) {
            writeMarker(path, "\(dead)\n\(ProcessIdentity.hostName)\n")
            for racer in racers { racer.send("go") }
            let answers = try racers.map { try $0.readLine() }
            let winners = answers.filter { $0.hasPrefix("won") }
            #expect(winners.count == 1, "round \(round): \(answers)")
            if let winner = winners.first {
                #expect(readFile(path)?.hasPrefix(winner.split(separator: " ")[1] + "\n") == true, "round \(round)")
            }
            let leftovers = try ChildProcess("/bin/sh", ["-c", "ls -a '\(folder.path)' | grep -cE 'break|release' || true"])
            #expect(try leftovers.readLine() == "0", "round \(round): .break files left behind")
            for racer in racers { racer.send("release") }
            for racer in racers { try racer.expectLine(startingWith: "released") }
            #expect(access(path, F_OK) != 0)
        }
        for racer in racers { racer.closeInput() }
    }

    @Test func asyncAcquireAndCancellation() async throws {
        let path = folder.file("async.lock")
        let holder = try SoftFileLock(at: path)
        try await holder.acquire(timeout: nil)
        let lock = try SoftFileLock(at: path)
        let waiter = Task { try await lock.acquire(timeout: .seconds(600)) }
        try await Task.sleep(for: .milliseconds(20))
        waiter.cancel()
        await #expect(throws: CancellationError.self) { try await waiter.value }
        holder.release()
        try await lock.withLock(timeout: .seconds(10)) { #expect(lock.isHeldByUs) }
    }

    /// A pause as long as an hour can only end early through the folder watch: the waiting task
    /// must be woken by the marker's removal, not by the next tick (and must hold no thread).
    @Test func aPausedTaskWakesWhenAMarkerGoesAndOnCancellation() async throws {
        let path = folder.file("watched.lock")
        let primitive = SoftPrimitive(
            lockPath: try LockPath(path), filePermissions: nil, lifetime: nil, pollInterval: .seconds(3600))
        let attempt = try primitive.begin(.exclusive)
        // The first pause sets up the watch and returns at once, so the next try sees a release
        // that happened meanwhile.
        try await primitive.pause(attempt, upTo: .seconds(3600))
        #expect(attempt.watch != nil, "inotify should be available here")

        let woke = ThreadResult()
        let sleeper = Task {
            try await primitive.pause(attempt, upTo: .seconds(3600))
            woke.set("woke")
        }
        writeFile(path, "1\nhost\n")
        #expect(unlink(path) == 0)
        // Generous bounds: the whole suite shares two pool threads, which blocking tests can hold
        // for seconds (a failure here is a hang made finite, not a timing).
        if !(await eventually("the paused task woke after the marker went", timeout: 120) { woke.peek() != nil }) {
            sleeper.cancel()
        }
        _ = try? await sleeper.value

        let cancelled = Task { try await primitive.pause(attempt, upTo: .seconds(3600)) }
        let watch = try #require(attempt.watch)
        _ = await eventually("the task is suspended in its pause", timeout: 120) { watch.hasWaitingTask }
        cancelled.cancel()
        // Should cancellation not end the pause, a folder change after 120 s does (and the
        // expectation below fails rather than the test hanging for an hour).
        let watchdogFired = ThreadResult()
        let watchdog = Task {
            try await Task.sleep(for: .seconds(120))
            watchdogFired.set("fired")
            writeFile(path, "1\nhost\n")
            unlink(path)
        }
        await #expect(throws: CancellationError.self) { try await cancelled.value }
        #expect(watchdogFired.peek() == nil, "the cancelled pause ended only when the watchdog changed the folder")
        watchdog.cancel()
    }

    /// Opens of one file, counted by an inotify watch of the test's own (`IN_OPEN`).
    final class OpenCounter {
        let descriptor: Int32
        init(_ path: String) throws {
            descriptor = inotify_init1(Int32(IN_CLOEXEC | IN_NONBLOCK))
            guard descriptor >= 0, inotify_add_watch(descriptor, path, UInt32(IN_OPEN)) >= 0 else {
                throw ChildProcessError(description: "inotify")
            }
        }
        deinit { close(descriptor) }

        /// The opens since the last call (each event of a watch on a file carries no name: 16 bytes).
        func opens() -> Int {
            var buffer = [UInt8](repeating: 0, count: 4096)
            var total = 0
            while true {
                let count = read(descriptor, &buffer, buffer.count)
                guard count > 0 else { return total }
                total += count / 16
            }
        }
    }

    /// A waiter's busy tries on a marker it has judged (live) do not open it again: a version
    /// (inode, size, times) is read once, and while waiting a new version is not read at once
    /// (almost always a live winner's marker, just made) but only once it has stood a while.
    @Test func aWaitersBusyTriesDoNotReadTheMarkerAgain() throws {
        let path = folder.file("judged.lock")
        let holder = try SoftFileLock(at: path)
        try holder.acquire()
        let primitive = SoftPrimitive(
            lockPath: try LockPath(path), filePermissions: nil, lifetime: nil, pollInterval: .seconds(3600))
        let counter = try OpenCounter(path)
        let attempt = try primitive.begin(.exclusive)
        guard case .busy = try primitive.tryOnce(attempt, .exclusive) else {
            Issue.record("acquired a held lock")
            return
        }
        #expect(counter.opens() == 1, "the first try reads the marker to judge it")
        primitive.prepareToWait(attempt)
        // Counted after each try: inotify merges identical events left unread.
        var opens = 0
        for _ in 0..<100 {
            guard case .busy = try primitive.tryOnce(attempt, .exclusive) else {
                Issue.record("acquired a held lock")
                return
            }
            opens += counter.opens()
        }
        #expect(opens == 0, "busy tries on the judged marker read it again")

        // A new version (the holder released and took the lock again: a new marker): read once
        // at most (after it has stood a while), not at every try.
        holder.release()
        try holder.acquire()
        let newCounter = try OpenCounter(path)
        opens = 0
        for _ in 0..<100 {
            guard case .busy = try primitive.tryOnce(attempt, .exclusive) else {
                Issue.record("acquired a held lock")
                return
            }
            opens += newCounter.opens()
        }
        #expect(opens <= 1, "a waiter read the new marker at \(opens) of 100 tries")
        holder.release()
        guard case .acquired(let hold) = try primitive.tryOnce(attempt, .exclusive) else {
            Issue.record("the freed lock was not taken")
            return
        }
        primitive.release(hold)
    }

    /// While waiting, a marker that appears with a dead holder is still broken (judged once it
    /// has stood a short while, not at first sight).
    @Test func aDeadHoldersMarkerAppearingWhileAWaiterWaitsIsBroken() throws {
        let path = folder.file("replaced.lock")
        let holder = try probe("hold", path)
        try holder.expectLine(startingWith: "acquired")
        let waiter = try probe("hold", path, "--timeout", "120")
        let lock = try SoftFileLock(at: path)
        // The waiter is waiting once it has made its folder watch.
        let inode = try FolderWatchTests.inode(folder.path)
        guard eventually("the waiter watches the folder", timeout: 60, { FolderWatchTests.process(waiter.pid, watches: inode) })
        else { return }
        let dead = try deadPID()
        let replacement = folder.file("replacement")
        writeMarker(replacement, "\(dead)\n\(ProcessIdentity.hostName)\n")
        #expect(rename(replacement, path) == 0)
        let line = try waiter.expectLine(startingWith: "acquired", timeout: 120)
        #expect(line.hasSuffix(" \(waiter.pid)"))
        #expect(lock.holder?.pid == waiter.pid)
        waiter.send("release")
        try waiter.expectLine(startingWith: "released")
        holder.send("release")
        _ = try? holder.readLine()
    }

    /// After a lost race (woken by the marker's removal, and someone else's marker already there)
    /// a waiter backs off without its watch, so the releases meanwhile wake no one here; a lock
    /// freed during the back-off is still taken at the next try, and once the marker stays the
    /// same between tries the waiter watches again.
    @Test func aWaiterThatLosesARaceBacksOffWithoutItsWatchAndStillTakesAFreedLock() throws {
        let path = folder.file("herd.lock")
        let holder = try SoftFileLock(at: path)
        try holder.acquire()
        let primitive = SoftPrimitive(
            lockPath: try LockPath(path), filePermissions: nil, lifetime: nil, pollInterval: .seconds(3600))
        // Pauses of at most a minute: a pause that should be a back-off (milliseconds) but waits
        // for the watch fails the expectations below instead of hanging.
        let attempt = try primitive.begin(.exclusive)
        guard case .busy = try primitive.tryOnce(attempt, .exclusive) else { return }
        primitive.prepareToWait(attempt)
        primitive.pause(attempt, upTo: .seconds(60))  // makes the watch; returns at once
        #expect(try FolderWatchTests.kernelWatches(on: folder.path) == 1)

        // A release and a quicker taker: the watch wakes us, and we lose.
        holder.release()
        try holder.acquire()
        primitive.pause(attempt, upTo: .seconds(60))
        guard case .busy = try primitive.tryOnce(attempt, .exclusive) else { return }
        #expect(try FolderWatchTests.kernelWatches(on: folder.path) == 0, "the waiter kept watching after a lost race")

        // The marker changes again while we back off, then stays: we watch again.
        holder.release()
        try holder.acquire()
        primitive.pause(attempt, upTo: .seconds(60))  // a back-off: ends by itself
        guard case .busy = try primitive.tryOnce(attempt, .exclusive) else { return }
        #expect(try FolderWatchTests.kernelWatches(on: folder.path) == 0, "still backing off: the marker changed")
        primitive.pause(attempt, upTo: .seconds(60))
        guard case .busy = try primitive.tryOnce(attempt, .exclusive) else { return }
        #expect(try FolderWatchTests.kernelWatches(on: folder.path) == 1, "the marker stayed: watching again")

        // Lose once more, then the lock is freed while we back off, unwatched: still taken.
        primitive.pause(attempt, upTo: .seconds(60))  // skipped: the watch is new
        holder.release()
        try holder.acquire()
        primitive.pause(attempt, upTo: .seconds(60))
        guard case .busy = try primitive.tryOnce(attempt, .exclusive) else { return }
        #expect(try FolderWatchTests.kernelWatches(on: folder.path) == 0)
        holder.release()
        primitive.pause(attempt, upTo: .seconds(60))
        guard case .acquired(let hold) = try primitive.tryOnce(attempt, .exclusive) else {
            Issue.record("a lock freed during the back-off was not taken")
            return
        }
        primitive.release(hold)
    }

    /// The helper threads (wait interrupts, helper pools) sleep on condition variables; a child forked
    /// without exec must not inherit them as phantom waiters (it hung on its second wait).
    @Test func aForkedChildCanWaitAgainAfterItsParentsHelpersRan() throws {
        let softPath = folder.file("fork-soft.lock")
        let kernelPath = folder.file("fork-kernel.lock")
        let softHolder = try probe("hold", softPath)
        try softHolder.expectLine(startingWith: "acquired")
        let kernelHolder = try ChildProcess(TestEnvironment.probe, ["hold", kernelPath])
        try kernelHolder.expectLine(startingWith: "acquired")
        func waitBriefly() {
            #expect(throws: FileLockError.self) { try SoftFileLock(at: softPath).acquire(timeout: .milliseconds(20)) }
            #expect(throws: FileLockError.self) { try FileLock(at: kernelPath).acquire(timeout: .milliseconds(20)) }
        }
        for _ in 0..<3 {
            waitBriefly()
            let child = forkChild()
            if child == 0 {
                for _ in 0..<3 {
                    _ = try? SoftFileLock(at: softPath).acquire(timeout: .milliseconds(20))
                    _ = try? FileLock(at: kernelPath).acquire(timeout: .milliseconds(20))
                }
                _exit(0)
            }
            #expect(waitForChild(child) == 0, "the forked child hung (killed after 30 s) or failed")
        }
        softHolder.send("release")
        kernelHolder.send("release")
    }

    @Test(.enabled(if: TestEnvironment.requires(TestEnvironment.isRoot), "needs root to switch to nobody"))
    func unwritableFolderIsReported() throws {
        let locked = folder.file("private")
        mkdir(locked, 0o755)
        let child = try folder.probeAsNobody(["hold", locked + "/x.lock", "--kind", "soft"])
        let line = try child.expectLine(startingWith: "error")
        #expect(line.hasPrefix("error permissionDenied"), "\(line)")
        #expect(line.contains(locked + "/x.lock"))
    }

    @Test(.enabled(if: TestEnvironment.requires(TestEnvironment.isRoot), "needs root for a private read-only mount"))
    func readOnlyFilesystemIsReported() throws {
        let (child, _) = try folder.probeOnReadOnlyMount(["hold", "LOCK", "--kind", "soft"])
        let line = try child.expectLine(startingWith: "error")
        #expect(line.hasPrefix("error readOnlyFilesystem"), "\(line)")
    }

    @Test func negativeLifetimeIsRejected() throws {
        let error = #expect(throws: FileLockError.self) {
            _ = try SoftFileLock(at: folder.file("x.lock"), lifetime: .seconds(-1))
        }
        #expect(error?.code == .invalidConfiguration)
    }
}

@Suite("Soft marker format", .ownThreads)
struct SoftMarkerFormatTests {
    @Test func startTokenDecimalMatchesPythonFilelock() throws {
        // From Python filelock 4.3.1: boot id 75689cef-1940-405e-84e6-f559a5e7753e, start time 534021.
        let token = StartToken(bootHigh: 0x7568_9cef_1940_405e, bootLow: 0x84e6_f559_a5e7_753e, startTime: 534021)
        let decimal = "2878851589489009613763695094764974116651370390575188026885"
        #expect(token.decimal == decimal)
        #expect(StartToken(decimal: Substring(decimal)) == token)
        #expect(StartToken(bootHigh: 0, bootLow: 0, startTime: 42).decimal == "42")
    }

    @Test func tokensWithAnUnknownBootCompareByStartTime() {
        let known = StartToken(bootHigh: 1, bootLow: 2, startTime: 7)
        #expect(known.isSameStart(as: StartToken(bootHigh: 0, bootLow: 0, startTime: 7)))
        #expect(!known.isSameStart(as: StartToken(bootHigh: 3, bootLow: 2, startTime: 7)))
        #expect(!known.isSameStart(as: StartToken(bootHigh: 0, bootLow: 0, startTime: 8)))
    }

    /// Python's filelock/2 markers, as its SoftFileLease writes them (fixture from filelock 4.3.1).
    @Test func versionTwoMarkersAreRead() {
        let lease = Array(
            ("filelock/2\npid=28055\nhost=vm\nmode=lease\ntoken=1d240bbc667280166df2a192ac3a3063\nduration=30.0\n"
                + "start=4515515446784249105709251557616435576515099639664750066478\n").utf8)
        let parsed = VersionTwoMarkerRecord(parsing: lease)
        #expect(parsed?.pid == 28055 && parsed?.host == "vm")
        #expect(parsed?.mode == .lease(duration: .seconds(30)))
        #expect(parsed?.startToken != nil)
        #expect(MarkerRecord(parsing: lease) == nil, "not a legacy record")
        func mode(_ text: String) -> VersionTwoMarkerRecord.Mode? { VersionTwoMarkerRecord(parsing: Array(text.utf8))?.mode }
        #expect(mode("filelock/2\npid=1\nhost=h\nmode=exclusive\n") == .exclusive)
        #expect(mode("filelock/2\npid=1\nhost=h\nmode=shared-v9\n") == .unknown)
        #expect(mode("filelock/2\npid=1\nhost=h\nmode=lease\ntoken=t\nduration=1e5\n") == nil, "e needs a sign")
        #expect(mode("filelock/2\npid=1\nhost=h\nmode=lease\ntoken=t\nduration=1e-05\n") != nil, "as repr writes it")
        #expect(mode("filelock/2\npid=1\nhost=h\nmode=lease\nduration=5.0\n") == nil, "a lease needs a token")
        #expect(mode("filelock/2\npid=1\nhost=h\nmode=lease\ntoken=t\nduration=0.0\n") == nil)
        #expect(mode("filelock/2\npid=0\nhost=h\nmode=exclusive\n") == nil)
        #expect(mode("filelock/2\npid=1\nhost=\nmode=exclusive\n") == nil)
        #expect(mode("filelock/2\npid=1\nhost=h\nmode=exclusive") == nil, "no final newline")
        #expect(mode("filelock/2\npid=1\nhost=h\nbroken line\nmode=exclusive\n") == nil)
    }

    @Test func recordRoundTrips() throws {
        let record = MarkerRecord(pid: 4242, host: "vm", startToken: StartToken(bootHigh: 0, bootLow: 1, startTime: 2))
        #expect(String(decoding: record.encoded, as: UTF8.self) == "4242\nvm\n18446744073709551618\n")
        #expect(MarkerRecord(parsing: record.encoded) == record)
        #expect(MarkerRecord(parsing: Array("4242\nvm\n".utf8))?.startToken == nil)
        #expect(MarkerRecord(parsing: Array("4242\nvm".utf8)) == nil, "no final newline: still being written")
        #expect(MarkerRecord(parsing: Array("0\nvm\n".utf8)) == nil)
    }

    @Test func ourTokenMatchesPythonsReadingOfProc() throws {
        // The same /proc fields Python reads, parsed independently here.
        let token = try #require(ProcessIdentity.ownStartToken)
        let stat = try #require(readFile("/proc/self/stat"))
        let afterName = stat[stat.index(after: stat.lastIndex(of: ")")!)...].split(separator: " ")
        #expect(token.startTime == UInt64(afterName[19]))
        let boot = try #require(readFile("/proc/sys/kernel/random/boot_id")).filter(\.isHexDigit)
        #expect(String(token.bootHigh, radix: 16).count <= 16)
        #expect(UInt64(boot.prefix(16), radix: 16) == token.bootHigh)
        #expect(UInt64(boot.suffix(16), radix: 16) == token.bootLow)
    }
}

/// Waits (bounded) for a forked child and returns its exit code; kills it after 30 s.
func waitForChild(_ child: pid_t) -> Int32 {
    var status: Int32 = 0
    let deadline = ChildProcess.now() + 30
    while waitpid(child, &status, WNOHANG) == 0 {
        if ChildProcess.now() > deadline {
            // A hung child: print where its threads are (with gdb, where installed) before the
            // kill, so that a rare hang after fork can be diagnosed from the test log.
            let stacks = "/tmp/filelock-hung-child-\(child).txt"
            _ = runShell("command -v gdb >/dev/null && gdb -p \(child) -batch -ex 'thread apply all bt' > '\(stacks)' 2>&1")
            if let text = readFile(stacks) {
                Issue.record("forked child \(child) hung for 30 s; its threads:\n\(text)")
                unlink(stacks)
            }
            kill(child, SIGKILL)
            waitpid(child, &status, 0)
            return -1
        }
        usleep(1000)
    }
    return (status & 0x7f) == 0 ? (status >> 8) & 0xff : 128 + (status & 0x7f)
}
