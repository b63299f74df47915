#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

/// Wakes a marker-file waiter when a name in the lock's folder is removed or renamed (Linux
/// inotify). Local filesystems only: on NFS another host's changes raise no event, so waiters
/// still poll, with the watch only shortening the wait.
final class FolderWatch: @unchecked Sendable {
    // Used by one waiting thread at a time (the acquisition that created it).
    private let descriptor: Int32

    /// `nil` where inotify is unavailable (macOS, exhausted watches); callers then just sleep.
    init?(folder: String) {
        #if os(Linux)
            let descriptor = inotify_init1(Int32(IN_CLOEXEC | IN_NONBLOCK))
            guard descriptor >= 0 else { return nil }
            guard inotify_add_watch(descriptor, folder, UInt32(IN_DELETE | IN_MOVED_FROM | IN_MOVED_TO)) >= 0 else {
                System.close(descriptor)
                return nil
            }
            self.descriptor = descriptor
        #else
            return nil
        #endif
    }

    deinit { System.close(descriptor) }

    /// Sleeps until a change in the folder or `duration`, whichever comes first.
    func wait(upTo duration: Duration) {
        let milliseconds = Int32(clamping: (duration.totalNanoseconds + 999_999) / 1_000_000)
        var poller = pollfd(fd: descriptor, events: Int16(POLLIN), revents: 0)
        if poll(&poller, 1, milliseconds) > 0 {
            var buffer = [UInt8](repeating: 0, count: 4096)
            while read(descriptor, &buffer, buffer.count) > 0 {}
        }
    }
}
