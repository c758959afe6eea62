import DogestryCore
import DogestryHTTP
import Foundation

/// What happened (or, with a dry run, would happen) to one blob of a copy.
public struct CopiedBlob: Sendable, Equatable, Codable {
    public enum Kind: String, Sendable, Codable { case layer, config, manifest }
    public enum State: String, Sendable, Codable { case copied, present, wouldCopy = "would-copy" }
    public var digest: Digest
    public var kind: Kind
    public var size: Int64
    public var state: State
    /// Copied by the store itself (S3 CopyObject), not streamed through dogestry.
    public var serverSide: Bool? = nil
}

/// What a copy did.
public struct CopyReport: Sendable {
    /// The images copied (their tags as written on the destination).
    public var images: [ResolvedImage] = []
    /// Every distinct blob of those images, in the order they were handled.
    public var blobs: [CopiedBlob] = []
    public var bytesCopied: Int64 { blobs.filter { $0.state == .copied }.reduce(0) { $0 + $1.size } }
    /// The blobs that moved, or with a dry run would move.
    public var moved: [CopiedBlob] { blobs.filter { $0.state != .present } }
}

/// Copies images from one remote to another (`dogestry copy`): only the blobs the destination
/// lacks move, each verified against its digest and size as it streams, several at once; manifests
/// after their blobs, refs last, so an interrupted copy leaves no ref to anything missing and a new
/// run moves only the rest. Stored compression, manifests and configs are kept byte for byte.
public final class Copier {
    public let source: Repository
    public let destination: Repository
    let progress: ProgressReporter
    let threads: Int
    let touchAfter: Int
    /// Layers go by the store's own copy when the destination can copy from the source.
    let serverSide: Bool

    public init(source: Repository, destination: Repository, progress: ProgressReporter = SilentProgress(),
                threads: Int = 3, touchAfter: Int = ReuseGuard.defaultTouchAfter, serverSide: Bool = true) {
        self.source = source; self.destination = destination; self.progress = progress
        self.threads = max(1, threads); self.touchAfter = touchAfter; self.serverSide = serverSide
    }

    /// The destination as a store that copies from the source itself, if it can and may.
    var serverCopier: ServerSideCopying? {
        guard serverSide, let c = destination.remote as? ServerSideCopying, c.canCopyServerSide(from: source.remote) else { return nil }
        return c
    }

    /// The images `specs` name on the source (a pull ticket's own image when none is named), or
    /// every tag with `all`.
    public func resolve(_ specs: [String], all: Bool) throws -> [ResolvedImage] {
        let puller = Puller(repository: source, progress: SilentProgress())
        if all {
            let refs = Repository.resolvedView(try source.listRefs(invalid: { _ in }, unreadable: { key, e in
                self.progress.report(.warning("skipping \(key): \(e.message)"))
            }))
            guard !refs.isEmpty else { throw DogestryError.notFound("\(source.remote.displayURL) holds no tagged image") }
            return try puller.resolveAll(refs.map { "\($0.name):\($0.tag)" })
        }
        return try puller.resolveRequested(specs)
    }

    /// Copies `images`; with `dryRun` only reports what would move.
    public func copy(_ images: [ResolvedImage], dryRun: Bool = false) throws -> CopyReport {
        let dst = try destination.writer
        if !dryRun { try destination.ensureLayout() }
        var report = CopyReport()
        var handled = Set<Digest>()
        let guardian = ReuseGuard(repository: destination, touchAfter: touchAfter)
        for img in images {
            let md = img.manifestDigest
            let manifestBytes = try source.readBlob(md, what: "manifest")
            var missing: [(Descriptor, Digest)] = []   // layer, diffID
            for (i, l) in img.manifest.layers.enumerated() where !handled.contains(l.digest) {
                handled.insert(l.digest)
                let diffID = img.config.diffIDs[i]
                let there = try dst.stat(Repository.blobKey(l.digest))
                if let there, there.size == l.size {
                    report.blobs.append(CopiedBlob(digest: l.digest, kind: .layer, size: l.size, state: .present))
                    if !dryRun, let u = l.uncompressedSize {
                        let entry = LayerIndexEntry(digest: l.digest, mediaType: l.mediaType, size: l.size, uncompressedSize: u, manifest: md)
                        try guardian.protectLayer(diffID: diffID, entry: entry, blob: there, indexPointsHere: false)
                    }
                } else {
                    missing.append((l, diffID))
                    report.blobs.append(CopiedBlob(digest: l.digest, kind: .layer, size: l.size, state: dryRun ? .wouldCopy : .copied,
                                                   serverSide: serverCopier != nil && l.size <= 5 << 30 ? true : nil))
                }
            }
            if !dryRun {
                let server = serverCopier
                _ = try Workers.map(missing, threads: threads) { item in
                    if let server, item.0.size <= 5 << 30 {
                        // The store copies; the source blob's digest was proven by its manifest
                        // and the copy is checked by size (the bytes never pass through here).
                        try self.checkSourceSize(item.0)
                        try server.copyServerSide(from: self.source.remote, key: Repository.blobKey(item.0.digest), size: item.0.size)
                    } else {
                        try self.copyBlob(item.0.digest, size: item.0.size, to: dst)
                    }
                }
                for (l, diffID) in missing {
                    if let u = l.uncompressedSize {
                        try destination.recordLayer(diffID: diffID, LayerIndexEntry(digest: l.digest, mediaType: l.mediaType, size: l.size, uncompressedSize: u, manifest: md))
                    }
                }
            }
            for (d, bytes, kind) in [(img.config.digest, img.config.bytes, CopiedBlob.Kind.config), (md, manifestBytes, .manifest)] where !handled.contains(d) {
                handled.insert(d)
                let there = try dst.stat(Repository.blobKey(d))
                report.blobs.append(CopiedBlob(digest: d, kind: kind, size: Int64(bytes.count), state: there != nil ? .present : (dryRun ? .wouldCopy : .copied)))
                if dryRun { continue }
                if there == nil { try dst.put(Repository.blobKey(d), bytes: bytes) } else { try guardian.protectBlob(bytes, digest: d, object: there) }
            }
            if dryRun { report.images.append(img); continue }
            try guardian.verify(layers: img.config.diffIDs, blobs: [img.config.digest, md])
            for t in img.tags {
                let r = try ImageReference(parsing: t)
                try destination.writeRef(name: r.name, tag: r.tag ?? "latest", manifest: md)
            }
            progress.report(.info("copied \(img.tags.isEmpty ? md.description : img.tags.joined(separator: ", ")) (image \(img.id.short))"))
            report.images.append(img)
        }
        return report
    }

    /// Copies `images` recompressing the layers DST lacks with `options.compression`: the source
    /// is read as a verified `docker load` stream (every blob digest and diffID checked) and pushed
    /// from it, so the manifests are new (their layers have new digests) while the image IDs and
    /// tags stay. Layers DST already holds, in any compression, are reused as a push reuses them.
    public func copyRecompressing(_ images: [ResolvedImage], options: TransferOptions) throws -> PushReport {
        let puller = Puller(repository: source, progress: progress)
        let stream = ProducedStream(capacity: 4 << 20, name: "dogestry-copy-read") { sink in
            _ = try puller.writeArchive(images, to: sink)
        }
        let pusher = Pusher(repository: destination, options: options, progress: progress)
        do {
            return try pusher.pushArchive(stream, what: "images from \(source.remote.displayURL)", selections: [])
        } catch {
            // The reader's own error (a corrupt source blob) says more than the stream's end.
            throw stream.stop() ?? error
        }
    }

    func checkSourceSize(_ l: Descriptor) throws {
        guard let o = try source.remote.stat(Repository.blobKey(l.digest)) else {
            throw DogestryError.notFound("blob \(l.digest) is missing from \(source.remote.displayURL)")
        }
        guard o.size == l.size else {
            throw DogestryError.corrupt("blob \(l.digest) on \(source.remote.displayURL) has \(o.size) bytes, its manifest says \(l.size); nothing was copied for it")
        }
    }

    /// Streams blob `d` from the source into a staged file of the destination, checking its digest
    /// and size, then stores it. A mismatch stores nothing and names the blob.
    func copyBlob(_ d: Digest, size: Int64, to dst: Remote) throws {
        progress.report(.begin(id: d.short, action: "copying", total: size))
        let raw: ByteSource
        do { raw = try source.remote.open(Repository.blobKey(d)) } catch let e as DogestryError where e.kind == .notFound {
            throw DogestryError.notFound("blob \(d) is missing from \(source.remote.displayURL)")
        }
        let src = HashingSource(raw)
        let staged = try dst.makeStagedFile()
        defer { staged.discard() }
        let sink = try staged.sink()
        let out = ProgressSink(sink, id: d.short, progress: progress)
        let buf = UnsafeMutableRawBufferPointer.allocate(byteCount: streamChunkSize, alignment: 16)
        defer { buf.deallocate() }
        while true {
            let n = try src.read(into: buf)
            if n == 0 { break }
            if src.count > size { break }   // longer than its descriptor: refused below, no more read
            try out.write(UnsafeRawBufferPointer(rebasing: buf[0..<n]))
        }
        try out.close()
        guard src.count == size else {
            throw DogestryError.corrupt("blob \(d) on \(source.remote.displayURL) has \(src.count > size ? "more than \(size)" : "\(src.count)") bytes, its manifest says \(size); nothing was copied for it")
        }
        let got = src.hasher.finalize()
        guard got == d else {
            throw DogestryError.corrupt("blob \(d) on \(source.remote.displayURL) is corrupt: its content hashes to \(got); nothing was copied for it")
        }
        try dst.put(Repository.blobKey(d), file: staged, size: size)
        progress.report(.end(id: d.short, summary: "copied \(formatBytes(size))"))
    }
}

