import DogestryCore
import DogestryHTTP
@testable import DogestryRemotes
import Foundation
import DogestryTestSupport
import XCTest

/// Faults between a remote and its real server (SeaweedFS, the Manta simulator), injected by the
/// proxy: a connection reset or closed in the middle of a GET body, a body that stalls, a
/// server that stalls every time. Each test counts what crossed the proxy; none times anything.
final class FaultTests: XCTestCase {
    func randomBytes(_ n: Int) -> [UInt8] {
        var g = SystemRandomNumberGenerator()
        return (0..<n / 8).flatMap { _ in withUnsafeBytes(of: g.next() as UInt64) { Array($0) } }
    }

    func s3(through proxy: FaultProxy, options: S3Options = S3Options()) throws -> S3Remote {
        let s = try S3RemoteTests.server()
        let b = try S3RemoteTests.bucket(s)
        let direct = try S3RemoteTests.remote(s, bucket: b, prefix: "fault-" + UUID().uuidString.lowercased(), options: options)
        let r = try S3Remote(bucket: b, prefix: direct.prefix, region: "us-east-1", endpoint: proxy.base,
                             credentials: direct.credentialProvider, options: options)
        r.retryBaseDelay = 0.01
        return r
    }

    func s3Proxy() throws -> FaultProxy {
        try FaultProxy(upstream: try S3RemoteTests.server().endpoint)
    }

    /// Stores `bytes` and reads them back through `remote.open` while the proxy injects faults.
    func roundTrip(_ remote: Remote, _ proxy: FaultProxy, size: Int, arm: () throws -> Void) throws -> FaultProxy.Stats {
        let bytes = randomBytes(size)
        try remote.put("blobs/sha256/\(Digest.of(bytes).hex)", bytes: bytes)
        try proxy.reset()
        try arm()
        let got = try remote.open("blobs/sha256/\(Digest.of(bytes).hex)").readAll(limit: size + 1, what: "blob")
        XCTAssertEqual(got.count, bytes.count)
        XCTAssertEqual(Digest.of(got), Digest.of(bytes), "the resumed body must be the object's bytes")
        return try proxy.stats
    }

    // MARK: S3

    func testS3ResetMidGETResumes() throws {
        let proxy = try s3Proxy()
        let r = try s3(through: proxy)
        let st = try roundTrip(r, proxy, size: 3 << 20) { try proxy.arm("reset", after: 1 << 20) }
        XCTAssertEqual(st.faults, 1)
        XCTAssertEqual(st.byMethod["GET"], 2, "one GET and one ranged GET resuming it")
        // (A reset discards what the client had not read yet, so the resume starts at or before 1 MiB.)
        XCTAssertLessThanOrEqual(st.bytesReceived, Int64(3 << 20) + (1 << 20), "the resumed GET fetched only the rest")
    }

    func testS3ClosedMidGETResumes() throws {
        let proxy = try s3Proxy()
        let r = try s3(through: proxy)
        let st = try roundTrip(r, proxy, size: 3 << 20) { try proxy.arm("close", after: 700_000) }
        XCTAssertEqual(st.faults, 1)
        XCTAssertEqual(st.byMethod["GET"], 2)
    }

    func testS3ResetsInEveryRangeOfALargeObjectResume() throws {
        let proxy = try s3Proxy()
        var o = S3Options(); o.partSize = 5 << 20; o.concurrency = 3
        let r = try s3(through: proxy, options: o)
        // 22 MiB: the first GET asks for 10 MiB, then three ranges; each of the four breaks once.
        let st = try roundTrip(r, proxy, size: 22 << 20) { try proxy.arm("reset", after: 1 << 20, times: 4) }
        XCTAssertEqual(st.faults, 4)
        XCTAssertEqual(st.byMethod["GET"], 8)
    }

    func testS3StallIsDetectedAndResumed() throws {
        let proxy = try s3Proxy()
        var o = S3Options(); o.timeouts.stall = 1
        let r = try s3(through: proxy, options: o)
        let st = try roundTrip(r, proxy, size: 3 << 20) { try proxy.arm("stall", after: 512 << 10, seconds: 100) }
        XCTAssertEqual(st.faults, 1)
        XCTAssertEqual(st.byMethod["GET"], 2)
        XCTAssertEqual(st.stalling, 1, "the client gave up on the stalled connection while the proxy still held it")
    }

    func testS3PermanentStallFailsWithItsCause() throws {
        let proxy = try s3Proxy()
        var o = S3Options(); o.timeouts.stall = 1; o.maxRetries = 2
        let r = try s3(through: proxy, options: o)
        let bytes = randomBytes(1 << 20)
        let key = "blobs/sha256/\(Digest.of(bytes).hex)"
        try r.put(key, bytes: bytes)
        try proxy.reset()
        try proxy.arm("stall", after: 0, times: 100, seconds: 30)
        XCTAssertThrowsError(try r.open(key).readAll(limit: 2 << 20, what: "blob")) { e in
            let d = e as? DogestryError
            XCTAssertEqual(d?.cause, .stalled, "\(e)")
            XCTAssertTrue(d?.message.contains("stalled: no data moved for 1 s") ?? false, "\(e)")
            XCTAssertTrue(d?.message.contains("(after 3 attempts)") ?? false, "\(e)")
        }
        XCTAssertEqual(try proxy.stats.byMethod["GET"], 3, "one GET and the policy's two retries, no more")
    }

    // MARK: Manta

    func manta(through proxy: FaultProxy, stall: Double = 30) throws -> MantaRemote {
        let e = ProcessInfo.processInfo.environment
        guard let acct = e["DOGESTRY_TEST_MANTA_USER"], let key = e["DOGESTRY_TEST_MANTA_KEY"] else {
            XCTFail("no Manta simulator: DOGESTRY_TEST_MANTA_* are not set (run scripts/test)")
            throw DogestryError.notFound("no Manta simulator")
        }
        var s = MantaSettings(url: proxy.base, account: acct, user: nil, keyID: nil, privateKeyPath: key, algorithm: nil,
                              root: "/\(acct)/stor/fault-" + UUID().uuidString.lowercased(), durability: nil,
                              insecure: false, role: nil, sshDir: "/nonexistent")
        s.timeouts.stall = stall
        return try MantaRemote(settings: s, retry: RetryPolicy(maxRetries: 3, baseDelay: 0.01))
    }

    func mantaProxy() throws -> FaultProxy {
        guard let url = ProcessInfo.processInfo.environment["DOGESTRY_TEST_MANTA_URL"] else {
            XCTFail("no Manta simulator: DOGESTRY_TEST_MANTA_URL is not set (run scripts/test)")
            throw DogestryError.notFound("no Manta simulator")
        }
        return try FaultProxy(upstream: url)
    }

    func testMantaResetMidGETResumes() throws {
        let proxy = try mantaProxy()
        let r = try manta(through: proxy)
        let st = try roundTrip(r, proxy, size: 3 << 20) { try proxy.arm("reset", after: 1 << 20) }
        XCTAssertEqual(st.faults, 1)
        XCTAssertEqual(st.byMethod["GET"], 2)
    }

    func testMantaStallIsDetectedAndResumed() throws {
        let proxy = try mantaProxy()
        let r = try manta(through: proxy, stall: 1)
        let st = try roundTrip(r, proxy, size: 2 << 20) { try proxy.arm("stall", after: 300_000, seconds: 100) }
        XCTAssertEqual(st.faults, 1)
        XCTAssertEqual(st.byMethod["GET"], 2)
        XCTAssertEqual(st.stalling, 1)
    }

    // MARK: the policy itself

    func testRetryAfterIsHonouredAndCapped() {
        let p = RetryPolicy(maxRetries: 3, baseDelay: 0.2, maxDelay: 20)
        XCTAssertEqual(p.delay(0, retryAfter: "7"), 7)
        XCTAssertEqual(p.delay(0, retryAfter: "3600"), 20)
        let soon = HTTPDate.format(Date().addingTimeInterval(5))
        XCTAssertEqual(p.delay(0, retryAfter: soon), 5, accuracy: 1.1)
        for n in 0..<6 {
            let d = p.delay(n)
            let cap = min(20, 0.2 * pow(2, Double(n)))
            XCTAssertTrue(d >= cap / 2 && d <= cap, "retry \(n): \(d) outside \(cap / 2)…\(cap)")
        }
        XCTAssertTrue(RetryPolicy.isTransientStatus(503))
        XCTAssertTrue(RetryPolicy.isTransientStatus(429))
        XCTAssertFalse(RetryPolicy.isTransientStatus(501))
        XCTAssertFalse(RetryPolicy.isTransientStatus(404))
    }

    func testTransportCausesAreTyped() throws {
        // Nothing listens: refused (not retried); an unknown host: dns; neither is transient.
        let port = try LoopbackPort.closed()
        let c = HTTPClient(options: HTTPTransportOptions())
        XCTAssertThrowsError(try c.fetch(HTTPRequest(url: "http://127.0.0.1:\(port)/"))) { e in
            XCTAssertEqual((e as? DogestryError)?.cause, .refused, "\(e)")
            XCTAssertFalse(e.isTransientTransportFailure)
        }
        var attempts = 0
        XCTAssertThrowsError(try RetryPolicy(maxRetries: 4, baseDelay: 0).run(what: "x") { _ -> (HTTPResponse, Void) in
            attempts += 1
            return (try c.fetch(HTTPRequest(url: "http://127.0.0.1:\(port)/")).0, ())
        })
        XCTAssertEqual(attempts, 1, "a refused connection is not retried")
    }

}
