/// A lock file path, checked and made absolute once at construction.
struct LockPath: Sendable, Hashable {
    /// The path as the caller gave it, for messages.
    let given: String
    /// Absolute, with `.`, `..` and symbolic links in its folders resolved where the folders
    /// exist; the key for singletons and self-deadlock detection, and the path opened.
    let absolute: String
    /// `absolute` as a C string, made once: every acquisition opens it.
    let cAbsolute: CPath

    init(_ given: String) throws {
        guard !given.isEmpty else {
            throw FileLockError(
                .invalidPath, path: given, message: "the lock file path is empty: pass a file path such as '/tmp/app.lock'")
        }
        guard !given.utf8.contains(0) else {
            throw FileLockError(
                .invalidPath, path: given, message: "the lock file path '\(given)' contains a NUL byte; remove it")
        }
        let name = LockPath.lastComponent(of: given)
        if given.hasSuffix("/") || name == "." || name == ".." {
            var folder = Substring(given)
            while folder.count > 1 && folder.hasSuffix("/") { folder = folder.dropLast() }
            throw FileLockError(
                .isDirectory, path: given,
                message: "'\(given)' names a directory, not a lock file: pass a file path such as '\(folder)/.lock'")
        }
        self.given = given
        var absolute = given
        if !given.hasPrefix("/"), case .success(let directory) = System.currentDirectory() {
            absolute = directory + "/" + given
        }
        self.absolute = LockPath.resolved(absolute)
        cAbsolute = CPath(self.absolute)
    }

    /// Opens the lock file; when its folder is missing and `creatingFolders`, creates the folders
    /// (as `mkdir -p`) and tries once more. Failures other than the folders' come back as `Errno`.
    ///
    /// - Throws: `FileLockError` when a missing folder cannot be created.
    func open(flags: Int32, mode: UInt32, creatingFolders: Bool = true) throws -> Result<Int32, Errno> {
        let first = System.open(cAbsolute, flags: flags, mode: mode)
        guard creatingFolders, case .failure(.noSuchFile) = first else { return first }
        try createParentFolders()
        return System.open(cAbsolute, flags: flags, mode: mode)
    }

    /// Resolves symbolic links and `..` in the longest existing folder prefix, so that one lock
    /// file gets one key even before its folders exist (`/tmp` is a link on macOS); the missing
    /// rest is normalised without touching the disk.
    static func resolved(_ absolute: String) -> String {
        var existing = parent(of: absolute)
        var missing: [String] = [lastComponent(of: absolute)]
        while true {
            if case .success(let real) = System.realPath(existing) {
                let rest = missing.reversed().joined(separator: "/")
                return normalized((real == "/" ? "" : real) + "/" + rest)
            }
            if existing == "/" || existing.isEmpty { return normalized(absolute) }
            missing.append(lastComponent(of: existing))
            existing = parent(of: existing)
        }
    }

    /// The folder that holds the lock file.
    var parent: String { LockPath.parent(of: absolute) }

    /// Creates the missing folders above the lock file (as `mkdir -p`, mode 0777 less the umask).
    func createParentFolders() throws {
        var missing: [String] = []
        var folder = parent
        while folder != "/" && !folder.isEmpty {
            switch System.mkdir(folder, mode: 0o777) {
            case .success, .failure(.fileExists):
                folder = "/"
                continue
            case .failure(.noSuchFile):
                missing.append(folder)
                folder = LockPath.parent(of: folder)
            case .failure(let error):
                throw folderError(error, folder: folder)
            }
        }
        for folder in missing.reversed() {
            switch System.mkdir(folder, mode: 0o777) {
            case .success, .failure(.fileExists): continue
            case .failure(let error): throw folderError(error, folder: folder)
            }
        }
    }

    private func folderError(_ error: Errno, folder: String) -> FileLockError {
        var failure = FileLockError.system(error, path: given, operation: "create the folder '\(folder)' for")
        if error == .notDirectory || error == .fileExists {
            failure.message = "cannot create the folder '\(folder)' for lock file '\(given)': a file stands there"
        }
        return failure
    }

    static func lastComponent(of path: String) -> String {
        var trimmed = Substring(path)
        while trimmed.count > 1 && trimmed.hasSuffix("/") { trimmed = trimmed.dropLast() }
        guard let slash = trimmed.lastIndex(of: "/") else { return String(trimmed) }
        return String(trimmed[trimmed.index(after: slash)...])
    }

    static func parent(of path: String) -> String {
        guard let slash = path.lastIndex(of: "/") else { return "." }
        if slash == path.startIndex { return "/" }
        return String(path[..<slash])
    }

    /// Removes `.`, `..` and repeated slashes from an absolute path without touching the disk.
    static func normalized(_ path: String) -> String {
        var parts: [Substring] = []
        for part in path.split(separator: "/") {
            switch part {
            case ".": continue
            case "..": if !parts.isEmpty { parts.removeLast() }
            default: parts.append(part)
            }
        }
        return "/" + parts.joined(separator: "/")
    }
}
