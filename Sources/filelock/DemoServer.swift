#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif
import Subprocesses

/// A throw-away PostgreSQL server for `filelock demo --kind postgres` when none is given: the
/// machine's `initdb` and `postgres` (Debian's `/usr/lib/postgresql/*/bin`, or `pg_config
/// --bindir`) in a temporary folder, listening only on a Unix socket there. Run as root, the
/// server runs as the `postgres` user (PostgreSQL refuses root). `stop()` removes it all.
struct DemoServer {
    let folder: String
    let bin: String
    let serverUser: String?
    let port: Int

    /// The `postgres://` URL of the server's superuser on its socket.
    var url: String { "postgres://postgres@:\(port)/postgres?host=\(folder)" }

    static func start() throws -> DemoServer {
        guard let bin = binaries() else {
            throw DemoServerError(
                "no PostgreSQL server to run the demo on: install PostgreSQL (apt-get install postgresql), or give "
                    + "one with --postgres URL")
        }
        var template = Array("/tmp/filelock-demo-pg-XXXXXX".utf8CString)
        guard let made = mkdtemp(&template) else { throw DemoServerError("cannot create a temporary folder in /tmp") }
        let folder = String(cString: made)
        chmod(folder, 0o755)
        let serverUser: String? = geteuid() == 0 ? (getpwnam("postgres") != nil ? "postgres" : "nobody") : nil
        let server = DemoServer(folder: folder, bin: bin, serverUser: serverUser, port: Int.random(in: 20_000...60_000))
        if let serverUser { _ = shell("chown \(serverUser) '\(folder)'") }
        guard server.shell(server.asServer("'\(bin)/initdb' -D '\(folder)/data' -U postgres --auth=trust --no-sync") + " >/dev/null 2>&1") == 0,
            server.shell(
                server.asServer(
                    "'\(bin)/pg_ctl' -D '\(folder)/data' -o \"-k '\(folder)' -p \(server.port) -c listen_addresses='' -c fsync=off\" "
                        + "-l '\(folder)/server.log' -w -t 60 start") + " >/dev/null 2>&1") == 0
        else {
            server.stop()
            throw DemoServerError("the throw-away PostgreSQL server in \(folder) did not start")
        }
        // Stopped and removed also when the demo is interrupted (Ctrl-C skips its own clean-up).
        let stop = server.asServer("'\(bin)/pg_ctl' -D '\(folder)/data' -m immediate stop")
        _ = server.shell(
            "(while kill -0 \(getpid()) 2>/dev/null; do sleep 1; done; \(stop) >/dev/null 2>&1; rm -rf '\(folder)') "
                + "</dev/null >/dev/null 2>&1 &")
        return server
    }

    func stop() {
        _ = shell(asServer("'\(bin)/pg_ctl' -D '\(folder)/data' -m immediate stop") + " >/dev/null 2>&1")
        _ = shell("rm -rf '\(folder)'")
    }

    private func asServer(_ command: String) -> String {
        serverUser.map { "runuser -u \($0) -- \(command)" } ?? command
    }

    private func shell(_ command: String) -> Int32 { Self.shell(command) }

    private static func shell(_ command: String) -> Int32 {
        guard let child = try? ChildProcess("/bin/sh", ["-c", command]) else { return 127 }
        return (try? child.waitForExit(timeout: 120)) ?? 127
    }

    private static func binaries() -> String? {
        guard let listing = try? ChildProcess(
            "/bin/sh", ["-c", "ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1; pg_config --bindir 2>/dev/null"])
        else { return nil }
        var candidates: [String] = []
        while let line = try? listing.readLine(timeout: 10), !line.isEmpty { candidates.append(line) }
        return candidates.first { access($0 + "/initdb", X_OK) == 0 && access($0 + "/pg_ctl", X_OK) == 0 }
    }
}

struct DemoServerError: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}
