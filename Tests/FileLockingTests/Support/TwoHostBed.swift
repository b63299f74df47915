#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif
import Subprocesses
import Testing

/// Two "hosts" that share one folder through a network-like filesystem, on one machine (Linux,
/// root): the kernels here have no NFS client, but FUSE works.
///
/// Each host is a mount namespace and a UTS namespace of its own (`unshare -m -u`), with its own
/// host name (`host-a`, `host-b`) and its own FUSE mount of the shared folder at the same path
/// (`mountPoint`, as an NFS export is mounted at one path on every client); outside the
/// namespaces that path is an empty folder. A long-lived shell per host (the namespace's first
/// process) makes the mount and keeps the namespace; every process "on the host" enters both
/// namespaces with `nsenter`, so the processes of one host share one mount, as on a real client.
///
/// - `.bindfs`: bindfs of the folder. Keeps inode numbers and link counts, and makes hard links
///   that never replace: enough for every protocol of this library.
/// - `.sshfs`: sshfs over SFTP to a throw-away `sshd` on a free loopback port (its own host key and
///   authorised key in a temporary folder; the system's ssh setup is not touched), mounted with
///   `-o noforget`: a real network protocol, but SFTP carries no inode numbers (each mount
///   numbers the names it has seen; a hard link gets a number of its own and every link count
///   reads 1), so a protocol that checks its commits by inode cannot work there.
///
/// `close()` (also run by `deinit`) ends what the bed started: the processes started on the
/// hosts, the mounts (each host's shell unmounts when its input closes, so that an ending test
/// process also ends them), the hosts' shells and the FUSE programs, and `sshd`.
final class TwoHostBed: @unchecked Sendable {
    enum Filesystem: String, CaseIterable, Sendable, CustomTestStringConvertible {
        case bindfs
        case sshfs

        var testDescription: String { rawValue }

        /// The program the bed needs, where it is installed.
        var program: String? {
            let names =
                switch self {
                case .bindfs: ["/usr/bin/bindfs", "/bin/bindfs"]
                case .sshfs: ["/usr/bin/sshfs", "/bin/sshfs"]
                }
            return names.first { access($0, X_OK) == 0 }
        }

        /// Whether the bed can be built here: root (namespaces and mounts), `unshare`, `nsenter`,
        /// `setsid`, `mountpoint`, FUSE, and for sshfs an `sshd` and `ssh-keygen`.
        var isAvailable: Bool {
            guard TestEnvironment.isRoot, program != nil, access("/dev/fuse", F_OK) == 0 else { return false }
            let tools: [String] = ["/usr/bin/unshare", "/usr/bin/nsenter", "/usr/bin/setsid", "/usr/bin/mountpoint"]
            guard tools.allSatisfy({ access($0, X_OK) == 0 }) else { return false }
            return self == .bindfs || (access(TwoHostBed.sshd, X_OK) == 0 && access("/usr/bin/ssh-keygen", X_OK) == 0)
        }
    }

    /// One host: a mount and UTS namespace with its own name and mount of the shared folder.
    final class Host: @unchecked Sendable {
        let name: String
        /// The namespaces' first process: a shell that mounted, and unmounts when its input closes.
        fileprivate let keeper: ChildProcess
        fileprivate weak var bed: TwoHostBed?

        fileprivate init(name: String, keeper: ChildProcess, bed: TwoHostBed) {
            self.name = name
            self.keeper = keeper
            self.bed = bed
        }

        /// `nsenter` into this host's namespaces, then `arguments`.
        fileprivate var entering: [String] {
            ["--mount=/proc/\(keeper.pid)/ns/mnt", "--uts=/proc/\(keeper.pid)/ns/uts", "--"]
        }

        /// Starts `executable` on this host, with pipes on stdin and stdout as any `ChildProcess`
        /// (its working folder is `/`), in a process group of its own (`setsid`, which runs it in
        /// place: the child's pid is the executable's). The bed ends the group at `close()` if it
        /// still runs, so that nothing it started outlives the test.
        func start(_ executable: String, _ arguments: [String], environment: [String: String] = [:]) throws -> ChildProcess {
            let child = try ChildProcess(
                "/usr/bin/nsenter", entering + ["/usr/bin/setsid", executable] + arguments, environment: environment)
            bed?.started.append(child)
            return child
        }

        /// Starts the Python side of the interop tests (`python_probe.py ARGUMENTS`) on this host,
        /// with `TestEnvironment.python` made absolute: the hosts' processes start in `/`.
        func python(_ arguments: [String]) throws -> ChildProcess {
            guard let python = TestEnvironment.python else {
                throw ChildProcessError(description: "no Python with filelock (set FILELOCK_TEST_PYTHON)")
            }
            let interpreter = python.hasPrefix("/") ? python : TestEnvironment.currentDirectory + "/" + python
            return try start(interpreter, [InteropTests.pythonScript] + arguments)
        }

        /// Starts `lock-probe ARGUMENTS` on this host.
        func probe(_ arguments: [String]) throws -> ChildProcess {
            try start(TestEnvironment.probe, arguments)
        }

        /// Runs a shell command line on this host; returns its exit code and its output (stdout and
        /// stderr).
        func shell(_ command: String, timeout: Double = 60) throws -> (code: Int32, output: String) {
            let child = try start("/bin/sh", ["-c", "(" + command + ") 2>&1"])
            let output = try child.readRemainingOutput(timeout: timeout)
            return (try child.waitForExit(timeout: timeout), output)
        }
    }

    static let sshd = "/usr/sbin/sshd"

    let filesystem: Filesystem
    /// The folder the hosts share, as the file server has it (outside the namespaces).
    let shared: String
    /// Where each host mounts `shared`: the same path on both.
    let mountPoint: String
    private(set) var hosts: [Host] = []
    private let folder: TemporaryFolder
    private var sshdProcess: ChildProcess?
    /// Everything started on the hosts, ended at `close()`.
    fileprivate var started: [ChildProcess] = []
    private var isClosed = false

    /// Builds the bed: the shared folder, for sshfs an `sshd`, and the hosts, each with its mount.
    ///
    /// - Throws: `ChildProcessError` naming what could not be started or mounted (what was
    ///   started is ended again).
    init(_ filesystem: Filesystem, hostNames: [String] = ["host-a", "host-b"]) throws {
        self.filesystem = filesystem
        folder = try TemporaryFolder()
        shared = folder.file("shared")
        mountPoint = folder.file("mnt")
        mkdir(shared, 0o777)
        mkdir(mountPoint, 0o755)
        do {
            let mount = try mountCommand()
            for name in hostNames { hosts.append(try startHost(name, mount: mount)) }
        } catch {
            close()
            throw error
        }
    }

    deinit { close() }

    func host(_ name: String) -> Host {
        hosts.first { $0.name == name }!
    }

    /// The first two hosts.
    var a: Host { hosts[0] }
    var b: Host { hosts[1] }

    /// `name` in the shared folder as the hosts see it (under `mountPoint`).
    func path(_ name: String) -> String { mountPoint + "/" + name }

    /// `name` in the shared folder as the server has it.
    func serverPath(_ name: String) -> String { shared + "/" + name }

    // MARK: Hosts

    /// The shell of a host: names the host, mounts in the foreground (`-f`, so its FUSE program is
    /// a child it can wait for), says "ready", and when its input closes unmounts (lazily: a
    /// process may still have a file open there) and waits for the FUSE program to end.
    private static let keeperScript = """
        echo "$1" > /proc/sys/kernel/hostname || exit 1
        shift
        mount_point="$1"
        shift
        "$@" &
        daemon=$!
        tries=0
        until mountpoint -q "$mount_point"; do
            if ! kill -0 "$daemon" 2>/dev/null || [ "$tries" -gt 2000 ]; then echo "mount failed"; exit 1; fi
            tries=$((tries + 1))
            sleep 0.005
        done
        echo ready
        cat >/dev/null
        umount -l "$mount_point" 2>/dev/null
        wait "$daemon"
        """

    private func startHost(_ name: String, mount: [String]) throws -> Host {
        let keeper = try ChildProcess(
            "/usr/bin/unshare",
            ["-m", "-u", "--propagation", "private", "/bin/sh", "-c", Self.keeperScript, "sh", name, mountPoint] + mount)
        let host = Host(name: name, keeper: keeper, bed: self)
        let line = try keeper.readLine(timeout: 30)
        guard line == "ready" else {
            throw ChildProcessError(description: "host \(name): \(filesystem) mount of \(shared) at \(mountPoint): \(line)")
        }
        return host
    }

    /// The foreground mount command of a host (after which the mount point is given).
    private func mountCommand() throws -> [String] {
        switch filesystem {
        case .bindfs:
            return [filesystem.program ?? "bindfs", "-f", "--no-allow-other", shared, mountPoint]
        case .sshfs:
            let (port, key) = try startSSHServer()
            return [
                filesystem.program ?? "sshfs", "-f", "root@127.0.0.1:" + shared, mountPoint, "-o",
                "noforget,port=\(port),IdentityFile=\(key),StrictHostKeyChecking=no,UserKnownHostsFile=/dev/null,"
                    + "BatchMode=yes,LogLevel=ERROR",
            ]
        }
    }

    // MARK: sshd

    /// Starts `sshd` on a free loopback port with a host key and an authorised client key made in
    /// the bed's folder; returns the port and the client's private key.
    private func startSSHServer() throws -> (port: UInt16, key: String) {
        let keys = folder.file("ssh")
        mkdir(keys, 0o700)
        let hostKey = keys + "/host_key"
        let clientKey = keys + "/client_key"
        for key in [hostKey, clientKey] {
            guard runShell("/usr/bin/ssh-keygen -q -t ed25519 -N '' -f '\(key)'") == 0 else {
                throw ChildProcessError(description: "ssh-keygen failed for \(key)")
            }
        }
        guard runShell("cp '\(clientKey).pub' '\(keys)/authorized_keys'") == 0 else {
            throw ChildProcessError(description: "cannot write authorized_keys")
        }
        // Debian's sshd needs its privilege separation folder (made by its service, which may
        // never have run here).
        if access("/run/sshd", F_OK) != 0 { mkdir("/run/sshd", 0o755) }
        var lastError = "no port tried"
        for _ in 0..<5 {
            let port = try Self.freeLoopbackPort()
            let config = keys + "/sshd_config"
            writeFile(
                config,
                """
                Port \(port)
                ListenAddress 127.0.0.1
                HostKey \(hostKey)
                AuthorizedKeysFile \(keys)/authorized_keys
                PidFile none
                StrictModes no
                PermitRootLogin prohibit-password
                PasswordAuthentication no
                KbdInteractiveAuthentication no
                UsePAM no
                Subsystem sftp internal-sftp
                LogLevel ERROR

                """)
            // In a shell that ends sshd when its input closes (at `close()`, or when the test
            // process ends); sshd's messages go to a log file.
            let server = try ChildProcess(
                "/bin/sh",
                [
                    "-c", "\"$1\" -D -e -f \"$2\" 2>>\"$3\" & server=$!; cat >/dev/null; kill $server",
                    "sh", Self.sshd, config, keys + "/sshd.log",
                ])
            if Self.waitUntilListening(port: port, server: server) {
                sshdProcess = server
                return (port, clientKey)
            }
            lastError = "sshd did not listen on 127.0.0.1:\(port)"
            server.signal(SIGKILL)
            _ = try? server.waitForExit(timeout: 10)
        }
        throw ChildProcessError(description: lastError)
    }

    /// A loopback port no one listens on now (the kernel's choice for port 0).
    private static func freeLoopbackPort() throws -> UInt16 {
        let descriptor = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard descriptor >= 0 else { throw ChildProcessError(description: "socket failed") }
        defer { closeDescriptor(descriptor) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        address.sin_port = 0
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let bound = withUnsafeMutablePointer(to: &address) { pointer in
            pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { raw in
                bind(descriptor, raw, length) == 0 && getsockname(descriptor, raw, &length) == 0
            }
        }
        guard bound else { throw ChildProcessError(description: "cannot bind a loopback port") }
        return UInt16(bigEndian: address.sin_port)
    }

    /// Whether something accepts connections on `port` within 10 s (false at once if `server` ends).
    /// (Its log says `kex_exchange_identification` for each of these connections.)
    private static func waitUntilListening(port: UInt16, server: ChildProcess) -> Bool {
        let deadline = ChildProcess.now() + 10
        while ChildProcess.now() < deadline {
            if (try? server.waitForExit(timeout: 0)) != nil { return false }
            let descriptor = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
            guard descriptor >= 0 else { return false }
            var address = sockaddr_in()
            address.sin_family = sa_family_t(AF_INET)
            address.sin_addr.s_addr = inet_addr("127.0.0.1")
            address.sin_port = port.bigEndian
            let connected = withUnsafePointer(to: &address) { pointer in
                pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                    connect(descriptor, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) == 0
                }
            }
            closeDescriptor(descriptor)
            if connected { return true }
            usleep(10_000)
        }
        return false
    }

    // MARK: Ending

    /// Ends the processes started on the hosts, then each host (its shell unmounts and waits for
    /// its FUSE program), then `sshd`. Safe to call more than once.
    func close() {
        guard !isClosed else { return }
        isClosed = true
        for child in started { Self.end(child, group: true) }
        started = []
        for host in hosts {
            host.keeper.closeInput()
            if (try? host.keeper.waitForExit(timeout: 20)) == nil {
                // Still there: force the mount away so that its FUSE program ends.
                runShell("/usr/bin/nsenter --mount=/proc/\(host.keeper.pid)/ns/mnt -- umount -l '\(mountPoint)'")
                Self.end(host.keeper)
            }
        }
        if let sshdProcess {
            sshdProcess.closeInput()
            if (try? sshdProcess.waitForExit(timeout: 10)) == nil { Self.end(sshdProcess) }
        }
        sshdProcess = nil
    }

    /// Kills `child` (with `group`, its process group: what it started too) unless it has ended
    /// (never signalling a process already waited for, whose pid may belong to another by now),
    /// and waits for it.
    private static func end(_ child: ChildProcess, group: Bool = false) {
        if (try? child.waitForExit(timeout: 0)) != nil { return }
        if group { kill(-child.pid, SIGKILL) }
        child.signal(SIGKILL)
        _ = try? child.waitForExit(timeout: 10)
    }
}

/// `close(2)` (inside `TwoHostBed` the name is its own `close()`).
private func closeDescriptor(_ descriptor: Int32) {
    _ = close(descriptor)
}
