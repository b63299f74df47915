#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif
import FileLocking
import Logging
import NIOCore
import NIOPosix
import NIOSSL
import PostgresNIO
import Synchronization

/// One server session: a connection of its own, which holds at most one lock at a time (a
/// session-level advisory lock belongs to the session, so a held lock needs a connection that no
/// other work shares).
final class PostgresSession: Sendable {
    let connection: PostgresConnection
    /// The server's process serving this session.
    let backendPID: Int32
    /// `application_name` while no lock is held: the prefix, this process's id and host.
    let baseApplicationName: String
    /// Set when the session's state is unknown (a query was abandoned half-way): never reused.
    private let isSpoiled = Atomic(false)
    /// Called once when the connection closes: the hold the session serves now, if any, is lost.
    private let closeHandler = Mutex<(@Sendable () -> Void)?>(nil)

    init(connection: PostgresConnection, backendPID: Int32, baseApplicationName: String) {
        self.connection = connection
        self.backendPID = backendPID
        self.baseApplicationName = baseApplicationName
    }

    /// Starts listening for the connection's end (once per session: a callback per hold would
    /// pile up on a long-lived pooled connection).
    private func listenForClose() {
        connection.closeFuture.whenComplete { [weak self] _ in
            guard let self else { return }
            let handler = closeHandler.withLock { handler in defer { handler = nil }; return handler }
            handler?()
        }
    }

    /// Calls `handler` when the connection closes from now on (at once if it is closed); `nil`
    /// stops that.
    func onClose(_ handler: (@Sendable () -> Void)?) {
        closeHandler.withLock { $0 = handler }
        if handler != nil, connection.isClosed {
            closeHandler.withLock { handler in defer { handler = nil }; return handler }?()
        }
    }

    var eventLoop: any EventLoop { connection.eventLoop }

    /// Whether the session may serve another lock.
    var isReusable: Bool { !connection.isClosed && !isSpoiled.load(ordering: .relaxed) }

    /// Marks the session never to be reused (closed when given back), without closing it now.
    func spoil() { isSpoiled.store(true, ordering: .relaxed) }

    /// Set once `close` has begun.
    private let isClosing = Atomic(false)

    /// Closes the connection: the server ends the session, and with it every lock and wait of it.
    ///
    /// Every advisory lock of the session is unlocked first (`pg_advisory_unlock_all()`, queued
    /// behind a statement still running): a child forked without exec keeps a copy of the socket,
    /// and while any copy is open the server sees no end of the session, so closing alone would
    /// not free its locks. The connection is closed once that answers, or after 2 s.
    func close() {
        isSpoiled.store(true, ordering: .relaxed)
        guard !isClosing.exchange(true, ordering: .acquiringAndReleasing) else { return }
        let connection = connection
        guard !connection.isClosed else { return }
        let unlock = connection.query(PostgresQuery(unsafeSQL: "SELECT pg_advisory_unlock_all()"), logger: PostgresSession.logger)
        let deadline = connection.eventLoop.scheduleTask(in: .seconds(2)) { PostgresSession.close(connection) }
        unlock.whenComplete { _ in
            deadline.cancel()
            PostgresSession.close(connection)
        }
    }

    /// Closes `connection`, keeping it alive until it is closed (PostgresNIO requires a
    /// connection to be closed before it goes away).
    static func close(_ connection: PostgresConnection) {
        let closing: EventLoopFuture<Void> = connection.close()
        closing.whenComplete { _ in withExtendedLifetime(connection) {} }
    }

    /// Runs `sql` with `binds`; fails when no answer came within `bound` (closing the session, so
    /// that nothing of the query stays running on the server).
    func query(
        _ sql: String, _ binds: PostgresBindings = PostgresBindings(), within bound: Duration? = nil
    ) -> EventLoopFuture<PostgresQueryResult> {
        let answer = connection.query(PostgresQuery(unsafeSQL: sql, binds: binds), logger: PostgresSession.logger)
        guard let bound else { return answer }
        let timer = eventLoop.scheduleTask(in: .nanoseconds(bound.totalNanoseconds)) { [self] in close() }
        answer.whenComplete { _ in timer.cancel() }
        return answer
    }

    /// A logger that prints nothing: the library reports through its errors and loss signals.
    static let logger = Logger(label: "filelock.postgres", factory: { _ in SwiftLogNoOpLogHandler() })

    // MARK: Connecting

    /// Connects and prepares a session: `application_name` names this process, and on servers
    /// that can (PostgreSQL 14 and later) a wait whose client went away ends within 250 ms
    /// (`client_connection_check_interval`).
    static func connect(_ settings: PostgresConnectionSettings) -> EventLoopFuture<PostgresSession> {
        let eventLoop = PostgresConnection.defaultEventLoopGroup.any()
        let name = applicationName(settings.applicationName)
        let configuration: EventLoopFuture<PostgresConnection.Configuration>
        switch settings.endpoint {
        case .unixSocket:
            var made = PostgresConnection.Configuration(
                unixSocketPath: settings.server, username: settings.user, password: settings.password,
                database: settings.database)
            made.options.connectTimeout = .nanoseconds(settings.connectTimeout.totalNanoseconds)
            made.options.additionalStartupParameters = [("application_name", name)]
            configuration = eventLoop.makeSucceededFuture(made)
        case .tcp(let host, let port):
            let tls: PostgresConnection.Configuration.TLS
            do {
                tls = try makeTLS(settings)
            } catch {
                return eventLoop.makeFailedFuture(error)
            }
            // Our own bootstrap: PostgresNIO's sets no TCP keepalives, and without them a
            // connection to a host that vanished (no FIN, no RST) is seen dead only when a query
            // times out. Here the kernel probes after 10 s of silence, every 5 s, 3 times.
            let bootstrap = ClientBootstrap(group: eventLoop)
                .connectTimeout(.nanoseconds(settings.connectTimeout.totalNanoseconds))
                .channelOption(ChannelOptions.socketOption(.so_keepalive), value: 1)
                .channelOption(ChannelOptions.Types.SocketOption(level: .tcp, name: .tcp_nodelay), value: 1)
            configuration = keepaliveTuned(bootstrap).connect(host: host, port: port).map { channel in
                var made = PostgresConnection.Configuration(
                    establishedChannel: channel, tls: tls, username: settings.user, password: settings.password,
                    database: settings.database)
                if !isAddress(host) { made.options.tlsServerName = host }
                made.options.connectTimeout = .nanoseconds(settings.connectTimeout.totalNanoseconds)
                made.options.additionalStartupParameters = [("application_name", name)]
                return made
            }
        }
        let connected = configuration.flatMap { configuration in
            PostgresConnection.connect(
                on: eventLoop, configuration: configuration, id: nextConnectionID.add(1, ordering: .relaxed).newValue,
                logger: logger)
        }
        // An established channel is given no connect timeout by PostgresNIO: bound the start-up
        // (TLS, authentication) here, so a server that accepts but never answers cannot hang us.
        let deadline = eventLoop.scheduleTask(in: .nanoseconds(settings.connectTimeout.totalNanoseconds) * 2) {
            connected.whenSuccess { PostgresSession.close($0) }
        }
        return connected.flatMap { connection in
            deadline.cancel()
            let session = PostgresSession(connection: connection, backendPID: 0, baseApplicationName: name)
            return session.query(setUpSQL, within: settings.connectTimeout).flatMapThrowing { result in
                guard let row = result.first else { throw PostgresSession.unexpected("no row from the session set-up") }
                let (pid, version) = try row.decode((Int32, Int32).self)
                guard version >= 110_000 else {
                    PostgresSession.close(connection)
                    throw PostgresSessionError.serverTooOld(version: version)
                }
                let prepared = PostgresSession(connection: connection, backendPID: pid, baseApplicationName: name)
                prepared.listenForClose()
                return prepared
            }.flatMapErrorThrowing { error in
                PostgresSession.close(connection)
                throw error
            }
        }
    }

    /// Lifts the timeouts a role or server may set that would end a long wait or a holder that
    /// idles between heartbeats: these sessions only lock, wait and check.
    private static let setUpSQL = """
        SELECT pg_backend_pid(), current_setting('server_version_num')::int,
               set_config('statement_timeout', '0', false),
               CASE WHEN current_setting('server_version_num')::int >= 140000
                    THEN set_config('client_connection_check_interval', '250', false)
                         || set_config('idle_session_timeout', '0', false) END,
               CASE WHEN current_setting('server_version_num')::int >= 170000
                    THEN set_config('transaction_timeout', '0', false) END
        """

    private static let nextConnectionID = Atomic(0)

    private static func keepaliveTuned(_ bootstrap: ClientBootstrap) -> ClientBootstrap {
        #if os(Linux)
            return
                bootstrap
                .channelOption(ChannelOptions.Types.SocketOption(level: .tcp, name: .init(rawValue: TCP_KEEPIDLE)), value: 10)
                .channelOption(ChannelOptions.Types.SocketOption(level: .tcp, name: .init(rawValue: TCP_KEEPINTVL)), value: 5)
                .channelOption(ChannelOptions.Types.SocketOption(level: .tcp, name: .init(rawValue: TCP_KEEPCNT)), value: 3)
        #else
            return bootstrap
        #endif
    }

    private static func isAddress(_ host: String) -> Bool {
        (try? SocketAddress(ipAddress: host, port: 0)) != nil
    }

    private static func makeTLS(_ settings: PostgresConnectionSettings) throws -> PostgresConnection.Configuration.TLS {
        var configuration = TLSConfiguration.makeClientConfiguration()
        switch settings.tlsMode {
        case .disable: return .disable
        case .prefer, .require: configuration.certificateVerification = .none
        case .verifyCA: configuration.certificateVerification = .noHostnameVerification
        case .verifyFull: configuration.certificateVerification = .fullVerification
        }
        if let path = settings.rootCertificatePath, settings.tlsMode == .verifyCA || settings.tlsMode == .verifyFull {
            configuration.trustRoots = .file(path)
        }
        let context = try NIOSSLContext(configuration: configuration)
        return settings.tlsMode == .prefer ? .prefer(context) : .require(context)
    }

    /// `application_name` while no lock is held: `PREFIX PID@HOST`, short enough that the
    /// acquisition time still fits within the server's 63 bytes.
    static func applicationName(_ prefix: String?) -> String {
        let identity = " \(FileLocking.System.processID)@"
        let prefixText = String(truncatingUTF8: prefix ?? "filelock", toBytes: 20)
        let room = 63 - heldStampLength - prefixText.utf8.count - identity.utf8.count
        return prefixText + identity + String(truncatingUTF8: ProcessIdentity.hostName, toBytes: max(room, 0))
    }

    /// What a held lock adds to the name: a space and 13 digits of milliseconds since 1970.
    static let heldStampLength = 14

    static func unexpected(_ what: String) -> PostgresSessionError { .unexpectedAnswer(what) }

    /// The process whose network threads the sessions use: a child forked without exec has none
    /// of them (a wait there would never end), so it may not connect.
    private static let networkOwner = FileLocking.System.processID

    static var isUsableInThisProcess: Bool { networkOwner == FileLocking.System.processID }
}

/// Failures of the session layer that are not the server's or the network's.
enum PostgresSessionError: Error, CustomStringConvertible {
    case serverTooOld(version: Int32)
    case unexpectedAnswer(String)
    case forkedChild

    var description: String {
        switch self {
        case .serverTooOld(let version):
            "PostgreSQL \(version / 10000) is too old: hashtextextended needs PostgreSQL 11 or later"
        case .unexpectedAnswer(let what): "unexpected answer from the server: \(what)"
        case .forkedChild:
            "this process was forked (without exec) from one that used PostgresLock, and has none of its network "
                + "threads: use PostgresLock in the parent, or exec a new program in the child"
        }
    }
}

/// The idle sessions of one server, database and role, shared by every lock of the process:
/// taking a lock reuses one (one round trip) instead of connecting anew (several). At most
/// `maximumIdle` wait; each is closed after `idleLifetime` unused.
final class SessionPool: Sendable {
    static let maximumIdle = 8
    static let idleLifetime = Duration.seconds(10)

    private struct Idle {
        var session: PostgresSession
        var expiry: Scheduled<Void>?
    }

    let settings: PostgresConnectionSettings
    private let idle = Mutex<[Idle]>([])
    /// The process that made the pool: a child forked without exec must not use its parent's
    /// connections (nor can it: the event loop threads are not in the child).
    private let owner = FileLocking.System.processID

    private init(settings: PostgresConnectionSettings) { self.settings = settings }

    private static let pools = Mutex<[PostgresConnectionSettings: SessionPool]>([:])

    static func shared(for settings: PostgresConnectionSettings) -> SessionPool {
        pools.withLock { pools in
            if let pool = pools[settings] { return pool }
            let pool = SessionPool(settings: settings)
            pools[settings] = pool
            return pool
        }
    }

    /// An idle session that still works, or a new one.
    func take() -> EventLoopFuture<PostgresSession> {
        takeReporting().map { $0.0 }
    }

    /// `take()`, saying whether the session was an idle one (which may have died unnoticed while
    /// it idled: a caller retries once on a new one).
    func takeReporting() -> EventLoopFuture<(PostgresSession, wasIdle: Bool)> {
        guard PostgresSession.isUsableInThisProcess else {
            return PostgresConnection.defaultEventLoopGroup.any().makeFailedFuture(PostgresSessionError.forkedChild)
        }
        if owner == FileLocking.System.processID {
            while let entry = idle.withLock({ $0.popLast() }) {
                entry.expiry?.cancel()
                if entry.session.isReusable { return entry.session.eventLoop.makeSucceededFuture((entry.session, true)) }
            }
        }
        return PostgresSession.connect(settings).map { ($0, false) }
    }

    /// Keeps `session` for the next lock when it holds nothing and works; closes it otherwise.
    func giveBack(_ session: PostgresSession) {
        guard session.isReusable, owner == FileLocking.System.processID else {
            session.close()
            return
        }
        let kept = idle.withLock { idle -> Bool in
            guard idle.count < SessionPool.maximumIdle else { return false }
            idle.append(Idle(session: session, expiry: nil))
            return true
        }
        guard kept else {
            session.close()
            return
        }
        let expiry = session.eventLoop.scheduleTask(in: .nanoseconds(SessionPool.idleLifetime.totalNanoseconds)) {
            [self] in
            let expired = idle.withLock { idle -> Bool in
                guard let index = idle.firstIndex(where: { $0.session === session }) else { return false }
                idle.remove(at: index)
                return true
            }
            if expired { session.close() }
        }
        idle.withLock { idle in
            if let index = idle.firstIndex(where: { $0.session === session }) { idle[index].expiry = expiry } else { expiry.cancel() }
        }
    }

    /// Closes every idle session (tests, and `filelock` before it exits).
    func closeIdle() {
        for entry in idle.withLock({ idle in defer { idle.removeAll() }; return idle }) {
            entry.expiry?.cancel()
            entry.session.close()
        }
    }
}

extension String {
    /// The longest prefix of `text` of at most `limit` UTF-8 bytes that ends on a whole character.
    init(truncatingUTF8 text: String, toBytes limit: Int) {
        var result = ""
        var used = 0
        for character in text {
            let width = character.utf8.count
            guard used + width <= limit else { break }
            result.append(character)
            used += width
        }
        self = result
    }
}
