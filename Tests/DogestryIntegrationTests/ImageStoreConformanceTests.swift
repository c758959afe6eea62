import DogestryCore
@testable import DogestryRemotes
import DogestrySync
import Foundation
import XCTest

/// The one conformance suite of the image-level interface (`ImageSource` / `ImageDestination`,
/// see their contract in ImageStore.swift), run over a dogestry remote (a directory) and over
/// real registries: distribution 2.8 on disk (plain HTTP) and with token auth and S3 storage that
/// redirects blob reads. Where the kinds differ by design (a dogestry remote shares blobs between
/// names, a registry keeps them per repository), the suite checks each kind's side.
final class ImageStoreConformanceTests: XCTestCase {
    typealias R = RegistryTests

    func stores() throws -> [(label: String, store: ImageDestination, perRepository: Bool)] {
        let dir = try EngineTestSupport.makeTempDirectory("isc-local")
        addTeardownBlock { try? FileManager.default.removeItem(atPath: dir) }
        let local = Repository(remote: try LocalRemote(path: dir))
        try local.ensureLayout()
        let sfx = EngineTestSupport.uniqueSuffix()
        return [
            ("directory", RepositoryImageStore(local), false),
            ("registry (plain)", try R.registry("registry://\(try R.peer("plain").addr)/isc\(sfx)", insecure: true), true),
            ("registry (token, S3 redirects)", try R.registry("registry://\(try R.peer("s3").addr)/isc\(sfx)", creds: "\(R.user):\(R.pass)"), true),
        ]
    }

    func staged(_ bytes: [UInt8], in store: ImageDestination) throws -> StagedFile {
        let f = try store.makeStagedFile()
        let sink = try f.sink()
        try bytes.withUnsafeBytes { try sink.write($0) }
        try sink.close()
        return f
    }

    func testContractOverEveryKindOfStore() throws {
        for (label, store, perRepository) in try stores() {
            try check(label, store, perRepository: perRepository)
        }
    }

    func check(_ label: String, _ store: ImageDestination, perRepository: Bool) throws {
        func fail(_ m: String, line: UInt = #line) { XCTFail("[\(label)] \(m)", line: line) }
        let layer = Array("layer \(label) \(UUID().uuidString)\n".utf8) + [UInt8](repeating: 7, count: 70_000)
        let ld = Digest.of(layer)
        let config = Array(#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":["\#(ld)"]}}"#.utf8)
        let cd = Digest.of(config)
        let manifest = StoredManifest(bytes: [UInt8](try JSONSerialization.data(withJSONObject: [
            "schemaVersion": 2, "mediaType": MediaType.ociManifest,
            "config": ["mediaType": MediaType.ociConfig, "digest": cd.description, "size": config.count],
            "layers": [["mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": ld.description, "size": layer.count]],
        ], options: [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes])))

        // Absence is nil, not an error; a missing blob opens as notFound.
        XCTAssertNil(try store.manifest("a", reference: "nope"), label)
        XCTAssertNil(try store.manifest("a", reference: ld.description), label)
        XCTAssertNil(try store.blobSize("a", ld), label)
        XCTAssertNil(try store.placeBlob("a", ld, size: Int64(layer.count), from: nil), "[\(label)] nothing to place")
        do { _ = try store.openBlob("a", ld).readAll(limit: 1 << 20, what: "x"); fail("opened a missing blob") } catch let e as DogestryError {
            XCTAssertEqual(e.kind, .notFound, "[\(label)] \(e.message)")
        }

        // Blobs: put, size, content; present afterwards.
        let f = try staged(layer, in: store)
        defer { f.discard() }
        try store.putBlob("a", ld, file: f, size: Int64(layer.count))
        try store.putBlob("a", cd, bytes: config)
        XCTAssertEqual(try store.blobSize("a", ld), Int64(layer.count), label)
        XCTAssertEqual(try store.openBlob("a", ld).readAll(limit: 1 << 20, what: "layer"), layer, label)
        XCTAssertEqual(try store.readBlob("a", cd, what: "config"), config, label)
        XCTAssertEqual(try store.placeBlob("a", ld, size: Int64(layer.count), from: nil), .present, label)

        // Another name: a registry lacks the blob there until it is mounted from where it is.
        if perRepository {
            XCTAssertNil(try store.blobSize("b", ld), "[\(label)] blobs belong to a repository")
            XCTAssertEqual(try store.placeBlob("b", ld, size: Int64(layer.count), from: (store, "a")),
                           .mounted(from: (store as! RegistryImageStore).endpoint.repository("a")), label)
        } else {
            XCTAssertEqual(try store.placeBlob("b", ld, size: Int64(layer.count), from: (store, "a")), .present, "[\(label)] one blob store for every name")
        }
        XCTAssertEqual(try store.blobSize("b", ld), Int64(layer.count), label)

        // Manifests: by tag and by digest, byte for byte; tags and refs list them.
        try store.putManifest("a", manifest, tag: "t1")
        XCTAssertEqual(try store.manifest("a", reference: "t1"), manifest, label)
        XCTAssertEqual(try store.manifest("a", reference: manifest.digest.description)?.bytes, manifest.bytes, label)
        XCTAssertEqual(try store.tags("a"), ["t1"], label)
        try store.putManifest("a", manifest, tag: nil)
        XCTAssertEqual(try store.tags("a"), ["t1"], "[\(label)] a put by digest adds no tag")
        try store.putManifest("a", manifest, tag: "t2")
        XCTAssertEqual(try store.tags("a"), ["t1", "t2"], label)
        let refs = try store.refs(warn: { fail("warning: \($0)") })
        XCTAssertTrue(refs.contains(RemoteRef(name: "a", tag: "t1", manifest: manifest.digest)), "[\(label)] \(refs)")

        // The same manifest under a second name, after its blobs are placed there.
        _ = try store.placeBlob("b", cd, size: Int64(config.count), from: (store, "a"))
        try store.putManifest("b", manifest, tag: "x")
        XCTAssertEqual(try store.manifest("b", reference: "x")?.digest, manifest.digest, label)

        // Deleting a tag: a registry deletes manifests, so it refuses while another tag shares one.
        if perRepository {
            do { try store.deleteTag("a", "t1"); fail("deleted a manifest another tag uses") } catch let e as DogestryError {
                XCTAssertTrue(e.message.contains("t2"), "[\(label)] \(e.message)")
            }
        } else {
            try store.deleteTag("a", "t1")
            XCTAssertEqual(try store.tags("a"), ["t2"], label)
        }
        for (d, n) in [(ld, layer.count), (cd, config.count)] {
            XCTAssertNotNil(try store.placeBlob("c", d, size: Int64(n), from: (store, "a")), label)
        }
        try store.putManifest("c", manifest, tag: "only")
        try store.deleteTag("c", "only")
        XCTAssertNil(try store.manifest("c", reference: "only"), label)
        XCTAssertEqual(try store.manifest("b", reference: "x")?.digest, manifest.digest, "[\(label)] other names keep theirs")
    }
}
