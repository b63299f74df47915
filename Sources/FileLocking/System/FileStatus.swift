#if canImport(Glibc)
    import Glibc
#elseif canImport(Musl)
    import Musl
#elseif canImport(Darwin)
    import Darwin
#endif

/// File identity and the few attributes the locks look at.
struct FileStatus: Sendable, Equatable {
    var device: UInt64
    var inode: UInt64
    var mode: UInt32
    var linkCount: UInt64
    var owner: UInt32
    var size: Int64
    var modificationSeconds: Int64
    var modificationNanoseconds: Int32
    var changeSeconds: Int64
    var changeNanoseconds: Int32

    init(_ raw: CStat) {
        // dev_t is signed on Darwin: keep the bits.
        device = UInt64(truncatingIfNeeded: raw.st_dev)
        inode = UInt64(truncatingIfNeeded: raw.st_ino)
        mode = UInt32(truncatingIfNeeded: raw.st_mode)
        linkCount = UInt64(truncatingIfNeeded: raw.st_nlink)
        owner = UInt32(truncatingIfNeeded: raw.st_uid)
        size = Int64(raw.st_size)
        #if canImport(Darwin)
            modificationSeconds = Int64(raw.st_mtimespec.tv_sec)
            modificationNanoseconds = Int32(raw.st_mtimespec.tv_nsec)
            changeSeconds = Int64(raw.st_ctimespec.tv_sec)
            changeNanoseconds = Int32(raw.st_ctimespec.tv_nsec)
        #else
            modificationSeconds = Int64(raw.st_mtim.tv_sec)
            modificationNanoseconds = Int32(raw.st_mtim.tv_nsec)
            changeSeconds = Int64(raw.st_ctim.tv_sec)
            changeNanoseconds = Int32(raw.st_ctim.tv_nsec)
        #endif
    }

    var isDirectory: Bool { mode & UInt32(S_IFMT) == UInt32(S_IFDIR) }
    var isSymbolicLink: Bool { mode & UInt32(S_IFMT) == UInt32(S_IFLNK) }
    var isRegularFile: Bool { mode & UInt32(S_IFMT) == UInt32(S_IFREG) }
    var permissions: UInt32 { mode & 0o7777 }

    /// The device's major number, decoded as glibc's `major()` does.
    var deviceMajor: UInt64 {
        #if canImport(Darwin)
            (device >> 24) & 0xff
        #else
            ((device >> 8) & 0xfff) | ((device >> 32) & ~UInt64(0xfff))
        #endif
    }

    /// The device's minor number, decoded as glibc's `minor()` does.
    var deviceMinor: UInt64 {
        #if canImport(Darwin)
            device & 0xff_ffff
        #else
            (device & 0xff) | ((device >> 12) & ~UInt64(0xff))
        #endif
    }
}
