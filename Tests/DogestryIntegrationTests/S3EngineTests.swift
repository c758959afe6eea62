import DogestryCore
import DogestryEngine
@testable import DogestryRemotes
import DogestrySync
import Foundation
import XCTest

/// Push from and pull into the real engines through an S3 remote (the SeaweedFS that
/// scripts/test starts: DOGESTRY_TEST_S3_ENDPOINT / _ACCESS_KEY / _SECRET_KEY), with the library
/// API. Every test uses a fresh prefix of this run's bucket and its own images.
final class S3EngineTests: EngineRemoteTestCase {
    override var namePrefix: String { "s3" }

    // MARK: the S3 server

    struct Server { var endpoint: String; var accessKey: String; var secretKey: String }

    static func server(file: StaticString = #filePath, line: UInt = #line) throws -> Server {
        let env = ProcessInfo.processInfo.environment
        guard let ep = env["DOGESTRY_TEST_S3_ENDPOINT"], !ep.isEmpty,
              let ak = env["DOGESTRY_TEST_S3_ACCESS_KEY"], !ak.isEmpty,
              let sk = env["DOGESTRY_TEST_S3_SECRET_KEY"], !sk.isEmpty else {
            let msg = "no S3 server: DOGESTRY_TEST_S3_ENDPOINT/_ACCESS_KEY/_SECRET_KEY are not set (run scripts/test)"
            if env["DOGESTRY_REQUIRE_ENGINES"] == "1" || env["DOGESTRY_REQUIRE_S3"] == "1" { XCTFail(msg, file: file, line: line) }
            throw XCTSkip(msg)
        }
        return Server(endpoint: ep, accessKey: ak, secretKey: sk)
    }

    nonisolated(unsafe) private static var runBucket: String?
    private static let bucketLock = NSLock()

    static func makeRemote(_ s: Server, bucket: String, prefix: String, options: S3Options) throws -> S3Remote {
        try S3Remote(bucket: bucket, prefix: prefix, region: "us-east-1", endpoint: s.endpoint,
                     credentials: AWSStaticCredentialProvider(AWSCredentials(accessKeyID: s.accessKey, secretAccessKey: s.secretKey),
                                                              sourceDescription: "test credentials"),
                     options: options)
    }

    /// A remote over a fresh prefix of this run's bucket (created once).
    func freshRemote(options: S3Options = S3Options(partSize: 5 << 20, concurrency: 3)) throws -> S3Remote {
        let s = try Self.server()
        Self.bucketLock.lock()
        defer { Self.bucketLock.unlock() }
        if Self.runBucket == nil {
            let b = "dogestry-engine-" + UUID().uuidString.lowercased().prefix(8)
            try Self.makeRemote(s, bucket: b, prefix: "", options: options).createBucket()
            Self.runBucket = b
        }
        return try Self.makeRemote(s, bucket: Self.runBucket!, prefix: "engine/" + UUID().uuidString.lowercased(), options: options)
    }

    func testRoundTripThroughS3IntoDockerAndPodman() throws {
        try roundTrip(try makeImage("docker-app-v1.tar", "roundtrip"), remote: try freshRemote())
    }

    // MARK: 2. incremental push

    func testPushOfV2AfterV1UploadsOnlyTheChangedLayer() throws {
        let docker = try S.docker()
        let v1 = try makeImage("docker-app-v1.tar", "incr-v1")
        let v2 = try makeImage("docker-app-v2.tar", "incr-v2", uniqueTopLayer: true)
        XCTAssertEqual(Array(v1.diffIDs.prefix(3)), Array(v2.diffIDs.prefix(3)))
        try load(v1, into: docker)
        try load(v2, into: docker)
        let remote = try freshRemote()
        XCTAssertEqual(try enginePush([v1.tag], from: docker, to: remote).layersUploaded, 4)

        let before = remote.traffic
        let report = try enginePush([v2.tag], from: docker, to: remote)
        let t = remote.traffic
        XCTAssertEqual(report.layersUploaded, 1)
        XCTAssertEqual(report.layersPresent, 3)
        XCTAssertEqual(report.blobsWritten, 3, "one layer, the config and the manifest")
        let pushed = try XCTUnwrap(report.images.first)
        let manifest = try Repository(remote: remote).readManifest(pushed.manifest)
        XCTAssertEqual(manifest.layers.map { $0.diffID }, v2.diffIDs)
        XCTAssertEqual(report.bytesUploaded, manifest.layers[3].size)
        // What went up: the top layer's blob and a few small documents (config, manifest, index entry, ref).
        let sent = t.bytesSent - before.bytesSent
        XCTAssertGreaterThanOrEqual(sent, manifest.layers[3].size + Int64(v2.config.count))
        XCTAssertLessThan(sent, manifest.layers[3].size + Int64(v2.config.count) + 8192, "sent \(sent) bytes")
    }

    // MARK: 3. no-op push

    /// A push of an image the remote has is a handful of small requests: per layer the index entry
    /// (GET) and its blob (HEAD), the config and manifest checks, and the ref (PUT); only the ref
    /// is sent.
    func testNoOpPushIsAFewSmallRequests() throws {
        let docker = try S.docker()
        let image = try makeImage("docker-app-v1.tar", "noop")
        try load(image, into: docker)
        let remote = try freshRemote()
        let first = try enginePush([image.tag], from: docker, to: remote)
        XCTAssertEqual(first.layersUploaded, 4)

        let before = remote.traffic
        let report = try enginePush([image.tag], from: docker, to: remote)
        let t = remote.traffic
        XCTAssertEqual(report.layersUploaded, 0)
        XCTAssertEqual(report.layersPresent, 4)
        XCTAssertEqual(report.blobsWritten, 0)
        XCTAssertEqual(report.images.first?.manifest, first.images.first?.manifest)
        let requests = t.requests - before.requests
        let layers = image.layers.count
        // HEAD oci-layout; per layer GET index entry + HEAD blob; GET manifest + GET config (the
        // index entries' proof, docs/FORMAT.md "Layer index"; the config is EnginePusher's too),
        // HEAD config (EnginePusher), HEAD config + HEAD manifest (publish); PUT ref = 2 × layers + 7.
        XCTAssertLessThanOrEqual(requests, 7 + 2 * layers, "\(requests) requests for a no-op push of \(layers) layers")
        let sent = t.bytesSent - before.bytesSent
        let ref = Int64(("sha256:" + String(repeating: "0", count: 64) + "\n").utf8.count)
        XCTAssertEqual(sent, ref, "only the ref is sent")
        XCTAssertLessThan(sent, 4096)
        XCTAssertLessThan(t.bytesReceived - before.bytesReceived, 64 << 10, "index entries and the config only")
    }

    // MARK: 4. multipart and ranged GETs

    /// A ~12 MB incompressible layer with 5 MiB parts goes up as a multipart upload and comes
    /// back down with ranged GETs, into Docker and Podman.
    func testLayerBiggerThanPartSizeUsesMultipartAndRangedGets() throws {
        var image = try makeImage("docker-app-v1.tar", "multipart")
        let sfx = S.uniqueSuffix()
        var rng = SystemRandomNumberGenerator()
        var random = [UInt8](repeating: 0, count: 12_000_000)
        random.withUnsafeMutableBytes { buf in
            let words = buf.bindMemory(to: UInt64.self)
            for i in 0..<words.count { words[i] = rng.next() }
        }
        image.layers[3] = try S.appendFile(to: image.layers[3], name: "random-\(sfx).bin", bytes: random)
        guard var cfg = try JSONSerialization.jsonObject(with: Data(image.config)) as? [String: Any],
              var rootfs = cfg["rootfs"] as? [String: Any] else { throw DogestryError.invalid("fixture config") }
        rootfs["diff_ids"] = image.layers.map { Digest.of($0).description }
        cfg["rootfs"] = rootfs
        image.config = [UInt8](try JSONSerialization.data(withJSONObject: cfg, options: [.sortedKeys, .withoutEscapingSlashes]))

        let remote = try freshRemote(options: S3Options(partSize: 5 << 20, concurrency: 3))
        let before = remote.traffic
        try roundTrip(image, remote: remote)
        let t = remote.traffic

        let repo = Repository(remote: remote)
        let md = try XCTUnwrap(try repo.readRef(name: image.name, tag: image.tagPart))
        let top = try repo.readManifest(md).layers[3]
        XCTAssertGreaterThan(top.size, 10 << 20, "the random layer does not compress")
        // Stored as a multipart upload: the ETag of such an object ends in "-<parts>".
        let (head, _) = try remote.fetch(S3Remote.Request(method: "HEAD", key: remote.keyBase + Repository.blobKey(top.digest)))
        let etag = try XCTUnwrap(head.header("etag")).replacingOccurrences(of: "\"", with: "")
        let parts = Int((top.size + (5 << 20) - 1) / (5 << 20))
        XCTAssertTrue(etag.hasSuffix("-\(parts)"), "ETag \(etag) is not that of a \(parts)-part upload")
        // The blob went up once and came down once (for both engines), whole.
        XCTAssertGreaterThan(t.bytesSent - before.bytesSent, top.size)
        XCTAssertGreaterThan(t.bytesReceived - before.bytesReceived, top.size)
        XCTAssertLessThan(t.bytesReceived - before.bytesReceived, 2 * top.size)
    }
}
