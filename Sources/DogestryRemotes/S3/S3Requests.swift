import DogestryCore
import DogestryHTTP
import Foundation
#if canImport(Glibc)
import Glibc
#endif

// Signed requests with the shared retry policy, S3's error mapping, payload hashing and dates.

extension S3Remote {
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
            ?? HTTPStatus.name(resp.status)
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


    // MARK: hashing

    /// SHA-256 (hex) and MD5 (base64) of a byte range of a file.
    static func hashRange(_ src: FileSource, offset: Int64, length: Int64, what: String) throws -> (String, String) {
        let sha = SHA256Hasher(), md5 = MD5Hasher()
        // (One buffer per part worker: 256 KiB hashes as fast as 1 MiB and keeps memory down.)
        let buf = UnsafeMutableRawBufferPointer.allocate(byteCount: 256 << 10, alignment: 16)
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
