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
    var holders: [LockHolder]
    var waiting: Int

    /// Looks at the path without creating anything: a marker record means a soft lock, anything
    /// else a kernel lock file.
    static func inspect(_ path: String, kind: LockKind?) throws -> LockReport {
        let soft = try SoftFileLock(at: path)
        let detected = kind ?? (soft.holder != nil || isNonEmptyMarker(path) ? .soft : .kernel)
        switch detected {
        case .soft:
            return LockReport(path: path, kind: .soft, holders: soft.holder.map { [$0] } ?? [], waiting: 0)
        case .kernel:
            let lock = try FileLock(at: path)
            return LockReport(path: path, kind: .kernel, holders: lock.holders, waiting: lock.waiterCount)
        }
    }

    var isHeld: Bool { !holders.isEmpty }

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
        let holderObjects = holders.map { holder -> String in
            var fields = ["\"pid\":\(holder.pid)"]
            fields.append("\"host\":" + (holder.host.map(quoted) ?? "null"))
            fields.append("\"since\":" + (holder.since.map { quoted(formatted($0)) } ?? "null"))
            fields.append("\"shared\":\(holder.isShared)")
            fields.append("\"stale\":\(holder.looksStale)")
            fields.append("\"command\":" + (commandLine(of: holder.pid).map(quoted) ?? "null"))
            return "{" + fields.joined(separator: ",") + "}"
        }
        return "{\"path\":\(quoted(path)),\"kind\":\"\(kind.rawValue)\",\"held\":\(isHeld),"
            + "\"holders\":[\(holderObjects.joined(separator: ","))],\"waiting\":\(waiting)}"
    }

    var text: String {
        let kindName = kind == .kernel ? "kernel lock (flock)" : "soft lock (marker file)"
        guard isHeld else { return "\(path): free (\(kindName))" }
        var lines = ["\(path): held (\(kindName))"]
        for holder in holders {
            var line = "  holder: \(describe(holder))"
            if holder.isShared { line += " (shared)" }
            if let command = commandLine(of: holder.pid) { line += ", running \(command)" }
            lines.append(line)
        }
        if kind == .kernel { lines.append("  waiting: \(waiting)") }
        return lines.joined(separator: "\n")
    }
}

private func isNonEmptyMarker(_ path: String) -> Bool {
    guard let contents = readSmallFile(path) else { return false }
    return !contents.isEmpty
}

/// `filelock status`: who holds a lock.
struct Status: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Show whether a lock is free or held, and by whom. Exit 0 free, 1 held.",
        discussion: """
            For a kernel lock: the holding processes (from /proc/locks) and how many wait. For a soft \
            lock: the marker's pid, host, since when, and whether it looks stale.

            Examples:
              filelock status /tmp/backup.lock
              filelock status --json /nfs/jobs/queue.lock
            """
    )

    @Flag(help: "Print one JSON object.")
    var json = false

    @Option(help: "kernel or soft; guessed from the file by default.")
    var kind: LockKind?

    @Argument(help: "The lock file.")
    var lockFile: String

    func run() throws {
        do {
            let report = try LockReport.inspect(lockFile, kind: kind)
            print(json ? report.json : report.text)
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
            let report = try LockReport.inspect(lockFile, kind: nil)
            if report.kind == .kernel {
                if let holder = report.holders.first {
                    var text = "\(lockFile) is a kernel lock held by \(describe(holder))"
                    if let command = commandLine(of: holder.pid) { text += ", running \(command)" }
                    note(text + "; kernel locks cannot be broken: the kernel frees them when the holder exits (stop it)")
                    throw ExitCode(1)
                }
                print("\(lockFile): free (kernel lock); nothing to break")
                return
            }
            switch try SoftFileLock(at: lockFile).breakMarker(force: force) {
            case .noMarker:
                print("\(lockFile): no marker; nothing to break")
            case .broken(let holder):
                print("\(lockFile): broke the marker of \(holder.map(describe) ?? "an unreadable holder")")
            case .holderAlive(let holder):
                note(
                    "\(lockFile) is held by \(holder.map(describe) ?? "a holder that cannot be judged"), which looks "
                        + "alive; not broken (use --force if you know it is gone)")
                throw ExitCode(1)
            case .cannotBreak(let holder):
                note(
                    "\(lockFile): this filesystem cannot swap names atomically, so the marker of "
                        + "\(holder.map(describe) ?? "its holder") was not broken; remove it by hand once the holder is gone")
                throw ExitCode(1)
            }
        } catch let error as FileLockError {
            note(error.message)
            throw ExitCode(2)
        }
    }
}

/// Up to 4 KiB of a file, without following a link; `nil` when unreadable.
func readSmallFile(_ path: String) -> [UInt8]? {
    let descriptor = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK)
    guard descriptor >= 0 else { return nil }
    defer { close(descriptor) }
    var buffer = [UInt8](repeating: 0, count: 4096)
    let count = read(descriptor, &buffer, buffer.count)
    return count >= 0 ? Array(buffer.prefix(count)) : nil
}
