#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

/// A child process failed to start, went quiet, or said something unexpected.
package struct ChildProcessError: Error, CustomStringConvertible {
    package var description: String
    /// The `errno` of a failed start, when that is what failed.
    package var errno: Int32?
    package init(description: String, errno: Int32? = nil) {
        self.description = description
        self.errno = errno
    }

    /// The exit status shells give a command that could not start: 127 when it was not found,
    /// 126 when it was found but could not be run (no permission, not an executable).
    package var shellStatus: Int32 { errno == ENOENT || errno == nil ? 127 : 126 }
}

/// A real child process with pipes on stdin and stdout, read line by line with a timeout so a
/// broken test fails instead of hanging.
package final class ChildProcess: @unchecked Sendable {
    package let pid: pid_t
    package let command: String
    private var input: Int32
    private let output: Int32
    private var buffer: [UInt8] = []
    private var exitStatus: Int32?

    /// Starts `executable` with `arguments`; `environment` entries are added to ours.
    package init(_ executable: String, _ arguments: [String], environment: [String: String] = [:]) throws {
        command = ([executable] + arguments).joined(separator: " ")
        var stdinPipe: [Int32] = [0, 0]
        var stdoutPipe: [Int32] = [0, 0]
        // Our ends must not leak into children that other threads start meanwhile: make them
        // close-on-exec before any other spawn can run (posix_spawn's dup2 onto 0 and 1 clears
        // the flag for the child's copies).
        ChildProcess.spawnLock.lock()
        defer { ChildProcess.spawnLock.unlock() }
        guard pipe(&stdinPipe) == 0, pipe(&stdoutPipe) == 0 else { throw ChildProcessError(description: "pipe failed") }
        for descriptor in stdinPipe + stdoutPipe { _ = fcntl(descriptor, F_SETFD, FD_CLOEXEC) }
        #if canImport(Darwin)
            var actions: posix_spawn_file_actions_t? = nil
        #else
            var actions = posix_spawn_file_actions_t()
        #endif
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_adddup2(&actions, stdinPipe[0], 0)
        posix_spawn_file_actions_adddup2(&actions, stdoutPipe[1], 1)
        for descriptor in stdinPipe + stdoutPipe { posix_spawn_file_actions_addclose(&actions, descriptor) }
        var merged: [String: String] = [:]
        #if canImport(Darwin)
            let environ = _NSGetEnviron().pointee!
        #endif
        var index = 0
        while let entry = environ[index] {
            let text = String(cString: entry)
            if let equals = text.firstIndex(of: "=") {
                merged[String(text[..<equals])] = String(text[text.index(after: equals)...])
            }
            index += 1
        }
        for (key, value) in environment { merged[key] = value }
        let argv = ([executable] + arguments).map { strdup($0) } + [nil]
        let envp = merged.map { strdup("\($0.key)=\($0.value)") } + [nil]
        defer {
            for pointer in argv { free(pointer) }
            for pointer in envp { free(pointer) }
        }
        var child = pid_t()
        let result = posix_spawnp(&child, executable, &actions, nil, argv, envp)
        close(stdinPipe[0])
        close(stdoutPipe[1])
        guard result == 0 else {
            close(stdinPipe[1])
            close(stdoutPipe[0])
            throw ChildProcessError(description: "cannot start \(executable): errno \(result)")
        }
        pid = child
        input = stdinPipe[1]
        output = stdoutPipe[0]
    }

    private static let spawnLock = SpawnLock()

    deinit {
        if input >= 0 { close(input) }
        close(output)
        if exitStatus == nil {
            kill(pid, SIGKILL)
            var status: Int32 = 0
            waitpid(pid, &status, 0)
        }
    }

    /// The next line of output; throws after `timeout` seconds or at end of output.
    package func readLine(timeout: Double = 30) throws -> String {
        let deadline = Self.now() + timeout
        while true {
            if let newline = buffer.firstIndex(of: 10) {
                let line = String(decoding: buffer[..<newline], as: UTF8.self)
                buffer.removeSubrange(...newline)
                return line
            }
            let remaining = deadline - Self.now()
            guard remaining > 0 else {
                throw ChildProcessError(description: "no line from '\(command)' within \(timeout) s")
            }
            var poller = pollfd(fd: output, events: Int16(POLLIN), revents: 0)
            let ready = poll(&poller, 1, Int32(min(remaining * 1000, 1000)))
            if ready <= 0 { continue }
            var chunk = [UInt8](repeating: 0, count: 4096)
            let count = read(output, &chunk, chunk.count)
            if count <= 0 {
                throw ChildProcessError(
                    description: "'\(command)' closed its output (buffered: \(String(decoding: buffer, as: UTF8.self)))")
            }
            buffer.append(contentsOf: chunk[0..<count])
        }
    }

    /// Reads lines until one starts with `prefix` and returns it.
    @discardableResult
    package func expectLine(startingWith prefix: String, timeout: Double = 30) throws -> String {
        let line = try readLine(timeout: timeout)
        guard line.hasPrefix(prefix) else {
            throw ChildProcessError(description: "'\(command)' said '\(line)', expected '\(prefix)...'")
        }
        return line
    }

    package func send(_ line: String) {
        let bytes = Array((line + "\n").utf8)
        _ = bytes.withUnsafeBytes { write(input, $0.baseAddress, $0.count) }
    }

    package func closeInput() {
        if input >= 0 { close(input) }
        input = -1
    }

    package func signal(_ number: Int32) { kill(pid, number) }

    /// Waits for the process to end and returns its exit code (128 + signal when killed).
    @discardableResult
    package func waitForExit(timeout: Double = 60) throws -> Int32 {
        if let exitStatus { return exitStatus }
        let deadline = Self.now() + timeout
        var status: Int32 = 0
        while waitpid(pid, &status, WNOHANG) == 0 {
            guard Self.now() < deadline else {
                throw ChildProcessError(description: "'\(command)' did not exit within \(timeout) s")
            }
            usleep(2000)
        }
        let code = (status & 0x7f) == 0 ? (status >> 8) & 0xff : 128 + (status & 0x7f)
        exitStatus = code
        return code
    }

    /// All remaining output until the process closes it.
    package func readRemainingOutput(timeout: Double = 60) throws -> String {
        var lines: [String] = []
        while true {
            do { lines.append(try readLine(timeout: timeout)) } catch { break }
        }
        return lines.joined(separator: "\n")
    }

    package static func now() -> Double {
        var time = timespec()
        clock_gettime(CLOCK_MONOTONIC, &time)
        return Double(time.tv_sec) + Double(time.tv_nsec) / 1e9
    }
}

/// Serialises pipe creation and spawning (this target avoids Foundation).
private final class SpawnLock: @unchecked Sendable {
    private let mutex = UnsafeMutablePointer<pthread_mutex_t>.allocate(capacity: 1)
    init() { pthread_mutex_init(mutex, nil) }
    func lock() { pthread_mutex_lock(mutex) }
    func unlock() { pthread_mutex_unlock(mutex) }
}
