#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif
@testable import FileLocking
import Subprocesses
import Synchronization
import Testing

/// A child forked without exec while another thread of the parent was making one of the library's
/// lazily made globals inherited it half made, and its first use of it waited forever (a hang in
/// `swift_once`; making a helper waits for the registry lock that the fork holds, so the window
/// was wide). The fork's prepare handler now finishes them first (`LazyGlobals`).
@Suite("Fork safety")
struct ForkSafetyTests {
    /// In a fresh process (an exit test: the globals are not made yet), threads make the helpers
    /// while the main thread forks children that use them. Before the fix about half of such
    /// children hung (68 of 81 hangs in 20 processes were on these globals).
    @Test func aChildForkedWhileTheLibrarysGlobalsAreMadeCanUseThem() async {
        for _ in 0..<4 {
            await #expect(processExitsWith: .success) {
                exit(ForkSafetyTests.forkWhileGlobalsAreMade() == 0 ? 0 : 1)
            }
        }
    }

    /// The number of hung children (killed after 10 s) among 16 forked while the globals are made.
    static func forkWhileGlobalsAreMade() -> Int {
        // The generation's handlers are registered, as by any lock operation before a fork.
        _ = ForkGeneration.current
        let started = Atomic(0)
        for index in 0..<3 {
            _ = Threads.spawnDetached {
                started.add(1, ordering: .relaxed)
                switch index {
                case 0: _ = WaitInterrupter.shared
                case 1: _ = InotifyHub.shared
                default: _ = KernelWaitThreads.shared
                }
            }
        }
        while started.load(ordering: .relaxed) == 0 { sched_yield() }
        var children: [pid_t] = []
        children.reserveCapacity(16)
        for _ in 0..<16 {
            let child = fork()
            if child == 0 {
                _ = WaitInterrupter.shared
                _ = InotifyHub.shared
                _ = KernelWaitThreads.shared
                _exit(0)
            }
            children.append(child)
        }
        var hung = 0
        let deadline = ChildProcess.now() + 10
        for child in children {
            var status: Int32 = 0
            while waitpid(child, &status, WNOHANG) == 0 {
                if ChildProcess.now() > deadline {
                    hung += 1
                    kill(child, SIGKILL)
                    waitpid(child, &status, 0)
                    break
                }
                usleep(1000)
            }
        }
        return hung
    }
}
