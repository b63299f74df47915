// The one thin layer over the C library. Every other file of the module works with the Swift
// types defined here and never sees `errno`.

#if canImport(Glibc)
    import Glibc
#elseif canImport(Musl)
    import Musl
#elseif canImport(Darwin)
    import Darwin
#else
    #error("swift-filelock supports Linux and Darwin")
#endif
import CFileLockShims

/// Runs `body` until it does not fail with `EINTR`; `-1` means failure.
@inline(__always)
private func retryingInterrupts<T: FixedWidthInteger>(_ body: () -> T) -> Result<T, Errno> {
    while true {
        let result = body()
        if result != -1 { return .success(result) }
        let error = Errno.current
        if error != .interrupted { return .failure(error) }
    }
}

@inline(__always)
private func once<T: FixedWidthInteger>(_ body: () -> T) -> Result<T, Errno> {
    let result = body()
    return result == -1 ? .failure(.current) : .success(result)
}

/// The `flock(2)` operations.
enum FlockOperation: Sendable {
    case exclusive
    case shared
    case unlock

    fileprivate var rawValue: Int32 {
        switch self {
        case .exclusive: LOCK_EX
        case .shared: LOCK_SH
        case .unlock: LOCK_UN
        }
    }
}

/// The access modes the locks open files with (`O_CLOEXEC | O_NOFOLLOW | O_NOCTTY` are always added).
enum OpenFlags {
    static let readWriteCreate: Int32 = O_RDWR | O_CREAT
    static let readOnly: Int32 = O_RDONLY
    static let createExclusiveWriteOnly: Int32 = O_WRONLY | O_CREAT | O_EXCL
    static let createExclusiveReadWrite: Int32 = O_RDWR | O_CREAT | O_EXCL
    static let readOnlyNonBlocking: Int32 = O_RDONLY | O_NONBLOCK
}

/// One `struct flock` request or answer: a byte range and its lock type.
struct RangeLockRequest: Sendable, Equatable {
    enum Kind: Sendable, Equatable {
        case read
        case write
        case unlock
    }

    var kind: Kind
    /// Absolute start offset.
    var start: Int64
    /// Bytes; 0 means to the end of the file, however it grows.
    var length: Int64
    /// Who holds a conflicting lock (answers only; -1 for open-file-description locks).
    var pid: Int32 = 0

    fileprivate var raw: CFlock {
        var raw = CFlock()
        raw.l_type = Int16(kind == .read ? F_RDLCK : kind == .write ? F_WRLCK : F_UNLCK)
        raw.l_whence = Int16(SEEK_SET)
        raw.l_start = off_t(start)
        raw.l_len = off_t(length)
        raw.l_pid = 0
        return raw
    }

    fileprivate init(_ raw: CFlock) {
        kind = Int32(raw.l_type) == F_RDLCK ? .read : Int32(raw.l_type) == F_WRLCK ? .write : .unlock
        start = Int64(raw.l_start)
        length = Int64(raw.l_len)
        pid = Int32(raw.l_pid)
    }

    init(kind: Kind, start: Int64, length: Int64) {
        self.kind = kind
        self.start = start
        self.length = length
    }
}

/// Which record locks `fcntl` sets: Linux open-file-description locks (owned by the open file,
/// not the process), or classic POSIX locks where OFD locks do not exist.
enum RangeLockCommands {
    #if os(Linux)
        // F_OFD_GETLK, F_OFD_SETLK, F_OFD_SETLKW (linux/fcntl.h); Glibc exposes them only with _GNU_SOURCE.
        static let get: Int32 = 36
        static let set: Int32 = 37
        static let setWait: Int32 = 38
        static let areOpenFileDescriptionLocks = true
    #else
        static let get: Int32 = F_GETLK
        static let set: Int32 = F_SETLK
        static let setWait: Int32 = F_SETLKW
        static let areOpenFileDescriptionLocks = false
    #endif
}

/// A namespace of raw system calls. `EINTR` is retried where the call is restartable; calls
/// that must return `EINTR` to their caller (a blocking lock that a timeout interrupts) say so.
enum System {
    static let openLockFlags: Int32 = O_CLOEXEC | O_NOFOLLOW | O_NOCTTY

    /// `open(2)` with `O_CLOEXEC | O_NOFOLLOW | O_NOCTTY` always added, of a path already
    /// converted to a C string (no allocation per call).
    static func open(_ path: CPath, flags: Int32, mode: UInt32) -> Result<Int32, Errno> {
        path.bytes.withUnsafeBufferPointer { bytes in
            retryingInterrupts { Glibc_open(bytes.baseAddress!, flags | openLockFlags, mode_t(mode)) }
        }
    }

    /// `close(2)`. `EINTR` is not retried: on Linux and Darwin the descriptor is gone either way.
    static func close(_ descriptor: Int32) {
        _ = Glibc_close(descriptor)
    }

    /// `flock(2)` that never waits: `.success(false)` when another open file holds a conflicting lock.
    static func flockNonBlocking(_ descriptor: Int32, _ operation: FlockOperation) -> Result<Bool, Errno> {
        switch retryingInterrupts({ Glibc_flock(descriptor, operation.rawValue | LOCK_NB) }) {
        case .success: return .success(true)
        case .failure(let error) where error == .wouldBlock || error == .resourceTemporarilyUnavailable:
            return .success(false)
        case .failure(let error): return .failure(error)
        }
    }

    /// Blocking `flock(2)`, called once: `EINTR` is returned so that a signal can end the wait.
    static func flockBlockingOnce(_ descriptor: Int32, _ operation: FlockOperation) -> Result<Void, Errno> {
        once { Glibc_flock(descriptor, operation.rawValue) }.map { _ in () }
    }

    static func unlock(_ descriptor: Int32) {
        _ = retryingInterrupts { Glibc_flock(descriptor, LOCK_UN) }
    }

    static func fstat(_ descriptor: Int32) -> Result<FileStatus, Errno> {
        var raw = CStat()
        return retryingInterrupts { Glibc_fstat(descriptor, &raw) }.map { _ in FileStatus(raw) }
    }

    static func stat(_ path: String) -> Result<FileStatus, Errno> {
        var raw = CStat()
        return retryingInterrupts { Glibc_stat(path, &raw) }.map { _ in FileStatus(raw) }
    }

    static func lstat(_ path: CPath) -> Result<FileStatus, Errno> {
        var raw = CStat()
        return path.withPointer { path in retryingInterrupts { Glibc_lstat(path, &raw) } }.map { _ in FileStatus(raw) }
    }

    /// Sets or clears a record lock without waiting: `.success(false)` when another open file
    /// (or process) holds a conflicting lock.
    static func setRangeLock(_ descriptor: Int32, _ request: RangeLockRequest) -> Result<Bool, Errno> {
        var raw = request.raw
        switch retryingInterrupts({ Glibc_fcntl(descriptor, RangeLockCommands.set, &raw) }) {
        case .success: return .success(true)
        case .failure(let error) where error == .accessDenied || error == .resourceTemporarilyUnavailable:
            return .success(false)
        case .failure(let error): return .failure(error)
        }
    }

    /// Waits for a record lock, once: `EINTR` is returned so that a signal can end the wait.
    static func setRangeLockWaitingOnce(_ descriptor: Int32, _ request: RangeLockRequest) -> Result<Void, Errno> {
        var raw = request.raw
        return once { Glibc_fcntl(descriptor, RangeLockCommands.setWait, &raw) }.map { _ in () }
    }

    /// The first lock that would conflict with `request`, or `nil` when it could be set now.
    static func conflictingRangeLock(_ descriptor: Int32, _ request: RangeLockRequest) -> Result<RangeLockRequest?, Errno> {
        var raw = request.raw
        return retryingInterrupts { Glibc_fcntl(descriptor, RangeLockCommands.get, &raw) }.map { _ in
            Int32(raw.l_type) == F_UNLCK ? nil : RangeLockRequest(raw)
        }
    }

    /// `lseek(2)`; returns the new offset.
    static func seek(_ descriptor: Int32, to offset: Int64, relativeToCurrent: Bool = false) -> Result<Int64, Errno> {
        once { Glibc_lseek(descriptor, off_t(offset), relativeToCurrent ? SEEK_CUR : SEEK_SET) }.map { Int64($0) }
    }

    /// `pwrite(2)` of the whole buffer at `offset`.
    static func write(_ descriptor: Int32, _ bytes: [UInt8], at offset: Int64) -> Result<Void, Errno> {
        var done = 0
        while done < bytes.count {
            let result = bytes.withUnsafeBytes { buffer in
                retryingInterrupts {
                    Glibc_pwrite(descriptor, buffer.baseAddress! + done, buffer.count - done, off_t(offset) + off_t(done))
                }
            }
            switch result {
            case .success(let written): done += written
            case .failure(let error): return .failure(error)
            }
        }
        return .success(())
    }

    static func fchmod(_ descriptor: Int32, _ mode: UInt32) -> Result<Void, Errno> {
        retryingInterrupts { Glibc_fchmod(descriptor, mode_t(mode)) }.map { _ in () }
    }

    static func mkdir(_ path: CPath, mode: UInt32) -> Result<Void, Errno> {
        path.withPointer { path in retryingInterrupts { Glibc_mkdir(path, mode_t(mode)) } }.map { _ in () }
    }

    /// `rename(2)`: atomically replaces `destination` if it exists.
    static func rename(_ source: CPath, to destination: CPath) -> Result<Void, Errno> {
        source.withPointer { source in
            destination.withPointer { destination in retryingInterrupts { Glibc_rename(source, destination) } }
        }.map { _ in () }
    }

    /// `renameat2(RENAME_NOREPLACE)`: fails with `EEXIST` rather than replace `destination`, and
    /// with `EINVAL` where the filesystem has no such rename (NFS, SMB, FUSE).
    static func renameNoReplace(_ source: CPath, to destination: CPath) -> Result<Void, Errno> {
        source.withPointer { source in
            destination.withPointer { destination in retryingInterrupts { filelock_rename_no_replace(source, destination) } }
        }.map { _ in () }
    }

    /// `link(2)`: fails with `EEXIST` rather than replace `destination`.
    static func link(_ source: CPath, to destination: CPath) -> Result<Void, Errno> {
        source.withPointer { source in
            destination.withPointer { destination in retryingInterrupts { Glibc_link(source, destination) } }
        }.map { _ in () }
    }

    /// Atomically swaps two existing names (Linux `renameat2(RENAME_EXCHANGE)`, macOS
    /// `renamex_np(RENAME_SWAP)`).
    static func exchange(_ first: CPath, _ second: CPath) -> Result<Void, Errno> {
        first.withPointer { first in
            second.withPointer { second in retryingInterrupts { filelock_exchange_names(first, second) } }
        }.map { _ in () }
    }

    static func unlink(_ path: CPath) -> Result<Void, Errno> {
        path.withPointer { path in retryingInterrupts { Glibc_unlink(path) } }.map { _ in () }
    }

    /// `write(2)` of the whole buffer.
    static func writeAll(_ descriptor: Int32, _ bytes: [UInt8]) -> Result<Void, Errno> {
        var offset = 0
        while offset < bytes.count {
            let result = bytes.withUnsafeBytes { buffer in
                retryingInterrupts { Glibc_write(descriptor, buffer.baseAddress! + offset, buffer.count - offset) }
            }
            switch result {
            case .success(let written): offset += written
            case .failure(let error): return .failure(error)
            }
        }
        return .success(())
    }

    /// `pread(2)` of up to `count` bytes at `offset`.
    static func read(_ descriptor: Int32, count: Int, at offset: Int64) -> Result<[UInt8], Errno> {
        var bytes = [UInt8](repeating: 0, count: count)
        let result = bytes.withUnsafeMutableBytes { buffer in
            retryingInterrupts { Glibc_pread(descriptor, buffer.baseAddress!, count, off_t(offset)) }
        }
        return result.map { read in Array(bytes.prefix(read)) }
    }

    /// `ftruncate(2)`.
    static func truncate(_ descriptor: Int32, to length: Int64) -> Result<Void, Errno> {
        retryingInterrupts { Glibc_ftruncate(descriptor, off_t(length)) }.map { _ in () }
    }

    /// Reads a whole (small, virtual) file such as `/proc/locks`.
    static func readWholeFile(_ path: String) -> Result<[UInt8], Errno> {
        let descriptor: Int32
        switch retryingInterrupts({ Glibc_open(path, O_RDONLY | openLockFlags, 0) }) {
        case .success(let opened): descriptor = opened
        case .failure(let error): return .failure(error)
        }
        defer { close(descriptor) }
        var contents: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 4096)
        while true {
            let result = chunk.withUnsafeMutableBytes { buffer in
                retryingInterrupts { Glibc_read(descriptor, buffer.baseAddress!, buffer.count) }
            }
            switch result {
            case .success(0): return .success(contents)
            case .success(let count): contents.append(contentsOf: chunk[0..<count])
            case .failure(let error): return .failure(error)
            }
        }
    }

    /// `read(2)` of whatever is available into `buffer` (a non-blocking descriptor: `EAGAIN` when
    /// nothing is).
    static func readSome(_ descriptor: Int32, into buffer: UnsafeMutableRawPointer, capacity: Int) -> Result<Int, Errno> {
        retryingInterrupts { Glibc_read(descriptor, buffer, capacity) }
    }

    /// Blocks in `poll(2)` until `descriptor` is readable (or reports an error or hang-up).
    static func waitUntilReadable(_ descriptor: Int32) {
        var poller = pollfd(fd: descriptor, events: Int16(POLLIN), revents: 0)
        _ = retryingInterrupts { poll(&poller, 1, -1) }
    }

    /// `poll(2)` for two descriptors, at most `duration`; whether each is readable (an
    /// interrupted or timed-out poll: neither).
    static func pollReadable(_ first: Int32, _ second: Int32, upTo duration: Duration) -> (Bool, Bool) {
        let nanoseconds = max(0, duration.totalNanoseconds)
        let milliseconds = Int32(clamping: nanoseconds / 1_000_000 + (nanoseconds % 1_000_000 > 0 ? 1 : 0))
        var descriptors = [
            pollfd(fd: first, events: Int16(POLLIN), revents: 0), pollfd(fd: second, events: Int16(POLLIN), revents: 0),
        ]
        guard poll(&descriptors, 2, milliseconds) > 0 else { return (false, false) }
        return (descriptors[0].revents != 0, descriptors[1].revents != 0)
    }

    #if os(Linux)
        /// `eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)`.
        static func eventDescriptor() -> Result<Int32, Errno> {
            once { filelock_eventfd() }
        }

        /// Makes an eventfd readable (adds 1).
        static func signalEventDescriptor(_ descriptor: Int32) {
            var one: UInt64 = 1
            _ = retryingInterrupts { Glibc_write(descriptor, &one, 8) }
        }

        /// Empties an eventfd (non-blocking: nothing to read is fine).
        static func drainEventDescriptor(_ descriptor: Int32) {
            var value: UInt64 = 0
            _ = retryingInterrupts { Glibc_read(descriptor, &value, 8) }
        }

        /// `inotify_init1(IN_CLOEXEC | IN_NONBLOCK)`.
        static func inotifyInit() -> Result<Int32, Errno> {
            once { inotify_init1(Int32(IN_CLOEXEC | IN_NONBLOCK)) }
        }

        /// `inotify_add_watch(2)`: the watch descriptor, the same one for every call on one folder.
        static func inotifyAddWatch(_ descriptor: Int32, _ path: CPath, mask: UInt32) -> Result<Int32, Errno> {
            path.withPointer { pointer in retryingInterrupts { inotify_add_watch(descriptor, pointer, mask) } }
        }

        /// `inotify_rm_watch(2)`.
        static func inotifyRemoveWatch(_ descriptor: Int32, _ watchDescriptor: Int32) -> Result<Void, Errno> {
            retryingInterrupts { inotify_rm_watch(descriptor, watchDescriptor) }.map { _ in () }
        }
    #endif

    /// The names in a folder (without `.` and `..`); empty when it cannot be read.
    static func folderEntries(_ path: String) -> [String] {
        guard let folder = opendir(path) else { return [] }
        defer { closedir(folder) }
        var names: [String] = []
        while let entry = readdir(folder) {
            let name = withUnsafePointer(to: &entry.pointee.d_name) {
                $0.withMemoryRebound(to: CChar.self, capacity: 256) { String(cString: $0) }
            }
            if name != "." && name != ".." { names.append(name) }
        }
        return names
    }

    /// The mount id of the file at `path` (not following a last symbolic link), from
    /// `/proc/self/fdinfo` of an `O_PATH` descriptor; `nil` where that cannot be read.
    static func mountID(of path: CPath) -> Int? {
        #if os(Linux)
            // O_PATH (Glibc does not export it to Swift): no access needed, nothing read.
            let opened = path.withPointer { path in retryingInterrupts { Glibc_open(path, 0o10000000 | openLockFlags, 0) } }
            guard case .success(let descriptor) = opened else { return nil }
            defer { close(descriptor) }
            guard case .success(let bytes) = readWholeFile("/proc/self/fdinfo/\(descriptor)") else { return nil }
            return ProcLocks.FdInfo(String(decoding: bytes, as: UTF8.self)).mountID
        #else
            return nil
        #endif
    }

    /// `realpath(3)`, as bytes.
    static func realPath(_ path: CPath) -> Result<[UInt8], Errno> {
        guard let resolved = path.withPointer({ Glibc_realpath($0, nil) }) else { return .failure(.current) }
        defer { free(resolved) }
        return .success(bytes(ofCString: resolved))
    }

    /// `getcwd(3)`, as bytes. Fails (`ENOENT`) when the current folder was deleted; Linux then
    /// returns "(unreachable)/..." paths from the raw system call, which glibc turns into ENOENT.
    static func currentDirectory() -> Result<[UInt8], Errno> {
        guard let buffer = getcwd(nil, 0) else { return .failure(.current) }
        defer { free(buffer) }
        let path = bytes(ofCString: buffer)
        guard path.first == CPath.slash else { return .failure(.noSuchFile) }
        return .success(path)
    }

    /// The bytes of a NUL-terminated C string, without the NUL.
    static func bytes(ofCString pointer: UnsafePointer<CChar>) -> [UInt8] {
        var bytes: [UInt8] = []
        var cursor = pointer
        while cursor.pointee != 0 {
            bytes.append(UInt8(bitPattern: cursor.pointee))
            cursor += 1
        }
        return bytes
    }

    static var processID: Int32 { Int32(getpid()) }

    /// The wall-clock time now.
    static func wallClockNow() -> (seconds: Int64, nanoseconds: Int32) {
        var time = timespec()
        clock_gettime(CLOCK_REALTIME, &time)
        return (Int64(time.tv_sec), Int32(time.tv_nsec))
    }

    static var effectiveUserID: UInt32 { UInt32(geteuid()) }

    /// `kill(pid, 0)`: whether a process with this id exists (`EPERM` means it exists).
    static func processExists(_ pid: Int32) -> Bool {
        if Glibc_kill(pid_t(pid), 0) == 0 { return true }
        return Errno.current != .noSuchProcess
    }
}

// File-scope wrappers: inside `enum System` the Swift functions shadow the C names.
typealias CStat = stat
typealias CFlock = flock
@inline(__always) private func Glibc_fcntl(_ fd: Int32, _ command: Int32, _ lock: UnsafeMutablePointer<CFlock>) -> Int32 {
    fcntl(fd, command, lock)
}
@inline(__always) private func Glibc_lseek(_ fd: Int32, _ offset: off_t, _ whence: Int32) -> off_t {
    lseek(fd, offset, whence)
}
@inline(__always) private func Glibc_pwrite(_ fd: Int32, _ buffer: UnsafeRawPointer, _ count: Int, _ offset: off_t) -> Int {
    pwrite(fd, buffer, count, offset)
}
@inline(__always) private func Glibc_open(_ path: UnsafePointer<CChar>, _ flags: Int32, _ mode: mode_t) -> Int32 {
    open(path, flags, mode)
}
@inline(__always) private func Glibc_close(_ fd: Int32) -> Int32 { close(fd) }
@inline(__always) private func Glibc_flock(_ fd: Int32, _ operation: Int32) -> Int32 { flock(fd, operation) }
@inline(__always) private func Glibc_fstat(_ fd: Int32, _ buffer: UnsafeMutablePointer<CStat>) -> Int32 {
    fstat(fd, buffer)
}
@inline(__always) private func Glibc_stat(_ path: UnsafePointer<CChar>, _ buffer: UnsafeMutablePointer<CStat>) -> Int32 {
    stat(path, buffer)
}
@inline(__always) private func Glibc_lstat(_ path: UnsafePointer<CChar>, _ buffer: UnsafeMutablePointer<CStat>) -> Int32 {
    lstat(path, buffer)
}
@inline(__always) private func Glibc_fchmod(_ fd: Int32, _ mode: mode_t) -> Int32 { fchmod(fd, mode) }
@inline(__always) private func Glibc_mkdir(_ path: UnsafePointer<CChar>, _ mode: mode_t) -> Int32 { mkdir(path, mode) }
@inline(__always) private func Glibc_rename(_ from: UnsafePointer<CChar>, _ to: UnsafePointer<CChar>) -> Int32 {
    rename(from, to)
}
@inline(__always) private func Glibc_link(_ from: UnsafePointer<CChar>, _ to: UnsafePointer<CChar>) -> Int32 {
    link(from, to)
}
@inline(__always) private func Glibc_unlink(_ path: UnsafePointer<CChar>) -> Int32 { unlink(path) }
@inline(__always) private func Glibc_write(_ fd: Int32, _ buffer: UnsafeRawPointer, _ count: Int) -> Int {
    write(fd, buffer, count)
}
@inline(__always) private func Glibc_read(_ fd: Int32, _ buffer: UnsafeMutableRawPointer, _ count: Int) -> Int {
    read(fd, buffer, count)
}
@inline(__always) private func Glibc_pread(
    _ fd: Int32, _ buffer: UnsafeMutableRawPointer, _ count: Int, _ offset: off_t
) -> Int {
    pread(fd, buffer, count, offset)
}
@inline(__always) private func Glibc_ftruncate(_ fd: Int32, _ length: off_t) -> Int32 { ftruncate(fd, length) }
@inline(__always) private func Glibc_realpath(
    _ path: UnsafePointer<CChar>, _ resolved: UnsafeMutablePointer<CChar>?
) -> UnsafeMutablePointer<CChar>? {
    realpath(path, resolved)
}
@inline(__always) private func Glibc_kill(_ pid: pid_t, _ signal: Int32) -> Int32 { kill(pid, signal) }
