// What filesystem a file is on: `statfs(2)`/`fstatfs(2)` (through CFileLockShims), and on Linux the mount's type as
// `/proc/self/mountinfo` names it. Part of the thin layer over the C library (see FileCalls.swift).

#if canImport(Glibc)
    import Glibc
#elseif canImport(Musl)
    import Musl
#elseif canImport(Darwin)
    import Darwin
#endif
import CFileLockShims

/// What `statfs(2)` says a filesystem is: Linux gives a type number (`f_type`, the magic numbers of
/// `linux/magic.h`), macOS a type name (`f_fstypename`).
struct FilesystemType: Sendable, Hashable {
    /// Linux: `f_type`, as 32 bits (every magic number fits; 32-bit systems report it signed).
    var magic: UInt32?
    /// macOS: `f_fstypename` ("apfs", "nfs", "smbfs", ...).
    var name: String?
}

extension System {
    /// `statfs(2)` of the filesystem that holds `path` (a last symbolic link is followed).
    static func filesystemType(of path: CPath) -> Result<FilesystemType, Errno> {
        path.withPointer { path in statfs(path: path, descriptor: -1) }
    }

    /// `fstatfs(2)`: the filesystem of an open file.
    static func filesystemType(ofDescriptor descriptor: Int32) -> Result<FilesystemType, Errno> {
        statfs(path: nil, descriptor: descriptor)
    }

    private static func statfs(path: UnsafePointer<CChar>?, descriptor: Int32) -> Result<FilesystemType, Errno> {
        var magic: UInt64 = 0
        var name = [CChar](repeating: 0, count: 32)
        let count = Int32(name.count)
        return retryingInterrupts { filelock_statfs(path, descriptor, &magic, &name, count) }.map { _ in
            #if canImport(Darwin)
                FilesystemType(magic: nil, name: String(decoding: name.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self))
            #else
                FilesystemType(magic: UInt32(truncatingIfNeeded: magic), name: nil)
            #endif
        }
    }

    /// The type of the mount an open file is on, as `/proc/self/mountinfo` names it (`nfs4`,
    /// `cifs`, `fuse.sshfs`: FUSE filesystems add their own name); `nil` where it cannot be read
    /// (not Linux, no `/proc`).
    static func mountType(ofDescriptor descriptor: Int32) -> String? {
        #if os(Linux)
            guard case .success(let bytes) = readWholeFile("/proc/self/fdinfo/\(descriptor)"),
                let mount = ProcLocks.FdInfo(String(decoding: bytes, as: UTF8.self)).mountID
            else { return nil }
            return mountType(ofMount: mount)
        #else
            return nil
        #endif
    }

    /// `mountType(ofDescriptor:)` for the file or folder at `path` (not following a last link).
    static func mountType(of path: CPath) -> String? {
        mountID(of: path).flatMap(mountType(ofMount:))
    }

    /// The file system type field of mount `mount`'s line in `/proc/self/mountinfo`
    /// (`36 35 98:0 /a /b rw - nfs4 server:/a rw,...`: the field after the lone `-`).
    private static func mountType(ofMount mount: Int) -> String? {
        #if os(Linux)
            guard case .success(let bytes) = readWholeFile("/proc/self/mountinfo") else { return nil }
            let prefix = Array("\(mount) ".utf8)
            for line in bytes.split(separator: UInt8(ascii: "\n")) where line.starts(with: prefix) {
                let fields = line.split(separator: UInt8(ascii: " "))
                guard let separator = fields.firstIndex(where: { $0.elementsEqual([UInt8(ascii: "-")]) }),
                    separator + 1 < fields.count
                else { return nil }
                return String(decoding: fields[separator + 1], as: UTF8.self)
            }
            return nil
        #else
            return nil
        #endif
    }
}
