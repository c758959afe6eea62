import DogestryCore
import DogestryHTTP
import Foundation

/// An OCI registry seen as a dogestry remote (`registry://HOST[:PORT]/NAMESPACE`, `docker://…`).
///
/// The repository format's keys map onto the Distribution API: a ref
/// `repositories/NAME/_tags/TAG` is the manifest tagged TAG in repository `NAMESPACE/NAME`; a
/// blob `blobs/sha256/HEX` is a blob or manifest of the repository it was reached through (a
/// registry keeps blobs per repository, so the remote learns, from every manifest it reads, which
/// repository each digest belongs to, and writers name the image first with `useName`). Manifests
/// are stored and served byte for byte. The layer index lives only in memory: a registry has no
/// place for it, and pushes check the registry's blobs directly. Only the writes a registry has
/// are offered: blobs are uploaded (or mounted), manifests PUT when their ref is written, refs
/// deleted through their manifest; blobs are never deleted (the registry's garbage collection does).
public final class RegistryRemote: Remote, RegistryBackedRemote, ServerSideCopying, TrafficCounting, @unchecked Sendable {  // (state behind `lock`)
    public let client: RegistryClient
    public var endpoint: RegistryEndpoint { client.endpoint }
    public var displayURL: String { endpoint.displayURL }
    public var traffic: RemoteTraffic { client.traffic }

    private let lock = NSLock()
    private enum Kind { case blob, manifest }
    /// Which repository each digest was seen in, and whether it is a manifest there.
    private var seen: [Digest: (repo: String, kind: Kind)] = [:]
    /// Manifests read or written in this run (small; their bytes are needed again at once).
    private var manifests: [Digest: [UInt8]] = [:]
    /// Manifests written but not yet PUT (they go when a ref or `flush` names them).
    private var pendingManifests: [Digest: (repo: String, bytes: [UInt8])] = [:]
    private var layerIndex: [String: [UInt8]] = [:]
    private var current: String?

    public init(client: RegistryClient) { self.client = client }

    /// Opens `url` with credentials found as Docker finds them and TLS trust from `certs.d`.
    public static func open(_ url: String, settings: RegistrySettings, store: RegistryCredentialStore) throws -> RegistryRemote {
        var ep = try RegistryEndpoint.parse(url)
        let s = settings.forHost(ep.host)
        ep.insecure = s.insecure
        ep.caFile = s.ca
        if !ep.insecure { ep.findCertificates(in: s.certsDirs) }
        if let ca = ep.caFile, !FS.exists(ca) { throw DogestryError(.config, "registry \(ep.host): CA file \(ca) does not exist") }
        let creds = try store.lookup(host: ep.host)
        let client = RegistryClient(endpoint: ep, credentials: creds, timeouts: settings.timeouts)
        client.chunkSize = s.chunkSize
        return RegistryRemote(client: client)
    }

    // MARK: names

    public func useName(_ name: String) {
        lock.lock(); current = endpoint.repository(name); lock.unlock()
    }

    /// Where to read `d`: the repository it was seen in, else the current one.
    private func repo(for d: Digest) -> (repo: String, kind: Kind?)? {
        lock.lock(); defer { lock.unlock() }
        if let s = seen[d] { return (s.repo, s.kind) }
        return current.map { ($0, nil) }
    }

    /// Where `d` must be for the current image (its writes and presence checks): the current
    /// repository, else the one it was seen in.
    private func targetRepo(for d: Digest) -> (repo: String, kind: Kind?)? {
        lock.lock(); defer { lock.unlock() }
        if let c = current { return (c, seen[d]?.kind) }
        return seen[d].map { ($0.repo, $0.kind) }
    }

    /// Mounts blob `d` into the current repository from another repository of this registry
    /// where this run saw it (a layer shared with an image written before); false when it was
    /// seen nowhere else or the registry would rather have it uploaded.
    public func mountKnown(_ d: Digest) throws -> Bool {
        lock.lock(); let c = current, s = seen[d]; lock.unlock()
        guard let c, let s, s.repo != c, s.kind != .manifest else { return false }
        guard try client.mount(c, d, from: s.repo) else { return false }
        lock.lock(); seen[d] = (c, .blob); lock.unlock()
        return true
    }

    /// Records what a manifest's bytes say lives in `repo`.
    private func learn(_ d: Digest, bytes: [UInt8], repo: String) {
        lock.lock(); defer { lock.unlock() }
        seen[d] = (repo, .manifest)
        manifests[d] = bytes
        switch ManifestKind.of(bytes) {
        case .index?:
            for m in (try? ImageIndex.decode(bytes, what: "index"))?.manifests ?? [] where seen[m.digest] == nil { seen[m.digest] = (repo, .manifest) }
        case .manifest?:
            if let m = try? ImageManifest.decode(bytes, what: "manifest") {
                for b in [m.config] + m.layers where seen[b.digest] == nil { seen[b.digest] = (repo, .blob) }
            }
        case nil: break
        }
    }

    private func cached(_ d: Digest) -> [UInt8]? {
        lock.lock(); defer { lock.unlock() }
        return manifests[d] ?? pendingManifests[d]?.bytes
    }

    /// The repository to write `d` to (`reading`: to read it from), or an error naming it.
    private func needRepo(_ d: Digest, _ what: String, reading: Bool = false) throws -> String {
        guard let r = (reading ? repo(for: d) : targetRepo(for: d))?.repo else {
            throw DogestryError(.unsupported, "\(displayURL): \(what) \(d) cannot be found without an image name (a registry keeps blobs per repository)")
        }
        return r
    }

    static func digest(of key: String) -> Digest? {
        guard key.hasPrefix(Repository.blobsPrefix) else { return nil }
        return try? Digest(hex: String(key.dropFirst(Repository.blobsPrefix.count)))
    }

    // MARK: ReadableRemote

    public func stat(_ key: String) throws -> RemoteObject? {
        if key == Repository.layoutKey { return RemoteObject(key: key, size: Int64(Repository.layoutContent.count)) }
        if let (name, tag) = Repository.parseRefKey(key) {
            guard let h = try client.headManifest(endpoint.repository(name), tag) else { return nil }
            return RemoteObject(key: key, size: h.digest == nil ? 72 : 72)
        }
        if let d = Self.digest(of: key) {
            if let b = cached(d) { return RemoteObject(key: key, size: Int64(b.count)) }
            guard let (repo, kind) = targetRepo(for: d) else { return nil }
            if kind != .manifest, let n = try client.headBlob(repo, d) { return RemoteObject(key: key, size: n) }
            if kind != .blob, let h = try client.headManifest(repo, d.description) { return RemoteObject(key: key, size: h.size) }
            return nil
        }
        if key.hasPrefix(Repository.diffIDPrefix) {
            lock.lock(); defer { lock.unlock() }
            return layerIndex[key].map { RemoteObject(key: key, size: Int64($0.count)) }
        }
        return nil
    }

    public func open(_ key: String) throws -> ByteSource {
        if key == Repository.layoutKey { return MemorySource(Repository.layoutContent) }
        if let (name, tag) = Repository.parseRefKey(key) {
            let repo = endpoint.repository(name)
            let m: (bytes: [UInt8], mediaType: String, digest: Digest)
            do { m = try client.manifest(repo, tag) } catch let e as DogestryError where e.kind == .notFound {
                throw DogestryError.notFound("\(displayURL) has no \(name):\(tag)")
            }
            learn(m.digest, bytes: m.bytes, repo: repo)
            return MemorySource(Array((m.digest.description + "\n").utf8))
        }
        if let d = Self.digest(of: key) {
            if let b = cached(d) { return MemorySource(b) }
            let (repo, kind) = repo(for: d) ?? ("", nil)
            guard !repo.isEmpty else { throw DogestryError.notFound("\(displayURL): blob \(d) is not known in any repository read so far") }
            if kind == .manifest {
                let m = try client.manifest(repo, d.description)
                learn(d, bytes: m.bytes, repo: repo)
                return MemorySource(m.bytes)
            }
            do { return try client.openBlob(repo, d) } catch let e as DogestryError where e.kind == .notFound && kind == nil {
                let m = try client.manifest(repo, d.description)
                learn(d, bytes: m.bytes, repo: repo)
                return MemorySource(m.bytes)
            }
        }
        if key.hasPrefix(Repository.diffIDPrefix) {
            lock.lock(); defer { lock.unlock() }
            if let b = layerIndex[key] { return MemorySource(b) }
        }
        throw DogestryError.notFound("\(key) is not on \(displayURL)")
    }

    public func list(prefix: String, _ each: (RemoteObject) throws -> Void) throws {
        if prefix.hasPrefix(Repository.refsPrefix) {
            let rest = String(prefix.dropFirst(Repository.refsPrefix.count))
            if let r = rest.range(of: Repository.tagsMarker), r.upperBound == rest.endIndex {
                // One name's tags.
                let name = String(rest[..<r.lowerBound])
                guard ImageReference.isValidName(name) else { return }
                for t in try client.tags(endpoint.repository(name)) ?? [] where ImageReference.isValidTag(t) {
                    try each(RemoteObject(key: Repository.refKey(name: name, tag: t), size: 72))
                }
                return
            }
            for repo in try client.catalog().sorted() {
                guard let name = endpoint.name(ofRepository: repo), ImageReference.isValidName(name) else { continue }
                for t in try client.tags(repo) ?? [] where ImageReference.isValidTag(t) {
                    let key = Repository.refKey(name: name, tag: t)
                    if key.hasPrefix(prefix) { try each(RemoteObject(key: key, size: 72)) }
                }
            }
            return
        }
        if prefix.hasPrefix(Repository.diffIDPrefix) || Repository.diffIDPrefix.hasPrefix(prefix) && !prefix.isEmpty && !Repository.blobsPrefix.hasPrefix(prefix) {
            lock.lock(); let keys = layerIndex.filter { $0.key.hasPrefix(prefix) }; lock.unlock()
            for (k, v) in keys { try each(RemoteObject(key: k, size: Int64(v.count))) }
            return
        }
        if prefix.hasPrefix("tickets/") || prefix.hasPrefix("index/") { return }
        throw DogestryError(.unsupported, "\(displayURL) is a registry: it cannot list every blob (prune and whole-remote verify need a dogestry remote)")
    }

    public func check() throws -> String {
        try client.ping()
        let who = client.auth.credentials.map { " as \($0)" } ?? " (anonymous)"
        return "OCI registry \(endpoint.host)\(endpoint.namespace.isEmpty ? "" : ", namespace \(endpoint.namespace)")\(who)"
    }

    // MARK: Remote

    public func put(_ key: String, bytes: [UInt8]) throws {
        if key == Repository.layoutKey { return }
        if key.hasPrefix(Repository.diffIDPrefix) { lock.lock(); layerIndex[key] = bytes; lock.unlock(); return }
        if let (name, tag) = Repository.parseRefKey(key) {
            let ref = String(decoding: bytes, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
            let d = try Digest(parsing: ref, what: "ref \(name):\(tag)")
            try tagManifest(d, repo: endpoint.repository(name), tag: tag)
            return
        }
        guard let d = Self.digest(of: key) else { throw DogestryError(.unsupported, "\(displayURL) cannot store \(key)") }
        let repo = try needRepo(d, "blob")
        if ManifestKind.of(bytes) != nil {
            // A manifest goes up with its ref (or `flush`), after everything it names.
            lock.lock(); pendingManifests[d] = (repo, bytes); manifests[d] = bytes; seen[d] = (repo, .manifest); lock.unlock()
            return
        }
        try client.uploadBlob(repo, d, size: Int64(bytes.count)) { MemorySource(bytes) }
        lock.lock(); seen[d] = (repo, .blob); lock.unlock()
    }

    public func put(_ key: String, file: StagedFile, size: Int64) throws {
        guard let d = Self.digest(of: key) else { throw DogestryError(.unsupported, "\(displayURL) cannot store \(key)") }
        let repo = try needRepo(d, "blob")
        if size <= 1 << 20 {
            let bytes = try FileSource(path: file.path).readAll(limit: 1 << 20, what: "staged \(d)")
            if ManifestKind.of(bytes) != nil { return try put(key, bytes: bytes) }
        }
        try client.uploadBlob(repo, d, size: size) { try FileSource(path: file.path) }
        lock.lock(); seen[d] = (repo, .blob); lock.unlock()
    }

    /// PUTs manifest `d` under `tag` in `repo`, after the manifests it names (an index's) that are
    /// still pending.
    func tagManifest(_ d: Digest, repo: String, tag: String) throws {
        let bytes: [UInt8]
        if let b = cached(d) { bytes = b } else {
            guard let (r, _) = self.repo(for: d) else { throw DogestryError.notFound("\(displayURL): manifest \(d) is not known") }
            bytes = try client.manifest(r, d.description).bytes
        }
        // A tag in another repository than the manifest's (`dogestry tag` to a new name): its blobs
        // and an index's manifests are mounted or put there first.
        let from = self.repo(for: d)?.repo
        let elsewhere = from.flatMap { $0 == repo ? nil : $0 }
        if ManifestKind.of(bytes) == .index {
            for m in try ImageIndex.decode(bytes, what: "index \(d)").manifests {
                try putPending(m.digest)
                if let elsewhere { try carryManifest(m.digest, from: elsewhere, to: repo) }
            }
        } else if let elsewhere {
            try mountBlobs(of: bytes, from: elsewhere, to: repo)
        }
        try client.putManifest(repo, tag, bytes: bytes, mediaType: ManifestKind.mediaType(of: bytes) ?? MediaType.ociManifest)
        lock.lock(); pendingManifests[d] = nil; seen[d] = (repo, .manifest); lock.unlock()
    }

    /// Puts manifest `d` of repository `from` into `to` by digest, its blobs mounted first.
    private func carryManifest(_ d: Digest, from: String, to: String) throws {
        if try client.headManifest(to, d.description) != nil { return }
        let bytes = try cached(d) ?? client.manifest(from, d.description).bytes
        try mountBlobs(of: bytes, from: from, to: to)
        try client.putManifest(to, d.description, bytes: bytes, mediaType: ManifestKind.mediaType(of: bytes) ?? MediaType.ociManifest)
    }

    /// Mounts the config and layers of a manifest from repository `from` into `to` (those not there).
    private func mountBlobs(of bytes: [UInt8], from: String, to: String) throws {
        guard ManifestKind.of(bytes) == .manifest else { return }
        let m = try ImageManifest.decode(bytes, what: "manifest")
        for b in [m.config] + m.layers {
            if try client.headBlob(to, b.digest) != nil { continue }
            guard try client.mount(to, b.digest, from: from) else {
                throw DogestryError(.unsupported, "registry \(endpoint.host) would not mount blob \(b.digest) from \(from) into \(to); use `dogestry copy` to move the image between repositories")
            }
        }
    }

    private func putPending(_ d: Digest) throws {
        lock.lock(); let p = pendingManifests[d]; lock.unlock()
        guard let p else { return }
        try client.putManifest(p.repo, d.description, bytes: p.bytes, mediaType: ManifestKind.mediaType(of: p.bytes) ?? MediaType.ociManifest)
        lock.lock(); pendingManifests[d] = nil; lock.unlock()
    }

    /// PUTs by digest the manifests written but named by no ref (an untagged copy).
    public func flush() throws {
        lock.lock(); let ds = pendingManifests.keys.sorted(); lock.unlock()
        // Children before the indexes that name them.
        let (indexes, images) = ds.reduce(into: ([Digest](), [Digest]())) { acc, d in
            if ManifestKind.of(cached(d) ?? []) == .index { acc.0.append(d) } else { acc.1.append(d) }
        }
        for d in images + indexes { try putPending(d) }
    }

    public func delete(_ key: String) throws {
        if key.hasPrefix(Repository.diffIDPrefix) { lock.lock(); layerIndex[key] = nil; lock.unlock(); return }
        guard let (name, tag) = Repository.parseRefKey(key) else {
            throw DogestryError(.unsupported, "\(displayURL) is a registry: blobs go by its garbage collection, not by dogestry")
        }
        let repo = endpoint.repository(name)
        guard let h = try client.headManifest(repo, tag), let d = h.digest else { return }
        // The Distribution API deletes manifests, not tags: refuse when other tags share it.
        var others: [String] = []
        for t in try client.tags(repo) ?? [] where t != tag {
            if let o = try client.headManifest(repo, t), o.digest == d { others.append(t) }
        }
        guard others.isEmpty else {
            throw DogestryError(.unsupported, "registry \(endpoint.host): \(name):\(tag) shares its manifest with \(others.map { "\(name):\($0)" }.joined(separator: ", ")); a registry deletes manifests, not tags, so removing it would remove those too")
        }
        try client.deleteManifest(repo, d.description)
    }

    public func makeStagedFile() throws -> StagedFile { try TempDirectory.staged(prefix: "dogestry-registry") }

    // MARK: ServerSideCopying (cross-repository mounts)

    public func canCopyServerSide(from source: ReadableRemote) -> Bool {
        guard let s = source as? RegistryRemote else { return false }
        return s.endpoint.host == endpoint.host && s.endpoint.insecure == endpoint.insecure
    }

    public func copyServerSide(from source: ReadableRemote, key: String, size: Int64) throws {
        guard let s = source as? RegistryRemote, let d = Self.digest(of: key) else { return }
        let to = try needRepo(d, "blob")
        let from = try s.needRepo(d, "blob", reading: true)
        let mounted = from == to ? true : try client.mount(to, d, from: from)
        if mounted {
            lock.lock(); seen[d] = (to, .blob); lock.unlock()
            return
        }
        // The registry would not mount it: the bytes go through here, checked against the digest.
        let staged = try makeStagedFile()
        defer { staged.discard() }
        let src = HashingSource(try s.open(key))
        let sink = try staged.sink()
        _ = try src.copy(to: sink)
        try sink.close()
        guard src.count == size, src.hasher.finalize() == d else {
            throw DogestryError.corrupt("blob \(d) on \(s.displayURL) does not match its digest and size; nothing was copied for it")
        }
        try put(key, file: staged, size: size)
    }
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
