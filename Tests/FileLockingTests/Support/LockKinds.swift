import Testing
import FileLocking

/// The whole-file lock kinds, for the scenarios every kind must pass (`ContractTests` and the
/// fork and ownership tests): a new kind joins them by adding a case here.
enum WholeFileKind: String, CaseIterable, Sendable, CustomTestStringConvertible {
    case kernel
    case soft

    func make(
        _ path: String, timeout: Duration? = nil, isBlocking: Bool = true, ownership: LockOwnership = .caller,
        isSingleton: Bool = false, pollInterval: Duration = .milliseconds(50)
    ) throws -> any CrossProcessLock {
        switch self {
        case .kernel:
            try FileLock(
                at: path, timeout: timeout, isBlocking: isBlocking, ownership: ownership, isSingleton: isSingleton,
                pollInterval: pollInterval)
        case .soft:
            try SoftFileLock(
                at: path, timeout: timeout, isBlocking: isBlocking, ownership: ownership, isSingleton: isSingleton,
                pollInterval: pollInterval)
        }
    }

    var testDescription: String { rawValue }
}
