import FileLocking

/// How holders are read from `pg_locks` and `pg_stat_activity`.
enum PostgresHolders {
    /// The time a holder of ours stamped on its `application_name` when the lock was granted
    /// (`... 1796116802018`, milliseconds since 1970 by the server's clock), or `nil`.
    static func since(fromApplicationName name: String) -> UnixTime? {
        guard let space = name.lastIndex(of: " ") else { return nil }
        let digits = name[name.index(after: space)...]
        guard digits.count == 13, digits.allSatisfy(\.isASCII), let milliseconds = Int64(digits) else { return nil }
        return UnixTime(seconds: milliseconds / 1000, nanoseconds: Int32(milliseconds % 1000) * 1_000_000)
    }

    static func holder(
        pid: Int32, shared: Bool, applicationName: String?, clientAddress: String?, clientPort: Int32?,
        sessionStart: Double?, server: String
    ) -> LockHolder {
        var since = applicationName.flatMap(since(fromApplicationName:))
        if since == nil, let sessionStart, sessionStart.isFinite, abs(sessionStart) < 1e15 {
            let seconds = sessionStart.rounded(.down)
            since = UnixTime(seconds: Int64(seconds), nanoseconds: Int32((sessionStart - seconds) * 1e9))
        }
        var client: String?
        if let clientAddress {
            client = clientAddress.contains(":") ? "[\(clientAddress)]" : clientAddress
            if let clientPort, clientPort > 0 { client! += ":\(clientPort)" }
        } else if clientPort == -1 {
            client = "local socket"
        }
        return .serverSession(
            pid: pid, server: server, clientAddress: client, applicationName: applicationName, since: since,
            isShared: shared)
    }
}
