import DogestryCore
import Foundation
import XCTest

/// The behaviour every `ReadableRemote` must have — the read-only ones (a pull ticket) as much as
/// the stores behind them — as a reusable suite, in the manner of `RemoteConformance`.
///
/// `makeReader` returns a remote holding a small image and the objects it is known to hold (key →
/// bytes): a fresh store the image was written into, or a view of one (a pull ticket signed for the
/// image). Each check gets a new one.
final class ReadConformance: @unchecked Sendable {  // (immutable once made)
    let makeReader: () throws -> (remote: ReadableRemote, holds: [String: [UInt8]])

    init(makeReader: @escaping () throws -> (remote: ReadableRemote, holds: [String: [UInt8]])) {
        self.makeReader = makeReader
    }

    /// Every check, by name.
    nonisolated(unsafe) static let checks: [(name: String, run: (ReadConformance) -> () throws -> Void)] = [   // (constant)
        ("readsWhatItHolds", checkReadsWhatItHolds),
        ("missingKeysOnRead", checkMissingKeysOnRead),
        ("listsWhatItHolds", checkListsWhatItHolds),
        ("checkOnRead", checkCheckOnRead),
    ]

    /// The name and tag of the image `storeImage` writes.
    static let imageName = "conformance/app", imageTag = "1"

    /// Writes a small image into `remote` as a push would (a layer of `layerSize` bytes, its config,
    /// the manifest, one tag) and returns every object written, by key.
    static func storeImage(_ remote: Remote, layerSize: Int = 300_000, seed: UInt64 = 11) throws -> [String: [UInt8]] {
        let repo = Repository(remote: remote)
        var holds: [String: [UInt8]] = [:]
        let layer = RemoteConformance.bytes(layerSize, seed: seed)
        let diffID = Digest.of("plain layer \(seed)")
        let config = Array(#"{"architecture":"amd64","os":"linux","rootfs":{"diff_ids":["\#(diffID)"],"type":"layers"}}"#.utf8)
        let manifest = ImageManifest(
            config: Descriptor(mediaType: MediaType.ociConfig, digest: Digest.of(config), size: Int64(config.count)),
            layers: [Descriptor(mediaType: Compression.zstd.layerMediaType, digest: Digest.of(layer), size: Int64(layer.count),
                                annotations: ["io.dogestry.layer.diffid": diffID.description,
                                              "io.dogestry.layer.uncompressed-size": String(layerSize * 2)])]).encoded()
        for b in [layer, config, manifest] {
            let d = try repo.putBlob(b)
            holds[Repository.blobKey(d)] = b
        }
        try repo.writeRef(name: imageName, tag: imageTag, manifest: Digest.of(manifest))
        holds["repositories/\(imageName)/_tags/\(imageTag)"] = Array("\(Digest.of(manifest))\n".utf8)
        return holds
    }

    // MARK: checks

    /// Every object it holds has its size in `stat` and its exact bytes in `open`.
    func checkReadsWhatItHolds() throws {
        let (r, holds) = try makeReader()
        XCTAssertFalse(holds.isEmpty)
        for (k, bytes) in holds.sorted(by: { $0.key < $1.key }) {
            XCTAssertEqual(try r.stat(k)?.size, Int64(bytes.count), "stat(\(k))")
            XCTAssertEqual(try RemoteConformance.content(r, k), bytes, "open(\(k))")
        }
    }

    /// Keys it does not hold: `stat` is nil, `open` a one-line not-found error.
    func checkMissingKeysOnRead() throws {
        let (r, _) = try makeReader()
        for k in [Repository.blobKey(Digest.of("absent")), "repositories/\(Self.imageName)/_tags/absent",
                  "repositories/absent/_tags/\(Self.imageTag)"] {
            XCTAssertNil(try r.stat(k), "stat(\(k))")
            RemoteConformance.assertThrows(.notFound, "open(\(k))") { _ = try r.open(k) }
        }
    }

    /// `list` gives each object it holds once, with its size, under the prefixes readers use, and
    /// nothing under a prefix it holds nothing under.
    func checkListsWhatItHolds() throws {
        let (r, holds) = try makeReader()
        for prefix in [Repository.blobsPrefix, "repositories/", "repositories/\(Self.imageName)/"] {
            let listed = try RemoteConformance.listing(r, prefix)
            let want = holds.filter { $0.key.hasPrefix(prefix) }
            XCTAssertEqual(Set(listed.keys), Set(want.keys), "list(prefix: \"\(prefix)\")")
            for (k, o) in listed { XCTAssertEqual(o.size, want[k].map { Int64($0.count) }, "list(prefix: \"\(prefix)\"): size of \(k)") }
        }
        XCTAssertEqual(try RemoteConformance.listing(r, "repositories/absent/").count, 0)
    }

    /// `check` answers with a one-line description; the remote names itself without secrets.
    func checkCheckOnRead() throws {
        let (r, _) = try makeReader()
        let d = try r.check()
        XCTAssertFalse(d.isEmpty)
        XCTAssertFalse(d.contains("\n"))
        XCTAssertFalse(r.displayURL.isEmpty)
        for secret in ["X-Amz-Signature", "X-Amz-Credential", "signature="] {
            XCTAssertFalse(r.displayURL.contains(secret), "displayURL shows \(secret): \(r.displayURL)")
            XCTAssertFalse(d.contains(secret), "check() shows \(secret): \(d)")
        }
    }
}
