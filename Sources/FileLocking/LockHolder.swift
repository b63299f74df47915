/// A point in wall-clock time, as seconds and nanoseconds since 1970-01-01 UTC.
///
/// Its description is ISO 8601 in UTC, as `filelock status` prints: `2026-11-25T21:30:14Z`, with
/// milliseconds when there are any (`2026-11-25T21:30:14.101Z`).
///
/// The library does not link Foundation; convert with
/// `Date(timeIntervalSince1970: Double(time.seconds) + Double(time.nanoseconds) / 1e9)`.
public struct UnixTime: Sendable, Hashable, Comparable, CustomStringConvertible {
    /// Whole seconds since the epoch.
    public var seconds: Int64
    /// Nanoseconds past `seconds`, `0..<1_000_000_000`.
    public var nanoseconds: Int32

    /// Creates a time from its parts.
    ///
    /// Nanoseconds outside `0..<1_000_000_000` are kept as given; the description carries them
    /// into the seconds (so `UnixTime(seconds: 0, nanoseconds: 2_000_000_000)` reads as 2 s past).
    public init(seconds: Int64, nanoseconds: Int32 = 0) {
        self.seconds = seconds
        self.nanoseconds = nanoseconds
    }

    public static func < (lhs: Self, rhs: Self) -> Bool {
        (lhs.seconds, lhs.nanoseconds) < (rhs.seconds, rhs.nanoseconds)
    }

    /// ISO 8601 in UTC (proleptic Gregorian calendar), such as `2026-11-25T21:30:14Z` or, with a
    /// part of a second, `2026-11-25T21:30:14.101Z` (milliseconds, truncated). Years outside
    /// 0000...9999 are written in ISO 8601's expanded form with a sign (`+292277026596-12-04T15:30:07Z`),
    /// so every `Int64` of seconds has a date.
    public var description: String {
        // Carry whole seconds out of the nanoseconds, saturating at the ends of Int64.
        let carried = Int64(nanoseconds).quotientAndRemainder(dividingBy: 1_000_000_000)
        var carry = carried.quotient
        var fraction = carried.remainder
        if fraction < 0 {
            fraction += 1_000_000_000
            carry -= 1
        }
        let (sum, overflow) = seconds.addingReportingOverflow(carry)
        let total = overflow ? (carry > 0 ? Int64.max : Int64.min) : sum

        var days = total / 86_400
        var secondOfDay = total % 86_400
        if secondOfDay < 0 {
            secondOfDay += 86_400
            days -= 1
        }
        let (year, month, day) = UnixTime.civilDate(daysSince1970: days)

        func padded(_ value: Int64, _ width: Int) -> String {
            let digits = String(value.magnitude)
            return String(repeating: "0", count: max(0, width - digits.count)) + digits
        }
        let yearText = (0...9999).contains(year) ? padded(year, 4) : (year < 0 ? "-" : "+") + padded(year, 4)
        var text = "\(yearText)-\(padded(month, 2))-\(padded(day, 2))T\(padded(secondOfDay / 3600, 2)):"
            + "\(padded(secondOfDay / 60 % 60, 2)):\(padded(secondOfDay % 60, 2))"
        let milliseconds = fraction / 1_000_000
        if milliseconds != 0 { text += "." + padded(milliseconds, 3) }
        return text + "Z"
    }

    /// Year (astronomical: 0 is 1 BC), month and day of a count of days since 1970-01-01, in the
    /// proleptic Gregorian calendar: Howard Hinnant's `civil_from_days`. Exact for every day an
    /// `Int64` of seconds can name (about ±1.07e14 days), with no intermediate overflow.
    static func civilDate(daysSince1970 days: Int64) -> (year: Int64, month: Int64, day: Int64) {
        let shifted = days + 719_468  // days since 0000-03-01
        let era = (shifted >= 0 ? shifted : shifted - 146_096) / 146_097
        let dayOfEra = shifted - era * 146_097  // 0...146096
        let yearOfEra = (dayOfEra - dayOfEra / 1460 + dayOfEra / 36_524 - dayOfEra / 146_096) / 365  // 0...399
        let dayOfYear = dayOfEra - (365 * yearOfEra + yearOfEra / 4 - yearOfEra / 100)  // 0...365, from March 1
        let shiftedMonth = (5 * dayOfYear + 2) / 153  // 0...11, from March
        let day = dayOfYear - (153 * shiftedMonth + 2) / 5 + 1
        let month = shiftedMonth < 10 ? shiftedMonth + 3 : shiftedMonth - 9
        return (yearOfEra + era * 400 + (month <= 2 ? 1 : 0), month, day)
    }
}

/// Who holds a lock: a process on some host, or a session of a lock server; since when.
///
/// Its ``kind`` says which. A ``Kind/process`` holds a file lock: kernel locks report the process
/// id found in `/proc/locks` (Linux); they do not record since when, so `since` is `nil`.
/// Marker-file locks read all of it from the marker. A ``Kind/serverSession`` holds a lock on a
/// server (a PostgreSQL advisory lock): the server's process for that session, the server, and
/// what the server knows of its client. Fields that a kind does not have, or that are unknown,
/// are `nil`; new fields and kinds may be added without breaking clients' code.
public struct LockHolder: Sendable, Hashable, CustomStringConvertible {
    /// What holds the lock: compare with the static members (`holder.kind == .process`) or
    /// `switch` with a `default:`; new kinds may be added without breaking clients' code.
    public struct Kind: Sendable, Hashable, CustomStringConvertible {
        private enum Value: String, Sendable, Hashable {
            case process, serverSession
        }

        private let value: Value

        private init(_ value: Value) { self.value = value }

        /// The kind's name, as `process`.
        public var description: String { value.rawValue }

        /// A process holds the lock (file locks): ``LockHolder/pid`` on ``LockHolder/host``.
        public static let process = Kind(.process)

        /// A session of a lock server holds the lock (a PostgreSQL advisory lock):
        /// ``LockHolder/pid`` is the server's process serving the session (PostgreSQL's backend
        /// pid) on the server ``LockHolder/host``; the client is described by
        /// ``LockHolder/clientAddress`` and ``LockHolder/applicationName``.
        public static let serverSession = Kind(.serverSession)
    }

    /// What holds the lock: a process or a server session.
    public var kind: Kind
    /// The holding process's id, as seen from this machine's (and pid namespace's) point of view;
    /// for a server session, the id of the server's process serving it, on the server's host.
    public var pid: Int32
    /// The host the holder runs on (for a server session, the server, as `db.example:5432`);
    /// `nil` when unknown.
    public var host: String?
    /// When the holder took the lock (for a server session, when the server says its hold or
    /// session began); `nil` when the lock kind does not record it.
    public var since: UnixTime?
    /// Whether the holder holds it in shared (reader) mode rather than exclusively.
    public var isShared: Bool
    /// Whether the holder looks gone (dead process, a marker past its lifetime, an idle session).
    public var looksStale: Bool
    /// Where a server session's client connects from, as the server reports it (such as
    /// `10.0.0.7:51234`); `nil` for a process, or when unknown.
    public var clientAddress: String?
    /// The name a server session's client gave itself (PostgreSQL's `application_name`); `nil`
    /// for a process, or when unknown.
    public var applicationName: String?
    /// The holding process's command line (arguments joined by spaces, at most 200 characters),
    /// where this process may read it (Linux `/proc/PID/cmdline`); `nil` when unknown. Filled in by
    /// ``ReadWriteLock``'s holders, whose readers are often several different programs.
    public var command: String?

    /// Creates a description of a holding process.
    public init(pid: Int32, host: String? = nil, since: UnixTime? = nil, isShared: Bool = false, looksStale: Bool = false) {
        self.kind = .process
        self.pid = pid
        self.host = host
        self.since = since
        self.isShared = isShared
        self.looksStale = looksStale
    }

    /// Creates a description of a server session that holds a lock.
    ///
    /// - Parameters:
    ///   - pid: The server's process serving the session (PostgreSQL's backend pid).
    ///   - server: The server, as `db.example:5432`.
    ///   - clientAddress: Where the session's client connects from.
    ///   - applicationName: The name the client gave itself.
    ///   - since: When the hold (or the session) began.
    ///   - isShared: Whether the session holds the lock shared.
    ///   - looksStale: Whether the session looks gone or abandoned.
    public static func serverSession(
        pid: Int32, server: String? = nil, clientAddress: String? = nil, applicationName: String? = nil,
        since: UnixTime? = nil, isShared: Bool = false, looksStale: Bool = false
    ) -> LockHolder {
        var holder = LockHolder(pid: pid, host: server, since: since, isShared: isShared, looksStale: looksStale)
        holder.kind = .serverSession
        holder.clientAddress = clientAddress
        holder.applicationName = applicationName
        return holder
    }

    /// As messages name the holder: `pid 42 on buildhost (shared) since 2026-11-30T19:55:00Z`, with
    /// a known command line `pid 42 (python3 report.py) on buildhost (shared)`, or for a server
    /// session `session (server pid 4242) on db.example:5432, client 10.0.0.7:51234,
    /// application 'nightly-report' since 2026-11-30T19:55:00Z`.
    public var description: String {
        var text: String
        if kind == .serverSession {
            text = "session (server pid \(pid))"
            if let host { text += " on \(host)" }
            if let clientAddress { text += ", client \(clientAddress)" }
            if let applicationName { text += ", application '\(applicationName)'" }
        } else {
            text = "pid \(pid)"
            if let command { text += " (\(command))" }
            if let host { text += " on \(host)" }
        }
        if isShared { text += " (shared)" }
        if let since { text += " since \(since)" }
        if looksStale { text += " (looks stale)" }
        return text
    }
}
