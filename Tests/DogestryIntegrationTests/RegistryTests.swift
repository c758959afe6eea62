import DogestryCore
import DogestryEngine
@testable import DogestryRemotes
import DogestrySync
import Foundation
import DogestryTestSupport
import XCTest

/// OCI registries as remotes, against Debian's distribution 2.8 started by scripts/test (plain
/// HTTP; HTTPS + htpasswd; HTTPS + token auth), with docker, podman and skopeo as the independent
/// clients on the other side.
final class RegistryTests: EngineRemoteTestCase {
    typealias T = ServeClientTests
    override var namePrefix: String { "registry" }

    struct Peer {
        /// `127.0.0.1:PORT`.
        var addr: String
        var certDir: String?
    }

    static func peer(_ mode: String) throws -> Peer {
        let up = mode.uppercased()
        let addr = try CLITest.requiredEnvironment("DOGESTRY_TEST_REGISTRY_\(up)")
        let certs = ProcessInfo.processInfo.environment["DOGESTRY_TEST_REGISTRY_\(up)_CERT_DIR"]
        return Peer(addr: addr, certDir: certs?.isEmpty == false ? certs : nil)
    }

    static var user: String { ProcessInfo.processInfo.environment["DOGESTRY_TEST_REGISTRY_USER"] ?? "dogestry" }
    static var pass: String { ProcessInfo.processInfo.environment["DOGESTRY_TEST_REGISTRY_PASS"] ?? "" }
    var user: String { Self.user }
    var pass: String { Self.pass }

    /// A registry remote as the CLI opens one (credentials and CA found as Docker finds them).
    static func registry(_ url: String, creds: String? = nil, insecure: Bool = false, environment: [String: String] = [:]) throws -> RegistryImageStore {
        var s = RegistrySettings()
        s.insecureAll = insecure
        let explicit = try creds.map { try RegistryCredentials.parse($0, origin: "--creds") }
        let store = RegistryCredentialStore(explicit: explicit, environment: environment, home: "/nonexistent")
        return try RegistryImageStore.open(url, settings: s, store: store)
    }

    func dockerCLI(_ args: [String], config: String) throws -> T.Run {
        let host = try CLITest.requiredEnvironment("DOGESTRY_TEST_DOCKER_HOST")
        return try T.sh(["docker", "--config", config] + args, env: ["DOCKER_HOST": host])
    }

    /// `docker login` to `p` (the password on standard input), writing `config`/config.json.
    func dockerLogin(_ p: Peer, config: String, file: StaticString = #filePath, line: UInt = #line) throws {
        let login = try T.sh(["sh", "-c", "printf %s \"$P\" | docker --config \"$C\" login -u \"$U\" --password-stdin \(p.addr)"],
                             env: ["DOCKER_HOST": try CLITest.requiredEnvironment("DOGESTRY_TEST_DOCKER_HOST"), "P": pass, "C": config, "U": user])
        XCTAssertEqual(login.status, 0, login.err, file: file, line: line)
    }

    func podmanCLI(_ args: [String]) throws -> T.Run {
        let dir = try CLITest.requiredEnvironment("DOGESTRY_ENGINE_DIR")
        return try T.sh(["podman", "--root", dir + "/storage", "--runroot", dir + "/run"] + args)
    }

    // MARK: registry -> S3 -> engines

    /// An image `docker push`ed to the basic-auth registry (TLS verified through the CA in
    /// /etc/docker/certs.d, credentials from the config.json `docker login` wrote) copies into S3
    /// byte for byte and pulls from there into Docker and Podman with the same image ID.
    func testDockerPushedImageCopiesToS3AndPullsIntoBothEngines() throws {
        let p = try Self.peer("basic")
        let docker = try S.docker(), podman = try S.podman()
        let img = try makeImage("docker-app-v1.tar", "dockerpush", uniqueTopLayer: true)
        try load(img, into: docker)
        removeAtEnd(img, from: [podman])
        let cfg = try EngineTestSupport.makeTempDirectory("reg-dockercfg")
        defer { try? FileManager.default.removeItem(atPath: cfg) }
        try dockerLogin(p, config: cfg)
        let remoteTag = "\(p.addr)/dp/\(img.name.split(separator: "/").last!):\(img.tagPart)"
        XCTAssertEqual(try dockerCLI(["tag", img.id.description, remoteTag], config: cfg).status, 0)
        let push = try dockerCLI(["push", remoteTag], config: cfg)
        XCTAssertEqual(push.status, 0, push.err)
        _ = try? dockerCLI(["rmi", remoteTag], config: cfg)

        let reg = try Self.registry("registry://\(p.addr)/dp", environment: ["DOCKER_CONFIG": cfg])
        let name = String(img.name.split(separator: "/").last!)
        let pushed = try reg.client.manifest("dp/" + name, img.tagPart)
        let s3 = try T.s3Remote()
        let c = Copier(source: reg, destination: RepositoryImageStore(remote: s3))
        let r = try c.copy(try c.resolve(["\(name):\(img.tagPart)"], all: false))
        XCTAssertEqual(r.items.first?.id, img.id)
        let repo = Repository(remote: s3)
        XCTAssertEqual(try repo.readRef(name: name, tag: img.tagPart), pushed.digest, "the manifest docker pushed is kept, digest and all")
        XCTAssertEqual(try s3.read(Repository.blobKey(pushed.digest), limit: 1 << 20), pushed.bytes, "byte for byte")
        XCTAssertNil(try repo.readManifest(pushed.digest).layers.first?.uncompressedSize, "docker's manifest carries no dogestry annotations")

        // Both engines pull it from S3 (sizes from the layer index the copy wrote).
        try docker.removeImage(img.id.hex, force: true)
        let (report, results, _) = try enginePull(["\(name):\(img.tagPart)"], from: s3, into: [docker, podman])
        for h in results { XCTAssertNil(h.error, "\(h.address): \(h.error ?? "")") }
        XCTAssertEqual(report.images.map(\.id), [img.id])
        XCTAssertEqual(try docker.inspectImage(img.id.hex)?.id, img.id)
        XCTAssertEqual(try podman.inspectImage(img.id.hex)?.diffIDs, img.diffIDs)
        XCTAssertNotNil(try podman.inspectImage(img.id.hex), "podman holds the same image ID")
        addTeardownBlock { for e in [docker, podman] { try? e.removeImage(img.id.hex, force: true) } }

        // A verify of the S3 remote finds the image whole.
        let v = try Verifier(repository: repo, progress: SilentProgress()).verify(deep: true)
        XCTAssertTrue(v.problems.isEmpty, "\(v.problems)")
    }

    // MARK: dogestry -> registry -> docker, podman, skopeo

    /// `dogestry copy` into the token-auth registry (CA in /etc/containers/certs.d, --dest-creds):
    /// docker, podman and skopeo pull the image with its image ID; a second copy moves nothing;
    /// list and inspect read the registry; wrong and missing credentials and an unknown image are
    /// one-line errors that never show the password.
    func testCopyIntoTokenRegistryPullsWithDockerPodmanSkopeo() throws {
        let p = try Self.peer("token")
        let local = try T.localRemote(), root = (local as! LocalRemote).root
        let img = try makeImage("docker-app-v2.tar", "tok", uniqueTopLayer: true)
        try img.push(to: local)
        let dir = try EngineTestSupport.makeTempDirectory("reg-tok")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let url = "registry://\(p.addr)/tk"
        let creds = "\(user):\(pass)"

        let run = try S.runCLI(["copy", root, url, img.tag, "--dest-creds", creds, "--json"], in: dir)
        XCTAssertEqual(run.status, 0, run.stderr)
        XCTAssertFalse(run.stdout.contains(pass) || run.stderr.contains(pass), "the password was shown")
        let j = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(run.stdout.utf8)) as? [String: Any])
        XCTAssertEqual(j["blobsPresent"] as? Int, 0, run.stdout)
        let again = try S.runCLI(["copy", root, url, img.tag, "--dest-creds", creds, "--json"], in: dir)
        XCTAssertEqual(again.status, 0, again.stderr)
        let aj = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(again.stdout.utf8)) as? [String: Any])
        XCTAssertEqual((aj["blobs"] as? [[String: Any]])?.filter { $0["state"] as? String != "present" && $0["kind"] as? String == "layer" }.count, 0,
                       "a second copy moves no layer: \(again.stdout)")

        XCTAssertTrue(run.stderr.contains("layers are zstd"), "a zstd copy into a registry warns about Docker: \(run.stderr)")
        let ref = "\(p.addr)/tk/\(img.name):\(img.tagPart)"
        // For Docker's classic store the layers must be gzip: --compression recompresses (staged,
        // then only what the registry lacks); the image ID stays.
        let gz = try S.runCLI(["copy", root, "registry://\(p.addr)/tkgz", img.tag, "--dest-creds", creds, "--compression", "gzip", "--json"], in: dir)
        XCTAssertEqual(gz.status, 0, gz.stderr)
        let gj = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(gz.stdout.utf8)) as? [String: Any])
        XCTAssertEqual(gj["layersUploaded"] as? Int, img.layers.count, gz.stdout)
        let gzAgain = try S.runCLI(["copy", root, "registry://\(p.addr)/tkgz", img.tag, "--dest-creds", creds, "--compression", "gzip", "--json"], in: dir)
        XCTAssertEqual(gzAgain.status, 0, gzAgain.stderr)
        let gaj = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(gzAgain.stdout.utf8)) as? [String: Any])
        XCTAssertEqual(gaj["layersUploaded"] as? Int, 0, "gzip is deterministic: the second recompressed copy finds every layer there: \(gzAgain.stdout)")
        let gzRef = "\(p.addr)/tkgz/\(img.name):\(img.tagPart)"
        // docker (127.0.0.0/8 is one of its default insecure registries; the login is real).
        let cfg = try EngineTestSupport.makeTempDirectory("reg-tok-cfg")
        defer { try? FileManager.default.removeItem(atPath: cfg) }
        try dockerLogin(p, config: cfg)
        let dp = try dockerCLI(["pull", gzRef], config: cfg)
        XCTAssertEqual(dp.status, 0, dp.err)
        let docker = try S.docker()
        addTeardownBlock { try? docker.removeImage(img.id.hex, force: true) }
        XCTAssertEqual(try docker.inspectImage(gzRef)?.id, img.id)
        // podman verifies TLS with /etc/containers/certs.d.
        let pp = try podmanCLI(["pull", "--creds", creds, ref])
        XCTAssertEqual(pp.status, 0, pp.err)
        let podman = try S.podman()
        addTeardownBlock { try? podman.removeImage(img.id.hex, force: true) }
        XCTAssertEqual(try podman.inspectImage(ref)?.diffIDs, img.diffIDs)
        // skopeo into an OCI layout.
        let sk = try T.sh(["skopeo", "copy", "--src-creds", creds, "docker://" + ref, "oci:\(dir)/layout:x"])
        XCTAssertEqual(sk.status, 0, sk.err)
        let skIndex = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: dir + "/layout/index.json"))) as? [String: Any])
        let md = try XCTUnwrap(((skIndex["manifests"] as? [[String: Any]])?.first?["digest"] as? String)?.split(separator: ":").last)
        let mbytes = try String(contentsOfFile: dir + "/layout/blobs/sha256/\(md)", encoding: .utf8)
        XCTAssertEqual(try T.configDigest(mbytes), img.id.description)
        XCTAssertEqual("sha256:" + md, try Repository(remote: local).readRef(name: img.name, tag: img.tagPart)?.description,
                       "the manifest went into the registry byte for byte")

        // list and inspect on the registry.
        let ls = try S.runCLI(["list", url, "--creds", creds], in: dir)
        XCTAssertEqual(ls.status, 0, ls.stderr)
        XCTAssertTrue(ls.stdout.contains(img.name) && ls.stdout.contains(img.tagPart), ls.stdout)
        let ins = try S.runCLI(["inspect", url, img.tag, "--creds", creds, "--json"], in: dir)
        XCTAssertEqual(ins.status, 0, ins.stderr)
        XCTAssertTrue(ins.stdout.contains(img.id.description), ins.stdout)

        // Bad credentials, none at all, an unknown image: one line each, no password shown.
        for (args, want) in [(["list", url, "--creds", "\(user):wrong-\(pass)"], "registry \(p.addr)"),
                             (["list", url], "registry \(p.addr)"),
                             (["inspect", url, "\(img.name):no-such-tag", "--creds", creds], "no-such-tag")] {
            let r = try S.runCLI(args, in: dir)
            XCTAssertNotEqual(r.status, 0, "\(args): \(r.stdout)")
            let errs = r.stderrLines.filter { $0.hasPrefix("dogestry: error:") }
            XCTAssertEqual(errs.count, 1, "\(args): \(r.stderr)")
            XCTAssertTrue(r.stderr.contains(want), "\(args): \(r.stderr)")
            XCTAssertFalse(r.stderr.contains(pass), "\(args): the password was shown")
        }
    }

    // MARK: push, tag, rm, pull on a registry

    /// `push` from an archive and from Docker into the basic-auth registry (gzip layers, a tag
    /// skopeo reads back with the image's ID), `tag` to another repository (blobs mounted),
    /// `pull` from the registry into Podman, `rm` of one tag; a push of the same image again
    /// uploads no layer.
    func testPushTagRmPullOnRegistry() throws {
        let p = try Self.peer("basic")
        let dir = try EngineTestSupport.makeTempDirectory("reg-ptr")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let img = try makeImage("docker-app-v2.tar", "ptr", uniqueTopLayer: true)
        let arc = dir + "/img.tar"
        try Data(try img.archive()).write(to: URL(fileURLWithPath: arc))
        let url = "registry://\(p.addr)/pt", creds = "\(user):\(pass)"
        let push = try S.runCLI(["push", url, "--archive", arc, "--creds", creds, "--json"], in: dir)
        XCTAssertEqual(push.status, 0, push.stderr)
        let pj = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(push.stdout.utf8)) as? [String: Any])
        XCTAssertEqual(pj["layersUploaded"] as? Int, img.layers.count, push.stdout)
        let ref = "\(p.addr)/pt/\(img.name):\(img.tagPart)"
        let raw = try T.sh(["skopeo", "inspect", "--raw", "--creds", creds, "--cert-dir", try XCTUnwrap(p.certDir), "docker://" + ref])
        XCTAssertEqual(raw.status, 0, raw.err)
        XCTAssertEqual(try T.configDigest(raw.out), img.id.description)
        XCTAssertTrue(raw.out.contains("tar+gzip") || raw.out.contains("tar.gzip"), "layers pushed to a registry are gzip by default: \(raw.out)")

        let again = try S.runCLI(["push", url, "--archive", arc, "--creds", creds, "--json"], in: dir)
        XCTAssertEqual(again.status, 0, again.stderr)
        let aj = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(again.stdout.utf8)) as? [String: Any])
        XCTAssertEqual(aj["layersUploaded"] as? Int, 0, again.stdout)
        XCTAssertEqual(aj["layersPresent"] as? Int, img.layers.count, again.stdout)

        // tag into another repository: the registry mounts the blobs, docker-less skopeo reads it.
        let tag = try S.runCLI(["tag", url, img.tag, "other/\(img.name.split(separator: "/").last!):moved", "--creds", creds], in: dir)
        XCTAssertEqual(tag.status, 0, tag.stderr)
        let movedRef = "\(p.addr)/pt/other/\(img.name.split(separator: "/").last!):moved"
        let moved = try T.sh(["skopeo", "inspect", "--raw", "--creds", creds, "--cert-dir", try XCTUnwrap(p.certDir), "docker://" + movedRef])
        XCTAssertEqual(moved.status, 0, moved.err)
        XCTAssertEqual(moved.out, raw.out, "the same manifest under the new tag")
        let skc = try T.sh(["skopeo", "copy", "--src-creds", creds, "--src-cert-dir", try XCTUnwrap(p.certDir), "docker://" + movedRef, "oci:\(dir)/moved:x"])
        XCTAssertEqual(skc.status, 0, "the mounted blobs are readable in the new repository: \(skc.err)")

        // pull from the registry into Podman (TLS through /etc/docker/certs.d, --creds).
        let podman = try S.podman()
        removeAtEnd(img, from: [podman])
        let pull = try S.runCLI(["pull", url, img.tag, "--creds", creds, "-H", try CLITest.requiredEnvironment("DOGESTRY_TEST_PODMAN_HOST")], in: dir)
        XCTAssertEqual(pull.status, 0, pull.stderr)
        XCTAssertEqual(try podman.inspectImage(img.id.hex)?.diffIDs, img.diffIDs)

        // rm one tag; the other stays.
        let rm = try S.runCLI(["rm", url, "other/\(img.name.split(separator: "/").last!):moved", "--creds", creds], in: dir)
        XCTAssertEqual(rm.status, 0, rm.stderr)
        XCTAssertNotEqual(try T.sh(["skopeo", "inspect", "--raw", "--creds", creds, "--cert-dir", try XCTUnwrap(p.certDir), "docker://" + movedRef]).status, 0)
        XCTAssertEqual(try T.sh(["skopeo", "inspect", "--raw", "--creds", creds, "--cert-dir", try XCTUnwrap(p.certDir), "docker://" + ref]).status, 0)
    }

    // MARK: multi-platform

    /// An image index made offline (two platforms sharing their base layers) goes into the plain
    /// registry with skopeo, then registry -> S3 -> another repository of the registry: every
    /// manifest and the index arrive byte for byte; S3 stores each shared layer once; a pull
    /// from S3 takes the host's platform; --platform narrows a copy to one.
    func testMultiPlatformIndexRoundTripsByteIdentical() throws {
        let p = try Self.peer("plain")
        let label = "mp-" + S.uniqueSuffix()
        let amd = try Image(fixture: "docker-app-v1.tar", tag: "mp/app:1", label: label + "-amd64", uniqueTopLayer: true).withArchitecture("amd64")
        let arm = try Image(fixture: "docker-app-v1.tar", tag: "mp/app:1", label: label + "-arm64", uniqueTopLayer: true).withArchitecture("arm64")
        let layout = try EngineTestSupport.makeTempDirectory("reg-mp")
        defer { try? FileManager.default.removeItem(atPath: layout) }
        let (indexBytes, manifests) = try Self.writeOCILayout(layout, images: [("amd64", amd), ("arm64", arm)], tag: "1")
        let indexDigest = Digest.of(indexBytes)
        let repoName = "mp\(S.uniqueSuffix())/app"
        let sk = try T.sh(["skopeo", "copy", "--all", "--preserve-digests", "--dest-tls-verify=false", "oci:\(layout):1", "docker://\(p.addr)/\(repoName):1"])
        XCTAssertEqual(sk.status, 0, sk.err)

        let reg = try Self.registry("registry://\(p.addr)", insecure: true)
        let s3 = try T.s3Remote()
        let c1 = Copier(source: reg, destination: RepositoryImageStore(remote: s3))
        let r1 = try c1.copy(try c1.resolve(["\(repoName):1"], all: false))
        XCTAssertEqual(r1.items.first?.isIndex, true)
        let repo = Repository(remote: s3)
        XCTAssertEqual(try repo.readRef(name: repoName, tag: "1"), indexDigest, "the ref points at the index")
        XCTAssertEqual(try s3.read(Repository.blobKey(indexDigest), limit: 1 << 20), indexBytes)
        let layers = r1.blobs.filter { $0.kind == .layer }
        XCTAssertEqual(layers.count, Set(manifests.flatMap { $0.layers }).count, "shared layers are handled once")
        XCTAssertEqual(layers.count, amd.layers.count + 1, "two platforms share all but their top layer")

        // S3 -> another repository of the registry: byte-identical.
        let back = try Self.registry("registry://\(p.addr)/back", insecure: true)
        let c2 = Copier(source: RepositoryImageStore(repo), destination: back)
        _ = try c2.copy(try c2.resolve(["\(repoName):1"], all: false))
        let raw = try T.sh(["skopeo", "inspect", "--raw", "--tls-verify=false", "docker://\(p.addr)/back/\(repoName):1"])
        XCTAssertEqual(raw.status, 0, raw.err)
        XCTAssertEqual(Array(raw.out.utf8), indexBytes, "the index is byte-identical after registry -> S3 -> registry")
        for m in manifests {
            let got = try back.client.manifest("back/" + repoName, m.digest.description)
            XCTAssertEqual(got.bytes, m.bytes, "manifest \(m.digest)")
        }
        let skb = try T.sh(["skopeo", "copy", "--all", "--src-tls-verify=false", "docker://\(p.addr)/back/\(repoName):1", "oci:\(layout)-back:1"])
        XCTAssertEqual(skb.status, 0, "skopeo reads every platform back: \(skb.err)")
        try? FileManager.default.removeItem(atPath: layout + "-back")

        // Pull from S3 takes the host's platform (amd64 here), or --platform's.
        let host = Platform.host
        let puller = Puller(repository: repo, progress: SilentProgress())
        let got = try puller.resolve("\(repoName):1")
        XCTAssertEqual(got.index, indexDigest)
        XCTAssertEqual(got.id, host.architecture == "arm64" ? arm.id : amd.id)
        _ = try puller.writeArchive([got], to: NullSink())   // every blob and diffID verified
        let armPull = try Puller(repository: repo, progress: SilentProgress(), platform: try Platform.parse("linux/arm64")).resolve("\(repoName):1")
        XCTAssertEqual(armPull.id, arm.id)
        let nope = XCTAssertThrowsErrorMessage(try Puller(repository: repo, progress: SilentProgress(), platform: try Platform.parse("linux/s390x")).resolve("\(repoName):1"))
        XCTAssertTrue(nope.contains("linux/amd64") && nope.contains("linux/arm64"), nope)

        // serve hands the index out as stored; containerd pulls its own platform through it.
        let serve = try T.InProcessServe(s3)
        defer { serve.stop() }
        let sraw = try T.sh(["skopeo", "inspect", "--raw", "--tls-verify=false", "docker://\(serve.address)/\(repoName):1"])
        XCTAssertEqual(sraw.status, 0, sraw.err)
        XCTAssertEqual(Array(sraw.out.utf8), indexBytes, "serve gives the index byte for byte")
        let sock = try CLITest.requiredEnvironment("DOGESTRY_TEST_CONTAINERD_SOCK")
        let ns = "reg-mp-" + S.uniqueSuffix()
        let sref = "\(serve.address)/\(repoName):1"
        let cp = try T.sh(["ctr", "-a", sock, "-n", ns, "images", "pull", "--plain-http", sref])
        XCTAssertEqual(cp.status, 0, cp.err)
        let cls = try T.sh(["ctr", "-a", sock, "-n", ns, "images", "ls"])
        XCTAssertTrue(cls.out.split(separator: "\n").contains { $0.hasPrefix(sref + " ") && $0.contains(indexDigest.description) }, cls.out)
        let hostManifest = try XCTUnwrap(manifests.first { $0.arch == (host.architecture == "arm64" ? "arm64" : "amd64") })
        let cc = try T.sh(["ctr", "-a", sock, "-n", ns, "content", "get", hostManifest.digest.description])
        XCTAssertEqual(cc.status, 0, "containerd fetched its platform's manifest: \(cc.err)")
        _ = try? T.sh(["ctr", "-a", sock, "-n", ns, "images", "rm", "--sync", sref])

        // --platform narrows a copy: the ref then points at that platform's manifest.
        let local = try T.localRemote()
        let dir = try EngineTestSupport.makeTempDirectory("reg-mp-cli")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let cli = try S.runCLI(["copy", "registry://\(p.addr)", (local as! LocalRemote).root, "\(repoName):1", "--platform", "linux/arm64", "--insecure"], in: dir)
        XCTAssertEqual(cli.status, 0, cli.stderr)
        let armManifest = try XCTUnwrap(manifests.first { $0.arch == "arm64" })
        XCTAssertEqual(try Repository(remote: local).readRef(name: repoName, tag: "1"), armManifest.digest)
        let ins = try S.runCLI(["inspect", (local as! LocalRemote).root, "\(repoName):1"], in: dir)
        XCTAssertEqual(ins.status, 0, ins.stderr)

        // verify and inspect understand the index on S3.
        let v = try Verifier(repository: repo, progress: SilentProgress()).verify(deep: false)
        XCTAssertTrue(v.problems.isEmpty, "\(v.problems)")
    }

    // MARK: interruption, outages

    /// A copy into the registry that fails part way (the source stops serving a layer) leaves no
    /// tag there; a re-run moves only what is still missing.
    func testInterruptedCopyResumesMovingOnlyTheRest() throws {
        let p = try Self.peer("plain")
        let local = try T.localRemote()
        let img = try makeImage("docker-app-v2.tar", "resume", uniqueTopLayer: true)
        try img.push(to: local)
        let repo = Repository(remote: local)
        let m = try repo.readManifest(try XCTUnwrap(repo.readRef(name: img.name, tag: img.tagPart)))
        XCTAssertGreaterThan(m.layers.count, 1)
        let failing = MaintenanceTests.HookRemote(local)
        let failKey = Repository.blobKey(m.layers.last!.digest)
        failing.beforeOpen = { key in
            if key == failKey { throw DogestryError(.remote, "\(local.displayURL): connection reset while reading \(key)") }
        }
        let reg = try Self.registry("registry://\(p.addr)/resume", insecure: true)
        let c1 = Copier(source: RepositoryImageStore(remote: failing), destination: reg, threads: 1)
        XCTAssertThrowsError(try c1.copy(try c1.resolve([img.tag], all: false)))
        XCTAssertNil(try reg.client.headManifest("resume/" + img.name, img.tagPart), "an interrupted copy left a tag behind")

        let reg2 = try Self.registry("registry://\(p.addr)/resume", insecure: true)
        let c2 = Copier(source: RepositoryImageStore(repo), destination: reg2, threads: 1)
        let r2 = try c2.copy(try c2.resolve([img.tag], all: false))
        let moved = r2.blobs.filter { $0.kind == .layer && $0.state == .copied }.map(\.digest)
        XCTAssertEqual(moved, [m.layers.last!.digest], "the re-run moved only the layer the first run could not")
        XCTAssertNotNil(try reg2.client.headManifest("resume/" + img.name, img.tagPart))
    }

    /// A registry that is down, and one whose tokens expire while dogestry works (it fetches a new
    /// one and goes on).
    func testRegistryDownAndTokenRefresh() throws {
        let dir = try EngineTestSupport.makeTempDirectory("reg-down")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let down = try S.runCLI(["list", "registry://127.0.0.1:9", "--insecure"], in: dir, timeout: 60)
        XCTAssertEqual(down.status, 1)
        XCTAssertEqual(down.stderrLines.count, 1, down.stderr)
        XCTAssertTrue(down.stderr.contains("127.0.0.1:9"), down.stderr)

        // A token registry of its own with 3-second tokens.
        let (port, rdir) = try startTokenRegistry(ttl: 3)
        let local = try T.localRemote()
        let a = try makeImage("docker-app-v1.tar", "ttl-a", uniqueTopLayer: true)
        let b = try makeImage("docker-app-v1.tar", "ttl-b", uniqueTopLayer: true)
        try a.push(to: local); try b.push(to: local)
        var s = RegistrySettings()
        var h = RegistrySettings.Host(); h.ca = rdir + "/ca.crt"
        s.hosts["127.0.0.1:\(port)"] = h
        let store = RegistryCredentialStore(explicit: try RegistryCredentials.parse("\(user):\(pass)", origin: "--creds"), environment: [:], home: "/nonexistent")
        let reg = try RegistryImageStore.open("registry://127.0.0.1:\(port)/ttl", settings: s, store: store)
        let c = Copier(source: RepositoryImageStore(remote: local), destination: reg)
        _ = try c.copy(try c.resolve([a.tag], all: false))
        Thread.sleep(forTimeInterval: 4.5)   // the token has expired
        _ = try c.copy(try c.resolve([b.tag], all: false))
        XCTAssertNotNil(try reg.client.headManifest("ttl/" + b.name, b.tagPart))
        let tokens = (try? String(contentsOfFile: rdir + "/token.log", encoding: .utf8)) ?? ""
        XCTAssertGreaterThanOrEqual(tokens.components(separatedBy: "user='\(user)' outcome=200").count - 1, 2, "a second token was fetched: \(tokens)")

        // The token expires and no new one can be had (the token server is gone): one error that
        // names the registry and its token server, never the password or the token.
        let tpid = try String(contentsOfFile: rdir + "/token.pid", encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines)
        XCTAssertEqual(kill(pid_t(tpid) ?? 0, SIGKILL), 0)
        Thread.sleep(forTimeInterval: 4.5)
        let cimg = try makeImage("docker-app-v1.tar", "ttl-c", uniqueTopLayer: true)
        try cimg.push(to: local)
        let expired = XCTAssertThrowsErrorMessage(try c.copy(try c.resolve([cimg.tag], all: false)))
        XCTAssertTrue(expired.contains("127.0.0.1:\(port)"), expired)
        XCTAssertTrue(expired.contains("token"), expired)
        XCTAssertFalse(expired.contains(pass) || expired.contains("\n"), expired)
    }

    // MARK: support


    /// The message of the error `body` throws ("" and a failure when it throws none).
    func XCTAssertThrowsErrorMessage<R>(_ body: @autoclosure () throws -> R, file: StaticString = #filePath, line: UInt = #line) -> String {
        do { _ = try body(); XCTFail("no error", file: file, line: line); return "" } catch let e as DogestryError { return e.message } catch { return "\(error)" }
    }

    struct LayoutManifest { var arch: String; var digest: Digest; var bytes: [UInt8]; var layers: [Digest] }

    /// Writes an OCI image layout holding an index of `images` (uncompressed tar layers) tagged `tag`.
    static func writeOCILayout(_ dir: String, images: [(arch: String, image: Image)], tag: String) throws -> ([UInt8], [LayoutManifest]) {
        try FS.makeDirectories(dir + "/blobs/sha256")
        func put(_ b: [UInt8]) throws -> Digest {
            let d = Digest.of(b)
            try Data(b).write(to: URL(fileURLWithPath: dir + "/blobs/sha256/" + d.hex))
            return d
        }
        var entries: [Descriptor] = [], out: [LayoutManifest] = []
        for (arch, img) in images {
            let layers = try img.layers.map { l in Descriptor(mediaType: "application/vnd.oci.image.layer.v1.tar", digest: try put(l), size: Int64(l.count)) }
            let cd = try put(img.config)
            let m = ImageManifest(config: Descriptor(mediaType: "application/vnd.oci.image.config.v1+json", digest: cd, size: Int64(img.config.count)), layers: layers)
            // Written as a registry client would (indented), not in dogestry's canonical form.
            let obj: [String: Any] = ["schemaVersion": 2, "mediaType": MediaType.ociManifest,
                                      "config": ["mediaType": m.config.mediaType, "digest": cd.description, "size": m.config.size],
                                      "layers": layers.map { ["mediaType": $0.mediaType, "digest": $0.digest.description, "size": $0.size] }]
            let mb = [UInt8](try JSONSerialization.data(withJSONObject: obj, options: [.prettyPrinted, .withoutEscapingSlashes]))
            let md = try put(mb)
            entries.append(Descriptor(mediaType: MediaType.ociManifest, digest: md, size: Int64(mb.count), platform: Platform(os: "linux", architecture: arch)))
            out.append(LayoutManifest(arch: arch, digest: md, bytes: mb, layers: layers.map(\.digest)))
        }
        let iobj: [String: Any] = ["schemaVersion": 2, "mediaType": MediaType.ociIndex,
                                   "manifests": entries.map { ["mediaType": $0.mediaType, "digest": $0.digest.description, "size": $0.size,
                                                                "platform": ["os": $0.platform!.os, "architecture": $0.platform!.architecture]] }]
        let ib = [UInt8](try JSONSerialization.data(withJSONObject: iobj, options: [.prettyPrinted, .withoutEscapingSlashes]))
        let id = try put(ib)
        let top: [String: Any] = ["schemaVersion": 2, "manifests": [["mediaType": MediaType.ociIndex, "digest": id.description, "size": ib.count,
                                                                      "annotations": ["org.opencontainers.image.ref.name": tag]]]]
        try JSONSerialization.data(withJSONObject: top).write(to: URL(fileURLWithPath: dir + "/index.json"))
        try Data(#"{"imageLayoutVersion":"1.0.0"}"#.utf8).write(to: URL(fileURLWithPath: dir + "/oci-layout"))
        return (ib, out)
    }
}

extension EngineTestSupport.Image {
    /// The same image with `architecture` (and `os` linux) in its config: another image ID.
    func withArchitecture(_ arch: String) throws -> EngineTestSupport.Image {
        var copy = self
        guard var cfg = try JSONSerialization.jsonObject(with: Data(config)) as? [String: Any] else {
            throw DogestryError.invalid("config is not a JSON object")
        }
        cfg["architecture"] = arch
        cfg["os"] = "linux"
        copy.config = [UInt8](try JSONSerialization.data(withJSONObject: cfg, options: [.sortedKeys, .withoutEscapingSlashes]))
        return copy
    }
}

extension XCTestCase {
    /// A token-auth registry of this test's own (scripts/lib/registry.sh) on two free ports, whose
    /// tokens live `ttl` seconds; stopped and removed when the test ends. Its port and directory
    /// (ca.crt, token.log, token.pid).
    func startTokenRegistry(ttl: Int) throws -> (port: Int, dir: String) {
        let rdir = try EngineTestSupport.makeTempDirectory("reg-ttl")
        let lib = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("scripts/lib/registry.sh").path
        let port = try LoopbackPort.freePair()
        let start = try ServeClientTests.sh(["bash", "-c", "for f in /proc/$$/fd/*; do n=${f##*/}; [ \"$n\" -gt 2 ] 2>/dev/null && eval \"exec $n>&-\"; done; . \"$1\" && registry_start \"$2\" \"$3\" token \"$4\" >\"$2/start.log\" 2>&1 </dev/null || { cat \"$2/start.log\"; exit 1; }", "-", lib, rdir, String(port), String(ttl)], timeout: 120)
        addTeardownBlock {
            _ = try? ServeClientTests.sh(["bash", "-c", ". \"$1\" && registry_stop \"$2\" >/dev/null 2>&1 </dev/null", "-", lib, rdir])
            try? FileManager.default.removeItem(atPath: rdir)
        }
        guard start.status == 0 else { throw DogestryError.io("the test's token registry did not start: \(start.out)\(start.err)") }
        return (port, rdir)
    }
}
