import DogestryCore
import DogestryHTTP
import DogestryRemotes
import DogestrySync
import Foundation
import XCTest

/// Keeping a remote healthy (issue 6): tag, rm, inspect, prune, verify — on the local remote, on S3
/// (SeaweedFS) and on Manta (the simulator), through the real `dogestry` executable where it matters,
/// including 4 pushing processes and a pruning one at the same time.
final class MaintenanceTests: XCTestCase {
    enum Backend: String { case local, s3, manta }

    /// A fresh, empty remote: the library's handle, the CLI's REMOTE argument, and where and how the CLI runs.
    struct Target {
        var backend: Backend
        var remote: Remote
        var arg: String
        /// The CLI's working directory; holds its dogestry.cfg.
        var cwd: String
        var env: [String: String]
    }

    // MARK: remotes

    nonisolated(unsafe) private static var s3Bucket: String?
    private static let bucketLock = NSLock()

    /// A fresh remote on `backend`; `config` is added to the CLI's dogestry.cfg.
    func target(_ backend: Backend, config: String = "") throws -> Target {
        let cwd = try CLITest.makeTempDir(self, "maint-cwd")
        var env = ["XDG_CONFIG_HOME": cwd + "/.xdg-none", "HOME": cwd]
        var cfg = config
        let remote: Remote, arg: String
        switch backend {
        case .local:
            let dir = try CLITest.makeTempDir(self, "maint-remote")
            remote = try LocalRemote(path: dir)
            arg = dir
        case .s3:
            let ep = try CLITest.requiredEnvironment("DOGESTRY_TEST_S3_ENDPOINT")
            let ak = try CLITest.requiredEnvironment("DOGESTRY_TEST_S3_ACCESS_KEY")
            let sk = try CLITest.requiredEnvironment("DOGESTRY_TEST_S3_SECRET_KEY")
            func make(_ bucket: String, _ prefix: String) throws -> S3Remote {
                try S3Remote(bucket: bucket, prefix: prefix, region: "us-east-1", endpoint: ep,
                             credentials: AWSStaticCredentialProvider(AWSCredentials(accessKeyID: ak, secretAccessKey: sk),
                                                                      sourceDescription: "test credentials"))
            }
            let bucket: String = try {
                Self.bucketLock.lock(); defer { Self.bucketLock.unlock() }
                if let b = Self.s3Bucket { return b }
                let b = "dogestry-maint-" + UUID().uuidString.lowercased().replacingOccurrences(of: "-", with: "").prefix(12)
                try make(b, "").createBucket()
                Self.s3Bucket = b
                return b
            }()
            let prefix = "maint/" + UUID().uuidString.lowercased()
            remote = try make(bucket, prefix)
            arg = "s3://\(bucket)/\(prefix)?endpoint=\(ep)"
            env["AWS_ACCESS_KEY_ID"] = ak
            env["AWS_SECRET_ACCESS_KEY"] = sk
        case .manta:
            let url = try CLITest.requiredEnvironment("DOGESTRY_TEST_MANTA_URL")
            let account = try CLITest.requiredEnvironment("DOGESTRY_TEST_MANTA_USER")
            let key = try CLITest.requiredEnvironment("DOGESTRY_TEST_MANTA_KEY")
            let root = "/\(account)/stor/maint-" + UUID().uuidString.lowercased()
            let hostPort = try XCTUnwrap(URLComponents(string: url)?.host) + (URLComponents(string: url)?.port.map { ":\($0)" } ?? "")
            arg = "manta://\(hostPort)\(root)"
            // The same settings the CLI resolves from its REMOTE argument and dogestry.cfg.
            let settings = try MantaSettings.resolve(remoteURL: arg, config: ["url": url, "private_key": key], environment: [:], home: cwd)
            XCTAssertEqual(settings.root, root)
            remote = try MantaRemote(settings: settings, retry: RetryPolicy(maxRetries: 3, baseDelay: 0.05))
            cfg += "\n[manta]\n    url = \(url)\n    private_key = \(key)\n"
        }
        if !cfg.isEmpty { try cfg.write(toFile: cwd + "/dogestry.cfg", atomically: true, encoding: .utf8) }
        return Target(backend: backend, remote: remote, arg: arg, cwd: cwd, env: env)
    }

    /// Runs the CLI against `t` (its cwd, config and environment).
    @discardableResult
    func run(_ t: Target, _ args: [String], stdoutPath: String? = nil) throws -> CLITest.ProcessResult {
        try CLITest.runProcess(try CLITest.dogestryBinary(), args, environment: t.env, stdoutPath: stdoutPath, cwd: t.cwd)
    }

    /// A JSON number as Int64.
    func num(_ v: Any?) -> Int64? { (v as? NSNumber)?.int64Value }

    func json(_ r: CLITest.ProcessResult, file: StaticString = #filePath, line: UInt = #line) throws -> [String: Any] {
        try XCTUnwrap(try JSONSerialization.jsonObject(with: r.stdout) as? [String: Any], "not JSON: \(r.stdoutText) \(r.stderr)", file: file, line: line)
    }

    /// Every object of a remote, by key.
    func listing(_ remote: Remote, _ prefix: String = "") throws -> [String: RemoteObject] {
        var out: [String: RemoteObject] = [:]
        try remote.list(prefix: prefix) { out[$0.key] = $0 }
        return out
    }

    // MARK: images

    /// An image of `tag` sharing the three bottom layers of docker-app-v1.tar; `top` picks its own top
    /// layer (images made with the same `top` value of one `Tops` share it), `label` its config.
    final class Tops {
        private var made: [String: [UInt8]] = [:]
        func layer(_ name: String, base: [UInt8]) throws -> [UInt8] {
            if let l = made[name] { return l }
            let l = try EngineTestSupport.appendFile(to: base, name: "dogestry-maint-\(name).txt",
                                                     bytes: Array("top layer \(name) \(UUID().uuidString)\n".utf8) + RemoteConformanceBytes.bytes(20_000, seed: UInt64(made.count + 7)))
            made[name] = l
            return l
        }
    }

    func image(_ tag: String, label: String, top: String, tops: Tops) throws -> EngineTestSupport.Image {
        var img = try EngineTestSupport.Image(fixture: "docker-app-v1.tar", tag: tag, label: label)
        img.layers[img.layers.count - 1] = try tops.layer(top, base: img.layers[img.layers.count - 1])
        // The config names the new top layer (rootfs.diff_ids) and carries the label.
        var cfg = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(img.config)) as? [String: Any])
        var rootfs = cfg["rootfs"] as? [String: Any] ?? ["type": "layers"]
        rootfs["diff_ids"] = img.diffIDs.map(\.description)
        cfg["rootfs"] = rootfs
        img.config = [UInt8](try JSONSerialization.data(withJSONObject: cfg, options: [.sortedKeys, .withoutEscapingSlashes]))
        return img
    }

    /// Writes an image's docker-save archive to a file.
    func archive(_ img: EngineTestSupport.Image, in dir: String) throws -> String {
        let path = dir + "/\(img.id.hex.prefix(16)).tar"
        try Data(try img.archive()).write(to: URL(fileURLWithPath: path))
        return path
    }

    /// The blobs reachable from the refs (manifests, configs, layers).
    func reachableBlobs(_ remote: Remote) throws -> Set<String> {
        let repo = Repository(remote: remote)
        var out = Set<String>()
        for r in try repo.listRefs() {
            let m = try repo.readManifest(r.manifest)
            out.insert(Repository.blobKey(r.manifest))
            out.insert(Repository.blobKey(m.config.digest))
            for l in m.layers { out.insert(Repository.blobKey(l.digest)) }
        }
        return out
    }

    /// Pulls `ref` through the CLI into an archive (every blob verified) and returns its image ID.
    func pulledID(_ t: Target, _ ref: String, file: StaticString = #filePath, line: UInt = #line) throws -> Digest? {
        let out = try CLITest.makeTempDir(self, "maint-pull")
        let r = try run(t, ["pull", "-q", t.arg, ref, "--archive", out + "/out.tar"])
        XCTAssertEqual(r.status, 0, "\(t.backend): pull \(ref): \(r.stderr)", file: file, line: line)
        guard r.status == 0 else { return nil }
        let images = try CLITest.readArchive(out + "/out.tar")
        XCTAssertEqual(images.count, 1, file: file, line: line)
        return images.first?.id
    }

    func assertVerifyDeepClean(_ t: Target, file: StaticString = #filePath, line: UInt = #line) throws {
        let v = try run(t, ["verify", t.arg, "--deep", "--json"])
        XCTAssertEqual(v.status, 0, "\(t.backend): verify --deep: \(v.stdoutText) \(v.stderr)", file: file, line: line)
        let j = try json(v, file: file, line: line)
        XCTAssertEqual(j["ok"] as? Bool, true, file: file, line: line)
        XCTAssertEqual((j["problems"] as? [Any])?.count, 0, "\(j["problems"] ?? "")", file: file, line: line)
        XCTAssertGreaterThan(((j["hashed"] as? [String: Any])?["blobs"] as? Int) ?? 0, 0, file: file, line: line)
    }

    // MARK: 4 pushers and a pruner at once

    /// 4 processes push builds of their own tag (sharing the bottom layers, and reusing one of four
    /// top layers in turn, so unreferenced layers get reused when about as old as the grace) while a 5th runs `prune --grace 3s`
    /// in a loop. Afterwards every tag pulls (verified) as its last build, `verify --deep` is clean,
    /// prune removed things during the run, and a final `prune --grace 0` leaves exactly the
    /// reachable blobs.
    func checkConcurrentPushesWhilePruning(_ backend: Backend) throws {
        // Pushes touch every old object they reuse (touch-after 0): the grace is a few seconds here.
        let t = try target(backend, config: "[prune]\n    touch-after = 0s\n")
        let dir = try CLITest.makeTempDir(self, "maint-archives")
        let pushers = 4, builds = 8
        var builtPlan: [[(path: String, id: Digest)]] = []
        for p in 0..<pushers {
            let tops = Tops()
            var list: [(String, Digest)] = []
            for b in 0..<builds {
                let img = try image("maint/app:p\(p)", label: "p\(p)-b\(b)", top: "p\(p)-v\(b % 4)", tops: tops)
                list.append((try archive(img, in: dir), img.id))
            }
            builtPlan.append(list)
        }
        final class State: @unchecked Sendable {
            let lock = NSLock()
            var failures: [String] = []
            var pushesDone = 0
            var startedOver = 0
            var pruneRuns: [[String: Any]] = []
            func locked(_ body: (State) -> Void) { lock.lock(); body(self); lock.unlock() }
        }
        let state = State()
        let plan = builtPlan
        let group = DispatchGroup()
        let exe = try CLITest.dogestryBinary()
        for p in 0..<pushers {
            group.enter()
            Thread.detachNewThread {
                defer { group.leave() }
                for (i, b) in plan[p].enumerated() {
                    if i > 0 { Thread.sleep(forTimeInterval: 0.6) }
                    do {
                        let r = try CLITest.runProcess(exe, ["push", t.arg, "--archive", b.path], environment: t.env, cwd: t.cwd)
                        state.locked {
                            if r.status != 0 { $0.failures.append("pusher \(p) build \(i): \(r.stderr)") } else { $0.pushesDone += 1 }
                            $0.startedOver += r.stderrLines.filter { $0.contains("starting over") }.count
                        }
                    } catch { state.locked { $0.failures.append("pusher \(p): \(error)") } }
                }
            }
        }
        let pushersDone = DispatchSemaphore(value: 0)
        let prunerDone = DispatchSemaphore(value: 0)
        Thread.detachNewThread {
            defer { prunerDone.signal() }
            while true {
                do {
                    let r = try CLITest.runProcess(exe, ["prune", t.arg, "--grace", "3s", "--force", "--json"], environment: t.env, cwd: t.cwd)
                    let j = try? JSONSerialization.jsonObject(with: r.stdout) as? [String: Any]
                    state.locked {
                        if r.status != 0 { $0.failures.append("prune: \(r.stderr)") } else if let j { $0.pruneRuns.append(j) } else {
                            $0.failures.append("prune printed no JSON: \(r.stdoutText)")
                        }
                    }
                } catch { state.locked { $0.failures.append("prune: \(error)") } }
                if pushersDone.wait(timeout: .now() + 0.25) == .success { return }
            }
        }
        group.wait()
        pushersDone.signal()
        prunerDone.wait()

        let failures = state.failures, pushesDone = state.pushesDone, pruneRuns = state.pruneRuns
        XCTAssertEqual(failures, [], "\(backend)")
        XCTAssertEqual(pushesDone, pushers * builds, "\(backend)")
        XCTAssertGreaterThan(pruneRuns.count, 1, "\(backend): prune ran in a loop")
        let removedBlobs = pruneRuns.reduce(0) { $0 + ((($1["counts"] as? [String: Any])?["blobs"] as? Int) ?? 0) }
        let removedIndex = pruneRuns.reduce(0) { $0 + ((($1["counts"] as? [String: Any])?["index"] as? Int) ?? 0) }
        XCTAssertGreaterThan(removedBlobs, 0, "\(backend): prune removed nothing while the pushes ran (\(pruneRuns.count) runs)")
        print("\(backend): \(pushesDone) pushes (\(state.startedOver) started over), \(pruneRuns.count) prune runs removed \(removedBlobs) blobs and \(removedIndex) index entries meanwhile")

        // Every ref pulls, verified, as its pusher's last build.
        let refs = try Repository(remote: t.remote).listRefs()
        XCTAssertEqual(refs.map { "\($0.name):\($0.tag)" }, (0..<pushers).map { "maint/app:p\($0)" }, "\(backend)")
        for p in 0..<pushers {
            XCTAssertEqual(try pulledID(t, "maint/app:p\(p)"), plan[p].last!.id, "\(backend): maint/app:p\(p)")
        }
        try assertVerifyDeepClean(t)

        // With nobody pushing, grace 0 leaves exactly what the refs reach.
        let last = try run(t, ["prune", t.arg, "--grace", "0", "--force", "--json"])
        XCTAssertEqual(last.status, 0, last.stderr)
        XCTAssertEqual(Set(try listing(t.remote, Repository.blobsPrefix).keys), try reachableBlobs(t.remote), "\(backend)")
        try assertVerifyDeepClean(t)
        XCTAssertEqual(try pulledID(t, "maint/app:p0"), plan[0].last!.id, "\(backend)")
    }

    func testConcurrentPushesWhilePruningLocal() throws { try checkConcurrentPushesWhilePruning(.local) }
    func testConcurrentPushesWhilePruningS3() throws { try checkConcurrentPushesWhilePruning(.s3) }
    func testConcurrentPushesWhilePruningManta() throws { try checkConcurrentPushesWhilePruning(.manta) }

    // MARK: a flipped bit

    /// A layer blob with one bit flipped (written back through the remote's own put) is found by
    /// `verify --deep` — not by a plain `verify`, which checks presence and sizes — and refused by `pull`.
    func checkFlippedBit(_ backend: Backend) throws {
        let t = try target(backend)
        let tops = Tops()
        let img = try image("maint/flip:1", label: "flip", top: "flip", tops: tops)
        try img.push(to: t.remote)
        let other = try image("maint/fine:1", label: "fine", top: "fine", tops: tops)
        try other.push(to: t.remote)
        let repo = Repository(remote: t.remote)
        let m = try repo.readManifest(try XCTUnwrap(try repo.readRef(name: "maint/flip", tag: "1")))
        let top = try XCTUnwrap(m.layers.last)
        var bytes = try t.remote.read(Repository.blobKey(top.digest))
        bytes[bytes.count / 2] ^= 0x08
        try t.remote.put(Repository.blobKey(top.digest), bytes: bytes)
        let got = Digest.of(bytes)

        let plain = try run(t, ["verify", t.arg])
        XCTAssertEqual(plain.status, 0, "\(backend): a plain verify checks sizes only: \(plain.stdoutText)")
        let deep = try run(t, ["verify", t.arg, "--deep"])
        XCTAssertEqual(deep.status, 1, "\(backend): \(deep.stdoutText)")
        XCTAssertEqual(deep.stdoutText.split(separator: "\n").filter { $0.contains("(corrupt)") },
                       ["blob \(top.digest): content hashes to \(got) (corrupt)"], "\(backend): \(deep.stdoutText)")
        XCTAssertTrue(deep.stderr.contains("dogestry: error: 1 problem(s) on "), deep.stderr)
        // Restricted to the image, and as JSON.
        let one = try run(t, ["verify", t.arg, "maint/flip:1", "--deep", "--json"])
        XCTAssertEqual(one.status, 1)
        let j = try json(one)
        XCTAssertEqual(j["ok"] as? Bool, false)
        let problems = try XCTUnwrap(j["problems"] as? [[String: Any]])
        XCTAssertEqual(problems.map { $0["kind"] as? String }, ["blob-corrupt"])
        XCTAssertEqual(problems.first?["object"] as? String, top.digest.description)
        // The other image shares the bottom layers and is fine.
        XCTAssertEqual(try run(t, ["verify", t.arg, "maint/fine:1", "--deep"]).status, 0)

        let out = try CLITest.makeTempDir(self, "maint-flip")
        let pull = try run(t, ["pull", "-q", t.arg, "maint/flip:1", "--archive", out + "/flip.tar"])
        XCTAssertNotEqual(pull.status, 0, "\(backend): pull of a corrupt blob succeeded")
        XCTAssertTrue(pull.stderr.contains("layer blob \(top.digest)") && pull.stderr.contains("corrupt"), pull.stderr)
        XCTAssertEqual(CLITest.filesUnder(out), [], "\(backend): a pulled archive was left behind")
        XCTAssertEqual(try pulledID(t, "maint/fine:1"), other.id)
    }

    func testFlippedBitFoundByVerifyDeepAndRefusedByPullLocal() throws { try checkFlippedBit(.local) }
    func testFlippedBitFoundByVerifyDeepAndRefusedByPullS3() throws { try checkFlippedBit(.s3) }
    func testFlippedBitFoundByVerifyDeepAndRefusedByPullManta() throws { try checkFlippedBit(.manta) }

    // MARK: dry run; the last tag

    /// `prune --dry-run` lists what would go and deletes nothing (the listing is identical, times
    /// included); the real prune then removes exactly that. Removing the last tag of an image and
    /// pruning with grace 0 frees exactly its unshared blobs: its manifest, config and top layer
    /// (and the top layer's index entry), as many bytes as `inspect` called unique.
    func checkDryRunAndLastTag(_ backend: Backend) throws {
        let t = try target(backend)
        let tops = Tops()
        let a = try image("maint/a:1", label: "a", top: "a", tops: tops)
        let b = try image("maint/b:1", label: "b", top: "b", tops: tops)
        try a.push(to: t.remote)
        try b.push(to: t.remote)
        XCTAssertEqual(try run(t, ["tag", "-q", t.arg, "maint/a:1", "maint/a:2"]).status, 0)

        // inspect: three shared layers, one unique.
        let ins = try run(t, ["inspect", t.arg, "maint/a:1", "--json"])
        XCTAssertEqual(ins.status, 0, ins.stderr)
        let ij = try json(ins)
        let layers = try XCTUnwrap(ij["layers"] as? [[String: Any]])
        XCTAssertEqual(layers.map { $0["shared"] as? Bool }, [true, true, true, false])
        XCTAssertEqual(ij["tags"] as? [String], ["maint/a:1", "maint/a:2"])
        let unique = try XCTUnwrap(num(ij["uniqueBytes"]))

        let repo = Repository(remote: t.remote)
        let md = try XCTUnwrap(try repo.readRef(name: "maint/a", tag: "1"))
        let m = try repo.readManifest(md)
        let topDiffID = try XCTUnwrap(a.diffIDs.last)
        let expectedBlobs: Set<String> = [Repository.blobKey(md), Repository.blobKey(m.config.digest), Repository.blobKey(m.layers.last!.digest)]
        let before = try listing(t.remote)
        let expectedBytes = expectedBlobs.reduce(Int64(0)) { $0 + before[$1]!.size }
        XCTAssertEqual(unique, expectedBytes, "\(backend): inspect's unique bytes")

        // One tag removed: nothing to prune yet.
        let rm1 = try run(t, ["rm", t.arg, "maint/a:1"])
        XCTAssertEqual(rm1.status, 0, rm1.stderr)
        XCTAssertEqual(rm1.stdoutText, "untagged maint/a:1 (was \(md))\n")
        let p0 = try json(try run(t, ["prune", t.arg, "--grace", "0", "--force", "--json"]))
        XCTAssertEqual((p0["removed"] as? [Any])?.count, 0, "\(backend): \(p0)")

        // The last tag removed: the dry run lists, deletes nothing.
        XCTAssertEqual(try run(t, ["rm", "-q", t.arg, "maint/a:2"]).status, 0)
        let listed = try listing(t.remote)
        let dry = try run(t, ["prune", t.arg, "--grace", "0", "--force", "--dry-run", "--json"])
        XCTAssertEqual(dry.status, 0, dry.stderr)
        let dj = try json(dry)
        XCTAssertEqual(dj["dryRun"] as? Bool, true)
        let dryRemoved = try XCTUnwrap(dj["removed"] as? [[String: Any]])
        XCTAssertFalse(dryRemoved.isEmpty)
        XCTAssertEqual(try listing(t.remote), listed, "\(backend): --dry-run changed the remote")
        let text = try run(t, ["prune", t.arg, "--grace", "0", "--force", "--dry-run"])
        XCTAssertTrue(text.stdoutText.contains("would remove 3 blobs ("), text.stdoutText)
        XCTAssertTrue(text.stdoutText.contains("1 index entries, 0 tickets"), text.stdoutText)
        XCTAssertEqual(try listing(t.remote), listed, "\(backend): --dry-run changed the remote")

        // The real prune frees exactly the image's unshared blobs.
        let real = try run(t, ["prune", t.arg, "--grace", "0", "--force", "--json"])
        XCTAssertEqual(real.status, 0, real.stderr)
        let rj = try json(real)
        let removed = try XCTUnwrap(rj["removed"] as? [[String: Any]])
        XCTAssertEqual(Set(removed.compactMap { $0["key"] as? String }), Set(dryRemoved.compactMap { $0["key"] as? String }),
                       "\(backend): the dry run listed something else")
        XCTAssertEqual(Set(removed.filter { $0["kind"] as? String == "blob" }.compactMap { $0["key"] as? String }), expectedBlobs)
        XCTAssertEqual(removed.filter { $0["kind"] as? String == "index" }.compactMap { $0["key"] as? String }, [Repository.diffIDKey(topDiffID)])
        XCTAssertEqual(num(rj["blobBytes"]), expectedBytes)
        XCTAssertEqual(num(rj["bytesFreed"]), expectedBytes + before[Repository.diffIDKey(topDiffID)]!.size)
        let after = try listing(t.remote)
        var gone = Set(before.keys).subtracting(after.keys)
        gone.remove(Repository.refKey(name: "maint/a", tag: "1")); gone.remove(Repository.refKey(name: "maint/a", tag: "2"))
        XCTAssertEqual(gone, expectedBlobs.union([Repository.diffIDKey(topDiffID)]), "\(backend): removed keys")
        XCTAssertEqual(try pulledID(t, "maint/b:1"), b.id)
        try assertVerifyDeepClean(t)
        // Nothing more to remove.
        XCTAssertEqual((try json(try run(t, ["prune", t.arg, "--grace", "0", "--force", "--json"]))["removed"] as? [Any])?.count, 0)
    }

    func testDryRunAndLastTagPruneLocal() throws { try checkDryRunAndLastTag(.local) }
    func testDryRunAndLastTagPruneS3() throws { try checkDryRunAndLastTag(.s3) }
    func testDryRunAndLastTagPruneManta() throws { try checkDryRunAndLastTag(.manta) }

    // MARK: tag, rm, inspect: output and errors

    func testTagRmInspectOutputAndErrors() throws {
        let t = try target(.local)
        let tops = Tops()
        let a = try image("maint/a:1", label: "a", top: "a", tops: tops)
        let b = try image("maint/b:1", label: "b", top: "b", tops: tops)
        try a.push(to: t.remote)
        try b.push(to: t.remote)
        let repo = Repository(remote: t.remote)
        let md = try XCTUnwrap(try repo.readRef(name: "maint/a", tag: "1"))

        // tag by name:tag, by digest, by ID prefix; the default tag is latest.
        var r = try run(t, ["tag", t.arg, "maint/a:1", "maint/copy:x"])
        XCTAssertEqual(r.status, 0, r.stderr)
        XCTAssertEqual(r.stdoutText, "tagged maint/copy:x -> \(md) (image \(a.id.short))\n")
        r = try run(t, ["tag", t.arg, "maint/a@\(md)", "registry.example:5000/team/app"])
        XCTAssertEqual(r.status, 0, r.stderr)
        XCTAssertEqual(try repo.readRef(name: "registry.example:5000/team/app", tag: "latest"), md)
        r = try run(t, ["tag", t.arg, String(b.id.hex.prefix(12)), "maint/copy:x", "--json"])
        XCTAssertEqual(r.status, 0, r.stderr)
        let tj = try json(r)
        XCTAssertEqual(tj["reference"] as? String, "maint/copy:x")
        XCTAssertEqual(tj["id"] as? String, b.id.description)
        XCTAssertEqual(tj["previous"] as? String, md.description)
        XCTAssertEqual(try pulledID(t, "maint/copy:x"), b.id)

        func fails(_ args: [String], _ text: String, line: UInt = #line) throws {
            let r = try run(t, args)
            XCTAssertEqual(r.status, 1, "\(args): \(r.stdoutText)", line: line)
            XCTAssertEqual(r.stderrLines.count, 1, r.stderr, line: line)
            XCTAssertTrue(r.stderr.hasPrefix("dogestry: error: ") && r.stderr.contains(text), "\(args): \(r.stderr)", line: line)
        }
        let refsBefore = try repo.listRefs()
        try fails(["tag", t.arg, "maint/nope:1", "maint/x:1"], "image maint/nope:1 is not on")
        try fails(["tag", t.arg, "maint/a:1", "Bad/Name:1"], "invalid image name \"Bad/Name\"")
        try fails(["tag", t.arg, "maint/a:1", "maint/x:-bad"], "invalid tag \"-bad\"")
        try fails(["tag", t.arg, "maint/a:1", "maint/x@\(md)"], "must be NAME[:TAG], not a digest")
        try fails(["inspect", t.arg, "maint/nope"], "image maint/nope:latest is not on")
        XCTAssertEqual(try repo.listRefs(), refsBefore, "a failed tag wrote a ref")

        // rm: a missing tag is an error naming it; the others are still removed.
        r = try run(t, ["rm", t.arg, "maint/copy:x", "maint/missing:9", "Bad", "registry.example:5000/team/app"])
        XCTAssertEqual(r.status, 1)
        XCTAssertEqual(r.stdoutText, "untagged maint/copy:x (was \(try XCTUnwrap(refsBefore.first { $0.name == "maint/copy" }).manifest))\n"
                       + "untagged registry.example:5000/team/app:latest (was \(md))\n")
        XCTAssertEqual(r.stderrLines.count, 2, r.stderr)
        XCTAssertTrue(r.stderrLines[0].hasPrefix("dogestry: error: tag maint/missing:9 is not on file://"), r.stderr)
        XCTAssertTrue(r.stderrLines[1].contains("invalid image name \"Bad\""), r.stderr)
        XCTAssertEqual(try repo.listRefs().map { "\($0.name):\($0.tag)" }, ["maint/a:1", "maint/b:1"])
        r = try run(t, ["rm", t.arg, "maint/a@\(md)", "--json"])
        XCTAssertEqual(r.status, 1)
        let rj = try json(r)
        XCTAssertEqual((rj["removed"] as? [Any])?.count, 0)
        XCTAssertTrue(((rj["errors"] as? [[String: Any]])?.first?["error"] as? String ?? "").contains("is not a tag"), "\(rj)")
        XCTAssertNotEqual(try run(t, ["rm", t.arg]).status, 0, "rm needs a tag")

        // inspect, as text.
        r = try run(t, ["inspect", t.arg, "maint/a:1"])
        XCTAssertEqual(r.status, 0, r.stderr)
        let lines = r.stdoutText.split(separator: "\n").map(String.init)
        XCTAssertEqual(lines.first, "image     maint/a:1")
        XCTAssertTrue(lines.contains { $0.hasPrefix("manifest  \(md) (") }, r.stdoutText)
        XCTAssertTrue(lines.contains { $0.hasPrefix("id        \(a.id) (config ") }, r.stdoutText)
        XCTAssertTrue(lines.contains("platform  linux/amd64"), r.stdoutText)
        let rows = lines.filter { $0.hasPrefix("  ") && !$0.contains("BLOB") }
        XCTAssertEqual(rows.count, 4, r.stdoutText)
        XCTAssertEqual(rows.map { $0.hasSuffix("yes") }, [true, true, true, false], r.stdoutText)
        XCTAssertTrue(rows.allSatisfy { $0.contains("zstd") }, r.stdoutText)
        XCTAssertTrue(rows[3].contains(a.diffIDs[3].short), r.stdoutText)
        XCTAssertTrue(lines.last?.hasPrefix("total     ") == true && lines.last!.contains("shared with other images"), r.stdoutText)
        // Maintenance commands refuse a pull-ticket URL? They need a real remote: a bad remote is one line.
        try fails(["prune", t.cwd + "/nonexistent-dir/"], "does not exist")
        try fails(["prune", t.arg, "--grace", "soon"], "invalid duration \"soon\" for --grace")
        // list sizes count each blob once: config + the layers.
        let l = try run(t, ["list", t.arg, "--json"])
        let rowsJSON = try XCTUnwrap(try JSONSerialization.jsonObject(with: l.stdout) as? [[String: Any]])
        let aSize = try XCTUnwrap(num(rowsJSON.first { $0["repository"] as? String == "maint/a" }?["size"]))
        let layerBytes = try repo.readManifest(md).layers.reduce(Int64(0)) { $0 + $1.size }
        XCTAssertEqual(aSize, Int64(a.config.count) + layerBytes)
    }

    // MARK: the touch rule and prune's re-checks (local: times can be set)

    /// Sets the modification time of every object under `prefix` of a local remote `ago` seconds back.
    func backdate(_ remote: LocalRemote, _ prefix: String, by ago: TimeInterval) throws {
        let when = Date().addingTimeInterval(-ago)
        for (k, _) in try listing(remote, prefix) {
            try FileManager.default.setAttributes([.modificationDate: when], ofItemAtPath: remote.root + "/" + k)
        }
    }

    func push(_ img: EngineTestSupport.Image, to remote: Remote, touchAfter: Int) throws -> PushReport {
        var o = TransferOptions()
        o.touchAfter = touchAfter
        let pusher = Pusher(repository: Repository(remote: remote), options: o, progress: SilentProgress())
        let data = try img.archive()
        return try pusher.pushArchive(reopen: { MemorySource(data) }, what: "test archive \(img.tag)", selections: [img.tag])
    }

    /// An old, unreferenced image whose layers a new push reuses; returns its image and manifest.
    func oldUnreferencedImage(on remote: LocalRemote, tops: Tops) throws -> (EngineTestSupport.Image, Digest) {
        let repo = Repository(remote: remote)
        let old = try image("maint/old:1", label: "old", top: "shared-top", tops: tops)
        _ = try push(old, to: remote, touchAfter: 600)
        let md = try XCTUnwrap(try repo.readRef(name: "maint/old", tag: "1"))
        try repo.deleteRef(name: "maint/old", tag: "1")
        try backdate(remote, "", by: 7200)   // everything 2 hours old, now unreferenced
        return (old, md)
    }

    /// A new push reuses the layers of an old, unreferenced image while a prune (grace 1 h: shorter
    /// than the layers' age, longer than the push) marks and sweeps at the worst moment: just before
    /// the push writes its ref (a push with nothing to upload, which touches at publish time), or
    /// while it uploads its one new layer (a push with work to do, which touches as soon as it
    /// starts compressing). With the touch the reused layers stay and the new image is whole;
    /// without it (touch-after longer than their age) the same prune takes them and the new tag
    /// points at missing layers: the rule is what keeps them.
    func testTouchKeepsReusedLayersFromAPruneMidPush() throws {
        for eager in [false, true] {
            for touch in [true, false] {
                let ctx = "\(eager ? "push with a new layer" : "push with nothing to upload"), \(touch ? "touching" : "not touching")"
                let local = try LocalRemote(path: try CLITest.makeTempDir(self, "maint-touch"))
                let tops = Tops()
                let (old, oldManifest) = try oldUnreferencedImage(on: local, tops: tops)
                let new = try image("maint/new:1", label: "new", top: eager ? "fresh-top" : "shared-top", tops: tops)
                let hook = HookRemote(local)
                var prune: PruneReport?
                let refKey = Repository.refKey(name: "maint/new", tag: "1")
                hook.beforePut = { key, isFile in
                    guard prune == nil, eager ? isFile : key == refKey else { return }
                    prune = try Pruner(repository: Repository(remote: local)).prune({ var o = PruneOptions(); o.grace = 3600; return o }())
                }
                let report = try push(new, to: hook, touchAfter: touch ? 600 : 30 * 86400)
                XCTAssertEqual(report.layersUploaded, eager ? 1 : 0, ctx)
                let p = try XCTUnwrap(prune, "\(ctx): the prune did not run")
                let removed = Set(p.removed.filter { $0.kind == .blob }.map(\.key))
                XCTAssertTrue(removed.isSuperset(of: [Repository.blobKey(old.id), Repository.blobKey(oldManifest)]), "\(ctx): the old config and manifest go either way")
                let reused = eager ? 3 : 4
                let oldTop = eager ? 1 : 0   // not reused: unreferenced and old, it goes either way
                let v = try Verifier(repository: Repository(remote: local)).verify(deep: true)
                if touch {
                    XCTAssertEqual(removed.count, 2 + oldTop, "\(ctx): \(removed)")
                    XCTAssertEqual(v.problems, [], "\(ctx): the new image must be whole")
                    let out = try CLITest.makeTempDir(self, "maint-touch-pull")
                    try CLITest.libraryPull(["maint/new:1"], from: local, to: out + "/n.tar")
                } else {
                    XCTAssertEqual(removed.count, 2 + oldTop + reused, "\(ctx): \(removed)")
                    XCTAssertEqual(v.problems.map(\.kind), Array(repeating: "layer-missing", count: reused),
                                   "\(ctx): without the touch the reused layers are pruned: \(v.problems.map(\.message))")
                }
            }
        }
    }

    /// When a prune takes a reused layer between the push's look-up and its touch, the push notices
    /// (the blob is looked at again after the touch, and before the ref is written) and starts over,
    /// uploading the layer: the tag never points at a missing blob.
    func testPushStartsOverWhenAReusedLayerVanishes() throws {
        for eager in [false, true] {
            let ctx = eager ? "push with a new layer" : "push with nothing to upload"
            let local = try LocalRemote(path: try CLITest.makeTempDir(self, "maint-vanish"))
            let tops = Tops()
            let (old, _) = try oldUnreferencedImage(on: local, tops: tops)
            let new = try image("maint/new:1", label: "new", top: eager ? "fresh-top" : "shared-top", tops: tops)
            let victim = old.diffIDs[1]
            let victimBlob = try XCTUnwrap(try Repository(remote: local).lookupLayer(diffID: victim)).digest
            let hook = HookRemote(local)
            var struck = false
            hook.afterPut = { key in
                // The push's touch of the layer's index entry lands just after a prune removed its blob.
                guard !struck, key == Repository.diffIDKey(victim) else { return }
                struck = true
                try local.delete(Repository.blobKey(victimBlob))
            }
            let report = try push(new, to: hook, touchAfter: 600)
            XCTAssertTrue(struck, ctx)
            XCTAssertEqual(report.layersUploaded, eager ? 2 : 1, "\(ctx): the vanished layer is uploaded again")
            XCTAssertNotNil(try local.stat(Repository.blobKey(victimBlob)), ctx)
            XCTAssertEqual(try Verifier(repository: Repository(remote: local)).verify(deep: true).problems, [], ctx)
            let out = try CLITest.makeTempDir(self, "maint-vanish-pull")
            try CLITest.libraryPull(["maint/new:1"], from: local, to: out + "/n.tar")
        }
    }

    /// A push of a tag that already points at the image touches nothing (no object rewritten, the
    /// ref not rewritten either), even with touch-after 0.
    func testRepushOfTheSameTagTouchesNothing() throws {
        let dir = try CLITest.makeTempDir(self, "maint-noop")
        let remote = try LocalRemote(path: dir)
        let img = try image("maint/same:1", label: "same", top: "same", tops: Tops())
        _ = try push(img, to: remote, touchAfter: 0)
        try backdate(remote, "", by: 7200)
        let before = try listing(remote)
        let r = try push(img, to: remote, touchAfter: 0)
        XCTAssertEqual(r.blobsWritten, 0)
        XCTAssertEqual(try listing(remote), before, "a no-op push of the same tag rewrote objects")
        // Another tag for it does touch (the image may be unreferenced by the time that ref lands).
        var other = img
        other.tag = "maint/same:2"
        _ = try push(other, to: remote, touchAfter: 0)
        let after = try listing(remote)
        for d in img.diffIDs {
            XCTAssertGreaterThan(after[Repository.diffIDKey(d)]!.modified!, before[Repository.diffIDKey(d)]!.modified!, "index entry of \(d.short) not touched")
        }
        XCTAssertGreaterThan(after[Repository.blobKey(img.id)]!.modified!, before[Repository.blobKey(img.id)]!.modified!, "config not touched")
    }

    /// A remote wrapper with hooks, to act "concurrently" at exact points of a prune (or to fail
    /// an open, as a source that goes away mid-copy).
    final class HookRemote: Remote, @unchecked Sendable {  // (hooks are set before the remote is shared)
        let inner: Remote
        var beforeStat: (String) throws -> Void = { _ in }
        var beforeOpen: (String) throws -> Void = { _ in }
        var afterList: (String) throws -> Void = { _ in }
        /// Called before a put (`true`: of a staged file), and after one.
        var beforePut: (String, Bool) throws -> Void = { _, _ in }
        var afterPut: (String) throws -> Void = { _ in }
        init(_ inner: Remote) { self.inner = inner }
        var displayURL: String { inner.displayURL }
        func stat(_ key: String) throws -> RemoteObject? { try beforeStat(key); return try inner.stat(key) }
        func open(_ key: String) throws -> ByteSource { try beforeOpen(key); return try inner.open(key) }
        func put(_ key: String, bytes: [UInt8]) throws { try beforePut(key, false); try inner.put(key, bytes: bytes); try afterPut(key) }
        func put(_ key: String, file: StagedFile, size: Int64) throws { try beforePut(key, true); try inner.put(key, file: file, size: size); try afterPut(key) }
        func delete(_ key: String) throws { try inner.delete(key) }
        func list(prefix: String, _ each: (RemoteObject) throws -> Void) throws { try inner.list(prefix: prefix, each); try afterList(prefix) }
        func makeStagedFile() throws -> StagedFile { try inner.makeStagedFile() }
        func check() throws -> String { try inner.check() }
    }

    /// Prune's two safety checks, made to happen at the worst moment: a layer touched by a push
    /// after prune listed it (seen when prune stats it again before removing it: kept), and a ref
    /// written after prune listed the blobs (seen because refs are listed after: its image kept).
    func testPruneRechecksCandidatesAndListsRefsLast() throws {
        let dir = try CLITest.makeTempDir(self, "maint-recheck")
        let local = try LocalRemote(path: dir)
        let hook = HookRemote(local)
        let repo = Repository(remote: hook)
        let tops = Tops()
        let x = try image("maint/x:1", label: "x", top: "x", tops: tops)
        let y = try image("maint/y:1", label: "y", top: "y", tops: tops)
        _ = try push(x, to: local, touchAfter: 600)
        _ = try push(y, to: local, touchAfter: 600)
        let lrepo = Repository(remote: local)
        let ym = try XCTUnwrap(try lrepo.readRef(name: "maint/y", tag: "1"))
        let xm = try XCTUnwrap(try lrepo.readRef(name: "maint/x", tag: "1"))
        try lrepo.deleteRef(name: "maint/x", tag: "1")
        try lrepo.deleteRef(name: "maint/y", tag: "1")
        try backdate(local, "", by: 7200)
        let xTop = try XCTUnwrap(try lrepo.lookupLayer(diffID: x.diffIDs.last!))
        let xTopKey = Repository.blobKey(xTop.digest)

        // While prune runs: a push tags y again (just after the blobs were listed: a prune that
        // listed refs first would miss it), and a push touches x's top layer (after it was listed,
        // before prune removes it).
        var wroteRef = false, touched = false
        hook.afterList = { prefix in
            if prefix == Repository.blobsPrefix && !wroteRef {
                wroteRef = true
                try lrepo.writeRef(name: "maint/y", tag: "again", manifest: ym)
            }
        }
        hook.beforeStat = { key in
            if key == xTopKey && !touched {
                touched = true
                try lrepo.recordLayer(diffID: x.diffIDs.last!, xTop)
            }
        }
        let report = try Pruner(repository: repo).prune({ var o = PruneOptions(); o.grace = 3600; return o }())
        XCTAssertTrue(wroteRef && touched)
        XCTAssertEqual(report.keptYoung, [xTopKey], "the touched layer must be kept")
        XCTAssertNotNil(try local.stat(xTopKey))
        let removed = Set(report.removed.map(\.key))
        XCTAssertEqual(removed, [Repository.blobKey(x.id), Repository.blobKey(xm)], "only x's config and manifest go")
        XCTAssertEqual(report.refs, 1, "the ref written after the blobs were listed was seen")
        XCTAssertEqual(try Verifier(repository: lrepo).verify(deep: true).problems, [], "y, tagged while prune ran, must be whole")
        let out = try CLITest.makeTempDir(self, "maint-recheck-pull")
        try CLITest.libraryPull(["maint/y:again"], from: local, to: out + "/y.tar")
    }

    // MARK: tickets, index entries, uploads

    /// Prune removes expired pull tickets (and unreadable ones older than the grace), keeps the
    /// images of unexpired ones, removes index entries whose blob is gone (or points them at a blob
    /// in use), and aborts abandoned uploads: staging files on the local remote, multipart uploads on S3.
    func checkTicketsIndexAndUploads(_ backend: Backend) throws {
        let t = try target(backend)
        let repo = Repository(remote: t.remote)
        let tops = Tops()
        let live = try image("maint/live:1", label: "live", top: "live", tops: tops)
        let signed = try image("maint/signed:1", label: "signed", top: "signed", tops: tops)
        try live.push(to: t.remote)
        try signed.push(to: t.remote)
        let sm = try XCTUnwrap(try repo.readRef(name: "maint/signed", tag: "1"))
        try repo.deleteRef(name: "maint/signed", tag: "1")   // only a ticket keeps it now
        let smf = try repo.readManifest(sm)
        let manifestSize = try XCTUnwrap(try t.remote.stat(Repository.blobKey(sm))).size
        /// A pull ticket for the signed image (as `dogestry sign` writes them; the URLs do not matter here).
        func ticket(expires: Date) throws -> [UInt8] {
            var blobs: [[String: Any]] = [["digest": sm.description, "size": manifestSize, "url": "http://x/m"],
                                          ["digest": smf.config.digest.description, "size": smf.config.size, "url": "http://x/c"]]
            for l in smf.layers { blobs.append(["digest": l.digest.description, "size": l.size, "url": "http://x/l"]) }
            let doc: [String: Any] = ["kind": PullTicket.kindValue, "version": 1, "created": RFC3339.format(Date()),
                                      "expires": RFC3339.format(expires), "blobs": blobs,
                                      "image": ["name": "maint/signed", "tags": [String](), "manifest": sm.description, "config": smf.config.digest.description]]
            let bytes = [UInt8](try JSONSerialization.data(withJSONObject: doc, options: [.sortedKeys]))
            _ = try PullTicket.decode(bytes, what: "test ticket")   // it is one
            return bytes
        }
        let liveTicket = "tickets/" + String(repeating: "a", count: 32) + ".json"
        let expiredTicket = "tickets/" + String(repeating: "b", count: 32) + ".json"
        let junkTicket = "tickets/" + String(repeating: "c", count: 32) + ".json"
        try t.remote.put(liveTicket, bytes: try ticket(expires: Date().addingTimeInterval(3600)))
        try t.remote.put(expiredTicket, bytes: try ticket(expires: Date().addingTimeInterval(-60)))
        try t.remote.put(junkTicket, bytes: Array("not a ticket".utf8))
        // An index entry naming a blob that is not there, and one for a live layer naming a lost blob.
        let ghost = Digest.of("a layer nobody stored")
        try repo.recordLayer(diffID: ghost, LayerIndexEntry(digest: Digest.of("its blob"), mediaType: Compression.zstd.layerMediaType, size: 5, uncompressedSize: 9))
        let liveBottom = live.diffIDs[0]
        let liveBottomEntry = try XCTUnwrap(try repo.lookupLayer(diffID: liveBottom))
        try repo.recordLayer(diffID: liveBottom, LayerIndexEntry(digest: Digest.of("lost"), mediaType: Compression.zstd.layerMediaType, size: 7, uncompressedSize: 9))
        // An abandoned upload.
        var uploadKey: String?
        switch t.remote {
        case let s3 as S3Remote:
            uploadKey = Repository.blobKey(Digest.of("abandoned"))
            _ = try s3.startAbandonedUpload(uploadKey!, part: RemoteConformanceBytes.bytes(100_000, seed: 3))
        case let l as LocalRemote:
            // A named staging file, as an older dogestry killed mid-push left (today's have no name).
            let staged = try Self.namedStagingFile(l)
            try Data(RemoteConformanceBytes.bytes(100_000, seed: 3)).write(to: URL(fileURLWithPath: staged))
            uploadKey = ".dogestry-tmp/" + (staged as NSString).lastPathComponent
        default: break   // Manta: single streaming PUTs, nothing is left behind
        }
        if let sweeper = t.remote as? UploadSweeping {
            var n = 0
            try sweeper.listIncompleteUploads { u in if u.key == uploadKey { n += 1 } }
            XCTAssertEqual(n, 1, "\(backend): the abandoned upload is listed")
        }

        // A long grace: only the expired ticket goes (it has an expiry; nothing else is old).
        let p1 = try json(try run(t, ["prune", t.arg, "--json"]))
        XCTAssertEqual((p1["removed"] as? [[String: Any]])?.compactMap { $0["key"] as? String }, [expiredTicket], "\(backend): \(p1)")
        // Grace 0: everything stale goes; the live ticket keeps the signed image.
        let r = try run(t, ["prune", t.arg, "--grace", "0", "--force", "--json"])
        XCTAssertEqual(r.status, 0, r.stderr)
        let p2 = try json(r)
        let removed = try XCTUnwrap(p2["removed"] as? [[String: Any]])
        let keys = Set(removed.compactMap { $0["key"] as? String })
        var want: Set<String> = [junkTicket, Repository.diffIDKey(ghost)]
        if let k = uploadKey { want.insert(k) }
        XCTAssertEqual(keys, want, "\(backend): \(removed)")
        XCTAssertEqual((p2["repointed"] as? [[String: Any]])?.compactMap { $0["key"] as? String }, [Repository.diffIDKey(liveBottom)])
        XCTAssertEqual((p2["roots"] as? [String: Any])?["tickets"] as? Int, 1)
        XCTAssertEqual(try repo.lookupLayer(diffID: liveBottom), liveBottomEntry, "the index entry points at the live blob again")
        XCTAssertNotNil(try t.remote.stat(liveTicket))
        XCTAssertNotNil(try t.remote.stat(Repository.blobKey(sm)), "\(backend): an unexpired ticket's manifest was pruned")
        for l in smf.layers { XCTAssertNotNil(try t.remote.stat(Repository.blobKey(l.digest))) }
        if let sweeper = t.remote as? UploadSweeping {
            var left: [String] = []
            try sweeper.listIncompleteUploads { left.append($0.key) }
            XCTAssertEqual(left, [], "\(backend): uploads left")
            let up = try XCTUnwrap(removed.first { $0["kind"] as? String == "upload" })
            XCTAssertEqual(num(up["size"]), 100_000, "\(backend): the upload's bytes")
        }
        try assertVerifyDeepClean(t)
        // The ticket expires (rewritten as expired): its image goes on the next prune.
        try t.remote.put(liveTicket, bytes: try ticket(expires: Date().addingTimeInterval(-1)))
        let p3 = try json(try run(t, ["prune", t.arg, "--grace", "0", "--force", "--json"]))
        let gone = Set((p3["removed"] as? [[String: Any]] ?? []).compactMap { $0["key"] as? String })
        XCTAssertTrue(gone.isSuperset(of: [liveTicket, Repository.blobKey(sm), Repository.blobKey(smf.config.digest), Repository.blobKey(smf.layers.last!.digest)]), "\(backend): \(gone)")
        XCTAssertEqual(try pulledID(t, "maint/live:1"), live.id)
    }

    func testPruneTicketsIndexEntriesAndUploadsLocal() throws { try checkTicketsIndexAndUploads(.local) }
    func testPruneTicketsIndexEntriesAndUploadsS3() throws { try checkTicketsIndexAndUploads(.s3) }
    func testPruneTicketsIndexEntriesAndUploadsManta() throws { try checkTicketsIndexAndUploads(.manta) }

    /// An old staging file is an abandoned upload; a young one (a push at work) is left alone.
    func testPruneLeavesYoungStagingFiles() throws {
        let t = try target(.local)
        let l = try XCTUnwrap(t.remote as? LocalRemote)
        let young = try Self.namedStagingFile(l), old = try Self.namedStagingFile(l)
        for s in [young, old] { try Data([1, 2, 3]).write(to: URL(fileURLWithPath: s)) }
        try FileManager.default.setAttributes([.modificationDate: Date().addingTimeInterval(-7200)], ofItemAtPath: old)
        let p = try json(try run(t, ["prune", t.arg, "--grace", "1h", "--json"]))
        XCTAssertEqual((p["removed"] as? [[String: Any]])?.compactMap { $0["key"] as? String }, [".dogestry-tmp/" + (old as NSString).lastPathComponent])
        XCTAssertTrue(FS.exists(young))
        XCTAssertFalse(FS.exists(old))
    }

    /// A path in the local remote's staging directory named as dogestry's named fallback files are.
    static func namedStagingFile(_ l: LocalRemote) throws -> String {
        let s = try l.makeStagedFile()   // makes the staging directory
        s.discard()
        return FS.tempPath(in: s.directory, prefix: "blob")
    }

    // MARK: verify's other findings

    /// Refs to missing manifests, manifests naming missing layers, index entries that disagree, and
    /// (deep) a layer whose diffID is not what the index says: one line each, exit status 1.
    func testVerifyReportsEveryKindOfProblem() throws {
        let t = try target(.local)
        let repo = Repository(remote: t.remote)
        let tops = Tops()
        let a = try image("maint/a:1", label: "a", top: "a", tops: tops)
        let b = try image("maint/b:1", label: "b", top: "b", tops: tops)
        try a.push(to: t.remote)
        try b.push(to: t.remote)
        XCTAssertEqual(try run(t, ["verify", "-q", t.arg, "--deep"]).status, 0)
        let bm = try repo.readManifest(try XCTUnwrap(try repo.readRef(name: "maint/b", tag: "1")))
        let missingManifest = Digest.of("no such manifest")
        try repo.writeRef(name: "maint/broken", tag: "1", manifest: missingManifest)
        try t.remote.delete(Repository.blobKey(bm.layers[3].digest))
        // The index says a's top layer has b's bottom layer's diffID.
        let aTop = try XCTUnwrap(try repo.lookupLayer(diffID: a.diffIDs[3]))
        let bBottom = try XCTUnwrap(try repo.lookupLayer(diffID: b.diffIDs[0]))
        try repo.recordLayer(diffID: b.diffIDs[0], aTop)
        let r = try run(t, ["verify", t.arg, "--deep"])
        XCTAssertEqual(r.status, 1)
        let lines = r.stdoutText.split(separator: "\n").map(String.init)
        let bmd = try XCTUnwrap(try repo.readRef(name: "maint/b", tag: "1"))
        for want in [
            "ref maint/broken:1 -> \(missingManifest): manifest missing",
            "manifest \(bmd) (maint/b:1): layer \(bm.layers[3].digest) missing",
            "index diffid \(b.diffIDs[3]) -> blob \(bm.layers[3].digest) missing",
            "layer \(aTop.digest): manifest \(try XCTUnwrap(try repo.readRef(name: "maint/a", tag: "1"))) says diffID \(a.diffIDs[3]), index says \(b.diffIDs[0])",
            "layer \(aTop.digest): diffID is \(a.diffIDs[3]), index says \(b.diffIDs[0])",
        ] {
            XCTAssertTrue(lines.contains(want), "missing line \"\(want)\" in:\n\(r.stdoutText)")
        }
        XCTAssertTrue(r.stderr.contains("dogestry: error: 5 problem(s)"), r.stderr)
        // Prune removes no blob while a ref points at nothing it can read (and says so).
        let blobsBefore = try listing(t.remote, Repository.blobsPrefix)
        let p = try run(t, ["prune", t.arg, "--grace", "0", "--force"])
        XCTAssertEqual(p.status, 1)
        XCTAssertTrue(p.stderr.contains("dogestry: warning: cannot read ref maint/broken:1 -> \(missingManifest)"), p.stderr)
        XCTAssertEqual(Set(try listing(t.remote, Repository.blobsPrefix).keys), Set(blobsBefore.keys))
        try repo.writeRef(name: "maint/broken", tag: "1", manifest: missingManifest)
        // A push finding an index entry whose blob is gone uploads the layer again (and repairs the
        // entry); so does one finding an entry naming another layer's blob (no manifest proves it).
        XCTAssertEqual(try b.push(to: t.remote).layersUploaded, 2)
        XCTAssertEqual(try repo.lookupLayer(diffID: b.diffIDs[0])?.digest, bBottom.digest, "the wrong entry was rewritten")
        XCTAssertNotNil(try t.remote.stat(Repository.blobKey(bm.layers[3].digest)))
        XCTAssertEqual(try repo.lookupLayer(diffID: b.diffIDs[3])?.digest, bm.layers[3].digest)
        XCTAssertEqual(try pulledID(t, "maint/b:1"), b.id)
    }

    // MARK: issue 9: index entries need a proof

    /// An index entry pointed at another real blob (its recorded size and all) is not trusted: a
    /// re-push stores the layer itself, the tag does not move, the entry is set right, and a prune
    /// afterwards keeps every blob the tags need. The same holds for such an entry without a
    /// `manifest` (as older versions wrote them); a right entry without one is trusted through the
    /// refs' manifests (nothing uploaded) and gets its proof written.
    func testPushDoesNotTrustAnUnprovenIndexEntry() throws {
        let t = try target(.local)
        let repo = Repository(remote: t.remote)
        let tops = Tops()
        let a = try image("maint/a:1", label: "a", top: "a", tops: tops)
        let b = try image("maint/b:1", label: "b", top: "b", tops: tops)
        _ = try push(a, to: t.remote, touchAfter: 600)
        _ = try push(b, to: t.remote, touchAfter: 600)
        let am = try XCTUnwrap(try repo.readRef(name: "maint/a", tag: "1"))
        let bm = try XCTUnwrap(try repo.readRef(name: "maint/b", tag: "1"))
        let aTopD = try XCTUnwrap(a.diffIDs.last)
        let aTop = try XCTUnwrap(try repo.lookupLayer(diffID: aTopD))
        let bTop = try XCTUnwrap(try repo.lookupLayer(diffID: b.diffIDs.last!))
        XCTAssertEqual(aTop.manifest, am, "a push names the manifest that proves its entries")
        XCTAssertEqual(bTop.manifest, bm)
        var legacy = bTop
        legacy.manifest = nil
        for (ctx, wrong) in [("entry naming b's manifest", bTop), ("entry without a manifest", legacy)] {
            try repo.recordLayer(diffID: aTopD, wrong)
            let r = try push(a, to: t.remote, touchAfter: 600)
            XCTAssertEqual(r.layersUploaded, 1, "\(ctx): the layer must be stored by the push")
            XCTAssertEqual(try repo.readRef(name: "maint/a", tag: "1"), am, "\(ctx): the tag moved")
            XCTAssertEqual(try repo.lookupLayer(diffID: aTopD), aTop, "\(ctx): the entry is set right")
            XCTAssertEqual(try pulledID(t, "maint/a:1"), a.id, ctx)
        }
        // A right entry without a proof (an older version's): trusted through the refs, given one.
        var old = aTop
        old.manifest = nil
        try repo.recordLayer(diffID: aTopD, old)
        XCTAssertEqual(try push(a, to: t.remote, touchAfter: 600).layersUploaded, 0)
        XCTAssertEqual(try repo.lookupLayer(diffID: aTopD)?.manifest, am)
        // The wrong entry once more, and a prune: nothing a tag needs goes.
        try repo.recordLayer(diffID: aTopD, bTop)
        let p = try run(t, ["prune", t.arg, "--grace", "0", "--force", "--json"])
        XCTAssertEqual(p.status, 0, p.stderr)
        XCTAssertEqual(Set(try listing(t.remote, Repository.blobsPrefix).keys), try reachableBlobs(t.remote))
        XCTAssertEqual(try pulledID(t, "maint/a:1"), a.id)
        XCTAssertEqual(try pulledID(t, "maint/b:1"), b.id)
    }

    /// `verify --deep` reports an index entry whose blob holds another layer as the entry's
    /// problem; `verify --repair` removes exactly the wrong entries (and one that is not an entry)
    /// and nothing else; the next push stores the layer and writes a right entry.
    func testVerifyRepairRemovesWrongIndexEntriesOnly() throws {
        let t = try target(.local)
        let repo = Repository(remote: t.remote)
        let tops = Tops()
        let a = try image("maint/a:1", label: "a", top: "a", tops: tops)
        let b = try image("maint/b:1", label: "b", top: "b", tops: tops)
        _ = try push(a, to: t.remote, touchAfter: 600)
        _ = try push(b, to: t.remote, touchAfter: 600)
        let aTopD = try XCTUnwrap(a.diffIDs.last)
        let aTop = try XCTUnwrap(try repo.lookupLayer(diffID: aTopD))
        let bTop = try XCTUnwrap(try repo.lookupLayer(diffID: b.diffIDs.last!))
        try repo.recordLayer(diffID: aTopD, bTop)
        let junk = Repository.diffIDKey(Digest.of("junk"))
        try t.remote.put(junk, bytes: Array("not an index entry".utf8))
        let before = try listing(t.remote)

        let deep = try run(t, ["verify", t.arg, "--deep", "--json"])
        XCTAssertEqual(deep.status, 1)
        let problems = try XCTUnwrap(try json(deep)["problems"] as? [[String: Any]])
        XCTAssertTrue(problems.contains { $0["kind"] as? String == "index-diffid" && $0["object"] as? String == Repository.diffIDKey(aTopD) }, "\(problems)")
        XCTAssertTrue(problems.contains { $0["kind"] as? String == "index-invalid" && $0["object"] as? String == junk }, "\(problems)")
        XCTAssertEqual(try listing(t.remote), before, "verify --deep wrote")

        let fix = try run(t, ["verify", t.arg, "--repair"])
        XCTAssertEqual(fix.status, 0, "\(fix.stdoutText) \(fix.stderr)")
        XCTAssertTrue(fix.stdoutText.contains("removed index entry \(Repository.diffIDKey(aTopD))\n"), fix.stdoutText)
        XCTAssertTrue(fix.stdoutText.contains("removed index entry \(junk)\n"), fix.stdoutText)
        var want = before
        want[Repository.diffIDKey(aTopD)] = nil
        want[junk] = nil
        XCTAssertEqual(try listing(t.remote), want, "repair removed or changed something else")

        XCTAssertEqual(try push(a, to: t.remote, touchAfter: 600).layersUploaded, 1)
        XCTAssertEqual(try repo.lookupLayer(diffID: aTopD)?.digest, aTop.digest)
        try assertVerifyDeepClean(t)
    }

    // MARK: issue 9: a grace that cannot be safe

    /// A grace shorter than touch-after plus the 30-minute margin is refused (from the flag or the
    /// config) and removes nothing; `--force` allows it; a grace at the floor is accepted.
    func testPruneRefusesAGraceShorterThanTouchAfterPlusMargin() throws {
        let t = try target(.local, config: "[prune]\n    touch-after = 10m\n")
        let repo = Repository(remote: t.remote)
        let img = try image("maint/gone:1", label: "gone", top: "gone", tops: Tops())
        _ = try push(img, to: t.remote, touchAfter: 600)
        try repo.deleteRef(name: "maint/gone", tag: "1")
        let before = try listing(t.remote)
        for grace in ["3s", "0", "39m"] {
            let r = try run(t, ["prune", t.arg, "--grace", grace])
            XCTAssertEqual(r.status, 1, "--grace \(grace): \(r.stdoutText)")
            XCTAssertEqual(r.stderrLines.count, 1, r.stderr)
            XCTAssertTrue(r.stderr.hasPrefix("dogestry: error: grace \(grace == "0" ? "0s" : grace) is shorter than touch-after (10m) plus a margin of 30m"), r.stderr)
            XCTAssertTrue(r.stderr.contains("at least 40m, or --force if nobody pushes"), r.stderr)
            XCTAssertEqual(try listing(t.remote), before, "a refused prune removed something")
        }
        let ok = try run(t, ["prune", t.arg, "--grace", "40m", "--json"])
        XCTAssertEqual(ok.status, 0, ok.stderr)
        XCTAssertEqual((try json(ok)["removed"] as? [Any])?.count, 0, "everything is young")
        // From the config too, with touch-after 0: the floor is the margin.
        let c = try target(.local, config: "[prune]\n    touch-after = 0\n    grace = 29m\n")
        let r = try run(c, ["prune", c.arg])
        XCTAssertEqual(r.status, 1)
        XCTAssertTrue(r.stderr.contains("grace 29m is shorter than touch-after (0s) plus a margin of 30m"), r.stderr)
        XCTAssertEqual(try run(c, ["prune", c.arg, "--grace", "30m"]).status, 0)
        // --force: nobody pushes, so grace 0 takes the unreferenced image.
        let forced = try run(t, ["prune", t.arg, "--grace", "0", "--force", "--json"])
        XCTAssertEqual(forced.status, 0, forced.stderr)
        XCTAssertEqual(try json(forced)["counts"].flatMap { ($0 as? [String: Any])?["blobs"] as? Int }, 6)
    }

    // MARK: issue 9: one unreadable object

    /// Refs whose manifest is over the read limit, not JSON, or missing, and a ref that holds no
    /// digest: `list` shows the good images (exit 0) with one warning per bad one, `inspect` of a
    /// good image works, `verify` reports each and nothing about the good ones, and `prune` prunes
    /// the rest but removes no blob (it cannot tell what the bad ones need) and exits 1.
    func testOneUnreadableObjectIsReportedAndSkipped() throws {
        let t = try target(.local)
        let repo = Repository(remote: t.remote)
        let tops = Tops()
        let a = try image("maint/a:1", label: "a", top: "a", tops: tops)
        let b = try image("maint/b:1", label: "b", top: "b", tops: tops)
        let c = try image("maint/c:1", label: "c", top: "c", tops: tops)
        for i in [a, b, c] { _ = try push(i, to: t.remote, touchAfter: 600) }
        try repo.deleteRef(name: "maint/c", tag: "1")   // unreferenced: prune would take it
        let big = [UInt8](repeating: 0x20, count: (16 << 20) + 10)
        let bigD = Digest.of(big), junkD = Digest.of(Array("not json".utf8)), missingD = Digest.of("nothing")
        try t.remote.put(Repository.blobKey(bigD), bytes: big)
        try t.remote.put(Repository.blobKey(junkD), bytes: Array("not json".utf8))
        try repo.writeRef(name: "bad/big", tag: "1", manifest: bigD)
        try repo.writeRef(name: "bad/junk", tag: "1", manifest: junkD)
        try repo.writeRef(name: "bad/missing", tag: "1", manifest: missingD)
        try t.remote.put(Repository.refKey(name: "bad/nodigest", tag: "1"), bytes: Array("garbage\n".utf8))
        let ghost = Digest.of("a layer nobody stored")
        try repo.recordLayer(diffID: ghost, LayerIndexEntry(digest: Digest.of("its blob"), mediaType: Compression.zstd.layerMediaType, size: 5, uncompressedSize: 9))

        let l = try run(t, ["list", t.arg, "--json"])
        XCTAssertEqual(l.status, 0, l.stderr)
        let rows = try XCTUnwrap(try JSONSerialization.jsonObject(with: l.stdout) as? [[String: Any]])
        XCTAssertEqual(rows.compactMap { $0["repository"] as? String }, ["maint/a", "maint/b"])
        XCTAssertEqual(l.stderrLines.count, 4, l.stderr)
        for bad in ["bad/big:1", "bad/junk:1", "bad/missing:1", "repositories/bad/nodigest/_tags/1"] {
            XCTAssertTrue(l.stderrLines.contains { $0.hasPrefix("dogestry: warning: skipping \(bad)") }, "\(bad): \(l.stderr)")
        }
        let text = try run(t, ["list", t.arg])
        XCTAssertEqual(text.status, 0, text.stderr)
        XCTAssertEqual(text.stdoutText.split(separator: "\n").count, 3, text.stdoutText)

        let ins = try run(t, ["inspect", t.arg, "maint/a:1", "--json"])
        XCTAssertEqual(ins.status, 0, ins.stderr)
        XCTAssertEqual((try json(ins)["layers"] as? [[String: Any]])?.map { $0["shared"] as? Bool }, [true, true, true, false])
        XCTAssertEqual(ins.stderrLines.count, 4, ins.stderr)
        let byID = try run(t, ["inspect", t.arg, String(b.id.hex.prefix(12)), "--json"])
        XCTAssertEqual(byID.status, 0, byID.stderr)
        XCTAssertEqual(try json(byID)["id"] as? String, b.id.description)

        let v = try run(t, ["verify", t.arg, "--json"])
        XCTAssertEqual(v.status, 1)
        let problems = try XCTUnwrap(try json(v)["problems"] as? [[String: Any]])
        XCTAssertEqual(Set(problems.compactMap { $0["kind"] as? String }), ["blob-corrupt", "manifest-invalid", "manifest-missing", "ref-invalid", "index-blob-missing"], "\(problems)")
        XCTAssertFalse(problems.contains { ($0["message"] as? String ?? "").contains("maint/") }, "\(problems)")

        let blobs = try listing(t.remote, Repository.blobsPrefix)
        let p = try run(t, ["prune", t.arg, "--grace", "0", "--force", "--json"])
        XCTAssertEqual(p.status, 1, p.stdoutText)
        XCTAssertEqual(p.stderrLines.filter { $0.hasPrefix("dogestry: warning: cannot read ") }.count, 4, p.stderr)
        XCTAssertTrue(p.stderrLines.last?.hasPrefix("dogestry: error: 4 root(s) on ") == true, p.stderr)
        let pj = try json(p)
        XCTAssertEqual((pj["removed"] as? [[String: Any]])?.compactMap { $0["key"] as? String }, [Repository.diffIDKey(ghost)], "only what no root decides")
        XCTAssertEqual(num((pj["keptUnknown"] as? [String: Any])?["blobs"]), 3, "c's manifest, config and top layer are kept")
        XCTAssertEqual(try listing(t.remote, Repository.blobsPrefix), blobs)

        // With the broken refs removed, prune takes c (and the junk manifests) and a, b stay whole.
        XCTAssertEqual(try run(t, ["rm", "-q", t.arg, "bad/big:1", "bad/junk:1", "bad/missing:1"]).status, 0)
        try t.remote.delete(Repository.refKey(name: "bad/nodigest", tag: "1"))
        let p2 = try run(t, ["prune", t.arg, "--grace", "0", "--force"])
        XCTAssertEqual(p2.status, 0, p2.stderr)
        XCTAssertEqual(Set(try listing(t.remote, Repository.blobsPrefix).keys), try reachableBlobs(t.remote))
        XCTAssertEqual(try pulledID(t, "maint/a:1"), a.id)
        XCTAssertEqual(try pulledID(t, "maint/b:1"), b.id)
    }

    // MARK: no-op pushes

    /// A push of a tag that already points at the image makes as many requests with touch-after 0
    /// (everything "old") as with touching off: the ref is read instead of written.
    func checkNoOpPushRequests(_ backend: Backend) throws {
        let t = try target(backend)
        let counting = try XCTUnwrap(t.remote as? TrafficCounting)
        let img = try image("maint/noop:1", label: "noop", top: "noop", tops: Tops())
        _ = try push(img, to: t.remote, touchAfter: 600)
        var counts: [Int] = []
        for touchAfter in [1_000_000, 0, 1_000_000] {
            let before = counting.traffic.requests
            let r = try push(img, to: t.remote, touchAfter: touchAfter)
            XCTAssertEqual(r.blobsWritten, 0)
            counts.append(counting.traffic.requests - before)
        }
        XCTAssertEqual(Set(counts).count, 1, "\(backend): requests of no-op pushes \(counts)")
    }

    func testNoOpPushOfTheSameTagCostsNoExtraRequestsS3() throws { try checkNoOpPushRequests(.s3) }
    func testNoOpPushOfTheSameTagCostsNoExtraRequestsManta() throws { try checkNoOpPushRequests(.manta) }
}

/// Deterministic bytes for test layers (the conformance suite's generator lives in another test target).
enum RemoteConformanceBytes {
    static func bytes(_ n: Int, seed: UInt64) -> [UInt8] {
        var out = [UInt8](repeating: 0, count: n)
        var x = seed &* 0x9E37_79B9_7F4A_7C15 | 1
        for i in 0..<n {
            x ^= x << 13; x ^= x >> 7; x ^= x << 17
            out[i] = UInt8(truncatingIfNeeded: x)
        }
        return out
    }
}
