/// An exclusive lock that is the existence of a marker file, for filesystems where kernel locks
/// do not work (NFS, some FUSE and container mounts).
///
/// ```swift
/// let lock = try SoftFileLock(at: "/shared/nfs/jobs/queue.lock")
/// try lock.withLock(timeout: .seconds(30)) {
///     // one process at a time, across every host that mounts /shared/nfs
/// }
/// ```
///
/// Acquiring creates the marker atomically (`O_CREAT | O_EXCL`) and writes this process's id,
/// host name and start time into it, in the format of Python `filelock.SoftFileLock`, so Swift
/// and Python processes share markers: each sees the other's holder and breaks the other's
/// stale marker. Releasing deletes the marker, only ours.
///
/// **When the holder dies** without releasing, the marker stays. A marker counts as stale, and is
/// broken by the next acquirer, only on proof: it comes from this host and its process is gone
/// or its pid now belongs to a newer process (the start times differ); or it is malformed and
/// older than two seconds. Breaking swaps in the breaker's own marker atomically, so two
/// breakers never both win and a live holder is never removed: by exchanging the two names
/// (`renameat2(RENAME_EXCHANGE)`) where the filesystem can, and on NFS, SMB and FUSE, which cannot,
/// by claiming the break with an exclusively created `<lock>.break` (one claimant at a time),
/// reading the marker afresh under the claim and renaming the breaker's marker over it.
/// Releasing moves the marker aside before deleting it, so a release never deletes a marker
/// someone else swapped in. A marker from **another host is never broken by liveness** (its pid
/// means nothing here): remove it by hand, or set a `lifetime`.
///
/// **What it does not protect against**: nothing enforces the lock (a process that does not
/// use it is not stopped); with a `lifetime`, a holder that works longer than the lifetime may be
/// broken while it still works, so exclusion is no longer strict; on filesystems whose clocks
/// disagree between hosts, lifetimes and the grace period are judged by the marker's mtime.
/// Waiting polls (there is no kernel wake-up): from 1 ms, doubling up to `pollInterval`; on a
/// local filesystem a folder watch (inotify) wakes waiters as soon as the marker goes.
///
/// Prefer ``FileLock`` wherever `flock` works: it is faster, wakes waiters instantly, and the
/// kernel frees it when the holder dies.
public struct SoftFileLock: EngineBackedLock {
    let engine: LockEngine<SoftPrimitive>
    package var lockEngine: any LockEngineSurface { engine }

    /// Creates a lock object for the marker file at `path`. Nothing is created until it is acquired.
    ///
    /// - Parameters:
    ///   - path: The marker file. Relative paths are resolved against the current folder now.
    ///   - timeout: The default for `acquire()` and `withLock { }`; `nil` waits forever.
    ///   - isBlocking: `false` makes `acquire()` try exactly once.
    ///   - filePermissions: Permission bits for the marker; `nil` means `0o644` less the umask, as
    ///     Python `filelock` creates them, so that other users can read who holds the lock (and
    ///     judge whether it is stale). Pass `0o600` to hide the holder from other users.
    ///   - lifetime: A marker older than this may be broken even if its holder lives (gives up
    ///     strict exclusion, as in Python `filelock`); `nil` never expires markers.
    ///   - ownership: Whether holds belong to the acquiring thread or task (`.caller`, the
    ///     default) or to this lock object, so that any thread or task may release (`.lockObject`,
    ///     Python's `thread_local=False`); see ``LockOwnership``.
    ///   - isSingleton: Share one lock object per canonical path in this process.
    ///   - pollInterval: The longest pause between tries while waiting.
    /// - Throws: `FileLockError` for an empty or folder-like path, a negative timeout or lifetime,
    ///   or a singleton with other settings.
    public init(
        at path: String, timeout: Duration? = nil, isBlocking: Bool = true, filePermissions: UInt32? = nil,
        lifetime: Duration? = nil, ownership: LockOwnership = .caller, isSingleton: Bool = false,
        pollInterval: Duration = .milliseconds(50)
    ) throws {
        try self.init(
            lockPath: LockPath(path), timeout: timeout, isBlocking: isBlocking, filePermissions: filePermissions,
            lifetime: lifetime, ownership: ownership, isSingleton: isSingleton, pollInterval: pollInterval)
    }


    init(
        lockPath: LockPath, timeout: Duration?, isBlocking: Bool, filePermissions: UInt32?, lifetime: Duration?,
        ownership: LockOwnership, isSingleton: Bool, pollInterval: Duration
    ) throws {
        let path = lockPath.given
        try Self.checkRoomForHelperNames(lockPath)
        if let lifetime, lifetime <= .zero {
            throw FileLockError(
                .invalidConfiguration, path: path,
                message: "lifetime \(lifetime) for lock '\(path)' must be positive, or nil to never expire markers")
        }
        let configuration = try LockConfiguration(
            defaultTimeout: timeout, isBlocking: isBlocking, pollInterval: pollInterval, filePermissions: filePermissions,
            lifetime: lifetime, ownership: ownership
        ).validated(path: path)
        let primitive = SoftPrimitive(
            lockPath: lockPath, filePermissions: filePermissions, lifetime: lifetime, pollInterval: pollInterval)
        engine = try LockEngine.make(
            primitive: primitive, configuration: configuration, canonicalPath: lockPath.absolute,
            isSingleton: isSingleton)
    }

    /// Breaking and releasing use names beside the marker, up to 64 bytes longer; a marker path
    /// that leaves no room for them could be taken but never broken.
    static func checkRoomForHelperNames(_ lockPath: LockPath) throws {
        let length = lockPath.absolute.pathBytes.count
        guard length + 64 < 4096 else {
            throw FileLockError(
                .nameTooLong, path: lockPath.given,
                message: "the marker path '\(shortened(lockPath.absolute.description))' is \(length) bytes; a soft lock "
                    + "needs 64 more for the names it uses beside the marker, within PATH_MAX (4096 bytes): use a "
                    + "shorter path", errno: Errno.nameTooLong.rawValue)
        }
    }

    /// The absolute path of the marker: the key for singletons and deadlock detection.
    public var canonicalPath: String { engine.primitive.lockPath.absolute.description }

    /// The age after which a marker may be broken even if its holder lives; `nil`: never.
    public var lifetime: Duration? { engine.primitive.lifetime }

    /// Whether the marker names this process (through this or any other lock object, or a
    /// Python lock in this process).
    public var isHeldByUs: Bool { engine.primitive.isHeldByThisProcess() }

    /// What `breakMarker(force:)` did.
    public enum BreakOutcome: Sendable, Equatable {
        /// There was no marker.
        case noMarker
        /// The marker's holder looks alive (or cannot be judged): left alone.
        case holderAlive(LockHolder?)
        /// The marker was removed; its holder, when it could be read.
        case broken(LockHolder?)
        /// The marker could not be replaced: another user's marker in a sticky folder (such as
        /// `/tmp`) only its owner (or root) may remove, or a filesystem that can neither exchange
        /// names nor rename over it.
        case cannotBreak(LockHolder?)
        /// Another process is breaking the lock right now: its claim (`<lock>.break-claim`)
        /// stands. Try again in a moment; a claim left by a breaker that died is cleared once it
        /// has stood unchanged for 5 s (at once when its process, on this host, is gone).
        case breakInProgress(LockHolder?)
    }

    /// Breaks the marker if its holder is gone (stale, as judged for acquisition), or with
    /// `force` whatever its state, atomically: the marker is swapped for one of ours, which is
    /// then removed.
    ///
    /// An empty or malformed marker counts as abandoned once its modification time is two
    /// seconds past on this host's wall clock: one call has no earlier look to time it by, as an
    /// acquisition waiting on it has (which times it on its own monotonic clock, and never breaks
    /// an empty marker, whose holder may be an older Python `filelock` that writes no record).
    ///
    /// - Throws: `FileLockError` for a bad path (a directory, a symbolic link, a FIFO...) or
    ///   system failure.
    public func breakMarker(force: Bool = false) throws -> BreakOutcome {
        try engine.primitive.breakMarker(force: force)
    }

    /// The holder named by the marker: pid, host, since (the marker's modification time) and
    /// whether it looks stale; `nil` when there is no marker or it is malformed.
    public var holder: LockHolder? { engine.primitive.holders().first }

    /// What the marker file held when ``inspectMarker()`` looked.
    public enum MarkerState: Sendable, Hashable {
        /// No marker: the lock is free.
        case absent
        /// A holder's record: pid, host, since (the marker's modification time) and whether it
        /// looks stale, as ``SoftFileLock/holder`` reports it.
        case record(LockHolder)
        /// An empty marker, last modified at `modified`: held by a process that writes no record
        /// (Python `filelock` before 3.22 keeps its marker empty while it holds the lock) or by one
        /// between creating and writing it, or abandoned. Acquisition never breaks it.
        case empty(modified: UnixTime)
        /// `size` bytes that are no holder record (partly written, cut short, too long, some other
        /// program's file), last modified at `modified`: held by a writer still filling it, or
        /// abandoned.
        case malformed(modified: UnixTime, size: Int64)
        /// A marker of `size` bytes this process may not read (another user's): held, by a holder
        /// it cannot name or judge.
        case unreadable(modified: UnixTime, size: Int64)
        /// A lease (``SoftFileLease``'s, or Python's `SoftFileLease`: a `filelock/2` marker of mode
        /// `lease`): its holder, since its last renewal (the marker's modification time), and
        /// whether it looks stale (unrenewed for its duration, or its holder gone), and the lease's
        /// duration.
        case lease(LockHolder, duration: Duration)
    }

    /// Looks at the marker file without changing anything, telling apart what ``holder`` reports
    /// as `nil`: no marker, an empty one, a malformed one, one this user may not read.
    ///
    /// - Throws: `FileLockError` when something other than a regular file stands at the path: a
    ///   directory (`.isDirectory`), a symbolic link (`.isSymbolicLink`; never followed), a FIFO,
    ///   socket or device (`.invalidPath`); or when the path cannot be looked at (for example a
    ///   folder this user may not search: `.permissionDenied`).
    public func inspectMarker() throws -> MarkerState {
        let primitive = engine.primitive
        guard let observed = try primitive.inspect() else { return .absent }
        guard observed.isReadable else { return .unreadable(modified: observed.modified, size: observed.size) }
        guard let record = observed.record else {
            guard observed.size > 0 else { return .empty(modified: observed.modified) }
            if let marker = VersionTwoMarkerRecord(parsing: observed.contents), case .lease(let duration) = marker.mode {
                let holder = LockHolder(
                    pid: marker.pid, host: marker.host, since: observed.modified,
                    looksStale: primitive.isStale(observed, judgingUnparsableByAge: true))
                return .lease(holder, duration: duration)
            }
            return .malformed(modified: observed.modified, size: observed.size)
        }
        return .record(
            LockHolder(
                pid: record.pid, host: record.host, since: observed.modified, looksStale: primitive.isStale(observed)))
    }

    /// This host's name as markers record it, as Python `filelock` writes it: `gethostname()`
    /// with every byte outside `!`...`~` (and `?`) written as `?xx`, then `?pidns-<id>` in a pid
    /// namespace other than the host's (a container may share the host's name). A holder whose
    /// `host` differs runs elsewhere: its pid names no process here.
    public static var hostName: String { ProcessIdentity.hostName }
}

extension SoftFileLock {
    /// A Python `filelock/2` marker at the path (a `SoftFileLease`'s, or one of another mode), as
    /// the `filelock` command describes it; ``inspectMarker()`` reports such a marker as
    /// `.malformed`, since it holds no `filelock/1` record.
    package struct VersionTwoMarker: Sendable, Equatable {
        /// Its pid and host (no `since`: a lease's modification time is its last renewal, not
        /// when it was taken); `looksStale` as ``SoftFileLock/breakMarker(force:)`` judges it in
        /// one look: its holder on this host is gone, or a lease's modification time is its
        /// duration past on this host's clock.
        package var holder: LockHolder
        /// `mode=`: `lease`, `exclusive`, or `nil` for a mode this library does not know.
        package var mode: String?
        /// A lease's `duration=`.
        package var duration: Duration?
        /// The marker's modification time: a lease's last renewal.
        package var modified: UnixTime
    }

    /// The `filelock/2` marker at the path, or `nil` when there is none (no marker, or another
    /// kind of file).
    ///
    /// - Throws: As ``inspectMarker()``.
    package func versionTwoMarker() throws -> VersionTwoMarker? {
        let primitive = engine.primitive
        guard let observed = try primitive.inspect(), observed.isReadable,
            let marker = VersionTwoMarkerRecord(parsing: observed.contents)
        else { return nil }
        let mode: String?
        var duration: Duration?
        switch marker.mode {
        case .lease(let leaseDuration):
            mode = "lease"
            duration = leaseDuration
        case .exclusive: mode = "exclusive"
        case .unknown: mode = nil
        }
        let holder = LockHolder(
            pid: marker.pid, host: marker.host,
            looksStale: primitive.isStale(observed, judgingUnparsableByAge: true))
        return VersionTwoMarker(holder: holder, mode: mode, duration: duration, modified: observed.modified)
    }
}
