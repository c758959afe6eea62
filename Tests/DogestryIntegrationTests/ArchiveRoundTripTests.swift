import DogestryCore
import DogestryRemotes
import DogestrySync
import Foundation
import XCTest

// MARK: - Shared helpers (also used by BadInputTests)

/// Helpers for the archive and CLI tests, namespaced so they cannot clash with other test files.
enum CLITest {

    /// A required environment variable: missing fails the test when DOGESTRY_REQUIRE_ENGINES=1, else skips it.
    static func requiredEnvironment(_ name: String, file: StaticString = #filePath, line: UInt = #line) throws -> String {
        let env = ProcessInfo.processInfo.environment
        if let v = env[name], !v.isEmpty { return v }
        if env["DOGESTRY_REQUIRE_ENGINES"] == "1" {
            XCTFail("\(name) is not set but DOGESTRY_REQUIRE_ENGINES=1 (run scripts/test)", file: file, line: line)
            throw DogestryError.invalid("\(name) is not set")
        }
        throw XCTSkip("\(name) is not set (run scripts/test, or see scripts/lib/fixtures.sh)")
    }

    /// The fixture archives of scripts/lib/fixtures.sh and their expected.json.
    struct Fixtures {
        struct Image { var id: Digest; var diffIDs: [Digest]; var repoTags: [String] }
        let dir: String
        /// By reference ("dogestry-test/app:v1").
        let images: [String: Image]
        /// Archive file name -> the references it holds.
        let archives: [String: [String]]
        /// Bad archive file name -> what is wrong with it.
        let bad: [String: String]

        static let good = ["docker-legacy.tar", "podman.tar", "podman-app-v1.tar", "oci-docker25.tar", "oci-gzip-layers.tar", "docker-app-v1.tar"]

        static func load(file: StaticString = #filePath, line: UInt = #line) throws -> Fixtures {
            let dir = try requiredEnvironment("DOGESTRY_FIXTURES", file: file, line: line)
            let data = try Data(contentsOf: URL(fileURLWithPath: dir + "/expected.json"))
            let root = try XCTUnwrap(try JSONSerialization.jsonObject(with: data) as? [String: Any])
            var images: [String: Image] = [:]
            for (ref, v) in try XCTUnwrap(root["images"] as? [String: [String: Any]]) {
                images[ref] = Image(id: try Digest(parsing: try XCTUnwrap(v["id"] as? String)),
                                    diffIDs: try XCTUnwrap(v["diffIDs"] as? [String]).map { try Digest(parsing: $0) },
                                    repoTags: try XCTUnwrap(v["repoTags"] as? [String]))
            }
            return Fixtures(dir: dir, images: images,
                            archives: try XCTUnwrap(root["archives"] as? [String: [String]]),
                            bad: (root["bad"] as? [String: String]) ?? [:])
        }

        func path(_ name: String) -> String { dir + "/" + name }

        /// The name a reference of `archive` gets on a remote: Podman's archives carry `docker.io/`,
        /// which the remote stores in Docker's short form (docs/FORMAT.md, *Canonical names*).
        static func remoteRef(_ ref: String, in archive: String) -> String {
            (try? ImageReference(parsing: ref).description) ?? ref
        }

        /// A tag without the registry prefix engines add or keep (`docker.io/`, `localhost/`).
        static func familiar(_ tag: String) -> String {
            for p in ["docker.io/library/", "docker.io/", "localhost/"] where tag.hasPrefix(p) { return String(tag.dropFirst(p.count)) }
            return tag
        }
    }

    /// A fresh directory, removed after the test.
    static func makeTempDir(_ test: XCTestCase, _ label: String = "it") throws -> String {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("dogestry-\(label)-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        test.addTeardownBlock { try? FileManager.default.removeItem(atPath: dir) }
        return dir
    }

    struct ProcessResult {
        var status: Int32
        var stdout: Data
        var stderr: String
        var stderrLines: [String] { stderr.split(separator: "\n", omittingEmptySubsequences: false).map(String.init).filter { !$0.isEmpty } }
        var stdoutText: String { String(decoding: stdout, as: UTF8.self) }
    }

    /// Runs a program to completion; stdout and stderr go through files (no pipe deadlock).
    /// `stdoutPath` keeps stdout in that file instead of returning it.
    static func runProcess(_ exe: String, _ args: [String], environment: [String: String] = [:], stdinPath: String? = nil,
                    stdoutPath: String? = nil, cwd: String? = nil) throws -> ProcessResult {
        let scratch = FileManager.default.temporaryDirectory.appendingPathComponent("dogestry-proc-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: scratch, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: scratch) }
        let outPath = stdoutPath ?? scratch + "/stdout", errPath = scratch + "/stderr"
        _ = FileManager.default.createFile(atPath: outPath, contents: nil)
        _ = FileManager.default.createFile(atPath: errPath, contents: nil)
        let p = Process()
        p.executableURL = URL(fileURLWithPath: exe)
        p.arguments = args
        var env = ProcessInfo.processInfo.environment
        for (k, v) in environment { env[k] = v }
        p.environment = env
        if let cwd { p.currentDirectoryURL = URL(fileURLWithPath: cwd) }
        let out = try XCTUnwrap(FileHandle(forWritingAtPath: outPath)), err = try XCTUnwrap(FileHandle(forWritingAtPath: errPath))
        p.standardOutput = out
        p.standardError = err
        if let stdinPath { p.standardInput = try XCTUnwrap(FileHandle(forReadingAtPath: stdinPath)) } else { p.standardInput = FileHandle.nullDevice }
        try p.run()
        p.waitUntilExit()
        try out.close(); try err.close()
        return ProcessResult(status: p.terminationStatus,
                             stdout: stdoutPath == nil ? try Data(contentsOf: URL(fileURLWithPath: outPath)) : Data(),
                             stderr: String(decoding: try Data(contentsOf: URL(fileURLWithPath: errPath)), as: UTF8.self))
    }

    /// The `dogestry` executable `swift test` built next to the test bundle.
    static func dogestryBinary(file: StaticString = #filePath, line: UInt = #line) throws -> String {
        var candidates: [String] = []
        if let explicit = ProcessInfo.processInfo.environment["DOGESTRY_BIN"] { candidates.append(explicit) }
        let bundle = Bundle.main.bundleURL
        candidates += [bundle.appendingPathComponent("dogestry").path, bundle.deletingLastPathComponent().appendingPathComponent("dogestry").path]
        let argv0 = URL(fileURLWithPath: CommandLine.arguments[0]).resolvingSymlinksInPath()
        candidates += [argv0.deletingLastPathComponent().appendingPathComponent("dogestry").path,
                       argv0.deletingLastPathComponent().deletingLastPathComponent().appendingPathComponent("dogestry").path]
        // Last resort: the default scratch directory of this package.
        let pkg = URL(fileURLWithPath: "\(#filePath)").deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        candidates.append(pkg.appendingPathComponent(".build/debug/dogestry").path)
        for c in candidates where FileManager.default.isExecutableFile(atPath: c) && !FS.isDirectory(c) { return c }
        XCTFail("no dogestry executable found (looked at \(candidates.joined(separator: ", "))); set DOGESTRY_BIN", file: file, line: line)
        throw DogestryError.notFound("dogestry executable")
    }

    /// Runs the CLI isolated from any user configuration (its own cwd and XDG_CONFIG_HOME).
    static func runDogestry(_ args: [String], cwd: String, stdinPath: String? = nil, stdoutPath: String? = nil) throws -> ProcessResult {
        try runProcess(try dogestryBinary(), args, environment: ["XDG_CONFIG_HOME": cwd + "/.xdg-none", "HOME": cwd],
                       stdinPath: stdinPath, stdoutPath: stdoutPath, cwd: cwd)
    }

    /// Pushes an archive through the library.
    @discardableResult
    static func libraryPush(_ archive: String, to remote: Remote, compression: Compression = .zstd, selections: [String] = []) throws -> PushReport {
        var o = TransferOptions()
        o.compression = compression
        let pusher = Pusher(repository: Repository(remote: remote), options: o, progress: SilentProgress())
        return try pusher.pushArchive(try FileSource(path: archive), what: "archive \(archive)", selections: selections)
    }

    /// Pulls `specs` into a docker-load archive at `path` through the library.
    @discardableResult
    static func libraryPull(_ specs: [String], from remote: Remote, to path: String) throws -> PullReport {
        let puller = Puller(repository: Repository(remote: remote), progress: SilentProgress())
        let resolved = try puller.resolveAll(specs)
        let out = try OutputFile(path: path)
        do {
            let r = try puller.writeArchive(resolved, to: out.sink)
            try out.commit()
            return r
        } catch { out.abort(); throw error }
    }

    /// Reads an archive, computing every layer's diffID.
    static func readArchive(_ path: String) throws -> [ArchiveImage] { try readArchiveCountingLayers(path).images }

    /// Reads an archive; also counts its layer files.
    static func readArchiveCountingLayers(_ path: String) throws -> (images: [ArchiveImage], layerFiles: Int) {
        var count = 0
        let images = try DockerArchiveReader(try FileSource(path: path), what: path).read { _, body in
            count += 1
            return try layerDiffID(of: body)
        }
        return (images, count)
    }

    /// Every file under `dir` (relative paths).
    static func filesUnder(_ dir: String) -> [String] {
        guard let e = FileManager.default.enumerator(atPath: dir) else { return [] }
        var out: [String] = []
        while let p = e.nextObject() as? String {
            if !FS.isDirectory(dir + "/" + p) { out.append(p) }
        }
        return out.sorted()
    }

    /// Modification times of every file under `dir`.
    static func mtimesUnder(_ dir: String) throws -> [String: Date] {
        var out: [String: Date] = [:]
        for f in filesUnder(dir) { out[f] = try FS.info(dir + "/" + f)?.modified }
        return out
    }
}

// MARK: - Tests

/// Push fixture archives to a local remote and pull them back, through the library and the CLI.
final class ArchiveRoundTripTests: XCTestCase {
    var fx: CLITest.Fixtures!

    override func setUpWithError() throws {
        fx = try CLITest.Fixtures.load()
    }

    private func newRemote() throws -> LocalRemote { try LocalRemote(path: try CLITest.makeTempDir(self, "remote")) }

    /// Asserts a pulled archive holds exactly `refs` (remote names) with the expected IDs, diffIDs and tags.
    private func assertArchive(_ path: String, holds refs: [String], context: String,
                               file: StaticString = #filePath, line: UInt = #line) throws {
        let (images, layerFiles) = try CLITest.readArchiveCountingLayers(path)
        var wantTags: [Digest: Set<String>] = [:]
        var wantDiffIDs: [Digest: [Digest]] = [:]
        for r in refs {
            let img = try XCTUnwrap(fx.images[CLITest.Fixtures.familiar(r)], "\(context): no expected image \(r)", file: file, line: line)
            wantTags[img.id, default: []].insert(r)
            wantDiffIDs[img.id] = img.diffIDs
        }
        XCTAssertEqual(images.count, wantTags.count, "\(context): images in \(path)", file: file, line: line)
        XCTAssertEqual(Set(images.map(\.id)), Set(wantTags.keys), "\(context): image IDs", file: file, line: line)
        for img in images {
            XCTAssertEqual(img.config.diffIDs, wantDiffIDs[img.id], "\(context): diffIDs of \(img.id.short)", file: file, line: line)
            XCTAssertEqual(Set(img.repoTags), wantTags[img.id], "\(context): RepoTags of \(img.id.short)", file: file, line: line)
            XCTAssertEqual(img.repoTags.count, wantTags[img.id]?.count, "\(context): duplicate RepoTags", file: file, line: line)
        }
        // Each layer is written once, however many images share it.
        XCTAssertEqual(layerFiles, Set(wantDiffIDs.values.flatMap { $0 }).count, "\(context): layer files in \(path)", file: file, line: line)
    }

    private func compression(for index: Int) -> Compression {
        [Compression.zstd, .lz4, .gzip, .none][index % 4]
    }

    /// Every good fixture: push (each compression at least once), then pull every image alone and all together.
    func testEveryGoodFixtureRoundTripsThroughTheLibrary() throws {
        let out = try CLITest.makeTempDir(self, "pulled")
        for (i, name) in CLITest.Fixtures.good.enumerated() {
            let c = compression(for: i)
            let ctx = "\(name) with \(c.rawValue)"
            let remote = try newRemote()
            let refs = try XCTUnwrap(fx.archives[name], name).map { CLITest.Fixtures.remoteRef($0, in: name) }
            let report = try CLITest.libraryPush(fx.path(name), to: remote, compression: c)
            XCTAssertEqual(Set(report.images.flatMap(\.tags)), Set(refs), ctx)
            let layers = Set(refs.flatMap { fx.images[CLITest.Fixtures.familiar($0)]!.diffIDs })
            XCTAssertEqual(report.layersUploaded, layers.count, ctx)
            XCTAssertEqual(report.layersPresent, 0, ctx)
            XCTAssertGreaterThan(report.bytesUploaded, 0, ctx)

            let repo = Repository(remote: remote)
            XCTAssertEqual(try repo.listRefs().map { "\($0.name):\($0.tag)" }.sorted(), refs.sorted(), ctx)
            for ref in refs {
                // Stored layers use the chosen compression; every blob they name exists.
                let r = try ImageReference(parsing: ref)
                let md = try XCTUnwrap(try repo.readRef(name: r.name, tag: r.tag!), "\(ctx): ref \(ref)")
                let m = try repo.readManifest(md)
                XCTAssertEqual(m.config.digest, fx.images[CLITest.Fixtures.familiar(ref)]!.id, "\(ctx): config of \(ref)")
                XCTAssertTrue(m.layers.allSatisfy { $0.mediaType == c.layerMediaType }, "\(ctx): media types \(m.layers.map(\.mediaType))")
                XCTAssertEqual(m.layers.compactMap(\.diffID), fx.images[CLITest.Fixtures.familiar(ref)]!.diffIDs, ctx)

                let path = out + "/\(name)-\(ref.replacingOccurrences(of: "/", with: "_")).tar"
                let pr = try CLITest.libraryPull([ref], from: remote, to: path)
                XCTAssertEqual(pr.layersFetched, fx.images[CLITest.Fixtures.familiar(ref)]!.diffIDs.count, ctx)
                try assertArchive(path, holds: [ref], context: "\(ctx), pull \(ref)")
            }
            let all = out + "/\(name)-all.tar"
            try CLITest.libraryPull(refs, from: remote, to: all)
            try assertArchive(all, holds: refs, context: "\(ctx), pull all")
        }
    }

    /// The same through the CLI: `push --compression X --archive`, then `pull --archive` per image.
    func testEveryGoodFixtureRoundTripsThroughTheCLI() throws {
        let cwd = try CLITest.makeTempDir(self, "cwd"), out = try CLITest.makeTempDir(self, "pulled")
        for (i, name) in CLITest.Fixtures.good.enumerated() {
            let c = compression(for: i + 1)
            let ctx = "CLI \(name) with \(c.rawValue)"
            let remote = try newRemote()
            let refs = try XCTUnwrap(fx.archives[name]).map { CLITest.Fixtures.remoteRef($0, in: name) }
            let push = try CLITest.runDogestry(["push", remote.root, "--archive", fx.path(name), "--compression", c.rawValue, "--json"], cwd: cwd)
            XCTAssertEqual(push.status, 0, "\(ctx): \(push.stderr)")
            let json = try XCTUnwrap(try JSONSerialization.jsonObject(with: push.stdout) as? [String: Any], ctx)
            let tags = (json["images"] as? [[String: Any]] ?? []).flatMap { $0["tags"] as? [String] ?? [] }
            XCTAssertEqual(Set(tags), Set(refs), ctx)
            for ref in refs {
                let path = out + "/cli-\(name)-\(ref.replacingOccurrences(of: "/", with: "_")).tar"
                let pull = try CLITest.runDogestry(["pull", remote.root, ref, "--archive", path], cwd: cwd)
                XCTAssertEqual(pull.status, 0, "\(ctx): pull \(ref): \(pull.stderr)")
                XCTAssertTrue(pull.stdoutText.contains("pulled \(ref)"), pull.stdoutText)
                try assertArchive(path, holds: [ref], context: "\(ctx), pull \(ref)")
            }
            // Several images in one archive.
            let all = out + "/cli-\(name)-all.tar"
            let pull = try CLITest.runDogestry(["pull", "-q", remote.root] + refs + ["--archive", all], cwd: cwd)
            XCTAssertEqual(pull.status, 0, "\(ctx): pull all: \(pull.stderr)")
            XCTAssertEqual(pull.stderr, "", ctx)
            try assertArchive(all, holds: refs, context: "\(ctx), pull all")
            XCTAssertEqual(CLITest.filesUnder(cwd), [], "\(ctx): the CLI wrote into its working directory")
        }
        XCTAssertEqual(CLITest.filesUnder(out).filter { $0.contains(".partial") }, [], "temporary output files left behind")
    }

    // MARK: engines

    private struct Engines { var dockerHost: String; var engineDir: String }

    private func engines() throws -> Engines {
        let dh = try CLITest.requiredEnvironment("DOGESTRY_TEST_DOCKER_HOST")
        _ = try CLITest.requiredEnvironment("DOGESTRY_TEST_PODMAN_HOST")
        let dir = try CLITest.requiredEnvironment("DOGESTRY_ENGINE_DIR")
        return Engines(dockerHost: dh, engineDir: dir)
    }

    private func docker(_ e: Engines, _ args: [String]) throws -> CLITest.ProcessResult {
        try CLITest.runProcess("/usr/bin/env", ["docker"] + args, environment: ["DOCKER_HOST": e.dockerHost])
    }

    private func podman(_ e: Engines, _ args: [String]) throws -> CLITest.ProcessResult {
        try CLITest.runProcess("/usr/bin/env", ["podman", "--root", e.engineDir + "/storage", "--runroot", e.engineDir + "/run"] + args)
    }

    /// (id, RepoTags, RootFS layers) of an image in an engine, or nil if it is not there.
    private func inspect(_ run: ([String]) throws -> CLITest.ProcessResult, _ id: Digest) throws -> (String, [String], [String])? {
        let r = try run(["image", "inspect", "--format", "{{.Id}}|{{range .RepoTags}}{{.}},{{end}}|{{range .RootFS.Layers}}{{.}},{{end}}", id.hex])
        guard r.status == 0 else { return nil }
        let parts = r.stdoutText.trimmingCharacters(in: .whitespacesAndNewlines).split(separator: "|", omittingEmptySubsequences: false).map(String.init)
        guard parts.count == 3 else { return nil }
        func list(_ s: String) -> [String] { s.split(separator: ",").map(String.init) }
        return (parts[0], list(parts[1]), list(parts[2]))
    }

    /// Loads `archive` into an engine from clean and checks every image of `refs`.
    private func assertLoads(_ engineName: String, _ run: @escaping ([String]) throws -> CLITest.ProcessResult, archive: String,
                             refs: [String], context: String, file: StaticString = #filePath, line: UInt = #line) throws {
        let ids = Set(refs.map { fx.images[CLITest.Fixtures.familiar($0)]!.id })
        func removeAll() throws { for id in ids { _ = try run(["rmi", "-f", id.hex]) } }
        try removeAll()
        defer { try? removeAll() }
        for id in ids { XCTAssertNil(try inspect(run, id), "\(engineName): \(id.short) still present before the load", file: file, line: line) }
        let load = try run(["load", "-i", archive])
        XCTAssertEqual(load.status, 0, "\(context): \(engineName) load failed: \(load.stderr)", file: file, line: line)
        for ref in refs {
            let want = fx.images[CLITest.Fixtures.familiar(ref)]!
            guard let (id, tags, layers) = try inspect(run, want.id) else {
                XCTFail("\(context): \(engineName) has no image \(want.id.short) for \(ref) after the load", file: file, line: line)
                continue
            }
            XCTAssertEqual(id.hasPrefix("sha256:") ? id : "sha256:" + id, want.id.description, "\(context): \(engineName) image ID", file: file, line: line)
            XCTAssertEqual(layers, want.diffIDs.map(\.description), "\(context): \(engineName) layers of \(ref)", file: file, line: line)
            XCTAssertTrue(tags.map(CLITest.Fixtures.familiar).contains(CLITest.Fixtures.familiar(ref)),
                          "\(context): \(engineName) tags \(tags) lack \(ref)", file: file, line: line)
        }
    }

    /// A pulled archive (each compression) loads into dockerd and podman with the right IDs and layers.
    func testPulledArchivesLoadIntoDockerAndPodman() throws {
        let e = try engines()
        let out = try CLITest.makeTempDir(self, "load")
        let sources = ["docker-legacy.tar", "oci-gzip-layers.tar", "podman.tar", "oci-docker25.tar"]
        for (i, c) in [Compression.zstd, .lz4, .gzip, .none].enumerated() {
            let src = sources[i]
            let remote = try newRemote()
            try CLITest.libraryPush(fx.path(src), to: remote, compression: c)
            let refs = ["dogestry-test/base:v1", "dogestry-test/app:v2", "dogestry-test/multi:a", "dogestry-test/multi:b"]
                .map { CLITest.Fixtures.remoteRef($0, in: src) }
            let path = out + "/\(c.rawValue).tar"
            try CLITest.libraryPull(refs, from: remote, to: path)
            let ctx = "\(src) stored with \(c.rawValue)"
            try assertLoads("docker", { try self.docker(e, $0) }, archive: path, refs: refs, context: ctx)
            try assertLoads("podman", { try self.podman(e, $0) }, archive: path, refs: refs, context: ctx)
        }
    }

    // MARK: deduplication

    /// Pushing the same archive twice writes no blob the second time.
    func testSecondPushWritesNoBlob() throws {
        let remote = try newRemote()
        let name = "docker-legacy.tar"
        let first = try CLITest.libraryPush(fx.path(name), to: remote)
        XCTAssertGreaterThan(first.blobsWritten, 0)
        let blobs = CLITest.filesUnder(remote.root + "/blobs")
        let stored = try CLITest.mtimesUnder(remote.root + "/blobs").merging(try CLITest.mtimesUnder(remote.root + "/index")) { a, _ in a }
        // 6 layers + 4 configs + 4 manifests.
        XCTAssertEqual(blobs.count, 14)
        XCTAssertEqual(first.blobsWritten, 14)
        let second = try CLITest.libraryPush(fx.path(name), to: remote)
        XCTAssertEqual(second.blobsWritten, 0)
        XCTAssertEqual(second.layersUploaded, 0)
        XCTAssertEqual(second.bytesUploaded, 0)
        XCTAssertEqual(second.layersPresent, 6)
        XCTAssertEqual(CLITest.filesUnder(remote.root + "/blobs"), blobs)
        XCTAssertEqual(try CLITest.mtimesUnder(remote.root + "/blobs").merging(try CLITest.mtimesUnder(remote.root + "/index")) { a, _ in a }, stored,
                       "blobs or index entries were rewritten")
        XCTAssertEqual(Set(second.images.map(\.manifest)), Set(first.images.map(\.manifest)))
        // The same archive in another layout and compression holds the same layers: still no layer uploaded.
        let third = try CLITest.libraryPush(fx.path("podman.tar"), to: remote, compression: .lz4)
        XCTAssertEqual(third.layersUploaded, 0)
        XCTAssertEqual(third.blobsWritten, 0, "same configs and manifests: nothing new")
        // And through the CLI.
        let cwd = try CLITest.makeTempDir(self, "cwd")
        let cli = try CLITest.runDogestry(["push", remote.root, "--archive", fx.path(name), "--json"], cwd: cwd)
        XCTAssertEqual(cli.status, 0, cli.stderr)
        let json = try XCTUnwrap(try JSONSerialization.jsonObject(with: cli.stdout) as? [String: Any])
        XCTAssertEqual(json["blobsWritten"] as? Int, 0)
        XCTAssertEqual(json["layersUploaded"] as? Int, 0)
        XCTAssertEqual(CLITest.filesUnder(remote.root + "/blobs"), blobs)
    }

    /// app:v2 shares its three lower layers with app:v1: only its top layer is uploaded.
    func testIncrementalPushUploadsOnlyTheNewLayer() throws {
        let remote = try newRemote()
        let v1 = try CLITest.libraryPush(fx.path("docker-app-v1.tar"), to: remote)
        XCTAssertEqual(v1.layersUploaded, 4)
        let before = Set(CLITest.filesUnder(remote.root + "/blobs"))
        let v2 = try CLITest.libraryPush(fx.path("docker-app-v2.tar"), to: remote)
        XCTAssertEqual(v2.layersUploaded, 1)
        XCTAssertEqual(v2.layersPresent, 3)
        XCTAssertEqual(v2.blobsWritten, 3, "one layer, one config, one manifest")
        let added = Set(CLITest.filesUnder(remote.root + "/blobs")).subtracting(before)
        XCTAssertEqual(added.count, 3)
        let top = fx.images["dogestry-test/app:v2"]!.diffIDs.last!
        let entry = try XCTUnwrap(try Repository(remote: remote).lookupLayer(diffID: top))
        XCTAssertTrue(added.contains("sha256/" + entry.digest.hex))
        XCTAssertEqual(v2.bytesUploaded, entry.size)
        // Both pull back whole.
        let out = try CLITest.makeTempDir(self, "pulled")
        try CLITest.libraryPull(["dogestry-test/app:v1", "dogestry-test/app:v2"], from: remote, to: out + "/both.tar")
        try assertArchive(out + "/both.tar", holds: ["dogestry-test/app:v1", "dogestry-test/app:v2"], context: "v1+v2")
    }

    // MARK: image specs

    /// A remote with docker-legacy.tar, plus dogestry-test/app:latest -> app:v2.
    private func populatedRemote() throws -> LocalRemote {
        let remote = try newRemote()
        try CLITest.libraryPush(fx.path("docker-legacy.tar"), to: remote)
        let repo = Repository(remote: remote)
        let md = try XCTUnwrap(try repo.readRef(name: "dogestry-test/app", tag: "v2"))
        let cfg = try repo.readConfig(try repo.readManifest(md).config.digest)
        let pusher = Pusher(repository: repo, options: TransferOptions(), progress: SilentProgress())
        try pusher.publish(cfg, tags: [ImageReference(name: "dogestry-test/app", tag: "latest")])
        XCTAssertEqual(try repo.readRef(name: "dogestry-test/app", tag: "latest"), md)
        return remote
    }

    func testPullBySpecThroughTheLibrary() throws {
        let remote = try populatedRemote()
        let repo = Repository(remote: remote)
        let puller = Puller(repository: repo, progress: SilentProgress())
        let app1 = fx.images["dogestry-test/app:v1"]!, app2 = fx.images["dogestry-test/app:v2"]!, multi = fx.images["dogestry-test/multi:a"]!
        let md1 = try XCTUnwrap(try repo.readRef(name: "dogestry-test/app", tag: "v1"))

        func check(_ spec: String, _ id: Digest, _ tags: [String], line: UInt = #line) {
            do {
                let r = try puller.resolve(spec)
                XCTAssertEqual(r.id, id, spec, line: line)
                XCTAssertEqual(r.tags, tags, spec, line: line)
            } catch { XCTFail("\(spec): \(error)", line: line) }
        }
        check("dogestry-test/app", app2.id, ["dogestry-test/app:latest"])
        check("dogestry-test/app:v1", app1.id, ["dogestry-test/app:v1"])
        check("dogestry-test/app@\(md1)", app1.id, [])
        check("dogestry-test/app:v1@\(md1)", app1.id, ["dogestry-test/app:v1"])
        check(app1.id.short, app1.id, ["dogestry-test/app:v1"])
        check(app1.id.description, app1.id, ["dogestry-test/app:v1"])
        check(app2.id.short, app2.id, ["dogestry-test/app:latest", "dogestry-test/app:v2"])
        check(multi.id.short, multi.id, ["dogestry-test/multi:a", "dogestry-test/multi:b"])

        func fails(_ spec: String, _ kind: DogestryError.Kind, _ text: String, line: UInt = #line) {
            XCTAssertThrowsError(try puller.resolve(spec), spec, line: line) { e in
                guard let e = e as? DogestryError else { return XCTFail("\(spec): \(e)", line: line) }
                XCTAssertEqual(e.kind, kind, "\(spec): \(e.message)", line: line)
                XCTAssertTrue(e.message.contains(text), "\(spec): \(e.message)", line: line)
            }
        }
        // base:v1 (c2f17583…) and multi (c978f9cf…) both start with "c".
        XCTAssertEqual(fx.images.values.filter { $0.id.hex.hasPrefix("c") }.map(\.id).reduce(into: Set<Digest>()) { $0.insert($1) }.count, 2)
        fails("c", .invalidInput, "ambiguous")
        fails("000000000000", .notFound, "000000000000")
        fails("dogestry-test/nope:v1", .notFound, "dogestry-test/nope:v1")
        fails("dogestry-test/base", .notFound, "dogestry-test/base:latest")
        fails("dogestry-test/app@\(Digest.of("nothing"))", .notFound, Digest.of("nothing").description)
        fails("Dogestry-test/app", .invalidInput, "Dogestry-test/app")
    }

    func testPullBySpecThroughTheCLI() throws {
        let remote = try populatedRemote()
        let cwd = try CLITest.makeTempDir(self, "cwd"), out = try CLITest.makeTempDir(self, "pulled")
        let md1 = try XCTUnwrap(try Repository(remote: remote).readRef(name: "dogestry-test/app", tag: "v1"))
        let app1 = fx.images["dogestry-test/app:v1"]!, app2 = fx.images["dogestry-test/app:v2"]!
        let cases: [(String, Digest, [String])] = [
            ("dogestry-test/app", app2.id, ["dogestry-test/app:latest"]),
            ("dogestry-test/app:v1", app1.id, ["dogestry-test/app:v1"]),
            ("dogestry-test/app@\(md1)", app1.id, []),
            (app1.id.short, app1.id, ["dogestry-test/app:v1"]),
        ]
        for (n, (spec, id, tags)) in cases.enumerated() {
            let path = out + "/\(n).tar"
            let r = try CLITest.runDogestry(["pull", "-q", remote.root, spec, "--archive", path], cwd: cwd)
            XCTAssertEqual(r.status, 0, "\(spec): \(r.stderr)")
            let images = try CLITest.readArchive(path)
            XCTAssertEqual(images.map(\.id), [id], spec)
            XCTAssertEqual(images.first?.repoTags, tags, spec)
            XCTAssertEqual(images.first?.config.diffIDs, fx.images.values.first { $0.id == id }?.diffIDs, spec)
        }
        for (spec, text) in [("c", "ambiguous"), ("000000000000", "no image with ID 000000000000"), ("dogestry-test/nope", "dogestry-test/nope:latest")] {
            let path = out + "/bad.tar"
            let r = try CLITest.runDogestry(["pull", "-q", remote.root, spec, "--archive", path], cwd: cwd)
            XCTAssertNotEqual(r.status, 0, spec)
            XCTAssertEqual(r.stderrLines.count, 1, "\(spec): \(r.stderr)")
            XCTAssertTrue(r.stderr.hasPrefix("dogestry: error: ") && r.stderr.contains(text), "\(spec): \(r.stderr)")
            XCTAssertFalse(FS.exists(path), "\(spec): an output file was created")
        }
        XCTAssertEqual(CLITest.filesUnder(out).filter { $0.contains(".partial") }, [])
    }

    /// Several images (with shared layers and two tags of one image) in one pulled archive.
    func testPullSeveralImagesIntoOneArchive() throws {
        let remote = try populatedRemote()
        let out = try CLITest.makeTempDir(self, "pulled")
        let refs = ["dogestry-test/base:v1", "dogestry-test/app:v1", "dogestry-test/app:v2", "dogestry-test/multi:a", "dogestry-test/multi:b"]
        let report = try CLITest.libraryPull(refs, from: remote, to: out + "/all.tar")
        XCTAssertEqual(report.images.count, 4)
        XCTAssertEqual(report.layersFetched, 6, "shared layers are fetched once")
        try assertArchive(out + "/all.tar", holds: refs, context: "five refs")
        // The same image named twice (by tag and by ID) is one image with the union of its tags.
        let app1 = fx.images["dogestry-test/app:v1"]!
        let r2 = try CLITest.libraryPull(["dogestry-test/app:v1", app1.id.short, "dogestry-test/app:v1"], from: remote, to: out + "/same.tar")
        XCTAssertEqual(r2.images.count, 1)
        try assertArchive(out + "/same.tar", holds: ["dogestry-test/app:v1"], context: "same image thrice")
    }

    // MARK: compressed archives

    /// `docker save | gzip` (and bzip2, xz, zstd) archives, made by the real tools, push from a
    /// file and from standard input to the same manifests as the plain archive, and pull back.
    func testCompressedArchivesPushFromFileAndStdin() throws {
        let cwd = try CLITest.makeTempDir(self, "cwd"), dir = try CLITest.makeTempDir(self, "compressed")
        for name in ["docker-legacy.tar", "podman.tar", "oci-docker25.tar"] {
            let plainRemote = try newRemote()
            try CLITest.libraryPush(fx.path(name), to: plainRemote)
            let want = try Repository(remote: plainRemote).listRefs()
            XCTAssertFalse(want.isEmpty, name)
            for (tool, ext) in [("gzip", "gz"), ("bzip2", "bz2"), ("xz", "xz"), ("zstd -q", "zst")] {
                let packed = dir + "/\(name).\(ext)"
                let made = try CLITest.runProcess("/bin/sh", ["-c", "\(tool) -c \"$0\" > \"$1\"", fx.path(name), packed])
                XCTAssertEqual(made.status, 0, "\(tool): \(made.stderr)")
                for fromStdin in [false, true] {
                    let ctx = "\(name).\(ext)" + (fromStdin ? " from stdin" : "")
                    let remote = try newRemote()
                    let push = try CLITest.runDogestry(["push", "-q", remote.root, "--archive", fromStdin ? "-" : packed],
                                                       cwd: cwd, stdinPath: fromStdin ? packed : nil)
                    XCTAssertEqual(push.status, 0, "\(ctx): \(push.stderr)")
                    XCTAssertEqual(try Repository(remote: remote).listRefs(), want, ctx)
                    let ref = want[0].reference.description
                    let out = dir + "/pulled-\(ext)-\(fromStdin).tar"
                    try? FileManager.default.removeItem(atPath: out)
                    let pull = try CLITest.runDogestry(["pull", "-q", remote.root, ref, "--archive", out], cwd: cwd)
                    XCTAssertEqual(pull.status, 0, "\(ctx): \(pull.stderr)")
                    try assertArchive(out, holds: [ref], context: ctx)
                }
            }
        }
        // A truncated compressed archive fails naming the archive and its compression.
        let cut = dir + "/cut.tar.xz"
        let whole = try Data(contentsOf: URL(fileURLWithPath: dir + "/docker-legacy.tar.xz"))
        try whole.prefix(whole.count / 2).write(to: URL(fileURLWithPath: cut))
        let r = try CLITest.runDogestry(["push", "-q", try newRemote().root, "--archive", cut], cwd: cwd)
        XCTAssertEqual(r.status, 1)
        XCTAssertEqual(r.stderr, "dogestry: error: archive \(cut) (xz-compressed): xz stream is truncated\n")
    }

    // MARK: standard input and output

    func testCLIPushFromStdinAndPullToStdout() throws {
        let remote = try newRemote(), cwd = try CLITest.makeTempDir(self, "cwd"), out = try CLITest.makeTempDir(self, "pulled")
        let push = try CLITest.runDogestry(["push", "-q", remote.root, "--archive", "-"], cwd: cwd, stdinPath: fx.path("podman-app-v1.tar"))
        XCTAssertEqual(push.status, 0, push.stderr)
        XCTAssertEqual(push.stderr, "")
        // Podman's archive names it docker.io/dogestry-test/app; it is stored, and pulled, as dogestry-test/app.
        let ref = "dogestry-test/app:v1"
        XCTAssertNotNil(try remote.stat("repositories/dogestry-test/app/_tags/v1"))
        XCTAssertNotNil(try Repository(remote: remote).readRef(name: "docker.io/dogestry-test/app", tag: "v1"))

        // Pull to standard output: stdout is exactly the archive (messages go to stderr).
        let path = out + "/stdout.tar"
        let pull = try CLITest.runDogestry(["pull", remote.root, ref, "--archive", "-"], cwd: cwd, stdoutPath: path)
        XCTAssertEqual(pull.status, 0, pull.stderr)
        XCTAssertTrue(pull.stderr.contains("pulled \(ref)"), pull.stderr)
        try assertArchive(path, holds: [ref], context: "pull to stdout")

        // That output pushed back from stdin into another remote gives the same manifest.
        let remote2 = try newRemote()
        let again = try CLITest.runDogestry(["push", remote2.root, "--archive", "-", "--json"], cwd: cwd, stdinPath: path)
        XCTAssertEqual(again.status, 0, again.stderr)
        let r1 = try Repository(remote: remote).readRef(name: "docker.io/dogestry-test/app", tag: "v1")
        let r2 = try Repository(remote: remote2).readRef(name: "docker.io/dogestry-test/app", tag: "v1")
        XCTAssertNotNil(r1)
        XCTAssertEqual(r1, r2, "re-pushing a pulled archive gives the same manifest digest")

        // Selecting an image from stdin by name and by ID prefix.
        let remote3 = try newRemote()
        let sel = try CLITest.runDogestry(["push", "-q", remote3.root, "dogestry-test/multi:b", fx.images["dogestry-test/app:v2"]!.id.short,
                                   "--archive", "-"], cwd: cwd, stdinPath: fx.path("docker-legacy.tar"))
        XCTAssertEqual(sel.status, 0, sel.stderr)
        XCTAssertEqual(try Repository(remote: remote3).listRefs().map { "\($0.name):\($0.tag)" }, ["dogestry-test/app:v2", "dogestry-test/multi:b"])
        XCTAssertEqual(CLITest.filesUnder(cwd), [])
    }
}
