import DogestryCore
import DogestryEngine
import DogestryRemotes
import DogestrySync
import DogestryTestSupport
import Foundation
import XCTest

/// Push from and pull into the real engines (dockerd and podman from scripts/lib/engines.sh),
/// through a local-directory remote, with the library API and the CLI.
///
/// Every test derives its own images from the fixtures (a unique label, so a unique image ID,
/// and where it matters a unique top layer) and removes them at the end, so tests do not
/// disturb each other or other test classes sharing the engines.
final class EngineSyncTests: EngineRemoteTestCase {
    override var namePrefix: String { "sync" }
    typealias CountingRemote = EngineTestSupport.CountingRemote

    static let badHost = "unix:///nonexistent.sock"

    // MARK: helpers

    /// A fresh local remote in a temp directory, removed when the test ends.
    func makeRemote() throws -> (path: String, remote: LocalRemote) {
        let dir = try S.makeTempDirectory("dg-sync-remote")
        addTeardownBlock { try? FileManager.default.removeItem(atPath: dir) }
        return (dir, try LocalRemote(path: dir))
    }

    func makeWorkDirectory() throws -> String {
        let dir = try S.makeTempDirectory("dg-sync-cli")
        addTeardownBlock { try? FileManager.default.removeItem(atPath: dir) }
        return dir
    }

    func blobKeys(_ remote: Remote) throws -> Set<String> { try S.keys(remote, prefix: Repository.blobsPrefix) }

    func sortedTags(_ i: EngineImage?) -> [String] { (i?.repoTags ?? []).sorted() }

    // MARK: 1. push → remove → pull round trip

    func roundTrip(_ engine: EngineClient) throws {
        let image = try makeImage("docker-app-v1.tar", "roundtrip")
        try load(image, into: engine)
        let before = try XCTUnwrap(try engine.inspectImage(image.id.hex))
        XCTAssertEqual(before.id, image.id)
        XCTAssertEqual(before.diffIDs, image.diffIDs)
        XCTAssertEqual(before.diffIDs.count, 4)
        XCTAssertTrue(before.repoTags.contains { $0.hasSuffix(image.tag) }, "\(before.repoTags)")

        let (_, remote) = try makeRemote()
        let push = try enginePush([image.tag], from: engine, to: remote)
        XCTAssertEqual(push.images.map { $0.id }, [image.id])
        XCTAssertEqual(push.images.first?.tags, [image.tag])
        XCTAssertEqual(push.layersUploaded, 4)
        XCTAssertEqual(push.layersPresent, 0)

        try engine.removeImage(image.id.hex, force: true)
        XCTAssertNil(try engine.inspectImage(image.id.hex), "\(engine.address): the image survived its removal")

        let (report, results, _) = try enginePull([image.tag], from: remote, into: [engine])
        XCTAssertEqual(results.count, 1)
        XCTAssertNil(results[0].error, "\(results[0].error ?? "")")
        XCTAssertEqual(report.images.map { $0.id }, [image.id])
        let after = try XCTUnwrap(try engine.inspectImage(image.id.hex), "\(engine.address): image missing after the pull")
        XCTAssertEqual(after.id, before.id)
        XCTAssertEqual(after.diffIDs, before.diffIDs)
        XCTAssertEqual(sortedTags(after), sortedTags(before))
        XCTAssertEqual(try engine.inspectImage(image.tag)?.id, image.id)
    }

    func testRoundTripDocker() throws {
        try roundTrip(try S.docker())
    }

    func testRoundTripPodman() throws {
        try roundTrip(try S.podman())
    }

    // MARK: 2. incremental push

    func testPushOfV2AfterV1UploadsOnlyTheChangedLayer() throws {
        let docker = try S.docker()
        let v1 = try makeImage("docker-app-v1.tar", "incr-v1")
        let v2 = try makeImage("docker-app-v2.tar", "incr-v2", uniqueTopLayer: true)
        XCTAssertEqual(Array(v1.diffIDs.prefix(3)), Array(v2.diffIDs.prefix(3)))
        XCTAssertNotEqual(v1.diffIDs[3], v2.diffIDs[3])
        try load(v1, into: docker)
        try load(v2, into: docker)

        let (_, remote) = try makeRemote()
        let first = try enginePush([v1.tag], from: docker, to: remote)
        XCTAssertEqual(first.layersUploaded, 4)
        let blobsBefore = try blobKeys(remote)
        let indexBefore = try S.keys(remote, prefix: Repository.diffIDPrefix)

        let report = try enginePush([v2.tag], from: docker, to: remote)
        XCTAssertEqual(report.layersUploaded, 1)
        XCTAssertEqual(report.layersPresent, 3)
        XCTAssertEqual(report.blobsWritten, 3, "one layer, the config and the manifest")
        let pushed = try XCTUnwrap(report.images.first)
        XCTAssertEqual(pushed.id, v2.id)

        let repo = Repository(remote: remote)
        let manifest = try repo.readManifest(pushed.manifest)
        XCTAssertEqual(manifest.layers.map { $0.diffID }, v2.diffIDs)
        let top = manifest.layers[3]
        XCTAssertEqual(report.bytesUploaded, top.size)
        XCTAssertEqual(try remote.stat(Repository.blobKey(top.digest))?.size, top.size)

        let added = try blobKeys(remote).subtracting(blobsBefore)
        XCTAssertEqual(added, [Repository.blobKey(top.digest), Repository.blobKey(v2.id), Repository.blobKey(pushed.manifest)])
        XCTAssertEqual(try S.keys(remote, prefix: Repository.diffIDPrefix).subtracting(indexBefore), [Repository.diffIDKey(v2.diffIDs[3])])
        XCTAssertEqual(try repo.readRef(name: v2.name, tag: v2.tagPart), pushed.manifest)
        // v1's layers are shared, not copied.
        let m1 = try repo.readManifest(try XCTUnwrap(first.images.first).manifest)
        XCTAssertEqual(Array(m1.layers.prefix(3).map { $0.digest }), Array(manifest.layers.prefix(3).map { $0.digest }))
    }

    // MARK: 3. incremental pull

    func testPullOfV2IntoDockerHoldingV1ReadsOnlyTheChangedLayer() throws {
        let docker = try S.docker()
        let v1 = try makeImage("docker-app-v1.tar", "pull-v1")
        let v2 = try makeImage("docker-app-v2.tar", "pull-v2", uniqueTopLayer: true)
        let (path, _) = try makeRemote()
        let counting = CountingRemote(try LocalRemote(path: path))
        try v1.push(to: counting)
        try v2.push(to: counting)
        try load(v1, into: docker)
        removeAtEnd(v2, from: [docker])
        XCTAssertNil(try docker.inspectImage(v2.id.hex))

        counting.reset()
        var readWhileResolving: [String: Int64] = [:]
        let (report, results, resolved) = try enginePull([v2.tag], from: counting, into: [docker]) {
            readWhileResolving = counting.bytesRead
            counting.reset()
        }
        XCTAssertNil(results[0].error, "\(results[0].error ?? "")")
        let m = try XCTUnwrap(resolved.first).manifest
        let layerKeys = m.layers.map { Repository.blobKey($0.digest) }
        let read = counting.bytesRead

        // Only the top layer's blob was read, whole, once.
        XCTAssertEqual(counting.bytesRead(keys: layerKeys), m.layers[3].size)
        XCTAssertEqual(read[layerKeys[3]], m.layers[3].size)
        for k in layerKeys.prefix(3) { XCTAssertNil(read[k], "base layer \(k) was read") }
        XCTAssertEqual(counting.opens[layerKeys[3]], 1)
        // Manifest and config are read to resolve the image, and they are small.
        let small = readWhileResolving.merging(read.filter { !layerKeys.contains($0.key) }) { $0 + $1 }
        XCTAssertTrue(small.keys.allSatisfy { !layerKeys.contains($0) }, "\(small)")
        XCTAssertTrue(small.keys.contains(Repository.blobKey(v2.id)), "\(small)")
        XCTAssertLessThan(small.values.reduce(0, +), 64 * 1024)

        XCTAssertEqual(report.layersFetched, 1)
        XCTAssertEqual(report.bytesFetched, m.layers[3].size)
        XCTAssertEqual(results[0].layersFetched, 1)
        XCTAssertEqual(results[0].layersPresent, 3)
        let got = try XCTUnwrap(try docker.inspectImage(v2.id.hex))
        XCTAssertEqual(got.diffIDs, v2.diffIDs)
        XCTAssertTrue(got.repoTags.contains(v2.tag), "\(got.repoTags)")
        XCTAssertNotNil(try docker.inspectImage(v1.id.hex), "v1 must be untouched")
    }

    func testPullOfV2IntoPodmanHoldingV1() throws {
        let podman = try S.podman()
        let v1 = try makeImage("docker-app-v1.tar", "ppull-v1")
        let v2 = try makeImage("docker-app-v2.tar", "ppull-v2", uniqueTopLayer: true)
        let (path, _) = try makeRemote()
        let counting = CountingRemote(try LocalRemote(path: path))
        try v1.push(to: counting)
        try v2.push(to: counting)
        try load(v1, into: podman)
        removeAtEnd(v2, from: [podman])

        let (report, results, resolved) = try enginePull([v2.tag], from: counting, into: [podman]) { counting.reset() }
        XCTAssertNil(results[0].error, "\(results[0].error ?? "")")
        XCTAssertTrue(results[0].engine.hasPrefix("podman"), results[0].engine)
        // Podman needs every layer in the archive.
        XCTAssertEqual(results[0].layersFetched, 4)
        XCTAssertEqual(report.layersFetched, 4)
        let m = try XCTUnwrap(resolved.first).manifest
        XCTAssertEqual(counting.bytesRead(keys: m.layers.map { Repository.blobKey($0.digest) }), m.layers.reduce(0) { $0 + $1.size })
        let got = try XCTUnwrap(try podman.inspectImage(v2.id.hex))
        XCTAssertEqual(got.diffIDs, v2.diffIDs)
        XCTAssertTrue(got.repoTags.contains { $0.hasSuffix(v2.tag) }, "\(got.repoTags)")
        XCTAssertNotNil(try podman.inspectImage(v1.id.hex))
    }

    // MARK: 4. no-op push

    func testNoOpPushExportsNothing() throws {
        let docker = try S.docker()
        let image = try makeImage("docker-app-v1.tar", "noop")
        try load(image, into: docker)
        let proxy = try S.RequestLogProxy(target: docker.address)
        defer { proxy.stop() }
        let viaProxy = try EngineClient(address: try proxy.address)

        // The first push exports (and the proxy sees it)…
        let (_, remote) = try makeRemote()
        let first = try enginePush([image.tag], from: viaProxy, to: remote, exportOnly: true)
        XCTAssertEqual(first.layersUploaded, 4)
        XCTAssertTrue(proxy.log.contains("/images/get"), "the proxy did not see the first push's export: \(proxy.requestLines)")
        let blobsBefore = try blobKeys(remote)

        // …the second has nothing to do and exports nothing.
        proxy.clearLog()
        let report = try enginePush([image.tag], from: viaProxy, to: remote)
        XCTAssertEqual(report.layersUploaded, 0)
        XCTAssertEqual(report.layersPresent, 4)
        XCTAssertEqual(report.blobsWritten, 0)
        XCTAssertEqual(report.bytesUploaded, 0)
        XCTAssertEqual(report.images.map { $0.id }, [image.id])
        XCTAssertEqual(report.images.first?.manifest, first.images.first?.manifest)
        XCTAssertEqual(try blobKeys(remote), blobsBefore)

        let lines = proxy.requestLines
        XCTAssertTrue(lines.contains { $0.contains("/images/") && $0.contains("/json") },
                      "the push did not go through the proxy: \(lines)")
        XCTAssertFalse(proxy.log.contains("/images/get"), "a no-op push exported: \(lines)")
    }

    // MARK: 4b. layers from the engine's image store

    /// Warnings a push reported.
    final class Warnings: ProgressReporter, @unchecked Sendable {
        private let lock = NSLock()
        private var lines: [String] = []
        var all: [String] { lock.lock(); defer { lock.unlock() }; return lines }
        func report(_ event: ProgressEvent) {
            if case .warning(let w) = event { lock.lock(); lines.append(w); lock.unlock() }
        }
    }

    func testPushReadsTheImageStoreInsteadOfExporting() throws {
        let docker = try S.docker()
        let podman = try S.podman()
        let image = try makeImage("docker-app-v1.tar", "store")
        try load(image, into: docker)
        XCTAssertNil(podman.layerStore(), "Podman's store is not laid out as Docker's: its pushes export")
        let (proxy, viaProxy, fromStore) = try storePushMatchesExport(image, from: docker, driver: "overlay2")
        defer { proxy.stop() }

        // An image with the same layers and another config: only the config is read, from the store.
        let sfx = S.uniqueSuffix()
        let changed = try image.withConfig(tag: "dogestry-test/sync-store2:\(sfx)", label: sfx, cmd: ["/bin/echo", sfx])
        try load(changed, into: docker)
        proxy.clearLog()
        let c = try enginePush([changed.tag], from: viaProxy, to: fromStore)
        XCTAssertEqual(c.layersUploaded, 0)
        XCTAssertEqual(c.layersPresent, 4)
        XCTAssertEqual(c.images.map { $0.id }, [changed.id])
        XCTAssertEqual(try Repository(remote: fromStore).readConfig(changed.id).bytes, changed.config)
        XCTAssertFalse(proxy.log.contains("/images/get"), "a config-only push exported: \(proxy.requestLines)")

        // And what the store gave pulls into the other engine as the same image.
        removeAtEnd(image, from: [podman])
        let (_, results, _) = try enginePull([image.tag], from: fromStore, into: [podman])
        XCTAssertNil(results[0].error, results[0].error ?? "")
        XCTAssertEqual(try podman.inspectImage(image.id.hex)?.diffIDs, image.diffIDs)
    }

    /// The `vfs` storage driver keeps a layer's files at `vfs/dir/<cache-id>` (no `diff`): a dockerd
    /// of its own, started with `--storage-driver vfs`, must give a store push with no export and
    /// no warning, and the same manifest and blobs as its export.
    func testPushReadsAVfsImageStore() throws {
        let dir = try S.makeTempDirectory("dg-vfs")
        let dockerd = Process()
        dockerd.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        dockerd.arguments = ["dockerd", "--storage-driver", "vfs", "--iptables=false", "--ip6tables=false", "--bridge=none",
                             "-H", "unix://\(dir)/docker.sock", "--data-root", dir + "/root", "--exec-root", dir + "/exec",
                             "--pidfile", dir + "/docker.pid"]
        dockerd.standardInput = FileHandle.nullDevice
        dockerd.standardOutput = FileHandle.nullDevice
        XCTAssertTrue(FileManager.default.createFile(atPath: dir + "/dockerd.log", contents: nil))
        dockerd.standardError = try FileHandle(forWritingTo: URL(fileURLWithPath: dir + "/dockerd.log"))
        try dockerd.run()
        addTeardownBlock {
            ChildProcess.stop(dockerd, grace: 15)
            try? FileManager.default.removeItem(atPath: dir)
        }
        let vfs = try EngineClient(address: try EngineAddress(parsing: "unix://\(dir)/docker.sock"))
        let deadline = Date().addingTimeInterval(60)
        while (try? vfs.ping()) == nil {
            guard dockerd.isRunning, Date() < deadline else {
                let log = (try? String(contentsOfFile: dir + "/dockerd.log", encoding: .utf8)) ?? ""
                XCTFail("a dockerd with the vfs driver did not start: \(log.suffix(2000))")
                return
            }
            usleep(100_000)
        }
        let image = try makeImage("docker-app-v1.tar", "vfs")
        try load(image, into: vfs)
        let (proxy, _, _) = try storePushMatchesExport(image, from: vfs, driver: "vfs")
        proxy.stop()
    }

    /// Pushes the 4-layer `image` from `engine`, through a request-logging proxy, once from the
    /// engine's image store (laid out by `driver`) and once through its export, each to a fresh
    /// remote: the store push exports nothing and warns nothing, and both give the same manifest
    /// and blobs. Returns the proxy (the caller stops it), a client through it and the store
    /// push's remote.
    func storePushMatchesExport(_ image: S.Image, from engine: EngineClient, driver: String,
                                file: StaticString = #filePath, line: UInt = #line) throws
        -> (proxy: S.RequestLogProxy, client: EngineClient, remote: LocalRemote) {
        let proxy = try S.RequestLogProxy(target: engine.address)
        let viaProxy = try EngineClient(address: try proxy.address)
        let store = try XCTUnwrap(viaProxy.layerStore(), "the engine's image store is readable here (root, local socket)", file: file, line: line)
        XCTAssertEqual(store.driver, driver, file: file, line: line)

        let warnings = Warnings()
        let (_, fromStore) = try makeRemote()
        let a = try enginePush([image.tag], from: viaProxy, to: fromStore, progress: warnings)
        XCTAssertEqual(a.layersUploaded, 4, file: file, line: line)
        XCTAssertEqual(warnings.all, [], file: file, line: line)
        XCTAssertFalse(proxy.log.contains("/images/get"), "a push that could read the image store exported: \(proxy.requestLines)",
                       file: file, line: line)

        // The export gives the same layers, so the same blobs and manifest.
        let (_, fromExport) = try makeRemote()
        let b = try enginePush([image.tag], from: viaProxy, to: fromExport, exportOnly: true)
        XCTAssertTrue(proxy.log.contains("/images/get"), "the export-only push did not export: \(proxy.requestLines)", file: file, line: line)
        XCTAssertEqual(a.images.first?.manifest, b.images.first?.manifest, file: file, line: line)
        XCTAssertEqual(try blobKeys(fromStore), try blobKeys(fromExport), file: file, line: line)
        return (proxy, viaProxy, fromStore)
    }

    /// `[docker] read-image-store = false` and `--no-image-store` make the CLI export; by default it does not.
    func testImageStoreConfigKeyAndFlagWithTheCLI() throws {
        let docker = try S.docker()
        let image = try makeImage("docker-app-v1.tar", "storecli")
        try load(image, into: docker)
        let proxy = try S.RequestLogProxy(target: docker.address)
        defer { proxy.stop() }
        let dir = try makeWorkDirectory()
        let host = try proxy.address.description
        for (args, config, exports) in [([String](), "", false), ([], "[docker]\n    read-image-store = false\n", true),
                                        (["--no-image-store"], "", true), ([], "[docker]\n    read-image-store = true\n", false)] {
            try config.write(toFile: dir + "/dogestry.cfg", atomically: true, encoding: .utf8)
            let (path, _) = try makeRemote()
            proxy.clearLog()
            let r = try S.runCLI(["push", path, image.tag, "--host", host] + args, in: dir)
            XCTAssertEqual(r.status, 0, r.stderr)
            XCTAssertEqual(proxy.log.contains("/images/get"), exports, "\(args) \(config): \(proxy.requestLines)")
            XCTAssertTrue(r.stdout.contains("4 layer(s) uploaded"), r.stdout)
        }
    }

    func testAStoreThatLiesFallsBackToTheExportAndStoresNothingWrong() throws {
        let docker = try S.docker()
        let image = try makeImage("docker-app-v1.tar", "storelie")
        try load(image, into: docker)
        let real = try XCTUnwrap(docker.layerStore())
        // A copy of this image's part of the engine's store, with one byte of one layer's files changed.
        let root = try S.makeTempDirectory("dg-store-copy")
        addTeardownBlock { try? FileManager.default.removeItem(atPath: root) }
        func cp(_ rel: String) throws {
            let to = root + "/" + rel
            try FileManager.default.createDirectory(atPath: (to as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
            let p = Process()
            p.executableURL = URL(fileURLWithPath: "/bin/cp")
            p.arguments = ["-a", real.root + "/" + rel, to]
            try p.run(); p.waitUntilExit()
            XCTAssertEqual(p.terminationStatus, 0, "cp -a \(rel)")
        }
        let img = "image/\(real.driver)"
        try cp("\(img)/imagedb/content/sha256/\(image.id.hex)")
        var changed: String?
        for chain in Digest.chainIDs(image.diffIDs) {
            try cp("\(img)/layerdb/sha256/\(chain.hex)")
            let cache = try String(contentsOfFile: real.root + "/\(img)/layerdb/sha256/\(chain.hex)/cache-id", encoding: .utf8)
                .trimmingCharacters(in: .whitespacesAndNewlines)
            try cp("\(real.driver)/\(cache)/diff")
            guard changed == nil, let e = FileManager.default.enumerator(atPath: root + "/\(real.driver)/\(cache)/diff") else { continue }
            while let f = e.nextObject() as? String {
                let path = root + "/\(real.driver)/\(cache)/diff/" + f
                guard let attrs = try? FileManager.default.attributesOfItem(atPath: path), attrs[.type] as? FileAttributeType == .typeRegular,
                      let data = FileManager.default.contents(atPath: path), !data.isEmpty else { continue }
                var bytes = [UInt8](data); bytes[0] ^= 0xff
                XCTAssertTrue(FileManager.default.createFile(atPath: path, contents: Data(bytes)), "cannot change \(f)")
                changed = f
                break
            }
        }
        XCTAssertNotNil(changed, "no layer file to change")
        let lying = try XCTUnwrap(DockerLayerStore(root: root, driver: real.driver))

        let warnings = Warnings()
        let (_, remote) = try makeRemote()
        let r = try enginePush([image.tag], from: docker, to: remote, store: lying, progress: warnings)
        XCTAssertEqual(r.images.map { $0.id }, [image.id])
        XCTAssertEqual(r.layersUploaded, 4)
        XCTAssertTrue(warnings.all.contains { $0.contains("image store failed") && $0.contains("hashes to") && $0.contains("exporting it instead") },
                      "\(warnings.all)")
        // Nothing of the lie was stored: the remote holds exactly what an export-only push stores.
        let (_, clean) = try makeRemote()
        _ = try enginePush([image.tag], from: docker, to: clean, exportOnly: true)
        XCTAssertEqual(try blobKeys(remote), try blobKeys(clean))
        XCTAssertEqual(try S.keys(remote, prefix: "index/"), try S.keys(clean, prefix: "index/"))
    }

    // MARK: 5. config-only push

    func testConfigOnlyPushUploadsNoLayerAndPullsIntoTheOtherEngine() throws {
        let docker = try S.docker()
        let podman = try S.podman()
        let base = try makeImage("docker-app-v1.tar", "cfgonly")
        let sfx = S.uniqueSuffix()
        let changed = try base.withConfig(tag: "dogestry-test/sync-cfgonly2:\(sfx)", label: sfx, cmd: ["/bin/echo", "changed", sfx])
        XCTAssertEqual(changed.diffIDs, base.diffIDs)
        XCTAssertNotEqual(changed.id, base.id)
        try load(base, into: docker)
        try load(changed, into: docker)

        let (_, remote) = try makeRemote()
        XCTAssertEqual(try enginePush([base.tag], from: docker, to: remote).layersUploaded, 4)
        let blobsBefore = try blobKeys(remote)
        let indexBefore = try S.keys(remote, prefix: Repository.diffIDPrefix)

        let report = try enginePush([changed.tag], from: docker, to: remote)
        XCTAssertEqual(report.layersUploaded, 0)
        XCTAssertEqual(report.layersPresent, 4)
        XCTAssertEqual(report.bytesUploaded, 0)
        XCTAssertEqual(report.blobsWritten, 2, "config and manifest")
        let pushed = try XCTUnwrap(report.images.first)
        XCTAssertEqual(pushed.id, changed.id)
        XCTAssertEqual(try blobKeys(remote).subtracting(blobsBefore),
                       [Repository.blobKey(changed.id), Repository.blobKey(pushed.manifest)])
        XCTAssertEqual(try S.keys(remote, prefix: Repository.diffIDPrefix), indexBefore)
        let repo = Repository(remote: remote)
        XCTAssertEqual(try repo.readConfig(changed.id).bytes, changed.config)
        XCTAssertEqual(try repo.readRef(name: changed.name, tag: changed.tagPart), pushed.manifest)

        removeAtEnd(changed, from: [podman])
        let (_, results, _) = try enginePull([changed.tag], from: remote, into: [podman])
        XCTAssertNil(results[0].error, "\(results[0].error ?? "")")
        let got = try XCTUnwrap(try podman.inspectImage(changed.id.hex))
        XCTAssertEqual(got.diffIDs, changed.diffIDs)
        XCTAssertTrue(got.repoTags.contains { $0.hasSuffix(changed.tag) }, "\(got.repoTags)")
    }

    // MARK: 6. several engines at once

    func testPullhostsIntoBothEnginesWithTheCLI() throws {
        let docker = try S.docker()
        let podman = try S.podman()
        let image = try makeImage("docker-app-v2.tar", "pullhosts", uniqueTopLayer: true)
        let (path, remote) = try makeRemote()
        try image.push(to: remote)
        removeAtEnd(image, from: [docker, podman])

        let dir = try makeWorkDirectory()
        let r = try S.runCLI(["pull", path, image.tag, "--pullhosts", "\(docker.address),\(podman.address)", "--json"], in: dir)
        XCTAssertEqual(r.status, 0, r.stderr)
        let json = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as? [String: Any], r.stdout)
        let hosts = try XCTUnwrap(json["hosts"] as? [[String: Any]])
        XCTAssertEqual(hosts.count, 2)
        XCTAssertEqual(hosts.compactMap { $0["ok"] as? Bool }, [true, true], "\(hosts)")
        XCTAssertEqual(hosts.compactMap { $0["address"] as? String }, [docker.address.description, podman.address.description])
        for e in [docker, podman] {
            let got = try XCTUnwrap(try e.inspectImage(image.id.hex), "\(e.address): image missing")
            XCTAssertEqual(got.id, image.id)
            XCTAssertEqual(got.diffIDs, image.diffIDs)
            XCTAssertTrue(got.repoTags.contains { $0.hasSuffix(image.tag) }, "\(e.address): \(got.repoTags)")
        }
    }

    func testPullIntoTwoEnginesReadsEachBlobOnce() throws {
        let docker = try S.docker()
        let podman = try S.podman()
        let image = try makeImage("docker-app-v2.tar", "fanout", uniqueTopLayer: true)
        let (path, _) = try makeRemote()
        let counting = CountingRemote(try LocalRemote(path: path))
        try image.push(to: counting)
        removeAtEnd(image, from: [docker, podman])

        let (report, results, resolved) = try enginePull([image.tag], from: counting, into: [docker, podman]) { counting.reset() }
        for r in results { XCTAssertNil(r.error, "\(r.address): \(r.error ?? "")") }
        let m = try XCTUnwrap(resolved.first).manifest
        let layerKeys = Set(m.layers.map { Repository.blobKey($0.digest) })
        let distinctSize = Dictionary(m.layers.map { ($0.digest, $0.size) }, uniquingKeysWith: { a, _ in a }).values.reduce(0, +)
        // Podman needs every layer, so every layer blob is read — once, for both engines.
        XCTAssertEqual(counting.bytesRead(keys: Array(layerKeys)), distinctSize)
        XCTAssertEqual(report.bytesFetched, distinctSize)
        for k in layerKeys { XCTAssertEqual(counting.opens[k], 1, "\(k) opened \(counting.opens[k] ?? 0) times") }
        XCTAssertEqual(results.first { $0.engine.hasPrefix("podman") }?.layersFetched, 4)
        for e in [docker, podman] {
            XCTAssertEqual(try e.inspectImage(image.id.hex)?.diffIDs, image.diffIDs, "\(e.address)")
        }
    }

    // MARK: 7. one bad host among several

    func testPullhostsWithAnUnreachableHostStillFeedsTheOther() throws {
        let docker = try S.docker()
        XCTAssertFalse(FS.exists("/nonexistent.sock"))
        let image = try makeImage("docker-app-v1.tar", "badhost", uniqueTopLayer: true)
        let (path, remote) = try makeRemote()
        try image.push(to: remote)
        removeAtEnd(image, from: [docker])

        let dir = try makeWorkDirectory()
        let r = try S.runCLI(["pull", path, image.tag, "--pullhosts", "\(Self.badHost),\(docker.address)"], in: dir)
        XCTAssertNotEqual(r.status, 0, "exit status with an unreachable host")
        let naming = r.stderrLines.filter { $0.contains(Self.badHost) }
        XCTAssertEqual(naming.count, 1, "stderr: \(r.stderr)")
        XCTAssertTrue(naming.first?.hasPrefix("dogestry: error: ") ?? false, "stderr: \(r.stderr)")
        XCTAssertFalse(r.stderrLines.contains { $0.hasPrefix("dogestry: error:") && !$0.contains(Self.badHost) }, r.stderr)
        let got = try XCTUnwrap(try docker.inspectImage(image.id.hex), "the reachable engine did not get the image")
        XCTAssertEqual(got.diffIDs, image.diffIDs)
        XCTAssertTrue(got.repoTags.contains(image.tag), "\(got.repoTags)")
    }

    // MARK: 8. unreachable engine; DOCKER_HOST

    func testUnreachableEngineForPushAndPullWithTheCLI() throws {
        _ = try S.docker()
        let image = try makeImage("docker-app-v1.tar", "unreach")
        let (path, remote) = try makeRemote()
        try image.push(to: remote)
        let dir = try makeWorkDirectory()

        for args in [["push", path, image.tag, "--host", Self.badHost],
                     ["pull", path, image.tag, "--host", Self.badHost],
                     ["push", path, image.tag, "-H", Self.badHost]] {
            let r = try S.runCLI(args, in: dir)
            XCTAssertNotEqual(r.status, 0, "\(args)")
            let errors = r.stderrLines.filter { $0.hasPrefix("dogestry: error: ") }
            XCTAssertEqual(errors.count, 1, "\(args): stderr: \(r.stderr)")
            XCTAssertTrue(errors.first?.contains(Self.badHost) ?? false, "\(args): stderr: \(r.stderr)")
            XCTAssertEqual(r.stderrLines.filter { $0.contains(Self.badHost) }.count, 1, "\(args): stderr: \(r.stderr)")
        }
        // DOCKER_HOST too names the address it could not reach.
        let viaEnv = try S.runCLI(["push", path, image.tag], in: dir, environment: ["DOCKER_HOST": Self.badHost])
        XCTAssertNotEqual(viaEnv.status, 0)
        XCTAssertTrue(viaEnv.stderr.hasPrefix("dogestry: error: ") && viaEnv.stderr.contains(Self.badHost), viaEnv.stderr)
    }

    func testDockerHostEnvironmentIsHonoured() throws {
        let docker = try S.docker()
        let image = try makeImage("docker-app-v1.tar", "dockerhost")
        try load(image, into: docker)
        let (path, remote) = try makeRemote()
        let dir = try makeWorkDirectory()
        let env = ["DOCKER_HOST": docker.address.description]

        let push = try S.runCLI(["push", path, image.tag, "--json"], in: dir, environment: env)
        XCTAssertEqual(push.status, 0, push.stderr)
        let json = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(push.stdout.utf8)) as? [String: Any], push.stdout)
        XCTAssertEqual(json["layersUploaded"] as? Int, 4)
        let images = try XCTUnwrap(json["images"] as? [[String: Any]])
        XCTAssertEqual(images.first?["id"] as? String, image.id.description)
        let ref = try XCTUnwrap(try Repository(remote: remote).readRef(name: image.name, tag: image.tagPart))
        XCTAssertEqual(images.first?["manifest"] as? String, ref.description)

        try docker.removeImage(image.id.hex, force: true)
        let pull = try S.runCLI(["pull", path, image.tag], in: dir, environment: env)
        XCTAssertEqual(pull.status, 0, pull.stderr)
        XCTAssertEqual(try docker.inspectImage(image.tag)?.id, image.id)
    }

    // MARK: 9. corrupt blob

    func testCorruptLayerBlobFailsThePullAndLoadsNothing() throws {
        let docker = try S.docker()
        let image = try makeImage("docker-app-v2.tar", "corrupt", uniqueTopLayer: true)
        let (path, remote) = try makeRemote()
        let pushed = try XCTUnwrap(try image.push(to: remote).images.first)
        removeAtEnd(image, from: [docker])
        let top = try Repository(remote: remote).readManifest(pushed.manifest).layers[3]

        // Flip one byte in the middle of the top layer's blob.
        let file = path + "/" + Repository.blobKey(top.digest)
        var bytes = [UInt8](try Data(contentsOf: URL(fileURLWithPath: file)))
        bytes[bytes.count / 2] ^= 0x20
        try Data(bytes).write(to: URL(fileURLWithPath: file))

        let (_, results, _) = try enginePull([image.tag], from: remote, into: [docker])
        let error = try XCTUnwrap(results[0].error, "the pull of a corrupt blob succeeded")
        XCTAssertTrue(error.contains(top.digest.description), error)
        XCTAssertFalse(error.contains("\n"), error)
        XCTAssertNil(try docker.inspectImage(image.id.hex), "a corrupt pull left the image in the engine")
        XCTAssertNil(try docker.inspectImage(image.tag))

        // The CLI says the same, once, and fails.
        let r = try S.runCLI(["pull", path, image.tag, "--host", docker.address.description], in: try makeWorkDirectory())
        XCTAssertNotEqual(r.status, 0)
        let errors = r.stderrLines.filter { $0.hasPrefix("dogestry: error: ") }
        XCTAssertEqual(errors.count, 1, r.stderr)
        XCTAssertTrue(errors.first?.contains(top.digest.description) ?? false, r.stderr)
        XCTAssertNil(try docker.inspectImage(image.id.hex))
    }
}
