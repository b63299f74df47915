import Synchronization

/// The process-wide facts about one canonical lock path, shared by every lock object on it:
/// who holds it through which object (for self-deadlock detection) and the singleton objects.
final class PathNode: Sendable {
    struct Holding: Sendable {
        var owner: Owner
        var lockObject: ObjectIdentifier
        /// The lock kind (its primitive's type): kinds that use different kernel locks (a
        /// `FileLock`'s flock, a `ReadWriteLock`'s record locks) never wait for each other.
        var kind: ObjectIdentifier
        /// The fork generation that took it: a forked child's thread has its parent's identity
        /// but holds nothing.
        var generation: Int
    }

    struct State: ~Copyable {
        var holdings: [Holding] = []
        var singletons: [ObjectIdentifier: WeakReference] = [:]
    }

    let path: CPath
    let state = Mutex(State())

    init(path: CPath) { self.path = path }

    func recordHolding(owner: Owner, lockObject: ObjectIdentifier, kind: ObjectIdentifier, generation: Int) {
        state.withLock {
            $0.holdings.append(Holding(owner: owner, lockObject: lockObject, kind: kind, generation: generation))
        }
    }

    func removeHolding(owner: Owner, lockObject: ObjectIdentifier, generation: Int) {
        state.withLock { state in
            if let index = state.holdings.firstIndex(where: {
                $0.owner == owner && $0.lockObject == lockObject && $0.generation == generation
            }) {
                state.holdings.remove(at: index)
            }
        }
    }

    /// Whether `owner` already holds this path through a lock object other than `lockObject`:
    /// waiting for `lockObject` without a timeout would then never end.
    func ownerHoldsThroughAnotherObject(_ owner: Owner, lockObject: ObjectIdentifier, kind: ObjectIdentifier) -> Bool {
        let generation = ForkGeneration.current
        return state.withLock { state in
            state.holdings.contains {
                $0.owner == owner && $0.lockObject != lockObject && $0.kind == kind && $0.generation == generation
            }
        }
    }
}

struct WeakReference: @unchecked Sendable {
    weak var object: AnyObject?
}

/// Canonical path → `PathNode`, kept while some lock object uses the path.
enum PathRegistry {
    private struct Nodes: ~Copyable {
        var byPath: [CPath: WeakNode] = [:]
        /// Prune dead entries when the table doubles, so creation stays amortised O(1).
        var pruneAt = 64
    }

    private static let nodes = Mutex(Nodes())

    private struct WeakNode: @unchecked Sendable {
        weak var node: PathNode?
    }

    /// Makes the global (see `LazyGlobals`).
    static func finishGlobals() { nodes.withLock { _ in } }

    static func node(for canonicalPath: CPath) -> PathNode {
        nodes.withLock { nodes in
            if let existing = nodes.byPath[canonicalPath]?.node { return existing }
            if nodes.byPath.count >= nodes.pruneAt {
                nodes.byPath = nodes.byPath.filter { $0.value.node != nil }
                nodes.pruneAt = max(64, nodes.byPath.count * 2)
            }
            let node = PathNode(path: canonicalPath)
            nodes.byPath[canonicalPath] = WeakNode(node: node)
            return node
        }
    }
}
