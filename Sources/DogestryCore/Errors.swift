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

    /// The transport failure behind the error, when there was one (no decision is ever made by
    /// reading `message`: retries look at this).
    public var cause: TransportCause?

    public enum Kind: String, Sendable {
        case invalidInput, notFound, corrupt, io, remote, engine, config, unsupported, aborted, auth
    }

    public init(_ kind: Kind, _ message: String, cause: TransportCause? = nil) {
        self.kind = kind
        self.message = message.replacingOccurrences(of: "\n", with: " ")
        self.cause = cause
    }

    /// The same error with `context: ` put before its message (kind and cause kept).
    public func prefixed(_ context: String) -> DogestryError {
        DogestryError(kind, "\(context): \(message)", cause: cause)
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

/// Why a request got no (complete) answer: the typed cause a `DogestryError` keeps, so that the
/// retrying layer decides from it, never from message text.
public enum TransportCause: String, Sendable, Equatable {
    /// No connection within the connect timeout, or the whole request ran out of time.
    case timeout
    /// The server sent no response byte within the first-byte timeout after the request.
    case firstByteTimeout
    /// The transfer stopped moving for the stall timeout.
    case stalled
    /// The connection was reset or closed while the request or response was under way.
    case reset
    /// The server refused the connection (nothing listening).
    case refused
    /// The TLS handshake or certificate check failed.
    case tls
    /// The host name did not resolve.
    case dns
    /// The response body ended before its announced length.
    case truncated
    /// The URL could not be used.
    case invalidURL
    /// The transfer was cancelled by dogestry itself.
    case cancelled
    /// Any other transport failure.
    case other

    /// Worth another attempt: the same request may well succeed.
    public var isTransient: Bool {
        switch self {
        case .timeout, .firstByteTimeout, .stalled, .reset, .truncated: return true
        case .refused, .tls, .dns, .invalidURL, .cancelled, .other: return false
        }
    }
}

extension Error {
    /// True for a `DogestryError` whose transport cause is worth retrying.
    public var isTransientTransportFailure: Bool { (self as? DogestryError)?.cause?.isTransient ?? false }
}
