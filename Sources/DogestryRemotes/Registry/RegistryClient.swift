import DogestryCore
import DogestryHTTP
import Foundation

/// Where a registry is and how to reach it: `registry://HOST[:PORT][/NAMESPACE]` (or
/// `docker://…`), TLS trust, plain HTTP for labs.
public struct RegistryEndpoint: Sendable, Equatable {
    /// `HOST[:PORT]` as written (Docker Hub as `docker.io`).
    public var host: String
    /// Repository path prefix under which dogestry's image names live (may be empty).
    public var namespace: String
    /// Plain HTTP instead of HTTPS.
    public var insecure: Bool
    /// The CA bundle that verifies the registry's certificate (nil: the system's).
    public var caFile: String?
    /// A client certificate and key, when `certs.d` holds them (`client.cert`, `client.key`).
    public var clientCert: String?
    public var clientKey: String?

    public static func isDockerHub(_ host: String) -> Bool {
        ["docker.io", "index.docker.io", "registry-1.docker.io", "registry.hub.docker.com"].contains(host.lowercased())
    }

    /// The host that serves the API (`registry-1.docker.io` for Docker Hub).
    public var apiHost: String { Self.isDockerHub(host) ? "registry-1.docker.io" : host }
    public var baseURL: String { (insecure ? "http://" : "https://") + apiHost }
    public var displayURL: String { "registry://" + host + (namespace.isEmpty ? "" : "/" + namespace) }

    /// Parses `registry://HOST[:PORT][/NAMESPACE]` or `docker://…` (`docker://` alone is Docker Hub).
    public static func parse(_ url: String) throws -> RegistryEndpoint {
        let lower = url.lowercased()
        guard let prefix = ["registry://", "docker://"].first(where: { lower.hasPrefix($0) }) else {
            throw DogestryError.invalid("\(url) is not a registry:// or docker:// URL")
        }
        var rest = String(url.dropFirst(prefix.count))
        if rest.hasSuffix("/") { rest.removeLast() }
        if rest.isEmpty { rest = "docker.io" }
        let parts = rest.split(separator: "/", omittingEmptySubsequences: false).map(String.init)
        var host = parts[0].lowercased(), ns = Array(parts.dropFirst())
        // `docker://library/x`-style (no host): Docker Hub, as Docker reads such names.
        if !(host.contains(".") || host.contains(":") || host == "localhost") { ns = parts; host = "docker.io" }
        guard host.range(of: #"^[a-z0-9]([a-z0-9.-]*[a-z0-9])?(:[0-9]{1,5})?$"#, options: .regularExpression) != nil
                || host.range(of: #"^\[[0-9a-f:]+\](:[0-9]{1,5})?$"#, options: .regularExpression) != nil else {
            throw DogestryError.invalid("registry URL \(redactedURL(url)): \"\(parts[0])\" is not a host[:port]")
        }
        let namespace = ns.joined(separator: "/")
        if !namespace.isEmpty {
            guard ImageReference.isValidName(namespace), !(namespace.contains(".") && ns[0].contains(".")) else {
                throw DogestryError.invalid("registry URL \(redactedURL(url)): \"\(namespace)\" is not a valid repository namespace")
            }
        }
        return RegistryEndpoint(host: host, namespace: namespace, insecure: false, caFile: nil)
    }

    /// The repository path of dogestry image `name` (`x` on Docker Hub is `library/x`).
    public func repository(_ name: String) -> String {
        let n = ImageReference.normalizedName(name)
        if !namespace.isEmpty { return namespace + "/" + n }
        if Self.isDockerHub(host) && !n.contains("/") { return "library/" + n }
        return n
    }

    /// The dogestry name of repository path `repo`, or nil when it lies outside the namespace.
    public func name(ofRepository repo: String) -> String? {
        if !namespace.isEmpty {
            guard repo.hasPrefix(namespace + "/") else { return nil }
            return String(repo.dropFirst(namespace.count + 1))
        }
        return ImageReference.normalizedName(repo)
    }

    /// Finds the registry's CA and client certificate where Docker and Podman keep them:
    /// `DIR/HOST[:PORT]/ca.crt` (or another `*.crt`), `client.cert`, `client.key`, for DIR in
    /// `certsDirs` (`/etc/docker/certs.d`, `/etc/containers/certs.d`).
    public mutating func findCertificates(in certsDirs: [String]) {
        for dir in certsDirs {
            let d = dir + "/" + host
            guard FS.exists(d) else { continue }
            let names = ((try? FileManager.default.contentsOfDirectory(atPath: d)) ?? []).sorted()
            if caFile == nil {
                if names.contains("ca.crt") { caFile = d + "/ca.crt" } else if let c = names.first(where: { $0.hasSuffix(".crt") }) { caFile = d + "/" + c }
            }
            if clientCert == nil, let c = names.first(where: { $0.hasSuffix(".cert") }) {
                let key = String(c.dropLast(5)) + ".key"
                if names.contains(key) { clientCert = d + "/" + c; clientKey = d + "/" + key }
            }
            if caFile != nil { return }
        }
    }
}

/// A registry's error answer in one line: the spec's error codes and messages, or the status.
struct RegistryErrorBody {
    static func summary(_ resp: HTTPResponse) -> String {
        if let obj = (try? JSONSerialization.jsonObject(with: Data(resp.errorBody))) as? [String: Any],
           let errors = obj["errors"] as? [[String: Any]], !errors.isEmpty {
            return errors.prefix(3).map { e in
                let code = e["code"] as? String ?? "ERROR"
                let m = (e["message"] as? String).map { " (\($0.count > 160 ? String($0.prefix(157)) + "..." : $0))" } ?? ""
                return code + m
            }.joined(separator: "; ") + " [\(resp.status)]"
        }
        return "\(HTTPStatus.name(resp.status)) (\(resp.status))"
    }
    static func codes(_ resp: HTTPResponse) -> [String] {
        guard let obj = (try? JSONSerialization.jsonObject(with: Data(resp.errorBody))) as? [String: Any],
              let errors = obj["errors"] as? [[String: Any]] else { return [] }
        return errors.compactMap { $0["code"] as? String }
    }
}

/// The client side of the OCI Distribution Spec (v1.1) for one registry: manifests and blobs
/// (GET, HEAD, PUT, DELETE), uploads (monolithic and chunked), cross-repository mounts, tag and
/// catalog listings with pagination, redirects followed, `Docker-Content-Digest` checked, and
/// authentication as Docker does it (`RegistryAuthenticator`). Transient failures are retried
/// under the one policy of every network remote.
public final class RegistryClient: @unchecked Sendable {  // (set up once; the authenticator locks its state)
    public let endpoint: RegistryEndpoint
    let http: HTTPClient
    let auth: RegistryAuthenticator
    let meter = TrafficMeter()
    /// Bytes per PATCH of a chunked upload; 0 uploads each blob in one PUT.
    public var chunkSize: Int64 = 0
    static let retry = RetryPolicy(maxRetries: 4, baseDelay: 0.3)
    public var traffic: RemoteTraffic { meter.snapshot }

    /// Every manifest media type dogestry reads, for `Accept`.
    public static let manifestTypes = [MediaType.ociManifest, MediaType.ociIndex, MediaType.dockerManifest, MediaType.dockerManifestList]

    public init(endpoint: RegistryEndpoint, credentials: RegistryCredentials?, timeouts: HTTPTimeouts = .remoteDefault) {
        self.endpoint = endpoint
        var o = HTTPTransportOptions(caBundle: endpoint.caFile, timeouts: timeouts, userAgent: "dogestry")
        o.clientCert = endpoint.clientCert; o.clientKey = endpoint.clientKey
        http = HTTPClient(options: o)
        auth = RegistryAuthenticator(host: endpoint.host, credentials: credentials, http: http, meter: meter)
        let host = endpoint.host
        http.describeFailure = { f in
            let e = f.defaultError
            switch f.kind {
            case .connect, .resolve: return DogestryError(.remote, "registry \(host) is unreachable: \(f.reason)", cause: e.cause)
            case .tls: return DogestryError(.remote, "registry \(host): TLS failed (\(f.reason)); is its CA in /etc/docker/certs.d/\(host)/ca.crt or [registry \"\(host)\"] ca?", cause: e.cause)
            default: return DogestryError(e.kind, "registry \(host): \(e.message)", cause: e.cause)
            }
        }
    }

    static func pullScope(_ repo: String) -> String { "repository:\(repo):pull" }
    static func pushScope(_ repo: String) -> String { "repository:\(repo):pull,push" }

    // MARK: requests

    /// Runs `attempt` with the registry's authorisation for `scopes`, answering its 401
    /// challenges (at most twice); transient failures are retried.
    func authorized<T>(_ what: String, scopes: [String], policy: RetryPolicy = RegistryClient.retry,
                       _ attempt: (_ authorization: [(String, String)]) throws -> (HTTPResponse, T)) throws -> (HTTPResponse, T) {
        var tries = 0
        while true {
            let header = try auth.header(scopes: scopes)
            let headers = header.map { [("Authorization", $0)] } ?? []
            let (resp, value) = try policy.run(what: what) { _ in
                self.meter.request()
                return try attempt(headers)
            }
            if resp.status == 401, tries < 2, auth.refused(resp, scopes: scopes, hadAuthorization: header != nil) {
                tries += 1; continue
            }
            return (resp, value)
        }
    }

    /// The one-line error for a refused request about `what`.
    func failure(_ resp: HTTPResponse, _ what: String) -> DogestryError {
        let s = RegistryErrorBody.summary(resp)
        switch resp.status {
        case 401:
            let who = auth.credentials.map { "\($0)" } ?? "anonymous access"
            return DogestryError(.auth, "registry \(endpoint.host): \(what): wrong or missing credentials (\(who) was refused): \(s)")
        case 403:
            let who = auth.credentials.map { "\($0)" } ?? "anonymous access"
            return DogestryError(.auth, "registry \(endpoint.host): \(what): not allowed (\(who) has no permission for this): \(s)")
        case 404: return DogestryError(.notFound, "registry \(endpoint.host): \(what): not found: \(s)")
        case 405: return DogestryError(.unsupported, "registry \(endpoint.host): \(what): this registry does not allow it: \(s)")
        default:
            if RegistryErrorBody.codes(resp).contains("UNSUPPORTED") {
                return DogestryError(.unsupported, "registry \(endpoint.host): \(what): this registry does not support it: \(s)")
            }
            return DogestryError(.remote, "registry \(endpoint.host): \(what): \(s)")
        }
    }

    func url(_ path: String) -> String { endpoint.baseURL + path }

    /// The most redirects one request follows.
    static let maxRedirects = 5

    /// Where a redirect from `from` to `location` goes, and whether the registry's credentials
    /// go along: only to the registry's own origin (scheme, host and port). A redirect from
    /// https to http is refused (a presigned URL would travel in clear), as is a scheme that
    /// is not http(s).
    func redirectTarget(_ location: String, from: String, what: String) throws -> (url: String, sameOrigin: Bool) {
        let next = Self.resolve(location, against: from)
        let a = URLComponents(string: from), b = URLComponents(string: next)
        let scheme = b?.scheme?.lowercased()
        guard scheme == "https" || scheme == "http", let host = b?.host, !host.isEmpty else {
            throw DogestryError(.remote, "registry \(endpoint.host): \(what): redirected to an address that is not http(s) (\(redactedURL(next)))")
        }
        if a?.scheme?.lowercased() == "https" && scheme == "http" {
            throw DogestryError(.remote, "registry \(endpoint.host): \(what): refused a redirect from https to plain http (\(redactedURL(next)))")
        }
        let own = URLComponents(string: endpoint.baseURL)
        func port(_ c: URLComponents?) -> Int? { c?.port ?? (c?.scheme?.lowercased() == "https" ? 443 : 80) }
        let same = scheme == own?.scheme?.lowercased() && host.lowercased() == own?.host?.lowercased() && port(b) == port(own)
        return (next, same)
    }

    static func isRedirect(_ status: Int) -> Bool { [301, 302, 303, 307, 308].contains(status) }

    /// A small request whose whole answer is wanted. GET and HEAD follow redirects (at most
    /// `maxRedirects`): to the registry's own origin with its credentials, elsewhere (object
    /// storage, a CDN) without them.
    func fetch(_ method: String, _ path: String, what: String, scopes: [String], headers: [(String, String)] = [],
               body: [UInt8]? = nil, limit: Int = RepositoryLimits.metadataBytes) throws -> (HTTPResponse, [UInt8]) {
        var target = path.hasPrefix("http://") || path.hasPrefix("https://") ? path : url(path)
        var own = true
        for _ in 0...Self.maxRedirects {
            let request = target
            let (resp, bytes): (HTTPResponse, [UInt8])
            if own {
                (resp, bytes) = try authorized(what, scopes: scopes) { authz in
                    try http.fetch(HTTPRequest(method: method, url: request, headers: headers + authz, body: body.map { .bytes($0) } ?? .none), limit: limit)
                }
            } else {
                (resp, bytes) = try Self.retry.run(what: what) { _ in
                    meter.request()
                    return try http.fetch(HTTPRequest(method: method, url: request, headers: headers), limit: limit)
                }
            }
            meter.sent(Int64(body?.count ?? 0)); meter.received(Int64(bytes.count))
            guard method == "GET" || method == "HEAD", Self.isRedirect(resp.status), let loc = resp.header("location") else { return (resp, bytes) }
            (target, own) = try redirectTarget(loc, from: request, what: what)
        }
        throw DogestryError(.remote, "registry \(endpoint.host): \(what): more than \(Self.maxRedirects) redirects")
    }

    /// `/v2/`: reachable, speaks the API, accepts our credentials.
    public func ping() throws {
        let (resp, _) = try fetch("GET", "/v2/", what: "API check", scopes: [])
        guard resp.isSuccess else { throw failure(resp, "API check (/v2/)") }
    }

    // MARK: manifests

    /// A manifest or index, verified: by digest its content must hash to it; by tag to the
    /// `Docker-Content-Digest` the registry sent, when it sent one.
    public func manifest(_ repo: String, _ reference: String) throws -> (bytes: [UInt8], mediaType: String, digest: Digest) {
        let what = "manifest \(repo):\(reference)"
        let (resp, bytes) = try fetch("GET", "/v2/\(repo)/manifests/\(reference)", what: what, scopes: [Self.pullScope(repo)],
                                      headers: [("Accept", Self.manifestTypes.joined(separator: ", "))])
        guard resp.isSuccess else { throw failure(resp, what) }
        let got = Digest.of(bytes)
        if let d = try? Digest(parsing: reference), d != got {
            throw DogestryError.corrupt("registry \(endpoint.host): \(what) is corrupt: its content hashes to \(got)")
        }
        if let h = resp.header("docker-content-digest"), let d = try? Digest(parsing: h.trimmingCharacters(in: .whitespaces)), d != got {
            throw DogestryError.corrupt("registry \(endpoint.host): \(what): Docker-Content-Digest says \(d) but the content hashes to \(got)")
        }
        let mt = ManifestKind.mediaType(of: bytes) ?? resp.header("content-type") ?? MediaType.ociManifest
        return (bytes, mt, got)
    }

    /// The digest and size of a manifest, or nil when there is none.
    public func headManifest(_ repo: String, _ reference: String) throws -> (digest: Digest?, size: Int64)? {
        let what = "manifest \(repo):\(reference)"
        let (resp, _) = try fetch("HEAD", "/v2/\(repo)/manifests/\(reference)", what: what, scopes: [Self.pullScope(repo)],
                                  headers: [("Accept", Self.manifestTypes.joined(separator: ", "))])
        if resp.status == 404 { return nil }
        guard resp.isSuccess else { throw failure(resp, what) }
        let d = resp.header("docker-content-digest").flatMap { try? Digest(parsing: $0.trimmingCharacters(in: .whitespaces)) }
        return (d ?? (try? Digest(parsing: reference)), resp.header("content-length").flatMap { Int64($0) } ?? -1)
    }

    /// Stores a manifest under `reference` (a tag or its digest); the registry's digest must be ours.
    public func putManifest(_ repo: String, _ reference: String, bytes: [UInt8], mediaType: String) throws {
        let what = "manifest \(repo):\(reference)"
        let (resp, _) = try fetch("PUT", "/v2/\(repo)/manifests/\(reference)", what: what, scopes: [Self.pushScope(repo)],
                                  headers: [("Content-Type", mediaType)], body: bytes, limit: 1 << 20)
        guard resp.isSuccess else { throw failure(resp, "storing \(what)") }
        let ours = Digest.of(bytes)
        if let h = resp.header("docker-content-digest"), let d = try? Digest(parsing: h.trimmingCharacters(in: .whitespaces)), d != ours {
            throw DogestryError.corrupt("registry \(endpoint.host) stored \(what) as \(d), not as its digest \(ours)")
        }
    }

    public func deleteManifest(_ repo: String, _ reference: String) throws {
        let what = "manifest \(repo):\(reference)"
        let (resp, _) = try fetch("DELETE", "/v2/\(repo)/manifests/\(reference)", what: what, scopes: [Self.pushScope(repo) + ",delete"])
        if resp.status == 404 { return }
        guard resp.isSuccess else { throw failure(resp, "deleting \(what)") }
    }

    // MARK: blobs

    /// The size of a blob, or nil when the repository lacks it (redirects followed as `fetch` does).
    public func headBlob(_ repo: String, _ d: Digest) throws -> Int64? {
        let what = "blob \(d) in \(repo)"
        let (resp, _) = try fetch("HEAD", "/v2/\(repo)/blobs/\(d)", what: what, scopes: [Self.pullScope(repo)])
        if resp.status == 404 { return nil }
        guard resp.isSuccess else { throw failure(resp, what) }
        return resp.header("content-length").flatMap { Int64($0) } ?? -1
    }

    static func resolve(_ location: String, against base: String) -> String {
        if location.hasPrefix("http://") || location.hasPrefix("https://") { return location }
        guard let b = URLComponents(string: base) else { return location }
        let origin = "\(b.scheme ?? "https")://\(b.host ?? "")" + (b.port.map { ":\($0)" } ?? "")
        return location.hasPrefix("/") ? origin + location : origin + "/" + location
    }

    /// Opens a blob (a manifest with `manifest`) for streaming, following redirects (credentials
    /// go only to the registry's own host); a dropped body resumes with `Range`.
    public func openBlob(_ repo: String, _ d: Digest, manifest: Bool = false) throws -> ByteSource {
        let what = "\(manifest ? "manifest" : "blob") \(d) in \(repo)"
        let kind = manifest ? "manifests" : "blobs"
        let first = url("/v2/\(repo)/\(kind)/\(d)")
        let extra: [(String, String)] = manifest ? [("Accept", Self.manifestTypes.joined(separator: ", "))] : []
        let get = { [self] (range: [(String, String)]) throws -> (HTTPResponse, ByteSource) in
            var target = first, own = true
            for _ in 0...Self.maxRedirects {
                let (resp, body): (HTTPResponse, StreamingBody)
                if own {
                    (resp, body) = try authorized(what, scopes: [Self.pullScope(repo)]) { authz in
                        try http.open(HTTPRequest(method: "GET", url: target, headers: extra + range + authz))
                    }
                } else {
                    (resp, body) = try Self.retry.run(what: what) { _ in
                        meter.request()
                        return try http.open(HTTPRequest(method: "GET", url: target, headers: range))
                    }
                }
                if Self.isRedirect(resp.status), let loc = resp.header("location") {
                    body.cancel()
                    (target, own) = try redirectTarget(loc, from: target, what: what)
                    continue
                }
                guard resp.isSuccess else { body.cancel(); throw failure(resp, what) }
                return (resp, MeteredSource(body, meter))
            }
            throw DogestryError(.remote, "registry \(endpoint.host): \(what): more than \(Self.maxRedirects) redirects")
        }
        let (resp, body) = try get([])
        return ResumingBody(response: resp, body: body, policy: Self.retry, what: "registry \(endpoint.host): \(what)") { from, end in
            try get([("Range", "bytes=\(from)-" + (end.map(String.init) ?? ""))])
        }
    }

    /// Makes blob `d` of repository `from` part of `repo` without moving its bytes (a
    /// cross-repository mount); false when the registry would rather have it uploaded.
    public func mount(_ repo: String, _ d: Digest, from: String) throws -> Bool {
        let what = "mounting blob \(d) from \(from) into \(repo)"
        let (resp, _) = try fetch("POST", "/v2/\(repo)/blobs/uploads/?mount=\(d)&from=\(from)", what: what,
                                  scopes: [Self.pushScope(repo), Self.pullScope(from)], body: [])
        if resp.status == 201 { return true }
        if resp.status == 202, let loc = resp.header("location") {
            // An upload was opened instead: close it, the caller uploads.
            _ = try? fetch("DELETE", Self.resolve(loc, against: url("/v2/")), what: what, scopes: [Self.pushScope(repo)])
            return false
        }
        throw failure(resp, what)
    }

    /// Uploads blob `d` (`size` bytes, read from a fresh `open()` each attempt): one POST, then
    /// one PUT with the body, or PATCHes of `chunkSize` when set (or the registry asks for
    /// chunks of at least `OCI-Chunk-Min-Length`). The registry checks the digest itself.
    public func uploadBlob(_ repo: String, _ d: Digest, size: Int64, open: () throws -> ByteSource) throws {
        // An upload that fails half-way starts again with a new session (the old one holds an
        // unknown part of the bytes); a refused one fails at once.
        var attempt = 0
        while true {
            do { return try uploadOnce(repo, d, size: size, open: open) } catch let e as DogestryError where e.cause?.isTransient == true && attempt < Self.retry.maxRetries {
                Self.retry.backoff(attempt); attempt += 1
            }
        }
    }

    func uploadOnce(_ repo: String, _ d: Digest, size: Int64, open: () throws -> ByteSource) throws {
        let what = "uploading blob \(d) to \(repo)"
        let scopes = [Self.pushScope(repo)]
        let once = RetryPolicy(maxRetries: 0)
        let (start, _) = try fetch("POST", "/v2/\(repo)/blobs/uploads/", what: what, scopes: scopes, body: [])
        guard start.status == 202, let loc0 = start.header("location") else { throw failure(start, what) }
        var location = Self.resolve(loc0, against: url("/v2/"))
        let minChunk = start.header("oci-chunk-min-length").flatMap { Int64($0) } ?? 0
        let chunk = chunkSize > 0 ? max(chunkSize, minChunk) : 0
        func withQuery(_ u: String, _ q: String) -> String { u + (u.contains("?") ? "&" : "?") + q }
        if chunk == 0 || size <= chunk {
            let (resp, _) = try authorized(what, scopes: scopes, policy: once) { authz in
                let src = try open()   // (again after a 401: the body is sent whole each time)
                return try http.fetch(HTTPRequest(method: "PUT", url: withQuery(location, "digest=\(d)"),
                                                  headers: [("Content-Type", "application/octet-stream")] + authz,
                                                  body: .source(MeteredSource(src, meter, sent: true), length: size)), limit: 1 << 20)
            }
            guard resp.isSuccess else { throw failure(resp, what) }
            return
        }
        // Chunks: a failed PATCH is not sent again blindly; the registry says how much it holds
        // (`Range: 0-LAST` on the upload's status), and the upload resumes after that.
        var offset: Int64 = 0
        var failures = 0
        while offset < size {
            let n = min(chunk, size - offset), start = offset, at = location
            do {
                let (resp, _) = try authorized(what, scopes: scopes, policy: once) { authz in
                    let src = try Self.open(open, at: start)   // (afresh after a 401 too)
                    return try http.fetch(HTTPRequest(method: "PATCH", url: at,
                                                      headers: [("Content-Type", "application/octet-stream"),
                                                                ("Content-Range", "\(start)-\(start + n - 1)")] + authz,
                                                      body: .source(MeteredSource(LimitedSource(src, limit: n), meter, sent: true), length: n)), limit: 1 << 20)
                }
                if RetryPolicy.isTransientStatus(resp.status) {
                    throw DogestryError(.remote, "registry \(endpoint.host): \(what): chunk at \(start) answered \(resp.status)", cause: .other)
                }
                guard resp.status == 202, let l = resp.header("location") else { throw failure(resp, what) }
                location = Self.resolve(l, against: url("/v2/"))
                offset += n
            } catch let e as DogestryError where e.cause != nil && (e.cause!.isTransient || e.cause == .other) && failures < Self.retry.maxRetries {
                Self.retry.backoff(failures); failures += 1
                (location, offset) = try uploadStatus(at, what: what, scopes: scopes)
            }
        }
        let (resp, _) = try fetch("PUT", withQuery(location, "digest=\(d)"), what: what, scopes: scopes, body: [])
        guard resp.isSuccess else { throw failure(resp, what) }
    }

    /// A fresh source from `open`, `offset` bytes in (a file seeks; anything else is read past).
    static func open(_ open: () throws -> ByteSource, at offset: Int64) throws -> ByteSource {
        let src = try open()
        try src.skip(offset, what: "the blob being uploaded")
        return src
    }

    /// Where an upload stands: its location and the next byte the registry wants (from the
    /// `Range: 0-LAST` of `GET` on the upload URL; none yet is 0).
    func uploadStatus(_ location: String, what: String, scopes: [String]) throws -> (location: String, offset: Int64) {
        let (resp, _) = try fetch("GET", location, what: what + " (upload status)", scopes: scopes)
        guard resp.status == 204 || resp.isSuccess else { throw failure(resp, what + " (upload status)") }
        let next = resp.header("location").map { Self.resolve($0, against: url("/v2/")) } ?? location
        guard let r = resp.header("range"), let dash = r.firstIndex(of: "-"), let last = Int64(r[r.index(after: dash)...].trimmingCharacters(in: .whitespaces)) else {
            return (next, 0)
        }
        return (next, max(0, last + 1))
    }

    // MARK: listings

    /// Every tag of `repo` (following `Link` pagination); nil when the repository is unknown.
    public func tags(_ repo: String) throws -> [String]? {
        var out: [String] = []
        var next: String? = "/v2/\(repo)/tags/list?n=1000"
        while let path = next {
            let (resp, body) = try fetch("GET", path, what: "tags of \(repo)", scopes: [Self.pullScope(repo)])
            if resp.status == 404 { return out.isEmpty ? nil : out }
            guard resp.isSuccess else { throw failure(resp, "listing the tags of \(repo)") }
            let obj = (try? JSONSerialization.jsonObject(with: Data(body))) as? [String: Any]
            out += (obj?["tags"] as? [String]) ?? []
            next = Self.nextLink(resp.header("link"))
        }
        return out
    }

    /// Every repository the registry lists (`/v2/_catalog`, paginated).
    public func catalog() throws -> [String] {
        var out: [String] = []
        var next: String? = "/v2/_catalog?n=1000"
        while let path = next {
            let (resp, body) = try fetch("GET", path, what: "catalog", scopes: ["registry:catalog:*"])
            guard resp.isSuccess else {
                var e = failure(resp, "listing repositories (/v2/_catalog)")
                if resp.status == 404 || resp.status == 401 || resp.status == 403 {
                    e = DogestryError(.unsupported, e.message + "; this registry does not list its repositories: name the images")
                }
                throw e
            }
            let obj = (try? JSONSerialization.jsonObject(with: Data(body))) as? [String: Any]
            out += (obj?["repositories"] as? [String]) ?? []
            next = Self.nextLink(resp.header("link"))
        }
        return out
    }

    /// The target of a `Link: <…>; rel="next"` header.
    static func nextLink(_ header: String?) -> String? {
        guard let h = header else { return nil }
        for part in h.split(separator: ",") where part.contains("rel=\"next\"") || part.contains("rel=next") {
            guard let a = part.firstIndex(of: "<"), let b = part.firstIndex(of: ">"), a < b else { continue }
            return String(part[part.index(after: a)..<b])
        }
        return nil
    }
}
