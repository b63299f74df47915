#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif
import FileLocking
import Testing

/// A `SoftReadWriteLock` hold lost between two heartbeats (its record removed, or the log no
/// longer naming it) is found at release: `checkedRelease` throws it, as a lease's does.
@Suite("SoftReadWriteLock release finds a loss", .ownThreads)
struct SoftReadWriteReleaseTests {
    let folder: TemporaryFolder
    init() throws { folder = try TemporaryFolder() }

    @Test func aRecordRemovedBetweenHeartbeatsIsALossAtRelease() throws {
        let path = folder.file("released.lock")
        // The default 30 s heartbeat: none runs during the test.
        let lock = try SoftReadWriteLock(at: path, isSingleton: false)
        try lock.acquireWrite()
        #expect(runShell("rm '\(path).rw/holders/'*") == 0)
        let error = errorThrown { try lock.checkedRelease() }
        #expect((error as? FileLockError)?.code == .lockLost, "\(String(describing: error))")
        #expect((error as? FileLockError)?.message.contains("at release") == true, "\(String(describing: error))")
        #expect(!lock.isLocked)
        // It left the log all the same: another writer gets in at once.
        let other = try SoftReadWriteLock(at: path, isSingleton: false)
        #expect(try other.tryAcquireWrite())
        other.release()
    }

    @Test func anUndisturbedHoldIsReleasedWithoutALoss() throws {
        let path = folder.file("kept.lock")
        let lock = try SoftReadWriteLock(at: path, isSingleton: false)
        try lock.acquireRead()
        let error = errorThrown { try lock.checkedRelease() }
        #expect(error == nil, "\(String(describing: error))")
        #expect(lock.currentHolders.readers.isEmpty)
    }
}
