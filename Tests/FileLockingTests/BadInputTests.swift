#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif
@testable import FileLocking
import Subprocesses
import Testing

/// Each bad input: its own small test, asserting the error code and that the message names the
/// path. Nothing may hang and nothing next to the lock file may change.
@Suite("Bad input", .ownThreads)
struct BadInputTests {
    let folder: TemporaryFolder
    init() throws { folder = try TemporaryFolder() }

    /// The error of making a lock for `path` and acquiring it (bad paths may be refused by either).
    func acquireError(_ path: String) throws -> FileLockError? {
        #expect(throws: FileLockError.self) { try FileLock(at: path).acquire(timeout: .seconds(5)) }
    }

    @Test func emptyPath() {
        let error = #expect(throws: FileLockError.self) { _ = try FileLock(at: "") }
        #expect(error?.code == .invalidPath)
        #expect(error?.message.contains("empty") == true)
    }

    /// A NUL byte is refused, and shown escaped: a raw one would cut the message short wherever
    /// it becomes a C string (a log, a terminal).
    @Test func aNULByteIsShownEscaped() throws {
        let error = #expect(throws: FileLockError.self) { _ = try FileLock(at: folder.path + "/a\u{0}b.lock") }
        #expect(error?.code == .invalidPath)
        #expect(error?.message.contains("a\\x00b.lock") == true, "\(error?.message ?? "")")
        #expect(error?.message.utf8.contains(0) == false)
        #expect(error?.path.utf8.contains(0) == false)
    }

    /// A folder whose filesystem creates no files on request (/proc) is said so, not taken for a
    /// folder that vanished.
    @Test func aFolderThatMakesNoFilesIsSaidSo() throws {
        let error = try acquireError("/proc/filelock-test.lock")
        #expect(error?.code == .invalidPath)
        #expect(error?.message.contains("does not create files there") == true, "\(error?.message ?? "")")
    }

    /// A FIFO at the lock path is refused by every whole-file kind alike, never locked.
    @Test(arguments: WholeFileKind.allCases.filter { $0 != .softReadWrite })  // (never opens its path)
    func aFIFOIsRefused(kind: WholeFileKind) throws {
        let path = folder.file("fifo-\(kind)")
        #expect(mkfifo(path, 0o644) == 0)
        let lock = try kind.make(path)
        let error = #expect(throws: FileLockError.self) { try lock.acquire(timeout: .seconds(5)) }
        #expect(error?.code == .invalidPath)
        #expect(error?.message.contains("not a regular file") == true, "\(error?.message ?? "")")
        #expect(!lock.isLocked)
    }

    @Test func pathIsADirectory() throws {
        let error = try acquireError(folder.path)
        #expect(error?.code == .isDirectory)
        #expect(error?.message.contains(folder.path) == true)
    }

    @Test(arguments: ["dir/", "dir/.", "dir/.."])
    func pathNamesADirectorySyntactically(_ name: String) throws {
        let path = folder.file(name)
        let error = #expect(throws: FileLockError.self) { _ = try FileLock(at: path) }
        #expect(error?.code == .isDirectory)
        #expect(error?.message.contains(path) == true)
    }

    @Test func pathIsASymbolicLinkToAFile() throws {
        let target = folder.file("target.txt")
        writeFile(target, "precious")
        var before = stat()
        stat(target, &before)
        let link = folder.file("link.lock")
        symlink(target, link)
        let error = try acquireError(link)
        #expect(error?.code == .isSymbolicLink)
        #expect(error?.message.contains(link) == true)
        #expect(readFile(target) == "precious")
        var after = stat()
        stat(target, &after)
        #if canImport(Darwin)
            #expect(after.st_mtimespec.tv_sec == before.st_mtimespec.tv_sec)
            #expect(after.st_mtimespec.tv_nsec == before.st_mtimespec.tv_nsec)
        #else
            #expect(after.st_mtim.tv_sec == before.st_mtim.tv_sec && after.st_mtim.tv_nsec == before.st_mtim.tv_nsec)
        #endif
        let direct = try FileLock(at: target)
        #expect(try direct.tryAcquire(), "the target was not locked through the link")
        direct.release()
    }

    @Test func pathIsADanglingSymbolicLink() throws {
        let target = folder.file("nowhere.txt")
        let link = folder.file("dangling.lock")
        symlink(target, link)
        let error = try acquireError(link)
        #expect(error?.code == .isSymbolicLink)
        #expect(access(target, F_OK) != 0, "the link's target was not created")
    }

    @Test func aFolderOfThePathIsAFile() throws {
        writeFile(folder.file("plain"), "x")
        let path = folder.file("plain/sub/x.lock")
        let error = try acquireError(path)
        #expect(error?.code == .invalidPath)
        #expect(error?.message.contains(path) == true)
    }

    @Test func nameTooLong() throws {
        let path = folder.file(String(repeating: "n", count: 300) + ".lock")
        let error = try acquireError(path)
        #expect(error?.code == .nameTooLong)
        // Names the path by its ends (not all 330 bytes) and says which part is too long.
        let message = error?.message ?? ""
        #expect(message.contains("'" + folder.path), "\(message)")
        #expect(message.contains("nnnn.lock'"), "\(message)")
        #expect(message.contains("305 bytes, more than the 255"), "\(message)")
        #expect(!message.contains(path), "\(message)")
        #expect(message.utf8.count < 400, "\(message)")
        #expect(access(folder.path + "/abcdefgh", F_OK) != 0, "no folder is created on the way to the refusal")
    }

    @Test func nameTooLongIsShortenedOnCharacterBoundaries() throws {
        let path = folder.file(String(repeating: "é", count: 150) + ".lock")
        let error = try acquireError(path)
        #expect(error?.code == .nameTooLong)
        let message = error?.message ?? ""
        #expect(message.contains("éé…éé") && message.contains("éé.lock'") && !message.contains("\u{FFFD}"), "\(message)")
    }

    @Test func pathTooLong() throws {
        let path = folder.path + String(repeating: "/abcdefgh", count: 600) + "/x.lock"
        let error = try acquireError(path)
        #expect(error?.code == .nameTooLong)
        let message = error?.message ?? ""
        #expect(message.contains("PATH_MAX, 4096 bytes"), "\(message)")
        #expect(!message.contains("255"), "the components are short: \(message)")
        #expect(message.contains("'" + folder.path) && message.contains("abcdefgh/x.lock'"), "\(message)")
        #expect(message.utf8.count < 400, "\(message)")
    }

    // Permission checks do not apply to root, so as root the probe runs as `nobody`.
    @Test(.enabled(if: TestEnvironment.requires(TestEnvironment.isRoot), "needs root to switch to nobody"))
    func noPermissionToCreateTheLockFile() throws {
        let locked = folder.file("private")
        mkdir(locked, 0o755)
        let path = locked + "/x.lock"
        let child = try folder.probeAsNobody(["hold", path])
        let line = try child.expectLine(startingWith: "error")
        #expect(line.hasPrefix("error permissionDenied"), "\(line)")
        #expect(line.contains(path))
        #expect(access(path, F_OK) != 0)
    }

    @Test(.enabled(if: TestEnvironment.requires(TestEnvironment.isRoot), "needs root to switch to nobody"))
    func noPermissionToOpenAnExistingLockFile() throws {
        let path = folder.file("secret.lock")
        writeFile(path, "")
        chmod(path, 0o600)
        let child = try folder.probeAsNobody(["hold", path])
        let line = try child.expectLine(startingWith: "error")
        #expect(line.hasPrefix("error permissionDenied"), "\(line)")
        #expect(line.contains(path))
    }

    @Test(.enabled(if: TestEnvironment.requires(TestEnvironment.isRoot), "needs root to switch to nobody"))
    func aReadableLockFileOfAnotherUserStillLocks() throws {
        // flock needs no write access, as with flock(1): a shared lock file owned by another
        // user works when it is readable.
        let path = folder.file("shared.lock")
        writeFile(path, "")
        chmod(path, 0o644)
        let child = try folder.probeAsNobody(["hold", path])
        try child.expectLine(startingWith: "acquired")
        let lock = try FileLock(at: path)
        #expect(try !lock.tryAcquire())
        child.send("release")
        try child.expectLine(startingWith: "released")
    }

    @Test(.enabled(if: TestEnvironment.requires(TestEnvironment.isRoot), "needs root for a private read-only mount"))
    func readOnlyFilesystem() throws {
        let (child, path) = try folder.probeOnReadOnlyMount(["hold", "LOCK"])
        let line = try child.expectLine(startingWith: "error")
        #expect(line.hasPrefix("error readOnlyFilesystem"), "\(line)")
        #expect(line.contains(path))
    }

    @Test func negativeTimeout() throws {
        let path = folder.file("neg.lock")
        let error = #expect(throws: FileLockError.self) { try FileLock(at: path).acquire(timeout: .seconds(-3)) }
        #expect(error?.code == .invalidTimeout)
        #expect(error?.message.contains(path) == true)
    }

    @Test func invalidPollInterval() throws {
        let path = folder.file("poll.lock")
        let error = #expect(throws: FileLockError.self) { _ = try FileLock(at: path, pollInterval: .zero) }
        #expect(error?.code == .invalidConfiguration)
        #expect(error?.message.contains(path) == true)
    }

    @Test func invalidFilePermissions() throws {
        let path = folder.file("perm.lock")
        let error = #expect(throws: FileLockError.self) { _ = try FileLock(at: path, filePermissions: 0o17777) }
        #expect(error?.code == .invalidConfiguration)
    }
}

/// A filesystem without `flock` (some FUSE and NFS mounts): simulated by a preloaded shim whose
/// `flock` fails with the errno such filesystems return, in a real probe process.
@Suite("Filesystem without flock", .ownThreads)
struct NoFlockTests {
    /// LD_PRELOAD interposition is a Linux (glibc) technique.
    static let compiler: String? = {
        #if os(Linux)
            ["/usr/bin/cc", "/usr/bin/gcc", "/usr/bin/clang"].first { access($0, X_OK) == 0 }
        #else
            nil
        #endif
    }()

    @Test(
        .enabled(if: TestEnvironment.requires(compiler != nil), "needs Linux and a C compiler for the LD_PRELOAD shim"),
        arguments: [ENOSYS, ENOLCK, EOPNOTSUPP])
    func flockNotSupportedNamesSoftFileLock(errorNumber: Int32) throws {
        let folder = try TemporaryFolder()
        let source = folder.file("noflock.c")
        writeFile(
            source,
            """
            #include <errno.h>
            #include <stdlib.h>
            int flock(int fd, int operation) { (void)fd; (void)operation; errno = atoi(getenv("SHIM_ERRNO")); return -1; }
            """)
        let shim = folder.file("noflock.so")
        #expect(runShell("'\(Self.compiler ?? "cc")' -shared -fPIC -o '\(shim)' '\(source)'") == 0)
        let path = folder.file("nfs.lock")
        let probe = try ChildProcess(
            TestEnvironment.probe, ["hold", path], environment: ["LD_PRELOAD": shim, "SHIM_ERRNO": String(errorNumber)])
        let line = try probe.expectLine(startingWith: "error")
        #expect(line.hasPrefix("error notSupportedByFilesystem"), "\(line)")
        #expect(line.contains(path))
        #expect(line.contains("SoftFileLock"))
        #expect(try probe.waitForExit() == 3)
    }

    /// Builds a preload shim from C `source` in `folder`.
    static func shim(_ source: String, in folder: TemporaryFolder, name: String) throws -> String {
        let sourcePath = folder.file(name + ".c")
        writeFile(sourcePath, source)
        let shim = folder.file(name + ".so")
        guard runShell("'\(compiler ?? "cc")' -shared -fPIC -o '\(shim)' '\(sourcePath)' -ldl") == 0 else {
            throw ChildProcessError(description: "cannot build the \(name) shim")
        }
        return shim
    }

    /// A program that runs a command with the `flock` system call failing with `errno` (a seccomp
    /// filter, inherited across exec): `runner ERRNO COMMAND ARGUMENTS...`. Unlike a preloaded
    /// shim it also reaches a static executable (the release `filelock`).
    static func withoutFlockRunner(in folder: TemporaryFolder) throws -> String {
        let sourcePath = folder.file("noflock-runner.c")
        writeFile(
            sourcePath,
            """
            #include <linux/filter.h>
            #include <linux/seccomp.h>
            #include <stddef.h>
            #include <stdio.h>
            #include <stdlib.h>
            #include <sys/prctl.h>
            #include <sys/syscall.h>
            #include <unistd.h>
            int main(int argc, char **argv) {
                if (argc < 3) return 2;
                struct sock_filter filter[] = {
                    BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
                    BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SYS_flock, 0, 1),
                    BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | (atoi(argv[1]) & SECCOMP_RET_DATA)),
                    BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
                };
                struct sock_fprog program = { .len = 4, .filter = filter };
                if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) { perror("prctl"); return 126; }
                if (prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &program) != 0) { perror("seccomp"); return 126; }
                execvp(argv[2], argv + 2);
                perror("exec");
                return 127;
            }
            """)
        let runner = folder.file("noflock-runner")
        guard runShell("'\(compiler ?? "cc")' -o '\(runner)' '\(sourcePath)'") == 0 else {
            throw ChildProcessError(description: "cannot build the seccomp runner")
        }
        return runner
    }

    /// On NFS, `flock` is a POSIX record lock whose exclusive form needs write access: after the
    /// read-only fallback it fails with `EBADF`, which must say what to do.
    @Test(.enabled(if: TestEnvironment.requires(compiler != nil), "needs Linux and a C compiler for the LD_PRELOAD shim"))
    func readOnlyExclusiveFlockOnNFSSaysWhatToDo() throws {
        let folder = try TemporaryFolder()
        let shim = try Self.shim(
            """
            #include <errno.h>
            int flock(int fd, int operation) { (void)fd; (void)operation; errno = EBADF; return -1; }
            """, in: folder, name: "ebadf")
        let path = folder.file("nfs.lock")
        let probe = try ChildProcess(TestEnvironment.probe, ["hold", path], environment: ["LD_PRELOAD": shim])
        let line = try probe.expectLine(startingWith: "error")
        #expect(line.hasPrefix("error permissionDenied"), "\(line)")
        #expect(line.contains(path) && line.contains("write access"), "\(line)")
        #expect(!line.contains("Bad file descriptor"), "\(line)")
    }

    /// A lock file whose `fstat` fails after locking (an NFS handle gone stale) cannot be checked
    /// for deletion: never report it acquired; start over, and give up with an error when it
    /// never works.
    @Test(.enabled(if: TestEnvironment.requires(compiler != nil), "needs Linux and a C compiler for the LD_PRELOAD shim"))
    func aLockFileThatCannotBeCheckedIsNeverReportedAcquired() throws {
        let folder = try TemporaryFolder()
        let shim = try Self.shim(
            """
            #define _GNU_SOURCE
            #include <dlfcn.h>
            #include <errno.h>
            #include <stdio.h>
            #include <string.h>
            #include <unistd.h>
            #include <sys/stat.h>
            int fstat(int fd, struct stat *buffer) {
                static int (*real)(int, struct stat *);
                if (!real) real = (int (*)(int, struct stat *))dlsym(RTLD_NEXT, "fstat");
                char link[64], target[4096];
                snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
                ssize_t count = readlink(link, target, sizeof target - 1);
                if (count > 0) {
                    target[count] = 0;
                    if (strstr(target, "stale.lock")) { errno = ESTALE; return -1; }
                }
                return real(fd, buffer);
            }
            """, in: folder, name: "estale")
        let path = folder.file("stale.lock")
        let probe = try ChildProcess(TestEnvironment.probe, ["hold", path], environment: ["LD_PRELOAD": shim])
        let line = try probe.readLine()
        #expect(line.hasPrefix("error io"), "\(line)")
        #expect(line.contains("gave up"), "\(line)")
    }

    @Test func anUnsupportedOperationOfAnotherKindDoesNotBlameFlock() {
        let error = FileLockError.system(.notSupported, path: "/x/m.lock", operation: "create")
        #expect(error.code == .notSupportedByFilesystem)
        #expect(error.message.contains("/x/m.lock"))
        #expect(!error.message.contains("flock") && !error.message.contains("SoftFileLock"), "\(error.message)")
    }
}
