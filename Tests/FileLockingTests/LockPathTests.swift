#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif
import FileLocking
import Subprocesses
import SystemPackage
import Testing

@Suite("Lock paths are bytes", .ownThreads)
struct LockPathTests {
    let folder: TemporaryFolder
    init() throws { folder = try TemporaryFolder() }

    /// `<folder>/bad\xff.lock`: a name that is not valid UTF-8.
    var oddBytes: [UInt8] { Array(folder.path.utf8) + Array("/bad".utf8) + [0xFF] + Array(".lock".utf8) }

    /// The name a `String` would make of it: the byte replaced by U+FFFD.
    var repairedName: String { String(decoding: oddBytes, as: UTF8.self) }

    func filePath(_ bytes: [UInt8]) -> FilePath {
        (bytes.map { CChar(bitPattern: $0) } + [0]).withUnsafeBufferPointer { FilePath(platformString: $0.baseAddress!) }
    }

    func exists(_ bytes: [UInt8]) -> Bool {
        (bytes.map { CChar(bitPattern: $0) } + [0]).withUnsafeBufferPointer { access($0.baseAddress!, F_OK) == 0 }
    }

    /// swift-system's `FileDescriptor` and `FilePath` for a file the caller opened: the ranges
    /// are locked on the caller's open file (another open file of it is excluded), and the
    /// caller's descriptor stays open after the lock object goes.
    /// Repeated slashes before the last name (`…/ /// `: folder " ", file " ") name one folder, as
    /// the kernel reads them: the lock file is created there, the canonical path has no extra
    /// folders, and a second lock object on the same path meets the first.
    @Test(arguments: [" /// ", "x//y", "x///y"])
    func repeatedSlashesNameOneFolder(_ suffix: String) throws {
        let path = folder.file("slashes/") + suffix
        let lock = try FileLock(at: path)
        #expect(try lock.tryAcquire())
        #expect(!lock.canonicalPath.contains("//"))
        let expected = folder.path + "/slashes/" + suffix.split(separator: "/").joined(separator: "/")
        #expect(lock.canonicalPath == expected)
        var status = stat()
        #expect(lstat(expected, &status) == 0 && (status.st_mode & S_IFMT) == S_IFREG, "the lock file is a file")
        let other = try FileLock(at: path)
        #expect(try !other.tryAcquire(), "the second object locks the same file")
        lock.release()
        #expect(try other.tryAcquire())
        other.release()
    }

    @Test func aByteRangeLockOnTheCallersFileDescriptor() throws {
        let path = filePath(oddBytes)
        let descriptor = try FileDescriptor.open(path, .readWrite, options: [.create, .closeOnExec], permissions: .ownerReadWrite)
        defer { try? descriptor.close() }
        var file: ByteRangeLock? = try ByteRangeLock(descriptor: descriptor, path: path)
        try file!.lock(ByteRange(start: 0, length: 10))
        let other = try ByteRangeLock(at: path)
        #expect(try !other.tryLock(ByteRange(start: 5, length: 1)))
        #expect(try other.tryLock(ByteRange(start: 10, length: 1)))
        file = nil
        // Still open (the caller's), so its lock stands.
        #expect(try !other.tryLock(ByteRange(start: 5, length: 1)))
        #expect(fcntl(descriptor.rawValue, F_GETFD) != -1)
    }

    /// The two heartbeat-kept kinds take a `FilePath` too: a soft read-write lock's log is the
    /// given bytes and `.rw`, a lease's marker the given bytes, never a U+FFFD name.
    @Test func softReadWriteLocksAndLeasesOnANonUTF8NameUseExactlyThoseBytes() throws {
        let lock = try SoftReadWriteLock(at: filePath(oddBytes), isSingleton: false)
        try lock.acquireWrite()
        #expect(exists(oddBytes + Array(".rw/gen".utf8)), "the log beside the exact bytes")
        #expect(!exists(Array((repairedName + ".rw").utf8)))
        #expect(try !SoftReadWriteLock(at: filePath(oddBytes), isSingleton: false).tryAcquireRead())
        let repaired = try SoftReadWriteLock(at: repairedName, isSingleton: false)
        #expect(try repaired.tryAcquireRead(), "the U+FFFD name is another lock")
        repaired.release()
        lock.release()

        let lease = try SoftFileLease(at: filePath(oddBytes))
        try lease.acquire()
        #expect(exists(oddBytes), "the marker has the exact bytes given")
        #expect(try !SoftFileLease(at: filePath(oddBytes)).tryAcquire())
        #expect(!exists(Array(repairedName.utf8)))
        try lease.checkedRelease()
        #expect(!exists(oddBytes))
    }

    @Test func aFileLockOnANonUTF8NameLocksExactlyThatFile() throws {
        let lock = try FileLock(at: filePath(oddBytes))
        try lock.acquire()
        #expect(exists(oddBytes), "the lock file has the exact bytes given")
        #expect(!exists(Array(repairedName.utf8)), "no file with U+FFFD in its name was made")
        // Another open file of the same bytes is excluded; the U+FFFD name is a different file.
        #expect(try !FileLock(at: filePath(oddBytes)).tryAcquire())
        let repaired = try FileLock(at: repairedName)
        #expect(try repaired.tryAcquire())
        repaired.release()
        lock.release()
        #expect(lock.path.hasSuffix("/bad\\xff.lock"), "messages show the odd byte escaped: \(lock.path)")
    }

    @Test func flockOnANonUTF8NameExcludesUs() throws {
        guard TestEnvironment.requires(TestEnvironment.flockCommand != nil) else {
            print("skipped: flock(1) is not installed")
            return
        }
        // flock(1) holds the file with the odd byte in its name, as a shell script would.
        let shellPath = folder.path + "/bad$'\\xff'.lock"
        let holder = try ChildProcess("/bin/sh", ["-c", "exec bash -c \"flock \(shellPath) sh -c 'echo locked; read x'\""])
        #expect(try holder.readLine() == "locked")
        let error = #expect(throws: FileLockError.self) { try FileLock(at: filePath(oddBytes)).acquire(timeout: .zero) }
        #expect(error?.code == .timedOut)
        holder.closeInput()
        _ = try holder.waitForExit()
    }

    @Test func aSoftLockOnANonUTF8NameMakesExactlyThatMarker() throws {
        let lock = try SoftFileLock(at: filePath(oddBytes))
        try lock.acquire()
        #expect(exists(oddBytes))
        #expect(!exists(Array(repairedName.utf8)))
        #expect(try !SoftFileLock(at: filePath(oddBytes)).tryAcquire())
        #expect(lock.holder?.pid == getpid())
        lock.release()
        #expect(!exists(oddBytes), "release removed the marker with the exact bytes")
    }

    @Test func aByteRangeLockOnANonUTF8NameOpensExactlyThatFile() throws {
        let records = try ByteRangeLock(at: filePath(oddBytes))
        try records.lock(ByteRange(start: 0, length: 10))
        #expect(exists(oddBytes))
        #expect(try !ByteRangeLock(at: filePath(oddBytes)).tryLock(ByteRange(start: 0, length: 10)))
        #expect(try ByteRangeLock(at: repairedName).tryLock(ByteRange(start: 0, length: 10)))
    }

    @Test func missingFoldersWithNonUTF8NamesAreCreated() throws {
        let nested = Array(folder.path.utf8) + Array("/d".utf8) + [0xFE] + Array("/e/x.lock".utf8)
        let lock = try FileLock(at: filePath(nested))
        try lock.acquire()
        #expect(exists(nested))
        lock.release()
    }

    /// A daemon whose working folder was deleted: a relative path cannot be resolved, which must
    /// be a clear error (it used to loop for ever, growing memory).
    @Test(arguments: WholeFileKind.allCases)
    func aDeletedWorkingFolderIsAClearError(kind: WholeFileKind) throws {
        let gone = folder.file("gone")
        mkdir(gone, 0o755)
        let child = forkChild()
        if child == 0 {
            guard chdir(gone) == 0, rmdir(gone) == 0 else { _exit(10) }
            do {
                _ = try kind.make("relative.lock")
                _exit(1)
            } catch let error as FileLockError {
                _exit(error.code == .invalidPath && error.message.contains("relative.lock") ? 0 : 2)
            } catch {
                _exit(3)
            }
        }
        #expect(waitForChild(child) == 0, "1: accepted, 2: wrong error, -1: hung")
    }
}
