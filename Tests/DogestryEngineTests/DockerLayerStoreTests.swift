import DogestryCore
import DogestryEngine
import Foundation
import DogestryTestSupport
import XCTest

/// `DockerLayerStore` on image stores laid out here as Docker Engine lays them out (the real
/// engine's store is read by the engine push tests): layers rebuilt from tar-split and files,
/// and every way such a store can lie or trap a reader.
final class DockerLayerStoreTests: XCTestCase {
    var root = ""
    let cacheID = "0f1e2d3c4b5a69788796a5b4c3d2e1f00f1e2d3c4b5a69788796a5b4c3d2e1f0"

    override func setUpWithError() throws {
        root = NSTemporaryDirectory() + "dogestry-layerstore-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: root + "/image/overlay2/imagedb/content/sha256", withIntermediateDirectories: true)
        try FileManager.default.createDirectory(atPath: root + "/image/overlay2/layerdb/sha256", withIntermediateDirectories: true)
        try FileManager.default.createDirectory(atPath: files, withIntermediateDirectories: true)
    }

    override func tearDownWithError() throws { try? FileManager.default.removeItem(atPath: root) }

    var files: String { root + "/overlay2/\(cacheID)/diff" }

    /// One tar-split line.
    enum Line { case segment([UInt8]), file(String, Int), rawName([UInt8], Int), json(String) }

    /// Writes `content` into the layer's files and returns the tar the engine would export and
    /// the tar-split lines that describe it (headers and padding as segments, contents as files).
    func layout(_ content: [(name: String, bytes: [UInt8])]) throws -> ([UInt8], [Line]) {
        var tar: [UInt8] = [], lines: [Line] = []
        var pending: [UInt8] = []
        for (name, bytes) in content {
            let out = MemorySink()
            try TarWriter(out).writeFile(name: name, bytes: bytes)
            let b = out.bytes
            pending += b[0..<512]
            lines.append(.segment(pending)); pending = []
            lines.append(.file(name, bytes.count))
            pending += b[(512 + bytes.count)...]
            tar += b
            let path = files + "/" + name
            try FileManager.default.createDirectory(atPath: (path as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
            put(path, Data(bytes))
        }
        let end = MemorySink()
        try TarWriter(end).finish()
        pending += end.bytes
        tar += end.bytes
        lines.append(.segment(pending))
        return (tar, lines)
    }

    /// Records a layer in the layer database under `chain`, claiming `diffID`.
    func record(_ lines: [Line], chain: Digest, diffID: Digest, cacheID: String? = nil) throws {
        let dir = root + "/image/overlay2/layerdb/sha256/" + chain.hex
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        try diffID.description.write(toFile: dir + "/diff", atomically: true, encoding: .utf8)
        try (cacheID ?? self.cacheID).write(toFile: dir + "/cache-id", atomically: true, encoding: .utf8)
        var text = ""
        for (pos, l) in lines.enumerated() {
            switch l {
            case .segment(let b): text += #"{"type":2,"payload":"\#(Data(b).base64EncodedString())","position":\#(pos)}"# + "\n"
            case .file(let n, let size): text += #"{"type":1,"name":"\#(n)","size":\#(size),"payload":"AAAAAAAAAAA=","position":\#(pos)}"# + "\n"
            case .rawName(let n, let size): text += #"{"type":1,"name_raw":"\#(Data(n).base64EncodedString())","size":\#(size),"payload":null,"position":\#(pos)}"# + "\n"
            case .json(let s): text += s + "\n"
            }
        }
        let gz = MemorySink()
        let z = try Compression.gzip.compressor(into: gz)
        try z.write(text)
        try z.close()
        put(dir + "/tar-split.json.gz", Data(gz.bytes))
    }

    /// Writes a file the test needs, failing the test if it cannot.
    func put(_ path: String, _ data: Data, file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertTrue(FileManager.default.createFile(atPath: path, contents: data), "cannot write \(path)", file: file, line: line)
    }

    func store() throws -> DockerLayerStore { try XCTUnwrap(DockerLayerStore(root: root, driver: "overlay2")) }

    func read(_ chain: Digest, _ diffID: Digest) throws -> ([UInt8], Int64) {
        let (src, size) = try store().layer(chainID: chain, diffID: diffID)
        return (try src.readAll(limit: 64 << 20, what: "layer"), size)
    }

    func assertUnusable(_ body: () throws -> Void, _ expect: String, file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertThrowsError(try body(), file: file, line: line) { e in
            guard let u = e as? LayerStoreUnusable else { return XCTFail("not LayerStoreUnusable: \(e)", file: file, line: line) }
            XCTAssertTrue(u.reason.contains(expect), "\(u.reason) lacks \(expect)", file: file, line: line)
        }
    }

    let chain = Digest.of("chain")

    func testLayerIsRebuiltByteForByte() throws {
        let big = (0..<300_000).map { UInt8(truncatingIfNeeded: $0 &* 31) }
        let (tar, lines) = try layout([("etc/hostname", Array("box\n".utf8)), ("usr/lib/big.bin", big), ("empty", [])])
        let diffID = Digest.of(tar)
        try record(lines, chain: chain, diffID: diffID)
        let (got, size) = try read(chain, diffID)
        XCTAssertEqual(size, Int64(tar.count))
        XCTAssertEqual(got.count, tar.count)
        XCTAssertEqual(Digest.of(got), diffID)
        // It is a tar the project's own reader walks.
        let r = TarReader(MemorySource(got), what: "rebuilt layer")
        var names: [String] = []
        while let h = try r.next() { names.append(h.name); _ = try r.body.drain() }
        XCTAssertEqual(names, ["etc/hostname", "usr/lib/big.bin", "empty"])
    }

    func testRawNamesAndDotSlashPrefixes() throws {
        let name: [UInt8] = [0x64, 0xff, 0x2e, 0x62, 0x69, 0x6e]   // "d\xff.bin": no UTF-8
        put(files + "/x", Data("one".utf8))
        // Write the non-UTF-8 name through the C API: Foundation would re-encode it.
        var cpath = Array((files + "/").utf8) + name; cpath.append(0)
        let fd = cpath.withUnsafeBufferPointer { p in open(UnsafeRawPointer(p.baseAddress!).assumingMemoryBound(to: CChar.self), O_CREAT | O_WRONLY, 0o644) }
        XCTAssertGreaterThanOrEqual(fd, 0)
        _ = write(fd, "two!", 4); close(fd)
        let lines: [Line] = [.segment([1, 2, 3]), .file("./x", 3), .segment([4]), .rawName(name, 4), .segment([5, 6])]
        try record(lines, chain: chain, diffID: Digest.of("d"))
        let (got, size) = try read(chain, Digest.of("d"))
        XCTAssertEqual(got, [1, 2, 3] + Array("one".utf8) + [4] + Array("two!".utf8) + [5, 6])
        XCTAssertEqual(size, 13)
    }

    func testPathsOutsideTheLayerAreRefused() throws {
        try record([.segment([0]), .file("../../../etc/hostname", 4)], chain: chain, diffID: Digest.of("x"))
        assertUnusable({ _ = try self.read(self.chain, Digest.of("x")) }, "outside the layer")
    }

    func testSymlinkedDirectoryIsNotFollowed() throws {
        let outside = root + "/outside"
        try FileManager.default.createDirectory(atPath: outside, withIntermediateDirectories: true)
        put(outside + "/secret", Data("leak".utf8))
        try FileManager.default.createSymbolicLink(atPath: files + "/dir", withDestinationPath: outside)
        try record([.segment([0]), .file("dir/secret", 4)], chain: chain, diffID: Digest.of("x"))
        assertUnusable({ _ = try self.read(self.chain, Digest.of("x")) }, "cannot open dir/secret")
        // A symlink as the file itself is no regular file either.
        try FileManager.default.createSymbolicLink(atPath: files + "/link", withDestinationPath: outside + "/secret")
        try record([.segment([0]), .file("link", 4)], chain: chain, diffID: Digest.of("x"))
        assertUnusable({ _ = try self.read(self.chain, Digest.of("x")) }, "cannot open link")
    }

    /// The directories of one file stay open for the next: leaving them, coming back, going
    /// deeper and up to the root must still give each file from its own place.
    func testDirectoriesAreLeftAndRevisitedInAnyOrder() throws {
        let names = ["a/b/x", "a/c/y", "a/b/z", "top", "a/b/c/d/deep", "a/b/c/e", "a/x2", "./a/b/x3", "q/a/b/x"]
        let (tar, lines) = try layout(names.enumerated().map { ($1, Array("\($1) #\($0)".utf8)) })
        try record(lines, chain: chain, diffID: Digest.of(tar))
        let (got, size) = try read(chain, Digest.of(tar))
        XCTAssertEqual(got, tar)
        XCTAssertEqual(size, Int64(tar.count))
    }

    /// A link beside a directory that is open already is refused like any other link.
    func testALinkBesideAnOpenDirectoryIsNotFollowed() throws {
        let outside = root + "/outside"
        try FileManager.default.createDirectory(atPath: outside + "/b", withIntermediateDirectories: true)
        put(outside + "/b/secret", Data("leak".utf8))
        let (_, lines) = try layout([("a/b/x", Array("ok".utf8))])
        try FileManager.default.createSymbolicLink(atPath: files + "/a/link", withDestinationPath: outside)
        try record(lines.dropLast() + [.segment([0]), .file("a/link/b/secret", 4), .segment([0])], chain: chain, diffID: Digest.of("x"))
        assertUnusable({ _ = try self.read(self.chain, Digest.of("x")) }, "cannot open a/link/b/secret")
    }

    func testFifoIsRefusedWithoutHanging() throws {
        let pipe = files + "/pipe"
        XCTAssertEqual(mkfifo(pipe, 0o644), 0)
        try record([.segment([0]), .file("pipe", 4)], chain: chain, diffID: Digest.of("x"))
        // A regression that blocks on the FIFO fails here (a writer then unblocks it) instead of hanging.
        let unblock = { let fd = Glibc.open(pipe, O_WRONLY | O_NONBLOCK); if fd >= 0 { Glibc.close(fd) } }
        nonisolated(unsafe) let test = self
        guard Watchdog.run(seconds: 20, release: unblock, { test.assertUnusable({ _ = try test.read(test.chain, Digest.of("x")) }, "not a regular file") }) != nil else {
            return XCTFail("reading a FIFO blocked")
        }
    }

    func testFileOfAnotherSizeIsRefused() throws {
        let (_, lines) = try layout([("a", Array("12345".utf8))])
        try record(lines, chain: chain, diffID: Digest.of("x"))
        put(files + "/a", Data("123".utf8))
        assertUnusable({ _ = try self.read(self.chain, Digest.of("x")) }, "5 bytes")
    }

    func testRecordedDiffIDMustMatch() throws {
        let (tar, lines) = try layout([("a", [1])])
        try record(lines, chain: chain, diffID: Digest.of(tar))
        assertUnusable({ _ = try self.read(self.chain, Digest.of("other")) }, "records diffID")
    }

    func testBadTarSplitAndCacheIDAreRefused() throws {
        try record([.json("not json")], chain: chain, diffID: Digest.of("x"))
        assertUnusable({ _ = try self.read(self.chain, Digest.of("x")) }, "not an entry")
        try record([.json(#"{"type":7,"position":0}"#)], chain: chain, diffID: Digest.of("x"))
        assertUnusable({ _ = try self.read(self.chain, Digest.of("x")) }, "unknown type 7")
        try record([.segment([0])], chain: chain, diffID: Digest.of("x"), cacheID: "../../etc")
        assertUnusable({ _ = try self.read(self.chain, Digest.of("x")) }, "cache-id")
        assertUnusable({ _ = try self.read(Digest.of("absent"), Digest.of("x")) }, "cannot open")
    }

    func testConfigMustHashToTheImageID() throws {
        let cfg = Array(#"{"rootfs":{"type":"layers","diff_ids":[]}}"#.utf8)
        let id = Digest.of(cfg)
        put(root + "/image/overlay2/imagedb/content/sha256/" + id.hex, Data(cfg))
        XCTAssertEqual(try store().config(id), cfg)
        let other = Digest.of("other")
        put(root + "/image/overlay2/imagedb/content/sha256/" + other.hex, Data(cfg))
        assertUnusable({ _ = try self.store().config(other) }, "does not hash to its ID")
    }

    func testUnknownDriversAndUnreadableRootsGiveNoStore() {
        XCTAssertNil(DockerLayerStore(root: root, driver: "btrfs"))
        XCTAssertNil(DockerLayerStore(root: root + "/nowhere", driver: "overlay2"))
        XCTAssertNil(DockerLayerStore(root: "relative", driver: "overlay2"))
        XCTAssertNotNil(DockerLayerStore(root: root, driver: "overlay2"))
    }
}
