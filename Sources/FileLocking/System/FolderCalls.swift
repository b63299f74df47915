// Calls relative to an open folder (`openat`, `linkat`, `renameat`, `unlinkat`, `fstatat`,
// `mkdirat`, listing), for protocols that must never follow a symbolic link planted in their
// tree: the folder is opened once with `O_NOFOLLOW | O_DIRECTORY`, then every name is looked up
// in it. Also the clocks and the touch the heartbeat kinds use.

import CFileLockShims

#if canImport(Glibc)
    import Glibc
#elseif canImport(Musl)
    import Musl
#elseif canImport(Darwin)
    import Darwin
#endif

/// An open folder; every call names a file in it. Closed by `close()` (the owner's job).
struct OpenFolder: Sendable {
    let descriptor: Int32

    /// Opens the folder at `path`, refusing a symbolic link or a non-folder (`ELOOP`, `ENOTDIR`).
    static func open(_ path: CPath) -> Result<OpenFolder, Errno> {
        System.open(path, flags: O_RDONLY | O_DIRECTORY, mode: 0).map { OpenFolder(descriptor: $0) }
    }

    /// Opens the folder `name` in this one, refusing a symbolic link or a non-folder.
    func openFolder(_ name: String) -> Result<OpenFolder, Errno> {
        openFile(name, flags: O_RDONLY | O_DIRECTORY, mode: 0).map { OpenFolder(descriptor: $0) }
    }

    func close() { System.close(descriptor) }

    /// `openat(2)` with `O_CLOEXEC | O_NOFOLLOW | O_NOCTTY` added.
    func openFile(_ name: String, flags: Int32, mode: UInt32) -> Result<Int32, Errno> {
        retryingInterrupts { openat(descriptor, name, flags | System.openLockFlags, mode_t(mode)) }
    }

    /// `mkdirat(2)`.
    func makeFolder(_ name: String, mode: UInt32) -> Result<Void, Errno> {
        retryingInterrupts { mkdirat(descriptor, name, mode_t(mode)) }.map { _ in () }
    }

    /// `fstatat(2)` without following a last symbolic link.
    func status(_ name: String) -> Result<FileStatus, Errno> {
        var raw = CStat()
        return retryingInterrupts { fstatat(descriptor, name, &raw, AT_SYMLINK_NOFOLLOW) }.map { _ in FileStatus(raw) }
    }

    /// `fstat(2)` of the folder itself.
    func status() -> Result<FileStatus, Errno> { System.fstat(descriptor) }

    /// `linkat(2)` without following symbolic links: fails with `EEXIST` if `newName` exists (a
    /// compare-and-swap on every POSIX filesystem, NFS included).
    func link(_ name: String, to newName: String) -> Result<Void, Errno> {
        retryingInterrupts { linkat(descriptor, name, descriptor, newName, 0) }.map { _ in () }
    }

    /// Whether `name` exists here (`fstatat` without following a link).
    func exists(_ name: String) -> Bool {
        if case .success = status(name) { return true }
        return false
    }

    /// `renameat(2)` within this folder (replaces `newName`).
    func rename(_ name: String, to newName: String) -> Result<Void, Errno> {
        retryingInterrupts { renameat(descriptor, name, descriptor, newName) }.map { _ in () }
    }

    /// `unlinkat(2)` of a file.
    func unlink(_ name: String) -> Result<Void, Errno> {
        retryingInterrupts { unlinkat(descriptor, name, 0) }.map { _ in () }
    }

    /// The names in the folder (without `.` and `..`), read through an open file description of
    /// its own (`openat(".")`, not a duplicate: a duplicate shares the reading position with the
    /// folder's descriptor, which other threads, or a forked child, may be listing through too).
    func entries() -> Result<[String], Errno> {
        let own: Int32
        switch openFile(".", flags: O_RDONLY | O_DIRECTORY, mode: 0) {
        case .success(let made): own = made
        case .failure(let error): return .failure(error)
        }
        guard let folder = fdopendir(own) else {
            let error = Errno.current
            System.close(own)
            return .failure(error)
        }
        defer { closedir(folder) }
        var names: [String] = []
        while let entry = readdir(folder) {
            let name = withUnsafePointer(to: &entry.pointee.d_name) {
                $0.withMemoryRebound(to: CChar.self, capacity: 256) { String(cString: $0) }
            }
            if name != "." && name != ".." { names.append(name) }
        }
        return .success(names)
    }

    /// Reads the regular file `name` (at most `limit` bytes), never blocking on a FIFO: `nil`
    /// when missing (or gone stale on NFS), empty bytes when it is not a regular file.
    func read(_ name: String, limit: Int) -> Result<[UInt8]?, Errno> {
        readWithStatus(name, limit: limit).map { $0?.bytes }
    }

    /// `read`, with what `fstat` said of the file read (`nil` for a non-file, read as empty).
    ///
    /// The first read asks for one byte more than `fstat`'s size, so that a file of that size
    /// needs one read: a shorter answer than asked is the end of a regular file (as the empty
    /// read that Python waits for would say right after); a file that grew meanwhile is read on
    /// until an empty read.
    func readWithStatus(_ name: String, limit: Int) -> Result<(bytes: [UInt8], status: FileStatus?)?, Errno> {
        let file: Int32
        switch openFile(name, flags: O_RDONLY | O_NONBLOCK, mode: 0) {
        case .success(let opened): file = opened
        case .failure(.noSuchFile), .failure(.staleHandle): return .success(nil)
        case .failure(.tooManySymbolicLinks): return .success(([], nil))
        case .failure(let error): return .failure(error)
        }
        defer { System.close(file) }
        guard case .success(let status) = System.fstat(file), status.isRegularFile else { return .success(([], nil)) }
        var bytes: [UInt8] = []
        var asked = min(limit, Int(clamping: max(0, status.size)) &+ 1)
        while bytes.count < limit {
            switch System.read(file, count: asked, at: Int64(bytes.count)) {
            case .success(let chunk):
                bytes += chunk
                if chunk.count < asked { return .success((bytes, status)) }
            case .failure(let error): return .failure(error)
            }
            asked = min(limit - bytes.count, 65536)
        }
        return .success((bytes, status))
    }
}

extension Errno {
    /// `ESTALE`: an NFS handle whose file is gone on the server.
    static let staleHandle = Errno(rawValue: ESTALE)
    /// `ENXIO`.
    static let noSuchDeviceOrAddress = Errno(rawValue: ENXIO)
}

extension System {
    /// 128 bits from the system's random source, in one call (`getrandom`; the standard
    /// generator asks twice for 64), or from the standard generator where that fails.
    static func random128() -> (UInt64, UInt64) {
        var pair: (UInt64, UInt64) = (0, 0)
        let filled = withUnsafeMutableBytes(of: &pair) { filelock_random_bytes($0.baseAddress, UInt($0.count)) == 0 }
        if filled { return pair }
        var generator = SystemRandomNumberGenerator()
        return (generator.next(), generator.next())
    }

    /// `fsync(2)`.
    static func sync(_ descriptor: Int32) -> Result<Void, Errno> {
        retryingInterrupts { fsync(descriptor) }.map { _ in () }
    }

    /// Sets the file's modification and change times to now (`futimens(fd, NULL)`): a heartbeat
    /// that keeps a marker fresh without rewriting it.
    static func touch(_ descriptor: Int32) -> Result<Void, Errno> {
        retryingInterrupts { futimens(descriptor, nil) }.map { _ in () }
    }
}

/// A clock that keeps counting while the machine sleeps (Linux `CLOCK_BOOTTIME`; macOS
/// `CLOCK_MONOTONIC`, which counts sleep there): a holder's own measure of how long ago it last
/// refreshed, so that a suspended laptop does not believe its hold is fresh.
enum BootClock {
    static var now: MonotonicInstant {
        var time = timespec()
        #if os(Linux)
            clock_gettime(CLOCK_BOOTTIME, &time)
        #else
            clock_gettime(CLOCK_MONOTONIC, &time)
        #endif
        return MonotonicInstant(nanoseconds: UInt64(time.tv_sec) &* 1_000_000_000 &+ UInt64(time.tv_nsec))
    }
}
