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
    /// A `SoftFileLease`'s settings: markers in the `filelock/2` lease format, kept fresh by a
    /// heartbeat; `nil` for a `SoftFileLock` (Python's `filelock/1` marker, no heartbeat).
    var lease: LeaseSettings? = nil

    struct LeaseSettings: Sendable {
        var duration: Duration
        /// The duration as written (`duration=` is Python's `repr` of it) and compared.
        var durationSeconds: Double
        var heartbeatInterval: Duration
        let reporter: LossReporter
    }

    var path: String { lockPath.given }
    var waitStrategy: WaitStrategy { .polling(initial: .milliseconds(1), maximum: pollInterval) }

    /// One acquisition's state: its folder watch (made on its first pause), what it knows of the
    /// marker it waits for, and its back-off.
    final class Attempt: @unchecked Sendable {
        // Only the acquiring thread or task uses it, one step at a time.
        var watch: FolderWatch?
        var isWatchSetUp = false
        /// The watch was made after the last try: the next pause ends at once (watch first, then
        /// try again), or a release in between would go unseen until the pause ends.
        var isPauseSkipped = false
        /// Past the first try: a marker version seen for the first time is judged only once it
        /// has stood for `judgementInterval` (almost always it is a live winner's, just made).
        var isWaiting = false
        /// The last pause ended because the marker went.
        var wasWokenByChange = false
        /// Backing off: pausing a random while without the watch, because the lock changes hands
        /// faster than waking every waiter at each release pays (see `tryOnce`).
        var isBackingOff = false
        /// Sets the back-off window: the races lost after a wake-up, and the tries that found
        /// a new marker since the last one, while backing off.
        var lostRaces = 0
        /// The marker version the last try found.
        var lastVersion: MarkerVersion?
        /// When a try last tried to create the marker.
        var lastCreate: MonotonicInstant?
        /// The marker version last looked at, what it held (`nil`: not read yet), when it was
        /// last judged (or first seen), and when it was read.
        var seen: (version: MarkerVersion, observed: Observed?, since: MonotonicInstant, read: MonotonicInstant)?
    }

    /// How long a judgement of one marker version stands: a busy try on that version within it
    /// costs an `lstat` (and a failed create at most once per interval); later tries judge the
    /// holder's liveness again without reading the marker again (its version is the same).
    var judgementInterval: Duration { min(pollInterval, .milliseconds(50)) }

    /// How long a record read from a marker stands for that marker version (see `quickLook`).
    static let rereadInterval = Duration.seconds(1)

    /// Our marker: kept open while held, to mark it released if someone displaced it.
    struct Hold: Sendable {
        var descriptor: Int32
        var identity: FileIdentity
        /// A lease's heartbeat and loss (set once the hold is made).
        var heartbeat: LeaseHeartbeat? = nil
    }

    /// A held lease's heartbeat state: touched by the heartbeat thread, read by the engine.
    final class LeaseHeartbeat: @unchecked Sendable {
        let lossMark = LossMark()
        let registration = Mutex<Heartbeats.Registration?>(nil)
        let refreshes = RefreshClock(BootClock.now)
        // The heartbeat thread's own.
        var strikes = 0
    }

    /// Someone else's marker, as seen at one moment.
    struct Observed {
        var identity: FileIdentity
        var modified: UnixTime
        var changed: UnixTime
        var size: Int64
        var record: MarkerRecord?
        /// What it holds (at most `MarkerRecord.maximumSize + 1` bytes): read afresh, unlike
        /// attributes that a network client may serve from its cache.
        var contents: [UInt8] = []
        /// `false` when we may not read it (another user's marker): busy, never judged stale.
        var isReadable = true

        /// Larger than any marker, or holding a NUL byte: some other file (a data file the lock
        /// was pointed at by mistake), which is never broken as a malformed marker would be.
        var isNoMarker: Bool {
            isReadable && record == nil && (size > Int64(MarkerRecord.maximumSize) || contents.contains(0))
        }

        /// What must stay the same for a malformed marker to count as abandoned.
        var version: MarkerVersion { MarkerVersion(identity: identity, modified: modified, changed: changed, size: size) }
    }

    /// When each malformed marker version was first seen, on this host's monotonic clock: a
    /// marker is abandoned once it has not changed for the grace period. Comparing its mtime with
    /// our wall clock instead would break a peer's half-written marker on an NFS server whose
    /// clock runs behind.
    let malformedSince = MalformedMarkerClock()

    func begin(_ request: LockRequest) throws -> Attempt { Attempt() }

    /// Tries to create the marker, else judges the one there (breaking it if stale).
    ///
    /// While waiting, a busy try also decides how the next pause waits. A waiter woken by the
    /// marker's removal that finds a new marker already (another waiter or the releaser was
    /// quicker) stops watching and backs off: with many waiters, a watch wakes all of them at
    /// every release and each looks, and on a few cores that herd costs more than the lock
    /// itself. It keeps backing off (a random pause, its window doubling up to `maximumBackOff`)
    /// while each try finds a new marker, and goes back to the watch once a try finds the same
    /// marker as the one before (a holder that keeps the lock a while).
    func tryOnce(_ attempt: Attempt, _ request: LockRequest) throws -> AttemptOutcome<Hold> {
        let wasWokenByChange = attempt.wasWokenByChange
        attempt.wasWokenByChange = false
        let previous = attempt.lastVersion
        // A waiter that tried to create lately first looks (`lstat`), and creates only when the
        // marker is gone: a create, even one that fails, takes the folder's lock in the kernel
        // and holds up the holder's release and the next holder's create (a look takes no lock).
        // Creating at least every `judgementInterval` bounds how long a look served from a
        // network client's attribute cache (a marker gone on the server) can delay us.
        let now = MonotonicInstant.now
        let looksFirst = attempt.isWaiting
            && attempt.lastCreate.map { now.duration(since: $0) < judgementInterval } == true
        let outcome = try tryCreating(attempt, looksFirst: looksFirst)
        guard case .busy = outcome, attempt.isWaiting else { return outcome }
        if wasWokenByChange, attempt.watch != nil {
            attempt.isBackingOff = true
            attempt.lostRaces += 1
            attempt.watch = nil
        } else if attempt.isBackingOff {
            if attempt.lastVersion != previous {
                attempt.lostRaces += 1
            } else {
                // The watch first, then a try (the next pause is skipped): a release between
                // this try and the watch is seen by that try.
                attempt.isBackingOff = false
                attempt.lostRaces = 0
                attempt.watch = makeWatch()
                attempt.isPauseSkipped = attempt.watch != nil
            }
        }
        return outcome
    }

    private func tryCreating(_ attempt: Attempt, looksFirst: Bool) throws -> AttemptOutcome<Hold> {
        if looksFirst, quickLook(attempt) == true { return .busy }
        // A few rounds: the marker may vanish or be broken between our create and our look.
        for _ in 0..<4 {
            attempt.lastCreate = MonotonicInstant.now
            if let hold = try create() { return .acquired(startHeartbeat(hold)) }
            if let quick = quickLook(attempt) {
                guard quick else { continue }
                return .busy
            }
            guard let observed = try inspect() else { continue }
            if observed.isNoMarker { throw noMarkerError(observed) }
            attempt.lastVersion = observed.version
            try checkLeaseSettings(observed)
            guard isStale(observed) else {
                let now = MonotonicInstant.now
                attempt.seen = (observed.version, observed, now, now)
                return .busy
            }
            switch try takeOver(observed, judgement: .stale) {
            case .won(let hold): return .acquired(startHeartbeat(hold))
            case .lost: continue
            case .busy, .cannotBreak: return .busy
            }
        }
        return .busy
    }

    /// A lease contender that finds a live lease of another duration: an error, as in Python
    /// (every contender for a path must agree, or one would judge the other's lease expired
    /// early). A lease whose holder is provably gone is taken over first.
    private func checkLeaseSettings(_ observed: Observed) throws {
        guard let lease, let marker = VersionTwoMarkerRecord(parsing: observed.contents),
            case .lease = marker.mode, let theirs = marker.durationSeconds, theirs != lease.durationSeconds,
            !marker.ownerIsGone
        else { return }
        throw FileLockError(
            .invalidConfiguration, path: path,
            message: "'\(path)' holds a lease of \(theirs)s but this contender configured \(lease.durationSeconds)s; every "
                + "contender for a path must agree on the lease duration")
    }

    // MARK: Lease heartbeat

    private func startHeartbeat(_ hold: Hold) -> Hold {
        guard let lease else { return hold }
        var hold = hold
        let heartbeat = LeaseHeartbeat()
        hold.heartbeat = heartbeat
        let held = hold
        let registration = Heartbeats.shared.register(every: lease.heartbeatInterval) { [weak heartbeat, self] in
            guard let heartbeat else { return false }
            return beat(held, heartbeat, lease)
        }
        heartbeat.registration.withLock { $0 = registration }
        return hold
    }

    /// Touches our marker (its times are what contenders age it by), after checking the path
    /// still names it. A marker replaced or missing at two beats in a row is lost (one is
    /// forgiven: a breaker's exchange moves it aside for a moment before putting it back).
    private func beat(_ hold: Hold, _ heartbeat: LeaseHeartbeat, _ lease: LeaseSettings) -> Bool {
        guard heartbeat.lossMark.value == nil else { return false }
        // A beat that comes overdue (the process was stopped or starved) must not renew and
        // carry on: the lease may have been taken over meanwhile. It first looks whether it was
        // (to say so), else reports the lease lost as overdue, as `loss(of:)` does.
        if heartbeat.refreshes.isOverdue(interval: lease.heartbeatInterval, threshold: lease.duration) {
            switch System.lstat(lockPath.absolute) {
            case .success(let status) where FileIdentity(status) != hold.identity:
                reportLoss(heartbeat, .takenOver, "another process's marker replaced ours (it judged our lease expired)")
            case .failure(.noSuchFile):
                reportLoss(
                    heartbeat, .removed, "the marker is gone (taken over and released since, or removed by hand or by a forced break)")
            default:
                _ = loss(of: hold)
            }
            return false
        }
        let started = BootClock.now
        switch System.lstat(lockPath.absolute) {
        case .success(let status) where FileIdentity(status) != hold.identity:
            heartbeat.strikes += 1
            if heartbeat.strikes >= 2 {
                reportLoss(heartbeat, .takenOver, "another process's marker replaced ours (it judged our lease expired)")
                return false
            }
            return true
        case .failure(.noSuchFile):
            heartbeat.strikes += 1
            if heartbeat.strikes >= 2 {
                reportLoss(heartbeat, .removed, "the marker is gone (taken over and released since, or removed by hand or by a forced break)")
                return false
            }
            return true
        default:
            break
        }
        switch System.touch(hold.descriptor) {
        case .success:
            heartbeat.strikes = 0
            heartbeat.refreshes.set(started)
        case .failure(let error):
            if heartbeat.refreshes.silence >= lease.duration - lease.heartbeatInterval {
                reportLoss(
                    heartbeat, .refreshFailed,
                    "the marker could not be renewed for "
                        + "\(heartbeat.refreshes.silence.formattedSeconds) (\(error)), so others may "
                        + "have judged the lease expired")
                return false
            }
        }
        return true
    }

    private func reportLoss(_ heartbeat: LeaseHeartbeat, _ reason: LockLossReason, _ detail: String) {
        guard let lease else { return }
        let loss = LockLoss(path: path, mode: .exclusive, reason: reason, fencingToken: nil, detail: detail)
        if heartbeat.lossMark.mark(loss) { lease.reporter.report(loss) }
    }

    /// The loss the lease's heartbeat found, or one found here: heartbeats silent so long (held
    /// up on a stalled filesystem) that the lease cannot be trusted, although no beat could tell.
    func loss(of hold: Hold) -> LockLoss? {
        guard let heartbeat = hold.heartbeat, let lease else { return nil }
        if let loss = heartbeat.lossMark.value { return loss }
        guard heartbeat.refreshes.isOverdue(interval: lease.heartbeatInterval, threshold: lease.duration) else { return nil }
        reportLoss(
            heartbeat, .refreshFailed,
            "the marker was last renewed \(heartbeat.refreshes.silence.formattedSeconds) ago (its heartbeat is held up, for "
                + "example on a stalled filesystem), so others may take the lease over at any moment")
        return heartbeat.lossMark.value
    }

    /// Judges the marker from its attributes alone where an earlier look allows: `true` busy,
    /// `false` gone (create again), `nil` when it must be read and judged.
    ///
    /// A version judged live within `judgementInterval` is busy; after it, its holder's liveness
    /// is judged again from the record read before (a new version of the marker is a new
    /// `MarkerVersion`: inode, size, change and modification times). While waiting, a version seen
    /// for the first time is busy until it has stood that long. Judging late is safe: it only
    /// delays breaking a stale marker, and breaking reads the marker afresh under the claim.
    private func quickLook(_ attempt: Attempt) -> Bool? {
        let status: FileStatus
        switch System.lstat(lockPath.absolute) {
        case .success(let found): status = found
        case .failure(.noSuchFile): return false
        case .failure: return nil
        }
        guard status.isRegularFile else { return nil }
        let version = MarkerVersion(status)
        attempt.lastVersion = version
        if let lifetime, age(ofModification: UnixTime(status)) >= lifetime { return nil }
        let now = MonotonicInstant.now
        guard let seen = attempt.seen, seen.version == version else {
            guard attempt.isWaiting else { return nil }
            attempt.seen = (version, nil, now, now)
            return true
        }
        if now.duration(since: seen.since) < judgementInterval { return true }
        // The record read is trusted for `rereadInterval` at most: a marker made anew can have the
        // same inode (freed and reused at once by ext4), size and (coarse) times as the one read,
        // and name another, perhaps dead, holder.
        guard let observed = seen.observed, now.duration(since: seen.read) < Self.rereadInterval, !isStale(observed)
        else { return nil }
        attempt.seen?.since = now
        return true
    }

    func prepareToWait(_ attempt: Attempt) {
        attempt.isWaiting = true
        attempt.isPauseSkipped = setUpWatch(attempt)
    }

    func pause(_ attempt: Attempt, upTo duration: Duration) {
        guard !skipsPause(attempt) else { return }
        if let backOff = backOff(attempt, upTo: duration) {
            Threads.sleep(backOff)
        } else if let watch = attempt.watch {
            attempt.wasWokenByChange = watch.wait(upTo: duration)
        } else {
            Threads.sleep(duration)
        }
    }

    func pause(_ attempt: Attempt, upTo duration: Duration) async throws {
        guard !skipsPause(attempt) else { return }
        if let backOff = backOff(attempt, upTo: duration) {
            try await Task.sleep(for: backOff)
        } else if let watch = attempt.watch {
            attempt.wasWokenByChange = try await watch.changed(within: duration)
        } else {
            try await Task.sleep(for: duration)
        }
    }

    /// The longest back-off after lost races: short, so that a lock freed while every waiter
    /// backs off is taken within milliseconds.
    static let maximumBackOff = Duration.milliseconds(8)

    /// While backing off, a random pause up to a window that doubles with each lost race, from
    /// 0.5 ms to `maximumBackOff` (and at most `duration`); `nil` otherwise. Nothing is missed
    /// meanwhile, only seen later: a lock freed during the back-off is found by the next try.
    private func backOff(_ attempt: Attempt, upTo duration: Duration) -> Duration? {
        guard attempt.isBackingOff else { return nil }
        let window = min(duration, Self.maximumBackOff, .microseconds(500) * (1 << min(max(attempt.lostRaces, 1) - 1, 8)))
        return .nanoseconds(Int64(QuickRandom.next() % UInt64(max(1, window.totalNanoseconds))))
    }

    private func skipsPause(_ attempt: Attempt) -> Bool {
        if attempt.isPauseSkipped {
            attempt.isPauseSkipped = false
            return true
        }
        return setUpWatch(attempt)
    }

    /// Makes the wait's folder watch on its first pause; `true` when it did and the pause should
    /// end at once: watch first, then try again, or a release between our last try and the watch
    /// would go unseen until the pause ends.
    private func setUpWatch(_ attempt: Attempt) -> Bool {
        guard !attempt.isWatchSetUp else { return false }
        attempt.isWatchSetUp = true
        attempt.watch = makeWatch()
        return attempt.watch != nil
    }

    private func makeWatch() -> FolderWatch? {
        FolderWatch(folder: lockPath.parent, name: CPath.lastComponent(of: lockPath.absolute.pathBytes))
    }

    func abandon(_ attempt: Attempt) {}

    /// Removes our marker, and only ours. Looking (`lstat`) and then unlinking the path would
    /// delete a breaker's marker swapped in between the two (a holder may be broken while it
    /// works: another process's `lifetime`, a forced break) and let a third process in beside the
    /// breaker. Instead the marker is moved to a private name in one step, checked there, and
    /// what is not ours is put back, never over a marker created meanwhile.
    ///
    /// This costs a `rename` and an `lstat` more than a plain `unlink`; a `lifetime` of our own
    /// would not tell whether another process breaks with one, so every release pays it.
    func release(_ hold: Hold) {
        if let heartbeat = hold.heartbeat, let registration = heartbeat.registration.withLock({ $0 }) {
            Heartbeats.shared.cancel(registration)
        }
        let found = System.lstat(lockPath.absolute)
        guard case .success(let status) = found, FileIdentity(status) == hold.identity else {
            if let heartbeat = hold.heartbeat {
                if case .failure(.noSuchFile) = found {
                    reportLoss(heartbeat, .removed, "at release, the marker was gone")
                } else {
                    reportLoss(heartbeat, .takenOver, "at release, the path no longer named our marker")
                }
            }
            // Displaced (broken, or a breaker's swap is in flight): leave the path alone, and make
            // our own inode read as malformed so that, should it come back, it is breakable after
            // the grace period instead of naming a live process that holds nothing.
            markReleased(hold.descriptor)
            System.close(hold.descriptor)
            return
        }
        let aside = lockPath.absolute.appending(HelperName.unique("release"))
        guard case .success = System.rename(lockPath.absolute, to: aside) else {
            markReleased(hold.descriptor)
            System.close(hold.descriptor)
            return
        }
        if isOurs(hold, at: aside) {
            // Closed first: NFS would keep an unlinked open file as a hidden `.nfs` file.
            System.close(hold.descriptor)
            _ = System.unlink(aside)
            return
        }
        // A breaker's marker arrived between our look and our move: give it back.
        putBack(aside)
        markReleased(hold.descriptor)
        System.close(hold.descriptor)
    }

    /// Gives the marker at `aside` its name back, never replacing a marker created meanwhile
    /// (then nothing can be done for the displaced one and it is removed). A rename that may not
    /// replace, where the filesystem has one, else a hard link.
    private func putBack(_ aside: CPath) {
        switch System.renameNoReplace(aside, to: lockPath.absolute) {
        case .success:
            return
        case .failure(.fileExists):
            _ = System.unlink(aside)
        case .failure:
            switch System.link(aside, to: lockPath.absolute) {
            case .success, .failure(.fileExists): _ = System.unlink(aside)
            case .failure: break  // (not removed: never delete what could not be given back)
            }
        }
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
        guard let observed = try? inspect() else { return [] }
        if let record = observed.record {
            return [LockHolder(pid: record.pid, host: record.host, since: observed.modified, looksStale: isStale(observed))]
        }
        // A Python SoftFileLease's marker (filelock/2); its modification time is its last renewal.
        guard let marker = VersionTwoMarkerRecord(parsing: observed.contents) else { return [] }
        return [LockHolder(pid: marker.pid, host: marker.host, since: observed.modified, looksStale: isStale(observed))]
    }

    func busyHint() -> String? {
        guard let observed = try? inspect() else { return nil }
        guard observed.isReadable else {
            return "the marker belongs to a user this one may not read: ask its owner, or run as that user"
        }
        guard let record = observed.record else {
            if let marker = VersionTwoMarkerRecord(parsing: observed.contents) {
                if isStale(observed) {
                    return "the lease looks expired (or its holder gone) but could not be taken over (another user's "
                        + "marker in a sticky folder such as /tmp, which only its owner may replace, or another breaker's "
                        + "claim '<lock>.break-claim'): see `filelock break`"
                }
                guard case .lease(let duration) = marker.mode else {
                    return "the marker is a filelock/2 record (Python filelock 4.2 or later) of a mode that is broken only "
                        + "when its holder is gone (mode exclusive) or never"
                }
                return "a SoftFileLease holds it (a filelock/2 marker of this library or Python filelock, lease of "
                    + "\(duration.formattedSeconds), last renewed \(observed.modified)): it is free once released, or once left "
                    + "unrenewed for its duration"
            }
            let what = observed.size == 0 ? "empty" : "malformed (\(observed.size) bytes, no holder record)"
            return "the marker is \(what), last changed \(observed.modified): a process that writes no record holds it "
                + "(Python filelock before 3.22), or it was abandoned; `filelock break` removes it once 2 s old"
        }
        if record.host != ProcessIdentity.hostName {
            return "a holder on another host is never judged by liveness (its pid names no process here): once it is "
                + "gone, remove the marker by hand or with `filelock break --force` (or give the lock a lifetime)"
        }
        if isStale(observed) {
            return "its marker looks stale but could not be broken (another user's marker in a sticky folder such as "
                + "/tmp, which only its owner may remove, or another breaker's claim '<lock>.break-claim'): see "
                + "`filelock break`"
        }
        return nil
    }

    /// Breaks the marker at the path if it is stale (or always, with `force`).
    func breakMarker(force: Bool) throws -> SoftFileLock.BreakOutcome {
        var inProgress: LockHolder?? = nil
        for _ in 0..<4 {
            guard let observed = try inspect() else { return .noMarker }
            let holder = observed.record.map {
                LockHolder(pid: $0.pid, host: $0.host, since: observed.modified, looksStale: isStale(observed))
            }
            if observed.isNoMarker && !force { throw noMarkerError(observed) }
            let judgement: BreakJudgement = force ? .forced : .staleOrAged
            guard judgement.allows(observed, self) else { return .holderAlive(holder) }
            // A marker that names no holder may be a kernel lock's file (FileLock, ReadWriteLock,
            // flock(1) and SQLite leave an empty file): hold its kernel locks while it goes, so
            // that no one who opened it can lock it in between and be left holding a lock on a
            // file that is gone while the next one creates a new one; a file locked now is held.
            var fence: KernelLockFence?
            if observed.record == nil {
                switch KernelLockFence.take(on: lockPath.absolute, expecting: observed.identity) {
                case .taken(let taken): fence = taken
                case .held: return .holderAlive(nil)
                case .replaced: continue
                }
            }
            defer { fence?.release() }
            switch try takeOver(observed, judgement: judgement) {
            case .won(let ours):
                release(ours)
                return .broken(holder)
            case .lost: continue
            case .busy:
                // Another breaker's claim stands (or an abandoned one was just cleared: look again).
                inProgress = .some(holder)
                continue
            case .cannotBreak: return .cannotBreak(holder)
            }
        }
        if let inProgress { return .breakInProgress(inProgress) }
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
    ///
    /// - Throws: `LockFileGone` for `ESTALE` (the folder, or the marker just made, is gone on an
    ///   NFS server): the engine begins again.
    private func create() throws -> Hold? {
        switch try lockPath.open(flags: OpenFlags.createExclusiveWriteOnly, mode: filePermissions ?? SoftPrimitive.defaultPermissions) {
        case .success(let descriptor):
            return try fill(descriptor, at: lockPath.absolute)
        case .failure(.fileExists):
            return nil
        case .failure(let error) where Self.isLostRace(error, at: lockPath.absolute):
            return nil
        case .failure(.staleFileHandle):
            throw LockFileGone()
        case .failure(let error):
            throw FileLockError.system(error, path: path, operation: "create")
        }
    }

    /// Whether an exclusive create that failed with `error` lost a race to another creator of
    /// `name`, said in other words than `EEXIST`: sshfs reports every SFTP "failure" status as
    /// `EPERM`, and SFTP version 3 has no "exists" status, so a client that did not know of
    /// another host's new file gets `EPERM` (measured on the two-host bed: about a third of lost
    /// races). A file now at the name tells it apart from a real permission problem (creating an
    /// existing file fails with `EEXIST` first wherever the folder may be written).
    static func isLostRace(_ error: Errno, at name: CPath) -> Bool {
        guard error == .notPermitted || error == .accessDenied else { return false }
        if case .success = System.lstat(name) { return true }
        return false
    }

    /// Writes our record into a marker we just created; on failure removes it again.
    private func fill(_ descriptor: Int32, at name: CPath) throws -> Hold {
        let identity: FileIdentity
        do {
            if let filePermissions {
                // The umask may have taken bits away: the caller asked for exactly these.
                try System.fchmod(descriptor, filePermissions).get()
            }
            try System.writeAll(descriptor, lease.map(Self.leaseRecord) ?? MarkerRecord.currentEncoded).get()
            identity = FileIdentity(try System.fstat(descriptor).get())
        } catch {
            if case .success(let mine) = System.fstat(descriptor), case .success(let there) = System.lstat(name),
                FileIdentity(mine) == FileIdentity(there)
            {
                _ = System.unlink(name)
            }
            System.close(descriptor)
            // Our new marker is gone on the server already (deleted or replaced): begin again.
            if error == .staleFileHandle { throw LockFileGone() }
            throw FileLockError.system(error, path: path, operation: "write")
        }
        return Hold(descriptor: descriptor, identity: identity)
    }

    /// Our lease marker in Python's `filelock/2` format, with a new token.
    static func leaseRecord(_ lease: LeaseSettings) -> [UInt8] {
        let current = MarkerRecord.current
        var text = "filelock/2\npid=\(current.pid)\nhost=\(current.host)\nmode=lease\ntoken=\(ParticipantToken().text)\n"
        text += "duration=\(lease.durationSeconds.description)\n"
        if let start = current.startToken { text += "start=\(start.decimal)\n" }
        return Array(text.utf8)
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
        // ESTALE: gone on the NFS server while this client still had a handle for it.
        case .failure(.noSuchFile), .failure(.staleFileHandle): return nil
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
        var observed = Observed(status, record: MarkerRecord(parsing: bytes))
        observed.contents = bytes
        return observed
    }

    private func noMarkerError(_ observed: Observed) -> FileLockError {
        FileLockError(
            .invalidPath, path: path,
            message: "'\(path)' holds \(observed.size) bytes that are no lock marker (a data file?); it is left "
                + "alone: give the lock a file of its own, such as '\(path).lock' (or break it with force if it "
                + "really is an abandoned marker)")
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
        let age = age(ofModification: observed.modified)
        if let lifetime, age >= lifetime { return true }
        guard observed.isReadable else { return false }
        guard let record = observed.record else {
            if let marker = VersionTwoMarkerRecord(parsing: observed.contents) {
                return isStale(marker, observed, judgingByAge: judgingUnparsableByAge ? age : nil)
            }
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

    /// A `filelock/2` marker (Python's `SoftFileLease`), judged as Python judges it: never in a
    /// mode we do not know; stale when its holder is provably gone (this host, process gone or pid
    /// recycled); a lease also once the marker stayed unchanged for its duration on our monotonic
    /// clock (`age`: for one look, by its modification time instead).
    private func isStale(_ marker: VersionTwoMarkerRecord, _ observed: Observed, judgingByAge age: Duration?) -> Bool {
        if marker.mode == .unknown { return false }
        if marker.host == ProcessIdentity.hostName {
            guard ProcessIdentity.isAlive(marker.pid) else { return true }
            if let recorded = marker.startToken, let current = ProcessIdentity.startToken(of: marker.pid),
                !current.isSameStart(as: recorded)
            {
                return true
            }
        }
        guard case .lease(let duration) = marker.mode else { return false }
        if let age { return age >= duration }
        return malformedSince.unchangedDuration(of: observed.version) >= duration
    }

    /// How long ago `modified` was on this host's wall clock.
    private func age(ofModification modified: UnixTime) -> Duration {
        let (seconds, nanoseconds) = System.wallClockNow()
        // Saturating: a marker's mtime can be anything a `touch` (or a broken clock) sets.
        let (difference, overflow) = seconds.subtractingReportingOverflow(modified.seconds)
        return overflow
            ? (difference < 0 ? Duration.seconds(Int64.max) : .seconds(Int64.min))
            : .seconds(difference) + .nanoseconds(Int64(nanoseconds) - Int64(modified.nanoseconds))
    }

    enum TakeOver {
        case won(Hold)
        /// The marker changed: look again.
        case lost
        /// Another breaker is at work: wait (a pause), then look again.
        case busy
        /// The marker cannot be replaced here (another user's marker in a sticky folder, or a
        /// filesystem that can neither exchange nor rename over it): it stays.
        case cannotBreak
    }

    /// On what grounds a marker is broken.
    enum BreakJudgement {
        /// Stale as acquisition judges it (`isStale`).
        case stale
        /// Stale, or empty or malformed with its modification time past the grace period (one
        /// look, as `filelock break`: no earlier look to time it by).
        case staleOrAged
        /// Whatever its state (`break --force`).
        case forced

        func allows(_ observed: Observed, _ primitive: SoftPrimitive) -> Bool {
            switch self {
            case .stale: primitive.isStale(observed)
            case .staleOrAged: primitive.isStale(observed, judgingUnparsableByAge: true)
            case .forced: true
            }
        }
    }

    /// Replaces the marker `observed` with ours, as long as it is the same marker and `judgement`
    /// still allows it. Every breaker first claims the break by creating `<lock>.break-claim`
    /// exclusively (holding a header and its own record): one breaker at a time, whether its
    /// filesystem can exchange names or not, so a late breaker never swaps out the winner's live
    /// marker. Under the claim it reads the marker afresh (its contents, not attributes a network
    /// client may have cached) and judges again. Then it puts its own full marker in the
    /// marker's place in one step, so the path is never empty and no creator gets in meanwhile:
    /// `renameat2(RENAME_EXCHANGE)` where the filesystem has it (checking that what it swapped
    /// out is the marker judged, as breakers that do not claim, such as Python `filelock`, may
    /// have swapped first), else (NFS, SMB, FUSE: `EINVAL`) a plain rename over it.
    ///
    /// Limits: a claim left by a breaker that died is cleared at once when it names a process of
    /// this host that is gone, else once it has stood unchanged for `abandonedClaimGrace` (on this
    /// host's monotonic clock); a breaker stalled longer than that could then race a second one.
    /// Without the exchange, a breaker that does not claim, or a holder with a `lifetime` that
    /// releases at the very moment its marker is broken, could let a third process in.
    private func takeOver(_ observed: Observed, judgement: BreakJudgement) throws -> TakeOver {
        let claim = lockPath.absolute.appending(".break-claim")
        let claimIdentity: FileIdentity
        switch System.open(claim, flags: OpenFlags.createExclusiveWriteOnly, mode: filePermissions ?? Self.defaultPermissions) {
        case .success(let descriptor):
            let written = System.writeAll(descriptor, Self.claimHeader + MarkerRecord.currentEncoded)
            let status = System.fstat(descriptor)
            System.close(descriptor)
            guard case .success = written, case .success(let status) = status else {
                if case .success(let status) = status, isClaim(claim, FileIdentity(status)) { _ = System.unlink(claim) }
                return .busy
            }
            claimIdentity = FileIdentity(status)
        case .failure(let error) where error == .fileExists || Self.isLostRace(error, at: claim):
            removeClaimIfAbandoned(claim, judgingByAge: judgement != .stale)
            return .busy
        case .failure(let error):
            throw FileLockError.system(error, path: path, operation: "claim the breaking of a stale")
        }
        defer { if isClaim(claim, claimIdentity) { _ = System.unlink(claim) } }

        guard let now = try inspect(), now.contents == observed.contents, now.size == observed.size,
            judgement.allows(now, self)
        else { return .lost }
        let aside = lockPath.absolute.appending(HelperName.unique("break"))
        let descriptor: Int32
        switch System.open(aside, flags: OpenFlags.createExclusiveWriteOnly, mode: filePermissions ?? Self.defaultPermissions) {
        case .success(let opened): descriptor = opened
        case .failure(let error): throw FileLockError.system(error, path: path, operation: "break a stale")
        }
        let ours = try fill(descriptor, at: aside)
        // An abandoned-claim cleaner may have taken our claim meanwhile: then another breaker
        // may be at work.
        guard isClaim(claim, claimIdentity) else {
            discard(ours, at: aside)
            return .lost
        }
        switch System.exchange(aside, lockPath.absolute) {
        case .success:
            if stillThere(now, at: aside) {
                _ = System.unlink(aside)
                return .won(ours)
            }
            // A breaker that does not claim swapped first: give its marker back while the path
            // still holds ours; whatever else ended up under our spare name goes back too (never
            // over a marker made meanwhile), so no one's marker is left there.
            if isOurs(ours, at: lockPath.absolute) { _ = System.exchange(aside, lockPath.absolute) }
            if !isOurs(ours, at: aside) { putBack(aside) }
            discard(ours, at: aside)
            return .lost
        case .failure(let error) where error == .invalidArgument || error.isNotSupported || error == .crossDevice:
            switch System.rename(aside, to: lockPath.absolute) {
            case .success:
                return .won(ours)
            case .failure(let error):
                discard(ours, at: aside)
                if error == .accessDenied || error == .notPermitted { return .cannotBreak }
                throw FileLockError.system(error, path: path, operation: "break a stale")
            }
        case .failure(let error) where error == .accessDenied || error == .notPermitted:
            // Another user's marker in a sticky folder (/tmp): only its owner may replace it.
            discard(ours, at: aside)
            return .cannotBreak
        case .failure:
            discard(ours, at: aside)
            return .lost
        }
    }

    /// The first line of a claim file: only files that carry it are ever removed as claims.
    static let claimHeader = Array("filelock/claim\n".utf8)

    private func isClaim(_ claim: CPath, _ identity: FileIdentity) -> Bool {
        guard case .success(let status) = System.lstat(claim) else { return false }
        return FileIdentity(status) == identity
    }

    /// How long a breaker's claim may stand unchanged before it counts as left by a breaker that died.
    static let abandonedClaimGrace = Duration.seconds(5)

    /// Removes a claim left by a breaker that died: one naming a process of this host that is
    /// gone, or one unchanged for `abandonedClaimGrace` (a claim cut short, even empty, by a
    /// breaker that died while writing it, included). `judgingByAge`: for one look (`filelock
    /// break`), the grace is judged by the claim's modification time on this host's clock. Moved
    /// to a private name first, and put back (never over a newer claim) if what was moved is not
    /// the claim judged. A file at the claim's name that is no claim is never removed.
    private func removeClaimIfAbandoned(_ claim: CPath, judgingByAge: Bool = false) {
        guard let seen = try? inspect(at: claim) else { return }
        let isWhole = seen.contents.starts(with: Self.claimHeader)
        guard isWhole || Self.claimHeader.starts(with: seen.contents) else { return }
        let record = isWhole ? MarkerRecord(parsing: Array(seen.contents.dropFirst(Self.claimHeader.count))) : nil
        let claimantIsGone = record.map { $0.host == ProcessIdentity.hostName && !ProcessIdentity.isAlive($0.pid) } ?? false
        let (seconds, _) = System.wallClockNow()
        let isOldByItsTime = judgingByAge && seconds.subtractingReportingOverflow(seen.modified.seconds).partialValue
            >= Int64(Self.abandonedClaimGrace.components.seconds)
        guard claimantIsGone || isOldByItsTime
            || malformedSince.unchangedDuration(of: seen.version) >= Self.abandonedClaimGrace
        else { return }
        let gone = claim.appending(HelperName.unique("gone"))
        guard case .success = System.rename(claim, to: gone) else { return }
        let moved = try? inspect(at: gone)
        if moved?.identity == seen.identity && moved?.contents == seen.contents {
            _ = System.unlink(gone)
            return
        }
        switch System.renameNoReplace(gone, to: claim) {
        case .success: break
        case .failure(.fileExists): _ = System.unlink(gone)
        case .failure:
            if case .success = System.link(gone, to: claim) { _ = System.unlink(gone) }
        }
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

extension MarkerVersion {
    init(_ status: FileStatus) {
        self.init(
            identity: FileIdentity(status), modified: UnixTime(status),
            changed: UnixTime(seconds: status.changeSeconds, nanoseconds: status.changeNanoseconds), size: status.size)
    }
}

extension UnixTime {
    /// The modification time of `status`.
    init(_ status: FileStatus) {
        self.init(seconds: status.modificationSeconds, nanoseconds: status.modificationNanoseconds)
    }
}

/// When each malformed marker version was first seen by this lock object.
final class MalformedMarkerClock: Sendable {
    private let firstSeen = Mutex<[MarkerVersion: MonotonicInstant]>([:])

    /// How long `version` has been seen unchanged (zero the first time).
    func unchangedDuration(of version: MarkerVersion) -> Duration {
        let now = MonotonicInstant.now
        return firstSeen.withLock { seen in
            if let first = seen[version] { return now.duration(since: first) }
            // Forget the oldest, not all: the version being aged must keep its clock.
            if seen.count >= 16, let oldest = seen.min(by: { $0.value < $1.value })?.key { seen[oldest] = nil }
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

/// Unique names for the helper files beside a marker (`<lock>.release.<pid>.<seed>.<n>`): the pid
/// and a per-process random seed keep names apart across processes and hosts, a counter within
/// the process; no system call per name.
enum HelperName {
    private static let seed = String(UInt64.random(in: .min ... .max), radix: 36)
    private static let counter = Atomic<UInt64>(0)
    private static let process = OwnProcessID()

    /// Makes the globals (see `LazyGlobals`).
    static func finishGlobals() {
        _ = seed
        _ = counter.load(ordering: .relaxed)
        _ = process
    }

    static func unique(_ kind: String) -> String {
        ".\(kind).\(process.value).\(seed).\(counter.add(1, ordering: .relaxed).newValue)"
    }
}

/// Cheap random numbers for back-off pauses (SplitMix64): `UInt64.random` costs a `getrandom`
/// system call each time. Seeded once per process and mixed with the process id, so that children
/// forked from one parent do not pause in step.
enum QuickRandom {
    private static let state = Atomic<UInt64>(UInt64.random(in: .min ... .max))
    /// This process's id (read once per fork generation; for others too).
    static let process = OwnProcessID()

    /// Makes the globals (see `LazyGlobals`).
    static func finishGlobals() {
        _ = state.load(ordering: .relaxed)
        _ = process
    }

    static func next() -> UInt64 {
        var value = state.wrappingAdd(0x9E37_79B9_7F4A_7C15, ordering: .relaxed).newValue ^ UInt64(UInt32(bitPattern: process.value))
        value = (value ^ (value >> 30)) &* 0xBF58_476D_1CE4_E5B9
        value = (value ^ (value >> 27)) &* 0x94D0_49BB_1331_11EB
        return value ^ (value >> 31)
    }
}

/// This process's id, read once per fork generation.
final class OwnProcessID: Sendable {
    private let cache = Mutex<(generation: Int, pid: Int32)?>(nil)

    var value: Int32 {
        let generation = ForkGeneration.current
        if let cached = cache.withLock({ $0 }), cached.generation == generation { return cached.pid }
        let pid = System.processID
        cache.withLock { $0 = (generation, pid) }
        return pid
    }
}

/// The kernel locks others may take on a lock file, taken without waiting by someone about to
/// remove the file: `flock` exclusively (FileLock, flock(1)) and the write lock on SQLite's lock
/// bytes (ReadWriteLock, Python's ReadWriteLock, SQLite), through an open file of its own.
struct KernelLockFence {
    let descriptor: Int32

    enum Outcome {
        case taken(KernelLockFence)
        /// Someone holds one of the locks (or the file cannot be opened to find out).
        case held
        /// The path no longer names the expected file.
        case replaced
    }

    static func take(on path: CPath, expecting identity: FileIdentity) -> Outcome {
        let descriptor: Int32
        switch System.open(path, flags: OpenFlags.readWriteExistingNonBlocking, mode: 0) {
        case .success(let opened): descriptor = opened
        case .failure(.noSuchFile): return .replaced
        case .failure:
            // Not writable for this user: flock still fences; the record lock needs a writable file.
            guard case .success(let opened) = System.open(path, flags: OpenFlags.readOnlyNonBlocking, mode: 0) else {
                return .held
            }
            descriptor = opened
        }
        guard case .success(let status) = System.fstat(descriptor), FileIdentity(status) == identity else {
            System.close(descriptor)
            return .replaced
        }
        let flocked = System.flockNonBlocking(descriptor, .exclusive)
        let recordLocked = System.setRangeLock(descriptor, SQLiteLockBytes.writeAll)
        let isFree: Bool
        switch (flocked, recordLocked) {
        case (.success(true), .success(true)):
            isFree = true
        case (.success(true), .failure(.badFileDescriptor)):
            // Open for reading only: no write lock to take; free when no one holds any lock there.
            isFree = !System.hasConflictingRangeLock(descriptor, SQLiteLockBytes.writeAll)
        default:
            isFree = false
        }
        guard isFree else {
            System.close(descriptor)
            return .held
        }
        return .taken(KernelLockFence(descriptor: descriptor))
    }

    func release() {
        System.unlock(descriptor)
        _ = System.setRangeLock(descriptor, SQLiteLockBytes.unlockAll)
        System.close(descriptor)
    }
}
