/// The library's lazily made globals (`static let`), finished before every fork.
///
/// A global is made by its first use, under a once-guard that other threads wait on. A child
/// forked without exec while another thread of the parent is making one inherits the guard half
/// way, with no thread left to finish it: the child's first use of that global waits forever
/// (seen in forked children as a hang in `swift_once` on `WaitInterrupter.shared` and
/// `InotifyHub.shared`, whose making waits for the registry lock that the fork holds). So the fork's
/// prepare handler first uses each of them (waiting, in the parent, for any being made), before
/// it takes the locks it holds across the fork.
///
/// A global added to the library that a forked child may use belongs here. None of these may
/// register fork handlers as it is made (`ForkGeneration`'s and `ForkRegistry`'s own are made
/// before the handlers exist): the prepare handler runs with the C library's fork-handler lock
/// held, so waiting for a global that waits for that lock would deadlock the parent.
enum LazyGlobals {
    static func finish() {
        _ = ForkGeneration.forks
        _ = OwnedLockFiles.null
        _ = WaitInterrupter.shared
        _ = KernelWaitThreads.shared
        _ = BlockingCallPool.shared
        _ = Heartbeats.shared
        _ = BridgeExecutor.shared
        _ = InotifyHub.shared
        _ = OwnRecordCache.shared
        _ = InterruptSignal.isAvailable
        _ = ProcessIdentity.hostName
        #if os(Linux)
            _ = ProcessIdentity.bootID
            _ = ProcessIdentity.startTimesAreComparable
        #endif
        HelperName.finishGlobals()
        QuickRandom.finishGlobals()
        PathRegistry.finishGlobals()
        ReadWritePrimitive.finishGlobals()
        FileLockWarnings.finishGlobals()
        MountTypes.finishGlobals()
    }
}
