import DogestryCore
import DogestryHTTP
import DogestryRemotes
import Foundation

/// Turns a REMOTE argument into an image store, through one table of schemes: a `[remote "NAME"]`
/// alias is replaced by its URL, then the URL's scheme picks the factory. A dogestry remote
/// (directory, S3, Manta, pull ticket) comes as a `RepositoryImageStore` over its `Remote`; an OCI
/// registry as a `RegistryImageStore`. Each remote's settings type (`S3Settings`,
/// `MantaSettings`, …) reads its own config section, environment and URL.
public enum RemoteResolver {
    /// What a factory gets besides the URL.
    public struct Context {
        public var config: DogestryConfig
        public var environment: [String: String]
        public var registry: RegistryOptions = RegistryOptions()
        public var home: String { environment["HOME"] ?? NSHomeDirectory() }
    }

    /// What the command line says of registry remotes (`--creds`, `--insecure`).
    public struct RegistryOptions: Sendable {
        /// `--creds USER:PASS`, used instead of any stored credentials.
        public var credentials: RegistryCredentials?
        /// `--insecure`: plain HTTP.
        public var insecure = false
        public init(credentials: RegistryCredentials? = nil, insecure: Bool = false) {
            self.credentials = credentials; self.insecure = insecure
        }
    }

    static func openRegistry(_ url: String, _ c: Context) throws -> ImageSource {
        var s = RegistrySettings()
        for (host, r) in c.config.registries {
            var h = RegistrySettings.Host()
            h.insecure = r.insecure; h.ca = r.ca; h.chunkSize = r.chunkSize
            s.hosts[host] = h
        }
        s.insecureAll = c.registry.insecure
        s.timeouts = c.config.httpTimeouts
        let store = RegistryCredentialStore(explicit: c.registry.credentials, environment: c.environment, home: c.home)
        return try RegistryImageStore.open(url, settings: s, store: store)
    }

    /// One kind of remote: the URL prefix that selects it, a line for help texts, and its factory.
    public struct Scheme: Sendable {
        public let prefix: String
        public let usage: String
        public let open: @Sendable (String, Context) throws -> ImageSource
    }

    /// A dogestry remote's factory, as a scheme's.
    static func remote(_ open: @escaping @Sendable (String, Context) throws -> ReadableRemote) -> @Sendable (String, Context) throws -> ImageSource {
        { url, c in RepositoryImageStore(remote: try open(url, c)) }
    }

    /// Every scheme dogestry knows (a plain path is the local remote too).
    public static let schemes: [Scheme] = [
        Scheme(prefix: "file://", usage: "file:///PATH (or a plain directory path): a local directory", open: remote { url, _ in
            let rest = String(url.dropFirst(7))
            guard rest.hasPrefix("/") else {
                throw DogestryError.invalid("remote \(redactedURL(url)): file URLs need an absolute path (file:///path)")
            }
            return try LocalRemote(path: rest.removingPercentEncoding ?? rest)
        }),
        Scheme(prefix: "s3://", usage: "s3://BUCKET[/PREFIX][?region=R&endpoint=URL]: Amazon S3 or an S3-compatible store", open: remote { url, c in
            let s = try S3Settings.resolve(url: url, section: c.config.s3, partSize: c.config.s3PartSize,
                                           transferConcurrency: c.config.concurrency, timeouts: c.config.httpTimeouts,
                                           environment: c.environment, home: c.home)
            return try S3Remote(settings: s, environment: c.environment, home: c.home)
        }),
        Scheme(prefix: "manta://", usage: "manta://HOST/ACCOUNT/stor/PATH: Joyent Manta", open: remote { url, c in
            var s = try MantaSettings.resolve(remoteURL: url, config: c.config.manta, environment: c.environment, home: c.home)
            s.timeouts = c.config.httpTimeouts
            return try MantaRemote(settings: s)
        }),
        Scheme(prefix: "registry://", usage: "registry://HOST[:PORT][/NAMESPACE]: an OCI registry (Docker Hub, GHCR, ECR, distribution…)") { url, c in
            try openRegistry(url, c)
        },
        Scheme(prefix: "docker://", usage: "docker://HOST[/NAMESPACE]: the same as registry:// (docker:// alone is Docker Hub)") { url, c in
            try openRegistry(url, c)
        },
        Scheme(prefix: "https://", usage: "https://… (or http://): a signed pull-ticket URL from `dogestry sign` (read-only)", open: remote { url, c in
            try TicketRemote.fetch(url, environment: c.environment, timeouts: c.config.httpTimeouts)
        }),
        Scheme(prefix: "http://", usage: "", open: remote { url, c in
            try TicketRemote.fetch(url, environment: c.environment, timeouts: c.config.httpTimeouts)
        }),
    ]

    /// Opens `spec` as a dogestry remote for writing (and reading); a read-only remote or a
    /// registry is refused with a one-line error.
    public static func open(_ spec: String, config: DogestryConfig,
                            environment: [String: String] = ProcessInfo.processInfo.environment,
                            registry: RegistryOptions = RegistryOptions()) throws -> Remote {
        try openReadable(spec, config: config, environment: environment, registry: registry).writable()
    }

    /// Opens `spec` as a dogestry remote for reading (`prune`, `verify`, `sign`… work on the
    /// repository format itself); a registry is refused in one line naming `command`.
    public static func openReadable(_ spec: String, config: DogestryConfig,
                                    environment: [String: String] = ProcessInfo.processInfo.environment,
                                    registry: RegistryOptions = RegistryOptions(), command: String = "this command") throws -> ReadableRemote {
        let store = try openStore(spec, config: config, environment: environment, registry: registry)
        guard let repo = store.repository else {
            throw DogestryError(.unsupported, "\(store.displayURL) is an OCI registry: \(command) needs a dogestry remote (\(schemes.filter { !$0.prefix.hasPrefix("registry") && !$0.prefix.hasPrefix("docker") && !$0.prefix.hasPrefix("http") }.map(\.prefix).joined(separator: ", ")) or a directory)")
        }
        return repo.remote
    }

    /// Opens `spec` as an image store: an alias, a URL of one of `schemes` (a read-only pull
    /// ticket, a registry), or a local directory path.
    public static func openStore(_ spec: String, config: DogestryConfig,
                                 environment: [String: String] = ProcessInfo.processInfo.environment,
                                 registry: RegistryOptions = RegistryOptions()) throws -> ImageSource {
        if let t = config.tempDir { TempDirectory.path = t }
        var url = spec
        if let aliased = config.remotes[spec] { url = aliased }
        let context = Context(config: config, environment: environment, registry: registry)
        if let scheme = schemes.first(where: { url.lowercased().hasPrefix($0.prefix) }) {
            return try scheme.open(url, context)
        }
        if let scheme = url.range(of: "://").map({ String(url[..<$0.lowerBound]) }) {
            throw DogestryError(.unsupported, "remote \(redactedURL(url)): \(scheme):// remotes are not supported " +
                                "(\(schemes.map { $0.prefix }.joined(separator: ", ")), a path or an alias)")
        }
        if !url.contains("/") && !url.hasPrefix(".") && !FS.exists(url) {
            let known = config.remotes.keys.sorted()
            throw DogestryError.notFound("remote \"\(url)\" is neither a directory nor an alias in \(config.path ?? "any dogestry.cfg")" +
                                         (known.isEmpty ? "" : " (aliases: \(known.joined(separator: ", ")))"))
        }
        return RepositoryImageStore(remote: try LocalRemote(path: url))
    }
}
