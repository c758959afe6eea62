import Foundation

/// An entry of the diffID index: where a layer, known by its uncompressed digest, is stored.
public struct LayerIndexEntry: Codable, Sendable, Equatable {
    /// The stored (compressed) blob.
    public var digest: Digest
    public var mediaType: String
    public var size: Int64
    /// The layer's uncompressed size.
    public var uncompressedSize: Int64
    /// The proof of the entry: an image manifest on the remote that stores this diffID (its
    /// config's `rootfs.diff_ids[i]`) as this blob (its `layers[i]`). A push trusts the entry only
    /// when that manifest says so (docs/FORMAT.md, "Layer index"); nil in entries written before.
    public var manifest: Digest?

    public init(digest: Digest, mediaType: String, size: Int64, uncompressedSize: Int64, manifest: Digest? = nil) {
        self.digest = digest; self.mediaType = mediaType; self.size = size; self.uncompressedSize = uncompressedSize
        self.manifest = manifest
    }

    /// This entry with `manifest` as its proof.
    public func proven(by manifest: Digest) -> LayerIndexEntry {
        var e = self; e.manifest = manifest; return e
    }

    /// Whether `layer` (a manifest's layer descriptor) stores what this entry records, proof aside.
    public func matches(_ layer: Descriptor) -> Bool {
        layer.digest == digest && layer.size == size && layer.mediaType == mediaType
            && (layer.uncompressedSize.map { $0 == uncompressedSize } ?? true)
    }

    /// The layer descriptor a manifest uses for this stored layer.
    public func descriptor(diffID: Digest) -> Descriptor {
        Descriptor(mediaType: mediaType, digest: digest, size: size, annotations: [
            Annotation.diffID: diffID.description,
            Annotation.uncompressedSize: String(uncompressedSize),
        ])
    }
}

/// A tag on a remote: `name:tag` → manifest digest.
public struct RemoteRef: Sendable, Hashable {
    public var name: String
    public var tag: String
    public var manifest: Digest
    public var reference: ImageReference { ImageReference(name: name, tag: tag) }
    public init(name: String, tag: String, manifest: Digest) { self.name = name; self.tag = tag; self.manifest = manifest }
}

/// The dogestry repository format (docs/FORMAT.md) over any `Remote`.
///
/// Layout (keys relative to the remote root):
/// - `oci-layout`
/// - `blobs/sha256/<hex>` — layers, configs, manifests, content-addressed
/// - `repositories/<name>/_tags/<tag>` — one ref per tag: `sha256:<manifest hex>\n`
/// - `index/diffid/sha256/<hex>` — diffID → stored layer blob (JSON `LayerIndexEntry`)
///
/// Writers keep the order blobs → index → config → manifest → ref, so a ref never points at
/// something missing, whatever the transport's consistency.
public final class Repository {
    /// The store; written through `writer`, which refuses a read-only one.
    public let remote: ReadableRemote
    public init(remote: ReadableRemote) { self.remote = remote }
    /// The store as a writable remote, or a one-line error saying it is read-only.
    public var writer: Remote { get throws { try remote.writable() } }

    public static let layoutKey = "oci-layout"
    public static let layoutContent = Array("{\"imageLayoutVersion\":\"1.0.0\"}\n".utf8)
    public static let refsPrefix = "repositories/"
    public static let tagsMarker = "/_tags/"
    public static let blobsPrefix = "blobs/sha256/"
    public static let diffIDPrefix = "index/diffid/sha256/"

    public static func blobKey(_ d: Digest) -> String { blobsPrefix + d.hex }
    public static func diffIDKey(_ d: Digest) -> String { diffIDPrefix + d.hex }
    public static func refKey(name: String, tag: String) -> String { refsPrefix + name + tagsMarker + tag }

    /// Writes `oci-layout` if missing.
    public func ensureLayout() throws {
        if try remote.stat(Self.layoutKey) == nil { try writer.put(Self.layoutKey, bytes: Self.layoutContent) }
    }

    // MARK: blobs

    public func hasBlob(_ d: Digest) throws -> Bool { try remote.stat(Self.blobKey(d)) != nil }

    /// Reads a small blob (manifest, config) and verifies its digest.
    public func readBlob(_ d: Digest, what: String, limit: Int = RepositoryLimits.metadataBytes) throws -> [UInt8] {
        let bytes: [UInt8]
        do { bytes = try remote.read(Self.blobKey(d), limit: limit) } catch let e as DogestryError where e.kind == .notFound {
            throw DogestryError.notFound("\(what) \(d) is missing from \(remote.displayURL)")
        }
        let got = Digest.of(bytes)
        guard got == d else { throw DogestryError.corrupt("\(what) \(d) on \(remote.displayURL) is corrupt: its content hashes to \(got)") }
        return bytes
    }

    /// Stores a small blob unless present; returns its digest.
    @discardableResult
    public func putBlob(_ bytes: [UInt8]) throws -> Digest {
        let d = Digest.of(bytes)
        if try !hasBlob(d) { try writer.put(Self.blobKey(d), bytes: bytes) }
        return d
    }

    public func readManifest(_ d: Digest) throws -> ImageManifest {
        try ImageManifest.decode(try readBlob(d, what: "manifest"), what: "manifest \(d)")
    }

    public func readConfig(_ d: Digest) throws -> ImageConfig {
        try ImageConfig(bytes: try readBlob(d, what: "image config"), what: "image config \(d)")
    }

    /// Reads the config a manifest's descriptor names; its size must be the descriptor's.
    public func readConfig(_ descriptor: Descriptor) throws -> ImageConfig {
        let d = descriptor.digest
        guard descriptor.size >= 0, descriptor.size <= Int64(RepositoryLimits.metadataBytes) else {
            throw DogestryError.corrupt("image config \(d): its descriptor says \(descriptor.size) bytes, more than the \(RepositoryLimits.metadataBytes) a config may have")
        }
        let bytes = try readBlob(d, what: "image config")
        guard Int64(bytes.count) == descriptor.size else {
            throw DogestryError.corrupt("image config \(d) has \(bytes.count) bytes, its descriptor says \(descriptor.size)")
        }
        return try ImageConfig(bytes: bytes, what: "image config \(d)")
    }

    // MARK: diffID index

    /// The stored layer for `diffID`, if the index has it and its blob exists.
    public func lookupLayer(diffID: Digest) throws -> LayerIndexEntry? {
        try lookupLayerWithBlob(diffID: diffID)?.entry
    }

    /// The stored layer for `diffID` and its blob as `stat` saw it (size, modification time), if
    /// the index has it and its blob exists with the recorded size. An entry whose blob is gone
    /// (or has another size) counts as missing: the layer is uploaded again.
    public func lookupLayerWithBlob(diffID: Digest) throws -> (entry: LayerIndexEntry, blob: RemoteObject)? {
        guard let bytes = try readIndexEntry(diffID: diffID) else { return nil }
        guard let entry = Self.decodeIndexEntry(bytes) else {
            throw DogestryError.corrupt("diffID index entry \(Self.diffIDKey(diffID)) on \(remote.displayURL) is not valid")
        }
        guard let obj = try remote.stat(Self.blobKey(entry.digest)), obj.size == entry.size else { return nil }
        return (entry, obj)
    }

    /// The raw content of `diffID`'s index entry; nil when there is none.
    public func readIndexEntry(diffID: Digest) throws -> [UInt8]? {
        do { return try remote.read(Self.diffIDKey(diffID), limit: RepositoryLimits.indexEntryBytes) } catch let e as DogestryError where e.kind == .notFound {
            return nil
        }
    }

    /// The objects under `prefix` (`blobsPrefix`, `diffIDPrefix`) whose names are sha256 hex
    /// digests, by digest; `other` is told of any other object there.
    public func listByDigest(_ prefix: String, other: ((RemoteObject) -> Void)? = nil) throws -> [Digest: RemoteObject] {
        var out: [Digest: RemoteObject] = [:]
        try remote.list(prefix: prefix) { o in
            if let d = try? Digest(hex: String(o.key.dropFirst(prefix.count))) { out[d] = o } else { other?(o) }
        }
        return out
    }

    /// Parses the content of a diffID index entry; nil when it is not one.
    public static func decodeIndexEntry(_ bytes: [UInt8]) -> LayerIndexEntry? {
        try? JSONDecoder().decode(LayerIndexEntry.self, from: Data(bytes))
    }

    public func recordLayer(diffID: Digest, _ entry: LayerIndexEntry) throws {
        let enc = JSONEncoder(); enc.outputFormatting = [.sortedKeys]
        try writer.put(Self.diffIDKey(diffID), bytes: [UInt8](try enc.encode(entry)) + [10])
    }

    // MARK: refs

    /// The manifest a tag points at. `name` is normalised (`docker.io/library/x` is `x`); the
    /// canonical ref is read first, then the spellings refs had before names were normalised.
    public func readRef(name: String, tag: String) throws -> Digest? {
        for n in Self.refSpellings(name) {
            let key = Self.refKey(name: n, tag: tag)
            let bytes: [UInt8]
            do { bytes = try remote.read(key, limit: RepositoryLimits.refBytes) } catch let e as DogestryError where e.kind == .notFound { continue }
            return try Self.parseRef(bytes, key: key, remote: remote)
        }
        return nil
    }

    /// The stored names a ref of `name` may have, canonical first (docs/FORMAT.md, *Names*).
    public static func refSpellings(_ name: String) -> [String] {
        let canonical = ImageReference.normalizedName(name)
        return [canonical] + ImageReference.legacySpellings(of: canonical)
    }

    /// The tags of `name` (every spelling of it), sorted.
    public func listTags(name: String) throws -> [String] {
        var tags = Set<String>()
        for n in Self.refSpellings(name) {
            let prefix = Self.refsPrefix + n + Self.tagsMarker
            try remote.list(prefix: prefix) { o in
                let t = String(o.key.dropFirst(prefix.count))
                if ImageReference.isValidTag(t) { tags.insert(t) }
            }
        }
        return tags.sorted()
    }

    /// The refs as pulls see them: one per canonical `name:tag`, the one `readRef` would pick
    /// when an image was also tagged under an older spelling of its name.
    public static func resolvedView(_ refs: [RemoteRef]) -> [RemoteRef] {
        var best: [String: (rank: Int, ref: RemoteRef)] = [:]
        for r in refs {
            let canonical = ImageReference.normalizedName(r.name)
            let rank = refSpellings(canonical).firstIndex(of: r.name) ?? Int.max
            let key = canonical + ":" + r.tag
            if let b = best[key], b.rank <= rank { continue }
            best[key] = (rank, RemoteRef(name: canonical, tag: r.tag, manifest: r.manifest))
        }
        return best.values.map(\.ref).sorted { ($0.name, $0.tag) < ($1.name, $1.tag) }
    }

    static func parseRef(_ bytes: [UInt8], key: String, remote: ReadableRemote) throws -> Digest {
        guard let d = refDigest(bytes) else {
            throw DogestryError.corrupt("ref \(key) on \(remote.displayURL) does not hold a digest")
        }
        return d
    }

    /// The manifest digest a ref object holds; nil when it holds none.
    public static func refDigest(_ bytes: [UInt8]) -> Digest? {
        try? Digest(parsing: String(decoding: bytes, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines))
    }

    /// NAME and TAG of a ref key; nil when `key` is not `repositories/NAME/_tags/TAG` with a
    /// valid name and tag.
    public static func parseRefKey(_ key: String) -> (name: String, tag: String)? {
        guard key.hasPrefix(refsPrefix) else { return nil }
        let rest = String(key.dropFirst(refsPrefix.count))
        guard let r = rest.range(of: tagsMarker, options: .backwards) else { return nil }
        let name = String(rest[..<r.lowerBound]), tag = String(rest[r.upperBound...])
        guard ImageReference.isValidName(name), ImageReference.isValidTag(tag) else { return nil }
        return (name, tag)
    }

    /// Writes the ref under the canonical form of `name`.
    public func writeRef(name: String, tag: String, manifest: Digest) throws {
        try writer.put(Self.refKey(name: ImageReference.normalizedName(name), tag: tag), bytes: Array((manifest.description + "\n").utf8))
    }

    /// Removes the ref under every spelling of `name`, so an older one cannot resurface.
    public func deleteRef(name: String, tag: String) throws {
        let w = try writer
        for n in Self.refSpellings(name) {
            let key = Self.refKey(name: n, tag: tag)
            let present = n == ImageReference.normalizedName(name) ? true : try remote.stat(key) != nil
            if present { try w.delete(key) }
        }
    }

    /// Every ref on the remote, sorted by name then tag. Keys that are not valid refs are reported through `invalid`.
    /// A ref that cannot be read (too large, not a digest) throws, unless `unreadable` is given:
    /// then it is reported there (its key and the error) and the others are still listed.
    public func listRefs(invalid: ((String) -> Void)? = nil, unreadable: ((String, DogestryError) -> Void)? = nil) throws -> [RemoteRef] {
        var keys: [String] = []
        try remote.list(prefix: Self.refsPrefix) { keys.append($0.key) }
        var out: [RemoteRef] = []
        for key in keys.sorted() {
            guard let (name, tag) = Self.parseRefKey(key) else { invalid?(key); continue }
            do {
                let bytes: [UInt8]
                do { bytes = try remote.read(key, limit: RepositoryLimits.refBytes) } catch let e as DogestryError where e.kind == .notFound { continue }
                out.append(RemoteRef(name: name, tag: tag, manifest: try Self.parseRef(bytes, key: key, remote: remote)))
            } catch let e as DogestryError where unreadable != nil && (e.kind == .corrupt || e.kind == .invalidInput) {
                unreadable?(key, e)
            }
        }
        return out
    }
}

/// The largest objects and images a repository holds, in one place: writers refuse to store
/// anything readers would refuse to read (docs/FORMAT.md, *Limits*), so one absurd push can
/// never leave an object that breaks `list`, `inspect` or `prune` for everyone.
public enum RepositoryLimits {
    /// The most bytes of a manifest or an image config (also of a metadata file in an archive).
    public static let metadataBytes = 16 << 20
    /// The most bytes of a diffID index entry.
    public static let indexEntryBytes = 64 * 1024
    /// The most bytes of a ref.
    public static let refBytes = 4096
    /// The most layers an image may have (Docker's overlay storage runs at most 125); with it a
    /// manifest stays far below `metadataBytes`, and an absurd archive is refused before any
    /// per-layer structure is built.
    public static let layers = 4096

    /// Throws unless `count` layers are within `layers`; `what` names the image or file.
    public static func checkLayerCount(_ count: Int, what: String) throws {
        if count > layers {
            throw DogestryError.invalid("\(what) lists \(count) layers, more than the \(layers) an image may have")
        }
    }
}
