// The lock calls of the thin layer over the C library: flock(2) and fcntl(2) record locks.

#if canImport(Glibc)
    import Glibc
#elseif canImport(Musl)
    import Musl
#elseif canImport(Darwin)
    import Darwin
#endif

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

extension System {
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

    /// Whether another open file (or process) holds a lock that conflicts with `request`; `true`
    /// when that cannot be found out.
    static func hasConflictingRangeLock(_ descriptor: Int32, _ request: RangeLockRequest) -> Bool {
        guard case .success(let conflict) = conflictingRangeLock(descriptor, request) else { return true }
        return conflict != nil
    }

    /// The first lock that would conflict with `request`, or `nil` when it could be set now.
    static func conflictingRangeLock(_ descriptor: Int32, _ request: RangeLockRequest) -> Result<RangeLockRequest?, Errno> {
        var raw = request.raw
        return retryingInterrupts { Glibc_fcntl(descriptor, RangeLockCommands.get, &raw) }.map { _ in
            Int32(raw.l_type) == F_UNLCK ? nil : RangeLockRequest(raw)
        }
    }

}
