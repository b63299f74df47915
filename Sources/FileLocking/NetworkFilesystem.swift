/// A filesystem whose kernel locks may not exclude every process that uses its files: a network
/// filesystem (NFS, SMB/CIFS, Ceph, 9p, Lustre, GPFS, AFS, ...) or a FUSE filesystem.
///
/// Kernel locks (`flock`, record locks) are kept by each machine's kernel. On a network filesystem
/// whether they reach the server, and so other hosts, depends on the filesystem, its version and
/// its mount options (NFS passes them on through its lock protocol; many others keep them on the
/// client). A FUSE filesystem that does not take part in locking (bindfs and sshfs do not) keeps
/// them in this kernel for its own mount only: they exclude neither processes on other hosts nor
/// processes on this host that reach the same files through another mount or the backing folder.
///
/// ``FileLock``, ``ReadWriteLock`` and ``ByteRangeLock`` tell which one their file is on
/// (`networkFilesystem`, `nil` on a local filesystem), and report it once through
/// ``FileLockWarnings/handler``. Across hosts lock with a marker file instead: ``SoftFileLock``
/// needs nothing but exclusive file creation, which network filesystems make atomic.
public struct NetworkFilesystem: Sendable, Hashable, CustomStringConvertible {
    /// The filesystem's type as `statfs(2)` tells it: on Linux the name of its type number (`nfs`,
    /// `smb`, `cifs`, `smb2`, `fuse`, `ceph`, `9p`, `lustre`, `gpfs`, `afs`, `coda`, `ncp`,
    /// `beegfs`, `panfs`), on macOS its type name (`nfs`, `smbfs`, `afpfs`, `webdav`, `macfuse`,
    /// `osxfuse`).
    public var name: String

    /// The mount's type where the system names it more precisely (Linux `/proc/self/mountinfo`:
    /// `nfs4`, `smb3`, `fuse.sshfs`, the name of the FUSE program); `nil` where it cannot be read.
    public var mountType: String?

    /// Whether this is a FUSE (user-space) filesystem: its kernel locks may not even exclude
    /// processes of this host that use another mount of the same files.
    public var isFUSE: Bool

    /// Creates a description, for tests and for code that learns of the filesystem otherwise.
    public init(name: String, mountType: String? = nil, isFUSE: Bool = false) {
        self.name = name
        self.mountType = mountType
        self.isFUSE = isFUSE
    }

    /// The most precise name: the mount type where known (`fuse.sshfs`), else `name`.
    public var description: String { mountType ?? name }
}

extension NetworkFilesystem {
    /// The network or FUSE filesystem that a `statfs` type names, or `nil` for a local one (and
    /// for types this library does not know, which it takes for local).
    init?(_ type: FilesystemType) {
        if let magic = type.magic {
            guard let known = Self.name(ofLinuxType: magic) else { return nil }
            self.init(name: known, isFUSE: magic == Self.fuseMagic)
        } else if let name = type.name {
            guard Self.isNetworkOrFUSE(darwinType: name) else { return nil }
            self.init(name: name, isFUSE: name.hasSuffix("fuse"))
        } else {
            return nil
        }
    }

    /// `FUSE_SUPER_MAGIC`: every FUSE filesystem (bindfs, sshfs, s3fs, gcsfuse...).
    static var fuseMagic: UInt32 { 0x6573_5546 }

    /// The name (as `stat -f` gives it) of a `statfs` type number of a filesystem shared between
    /// hosts or served by a user-space program (`linux/magic.h`, statfs(2), coreutils' table);
    /// `nil` for any other. (A `switch`, not a table: no global to make, also in a forked child.)
    static func name(ofLinuxType magic: UInt32) -> String? {
        switch magic {
        case 0x6969: "nfs"
        case 0x517B: "smb"
        case 0xFF53_4D42: "cifs"
        case 0xFE53_4D42: "smb2"
        case fuseMagic: "fuse"
        case 0x00C3_6400: "ceph"
        case 0x0102_1997: "9p"
        case 0x0BD0_0BD0: "lustre"
        case 0x4750_4653: "gpfs"
        case 0x5346_414F, 0x6B41_4653: "afs"  // OpenAFS, kAFS
        case 0x7375_7245: "coda"
        case 0x564C: "ncp"
        case 0x1983_0326: "beegfs"
        case 0xAAD7_AAEA: "panfs"
        default: nil
        }
    }

    /// Whether a macOS `f_fstypename` names a network or FUSE filesystem.
    static func isNetworkOrFUSE(darwinType name: String) -> Bool {
        switch name {
        case "nfs", "smbfs", "afpfs", "webdav", "cifs", "macfuse", "osxfuse": true
        default: false
        }
    }
}
