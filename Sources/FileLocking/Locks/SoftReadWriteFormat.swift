/// The records of the `filelock-rw/1` protocol, byte for byte as Python `filelock` 4.2 and 4.3
/// write and read them (its `SoftReadWriteLock`), so that both share one lock.
///
/// ```
/// <lock>.rw/gen/00000000000000000007   a snapshot: "filelock-rw/1\ngeneration=7\n[writer=T\n][reader=T\n...]"
/// <lock>.rw/gen/epoch                  "<token>\n": names this log (a wiped log gets a new one)
/// <lock>.rw/gen/HEAD                   epoch line + the newest snapshot: a hint, never trusted alone
/// <lock>.rw/gen/.commit-<token>        a temporary, linked to the next generation's name
/// <lock>.rw/holders/<token>            a participant's record, its nonce rewritten every heartbeat
/// ```
enum SoftReadWriteFormat {
    static let header = "filelock-rw/1"
    /// The largest record read (Python's limit): a bigger file is malformed.
    static let maximumRecordSize = 1 << 20
    /// Generations kept: a committer removes older ones.
    static let keptGenerations = 64
    /// A walk over generations stops this far (Python's bounds).
    static let probeReach: UInt64 = 128
    static let pruneBatch = 256
    static let listingLimit = 65536
    static let commitPrefix = ".commit-"

    /// The name of generation `number`: 20 decimal digits.
    static func generationName(_ number: UInt64) -> String {
        String(unsafeUninitializedCapacity: 20) { buffer in
            var rest = number
            for index in (0..<20).reversed() {
                buffer[index] = 48 + UInt8(rest % 10)
                rest /= 10
            }
            return 20
        }
    }

    /// The number a generation file name stands for; `nil` for every other name.
    static func generationNumber(ofName name: String) -> UInt64? {
        guard name.utf8.count == 20, name.utf8.allSatisfy({ $0 >= 48 && $0 <= 57 }) else { return nil }
        return UInt64(name)
    }
}

/// A participant's identity: 32 lowercase hex digits of 16 random bytes.
struct ParticipantToken: Hashable, Comparable, Sendable, CustomStringConvertible {
    let text: String

    /// A participant's token (and a log's epoch): from the system's generator, as Python's
    /// `secrets.token_hex(16)`.
    init() {
        let (high, low) = System.random128()
        self.init(high: high, low: low)
    }

    /// A token for what must be unique, not secret (a nonce, a temporary's name; the log's
    /// folders are 0700): from `QuickRandom`, seeded once per process from the system and mixed
    /// with the process id, without a system call. Distinct within the process (SplitMix64 is a
    /// bijection of a counter), and across processes as unlikely to repeat as 64-bit seeds.
    static func unique() -> ParticipantToken {
        ParticipantToken(high: QuickRandom.next(), low: QuickRandom.next())
    }

    private init(high: UInt64, low: UInt64) {
        text = String(unsafeUninitializedCapacity: 32) { buffer in
            func put(_ value: UInt64, at start: Int) {
                for digit in 0..<16 {
                    let nibble = UInt8(truncatingIfNeeded: value >> UInt64(60 - 4 * digit)) & 0xf
                    buffer[start + digit] = nibble < 10 ? 48 + nibble : 87 + nibble
                }
            }
            put(high, at: 0)
            put(low, at: 16)
            return 32
        }
    }

    init?(_ text: Substring) {
        guard Self.isToken(text.utf8) else { return nil }
        self.text = String(text)
    }

    static func isToken(_ bytes: some Collection<UInt8>) -> Bool {
        bytes.count == 32 && bytes.allSatisfy { ($0 >= 48 && $0 <= 57) || ($0 >= 97 && $0 <= 102) }
    }

    var description: String { text }

    static func < (lhs: Self, rhs: Self) -> Bool { lhs.text < rhs.text }
}

/// One generation of the log: who is in (a writer, holding or waiting, and the readers).
struct SoftReadWriteSnapshot: Equatable, Sendable {
    var generation: UInt64
    var writer: ParticipantToken?
    var readers: Set<ParticipantToken>

    static func empty(at generation: UInt64) -> Self { Self(generation: generation, writer: nil, readers: []) }

    var members: Set<ParticipantToken> {
        var all = readers
        if let writer { all.insert(writer) }
        return all
    }

    /// The bytes Python writes: header, generation, the writer, the readers sorted.
    var encoded: [UInt8] {
        var text = "\(SoftReadWriteFormat.header)\ngeneration=\(generation)\n"
        if let writer { text += "writer=\(writer.text)\n" }
        for reader in readers.sorted() { text += "reader=\(reader.text)\n" }
        return Array(text.utf8)
    }

    /// Parses a snapshot as Python does; `nil` when malformed.
    init?(parsing bytes: some Collection<UInt8>) {
        guard !bytes.isEmpty, bytes.count <= SoftReadWriteFormat.maximumRecordSize, bytes.allSatisfy({ $0 < 0x80 })
        else { return nil }
        let lines = bytes.split(separator: 10, omittingEmptySubsequences: false)
        guard lines.count >= 2, lines.last?.isEmpty == true,
            lines.first.map({ String(decoding: $0, as: UTF8.self) }) == SoftReadWriteFormat.header
        else { return nil }
        var generation: UInt64?
        var writer: ParticipantToken?
        var readers: Set<ParticipantToken> = []
        for raw in lines.dropFirst().dropLast() {
            let line = String(decoding: raw, as: UTF8.self)
            guard let equals = line.firstIndex(of: "=") else { return nil }
            let key = line[..<equals]
            let value = line[line.index(after: equals)...]
            switch key {
            case "generation":
                guard generation == nil, let number = Self.canonicalNumber(value) else { return nil }
                generation = number
            case "writer":
                guard writer == nil, let token = ParticipantToken(value) else { return nil }
                writer = token
            case "reader":
                guard let token = ParticipantToken(value), readers.insert(token).inserted else { return nil }
            default:
                return nil
            }
        }
        guard let generation else { return nil }
        self.init(generation: generation, writer: writer, readers: readers)
    }

    init(generation: UInt64, writer: ParticipantToken?, readers: Set<ParticipantToken>) {
        self.generation = generation
        self.writer = writer
        self.readers = readers
    }

    /// 1 to 20 digits, no leading zero (Python's `str(int(v)) == v`).
    private static func canonicalNumber(_ text: Substring) -> UInt64? {
        let utf8 = text.utf8
        guard (1...20).contains(utf8.count), utf8.allSatisfy({ $0 >= 48 && $0 <= 57 }),
            utf8.count == 1 || utf8.first != 48
        else { return nil }
        return UInt64(text)
    }
}

/// A participant's record in `holders/<token>`: fixed fields, the nonce new at every refresh.
struct SoftReadWriteHolderRecord: Equatable, Sendable {
    var token: ParticipantToken
    var pid: Int32
    var host: String
    /// The writer's stale threshold in seconds: an observer waits at least this long.
    var lease: Double
    var nonce: ParticipantToken

    /// The first two lines, which an overwrite checks before writing.
    static func header(of token: ParticipantToken) -> [UInt8] {
        Array("\(SoftReadWriteFormat.header)\ntoken=\(token.text)\n".utf8)
    }

    var encoded: [UInt8] {
        Array(
            "\(SoftReadWriteFormat.header)\ntoken=\(token.text)\npid=\(pid)\nhost=\(host)\nlease=\(lease.description)\nnonce=\(nonce.text)\n"
                .utf8)
    }

    /// The fields an observer shows (pid, host, lease); the rest is as written by whoever wrote it.
    struct Seen: Equatable, Sendable {
        var pid: Int32?
        var host: String?
        var lease: Duration?
    }

    /// Reads what `filelock status` shows and what an observer honours: the `lease=` value counts
    /// only in Python's exact spelling of a positive finite number (`90.0`, not `90`).
    static func fields(of bytes: [UInt8]) -> Seen {
        var seen = Seen()
        let text = String(decoding: bytes.prefix(4096), as: UTF8.self)
        var isLeaseRead = false
        for line in text.split(separator: "\n", omittingEmptySubsequences: false) {
            if !isLeaseRead, line.hasPrefix("lease=") {
                // Only the first `lease=` line counts, as in Python; any finite value is valid
                // there (1e+21 too): saturated, never trapping.
                isLeaseRead = true
                let value = line.dropFirst(6)
                if let seconds = Double(value), seconds.isFinite, seconds > 0, seconds.description == value {
                    seen.lease = (try? FileLock.timeout(seconds: seconds, path: "")) ?? .seconds(Int64.max)
                }
            } else if seen.pid == nil, line.hasPrefix("pid=") {
                seen.pid = Int32(line.dropFirst(4))
            } else if seen.host == nil, line.hasPrefix("host=") {
                seen.host = String(line.dropFirst(5))
            }
        }
        return seen
    }
}

extension Duration {
    /// The duration in seconds as a `Double`.
    var inSeconds: Double {
        let (whole, attoseconds) = components
        return Double(whole) + Double(attoseconds) / 1e18
    }
}
