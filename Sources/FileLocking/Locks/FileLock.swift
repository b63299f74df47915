/// An exclusive lock between processes, threads and tasks, on a lock file, kept by the kernel
/// with `flock(2)`.
///
/// ```swift
/// let lock = try FileLock(at: "/tmp/cache.lock")
/// try lock.withLock(timeout: .seconds(5)) {
///     // only one process, thread or task at a time runs this
/// }
/// ```
///
/// Because it uses `flock(2)`, a `FileLock` excludes Python's `filelock.FileLock`, the
/// `flock(1)` command and SwiftPM's own locking on the same file.
///
/// The kernel releases the lock when the holder exits or crashes (even on `SIGKILL`), and wakes a
/// waiter the moment the lock is released: there is no polling, also with a timeout or a cancel
/// check.
///
/// The lock file is created (with any missing folders) on first use and **stays in place after
/// release**. Deleting it would break mutual exclusion: a waiter that opened the old file keeps
/// waiting on it and wins it after release, while a newcomer creates a new file at the same path
/// and locks that one, so both would believe they hold the lock. (For safety with programs that
/// do delete lock files, an acquirer that finds its file deleted after locking starts over.)
///
/// An existing lock file this user may only read (another user's shared lock file, a read-only
/// mount) is opened read-only and still locks: `flock` needs no write access. (NFS emulates
/// `flock` with record locks, whose exclusive form does need it; the error then says so.)
///
/// Use a separate lock file beside the data it guards (`data.json.lock` for `data.json`), not
/// the data file itself. On network filesystems where `flock` is not supported, use a
/// marker-file lock instead; the error message says so.
public struct FileLock: EngineBackedLock {
    let engine: LockEngine<FlockPrimitive>

    /// Creates a lock object for the lock file at `path`. Nothing is opened until it is acquired.
    ///
    /// - Parameters:
    ///   - path: The lock file. Relative paths are resolved against the current folder now.
    ///   - timeout: The default for `acquire()` and `withLock { }`; `nil` waits forever.
    ///   - isBlocking: `false` makes `acquire()` try exactly once.
    ///   - filePermissions: Permission bits for the lock file (for example `0o666` so that every
    ///     user can share it); `nil` lets the umask decide, as `open(2)` does.
    ///   - ownership: Whether holds belong to the acquiring thread or task (`.caller`, the
    ///     default) or to this lock object, so that any thread or task may release (`.lockObject`,
    ///     Python's `thread_local=False`); see ``LockOwnership``.
    ///   - isSingleton: Share one lock object per canonical path in this process, so that
    ///     reentrancy works without passing the object around. All singletons of one path must be
    ///     created with the same settings.
    ///   - pollInterval: How often a cancel check is asked while waiting.
    /// - Throws: `FileLockError` with `.invalidPath`/`.isDirectory` for an empty or folder-like
    ///   path, `.invalidTimeout` for a negative timeout, `.invalidConfiguration` when a singleton
    ///   for this path exists with other settings.
    public init(
        at path: String, timeout: Duration? = nil, isBlocking: Bool = true, filePermissions: UInt32? = nil,
        ownership: LockOwnership = .caller, isSingleton: Bool = false, pollInterval: Duration = .milliseconds(50)
    ) throws {
        try self.init(
            lockPath: LockPath(path), timeout: timeout, isBlocking: isBlocking, filePermissions: filePermissions,
            ownership: ownership, isSingleton: isSingleton, pollInterval: pollInterval)
    }


    init(
        lockPath: LockPath, timeout: Duration?, isBlocking: Bool, filePermissions: UInt32?, ownership: LockOwnership,
        isSingleton: Bool, pollInterval: Duration
    ) throws {
        let configuration = try LockConfiguration(
            defaultTimeout: timeout, isBlocking: isBlocking, pollInterval: pollInterval, filePermissions: filePermissions,
            ownership: ownership
        ).validated(path: lockPath.given)
        let primitive = FlockPrimitive(lockPath: lockPath, filePermissions: filePermissions)
        engine = try LockEngine.make(
            primitive: primitive, configuration: configuration, canonicalPath: lockPath.absolute,
            isSingleton: isSingleton)
    }

    /// The absolute path that is opened: the key for singletons and deadlock detection.
    public var canonicalPath: String { engine.primitive.lockPath.absolute.description }

    /// The process holding the lock, from the kernel's lock table (`/proc/locks` on Linux);
    /// `nil` when free or when the table is not available (macOS).
    public var holder: LockHolder? { engine.primitive.holders().first }

    /// Every process holding the lock (more than one only for shared holds).
    public var holders: [LockHolder] { engine.primitive.holders() }

    /// Acquires in shared mode (as `flock -s`) for the command-line tool; the library's shared
    /// locks arrive with the read-write lock.
    package func acquire(mode: LockMode, timeout: Duration?, cancelCheck: (() -> Bool)?) throws {
        try engine.acquire(mode: mode, timeout: timeout, cancelCheck: cancelCheck)
    }

    /// How many processes are blocked waiting for the lock (Linux; `0` elsewhere).
    public var waiterCount: Int { engine.primitive.waiterCount() }

}

extension FileLock {
    /// Converts a number of seconds from user input (a command line, a config file) to a timeout.
    ///
    /// Any finite number of seconds, 0 or more, is accepted, to the nanosecond. A huge one means
    /// "practically forever": waits are measured in nanoseconds of the monotonic clock, so any
    /// timeout beyond about 292 years waits as long as `nil` would, and values beyond what a
    /// `Duration` holds in whole seconds (`Int64.max`, about 2.9e11 years) become that.
    ///
    /// - Throws: `FileLockError` with `.invalidTimeout` for a negative, infinite or NaN value.
    public static func timeout(seconds: Double, path: String) throws -> Duration {
        guard seconds.isFinite, seconds >= 0 else { throw FileLockError.invalidTimeout(path: path, "\(seconds) s") }
        let whole = seconds.rounded(.towardZero)
        // Double(Int64.max) is 2^63, one more than Int64.max: only smaller values convert.
        guard whole < Double(Int64.max) else { return .seconds(Int64.max) }
        return .seconds(Int64(whole)) + .nanoseconds(Int64(((seconds - whole) * 1e9).rounded()))
    }
}
