import Foundation

/// An image found in a `docker save` archive.
public struct ArchiveImage: Sendable {
    public var config: ImageConfig
    public var repoTags: [String]
    /// The image ID (config digest).
    public var id: Digest { config.digest }
}

/// A layer file met while streaming an archive.
public struct ArchiveLayer: Sendable {
    /// Its path inside the archive.
    public var path: String
    /// The diffID the layout implies before the content is read (Podman's `<diffid>.tar`, an
    /// uncompressed OCI blob, or a manifest and config read earlier); nil when unknown.
    public var expectedDiffID: Digest?
    /// Its size in the archive (compressed size for compressed layer files).
    public var size: Int64
    /// True when `expectedDiffID` cannot be taken on trust: it rests only on the file's name
    /// (`<diffid>.tar`), or the name and the image config disagree. Such a layer must be read.
    public var mustRead = false
    /// Names the layer in errors: the archive and the layer's path.
    public var what: String = "layer"

    public init(path: String, expectedDiffID: Digest?, size: Int64, mustRead: Bool = false, what: String = "layer") {
        self.path = path; self.expectedDiffID = expectedDiffID; self.size = size; self.mustRead = mustRead; self.what = what
    }
}

/// Receives each layer file as it streams past; must consume `body` and return the layer's diffID
/// (the SHA-256 of its uncompressed content).
public typealias ArchiveLayerHandler = (_ layer: ArchiveLayer, _ body: ByteSource) throws -> Digest

/// Reads every `docker save` layout in one streaming pass, whatever the entry order:
/// legacy Docker (`<id>/layer.tar`, `<id>/json`, `manifest.json`, `repositories`), Podman
/// (`<diffid>.tar` plus `<id>/layer.tar` symlinks, `<id>.json` configs) and Docker ≥ 25 (an OCI
/// layout, `blobs/sha256/…`, `index.json` plus `manifest.json`). Layer files may be uncompressed,
/// gzip or zstd (detected by magic bytes). Small JSON files are kept in memory; layers are handed
/// to the handler and never buffered.
public final class DockerArchiveReader {
    let what: String
    let tar: TarReader
    static let metadataLimit = RepositoryLimits.metadataBytes

    var files: [String: [UInt8]] = [:]          // small metadata files by path
    var aliases: [String: String] = [:]         // symlink/hardlink path -> target path
    var layerDiffIDs: [String: Digest] = [:]    // layer path -> computed diffID

    /// Layer path → diffID, learnt beforehand (see `scanLayout`), used as `expectedDiffID`.
    var known: [String: Digest] = [:]

    public init(_ source: ByteSource, what: String, knownDiffIDs: [String: Digest] = [:]) {
        self.what = what
        self.tar = TarReader(source, what: what)
        self.known = knownDiffIDs
    }

    /// Reads only headers and small metadata files (layer bodies are skipped, by seeking when the
    /// source is a file) and returns, for every layer file the archive's images use, its diffID
    /// according to the image configs. Lets a push decide about each layer before it streams past.
    public func scanLayout() throws -> [String: Digest] {
        try walk { _, _, _, _ in }   // layer bodies are left unread: the tar reader skips them
        var out: [String: Digest] = [:]
        for e in ((try? parseManifestJSON()) ?? nil) ?? [] {
            guard let cfgBytes = files[resolve(e.config)], let cfg = try? ImageConfig(bytes: cfgBytes, what: "config"),
                  cfg.diffIDs.count == e.layers.count else { continue }
            for (i, l) in e.layers.enumerated() { out[resolve(l)] = cfg.diffIDs[i] }
        }
        return out
    }

    /// Streams the archive, calling `handler` for each layer file; returns the images it holds.
    public func read(handler: ArchiveLayerHandler) throws -> [ArchiveImage] {
        try walk { path, size, blobHex, body in
            try self.readLayer(path: path, size: size, blobHex: blobHex, body: body, handler: handler)
        }
        return try resolveImages()
    }

    /// Goes through every entry once: records links, keeps metadata files in memory, and hands
    /// each layer file (path, size, blob hex name if any, body) to `layer`.
    private func walk(_ layer: (String, Int64, String?, ByteSource) throws -> Void) throws {
        var sawEntry = false
        while let h = try tar.next() {
            sawEntry = true
            let path = try normalizeArchivePath(h.name, what: what)
            switch h.type {
            case .directory: continue
            case .symlink:
                aliases[path] = try resolveArchiveLink(from: path, target: h.linkName, what: what)
            case .hardlink:
                aliases[path] = try normalizeArchivePath(h.linkName, what: what)
            case .file:
                try readFile(path: path, size: h.size, layer: layer)
            case .other:
                try tar.body.drain()
            }
        }
        guard sawEntry else { throw DogestryError.invalid("\(what) is empty") }
    }

    private func isLayerPath(_ p: String) -> Bool {
        p.hasSuffix(".tar") || p.hasPrefix("blobs/sha256/")
    }

    private func readFile(path: String, size: Int64, layer: (String, Int64, String?, ByteSource) throws -> Void) throws {
        let body = tar.body
        let blobHex: String? = path.hasPrefix("blobs/sha256/") ? String(path.dropFirst(13)) : nil
        if let hex = blobHex, !Digest.isHex64(hex) {
            throw DogestryError.invalid("\(what): \(path) is not named by a sha256 digest")
        }
        if !isLayerPath(path) || (blobHex != nil && size <= Self.metadataLimit) {
            // Metadata (or an OCI blob that may be JSON): peek to decide.
            let peek = PeekableSource(body)
            let head = try peek.peek(1)
            if !isLayerPath(path) || head == [UInt8(ascii: "{")] {
                if size > Self.metadataLimit {
                    throw DogestryError.invalid("\(what): \(path) is \(size) bytes, too large for a metadata file")
                }
                let bytes = try peek.readAll(limit: Self.metadataLimit, what: "\(what): \(path)")
                if let hex = blobHex, Digest.of(bytes).hex != hex {
                    throw DogestryError.corrupt("\(what): \(path) does not match its digest (content hashes to \(Digest.of(bytes)))")
                }
                files[path] = bytes
                return
            }
            try layer(path, size, blobHex, peek)
            return
        }
        try layer(path, size, blobHex, body)
    }

    private func readLayer(path: String, size: Int64, blobHex: String?, body: ByteSource, handler: ArchiveLayerHandler) throws {
        let base = (path as NSString).lastPathComponent
        var claimed: Digest? = nil   // Podman: <diffid>.tar, a claim the content must prove
        if base.hasSuffix(".tar"), !path.contains("/"), let d = try? Digest(hex: String(base.dropLast(4))) { claimed = d }
        let fromConfig = try known[path] ?? expectedFromManifest(path)
        let layer = ArchiveLayer(path: path, expectedDiffID: fromConfig ?? claimed, size: size,
                                 mustRead: claimed != nil && fromConfig != claimed, what: "\(what): layer \(path)")
        let hashing = blobHex != nil ? HashingSource(body) : nil
        let diffID = try handler(layer, hashing ?? body)
        if let claimed, diffID != claimed {
            throw DogestryError.corrupt("\(what): layer \(path) is named after diffID \(claimed) but its content hashes to \(diffID)")
        }
        if let hs = hashing {
            try hs.drain()
            let got = hs.hasher.finalize()
            guard got.hex == blobHex else {
                throw DogestryError.corrupt("\(what): \(path) does not match its digest (content hashes to \(got))")
            }
        }
        layerDiffIDs[path] = diffID
    }

    /// The diffID a layer path will have, if manifest.json and the image config were already read.
    private func expectedFromManifest(_ path: String) throws -> Digest? {
        guard let entries = try? parseManifestJSON() else { return nil }
        for e in entries {
            guard let idx = e.layers.firstIndex(where: { resolve($0) == path }),
                  let cfgBytes = files[resolve(e.config)],
                  let cfg = try? ImageConfig(bytes: cfgBytes, what: "config"),
                  idx < cfg.diffIDs.count else { continue }
            return cfg.diffIDs[idx]
        }
        return nil
    }

    private func resolve(_ p: String) -> String {
        var cur = (try? normalizeArchivePath(p, what: what)) ?? p
        var hops = 0
        while let next = aliases[cur], hops < 16 { cur = next; hops += 1 }
        return cur
    }

    struct ManifestEntry { var config: String; var repoTags: [String]; var layers: [String] }

    /// manifest.json, parsed once (layer after layer asks for it).
    private var parsedManifest: (bytes: Int, entries: [ManifestEntry])?

    private func parseManifestJSON() throws -> [ManifestEntry]? {
        guard let bytes = files["manifest.json"] else { return nil }
        if let p = parsedManifest, p.bytes == bytes.count { return p.entries }
        guard let arr = (try? JSONSerialization.jsonObject(with: Data(bytes))) as? [[String: Any]] else {
            throw DogestryError.corrupt("\(what): manifest.json is not valid JSON (expected a list of images)")
        }
        let entries: [ManifestEntry] = try arr.map { o in
            guard let cfg = o["Config"] as? String, let layers = o["Layers"] as? [String] else {
                throw DogestryError.corrupt("\(what): manifest.json entry lacks Config or Layers")
            }
            try RepositoryLimits.checkLayerCount(layers.count, what: "\(what): manifest.json entry \(cfg)")
            return ManifestEntry(config: cfg, repoTags: (o["RepoTags"] as? [String]) ?? [], layers: layers)
        }
        parsedManifest = (bytes.count, entries)
        return entries
    }

    private func resolveImages() throws -> [ArchiveImage] {
        if let entries = try parseManifestJSON() {
            guard !entries.isEmpty else { throw DogestryError.invalid("\(what): manifest.json lists no images") }
            return try entries.map { e in
                let cfgPath = resolve(e.config)
                guard let cfgBytes = files[cfgPath] else {
                    throw DogestryError.invalid("\(what): manifest.json names config \(e.config), which is missing from the archive")
                }
                let cfg = try ImageConfig(bytes: cfgBytes, what: "\(what): config \(e.config)")
                try checkConfigName(cfgPath, cfg)
                try checkLayers(e.layers, cfg: cfg, image: e.repoTags.first ?? cfg.digest.short)
                return ArchiveImage(config: cfg, repoTags: e.repoTags)
            }
        }
        if let index = files["index.json"] { return try resolveOCI(index) }
        throw DogestryError.invalid("\(what) has neither manifest.json nor index.json: it is not a docker save archive")
    }

    private func checkConfigName(_ path: String, _ cfg: ImageConfig) throws {
        let base = (path as NSString).lastPathComponent
        let stem = base.hasSuffix(".json") ? String(base.dropLast(5)) : base
        if Digest.isHex64(stem), stem != cfg.digest.hex {
            throw DogestryError.corrupt("\(what): config \(path) does not match its name (content hashes to \(cfg.digest))")
        }
    }

    private func checkLayers(_ paths: [String], cfg: ImageConfig, image: String) throws {
        guard paths.count == cfg.diffIDs.count else {
            throw DogestryError.corrupt("\(what): image \(image) lists \(paths.count) layers but its config has \(cfg.diffIDs.count) diff_ids")
        }
        for (i, p) in paths.enumerated() {
            let r = resolve(p)
            guard let got = layerDiffIDs[r] else {
                if files[r] != nil {
                    throw DogestryError.invalid("\(what): layer \(p) of image \(image) is not a layer file")
                }
                throw DogestryError.invalid("\(what): manifest.json names layer \(p), which is missing from the archive")
            }
            guard got == cfg.diffIDs[i] else {
                throw DogestryError.corrupt("\(what): layer \(p) of image \(image) hashes to \(got) but its config says \(cfg.diffIDs[i])")
            }
        }
    }

    /// A pure OCI archive (index.json without manifest.json).
    private func resolveOCI(_ indexBytes: [UInt8]) throws -> [ArchiveImage] {
        struct Index: Decodable { var manifests: [Descriptor] }
        let index: Index
        do { index = try JSONDecoder().decode(Index.self, from: Data(indexBytes)) } catch {
            throw DogestryError.corrupt("\(what): index.json is not valid: \(jsonErrorSummary(error))")
        }
        var out: [ArchiveImage] = []
        for desc in index.manifests {
            guard let mb = files["blobs/sha256/" + desc.digest.hex] else {
                throw DogestryError.invalid("\(what): index.json names manifest \(desc.digest), which is missing from the archive")
            }
            let m = try ImageManifest.decode(mb, what: "\(what): manifest \(desc.digest)")
            guard let cb = files["blobs/sha256/" + m.config.digest.hex] else {
                throw DogestryError.invalid("\(what): manifest names config \(m.config.digest), which is missing from the archive")
            }
            let cfg = try ImageConfig(bytes: cb, what: "\(what): config \(m.config.digest)")
            var tags: [String] = []
            if let name = desc.annotations?["io.containerd.image.name"] { tags.append(name) }
            try checkLayers(m.layers.map { "blobs/sha256/" + $0.digest.hex }, cfg: cfg, image: tags.first ?? cfg.digest.short)
            out.append(ArchiveImage(config: cfg, repoTags: tags))
        }
        guard !out.isEmpty else { throw DogestryError.invalid("\(what): index.json lists no images") }
        return out
    }
}

/// A layer's uncompressed content from its raw (possibly compressed) bytes, checked as it
/// streams to be a tar archive (`TarCheckingSource`, errors naming `what`); also returns the
/// compression found.
public func layerContent(of body: ByteSource, what: String) throws -> (ByteSource, Compression) {
    let (plain, compression) = try autoDecompress(body)
    return (TarCheckingSource(plain, what: what), compression)
}

/// Computes a layer's diffID from its raw (possibly compressed) content, which must be a tar.
public func layerDiffID(of body: ByteSource, what: String = "layer") throws -> Digest {
    let (plain, _) = try layerContent(of: body, what: what)
    let h = HashingSink()
    try plain.copy(to: h)
    return h.digest()
}

/// An image to write into a docker-load archive.
public struct LoadImage: Sendable {
    public var config: ImageConfig
    public var repoTags: [String]
    public init(config: ImageConfig, repoTags: [String]) { self.config = config; self.repoTags = repoTags }
}

/// Writes a tarball that `docker load` (Docker Engine and Podman) accepts: image configs,
/// `manifest.json` and `repositories` first, then each layer file once as `<diffid>/layer.tar`.
public final class DockerArchiveWriter {
    let tar: TarWriter
    public init(_ sink: ByteSink) { self.tar = TarWriter(sink) }

    public static func layerPath(_ diffID: Digest) -> String { diffID.hex + "/layer.tar" }

    /// Writes configs, manifest.json and repositories.
    public func writeMetadata(_ images: [LoadImage]) throws {
        var written = Set<Digest>()
        var manifest: [ManifestEntry] = []
        var repositories: [String: [String: String]] = [:]
        for img in images {
            if written.insert(img.config.digest).inserted {
                try tar.writeFile(name: img.config.digest.hex + ".json", bytes: img.config.bytes)
            }
            manifest.append(ManifestEntry(Config: img.config.digest.hex + ".json", RepoTags: img.repoTags,
                                          Layers: img.config.diffIDs.map(Self.layerPath)))
            if let top = img.config.diffIDs.last {
                for t in img.repoTags {
                    if let r = try? ImageReference(parsing: t), let tag = r.tag {
                        repositories[r.name, default: [:]][tag] = top.hex
                    }
                }
            }
        }
        try tar.writeFile(name: "manifest.json", bytes: try Self.json(manifest, [.sortedKeys, .withoutEscapingSlashes]))
        try tar.writeFile(name: "repositories", bytes: try Self.json(repositories, [.sortedKeys]))
    }

    /// One image in `manifest.json` (docker's own key names).
    struct ManifestEntry: Encodable {
        var Config: String
        var RepoTags: [String]
        var Layers: [String]
    }

    static func json<T: Encodable>(_ value: T, _ formatting: JSONEncoder.OutputFormatting) throws -> [UInt8] {
        let e = JSONEncoder()
        e.outputFormatting = formatting
        return [UInt8](try e.encode(value))
    }

    /// Starts the layer file for `diffID`; write exactly `size` bytes then close the sink.
    public func beginLayer(_ diffID: Digest, size: Int64) throws -> ByteSink {
        try tar.writeHeader(TarHeader(name: diffID.hex, type: .directory, mode: 0o755))
        return try tar.beginFile(name: Self.layerPath(diffID), size: size)
    }

    public func finish() throws { try tar.finish() }
}
