/// One line of Linux's `/proc/locks`.
struct KernelLockEntry: Sendable, Equatable {
    enum Kind: Sendable, Equatable {
        case flock
        case posix
        case openFileDescription
        case other
    }

    var kind: Kind
    /// A waiter blocked behind a holder (lines marked `->`), not a holder.
    var isWaiting: Bool
    var isWrite: Bool
    var pid: Int32
    var deviceMajor: UInt64
    var deviceMinor: UInt64
    var inode: UInt64
    var start: UInt64
    /// `nil` for "EOF" (to the end of the file, however it grows).
    var end: UInt64?
}

/// Reads the kernel's table of file locks (Linux only; elsewhere it is empty).
enum ProcLocks {
    static func entries() -> [KernelLockEntry] {
        #if os(Linux)
            guard case .success(let bytes) = System.readWholeFile("/proc/locks") else { return [] }
            return parse(String(decoding: bytes, as: UTF8.self))
        #else
            return []
        #endif
    }

    /// Entries for one file, matched by device and inode. Overlay and btrfs files report an
    /// anonymous device (major 0) to `stat` but another device in `/proc/locks`; so do FUSE and
    /// tmpfs files, whose inode numbers another mount may share (a bind mount's backing folder,
    /// a second tmpfs). For a file on an anonymous device, an entry on another device counts only
    /// when its process has this very file open: a descriptor of the same inode on the same
    /// mount (`mountID`, from `/proc/PID/fdinfo`; an entry whose process this user may not
    /// inspect is kept).
    static func entries(for file: FileStatus, mountID: Int? = nil) -> [KernelLockEntry] {
        // The kernel writes /proc/locks a page per read(2), each page from where the list stands
        // then: while other processes lock and unlock, a line can move from one page to the next
        // and be read twice or not at all. Read until two looks at this file agree (at most 4).
        var previous = entriesOnce(for: file, mountID: mountID)
        for _ in 0..<3 {
            let current = entriesOnce(for: file, mountID: mountID)
            if current == previous { return current }
            previous = current
        }
        return previous
    }

    private static func entriesOnce(for file: FileStatus, mountID: Int?) -> [KernelLockEntry] {
        entries().filter { entry in
            guard entry.inode == file.inode else { return false }
            if entry.deviceMajor == file.deviceMajor && entry.deviceMinor == file.deviceMinor { return true }
            guard file.deviceMajor == 0 else { return false }
            guard let mountID, entry.pid > 0 else { return true }
            return processOpens(inode: file.inode, mountID: mountID, pid: entry.pid) ?? true
        }
    }

    /// Whether process `pid` has a descriptor open on `inode` of the mount `mountID`; `nil` when
    /// its descriptors cannot be read.
    static func processOpens(inode: UInt64, mountID: Int, pid: Int32) -> Bool? {
        #if os(Linux)
            let fdinfo = "/proc/\(pid)/fdinfo"
            let descriptors = System.folderEntries(fdinfo)
            guard !descriptors.isEmpty else { return nil }
            var sawInodes = false
            for descriptor in descriptors {
                guard case .success(let bytes) = System.readWholeFile(fdinfo + "/" + descriptor) else { continue }
                let fields = FdInfo(String(decoding: bytes, as: UTF8.self))
                sawInodes = sawInodes || fields.inode != nil
                if fields.inode == inode && fields.mountID == mountID { return true }
            }
            // Kernels before 5.14 print no `ino:` line: nothing can be told apart.
            return sawInodes ? false : nil
        #else
            return nil
        #endif
    }

    /// The mount and inode lines of a `/proc/PID/fdinfo/N` file.
    struct FdInfo {
        var mountID: Int?
        var inode: UInt64?

        init(_ text: String) {
            for line in text.split(separator: "\n") {
                let parts = line.split(separator: ":", maxSplits: 1)
                guard parts.count == 2 else { continue }
                let value = parts[1].trimmingPrefix { $0 == " " || $0 == "\t" }
                switch parts[0] {
                case "mnt_id": mountID = Int(value)
                case "ino": inode = UInt64(value)
                default: break
                }
            }
        }
    }

    /// Parses lines such as `1: FLOCK  ADVISORY  WRITE 2221 fe:00:16220174 0 EOF` and
    /// `2: -> POSIX  ADVISORY  WRITE 2300 fe:00:16220174 0 99`.
    static func parse(_ text: String) -> [KernelLockEntry] {
        var result: [KernelLockEntry] = []
        for line in text.split(separator: "\n") {
            var fields = line.split(separator: " ", omittingEmptySubsequences: true)
            guard fields.count >= 8 else { continue }
            fields.removeFirst()  // "1:"
            var isWaiting = false
            if fields.first == "->" {
                isWaiting = true
                fields.removeFirst()
            }
            guard fields.count >= 7 else { continue }
            let kind: KernelLockEntry.Kind =
                switch fields[0] {
                case "FLOCK": .flock
                case "POSIX": .posix
                case "OFDLCK": .openFileDescription
                default: .other
                }
            let identity = fields[4].split(separator: ":")
            guard identity.count == 3, let pid = Int32(fields[3]), let major = UInt64(identity[0], radix: 16),
                let minor = UInt64(identity[1], radix: 16), let inode = UInt64(identity[2]),
                let start = UInt64(fields[5])
            else { continue }
            result.append(
                KernelLockEntry(
                    kind: kind, isWaiting: isWaiting, isWrite: fields[2] == "WRITE", pid: pid, deviceMajor: major,
                    deviceMinor: minor, inode: inode, start: start, end: fields[6] == "EOF" ? nil : UInt64(fields[6])))
        }
        return result
    }
}

extension ProcLocks {
    /// The "lock:" lines of process `pid`'s descriptors that are open on `file`, read without
    /// touching the file's filesystem (a `stat` through `/proc/PID/fd/N` would ask it, and hang on
    /// a dead NFS server): a descriptor whose link (`readlink`) does not end in `/name` is skipped
    /// (when the name is known), and the others' fdinfo must name the file's inode. `nil` when
    /// `pastDeadline` said stop.
    static func lockLines(
        ofProcess pid: Int32, on file: FileStatus, named name: [UInt8]?, pastDeadline: () -> Bool
    ) -> [KernelLockEntry]? {
        #if os(Linux)
            let process = "/proc/\(pid)"
            var lines: [KernelLockEntry] = []
            for descriptor in System.folderEntries(process + "/fd") {
                if pastDeadline() { return nil }
                if let name {
                    guard let link = System.readLink(process + "/fd/" + descriptor), link.count > name.count,
                        link.suffix(name.count).elementsEqual(name), link[link.count - name.count - 1] == CPath.slash
                    else { continue }
                }
                guard case .success(let bytes) = System.readWholeFile(process + "/fdinfo/" + descriptor) else { continue }
                let text = String(decoding: bytes, as: UTF8.self)
                guard FdInfo(text).inode.map({ $0 == file.inode }) ?? true else { continue }
                for line in text.split(separator: "\n") where line.hasPrefix("lock:") {
                    if let entry = parse(String(line.dropFirst(5))).first, entry.inode == file.inode { lines.append(entry) }
                }
            }
            return lines
        #else
            return []
        #endif
    }
}

/// What a look through `/proc/*/fdinfo` for a record lock's holders found, and how far it got.
struct RecordLockScan: Sendable {
    var holders: [(pid: Int32, isWrite: Bool)] = []
    /// How many processes' descriptor tables were (partly) read.
    var processesScanned = 0
    /// Whether the deadline ended the look before every process was seen (then `holders` may
    /// miss the one wanted).
    var stoppedAtDeadline = false
}

extension ProcLocks {
    /// The processes whose open files hold a record lock on `file` exactly over `start...end`
    /// (`end` nil: to EOF). Open-file-description locks show pid -1 in `/proc/locks`, so this looks
    /// at every process's open files (those this user may inspect), newest process first, and
    /// reads the "lock:" lines of `/proc/PID/fdinfo` of those that are `file`. About one `stat`
    /// per open file on the machine: only for reporting a conflict, and bounded by `deadline`
    /// (checked before every file) where the caller is itself short of time.
    static func processesHoldingRecordLock(
        on file: FileStatus, named name: [UInt8]? = nil, start: UInt64, end: UInt64?, deadline: MonotonicInstant? = nil
    ) -> RecordLockScan {
        var scan = RecordLockScan()
        #if os(Linux)
            func pastDeadline() -> Bool {
                guard let deadline, MonotonicInstant.now >= deadline else { return false }
                scan.stoppedAtDeadline = true
                return true
            }
            // Newest first: a conflict that ends a wait is most often with a recent process (a
            // worker of the same job), and /proc lists the oldest first.
            let processes = System.folderEntries("/proc").compactMap { name in Int32(name).map { (name, $0) } }
                .sorted { $0.1 > $1.1 }
            for (_, pid) in processes {
                if pastDeadline() { return scan }
                scan.processesScanned += 1
                guard let lines = lockLines(ofProcess: pid, on: file, named: name, pastDeadline: pastDeadline) else {
                    return scan
                }
                for entry in lines
                where !entry.isWaiting && (entry.kind == .openFileDescription || entry.kind == .posix)
                    && (file.deviceMajor == 0
                        || (entry.deviceMajor == file.deviceMajor && entry.deviceMinor == file.deviceMinor))
                    && entry.start == start && entry.end == end
                {
                    scan.holders.append((pid, entry.isWrite))
                }
                // Another process is the answer we want; our own open files only if none is.
                if scan.holders.contains(where: { $0.pid != System.processID }) { return scan }
            }
        #endif
        return scan
    }
}

extension ProcLocks {
    /// Every record lock held on `file` (not the waiters), with its process: POSIX locks name
    /// their process in `/proc/locks`; open-file-description locks show pid -1 there, so their
    /// processes are found through `/proc/PID/fd` and `fdinfo` (see `lockLines`; newest process first), only when there are
    /// any, and only until each is found or `budget` is spent. This process is looked at first,
    /// outside the budget: another lock object or thread of the caller's own program is a common
    /// holder, and its own open files are few. Open-file-description locks whose process was not
    /// found (another user's, whose `/proc/PID/fdinfo` this user may not read, or a look cut
    /// short by the budget) come back with pid -1, if they are on the file's device as `stat` or
    /// the file's own fdinfo lines name it.
    static func recordLocks(
        on file: FileStatus, named name: [UInt8]?, mountID: Int?, budget: Duration?
    ) -> [(pid: Int32, entry: KernelLockEntry)] {
        var deadline: MonotonicInstant?
        let held = entries(for: file, mountID: mountID).filter { !$0.isWaiting && ($0.kind == .posix || $0.kind == .openFileDescription) }
        var found: [(pid: Int32, entry: KernelLockEntry)] = held.filter { $0.kind == .posix && $0.pid > 0 }.map { ($0.pid, $0) }
        var missing = held.filter { $0.kind == .openFileDescription }
        guard !missing.isEmpty else { return found }
        #if os(Linux)
            var devices: Set<[UInt64]> = [[file.deviceMajor, file.deviceMinor]]
            func unidentified(_ entries: [KernelLockEntry]) -> [(pid: Int32, entry: KernelLockEntry)] {
                // Only entries on our file's device: another file with the same inode number on
                // another device (a second tmpfs, a btrfs subvolume) is none of ours.
                entries.filter { devices.contains([$0.deviceMajor, $0.deviceMinor]) }.map { (-1, $0) }
            }
            let own = System.processID
            let others = System.folderEntries("/proc").compactMap { name in Int32(name) }.filter { $0 != own }
            for pid in [own] + others.sorted(by: >) {
                // The budget counts from the end of this process's own look.
                if pid != own, deadline == nil, let budget { deadline = MonotonicInstant.now.advanced(by: budget) }
                // This process's own files are read to the end: they are few, and the answer
                // "this process" must not depend on how busy the machine is.
                let pastDeadline = { pid != own && deadline.map { MonotonicInstant.now >= $0 } == true }
                guard let lines = lockLines(ofProcess: pid, on: file, named: name, pastDeadline: pastDeadline) else {
                    return found + unidentified(missing)
                }
                for entry in lines where entry.kind == .openFileDescription {
                    // The device as the lock table writes it for our file (overlay and btrfs
                    // write another one than `stat` says).
                    devices.insert([entry.deviceMajor, entry.deviceMinor])
                    guard
                        let index = missing.firstIndex(where: {
                            $0.inode == entry.inode && $0.deviceMajor == entry.deviceMajor
                                && $0.deviceMinor == entry.deviceMinor && $0.start == entry.start
                                && $0.end == entry.end && $0.isWrite == entry.isWrite
                        })
                    else { continue }
                    // One open file may be open in several descriptors (and processes): count it once.
                    missing.remove(at: index)
                    found.append((pid, entry))
                    if missing.isEmpty { return found }
                }
            }
            return found + unidentified(missing)
        #else
            return found
        #endif
    }
}
