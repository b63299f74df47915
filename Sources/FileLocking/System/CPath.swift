// Paths as bytes, as the kernel sees them: not necessarily UTF-8.

/// A path as a NUL-terminated C string of bytes (not necessarily UTF-8), converted once.
struct CPath: Sendable, Hashable, CustomStringConvertible {
    let bytes: [CChar]
    init(_ path: String) { bytes = Array(path.utf8CString) }
    init(bytes path: [UInt8]) { bytes = path.map { CChar(bitPattern: $0) } + [0] }

    /// The path's bytes without the terminating NUL.
    var pathBytes: [UInt8] { bytes.dropLast().map { UInt8(bitPattern: $0) } }

    /// A name beside this one: the last component with `suffix` added, within the 255 bytes a
    /// file name may have (a marker named near that limit must still get its helper names): a
    /// name too long keeps its end, behind a hash of the whole name, so that two long names
    /// never share a helper name. Deterministic: every process makes the same name.
    func appending(_ suffix: String) -> CPath {
        let path = pathBytes
        let nameStart = (path.lastIndex(of: UInt8(ascii: "/")) ?? -1) + 1
        let name = path[nameStart...]
        let room = 255 - suffix.utf8.count
        guard name.count > room else { return CPath(bytes: path + Array(suffix.utf8)) }
        // FNV-1a, 64 bits, as 16 hex digits and a separator.
        var hash: UInt64 = 0xcbf2_9ce4_8422_2325
        for byte in name { hash = (hash ^ UInt64(byte)) &* 0x100_0000_01b3 }
        let digits = String(hash, radix: 16)
        let tag = Array((String(repeating: "0", count: 16 - digits.count) + digits + "~").utf8)
        return CPath(bytes: Array(path[..<nameStart]) + tag + name.suffix(room - tag.count) + Array(suffix.utf8))
    }

    /// The path for messages (bytes that are not UTF-8 escaped as `\xNN`).
    var description: String { CPath.display(pathBytes) }

    func withPointer<T>(_ body: (UnsafePointer<CChar>) -> T) -> T {
        bytes.withUnsafeBufferPointer { body($0.baseAddress!) }
    }
}

extension CPath {
    static let slash = UInt8(ascii: "/")

    /// The last component, without trailing slashes.
    static func lastComponent(of path: [UInt8]) -> [UInt8] {
        var trimmed = path[...]
        while trimmed.count > 1 && trimmed.last == slash { trimmed = trimmed.dropLast() }
        guard let index = trimmed.lastIndex(of: slash) else { return Array(trimmed) }
        return Array(trimmed[(index + 1)...])
    }

    /// The folder that holds the last component: everything before it, without the slashes
    /// that separate them (`"/a"` for `"/a//b//"`); `"/"` for a top-level name, `"."` for a bare
    /// name. (Repeated slashes left in would make `" "` of `"/x/ /// "` count as a folder of its own
    /// for every slash.)
    static func parent(of path: [UInt8]) -> [UInt8] {
        var trimmed = path[...]
        while trimmed.count > 1 && trimmed.last == slash { trimmed = trimmed.dropLast() }
        guard let index = trimmed.lastIndex(of: slash) else { return [UInt8(ascii: ".")] }
        var parent = trimmed[..<index]
        while parent.last == slash { parent = parent.dropLast() }
        return parent.isEmpty ? [slash] : Array(parent)
    }

    /// Removes `.`, `..` and repeated slashes from an absolute path without touching the disk.
    static func normalized(_ path: [UInt8]) -> [UInt8] {
        var parts: [ArraySlice<UInt8>] = []
        for part in path.split(separator: slash) {
            if part.elementsEqual([UInt8(ascii: ".")]) { continue }
            if part.elementsEqual([UInt8(ascii: "."), UInt8(ascii: ".")]) {
                if !parts.isEmpty { parts.removeLast() }
                continue
            }
            parts.append(part)
        }
        var result: [UInt8] = []
        for part in parts { result += [slash] + part }
        return result.isEmpty ? [slash] : result
    }

    /// The bytes as text for messages: valid UTF-8 as it is, every other byte as `\xNN`.
    static func display(_ bytes: some Collection<UInt8>) -> String {
        let bytes = Array(bytes)
        if let text = String(validating: bytes, as: UTF8.self) { return text }
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
                    let digits = String(byte, radix: 16, uppercase: false)
                    result += "\\x" + (digits.count == 1 ? "0" : "") + digits
                }
                position += length
            case .emptyInput:
                return result
            }
        }
    }
}
