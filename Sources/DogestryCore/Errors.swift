import Foundation

/// The one error type users see: a single line that names the thing at fault.
///
/// Every layer of dogestry converts lower-level failures into a `DogestryError`
/// whose `message` is safe to print (it never contains a secret).
public struct DogestryError: Error, CustomStringConvertible, Equatable {
    /// What went wrong, as a single line.
    public var message: String
    /// A broad category, used by callers that need to branch (e.g. "not found").
    public var kind: Kind

    public enum Kind: String, Sendable {
        case invalidInput, notFound, corrupt, io, remote, engine, config, unsupported, aborted, auth
    }

    public init(_ kind: Kind, _ message: String) {
        self.kind = kind
        self.message = message.replacingOccurrences(of: "\n", with: " ")
    }

    public var description: String { message }

    public static func invalid(_ m: String) -> DogestryError { .init(.invalidInput, m) }
    public static func notFound(_ m: String) -> DogestryError { .init(.notFound, m) }
    public static func corrupt(_ m: String) -> DogestryError { .init(.corrupt, m) }
    public static func io(_ m: String) -> DogestryError { .init(.io, m) }
}

/// Describes a POSIX errno as text.
public func errnoString(_ code: Int32 = errno) -> String {
    String(cString: strerror(code))
}
