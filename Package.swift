// swift-tools-version:6.1
import PackageDescription

let package = Package(
    name: "swift-filelock",
    platforms: [.macOS(.v15)],
    products: [
        .library(name: "FileLocking", targets: ["FileLocking"]),
        .executable(name: "filelock", targets: ["filelock"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2")
    ],
    targets: [
        .target(name: "FileLocking"),
        .executableTarget(
            name: "filelock",
            dependencies: [
                "FileLocking",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ]
        ),
        // "Another process" for the tests: takes a lock and reports over stdout.
        .executableTarget(name: "lock-probe", dependencies: ["FileLocking"]),
        .testTarget(
            name: "FileLockingTests",
            // lock-probe is listed so that `swift test` builds it before the tests start it.
            dependencies: ["FileLocking", "lock-probe"]
        ),
    ],
    swiftLanguageModes: [.v6]
)
