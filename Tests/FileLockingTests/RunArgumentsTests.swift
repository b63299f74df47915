import ArgumentParser
import Testing

@testable import filelock

/// `filelock run` reads its common argument forms without ArgumentParser (startup time); these
/// tests hold the two readers to the same meaning.
@Suite struct RunArgumentsTests {
    /// Forms the quick reader must accept, each with a value that differs from the default.
    static let accepted: [[String]] = [
        ["X", "--", "true"],
        ["X", "true"],
        ["X", "-v", "echo", "hi"],
        ["X", "--", "--", "x"],
        ["X", "--", "sh", "-c", "exit 3"],
        ["-s", "X", "cat"],
        ["--shared", "X", "cat"],
        ["-x", "X", "cat"],
        ["--exclusive", "X", "cat"],
        ["-n", "X", "--", "true", "-n"],
        ["--nonblock", "X", "true"],
        ["--nb", "X", "true"],
        ["-v", "X", "true"],
        ["--verbose", "X", "true"],
        ["-xn", "X", "--", "true"],
        ["-nsv", "X", "--", "true"],
        ["-w", "5", "X", "--", "true"],
        ["-w", "0.25", "X", "--", "true"],
        ["-w5", "X", "true"],
        ["-w0.5", "-E75", "X", "true"],
        ["-n", "-E3", "X", "true"],
        // flock(1)'s bundles that end in an option with its value.
        ["-nE9", "X", "true"],
        ["-nw5", "X", "true"],
        ["-sw1", "X", "true"],
        ["-xnw", "5", "X", "true"],
        ["-xw5", "X", "true"],
        ["-snvE", "75", "X", "--", "true"],
        ["-nw0.5", "-E3", "X", "-nw5"],
        ["-nE-1", "X", "true"],
        ["X", "-c", "echo hi && exit 3"],
        ["X", "--command", "true"],
        ["X", "--", "-c", "echo", "hi"],
        ["--timeout", "1e3", "X", "true"],
        ["--timeout=2.5", "X", "true"],
        ["-E", "75", "X", "true"],
        ["--conflict-exit-code", "0", "X", "true"],
        ["--conflict-exit-code=3", "X", "true"],
        ["--kind", "soft", "X", "true"],
        ["--kind=kernel", "X", "true"],
        ["--range", "0:100", "X", "true"],
        ["--range=5:0", "X", "true"],
        ["--fallback-to-soft", "X", "true"],
        ["--remove-on-release", "-n", "X", "true"],
        ["-s", "--remove-on-release", "--fallback-to-soft", "X", "true"],
        ["-n", "-w", "3", "-E", "9", "--kind", "soft", "-v", "/tmp/some folder/x.lock", "--", "make", "-j", "2"],
        ["--kind", "rw", "-s", "X", "true"],
        ["--kind=rw", "-x", "X", "true"],
        ["-snw5", "--kind", "rw", "-E", "75", "X", "--", "true"],
        ["--kind", "soft-rw", "X", "true"],
        ["--kind", "soft-rw", "-s", "--heartbeat", "5", "X", "true"],
        ["--kind=soft-rw", "--stale-threshold", "60", "X", "true"],
        ["--kind", "soft-rw", "--stale-threshold", "5", "X", "true"],
        ["--kind", "soft-rw", "--heartbeat=2.5", "--stale-threshold=10", "-n", "X", "true"],
        ["-snw5", "--kind", "soft-rw", "--heartbeat", "0.1", "-E", "75", "X", "--", "true"],
        ["--kind", "lease", "X", "true"],
        ["--kind", "lease", "--lease-duration", "60", "X", "true"],
        ["--kind", "lease", "--lease-duration=9", "--heartbeat", "1", "-w5", "X", "--", "true"],
        ["-nw5", "--kind", "lease", "--heartbeat", "2", "X", "true"],
        // Read alike, then refused alike by validation.
        ["X"],
        ["X", "--"],
        ["-s", "-x", "X", "true"],
        ["-s", "--kind", "soft", "X", "true"],
        ["--kind", "soft", "--range", "0:1", "X", "true"],
        ["--kind", "soft", "--fallback-to-soft", "X", "true"],
        ["--remove-on-release", "--range", "0:1", "X", "true"],
        ["--kind", "rw", "--range", "0:1", "X", "true"],
        ["--kind", "rw", "--fallback-to-soft", "X", "true"],
        ["--remove-on-release", "--kind", "rw", "-s", "X", "true"],
        ["-s", "--kind", "lease", "X", "true"],
        ["--kind", "lease", "--stale-threshold", "5", "X", "true"],
        ["--kind", "soft-rw", "--lease-duration", "5", "X", "true"],
        ["--heartbeat", "1", "X", "true"],
        ["--kind", "rw", "--stale-threshold", "9", "X", "true"],
        ["--kind", "soft-rw", "--heartbeat", "10", "--stale-threshold", "5", "X", "true"],
        ["--kind", "lease", "--heartbeat", "30", "X", "true"],
        ["--kind", "lease", "--range", "0:1", "X", "true"],
        ["--kind", "soft-rw", "--fallback-to-soft", "X", "true"],
        ["--kind", "soft-rw", "--remove-on-release", "X", "true"],
        ["--kind", "soft-rw", "--heartbeat", "-1", "X", "true"],
        ["--kind", "soft-rw", "--heartbeat", "nan", "X", "true"],
        ["--kind", "lease", "--lease-duration", "0", "X", "true"],
        ["--kind", "lease", "--lease-duration", "3e9", "X", "true"],
        ["-w", "nan", "X", "true"],
        ["--timeout=-1", "X", "true"],
        // A negative value after -w is joined to it (say what is wrong with it, not "missing value").
        ["-w", "-1", "X", "true"],
        ["-E", "-1", "X", "true"],
        ["-w", "1e12", "X", "true"],
        ["--range=", "X", "true"],
        ["X", "-c"],
        ["X", "-c", "echo", "hi"],
        ["-w-1", "X", "true"],
        ["-E", "256", "X", "true"],
        ["--range", "1", "X", "true"],
        ["--range", "a:b", "X", "true"],
        ["--range", "9223372036854775807:1", "X", "true"],
    ]

    /// Forms left to ArgumentParser: help, mistakes, repeats and spellings the quick reader skips.
    static let deferred: [[String]] = [
        [], ["--help"], ["-h"], ["-w"], ["-n"], ["--", "X", "true"], ["-q", "X", "true"],
        ["-wsoon", "X", "true"], ["-w", "soon", "X", "true"], ["-nwx", "X", "true"], ["-En9", "X", "true"],
        ["-nwfoo", "X", "true"],
        ["-w", "1", "-w", "2", "X", "true"], ["-x", "-x", "X", "true"], ["-xx", "X", "true"],
        ["-xq", "X", "true"], ["--kind", "nfs", "X", "true"], ["--shared=yes", "X", "true"],
        ["-E", "x", "X", "true"], ["--timeout=", "X", "true"], ["-", "true"], ["--verbose", "--nb", "-n", "X", "true"],
        ["--remove-on-release", "--remove-on-release", "X", "true"], ["--fallback-to-soft=yes", "X", "true"],
        ["--heartbeat", "X", "true"], ["--kind", "soft-rw", "--heartbeat", "1", "--heartbeat", "2", "X", "true"],
        ["--kind", "lease", "--lease-duration", "soon", "X", "true"], ["--stale-threshold=", "X", "true"],
    ]

    @Test(arguments: accepted)
    func quickReaderAgreesWithArgumentParser(_ given: [String]) throws {
        // As `FileLockCommand.main` reads them: bundles split first, for both readers.
        let arguments = RunRequest.splittingBundledValues(given[...])
        let quick = try #require(RunRequest(quickly: arguments[...]), "the quick reader should take \(given)")
        let quickValidates = (try? quick.validate()) != nil
        // As `FileLockCommand.main` falls back: the root command reads `run ...`.
        do {
            let full = try #require(try FileLockCommand.parseAsRoot(["run"] + arguments) as? Run)
            #expect(quickValidates, "ArgumentParser accepted \(arguments), the quick reader's validation did not")
            #expect(full.request == quick)
        } catch {
            #expect(!quickValidates, "ArgumentParser refused \(arguments): \(FileLockCommand.message(for: error))")
        }
    }

    @Test(arguments: deferred)
    func otherFormsGoToArgumentParser(_ arguments: [String]) {
        let split = RunRequest.splittingBundledValues(arguments[...])
        #expect(RunRequest(quickly: split[...]) == nil)
    }

    @Test func bundlesAreSplitAsFlockReadsThemAndOnlyBeforeTheLockFile() {
        let cases: [([String], [String])] = [
            (["-nw5", "X", "-nw5"], ["-n", "-w5", "X", "-nw5"]),
            (["-xnw", "5", "X", "true"], ["-x", "-n", "-w", "5", "X", "true"]),
            (["-nE9", "--kind", "-nw5", "X"], ["-n", "-E9", "--kind", "-nw5", "X"]),
            (["-w", "-nw5", "X"], ["-w", "-nw5", "X"]),
            (["--heartbeat", "5", "-nw5", "X"], ["--heartbeat", "5", "-n", "-w5", "X"]),
            (["--lease-duration", "-1", "X"], ["--lease-duration=-1", "X"]),
            (["--", "-nw5", "X"], ["--", "-nw5", "X"]),
            (["-xn", "-qw5", "-w5n", "--nw5", "X"], ["-xn", "-qw5", "-w5n", "--nw5", "X"]),
        ]
        for (given, expected) in cases {
            let split = RunRequest.splittingBundledValues(given[...])
            #expect(split == expected, "\(given)")
        }
    }

    @Test func quickReaderKeepsEverythingAfterTheLockFile() throws {
        let request = try #require(RunRequest(quickly: ["-n", "-w", "3", "/x.lock", "--", "a", "-n", "--", "b"]))
        #expect(request.lockFile == "/x.lock")
        #expect(request.command == ["a", "-n", "--", "b"])
        #expect(request.nonblock && request.timeout == 3 && !request.shared)
    }
}
