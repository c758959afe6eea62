import DogestryCore
import DogestryRemotes
import DogestryServe
import DogestrySync
import DogestryTestSupport
import Foundation
import XCTest
#if canImport(Glibc)
import Glibc
#endif

/// `dogestry serve` as real runtimes see it: containerd (`ctr`, plain and through a hosts.toml
/// mirror), Docker Engine 20.10, Podman and skopeo pull from it, over a local remote and over S3
/// (SeaweedFS). Serve runs in this process over a remote that counts what is read from it.
final class ServeClientTests: XCTestCase {
    // MARK: support

    struct Run { var status: Int32; var out: String; var err: String }

    /// Runs `args[0]` (found on PATH) with `args[1...]`; never longer than `timeout`.
    @discardableResult
    static func sh(_ args: [String], env extra: [String: String] = [:], timeout: TimeInterval = 180) throws -> Run {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        p.arguments = args
        var env = ProcessInfo.processInfo.environment
        for (k, v) in extra { env[k] = v }
        p.environment = env
        let dir = try EngineTestSupport.makeTempDirectory("serve-sh")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let o = dir + "/out", e = dir + "/err"
        _ = FileManager.default.createFile(atPath: o, contents: nil); _ = FileManager.default.createFile(atPath: e, contents: nil)
        let oh = try FileHandle(forWritingTo: URL(fileURLWithPath: o)), eh = try FileHandle(forWritingTo: URL(fileURLWithPath: e))
        p.standardOutput = oh; p.standardError = eh; p.standardInput = FileHandle.nullDevice
        try p.run()
        let status = ChildProcess.wait(p, timeout: timeout)
        if status == nil { ChildProcess.stop(p); XCTFail("\(args.joined(separator: " ")) took over \(Int(timeout)) s") }
        try oh.close(); try eh.close()
        return Run(status: status ?? -1, out: (try? String(contentsOfFile: o, encoding: .utf8)) ?? "", err: (try? String(contentsOfFile: e, encoding: .utf8)) ?? "")
    }

    /// A serve in this process over `remote` (wrapped to count reads), on a free loopback port.
    final class InProcessServe {
        let counting: EngineTestSupport.CountingRemote
        let server: RegistryServer
        let address: String
        init(_ remote: Remote, settings: ServeSettings = ServeSettings()) throws {
            let counter = EngineTestSupport.CountingRemote(remote)
            counting = counter
            var o = ServerOptions(); o.port = 0; o.accessLog = false
            let front: Remote = (remote as? SigningRemote).map { SigningCounter(counter, signer: $0) } ?? counter
            server = RegistryServer(frontEnd: RegistryFrontEnd(repository: Repository(remote: front), settings: settings),
                                    options: o, log: { _ in }, warn: { _ in })
            address = try server.start()
        }
        func stop() { server.stop(); server.wait() }
        /// Layer bytes read from the remote for `blobs`.
        func read(_ blobs: [Digest]) -> Int64 { counting.bytesRead(keys: blobs.map { Repository.blobKey($0) }) }
    }

    /// A counting remote that still signs URLs (for --redirect).
    final class SigningCounter: SigningRemote, @unchecked Sendable {
        let inner: EngineTestSupport.CountingRemote
        let signer: SigningRemote
        init(_ inner: EngineTestSupport.CountingRemote, signer: SigningRemote) { self.inner = inner; self.signer = signer }
        var displayURL: String { inner.displayURL }
        func stat(_ key: String) throws -> RemoteObject? { try inner.stat(key) }
        func open(_ key: String) throws -> ByteSource { try inner.open(key) }
        func list(prefix: String, _ each: (RemoteObject) throws -> Void) throws { try inner.list(prefix: prefix, each) }
        func check() throws -> String { try inner.check() }
        func put(_ key: String, bytes: [UInt8]) throws { try inner.put(key, bytes: bytes) }
        func put(_ key: String, file: StagedFile, size: Int64) throws { try inner.put(key, file: file, size: size) }
        func delete(_ key: String) throws { try inner.delete(key) }
        func makeStagedFile() throws -> StagedFile { try inner.makeStagedFile() }
        func signedURL(forGet key: String, expires: Int) throws -> String { try signer.signedURL(forGet: key, expires: expires) }
    }

    /// How one client pulls and names what it pulled.
    struct Client {
        var name: String
        /// Whether the client keeps the layers it has (every client here does: skopeo in its OCI layout).
        var reusesLayers = true
        /// Pulls `ref` (`HOST:PORT/name:tag`); the run's result.
        var pull: (String) throws -> Run
        /// The image ID (config digest) the client holds for `ref`.
        var imageID: (String) throws -> String?
        /// Pushes what the client holds as `from` to `to` (serve must refuse it).
        var push: (_ from: String, _ to: String) throws -> Run
    }

    static func containerd() throws -> Client {
        let sock = try CLITest.requiredEnvironment("DOGESTRY_TEST_CONTAINERD_SOCK")
        let ns = "serve-" + EngineTestSupport.uniqueSuffix()
        return Client(name: "containerd", pull: { ref in
            try sh(["ctr", "-a", sock, "-n", ns, "images", "pull", "--plain-http", ref])
        }, imageID: { ref in
            let ls = try sh(["ctr", "-a", sock, "-n", ns, "images", "ls"])
            guard let line = ls.out.split(separator: "\n").first(where: { $0.hasPrefix(ref + " ") }),
                  let md = line.split(separator: " ", omittingEmptySubsequences: true).first(where: { $0.hasPrefix("sha256:") }) else { return nil }
            let m = try sh(["ctr", "-a", sock, "-n", ns, "content", "get", String(md)])
            return try Self.configDigest(m.out)
        }, push: { from, to in
            _ = try sh(["ctr", "-a", sock, "-n", ns, "images", "tag", from, to])
            return try sh(["ctr", "-a", sock, "-n", ns, "images", "push", "--plain-http", to])
        })
    }

    static func docker() throws -> Client {
        let host = try CLITest.requiredEnvironment("DOGESTRY_TEST_DOCKER_HOST")
        return Client(name: "docker", pull: { ref in
            try sh(["docker", "pull", ref], env: ["DOCKER_HOST": host])
        }, imageID: { ref in
            let r = try sh(["docker", "image", "inspect", "--format", "{{.Id}}", ref], env: ["DOCKER_HOST": host])
            return r.status == 0 ? r.out.trimmingCharacters(in: .whitespacesAndNewlines) : nil
        }, push: { from, to in
            _ = try sh(["docker", "tag", from, to], env: ["DOCKER_HOST": host])
            return try sh(["docker", "push", to], env: ["DOCKER_HOST": host])
        })
    }

    static func podman() throws -> Client {
        let dir = try CLITest.requiredEnvironment("DOGESTRY_ENGINE_DIR")
        let base = ["podman", "--root", dir + "/storage", "--runroot", dir + "/run"]
        return Client(name: "podman", pull: { ref in
            try sh(base + ["pull", "--tls-verify=false", ref])
        }, imageID: { ref in
            let r = try sh(base + ["image", "inspect", "--format", "{{.Id}}", ref])
            return r.status == 0 ? "sha256:" + r.out.trimmingCharacters(in: .whitespacesAndNewlines) : nil
        }, push: { from, to in
            try sh(base + ["push", "--tls-verify=false", from, "docker://" + to])
        })
    }

    /// skopeo copies into one OCI layout (which, like a runtime's store, reuses the blobs it has).
    static func skopeo() throws -> Client {
        let dir = try EngineTestSupport.makeTempDirectory("serve-skopeo")
        func tagOf(_ ref: String) -> String { ref.split(separator: "/").dropFirst().joined(separator: "-").replacingOccurrences(of: ":", with: "-") }
        return Client(name: "skopeo", pull: { ref in
            try sh(["skopeo", "copy", "--src-tls-verify=false", "docker://" + ref, "oci:\(dir)/layout:\(tagOf(ref))"])
        }, imageID: { ref in
            // What the layout holds under that tag, not what the registry says.
            guard let index = FileManager.default.contents(atPath: dir + "/layout/index.json"),
                  let o = try JSONSerialization.jsonObject(with: index) as? [String: Any],
                  let ms = o["manifests"] as? [[String: Any]],
                  let m = ms.first(where: { ($0["annotations"] as? [String: String])?["org.opencontainers.image.ref.name"] == tagOf(ref) }),
                  let d = (m["digest"] as? String)?.split(separator: ":").last,
                  let bytes = FileManager.default.contents(atPath: dir + "/layout/blobs/sha256/\(d)") else { return nil }
            return try Self.configDigest(String(decoding: bytes, as: UTF8.self))
        }, push: { from, to in
            try sh(["skopeo", "copy", "--dest-tls-verify=false", "oci:\(dir)/layout:\(tagOf(from))", "docker://" + to])
        })
    }

    static func configDigest(_ manifestJSON: String) throws -> String? {
        let o = try JSONSerialization.jsonObject(with: Data(manifestJSON.utf8)) as? [String: Any]
        return (o?["config"] as? [String: Any])?["digest"] as? String
    }

    static func localRemote() throws -> Remote {
        let dir = try EngineTestSupport.makeTempDirectory("serve-remote")
        try FS.makeDirectories(dir)
        return try LocalRemote(path: dir)
    }

    nonisolated(unsafe) private static var bucket: TestBucket?
    private static let bucketLock = NSLock()

    /// A fresh prefix of one bucket shared by these tests (a bucket per test would make SeaweedFS
    /// allocate volumes for each).
    static func s3Remote() throws -> Remote {
        bucketLock.lock()
        defer { bucketLock.unlock() }
        if bucket == nil { bucket = try TestBucket(label: "serve") }
        let b = bucket!
        return try S3Remote(bucket: b.bucket, prefix: "r-" + EngineTestSupport.uniqueSuffix(), region: "us-east-1", endpoint: b.endpoint,
                            credentials: AWSStaticCredentialProvider(AWSCredentials(accessKeyID: b.accessKey, secretAccessKey: b.secretKey),
                                                                     sourceDescription: "test credentials"),
                            options: S3Options(partSize: 5 << 20, concurrency: 3))
    }

    // MARK: the scenario every client goes through

    /// v1 pulls with the pushed image ID; v2 makes serve read only the layers v1 lacks; a corrupt
    /// blob fails the client's pull while serve keeps serving the others.
    func scenario(_ client: Client, remote: Remote) throws {
        let label = client.name + "-" + EngineTestSupport.uniqueSuffix()
        let v1 = try EngineTestSupport.Image(fixture: "docker-app-v1.tar", tag: "serve-\(client.name)/app:v1", label: label, uniqueTopLayer: true)
        let v2 = try EngineTestSupport.Image(fixture: "docker-app-v2.tar", tag: "serve-\(client.name)/app:v2", label: label, uniqueTopLayer: true)
        let bad = try EngineTestSupport.Image(fixture: "docker-app-v1.tar", tag: "serve-\(client.name)/bad:1", label: label + "-bad", uniqueTopLayer: true)
        for i in [v1, v2, bad] { try i.push(to: remote) }
        let repo = Repository(remote: remote)
        func layers(_ i: EngineTestSupport.Image) throws -> [Digest] {
            try repo.readManifest(try XCTUnwrap(repo.readRef(name: i.name, tag: i.tagPart))).layers.map(\.digest)
        }
        let l1 = try layers(v1), l2 = try layers(v2), lbad = try layers(bad)
        let serve = try InProcessServe(remote)
        defer { serve.stop() }

        // v1: pulled, with the image ID that was pushed.
        let r1 = try client.pull("\(serve.address)/\(v1.tag)")
        XCTAssertEqual(r1.status, 0, "\(client.name) pull v1: \(r1.out)\(r1.err)")
        XCTAssertEqual(try client.imageID("\(serve.address)/\(v1.tag)"), v1.id.description, "\(client.name): image ID")

        // v2 after v1: only what v1 lacks is read from the remote.
        serve.counting.reset()
        let r2 = try client.pull("\(serve.address)/\(v2.tag)")
        XCTAssertEqual(r2.status, 0, "\(client.name) pull v2: \(r2.out)\(r2.err)")
        XCTAssertEqual(try client.imageID("\(serve.address)/\(v2.tag)"), v2.id.description, "\(client.name): image ID of v2")
        let shared = l2.filter { l1.contains($0) }, fresh = l2.filter { !l1.contains($0) }
        XCTAssertFalse(shared.isEmpty, "v1 and v2 share layers")
        if client.reusesLayers {
            XCTAssertEqual(serve.read(shared), 0, "\(client.name): layers the runtime holds are not read again")
        }
        let top = try XCTUnwrap(l2.last)
        let topSize = try XCTUnwrap(remote.stat(Repository.blobKey(top))).size
        XCTAssertEqual(serve.read([top]), topSize, "\(client.name): the changed layer is read once, whole")
        let freshSizes = try fresh.reduce(Int64(0)) { $0 + (try remote.stat(Repository.blobKey($1))?.size ?? 0) }
        if client.reusesLayers { XCTAssertLessThanOrEqual(serve.read(l2), freshSizes) }
        print("serve: \(client.name) v1 -> v2 read \(serve.read(l2)) layer bytes from \(remote.displayURL) (changed layers: \(freshSizes))")

        // A corrupt blob: the pull fails; serve still serves the others.
        let badTop = try XCTUnwrap(lbad.last)
        var bytes = try remote.read(Repository.blobKey(badTop), limit: 1 << 30)
        bytes[bytes.count / 2] ^= 0x55
        try remote.put(Repository.blobKey(badTop), bytes: bytes)
        let r3 = try client.pull("\(serve.address)/\(bad.tag)")
        XCTAssertNotEqual(r3.status, 0, "\(client.name) pulled an image whose layer is corrupt")
        XCTAssertNil(try client.imageID("\(serve.address)/\(bad.tag)"), "\(client.name) holds a corrupt image")
        let r4 = try client.pull("\(serve.address)/\(v1.tag)")
        XCTAssertEqual(r4.status, 0, "\(client.name) after the corrupt pull: \(r4.out)\(r4.err)")

        // Unknown names fail the client's pull; its push is refused and changes nothing.
        XCTAssertNotEqual(try client.pull("\(serve.address)/nobody/here:1").status, 0, "\(client.name) pulled an unknown name")
        var before: [String: Int64] = [:]
        try remote.list(prefix: "") { before[$0.key] = $0.size }
        let pushed = try client.push("\(serve.address)/\(v1.tag)", "\(serve.address)/\(client.name)-pushed/app:1")
        XCTAssertNotEqual(pushed.status, 0, "\(client.name) pushed to serve: \(pushed.out)\(pushed.err)")
        var after: [String: Int64] = [:]
        try remote.list(prefix: "") { after[$0.key] = $0.size }
        XCTAssertEqual(after, before, "\(client.name)'s push changed the remote")
    }

    func testContainerdLocal() throws { try scenario(try Self.containerd(), remote: try Self.localRemote()) }
    func testContainerdS3() throws { try scenario(try Self.containerd(), remote: try Self.s3Remote()) }
    func testDockerLocal() throws { try scenario(try Self.docker(), remote: try Self.localRemote()) }
    func testDockerS3() throws { try scenario(try Self.docker(), remote: try Self.s3Remote()) }
    func testPodmanLocal() throws { try scenario(try Self.podman(), remote: try Self.localRemote()) }
    func testPodmanS3() throws { try scenario(try Self.podman(), remote: try Self.s3Remote()) }
    func testSkopeoLocal() throws { try scenario(try Self.skopeo(), remote: try Self.localRemote()) }
    func testSkopeoS3() throws { try scenario(try Self.skopeo(), remote: try Self.s3Remote()) }
    func testContainerdManta() throws { try scenario(try Self.containerd(), remote: try CopyTests.mantaRemote()) }

    // MARK: containerd as a Kubernetes node is set up

    /// A hosts.toml mirror entry (as `--print-hosts-toml` prints it) sends pulls of images named
    /// for another registry, Docker Hub's included, to serve.
    func testContainerdHostsTomlMirror() throws {
        let sock = try CLITest.requiredEnvironment("DOGESTRY_TEST_CONTAINERD_SOCK")
        let remote = try Self.localRemote()
        let img = try EngineTestSupport.Image(fixture: "docker-app-v1.tar", tag: "registry.example.com/team/app:1", label: "mirror-" + EngineTestSupport.uniqueSuffix())
        try img.push(to: remote)
        _ = try Tagger(repository: Repository(remote: remote)).tag(img.tag, as: "docker.io/library/mirrored:1")
        let serve = try InProcessServe(remote)
        defer { serve.stop() }
        let hosts = try EngineTestSupport.makeTempDirectory("serve-hosts")
        defer { try? FileManager.default.removeItem(atPath: hosts) }
        let bin = try EngineTestSupport.dogestryBinary()
        let ns = "mirror-" + EngineTestSupport.uniqueSuffix()
        for registry in ["registry.example.com", "docker.io"] {
            let t = try Self.sh([bin, "serve", "--listen", serve.address, "--print-hosts-toml", registry])
            XCTAssertEqual(t.status, 0, t.err)
            try FS.makeDirectories(hosts + "/" + registry)
            try t.out.write(toFile: hosts + "/\(registry)/hosts.toml", atomically: true, encoding: .utf8)
        }
        for ref in ["registry.example.com/team/app:1", "docker.io/library/mirrored:1"] {
            let r = try Self.sh(["ctr", "-a", sock, "-n", ns, "images", "pull", "--hosts-dir", hosts, ref])
            XCTAssertEqual(r.status, 0, "\(ref): \(r.out)\(r.err)")
            let ls = try Self.sh(["ctr", "-a", sock, "-n", ns, "images", "ls", "-q"])
            XCTAssertTrue(ls.out.split(separator: "\n").contains(Substring(ref)), ls.out)
        }
    }
}
