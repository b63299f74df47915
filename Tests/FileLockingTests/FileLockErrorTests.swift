#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif
import FileLocking
import SystemPackage
import Testing

/// The one error type: which resource it names, and the cause behind it.
@Suite("FileLockError")
struct FileLockErrorTests {
    /// A server's error, standing in for the causes of kinds that are not file locks.
    struct ServerError: Error, Equatable {
        var sqlState: String
    }

    @Test func aFileResourceIsNamedByItsPath() {
        let resource = LockResource.file("/tmp/app.lock")
        #expect(resource.kind == .file)
        #expect(resource.name == "/tmp/app.lock")
        #expect(resource.path == "/tmp/app.lock")
        #expect(resource.description == "lock file '/tmp/app.lock'")
        #expect(resource.kind.description == "file")
    }

    @Test func aNamedResourceHasANameAndNoPath() {
        let resource = LockResource.named("nightly-report")
        #expect(resource.kind == .named)
        #expect(resource.name == "nightly-report")
        #expect(resource.path == nil)
        #expect(resource.description == "lock 'nightly-report'")
        #expect(resource.kind.description == "named")
        #expect(resource != .file("nightly-report"))
    }

    @Test func thePathInitializerNamesAFileAndKeepsTheErrnoAsItsCause() throws {
        let error = FileLockError(.permissionDenied, path: "/var/lock/app.lock", message: "m", errno: EACCES)
        #expect(error.resource == .file("/var/lock/app.lock"))
        #expect(error.path == "/var/lock/app.lock")
        #expect(error.errno == EACCES)
        let cause = try #require(error.cause as? Errno)
        #expect(cause == .permissionDenied)
    }

    @Test func withoutAnErrnoThereIsNoCause() {
        let error = FileLockError(.timedOut, path: "/tmp/app.lock", message: "m")
        #expect(error.cause == nil)
        #expect(error.errno == nil)
    }

    @Test func aNamedLocksErrorCarriesAServerErrorAsItsCause() throws {
        let error = FileLockError(
            .lockLost, resource: .named("jobs"), message: "lost", cause: ServerError(sqlState: "57P01"))
        #expect(error.code == .lockLost)
        #expect(error.resource.kind == .named)
        #expect(error.path == "jobs", "path gives the name as text for kinds without a file")
        #expect(error.errno == nil, "a server error has no errno")
        let cause = try #require(error.cause as? ServerError)
        #expect(cause.sqlState == "57P01")
    }

    @Test func settingErrnoReplacesOnlyASystemCause() {
        var error = FileLockError(.io, path: "/tmp/app.lock", message: "m")
        error.errno = EIO
        #expect((error.cause as? Errno) == .ioError)
        error.errno = nil
        #expect(error.cause == nil)
        var server = FileLockError(.io, resource: .named("jobs"), message: "m", cause: ServerError(sqlState: "08006"))
        server.errno = nil
        #expect((server.cause as? ServerError)?.sqlState == "08006")
    }

    @Test func settingThePathKeepsTheKind() {
        var error = FileLockError(.io, resource: .named("jobs"), message: "m")
        error.path = "other-jobs"
        #expect(error.resource == .named("other-jobs"))
    }

    // Real failures: the system error behind each is its cause.

    @Test func aFolderOfThePathIsAFileCausesNotDirectory() throws {
        let folder = try TemporaryFolder()
        writeFile(folder.file("plain"), "x")
        let path = folder.file("plain/x.lock")
        let error = #expect(throws: FileLockError.self) { try FileLock(at: path).acquire(timeout: .seconds(5)) }
        #expect(error?.code == .invalidPath, "\(error?.message ?? "")")
        #expect(error?.resource == .file(path))
        #expect((error?.cause as? Errno) == .notDirectory)
        #expect(error?.errno == ENOTDIR)
    }

    @Test func aSymbolicLinkCausesTooManyLinks() throws {
        let folder = try TemporaryFolder()
        let link = folder.file("link.lock")
        symlink(folder.file("target"), link)
        let error = #expect(throws: FileLockError.self) { try FileLock(at: link).acquire(timeout: .seconds(5)) }
        #expect(error?.code == .isSymbolicLink)
        #expect((error?.cause as? Errno) == .tooManySymbolicLinkLevels)
    }

    @Test func aSoftLockInAFolderThatIsAFileCausesNotDirectory() throws {
        let folder = try TemporaryFolder()
        writeFile(folder.file("plain"), "x")
        let path = folder.file("plain/x.lock")
        let error = #expect(throws: FileLockError.self) { try SoftFileLock(at: path).acquire(timeout: .seconds(5)) }
        #expect((error?.cause as? Errno) == .notDirectory)
    }

    @Test func aByteRangeLockOfAMissingReadOnlyFileCausesNoSuchFile() throws {
        let folder = try TemporaryFolder()
        let error = #expect(throws: FileLockError.self) {
            _ = try ByteRangeLock(at: folder.file("missing.bin"), readOnly: true)
        }
        #expect((error?.cause as? Errno) == .noSuchFileOrDirectory)
        #expect(error?.errno == ENOENT)
    }
}
