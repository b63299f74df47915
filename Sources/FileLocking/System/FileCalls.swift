// The one thin layer over the C library, by job: file and folder calls here (with the helpers
// every call uses: EINTR retries, the C names), lock calls in LockCalls.swift, the folder watch's
// waiting calls in EventCalls.swift, threads and fork in Threads.swift, signals in Signals.swift.
// Every other file of the module works with the Swift types defined in System/ and never sees
// `errno`.

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
func retryingInterrupts<T: FixedWidthInteger>(_ body: () -> T) -> Result<T, Errno> {
    while true {
        let result = body()
        if result != -1 { return .success(result) }
        let error = Errno.current
        if error != .interrupted { return .failure(error) }
    }
}

@inline(__always)
func once<T: FixedWidthInteger>(_ body: () -> T) -> Result<T, Errno> {
    let result = body()
    return result == -1 ? .failure(.current) : .success(result)
}


/// The access modes the locks open files with (`O_CLOEXEC | O_NOFOLLOW | O_NOCTTY` are always added).
enum OpenFlags {
    static let readWriteCreate: Int32 = O_RDWR | O_CREAT
    static let readOnly: Int32 = O_RDONLY
    static let readWriteExistingNonBlocking: Int32 = O_RDWR | O_NONBLOCK
    static let createExclusiveWriteOnly: Int32 = O_WRONLY | O_CREAT | O_EXCL
    static let createExclusiveReadWrite: Int32 = O_RDWR | O_CREAT | O_EXCL
    static let readOnlyNonBlocking: Int32 = O_RDONLY | O_NONBLOCK
}



/// A namespace of raw system calls. `EINTR` is retried where the call is restartable; calls
/// that must return `EINTR` to their caller (a blocking lock that a timeout interrupts) say so.
package enum System {
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

    /// `access(2)` with `R_OK`: whether this process may read the file (by its real ids).
    static func isReadable(_ path: CPath) -> Bool {
        path.withPointer { access($0, R_OK) == 0 }
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

    /// Points `descriptor` at the file `source` is open on, close-on-exec (`dup3`; `dup2` and
    /// `fcntl` where there is none). Async-signal-safe: for fork handlers.
    static func replaceWithCloseOnExec(_ descriptor: Int32, by source: Int32) {
        _ = retryingInterrupts { filelock_replace_descriptor(source, descriptor) }
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

    /// `readlink(2)`: what a symbolic link says, as bytes; `nil` when it cannot be read. For
    /// `/proc/PID/fd/N` the kernel answers from its own tables (the open file's path, ending in
    /// " (deleted)" once unlinked) without asking the file's filesystem, so a stalled NFS server
    /// or FUSE daemon cannot hold the call up.
    static func readLink(_ path: String) -> [UInt8]? {
        var buffer = [CChar](repeating: 0, count: 4096)
        let count = Glibc_readlink(path, &buffer, buffer.count)
        guard count > 0 else { return nil }
        return buffer.prefix(count).map { UInt8(bitPattern: $0) }
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

    package static var processID: Int32 { Int32(getpid()) }

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
@inline(__always) func Glibc_fcntl(_ fd: Int32, _ command: Int32, _ lock: UnsafeMutablePointer<CFlock>) -> Int32 {
    fcntl(fd, command, lock)
}
@inline(__always) func Glibc_lseek(_ fd: Int32, _ offset: off_t, _ whence: Int32) -> off_t {
    lseek(fd, offset, whence)
}
@inline(__always) func Glibc_pwrite(_ fd: Int32, _ buffer: UnsafeRawPointer, _ count: Int, _ offset: off_t) -> Int {
    pwrite(fd, buffer, count, offset)
}
@inline(__always) func Glibc_open(_ path: UnsafePointer<CChar>, _ flags: Int32, _ mode: mode_t) -> Int32 {
    open(path, flags, mode)
}
@inline(__always) func Glibc_close(_ fd: Int32) -> Int32 { close(fd) }
@inline(__always) func Glibc_flock(_ fd: Int32, _ operation: Int32) -> Int32 { flock(fd, operation) }
@inline(__always) func Glibc_fstat(_ fd: Int32, _ buffer: UnsafeMutablePointer<CStat>) -> Int32 {
    fstat(fd, buffer)
}
@inline(__always) func Glibc_stat(_ path: UnsafePointer<CChar>, _ buffer: UnsafeMutablePointer<CStat>) -> Int32 {
    stat(path, buffer)
}
@inline(__always) func Glibc_lstat(_ path: UnsafePointer<CChar>, _ buffer: UnsafeMutablePointer<CStat>) -> Int32 {
    lstat(path, buffer)
}
@inline(__always) func Glibc_fchmod(_ fd: Int32, _ mode: mode_t) -> Int32 { fchmod(fd, mode) }
@inline(__always) func Glibc_mkdir(_ path: UnsafePointer<CChar>, _ mode: mode_t) -> Int32 { mkdir(path, mode) }
@inline(__always) func Glibc_rename(_ from: UnsafePointer<CChar>, _ to: UnsafePointer<CChar>) -> Int32 {
    rename(from, to)
}
@inline(__always) func Glibc_link(_ from: UnsafePointer<CChar>, _ to: UnsafePointer<CChar>) -> Int32 {
    link(from, to)
}
@inline(__always) func Glibc_unlink(_ path: UnsafePointer<CChar>) -> Int32 { unlink(path) }
@inline(__always) func Glibc_write(_ fd: Int32, _ buffer: UnsafeRawPointer, _ count: Int) -> Int {
    write(fd, buffer, count)
}
@inline(__always) func Glibc_read(_ fd: Int32, _ buffer: UnsafeMutableRawPointer, _ count: Int) -> Int {
    read(fd, buffer, count)
}
@inline(__always) func Glibc_pread(
    _ fd: Int32, _ buffer: UnsafeMutableRawPointer, _ count: Int, _ offset: off_t
) -> Int {
    pread(fd, buffer, count, offset)
}
@inline(__always) func Glibc_readlink(_ path: UnsafePointer<CChar>, _ buffer: UnsafeMutablePointer<CChar>, _ size: Int) -> Int {
    readlink(path, buffer, size)
}
@inline(__always) func Glibc_ftruncate(_ fd: Int32, _ length: off_t) -> Int32 { ftruncate(fd, length) }
@inline(__always) func Glibc_realpath(
    _ path: UnsafePointer<CChar>, _ resolved: UnsafeMutablePointer<CChar>?
) -> UnsafeMutablePointer<CChar>? {
    realpath(path, resolved)
}
@inline(__always) func Glibc_kill(_ pid: pid_t, _ signal: Int32) -> Int32 { kill(pid, signal) }
