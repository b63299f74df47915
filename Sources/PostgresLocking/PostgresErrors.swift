#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif
import FileLocking
import NIOCore
import NIOSSL
import PostgresNIO

/// Turns what PostgresNIO and SwiftNIO throw into `FileLockError`s that say what to do.
enum PostgresErrors {
    /// The SQLSTATE of a server error, such as `55P03` (lock_not_available).
    static func sqlState(of error: PSQLError) -> String? {
        error.serverInfo?[.sqlState]
    }

    /// Whether `error` says the connection is gone (not a server's answer to a statement).
    static func isConnectionLost(_ error: any Error) -> Bool {
        if let error = error as? PSQLError {
            if error.code == .server, let state = sqlState(of: error) {
                // Administrator or crash shutdown, server starting or stopping.
                return state.hasPrefix("57P") || state.hasPrefix("08")
            }
            return [.serverClosedConnection, .clientClosedConnection, .uncleanShutdown, .connectionError].contains(error.code)
        }
        return error is ChannelError || error is IOError || error is NIOConnectionError
    }

    /// The TLS error in `error` or in what it wraps, if any.
    static func tlsFailure(in error: any Error) -> (any Error)? {
        if error is NIOSSLError || error is BoringSSLError { return error }
        if let error = error as? PSQLError, let underlying = error.underlying { return tlsFailure(in: underlying) }
        return nil
    }

    /// A short account of `error` for a message: the server's own message, or the network error.
    static func brief(_ error: any Error) -> String {
        if let error = error as? PSQLError {
            if let message = error.serverInfo?[.message] {
                return message + (sqlState(of: error).map { " (SQLSTATE \($0))" } ?? "")
            }
            if let underlying = error.underlying { return brief(underlying) }
            return "\(error.code)"
        }
        if let error = error as? IOError {
            return String(cString: strerror(error.errnoCode)).lowercased() + " (errno \(error.errnoCode))"
        }
        if let error = error as? NIOConnectionError {
            if let first = error.connectionErrors.first { return brief(first.error) }
            if let resolution = error.dnsAAAAError ?? error.dnsAError { return "host name not found (\(resolution))" }
            return "could not connect"
        }
        if let error = error as? ChannelError, case .connectTimeout = error { return "connection timed out" }
        return "\(error)"
    }

    static func unexpected(_ what: String, key: AdvisoryKey, settings: PostgresConnectionSettings) -> FileLockError {
        FileLockError(
            .io, resource: .named(key.display),
            message: "unexpected answer from PostgreSQL at \(settings.server) for lock '\(key.display)': \(what)")
    }

    /// The error of a failed call on lock `key`: `doing` is what was being done ("take", "wait for").
    static func lockError(
        _ error: any Error, key: AdvisoryKey, settings: PostgresConnectionSettings, doing: String
    ) -> FileLockError {
        if let error = error as? FileLockError { return error }
        let resource = LockResource.named(key.display)
        let subject = "lock '\(key.display)' on PostgreSQL at \(settings.server)"
        let cause: any Error & Sendable = error
        func make(_ code: FileLockError.Code, _ message: String) -> FileLockError {
            FileLockError(code, resource: resource, message: message, cause: cause)
        }
        if let error = error as? PostgresSessionError {
            switch error {
            case .serverTooOld: return make(.notSupportedByFilesystem, "cannot \(doing) \(subject): \(error)")
            case .unexpectedAnswer: return make(.io, "cannot \(doing) \(subject): \(error)")
            case .forkedChild: return make(.invalidConfiguration, "cannot \(doing) \(subject): \(error)")
            }
        }
        if let error = error as? PSQLError {
            switch error.code {
            case .server:
                let state = sqlState(of: error) ?? ""
                let message = brief(error)
                switch state {
                case "28P01", "28000":
                    return make(
                        .permissionDenied,
                        "cannot \(doing) \(subject): the server refused user '\(settings.user)': \(message); check the "
                            + "user and password (the URL, PGUSER, PGPASSWORD) and the server's pg_hba.conf")
                case "3D000":
                    return make(
                        .invalidConfiguration,
                        "cannot \(doing) \(subject): database '\(settings.database)' does not exist; create it "
                            + "(createdb \(settings.database)) or name another (the URL's path, or PGDATABASE)")
                case "42501":
                    return make(.permissionDenied, "cannot \(doing) \(subject): \(message); grant user '\(settings.user)' access")
                case "53300":
                    return make(
                        .serverUnavailable,
                        "cannot \(doing) \(subject): the server has no connection slots left (\(message)); each held "
                            + "lock uses a connection of its own: raise max_connections or hold fewer locks at once")
                case "42883":
                    return make(
                        .notSupportedByFilesystem,
                        "cannot \(doing) \(subject): \(message); the server needs PostgreSQL 11 or later (hashtextextended)")
                case _ where state.hasPrefix("57P") || state.hasPrefix("08"):
                    return make(
                        .serverUnavailable,
                        "cannot \(doing) \(subject): the server ended the session (\(message)); retry when it is back")
                default:
                    return make(.io, "cannot \(doing) \(subject): \(message)")
                }
            case .sslUnsupported:
                return make(
                    .serverUnavailable,
                    "cannot \(doing) \(subject): the server does not offer TLS, which sslmode=\(settings.tlsMode.rawValue) "
                        + "requires; enable ssl on the server or use sslmode=prefer")
            case .unsupportedAuthMechanism, .authMechanismRequiresPassword, .saslError:
                return make(
                    .permissionDenied,
                    "cannot \(doing) \(subject): authentication as '\(settings.user)' failed (\(brief(error))); give "
                        + "a password (the URL or PGPASSWORD) or check pg_hba.conf")
            default:
                break
            }
        }
        if let tls = tlsFailure(in: error) {
            return make(
                .serverUnavailable,
                "cannot \(doing) \(subject): TLS failed (\(tls)); check sslmode, sslrootcert (the authority that signed the "
                    + "server's certificate) and that the certificate names the host")
        }
        if isConnectionLost(error) || error is PSQLError {
            return make(
                .serverUnavailable,
                "cannot \(doing) \(subject): \(brief(error)); check that the server runs and accepts connections "
                    + "there (the URL's host and port, or PGHOST and PGPORT), then retry")
        }
        return make(.io, "cannot \(doing) \(subject): \(brief(error))")
    }
}
