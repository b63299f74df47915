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

/// Every `BackgroundThreads` of the process, and the process's one `pthread_atfork` registration.
///
/// The prepare handler first finishes the library's lazily made globals (`LazyGlobals`), so that
/// none is inherited half made. The registry's own lock (a pthread mutex, which a child can make
/// anew) is then held until the fork is done, so that no helper is added half-way: one made on
/// another thread during the fork is either reset in the child or made after it.
enum ForkRegistry {
    private struct Entry {
        weak var helper: BackgroundThreads?
    }

    private static let lock = ConditionLock()

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

    /// The process's fork handlers: the generation's count and the helpers' resets. Registered
    /// once, by the first read of `ForkGeneration.current` (every lock operation reads it), and
    /// not by the registry's own lock: one made from the prepare handler below
    /// (`LazyGlobals.finish()`) could not register while the fork holds the C library's
    /// fork-handler lock.
    static func registerHandlers(countingForks advance: @escaping @convention(c) () -> Void) {
        ForkHandlers.register(prepare: { ForkRegistry.prepare() }, parent: { ForkRegistry.parent() }, child: advance)
    }

    fileprivate static func prepare() {
        // First, without the lock (making a helper adds it here): no global of the library is
        // left half made in the child.
        LazyGlobals.finish()
        ForkGeneration.countFork()
        OwnedLockFiles.prepareForFork()
        lock.lock()
        forking = entries.compactMap(\.helper)
        for helper in forking { helper.prepareForFork() }
    }

    fileprivate static func parent() {
        for helper in forking.reversed() { helper.continueInParent() }
        forking = []
        lock.unlock()
        OwnedLockFiles.continueInParent()
    }

    static func child() {
        for helper in forking { helper.continueInChild() }
        forking = []
        lock.reinitializeInChild()
        OwnedLockFiles.continueInChild()
    }
}

/// The open lock files through which the library holds (or takes) kernel locks: `flock` and
/// open-file-description locks belong to the open file, which a child forked without exec shares.
/// A child that kept its copies would keep its parent's locks alive after the parent died (even
/// `SIGKILL`ed), and a parent's lock taken later through a file opened before the fork would be
/// held by the child too. So in the child every such descriptor is pointed at `/dev/null` (its
/// number stays valid, so the parent's hold, which the child only forgets, closes a harmless
/// copy): a forked child holds none of its parent's locks, as with POSIX locks and Python's.
enum OwnedLockFiles {
    private static let lock = ConditionLock()
    // Guarded by `lock`.
    nonisolated(unsafe) private static var descriptors: Set<Int32> = []
    /// Opened before any fork (see `LazyGlobals`): the child's handler may only make system calls.
    static let null: Int32 = {
        if case .success(let descriptor) = System.open(CPath("/dev/null"), flags: OpenFlags.readOnly, mode: 0) { return descriptor }
        return -1
    }()

    static func add(_ descriptor: Int32) {
        lock.withLock { _ = descriptors.insert(descriptor) }
    }

    /// Closes a lock file opened through `openRegularLockFile`.
    static func close(_ descriptor: Int32) {
        lock.withLock { _ = descriptors.remove(descriptor) }
        System.close(descriptor)
    }

    fileprivate static func prepareForFork() { lock.lock() }

    fileprivate static func continueInParent() { lock.unlock() }

    fileprivate static func continueInChild() {
        if null >= 0 {
            for descriptor in descriptors { System.replaceWithCloseOnExec(descriptor, by: null) }
        }
        descriptors = []
        lock.reinitializeInChild()
    }
}
