/// A lock file path, checked and made absolute once at construction.
///
/// Paths are bytes, as the kernel sees them: a name that is not valid UTF-8 locks exactly the
/// file it names (turning it into a `String` would replace the odd bytes with U+FFFD and lock
/// another file). Messages show such bytes escaped as `\xNN`.
struct LockPath: Sendable, Hashable {
    /// The path as the caller gave it, for messages (odd bytes escaped).
    let given: String
    /// Absolute, with `.`, `..` and symbolic links in its folders resolved where the folders
    /// exist; the key for singletons and self-deadlock detection, and the path opened.
    let absolute: CPath

    /// A path given as a `String`: a trailing `/` (or a last component `.` or `..`) names a
    /// folder, which is refused here because `FilePath` would silently drop it.
    init(_ given: String) throws {
        guard !given.isEmpty else {
            throw FileLockError(
                .invalidPath, path: given, message: "the lock file path is empty: pass a file path such as '/tmp/app.lock'")
        }
        guard !given.utf8.contains(0) else {
            // Shown escaped: a raw NUL would cut the message short in C strings and logs.
            let shown = given.unicodeScalars.map { $0 == "\0" ? "\\x00" : String($0) }.joined()
            throw FileLockError(
                .invalidPath, path: shown, message: "the lock file path '\(shown)' contains a NUL byte; remove it")
        }
        if given.hasSuffix("/") {
            throw LockPath.namesFolder(given, folder: Array(given.utf8))
        }
        try self.init(bytes: Array(given.utf8))
    }

    init(bytes: [UInt8]) throws {
        let display = CPath.display(bytes)
        if bytes.last == CPath.slash { throw LockPath.namesFolder(display, folder: bytes) }
        let name = CPath.lastComponent(of: bytes)
        if name == [0x2E] || name == [0x2E, 0x2E] {
            throw LockPath.namesFolder(display, folder: bytes)
        }
        given = display
        var absolute = bytes
        if bytes.first != CPath.slash {
            switch System.currentDirectory() {
            case .success(let directory):
                absolute = directory + [CPath.slash] + bytes
            case .failure(let error):
                // A daemon whose deploy folder was removed: nothing to resolve against.
                throw FileLockError(
                    .invalidPath, path: display,
                    message: "cannot resolve the relative lock file path '\(display)': the current folder is not "
                        + "available (\(error); was it deleted?); pass an absolute path", errno: error.rawValue)
            }
        }
        let resolved = LockPath.resolved(absolute)
        // The kernel refuses longer paths (PATH_MAX, 4096 bytes with the NUL); say so before any
        // missing folder is created on the way to that refusal.
        guard resolved.count < 4096 else {
            throw FileLockError.system(.nameTooLong, path: display, operation: "open")
        }
        self.absolute = CPath(bytes: resolved)
    }

    private static func namesFolder(_ display: String, folder: [UInt8]) -> FileLockError {
        var trimmed = folder[...]
        while trimmed.count > 1 && trimmed.last == CPath.slash { trimmed = trimmed.dropLast() }
        let shown = trimmed.elementsEqual([CPath.slash]) ? "" : CPath.display(trimmed)
        return FileLockError(
            .isDirectory, path: display,
            message: "'\(display)' names a directory, not a lock file: pass a file path such as '\(shown)/.lock'")
    }

    /// Opens the lock file; when its folder is missing and `creatingFolders`, creates the folders
    /// (as `mkdir -p`) and tries once more. Failures other than the folders' come back as `Errno`.
    ///
    /// - Throws: `FileLockError` when a missing folder cannot be created.
    func open(flags: Int32, mode: UInt32, creatingFolders: Bool = true) throws -> Result<Int32, Errno> {
        let first = System.open(absolute, flags: flags, mode: mode)
        guard creatingFolders, case .failure(.noSuchFile) = first else { return first }
        try createParentFolders()
        return System.open(absolute, flags: flags, mode: mode)
    }

    /// Resolves symbolic links and `..` in the longest existing folder prefix, so that one lock
    /// file gets one key even before its folders exist (`/tmp` is a link on macOS); the missing
    /// rest is normalised without touching the disk. `absolute` starts with `/`.
    static func resolved(_ absolute: [UInt8]) -> [UInt8] {
        var existing = CPath.parent(of: absolute)
        var missing: [[UInt8]] = [CPath.lastComponent(of: absolute)]
        while true {
            if case .success(let real) = System.realPath(CPath(bytes: existing)) {
                var joined = real == [CPath.slash] ? [] : real
                for component in missing.reversed() { joined += [CPath.slash] + component }
                return CPath.normalized(joined)
            }
            // The loop ends: every step removes a component, and the parent of "/" is "/".
            if existing.count <= 1 { return CPath.normalized(absolute) }
            missing.append(CPath.lastComponent(of: existing))
            existing = CPath.parent(of: existing)
        }
    }

    /// The folder that holds the lock file.
    var parent: CPath { CPath(bytes: CPath.parent(of: absolute.pathBytes)) }

    /// Creates the missing folders above the lock file (as `mkdir -p`, mode 0777 less the umask).
    func createParentFolders() throws {
        var missing: [[UInt8]] = []
        var folder = CPath.parent(of: absolute.pathBytes)
        while folder.count > 1 {
            switch System.mkdir(CPath(bytes: folder), mode: 0o777) {
            case .success, .failure(.fileExists):
                folder = [CPath.slash]
                continue
            case .failure(.noSuchFile):
                missing.append(folder)
                folder = CPath.parent(of: folder)
            case .failure(let error):
                throw folderError(error, folder: folder)
            }
        }
        for folder in missing.reversed() {
            switch System.mkdir(CPath(bytes: folder), mode: 0o777) {
            case .success, .failure(.fileExists): continue
            case .failure(let error): throw folderError(error, folder: folder)
            }
        }
    }

    private func folderError(_ error: Errno, folder: [UInt8]) -> FileLockError {
        let shown = CPath.display(folder)
        var failure = FileLockError.system(error, path: given, operation: "create the folder '\(shown)' for")
        if error == .notDirectory || error == .fileExists {
            failure.message = "cannot create the folder '\(shown)' for lock file '\(given)': a file stands there"
        }
        return failure
    }
}
