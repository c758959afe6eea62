import DogestryCore
import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// What signs Manta requests: a key file (`MantaPrivateKey`) or a key held by ssh-agent (`SSHAgentKey`).
public protocol MantaSigner: AnyObject, CustomStringConvertible {
    /// The algorithm family Manta's `algorithm` parameter starts with: `rsa` or `ecdsa`.
    var family: String { get }
    /// `aa:bb:…` (MD5 of the SSH public-key blob) — what Manta's keyId carries.
    var md5Fingerprint: String { get }
    /// `SHA256:…` (base64 of the blob's SHA-256, unpadded), as `ssh-keygen -l` prints it.
    var sha256Fingerprint: String { get }
    /// The hashes this signer can sign with; the first is the default.
    var hashes: [MantaHash] { get }
    /// The signature http-signature expects: raw RSA PKCS#1 v1.5, or a DER `ECDSA-Sig-Value`.
    func sign(_ data: [UInt8], hash: MantaHash) throws -> [UInt8]
}

extension MantaSigner {
    /// Does `keyID` (`aa:bb:…`, `MD5:aa:bb:…` or `SHA256:…`) name this key?
    public func matches(keyID: String) -> Bool {
        SSHFingerprint.matches(keyID: keyID, md5: md5Fingerprint, sha256: sha256Fingerprint)
    }
}

/// SSH public-key fingerprints, as `ssh-keygen -l` prints them, and key_id matching.
enum SSHFingerprint {
    /// `aa:bb:…`
    static func md5(_ blob: [UInt8]) -> String {
        let h = MD5Hasher(); blob.withUnsafeBytes { h.update($0) }
        return h.finalize().map { String(format: "%02x", $0) }.joined(separator: ":")
    }
    /// `SHA256:<base64, no padding>`
    static func sha256(_ blob: [UInt8]) -> String {
        "SHA256:" + Data(Digest.rawSHA256(blob)).base64EncodedString().replacingOccurrences(of: "=", with: "")
    }
    /// Does `keyID` (`aa:bb:…`, `MD5:aa:bb:…` or `SHA256:…`) name the key with these fingerprints?
    static func matches(keyID: String, md5: String, sha256: String) -> Bool {
        let k = keyID.trimmingCharacters(in: .whitespaces)
        if k.hasPrefix("SHA256:") { return k == sha256 }
        let m = k.hasPrefix("MD5:") ? String(k.dropFirst(4)) : k
        return m.lowercased() == md5
    }
}

/// A client for the SSH agent protocol (draft-miller-ssh-agent) over the agent's unix socket.
/// Each call opens its own connection, so one `SSHAgent` may be used from several threads.
public struct SSHAgent: Sendable {
    static let failure: UInt8 = 5                  // SSH_AGENT_FAILURE
    static let requestIdentities: UInt8 = 11       // SSH_AGENTC_REQUEST_IDENTITIES
    static let identitiesAnswer: UInt8 = 12        // SSH_AGENT_IDENTITIES_ANSWER
    static let signRequest: UInt8 = 13             // SSH_AGENTC_SIGN_REQUEST
    static let signResponse: UInt8 = 14            // SSH_AGENT_SIGN_RESPONSE
    static let flagRSASHA256: UInt32 = 2           // SSH_AGENT_RSA_SHA2_256
    static let flagRSASHA512: UInt32 = 4           // SSH_AGENT_RSA_SHA2_512
    /// Replies longer than this are refused (an identities list or a signature is far smaller).
    static let maxMessage = 256 << 10

    /// The agent's socket (what `SSH_AUTH_SOCK` names).
    public let socketPath: String
    /// How long one exchange with the agent may take (a confirm-required key waits for a human).
    public var timeout: TimeInterval

    public init(socketPath: String, timeout: TimeInterval = 30) {
        self.socketPath = socketPath
        self.timeout = timeout
    }

    /// `ssh-agent at PATH (SSH_AUTH_SOCK)`: how every message names the agent.
    var name: String { "ssh-agent at \(socketPath) (SSH_AUTH_SOCK)" }

    public struct Identity: Sendable {
        /// The SSH public-key blob.
        public let blob: [UInt8]
        public let comment: String
    }

    /// The keys the agent holds.
    public func identities() throws -> [Identity] {
        let (type, body) = try exchange(Self.requestIdentities, [], what: "listing its keys")
        guard type == Self.identitiesAnswer else { throw unexpected(type, "listing its keys") }
        return try parse("listing its keys") {
            var r = SSHWire.Reader(body, source: name)
            let n = try r.uint32()
            guard n <= body.count / 8 else { throw DogestryError.io("bad count") }   // each key is two strings, 8+ bytes
            return try (0..<n).map { _ in Identity(blob: try r.string(), comment: String(decoding: try r.string(), as: UTF8.self)) }
        }
    }

    /// Asks the agent to sign `data` with the key `blob`; returns the agent's signature blob
    /// (string algorithm name + string signature). Nil when the agent refuses (SSH_AGENT_FAILURE).
    public func sign(blob: [UInt8], data: [UInt8], flags: UInt32) throws -> [UInt8]? {
        let body = SSHWire.string(blob) + SSHWire.string(data) + SSHWire.uint32(Int(flags))
        let (type, reply) = try exchange(Self.signRequest, body, what: "signing")
        if type == Self.failure { return nil }
        guard type == Self.signResponse else { throw unexpected(type, "signing") }
        return try parse("signing") {
            var r = SSHWire.Reader(reply, source: name)
            return try r.string()
        }
    }

    func unexpected(_ type: UInt8, _ what: String) -> DogestryError {
        DogestryError(.auth, "\(name) answered \(what) with message type \(type)" + (type == Self.failure ? " (SSH_AGENT_FAILURE)" : ""))
    }

    /// Runs a reply parser: its own `.auth` errors pass through; any other failure is a malformed reply.
    func parse<T>(_ what: String, _ body: () throws -> T) throws -> T {
        do { return try body() } catch let e as DogestryError where e.kind == .auth { throw e } catch {
            throw DogestryError(.auth, "\(name) sent a malformed reply while \(what)")
        }
    }

    /// Sends one request and reads its reply: (message type, contents).
    func exchange(_ type: UInt8, _ body: [UInt8], what: String) throws -> (UInt8, [UInt8]) {
        let c = try AgentConnection(path: socketPath, name: name, deadline: Date().addingTimeInterval(timeout), timeout: timeout)
        defer { c.close() }
        try c.write(SSHWire.uint32(body.count + 1) + [type] + body, what: what)
        let lenBytes = try c.read(4, what: what)
        let len = Int(lenBytes[0]) << 24 | Int(lenBytes[1]) << 16 | Int(lenBytes[2]) << 8 | Int(lenBytes[3])
        guard len >= 1, len <= Self.maxMessage else {
            throw DogestryError(.auth, "\(name) sent a reply of \(len) bytes while \(what) (refused: more than \(Self.maxMessage) or empty)")
        }
        let msg = try c.read(len, what: what)
        return (msg[0], Array(msg[1...]))
    }
}

/// One connection to the agent's socket: non-blocking, every wait bounded by the deadline.
final class AgentConnection {
    let fd: Int32
    let name: String
    let deadline: Date
    let timeout: TimeInterval

    init(path: String, name: String, deadline: Date, timeout: TimeInterval) throws {
        self.name = name
        self.deadline = deadline
        self.timeout = timeout
        var addr = sockaddr_un()
        let pathBytes = Array(path.utf8)
        guard !pathBytes.isEmpty, pathBytes.count < MemoryLayout.size(ofValue: addr.sun_path) else {
            throw DogestryError(.config, "\(name): the socket path is empty or too long")
        }
        addr.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &addr.sun_path) { raw in
            raw.copyBytes(from: pathBytes)
            raw[pathBytes.count] = 0
        }
        let s = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue) | Int32(SOCK_NONBLOCK.rawValue), 0)
        guard s >= 0 else { throw DogestryError.io("\(name): socket: \(errnoString())") }
        fd = s
        while true {
            let r = withUnsafePointer(to: &addr) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
            }
            if r == 0 { break }
            let e = errno
            if e == EAGAIN {   // the agent's backlog is full: try again until the deadline
                guard deadline.timeIntervalSinceNow > 0 else { Glibc.close(fd); throw timedOut("connecting") }
                usleep(10_000)
                continue
            }
            if e == EINPROGRESS || e == EINTR {
                do { try wait(Int16(POLLOUT), what: "connecting") } catch { Glibc.close(fd); throw error }
                var soErr: Int32 = 0
                var len = socklen_t(MemoryLayout<Int32>.size)
                getsockopt(fd, SOL_SOCKET, SO_ERROR, &soErr, &len)
                if soErr == 0 { break }
                Glibc.close(fd)
                throw DogestryError.io("\(name): cannot connect: \(errnoString(soErr))")
            }
            Glibc.close(fd)
            throw DogestryError.io("\(name): cannot connect: \(errnoString(e))")
        }
    }

    func close() { Glibc.close(fd) }

    func timedOut(_ what: String) -> DogestryError {
        DogestryError(.auth, "\(name) did not answer within \(Int(timeout.rounded(.up))) s while \(what)")
    }

    /// Waits (through EINTR) until the socket is ready for `events`, or the deadline passes.
    func wait(_ events: Int16, what: String) throws {
        while true {
            let left = deadline.timeIntervalSinceNow
            guard left > 0 else { throw timedOut(what) }
            var p = pollfd(fd: fd, events: events, revents: 0)
            let r = poll(&p, 1, Int32(min(left * 1000, 3_600_000).rounded(.up)))
            if r > 0 { return }   // ready, or an error/hang-up that the next send/recv reports
            if r == 0 { throw timedOut(what) }
            if errno != EINTR { throw DogestryError.io("\(name): poll: \(errnoString())") }
        }
    }

    func write(_ bytes: [UInt8], what: String) throws {
        var sent = 0
        while sent < bytes.count {
            let n = bytes.withUnsafeBytes { send(fd, $0.baseAddress! + sent, bytes.count - sent, Int32(MSG_NOSIGNAL)) }
            if n > 0 { sent += n; continue }
            let e = errno
            if n < 0 && e == EINTR { continue }
            if n < 0 && (e == EAGAIN || e == EWOULDBLOCK) { try wait(Int16(POLLOUT), what: what); continue }
            throw DogestryError.io("\(name): the agent closed the connection while \(what)" + (n < 0 ? ": \(errnoString(e))" : ""))
        }
    }

    func read(_ count: Int, what: String) throws -> [UInt8] {
        var buf = [UInt8](repeating: 0, count: count)
        var got = 0
        while got < count {
            let n = buf.withUnsafeMutableBytes { recv(fd, $0.baseAddress! + got, count - got, 0) }
            if n > 0 { got += n; continue }
            let e = errno
            if n < 0 && e == EINTR { continue }
            if n < 0 && (e == EAGAIN || e == EWOULDBLOCK) { try wait(Int16(POLLIN), what: what); continue }
            throw DogestryError(.auth, "\(name) closed the connection while \(what)" + (n < 0 ? ": \(errnoString(e))" : ""))
        }
        return buf
    }
}

/// A key held by ssh-agent that signs Manta requests: RSA (any of sha1/sha256/sha512) or ECDSA
/// P-256 (sha256) / P-521 (sha512) — the agent picks an ECDSA key's hash from its curve.
public final class SSHAgentKey: MantaSigner {
    public enum Kind: Equatable, Sendable { case rsa(bits: Int), ecdsa(curve: String), ed25519, other(String) }

    public let agent: SSHAgent
    public let blob: [UInt8]
    public let comment: String
    public let kind: Kind
    public let md5Fingerprint: String
    public let sha256Fingerprint: String

    public init(agent: SSHAgent, identity: SSHAgent.Identity) {
        self.agent = agent
        blob = identity.blob
        comment = identity.comment
        md5Fingerprint = SSHFingerprint.md5(blob)
        sha256Fingerprint = SSHFingerprint.sha256(blob)
        var r = SSHWire.Reader(blob, source: "ssh-agent")
        let type = (try? r.string()).map { String(decoding: $0, as: UTF8.self) } ?? "?"
        switch type {
        case "ssh-rsa":
            if (try? r.string()) != nil, let n = try? r.string(), let top = n.drop(while: { $0 == 0 }).first {
                let bytes = n.drop(while: { $0 == 0 }).count
                kind = .rsa(bits: bytes * 8 - (top.leadingZeroBitCount))
            } else { kind = .other(type) }
        case "ecdsa-sha2-nistp256", "ecdsa-sha2-nistp384", "ecdsa-sha2-nistp521":
            kind = .ecdsa(curve: String(type.dropFirst("ecdsa-sha2-".count)))
        case "ssh-ed25519": kind = .ed25519
        default: kind = .other(type)
        }
    }

    public var family: String { if case .rsa = kind { return "rsa" } else { return "ecdsa" } }

    public var hashes: [MantaHash] {
        switch kind {
        case .rsa: return [.sha256, .sha1, .sha512]
        case .ecdsa(let curve): return curve == "nistp256" ? [.sha256] : curve == "nistp521" ? [.sha512] : []
        case .ed25519, .other: return []
        }
    }

    public var description: String {
        "ssh-agent key \(md5Fingerprint)" + (comment.isEmpty ? "" : " (\(comment))") + " at \(agent.socketPath)"
    }

    /// Why this key cannot sign for Manta, or nil when it can.
    var unusableReason: String? {
        switch kind {
        case .rsa: return nil
        case .ecdsa("nistp384"):
            return "\(agent.name) holds key \(md5Fingerprint) as ECDSA P-384, which ssh-agent signs only with sha384, and Manta does not accept sha384 (ecdsa-sha256/ecdsa-sha512 only): set [manta] private_key to the key file, or use a P-256, P-521 or RSA key"
        case .ecdsa: return nil
        case .ed25519:
            return "\(agent.name) holds key \(md5Fingerprint) as ed25519, which Manta does not support: use an RSA or ECDSA key"
        case .other(let t):
            return "\(agent.name) holds key \(md5Fingerprint) as \(t), which Manta does not support: use an RSA or ECDSA key"
        }
    }

    /// The agent's key whose fingerprint is `keyID`; nil when it holds none. Throws when it holds
    /// that key but the key cannot sign for Manta (ed25519, P-384), or when the agent cannot be asked.
    public static func find(keyID: String, agent: SSHAgent) throws -> SSHAgentKey? {
        for id in try agent.identities() {
            let k = SSHAgentKey(agent: agent, identity: id)
            guard k.matches(keyID: keyID) else { continue }
            if let why = k.unusableReason { throw DogestryError(.unsupported, why) }
            return k
        }
        return nil
    }

    public func sign(_ data: [UInt8], hash: MantaHash) throws -> [UInt8] {
        if let why = unusableReason { throw DogestryError(.unsupported, why) }
        guard hashes.contains(hash) else {
            throw DogestryError(.config, "\(self) signs with \(hashes.map { $0.rawValue }.joined(separator: "/")) only, not \(hash.rawValue)")
        }
        let flags: UInt32, expected: String
        switch (kind, hash) {
        case (.rsa, .sha1): (flags, expected) = (0, "ssh-rsa")
        case (.rsa, .sha256): (flags, expected) = (SSHAgent.flagRSASHA256, "rsa-sha2-256")
        case (.rsa, .sha512): (flags, expected) = (SSHAgent.flagRSASHA512, "rsa-sha2-512")
        case (.ecdsa(let curve), _): (flags, expected) = (0, "ecdsa-sha2-" + curve)
        default: throw DogestryError(.unsupported, "\(self) cannot sign for Manta")
        }
        guard let sigBlob = try agent.sign(blob: blob, data: data, flags: flags) else {
            throw DogestryError(.auth, "\(agent.name) refused to sign with key \(md5Fingerprint)" +
                                " (a key added with ssh-add -c needs a confirmation the agent could not get; a locked agent refuses too)")
        }
        return try agent.parse("signing") {
            var r = SSHWire.Reader(sigBlob, source: agent.name)
            let name = String(decoding: try r.string(), as: UTF8.self)
            let raw = try r.string()
            guard name == expected else {
                throw DogestryError(.auth, "\(agent.name) signed with \(name) when \(expected) was asked (for \(hash.rawValue))")
            }
            if case .rsa(let bits) = kind {
                // PKCS#1 signatures are as long as the modulus; OpenSSH pads, other agents may not.
                let size = (bits + 7) / 8
                return raw.count < size ? [UInt8](repeating: 0, count: size - raw.count) + raw : raw
            }
            var s = SSHWire.Reader(raw, source: agent.name)
            return try Self.derSignature(r: try s.string(), s: try s.string())
        }
    }

    /// The ASN.1 DER `ECDSA-Sig-Value` (SEQUENCE { INTEGER r, INTEGER s }) from SSH mpint contents.
    static func derSignature(r: [UInt8], s: [UInt8]) throws -> [UInt8] {
        func integer(_ mpint: [UInt8]) throws -> [UInt8] {
            if let f = mpint.first, f & 0x80 != 0 { throw DogestryError(.corrupt, "negative ECDSA signature value") }
            var m = Array(mpint.drop(while: { $0 == 0 }))
            if m.isEmpty { m = [0] } else if m[0] & 0x80 != 0 { m.insert(0, at: 0) }   // DER: minimal, positive
            return [0x02] + length(m.count) + m
        }
        func length(_ n: Int) -> [UInt8] { n < 0x80 ? [UInt8(n)] : n < 0x100 ? [0x81, UInt8(n)] : [0x82, UInt8(n >> 8), UInt8(n & 0xff)] }
        let body = try integer(r) + integer(s)
        return [0x30] + length(body.count) + body
    }
}
