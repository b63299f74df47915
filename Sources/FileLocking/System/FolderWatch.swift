#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif
import Dispatch
import Synchronization

/// Wakes a marker-file waiter when the marker's name in the lock's folder is removed or renamed
/// (Linux inotify); changes to other names (other locks' markers, the helper files of a break)
/// do not wake it. Local filesystems only: on NFS another host's changes raise no event, so waiters
/// still poll, with the watch only shortening the wait.
///
/// A thread waits with `wait(upTo:)` (a `poll` on the inotify descriptor); a task waits with
/// `changed(within:)`, which holds no thread: a dispatch read source on the descriptor resumes it.
final class FolderWatch: Sendable {
    // Used by one waiter at a time (the acquisition that created it); `asyncState` is shared
    // with the dispatch handlers.
    private let descriptor: Int32
    /// The name whose removal or replacement wakes the waiter; `nil`: any name.
    private let name: [UInt8]?
    private let asyncState = Mutex(AsyncState())

    private struct AsyncState {
        /// Made by the first async wait; from then on the read source owns (and closes) the
        /// descriptor.
        var sources: (read: any DispatchSourceRead, timer: any DispatchSourceTimer)?
        /// The waiting task's wake-up, while one waits.
        var waiter: Wakeup?
        /// A change seen while no task waited: the next wait returns at once.
        var isChangePending = false
    }

    /// Serialises the sources' handlers; they only drain the descriptor and wake a task.
    private static let queue = DispatchQueue(label: "FileLocking.FolderWatch")

    /// `nil` where inotify is unavailable (macOS, exhausted watches); callers then just sleep.
    init?(folder: CPath, name: [UInt8]? = nil) {
        self.name = name
        #if os(Linux)
            let descriptor = inotify_init1(Int32(IN_CLOEXEC | IN_NONBLOCK))
            guard descriptor >= 0 else { return nil }
            guard folder.withPointer({ inotify_add_watch(descriptor, $0, UInt32(IN_DELETE | IN_MOVED_FROM | IN_MOVED_TO)) }) >= 0 else {
                System.close(descriptor)
                return nil
            }
            self.descriptor = descriptor
        #else
            return nil
        #endif
    }

    deinit {
        // A read source must be cancelled before its descriptor is closed: its cancel handler
        // closes it. Either way the close happens on another thread: closing an inotify
        // instance waits for a kernel grace period, milliseconds the new lock holder should not
        // spend.
        if let sources = asyncState.withLock({ $0.sources }) {
            sources.timer.cancel()
            sources.read.cancel()
        } else {
            DeferredCloser.shared.close(descriptor)
        }
    }

    /// Sleeps until a change in the folder or `duration`, whichever comes first.
    func wait(upTo duration: Duration) {
        let deadline = MonotonicInstant.now.advanced(by: duration)
        while true {
            let nanoseconds = deadline.duration(since: MonotonicInstant.now).totalNanoseconds
            guard nanoseconds > 0 else { return }
            let milliseconds = Int32(clamping: nanoseconds / 1_000_000 + (nanoseconds % 1_000_000 > 0 ? 1 : 0))
            var poller = pollfd(fd: descriptor, events: Int16(POLLIN), revents: 0)
            guard poll(&poller, 1, milliseconds) > 0 else { return }
            if drain() { return }
        }
    }

    /// Suspends the task until a change in the folder or `duration`, whichever comes first,
    /// without occupying a thread.
    ///
    /// - Throws: `CancellationError` when the task is cancelled (at once, not at the end).
    func changed(within duration: Duration) async throws {
        try Task.checkCancellation()
        let wakeup = Wakeup()
        let nanoseconds = Int(clamping: duration.totalNanoseconds)
        let isPending = asyncState.withLock { state -> Bool in
            if state.isChangePending {
                state.isChangePending = false
                return true
            }
            state.waiter = wakeup
            if state.sources == nil {
                let read = DispatchSource.makeReadSource(fileDescriptor: descriptor, queue: Self.queue)
                let descriptor = descriptor
                read.setEventHandler { [weak self] in
                    guard let self, self.drain() else { return }
                    self.wake(becauseOfChange: true)
                }
                read.setCancelHandler { DeferredCloser.shared.close(descriptor) }
                let timer = DispatchSource.makeTimerSource(queue: Self.queue)
                timer.setEventHandler { [weak self] in self?.wake(becauseOfChange: false) }
                timer.schedule(deadline: .now() + .nanoseconds(nanoseconds))
                read.resume()
                timer.resume()
                state.sources = (read, timer)
            } else {
                // One timer per watch, moved to this pause's end: a pause that ends early
                // leaves nothing behind.
                state.sources?.timer.schedule(deadline: .now() + .nanoseconds(nanoseconds))
            }
            return false
        }
        if isPending { return }
        await withTaskCancellationHandler {
            await wakeup.wait()
        } onCancel: {
            wakeup.fire()
        }
        asyncState.withLock { state in
            if state.waiter === wakeup { state.waiter = nil }
        }
        try Task.checkCancellation()
    }

    /// Whether a task is suspended in `changed(within:)` now (for tests).
    var hasWaitingTask: Bool { asyncState.withLock { $0.waiter != nil } }

    /// A change wakes the waiting task, or is remembered for the next wait; the timer only wakes
    /// the waiting task (a late tick at worst ends the next pause early: one extra try).
    private func wake(becauseOfChange: Bool) {
        let waiter = asyncState.withLock { state -> Wakeup? in
            guard let waiter = state.waiter else {
                if becauseOfChange { state.isChangePending = true }
                return nil
            }
            state.waiter = nil
            return waiter
        }
        waiter?.fire()
    }

    /// Reads every pending event; `true` when one concerns the watched name (or events were lost).
    private func drain() -> Bool {
        var buffer = [UInt8](repeating: 0, count: 4096)
        var isRelevant = false
        while true {
            let count = read(descriptor, &buffer, buffer.count)
            guard count > 0 else { return isRelevant }
            if name == nil { isRelevant = true }
            // struct inotify_event: wd, mask, cookie, len (4 bytes each), then len bytes of name.
            var offset = 0
            while !isRelevant && offset + 16 <= count {
                func field(_ at: Int) -> UInt32 {
                    buffer.withUnsafeBytes { $0.loadUnaligned(fromByteOffset: at, as: UInt32.self) }  // native order
                }
                let mask = field(offset + 4)
                let length = Int(field(offset + 12))
                let start = offset + 16
                let end = min(start + length, count)
                let eventName = buffer[start..<end].prefix { $0 != 0 }
                if mask & 0x4000 != 0 ||  // IN_Q_OVERFLOW
                    eventName.elementsEqual(name ?? []) { isRelevant = true }
                offset = start + length
            }
        }
    }
}

/// A one-time wake-up of one task, from whichever comes first: a folder change, the end of the
/// pause, or cancellation. Firing before the task suspends makes it not suspend at all.
private final class Wakeup: Sendable {
    private struct State {
        var continuation: CheckedContinuation<Void, Never>?
        var isFired = false
    }

    private let state = Mutex(State())

    func wait() async {
        await withCheckedContinuation { continuation in
            let resumeNow = state.withLock { state -> Bool in
                if state.isFired { return true }
                state.continuation = continuation
                return false
            }
            if resumeNow { continuation.resume() }
        }
    }

    func fire() {
        let continuation = state.withLock { state -> CheckedContinuation<Void, Never>? in
            guard !state.isFired else { return nil }
            state.isFired = true
            defer { state.continuation = nil }
            return state.continuation
        }
        continuation?.resume()
    }
}
