import DogestryCore
import DogestryHTTP
import Foundation

/// Where and as whom to talk to Manta, from a `manta://` URL, `[manta]` config and `MANTA_*` variables.
public struct MantaSettings: Sendable {
    /// `https://host[:port]` (http only for an explicit `url`).
    public var url: String
    public var account: String
    public var user: String?
    public var keyID: String?
    public var privateKeyPath: String?
    /// e.g. `rsa-sha256`; nil picks `<key family>-sha256`.
    public var algorithm: String?
    /// Absolute Manta path of the repository root, e.g. `/acct/stor/dogestry`.
    public var root: String
    public var durability: Int?
    public var insecure: Bool
    public var role: String?
    /// Where keys are looked up by fingerprint (after the agent).
    public var sshDir: String
    /// The ssh-agent socket (`SSH_AUTH_SOCK`) asked first for the key named by `keyID` when no
    /// `privateKeyPath` is set; nil: no agent.
    public var agentSocket: String? = nil
    /// How long one exchange with the agent may take.
    public var agentTimeout: TimeInterval = 30
    /// Connect, first-byte and stall timeouts of every request (`[transfer] *-timeout`).
    public var timeouts: HTTPTimeouts = .remoteDefault

    /// Resolves `manta://HOST/ACCOUNT/stor/path` (nil: from config and environment alone).
    /// Precedence: the URL, then `[manta]` config, then `MANTA_*` variables.
    public static func resolve(remoteURL: String?, config: [String: String], environment env: [String: String], home: String) throws -> MantaSettings {
        var host: String? = nil
        var path: String? = nil
        if let u = remoteURL {
            guard u.hasPrefix("manta://") else { throw DogestryError.invalid("\"\(u)\" is not a manta:// URL") }
            let rest = u.dropFirst(8)
            guard let slash = rest.firstIndex(of: "/"), rest.startIndex != slash else {
                throw DogestryError.invalid("remote \(u): expected manta://HOST/ACCOUNT/stor/PATH")
            }
            host = String(rest[..<slash])
            path = String(rest[slash...])
        }
        var url = config["url"] ?? env["MANTA_URL"]
        if let h = host {
            // The configured URL is used only when it names the same host (it may say http:// for a test server).
            if let u = url, let c = URLComponents(string: u), let ch = c.host,
               ch + (c.port.map { ":\($0)" } ?? "") == h { } else { url = "https://" + h }
        }
        guard var base = url, !base.isEmpty else {
            throw DogestryError(.config, "no Manta URL: use a manta://HOST/… remote, [manta] url or MANTA_URL")
        }
        while base.hasSuffix("/") { base.removeLast() }
        guard base.hasPrefix("https://") || base.hasPrefix("http://") else {
            throw DogestryError(.config, "Manta URL \(base) must start with https:// (or http:// for a local server)")
        }
        var account = config["account"] ?? env["MANTA_USER"]
        var root = config["root"]
        if let p = path {
            let comps = p.split(separator: "/").map(String.init)
            guard let acct = comps.first, !acct.isEmpty else { throw DogestryError.invalid("remote \(remoteURL!): no account in the path") }
            account = acct
            root = comps.count > 1 ? "/" + comps.joined(separator: "/") : nil
        }
        guard let acct = account, !acct.isEmpty else {
            throw DogestryError(.config, "no Manta account: use manta://HOST/ACCOUNT/…, [manta] account or MANTA_USER")
        }
        let r = root ?? "/\(acct)/stor/dogestry"
        guard r.hasPrefix("/\(acct)/"), !r.split(separator: "/").contains(where: { $0 == ".." || $0 == "." }) else {
            throw DogestryError(.config, "Manta root \(r) must be a path under /\(acct)/")
        }
        let insecureText = config["insecure"] ?? env["MANTA_TLS_INSECURE"]
        let insecure = ["1", "true", "yes", "on"].contains((insecureText ?? "").lowercased())
        return MantaSettings(url: base, account: acct, user: config["user"] ?? env["MANTA_SUBUSER"],
                             keyID: config["key_id"] ?? env["MANTA_KEY_ID"], privateKeyPath: config["private_key"],
                             algorithm: config["algo"], root: r.hasSuffix("/") ? String(r.dropLast()) : r,
                             durability: config["durability"].flatMap { Int($0) }, insecure: insecure,
                             role: config["role"] ?? env["MANTA_ROLE"], sshDir: home + "/.ssh",
                             agentSocket: env["SSH_AUTH_SOCK"].flatMap { $0.isEmpty ? nil : $0 })
    }
}

/// A repository in Joyent Manta, with every request signed by an SSH key (HTTP Signature
/// `keyId="/ACCOUNT[/USER]/keys/MD5"`, headers `date`): the `private_key` file, or else the key
/// named by `key_id` from ssh-agent, or else from a file in ~/.ssh (the order Joyent's tools use).
///
/// Blob and diffID-index objects are sharded by the first two hex digits
/// (`blobs/sha256/ab/ab12…`) so no directory nears Manta's 1,000,000-entry limit; keys seen
/// through this protocol stay unsharded.
public final class MantaRemote: SigningRemote, TrafficCounting, @unchecked Sendable {  // (made directories are locked; the rest is set once)
    public let settings: MantaSettings
    public let key: MantaSigner
    let algorithm: String
    let hash: MantaHash
    let keyIDPath: String
    let client: HTTPClient
    let transport: HTTPTransportOptions
    let retry: RetryPolicy
    let lock = NSLock()
    var madeDirs: Set<String> = []
    /// Requests and body bytes, for `traffic`.
    let meter = TrafficMeter()
    /// Added to the clock for the Date header (tests use it to provoke Manta's skew check).
    var clockOffset: TimeInterval = 0

    public var displayURL: String {
        let host = URLComponents(string: settings.url)?.host ?? settings.url
        let port = URLComponents(string: settings.url)?.port.map { ":\($0)" } ?? ""
        return "manta://" + host + port + settings.root
    }
    public var traffic: RemoteTraffic { meter.snapshot }

    public init(settings: MantaSettings, retry: RetryPolicy = RetryPolicy()) throws {
        self.settings = settings
        self.retry = retry
        if let p = settings.privateKeyPath {
            let path = p.hasPrefix("~/") ? (settings.sshDir as NSString).deletingLastPathComponent + p.dropFirst(1) : p
            let file = try MantaPrivateKey.load(path: path)
            if let id = settings.keyID, !file.matches(keyID: id) {
                throw DogestryError(.config, "Manta key \(path) has fingerprint \(file.md5Fingerprint), not \(id)")
            }
            key = file
        } else if let id = settings.keyID {
            key = try Self.findKey(keyID: id, settings: settings)
        } else {
            throw DogestryError(.config, "no Manta key: set [manta] key_id (or MANTA_KEY_ID) or private_key")
        }
        let algo = (settings.algorithm ?? "\(key.family)-\(key.hashes.first?.rawValue ?? "sha256")").lowercased()
        let parts = algo.split(separator: "-")
        guard parts.count == 2, let h = MantaHash(rawValue: String(parts[1])) else {
            throw DogestryError(.config, "Manta algorithm \(algo) is not supported (rsa-sha1, rsa-sha256, rsa-sha512, ecdsa-sha256, ecdsa-sha512)")
        }
        guard String(parts[0]) == key.family else {
            throw DogestryError(.config, "Manta algorithm \(algo) does not fit \(key is MantaPrivateKey ? "key " : "")\(key), which is \(key.family)")
        }
        let signer = key
        guard signer.hashes.contains(h) else {
            let usable = signer.hashes.map { "\(signer.family)-\($0.rawValue)" }.joined(separator: " or ")
            throw DogestryError(.config, "Manta algorithm \(algo) cannot be used with \(signer), which signs with \(usable) only")
        }
        algorithm = algo
        hash = h
        keyIDPath = "/\(settings.account)" + (settings.user.map { "/\($0)" } ?? "") + "/keys/\(key.md5Fingerprint)"
        var t = HTTPTransportOptions(insecure: settings.insecure, timeouts: settings.timeouts)
        t.caBundle = ProcessInfo.processInfo.environment["MANTA_CA_BUNDLE"]
        transport = t
        client = HTTPClient(options: t)
    }

    /// The key named by `keyID`: from ssh-agent when `agentSocket` is set and the agent holds it,
    /// else from a file in `sshDir`. When neither has it, the error says what each place answered.
    static func findKey(keyID id: String, settings: MantaSettings) throws -> MantaSigner {
        let agentNote: String
        if let sock = settings.agentSocket {
            do {
                if let k = try SSHAgentKey.find(keyID: id, agent: SSHAgent(socketPath: sock, timeout: settings.agentTimeout)) { return k }
                agentNote = "ssh-agent at \(sock) (SSH_AUTH_SOCK) holds no key with that fingerprint"
            } catch let e as DogestryError {
                agentNote = e.message
            }
        } else {
            agentNote = "no ssh-agent was asked (SSH_AUTH_SOCK is not set)"
        }
        do {
            return try MantaPrivateKey.find(keyID: id, sshDir: settings.sshDir)
        } catch let e as DogestryError {
            throw DogestryError(e.kind, "no usable Manta key with fingerprint \(id): \(agentNote); and no private key in \(settings.sshDir) has it (set [manta] private_key)")
        }
    }

    // MARK: paths

    static let shardedPrefixes = ["blobs/sha256/", "index/diffid/sha256/"]

    /// The Manta path of a key (validated; sharded where the format says so).
    func mantaPath(_ key: String) throws -> String {
        let comps = key.split(separator: "/", omittingEmptySubsequences: false)
        guard !key.isEmpty, !key.hasPrefix("/"), comps.allSatisfy({ !$0.isEmpty && $0 != "." && $0 != ".." }),
              !key.unicodeScalars.contains(where: { $0.value < 32 || $0.value == 127 }) else {
            throw DogestryError.invalid("invalid object key \"\(key)\" for \(displayURL)")
        }
        return settings.root + "/" + Self.shard(key)
    }

    static func shard(_ key: String) -> String {
        for p in shardedPrefixes where key.hasPrefix(p) {
            let hex = key.dropFirst(p.count)
            if hex.count == 64, !hex.contains("/") { return p + hex.prefix(2) + "/" + hex }
        }
        return key
    }

    static func unshard(_ rel: String) -> String {
        for p in shardedPrefixes where rel.hasPrefix(p) {
            let rest = rel.dropFirst(p.count)
            let parts = rest.split(separator: "/")
            if parts.count == 2, parts[0].count == 2, parts[1].count == 64, parts[1].hasPrefix(parts[0]) { return p + parts[1] }
        }
        return rel
    }

    /// encodeURIComponent, also escaping `!'()*` (Manta's signed-URL rules).
    static func encode(_ s: String) -> String {
        var out = ""
        for b in s.utf8 {
            switch b {
            case 0x41...0x5A, 0x61...0x7A, 0x30...0x39, 0x2D, 0x5F, 0x2E, 0x7E: out.append(Character(UnicodeScalar(b)))
            default: out += String(format: "%%%02X", b)
            }
        }
        return out
    }

    static func encodePath(_ p: String) -> String {
        p.split(separator: "/", omittingEmptySubsequences: false).map { encode(String($0)) }.joined(separator: "/")
    }

    // MARK: requests


    /// Date and Authorization (and Role) headers for a request made now.
    func authHeaders() throws -> [(String, String)] {
        let date = HTTPDate.format(Date().addingTimeInterval(clockOffset))
        let sig = try key.sign(Array("date: \(date)".utf8), hash: hash)
        var h = [("Date", date),
                 ("Authorization", "Signature keyId=\"\(keyIDPath)\",algorithm=\"\(algorithm)\",headers=\"date\",signature=\"\(Data(sig).base64EncodedString())\"")]
        if let r = settings.role { h.append(("Role", r)) }
        return h
    }

    func request(_ method: String, _ path: String, query: [(String, String)] = [], headers: [(String, String)] = [], body: HTTPBody = .none) throws -> HTTPRequest {
        var u = settings.url + Self.encodePath(path)
        if !query.isEmpty { u += "?" + query.map { Self.encode($0.0) + "=" + Self.encode($0.1) }.joined(separator: "&") }
        return HTTPRequest(method: method, url: u, headers: try authHeaders() + headers, body: body)
    }

    func count(_ resp: HTTPResponse, sent: Int64 = 0, received: Int64 = 0) {
        meter.request(); meter.sent(sent); meter.received(received)
    }

    static func retryable(_ r: HTTPResponse) -> Bool { RetryPolicy.isTransientStatus(r.status) }

    /// A small request with its whole answer, retried on transient failures.
    func fetch(_ method: String, _ path: String, query: [(String, String)] = [], headers: [(String, String)] = [],
               body: [UInt8]? = nil, limit: Int = 64 << 20) throws -> (HTTPResponse, [UInt8]) {
        try retry.run(what: display(path), retryable: Self.retryable) { _ in
            let r = try client.fetch(try request(method, path, query: query, headers: headers, body: body.map { .bytes($0) } ?? .none), limit: limit)
            count(r.0, sent: Int64(body?.count ?? 0), received: Int64(r.1.count))
            return r
        }
    }

    func display(_ path: String) -> String {
        let host = URLComponents(string: settings.url)?.host ?? settings.url
        let port = URLComponents(string: settings.url)?.port.map { ":\($0)" } ?? ""
        return "manta://" + host + port + path
    }

    /// Manta's `{"code","message"}` error body, as one line.
    func error(_ resp: HTTPResponse, _ path: String, body: [UInt8]? = nil) -> DogestryError {
        let bytes = body ?? resp.errorBody
        var code = "HTTP \(resp.status)", message = ""
        if let o = (try? JSONSerialization.jsonObject(with: Data(bytes))) as? [String: Any] {
            if let c = o["code"] as? String { code = c }
            if let m = o["message"] as? String { message = m }
        }
        let kind: DogestryError.Kind = resp.status == 401 || resp.status == 403 ? .auth : resp.status == 404 ? .notFound : .remote
        return DogestryError(kind, "\(display(path)): \(code) (\(resp.status))" + (message.isEmpty ? "" : ": \(message)"))
    }

    static func code(_ resp: HTTPResponse, _ body: [UInt8]) -> String? {
        ((try? JSONSerialization.jsonObject(with: Data(body.isEmpty ? resp.errorBody : body))) as? [String: Any])?["code"] as? String
    }

    // MARK: directories

    /// mkdir -p of `dir` (a Manta path under the root's account).
    func makeDirectories(_ dir: String) throws {
        lock.lock(); let known = madeDirs.contains(dir); lock.unlock()
        if known { return }
        let comps = dir.split(separator: "/").map(String.init)
        // /ACCOUNT/stor always exists; start below it.
        var cur = "/" + comps.prefix(2).joined(separator: "/")
        for c in comps.dropFirst(2) {
            cur += "/" + c
            lock.lock(); let done = madeDirs.contains(cur); lock.unlock()
            if done { continue }
            let (resp, body) = try fetch("PUT", cur, headers: [("Content-Type", "application/json; type=directory")])
            guard resp.isSuccess else { throw error(resp, cur, body: body) }
            lock.lock(); madeDirs.insert(cur); lock.unlock()
        }
    }

    func parent(_ path: String) -> String { (path as NSString).deletingLastPathComponent }

    // MARK: Remote

    public func stat(_ key: String) throws -> RemoteObject? {
        let p = try mantaPath(key)
        let (resp, body) = try fetch("HEAD", p)
        if resp.status == 404 { return nil }
        guard resp.isSuccess else { throw error(resp, p, body: body) }
        if (resp.header("content-type") ?? "").contains("type=directory") { return nil }
        guard let len = resp.header("content-length").flatMap({ Int64($0) }) else {
            throw DogestryError(.remote, "\(display(p)): HEAD response has no Content-Length")
        }
        return RemoteObject(key: key, size: len, modified: resp.header("last-modified").flatMap(HTTPDate.parse))
    }

    public func open(_ key: String) throws -> ByteSource {
        let p = try mantaPath(key)
        let (resp, body) = try get(p, key)
        if (resp.header("content-type") ?? "").contains("type=directory") {
            body.cancel(); throw DogestryError.notFound("\(key) on \(displayURL) is a directory, not an object")
        }
        // A dropped or stalled body resumes with a ranged GET from the first byte not yet read.
        let resumable = ResumingBody(response: resp, body: body, policy: retry, what: display(p)) { [self] from, end in
            let (r, b) = try get(p, key, headers: [("Range", "bytes=\(from)-" + (end.map(String.init) ?? ""))])
            return (r, b)
        }
        return MeteredSource(resumable, meter, expected: resumable.total, what: display(p))
    }

    /// A streamed GET of `p`, with retries; a 404 is `.notFound`, any other non-2xx Manta's error.
    func get(_ p: String, _ key: String, headers: [(String, String)] = []) throws -> (HTTPResponse, StreamingBody) {
        let (resp, body) = try retry.run(what: display(p), retryable: Self.retryable) { _ -> (HTTPResponse, StreamingBody) in
            let r = try client.open(try request("GET", p, headers: headers))
            count(r.0, received: r.0.isSuccess ? 0 : Int64(r.0.errorBody.count))
            return r
        }
        if resp.status == 404 { body.cancel(); throw DogestryError.notFound("\(key) not found on \(displayURL)") }
        guard resp.isSuccess else { body.cancel(); throw error(resp, p) }
        return (resp, body)
    }

    func objectHeaders(md5: [UInt8]?) -> [(String, String)] {
        var h = [("Content-Type", "application/octet-stream")]
        if let m = md5 { h.append(("Content-MD5", Data(m).base64EncodedString())) }
        if let d = settings.durability { h.append(("Durability-Level", String(d))) }
        return h
    }

    /// Makes sure the directory `dir` exists before a large body is streamed into it: one directory
    /// PUT (idempotent), or mkdir -p when its own parent is missing too. Small objects skip this and
    /// learn of a missing directory from their PUT's 404 instead, which costs less than a PUT per
    /// object; a large body would be sent twice.
    func ensureDirectory(_ dir: String) throws {
        lock.lock(); let known = madeDirs.contains(dir); lock.unlock()
        if known { return }
        let (resp, body) = try fetch("PUT", dir, headers: [("Content-Type", "application/json; type=directory")])
        if resp.status == 404, Self.code(resp, body) == "DirectoryDoesNotExist" { return try makeDirectories(dir) }
        guard resp.isSuccess else { throw error(resp, dir, body: body) }
        lock.lock(); madeDirs.insert(dir); lock.unlock()
    }

    /// PUTs an object, creating missing parent directories once, and checks Manta's Computed-MD5.
    /// Request body bytes are counted as libcurl reads them.
    func putObject(_ p: String, size: Int64, md5Known: [UInt8]?, body: () throws -> (HTTPBody, () -> [UInt8])) throws {
        var madeParent = false
        while true {
            let (resp, md5) = try retry.run(what: display(p), retryable: Self.retryable) { _ -> (HTTPResponse, [UInt8]) in
                let (unmetered, digest) = try body()
                let (b, sent) = meter.metered(unmetered)
                let sink = MemorySink(limit: 1 << 20)
                let r = try client.perform(try request("PUT", p, headers: objectHeaders(md5: md5Known), body: b), into: sink)
                count(r, sent: sent, received: Int64(sink.bytes.count))
                return (r, digest())
            }
            if resp.status == 404, !madeParent, Self.code(resp, []) == "DirectoryDoesNotExist" {
                try makeDirectories(parent(p)); madeParent = true; continue
            }
            guard resp.isSuccess else { throw error(resp, p) }
            if let computed = resp.header("computed-md5"), computed != Data(md5).base64EncodedString() {
                _ = try? fetch("DELETE", p)
                throw DogestryError.corrupt("\(display(p)): Manta computed MD5 \(computed) for the upload, dogestry sent \(Data(md5).base64EncodedString()); the object was removed")
            }
            lock.lock(); madeDirs.insert(parent(p)); lock.unlock()
            return
        }
    }

    public func put(_ key: String, bytes: [UInt8]) throws {
        let p = try mantaPath(key)
        let h = MD5Hasher(); bytes.withUnsafeBytes { h.update($0) }
        let md5 = h.finalize()
        try putObject(p, size: Int64(bytes.count), md5Known: md5) { (.bytes(bytes), { md5 }) }
    }

    public func put(_ key: String, file: StagedFile, size: Int64) throws {
        let p = try mantaPath(key)
        if size > 1 << 20 { try ensureDirectory(parent(p)) }
        try putObject(p, size: size, md5Known: nil) {
            // MD5 computed while the body streams; Manta's Computed-MD5 is checked against it.
            let src = MD5Source(try FileSource(path: file.path))
            return (.source(src, length: size), { src.finalize() })
        }
    }

    public func delete(_ key: String) throws {
        let p = try mantaPath(key)
        let (resp, body) = try fetch("DELETE", p)
        if resp.isSuccess || resp.status == 404 { return }
        // A directory of other keys is not an object: nothing to delete.
        if resp.status == 400, Self.code(resp, body) == "DirectoryNotEmpty" { return }
        throw error(resp, p, body: body)
    }

    public func list(prefix: String, _ each: (RemoteObject) throws -> Void) throws {
        let baseKey = prefix.contains("/") ? String(prefix[..<prefix.lastIndex(of: "/")!]) : ""
        if !baseKey.isEmpty { _ = try mantaPath(baseKey) }
        let dir = settings.root + (baseKey.isEmpty ? "" : "/" + baseKey)
        try walk(dir, rel: baseKey.isEmpty ? "" : baseKey + "/") { obj in
            if obj.key.hasPrefix(prefix) { try each(obj) }
        }
    }

    /// Lists one directory (all pages; the marker is inclusive) and recurses into subdirectories.
    func walk(_ dir: String, rel: String, _ each: (RemoteObject) throws -> Void) throws {
        var marker: String? = nil
        var subdirs: [String] = []
        while true {
            var q = [("limit", "1024")]
            if let m = marker { q.append(("marker", m)) }
            let (resp, body) = try fetch("GET", dir, query: q)
            if resp.status == 404 { return }
            guard resp.isSuccess else { throw error(resp, dir, body: body) }
            // An object where a directory was expected: nothing below it.
            guard (resp.header("content-type") ?? "").contains("type=directory") else { return }
            var names = 0
            var last: String? = nil
            for line in body.split(separator: 10) where !line.isEmpty {
                guard let o = (try? JSONSerialization.jsonObject(with: Data(line))) as? [String: Any],
                      let name = o["name"] as? String, let type = o["type"] as? String else {
                    throw DogestryError(.remote, "\(display(dir)): listing has a line that is not an entry")
                }
                last = name
                if name == marker { continue }   // the marker entry was on the previous page
                names += 1
                if name.hasPrefix(".dogestry") { continue }
                if type == "directory" { subdirs.append(name); continue }
                let size = (o["size"] as? NSNumber)?.int64Value ?? 0
                let mtime = (o["mtime"] as? String).flatMap(MantaDates.parse)
                try each(RemoteObject(key: Self.unshard(rel + name), size: size, modified: mtime))
            }
            guard names > 0, let l = last else { break }
            marker = l
        }
        for d in subdirs { try walk(dir + "/" + d, rel: rel + d + "/", each) }
    }

    public func makeStagedFile() throws -> StagedFile { try TempDirectory.staged() }

    public func check() throws -> String {
        try makeDirectories(settings.root)
        let probe = ".dogestry-check-" + UUID().uuidString.lowercased()
        let p = settings.root + "/" + probe
        try putObject(p, size: 1, md5Known: nil) { (.bytes([0]), { let h = MD5Hasher(); [UInt8(0)].withUnsafeBytes { h.update($0) }; return h.finalize() }) }
        let (resp, body) = try fetch("DELETE", p)
        guard resp.isSuccess else { throw error(resp, p, body: body) }
        return "Manta \(settings.url) as \(keyIDPath.replacingOccurrences(of: "/keys/", with: " key ")) (readable and writable)"
    }

    // MARK: signed URLs

    /// A Manta signed URL (what `msign` makes): GET of `key` until `expires` seconds from now.
    public func signedURL(forGet key: String, expires: Int) throws -> String {
        let p = try mantaPath(key)
        guard let comps = URLComponents(string: settings.url), let host = comps.host else {
            throw DogestryError(.config, "Manta URL \(settings.url) has no host")
        }
        let hostHeader = host + (comps.port.map { ":\($0)" } ?? "")
        let query = [("algorithm", algorithm.uppercased()),
                     ("expires", String(Int(Date().timeIntervalSince1970) + expires)),
                     ("keyId", keyIDPath)].sorted { $0.0 < $1.0 }
        let canonical = query.map { Self.encode($0.0) + "=" + Self.encode($0.1) }.joined(separator: "&")
        let encodedPath = Self.encodePath(p)
        let toSign = ["GET", hostHeader, encodedPath, canonical].joined(separator: "\n")
        let sig = Data(try self.key.sign(Array(toSign.utf8), hash: hash)).base64EncodedString()
        return settings.url + encodedPath + "?" + canonical + "&signature=" + Self.encode(sig)
    }
}

/// Manta's listing times (`2026-12-02T10:00:00.123Z`, fractions optional).
enum MantaDates {
    private static let lock = NSLock()
    nonisolated(unsafe) private static let withFractions: ISO8601DateFormatter = {
        let f = ISO8601DateFormatter(); f.formatOptions = [.withInternetDateTime, .withFractionalSeconds]; return f
    }()
    nonisolated(unsafe) private static let plain = ISO8601DateFormatter()

    static func parse(_ s: String) -> Date? {
        lock.lock(); defer { lock.unlock() }   // (formatters are used under the lock only)
        return withFractions.date(from: s) ?? plain.date(from: s)
    }
}

/// Hashes with MD5 what passes through.
final class MD5Source: ByteSource {
    let inner: ByteSource
    let md5 = MD5Hasher()
    init(_ inner: ByteSource) { self.inner = inner }
    func read(into buffer: UnsafeMutableRawBufferPointer) throws -> Int {
        let n = try inner.read(into: buffer)
        if n > 0 { md5.update(UnsafeRawBufferPointer(rebasing: buffer[0..<n])) }
        return n
    }
    func finalize() -> [UInt8] { md5.finalize() }
}
