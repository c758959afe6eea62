import COpenSSL
import DogestryCore
import DogestryHTTP
import Foundation

/// AWS credentials: an access key pair and, for temporary credentials, a session token and
/// an expiry time. The secret never appears in `description` / `debugDescription`.
public struct AWSCredentials: Sendable, Equatable, CustomStringConvertible, CustomDebugStringConvertible {
    public var accessKeyID: String
    public var secretAccessKey: String
    public var sessionToken: String?
    /// When temporary credentials stop working (nil: they do not expire).
    public var expiration: Date?

    public init(accessKeyID: String, secretAccessKey: String, sessionToken: String? = nil, expiration: Date? = nil) {
        self.accessKeyID = accessKeyID
        self.secretAccessKey = secretAccessKey
        self.sessionToken = sessionToken
        self.expiration = expiration
    }

    public var description: String {
        var s = "AWSCredentials(accessKeyID: \(accessKeyID), secretAccessKey: <redacted>"
        if sessionToken != nil { s += ", sessionToken: <redacted>" }
        if let e = expiration { s += ", expiration: \(e)" }
        return s + ")"
    }
    public var debugDescription: String { description }
}

/// AWS Signature Version 4 for S3: signed headers and presigned (query-string) URLs.
///
/// The signer follows the published algorithm: canonical request (method, canonical URI,
/// canonical query string, canonical headers, signed headers, payload hash) → string to sign
/// (`AWS4-HMAC-SHA256`, timestamp, scope `yyyymmdd/region/service/aws4_request`, hash of the
/// canonical request) → signature with the key derived from the secret by HMAC-SHA256 over the
/// scope. The canonical URI is the already-encoded path as given (S3 does not normalise or
/// double-encode paths); query components are decoded and re-encoded with `uriEncode`, so a URL
/// may carry them either encoded or raw (but a literal `+` means `+`, never a space).
public struct SigV4Signer: Sendable {
    public var region: String
    public var service: String = "s3"

    public static let algorithm = "AWS4-HMAC-SHA256"
    public static let unsignedPayload = "UNSIGNED-PAYLOAD"
    /// The SHA-256 of zero bytes (the payload hash of a request without body).
    public static let emptyPayloadHash = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    /// Longest validity S3 accepts for a presigned URL (7 days).
    public static let maxPresignExpiry = 604_800

    /// Request headers never signed (hop-by-hop, or changed by proxies / the HTTP library);
    /// the same list as botocore's.
    static let unsignedHeaders: Set<String> = [
        "connection", "expect", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailer",
        "transfer-encoding", "upgrade", "user-agent", "x-amzn-trace-id",
    ]
    /// Headers the signer sets itself (a caller's value is replaced).
    static let signerHeaders: Set<String> = ["authorization", "x-amz-date", "x-amz-content-sha256", "x-amz-security-token"]

    public init(region: String, service: String = "s3") {
        self.region = region
        self.service = service
    }

    // MARK: signing

    /// Signs a request: adds `X-Amz-Date`, `X-Amz-Content-SHA256` (= `payloadHash`, which is the
    /// lowercase hex SHA-256 of the body or `UNSIGNED-PAYLOAD`; empty means `UNSIGNED-PAYLOAD`),
    /// `X-Amz-Security-Token` when the credentials have one, `Host` (unless given), and
    /// `Authorization`. Returns the full header list to send: the caller's headers (minus any
    /// the signer replaces) followed by those.
    ///
    /// Every header given is signed except hop-by-hop ones (`Expect`, `Transfer-Encoding`,
    /// `User-Agent`, …) and headers with an empty value (for `HTTPClient` those remove a header).
    public func sign(method: String, url: String, headers: [(String, String)], payloadHash: String,
                     credentials: AWSCredentials, date: Date) throws -> [(String, String)] {
        try validate(credentials)
        let parts = try URLParts(url)
        let hash = try Self.normalizedPayloadHash(payloadHash)
        let stamp = Self.timestamp(date)

        var out = headers.filter { !Self.signerHeaders.contains($0.0.lowercased()) }
        if !out.contains(where: { $0.0.lowercased() == "host" }) {
            out.append(("Host", parts.hostHeader))
        }
        out.append(("X-Amz-Date", stamp))
        out.append(("X-Amz-Content-SHA256", hash))
        if let token = credentials.sessionToken, !token.isEmpty {
            out.append(("X-Amz-Security-Token", token))
        }

        // Canonical headers: lowercase names, values trimmed with inner whitespace runs
        // collapsed, repeated headers joined by ",", sorted by name.
        var grouped: [String: [String]] = [:]
        for (name, value) in out {
            let lname = name.lowercased().trimmingCharacters(in: .whitespaces)
            if value.isEmpty || Self.unsignedHeaders.contains(lname) { continue }
            grouped[lname, default: []].append(Self.trimAll(value))
        }
        let names = grouped.keys.sorted { Array($0.utf8).lexicographicallyPrecedes(Array($1.utf8)) }
        let canonicalHeaders = names.map { "\($0):\(grouped[$0]!.joined(separator: ","))\n" }.joined()
        let signedHeaders = names.joined(separator: ";")

        let canonicalRequest = [
            method.uppercased(), parts.canonicalURI, Self.canonicalQuery(parts.query),
            canonicalHeaders, signedHeaders, hash,
        ].joined(separator: "\n")
        let signature = self.signature(canonicalRequest: canonicalRequest, timestamp: stamp, credentials: credentials)
        let scope = credentialScope(stamp)
        out.append(("Authorization",
                    "\(Self.algorithm) Credential=\(credentials.accessKeyID)/\(scope), SignedHeaders=\(signedHeaders), Signature=\(signature)"))
        return out
    }

    /// A presigned URL (query-string authentication) valid for `expires` seconds (1…604800) from
    /// `date`: the URL with `X-Amz-Algorithm`, `X-Amz-Credential`, `X-Amz-Date`, `X-Amz-Expires`,
    /// `X-Amz-SignedHeaders=host`, `X-Amz-Security-Token` (with temporary credentials) and
    /// `X-Amz-Signature` appended to its query. The payload is `UNSIGNED-PAYLOAD`.
    public func presign(method: String, url: String, expires: Int, credentials: AWSCredentials, date: Date) throws -> String {
        try validate(credentials)
        guard (1...Self.maxPresignExpiry).contains(expires) else {
            throw DogestryError.invalid("presigned URL expiry must be 1…\(Self.maxPresignExpiry) seconds, not \(expires)")
        }
        let parts = try URLParts(url)
        let stamp = Self.timestamp(date)
        var auth: [(String, String)] = [
            ("X-Amz-Algorithm", Self.algorithm),
            ("X-Amz-Credential", "\(credentials.accessKeyID)/\(credentialScope(stamp))"),
            ("X-Amz-Date", stamp),
            ("X-Amz-Expires", String(expires)),
            ("X-Amz-SignedHeaders", "host"),
        ]
        if let token = credentials.sessionToken, !token.isEmpty { auth.append(("X-Amz-Security-Token", token)) }
        // The caller's query minus any stale auth parameters, then ours.
        let kept = (parts.query ?? "").split(separator: "&", omittingEmptySubsequences: true).filter { pair in
            let key = String(pair.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)[0])
            return !Self.presignParams.contains(Self.percentDecodedString(key).lowercased())
        }.map(String.init)
        let authQuery = auth.map { "\(Self.uriEncode($0.0, encodeSlash: true))=\(Self.uriEncode($0.1, encodeSlash: true))" }
        let query = (kept + authQuery).joined(separator: "&")

        let canonicalRequest = [
            method.uppercased(), parts.canonicalURI, Self.canonicalQuery(query),
            "host:\(parts.hostHeader)\n", "host", Self.unsignedPayload,
        ].joined(separator: "\n")
        let signature = self.signature(canonicalRequest: canonicalRequest, timestamp: stamp, credentials: credentials)
        return parts.base + parts.rawPath + "?" + query + "&X-Amz-Signature=" + signature
    }

    static let presignParams: Set<String> = [
        "x-amz-algorithm", "x-amz-credential", "x-amz-date", "x-amz-expires", "x-amz-signedheaders",
        "x-amz-security-token", "x-amz-signature",
    ]

    // MARK: pieces

    func credentialScope(_ timestamp: String) -> String {
        "\(timestamp.prefix(8))/\(region)/\(service)/aws4_request"
    }

    func signature(canonicalRequest: String, timestamp: String, credentials: AWSCredentials) -> String {
        let stringToSign = [Self.algorithm, timestamp, credentialScope(timestamp), Self.sha256Hex(canonicalRequest)]
            .joined(separator: "\n")
        var key = hmacSHA256(key: Array(("AWS4" + credentials.secretAccessKey).utf8), data: Array(timestamp.prefix(8).utf8))
        key = hmacSHA256(key: key, data: Array(region.utf8))
        key = hmacSHA256(key: key, data: Array(service.utf8))
        key = hmacSHA256(key: key, data: Array("aws4_request".utf8))
        return hexString(hmacSHA256(key: key, data: Array(stringToSign.utf8)))
    }

    func validate(_ c: AWSCredentials) throws {
        if region.isEmpty || region.contains(where: { $0 == "/" || $0.isWhitespace }) {
            throw DogestryError(.config, "cannot sign S3 request: invalid region \"\(region)\"")
        }
        if service.isEmpty || service.contains(where: { $0 == "/" || $0.isWhitespace }) {
            throw DogestryError(.config, "cannot sign S3 request: invalid service name \"\(service)\"")
        }
        if c.accessKeyID.isEmpty || c.accessKeyID.contains(where: { $0 == "/" || $0.isWhitespace }) {
            throw DogestryError(.auth, "cannot sign S3 request: the access key ID is empty or contains '/' or spaces")
        }
        if c.secretAccessKey.isEmpty {
            throw DogestryError(.auth, "cannot sign S3 request: the secret access key is empty")
        }
    }

    static func normalizedPayloadHash(_ h: String) throws -> String {
        if h.isEmpty { return unsignedPayload }
        if h == unsignedPayload || h.hasPrefix("STREAMING-") { return h }
        let lower = h.lowercased()
        if Digest.isHex64(lower) { return lower }
        throw DogestryError.invalid("payload hash must be 64 hex characters or UNSIGNED-PAYLOAD, not \"\(h.prefix(80))\"")
    }

    /// `yyyyMMdd'T'HHmmss'Z'` in UTC (fractions of a second dropped).
    static func timestamp(_ date: Date) -> String {
        var t = time_t(date.timeIntervalSince1970.rounded(.down))
        var tmv = tm()
        gmtime_r(&t, &tmv)
        return String(format: "%04d%02d%02dT%02d%02d%02dZ", Int(tmv.tm_year) + 1900, Int(tmv.tm_mon) + 1, Int(tmv.tm_mday),
                      Int(tmv.tm_hour), Int(tmv.tm_min), Int(tmv.tm_sec))
    }

    static func sha256Hex(_ s: String) -> String {
        let h = SHA256Hasher()
        h.update(Array(s.utf8))
        return hexString(h.finalizeBytes())
    }

    /// Trims leading/trailing whitespace and collapses inner runs to one space.
    static func trimAll(_ v: String) -> String {
        v.split(whereSeparator: { $0 == " " || $0 == "\t" || $0 == "\n" || $0 == "\r" || $0 == "\u{0B}" || $0 == "\u{0C}" })
            .joined(separator: " ")
    }

    /// The canonical query string of a raw query: each `key[=value]` decoded and re-encoded,
    /// `key` alone becoming `key=`, sorted by encoded key then encoded value.
    static func canonicalQuery(_ query: String?) -> String {
        guard let query = query, !query.isEmpty else { return "" }
        var pairs: [([UInt8], [UInt8])] = []
        for piece in query.split(separator: "&", omittingEmptySubsequences: true) {
            let kv = piece.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
            let k = encodeBytes(percentDecoded(Substring(kv[0])), encodeSlash: true)
            let v = kv.count > 1 ? encodeBytes(percentDecoded(kv[1]), encodeSlash: true) : []
            pairs.append((k, v))
        }
        pairs.sort { a, b in
            a.0 != b.0 ? a.0.lexicographicallyPrecedes(b.0) : a.1.lexicographicallyPrecedes(b.1)
        }
        return pairs.map { String(decoding: $0.0, as: UTF8.self) + "=" + String(decoding: $0.1, as: UTF8.self) }
            .joined(separator: "&")
    }

    /// Decodes `%XX` escapes (an invalid escape is kept literally).
    static func percentDecoded(_ s: Substring) -> [UInt8] {
        let b = Array(s.utf8)
        var out: [UInt8] = []
        out.reserveCapacity(b.count)
        var i = 0
        func hexVal(_ c: UInt8) -> UInt8? {
            switch c {
            case 48...57: return c - 48
            case 65...70: return c - 55
            case 97...102: return c - 87
            default: return nil
            }
        }
        while i < b.count {
            if b[i] == 37, i + 2 < b.count, let h = hexVal(b[i + 1]), let l = hexVal(b[i + 2]) {
                out.append(h << 4 | l)
                i += 3
            } else {
                out.append(b[i])
                i += 1
            }
        }
        return out
    }

    static func percentDecodedString(_ s: String) -> String {
        String(decoding: percentDecoded(Substring(s)), as: UTF8.self)
    }

    /// S3 URI encoding of one path segment or query component: every UTF-8 byte except the
    /// RFC 3986 unreserved characters (`A-Z a-z 0-9 - . _ ~`) becomes `%XX` (uppercase hex);
    /// `/` is kept unless `encodeSlash`.
    public static func uriEncode(_ s: String, encodeSlash: Bool) -> String {
        String(decoding: encodeBytes(Array(s.utf8), encodeSlash: encodeSlash), as: UTF8.self)
    }

    static func encodeBytes(_ bytes: [UInt8], encodeSlash: Bool) -> [UInt8] {
        let hex = Array("0123456789ABCDEF".utf8)
        var out: [UInt8] = []
        out.reserveCapacity(bytes.count)
        for c in bytes {
            let unreserved = (c >= 65 && c <= 90) || (c >= 97 && c <= 122) || (c >= 48 && c <= 57)
                || c == 45 || c == 46 || c == 95 || c == 126
            if unreserved || (c == 47 && !encodeSlash) {
                out.append(c)
            } else {
                out.append(37); out.append(hex[Int(c >> 4)]); out.append(hex[Int(c & 15)])
            }
        }
        return out
    }
}

/// The pieces of a URL the signer needs, split without any decoding or re-encoding.
struct URLParts {
    /// `scheme://authority`
    var base: String
    /// The path as given (empty if none).
    var rawPath: String
    /// The query without `?` (nil if none); the fragment is dropped.
    var query: String?
    /// The Host header: lowercase host, port kept only when not the scheme's default.
    var hostHeader: String

    var canonicalURI: String { rawPath.isEmpty ? "/" : rawPath }

    init(_ url: String) throws {
        guard let sep = url.range(of: "://") else {
            throw DogestryError.invalid("cannot sign request: \"\(redactedURLForError(url))\" is not an absolute URL")
        }
        let scheme = url[..<sep.lowerBound].lowercased()
        var rest = url[sep.upperBound...]
        if let hash = rest.firstIndex(of: "#") { rest = rest[..<hash] }
        let authEnd = rest.firstIndex(where: { $0 == "/" || $0 == "?" }) ?? rest.endIndex
        var authority = rest[..<authEnd]
        base = String(url[..<sep.upperBound]) + authority
        let afterAuthority = rest[authEnd...]
        if let q = afterAuthority.firstIndex(of: "?") {
            rawPath = String(afterAuthority[..<q])
            query = String(afterAuthority[afterAuthority.index(after: q)...])
        } else {
            rawPath = String(afterAuthority)
            query = nil
        }
        if let at = authority.lastIndex(of: "@") { authority = authority[authority.index(after: at)...] }
        guard !authority.isEmpty else {
            throw DogestryError.invalid("cannot sign request: URL \"\(redactedURLForError(url))\" has no host")
        }
        // Split host and port (IPv6 literals are bracketed).
        var host = Substring(authority)
        var port: Substring? = nil
        if authority.hasPrefix("[") {
            if let close = authority.firstIndex(of: "]") {
                host = authority[...close]
                let after = authority[authority.index(after: close)...]
                if after.hasPrefix(":") { port = after.dropFirst() }
            }
        } else if let colon = authority.lastIndex(of: ":") {
            host = authority[..<colon]
            port = authority[authority.index(after: colon)...]
        }
        var h = host.lowercased()
        if let p = port, !p.isEmpty {
            let isDefault = (scheme == "http" && p == "80") || (scheme == "https" && p == "443")
            if !isDefault { h += ":" + p }
        }
        hostHeader = h
    }
}

/// A URL without query and user info, for error messages.
private func redactedURLForError(_ url: String) -> String {
    String(redactedURL(url).prefix(200))
}

/// HMAC-SHA256 through OpenSSL.
public func hmacSHA256(key: [UInt8], data: [UInt8]) -> [UInt8] {
    var out = [UInt8](repeating: 0, count: Int(EVP_MAX_MD_SIZE))
    var len: UInt32 = 0
    // OpenSSL wants non-null pointers even for empty inputs.
    let k = key.isEmpty ? [UInt8](repeating: 0, count: 1) : key
    let d = data.isEmpty ? [UInt8](repeating: 0, count: 1) : data
    let ok = k.withUnsafeBufferPointer { kp in
        d.withUnsafeBufferPointer { dp in
            out.withUnsafeMutableBufferPointer { op in
                HMAC(EVP_sha256(), kp.baseAddress, Int32(key.count), dp.baseAddress, data.count, op.baseAddress, &len)
            }
        }
    }
    precondition(ok != nil && len == 32, "OpenSSL HMAC-SHA256 failed")
    return Array(out[0..<32])
}
