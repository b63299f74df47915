#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif
@testable import FileLocking
import PropertyBased
import Synchronization
import SystemPackage
import Testing

// Random values at the edges of their types, through every public entry point: none may trap (a
// trap kills the test process, so a passing run is the proof), and every error is a
// `FileLockError` with a code that fits what went wrong and the path it was about.
//
// Nothing here waits: a wait for a held lock is given a cancel check that stops it at once, or a
// zero timeout. Each case works in a folder of its own under a fresh temporary folder, at least
// 16 levels deep, so that no generated `..` reaches out of it.
//
// Checks inside the property closures bind values first and never write a closure inside
// #expect (Swift 6.3.1 miscompiles that, see errorThrown(by:)).

// MARK: Random values, weighted towards the edges

/// Integers: a quarter uniform over the whole range, a quarter small, half the edges
/// (`min`, `min + 1`, `-1`, `0`, `1`, `max - 1`, `max`).
func edgy<T: FixedWidthInteger>(_ type: T.Type, _ rng: inout some RandomNumberGenerator) -> T {
    switch Int.random(in: 0..<4, using: &rng) {
    case 0: return T.random(in: T.min...T.max, using: &rng)
    case 1: return T(clamping: Int.random(in: -4096...4096, using: &rng))
    default:
        let edges: [T] = [.min, .min &+ 1, T(truncatingIfNeeded: -1), 0, 1, .max &- 1, .max]
        return edges[Int.random(in: 0..<edges.count, using: &rng)]
    }
}

/// Durations: zero, sub-nanosecond, milliseconds either side of zero, anything `Duration`'s
/// components can hold, and up to 18 times that (beyond what `Duration.components` can return).
func edgyDuration(_ rng: inout some RandomNumberGenerator) -> Duration {
    switch Int.random(in: 0..<6, using: &rng) {
    case 0: return .zero
    case 1: return Duration(secondsComponent: 0, attosecondsComponent: Int64.random(in: -999_999_999...999_999_999, using: &rng))
    case 2: return .nanoseconds(Int64.random(in: -20_000_000...20_000_000, using: &rng))
    case 3:
        return Duration(secondsComponent: edgy(Int64.self, &rng), attosecondsComponent: edgy(Int64.self, &rng))
    default:
        let base = Duration(secondsComponent: edgy(Int64.self, &rng), attosecondsComponent: edgy(Int64.self, &rng))
        return base * Int.random(in: -18...18, using: &rng)
    }
}

/// A path below `base`: up to 12 pieces from an alphabet of separators, dots, NUL, control
/// characters, spaces and non-ASCII letters; now and then a component longer than a filesystem
/// allows, or a whole path longer than `PATH_MAX`.
func edgyPathSuffix(_ rng: inout some RandomNumberGenerator) -> String {
    let pieces = ["a", "b", "lock", ".", "..", "/", "//", "\0", "\n", "\t", " ", "é", "🔒", "\u{7F}", "\\", "*", "-", "~", ".lock"]
    switch Int.random(in: 0..<12, using: &rng) {
    case 0: return String(repeating: "x", count: Int.random(in: 250...300, using: &rng))
    case 1: return Array(repeating: String(repeating: "y", count: 250), count: 18).joined(separator: "/")
    default:
        return (0..<Int.random(in: 0...12, using: &rng)).map { _ in pieces[Int.random(in: 0..<pieces.count, using: &rng)] }
            .joined()
    }
}

/// One case's random values, drawn with the property checker's seeded generator (so a failing
/// case is reproduced by the seed it reports).
struct EdgeCase: Sendable, CustomStringConvertible {
    var suffix: String
    var timeout: Duration?
    var otherTimeout: Duration?
    var pollInterval: Duration
    var lifetime: Duration?
    var filePermissions: UInt32?
    var isBlocking: Bool
    var isSingleton: Bool
    var readOnly: Bool
    var force: Bool
    var ranges: [ByteRange]
    var counts: [Int]
    var offsets: [Int64]
    var descriptor: Int32
    var seconds: Double
    var time: UnixTime
    var pid: Int32
    var errno: Int32

    static let generator = Generator<EdgeCase, Shrink.None<EdgeCase>> { rng in EdgeCase(&rng) }

    init(_ rng: inout any SeededRandomNumberGenerator) {
        suffix = edgyPathSuffix(&rng)
        timeout = Bool.random(using: &rng) ? edgyDuration(&rng) : nil
        otherTimeout = Bool.random(using: &rng) ? edgyDuration(&rng) : nil
        pollInterval = edgyDuration(&rng)
        lifetime = Bool.random(using: &rng) ? edgyDuration(&rng) : nil
        filePermissions = Bool.random(using: &rng) ? edgy(UInt32.self, &rng) : nil
        // Permission bits themselves, now and then (most edgy values are rejected).
        if Bool.random(using: &rng) { filePermissions = filePermissions.map { $0 & 0o7777 } }
        isBlocking = Bool.random(using: &rng)
        isSingleton = Bool.random(using: &rng)
        readOnly = Int.random(in: 0..<5, using: &rng) == 0
        force = Bool.random(using: &rng)
        ranges = (0..<6).map { _ in ByteRange(start: edgy(Int64.self, &rng), length: edgy(Int64.self, &rng)) }
        // Valid ranges now and then, so that locking really happens.
        for index in ranges.indices where Bool.random(using: &rng) {
            ranges[index] = ByteRange(
                start: Int64.random(in: 0...4096, using: &rng), length: Int64.random(in: 0...4096, using: &rng))
        }
        counts = (0..<3).map { _ in edgy(Int.self, &rng) }
        offsets = (0..<4).map { _ in edgy(Int64.self, &rng) }
        descriptor = edgy(Int32.self, &rng)
        switch Int.random(in: 0..<4, using: &rng) {
        case 0: seconds = [.nan, .infinity, -.infinity, 0, -0.0, .leastNonzeroMagnitude, .greatestFiniteMagnitude, 9.3e9][
            Int.random(in: 0..<8, using: &rng)]
        case 1: seconds = Double(bitPattern: UInt64.random(in: .min ... .max, using: &rng))
        default: seconds = Double.random(in: -1e20...1e20, using: &rng)
        }
        time = UnixTime(seconds: edgy(Int64.self, &rng), nanoseconds: edgy(Int32.self, &rng))
        pid = edgy(Int32.self, &rng)
        errno = edgy(Int32.self, &rng)
    }

    var description: String {
        "EdgeCase(suffix: \(suffix.debugDescription.prefix(80)), timeout: \(String(describing: timeout)), "
            + "otherTimeout: \(String(describing: otherTimeout)), pollInterval: \(pollInterval), "
            + "lifetime: \(String(describing: lifetime)), filePermissions: \(String(describing: filePermissions)), "
            + "isBlocking: \(isBlocking), isSingleton: \(isSingleton), readOnly: \(readOnly), force: \(force), "
            + "ranges: \(ranges), counts: \(counts), offsets: \(offsets), descriptor: \(descriptor), "
            + "seconds: \(seconds), time: (\(time.seconds), \(time.nanoseconds)), pid: \(pid), errno: \(errno))"
    }
}

// MARK: Checking what was thrown

/// Records an issue unless `error` is nil or a `FileLockError` whose code is one of `allowed`
/// and whose path is `path`.
func checkThrown(
    _ error: (any Error)?, allowed: Set<FileLockError.Code>, path: String, _ what: String,
    sourceLocation: SourceLocation = #_sourceLocation
) {
    guard let error else { return }
    guard let failure = error as? FileLockError else {
        Issue.record("\(what) threw \(type(of: error)), not a FileLockError: \(error)", sourceLocation: sourceLocation)
        return
    }
    let isAllowed = allowed.contains(failure.code)
    #expect(isAllowed, "\(what): code \(failure.code) for \(failure.message)", sourceLocation: sourceLocation)
    // The path as given; a NUL byte (refused) shown escaped, never raw.
    let shown = path.unicodeScalars.map { $0 == "\0" ? "\\x00" : String($0) }.joined()
    #expect(failure.path == shown, "\(what): \(failure.message)", sourceLocation: sourceLocation)
    #expect(!failure.message.utf8.contains(0), "\(what): a raw NUL in the message", sourceLocation: sourceLocation)
    #expect(!failure.message.isEmpty, sourceLocation: sourceLocation)
}

/// What a bad path, a bad setting or a stopped wait may say.
let pathAndSettingCodes: Set<FileLockError.Code> = [
    .invalidPath, .isDirectory, .nameTooLong, .invalidConfiguration, .invalidTimeout,
]
let waitCodes: Set<FileLockError.Code> = [.cancelled, .timedOut, .invalidTimeout, .invalidConfiguration]

// MARK: The properties

@Suite("Edge values never trap")
struct NeverTrapsPropertyTests {
    let folder: TemporaryFolder
    init() throws { folder = try TemporaryFolder() }

    private static let caseNumber = Atomic<Int>(0)

    /// A fresh folder for one case, 16 levels below the test's folder (not yet created: the
    /// locks create what they need).
    func caseBase() -> String {
        let number = Self.caseNumber.add(1, ordering: .relaxed).newValue
        return folder.path + "/case\(number)" + String(repeating: "/d", count: 16) + "/"
    }

    @Test func valuesAndDescriptions() async {
        await propertyCheck(count: 1000, input: EdgeCase.generator) { value in
            // Seconds from user input.
            let seconds = errorThrown { _ = try FileLock.timeout(seconds: value.seconds, path: "x.lock") }
            checkThrown(seconds, allowed: [.invalidTimeout], path: "x.lock", "timeout(seconds: \(value.seconds))")
            let converted = try? FileLock.timeout(seconds: value.seconds, path: "x.lock")
            if let converted {
                #expect(converted >= .zero)
            }

            // Times, holders, ranges, errors: descriptions never trap.
            let time = value.time.description
            #expect(time.hasSuffix("Z"), "\(time)")
            let holder = LockHolder(
                pid: value.pid, host: value.suffix, since: value.time, isShared: value.force, looksStale: value.readOnly)
            #expect(holder.description.hasPrefix("pid "))
            for first in value.ranges {
                #expect(!first.description.isEmpty)
                for second in value.ranges {
                    let forwards = first.overlaps(second)
                    let backwards = second.overlaps(first)
                    #expect(forwards == backwards, "\(first) and \(second)")
                }
            }
            let error = FileLockError(
                .io, path: value.suffix, message: "m", holder: holder, waited: value.timeout, errno: value.errno)
            #expect(error.description == "m")

            // The duration arithmetic under every wait.
            for duration in [value.timeout, value.otherTimeout, value.lifetime, value.pollInterval].compactMap({ $0 }) {
                let nanoseconds = duration.totalNanoseconds
                #expect((duration < .zero) == (nanoseconds < 0) || nanoseconds == 0)
                #expect(!duration.formattedSeconds.isEmpty)
                let instant = MonotonicInstant(nanoseconds: UInt64(truncatingIfNeeded: value.offsets[0]))
                let later = instant.advanced(by: duration)
                #expect(later >= instant)
                #expect(later.duration(since: instant) >= .zero)
                #expect(instant.duration(since: later) == .zero)
            }
        }
    }

    @Test func fileLockEntryPoints() async {
        await propertyCheck(count: 250, input: EdgeCase.generator) { value in
            let path = caseBase() + value.suffix
            let stopAtOnce: @Sendable () -> Bool = { true }
            do {
                let lock = try FileLock(
                    at: path, timeout: value.timeout, isBlocking: value.isBlocking, filePermissions: value.filePermissions,
                    isSingleton: value.isSingleton, pollInterval: value.pollInterval)
                _ = (lock.canonicalPath, lock.holders, lock.waiterCount, lock.defaultTimeout, lock.holder?.description)
                if try lock.tryAcquire() {
                    #expect(lock.isHeldByCaller)
                    // Another object of the same path waits for it: stopped at once, never for long.
                    let other = try FileLock(at: path, pollInterval: .milliseconds(1))
                    let waited = errorThrown { try other.acquire(timeout: value.otherTimeout, cancelCheck: stopAtOnce) }
                    checkThrown(waited, allowed: waitCodes, path: path, "a second FileLock's acquire")
                    lock.release(force: value.force)
                }
                let acquired = errorThrown { try lock.acquire(timeout: value.otherTimeout, cancelCheck: stopAtOnce) }
                checkThrown(acquired, allowed: waitCodes, path: path, "acquire(timeout: \(String(describing: value.otherTimeout)))")
                if acquired == nil { lock.release() }
            } catch {
                checkThrown(error, allowed: pathAndSettingCodes, path: path, "FileLock")
            }
        }
    }

    @Test func softFileLockEntryPoints() async {
        await propertyCheck(count: 250, input: EdgeCase.generator) { value in
            let path = caseBase() + value.suffix
            let stopAtOnce: @Sendable () -> Bool = { true }
            do {
                let lock = try SoftFileLock(
                    at: path, timeout: value.timeout, isBlocking: value.isBlocking, filePermissions: value.filePermissions,
                    lifetime: value.lifetime, isSingleton: value.isSingleton, pollInterval: value.pollInterval)
                _ = (lock.canonicalPath, lock.lifetime, lock.isHeldByUs, lock.holder?.description)
                if try lock.tryAcquire() {
                    let other = try SoftFileLock(at: path, lifetime: value.lifetime, pollInterval: value.pollInterval)
                    // With a tiny lifetime the other object may break our marker and get the lock.
                    let waited = errorThrown { try other.acquire(timeout: value.otherTimeout, cancelCheck: stopAtOnce) }
                    checkThrown(waited, allowed: waitCodes, path: path, "a second SoftFileLock's acquire")
                    if waited == nil { other.release() }
                    _ = other.holder?.description
                    let broken = errorThrown { _ = try other.breakMarker(force: value.force) }
                    // Breaking writes a marker beside the old one under a longer name, which a name
                    // near the filesystem's limit cannot have.
                    checkThrown(broken, allowed: [.nameTooLong], path: path, "breakMarker")
                    lock.release(force: value.force)
                }
                let acquired = errorThrown { try lock.acquire(timeout: value.otherTimeout, cancelCheck: stopAtOnce) }
                checkThrown(acquired, allowed: waitCodes, path: path, "acquire(timeout: \(String(describing: value.otherTimeout)))")
                if acquired == nil { lock.release() }
            } catch {
                checkThrown(error, allowed: pathAndSettingCodes, path: path, "SoftFileLock")
            }
        }
    }

    @Test func byteRangeLockEntryPoints() async {
        await propertyCheck(count: 250, input: EdgeCase.generator) { value in
            let path = caseBase() + value.suffix
            // A missing file opened read-only is a plain "no such file"; an exclusive lock on a
            // read-only file is refused.
            let openCodes = pathAndSettingCodes.union(value.readOnly ? [.io] : [])
            let rangeCodes: Set<FileLockError.Code> = waitCodes.union(value.readOnly ? [.permissionDenied] : [])
            do {
                let file = try ByteRangeLock(
                    at: path, readOnly: value.readOnly, filePermissions: value.filePermissions,
                    pollInterval: value.pollInterval)
                exercise(file, value, path: path, rangeCodes: rangeCodes, fileCodes: [])
            } catch {
                checkThrown(error, allowed: openCodes, path: path, "ByteRangeLock(at:)")
            }

            // A descriptor that is no open file (negative, or far above any this process opened).
            if value.descriptor < 0 || value.descriptor > 1_000_000 {
                let descriptorPath = caseBase() + "descriptor.bin"
                do {
                    let file = try ByteRangeLock(descriptor: value.descriptor, path: descriptorPath, pollInterval: value.pollInterval)
                    // EBADF: "not open for this, or not an open descriptor at all".
                    exercise(
                        file, value, path: descriptorPath, rangeCodes: waitCodes.union([.permissionDenied]),
                        fileCodes: [.permissionDenied])
                } catch {
                    checkThrown(error, allowed: pathAndSettingCodes.union([.permissionDenied, .io]), path: descriptorPath, "descriptor")
                }
            }
        }
    }

    /// Every `ByteRangeLock` call with the case's ranges, counts and offsets. A second object holds
    /// one range, so some locks conflict: those are stopped by a cancel check or a zero timeout.
    func exercise(
        _ file: ByteRangeLock, _ value: EdgeCase, path: String, rangeCodes: Set<FileLockError.Code>,
        fileCodes: Set<FileLockError.Code>
    ) {
        let stopAtOnce: @Sendable () -> Bool = { true }
        let valid = value.ranges.first { $0.start >= 0 && $0.length >= 0 && !$0.start.addingReportingOverflow($0.length).overflow }
        let other = try? ByteRangeLock(at: path, readOnly: true)
        if let other, let valid { _ = try? other.tryLock(valid, mode: .shared) }

        for (index, range) in value.ranges.enumerated() {
            let mode: LockMode = index % 2 == 0 ? .exclusive : .shared
            let next = value.ranges[(index + 1) % value.ranges.count]
            let results: [(String, (any Error)?)] = [
                ("lock", errorThrown { try file.lock(range, mode: mode, timeout: value.timeout, cancelCheck: stopAtOnce) }),
                ("tryLock", errorThrown { _ = try file.tryLock(range, mode: mode) }),
                ("conflict", errorThrown { _ = try file.conflict(for: range, mode: mode)?.holder?.description }),
                ("unlock", errorThrown { try file.unlock(range) }),
                ("withLock", errorThrown {
                    try file.withLock(range, mode: mode, timeout: .zero) {
                        try file.withLock(next, mode: mode, timeout: .zero) {}
                    }
                }),
                ("lockf", errorThrown { _ = try file.lockf(.tryLock, length: range.length) }),
                ("lockf test", errorThrown { _ = try file.lockf(.test, length: range.start) }),
                ("lockf unlock", errorThrown { _ = try file.lockf(.unlock, length: range.length) }),
            ]
            for (what, error) in results {
                checkThrown(error, allowed: rangeCodes, path: path, "\(what)(\(range))")
            }
        }

        // Offsets: seeking anywhere is harmless; writes only where they fail (before 0, or ending
        // beyond Int64.max) or within the first 64 KiB, so that reading any count stays small.
        for offset in value.offsets {
            let seek = errorThrown { try file.seek(to: offset) }
            checkThrown(seek, allowed: fileCodes.union([.invalidConfiguration]), path: path, "seek(to: \(offset))")
            let offsetError = errorThrown { _ = try file.offset }
            checkThrown(offsetError, allowed: fileCodes, path: path, "offset")
            let bytes = [UInt8](repeating: 7, count: Int(offset & 0xF))
            if offset < 0 || offset < 65_536 || offset.addingReportingOverflow(Int64(bytes.count)).overflow {
                let write = errorThrown { try file.write(bytes, at: offset) }
                let writeCodes = fileCodes.union([.invalidConfiguration]).union(value.readOnly ? [.permissionDenied] : [])
                checkThrown(write, allowed: writeCodes, path: path, "write at \(offset)")
            }
            for count in value.counts {
                let read = errorThrown { _ = try file.read(count: count, at: offset) }
                checkThrown(read, allowed: fileCodes.union([.invalidConfiguration]), path: path, "read(count: \(count), at: \(offset))")
            }
        }
        if let other, let valid { try? other.unlock(valid) }
    }
}

// MARK: Paths of any bytes

/// Up to 12 pieces of bytes: separators, dots, letters, bytes that are no UTF-8 (lone
/// continuation bytes, truncated sequences, 0xFE/0xFF), now and then a long component.
func edgyPathBytes(_ rng: inout some RandomNumberGenerator) -> [UInt8] {
    let pieces: [[UInt8]] = [
        Array("a".utf8), Array(".".utf8), Array("..".utf8), Array("/".utf8), Array("lock".utf8), [0xFF], [0xFE],
        [0x80], [0xC3], [0xE2, 0x82], [0xF0, 0x9F, 0x94], Array("é".utf8), [0x01], [0x1B], Array("\\x".utf8),
    ]
    if Int.random(in: 0..<10, using: &rng) == 0 { return [UInt8](repeating: 0xFF, count: Int.random(in: 250...300, using: &rng)) }
    return (0..<Int.random(in: 1...12, using: &rng)).flatMap { _ in pieces[Int.random(in: 0..<pieces.count, using: &rng)] }
}

struct BytePathCase: Sendable, CustomStringConvertible {
    var suffix: [UInt8]
    static let generator = Generator<BytePathCase, Shrink.None<BytePathCase>> { rng in
        BytePathCase(suffix: edgyPathBytes(&rng))
    }
    var description: String { "BytePathCase(suffix: \(suffix))" }
}

extension NeverTrapsPropertyTests {
    /// Every kind, given a path of any bytes, locks exactly the file of those bytes (the kernel's
    /// reading of the path), or refuses it with a clear error naming the path as shown.
    @Test func bytePathsLockExactlyTheFileNamed() async {
        await propertyCheck(count: 200, input: BytePathCase.generator) { value in
            let given = Array(caseBase().utf8) + value.suffix
            let filePath = (given.map { CChar(bitPattern: $0) } + [0]).withUnsafeBufferPointer {
                FilePath(platformString: $0.baseAddress!)
            }
            // The path as the FilePath holds it (it drops trailing and repeated slashes).
            let cBytes = filePath.withPlatformString { pointer in
                Array(UnsafeBufferPointer(start: pointer, count: filePath.length + 1))
            }
            let shown = CPath.display(cBytes.dropLast().map { UInt8(bitPattern: $0) })
            // A `..` after a folder that did not exist is resolved by the lock without the folder
            // (it is never created), where the kernel needs it: look only at paths without `..`.
            let components = cBytes.dropLast().split(separator: CChar(bitPattern: UInt8(ascii: "/")))
            let hasParentStep = components.contains { $0.elementsEqual([46, 46]) }
            func exists() -> Bool {
                hasParentStep || cBytes.withUnsafeBufferPointer { access($0.baseAddress!, F_OK) == 0 }
            }
            do {
                let lock = try FileLock(at: filePath)
                if try lock.tryAcquire() {
                    let made = exists()
                    #expect(made, "FileLock made no file at the bytes given: \(shown)")
                    lock.release()
                }
            } catch {
                checkThrown(error, allowed: pathAndSettingCodes.union([.permissionDenied]), path: shown, "FileLock(FilePath)")
            }
            do {
                let soft = try SoftFileLock(at: filePath)
                if try soft.tryAcquire() {
                    let made = exists()
                    #expect(made, "SoftFileLock made no marker at the bytes given: \(shown)")
                    soft.release()
                    let gone = hasParentStep || !exists()
                    #expect(gone, "SoftFileLock left its marker: \(shown)")
                }
            } catch {
                checkThrown(error, allowed: pathAndSettingCodes.union([.permissionDenied]), path: shown, "SoftFileLock(FilePath)")
            }
            do {
                let records = try ByteRangeLock(at: filePath)
                let locked = try records.tryLock(ByteRange(start: 0, length: 1))
                #expect(locked)
                let made = exists()
                #expect(made, "ByteRangeLock opened no file at the bytes given: \(shown)")
            } catch {
                checkThrown(error, allowed: pathAndSettingCodes.union([.permissionDenied]), path: shown, "ByteRangeLock(FilePath)")
            }
        }
    }
}
