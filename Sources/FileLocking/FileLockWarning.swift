import Synchronization

/// Something the library noticed that a program (or its log) should hear about, although nothing
/// failed. Delivered to ``FileLockWarnings/handler``.
public struct FileLockWarning: Sendable, Hashable, CustomStringConvertible {
    /// What kind of warning this is: compare with the static members (`warning.code ==
    /// .kernelLockOnNetworkFilesystem`) or `switch` with a `default:`; new codes may be added
    /// without breaking clients' code.
    public struct Code: Sendable, Hashable, CustomStringConvertible {
        private enum Value: String, Sendable, Hashable {
            case kernelLockOnNetworkFilesystem
        }

        private let value: Value

        private init(_ value: Value) { self.value = value }

        /// The code's name, as `kernelLockOnNetworkFilesystem`.
        public var description: String { value.rawValue }

        /// A kernel lock (``FileLock``, ``ReadWriteLock``, ``ByteRangeLock``) was used on a network
        /// or FUSE filesystem, where it may not exclude processes on other hosts (on FUSE, not even
        /// processes using another mount of the same files): see ``NetworkFilesystem``. Marker-file
        /// locks such as ``SoftFileLock`` work there.
        public static let kernelLockOnNetworkFilesystem = Code(.kernelLockOnNetworkFilesystem)
    }

    /// What kind of warning this is.
    public var code: Code
    /// The lock it is about.
    public var resource: LockResource
    /// The kind of lock that noticed: `FileLock`, `ReadWriteLock` or `ByteRangeLock`.
    public var lockKind: String
    /// The filesystem, for ``Code/kernelLockOnNetworkFilesystem``.
    public var filesystem: NetworkFilesystem?
    /// A sentence that says what was noticed and what to do.
    public var message: String

    /// Creates a warning (for tests of code that handles warnings).
    public init(
        _ code: Code, resource: LockResource, lockKind: String, filesystem: NetworkFilesystem? = nil, message: String
    ) {
        self.code = code
        self.resource = resource
        self.lockKind = lockKind
        self.filesystem = filesystem
        self.message = message
    }

    public var description: String { message }
}

extension FileLockWarning {
    /// The warning for a kernel lock of `lockKind` ("FileLock", "ReadWriteLock", "ByteRangeLock")
    /// on `filesystem`; the `filelock` command prints the same text.
    package static func kernelLock(_ lockKind: String, path: String, on filesystem: NetworkFilesystem) -> FileLockWarning {
        let locks = lockKind == "FileLock" ? "flock" : "record locks"
        let reach =
            filesystem.isFUSE
            ? "may not exclude processes on other hosts, nor processes of this host that use another mount of the "
                + "same files"
            : "may not exclude processes on other hosts that use the same files"
        let message =
            "\(lockKind) '\(path)' is on a \(filesystem.isFUSE ? "FUSE" : "network") filesystem (\(filesystem)): "
            + "kernel locks (\(locks)) there \(reach); to lock across hosts use SoftFileLock (SoftReadWriteLock for "
            + "many readers and one writer, SoftFileLease for a lease that expires), which needs only exclusive file "
            + "creation"
        return FileLockWarning(
            .kernelLockOnNetworkFilesystem, resource: LockResource(kind: .file, name: path), lockKind: lockKind,
            filesystem: filesystem, message: message)
    }
}

/// Where the library's warnings go: nowhere until a program sets ``handler`` (the library never
/// prints on its own).
///
/// ```swift
/// FileLockWarnings.handler = { warning in
///     logger.warning("\(warning.message)")
/// }
/// ```
///
/// Today there is one warning, ``FileLockWarning/Code/kernelLockOnNetworkFilesystem``: the first
/// acquisition by a ``FileLock``, ``ReadWriteLock`` or ``ByteRangeLock`` on a network or FUSE
/// filesystem (see ``NetworkFilesystem``) reports it, once per mounted filesystem in the process
/// (the first lock object that finds it names its path), while a handler is set. Finding out
/// costs one `fstatfs` per lock object, at its first acquisition.
public enum FileLockWarnings {
    /// A warning handler: called on the thread that acquires (or, for an `async` acquisition, a
    /// helper thread of the library), synchronously, so keep it short; it must not wait for the
    /// lock that is being acquired.
    public typealias Handler = @Sendable (FileLockWarning) -> Void

    /// Receives the library's warnings; `nil` (the default) drops them. Set it once, early, for
    /// the whole process.
    public static var handler: Handler? {
        get { state.withLock { $0.handler } }
        set { state.withLock { $0.handler = newValue } }
    }

    private struct State {
        var handler: Handler?
        /// The filesystems (devices) reported on so far.
        var reported: Set<UInt64> = []
    }

    private static let state = Mutex(State())

    /// Makes the globals (see `LazyGlobals`).
    static func finishGlobals() {
        state.withLock { _ in }
    }

    /// Hands `warning` to the handler, unless one about `filesystem` was handed on already; with
    /// no handler set, nothing is delivered nor remembered. The handler runs outside the lock.
    static func deliver(_ warning: FileLockWarning, onceForFilesystem filesystem: UInt64) {
        let handler = state.withLock { state -> Handler? in
            guard let handler = state.handler, state.reported.insert(filesystem).inserted else { return nil }
            return handler
        }
        handler?(warning)
    }
}
