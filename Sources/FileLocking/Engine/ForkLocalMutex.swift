import Synchronization

/// A value guarded by a mutex that a child forked without exec gets afresh, rather than
/// inheriting a mutex another thread of the parent held at the fork (a heartbeat thread takes
/// per-lock state at any moment; a Swift `Mutex` whose owner thread is gone traps on Linux, a
/// pthread mutex would hang).
///
/// Each fork generation has its own box; the first use in a child makes one from `initial` (the
/// parent's value is left behind, never touched: it may be half changed). A box of a past
/// generation is not freed in the child (another of the parent's threads may have been using it;
/// it is small).
final class ForkLocalMutex<Value>: @unchecked Sendable {
    private final class Box: @unchecked Sendable {
        let generation: Int
        let mutex: Mutex<Value>

        init(generation: Int, value: sending Value) {
            self.generation = generation
            mutex = Mutex(value)
        }
    }

    private let initial: @Sendable () -> sending Value
    /// The current generation's box, retained (an `Unmanaged` address).
    private let current: Atomic<UInt>

    init(_ initial: @escaping @Sendable () -> sending Value) {
        self.initial = initial
        let box = Box(generation: ForkGeneration.current, value: initial())
        current = Atomic(UInt(bitPattern: Unmanaged.passRetained(box).toOpaque()))
    }

    deinit {
        if let pointer = UnsafeRawPointer(bitPattern: current.load(ordering: .acquiring)) {
            Unmanaged<Box>.fromOpaque(pointer).release()
        }
    }

    private var box: Box {
        let generation = ForkGeneration.current
        while true {
            let address = current.load(ordering: .acquiring)
            let box = Unmanaged<Box>.fromOpaque(UnsafeRawPointer(bitPattern: address)!).takeUnretainedValue()
            if box.generation == generation { return box }
            let fresh = Unmanaged.passRetained(Box(generation: generation, value: initial()))
            let (exchanged, _) = current.compareExchange(
                expected: address, desired: UInt(bitPattern: fresh.toOpaque()), ordering: .acquiringAndReleasing)
            if !exchanged { fresh.release() }
        }
    }

    func withLock<Result>(_ body: (inout sending Value) throws -> sending Result) rethrows -> sending Result {
        try box.mutex.withLock(body)
    }
}
