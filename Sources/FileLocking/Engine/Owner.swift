/// Who holds a lock inside this process: the task in `async` code (and in synchronous code that a
/// task runs), otherwise the kernel thread.
///
/// A task keeps its identity when it moves between threads, so a lock taken in a task may be
/// released after an `await` on another thread.
struct Owner: Hashable, Sendable, CustomStringConvertible {
    enum Kind: Hashable, Sendable {
        case task
        case thread
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
        }
    }
}
