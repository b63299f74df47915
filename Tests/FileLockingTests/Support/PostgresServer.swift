#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif
import PostgresLocking
import Subprocesses
import Testing

/// A throw-away PostgreSQL cluster for the tests: `initdb` and `postgres` from the machine's
/// PostgreSQL (Debian's `/usr/lib/postgresql/*/bin`, or `pg_config --bindir`) in a temporary
/// folder, on a Unix socket there and a loopback TCP port. Run as root (CI), the server runs as
/// the `postgres` user (or `nobody`): PostgreSQL refuses to run as root. A watchdog stops it and
/// removes the folder when the test process ends, however it ends.
///
/// Roles: `postgres` (superuser, trusted on the socket) and `worker` with password `secret`
/// (password-checked over TCP).
final class PostgresServer: @unchecked Sendable {
    /// The folder of `initdb`, `postgres`, `pg_ctl` and `psql`, or `nil` when PostgreSQL is not installed.
    static let binaries: String? = {
        var candidates: [String] = []
        if let listing = try? ChildProcess("/bin/sh", ["-c", "ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1; pg_config --bindir 2>/dev/null"]) {
            while let line = try? listing.readLine(timeout: 10), !line.isEmpty { candidates.append(line) }
        }
        return candidates.first { access($0 + "/initdb", X_OK) == 0 && access($0 + "/postgres", X_OK) == 0 }
    }()

    /// The server most tests share, started on first use; `nil` (with the reason recorded) when
    /// none can be started.
    static let shared: PostgresServer? = {
        do {
            return try PostgresServer()
        } catch {
            print("PostgreSQL tests: no server: \(error)")
            return nil
        }
    }()

    static var isAvailable: Bool { binaries != nil }

    let folder: String
    let port: Int
    let bin: String
    /// The user the server runs as when the tests run as root.
    let serverUser: String?

    init() throws {
        guard let bin = PostgresServer.binaries else { throw ChildProcessError(description: "PostgreSQL is not installed") }
        self.bin = bin
        var template = Array("/tmp/filelock-pg-XXXXXX".utf8CString)
        guard let made = mkdtemp(&template) else { throw ChildProcessError(description: "mkdtemp failed") }
        folder = String(cString: made)
        let serverUser = geteuid() == 0 ? (getpwnam("postgres") != nil ? "postgres" : "nobody") : nil
        self.serverUser = serverUser
        func asServer(_ command: String) -> String { Self.as(serverUser, command) }
        chmod(folder, 0o755)
        if let serverUser { runShell("chown \(serverUser) '\(folder)'") }
        let initdb = "\(bin)/initdb -D '\(folder)/data' -U postgres --auth-local=trust --auth-host=scram-sha-256 -E UTF8 --no-sync"
        guard runShell(asServer(initdb) + " >'\(folder)/initdb.log' 2>&1") == 0 else {
            throw ChildProcessError(description: "initdb failed: \(readFile(folder + "/initdb.log") ?? "")")
        }
        var started: Int?
        for _ in 0..<10 {
            let candidate = Int.random(in: 20_000...60_000)
            let options = "-k '\(folder)' -p \(candidate) -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=300"
            if runShell(asServer("\(bin)/pg_ctl -D '\(folder)/data' -o \"\(options)\" -l '\(folder)/server.log' -w -t 60 start") + " >/dev/null 2>&1") == 0 {
                started = candidate
                break
            }
        }
        guard let started else {
            throw ChildProcessError(description: "the server did not start: \(readFile(folder + "/server.log") ?? "")")
        }
        port = started
        // Stops the server and removes its folder once this process is gone, however it ends.
        let stop = asServer("\(bin)/pg_ctl -D '\(folder)/data' -m immediate stop")
        runShell(
            "(while kill -0 \(getpid()) 2>/dev/null; do sleep 1; done; \(stop) >/dev/null 2>&1; rm -rf '\(folder)') "
                + "</dev/null >/dev/null 2>&1 &")
        guard psql("CREATE ROLE worker LOGIN PASSWORD 'secret'") != nil else {
            throw ChildProcessError(description: "could not create the worker role")
        }
    }

    /// `command` as the server's user (when the tests run as root).
    func asServer(_ command: String) -> String { Self.as(serverUser, command) }

    static func `as`(_ user: String?, _ command: String) -> String {
        guard let user else { return command }
        return "runuser -u \(user) -- \(command)"
    }

    /// The superuser over the Unix socket.
    var socketURL: String { "postgres://postgres@:\(port)/postgres?host=\(folder)" }

    /// `worker` (password `secret`, or the one given) over TCP.
    func tcpURL(password: String = "secret", database: String = "postgres") -> String {
        "postgres://worker:\(password)@127.0.0.1:\(port)/\(database)?sslmode=disable"
    }

    var settings: PostgresConnectionSettings { try! PostgresConnectionSettings(url: socketURL) }

    /// Runs SQL with `psql` as the superuser; its output (rows as `a|b`), or `nil` when it failed.
    @discardableResult
    func psql(_ sql: String) -> String? {
        guard
            let child = try? ChildProcess(
                "\(bin)/psql", ["-X", "-At", "-v", "ON_ERROR_STOP=1", "-h", folder, "-p", "\(port)", "-U", "postgres", "-d", "postgres", "-c", sql])
        else { return nil }
        let output = (try? child.readRemainingOutput(timeout: 60)) ?? ""
        guard (try? child.waitForExit()) == 0 else { return nil }
        return output.hasSuffix("\n") ? String(output.dropLast()) : output
    }

    /// An interactive `psql` session (as `postgres`, `application_name` psql-test) that runs what
    /// it is sent; `echo` lines mark progress.
    func psqlSession() throws -> ChildProcess {
        try ChildProcess(
            "/usr/bin/env", ["PGAPPNAME=psql-test", "\(bin)/psql", "-X", "-At", "-h", folder, "-p", "\(port)", "-U", "postgres", "-d", "postgres"])
    }

    /// `pg_locks`' condition for the advisory lock named `name`.
    static func rows(of name: String) -> String {
        let escaped = name.replacing("'", with: "''")
        return "locktype = 'advisory' AND objsubid = 1 "
            + "AND classid::bigint = (hashtextextended('\(escaped)', 0) >> 32) & 4294967295 "
            + "AND objid::bigint = hashtextextended('\(escaped)', 0) & 4294967295"
    }

    /// The sessions now waiting for the lock named `name`.
    func waits(for name: String) -> Int {
        Int(psql("SELECT count(*) FROM pg_locks WHERE NOT granted AND \(Self.rows(of: name))") ?? "") ?? -1
    }

    /// The granted holds of the lock named `name`.
    func holds(of name: String) -> Int {
        Int(psql("SELECT count(*) FROM pg_locks WHERE granted AND \(Self.rows(of: name))") ?? "") ?? -1
    }

    /// The rows of `pg_locks` for the lock named `name` with their sessions, for a failure's report.
    func lockRows(of name: String) -> String {
        psql(
            "SELECT l.pid, l.granted, l.mode, a.application_name, a.state, a.state_change, a.query FROM pg_locks l "
                + "LEFT JOIN pg_stat_activity a USING (pid) WHERE \(Self.rows(of: name).replacing("locktype", with: "l.locktype"))")
            ?? "?"
    }

    /// The server processes of the sessions holding the lock named `name`.
    func holderPIDs(of name: String) -> [String] {
        (psql("SELECT pid FROM pg_locks WHERE granted AND \(Self.rows(of: name))") ?? "").split(separator: "\n").map(String.init)
    }

    /// The server's self-signed certificate for `localhost` (PEM), once TLS is on.
    var certificate: String { folder + "/server.crt" }

    /// Turns TLS on (once): a self-signed certificate for `localhost` made with `openssl`, loaded
    /// by a configuration reload. Plain connections keep working.
    lazy var tlsEnabled: Bool = {
        let key = folder + "/server.key"
        let made = runShell(
            "openssl req -new -x509 -days 2 -nodes -subj /CN=localhost -addext subjectAltName=DNS:localhost "
                + "-keyout '\(key)' -out '\(certificate)' >/dev/null 2>&1 && chmod 600 '\(key)'"
                + (serverUser.map { " && chown \($0) '\(key)' '\(certificate)'" } ?? ""))
        guard made == 0 else { return false }
        return psql("ALTER SYSTEM SET ssl_cert_file = '\(certificate)'") != nil
            && psql("ALTER SYSTEM SET ssl_key_file = '\(key)'") != nil && psql("ALTER SYSTEM SET ssl = on") != nil
            && psql("SELECT pg_reload_conf()") != nil
    }()

    func restart() -> Bool {
        runShell(asServer("\(bin)/pg_ctl -D '\(folder)/data' -m fast -w -t 60 restart") + " >/dev/null 2>&1") == 0
    }
}
