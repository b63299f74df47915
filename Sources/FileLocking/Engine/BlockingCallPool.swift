/// A small, bounded set of helper threads for the blocking file-system calls of `async` waits
/// (creating, reading and checking marker files), so that a stalled NFS server blocks these
/// threads and never the cooperative pool, whose few threads every task of the process shares.
///
/// Threads are started as work arrives, up to `maximumThreads`, and then kept; beyond the cap,
/// calls queue. If not even one thread can be started, a call runs where it was made.
final class BlockingCallPool: BackgroundThreads, @unchecked Sendable {
    static let shared = BlockingCallPool(maximumThreads: 8)

    typealias Job = @Sendable () -> Void

    /// One call: run, or (cancelled while still queued) told so instead.
    private final class Ticket: @unchecked Sendable {
        // Guarded by the pool's lock.
        var isCancelled = false
        var run: Job?
        var cancel: Job?
    }

    // Guarded by `lock`.
    private var queue: [Ticket] = []
    private var idle = 0
    private var workers: Set<ThreadHandle> = []

    /// A pool of its own (tests); the process shares `shared`.
    override init(maximumThreads: Int) {
        super.init(maximumThreads: maximumThreads)
    }

    /// A child forked without exec has none of the parent's threads (nor their calls); it starts
    /// its own.
    override func resetInChild() {
        queue = []
        idle = 0
        workers = []
    }

    /// Runs `body` on a helper thread and returns its result; the calling task is suspended
    /// meanwhile, holding no thread.
    ///
    /// - Throws: `CancellationError` when the task is cancelled while the call still waits for a
    ///   thread (the helpers may all be stuck on a stalled server); a call that has started runs
    ///   to its end.
    func run<Value: Sendable>(_ body: @escaping @Sendable () throws -> Value) async throws -> Value {
        let ticket = Ticket()
        return try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { continuation in
                let job: Job = { continuation.resume(with: Result { try body() }) }
                let cancel: Job = { continuation.resume(throwing: CancellationError()) }
                switch enqueue(ticket, job, cancel) {
                case .queued: break
                case .cancelled: cancel()
                case .noThread: job()
                }
            }
        } onCancel: {
            let cancel = lock.withLock { () -> Job? in
                ticket.isCancelled = true
                guard let index = queue.firstIndex(where: { $0 === ticket }) else { return nil }
                queue.remove(at: index)
                return ticket.cancel
            }
            cancel?()
        }
    }

    /// Runs `body` on a helper thread whatever happens to the calling task (for work that must be
    /// done, such as a release); where no helper thread can be started, runs it here.
    func runToTheEnd(_ body: @escaping @Sendable () -> Void) async {
        await withCheckedContinuation { continuation in
            let job: Job = {
                body()
                continuation.resume()
            }
            switch enqueue(Ticket(), job, {}) {
            case .queued: break
            case .cancelled, .noThread: job()
            }
        }
    }

    private enum Enqueued {
        case queued, cancelled, noThread
    }

    private func enqueue(_ ticket: Ticket, _ job: @escaping Job, _ cancel: @escaping Job) -> Enqueued {
        lock.withLock {
            if ticket.isCancelled { return .cancelled }
            ticket.run = job
            ticket.cancel = cancel
            // Every queued call needs a thread of its own (an idle one, or a new one up to the
            // cap): a call queued behind one that hangs on a stalled server would hang with it.
            if queue.count >= idle && !startThread({ [self] in work() }) && runningThreads == 0 {
                return .noThread
            }
            queue.append(ticket)
            lock.signal()
            return .queued
        }
    }

    private func work() {
        lock.withLock { _ = workers.insert(ThreadHandle.current) }
        while true {
            let job = lock.withLock { () -> Job? in
                idle += 1
                while queue.isEmpty { lock.wait(until: nil) }
                idle -= 1
                return queue.removeFirst().run
            }
            job?()
        }
    }

    /// How many helper threads exist (for tests).
    var threadCount: Int { lock.withLock { runningThreads } }

    /// Whether the calling thread is one of the pool's (for tests).
    var isCurrentThreadAHelper: Bool {
        let current = ThreadHandle.current
        return lock.withLock { workers.contains(current) }
    }
}
