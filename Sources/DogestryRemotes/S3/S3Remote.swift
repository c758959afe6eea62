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

    /// Server-side copies up to this size are one CopyObject (S3's limit is 5 GiB); larger ones
    /// are a multipart upload whose parts are UploadPartCopy ranges of `copyPartSize`.
    var singleCopyLimit: Int64 = 5 << 30
    var copyPartSize: Int64 = 1 << 30

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
public final class S3Remote: SigningRemote, TrafficCounting, @unchecked Sendable {  // (settings are fixed after set-up; counters are locked)
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
        self.client = HTTPClient(options: transport)
    }


    // MARK: Remote

    public func stat(_ key: String) throws -> RemoteObject? {
        let k = try objectKey(key)
        let (resp, _) = try fetch(Request(method: "HEAD", key: k))
        if resp.status == 404 { return nil }
        guard resp.isSuccess else { throw error(resp, k) }
        guard let len = resp.header("content-length").flatMap({ Int64($0) }) else {
            throw DogestryError(.remote, "\(display(k)): HEAD response has no Content-Length")
        }
        return RemoteObject(key: key, size: len, modified: resp.header("last-modified").flatMap(HTTPDate.parse))
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

}
