import Synchronization

/// Whether a kernel lock's file is on a network or FUSE filesystem, found once per lock object,
/// and the one report of it (``FileLockWarnings``).
///
/// The first acquisition asks `fstatfs` of the file it opened and reports what it found; every
/// later one pays a single atomic load. Before any acquisition, ``filesystem(ofFolder:)`` asks
/// `statfs` of the lock file's folder instead (of the nearest existing folder above it when it is
/// missing: the missing folders are made on that filesystem). Shared by the copies of a primitive.
final class NetworkFilesystemCheck: Sendable {
    /// "FileLock", "ReadWriteLock" or "ByteRangeLock", for the report.
    let lockKind: String
    private let isUseNoted = Atomic<Bool>(false)
    private let found = Mutex<Found>(.unknown)

    private enum Found {
        case unknown
        case local
        case network(NetworkFilesystem)
    }

    init(lockKind: String) {
        self.lockKind = lockKind
    }

    /// The network or FUSE filesystem of the lock file, found through its folder when no
    /// acquisition has looked yet; `nil` on a local filesystem (or when it cannot be told).
    func filesystem(ofFolder folder: CPath) -> NetworkFilesystem? {
        switch found.withLock({ $0 }) {
        case .local: return nil
        case .network(let filesystem): return filesystem
        case .unknown: break
        }
        var current = folder.pathBytes
        while true {
            let path = CPath(bytes: current)
            switch System.filesystemType(of: path) {
            case .success(let type):
                var filesystem = NetworkFilesystem(type)
                if filesystem != nil, case .success(let status) = System.lstat(path) {
                    filesystem?.mountType = MountTypes.type(ofDevice: status.device) { System.mountType(of: path) }
                }
                store(filesystem)
                return filesystem
            case .failure(.noSuchFile) where current.count > 1:
                current = CPath.parent(of: current)
            case .failure:
                return nil
            }
        }
    }

    /// The network or FUSE filesystem of an open lock file (`fstatfs`), kept once known; `nil` on a
    /// local filesystem (or when it cannot be told).
    func filesystem(ofDescriptor descriptor: Int32) -> NetworkFilesystem? {
        switch found.withLock({ $0 }) {
        case .local: return nil
        case .network(let filesystem): return filesystem
        case .unknown: return look(at: descriptor, device: nil)?.filesystem
        }
    }

    /// At every acquisition, with the lock file it opened: the first one per lock object looks at
    /// the file's filesystem (one `fstatfs`) and reports a network or FUSE one; later ones return
    /// after one atomic load. `device`: the file's device when known (else `fstat` is asked).
    @inline(__always)
    func noteUse(of descriptor: Int32, device: UInt64?, path: String) {
        guard !isUseNoted.load(ordering: .relaxed) else { return }
        noteFirstUse(of: descriptor, device: device, path: path)
    }

    private func noteFirstUse(of descriptor: Int32, device: UInt64?, path: String) {
        guard isUseNoted.compareExchange(expected: false, desired: true, ordering: .relaxed).exchanged else { return }
        let filesystem: NetworkFilesystem
        let fileDevice: UInt64
        switch found.withLock({ $0 }) {
        case .local:
            return
        case .network(let known):
            // Known from the folder already: no second `statfs`.
            guard let knownDevice = device ?? (try? System.fstat(descriptor).get())?.device else { return }
            (filesystem, fileDevice) = (known, knownDevice)
        case .unknown:
            guard let seen = look(at: descriptor, device: device), let network = seen.filesystem, let seenDevice = seen.device
            else { return }
            (filesystem, fileDevice) = (network, seenDevice)
        }
        FileLockWarnings.deliver(FileLockWarning.kernelLock(lockKind, path: path, on: filesystem), onceForFilesystem: fileDevice)
    }

    /// Asks `fstatfs` (and for a network filesystem the mount's type) and keeps the answer; `nil`
    /// when `fstatfs` fails. Returns the file's device too, for a network filesystem.
    private func look(at descriptor: Int32, device: UInt64?) -> (filesystem: NetworkFilesystem?, device: UInt64?)? {
        guard case .success(let type) = System.filesystemType(ofDescriptor: descriptor) else { return nil }
        guard var filesystem = NetworkFilesystem(type) else {
            store(nil)
            return (nil, nil)
        }
        let device: UInt64? = device ?? (try? System.fstat(descriptor).get())?.device
        if let device {
            filesystem.mountType = MountTypes.type(ofDevice: device) { System.mountType(ofDescriptor: descriptor) }
        }
        store(filesystem)
        return (filesystem, device)
    }

    private func store(_ filesystem: NetworkFilesystem?) {
        found.withLock { $0 = filesystem.map { .network($0) } ?? .local }
    }
}

/// The mount types (`/proc/self/mountinfo`) of the network filesystems seen in this process, by
/// device, so that `mountinfo` is read once per mount rather than once per lock object.
enum MountTypes {
    private static let types = Mutex<[UInt64: String]>([:])

    /// Makes the globals (see `LazyGlobals`).
    static func finishGlobals() {
        types.withLock { _ in }
    }

    static func type(ofDevice device: UInt64, lookUp: () -> String?) -> String? {
        if let known = types.withLock({ $0[device] }) { return known }
        guard let found = lookUp() else { return nil }
        types.withLock { $0[device] = found }
        return found
    }
}
