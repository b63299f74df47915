import SystemPackage

// The `FilePath` forms of the lock initializers: paths of any bytes, as the kernel sees them.
// (Kept apart because SystemPackage's `Errno` would shadow the module's own in files that use it.)

extension LockPath {
    /// A path given as a `FilePath`, any bytes but NUL.
    init(_ given: FilePath) throws {
        let bytes = given.withPlatformString(System.bytes(ofCString:))
        guard !bytes.isEmpty else {
            throw FileLockError(
                .invalidPath, path: "", message: "the lock file path is empty: pass a file path such as '/tmp/app.lock'")
        }
        try self.init(bytes: bytes)
    }
}

extension FileLockError {
    /// `path` as the library's messages show it: valid UTF-8 as it is, every other byte as `\xNN`
    /// (for a program that names a lock file in its own messages the same way).
    public static func displayText(of path: FilePath) -> String {
        displayText(ofPathBytes: path.withPlatformString(System.bytes(ofCString:)))
    }

    /// A path's bytes (not normalised, as `FilePath` would) as the library's messages show them.
    public static func displayText(ofPathBytes bytes: [UInt8]) -> String {
        CPath.display(bytes)
    }
}

extension FileLock {
    /// Creates a lock object for the lock file at `path`, a path of any bytes: a name that is not
    /// valid UTF-8 locks exactly the file it names. The other parameters are as for the `String` form.
    public init(
        at path: FilePath, timeout: Duration? = nil, isBlocking: Bool = true, filePermissions: UInt32? = nil,
        ownership: LockOwnership = .caller, isSingleton: Bool = false, pollInterval: Duration = .milliseconds(50),
        fallsBackToSoft: Bool = false, removesFileOnRelease: Bool = false
    ) throws {
        try self.init(
            lockPath: LockPath(path), timeout: timeout, isBlocking: isBlocking, filePermissions: filePermissions,
            ownership: ownership, isSingleton: isSingleton, pollInterval: pollInterval,
            fallsBackToSoft: fallsBackToSoft, removesFileOnRelease: removesFileOnRelease)
    }
}

extension SoftFileLock {
    /// Creates a lock object for the marker file at `path`, a path of any bytes: a name that is
    /// not valid UTF-8 names exactly that marker. The other parameters are as for the `String` form.
    public init(
        at path: FilePath, timeout: Duration? = nil, isBlocking: Bool = true, filePermissions: UInt32? = nil,
        lifetime: Duration? = nil, ownership: LockOwnership = .caller, isSingleton: Bool = false,
        pollInterval: Duration = .milliseconds(50)
    ) throws {
        try self.init(
            lockPath: LockPath(path), timeout: timeout, isBlocking: isBlocking, filePermissions: filePermissions,
            lifetime: lifetime, ownership: ownership, isSingleton: isSingleton, pollInterval: pollInterval)
    }
}

extension ByteRangeLock {
    /// Opens the file at `path`, a path of any bytes (a name that is not valid UTF-8 opens exactly
    /// the file it names); the other parameters are as for the `String` form.
    public convenience init(
        at path: FilePath, readOnly: Bool = false, filePermissions: UInt32? = nil,
        pollInterval: Duration = .milliseconds(50)
    ) throws {
        try self.init(
            lockPath: LockPath(path), readOnly: readOnly, filePermissions: filePermissions, pollInterval: pollInterval)
    }
}

extension ByteRangeLock {
    /// Locks ranges of a file the caller opened (swift-system's `FileDescriptor`); the caller
    /// keeps the descriptor and closes it (which drops the locks). `path` names the file in
    /// messages and finds holders.
    public convenience init(
        descriptor: FileDescriptor, path: FilePath, pollInterval: Duration = .milliseconds(50)
    ) throws {
        try self.init(descriptor: descriptor.rawValue, lockPath: LockPath(path), pollInterval: pollInterval)
    }
}

extension ReadWriteLock {
    /// Creates a lock object for the lock file at `path`, a path of any bytes. The other
    /// parameters are as for the `String` form.
    public init(
        at path: FilePath, timeout: Duration? = nil, isBlocking: Bool = true, filePermissions: UInt32? = nil,
        ownership: LockOwnership = .caller, isSingleton: Bool = true, pollInterval: Duration = .milliseconds(50)
    ) throws {
        try self.init(
            lockPath: LockPath(path), timeout: timeout, isBlocking: isBlocking, filePermissions: filePermissions,
            ownership: ownership, isSingleton: isSingleton, pollInterval: pollInterval)
    }
}

extension SoftReadWriteLock {
    /// Creates a lock object for `path`, a path of any bytes (its log is the folder `<path>.rw`,
    /// the same bytes and `.rw`). The other parameters are as for the `String` form.
    public init(
        at path: FilePath, timeout: Duration? = nil, isBlocking: Bool = true, heartbeatInterval: Duration = .seconds(30),
        staleThreshold: Duration? = nil, ownership: LockOwnership = .caller, isSingleton: Bool = true,
        pollInterval: Duration = .milliseconds(100), onLoss: (@Sendable (LockLoss) -> Void)? = nil
    ) throws {
        try self.init(
            lockPath: LockPath(path), timeout: timeout, isBlocking: isBlocking, heartbeatInterval: heartbeatInterval,
            staleThreshold: staleThreshold, ownership: ownership, isSingleton: isSingleton, pollInterval: pollInterval,
            onLoss: onLoss)
    }
}

extension SoftFileLease {
    /// Creates a lease object for the marker at `path`, a path of any bytes. The other parameters
    /// are as for the `String` form.
    public init(
        at path: FilePath, duration: Duration = .seconds(30), heartbeatInterval: Duration? = nil,
        timeout: Duration? = nil, isBlocking: Bool = true, filePermissions: UInt32? = nil,
        ownership: LockOwnership = .caller, isSingleton: Bool = false, pollInterval: Duration = .milliseconds(50),
        onLoss: (@Sendable (LockLoss) -> Void)? = nil
    ) throws {
        try self.init(
            lockPath: LockPath(path), duration: duration, heartbeatInterval: heartbeatInterval, timeout: timeout,
            isBlocking: isBlocking, filePermissions: filePermissions, ownership: ownership, isSingleton: isSingleton,
            pollInterval: pollInterval, onLoss: onLoss)
    }
}
