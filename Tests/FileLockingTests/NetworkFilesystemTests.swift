#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif
@testable import FileLocking
import Subprocesses
import Synchronization
import Testing

/// Telling network and FUSE filesystems, where kernel locks may not reach other hosts, and the
/// one-time report of a kernel lock on one. (A real FUSE mount is in `TwoHostTests`.)
@Suite("Network filesystems")
struct NetworkFilesystemTests {
    let folder: TemporaryFolder
    init() throws { folder = try TemporaryFolder() }

    /// The `statfs` type numbers of `linux/magic.h` (and statfs(2)) that name network and FUSE
    /// filesystems, and local ones that do not.
    @Test func statfsTypeNumbersAreClassified() {
        let expected: [(UInt32, String)] = [
            (0x6969, "nfs"), (0x517B, "smb"), (0xFF53_4D42, "cifs"), (0xFE53_4D42, "smb2"), (0x6573_5546, "fuse"),
            (0x00C3_6400, "ceph"), (0x0102_1997, "9p"), (0x0BD0_0BD0, "lustre"), (0x4750_4653, "gpfs"),
            (0x5346_414F, "afs"), (0x6B41_4653, "afs"),
        ]
        for (magic, name) in expected {
            let found = NetworkFilesystem(FilesystemType(magic: magic, name: nil))
            #expect(found?.name == name, "0x\(String(magic, radix: 16))")
            #expect(found?.isFUSE == (name == "fuse"))
        }
        // ext4, xfs, btrfs, tmpfs, overlay, zfs: local.
        for local: UInt32 in [0xEF53, 0x5846_5342, 0x9123_683E, 0x0102_1994, 0x794C_7630, 0x2FC1_2FC1] {
            #expect(NetworkFilesystem(FilesystemType(magic: local, name: nil)) == nil, "0x\(String(local, radix: 16))")
        }
        // macOS names its types.
        #expect(NetworkFilesystem(FilesystemType(magic: nil, name: "smbfs"))?.name == "smbfs")
        #expect(NetworkFilesystem(FilesystemType(magic: nil, name: "macfuse"))?.isFUSE == true)
        #expect(NetworkFilesystem(FilesystemType(magic: nil, name: "apfs")) == nil)
    }

    /// On this machine's local test folder every kernel kind says "local" (`nil`), also before its
    /// folders exist (the nearest existing folder is asked) and after an acquisition.
    @Test func aLocalFolderIsNoNetworkFilesystem() throws {
        guard NetworkFilesystem(try System.filesystemType(of: CPath(bytes: Array(folder.path.utf8))).get()) == nil else {
            print("skipped: the test folder \(folder.path) is itself on a network filesystem")
            return
        }
        let lock = try FileLock(at: folder.file("not/yet/made.lock"))
        #expect(lock.networkFilesystem == nil)
        try lock.withLock {}
        #expect(lock.networkFilesystem == nil)
        let readWrite = try ReadWriteLock(at: folder.file("rw.lock"), isSingleton: false)
        try readWrite.withWriteLock {}
        #expect(readWrite.networkFilesystem == nil)
        let records = try ByteRangeLock(at: folder.file("records.bin"))
        #expect(records.networkFilesystem == nil)
        #if os(Linux)
            #expect(System.mountType(of: CPath(bytes: Array(folder.path.utf8)))?.isEmpty == false, "mountinfo names it")
        #endif
    }

    /// The warning says what may go wrong where, and names the marker-file kinds to use instead.
    @Test func theWarningNamesTheRiskAndTheSoftKinds() {
        let nfs = FileLockWarning.kernelLock(
            "FileLock", path: "/shared/job.lock", on: NetworkFilesystem(name: "nfs", mountType: "nfs4"))
        #expect(nfs.code == .kernelLockOnNetworkFilesystem)
        #expect(nfs.resource == LockResource(kind: .file, name: "/shared/job.lock"))
        #expect(nfs.filesystem?.description == "nfs4")
        for name in ["'/shared/job.lock'", "network filesystem (nfs4)", "flock", "other hosts", "SoftFileLock", "SoftReadWriteLock", "SoftFileLease"] {
            #expect(nfs.message.contains(name), "\(name): \(nfs.message)")
        }
        #expect(!nfs.message.contains("another mount"))
        let fuse = FileLockWarning.kernelLock(
            "ReadWriteLock", path: "/mnt/x/rw.lock", on: NetworkFilesystem(name: "fuse", mountType: "fuse.sshfs", isFUSE: true))
        for name in ["FUSE filesystem (fuse.sshfs)", "record locks", "other hosts", "another mount", "SoftFileLock"] {
            #expect(fuse.message.contains(name), "\(name): \(fuse.message)")
        }
    }

    /// One report per filesystem and process, and only while a handler is set (a report with no
    /// one to hear it is not used up).
    @Test func aFilesystemIsReportedOnceWhileAHandlerIsSet() {
        // Fake device numbers far from real ones; warnings of other tests' locks are ignored.
        let (first, second) = (UInt64.max - 11, UInt64.max - 12)
        let heard = Mutex<[String]>([])
        let previous = FileLockWarnings.handler
        defer { FileLockWarnings.handler = previous }
        func warning(_ path: String) -> FileLockWarning {
            FileLockWarning.kernelLock("FileLock", path: path, on: NetworkFilesystem(name: "nfs"))
        }
        FileLockWarnings.handler = nil
        FileLockWarnings.deliver(warning("/unheard/a.lock"), onceForFilesystem: first)
        FileLockWarnings.handler = { warning in
            let path = warning.resource.name
            if path.hasPrefix("/test-report/") { heard.withLock { $0.append(path) } }
        }
        FileLockWarnings.deliver(warning("/test-report/a.lock"), onceForFilesystem: first)
        FileLockWarnings.deliver(warning("/test-report/b.lock"), onceForFilesystem: first)
        FileLockWarnings.deliver(warning("/test-report/c.lock"), onceForFilesystem: second)
        #expect(heard.withLock { $0 } == ["/test-report/a.lock", "/test-report/c.lock"])
    }
}
