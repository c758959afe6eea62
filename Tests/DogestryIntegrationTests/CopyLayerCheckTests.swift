import DogestryCore
@testable import DogestryRemotes
import DogestrySync
import Foundation
import XCTest

/// A registry image's layers carry no uncompressed size, so `copy` inflates each one as it
/// arrives to check its diffID and record the size. These images live in memory remotes and
/// have well-formed blobs (their digests match) that lie about what they decompress to.
final class CopyLayerCheckTests: XCTestCase {
    static func gzip(_ plain: [UInt8]) throws -> [UInt8] {
        let out = MemorySink()
        let z = try Compression.gzip.compressor(into: out)
        try z.write(plain)
        try z.close()
        return out.bytes
    }

    /// A one-layer image with `layer` stored as given and `diffID` in its config; its manifest
    /// (like a registry's) records no uncompressed size.
    static func image(layer: [UInt8], diffID: Digest) throws -> MemoryRemote {
        let remote = MemoryRemote(name: "src")
        let repo = Repository(remote: remote)
        try repo.ensureLayout()
        let config = Array("{\"architecture\":\"amd64\",\"os\":\"linux\",\"config\":{},\"rootfs\":{\"type\":\"layers\",\"diff_ids\":[\"\(diffID)\"]}}".utf8)
        let manifest = Array("""
        {"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json",\
        "config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"\(Digest.of(config))","size":\(config.count)},\
        "layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"\(Digest.of(layer))","size":\(layer.count)}]}
        """.utf8)
        for b in [layer, config, manifest] { try remote.put(Repository.blobKey(Digest.of(b)), bytes: b) }
        try repo.writeRef(name: "check/app", tag: "1", manifest: Digest.of(manifest))
        return remote
    }

    func copyFails(_ src: MemoryRemote) throws -> (String, MemoryRemote) {
        let dst = MemoryRemote(name: "dst")
        let c = Copier(source: Repository(remote: src), destination: Repository(remote: dst))
        var message = ""
        XCTAssertThrowsError(try c.copy(try c.resolve(["check/app:1"], all: false))) { message = "\($0)" }
        return (message, dst)
    }

    func assertNothingStored(_ dst: MemoryRemote, _ layer: [UInt8], file: StaticString = #filePath, line: UInt = #line) throws {
        XCTAssertNil(try dst.stat(Repository.blobKey(Digest.of(layer))), "the layer was stored", file: file, line: line)
        var refs = 0
        try dst.list(prefix: "repositories/") { _ in refs += 1 }
        XCTAssertEqual(refs, 0, "a ref was written", file: file, line: line)
    }

    func testAGoodLayerIsCopiedWithItsSizeRecorded() throws {
        var plain = [UInt8](repeating: 7, count: 3 << 20)
        for i in stride(from: 0, to: plain.count, by: 4093) { plain[i] = UInt8(truncatingIfNeeded: i / 4093) }
        let layer = try Self.gzip(plain)
        let src = try Self.image(layer: layer, diffID: Digest.of(plain))
        let dst = MemoryRemote(name: "dst")
        let repo = Repository(remote: dst)
        let c = Copier(source: Repository(remote: src), destination: repo)
        _ = try c.copy(try c.resolve(["check/app:1"], all: false))
        let entry = try XCTUnwrap(Repository.decodeIndexEntry(try XCTUnwrap(try repo.readIndexEntry(diffID: Digest.of(plain)))))
        XCTAssertEqual(entry.digest, Digest.of(layer))
        XCTAssertEqual(entry.uncompressedSize, Int64(plain.count))
        var refs = 0
        try dst.list(prefix: "repositories/") { _ in refs += 1 }
        XCTAssertEqual(refs, 1, "the ref is listed where assertNothingStored looks")
    }

    func testALayerThatDecompressesToAnotherDiffIDIsRefused() throws {
        let plain = Array(String(repeating: "layer bytes ", count: 100_000).utf8)
        let layer = try Self.gzip(plain)
        let claimed = Digest.of(Array("something else".utf8))
        let (message, dst) = try copyFails(try Self.image(layer: layer, diffID: claimed))
        XCTAssertTrue(message.contains("layer blob \(Digest.of(layer))"), message)
        XCTAssertTrue(message.contains("decompresses to \(Digest.of(plain)), expected diffID \(claimed)"), message)
        XCTAssertTrue(message.contains("nothing was copied"), message)
        try assertNothingStored(dst, layer)
    }

    /// Into S3 a large layer's parts go out while it downloads; a layer found bad at its end
    /// (here: inflating to another diffID) leaves no object and no multipart upload behind,
    /// and a good one arrives whole.
    func testIntoS3ABadLayerSentEarlyLeavesNoObjectAndNoUpload() throws {
        var plain = [UInt8](repeating: 0, count: 24 << 20)
        var x: UInt64 = 0x9E3779B97F4A7C15
        for i in 0..<plain.count { x ^= x << 13; x ^= x >> 7; x ^= x << 17; plain[i] = UInt8(truncatingIfNeeded: x) }
        let layer = try Self.gzip(plain)   // random bytes: the blob is as large as the layer, several parts
        let s3 = try XCTUnwrap(try ServeClientTests.s3Remote() as? S3Remote)
        func uploads() throws -> Int {
            let (resp, body) = try s3.fetch(S3Remote.Request(method: "GET", key: nil, query: [("uploads", ""), ("prefix", s3.keyBase)]))
            XCTAssertTrue(resp.isSuccess)
            return S3XMLElement.parse(body)?.children("Upload").count ?? -1
        }
        let lying = try Self.image(layer: layer, diffID: Digest.of(Array("not this".utf8)))
        let sentBefore = s3.traffic.bytesSent
        let c = Copier(source: Repository(remote: lying), destination: Repository(remote: s3))
        XCTAssertThrowsError(try c.copy(try c.resolve(["check/app:1"], all: false))) {
            XCTAssertTrue("\($0)".contains("expected diffID"), "\($0)")
        }
        XCTAssertGreaterThanOrEqual(s3.traffic.bytesSent - sentBefore, 5 << 20, "parts went out before the layer was checked")
        XCTAssertNil(try s3.stat(Repository.blobKey(Digest.of(layer))))
        XCTAssertEqual(try uploads(), 0, "the early multipart upload was aborted")

        let good = try Self.image(layer: layer, diffID: Digest.of(plain))
        let before = s3.traffic.requests
        let g = Copier(source: Repository(remote: good), destination: Repository(remote: s3))
        _ = try g.copy(try g.resolve(["check/app:1"], all: false))
        XCTAssertGreaterThanOrEqual(s3.traffic.requests - before, 5, "a multipart upload of 5 parts at least")
        XCTAssertEqual(try s3.read(Repository.blobKey(Digest.of(layer)), limit: 64 << 20), layer)
        XCTAssertEqual(try uploads(), 0)
    }

    func testATruncatedOrBadChecksumGzipLayerIsRefused() throws {
        let plain = Array(String(repeating: "more layer bytes ", count: 100_000).utf8)
        let whole = try Self.gzip(plain)
        var badCRC = whole
        badCRC[badCRC.count - 6] ^= 0x40
        let cases: [([UInt8], String)] = [(Array(whole[0..<(whole.count / 2)]), "gzip stream is truncated"),
                                          (badCRC, "CRC-32 or size check failed")]
        for (layer, why) in cases {
            let (message, dst) = try copyFails(try Self.image(layer: layer, diffID: Digest.of(plain)))
            XCTAssertTrue(message.contains("layer blob \(Digest.of(layer))") && message.contains(why), message)
            XCTAssertFalse(message.contains("\n"), message)
            try assertNothingStored(dst, layer)
        }
    }
}
