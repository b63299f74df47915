/// Who holds a lock inside this process: the task in `async` code (and in synchronous code that a
/// task runs), otherwise the kernel thread.
///
/// A task keeps its identity when it moves between threads, so a lock taken in a task may be
/// released after an `await` on another thread.
struct Owner: Hashable, Sendable, CustomStringConvertible {
    enum Kind: Hashable, Sendable {
        case task
        case thread
        /// A lock object made with `ownership: .lockObject`: every thread and task shares its holds.
        case lockObject
    }

    var kind: Kind
    var identifier: UInt

    /// The owner for the code that is running now.
    static var current: Owner {
        if let task = withUnsafeCurrentTask(body: { task in task.map(Owner.taskIdentifier) }) {
            return Owner(kind: .task, identifier: task)
        }
        return Owner(kind: .thread, identifier: ThreadHandle.current.identifier)
    }

    /// The address of the running task: unique while the task lives.
    private static func taskIdentifier(_ task: UnsafeCurrentTask) -> UInt {
        // UnsafeCurrentTask wraps the task's reference and nothing else.
        unsafeBitCast(task, to: UInt.self)
    }

    var description: String {
        switch kind {
        case .task: "task 0x\(String(identifier, radix: 16))"
        case .thread: "thread 0x\(String(identifier, radix: 16))"
        case .lockObject: "lock object 0x\(String(identifier, radix: 16))"
        }
    }
}

/// Who a lock object's holds belong to inside this process.
public enum LockOwnership: Sendable, Hashable {
    /// The thread that acquired (in `async` code, the task): only it can release, acquiring again
    /// from it counts up, and another thread or task using the same object waits like another
    /// process. The default; right for code that takes and gives back the lock in one place.
    case caller
    /// The lock object: any thread or task may release, and acquiring again from any thread or
    /// task counts up instead of waiting (Python `filelock`'s `thread_local=False`). Right when a
    /// lock is taken in one callback and given back in another (a completion handler, a `Task`,
    /// another GCD worker); the lock then excludes other processes and other lock objects only,
    /// so do not share such an object between threads that must exclude each other.
    case lockObject
}
