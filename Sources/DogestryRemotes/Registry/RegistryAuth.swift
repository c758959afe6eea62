import DogestryCore
import DogestryHTTP
import Foundation

/// Credentials for one registry, as Docker and skopeo keep them. Never printed: `description`
/// names only the user and where the credentials came from.
public struct RegistryCredentials: Sendable, Equatable, CustomStringConvertible {
    public var username: String
    public var password: String
    /// An OAuth2 refresh token (`identitytoken` in config.json, or a helper's `<token>` user):
    /// exchanged at the token endpoint instead of a password.
    public var identityToken: String?
    /// Where they came from, for messages (`--creds`, `~/.docker/config.json`, `docker-credential-pass`).
    public var origin: String

    public init(username: String, password: String, identityToken: String? = nil, origin: String) {
        self.username = username; self.password = password; self.identityToken = identityToken; self.origin = origin
    }

    public var description: String { identityToken != nil ? "an identity token from \(origin)" : "user \(username) from \(origin)" }

    /// `USER:PASS` as `--creds` takes it (the password may contain `:`).
    public static func parse(_ s: String, origin: String) throws -> RegistryCredentials {
        guard let i = s.firstIndex(of: ":"), i != s.startIndex else {
            throw DogestryError(.config, "\(origin) must be USER:PASSWORD")
        }
        return RegistryCredentials(username: String(s[..<i]), password: String(s[s.index(after: i)...]), origin: origin)
    }

    var basicHeader: String { "Basic " + Data("\(username):\(password)".utf8).base64EncodedString() }
}

/// Finds a registry's credentials where Docker, Podman and skopeo look:
/// `--creds` first, then `REGISTRY_AUTH_FILE`, then `$DOCKER_CONFIG/config.json` (default
/// `~/.docker/config.json`: its `credHelpers` entry for the host, its `auths` entry, its
/// `credsStore`), then Podman's `$XDG_RUNTIME_DIR/containers/auth.json`. None found: anonymous.
public struct RegistryCredentialStore: Sendable {
    public var explicit: RegistryCredentials?
    public var environment: [String: String]
    public var home: String

    public init(explicit: RegistryCredentials? = nil, environment: [String: String], home: String) {
        self.explicit = explicit; self.environment = environment; self.home = home
    }

    /// The keys an auth file may file `host` under (Docker Hub's is its v1 index URL).
    static func authKeys(_ host: String) -> [String] {
        if RegistryEndpoint.isDockerHub(host) {
            return ["https://index.docker.io/v1/", "index.docker.io", "docker.io", "registry-1.docker.io", "https://registry-1.docker.io"]
        }
        return [host, "https://\(host)", "http://\(host)", "https://\(host)/v1/", "https://\(host)/v2/"]
    }

    /// The credentials for `host` (`HOST[:PORT]`, as in the remote's URL), or nil for anonymous access.
    public func lookup(host: String) throws -> RegistryCredentials? {
        if let explicit { return explicit }
        var files: [String] = []
        if let f = environment["REGISTRY_AUTH_FILE"], !f.isEmpty { files.append(f) }
        let dockerDir = environment["DOCKER_CONFIG"].flatMap { $0.isEmpty ? nil : $0 } ?? home + "/.docker"
        files.append(dockerDir + "/config.json")
        if let x = environment["XDG_RUNTIME_DIR"], !x.isEmpty { files.append(x + "/containers/auth.json") }
        for f in files where FS.exists(f) {
            if let c = try lookup(host: host, file: f) { return c }
        }
        return nil
    }

    func lookup(host: String, file: String) throws -> RegistryCredentials? {
        let bytes: [UInt8]
        do { bytes = try FileSource(path: file).readAll(limit: 4 << 20, what: file) } catch let e as DogestryError {
            throw DogestryError(.config, "cannot read registry credentials: \(e.message)")
        }
        guard let obj = (try? JSONSerialization.jsonObject(with: Data(bytes))) as? [String: Any] else {
            throw DogestryError(.config, "\(file) is not valid JSON")
        }
        let keys = Self.authKeys(host)
        if let helpers = obj["credHelpers"] as? [String: Any] {
            for k in keys { if let h = helpers[k] as? String, !h.isEmpty { return try runHelper(h, host: host, key: k) } }
        }
        if let auths = obj["auths"] as? [String: Any] {
            for k in keys {
                guard let entry = auths[k] as? [String: Any] else { continue }
                let origin = file.replacingOccurrences(of: home, with: "~")
                if let tok = entry["identitytoken"] as? String, !tok.isEmpty {
                    return RegistryCredentials(username: entry["username"] as? String ?? "", password: "", identityToken: tok, origin: origin)
                }
                if let a = entry["auth"] as? String, !a.isEmpty {
                    guard let d = Data(base64Encoded: a), let s = String(data: d, encoding: .utf8) else {
                        throw DogestryError(.config, "\(origin): the auth entry for \(k) is not base64 USER:PASSWORD")
                    }
                    return try RegistryCredentials.parse(s, origin: origin)
                }
                if let u = entry["username"] as? String, let p = entry["password"] as? String {
                    return RegistryCredentials(username: u, password: p, origin: origin)
                }
                // An entry with no credentials (credsStore keeps them) falls through to the store.
            }
        }
        if let store = obj["credsStore"] as? String, !store.isEmpty {
            return try runHelper(store, host: host, key: keys[0])
        }
        return nil
    }

    private static let ignoreBrokenPipes: Void = { signal(SIGPIPE, SIG_IGN); return () }()

    /// Asks `docker-credential-NAME get` for `key`'s credentials (the protocol Docker uses).
    func runHelper(_ name: String, host: String, key: String) throws -> RegistryCredentials? {
        let program = "docker-credential-" + name
        guard name.allSatisfy({ $0.isLetter || $0.isNumber || $0 == "-" || $0 == "_" || $0 == "." }) else {
            throw DogestryError(.config, "credential helper name \"\(name)\" is not valid")
        }
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        p.arguments = [program, "get"]
        var env = environment
        env["PATH"] = env["PATH"] ?? "/usr/local/bin:/usr/bin:/bin"
        p.environment = env
        let stdin = Pipe(), stdout = Pipe(), stderr = Pipe()
        p.standardInput = stdin; p.standardOutput = stdout; p.standardError = stderr
        do { try p.run() } catch {
            throw DogestryError(.config, "cannot run credential helper \(program): \(error.localizedDescription)")
        }
        // A helper may exit without reading its input: a broken pipe here is its answer, not ours
        // (EPIPE, with SIGPIPE ignored as the CLI ignores it).
        _ = Self.ignoreBrokenPipes
        try? stdin.fileHandleForWriting.write(contentsOf: Data(key.utf8))
        try? stdin.fileHandleForWriting.close()
        let out = stdout.fileHandleForReading.readDataToEndOfFile()
        _ = stderr.fileHandleForReading.readDataToEndOfFile()
        p.waitUntilExit()
        let text = String(decoding: out, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
        if p.terminationStatus != 0 {
            // The helpers' agreed answer for "nothing stored": anonymous access.
            if text.localizedCaseInsensitiveContains("credentials not found") { return nil }
            throw DogestryError(.auth, "credential helper \(program) failed for \(host) (exit \(p.terminationStatus))")
        }
        guard let obj = (try? JSONSerialization.jsonObject(with: Data(text.utf8))) as? [String: Any],
              let user = obj["Username"] as? String, let secret = obj["Secret"] as? String else {
            throw DogestryError(.auth, "credential helper \(program) gave no Username and Secret for \(host)")
        }
        if user == "<token>" { return RegistryCredentials(username: "", password: "", identityToken: secret, origin: program) }
        return RegistryCredentials(username: user, password: secret, origin: program)
    }
}

/// One `WWW-Authenticate` challenge: its scheme and parameters (`realm`, `service`, `scope`, `error`).
public struct AuthChallenge: Sendable, Equatable {
    public var scheme: String
    public var parameters: [String: String]

    /// Parses the first challenge of a header value (`Bearer realm="…",service="…",scope="…"`).
    public static func parse(_ header: String) -> AuthChallenge? {
        let s = header.trimmingCharacters(in: .whitespaces)
        guard let sp = s.firstIndex(where: { $0 == " " }) else {
            return s.isEmpty ? nil : AuthChallenge(scheme: s.lowercased(), parameters: [:])
        }
        let scheme = String(s[..<sp]).lowercased()
        var params: [String: String] = [:]
        var rest = Substring(s[sp...])
        while true {
            rest = rest.drop(while: { $0 == " " || $0 == "," })
            guard let eq = rest.firstIndex(of: "=") else { break }
            let key = rest[..<eq].trimmingCharacters(in: .whitespaces).lowercased()
            rest = rest[rest.index(after: eq)...]
            var value = ""
            if rest.first == "\"" {
                rest = rest.dropFirst()
                var escaped = false
                while let c = rest.first {
                    rest = rest.dropFirst()
                    if escaped { value.append(c); escaped = false } else if c == "\\" { escaped = true } else if c == "\"" { break } else { value.append(c) }
                }
            } else {
                let end = rest.firstIndex(of: ",") ?? rest.endIndex
                value = rest[..<end].trimmingCharacters(in: .whitespaces)
                rest = rest[end...]
            }
            if !key.isEmpty { params[key] = value }
        }
        return AuthChallenge(scheme: scheme, parameters: params)
    }
}

/// Authorisation for one registry, as Docker does it: nothing until the registry asks; then HTTP
/// basic, or a bearer token from the challenge's realm for the scopes a request needs (fetched
/// with the credentials, kept until shortly before it expires, fetched again when refused).
final class RegistryAuthenticator: @unchecked Sendable {  // (state behind `lock`)
    let host: String
    let credentials: RegistryCredentials?
    let http: HTTPClient
    let meter: TrafficMeter
    private let lock = NSLock()
    private var challenge: AuthChallenge?
    private var tokens: [String: (token: String, expires: Date)] = [:]

    init(host: String, credentials: RegistryCredentials?, http: HTTPClient, meter: TrafficMeter) {
        self.host = host; self.credentials = credentials; self.http = http; self.meter = meter
    }

    /// The `Authorization` header for a request needing `scopes`, fetching a token if the
    /// registry uses tokens and none is held; nil before the registry has asked for anything.
    func header(scopes: [String]) throws -> String? {
        lock.lock()
        let ch = challenge
        let key = scopes.sorted().joined(separator: " ")
        let held = tokens[key]
        lock.unlock()
        guard let ch else { return nil }
        switch ch.scheme {
        case "basic":
            return credentials.map { $0.basicHeader }
        case "bearer":
            if let held, held.expires > Date() { return "Bearer " + held.token }
            return "Bearer " + (try fetchToken(ch, scopes: scopes, key: key))
        default:
            throw DogestryError(.unsupported, "registry \(host) asks for \(ch.scheme) authentication, which dogestry does not speak (basic and bearer tokens)")
        }
    }

    /// Takes a 401's challenge; returns whether retrying can help (a new challenge, or a held
    /// token that may have expired early, now dropped).
    func refused(_ resp: HTTPResponse, scopes: [String], hadAuthorization: Bool) -> Bool {
        guard let h = resp.header("www-authenticate"), let ch = AuthChallenge.parse(h) else { return false }
        lock.lock(); defer { lock.unlock() }
        let key = scopes.sorted().joined(separator: " ")
        let first = challenge == nil || challenge?.scheme != ch.scheme || challenge?.parameters["realm"] != ch.parameters["realm"]
        challenge = ch
        if ch.scheme == "basic" { return first && credentials != nil }
        if ch.parameters["error"] == "insufficient_scope" && hadAuthorization { return false }
        if tokens.removeValue(forKey: key) != nil { return true }
        return !hadAuthorization
    }

    /// Fetches a bearer token for `scopes` from the challenge's realm.
    func fetchToken(_ ch: AuthChallenge, scopes: [String], key: String) throws -> String {
        guard let realm = ch.parameters["realm"], realm.hasPrefix("https://") || realm.hasPrefix("http://") else {
            throw DogestryError(.auth, "registry \(host) asks for a bearer token but names no http(s) realm")
        }
        var query: [String] = []
        if let s = ch.parameters["service"] { query.append("service=" + Self.formEscape(s)) }
        for s in scopes { query.append("scope=" + Self.formEscape(s)) }
        let realmHost = URLComponents(string: realm)?.host ?? realm
        var req: HTTPRequest
        if let c = credentials, let refresh = c.identityToken {
            var form = ["grant_type=refresh_token", "refresh_token=" + Self.formEscape(refresh), "client_id=dogestry"]
            form += query
            req = HTTPRequest(method: "POST", url: realm, headers: [("Content-Type", "application/x-www-form-urlencoded")],
                              body: .bytes(Array(form.joined(separator: "&").utf8)))
        } else {
            let sep = realm.contains("?") ? "&" : "?"
            req = HTTPRequest(method: "GET", url: query.isEmpty ? realm : realm + sep + query.joined(separator: "&"))
            if let c = credentials { req.headers.append(("Authorization", c.basicHeader)) }
        }
        meter.request()
        let (resp, body): (HTTPResponse, [UInt8])
        do { (resp, body) = try RegistryClient.retry.run(what: "token server \(realmHost)") { _ in try http.fetch(req, limit: 1 << 20) } } catch let e as DogestryError {
            throw e.prefixed("registry \(host): token server \(realmHost)")
        }
        meter.received(Int64(body.count))
        guard resp.isSuccess else {
            if resp.status == 401 {
                throw DogestryError(.auth, credentials.map { "registry \(host): wrong credentials: the token server \(realmHost) refused \($0) (\(resp.status))" }
                                    ?? "registry \(host): the token server \(realmHost) refused anonymous access (\(resp.status)); give credentials (--creds, docker login)")
            }
            if resp.status == 403 {
                throw DogestryError(.auth, "registry \(host): not allowed: the token server \(realmHost) gives \(credentials.map { "\($0)" } ?? "anonymous access") no token for \(scopes.joined(separator: " ")) (\(resp.status))")
            }
            throw DogestryError(.remote, "registry \(host): the token server \(realmHost) answered \(HTTPStatus.name(resp.status)) (\(resp.status))")
        }
        guard let obj = (try? JSONSerialization.jsonObject(with: Data(body))) as? [String: Any],
              let token = (obj["token"] as? String) ?? (obj["access_token"] as? String), !token.isEmpty else {
            throw DogestryError(.auth, "registry \(host): the token server \(realmHost) sent no token")
        }
        // Tokens say how long they last (60 s when they don't); renew 10 s early.
        let ttl = (obj["expires_in"] as? NSNumber)?.doubleValue ?? 60
        lock.lock(); tokens[key] = (token, Date().addingTimeInterval(max(1, ttl - 10))); lock.unlock()
        return token
    }

    static func formEscape(_ s: String) -> String {
        var allowed = CharacterSet.alphanumerics
        allowed.insert(charactersIn: "-._~")
        return s.addingPercentEncoding(withAllowedCharacters: allowed) ?? s
    }
}
