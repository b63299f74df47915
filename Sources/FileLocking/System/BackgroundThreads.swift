/// What every helper of the engine that runs threads of its own shares (`WaitInterrupter`,
/// `BlockingCallPool`, `KernelWaitThreads`, `BridgeExecutor`): one condition lock guarding the
/// helper's state, threads started lazily as work arrives (up to a cap), and the reset of a child
/// forked without exec.
///
/// A forked child has none of its parent's threads and may inherit the lock taken by one of
/// them: so the lock is held across `fork` (taken in the prepare handler, released in the parent)
/// and in the child made anew, the thread count set to zero and the subclass's state reset by
/// `resetInChild()`, with the lock held. Subclasses guard their own state with `lock` too.
class BackgroundThreads: @unchecked Sendable {
    /// Guards the thread count and the subclass's state.
    let lock = ConditionLock()
    /// At most this many threads run at once.
    let maximumThreads: Int
    // Guarded by `lock`.
    private var threads = 0

    init(maximumThreads: Int) {
        self.maximumThreads = maximumThreads
        ForkRegistry.add(self)
    }

    /// How many threads have been started (and not reset by a fork); read under `lock`.
    var runningThreads: Int { threads }

    /// Starts one more thread running `body`, unless `maximumThreads` run already or the system
    /// refuses (then `false`). Call with `lock` held.
    func startThread(_ body: @escaping @Sendable () -> Void) -> Bool {
        guard threads < maximumThreads, case .success = Threads.spawnDetached(body) else { return false }
        threads += 1
        return true
    }

    /// Called by a thread that ends by itself (its body returns right after), with `lock` held,
    /// so that a new one may be started in its place.
    func threadEnded() {
        threads -= 1
    }

    /// Resets the subclass's state in a child forked without exec (no thread of the parent runs
    /// there); called with `lock` held, after the thread count is set to zero.
    func resetInChild() {}

    fileprivate func prepareForFork() { lock.lock() }

    fileprivate func continueInParent() { lock.unlock() }

    fileprivate func continueInChild() {
        threads = 0
        resetInChild()
        lock.reinitializeInChild()
    }
}

/// Every `BackgroundThreads` of the process, for one `pthread_atfork` registration.
///
/// The registry's own lock (a pthread mutex, which a child can make anew) is held from the
/// prepare handler until the fork is done, so that no helper is added half-way: one made on
/// another thread during the fork is either reset in the child or made after it.
private enum ForkRegistry {
    private struct Entry {
        weak var helper: BackgroundThreads?
    }

    private static let lock: ConditionLock = {
        ForkHandlers.register(
            prepare: { ForkRegistry.prepare() }, parent: { ForkRegistry.parent() }, child: { ForkRegistry.child() })
        return ConditionLock()
    }()

    // Guarded by `lock`.
    nonisolated(unsafe) private static var entries: [Entry] = []
    /// The helpers whose locks the fork in progress holds.
    nonisolated(unsafe) private static var forking: [BackgroundThreads] = []

    static func add(_ helper: BackgroundThreads) {
        lock.withLock {
            entries.removeAll { $0.helper == nil }
            entries.append(Entry(helper: helper))
        }
    }

    private static func prepare() {
        lock.lock()
        forking = entries.compactMap(\.helper)
        for helper in forking { helper.prepareForFork() }
    }

    private static func parent() {
        for helper in forking.reversed() { helper.continueInParent() }
        forking = []
        lock.unlock()
    }

    private static func child() {
        for helper in forking { helper.continueInChild() }
        forking = []
        lock.reinitializeInChild()
    }
}
