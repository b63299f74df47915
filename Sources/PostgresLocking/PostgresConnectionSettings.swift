#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif
import FileLocking

/// Where a ``PostgresLock`` connects and as whom: from a URL, the standard `PG*` environment
/// variables, or both, as `psql` and libpq read them.
///
/// ```swift
/// let server = try PostgresConnectionSettings(url: "postgres://jobs@db.internal:5432/app?sslmode=require")
/// let fromEnvironment = try PostgresConnectionSettings()   // PGHOST, PGPORT, PGUSER, PGPASSWORD, ...
/// ```
///
/// A URL is `postgres://[user[:password]@][host][:port][/database][?parameter=value&...]` (or
/// `postgresql://`); a host that is a folder (`%2Frun%2Fpostgresql`, or `?host=/run/postgresql`)
/// is a Unix socket's folder. Parameters: `host`, `port`, `user`, `password`, `dbname`,
/// `sslmode` (`disable`, `allow`, `prefer`, `require`, `verify-ca`, `verify-full`),
/// `sslrootcert`, `application_name`, `connect_timeout` (seconds). What the URL leaves out comes
/// from `PGHOST`, `PGPORT`, `PGUSER`, `PGPASSWORD`, `PGDATABASE`, `PGSSLMODE`, `PGSSLROOTCERT`,
/// `PGAPPNAME` and `PGCONNECT_TIMEOUT`, then libpq's defaults: the socket folder
/// `/var/run/postgresql`, port 5432, the user name of this process, a database named as the user,
/// `sslmode=prefer`. A password file (`.pgpass`) is not read.
public struct PostgresConnectionSettings: Sendable, Hashable, CustomStringConvertible {
    /// How to reach the server.
    public enum Endpoint: Sendable, Hashable, CustomStringConvertible {
        /// A host name or IP address and a TCP port.
        case tcp(host: String, port: Int)
        /// The folder of the server's Unix socket and the port that names it (`.s.PGSQL.5432`).
        case unixSocket(folder: String, port: Int)

        public var description: String {
            switch self {
            case .tcp(let host, let port): host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)"
            case .unixSocket(let folder, let port): "\(folder)/.s.PGSQL.\(port)"
            }
        }
    }

    /// Whether and how TLS protects the connection, as libpq's `sslmode`.
    public enum TLSMode: String, Sendable, Hashable {
        /// Never (the only mode on a Unix socket).
        case disable
        /// TLS where the server offers it, without checking its certificate (libpq's `allow` and
        /// `prefer`).
        case prefer
        /// TLS or fail, without checking the certificate.
        case require
        /// TLS with a certificate signed by a trusted authority (`sslrootcert`, else the system's).
        case verifyCA = "verify-ca"
        /// As `verifyCA`, and the certificate must name the host.
        case verifyFull = "verify-full"
    }

    /// How to reach the server.
    public var endpoint: Endpoint
    /// The role to log in as.
    public var user: String
    /// The password, if the server asks for one. Never shown in `description`.
    public var password: String?
    /// The database. Advisory locks live in one database: every process that shares a lock must
    /// connect to the same database.
    public var database: String
    /// TLS, as `sslmode`.
    public var tlsMode: TLSMode
    /// A PEM file of the authorities trusted for `verifyCA` and `verifyFull`; `nil`: the system's.
    public var rootCertificatePath: String?
    /// The start of the `application_name` the lock's sessions report; the library adds this
    /// process's id and host (and, while a lock is held, since when) so that every holder can be
    /// named from `pg_stat_activity`. `nil`: `filelock`.
    public var applicationName: String?
    /// How long connecting may take.
    public var connectTimeout: Duration

    /// Creates settings from their parts.
    public init(
        endpoint: Endpoint, user: String, password: String? = nil, database: String? = nil, tlsMode: TLSMode = .prefer,
        rootCertificatePath: String? = nil, applicationName: String? = nil, connectTimeout: Duration = .seconds(10)
    ) {
        self.endpoint = endpoint
        self.user = user
        self.password = password
        self.database = database ?? user
        self.tlsMode = tlsMode
        self.rootCertificatePath = rootCertificatePath
        self.applicationName = applicationName
        self.connectTimeout = connectTimeout
    }

    /// Settings from a `postgres://` URL, with what it leaves out taken from the `PG*` variables of
    /// `environment`, then libpq's defaults; without a URL, from the variables alone.
    ///
    /// - Parameters:
    ///   - url: A `postgres://` or `postgresql://` URL, or `nil`.
    ///   - environment: The variables to read (`nil`: this process's environment).
    /// - Throws: `FileLockError` `.invalidConfiguration` naming what is wrong with the URL or a
    ///   variable (the password is never repeated).
    public init(url: String? = nil, environment: [String: String]? = nil) throws {
        let variables = environment ?? Self.processEnvironment()
        let parts = try url.map(Self.parse(url:)) ?? [:]
        func value(_ key: String, _ variable: String) -> String? {
            if let given = parts[key], !given.isEmpty { return given }
            if let fromEnvironment = variables[variable], !fromEnvironment.isEmpty { return fromEnvironment }
            return nil
        }
        let shownURL = url.map(Self.redacted) ?? "the PG* environment variables"
        let portText = value("port", "PGPORT") ?? "5432"
        guard let port = Int(portText), (1...65535).contains(port) else {
            throw Self.invalid("port '\(portText)' in \(shownURL) is not a TCP port (1-65535)")
        }
        let host = value("host", "PGHOST") ?? "/var/run/postgresql"
        guard !host.contains(",") else { throw Self.invalid("'\(host)' (host) names several hosts; a lock needs one server") }
        let endpoint: Endpoint = host.hasPrefix("/") ? .unixSocket(folder: host, port: port) : .tcp(host: host, port: port)
        let user = value("user", "PGUSER") ?? Self.processUserName()
        guard !user.isEmpty else { throw Self.invalid("no user name in \(shownURL): set one (postgres://USER@...) or PGUSER") }
        let modeText = value("sslmode", "PGSSLMODE") ?? "prefer"
        let mode: TLSMode
        switch modeText {
        case "disable": mode = .disable
        case "allow", "prefer": mode = .prefer
        case "require": mode = .require
        case "verify-ca": mode = .verifyCA
        case "verify-full": mode = .verifyFull
        default:
            throw Self.invalid(
                "sslmode '\(modeText)' in \(shownURL) is not one of disable, allow, prefer, require, verify-ca, verify-full")
        }
        var timeout = Duration.seconds(10)
        if let text = value("connect_timeout", "PGCONNECT_TIMEOUT") {
            guard let seconds = Int(text), seconds >= 0, seconds < 1_000_000 else {
                throw Self.invalid("connect_timeout '\(text)' in \(shownURL) is not a number of seconds")
            }
            // libpq: 0 (or none) waits indefinitely; a connection attempt still needs a bound here.
            if seconds > 0 { timeout = .seconds(max(seconds, 2)) }
        }
        self.init(
            endpoint: endpoint, user: user, password: value("password", "PGPASSWORD"),
            database: value("dbname", "PGDATABASE") ?? user, tlsMode: mode,
            rootCertificatePath: value("sslrootcert", "PGSSLROOTCERT"),
            applicationName: value("application_name", "PGAPPNAME"), connectTimeout: timeout)
        if case .unixSocket = endpoint, mode == .require || mode == .verifyCA || mode == .verifyFull {
            throw Self.invalid("sslmode '\(modeText)' asks for TLS, which a Unix socket (\(endpoint)) never has; connect by host name")
        }
    }

    /// The server, as messages and holders name it: `db.internal:5432`, or the socket's path.
    public var server: String { endpoint.description }

    /// `user@server/database`, without the password.
    public var description: String { "\(user)@\(server)/\(database)" }

    /// What identifies the lock space: the server and the database (advisory locks are per database).
    var lockSpace: String { "postgres://\(server)/\(database)" }

    // MARK: Parsing

    static func invalid(_ message: String) -> FileLockError {
        FileLockError(.invalidConfiguration, resource: .named("postgres"), message: message)
    }

    /// The URL for messages, never with a password: everything before the last `@` (the user
    /// and password, even one with an unencoded `/` or `?` in it) is shown as `***`, and the value
    /// of a `password=` parameter too.
    static func redacted(_ url: String) -> String {
        guard let schemeEnd = url.range(of: "://") else { return url.contains("password") ? "(a URL)" : url }
        var rest = String(url[schemeEnd.upperBound...])
        if let at = rest.lastIndex(of: "@") { rest = "***" + rest[at...] }
        if let question = rest.firstIndex(of: "?") {
            let query = rest[rest.index(after: question)...].split(separator: "&", omittingEmptySubsequences: false).map { pair in
                pair.lowercased().hasPrefix("password=") ? "password=***" : String(pair)
            }
            rest = rest[...question] + query.joined(separator: "&")
        }
        return String(url[..<schemeEnd.upperBound]) + rest
    }

    /// The URL's parts by libpq's parameter names (`host`, `port`, `user`, `password`, `dbname`, and
    /// every query parameter), percent-decoded.
    static func parse(url: String) throws -> [String: String] {
        let shown = redacted(url)
        guard let schemeEnd = url.range(of: "://"),
            ["postgres", "postgresql"].contains(url[..<schemeEnd.lowerBound].lowercased())
        else {
            throw invalid("'\(shown)' is not a PostgreSQL URL: use postgres://user:password@host:port/database")
        }
        var rest = Substring(url[schemeEnd.upperBound...])
        guard !rest.contains("#") else {
            throw invalid("'\(shown)' has a fragment ('#...'), which a PostgreSQL URL does not take; percent-encode '#' as %23")
        }
        var parts: [String: String] = [:]
        if let question = rest.firstIndex(of: "?") {
            for pair in rest[rest.index(after: question)...].split(separator: "&", omittingEmptySubsequences: true) {
                let keyValue = pair.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
                guard keyValue.count == 2 else { throw invalid("parameter '\(pair)' in '\(shown)' has no value (name=value)") }
                let key = try decode(keyValue[0], in: shown)
                let known = [
                    "host", "port", "user", "password", "dbname", "sslmode", "sslrootcert", "application_name",
                    "connect_timeout",
                ]
                guard known.contains(key) else {
                    throw invalid("parameter '\(key)' in '\(shown)' is not supported; use \(known.joined(separator: ", "))")
                }
                parts[key] = try decode(keyValue[1], in: shown)
            }
            rest = rest[..<question]
        }
        var authority = rest
        if let slash = rest.firstIndex(of: "/") {
            authority = rest[..<slash]
            let database = try decode(rest[rest.index(after: slash)...], in: shown)
            if !database.isEmpty, parts["dbname"] == nil { parts["dbname"] = database }
        }
        if let at = authority.lastIndex(of: "@") {
            let credentials = authority[..<at]
            authority = authority[authority.index(after: at)...]
            if let colon = credentials.firstIndex(of: ":") {
                if parts["user"] == nil { parts["user"] = try decode(credentials[..<colon], in: shown) }
                if parts["password"] == nil {
                    parts["password"] = try decode(credentials[credentials.index(after: colon)...], in: shown)
                }
            } else if parts["user"] == nil {
                parts["user"] = try decode(credentials, in: shown)
            }
        }
        guard !authority.contains(",") else {
            throw invalid("'\(shown)' names several hosts; a lock needs one server")
        }
        var hostPart = authority
        var portPart: Substring?
        if hostPart.hasPrefix("[") {
            guard let close = hostPart.firstIndex(of: "]") else { throw invalid("'\(shown)' has an unclosed '[' in its host") }
            let after = hostPart[hostPart.index(after: close)...]
            if after.hasPrefix(":") { portPart = after.dropFirst() } else if !after.isEmpty {
                throw invalid("'\(shown)' has '\(after)' after its IPv6 address")
            }
            hostPart = hostPart[hostPart.index(after: hostPart.startIndex)..<close]
        } else if let colon = hostPart.lastIndex(of: ":") {
            portPart = hostPart[hostPart.index(after: colon)...]
            hostPart = hostPart[..<colon]
        }
        let host = try decode(hostPart, in: shown)
        let isBracketed = authority.hasPrefix("[")
        if !isBracketed && hostPart.contains(":") {
            throw invalid("'\(shown)' has a host with ':' in it: write an IPv6 address in brackets, as postgres://[::1]:5432/db")
        }
        if !host.isEmpty, parts["host"] == nil { parts["host"] = host }
        if let portPart, !portPart.isEmpty, parts["port"] == nil { parts["port"] = String(portPart) }
        return parts
    }

    /// Percent-decodes `text`; a `%` not followed by two hex digits, or bytes that are not UTF-8,
    /// are an error.
    static func decode(_ text: Substring, in shown: String) throws -> String {
        guard text.contains("%") else { return String(text) }
        var bytes: [UInt8] = []
        var iterator = Array(text.utf8).makeIterator()
        while let byte = iterator.next() {
            guard byte == UInt8(ascii: "%") else {
                bytes.append(byte)
                continue
            }
            guard let high = iterator.next().flatMap(hexValue), let low = iterator.next().flatMap(hexValue) else {
                throw invalid("'\(shown)' has a '%' that is not followed by two hex digits")
            }
            bytes.append(high << 4 | low)
        }
        guard let decoded = String(validating: bytes, as: UTF8.self), !decoded.contains("\0") else {
            throw invalid("'\(shown)' decodes to bytes that are not UTF-8 text (or to a NUL)")
        }
        return decoded
    }

    private static func hexValue(_ byte: UInt8) -> UInt8? {
        switch byte {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): byte - UInt8(ascii: "0")
        case UInt8(ascii: "a")...UInt8(ascii: "f"): byte - UInt8(ascii: "a") + 10
        case UInt8(ascii: "A")...UInt8(ascii: "F"): byte - UInt8(ascii: "A") + 10
        default: nil
        }
    }

    static func processEnvironment() -> [String: String] {
        var variables: [String: String] = [:]
        for name in [
            "PGHOST", "PGPORT", "PGUSER", "PGPASSWORD", "PGDATABASE", "PGSSLMODE", "PGSSLROOTCERT", "PGAPPNAME",
            "PGCONNECT_TIMEOUT",
        ] {
            if let value = getenv(name) { variables[name] = String(cString: value) }
        }
        return variables
    }

    static func processUserName() -> String {
        if let user = getenv("USER").map({ String(cString: $0) }), !user.isEmpty { return user }
        if let entry = getpwuid(geteuid()), let name = entry.pointee.pw_name { return String(cString: name) }
        return ""
    }
}
