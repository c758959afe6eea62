import DogestryCore
import DogestryEngine
import DogestryHTTP
import DogestryRemotes
import DogestrySync
import Foundation
import XCTest

/// `dogestry sign` and `dogestry pull URL` (pull tickets) against a real S3 server (SeaweedFS,
/// which checks SigV4 presigned URLs and their expiry) and the real docker engine, with the pulling
/// CLI run in an empty environment: no config, no credentials.
final class TicketTests: XCTestCase {
    struct S3 {
        var endpoint: String
        var accessKey: String
        var secretKey: String
    }

    var fx: CLITest.Fixtures!
    var s3: S3!

    /// One bucket for the whole run (created once); every test works under its own prefix.
    nonisolated(unsafe) private static var runBucket: String?
    private static let bucketLock = NSLock()

    override func setUpWithError() throws {
        fx = try CLITest.Fixtures.load()
        s3 = S3(endpoint: try CLITest.requiredEnvironment("DOGESTRY_TEST_S3_ENDPOINT"),
                accessKey: try CLITest.requiredEnvironment("DOGESTRY_TEST_S3_ACCESS_KEY"),
                secretKey: try CLITest.requiredEnvironment("DOGESTRY_TEST_S3_SECRET_KEY"))
    }

    // MARK: helpers

    func bucket() throws -> String {
        Self.bucketLock.lock(); defer { Self.bucketLock.unlock() }
        if let b = Self.runBucket { return b }
        let b = "dogestry-tickets-" + UUID().uuidString.lowercased().replacingOccurrences(of: "-", with: "").prefix(12)
        try s3Remote(bucket: b, prefix: "").createBucket()
        Self.runBucket = b
        return b
    }

    func s3Remote(bucket: String, prefix: String) throws -> S3Remote {
        let creds = AWSStaticCredentialProvider(AWSCredentials(accessKeyID: s3.accessKey, secretAccessKey: s3.secretKey),
                                                sourceDescription: "test credentials")
        return try S3Remote(bucket: bucket, prefix: prefix, region: "us-east-1", endpoint: s3.endpoint, credentials: creds)
    }

    /// A fresh prefix of the run's bucket: the library remote and the CLI's REMOTE argument for it.
    func freshRemote() throws -> (S3Remote, String) {
        let b = try bucket()
        let prefix = "tickets-test/" + UUID().uuidString.lowercased()
        return (try s3Remote(bucket: b, prefix: prefix), "s3://\(b)/\(prefix)?endpoint=\(s3.endpoint)")
    }

    /// The pushing / signing side: credentials in the environment, isolated from user config.
    func runSigner(_ args: [String], cwd: String) throws -> CLITest.ProcessResult {
        try CLITest.runProcess(try CLITest.dogestryBinary(), args, environment: [
            "XDG_CONFIG_HOME": cwd + "/.xdg-none", "HOME": cwd,
            "AWS_ACCESS_KEY_ID": s3.accessKey, "AWS_SECRET_ACCESS_KEY": s3.secretKey,
        ], cwd: cwd)
    }

    /// The pulling side: an EMPTY environment (PATH and an empty HOME only) in an empty directory.
    func runBare(_ args: [String], cwd: String) throws -> CLITest.ProcessResult {
        let home = try CLITest.makeTempDir(self, "home")
        let scratch = try CLITest.makeTempDir(self, "output")
        let outPath = scratch + "/stdout", errPath = scratch + "/stderr"
        _ = FileManager.default.createFile(atPath: outPath, contents: nil)
        _ = FileManager.default.createFile(atPath: errPath, contents: nil)
        let p = Process()
        p.executableURL = URL(fileURLWithPath: try CLITest.dogestryBinary())
        p.arguments = args
        p.environment = ["PATH": "/usr/bin:/bin", "HOME": home]
        p.currentDirectoryURL = URL(fileURLWithPath: cwd)
        let out = try XCTUnwrap(FileHandle(forWritingAtPath: outPath)), err = try XCTUnwrap(FileHandle(forWritingAtPath: errPath))
        p.standardInput = FileHandle.nullDevice
        p.standardOutput = out
        p.standardError = err
        try p.run()
        p.waitUntilExit()
        try out.close(); try err.close()
        return CLITest.ProcessResult(status: p.terminationStatus, stdout: try Data(contentsOf: URL(fileURLWithPath: outPath)),
                                     stderr: String(decoding: try Data(contentsOf: URL(fileURLWithPath: errPath)), as: UTF8.self))
    }

    /// Signs `image` on `remoteArg` with the CLI; returns the one URL it printed.
    func sign(_ remoteArg: String, _ image: String, expires: String? = nil, file: StaticString = #filePath, line: UInt = #line) throws -> String {
        let cwd = try CLITest.makeTempDir(self, "signer")
        let r = try runSigner(["sign", remoteArg, image] + (expires.map { ["--expires", $0] } ?? []), cwd: cwd)
        XCTAssertEqual(r.status, 0, r.stderr, file: file, line: line)
        let lines = r.stdoutText.split(separator: "\n").map(String.init)
        XCTAssertEqual(lines.count, 1, "sign prints one URL: \(r.stdoutText)", file: file, line: line)
        let url = try XCTUnwrap(lines.first, file: file, line: line)
        XCTAssertTrue(url.hasPrefix(s3.endpoint + "/"), url, file: file, line: line)
        XCTAssertTrue(url.contains("X-Amz-Signature="), file: file, line: line)
        XCTAssertFalse(r.stderr.contains("X-Amz-Signature"), file: file, line: line)
        return url
    }

    /// The ticket a URL points at, fetched with a plain GET.
    func fetchTicket(_ url: String) throws -> (Int, PullTicket?) {
        let (resp, body) = try HTTPClient(options: HTTPTransportOptions()).fetch(HTTPRequest(method: "GET", url: url))
        return (resp.status, resp.isSuccess ? try PullTicket.decode(body, what: "ticket") : nil)
    }

    func status(of url: String) throws -> Int {
        try HTTPClient(options: HTTPTransportOptions()).fetch(HTTPRequest(method: "GET", url: url)).0.status
    }

    /// Asserts a failed CLI run: non-zero, one error line containing `parts` (the last line on stderr;
    /// progress lines of a pull may come before it unless `quiet`), and no signature anywhere.
    func assertOneLineFailure(_ r: CLITest.ProcessResult, containing parts: [String], quiet: Bool = true,
                              file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertNotEqual(r.status, 0, "expected a failure; stderr: \(r.stderr)", file: file, line: line)
        let errors = r.stderrLines.filter { $0.hasPrefix("dogestry: error: ") }
        XCTAssertEqual(errors.count, 1, "one error line expected: \(r.stderr)", file: file, line: line)
        if quiet { XCTAssertEqual(r.stderrLines.count, 1, "nothing but the error expected: \(r.stderr)", file: file, line: line) }
        XCTAssertEqual(r.stderrLines.last, errors.first, "the error comes last", file: file, line: line)
        let l = errors.first ?? ""
        for p in parts { XCTAssertTrue(l.contains(p), "\"\(l)\" does not contain \"\(p)\"", file: file, line: line) }
        for secret in ["X-Amz-Signature", "X-Amz-Credential", "?", s3.secretKey] {
            XCTAssertFalse(r.stderr.contains(secret), "\"\(r.stderr)\" shows \(secret)", file: file, line: line)
            XCTAssertFalse(r.stdoutText.contains(secret), "\"\(r.stdoutText)\" shows \(secret)", file: file, line: line)
        }
    }

    /// Nothing but the listed files in `dir` (no archive, no partial file).
    func assertFiles(_ dir: String, _ expected: [String], file: StaticString = #filePath, line: UInt = #line) {
        let got = ((try? FileManager.default.contentsOfDirectory(atPath: dir)) ?? []).sorted()
        XCTAssertEqual(got, expected.sorted(), file: file, line: line)
    }

    func ticketKeys(_ remote: Remote) throws -> [String] {
        var keys: [String] = []
        try remote.list(prefix: "tickets/") { keys.append($0.key) }
        return keys.sorted()
    }

    /// Pushes docker-app-v1.tar (dogestry-test/app:v1) to a fresh S3 prefix.
    func pushedApp() throws -> (S3Remote, String, CLITest.Fixtures.Image) {
        let (remote, arg) = try freshRemote()
        try CLITest.libraryPush(fx.path("docker-app-v1.tar"), to: remote)
        return (remote, arg, try XCTUnwrap(fx.images["dogestry-test/app:v1"]))
    }

    // MARK: tests

    func testSignedURLPullsIntoAnArchiveWithNoConfigAndNoCredentials() throws {
        let (_, arg, expected) = try pushedApp()
        let url = try sign(arg, "dogestry-test/app:v1", expires: "30m")
        let expiry = try XCTUnwrap(SignedURL.expiry(of: url))
        XCTAssertEqual(expiry.timeIntervalSinceNow, 1800, accuracy: 10)

        let cwd = try CLITest.makeTempDir(self, "puller")
        let r = try runBare(["pull", url, "--archive", "out.tar"], cwd: cwd)
        XCTAssertEqual(r.status, 0, r.stderr)
        XCTAssertFalse(r.stdoutText.contains("X-Amz"), r.stdoutText)
        XCTAssertFalse(r.stderr.contains("X-Amz"), r.stderr)
        let images = try CLITest.readArchive(cwd + "/out.tar")
        XCTAssertEqual(images.count, 1)
        XCTAssertEqual(images.first?.config.digest, expected.id)
        XCTAssertEqual(images.first?.config.diffIDs, expected.diffIDs)
        XCTAssertEqual(images.first?.repoTags, expected.repoTags)
        assertFiles(cwd, ["out.tar"])

        // IMAGE arguments are optional but, when given, must be the ticket's image.
        let r2 = try runBare(["pull", url, "dogestry-test/app:v1", "--archive", "again.tar"], cwd: cwd)
        XCTAssertEqual(r2.status, 0, r2.stderr)
        XCTAssertEqual(try CLITest.readArchive(cwd + "/again.tar").first?.config.digest, expected.id)
        let byID = try runBare(["pull", url, String(expected.id.hex.prefix(12)), "--archive", "byid.tar"], cwd: cwd)
        XCTAssertEqual(byID.status, 0, byID.stderr)
        XCTAssertEqual(try CLITest.readArchive(cwd + "/byid.tar").first?.repoTags, expected.repoTags)
        let other = try runBare(["pull", url, "dogestry-test/app:v2", "--archive", "other.tar"], cwd: cwd)
        assertOneLineFailure(other, containing: ["holds only dogestry-test/app:v1", "not dogestry-test/app:v2"])
        assertFiles(cwd, ["out.tar", "again.tar", "byid.tar"])

        // The ticket is a read-only remote: commands that write refuse it up front, in one line;
        // commands that only read (inspect, verify, list) work on it.
        for args in [["push", url, "--archive", "out.tar"], ["tag", url, "dogestry-test/app:v1", "x:y"],
                     ["rm", url, "dogestry-test/app:v1"], ["prune", url], ["verify", url, "--repair"], ["sign", url, "x"]] {
            let r = try runBare(args, cwd: cwd)
            assertOneLineFailure(r, containing: ["is read-only: \(args[0])"])
        }
        let inspect = try runBare(["inspect", url, "dogestry-test/app:v1"], cwd: cwd)
        XCTAssertEqual(inspect.status, 0, inspect.stderr)
        XCTAssertTrue(inspect.stdoutText.contains(expected.id.short) || inspect.stdoutText.contains(expected.id.hex), inspect.stdoutText)
        let verify = try runBare(["verify", url], cwd: cwd)
        XCTAssertEqual(verify.status, 0, verify.stderr)

        // A URL is not a config alias: without IMAGE, other remotes still need one.
        let noImage = try runBare(["pull", cwd], cwd: cwd)
        XCTAssertNotEqual(noImage.status, 0)
        XCTAssertTrue(noImage.stderr.contains("name at least one IMAGE"), noImage.stderr)
    }

    /// `push --json` and `pull --json` on S3 report the remote's requests and body bytes; a no-op
    /// push sends only the ref (a few dozen bytes) in a handful of requests.
    func testJSONReportsRemoteTraffic() throws {
        let (_, arg) = try freshRemote()
        let cwd = try CLITest.makeTempDir(self, "traffic")
        let archive = fx.path("docker-app-v1.tar")
        func object(_ r: CLITest.ProcessResult) throws -> [String: Any] {
            XCTAssertEqual(r.status, 0, r.stderr)
            return try XCTUnwrap(try JSONSerialization.jsonObject(with: r.stdout) as? [String: Any], r.stdoutText)
        }
        func int(_ o: [String: Any], _ k: String) throws -> Int64 { Int64(try XCTUnwrap(o[k] as? Int, "\(k) in \(o)")) }
        let first = try object(try runSigner(["push", arg, "--archive", archive, "--json", "-q"], cwd: cwd))
        XCTAssertGreaterThan(try int(first, "remoteRequests"), 4)
        XCTAssertGreaterThanOrEqual(try int(first, "remoteBytesSent"), try int(first, "bytesUploaded"))
        let again = try object(try runSigner(["push", arg, "--archive", archive, "--json", "-q"], cwd: cwd))
        XCTAssertEqual(try int(again, "bytesUploaded"), 0)
        XCTAssertLessThanOrEqual(try int(again, "remoteRequests"), 16, "\(again)")
        XCTAssertEqual(try int(again, "remoteBytesSent"), 72, "only the ref (sha256:<64 hex> and a newline) is sent")
        let pulled = try object(try runSigner(["pull", arg, "dogestry-test/app:v1", "--archive", "out.tar", "--json", "-q"], cwd: cwd))
        XCTAssertGreaterThanOrEqual(try int(pulled, "remoteBytesReceived"), try int(pulled, "bytesFetched"))
        XCTAssertGreaterThan(try int(pulled, "remoteRequests"), 0)
        // The local remote has no network traffic to report.
        try FileManager.default.createDirectory(atPath: cwd + "/local", withIntermediateDirectories: true)
        let local = try object(try runSigner(["push", cwd + "/local", "--archive", archive, "--json", "-q"], cwd: cwd))
        XCTAssertNil(local["remoteRequests"])
    }

    func testSignedURLPullsIntoTheDockerEngine() throws {
        let docker = try EngineTestSupport.docker()
        guard let host = ProcessInfo.processInfo.environment["DOGESTRY_TEST_DOCKER_HOST"] else { return }
        // An image only this test has (unique config and top layer), so the engine really loads it.
        let suffix = EngineTestSupport.uniqueSuffix()
        let img = try EngineTestSupport.Image(fixture: "docker-app-v1.tar", tag: "dogestry-ticket-test/app:\(suffix)",
                                              label: "ticket-\(suffix)", uniqueTopLayer: true)
        addTeardownBlock { try? docker.removeImage(img.id.hex, force: true) }
        let (remote, arg) = try freshRemote()
        try img.push(to: remote)
        XCTAssertNil(try docker.inspectImage(img.id.hex))

        let url = try sign(arg, img.tag)
        let cwd = try CLITest.makeTempDir(self, "puller")
        let r = try runBare(["pull", url, "--host", host], cwd: cwd)
        XCTAssertEqual(r.status, 0, r.stderr)
        XCTAssertFalse(r.stdoutText.contains("X-Amz"), r.stdoutText)
        let got = try XCTUnwrap(try docker.inspectImage(img.tag))
        XCTAssertEqual(got.id, img.id)
        XCTAssertEqual(got.diffIDs, img.diffIDs)
        assertFiles(cwd, [])
    }

    func testTicketListsExactlyItsImageAndItsURLReadsNothingElse() throws {
        let (remote, arg, expected) = try pushedApp()
        let before = Date()
        let url = try sign(arg, "dogestry-test/app:v1", expires: "2h")
        let (st, fetched) = try fetchTicket(url)
        XCTAssertEqual(st, 200)
        let ticket = try XCTUnwrap(fetched)

        // The ticket: the image, its blobs (manifest, config, layers) and nothing else.
        let repo = Repository(remote: remote)
        let manifestDigest = try XCTUnwrap(try repo.readRef(name: "dogestry-test/app", tag: "v1"))
        let manifest = try repo.readManifest(manifestDigest)
        XCTAssertEqual(ticket.kind, "dogestry-pull-ticket")
        XCTAssertEqual(ticket.version, 1)
        XCTAssertEqual(ticket.image.name, "dogestry-test/app")
        XCTAssertEqual(ticket.image.tags, ["dogestry-test/app:v1"])
        XCTAssertEqual(ticket.image.manifest, manifestDigest)
        XCTAssertEqual(ticket.image.config, expected.id)
        XCTAssertEqual(Set(ticket.blobs.map { $0.digest }), Set([manifestDigest, manifest.config.digest] + manifest.layers.map { $0.digest }))
        XCTAssertEqual(ticket.blobs.count, 2 + Set(manifest.layers.map { $0.digest }).count)
        for b in ticket.blobs {
            XCTAssertEqual(try remote.stat(Repository.blobKey(b.digest))?.size, b.size, "size of \(b.digest)")
        }
        // Every URL expires at the ticket's own expiry, two hours from signing.
        let expires = try ticket.expiryDate()
        XCTAssertEqual(expires.timeIntervalSince(before), 7200, accuracy: 10)
        XCTAssertEqual(SignedURL.expiry(of: url), expires)
        for b in ticket.blobs { XCTAssertEqual(SignedURL.expiry(of: b.url), expires, "expiry of \(b.digest)") }
        // A blob URL reads its blob, and only with its signature.
        let layer = ticket.blobs[2]
        let (resp, bytes) = try HTTPClient(options: HTTPTransportOptions()).fetch(HTTPRequest(method: "GET", url: layer.url), limit: 256 << 20)
        XCTAssertEqual(resp.status, 200)
        XCTAssertEqual(Digest.of(bytes), layer.digest)
        XCTAssertEqual(try status(of: redactedURL(layer.url)), 403, "an unsigned GET is refused")

        // The ticket lives at tickets/<32 hex>.json, and its URL reads only that key.
        let keys = try ticketKeys(remote)
        XCTAssertEqual(keys.count, 1)
        let key = try XCTUnwrap(keys.first)
        XCTAssertNotNil(key.range(of: "^tickets/[0-9a-f]{32}\\.json$", options: .regularExpression), key)
        XCTAssertTrue(url.contains("/" + key + "?"), "the URL is the ticket's")
        for other in [Repository.blobKey(expected.id), Repository.refKey(name: "dogestry-test/app", tag: "v1"), "oci-layout",
                      "tickets/" + String(repeating: "0", count: 32) + ".json"] {
            XCTAssertEqual(try status(of: url.replacingOccurrences(of: key, with: other)), 403, "ticket URL moved to \(other)")
        }
        // The ticket's URL cannot write either.
        let put = try HTTPClient(options: HTTPTransportOptions()).fetch(HTTPRequest(method: "PUT", url: url, body: .bytes([1, 2, 3]))).0.status
        XCTAssertEqual(put, 403)
        XCTAssertEqual(try fetchTicket(url).1, ticket, "the ticket is unchanged")

        // A second signature of the same image is another ticket.
        _ = try sign(arg, expected.id.hex.prefix(16).description)
        XCTAssertEqual(try ticketKeys(remote).count, 2)
    }

    func testExpiredURLIsRefusedInOneLine() throws {
        let (remote, arg, _) = try pushedApp()
        // Long enough that a slow machine still reads the ticket before it expires.
        let url = try sign(arg, "dogestry-test/app:v1", expires: "5s")
        let expiry = try XCTUnwrap(SignedURL.expiry(of: url))
        let ticket = try XCTUnwrap(try fetchTicket(url).1, "the ticket is readable at once")
        XCTAssertEqual(try ticket.expiryDate(), expiry)
        Thread.sleep(forTimeInterval: max(0, expiry.timeIntervalSinceNow) + 1.5)

        // The server refuses it too (so the client's own check is not the only guard).
        XCTAssertEqual(try status(of: url), 403)
        let cwd = try CLITest.makeTempDir(self, "puller")
        let r = try runBare(["pull", url, "--archive", "out.tar"], cwd: cwd)
        assertOneLineFailure(r, containing: ["this signed URL expired at \(RFC3339.format(expiry))", "ask for a new one with dogestry sign"])
        assertFiles(cwd, [])
        let r2 = try runBare(["pull", url, "--archive", "-"], cwd: cwd)
        assertOneLineFailure(r2, containing: ["expired"])
        XCTAssertEqual(r2.stdout.count, 0)

        // A ticket whose own expiry has passed is refused even when its URL still works.
        var stale = ticket
        stale.expires = RFC3339.format(Date().addingTimeInterval(-60))
        let key = try XCTUnwrap(try ticketKeys(remote).first)
        try remote.put(key, bytes: stale.encoded())
        let fresh = try remote.signedURL(forGet: key, expires: 600)
        let r3 = try runBare(["pull", fresh, "--archive", "out.tar"], cwd: cwd)
        assertOneLineFailure(r3, containing: ["this signed URL expired at \(stale.expires)"])
        assertFiles(cwd, [])
    }

    func testServerSideExpiryIsReportedAsExpired() throws {
        // What S3 answers for a presigned URL past its time (SeaweedFS and AWS alike).
        let (remote, _, _) = try pushedApp()
        try remote.put("x", bytes: [1])
        let url = try remote.signedURL(forGet: "x", expires: 1)
        Thread.sleep(forTimeInterval: 2)
        let (resp, _) = try HTTPClient(options: HTTPTransportOptions()).fetch(HTTPRequest(method: "GET", url: url))
        XCTAssertEqual(resp.status, 403)
        let e = TicketRemote.refusal(resp, what: "blob", urlExpiry: nil, ticketExpiry: nil)
        XCTAssertTrue(e.message.hasPrefix("this signed URL expired at "), "\(e.message) (server said: \(resp.errorText()))")
        // With the expiry known, the message names it.
        let at = try XCTUnwrap(SignedURL.expiry(of: url))
        XCTAssertEqual(TicketRemote.refusal(resp, what: "blob", urlExpiry: at, ticketExpiry: nil).message,
                       "this signed URL expired at \(RFC3339.format(at)); ask for a new one with dogestry sign")
    }

    func testTamperedBlobURLFailsNamingTheBlob() throws {
        let (remote, arg, _) = try pushedApp()
        let url = try sign(arg, "dogestry-test/app:v1")
        let key = try XCTUnwrap(try ticketKeys(remote).first)
        let original = try PullTicket.decode(try remote.read(key), what: key)
        let cwd = try CLITest.makeTempDir(self, "puller")

        // One character of a layer URL's signature changed: the server refuses it.
        var t = original
        let i = t.blobs.count - 1
        var u = Array(t.blobs[i].url)
        let last = u.count - 1
        u[last] = u[last] == "0" ? "1" : "0"
        t.blobs[i].url = String(u)
        try remote.put(key, bytes: t.encoded())
        let r = try runBare(["pull", url, "--archive", "out.tar"], cwd: cwd)
        assertOneLineFailure(r, containing: ["blob \(t.blobs[i].digest)", "SignatureDoesNotMatch (403)"], quiet: false)
        assertFiles(cwd, [])
        let rq = try runBare(["pull", "-q", url, "--archive", "out.tar"], cwd: cwd)
        assertOneLineFailure(rq, containing: ["blob \(t.blobs[i].digest)", "SignatureDoesNotMatch (403)"])
        assertFiles(cwd, [])

        // A layer URL that serves another blob: the digest check stops the pull.
        t = original
        t.blobs[i].url = original.blobs[0].url
        try remote.put(key, bytes: t.encoded())
        let r2 = try runBare(["pull", url, "--archive", "out.tar"], cwd: cwd)
        assertOneLineFailure(r2, containing: ["layer blob \(t.blobs[i].digest)", "corrupt"], quiet: false)
        assertFiles(cwd, [])

        // A ticket that leaves out a layer.
        t = original
        let dropped = t.blobs.remove(at: i)
        try remote.put(key, bytes: t.encoded())
        let r3 = try runBare(["pull", url, "--archive", "out.tar"], cwd: cwd)
        assertOneLineFailure(r3, containing: ["layer blob \(dropped.digest) is missing"], quiet: false)
        assertFiles(cwd, [])

        // A ticket from a newer dogestry.
        var json = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(original.encoded())) as? [String: Any])
        json["version"] = 2
        try remote.put(key, bytes: [UInt8](try JSONSerialization.data(withJSONObject: json)))
        let r4 = try runBare(["pull", url, "--archive", "out.tar"], cwd: cwd)
        assertOneLineFailure(r4, containing: ["version 2 pull ticket"])

        // Restored, it pulls again.
        try remote.put(key, bytes: original.encoded())
        let ok = try runBare(["pull", url, "--archive", "out.tar"], cwd: cwd)
        XCTAssertEqual(ok.status, 0, ok.stderr)
        assertFiles(cwd, ["out.tar"])
    }

    func testSignOnALocalRemoteIsAClearError() throws {
        let dir = try CLITest.makeTempDir(self, "local")
        let local = try LocalRemote(path: dir)
        try CLITest.libraryPush(fx.path("docker-app-v1.tar"), to: local)
        let cwd = try CLITest.makeTempDir(self, "signer")
        let r = try runSigner(["sign", dir, "dogestry-test/app:v1"], cwd: cwd)
        assertOneLineFailure(r, containing: ["remote file://\(dir) cannot sign URLs; sign works on S3 (and Manta) remotes"])
        XCTAssertEqual(r.stdout.count, 0)
        XCTAssertFalse(FS.exists(dir + "/tickets"))
    }

    func testBadDurationsAndImagesAreClearErrors() throws {
        let (remote, arg, _) = try pushedApp()
        let cwd = try CLITest.makeTempDir(self, "signer")
        for bad in ["abc", "1x", "10", "h", "-1h", "1.5h", "0s", "1h 30m"] {
            let r = try runSigner(["sign", arg, "dogestry-test/app:v1", "--expires=" + bad], cwd: cwd)
            assertOneLineFailure(r, containing: ["--expires"])
            XCTAssertEqual(r.stdout.count, 0, "nothing printed for \(bad)")
        }
        let empty = try runSigner(["sign", arg, "dogestry-test/app:v1", "--expires="], cwd: cwd)
        XCTAssertNotEqual(empty.status, 0)
        XCTAssertEqual(empty.stdout.count, 0)
        let tooLong = try runSigner(["sign", arg, "dogestry-test/app:v1", "--expires", "8d"], cwd: cwd)
        assertOneLineFailure(tooLong, containing: ["--expires 8d is too long", "7 days"])
        let missing = try runSigner(["sign", arg, "dogestry-test/app:nope"], cwd: cwd)
        assertOneLineFailure(missing, containing: ["dogestry-test/app:nope", "not on"])
        XCTAssertEqual(try ticketKeys(remote), [], "no ticket written by a refused sign")
        // The longest allowed lifetime and a compound one work.
        _ = try sign(arg, "dogestry-test/app:v1", expires: "7d")
        _ = try sign(arg, "dogestry-test/app:v1", expires: "1h30m")
        XCTAssertEqual(try ticketKeys(remote).count, 2)
    }

    func testLifetimeParsing() throws {
        XCTAssertEqual(try Lifetime.parse("1s"), 1)
        XCTAssertEqual(try Lifetime.parse("90s"), 90)
        XCTAssertEqual(try Lifetime.parse("30m"), 1800)
        XCTAssertEqual(try Lifetime.parse("1h"), 3600)
        XCTAssertEqual(try Lifetime.parse("12h"), 43200)
        XCTAssertEqual(try Lifetime.parse("7d"), 604_800)
        XCTAssertEqual(try Lifetime.parse("1h30m"), 5400)
        XCTAssertEqual(try Lifetime.parse("2H"), 7200)
        for bad in ["", "1", "m", "1x", "-5m", "1.5h", "0h", "1h 2m", "9999999999d"] {
            XCTAssertThrowsError(try Lifetime.parse(bad), bad)
        }
        XCTAssertEqual(Lifetime.format(5400), "1h30m")
        XCTAssertEqual(Lifetime.format(604_800), "7d")
        // Expiry of signed URLs: S3 (X-Amz-Date + X-Amz-Expires) and Manta (expires=unix seconds).
        XCTAssertEqual(SignedURL.expiry(of: "https://h/b/k?X-Amz-Date=20261126T060000Z&X-Amz-Expires=3600&X-Amz-Signature=ab"),
                       RFC3339.parse("2026-11-26T07:00:00Z"))
        XCTAssertEqual(SignedURL.expiry(of: "https://us-east.manta.example/u/stor/k?algorithm=RSA-SHA256&expires=1795676400&keyId=x&signature=y"),
                       Date(timeIntervalSince1970: 1_795_676_400))
        XCTAssertNil(SignedURL.expiry(of: "https://h/k"))
        XCTAssertEqual(SignedURL.expiredError(RFC3339.parse("2026-11-26T07:00:00Z")!).message,
                       "this signed URL expired at 2026-11-26T07:00:00Z; ask for a new one with dogestry sign")
    }
}
