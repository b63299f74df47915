import ArgumentParser

/// The `filelock` command-line tool.
@main
struct FileLockCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "filelock",
        abstract: "Cross-process file locks for shell scripts, cron jobs and CI.",
        version: "0.1.0",
        subcommands: [Run.self, Status.self, Break.self, Demo.self, DemoWorker.self]
    )

    /// As ArgumentParser's, but usage mistakes exit with 2 (as flock(1) and most Unix tools do)
    /// rather than 64, flock(1)'s bundles with a value (`-nw5`) are split for both readers of
    /// `run`, and the common forms of `filelock run` skip ArgumentParser: a short locked command
    /// should cost little more than `flock(1)` does.
    static func main() {
        var arguments = RawArguments.strings
        if arguments.first == "run" {
            arguments = ["run"] + RunRequest.splittingBundledValues(arguments.dropFirst())
            if let request = RunRequest(quickly: arguments.dropFirst()), (try? request.validate()) != nil {
                exitProcess(request.run())
            }
        }
        do {
            var command = try parseAsRoot(arguments)
            try command.run()
        } catch {
            let code = exitCode(for: error)
            if code == .validationFailure {
                let message = fullMessage(for: error)
                if !message.isEmpty { printError(message) }
                exit(withError: ExitCode(2))
            }
            exit(withError: error)
        }
    }

    private static func printError(_ message: String) {
        let bytes = Array((message + "\n").utf8)
        bytes.withUnsafeBytes { buffer in FileLockCommand.writeToStandardError(buffer) }
    }
}

#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

private func exitProcess(_ status: Int32) -> Never { exit(status) }

extension FileLockCommand {
    fileprivate static func writeToStandardError(_ buffer: UnsafeRawBufferPointer) {
        _ = write(2, buffer.baseAddress, buffer.count)
    }
}
