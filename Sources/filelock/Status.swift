#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif
import ArgumentParser
import FileLocking
import PostgresLocking

/// What `status` and `break` find at a lock path.
struct LockReport {
    var path: String
    var kind: LockKind
    /// Whether `kind` was guessed from the file rather than given.
    var isGuessed: Bool
    /// The holders that can be named: a kernel lock's processes, or a soft marker's record.
    var holders: [LockHolder]
    var waiting: Int
    /// What stands at the path, read as a soft lock's marker.
    var marker: SoftFileLock.MarkerState

    /// For a read-write lock, a writer that holds SQLite's pending byte and waits for the readers
    /// inside to leave (no new reader gets in meanwhile).
    var waitingWriter: LockHolder? = nil
    /// For a read-write lock, locks whose process this user cannot see (another user's).
    var unidentifiedCount = 0
    /// For a read-write lock, what its file holds.
    var fileFormat: ReadWriteLock.FileFormat? = nil
    /// For a soft read-write lock, the newest generation of its log (`nil`: no log yet), the
    /// log's folder, and the stale threshold its holders were judged by.
    var generation: UInt64? = nil
    var logFolder: String? = nil
    var staleThreshold: Duration? = nil
    /// A Python `filelock/2` marker at the path (a lease's, or another mode's).
    var versionTwo: SoftFileLock.VersionTwoMarker? = nil
    /// The network or FUSE filesystem the lock file is on (`nil`: a local one).
    var networkFilesystem: NetworkFilesystem? = nil
    /// Whether `kind` is a kernel lock that was asked for or found in use (not only guessed from
    /// a free file, which may as well be a free soft lock's path): then a network filesystem
    /// deserves the warning that kernel locks there may not reach other hosts.
    var isKernelLockInUse = false
    /// For a PostgreSQL lock, the server (`host:port` or its socket) and database.
    var postgresServer: String? = nil

    /// The holders of the PostgreSQL advisory lock named `name` (`path`), from `pg_locks` and
    /// `pg_stat_activity`.
    static func inspectPostgres(_ name: String, url: String?) throws -> LockReport {
        try RunRequest.requireUTF8Name(name)
        let lock = try PostgresLock(name: name, server: try PostgresConnectionSettings(url: url))
        let holders = try lock.holdersNow()
        PostgresLock.closeIdleConnections(to: lock.server)
        return LockReport(
            path: name, kind: .postgres, isGuessed: false, holders: holders, waiting: 0, marker: .absent,
            postgresServer: lock.server.description)
    }

    /// Looks at the path without creating anything. A holder record means a soft lock; so does
    /// a malformed or unreadable non-empty file that no kernel lock holds; a file that no flock
    /// holds but whose record locks sit on SQLite's lock bytes is a read-write lock (held: a free
    /// one cannot be told from a free kernel lock file, and needs none of its settings); anything
    /// else (an empty file above all, which is what `flock` leaves) is taken for a kernel lock file.
    ///
    /// - Throws: `FileLockError` when the path is no regular file (a directory, a symbolic link,
    ///   which is never followed, a FIFO), as `run` refuses it.
    ///
    /// A `filelock/2` marker of mode `lease` is a lease; a folder `<path>.rw` is a soft read-write
    /// lock's log (when it names holders, or nothing stands at the path itself).
    /// `staleThreshold` judges a soft read-write lock's records (`nil`: the library's default).
    static func inspect(_ path: String, kind: LockKind?, staleThreshold: Duration? = nil) throws -> LockReport {
        if kind == .softRW {
            // The lock path itself is never created: only its log is looked at.
            return try softReadWrite(path, isGuessed: false, marker: .absent, staleThreshold: staleThreshold)
        }
        let softLock = try SoftFileLock(at: try RawArguments.filePath(path))
        let marker = try softLock.inspectMarker()
        let versionTwo = try softLock.versionTwoMarker()
        let kernel = try FileLock(at: try RawArguments.filePath(path))
        let filesystem = kernel.networkFilesystem
        let kernelHolders = kind == nil || kind == .kernel ? kernel.holders : []
        // Read only when asked for, or when no flock and no marker record says what the file is.
        var readWrite: ReadWriteLockHolders?
        func readWriteTable() throws -> ReadWriteLockHolders {
            if let readWrite { return readWrite }
            let table = try ReadWriteLock(at: try RawArguments.filePath(path), isSingleton: false).currentHolders
            readWrite = table
            return table
        }
        let detected: LockKind
        if let kind {
            detected = kind
        } else if case .record = marker {
            detected = .soft
        } else if let versionTwo {
            detected = versionTwo.mode == "lease" ? .lease : .soft
        } else if !kernelHolders.isEmpty {
            detected = .kernel
        } else if hasSoftReadWriteLog(path),
            case let report = try softReadWrite(path, isGuessed: true, marker: marker, staleThreshold: staleThreshold),
            marker == .absent || report.isHeld
        {
            return report
        } else if try readWriteTable().isHeld {
            detected = .rw
        } else if let format = try ReadWriteLock(at: try RawArguments.filePath(path), isSingleton: false).fileFormat,
            format == .sqlite || format == .sqliteWAL
        {
            // An SQLite transaction on a read-write lock's file writes the database's first page:
            // never a marker.
            detected = .rw
        } else {
            switch marker {
            case .malformed, .unreadable(_, 1...): detected = .soft
            case .lease: detected = .lease
            case .absent, .empty, .unreadable, .record: detected = .kernel
            }
        }
        switch detected {
        case .postgres:
            return try inspectPostgres(path, url: nil)
        case .soft, .lease:
            let holders: [LockHolder] =
                if case .record(let holder) = marker { [holder] } else { versionTwo.map { [$0.holder] } ?? [] }
            return LockReport(
                path: path, kind: detected, isGuessed: kind == nil, holders: holders, waiting: 0, marker: marker,
                versionTwo: versionTwo, networkFilesystem: filesystem)
        case .softRW:
            return try softReadWrite(path, isGuessed: kind == nil, marker: marker, staleThreshold: staleThreshold)
        case .kernel:
            return LockReport(
                path: path, kind: .kernel, isGuessed: kind == nil, holders: kernelHolders,
                waiting: kernel.waiterCount, marker: marker, networkFilesystem: filesystem,
                isKernelLockInUse: kind != nil || !kernelHolders.isEmpty)
        case .rw:
            let table = try readWriteTable()
            return LockReport(
                path: path, kind: .rw, isGuessed: kind == nil, holders: (table.writer.map { [$0] } ?? []) + table.readers,
                waiting: 0, marker: marker, waitingWriter: table.waitingWriter, unidentifiedCount: table.unidentifiedCount,
                fileFormat: try ReadWriteLock(at: try RawArguments.filePath(path), isSingleton: false).fileFormat,
                networkFilesystem: filesystem, isKernelLockInUse: true)
        }
    }

    /// `SoftReadWriteLock`'s default stale threshold: three of its default 30 s heartbeats.
    static let defaultStaleThreshold = Duration.seconds(90)

    /// Whether anything stands at `<path>.rw` (a soft read-write lock's log, or something in its place).
    static func hasSoftReadWriteLog(_ path: String) -> Bool {
        let bytes = RawArguments.bytes(of: path) + Array(".rw".utf8)
        var status = stat()
        let found = (bytes.map { CChar(bitPattern: $0) } + [0]).withUnsafeBufferPointer { lstat($0.baseAddress!, &status) }
        // Anything standing there counts (a file or a link in its place is reported as the error
        // a soft read-write lock gives for it, not as a free lock).
        return found == 0
    }

    /// A soft read-write lock's report: the writer, the readers and a waiting writer from the
    /// newest generation of its log, each judged stale by `staleThreshold` (or the default).
    private static func softReadWrite(
        _ path: String, isGuessed: Bool, marker: SoftFileLock.MarkerState, staleThreshold: Duration?
    ) throws -> LockReport {
        let threshold = staleThreshold ?? Self.defaultStaleThreshold
        let lock = try SoftReadWriteLock(
            at: try RawArguments.filePath(path), heartbeatInterval: threshold / 3, staleThreshold: threshold,
            isSingleton: false, pollInterval: min(.milliseconds(100), threshold / 4))
        let state = try lock.readState()
        let generation = state.generation
        let table = state.holders
        return LockReport(
            path: path, kind: .softRW, isGuessed: isGuessed, holders: (table.writer.map { [$0] } ?? []) + table.readers,
            waiting: 0, marker: marker, waitingWriter: table.waitingWriter, generation: generation,
            logFolder: lock.logFolder, staleThreshold: threshold)
    }

    /// The warning `status` prints on stderr for a kernel lock in use on a network or FUSE
    /// filesystem (the library's text, as `run` prints it); `nil` otherwise.
    var networkFilesystemWarning: String? {
        guard isKernelLockInUse, let networkFilesystem else { return nil }
        let lockKind = kind == .rw ? "ReadWriteLock" : "FileLock"
        return FileLockWarning.kernelLock(lockKind, path: path, on: networkFilesystem).message
            + " (filelock run --kind soft)"
    }


    /// A soft lock or a lease is held while its marker exists, whether or not it names its
    /// holder; a read-write lock also while a writer waits for its readers (no new reader gets
    /// in), a soft one while its log names anyone.
    var isHeld: Bool {
        switch kind {
        case .soft, .lease: marker != .absent
        case .kernel: !holders.isEmpty
        case .rw: !holders.isEmpty || waitingWriter != nil || unidentifiedCount > 0
        case .softRW: !holders.isEmpty || waitingWriter != nil
        case .postgres: !holders.isEmpty
        }
    }

    var json: String {
        func quoted(_ text: String) -> String {
            var result = "\""
            for scalar in text.unicodeScalars {
                switch scalar {
                case "\"": result += "\\\""
                case "\\": result += "\\\\"
                case "\n": result += "\\n"
                case _ where scalar.value < 0x20: result += "\\u00" + (scalar.value < 0x10 ? "0" : "") + String(scalar.value, radix: 16)
                default: result.unicodeScalars.append(scalar)
                }
            }
            return result + "\""
        }
        func number(_ seconds: Double) -> String {
            // One decimal, as the text shows it; saturated (a file's mtime can be anything).
            let clamped = min(max(seconds, -1e15), 1e15)
            return "\((clamped * 10).rounded() / 10)"
        }
        func exactly(_ duration: Duration) -> String { "\(duration.secondsValue)" }
        func object(_ holder: LockHolder) -> String {
            var fields: [String]
            if holder.kind == .serverSession {
                // "pid" and "host" name the holding process as for every other kind (read from our
                // application name; null for other clients); the server's side has fields of its own.
                let client = clientProcess(of: holder)
                fields = ["\"pid\":" + (client.map { "\($0.pid)" } ?? "null")]
                fields.append("\"host\":" + (client.map { quoted($0.host) } ?? "null"))
                fields.append("\"serverPid\":\(holder.pid)")
                fields.append("\"server\":" + (holder.host.map(quoted) ?? "null"))
                fields.append("\"client\":" + (holder.clientAddress.map(quoted) ?? "null"))
                fields.append("\"applicationName\":" + (holder.applicationName.map(quoted) ?? "null"))
            } else {
                fields = ["\"pid\":\(holder.pid)"]
                fields.append("\"host\":" + (holder.host.map(quoted) ?? "null"))
            }
            fields.append("\"since\":" + (holder.since.map { quoted(formatted($0)) } ?? "null"))
            fields.append("\"age\":" + (holder.since.map { number(secondsSince($0)) } ?? "null"))
            fields.append("\"shared\":\(holder.isShared)")
            fields.append("\"stale\":\(holder.looksStale)")
            fields.append("\"command\":" + (command(of: holder).map(quoted) ?? "null"))
            return "{" + fields.joined(separator: ",") + "}"
        }
        var kindFields = ""
        switch kind {
        case .soft, .lease:
            kindFields = ",\"marker\":\"\(versionTwo == nil ? marker.name : "filelock/2")\",\"modified\":"
                + (marker.modified.map { quoted(formatted($0)) } ?? "null")
            if kind == .lease || versionTwo != nil {
                kindFields += ",\"modifiedAgo\":" + (marker.modified.map { number(secondsSince($0)) } ?? "null")
                    + ",\"mode\":" + (versionTwo?.mode.map(quoted) ?? "null")
                    + ",\"duration\":" + (versionTwo?.duration.map(exactly) ?? "null")
            }
        case .rw:
            let format =
                switch fileFormat {
                case .empty?: "\"empty\""
                case .sqlite?: "\"sqlite\""
                case .sqliteWAL?: "\"sqlite-wal\""
                case .other?: "\"other\""
                case nil: "null"
                }
            kindFields = ",\"waitingWriter\":" + (waitingWriter.map(object) ?? "null") + ",\"unidentified\":\(unidentifiedCount)"
                + ",\"format\":\(format)"
        case .softRW:
            kindFields = ",\"waitingWriter\":" + (waitingWriter.map(object) ?? "null")
                + ",\"generation\":" + (generation.map { "\($0)" } ?? "null")
                + ",\"staleThreshold\":" + (staleThreshold.map(exactly) ?? "null")
                + ",\"log\":" + (logFolder.map(quoted) ?? "null")
        case .postgres:
            kindFields = ",\"server\":" + (postgresServer.map(quoted) ?? "null")
        case .kernel:
            break
        }
        // A read-write lock's waiters are not counted (only a writer waiting for readers is known).
        let waitingField = kind == .rw || kind == .softRW || kind == .postgres ? "null" : "\(waiting)"
        let filesystemField = networkFilesystem.map { quoted($0.description) } ?? "null"
        return "{\"path\":\(quoted(path)),\"kind\":\"\(kind.rawValue)\",\"guessed\":\(isGuessed),\"held\":\(isHeld),"
            + "\"holders\":[\(holders.map(object).joined(separator: ","))],\"waiting\":\(waitingField)\(kindFields),"
            + "\"networkFilesystem\":\(filesystemField)}"
    }

    /// What `holder` runs, where this host can tell (a read-write lock's holders come with it).
    private func command(of holder: LockHolder) -> String? {
        holder.command ?? commandLine(of: holder, inMarker: kind != .kernel && kind != .rw)
    }

    /// A soft read-write lock's member: pid, host, and how old its holder record is.
    private func describeMember(_ holder: LockHolder) -> String {
        guard let since = holder.since else {
            // Named in the log, but its record is gone (evicted or removed meanwhile).
            return "pid unknown: its holder record is missing (looks stale)"
        }
        var text = "pid \(holder.pid)"
        if let host = holder.host { text += " on \(host)" }
        text += ", record updated \(ago(since))"
        if holder.looksStale {
            text += " (looks stale: unchanged for longer than the stale threshold)"
        } else if let command = command(of: holder) {
            text += ", running \(command)"
        }
        return text
    }

    /// The report for people; control characters (from a marker, a path, a command line) are
    /// escaped when printed.
    var lines: [String] {
        let kindName =
            switch kind {
            case .kernel: "kernel lock (flock)"
            case .soft: "soft lock (marker file)"
            case .rw: "read-write lock (SQLite's protocol)"
            case .softRW: "soft read-write lock (Python filelock's filelock-rw/1 log)"
            case .lease: "lease (Python filelock's filelock/2 marker, renewed by its holder)"
            case .postgres: "PostgreSQL advisory lock on \(postgresServer ?? "?"), key hashtextextended(name, 0)"
            }
        var formatNotes: [String] {
            switch (kind, fileFormat) {
            case (.rw, .sqliteWAL?):
                ["  note: an SQLite database in WAL mode: a ReadWriteLock refuses it (WAL readers and writers take other locks)"]
            case (.rw, .sqlite?) where isGuessed:
                ["  note: guessed from the file, an SQLite database (an SQLite transaction on a read-write lock's file writes one)"]
            default: []
            }
        }
        if kind == .softRW { return softReadWriteLines(kindName) }
        guard isHeld else {
            var lines = ["\(path): free (\(kindName))"] + formatNotes
            if isGuessed, kind != .rw, marker.modified != nil {
                // Only an empty file (or one this user may not read) is guessed to be a free kernel lock.
                lines.append("  note: the file is empty; if it is a soft lock's marker, that lock is held or abandoned (see --kind soft)")
            }
            return lines
        }
        var lines = ["\(path): held (\(kindName))"]
        if let versionTwo {
            lines.append("  holder: \(describe(versionTwo))")
            if isGuessed { lines.append("  note: guessed from the marker, a filelock/2 record of mode \(versionTwo.mode ?? "unknown")") }
            return lines
        }
        for holder in holders {
            var line: String
            if kind == .postgres {
                // "session (server pid 4242) on db:5432, client 10.0.0.7:51234, application 'filelock 17@build-07 ...' since ..."
                lines.append("  holder: \(holder)")
                continue
            } else if kind == .rw {
                line = "  \(holder.isShared ? "reader" : "writer"): \(describe(holder))"
            } else {
                line = "  holder: \(describe(holder))"
                if holder.isShared { line += " (shared)" }
            }
            if let command = command(of: holder) { line += ", running \(command)" }
            if kind == .lease { line += " (a filelock/1 marker, not a lease: taken over only once its holder is gone)" }
            lines.append(line)
        }
        if kind == .rw {
            if let waitingWriter {
                var line = "  waiting writer: \(describe(waitingWriter))"
                if let command = command(of: waitingWriter) { line += ", running \(command)" }
                lines.append(line + " (waits for the readers to leave; no new reader gets in)")
            }
            if unidentifiedCount > 0 {
                lines.append(
                    "  \(unidentifiedCount) lock\(unidentifiedCount == 1 ? "" : "s") of processes this user cannot see "
                        + "(another user's; run as root to name them)")
            }
            lines += formatNotes
            if isGuessed {
                lines.append("  note: guessed from its record locks on SQLite's lock bytes (--kind rw)")
            }
            return lines
        }
        if kind == .kernel { lines.append("  waiting: \(waiting)") }
        guard kind == .soft || kind == .lease else { return lines }
        switch marker {
        case .absent, .record, .lease: break
        case .empty(let modified):
            lines.append("  holder: unknown: the marker is empty, \(age(of: modified))")
            lines.append(
                "  note: held by a process that writes no record (Python filelock before 3.22), or abandoned; "
                    + "filelock break removes it once 2 s old")
        case .malformed(let modified, let size):
            lines.append("  holder: unknown: the marker holds \(size) bytes that are no holder record, \(age(of: modified))")
            var note = "  note: its writer may still be filling it, or it was abandoned; filelock break removes it once 2 s old"
            if isGuessed { note += "; if this is a kernel lock file, use --kind kernel" }
            lines.append(note)
        case .unreadable(let modified, let size):
            lines.append("  holder: unknown: this user may not read the marker (\(size) bytes, \(age(of: modified)))")
        }
        return lines
    }

    /// `lines` for a soft read-write lock: the writer, the readers, a waiting writer, each with
    /// the age of its holder record, and the log's generation.
    private func softReadWriteLines(_ kindName: String) -> [String] {
        var lines = ["\(path): \(isHeld ? "held" : "free") (\(kindName))"]
        let log = logFolder ?? "\(path).rw"
        lines.append(generation.map { "  log: \(log), generation \($0)" } ?? "  log: \(log) (none yet)")
        for holder in holders {
            lines.append("  \(holder.isShared ? "reader" : "writer"): \(describeMember(holder))")
        }
        if let waitingWriter {
            lines.append("  waiting writer: \(describeMember(waitingWriter)) (waits for the readers to leave; no new reader gets in)")
        }
        if (holders + [waitingWriter].compactMap { $0 }).contains(where: \.looksStale) {
            lines.append(
                "  note: a member whose record stays unchanged for the stale threshold "
                    + "(\(secondsText(staleThreshold?.secondsValue ?? 90)) here, --stale-threshold; or its own, if longer) is "
                    + "evicted by the next reader or writer, timed on that one's own clock")
        }
        if isGuessed { lines.append("  note: guessed from the folder \(log) (--kind soft-rw)") }
        return lines
    }
}

extension SoftFileLock.MarkerState {
    /// Its name in `status --json`.
    var name: String {
        switch self {
        case .absent: "none"
        case .record: "record"
        case .empty: "empty"
        case .malformed: "malformed"
        case .unreadable: "unreadable"
        case .lease: "lease"
        }
    }

    /// When the marker was last modified; `nil` when there is none.
    var modified: UnixTime? {
        switch self {
        case .absent: nil
        case .record(let holder), .lease(let holder, _): holder.since
        case .empty(let modified), .malformed(let modified, _), .unreadable(let modified, _): modified
        }
    }
}

/// A `filelock/2` marker's holder: pid, host, mode, a lease's duration and last renewal.
func describe(_ marker: SoftFileLock.VersionTwoMarker) -> String {
    var text = "pid \(marker.holder.pid) on \(marker.holder.host ?? "?")"
    switch marker.mode {
    case "lease"?:
        text += ", mode=lease, duration \(secondsText(marker.duration?.secondsValue ?? 0)), last renewed \(ago(marker.modified))"
        if marker.holder.looksStale {
            text += " (looks stale: left unrenewed for its duration, or its process is gone; the next taker takes it over)"
        }
    case let mode?:
        text += ", mode=\(mode) (a filelock/2 marker that is no lease: broken only once its holder is gone)"
        if marker.holder.looksStale { text += " (looks stale)" }
    case nil:
        text += ", a filelock/2 marker of a mode this version does not know (never broken)"
    }
    if !marker.holder.looksStale, let command = commandLine(of: marker.holder, inMarker: true) { text += ", running \(command)" }
    return text
}

/// "modified 2026-11-25T21:30:14Z, 3600 s ago by this host's clock".
func age(of modified: UnixTime) -> String {
    "modified " + ago(modified)
}

/// "2026-11-25T21:30:14Z, 3600 s ago by this host's clock".
func ago(_ time: UnixTime) -> String {
    let seconds = secondsSince(time)
    let magnitude = min(abs(seconds), 1e15)
    let amount = magnitude < 10 ? "\(Int(magnitude))." + "\(Int(magnitude * 10) % 10)" : "\(Int(magnitude))"
    return "\(formatted(time)), \(amount) s \(seconds < 0 ? "in the future" : "ago") by this host's clock"
}

/// Seconds from `time` to now on this host's wall clock (negative for a time in the future).
func secondsSince(_ time: UnixTime) -> Double {
    var now = timespec()
    clock_gettime(CLOCK_REALTIME, &now)
    // In Double: a file's mtime can be anything (touch -d), and must not trap an Int64 subtraction.
    return Double(now.tv_sec) - Double(time.seconds) + (Double(now.tv_nsec) - Double(time.nanoseconds)) / 1e9
}

extension Duration {
    /// The duration in seconds.
    var secondsValue: Double {
        let (whole, attoseconds) = components
        return Double(whole) + Double(attoseconds) / 1e18
    }
}

/// The process that holds a lock through a server session, read from the application name this
/// library gives its sessions (`PREFIX PID@HOST [MILLISECONDS]`); `nil` for other clients.
func clientProcess(of holder: LockHolder) -> (pid: Int32, host: String)? {
    guard let name = holder.applicationName else { return nil }
    for word in name.split(separator: " ").reversed() {
        guard let at = word.firstIndex(of: "@"), let pid = Int32(word[..<at]), pid > 0 else { continue }
        return (pid, String(word[word.index(after: at)...]))
    }
    return nil
}

/// `filelock status`: who holds a lock.
struct Status: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Show whether a lock is free or held, and by whom. Exit 0 free, 1 held.",
        discussion: """
            For a kernel lock: the holding processes (from /proc/locks) and how many wait. For a soft \
            lock: the marker's pid, host, since when, and whether it looks stale. For a read-write \
            lock (--kind rw): the writer or the readers, and a writer waiting for the readers to \
            leave, each with its command line.

            For a soft read-write lock (--kind soft-rw): the writer, the readers and a writer \
            waiting for the readers, each with its pid, host, how long ago its holder record in \
            LOCKFILE.rw/holders was last renewed (its modification time, by this host's clock) and \
            whether it looks stale (unchanged for longer than --stale-threshold, default 90 s, or \
            the holder's own threshold if longer), and the log's newest generation. For a lease \
            (--kind lease): its holder's pid and host, mode=lease, the lease's duration and when it \
            was last renewed (the marker's modification time); it looks stale once unrenewed for \
            its duration, or when its holder on this host is gone.

            A kernel or read-write lock on a network or FUSE filesystem (NFS, SMB, sshfs...) gets a \
            warning on stderr: its kernel locks may not exclude processes on other hosts (use \
            --kind soft there). --json names such a filesystem in "networkFilesystem" (null when \
            local).

            Without --kind, the kind is guessed: a marker record is a soft lock, a filelock/2 marker \
            of mode lease a lease; a folder LOCKFILE.rw a soft read-write lock (when its log names \
            anyone, or nothing stands at LOCKFILE); a file held by record locks on SQLite's lock \
            bytes (and no flock) a read-write lock; a free read-write lock looks like a free kernel \
            lock file, and is reported as one (free either way).

            Examples:
              filelock status /tmp/backup.lock
              filelock status --json /nfs/jobs/queue.lock
              filelock status --kind rw /var/cache/app.lock
              filelock status --kind soft-rw /nfs/catalog.lock    # its log is /nfs/catalog.lock.rw
              filelock status --kind lease /nfs/jobs/nightly.lock
              filelock status --postgres postgres://jobs@db.internal/app nightly-report

            For a PostgreSQL lock (--postgres URL, or --kind postgres with the PG* variables), \
            LOCKFILE is the lock's name: every session holding it, with the server process's id, the \
            client's address, its application name (this library's name the host and process, as \
            "filelock 4242@build-07") and since when.
            """
    )

    @Flag(help: "Print one JSON object.")
    var json = false

    @Option(help: "kernel, soft, rw, soft-rw, lease or postgres; guessed from the file by default.")
    var kind: LockKind?

    @Option(
        help: ArgumentHelp(
            "Show the PostgreSQL advisory lock named LOCKFILE on this server (postgres://user@host:port/database) "
                + "instead; --kind postgres alone reads the PG* environment variables.", valueName: "url"))
    var postgres: String?

    @Option(
        help: ArgumentHelp(
            "For a soft read-write lock: a holder record unchanged for SECONDS looks stale (default 90, as "
                + "holders judge by default; a holder's own longer threshold is honoured).", valueName: "seconds"))
    var staleThreshold: Double?

    @Argument(help: "The lock file.")
    var lockFile: String

    func validate() throws {
        if let staleThreshold {
            guard staleThreshold.isFinite, staleThreshold > 0, staleThreshold < Double(Int32.max) else {
                throw ValidationError("--stale-threshold must be a number of seconds above 0 (got \(staleThreshold)).")
            }
            if (kind != nil && kind != .softRW) || postgres != nil {
                throw ValidationError("--stale-threshold is for --kind soft-rw; drop --stale-threshold.")
            }
        }
        if postgres != nil, let kind, kind != .postgres {
            throw ValidationError("--postgres shows a PostgreSQL lock; it does not go with --kind \(kind.rawValue): drop one.")
        }
    }

    func run() throws {
        do {
            let threshold = try staleThreshold.map { try FileLock.timeout(seconds: $0, path: lockFile) }
            let report =
                postgres != nil || kind == .postgres
                ? try LockReport.inspectPostgres(lockFile, url: postgres)
                : try LockReport.inspect(lockFile, kind: kind, staleThreshold: threshold)
            if let warning = report.networkFilesystemWarning { note(warning) }
            if json { print(report.json) } else { printLines(report.lines) }
            throw ExitCode(report.isHeld ? 1 : 0)
        } catch let error as FileLockError {
            note(error.message)
            throw ExitCode(2)
        }
    }
}

/// `filelock break`: remove a stale soft lock.
struct Break: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Break a stale soft lock or lease (refuses a live holder unless --force).",
        discussion: """
            A soft lock's marker is removed atomically, as the library does when it finds a stale \
            marker. Kernel locks cannot be broken: the kernel frees them when the holder exits.

            A lease's marker (Python filelock's filelock/2, a SoftFileLease) is broken the same way \
            once left unrenewed for its duration (judged by its modification time on this host's \
            clock) or when its holder on this host is gone; its holder finds the loss at its next \
            renewal. A soft read-write lock (a folder LOCKFILE.rw) is never broken by hand, not \
            even with --force: its readers and writers evict a member whose record stays unchanged \
            for the stale threshold by themselves, and removing the log under a live member would \
            let a second writer in.

            Examples:
              filelock break /nfs/jobs/queue.lock
              filelock break --force /nfs/jobs/queue.lock    # the holder is known to be gone
            """
    )

    @Flag(help: "Break even if the holder looks alive (for example a marker from a crashed host).")
    var force = false

    @Argument(help: "The lock file.")
    var lockFile: String

    func run() throws {
        do {
            let lock = try SoftFileLock(at: try RawArguments.filePath(lockFile))
            // Refuses a directory, a symbolic link or a FIFO (exit 2), as `run` does.
            let marker = try lock.inspectMarker()
            let versionTwo = try lock.versionTwoMarker()
            if marker == .absent, LockReport.hasSoftReadWriteLog(lockFile) { return try refuseSoftReadWrite() }
            if let holder = try FileLock(at: try RawArguments.filePath(lockFile)).holders.first {
                var text = "\(lockFile) is a kernel lock held by \(describe(holder))"
                if let command = commandLine(of: holder, inMarker: false) { text += ", running \(command)" }
                note(text + "; kernel locks cannot be broken: the kernel frees them when the holder exits (stop it)")
                throw ExitCode(1)
            }
            // A read-write lock's file is empty, as an abandoned empty marker: never remove it under its holders.
            let readWrite = try ReadWriteLock(at: try RawArguments.filePath(lockFile), isSingleton: false).currentHolders
            if readWrite.isHeld {
                var text = "\(lockFile) is a read-write lock (SQLite's protocol) held by "
                if let holder = readWrite.writer ?? readWrite.readers.first ?? readWrite.waitingWriter {
                    text += describe(holder)
                    if let command = holder.command ?? commandLine(of: holder, inMarker: false) { text += ", running \(command)" }
                } else {
                    text += "a process this user cannot see (another user's)"
                }
                note(text + "; its record locks cannot be broken: the kernel frees them when the holder exits (stop it)")
                throw ExitCode(1)
            }
            switch try lock.breakMarker(force: force) {
            case .noMarker:
                printLines(["\(lockFile): no marker; nothing to break"])
            case .broken(let holder?):
                printLines(["\(lockFile): broke the marker of \(describe(holder))"])
            case .broken(nil) where versionTwo != nil:
                let what = versionTwo?.mode == "lease" ? "lease" : "filelock/2 marker"
                printLines(["\(lockFile): broke the \(what) of \(describe(versionTwo!))"])
            case .broken(nil):
                switch marker {
                case .empty(let modified), .malformed(let modified, _):
                    let what = marker == .empty(modified: modified) ? "empty" : "malformed"
                    var lines = ["\(lockFile): broke the \(what) marker (\(age(of: modified)))"]
                    if !force {
                        lines.append(
                            "  note: an empty or malformed marker counts as abandoned once its modification time is "
                                + "2 s past, judged by this host's clock (a file server whose clock differs shifts that)")
                    }
                    printLines(lines)
                default:
                    printLines(["\(lockFile): broke the marker of a holder this user may not read"])
                }
            case .holderAlive(let holder?):
                var text = "\(lockFile) is held by \(describe(holder))"
                if let command = commandLine(of: holder, inMarker: true) { text += ", running \(command)" }
                if holder.host != SoftFileLock.hostName {
                    text += "; a holder on another host is never judged by liveness (its pid names no process here): "
                        + "not broken (use --force once you know it is gone)"
                } else {
                    text += ", which looks alive; not broken (use --force if you know it is gone)"
                }
                note(text)
                throw ExitCode(1)
            case .holderAlive(nil) where versionTwo != nil:
                let found = versionTwo!
                if found.mode == "lease" {
                    note(
                        "\(lockFile) is a lease held by \(describe(found)); it is taken over once left unrenewed for its "
                            + "duration (judged here by its modification time); not broken (use --force if you know its "
                            + "holder is gone)")
                } else {
                    note("\(lockFile) is held by \(describe(found)); not broken (use --force if you know it is gone)")
                }
                throw ExitCode(1)
            case .holderAlive(nil):
                switch marker {
                case .empty(let modified), .malformed(let modified, _):
                    let what = marker == .empty(modified: modified) ? "empty" : "malformed"
                    note(
                        "\(lockFile): the marker is \(what), \(age(of: modified)); its writer may still be filling it "
                            + "(it counts as abandoned once 2 s old); not broken (try again, or use --force)")
                case .unreadable(let modified, let size):
                    note(
                        "\(lockFile) is held by a holder this user may not read (a \(size)-byte marker, "
                            + "\(age(of: modified))); not broken (run as its owner, or use --force if you know it is gone)")
                default:
                    note("\(lockFile) is held by a holder that cannot be judged; not broken (use --force if you know it is gone)")
                }
                throw ExitCode(1)
            case .cannotBreak(let holder):
                note(
                    "\(lockFile): the marker of \((holder ?? versionTwo?.holder).map(describe) ?? "its holder") could not be replaced: in a "
                        + "sticky folder (such as /tmp) only its owner or root may remove another user's file, and some "
                        + "filesystems can neither exchange nor rename over it; remove it as its owner once the holder is gone")
                throw ExitCode(1)
            case .breakInProgress:
                note(
                    "\(lockFile): another process is breaking this lock right now (its claim '\(lockFile).break-claim' "
                        + "stands); try again in a moment (a claim left by a breaker that died is cleared after 5 s)")
                throw ExitCode(1)
            }
        } catch let error as FileLockError {
            note(error.message)
            throw ExitCode(2)
        }
    }
}

extension Break {
    /// `break` on a soft read-write lock (a folder `<lock>.rw` beside a path with no marker):
    /// there is nothing to break by hand. Its members evict a member whose record stays
    /// unchanged for the stale threshold, and removing the log under a live member would let a
    /// second writer in beside it; so a held one is refused (exit 1), `--force` or not.
    fileprivate func refuseSoftReadWrite() throws {
        let report = try LockReport.inspect(lockFile, kind: .softRW)
        let log = report.logFolder ?? lockFile + ".rw"
        guard report.isHeld else {
            printLines([
                "\(lockFile): a soft read-write lock (log \(log)) that names no holder; nothing to break (the log "
                    + "stays: every reader and writer of the lock shares it)"
            ])
            return
        }
        let members = report.holders + [report.waitingWriter].compactMap { $0 }
        let who = members.map { "pid \($0.pid)" + ($0.host.map { " on \($0)" } ?? "") }.joined(separator: ", ")
        note(
            "\(lockFile) is a soft read-write lock (log \(log)) held by \(who); it is not broken by hand"
                + (force ? ", even with --force" : "") + ": every reader and writer evicts a member whose holder record "
                + "stays unchanged for the stale threshold (90 s by default, or the member's own if longer), timed on "
                + "its own clock, so a crashed holder frees it by itself; removing the log under a live member would "
                + "let a second writer in beside it (see filelock status --kind soft-rw)")
        throw ExitCode(1)
    }
}

/// Prints lines for people on stdout, control characters escaped.
func printLines(_ lines: [String]) {
    print(lines.map(escapingControlCharacters).joined(separator: "\n"))
}
