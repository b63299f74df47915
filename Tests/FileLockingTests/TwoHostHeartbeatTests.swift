#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif
import Subprocesses
import Testing

/// The heartbeat kinds across two hosts on a network-like filesystem (`TwoHostBed`): exact
/// counters with workers on both hosts, a killed holder on one host evicted (or its lease taken
/// over) from the other after the threshold while a live one never is, generations that only
/// grow whichever host commits, a planted link refused, and Python on one host against Swift on
/// the other.
extension TwoHostTests {
    /// The kinds and beds: `SoftFileLease` on both; `SoftReadWriteLock` on both too (a link that
    /// succeeded is trusted, so sshfs's per-name inode numbers do not matter to ours; Python's
    /// needs them, see `pythonSoftReadWriteLockNeedsStableInodeNumbers`).
    static let heartbeatCases: [(TwoHostBed.Filesystem, String)] = filesystems.flatMap { [($0, "soft-rw"), ($0, "lease")] }

    static func options(_ kind: String, quick: Bool = false) -> [String] {
        switch (kind, quick) {
        case ("lease", false): ["--kind", "lease", "--lease", "10"]
        case ("lease", true): ["--kind", "lease", "--lease", "1"]
        case (_, false): ["--kind", "soft-rw"]
        default: ["--kind", "soft-rw", "--heartbeat", "0.2", "--stale", "0.8"]
        }
    }

    @Test(.enabled(if: canRun, "needs root, FUSE and bindfs or sshfs"), arguments: heartbeatCases)
    func heartbeatKindsKeepAnExactCounterAcrossHosts(filesystem: TwoHostBed.Filesystem, kind: String) throws {
        let bed = try TwoHostBed(filesystem)
        defer { bed.close() }
        let (workersPerHost, rounds) = (2, 40)
        writeFile(bed.serverPath("counter"), "0")
        let workers = try (0..<2 * workersPerHost).map { index in
            try (index % 2 == 0 ? bed.a : bed.b).probe(
                ["increment", bed.path("counter.lock"), bed.path("counter"), "\(rounds)", "--reopen"] + Self.options(kind))
        }
        for worker in workers { try worker.expectLine(startingWith: "ready") }
        let started = ChildProcess.now()
        for worker in workers { worker.send("go") }
        for worker in workers { try worker.expectLine(startingWith: "done", timeout: 300) }
        let elapsed = ChildProcess.now() - started
        let total = 2 * workersPerHost * rounds
        let counted = Int((readFile(bed.serverPath("counter")) ?? "").drop { $0 == "0" })
        print("TwoHostTests \(kind) counter (\(filesystem)): \(counted.map(String.init) ?? "?") of \(total) in \(Int(elapsed * 1000)) ms")
        #expect(counted == total)
    }

    /// A live holder on host a, heartbeating, is never evicted (or taken over) by host b; killed,
    /// it is, once its record (or marker) stood unchanged for the threshold on host b's clock:
    /// host b cannot prove a host-a process dead, and need not.
    @Test(.enabled(if: canRun, "needs root, FUSE and bindfs or sshfs"), arguments: heartbeatCases)
    func aKilledHolderOnOneHostIsEvictedFromTheOther(filesystem: TwoHostBed.Filesystem, kind: String) throws {
        let bed = try TwoHostBed(filesystem)
        defer { bed.close() }
        let path = bed.path("killed.lock")
        let holder = try bed.a.probe(["hold", path] + Self.options(kind, quick: true))
        try holder.expectLine(startingWith: "acquired")
        let whileAlive = try bed.b.probe(["hold", path, "--timeout", "3"] + Self.options(kind, quick: true))
        let refused = try whileAlive.readLine(timeout: 60)
        #expect(refused.hasPrefix("error timedOut"), "a live holder is never evicted: \(refused)")
        holder.signal(SIGKILL)
        #expect(try holder.waitForExit() == 128 + SIGKILL)
        let killed = ChildProcess.now()
        let taker = try bed.b.probe(["hold", path, "--timeout", "30"] + Self.options(kind, quick: true))
        let line = try taker.readLine(timeout: 60)
        let waited = ChildProcess.now() - killed
        print("TwoHostTests \(kind) (\(filesystem)): host b got it \(Int(waited * 1000)) ms after host a's holder was killed")
        #expect(line.hasPrefix("acquired"), "\(line)")
        // Judged from the last change host b saw, up to a heartbeat before the kill.
        #expect(waited >= (kind == "lease" ? 0.6 : 0.5), "not before the threshold")
        if line.hasPrefix("acquired") {
            taker.send("release")
            try taker.expectLine(startingWith: "released")
        }
    }

    /// Every grant's generation is larger than the one before, whichever host committed it.
    @Test(.enabled(if: canRun, "needs root, FUSE and bindfs or sshfs"), arguments: filesystems)
    func generationsOnlyGrowWhicheverHostCommits(filesystem: TwoHostBed.Filesystem) throws {
        let bed = try TwoHostBed(filesystem)
        defer { bed.close() }
        let path = bed.path("fence.lock")
        var last = 0
        for round in 0..<10 {
            let host = round % 2 == 0 ? bed.a : bed.b
            let holder = try host.probe(["hold", path, "--kind", "soft-rw", "--generation"] + (round % 3 == 0 ? ["--shared"] : []))
            try holder.expectLine(startingWith: "acquired")
            let generation = Int(try holder.expectLine(startingWith: "generation").split(separator: " ")[1]) ?? -1
            #expect(generation > last, "round \(round) on \(host.name): \(generation) after \(last)")
            last = generation
            holder.send("release")
            try holder.expectLine(startingWith: "released")
        }
    }

    /// A symbolic link planted at the log's folder by one host is refused by the other, and its
    /// target is left untouched.
    @Test(.enabled(if: canRun, "needs root, FUSE and bindfs or sshfs"), arguments: filesystems)
    func aLinkPlantedByOneHostIsRefusedByTheOther(filesystem: TwoHostBed.Filesystem) throws {
        let bed = try TwoHostBed(filesystem)
        defer { bed.close() }
        mkdir(bed.serverPath("elsewhere"), 0o755)
        let planted = try bed.b.shell("ln -s elsewhere '\(bed.path("planted.lock")).rw'")
        #expect(planted.code == 0, "\(planted.output)")
        let holder = try bed.a.probe(["hold", bed.path("planted.lock"), "--kind", "soft-rw", "--timeout", "2"])
        let line = try holder.readLine(timeout: 60)
        #expect(line.hasPrefix("error isSymbolicLink"), "\(line)")
        #expect((try? FileManagerLite.entries(bed.serverPath("elsewhere")))?.isEmpty == true)
    }

    /// Python on host a and Swift on host b share both kinds: each waits for the other.
    @Test(
        .enabled(if: canRun && TestEnvironment.requires(TestEnvironment.python != nil), "needs root, FUSE, bindfs or sshfs, and Python filelock"),
        arguments: filesystems)
    func pythonOnOneHostAndSwiftOnTheOtherShareTheHeartbeatKinds(filesystem: TwoHostBed.Filesystem) throws {
        let bed = try TwoHostBed(filesystem)
        defer { bed.close() }
        // The lease, both ways.
        let lease = bed.path("lease.lock")
        let pythonLease = try bed.a.python(["lease-acquire", lease, "10", "5"])
        try pythonLease.expectLine(startingWith: "acquired")
        let swiftWaits = try bed.b.probe(["hold", lease, "--kind", "lease", "--lease", "10", "--timeout", "1"])
        #expect(try swiftWaits.readLine(timeout: 60).hasPrefix("error timedOut"))
        pythonLease.send("release")
        try pythonLease.expectLine(startingWith: "released")
        let swiftLease = try bed.b.probe(["hold", lease, "--kind", "lease", "--lease", "10", "--timeout", "5"])
        try swiftLease.expectLine(startingWith: "acquired")
        let pythonWaits = try bed.a.python(["lease-acquire", lease, "10", "1"])
        #expect(try pythonWaits.readLine(timeout: 60) == "timeout")
        swiftLease.send("release")
        try swiftLease.expectLine(startingWith: "released")
        // Python's SoftReadWriteLock needs the inode numbers sshfs does not keep.
        guard filesystem == .bindfs else { return }
        let log = bed.path("rw.lock")
        let pythonWriter = try bed.a.python(["srw-hold", log, "write", "5"])
        try pythonWriter.expectLine(startingWith: "acquired")
        let swiftReader = try bed.b.probe(["hold", log, "--kind", "soft-rw", "--shared", "--timeout", "1"])
        #expect(try swiftReader.readLine(timeout: 60).hasPrefix("error timedOut"))
        pythonWriter.send("release")
        try pythonWriter.expectLine(startingWith: "released")
        let swiftHolder = try bed.b.probe(["hold", log, "--kind", "soft-rw", "--shared", "--timeout", "5"])
        try swiftHolder.expectLine(startingWith: "acquired")
        let pythonReader = try bed.a.python(["srw-hold", log, "read", "5"])
        try pythonReader.expectLine(startingWith: "acquired")
        let pythonLateWriter = try bed.a.python(["srw-hold", log, "write", "1"])
        #expect(try pythonLateWriter.readLine(timeout: 60) == "timeout")
        pythonReader.send("release")
        try pythonReader.expectLine(startingWith: "released")
        swiftHolder.send("release")
        try swiftHolder.expectLine(startingWith: "released")
    }
}
