import DogestryCore
import DogestryHTTP
import Foundation

/// Which form `serve` gives layers in (`--layers`, `[serve] layers`).
public enum LayerForm: String, Sendable, CaseIterable {
    /// Layers each client reads: gzip and plain tar as stored; zstd as stored to clients known to
    /// read it (by User-Agent), else as plain tar; lz4 (nobody reads it) as plain tar.
    case compatible
    /// Layers every runtime reads, to every client: anything but gzip and plain tar as plain tar.
    case plain
    /// Every blob as stored.
    case stored
}

/// What a client is known to read, from its User-Agent (docs/SERVE.md, *Layers*).
public struct ClientCapabilities: Sendable, Equatable {
    public var readsZstd: Bool
    public init(readsZstd: Bool) { self.readsZstd = readsZstd }
    public static let unknown = ClientCapabilities(readsZstd: false)

    /// containerd >= 1.5, containers/image >= 5.4 (Podman, Buildah), skopeo >= 1.1, CRI-O >=
    /// 1.18 and Docker >= 23 read zstd layers; anything else (Docker 20.10, unknown clients) is
    /// given plain tar.
    public init(userAgent: String?) {
        guard let ua = userAgent else { self = .unknown; return }
        let minimum: [(String, Int, Int)] = [("containerd/", 1, 5), ("containers/", 5, 4), ("skopeo/", 1, 1), ("cri-o/", 1, 18), ("docker/", 23, 0)]
        for (prefix, major, minor) in minimum where ua.hasPrefix(prefix) {
            let v = ua.dropFirst(prefix.count).prefix { $0.isNumber || $0 == "." }.split(separator: ".").compactMap { Int($0) }
            guard let ma = v.first else { break }
            let mi = v.count > 1 ? v[1] : 0
            self.readsZstd = ma > major || (ma == major && mi >= minor)
            return
        }
        self = .unknown
    }
}

/// What `serve` does beyond answering requests (docs/SERVE.md).
public struct ServeSettings: Sendable {
    public var layers: LayerForm = .compatible
    /// Answer a blob stored in the form asked for with a 307 to a signed URL (S3, Manta).
    public var redirect = false
    /// How long a tag lookup is reused: a moved tag is seen within this many seconds.
    public var tagTTL: Double = 5
    /// How long a redirect's signed URL works, in seconds.
    public var redirectExpiry = 300
    public init() {}
}

/// An error of the OCI Distribution Specification: its status, code and message.
public struct RegistryError: Error, Sendable {
    public var status: Int
    public var code: String
    public var message: String
    public init(_ status: Int, _ code: String, _ message: String) { self.status = status; self.code = code; self.message = message }

    static func nameUnknown(_ name: String) -> RegistryError { .init(404, "NAME_UNKNOWN", "repository \(name) is not known to this registry") }
    static func nameInvalid(_ name: String) -> RegistryError { .init(400, "NAME_INVALID", "invalid repository name \(name)") }
    static func manifestUnknown(_ name: String, _ ref: String) -> RegistryError { .init(404, "MANIFEST_UNKNOWN", "manifest \(ref) of \(name) is not known to this registry") }
    static func blobUnknown(_ d: String) -> RegistryError { .init(404, "BLOB_UNKNOWN", "blob \(d) is not known to this registry") }
    static func unavailable(_ m: String) -> RegistryError { .init(503, "UNAVAILABLE", m) }

    /// The spec's JSON error body.
    public var body: [UInt8] {
        struct Body: Encodable { struct E: Encodable { var code: String; var message: String }; var errors: [E] }
        return jsonBytes(Body(errors: [.init(code: code, message: message)]))
    }
}

/// `value` as compact JSON with sorted keys, the form of every body serve makes.
func jsonBytes<T: Encodable>(_ value: T) -> [UInt8] {
    let enc = JSONEncoder(); enc.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
    return [UInt8]((try? enc.encode(value)) ?? Data("{}".utf8))
}

/// A manifest as served: its bytes, media type and digest.
public struct ServedManifest: Sendable {
    public var bytes: [UInt8]
    public var mediaType: String
    public var digest: Digest
}

/// How a blob request is answered.
public enum BlobAnswer: Sendable {
    /// The stored blob `digest`, `size` bytes, streamed and verified, from repository `name`.
    case stored(digest: Digest, size: Int64, name: String)
    /// The stored layer `layer` decompressed: a plain tar of `size` bytes whose digest is `diffID`.
    case plain(layer: Descriptor, diffID: Digest, size: Int64, name: String)
    /// A 307 to a signed URL of the stored blob.
    case redirect(url: String, digest: Digest, size: Int64)

    public var digest: Digest {
        switch self { case .stored(let d, _, _), .redirect(_, let d, _): return d; case .plain(_, let d, _, _): return d }
    }
    public var size: Int64 {
        switch self { case .stored(_, let s, _), .plain(_, _, let s, _), .redirect(_, _, let s): return s }
    }
}

/// The pull side of an OCI registry over an image store (a dogestry remote, or a registry),
/// without HTTP: resolves names, tags and digests to manifests and blobs (docs/SERVE.md).
/// Stateless but for short-lived caches; safe to call from many threads at once.
public final class RegistryFrontEnd: @unchecked Sendable {  // (its caches are guarded by `lock`)
    public let store: ImageSource
    public let settings: ServeSettings
    private let lock = NSLock()
    private var tags = BoundedCache<String, (digest: Digest, until: Date)>(limit: 4096)
    private var served = BoundedCache<Digest, ServedManifest>(limit: 512)
    /// Stored manifests read (verified), decoded and as bytes.
    private var stored = BoundedCache<Digest, (manifest: ImageManifest, bytes: [UInt8])>(limit: 512)
    /// Stored image indexes read and verified.
    private var indexes = BoundedCache<Digest, (index: ImageIndex, bytes: [UInt8])>(limit: 256)
    /// diffID -> the stored layer that holds it, learned from the manifests served.
    private var plainLayers = BoundedCache<Digest, (layer: Descriptor, name: String)>(limit: 8192)
    /// Image configs of the manifests served (digest -> size), and the bytes of those read once.
    private var configSizes = BoundedCache<Digest, Int64>(limit: 4096)
    private var configs = BoundedCache<Digest, [UInt8]>(limit: 256)

    public init(store: ImageSource, settings: ServeSettings) {
        self.store = store; self.settings = settings
    }

    public convenience init(repository: Repository, settings: ServeSettings) {
        self.init(store: RepositoryImageStore(repository), settings: settings)
    }

    /// The dogestry remote behind the store, when it is one (its layer index, its signed URLs).
    var remote: ReadableRemote? { store.repository?.remote }

    // MARK: names

    /// The stored names a request's `name` may mean, most specific first. `ns` is the registry
    /// containerd says the image is named for (`?ns=registry.example.com`); Docker Hub names are
    /// normalised (`library/x` is `x`).
    public static func candidates(name: String, ns: String?) throws -> [String] {
        guard ImageReference.isValidName(name) else { throw RegistryError.nameInvalid(name) }
        var out: [String] = []
        if let ns, !ns.isEmpty, ns != "docker.io", ns != "index.docker.io", !name.hasPrefix(ns + "/") {
            let qualified = ns + "/" + name
            if ImageReference.isValidName(qualified) { out.append(qualified) }
        }
        out.append(ImageReference.normalizedName(name))
        return out
    }

    // MARK: manifests

    /// The manifest `reference` (a tag or a digest) of `name`.
    public func manifest(name: String, ns: String?, reference: String, client: ClientCapabilities = .unknown) throws -> ServedManifest {
        let names = try Self.candidates(name: name, ns: ns)
        if reference.hasPrefix("sha256:") || reference.contains(":") {
            guard let d = try? Digest(parsing: reference) else {
                throw RegistryError(400, "DIGEST_INVALID", "invalid digest \(reference)")
            }
            return try manifest(byDigest: d, names: names, shown: name)
        }
        guard ImageReference.isValidTag(reference) else {
            throw RegistryError(400, "TAG_INVALID", "invalid tag \(reference)")
        }
        for n in names {
            if let md = try resolveTag(name: n, tag: reference) {
                return try serve(storedManifest: md, name: n, zstd: client.readsZstd)
            }
        }
        if try names.allSatisfy({ try store.tags($0).isEmpty }) { throw RegistryError.nameUnknown(name) }
        throw RegistryError.manifestUnknown(name, reference)
    }

    func resolveTag(name: String, tag: String) throws -> Digest? {
        let key = name + ":" + tag
        let now = Date()
        lock.lock()
        if let t = tags[key], t.until > now { lock.unlock(); return t.digest }
        lock.unlock()
        let d: Digest
        if let repo = store.repository {
            guard let r = try repo.readRef(name: name, tag: tag) else { return nil }   // (the manifest is read when served)
            d = r
        } else {
            guard let m = try store.manifest(name, reference: tag) else { return nil }
            d = m.digest
        }
        lock.lock()
        tags[key] = (d, now.addingTimeInterval(settings.tagTTL))
        lock.unlock()
        return d
    }

    /// A manifest asked for by digest: a stored manifest byte for byte, else one served for a
    /// tag of `names` (a converted manifest has a digest of its own).
    func manifest(byDigest d: Digest, names: [String], shown: String) throws -> ServedManifest {
        if let m = cached(served: d) { return m }
        for n in names {
            if let remote {
                guard let obj = try remote.stat(Repository.blobKey(d)) else { break }
                guard obj.size <= Int64(RepositoryLimits.metadataBytes) else { throw RegistryError.manifestUnknown(shown, d.description) }
            } else if try store.manifest(n, reference: d.description) == nil { continue }
            if let i = try? storedIndex(d, name: n) { return ServedManifest(bytes: i.bytes, mediaType: i.index.mediaType ?? MediaType.ociIndex, digest: d) }
            guard let m = try? storedManifest(d, name: n) else { throw RegistryError.manifestUnknown(shown, d.description) }
            return ServedManifest(bytes: m.bytes, mediaType: m.manifest.mediaType ?? MediaType.ociManifest, digest: d)
        }
        // Not stored: a converted manifest of one of the name's tags (serve restarted, or
        // another instance answered the tag).
        for n in names {
            for t in try store.tags(n) {
                guard let md = try? resolveTag(name: n, tag: t) else { continue }
                for zstd in [false, true] {
                    if let s = try? serve(storedManifest: md, name: n, zstd: zstd), s.digest == d { return s }
                }
            }
        }
        throw RegistryError.manifestUnknown(shown, d.description)
    }

    /// Stored image index `d` (format version 2), read and verified; nil when `d` is a manifest.
    func storedIndex(_ d: Digest, name: String) throws -> (index: ImageIndex, bytes: [UInt8])? {
        lock.lock()
        if stored[d] != nil { lock.unlock(); return nil }
        if let i = indexes[d] { lock.unlock(); return i }
        lock.unlock()
        let bytes = try store.requireManifest(name, d).bytes
        guard ManifestKind.of(bytes) == .index else {
            _ = try keep(manifest: bytes, d)   // not read again
            return nil
        }
        let i = try ImageIndex.decode(bytes, what: "image index \(d)")
        lock.lock(); indexes[d] = (i, bytes); lock.unlock()
        return (i, bytes)
    }

    /// What a tag pointing at stored index `d` is answered with: the index byte for byte, unless
    /// a platform's manifest is served converted (`compatible` layers), then an index naming the
    /// manifests as served.
    func serve(storedIndex d: Digest, _ stored: (index: ImageIndex, bytes: [UInt8]), name: String, zstd: Bool) throws -> ServedManifest {
        var index = stored.index
        var changed = false
        let images = Set(index.images.map(\.digest))
        for (n, e) in index.manifests.enumerated() where images.contains(e.digest) {
            let s = try serve(storedManifest: e.digest, name: name, zstd: zstd)
            if s.digest != e.digest {
                index.manifests[n].digest = s.digest
                index.manifests[n].size = Int64(s.bytes.count)
                index.manifests[n].mediaType = s.mediaType
                changed = true
            }
        }
        let out: ServedManifest
        if changed {
            index.mediaType = MediaType.ociIndex
            let bytes = index.encoded()
            out = ServedManifest(bytes: bytes, mediaType: MediaType.ociIndex, digest: Digest.of(bytes))
        } else {
            out = ServedManifest(bytes: stored.bytes, mediaType: stored.index.mediaType ?? MediaType.ociIndex, digest: d)
        }
        lock.lock(); served[out.digest] = out; lock.unlock()
        return out
    }

    /// Stored manifest `d`, read and verified once.
    func storedManifest(_ d: Digest, name: String) throws -> (manifest: ImageManifest, bytes: [UInt8]) {
        lock.lock()
        if let m = stored[d] { lock.unlock(); return m }
        lock.unlock()
        return try keep(manifest: try store.requireManifest(name, d).bytes, d)
    }

    /// Decodes stored manifest `d` from its (verified) bytes and caches it and its config's size.
    private func keep(manifest bytes: [UInt8], _ d: Digest) throws -> (manifest: ImageManifest, bytes: [UInt8]) {
        let m = try ImageManifest.decode(bytes, what: "manifest \(d)")
        lock.lock(); stored[d] = (m, bytes)
        if m.config.size <= Int64(RepositoryLimits.metadataBytes) { configSizes[m.config.digest] = m.config.size }
        lock.unlock()
        return (m, bytes)
    }

    func cached(served d: Digest) -> ServedManifest? {
        lock.lock(); defer { lock.unlock() }
        return served[d]
    }

    /// What a tag pointing at stored manifest `md` is answered with, for a client that reads
    /// zstd or not.
    func serve(storedManifest md: Digest, name: String, zstd: Bool) throws -> ServedManifest {
        if let i = try storedIndex(md, name: name) {
            try i.index.refuseNested(what: "image index \(md)")
            return try serve(storedIndex: md, i, name: name, zstd: zstd)
        }
        let (m, storedBytes) = try storedManifest(md, name: name)
        let converted = settings.layers == .stored ? nil
            : try Self.compatible(m, zstd: zstd && settings.layers == .compatible, config: {
                try ImageConfig(bytes: try self.store.readBlob(name, m.config.digest, what: "image config"), what: "image config \(m.config.digest)")
            })
        let out: ServedManifest
        if let (cm, learned) = converted {
            let bytes = cm.encoded()
            out = ServedManifest(bytes: bytes, mediaType: MediaType.ociManifest, digest: Digest.of(bytes))
            lock.lock()
            for (diffID, layer) in learned { plainLayers[diffID] = (layer, name) }
            lock.unlock()
        } else {
            out = ServedManifest(bytes: storedBytes, mediaType: m.mediaType ?? MediaType.ociManifest, digest: md)
        }
        lock.lock(); served[out.digest] = out; lock.unlock()
        return out
    }

    /// Media types every runtime reads (Docker 20.10 reads no zstd; nobody reads dogestry's lz4),
    /// and zstd too when `zstd`.
    static func readable(_ mediaType: String, zstd: Bool = false) -> Bool {
        guard let c = Compression(layerMediaType: mediaType) else { return true }   // not a layer dogestry knows: as it is
        return c == .gzip || c == .none || (zstd && c == .zstd)
    }

    /// `m` with each layer no runtime-neutral reader takes replaced by its plain tar (digest =
    /// diffID, size = uncompressed size); nil when every layer is already readable. Also returns
    /// which stored layer each plain one comes from.
    static func compatible(_ m: ImageManifest, zstd: Bool, config: () throws -> ImageConfig) throws -> (ImageManifest, [(Digest, Descriptor)])? {
        guard m.layers.contains(where: { !readable($0.mediaType, zstd: zstd) }) else { return nil }
        var diffIDs: [Digest]? = nil
        var out = m
        var learned: [(Digest, Descriptor)] = []
        for (i, l) in m.layers.enumerated() where !readable(l.mediaType, zstd: zstd) {
            var diffID = l.diffID
            if diffID == nil {
                if diffIDs == nil { diffIDs = try config().diffIDs }
                diffID = i < diffIDs!.count ? diffIDs![i] : nil
            }
            guard let diffID, let usize = l.uncompressedSize else { continue }   // cannot describe it: as stored
            out.layers[i] = Descriptor(mediaType: Compression.none.layerMediaType, digest: diffID, size: usize, annotations: l.annotations)
            learned.append((diffID, l))
        }
        out.mediaType = MediaType.ociManifest
        return (out, learned)
    }

    // MARK: blobs

    /// How the blob `digest` of `name` is answered.
    public func blob(name: String, ns: String?, digest: String) throws -> BlobAnswer {
        let names = try Self.candidates(name: name, ns: ns)
        guard let d = try? Digest(parsing: digest) else { throw RegistryError(400, "DIGEST_INVALID", "invalid digest \(digest)") }
        if let bytes = cachedConfig(d) { return .stored(digest: d, size: Int64(bytes.count), name: names.last!) }
        for n in names {
            guard let size = try store.blobSize(n, d) else {
                if remote != nil { break }   // one blob store for every name
                continue
            }
            if settings.redirect, let signer = remote as? SigningRemote {
                return .redirect(url: try signer.signedURL(forGet: Repository.blobKey(d), expires: settings.redirectExpiry), digest: d, size: size)
            }
            return .stored(digest: d, size: size, name: n)
        }
        guard settings.layers != .stored else { throw RegistryError.blobUnknown(digest) }
        if let (layer, n) = learnedLayer(d) { return .plain(layer: layer, diffID: d, size: layer.uncompressedSize!, name: n) }
        // The diffID index knows every layer a push stored (its blob must exist).
        if let e = try? store.repository?.lookupLayer(diffID: d), !Self.readable(e.mediaType) {
            return .plain(layer: e.descriptor(diffID: d), diffID: d, size: e.uncompressedSize, name: names.last!)
        }
        // A store with no index (a pull ticket, a registry): the layers of the name's images.
        for n in names {
            for t in (try? store.tags(n)) ?? [] {
                if let md = try? resolveTag(name: n, tag: t) { _ = try? serve(storedManifest: md, name: n, zstd: false) }
                if let (layer, ln) = learnedLayer(d) { return .plain(layer: layer, diffID: d, size: layer.uncompressedSize!, name: ln) }
            }
        }
        throw RegistryError.blobUnknown(digest)
    }

    func learnedLayer(_ d: Digest) -> (Descriptor, String)? {
        lock.lock(); defer { lock.unlock() }
        return plainLayers[d]
    }

    /// The body of `answer` from byte `offset` on (`.stored` and `.plain` only). It is verified
    /// against every digest and size it has when it starts at 0: the read that reaches the end
    /// throws instead of returning 0 on a mismatch, so a caller that withholds its last chunk
    /// until then never sends a complete corrupt blob.
    public func open(_ answer: BlobAnswer, offset: Int64 = 0) throws -> ByteSource {
        switch answer {
        case .stored(let d, let size, let name):
            if let bytes = try config(d, size: size, name: name) {
                let m = MemorySource(bytes)
                if offset > 0 { try m.skip(offset, what: "blob") }
                return m
            }
            let raw = try openBlob(name, d)
            if offset > 0 {
                try raw.skip(offset, what: "blob")
                return raw
            }
            return VerifyingSource(stored: raw, digest: d, size: size, where: store.displayURL)
        case .plain(let layer, let diffID, let size, let name):
            guard let c = Compression(layerMediaType: layer.mediaType) else { throw RegistryError.blobUnknown(diffID.description) }
            let raw = try openBlob(name, layer.digest)
            let v = try DecompressingLayerSource(layer: layer, compression: c, raw: raw, diffID: diffID, size: size, where: store.displayURL)
            if offset > 0 { try v.skip(offset, what: "blob") }
            return v
        case .redirect:
            throw DogestryError(.unsupported, "a redirected blob has no body")
        }
    }

    func cachedConfig(_ d: Digest) -> [UInt8]? {
        lock.lock(); defer { lock.unlock() }
        return configs[d]
    }

    /// The bytes of `d` when it is the config of a manifest served (read and verified once, then
    /// kept); nil for any other blob.
    func config(_ d: Digest, size: Int64, name: String) throws -> [UInt8]? {
        lock.lock()
        let cached = configs[d], known = configSizes[d]
        lock.unlock()
        if let cached { return cached }
        guard let known, known == size else { return nil }
        let bytes = try store.readBlob(name, d, what: "image config")
        guard Int64(bytes.count) == size else { throw DogestryError.corrupt("image config \(d) on \(store.displayURL) has \(bytes.count) bytes, its manifest says \(size)") }
        lock.lock(); configs[d] = bytes; lock.unlock()
        return bytes
    }

    func openBlob(_ name: String, _ d: Digest) throws -> ByteSource {
        do { return try store.openBlob(name, d) } catch let e as DogestryError where e.kind == .notFound {
            throw RegistryError.blobUnknown(d.description)
        }
    }

    // MARK: listings

    /// The tags of `name`, sorted; NAME_UNKNOWN when it has none.
    public func tagList(name: String, ns: String?) throws -> (name: String, tags: [String]) {
        for n in try Self.candidates(name: name, ns: ns) {
            let t = try store.tags(n)
            if !t.isEmpty { return (n, t) }
        }
        throw RegistryError.nameUnknown(name)
    }

    /// Every repository name (canonical form), sorted.
    public func catalog() throws -> [String] {
        let refs = try store.refs(warn: { _ in })
        return Array(Set(refs.map { ImageReference.normalizedName($0.name) })).sorted()
    }
}

/// A stored blob's stream that checks its digest and size: too many bytes throw at once, a
/// mismatch throws from the read that reaches the end.
final class VerifyingSource: ByteSource {
    let blob: HashingSource
    let digest: Digest, size: Int64
    let what: String
    var finished = false

    init(stored raw: ByteSource, digest: Digest, size: Int64, where remote: String) {
        blob = HashingSource(raw)
        self.digest = digest; self.size = size
        what = "blob \(digest) on \(remote)"
    }

    func read(into buffer: UnsafeMutableRawBufferPointer) throws -> Int {
        if finished { return 0 }
        let n: Int
        do { n = try blob.read(into: buffer) } catch let e as DogestryError where e.kind == .corrupt {
            throw DogestryError.corrupt("\(what) is corrupt (\(e.message))")
        }
        if blob.count > size { throw DogestryError.corrupt("\(what) is larger than \(size) bytes") }
        if n > 0 { return n }
        let b = blob.hasher.finalize()
        guard b == digest else { throw DogestryError.corrupt("\(what) is corrupt: its content hashes to \(b)") }
        guard blob.count == size else { throw DogestryError.corrupt("\(what) has \(blob.count) bytes, expected \(size)") }
        finished = true
        return 0
    }
}

/// A stored layer decompressed on a thread of its own (reading, hashing and decompressing the
/// blob) while the reader hashes the plain bytes: the two SHA-256 passes and the decompression no
/// longer run one after the other. The same checks as `VerifyingSource`: too many bytes throw at
/// once, a mismatch throws from the read that reaches the end. Dropping it stops the thread.
final class DecompressingLayerSource: ByteSource {
    let plain: HashingSource
    let layer: Descriptor, diffID: Digest, size: Int64
    let what: String
    /// The blob's digest and size, set by the producer before its stream ends.
    private let blobSeen = Box<(digest: Digest, count: Int64)?>(nil)
    var finished = false

    init(layer: Descriptor, compression: Compression, raw: ByteSource, diffID: Digest, size: Int64, where remote: String) throws {
        self.layer = layer; self.diffID = diffID; self.size = size
        let what = "layer blob \(layer.digest) on \(remote)"
        self.what = what
        let blob = HashingSource(raw)
        let decompressed = try compression.decompressor(from: blob)
        let blobSeen = self.blobSeen
        plain = HashingSource(ProducedStream(capacity: 1 << 20, name: "dogestry-serve-layer") { sink in
            do {
                _ = try decompressed.copy(to: sink, chunkSize: 256 << 10)
                _ = try blob.drain()   // trailing bytes after the compressed stream count toward the digest
            } catch let e as DogestryError where e.kind == .corrupt {
                throw DogestryError.corrupt("\(what) is corrupt (\(e.message))")
            }
            blobSeen.value = (blob.hasher.finalize(), blob.count)
        })
    }

    func read(into buffer: UnsafeMutableRawBufferPointer) throws -> Int {
        if finished { return 0 }
        let n = try plain.read(into: buffer)
        if plain.count > size { throw DogestryError.corrupt("\(what) is larger than \(size) bytes") }
        if n > 0 { return n }
        guard let (b, count) = blobSeen.value else { throw DogestryError.corrupt("\(what) ended early") }
        guard b == layer.digest else { throw DogestryError.corrupt("\(what) is corrupt: its content hashes to \(b)") }
        guard count == layer.size else { throw DogestryError.corrupt("\(what) has \(count) bytes, expected \(layer.size)") }
        let p = plain.hasher.finalize()
        guard p == diffID else { throw DogestryError.corrupt("\(what) decompresses to \(p), expected diffID \(diffID)") }
        guard plain.count == size else { throw DogestryError.corrupt("\(what) decompresses to \(plain.count) bytes, expected \(size)") }
        finished = true
        return 0
    }
}


/// A dictionary that forgets its oldest entries beyond `limit`.
struct BoundedCache<K: Hashable, V> {
    let limit: Int
    private var values: [K: V] = [:]
    private var order: [K] = []
    init(limit: Int) { self.limit = limit }
    subscript(key: K) -> V? {
        get { values[key] }
        set {
            if values[key] == nil { order.append(key) }
            values[key] = newValue
            if order.count > limit {
                let drop = order.count - limit
                for k in order.prefix(drop) { values[k] = nil }
                order.removeFirst(drop)
            }
        }
    }
}
