import Synchronization

/// The `filelock-rw/1` generation log of one `SoftReadWriteLock` object, as Python `filelock`
/// 4.3 keeps it (see `SoftReadWriteFormat`): reading the newest snapshot, committing the next
/// one by a no-replace hard link checked by file identity, keeping the newest 64, and the holder
/// records with the observer's ledger that judges them stale.
///
/// The log's folders are opened with `O_NOFOLLOW | O_DIRECTORY` and every file is named relative
/// to them, so a symbolic link planted at `<lock>.rw`, `gen` or `holders` is refused, never
/// followed. Python opens them anew for every file operation; here they are kept open between
/// calls (`KeptFolder`) and checked again at every call, which Python's opening amounts to:
/// `lstat` of `<lock>.rw` must show a folder with the kept identity, and `fstatat` of `gen` or
/// `holders` in it (not following a link) theirs, each passing the sticky-folder ownership
/// rules; on any difference or error they are opened anew with every check (and a link or a
/// non-folder refused as before). While a folder is kept open its identity cannot be given to
/// another file (on a local filesystem), so a replaced tree is always told apart.
///
/// What it remembers between calls (the folders, the epoch, the newest snapshot seen, when each
/// record was first seen unchanged) is a cache and a clock: nothing on disk depends on it.
final class GenerationLog: Sendable {
    let lockPath: LockPath
    /// `<lock>.rw`.
    let root: CPath
    /// The observer's threshold: a record unchanged this long (or its own `lease=`, if longer)
    /// on our monotonic clock is stale.
    let staleThreshold: Duration

    var path: String { lockPath.given }

    private struct LedgerEntry {
        var bytes: [UInt8]?
        var firstSeen: MonotonicInstant
    }

    /// `gen/epoch` as last read, with what `fstatat` said of the file it was read from.
    private struct EpochFile {
        /// The kept `gen` folder it was read in (not kept open for this).
        weak var folder: KeptFolder?
        var stamp: FileStamp
        var bytes: [UInt8]
    }

    private struct Memory {
        var epoch: [UInt8]?
        var latest: SoftReadWriteSnapshot?
        var ledger: [String: LedgerEntry] = [:]
        var sweepCursor: String?
        var lastSweep: MonotonicInstant?
        var isPrepared = false
        /// The folder holding `<lock>.rw`: whether it is sticky (`/tmp`), and its owner.
        var parentSticky: (isSticky: Bool, owner: UInt32)?
        /// `<lock>.rw` kept open, and `gen` and `holders` opened in it.
        var keptRoot: KeptFolder?
        var keptGen: KeptFolder?
        var keptHolders: KeptFolder?
        var epochFile: EpochFile?
        /// Whether `latest` may be taken as the newest while its file is there and the next
        /// number is free (see `find`): after a won commit or a find, not after a lost commit.
        var isLatestTrusted = false
        /// Finds since the last one that listed `gen/` (see `find`).
        var findsWithoutListing = 0
    }

    /// A find lists `gen/` at least this often (and whenever HEAD cannot stand in for it).
    static let listingPeriod = 16

    private let memory = ForkLocalMutex { Memory() }

    init(lockPath: LockPath, staleThreshold: Duration) {
        self.lockPath = lockPath
        root = lockPath.absolute.appending(".rw")
        self.staleThreshold = staleThreshold
    }

    // MARK: Folders

    enum Folder: String {
        case gen, holders
    }

    /// The log's folders, made where missing (`mkdir -p` above, 0700 for the log's own).
    func prepare(force: Bool = false) throws {
        if !force, memory.withLock({ $0.isPrepared }) { return }
        switch System.mkdir(root, mode: 0o700) {
        case .success, .failure(.fileExists): break
        case .failure(.noSuchFile):
            try lockPath.createParentFolders()
            switch System.mkdir(root, mode: 0o700) {
            case .success, .failure(.fileExists): break
            case .failure(let error): throw FileLockError.system(error, path: path, operation: "create the folder '\(root)' of")
            }
        case .failure(let error): throw FileLockError.system(error, path: path, operation: "create the folder '\(root)' of")
        }
        guard let rootFolder = try openRoot() else {
            throw FileLockError(
                .io, path: path, message: "the folder '\(root)' of lock '\(path)' vanished while it was being set up; "
                    + "try again")
        }
        for folder in [Folder.gen, .holders] {
            switch rootFolder.folder.makeFolder(folder.rawValue, mode: 0o700) {
            case .success, .failure(.fileExists): continue
            case .failure(let error): throw folderError(error, "\(root)/\(folder.rawValue)")
            }
        }
        memory.withLock { $0.isPrepared = true }
    }

    /// Runs `body` with `folder` open; `nil` when the folder (or the log) is missing.
    func with<T>(_ folder: Folder, _ body: (OpenFolder) throws -> T) throws -> T? {
        guard let opened = try kept(folder) else { return nil }
        return try withExtendedLifetime(opened) { try body(opened.folder) }
    }

    /// Like `with`, but makes the log when it is missing.
    func withPrepared<T>(_ folder: Folder, _ body: (OpenFolder) throws -> T) throws -> T {
        try withPreparedKept(folder) { kept in try body(kept.folder) }
    }

    private func withPreparedKept<T>(_ folder: Folder, _ body: (KeptFolder) throws -> T) throws -> T {
        try prepare()
        if let opened = try kept(folder) { return try withExtendedLifetime(opened) { try body(opened) } }
        try prepare(force: true)
        if let opened = try kept(folder) { return try withExtendedLifetime(opened) { try body(opened) } }
        throw FileLockError(
            .io, path: path, message: "the folder '\(root)/\(folder.rawValue)' of lock '\(path)' keeps vanishing "
                + "(another program removes it?); try again")
    }

    /// `folder`, open: the kept one while `<lock>.rw` and it still are the folders kept (checked
    /// by `lstat` and `fstatat`, with the ownership rules), else opened anew with every check;
    /// `nil` when missing. The caller keeps the returned object alive while it uses it.
    private func kept(_ folder: Folder) throws -> KeptFolder? {
        let (keptRoot, keptChild) = memory.withLock { memory in
            (memory.keptRoot, folder == .gen ? memory.keptGen : memory.keptHolders)
        }
        if let keptRoot, case .success(let rootStatus) = System.lstat(root), rootStatus.isDirectory,
            FileIdentity(rootStatus) == keptRoot.identity
        {
            try check(rootStatus, name: root.description, containedBy: try parentStatus())
            if let keptChild, case .success(let status) = keptRoot.folder.status(folder.rawValue), status.isDirectory,
                FileIdentity(status) == keptChild.identity
            {
                try checkChild(status, name: "\(root)/\(folder.rawValue)", rootStatus: rootStatus)
                return keptChild
            }
            // Not kept yet, or changed: opened anew in the kept root, while its descriptor still
            // is that folder (a program that closes descriptors it does not own could have let
            // the number go to another file).
            if case .success(let own) = keptRoot.folder.status(), FileIdentity(own) == keptRoot.identity {
                return try openChild(folder, in: keptRoot, rootStatus: rootStatus)
            }
        }
        guard let opened = try openRoot() else {
            memory.withLock { memory in
                memory.keptRoot = nil
                memory.keptGen = nil
                memory.keptHolders = nil
            }
            return nil
        }
        memory.withLock { memory in
            memory.keptRoot = opened
            memory.keptGen = nil
            memory.keptHolders = nil
        }
        return try openChild(folder, in: opened, rootStatus: opened.status)
    }

    private func openChild(_ folder: Folder, in rootFolder: KeptFolder, rootStatus: FileStatus) throws -> KeptFolder? {
        let name = "\(root)/\(folder.rawValue)"
        let opened: OpenFolder
        switch rootFolder.folder.openFolder(folder.rawValue) {
        case .success(let made): opened = made
        case .failure(.noSuchFile), .failure(.staleHandle): return nil
        case .failure(let error): throw folderError(error, name)
        }
        let status: FileStatus
        switch opened.status() {
        case .success(let found): status = found
        case .failure(let error):
            opened.close()
            throw folderError(error, name)
        }
        let made = KeptFolder(opened, status: status)
        try checkChild(status, name: name, rootStatus: rootStatus)
        memory.withLock { memory in
            guard memory.keptRoot === rootFolder else { return }
            if folder == .gen { memory.keptGen = made } else { memory.keptHolders = made }
        }
        return made
    }

    /// `<lock>.rw` opened anew with every check; `nil` when missing.
    private func openRoot() throws -> KeptFolder? {
        let opened: OpenFolder
        switch OpenFolder.open(root) {
        case .success(let made): opened = made
        case .failure(.noSuchFile), .failure(.staleHandle): return nil
        case .failure(let error): throw folderError(error, root.description)
        }
        let status: FileStatus
        switch opened.status() {
        case .success(let found): status = found
        case .failure(let error):
            opened.close()
            throw folderError(error, root.description)
        }
        let made = KeptFolder(opened, status: status)
        try check(status, name: root.description, containedBy: try parentStatus())
        return made
    }

    /// In a sticky folder (`/tmp`), where anyone may create names, a folder of the log must
    /// belong to us or to the folder's owner and be writable by no one else (as Python checks).
    /// `gen` and `holders` are checked against each sticky folder among the one that holds them
    /// (the root) and the one that holds the lock, as Python checks them.
    private func checkChild(_ status: FileStatus, name: @autoclosure () -> String, rootStatus: FileStatus) throws {
        try check(status, name: name(), containedBy: rootStatus)
        try check(status, name: name(), containedBy: try parentStatus())
    }

    private func check(_ status: FileStatus, name: @autoclosure () -> String, containedBy container: FileStatus?) throws {
        guard status.isDirectory else { throw folderError(.notDirectory, name()) }
        guard let container, container.mode & 0o1000 != 0 else { return }
        if status.owner != System.effectiveUserID && status.owner != container.owner {
            throw FileLockError(
                .permissionDenied, path: path,
                message: "'\(name())' of lock '\(path)' belongs to uid \(status.owner), not to this process's account or "
                    + "the folder's owner, in a folder where anyone may create names; refusing to use it (remove it, "
                    + "or put the lock in a folder of your own)")
        }
        if status.mode & 0o022 != 0 {
            throw FileLockError(
                .permissionDenied, path: path,
                message: "'\(name())' of lock '\(path)' is writable by other accounts; refusing to use it (chmod 700 it, "
                    + "or remove it)")
        }
    }

    private func parentStatus() throws -> FileStatus? {
        // The root's folder: looked at once per lock object; only its sticky bit and owner count.
        if let known = memory.withLock({ $0.parentSticky }) {
            return known.isSticky ? FileStatus.stickyFolder(owner: known.owner) : nil
        }
        guard case .success(let status) = System.lstat(lockPath.parent) else { return nil }
        let isSticky = status.mode & 0o1000 != 0
        memory.withLock { $0.parentSticky = (isSticky, status.owner) }
        return isSticky ? status : nil
    }

    func folderError(_ error: Errno, _ name: String) -> FileLockError {
        switch error {
        case .tooManySymbolicLinks, .notDirectory, Errno(rawValue: 31 /* EMLINK */):
            return FileLockError(
                .isSymbolicLink, path: path,
                message: "'\(name)' of lock '\(path)' is not a directory or is a symbolic link; refusing to use it "
                    + "(remove it: the lock makes it anew)", errno: error.rawValue)
        default:
            return FileLockError.system(error, path: path, operation: "use the folder '\(name)' of")
        }
    }

    func readError(_ error: Errno, _ name: String) -> FileLockError {
        FileLockError.system(error, path: path, operation: "read '\(name)' of")
    }

    func malformed(_ what: String) -> FileLockError {
        FileLockError(
            .io, path: path,
            message: "invalid soft read-write lock state at '\(path)': \(what); remove '\(root)' when no process uses "
                + "the lock (a damaged log wedges Python's SoftReadWriteLock too)")
    }

    // MARK: Reading the log

    private func read(_ folder: OpenFolder, _ name: String) throws -> [UInt8]? {
        switch folder.read(name, limit: SoftReadWriteFormat.maximumRecordSize + 1) {
        case .success(let bytes): return bytes
        case .failure(let error): throw readError(error, name)
        }
    }

    /// Whether `name` exists, where Python reads it only to learn that (`read() is not None`):
    /// missing means `ENOENT` or `ESTALE`, as for a read; a link or a non-file exists, as a read
    /// of one gives bytes (empty) too.
    private func exists(_ folder: OpenFolder, _ name: String) throws -> Bool {
        switch folder.status(name) {
        case .success: return true
        case .failure(.noSuchFile), .failure(.staleHandle): return false
        case .failure(let error): throw readError(error, name)
        }
    }

    private func readGeneration(_ gen: OpenFolder, _ number: UInt64) throws -> SoftReadWriteSnapshot? {
        let name = SoftReadWriteFormat.generationName(number)
        guard let bytes = try read(gen, name) else { return nil }
        guard let snapshot = SoftReadWriteSnapshot(parsing: bytes), snapshot.generation == number else {
            throw malformed("claim '\(name)': malformed generation record")
        }
        return snapshot
    }

    /// The bytes of `gen/epoch` (`nil` when missing). Read once, then taken from memory while
    /// `fstatat` shows the same file unchanged (device, inode, size, modification and change
    /// times) in the same kept `gen` folder: the epoch is never rewritten (made once with
    /// `O_EXCL` and one write; a wiped log is a new `gen` folder with a new epoch file), and one
    /// read while its maker was still writing it is read again once its size or times moved.
    private func epochFile(_ gen: KeptFolder) throws -> [UInt8]? {
        if let known = memory.withLock({ $0.epochFile }), known.folder === gen,
            case .success(let status) = gen.folder.status("epoch"), FileStamp(status) == known.stamp
        {
            return known.bytes
        }
        switch gen.folder.readWithStatus("epoch", limit: SoftReadWriteFormat.maximumRecordSize + 1) {
        case .success(let found?):
            if let status = found.status {
                memory.withLock { $0.epochFile = EpochFile(folder: gen, stamp: FileStamp(status), bytes: found.bytes) }
            }
            return found.bytes
        case .success(nil): return nil
        case .failure(let error): throw readError(error, "epoch")
        }
    }

    /// `gen/epoch`, made by whoever finds it missing.
    private func epoch(_ gen: KeptFolder) throws -> [UInt8] {
        if let bytes = try epochFile(gen) { return bytes }
        let made = Array((ParticipantToken().text + "\n").utf8)
        switch gen.folder.openFile("epoch", flags: OpenFlags.createExclusiveWriteOnly, mode: 0o600) {
        case .success(let descriptor):
            defer { System.close(descriptor) }
            let written = System.writeAll(descriptor, made)
            if case .failure(let error) = written {
                // (A full filesystem: no empty epoch left behind, which would disable HEAD.)
                if case .success(let ours) = System.fstat(descriptor), case .success(let there) = gen.folder.status("epoch"),
                    FileIdentity(ours) == FileIdentity(there)
                {
                    _ = gen.folder.unlink("epoch")
                }
                throw FileLockError.system(error, path: path, operation: "write '\(root)/gen/epoch' of")
            }
            _ = System.sync(descriptor)
            return made
        case .failure(.fileExists):
            return try epochFile(gen) ?? []
        case .failure(let error) where (error == .notPermitted || error == .accessDenied) && gen.folder.exists("epoch"):
            // sshfs answers a lost exclusive create with EPERM (SFTP has no "exists" status).
            return try epochFile(gen) ?? []
        case .failure(let error):
            throw FileLockError.system(error, path: path, operation: "create '\(root)/gen/epoch' of")
        }
    }

    private static func isValidEpoch(_ epoch: [UInt8]?) -> Bool {
        guard let epoch, epoch.last == 10 else { return false }
        return ParticipantToken.isToken(epoch.dropLast())
    }

    /// The snapshot in HEAD when HEAD belongs to `epoch` (a hint only: absent when torn or stale).
    private func head(_ gen: OpenFolder, epoch: [UInt8]) -> SoftReadWriteSnapshot? {
        guard Self.isValidEpoch(epoch), case .success(let bytes?) = gen.read("HEAD", limit: SoftReadWriteFormat.maximumRecordSize + 34),
            bytes.count > epoch.count, bytes.starts(with: epoch)
        else { return nil }
        return SoftReadWriteSnapshot(parsing: bytes.dropFirst(epoch.count))
    }

    /// The generation numbers in `gen/`, sorted; removes the oldest beyond the newest 64 (at most
    /// 256 a call, each only while the newest still exists) and returns the newest 64.
    private func pruneListing(_ gen: OpenFolder) throws -> [UInt64] {
        let names: [String]
        switch gen.entries() {
        case .success(let found): names = found
        case .failure(let error): throw readError(error, "gen")
        }
        guard names.count <= SoftReadWriteFormat.listingLimit else {
            throw malformed("the generation log holds more than \(SoftReadWriteFormat.listingLimit) names")
        }
        let numbers = names.compactMap(SoftReadWriteFormat.generationNumber(ofName:)).sorted()
        let kept = SoftReadWriteFormat.keptGenerations
        guard numbers.count > kept, let newest = numbers.last else { return numbers }
        let witness = SoftReadWriteFormat.generationName(newest)
        for old in numbers.dropLast(kept).prefix(SoftReadWriteFormat.pruneBatch) {
            guard case .success = gen.status(witness) else { break }
            _ = gen.unlink(SoftReadWriteFormat.generationName(old))
        }
        return Array(numbers.suffix(kept))
    }

    /// Reads forward from `start` while generations exist (stopping after `patience` missing in a
    /// row, or 128 on).
    private func probe(_ gen: OpenFolder, from start: SoftReadWriteSnapshot, patience: Int) throws -> SoftReadWriteSnapshot {
        var found = start
        var misses = 0
        var number = start.generation + 1
        while misses < patience, number <= start.generation + SoftReadWriteFormat.probeReach {
            if let snapshot = try readGeneration(gen, number) {
                found = snapshot
                misses = 0
            } else {
                misses += 1
            }
            number += 1
        }
        return found
    }

    private func find(_ gen: KeptFolder) throws -> SoftReadWriteSnapshot? {
        let epoch = try epoch(gen)
        let (remembered, isListingDue, isTrusted) = memory.withLock { memory -> (SoftReadWriteSnapshot?, Bool, Bool) in
            if memory.epoch != epoch {
                memory.epoch = epoch
                memory.latest = nil
            }
            memory.findsWithoutListing += 1
            return (memory.latest, memory.findsWithoutListing >= Self.listingPeriod, memory.isLatestTrusted)
        }
        // The snapshot we last committed or found is still the newest while its generation is
        // there (a regular file) and the next number is free: a generation's file never changes
        // once linked (written whole and synced first), commits are contiguous, and the survivors
        // above any generation run without a gap (see below), so nothing newer exists, and what
        // Python would read (HEAD, that generation, the free next one) says the same. The one
        // way a generation file comes back with other bytes, a stalled committer relinking a
        // slot compacted long ago, needs the log a whole window ahead: a commit built on it is
        // refused after its link by the lead check (which reads HEAD), and after any lost commit
        // this shortcut is off until a full find.
        if !isListingDue, isTrusted, let remembered, remembered.generation > 0,
            case .success(let status) = gen.folder.status(SoftReadWriteFormat.generationName(remembered.generation)),
            status.isRegularFile,
            case .failure(.noSuchFile) = gen.folder.status(SoftReadWriteFormat.generationName(remembered.generation + 1))
        {
            return remembered
        }
        // Python lists `gen/` at every find, only to name generations that HEAD and the forward
        // probe from it reach anyway: commits are contiguous (each links N+1 only while N exists)
        // and compaction and pruning remove the oldest first, so the survivors above a readable
        // HEAD generation run without a gap, and patience 1 from it (Python's own for HEAD) ends
        // at the newest. So while HEAD belongs to this epoch, is not behind what we remember and
        // names a readable generation, and the probe from it ends well within its reach, the
        // listing is left out. It is still made (and pruned, and checked for overflow) at every
        // 16th find, and whenever HEAD cannot stand in (missing, torn, of another epoch, behind
        // memory, its generation gone, or the probe running to its reach), exactly as Python's.
        if !isListingDue, let headGeneration = head(gen.folder, epoch: epoch)?.generation,
            headGeneration >= remembered?.generation ?? 0, let start = try readGeneration(gen.folder, headGeneration)
        {
            let found = try probe(gen.folder, from: start, patience: 1)
            if found.generation - headGeneration < SoftReadWriteFormat.probeReach { return found }
        }
        memory.withLock { $0.findsWithoutListing = 0 }
        var named = Set(try pruneListing(gen.folder))
        if let remembered, remembered.generation > 0 { named.insert(remembered.generation) }
        let headGeneration = head(gen.folder, epoch: epoch)?.generation
        if let headGeneration { named.insert(headGeneration) }
        for number in named.sorted(by: >) {
            guard let snapshot = try readGeneration(gen.folder, number) else { continue }
            return try probe(gen.folder, from: snapshot, patience: number == headGeneration ? 1 : 64)
        }
        let newest = named.max() ?? 0
        let found = try probe(gen.folder, from: .empty(at: newest), patience: 64)
        return found.generation > newest || named.isEmpty ? found : nil
    }

    /// The newest snapshot (remembered, as Python does).
    func latest() throws -> SoftReadWriteSnapshot {
        try withPreparedKept(.gen) { gen in
            guard let found = try find(gen) ?? find(gen) else {
                throw malformed("the generation log names no readable snapshot")
            }
            memory.withLock { memory in
                memory.latest = found
                memory.isLatestTrusted = true
            }
            return found
        }
    }

    // MARK: Committing

    enum CommitOutcome {
        case won
        case lost
    }

    /// Publishes `successor` as the next generation if no one else did first.
    func commit(_ successor: SoftReadWriteSnapshot) throws -> CommitOutcome {
        var outcome = CommitOutcome.lost
        defer {
            if outcome == .lost { memory.withLock { $0.isLatestTrusted = false } }
        }
        outcome = try withPreparedKept(.gen) { gen in try commit(successor, in: gen) }
        return outcome
    }

    private func extends(_ gen: OpenFolder, _ number: UInt64, epoch: [UInt8]?) throws -> Bool {
        if number > 1 { return try exists(gen, SoftReadWriteFormat.generationName(number - 1)) }
        guard let epoch else { return true }
        return head(gen, epoch: epoch) == nil
    }

    /// The newest generation after our link of `number`, for the lead check: Python's is the
    /// largest of the listing and HEAD. While HEAD belongs to the epoch and is no further behind
    /// than our predecessor (it names the newest but for commits still on their way to it),
    /// HEAD (or our own number, if larger) and a walk by `fstatat` over the generations after it
    /// give the same: above any surviving generation they run without a gap (see `find`). Else,
    /// or when the walk runs to the probe's reach, the listing, as Python.
    private func newest(_ gen: OpenFolder, after number: UInt64, head headGeneration: UInt64?) -> UInt64 {
        if let headGeneration, headGeneration + 1 >= number {
            var newest = max(headGeneration, number)
            let reach = newest + SoftReadWriteFormat.probeReach
            while newest < reach, case .success = gen.status(SoftReadWriteFormat.generationName(newest + 1)) {
                newest += 1
            }
            if newest < reach { return newest }
        }
        let listed: [UInt64]
        if case .success(let names) = gen.entries() {
            listed = names.compactMap(SoftReadWriteFormat.generationNumber(ofName:))
        } else {
            listed = []
        }
        return max(listed.max() ?? 0, headGeneration ?? 0)
    }

    private func commit(_ successor: SoftReadWriteSnapshot, in kept: KeptFolder) throws -> CommitOutcome {
        let gen = kept.folder
        let number = successor.generation
        let remembered = memory.withLock { $0.epoch }
        guard try extends(gen, number, epoch: remembered) else { return .lost }
        let bytes = successor.encoded
        let temporary = SoftReadWriteFormat.commitPrefix + ParticipantToken.unique().text
        switch gen.openFile(temporary, flags: OpenFlags.createExclusiveWriteOnly, mode: 0o600) {
        case .success(let descriptor):
            // Synced before it is linked: a crash must never leave an empty generation (which
            // wedges Python's readers).
            let written = System.writeAll(descriptor, bytes).flatMap { System.sync(descriptor) }
            System.close(descriptor)
            if case .failure(let error) = written {
                _ = gen.unlink(temporary)
                throw FileLockError.system(error, path: path, operation: "write the next generation of")
            }
        case .failure(.noSuchFile), .failure(.staleHandle):
            try prepare(force: true)
            return .lost
        case .failure(let error):
            throw FileLockError.system(error, path: path, operation: "write the next generation of")
        }
        defer { _ = gen.unlink(temporary) }
        guard try epochFile(kept) == remembered else { return .lost }
        let target = SoftReadWriteFormat.generationName(number)
        var linkError: Errno?
        var isLinked = false
        switch gen.link(temporary, to: target) {
        case .success: isLinked = true
        case .failure(.fileExists): break
        case .failure(let error) where (error == .notPermitted || error == .accessDenied) && gen.exists(target):
            // sshfs answers a link onto an existing name with EPERM at times (SFTP has no
            // "exists" status): a lost race, judged below as EEXIST is.
            break
        case .failure(let error) where error.isNotSupported || error == .crossDevice:
            throw FileLockError(
                .notSupportedByFilesystem, path: path,
                message: "the filesystem of '\(root)' does not support atomic no-replace hard links (\(error)), which "
                    + "a soft read-write lock commits with; use a SoftFileLease (exclusive) there", errno: error.rawValue)
        case .failure(.noSuchFile):
            if case .success = gen.status(temporary) { throw FileLockError.system(.noSuchFile, path: path, operation: "commit") }
            return .lost
        case .failure(let error): linkError = error
        }
        // A failed link is judged by identity, not by what link said: NFS may report a link that
        // landed as failed (a retried request answered `EEXIST`). A link that succeeded made the
        // name, pointing at our file, so there is nothing to compare (Python compares anyway).
        if !isLinked {
            guard case .success(let ours) = gen.status(temporary), case .success(let there) = gen.status(target),
                FileIdentity(ours) == FileIdentity(there)
            else {
                if let linkError { throw FileLockError.system(linkError, path: path, operation: "commit the next generation of") }
                return .lost
            }
        }
        // Won the name; still lost if the log moved on under us (a wiped log, a far newer head).
        let headGeneration = remembered.flatMap { head(gen, epoch: $0)?.generation }
        let newest = newest(gen, after: number, head: headGeneration)
        let stillExtends = try extends(gen, number, epoch: remembered)
        guard try epochFile(kept) == remembered else { return .lost }
        if newest >= number && newest - number >= UInt64(SoftReadWriteFormat.keptGenerations) {
            if case .success = gen.status(SoftReadWriteFormat.generationName(newest)) { _ = gen.unlink(target) }
            return .lost
        }
        guard stillExtends else { return .lost }
        memory.withLock { memory in
            memory.latest = successor
            memory.isLatestTrusted = true
        }
        if let remembered, Self.isValidEpoch(remembered), headGeneration ?? 0 < number {
            updateHead(gen, epoch: remembered, bytes)
        }
        compact(gen, after: number)
        return .won
    }

    /// Best effort: a torn or missing HEAD only costs readers a longer look.
    private func updateHead(_ gen: OpenFolder, epoch: [UInt8], _ snapshot: [UInt8]) {
        let temporary = SoftReadWriteFormat.commitPrefix + ParticipantToken.unique().text
        guard case .success(let descriptor) = gen.openFile(temporary, flags: OpenFlags.createExclusiveWriteOnly, mode: 0o600)
        else { return }
        let written = System.writeAll(descriptor, epoch + snapshot)
        System.close(descriptor)
        guard case .success = written, case .success = gen.rename(temporary, to: "HEAD") else {
            _ = gen.unlink(temporary)
            return
        }
    }


    /// Removes the generations older than the newest 65 after committing `number`.
    private func compact(_ gen: OpenFolder, after number: UInt64) {
        let kept = UInt64(SoftReadWriteFormat.keptGenerations) + 1
        guard number > kept else { return }
        let expired = number - kept
        var oldest = expired
        while oldest > 1, case .success = gen.status(SoftReadWriteFormat.generationName(oldest - 1)) {
            oldest -= 1
            if expired - oldest >= UInt64(SoftReadWriteFormat.pruneBatch) { return }
        }
        let witness = SoftReadWriteFormat.generationName(number)
        for old in oldest...expired {
            guard case .success = gen.status(witness) else { return }
            _ = gen.unlink(SoftReadWriteFormat.generationName(old))
        }
    }

    // MARK: Holder records

    /// Creates our record; its identity, to refresh it later.
    func publish(_ record: SoftReadWriteHolderRecord) throws -> FileIdentity {
        try withPrepared(.holders) { holders in
            switch holders.openFile(record.token.text, flags: OpenFlags.createExclusiveWriteOnly, mode: 0o600) {
            case .success(let descriptor):
                defer { System.close(descriptor) }
                let written = System.writeAll(descriptor, record.encoded)
                let status = System.fstat(descriptor)
                guard case .success = written, case .success(let status) = status else {
                    _ = holders.unlink(record.token.text)
                    let error = (written.failure ?? status.failure) ?? .noSuchFile
                    throw FileLockError.system(error, path: path, operation: "write the holder record of")
                }
                return FileIdentity(status)
            case .failure(let error):
                throw FileLockError.system(error, path: path, operation: "create the holder record of")
            }
        }
    }

    enum RefreshOutcome: Equatable {
        case refreshed
        /// The record is gone or replaced: we were evicted.
        case gone
        /// A failure that may pass (an I/O error, a server away).
        case failed(Errno)
    }

    /// Rewrites our record (a new nonce) in place, only if it is still the file we made.
    func refresh(_ record: SoftReadWriteHolderRecord, identity: FileIdentity) -> RefreshOutcome {
        do {
            let outcome: RefreshOutcome? = try with(.holders) { holders in
                let descriptor: Int32
                switch holders.openFile(record.token.text, flags: OpenFlags.readWriteExistingNonBlocking, mode: 0) {
                case .success(let opened): descriptor = opened
                case .failure(.noSuchFile), .failure(.staleHandle), .failure(.noSuchDeviceOrAddress),
                    .failure(.tooManySymbolicLinks):
                    return .gone
                case .failure(let error): return .failed(error)
                }
                defer { System.close(descriptor) }
                guard case .success(let status) = System.fstat(descriptor), status.isRegularFile,
                    FileIdentity(status) == identity, status.linkCount == 1
                else { return .gone }
                let header = SoftReadWriteHolderRecord.header(of: record.token)
                guard case .success(let start) = System.read(descriptor, count: header.count, at: 0), start == header else {
                    return .gone
                }
                switch System.write(descriptor, record.encoded, at: 0) {
                case .success: return .refreshed
                case .failure(let error): return .failed(error)
                }
            }
            return outcome ?? .gone
        } catch let error as FileLockError {
            return error.code == .isSymbolicLink ? .gone : .failed(Errno(rawValue: error.errno ?? 5))
        } catch {
            return .failed(Errno(rawValue: 5))
        }
    }

    /// Removes a holder record (ours when leaving, an evicted one's after the eviction).
    func removeRecord(_ token: ParticipantToken) {
        _ = try? with(.holders) { holders in _ = holders.unlink(token.text) }
    }

    /// Removes our own record; `false` when it was missing or another file (not `identity`).
    @discardableResult
    func removeRecord(_ token: ParticipantToken, expecting identity: FileIdentity) -> Bool {
        let removed: Bool?
        do {
            removed = try with(.holders) { holders in
                // Not ours only when missing or another file; a look that failed otherwise (EACCES,
                // EIO) proves nothing, and must not report a loss.
                let isOurs: Bool
                switch holders.status(token.text) {
                case .success(let status): isOurs = FileIdentity(status) == identity
                case .failure(.noSuchFile), .failure(.staleHandle): isOurs = false
                case .failure: isOurs = true
                }
                _ = holders.unlink(token.text)
                return isOurs
            }
        } catch {
            return true  // (the folder could not be opened: nothing proves a loss)
        }
        return removed ?? false  // (no `holders` folder: the record is gone)
    }

    /// The bytes of a holder record; `nil` when missing.
    func record(of token: ParticipantToken) -> [UInt8]? {
        (try? with(.holders) { holders in try read(holders, token.text) }) ?? nil
    }

    /// Whether `token`'s holder record exists (the folder is readable).
    func recordStatus(of token: ParticipantToken) -> FileStatus? {
        (try? with(.holders) { holders in try? holders.status(token.text).get() }) ?? nil
    }

    // MARK: Staleness

    /// How long `key`'s bytes have stood unchanged, as this observer saw them (zero the first time).
    private func age(_ key: String, read: () -> [UInt8]?) -> (Duration, [UInt8]?) {
        let asked = MonotonicInstant.now
        let bytes = read()
        let now = MonotonicInstant.now
        let age = memory.withLock { memory -> Duration in
            if let entry = memory.ledger[key], entry.bytes == bytes { return asked.duration(since: entry.firstSeen) }
            if memory.ledger.count >= 8192 { memory.ledger.removeAll() }
            memory.ledger[key] = LedgerEntry(bytes: bytes, firstSeen: now)
            return .zero
        }
        return (age, bytes)
    }

    private func threshold(for bytes: [UInt8]?) -> Duration {
        guard let bytes, let lease = SoftReadWriteHolderRecord.fields(of: bytes).lease else { return staleThreshold }
        return max(staleThreshold, lease)
    }

    /// Whether a member's record stood unchanged past the threshold (its own `lease=` if longer).
    func isStale(_ token: ParticipantToken) -> Bool {
        let (age, bytes) = age(token.text) { record(of: token) }
        return age >= threshold(for: bytes)
    }

    /// How long a member's record has stood unchanged, as this observer saw it.
    func unchangedDuration(of token: ParticipantToken) -> Duration {
        age(token.text) { record(of: token) }.0
    }

    func forget(_ tokens: some Sequence<ParticipantToken>) {
        memory.withLock { memory in for token in tokens { memory.ledger[token.text] = nil } }
    }

    /// Removes abandoned holder records and commit temporaries (unchanged past the threshold),
    /// at most once per half threshold and 256 names a call.
    /// Whether a record no snapshot names was last written more than twice `threshold` ago by
    /// this host's clock: a waiter's left by a process that died waiting, which the ledger alone
    /// would never age (each process that looks sees it once). Only such records are judged by
    /// the clock; if clocks disagree and a live waiter's record goes, it writes it again at its
    /// next try (it is in no snapshot).
    private func isLongUnchanged(_ holders: OpenFolder, _ name: String, twice threshold: Duration) -> Bool {
        guard case .success(let status) = holders.status(name) else { return false }
        let (seconds, _) = System.wallClockNow()
        let age = seconds.subtractingReportingOverflow(status.modificationSeconds).partialValue
        return age > 0 && Duration.seconds(age) >= threshold * 2
    }

    func sweepIfDue(excluding own: ParticipantToken?, members: Set<ParticipantToken>) {
        let now = MonotonicInstant.now
        let isDue = memory.withLock { memory -> Bool in
            if let last = memory.lastSweep, now.duration(since: last) < staleThreshold / 2 { return false }
            memory.lastSweep = now
            return true
        }
        guard isDue else { return }
        var present: Set<String> = []
        _ = try? with(.holders) { holders in
            guard case .success(let names) = holders.entries() else { return }
            let candidates = names.filter { name in
                ParticipantToken.isToken(name.utf8) && name != own?.text && !members.contains(where: { $0.text == name })
            }.sorted()
            let cursor = memory.withLock { $0.sweepCursor }
            var batch = candidates.filter { cursor == nil || $0 > cursor! }.prefix(SoftReadWriteFormat.pruneBatch)
            if batch.isEmpty { batch = candidates.prefix(SoftReadWriteFormat.pruneBatch) }
            memory.withLock { $0.sweepCursor = batch.last }
            for name in batch {
                let key = "holder:" + name
                present.insert(key)
                let (age, bytes) = age(key) { (try? read(holders, name)) ?? nil }
                guard bytes != nil else { continue }
                if age >= threshold(for: bytes) || isLongUnchanged(holders, name, twice: threshold(for: bytes)) {
                    _ = holders.unlink(name)
                }
            }
        }
        _ = try? with(.gen) { gen in
            guard case .success(let names) = gen.entries() else { return }
            for name in names where name.hasPrefix(SoftReadWriteFormat.commitPrefix) {
                let key = "temporary:" + name
                present.insert(key)
                let (age, bytes) = age(key) { (try? read(gen, name)) ?? nil }
                if bytes != nil, age >= staleThreshold { _ = gen.unlink(name) }
            }
        }
        memory.withLock { memory in
            memory.ledger = memory.ledger.filter { key, _ in
                !(key.hasPrefix("holder:") || key.hasPrefix("temporary:")) || present.contains(key)
            }
        }
    }
}

extension FileStatus {
    /// A stand-in status for a sticky folder owned by `owner` (only mode and owner are read).
    static func stickyFolder(owner: UInt32) -> FileStatus {
        var status = FileStatus(CStat())
        status.mode = 0o41777
        status.owner = owner
        return status
    }
}

extension Result {
    var failure: Failure? {
        if case .failure(let error) = self { return error }
        return nil
    }
}

/// A folder of a generation log kept open between calls, with its identity when opened. Shared
/// by reference: each user holds it while it works in it, and the last one to let go closes it,
/// so that no thread ever uses a descriptor another one closed (or that names another file by
/// then). Opened `O_CLOEXEC`; a child forked without exec may go on using it (a folder's
/// descriptor carries no lock; listings open a description of their own).
final class KeptFolder: Sendable {
    let folder: OpenFolder
    let identity: FileIdentity
    /// What `fstat` said when it was opened.
    let status: FileStatus

    init(_ folder: OpenFolder, status: FileStatus) {
        self.folder = folder
        self.status = status
        identity = FileIdentity(status)
    }

    deinit { folder.close() }
}

/// A file's identity with its size and times: equal stamps of a file that is never rewritten in
/// place mean the same bytes.
struct FileStamp: Equatable, Sendable {
    var identity: FileIdentity
    var size: Int64
    var modification: (seconds: Int64, nanoseconds: Int32)
    var change: (seconds: Int64, nanoseconds: Int32)

    init(_ status: FileStatus) {
        identity = FileIdentity(status)
        size = status.size
        modification = (status.modificationSeconds, status.modificationNanoseconds)
        change = (status.changeSeconds, status.changeNanoseconds)
    }

    static func == (lhs: Self, rhs: Self) -> Bool {
        lhs.identity == rhs.identity && lhs.size == rhs.size && lhs.modification == rhs.modification
            && lhs.change == rhs.change
    }
}
