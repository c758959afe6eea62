import DogestryCore
import DogestryHTTP
@testable import DogestryRemotes
import Foundation
import XCTest

/// Manta keys held by ssh-agent: the real OpenSSH `ssh-agent` and `ssh-add`, started and stopped
/// here, with keys made by `ssh-keygen`; signatures checked against the key file's own and openssl;
/// then end to end against the Manta simulator (Joyent's http-signature/sshpk verify them).
final class MantaAgentTests: XCTestCase {
    var dir = ""
    var agents: [Process] = []

    override func setUpWithError() throws {
        // Short: a unix socket path must fit in 108 bytes.
        dir = "/tmp/dga-" + UUID().uuidString.prefix(8).lowercased()
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
    }

    override func tearDown() {
        for p in agents where p.isRunning {
            kill(p.processIdentifier, SIGCONT)
            p.terminate()
            p.waitUntilExit()
        }
        agents = []
        try? FileManager.default.removeItem(atPath: dir)
    }

    // MARK: helpers

    @discardableResult
    func run(_ args: [String], env extra: [String: String] = [:]) throws -> String {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        p.arguments = args
        p.currentDirectoryURL = URL(fileURLWithPath: dir)
        p.environment = ProcessInfo.processInfo.environment.merging(extra) { $1 }
        let out = Pipe(); p.standardOutput = out
        let err = Pipe(); p.standardError = err
        p.standardInput = FileHandle.nullDevice
        try p.run()
        let data = out.fileHandleForReading.readDataToEndOfFile()
        let errData = err.fileHandleForReading.readDataToEndOfFile()
        p.waitUntilExit()
        guard p.terminationStatus == 0 else {
            throw DogestryError.io("\(args.joined(separator: " ")) failed: \(String(decoding: errData, as: UTF8.self))")
        }
        return String(decoding: data, as: UTF8.self)
    }

    /// Starts `ssh-agent -D -a SOCKET` (stopped in tearDown); returns the socket and the process.
    @discardableResult
    func startAgent(_ name: String = "agent", env extra: [String: String] = [:]) throws -> (sock: String, process: Process) {
        let sock = dir + "/" + name + ".sock"
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/bin/ssh-agent")
        p.arguments = ["-D", "-a", sock]
        var env = ProcessInfo.processInfo.environment
        env.removeValue(forKey: "SSH_AUTH_SOCK")
        p.environment = env.merging(extra) { $1 }
        p.standardOutput = FileHandle.nullDevice
        p.standardError = FileHandle.nullDevice
        p.standardInput = FileHandle.nullDevice
        try p.run()
        agents.append(p)
        for _ in 0..<200 where !FileManager.default.fileExists(atPath: sock) { usleep(25_000) }
        guard FileManager.default.fileExists(atPath: sock) else { throw DogestryError.io("ssh-agent did not make \(sock)") }
        return (sock, p)
    }

    func add(_ key: String, to sock: String, _ flags: [String] = [], env extra: [String: String] = [:]) throws {
        try run(["ssh-add", "-q"] + flags + [key], env: ["SSH_AUTH_SOCK": sock].merging(extra) { $1 })
    }

    func keygen(_ name: String, _ extra: [String]) throws -> String {
        try run(["ssh-keygen", "-q", "-N", "", "-C", "test-" + name] + extra + ["-f", name])
        return dir + "/" + name
    }

    /// (MD5 without its prefix, SHA256:…) of a public key file, as ssh-keygen prints them.
    func fingerprints(_ pub: String) throws -> (md5: String, sha256: String) {
        let md5 = try run(["ssh-keygen", "-l", "-E", "md5", "-f", pub]).split(separator: " ")[1]
        let sha = try run(["ssh-keygen", "-l", "-f", pub]).split(separator: " ")[1]
        return (String(md5.dropFirst(4)), String(sha))
    }

    func agentKey(_ sock: String, _ keyID: String, timeout: TimeInterval = 10) throws -> SSHAgentKey {
        guard let k = try SSHAgentKey.find(keyID: keyID, agent: SSHAgent(socketPath: sock, timeout: timeout)) else {
            throw DogestryError.notFound("agent has no key \(keyID)")
        }
        return k
    }

    /// openssl's verdict on `sig` over `msg` with the public half of `pub` (an OpenSSH .pub file).
    func opensslVerifies(_ sig: [UInt8], _ msg: [UInt8], pub: String, hash: MantaHash) throws -> Bool {
        try Data(sig).write(to: URL(fileURLWithPath: dir + "/sig.der"))
        try Data(msg).write(to: URL(fileURLWithPath: dir + "/msg"))
        try run(["ssh-keygen", "-e", "-m", "PKCS8", "-f", pub]).write(toFile: dir + "/pub.pem", atomically: true, encoding: .utf8)
        return (try? run(["openssl", "dgst", "-\(hash.rawValue)", "-verify", "pub.pem", "-signature", "sig.der", "msg"]))?.contains("Verified OK") ?? false
    }

    // MARK: the agent protocol against OpenSSH's ssh-agent

    func testAgentListsItsIdentitiesWithSSHKeygensFingerprints() throws {
        let (sock, _) = try startAgent()
        XCTAssertEqual(try SSHAgent(socketPath: sock).identities().count, 0)
        let keys = [try keygen("rsa", ["-t", "rsa", "-b", "2048"]), try keygen("ec256", ["-t", "ecdsa", "-b", "256"]),
                    try keygen("ec521", ["-t", "ecdsa", "-b", "521"]), try keygen("ed", ["-t", "ed25519"])]
        for k in keys { try add(k, to: sock) }
        let ids = try SSHAgent(socketPath: sock).identities().map { SSHAgentKey(agent: SSHAgent(socketPath: sock), identity: $0) }
        XCTAssertEqual(ids.map(\.comment), ["test-rsa", "test-ec256", "test-ec521", "test-ed"])
        XCTAssertEqual(ids.map(\.kind), [.rsa(bits: 2048), .ecdsa(curve: "nistp256"), .ecdsa(curve: "nistp521"), .ed25519])
        for (k, path) in zip(ids, keys) {
            let fp = try fingerprints(path + ".pub")
            XCTAssertEqual(k.md5Fingerprint, fp.md5, path)
            XCTAssertEqual(k.sha256Fingerprint, fp.sha256, path)
            XCTAssertTrue(k.matches(keyID: fp.md5) && k.matches(keyID: "MD5:" + fp.md5) && k.matches(keyID: fp.sha256), path)
            XCTAssertFalse(k.matches(keyID: "MD5:00:11:22:33:44:55:66:77:88:99:aa:bb:cc:dd:ee:ff"))
        }
        XCTAssertEqual(ids.map(\.family).prefix(3), ["rsa", "ecdsa", "ecdsa"])
        XCTAssertEqual(ids[1].hashes, [.sha256]); XCTAssertEqual(ids[2].hashes, [.sha512])
    }

    /// RSA PKCS#1 v1.5 is deterministic: the agent's signature is byte for byte the key file's.
    func testRSASignatureThroughTheAgentEqualsTheKeyFilesOwn() throws {
        let (sock, _) = try startAgent()
        for (name, bits) in [("rsa2048", "2048"), ("rsa3072", "3072")] {
            let path = try keygen(name, ["-t", "rsa", "-b", bits])
            try add(path, to: sock)
            let file = try MantaPrivateKey.load(path: path)
            let agent = try agentKey(sock, "MD5:" + file.md5Fingerprint)
            for hash in [MantaHash.sha1, .sha256, .sha512] {
                for msg in ["date: Thu, 26 Nov 2026 05:00:00 GMT", "GET\nhost\n/p\nalgorithm=RSA-SHA256"] {
                    let data = Array(msg.utf8)
                    let sig = try agent.sign(data, hash: hash)
                    XCTAssertEqual(sig, try file.sign(data, hash: hash), "\(name) \(hash)")
                    XCTAssertTrue(try opensslVerifies(sig, data, pub: path + ".pub", hash: hash), "\(name) \(hash)")
                }
            }
        }
    }

    /// ECDSA is randomised: each agent signature, turned into DER, must verify with openssl
    /// (many messages, so r and s with the high bit set, which need a 0x00 in DER, come up).
    func testECDSASignaturesThroughTheAgentVerifyWithOpenSSL() throws {
        let (sock, _) = try startAgent()
        for (name, bits, hash) in [("ec256", "256", MantaHash.sha256), ("ec521", "521", .sha512)] {
            let path = try keygen(name, ["-t", "ecdsa", "-b", bits])
            try add(path, to: sock)
            let agent = try agentKey(sock, try fingerprints(path + ".pub").sha256)
            for i in 0..<12 {
                let data = Array("date: Thu, 26 Nov 2026 05:00:\(10 + i) GMT".utf8)
                let sig = try agent.sign(data, hash: hash)
                XCTAssertEqual(sig.first, 0x30, "\(name): not a DER SEQUENCE")
                XCTAssertTrue(try opensslVerifies(sig, data, pub: path + ".pub", hash: hash), "\(name) #\(i): \(Data(sig).base64EncodedString())")
            }
            let other: MantaHash = hash == .sha256 ? .sha512 : .sha256
            XCTAssertThrowsError(try agent.sign([1], hash: other)) { XCTAssertTrue("\($0)".contains("only, not \(other.rawValue)"), "\($0)") }
        }
    }

    func testDERSignatureEncodingFollowsTheLeadingZeroRules() throws {
        // Minimal positive INTEGERs: leading zeros dropped, one 0x00 added before a high bit, zero is 02 01 00.
        XCTAssertEqual(try SSHAgentKey.derSignature(r: [0x01, 0x02], s: [0x00, 0x85]),
                       [0x30, 0x08, 0x02, 0x02, 0x01, 0x02, 0x02, 0x02, 0x00, 0x85])
        XCTAssertEqual(try SSHAgentKey.derSignature(r: [0x00, 0x00, 0x7f], s: []), [0x30, 0x06, 0x02, 0x01, 0x7f, 0x02, 0x01, 0x00])
        // P-521 sizes: 66-byte values, 0x00-prefixed, need the long length form for the SEQUENCE.
        let big = [UInt8](repeating: 0xff, count: 66)
        let der = try SSHAgentKey.derSignature(r: [0] + big, s: [0, 0] + big)
        XCTAssertEqual(Array(der.prefix(3)), [0x30, 0x81, 138])
        XCTAssertEqual(Array(der[3..<5]), [0x02, 67]); XCTAssertEqual(der[5], 0)
        XCTAssertEqual(der.count, 141)
        // A negative mpint is no ECDSA value.
        XCTAssertThrowsError(try SSHAgentKey.derSignature(r: [0x80], s: [1]))
    }

    func testUnreachableOrHungAgentGivesOneLineErrors() throws {
        let missing = dir + "/no-such.sock"
        XCTAssertThrowsError(try SSHAgent(socketPath: missing).identities()) { err in
            XCTAssertTrue("\(err)".contains("ssh-agent at \(missing) (SSH_AUTH_SOCK)"), "\(err)")
            XCTAssertTrue("\(err)".contains("No such file"), "\(err)")
        }
        // A stopped agent accepts the connection but never answers: the timeout ends the wait.
        let (sock, p) = try startAgent()
        let path = try keygen("rsa", ["-t", "rsa", "-b", "2048"])
        try add(path, to: sock)
        let key = try agentKey(sock, try fingerprints(path + ".pub").md5, timeout: 1)
        kill(p.processIdentifier, SIGSTOP)
        defer { kill(p.processIdentifier, SIGCONT) }
        // (The messages say the 1 s limit fired; a missing limit would hang here for good.)
        XCTAssertThrowsError(try SSHAgent(socketPath: sock, timeout: 1).identities()) { err in
            XCTAssertTrue("\(err)".contains("ssh-agent at \(sock) (SSH_AUTH_SOCK) did not answer within 1 s"), "\(err)")
        }
        XCTAssertThrowsError(try key.sign([1], hash: .sha256)) { XCTAssertTrue("\($0)".contains("did not answer within 1 s while signing"), "\($0)") }
        kill(p.processIdentifier, SIGCONT)
        XCTAssertEqual(try key.sign([1], hash: .sha256).count, 256)
        // Something that is not a socket.
        XCTAssertTrue(FileManager.default.createFile(atPath: dir + "/plain", contents: Data()))
        XCTAssertThrowsError(try SSHAgent(socketPath: dir + "/plain").identities()) { XCTAssertTrue("\($0)".contains("cannot connect"), "\($0)") }
    }

    /// A key added with `ssh-add -c` needs a confirmation; with no way to ask, the agent refuses.
    func testConfirmRequiredKeyRefusalIsClear() throws {
        let (sock, _) = try startAgent(env: ["SSH_ASKPASS": "/bin/false", "SSH_ASKPASS_REQUIRE": "force", "DISPLAY": ":0"])
        let path = try keygen("rsa", ["-t", "rsa", "-b", "2048"])
        try add(path, to: sock, ["-c"])
        let fp = try fingerprints(path + ".pub").md5
        let key = try agentKey(sock, fp)
        XCTAssertThrowsError(try key.sign([1], hash: .sha256)) { err in
            XCTAssertEqual((err as? DogestryError)?.kind, .auth)
            XCTAssertTrue("\(err)".contains("ssh-agent at \(sock) (SSH_AUTH_SOCK) refused to sign with key \(fp)"), "\(err)")
        }
    }

    func testEd25519KeyInTheAgentIsRefusedClearly() throws {
        let (sock, _) = try startAgent()
        let path = try keygen("ed", ["-t", "ed25519"])
        try add(path, to: sock)
        let fp = try fingerprints(path + ".pub")
        XCTAssertThrowsError(try SSHAgentKey.find(keyID: fp.sha256, agent: SSHAgent(socketPath: sock))) {
            XCTAssertTrue("\($0)".contains("ed25519, which Manta does not support"), "\($0)")
        }
        // Through the remote: the agent's answer and the key directory both appear in the error.
        let empty = dir + "/empty"
        try FileManager.default.createDirectory(atPath: empty, withIntermediateDirectories: true)
        var s = MantaSettings(url: "http://127.0.0.1:1", account: "acct", user: nil, keyID: "MD5:" + fp.md5, privateKeyPath: nil,
                              algorithm: nil, root: "/acct/stor/x", durability: nil, insecure: false, role: nil, sshDir: empty)
        s.agentSocket = sock
        XCTAssertThrowsError(try MantaRemote(settings: s)) { err in
            let m = "\(err)"
            XCTAssertTrue(m.contains("ed25519, which Manta does not support") && m.contains("no private key in \(empty)"), m)
            XCTAssertFalse(m.contains("\n"))
        }
    }

    func testSettingsTakeSSHAuthSockFromTheEnvironment() throws {
        let s = try MantaSettings.resolve(remoteURL: "manta://m.example/acme/stor/x", config: ["key_id": "MD5:aa"],
                                          environment: ["SSH_AUTH_SOCK": "/run/agent.sock"], home: "/h")
        XCTAssertEqual(s.agentSocket, "/run/agent.sock")
        XCTAssertNil(try MantaSettings.resolve(remoteURL: "manta://m.example/acme/stor/x", config: [:], environment: ["SSH_AUTH_SOCK": ""], home: "/h").agentSocket)
        XCTAssertNil(try MantaSettings.resolve(remoteURL: "manta://m.example/acme/stor/x", config: [:], environment: [:], home: "/h").agentSocket)
        // No agent and no key file: the error says both.
        var none = s
        none.agentSocket = nil
        none.sshDir = dir
        XCTAssertThrowsError(try MantaRemote(settings: none)) { err in
            XCTAssertTrue("\(err)".contains("SSH_AUTH_SOCK is not set") && "\(err)".contains("no private key in \(dir)"), "\(err)")
        }
    }

    // MARK: end to end against the Manta simulator

    struct Sim { var url: String; var account: String; var keysDir: String; var rsaKey: String }

    func simulator() throws -> Sim {
        let e = ProcessInfo.processInfo.environment
        guard let url = e["DOGESTRY_TEST_MANTA_URL"], let acct = e["DOGESTRY_TEST_MANTA_USER"], let key = e["DOGESTRY_TEST_MANTA_KEY"],
              let dir = e["DOGESTRY_TEST_MANTA_KEYS_DIR"] else {
            let msg = "no Manta simulator: DOGESTRY_TEST_MANTA_* are not set (run scripts/test)"
            if e["DOGESTRY_REQUIRE_ENGINES"] == "1" { XCTFail(msg); throw DogestryError.notFound(msg) }
            throw XCTSkip(msg)
        }
        return Sim(url: url, account: acct, keysDir: dir, rsaKey: key)
    }

    /// A simulator key file (registered unless named otherwise) and its MD5 key_id.
    func simKey(_ sim: Sim, _ file: String) throws -> (path: String, keyID: String) {
        let path = sim.keysDir + "/" + file
        let pub = sim.keysDir + "/" + (file.components(separatedBy: ".").first ?? file) + ".pub"
        XCTAssertTrue(FileManager.default.fileExists(atPath: path), path)
        return (path, "MD5:" + (try fingerprints(pub).md5))
    }

    func emptyDir(_ name: String = "empty-ssh") throws -> String {
        let d = dir + "/" + name
        try FileManager.default.createDirectory(atPath: d, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
        return d
    }

    func agentRemote(_ sim: Sim, keyID: String, sock: String?, sshDir: String, algo: String? = nil, timeout: TimeInterval = 10) throws -> MantaRemote {
        var s = MantaSettings(url: sim.url, account: sim.account, user: nil, keyID: keyID, privateKeyPath: nil, algorithm: algo,
                              root: "/\(sim.account)/stor/agent-" + UUID().uuidString.lowercased(), durability: nil,
                              insecure: false, role: nil, sshDir: sshDir)
        s.agentSocket = sock
        s.agentTimeout = timeout
        return try MantaRemote(settings: s, retry: RetryPolicy(maxRetries: 2, baseDelay: 0.05))
    }

    /// put, get, list, stat and a signed URL, all signed by `r`'s key.
    func roundTrip(_ r: MantaRemote, _ label: String, file: StaticString = #filePath, line: UInt = #line) throws {
        let data = Array("through \(label)".utf8)
        try r.put("blobs/sha256/" + String(repeating: "ef", count: 32), bytes: data)
        try r.put("tags/latest", bytes: [1, 2, 3])
        XCTAssertEqual(try r.read("blobs/sha256/" + String(repeating: "ef", count: 32)), data, label, file: file, line: line)
        var keys: [String] = []
        try r.list(prefix: "") { keys.append($0.key) }
        XCTAssertEqual(keys.sorted(), ["blobs/sha256/" + String(repeating: "ef", count: 32), "tags/latest"], label, file: file, line: line)
        XCTAssertEqual(try r.stat("tags/latest")?.size, 3, label, file: file, line: line)
        let url = try r.signedURL(forGet: "blobs/sha256/" + String(repeating: "ef", count: 32), expires: 60)
        let (resp, body) = try HTTPClient(options: HTTPTransportOptions()).fetch(HTTPRequest(url: url))
        XCTAssertEqual(resp.status, 200, "\(label): signed URL refused", file: file, line: line)
        XCTAssertEqual(body, data, label, file: file, line: line)
        try r.delete("tags/latest")
        XCTAssertNil(try r.stat("tags/latest"), label, file: file, line: line)
    }

    func testRSAKeyInTheAgentSignsRequestsAndSignedURLs() throws {
        let sim = try simulator()
        let (sock, _) = try startAgent()
        let k = try simKey(sim, "id_rsa.pem")
        try add(k.path, to: sock)
        let empty = try emptyDir()
        for algo in [nil, "rsa-sha1", "rsa-sha512"] {
            let r = try agentRemote(sim, keyID: k.keyID, sock: sock, sshDir: empty, algo: algo)
            XCTAssertTrue(r.key is SSHAgentKey, "\(r.key)")
            XCTAssertEqual(r.algorithm, algo ?? "rsa-sha256")
            XCTAssertEqual(r.keyIDPath, "/\(sim.account)/keys/" + k.keyID.dropFirst(4))
            try roundTrip(r, "agent rsa \(algo ?? "default")")
        }
        // A SHA256 key_id names the same agent key.
        let sha = try fingerprints(sim.keysDir + "/id_rsa.pub").sha256
        try roundTrip(try agentRemote(sim, keyID: sha, sock: sock, sshDir: empty), "agent rsa by SHA256 key_id")
    }

    func testECDSAKeysInTheAgentSignRequestsAndSignedURLs() throws {
        let sim = try simulator()
        let (sock, _) = try startAgent()
        let empty = try emptyDir()
        for (file, algo) in [("id_ecdsa_p256.pem", "ecdsa-sha256"), ("id_ecdsa_p521.pem", "ecdsa-sha512")] {
            let k = try simKey(sim, file)
            try add(k.path, to: sock)
            let r = try agentRemote(sim, keyID: k.keyID, sock: sock, sshDir: empty)
            XCTAssertTrue(r.key is SSHAgentKey, "\(r.key)")
            XCTAssertEqual(r.algorithm, algo, "the curve picks the hash")
            try roundTrip(r, "agent \(file)")
            // The other hash is not something the agent can make with this curve.
            let other = algo == "ecdsa-sha256" ? "ecdsa-sha512" : "ecdsa-sha256"
            XCTAssertThrowsError(try agentRemote(sim, keyID: k.keyID, sock: sock, sshDir: empty, algo: other)) {
                XCTAssertTrue("\($0)".contains("cannot be used with ssh-agent key") && "\($0)".contains("signs with \(algo) only"), "\($0)")
            }
        }
    }

    /// ssh-agent signs P-384 only with sha384, which Manta refuses: a clear error, unless the key
    /// file is in the key directory (the file path signs P-384 with sha256, as without an agent).
    func testP384KeyInTheAgentIsRefusedClearlyUnlessItsFileIsAtHand() throws {
        let sim = try simulator()
        let (sock, _) = try startAgent()
        let k = try simKey(sim, "id_ecdsa_p384.pem")
        try add(k.path, to: sock)
        let empty = try emptyDir()
        XCTAssertThrowsError(try agentRemote(sim, keyID: k.keyID, sock: sock, sshDir: empty)) { err in
            let m = "\(err)"
            XCTAssertTrue(m.contains("P-384") && m.contains("Manta does not accept sha384") && m.contains(sock) && m.contains(empty), m)
        }
        let withFile = try emptyDir("ssh-p384")
        try FileManager.default.copyItem(atPath: k.path, toPath: withFile + "/id_ecdsa")
        let r = try agentRemote(sim, keyID: k.keyID, sock: sock, sshDir: withFile)
        XCTAssertTrue(r.key is MantaPrivateKey)
        try roundTrip(r, "p384 from the key directory")
    }

    /// An encrypted key (which dogestry refuses to read) works once unlocked into the agent.
    func testEncryptedKeyUnlockedInTheAgentSigns() throws {
        let sim = try simulator()
        let (sock, _) = try startAgent()
        let k = try simKey(sim, "id_rsa_enc.pem")
        let askpass = dir + "/askpass"
        try "#!/bin/sh\necho secret\n".write(toFile: askpass, atomically: true, encoding: .utf8)
        try FileManager.default.setAttributes([.posixPermissions: 0o700], ofItemAtPath: askpass)
        try add(k.path, to: sock, env: ["SSH_ASKPASS": askpass, "SSH_ASKPASS_REQUIRE": "force", "DISPLAY": ":0"])
        let r = try agentRemote(sim, keyID: k.keyID, sock: sock, sshDir: try emptyDir())
        try roundTrip(r, "encrypted key in the agent")
    }

    func testAgentWithoutTheKeyFallsBackToTheKeyDirectory() throws {
        let sim = try simulator()
        let (sock, _) = try startAgent()
        try add(try simKey(sim, "id_ecdsa_p256.pem").path, to: sock)   // some other key
        let k = try simKey(sim, "id_rsa.pem")
        let sshDir = try emptyDir("ssh")
        try FileManager.default.copyItem(atPath: k.path, toPath: sshDir + "/id_rsa")
        let r = try agentRemote(sim, keyID: k.keyID, sock: sock, sshDir: sshDir)
        XCTAssertEqual((r.key as? MantaPrivateKey)?.source, sshDir + "/id_rsa")
        try roundTrip(r, "fallback to the key directory")
        // Neither place has it: the error names both.
        let empty = try emptyDir()
        XCTAssertThrowsError(try agentRemote(sim, keyID: k.keyID, sock: sock, sshDir: empty)) { err in
            XCTAssertEqual((err as? DogestryError)?.kind, .auth)
            XCTAssertTrue("\(err)".contains("ssh-agent at \(sock) (SSH_AUTH_SOCK) holds no key with that fingerprint") &&
                          "\(err)".contains("no private key in \(empty) has it"), "\(err)")
        }
    }

    func testMissingOrHungAgentFallsBackOrSaysBothPlaces() throws {
        let sim = try simulator()
        let k = try simKey(sim, "id_rsa.pem")
        let sshDir = try emptyDir("ssh")
        try FileManager.default.copyItem(atPath: k.path, toPath: sshDir + "/id_rsa")
        let missing = dir + "/gone.sock"
        try roundTrip(try agentRemote(sim, keyID: k.keyID, sock: missing, sshDir: sshDir), "no agent socket")
        let empty = try emptyDir()
        XCTAssertThrowsError(try agentRemote(sim, keyID: k.keyID, sock: missing, sshDir: empty)) { err in
            XCTAssertTrue("\(err)".contains("ssh-agent at \(missing) (SSH_AUTH_SOCK): cannot connect") &&
                          "\(err)".contains("no private key in \(empty) has it"), "\(err)")
        }
        // A stopped agent: listing times out, then the key directory is used.
        let (sock, p) = try startAgent()
        try add(k.path, to: sock)
        kill(p.processIdentifier, SIGSTOP)
        defer { kill(p.processIdentifier, SIGCONT) }
        let r = try agentRemote(sim, keyID: k.keyID, sock: sock, sshDir: sshDir, timeout: 1)
        XCTAssertTrue(r.key is MantaPrivateKey)
        try r.put("x", bytes: [1])
    }

    /// The agent refuses at request time (a confirm-required key with no way to confirm): the
    /// request fails with one clear line, without retries.
    func testAgentRefusingToSignFailsTheRequestClearly() throws {
        let sim = try simulator()
        let (sock, _) = try startAgent(env: ["SSH_ASKPASS": "/bin/false", "SSH_ASKPASS_REQUIRE": "force", "DISPLAY": ":0"])
        let k = try simKey(sim, "id_rsa.pem")
        try add(k.path, to: sock, ["-c"])
        let r = try agentRemote(sim, keyID: k.keyID, sock: sock, sshDir: try emptyDir())
        XCTAssertThrowsError(try r.put("x", bytes: [1])) { err in
            XCTAssertEqual((err as? DogestryError)?.kind, .auth)
            XCTAssertTrue("\(err)".contains("ssh-agent at \(sock) (SSH_AUTH_SOCK) refused to sign with key \(k.keyID.dropFirst(4))"), "\(err)")
        }
        XCTAssertEqual(r.traffic.requests, 0)
        XCTAssertThrowsError(try r.signedURL(forGet: "x", expires: 60)) { XCTAssertTrue("\($0)".contains("refused to sign"), "\($0)") }
    }
}
