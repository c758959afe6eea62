import DogestryCore
import DogestryHTTP
@testable import DogestryRemotes
import Foundation
import XCTest

/// MantaRemote against the Manta simulator (scripts/manta-sim, started by scripts/test), which
/// verifies signatures with Joyent's own node-http-signature and node-sshpk.
final class MantaRemoteTests: XCTestCase {
    struct Env { var url: String; var account: String; var subuser: String; var key: String; var keyID: String; var keysDir: String; var otherKey: String }

    func env() throws -> Env { try Self.environment() }

    static func environment() throws -> Env {
        let e = ProcessInfo.processInfo.environment
        guard let url = e["DOGESTRY_TEST_MANTA_URL"], let acct = e["DOGESTRY_TEST_MANTA_USER"], let key = e["DOGESTRY_TEST_MANTA_KEY"],
              let id = e["DOGESTRY_TEST_MANTA_KEY_ID"], let dir = e["DOGESTRY_TEST_MANTA_KEYS_DIR"] else {
            let msg = "no Manta simulator: DOGESTRY_TEST_MANTA_* are not set (run scripts/test)"
            if e["DOGESTRY_REQUIRE_ENGINES"] == "1" { XCTFail(msg); throw DogestryError.notFound(msg) }
            throw XCTSkip(msg)
        }
        return Env(url: url, account: acct, subuser: e["DOGESTRY_TEST_MANTA_SUBUSER"] ?? "ci", key: key, keyID: id,
                   keysDir: dir, otherKey: e["DOGESTRY_TEST_MANTA_OTHER_KEY"] ?? "")
    }

    func settings(_ e: Env, key: String? = nil, user: String? = nil, algo: String? = nil, durability: Int? = nil) -> MantaSettings {
        Self.settings(e, key: key, user: user, algo: algo, durability: durability)
    }

    static func settings(_ e: Env, key: String? = nil, user: String? = nil, algo: String? = nil, durability: Int? = nil) -> MantaSettings {
        MantaSettings(url: e.url, account: e.account, user: user, keyID: nil, privateKeyPath: key ?? e.key, algorithm: algo,
                      root: "/\(e.account)/stor/t-" + UUID().uuidString.lowercased(), durability: durability,
                      insecure: false, role: nil, sshDir: "/nonexistent")
    }

    /// A remote over a fresh directory of the simulator (for the shared conformance suite).
    static func makeRemote() throws -> MantaRemote {
        try MantaRemote(settings: settings(try environment()), retry: RetryPolicy(maxRetries: 2, baseDelay: 0.05))
    }

    func remote(_ e: Env, key: String? = nil, user: String? = nil, algo: String? = nil, durability: Int? = nil) throws -> MantaRemote {
        try MantaRemote(settings: settings(e, key: key, user: user, algo: algo, durability: durability), retry: RetryPolicy(maxRetries: 2, baseDelay: 0.05))
    }

    // MARK: conformance (the same suite as every remote)
   // > 1024 entries: several pages
    func testConformanceChecksAreAllWired() { XCTAssertEqual(RemoteConformance.checks.count, 13) }

    // MARK: keys and algorithms

    struct KeyFile: Decodable { var file: String; var path: String; var format: String; var type: String; var registered: [String] }

    func keyFiles(_ e: Env) throws -> [KeyFile] {
        struct Doc: Decodable { var keys: [KeyFile] }
        return try JSONDecoder().decode(Doc.self, from: Data(contentsOf: URL(fileURLWithPath: e.keysDir + "/keys.json"))).keys
    }

    func testEveryRegisteredKeyInEveryFormatSigns() throws {
        let e = try env()
        let usable = try keyFiles(e).filter { $0.registered.contains(e.account) && !$0.format.contains("encrypted") }
        XCTAssertGreaterThanOrEqual(usable.count, 9)   // RSA in PKCS#1, PKCS#8, OpenSSH; ECDSA P-256/384/521 in SEC1 and OpenSSH
        for k in usable {
            let algos = k.type == "rsa" ? ["rsa-sha1", "rsa-sha256", "rsa-sha512"] : ["ecdsa-sha256", "ecdsa-sha512"]
            for a in algos {
                let r = try remote(e, key: k.path, algo: a)
                try r.put("probe", bytes: Array("\(k.file) \(a)".utf8))
                XCTAssertEqual(try r.read("probe"), Array("\(k.file) \(a)".utf8), "\(k.file) \(a)")
            }
        }
        // A sub-user signs as /ACCOUNT/USER/keys/FP.
        let sub = try remote(e, user: e.subuser)
        XCTAssertTrue(sub.keyIDPath.hasPrefix("/\(e.account)/\(e.subuser)/keys/"))
        try sub.put("sub", bytes: [1, 2, 3])
        XCTAssertEqual(try sub.read("sub"), [1, 2, 3])
    }

    func testUnusableKeysAreRefusedClearly() throws {
        let e = try env()
        for k in try keyFiles(e) where k.type == "ed25519" || k.format.contains("encrypted") {
            XCTAssertThrowsError(try remote(e, key: k.path), k.file) { err in
                let m = "\(err)"
                XCTAssertTrue(m.contains(k.type == "ed25519" ? "ed25519" : "encrypted"), "\(k.file): \(m)")
                XCTAssertFalse(m.contains("secret"))
            }
        }
        XCTAssertThrowsError(try remote(e, algo: "ecdsa-sha256")) { XCTAssertTrue("\($0)".contains("does not fit"), "\($0)") }
        XCTAssertThrowsError(try remote(e, algo: "rsa-sha384")) { XCTAssertTrue("\($0)".contains("not supported"), "\($0)") }
    }

    func testWrongKeyAndSkewedClockAreRefusedWithMantasMessages() throws {
        let e = try env()
        let unregistered = try keyFiles(e).first { $0.file.hasPrefix("unregistered") }!
        let r1 = try remote(e, key: unregistered.path)
        XCTAssertThrowsError(try r1.put("x", bytes: [1])) { err in
            XCTAssertEqual((err as? DogestryError)?.kind, .auth)
            XCTAssertTrue("\(err)".contains("KeyDoesNotExist (403)"), "\(err)")
        }
        // Another account's valid key may not write here.
        if !e.otherKey.isEmpty {
            var s = settings(e, key: e.otherKey)
            s.account = ProcessInfo.processInfo.environment["DOGESTRY_TEST_MANTA_OTHER_USER"] ?? "other"
            let r2 = try MantaRemote(settings: s, retry: RetryPolicy(maxRetries: 0))
            XCTAssertThrowsError(try r2.put("x", bytes: [1])) { XCTAssertTrue("\($0)".contains("(403)"), "\($0)") }
        }
        let r3 = try remote(e)
        r3.clockOffset = 600
        XCTAssertThrowsError(try r3.put("x", bytes: [1])) { XCTAssertTrue("\($0)".contains("InvalidHeader (400)"), "\($0)") }
        r3.clockOffset = 0
        try r3.put("x", bytes: [1])
    }

    // MARK: layout, durability, signed URLs

    func testBlobsAreShardedAndDurabilityReachesTheServer() throws {
        let e = try env()
        let r = try remote(e, durability: 3)
        let hex = String(repeating: "ab", count: 32)
        try r.put("blobs/sha256/" + hex, bytes: Array("blob".utf8))
        let (resp, _) = try r.fetch("HEAD", r.settings.root + "/blobs/sha256/ab/" + hex)
        XCTAssertEqual(resp.status, 200)
        XCTAssertEqual(resp.header("durability-level"), "3")
        var keys: [String] = []
        try r.list(prefix: "blobs/") { keys.append($0.key) }
        XCTAssertEqual(keys, ["blobs/sha256/" + hex])
        XCTAssertEqual(try r.stat("blobs/sha256/" + hex)?.size, 4)
        XCTAssertNil(try r.stat("blobs/sha256"))   // a directory is not a blob
    }

    /// A large staged blob into directories that do not exist yet is sent once: its directory is
    /// made before the body streams (a small object learns of it from its PUT's 404 instead).
    func testLargeBlobIntoNewDirectoriesIsSentOnce() throws {
        let r = try remote(try env())
        let data = RemoteConformance.bytes(3 << 20, seed: 7)
        let before = r.traffic
        try RemoteConformance.putStaged(r, "blobs/sha256/" + String(repeating: "cd", count: 32), data)
        let t = r.traffic
        XCTAssertEqual(t.bytesSent - before.bytesSent, Int64(data.count), "the body went up more than once")
        XCTAssertEqual(try RemoteConformance.content(r, "blobs/sha256/" + String(repeating: "cd", count: 32)), data)
        // A second one into the same (now known) shard directory: one request.
        let again = r.traffic
        try RemoteConformance.putStaged(r, "blobs/sha256/cd" + String(repeating: "ef", count: 31), data)
        XCTAssertEqual(r.traffic.requests - again.requests, 1)
    }

    /// Over https (a TLS proxy in front of the simulator, with a certificate from a CA nobody
    /// trusts) a Manta remote refuses the connection unless `insecure` (MANTA_TLS_INSECURE) is set.
    func testTLSIsVerifiedUnlessInsecure() throws {
        let e = try env()
        let certs = try S3RemoteTests.makeCertificates(for: self)
        let proxy = try S3RemoteTests.FaultProxy(upstream: e.url, tls: certs.good)
        var st = settings(e)
        st.url = proxy.endpoint
        let verified = try MantaRemote(settings: st, retry: RetryPolicy(maxRetries: 2, baseDelay: 0.01))
        XCTAssertThrowsError(try verified.put("x", bytes: [1])) { err in
            XCTAssertTrue("\(err)".contains("127.0.0.1:\(proxy.port)"), "\(err)")
            XCTAssertTrue("\(err)".lowercased().contains("certificate"), "\(err)")
        }
        XCTAssertEqual(try proxy.log().count, 0, "a request got through an unverified connection")
        st.insecure = true
        let insecure = try MantaRemote(settings: st, retry: RetryPolicy(maxRetries: 2, baseDelay: 0.01))
        try insecure.put("x", bytes: [1, 2])
        XCTAssertEqual(try insecure.read("x"), [1, 2])
        // MANTA_TLS_INSECURE reaches the settings.
        let resolved = try MantaSettings.resolve(remoteURL: "manta://127.0.0.1:\(proxy.port)/\(e.account)/stor/x", config: [:],
                                                 environment: ["MANTA_URL": proxy.endpoint, "MANTA_TLS_INSECURE": "1", "MANTA_KEY_ID": e.keyID],
                                                 home: "/nonexistent")
        XCTAssertTrue(resolved.insecure)
    }

    func testSignedURLsReadOneObjectAndExpire() throws {
        let e = try env()
        let r = try remote(e)
        try r.put("blobs/sha256/" + String(repeating: "cd", count: 32), bytes: Array("hello".utf8))
        let http = HTTPClient(options: HTTPTransportOptions())
        let url = try r.signedURL(forGet: "blobs/sha256/" + String(repeating: "cd", count: 32), expires: 60)
        let (ok, body) = try http.fetch(HTTPRequest(url: url))
        XCTAssertEqual(ok.status, 200)
        XCTAssertEqual(body, Array("hello".utf8))
        // The signature covers the path: another object is refused.
        try r.put("other", bytes: [9])
        let moved = url.replacingOccurrences(of: "/blobs/sha256/cd/" + String(repeating: "cd", count: 32), with: "/other")
        XCTAssertEqual(try http.fetch(HTTPRequest(url: moved)).0.status, 403)
        let short = try r.signedURL(forGet: "other", expires: 1)
        Thread.sleep(forTimeInterval: 2.2)
        let (expired, eb) = try http.fetch(HTTPRequest(url: short))
        XCTAssertEqual(expired.status, 403)
        XCTAssertTrue(String(decoding: eb.isEmpty ? expired.errorBody : eb, as: UTF8.self).contains("InvalidQueryStringAuthentication"))
    }

    // MARK: the simulator against an independent client

    /// Joyent's Python SDK (python-manta 3.0.0) puts, gets, lists and makes directories on the
    /// simulator, and is refused with the wrong key: the simulator is not shaped only by our client.
    func testJoyentsPythonSDKWorksAgainstTheSimulator() throws {
        _ = try env()
        let e = ProcessInfo.processInfo.environment
        guard let py = e["DOGESTRY_TEST_MANTA_PYTHON"], let script = e["DOGESTRY_TEST_MANTA_SDK_CHECK"] else {
            return XCTFail("the python-manta SDK is not installed (DOGESTRY_TEST_MANTA_PYTHON unset)")
        }
        let p = Process()
        p.executableURL = URL(fileURLWithPath: py)
        p.arguments = [script]
        let out = Pipe(); p.standardOutput = out; p.standardError = out
        try p.run()
        let text = String(decoding: out.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        p.waitUntilExit()
        XCTAssertEqual(p.terminationStatus, 0, text)
        for op in ["mkdir -p", "put_object", "get_object", "list_directory", "unregistered key is refused"] {
            XCTAssertTrue(text.contains("ok   " + op), "\(op) missing from:\n\(text)")
        }
        XCTAssertTrue(text.contains(" 0 failed"), text)
    }

    // MARK: settings

    func testSettingsFromURLConfigAndEnvironment() throws {
        let s = try MantaSettings.resolve(remoteURL: "manta://us-east.manta.example.com/acme/stor/images", config: [:],
                                          environment: ["MANTA_KEY_ID": "MD5:aa", "MANTA_SUBUSER": "ci", "MANTA_ROLE": "ops"], home: "/home/u")
        XCTAssertEqual(s.url, "https://us-east.manta.example.com")
        XCTAssertEqual(s.account, "acme"); XCTAssertEqual(s.root, "/acme/stor/images")
        XCTAssertEqual(s.user, "ci"); XCTAssertEqual(s.role, "ops"); XCTAssertEqual(s.keyID, "MD5:aa"); XCTAssertEqual(s.sshDir, "/home/u/.ssh")
        let local = try MantaSettings.resolve(remoteURL: "manta://127.0.0.1:9999/acme/stor/x", config: [:],
                                              environment: ["MANTA_URL": "http://127.0.0.1:9999"], home: "/h")
        XCTAssertEqual(local.url, "http://127.0.0.1:9999")
        let byConfig = try MantaSettings.resolve(remoteURL: nil, config: ["url": "https://m.example", "account": "acme", "durability": "2", "insecure": "true"],
                                                 environment: ["MANTA_USER": "ignored"], home: "/h")
        XCTAssertEqual(byConfig.root, "/acme/stor/dogestry"); XCTAssertEqual(byConfig.durability, 2); XCTAssertTrue(byConfig.insecure)
        XCTAssertThrowsError(try MantaSettings.resolve(remoteURL: nil, config: [:], environment: [:], home: "/h")) {
            XCTAssertTrue("\($0)".contains("no Manta URL"), "\($0)")
        }
        XCTAssertThrowsError(try MantaSettings.resolve(remoteURL: nil, config: ["url": "https://m", "account": "a", "root": "/b/stor/x"], environment: [:], home: "/h")) {
            XCTAssertTrue("\($0)".contains("must be a path under /a/"), "\($0)")
        }
    }
}
