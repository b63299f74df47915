/// Every error the locks of every kind throw: what happened to which lock, and what to do about it.
///
/// Programs branch on ``code``; people read ``description``, which names the lock (its path or
/// name), the holder when known, and a next step. ``resource`` says which lock, ``cause`` the
/// underlying error (a system error as swift-system's `Errno`, or a server's error).
public struct FileLockError: Error, Sendable, CustomStringConvertible {
    /// What kind of failure this is: compare with the static members (`error.code == .timedOut`)
    /// or `switch` with a `default:`; new codes may be added without breaking clients' code, as
    /// swift-nio's `FileSystemError.Code` does.
    public struct Code: Sendable, Hashable, CustomStringConvertible {
        private enum Value: String, Sendable, Hashable {
            case timedOut, cancelled, wouldDeadlock, invalidPath, isDirectory, isSymbolicLink, permissionDenied
            case readOnlyFilesystem, nameTooLong, notSupportedByFilesystem, invalidTimeout, invalidConfiguration
            case lockLost, io, modeChangeNotAllowed, serverUnavailable
        }

        private let value: Value

        private init(_ value: Value) { self.value = value }

        /// The code's name, as `timedOut`.
        public var description: String { value.rawValue }

        /// The wait ended at its timeout (or the lock is non-blocking) while someone else held it.
        public static let timedOut = Code(.timedOut)

        /// The caller's cancel check asked to stop waiting.
        public static let cancelled = Code(.cancelled)

        /// Waiting would never end: the caller already holds this path through another lock object.
        public static let wouldDeadlock = Code(.wouldDeadlock)

        /// The path is empty, relative to nothing, or otherwise unusable.
        public static let invalidPath = Code(.invalidPath)

        /// A directory stands where the lock file should be.
        public static let isDirectory = Code(.isDirectory)

        /// A symbolic link stands where the lock file should be; it is never followed.
        public static let isSymbolicLink = Code(.isSymbolicLink)

        /// The process may not create or open the lock file.
        public static let permissionDenied = Code(.permissionDenied)

        /// The lock file would be on a read-only filesystem.
        public static let readOnlyFilesystem = Code(.readOnlyFilesystem)

        /// A path component or the whole path is longer than the filesystem allows.
        public static let nameTooLong = Code(.nameTooLong)

        /// The filesystem does not support this kind of lock.
        public static let notSupportedByFilesystem = Code(.notSupportedByFilesystem)

        /// A timeout is negative or not a finite number.
        public static let invalidTimeout = Code(.invalidTimeout)

        /// Two configurations for one singleton lock disagree, or an option is out of range.
        public static let invalidConfiguration = Code(.invalidConfiguration)

        /// A lock the caller held is no longer held, without the caller releasing it: the hold
        /// vanished underneath it. For example a lease that expired or was broken (evicted) by
        /// another process, or a server lock whose session ended because its connection dropped.
        /// Whatever the lock protected may have been changed by another holder since; ``cause``
        /// carries the underlying error when there is one (a server's error, a system error).
        public static let lockLost = Code(.lockLost)

        /// The caller asked for the other mode of a lock it holds: shared while holding it
        /// exclusively (a downgrade) or exclusive while holding it shared (an upgrade).
        public static let modeChangeNotAllowed = Code(.modeChangeNotAllowed)

        /// The lock server could not be reached or was lost during the call: refused, unreachable,
        /// timed out while connecting, shutting down, out of connections, or the connection dropped
        /// before the lock was taken. Retrying later may succeed.
        public static let serverUnavailable = Code(.serverUnavailable)

        /// Any other system error.
        public static let io = Code(.io)
    }

    /// What kind of failure this is.
    public var code: Code
    /// The lock the error is about: a lock file's path or a lock's name.
    public var resource: LockResource
    /// A sentence that says what happened and what to do.
    public var message: String
    /// Who held the lock, when known (timeouts and deadlocks).
    public var holder: LockHolder?
    /// How long the caller waited before giving up (timeouts).
    public var waited: Duration?
    /// The error behind this one, if any: a failed system call's `Errno` (swift-system's
    /// `SystemPackage.Errno`), or a lock server's error.
    public var cause: (any Error & Sendable)?

    /// Creates an error about `resource`.
    ///
    /// - Parameters:
    ///   - code: What kind of failure this is.
    ///   - resource: The lock file or named lock.
    ///   - message: A sentence that says what happened and what to do.
    ///   - holder: Who held the lock, when known.
    ///   - waited: How long the caller waited, for timeouts.
    ///   - cause: The underlying error, if any.
    public init(
        _ code: Code, resource: LockResource, message: String, holder: LockHolder? = nil, waited: Duration? = nil,
        cause: (any Error & Sendable)? = nil
    ) {
        self.code = code
        self.resource = resource
        self.message = message
        self.holder = holder
        self.waited = waited
        self.cause = cause
    }

    /// The lock file's path, or for a lock that is no file its name (``LockResource/name``).
    ///
    /// Setting it renames the resource and keeps its kind.
    public var path: String {
        get { resource.name }
        set { resource.name = newValue }
    }

    public var description: String { message }
}

extension FileLockError {
    /// - Parameters:
    ///   - triedOnce: No wait was asked for (a try, a zero timeout, a non-blocking lock).
    ///   - hint: What the lock kind knows about why it stays held (an empty marker, one that
    ///     looks stale but could not be broken), said instead of the generic advice.
    static func timedOut(
        path: String, waited: Duration, holder: LockHolder?, what: String? = nil, triedOnce: Bool = false,
        hint: String? = nil
    ) -> FileLockError {
        let who = holder.map { holder in
            // Another thread, task or lock object of this very process: say so, a bare pid of
            // one's own is easily taken for some other program.
            // A server session says whose it is in its application name (`... PID@HOST`).
            let isThisProcess =
                holder.kind == .process
                ? holder.pid == System.processID && holder.host == ProcessIdentity.hostName
                : holder.applicationName?.contains(" \(System.processID)@\(ProcessIdentity.hostName.prefix(8))") == true
            return " held by \(holder)" + (isThisProcess ? " (this process: another thread, task or lock object)" : "")
        } ?? " held by another process"
        let subject = what ?? "lock '\(path)'"
        let advice =
            hint
            ?? (triedOnce
                ? "wait for it (a timeout), or retry later"
                : "wait longer (a larger timeout), retry later, or find out why the holder keeps it")
        let message =
            triedOnce
            ? "\(subject) is\(who); not waiting for it (a try); \(advice)"
            : "timed out after \(waited.formattedSeconds) waiting for \(subject)\(who); \(advice)"
        return FileLockError(.timedOut, path: path, message: message, holder: holder, waited: waited)
    }

    static func wouldDeadlock(path: String) -> FileLockError {
        FileLockError(
            .wouldDeadlock, path: path,
            message: "deadlock: this thread or task already holds '\(path)' through another lock object, so waiting "
                + "for it without a timeout would never end; create the lock with isSingleton: true to share one "
                + "reentrant object per path, or pass a timeout")
    }

    static func invalidTimeout(path: String, _ description: String) -> FileLockError {
        FileLockError(
            .invalidTimeout, path: path,
            message: "invalid timeout \(description) for lock '\(path)': use nil to wait forever, .zero to try once, "
                + "or a positive finite duration")
    }

    /// Maps a failed system call on the lock file to an error that says what to do.
    static func system(_ error: Errno, path: String, operation: String) -> FileLockError {
        let number = error.rawValue
        switch error {
        case .accessDenied, .notPermitted:
            return FileLockError(
                .permissionDenied, path: path,
                message: "permission denied to \(operation) lock file '\(path)': choose a folder this user can write "
                    + "to, or give this user access to the file and its folder", errno: number)
        case .readOnlyFilesystem:
            return FileLockError(
                .readOnlyFilesystem, path: path,
                message: "cannot \(operation) lock file '\(path)': the filesystem is read-only; put the lock file on "
                    + "a writable filesystem (for example /tmp or /run/lock)", errno: number)
        case .nameTooLong:
            let shown = "'\(shortened(path))' (\(path.utf8.count) bytes)"
            let limit =
                if let name = path.split(separator: "/").first(where: { $0.utf8.count > 255 }) {
                    "its component '\(shortened(String(name)))' is \(name.utf8.count) bytes, more than the 255 a file "
                        + "or folder name may have; use a shorter name"
                } else if path.utf8.count >= 4096 {
                    "the whole path is over PATH_MAX, 4096 bytes (its closing NUL included); use a shorter path, "
                        + "for example in a folder nearer the root"
                } else {
                    "the name is too long for this filesystem (some allow fewer than 255 bytes per name, and a "
                        + "relative path also counts its current folder against the 4096 of PATH_MAX); use a shorter path"
                }
            return FileLockError(
                .nameTooLong, path: path, message: "cannot \(operation) lock file \(shown): \(limit)", errno: number)
        case .isDirectory:
            return FileLockError(
                .isDirectory, path: path,
                message: "'\(path)' is a directory, not a lock file: pass a file path such as '\(path)/.lock'",
                errno: number)
        case .notDirectory:
            return FileLockError(
                .invalidPath, path: path,
                message: "cannot \(operation) lock file '\(path)': a part of its folder path is a file, not a folder",
                errno: number)
        case .tooManySymbolicLinks:
            return FileLockError(
                .isSymbolicLink, path: path,
                message: "'\(path)' is a symbolic link; lock files are never followed through links (its target is "
                    + "left untouched): remove the link or lock the target's path directly", errno: number)
        case _ where error.isNotSupported:
            return FileLockError(
                .notSupportedByFilesystem, path: path,
                message: "cannot \(operation) lock file '\(path)': its filesystem does not support this (\(error)); "
                    + "put the lock file on another filesystem", errno: number)
        case .tooManyOpenFiles, .systemFileTableFull:
            return FileLockError(
                .io, path: path,
                message: "cannot \(operation) lock file '\(path)': \(error); too many open files: close files you no "
                    + "longer need or raise the limit (ulimit -n)", errno: number)
        case .noSpace, .quotaExceeded:
            return FileLockError(
                .io, path: path,
                message: "cannot \(operation) lock file '\(path)': \(error); free some space or put the lock file "
                    + "on another filesystem", errno: number)
        default:
            return FileLockError(
                .io, path: path, message: "cannot \(operation) lock file '\(path)': \(error)", errno: number)
        }
    }
}

/// `text` if short, else its first and last `kept` bytes (whole characters) around an ellipsis:
/// a message should name a 4 KB path without printing all of it.
func shortened(_ text: String, keeping kept: Int = 40) -> String {
    let scalars = text.unicodeScalars
    guard text.utf8.count > 2 * kept + 3 else { return text }
    var headEnd = scalars.startIndex
    var used = 0
    while headEnd < scalars.endIndex, used + UTF8.width(scalars[headEnd]) <= kept {
        used += UTF8.width(scalars[headEnd])
        headEnd = scalars.index(after: headEnd)
    }
    var tailStart = scalars.endIndex
    used = 0
    while tailStart > headEnd, used + UTF8.width(scalars[scalars.index(before: tailStart)]) <= kept {
        tailStart = scalars.index(before: tailStart)
        used += UTF8.width(scalars[tailStart])
    }
    return String(scalars[..<headEnd]) + "…" + String(scalars[tailStart...])
}

extension Duration {
    /// "1.234 s" style text for messages.
    /// Never traps: negative and huge durations (saturated at about 292 years) format too.
    var formattedSeconds: String {
        let nanoseconds = totalNanoseconds
        let milliseconds = nanoseconds.magnitude / 1_000_000
        let fraction = String(milliseconds % 1000)
        let sign = nanoseconds <= -1_000_000 ? "-" : ""
        return "\(sign)\(milliseconds / 1000).\(String(repeating: "0", count: 3 - fraction.count))\(fraction) s"
    }
}
