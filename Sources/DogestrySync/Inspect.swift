import DogestryCore
import Foundation

/// One image on a remote, as `dogestry inspect` shows it.
public struct ImageInspection: Sendable {
    public struct Layer: Sendable {
        /// The stored (compressed) blob.
        public var digest: Digest
        public var diffID: Digest
        public var mediaType: String
        /// `zstd`, `lz4`, `gzip` or `none` (nil: a media type dogestry does not know).
        public var compression: String?
        /// Compressed (stored) bytes.
        public var size: Int64
        public var uncompressedSize: Int64
        /// Whether another image's manifest on the remote uses this blob too.
        public var shared: Bool
    }

    public var manifestDigest: Digest
    /// The image index the tags point at, when the image is one platform of a multi-platform image.
    public var index: Digest?
    /// The platforms that index holds (`os/arch[/variant]`), in its order.
    public var platforms: [String] = []
    /// Bytes of the manifest object.
    public var manifestSize: Int64
    /// The image ID (config digest).
    public var id: Digest
    public var configSize: Int64
    public var os: String?
    public var architecture: String?
    public var created: String?
    /// Every tag on the remote pointing at this manifest (`name:tag`), sorted.
    public var tags: [String]
    /// Layers in manifest order (bottom first).
    public var layers: [Layer]
    /// Compressed bytes of the image's distinct layer blobs.
    public var layerBytes: Int64
    /// Uncompressed bytes of the image's distinct layers.
    public var uncompressedBytes: Int64
    /// Compressed bytes of this image's layer blobs that some other tagged image also uses.
    public var sharedBytes: Int64
    /// Manifest + config + distinct layer blobs: what the image occupies on the remote.
    public var storedBytes: Int64
    /// What removing this image's tags and pruning would free: manifest, config (unless another
    /// image uses it) and the layers no other image uses.
    public var uniqueBytes: Int64
    /// Other refs or manifests that could not be read, one line each (what this image shares with
    /// them is not counted).
    public var warnings: [String] = []
}

/// `dogestry inspect`: an image's manifest, config summary and layers, with what it shares.
public final class Inspector {
    public let store: ImageSource

    public init(store: ImageSource) { self.store = store }
    public convenience init(repository: Repository) { self.init(store: RepositoryImageStore(repository)) }

    /// Inspects the image `spec` names (`name[:tag]`, `name@sha256:…`, or an image-ID prefix).
    /// "Shared" means used by the manifest of another ref (one pointing at a different manifest).
    /// An image index names the image of `platform` (nil: the machine's own).
    public func inspect(_ spec: String, platform: Platform? = nil) throws -> ImageInspection {
        let puller = Puller(store: store, progress: SilentProgress(), platform: platform)
        let img = try puller.resolve(spec)
        let md = img.manifestDigest
        var warnings: [String] = []
        let refs = try store.refs(warn: { warnings.append($0) })
        let mine = Set([md] + (img.index.map { [$0] } ?? []))
        let tags = refs.filter { mine.contains($0.manifest) }.map { "\($0.name):\($0.tag)" }.sorted()
        // Blobs the other images use (every platform of another index); one that cannot be read
        // is skipped with a warning.
        var others = Set<Digest>()
        var nameOf: [Digest: String] = [:]
        for r in refs where nameOf[r.manifest] == nil { nameOf[r.manifest] = r.name }
        for om in Set(refs.map(\.manifest)).sorted() where !mine.contains(om) {
            do {
                let name = nameOf[om]!
                let bytes = try store.requireManifest(name, om).bytes
                var ms: [ImageManifest] = []
                if ManifestKind.of(bytes) == .index {
                    for e in try ImageIndex.decode(bytes, what: "image index \(om)").manifests {
                        others.insert(e.digest)
                        if !MediaType.isIndex(e.mediaType) {
                            ms.append(try ImageManifest.decode(try store.requireManifest(name, e.digest).bytes, what: "manifest \(e.digest)"))
                        }
                    }
                } else {
                    ms.append(try ImageManifest.decode(bytes, what: "manifest \(om)"))
                }
                for m in ms {
                    others.insert(m.config.digest)
                    for l in m.layers { others.insert(l.digest) }
                }
            } catch let e as DogestryError where [.notFound, .corrupt, .invalidInput, .unsupported].contains(e.kind) {
                let names = refs.filter { $0.manifest == om }.map { "\($0.name):\($0.tag)" }.sorted().joined(separator: ", ")
                warnings.append("skipping \(names): \(e.message)")
                continue
            }
        }
        let manifestSize = Int64(try puller.storedManifest(img.name, md).bytes.count)
        var layers: [ImageInspection.Layer] = []
        var seen = Set<Digest>()
        var layerBytes: Int64 = 0, uncompressed: Int64 = 0, shared: Int64 = 0
        for (i, l) in img.manifest.layers.enumerated() {
            let isShared = others.contains(l.digest)
            layers.append(.init(digest: l.digest, diffID: img.config.diffIDs[i], mediaType: l.mediaType,
                                compression: Compression(layerMediaType: l.mediaType)?.rawValue,
                                size: l.size, uncompressedSize: l.uncompressedSize ?? 0, shared: isShared))
            guard seen.insert(l.digest).inserted else { continue }
            layerBytes += l.size
            uncompressed += l.uncompressedSize ?? 0
            if isShared { shared += l.size }
        }
        let configSize = Int64(img.config.bytes.count)
        let unique = manifestSize + (others.contains(img.id) ? 0 : configSize) + layerBytes - shared
        return ImageInspection(manifestDigest: md, index: img.index, platforms: img.indexPlatforms, manifestSize: manifestSize, id: img.id, configSize: configSize,
                               os: img.config.os, architecture: img.config.architecture, created: img.config.created,
                               tags: tags, layers: layers, layerBytes: layerBytes, uncompressedBytes: uncompressed,
                               sharedBytes: shared, storedBytes: manifestSize + configSize + layerBytes, uniqueBytes: unique,
                               warnings: warnings)
    }
}
