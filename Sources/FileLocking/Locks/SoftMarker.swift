import Synchronization

/// The contents of a soft-lock marker, in the format Python `filelock.SoftFileLock` writes and
/// reads: the pid, the host name, and (where known) the process start token, one per line, each
/// ending with a newline, at most 1024 bytes.
struct MarkerRecord: Sendable, Equatable {
    var pid: Int32
    var host: String
    var startToken: StartToken?

    static let maximumSize = 1024

    /// The record of this process.
    static var current: MarkerRecord {
        MarkerRecord(pid: System.processID, host: ProcessIdentity.hostName, startToken: ProcessIdentity.ownStartToken)
    }

    /// `current.encoded`, made once per process (a forked child makes its own).
    static var currentEncoded: [UInt8] {
        OwnRecordCache.shared.encoded
    }

    var encoded: [UInt8] {
        var text = "\(pid)\n\(host)\n"
        if let startToken { text += startToken.decimal + "\n" }
        return Array(text.utf8)
    }

    /// Parses a marker; `nil` when it is malformed (empty, partly written, too large, not two or
    /// three lines, a pid or token that is not a number).
    init?(parsing bytes: [UInt8]) {
        guard let lines = Self.lines(of: bytes), lines.count == 2 || lines.count == 3 else { return nil }
        guard lines[0].utf8.allSatisfy({ $0 >= 48 && $0 <= 57 }), let pid = Int32(lines[0]), pid >= 1 else { return nil }
        self.pid = pid
        host = String(lines[1])
        if lines.count == 3 {
            guard let token = StartToken(decimal: lines[2]) else {
                // Digits too large for a token still name some other process start.
                guard lines[2].utf8.allSatisfy({ $0 >= 48 && $0 <= 57 }), !lines[2].isEmpty else { return nil }
                startToken = StartToken(bootHigh: .max, bootLow: .max, startTime: .max)
                return
            }
            startToken = token
        } else {
            startToken = nil
        }
    }

    /// A marker's lines as Python reads them (`str.strip().splitlines()`); `nil` for an empty,
    /// oversized, unterminated or non-UTF-8 marker.
    static func lines(of bytes: [UInt8]) -> [Substring]? {
        guard !bytes.isEmpty, bytes.count <= maximumSize, bytes.last == 10,
            let text = String(validating: bytes, as: UTF8.self)
        else { return nil }
        return text.trimmingWhitespace().split(omittingEmptySubsequences: false, whereSeparator: \.isLineSeparator)
    }

    init(pid: Int32, host: String, startToken: StartToken?) {
        self.pid = pid
        self.host = host
        self.startToken = startToken
    }
}

/// A marker in the `filelock/2` format, which Python filelock 4.2 and later write for a
/// `SoftFileLease` (`mode=lease`): key=value lines under a `filelock/2` header. Judged as Python
/// judges it: a lease is abandoned once its marker stays unchanged for its duration (its holder
/// touches it every third of that), an exclusive one only when its holder is provably dead, and
/// one of a mode this library does not know never.
struct VersionTwoMarkerRecord: Sendable, Equatable {
    enum Mode: Sendable, Equatable {
        case lease(duration: Duration)
        case exclusive
        case unknown
    }

    var pid: Int32
    var host: String
    var mode: Mode
    var startToken: StartToken?
    /// `duration=` as a number, as Python compares it.
    var durationSeconds: Double?

    /// Parses a `filelock/2` marker; `nil` for anything else, or for one Python would not accept
    /// (then the legacy rules judge it, as in Python).
    init?(parsing bytes: [UInt8]) {
        guard let lines = MarkerRecord.lines(of: bytes), lines.first == "filelock/2" else { return nil }
        var fields: [Substring: Substring] = [:]
        for line in lines.dropFirst() {
            guard let equals = line.firstIndex(of: "=") else { return nil }
            fields[line[..<equals]] = line[line.index(after: equals)...]
        }
        guard let modeText = fields["mode"], let host = fields["host"], !host.isEmpty, let pidText = fields["pid"],
            !pidText.isEmpty, pidText.utf8.allSatisfy({ $0 >= 48 && $0 <= 57 }), let pid = Int32(pidText), pid >= 1
        else { return nil }
        self.pid = pid
        self.host = String(host)
        if let start = fields["start"] {
            guard !start.isEmpty, start.utf8.allSatisfy({ $0 >= 48 && $0 <= 57 }) else { return nil }
            startToken = StartToken(decimal: start) ?? StartToken(bootHigh: .max, bootLow: .max, startTime: .max)
        }
        var duration: Double?
        if let text = fields["duration"] {
            guard Self.isDurationText(text), let value = Double(text) else { return nil }
            duration = value
        }
        durationSeconds = duration
        switch modeText {
        case "lease":
            guard let token = fields["token"], !token.isEmpty, let duration, duration.isFinite, duration > 0,
                let leaseDuration = try? FileLock.timeout(seconds: duration, path: "")
            else { return nil }
            mode = .lease(duration: leaseDuration)
        case "exclusive": mode = .exclusive
        default: mode = .unknown
        }
    }

    /// Whether its holder is provably gone: this host, and its process is gone or its pid now
    /// names a newer process.
    var ownerIsGone: Bool {
        guard host == ProcessIdentity.hostName else { return false }
        guard ProcessIdentity.isAlive(pid) else { return true }
        guard let recorded = startToken, let current = ProcessIdentity.startToken(of: pid) else { return false }
        return !current.isSameStart(as: recorded)
    }

    /// Python's `[0-9]+(\.[0-9]+)?(e[+-][0-9]+)?`.
    private static func isDurationText(_ text: Substring) -> Bool {
        var rest = text.utf8[...]
        func digits() -> Bool {
            let count = rest.prefix { $0 >= 48 && $0 <= 57 }.count
            rest = rest.dropFirst(count)
            return count > 0
        }
        guard digits() else { return false }
        if rest.first == UInt8(ascii: ".") {
            rest = rest.dropFirst()
            guard digits() else { return false }
        }
        if rest.first == UInt8(ascii: "e") {
            rest = rest.dropFirst()
            guard let sign = rest.first, sign == UInt8(ascii: "+") || sign == UInt8(ascii: "-") else { return false }
            rest = rest.dropFirst()
            guard digits() else { return false }
        }
        return rest.isEmpty
    }
}

extension Character {
    /// The separators of Python's `str.splitlines`.
    fileprivate var isLineSeparator: Bool {
        switch self {
        case "\n", "\r", "\r\n", "\u{0B}", "\u{0C}", "\u{1C}", "\u{1D}", "\u{1E}", "\u{85}", "\u{2028}", "\u{2029}":
            true
        default: false
        }
    }
}

extension StringProtocol {
    fileprivate func trimmingWhitespace() -> Substring {
        var text = Substring(self)
        while let first = text.first, first.isWhitespace { text = text.dropFirst() }
        while let last = text.last, last.isWhitespace { text = text.dropLast() }
        return text
    }
}

/// The encoded record of this process, cached: formatting the start token costs more than the
/// system calls of an acquisition. Keyed by fork generation, so a forked child makes its own.
final class OwnRecordCache: Sendable {
    static let shared = OwnRecordCache()

    private let cache = Mutex<(generation: Int, bytes: [UInt8])?>(nil)

    var encoded: [UInt8] {
        let generation = ForkGeneration.current
        if let cached = cache.withLock({ $0 }), cached.generation == generation { return cached.bytes }
        let made = MarkerRecord.current.encoded
        cache.withLock { $0 = (generation, made) }
        return made
    }
}
