#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif
import Testing

/// Runs each test of a suite on threads of its own instead of Swift's cooperative pool.
///
/// Swift Testing runs a synchronous test function on a thread of the cooperative pool, which has
/// one thread per core: on a 2-core machine two tests that block (waiting for a child process's
/// line, a thread's result, a kernel lock) stall every `async` test of the run, whose bounded
/// waits then fail. A suite of blocking multi-process tests gets `.ownThreads`: its test bodies
/// (and the non-isolated `async` code they run) run on `TestThreads`, a task executor that starts
/// a thread for every job no idle one takes, so they never occupy the pool. Suites that test the
/// pool itself (`async` waits must leave it free) keep the default.
struct OwnThreadsTrait: SuiteTrait, TestTrait, TestScoping {
    var isRecursive: Bool { true }

    func scopeProvider(for test: Test, testCase: Test.Case?) -> Self? {
        // Each test case on its own: the preference wraps the case's body.
        testCase == nil ? nil : self
    }

    func provideScope(
        for test: Test, testCase: Test.Case?, performing function: @Sendable () async throws -> Void
    ) async throws {
        try await withTaskExecutorPreference(TestThreads.shared) { try await function() }
    }
}

extension Trait where Self == OwnThreadsTrait {
    /// Run the tests on threads of their own, not on the cooperative pool (see `OwnThreadsTrait`).
    static var ownThreads: Self { Self() }
}

/// A task executor with up to `maximumThreads` threads: an idle thread takes the next job, a job
/// that finds none starts a new thread while there are fewer than that, and waits for one
/// otherwise. The cap keeps the run's parallelism near what the pool gave (freed from the pool,
/// the runner would start every multi-process test at once and overload a small machine).
/// Threads stay for the next job.
final class TestThreads: TaskExecutor, @unchecked Sendable {
    static let shared = TestThreads()
    static let maximumThreads = 4

    private let mutex = UnsafeMutablePointer<pthread_mutex_t>.allocate(capacity: 1)
    private let condition = UnsafeMutablePointer<pthread_cond_t>.allocate(capacity: 1)
    // Guarded by `mutex`.
    private var jobs: [UnownedJob] = []
    private var idleThreads = 0
    private var threads = 0

    private init() {
        pthread_mutex_init(mutex, nil)
        pthread_cond_init(condition, nil)
    }

    func enqueue(_ job: consuming ExecutorJob) {
        let job = UnownedJob(job)
        pthread_mutex_lock(mutex)
        jobs.append(job)
        let needsThread = idleThreads < jobs.count && threads < Self.maximumThreads
        if needsThread { threads += 1 } else { pthread_cond_signal(condition) }
        pthread_mutex_unlock(mutex)
        if needsThread { startThread { [self] in run() } }
    }

    /// Marks the executor's threads (a non-nil thread-specific value).
    private static let marker: pthread_key_t = {
        var key = pthread_key_t()
        pthread_key_create(&key, nil)
        return key
    }()

    /// Whether the calling thread is one of the executor's.
    static var isCurrentThreadOwn: Bool { pthread_getspecific(marker) != nil }

    private func run() {
        pthread_setspecific(Self.marker, UnsafeRawPointer(bitPattern: 1))
        while true {
            pthread_mutex_lock(mutex)
            idleThreads += 1
            while jobs.isEmpty { pthread_cond_wait(condition, mutex) }
            idleThreads -= 1
            let job = jobs.removeFirst()
            pthread_mutex_unlock(mutex)
            job.runSynchronously(on: asUnownedTaskExecutor())
        }
    }
}

@Suite("Tests on threads of their own", .ownThreads)
struct OwnThreadsTests {
    @Test func aSynchronousTestRunsOnAThreadOfItsOwn() {
        #expect(TestThreads.isCurrentThreadOwn)
    }

    @Test func anAsyncTestRunsThereToo() async {
        await Task.yield()
        #expect(TestThreads.isCurrentThreadOwn)
    }
}
