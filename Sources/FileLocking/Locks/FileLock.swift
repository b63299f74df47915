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
/// The lock file is created (with any missing folders) on first use and by default **stays in
/// place after release**. Deleting it after unlocking would break mutual exclusion: a waiter that
/// opened the old file keeps waiting on it and wins it after release, while a newcomer creates a
/// new file at the same path and locks that one, so both would believe they hold the lock.
/// `removesFileOnRelease: true` deletes it safely instead: the holder deletes the file *before* it
/// unlocks, and every acquirer, once it holds the lock, checks that the path still names the file
/// it locked (device and inode; deleted or renamed away fails) and otherwise starts over on the
/// file now at the path. Only programs that make this check are safe to share such a lock:
/// this library (with either setting) and Python `filelock` on a local filesystem (it checks
/// the link count); `flock(1)` and SwiftPM do not check, and would overlap with a holder here.
///
/// An existing lock file this user may only read (another user's shared lock file, a read-only
/// mount) is opened read-only and still locks: `flock` needs no write access. (NFS emulates
/// `flock` with record locks, whose exclusive form does need it; the error then says so.)
///
/// Use a separate lock file beside the data it guards (`data.json.lock` for `data.json`), not
/// the data file itself. On filesystems where `flock` is not supported, acquiring throws
/// `.notSupportedByFilesystem`; use ``SoftFileLock`` there, or create the lock with
/// `fallsBackToSoft: true` to switch to a marker file at the same path where `flock` fails
/// (see ``mechanism``). On a network or FUSE filesystem, where `flock` may work but not reach
/// other hosts (or other mounts), ``networkFilesystem`` says so, and the first acquisition
/// reports it to ``FileLockWarnings/handler``.
public struct FileLock: EngineBackedLock {
    let engine: LockEngine<FileLockPrimitive>
    package var lockEngine: any LockEngineSurface { engine }

    /// How a `FileLock` keeps the lock.
    public enum Mechanism: Sendable, Hashable {
        /// `flock(2)` on the lock file: the kernel frees it when the holder dies.
        case flock
        /// A marker file at the lock path, as ``SoftFileLock`` makes (the filesystem has no
        /// `flock`, and the lock was made with `fallsBackToSoft: true`).
        case marker
    }

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
    ///   - pollInterval: How often a cancel check is asked while waiting (and, for a marker
    ///     fallback, the longest pause between tries).
    ///   - fallsBackToSoft: Where the filesystem has no `flock` (`flock` fails with `ENOSYS`,
    ///     `ENOTSUP`/`EOPNOTSUPP` or `ENOLCK`: some FUSE and container mounts, NFS without a lock
    ///     daemon), lock with a marker file at the lock path instead, exactly as ``SoftFileLock``
    ///     (Python `filelock`'s `fallback_to_soft`, which Python enables by default). Off by
    ///     default because a marker behaves differently when its holder dies: the kernel frees
    ///     nothing, the marker stays until a later acquirer proves its holder gone (same host
    ///     only) or someone removes it; waiters poll instead of being woken by the kernel. The
    ///     mechanism is found at the first acquisition, by trying `flock` on a new file beside the
    ///     lock file (where none can be created, no marker could be either: the missing `flock` is
    ///     then reported as without the fallback), and kept for the lock object: see ``mechanism``. The marker is never group-
    ///     or other-writable (`filePermissions` less those bits; `0o644` less the umask when
    ///     `nil`). `flock` that works but is local to one host (some network mounts, FUSE) is
    ///     no reason to fall back (``networkFilesystem`` tells such a filesystem): there, use
    ///     ``SoftFileLock``.
    ///   - removesFileOnRelease: Delete the lock file when the lock is released, safely: while
    ///     still holding it; every acquirer checks after locking that the path still names the
    ///     file it locked and else starts over. It then conflicts with programs that lock the file
    ///     without that check (`flock(1)`, SwiftPM): such a program that waited on the deleted
    ///     file gets it while the next holder here locks a new file. It costs an `lstat` and an
    ///     `unlink` per release, and a new file per acquisition. A shared hold deletes the file
    ///     only when no other shared holder remains. A marker fallback always removes its marker.
    /// - Throws: `FileLockError` with `.invalidPath`/`.isDirectory` for an empty or folder-like
    ///   path, `.invalidTimeout` for a negative timeout, `.invalidConfiguration` when a singleton
    ///   for this path exists with other settings, `.nameTooLong` for a path that leaves no room
    ///   for a marker fallback's helper names.
    public init(
        at path: String, timeout: Duration? = nil, isBlocking: Bool = true, filePermissions: UInt32? = nil,
        ownership: LockOwnership = .caller, isSingleton: Bool = false, pollInterval: Duration = .milliseconds(50),
        fallsBackToSoft: Bool = false, removesFileOnRelease: Bool = false
    ) throws {
        try self.init(
            lockPath: LockPath(path), timeout: timeout, isBlocking: isBlocking, filePermissions: filePermissions,
            ownership: ownership, isSingleton: isSingleton, pollInterval: pollInterval,
            fallsBackToSoft: fallsBackToSoft, removesFileOnRelease: removesFileOnRelease)
    }


    init(
        lockPath: LockPath, timeout: Duration?, isBlocking: Bool, filePermissions: UInt32?, ownership: LockOwnership,
        isSingleton: Bool, pollInterval: Duration, fallsBackToSoft: Bool, removesFileOnRelease: Bool
    ) throws {
        let configuration = try LockConfiguration(
            defaultTimeout: timeout, isBlocking: isBlocking, pollInterval: pollInterval, filePermissions: filePermissions,
            ownership: ownership
        ).validated(path: lockPath.given)
        var marker: SoftPrimitive?
        if fallsBackToSoft {
            try SoftFileLock.checkRoomForHelperNames(lockPath)
            marker = SoftPrimitive(
                lockPath: lockPath, filePermissions: filePermissions.map { $0 & ~0o022 }, lifetime: nil,
                pollInterval: pollInterval)
        }
        let primitive = FileLockPrimitive(
            kernel: FlockPrimitive(
                lockPath: lockPath, filePermissions: filePermissions, removesFileOnRelease: removesFileOnRelease),
            marker: marker)
        engine = try LockEngine.make(
            primitive: primitive, configuration: configuration, canonicalPath: lockPath.absolute,
            isSingleton: isSingleton)
        // The engine compares the settings it knows; these two are the primitive's.
        if isSingleton, self.fallsBackToSoft != fallsBackToSoft || self.removesFileOnRelease != removesFileOnRelease {
            throw FileLockError(
                .invalidConfiguration, path: lockPath.given,
                message: "a singleton lock for '\(lockPath.absolute)' already exists with other settings "
                    + "(fallsBackToSoft: \(self.fallsBackToSoft), removesFileOnRelease: \(self.removesFileOnRelease)); "
                    + "create every singleton of one path with the same settings (asked for fallsBackToSoft: "
                    + "\(fallsBackToSoft), removesFileOnRelease: \(removesFileOnRelease))")
        }
    }

    /// Whether this lock switches to a marker file where the filesystem has no `flock`.
    public var fallsBackToSoft: Bool { engine.primitive.marker != nil }

    /// Whether releasing deletes the lock file (see `init`).
    public var removesFileOnRelease: Bool { engine.primitive.kernel.removesFileOnRelease }

    /// How this lock is kept: `.flock`, or `.marker` where the filesystem has no `flock` and the lock
    /// falls back to a marker; `nil` while that is not known yet (a lock that falls back, before
    /// its first acquisition).
    public var mechanism: Mechanism? { engine.primitive.mechanism }

    /// The absolute path that is opened: the key for singletons and deadlock detection.
    public var canonicalPath: String { engine.primitive.lockPath.absolute.description }

    /// The network or FUSE filesystem the lock file is on, or `nil` on a local filesystem.
    ///
    /// `flock` there may not exclude processes on other hosts (on FUSE, not even processes that use
    /// another mount of the same files): across hosts use ``SoftFileLock``. See
    /// ``NetworkFilesystem``. Found once per lock object and kept: by the first acquisition
    /// (`fstatfs` of the lock file, which also reports it once to ``FileLockWarnings/handler``), or
    /// before that by `statfs` of the lock file's folder (of the nearest existing folder above it
    /// when it is missing).
    public var networkFilesystem: NetworkFilesystem? {
        engine.primitive.kernel.filesystem.filesystem(ofFolder: engine.primitive.lockPath.parent)
    }

    /// The process holding the lock, from the kernel's lock table (`/proc/locks` on Linux), or
    /// with a marker fallback from the marker (with host and since when); `nil` when free or
    /// when the table is not available (macOS).
    public var holder: LockHolder? { engine.primitive.holders().first }

    /// Every process holding the lock (more than one only for shared holds).
    public var holders: [LockHolder] { engine.primitive.holders() }

    /// Acquires in shared mode (as `flock -s`) for the command-line tool; the library's shared
    /// locks arrive with the read-write lock.
    package func acquire(mode: LockMode, timeout: Duration?, cancelCheck: (() -> Bool)?) throws {
        try engine.acquire(mode: mode, timeout: timeout, cancelCheck: cancelCheck)
    }

    /// How many processes are blocked waiting for the lock (Linux; `0` elsewhere, and for a
    /// marker fallback, whose waiters poll).
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
