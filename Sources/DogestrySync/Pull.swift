import DogestryCore
import DogestryRemotes
import Foundation

/// An image found on a remote, ready to be pulled.
public struct ResolvedImage: Sendable {
    /// The repository the image was read from (its blobs are read from there).
    public var name: String = ""
    public var manifestDigest: Digest
    public var manifest: ImageManifest
    public var config: ImageConfig
    /// The RepoTags the pulled image gets.
    public var tags: [String]
    /// The image index the reference named, when it named one (this image is its entry for the
    /// platform asked for).
    public var index: Digest? = nil
    /// The platforms that index holds (`os/arch[/variant]`), in its order.
    public var indexPlatforms: [String] = []
    public var id: Digest { config.digest }
}

/// What a pull did.
public struct PullReport: Sendable {
    public var images: [ResolvedImage] = []
    public var layersFetched = 0
    public var layersSkipped = 0
    /// Compressed bytes read from the remote for layers.
    public var bytesFetched: Int64 = 0
}

/// Resolves image specs on a remote and writes verified docker-load archives from it.
public final class Puller {
    /// Where images are read from: a dogestry remote or a registry.
    public let store: ImageSource
    let progress: ProgressReporter
    /// The platform picked from image indexes (nil: the machine's own, `Platform.host`).
    public var platform: Platform?

    public init(store: ImageSource, progress: ProgressReporter, platform: Platform? = nil) {
        self.store = store; self.progress = progress; self.platform = platform
    }

    public convenience init(repository: Repository, progress: ProgressReporter, platform: Platform? = nil) {
        self.init(store: RepositoryImageStore(repository), progress: progress, platform: platform)
    }

    /// A pull ticket's remote: it holds one image and names it.
    var scoped: ImageScopedRemote? { store.repository?.remote as? ImageScopedRemote }

    /// Manifests and indexes read so far (small, content-addressed): resolving a tag reads its
    /// manifest once, and what is built from it (the image, a copy item) reuses those bytes.
    private var read: [Digest: StoredManifest] = [:]
    private let lock = NSLock()

    /// The manifest or index `d` of repository `name`, read (and verified) once.
    public func storedManifest(_ name: String, _ d: Digest) throws -> StoredManifest {
        lock.lock(); let cached = read[d]; lock.unlock()
        if let cached { return cached }
        return remember(try store.requireManifest(name, d))
    }

    /// The manifest `reference` (a tag or digest) names in `name`, read once; nil when absent.
    func storedManifest(_ name: String, reference: String) throws -> StoredManifest? {
        if let d = try? Digest(parsing: reference) {
            lock.lock(); let cached = read[d]; lock.unlock()
            if let cached { return cached }
        }
        return try store.manifest(name, reference: reference).map(remember)
    }

    private func remember(_ m: StoredManifest) -> StoredManifest {
        lock.lock(); read[m.digest] = m; lock.unlock()
        return m
    }

    /// What `spec` (`name`, `name:tag`, `name@sha256:…`) names on the remote: the manifest or
    /// index digest and the tags a pull gives it; nil when it is no reference that is there
    /// (an image-ID prefix is resolved by `resolve`).
    public func reference(_ spec: String) throws -> (name: String, digest: Digest, tags: [String])? {
        guard !spec.hasPrefix("sha256:"), let ref = try? ImageReference(parsing: spec) else { return nil }
        if let d = ref.digest {
            guard try storedManifest(ref.name, reference: d.description) != nil else { throw DogestryError.notFound("manifest \(d) is not on \(store.displayURL)") }
            return (ref.name, d, ref.tag.map { ["\(ref.name):\($0)"] } ?? [])
        }
        if let m = try storedManifest(ref.name, reference: ref.tag ?? "latest") { return (ref.name, m.digest, [ref.description]) }
        if Digest.idPrefix(spec) == nil { throw DogestryError.notFound("image \(ref) is not on \(store.displayURL)") }
        return nil
    }

    /// Resolves `name`, `name:tag`, `name@sha256:…` or a unique image-ID prefix.
    public func resolve(_ spec: String) throws -> ResolvedImage {
        let hexSpec = Digest.idPrefix(spec)
        if let (name, d, tags) = try reference(spec) { return try load(name, manifest: d, tags: tags) }
        guard let hexSpec else {
            _ = try ImageReference(parsing: spec)  // throws the precise syntax error
            throw DogestryError.invalid("invalid image reference \"\(spec)\"")
        }
        return try resolveID(prefix: hexSpec, spec: spec)
    }

    /// Finds the image whose ID (config digest) starts with `prefix`, scanning the refs.
    func resolveID(prefix: String, spec: String) throws -> ResolvedImage {
        // A ref or manifest that cannot be read names no image that could be pulled: skipped.
        let refs = try store.refs(warn: { _ in })
        var byManifest: [Digest: [RemoteRef]] = [:]
        for r in refs { byManifest[r.manifest, default: []].append(r) }
        var matches: [Digest: (Digest, [RemoteRef])] = [:]   // config digest -> (manifest, refs)
        for (md, rs) in byManifest {
            let m: ImageManifest, child: Digest
            do { (child, m, _) = try imageManifest(rs[0].name, md) } catch let e as DogestryError where [.notFound, .corrupt, .invalidInput, .unsupported].contains(e.kind) {
                continue
            }
            if m.config.digest.hex.hasPrefix(prefix) || md.hex.hasPrefix(prefix) || child.hex.hasPrefix(prefix) {
                matches[m.config.digest, default: (md, [])].1.append(contentsOf: rs)
            }
        }
        guard !matches.isEmpty else { throw DogestryError.notFound("no image with ID \(spec) on \(store.displayURL)") }
        guard matches.count == 1, let (md, rs) = matches.values.first else {
            throw DogestryError.invalid("image ID prefix \(spec) is ambiguous on \(store.displayURL): \(matches.keys.map { $0.short }.sorted().joined(separator: ", "))")
        }
        let sorted = rs.sorted { ($0.name, $0.tag) < ($1.name, $1.tag) }
        return try load(sorted[0].name, manifest: md, tags: sorted.map { "\($0.name):\($0.tag)" })
    }

    /// The image manifest `md` stands for: itself, or an index's entry for the platform.
    public func imageManifest(_ name: String, _ md: Digest, tags: [String] = []) throws -> (digest: Digest, manifest: ImageManifest, platforms: [String]) {
        let bytes = try storedManifest(name, md).bytes
        guard ManifestKind.of(bytes) == .index else { return (md, try ImageManifest.decode(bytes, what: "manifest \(md)"), []) }
        let index = try ImageIndex.decode(bytes, what: "image index \(md)")
        let what = "image index \(md)" + (tags.first.map { " (\($0))" } ?? "")
        try index.refuseNested(what: what)
        let entry = try index.manifest(for: platform ?? .host, what: what)
        return (entry.digest, try ImageManifest.decode(try storedManifest(name, entry.digest).bytes, what: "manifest \(entry.digest)"),
                index.images.compactMap { $0.platform?.description })
    }

    func load(_ name: String, manifest top: Digest, tags: [String]) throws -> ResolvedImage {
        let (md, loaded, platforms) = try imageManifest(name, top, tags: tags)
        var m = loaded
        let cfg = try readConfig(name, m.config)
        guard cfg.diffIDs.count == m.layers.count else {
            throw DogestryError.corrupt("manifest \(md) lists \(m.layers.count) layers but its config has \(cfg.diffIDs.count) diff_ids")
        }
        for (i, l) in m.layers.enumerated() {
            guard Compression(layerMediaType: l.mediaType) != nil else {
                throw DogestryError.unsupportedMedia(l.mediaType, md)
            }
            if let d = l.diffID, d != cfg.diffIDs[i] {
                throw DogestryError.corrupt("manifest \(md): layer \(i) diffID \(d) disagrees with the config's \(cfg.diffIDs[i])")
            }
            if l.uncompressedSize == nil, let e = try recordedLayer(l, diffID: cfg.diffIDs[i]) {
                // A manifest stored byte for byte (from a registry): the layer index records the size.
                m.layers[i] = e.descriptor(diffID: cfg.diffIDs[i])
            }
        }
        return ResolvedImage(name: ImageReference.normalizedName(name), manifestDigest: md, manifest: m, config: cfg, tags: tags,
                             index: top == md ? nil : top, indexPlatforms: platforms)
    }

    /// The config a manifest's descriptor names; its size must be the descriptor's.
    func readConfig(_ name: String, _ descriptor: Descriptor) throws -> ImageConfig {
        let d = descriptor.digest
        guard descriptor.size >= 0, descriptor.size <= Int64(RepositoryLimits.metadataBytes) else {
            throw DogestryError.corrupt("image config \(d): its descriptor says \(descriptor.size) bytes, more than the \(RepositoryLimits.metadataBytes) a config may have")
        }
        let bytes = try store.readBlob(name, d, what: "image config")
        guard Int64(bytes.count) == descriptor.size else {
            throw DogestryError.corrupt("image config \(d) has \(bytes.count) bytes, its descriptor says \(descriptor.size)")
        }
        return try ImageConfig(bytes: bytes, what: "image config \(d)")
    }

    /// The layer index's entry for `diffID` when it records exactly this blob (a dogestry remote's).
    func recordedLayer(_ l: Descriptor, diffID: Digest) throws -> LayerIndexEntry? {
        guard let repo = store.repository, let bytes = try repo.readIndexEntry(diffID: diffID), let e = Repository.decodeIndexEntry(bytes) else { return nil }
        return e.digest == l.digest && e.size == l.size && e.mediaType == l.mediaType ? e : nil
    }

    /// Resolves several specs, merging those that name the same image.
    /// Resolves what a pull asked for: `specs`, or for a remote that holds one image (a pull
    /// ticket) that image by default, refusing any other.
    public func resolveRequested(_ specs: [String]) throws -> [ResolvedImage] {
        guard let scoped else {
            guard !specs.isEmpty else { throw DogestryError.invalid("name at least one IMAGE to pull from \(store.displayURL)") }
            return try resolveAll(specs)
        }
        var out: [ResolvedImage] = []
        for s in specs.isEmpty ? scoped.defaultSpecs : specs {
            let r: ResolvedImage
            do { r = try resolve(s) } catch let e as DogestryError where e.kind == .notFound {
                throw DogestryError.notFound("\(scoped.displayURL) holds only \(scoped.imageDescription), not \(s)")
            }
            guard r.manifestDigest == scoped.scopedManifest, r.id == scoped.scopedConfig else {
                throw DogestryError.corrupt("\(scoped.displayURL) names image \(scoped.scopedConfig) but its manifest \(r.manifestDigest) is for image \(r.id)")
            }
            if let i = out.firstIndex(where: { $0.id == r.id }) {
                for t in r.tags where !out[i].tags.contains(t) { out[i].tags.append(t) }
            } else { out.append(r) }
        }
        return out
    }

    public func resolveAll(_ specs: [String]) throws -> [ResolvedImage] {
        var out: [ResolvedImage] = []
        for s in specs {
            let r = try resolve(s)
            if let i = out.firstIndex(where: { $0.id == r.id }) {
                for t in r.tags where !out[i].tags.contains(t) { out[i].tags.append(t) }
            } else { out.append(r) }
        }
        return out
    }

    /// Streams a docker-load archive of `images` into `sink`, verifying every blob and diffID on the way.
    ///
    /// Layers whose chain ID is in `skipChainIDs` are left out (the target engine has them).
    /// On a digest mismatch the last chunk of the layer is withheld, so the archive is left
    /// truncated and no consumer can load it; the error is thrown.
    public func writeArchive(_ images: [ResolvedImage], to sink: ByteSink, skipChainIDs: Set<Digest> = []) throws -> PullReport {
        let target = ArchiveTarget(name: "output", sink: sink, skip: skipChainIDs)
        let report = try writeArchives(images, to: [target])
        if let e = target.error { throw e }
        return report
    }

    /// Writes one docker-load archive per target, reading each needed blob from the remote once
    /// and fanning its verified bytes out to every target that lacks the layer. A target whose
    /// sink fails is dropped (its `error` set) and the others go on; a corrupt blob fails all.
    public func writeArchives(_ images: [ResolvedImage], to targets: [ArchiveTarget]) throws -> PullReport {
        var report = PullReport(images: images)
        let meta = images.map { LoadImage(config: $0.config, repoTags: $0.tags) }
        for t in targets { t.attempt { try t.writer.writeMetadata(meta) } }
        for img in images {
            let chains = Digest.chainIDs(img.config.diffIDs)
            for (i, layer) in img.manifest.layers.enumerated() {
                let diffID = img.config.diffIDs[i]
                var needing: [ArchiveTarget] = []
                for t in targets where t.error == nil && t.done.insert(diffID).inserted {
                    if t.skip.contains(chains[i]) {
                        t.layersSkipped += 1
                        progress.report(.end(id: diffID.short, summary: targets.count > 1 ? "already in \(t.name)" : "already in engine"))
                    } else {
                        needing.append(t)
                    }
                }
                if needing.isEmpty { continue }
                try copyLayer(img.name, layer, diffID: diffID, into: needing)
                for t in needing where t.error == nil { t.layersWritten += 1 }
                report.layersFetched += 1
                report.bytesFetched += layer.size
            }
        }
        report.layersSkipped = targets.map { $0.layersSkipped }.max() ?? 0
        for t in targets { t.attempt { try t.writer.finish() } }
        return report
    }

    /// Opens layer blob `layer` of repository `name`, or a one-line error saying it is missing.
    func openLayer(_ name: String, _ layer: Descriptor) throws -> ByteSource {
        do { return try store.openBlob(name, layer.digest) } catch let e as DogestryError where e.kind == .notFound {
            throw DogestryError.notFound("layer blob \(layer.digest) is missing from \(store.displayURL)")
        }
    }

    func copyLayer(_ name: String, _ layer: Descriptor, diffID: Digest, into targets: [ArchiveTarget]) throws {
        guard let usize = layer.uncompressedSize else { return try copySpooledLayer(name, layer, diffID: diffID, into: targets) }
        progress.report(.begin(id: diffID.short, action: "fetching", total: usize))
        let raw = try openLayer(name, layer)
        let blob = HashingSource(raw)
        let plain = HashingSource(try Compression(layerMediaType: layer.mediaType)!.decompressor(from: blob))
        var outs: [(ArchiveTarget, ByteSink)] = []
        for t in targets {
            t.attempt { outs.append((t, try t.writer.beginLayer(diffID, size: usize))) }
        }
        let progressSink = ProgressSink(NullSink(), id: diffID.short, progress: progress)
        func emit(_ b: UnsafeRawBufferPointer) throws {
            try progressSink.write(b)
            for (t, s) in outs where t.error == nil { t.attempt { try s.write(b) } }
            if !outs.contains(where: { $0.0.error == nil }) {
                throw targets.first?.error ?? DogestryError(.aborted, "every target failed")
            }
        }
        // Double-buffered copy: the last chunk goes out only after every check passed.
        var a = UnsafeMutableRawBufferPointer.allocate(byteCount: streamChunkSize, alignment: 16)
        var b = UnsafeMutableRawBufferPointer.allocate(byteCount: streamChunkSize, alignment: 16)
        defer { a.deallocate(); b.deallocate() }
        var held = 0
        func fail(_ m: String) -> DogestryError { DogestryError.corrupt("layer blob \(layer.digest) on \(store.displayURL) \(m); the pull was stopped") }
        // A decompressor error ("zstd stream is corrupt…") must still name the blob.
        func readBlob(_ body: () throws -> Int64) throws -> Int64 {
            do { return try body() } catch let e as DogestryError where e.kind == .corrupt {
                throw fail("is corrupt (\(e.message))")
            }
        }
        while true {
            let n = Int(try readBlob { Int64(try plain.fill(b)) })
            if n == 0 { break }
            if held > 0 { try emit(UnsafeRawBufferPointer(rebasing: a[0..<held])) }
            swap(&a, &b); held = n
            if plain.count > usize { throw fail("is larger than its recorded size") }
        }
        _ = try readBlob { try blob.drain() }   // trailing bytes after the compressed stream still count toward the digest
        let blobDigest = blob.hasher.finalize()
        guard blobDigest == layer.digest else { throw fail("is corrupt: its content hashes to \(blobDigest)") }
        guard blob.count == layer.size else { throw fail("has \(blob.count) bytes, its manifest says \(layer.size)") }
        let got = plain.hasher.finalize()
        guard got == diffID else { throw fail("decompresses to \(got), expected diffID \(diffID)") }
        guard plain.count == usize else { throw fail("decompresses to \(plain.count) bytes, expected \(usize)") }
        if held > 0 { try emit(UnsafeRawBufferPointer(rebasing: a[0..<held])) }
        try progressSink.close()
        for (t, s) in outs where t.error == nil { t.attempt { try s.close() } }
        progress.report(.end(id: diffID.short, summary: "fetched \(formatBytes(layer.size))"))
    }
}

extension Puller {
    /// A layer whose uncompressed size nothing records (a registry's manifest): a docker-load
    /// entry needs the size first, so the layer is decompressed into an unnamed temporary file,
    /// every check made, and then sent from there.
    func copySpooledLayer(_ name: String, _ layer: Descriptor, diffID: Digest, into targets: [ArchiveTarget]) throws {
        progress.report(.begin(id: diffID.short, action: "fetching", total: layer.size))
        let raw = try openLayer(name, layer)
        let spooled = try LayerCheck.decompress(raw, layer: layer, diffID: diffID, from: store.displayURL, keep: true,
                                                progress: ProgressSink(NullSink(), id: diffID.short, progress: progress))
        guard let file = spooled.file else { return }
        defer { file.discard() }
        var outs: [(ArchiveTarget, ByteSink)] = []
        for t in targets { t.attempt { outs.append((t, try t.writer.beginLayer(diffID, size: spooled.size))) } }
        let src = try FileSource(path: file.path)
        let buf = UnsafeMutableRawBufferPointer.allocate(byteCount: streamChunkSize, alignment: 16)
        defer { buf.deallocate() }
        while true {
            let n = try src.read(into: buf)
            if n == 0 { break }
            for (t, s) in outs where t.error == nil { t.attempt { try s.write(UnsafeRawBufferPointer(rebasing: buf[0..<n])) } }
            if !outs.contains(where: { $0.0.error == nil }) { throw targets.first?.error ?? DogestryError(.aborted, "every target failed") }
        }
        for (t, s) in outs where t.error == nil { t.attempt { try s.close() } }
        progress.report(.end(id: diffID.short, summary: "fetched \(formatBytes(layer.size))"))
    }
}

/// Checks of a stored layer against its manifest and config: the blob's digest and size, the
/// diffID and size of what it decompresses to.
public enum LayerCheck {
    /// Reads `blob` (the stored bytes of `layer`) to its end, decompressing it; throws a
    /// one-line error naming the blob on any mismatch. With `keep`, the uncompressed tar is left
    /// in an unnamed temporary file for the caller.
    public static func decompress(_ blob: ByteSource, layer: Descriptor, diffID: Digest, from: String, keep: Bool,
                                  progress: ByteSink? = nil) throws -> (size: Int64, file: StagedFile?) {
        guard let c = Compression(layerMediaType: layer.mediaType) else {
            throw DogestryError(.unsupported, "layer blob \(layer.digest) on \(from) has unsupported media type \(layer.mediaType)")
        }
        func fail(_ m: String) -> DogestryError { DogestryError.corrupt("layer blob \(layer.digest) on \(from) \(m)") }
        let hashed = HashingSource(blob)
        let plain = HashingSource(try c.decompressor(from: hashed))
        let file = keep ? try TempDirectory.staged(prefix: "dogestry-layer") : nil
        let sink: ByteSink = try file.map { try $0.sink() } ?? NullSink()
        do {
            let out: ByteSink = progress.map { TeeSink([sink, $0]) } ?? sink
            _ = try plain.copy(to: out)
            _ = try hashed.drain()
            try sink.close()
        } catch let e as DogestryError where e.kind == .corrupt {
            file?.discard()
            throw fail("is corrupt (\(e.message))")
        }
        let problem: String?
        let bd = hashed.hasher.finalize(), pd = plain.hasher.finalize()
        if bd != layer.digest { problem = "is corrupt: its content hashes to \(bd)" }
        else if hashed.count != layer.size { problem = "has \(hashed.count) bytes, its manifest says \(layer.size)" }
        else if pd != diffID { problem = "decompresses to \(pd), expected diffID \(diffID)" }
        else { problem = nil }
        if let problem { file?.discard(); throw fail(problem) }
        return (plain.count, file)
    }
}

/// One docker-load archive being written by `Puller.writeArchives`.
public final class ArchiveTarget {
    public let name: String
    public let skip: Set<Digest>
    let writer: DockerArchiveWriter
    var done = Set<Digest>()
    public internal(set) var error: Error?
    public internal(set) var layersWritten = 0
    public internal(set) var layersSkipped = 0

    /// `skip` holds the chain IDs whose layer files are left out.
    public init(name: String, sink: ByteSink, skip: Set<Digest>) {
        self.name = name; self.skip = skip; self.writer = DockerArchiveWriter(sink)
    }

    func attempt(_ body: () throws -> Void) {
        guard error == nil else { return }
        do { try body() } catch { self.error = error }
    }
}

extension DogestryError {
    static func unsupportedMedia(_ mt: String, _ md: Digest) -> DogestryError {
        DogestryError(.unsupported, "manifest \(md) has a layer of unsupported media type \(mt)")
    }
}

/// Writes to a file atomically: an unnamed temporary file beside it (`O_TMPFILE`, so a killed
/// or interrupted run leaves nothing), linked into place on `commit()`, dropped on `abort()`.
/// `-` means standard output (written directly).
public final class OutputFile {
    public let sink: ByteSink
    let target: String
    let temp: AnonymousFile?
    var finished = false

    public init(path: String) throws {
        if path == "-" {
            sink = FileSink.standardOutput(); target = path; temp = nil
            return
        }
        let abs = path.hasPrefix("/") ? path : FileManager.default.currentDirectoryPath + "/" + path
        let dir = (abs as NSString).deletingLastPathComponent
        guard FS.isDirectory(dir) else { throw DogestryError.notFound("cannot write \(path): directory \(dir) does not exist") }
        if FS.isDirectory(abs) { throw DogestryError.invalid("cannot write \(path): it is a directory") }
        let name = (abs as NSString).lastPathComponent
        // What killed runs on file systems without O_TMPFILE (or mid-link) left beside it.
        AnonymousFile.sweep(dir, prefix: name + ".partial")
        AnonymousFile.sweep(dir, prefix: name + ".link")
        let t = try AnonymousFile(in: dir, prefix: name + ".partial")
        sink = try FileSink(path: t.path, exclusive: false, sync: true)
        target = abs; temp = t
    }

    public func commit() throws {
        finished = true
        try sink.close()
        try temp?.publish(at: target)
    }

    public func abort() {
        guard !finished else { return }
        finished = true
        try? sink.close()
        temp?.discard()
    }

    deinit { abort() }
}
