import FileLocking
import NIOCore
import PostgresNIO
import Synchronization

/// What names an advisory lock: a name hashed on the server, or a raw 64-bit key.
enum AdvisoryKey: Sendable, Hashable {
    case name(String)
    case raw(Int64)

    /// The SQL expression of the key, from parameter `$1`.
    var expression: String {
        switch self {
        case .name: "hashtextextended($1::text, 0)"
        case .raw: "$1::bigint"
        }
    }

    func bind(into bindings: inout PostgresBindings) {
        switch self {
        case .name(let name): bindings.append(name)
        case .raw(let key): bindings.append(key)
        }
    }

    /// What tells two locks apart in the process's registry (a name and a raw key never collide).
    var registryName: String {
        switch self {
        case .name(let name): "name:" + name
        case .raw(let key): "key:\(key)"
        }
    }

    /// As messages name the lock: the name, or `key 42`.
    var display: String {
        switch self {
        case .name(let name): name
        case .raw(let key): "key \(key)"
        }
    }
}

/// A PostgreSQL session-level advisory lock as an engine primitive: each hold has a session (a
/// connection) of its own; waiting is the server's (`pg_advisory_lock` bounded by `lock_timeout`),
/// so a waiter wakes the moment the lock is freed.
struct PostgresPrimitive: LockPrimitive {
    let key: AdvisoryKey
    let settings: PostgresConnectionSettings
    let pool: SessionPool
    /// How often a holder checks on the server that its session still holds the lock; an answer
    /// that does not come within an interval counts as a lost session.
    let heartbeatInterval: Duration
    let reporter: LossReporter
    /// The 64-bit key once known (a raw key at once, a name's after the server first computed
    /// it): later statements bind it instead of hashing the name again.
    private let knownKey: KnownKey
    /// Holds taken by this process, for fencing tokens.
    private static let acquisitions = Atomic<UInt32>(0)

    init(key: AdvisoryKey, settings: PostgresConnectionSettings, heartbeatInterval: Duration, reporter: LossReporter) {
        self.key = key
        self.settings = settings
        pool = SessionPool.shared(for: settings)
        self.heartbeatInterval = heartbeatInterval
        self.reporter = reporter
        knownKey = KnownKey()
        if case .raw(let raw) = key { knownKey.value = raw }
    }

    final class KnownKey: Sendable {
        private let key = Mutex<Int64?>(nil)
        var value: Int64? {
            get { key.withLock { $0 } }
            set { key.withLock { $0 = newValue } }
        }
    }

    /// The key's SQL expression from `$1`: the known key, or the name hashed on the server.
    private func keyExpression(_ known: Int64?) -> String { known == nil ? key.expression : "$1::bigint" }

    var path: String { key.display }
    var resource: LockResource { .named(key.display) }
    var waitStrategy: WaitStrategy { .remote }
    var suspendsInsteadOfBlocking: Bool { true }

    /// The session an attempt uses, once it has one.
    final class Attempt: Sendable {
        let session = Mutex<PostgresSession?>(nil)

        /// Gives the session to a hold: the attempt no longer owns it.
        func handOver() -> PostgresSession? { session.withLock { session in defer { session = nil }; return session } }
    }

    /// A held lock: its session, and what watches it.
    final class Hold: Sendable {
        let session: PostgresSession
        let key: Int64
        let mode: LockMode
        let since: UnixTime
        let fencingToken: UInt64
        let lossMark = LossMark()
        /// `held`, then `releasing` (the unlock sent: watchers no longer report) and `released`,
        /// or `lost`: one compare-exchange decides between a release and a loss.
        private let state = Atomic<UInt8>(Hold.held)
        static let held: UInt8 = 0
        static let releasing: UInt8 = 1
        static let released: UInt8 = 2
        static let lost: UInt8 = 3

        init(session: PostgresSession, key: Int64, mode: LockMode, since: UnixTime, fencingToken: UInt64) {
            self.session = session
            self.key = key
            self.mode = mode
            self.since = since
            self.fencingToken = fencingToken
        }

        /// Moves from `from` to `to`; `false` when the hold was not in `from`.
        func move(from: UInt8, to: UInt8) -> Bool {
            state.compareExchange(expected: from, desired: to, ordering: .acquiringAndReleasing).exchanged
        }

        /// Whether a release has begun (or ended): the watchers no longer speak for the hold.
        var isReleasing: Bool {
            let now = state.load(ordering: .acquiring)
            return now == Hold.releasing || now == Hold.released
        }

        /// Stops watching the session (a release began, or a loss was found).
        func stopWatching() {
            HoldWatch.shared.remove(self)
            session.onClose(nil)
        }
    }

    // MARK: SQL

    private static func lockFunction(_ mode: LockMode, trying: Bool) -> String {
        (trying ? "pg_try_advisory_lock" : "pg_advisory_lock") + (mode == .shared ? "_shared" : "")
    }

    /// `application_name` of a holder: the session's base name and the server's clock in
    /// milliseconds when the lock was granted.
    private static let stampedName =
        "set_config('application_name', $2 || ' ' || (extract(epoch from clock_timestamp()) * 1000)::bigint::text, false)"

    /// The key, and when the lock was granted (`NULL` when it was not).
    private func trySQL(_ mode: LockMode, _ known: Int64?) -> String {
        "SELECT k, CASE WHEN \(Self.lockFunction(mode, trying: true))(k) THEN \(Self.stampedName) END "
            + "FROM (SELECT \(keyExpression(known)) AS k OFFSET 0) AS key"
    }

    /// Waits on the server, bounded by `lock_timeout` (`$3`; `0` waits as long as it takes), set
    /// for this statement only (a session's `statement_timeout` is lifted when it is made).
    private func waitSQL(_ mode: LockMode, _ known: Int64?) -> String {
        "SELECT k, \(Self.stampedName) FROM (SELECT \(keyExpression(known)) AS k OFFSET 0) AS key, LATERAL (SELECT "
            + "\(Self.lockFunction(mode, trying: false))(CASE WHEN set_config('lock_timeout', $3, true) IS NOT NULL "
            + "THEN k END) OFFSET 0) AS granted"
    }

    /// Unlocks the lock if this session holds it (no row, and no warning, when it does not).
    private func dropRacedGrantSQL(_ mode: LockMode, _ known: Int64?) -> String {
        "SELECT pg_advisory_unlock\(mode == .shared ? "_shared" : "")(k) FROM (SELECT \(keyExpression(known)) AS k OFFSET 0) "
            + "AS key WHERE EXISTS (SELECT 1 FROM pg_locks AS l WHERE \(Self.keyRows) AND l.granted "
            + "AND l.pid = pg_backend_pid() AND l.mode = '\(mode == .shared ? "ShareLock" : "ExclusiveLock")')"
    }

    /// (`application_name` keeps the last hold's stamp while the session idles: only granted
    /// locks are read as holders.)
    private static func unlockSQL(_ mode: LockMode) -> String {
        "SELECT pg_advisory_unlock\(mode == .shared ? "_shared" : "")($1::bigint)"
    }

    /// The rows of `pg_locks` for key `k` in this database; `granted` and the holder's mode.
    static let keyRows = """
        l.locktype = 'advisory' AND l.objsubid = 1
        AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
        AND l.classid::bigint = (k >> 32) & 4294967295 AND l.objid::bigint = k & 4294967295
        """

    private static let checkSQL =
        "SELECT EXISTS (SELECT 1 FROM (SELECT $1::bigint AS k) AS key, pg_locks AS l WHERE \(keyRows) "
        + "AND l.granted AND l.pid = pg_backend_pid())"

    private var holdersSQL: String {
        """
        SELECT l.pid, l.mode = 'ShareLock', a.application_name, host(a.client_addr), a.client_port,
               extract(epoch from a.backend_start)::float8
        FROM (SELECT \(key.expression) AS k OFFSET 0) AS key, pg_locks AS l
        LEFT JOIN pg_stat_activity AS a ON a.pid = l.pid
        WHERE \(Self.keyRows) AND l.granted
        ORDER BY l.mode DESC, l.pid
        """
    }

    private func binds(_ known: Int64?, _ extra: String...) -> PostgresBindings {
        var bindings = PostgresBindings()
        if let known { bindings.append(known) } else { key.bind(into: &bindings) }
        for value in extra { bindings.append(value) }
        return bindings
    }

    // MARK: Acquiring

    func begin(_ request: LockRequest) throws -> Attempt { Attempt() }

    func tryOnce(_ attempt: Attempt, _ request: LockRequest) throws -> AttemptOutcome<Hold> {
        do {
            return try tryOnSession(attempt, request).wait()
        } catch {
            throw PostgresErrors.lockError(error, key: key, settings: settings, doing: "take")
        }
    }

    func tryOnceFromTask(_ attempt: Attempt, _ request: LockRequest) async throws -> AttemptOutcome<Hold> {
        do {
            return try await tryOnSession(attempt, request).get()
        } catch {
            throw PostgresErrors.lockError(error, key: key, settings: settings, doing: "take")
        }
    }

    /// One `pg_try_advisory_lock` on the attempt's session (taken from the pool first); a pooled
    /// session that turns out dead (the server restarted while it idled) is replaced once.
    private func tryOnSession(_ attempt: Attempt, _ request: LockRequest) -> EventLoopFuture<AttemptOutcome<Hold>> {
        session(for: attempt).flatMap { session, isFresh in
            let known = knownKey.value
            let sql = trySQL(request.mode, known)
            let bindings = binds(known, session.baseApplicationName)
            return session.query(sql, bindings).flatMapError { error in
                guard !isFresh, PostgresErrors.isConnectionLost(error) else {
                    // The statement may have failed after pg_try_advisory_lock took the lock
                    // (a session-level lock outlives its statement's error): never reuse it.
                    session.close()
                    return session.eventLoop.makeFailedFuture(error)
                }
                session.close()
                attempt.session.withLock { $0 = nil }
                return self.session(for: attempt).flatMap { fresh, _ in
                    fresh.query(sql, binds(known, fresh.baseApplicationName)).flatMapErrorThrowing { error in
                        fresh.close()
                        throw error
                    }
                }
            }.flatMapThrowing { result in
                do {
                    guard let row = result.first else {
                        throw PostgresSession.unexpected("no row from \(Self.lockFunction(request.mode, trying: true))")
                    }
                    let (key, stamp) = try row.decode((Int64, String?).self)
                    guard let stamp else { return .busy }
                    return .acquired(try makeHold(attempt, key: key, stamp: stamp, mode: request.mode))
                } catch {
                    // An answer not understood may still have taken the lock: close the session.
                    attempt.session.withLock { $0 }?.close()
                    throw error
                }
            }
        }
    }

    /// The attempt's session, taken from the pool when it has none yet; `isFresh`: just connected
    /// or already used by this attempt (not an idle one from the pool, which may have died).
    private func session(for attempt: Attempt) -> EventLoopFuture<(PostgresSession, isFresh: Bool)> {
        if let session = attempt.session.withLock({ $0 }), session.isReusable {
            return session.eventLoop.makeSucceededFuture((session, true))
        }
        return pool.takeReporting().map { session, wasIdle in
            attempt.session.withLock { $0 = session }
            return (session, !wasIdle)
        }
    }

    func waitRemotely(
        _ attempt: Attempt, _ request: LockRequest, until deadline: MonotonicInstant?
    ) async throws -> AttemptOutcome<Hold> {
        var lockTimeout = "0"
        if let deadline {
            let remaining = deadline.duration(since: .now)
            guard remaining > .zero else { return .busy }
            // lock_timeout 0 would mean "no limit": at least 1 ms; and at most the server's
            // largest (2^31 - 1 ms, about 24.8 days): a longer wait goes on in another round.
            lockTimeout = "\(min(Int64(Int32.max), max(1, (remaining.totalNanoseconds + 999_999) / 1_000_000)))ms"
        }
        let session: PostgresSession
        do {
            session = try await withTaskCancellationHandler {
                try await self.session(for: attempt).get().0
            } onCancel: {
                attempt.session.withLock { $0 }?.close()
            }
        } catch {
            if Task.isCancelled { throw CancellationError() }
            throw PostgresErrors.lockError(error, key: key, settings: settings, doing: "take")
        }
        try Task.checkCancellation()
        let known = knownKey.value
        let answer = session.query(waitSQL(request.mode, known), binds(known, session.baseApplicationName, lockTimeout))
        let result: PostgresQueryResult
        do {
            // A running query ignores task cancellation, and PostgresNIO sends no cancel request:
            // another session cancels the wait (`pg_cancel_backend`), and the answer (cancelled,
            // or granted just before) is awaited, so that no wait is left running on the server.
            result = try await withTaskCancellationHandler {
                try await answer.get()
            } onCancel: {
                cancelWait(on: session, answer: answer)
            }
        } catch let error as PSQLError where PostgresErrors.sqlState(of: error) == "55P03" {
            // lock_timeout ended the wait. A grant that raced the timeout is kept by the server
            // although the statement fails (LockErrorCleanup remembers an awaited lock that was
            // granted meanwhile), and a session-level lock outlives the error: give back
            // whatever the session holds, or close it.
            do {
                _ = try await session.query(dropRacedGrantSQL(request.mode, known), binds(known), within: .seconds(10)).get()
            } catch {
                session.close()
            }
            return .busy
        } catch {
            // Any other failure (a cancel, above all) may have struck after the grant, in the
            // rest of the statement, and a session-level lock outlives its statement's error:
            // the session may hold the lock, so it is closed, never reused.
            session.close()
            if Task.isCancelled { throw CancellationError() }
            throw PostgresErrors.lockError(error, key: key, settings: settings, doing: "wait for")
        }
        guard !Task.isCancelled else {
            // Granted just as the wait was cancelled: give it back at once.
            if let row = result.first, let (key, _) = try? row.decode((Int64, String).self) {
                var bindings = PostgresBindings()
                bindings.append(key)
                let unlocked = try? await session.query(Self.unlockSQL(request.mode), bindings, within: .seconds(10)).get()
                if unlocked.flatMap({ try? $0.first?.decode(Bool.self, context: .default) }) != true { session.close() }
            } else {
                session.close()
            }
            throw CancellationError()
        }
        do {
            guard let row = result.first else { throw PostgresErrors.unexpected("no row from the wait", key: key, settings: settings) }
            let (key, stamp) = try row.decode((Int64, String).self)
            return .acquired(try makeHold(attempt, key: key, stamp: stamp, mode: request.mode))
        } catch {
            session.close()
            throw error
        }
    }

    /// Ends the server-side wait of `session`: `pg_cancel_backend` from another session (the
    /// wait's statement fails with SQLSTATE 57014 and the session stays usable); where that cannot
    /// be done within 3 s (the server is unreachable, or the role may not cancel), closing the
    /// connection ends it (within 250 ms on PostgreSQL 14 and later).
    private func cancelWait(on session: PostgresSession, answer: EventLoopFuture<PostgresQueryResult>) {
        // Never reused: the cancel may land late, on whatever the session runs next.
        session.spoil()
        let fallback = session.eventLoop.scheduleTask(in: .seconds(3)) { session.close() }
        answer.whenComplete { _ in fallback.cancel() }
        var pidBinding = PostgresBindings()
        pidBinding.append(session.backendPID)
        let bindings = pidBinding
        pool.take().whenComplete { [pool] taken in
            guard case .success(let canceller) = taken else { return session.close() }
            canceller.query("SELECT pg_cancel_backend($1)", bindings, within: .seconds(3)).whenComplete { outcome in
                pool.giveBack(canceller)
                if case .failure = outcome { session.close() }
            }
        }
    }

    /// The hold of a granted lock: takes the attempt's session, and starts watching it.
    private func makeHold(_ attempt: Attempt, key: Int64, stamp: String, mode: LockMode) throws -> Hold {
        if knownKey.value == nil { knownKey.value = key }
        guard let session = attempt.handOver() else {
            throw PostgresSession.unexpected("a lock granted on no session")
        }
        let number = Self.acquisitions.add(1, ordering: .relaxed).newValue
        let token = UInt64(UInt32(bitPattern: session.backendPID)) << 32 | UInt64(number)
        let hold = Hold(
            session: session, key: key, mode: mode, since: PostgresHolders.since(fromApplicationName: stamp) ?? UnixTime(seconds: 0),
            fencingToken: token)
        watch(hold)
        return hold
    }

    // MARK: Loss

    /// Reports the hold lost when its connection closes, or a heartbeat (`HoldWatch`) finds the
    /// lock gone from `pg_locks` or gets no answer within an interval.
    private func watch(_ hold: Hold) {
        let session = hold.session
        let server = settings.server
        session.onClose { [self] in
            lose(hold, "the connection to \(server) closed (the server restarted or terminated the session, or the network failed)")
        }
        let interval = heartbeatInterval
        HoldWatch.shared.add(
            hold, every: interval,
            check: { [self] done in
                var bindings = PostgresBindings()
                bindings.append(hold.key)
                session.query(Self.checkSQL, bindings).whenComplete { result in
                    switch result {
                    case .success(let rows):
                        if (try? rows.first?.decode(Bool.self)) != true {
                            lose(hold, "session (server pid \(session.backendPID)) on \(settings.server) no longer holds it (released by a statement on the session, or a pooler switched sessions)")
                        }
                    case .failure(let error):
                        lose(hold, "the heartbeat to \(settings.server) failed (\(PostgresErrors.brief(error)))")
                    }
                    done()
                }
            },
            overdue: { [self] in
                lose(hold, "the heartbeat to \(settings.server) got no answer within \((interval * 2).formatted)")
            })
    }

    /// Records and reports the loss of a held lock (not of one being released: a watcher that
    /// fires after the unlock was sent speaks for nothing); closes its session.
    private func lose(_ hold: Hold, _ detail: String) {
        guard hold.move(from: Hold.held, to: Hold.lost) else { return }
        markLost(hold, detail)
    }

    /// - Parameter inline: Report on the calling thread (a release, which holds no lock of the
    ///   engine's and is no network thread), so that the caller hears of it before it goes on;
    ///   else in a task of its own (a watcher on a network thread, or a look under the engine's
    ///   lock), as the callback may use the lock.
    private func markLost(_ hold: Hold, _ detail: String, inline: Bool = false) {
        let loss = LockLoss(
            resource: resource, mode: hold.mode, reason: .sessionEnded, fencingToken: hold.fencingToken, detail: detail)
        guard hold.lossMark.mark(loss) else { return }
        hold.stopWatching()
        hold.session.close()
        let reporter = reporter
        if inline { reporter.report(loss) } else { Task.detached { reporter.report(loss) } }
    }

    /// Asks the server whether `hold` stands; records (and reports) the loss when it does not.
    func verify(_ hold: Hold) async throws {
        var bindings = PostgresBindings()
        bindings.append(hold.key)
        do {
            let result = try await hold.session.query(Self.checkSQL, bindings, within: heartbeatInterval * 2).get()
            if !((try? result.first?.decode(Bool.self)) ?? false) {
                lose(hold, "session (server pid \(hold.session.backendPID)) on \(settings.server) no longer holds it")
            }
        } catch {
            if PostgresErrors.isConnectionLost(error) || hold.session.connection.isClosed {
                lose(hold, "the check on \(settings.server) got no answer (\(PostgresErrors.brief(error)))")
            } else {
                throw PostgresErrors.lockError(error, key: key, settings: settings, doing: "check")
            }
        }
    }

    func loss(of hold: Hold) -> LockLoss? {
        if let loss = hold.lossMark.value { return loss }
        if hold.session.connection.isClosed {
            lose(hold, "the connection to \(settings.server) is closed")
            return hold.lossMark.value
        }
        return nil
    }

    // MARK: Release

    func abandon(_ attempt: Attempt) {
        if let session = attempt.handOver() { pool.giveBack(session) }
    }

    func release(_ hold: Hold) {
        guard let unlock = beginRelease(hold) else { return }
        finishRelease(hold, unlocked: Result { try unlock.wait() })
    }

    func releaseFromTask(_ hold: Hold) async {
        guard let unlock = beginRelease(hold) else { return }
        let answer: Result<PostgresQueryResult, any Error>
        do { answer = .success(try await unlock.get()) } catch { answer = .failure(error) }
        finishRelease(hold, unlocked: answer)
    }

    /// Stops the watch and sends the unlock; `nil` when the hold is lost already (its lock went
    /// with its session). A connection found closed here is a loss, reported as such.
    private func beginRelease(_ hold: Hold) -> EventLoopFuture<PostgresQueryResult>? {
        if hold.session.connection.isClosed, hold.move(from: Hold.held, to: Hold.lost) {
            markLost(hold, "the connection to \(settings.server) closed before the release (the lock went with its session)", inline: true)
        }
        guard hold.move(from: Hold.held, to: Hold.releasing) else {
            hold.session.close()
            return nil
        }
        hold.stopWatching()
        var bindings = PostgresBindings()
        bindings.append(hold.key)
        return hold.session.query(Self.unlockSQL(hold.mode), bindings, within: .seconds(10))
    }

    /// Keeps the session for the next lock when the unlock said it released. When it did not
    /// (no answer, an error, or `false`: the session no longer held the lock), the hold is
    /// reported lost (the work under it may have run unlocked) and the session closed, which
    /// frees whatever it still holds.
    private func finishRelease(_ hold: Hold, unlocked: Result<PostgresQueryResult, any Error>) {
        var released = false
        var problem = "\(settings.server) did not confirm the release"
        switch unlocked {
        case .success(let rows):
            if let row = rows.first, let answer = try? row.decode(Bool.self) { released = answer }
            if !released { problem = "session (server pid \(hold.session.backendPID)) on \(settings.server) no longer held it when released" }
        case .failure(let error):
            problem = "the release got no answer from \(settings.server) (\(PostgresErrors.brief(error)))"
        }
        guard released, hold.move(from: Hold.releasing, to: Hold.released) else {
            if hold.move(from: Hold.releasing, to: Hold.lost) { markLost(hold, problem, inline: true) }
            hold.session.close()
            return
        }
        pool.giveBack(hold.session)
    }

    func forget(_ hold: Hold) {
        // A forked child: the session is its parent's; nothing here may touch it.
    }

    // MARK: Holders

    func holders() -> [LockHolder] {
        (try? fetchHolders().wait()) ?? []
    }

    /// Who holds the lock, from `pg_locks` and `pg_stat_activity`.
    func fetchHolders() -> EventLoopFuture<[LockHolder]> {
        pool.take().flatMap { [self] session in
            session.query(holdersSQL, binds(nil), within: .seconds(10)).flatMapErrorThrowing { error in
                session.close()
                throw error
            }.flatMapThrowing { result in
                pool.giveBack(session)
                return try result.map { row in
                    let (pid, shared, application, address, port, started) = try row.decode(
                        (Int32, Bool, String?, String?, Int32?, Double?).self)
                    return PostgresHolders.holder(
                        pid: pid, shared: shared, applicationName: application, clientAddress: address,
                        clientPort: port, sessionStart: started, server: settings.server)
                }
            }
        }
    }

    func busyHint() -> String? { nil }
}

extension Duration {
    /// "2 s", "250 ms": short text for messages.
    var formatted: String {
        let milliseconds = totalNanoseconds / 1_000_000
        return milliseconds % 1000 == 0 ? "\(milliseconds / 1000) s" : "\(milliseconds) ms"
    }
}
