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
            var bytes: [UInt8] = []
            var cursor = pointer
            while cursor.pointee != 0 {
                bytes.append(UInt8(bitPattern: cursor.pointee))
                cursor += 1
            }
            if let text = String(validating: bytes, as: UTF8.self) {
                strings.append(text)
            } else {
                let escaped = escaped(bytes)
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
    static func filePath(_ argument: String) -> FilePath {
        (bytes(of: argument).map { CChar(bitPattern: $0) } + [0]).withUnsafeBufferPointer {
            FilePath(platformString: $0.baseAddress!)
        }
    }

    /// Valid UTF-8 as it is, every other byte as `\xNN`.
    private static func escaped(_ bytes: [UInt8]) -> String {
        var result = ""
        var iterator = bytes.makeIterator()
        var parser = Unicode.UTF8.ForwardParser()
        var position = 0
        while true {
            switch parser.parseScalar(from: &iterator) {
            case .valid(let encoded):
                result.unicodeScalars.append(Unicode.UTF8.decode(encoded))
                position += encoded.count
            case .error(let length):
                for byte in bytes[position..<(position + length)] {
                    let digits = String(byte, radix: 16)
                    result += "\\x" + (digits.count == 1 ? "0" : "") + digits
                }
                position += length
            case .emptyInput:
                return result
            }
        }
    }
}
