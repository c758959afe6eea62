import DogestryCore
import DogestryEngine
@testable import DogestryRemotes
import DogestryServe
import DogestrySync
import DogestryTestSupport
import Foundation
import XCTest

/// Registries as the big ones behave, against real distribution 2.8 instances started by
/// scripts/test: one with token auth whose blobs live in S3 (GET and HEAD of a blob answer 307 to
/// a presigned URL on the storage host, behind a counting proxy), and the plain one behind the
/// project's fault proxy (429 with Retry-After, 403, 405, declined mounts, pagination, a failed
/// chunk). Indexes and manifest lists are pushed by an independent client
/// (scripts/lib/registry_fixtures.py) in the shapes buildx and docker write.
final class RegistryBehaviourTests: EngineRemoteTestCase {
    typealias T = ServeClientTests
    typealias R = RegistryTests
    override var namePrefix: String { "regb" }

    var creds: String { "\(R.user):\(R.pass)" }

    func json(_ s: String) throws -> [String: Any] {
        try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(s.utf8)) as? [String: Any], s)
    }

    func blobStates(_ copyJSON: [String: Any]) -> [(kind: String, state: String, digest: String)] {
        ((copyJSON["blobs"] as? [[String: Any]]) ?? []).map { ($0["kind"] as? String ?? "", $0["state"] as? String ?? "", $0["digest"] as? String ?? "") }
    }

    /// How many lines of `stderr` are errors (warnings may come before).
    func errorLines(_ stderr: String) -> Int {
        stderr.split(separator: "\n").filter { $0.hasPrefix("dogestry: error:") }.count
    }

    /// `count` bytes of a pattern (`seed` makes them differ) and a staged file holding them.
    func stagedBlob(_ count: Int, seed: Int) throws -> ([UInt8], StagedFile) {
        var bytes = [UInt8](repeating: 0, count: count)
        for i in bytes.indices { bytes[i] = UInt8(truncatingIfNeeded: ((i &+ seed) &* 2654435761) >> 13) }
        let staged = try TempDirectory.staged(prefix: "regb-blob")
        let sink = try staged.sink()
        try bytes.withUnsafeBytes { try sink.write($0) }
        try sink.close()
        return (bytes, staged)
    }

    /// `ctr images pull` of `ref` (plain HTTP) into a namespace of its own (removed afterwards);
    /// the result and `ctr images ls` of that namespace, and the namespace for more `ctr` calls.
    func ctrPull(_ ref: String, platform: String? = nil) throws -> (pull: T.Run, images: String, namespace: String) {
        let sock = try CLITest.requiredEnvironment("DOGESTRY_TEST_CONTAINERD_SOCK")
        let ns = "regb-" + S.uniqueSuffix()
        addTeardownBlock { _ = try? T.sh(["ctr", "-a", sock, "-n", ns, "images", "rm", "--sync", ref]) }
        let pull = try T.sh(["ctr", "-a", sock, "-n", ns, "images", "pull", "--plain-http"] + (platform.map { ["--platform", $0] } ?? []) + [ref])
        return (pull, try T.sh(["ctr", "-a", sock, "-n", ns, "images", "ls"]).out, ns)
    }

    func localDir(_ label: String) throws -> (Remote, String) {
        let dir = try EngineTestSupport.makeTempDirectory(label)
        addTeardownBlock { try? FileManager.default.removeItem(atPath: dir) }
        return (try LocalRemote(path: dir), dir)
    }

    // MARK: redirects to object storage

    /// Through a token-auth registry that redirects blob reads to presigned S3 URLs: push into it,
    /// copy out of it to a directory and to S3, pull and inspect from it. Every blob read went to
    /// the storage host with the presigned URL alone: no request there carried the registry's
    /// bearer token or the user's password.
    func testRedirectsToObjectStorageCarryNoRegistryCredentials() throws {
        let p = try R.peer("s3")
        let storage = FaultProxy(attachingTo: try CLITest.requiredEnvironment("DOGESTRY_TEST_REGISTRY_S3_STORE"),
                                 caFile: try XCTUnwrap(p.certDir) + "/ca.crt")
        let (local, ldir) = try localDir("regb-redirect")
        let img = try makeImage("docker-app-v1.tar", "redirect", uniqueTopLayer: true)
        try img.push(to: local)
        let url = "registry://\(p.addr)/rd\(S.uniqueSuffix())"
        try storage.reset()

        let push = try S.runCLI(["copy", ldir, url, img.tag, "--creds", creds, "--json"], in: ldir)
        XCTAssertEqual(push.status, 0, push.stderr)
        let ref = "\(p.addr)/\(url.split(separator: "/").last!)/\(img.name):\(img.tagPart)"
        let raw = try T.sh(["skopeo", "inspect", "--raw", "--creds", creds, "--cert-dir", try XCTUnwrap(p.certDir), "docker://" + ref])
        XCTAssertEqual(raw.status, 0, raw.err)
        XCTAssertEqual(try T.configDigest(raw.out), img.id.description)

        // registry -> directory (CLI), registry -> S3 (library), pull and inspect from the registry.
        let (_, out) = try localDir("regb-redirect-out")
        let back = try S.runCLI(["copy", url, out, img.tag, "--creds", creds], in: ldir)
        XCTAssertEqual(back.status, 0, back.stderr)
        XCTAssertEqual(try Puller(repository: Repository(remote: try LocalRemote(path: out)), progress: SilentProgress()).resolve(img.tag).id, img.id)
        let reg = try R.registry(url, creds: creds)
        let c = Copier(source: reg, destination: RepositoryImageStore(remote: try T.s3Remote()))
        let r = try c.copy(try c.resolve([img.tag], all: false))
        XCTAssertEqual(r.blobs.filter { $0.kind == .layer && $0.state == .copied }.count, img.layers.count)
        let pull = try S.runCLI(["pull", url, img.tag, "--creds", creds, "--archive", ldir + "/pulled.tar"], in: ldir)
        XCTAssertEqual(pull.status, 0, pull.stderr)
        let ins = try S.runCLI(["inspect", url, img.tag, "--creds", creds, "--json"], in: ldir)
        XCTAssertEqual(ins.status, 0, ins.stderr)
        XCTAssertEqual(try json(ins.stdout)["id"] as? String, img.id.description, ins.stdout)

        let st = try storage.stats
        XCTAssertGreaterThan(st.presigned, 0, "blob reads were redirected to the storage host: \(st)")
        XCTAssertNil(st.authorization["Bearer"], "the registry's token reached the storage host: \(st.authorization)")
        XCTAssertNil(st.authorization["Basic"], "the user's password reached the storage host: \(st.authorization)")

        // A second copy with nothing to move writes no blob.
        let again = try S.runCLI(["copy", ldir, url, img.tag, "--creds", creds, "--json"], in: ldir)
        XCTAssertEqual(again.status, 0, again.stderr)
        let states = blobStates(try json(again.stdout))
        XCTAssertFalse(states.isEmpty, again.stdout)
        XCTAssertTrue(states.allSatisfy { $0.state == "present" }, again.stdout)
    }

    // MARK: blobs belong to a repository

    /// Two images on one base under different names copied into the redirecting registry in one
    /// command: the second name's shared layers are mounted from the first (no
    /// MANIFEST_BLOB_UNKNOWN), and a client reads both names whole.
    func testSharedLayersUnderTwoNamesInOneCopy() throws {
        let p = try R.peer("s3")
        let (local, ldir) = try localDir("regb-shared")
        let sfx = S.uniqueSuffix()
        var api = try makeImage("docker-app-v1.tar", "api", uniqueTopLayer: true)
        var worker = try makeImage("docker-app-v1.tar", "worker", uniqueTopLayer: true)
        api.tag = "team/api:\(sfx)"; worker.tag = "team/worker:\(sfx)"
        try api.push(to: local); try worker.push(to: local)
        let ns = "sh\(sfx)"
        let cp = try S.runCLI(["copy", ldir, "registry://\(p.addr)/\(ns)", api.tag, worker.tag, "--creds", creds, "--json"], in: ldir)
        XCTAssertEqual(cp.status, 0, cp.stderr)
        let states = blobStates(try json(cp.stdout))
        let shared = Set(api.diffIDs).intersection(worker.diffIDs).count
        XCTAssertGreaterThan(shared, 0)
        XCTAssertEqual(states.filter { $0.kind == "layer" && $0.state == "mounted" }.count, shared, cp.stdout)
        for i in [api, worker] {
            let o = try T.sh(["skopeo", "copy", "--src-creds", creds, "--src-cert-dir", try XCTUnwrap(p.certDir),
                              "docker://\(p.addr)/\(ns)/\(i.tag)", "oci:\(ldir)/oci-\(i.name.split(separator: "/").last!):x"])
            XCTAssertEqual(o.status, 0, "\(i.tag) is readable whole: \(o.err)")
        }
    }

    /// `serve` in front of a registry (the token one that redirects to S3): containerd pulls
    /// through it, every blob verified on the way.
    func testServeInFrontOfARedirectingRegistry() throws {
        let p = try R.peer("s3")
        let (local, ldir) = try localDir("regb-serve")
        let img = try makeImage("docker-app-v1.tar", "serve", uniqueTopLayer: true)
        try img.push(to: local)
        let ns = "sv\(S.uniqueSuffix())"
        let cp = try S.runCLI(["copy", ldir, "registry://\(p.addr)/\(ns)", img.tag, "--creds", creds], in: ldir)
        XCTAssertEqual(cp.status, 0, cp.stderr)
        var o = ServerOptions(); o.port = 0; o.accessLog = false
        let server = RegistryServer(frontEnd: RegistryFrontEnd(store: try R.registry("registry://\(p.addr)/\(ns)", creds: creds), settings: ServeSettings()),
                                    options: o, log: { _ in }, warn: { _ in })
        let address = try server.start()
        defer { server.stop(); server.wait() }
        let ref = "\(address)/\(img.tag)"
        let (pull, images, _) = try ctrPull(ref)
        XCTAssertEqual(pull.status, 0, pull.err)
        XCTAssertTrue(images.contains(ref), images)
    }

    // MARK: the fault layer

    /// The plain registry behind the fault proxy, as a rate-limiting, refusing, paginating
    /// registry: each behaviour is checked by what dogestry did and what the proxy saw.
    func testRateLimitsRefusalsDeclinedMountsAndPagination() throws {
        let p = try R.peer("plain")
        let proxy = try FaultProxy(upstream: "http://" + p.addr)
        let addr = String(proxy.base.dropFirst("http://".count))
        let (local, ldir) = try localDir("regb-faults")
        let ns = "f\(S.uniqueSuffix())"
        let url = "registry://\(addr)/\(ns)"
        var a = try makeImage("docker-app-v1.tar", "fa", uniqueTopLayer: true)
        var b = try makeImage("docker-app-v1.tar", "fb", uniqueTopLayer: true)
        a.tag = "fa:1"; b.tag = "fb:1"
        try a.push(to: local); try b.push(to: local)

        // 429 with Retry-After on blob HEADs: waited out, the copy succeeds.
        try proxy.armStatus(429, match: "HEAD /v2/\(ns)/fa/blobs/", times: 2, retryAfter: 1, error: "TOOMANYREQUESTS")
        let c1 = try S.runCLI(["copy", ldir, url, a.tag, "--insecure", "--json"], in: ldir)
        XCTAssertEqual(c1.status, 0, c1.stderr)
        XCTAssertEqual(try proxy.stats.faults, 2)

        // A registry that declines mounts (202 and an upload): the shared layers are uploaded.
        try proxy.reset()
        try proxy.armStripMount()
        let c2 = try S.runCLI(["copy", ldir, url, b.tag, "--insecure", "--json"], in: ldir)
        XCTAssertEqual(c2.status, 0, c2.stderr)
        let states = blobStates(try json(c2.stdout))
        XCTAssertFalse(states.contains { $0.state == "mounted" }, c2.stdout)
        XCTAssertEqual(states.filter { $0.kind == "layer" && $0.state == "copied" }.count, b.layers.count, c2.stdout)
        XCTAssertEqual(try T.sh(["skopeo", "copy", "--src-tls-verify=false", "docker://\(p.addr)/\(ns)/\(b.tag)", "oci:\(ldir)/oci-fb:x"]).status, 0)

        // 403 on the manifest PUT: one line saying it is not allowed; no tag appears.
        try proxy.reset()
        var c = try makeImage("docker-app-v1.tar", "fc", uniqueTopLayer: true)
        c.tag = "fc:1"
        try c.push(to: local)
        try proxy.armStatus(403, match: "PUT /v2/\(ns)/fc/manifests/", times: 5, error: "DENIED")
        let c3 = try S.runCLI(["copy", ldir, url, c.tag, "--insecure"], in: ldir)
        XCTAssertNotEqual(c3.status, 0)
        XCTAssertTrue(c3.stderr.contains("not allowed") && c3.stderr.contains("DENIED"), c3.stderr)
        XCTAssertEqual(errorLines(c3.stderr), 1, c3.stderr)
        XCTAssertNotEqual(try T.sh(["skopeo", "inspect", "--raw", "--tls-verify=false", "docker://\(p.addr)/\(ns)/\(c.tag)"]).status, 0)

        // Listings one entry a page (Link pagination): every tag is listed.
        for t in ["2", "3"] {
            XCTAssertEqual(try S.runCLI(["tag", url, a.tag, "fa:\(t)", "--insecure"], in: ldir).status, 0)
        }
        try proxy.reset()
        try proxy.armParam("n", "1", match: "/tags/list")
        try proxy.armParam("n", "1", match: "/_catalog")
        let ls = try S.runCLI(["list", url, "--insecure", "--json"], in: ldir)
        XCTAssertEqual(ls.status, 0, ls.stderr)
        let rows = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(ls.stdout.utf8)) as? [[String: Any]])
        XCTAssertEqual(Set(rows.filter { $0["repository"] as? String == "fa" }.compactMap { $0["tag"] as? String }), ["1", "2", "3"], ls.stdout)
        XCTAssertGreaterThanOrEqual(try proxy.stats.byMethod["GET"] ?? 0, 4, "the listings came in pages")

        // A delete the registry refuses (405 UNSUPPORTED): one line, exit 1.
        try proxy.armStatus(405, match: "DELETE ", times: 1, error: "UNSUPPORTED")
        let rm = try S.runCLI(["rm", url, b.tag, "--insecure"], in: ldir)
        XCTAssertNotEqual(rm.status, 0)
        XCTAssertTrue(rm.stderr.contains("does not allow"), rm.stderr)
        XCTAssertEqual(errorLines(rm.stderr), 1, rm.stderr)
    }

    /// A chunked upload whose third PATCH fails (503) resumes from the registry's `Range`: the
    /// blob arrives whole, and the bytes sent are far less than a second whole upload.
    func testChunkedUploadResumesFromTheRegistrysRange() throws {
        let p = try R.peer("plain")
        let proxy = try FaultProxy(upstream: "http://" + p.addr)
        let addr = String(proxy.base.dropFirst("http://".count))
        let reg = try R.registry("registry://\(addr)/chunks", insecure: true)
        reg.client.chunkSize = 256 << 10
        let (bytes, staged) = try stagedBlob(2 << 20, seed: 1)
        defer { staged.discard() }
        let d = Digest.of(bytes)
        try proxy.armStatus(503, match: "PATCH ", times: 1, skip: 2)
        try reg.putBlob("c\(S.uniqueSuffix())", d, file: staged, size: Int64(bytes.count))
        let st = try proxy.stats
        XCTAssertEqual(st.faults, 1)
        XCTAssertEqual(st.byMethod["PATCH"], 9, "8 chunks and the one refused: \(st.byMethod)")
        XCTAssertLessThan(st.bytesSent, Int64(bytes.count) * 3 / 2, "only the refused chunk was sent again: \(st)")
    }

    /// A bearer token that expires in the middle of a chunked upload (the proxy holds one PATCH
    /// past the token's 3-second life): the registry answers 401, a new token is fetched, the chunk
    /// is sent again from its offset, and the blob arrives whole.
    func testTokenExpiringMidUploadIsRenewed() throws {
        let (port, rdir) = try startTokenRegistry(ttl: 3)
        let proxy = try FaultProxy(upstream: "https://127.0.0.1:\(port)", tls: (rdir + "/server.crt", rdir + "/server.key", rdir + "/ca.crt"))
        let addr = String(proxy.base.dropFirst("https://".count))
        var settings = RegistrySettings()
        var h = RegistrySettings.Host(); h.ca = rdir + "/ca.crt"; h.chunkSize = 256 << 10
        settings.hosts[addr] = h
        let creds = RegistryCredentialStore(explicit: try RegistryCredentials.parse(self.creds, origin: "--creds"), environment: [:], home: "/nonexistent")
        let reg = try RegistryImageStore.open("registry://\(addr)/mid", settings: settings, store: creds)
        let (bytes, staged) = try stagedBlob(2 << 20, seed: 2)
        defer { staged.discard() }
        let d = Digest.of(bytes)
        try proxy.armDelay(4, match: "PATCH ", times: 1, skip: 2)
        try reg.putBlob("blob", d, file: staged, size: Int64(bytes.count))
        XCTAssertEqual(try reg.blobSize("blob", d), Int64(bytes.count))
        let st = try proxy.stats
        XCTAssertGreaterThanOrEqual(st.byStatus["401"] ?? 0, 1, "the held chunk met an expired token: \(st.byStatus)")
        let tokens = (try? String(contentsOfFile: rdir + "/token.log", encoding: .utf8)) ?? ""
        XCTAssertGreaterThanOrEqual(tokens.components(separatedBy: "outcome=200").count - 1, 2, "a new token was fetched: \(tokens)")
    }

    /// An `identitytoken` in the Docker config (what `docker login` keeps for registries that hand
    /// out OAuth2 refresh tokens) is exchanged at the token server with the refresh-token grant:
    /// no password is stored or sent.
    func testIdentityTokenFromDockerConfigUsesTheRefreshGrant() throws {
        let p = try R.peer("token")
        let ca = try XCTUnwrap(p.certDir) + "/ca.crt"
        let (local, ldir) = try localDir("regb-idtoken")
        let img = try makeImage("docker-app-v1.tar", "idtoken", uniqueTopLayer: true)
        try img.push(to: local)
        // The realm and service the registry names, and a refresh token obtained once with the password.
        let head = try T.sh(["curl", "-s", "-o", "/dev/null", "-D", "-", "--cacert", ca, "https://\(p.addr)/v2/"])
        // (Swift counts "\r\n" as one Character: split into lines by the newline set.)
        let challenge = try XCTUnwrap(head.out.components(separatedBy: .newlines).first { $0.lowercased().hasPrefix("www-authenticate:") }, head.out)
        let parsed = try XCTUnwrap(AuthChallenge.parse(String(challenge.drop(while: { $0 != " " })).trimmingCharacters(in: .whitespacesAndNewlines)))
        let realm = try XCTUnwrap(parsed.parameters["realm"]), service = try XCTUnwrap(parsed.parameters["service"])
        let grant = try T.sh(["curl", "-s", "--cacert", ca, "-d", "grant_type=password", "-d", "username=\(R.user)", "--data-urlencode", "password=\(R.pass)",
                              "-d", "service=\(service)", "-d", "access_type=offline", "-d", "client_id=test", realm])
        let refresh = try XCTUnwrap(try json(grant.out)["refresh_token"] as? String, grant.out)
        let cfg = ldir + "/docker"
        try FS.makeDirectories(cfg)
        try Data(#"{"auths":{"\#(p.addr)":{"identitytoken":"\#(refresh)"}}}"#.utf8).write(to: URL(fileURLWithPath: cfg + "/config.json"))
        let logPath = try CLITest.requiredEnvironment("DOGESTRY_TEST_REGISTRY_DIR") + "/registry-token/token.log"
        func posts() -> Int { ((try? String(contentsOfFile: logPath, encoding: .utf8)) ?? "").components(separatedBy: "POST /token").count - 1 }
        let before = posts()
        let ns = "id\(S.uniqueSuffix())"
        let cp = try S.runCLI(["copy", ldir, "registry://\(p.addr)/\(ns)", img.tag], in: ldir, environment: ["DOCKER_CONFIG": cfg])
        XCTAssertEqual(cp.status, 0, cp.stderr)
        let ls = try S.runCLI(["inspect", "registry://\(p.addr)/\(ns)", img.tag, "--json"], in: ldir, environment: ["DOCKER_CONFIG": cfg])
        XCTAssertEqual(ls.status, 0, ls.stderr)
        XCTAssertEqual(try json(ls.stdout)["id"] as? String, img.id.description)
        XCTAssertFalse(cp.stderr.contains(refresh) || ls.stdout.contains(refresh), "the refresh token was printed")
        XCTAssertGreaterThan(posts(), before, "the tokens came from the refresh-token grant (a POST), not basic credentials")
    }

    /// Wrong credentials and a missing permission are told apart, in one line each, with no secret.
    func testWrongCredentialsAndNoPermissionAreDifferentErrors() throws {
        let p = try R.peer("token")
        let (local, ldir) = try localDir("regb-auth")
        let img = try makeImage("docker-app-v1.tar", "auth", uniqueTopLayer: true)
        try img.push(to: local)
        let wrong = try S.runCLI(["copy", ldir, "registry://\(p.addr)/auth", img.tag, "--creds", "\(R.user):not-the-password"], in: ldir)
        XCTAssertNotEqual(wrong.status, 0)
        XCTAssertTrue(wrong.stderr.contains("wrong credentials") && wrong.stderr.contains("user \(R.user)"), wrong.stderr)
        XCTAssertFalse(wrong.stderr.contains("not-the-password"), wrong.stderr)
        XCTAssertEqual(errorLines(wrong.stderr), 1, wrong.stderr)
    }

    // MARK: indexes as buildx and docker write them

    /// A buildx-shaped index (four platforms, attestation manifests) and a Docker manifest list,
    /// pushed by an independent client, travel registry -> directory -> another repository byte
    /// for byte; `list` shows them with their platforms (never unknown/unknown); a pull takes the
    /// platform asked for (arm/v7, arm64 with or without v8), never an attestation; containerd
    /// pulls a platform that is not this machine's through `serve`.
    func testBuildxIndexAndDockerManifestList() throws {
        let p = try R.peer("plain")
        let (local, ldir) = try localDir("regb-index")
        let ns = "ix\(S.uniqueSuffix())"
        var fixtures: [String: [String: Any]] = [:]
        for style in ["buildx", "dockerlist"] {
            let r = try T.sh(["python3", RegistryFixtures.script, "push", "http://" + p.addr, "\(ns)/\(style)", "1", "--style", style])
            XCTAssertEqual(r.status, 0, r.err)
            fixtures[style] = try json(r.out)
        }
        let cp = try S.runCLI(["copy", "registry://\(p.addr)/\(ns)", ldir, "buildx:1", "dockerlist:1", "--insecure"], in: ldir)
        XCTAssertEqual(cp.status, 0, cp.stderr)
        let back = try S.runCLI(["copy", ldir, "registry://\(p.addr)/\(ns)-back", "buildx:1", "dockerlist:1", "--insecure"], in: ldir)
        XCTAssertEqual(back.status, 0, back.stderr)
        for style in ["buildx", "dockerlist"] {
            let want = try XCTUnwrap(fixtures[style]?["index"] as? String)
            let a = try T.sh(["skopeo", "inspect", "--raw", "--tls-verify=false", "docker://\(p.addr)/\(ns)/\(style):1"])
            let b = try T.sh(["skopeo", "inspect", "--raw", "--tls-verify=false", "docker://\(p.addr)/\(ns)-back/\(style):1"])
            XCTAssertEqual(a.status, 0, a.err)
            XCTAssertEqual(a.out, b.out, "\(style): the index is byte for byte the same after registry -> directory -> registry")
            XCTAssertEqual(Digest.of(Array(b.out.utf8)).description, want)
            XCTAssertEqual(try Repository(remote: local).readRef(name: style, tag: "1")?.description, want)
        }

        let ls = try S.runCLI(["list", ldir, "--json"], in: ldir)
        XCTAssertEqual(ls.status, 0, ls.stderr)
        let rows = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(ls.stdout.utf8)) as? [[String: Any]])
        let bx = try XCTUnwrap(rows.first { $0["repository"] as? String == "buildx" })
        XCTAssertEqual(bx["platforms"] as? [String], ["linux/amd64", "linux/arm64/v8", "linux/arm/v7", "linux/arm/v6"], ls.stdout)
        let dl = try XCTUnwrap(rows.first { $0["repository"] as? String == "dockerlist" })
        XCTAssertEqual(dl["platforms"] as? [String], ["linux/amd64", "linux/arm64", "linux/arm/v7"], ls.stdout)
        let reglist = try S.runCLI(["list", "registry://\(p.addr)/\(ns)", "--insecure"], in: ldir)
        XCTAssertEqual(reglist.status, 0, reglist.stderr)
        XCTAssertTrue(reglist.stdout.contains("linux/arm/v6") && !reglist.stdout.contains("unknown"), reglist.stdout)

        // The platform asked for, from the directory and from the registry itself.
        func config(_ style: String, _ platform: String) throws -> String? {
            let images = try XCTUnwrap(fixtures[style]?["images"] as? [[String: Any]])
            return images.first { $0["platform"] as? String == platform }?["config"] as? String
        }
        let repo = Repository(remote: local)
        for (style, ask, want) in [("buildx", "linux/arm/v7", "linux/arm/v7"), ("buildx", "linux/arm/v6", "linux/arm/v6"),
                                   ("buildx", "linux/arm64", "linux/arm64/v8"), ("dockerlist", "linux/arm64/v8", "linux/arm64"),
                                   ("dockerlist", "linux/amd64", "linux/amd64")] {
            let img = try Puller(repository: repo, progress: SilentProgress(), platform: try Platform.parse(ask)).resolve("\(style):1")
            XCTAssertEqual(img.id.description, try config(style, want), "\(style) \(ask)")
            _ = try Puller(repository: repo, progress: SilentProgress()).writeArchive([img], to: NullSink())   // every layer verified
        }
        let reg = try R.registry("registry://\(p.addr)/\(ns)", insecure: true)
        let armv7 = try Puller(store: reg, progress: SilentProgress(), platform: try Platform.parse("linux/arm/v7")).resolve("buildx:1")
        XCTAssertEqual(armv7.id.description, try config("buildx", "linux/arm/v7"))
        let none = try S.runCLI(["pull", ldir, "buildx:1", "--platform", "unknown/unknown", "--archive", ldir + "/x.tar"], in: ldir)
        XCTAssertNotEqual(none.status, 0, "an attestation is never the platform")
        let have = none.stderr.components(separatedBy: "it has").last ?? ""
        XCTAssertTrue(none.stderr.contains("no image for unknown/unknown") && have.contains("linux/arm/v6") && !have.contains("unknown"), none.stderr)

        // containerd pulls linux/arm64 (not this machine's) through serve of the directory.
        let serve = try T.InProcessServe(local)
        defer { serve.stop() }
        let (pull, _, cns) = try ctrPull("\(serve.address)/buildx:1", platform: "linux/arm64")
        XCTAssertEqual(pull.status, 0, pull.err)
        let images = try XCTUnwrap(fixtures["buildx"]?["images"] as? [[String: Any]])
        let arm64 = try XCTUnwrap(images.first { $0["platform"] as? String == "linux/arm64/v8" }?["digest"] as? String)
        let sock = try CLITest.requiredEnvironment("DOGESTRY_TEST_CONTAINERD_SOCK")
        XCTAssertEqual(try T.sh(["ctr", "-a", sock, "-n", cns, "content", "get", arm64]).status, 0, "containerd fetched the arm64 manifest")
    }

    /// `--version`, help that names registries, and the commands that need a dogestry remote
    /// refusing a registry in one line.
    func testVersionHelpAndDogestryOnlyCommands() throws {
        let (_, dir) = try localDir("regb-help")
        let v = try S.runCLI(["--version"], in: dir)
        XCTAssertEqual(v.status, 0, v.stderr)
        XCTAssertTrue(v.stdout.hasPrefix("dogestry "), v.stdout)
        for args in [["--help"], ["copy", "--help"], ["remote", "--help"], ["push", "--help"]] {
            let h = try S.runCLI(args, in: dir)
            XCTAssertEqual(h.status, 0, h.stderr)
            XCTAssertTrue(h.stdout.contains("registry://"), "\(args): \(h.stdout)")
            XCTAssertFalse(h.stdout.contains("with no registry"), "\(args): \(h.stdout)")
        }
        for cmd in ["prune", "verify"] {
            let r = try S.runCLI([cmd, "registry://127.0.0.1:9/x"], in: dir)
            XCTAssertNotEqual(r.status, 0)
            XCTAssertTrue(r.stderr.contains("is an OCI registry: \(cmd) needs a dogestry remote"), r.stderr)
            XCTAssertEqual(errorLines(r.stderr), 1, r.stderr)
        }
    }

    /// An index that names another index is refused in one line by pull, copy and list.
    func testNestedIndexIsRefusedInOneLine() throws {
        let (local, ldir) = try localDir("regb-nested")
        let img = try makeImage("docker-app-v1.tar", "nested", uniqueTopLayer: true)
        let pushed = try img.push(to: local)
        let repo = Repository(remote: local)
        let md = try XCTUnwrap(pushed.images.first?.manifest)
        let mbytes = try repo.readBlob(md, what: "manifest")
        let inner = ImageIndex(manifests: [Descriptor(mediaType: MediaType.ociManifest, digest: md, size: Int64(mbytes.count),
                                                      platform: Platform(os: "linux", architecture: Platform.host.architecture))]).encoded()
        let innerD = try repo.putBlob(inner)
        let outer = ImageIndex(manifests: [Descriptor(mediaType: MediaType.ociIndex, digest: innerD, size: Int64(inner.count))]).encoded()
        let outerD = try repo.putBlob(outer)
        try repo.writeRef(name: "nested", tag: "1", manifest: outerD)
        let (_, out) = try localDir("regb-nested-out")
        for args in [["pull", ldir, "nested:1", "--archive", ldir + "/n.tar"], ["copy", ldir, out, "nested:1"]] {
            let r = try S.runCLI(args, in: ldir)
            XCTAssertNotEqual(r.status, 0, args.joined(separator: " "))
            XCTAssertTrue(r.stderr.contains("nested indexes are not supported"), r.stderr)
            XCTAssertEqual(errorLines(r.stderr), 1, r.stderr)
        }
        let ls = try S.runCLI(["list", ldir], in: ldir)
        XCTAssertEqual(ls.status, 0, ls.stderr)
        XCTAssertTrue(ls.stderr.contains("skipping nested:1") && ls.stderr.contains("nested indexes"), ls.stderr)
    }
}

enum RegistryFixtures {
    static let script = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
        .appendingPathComponent("../../scripts/lib/registry_fixtures.py").standardized.path
}
