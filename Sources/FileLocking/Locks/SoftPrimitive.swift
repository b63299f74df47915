import Synchronization

/// A lock that is the existence of a marker file: the primitive behind `SoftFileLock`.
///
/// Acquire creates the marker with `O_CREAT | O_EXCL | O_NOFOLLOW` and writes this process's
/// record into it; release unlinks it only while the path still names our file. A marker is
/// broken only on proof that its holder is gone, by atomically exchanging it for our own marker.
struct SoftPrimitive: LockPrimitive {
    /// How long a malformed marker (for example one whose writer is between create and write)
    /// is left alone.
    static let malformedGrace = Duration.seconds(2)
    /// As Python `filelock`: readable by everyone (less the umask), so that other users see the
    /// holder and can judge staleness.
    static let defaultPermissions: UInt32 = 0o644

    let lockPath: LockPath
    let filePermissions: UInt32?
    let lifetime: Duration?
    let pollInterval: Duration

    var path: String { lockPath.given }
    var waitStyle: WaitStyle { .polling(initial: .milliseconds(1), maximum: pollInterval) }

    /// A wait's folder watch, made on its first pause.
    final class Attempt: @unchecked Sendable {
        // Only the acquiring thread or task uses it, one step at a time.
        var watch: FolderWatch?
        var isWatchSetUp = false
    }

    /// Our marker: kept open while held, to mark it released if someone displaced it.
    struct Hold: Sendable {
        var descriptor: Int32
        var identity: FileIdentity
    }

    /// Someone else's marker, as seen at one moment.
    struct Observed {
        var identity: FileIdentity
        var modified: UnixTime
        var changed: UnixTime
        var size: Int64
        var record: MarkerRecord?
        /// `false` when we may not read it (another user's marker): busy, never judged stale.
        var isReadable = true

        /// What must stay the same for a malformed marker to count as abandoned.
        var version: MarkerVersion { MarkerVersion(identity: identity, modified: modified, changed: changed, size: size) }
    }

    /// When each malformed marker version was first seen, on this host's monotonic clock: a
    /// marker is abandoned once it has not changed for the grace period. Comparing its mtime with
    /// our wall clock instead would break a peer's half-written marker on an NFS server whose
    /// clock runs behind.
    let malformedSince = MalformedMarkerClock()

    func begin(_ mode: LockMode) throws -> Attempt { Attempt() }

    func tryOnce(_ attempt: Attempt, _ mode: LockMode) throws -> AttemptOutcome<Hold> {
        // A few rounds: the marker may vanish or be broken between our create and our look.
        for _ in 0..<4 {
            if let hold = try create() { return .acquired(hold) }
            guard let observed = try inspect() else { continue }
            guard isStale(observed) else { return .busy }
            switch try takeOver(observed) {
            case .won(let hold): return .acquired(hold)
            case .lost: continue
            case .cannotBreak: return .busy
            }
        }
        return .busy
    }

    func pause(_ attempt: Attempt, upTo duration: Duration) {
        guard !setUpWatch(attempt) else { return }
        if let watch = attempt.watch {
            watch.wait(upTo: duration)
        } else {
            Threads.sleep(duration)
        }
    }

    func pause(_ attempt: Attempt, upTo duration: Duration) async throws {
        guard !setUpWatch(attempt) else { return }
        if let watch = attempt.watch {
            try await watch.changed(within: duration)
        } else {
            try await Task.sleep(for: duration)
        }
    }

    /// Makes the wait's folder watch on its first pause; `true` when it did and the pause should
    /// end at once: watch first, then try again, or a release between our last try and the watch
    /// would go unseen until the pause ends.
    private func setUpWatch(_ attempt: Attempt) -> Bool {
        guard !attempt.isWatchSetUp else { return false }
        attempt.isWatchSetUp = true
        attempt.watch = FolderWatch(folder: lockPath.parent)
        return attempt.watch != nil
    }

    func abandon(_ attempt: Attempt) {}

    /// Removes our marker, and only ours. Looking (`lstat`) and then unlinking the path would
    /// delete a breaker's marker swapped in between the two (with a `lifetime`, a holder may be
    /// broken while it works) and let a third process in beside the breaker. Instead the marker
    /// is moved to a private name in one step, checked there, and put back if it is not ours.
    func release(_ hold: Hold) {
        defer { System.close(hold.descriptor) }
        guard case .success(let status) = System.lstat(lockPath.absolute), FileIdentity(status) == hold.identity else {
            // Displaced (a lifetime expired, or a breaker's swap is in flight): leave the path
            // alone, and make our own inode read as malformed so that, should it come back, it is
            // breakable after the grace period instead of naming a live process that holds nothing.
            markReleased(hold.descriptor)
            return
        }
        let aside = lockPath.absolute.appending(".release.\(System.processID).\(randomHex())")
        guard case .success = System.rename(lockPath.absolute, to: aside) else {
            markReleased(hold.descriptor)
            return
        }
        if isOurs(hold, at: aside) {
            _ = System.unlink(aside)
            return
        }
        // A breaker's marker arrived between our look and our move: give it back (never
        // replacing a marker that someone created meanwhile), and mark ours released.
        _ = System.link(aside, to: lockPath.absolute)
        _ = System.unlink(aside)
        markReleased(hold.descriptor)
    }

    func forget(_ hold: Hold) {
        // A child forked without exec: the marker is the parent's.
        System.close(hold.descriptor)
    }

    private func markReleased(_ descriptor: Int32) {
        let released = Array("filelock/released\n".utf8)
        _ = System.write(descriptor, released, at: 0)
        _ = System.truncate(descriptor, to: Int64(released.count))
    }

    func holders() -> [LockHolder] {
        guard let observed = try? inspect(), let record = observed.record else { return [] }
        return [
            LockHolder(
                pid: record.pid, host: record.host, since: observed.modified, looksStale: isStale(observed))
        ]
    }

    /// Breaks the marker at the path if it is stale (or always, with `force`).
    func breakMarker(force: Bool) throws -> SoftFileLock.BreakOutcome {
        for _ in 0..<4 {
            guard let observed = try inspect() else { return .noMarker }
            let holder = observed.record.map {
                LockHolder(pid: $0.pid, host: $0.host, since: observed.modified, looksStale: isStale(observed))
            }
            guard force || isStale(observed, judgingUnparsableByAge: true) else { return .holderAlive(holder) }
            switch try takeOver(observed) {
            case .won(let ours):
                release(ours)
                return .broken(holder)
            case .lost: continue
            case .cannotBreak: return .cannotBreak(holder)
            }
        }
        return .holderAlive(nil)
    }

    /// Whether the marker now names this process: its pid and host, and its start token when
    /// both the marker and this process have one (as the stale check and Python filelock judge).
    func isHeldByThisProcess() -> Bool {
        guard let observed = try? inspect(), let record = observed.record else { return false }
        let current = MarkerRecord.current
        guard record.pid == current.pid, record.host == current.host else { return false }
        guard let recorded = record.startToken, let own = current.startToken else { return true }
        return own.isSameStart(as: recorded)
    }

    // MARK: Steps

    /// Creates and fills our marker; `nil` when one exists.
    private func create() throws -> Hold? {
        switch try lockPath.open(flags: OpenFlags.createExclusiveWriteOnly, mode: filePermissions ?? SoftPrimitive.defaultPermissions) {
        case .success(let descriptor):
            return try fill(descriptor, at: lockPath.absolute)
        case .failure(.fileExists):
            return nil
        case .failure(let error):
            throw FileLockError.system(error, path: path, operation: "create")
        }
    }

    /// Writes our record into a marker we just created; on failure removes it again.
    private func fill(_ descriptor: Int32, at name: CPath) throws -> Hold {
        let identity: FileIdentity
        do {
            if let filePermissions {
                // The umask may have taken bits away: the caller asked for exactly these.
                try System.fchmod(descriptor, filePermissions).get()
            }
            try System.writeAll(descriptor, MarkerRecord.currentEncoded).get()
            identity = FileIdentity(try System.fstat(descriptor).get())
        } catch {
            if case .success(let mine) = System.fstat(descriptor), case .success(let there) = System.lstat(name),
                FileIdentity(mine) == FileIdentity(there)
            {
                _ = System.unlink(name)
            }
            System.close(descriptor)
            throw FileLockError.system(error, path: path, operation: "write")
        }
        return Hold(descriptor: descriptor, identity: identity)
    }

    /// Reads the marker at the path; `nil` when there is none.
    ///
    /// - Throws: `FileLockError` when the path is no regular file (a directory, a symbolic link,
    ///   a FIFO...) or cannot be looked at.
    func inspect(at name: CPath? = nil) throws -> Observed? {
        let name = name ?? lockPath.absolute
        func regularFile(_ status: FileStatus) throws -> FileStatus {
            if status.isDirectory { throw FileLockError.system(.isDirectory, path: path, operation: "read") }
            guard status.isRegularFile else {
                throw FileLockError(
                    .invalidPath, path: path,
                    message: "'\(path)' is not a regular file (a device, FIFO or socket?); choose another lock file path")
            }
            return status
        }
        let descriptor: Int32
        switch System.open(name, flags: OpenFlags.readOnlyNonBlocking, mode: 0) {
        case .success(let opened): descriptor = opened
        case .failure(.noSuchFile): return nil
        case .failure(.accessDenied):
            // Another user's marker we may not read: it is held, by someone we cannot name. (A
            // folder we may not search hides the marker: that is an error, not "no marker".)
            switch System.lstat(name) {
            case .success(let status):
                var observed = Observed(try regularFile(status), record: nil)
                observed.isReadable = false
                return observed
            case .failure(.noSuchFile): return nil
            case .failure(let error): throw FileLockError.system(error, path: path, operation: "read")
            }
        case .failure(let error): throw FileLockError.system(error, path: path, operation: "read")
        }
        defer { System.close(descriptor) }
        guard case .success(let status) = System.fstat(descriptor) else { return nil }
        _ = try regularFile(status)
        let bytes = (try? System.read(descriptor, count: MarkerRecord.maximumSize + 1, at: 0).get()) ?? []
        return Observed(status, record: MarkerRecord(parsing: bytes))
    }

    /// Stale only on proof: past the lifetime; malformed and unchanged for the grace period; or
    /// from this host with its process gone or its pid recycled. Another host's marker is never
    /// judged by liveness.
    ///
    /// `judgingUnparsableByAge`: for a caller that looks only once (`breakMarker`, as the
    /// `filelock break` command), which has no earlier look to time a marker by: an empty or
    /// malformed marker is then abandoned once its modification time is the grace period past
    /// on this host's wall clock.
    func isStale(_ observed: Observed, judgingUnparsableByAge: Bool = false) -> Bool {
        let (seconds, nanoseconds) = System.wallClockNow()
        // Saturating: a marker's mtime can be anything a `touch` (or a broken clock) sets.
        let (difference, overflow) = seconds.subtractingReportingOverflow(observed.modified.seconds)
        let age =
            overflow
            ? (difference < 0 ? Duration.seconds(Int64.max) : .seconds(Int64.min))
            : .seconds(difference) + .nanoseconds(Int64(nanoseconds) - Int64(observed.modified.nanoseconds))
        if let lifetime, age >= lifetime { return true }
        guard observed.isReadable else { return false }
        guard let record = observed.record else {
            if judgingUnparsableByAge { return age >= Self.malformedGrace }
            // An empty marker is never broken, as in Python filelock: its older releases keep the
            // marker empty for the whole hold.
            guard observed.size > 0 else { return false }
            return malformedSince.unchangedDuration(of: observed.version) >= Self.malformedGrace
        }
        guard record.host == ProcessIdentity.hostName else { return false }
        guard ProcessIdentity.isAlive(record.pid) else { return true }
        guard let recorded = record.startToken, let current = ProcessIdentity.startToken(of: record.pid) else {
            return false
        }
        return !current.isSameStart(as: recorded)
    }

    enum TakeOver {
        case won(Hold)
        /// Someone else got there first (or the marker changed): look again.
        case lost
        /// This filesystem cannot swap names atomically, so a stale marker stays (as in Python
        /// filelock: moving it aside would leave the path empty and let two processes in).
        case cannotBreak
    }

    /// Replaces the stale marker `observed` with ours in one atomic exchange, so the path is
    /// never empty and of two breakers only the first wins.
    private func takeOver(_ observed: Observed) throws -> TakeOver {
        let aside = lockPath.absolute.appending(".break.\(System.processID).\(randomHex())")
        let descriptor: Int32
        switch System.open(aside, flags: OpenFlags.createExclusiveWriteOnly, mode: filePermissions ?? SoftPrimitive.defaultPermissions) {
        case .success(let opened): descriptor = opened
        case .failure(let error): throw FileLockError.system(error, path: path, operation: "break a stale")
        }
        let ours = try fill(descriptor, at: aside)
        guard stillThere(observed, at: lockPath.absolute) else {
            discard(ours, at: aside)
            return .lost
        }
        switch System.exchange(aside, lockPath.absolute) {
        case .success:
            if stillThere(observed, at: aside) {
                _ = System.unlink(aside)
                return .won(ours)
            }
            // We swapped out a marker we had not judged (another breaker won meanwhile): swap
            // until our own marker is back in `aside`, whatever order other breakers undo theirs.
            let deadline = MonotonicInstant.now.advanced(by: .seconds(2))
            while !isOurs(ours, at: aside) && MonotonicInstant.now < deadline {
                guard case .success = System.exchange(aside, lockPath.absolute) else { break }
            }
            discard(ours, at: aside)
            return .lost
        case .failure(let error)
        where error == .invalidArgument || error.isNotSupported || error == .crossDevice:
            return try replaceWithoutExchange(observed, with: ours, at: aside)
        case .failure:
            discard(ours, at: aside)
            return .lost
        }
    }

    /// Breaking where names cannot be exchanged (NFS, SMB and FUSE refuse `renameat2` flags with
    /// `EINVAL`), with what such filesystems do atomically: exclusive create and rename. A breaker
    /// first claims the right to break by creating `<lock>.break` exclusively (holding its own
    /// record): one claimant at a time. Under the claim it reads the marker afresh, its contents
    /// rather than attributes a network client may have cached, and only if that is still the
    /// stale record it judged, and still stale, renames its own full marker over it. The path is
    /// never empty, so no creator gets in meanwhile; no second breaker wins (it finds the claim, or
    /// after it the winner's live marker); and a live holder's marker (never stale without a
    /// `lifetime`) is not touched.
    ///
    /// Limits: a claim left by a breaker that died is cleared at once when it names a process of
    /// this host that is gone, else once it has stood unchanged for `abandonedClaimGrace` (on this
    /// host's monotonic clock); a breaker stalled longer than that could then race a second one.
    /// With a `lifetime`, a holder that releases at the very moment its marker is broken could let
    /// a third process in (as without this protocol).
    private func replaceWithoutExchange(_ observed: Observed, with ours: Hold, at aside: CPath) throws -> TakeOver {
        let claim = lockPath.absolute.appending(".break")
        let claimDescriptor: Int32
        switch System.open(claim, flags: OpenFlags.createExclusiveWriteOnly, mode: filePermissions ?? Self.defaultPermissions) {
        case .success(let opened):
            claimDescriptor = opened
        case .failure(.fileExists):
            discard(ours, at: aside)
            removeClaimIfAbandoned(claim)
            return .lost
        case .failure(let error):
            discard(ours, at: aside)
            throw FileLockError.system(error, path: path, operation: "claim the breaking of a stale")
        }
        _ = System.writeAll(claimDescriptor, MarkerRecord.currentEncoded)
        System.close(claimDescriptor)
        defer { _ = System.unlink(claim) }
        guard let now = try inspect(), now.isReadable, now.record == observed.record, isStale(now) else {
            discard(ours, at: aside)
            return .lost
        }
        switch System.rename(aside, to: lockPath.absolute) {
        case .success:
            return .won(ours)
        case .failure(let error):
            discard(ours, at: aside)
            throw FileLockError.system(error, path: path, operation: "break a stale")
        }
    }

    /// How long a breaker's claim may stand unchanged before it counts as left by a breaker that died.
    static let abandonedClaimGrace = Duration.seconds(5)

    /// Removes a claim left by a breaker that died: one naming a process of this host that is
    /// gone, or one unchanged for `abandonedClaimGrace`. Moved to a private name first, and put
    /// back (never over a newer claim) if what was moved is not the claim judged.
    private func removeClaimIfAbandoned(_ claim: CPath) {
        guard let seen = try? inspect(at: claim) else { return }
        let claimantIsGone =
            seen.record.map { $0.host == ProcessIdentity.hostName && !ProcessIdentity.isAlive($0.pid) } ?? false
        guard claimantIsGone || malformedSince.unchangedDuration(of: seen.version) >= Self.abandonedClaimGrace else {
            return
        }
        let gone = claim.appending(".gone.\(System.processID).\(randomHex())")
        guard case .success = System.rename(claim, to: gone) else { return }
        let moved = try? inspect(at: gone)
        if moved?.identity != seen.identity || moved?.record != seen.record { _ = System.link(gone, to: claim) }
        _ = System.unlink(gone)
    }

    /// Gives up our would-be marker: marked released first, so that wherever it ended up it reads
    /// as malformed (breakable) rather than as a live holder.
    private func discard(_ ours: Hold, at aside: CPath) {
        markReleased(ours.descriptor)
        if isOurs(ours, at: aside) { _ = System.unlink(aside) }
        System.close(ours.descriptor)
    }

    private func isOurs(_ ours: Hold, at name: CPath) -> Bool {
        guard case .success(let status) = System.lstat(name) else { return false }
        return FileIdentity(status) == ours.identity
    }

    private func stillThere(_ observed: Observed, at name: CPath) -> Bool {
        guard case .success(let status) = System.lstat(name) else { return false }
        return FileIdentity(status) == observed.identity && status.modificationSeconds == observed.modified.seconds
            && status.modificationNanoseconds == observed.modified.nanoseconds
    }

    private func randomHex() -> String {
        func hex(_ value: UInt64) -> String {
            let digits = String(value, radix: 16)
            return String(repeating: "0", count: 16 - digits.count) + digits
        }
        return hex(UInt64.random(in: .min ... .max)) + hex(UInt64.random(in: .min ... .max))
    }
}

extension SoftPrimitive.Observed {
    init(_ status: FileStatus, record: MarkerRecord?) {
        self.init(
            identity: FileIdentity(status),
            modified: UnixTime(seconds: status.modificationSeconds, nanoseconds: status.modificationNanoseconds),
            changed: UnixTime(seconds: status.changeSeconds, nanoseconds: status.changeNanoseconds),
            size: status.size, record: record)
    }
}

/// One version of a marker file: any write, replacement or touch makes a new one.
struct MarkerVersion: Hashable, Sendable {
    var identity: FileIdentity
    var modified: UnixTime
    var changed: UnixTime
    var size: Int64
}

/// When each malformed marker version was first seen by this lock object.
final class MalformedMarkerClock: Sendable {
    private let firstSeen = Mutex<[MarkerVersion: MonotonicInstant]>([:])

    /// How long `version` has been seen unchanged (zero the first time).
    func unchangedDuration(of version: MarkerVersion) -> Duration {
        let now = MonotonicInstant.now
        return firstSeen.withLock { seen in
            if let first = seen[version] { return now.duration(since: first) }
            if seen.count >= 16 { seen.removeAll() }
            seen[version] = now
            return .zero
        }
    }
}

/// A file's identity: device and inode.
struct FileIdentity: Sendable, Hashable {
    var device: UInt64
    var inode: UInt64

    init(_ status: FileStatus) {
        device = status.device
        inode = status.inode
    }
}
