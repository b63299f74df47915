/// `flock(2)` on a lock file: the primitive behind `FileLock`.
///
/// Each acquisition opens the file anew, so every hold is its own open file description and the
/// kernel excludes holders in other processes and in other threads of this process alike.
///
/// Every acquisition checks, once it holds the lock, that the path still names the file it locked
/// (same device and inode; a file deleted or renamed away fails), else it starts over on the file
/// now at the path. That check is what makes `removesFileOnRelease` safe: the holder deletes the
/// file *before* it unlocks, so a waiter that wins the old file sees it gone, while a newcomer
/// that creates a new file can only do so after the holder's critical section ended.
struct FlockPrimitive: LockPrimitive {
    let lockPath: LockPath
    let filePermissions: UInt32?
    /// Delete the lock file on release, while still holding it (exclusively).
    var removesFileOnRelease = false
    /// Whether the lock file is on a network or FUSE filesystem (looked at once, reported once).
    let filesystem = NetworkFilesystemCheck(lockKind: "FileLock")

    var path: String { lockPath.given }
    var waitStrategy: WaitStrategy { .kernel }

    typealias OpenLockFile = FileLocking.OpenLockFile

    /// Opens (creating if needed) the lock file, never following a symbolic link. The first
    /// acquisition of the lock object also looks at the file's filesystem (see
    /// `NetworkFilesystemCheck`).
    func begin(_ request: LockRequest) throws -> OpenLockFile {
        let file = try lockPath.openRegularLockFile(mode: filePermissions ?? 0o666)
        filesystem.noteUse(of: file.descriptor, device: file.status?.device, path: path)
        return file
    }

    /// `ESTALE` (the file was deleted or replaced on an NFS server) means the file is gone: the
    /// engine begins again on the file now at the path.
    func tryOnce(_ file: OpenLockFile, _ request: LockRequest) throws -> AttemptOutcome<Int32> {
        switch System.flockNonBlocking(file.descriptor, request.mode.flockOperation) {
        case .success(true): return confirm(file, request)
        case .success(false): return .busy
        case .failure(.staleFileHandle): throw LockFileGone()
        case .failure(let error): throw lockError(error, request.mode)
        }
    }

    func waitInKernel(_ file: OpenLockFile, _ request: LockRequest) throws -> KernelWaitEnd {
        switch System.flockBlockingOnce(file.descriptor, request.mode.flockOperation) {
        case .success: return .locked
        case .failure(.interrupted): return .interrupted
        case .failure(.staleFileHandle): throw LockFileGone()
        case .failure(let error): throw lockError(error, request.mode)
        }
    }

    private func lockError(_ error: Errno, _ mode: LockMode) -> FileLockError {
        switch error {
        case .badFileDescriptor:
            // flock on NFS is a POSIX record lock, whose exclusive form needs the file open for
            // writing; we could open it read-only only (no write permission, read-only mount).
            return FileLockError(
                .permissionDenied, path: path,
                message: "cannot lock '\(path)' \(mode == .exclusive ? "exclusively" : "shared"): the lock file could "
                    + "only be opened read-only, and on this filesystem (NFS?) such a lock needs write access; give "
                    + "this user write access to the lock file, or use SoftFileLock", errno: error.rawValue)
        case _ where error.isNotSupported:
            return FileLockError(
                .notSupportedByFilesystem, path: path,
                message: "the filesystem of '\(path)' does not support flock (\(error)); use SoftFileLock, which "
                    + "works on any filesystem including NFS, or FileLock(at:fallsBackToSoft: true) (filelock run "
                    + "--kind soft or --fallback-to-soft)", errno: error.rawValue)
        default:
            return FileLockError.system(error, path: path, operation: "lock")
        }
    }

    /// A lock on a file that was deleted or renamed away while we waited guards nothing: another
    /// process may already have created and locked a new file at the path. Start again on the new
    /// file. The link count alone would miss a rename, and an unlinked file still open on NFS
    /// (renamed to `.nfsXXXX` by the client); so the path must name the very file we hold. A file
    /// we cannot even `fstat` (an NFS handle gone stale: `ESTALE`) is treated the same way.
    ///
    /// One `lstat` (the open file's side was read when it was opened): if the path names our file,
    /// that file has a link, so no separate link-count check is needed. On the way from a kernel
    /// wake-up to the waiter every system call counts (a few microseconds each, on a thread just
    /// woken).
    func confirm(_ file: OpenLockFile, _ request: LockRequest) -> AttemptOutcome<Int32> {
        guard let status = file.status, case .success(let named) = System.lstat(lockPath.absolute),
            named.device == status.device && named.inode == status.inode
        else {
            System.unlock(file.descriptor)
            return .restart
        }
        if let filePermissions, status.permissions != filePermissions, status.owner == System.effectiveUserID {
            _ = System.fchmod(file.descriptor, filePermissions)
        }
        return .acquired(file.descriptor)
    }

    func abandon(_ file: OpenLockFile) {
        OwnedLockFiles.close(file.descriptor)
    }

    func release(_ descriptor: Int32) {
        if removesFileOnRelease { removeFile(descriptor) }
        // Unlock before closing: a child forked without exec shares the open file and would
        // otherwise keep the lock alive.
        System.unlock(descriptor)
        OwnedLockFiles.close(descriptor)
    }

    /// Deletes the lock file while we still hold it, and only if the path still names it. Only an
    /// exclusive holder may: a shared hold first converts to exclusive without waiting (`flock`
    /// drops the shared lock first, which is fine on the way out); when other shared holders
    /// remain, the file stays. A file with anything in it stays too: lock files are empty, so it
    /// is data the lock was pointed at by mistake (`data.json` instead of `data.json.lock`).
    private func removeFile(_ descriptor: Int32) {
        // Convert first, check second: while a shared lock converts, another holder may come and
        // go and delete the file, and the path may name a successor's file by then.
        guard case .success(true) = System.flockNonBlocking(descriptor, .exclusive),
            case .success(let status) = System.fstat(descriptor), status.size == 0,
            case .success(let named) = System.lstat(lockPath.absolute),
            named.device == status.device && named.inode == status.inode
        else { return }
        _ = System.unlink(lockPath.absolute)
    }

    func forget(_ descriptor: Int32) {
        // The parent shares this open file and its lock: closing our copy leaves both alone.
        OwnedLockFiles.close(descriptor)
    }

    func holders() -> [LockHolder] {
        guard case .success(let status) = System.lstat(lockPath.absolute), status.isRegularFile else { return [] }
        let host = ProcessIdentity.hostName
        return lockEntries(status)
            .filter { $0.kind == .flock && !$0.isWaiting }
            .map { LockHolder(pid: $0.pid, host: host, isShared: !$0.isWrite) }
    }

    /// The kernel's lock entries for the lock file (told apart from a same-numbered file of another
    /// mount where the device is anonymous: tmpfs, FUSE, overlay, btrfs).
    private func lockEntries(_ status: FileStatus) -> [KernelLockEntry] {
        ProcLocks.entries(for: status, mountID: status.deviceMajor == 0 ? System.mountID(of: lockPath.absolute) : nil)
    }

    /// How many processes wait for the lock (Linux `/proc/locks`).
    func waiterCount() -> Int {
        guard case .success(let status) = System.lstat(lockPath.absolute), status.isRegularFile else { return 0 }
        return lockEntries(status).filter { $0.kind == .flock && $0.isWaiting }.count
    }
}

extension LockMode {
    var flockOperation: FlockOperation { self == .exclusive ? .exclusive : .shared }
}

extension LockPath {
    /// Opens the lock file as `openLockFile` does and checks that it is a regular file.
    /// The file is one of `OwnedLockFiles`: close it with `OwnedLockFiles.close`.
    func openRegularLockFile(mode: UInt32) throws -> OpenLockFile {
        // Counted before the open: a fork between the open and the count must mark the file as
        // shared with a child, not as opened after the fork.
        let forks = ForkGeneration.forks
        let (descriptor, readOnlyBecause) = try openLockFile(mode: mode)
        OwnedLockFiles.add(descriptor)
        guard case .success(let status) = System.fstat(descriptor) else {
            return OpenLockFile(descriptor: descriptor, status: nil, readOnlyBecause: readOnlyBecause, forksWhenOpened: forks)
        }
        guard status.isRegularFile else {
            // A FIFO, socket or device at the path: refused, as `SoftFileLock` and `filelock
            // status` refuse it (locking one would lock whatever it is shared with).
            OwnedLockFiles.close(descriptor)
            throw FileLockError(
                .invalidPath, path: given,
                message: "'\(given)' is not a regular file (a device, FIFO or socket?); choose another lock file path")
        }
        return OpenLockFile(descriptor: descriptor, status: status, readOnlyBecause: readOnlyBecause, forksWhenOpened: forks)
    }

    /// Opens (creating if needed, with any missing folders) a lock file for a kernel lock, never
    /// following a symbolic link; an existing file this user may only read is opened read-only
    /// (`flock` and shared record locks need no write access), and the error that made it so is
    /// returned with it.
    ///
    /// - Throws: `FileLockError` naming the path and what to do.
    func openLockFile(mode: UInt32) throws -> (descriptor: Int32, readOnlyBecause: Errno?) {
        switch try open(flags: OpenFlags.readWriteCreate, mode: mode) {
            case .success(let descriptor):
                return (descriptor, nil)
            case .failure(let error) where error == .accessDenied || error == .readOnlyFilesystem:
                // flock needs no write access: an existing lock file we may only read still works
                // (a shared /var/lock file owned by another user, a read-only mount).
                if case .success(let descriptor) = System.open(absolute, flags: OpenFlags.readOnly, mode: 0) {
                    return (descriptor, error)
                }
                throw FileLockError.system(error, path: given, operation: "open")
            case .failure(.tooManySymbolicLinks):
                if case .success(let status) = System.lstat(absolute), status.isSymbolicLink {
                    throw FileLockError.system(.tooManySymbolicLinks, path: given, operation: "open")
                }
                throw FileLockError(
                    .invalidPath, path: given,
                    message: "cannot open lock file '\(given)': its folder path has too many symbolic links (a loop?)",
                    errno: Errno.tooManySymbolicLinks.rawValue)
            case .failure(.staleFileHandle):
                // An NFS handle of the file or its folder went stale (deleted or replaced on the
                // server): the file is gone; the engine begins again (the next open looks it up anew).
                throw LockFileGone()
            case .failure(.noSuchFile):
                // The folders were made (or found) just before: either one went again meanwhile,
                // or the folder exists and its filesystem makes no files on request (/proc, /sys).
                if case .success(let folder) = System.lstat(parent), folder.isDirectory {
                    throw FileLockError(
                        .invalidPath, path: given,
                        message: "cannot create lock file '\(given)': the filesystem of its folder '\(parent)' "
                            + "does not create files there (as /proc and /sys); put the lock file in another folder",
                        errno: Errno.noSuchFile.rawValue)
                }
                throw FileLockError(
                    .invalidPath, path: given,
                    message: "cannot create lock file '\(given)': its folder '\(parent)' vanished while it was "
                        + "being created; try again", errno: Errno.noSuchFile.rawValue)
            case .failure(let error):
                throw FileLockError.system(error, path: given, operation: "open")
        }
    }
}

/// An open lock file, with what `fstat` said of it when opened (the file an open descriptor
/// refers to never changes, so the check after locking needs only the path's side).
struct OpenLockFile: Sendable {
    var descriptor: Int32
    /// `nil` when the file could not be examined (an NFS handle gone stale): never confirmed.
    var status: FileStatus?
    /// Why the file is open for reading only (`EACCES`: this user may not write it; `EROFS`: a
    /// read-only filesystem), or `nil` when it is open for writing too.
    var readOnlyBecause: Errno? = nil
    /// `ForkGeneration.forks` when it was opened: a file opened before a later fork is shared
    /// with the child.
    var forksWhenOpened = ForkGeneration.forks
}
