import COpenSSL
import Foundation

/// A content digest, `sha256:<64 lowercase hex>`.
///
/// Only SHA-256 is produced; parsing accepts nothing else, so every digest in a
/// repository can be verified.
public struct Digest: Hashable, Comparable, CustomStringConvertible, Codable, Sendable {
    /// The 64 lowercase hex characters.
    public let hex: String

    /// Parses `sha256:<hex>`; throws a one-line error naming `what` otherwise.
    public init(parsing string: String, what: String = "digest") throws {
        guard string.hasPrefix("sha256:") else {
            throw DogestryError.invalid("\(what) \(Self.quote(string)) is not a sha256 digest")
        }
        let hex = String(string.dropFirst(7))
        guard Digest.isHex64(hex) else {
            throw DogestryError.invalid("\(what) \(Self.quote(string)) is not a sha256 digest")
        }
        self.hex = hex
    }

    /// Wraps 64 lowercase hex characters.
    public init(hex: String) throws {
        guard Digest.isHex64(hex) else { throw DogestryError.invalid("\(Self.quote(hex)) is not a sha256 hex digest") }
        self.hex = hex
    }

    init(uncheckedHex: String) { self.hex = uncheckedHex }

    public var description: String { "sha256:" + hex }
    /// The first 12 hex characters, as Docker shows image IDs.
    public var short: String { String(hex.prefix(12)) }

    public static func isHex64(_ s: String) -> Bool {
        s.utf8.count == 64 && s.utf8.allSatisfy { ($0 >= 48 && $0 <= 57) || ($0 >= 97 && $0 <= 102) }
    }

    public static func < (a: Digest, b: Digest) -> Bool { a.hex < b.hex }

    /// The lowercase hex an image-ID spec would denote (`abc123…` or `sha256:abc123…`, 1 to 64
    /// digits), or nil if the spec cannot be an ID prefix.
    public static func idPrefix(_ spec: String) -> String? {
        let t = spec.hasPrefix("sha256:") ? String(spec.dropFirst(7)) : spec
        let ok = !t.isEmpty && t.utf8.count <= 64 && t.utf8.allSatisfy { ($0 >= 48 && $0 <= 57) || ($0 >= 97 && $0 <= 102) }
        return ok ? t : nil
    }

    public init(from decoder: Decoder) throws {
        let s = try decoder.singleValueContainer().decode(String.self)
        try self.init(parsing: s)
    }
    public func encode(to encoder: Encoder) throws {
        var c = encoder.singleValueContainer()
        try c.encode(description)
    }

    /// SHA-256 of a byte buffer.
    public static func of(_ bytes: [UInt8]) -> Digest {
        let h = SHA256Hasher(); bytes.withUnsafeBytes { h.update($0) }; return h.finalize()
    }
    public static func of(_ data: Data) -> Digest { of([UInt8](data)) }

    /// The raw 32 SHA-256 bytes of a buffer.
    public static func rawSHA256(_ bytes: [UInt8]) -> [UInt8] {
        let h = SHA256Hasher(); h.update(bytes); return h.finalizeBytes()
    }
    public static func of(_ s: String) -> Digest { of(Array(s.utf8)) }

    static func quote(_ s: String) -> String {
        let clipped = s.count > 80 ? String(s.prefix(77)) + "..." : s
        return "\"" + clipped.unicodeScalars.map { $0.value < 32 || $0.value == 127 ? "?" : String($0) }.joined() + "\""
    }

    /// The chain ID of a layer stack: chain(L0) = diffID(L0); chain(Ln) = sha256(chain(Ln-1) + " " + diffID(Ln)).
    public static func chainIDs(_ diffIDs: [Digest]) -> [Digest] {
        var out: [Digest] = []
        for d in diffIDs {
            if let last = out.last { out.append(Digest.of("\(last) \(d)")) } else { out.append(d) }
        }
        return out
    }
}

/// Streaming hash through OpenSSL's EVP interface (SHA-256 by default; MD5 and SHA-1 for protocols that need them).
public final class SHA256Hasher {
    private let ctx: OpaquePointer
    private var finished = false

    public init() { self.ctx = EVPHash.make(EVP_sha256()) }
    init(md: OpaquePointer?) { self.ctx = EVPHash.make(md) }
    deinit { EVP_MD_CTX_free(ctx) }

    public func update(_ bytes: UnsafeRawBufferPointer) {
        if bytes.count > 0 { EVP_DigestUpdate(ctx, bytes.baseAddress, bytes.count) }
    }
    public func update(_ bytes: [UInt8]) { bytes.withUnsafeBytes { update($0) } }

    /// The raw digest bytes. May be called once.
    public func finalizeBytes() -> [UInt8] {
        precondition(!finished, "hasher finalized twice")
        finished = true
        var out = [UInt8](repeating: 0, count: Int(EVP_MAX_MD_SIZE))
        var len: UInt32 = 0
        EVP_DigestFinal_ex(ctx, &out, &len)
        return Array(out[0..<Int(len)])
    }

    /// The SHA-256 digest. May be called once.
    public func finalize() -> Digest { Digest(uncheckedHex: hexString(finalizeBytes())) }
}

enum EVPHash {
    static func make(_ md: OpaquePointer?) -> OpaquePointer {
        guard let ctx = EVP_MD_CTX_new() else { fatalError("EVP_MD_CTX_new failed: out of memory") }
        EVP_DigestInit_ex(ctx, md, nil)
        return ctx
    }
}

/// MD5 (for protocols that require it: S3 Content-MD5, Manta Computed-MD5).
public final class MD5Hasher {
    let inner = SHA256Hasher(md: EVP_md5())
    public init() {}
    public func update(_ b: UnsafeRawBufferPointer) { inner.update(b) }
    public func finalize() -> [UInt8] { inner.finalizeBytes() }
}

/// Lowercase hex of bytes.
public func hexString(_ bytes: [UInt8]) -> String {
    let digits = Array("0123456789abcdef".utf8)
    var out = [UInt8](); out.reserveCapacity(bytes.count * 2)
    for b in bytes { out.append(digits[Int(b >> 4)]); out.append(digits[Int(b & 15)]) }
    return String(decoding: out, as: UTF8.self)
}
