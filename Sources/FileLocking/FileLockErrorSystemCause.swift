import SystemPackage

// Kept apart from FileLockError.swift: where SystemPackage is imported, its `Errno` and its
// `~=(Errno, Error)` take over `case .notDirectory:` patterns meant for the module's own `Errno`,
// so `FileLockError.system` would map every errno to `.io`.

extension FileLockError {
    /// Creates an error about the lock file at `path`, caused by the system error `errno` if
    /// one is given (kept as ``cause``, an `Errno`).
    public init(
        _ code: Code, path: String, message: String, holder: LockHolder? = nil, waited: Duration? = nil,
        errno: Int32? = nil
    ) {
        self.init(
            code, resource: .file(path), message: message, holder: holder, waited: waited,
            cause: errno.map { SystemPackage.Errno(rawValue: $0) })
    }

    /// The system error number behind the failure: the ``cause``'s when it is an `Errno`, else `nil`.
    ///
    /// Setting a number makes it the cause; setting `nil` removes a system cause and keeps any other.
    public var errno: Int32? {
        get { (cause as? SystemPackage.Errno)?.rawValue }
        set {
            if let newValue {
                cause = SystemPackage.Errno(rawValue: newValue)
            } else if cause is SystemPackage.Errno {
                cause = nil
            }
        }
    }
}
