import DogestryCore
import DogestryHTTP
import Foundation

/// What happened (or, with a dry run, would happen) to one blob of a copy.
public struct CopiedBlob: Sendable, Equatable, Codable {
    public enum Kind: String, Sendable, Codable { case layer, config, manifest, index }
    public enum State: String, Sendable, Codable { case copied, present, mounted, wouldCopy = "would-copy" }
    public var digest: Digest
    public var kind: Kind
    public var size: Int64
    public var state: State
    /// Copied by the store itself (S3 CopyObject), not streamed through dogestry.
    public var serverSide: Bool? = nil
    /// The repository of the destination registry it was mounted from.
    public var mountedFrom: String? = nil
}

/// One thing a copy names: a manifest or an image index, and the tags it gets on the destination.
public struct CopyItem: Sendable {
    /// The image name on the destination (a registry keeps blobs per name).
    public var name: String
    /// The image name it is read from on the source (the same, but for `dogestry tag`).
    public var sourceName: String
    /// `name:tag` refs written on the destination (none for `name@digest`).
    public var tags: [String]
    /// What the refs point at: the manifest, or the index.
    public var top: Digest
    public var topBytes: [UInt8]
    public var isIndex: Bool
    /// The image manifests: the one, or the index's entries.
    public var manifests: [CopyManifest]

    /// The image ID, for a single image.
    public var id: Digest? { isIndex ? nil : manifests.first?.manifest.config.digest }
    public var label: String { tags.isEmpty ? "\(name)@\(top)" : tags.joined(separator: ", ") }
}

/// One manifest of a copy, read and verified on the source.
public struct CopyManifest: Sendable {
    public var digest: Digest
    public var bytes: [UInt8]
    public var manifest: ImageManifest
    /// The config, when it is an image's (with `rootfs.diff_ids`; an attestation's is not).
    public var config: ImageConfig?
    public var configBytes: [UInt8]
    public var platform: Platform?
}

/// What a copy did.
public struct CopyReport: Sendable {
    /// What was copied (tags as written on the destination).
    public var items: [CopyItem] = []
    /// Every distinct blob of those images, in the order they were handled.
    public var blobs: [CopiedBlob] = []
    public var bytesCopied: Int64 { blobs.filter { $0.state == .copied }.reduce(0) { $0 + $1.size } }
    /// The blobs that moved, or with a dry run would move.
    public var moved: [CopiedBlob] { blobs.filter { $0.state == .copied || $0.state == .wouldCopy } }
}

/// Copies images from one image store to another (`dogestry copy`, and `push` into a registry):
/// only the blobs the destination lacks move, each verified against its digest and size as it
/// streams, several at once; manifests after their blobs, refs last, so an interrupted copy leaves
/// no ref to anything missing and a new run moves only the rest. Stored compression, manifests,
/// indexes and configs are kept byte for byte.
///
/// Either end may be a dogestry remote or an OCI registry (`ImageSource` / `ImageDestination`).
/// Into a registry, every blob is asked for in the repository it is wanted in, and mounted from
/// another repository of the registry when one is known to hold it. Into a dogestry remote, the
/// remote's own bookkeeping applies: a layer whose manifest does not record its uncompressed size
/// (a registry's) is decompressed once as it arrives, its diffID checked, and the layer index
/// records what `pull` and `serve` need; objects reused are protected from a concurrent prune.
public final class Copier {
    public let source: ImageSource
    public let destination: ImageDestination
    let progress: ProgressReporter
    let threads: Int
    let touchAfter: Int
    /// Layers go by the store's own copy when the destination can copy from the source.
    let serverSide: Bool
    /// `--platform`: the index entries kept (nil: the whole index).
    public var platforms: [Platform]?

    public init(source: ImageSource, destination: ImageDestination, progress: ProgressReporter = SilentProgress(),
                threads: Int = 3, touchAfter: Int = ReuseGuard.defaultTouchAfter, serverSide: Bool = true) {
        self.source = source; self.destination = destination; self.progress = progress
        self.threads = max(1, threads); self.touchAfter = touchAfter; self.serverSide = serverSide
    }

    public convenience init(source: Repository, destination: Repository, progress: ProgressReporter = SilentProgress(),
                            threads: Int = 3, touchAfter: Int = ReuseGuard.defaultTouchAfter, serverSide: Bool = true) {
        self.init(source: RepositoryImageStore(source), destination: RepositoryImageStore(destination), progress: progress,
                  threads: threads, touchAfter: touchAfter, serverSide: serverSide)
    }

    /// The destination's dogestry repository: its layer index and reuse guard (nil for a registry).
    var destinationRepository: Repository? { destination.repository }

    /// The destination as a store that copies from the source itself, if it can and may.
    var serverCopier: ServerSideCopying? {
        guard serverSide, let s = source.repository, let c = destination.repository?.remote as? ServerSideCopying,
              c.canCopyServerSide(from: s.remote) else { return nil }
        return c
    }

    /// Resolves specs on the source and keeps the manifests it read for `item`.
    lazy var reader = Puller(store: source, progress: SilentProgress())

    /// Whether the destination keeps dogestry's layer index (a registry does not).
    var keepsIndex: Bool { destinationRepository != nil }

    /// The specs `specs` name on the source (a pull ticket's own image when none is named), or
    /// every tag with `all`.
    public func specs(_ specs: [String], all: Bool) throws -> [String] {
        if all {
            let refs = try source.refs(warn: { self.progress.report(.warning($0)) })
            guard !refs.isEmpty else { throw DogestryError.notFound("\(source.displayURL) holds no tagged image") }
            return refs.map { "\($0.name):\($0.tag)" }
        }
        if specs.isEmpty, let scoped = source.repository?.remote as? ImageScopedRemote { return scoped.defaultSpecs }
        return specs
    }

    /// The images `specs` name, as `copyRecompressing` takes them (one platform of an index).
    public func resolveImages(_ specs: [String], all: Bool, platform: Platform? = nil) throws -> [ResolvedImage] {
        let puller = Puller(store: source, progress: SilentProgress(), platform: platform)
        if all { return try puller.resolveAll(try self.specs([], all: true)) }
        return try puller.resolveRequested(specs)
    }

    /// What `specs` name on the source (every tag with `all`), read and verified: the manifests
    /// or indexes, the index entries `platforms` keeps, their manifests and configs.
    public func resolve(_ specs: [String], all: Bool) throws -> [CopyItem] {
        let puller = reader
        var items: [CopyItem] = []
        for spec in try self.specs(specs, all: all) {
            var top: (name: String, digest: Digest, tags: [String])
            if let r = try puller.reference(spec) { top = r } else {
                let img = try puller.resolve(spec)   // an image-ID prefix
                top = (img.name, img.index ?? img.manifestDigest, img.tags)
            }
            let name = ImageReference.normalizedName(top.name)
            if let scoped = source.repository?.remote as? ImageScopedRemote, top.digest != scoped.scopedManifest {
                throw DogestryError.notFound("\(scoped.displayURL) holds only \(scoped.imageDescription), not \(spec)")
            }
            if let i = items.firstIndex(where: { $0.top == top.digest && $0.name == name }) {
                for t in top.tags where !items[i].tags.contains(t) { items[i].tags.append(t) }
                continue
            }
            items.append(try item(name: name, top: top.digest, tags: top.tags))
        }
        return items
    }

    /// Reads what `top` names in repository `sourceName` of the source; it is written as `name`
    /// (the same unless a tag gives the image a new name).
    func item(name: String, sourceName: String? = nil, top: Digest, tags: [String]) throws -> CopyItem {
        let from = sourceName ?? name
        let bytes = try reader.storedManifest(from, top).bytes
        guard ManifestKind.of(bytes) == .index else {
            return CopyItem(name: name, sourceName: from, tags: tags, top: top, topBytes: bytes, isIndex: false,
                            manifests: [try manifest(from, top, bytes: bytes, platform: nil)])
        }
        var index = try ImageIndex.decode(bytes, what: "image index \(top)")
        try index.refuseNested(what: "image index \(top) (\(tags.first ?? name))")
        var entries = index.manifests
        if let platforms {
            let images = index.images
            entries = images.filter { e in platforms.contains { p in e.platform.map(p.accepts) ?? false } }
            guard !entries.isEmpty else {
                throw DogestryError.notFound("image index \(top) (\(tags.first ?? name)) has no image for \(platforms.map(\.description).joined(separator: ", ")) (it has \(images.compactMap { $0.platform?.description }.joined(separator: ", ")))")
            }
        }
        let manifests = try entries.map { e -> CopyManifest in
            let b = try reader.storedManifest(from, e.digest).bytes
            guard Int64(b.count) == e.size else {
                throw DogestryError.corrupt("manifest \(e.digest) has \(b.count) bytes, image index \(top) says \(e.size)")
            }
            return try manifest(from, e.digest, bytes: b, platform: e.platform)
        }
        if platforms != nil {
            if manifests.count == 1 {
                // One platform: the refs point at its manifest, as a pull of that platform would.
                return CopyItem(name: name, sourceName: from, tags: tags, top: manifests[0].digest, topBytes: manifests[0].bytes, isIndex: false, manifests: manifests)
            }
            index.manifests = entries
            let narrowed = index.encoded()
            return CopyItem(name: name, sourceName: from, tags: tags, top: Digest.of(narrowed), topBytes: narrowed, isIndex: true, manifests: manifests)
        }
        return CopyItem(name: name, sourceName: from, tags: tags, top: top, topBytes: bytes, isIndex: true, manifests: manifests)
    }

    func manifest(_ name: String, _ d: Digest, bytes: [UInt8], platform: Platform?) throws -> CopyManifest {
        let m = try ImageManifest.decode(bytes, what: "manifest \(d)")
        guard m.config.size >= 0, m.config.size <= Int64(RepositoryLimits.metadataBytes) else {
            throw DogestryError.corrupt("manifest \(d): its config descriptor says \(m.config.size) bytes")
        }
        let cb = try source.readBlob(name, m.config.digest, what: "config")
        guard Int64(cb.count) == m.config.size else {
            throw DogestryError.corrupt("config \(m.config.digest) has \(cb.count) bytes, manifest \(d) says \(m.config.size)")
        }
        // An image's config must list one diffID per layer; other artifacts' configs are copied as they are.
        var config: ImageConfig?
        if m.layers.allSatisfy({ Compression(layerMediaType: $0.mediaType) != nil }), let c = try? ImageConfig(bytes: cb, what: "config") {
            guard c.diffIDs.count == m.layers.count else {
                throw DogestryError.corrupt("manifest \(d) lists \(m.layers.count) layers but its config has \(c.diffIDs.count) diff_ids")
            }
            for (i, l) in m.layers.enumerated() {
                if let a = l.diffID, a != c.diffIDs[i] {
                    throw DogestryError.corrupt("manifest \(d): layer \(i) diffID \(a) disagrees with the config's \(c.diffIDs[i])")
                }
            }
            config = c
        }
        return CopyManifest(digest: d, bytes: bytes, manifest: m, config: config, configBytes: cb, platform: platform)
    }

    /// A layer to move.
    struct LayerJob {
        var layer: Descriptor; var diffID: Digest?; var manifest: Digest
        /// The image name it is read from and written to.
        var sourceName: String; var name: String
        /// The layer index entry for this layer, uncompressed to `u` bytes.
        func entry(uncompressedSize u: Int64) -> LayerIndexEntry {
            LayerIndexEntry(digest: layer.digest, mediaType: layer.mediaType, size: layer.size, uncompressedSize: u, manifest: manifest)
        }
    }

    /// Copies `items`; with `dryRun` only reports what would move.
    public func copy(_ items: [CopyItem], dryRun: Bool = false) throws -> CopyReport {
        let dstRepo = destinationRepository
        if !dryRun { try dstRepo?.ensureLayout() }
        var report = CopyReport()
        let guardian = dstRepo.map { ReuseGuard(repository: $0, touchAfter: touchAfter) }
        if dstRepo == nil { try checkRegistryCompression(items) }
        var handled = Set<Digest>()
        for item in items {
            // A registry keeps blobs per repository: what one name has is asked again for the next.
            if dstRepo == nil { handled = [] }
            for cm in item.manifests {
                let md = cm.digest
                var missing: [LayerJob] = []
                var present: [(LayerJob, RemoteObject)] = []
                for (i, l) in cm.manifest.layers.enumerated() where !handled.contains(l.digest) {
                    handled.insert(l.digest)
                    let job = LayerJob(layer: l, diffID: cm.config?.diffIDs[i], manifest: md, sourceName: item.sourceName, name: item.name)
                    if let there = try placed(job, dryRun: dryRun) {
                        report.blobs.append(CopiedBlob(digest: l.digest, kind: .layer, size: l.size, state: there.state, mountedFrom: there.from))
                        if let o = there.object { present.append((job, o)) }
                    } else {
                        missing.append(job)
                        report.blobs.append(CopiedBlob(digest: l.digest, kind: .layer, size: l.size, state: dryRun ? .wouldCopy : .copied,
                                                       serverSide: serverCopier != nil ? true : nil))
                    }
                }
                if !dryRun {
                    for (job, there) in present {
                        guard let guardian, let diffID = job.diffID, let entry = try indexEntry(job, diffID: diffID, readingFrom: nil) else { continue }
                        try guardian.protectLayer(diffID: diffID, entry: entry, blob: there, indexPointsHere: false)
                    }
                    let server = serverCopier
                    let entries: [LayerIndexEntry?] = try Workers.map(missing, threads: threads) { job in
                        if let server, let src = self.source.repository {
                            // The store copies; the source blob's digest was proven by its manifest
                            // and the copy is checked by size (the bytes never pass through here).
                            try self.checkSourceSize(job.layer, in: src)
                            try server.copyServerSide(from: src.remote, key: Repository.blobKey(job.layer.digest), size: job.layer.size)
                            return nil
                        }
                        return try self.copyBlob(job)
                    }
                    if let dstRepo {
                        for (job, entry) in zip(missing, entries) {
                            guard let diffID = job.diffID, let e = try entry ?? indexEntry(job, diffID: diffID, readingFrom: nil) else { continue }
                            try dstRepo.recordLayer(diffID: diffID, e)
                        }
                    }
                }
                try copyConfig(item, cm, handled: &handled, report: &report, dryRun: dryRun, guardian: guardian)
                try copyManifest(item, StoredManifest(bytes: cm.bytes), kind: .manifest, tag: nil, handled: &handled, report: &report, dryRun: dryRun, guardian: guardian)
                if !dryRun, let guardian {
                    try guardian.verify(layers: cm.config?.diffIDs ?? [], blobs: [cm.manifest.config.digest, md])
                }
            }
            let top = StoredManifest(bytes: item.topBytes)
            if item.isIndex {
                try copyManifest(item, top, kind: .index, tag: nil, handled: &handled, report: &report, dryRun: dryRun, guardian: guardian)
            }
            report.items.append(item)
            if dryRun { continue }
            var wrote = false
            for t in item.tags {
                let r = try ImageReference(parsing: t)
                // (A dogestry remote has just stored or checked the manifest: only the ref is written.)
                if let dstRepo { try dstRepo.writeRef(name: r.name, tag: r.tag ?? "latest", manifest: item.top) } else {
                    wrote = try destination.putManifest(r.name, top, tag: r.tag ?? "latest") || wrote
                }
            }
            if dstRepo == nil, !item.tags.isEmpty {
                report.blobs.append(CopiedBlob(digest: top.digest, kind: item.isIndex ? .index : .manifest, size: Int64(top.bytes.count),
                                               state: wrote ? .copied : .present))
            }
            let what = item.isIndex ? "index of \(item.manifests.count) platform(s)" : "image \(item.id?.short ?? "")"
            progress.report(.info("copied \(item.label) (\(what))"))
        }
        return report
    }

    /// Whether the destination already has `job`'s layer in the job's repository, or (not in a
    /// dry run) linked it from another of its repositories: the state to report and, on a
    /// dogestry remote, the object as `stat` saw it (for the reuse guard). Nil: it must be sent.
    func placed(_ job: LayerJob, dryRun: Bool) throws -> (state: CopiedBlob.State, from: String?, object: RemoteObject?)? {
        let l = job.layer
        if let repo = destinationRepository {
            guard let o = try repo.remote.stat(Repository.blobKey(l.digest)), o.size == l.size else { return nil }
            return (.present, nil, o)
        }
        if dryRun {
            guard let n = try destination.blobSize(job.name, l.digest), n == l.size || n < 0 else { return nil }
            return (.present, nil, nil)
        }
        switch try destination.placeBlob(job.name, l.digest, size: l.size, from: (source, job.sourceName)) {
        case .present?: return (.present, nil, nil)
        case .mounted(let from)?: return (.mounted, from, nil)
        case nil: return nil
        }
    }

    /// Stores the config of `cm` unless the destination has it in the item's repository.
    func copyConfig(_ item: CopyItem, _ cm: CopyManifest, handled: inout Set<Digest>, report: inout CopyReport,
                    dryRun: Bool, guardian: ReuseGuard?) throws {
        let d = cm.manifest.config.digest, bytes = cm.configBytes
        guard handled.insert(d).inserted else { return }
        let job = LayerJob(layer: cm.manifest.config, diffID: nil, manifest: cm.digest, sourceName: item.sourceName, name: item.name)
        let there = try placed(job, dryRun: dryRun)
        report.blobs.append(CopiedBlob(digest: d, kind: .config, size: Int64(bytes.count),
                                       state: there?.state ?? (dryRun ? .wouldCopy : .copied), mountedFrom: there?.from))
        if dryRun { return }
        if there == nil { try destination.putBlob(item.name, d, bytes: bytes) } else if let o = there?.object { try guardian?.protectBlob(bytes, digest: d, object: o) }
    }

    /// Stores a manifest or index by digest unless the destination has it (a registry is asked
    /// by `putManifest` itself).
    func copyManifest(_ item: CopyItem, _ m: StoredManifest, kind: CopiedBlob.Kind, tag: String?, handled: inout Set<Digest>,
                      report: inout CopyReport, dryRun: Bool, guardian: ReuseGuard?) throws {
        guard handled.insert(m.digest).inserted else { return }
        let size = Int64(m.bytes.count)
        if let repo = destinationRepository {
            let there = try repo.remote.stat(Repository.blobKey(m.digest))
            report.blobs.append(CopiedBlob(digest: m.digest, kind: kind, size: size, state: there != nil ? .present : (dryRun ? .wouldCopy : .copied)))
            if dryRun { return }
            if let there { try guardian?.protectBlob(m.bytes, digest: m.digest, object: there) } else { try destination.putManifest(item.name, m, tag: nil) }
            return
        }
        // Into a registry: the top manifest goes up with its tags (a PUT by tag), the others by digest.
        let isTop = m.digest == item.top && !item.tags.isEmpty
        if dryRun {
            let there = try destination.manifest(item.name, reference: m.digest.description) != nil
            report.blobs.append(CopiedBlob(digest: m.digest, kind: kind, size: size, state: there ? .present : .wouldCopy))
            return
        }
        if isTop { return }   // reported with its tags
        let wrote = try destination.putManifest(item.name, m, tag: nil)
        report.blobs.append(CopiedBlob(digest: m.digest, kind: kind, size: size, state: wrote ? .copied : .present))
    }

    /// Into a registry: lz4 layers (dogestry's own media type) are refused before anything moves,
    /// since no registry client reads them; zstd layers get a warning, since Docker's classic image
    /// store cannot pull them (containerd, Podman, skopeo and Docker's containerd store can).
    func checkRegistryCompression(_ items: [CopyItem]) throws {
        var zstd = false
        for item in items {
            for cm in item.manifests {
                for l in cm.manifest.layers {
                    switch Compression(layerMediaType: l.mediaType) {
                    case .lz4?:
                        throw DogestryError.invalid("\(item.label): layer \(l.digest) is lz4, which no registry client reads; copy it into \(destination.displayURL) with --compression gzip (or zstd)")
                    case .zstd?: zstd = true
                    default: break
                    }
                }
            }
        }
        if zstd {
            progress.report(.warning("layers are zstd: containerd, Podman and skopeo pull them from \(destination.displayURL), Docker's classic image store cannot (--compression gzip suits every client)"))
        }
    }

    /// The layer index entry the destination gets for `job`: from its manifest's annotations, the
    /// source's or destination's index, or (`readingFrom`, else the destination's blob) by
    /// decompressing the blob, its diffID checked. Nil when the layer is no image layer.
    /// The entry from the layer's manifest annotations or an index entry either side keeps.
    func knownIndexEntry(_ job: LayerJob, diffID: Digest) -> LayerIndexEntry? {
        let l = job.layer
        if let u = l.uncompressedSize { return job.entry(uncompressedSize: u) }
        for repo in [source.repository, destination.repository].compactMap({ $0 }) {
            if let b = try? repo.readIndexEntry(diffID: diffID), let e = Repository.decodeIndexEntry(b), e.digest == l.digest, e.size == l.size {
                return job.entry(uncompressedSize: e.uncompressedSize)
            }
        }
        return nil
    }

    func indexEntry(_ job: LayerJob, diffID: Digest, readingFrom file: String?) throws -> LayerIndexEntry? {
        if let e = knownIndexEntry(job, diffID: diffID) { return e }
        let l = job.layer
        guard Compression(layerMediaType: l.mediaType) != nil else { return nil }
        let src: ByteSource = try file.map { try FileSource(path: $0) } ?? destination.openBlob(job.name, l.digest)
        return job.entry(uncompressedSize: try LayerCheck.decompress(src, layer: l, diffID: diffID, from: destination.displayURL, keep: false).size)
    }

    /// Copies `images` recompressing the layers DST lacks with `options.compression`: the source
    /// is read as a verified `docker load` stream (every blob digest and diffID checked) and pushed
    /// from it, so the manifests are new (their layers have new digests) while the image IDs and
    /// tags stay. Layers DST already holds, in any compression, are reused as a push reuses them.
    public func copyRecompressing(_ images: [ResolvedImage], options: TransferOptions) throws -> PushReport {
        let puller = Puller(store: source, progress: progress)
        let stream = ProducedStream(capacity: 4 << 20, name: "dogestry-copy-read") { sink in
            _ = try puller.writeArchive(images, to: sink)
        }
        let what = "images from \(source.displayURL)"
        do {
            return try StagedRegistryPush.run(into: destination, options: options, progress: progress, threads: threads) {
                try $0.pushArchive(stream, what: what, selections: [])
            }
        } catch {
            // The reader's own error (a corrupt source blob) says more than the stream's end.
            throw stream.stop() ?? error
        }
    }

    func checkSourceSize(_ l: Descriptor, in source: Repository) throws {
        guard let o = try source.remote.stat(Repository.blobKey(l.digest)) else {
            throw DogestryError.notFound("blob \(l.digest) is missing from \(source.remote.displayURL)")
        }
        guard o.size == l.size else {
            throw DogestryError.corrupt("blob \(l.digest) on \(source.remote.displayURL) has \(o.size) bytes, its manifest says \(l.size); nothing was copied for it")
        }
    }

    /// Streams a layer from the source into a staged file of the destination, checking its digest
    /// and size, then stores it; returns its layer index entry when the destination keeps one (a
    /// layer whose manifest lacks its uncompressed size is decompressed from the staged file, its
    /// diffID checked). A mismatch stores nothing and names the blob.
    func copyBlob(_ job: LayerJob) throws -> LayerIndexEntry? {
        let d = job.layer.digest, size = job.layer.size
        progress.report(.begin(id: d.short, action: "copying", total: size))
        let raw: ByteSource
        do { raw = try source.openBlob(job.sourceName, d) } catch let e as DogestryError where e.kind == .notFound {
            throw DogestryError.notFound("blob \(d) is missing from \(source.displayURL)")
        }
        let src = HashingSource(raw)
        let staged = try destination.makeStagedFile()
        defer { staged.discard() }
        let sink = try staged.sink()
        // A store that can send the file's parts while it is written does (nothing is stored
        // before `commit`, which waits for the checks below).
        let early = try (destination.repository?.remote as? EarlyUploading)?.beginUpload(Repository.blobKey(d), file: staged, size: size)
        var committed = false
        defer { if !committed { early?.abort() } }
        // A layer whose uncompressed size nothing records is decompressed (and its diffID
        // hashed) on another thread as it arrives, not in a second pass over the staged file.
        var inline: InlineDecompression?
        if keepsIndex, let diffID = job.diffID, knownIndexEntry(job, diffID: diffID) == nil,
           let c = Compression(layerMediaType: job.layer.mediaType) {
            inline = InlineDecompression(c, name: "dogestry-copy-check")
        }
        defer { inline?.stop() }
        let out = ProgressSink(inline.map { TeeSink([sink, $0.sink]) } ?? sink, id: d.short, progress: progress)
        let buf = UnsafeMutableRawBufferPointer.allocate(byteCount: streamChunkSize, alignment: 16)
        defer { buf.deallocate() }
        while true {
            let n = try src.read(into: buf)
            if n == 0 { break }
            if src.count > size { break }   // longer than its descriptor: refused below, no more read
            try out.write(UnsafeRawBufferPointer(rebasing: buf[0..<n]))
            try early?.written(src.count)
        }
        try out.close()
        guard src.count == size else {
            throw DogestryError.corrupt("blob \(d) on \(source.displayURL) has \(src.count > size ? "more than \(size)" : "\(src.count)") bytes, its manifest says \(size); nothing was copied for it")
        }
        let got = src.hasher.finalize()
        guard got == d else {
            throw DogestryError.corrupt("blob \(d) on \(source.displayURL) is corrupt: its content hashes to \(got); nothing was copied for it")
        }
        var entry: LayerIndexEntry?
        if let inline, let diffID = job.diffID {
            let (u, pd, failure) = inline.finish()
            if let failure { throw DogestryError.corrupt("layer blob \(d) on \(source.displayURL) is corrupt (\(failure)); nothing was copied for it") }
            guard pd == diffID else {
                throw DogestryError.corrupt("layer blob \(d) on \(source.displayURL) decompresses to \(pd), expected diffID \(diffID); nothing was copied for it")
            }
            entry = job.entry(uncompressedSize: u)
        } else if keepsIndex, let diffID = job.diffID {
            do { entry = try indexEntry(job, diffID: diffID, readingFrom: staged.path) } catch let e as DogestryError where e.kind == .corrupt {
                throw DogestryError.corrupt("\(e.message.replacingOccurrences(of: destination.displayURL, with: source.displayURL)); nothing was copied for it")
            }
        }
        if let early { committed = true; try early.commit() } else { try destination.putBlob(job.name, d, file: staged, size: size) }
        progress.report(.end(id: d.short, summary: "copied \(formatBytes(size))"))
        return entry
    }
}

/// Decompresses and hashes a layer on a thread of its own while its compressed bytes are written
/// into `sink` (a bounded pipe): the uncompressed size and diffID without a second pass.
final class InlineDecompression: @unchecked Sendable {  // (results are read after `done`)
    private let pipe = BoundedPipe(capacity: 2 << 20)
    private let done = DispatchSemaphore(value: 0)
    private var joined = false
    private var size: Int64 = 0
    private var digest = Digest.of([])
    private var failure: String?
    var sink: ByteSink { pipe.writer }

    init(_ compression: Compression, name: String) {
        // Inflating and hashing the plain bytes each take a core's worth of time on a large
        // layer: the hash runs on a third thread, fed through a second bounded pipe.
        let plainPipe = BoundedPipe(capacity: 2 << 20)
        let hashed = DispatchSemaphore(value: 0)
        let hasher = Thread { [self] in
            defer { hashed.signal() }
            let plain = HashingSource(plainPipe.reader)
            if (try? plain.drain()) != nil { size = plain.count; digest = plain.hasher.finalize() }
        }
        hasher.name = name + "-hash"
        let t = Thread { [self] in
            defer { done.signal() }
            do {
                do {
                    try compression.decompressor(from: pipe.reader).copy(to: plainPipe.writer)
                    try plainPipe.writer.close()
                } catch {
                    plainPipe.fail(error)
                    throw error
                }
                hashed.wait()
                _ = try pipe.reader.drain()   // anything after the compressed stream
            } catch {
                hashed.wait()
                failure = (error as? DogestryError)?.message ?? "\(error)"
                _ = try? pipe.reader.drain()  // the writer never blocks on a reader that gave up
            }
        }
        t.name = name
        hasher.start()
        t.start()
    }

    /// Waits for the end of the stream (the sink is closed): size, diffID, or what failed.
    func finish() -> (size: Int64, diffID: Digest, failure: String?) {
        join()
        return (size, digest, failure)
    }

    /// Ends it early (an error on the writing side) and waits for the thread.
    func stop() {
        pipe.fail(DogestryError(.aborted, "the layer check stopped"))
        join()
    }

    private func join() { if !joined { done.wait(); joined = true } }
}
