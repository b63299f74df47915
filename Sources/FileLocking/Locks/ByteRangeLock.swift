import Synchronization
/// A byte range of a file: `length` bytes from `start`; a length of 0 reaches to the end of the
/// file, however far it grows.
public struct ByteRange: Sendable, Hashable, CustomStringConvertible {
    /// The first byte's offset.
    public var start: Int64
    /// How many bytes; 0 means "to the end of the file, however it grows".
    public var length: Int64

    /// Creates a range.
    public init(start: Int64, length: Int64) {
        self.start = start
        self.length = length
    }

    /// The whole file, including bytes appended later.
    public static let wholeFile = ByteRange(start: 0, length: 0)

    /// `bytes 700-799`, `bytes 700-EOF`; never traps, even for a range no lock accepts (a negative
    /// length, or one that ends beyond `Int64.max`).
    public var description: String {
        guard length != 0 else { return "bytes \(start)-EOF" }
        guard length > 0 else { return "bytes \(start) with length \(length)" }
        let (end, overflow) = start.addingReportingOverflow(length - 1)
        return overflow ? "bytes \(start)-(beyond Int64.max)" : "bytes \(start)-\(end)"
    }
}

/// A lock on a byte range that another open file holds, as found by a test.
public struct RangeLockConflict: Sendable, Hashable {
    /// The range the other holder has locked (it overlaps the range tested).
    public var range: ByteRange
    /// Whether the other holder's lock is shared (a reader) or exclusive.
    public var mode: LockMode
    /// The holding process, where the kernel says (`nil` when it cannot be seen).
    public var holder: LockHolder?
}

/// The four commands of POSIX `lockf`, for code ported from C or Python's `os.lockf`.
public enum LockfCommand: Sendable {
    /// `F_LOCK`: lock exclusively, waiting as long as it takes.
    case lock
    /// `F_TLOCK`: lock exclusively if free now; `lockf` returns `false` otherwise.
    case tryLock
    /// `F_ULOCK`: unlock.
    case unlock
    /// `F_TEST`: whether another process (or open file) holds a lock there; `lockf` returns
    /// `false` when it does.
    case test
}

/// Record locks on one open file: lock a byte range, not the whole file, so that processes can
/// update different records of one file at once.
///
/// ```swift
/// let records = try ByteRangeLock(at: "/var/db/records.bin")
/// let record = ByteRange(start: 7 * 100, length: 100)
/// try records.withLock(record, timeout: .seconds(5)) {
///     var bytes = try records.read(count: 100, at: record.start)
///     bytes[0] &+= 1
///     try records.write(bytes, at: record.start)
/// }
/// ```
///
/// The object owns an open file; the locks belong to that **open file** (Linux open-file-
/// description locks, `F_OFD_SETLK`): closing some other descriptor of the same file does not
/// drop them (the classic POSIX `fcntl` trap), and two `ByteRangeLock` objects on one file exclude
/// each other even in one process, so threads should each use their own. They conflict with
/// `lockf`/`fcntl` locks of other processes on the same file, and not with `flock`. A child forked
/// without exec shares the object's open file, and so would share its parent's locks: there the
/// object's locking calls throw `.invalidConfiguration`; create a new `ByteRangeLock` in the child
/// (which then excludes the parent and is excluded by it, as with `lockf`).
///
/// Unlocking part of a locked range splits it, as the kernel does; locking a range that overlaps
/// one we hold converts and merges it. Locks are not counted: one unlock frees the range.
///
/// On macOS the locks are POSIX `fcntl` locks, which belong to the process: another
/// `ByteRangeLock` on the same file in the same process does not exclude this one, and closing
/// *any* descriptor of the file in this process drops all of the process's locks on it. Keep one
/// object per file per process there.
///
/// **Deadlocks**: Linux does not detect deadlocks between open-file-description locks (two holders
/// each waiting for the other's range wait forever), so pass a timeout when a caller may hold one
/// range while waiting for another; take ranges in one fixed order. POSIX locks (macOS) report
/// `EDEADLK`, thrown as `.wouldDeadlock`.
///
/// Waits are kernel waits (`F_OFD_SETLKW`): the waiter wakes when the range is freed, and timeouts,
/// cancel checks and task cancellation end the wait promptly, as for ``FileLock``.
public final class ByteRangeLock: Sendable {
    /// The file's path as given.
    public let path: String
    let file: RangeFile
    let engine: LockEngine<RangePrimitive>
    /// Ranges held by running `withLock` bodies: locks are not counted, so a nested overlapping
    /// `withLock` would unlock (or downgrade) part of the outer range when it ends.
    private let scopedRanges = Mutex<[ByteRange]>([])

    /// Opens (by default creating) the file at `path` for reading and writing.
    ///
    /// - Parameters:
    ///   - path: The file whose bytes are locked; the data file itself, or a separate lock file.
    ///   - readOnly: Open for reading only; then only shared (read) locks can be taken.
    ///   - filePermissions: Permission bits when the file is created (at most `0o7777`); `nil`
    ///     leaves them to the umask.
    ///   - pollInterval: How often a cancel check is asked while waiting.
    /// - Throws: `FileLockError` for a bad path, a symbolic link, no permission; `.invalidConfiguration`
    ///   for permissions that are not permission bits or a poll interval that is not positive
    ///   (checked before anything is created).
    public convenience init(
        at path: String, readOnly: Bool = false, filePermissions: UInt32? = nil,
        pollInterval: Duration = .milliseconds(50)
    ) throws {
        try self.init(
            lockPath: LockPath(path), readOnly: readOnly, filePermissions: filePermissions, pollInterval: pollInterval)
    }

    init(lockPath: LockPath, readOnly: Bool, filePermissions: UInt32?, pollInterval: Duration) throws {
        let path = lockPath.given
        _ = try LockConfiguration(
            defaultTimeout: nil, isBlocking: true, pollInterval: pollInterval, filePermissions: filePermissions
        ).validated(path: path)
        let flags = readOnly ? OpenFlags.readOnly : OpenFlags.readWriteCreate
        let opened: Int32
        switch try lockPath.open(flags: flags, mode: filePermissions ?? 0o666, creatingFolders: !readOnly) {
        case .success(let descriptor): opened = descriptor
        case .failure(.accessDenied) where !readOnly && System.isReadable(lockPath.absolute):
            // The file is there and readable, only not writable: say what needs writing.
            throw FileLockError(
                .permissionDenied, path: path,
                message: "permission denied opening '\(path)' for writing: an exclusive (write) range lock needs "
                    + "the file open for writing; take shared ranges only (ByteRangeLock(at:readOnly: true), "
                    + "filelock run -s), or give this user write access to the file",
                errno: Errno.accessDenied.rawValue)
        case .failure(let error): throw FileLockError.system(error, path: path, operation: "open")
        }
        self.path = path
        file = RangeFile(descriptor: opened, path: path, isOwned: true)
        engine = try ByteRangeLock.makeEngine(file: file, lockPath: lockPath, pollInterval: pollInterval)
    }

    /// Locks ranges of a file the caller opened; the caller keeps the descriptor and closes it
    /// (which drops the locks).
    public convenience init(descriptor: Int32, path: String, pollInterval: Duration = .milliseconds(50)) throws {
        try self.init(descriptor: descriptor, lockPath: LockPath(path), pollInterval: pollInterval)
    }

    init(descriptor: Int32, lockPath: LockPath, pollInterval: Duration) throws {
        path = lockPath.given
        file = RangeFile(descriptor: descriptor, path: path, isOwned: false)
        engine = try ByteRangeLock.makeEngine(file: file, lockPath: lockPath, pollInterval: pollInterval)
    }

    private static func makeEngine(
        file: RangeFile, lockPath: LockPath, pollInterval: Duration
    ) throws -> LockEngine<RangePrimitive> {
        let configuration = try LockConfiguration(
            defaultTimeout: nil, isBlocking: true, pollInterval: pollInterval, filePermissions: nil
        ).validated(path: lockPath.given)
        return LockEngine(
            primitive: RangePrimitive(file: file, path: lockPath.given), configuration: configuration,
            node: PathRegistry.node(for: lockPath.absolute))
    }

    /// The network or FUSE filesystem the file is on, or `nil` on a local filesystem (asked of the
    /// open file with `fstatfs` once, then kept). Record locks there may not exclude processes on
    /// other hosts (on FUSE, not even processes that use another mount of the file): see
    /// ``NetworkFilesystem``. The first lock on such a filesystem is also reported to
    /// ``FileLockWarnings/handler``.
    public var networkFilesystem: NetworkFilesystem? {
        engine.primitive.filesystem.filesystem(ofDescriptor: file.descriptor)
    }

    // MARK: Locking

    /// Locks `range`, waiting at most `timeout` for other holders to free it.
    ///
    /// - Parameters:
    ///   - range: The bytes; `.wholeFile` by default.
    ///   - mode: `.exclusive` (a writer) or `.shared` (readers share).
    ///   - timeout: `nil` waits forever, `.zero` tries once.
    ///   - cancelCheck: Asked at every poll interval while waiting; `true` ends the wait.
    /// - Throws: `FileLockError`: `.timedOut` (with the conflicting holder when known),
    ///   `.cancelled`, `.wouldDeadlock` (the kernel found a deadlock), `.notSupportedByFilesystem`.
    public func lock(
        _ range: ByteRange = .wholeFile, mode: LockMode = .exclusive, timeout: Duration? = nil,
        cancelCheck: (() -> Bool)? = nil
    ) throws {
        _ = try engine.obtain(try validated(range, mode), timeout: timeout, cancelCheck: cancelCheck)
    }

    /// Locks `range` from `async` code: the kernel wait runs on a thread of its own, and
    /// cancelling the task ends it with `CancellationError`.
    public func lock(_ range: ByteRange = .wholeFile, mode: LockMode = .exclusive, timeout: Duration? = nil) async throws {
        _ = try await engine.obtain(try validated(range, mode), timeout: timeout)
    }

    /// Locks `range` if no one else holds a conflicting lock now; never waits.
    public func tryLock(_ range: ByteRange = .wholeFile, mode: LockMode = .exclusive) throws -> Bool {
        try engine.tryObtain(try validated(range, mode)) != nil
    }

    /// Unlocks `range`. Unlocking the middle of a locked range leaves the two ends locked.
    public func unlock(_ range: ByteRange = .wholeFile) throws {
        let request = try validated(range, .shared)
        if case .failure(let error) = System.setRangeLock(
            try file.lockingDescriptor(), RangeLockRequest(kind: .unlock, start: request.range.start, length: request.range.length))
        {
            throw engine.primitive.error(error, operation: "unlock \(range) of")
        }
    }

    /// The lock another open file holds that would conflict with locking `range` in `mode` now,
    /// or `nil` when the range could be locked. (Our own locks never conflict.)
    ///
    /// Finding the holder of another process's open-file lock reads `/proc/PID/fdinfo` of every
    /// process this user may inspect, which takes milliseconds (more on a server with many open
    /// files); `lockf(.test)` skips it. (A timed-out `lock` spends at most
    /// a tenth of its timeout, between 2 and 300 ms, on the same look, so a short timeout ends
    /// about on time; its error then may not name the holder.)
    public func conflict(for range: ByteRange = .wholeFile, mode: LockMode = .exclusive) throws -> RangeLockConflict? {
        try conflict(for: range, mode: mode, identifyingHolder: true)
    }

    private func conflict(for range: ByteRange, mode: LockMode, identifyingHolder: Bool) throws -> RangeLockConflict? {
        try engine.primitive.conflict(for: try validated(range, mode), identifyingHolder: identifyingHolder)
    }

    /// Runs `body` while holding `range`; unlocks even when `body` throws.
    ///
    /// - Throws: `.invalidConfiguration` when `range` overlaps a range a running `withLock` of this
    ///   object holds: range locks are not counted, so the inner unlock would free part of the outer.
    @_disfavoredOverload
    public func withLock<Result>(
        _ range: ByteRange = .wholeFile, mode: LockMode = .exclusive, timeout: Duration? = nil,
        _ body: () throws -> Result
    ) throws -> Result {
        _ = try validated(range, mode)
        try enterScope(range)
        defer { leaveScope(range) }
        try lock(range, mode: mode, timeout: timeout)
        defer { try? unlock(range) }
        return try body()
    }

    /// Runs `body` while the current task holds `range`; unlocks even when `body` throws.
    nonisolated(nonsending) public func withLock<Result>(
        _ range: ByteRange = .wholeFile, mode: LockMode = .exclusive, timeout: Duration? = nil,
        _ body: nonisolated(nonsending) () async throws -> Result
    ) async throws -> Result {
        _ = try validated(range, mode)
        try enterScope(range)
        defer { leaveScope(range) }
        try await lock(range, mode: mode, timeout: timeout)
        defer { try? unlock(range) }
        return try await body()
    }

    private func enterScope(_ range: ByteRange) throws {
        let overlapping = scopedRanges.withLock { ranges -> ByteRange? in
            if let other = ranges.first(where: { $0.overlaps(range) }) { return other }
            ranges.append(range)
            return nil
        }
        if let overlapping {
            throw FileLockError(
                .invalidConfiguration, path: path,
                message: "withLock(\(range)) of '\(path)' overlaps \(overlapping), which a running withLock of the same "
                    + "ByteRangeLock holds; range locks are not counted, so the inner unlock would free part of the outer "
                    + "range: use non-overlapping ranges, or a second ByteRangeLock (which the first excludes)")
        }
    }

    private func leaveScope(_ range: ByteRange) {
        scopedRanges.withLock { ranges in
            if let index = ranges.firstIndex(of: range) { ranges.remove(at: index) }
        }
    }

    // MARK: lockf

    /// POSIX `lockf`: `length` bytes from the current offset (0: to the end of the file, however it
    /// grows; negative: the bytes before the offset), always exclusive.
    ///
    /// - Returns: `false` when `.tryLock` finds the range held, or `.test` finds it held by another
    ///   open file; otherwise `true`.
    @discardableResult
    public func lockf(_ command: LockfCommand, length: Int64 = 0) throws -> Bool {
        let here = try offset
        let range: ByteRange
        if length >= 0 {
            range = ByteRange(start: here, length: length)
        } else {
            guard here + length >= 0 else {
                throw FileLockError(
                    .invalidConfiguration, path: path,
                    message: "lockf length \(length) at offset \(here) of '\(path)' reaches before the start of the file")
            }
            range = ByteRange(start: here + length, length: -length)
        }
        switch command {
        case .lock: try lock(range)
        case .tryLock: return try tryLock(range)
        case .unlock: try unlock(range)
        // As glibc: F_TEST asks whether a *read* lock could be set, so only writers conflict.
        case .test: return try conflict(for: range, mode: .shared, identifyingHolder: false) == nil
        }
        return true
    }

    // MARK: Reading and writing

    /// The current file offset (where `lockf` ranges start).
    public var offset: Int64 {
        get throws {
            try System.seek(file.descriptor, to: 0, relativeToCurrent: true).mapError {
                engine.primitive.error($0, operation: "read the offset of")
            }.get()
        }
    }

    /// Moves the current file offset.
    ///
    /// - Throws: `.invalidConfiguration` for a negative offset, or one beyond the largest file the
    ///   filesystem holds.
    public func seek(to offset: Int64) throws {
        try checkOffset(offset, operation: "seek to")
        switch System.seek(file.descriptor, to: offset) {
        case .success: return
        case .failure(.invalidArgument):
            throw FileLockError(
                .invalidConfiguration, path: path,
                message: "cannot seek to offset \(offset) of '\(path)': it lies beyond the largest file this filesystem "
                    + "holds; seek to a smaller offset", errno: Errno.invalidArgument.rawValue)
        case .failure(let error): throw engine.primitive.error(error, operation: "seek in")
        }
    }

    /// Reads up to `count` bytes at `offset` (fewer at the end of the file, none beyond it).
    ///
    /// Memory grows with the bytes actually read, not with `count`, so `count: .max` reads the
    /// rest of the file.
    ///
    /// - Throws: `.invalidConfiguration` for a negative count or offset.
    public func read(count: Int, at offset: Int64) throws -> [UInt8] {
        try checkOffset(offset, operation: "read at")
        guard count >= 0 else {
            throw FileLockError(
                .invalidConfiguration, path: path,
                message: "cannot read \(count) bytes of '\(path)': the count must not be negative (0 reads nothing)")
        }
        // No byte lies beyond Int64.max, so at most that many remain from `offset`.
        var remaining = min(Int64(clamping: count), Int64.max - offset)
        var bytes: [UInt8] = []
        var position = offset
        while remaining > 0 {
            let chunk = try System.read(file.descriptor, count: Int(min(remaining, Self.readChunk)), at: position)
                .mapError { engine.primitive.error($0, operation: "read") }.get()
            if chunk.isEmpty { break }
            bytes += chunk
            remaining -= Int64(chunk.count)
            position += Int64(chunk.count)
        }
        return bytes
    }

    /// The most `read(count:at:)` asks the kernel for at once: its buffer is allocated up front.
    private static let readChunk: Int64 = 1 << 20

    /// Writes all of `bytes` at `offset`.
    ///
    /// - Throws: `.invalidConfiguration` for a negative offset or one where the bytes would end
    ///   beyond `Int64.max`.
    public func write(_ bytes: [UInt8], at offset: Int64) throws {
        try checkOffset(offset, operation: "write at")
        guard !offset.addingReportingOverflow(Int64(bytes.count)).overflow else {
            throw FileLockError(
                .invalidConfiguration, path: path,
                message: "cannot write \(bytes.count) bytes at offset \(offset) of '\(path)': they would end beyond the "
                    + "largest file offset (Int64.max); write at a smaller offset")
        }
        try System.write(file.descriptor, bytes, at: offset).mapError { engine.primitive.error($0, operation: "write") }.get()
    }

    private func checkOffset(_ offset: Int64, operation: String) throws {
        guard offset >= 0 else {
            throw FileLockError(
                .invalidConfiguration, path: path,
                message: "cannot \(operation) offset \(offset) of '\(path)': file offsets start at 0, so pass 0 or more")
        }
    }

    // MARK: Helpers

    private func validated(_ range: ByteRange, _ mode: LockMode) throws -> LockRequest {
        guard range.start >= 0, range.length >= 0, !range.start.addingReportingOverflow(range.length).overflow else {
            throw FileLockError(
                .invalidConfiguration, path: path,
                message: "invalid byte range start \(range.start), length \(range.length) for '\(path)': the start "
                    + "and length must not be negative and must end within Int64 (length 0 means to the end of the file)")
        }
        return LockRequest(mode, range: range)
    }
}

/// `fcntl` record locks on one open file: the primitive behind `ByteRangeLock`. Its attempts and
/// holds are the request itself (the kernel keeps the locks of the open file, uncounted).
struct RangePrimitive: LockPrimitive {
    let file: RangeFile
    let path: String
    /// Whether the file is on a network or FUSE filesystem (looked at once, reported once).
    let filesystem = NetworkFilesystemCheck(lockKind: "ByteRangeLock")
    var waitStrategy: WaitStrategy { .kernel }
    /// `fcntl(F_OFD_SETLK)` on an open descriptor returns at once.
    var triesWithoutBlocking: Bool { true }

    /// The first lock of the object also looks at the file's filesystem (one `fstatfs`).
    func begin(_ request: LockRequest) throws -> LockRequest {
        filesystem.noteUse(of: file.descriptor, device: nil, path: path)
        return request
    }

    private func raw(_ request: LockRequest) -> RangeLockRequest {
        RangeLockRequest(
            kind: request.mode == .exclusive ? .write : .read, start: request.range.start, length: request.range.length)
    }

    func tryOnce(_ attempt: LockRequest, _ request: LockRequest) throws -> AttemptOutcome<LockRequest> {
        switch System.setRangeLock(try file.lockingDescriptor(), raw(request)) {
        case .success(true): return .acquired(request)
        case .success(false): return .busy
        case .failure(let error): throw self.error(error, operation: "lock \(request.range) of")
        }
    }

    func waitInKernel(_ attempt: LockRequest, _ request: LockRequest) throws -> KernelWaitEnd {
        switch System.setRangeLockWaitingOnce(try file.lockingDescriptor(), raw(request)) {
        case .success: return .locked
        case .failure(.interrupted): return .interrupted
        case .failure(let error): throw self.error(error, operation: "lock \(request.range) of")
        }
    }

    /// Nothing to check: the range is locked on our open file.
    func confirm(_ attempt: LockRequest, _ request: LockRequest) -> AttemptOutcome<LockRequest> { .acquired(request) }

    func abandon(_ attempt: LockRequest) {}

    func release(_ hold: LockRequest) {
        guard let descriptor = try? file.lockingDescriptor() else { return }
        _ = System.setRangeLock(
            descriptor, RangeLockRequest(kind: .unlock, start: hold.range.start, length: hold.range.length))
    }

    func forget(_ hold: LockRequest) {}

    /// Every process with a record lock on the file (Linux `/proc/locks`, open-file-description
    /// holders found through `/proc/PID/fdinfo`).
    func holders() -> [LockHolder] {
        guard case .success(let status) = System.fstat(file.descriptor) else { return [] }
        let own = System.processID
        let host = ProcessIdentity.hostName
        return ProcLocks.processesHoldingRecordLock(
            on: status, named: lookupName, start: 0, end: nil, deadline: nil
        ).holders
            .filter { $0.pid != own }
            .map { LockHolder(pid: $0.pid, host: host, isShared: !$0.isWrite) }
    }

    /// The holder of a lock in the way of `request`. A try (`.zero`) does not look through
    /// `/proc` for an open-file holder; a wait spends at most `holderLookupBudget` on it.
    func blockingHolder(for request: LockRequest, timeout: Duration?) -> LockHolder? {
        let deadline = MonotonicInstant.now.advanced(by: Self.holderLookupBudget(forTimeout: timeout))
        let found = try? conflict(for: request, identifyingHolder: timeout != .zero, lookupDeadline: deadline)
        return found?.holder
    }

    func subject(of request: LockRequest) -> String? { "\(request.range) of '\(path)'" }

    /// How long a timed-out `lock` may look for the holder to name in its error: a tenth of the
    /// timeout, at least 2 ms and at most 300 ms, so that a short timeout does not overshoot by the
    /// length of a scan of every process's open files.
    static func holderLookupBudget(forTimeout timeout: Duration?) -> Duration {
        guard let timeout, timeout > .zero else { return .milliseconds(2) }
        return min(max(timeout / 10, .milliseconds(2)), .milliseconds(300))
    }

    /// The lock of another open file that conflicts with `request`, or `nil`.
    func conflict(
        for request: LockRequest, identifyingHolder: Bool, lookupDeadline: MonotonicInstant? = nil
    ) throws -> RangeLockConflict? {
        let kind: RangeLockRequest.Kind = request.mode == .exclusive ? .write : .read
        let range = request.range
        switch System.conflictingRangeLock(
            try file.lockingDescriptor(), RangeLockRequest(kind: kind, start: range.start, length: range.length))
        {
        case .success(nil): return nil
        case .success(let found?):
            let foundRange = ByteRange(start: found.start, length: found.length)
            return RangeLockConflict(
                range: foundRange, mode: found.kind == .read ? .shared : .exclusive,
                holder: identifyingHolder ? holder(pid: found.pid, range: foundRange, deadline: lookupDeadline) : nil)
        case .failure(let error): throw self.error(error, operation: "test \(range) of")
        }
    }

    /// The holder of a conflicting lock: the kernel names POSIX holders; an open-file-description
    /// holder (pid -1) is found through `/proc/PID/fdinfo`, looking no longer than `deadline`.
    func holder(pid: Int32, range: ByteRange, deadline: MonotonicInstant? = nil) -> LockHolder? {
        if pid > 0 { return LockHolder(pid: pid, host: ProcessIdentity.hostName) }
        guard case .success(let status) = System.fstat(file.descriptor) else { return nil }
        // The kernel reports ranges within 0...Int64.max; checked anyway, a conflict is no reason to trap.
        guard range.start >= 0, range.length >= 0 else { return nil }
        let last = range.start.addingReportingOverflow(range.length - 1)
        let end = range.length == 0 || last.overflow ? nil : UInt64(last.partialValue)
        let own = System.processID
        let holders = ProcLocks.processesHoldingRecordLock(
            on: status, named: lookupName, start: UInt64(range.start), end: end, deadline: deadline
        ).holders
        // Another open file of this process may hold it too; prefer another process.
        let chosen = holders.first { $0.pid != own } ?? holders.first
        return chosen.map { LockHolder(pid: $0.pid, host: ProcessIdentity.hostName, isShared: !$0.isWrite) }
    }

    /// The file's name as `/proc/PID/fd` links end, for the holder look-up; `nil` (look at every
    /// descriptor) when the path as given is not its bytes (a name that is not UTF-8, shown with
    /// `\x` escapes).
    private var lookupName: [UInt8]? {
        path.contains("\\x") ? nil : CPath.lastComponent(of: Array(path.utf8))
    }

    func error(_ error: Errno, operation: String) -> FileLockError {
        switch error {
        case .deadlock:
            return FileLockError(
                .wouldDeadlock, path: path,
                message: "cannot \(operation) '\(path)': the kernel found a deadlock (this process waits for a "
                    + "process that waits for a range this process holds); release your ranges and retry, or take "
                    + "ranges in one fixed order", errno: error.rawValue)
        case .noLocks:
            return FileLockError(
                .notSupportedByFilesystem, path: path,
                message: "cannot \(operation) '\(path)': no locks available (the kernel's lock table is full, or an "
                    + "NFS mount without lock support); use SoftFileLock on such filesystems", errno: error.rawValue)
        case .staleFileHandle:
            // The object's one open file is gone on the server: starting over would find it gone
            // again, so say what to do instead.
            return FileLockError(
                .io, path: path,
                message: "cannot \(operation) '\(path)': the file is gone (its network filesystem handle is stale: it was "
                    + "deleted or replaced on the server); open a new ByteRangeLock on the file now at the path",
                errno: error.rawValue)
        case .badFileDescriptor:
            return FileLockError(
                .permissionDenied, path: path,
                message: "cannot \(operation) '\(path)': the descriptor is not open for this (an exclusive lock needs "
                    + "the file open for writing, a shared lock for reading), or is not an open descriptor at all",
                errno: error.rawValue)
        default:
            return FileLockError.system(error, path: path, operation: operation)
        }
    }
}

/// The open file a `ByteRangeLock`'s locks belong to.
///
/// Linux open-file-description locks belong to the open file, which a child forked without exec
/// shares: through it the child would "get" ranges its parent holds, and could unlock them. `lockf`
/// locks are not inherited at all. Rather than let parent and child silently share locks, the
/// locking calls of an inherited object throw in the child (reading, writing and seeking still
/// work); the child opens a `ByteRangeLock` of its own. (Reopening the file for the child was
/// tried and dropped: it can fail where the inherited descriptor works, as after a privilege drop,
/// without /proc, or for a caller's descriptor whose offset the caller keeps moving.)
final class RangeFile: Sendable {
    let descriptor: Int32
    private let generation = ForkGeneration.current
    private let isOwned: Bool
    private let path: String

    init(descriptor: Int32, path: String, isOwned: Bool) {
        self.descriptor = descriptor
        self.path = path
        self.isOwned = isOwned
    }

    deinit {
        // Closing the open file releases every lock it holds (in a forked child it only drops the
        // child's reference; the parent's locks stay).
        if isOwned { System.close(descriptor) }
    }

    /// The descriptor to lock and unlock through; throws in a child forked without exec.
    func lockingDescriptor() throws -> Int32 {
        guard generation == ForkGeneration.current else {
            throw FileLockError(
                .invalidConfiguration, path: path,
                message: "this ByteRangeLock of '\(path)' was opened before fork(), so its open file and the locks on "
                    + "it are shared with the parent process; locking or unlocking through it would take or free the "
                    + "parent's ranges: create a new ByteRangeLock in the child")
        }
        return descriptor
    }
}

extension ByteRange {
    /// Whether two ranges share a byte (length 0 reaching to the end, however far). Ends beyond
    /// `Int64.max` count as reaching the end; a negative length overlaps nothing.
    func overlaps(_ other: ByteRange) -> Bool {
        guard let last = lastByte, let otherLast = other.lastByte else { return false }
        return start <= otherLast && other.start <= last
    }

    /// The offset of the last byte, saturating at `Int64.max`; `nil` for a negative length.
    private var lastByte: Int64? {
        if length == 0 { return .max }
        guard length > 0 else { return nil }
        let (sum, overflow) = start.addingReportingOverflow(length - 1)
        return overflow ? .max : sum
    }
}
