// swift-tools-version:6.2
import PackageDescription

let package = Package(
    name: "swift-filelock",
    platforms: [.macOS(.v15)],
    products: [
        .library(name: "FileLocking", targets: ["FileLocking"]),
        // PostgreSQL advisory locks for machines that share no filesystem: a product of its own,
        // so that users of the file locks never pull in SwiftNIO.
        .library(name: "PostgresLocking", targets: ["PostgresLocking"]),
        .executable(name: "filelock", targets: ["filelock"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
        // FilePath: lock paths are bytes (not always UTF-8), as the kernel sees them.
        .package(url: "https://github.com/apple/swift-system", from: "1.8.1"),
        // Tests only: property-based tests that random values at the edges of their types never trap.
        .package(url: "https://github.com/x-sheep/swift-property-based", from: "2.0.1"),
        // PostgresLocking only: the PostgreSQL wire protocol on SwiftNIO.
        .package(url: "https://github.com/vapor/postgres-nio", from: "1.33.2"),
        // PostgresLocking only: our own TCP connections (keepalives), TLS settings, and a silent logger.
        .package(url: "https://github.com/apple/swift-nio", from: "2.101.2"),
        .package(url: "https://github.com/apple/swift-nio-ssl", from: "2.37.6"),
        .package(url: "https://github.com/apple/swift-log", from: "1.16.2"),
    ],
    targets: [
        .target(
            name: "FileLocking",
            dependencies: ["CFileLockShims", .product(name: "SystemPackage", package: "swift-system")]
        ),
        .target(
            name: "PostgresLocking",
            dependencies: [
                "FileLocking",
                .product(name: "PostgresNIO", package: "postgres-nio"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        // The few C calls Swift cannot import (renameat2 is a raw system call).
        .target(name: "CFileLockShims"),
        // Starting and talking to child processes: the demo's workers and the tests' probes.
        .target(name: "Subprocesses"),
        .executableTarget(
            name: "filelock",
            dependencies: [
                "FileLocking",
                "PostgresLocking",
                "Subprocesses",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "SystemPackage", package: "swift-system"),
            ],
            // A release build on Linux is one static executable: loading and relocating the
            // shared Swift runtime, libstdc++ and Foundation takes longer than `flock(1)`'s whole
            // run, and `filelock run` is meant to be as cheap to put in front of a command.
            // - lld (shipped with the Swift toolchain): gold warns that glibc's dlopen and user
            //   and group lookups (linked in by the Swift runtime and FoundationEssentials) need the
            //   same glibc at run time in a static program. lld does not print those warnings;
            //   the tool calls none of these functions (checked with strace).
            // - The `-l`: Foundation's own static libraries, which SwiftPM's autolink data leaves
            //   out when only the link step is static (Swift 6.3): FoundationEssentials' two, and
            //   Foundation, CoreFoundation and FoundationInternationalization with its ICU (and
            //   libstdc++), which PostgresNIO's `import Foundation` brings in.
            linkerSettings: [.unsafeFlags(["-static-executable", "-use-ld=lld", "-l_FoundationCollections", "-l_FoundationCShims", "-lFoundation", "-lCoreFoundation", "-lFoundationInternationalization", "-l_FoundationICU", "-lBlocksRuntime", "-lstdc++"], .when(platforms: [.linux], configuration: .release))]
        ),
        // "Another process" for the tests: takes a lock and reports over stdout.
        .executableTarget(name: "lock-probe", dependencies: ["FileLocking", "PostgresLocking"]),
        // Run by Benchmarks/run.sh in release mode; compared with C and Python in the same run.
        .executableTarget(
            name: "filelock-benchmark",
            dependencies: ["FileLocking"],
            path: "Benchmarks/Sources/filelock-benchmark"
        ),
        // Run by Benchmarks/postgres.sh against a throw-away server: PostgresLock vs a raw
        // advisory-lock loop on one PostgresNIO connection, in the same run.
        .executableTarget(
            name: "postgres-benchmark",
            dependencies: [
                "FileLocking", "PostgresLocking", "Subprocesses",
                .product(name: "PostgresNIO", package: "postgres-nio"),
                .product(name: "Logging", package: "swift-log"),
            ],
            path: "Benchmarks/Sources/postgres-benchmark"
        ),
        .testTarget(
            name: "FileLockingTests",
            // The executables are listed so that `swift test` builds them before the tests start them.
            dependencies: [
                "FileLocking", "PostgresLocking", "Subprocesses", "lock-probe", "filelock",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "SystemPackage", package: "swift-system"),
                .product(name: "PropertyBased", package: "swift-property-based"),
            ],
            exclude: ["Support/python_probe.py"]
        ),
    ],
    swiftLanguageModes: [.v6]
)
