import DogestryCore
import DogestryRemotes
@testable import DogestryServe
import Foundation
import XCTest

/// The registry logic without HTTP, over an in-memory remote holding images written the way a
/// push writes them.
final class RegistryFrontEndTests: XCTestCase {
    struct Stored {
        var manifest: Digest
        var config: Digest
        var layers: [(blob: Digest, diffID: Digest, plain: [UInt8])]
    }

    /// Stores an image of `files` layers (one file each) compressed with `compression`, tagged `name:tag`.
    @discardableResult
    static func store(_ remote: MemoryRemote, name: String, tag: String, compression: Compression, files: [String]) throws -> Stored {
        let repo = Repository(remote: remote)
        try repo.ensureLayout()
        var layers: [(Digest, Digest, [UInt8])] = []
        var descriptors: [Descriptor] = []
        for f in files {
            let tarSink = MemorySink()
            let w = TarWriter(tarSink)
            try w.writeFile(name: f, bytes: Array(String(repeating: "content of \(f)\n", count: 2000).utf8))
            try w.finish()
            let plain = tarSink.bytes
            let out = MemorySink()
            let c = try compression.compressor(into: out)
            try c.write(plain); try c.close()
            let blob = try repo.putBlob(out.bytes)
            let diffID = Digest.of(plain)
            layers.append((blob, diffID, plain))
            descriptors.append(Descriptor(mediaType: compression.layerMediaType, digest: blob, size: Int64(out.bytes.count),
                                          annotations: [Annotation.diffID: diffID.description, Annotation.uncompressedSize: String(plain.count)]))
            try repo.recordLayer(diffID: diffID, LayerIndexEntry(digest: blob, mediaType: compression.layerMediaType, size: Int64(out.bytes.count), uncompressedSize: Int64(plain.count)))
        }
        let config = Array("{\"architecture\":\"amd64\",\"os\":\"linux\",\"rootfs\":{\"type\":\"layers\",\"diff_ids\":[\(layers.map { "\"\($0.1)\"" }.joined(separator: ","))]}}".utf8)
        let cd = try repo.putBlob(config)
        let m = ImageManifest(config: Descriptor(mediaType: MediaType.ociConfig, digest: cd, size: Int64(config.count)), layers: descriptors)
        let md = try repo.putBlob(m.encoded())
        try repo.writeRef(name: name, tag: tag, manifest: md)
        return Stored(manifest: md, config: cd, layers: layers.map { (blob: $0.0, diffID: $0.1, plain: $0.2) })
    }

    func frontEnd(_ remote: ReadableRemote, _ form: LayerForm = .compatible) -> RegistryFrontEnd {
        var s = ServeSettings(); s.layers = form
        return RegistryFrontEnd(repository: Repository(remote: remote), settings: s)
    }

    func body(_ fe: RegistryFrontEnd, _ a: BlobAnswer, offset: Int64 = 0) throws -> [UInt8] {
        try fe.open(a, offset: offset).readAll(limit: 64 << 20, what: "body")
    }

    func testZstdLayersAreServedAsPlainTarUnderTheirDiffIDs() throws {
        let remote = MemoryRemote()
        let img = try Self.store(remote, name: "team/app", tag: "1", compression: .zstd, files: ["a", "b"])
        let fe = frontEnd(remote)
        let m = try fe.manifest(name: "team/app", ns: nil, reference: "1")
        XCTAssertNotEqual(m.digest, img.manifest, "a converted manifest has a digest of its own")
        XCTAssertEqual(Digest.of(m.bytes), m.digest)
        let served = try ImageManifest.decode(m.bytes, what: "served")
        XCTAssertEqual(served.config.digest, img.config, "the image ID stays the same")
        XCTAssertEqual(served.layers.map(\.digest), img.layers.map(\.diffID))
        XCTAssertEqual(served.layers.map(\.mediaType), ["application/vnd.oci.image.layer.v1.tar", "application/vnd.oci.image.layer.v1.tar"])
        XCTAssertEqual(served.layers.map(\.size), img.layers.map { Int64($0.plain.count) })
        // Deterministic, and answered by its own digest, also by a fresh front end (restarted serve).
        XCTAssertEqual(try fe.manifest(name: "team/app", ns: nil, reference: "1").bytes, m.bytes)
        XCTAssertEqual(try frontEnd(remote).manifest(name: "team/app", ns: nil, reference: m.digest.description).bytes, m.bytes)
        // The stored manifest by its digest: byte for byte.
        let stored = try fe.manifest(name: "team/app", ns: nil, reference: img.manifest.description)
        XCTAssertEqual(stored.bytes, try remote.read(Repository.blobKey(img.manifest)))
        // A plain layer by its diffID, from a fresh front end (found through the diffID index).
        for l in img.layers {
            let a = try frontEnd(remote).blob(name: "team/app", ns: nil, digest: l.diffID.description)
            guard case .plain(_, let d, let size, _) = a else { return XCTFail("\(a) is not a plain layer") }
            XCTAssertEqual(d, l.diffID); XCTAssertEqual(size, Int64(l.plain.count))
            XCTAssertEqual(try body(fe, a), l.plain)
            XCTAssertEqual(try body(fe, a, offset: 100), Array(l.plain[100...]))
        }
    }

    func testConfigsAreReadOnceAndKept() throws {
        let remote = MemoryRemote()
        let img = try Self.store(remote, name: "cfg", tag: "1", compression: .gzip, files: ["a"])
        let fe = frontEnd(remote)
        _ = try fe.manifest(name: "cfg", ns: nil, reference: "1")
        let first = try body(fe, try fe.blob(name: "cfg", ns: nil, digest: img.config.description))
        XCTAssertEqual(Digest.of(first), img.config)
        try remote.delete(Repository.blobKey(img.config))   // the remote no longer has it: the cache answers
        XCTAssertEqual(try body(fe, try fe.blob(name: "cfg", ns: nil, digest: img.config.description)), first)
        XCTAssertThrowsError(try frontEnd(remote).blob(name: "cfg", ns: nil, digest: img.config.description), "a fresh serve has no cache")
    }

    func testClientsThatReadZstdGetItAsStored() throws {
        let remote = MemoryRemote()
        let z = try Self.store(remote, name: "z", tag: "1", compression: .zstd, files: ["a"])
        let zstdClient = ClientCapabilities(userAgent: "containerd/1.6.20~ds1")
        XCTAssertEqual(try frontEnd(remote).manifest(name: "z", ns: nil, reference: "1", client: zstdClient).digest, z.manifest)
        let plain = try frontEnd(remote, .plain).manifest(name: "z", ns: nil, reference: "1", client: zstdClient)
        XCTAssertEqual(try ImageManifest.decode(plain.bytes, what: "m").layers[0].digest, z.layers[0].diffID, "--layers plain: plain for everyone")
        // Both forms are answered by digest, whoever asks.
        let fresh = frontEnd(remote)
        XCTAssertEqual(try fresh.manifest(name: "z", ns: nil, reference: plain.digest.description).digest, plain.digest)
        XCTAssertEqual(try fresh.manifest(name: "z", ns: nil, reference: z.manifest.description).digest, z.manifest)
    }

    func testUserAgents() {
        for (ua, zstd) in [("containerd/1.6.20~ds1", true), ("containerd/1.4.13", false), ("containerd/2.0.0", true),
                           ("containers/5.23.1 (github.com/containers/image)", true), ("skopeo/1.9.3", true),
                           ("docker/20.10.24+dfsg1 go/go1.19.8 git-commit/5d6db84", false), ("docker/25.0.3 go/go1.21", true),
                           ("cri-o/1.26.1 go/go1.19", true), ("Go-http-client/1.1", false), ("", false)] as [(String, Bool)] {
            XCTAssertEqual(ClientCapabilities(userAgent: ua).readsZstd, zstd, ua)
        }
        XCTAssertFalse(ClientCapabilities(userAgent: nil).readsZstd)
    }

    func testStoredFormAndReadableLayersKeepTheStoredManifest() throws {
        let remote = MemoryRemote()
        let z = try Self.store(remote, name: "z", tag: "1", compression: .zstd, files: ["a"])
        let g = try Self.store(remote, name: "g", tag: "1", compression: .gzip, files: ["b"])
        XCTAssertEqual(try frontEnd(remote, .stored).manifest(name: "z", ns: nil, reference: "1").digest, z.manifest)
        XCTAssertEqual(try frontEnd(remote).manifest(name: "g", ns: nil, reference: "1").digest, g.manifest, "gzip is read by every runtime")
        let a = try frontEnd(remote, .stored).blob(name: "z", ns: nil, digest: z.layers[0].blob.description)
        XCTAssertEqual(try body(frontEnd(remote), a), try remote.read(Repository.blobKey(z.layers[0].blob), limit: 1 << 26))
        XCTAssertThrowsError(try frontEnd(remote, .stored).blob(name: "z", ns: nil, digest: z.layers[0].diffID.description)) {
            XCTAssertEqual(($0 as? RegistryError)?.code, "BLOB_UNKNOWN")
        }
    }

    func testDockerHubNamesAndNamespacesResolve() throws {
        let remote = MemoryRemote()
        let img = try Self.store(remote, name: "docker.io/library/nginx", tag: "1", compression: .gzip, files: ["a"])
        XCTAssertNotNil(try remote.stat("repositories/nginx/_tags/1"), "the canonical stored form is Docker's short one")
        let fe = frontEnd(remote)
        for (name, ns) in [("library/nginx", "docker.io"), ("nginx", nil), ("library/nginx", nil), ("docker.io/library/nginx", nil)] as [(String, String?)] {
            XCTAssertEqual(try fe.manifest(name: name, ns: ns, reference: "1").digest, img.manifest, "\(name) ns=\(ns ?? "-")")
        }
        try Self.store(remote, name: "registry.example.com/team/app", tag: "2", compression: .gzip, files: ["b"])
        XCTAssertNoThrow(try fe.manifest(name: "team/app", ns: "registry.example.com", reference: "2"))
        XCTAssertThrowsError(try fe.manifest(name: "team/app", ns: nil, reference: "2")) { XCTAssertEqual(($0 as? RegistryError)?.code, "NAME_UNKNOWN") }
        XCTAssertThrowsError(try fe.manifest(name: "nginx", ns: nil, reference: "9")) { XCTAssertEqual(($0 as? RegistryError)?.code, "MANIFEST_UNKNOWN") }
        XCTAssertEqual(try fe.catalog(), ["nginx", "registry.example.com/team/app"])
        XCTAssertEqual(try fe.tagList(name: "library/nginx", ns: nil).tags, ["1"])
    }

    func testRefsWrittenBeforeNormalisationStillResolve() throws {
        let remote = MemoryRemote()
        let img = try Self.store(remote, name: "x", tag: "1", compression: .gzip, files: ["a"])
        // An old ref under a long spelling, as pushes before normalisation wrote it.
        try remote.put("repositories/docker.io/library/old/_tags/1", bytes: Array("\(img.manifest)\n".utf8))
        let repo = Repository(remote: remote)
        XCTAssertEqual(try repo.readRef(name: "old", tag: "1"), img.manifest)
        XCTAssertEqual(try repo.readRef(name: "docker.io/library/old", tag: "1"), img.manifest)
        XCTAssertEqual(try frontEnd(remote).manifest(name: "library/old", ns: "docker.io", reference: "1").digest, img.manifest)
        XCTAssertEqual(Repository.resolvedView(try repo.listRefs()).map { "\($0.name):\($0.tag)" }, ["old:1", "x:1"])
        try repo.deleteRef(name: "old", tag: "1")
        XCTAssertNil(try repo.readRef(name: "old", tag: "1"), "rm removes every spelling, so none resurfaces")
    }

    func testCorruptBlobFailsAtTheEndAndNamesTheBlob() throws {
        let remote = MemoryRemote()
        let img = try Self.store(remote, name: "c", tag: "1", compression: .zstd, files: ["a"])
        let key = Repository.blobKey(img.layers[0].blob)
        var bytes = try remote.read(key, limit: 1 << 26)
        bytes[bytes.count - 5] ^= 0xff   // inside the frame checksum region
        try remote.put(key, bytes: bytes)
        let fe = frontEnd(remote)
        _ = try fe.manifest(name: "c", ns: nil, reference: "1")
        for a in [try fe.blob(name: "c", ns: nil, digest: img.layers[0].diffID.description),
                  try fe.blob(name: "c", ns: nil, digest: img.layers[0].blob.description)] {
            XCTAssertThrowsError(try body(fe, a)) { e in
                XCTAssertTrue((e as? DogestryError)?.message.contains(img.layers[0].blob.description) ?? false, "\(e)")
            }
        }
    }

    func testRoutesRefuseEscapesAndWrites() throws {
        XCTAssertEqual(try Route.parse("/v2/"), .base)
        XCTAssertEqual(try Route.parse("/v2/_catalog"), .catalog)
        XCTAssertEqual(try Route.parse("/v2/a/b/c/tags/list"), .tags(name: "a/b/c"))
        XCTAssertEqual(try Route.parse("/v2/a/manifests/sha256%3Aab"), .manifest(name: "a", reference: "sha256:ab"))
        XCTAssertEqual(try Route.parse("/v2/a/blobs/uploads/"), .write)
        XCTAssertEqual(try Route.parse("/v2/a/blobs/uploads/123"), .write)
        for bad in ["/v2/../x/manifests/1", "/v2/a%2f..%2fb/manifests/1", "/v2//etc/manifests/1", "/v2/A/manifests/1",
                    "/v2/a/%2e%2e/manifests/1", "/v2/a%00/manifests/1", "/etc/passwd", "/v2/a/manifests", "/v2/a/%zz/manifests/1"] {
            XCTAssertThrowsError(try Route.parse(bad), bad) { e in
                XCTAssertTrue([400, 404].contains((e as? RegistryError)?.status ?? 0), "\(bad): \(e)")
            }
        }
    }

    func testRanges() {
        XCTAssertEqual(ByteRange.parse(nil, size: 10), .none)
        XCTAssertEqual(ByteRange.parse("bytes=0-4", size: 10), .satisfiable(start: 0, end: 4))
        XCTAssertEqual(ByteRange.parse("bytes=5-", size: 10), .satisfiable(start: 5, end: 9))
        XCTAssertEqual(ByteRange.parse("bytes=-3", size: 10), .satisfiable(start: 7, end: 9))
        XCTAssertEqual(ByteRange.parse("bytes=8-100", size: 10), .satisfiable(start: 8, end: 9))
        XCTAssertEqual(ByteRange.parse("bytes=10-", size: 10), .unsatisfiable)
        XCTAssertEqual(ByteRange.parse("bytes=0-1,3-4", size: 10), .none)
        XCTAssertEqual(ByteRange.parse("bytes=4-2", size: 10), .none)
        XCTAssertEqual(ByteRange.parse("items=0-1", size: 10), .none)
    }

    func testNameNormalisation() {
        XCTAssertEqual(ImageReference.normalizedName("docker.io/library/x"), "x")
        XCTAssertEqual(ImageReference.normalizedName("index.docker.io/library/x"), "x")
        XCTAssertEqual(ImageReference.normalizedName("docker.io/x"), "x")
        XCTAssertEqual(ImageReference.normalizedName("library/x"), "x")
        XCTAssertEqual(ImageReference.normalizedName("docker.io/user/x"), "user/x")
        XCTAssertEqual(ImageReference.normalizedName("library/a/b"), "library/a/b")
        XCTAssertEqual(ImageReference.normalizedName("ghcr.io/library/x"), "ghcr.io/library/x")
        XCTAssertEqual(ImageReference.normalizedName("localhost:5000/x"), "localhost:5000/x")
        XCTAssertEqual(try ImageReference(parsing: "docker.io/library/nginx:1").description, "nginx:1")
    }

    func testHostsToml() throws {
        let t = try HostsToml.render(registry: "docker.io", mirror: "http://127.0.0.1:5000")
        XCTAssertTrue(t.contains("server = \"https://registry-1.docker.io\""))
        XCTAssertTrue(t.contains("[host.\"http://127.0.0.1:5000\"]"))
        XCTAssertTrue(t.contains("capabilities = [\"pull\", \"resolve\"]"))
        XCTAssertTrue(try HostsToml.render(registry: "ghcr.io", mirror: "http://x:1").contains("server = \"https://ghcr.io\""))
        XCTAssertThrowsError(try HostsToml.render(registry: "not a host", mirror: "http://x:1"))
        XCTAssertThrowsError(try HostsToml.render(registry: "ghcr.io/x", mirror: "http://x:1"))
    }
}
