import DogestryCore
@testable import DogestryRemotes
import Foundation
import XCTest

/// Manta signing keys: every file format, fingerprints against ssh-keygen, signatures against openssl.
final class MantaKeysTests: XCTestCase {
    var dir = ""

    override func setUpWithError() throws {
        dir = NSTemporaryDirectory() + "dogestry-keys-" + UUID().uuidString
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
    }
    override func tearDown() { try? FileManager.default.removeItem(atPath: dir) }

    @discardableResult
    func run(_ args: [String], stdin: [UInt8]? = nil) throws -> String {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        p.arguments = args
        p.currentDirectoryURL = URL(fileURLWithPath: dir)
        let out = Pipe(); p.standardOutput = out; p.standardError = Pipe()
        let inp = Pipe(); p.standardInput = inp
        try p.run()
        if let s = stdin { inp.fileHandleForWriting.write(Data(s)) }
        try inp.fileHandleForWriting.close()
        let data = out.fileHandleForReading.readDataToEndOfFile()
        p.waitUntilExit()
        guard p.terminationStatus == 0 else { throw DogestryError.io("\(args.joined(separator: " ")) failed") }
        return String(decoding: data, as: UTF8.self)
    }

    /// Makes a key with ssh-keygen (`extra` selects type and format) and returns its path.
    func keygen(_ name: String, _ extra: [String]) throws -> String {
        try run(["ssh-keygen", "-q", "-N", ""] + extra + ["-f", name])
        return dir + "/" + name
    }

    func fingerprints(_ path: String) throws -> (md5: String, sha256: String) {
        let md5 = try run(["ssh-keygen", "-l", "-E", "md5", "-f", path + ".pub"]).split(separator: " ")[1]
        let sha = try run(["ssh-keygen", "-l", "-f", path + ".pub"]).split(separator: " ")[1]
        return (String(md5.dropFirst(4)), String(sha))
    }

    /// Checks our signature of a message with openssl and the key's public half.
    func assertVerifies(_ key: MantaPrivateKey, _ path: String, hash: MantaHash, file: StaticString = #filePath, line: UInt = #line) throws {
        let msg = Array("date: Thu, 26 Nov 2026 05:00:00 GMT".utf8)
        let sig = try key.sign(msg, hash: hash)
        try Data(sig).write(to: URL(fileURLWithPath: dir + "/sig"))
        try Data(msg).write(to: URL(fileURLWithPath: dir + "/msg"))
        let pem = try run(["ssh-keygen", "-e", "-m", "PKCS8", "-f", path + ".pub"])
        try pem.write(toFile: dir + "/pub.pem", atomically: true, encoding: .utf8)
        let out = try run(["openssl", "dgst", "-\(hash.rawValue)", "-verify", "pub.pem", "-signature", "sig", "msg"])
        XCTAssertTrue(out.contains("Verified OK"), out, file: file, line: line)
    }

    func check(_ path: String, kind: MantaPrivateKey.Kind, file: StaticString = #filePath, line: UInt = #line) throws {
        let key = try MantaPrivateKey.load(path: path)
        XCTAssertEqual(key.kind, kind, file: file, line: line)
        let fp = try fingerprints(path)
        XCTAssertEqual(key.md5Fingerprint, fp.md5, file: file, line: line)
        XCTAssertEqual(key.sha256Fingerprint, fp.sha256, file: file, line: line)
        XCTAssertTrue(key.matches(keyID: "MD5:" + fp.md5) && key.matches(keyID: fp.md5) && key.matches(keyID: fp.sha256))
        XCTAssertFalse(key.matches(keyID: "00:11:22:33:44:55:66:77:88:99:aa:bb:cc:dd:ee:ff"))
        for h in [MantaHash.sha1, .sha256, .sha512] { try assertVerifies(key, path, hash: h, file: file, line: line) }
    }

    func testRSAInEveryFormat() throws {
        try check(try keygen("rsa_pkcs1", ["-t", "rsa", "-b", "2048", "-m", "PEM"]), kind: .rsa(bits: 2048))
        try check(try keygen("rsa_openssh", ["-t", "rsa", "-b", "3072"]), kind: .rsa(bits: 3072))
        try check(try keygen("rsa_pkcs8", ["-t", "rsa", "-b", "2048", "-m", "PKCS8"]), kind: .rsa(bits: 2048))
        XCTAssertTrue(try String(contentsOfFile: dir + "/rsa_pkcs1", encoding: .utf8).contains("BEGIN RSA PRIVATE KEY"))
        XCTAssertTrue(try String(contentsOfFile: dir + "/rsa_pkcs8", encoding: .utf8).contains("BEGIN PRIVATE KEY"))
    }

    func testECDSAOnEveryCurveAndFormat() throws {
        try check(try keygen("ec256", ["-t", "ecdsa", "-b", "256"]), kind: .ecdsa(curve: "nistp256"))
        try check(try keygen("ec384", ["-t", "ecdsa", "-b", "384"]), kind: .ecdsa(curve: "nistp384"))
        try check(try keygen("ec521", ["-t", "ecdsa", "-b", "521"]), kind: .ecdsa(curve: "nistp521"))
        try check(try keygen("ec256_sec1", ["-t", "ecdsa", "-b", "256", "-m", "PEM"]), kind: .ecdsa(curve: "nistp256"))
        try check(try keygen("ec384_pkcs8", ["-t", "ecdsa", "-b", "384", "-m", "PKCS8"]), kind: .ecdsa(curve: "nistp384"))
        XCTAssertTrue(try String(contentsOfFile: dir + "/ec256_sec1", encoding: .utf8).contains("BEGIN EC PRIVATE KEY"))
    }

    func testEd25519AndEncryptedKeysAreRefusedClearly() throws {
        let ed = try keygen("ed", ["-t", "ed25519"])
        XCTAssertThrowsError(try MantaPrivateKey.load(path: ed)) { XCTAssertTrue("\($0)".contains("ed25519"), "\($0)") }
        try run(["ssh-keygen", "-q", "-t", "rsa", "-b", "2048", "-N", "secret", "-f", "enc_openssh"])
        try run(["ssh-keygen", "-q", "-t", "rsa", "-b", "2048", "-N", "secret", "-m", "PEM", "-f", "enc_pem"])
        try run(["ssh-keygen", "-q", "-t", "ecdsa", "-N", "secret", "-m", "PKCS8", "-f", "enc_pkcs8"])
        for name in ["enc_openssh", "enc_pem", "enc_pkcs8"] {
            XCTAssertThrowsError(try MantaPrivateKey.load(path: dir + "/" + name)) { e in
                XCTAssertTrue("\(e)".contains("encrypted"), "\(name): \(e)")
                XCTAssertFalse("\(e)".contains("secret"))
            }
        }
        try "not a key".write(toFile: dir + "/junk", atomically: true, encoding: .utf8)
        XCTAssertThrowsError(try MantaPrivateKey.load(path: dir + "/junk")) { XCTAssertTrue("\($0)".contains("junk"), "\($0)") }
        XCTAssertThrowsError(try MantaPrivateKey.load(path: dir + "/missing")) { XCTAssertTrue("\($0)".contains("missing"), "\($0)") }
    }

    func testFindByFingerprintInAnSSHDirectory() throws {
        let ssh = dir + "/ssh"
        try FileManager.default.createDirectory(atPath: ssh, withIntermediateDirectories: true)
        try run(["ssh-keygen", "-q", "-N", "", "-t", "ed25519", "-f", "ssh/id_ed25519"])
        try run(["ssh-keygen", "-q", "-N", "", "-t", "rsa", "-b", "2048", "-f", "ssh/id_rsa"])
        try run(["ssh-keygen", "-q", "-N", "", "-t", "ecdsa", "-f", "ssh/id_ecdsa"])
        try "Host *\n".write(toFile: ssh + "/config", atomically: true, encoding: .utf8)
        let fp = try fingerprints(ssh + "/id_ecdsa")
        XCTAssertEqual(try MantaPrivateKey.find(keyID: "MD5:" + fp.md5, sshDir: ssh).source, ssh + "/id_ecdsa")
        XCTAssertEqual(try MantaPrivateKey.find(keyID: fp.sha256, sshDir: ssh).source, ssh + "/id_ecdsa")
        XCTAssertThrowsError(try MantaPrivateKey.find(keyID: "00:11:22:33:44:55:66:77:88:99:aa:bb:cc:dd:ee:ff", sshDir: ssh)) {
            XCTAssertTrue("\($0)".contains("no private key in \(ssh)"), "\($0)")
        }
    }
}
