#if canImport(Glibc)
    import Glibc
#elseif canImport(Musl)
    import Musl
#elseif canImport(Darwin)
    import Darwin
#endif

/// An `errno` value returned by a failed system call.
struct Errno: Error, Equatable, Sendable, CustomStringConvertible {
    var rawValue: Int32

    static var current: Errno { Errno(rawValue: errno) }

    static let interrupted = Errno(rawValue: EINTR)
    static let wouldBlock = Errno(rawValue: EWOULDBLOCK)
    static let resourceTemporarilyUnavailable = Errno(rawValue: EAGAIN)
    static let accessDenied = Errno(rawValue: EACCES)
    static let notPermitted = Errno(rawValue: EPERM)
    static let noSuchFile = Errno(rawValue: ENOENT)
    static let fileExists = Errno(rawValue: EEXIST)
    static let isDirectory = Errno(rawValue: EISDIR)
    static let notDirectory = Errno(rawValue: ENOTDIR)
    static let tooManySymbolicLinks = Errno(rawValue: ELOOP)
    static let readOnlyFilesystem = Errno(rawValue: EROFS)
    static let nameTooLong = Errno(rawValue: ENAMETOOLONG)
    static let noLocks = Errno(rawValue: ENOLCK)
    static let notImplemented = Errno(rawValue: ENOSYS)
    static let notSupported = Errno(rawValue: EOPNOTSUPP)
    static let invalidArgument = Errno(rawValue: EINVAL)
    static let noSuchProcess = Errno(rawValue: ESRCH)
    static let deadlock = Errno(rawValue: EDEADLK)
    static let badFileDescriptor = Errno(rawValue: EBADF)
    static let tooManyOpenFiles = Errno(rawValue: EMFILE)
    static let systemFileTableFull = Errno(rawValue: ENFILE)
    static let noSpace = Errno(rawValue: ENOSPC)
    static let quotaExceeded = Errno(rawValue: EDQUOT)
    static let crossDevice = Errno(rawValue: EXDEV)
    /// `ESTALE`: a network filesystem's handle for the file (or its folder) is no longer valid:
    /// the file is gone on the server (deleted or replaced by another client).
    static let staleFileHandle = Errno(rawValue: ESTALE)

    /// `ENOTSUP` and `EOPNOTSUPP` are the same number on Linux but not everywhere.
    var isNotSupported: Bool {
        rawValue == EOPNOTSUPP || rawValue == ENOTSUP || rawValue == ENOSYS || rawValue == ENOLCK
    }

    var description: String {
        guard let text = strerror(rawValue) else { return "errno \(rawValue)" }
        return "\(String(cString: text)) (errno \(rawValue))"
    }
}
