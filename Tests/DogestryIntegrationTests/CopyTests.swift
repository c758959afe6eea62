import DogestryCore
@testable import DogestryRemotes
import DogestrySync
import Foundation
import XCTest

/// `dogestry copy` between dogestry remotes: local, S3 (SeaweedFS), Manta (the simulator) and a
/// pull ticket as the source.
final class CopyTests: XCTestCase {
    typealias T = ServeClientTests

    static func mantaRemote() throws -> Remote {
        let url = try CLITest.requiredEnvironment("DOGESTRY_TEST_MANTA_URL")
        let acct = try CLITest.requiredEnvironment("DOGESTRY_TEST_MANTA_USER")
        let key = try CLITest.requiredEnvironment("DOGESTRY_TEST_MANTA_KEY")
        let s = MantaSettings(url: url, account: acct, user: nil, keyID: nil, privateKeyPath: key, algorithm: nil,
                              root: "/\(acct)/stor/copy-" + EngineTestSupport.uniqueSuffix(), durability: 2,
                              insecure: false, role: nil, sshDir: "/nonexistent")
        return try MantaRemote(settings: s)
    }

    /// Pushes an image tagged `tag` with a top layer of its own, then flips a byte of that
    /// layer's blob; returns the blob's digest.
    func pushCorrupt(_ tag: String, to remote: Remote) throws -> Digest {
        let img = try EngineTestSupport.Image(fixture: "docker-app-v1.tar", tag: tag, label: "corrupt-" + EngineTestSupport.uniqueSuffix(), uniqueTopLayer: true)
        try img.push(to: remote)
        let repo = Repository(remote: remote)
        let top = try XCTUnwrap(repo.readManifest(try XCTUnwrap(repo.readRef(name: img.name, tag: img.tagPart))).layers.last?.digest)
        var bytes = try remote.read(Repository.blobKey(top), limit: 1 << 30)
        bytes[bytes.count / 2] ^= 1
        try remote.put(Repository.blobKey(top), bytes: bytes)
        return top
    }

    func keys(_ r: ReadableRemote, _ prefix: String = "") throws -> [String: Int64] {
        var out: [String: Int64] = [:]
        try r.list(prefix: prefix) { out[$0.key] = $0.size }
        return out
    }

    /// S3 -> local -> Manta: the images arrive byte for byte (manifest digests, image IDs), a
    /// second copy moves nothing, and v2 after v1 moves only v2's own layers.
    func testS3ToLocalToManta() throws {
        let s3 = try T.s3Remote(), local = try T.localRemote(), manta = try Self.mantaRemote()
        let label = "copy-" + EngineTestSupport.uniqueSuffix()
        let v1 = try EngineTestSupport.Image(fixture: "docker-app-v1.tar", tag: "copy/app:v1", label: label, uniqueTopLayer: true)
        let v2 = try EngineTestSupport.Image(fixture: "docker-app-v2.tar", tag: "copy/app:v2", label: label, uniqueTopLayer: true)
        try v1.push(to: s3); try v2.push(to: s3)
        let srcRepo = Repository(remote: s3)
        let md1 = try XCTUnwrap(srcRepo.readRef(name: "copy/app", tag: "v1")), md2 = try XCTUnwrap(srcRepo.readRef(name: "copy/app", tag: "v2"))

        let c1 = Copier(source: srcRepo, destination: Repository(remote: local))
        let r1 = try c1.copy(try c1.resolve(["copy/app:v1"], all: false))
        XCTAssertEqual(r1.blobs.filter { $0.state == .copied }.count, r1.blobs.count, "into an empty remote everything is copied")
        XCTAssertEqual(try Repository(remote: local).readRef(name: "copy/app", tag: "v1"), md1, "the manifest digest is kept")
        let r2 = try c1.copy(try c1.resolve(["copy/app:v2"], all: false))
        let l1 = try srcRepo.readManifest(md1).layers.map(\.digest), l2 = try srcRepo.readManifest(md2).layers.map(\.digest)
        XCTAssertEqual(Set(r2.blobs.filter { $0.kind == .layer && $0.state == .copied }.map(\.digest)), Set(l2.filter { !l1.contains($0) }),
                       "v2 after v1: only the layers v1 lacks move")
        let again = try c1.copy(try c1.resolve([], all: true))
        XCTAssertTrue(again.blobs.allSatisfy { $0.state == .present }, "a second copy moves nothing")

        // local -> Manta with --all, through the CLI.
        let dir = try EngineTestSupport.makeTempDirectory("copy-cli")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let cm = Copier(source: Repository(remote: local), destination: Repository(remote: manta))
        let rm = try cm.copy(try cm.resolve([], all: true))
        XCTAssertEqual(Set(rm.items.flatMap(\.tags)), ["copy/app:v1", "copy/app:v2"])
        let pulled = Puller(repository: Repository(remote: manta), progress: SilentProgress())
        for (tag, img) in [("copy/app:v1", v1), ("copy/app:v2", v2)] {
            let r = try pulled.resolve(tag)
            XCTAssertEqual(r.id, img.id)
            _ = try pulled.writeArchive([r], to: NullSink())   // every blob and diffID verified
        }
    }

    /// The CLI: --dry-run writes nothing, --json reports per blob, a corrupt source blob stops the
    /// copy with one line naming it and leaves no ref on the destination.
    func testCLIDryRunJSONAndCorruptSource() throws {
        let src = try T.localRemote(), dst = try T.localRemote()
        let srcRoot = (src as! LocalRemote).root, dstRoot = (dst as! LocalRemote).root
        let img = try EngineTestSupport.Image(fixture: "docker-app-v1.tar", tag: "cli/app:1", label: "copy-cli")
        try img.push(to: src)
        let dir = try EngineTestSupport.makeTempDirectory("copy-cli")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let before = try keys(dst)
        let dry = try EngineTestSupport.runCLI(["copy", srcRoot, dstRoot, "cli/app:1", "--dry-run", "--json"], in: dir)
        XCTAssertEqual(dry.status, 0, dry.stderr)
        XCTAssertEqual(try keys(dst), before, "--dry-run wrote something")
        let dj = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(dry.stdout.utf8)) as? [String: Any])
        XCTAssertEqual(dj["dryRun"] as? Bool, true)
        XCTAssertTrue((dj["blobs"] as? [[String: Any]])?.allSatisfy { $0["state"] as? String == "would-copy" } ?? false, dry.stdout)

        let run = try EngineTestSupport.runCLI(["copy", srcRoot, dstRoot, "cli/app:1", "--json"], in: dir)
        XCTAssertEqual(run.status, 0, run.stderr)
        let rj = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(run.stdout.utf8)) as? [String: Any])
        XCTAssertEqual(rj["blobsPresent"] as? Int, 0)
        XCTAssertEqual(((rj["images"] as? [[String: Any]])?.first?["id"] as? String), img.id.description)
        let second = try EngineTestSupport.runCLI(["copy", srcRoot, dstRoot, "cli/app:1"], in: dir)
        XCTAssertEqual(second.status, 0, second.stderr)
        XCTAssertTrue(second.stdout.contains("copied 0 blob(s)"), second.stdout)

        // A corrupt layer on the source: the copy fails naming it; the new tag is not written.
        let top = try pushCorrupt("cli/bad:1", to: src)
        let bad = try EngineTestSupport.runCLI(["copy", srcRoot, dstRoot, "cli/bad:1"], in: dir)
        XCTAssertEqual(bad.status, 1)
        XCTAssertEqual(bad.stderrLines.filter { $0.hasPrefix("dogestry: error:") }.count, 1, bad.stderr)
        XCTAssertTrue(bad.stderr.contains("blob \(top)") && bad.stderr.contains("is corrupt"), bad.stderr)
        XCTAssertNil(try Repository(remote: dst).readRef(name: "cli/bad", tag: "1"))
        XCTAssertNil(try dst.stat(Repository.blobKey(top)))

        let same = try EngineTestSupport.runCLI(["copy", srcRoot, srcRoot, "cli/app:1"], in: dir)
        XCTAssertEqual(same.status, 1)
        XCTAssertTrue(same.stderr.contains("the same remote"), same.stderr)
    }

    /// S3 -> another prefix of the same server (the bench copies across buckets): layers are copied by the store (CopyObject), so
    /// dogestry reads only the manifest and config; with server-side copy off it streams them.
    func testS3ToS3UsesServerSideCopy() throws {
        let a = try T.s3Remote() as! S3Remote, b = try T.s3Remote() as! S3Remote, c = try T.s3Remote() as! S3Remote
        let img = try EngineTestSupport.Image(fixture: "docker-app-v1.tar", tag: "ss/app:1", label: "copy-ss-" + EngineTestSupport.uniqueSuffix())
        try img.push(to: a)
        let layerBytes = try Repository(remote: a).readManifest(try XCTUnwrap(Repository(remote: a).readRef(name: "ss/app", tag: "1"))).layers.reduce(Int64(0)) { $0 + $1.size }
        let before = a.traffic.bytesReceived
        let cs = Copier(source: Repository(remote: a), destination: Repository(remote: b))
        let r = try cs.copy(try cs.resolve(["ss/app:1"], all: false))
        XCTAssertTrue(r.blobs.filter { $0.kind == .layer }.allSatisfy { $0.serverSide == true && $0.state == .copied })
        XCTAssertLessThan(a.traffic.bytesReceived - before, layerBytes / 4, "layer bytes came through dogestry")
        let pulled = Puller(repository: Repository(remote: b), progress: SilentProgress())
        _ = try pulled.writeArchive([try pulled.resolve("ss/app:1")], to: NullSink())   // every blob verified

        let before2 = a.traffic.bytesReceived
        let cn = Copier(source: Repository(remote: a), destination: Repository(remote: c), serverSide: false)
        let r2 = try cn.copy(try cn.resolve(["ss/app:1"], all: false))
        XCTAssertTrue(r2.blobs.allSatisfy { $0.serverSide == nil })
        XCTAssertGreaterThanOrEqual(a.traffic.bytesReceived - before2, layerBytes)
    }

    /// --compression recompresses what DST lacks: same image ID and tags, gzip layers, a new
    /// manifest; the source is verified as it is read.
    func testCopyRecompressing() throws {
        let src = try T.localRemote(), dst = try T.localRemote()
        let img = try EngineTestSupport.Image(fixture: "docker-app-v1.tar", tag: "rc/app:1", label: "copy-rc")
        try img.push(to: src)
        let dir = try EngineTestSupport.makeTempDirectory("copy-rc")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let r = try EngineTestSupport.runCLI(["copy", (src as! LocalRemote).root, (dst as! LocalRemote).root, "rc/app:1", "--compression", "gzip", "--level", "6"], in: dir)
        XCTAssertEqual(r.status, 0, r.stderr)
        XCTAssertTrue(r.stdout.contains("as gzip"), r.stdout)
        let got = try Puller(repository: Repository(remote: dst), progress: SilentProgress()).resolve("rc/app:1")
        XCTAssertEqual(got.id, img.id)
        XCTAssertEqual(Set(got.manifest.layers.map(\.mediaType)), [Compression.gzip.layerMediaType])
        XCTAssertNotEqual(got.manifestDigest, try Repository(remote: src).readRef(name: "rc/app", tag: "1"))
        _ = try Puller(repository: Repository(remote: dst), progress: SilentProgress()).writeArchive([got], to: NullSink())

        // A corrupt source layer stops it with the blob named; no tag on DST.
        let top = try pushCorrupt("rc/bad:1", to: src)
        let f = try EngineTestSupport.runCLI(["copy", (src as! LocalRemote).root, (dst as! LocalRemote).root, "rc/bad:1", "--compression", "gzip"], in: dir)
        XCTAssertEqual(f.status, 1)
        XCTAssertTrue(f.stderr.contains(top.description), f.stderr)
        XCTAssertNil(try Repository(remote: dst).readRef(name: "rc/bad", tag: "1"))
    }

    /// A pull ticket as SRC copies its one image with no credentials for the source.
    func testTicketAsSource() throws {
        let s3 = try T.s3Remote(), local = try T.localRemote()
        let img = try EngineTestSupport.Image(fixture: "docker-app-v1.tar", tag: "tk/app:1", label: "copy-ticket-" + EngineTestSupport.uniqueSuffix())
        try img.push(to: s3)
        let signed = try TicketSigner(remote: s3 as! SigningRemote).sign("tk/app:1", lifetime: 600)
        let dir = try EngineTestSupport.makeTempDirectory("copy-ticket")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let r = try EngineTestSupport.runCLI(["copy", signed.url, (local as! LocalRemote).root], in: dir,
                                             environment: ["AWS_ACCESS_KEY_ID": "", "AWS_SECRET_ACCESS_KEY": ""])
        XCTAssertEqual(r.status, 0, r.stderr)
        XCTAssertFalse(r.stdout.contains("X-Amz-Signature") || r.stderr.contains("X-Amz-Signature"))
        let got = try Puller(repository: Repository(remote: local), progress: SilentProgress()).resolve("tk/app:1")
        XCTAssertEqual(got.id, img.id)
    }
}
