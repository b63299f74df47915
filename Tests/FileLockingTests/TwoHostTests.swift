#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif
import Subprocesses
import Testing

/// Two hosts on a network-like filesystem (`TwoHostBed`: two FUSE mounts of one folder, each
/// with its processes in a mount and UTS namespace of its own, named `host-a` and `host-b`):
/// kernel locks do not reach the other host, marker locks do, and what the filesystems offer.
@Suite("Two hosts on a network-like filesystem", .ownThreads, .serialized)
struct TwoHostTests {
    /// The beds that can be built here; in CI all of them (a missing tool then fails the test).
    static let filesystems: [TwoHostBed.Filesystem] = {
        let usable = TwoHostBed.Filesystem.allCases.filter { TestEnvironment.isCI || $0.isAvailable }
        for missing in TwoHostBed.Filesystem.allCases where !usable.contains(missing) {
            print("TwoHostTests: skipping the \(missing) bed: needs root, /dev/fuse, unshare, nsenter and \(missing)"
                + (missing == .sshfs ? ", sshd and ssh-keygen" : ""))
        }
        return usable
    }()

    static let canRun = TestEnvironment.requires(!filesystems.isEmpty)

    // MARK: Kernel locks

    /// The reason to use marker locks across hosts: a `FileLock` (flock) or `ReadWriteLock` (OFD
    /// record locks) held on host a does not exclude host b, which gets it too; through the same
    /// mount, on host a, it does exclude.
    @Test(.enabled(if: canRun, "needs root, FUSE and bindfs or sshfs"), arguments: filesystems)
    func kernelLocksOnOneHostDoNotExcludeTheOther(filesystem: TwoHostBed.Filesystem) throws {
        let bed = try TwoHostBed(filesystem)
        defer { bed.close() }
        for kind in ["kernel", "rw"] {
            let path = bed.path("\(kind).lock")
            let holder = try bed.a.probe(["hold", path, "--kind", kind])
            try holder.expectLine(startingWith: "acquired")
            let sameHost = try bed.a.probe(["try", path, "--kind", kind])
            #expect(try sameHost.readLine() == "busy", "\(kind): host a's second process is excluded")
            let otherHost = try bed.b.probe(["try", path, "--kind", kind])
            let line = try otherHost.readLine()
            #expect(line.hasPrefix("acquired"), "\(kind): host b gets the lock host a holds: \(line)")
            if line.hasPrefix("acquired") {
                otherHost.send("release")
                try otherHost.expectLine(startingWith: "released")
            }
            holder.send("release")
            try holder.expectLine(startingWith: "released")
        }
    }

    // MARK: What the filesystems offer

    /// A C program that reports what a folder's filesystem does, one `key value` line each.
    static let factsSource = """
        #define _GNU_SOURCE
        #include <errno.h>
        #include <fcntl.h>
        #include <stdio.h>
        #include <sys/stat.h>
        #include <sys/statfs.h>
        #include <sys/syscall.h>
        #include <unistd.h>
        static const char *said(int error) {
            static char text[32];
            switch (error) {
            case 0: return "ok";
            case EEXIST: return "EEXIST";
            case EINVAL: return "EINVAL";
            case ENOSYS: return "ENOSYS";
            case EXDEV: return "EXDEV";
            case EPERM: return "EPERM";
            case EOPNOTSUPP: return "EOPNOTSUPP";
            default: snprintf(text, sizeof text, "errno%d", error); return text;
            }
        }
        static int renaming(const char *from, const char *to, unsigned flags) {
            return syscall(SYS_renameat2, AT_FDCWD, from, AT_FDCWD, to, flags) == 0 ? 0 : errno;
        }
        int main(int argc, char **argv) {
            if (argc < 2 || chdir(argv[1]) != 0) return 2;
            char f[64], g[64], h[64], m[64];
            snprintf(f, sizeof f, "facts-%d-f", (int)getpid());
            snprintf(g, sizeof g, "facts-%d-g", (int)getpid());
            snprintf(h, sizeof h, "facts-%d-h", (int)getpid());
            snprintf(m, sizeof m, "facts-%d-m", (int)getpid());
            struct statfs filesystem;
            if (statfs(".", &filesystem) != 0) return 3;
            printf("type 0x%x\\n", (unsigned)filesystem.f_type);
            int fd = open(f, O_CREAT | O_EXCL | O_WRONLY | O_CLOEXEC, 0644);
            if (fd < 0) return 4;
            if (write(fd, "x", 1) != 1) return 5;
            close(fd);
            struct stat first, again, linked;
            lstat(f, &first);
            lstat(f, &again);
            printf("inode-stable %s\\n", first.st_ino == again.st_ino ? "yes" : "no");
            fd = open(f, O_CREAT | O_EXCL | O_WRONLY | O_CLOEXEC, 0644);
            printf("create-existing %s\\n", fd < 0 ? said(errno) : "ok");
            if (fd >= 0) close(fd);
            printf("link %s\\n", link(f, g) == 0 ? "ok" : said(errno));
            lstat(g, &linked);
            lstat(f, &again);
            printf("link-same-inode %s\\n", linked.st_ino == first.st_ino ? "yes" : "no");
            printf("link-count %lu %lu\\n", (unsigned long)again.st_nlink, (unsigned long)linked.st_nlink);
            fd = open(h, O_CREAT | O_WRONLY | O_CLOEXEC, 0644);
            if (fd >= 0) close(fd);
            printf("link-over-existing %s\\n", link(f, h) == 0 ? "ok" : said(errno));
            printf("exchange %s\\n", said(renaming(f, h, 2)));
            printf("rename-noreplace-existing %s\\n", said(renaming(f, h, 1)));
            int error = renaming(f, m, 1);
            printf("rename-noreplace-missing %s\\n", said(error));
            if (error == 0) rename(m, f);
            unlink(f);
            unlink(g);
            unlink(h);
            return 0;
        }
        """

    /// Builds the facts program into `folder`.
    static func factsProgram(in folder: TemporaryFolder) throws -> String {
        let source = folder.file("fsfacts.c")
        writeFile(source, factsSource)
        let program = folder.file("fsfacts")
        guard runShell("'\(NoFlockTests.compiler ?? "cc")' -o '\(program)' '\(source)'") == 0 else {
            throw ChildProcessError(description: "cannot build fsfacts")
        }
        return program
    }

    /// What each bed's mounts do, as NFS and CIFS do: `renameat2` with `RENAME_EXCHANGE` (and
    /// `RENAME_NOREPLACE`) fails with `EINVAL`; exclusive create and hard links never replace. What
    /// differs: bindfs keeps inode numbers (the server's, the same on both hosts) and link
    /// counts; sshfs gives a hard link a number of its own, link counts read 1, and each mount
    /// numbers names itself.
    @Test(
        .enabled(if: canRun && TestEnvironment.requires(NoFlockTests.compiler != nil), "needs root, FUSE, bindfs or sshfs, and cc"),
        arguments: filesystems)
    func theMountsRefuseRenameExchangeAsNFSDoes(filesystem: TwoHostBed.Filesystem) throws {
        let folder = try TemporaryFolder()
        let program = try Self.factsProgram(in: folder)
        let bed = try TwoHostBed(filesystem)
        defer { bed.close() }
        let (code, output) = try bed.a.shell("'\(program)' '\(bed.mountPoint)'")
        print("TwoHostTests facts (\(filesystem)):\n\(output)")
        #expect(code == 0, "\(output)")
        var facts: [String: String] = [:]
        for line in output.split(separator: "\n") {
            let parts = line.split(separator: " ", maxSplits: 1)
            if parts.count == 2 { facts[String(parts[0])] = String(parts[1]) }
        }
        #expect(facts["type"] == "0x65735546", "FUSE_SUPER_MAGIC")
        #expect(facts["exchange"] == "EINVAL")
        #expect(facts["rename-noreplace-missing"] == "EINVAL")
        #expect(facts["create-existing"] == "EEXIST")
        #expect(facts["link"] == "ok")
        #expect(facts["link-over-existing"] == "EEXIST")
        #expect(facts["inode-stable"] == "yes")
        switch filesystem {
        case .bindfs:
            #expect(facts["link-same-inode"] == "yes")
            #expect(facts["link-count"]?.hasSuffix(" 2") == true, "the new name counts 2 links")
        case .sshfs:
            #expect(facts["link-same-inode"] == "no")
            #expect(facts["link-count"] == "1 1")
        }

        // One file, as each host and the server number it.
        let name = "numbered"
        writeFile(bed.serverPath(name), "x")
        let onA = try bed.a.shell("stat -c %i '\(bed.path(name))'").output
        let onB = try bed.b.shell("stat -c %i '\(bed.path(name))'").output
        var server = stat()
        stat(bed.serverPath(name), &server)
        print("TwoHostTests inode numbers (\(filesystem)): server \(server.st_ino), host a \(onA), host b \(onB)")
        if filesystem == .bindfs {
            #expect(onA == "\(server.st_ino)" && onB == onA, "bindfs shows the server's inode number on both hosts")
        }
    }

    // MARK: Marker locks

    /// Exclusive creation is atomic across the hosts: racers on both hosts try a `SoftFileLock` at
    /// once, round after round, and exactly one wins each round.
    @Test(.enabled(if: canRun, "needs root, FUSE and bindfs or sshfs"), arguments: filesystems)
    func exclusiveCreationHasOneWinnerAcrossHosts(filesystem: TwoHostBed.Filesystem) throws {
        let bed = try TwoHostBed(filesystem)
        defer { bed.close() }
        let path = bed.path("race.lock")
        let racers = try (0..<4).map { index in
            try (index % 2 == 0 ? bed.a : bed.b).probe(["race", path, "--kind", "soft"])
        }
        for round in 0..<50 {
            for racer in racers { racer.send("go") }
            let answers = try racers.map { try $0.readLine() }
            guard answers.allSatisfy({ $0.hasPrefix("won") || $0 == "lost" }) else {
                // (A racer that failed has exited: writing to it would end the test process.)
                Issue.record("round \(round): \(answers)")
                return
            }
            let winners = answers.filter { $0.hasPrefix("won") }.count
            #expect(winners == 1, "round \(round): \(answers)")
            for racer in racers { racer.send("release") }
            for racer in racers { try racer.expectLine(startingWith: "released") }
        }
        for racer in racers { racer.closeInput() }
    }

    /// A `SoftFileLock` keeps an exact counter with workers on both hosts, each opening the counter
    /// anew under the lock (close-to-open, as network filesystems need).
    @Test(.enabled(if: canRun, "needs root, FUSE and bindfs or sshfs"), arguments: filesystems)
    func softFileLockKeepsAnExactCounterAcrossHosts(filesystem: TwoHostBed.Filesystem) throws {
        let bed = try TwoHostBed(filesystem)
        defer { bed.close() }
        let (workersPerHost, rounds) = (2, 100)
        writeFile(bed.serverPath("counter"), "0")
        let workers = try (0..<2 * workersPerHost).map { index in
            try (index % 2 == 0 ? bed.a : bed.b).probe(
                ["increment", bed.path("counter.lock"), bed.path("counter"), "\(rounds)", "--kind", "soft", "--reopen"])
        }
        for worker in workers { try worker.expectLine(startingWith: "ready") }
        let started = ChildProcess.now()
        for worker in workers { worker.send("go") }
        for worker in workers { try worker.expectLine(startingWith: "done", timeout: 300) }
        let elapsed = ChildProcess.now() - started
        let total = 2 * workersPerHost * rounds
        let counted = Int((readFile(bed.serverPath("counter")) ?? "").drop { $0 == "0" })
        print("TwoHostTests counter (\(filesystem)): \(counted.map(String.init) ?? "?") of \(total) in \(Int(elapsed * 1000)) ms")
        #expect(counted == total)
        #expect(access(bed.serverPath("counter.lock"), F_OK) != 0, "the last release removed the marker")
    }

    /// A `SoftFileLock` holder on host a is killed: its marker names host-a, so host b never breaks
    /// it by liveness (its pid means nothing on host b) and times out saying so, while host a,
    /// where the process is provably gone, breaks it.
    @Test(.enabled(if: canRun, "needs root, FUSE and bindfs or sshfs"), arguments: filesystems)
    func aKilledSoftHolderIsBrokenOnlyOnItsOwnHost(filesystem: TwoHostBed.Filesystem) throws {
        let bed = try TwoHostBed(filesystem)
        defer { bed.close() }
        let path = bed.path("killed.lock")
        let holder = try bed.a.probe(["hold", path, "--kind", "soft"])
        let pid = try holder.expectLine(startingWith: "acquired").split(separator: " ")[1]
        holder.signal(SIGKILL)
        #expect(try holder.waitForExit() == 128 + SIGKILL)
        let marker = (readFile(bed.serverPath("killed.lock")) ?? "").split(separator: "\n")
        #expect(marker.count >= 2 && marker[0] == pid && marker[1] == "host-a", "\(marker)")

        let otherHost = try bed.b.probe(["hold", path, "--kind", "soft", "--timeout", "2"])
        let refused = try otherHost.readLine(timeout: 60)
        #expect(refused.hasPrefix("error timedOut"), "\(refused)")
        #expect(refused.contains("another host"), "the timeout says why: \(refused)")
        #expect(access(bed.serverPath("killed.lock"), F_OK) == 0, "host b left the marker alone")

        let sameHost = try bed.a.probe(["hold", path, "--kind", "soft", "--timeout", "30"])
        let line = try sameHost.readLine(timeout: 60)
        #expect(line.hasPrefix("acquired"), "host a proves its process gone and breaks the marker: \(line)")
        if line.hasPrefix("acquired") {
            sameHost.send("release")
            try sameHost.expectLine(startingWith: "released")
        }
    }

    /// A Python `SoftFileLease` (a `filelock/2` marker its holder renews by touching it every third
    /// of its duration) on host a is respected by a `SoftFileLock` on host b while it is renewed,
    /// seen through each host's mount, and broken by host b once it stood unrenewed for its
    /// duration after its holder was killed: a lease needs no liveness check across hosts.
    @Test(
        .enabled(if: canRun && TestEnvironment.requires(TestEnvironment.python != nil), "needs root, FUSE, bindfs or sshfs, and Python filelock"),
        arguments: filesystems)
    func aPythonLeaseOnOneHostIsRespectedThenExpiresOnTheOther(filesystem: TwoHostBed.Filesystem) throws {
        let bed = try TwoHostBed(filesystem)
        defer { bed.close() }
        let path = bed.path("lease.lock")
        let holder = try bed.a.python(["lease-hold", path, "2"])
        try holder.expectLine(startingWith: "acquired")
        let whileRenewed = try bed.b.probe(["hold", path, "--kind", "soft", "--timeout", "6"])
        let refused = try whileRenewed.readLine(timeout: 60)
        #expect(refused.hasPrefix("error timedOut") && refused.contains("SoftFileLease"), "three lease durations: \(refused)")
        holder.signal(SIGKILL)
        #expect(try holder.waitForExit() == 128 + SIGKILL)
        let killed = ChildProcess.now()
        let afterExpiry = try bed.b.probe(["hold", path, "--kind", "soft", "--timeout", "30"])
        let line = try afterExpiry.readLine(timeout: 60)
        let waited = ChildProcess.now() - killed
        print("TwoHostTests lease (\(filesystem)): host b got the lease's lock \(Int(waited * 1000)) ms after its holder was killed")
        #expect(line.hasPrefix("acquired"), "\(line)")
        #expect(waited >= 1.9, "not before the lease's 2 s went unrenewed")
        if line.hasPrefix("acquired") {
            afterExpiry.send("release")
            try afterExpiry.expectLine(startingWith: "released")
        }
    }

    /// Why some kinds need a filesystem that keeps inode numbers: Python's `SoftReadWriteLock`
    /// (filelock 4.3) commits a generation with a no-replace hard link and checks the commit by
    /// inode, which works on bindfs and never succeeds on sshfs (a link gets a number of its own
    /// there): even an uncontended write lock times out (measured: 10 s, 35 generations written).
    @Test(
        .enabled(if: canRun && TestEnvironment.requires(TestEnvironment.python != nil), "needs root, FUSE, bindfs or sshfs, and Python filelock"),
        arguments: filesystems)
    func pythonSoftReadWriteLockNeedsStableInodeNumbers(filesystem: TwoHostBed.Filesystem) throws {
        let bed = try TwoHostBed(filesystem)
        defer { bed.close() }
        let writer = try bed.a.python(["soft-rw-write", bed.path("rw.lock"), "5"])
        let line = try writer.readLine(timeout: 60)
        print("TwoHostTests Python SoftReadWriteLock write lock, uncontended (\(filesystem)): \(line)")
        switch filesystem {
        case .bindfs:
            #expect(line.hasPrefix("acquired"), "\(line)")
            if line.hasPrefix("acquired") {
                writer.send("release")
                try writer.expectLine(startingWith: "released")
            }
        case .sshfs:
            #expect(line == "timeout", "the README says this protocol cannot work on sshfs: \(line)")
        }
    }

    // MARK: The report

    /// A kernel lock on the FUSE mount reports the network filesystem once (library and command),
    /// one on a local folder does not.
    @Test(.enabled(if: canRun, "needs root, FUSE and bindfs or sshfs"), arguments: filesystems)
    func aKernelLockOnTheMountIsReportedAndALocalOneIsNot(filesystem: TwoHostBed.Filesystem) throws {
        let bed = try TwoHostBed(filesystem)
        defer { bed.close() }
        let mountType = filesystem == .sshfs ? "fuse.sshfs" : "fuse"
        for kind in ["kernel", "rw"] {
            let onMount = try bed.a.probe(["hold", bed.path("\(kind).lock"), "--kind", kind, "--warnings"])
            let warning = try onMount.readLine()
            #expect(warning.hasPrefix("warning kernelLockOnNetworkFilesystem"), "\(warning)")
            #expect(warning.contains("FUSE filesystem (\(mountType))") && warning.contains("other hosts"), "\(warning)")
            #expect(warning.contains("SoftFileLock"), "\(warning)")
            try onMount.expectLine(startingWith: "acquired")
            #expect(try onMount.readLine() == "filesystem \(mountType)")
            onMount.send("release")
            try onMount.expectLine(startingWith: "released")
        }
        let folder = try TemporaryFolder()
        let local = try bed.a.probe(["hold", folder.file("local.lock"), "--warnings"])
        #expect(try local.readLine().hasPrefix("acquired"), "no warning before the acquisition")
        #expect(try local.readLine() == "filesystem local")
        local.send("release")
        try local.expectLine(startingWith: "released")
        // A soft lock says nothing: it is the kind to use there.
        let soft = try bed.a.probe(["hold", bed.path("soft.lock"), "--kind", "soft", "--warnings"])
        #expect(try soft.readLine().hasPrefix("acquired"))
        soft.send("release")
        try soft.expectLine(startingWith: "released")

        // The command: once on stderr for a kernel lock, and in status --json.
        let tool = "'\(TestEnvironment.tool)'"
        let run = try bed.a.shell("\(tool) run '\(bed.path("run.lock"))' -- echo ran")
        #expect(run.code == 0, "\(run.output)")
        let warnings = run.output.split(separator: "\n").filter { $0.contains("is on a FUSE filesystem") }
        #expect(warnings.count == 1, "\(run.output)")
        #expect(run.output.contains("--kind soft") && run.output.contains("ran"), "\(run.output)")
        // (Another path: the kernel lock left its empty file, which a soft lock takes for a held marker.)
        let softRun = try bed.a.shell("\(tool) run --kind soft '\(bed.path("soft-run.lock"))' -- echo ran")
        #expect(softRun.code == 0 && !softRun.output.contains("FUSE filesystem"), "\(softRun.output)")
        let status = try bed.a.shell("\(tool) status --json --kind kernel '\(bed.path("run.lock"))'")
        #expect(status.output.contains("\"networkFilesystem\":\"\(mountType)\""), "\(status.output)")
        #expect(status.output.contains("is on a FUSE filesystem"), "a kernel lock asked for is warned about: \(status.output)")
        let localStatus = try bed.a.shell("\(tool) status --json '\(folder.file("local.lock"))'")
        #expect(localStatus.output.contains("\"networkFilesystem\":null"), "\(localStatus.output)")
        #expect(!localStatus.output.contains("FUSE"), "\(localStatus.output)")
    }
}
