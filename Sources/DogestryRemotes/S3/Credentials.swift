import DogestryCore
import DogestryHTTP
import Foundation

/// Something that supplies AWS credentials (possibly fetching and refreshing them).
public protocol AWSCredentialProvider: AnyObject, Sendable {
    func credentials() throws -> AWSCredentials
    /// Where the credentials come from, safe to print (never contains a secret).
    var sourceDescription: String { get }
}

/// Fixed credentials.
public final class AWSStaticCredentialProvider: AWSCredentialProvider {
    public let value: AWSCredentials
    public let sourceDescription: String
    public init(_ credentials: AWSCredentials, sourceDescription: String = "static credentials") {
        self.value = credentials
        self.sourceDescription = sourceDescription
    }
    public func credentials() throws -> AWSCredentials { value }
}

/// The AWS SDK credential chain, in order:
///
/// 1. explicit: config `[s3] access-key-id` / `secret-key` / `session-token`;
/// 2. environment: `AWS_ACCESS_KEY_ID` / `AWS_SECRET_ACCESS_KEY` / `AWS_SESSION_TOKEN`, then the
///    original dogestry's `AWS_ACCESS_KEY` / `AWS_SECRET_KEY`;
/// 3. a profile (config `[s3] profile`, else `AWS_PROFILE`, else `default`) in the shared
///    credentials file (`AWS_SHARED_CREDENTIALS_FILE`, default `~/.aws/credentials`) and the
///    config file (`AWS_CONFIG_FILE`, default `~/.aws/config`, `[profile NAME]` sections);
///    keys in the credentials file win;
/// 4. container credentials (`AWS_CONTAINER_CREDENTIALS_RELATIVE_URI` against
///    `http://169.254.170.2`, or `AWS_CONTAINER_CREDENTIALS_FULL_URI`), with
///    `AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE` / `AWS_CONTAINER_AUTHORIZATION_TOKEN` as the
///    Authorization header;
/// 5. the EC2 instance profile via IMDSv2 (`AWS_EC2_METADATA_SERVICE_ENDPOINT`, default
///    `http://169.254.169.254`; skipped when `AWS_EC2_METADATA_DISABLED=true`), with 1-second
///    timeouts so a host that is not on EC2 fails fast.
///
/// A named profile that does not exist, a half-set key pair, or a container endpoint that
/// fails is an error (naming the source) rather than a reason to try the next source.
public final class AWSCredentialChain: AWSCredentialProvider, @unchecked Sendable {
    /// Temporary credentials are refreshed this many seconds before they expire.
    public static let refreshWindow: TimeInterval = 300
    /// The default instance metadata endpoint and the container credentials host.
    public static let defaultIMDSEndpoint = "http://169.254.169.254"
    public static let containerHost = "http://169.254.170.2"

    let explicit: [String: String]
    let environment: [String: String]
    let home: String
    /// The clock (tests may replace it).
    var now: () -> Date = Date.init

    private let lock = NSLock()
    private var cached: AWSCredentials?
    private var cachedSource: Source?
    private var cachedDescription: String?
    /// Instance metadata answers within milliseconds when present: fail fast when it is not.
    static let metadataTransport = HTTPTransportOptions(connectTimeout: 1, lowSpeedTimeout: 1, userAgent: "dogestry")
    static let containerTransport = HTTPTransportOptions(connectTimeout: 2, lowSpeedTimeout: 5, userAgent: "dogestry")
    private let metadataHTTP = HTTPClient(options: AWSCredentialChain.metadataTransport)
    private let containerHTTP = HTTPClient(options: AWSCredentialChain.containerTransport)
    /// Why the last instance-metadata probe found no endpoint (nil: it was answered or not made).
    private(set) var metadataUnreachable: TransportCause?

    enum Source { case explicit, environment, profile, container, instanceMetadata }

    /// `explicit` holds the `[s3]` config values (`access-key-id`, `secret-key`,
    /// `session-token`, `profile`); `environment` the process environment; `home` the home
    /// directory (for `~/.aws`).
    public init(explicit: [String: String], environment: [String: String], home: String) {
        self.explicit = explicit
        self.environment = environment
        self.home = home
    }

    public var sourceDescription: String {
        lock.lock(); defer { lock.unlock() }
        return cachedDescription ?? "AWS credential chain (not resolved yet)"
    }

    /// Resolves once and caches; temporary credentials are fetched again (from the source
    /// that supplied them) `refreshWindow` seconds before their expiration. If a refresh fails
    /// while the cached credentials have not expired yet, those are returned.
    public func credentials() throws -> AWSCredentials {
        lock.lock(); defer { lock.unlock() }
        if let c = cached, let source = cachedSource {
            guard let exp = c.expiration, exp.timeIntervalSince(now()) < Self.refreshWindow else { return c }
            do {
                if let (fresh, desc) = try fetch(from: source) {
                    cached = fresh
                    cachedDescription = desc
                    return fresh
                }
            } catch {
                if exp > now() { return c }
                throw error
            }
            if exp > now() { return c }
            // The source no longer has credentials: start over.
            cached = nil; cachedSource = nil; cachedDescription = nil
        }
        for source in [Source.explicit, .environment, .profile, .container, .instanceMetadata] {
            if let (c, desc) = try fetch(from: source) {
                cached = c
                cachedSource = source
                cachedDescription = desc
                return c
            }
        }
        throw DogestryError(.auth, "no AWS credentials found (tried: \(triedList()))")
    }

    func triedList() -> String {
        var tried = ["config [s3]", "environment",
                     "profile \"\(profileName().name)\" in \(display(credentialsFile, envName: "AWS_SHARED_CREDENTIALS_FILE"))",
                     "container credentials"]
        if metadataDisabled {
            return tried.joined(separator: ", ") + "; EC2 instance metadata disabled by AWS_EC2_METADATA_DISABLED"
        }
        tried.append("EC2 instance metadata")
        return tried.joined(separator: ", ")
    }

    private func fetch(from source: Source) throws -> (AWSCredentials, String)? {
        switch source {
        case .explicit: return try fromExplicit()
        case .environment: return try fromEnvironment()
        case .profile: return try fromProfile()
        case .container: return try fromContainer()
        case .instanceMetadata: return try fromInstanceMetadata()
        }
    }

    // MARK: helpers

    private func env(_ name: String) -> String? {
        guard let v = environment[name]?.trimmingCharacters(in: .whitespacesAndNewlines), !v.isEmpty else { return nil }
        return v
    }

    private func value(_ dict: [String: String], _ key: String) -> String? {
        guard let v = dict[key]?.trimmingCharacters(in: .whitespaces), !v.isEmpty else { return nil }
        return v
    }

    var credentialsFile: String { env("AWS_SHARED_CREDENTIALS_FILE").map(expandTilde) ?? home + "/.aws/credentials" }
    var configFile: String { env("AWS_CONFIG_FILE").map(expandTilde) ?? home + "/.aws/config" }

    private func expandTilde(_ p: String) -> String {
        p == "~" ? home : p.hasPrefix("~/") ? home + p.dropFirst() : p
    }

    /// The file as users know it: `~/.aws/credentials` unless overridden by the environment.
    private func display(_ path: String, envName: String) -> String {
        if env(envName) != nil { return path }
        return path.hasPrefix(home + "/") && !home.isEmpty ? "~" + path.dropFirst(home.count) : path
    }

    /// The profile to use and whether it was named explicitly (config or environment).
    func profileName() -> (name: String, named: Bool) {
        if let p = value(explicit, "profile") { return (p, true) }
        if let p = env("AWS_PROFILE") ?? env("AWS_DEFAULT_PROFILE") { return (p, true) }
        return ("default", false)
    }

    var metadataDisabled: Bool { env("AWS_EC2_METADATA_DISABLED")?.lowercased() == "true" }

    // MARK: sources

    private func fromExplicit() throws -> (AWSCredentials, String)? {
        let id = value(explicit, "access-key-id"), secret = value(explicit, "secret-key")
        let token = value(explicit, "session-token")
        switch (id, secret) {
        case let (id?, secret?):
            return (AWSCredentials(accessKeyID: id, secretAccessKey: secret, sessionToken: token), "config [s3]")
        case (_?, nil): throw DogestryError(.config, "[s3] access-key-id is set but secret-key is not")
        case (nil, _?): throw DogestryError(.config, "[s3] secret-key is set but access-key-id is not")
        case (nil, nil):
            if token != nil { throw DogestryError(.config, "[s3] session-token is set without access-key-id and secret-key") }
            return nil
        }
    }

    private func fromEnvironment() throws -> (AWSCredentials, String)? {
        for (idName, secretName) in [("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"), ("AWS_ACCESS_KEY", "AWS_SECRET_KEY")] {
            let id = env(idName), secret = env(secretName)
            switch (id, secret) {
            case let (id?, secret?):
                var expiration: Date? = nil
                if let e = env("AWS_CREDENTIAL_EXPIRATION") {
                    guard let d = parseAWSDate(e) else {
                        throw DogestryError(.config, "AWS_CREDENTIAL_EXPIRATION is not an ISO 8601 time: \"\(e.prefix(40))\"")
                    }
                    expiration = d
                }
                let token = env("AWS_SESSION_TOKEN") ?? env("AWS_SECURITY_TOKEN")
                return (AWSCredentials(accessKeyID: id, secretAccessKey: secret, sessionToken: token, expiration: expiration),
                        "environment (\(idName))")
            case (_?, nil): throw DogestryError(.config, "\(idName) is set but \(secretName) is not")
            case (nil, _?): throw DogestryError(.config, "\(secretName) is set but \(idName) is not")
            case (nil, nil): continue
            }
        }
        return nil
    }

    private func fromProfile() throws -> (AWSCredentials, String)? {
        let (name, named) = profileName()
        let credPath = credentialsFile, cfgPath = configFile
        let credProfiles = try AWSSharedConfig.load(credPath, isConfigFile: false)
        let cfgProfiles = try AWSSharedConfig.load(cfgPath, isConfigFile: true)
        let fromCred = credProfiles[name], fromCfg = cfgProfiles[name]
        guard fromCred != nil || fromCfg != nil else {
            if named {
                throw DogestryError(.config, "AWS profile \"\(name)\" not found in \(display(credPath, envName: "AWS_SHARED_CREDENTIALS_FILE")) or \(display(cfgPath, envName: "AWS_CONFIG_FILE"))")
            }
            return nil
        }
        // Keys from the credentials file win over the config file.
        var merged = fromCfg ?? [:]
        for (k, v) in fromCred ?? [:] { merged[k] = v }
        let origin: String = {
            if fromCred.map({ value($0, "aws_access_key_id") != nil }) ?? false || fromCfg == nil {
                return display(credPath, envName: "AWS_SHARED_CREDENTIALS_FILE")
            }
            return display(cfgPath, envName: "AWS_CONFIG_FILE")
        }()
        let id = value(merged, "aws_access_key_id"), secret = value(merged, "aws_secret_access_key")
        switch (id, secret) {
        case let (id?, secret?):
            let token = value(merged, "aws_session_token") ?? value(merged, "aws_security_token")
            return (AWSCredentials(accessKeyID: id, secretAccessKey: secret, sessionToken: token),
                    "profile \"\(name)\" in \(origin)")
        case (_?, nil):
            throw DogestryError(.config, "AWS profile \"\(name)\" in \(origin) has aws_access_key_id but no aws_secret_access_key")
        case (nil, _?):
            throw DogestryError(.config, "AWS profile \"\(name)\" in \(origin) has aws_secret_access_key but no aws_access_key_id")
        case (nil, nil):
            for (key, what) in [("credential_process", "credential_process"), ("role_arn", "role_arn (assume role)"),
                                ("web_identity_token_file", "web_identity_token_file"), ("sso_session", "SSO"),
                                ("sso_start_url", "SSO")] where value(merged, key) != nil {
                throw DogestryError(.unsupported,
                                    "AWS profile \"\(name)\" uses \(what), which dogestry does not support; give it aws_access_key_id and aws_secret_access_key, or export temporary credentials in the environment")
            }
            // A profile with settings but no keys (e.g. only a region): go on.
            return nil
        }
    }

    private func fromContainer() throws -> (AWSCredentials, String)? {
        let url: String
        if let rel = env("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI") {
            url = Self.containerHost + (rel.hasPrefix("/") ? rel : "/" + rel)
        } else if let full = env("AWS_CONTAINER_CREDENTIALS_FULL_URI") {
            guard Self.allowedContainerURL(full) else {
                throw DogestryError(.config, "AWS_CONTAINER_CREDENTIALS_FULL_URI \(redactedURL(full)) must use https or a loopback host")
            }
            url = full
        } else {
            return nil
        }
        let shown = redactedURL(url)
        var headers: [(String, String)] = [("Accept", "application/json")]
        if let file = env("AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE") {
            guard let data = FileManager.default.contents(atPath: expandTilde(file)) else {
                throw DogestryError(.auth, "cannot read AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE \(file)")
            }
            let token = String(decoding: data, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
            guard !token.contains("\n"), !token.contains("\r") else {
                throw DogestryError(.auth, "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE \(file) holds more than one line")
            }
            headers.append(("Authorization", token))
        } else if let token = env("AWS_CONTAINER_AUTHORIZATION_TOKEN") {
            guard !token.contains("\n"), !token.contains("\r") else {
                throw DogestryError(.auth, "AWS_CONTAINER_AUTHORIZATION_TOKEN contains a line break")
            }
            headers.append(("Authorization", token))
        }
        let what = "container credentials from \(shown)"
        let resp: HTTPResponse, body: [UInt8]
        do {
            (resp, body) = try containerHTTP.fetch(HTTPRequest(method: "GET", url: url, headers: headers), limit: 1 << 20)
        } catch let e as DogestryError {
            throw DogestryError(.auth, "cannot get \(what): \(e.message)", cause: e.cause)
        }
        guard resp.status == 200 else {
            throw DogestryError(.auth, "cannot get \(what): HTTP \(resp.status)")
        }
        return (try parseCredentialsJSON(body, what: what), "container credentials (\(shown))")
    }

    static func allowedContainerURL(_ url: String) -> Bool {
        let lower = url.lowercased()
        if lower.hasPrefix("https://") { return true }
        guard lower.hasPrefix("http://") else { return false }
        var authority = lower.dropFirst(7).prefix { $0 != "/" && $0 != "?" && $0 != "#" }
        if let at = authority.lastIndex(of: "@") { authority = authority[authority.index(after: at)...] }
        let host: Substring
        if authority.hasPrefix("[") {
            host = authority.prefix { $0 != "]" }.dropFirst()
        } else {
            host = authority.prefix { $0 != ":" }
        }
        var v4 = in_addr()
        let loopbackV4 = host.hasPrefix("127.") && inet_pton(AF_INET, String(host), &v4) == 1
        return host == "localhost" || loopbackV4 || host == "::1" || host == "169.254.170.2"
            || host == "169.254.170.23" || host == "fd00:ec2::23"
    }

    private func fromInstanceMetadata() throws -> (AWSCredentials, String)? {
        if metadataDisabled { return nil }
        var base = env("AWS_EC2_METADATA_SERVICE_ENDPOINT") ?? Self.defaultIMDSEndpoint
        while base.hasSuffix("/") { base.removeLast() }
        let shown = redactedURL(base)

        // IMDSv2 session token. No answer at all means "not on EC2": not an error.
        var tokenHeader: [(String, String)] = []
        do {
            let (resp, body) = try metadataHTTP.fetch(HTTPRequest(method: "PUT", url: base + "/latest/api/token",
                                                          headers: [("X-aws-ec2-metadata-token-ttl-seconds", "21600")]),
                                              limit: 64 << 10)
            switch resp.status {
            case 200:
                let token = String(decoding: body, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
                guard !token.isEmpty else {
                    throw DogestryError(.auth, "EC2 instance metadata at \(shown) returned an empty session token")
                }
                tokenHeader = [("X-aws-ec2-metadata-token", token)]
            case 403, 404, 405:
                break  // IMDSv1 only (or disabled): try without a token, as the AWS SDKs do
            default:
                throw DogestryError(.auth, "EC2 instance metadata at \(shown): session token request failed with HTTP \(resp.status)")
            }
        } catch let e as DogestryError where e.kind == .remote {
            metadataUnreachable = e.cause
            return nil  // unreachable (cannot connect, timeout…): not on EC2
        } catch let e as DogestryError where e.kind != .auth {
            throw DogestryError(.auth, "EC2 instance metadata at \(shown): \(e.message)")
        }

        let listURL = base + "/latest/meta-data/iam/security-credentials/"
        let (listResp, listBody) = try metadataGET(listURL, headers: tokenHeader, shown: shown)
        if listResp.status == 404 { return nil }  // no instance profile attached
        guard listResp.status == 200 else {
            throw DogestryError(.auth, "EC2 instance metadata at \(shown): listing IAM roles failed with HTTP \(listResp.status)")
        }
        guard let role = String(decoding: listBody, as: UTF8.self).split(whereSeparator: \.isNewline)
            .map({ $0.trimmingCharacters(in: .whitespaces) }).first(where: { !$0.isEmpty }) else {
            return nil
        }
        guard !role.contains("/"), !role.contains("?"), !role.contains("#") else {
            throw DogestryError(.auth, "EC2 instance metadata at \(shown) returned an invalid IAM role name")
        }
        let (resp, body) = try metadataGET(listURL + role, headers: tokenHeader, shown: shown)
        guard resp.status == 200 else {
            throw DogestryError(.auth, "EC2 instance metadata at \(shown): credentials of IAM role \(role) failed with HTTP \(resp.status)")
        }
        let what = "EC2 instance metadata at \(shown) (IAM role \(role))"
        return (try parseCredentialsJSON(body, what: what), what)
    }

    private func metadataGET(_ url: String, headers: [(String, String)], shown: String) throws -> (HTTPResponse, [UInt8]) {
        do {
            return try metadataHTTP.fetch(HTTPRequest(method: "GET", url: url, headers: headers), limit: 1 << 20)
        } catch let e as DogestryError {
            throw DogestryError(.auth, "EC2 instance metadata at \(shown): \(e.message)")
        }
    }

    /// Parses the JSON both metadata services answer with (AccessKeyId, SecretAccessKey,
    /// Token, Expiration; IMDS adds Code).
    private func parseCredentialsJSON(_ body: [UInt8], what: String) throws -> AWSCredentials {
        guard let obj = try? JSONSerialization.jsonObject(with: Data(body)) as? [String: Any] else {
            throw DogestryError(.auth, "\(what): the answer is not a JSON object")
        }
        if let code = obj["Code"] as? String, code != "Success" {
            throw DogestryError(.auth, "\(what): Code is \"\(code.prefix(60))\", not Success")
        }
        guard let id = obj["AccessKeyId"] as? String, !id.isEmpty,
              let secret = obj["SecretAccessKey"] as? String, !secret.isEmpty else {
            throw DogestryError(.auth, "\(what): the answer lacks AccessKeyId or SecretAccessKey")
        }
        let token = (obj["Token"] as? String).flatMap { $0.isEmpty ? nil : $0 }
        var expiration: Date? = nil
        if let e = obj["Expiration"] as? String, !e.isEmpty {
            guard let d = parseAWSDate(e) else {
                throw DogestryError(.auth, "\(what): Expiration \"\(e.prefix(40))\" is not an ISO 8601 time")
            }
            expiration = d
        }
        return AWSCredentials(accessKeyID: id, secretAccessKey: secret, sessionToken: token, expiration: expiration)
    }
}

/// Parses an ISO 8601 time as AWS writes them (`2024-05-01T12:00:00Z`, optionally with
/// fractional seconds or a numeric offset).
func parseAWSDate(_ s: String) -> Date? {
    let f = ISO8601DateFormatter()
    f.formatOptions = [.withInternetDateTime]
    if let d = f.date(from: s) { return d }
    f.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
    return f.date(from: s)
}

/// The AWS shared config / credentials files (INI: `[section]`, `key = value`, `#`/`;`
/// comments; indented lines belong to a nested setting and are ignored).
enum AWSSharedConfig {
    /// Profiles by name. In the config file a profile is `[profile NAME]` (or `[default]`);
    /// in the credentials file `[NAME]`. A missing file has no profiles.
    static func load(_ path: String, isConfigFile: Bool) throws -> [String: [String: String]] {
        guard FileManager.default.fileExists(atPath: path) else { return [:] }
        guard let data = FileManager.default.contents(atPath: path) else {
            throw DogestryError.io("cannot read AWS \(isConfigFile ? "config" : "credentials") file \(path)")
        }
        return parse(String(decoding: data, as: UTF8.self), isConfigFile: isConfigFile)
    }

    static func parse(_ text: String, isConfigFile: Bool) -> [String: [String: String]] {
        var out: [String: [String: String]] = [:]
        var current: String? = nil
        for rawLine in text.split(omittingEmptySubsequences: false, whereSeparator: \.isNewline) {
            let line = rawLine.trimmingCharacters(in: .whitespaces)
            if line.isEmpty || line.hasPrefix("#") || line.hasPrefix(";") { continue }
            if rawLine.first == " " || rawLine.first == "\t" { continue }  // nested value
            if line.hasPrefix("[") {
                guard line.hasSuffix("]") else { current = nil; continue }
                let section = line.dropFirst().dropLast().trimmingCharacters(in: .whitespaces)
                if isConfigFile {
                    if section == "default" {
                        current = "default"
                    } else if section.hasPrefix("profile ") || section.hasPrefix("profile\t") {
                        current = section.dropFirst(8).trimmingCharacters(in: .whitespaces)
                    } else {
                        current = nil  // sso-session, services, …
                    }
                } else {
                    current = section
                }
                if let c = current, out[c] == nil { out[c] = [:] }
                continue
            }
            guard let c = current, let eq = line.firstIndex(where: { $0 == "=" || $0 == ":" }) else { continue }
            let key = line[..<eq].trimmingCharacters(in: .whitespaces).lowercased()
            let value = line[line.index(after: eq)...].trimmingCharacters(in: .whitespaces)
            out[c]![key] = value
        }
        return out
    }
}

/// The AWS region: `explicit`, `AWS_REGION`, `AWS_DEFAULT_REGION`, then the `region` of the
/// profile (`profile`, else `AWS_PROFILE`, else `default`) in the config file (`AWS_CONFIG_FILE`,
/// default `~/.aws/config`) or the credentials file; nil if none.
public func resolveAWSRegion(explicit: String?, environment: [String: String], home: String,
                             profile: String? = nil) -> String? {
    func nonEmpty(_ s: String?) -> String? {
        guard let v = s?.trimmingCharacters(in: .whitespaces), !v.isEmpty else { return nil }
        return v
    }
    if let r = nonEmpty(explicit) ?? nonEmpty(environment["AWS_REGION"]) ?? nonEmpty(environment["AWS_DEFAULT_REGION"]) {
        return r
    }
    let name = nonEmpty(profile) ?? nonEmpty(environment["AWS_PROFILE"]) ?? nonEmpty(environment["AWS_DEFAULT_PROFILE"]) ?? "default"
    func expand(_ p: String) -> String { p.hasPrefix("~/") ? home + p.dropFirst() : p }
    let cfg = nonEmpty(environment["AWS_CONFIG_FILE"]).map(expand) ?? home + "/.aws/config"
    let cred = nonEmpty(environment["AWS_SHARED_CREDENTIALS_FILE"]).map(expand) ?? home + "/.aws/credentials"
    if let r = nonEmpty((try? AWSSharedConfig.load(cfg, isConfigFile: true))?[name]?["region"]) { return r }
    return nonEmpty((try? AWSSharedConfig.load(cred, isConfigFile: false))?[name]?["region"])
}
