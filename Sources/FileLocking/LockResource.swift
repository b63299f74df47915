/// What a lock protects and is named by: a lock file's path, or a lock's name on a server.
///
/// Every ``FileLockError`` names one. File kinds (`FileLock`, `SoftFileLock`, `ByteRangeLock`)
/// name a ``Kind/file`` by its path; a lock that lives on a server (such as a PostgreSQL advisory
/// lock) names a ``Kind/named`` resource by its lock name.
public struct LockResource: Sendable, Hashable, CustomStringConvertible {
    /// How the resource is named: compare with the static members (`resource.kind == .file`) or
    /// `switch` with a `default:`; new kinds may be added without breaking clients' code.
    public struct Kind: Sendable, Hashable, CustomStringConvertible {
        private enum Value: String, Sendable, Hashable {
            case file, named
        }

        private let value: Value

        private init(_ value: Value) { self.value = value }

        /// The kind's name, as `file`.
        public var description: String { value.rawValue }

        /// A lock file (or the file whose byte ranges are locked), named by its path.
        public static let file = Kind(.file)

        /// A lock named by a string rather than a path, such as a PostgreSQL advisory lock's name.
        public static let named = Kind(.named)
    }

    /// How the resource is named.
    public var kind: Kind

    /// The lock file's path (as given by the caller, bytes that are not UTF-8 shown as `\xNN`)
    /// or the lock's name.
    public var name: String

    /// Creates a resource of `kind` named `name`.
    public init(kind: Kind, name: String) {
        self.kind = kind
        self.name = name
    }

    /// The lock file at `path`.
    public static func file(_ path: String) -> LockResource {
        LockResource(kind: .file, name: path)
    }

    /// The lock called `name` (on a server, such as a PostgreSQL advisory lock).
    public static func named(_ name: String) -> LockResource {
        LockResource(kind: .named, name: name)
    }

    /// The lock file's path; `nil` for a resource that is not a file.
    public var path: String? { kind == .file ? name : nil }

    /// As messages name it: `lock file '/tmp/app.lock'` or `lock 'nightly-report'`.
    public var description: String {
        kind == .file ? "lock file '\(name)'" : "lock '\(name)'"
    }
}
