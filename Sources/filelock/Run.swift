#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif
import ArgumentParser
import FileLocking
import PostgresLocking
import Subprocesses
import Synchronization

/// The lock kinds the tool knows.
enum LockKind: String, ExpressibleByArgument, CaseIterable {
    case kernel
    case soft
    /// A `ReadWriteLock`: SQLite's locking protocol with record locks on the lock file.
    case rw
    /// A `SoftReadWriteLock`: Python filelock's `filelock-rw/1` log in the folder `<lock>.rw`,
    /// for shared and network filesystems; holders renew their records by a heartbeat.
    case softRW = "soft-rw"
    /// A `SoftFileLease`: Python filelock's `filelock/2` lease marker, renewed by a heartbeat
    /// and taken over once left unrenewed for its duration.
    case lease
    /// A `PostgresLock`: a PostgreSQL advisory lock named LOCKFILE, on the server of `--postgres`
    /// (else the `PG*` variables); checked by a heartbeat while the command runs.
    case postgres

    /// Whether the hold is watched by a heartbeat while the command runs, and may be lost.
    var isRenewed: Bool { self == .softRW || self == .lease || self == .postgres }
}

/// `filelock run`: take a lock, run a command, release when it exits.
///
/// The common forms of the command line are read by `RunRequest(quickly:)` without
/// ArgumentParser (see `FileLockCommand.main`); this type is the full parser, with help, error
/// messages and every spelling, and both produce the same `RunRequest`.
struct Run: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run a command while holding a lock; exit with the command's status.",
        discussion: """
            Takes the lock (waiting for it unless -n), runs COMMAND, and releases the lock when the \
            command exits. The lock is not inherited by the command. SIGINT, SIGTERM and SIGHUP are \
            passed on to the command; if filelock itself is killed, a kernel lock is freed by the \
            kernel and a soft lock is left stale, so the next taker breaks it.

            --kind rw takes a read-write lock: with -s its read lock (any number of readers at \
            once), else its write lock (one writer, no readers; once a writer waits, no new reader \
            gets in). It speaks SQLite's locking protocol on the lock file, so it is shared with \
            Python filelock's ReadWriteLock and with sqlite3 transactions on the same file. Local \
            filesystems only; it takes neither --range, --fallback-to-soft nor --remove-on-release.

            --kind soft-rw takes a SoftReadWriteLock, readers and writers on a shared or network \
            filesystem (NFS, SMB, a Kubernetes volume), in Python filelock's filelock-rw/1 protocol: \
            with -s its read lock, else its write lock. It keeps a log in the folder LOCKFILE.rw \
            (LOCKFILE itself is never created) where each holder renews its record every \
            --heartbeat SECONDS (default 30, or a third of --stale-threshold); others evict a holder \
            whose record stays unchanged for --stale-threshold SECONDS (default three heartbeats), \
            as measured on their own clocks.

            --kind lease takes a SoftFileLease, an exclusive marker in Python filelock's filelock/2 \
            lease format, renewed (touched) every --heartbeat SECONDS (default a third of the \
            duration); others take it over once it stays unrenewed for --lease-duration SECONDS \
            (default 30; every contender for a path must use the same). Exclusive only: no -s.

            --postgres URL (or --kind postgres with the PG* variables: PGHOST, PGPORT, PGUSER, \
            PGPASSWORD, PGDATABASE, PGSSLMODE, PGSSLROOTCERT, PGAPPNAME, PGCONNECT_TIMEOUT; no \
            .pgpass) takes a PostgreSQL advisory lock named LOCKFILE, for machines that share no \
            filesystem: -s shared, else exclusive; the key is hashtextextended(LOCKFILE, 0), so psql \
            takes the same lock. Its session is checked every --heartbeat SECONDS (default 2; a \
            check unanswered for two of them counts as a loss). -w covers the wait, not connecting \
            (connect_timeout, 10 s by default). Server and connection failures exit with 2. Prefer \
            PGPASSWORD to a password in the URL, which other users see in ps.

            With soft-rw, lease and postgres, if the hold is lost while the command runs (others \
            evicted it or took it over because its renewals stalled, its record or marker was \
            removed, or the server ended its session), filelock \
            says so on stderr, sends SIGTERM to the command (the command only, not processes it \
            started: a script should pass it on or exec), SIGKILL if it still runs 10 s later, \
            and once it has ended exits with \(RunRequest.lostLockExitCode) whatever the command's \
            status; also with \(RunRequest.lostLockExitCode) when the loss is only found as the lock is \
            released after the command ended (its work may have run without the lock). SIGINT, \
            SIGTERM or SIGHUP while waiting for the lock ends the wait cleanly (the waiter leaves the \
            log) and exits with 128 + the signal. If filelock is killed (SIGKILL), its record or \
            marker stays until others evict it or take it over.

            The short options match flock(1): -s -x -n -w -E, and as in flock(1) `-c 'COMMAND'` \
            after the lock file runs one shell command line with $SHELL (or /bin/sh).

            Examples:
              filelock run /tmp/backup.lock -- rsync -a /data /backup      # one backup at a time
              filelock run -n /tmp/cron.lock -- ./nightly.sh                # skip if the last run still runs
              filelock run -w 30 -E 75 /var/tmp/cache.lock -- make cache    # wait 30 s, then exit 75
              filelock run --kind soft /nfs/jobs/queue.lock -- ./drain      # on NFS
              filelock run --kind rw -s /var/cache/app.lock -- ./report     # many readers at once
              filelock run --kind rw -w 60 /var/cache/app.lock -- ./rebuild # one writer, no readers
              filelock run --kind soft-rw -s /nfs/catalog.lock -- ./report  # readers on NFS, any host
              filelock run --kind soft-rw --heartbeat 10 /nfs/catalog.lock -- ./rebuild
              filelock run --kind lease --lease-duration 60 /nfs/jobs/nightly.lock -- ./nightly
              filelock run --postgres postgres://jobs@db.internal/app nightly -- ./nightly   # across hosts
              filelock run --fallback-to-soft /mnt/fuse/x.lock -- ./job     # flock, or a marker where none
              filelock run --range 0:100 /var/db/records.bin -- ./fix-first-record
              filelock run -w5 /tmp/deploy.lock -c 'git pull && make install'   # flock(1) style
            """
    )

    @Flag(name: [.customShort("s"), .long], help: "Take a shared lock (readers share it).")
    var shared = false

    @Flag(name: [.customShort("x"), .long], help: "Take an exclusive lock (the default).")
    var exclusive = false

    @Flag(name: [.customShort("n"), .customLong("nonblock"), .customLong("nb")], help: "Fail at once if the lock is held.")
    var nonblock = false

    @Option(name: [.customShort("w", allowingJoined: true), .long], help: "Give up after SECONDS of waiting.")
    var timeout: Double?

    @Option(
        name: [.customShort("E", allowingJoined: true), .customLong("conflict-exit-code")],
        help: "Exit code when the lock is held (-n) or the timeout passes.")
    var conflictExitCode: Int32 = 1

    @Option(
        help: """
            kernel (flock, the default), soft (a marker file, for NFS), rw (a read-write lock in SQLite's \
            protocol: -s reads, -x writes), soft-rw (a read-write lock for NFS, Python filelock's \
            filelock-rw/1: -s reads, -x writes) or lease (an exclusive marker renewed by a heartbeat, Python \
            filelock's SoftFileLease), or postgres (a PostgreSQL advisory lock named LOCKFILE: -s shared, -x \
            exclusive; the server of --postgres, else the PG* environment variables).
            """)
    var kind: LockKind?

    @Option(
        help: ArgumentHelp(
            "Lock on this PostgreSQL server instead (postgres://user:password@host:port/database): LOCKFILE is the "
                + "lock's name, the key hashtextextended(LOCKFILE, 0). Implies --kind postgres.", valueName: "url"))
    var postgres: String?

    @Option(
        help: ArgumentHelp(
            "--kind soft-rw and lease: renew the hold every SECONDS (default: soft-rw 30, or a third of "
                + "--stale-threshold; lease a third of --lease-duration); postgres: check it every SECONDS "
                + "(default 2).", valueName: "seconds"))
    var heartbeat: Double?

    @Option(
        help: ArgumentHelp(
            "--kind soft-rw: others evict a holder whose record stays unchanged for SECONDS (default: three "
                + "heartbeats, 90 s; a holder's own longer threshold is honoured).", valueName: "seconds"))
    var staleThreshold: Double?

    @Option(
        help: ArgumentHelp(
            "--kind lease: others take the lease over once it stays unrenewed for SECONDS (default 30; every "
                + "contender for the path must use the same).", valueName: "seconds"))
    var leaseDuration: Double?

    @Option(help: "Lock bytes START:LENGTH of LOCKFILE itself (LENGTH 0: to the end) instead of the whole file.")
    var range: String?

    @Flag(
        help: """
            Where the filesystem has no flock, lock with a marker file at LOCKFILE instead (as --kind soft; \
            exclusive only). A crashed holder's marker is not freed by the kernel.
            """)
    var fallbackToSoft = false

    @Flag(
        help: """
            Delete LOCKFILE on release (while still holding it). Safe only among users of this tool or library \
            (and Python filelock on a local filesystem), which check that the file they locked is still the one \
            at the path; not with flock(1) users of the same file.
            """)
    var removeOnRelease = false

    @Flag(name: [.customShort("v"), .long], help: "Say what happens on stderr.")
    var verbose = false

    @Argument(help: "The lock file (created if missing, with its folders).")
    var lockFile: String

    @Argument(parsing: .captureForPassthrough, help: "The command and its arguments (after --).")
    var command: [String] = []

    var request: RunRequest {
        RunRequest(
            shared: shared, exclusive: exclusive, nonblock: nonblock, timeout: timeout,
            conflictExitCode: conflictExitCode, kind: kind ?? (postgres != nil ? .postgres : .kernel), range: range,
            fallbackToSoft: fallbackToSoft, removeOnRelease: removeOnRelease, verbose: verbose, heartbeat: heartbeat,
            staleThreshold: staleThreshold, leaseDuration: leaseDuration, postgres: postgres, lockFile: lockFile,
            words: command)
    }

    func validate() throws {
        do { try request.validate() } catch { throw ValidationError(error.message) }
    }

    func run() throws {
        throw ExitCode(request.run())
    }
}

/// A mistake on the command line, said in words.
struct UsageError: Error {
    var message: String
}

/// What `filelock run` was asked to do.
struct RunRequest: Equatable {
    var shared = false
    var exclusive = false
    var nonblock = false
    var timeout: Double?
    var conflictExitCode: Int32 = 1
    var kind: LockKind = .kernel
    var range: String?
    var fallbackToSoft = false
    var removeOnRelease = false
    var verbose = false
    /// `--heartbeat`, `--stale-threshold` and `--lease-duration` in seconds, as given.
    var heartbeat: Double?
    var staleThreshold: Double?
    var leaseDuration: Double?
    /// `--postgres URL`.
    var postgres: String?
    var lockFile: String
    /// What follows the lock file, as given.
    var words: [String]

    /// The command and its arguments, without the `--` that may separate them from the lock file.
    var command: [String] { words.first == "--" ? Array(words.dropFirst()) : words }

    /// Whether the command is flock(1)'s `-c 'SHELL COMMAND'` (right after the lock file; after
    /// `--` a `-c` is a program's name like any other).
    private var isShellCommand: Bool { words.first == "-c" || words.first == "--command" }

    /// What to start: the command, or for `-c 'COMMAND'` the user's shell running it (as flock(1)).
    var program: [String] {
        guard isShellCommand, command.count == 2 else { return command }
        let shell = getenv("SHELL").map { String(cString: $0) }.flatMap { $0.isEmpty ? nil : $0 } ?? "/bin/sh"
        return [shell, "-c", command[1]]
    }

    func validate() throws(UsageError) {
        func fail(_ message: String) -> UsageError { UsageError(message: message) }
        guard !command.isEmpty else { throw fail("Missing the command to run after the lock file.") }
        if isShellCommand && command.count != 2 {
            throw fail("-c takes exactly one shell command line, quoted: filelock run FILE -c 'make && make install'.")
        }
        if shared && exclusive { throw fail("Choose --shared or --exclusive, not both.") }
        if shared && kind == .soft { throw fail("A soft lock is exclusive only; drop --shared.") }
        if shared && kind == .lease {
            throw fail(
                "A lease is exclusive only; drop --shared (for readers that share a lock on a network filesystem, "
                    + "use --kind soft-rw -s).")
        }
        try validateRenewalOptions()
        if postgres != nil && kind != .postgres {
            throw fail("--postgres locks on a PostgreSQL server; it does not go with --kind \(kind.rawValue): drop one.")
        }
        if kind == .postgres {
            for (given, option) in [(range != nil, "--range"), (fallbackToSoft, "--fallback-to-soft"), (removeOnRelease, "--remove-on-release")]
            where given {
                throw fail("\(option) is for lock files; a PostgreSQL lock (LOCKFILE is its name) has none: drop \(option).")
            }
        }
        if kind == .rw {
            if range != nil {
                throw fail(
                    "--range locks bytes of a file with a kernel lock; --kind rw locks the bytes SQLite's protocol "
                        + "names on its lock file: drop --range or --kind rw.")
            }
            if fallbackToSoft {
                throw fail(
                    "--fallback-to-soft is for the kernel lock of a whole file; a read-write lock has no marker "
                        + "form (on NFS use --kind soft, exclusive only): drop --fallback-to-soft or --kind rw.")
            }
            if removeOnRelease {
                throw fail(
                    "--remove-on-release does not go with --kind rw: readers, writers and SQLite share the lock file, "
                        + "and one that removes it lets the next taker lock a new file while others hold the old one; "
                        + "drop --remove-on-release.")
            }
        }
        if kind == .softRW || kind == .lease {
            let name = "--kind \(kind.rawValue)"
            if range != nil {
                throw fail("--range locks bytes of a file with a kernel lock; \(name) takes no kernel lock: drop --range or \(name).")
            }
            if fallbackToSoft {
                throw fail(
                    "--fallback-to-soft is for the kernel lock of a whole file; \(name) works without flock already: "
                        + "drop --fallback-to-soft.")
            }
            if removeOnRelease {
                throw fail(
                    kind == .lease
                        ? "--remove-on-release does not go with --kind lease: a lease's marker is removed on release "
                            + "anyway; drop --remove-on-release."
                        : "--remove-on-release does not go with --kind soft-rw: LOCKFILE itself is never created, and "
                            + "the log folder LOCKFILE.rw is shared by every reader and writer and stays; drop "
                            + "--remove-on-release.")
            }
        }
        if range != nil && kind == .soft { throw fail("--range needs a kernel lock; drop --kind soft.") }
        if fallbackToSoft && (kind == .soft || range != nil) {
            throw fail("--fallback-to-soft is for the kernel lock of a whole file; drop it, --kind soft or --range.")
        }
        if removeOnRelease && (kind == .soft || range != nil) {
            throw fail(
                "--remove-on-release is for the kernel lock of a whole file (a soft lock's marker always goes); "
                    + "drop it, --kind soft or --range.")
        }
        if let timeout, !(timeout.isFinite && timeout >= 0) {
            throw fail("--timeout must be a number of seconds, 0 or more; leave it out to wait for ever (got \(timeout)).")
        }
        if let timeout, timeout >= 1e12 {
            throw fail("--timeout must be under 1e12 seconds (about 31,700 years); leave it out to wait for ever.")
        }
        if let range, parsedRange(range) == nil {
            throw fail(
                "--range must be START:LENGTH with whole numbers, LENGTH 0 for to the end, and START+LENGTH at "
                    + "most \(Int64.max) (got \(range)).")
        }
        guard (0...255).contains(conflictExitCode) else { throw fail("--conflict-exit-code must be 0...255.") }
    }

    /// Refuses a lock name that is not UTF-8 text (PostgreSQL names are text; the bytes would be
    /// sent as their `\xNN` spelling, another name).
    static func requireUTF8Name(_ name: String) throws {
        guard String(validating: RawArguments.bytes(of: name), as: UTF8.self) == name else {
            throw FileLockError(
                .invalidConfiguration, resource: .named(name),
                message: "the lock name '\(name)' is not UTF-8 text; a PostgreSQL lock's name must be (use another name)")
        }
    }

    /// The exit status of `run` when the hold of a `soft-rw`, `lease` or `postgres` lock was lost.
    static let lostLockExitCode: Int32 = 70

    /// Refuses `--heartbeat`, `--stale-threshold` and `--lease-duration` where they do not
    /// apply, and values the lock would refuse (said in the options' own words).
    private func validateRenewalOptions() throws(UsageError) {
        func fail(_ message: String) -> UsageError { UsageError(message: message) }
        if heartbeat != nil && !kind.isRenewed {
            throw fail(
                "--heartbeat is for --kind soft-rw, lease and postgres, whose holds are renewed or checked while the "
                    + "command runs; drop --heartbeat.")
        }
        if staleThreshold != nil && kind != .softRW {
            throw fail(
                kind == .lease
                    ? "--stale-threshold is for --kind soft-rw; a lease is taken over once unrenewed for "
                        + "--lease-duration: drop --stale-threshold."
                    : "--stale-threshold is for --kind soft-rw; drop --stale-threshold.")
        }
        if leaseDuration != nil && kind != .lease {
            throw fail(
                kind == .softRW
                    ? "--lease-duration is for --kind lease; a soft-rw holder is evicted once its record stays "
                        + "unchanged for --stale-threshold: drop --lease-duration."
                    : "--lease-duration is for --kind lease; drop --lease-duration.")
        }
        for (name, value) in [("--heartbeat", heartbeat), ("--stale-threshold", staleThreshold), ("--lease-duration", leaseDuration)] {
            guard let value else { continue }
            guard value.isFinite, value > 0 else {
                throw fail("\(name) must be a number of seconds above 0 (got \(value)).")
            }
            guard value < Self.longestInterval else {
                throw fail("\(name) must be under \(Int(Self.longestInterval)) seconds (about 68 years).")
            }
        }
        switch kind {
        case .softRW:
            let (interval, threshold) = (heartbeatSeconds, staleThresholdSeconds)
            guard threshold > interval else {
                throw fail(
                    "--stale-threshold (\(secondsText(threshold))) must exceed --heartbeat (\(secondsText(interval))): a holder must "
                        + "renew its record more than once before others may evict it (three heartbeats is the default).")
            }
            guard threshold < Self.longestInterval else {
                throw fail("--stale-threshold (three heartbeats by default) must be under \(Int(Self.longestInterval)) seconds.")
            }
        case .lease:
            let (interval, duration) = (heartbeatSeconds, leaseDurationSeconds)
            guard interval < duration else {
                throw fail(
                    "--heartbeat (\(secondsText(interval))) must be below --lease-duration (\(secondsText(duration))): the holder "
                        + "must renew the lease before others may take it over (a third of it is the default).")
            }
        case .postgres:
            guard (0.1...3600).contains(heartbeatSeconds) else {
                throw fail("--heartbeat for --kind postgres must be 0.1 to 3600 seconds (got \(secondsText(heartbeatSeconds))).")
            }
        case .kernel, .soft, .rw:
            break
        }
    }

    /// The libraries' limit for these intervals: below 2^31 seconds.
    private static let longestInterval = Double(Int32.max)

    /// The heartbeat in seconds: `--heartbeat`, else (soft-rw) 30 or a third of
    /// `--stale-threshold`, (lease) a third of the duration.
    var heartbeatSeconds: Double {
        if let heartbeat { return heartbeat }
        if kind == .postgres { return 2 }
        if kind == .lease { return leaseDurationSeconds / 3 }
        return staleThreshold.map { $0 / 3 } ?? 30
    }

    /// A soft-rw holder's stale threshold in seconds: `--stale-threshold`, else three heartbeats.
    var staleThresholdSeconds: Double { staleThreshold ?? heartbeatSeconds * 3 }

    /// A lease's duration in seconds: `--lease-duration`, else 30 (Python's default).
    var leaseDurationSeconds: Double { leaseDuration ?? 30 }

    /// Takes the lock, runs the command and returns the exit status for `filelock`: the
    /// command's, `conflictExitCode` when the lock stayed held, 2 for a bad lock path, 127 when
    /// the command cannot be started; for `soft-rw` and `lease`, `lostLockExitCode` when the hold
    /// was lost, and 128 + the signal when one interrupted the wait.
    func run() -> Int32 {
        // A kernel lock on a network or FUSE filesystem says so once, on stderr (the library
        // looks once per lock object: one fstatfs at the acquisition).
        FileLockWarnings.handler = { warning in note(warning.message + " (filelock run --kind soft)") }
        let progress = WaitReporter(
            path: lockFile, verbose: verbose, isMarker: (kind == .soft || kind.isRenewed || fallbackToSoft) && range == nil)
        // A renewed hold may be lost while the command runs; and a waiter interrupted by a signal
        // leaves cleanly (a soft-rw writer named in the log would keep readers out meanwhile).
        let held = kind == .lease ? "lease" : kind == .postgres ? (shared ? "shared lock" : "lock") : shared ? "read lock" : "write lock"
        let losses = kind.isRenewed ? LossWatch(lockFile: lockFile, what: held) : nil
        if kind.isRenewed { ForegroundCommand.recordInterrupts() }
        func interrupted() -> Bool { ForegroundCommand.interruptingSignal != nil }
        do {
            let wait: Duration? = try nonblock ? .zero : timeout.map { try FileLock.timeout(seconds: $0, path: lockFile) }
            let release: () -> Void
            var granted = ""
            switch (kind, range.flatMap(parsedRange)) {
            case (_, let bytes?):
                let file = try rangeFile()
                try file.lock(bytes, mode: shared ? .shared : .exclusive, timeout: wait) {
                    progress.report { (try? file.conflict(for: bytes))??.holder }
                }
                release = { try? file.unlock(bytes) }
            case (.kernel, nil):
                let lock = try FileLock(
                    at: try RawArguments.filePath(lockFile), fallsBackToSoft: fallbackToSoft,
                    removesFileOnRelease: removeOnRelease)
                try lock.acquire(mode: shared ? .shared : .exclusive, timeout: wait) { progress.report { lock.holder } }
                release = { lock.release() }
            case (.soft, nil):
                let lock = try SoftFileLock(at: try RawArguments.filePath(lockFile))
                try lock.acquire(timeout: wait) { progress.report { lock.holder } }
                release = { lock.release() }
            case (.rw, nil):
                // One lock object, used once: no per-process singleton needed.
                let lock = try ReadWriteLock(at: try RawArguments.filePath(lockFile), isSingleton: false)
                let side = shared ? lock.readLock : lock.writeLock
                try side.acquire(timeout: wait) { progress.report { blocker(of: lock, shared: shared) } }
                release = { _ = side.release() }
            case (.softRW, nil):
                let threshold = try FileLock.timeout(seconds: staleThresholdSeconds, path: lockFile)
                let lock = try SoftReadWriteLock(
                    at: try RawArguments.filePath(lockFile),
                    heartbeatInterval: try FileLock.timeout(seconds: heartbeatSeconds, path: lockFile), staleThreshold: threshold,
                    isSingleton: false, pollInterval: min(.milliseconds(100), threshold / 4),
                    onLoss: { [losses] in losses?.handle($0) })
                let side = shared ? lock.readLock : lock.writeLock
                try side.acquire(timeout: wait) { progress.report { blocker(of: lock, shared: shared) } || interrupted() }
                granted = lock.fencingToken.map { " (generation \($0))" } ?? ""
                // Commits this process out of the log; a loss it finds is reported to `losses`.
                release = { _ = try? side.checkedRelease() }
            case (.lease, nil):
                let duration = try FileLock.timeout(seconds: leaseDurationSeconds, path: lockFile)
                let lease = try SoftFileLease(
                    at: try RawArguments.filePath(lockFile), duration: duration,
                    heartbeatInterval: try FileLock.timeout(seconds: heartbeatSeconds, path: lockFile),
                    pollInterval: min(.milliseconds(50), duration / 4), onLoss: { [losses] in losses?.handle($0) })
                try lease.acquire(timeout: wait) { progress.report { lease.holder } || interrupted() }
                release = { _ = try? lease.checkedRelease() }
            case (.postgres, nil):
                try RunRequest.requireUTF8Name(lockFile)
                let lock = try PostgresLock(
                    name: lockFile, server: try PostgresConnectionSettings(url: postgres),
                    heartbeatInterval: try FileLock.timeout(seconds: heartbeatSeconds, path: lockFile),
                    onLoss: { [losses] in losses?.handle($0) })
                let side = shared ? lock.readLock : lock.writeLock
                try side.acquire(timeout: wait) { progress.report { lock.holder } || interrupted() }
                granted = lock.heldSession.map { " on \(lock.server.server) (server pid \($0.backendPID))" } ?? ""
                release = { _ = try? side.checkedRelease() }
            }
            progress.finish()
            if verbose {
                let what = losses.map { "the \($0.what)" } ?? "the lock"
                note("got \(what) on \(lockFile)\(granted); running \(program.joined(separator: " "))")
            }
            var status: Int32
            do {
                // (Starts nothing when a signal came, or the hold was lost, before the start.)
                status = try ForegroundCommand.run(program.map(RawArguments.bytes(of:)))
            } catch let error as ChildProcessError {
                note(error.description)
                status = error.shellStatus
            } catch {
                note("cannot run \(program[0]): \(error)")
                status = 127
            }
            release()
            return losses?.exitStatus(afterCommandStatus: status) ?? status
        } catch let error as FileLockError where error.code == .timedOut {
            progress.finish()
            if verbose { note(error.message) }
            return conflictExitCode
        } catch let error as FileLockError where error.code == .cancelled && interrupted() {
            // Interrupted while waiting: the wait was abandoned (the waiter left the log).
            progress.finish()
            return 128 + (ForegroundCommand.interruptingSignal ?? 0)
        } catch let error as FileLockError {
            progress.finish()
            // (A lease of another duration at the path: the library says so in its own terms.)
            let hint = kind == .lease && error.code == .invalidConfiguration ? " (set it with --lease-duration)" : ""
            note(error.message + hint)
            return 2
        } catch {
            progress.finish()
            note("\(error)")
            return 2
        }
    }
}

/// What `run` does when the hold of a `soft-rw` or `lease` lock is lost: the library reports it
/// on its heartbeat thread while the command runs, or while releasing afterwards.
final class LossWatch: Sendable {
    let path: String
    /// "write lock", "read lock" or "lease".
    let what: String

    private enum Found {
        /// While the command ran: it was sent SIGTERM.
        case whileRunning
        /// Before the command started: it is not started.
        case beforeStart
        /// After the command ended (when releasing).
        case afterEnd
    }

    private let found = Mutex<(loss: LockLoss, when: Found)?>(nil)

    init(lockFile: String, what: String) {
        path = lockFile
        self.what = what
    }

    /// The lock's `onLoss`: stops the command and says why, once.
    func handle(_ loss: LockLoss) {
        let isFirst = found.withLock { found in
            guard found == nil else { return false }
            found = (loss, .afterEnd)
            return true
        }
        guard isFirst else { return }
        let code = RunRequest.lostLockExitCode
        let lost = "lost the \(what) on \(path) (\(loss.reason): \(loss.detail)); another process may hold it now"
        switch ForegroundCommand.terminate(with: SIGTERM, killAfter: 10) {
        case .signalled(let pid):
            found.withLock { $0?.when = .whileRunning }
            note("\(lost): sent SIGTERM to the command (pid \(pid)), SIGKILL in 10 s if it still runs; exiting with \(code) once it ends")
        case .notStarted:
            found.withLock { $0?.when = .beforeStart }
            note("\(lost): not starting the command; exiting with \(code)")
        case .ended:
            break  // (said by `exitStatus`, which knows the command's status)
        }
    }

    /// `lostLockExitCode` once a loss was found (said on stderr), else `nil`.
    func exitStatus(afterCommandStatus status: Int32) -> Int32? {
        guard let entry = found.withLock({ $0 }) else { return nil }
        let (loss, when) = (entry.loss, entry.when)
        let code = RunRequest.lostLockExitCode
        switch when {
        case .whileRunning:
            note("the command ended with status \(status) after the \(what) on \(path) was lost; exiting with \(code)")
        case .beforeStart:
            break
        case .afterEnd:
            note(
                "lost the \(what) on \(path) (\(loss.reason): \(loss.detail)), found when releasing it after the command "
                    + "ended with status \(status): the command may have run part of its work without the lock; exiting "
                    + "with \(code)")
        }
        return code
    }
}

extension RunRequest {
    /// The file whose bytes `--range` locks. A shared (read) lock needs only read access, so an
    /// existing file is opened read-only for it (another user's read-only file, a read-only
    /// mount); a missing file is created, as for an exclusive lock.
    fileprivate func rangeFile() throws -> ByteRangeLock {
        guard shared else { return try ByteRangeLock(at: try RawArguments.filePath(lockFile)) }
        do {
            return try ByteRangeLock(at: try RawArguments.filePath(lockFile), readOnly: true)
        } catch let error as FileLockError where error.errno == ENOENT {
            return try ByteRangeLock(at: try RawArguments.filePath(lockFile))
        }
    }

    /// flock(1) (util-linux getopt) reads a bundle of flags that ends in an option with a value,
    /// `-nw5`, `-nE9` or `-xnw 5`, as the flags and then the option; ArgumentParser takes a joined
    /// value only after a lone option (`-w5`). So before either reader sees `run`'s arguments,
    /// such bundles before the lock file are split (`-nw5` into `-n -w5`); anything else, and
    /// everything from the lock file on, is left as it is.
    /// The long spelling of an option that takes a value.
    private static func longName(of option: String) -> String {
        switch option {
        case "-w": "--timeout"
        case "-E": "--conflict-exit-code"
        default: option
        }
    }

    /// The options of `run` that take a value (as a separate argument).
    static let optionsWithValues: Set<String> = [
        "-w", "-E", "--timeout", "--conflict-exit-code", "--kind", "--range", "--heartbeat", "--stale-threshold",
        "--lease-duration",
    ]

    static func splittingBundledValues(_ arguments: ArraySlice<String>) -> [String] {
        var result: [String] = []
        var rest = arguments
        while let argument = rest.popFirst() {
            result.append(argument)
            if argument == "--" || argument == "-" || !argument.hasPrefix("-") { break }  // the lock file
            if Self.optionsWithValues.contains(argument) {
                guard let value = rest.popFirst() else { continue }
                if value.count > 1, value.hasPrefix("-"), value.dropFirst().first?.isNumber == true {
                    // A negative number: joined, so that the readers judge the value (and say it
                    // must not be negative) instead of taking it for an option.
                    result.removeLast()
                    result.append(Self.longName(of: argument) + "=" + value)
                } else {
                    result.append(value)
                }
                continue
            }
            let letters = Array(argument.dropFirst())
            guard !argument.hasPrefix("--"), let option = letters.firstIndex(where: { $0 == "w" || $0 == "E" }),
                option > 0, letters[..<option].allSatisfy({ "sxnv".contains($0) })
            else { continue }
            result.removeLast()
            result += letters[..<option].map { "-\($0)" }
            result.append("-" + String(letters[option...]))
            if option == letters.count - 1, let value = rest.popFirst() { result.append(value) }
        }
        return result + rest
    }

    /// Reads the common forms of `filelock run`'s arguments (those after `run`) without
    /// ArgumentParser, whose reflection-driven setup costs about 3 ms of the few a short
    /// `filelock run` takes. Returns nil for anything else (help, repeated or unknown options,
    /// option values starting with `-`, ...), which then goes to `Run` for the full treatment.
    /// A test checks that `Run` reads every accepted form the same way.
    init?(quickly arguments: ArraySlice<String>) {
        var seen = Set<String>()
        var rest = arguments[...]
        var lockFile: String?
        while lockFile == nil, let argument = rest.popFirst() {
            guard argument.hasPrefix("-") else {
                lockFile = argument
                break
            }
            var name = argument
            var attached: String?
            if argument.hasPrefix("--"), let equals = argument.firstIndex(of: "=") {
                name = String(argument[..<equals])
                attached = String(argument[argument.index(after: equals)...])
            }
            func value() -> String? {
                if let attached { return attached }
                guard let next = rest.popFirst(), !next.hasPrefix("-") else { return nil }
                return next
            }
            let canonical: String
            switch name {
            case "-s", "--shared", "-x", "--exclusive", "-n", "--nonblock", "--nb", "-v", "--verbose":
                guard attached == nil else { return nil }
                switch name {
                case "-s", "--shared": canonical = "s"; shared = true
                case "-x", "--exclusive": canonical = "x"; exclusive = true
                case "-n", "--nonblock", "--nb": canonical = "n"; nonblock = true
                default: canonical = "v"; verbose = true
                }
            case "-w", "--timeout":
                canonical = "w"
                guard let text = value(), let seconds = Double(text) else { return nil }
                timeout = seconds
            case "-E", "--conflict-exit-code":
                canonical = "E"
                guard let text = value(), let code = Int32(text) else { return nil }
                conflictExitCode = code
            case "--kind":
                canonical = "kind"
                guard let text = value(), let chosen = LockKind(rawValue: text) else { return nil }
                kind = chosen
            case "--range":
                canonical = "range"
                guard let text = value() else { return nil }
                range = text
            case "--heartbeat", "--stale-threshold", "--lease-duration":
                canonical = name
                guard let text = value(), let seconds = Double(text) else { return nil }
                switch name {
                case "--heartbeat": heartbeat = seconds
                case "--stale-threshold": staleThreshold = seconds
                default: leaseDuration = seconds
                }
            case "--fallback-to-soft", "--remove-on-release":
                guard attached == nil else { return nil }
                canonical = name
                if name == "--fallback-to-soft" { fallbackToSoft = true } else { removeOnRelease = true }
            case _ where (argument.hasPrefix("-w") || argument.hasPrefix("-E")) && argument.count > 2:
                // A joined value, as `-w5` or `-E75`.
                let text = String(argument.dropFirst(2))
                if argument.hasPrefix("-w") {
                    canonical = "w"
                    guard let seconds = Double(text) else { return nil }
                    timeout = seconds
                } else {
                    canonical = "E"
                    guard let code = Int32(text) else { return nil }
                    conflictExitCode = code
                }
            default:
                // Bundled short flags such as -xn.
                let letters = argument.dropFirst()
                guard !argument.hasPrefix("--"), letters.count > 1,
                    letters.allSatisfy({ "sxnv".contains($0) })
                else { return nil }
                for letter in letters {
                    guard seen.insert(String(letter)).inserted else { return nil }
                    switch letter {
                    case "s": shared = true
                    case "x": exclusive = true
                    case "n": nonblock = true
                    default: verbose = true
                    }
                }
                continue
            }
            guard seen.insert(canonical).inserted else { return nil }
        }
        guard let lockFile else { return nil }
        self.lockFile = lockFile
        words = Array(rest)
    }
}

/// Who a waiting reader (`shared`) or writer of `lock` waits for: the writer, else a writer that
/// waits for the readers to leave (for a writer, unless that is this process), else for a writer
/// a reader. Unlike `Side.holder`, which may spend only milliseconds on it, this looks through
/// every process's open files for the holders' record locks: it is asked once, after a second.
func blocker(of lock: ReadWriteLock, shared: Bool) -> LockHolder? {
    let holders = lock.holders
    if let writer = holders.first(where: { !$0.isShared }) { return writer }
    if let waiting = lock.waitingWriter, waiting.pid != getpid() { return waiting }
    return shared ? nil : holders.first
}

/// As for a `ReadWriteLock`: the writer, else a waiting writer other than this process, else for
/// a writer a reader. (`Side.holder` names the waiting writer even when that is the caller.)
func blocker(of lock: SoftReadWriteLock, shared: Bool) -> LockHolder? {
    let table = lock.currentHolders
    func isUs(_ holder: LockHolder) -> Bool { holder.pid == getpid() && holder.host == SoftFileLock.hostName }
    if let writer = table.writer, !isUs(writer) { return writer }
    if let waiting = table.waitingWriter, !isUs(waiting) { return waiting }
    return shared ? nil : table.readers.first
}

/// `START:LENGTH` as a byte range; `nil` unless the kernel can take it (checked here, before the
/// lock file is created).
func parsedRange(_ text: String) -> ByteRange? {
    let parts = text.split(separator: ":", omittingEmptySubsequences: false)
    guard parts.count == 2, let start = Int64(parts[0]), let length = Int64(parts[1]), start >= 0, length >= 0,
        !start.addingReportingOverflow(length).overflow
    else { return nil }
    return ByteRange(start: start, length: length)
}

/// Says `message` on stderr, control characters escaped (it may quote a marker or a path).
func note(_ message: String) {
    let bytes = Array("filelock: \(escapingControlCharacters(message))\n".utf8)
    _ = bytes.withUnsafeBytes { write(2, $0.baseAddress, $0.count) }
}

/// Says on stderr that we wait (after a second, when stderr is a terminal or with --verbose):
/// once, then updating the waited time in place on a terminal.
final class WaitReporter {
    let path: String
    let verbose: Bool
    let isTerminal = isatty(2) == 1
    let started = ChildProcess.now()
    var shown = false
    var lastUpdate = 0.0

    /// Whether the holder is read from a soft lock's marker (which may name another host).
    let isMarker: Bool

    init(path: String, verbose: Bool, isMarker: Bool) {
        self.path = escapingControlCharacters(path)
        self.verbose = verbose
        self.isMarker = isMarker
    }

    /// Called at every poll interval while waiting; never asks to stop.
    func report(holder: () -> LockHolder?) -> Bool {
        let waited = ChildProcess.now() - started
        guard waited >= 1, isTerminal || verbose else { return false }
        if !shown {
            shown = true
            let holder = holder()
            var who = holder.map { "held by \(describe($0))" } ?? "held by another process"
            if let holder, let command = commandLine(of: holder, inMarker: isMarker) { who += ", running \(command)" }
            let text = "waiting for \(path) (\(escapingControlCharacters(who)))"
            if isTerminal { write("filelock: \(text), waited 1 s") } else { note(text) }
            lastUpdate = waited
        } else if isTerminal && waited - lastUpdate >= 1 {
            write("\rfilelock: waiting for \(path), waited \(Int(waited)) s\u{1B}[K")
            lastUpdate = waited
        }
        return false
    }

    func finish() {
        if shown && isTerminal { write("\n") }
    }

    private func write(_ text: String) {
        let bytes = Array(text.utf8)
        _ = bytes.withUnsafeBytes { Glibc_write(2, $0.baseAddress, $0.count) }
    }
}

private func Glibc_write(_ fd: Int32, _ buffer: UnsafeRawPointer?, _ count: Int) -> Int { write(fd, buffer, count) }

/// "pid 12 on host since …".
func describe(_ holder: LockHolder) -> String {
    // A server session says who it is itself: server pid, client, application name.
    guard holder.kind == .process else { return holder.description }
    var text = "pid \(holder.pid)"
    if let host = holder.host { text += " on \(host)" }
    if let since = holder.since { text += " since \(formatted(since))" }
    if holder.looksStale { text += " (looks stale)" }
    return text
}

/// A UTC timestamp such as 2026-11-25T21:30:14Z.
func formatted(_ time: UnixTime) -> String {
    var seconds = time_t(time.seconds)
    var parts = tm()
    gmtime_r(&seconds, &parts)
    func two(_ value: Int32) -> String { value < 10 ? "0\(value)" : "\(value)" }
    return "\(parts.tm_year + 1900)-\(two(parts.tm_mon + 1))-\(two(parts.tm_mday))T"
        + "\(two(parts.tm_hour)):\(two(parts.tm_min)):\(two(parts.tm_sec))Z"
}

/// What `holder` runs, where this host can tell: a holder recorded in a soft lock's marker
/// (`inMarker`) only when it runs on this host and looks alive; elsewhere its pid names some
/// other process here, or none.
func commandLine(of holder: LockHolder, inMarker: Bool) -> String? {
    guard !inMarker || (holder.host == SoftFileLock.hostName && !holder.looksStale) else { return nil }
    return commandLine(of: holder.pid)
}

/// Text for a terminal: control characters (C0, DEL and C1) as `\x1b`, so that a marker, a path
/// or a command line cannot move the cursor or recolour the terminal.
func escapingControlCharacters(_ text: String) -> String {
    guard text.unicodeScalars.contains(where: { $0.value < 0x20 || (0x7f...0x9f).contains($0.value) }) else {
        return text
    }
    var result = ""
    for scalar in text.unicodeScalars {
        if scalar.value < 0x20 || (0x7f...0x9f).contains(scalar.value) {
            result += "\\x" + (scalar.value < 0x10 ? "0" : "") + String(scalar.value, radix: 16)
        } else {
            result.unicodeScalars.append(scalar)
        }
    }
    return result
}

/// The command line of a local process from `/proc/PID/cmdline`, where readable.
func commandLine(of pid: Int32) -> String? {
    let descriptor = open("/proc/\(pid)/cmdline", O_RDONLY | O_CLOEXEC)
    guard descriptor >= 0 else { return nil }
    defer { close(descriptor) }
    var buffer = [UInt8](repeating: 0, count: 4096)
    let count = read(descriptor, &buffer, buffer.count)
    guard count > 0 else { return nil }
    let parts = buffer.prefix(count).split(separator: 0).map { FileLockError.displayText(ofPathBytes: Array($0)) }
    return parts.isEmpty ? nil : parts.joined(separator: " ")
}

/// A number of seconds for people: `30 s`, `0.5 s`.
func secondsText(_ value: Double) -> String {
    if value == value.rounded(), abs(value) < 1e15 { return "\(Int(value)) s" }
    return "\(value) s"
}
