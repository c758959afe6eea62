import DogestryCore
import DogestryHTTP
import Foundation

public struct EngineVersion: Sendable {
    /// The engine's version ("20.10.24+dfsg1", "4.3.1").
    public var version: String
    /// The Docker Engine API version it speaks ("1.41").
    public var apiVersion: String
    public var minAPIVersion: String
    /// Podman's Docker-compatible service (rather than Docker Engine).
    public var isPodman: Bool
    public var os: String
    public var arch: String
    /// Component name → version, as reported ("Engine", "containerd", "Podman Engine"…).
    public var components: [String: String]
}

public struct EngineImage: Sendable {
    /// The image ID: the digest of its config.
    public var id: Digest
    public var repoTags: [String]
    public var repoDigests: [String]
    /// RootFS.Layers, base first.
    public var diffIDs: [Digest]
    public var size: Int64

    /// Chain IDs of the layer stack, base first.
    public var chainIDs: [Digest] { Digest.chainIDs(diffIDs) }
}

public struct EngineImageSummary: Sendable {
    public var id: Digest
    public var repoTags: [String]
}

/// A client of the Docker Engine API (Docker Engine, or Podman's compatible service).
///
/// Errors are one-line `DogestryError`s of kind `.engine` that start with `engine <address>:`.
/// Safe to use from several threads.
public final class EngineClient {
    public let address: EngineAddress
    /// The newest API version this client asks for.
    public static let maxAPIVersion = "1.41"

    let http: HTTPClient
    private let lock = NSLock()
    private var prefix: String?

    public init(address: EngineAddress) throws {
        self.address = address
        for (what, path) in [("CA certificate", address.caCert), ("client certificate", address.clientCert),
                             ("client key", address.clientKey)] {
            if let p = path, !FileManager.default.isReadableFile(atPath: p) {
                throw DogestryError(.config, "engine \(address): \(what) \(p) is missing or unreadable")
            }
        }
        var o = HTTPTransportOptions()
        o.unixSocket = address.socketPath
        o.caBundle = address.caCert
        o.clientCert = address.clientCert
        o.clientKey = address.clientKey
        // `docker save` can think for minutes before its first byte, and a load answers only
        // once the engine has stored everything: no first-byte or stall limit.
        o.timeouts = .engine
        http = HTTPClient(options: o)
        let label = "engine \(address)"
        http.describeFailure = { f in
            switch f.kind {
            case .connect: return DogestryError(.engine, "\(label): cannot connect (\(f.reason))")
            case .resolve: return DogestryError(.engine, "\(label): cannot resolve host (\(f.reason))")
            case .timeout, .firstByteTimeout: return DogestryError(.engine, "\(label): timeout", cause: f.cause)
            case .stalled: return DogestryError(.engine, "\(label): transfer stalled", cause: f.cause)
            case .truncated: return DogestryError(.engine, "\(label): response ended early (\(f.reason))", cause: f.cause)
            case .tls: return DogestryError(.engine, "\(label): TLS error (\(f.reason))")
            case .connection: return DogestryError(.engine, "\(label): connection failed (\(f.reason))")
            case .cancelled: return DogestryError(.aborted, "\(label): transfer cancelled")
            case .invalidURL: return DogestryError(.engine, "\(label): invalid request (\(f.reason))")
            case .other: return DogestryError(.engine, "\(label): request failed (\(f.reason))")
            }
        }
    }

    // MARK: API

    public func ping() throws {
        let (resp, body) = try http.fetch(request("GET", "/_ping", versioned: false), limit: 1 << 20)
        guard resp.status == 200 else {
            throw fail("ping answered HTTP \(resp.status)\(detail(body))")
        }
    }

    /// Asks the engine its version; later calls use the API version min(engine's, 1.41).
    public func version() throws -> EngineVersion {
        let (resp, body) = try http.fetch(request("GET", "/version", versioned: false), limit: 4 << 20)
        guard resp.status == 200 else { throw fail("version query answered HTTP \(resp.status)\(detail(body))") }
        guard let obj = (try? JSONSerialization.jsonObject(with: Data(body))) as? [String: Any] else {
            throw fail("version query returned unreadable JSON")
        }
        var components: [String: String] = [:]
        for c in obj["Components"] as? [[String: Any]] ?? [] {
            if let n = c["Name"] as? String { components[n] = c["Version"] as? String ?? "" }
        }
        let api = obj["ApiVersion"] as? String ?? ""
        let isPodman = components.keys.contains { $0.lowercased().contains("podman") }
            || ((obj["Platform"] as? [String: Any])?["Name"] as? String ?? "").lowercased().contains("podman")
        let v = EngineVersion(
            version: obj["Version"] as? String ?? "", apiVersion: api,
            minAPIVersion: obj["MinAPIVersion"] as? String ?? "", isPodman: isPodman,
            os: obj["Os"] as? String ?? "", arch: obj["Arch"] as? String ?? "", components: components)
        let use = EngineClient.apiLess(api, EngineClient.maxAPIVersion) && EngineClient.parseAPI(api) != nil
            ? api : EngineClient.maxAPIVersion
        lock.lock(); prefix = "/v" + use; lock.unlock()
        return v
    }

    /// Inspects an image by name, tag, digest or ID; nil when the engine does not have it.
    public func inspectImage(_ ref: String) throws -> EngineImage? {
        let (resp, body) = try http.fetch(request("GET", "/images/\(imagePath(ref))/json"))
        if resp.status == 404 || (resp.status != 200 && isNoSuchImage(body)) { return nil }
        guard resp.status == 200 else { throw fail("inspect of image \(q(ref)) failed\(detail(body, resp.status))") }
        guard let obj = (try? JSONSerialization.jsonObject(with: Data(body))) as? [String: Any] else {
            throw fail("inspect of image \(q(ref)) returned unreadable JSON")
        }
        let id = try imageID(obj["Id"], what: "image \(q(ref))")
        var diffIDs: [Digest] = []
        for l in (obj["RootFS"] as? [String: Any])?["Layers"] as? [String] ?? [] {
            do { diffIDs.append(try Digest(parsing: l, what: "layer")) } catch { throw fail("image \(q(ref)): \(error)") }
        }
        return EngineImage(
            id: id,
            repoTags: (obj["RepoTags"] as? [String] ?? []).filter { !isNone($0) },
            repoDigests: (obj["RepoDigests"] as? [String] ?? []).filter { !isNone($0) },
            diffIDs: diffIDs,
            size: (obj["Size"] as? NSNumber)?.int64Value ?? 0)
    }

    /// Every image in the engine (including untagged and intermediate ones).
    public func listImages() throws -> [EngineImageSummary] {
        let (resp, body) = try http.fetch(request("GET", "/images/json", query: [("all", "1")]), limit: 256 << 20)
        guard resp.status == 200 else { throw fail("listing images failed\(detail(body, resp.status))") }
        guard let arr = (try? JSONSerialization.jsonObject(with: Data(body))) as? [[String: Any]] else {
            throw fail("image list is unreadable JSON")
        }
        return try arr.map { o in
            EngineImageSummary(id: try imageID(o["Id"], what: "listed image"),
                               repoTags: (o["RepoTags"] as? [String] ?? []).filter { !isNone($0) })
        }
    }

    /// Chain IDs of every layer stack present in the engine (every prefix of every local image's
    /// RootFS.Layers).
    public func presentChainIDs() throws -> Set<Digest> {
        var out = Set<Digest>()
        var seen = Set<Digest>()
        for s in try listImages() where seen.insert(s.id).inserted {
            // An image removed since the listing is simply skipped.
            guard let img = try inspectImage(s.id.description) else { continue }
            out.formUnion(img.chainIDs)
        }
        return out
    }

    /// The engine's image store, when dogestry runs beside it and may read it: a Docker Engine
    /// (not Podman) on a local unix socket whose `/info` names a data root and storage driver
    /// `DockerLayerStore` reads. Nil otherwise, or when `/info` fails (the export still works).
    public func layerStore() -> DockerLayerStore? {
        // (Podman's compatible service answers /info too, for a store of another layout.)
        guard case .unix = address.endpoint, let v = try? version(), !v.isPodman,
              let (resp, body) = try? http.fetch(request("GET", "/info"), limit: 16 << 20), resp.status == 200,
              let obj = (try? JSONSerialization.jsonObject(with: Data(body))) as? [String: Any],
              let root = obj["DockerRootDir"] as? String, let driver = obj["Driver"] as? String else { return nil }
        return DockerLayerStore(root: root, driver: driver)
    }

    /// Streams `docker save` of the given images (one archive, `/images/get?names=…&names=…`).
    public func exportImages(_ names: [String]) throws -> StreamingBody {
        guard !names.isEmpty else { throw DogestryError.invalid("no images to export") }
        let what = names.count == 1 ? "image \(q(names[0]))" : "images " + names.map(q).joined(separator: ", ")
        let (resp, body) = try http.open(request("GET", "/images/get", query: names.map { ("names", Digest.isHex64($0) ? "sha256:" + $0 : $0) },
                                                 headers: [("Accept", "application/x-tar")]))
        guard resp.isSuccess else {
            if resp.status == 404 || isNoSuchImage(resp.errorBody) {
                throw fail("export of \(what) failed: \(engineMessage(resp.errorBody) ?? "not found")")
            }
            throw fail("export of \(what) failed\(detail(resp.errorBody, resp.status))")
        }
        return body
    }

    /// Loads a docker-load archive written by `produce` (run on a background thread) with
    /// `POST /images/load`, streaming it as it is produced. Returns the engine's "Loaded image…" lines.
    /// Throws the engine's message if the load failed, or `produce`'s error (the upload is then aborted).
    public func loadImages(_ produce: @escaping (ByteSink) throws -> Void) throws -> [String] {
        let reply = ReplySink(limit: 16 << 20)
        let req = try request("POST", "/images/load", query: [("quiet", "1")],
                              headers: [("Content-Type", "application/x-tar")])
        let resp: HTTPResponse
        do {
            resp = try http.upload(req, into: reply, producer: produce)
        } catch {
            // An engine that gave up mid-upload may have said why.
            if let msg = EngineClient.streamError(reply.bytes) { throw fail("load failed: \(msg)") }
            throw error
        }
        guard resp.isSuccess else {
            throw fail("load failed: \(engineMessage(reply.bytes) ?? "HTTP \(resp.status)\(detail(reply.bytes))")")
        }
        if let msg = EngineClient.streamError(reply.bytes) { throw fail("load failed: \(msg)") }
        var lines: [String] = []
        for obj in EngineClient.jsonStream(reply.bytes) {
            if let s = obj["stream"] as? String {
                for l in s.split(whereSeparator: { $0 == "\n" || $0 == "\r" }) {
                    let t = l.trimmingCharacters(in: .whitespaces)
                    if !t.isEmpty { lines.append(t) }
                }
            }
        }
        return lines
    }

    /// Tags `source` as `repo:tag`.
    public func tag(source: String, repo: String, tag: String) throws {
        let (resp, body) = try http.fetch(request("POST", "/images/\(imagePath(source))/tag",
                                                  query: [("repo", repo), ("tag", tag)]))
        if resp.isSuccess { return }
        if resp.status == 404 || isNoSuchImage(body) { throw fail("image \(q(source)) not found") }
        throw fail("tagging \(q(source)) as \(q(repo + ":" + tag)) failed\(detail(body, resp.status))")
    }

    /// Removes an image (or one of its tags).
    public func removeImage(_ ref: String, force: Bool) throws {
        let (resp, body) = try http.fetch(request("DELETE", "/images/\(imagePath(ref))",
                                                  query: [("force", force ? "1" : "0")]))
        if resp.isSuccess { return }
        if resp.status == 404 || isNoSuchImage(body) { throw fail("image \(q(ref)) not found") }
        throw fail("removing image \(q(ref)) failed\(detail(body, resp.status))")
    }

    // MARK: helpers

    private func apiPrefix() throws -> String {
        lock.lock()
        if let p = prefix { lock.unlock(); return p }
        lock.unlock()
        _ = try version()
        lock.lock(); defer { lock.unlock() }
        return prefix ?? "/v" + EngineClient.maxAPIVersion
    }

    private func request(_ method: String, _ path: String, query: [(String, String)] = [],
                         headers: [(String, String)] = [], versioned: Bool = true) throws -> HTTPRequest {
        var url = address.baseURL + (versioned ? try apiPrefix() : "") + path
        if !query.isEmpty {
            url += "?" + query.map { "\(queryEscape($0.0))=\(queryEscape($0.1))" }.joined(separator: "&")
        }
        return HTTPRequest(method: method, url: url, headers: headers)
    }

    /// An image reference for a URL path. A bare 64-hex ID is sent as "sha256:<hex>" (Podman
    /// refuses bare IDs it does not know instead of answering "no such image").
    private func imagePath(_ ref: String) -> String {
        pathEscape(Digest.isHex64(ref) ? "sha256:" + ref : ref)
    }

    func fail(_ what: String) -> DogestryError { DogestryError(.engine, "engine \(address): \(what)") }

    private func q(_ s: String) -> String { EngineAddress.quote(s) }

    /// ": <engine's message>" (or ": HTTP <status>") for error messages.
    private func detail(_ body: [UInt8], _ status: Int? = nil) -> String {
        if let m = engineMessage(body) { return ": " + m }
        if let s = status { return ": HTTP \(s)" }
        return ""
    }

    /// The `message` of an engine JSON error body, or its text.
    func engineMessage(_ body: [UInt8]) -> String? {
        if let obj = (try? JSONSerialization.jsonObject(with: Data(body))) as? [String: Any],
           let m = obj["message"] as? String, !m.isEmpty {
            return EngineClient.oneLine(m)
        }
        if let m = EngineClient.streamError(body) { return m }
        let text = EngineClient.oneLine(String(decoding: body.prefix(600), as: UTF8.self))
        return text.isEmpty ? nil : text
    }

    private func isNoSuchImage(_ body: [UInt8]) -> Bool {
        let m = (engineMessage(body) ?? "").lowercased()
        return m.contains("no such image") || m.contains("image not known")
    }

    private func isNone(_ s: String) -> Bool { s == "<none>:<none>" || s == "<none>@<none>" }

    private func imageID(_ v: Any?, what: String) throws -> Digest {
        guard let s = v as? String else { throw fail("\(what) has no ID") }
        do {
            return s.hasPrefix("sha256:") ? try Digest(parsing: s, what: "image ID") : try Digest(hex: s)
        } catch {
            throw fail("\(what): \(error)")
        }
    }

    static func oneLine(_ s: String, max: Int = 500) -> String {
        let flat = s.unicodeScalars.map { $0.value < 32 || $0.value == 127 ? " " : String($0) }.joined()
            .split(separator: " ", omittingEmptySubsequences: true).joined(separator: " ")
        return flat.count > max ? String(flat.prefix(max - 3)) + "..." : flat
    }

    /// The first error in a JSON-lines reply ({"error": …} or {"errorDetail": {"message": …}}).
    static func streamError(_ body: [UInt8]) -> String? {
        for obj in jsonStream(body) {
            if let d = obj["errorDetail"] as? [String: Any], let m = d["message"] as? String, !m.isEmpty {
                return oneLine(m)
            }
            if let m = obj["error"] as? String, !m.isEmpty { return oneLine(m) }
        }
        return nil
    }

    /// Splits a stream of concatenated JSON objects (newline-separated or not) and parses each.
    static func jsonStream(_ body: [UInt8]) -> [[String: Any]] {
        var out: [[String: Any]] = []
        var depth = 0, inString = false, escaped = false, start = -1
        for (i, b) in body.enumerated() {
            if inString {
                if escaped { escaped = false } else if b == UInt8(ascii: "\\") { escaped = true } else if b == UInt8(ascii: "\"") { inString = false }
                continue
            }
            switch b {
            case UInt8(ascii: "\""): inString = true
            case UInt8(ascii: "{"):
                if depth == 0 { start = i }
                depth += 1
            case UInt8(ascii: "}"):
                if depth > 0 {
                    depth -= 1
                    if depth == 0, start >= 0 {
                        if let o = (try? JSONSerialization.jsonObject(with: Data(body[start...i]))) as? [String: Any] { out.append(o) }
                        start = -1
                    }
                }
            default: break
            }
        }
        return out
    }

    static func parseAPI(_ s: String) -> (Int, Int)? {
        let p = s.split(separator: ".")
        guard p.count == 2, let a = Int(p[0]), let b = Int(p[1]) else { return nil }
        return (a, b)
    }

    /// a < b for "major.minor" API versions (unparsable counts as not less).
    static func apiLess(_ a: String, _ b: String) -> Bool {
        guard let x = parseAPI(a), let y = parseAPI(b) else { return false }
        return x < y
    }
}

/// Collects the engine's (small) reply to a load, keeping at most `limit` bytes.
final class ReplySink: ByteSink {
    private let lock = NSLock()
    private var buf: [UInt8] = []
    let limit: Int
    init(limit: Int) { self.limit = limit }
    var bytes: [UInt8] { lock.lock(); defer { lock.unlock() }; return buf }
    func write(_ b: UnsafeRawBufferPointer) throws {
        lock.lock(); defer { lock.unlock() }
        let room = limit - buf.count
        if room > 0 { buf.append(contentsOf: b.prefix(room)) }
    }
    func close() throws {}
}

private let pathAllowed = CharacterSet(charactersIn: "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-._~:@/")
private let queryAllowed = CharacterSet(charactersIn: "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-._~")

func pathEscape(_ s: String) -> String { s.addingPercentEncoding(withAllowedCharacters: pathAllowed) ?? s }
func queryEscape(_ s: String) -> String { s.addingPercentEncoding(withAllowedCharacters: queryAllowed) ?? s }
