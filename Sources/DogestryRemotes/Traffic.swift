import DogestryCore
import DogestryHTTP
import Foundation

/// Thread-safe counters behind a network remote's `traffic` (`TrafficCounting`).
final class TrafficMeter: @unchecked Sendable {
    private let lock = NSLock()
    private var t = RemoteTraffic()
    func request() { lock.lock(); t.requests += 1; lock.unlock() }
    func sent(_ n: Int64) { if n != 0 { lock.lock(); t.bytesSent += n; lock.unlock() } }
    func received(_ n: Int64) { if n != 0 { lock.lock(); t.bytesReceived += n; lock.unlock() } }
    var snapshot: RemoteTraffic { lock.lock(); defer { lock.unlock() }; return t }

    /// A request body made countable: a streamed body counts its bytes as libcurl reads them; an
    /// in-memory one is returned with its size, for the caller to count once a response came back.
    func metered(_ body: HTTPBody) -> (body: HTTPBody, inMemoryBytes: Int64) {
        switch body {
        case .none: return (body, 0)
        case .bytes(let b): return (body, Int64(b.count))
        case .source(let s, let len): return (.source(MeteredSource(s, self, sent: true), length: len), 0)
        }
    }
}

/// A body passing through: counts its bytes as sent (request bodies, as libcurl pulls them) or
/// received (response bodies, as the caller reads them); for responses with a known length,
/// an early end is an error.
final class MeteredSource: ByteSource {
    let inner: ByteSource
    let meter: TrafficMeter
    let isSent: Bool
    let expected: Int64?
    let what: String
    private(set) var count: Int64 = 0

    init(_ inner: ByteSource, _ meter: TrafficMeter, sent: Bool = false, expected: Int64? = nil, what: String = "") {
        self.inner = inner; self.meter = meter; self.isSent = sent; self.expected = expected; self.what = what
    }

    func read(into buffer: UnsafeMutableRawBufferPointer) throws -> Int {
        let n = try inner.read(into: buffer)
        count += Int64(n)
        if isSent { meter.sent(Int64(n)) } else { meter.received(Int64(n)) }
        if n == 0, buffer.count > 0, let e = expected, count != e {
            throw DogestryError(.remote, "\(what): the response body ended after \(count) of \(e) bytes")
        }
        return n
    }
}
