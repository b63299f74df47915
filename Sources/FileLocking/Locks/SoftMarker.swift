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
        guard !bytes.isEmpty, bytes.count <= Self.maximumSize, bytes.last == 10,
            let text = String(validating: bytes, as: UTF8.self)
        else { return nil }
        // As Python's str.strip().splitlines().
        let lines = text.trimmingWhitespace().split(omittingEmptySubsequences: false, whereSeparator: \.isLineSeparator)
        guard lines.count == 2 || lines.count == 3 else { return nil }
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

    init(pid: Int32, host: String, startToken: StartToken?) {
        self.pid = pid
        self.host = host
        self.startToken = startToken
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
