import Synchronization

/// The primitive behind `SoftReadWriteLock`: Python `filelock`'s `filelock-rw/1` protocol (see
/// `SoftReadWriteFormat` and `GenerationLog`).
///
/// Each acquisition is a participant with a new token and a holder record. A try reads the
/// newest snapshot, refreshes its record, judges the other members' records (stale when
/// unchanged past the threshold on our clock) and commits the next generation: entering (a
/// reader is granted in the commit that adds it; a writer enters as the named writer, which
/// closes the entry to new readers, and is granted by its own later commit once no reader is
/// left), evicting stale members, or both. A hold's heartbeat rewrites its record's nonce and
/// checks it is still a member; a hold found gone is reported lost.
struct SoftReadWritePrimitive: LockPrimitive {
    let log: GenerationLog
    let heartbeatInterval: Duration
    let pollInterval: Duration
    let reporter: LossReporter

    var staleThreshold: Duration { log.staleThreshold }
    var path: String { log.path }
    var waitStrategy: WaitStrategy { .polling(initial: .milliseconds(1), maximum: pollInterval) }

    /// One acquisition: its token and record, and its wait's folder watch. Used by one thread at
    /// a time (the acquiring one, then the heartbeat thread, then the releasing one).
    final class Participant: @unchecked Sendable {
        var record: SoftReadWriteHolderRecord
        var identity: FileIdentity
        /// When the record was last written, on the boot clock (counts suspend time).
        var refreshed: MonotonicInstant
        var watch: FolderWatch?
        var isWatchSetUp = false
        var isPauseSkipped = false

        init(record: SoftReadWriteHolderRecord, identity: FileIdentity, refreshed: MonotonicInstant) {
            self.record = record
            self.identity = identity
            self.refreshed = refreshed
        }

        var token: ParticipantToken { record.token }
    }

    typealias Attempt = Participant

    final class Hold: @unchecked Sendable {
        let participant: Participant
        /// The generation whose commit granted the hold: a fencing token.
        let generation: UInt64
        let mode: LockMode
        let lossMark = LossMark()
        /// The last write of its record (the heartbeat's, or the acquisition's).
        let refreshes: RefreshClock
        let registration = Mutex<Heartbeats.Registration?>(nil)

        init(participant: Participant, generation: UInt64, mode: LockMode) {
            self.participant = participant
            self.generation = generation
            self.mode = mode
            refreshes = RefreshClock(participant.refreshed)
        }
    }

    func begin(_ request: LockRequest) throws -> Participant {
        let record = SoftReadWriteHolderRecord(
            token: ParticipantToken(), pid: QuickRandom.process.value, host: ProcessIdentity.hostName,
            lease: staleThreshold.inSeconds, nonce: .unique())
        let refreshed = BootClock.now
        let identity = try log.publish(record)
        return Participant(record: record, identity: identity, refreshed: refreshed)
    }

    private enum Step {
        case granted(UInt64)
        case notYet
        case commitLost
        /// Our record may have been judged stale meanwhile (we were paused): begin anew.
        case startOver
    }

    func tryOnce(_ participant: Participant, _ request: LockRequest) throws -> AttemptOutcome<Hold> {
        for _ in 0..<4 {
            switch try step(participant, request.mode) {
            case .granted(let generation): return .acquired(makeHold(participant, generation, request.mode))
            case .notYet: return .busy
            case .startOver: return .restart
            case .commitLost: continue
            }
        }
        return .busy
    }

    private func step(_ participant: Participant, _ mode: LockMode) throws -> Step {
        let latest = try log.latest()
        // Keep the claim fresh: a waiter's record changes at its tries (Python: at every one).
        let now = BootClock.now
        let age = now.duration(since: participant.refreshed)
        if age >= staleThreshold { return .startOver }
        // Not again when written less than a quarter heartbeat ago (the first try, right after
        // `publish`, above all). The bytes still change well within the stale threshold S: a
        // waiter tries at least every poll interval P (below S), so with P >= h/4 (h, the
        // heartbeat interval, below S) every try still rewrites the record, as before, and with
        // P < h/4 the record is at most h/4 + P < h/2 < S/2 old when rewritten. A record gone
        // (swept, evicted) is seen and made again as late: it is in no snapshot as a holder
        // meanwhile, and a missing record is judged stale only after S too.
        if age >= heartbeatInterval / 4 {
            participant.record.nonce = .unique()
            switch log.refresh(participant.record, identity: participant.identity) {
            case .refreshed:
                participant.refreshed = now
            case .gone:
                // Swept or evicted while we waited: make it again (we are in no snapshot as a holder).
                if let identity = try? log.publish(participant.record) {
                    participant.identity = identity
                    participant.refreshed = now
                }
            case .failed: break
            }
        }
        let me = participant.token
        let entered = latest.members.contains(me)
        log.sweepIfDue(excluding: me, members: latest.members)
        let stale = latest.members.subtracting([me]).filter { log.isStale($0) }
        var writer = latest.writer.flatMap { stale.contains($0) ? nil : $0 }
        var readers = latest.readers.subtracting(stale)
        if !entered {
            if writer != nil {
                // A live writer is named (holding or waiting): no one enters. Evict the stale.
                if !stale.isEmpty {
                    let next = SoftReadWriteSnapshot(generation: latest.generation + 1, writer: writer, readers: readers)
                    if try log.commit(next) == .won { evicted(stale) }
                }
                return .notYet
            }
            if mode == .exclusive { writer = me } else { readers.insert(me) }
        }
        let granted = mode == .shared || readers.isEmpty
        if entered && stale.isEmpty && !granted { return .notYet }
        let next = SoftReadWriteSnapshot(generation: latest.generation + 1, writer: writer, readers: readers)
        guard try log.commit(next) == .won else { return .commitLost }
        if !stale.isEmpty { evicted(stale) }
        if BootClock.now.duration(since: participant.refreshed) >= staleThreshold { return .startOver }
        return granted ? .granted(next.generation) : .notYet
    }

    private func evicted(_ tokens: Set<ParticipantToken>) {
        for token in tokens { log.removeRecord(token) }
        log.forget(tokens)
    }

    private func makeHold(_ participant: Participant, _ generation: UInt64, _ mode: LockMode) -> Hold {
        participant.watch = nil
        let hold = Hold(participant: participant, generation: generation, mode: mode)
        // The first beat an interval after the record's last write (a waiter's record may be a
        // while old when it is granted), not an interval after the grant.
        let firstDue = MonotonicInstant.now.advanced(by: heartbeatInterval - BootClock.now.duration(since: participant.refreshed))
        let registration = Heartbeats.shared.register(every: heartbeatInterval, firstDue: firstDue) { [weak hold, self] in
            guard let hold else { return false }
            return beat(hold)
        }
        hold.registration.withLock { $0 = registration }
        return hold
    }

    /// One heartbeat of a hold: a new nonce, then a look that we are still a member. `false`
    /// once the hold is lost (reported) or released.
    private func beat(_ hold: Hold) -> Bool {
        guard hold.lossMark.value == nil else { return false }
        let participant = hold.participant
        // A beat that comes overdue (the process was stopped or starved) must not refresh and
        // carry on: others may have evicted the hold meanwhile, and be at work. It first looks
        // whether it was (to say so), else reports the hold lost as overdue, as `loss(of:)` does.
        if hold.refreshes.isOverdue(interval: heartbeatInterval, threshold: staleThreshold) {
            if log.recordStatus(of: participant.token).map({ FileIdentity($0) != participant.identity }) ?? true {
                report(hold, .evicted, "its holder record '\(log.root)/holders/\(participant.token)' is gone or replaced")
            } else if let latest = try? log.latest(), !latest.members.contains(participant.token) {
                report(hold, .evicted, "generation \(latest.generation) of the log no longer names it")
            } else {
                _ = loss(of: hold)
            }
            return false
        }
        participant.record.nonce = .unique()
        let started = BootClock.now
        switch log.refresh(participant.record, identity: participant.identity) {
        case .refreshed:
            hold.refreshes.set(started)
        case .gone:
            report(hold, .evicted, "its holder record '\(log.root)/holders/\(participant.token)' is gone or replaced")
            return false
        case .failed(let error):
            if hold.refreshes.silence >= staleThreshold - heartbeatInterval {
                report(
                    hold, .refreshFailed,
                    "its holder record could not be refreshed for \(hold.refreshes.silence.formattedSeconds) "
                        + "(\(error)), so others may have judged it stale")
                return false
            }
            return true
        }
        if let latest = try? log.latest() {
            log.sweepIfDue(excluding: participant.token, members: latest.members)
            if !latest.members.contains(participant.token) {
                report(hold, .evicted, "generation \(latest.generation) of the log no longer names it")
                return false
            }
        }
        return true
    }

    private func report(_ hold: Hold, _ reason: LockLossReason, _ detail: String) {
        let loss = LockLoss(path: path, mode: hold.mode, reason: reason, fencingToken: hold.generation, detail: detail)
        if hold.lossMark.mark(loss) { reporter.report(loss) }
    }

    /// The loss its heartbeat found, or one found here: heartbeats silent so long (held up on a
    /// stalled filesystem) that the hold cannot be trusted, although no beat could tell.
    func loss(of hold: Hold) -> LockLoss? {
        if let loss = hold.lossMark.value { return loss }
        guard hold.refreshes.isOverdue(interval: heartbeatInterval, threshold: staleThreshold) else { return nil }
        report(
            hold, .refreshFailed,
            "its holder record was last refreshed \(hold.refreshes.silence.formattedSeconds) ago (its heartbeat is held up, "
                + "for example on a stalled filesystem), so others may evict it at any moment")
        return hold.lossMark.value
    }

    func prepareToWait(_ participant: Participant) {
        participant.isPauseSkipped = setUpWatch(participant)
    }

    func pause(_ participant: Participant, upTo duration: Duration) {
        guard !skipsPause(participant) else { return }
        if let watch = participant.watch {
            watch.wait(upTo: duration)
        } else {
            Threads.sleep(duration)
        }
    }

    func pause(_ participant: Participant, upTo duration: Duration) async throws {
        guard !skipsPause(participant) else { return }
        if let watch = participant.watch {
            try await watch.changed(within: duration)
        } else {
            try await Task.sleep(for: duration)
        }
    }

    private func skipsPause(_ participant: Participant) -> Bool {
        if participant.isPauseSkipped {
            participant.isPauseSkipped = false
            return true
        }
        return setUpWatch(participant)
    }

    /// Watches `gen/` (every commit changes it) on the first pause, then tries once more before
    /// waiting, so that a commit between the last try and the watch is not missed.
    private func setUpWatch(_ participant: Participant) -> Bool {
        guard !participant.isWatchSetUp else { return false }
        participant.isWatchSetUp = true
        participant.watch = FolderWatch(folder: log.root.appending("/gen"))
        return participant.watch != nil
    }

    var abandonsWithoutBlocking: Bool { false }

    func abandon(_ participant: Participant) {
        participant.watch = nil
        leave(participant)
    }

    func release(_ hold: Hold) {
        if let registration = hold.registration.withLock({ $0 }) { Heartbeats.shared.cancel(registration) }
        leave(hold.participant, releasing: hold)
    }

    func forget(_ hold: Hold) {
        // A child forked without exec: the hold is the parent's, whose heartbeat keeps it.
    }

    /// Commits ourselves out of the log (so that a waiting writer of ours stops shutting readers
    /// out at once), then removes our record. Gives up after the stale threshold: by then others
    /// evict us anyway.
    ///
    /// Releasing a hold, it also finds a loss since the last heartbeat (the log no longer naming
    /// us, our record gone or replaced), so that `checkedRelease` throws it as a lease's does: a
    /// hold released between two heartbeats is otherwise never checked. (Both looks come with
    /// the leave's own: no extra round to the filesystem.)
    private func leave(_ participant: Participant, releasing hold: Hold? = nil) {
        let me = participant.token
        let started = MonotonicInstant.now
        var pause = Duration.milliseconds(1)
        var isFirstLook = true
        while let latest = try? log.latest() {
            guard latest.members.contains(me) else {
                if isFirstLook, let hold {
                    report(hold, .evicted, "at release, generation \(latest.generation) of the log no longer names it")
                }
                break
            }
            isFirstLook = false
            let next = SoftReadWriteSnapshot(
                generation: latest.generation + 1, writer: latest.writer == me ? nil : latest.writer,
                readers: latest.readers.subtracting([me]))
            // An error (a full or read-only filesystem, a stalled server) may pass, but not at
            // once: leaving is retried in the background (see `leaveLater`).
            guard let outcome = try? log.commit(next) else {
                leaveLater(me)
                break
            }
            if outcome == .won { break }
            guard MonotonicInstant.now.duration(since: started) < staleThreshold else { break }
            Threads.sleep(pause)
            pause = min(pause * 2, .milliseconds(10))
        }
        let wasOurs = log.removeRecord(me, expecting: participant.identity)
        if !wasOurs, let hold {
            report(hold, .evicted, "at release, its holder record '\(log.root)/holders/\(me)' was gone or replaced")
        }
        log.forget([me])
    }

    /// Keeps trying to commit `token` out of the log on the heartbeat threads after a release
    /// whose commit failed (the filesystem full for a moment), every heartbeat interval (at most a
    /// second) until it is out or the stale threshold has passed (by then others evict it): a
    /// lock must not stay blocked for the threshold because one commit failed.
    private func leaveLater(_ token: ParticipantToken) {
        let deadline = MonotonicInstant.now.advanced(by: staleThreshold)
        let log = log
        _ = Heartbeats.shared.register(every: min(heartbeatInterval, .seconds(1))) {
            guard MonotonicInstant.now < deadline, let latest = try? log.latest(), latest.members.contains(token) else {
                return false
            }
            let next = SoftReadWriteSnapshot(
                generation: latest.generation + 1, writer: latest.writer == token ? nil : latest.writer,
                readers: latest.readers.subtracting([token]))
            return (try? log.commit(next)) != .won
        }
    }

    // MARK: Who holds it

    /// The newest snapshot without making the log; `nil` when there is none (or it cannot be
    /// read: see `readTable`).
    func peek() -> SoftReadWriteSnapshot? {
        (try? readPeek()) ?? nil
    }

    /// The newest snapshot; `nil` when there is no log.
    ///
    /// - Throws: `FileLockError` when the log cannot be read (another account's 0700 folders).
    func readPeek() throws -> SoftReadWriteSnapshot? {
        try log.with(.gen) { _ in try log.latest() }
    }

    func holder(_ token: ParticipantToken, shared: Bool) -> LockHolder {
        let fields = log.record(of: token).map(SoftReadWriteHolderRecord.fields(of:))
        let status = log.recordStatus(of: token)
        let since = status.map(UnixTime.init)
        var holder = LockHolder(pid: fields?.pid ?? 0, host: fields?.host, since: since, isShared: shared)
        if let since {
            let (seconds, nanoseconds) = System.wallClockNow()
            let threshold = max(staleThreshold, fields?.lease ?? .zero)
            let age = Duration.seconds(seconds.subtractingReportingOverflow(since.seconds).partialValue)
                + .nanoseconds(Int64(nanoseconds) - Int64(since.nanoseconds))
            holder.looksStale = age >= threshold
        } else {
            holder.looksStale = true
        }
        return holder
    }

    /// The writer (holding, or waiting while readers are inside), the readers, and the generation.
    func table() -> (holders: ReadWriteLockHolders, generation: UInt64?) {
        (try? readTable()) ?? (ReadWriteLockHolders(writer: nil, readers: [], waitingWriter: nil, unidentifiedCount: 0), nil)
    }

    /// `table()`, throwing when the log cannot be read rather than calling the lock free.
    func readTable() throws -> (holders: ReadWriteLockHolders, generation: UInt64?) {
        guard let snapshot = try readPeek() else {
            return (ReadWriteLockHolders(writer: nil, readers: [], waitingWriter: nil, unidentifiedCount: 0), nil)
        }
        let readers = snapshot.readers.sorted().map { holder($0, shared: true) }
        let writer = snapshot.writer.map { holder($0, shared: false) }
        let isWaiting = writer != nil && !readers.isEmpty
        return (
            ReadWriteLockHolders(
                writer: isWaiting ? nil : writer, readers: readers, waitingWriter: isWaiting ? writer : nil,
                unidentifiedCount: 0),
            snapshot.generation
        )
    }

    func holders() -> [LockHolder] {
        let (table, _) = table()
        return (table.writer.map { [$0] } ?? []) + table.readers
    }

    func blockingHolder(for request: LockRequest, timeout: Duration?) -> LockHolder? {
        let (table, _) = table()
        // A reader waits for the writer, holding or waiting; a writer for the writer, else for
        // the readers inside (a waiting writer named may be this very waiter).
        if request.mode == .shared { return table.writer ?? table.waitingWriter }
        return table.writer ?? table.readers.first ?? table.waitingWriter
    }

    func busyHint() -> String? {
        guard let snapshot = peek(), !snapshot.members.isEmpty else { return nil }
        return "holders that stop their heartbeat are evicted once their record stays unchanged for the stale "
            + "threshold (\(staleThreshold.formattedSeconds), or a holder's own if longer): wait longer, or look with "
            + "`filelock status --kind soft-rw`"
    }
}
