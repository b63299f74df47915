import Synchronization

/// The primitive behind `FileLock`: `flock(2)` on the lock file (`FlockPrimitive`), or, for a
/// lock made with `fallsBackToSoft` whose folder has no working `flock`, a marker file at the
/// same path (`SoftPrimitive`, Python `filelock`'s `fallback_to_soft`).
///
/// Which one is decided once per lock object, at its first acquisition, by trying `flock` on a
/// fresh file of our own beside the lock file (never on the lock file: an empty lock file left at
/// the path would read as an empty marker, which marker users never break while they wait).
struct FileLockPrimitive: LockPrimitive {
    let kernel: FlockPrimitive
    /// The marker lock to fall back to; `nil` when falling back is off.
    let marker: SoftPrimitive?
    let choice = MechanismChoice()

    enum Attempt: Sendable {
        case kernel(FlockPrimitive.OpenLockFile)
        case marker(SoftPrimitive.Attempt)
    }

    enum Hold: Sendable {
        case kernel(Int32)
        case marker(SoftPrimitive.Hold)
    }

    var lockPath: LockPath { kernel.lockPath }
    var path: String { kernel.path }

    /// The mechanism in use; `nil` until an acquisition found out (only when falling back is on).
    var mechanism: FileLock.Mechanism? { marker == nil ? .flock : choice.current }

    var waitStrategy: WaitStrategy {
        if let marker, choice.current == .marker { return marker.waitStrategy }
        return .kernel
    }

    func begin(_ request: LockRequest) throws -> Attempt {
        guard let marker else { return .kernel(try kernel.begin(request)) }
        let mechanism = try choice.current ?? probe()
        switch mechanism {
        case .flock:
            return .kernel(try kernel.begin(request))
        case .marker:
            guard request.mode == .exclusive else {
                throw FileLockError(
                    .notSupportedByFilesystem, path: path,
                    message: "the filesystem of '\(path)' does not support flock, and the marker lock used instead "
                        + "is exclusive only: take the lock exclusively")
            }
            return .marker(try marker.begin(request))
        }
    }

    /// Tries `flock` on a new file beside the lock file, and remembers the answer. `.flock` (not
    /// remembered) when it cannot tell: a folder where we may not create files, where no marker
    /// could be created either, so a `flock` there that is not supported is reported as without
    /// the fallback. (Switching to a marker after opening the lock file itself would leave an empty
    /// file at the path, which reads as a held empty marker, also to us.)
    private func probe() throws -> FileLock.Mechanism {
        let name = lockPath.absolute.appending(HelperName.unique("flock-probe"))
        var opened = System.open(name, flags: OpenFlags.createExclusiveReadWrite, mode: 0o600)
        if case .failure(.noSuchFile) = opened {
            try lockPath.createParentFolders()
            opened = System.open(name, flags: OpenFlags.createExclusiveReadWrite, mode: 0o600)
        }
        guard case .success(let descriptor) = opened else { return .flock }
        defer {
            _ = System.unlink(name)
            System.close(descriptor)
        }
        switch System.flockNonBlocking(descriptor, .exclusive) {
        case .success:
            choice.set(.flock)
            return .flock
        case .failure(let error) where error.isNotSupported:
            choice.set(.marker)
            return .marker
        case .failure:
            return .flock
        }
    }

    func tryOnce(_ attempt: Attempt, _ request: LockRequest) throws -> AttemptOutcome<Hold> {
        switch attempt {
        case .kernel(let file):
            return Self.kernelOutcome(try kernel.tryOnce(file, request))
        case .marker(let attempt):
            return Self.markerOutcome(try marker!.tryOnce(attempt, request))
        }
    }

    func waitInKernel(_ attempt: Attempt, _ request: LockRequest) throws -> KernelWaitEnd {
        switch attempt {
        case .kernel(let file):
            return try kernel.waitInKernel(file, request)
        case .marker(let attempt):
            // Not expected (the mechanism is known before the engine picks a wait): pause, then
            // `confirm` tries.
            marker!.pause(attempt, upTo: marker!.pollInterval)
            return .locked
        }
    }

    /// A file that a holder we waited for removed (`removesFileOnRelease`) asks to start over;
    /// the engine does not count a start-over after a wait (see `LockEngine.waitLoop`).
    func confirm(_ attempt: Attempt, _ request: LockRequest) throws -> AttemptOutcome<Hold> {
        switch attempt {
        case .kernel(let file): return Self.kernelOutcome(kernel.confirm(file, request))
        case .marker(let attempt): return Self.markerOutcome(try marker!.tryOnce(attempt, request))
        }
    }

    private static func kernelOutcome(_ outcome: AttemptOutcome<Int32>) -> AttemptOutcome<Hold> {
        switch outcome {
        case .acquired(let descriptor): .acquired(.kernel(descriptor))
        case .busy: .busy
        case .restart: .restart
        }
    }

    private static func markerOutcome(_ outcome: AttemptOutcome<SoftPrimitive.Hold>) -> AttemptOutcome<Hold> {
        switch outcome {
        case .acquired(let hold): .acquired(.marker(hold))
        case .busy: .busy
        case .restart: .restart
        }
    }

    func prepareToWait(_ attempt: Attempt) {
        if case .marker(let attempt) = attempt { marker!.prepareToWait(attempt) }
    }

    func pause(_ attempt: Attempt, upTo duration: Duration) {
        guard case .marker(let attempt) = attempt else { return Threads.sleep(duration) }
        marker!.pause(attempt, upTo: duration)
    }

    func pause(_ attempt: Attempt, upTo duration: Duration) async throws {
        guard case .marker(let attempt) = attempt else { return try await Task.sleep(for: duration) }
        try await marker!.pause(attempt, upTo: duration)
    }

    func abandon(_ attempt: Attempt) {
        switch attempt {
        case .kernel(let file): kernel.abandon(file)
        case .marker(let attempt): marker!.abandon(attempt)
        }
    }

    func release(_ hold: Hold) {
        switch hold {
        case .kernel(let descriptor): kernel.release(descriptor)
        case .marker(let hold): marker!.release(hold)
        }
    }

    func forget(_ hold: Hold) {
        switch hold {
        case .kernel(let descriptor): kernel.forget(descriptor)
        case .marker(let hold): marker!.forget(hold)
        }
    }

    /// Before the mechanism is known, the kernel's lock table and then a marker at the path.
    func holders() -> [LockHolder] {
        guard let marker else { return kernel.holders() }
        switch choice.current {
        case .flock: return kernel.holders()
        case .marker: return marker.holders()
        case nil:
            let found = kernel.holders()
            return found.isEmpty ? marker.holders() : found
        }
    }

    func waiterCount() -> Int {
        choice.current == .marker ? 0 : kernel.waiterCount()
    }

    func busyHint() -> String? {
        if let marker, choice.current == .marker { return marker.busyHint() }
        return kernel.busyHint()
    }
}

/// Which mechanism a `FileLock` that may fall back uses, once known; shared by the copies of its
/// primitive, and inherited by a forked child (the filesystem is the same).
final class MechanismChoice: Sendable {
    private let state = Atomic<UInt8>(0)

    var current: FileLock.Mechanism? {
        switch state.load(ordering: .acquiring) {
        case 1: .flock
        case 2: .marker
        default: nil
        }
    }

    func set(_ mechanism: FileLock.Mechanism) {
        state.store(mechanism == .flock ? 1 : 2, ordering: .releasing)
    }
}
