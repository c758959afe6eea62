import DogestryCore
import DogestryHTTP
import Foundation

/// An OCI registry as an image store (`registry://HOST[:PORT]/NAMESPACE`, `docker://…`).
///
/// Image name `NAME` is repository `NAMESPACE/NAME` (`library/NAME` on Docker Hub). Blobs belong
/// to a repository: presence is always asked of the repository a blob is wanted in, and a blob
/// this run has seen in another repository of the registry (in a manifest it read or wrote, or a
/// blob it placed) is mounted from there before it is uploaded. Manifests and indexes are kept
/// byte for byte. Blobs are never deleted (the registry's garbage collection does that).
public final class RegistryImageStore: ImageDestination, TrafficCounting, @unchecked Sendable {  // (state behind `lock`)
    public let client: RegistryClient
    public var endpoint: RegistryEndpoint { client.endpoint }
    public var displayURL: String { endpoint.displayURL }
    public var traffic: RemoteTraffic { client.traffic }

    private let lock = NSLock()
    /// The repositories (registry paths) each blob is known to be in.
    private var holders: [Digest: Set<String>] = [:]

    public init(client: RegistryClient) { self.client = client }

    /// Opens `url` with credentials found as Docker finds them and TLS trust from `certs.d`.
    public static func open(_ url: String, settings: RegistrySettings, store: RegistryCredentialStore) throws -> RegistryImageStore {
        var ep = try RegistryEndpoint.parse(url)
        let s = settings.forHost(ep.host)
        ep.insecure = s.insecure
        ep.caFile = s.ca
        if !ep.insecure { ep.findCertificates(in: s.certsDirs) }
        if let ca = ep.caFile, !FS.exists(ca) { throw DogestryError(.config, "registry \(ep.host): CA file \(ca) does not exist") }
        let creds = try store.lookup(host: ep.host)
        let client = RegistryClient(endpoint: ep, credentials: creds, timeouts: settings.timeouts)
        client.chunkSize = s.chunkSize
        return RegistryImageStore(client: client)
    }

    func repo(_ name: String) -> String { endpoint.repository(name) }

    private func hold(_ d: Digest, in repo: String) {
        lock.lock(); holders[d, default: []].insert(repo); lock.unlock()
    }

    /// Records that the blobs a manifest names are in `repo` (the registry accepted it there).
    private func learn(_ bytes: [UInt8], in repo: String) {
        guard ManifestKind.of(bytes) == .manifest, let m = try? ImageManifest.decode(bytes, what: "manifest") else { return }
        for b in [m.config] + m.layers { hold(b.digest, in: repo) }
    }

    // MARK: ImageSource

    public func manifest(_ name: String, reference: String) throws -> StoredManifest? {
        let r = repo(name)
        let m: (bytes: [UInt8], mediaType: String, digest: Digest)
        do { m = try client.manifest(r, reference) } catch let e as DogestryError where e.kind == .notFound {
            return nil
        }
        learn(m.bytes, in: r)
        return StoredManifest(bytes: m.bytes, mediaType: m.mediaType)
    }

    public func blobSize(_ name: String, _ digest: Digest) throws -> Int64? {
        try client.headBlob(repo(name), digest)
    }

    public func openBlob(_ name: String, _ digest: Digest) throws -> ByteSource {
        try client.openBlob(repo(name), digest)
    }

    public func tags(_ name: String) throws -> [String] {
        (try client.tags(repo(name)) ?? []).filter(ImageReference.isValidTag).sorted()
    }

    public func refs(warn: (String) -> Void) throws -> [RemoteRef] {
        var out: [RemoteRef] = []
        for r in try client.catalog().sorted() {
            guard let name = endpoint.name(ofRepository: r), ImageReference.isValidName(name) else { continue }
            for t in try client.tags(r) ?? [] where ImageReference.isValidTag(t) {
                guard let h = try client.headManifest(r, t) else { continue }   // deleted since the listing
                var d = h.digest
                if d == nil { d = try client.manifest(r, t).digest }
                out.append(RemoteRef(name: name, tag: t, manifest: d!))
            }
        }
        return out.sorted { ($0.name, $0.tag) < ($1.name, $1.tag) }
    }

    public func check() throws -> String {
        try client.ping()
        let who = client.auth.credentials.map { " as \($0)" } ?? " (anonymous)"
        return "OCI registry \(endpoint.host)\(endpoint.namespace.isEmpty ? "" : ", namespace \(endpoint.namespace)")\(who)"
    }

    // MARK: ImageDestination

    /// HEAD in `name`'s repository; else a mount from `source`'s repository when it is this
    /// registry, or from a repository this run saw holding the blob; nil when it must be uploaded.
    public func placeBlob(_ name: String, _ digest: Digest, size: Int64, from source: (store: ImageSource, name: String)?) throws -> BlobPlacement? {
        let r = repo(name)
        if let n = try client.headBlob(r, digest), n == size || n < 0 {
            hold(digest, in: r)
            return .present
        }
        var candidates: [String] = []
        if let (s, n) = source, let reg = s as? RegistryImageStore, reg.endpoint.apiHost == endpoint.apiHost, reg.endpoint.insecure == endpoint.insecure {
            candidates.append(reg.repo(n))
        }
        lock.lock(); candidates += (holders[digest] ?? []).sorted(); lock.unlock()
        var tried = Set<String>()
        for from in candidates where from != r && tried.insert(from).inserted {
            if try client.mount(r, digest, from: from) {
                hold(digest, in: r)
                return .mounted(from: from)
            }
        }
        return nil
    }

    public func putBlob(_ name: String, _ digest: Digest, file: StagedFile, size: Int64) throws {
        let r = repo(name)
        try client.uploadBlob(r, digest, size: size) { try FileSource(path: file.path) }
        hold(digest, in: r)
    }

    public func putBlob(_ name: String, _ digest: Digest, bytes: [UInt8]) throws {
        let r = repo(name)
        try client.uploadBlob(r, digest, size: Int64(bytes.count)) { MemorySource(bytes) }
        hold(digest, in: r)
    }

    /// PUTs the manifest under `tag` (or its digest), unless the registry already has it there:
    /// a second copy of an unchanged image costs a HEAD, not a PUT.
    @discardableResult
    public func putManifest(_ name: String, _ manifest: StoredManifest, tag: String?) throws -> Bool {
        let r = repo(name)
        let reference = tag ?? manifest.digest.description
        if let h = try client.headManifest(r, reference), h.digest == manifest.digest {
            learn(manifest.bytes, in: r)
            return false
        }
        try client.putManifest(r, reference, bytes: manifest.bytes, mediaType: manifest.mediaType)
        learn(manifest.bytes, in: r)
        return true
    }

    /// Deletes the manifest `tag` names, refused in one line when other tags share it (the
    /// Distribution API deletes manifests, not tags) or the registry does not allow deletes.
    public func deleteTag(_ name: String, _ tag: String) throws {
        let r = repo(name)
        guard let h = try client.headManifest(r, tag) else {
            throw DogestryError.notFound("tag \(name):\(tag) is not on \(displayURL)")
        }
        let d: Digest
        if let hd = h.digest { d = hd } else { d = try client.manifest(r, tag).digest }
        var others: [String] = []
        for t in try client.tags(r) ?? [] where t != tag {
            if let o = try client.headManifest(r, t), o.digest == d { others.append(t) }
        }
        guard others.isEmpty else {
            throw DogestryError(.unsupported, "registry \(endpoint.host): \(name):\(tag) shares its manifest with \(others.map { "\(name):\($0)" }.joined(separator: ", ")); a registry deletes manifests, not tags, so removing it would remove those too")
        }
        try client.deleteManifest(r, d.description)
    }

    public func makeStagedFile() throws -> StagedFile { try TempDirectory.staged(prefix: "dogestry-registry") }
}

/// `[registry "HOST"]` settings and the defaults for every registry.
public struct RegistrySettings: Sendable {
    public struct Host: Sendable {
        public var insecure = false
        public var ca: String?
        public var chunkSize: Int64 = 0
        public var certsDirs = ["/etc/docker/certs.d", "/etc/containers/certs.d"]
        public init() {}
    }
    public var hosts: [String: Host] = [:]
    /// `--insecure`: plain HTTP for every registry of the command.
    public var insecureAll = false
    public var timeouts: HTTPTimeouts = .remoteDefault
    public init() {}

    public func forHost(_ host: String) -> Host {
        var h = hosts[host.lowercased()] ?? Host()
        if insecureAll { h.insecure = true }
        return h
    }
}
