#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif
import Subprocesses
import Testing

enum TestEnvironment {
    /// The folder with the built executables (the test binary lives there).
    static let productsFolder: String = {
        #if os(Linux)
            var buffer = [CChar](repeating: 0, count: 4096)
            let count = readlink("/proc/self/exe", &buffer, buffer.count - 1)
            let path = String(decoding: buffer.prefix(max(0, count)).map { UInt8(bitPattern: $0) }, as: UTF8.self)
            var folder = String(path[..<(path.lastIndex(of: "/") ?? path.endIndex)])
            // Swift Testing on Linux may run from inside an .xctest bundle folder.
            if folder.hasSuffix(".xctest") { folder = String(folder[..<folder.lastIndex(of: "/")!]) }
            return folder
        #else
            // macOS runs tests inside xctest; the products folder is named in the environment
            // or is the default one.
            if let configured = getenv("FILELOCK_PRODUCTS") { return String(cString: configured) }
            return ".build/debug"
        #endif
    }()

    static var probe: String { productsFolder + "/lock-probe" }

    /// The `filelock` executable under test: `FILELOCK_TOOL` (CI points it at the static release
    /// build that users install), else the one `swift test` built.
    static let tool: String = getenv("FILELOCK_TOOL").map { String(cString: $0) } ?? productsFolder + "/filelock"

    /// Whether this run is CI, where every tool must be present and nothing may be skipped.
    static let isCI: Bool = getenv("CI").map { String(cString: $0) } == "true"

    /// A Python with the `filelock` package: `FILELOCK_TEST_PYTHON`, else `.venv/bin/python`.
    static let python: String? = {
        var candidates: [String] = []
        if let configured = getenv("FILELOCK_TEST_PYTHON") { candidates.append(String(cString: configured)) }
        candidates.append(".venv/bin/python")
        for candidate in candidates where access(candidate, X_OK) == 0 {
            if let child = try? ChildProcess(candidate, ["-c", "import filelock; print('ok')"]),
                (try? child.readLine(timeout: 30)) == "ok"
            {
                return candidate
            }
        }
        return nil
    }()

    static let flockCommand: String? = {
        for candidate in ["/usr/bin/flock", "/bin/flock", "/usr/local/bin/flock"] where access(candidate, X_OK) == 0 {
            return candidate
        }
        return nil
    }()

    static let isRoot: Bool = geteuid() == 0

    /// The test process's working folder.
    static let currentDirectory: String = {
        guard let buffer = getcwd(nil, 0) else { return "/" }
        defer { free(buffer) }
        return String(cString: buffer)
    }()

    /// Runs only where `available`; in CI a missing tool is a failure, not a skip.
    static func requires(_ available: Bool) -> Bool { available || isCI }
}

/// A fresh folder for one test, removed afterwards.
final class TemporaryFolder: @unchecked Sendable {
    let path: String

    init() throws {
        var template = Array("/tmp/filelock-test-XXXXXX".utf8CString)
        guard let made = mkdtemp(&template) else { throw ChildProcessError(description: "mkdtemp failed") }
        path = String(cString: made)
    }

    deinit {
        _ = runShell("chmod -R u+rwx '\(path)' 2>/dev/null; rm -rf '\(path)'")
    }

    func file(_ name: String) -> String { path + "/" + name }
}

/// Runs a shell command and returns its exit code (`system()` is unavailable on macOS).
@discardableResult
func runShell(_ command: String) -> Int32 {
    guard let shell = try? ChildProcess("/bin/sh", ["-c", command]) else { return 127 }
    return (try? shell.waitForExit()) ?? 127
}

func readFile(_ path: String) -> String? {
    guard let file = fopen(path, "r") else { return nil }
    defer { fclose(file) }
    var result = ""
    var buffer = [CChar](repeating: 0, count: 4096)
    while fgets(&buffer, Int32(buffer.count), file) != nil {
        result += String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }
    return result
}

func writeFile(_ path: String, _ contents: String) {
    guard let file = fopen(path, "w") else { return }
    let bytes = Array(contents.utf8)
    _ = bytes.withUnsafeBytes { fwrite($0.baseAddress, 1, $0.count, file) }
    fclose(file)
}

/// Waits until `condition` holds, at most `timeout` seconds; `false` (and a recorded issue) if
/// it never does, so that a broken test fails instead of hanging.
@discardableResult
func eventually(
    _ what: String, timeout: Double = 30, sourceLocation: SourceLocation = #_sourceLocation,
    _ condition: () -> Bool
) -> Bool {
    let deadline = ChildProcess.now() + timeout
    while !condition() {
        guard ChildProcess.now() < deadline else {
            Issue.record("timed out after \(timeout) s waiting until \(what)", sourceLocation: sourceLocation)
            return false
        }
        usleep(500)
    }
    return true
}

/// `eventually` for async tests.
@discardableResult
func eventually(
    _ what: String, timeout: Double = 30, sourceLocation: SourceLocation = #_sourceLocation,
    _ condition: () -> Bool
) async -> Bool {
    let deadline = ChildProcess.now() + timeout
    while !condition() {
        guard ChildProcess.now() < deadline else {
            Issue.record("timed out after \(timeout) s waiting until \(what)", sourceLocation: sourceLocation)
            return false
        }
        try? await Task.sleep(for: .microseconds(500))
    }
    return true
}

extension TemporaryFolder {
    /// Starts `lock-probe ARGUMENTS` as user `nobody` (permission checks do not apply to root).
    /// The probe is copied into this folder, which is opened to everyone: the build folder may
    /// not be reachable for `nobody`.
    func probeAsNobody(_ arguments: [String]) throws -> ChildProcess {
        chmod(path, 0o777)
        let copy = file("lock-probe")
        if access(copy, X_OK) != 0 {
            guard runShell("cp '\(TestEnvironment.probe)' '\(copy)' && chmod 755 '\(copy)'") == 0 else {
                throw ChildProcessError(description: "cannot copy lock-probe")
            }
        }
        return try ChildProcess("setpriv", ["--reuid=nobody", "--regid=nogroup", "--clear-groups", copy] + arguments)
    }

    /// Runs `filelock ARGUMENTS` as user `nobody`, as `probeAsNobody` does the probe (a copy in
    /// this folder); returns (exit code, stdout and stderr).
    func toolAsNobody(_ arguments: [String]) throws -> (Int32, String) {
        chmod(path, 0o777)
        let copy = file("filelock")
        if access(copy, X_OK) != 0 {
            guard runShell("cp '\(TestEnvironment.tool)' '\(copy)' && chmod 755 '\(copy)'") == 0 else {
                throw ChildProcessError(description: "cannot copy filelock")
            }
        }
        let quoted = ([copy] + arguments).map { "'" + $0.split(separator: "'", omittingEmptySubsequences: false).joined(separator: "'\\''") + "'" }
        let shell = try ChildProcess(
            "/bin/sh", ["-c", "setpriv --reuid=nobody --regid=nogroup --clear-groups " + quoted.joined(separator: " ") + " 2>&1"])
        let output = try shell.readRemainingOutput(timeout: 60)
        return (try shell.waitForExit(), output)
    }

    /// Starts lock-probe with `arguments` and `<folder>/ro/x.lock` as its lock path, in a private
    /// mount namespace where `<folder>/ro` is a read-only tmpfs (needs root). Returns the probe
    /// and the lock path.
    func probeOnReadOnlyMount(_ arguments: [String]) throws -> (ChildProcess, path: String) {
        let mountPoint = file("ro")
        mkdir(mountPoint, 0o755)
        let path = mountPoint + "/x.lock"
        let command = ([TestEnvironment.probe] + arguments.map { $0 == "LOCK" ? path : $0 }).map { "'\($0)'" }
        let child = try ChildProcess(
            "unshare", ["-m", "sh", "-c", "mount -t tmpfs -o ro tmpfs '\(mountPoint)' && exec " + command.joined(separator: " ")])
        return (child, path)
    }
}

/// The error `body` throws, or `nil`.
///
/// For checks inside a closure (a `withLock` body, a `Task`, a helper's closure): Swift 6.3.1
/// miscompiles a closure literal written inside `#expect(...)`/`#require(...)` when that macro sits
/// inside another closure (the next closure after it can run the wrong body), so such checks bind
/// the error here first and then `#expect` on the value.
func errorThrown(by body: () throws -> Void) -> (any Error)? {
    do {
        try body()
        return nil
    } catch {
        return error
    }
}

/// The `async` form of `errorThrown(by:)`.
func errorThrown(by body: () async throws -> Void) async -> (any Error)? {
    do {
        try await body()
        return nil
    } catch {
        return error
    }
}

/// `fork()` for the tests' forked children, which run a little synchronous code and `_exit`.
///
/// A child has only the forking thread; a lock that another thread of the test process held at
/// the fork stays held there. Swift Testing hooks every thrown error (`_swift_willThrow`, to record
/// a backtrace) and takes a lock of its own in the hook, which the parallel tests' threads take all
/// the time: a child whose lock wait throws (a timeout) hung there (gdb: pthread_mutex_lock <-
/// Testing.Backtrace._willThrow <- swift_willThrow <- LockEngine.waitLoop). So the child turns the
/// hooks off; their addresses are looked up in the parent (the loader's lock is no safer).
///
/// The child's code uses no generic type: making a generic type's metadata for the first time
/// takes a lock of the Swift runtime, which another thread may have held at the fork (gdb:
/// `ConformanceState::cacheResult` <- `__swift_instantiateConcreteTypeFromMangledName` <- an
/// `UnsafeRawPointer?` store here, once). Two plain addresses and `memset` need none.
func forkChild() -> pid_t {
    let (first, second) = (ThrowHooks.first, ThrowHooks.second)
    let width = MemoryLayout<UnsafeRawPointer>.size
    let child = fork()
    if child == 0 {
        if let hook = UnsafeMutableRawPointer(bitPattern: first) { memset(hook, 0, width) }
        if let hook = UnsafeMutableRawPointer(bitPattern: second) { memset(hook, 0, width) }
    }
    return child
}

private enum ThrowHooks {
    /// Addresses of the process-wide hook variables (0 when absent; bit patterns, as
    /// `UnsafeMutableRawPointer` is not `Sendable`).
    static let first = address(of: "_swift_willThrow")
    static let second = address(of: "_swift_willThrowTypedImpl")

    private static func address(of name: String) -> UInt {
        #if canImport(Darwin)
            dlsym(UnsafeMutableRawPointer(bitPattern: -2), name).map { UInt(bitPattern: $0) } ?? 0  // RTLD_DEFAULT
        #else
            dlsym(nil, name).map { UInt(bitPattern: $0) } ?? 0  // RTLD_DEFAULT
        #endif
    }
}
