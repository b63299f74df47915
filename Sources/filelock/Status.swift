#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif
import ArgumentParser
import FileLocking

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
    /// The network or FUSE filesystem the lock file is on (`nil`: a local one).
    var networkFilesystem: NetworkFilesystem? = nil
    /// Whether `kind` is a kernel lock that was asked for or found in use (not only guessed from
    /// a free file, which may as well be a free soft lock's path): then a network filesystem
    /// deserves the warning that kernel locks there may not reach other hosts.
    var isKernelLockInUse = false

    /// Looks at the path without creating anything. A holder record means a soft lock; so does
    /// a malformed or unreadable non-empty file that no kernel lock holds; a file that no flock
    /// holds but whose record locks sit on SQLite's lock bytes is a read-write lock (held: a free
    /// one cannot be told from a free kernel lock file, and needs none of its settings); anything
    /// else (an empty file above all, which is what `flock` leaves) is taken for a kernel lock file.
    ///
    /// - Throws: `FileLockError` when the path is no regular file (a directory, a symbolic link,
    ///   which is never followed, a FIFO), as `run` refuses it.
    static func inspect(_ path: String, kind: LockKind?) throws -> LockReport {
        let marker = try SoftFileLock(at: try RawArguments.filePath(path)).inspectMarker()
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
        } else if !kernelHolders.isEmpty {
            detected = .kernel
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
            case .absent, .empty, .unreadable, .record: detected = .kernel
            }
        }
        switch detected {
        case .soft:
            let holders: [LockHolder] = if case .record(let holder) = marker { [holder] } else { [] }
            return LockReport(
                path: path, kind: .soft, isGuessed: kind == nil, holders: holders, waiting: 0, marker: marker,
                networkFilesystem: filesystem)
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

    /// The warning `status` prints on stderr for a kernel lock in use on a network or FUSE
    /// filesystem (the library's text, as `run` prints it); `nil` otherwise.
    var networkFilesystemWarning: String? {
        guard isKernelLockInUse, let networkFilesystem else { return nil }
        let lockKind = kind == .rw ? "ReadWriteLock" : "FileLock"
        return FileLockWarning.kernelLock(lockKind, path: path, on: networkFilesystem).message
            + " (filelock run --kind soft)"
    }

    /// A soft lock is held while its marker exists, whether or not it names its holder; a
    /// read-write lock also while a writer waits for its readers (no new reader gets in).
    var isHeld: Bool {
        switch kind {
        case .soft: marker != .absent
        case .kernel: !holders.isEmpty
        case .rw: !holders.isEmpty || waitingWriter != nil || unidentifiedCount > 0
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
        func object(_ holder: LockHolder) -> String {
            var fields = ["\"pid\":\(holder.pid)"]
            fields.append("\"host\":" + (holder.host.map(quoted) ?? "null"))
            fields.append("\"since\":" + (holder.since.map { quoted(formatted($0)) } ?? "null"))
            fields.append("\"shared\":\(holder.isShared)")
            fields.append("\"stale\":\(holder.looksStale)")
            fields.append("\"command\":" + (command(of: holder).map(quoted) ?? "null"))
            return "{" + fields.joined(separator: ",") + "}"
        }
        var kindFields = ""
        switch kind {
        case .soft:
            kindFields = ",\"marker\":\"\(marker.name)\",\"modified\":" + (marker.modified.map { quoted(formatted($0)) } ?? "null")
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
        case .kernel:
            break
        }
        // A read-write lock's waiters are not counted (only a writer waiting for readers is known).
        let waitingField = kind == .rw ? "null" : "\(waiting)"
        let filesystemField = networkFilesystem.map { quoted($0.description) } ?? "null"
        return "{\"path\":\(quoted(path)),\"kind\":\"\(kind.rawValue)\",\"guessed\":\(isGuessed),\"held\":\(isHeld),"
            + "\"holders\":[\(holders.map(object).joined(separator: ","))],\"waiting\":\(waitingField)\(kindFields),"
            + "\"networkFilesystem\":\(filesystemField)}"
    }

    /// What `holder` runs, where this host can tell (a read-write lock's holders come with it).
    private func command(of holder: LockHolder) -> String? {
        holder.command ?? commandLine(of: holder, inMarker: kind == .soft)
    }

    /// The report for people; control characters (from a marker, a path, a command line) are
    /// escaped when printed.
    var lines: [String] {
        let kindName =
            switch kind {
            case .kernel: "kernel lock (flock)"
            case .soft: "soft lock (marker file)"
            case .rw: "read-write lock (SQLite's protocol)"
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
        guard isHeld else {
            var lines = ["\(path): free (\(kindName))"] + formatNotes
            if isGuessed, kind != .rw, marker.modified != nil {
                // Only an empty file (or one this user may not read) is guessed to be a free kernel lock.
                lines.append("  note: the file is empty; if it is a soft lock's marker, that lock is held or abandoned (see --kind soft)")
            }
            return lines
        }
        var lines = ["\(path): held (\(kindName))"]
        for holder in holders {
            var line: String
            if kind == .rw {
                line = "  \(holder.isShared ? "reader" : "writer"): \(describe(holder))"
            } else {
                line = "  holder: \(describe(holder))"
                if holder.isShared { line += " (shared)" }
            }
            if let command = command(of: holder) { line += ", running \(command)" }
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
        guard kind == .soft else { return lines }
        switch marker {
        case .absent, .record: break
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
        }
    }

    /// When the marker was last modified; `nil` when there is none.
    var modified: UnixTime? {
        switch self {
        case .absent: nil
        case .record(let holder): holder.since
        case .empty(let modified), .malformed(let modified, _), .unreadable(let modified, _): modified
        }
    }
}

/// "modified 2026-11-25T21:30:14Z, 3600 s ago by this host's clock".
func age(of modified: UnixTime) -> String {
    var now = timespec()
    clock_gettime(CLOCK_REALTIME, &now)
    // In Double: a file's mtime can be anything (touch -d), and must not trap an Int64 subtraction.
    let seconds = Double(now.tv_sec) - Double(modified.seconds) + (Double(now.tv_nsec) - Double(modified.nanoseconds)) / 1e9
    let magnitude = min(abs(seconds), 1e15)
    let amount = magnitude < 10 ? "\(Int(magnitude))." + "\(Int(magnitude * 10) % 10)" : "\(Int(magnitude))"
    return "modified \(formatted(modified)), \(amount) s \(seconds < 0 ? "in the future" : "ago") by this host's clock"
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

            A kernel or read-write lock on a network or FUSE filesystem (NFS, SMB, sshfs...) gets a \
            warning on stderr: its kernel locks may not exclude processes on other hosts (use \
            --kind soft there). --json names such a filesystem in "networkFilesystem" (null when \
            local).

            Without --kind, the kind is guessed: a marker record is a soft lock; a file held by \
            record locks on SQLite's lock bytes (and no flock) a read-write lock; a free read-write \
            lock looks like a free kernel lock file, and is reported as one (free either way).

            Examples:
              filelock status /tmp/backup.lock
              filelock status --json /nfs/jobs/queue.lock
              filelock status --kind rw /var/cache/app.lock
            """
    )

    @Flag(help: "Print one JSON object.")
    var json = false

    @Option(help: "kernel, soft or rw; guessed from the file by default.")
    var kind: LockKind?

    @Argument(help: "The lock file.")
    var lockFile: String

    func run() throws {
        do {
            let report = try LockReport.inspect(lockFile, kind: kind)
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
        abstract: "Break a stale soft lock (refuses a live holder unless --force).",
        discussion: """
            A soft lock's marker is removed atomically, as the library does when it finds a stale \
            marker. Kernel locks cannot be broken: the kernel frees them when the holder exits.

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
                    "\(lockFile): the marker of \(holder.map(describe) ?? "its holder") could not be replaced: in a "
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

/// Prints lines for people on stdout, control characters escaped.
func printLines(_ lines: [String]) {
    print(lines.map(escapingControlCharacters).joined(separator: "\n"))
}
