#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif
import FileLocking
import SystemPackage

/// The command line as the kernel gave it: bytes, not always UTF-8.
///
/// `CommandLine.arguments` turns bytes that are not UTF-8 into U+FFFD, so a lock file named
/// `bad\xff.lock` would become `bad\u{FFFD}.lock`, another file. The parsers see such an argument
/// as its escaped text (`bad\xff.lock`, also what messages show), and everything that reaches the
/// kernel (the lock file, the command and its arguments) is mapped back to the original bytes.
enum RawArguments {
    /// Every argument but the program's name, as the parsers read it.
    static let strings: [String] = table.strings

    private static let table: (strings: [String], bytes: [String: [UInt8]]) = {
        var strings: [String] = []
        var originals: [String: [UInt8]] = [:]
        for index in 1..<Int(CommandLine.argc) {
            guard let pointer = CommandLine.unsafeArgv[index] else { continue }
            let bytes = Array(UnsafeBufferPointer(start: pointer, count: strlen(pointer))).map { UInt8(bitPattern: $0) }
            if let text = String(validating: bytes, as: UTF8.self) {
                strings.append(text)
            } else {
                let escaped = FileLockError.displayText(ofPathBytes: bytes)
                // (A literal argument spelling the same escapes on the same command line would be
                // read as these bytes too; no real command line does that.)
                originals[escaped] = bytes
                strings.append(escaped)
            }
        }
        return (strings, originals)
    }()

    /// The bytes of an argument the parsers returned.
    static func bytes(of argument: String) -> [UInt8] {
        table.bytes[argument] ?? Array(argument.utf8)
    }

    /// An argument naming a file, as the path the kernel should see.
    ///
    /// - Throws: `FileLockError` with `.isDirectory` for a path ending in `/`, which names a folder
    ///   (a `FilePath` would drop the slash and name a file).
    static func filePath(_ argument: String) throws -> FilePath {
        let bytes = bytes(of: argument)
        guard bytes.count <= 1 || bytes.last != UInt8(ascii: "/") else {
            throw FileLockError(
                .isDirectory, path: argument,
                message: "'\(argument)' names a directory, not a lock file: pass a file path such as '\(argument).lock'")
        }
        return (bytes.map { CChar(bitPattern: $0) } + [0]).withUnsafeBufferPointer {
            FilePath(platformString: $0.baseAddress!)
        }
    }
}
