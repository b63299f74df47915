// The waiting calls of the thin layer over the C library: poll(2), eventfd and inotify, for
// the folder watch.

#if canImport(Glibc)
    import Glibc
#elseif canImport(Musl)
    import Musl
#elseif canImport(Darwin)
    import Darwin
#endif
import CFileLockShims

extension System {
    /// `read(2)` of whatever is available into `buffer` (a non-blocking descriptor: `EAGAIN` when
    /// nothing is).
    static func readSome(_ descriptor: Int32, into buffer: UnsafeMutableRawPointer, capacity: Int) -> Result<Int, Errno> {
        retryingInterrupts { Glibc_read(descriptor, buffer, capacity) }
    }

    /// Blocks in `poll(2)` until `descriptor` is readable (or reports an error or hang-up).
    static func waitUntilReadable(_ descriptor: Int32) {
        var poller = pollfd(fd: descriptor, events: Int16(POLLIN), revents: 0)
        _ = retryingInterrupts { poll(&poller, 1, -1) }
    }

    /// `poll(2)` for two descriptors, at most `duration`; whether each is readable (an
    /// interrupted or timed-out poll: neither).
    static func pollReadable(_ first: Int32, _ second: Int32, upTo duration: Duration) -> (Bool, Bool) {
        let nanoseconds = max(0, duration.totalNanoseconds)
        let milliseconds = Int32(clamping: nanoseconds / 1_000_000 + (nanoseconds % 1_000_000 > 0 ? 1 : 0))
        var descriptors = [
            pollfd(fd: first, events: Int16(POLLIN), revents: 0), pollfd(fd: second, events: Int16(POLLIN), revents: 0),
        ]
        guard poll(&descriptors, 2, milliseconds) > 0 else { return (false, false) }
        return (descriptors[0].revents != 0, descriptors[1].revents != 0)
    }

    #if os(Linux)
        /// `eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)`.
        static func eventDescriptor() -> Result<Int32, Errno> {
            once { filelock_eventfd() }
        }

        /// Makes an eventfd readable (adds 1).
        static func signalEventDescriptor(_ descriptor: Int32) {
            var one: UInt64 = 1
            _ = retryingInterrupts { Glibc_write(descriptor, &one, 8) }
        }

        /// Empties an eventfd (non-blocking: nothing to read is fine).
        static func drainEventDescriptor(_ descriptor: Int32) {
            var value: UInt64 = 0
            _ = retryingInterrupts { Glibc_read(descriptor, &value, 8) }
        }

        /// `inotify_init1(IN_CLOEXEC | IN_NONBLOCK)`.
        static func inotifyInit() -> Result<Int32, Errno> {
            once { inotify_init1(Int32(IN_CLOEXEC | IN_NONBLOCK)) }
        }

        /// `inotify_add_watch(2)`: the watch descriptor, the same one for every call on one folder.
        static func inotifyAddWatch(_ descriptor: Int32, _ path: CPath, mask: UInt32) -> Result<Int32, Errno> {
            path.withPointer { pointer in retryingInterrupts { inotify_add_watch(descriptor, pointer, mask) } }
        }

        /// `inotify_rm_watch(2)`.
        static func inotifyRemoveWatch(_ descriptor: Int32, _ watchDescriptor: Int32) -> Result<Void, Errno> {
            retryingInterrupts { inotify_rm_watch(descriptor, watchDescriptor) }.map { _ in () }
        }
    #endif

}
