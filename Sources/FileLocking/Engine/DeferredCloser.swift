/// Closes descriptors on a helper thread, for descriptors whose `close` can take milliseconds:
/// closing an inotify instance waits for a kernel grace period (5-15 ms measured here), which
/// would otherwise delay a waiter that has just got its lock.
final class DeferredCloser: BackgroundThreads, @unchecked Sendable {
    static let shared = DeferredCloser()

    // Guarded by `lock`.
    private var pending: [Int32] = []

    private init() { super.init(maximumThreads: 1) }

    /// A child forked without exec has no helper thread: it closes its copies itself.
    override func resetInChild() {
        for descriptor in pending { System.close(descriptor) }
        pending = []
    }

    /// At most this many closes wait; beyond, the caller closes (so that a burst of watches does
    /// not hold the user's few inotify instances).
    private static let maximumPending = 8

    /// Closes `descriptor` soon, on the helper thread (at once, here, if it cannot be started or
    /// is behind).
    func close(_ descriptor: Int32) {
        let isQueued = lock.withLock { () -> Bool in
            guard pending.count < Self.maximumPending else { return false }
            if runningThreads == 0 {
                guard startThread({ [self] in run() }) else { return false }
            }
            pending.append(descriptor)
            lock.signal()
            return true
        }
        if !isQueued { System.close(descriptor) }
    }

    private func run() {
        while true {
            let batch = lock.withLock { () -> [Int32] in
                while pending.isEmpty { lock.wait(until: nil) }
                defer { pending = [] }
                return pending
            }
            for descriptor in batch { System.close(descriptor) }
        }
    }
}
