#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif
@testable import FileLocking
import Subprocesses
import Testing

/// `filelock run --remove-on-release` and `--fallback-to-soft`.
extension CommandLineTests {
    @Test func runRemoveOnReleaseDeletesTheLockFileAfterTheCommand() throws {
        let path = folder.file("removed.lock")
        let (status, output) = try filelock("run", "--remove-on-release", path, "--", "sh", "-c", "test -e \"$0\" && echo present", path)
        #expect(status == 0, "\(output)")
        #expect(output == "present", "the lock file exists while the command runs")
        #expect(access(path, F_OK) != 0, "the lock file is gone after release")
        #expect(try filelock("run", path, "true").0 == 0)
        #expect(access(path, F_OK) == 0, "without the option the lock file stays")
    }

    /// The lock pointed at a data file by mistake: the file has something in it, so it is no lock
    /// file of ours and stays, from the command as from the API.
    @Test func removeOnReleaseKeepsAFileWithData() throws {
        let path = folder.file("data.json")
        writeFile(path, "important data\n")
        let (status, output) = try filelock("run", "--remove-on-release", path, "--", "true")
        #expect(status == 0, "\(output)")
        #expect(access(path, F_OK) == 0, "the data file was deleted")
        let lock = try FileLock(at: path, removesFileOnRelease: true)
        try lock.withLock {}
        let data = System.readWholeFile(path)
        #expect((try? data.get()) == Array("important data\n".utf8), "the data file was deleted or changed")
    }

    /// Without `flock` (a seccomp filter, which also reaches the static release executable), the
    /// command runs under a marker at the lock path that names `filelock`'s process, and the
    /// marker goes afterwards.
    @Test(.enabled(if: TestEnvironment.requires(NoFlockTests.compiler != nil), "needs Linux and a C compiler for the runner"))
    func runFallbackToSoftLocksWithAMarkerWhereFlockIsMissing() throws {
        let runner = try NoFlockTests.withoutFlockRunner(in: folder)
        let notSupported = "\(EOPNOTSUPP)"
        let path = folder.file("fuse.lock")
        let tool = try ChildProcess(runner, [notSupported, Self.tool, "run", "--fallback-to-soft", path, "--", "cat", path])
        let output = try tool.readRemainingOutput()
        #expect(try tool.waitForExit() == 0, "\(output)")
        #expect(output.hasPrefix("\(tool.pid)\n"), "the marker names filelock's process: \(output)")
        #expect(access(path, F_OK) != 0, "the marker is removed on release")

        let refused = try ChildProcess(runner, [notSupported, Self.tool, "run", path, "--", "true"])
        let message = try refused.readRemainingOutput()
        #expect(try refused.waitForExit() == 2, "\(message)")
    }
}
