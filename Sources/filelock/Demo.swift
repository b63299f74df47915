#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif
import ArgumentParser
import FileLocking
import Subprocesses

/// `filelock demo`: the lost-update race between processes, and its fix.
struct Demo: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Show the lost-update race between processes, and FileLock fixing it.",
        discussion: """
            Starts PROCESSES worker processes that each add 1 to a shared counter file INCREMENTS \
            times: first without a lock (read-modify-write steps interleave and updates are lost), \
            then with a FileLock around each increment (the count is exact).

            Examples:
              filelock demo
              filelock demo --processes 8 --increments 500
              filelock demo --kind soft        # a marker-file lock, as on NFS
              filelock demo --kind range       # a byte-range lock on the counter's own bytes
            """
    )

    @Option(help: "kernel (FileLock), soft (SoftFileLock) or range (ByteRangeLock on the counter file).")
    var kind: DemoKind = .kernel

    @Option(name: [.short, .long], help: "How many worker processes run at once.")
    var processes: Int = 4

    @Option(name: [.short, .long], help: "How many increments each worker makes.")
    var increments: Int = 1000

    func validate() throws {
        guard (1...256).contains(processes) else { throw ValidationError("--processes must be 1...256") }
        guard (1...10_000_000).contains(increments) else { throw ValidationError("--increments must be 1...10000000") }
    }

    func run() throws {
        var template = Array("/tmp/filelock-demo-XXXXXX".utf8CString)
        guard let made = mkdtemp(&template) else { throw ValidationError("cannot create a temporary folder in /tmp") }
        let folder = String(cString: made)
        defer {
            for name in ["counter", "counter.lock"] { unlink(folder + "/" + name) }
            rmdir(folder)
        }
        let expected = processes * increments
        print("filelock demo: \(processes) processes x \(increments) increments of one counter file")
        print("")
        print(pad("", 20) + pad("expected", 10) + pad("got", 10) + pad("lost", 10) + pad("time", 12))
        let lockName =
            switch kind {
            case .kernel: "with FileLock"
            case .soft: "with SoftFileLock"
            case .range: "with ByteRangeLock"
            }
        for useLock in [false, true] {
            let counter = folder + "/counter"
            unlink(counter)
            let (got, seconds) = try runRound(folder: folder, useLock: useLock)
            print(
                pad(useLock ? lockName : "without a lock", -20) + pad(String(expected), 10)
                    + pad(String(got), 10) + pad(String(expected - got), 10)
                    + pad(String(Int((seconds * 1000).rounded())) + " ms", 12))
        }
        print("")
        print("Without a lock, two workers read the same value and one increment overwrites the other.")
        print("\(lockName.dropFirst(5)) makes each read-modify-write run alone.")
    }

    /// Starts the workers, lets them go at once, and returns the final count and the time taken.
    private func runRound(folder: String, useLock: Bool) throws -> (Int, Double) {
        var arguments = [
            "demo-worker", folder + "/counter.lock", folder + "/counter", String(increments), "--kind", kind.rawValue,
        ]
        if !useLock { arguments.append("--no-lock") }
        let workers = try (0..<processes).map { _ in try ChildProcess(executablePath(), arguments) }
        for worker in workers { try worker.expectLine(startingWith: "ready") }
        let start = ChildProcess.now()
        for worker in workers { worker.send("go") }
        for worker in workers {
            let line = try worker.expectLine(startingWith: "", timeout: 600)
            guard line == "done" else { throw ValidationError("a worker failed: \(line)") }
        }
        let seconds = ChildProcess.now() - start
        for worker in workers { _ = try worker.waitForExit() }
        let value = readCounter(folder + "/counter")
        return (value, seconds)
    }

    private func pad(_ text: String, _ width: Int) -> String {
        let size = abs(width)
        guard text.count < size else { return text + " " }
        let padding = String(repeating: " ", count: size - text.count)
        return width < 0 ? text + padding : padding + text
    }
}

/// The lock kinds the demo can show.
enum DemoKind: String, ExpressibleByArgument, CaseIterable {
    case kernel
    case soft
    case range
}

/// One worker of the demo (started by `filelock demo`, not meant to be run by hand).
struct DemoWorker: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "demo-worker", abstract: "One worker process of 'filelock demo'.", shouldDisplay: false)

    @Argument var lockPath: String
    @Argument var counterPath: String
    @Argument var increments: Int
    @Flag var noLock = false
    @Option var kind: DemoKind = .kernel

    func run() throws {
        let counter = open(counterPath, O_RDWR | O_CREAT | O_CLOEXEC, 0o644)
        guard counter >= 0 else { throw ValidationError("cannot open \(counterPath)") }
        defer { close(counter) }
        let locked: (() -> Void) throws -> Void
        switch kind {
        case .kernel:
            let lock = try FileLock(at: lockPath)
            locked = { body in try lock.withLock(body) }
        case .soft:
            let lock = try SoftFileLock(at: lockPath)
            locked = { body in try lock.withLock(body) }
        case .range:
            // The counter's own first 32 bytes: a record lock, no separate lock file.
            let file = try ByteRangeLock(at: counterPath)
            locked = { body in try file.withLock(ByteRange(start: 0, length: 32), body) }
        }
        say("ready")
        guard readLine() == "go" else { return }
        for _ in 0..<increments {
            if noLock {
                increment(counter)
            } else {
                try locked { increment(counter) }
            }
        }
        say("done")
    }

    private func increment(_ counter: Int32) {
        var buffer = [UInt8](repeating: 0, count: 32)
        let count = pread(counter, &buffer, buffer.count, 0)
        let value = Int(String(decoding: buffer.prefix(max(0, count)), as: UTF8.self)) ?? 0
        let text = Array(String(value + 1).utf8)
        _ = pwrite(counter, text, text.count, 0)
    }
}

func say(_ line: String) {
    let bytes = Array((line + "\n").utf8)
    _ = bytes.withUnsafeBytes { write(1, $0.baseAddress, $0.count) }
}

func readCounter(_ path: String) -> Int {
    let descriptor = open(path, O_RDONLY | O_CLOEXEC)
    guard descriptor >= 0 else { return 0 }
    defer { close(descriptor) }
    var buffer = [UInt8](repeating: 0, count: 32)
    let count = read(descriptor, &buffer, buffer.count)
    return Int(String(decoding: buffer.prefix(max(0, count)), as: UTF8.self)) ?? 0
}

/// This executable's own path, to start workers.
func executablePath() -> String {
    #if os(Linux)
        var buffer = [CChar](repeating: 0, count: 4096)
        let count = readlink("/proc/self/exe", &buffer, buffer.count - 1)
        if count > 0 {
            return String(decoding: buffer.prefix(count).map { UInt8(bitPattern: $0) }, as: UTF8.self)
        }
    #elseif canImport(Darwin)
        var size = UInt32(4096)
        var buffer = [CChar](repeating: 0, count: Int(size))
        if _NSGetExecutablePath(&buffer, &size) == 0 { return String(cString: buffer) }
    #endif
    return CommandLine.arguments[0]
}
