/// A small, bounded set of helper threads for the blocking file-system calls of `async` waits
/// (creating, reading and checking marker files), so that a stalled NFS server blocks these
/// threads and never the cooperative pool, whose few threads every task of the process shares.
///
/// Threads are started as work arrives, up to `maximumThreads`, and then kept; beyond the cap,
/// calls queue. If not even one thread can be started, a call runs where it was made.
final class BlockingCallPool: @unchecked Sendable {
    static let shared = BlockingCallPool(maximumThreads: 8)

    typealias Job = @Sendable () -> Void

    let maximumThreads: Int
    // Guarded by `lock`.
    private let lock = ConditionLock()
    private var queue: [Job] = []
    private var threads = 0
    private var idle = 0
    private var workers: Set<ThreadHandle> = []

    init(maximumThreads: Int) {
        self.maximumThreads = maximumThreads
        // A child forked without exec has none of the parent's threads; it starts its own.
        ForkHandlers.register(
            prepare: { BlockingCallPool.shared.lock.lock() },
            parent: { BlockingCallPool.shared.lock.unlock() },
            child: { BlockingCallPool.shared.resetInChild() })
    }

    private func resetInChild() {
        queue = []
        threads = 0
        idle = 0
        workers = []
        lock.reinitializeInChild()
    }

    /// Runs `body` on a helper thread and returns its result; the calling task is suspended
    /// meanwhile, holding no thread.
    func run<Value: Sendable>(_ body: @escaping @Sendable () throws -> Value) async throws -> Value {
        try await withCheckedThrowingContinuation { continuation in
            let job: Job = { continuation.resume(with: Result { try body() }) }
            if !enqueue(job) { job() }
        }
    }

    /// `false` when no helper thread exists or can be started.
    private func enqueue(_ job: @escaping Job) -> Bool {
        lock.withLock {
            // Every queued call needs a thread of its own (an idle one, or a new one up to the
            // cap): a call queued behind one that hangs on a stalled server would hang with it.
            if queue.count >= idle && threads < maximumThreads {
                if case .success = Threads.spawnDetached({ [self] in work() }) {
                    threads += 1
                } else if threads == 0 {
                    return false
                }
            }
            queue.append(job)
            lock.signal()
            return true
        }
    }

    private func work() {
        lock.withLock { _ = workers.insert(ThreadHandle.current) }
        while true {
            let job = lock.withLock { () -> Job in
                idle += 1
                while queue.isEmpty { lock.wait(until: nil) }
                idle -= 1
                return queue.removeFirst()
            }
            job()
        }
    }

    /// How many helper threads exist (for tests).
    var threadCount: Int { lock.withLock { threads } }

    /// Whether the calling thread is one of the pool's (for tests).
    var isCurrentThreadAHelper: Bool {
        let current = ThreadHandle.current
        return lock.withLock { workers.contains(current) }
    }
}
