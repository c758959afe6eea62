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

public struct HTTPTransportOptions {
    /// Connect through this unix socket (the URL's host is then ignored).
    public var unixSocket: String?
    /// PEM file of CA certificates to trust (nil: libcurl's default store).
    public var caBundle: String?
    /// PEM client certificate and key (TLS client authentication).
    public var clientCert: String?
    public var clientKey: String?
    /// Skip TLS certificate and host name verification.
    public var insecure: Bool
    /// Seconds allowed for connecting (0: libcurl's default).
    public var connectTimeout: Int
    /// Abort a transfer that moves less than 1 byte/s for this many seconds (0: never).
    public var lowSpeedTimeout: Int
    public var userAgent: String

    public init(unixSocket: String? = nil, caBundle: String? = nil, clientCert: String? = nil, clientKey: String? = nil,
                insecure: Bool = false, connectTimeout: Int = 30, lowSpeedTimeout: Int = 120,
                userAgent: String = "dogestry") {
        self.unixSocket = unixSocket
        self.caBundle = caBundle
        self.clientCert = clientCert
        self.clientKey = clientKey
        self.insecure = insecure
        self.connectTimeout = connectTimeout
        self.lowSpeedTimeout = lowSpeedTimeout
        self.userAgent = userAgent
    }
}

/// A transport-level failure (no HTTP response), before it is turned into a `DogestryError`.
public struct HTTPTransportFailure {
    public enum Kind: String {
        case invalidURL, resolve, connect, timeout, tls, connection, cancelled, other
    }
    public var kind: Kind
    /// What was being talked to: the URL without query, fragment and credentials, or
    /// `unix://<socket>` for unix-socket transports.
    public var target: String
    /// Human-readable reason (errno text for connection failures, libcurl's message otherwise).
    public var reason: String
    /// The libcurl error code.
    public var curlCode: Int

    /// The default one-line error, e.g. `cannot connect to unix:///tmp/x.sock: No such file or directory`.
    public var defaultError: DogestryError {
        switch kind {
        case .invalidURL: return DogestryError(.invalidInput, "invalid URL \(target): \(reason)")
        case .resolve: return DogestryError(.remote, "cannot resolve host of \(target): \(reason)")
        case .connect: return DogestryError(.remote, "cannot connect to \(target): \(reason)")
        case .timeout: return DogestryError(.remote, "timeout talking to \(target)")
        case .tls: return DogestryError(.remote, "TLS error talking to \(target): \(reason)")
        case .connection: return DogestryError(.remote, "connection to \(target) failed: \(reason)")
        case .cancelled: return DogestryError(.aborted, "transfer from \(target) cancelled")
        case .other: return DogestryError(.remote, "HTTP request to \(target) failed: \(reason)")
        }
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
