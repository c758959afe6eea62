import DogestryCore
import Foundation

/// The body of a request.
public enum HTTPBody {
    case none
    case bytes([UInt8])
    /// A streamed body. With a known `length` it is sent with Content-Length (and the source must
    /// supply exactly that many bytes); with `nil` it is sent with chunked transfer encoding.
    case source(ByteSource, length: Int64?)
}

public struct HTTPRequest {
    public var method: String
    /// Full URL. For unix-socket transports use `http://localhost/path`.
    public var url: String
    /// Extra headers, sent in order. Setting a header curl adds by itself (Host, Content-Type,
    /// Accept…) replaces it; a header with an empty value removes it.
    public var headers: [(String, String)]
    public var body: HTTPBody

    public init(method: String = "GET", url: String, headers: [(String, String)] = [], body: HTTPBody = .none) {
        self.method = method
        self.url = url
        self.headers = headers
        self.body = body
    }
}

public struct HTTPResponse {
    public var status: Int
    /// Header names are lowercased; for repeated headers the last one wins.
    public var headers: [String: String]
    /// For responses whose status is not 2xx: the first 64 KiB of the body (also delivered to
    /// the sink / stream as usual), so callers can build an error message without buffering
    /// successful bodies. Empty for 2xx responses.
    public var errorBody: [UInt8]

    public init(status: Int, headers: [String: String] = [:], errorBody: [UInt8] = []) {
        self.status = status
        self.headers = headers
        self.errorBody = errorBody
    }

    public func header(_ name: String) -> String? { headers[name.lowercased()] }

    public var isSuccess: Bool { (200..<300).contains(status) }

    /// The error body as text (control characters and newlines flattened), clipped to `max` characters.
    public func errorText(max: Int = 300) -> String {
        let s = String(decoding: errorBody, as: UTF8.self)
        let flat = s.unicodeScalars.map { $0.value < 32 || $0.value == 127 ? " " : String($0) }.joined()
            .split(separator: " ", omittingEmptySubsequences: true).joined(separator: " ")
        return flat.count > max ? String(flat.prefix(max - 3)) + "..." : flat
    }
}

/// How long a request may wait, set once and applied by `HTTPClient` to every request.
///
/// `connect`: seconds to establish the connection (TCP and TLS). `firstByte`: seconds from the end
/// of the request to the first byte of the response. `stall`: seconds a transfer may go without
/// moving a byte in either direction once it is under way. Time spent waiting for dogestry's own
/// reader or writer (a full pipe, a slow disk) never counts as a stall. 0 turns a limit off.
public struct HTTPTimeouts: Sendable, Equatable {
    public var connect: Double
    public var firstByte: Double
    public var stall: Double

    /// The defaults for remotes: `[transfer] connect-timeout`, `first-byte-timeout`, `stall-timeout`.
    public static let remoteDefault = HTTPTimeouts(connect: 10, firstByte: 60, stall: 30)
    /// No limits but the connect one (engines think for minutes before their first byte).
    public static let engine = HTTPTimeouts(connect: 30, firstByte: 0, stall: 0)

    public init(connect: Double, firstByte: Double, stall: Double) {
        self.connect = connect; self.firstByte = firstByte; self.stall = stall
    }
}

public struct HTTPTransportOptions: Sendable {
    /// Connect through this unix socket (the URL's host is then ignored).
    public var unixSocket: String?
    /// PEM file of CA certificates to trust (nil: libcurl's default store).
    public var caBundle: String?
    /// PEM client certificate and key (TLS client authentication).
    public var clientCert: String?
    public var clientKey: String?
    /// Skip TLS certificate and host name verification.
    public var insecure: Bool
    public var timeouts: HTTPTimeouts
    public var userAgent: String

    /// Seconds allowed for connecting (0: libcurl's default); the same as `timeouts.connect`.
    public var connectTimeout: Int {
        get { Int(timeouts.connect) }
        set { timeouts.connect = Double(newValue) }
    }
    /// Seconds a transfer may stall (0: never); the same as `timeouts.stall`.
    public var lowSpeedTimeout: Int {
        get { Int(timeouts.stall) }
        set { timeouts.stall = Double(newValue) }
    }

    public init(unixSocket: String? = nil, caBundle: String? = nil, clientCert: String? = nil, clientKey: String? = nil,
                insecure: Bool = false, timeouts: HTTPTimeouts = .remoteDefault, userAgent: String = "dogestry") {
        self.unixSocket = unixSocket
        self.caBundle = caBundle
        self.clientCert = clientCert
        self.clientKey = clientKey
        self.insecure = insecure
        self.timeouts = timeouts
        self.userAgent = userAgent
    }

    /// The same with explicit connect and stall timeouts; the stall limit bounds the wait for the
    /// first byte too (0: no limit).
    public init(unixSocket: String? = nil, caBundle: String? = nil, insecure: Bool = false,
                connectTimeout: Int, lowSpeedTimeout: Int = 0, userAgent: String = "dogestry") {
        self.init(unixSocket: unixSocket, caBundle: caBundle, insecure: insecure,
                  timeouts: HTTPTimeouts(connect: Double(connectTimeout), firstByte: Double(lowSpeedTimeout), stall: Double(lowSpeedTimeout)),
                  userAgent: userAgent)
    }
}

/// A transport-level failure (no HTTP response), before it is turned into a `DogestryError`.
public struct HTTPTransportFailure: Sendable {
    public enum Kind: String, Sendable {
        case invalidURL, resolve, connect, timeout, firstByteTimeout, stalled, tls, connection, truncated, cancelled, other
    }
    public var kind: Kind
    /// What was being talked to: the URL without query, fragment and credentials, or
    /// `unix://<socket>` for unix-socket transports.
    public var target: String
    /// Human-readable reason (errno text for connection failures, libcurl's message otherwise).
    public var reason: String
    /// The libcurl error code.
    public var curlCode: Int
    /// The limit that ran out, for `firstByteTimeout` and `stalled`.
    public var seconds: Double = 0

    /// The typed cause a `DogestryError` made from this failure keeps.
    public var cause: TransportCause {
        switch kind {
        case .invalidURL: return .invalidURL
        case .resolve: return .dns
        case .connect: return .refused
        case .timeout: return .timeout
        case .firstByteTimeout: return .firstByteTimeout
        case .stalled: return .stalled
        case .tls: return .tls
        case .connection: return .reset
        case .truncated: return .truncated
        case .cancelled: return .cancelled
        case .other: return .other
        }
    }

    /// The default one-line error, e.g. `cannot connect to unix:///tmp/x.sock: No such file or directory`.
    public var defaultError: DogestryError {
        let c = cause
        switch kind {
        case .invalidURL: return DogestryError(.invalidInput, "invalid URL \(target): \(reason)", cause: c)
        case .resolve: return DogestryError(.remote, "cannot resolve host of \(target): \(reason)", cause: c)
        case .connect: return DogestryError(.remote, "cannot connect to \(target): \(reason)", cause: c)
        case .timeout: return DogestryError(.remote, "timeout talking to \(target)", cause: c)
        case .firstByteTimeout:
            return DogestryError(.remote, "timeout talking to \(target): no response within \(Self.seconds(seconds))", cause: c)
        case .stalled:
            return DogestryError(.remote, "transfer with \(target) stalled: no data moved for \(Self.seconds(seconds))", cause: c)
        case .tls: return DogestryError(.remote, "TLS error talking to \(target): \(reason)", cause: c)
        case .connection: return DogestryError(.remote, "connection to \(target) failed: \(reason)", cause: c)
        case .truncated: return DogestryError(.remote, "response from \(target) ended early: \(reason)", cause: c)
        case .cancelled: return DogestryError(.aborted, "transfer from \(target) cancelled", cause: c)
        case .other: return DogestryError(.remote, "HTTP request to \(target) failed: \(reason)", cause: c)
        }
    }

    static func seconds(_ s: Double) -> String {
        s == s.rounded() ? "\(Int(s)) s" : String(format: "%.1f s", s)
    }
}

/// `url` without query string, fragment and user info (safe to print).
public func redactedURL(_ url: String) -> String {
    var s = Substring(url)
    if let i = s.firstIndex(where: { $0 == "?" || $0 == "#" }) { s = s[..<i] }
    if let schemeEnd = s.range(of: "://") {
        let rest = s[schemeEnd.upperBound...]
        let authorityEnd = rest.firstIndex(of: "/") ?? rest.endIndex
        if let at = rest[..<authorityEnd].lastIndex(of: "@") {
            return String(s[..<schemeEnd.upperBound]) + String(rest[rest.index(after: at)...])
        }
    }
    return String(s)
}
