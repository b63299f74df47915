#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif
import Dispatch
import Synchronization

/// Wakes a marker-file waiter when the marker's name in the lock's folder is removed or renamed
/// away (Linux inotify); changes to other names (other locks' markers, the helper files of a break)
/// do not wake it. Local filesystems only: on NFS another host's changes raise no event, so waiters
/// still poll, with the watch only shortening the wait.
///
/// Every watch of the process is served by one inotify instance (`InotifyHub`): making a watch
/// adds (or shares) the kernel watch on its folder, dropping the last one on a folder removes it.
/// A change is remembered from the moment `init` returns until a wait consumes it, so a caller
/// that makes the watch, then looks at the folder, then waits misses no change in between.
///
/// A thread waits with `wait(upTo:)`; a task waits with `changed(within:)`, which holds no thread.
final class FolderWatch: @unchecked Sendable {
    private let registration: InotifyHub.Registration
    // Guarded by `signal`.
    private let signal = ConditionLock()
    private var isChangePending = false
    /// The waiting task's wake-up, while one waits.
    private var waiter: Wakeup?
    /// Ends a task's pause; made by the first async wait, moved to each pause's end.
    private var timer: (any DispatchSourceTimer)?
    /// A waiting thread polls the instance itself (see `wait(upTo:)`), and this eventfd, which
    /// whoever passes it a change writes while it polls. Made by the first such wait.
    private var wakeDescriptor: Int32 = -1
    private var isPolling = false

    /// Serialises the timers' handlers; they only wake a task.
    private static let queue = DispatchQueue(label: "FileLocking.FolderWatch")

    /// `nil` where inotify is unavailable (macOS, exhausted watches or instances, no thread for
    /// the reader); callers then just sleep.
    ///
    /// - Parameter name: The name whose removal or replacement wakes the waiter; `nil`: any name.
    init?(folder: CPath, name: [UInt8]? = nil) {
        // The hub keeps only a weak reference: dropping the watch unregisters it (deinit). Events
        // before `attach` are not passed on: they come before the caller's next look anyway.
        let reference = WeakWatch(name: name)
        guard let registration = InotifyHub.shared.register(folder: folder, reference) else { return nil }
        self.registration = registration
        reference.attach(self)
    }

    deinit {
        InotifyHub.shared.unregister(registration)
        timer?.cancel()
        if wakeDescriptor >= 0 { System.close(wakeDescriptor) }
    }

    /// Sleeps until a change in the folder or `duration`, whichever comes first; `true` when a
    /// change (seen since the last wait) ended it.
    ///
    /// The thread polls the shared instance itself and reads what it finds (passing on what
    /// concerns others), so that a release wakes it directly, not through the reader thread (a
    /// second wake-up, tens of microseconds on a virtual machine). Whoever else reads its event
    /// first (the reader, another waiting thread) writes its eventfd; so nothing is missed.
    @discardableResult
    func wait(upTo duration: Duration) -> Bool {
        let deadline = MonotonicInstant.now.advanced(by: duration)
        #if os(Linux)
            if registration.generation == ForkGeneration.current {
                if wakeDescriptor < 0, case .success(let made) = System.eventDescriptor() { wakeDescriptor = made }
                if wakeDescriptor >= 0 { return poll(until: deadline) }
            }
        #endif
        return signal.withLock {
            while !isChangePending {
                guard MonotonicInstant.now < deadline else { return false }
                signal.wait(until: deadline)
            }
            isChangePending = false
            return true
        }
    }

    #if os(Linux)
        private func poll(until deadline: MonotonicInstant) -> Bool {
            // One waiting thread at a time polls the instance itself; the others only their
            // eventfd, written by whoever reads their event (that thread or the reader).
            let isPollingInstance = InotifyHub.shared.takePolling()
            defer { if isPollingInstance { InotifyHub.shared.givePollingBack() } }
            let instance = isPollingInstance ? registration.instance : -1
            let buffer = UnsafeMutableRawPointer.allocate(byteCount: InotifyHub.bufferSize, alignment: 8)
            defer { buffer.deallocate() }
            while true {
                let isChanged = signal.withLock { () -> Bool in
                    isPolling = !isChangePending
                    defer { isChangePending = false }
                    return isChangePending
                }
                if isChanged { return true }
                let remaining = deadline.duration(since: MonotonicInstant.now)
                guard remaining > .zero else {
                    signal.withLock { isPolling = false }
                    // A change passed on at the last moment still counts.
                    return signal.withLock { () -> Bool in
                        defer { isChangePending = false }
                        return isChangePending
                    }
                }
                let (instanceReadable, isWoken) = System.pollReadable(instance, wakeDescriptor, upTo: remaining)
                if isWoken { System.drainEventDescriptor(wakeDescriptor) }
                if instanceReadable {
                    InotifyHub.shared.drain(registration.instance, generation: registration.generation, into: buffer)
                }
            }
        }
    #endif

    /// Suspends the task until a change in the folder or `duration`, whichever comes first,
    /// without occupying a thread; `true` when a change (seen since the last wait) ended it.
    ///
    /// - Throws: `CancellationError` when the task is cancelled (at once, not at the end).
    @discardableResult
    func changed(within duration: Duration) async throws -> Bool {
        try Task.checkCancellation()
        let wakeup = Wakeup()
        let nanoseconds = Int(clamping: duration.totalNanoseconds)
        let isPending = signal.withLock { () -> Bool in
            if isChangePending {
                isChangePending = false
                return true
            }
            waiter = wakeup
            if let timer {
                // One timer per watch, moved to this pause's end: a pause that ends early
                // leaves nothing behind.
                timer.schedule(deadline: .now() + .nanoseconds(nanoseconds))
            } else {
                let made = DispatchSource.makeTimerSource(queue: Self.queue)
                made.setEventHandler { [weak self] in self?.timerFired() }
                made.schedule(deadline: .now() + .nanoseconds(nanoseconds))
                made.resume()
                timer = made
            }
            return false
        }
        if isPending { return true }
        await withTaskCancellationHandler {
            await wakeup.wait()
        } onCancel: {
            wakeup.fire()
        }
        let changed = signal.withLock { () -> Bool in
            if waiter === wakeup { waiter = nil }
            defer { isChangePending = false }
            return isChangePending
        }
        try Task.checkCancellation()
        return changed
    }

    /// Whether a task is suspended in `changed(within:)` now (for tests).
    var hasWaitingTask: Bool { signal.withLock { waiter != nil } }

    /// A change in the folder (called by the hub's reader): wakes the waiting thread or task, or
    /// is remembered for the next wait.
    fileprivate func noteChange() {
        let (task, pollingThread) = signal.withLock { () -> (Wakeup?, Int32?) in
            isChangePending = true
            signal.signal()
            defer { waiter = nil }
            return (waiter, isPolling ? wakeDescriptor : nil)
        }
        task?.fire()
        if let pollingThread { System.signalEventDescriptor(pollingThread) }
    }

    /// The end of a task's pause: wakes only the waiting task (a late tick at worst ends the next
    /// pause early: one extra try).
    private func timerFired() {
        let task = signal.withLock { () -> Wakeup? in
            defer { waiter = nil }
            return waiter
        }
        task?.fire()
    }
}

/// The hub's reference to a watch: weak, so that the watch's owner alone decides its lifetime.
private final class WeakWatch: Sendable {
    let name: [UInt8]?
    private let watch = Mutex<Weak>(Weak())

    private struct Weak: @unchecked Sendable {
        weak var watch: FolderWatch?
    }

    init(name: [UInt8]?) { self.name = name }

    func attach(_ watch: FolderWatch) { self.watch.withLock { $0.watch = watch } }

    func noteChange() { watch.withLock { $0.watch }?.noteChange() }
}

/// The process's one inotify instance, shared by every `FolderWatch`.
///
/// - One kernel watch per folder (inotify gives one watch descriptor per inode), reference
///   counted by the `FolderWatch`es on it: added with the first, removed with the last.
/// - One reader thread, started with the instance, blocks in `poll` on it and passes each event
///   to the watches of that folder whose name it concerns (every watch on an overflow, every watch
///   of the folder when the kernel drops its watch, say because the folder was removed). A
///   waiting thread polls the instance too and passes on what it reads in the same way.
/// - The instance and its reader are kept for the life of the process once made, even with no
///   watch left: closing an inotify instance waits for a kernel grace period (5-15 ms measured
///   here), and a contended lock makes and drops watches at every acquisition, so one idle
///   descriptor and one sleeping thread cost less than an instance per wait (and, unlike
///   instances, watches do not count against the user's `max_user_instances`, 128 by default).
/// - Fork: a child forked without exec inherits the descriptor but not the reader thread; the
///   first use in a new fork generation closes the inherited descriptor (the parent's instance
///   stays the parent's) and makes a new instance and reader; registrations made before the fork
///   are ignored when dropped.
final class InotifyHub: BackgroundThreads, @unchecked Sendable {
    static let shared = InotifyHub()

    /// What `FolderWatch` keeps to unregister.
    struct Registration: Sendable {
        fileprivate var instance: Int32
        fileprivate var watchDescriptor: Int32
        fileprivate var generation: Int
        fileprivate var identifier: ObjectIdentifier
    }

    // Guarded by `lock`.
    private var descriptor: Int32 = -1
    private var generation = -1
    /// Per watch descriptor, the watches on it.
    private var folders: [Int32: [ObjectIdentifier: WeakWatch]] = [:]

    /// One reader thread. Its lock is held around fork, so that the child's copy is consistent.
    private init() { super.init(maximumThreads: 1) }

    /// In a child forked without exec: the inherited instance is the parent's (its reader thread
    /// is not the child's), so it is closed here, before any of the child's own code runs and may
    /// reuse the descriptor's number; the first use makes the child's own instance.
    override func resetInChild() {
        if descriptor >= 0 { System.close(descriptor) }
        descriptor = -1
        folders = [:]
        emptied = []
        registrationsInFlight = 0
        isPollerTaken = false
    }

    /// Whether a waiting thread polls the instance now: at most one does (besides the reader),
    /// so that an event wakes two threads, not every waiting one.
    private var isPollerTaken = false

    /// Makes the calling waiting thread the one that polls the instance, if none does.
    fileprivate func takePolling() -> Bool {
        lock.withLock {
            if isPollerTaken { return false }
            isPollerTaken = true
            return true
        }
    }

    fileprivate func givePollingBack() {
        lock.withLock { isPollerTaken = false }
    }

    /// Registrations between their `inotify_add_watch` and their entry in `folders`. The call is
    /// made without the lock (its path lookup can stall on a network filesystem, and the lock
    /// serves every folder's wake-ups); meanwhile no kernel watch is removed, since the call may
    /// have returned the very watch another thread is dropping.
    private var registrationsInFlight = 0
    /// Watches left without a `FolderWatch` while registrations were in flight: removed once
    /// none is, unless one of them took the watch up again.
    private var emptied: Set<Int32> = []

    /// Adds (or shares) the kernel watch on `folder` for `watch`; `nil` when it cannot.
    fileprivate func register(folder: CPath, _ watch: WeakWatch) -> Registration? {
        #if os(Linux)
            guard let (descriptor, generation) = lock.withLock({ () -> (Int32, Int)? in
                guard let descriptor = currentDescriptor() else { return nil }
                registrationsInFlight += 1
                return (descriptor, self.generation)
            })
            else { return nil }
            // Only a name going away can free a lock: a name moved in (a breaker's marker renamed
            // over a stale one, a marker given back) leaves it held.
            // IN_MASK_ADD: a second watch on a folder already watched must add to the kernel
            // watch's mask, not replace it; a replacement passes through an empty mask, and a
            // removal at that moment would reach none of the folder's waiters.
            let mask = UInt32(IN_DELETE | IN_MOVED_FROM | IN_ONLYDIR | IN_MASK_ADD)
            let added = System.inotifyAddWatch(descriptor, folder, mask: mask)
            return lock.withLock { () -> Registration? in
                // A fork meanwhile: this thread is the child's, and the instance its parent's.
                guard generation == self.generation else { return nil }
                registrationsInFlight -= 1
                defer { if registrationsInFlight == 0 { removeEmptied() } }
                guard case .success(let watchDescriptor) = added else { return nil }
                let identifier = ObjectIdentifier(watch)
                emptied.remove(watchDescriptor)
                folders[watchDescriptor, default: [:]][identifier] = watch
                return Registration(
                    instance: descriptor, watchDescriptor: watchDescriptor, generation: generation, identifier: identifier)
            }
        #else
            return nil
        #endif
    }

    fileprivate func unregister(_ registration: Registration) {
        lock.withLock {
            // Made before a fork: the parent's, not this instance's.
            guard registration.generation == generation, generation == ForkGeneration.current else { return }
            guard var watches = folders[registration.watchDescriptor] else { return }
            watches[registration.identifier] = nil
            if watches.isEmpty {
                folders[registration.watchDescriptor] = nil
                if registrationsInFlight > 0 {
                    emptied.insert(registration.watchDescriptor)
                } else {
                    _ = System.inotifyRemoveWatch(descriptor, registration.watchDescriptor)
                }
            } else {
                folders[registration.watchDescriptor] = watches
            }
        }
    }

    /// Removes the kernel watches left without a `FolderWatch`. Call with `lock` held.
    private func removeEmptied() {
        for watchDescriptor in emptied where folders[watchDescriptor] == nil {
            _ = System.inotifyRemoveWatch(descriptor, watchDescriptor)
        }
        emptied = []
    }

    /// The instance of this fork generation, made (with its reader) if needed. Call with `lock` held.
    private func currentDescriptor() -> Int32? {
        let current = ForkGeneration.current
        if generation == current, descriptor >= 0 { return descriptor }
        if generation != current {
            // Never made in this process (the fork reset closed an inherited one).
            descriptor = -1
            folders = [:]
            emptied = []
            registrationsInFlight = 0
            generation = current
        }
        guard case .success(let made) = System.inotifyInit() else { return nil }
        guard startThread({ [self] in read(made, generation: current) }) else {
            System.close(made)
            return nil
        }
        descriptor = made
        return made
    }

    /// The reader: waits for events and passes them on, for as long as the process (this fork
    /// generation) lives.
    private func read(_ descriptor: Int32, generation: Int) {
        let buffer = UnsafeMutableRawPointer.allocate(byteCount: Self.bufferSize, alignment: 8)
        defer { buffer.deallocate() }
        while true {
            System.waitUntilReadable(descriptor)
            drain(descriptor, generation: generation, into: buffer)
        }
    }

    /// Aligned for struct inotify_event; large enough for many events per read.
    fileprivate static let bufferSize = 16 * 1024

    /// Reads the pending events and passes them on: by the reader, and by a waiting thread whose
    /// `poll` saw them first (the kernel gives each event to one `read`).
    fileprivate func drain(_ descriptor: Int32, generation: Int, into buffer: UnsafeMutableRawPointer) {
        let capacity = Self.bufferSize
        var events: [(watchDescriptor: Int32, mask: UInt32, name: ArraySlice<UInt8>)] = []
        while case .success(let count) = System.readSome(descriptor, into: buffer, capacity: capacity), count > 0 {
            let bytes = UnsafeRawBufferPointer(start: buffer, count: count)
            // struct inotify_event: wd, mask, cookie, len (4 bytes each), then len bytes of name.
            var offset = 0
            while offset + 16 <= count {
                let watchDescriptor = bytes.loadUnaligned(fromByteOffset: offset, as: Int32.self)
                let mask = bytes.loadUnaligned(fromByteOffset: offset + 4, as: UInt32.self)
                let length = Int(bytes.loadUnaligned(fromByteOffset: offset + 12, as: UInt32.self))
                let start = offset + 16
                let end = min(start + length, count)
                let name = Array(bytes[start..<end]).prefix { $0 != 0 }
                events.append((watchDescriptor, mask, name))
                offset = start + length
            }
        }
        let woken = lock.withLock { () -> [WeakWatch] in
            // A forked child never runs this thread; a parent's reader never sees a child's state.
            guard self.generation == generation else { return [] }
            var woken: [ObjectIdentifier: WeakWatch] = [:]
            for event in events {
                if event.mask & UInt32(IN_Q_OVERFLOW) != 0 {
                    for watches in folders.values { woken.merge(watches) { first, _ in first } }
                    continue
                }
                guard let watches = folders[event.watchDescriptor] else { continue }
                if event.mask & UInt32(IN_IGNORED) != 0 {
                    // The kernel dropped the watch (folder removed, filesystem unmounted):
                    // wake them all; they poll from now on.
                    folders[event.watchDescriptor] = nil
                    woken.merge(watches) { first, _ in first }
                    continue
                }
                for (identifier, watch) in watches where woken[identifier] == nil {
                    guard let name = watch.name else {
                        woken[identifier] = watch
                        continue
                    }
                    if event.name.elementsEqual(name) { woken[identifier] = watch }
                }
            }
            return Array(woken.values)
        }
        for watch in woken { watch.noteChange() }
    }

    /// The number of kernel watches this instance holds now (for tests).
    var watchCount: Int { lock.withLock { generation == ForkGeneration.current ? folders.count : 0 } }
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
