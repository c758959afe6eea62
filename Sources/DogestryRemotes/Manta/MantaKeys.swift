import COpenSSL
import DogestryCore
import Foundation

/// The hash half of a Manta signature algorithm (`rsa-sha256` → sha256). Manta accepts sha1,
/// sha256 and sha512; not sha384.
public enum MantaHash: String, Sendable {
    case sha1, sha256, sha512
    var md: OpaquePointer? {
        switch self { case .sha1: return EVP_sha1(); case .sha256: return EVP_sha256(); case .sha512: return EVP_sha512() }
    }
}

/// A private key that signs Manta requests: RSA or ECDSA (P-256, P-384, P-521), loaded from PEM
/// (PKCS#1, PKCS#8, SEC1) or the OpenSSH private-key format.
public final class MantaPrivateKey: MantaSigner {
    public enum Kind: Equatable, Sendable { case rsa(bits: Int), ecdsa(curve: String) }

    public let kind: Kind
    /// Where it came from (for messages).
    public let source: String
    /// `aa:bb:…` (MD5 of the SSH public-key blob) — what Manta's keyId carries.
    public let md5Fingerprint: String
    /// `SHA256:<base64, no padding>`, as `ssh-keygen -l` prints.
    public let sha256Fingerprint: String
    let pkey: OpaquePointer

    /// The algorithm family Manta's `algorithm` parameter starts with.
    public var family: String { if case .rsa = kind { return "rsa" } else { return "ecdsa" } }
    /// OpenSSL signs with any of them, whatever the curve.
    public var hashes: [MantaHash] { [.sha256, .sha1, .sha512] }
    public var description: String { source }

    init(pkey: OpaquePointer, source: String) throws {
        self.pkey = pkey
        self.source = source
        let blob: [UInt8]
        switch EVP_PKEY_get_base_id(pkey) {
        case EVP_PKEY_RSA:
            let n = try Self.bnParam(pkey, "n", source), e = try Self.bnParam(pkey, "e", source)
            kind = .rsa(bits: Int(EVP_PKEY_get_bits(pkey)))
            blob = SSHWire.string(Array("ssh-rsa".utf8)) + SSHWire.mpint(e) + SSHWire.mpint(n)
        case EVP_PKEY_EC:
            var name = [CChar](repeating: 0, count: 64)
            var len = 0
            guard EVP_PKEY_get_utf8_string_param(pkey, "group", &name, name.count, &len) == 1 else {
                throw DogestryError(.config, "key \(source): cannot read its curve")
            }
            let group = String(decoding: name.prefix(while: { $0 != 0 }).map { UInt8(bitPattern: $0) }, as: UTF8.self)
            let sshCurve: String
            switch group {
            case "prime256v1", "P-256": sshCurve = "nistp256"
            case "secp384r1", "P-384": sshCurve = "nistp384"
            case "secp521r1", "P-521": sshCurve = "nistp521"
            default: throw DogestryError(.unsupported, "key \(source): curve \(group) is not supported (use P-256, P-384 or P-521)")
            }
            var point = [UInt8](repeating: 0, count: 200)
            var plen = 0
            guard EVP_PKEY_get_octet_string_param(pkey, "encoded-pub-key", &point, point.count, &plen) == 1 else {
                throw DogestryError(.config, "key \(source): cannot read its public point")
            }
            kind = .ecdsa(curve: sshCurve)
            blob = SSHWire.string(Array("ecdsa-sha2-\(sshCurve)".utf8)) + SSHWire.string(Array(sshCurve.utf8)) + SSHWire.string(Array(point[0..<plen]))
        case EVP_PKEY_ED25519:
            EVP_PKEY_free(pkey)
            throw DogestryError(.unsupported, "key \(source) is ed25519, which Manta does not accept: use an RSA or ECDSA key")
        default:
            EVP_PKEY_free(pkey)
            throw DogestryError(.unsupported, "key \(source) is neither RSA nor ECDSA")
        }
        md5Fingerprint = SSHFingerprint.md5(blob)
        sha256Fingerprint = SSHFingerprint.sha256(blob)
    }

    deinit { EVP_PKEY_free(pkey) }

    static func bnParam(_ pkey: OpaquePointer, _ name: String, _ source: String) throws -> [UInt8] {
        var bn: OpaquePointer? = nil
        guard EVP_PKEY_get_bn_param(pkey, name, &bn) == 1, let b = bn else {
            throw DogestryError(.config, "key \(source): cannot read its \(name)")
        }
        defer { BN_free(b) }
        var out = [UInt8](repeating: 0, count: Int((BN_num_bits(b) + 7) / 8))
        BN_bn2bin(b, &out)
        return out
    }

    /// Loads a private key file. Encrypted keys are refused with a clear error (no prompt).
    public static func load(path: String) throws -> MantaPrivateKey {
        let bytes = try FileSource(path: path, what: "private key \(path)").readAll(limit: 1 << 20, what: "private key \(path)")
        return try parse(bytes, source: path)
    }

    /// Parses PEM (PKCS#1, PKCS#8, SEC1) or OpenSSH private-key text.
    public static func parse(_ bytes: [UInt8], source: String) throws -> MantaPrivateKey {
        let text = String(decoding: bytes, as: UTF8.self)
        if text.contains("-----BEGIN OPENSSH PRIVATE KEY-----") { return try parseOpenSSH(text, source: source) }
        if text.contains("ENCRYPTED") {
            throw DogestryError(.config, "key \(source) is encrypted; dogestry cannot prompt for its passphrase (decrypt a copy with ssh-keygen -p, or point private_key at an unencrypted key)")
        }
        guard text.contains("-----BEGIN ") else { throw DogestryError(.config, "key \(source) is not a PEM or OpenSSH private key") }
        let bio = bytes.withUnsafeBytes { BIO_new_mem_buf($0.baseAddress, Int32($0.count)) }
        defer { BIO_free(bio) }
        // A callback that supplies no passphrase: OpenSSL must never prompt on the terminal.
        let noPass: @convention(c) (UnsafeMutablePointer<CChar>?, Int32, Int32, UnsafeMutableRawPointer?) -> Int32 = { _, _, _, _ in 0 }
        guard let pkey = PEM_read_bio_PrivateKey(bio, nil, noPass, nil) else {
            ERR_clear_error()
            throw DogestryError(.config, "key \(source) could not be read (not an unencrypted RSA or ECDSA private key)")
        }
        return try MantaPrivateKey(pkey: pkey, source: source)
    }

    /// The `openssh-key-v1` format (what `ssh-keygen` writes by default).
    static func parseOpenSSH(_ text: String, source: String) throws -> MantaPrivateKey {
        let b64 = text.components(separatedBy: "\n").filter { !$0.hasPrefix("-----") }.joined()
        guard let data = Data(base64Encoded: b64) else { throw DogestryError(.config, "key \(source): bad base64 in OpenSSH key") }
        var r = SSHWire.Reader([UInt8](data), source: source)
        guard r.bytes.starts(with: Array("openssh-key-v1\0".utf8)) else { throw DogestryError(.config, "key \(source) is not an OpenSSH private key") }
        r.pos = 15
        let cipher = String(decoding: try r.string(), as: UTF8.self)
        _ = try r.string(); _ = try r.string()   // kdf name, kdf options
        guard cipher == "none" else {
            throw DogestryError(.config, "key \(source) is encrypted (\(cipher)); dogestry cannot prompt for its passphrase (decrypt a copy with ssh-keygen -p)")
        }
        guard try r.uint32() == 1 else { throw DogestryError(.config, "key \(source) holds more than one key") }
        _ = try r.string()   // public key
        var p = SSHWire.Reader(try r.string(), source: source)
        guard try p.uint32() == (try p.uint32()) else { throw DogestryError(.config, "key \(source) is corrupt (check integers differ)") }
        let type = String(decoding: try p.string(), as: UTF8.self)
        let bld = OSSL_PARAM_BLD_new()
        defer { OSSL_PARAM_BLD_free(bld) }
        var bns: [OpaquePointer] = []
        // The builder keeps the name pointers until OSSL_PARAM_BLD_to_param: they must outlive the calls.
        var names: [UnsafeMutablePointer<CChar>] = []
        defer { bns.forEach { BN_free($0) }; names.forEach { free($0) } }
        func cname(_ s: String) -> UnsafeMutablePointer<CChar> { let p = strdup(s)!; names.append(p); return p }
        func pushBN(_ name: String, _ v: [UInt8]) {
            let bn = v.withUnsafeBytes { BN_bin2bn($0.bindMemory(to: UInt8.self).baseAddress, Int32(v.count), nil) }!
            bns.append(bn)
            OSSL_PARAM_BLD_push_BN(bld, cname(name), bn)
        }
        let algorithm: String
        switch type {
        case "ssh-rsa":
            let n = try p.string(), e = try p.string(), d = try p.string()
            pushBN("n", n); pushBN("e", e); pushBN("d", d)
            algorithm = "RSA"
        case "ecdsa-sha2-nistp256", "ecdsa-sha2-nistp384", "ecdsa-sha2-nistp521":
            let curve = String(decoding: try p.string(), as: UTF8.self)
            let q = try p.string(), d = try p.string()
            let group = ["nistp256": "prime256v1", "nistp384": "secp384r1", "nistp521": "secp521r1"][curve] ?? curve
            OSSL_PARAM_BLD_push_utf8_string(bld, cname("group"), cname(group), 0)
            let pub = UnsafeMutableRawPointer(cname(String(repeating: " ", count: q.count)))   // q's bytes, kept alive likewise
            q.withUnsafeBytes { pub.copyMemory(from: $0.baseAddress!, byteCount: q.count) }
            OSSL_PARAM_BLD_push_octet_string(bld, cname("pub"), pub, q.count)
            pushBN("priv", d)
            algorithm = "EC"
        case "ssh-ed25519":
            throw DogestryError(.unsupported, "key \(source) is ed25519, which Manta does not accept: use an RSA or ECDSA key")
        default:
            throw DogestryError(.unsupported, "key \(source) has unsupported type \(type)")
        }
        guard let params = OSSL_PARAM_BLD_to_param(bld) else { throw DogestryError(.config, "key \(source) could not be built") }
        defer { OSSL_PARAM_free(params) }
        let ctx = EVP_PKEY_CTX_new_from_name(nil, algorithm, nil)
        defer { EVP_PKEY_CTX_free(ctx) }
        var pkey: OpaquePointer? = nil
        guard EVP_PKEY_fromdata_init(ctx) == 1, EVP_PKEY_fromdata(ctx, &pkey, dg_evp_pkey_keypair(), params) == 1, let k = pkey else {
            ERR_clear_error()
            throw DogestryError(.config, "key \(source) could not be loaded")
        }
        return try MantaPrivateKey(pkey: k, source: source)
    }

    /// Signs `data` (RSA PKCS#1 v1.5, or ECDSA with a DER signature, as http-signature expects).
    public func sign(_ data: [UInt8], hash: MantaHash) throws -> [UInt8] {
        guard let ctx = EVP_MD_CTX_new() else { throw DogestryError.io("out of memory") }
        defer { EVP_MD_CTX_free(ctx) }
        guard EVP_DigestSignInit(ctx, nil, hash.md, nil, pkey) == 1 else {
            ERR_clear_error(); throw DogestryError(.config, "key \(source) cannot sign with \(hash.rawValue)")
        }
        var len = 0
        var out = [UInt8]()
        let ok: Bool = data.withUnsafeBytes { d in
            guard EVP_DigestSign(ctx, nil, &len, d.bindMemory(to: UInt8.self).baseAddress, d.count) == 1 else { return false }
            out = [UInt8](repeating: 0, count: len)
            return EVP_DigestSign(ctx, &out, &len, d.bindMemory(to: UInt8.self).baseAddress, d.count) == 1
        }
        guard ok else { ERR_clear_error(); throw DogestryError(.config, "signing with key \(source) failed") }
        return Array(out[0..<len])
    }

    /// Finds the private key in `sshDir` (default ~/.ssh) whose fingerprint is `keyID`.
    public static func find(keyID: String, sshDir: String) throws -> MantaPrivateKey {
        let names = (try? FileManager.default.contentsOfDirectory(atPath: sshDir))?.sorted() ?? []
        for n in names where !n.hasSuffix(".pub") && !n.hasPrefix("known_hosts") && n != "config" && n != "authorized_keys" {
            let path = sshDir + "/" + n
            guard let info = try? FS.info(path), info.isFile, info.size < 1 << 20,
                  let key = try? load(path: path) else { continue }
            if key.matches(keyID: keyID) { return key }
        }
        throw DogestryError(.auth, "no private key in \(sshDir) has fingerprint \(keyID) (set [manta] private_key)")
    }
}

/// SSH wire encoding (RFC 4251) for public-key blobs and the OpenSSH key format.
enum SSHWire {
    static func uint32(_ v: Int) -> [UInt8] { [UInt8(v >> 24 & 255), UInt8(v >> 16 & 255), UInt8(v >> 8 & 255), UInt8(v & 255)] }
    static func string(_ b: [UInt8]) -> [UInt8] { uint32(b.count) + b }
    /// A positive mpint from big-endian magnitude bytes.
    static func mpint(_ b: [UInt8]) -> [UInt8] {
        var m = Array(b.drop(while: { $0 == 0 }))
        if let f = m.first, f & 0x80 != 0 { m.insert(0, at: 0) }
        return string(m)
    }

    struct Reader {
        let bytes: [UInt8]
        var pos = 0
        let source: String
        init(_ b: [UInt8], source: String) { bytes = b; self.source = source }
        mutating func uint32() throws -> Int {
            guard pos + 4 <= bytes.count else { throw DogestryError(.config, "key \(source) is truncated") }
            defer { pos += 4 }
            return Int(bytes[pos]) << 24 | Int(bytes[pos + 1]) << 16 | Int(bytes[pos + 2]) << 8 | Int(bytes[pos + 3])
        }
        mutating func string() throws -> [UInt8] {
            let n = try uint32()
            guard n >= 0, pos + n <= bytes.count else { throw DogestryError(.config, "key \(source) is truncated") }
            defer { pos += n }
            return Array(bytes[pos..<(pos + n)])
        }
    }
}
