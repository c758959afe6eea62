import DogestryCore
import DogestryHTTP
@testable import DogestryRemotes
import Foundation
import DogestryTestSupport
import XCTest

/// `S3Remote` against a real S3 server that checks SigV4 signatures (SeaweedFS, started by
/// `scripts/test`, which exports DOGESTRY_TEST_S3_ENDPOINT / _ACCESS_KEY / _SECRET_KEY).
///
/// One bucket per test run; every remote the conformance suite asks for is a fresh prefix in it.
final class S3RemoteTests: XCTestCase {
    struct Server {
        var endpoint: String
        var accessKey: String
        var secretKey: String
    }

    /// The server from the environment; skips (or fails, when services are required) without one.
    static func server() throws -> Server {
        let env = ProcessInfo.processInfo.environment
        guard let ep = env["DOGESTRY_TEST_S3_ENDPOINT"], !ep.isEmpty,
              let ak = env["DOGESTRY_TEST_S3_ACCESS_KEY"], !ak.isEmpty,
              let sk = env["DOGESTRY_TEST_S3_SECRET_KEY"], !sk.isEmpty else {
            let msg = "no S3 server: DOGESTRY_TEST_S3_ENDPOINT/_ACCESS_KEY/_SECRET_KEY are not set (run scripts/test)"
            if env["DOGESTRY_REQUIRE_ENGINES"] == "1" || env["DOGESTRY_REQUIRE_S3"] == "1" {
                XCTFail(msg)
            }
            throw XCTSkip(msg)
        }
        return Server(endpoint: ep, accessKey: ak, secretKey: sk)
    }

    /// This run's bucket, created once with a signed PUT /bucket.
    nonisolated(unsafe) private static var runBucket: String?
    private static let bucketLock = NSLock()

    static func bucket(_ s: Server) throws -> String {
        bucketLock.lock(); defer { bucketLock.unlock() }
        if let b = runBucket { return b }
        let b = "dogestry-test-" + UUID().uuidString.lowercased().prefix(13).replacingOccurrences(of: "-", with: "")
        let r = try remote(s, bucket: b, prefix: "")
        try r.createBucket()
        try r.createBucket()  // a second create of our own bucket is fine
        runBucket = b
        return b
    }

    static func remote(_ s: Server, bucket: String, prefix: String, accessKey: String? = nil, secretKey: String? = nil,
                       options: S3Options = S3Options()) throws -> S3Remote {
        let creds = AWSStaticCredentialProvider(
            AWSCredentials(accessKeyID: accessKey ?? s.accessKey, secretAccessKey: secretKey ?? s.secretKey),
            sourceDescription: "test credentials")
        return try S3Remote(bucket: bucket, prefix: prefix, region: "us-east-1", endpoint: s.endpoint,
                            credentials: creds, options: options)
    }

    /// A remote over a fresh, empty prefix of this run's bucket.
    func freshRemote(options: S3Options = S3Options(), accessKey: String? = nil, secretKey: String? = nil) throws -> S3Remote {
        let s = try Self.server()
        let b = try Self.bucket(s)
        return try Self.remote(s, bucket: b, prefix: "runs/" + UUID().uuidString.lowercased(),
                               accessKey: accessKey, secretKey: secretKey, options: options)
    }

    // MARK: signatures are checked

    private func assertError(_ kind: DogestryError.Kind, containing parts: [String], notContaining secrets: [String] = [],
                             file: StaticString = #filePath, line: UInt = #line, _ body: () throws -> Void) {
        do {
            try body()
            XCTFail("expected an error containing \(parts)", file: file, line: line)
        } catch let e as DogestryError {
            XCTAssertEqual(e.kind, kind, e.message, file: file, line: line)
            for p in parts {
                XCTAssertTrue(e.message.contains(p), "\"\(e.message)\" does not contain \"\(p)\"", file: file, line: line)
            }
            for s in secrets {
                XCTAssertFalse(e.message.contains(s), "\"\(e.message)\" contains a secret", file: file, line: line)
            }
            XCTAssertFalse(e.message.contains("\n"), file: file, line: line)
            XCTAssertFalse(e.message.contains("X-Amz-Signature"), file: file, line: line)
            XCTAssertFalse(e.message.contains("Signature="), file: file, line: line)
        } catch {
            XCTFail("not a DogestryError: \(error)", file: file, line: line)
        }
    }

    func testWrongSecretIsRefusedWithSignatureDoesNotMatch() throws {
        let good = try freshRemote()
        try good.put("present", bytes: [1])
        let wrongSecret = "definitely-not-the-secret-\(UUID().uuidString)"
        let s = try Self.server()
        let bad = try Self.remote(s, bucket: good.bucket, prefix: good.prefix, secretKey: wrongSecret)
        let obj = "s3://\(good.bucket)/\(good.prefix)/k"
        assertError(.auth, containing: ["\(obj): SignatureDoesNotMatch (403)"], notContaining: [wrongSecret, s.secretKey]) {
            try bad.put("k", bytes: [1, 2, 3])
        }
        assertError(.auth, containing: ["SignatureDoesNotMatch (403)", good.bucket], notContaining: [wrongSecret]) {
            try RemoteConformance.putStaged(bad, "staged", [4, 5, 6])
        }
        assertError(.auth, containing: ["s3://\(good.bucket)/\(good.prefix)/present: SignatureDoesNotMatch (403)"]) {
            _ = try bad.open("present")
        }
        assertError(.auth, containing: ["SignatureDoesNotMatch (403)"]) { try bad.list(prefix: "") { _ in } }
        assertError(.auth, containing: ["SignatureDoesNotMatch (403)"]) { try bad.delete("present") }
        // HEAD responses have no body: the status says it, and check() finds the code.
        assertError(.auth, containing: ["s3://\(good.bucket)/\(good.prefix)/present", "(403)"]) { _ = try bad.stat("present") }
        assertError(.auth, containing: ["SignatureDoesNotMatch (403)", good.bucket]) { _ = try bad.check() }
        // Nothing was written or removed by the refused requests.
        XCTAssertEqual(Set(try RemoteConformance.listing(good, "").keys), ["present"])
    }

    func testUnknownAccessKeyIsRefusedWithInvalidAccessKeyId() throws {
        let good = try freshRemote()
        let bad = try Self.remote(try Self.server(), bucket: good.bucket, prefix: good.prefix, accessKey: "AKIDNOTKNOWNHERE")
        assertError(.auth, containing: ["s3://\(good.bucket)/\(good.prefix)/k: InvalidAccessKeyId (403)"]) {
            try bad.put("k", bytes: [1])
        }
        assertError(.auth, containing: ["InvalidAccessKeyId (403)"]) { _ = try bad.check() }
        XCTAssertEqual(try RemoteConformance.listing(good, "").count, 0)
    }

    /// Auth errors are not retried (a wrong key does not become right by waiting).
    func testAuthErrorsAreNotRetried() throws {
        let good = try freshRemote()
        let bad = try Self.remote(try Self.server(), bucket: good.bucket, prefix: good.prefix, secretKey: "wrong")
        XCTAssertThrowsError(try bad.put("k", bytes: [1])) { e in
            XCTAssertEqual((e as? DogestryError)?.kind, .auth, "\(e)")
        }
        XCTAssertEqual(bad.traffic.requests, 1, "a refused signature was retried")
    }

    func testMissingBucket() throws {
        let s = try Self.server()
        let r = try Self.remote(s, bucket: "dogestry-missing-" + UUID().uuidString.lowercased().prefix(8), prefix: "p")
        assertError(.notFound, containing: ["s3://\(r.bucket): NoSuchBucket (404)"]) { _ = try r.check() }
        XCTAssertNil(try r.stat("k"), "HEAD of an object in a missing bucket is a plain 404")
        assertError(.notFound, containing: ["NoSuchBucket (404)", r.bucket]) { try r.list(prefix: "") { _ in } }
        // (A PutObject would create the bucket: SeaweedFS, unlike AWS, creates buckets on demand.)
    }

    // MARK: multipart

    /// 3 × 5 MiB + 1 byte with 5 MiB parts: four parts (the last of one byte), uploaded in parallel.
    func testMultipartSeveralPartsRoundTrips() throws {
        let r = try freshRemote(options: S3Options(partSize: 5 << 20, concurrency: 3))
        let data = RemoteConformance.bytes(3 * (5 << 20) + 1, seed: 42)
        try RemoteConformance.putStaged(r, "blobs/big", data)
        XCTAssertEqual(try r.stat("blobs/big")?.size, Int64(data.count))
        let (d, n) = try RemoteConformance.streamDigest(r, "blobs/big")
        XCTAssertEqual(n, Int64(data.count))
        XCTAssertEqual(d, Digest.of(data))
        XCTAssertEqual(try RemoteConformance.content(r, "blobs/big"), data, "byte-exact")
        // It really was a multipart upload: the ETag of a multipart object ends in "-<parts>".
        let (head, _) = try r.fetch(S3Remote.Request(method: "HEAD", key: r.keyBase + "blobs/big"))
        let etag = try XCTUnwrap(head.header("etag"))
        XCTAssertTrue(etag.replacingOccurrences(of: "\"", with: "").hasSuffix("-4"), "ETag \(etag) is not that of a 4-part upload")
        // And no upload is left in progress.
        XCTAssertEqual(try pendingUploads(r), [])
    }

    /// Exactly one part size, and one part plus nothing: the boundaries.
    func testMultipartBoundaries() throws {
        let r = try freshRemote(options: S3Options(partSize: 5 << 20, concurrency: 2))
        for (key, size) in [("exact", 5 << 20), ("twice", 10 << 20), ("below", (5 << 20) - 1)] {
            let data = RemoteConformance.bytes(size, seed: UInt64(size))
            try RemoteConformance.putStaged(r, key, data)
            XCTAssertEqual(try RemoteConformance.content(r, key), data, key)
        }
    }

    /// A staged file shorter than the size given is refused before anything is sent.
    func testStagedSizeMismatchIsRefused() throws {
        let r = try freshRemote(options: S3Options(partSize: 5 << 20))
        let staged = try r.makeStagedFile()
        defer { staged.discard() }
        let sink = try staged.sink()
        try sink.write([UInt8](repeating: 7, count: 1000))
        try sink.close()
        assertError(.corrupt, containing: ["1000", "6291456"]) { try r.put("k", file: staged, size: 6 << 20) }
        XCTAssertNil(try r.stat("k"))
        XCTAssertEqual(try pendingUploads(r), [])
    }

    // MARK: early uploads (a copy sends parts while the staged file is written)

    /// A staged file of `r` being written with `data` while an early upload of it runs.
    private struct EarlyWrite {
        let staged: StagedFile, sink: FileSink, up: EarlyUpload, data: [UInt8]
        init(_ r: S3Remote, key: String, data: [UInt8]) throws {
            staged = try r.makeStagedFile()
            sink = try staged.sink()
            up = try XCTUnwrap(try r.beginUpload(key, file: staged, size: Int64(data.count)))
            self.data = data
        }
        /// Writes `data[from..<to]` in 1 MiB steps, telling the upload after each.
        func write(from: Int, to: Int) throws {
            var at = from
            while at < to {
                let end = min(to, at + (1 << 20))
                try sink.write(Array(data[at..<end]))
                try up.written(Int64(end))
                at = end
            }
        }
    }

    /// Parts go out before the file is complete, nothing is visible before `commit`, and the
    /// object is byte-exact and a 4-part upload after it.
    func testEarlyUploadSendsPartsBeforeTheFileIsWhole() throws {
        let r = try freshRemote(options: S3Options(partSize: 5 << 20, concurrency: 2))
        let data = RemoteConformance.bytes(3 * (5 << 20) + 7, seed: 77)
        let w = try EarlyWrite(r, key: "blobs/early", data: data)
        try w.write(from: 0, to: 11 << 20)
        // Two whole parts are written: both go out while the rest is not.
        let sentBefore = r.traffic.bytesSent
        var sent = sentBefore
        for _ in 0..<200 where sent < 10 << 20 { Thread.sleep(forTimeInterval: 0.05); sent = r.traffic.bytesSent }
        XCTAssertGreaterThanOrEqual(sent, 10 << 20, "the first two parts were sent before the file was whole")
        XCTAssertNil(try r.stat("blobs/early"), "nothing is visible before commit")
        try w.write(from: 11 << 20, to: data.count)
        try w.sink.close()
        try w.up.commit()
        XCTAssertEqual(try RemoteConformance.content(r, "blobs/early"), data, "byte-exact")
        let (head, _) = try r.fetch(S3Remote.Request(method: "HEAD", key: r.keyBase + "blobs/early"))
        XCTAssertTrue(try XCTUnwrap(head.header("etag")).replacingOccurrences(of: "\"", with: "").hasSuffix("-4"))
        XCTAssertEqual(try pendingUploads(r), [])
        // Below one part size there is nothing to gain: the caller puts the file once written.
        XCTAssertNil(try r.beginUpload("blobs/small", file: w.staged, size: (5 << 20) - 1))
    }

    /// Abort (the content was found bad at its end) leaves no object and no upload.
    func testEarlyUploadAbortLeavesNothing() throws {
        let r = try freshRemote(options: S3Options(partSize: 5 << 20, concurrency: 2))
        let data = RemoteConformance.bytes(12 << 20, seed: 5)
        let w = try EarlyWrite(r, key: "blobs/bad", data: data)
        try w.write(from: 0, to: 11 << 20)
        w.up.abort()
        XCTAssertNil(try r.stat("blobs/bad"))
        XCTAssertEqual(try pendingUploads(r), [])
    }

    /// A part that fails for good stops the writer at its next `written`, and nothing is stored.
    func testEarlyUploadFailureReachesTheWriter() throws {
        let (r, proxy) = try proxiedRemote(options: S3Options(partSize: 5 << 20, concurrency: 2, maxRetries: 1))
        try proxy.inject([("partNumber=1&", "503", 2)])
        let data = RemoteConformance.bytes(16 << 20, seed: 6)
        let w = try EarlyWrite(r, key: "blobs/fails", data: data)
        try w.write(from: 0, to: 6 << 20)
        var failure: Error?
        for _ in 0..<200 {
            do { try w.up.written(6 << 20) } catch { failure = error; break }
            Thread.sleep(forTimeInterval: 0.05)
        }
        let e = try XCTUnwrap(failure as? DogestryError, "written() reported the failed part")
        XCTAssertTrue(e.message.contains("SlowDown (503)") && e.message.contains("(part 1)"), e.message)
        w.up.abort()
        XCTAssertNil(try r.stat("blobs/fails"))
        XCTAssertEqual(try pendingUploads(r), [])
    }

    // MARK: server-side copies

    /// Past the single-copy limit (5 GiB on S3; 5 MiB here) a server-side copy is a multipart
    /// upload of UploadPartCopy ranges: byte-exact, in 3 parts, no object byte through dogestry,
    /// no upload left; a part that fails for good aborts it and leaves nothing.
    func testLargeServerSideCopyIsMultipartUploadPartCopy() throws {
        var o = S3Options(partSize: 5 << 20, concurrency: 2, maxRetries: 1)
        o.singleCopyLimit = 5 << 20
        o.copyPartSize = 5 << 20
        let a = try freshRemote(options: o), b = try freshRemote(options: o)
        XCTAssertTrue(b.canCopyServerSide(from: a))
        let data = RemoteConformance.bytes(12 << 20, seed: 12)
        try RemoteConformance.putStaged(a, "blobs/x", data)
        let received = b.traffic.bytesReceived + a.traffic.bytesReceived
        try b.copyServerSide(from: a, key: "blobs/x", size: Int64(data.count))
        XCTAssertLessThan(b.traffic.bytesReceived + a.traffic.bytesReceived - received, 64 << 10, "object bytes came through dogestry")
        XCTAssertEqual(try RemoteConformance.content(b, "blobs/x"), data, "byte-exact")
        let (head, _) = try b.fetch(S3Remote.Request(method: "HEAD", key: b.keyBase + "blobs/x"))
        XCTAssertTrue(try XCTUnwrap(head.header("etag")).replacingOccurrences(of: "\"", with: "").hasSuffix("-3"), "3 copied parts")
        XCTAssertEqual(try pendingUploads(b), [])

        // Through a proxy that refuses part 2 every time: one error naming the part, nothing left.
        let (p, proxy) = try proxiedRemote(options: o)
        let sv = try Self.server()
        let src = try S3Remote(bucket: p.bucket, prefix: p.prefix + "-src", region: "us-east-1", endpoint: proxy.endpoint,
                               credentials: AWSStaticCredentialProvider(AWSCredentials(accessKeyID: sv.accessKey, secretAccessKey: sv.secretKey)),
                               options: o)
        try RemoteConformance.putStaged(src, "blobs/y", data)
        try proxy.inject([("partNumber=2&", "503", 10)])
        assertError(.remote, containing: ["(copying part 2)"]) { try p.copyServerSide(from: src, key: "blobs/y", size: Int64(data.count)) }
        XCTAssertTrue(try proxy.log().contains { $0.hasPrefix("DELETE ") && $0.contains("uploadId=") }, "AbortMultipartUpload was sent")
        XCTAssertNil(try p.stat("blobs/y"))
        XCTAssertEqual(try pendingUploads(p), [])
    }

    /// In-progress multipart uploads under the remote's prefix (ListMultipartUploads).
    private func pendingUploads(_ r: S3Remote) throws -> [String] {
        let (resp, body) = try r.fetch(S3Remote.Request(method: "GET", key: nil,
                                                        query: [("uploads", ""), ("prefix", r.keyBase)]))
        XCTAssertTrue(resp.isSuccess, "ListMultipartUploads: \(resp.status) \(resp.errorText())")
        let xml = try XCTUnwrap(S3XMLElement.parse(body))
        return xml.children("Upload").compactMap { $0.text("Key") }
    }

    // MARK: ranged downloads

    /// 40 MiB with 5 MiB parts: one GET of the first 10 MiB tells the size, then six ranged GETs of
    /// 5 MiB run in parallel; the bytes are exactly the object's and exactly that many are received.
    func testLargeObjectIsReadWithParallelRangedGets() throws {
        let r = try freshRemote(options: S3Options(partSize: 5 << 20, concurrency: 3))
        let data = RemoteConformance.bytes(40 << 20, seed: 40)
        try RemoteConformance.putStaged(r, "blobs/forty", data)
        let before = r.traffic
        let got = try RemoteConformance.content(r, "blobs/forty")
        XCTAssertEqual(got.count, data.count)
        XCTAssertTrue(got == data, "the bytes read differ from the object's")
        let t = r.traffic
        XCTAssertEqual(t.requests - before.requests, 7, "1 GET of bytes 0-10MiB, then 6 ranged GETs of 5 MiB")
        XCTAssertEqual(t.bytesReceived - before.bytesReceived, Int64(data.count))
        XCTAssertEqual(t.bytesSent, before.bytesSent)
        // The streaming digest agrees (reads in other chunk sizes).
        let (d, n) = try RemoteConformance.streamDigest(r, "blobs/forty")
        XCTAssertEqual(n, Int64(data.count))
        XCTAssertEqual(d, Digest.of(data))
    }

    /// Sizes around the threshold: up to 2 × partSize one GET, above it ranges; an empty object
    /// (no byte 0 to range over) is a 416 and then a plain GET; concurrency 1 is a plain GET.
    func testObjectsUpToTwicePartSizeNeedOneGet() throws {
        let p = 5 << 20
        let r = try freshRemote(options: S3Options(partSize: Int64(p), concurrency: 2))
        for (size, requests) in [(0, 2), (1, 1), (2 * p - 1, 1), (2 * p, 1), (2 * p + 1, 2), (3 * p + 7, 3)] {
            let data = RemoteConformance.bytes(size, seed: UInt64(size) + 1)
            try RemoteConformance.putStaged(r, "k\(size)", data)
            let before = r.traffic.requests
            let got = try RemoteConformance.content(r, "k\(size)")
            XCTAssertTrue(got == data, "content of \(size) bytes")
            XCTAssertEqual(r.traffic.requests - before, requests, "GETs for \(size) bytes")
        }
        let one = try freshRemote(options: S3Options(partSize: Int64(p), concurrency: 1))
        let data = RemoteConformance.bytes(3 * p, seed: 3)
        try RemoteConformance.putStaged(one, "k", data)
        let before = one.traffic.requests
        XCTAssertTrue(try RemoteConformance.content(one, "k") == data)
        XCTAssertEqual(one.traffic.requests - before, 1)
    }

    /// The download's temporary file is unlinked at once: nothing appears in the temporary
    /// directory while reading, after reading, or after dropping a half-read source.
    func testRangedDownloadLeavesNoTemporaryFile() throws {
        let tmp = FileManager.default.temporaryDirectory.appendingPathComponent("dg-s3-tmp-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: tmp, withIntermediateDirectories: true)
        let saved = TempDirectory.path
        TempDirectory.path = tmp
        defer { TempDirectory.path = saved; try? FileManager.default.removeItem(atPath: tmp) }
        let r = try freshRemote(options: S3Options(partSize: 5 << 20, concurrency: 3))
        let data = RemoteConformance.bytes(23 << 20, seed: 23)
        try RemoteConformance.putStaged(r, "b", data)
        func entries() throws -> [String] { try FileManager.default.contentsOfDirectory(atPath: tmp) }
        XCTAssertEqual(try entries(), [])
        do {
            let src = try r.open("b")
            var buf = [UInt8](repeating: 0, count: 1000)
            let n = try buf.withUnsafeMutableBytes { try src.read(into: $0) }
            XCTAssertGreaterThan(n, 0)
            XCTAssertEqual(Array(buf[0..<n]), Array(data[0..<n]))
            XCTAssertEqual(try entries(), [], "a temporary file is visible while reading")
        }  // dropped half-read: the threads stop
        XCTAssertTrue(try RemoteConformance.content(r, "b") == data)
        XCTAssertEqual(try entries(), [])
    }

    /// Ranges dropped mid-body (the first response's too), a 503 and a reset are retried on
    /// their own, resuming where they stopped; the bytes read are exactly the object's.
    func testDroppedRangesAreResumed() throws {
        let (r, proxy) = try proxiedRemote(options: S3Options(partSize: 5 << 20, concurrency: 3))
        let data = RemoteConformance.bytes(40 << 20, seed: 41)
        try RemoteConformance.putStaged(r, "big", data)
        let mib = 1 << 20
        try proxy.inject([("bytes=\(20 * mib)-", "cut", 1), ("bytes=0-", "cut", 1),
                          ("bytes=\(30 * mib)-", "503", 1), ("bytes=\(35 * mib)-", "reset", 1)])
        let before = r.traffic
        let got = try RemoteConformance.content(r, "big")
        XCTAssertEqual(got.count, data.count)
        XCTAssertTrue(got == data, "the bytes read differ from the object's")

        let gets = try proxy.log().filter { $0.hasPrefix("GET ") && $0.contains("/big [bytes=") }
        let log = gets.joined(separator: "\n")
        /// (start, end, outcome) of every ranged GET.
        let ranges: [(Int, Int, String)] = gets.compactMap { line in
            guard let a = line.range(of: "[bytes="), let b = line.range(of: "]", range: a.upperBound..<line.endIndex) else { return nil }
            let se = line[a.upperBound..<b.lowerBound].split(separator: "-")
            guard se.count == 2, let s = Int(se[0]), let e = Int(se[1]) else { return nil }
            return (s, e, String(line.split(separator: " ").last!))
        }
        XCTAssertEqual(ranges.count, gets.count, log)
        // Every range ends where it should and is complete once.
        let ends = [10 * mib - 1] + stride(from: 15, through: 40, by: 5).map { $0 * mib - 1 }
        for end in ends {
            let tries = ranges.filter { $0.1 == end }
            XCTAssertEqual(tries.filter { $0.2 == "206" }.count, 1, "range ending at \(end)\n\(log)")
        }
        func outcomes(_ end: Int) -> [String] { ranges.filter { $0.1 == end }.map { $0.2 } }
        XCTAssertEqual(outcomes(10 * mib - 1), ["cut", "206"], log)
        XCTAssertEqual(outcomes(25 * mib - 1), ["cut", "206"], log)
        XCTAssertEqual(outcomes(35 * mib - 1), ["503", "206"], log)
        XCTAssertEqual(outcomes(40 * mib - 1), ["reset", "206"], log)
        // The first response, which the reader consumes as it streams, resumes after the bytes it
        // got (the proxy sent half before the reset); a later range counts only once its response
        // proved whole, so a cut one is fetched again from its start.
        let resumed = try XCTUnwrap(ranges.first { $0.1 == 10 * mib - 1 && $0.2 == "206" })
        XCTAssertGreaterThan(resumed.0, 0, "the first range was fetched again from its start\n\(log)")
        let again = try XCTUnwrap(ranges.first { $0.1 == 25 * mib - 1 && $0.2 == "206" })
        XCTAssertEqual(again.0, 20 * mib, log)
        // Attempts are counted, retries included: 7 ranges, 2 resumes, 2 retries. (When a reused
        // connection is reset, libcurl itself may send the request once more on a fresh one,
        // which the proxy sees and dogestry does not.)
        let counted = r.traffic.requests - before.requests
        XCTAssertTrue([gets.count, gets.count - 1].contains(counted), "counted \(counted), proxy saw \(gets.count)\n\(log)")
        XCTAssertTrue([10, 11].contains(counted), "counted \(counted)")
    }

    /// A range that keeps failing fails the read with S3's error, naming the object.
    func testRangeThatKeepsFailingFailsTheRead() throws {
        let (r, proxy) = try proxiedRemote(options: S3Options(partSize: 5 << 20, concurrency: 2, maxRetries: 2))
        try RemoteConformance.putStaged(r, "big", RemoteConformance.bytes(21 << 20, seed: 5))
        try proxy.inject([("bytes=\(15 << 20)-", "503", 10)])
        assertError(.remote, containing: ["s3://\(r.bucket)/\(r.prefix)/big: SlowDown (503)"]) {
            _ = try RemoteConformance.content(r, "big")
        }
        XCTAssertEqual(try proxy.log().filter { $0.contains("[bytes=\(15 << 20)-") }.count, 3, "1 attempt + 2 retries")
    }

    /// An object replaced while it is read (after the first response) fails the read rather than
    /// mixing two versions: later ranges are `If-Match` the first response's ETag.
    func testObjectReplacedWhileReadFailsTheRead() throws {
        // Concurrency 2: ranges start only within 6 parts (30 MiB) of the reader.
        let r = try freshRemote(options: S3Options(partSize: 5 << 20, concurrency: 2))
        let size = 60 << 20
        try RemoteConformance.putStaged(r, "v", RemoteConformance.bytes(size, seed: 1))
        let src = try r.open("v")
        try RemoteConformance.putStaged(r, "v", RemoteConformance.bytes(size, seed: 2))
        assertError(.remote, containing: ["s3://\(r.bucket)/\(r.prefix)/v", "changed while it was read"]) {
            _ = try src.readAll(limit: size, what: "v")
        }
    }

    // MARK: traffic

    /// Every request (retries included) and every body byte is counted, from any thread.
    func testTrafficCounts() throws {
        let r = try freshRemote(options: S3Options(partSize: 5 << 20, concurrency: 2))
        XCTAssertNotNil((r as Remote) as? TrafficCounting)
        XCTAssertEqual(r.traffic, RemoteTraffic())
        try r.put("a", bytes: [UInt8](repeating: 1, count: 100))
        XCTAssertEqual(r.traffic.requests, 1)
        XCTAssertEqual(r.traffic.bytesSent, 100)
        XCTAssertEqual(r.traffic.bytesReceived, 0)
        XCTAssertEqual(try r.stat("a")?.size, 100)
        XCTAssertNil(try r.stat("missing"))
        XCTAssertEqual(r.traffic.requests, 3)
        XCTAssertEqual(r.traffic.bytesReceived, 0, "HEAD responses have no body")
        XCTAssertEqual(try r.read("a").count, 100)
        XCTAssertEqual(r.traffic.requests, 4)
        XCTAssertEqual(r.traffic.bytesReceived, 100)

        // A multipart upload: create, 3 parts, complete.
        let big = RemoteConformance.bytes(11 << 20, seed: 11)
        try RemoteConformance.putStaged(r, "big", big)
        var t = r.traffic
        XCTAssertEqual(t.requests, 9)
        XCTAssertGreaterThan(t.bytesSent, 100 + Int64(big.count), "parts and the CompleteMultipartUpload document")
        XCTAssertLessThan(t.bytesSent, 100 + Int64(big.count) + 4096)
        XCTAssertGreaterThan(t.bytesReceived, 100, "the UploadId and completion documents")
        XCTAssertLessThan(t.bytesReceived, 100 + 4096)

        // A ranged read: 2 GETs (the first 10 MiB, then 1 MiB), exactly the object's bytes.
        let received = t.bytesReceived
        XCTAssertTrue(try RemoteConformance.content(r, "big") == big)
        t = r.traffic
        XCTAssertEqual(t.requests, 11)
        XCTAssertEqual(t.bytesReceived - received, Int64(big.count))

        // From several threads at once.
        let group = DispatchGroup()
        for w in 0..<8 {
            group.enter()
            Thread {
                defer { group.leave() }
                for i in 0..<10 { try? r.put("c/\(w)-\(i)", bytes: [UInt8](repeating: 2, count: 10)) }
            }.start()
        }
        group.wait()
        XCTAssertEqual(r.traffic.requests, t.requests + 80)
        XCTAssertEqual(r.traffic.bytesSent, t.bytesSent + 800)
    }

    /// Retried attempts are requests too, and send their body again.
    func testTrafficCountsRetries() throws {
        let (r, proxy) = try proxiedRemote()
        try proxy.inject([("/k", "503", 2)])
        try r.put("k", bytes: [UInt8](repeating: 3, count: 10))
        XCTAssertEqual(r.traffic.requests, 3)
        XCTAssertEqual(r.traffic.bytesSent, 30)
        XCTAssertGreaterThan(r.traffic.bytesReceived, 0, "the two SlowDown error documents")
        try proxy.inject([("/k", "reset", 1)])
        XCTAssertEqual(try r.read("k").count, 10)
        // One retry, unless libcurl resent the request itself on a fresh connection (uncounted).
        XCTAssertTrue([4, 5].contains(r.traffic.requests), "\(r.traffic.requests)")
        XCTAssertEqual(r.traffic.bytesSent, 30)
    }

    // MARK: listing

    /// 1100 tiny objects put concurrently: a listing past S3's 1000-key page is complete.
    func testListingPast1000Keys() throws {
        let r = try freshRemote()
        let errors = LockedList()
        let workers = 16
        let group = DispatchGroup()
        for t in 0..<workers {
            group.enter()
            Thread {
                defer { group.leave() }
                for i in stride(from: t, to: 1100, by: workers) {
                    do { try r.put(String(format: "k/%04d", i), bytes: [UInt8(i & 0xff)]) } catch {
                        errors.append("\(error)")
                    }
                }
            }.start()
        }
        group.wait()
        XCTAssertEqual(errors.items, [])
        let got = try RemoteConformance.listing(r, "k/")
        XCTAssertEqual(got.count, 1100)
        XCTAssertEqual(Set(got.keys), Set((0..<1100).map { String(format: "k/%04d", $0) }))
        XCTAssertTrue(got.values.allSatisfy { $0.size == 1 && $0.modified != nil })
    }

    // MARK: keys

    /// Keys with characters that need URI encoding are signed and stored correctly.
    func testKeysNeedingEncoding() throws {
        let r = try freshRemote()
        let keys = ["sp ace/x", "plus+sign", "pct%20lit", "uni/ünïcødé/ключ", "tilde~/a=b&c", "star*(paren)!", "colon:semi;", "q?mark#hash"]
        for (i, k) in keys.enumerated() {
            try r.put(k, bytes: [UInt8(i)])
            XCTAssertEqual(try r.stat(k)?.size, 1, k)
            XCTAssertEqual(try r.read(k), [UInt8(i)], k)
        }
        XCTAssertEqual(Set(try RemoteConformance.listing(r, "").keys), Set(keys))
        XCTAssertEqual(Set(try RemoteConformance.listing(r, "uni/ü").keys), ["uni/ünïcødé/ключ"])
        for k in keys { try r.delete(k) }
        XCTAssertEqual(try RemoteConformance.listing(r, "").count, 0)
    }

    /// A remote at the bucket root sees keys under other prefixes; one under a prefix sees only its own.
    func testPrefixIsolation() throws {
        let s = try Self.server()
        let b = try Self.bucket(s)
        let base = "iso-" + UUID().uuidString.lowercased()
        let a = try Self.remote(s, bucket: b, prefix: base + "/a")
        let ab = try Self.remote(s, bucket: b, prefix: "/" + base + "/ab/")  // slashes trimmed
        XCTAssertEqual(ab.prefix, base + "/ab")
        try a.put("x", bytes: [1])
        try ab.put("y", bytes: [2])
        XCTAssertEqual(Set(try RemoteConformance.listing(a, "").keys), ["x"])
        XCTAssertEqual(Set(try RemoteConformance.listing(ab, "").keys), ["y"])
        let parent = try Self.remote(s, bucket: b, prefix: base)
        XCTAssertEqual(Set(try RemoteConformance.listing(parent, "").keys), ["a/x", "ab/y"])
        XCTAssertEqual(a.displayURL, "s3://\(b)/\(base)/a")
    }

    // MARK: retries, through a fault-injecting proxy in front of the real server

    /// A small HTTP proxy (Python) that forwards to the S3 server byte for byte (so signatures still
    /// check) except for requests matching a queued fault: `503` (SlowDown), `500`, `reset`
    /// (the connection is closed without a response) or `cut` (the response is forwarded with its
    /// headers, then the connection is reset halfway through the body). Faults are queued with
    /// `POST /__faults` lines `SUBSTRING KIND COUNT`, SUBSTRING matching the path and query or the
    /// Range header; `GET /__log` returns one `METHOD PATH?QUERY [RANGE] STATUS` line per request
    /// (`[RANGE]` only for ranged requests).
    final class FaultProxy {
        let process = Process()
        let port: Int
        static let script = #"""
        import http.client, http.server, socket, struct, sys, threading, time, urllib.parse
        up = urllib.parse.urlsplit(sys.argv[1])
        lock = threading.Lock(); rules = []; log = []
        class H(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            def log_message(self, *a): pass
            def body(self):
                n = int(self.headers.get("Content-Length") or 0)
                return self.rfile.read(n) if n else b""
            def reply(self, status, data, ctype="application/xml"):
                self.send_response(status); self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(data))); self.end_headers()
                if self.command != "HEAD": self.wfile.write(data)
            def handle_any(self):
                data = self.body()
                if self.path.startswith("/__faults"):
                    with lock:
                        for line in data.decode().splitlines():
                            m, k, c = line.split(); rules.append([m, k, int(c)])
                    return self.reply(200, b"ok", "text/plain")
                if self.path.startswith("/__log"):
                    with lock: out = "\n".join(log).encode()
                    return self.reply(200, out, "text/plain")
                fault = None
                rng = self.headers.get("Range") or ""
                where = self.path + (" [" + rng + "]" if rng else "")
                with lock:
                    for r in rules:
                        if r[2] > 0 and (r[0] in self.path or (rng and r[0] in rng)):
                            r[2] -= 1; fault = r[1]; break
                if fault == "reset":
                    with lock: log.append("%s %s reset" % (self.command, where))
                    self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    self.connection.close(); self.close_connection = True; return
                if fault in ("503", "500"):
                    with lock: log.append("%s %s %s" % (self.command, where, fault))
                    code = "SlowDown" if fault == "503" else "InternalError"
                    return self.reply(int(fault), ("<?xml version=\"1.0\"?><Error><Code>%s</Code><Message>injected</Message></Error>" % code).encode())
                c = http.client.HTTPConnection(up.hostname, up.port, timeout=60)
                c.putrequest(self.command, self.path, skip_host=True, skip_accept_encoding=True)
                for k, v in self.headers.items(): c.putheader(k, v)
                c.endheaders(data if data else None)
                r = c.getresponse(); rb = r.read() if self.command != "HEAD" else b""
                cut = fault == "cut" and len(rb) > 1
                with lock: log.append("%s %s %s" % (self.command, where, "cut" if cut else r.status))
                self.send_response(r.status)
                for k, v in r.getheaders():
                    if k.lower() in ("transfer-encoding", "connection", "content-length", "server", "date"): continue
                    self.send_header(k, v)
                self.send_header("Content-Length", r.getheader("Content-Length", "0") if self.command == "HEAD" else str(len(rb)))
                self.end_headers()
                c.close()
                if cut:
                    self.wfile.write(rb[:len(rb) // 2]); self.wfile.flush(); time.sleep(0.3)  # read by the client, then:
                    self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    self.connection.close(); self.close_connection = True; return
                if self.command != "HEAD": self.wfile.write(rb)
            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = handle_any
        s = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
        if len(sys.argv) > 3:   # TLS: certificate chain and key
            import ssl
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER); ctx.load_cert_chain(sys.argv[2], sys.argv[3])
            s.socket = ctx.wrap_socket(s.socket, server_side=True)
        print(s.server_address[1], flush=True)
        s.serve_forever()
        """#

        let tls: Bool

        /// With `tls` (certificate chain, key), the proxy speaks HTTPS.
        init(upstream: String, tls: (cert: String, key: String)? = nil) throws {
            self.tls = tls != nil
            let path = FileManager.default.temporaryDirectory.appendingPathComponent("dogestry-fault-proxy-\(UUID().uuidString).py").path
            try Data(Self.script.utf8).write(to: URL(fileURLWithPath: path))
            process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
            process.arguments = ["python3", path, upstream] + (tls.map { [$0.cert, $0.key] } ?? [])
            let out = Pipe()
            process.standardOutput = out
            try process.run()
            // The first line is the port it listens on.
            var line = [UInt8]()
            while true {
                let b = out.fileHandleForReading.readData(ofLength: 1)
                if b.isEmpty || b.first == 10 { break }
                line.append(contentsOf: b)
            }
            try? FileManager.default.removeItem(atPath: path)
            guard let p = Int(String(decoding: line, as: UTF8.self)) else {
                process.terminate()
                throw DogestryError.io("the fault proxy did not start")
            }
            port = p
        }

        deinit { ChildProcess.stop(process) }

        var endpoint: String { (tls ? "https" : "http") + "://127.0.0.1:\(port)" }

        private func control(_ method: String, _ path: String, _ body: String = "") throws -> String {
            var o = HTTPTransportOptions()
            o.insecure = tls   // the test's own control requests; dogestry's are verified
            let (resp, bytes) = try HTTPClient(options: o)
                .fetch(HTTPRequest(method: method, url: endpoint + path, body: .bytes(Array(body.utf8))))
            guard resp.isSuccess else { throw DogestryError.io("fault proxy \(path): \(resp.status)") }
            return String(decoding: bytes, as: UTF8.self)
        }
        /// Queues faults: (substring of path and query or of the Range header, "503" | "500" | "reset" | "cut", count).
        func inject(_ faults: [(String, String, Int)]) throws {
            _ = try control("POST", "/__faults", faults.map { "\($0.0) \($0.1) \($0.2)" }.joined(separator: "\n"))
        }
        /// The requests seen so far, as `METHOD PATH?QUERY OUTCOME`.
        func log() throws -> [String] {
            try control("GET", "/__log").split(separator: "\n").map(String.init)
        }
    }

    private func proxiedRemote(options: S3Options = S3Options()) throws -> (S3Remote, FaultProxy) {
        let s = try Self.server()
        let b = try Self.bucket(s)
        let proxy = try FaultProxy(upstream: s.endpoint)
        let r = try S3Remote(bucket: b, prefix: "retry/" + UUID().uuidString.lowercased(), region: "us-east-1",
                             endpoint: proxy.endpoint,
                             credentials: AWSStaticCredentialProvider(AWSCredentials(accessKeyID: s.accessKey, secretAccessKey: s.secretKey)),
                             options: options)
        r.retryBaseDelay = 0.01
        return (r, proxy)
    }

    // MARK: TLS

    /// A throwaway CA and two server certificates signed by it: one for 127.0.0.1 and one for
    /// another name. Returns (CA file, (cert, key) for 127.0.0.1, (cert, key) for the other name).
    /// The files are removed when `test` ends.
    static func makeCertificates(for test: XCTestCase) throws -> (ca: String, good: (cert: String, key: String), wrongName: (cert: String, key: String)) {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("dogestry-tls-" + UUID().uuidString).path
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        test.addTeardownBlock { try? FileManager.default.removeItem(atPath: dir) }
        func openssl(_ args: [String]) throws {
            let p = Process()
            p.executableURL = URL(fileURLWithPath: "/usr/bin/env")
            p.arguments = ["openssl"] + args
            p.currentDirectoryURL = URL(fileURLWithPath: dir)
            p.standardOutput = FileHandle.nullDevice; p.standardError = FileHandle.nullDevice
            try p.run(); p.waitUntilExit()
            guard p.terminationStatus == 0 else { throw DogestryError.io("openssl \(args.joined(separator: " ")) failed") }
        }
        try openssl(["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem", "-days", "2", "-subj", "/CN=dogestry test CA"])
        for (name, san) in [("good", "IP:127.0.0.1"), ("wrong", "DNS:s3.example.invalid")] {
            try Data("subjectAltName=\(san)\n".utf8).write(to: URL(fileURLWithPath: dir + "/\(name).ext"))
            try openssl(["req", "-newkey", "rsa:2048", "-nodes", "-keyout", "\(name).key", "-out", "\(name).csr", "-subj", "/CN=\(name)"])
            try openssl(["x509", "-req", "-in", "\(name).csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
                         "-out", "\(name).pem", "-days", "2", "-extfile", "\(name).ext"])
        }
        return (dir + "/ca.pem", (dir + "/good.pem", dir + "/good.key"), (dir + "/wrong.pem", dir + "/wrong.key"))
    }

    /// TLS is verified by default: an https endpoint whose certificate is not trusted is refused
    /// (once, not retried), in one line naming the endpoint; with its CA as `caBundle` (what
    /// `AWS_CA_BUNDLE` sets) it works; a trusted certificate for another name is still refused.
    func testTLSIsVerifiedAndTheCABundleIsHonoured() throws {
        let s = try Self.server()
        let b = try Self.bucket(s)
        let certs = try Self.makeCertificates(for: self)
        let proxy = try FaultProxy(upstream: s.endpoint, tls: certs.good)
        XCTAssertTrue(proxy.endpoint.hasPrefix("https://127.0.0.1:"))
        func remote(_ endpoint: String, ca: String?) throws -> S3Remote {
            let r = try S3Remote(bucket: b, prefix: "tls/" + UUID().uuidString.lowercased(), region: "us-east-1", endpoint: endpoint,
                                 credentials: AWSStaticCredentialProvider(AWSCredentials(accessKeyID: s.accessKey, secretAccessKey: s.secretKey)),
                                 options: S3Options(caBundle: ca))
            r.retryBaseDelay = 0.01
            return r
        }
        // Untrusted: refused before anything is sent, without retries.
        let untrusted = try remote(proxy.endpoint, ca: nil)
        XCTAssertThrowsError(try untrusted.put("x", bytes: [1])) { e in
            let msg = "\(e)"
            XCTAssertTrue(msg.contains("127.0.0.1:\(proxy.port)"), msg)
            XCTAssertTrue(msg.lowercased().contains("certificate") || msg.contains("TLS"), msg)
            XCTAssertFalse(msg.contains(s.secretKey), msg)
            XCTAssertFalse(msg.contains("\n"), msg)
        }
        XCTAssertEqual(try proxy.log().count, 0, "a request got through an unverified connection")
        // Trusted through the CA bundle: works, and the bytes round-trip.
        let trusted = try remote(proxy.endpoint, ca: certs.ca)
        try trusted.put("x", bytes: [1, 2, 3])
        XCTAssertEqual(try trusted.read("x"), [1, 2, 3])
        XCTAssertGreaterThan(try proxy.log().count, 0)
        // A certificate from the trusted CA but for another name: refused.
        let other = try FaultProxy(upstream: s.endpoint, tls: certs.wrongName)
        XCTAssertThrowsError(try remote(other.endpoint, ca: certs.ca).stat("x")) { e in
            XCTAssertTrue("\(e)".contains("127.0.0.1:\(other.port)"), "\(e)")
        }
        XCTAssertEqual(try other.log().count, 0)
    }

    /// 503 SlowDown, 500 and connection resets are retried for every kind of request.
    func testTransientFailuresAreRetried() throws {
        let (r, proxy) = try proxiedRemote()
        try proxy.inject([("/put-me", "503", 2), ("/put-me", "reset", 1)])
        try r.put("put-me", bytes: [1, 2, 3])
        XCTAssertEqual(try proxy.log().filter { $0.hasPrefix("PUT ") && $0.contains("/put-me") }.map { $0.split(separator: " ").last! },
                       ["503", "503", "reset", "200"])
        try proxy.inject([("/put-me", "reset", 1), ("/put-me", "500", 1)])
        XCTAssertEqual(try r.read("put-me"), [1, 2, 3])
        try proxy.inject([("/put-me", "503", 1)])
        XCTAssertEqual(try r.stat("put-me")?.size, 3)
        try proxy.inject([("list-type=2", "reset", 1), ("list-type=2", "503", 1)])
        XCTAssertEqual(Set(try RemoteConformance.listing(r, "").keys), ["put-me"])
        try proxy.inject([("/put-me", "503", 2)])
        try r.delete("put-me")
        XCTAssertNil(try r.stat("put-me"))
    }

    /// A failed part is retried on its own; the upload is not restarted.
    func testFailedPartIsRetriedAlone() throws {
        let (r, proxy) = try proxiedRemote(options: S3Options(partSize: 5 << 20, concurrency: 2))
        let data = RemoteConformance.bytes(3 * (5 << 20) + 1, seed: 9)
        try proxy.inject([("partNumber=2&", "reset", 1), ("partNumber=3&", "503", 2), ("?uploads", "503", 1)])
        try RemoteConformance.putStaged(r, "big", data)
        XCTAssertEqual(try RemoteConformance.content(r, "big"), data)
        let log = try proxy.log()
        func count(_ s: String) -> Int { log.filter { $0.contains(s) }.count }
        XCTAssertEqual(count("?uploads"), 2, "CreateMultipartUpload: one 503, one success\n\(log.joined(separator: "\n"))")
        XCTAssertEqual(count("partNumber=1&"), 1)
        XCTAssertEqual(count("partNumber=2&"), 2)
        XCTAssertEqual(count("partNumber=3&"), 3)
        XCTAssertEqual(count("partNumber=4&"), 1)
        XCTAssertEqual(log.filter { $0.hasPrefix("POST ") && $0.contains("uploadId=") }.count, 1, "one CompleteMultipartUpload")
        XCTAssertEqual(try pendingUploads(r), [])
    }

    /// When retries run out the error names the object and S3's code; a failed multipart upload is aborted.
    func testRetriesRunOut() throws {
        let (r, proxy) = try proxiedRemote(options: S3Options(partSize: 5 << 20, concurrency: 2, maxRetries: 2))
        try proxy.inject([("/k", "503", 3)])
        assertError(.remote, containing: ["s3://\(r.bucket)/\(r.prefix)/k: SlowDown (503)"]) { try r.put("k", bytes: [1]) }
        XCTAssertEqual(try proxy.log().filter { $0.contains("/k") }.count, 3, "1 attempt + 2 retries")
        // (libcurl itself retries once on a fresh connection when a reused one dies: queue plenty.)
        try proxy.inject([("/gone", "reset", 100)])
        assertError(.remote, containing: ["s3://\(r.bucket)/\(r.prefix)/gone: connection to", "(after 3 attempts)"]) {
            _ = try r.stat("gone")
        }

        try proxy.inject([("partNumber=2&", "503", 3)])
        assertError(.remote, containing: ["SlowDown (503)", "(part 2)"]) {
            try RemoteConformance.putStaged(r, "big", RemoteConformance.bytes(11 << 20, seed: 1))
        }
        XCTAssertTrue(try proxy.log().contains { $0.hasPrefix("DELETE ") && $0.contains("/big?uploadId=") }, "AbortMultipartUpload was sent")
        XCTAssertEqual(try pendingUploads(r), [], "the failed upload was aborted")
        XCTAssertNil(try r.stat("big"))
    }

    // MARK: URLs and addressing (no server needed)

    func testParseURL() throws {
        var p = try S3Remote.parse(url: "s3://bucket")
        XCTAssertEqual(p.bucket, "bucket"); XCTAssertEqual(p.prefix, ""); XCTAssertNil(p.region); XCTAssertNil(p.endpoint)
        p = try S3Remote.parse(url: "s3://bucket/some/prefix/")
        XCTAssertEqual(p.prefix, "some/prefix")
        p = try S3Remote.parse(url: "s3://my-bucket/p?region=eu-west-1&endpoint=http%3A%2F%2F127.0.0.1%3A9000%2F")
        XCTAssertEqual(p.bucket, "my-bucket"); XCTAssertEqual(p.prefix, "p")
        XCTAssertEqual(p.region, "eu-west-1"); XCTAssertEqual(p.endpoint, "http://127.0.0.1:9000")
        p = try S3Remote.parse(url: "s3://b.with.dots/x?endpoint=https://minio.example:9000")
        XCTAssertEqual(p.endpoint, "https://minio.example:9000")
        for bad in ["s3://", "s3:///prefix", "http://bucket/x", "s3://bucket/../x", "s3://bucket/a/./b", "s3://bucket?color=red",
                    "s3://bucket?endpoint=ftp://x", "s3://bucket?endpoint=http://user:pw@host", "s3://bu", "s3://bad bucket/x",
                    "s3://bucket?region="] {
            XCTAssertThrowsError(try S3Remote.parse(url: bad), bad) { e in
                XCTAssertEqual((e as? DogestryError)?.kind, .invalidInput, "\(bad): \(e)")
                XCTAssertFalse("\(e)".contains("pw"), "\(e)")
            }
        }
    }

    private func offlineRemote(bucket: String = "bucket", prefix: String = "p", region: String, endpoint: String? = nil) throws -> S3Remote {
        try S3Remote(bucket: bucket, prefix: prefix, region: region, endpoint: endpoint,
                     credentials: AWSStaticCredentialProvider(AWSCredentials(accessKeyID: "AK", secretAccessKey: "SK")))
    }

    func testAddressing() throws {
        XCTAssertEqual(try offlineRemote(region: "us-east-1").url("p/a b/c", []), "https://bucket.s3.us-east-1.amazonaws.com/p/a%20b/c")
        XCTAssertEqual(try offlineRemote(region: "eu-west-1").url(nil, [("list-type", "2"), ("prefix", "p/x y")]),
                       "https://bucket.s3.eu-west-1.amazonaws.com/?list-type=2&prefix=p%2Fx%20y")
        XCTAssertEqual(try offlineRemote(region: "cn-north-1").url("k", []), "https://bucket.s3.cn-north-1.amazonaws.com.cn/k")
        // Opt-in regions (af-south-1, ap-east-1, me-central-1, il-central-1, …) and GovCloud have
        // regional endpoints of the same form; the region also goes into the signature's scope.
        for region in ["af-south-1", "ap-east-1", "ap-southeast-5", "me-central-1", "il-central-1", "mx-central-1", "us-gov-west-1"] {
            let r = try offlineRemote(region: region)
            XCTAssertEqual(r.url("k", []), "https://bucket.s3.\(region).amazonaws.com/k")
            XCTAssertEqual(r.signer.region, region)
        }
        XCTAssertEqual(try offlineRemote(bucket: "with.dots", region: "us-west-2").url("k", []),
                       "https://s3.us-west-2.amazonaws.com/with.dots/k")
        let ep = try offlineRemote(region: "us-east-1", endpoint: "http://127.0.0.1:9000/")
        XCTAssertEqual(ep.url("p/k", []), "http://127.0.0.1:9000/bucket/p/k")
        XCTAssertEqual(ep.url(nil, [("uploads", "")]), "http://127.0.0.1:9000/bucket?uploads=")
        XCTAssertEqual(ep.displayURL, "s3://bucket/p")
        XCTAssertThrowsError(try offlineRemote(region: "us-east-1", endpoint: "127.0.0.1:9000"))
        XCTAssertThrowsError(try offlineRemote(region: "evil.com/x"))
        XCTAssertThrowsError(try S3Remote(bucket: "bucket", prefix: "", region: "us-east-1", endpoint: nil,
                                          credentials: AWSStaticCredentialProvider(AWSCredentials(accessKeyID: "AK", secretAccessKey: "SK")),
                                          options: S3Options(partSize: 1 << 20)))
    }

    func testErrorMessages() throws {
        let r = try offlineRemote(region: "us-east-1")
        let body = Array("""
            <?xml version="1.0" encoding="UTF-8"?>
            <Error><Code>SlowDown</Code><Message>Please reduce
            your request rate.</Message><RequestId>1</RequestId></Error>
            """.utf8)
        let resp = HTTPResponse(status: 503, headers: [:], errorBody: body)
        XCTAssertTrue(S3Remote.isRetryable(resp))
        let e = r.error(resp, "p/k")
        XCTAssertEqual(e.message, "s3://bucket/p/k: SlowDown (503): Please reduce your request rate.")
        XCTAssertEqual(e.kind, .remote)
        XCTAssertFalse(S3Remote.isRetryable(HTTPResponse(status: 403, errorBody: Array("<Error><Code>AccessDenied</Code></Error>".utf8))))
        XCTAssertTrue(S3Remote.isRetryable(HTTPResponse(status: 400, errorBody: Array("<Error><Code>RequestTimeout</Code></Error>".utf8))))
        XCTAssertTrue(S3Remote.isRetryable(HTTPResponse(status: 429)))
        let redirect = r.error(HTTPResponse(status: 301, headers: ["x-amz-bucket-region": "eu-central-1"]), "p/k")
        XCTAssertEqual(redirect.message, "s3://bucket/p/k: PermanentRedirect (301) (the bucket is in region eu-central-1, not us-east-1)")
        XCTAssertEqual(S3Dates.parseISO("2009-10-12T17:50:30.000Z"), Date(timeIntervalSince1970: 1_255_369_830))
        XCTAssertEqual(S3Dates.parseISO("2009-10-12T17:50:30.5Z")?.timeIntervalSince1970, 1_255_369_830.5)
        XCTAssertEqual(HTTPDate.parse("Mon, 12 Oct 2009 17:50:30 GMT"), Date(timeIntervalSince1970: 1_255_369_830))
    }
}

/// Strings appended from several threads.
private final class LockedList: @unchecked Sendable {
    private let lock = NSLock()
    private var list: [String] = []
    func append(_ s: String) { lock.lock(); list.append(s); lock.unlock() }
    var items: [String] { lock.lock(); defer { lock.unlock() }; return list }
}
