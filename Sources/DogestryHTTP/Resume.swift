import DogestryCore
import Foundation

/// `Content-Range: bytes START-END/TOTAL` of a 206 response.
public struct ContentRange: Sendable, Equatable {
    public var start: Int64
    public var end: Int64
    public var total: Int64

    public init(start: Int64, end: Int64, total: Int64) { self.start = start; self.end = end; self.total = total }

    /// Parses the header; nil when it is missing or malformed (a `*` total included).
    public static func parse(_ raw: String?) -> ContentRange? {
        guard let raw else { return nil }
        let parts = raw.trimmingCharacters(in: .whitespaces).split(separator: " ", maxSplits: 1)
        guard parts.count == 2, parts[0].lowercased() == "bytes" else { return nil }
        let rs = parts[1].split(separator: "/", maxSplits: 1)
        let se = rs.first?.split(separator: "-", maxSplits: 1) ?? []
        guard rs.count == 2, se.count == 2, let start = Int64(se[0]), let end = Int64(se[1]), let total = Int64(rs[1]),
              start >= 0, start <= end, end < total else { return nil }
        return ContentRange(start: start, end: end, total: total)
    }
}

/// A GET response body that survives a dropped or stalled connection: when reading fails with a
/// transient transport cause (reset, truncated, stalled…), the body is asked for again with
/// `Range` from the first byte not yet delivered, and reading goes on as if nothing happened.
///
/// The caller verifies what it reads (digests), so delivered bytes are the verified ones; a
/// resumed response must be a 206 starting exactly there, of the same object (same total size,
/// same `ETag` when the first response had one), or reading fails with a one-line error. The
/// budget is the policy's retries in a row without a byte of progress, one budget for the
/// resumes and the retries of the reopening GETs together (`RetryBudget`).
public final class ResumingBody: ByteSource {
    /// Opens the body again from `offset` (the closure adds `Range: bytes=offset-end` and whatever
    /// else the remote needs, and throws the remote's own error for a non-2xx answer).
    public typealias Reopen = (_ offset: Int64, _ end: Int64?) throws -> (HTTPResponse, ByteSource)

    private var body: ByteSource
    private let policy: RetryPolicy
    private let what: String
    private let reopen: Reopen
    private let etag: String?
    /// The object's size, when the first response told it.
    public let total: Int64?
    /// The last byte wanted (inclusive), when known.
    private let end: Int64?
    private var position: Int64
    private var failuresInARow = 0
    private let budget: RetryBudget
    /// Times the body was opened again.
    public private(set) var resumes = 0

    /// `response`/`body` is the first answer, for bytes from `start`.
    public init(response: HTTPResponse, body: ByteSource, start: Int64 = 0, policy: RetryPolicy, what: String,
                reopen: @escaping Reopen) {
        self.body = body
        self.policy = policy
        self.what = what
        self.reopen = reopen
        self.budget = RetryBudget(policy.maxRetries)
        self.etag = response.header("etag")
        self.position = start
        if response.status == 206, let r = ContentRange.parse(response.header("content-range")) {
            total = r.total; end = r.end
        } else if let len = response.header("content-length").flatMap({ Int64($0) }) {
            total = start + len; end = start + len - 1
        } else {
            total = nil; end = nil
        }
    }

    public func read(into buffer: UnsafeMutableRawBufferPointer) throws -> Int {
        while true {
            do {
                let n = try body.read(into: buffer)
                if n == 0, buffer.count > 0, let end, position <= end {
                    // A clean end before the announced length is a truncation too.
                    throw DogestryError(.remote, "response for \(what) ended after \(position) of \(end + 1) bytes",
                                        cause: .truncated)
                }
                if n > 0 {
                    position += Int64(n)
                    if failuresInARow > 0 { failuresInARow = 0; budget.refill(policy.maxRetries) }
                }
                return n
            } catch let e as DogestryError where e.cause?.isTransient == true {
                let attempts = policy.maxRetries - budget.remaining + 1
                guard budget.take() else {
                    throw DogestryError(e.kind, "\(what): \(e.message) (after \(attempts) attempts)", cause: e.cause)
                }
                (body as? StreamingBody)?.cancel()
                policy.backoff(failuresInARow)
                failuresInARow += 1
                resumes += 1
                try budget.shared { try resume(after: e) }
            }
        }
    }

    private func resume(after e: DogestryError) throws {
        let (resp, b) = try reopen(position, end)
        func changed(_ why: String) -> DogestryError {
            (b as? StreamingBody)?.cancel()
            return DogestryError(.remote, "\(what) changed while it was read (\(why)); resuming at byte \(position) was refused")
        }
        if let t = etag, let now = resp.header("etag"), t != now { throw changed("ETag \(t) became \(now)") }
        if resp.status == 200 {
            // The server ignored Range: fine only from the very start.
            guard position == 0 else { throw changed("the server ignored the Range request") }
            body = b
            return
        }
        guard resp.status == 206, let r = ContentRange.parse(resp.header("content-range")), r.start == position else {
            throw changed("got status \(resp.status) with Content-Range \"\(resp.header("content-range") ?? "")\"")
        }
        if let t = total, r.total != t { throw changed("its size went from \(t) to \(r.total) bytes") }
        body = b
    }
}
