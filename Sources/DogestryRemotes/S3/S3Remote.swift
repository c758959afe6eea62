import DogestryCore
import DogestryHTTP
import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// Tuning of an `S3Remote`.
public struct S3Options: Sendable {
    /// Files of at least this many bytes are uploaded in parts of this size (S3's minimum is 5 MiB);
    /// objects larger than twice this size are downloaded in ranges of this size.
    public var partSize: Int64
    /// Parts uploaded (or ranges downloaded) at once, each by its own thread and connection.
    public var concurrency: Int
    /// PEM file of CA certificates to trust (nil: libcurl's default store).
    public var caBundle: String?
    /// Retries of one request (or one part) after a transient failure.
    public var maxRetries: Int

    public static let minimumPartSize: Int64 = 5 << 20

    /// Connect, first-byte and stall timeouts of every request (`[transfer] *-timeout`).
    public var timeouts: HTTPTimeouts = .remoteDefault

    public init(partSize: Int64 = 16 << 20, concurrency: Int = 4, caBundle: String? = nil, maxRetries: Int = 5) {
        self.partSize = partSize
        self.concurrency = concurrency
        self.caBundle = caBundle
        self.maxRetries = maxRetries
    }
}

/// A repository in an S3 bucket (AWS, or any S3-compatible store with an explicit endpoint).
///
/// Objects live at `<prefix>/<key>`. Requests are signed with SigV4; every payload is hashed
/// (`x-amz-content-sha256`) and carries `Content-MD5`, so the store verifies what it receives.
/// Large staged files go up as multipart uploads whose parts are sent in parallel and retried
/// one by one. A PUT is atomic in S3, so readers never see a partial object. Large objects come
/// down as parallel ranged GETs, each retried on its own (see `open`).
public final class S3Remote: SigningRemote, TrafficCounting {
    public let bucket: String
    /// Key prefix without leading or trailing slashes ("" for the bucket root).
    public let prefix: String
    public let region: String
    /// The explicit endpoint (path-style addressing), without a trailing slash.
    public let endpoint: String?
    public let options: S3Options
    public var displayURL: String { "s3://" + bucket + (prefix.isEmpty ? "" : "/" + prefix) }
    /// Every HTTP attempt (retries included) and the body bytes sent and received so far.
    public var traffic: RemoteTraffic { meter.snapshot }

    let credentialProvider: AWSCredentialProvider
    let signer: SigV4Signer
    let transport: HTTPTransportOptions
    let client: HTTPClient
    /// Requests and body bytes, for `traffic`.
    let meter = TrafficMeter()
    /// `https://bucket.s3.region.amazonaws.com` (virtual-hosted) or `<endpoint>/<bucket>` (path-style).
    let bucketURL: String
    let virtualHosted: Bool
    /// Seconds of the first retry's backoff (doubles each time, with jitter).
    var retryBaseDelay: Double = 0.2

    static let emptySHA256 = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    static let maxParts: Int64 = 10_000

    public init(bucket: String, prefix: String, region: String, endpoint: String?,
                credentials: AWSCredentialProvider, options: S3Options = S3Options()) throws {
        guard Self.isValidBucketName(bucket) else {
            throw DogestryError.invalid("invalid S3 bucket name \"\(bucket)\"")
        }
        guard !region.isEmpty, region.utf8.allSatisfy({ ($0 >= 97 && $0 <= 122) || ($0 >= 48 && $0 <= 57) || $0 == 45 }) else {
            throw DogestryError.invalid("invalid S3 region \"\(region)\" for s3://\(bucket)")
        }
        let p = prefix.split(separator: "/", omittingEmptySubsequences: true).joined(separator: "/")
        if !p.isEmpty {
            guard Self.isValidKey(p) else { throw DogestryError.invalid("invalid S3 prefix \"\(prefix)\" for s3://\(bucket)") }
        }
        guard options.partSize >= S3Options.minimumPartSize else {
            throw DogestryError.invalid("S3 part size \(options.partSize) is below S3's minimum of 5 MiB")
        }
        guard options.concurrency >= 1, options.maxRetries >= 0 else {
            throw DogestryError.invalid("S3 concurrency must be at least 1 and retries at least 0")
        }
        self.bucket = bucket
        self.prefix = p
        self.region = region
        self.options = options
        self.credentialProvider = credentials
        self.signer = SigV4Signer(region: region, service: "s3")
        if let ep = endpoint {
            let e = try Self.validateEndpoint(ep)
            self.endpoint = e
            self.bucketURL = e + "/" + SigV4Signer.uriEncode(bucket, encodeSlash: true)
            self.virtualHosted = false
        } else {
            self.endpoint = nil
            let domain = region.hasPrefix("cn-") ? "amazonaws.com.cn" : "amazonaws.com"
            if bucket.contains(".") || bucket.contains("_") || bucket != bucket.lowercased() {
                // Not usable as a TLS host name label: path-style on the regional endpoint.
                self.bucketURL = "https://s3.\(region).\(domain)/" + bucket
                self.virtualHosted = false
            } else {
                self.bucketURL = "https://\(bucket).s3.\(region).\(domain)"
                self.virtualHosted = true
            }
        }
        self.transport = HTTPTransportOptions(caBundle: options.caBundle, timeouts: options.timeouts, userAgent: "dogestry")
        self.client = Self.makeClient(transport)
    }

    static func makeClient(_ t: HTTPTransportOptions) -> HTTPClient {
        HTTPClient(options: t)
    }

    // MARK: URLs

    /// Parses `s3://bucket[/prefix][?region=R&endpoint=URL]`.
    public static func parse(url: String) throws -> (bucket: String, prefix: String, region: String?, endpoint: String?) {
        guard url.hasPrefix("s3://") else { throw DogestryError.invalid("\"\(url)\" is not an s3:// URL") }
        var rest = Substring(url.dropFirst(5))
        var query: Substring = ""
        if let q = rest.firstIndex(of: "?") {
            query = rest[rest.index(after: q)...]
            rest = rest[..<q]
        }
        if rest.contains("#") { throw DogestryError.invalid("S3 URL \"\(redactedURL(url))\" has a fragment") }
        let bucket: String, rawPrefix: String
        if let slash = rest.firstIndex(of: "/") {
            bucket = String(rest[..<slash])
            rawPrefix = String(rest[rest.index(after: slash)...])
        } else {
            bucket = String(rest)
            rawPrefix = ""
        }
        guard !bucket.isEmpty else { throw DogestryError.invalid("S3 URL \"\(redactedURL(url))\" names no bucket") }
        guard isValidBucketName(bucket) else { throw DogestryError.invalid("invalid S3 bucket name \"\(bucket)\" in \(redactedURL(url))") }
        let prefix = rawPrefix.split(separator: "/", omittingEmptySubsequences: true).joined(separator: "/")
        if !prefix.isEmpty && !isValidKey(prefix) {
            throw DogestryError.invalid("invalid S3 prefix \"\(rawPrefix)\" in s3://\(bucket)")
        }
        var region: String?, endpoint: String?
        for item in query.split(separator: "&", omittingEmptySubsequences: true) {
            let kv = item.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
            let name = String(kv[0])
            let raw = kv.count > 1 ? String(kv[1]) : ""
            guard let value = raw.replacingOccurrences(of: "+", with: " ").removingPercentEncoding, !value.isEmpty else {
                throw DogestryError.invalid("S3 URL parameter \"\(name)\" of s3://\(bucket) has no valid value")
            }
            switch name {
            case "region": region = value
            case "endpoint": endpoint = try validateEndpoint(value)
            default:
                throw DogestryError.invalid("unknown S3 URL parameter \"\(name)\" in s3://\(bucket) (known: region, endpoint)")
            }
        }
        return (bucket, prefix, region, endpoint)
    }

    /// An endpoint is `http(s)://host[:port][/path]`, without query or credentials; returned without trailing slash.
    static func validateEndpoint(_ ep: String) throws -> String {
        var e = ep
        while e.hasSuffix("/") { e.removeLast() }
        let lower = e.lowercased()
        guard lower.hasPrefix("http://") || lower.hasPrefix("https://") else {
            throw DogestryError.invalid("S3 endpoint \"\(redactedURL(ep))\" must start with http:// or https://")
        }
        let afterScheme = e[e.range(of: "://")!.upperBound...]
        let host = afterScheme.prefix { $0 != "/" }
        guard !host.isEmpty, !e.contains("?"), !e.contains("#"), !host.contains("@") else {
            throw DogestryError.invalid("S3 endpoint \"\(redactedURL(ep))\" must be http(s)://host[:port] without query or credentials")
        }
        return e
    }

    static func isValidBucketName(_ b: String) -> Bool {
        // S3's rules, relaxed to the legacy ones (upper case and "_" in old us-east-1 buckets).
        guard (3...255).contains(b.utf8.count) else { return false }
        return b.utf8.allSatisfy { c in
            (c >= 97 && c <= 122) || (c >= 65 && c <= 90) || (c >= 48 && c <= 57) || c == 45 || c == 46 || c == 95
        } && !b.hasPrefix(".") && !b.hasSuffix(".")
    }

    /// The rules of the repository layer: no empty, "." or ".." components, no leading "/", no NUL.
    static func isValidKey(_ key: String) -> Bool {
        guard !key.isEmpty, !key.utf8.contains(0) else { return false }
        return key.split(separator: "/", omittingEmptySubsequences: false).allSatisfy { !$0.isEmpty && $0 != "." && $0 != ".." }
    }

    /// `<prefix>/`, or "" at the bucket root.
    var keyBase: String { prefix.isEmpty ? "" : prefix + "/" }

    /// The S3 key of a repository key, after validating it.
    func objectKey(_ key: String) throws -> String {
        guard Self.isValidKey(key) else { throw DogestryError.invalid("invalid object key \"\(key)\" for \(displayURL)") }
        return keyBase + key
    }

    /// `s3://bucket/<object key>` for messages.
    func display(_ objectKey: String?) -> String {
        "s3://" + bucket + (objectKey.map { "/" + $0 } ?? "")
    }

    func url(_ objectKey: String?, _ query: [(String, String)]) -> String {
        var u = bucketURL
        if let k = objectKey {
            u += "/" + SigV4Signer.uriEncode(k, encodeSlash: false)
        } else if virtualHosted {
            u += "/"
        }
        if !query.isEmpty {
            u += "?" + query.map { SigV4Signer.uriEncode($0.0, encodeSlash: true) + "=" + SigV4Signer.uriEncode($0.1, encodeSlash: true) }
                .joined(separator: "&")
        }
        return u
    }

    // MARK: requests

    struct Request {
        var method: String
        /// The S3 key (prefix included), nil for bucket-level requests.
        var key: String?
        var query: [(String, String)] = []
        var headers: [(String, String)] = []
        var payloadHash: String = S3Remote.emptySHA256
        /// Made anew for every attempt (a streamed body cannot be replayed).
        var body: () throws -> HTTPBody = { .none }
    }

    func signed(_ r: Request) throws -> HTTPRequest {
        let u = url(r.key, r.query)
        let creds = try credentialProvider.credentials()
        let headers = try signer.sign(method: r.method, url: u, headers: r.headers, payloadHash: r.payloadHash,
                                      credentials: creds, date: Date())
        return HTTPRequest(method: r.method, url: u, headers: headers, body: try r.body())
    }

    /// Runs `attempt` on the signed request, retrying transient failures (5xx, 429, SlowDown,
    /// RequestTimeout, timeouts, connection resets) with exponential backoff and jitter.
    /// Returns the last response (which may be an error response); throws transport failures.
    func withRetries<T>(_ r: Request, _ attempt: (HTTPRequest) throws -> (HTTPResponse, T)) throws -> (HTTPResponse, T) {
        try withRetries({ r }, attempt)
    }

    /// The same, with the request made anew for every attempt (a ranged GET resumes where the
    /// previous attempt stopped). Every attempt is counted in `traffic`, with the request body
    /// it sent; the attempt itself counts the response body bytes it received.
    func withRetries<T>(_ make: () throws -> Request, _ attempt: (HTTPRequest) throws -> (HTTPResponse, T)) throws -> (HTTPResponse, T) {
        var what = displayURL
        return try retry.run(what: what, retryable: Self.isRetryable) { _ in
            let r = try make()
            what = display(r.key)
            var req = try signed(r)
            let bytesBody: Int64
            (req.body, bytesBody) = meter.metered(req.body)
            meter.request()
            let result = try attempt(req)
            meter.sent(bytesBody)   // (a response came back: the in-memory body was sent)
            return result
        }
    }

    /// The retry policy of every request (`options.maxRetries`, `retryBaseDelay`).
    var retry: RetryPolicy { RetryPolicy(maxRetries: options.maxRetries, baseDelay: retryBaseDelay) }

    static func isRetryable(_ resp: HTTPResponse) -> Bool {
        if RetryPolicy.isTransientStatus(resp.status) { return true }
        let code = errorCode(resp)
        return ["SlowDown", "RequestTimeout", "InternalError", "ServiceUnavailable", "Throttling",
                "ThrottlingException", "RequestThrottled"].contains(code ?? "")
    }

    static func errorCode(_ resp: HTTPResponse) -> String? {
        guard let xml = S3XMLElement.parse(resp.errorBody) else { return nil }
        return xml.name == "Error" ? xml.text("Code") : nil
    }

    /// Small request and response bodies, with retries.
    func fetch(_ r: Request, client c: HTTPClient? = nil, limit: Int = 64 << 20) throws -> (HTTPResponse, [UInt8]) {
        let cl = c ?? client
        return try withRetries(r) { req in
            let (resp, body) = try cl.fetch(req, limit: limit)
            meter.received(Int64(body.count))
            return (resp, body)
        }
    }

    static let authCodes: Set<String> = [
        "InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken", "InvalidToken", "TokenRefreshRequired",
        "AccessDenied", "AuthorizationHeaderMalformed", "RequestTimeTooSkewed", "AllAccessDisabled",
        "InvalidSecurity", "MissingSecurityHeader", "AccountProblem",
    ]

    /// One line naming the object, S3's error code and status, e.g.
    /// `s3://bucket/key: SignatureDoesNotMatch (403): The request signature we calculated…`.
    func error(_ resp: HTTPResponse, _ key: String?, body: [UInt8]? = nil) -> DogestryError {
        let xml = S3XMLElement.parse(body ?? resp.errorBody)
        let code = (xml?.name == "Error" ? xml?.text("Code") : nil) ?? resp.header("x-amz-error-code")
            ?? Self.statusName(resp.status)
        var msg = "\(display(key)): \(code) (\(resp.status))"
        if let m = xml?.text("Message")?.trimmingCharacters(in: .whitespacesAndNewlines), !m.isEmpty {
            let flat = m.split(whereSeparator: { $0.isNewline || $0 == "\t" }).joined(separator: " ")
            msg += ": " + (flat.count > 200 ? String(flat.prefix(197)) + "..." : flat)
        }
        if resp.status == 301 || resp.status == 307 || code == "PermanentRedirect" || code == "AuthorizationHeaderMalformed",
           let r = resp.header("x-amz-bucket-region") ?? xml?.text("Region"), r != region {
            msg += " (the bucket is in region \(r), not \(region))"
        }
        let kind: DogestryError.Kind
        if resp.status == 401 || resp.status == 403 || Self.authCodes.contains(code) {
            kind = .auth
        } else if resp.status == 404 {
            kind = .notFound
        } else {
            kind = .remote
        }
        return DogestryError(kind, msg)
    }

    static func statusName(_ s: Int) -> String { HTTPStatus.name(s) }

    // MARK: Remote

    public func stat(_ key: String) throws -> RemoteObject? {
        let k = try objectKey(key)
        let (resp, _) = try fetch(Request(method: "HEAD", key: k))
        if resp.status == 404 { return nil }
        guard resp.isSuccess else { throw error(resp, k) }
        guard let len = resp.header("content-length").flatMap({ Int64($0) }) else {
            throw DogestryError(.remote, "\(display(k)): HEAD response has no Content-Length")
        }
        return RemoteObject(key: key, size: len, modified: resp.header("last-modified").flatMap(S3Dates.parseHTTP))
    }

    /// A presigned GET of `key` (SigV4 query authentication), valid for `expires` seconds (at most 7 days).
    public func signedURL(forGet key: String, expires: Int) throws -> String {
        guard (1...604_800).contains(expires) else {
            throw DogestryError.invalid("signed URL lifetime \(expires) s is out of range 1 s…7 days")
        }
        return try signer.presign(method: "GET", url: url(try objectKey(key), []), expires: expires,
                                  credentials: try credentialProvider.credentials(), date: Date())
    }

    /// The object as a stream. Small objects come in one GET. The first GET asks for the first
    /// `2 × partSize` bytes (`Range`), so its `Content-Range` tells the object's size at no extra
    /// request; when the object is larger, the rest is fetched with parallel ranged GETs (see
    /// `RangedDownload`) while the caller already reads.
    public func open(_ key: String) throws -> ByteSource {
        let k = try objectKey(key)
        guard options.concurrency > 1 else { return try openWhole(k, key) }
        let first = 2 * options.partSize
        let (resp, body) = try streamGET(k, key, headers: [("Range", "bytes=0-\(first - 1)")])
        if resp.status == 416 {
            // No byte 0: the object is empty (or was emptied since); a plain GET tells.
            return try openWhole(k, key)
        }
        guard resp.isSuccess else { throw error(resp, k) }
        if resp.status == 200 {
            // The store ignored the range: this is the whole object.
            return resuming(k, key, resp, body)
        }
        let range = try Self.contentRange(resp, from: 0, to: first - 1, total: nil, what: display(k))
        if range.total <= first {
            return resuming(k, key, resp, body)
        }
        return try RangedDownload(remote: self, key: k, total: range.total, firstLength: first,
                                  etag: resp.header("etag"), first: body).start()
    }

    /// The body of a GET of object `k` that resumes with a ranged GET (`If-Match` its ETag) from
    /// the first byte not yet read when the connection drops or stalls.
    func resuming(_ k: String, _ key: String, _ resp: HTTPResponse, _ body: ByteSource) -> ByteSource {
        let etag = resp.header("etag")
        let resumable = ResumingBody(response: resp, body: body, policy: retry, what: display(k)) { [self] from, end in
            var h = [("Range", "bytes=\(from)-" + (end.map(String.init) ?? ""))]
            if let etag { h.append(("If-Match", etag)) }
            let (r, b) = try streamGET(k, key, headers: h)
            if r.status == 412 {
                throw DogestryError(.remote, "\(display(k)): the object changed while it was read (If-Match \(etag ?? "") failed)")
            }
            guard r.isSuccess else { throw error(r, k) }
            return (r, b)
        }
        return MeteredSource(resumable, meter, expected: resumable.total, what: display(k))
    }

    /// A streamed GET of object `k` (`key` for messages), with retries; error bodies are counted
    /// in `traffic`, a 404 is `.notFound`, any other status is the caller's to judge.
    func streamGET(_ k: String, _ key: String, headers: [(String, String)] = []) throws -> (HTTPResponse, ByteSource) {
        let (resp, body) = try withRetries(Request(method: "GET", key: k, headers: headers)) { req in
            let (resp, body) = try client.open(req)
            if !resp.isSuccess { meter.received(Int64(resp.errorBody.count)) }
            return (resp, body)
        }
        if resp.status == 404 {
            throw DogestryError.notFound("\(key) not found on \(displayURL)")
        }
        return (resp, body)
    }

    /// One plain GET of the whole object, streamed (and resumed if it breaks off).
    func openWhole(_ k: String, _ key: String) throws -> ByteSource {
        let (resp, body) = try streamGET(k, key)
        guard resp.isSuccess else { throw error(resp, k) }
        return resuming(k, key, resp, body)
    }

    /// Checks a 206 response: `Content-Range: bytes FROM-END/TOTAL` with END the requested `to`
    /// (or the object's last byte) and a matching Content-Length. Returns the range.
    static func contentRange(_ resp: HTTPResponse, from: Int64, to: Int64, total expectedTotal: Int64?,
                             what: String) throws -> (start: Int64, end: Int64, total: Int64) {
        let raw = resp.header("content-range") ?? ""
        func bad(_ why: String) -> DogestryError {
            DogestryError(.remote, "\(what): the ranged GET of bytes \(from)-\(to) got \(why)")
        }
        guard resp.status == 206 else { throw bad("status \(resp.status) instead of 206") }
        guard let r = ContentRange.parse(raw) else { throw bad("Content-Range \"\(raw)\"") }
        let (start, end, total) = (r.start, r.end, r.total)
        guard start == from, end == min(to, total - 1) else { throw bad("Content-Range \"\(raw)\"") }
        if let t = expectedTotal, t != total {
            throw DogestryError(.remote, "\(what): the object changed while it was read (its size went from \(t) to \(total) bytes)")
        }
        if let len = resp.header("content-length").flatMap({ Int64($0) }), len != end - start + 1 {
            throw bad("Content-Length \(len) with Content-Range \"\(raw)\"")
        }
        return (start, end, total)
    }

    public func put(_ key: String, bytes: [UInt8]) throws {
        let k = try objectKey(key)
        let md5 = MD5Hasher()
        bytes.withUnsafeBytes { md5.update($0) }
        let r = Request(method: "PUT", key: k,
                        headers: [("Content-Type", "application/octet-stream"),
                                  ("Content-MD5", Data(md5.finalize()).base64EncodedString())],
                        payloadHash: Digest.of(bytes).hex, body: { .bytes(bytes) })
        let (resp, _) = try fetch(r)
        guard resp.isSuccess else { throw error(resp, k) }
    }

    public func put(_ key: String, file: StagedFile, size: Int64) throws {
        let k = try objectKey(key)
        let src = try FileSource(path: file.path, what: "staged file for \(display(k))")
        guard let actual = src.size() else {
            throw DogestryError.io("staged file for \(display(k)) is not a regular file")
        }
        guard actual == size else {
            throw DogestryError.corrupt("staged file for \(display(k)) holds \(actual) bytes, expected \(size)")
        }
        if size < options.partSize {
            try putRange(k, src, offset: 0, length: size)
        } else {
            try multipartPut(k, src, size: size)
        }
    }

    /// PutObject of `length` bytes of `src` from `offset`.
    func putRange(_ k: String, _ src: FileSource, offset: Int64, length: Int64) throws {
        let (sha, md5) = try Self.hashRange(src, offset: offset, length: length, what: display(k))
        let r = Request(method: "PUT", key: k,
                        headers: [("Content-Type", "application/octet-stream"), ("Content-MD5", md5)],
                        payloadHash: sha,
                        body: { length == 0 ? .bytes([]) : .source(FileRangeSource(src, offset: offset, length: length), length: length) })
        let (resp, _) = try fetch(r)
        guard resp.isSuccess else { throw error(resp, k) }
    }

    public func delete(_ key: String) throws {
        let k = try objectKey(key)
        let (resp, _) = try fetch(Request(method: "DELETE", key: k))
        if resp.isSuccess || resp.status == 404 { return }
        throw error(resp, k)
    }

    public func list(prefix: String, _ each: (RemoteObject) throws -> Void) throws {
        // Every component but the last must be a valid key component; the last may be partial.
        if !prefix.isEmpty {
            let comps = prefix.split(separator: "/", omittingEmptySubsequences: false)
            let ok = !prefix.utf8.contains(0)
                && comps.dropLast().allSatisfy { !$0.isEmpty && $0 != "." && $0 != ".." }
                && comps.last != "." && comps.last != ".."
            guard ok else { throw DogestryError.invalid("invalid key prefix \"\(prefix)\" for \(displayURL)") }
        }
        let base = keyBase
        let full = base + prefix
        var token: String?
        while true {
            var q: [(String, String)] = [("list-type", "2")]
            if !full.isEmpty { q.append(("prefix", full)) }
            if let t = token { q.append(("continuation-token", t)) }
            let (resp, body) = try fetch(Request(method: "GET", key: nil, query: q))
            guard resp.isSuccess else { throw error(resp, full.isEmpty ? nil : full + "*") }
            guard let xml = S3XMLElement.parse(body), xml.name == "ListBucketResult" else {
                throw DogestryError(.remote, "\(display(full + "*")): unreadable ListObjectsV2 response")
            }
            for c in xml.children("Contents") {
                guard let k = c.text("Key"), k.hasPrefix(base) else { continue }
                let rel = String(k.dropFirst(base.count))
                // Directory markers and keys the repository layer could not have written.
                guard Self.isValidKey(rel), rel.hasPrefix(prefix) else { continue }
                let size = c.text("Size").flatMap { Int64($0.trimmingCharacters(in: .whitespaces)) } ?? 0
                try each(RemoteObject(key: rel, size: size, modified: c.text("LastModified").flatMap(S3Dates.parseISO)))
            }
            let truncated = xml.text("IsTruncated")?.trimmingCharacters(in: .whitespaces).lowercased() == "true"
            guard truncated else { return }
            guard let next = xml.text("NextContinuationToken"), !next.isEmpty, next != token else {
                throw DogestryError(.remote, "\(display(full + "*")): truncated listing without a continuation token")
            }
            token = next
        }
    }

    public func makeStagedFile() throws -> StagedFile {
        try TempDirectory.staged(prefix: "dogestry-s3")
    }

    public func check() throws -> String {
        let (resp, _) = try fetch(Request(method: "HEAD", key: nil))
        if !resp.isSuccess {
            // HEAD has no body: a ListObjectsV2 of nothing tells S3's error code.
            let (r2, body) = try fetch(Request(method: "GET", key: nil, query: [("list-type", "2"), ("max-keys", "0")]))
            throw error(r2.isSuccess ? resp : r2, nil, body: r2.isSuccess ? [] : body)
        }
        let probe = keyBase + ".dogestry-check-" + UUID().uuidString.lowercased()
        let payload = Array("dogestry check\n".utf8)
        let md5 = MD5Hasher()
        payload.withUnsafeBytes { md5.update($0) }
        let (put, _) = try fetch(Request(method: "PUT", key: probe,
                                         headers: [("Content-Type", "application/octet-stream"),
                                                   ("Content-MD5", Data(md5.finalize()).base64EncodedString())],
                                         payloadHash: Digest.of(payload).hex, body: { .bytes(payload) }))
        guard put.isSuccess else { throw error(put, probe) }
        let (del, _) = try fetch(Request(method: "DELETE", key: probe))
        guard del.isSuccess || del.status == 404 else { throw error(del, probe) }
        let where_ = endpoint.map { "at \($0)" } ?? "in AWS region \(region)"
        return "S3 bucket \(bucket) \(where_), prefix \"\(prefix)\": readable and writable"
            + " (credentials from \(credentialProvider.sourceDescription))"
    }

    /// Creates the bucket (in `region`); a bucket that already exists and is ours is fine.
    public func createBucket() throws {
        var body: [UInt8] = []
        if endpoint == nil && region != "us-east-1" {
            body = Array(("<CreateBucketConfiguration xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\">"
                + "<LocationConstraint>\(region)</LocationConstraint></CreateBucketConfiguration>").utf8)
        }
        let b = body
        let (resp, rb) = try fetch(Request(method: "PUT", key: nil, payloadHash: Digest.of(b).hex, body: { .bytes(b) }))
        if resp.isSuccess { return }
        if Self.errorCode(resp) == "BucketAlreadyOwnedByYou" { return }
        throw error(resp, nil, body: rb)
    }

    // MARK: multipart

    func multipartPut(_ k: String, _ src: FileSource, size: Int64) throws {
        // At most 10,000 parts: grow the part size (to whole MiB) for huge files.
        var partSize = options.partSize
        if (size + partSize - 1) / partSize > Self.maxParts {
            let need = (size + Self.maxParts - 1) / Self.maxParts
            partSize = (need + (1 << 20) - 1) / (1 << 20) * (1 << 20)
        }
        let count = Int((size + partSize - 1) / partSize)

        let (cr, cbody) = try fetch(Request(method: "POST", key: k, query: [("uploads", "")],
                                            headers: [("Content-Type", "application/octet-stream")]))
        guard cr.isSuccess else { throw error(cr, k, body: cbody) }
        guard let xml = S3XMLElement.parse(cbody), let uploadID = xml.text("UploadId"), !uploadID.isEmpty else {
            throw DogestryError(.remote, "\(display(k)): CreateMultipartUpload returned no UploadId")
        }

        do {
            let etags = try uploadParts(k, src, uploadID: uploadID, size: size, partSize: partSize, count: count)
            var doc = "<CompleteMultipartUpload xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\">"
            for (i, e) in etags.enumerated() {
                doc += "<Part><PartNumber>\(i + 1)</PartNumber><ETag>\(s3XMLEscape(e))</ETag></Part>"
            }
            doc += "</CompleteMultipartUpload>"
            let body = Array(doc.utf8)
            let md5 = MD5Hasher()
            body.withUnsafeBytes { md5.update($0) }
            let md5b64 = Data(md5.finalize()).base64EncodedString()
            let (resp, rbody) = try fetch(Request(method: "POST", key: k, query: [("uploadId", uploadID)],
                                                  headers: [("Content-Type", "application/xml"), ("Content-MD5", md5b64)],
                                                  payloadHash: Digest.of(body).hex, body: { .bytes(body) }))
            guard resp.isSuccess else { throw error(resp, k, body: rbody) }
            // S3 may answer 200 and report the failure in the body.
            if let x = S3XMLElement.parse(rbody), x.name == "Error" {
                let code = x.text("Code") ?? "InternalError"
                throw DogestryError(Self.authCodes.contains(code) ? .auth : .remote,
                                    "\(display(k)): \(code) completing multipart upload")
            }
        } catch {
            abortMultipart(k, uploadID)
            throw error
        }
    }

    /// Uploads every part with `options.concurrency` threads, each with its own connection;
    /// returns the ETags in part order. A failed part is retried on its own.
    func uploadParts(_ k: String, _ src: FileSource, uploadID: String, size: Int64, partSize: Int64, count: Int) throws -> [String] {
        let state = PartState(count: count)
        let workers = min(options.concurrency, count)
        let group = DispatchGroup()
        for _ in 0..<workers {
            group.enter()
            let t = Thread { [self] in
                defer { group.leave() }
                let c = Self.makeClient(transport)
                while let i = state.next() {
                    let offset = Int64(i) * partSize
                    let length = min(partSize, size - offset)
                    do {
                        let etag = try uploadPart(k, src, uploadID: uploadID, number: i + 1, offset: offset, length: length, client: c)
                        state.done(i, etag)
                    } catch {
                        state.fail(error)
                    }
                }
            }
            t.name = "dogestry-s3-part"
            t.start()
        }
        group.wait()
        if let e = state.firstError { throw e }
        return try state.etags.enumerated().map { i, e in
            guard let e = e else { throw DogestryError(.remote, "\(display(k)): part \(i + 1) was not uploaded") }
            return e
        }
    }

    func uploadPart(_ k: String, _ src: FileSource, uploadID: String, number: Int, offset: Int64, length: Int64,
                    client c: HTTPClient) throws -> String {
        let (sha, md5) = try Self.hashRange(src, offset: offset, length: length, what: display(k))
        let r = Request(method: "PUT", key: k, query: [("partNumber", String(number)), ("uploadId", uploadID)],
                        headers: [("Content-MD5", md5)], payloadHash: sha,
                        body: { .source(FileRangeSource(src, offset: offset, length: length), length: length) })
        let (resp, body) = try fetch(r, client: c)
        guard resp.isSuccess else {
            var e = error(resp, k, body: body)
            e.message += " (part \(number))"
            throw e
        }
        guard let etag = resp.header("etag"), !etag.isEmpty else {
            throw DogestryError(.remote, "\(display(k)): part \(number) was stored without an ETag")
        }
        return etag
    }

    func abortMultipart(_ k: String, _ uploadID: String) {
        _ = try? fetch(Request(method: "DELETE", key: k, query: [("uploadId", uploadID)]))
    }

    /// Progress of a multipart upload shared by its threads.
    final class PartState {
        private let lock = NSLock()
        private var nextIndex = 0
        private let count: Int
        private(set) var etags: [String?]
        private(set) var firstError: Error?

        init(count: Int) { self.count = count; self.etags = Array(repeating: nil, count: count) }

        func next() -> Int? {
            lock.lock(); defer { lock.unlock() }
            guard firstError == nil, nextIndex < count else { return nil }
            nextIndex += 1
            return nextIndex - 1
        }
        func done(_ i: Int, _ etag: String) { lock.lock(); etags[i] = etag; lock.unlock() }
        func fail(_ e: Error) { lock.lock(); if firstError == nil { firstError = e }; lock.unlock() }
    }

    // MARK: hashing

    /// SHA-256 (hex) and MD5 (base64) of a byte range of a file.
    static func hashRange(_ src: FileSource, offset: Int64, length: Int64, what: String) throws -> (String, String) {
        let sha = SHA256Hasher(), md5 = MD5Hasher()
        let buf = UnsafeMutableRawBufferPointer.allocate(byteCount: 1 << 20, alignment: 16)
        defer { buf.deallocate() }
        var done: Int64 = 0
        while done < length {
            let want = Int(min(Int64(buf.count), length - done))
            let n = try src.pread(into: UnsafeMutableRawBufferPointer(rebasing: buf[0..<want]), at: offset + done)
            if n == 0 { throw DogestryError.corrupt("staged file for \(what) ended after \(offset + done) bytes") }
            let chunk = UnsafeRawBufferPointer(rebasing: buf[0..<n])
            sha.update(chunk); md5.update(chunk)
            done += Int64(n)
        }
        return (sha.finalize().hex, Data(md5.finalize()).base64EncodedString())
    }
}

/// `length` bytes of a file from `offset`, read with pread (several may share one descriptor).
final class FileRangeSource: ByteSource {
    let file: FileSource
    let offset: Int64
    let length: Int64
    private var pos: Int64 = 0

    init(_ file: FileSource, offset: Int64, length: Int64) {
        self.file = file; self.offset = offset; self.length = length
    }

    func read(into buffer: UnsafeMutableRawBufferPointer) throws -> Int {
        let want = Int(min(Int64(buffer.count), length - pos))
        if want <= 0 { return 0 }
        let n = try file.pread(into: UnsafeMutableRawBufferPointer(rebasing: buffer[0..<want]), at: offset + pos)
        if n == 0 { throw DogestryError.corrupt("\(file.path) ended after \(offset + pos) bytes, expected \(offset + length)") }
        pos += Int64(n)
        return n
    }
}

/// S3's two date formats.
enum S3Dates {
    /// `Wed, 21 Oct 2015 07:28:00 GMT` (Last-Modified).
    static func parseHTTP(_ s: String) -> Date? { HTTPDate.parse(s) }

    /// `2009-10-12T17:50:30.000Z` (ListObjectsV2 LastModified), parsed by hand.
    static func parseISO(_ s: String) -> Date? {
        let u = Array(s.trimmingCharacters(in: .whitespaces).utf8)
        func num(_ a: Int, _ n: Int) -> Int? {
            guard a + n <= u.count else { return nil }
            var v = 0
            for c in u[a..<(a + n)] { guard c >= 48 && c <= 57 else { return nil }; v = v * 10 + Int(c - 48) }
            return v
        }
        guard u.count >= 19, u[4] == 45, u[7] == 45, u[10] == 84 || u[10] == 116, u[13] == 58, u[16] == 58,
              let y = num(0, 4), let mo = num(5, 2), let d = num(8, 2), let h = num(11, 2), let mi = num(14, 2),
              let sec = num(17, 2) else { return nil }
        var frac = 0.0
        var i = 19
        if i < u.count && u[i] == 46 {
            i += 1
            var scale = 0.1
            while i < u.count, u[i] >= 48, u[i] <= 57 { frac += Double(u[i] - 48) * scale; scale /= 10; i += 1 }
        }
        var offset = 0
        if i < u.count && (u[i] == 43 || u[i] == 45), let oh = num(i + 1, 2) {
            let om = (i + 3 < u.count && u[i + 3] == 58 ? num(i + 4, 2) : num(i + 3, 2)) ?? 0
            offset = (oh * 3600 + om * 60) * (u[i] == 43 ? 1 : -1)
        }
        // Days from the civil date (Howard Hinnant's algorithm).
        let yy = mo <= 2 ? y - 1 : y
        let era = (yy >= 0 ? yy : yy - 399) / 400
        let yoe = yy - era * 400
        let doy = (153 * (mo + (mo > 2 ? -3 : 9)) + 2) / 5 + d - 1
        let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy
        let days = era * 146_097 + doe - 719_468
        let secs = Double(days * 86_400 + h * 3600 + mi * 60 + sec - offset) + frac
        return Date(timeIntervalSince1970: secs)
    }
}

// MARK: - parallel ranged download

/// A large object fetched by `options.concurrency` threads with ranged GETs (each with its own
/// connection, each range retried on its own) into an unlinked temporary file, and read from that
/// file in order as the ranges arrive.
///
/// Range 0 is the first `2 × partSize` bytes, whose response `open` already has: it is readable
/// as it streams in and, if it breaks off, resumed where it stopped. The others are `partSize`
/// bytes each, `If-Match` the first response's ETag (so all come from one version of the object),
/// and readable once their response proved whole (206, `Content-Range`, length). Threads start a
/// range only while it lies within `window` bytes of the reader, and the file's consumed head is
/// punched out, so memory stays at a few buffers and disk at about `window` whatever the object's
/// size. Dropping the source stops the threads.
final class RangedDownload {
    struct Part { let start: Int64; let length: Int64 }

    let remote: S3Remote
    let key: String
    let total: Int64
    let etag: String?
    let firstLength: Int64
    let partSize: Int64
    let window: Int64
    let fd: Int32
    let what: String

    /// The ranges, in order (fixed once made).
    let parts: [Part]
    private let cond = NSCondition()
    /// Bytes of each part in the file so far (guarded by `cond`, like everything below).
    private var done: [Int64]
    private var nextPart = 1     // part 0 is the response open() has
    private var readerPos: Int64 = 0
    private var failure: Error?
    private var cancelled = false
    private var first: ByteSource?

    init(remote: S3Remote, key: String, total: Int64, firstLength: Int64, etag: String?, first: ByteSource) throws {
        self.remote = remote; self.key = key; self.total = total; self.etag = etag
        self.firstLength = firstLength
        self.partSize = remote.options.partSize
        self.window = Int64(2 * remote.options.concurrency + 2) * partSize
        self.what = remote.display(key)
        self.first = first
        var parts = [Part(start: 0, length: firstLength)]
        var off = firstLength
        while off < total {
            parts.append(Part(start: off, length: min(partSize, total - off)))
            off += partSize
        }
        self.parts = parts
        self.done = Array(repeating: 0, count: parts.count)
        try FS.makeDirectories(TempDirectory.path)
        let path = FS.tempPath(in: TempDirectory.path, prefix: "dogestry-s3-get")
        let fd = Glibc.open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0o600)
        if fd < 0 { throw DogestryError.io("cannot create a temporary file in \(TempDirectory.path): \(errnoString())") }
        unlink(path)   // nothing is left behind, whatever happens next
        self.fd = fd
    }

    deinit { Glibc.close(fd) }

    /// Starts the threads; returns the reader.
    func start() -> ByteSource {
        let workers = min(remote.options.concurrency, parts.count)
        for w in 0..<workers {
            let t = Thread { [self] in self.work(first: w == 0) }
            t.name = "dogestry-s3-range"
            t.start()
        }
        return Reader(self)
    }

    // MARK: threads

    func work(first isFirst: Bool) {
        let client = S3Remote.makeClient(remote.transport)
        if isFirst {
            let body = takeFirst()
            do {
                if let body { try drain(body) }
                if written(0) < parts[0].length { try fetch(part: 0, client) }
            } catch let e as DogestryError where e.cause?.isTransient == true {
                // The first response broke off: resume it where it stopped.
                do { try fetch(part: 0, client) } catch { fail(error); return }
            } catch { fail(error); return }
        }
        while let i = takePart() {
            do { try fetch(part: i, client) } catch { fail(error); return }
        }
    }

    private func takeFirst() -> ByteSource? {
        cond.lock(); defer { cond.unlock() }
        let f = first; first = nil
        return f
    }

    /// The next part to fetch, once it lies within the window; nil when done, failed or cancelled.
    private func takePart() -> Int? {
        cond.lock(); defer { cond.unlock() }
        while true {
            if cancelled || failure != nil || nextPart >= parts.count { return nil }
            if parts[nextPart].start < readerPos + window {
                nextPart += 1
                return nextPart - 1
            }
            cond.wait()
        }
    }

    private func written(_ i: Int) -> Int64 { cond.lock(); defer { cond.unlock() }; return done[i] }

    /// GETs what part `i` still lacks, retrying transient failures. The response body goes
    /// straight from libcurl into the file (no extra buffer or thread); the part counts as
    /// arrived only once its response proved to be the whole requested range (206, Content-Range,
    /// length), so an error document or a broken-off body is simply overwritten by the retry.
    private func fetch(part i: Int, _ client: HTTPClient) throws {
        let p = parts[i]
        let last = p.start + p.length - 1
        if isCancelled { throw DogestryError(.aborted, "download of \(what) cancelled") }
        let (resp, _) = try remote.withRetries({ () -> S3Remote.Request in
            var h = [("Range", "bytes=\(p.start + written(i))-\(last)")]
            if let etag { h.append(("If-Match", etag)) }
            return S3Remote.Request(method: "GET", key: key, headers: h)
        }) { req -> (HTTPResponse, Void) in
            let from = p.start + written(i)
            let sink = PartSink(self, at: from, room: last - from + 1)
            let resp = try client.perform(req, into: sink)
            if resp.isSuccess {
                _ = try S3Remote.contentRange(resp, from: from, to: last, total: total, what: what)
                guard sink.count == last - from + 1 else {
                    throw DogestryError(.remote, "\(what): the ranged GET of bytes \(from)-\(last) returned \(sink.count) bytes")
                }
                cond.lock(); done[i] = p.length; cond.broadcast(); cond.unlock()
            }
            return (resp, ())
        }
        if resp.status == 412 {
            throw DogestryError(.remote, "\(what): the object changed while it was read (If-Match \(etag ?? "") failed)")
        }
        guard resp.isSuccess else { throw remote.error(resp, key) }
        guard written(i) == p.length else {
            throw DogestryError(.remote, "\(what): range \(p.start)-\(last) ended after \(written(i)) bytes")
        }
    }

    /// Where libcurl writes one response body: the file from `at`, at most `room` bytes (an
    /// error document longer than what is left of the part is counted, not written).
    final class PartSink: ByteSink {
        let d: RangedDownload
        let at: Int64
        let room: Int64
        private(set) var count: Int64 = 0
        init(_ d: RangedDownload, at: Int64, room: Int64) { self.d = d; self.at = at; self.room = room }
        func write(_ b: UnsafeRawBufferPointer) throws {
            if d.isCancelled { throw DogestryError(.aborted, "download of \(d.what) cancelled") }
            d.remote.meter.received(Int64(b.count))
            let n = Int(max(0, min(Int64(b.count), room - count)))
            if n > 0 { try d.pwriteAll(UnsafeRawBufferPointer(rebasing: b[0..<n]), at: at + count) }
            count += Int64(b.count)
        }
        func close() throws {}
    }

    func pwriteAll(_ b: UnsafeRawBufferPointer, at offset: Int64) throws {
        var off = 0
        while off < b.count {
            let w = pwrite(fd, b.baseAddress! + off, b.count - off, off_t(offset + Int64(off)))
            if w < 0 {
                if errno == EINTR { continue }
                throw DogestryError.io("cannot write the temporary file for \(what) in \(TempDirectory.path): \(errnoString())")
            }
            off += w
        }
    }

    /// Copies the first response's body into part 0, which grows as it arrives.
    private func drain(_ body: ByteSource) throws {
        let buf = UnsafeMutableRawBufferPointer.allocate(byteCount: 1 << 20, alignment: 16)
        defer { buf.deallocate() }
        let p = parts[0]
        while true {
            if isCancelled { throw DogestryError(.aborted, "download of \(what) cancelled") }
            let n = try body.read(into: buf)
            if n == 0 { return }
            remote.meter.received(Int64(n))
            let at = written(0)
            guard at + Int64(n) <= p.length else {
                throw DogestryError(.remote, "\(what): bytes 0-\(p.length - 1) came with more bytes than asked for")
            }
            try pwriteAll(UnsafeRawBufferPointer(rebasing: buf[0..<n]), at: at)
            cond.lock(); done[0] += Int64(n); cond.broadcast(); cond.unlock()
        }
    }

    var isCancelled: Bool { cond.lock(); defer { cond.unlock() }; return cancelled }

    private func fail(_ e: Error) {
        cond.lock()
        if failure == nil && !cancelled { failure = e }
        cond.broadcast()
        cond.unlock()
    }

    func cancel() {
        cond.lock(); cancelled = true; cond.broadcast(); cond.unlock()
        (takeFirst() as? StreamingBody)?.cancel()
    }

    /// glibc's fallocate(2) (Swift's Glibc module does not declare it).
    static let fallocate: (@convention(c) (Int32, Int32, Int64, Int64) -> Int32)? = {
        guard let h = dlopen(nil, RTLD_NOW), let f = dlsym(h, "fallocate64") ?? dlsym(h, "fallocate") else { return nil }
        return unsafeBitCast(f, to: (@convention(c) (Int32, Int32, Int64, Int64) -> Int32).self)
    }()

    // MARK: reading

    /// Reads the file in order, waiting for the ranges to arrive.
    final class Reader: ByteSource {
        let d: RangedDownload
        private var pos: Int64 = 0
        private var punched: Int64 = 0
        init(_ d: RangedDownload) { self.d = d }
        deinit { d.cancel() }

        func read(into buffer: UnsafeMutableRawBufferPointer) throws -> Int {
            if buffer.count == 0 { return 0 }
            var avail: Int64 = 0
            d.cond.lock()
            while true {
                if pos >= d.total { d.cond.unlock(); return 0 }
                let i = pos < d.firstLength ? 0 : 1 + Int((pos - d.firstLength) / d.partSize)
                avail = d.parts[i].start + d.done[i] - pos
                if avail > 0 { break }
                if let e = d.failure { d.cond.unlock(); throw e }
                d.cond.wait()
            }
            d.cond.unlock()
            let want = Int(min(Int64(buffer.count), avail))
            var n: Int
            repeat { n = pread(d.fd, buffer.baseAddress, want, off_t(pos)) } while n < 0 && errno == EINTR
            if n < 0 { throw DogestryError.io("cannot read the temporary file for \(d.what): \(errnoString())") }
            if n == 0 { throw DogestryError.io("the temporary file for \(d.what) ended at \(pos) bytes") }
            pos += Int64(n)
            d.cond.lock(); d.readerPos = pos; d.cond.broadcast(); d.cond.unlock()
            // Give back the disk space of what was read (ignored where holes are not supported).
            let upTo = pos / (4 << 20) * (4 << 20)
            if upTo - punched >= 16 << 20 {
                _ = RangedDownload.fallocate?(d.fd, 0x01 | 0x02 /* FALLOC_FL_KEEP_SIZE | FALLOC_FL_PUNCH_HOLE */, punched, upTo - punched)
                punched = upTo
            }
            return n
        }
    }
}
