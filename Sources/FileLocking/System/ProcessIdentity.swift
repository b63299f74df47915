#if canImport(Glibc)
    import Glibc
#elseif canImport(Musl)
    import Musl
#elseif canImport(Darwin)
    import Darwin
#endif

/// When a process started, as Python `filelock` records it in soft-lock markers so that a
/// recycled pid is recognised: the boot id (128 bits) above the start time in clock ticks since
/// boot (64 bits), written as one decimal number. A boot id of zero means "unknown boot".
struct StartToken: Sendable, Hashable {
    var bootHigh: UInt64
    var bootLow: UInt64
    var startTime: UInt64

    /// Whether two tokens name the same process start. When either side could not read the boot
    /// id, only the start times are compared (as Python `filelock` does).
    func isSameStart(as other: StartToken) -> Bool {
        if self == other { return true }
        let eitherBootUnknown = (bootHigh == 0 && bootLow == 0) || (other.bootHigh == 0 && other.bootLow == 0)
        return eitherBootUnknown && startTime == other.startTime
    }

    /// The decimal text of `boot << 64 | startTime`.
    var decimal: String {
        // Six 32-bit limbs, most significant first; repeated division by 10^9.
        var limbs: [UInt64] = [
            bootHigh >> 32, bootHigh & 0xffff_ffff, bootLow >> 32, bootLow & 0xffff_ffff,
            startTime >> 32, startTime & 0xffff_ffff,
        ]
        var chunks: [UInt64] = []
        while limbs.contains(where: { $0 != 0 }) {
            var remainder: UInt64 = 0
            for index in limbs.indices {
                let value = remainder << 32 | limbs[index]
                limbs[index] = value / 1_000_000_000
                remainder = value % 1_000_000_000
            }
            chunks.append(remainder)
        }
        guard let last = chunks.popLast() else { return "0" }
        var text = String(last)
        for chunk in chunks.reversed() {
            let digits = String(chunk)
            text += String(repeating: "0", count: 9 - digits.count) + digits
        }
        return text
    }

    /// Parses the decimal text; `nil` when it is not digits or needs more than 192 bits.
    init?(decimal text: Substring) {
        guard !text.isEmpty, text.utf8.allSatisfy({ $0 >= 48 && $0 <= 57 }) else { return nil }
        var limbs: [UInt64] = [0, 0, 0, 0, 0, 0]  // least significant first, 32 bits each
        for digit in text.utf8 {
            var carry = UInt64(digit - 48)
            for index in limbs.indices {
                let value = limbs[index] * 10 + carry
                limbs[index] = value & 0xffff_ffff
                carry = value >> 32
            }
            if carry != 0 { return nil }
        }
        startTime = limbs[1] << 32 | limbs[0]
        bootLow = limbs[3] << 32 | limbs[2]
        bootHigh = limbs[5] << 32 | limbs[4]
    }

    init(bootHigh: UInt64, bootLow: UInt64, startTime: UInt64) {
        self.bootHigh = bootHigh
        self.bootLow = bootLow
        self.startTime = startTime
    }
}

/// This host's and other processes' identity, in the form Python `filelock` writes and reads.
package enum ProcessIdentity {
    /// The host name as Python `filelock` writes it: the bytes of `gethostname()`, with every byte
    /// outside `!`...`~` (and `?` itself) written as `?xx` in hex, then `?pidns-<inode hex>` when
    /// this process is not in the initial pid namespace (a container may share the host's name).
    package static let hostName: String = {
        var buffer = [CChar](repeating: 0, count: 256)
        let raw = gethostname(&buffer, buffer.count - 1) == 0 ? buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) } : []
        var name = ""
        for byte in raw {
            if byte >= 0x21 && byte <= 0x7e && byte != UInt8(ascii: "?") {
                name.unicodeScalars.append(Unicode.Scalar(byte))
            } else {
                let hex = String(byte, radix: 16)
                name += "?" + (hex.count == 1 ? "0" + hex : hex)
            }
        }
        #if os(Linux)
            // 0xEFFFFFFC is the initial pid namespace's inode (PROC_PID_INIT_INO).
            if case .success(let namespace) = System.stat("/proc/self/ns/pid"), namespace.inode != 0xEFFF_FFFC {
                name += "?pidns-" + String(namespace.inode, radix: 16)
            }
        #endif
        return name.isEmpty ? "?" : name
    }()

    /// A process's command line as `ps -o args` shows it (arguments joined by spaces, bytes that
    /// are not UTF-8 replaced), at most `maximumCommandLength` characters; `nil` where it cannot be
    /// read (not Linux, a process gone, a kernel thread, another user's process under `hidepid`).
    static func commandLine(of pid: Int32) -> String? {
        #if os(Linux)
            guard pid > 0, case .success(let bytes) = System.readWholeFile("/proc/\(pid)/cmdline"), !bytes.isEmpty
            else { return nil }
            return commandLine(fromProcCmdline: bytes)
        #else
            return nil
        #endif
    }

    static let maximumCommandLength = 200

    /// The text of a `/proc/PID/cmdline` file: NUL-separated arguments, the last often NUL-ended.
    static func commandLine(fromProcCmdline bytes: [UInt8]) -> String? {
        var trimmed = bytes[...]
        while trimmed.last == 0 { trimmed = trimmed.dropLast() }
        guard !trimmed.isEmpty else { return nil }
        // Arguments are anyone's bytes: control characters (a newline, an escape sequence) would
        // break or forge the message they end up in, so they are written as `\xNN`, and bytes
        // that are not UTF-8 as paths are (`CPath.display`).
        var text = ""
        for character in CPath.display(trimmed.map { $0 == 0 ? UInt8(ascii: " ") : $0 }).unicodeScalars {
            if character.value < 0x20 || character.value == 0x7F {
                let digits = String(character.value, radix: 16)
                text += "\\x" + (digits.count == 1 ? "0" : "") + digits
            } else {
                text.unicodeScalars.append(character)
            }
        }
        guard text.count > maximumCommandLength else { return text }
        return String(text.prefix(maximumCommandLength - 3)) + "..."
    }

    /// Whether a process exists: `kill(pid, 0)` fails with `ESRCH` only when it does not.
    /// `EPERM` (another user's process) means it exists.
    static func isAlive(_ pid: Int32) -> Bool {
        System.processExists(pid)
    }

    /// The start token of a process on this host; `nil` where start times are not comparable
    /// (not Linux, a nested pid namespace, a shifted time namespace, an unreadable `/proc`).
    static func startToken(of pid: Int32) -> StartToken? {
        #if os(Linux)
            guard startTimesAreComparable, let startTime = startTime(of: pid) else { return nil }
            return StartToken(bootHigh: bootID.high, bootLow: bootID.low, startTime: startTime)
        #else
            return nil
        #endif
    }

    /// This process's start token (read anew: a forked child has its own).
    static var ownStartToken: StartToken? { startToken(of: System.processID) }

    #if os(Linux)
        /// Field 22 of `/proc/PID/stat` (counted after the command name's last `)`).
        static func startTime(of pid: Int32) -> UInt64? {
            guard case .success(let bytes) = System.readWholeFile("/proc/\(pid)/stat"),
                let close = bytes.lastIndex(of: UInt8(ascii: ")"))
            else { return nil }
            let fields = bytes[(close + 1)...].split(whereSeparator: { $0 == 32 || $0 == 10 })
            guard fields.count > 19 else { return nil }
            return UInt64(String(decoding: fields[19], as: UTF8.self))
        }

        /// `/proc/sys/kernel/random/boot_id` as a 128-bit number; zero when it cannot be trusted
        /// (unreadable, or a file mounted over the procfs one).
        static let bootID: (high: UInt64, low: UInt64) = {
            let path = "/proc/sys/kernel/random/boot_id"
            guard case .success(let file) = System.stat(path), case .success(let proc) = System.stat("/proc"),
                file.device == proc.device
            else { return (0, 0) }
            if case .success(let mounts) = System.readWholeFile("/proc/self/mountinfo"),
                mounts.split(separator: 10).contains(where: { line in
                    let fields = line.split(separator: 32)
                    return fields.count > 4 && fields[4].elementsEqual(path.utf8)
                })
            {
                return (0, 0)
            }
            guard case .success(let bytes) = System.readWholeFile(path) else { return (0, 0) }
            let hex = String(decoding: bytes, as: UTF8.self).filter { $0.isHexDigit }
            guard hex.count == 32, let high = UInt64(hex.prefix(16), radix: 16), let low = UInt64(hex.suffix(16), radix: 16)
            else { return (0, 0) }
            return (high, low)
        }()

        /// Start times mean the same thing to us and to other processes of this host only when
        /// `/proc` numbers tasks as we do (no nested pid namespace) and boot time is not shifted.
        static let startTimesAreComparable: Bool = {
            guard case .success(let status) = System.readWholeFile("/proc/self/status") else { return false }
            for line in status.split(separator: 10) where line.starts(with: "NSpid:".utf8) {
                if line.split(whereSeparator: { $0 == 32 || $0 == 9 }).count != 2 { return false }
            }
            if case .success(let offsets) = System.readWholeFile("/proc/self/timens_offsets") {
                for line in offsets.split(separator: 10) {
                    let fields = line.split(separator: 32).map { String(decoding: $0, as: UTF8.self) }
                    if fields.first == "boottime" || fields.first == "7" {
                        if fields.dropFirst() != ["0", "0"] { return false }
                    }
                }
            }
            return true
        }()
    #endif
}
