/// A point in wall-clock time, as seconds and nanoseconds since 1970-01-01 UTC.
///
/// The library does not link Foundation; convert with
/// `Date(timeIntervalSince1970: Double(time.seconds) + Double(time.nanoseconds) / 1e9)`.
public struct UnixTime: Sendable, Hashable, Comparable, CustomStringConvertible {
    /// Whole seconds since the epoch.
    public var seconds: Int64
    /// Nanoseconds past `seconds`, `0..<1_000_000_000`.
    public var nanoseconds: Int32

    /// Creates a time from its parts.
    public init(seconds: Int64, nanoseconds: Int32 = 0) {
        self.seconds = seconds
        self.nanoseconds = nanoseconds
    }

    public static func < (lhs: Self, rhs: Self) -> Bool {
        (lhs.seconds, lhs.nanoseconds) < (rhs.seconds, rhs.nanoseconds)
    }

    public var description: String {
        let fraction = String(nanoseconds / 1_000_000)
        return "\(seconds).\(String(repeating: "0", count: 3 - fraction.count))\(fraction)s since 1970"
    }
}

/// Who holds a lock: a process, on which host, since when.
///
/// Kernel locks report the process id found in `/proc/locks` (Linux); they do not record since
/// when, so `since` is `nil`. Marker-file locks read all of it from the marker.
public struct LockHolder: Sendable, Hashable, CustomStringConvertible {
    /// The holding process's id, as seen from this machine's (and pid namespace's) point of view.
    public var pid: Int32
    /// The host the holder runs on; `nil` when unknown.
    public var host: String?
    /// When the holder took the lock; `nil` when the lock kind does not record it.
    public var since: UnixTime?
    /// Whether the holder holds it in shared (reader) mode rather than exclusively.
    public var isShared: Bool
    /// Whether the holder looks gone (dead process or a marker past its lifetime).
    public var looksStale: Bool

    /// Creates a description of a holder.
    public init(pid: Int32, host: String? = nil, since: UnixTime? = nil, isShared: Bool = false, looksStale: Bool = false) {
        self.pid = pid
        self.host = host
        self.since = since
        self.isShared = isShared
        self.looksStale = looksStale
    }

    public var description: String {
        var text = "pid \(pid)"
        if let host { text += " on \(host)" }
        if isShared { text += " (shared)" }
        if let since { text += " since \(since)" }
        if looksStale { text += " (looks stale)" }
        return text
    }
}
