import ArgumentParser

/// The `filelock` command-line tool.
@main
struct FileLockCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "filelock",
        abstract: "Cross-process file locks for shell scripts, cron jobs and CI.",
        version: "0.1.0",
        subcommands: [Demo.self, DemoWorker.self]
    )
}
