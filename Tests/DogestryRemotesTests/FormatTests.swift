import DogestryCore
import DogestryRemotes
import Foundation
import XCTest

/// Image references and the repository format (keys, refs, the diffID index, manifests).
final class FormatTests: XCTestCase {
    private func makeRepo() throws -> Repository {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("dogestry-format-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        addTeardownBlock { try? FileManager.default.removeItem(atPath: dir) }
        return Repository(remote: try LocalRemote(path: dir))
    }

    private let d1 = Digest.of("one"), d2 = Digest.of("two"), d3 = Digest.of("three")

    // MARK: ImageReference

    func testValidReferences() throws {
        let cases: [(String, String, String?)] = [
            ("a", "a", "latest"),
            ("a/b", "a/b", "latest"),
            ("localhost:5000/a/b:tag", "localhost:5000/a/b", "tag"),
            ("localhost/a", "localhost/a", "latest"),
            ("registry.example.com/team/app:1.2.3-rc_1", "registry.example.com/team/app", "1.2.3-rc_1"),
            ("a__b", "a__b", "latest"),
            ("a-----b", "a-----b", "latest"),
            ("a.b_c", "a.b_c", "latest"),
            ("a0/b1.c2/d3:V_x.Y-z", "a0/b1.c2/d3", "V_x.Y-z"),
            ("a:" + String(repeating: "t", count: 128), "a", String(repeating: "t", count: 128)),
            (String(repeating: "a", count: 255), String(repeating: "a", count: 255), "latest"),
        ]
        for (s, name, tag) in cases {
            let r = try ImageReference(parsing: s)
            XCTAssertEqual(r.name, name, s)
            XCTAssertEqual(r.tag, tag, s)
            XCTAssertNil(r.digest, s)
            XCTAssertTrue(ImageReference.isValidName(name), name)
        }
        // A digest reference has no default tag.
        let dr = try ImageReference(parsing: "a/b@\(d1)")
        XCTAssertEqual(dr.name, "a/b")
        XCTAssertNil(dr.tag)
        XCTAssertEqual(dr.digest, d1)
        XCTAssertEqual(dr.description, "a/b@\(d1)")
        let both = try ImageReference(parsing: "a/b:v1@\(d1)")
        XCTAssertEqual(both.tag, "v1")
        XCTAssertEqual(both.description, "a/b:v1@\(d1)")
        XCTAssertNil(try ImageReference(parsing: "a", defaultTag: nil).tag)
        XCTAssertEqual(try ImageReference(parsing: "a/b:c").description, "a/b:c")
    }

    func testInvalidReferences() {
        let cases = [
            "A", "a/B", "a/../b", "../a", "a/..", "a//b", "/a", "a/", ".a", "a.", "-a", "a-", "_a", "a___b", "a..b",
            "a:", "a:-x", "a:.x", "a:" + String(repeating: "t", count: 129),
            String(repeating: "a", count: 256), "a b", "a/b:c/d", "a:b c", "", ":tag", "a/_tags/b",
            "a@sha256:abc", "a@md5:" + String(repeating: "0", count: 32), "localhost:port/a", "a\u{0}b", "ä",
        ]
        for s in cases {
            XCTAssertThrowsError(try ImageReference(parsing: s), "\"\(s)\" should be refused") { e in
                guard let e = e as? DogestryError else { return XCTFail("not a DogestryError for \(s): \(e)") }
                XCTAssertEqual(e.kind, .invalidInput, s)
                XCTAssertFalse(e.message.contains("\n"), s)
            }
        }
        XCTAssertFalse(ImageReference.isValidTag(""))
        XCTAssertFalse(ImageReference.isValidTag(String(repeating: "t", count: 129)))
        XCTAssertTrue(ImageReference.isValidTag(String(repeating: "t", count: 128)))
        XCTAssertFalse(ImageReference.isValidName(String(repeating: "a", count: 256)))
    }

    func testErrorsNameTheFaultyPart() {
        func message(_ s: String) -> String {
            do { _ = try ImageReference(parsing: s); return "" } catch { return "\(error)" }
        }
        XCTAssertTrue(message("a:bad tag").contains("\"bad tag\""), message("a:bad tag"))
        XCTAssertTrue(message("Foo:bar").contains("\"Foo\""), message("Foo:bar"))
    }

    // MARK: keys

    func testRefKeysPutTagsUnderTheirOwnDirectory() {
        XCTAssertEqual(Repository.refKey(name: "a/b", tag: "c"), "repositories/a/b/_tags/c")
        XCTAssertEqual(Repository.refKey(name: "a/b/c", tag: "latest"), "repositories/a/b/c/_tags/latest")
        XCTAssertNotEqual(Repository.refKey(name: "a/b", tag: "c"), Repository.refKey(name: "a/b/c", tag: "latest"))
        XCTAssertEqual(Repository.blobKey(d1), "blobs/sha256/" + d1.hex)
        XCTAssertEqual(Repository.diffIDKey(d1), "index/diffid/sha256/" + d1.hex)
    }

    /// "a/b:c" and "a/b/c:latest" live side by side on a real remote.
    func testNameAndTagThatLookAlikeCoexist() throws {
        let repo = try makeRepo()
        try repo.writeRef(name: "a/b", tag: "c", manifest: d1)
        try repo.writeRef(name: "a/b/c", tag: "latest", manifest: d2)
        try repo.writeRef(name: "a/b/c", tag: "c", manifest: d3)
        XCTAssertEqual(try repo.readRef(name: "a/b", tag: "c"), d1)
        XCTAssertEqual(try repo.readRef(name: "a/b/c", tag: "latest"), d2)
        XCTAssertEqual(try repo.readRef(name: "a/b/c", tag: "c"), d3)
        XCTAssertNil(try repo.readRef(name: "a/b", tag: "latest"))
        let refs = try repo.listRefs()
        XCTAssertEqual(refs.map { "\($0.name):\($0.tag)=\($0.manifest)" },
                       ["a/b:c=\(d1)", "a/b/c:c=\(d3)", "a/b/c:latest=\(d2)"])
        try repo.deleteRef(name: "a/b", tag: "c")
        XCTAssertNil(try repo.readRef(name: "a/b", tag: "c"))
        XCTAssertEqual(try repo.readRef(name: "a/b/c", tag: "latest"), d2)
    }

    func testRefFileFormat() throws {
        let repo = try makeRepo()
        try repo.writeRef(name: "x", tag: "v1", manifest: d1)
        XCTAssertEqual(String(decoding: try repo.remote.read("repositories/x/_tags/v1"), as: UTF8.self), "\(d1)\n")
        // Surrounding whitespace is tolerated on read.
        try repo.writer.put("repositories/x/_tags/v2", bytes: Array("  \(d2)\r\n\n".utf8))
        XCTAssertEqual(try repo.readRef(name: "x", tag: "v2"), d2)
    }

    func testRefThatIsNotADigestIsAnErrorNamingTheKey() throws {
        let repo = try makeRepo()
        for content in ["hello\n", "", "sha256:1234\n", "\(d1)\(d2)", "SHA256:" + d1.hex.uppercased()] {
            try repo.writer.put("repositories/x/_tags/bad", bytes: Array(content.utf8))
            XCTAssertThrowsError(try repo.readRef(name: "x", tag: "bad"), "content \"\(content)\"") { e in
                guard let e = e as? DogestryError else { return XCTFail("\(e)") }
                XCTAssertEqual(e.kind, .corrupt)
                XCTAssertTrue(e.message.contains("repositories/x/_tags/bad"), e.message)
                XCTAssertFalse(e.message.contains("\n"))
            }
            XCTAssertThrowsError(try repo.listRefs()) { e in
                XCTAssertTrue("\(e)".contains("repositories/x/_tags/bad"), "\(e)")
            }
        }
    }

    func testListRefsSkipsInvalidKeys() throws {
        let repo = try makeRepo()
        try repo.writeRef(name: "ok", tag: "v1", manifest: d1)
        try repo.writeRef(name: "ok/nested", tag: "v2", manifest: d2)
        let invalidKeys = [
            "repositories/Bad/_tags/x",          // uppercase name
            "repositories/nottags/v1",           // no _tags marker
            "repositories/ok/_tags/-x",          // invalid tag
            "repositories/ok/_tags/a b",         // invalid tag
            "repositories/_tags/v1",             // empty name
            "repositories/ok/_tags/x/extra",     // tag with a slash
        ]
        for k in invalidKeys { try repo.writer.put(k, bytes: Array("\(d3)\n".utf8)) }
        var reported: [String] = []
        let refs = try repo.listRefs { reported.append($0) }
        XCTAssertEqual(refs.map { "\($0.name):\($0.tag)" }, ["ok:v1", "ok/nested:v2"])
        XCTAssertEqual(refs.map(\.manifest), [d1, d2])
        XCTAssertEqual(Set(reported), Set(invalidKeys))
        XCTAssertEqual(refs[0].reference, ImageReference(name: "ok", tag: "v1"))
        // Other top-level objects are not refs.
        try repo.ensureLayout()
        try repo.putBlob(Array("blob".utf8))
        XCTAssertEqual(try repo.listRefs().count, 2)
    }

    // MARK: layout, blobs

    func testEnsureLayoutWritesOCILayoutOnce() throws {
        let repo = try makeRepo()
        try repo.ensureLayout()
        XCTAssertEqual(try repo.remote.read(Repository.layoutKey), Repository.layoutContent)
        let before = try repo.remote.stat(Repository.layoutKey)
        try repo.ensureLayout()
        XCTAssertEqual(try repo.remote.stat(Repository.layoutKey), before)
        let obj = try JSONSerialization.jsonObject(with: Data(Repository.layoutContent)) as? [String: String]
        XCTAssertEqual(obj, ["imageLayoutVersion": "1.0.0"])
    }

    func testBlobsAreContentAddressedAndVerifiedOnRead() throws {
        let repo = try makeRepo()
        let bytes = Array("{\"a\":1}".utf8)
        let d = try repo.putBlob(bytes)
        XCTAssertEqual(d, Digest.of(bytes))
        XCTAssertTrue(try repo.hasBlob(d))
        XCTAssertEqual(try repo.readBlob(d, what: "thing"), bytes)
        try repo.writer.put(Repository.blobKey(d), bytes: Array("{\"a\":2}".utf8))
        XCTAssertThrowsError(try repo.readBlob(d, what: "thing")) { e in
            XCTAssertEqual((e as? DogestryError)?.kind, .corrupt)
            XCTAssertTrue("\(e)".contains(d.description), "\(e)")
        }
        XCTAssertThrowsError(try repo.readBlob(d2, what: "manifest")) { e in
            XCTAssertEqual((e as? DogestryError)?.kind, .notFound)
            XCTAssertTrue("\(e)".contains(d2.description), "\(e)")
        }
    }

    // MARK: diffID index

    func testLayerIndexEntryRoundTrip() throws {
        let e = LayerIndexEntry(digest: d1, mediaType: Compression.zstd.layerMediaType, size: 1234, uncompressedSize: 56789)
        let data = try JSONEncoder().encode(e)
        XCTAssertEqual(try JSONDecoder().decode(LayerIndexEntry.self, from: data), e)

        let repo = try makeRepo()
        let blob = Array(repeating: UInt8(7), count: 1234)
        let bd = try repo.putBlob(blob)
        let entry = LayerIndexEntry(digest: bd, mediaType: Compression.lz4.layerMediaType, size: 1234, uncompressedSize: 99)
        try repo.recordLayer(diffID: d2, entry)
        XCTAssertEqual(try repo.lookupLayer(diffID: d2), entry)
        XCTAssertNil(try repo.lookupLayer(diffID: d3), "no index entry")
        // The stored form is one line of JSON with sorted keys.
        let text = String(decoding: try repo.remote.read(Repository.diffIDKey(d2)), as: UTF8.self)
        XCTAssertTrue(text.hasSuffix("}\n"))
        XCTAssertEqual(text.filter { $0 == "\n" }.count, 1)
        let keys = ["digest", "mediaType", "size", "uncompressedSize"].map { text.range(of: "\"\($0)\"")?.lowerBound }
        XCTAssertFalse(keys.contains(nil), text)
        XCTAssertEqual(keys.compactMap { $0 }, keys.compactMap { $0 }.sorted(), "keys not sorted: \(text)")
        // The descriptor a manifest gets.
        let desc = entry.descriptor(diffID: d2)
        XCTAssertEqual(desc.digest, bd)
        XCTAssertEqual(desc.size, 1234)
        XCTAssertEqual(desc.mediaType, Compression.lz4.layerMediaType)
        XCTAssertEqual(desc.diffID, d2)
        XCTAssertEqual(desc.uncompressedSize, 99)
    }

    func testLookupLayerIsNilWhenTheBlobIsMissingOrTheWrongSize() throws {
        let repo = try makeRepo()
        let entry = LayerIndexEntry(digest: d1, mediaType: Compression.zstd.layerMediaType, size: 10, uncompressedSize: 20)
        try repo.recordLayer(diffID: d2, entry)
        XCTAssertNil(try repo.lookupLayer(diffID: d2), "index entry whose blob is missing")
        try repo.writer.put(Repository.blobKey(d1), bytes: [UInt8](repeating: 1, count: 9))
        XCTAssertNil(try repo.lookupLayer(diffID: d2), "index entry whose blob has another size")
        try repo.writer.put(Repository.blobKey(d1), bytes: [UInt8](repeating: 1, count: 10))
        XCTAssertEqual(try repo.lookupLayer(diffID: d2), entry)
    }

    func testCorruptIndexEntryIsAnErrorNamingIt() throws {
        let repo = try makeRepo()
        try repo.writer.put(Repository.diffIDKey(d3), bytes: Array("not json".utf8))
        XCTAssertThrowsError(try repo.lookupLayer(diffID: d3)) { e in
            XCTAssertEqual((e as? DogestryError)?.kind, .corrupt)
            XCTAssertTrue("\(e)".contains(Repository.diffIDKey(d3)), "\(e)")
        }
    }

    // MARK: manifests

    private func sampleManifest() -> ImageManifest {
        let layers = [
            LayerIndexEntry(digest: d1, mediaType: Compression.zstd.layerMediaType, size: 100, uncompressedSize: 300).descriptor(diffID: d2),
            LayerIndexEntry(digest: d3, mediaType: Compression.gzip.layerMediaType, size: 50, uncompressedSize: 70).descriptor(diffID: d1),
        ]
        return ImageManifest(config: Descriptor(mediaType: MediaType.ociConfig, digest: d2, size: 1234), layers: layers)
    }

    func testManifestCanonicalEncodingIsStable() throws {
        let a = sampleManifest().encoded()
        let b = sampleManifest().encoded()
        XCTAssertEqual(a, b)
        XCTAssertEqual(Digest.of(a), Digest.of(b))
        // Decoding and re-encoding gives the same bytes (so the same digest) again.
        let again = try ImageManifest.decode(a, what: "manifest").encoded()
        XCTAssertEqual(again, a)
        // Compact, sorted keys, slashes unescaped.
        let text = String(decoding: a, as: UTF8.self)
        XCTAssertFalse(text.contains("\n"))
        XCTAssertFalse(text.contains("\\/"))
        XCTAssertTrue(text.contains("\"application/vnd.oci.image.manifest.v1+json\""))
        XCTAssertTrue(text.hasPrefix("{\"config\":{\"digest\":"), text)
        XCTAssertTrue(text.contains("},\"layers\":[{\"annotations\":{"), text)
        XCTAssertTrue(text.hasSuffix("],\"mediaType\":\"application/vnd.oci.image.manifest.v1+json\",\"schemaVersion\":2}"), text)
        // Annotations on a layer are encoded in key order too.
        let ann = [Annotation.diffID, Annotation.uncompressedSize].map { text.range(of: $0)!.lowerBound }
        XCTAssertEqual(ann, ann.sorted())
        // And the repository stores it under its digest.
        let repo = try makeRepo()
        let d = try repo.putBlob(a)
        XCTAssertEqual(d, Digest.of(a))
        let m = try repo.readManifest(d)
        XCTAssertEqual(m.layers, sampleManifest().layers)
        XCTAssertEqual(m.config, sampleManifest().config)
    }

    func testManifestDecodeErrors() {
        XCTAssertThrowsError(try ImageManifest.decode(Array("{}".utf8), what: "manifest X")) { e in
            XCTAssertEqual((e as? DogestryError)?.kind, .corrupt)
            XCTAssertTrue("\(e)".contains("manifest X"), "\(e)")
        }
        var m = sampleManifest()
        m.schemaVersion = 1
        XCTAssertThrowsError(try ImageManifest.decode(m.encoded(), what: "manifest Y")) { e in
            XCTAssertTrue("\(e)".contains("schemaVersion"), "\(e)")
        }
    }
}
