import DogestryCore
import Foundation

/// How layers are compressed and transferred.
public struct TransferOptions: Sendable {
    public var compression: Compression = .zstd
    public var level: Int? = nil
    /// Compression threads (zstd); 0 or 1 compresses on the calling thread.
    public var threads: Int = min(ProcessInfo.processInfo.activeProcessorCount, 4)
    /// Seconds after which a reused object is touched so a concurrent prune keeps it (`[prune] touch-after`).
    public var touchAfter: Int = ReuseGuard.defaultTouchAfter
    public init() {}
}

/// What a push did.
public struct PushReport: Sendable {
    public struct Image: Sendable {
        public var id: Digest
        public var manifest: Digest
        public var tags: [String]
    }
    public var images: [Image] = []
    public var layersUploaded = 0
    public var layersPresent = 0
    /// Layers a registry linked from another of its repositories instead of receiving them.
    public var layersMounted = 0
    /// Compressed bytes written to the remote as layer blobs.
    public var bytesUploaded: Int64 = 0
    /// Blobs of any kind (layers, configs, manifests) written.
    public var blobsWritten = 0
}

/// How `Pusher.readArchive` may read a source: once, as a stream (a pipe), or again from its
/// start when a layer it only hashed turns out to be new (a file, an engine export).
public struct ArchiveReadPlan {
    /// Streams the source again from its start; nil: it can be read once only.
    public var reopen: (() throws -> ByteSource)?
    /// Each layer file's diffID, by path, when a layout scan found them before reading.
    public var known: [String: Digest]
    /// Layers the repository has are skipped without reading them (the source can seek).
    public var skipPresentUnread: Bool

    public init(reopen: (() throws -> ByteSource)?, known: [String: Digest] = [:], skipPresentUnread: Bool = false) {
        self.reopen = reopen; self.known = known; self.skipPresentUnread = skipPresentUnread
    }

    /// Read once, as a stream.
    public static var stream: ArchiveReadPlan { ArchiveReadPlan(reopen: nil) }
}

/// Pushes images into a repository: only layers the repository lacks are compressed and uploaded,
/// and refs are written last.
public final class Pusher {
    public let repo: Repository
    let options: TransferOptions
    let progress: ProgressReporter
    /// Layers known to be stored, by diffID.
    var stored: [Digest: LayerIndexEntry] = [:]
    var report = PushReport()
    /// While a re-readable source is read (`ArchiveReadPlan.reopen`): an unknown layer whose size
    /// equals a stored layer's uncompressed size is only hashed, not compressed; if it turns out to
    /// be new, its path lands in `missedPaths` and `readArchive` streams the source again.
    private(set) var speculate = false
    var presentSizes: Set<Int64> = []
    public private(set) var missedPaths: Set<String> = []
    /// While a seekable source is read: layers the repository has are skipped without reading.
    private(set) var skipPresentUnread = false
    /// Paths that must be stored even if speculation would skip them (second pass).
    var forcePaths: Set<String> = []
    /// Each stored layer's blob as `stat` last saw it (its modification time decides whether a reuse touches it).
    var storedBlobs: [Digest: RemoteObject] = [:]
    /// Touches reused objects so a concurrent prune keeps them (see `ReuseGuard`).
    public internal(set) lazy var reuse = ReuseGuard(repository: repo, touchAfter: options.touchAfter)
    /// Set once this push has real work to do (a layer to compress): from then on, a reused layer
    /// is touched as soon as it is found rather than when the image is published.
    var touchEagerly = false
    /// Decides which index entries are proven (see `IndexTrust`).
    lazy var trust = IndexTrust(repository: repo)
    /// Layers whose index entry no manifest proves: this push stores them itself.
    var unproven = Set<Digest>()
    /// Index entries of layers this push stored, written once a manifest that proves them is.
    var pendingIndex: [Digest: LayerIndexEntry] = [:]

    public init(repository: Repository, options: TransferOptions, progress: ProgressReporter) {
        self.repo = repository; self.options = options; self.progress = progress
    }

    /// Looks up a layer in the repository's diffID index (cached). An entry counts only when its
    /// blob exists with the recorded size and a manifest proves it (`IndexTrust`); an entry proven
    /// by another manifest than the one it names is rewritten to name that one.
    func storedLayer(_ diffID: Digest) throws -> LayerIndexEntry? {
        if let e = stored[diffID] { return e }
        if unproven.contains(diffID) { return nil }
        guard let found = try repo.lookupLayerWithBlob(diffID: diffID) else { return nil }
        var e = found.entry
        let blob = found.blob
        guard let proof = try trust.proof(for: e, diffID: diffID) else {
            unproven.insert(diffID)
            progress.report(.info("index entry of \(diffID.short) names blob \(e.digest.short), which no manifest on the remote stores as that layer: storing the layer"))
            return nil
        }
        if e.manifest != proof {
            e = e.proven(by: proof)
            try repo.recordLayer(diffID: diffID, e)
        }
        if touchEagerly, !(try reuse.protectLayer(diffID: diffID, entry: e, blob: blob, indexPointsHere: true, recheck: true)) {
            return nil   // pruned between the look-up and the touch: store it again
        }
        stored[diffID] = e; storedBlobs[diffID] = blob; presentSizes.insert(e.uncompressedSize)
        return e
    }

    /// Called when the push is about to take a while (compressing, exporting): every reused layer
    /// found so far is touched now, and later ones as they are found, so a prune running meanwhile
    /// keeps them. A push with nothing to upload touches at publish time instead, and only for tags
    /// that do not already point at the image.
    public func beginReuseProtection() throws {
        guard !touchEagerly else { return }
        touchEagerly = true
        for (d, e) in stored.sorted(by: { $0.key < $1.key }) {
            if !(try reuse.protectLayer(diffID: d, entry: e, blob: storedBlobs[d], indexPointsHere: true, recheck: true)) {
                stored[d] = nil; storedBlobs[d] = nil   // pruned meanwhile: stored again if still to come
            }
        }
    }

    /// Forgets everything learnt about the remote, for a push that starts over because a layer it
    /// reused was pruned under it (`reuse.vanished`).
    func resetForRetry() {
        // Layers this push stored itself stay known (their blobs are young; their entries are
        // still to be written); the rest is looked up again.
        stored = pendingIndex; storedBlobs = storedBlobs.filter { pendingIndex[$0.key] != nil }
        presentSizes = []; missedPaths = []; forcePaths = []; unproven = []
        touchEagerly = false
        // What the first attempt uploaded stays uploaded (and counted); the rest is learnt again.
        var fresh = PushReport()
        fresh.layersUploaded = report.layersUploaded; fresh.bytesUploaded = report.bytesUploaded; fresh.blobsWritten = report.blobsWritten
        report = fresh
        reuse = ReuseGuard(repository: repo, touchAfter: options.touchAfter)
    }

    /// Runs `body`; when it fails because a reused layer was pruned under it, forgets what it
    /// learnt and runs it once more (the layer is then uploaded). Only for sources that can be
    /// read again (files, engines).
    public func retryingIfPruned<T>(_ body: () throws -> T) throws -> T {
        do { return try body() } catch let e as DogestryError where reuse.vanished {
            progress.report(.warning("\(e.message); starting over"))
            resetForRetry()
            return try body()
        }
    }

    /// A short name for a layer file whose diffID is not known yet: the 12-digit prefix of the
    /// first hex-named component of its path (`<v1 id>/layer.tar`, `blobs/sha256/<hex>`).
    static func displayID(_ path: String) -> String {
        let comps = path.split(separator: "/").map(String.init)
        for c in comps {
            let stem = c.hasSuffix(".tar") ? String(c.dropLast(4)) : c
            if Digest.isHex64(stem) { return String(stem.prefix(12)) }
        }
        return comps.last ?? path
    }

    /// Counts and reports a layer the repository already has; `id` is the name its progress used.
    func notePresent(id: String, _ diffID: Digest) {
        report.layersPresent += 1
        progress.report(.end(id: id, summary: id == diffID.short ? "already on remote" : "\(diffID.short) already on remote"))
    }

    /// Looks up several layers at once so speculation knows their sizes.
    public func prefetchIndex(_ diffIDs: [Digest]) throws -> (present: Int, missing: Int) {
        var p = 0
        for d in Set(diffIDs) { if try storedLayer(d) != nil { p += 1 } }
        return (p, Set(diffIDs).count - p)
    }

    /// Handles one layer streaming past: hash-only if the repository has it, else compress, hash and upload.
    func handleLayer(_ layer: ArchiveLayer, _ body: ByteSource) throws -> Digest {
        try handleLayer(layer, body, mismatch: nil)
    }

    /// Stores one layer whose diffID must be `layer.expectedDiffID` (read from a source that is
    /// no archive, such as an engine's image store): a stream that hashes to anything else is
    /// thrown away before it is stored, with the error `mismatch` makes of the digest it had.
    public func storeLayer(_ layer: ArchiveLayer, _ body: ByteSource, mismatch: @escaping (Digest) -> Error) throws {
        precondition(layer.expectedDiffID != nil, "storeLayer needs the layer's diffID")
        let got = try handleLayer(layer, body, mismatch: mismatch)
        if got != layer.expectedDiffID { throw mismatch(got) }
    }

    func handleLayer(_ layer: ArchiveLayer, _ body: ByteSource, mismatch: ((Digest) -> Error)?) throws -> Digest {
        let id = layer.expectedDiffID?.short ?? Self.displayID(layer.path)
        if let exp = layer.expectedDiffID, try storedLayer(exp) != nil {
            if skipPresentUnread, !layer.mustRead {
                // A seekable archive: the layer is stored already, so it is not even read
                // (nothing of it is used; the tar reader seeks past it).
                notePresent(id: id, exp)
                return exp
            }
            let got = try layerDiffID(of: body, what: layer.what)
            if got == exp { notePresent(id: id, got) }
            return got  // on a mismatch the archive reader reports it
        }
        let (plain, compression) = try layerContent(of: body, what: layer.what)
        if speculate, compression == .none, presentSizes.contains(layer.size), !forcePaths.contains(layer.path) {
            let h = HashingSink()
            try plain.copy(to: h)
            let got = h.digest()
            if try storedLayer(got) != nil {
                notePresent(id: got.short, got)
            } else {
                missedPaths.insert(layer.path)
            }
            return got
        }
        try beginReuseProtection()
        progress.report(.begin(id: id, action: "compressing", total: layer.size))
        let staged = try repo.writer.makeStagedFile()
        defer { staged.discard() }
        let file = try staged.sink()   // synced as it is written where it becomes the object (a local remote)
        let blobHash = HashingSink(file)
        let compressor = try options.compression.compressor(into: blobHash, level: options.level, threads: options.threads)
        let diffHash = HashingSink(ProgressSink(compressor, id: id, progress: progress))
        try plain.copy(to: diffHash)
        try diffHash.close()
        let diffID = diffHash.digest()
        if let mismatch, let want = layer.expectedDiffID, diffID != want { throw mismatch(diffID) }
        if try storedLayer(diffID) != nil {
            notePresent(id: id, diffID)
            return diffID
        }
        let entry = LayerIndexEntry(digest: blobHash.digest(), mediaType: options.compression.layerMediaType,
                                    size: blobHash.count, uncompressedSize: diffHash.count)
        if try !repo.hasBlob(entry.digest) {
            try repo.writer.put(Repository.blobKey(entry.digest), file: staged, size: entry.size)
            report.bytesUploaded += entry.size
            report.blobsWritten += 1
        }
        pendingIndex[diffID] = entry   // written with its proof, once the manifest is
        stored[diffID] = entry
        storedBlobs[diffID] = RemoteObject(key: Repository.blobKey(entry.digest), size: entry.size, modified: Date())
        report.layersUploaded += 1
        progress.report(.end(id: id, summary: (id == diffID.short ? "" : "\(diffID.short) ") + "pushed \(formatBytes(entry.size)) (\(formatBytes(entry.uncompressedSize)) uncompressed)"))
        return diffID
    }

    /// Pushes images from a `docker save` stream, plain or compressed (see `ArchiveCompression`).
    /// `selections` picks images by `name[:tag]` or ID prefix; empty pushes every tagged image in
    /// the archive under all its tags.
    public func pushArchive(_ source: ByteSource, what: String, selections: [String]) throws -> PushReport {
        try pushTarStream(try ArchiveCompression.decompressing(source, what: what).0, what: what, selections: selections)
    }

    /// Pushes from an uncompressed archive stream, in one pass.
    func pushTarStream(_ source: ByteSource, what: String, selections: [String]) throws -> PushReport {
        // Parse selections up front: a bad name fails before anything is read or written.
        let wanted = try selections.map { try ArchiveSelection(parsing: $0) }
        try repo.ensureLayout()
        let images = try readArchive(source, what: what)
        let chosen = try select(images, wanted, what: what)
        for (image, tags) in chosen { try publish(image.config, tags: tags) }
        return report
    }

    /// Pushes from an archive that can be read again (a file): speculation on, second pass if
    /// needed. A compressed archive is read once, as a stream: it cannot be skipped through by
    /// seeking, and every extra pass would decompress all of it again.
    public func pushArchive(reopen: @escaping () throws -> ByteSource, what: String, selections: [String]) throws -> PushReport {
        try retryingIfPruned {
            let (first, compression) = try ArchiveCompression.decompressing(try reopen(), what: what)
            if compression != .none { return try pushTarStream(first, what: what, selections: selections) }
            let plain = { try ArchiveCompression.decompressing(try reopen(), what: what).0 }
            return try pushArchiveOnce(first: first, reopen: plain, what: what, selections: selections)
        }
    }

    func pushArchiveOnce(first: ByteSource, reopen: @escaping () throws -> ByteSource, what: String, selections: [String]) throws -> PushReport {
        let wanted = try selections.map { try ArchiveSelection(parsing: $0) }
        try repo.ensureLayout()
        // A cheap first look (headers and small JSON files; layer bodies are seeked over) tells
        // which diffID each layer file holds, so present layers are never read or compressed.
        let known = try DockerArchiveReader(first, what: what).scanLayout()
        _ = try prefetchIndex(Array(Set(known.values)))
        let images = try readArchive(try reopen(), what: what,
                                     plan: ArchiveReadPlan(reopen: reopen, known: known, skipPresentUnread: true))
        let chosen = try select(images, wanted, what: what)
        for (image, tags) in chosen { try publish(image.config, tags: tags) }
        return report
    }

    /// Reads an archive through `handleLayer` as `plan` allows; if speculation missed, streams it
    /// again (`plan.reopen`) storing exactly the missed layers. The plan holds for this call only.
    public func readArchive(_ source: ByteSource, what: String, plan: ArchiveReadPlan = .stream) throws -> [ArchiveImage] {
        speculate = plan.reopen != nil
        skipPresentUnread = plan.skipPresentUnread
        defer { speculate = false; skipPresentUnread = false; forcePaths = []; missedPaths = [] }
        let images = try DockerArchiveReader(source, what: what, knownDiffIDs: plan.known).read(handler: handleLayer)
        if !missedPaths.isEmpty, let again = plan.reopen {
            forcePaths = missedPaths
            missedPaths = []
            progress.report(.info("\(forcePaths.count) layer(s) need a second pass over \(what)"))
            let present = report.layersPresent
            _ = try DockerArchiveReader(try again(), what: what, knownDiffIDs: plan.known).read(handler: handleLayer)
            report.layersPresent = present
        }
        return images
    }

    /// Writes config, manifest and refs for an image whose layers are all stored.
    public func publish(_ config: ImageConfig, tags: [ImageReference]) throws {
        try RepositoryLimits.checkLayerCount(config.diffIDs.count, what: "image \(config.digest.short)")
        guard config.bytes.count <= RepositoryLimits.metadataBytes else {
            throw DogestryError.invalid("the config of image \(config.digest.short) is \(config.bytes.count) bytes, more than the \(RepositoryLimits.metadataBytes) a remote holds")
        }
        var layers: [Descriptor] = []
        for d in config.diffIDs {
            guard let e = try storedLayer(d) else {
                if reuse.forgotten.contains(d) { throw reuse.layerVanished(d, blob: nil) }
                throw DogestryError.corrupt("layer \(d) of image \(config.digest.short) was not stored on \(repo.remote.displayURL)")
            }
            layers.append(e.descriptor(diffID: d))
        }
        let configObject = try repo.remote.stat(Repository.blobKey(config.digest))
        if configObject == nil {
            try repo.putBlob(config.bytes); report.blobsWritten += 1
        }
        let manifest = ImageManifest(config: Descriptor(mediaType: MediaType.ociConfig, digest: config.digest, size: Int64(config.bytes.count)), layers: layers)
        let bytes = manifest.encoded()
        guard bytes.count <= RepositoryLimits.metadataBytes else {
            throw DogestryError.invalid("the manifest of image \(config.digest.short) would be \(bytes.count) bytes, more than the \(RepositoryLimits.metadataBytes) readers accept")
        }
        let md = Digest.of(bytes)
        let manifestObject = try repo.remote.stat(Repository.blobKey(md))
        if manifestObject == nil { try repo.putBlob(bytes); report.blobsWritten += 1 }
        // The layers this push stored get their index entries now that a manifest proves them.
        for d in Set(config.diffIDs).sorted() {
            guard let e = pendingIndex[d] else { continue }
            let proven = e.proven(by: md)
            try repo.recordLayer(diffID: d, proven)
            stored[d] = proven
            pendingIndex[d] = nil
        }
        let unchanged = try protectReuse(config, configObject, manifest: bytes, md, manifestObject, tags: tags)
        for t in tags {
            if !unchanged.contains(t) { try repo.writeRef(name: t.name, tag: t.tag ?? "latest", manifest: md) }
            progress.report(.info("\(t.name):\(t.tag ?? "latest") -> \(md) (image \(config.digest.short))"))
        }
        report.images.append(.init(id: config.digest, manifest: md, tags: tags.map { $0.description }))
    }

    /// Touches what `publish` reuses (see `ReuseGuard`) unless every tag already points at the
    /// manifest; returns the tags that do (they are not written again: one GET instead of a PUT).
    /// A push whose reused objects are all younger than `touchAfter` makes no request here.
    func protectReuse(_ config: ImageConfig, _ configObject: RemoteObject?, manifest bytes: [UInt8], _ md: Digest,
                      _ manifestObject: RemoteObject?, tags: [ImageReference]) throws -> Set<ImageReference> {
        let now = Date()
        let staleLayers = config.diffIDs.filter { d in
            storedBlobs[d] != nil && !reuse.hasTouched(layer: d) && reuse.isStale(storedBlobs[d], now: now)
        }
        let touchedEarlier = config.diffIDs.contains { reuse.hasTouched(layer: $0) }
        let staleConfig = configObject != nil && reuse.isStale(configObject, now: now)
        let staleManifest = manifestObject != nil && reuse.isStale(manifestObject, now: now)
        guard !staleLayers.isEmpty || staleConfig || staleManifest || touchedEarlier else { return [] }
        var unchanged = Set<ImageReference>()
        for t in tags where (try? repo.readRef(name: t.name, tag: t.tag ?? "latest")) == md { unchanged.insert(t) }
        // Every tag points here already: the image is a root of the remote, nothing to protect.
        if unchanged.count == tags.count { return unchanged }
        for d in staleLayers {
            try reuse.protectLayer(diffID: d, entry: stored[d]!, blob: storedBlobs[d], indexPointsHere: true)
        }
        if staleConfig { try reuse.protectBlob(config.bytes, digest: config.digest, object: configObject) }
        if staleManifest { try reuse.protectBlob(bytes, digest: md, object: manifestObject) }
        try reuse.verify(layers: config.diffIDs, blobs: [config.digest, md])
        return unchanged
    }

    func select(_ images: [ArchiveImage], _ wanted: [ArchiveSelection], what: String) throws -> [(ArchiveImage, [ImageReference])] {
        var out: [(ArchiveImage, [ImageReference])] = []
        func add(_ img: ArchiveImage, _ refs: [ImageReference]) {
            if let i = out.firstIndex(where: { $0.0.id == img.id }) {
                for r in refs where !out[i].1.contains(r) { out[i].1.append(r) }
            } else { out.append((img, refs)) }
        }
        // Each RepoTag that is not a valid reference is reported once, naming the image and the archive.
        var parsed: [Digest: [ImageReference]] = [:]
        for img in images where parsed[img.id] == nil {
            var refs: [ImageReference] = []
            for t in img.repoTags {
                if let r = try? ImageReference(parsing: t) { refs.append(r) } else {
                    progress.report(.warning("\(what): RepoTag \"\(t)\" of image \(img.id.short) is not a valid image reference; ignored"))
                }
            }
            parsed[img.id] = refs
        }
        func tags(_ img: ArchiveImage) -> [ImageReference] { parsed[img.id] ?? [] }
        if wanted.isEmpty {
            for img in images {
                let t = tags(img)
                if t.isEmpty, !img.repoTags.isEmpty {
                    // Tagged in the archive, but by no valid name: pushing nothing would hide the mistake.
                    let bad = img.repoTags.map { "\"\($0)\"" }.joined(separator: ", ")
                    throw DogestryError.invalid("image \(img.id.short) in \(what) has no valid tag: \(bad) \(img.repoTags.count == 1 ? "is not a valid image reference" : "are not valid image references")")
                }
                if t.isEmpty {
                    progress.report(.warning("image \(img.id.short) in \(what) has no tag; skipped (name it on the command line)"))
                } else { add(img, t) }
            }
            guard !out.isEmpty else { throw DogestryError.invalid("\(what) holds no tagged image to push") }
            return out
        }
        for w in wanted {
            switch w {
            case .reference(let ref):
                guard let img = images.first(where: { tags($0).contains(ref) }) else {
                    let have = images.flatMap { $0.repoTags }
                    throw DogestryError.notFound("image \(ref) is not in \(what) (it holds: \(have.isEmpty ? "untagged images only" : have.joined(separator: ", ")))")
                }
                add(img, [ref])
            case .idPrefix(let p):
                let m = images.filter { $0.id.hex.hasPrefix(p) }
                guard m.count == 1 else {
                    throw DogestryError.notFound(m.isEmpty ? "no image with ID \(p) in \(what)" : "image ID prefix \(p) is ambiguous in \(what)")
                }
                let t = tags(m[0])
                guard !t.isEmpty else { throw DogestryError.invalid("image \(p) in \(what) has no tag: push it as NAME:TAG") }
                add(m[0], t)
            }
        }
        return out
    }
}

/// How a user picks an image: by reference or by image ID prefix.
public enum ArchiveSelection: Sendable {
    case reference(ImageReference)
    case idPrefix(String)

    public init(parsing s: String) throws {
        if let t = Digest.idPrefix(s), s.hasPrefix("sha256:") || t.count >= 12 || (try? ImageReference(parsing: s)) == nil {
            self = .idPrefix(t); return
        }
        self = .reference(try ImageReference(parsing: s))
    }
}
