import Synchronization

/// The bytes SQLite's Unix VFS locks on a database file (`os_unix.c`, `sqlite3.h`; the same on
/// every platform and SQLite version since 3.0): one byte at 1 GiB (the "pending" byte), the next
/// one (the "reserved" byte), then 510 bytes (the "shared" range). SQLite never stores data in
/// the page that holds them, so locking them never blocks reading or writing the file.
enum SQLiteLockBytes {
    static let pending: Int64 = 0x4000_0000
    static let reserved: Int64 = pending + 1
    static let sharedFirst: Int64 = pending + 2
    static let sharedSize: Int64 = 510
    /// The last byte of the shared range, the last byte SQLite locks.
    static let sharedLast: Int64 = sharedFirst + sharedSize - 1

    static func read(_ start: Int64, _ length: Int64 = 1) -> RangeLockRequest {
        RangeLockRequest(kind: .read, start: start, length: length)
    }

    static func write(_ start: Int64, _ length: Int64 = 1) -> RangeLockRequest {
        RangeLockRequest(kind: .write, start: start, length: length)
    }

    static let readPending = read(pending)
    static let readShared = read(sharedFirst, sharedSize)
    static let writeReserved = write(reserved)
    static let writePending = write(pending)
    static let writeShared = write(sharedFirst, sharedSize)
    static let unlockPending = RangeLockRequest(kind: .unlock, start: pending, length: 1)
    /// All of SQLite's lock bytes, as its EXCLUSIVE lock holds them.
    static let writeAll = write(pending, 2 + sharedSize)
    /// Everything this open file holds, in one call (length 0: to the end of the file).
    static let unlockAll = RangeLockRequest(kind: .unlock, start: 0, length: 0)
}

/// SQLite's locking protocol with record locks on the lock file: the primitive behind
/// `ReadWriteLock`. A shared hold is SQLite's SHARED lock, an exclusive one its EXCLUSIVE lock, so
/// a `ReadWriteLock`, Python's `filelock.ReadWriteLock` and any SQLite connection on the same file
/// exclude one another as SQLite's own readers and writers do.
///
/// - A reader read-locks the pending byte, read-locks the shared range, and unlocks the pending
///   byte again: while a writer holds the pending byte, no new reader gets in.
/// - A writer write-locks the reserved byte (one writer at a time), then the pending byte (no new
///   readers from now on: SQLite's writer preference), then the shared range (waiting for the
///   readers inside to leave). It keeps what it has while it waits, as SQLite does.
/// - Release unlocks everything the open file holds, in one call.
///
/// Locks are Linux open-file-description locks (`F_OFD_SETLK`): each acquisition uses an open file
/// of its own, so holders in one process exclude one another as in different processes, and
/// closing some other descriptor of the file does not drop them. They conflict with SQLite's
/// classic POSIX locks (`F_SETLK`) of other processes and of this one. Waits are kernel waits
/// (`F_OFD_SETLKW`), woken by the release.
///
/// Open files are kept for the next acquisition (up to `IdleFiles.capacity`, never across a
/// fork): each acquisition checks, once it holds the lock, that the path still names the file it
/// locked, and otherwise starts over on the file now there.
struct ReadWritePrimitive: LockPrimitive {
    let lockPath: LockPath
    let filePermissions: UInt32?
    let idleFiles = IdleFiles()
    /// Whether the lock file is on a network or FUSE filesystem (looked at once, reported once).
    let filesystem = NetworkFilesystemCheck(lockKind: "ReadWriteLock")

    var path: String { lockPath.given }
    var waitStrategy: WaitStrategy { .kernel }

    /// One acquisition: an open lock file and, for a writer, how far up SQLite's lock ladder it
    /// got (kept between the rounds of a wait, so that a waiting writer keeps its place).
    final class Attempt: Sendable {
        let file: OpenLockFile
        /// 0 nothing, 1 the reserved byte, 2 and the pending byte, 3 and the shared range.
        let writerStep = Atomic<Int>(0)
        /// The path no longer names the file: close it rather than keep it.
        let isStale = Atomic<Bool>(false)

        init(file: OpenLockFile) { self.file = file }

        var descriptor: Int32 { file.descriptor }
    }

    func begin(_ request: LockRequest) throws -> Attempt {
        if let file = idleFiles.take() {
            // A file kept from a read-only open would fail a writer for good, also once this user
            // may write the file: open it again instead.
            guard request.mode == .exclusive && file.readOnlyBecause != nil else { return Attempt(file: file) }
            OwnedLockFiles.close(file.descriptor)
        }
        let file = try lockPath.openRegularLockFile(mode: filePermissions ?? 0o666)
        filesystem.noteUse(of: file.descriptor, device: file.status?.device, path: path)
        return Attempt(file: file)
    }

    // MARK: Trying and waiting

    func tryOnce(_ attempt: Attempt, _ request: LockRequest) throws -> AttemptOutcome<OpenLockFile> {
        switch request.mode {
        case .shared:
            guard try set(attempt, SQLiteLockBytes.readPending, request) else { return .busy }
            let entered = try set(attempt, SQLiteLockBytes.readShared, request)
            _ = System.setRangeLock(attempt.descriptor, SQLiteLockBytes.unlockPending)
            return entered ? try confirm(attempt, request) : .busy
        case .exclusive:
            for (step, lock) in Self.writerLadder.enumerated() where attempt.writerStep.load(ordering: .acquiring) <= step {
                guard try set(attempt, lock, request) else { return .busy }
                attempt.writerStep.store(step + 1, ordering: .releasing)
            }
            return try confirm(attempt, request)
        }
    }

    /// Makes the lazily made globals of this file (see `LazyGlobals`).
    static func finishGlobals() {
        _ = writerLadder
        _ = (SQLiteLockBytes.readPending, SQLiteLockBytes.readShared, SQLiteLockBytes.unlockPending)
        _ = (SQLiteLockBytes.unlockAll, SQLiteLockBytes.writeAll)
    }

    /// A writer's locks, in SQLite's order.
    private static let writerLadder = [
        SQLiteLockBytes.writeReserved, SQLiteLockBytes.writePending, SQLiteLockBytes.writeShared,
    ]

    func waitInKernel(_ attempt: Attempt, _ request: LockRequest) throws -> KernelWaitEnd {
        switch request.mode {
        case .shared:
            // Wait while a writer holds (or waits with) the pending byte.
            guard try setWaiting(attempt, SQLiteLockBytes.readPending, request) else { return .interrupted }
            if try set(attempt, SQLiteLockBytes.readShared, request) {
                _ = System.setRangeLock(attempt.descriptor, SQLiteLockBytes.unlockPending)
                return .locked
            }
            // The shared range is write-locked without the pending byte: an SQLite writer between
            // the two unlocks of its release (or a program outside the protocol). Wait for that
            // without holding the pending byte, which would hold up writers, then try again.
            _ = System.setRangeLock(attempt.descriptor, SQLiteLockBytes.unlockPending)
            guard try setWaiting(attempt, SQLiteLockBytes.readShared, request) else { return .interrupted }
            _ = System.setRangeLock(attempt.descriptor, SQLiteLockBytes.unlockAll)
            return .interrupted
        case .exclusive:
            for (step, lock) in Self.writerLadder.enumerated() where attempt.writerStep.load(ordering: .acquiring) <= step {
                guard try setWaiting(attempt, lock, request) else { return .interrupted }
                attempt.writerStep.store(step + 1, ordering: .releasing)
            }
            return .locked
        }
    }

    /// Checks a lock just taken: the path must still name the locked file (else start over on the
    /// file there now), and that file must not be an SQLite database in WAL mode, whose readers
    /// and writers lock elsewhere.
    func confirm(_ attempt: Attempt, _ request: LockRequest) throws -> AttemptOutcome<OpenLockFile> {
        let file = attempt.file
        guard let status = file.status, case .success(let named) = System.lstat(lockPath.absolute),
            named.device == status.device && named.inode == status.inode
        else {
            attempt.isStale.store(true, ordering: .relaxed)
            unlockAll(attempt)
            return .restart
        }
        if named.size > 0, let problem = databaseProblem(file.descriptor) {
            unlockAll(attempt)
            throw FileLockError(.invalidConfiguration, path: path, message: problem)
        }
        if let filePermissions, named.permissions != filePermissions, named.owner == System.effectiveUserID {
            _ = System.fchmod(file.descriptor, filePermissions)
        }
        return .acquired(file)
    }

    /// Why a non-empty lock file cannot be locked with SQLite's locks, or `nil` when it can: an
    /// SQLite database in rollback-journal mode (file format versions 1, bytes 18 and 19 of its
    /// header; what an SQLite transaction on an empty lock file leaves). A WAL database (version
    /// 2) is refused, as Python `filelock` refuses it (SQLite's WAL readers and writers use other
    /// locks), and so is a file that is no SQLite database: Python's `ReadWriteLock` cannot open
    /// it, so the two would not share the lock, and it is data rather than a lock file.
    private func databaseProblem(_ descriptor: Int32) -> String? {
        let advice = "give the ReadWriteLock a file of its own (such as '\(path).lock')"
        guard case .success(let header) = System.read(descriptor, count: 20, at: 0) else { return nil }
        if header.isEmpty { return nil }
        guard header.count == 20, header.starts(with: Array("SQLite format 3".utf8) + [0]) else {
            return "'\(path)' is neither empty nor an SQLite database: a ReadWriteLock keeps SQLite's locks on a lock file "
                + "that SQLite (and Python filelock's ReadWriteLock) can open as a database; \(advice)"
        }
        let versions = (header[18], header[19])
        if versions.0 == 2 || versions.1 == 2 {
            return "'\(path)' is an SQLite database in WAL mode, whose readers and writers do not take the locks a "
                + "ReadWriteLock shares with SQLite; \(advice)"
        }
        guard versions == (1, 1) else {
            return "'\(path)' is an SQLite database with file format versions \(versions.0).\(versions.1), which this "
                + "library does not know; \(advice)"
        }
        return nil
    }

    /// What the lock file holds, as far as the lock cares (for `filelock status`): nothing, an
    /// SQLite database (WAL or not), or anything else; `nil` when it cannot be read.
    func fileFormat() -> ReadWriteLock.FileFormat? {
        guard case .success(let descriptor) = System.open(lockPath.absolute, flags: OpenFlags.readOnlyNonBlocking, mode: 0)
        else { return nil }
        defer { System.close(descriptor) }
        guard case .success(let header) = System.read(descriptor, count: 20, at: 0) else { return nil }
        if header.isEmpty { return .empty }
        guard header.count == 20, header.starts(with: Array("SQLite format 3".utf8) + [0]) else { return .other }
        return header[18] == 2 || header[19] == 2 ? .sqliteWAL : .sqlite
    }

    /// One lock of the ladder, not waiting: `false` when held elsewhere.
    private func set(_ attempt: Attempt, _ lock: RangeLockRequest, _ request: LockRequest) throws -> Bool {
        switch System.setRangeLock(attempt.descriptor, lock) {
        case .success(let isSet): return isSet
        case .failure(let error): throw self.error(error, request, attempt)
        }
    }

    /// One lock of the ladder, waiting in the kernel: `false` when a signal ended the wait.
    private func setWaiting(_ attempt: Attempt, _ lock: RangeLockRequest, _ request: LockRequest) throws -> Bool {
        switch System.setRangeLockWaitingOnce(attempt.descriptor, lock) {
        case .success: return true
        case .failure(.interrupted): return false
        case .failure(let error): throw self.error(error, request, attempt)
        }
    }

    /// `LockFileGone` for `ESTALE` (the file was deleted or replaced on an NFS server: begin again
    /// on the file now at the path; the stale one is closed, never kept), else the error to throw.

    private func error(_ error: Errno, _ request: LockRequest, _ attempt: Attempt) -> any Error {
        switch error {
        case .staleFileHandle:
            attempt.isStale.store(true, ordering: .relaxed)
            return LockFileGone()
        case .badFileDescriptor:
            // Only a file opened read-only gets here (a write lock needs write access): never
            // keep it for another acquisition.
            attempt.isStale.store(true, ordering: .relaxed)
            if attempt.file.readOnlyBecause == .readOnlyFilesystem {
                return FileLockError(
                    .readOnlyFilesystem, path: path,
                    message: "cannot take the write lock of '\(path)': the lock file is on a read-only filesystem, and a "
                        + "write lock needs it open for writing (read locks work); put the lock file on a writable "
                        + "filesystem", errno: Errno.readOnlyFilesystem.rawValue)
            }
            return FileLockError(
                .permissionDenied, path: path,
                message: "cannot take the write lock of '\(path)': this user may only read the lock file, and a write "
                    + "lock needs it open for writing (read locks work); give this user write access to the file",
                errno: error.rawValue)
        case .noLocks:
            return FileLockError(
                .notSupportedByFilesystem, path: path,
                message: "cannot lock '\(path)': no record locks available (the kernel's lock table is full, or an NFS "
                    + "mount without lock support); use SoftFileLock on such filesystems", errno: error.rawValue)
        case _ where error.isNotSupported:
            return FileLockError(
                .notSupportedByFilesystem, path: path,
                message: "the filesystem of '\(path)' does not support record locks (\(error)); put the lock file on a "
                    + "local filesystem, or use SoftFileLock", errno: error.rawValue)
        default:
            return FileLockError.system(error, path: path, operation: "lock")
        }
    }

    // MARK: Letting go

    private func unlockAll(_ attempt: Attempt) {
        _ = System.setRangeLock(attempt.descriptor, SQLiteLockBytes.unlockAll)
        attempt.writerStep.store(0, ordering: .releasing)
    }

    func abandon(_ attempt: Attempt) {
        unlockAll(attempt)
        if attempt.isStale.load(ordering: .relaxed) {
            OwnedLockFiles.close(attempt.descriptor)
        } else {
            idleFiles.keep(attempt.file)
        }
    }

    func release(_ file: OpenLockFile) {
        _ = System.setRangeLock(file.descriptor, SQLiteLockBytes.unlockAll)
        idleFiles.keep(file)
    }

    func forget(_ file: OpenLockFile) {
        // The parent shares this open file and its locks: closing our copy leaves both alone.
        OwnedLockFiles.close(file.descriptor)
    }

    // MARK: Who holds it

    func holders() -> [LockHolder] { lockTable(budget: nil).holders }

    /// Who stands in the way: for a reader the writer (holding, or waiting with the pending byte);
    /// for a writer the writer, else a reader. Holders with open-file locks are looked for through
    /// `/proc` (about one `stat` per open file of the machine) for a tenth of the timeout, at least
    /// 5 ms (a try too) and at most 300 ms, besides this process's own files.
    func blockingHolder(for request: LockRequest, timeout: Duration?) -> LockHolder? {
        let budget = max(RangePrimitive.holderLookupBudget(forTimeout: timeout), .milliseconds(5))
        return lockTable(budget: budget).holder(inTheWayOf: request.mode)
    }

    func subject(of request: LockRequest) -> String? {
        "the \(request.mode == .shared ? "read" : "write") lock '\(path)'"
    }

    /// The readers and the writer, and a writer waiting for the readers to leave, from the kernel's
    /// lock table (see `ProcLocks.recordLocks`).
    func lockTable(budget: Duration?) -> ReadWriteLockTable {
        guard case .success(let status) = System.lstat(lockPath.absolute), status.isRegularFile else {
            return ReadWriteLockTable()
        }
        let locks = ProcLocks.recordLocks(
            on: status, named: CPath.lastComponent(of: lockPath.absolute.pathBytes), mountID: status.deviceMajor == 0 ? System.mountID(of: lockPath.absolute) : nil,
            budget: budget)
        return ReadWriteLockTable(locks)
    }
}

/// Who holds a `ReadWriteLock`'s file, read from the record locks on SQLite's lock bytes.
struct ReadWriteLockTable: Sendable {
    /// The readers (shared) and the writer (exclusive), one entry per process and mode, the
    /// writer first.
    var holders: [LockHolder] = []
    /// A writer that holds the pending byte and waits for the readers inside to leave.
    var pendingWriter: LockHolder?
    /// Locks on the lock bytes whose process could not be found (see `ProcLocks.recordLocks`).
    var unidentifiedCount = 0

    init() {}

    init(_ locks: [(pid: Int32, entry: KernelLockEntry)]) {
        let host = ProcessIdentity.hostName
        var seen: Set<[Int32]> = []
        for (pid, entry) in locks {
            let start = Int64(clamping: entry.start)
            let end = entry.end.map { Int64(clamping: $0) } ?? .max
            let coversShared = start <= SQLiteLockBytes.sharedFirst && end >= SQLiteLockBytes.sharedLast
            let coversPending = entry.isWrite && start <= SQLiteLockBytes.pending && end >= SQLiteLockBytes.pending
            guard coversShared || coversPending else { continue }
            guard pid > 0 else {
                unidentifiedCount += 1
                continue
            }
            var holder = LockHolder(pid: pid, host: host, isShared: coversShared && !entry.isWrite)
            if coversShared {
                guard seen.insert([pid, entry.isWrite ? 1 : 0]).inserted else { continue }
                holder.command = ProcessIdentity.commandLine(of: pid)
                holders.append(holder)
            } else if pendingWriter == nil {
                holder.command = ProcessIdentity.commandLine(of: pid)
                pendingWriter = holder
            }
        }
        // The writer first: it is the one a waiter waits for.
        holders.sort { !$0.isShared && $1.isShared }
        // A writer that holds the shared range waits for nothing (its pending byte is its own).
        if let writer = holders.first, !writer.isShared, pendingWriter?.pid == writer.pid { pendingWriter = nil }
    }

    /// The first process in the way of a reader (the writer, holding or waiting) or of a writer
    /// (the writer, else a reader).
    func holder(inTheWayOf mode: LockMode) -> LockHolder? {
        let writer = holders.first { !$0.isShared }
        switch mode {
        case .shared: return writer ?? pendingWriter
        case .exclusive: return writer ?? pendingWriter ?? holders.first
        }
    }

    var snapshot: ReadWriteLockHolders {
        ReadWriteLockHolders(
            writer: holders.first { !$0.isShared }, readers: holders.filter(\.isShared), waitingWriter: pendingWriter,
            unidentifiedCount: unidentifiedCount)
    }
}

/// Open lock files kept for the next acquisition: opening and examining a file costs more than
/// the three record-lock calls of an acquisition. Never used across a fork, in the parent or the
/// child: an open file made before a fork is shared with the child, so a lock taken through it
/// later would stay held while the child lives, even after its holder was killed.
final class IdleFiles: Sendable {
    static let capacity = 4

    private let files = Mutex<[OpenLockFile]>([])

    deinit {
        for file in files.withLock({ $0 }) { OwnedLockFiles.close(file.descriptor) }
    }

    /// An idle open file opened since the last fork, or `nil`; older ones are closed.
    func take() -> OpenLockFile? {
        let forks = ForkGeneration.forks
        var inherited: [Int32] = []
        let file = files.withLock { files -> OpenLockFile? in
            if files.contains(where: { $0.forksWhenOpened != forks }) {
                inherited = files.filter { $0.forksWhenOpened != forks }.map(\.descriptor)
                files.removeAll { $0.forksWhenOpened != forks }
            }
            return files.popLast()
        }
        for descriptor in inherited { OwnedLockFiles.close(descriptor) }
        return file
    }

    /// Keeps an unlocked open file for the next acquisition, or closes it: when enough are kept,
    /// or when a fork happened since it was opened.
    func keep(_ file: OpenLockFile) {
        let kept = file.forksWhenOpened == ForkGeneration.forks && files.withLock { files -> Bool in
            guard files.count < Self.capacity else { return false }
            files.append(file)
            return true
        }
        if !kept { OwnedLockFiles.close(file.descriptor) }
    }
}
