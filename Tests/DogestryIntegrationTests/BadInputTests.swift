import DogestryCore
import DogestryRemotes
import DogestrySync
import Foundation
import XCTest

/// Bad input through the CLI: every failure is a non-zero exit and ONE line on stderr,
/// `dogestry: error: …`, naming what is at fault, with nothing half-written anywhere.
final class BadInputTests: XCTestCase {
    var fx: CLITest.Fixtures!

    override func setUpWithError() throws {
        fx = try CLITest.Fixtures.load()
    }

    /// A sandbox: `base/remote` (the remote) and `base/cwd` (the CLI's working directory).
    /// Anything else appearing under `base` was written outside the remote.
    struct Sandbox {
        let base: String
        var remote: String { base + "/remote" }
        var cwd: String { base + "/cwd" }
    }

    private func sandbox() throws -> Sandbox {
        let s = Sandbox(base: try CLITest.makeTempDir(self, "bad"))
        try FileManager.default.createDirectory(atPath: s.remote, withIntermediateDirectories: true)
        try FileManager.default.createDirectory(atPath: s.cwd, withIntermediateDirectories: true)
        return s
    }

    /// Runs the CLI expecting failure: non-zero exit, exactly one stderr line, naming every string in `naming`.
    @discardableResult
    private func expectFailure(_ args: [String], in s: Sandbox, naming: [String], stdinPath: String? = nil,
                               file: StaticString = #filePath, line: UInt = #line) throws -> String {
        let r = try CLITest.runDogestry(args, cwd: s.cwd, stdinPath: stdinPath)
        let cmd = "dogestry " + args.joined(separator: " ")
        XCTAssertNotEqual(r.status, 0, "\(cmd) succeeded", file: file, line: line)
        XCTAssertEqual(r.status, 1, "\(cmd): exit status \(r.status) (a crash?)", file: file, line: line)
        assertOneErrorLine(r.stderr, naming: naming, cmd: cmd, file: file, line: line)
        return r.stderr
    }

    private func assertOneErrorLine(_ stderr: String, naming: [String], cmd: String, file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertTrue(stderr.hasSuffix("\n"), "\(cmd): stderr does not end with a newline: \(stderr)", file: file, line: line)
        let lines = stderr.split(separator: "\n", omittingEmptySubsequences: false).dropLast()
        XCTAssertEqual(lines.count, 1, "\(cmd): stderr is not one line:\n\(stderr)", file: file, line: line)
        XCTAssertTrue(stderr.hasPrefix("dogestry: error: "), "\(cmd): \(stderr)", file: file, line: line)
        for n in naming {
            XCTAssertTrue(stderr.contains(n), "\(cmd): error does not name \(n): \(stderr)", file: file, line: line)
        }
        for trace in ["Fatal error", "Stack dump", "Current stack trace", "Backtrace", "Swift runtime failure", "0x0000"] {
            XCTAssertFalse(stderr.contains(trace), "\(cmd): stderr has a stack trace: \(stderr)", file: file, line: line)
        }
    }

    /// The remote holds no ref, and only objects of the repository layout (no temporary file either).
    private func assertNoRefsAndNothingStray(_ s: Sandbox, file: StaticString = #filePath, line: UInt = #line) throws {
        let remote = try LocalRemote(path: s.remote)
        var keys: [String] = []
        try remote.list(prefix: "") { keys.append($0.key) }
        XCTAssertEqual(keys.filter { $0.hasPrefix("repositories/") }, [], "a ref was written", file: file, line: line)
        for k in keys where !(k == "oci-layout" || k.hasPrefix("blobs/sha256/") || k.hasPrefix("index/diffid/sha256/")) {
            XCTFail("unexpected object \(k) on the remote", file: file, line: line)
        }
        let staging = (try? FileManager.default.contentsOfDirectory(atPath: s.remote + "/.dogestry-tmp")) ?? []
        XCTAssertEqual(staging, [], "temporary files left in the remote", file: file, line: line)
        let top = Set(try FileManager.default.contentsOfDirectory(atPath: s.remote)).subtracting([".dogestry-tmp"])
        XCTAssertTrue(top.isSubset(of: ["oci-layout", "blobs", "index"]), "unexpected entries in the remote: \(top.sorted())", file: file, line: line)
    }

    /// Nothing was created beside the remote, in the working directory, or at the paths the bad archives name.
    private func assertNothingOutside(_ s: Sandbox, evilBefore: Date?, file: StaticString = #filePath, line: UInt = #line) throws {
        XCTAssertEqual(Set(try FileManager.default.contentsOfDirectory(atPath: s.base)), ["remote", "cwd"],
                       "something was created beside the remote", file: file, line: line)
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: s.cwd), [], "something was created in the working directory", file: file, line: line)
        XCTAssertEqual(try FS.info("/tmp/evil")?.modified, evilBefore, "/tmp/evil was created or changed", file: file, line: line)
    }

    // MARK: bad archives (one test each)

    private func checkBadArchive(_ name: String, file: StaticString = #filePath, line: UInt = #line) throws {
        let path = fx.path("bad/" + name)
        guard FS.exists(path) else {
            XCTFail("fixture \(path) is missing (rebuild the fixtures)", file: file, line: line)
            return
        }
        let evilBefore = try FS.info("/tmp/evil")?.modified
        let s = try sandbox()
        // Quiet: stderr holds only the error.
        try expectFailure(["push", "-q", s.remote, "--archive", path], in: s, naming: ["archive " + path], file: file, line: line)
        try assertNoRefsAndNothingStray(s, file: file, line: line)
        try assertNothingOutside(s, evilBefore: evilBefore, file: file, line: line)
        // Not quiet: progress lines may come first, but the error is one last line and the only "dogestry:" line.
        let r = try CLITest.runDogestry(["push", s.remote, "--archive", path], cwd: s.cwd)
        XCTAssertEqual(r.status, 1, file: file, line: line)
        let lines = r.stderrLines
        XCTAssertEqual(lines.filter { $0.hasPrefix("dogestry:") }.count, 1, r.stderr, file: file, line: line)
        XCTAssertTrue(lines.last?.hasPrefix("dogestry: error: ") == true && lines.last!.contains(path), r.stderr, file: file, line: line)
        assertOneErrorLine((lines.last ?? "") + "\n", naming: [path], cmd: "push \(name)", file: file, line: line)
        try assertNoRefsAndNothingStray(s, file: file, line: line)
        try assertNothingOutside(s, evilBefore: evilBefore, file: file, line: line)
        // From standard input: the error names standard input instead.
        try expectFailure(["push", "-q", s.remote, "--archive", "-"], in: s, naming: ["standard input"], stdinPath: path, file: file, line: line)
        try assertNoRefsAndNothingStray(s, file: file, line: line)
        try assertNothingOutside(s, evilBefore: evilBefore, file: file, line: line)
    }

    func testBadArchiveTruncated() throws { try checkBadArchive("truncated.tar") }
    func testBadArchiveNotATar() throws { try checkBadArchive("not-a-tar.tar") }
    func testBadArchiveDotDot() throws { try checkBadArchive("dotdot.tar") }
    func testBadArchiveAbsolute() throws { try checkBadArchive("absolute.tar") }
    func testBadArchiveSymlinkEscape() throws { try checkBadArchive("symlink-escape.tar") }
    func testBadArchiveMissingLayer() throws { try checkBadArchive("missing-layer.tar") }
    func testBadArchiveLayerCount() throws { try checkBadArchive("layer-count.tar") }
    func testBadArchiveBadJSON() throws { try checkBadArchive("bad-json.tar") }
    func testBadArchiveWrongDiffID() throws { try checkBadArchive("wrong-diffid.tar") }

    /// Every bad fixture has a test above.
    func testEveryBadFixtureIsCovered() throws {
        let onDisk = Set(try FileManager.default.contentsOfDirectory(atPath: fx.path("bad")).filter { $0.hasSuffix(".tar") })
        XCTAssertEqual(onDisk, ["truncated.tar", "not-a-tar.tar", "dotdot.tar", "absolute.tar", "symlink-escape.tar",
                                "missing-layer.tar", "layer-count.tar", "bad-json.tar", "wrong-diffid.tar"])
        XCTAssertEqual(Set(fx.bad.keys), onDisk)
    }

    /// A missing archive file, and a directory given as the archive.
    func testArchiveThatCannotBeRead() throws {
        let s = try sandbox()
        let missing = s.base + "/no-such.tar"
        try expectFailure(["push", "-q", s.remote, "--archive", missing], in: s, naming: [missing])
        try expectFailure(["push", "-q", s.remote, "--archive", s.cwd], in: s, naming: [s.cwd])
        try assertNoRefsAndNothingStray(s)
    }

    // MARK: bad names and tags

    func testBadNamesOnTheCommandLine() throws {
        let s = try sandbox()
        let good = fx.path("docker-app-v1.tar")
        let cases: [(String, String)] = [("Foo:bar", "\"Foo\""), ("a/../b", "a/../b"), ("a:bad tag", "\"bad tag\""), ("a:", "\"a:\"")]
        for (spec, named) in cases {
            try expectFailure(["push", "-q", s.remote, spec, "--archive", good], in: s, naming: [named])
            let out = s.base + "/out.tar"
            try expectFailure(["pull", "-q", s.remote, spec, "--archive", out], in: s, naming: [named])
            XCTAssertFalse(FS.exists(out), "\(spec): pull created an output file")
        }
        try assertNoRefsAndNothingStray(s)
        let remote = try LocalRemote(path: s.remote)
        var blobs = 0
        try remote.list(prefix: "blobs/") { _ in blobs += 1 }
        XCTAssertEqual(blobs, 0, "a push with a bad name stored layers")
        // An image the archive does not hold.
        try expectFailure(["push", "-q", s.remote, "dogestry-test/app:v9", "--archive", good], in: s,
                          naming: ["dogestry-test/app:v9", good])
        try assertNoRefsAndNothingStray(s)
        try assertNothingOutside(s, evilBefore: try FS.info("/tmp/evil")?.modified)
    }

    /// A one-image archive file in `s.base` whose manifest.json carries `repoTags` as given.
    private func archive(in s: Sandbox, repoTags: [String], label: String, image: EngineTestSupport.Image? = nil,
                         layerName: ((Int, Digest) -> String)? = nil, layers: [[UInt8]]? = nil) throws -> String {
        let img = try image ?? EngineTestSupport.Image(fixture: "docker-app-v1.tar", tag: "x/y:z", label: label)
        let path = s.base + "/\(label).tar"
        let sink = try FileSink(path: path)
        let w = TarWriter(sink)
        try w.writeFile(name: "\(img.id.hex).json", bytes: img.config)
        let content = layers ?? img.layers
        let names = img.diffIDs.enumerated().map { layerName?($0.offset, $0.element) ?? "\($0.element.hex)/layer.tar" }
        for (i, n) in names.enumerated() { try w.writeFile(name: n, bytes: content[i]) }
        let manifest: [[String: Any]] = [["Config": "\(img.id.hex).json", "RepoTags": repoTags, "Layers": names]]
        try w.writeFile(name: "manifest.json", bytes: [UInt8](try JSONSerialization.data(withJSONObject: manifest)))
        try w.finish()
        return path
    }

    /// Invalid RepoTags are not dropped silently: each one is a warning naming it and the archive;
    /// an image left with no valid tag (and none named by the user) is an error.
    func testInvalidRepoTagsInAnArchive() throws {
        let s = try sandbox()
        let mixed = try archive(in: s, repoTags: ["Bad:Tag", "dogestry-test/ok:v1"], label: "mixed")
        let r = try CLITest.runDogestry(["push", s.remote, "--archive", mixed], cwd: s.cwd)
        XCTAssertEqual(r.status, 0, r.stderr)
        let warnings = r.stderrLines.filter { $0.hasPrefix("warning: ") }
        XCTAssertEqual(warnings.count, 1, r.stderr)
        XCTAssertTrue(warnings.first?.contains("RepoTag \"Bad:Tag\"") == true && warnings.first?.contains(mixed) == true, r.stderr)
        XCTAssertEqual(try Repository(remote: try LocalRemote(path: s.remote)).listRefs().map { "\($0.name):\($0.tag)" }, ["dogestry-test/ok:v1"])

        let s2 = try sandbox()
        let allBad = try archive(in: s2, repoTags: ["Bad:Tag", "also bad"], label: "allbad")
        try expectFailure(["push", "-q", s2.remote, "--archive", allBad], in: s2, naming: [allBad, "\"Bad:Tag\"", "\"also bad\"", "no valid tag"])
        try assertNoRefsAndNothingStray(s2)
    }

    /// A Podman-style layer file named after a diffID the remote has (`<diffid>.tar`) but holding
    /// other content: refused, naming the claimed diffID and the one the content hashes to.
    func testLayerNamedAfterAStoredDiffIDWithOtherContent() throws {
        let s = try sandbox()
        let stored = try EngineTestSupport.Image(fixture: "docker-app-v1.tar", tag: "dogestry-test/stored:v1", label: "stored")
        try stored.push(to: try LocalRemote(path: s.remote))
        let claimed = stored.diffIDs.last!
        let liar = try EngineTestSupport.Image(fixture: "docker-app-v1.tar", tag: "x/y:z", label: "liar", uniqueTopLayer: true)
        let real = liar.diffIDs.last!
        XCTAssertNotEqual(real, claimed)
        let path = try archive(in: s, repoTags: ["dogestry-test/liar:v1"], label: "liar", image: liar,
                               layerName: { i, d in i == liar.layers.count - 1 ? "\(claimed.hex).tar" : "\(d.hex).tar" })
        let refsBefore = try Repository(remote: try LocalRemote(path: s.remote)).listRefs()
        for stdin in [false, true] {
            let err = try expectFailure(["push", "-q", s.remote, "--archive", stdin ? "-" : path], in: s,
                                        naming: ["\(claimed.hex).tar", "named after diffID \(claimed)", "hashes to \(real)"],
                                        stdinPath: stdin ? path : nil)
            XCTAssertFalse(err.contains("hashes to \(claimed)"), err)
            XCTAssertEqual(try Repository(remote: try LocalRemote(path: s.remote)).listRefs(), refsBefore, "a ref was written")
        }
    }

    /// A layer file that is not a tar (its config's diffID matches it, so only the content is
    /// wrong) is refused while it streams, naming the layer file; no ref is written.
    func testLayerThatIsNotATar() throws {
        let s = try sandbox()
        var img = try EngineTestSupport.Image(fixture: "docker-app-v1.tar", tag: "x/y:z", label: "not-a-tar")
        img.layers[img.layers.count - 1] = Array(String(repeating: "this is not a tar archive\n", count: 4000).utf8)
        var cfg = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(img.config)) as? [String: Any])
        cfg["rootfs"] = ["type": "layers", "diff_ids": img.layers.map { Digest.of($0).description }]
        img.config = [UInt8](try JSONSerialization.data(withJSONObject: cfg, options: [.sortedKeys]))
        let path = try archive(in: s, repoTags: ["dogestry-test/not-a-tar:v1"], label: "not-a-tar", image: img)
        let layerFile = "\(img.diffIDs.last!.hex)/layer.tar"
        for stdin in [false, true] {
            try expectFailure(["push", "-q", s.remote, "--archive", stdin ? "-" : path], in: s,
                              naming: ["layer \(layerFile)", "is not a tar header"], stdinPath: stdin ? path : nil)
            try assertNoRefsAndNothingStray(s)
            XCTAssertNil(try Repository(remote: try LocalRemote(path: s.remote)).lookupLayer(diffID: img.diffIDs.last!), "the non-tar layer was stored")
        }
    }

    /// An archive listing one small layer 100,000 times (manifest.json and config alike) is refused
    /// with a clear error before a manifest readers would refuse is built or written; no ref.
    func testArchiveWithAbsurdlyManyLayers() throws {
        let s = try sandbox()
        let img = try EngineTestSupport.Image(fixture: "docker-app-v1.tar", tag: "x/y:z", label: "absurd")
        let layer = img.layers[0], d = Digest.of(layer), n = 100_000
        var cfg = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(img.config)) as? [String: Any])
        cfg["rootfs"] = ["type": "layers", "diff_ids": Array(repeating: d.description, count: n)]
        let config = [UInt8](try JSONSerialization.data(withJSONObject: cfg, options: [.sortedKeys]))
        let path = s.base + "/absurd.tar"
        let w = TarWriter(try FileSink(path: path))
        try w.writeFile(name: "\(Digest.of(config).hex).json", bytes: config)
        try w.writeFile(name: "\(d.hex)/layer.tar", bytes: layer)
        let manifest: [[String: Any]] = [["Config": "\(Digest.of(config).hex).json", "RepoTags": ["dogestry-test/absurd:v1"],
                                          "Layers": Array(repeating: "\(d.hex)/layer.tar", count: n)]]
        try w.writeFile(name: "manifest.json", bytes: [UInt8](try JSONSerialization.data(withJSONObject: manifest)))
        try w.finish()
        for stdin in [false, true] {
            try expectFailure(["push", "-q", s.remote, "--archive", stdin ? "-" : path], in: s,
                              naming: ["100000 layers", "more than the \(RepositoryLimits.layers)"], stdinPath: stdin ? path : nil)
            try assertNoRefsAndNothingStray(s)
            var manifests = 0
            try LocalRemote(path: s.remote).list(prefix: "blobs/") { o in if o.size > 1 << 20 { manifests += 1 } }
            XCTAssertEqual(manifests, 0, "a huge object was written")
        }
    }

    // MARK: bad remotes

    func testRemoteThatDoesNotExist() throws {
        let s = try sandbox()
        let missing = s.base + "/missing-remote"
        try expectFailure(["push", "-q", missing, "--archive", fx.path("docker-app-v1.tar")], in: s, naming: [missing])
        try expectFailure(["pull", "-q", missing, "dogestry-test/app:v1", "--archive", s.base + "/out.tar"], in: s, naming: [missing])
        try expectFailure(["list", missing], in: s, naming: [missing])
        try expectFailure(["remote", missing], in: s, naming: [missing])
        try expectFailure(["list", "file://" + missing], in: s, naming: [missing])
        // A bare word that is neither a directory nor an alias.
        try expectFailure(["list", "nosuchalias"], in: s, naming: ["\"nosuchalias\""])
        XCTAssertFalse(FS.exists(missing), "the missing remote was created")
        try assertNothingOutside(s, evilBefore: try FS.info("/tmp/evil")?.modified)
    }

    func testRemoteThatIsAFile() throws {
        let s = try sandbox()
        let f = s.remote + "/a-file"
        try Data("not a directory".utf8).write(to: URL(fileURLWithPath: f))
        try expectFailure(["push", "-q", f, "--archive", fx.path("docker-app-v1.tar")], in: s, naming: [f])
        try expectFailure(["pull", "-q", f, "dogestry-test/app:v1", "--archive", s.base + "/out.tar"], in: s, naming: [f])
        try expectFailure(["list", f], in: s, naming: [f])
        try expectFailure(["remote", f], in: s, naming: [f])
        XCTAssertEqual(try String(contentsOfFile: f, encoding: .utf8), "not a directory")
        XCTAssertFalse(FS.exists(s.base + "/out.tar"))
    }

    private func mount(_ args: [String]) -> Bool {
        guard let r = try? CLITest.runProcess("/usr/bin/env", args) else { return false }
        return r.status == 0
    }

    /// A read-only bind mount (tests run as root, who ignores permission bits but not a read-only mount).
    func testRemoteThatIsNotWritable() throws {
        let s = try sandbox()
        // Populate the source first, so pull and list work on the read-only view.
        try CLITest.libraryPush(fx.path("docker-app-v1.tar"), to: try LocalRemote(path: s.remote))
        let ro = try CLITest.makeTempDir(self, "ro")
        guard mount(["mount", "--bind", "-o", "ro", s.remote, ro]) else {
            throw XCTSkip("SKIPPED: cannot make a read-only bind mount here (mount --bind -o ro failed); the unwritable-remote case is not tested")
        }
        defer { _ = mount(["umount", ro]) }
        try expectFailure(["push", "-q", ro, "--archive", fx.path("docker-app-v2.tar")], in: s, naming: [ro, "Read-only file system"])
        try expectFailure(["remote", ro], in: s, naming: [ro, "Read-only file system"])
        // Reading still works.
        let out = s.base + "/ro-pull.tar"
        let pull = try CLITest.runDogestry(["pull", "-q", ro, "dogestry-test/app:v1", "--archive", out], cwd: s.cwd)
        XCTAssertEqual(pull.status, 0, pull.stderr)
        XCTAssertEqual(try CLITest.readArchive(out).map(\.id), [fx.images["dogestry-test/app:v1"]!.id])
        let list = try CLITest.runDogestry(["list", ro], cwd: s.cwd)
        XCTAssertEqual(list.status, 0, list.stderr)
        XCTAssertTrue(list.stdoutText.contains("dogestry-test/app"), list.stdoutText)
    }

    // MARK: bad content on the remote

    func testRefThatIsNotADigest() throws {
        let s = try sandbox()
        let remote = try LocalRemote(path: s.remote)
        try CLITest.libraryPush(fx.path("docker-app-v1.tar"), to: remote)
        let key = "repositories/dogestry-test/broken/_tags/v1"
        try remote.put(key, bytes: Array("this is not a digest\n".utf8))
        try expectFailure(["pull", "-q", s.remote, "dogestry-test/broken:v1", "--archive", s.base + "/out.tar"], in: s, naming: [key])
        XCTAssertFalse(FS.exists(s.base + "/out.tar"))
        // list shows the other images and warns once about the broken ref (issue 9: one unreadable
        // object is reported and skipped).
        for args in [["list", s.remote], ["list", "--json", s.remote]] {
            let l = try CLITest.runDogestry(args, cwd: s.cwd)
            XCTAssertEqual(l.status, 0, "\(args): \(l.stderr)")
            XCTAssertTrue(l.stdoutText.contains("dogestry-test/app"), l.stdoutText)
            XCTAssertEqual(l.stderrLines.count, 1, l.stderr)
            XCTAssertTrue(l.stderr.hasPrefix("dogestry: warning: skipping \(key): ") && l.stderr.contains("does not hold a digest"), l.stderr)
        }
        // Pulling another image by name is unaffected, and by ID prefix the scan skips the broken ref.
        let ok = try CLITest.runDogestry(["pull", "-q", s.remote, "dogestry-test/app:v1", "--archive", s.base + "/ok.tar"], cwd: s.cwd)
        XCTAssertEqual(ok.status, 0, ok.stderr)
        try FileManager.default.removeItem(atPath: s.base + "/ok.tar")
        let byID = try CLITest.runDogestry(["pull", "-q", s.remote, fx.images["dogestry-test/app:v1"]!.id.short, "--archive", s.base + "/ok.tar"], cwd: s.cwd)
        XCTAssertEqual(byID.status, 0, byID.stderr)
        XCTAssertEqual(try CLITest.readArchive(s.base + "/ok.tar").map(\.id), [fx.images["dogestry-test/app:v1"]!.id])
    }

    func testConfigFileWithAnUnknownKey() throws {
        let s = try sandbox()
        let cfg = "# remotes\n[remote \"central\"]\n\turl = \(s.remote)\n\tcolour = blue\n"
        try Data(cfg.utf8).write(to: URL(fileURLWithPath: s.cwd + "/dogestry.cfg"))
        try expectFailure(["list", "central"], in: s, naming: ["dogestry.cfg:4:", "colour"])
        try expectFailure(["push", "-q", s.remote, "--archive", fx.path("docker-app-v1.tar")], in: s, naming: ["dogestry.cfg:4:"])
        try assertNoRefsAndNothingStray(s)
        // Through --config.
        let explicit = s.base + "/other.cfg"
        try Data("[compression]\n\talgorithm = zstd\n\tspeed = 3\n".utf8).write(to: URL(fileURLWithPath: explicit))
        defer { try? FileManager.default.removeItem(atPath: explicit) }
        try expectFailure(["list", "--config", explicit, s.remote], in: s, naming: [explicit + ":3:", "speed"])
        // A config file that does not exist.
        try expectFailure(["list", "--config", s.base + "/none.cfg", s.remote], in: s, naming: [s.base + "/none.cfg"])
    }

    /// The layer blob's digest and the diffID index entry of `diffID`.
    private func layerBlob(_ remote: LocalRemote, _ diffID: Digest) throws -> String {
        let entry = try XCTUnwrap(try Repository(remote: remote).lookupLayer(diffID: diffID))
        return Repository.blobKey(entry.digest)
    }

    /// One flipped bit in a stored layer, for every compression: a one-line error naming the blob, no output file.
    func testPullOfAFlippedBit() throws {
        let app = fx.images["dogestry-test/app:v1"]!
        for c in Compression.allCases {
            let s = try sandbox()
            let remote = try LocalRemote(path: s.remote)
            try CLITest.libraryPush(fx.path("docker-app-v1.tar"), to: remote, compression: c)
            let key = try layerBlob(remote, app.diffIDs[1])
            var bytes = try remote.read(key, limit: 64 << 20)
            bytes[bytes.count / 2] ^= 0x08
            try remote.put(key, bytes: bytes)
            let outDir = s.base + "/out"
            try FileManager.default.createDirectory(atPath: outDir, withIntermediateDirectories: true)
            let digest = "sha256:" + (key as NSString).lastPathComponent
            let err = try expectFailure(["pull", "-q", s.remote, "dogestry-test/app:v1", "--archive", outDir + "/app.tar"], in: s,
                                        naming: [digest])
            XCTAssertTrue(err.contains("corrupt"), "\(c.rawValue): \(err)")
            XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: outDir), [],
                           "\(c.rawValue): an output file (or a .partial) was left behind")
            try FileManager.default.removeItem(atPath: outDir)
            // The library says the same.
            XCTAssertThrowsError(try CLITest.libraryPull(["dogestry-test/app:v1"], from: remote, to: s.base + "/lib.tar")) { e in
                XCTAssertEqual((e as? DogestryError)?.kind, .corrupt, "\(c.rawValue): \(e)")
                XCTAssertTrue("\(e)".contains(digest), "\(c.rawValue): \(e)")
            }
            XCTAssertFalse(FS.exists(s.base + "/lib.tar"))
            try assertNothingOutside(s, evilBefore: try FS.info("/tmp/evil")?.modified)
        }
    }

    /// A flipped bit in the config or manifest blob: caught by its digest, naming it.
    /// A manifest whose config descriptor gives the wrong size (2^40, or one byte off) is refused,
    /// naming the config digest and both sizes.
    func testPullOfAConfigDescriptorWithTheWrongSize() throws {
        let s = try sandbox()
        let remote = try LocalRemote(path: s.remote)
        let repo = Repository(remote: remote)
        let report = try CLITest.libraryPush(fx.path("docker-app-v1.tar"), to: remote)
        var m = try repo.readManifest(try XCTUnwrap(report.images.first?.manifest))
        let real = m.config.size
        for wrong in [Int64(1) << 40, real + 1] {
            m.config.size = wrong
            let md = try repo.putBlob(m.encoded())
            try repo.writeRef(name: "dogestry-test/app", tag: "lying", manifest: md)
            let err = try expectFailure(["pull", "-q", s.remote, "dogestry-test/app:lying", "--archive", s.base + "/out.tar"], in: s,
                                        naming: [m.config.digest.description, String(wrong)])
            if wrong == real + 1 { XCTAssertTrue(err.contains("has \(real) bytes"), err) }
            XCTAssertFalse(FS.exists(s.base + "/out.tar"))
        }
    }

    func testPullOfACorruptConfigOrManifest() throws {
        let s = try sandbox()
        let remote = try LocalRemote(path: s.remote)
        let report = try CLITest.libraryPush(fx.path("docker-app-v1.tar"), to: remote)
        let md = try XCTUnwrap(report.images.first?.manifest)
        let cfg = fx.images["dogestry-test/app:v1"]!.id
        for d in [cfg, md] {
            let key = Repository.blobKey(d)
            let original = try remote.read(key)
            var bytes = original
            bytes[bytes.count / 2] ^= 0x01
            try remote.put(key, bytes: bytes)
            try expectFailure(["pull", "-q", s.remote, "dogestry-test/app:v1", "--archive", s.base + "/out.tar"], in: s,
                              naming: [d.description, "corrupt"])
            XCTAssertFalse(FS.exists(s.base + "/out.tar"))
            try remote.put(key, bytes: original)
        }
    }

    func testPullOfAMissingLayerBlob() throws {
        let s = try sandbox()
        let remote = try LocalRemote(path: s.remote)
        try CLITest.libraryPush(fx.path("docker-app-v1.tar"), to: remote, compression: .lz4)
        let key = try layerBlob(remote, fx.images["dogestry-test/app:v1"]!.diffIDs[3])
        try remote.delete(key)
        let digest = "sha256:" + (key as NSString).lastPathComponent
        let outDir = s.base + "/out"
        try FileManager.default.createDirectory(atPath: outDir, withIntermediateDirectories: true)
        try expectFailure(["pull", "-q", s.remote, "dogestry-test/app:v1", "--archive", outDir + "/app.tar"], in: s,
                          naming: [digest, "missing"])
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: outDir), [], "an output file was left behind")
        // A missing manifest blob too.
        let md = try XCTUnwrap(try Repository(remote: remote).readRef(name: "dogestry-test/app", tag: "v1"))
        try remote.delete(Repository.blobKey(md))
        try expectFailure(["pull", "-q", s.remote, "dogestry-test/app:v1", "--archive", outDir + "/app.tar"], in: s,
                          naming: [md.description, "missing"])
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: outDir), [])
    }

    /// Pull into a directory that does not exist, or onto a directory.
    func testPullToAnUnwritableTarget() throws {
        let s = try sandbox()
        try CLITest.libraryPush(fx.path("docker-app-v1.tar"), to: try LocalRemote(path: s.remote))
        let nodir = s.base + "/nodir/out.tar"
        try expectFailure(["pull", "-q", s.remote, "dogestry-test/app:v1", "--archive", nodir], in: s, naming: [s.base + "/nodir"])
        try expectFailure(["pull", "-q", s.remote, "dogestry-test/app:v1", "--archive", s.cwd], in: s, naming: [s.cwd])
        try assertNothingOutside(s, evilBefore: try FS.info("/tmp/evil")?.modified)
    }
}
