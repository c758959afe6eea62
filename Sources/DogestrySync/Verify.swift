import DogestryCore
import DogestryRemotes
import Foundation

/// One thing `verify` found wrong.
public struct VerifyProblem: Sendable, Equatable {
    /// What kind of problem, for scripts: `ref-invalid`, `manifest-missing`, `manifest-invalid`,
    /// `config-missing`, `config-invalid`, `layer-missing`, `layer-size`, `layer-invalid`,
    /// `layer-diffid`, `layer-uncompressed-size`, `blob-corrupt`, `index-invalid`,
    /// `index-blob-missing`, `index-disagrees`, `index-diffid` and `index-uncompressed-size` (deep:
    /// the entry's blob does not decompress to its diffID, or to its size; the object is the
    /// entry's key), `ticket-invalid`, `ticket-blob-missing`.
    public var kind: String
    /// The object at fault: a key, a digest or a reference.
    public var object: String
    /// The one-line report.
    public var message: String
}

/// What `Verifier.verify` checked and found.
public struct VerifyReport: Sendable {
    public var problems: [VerifyProblem] = []
    /// Refs, manifests, index entries and unexpired tickets checked.
    public var refs = 0, manifests = 0, indexEntries = 0, tickets = 0
    /// Image indexes (multi-platform images) checked; their image entries count as manifests.
    public var indexes = 0
    /// Distinct blobs whose presence and size were checked.
    public var blobsChecked = 0
    /// Whether blobs were re-hashed (`--deep`).
    public var deep = false
    /// Blobs re-hashed, the stored bytes read for that, and the layer bytes decompressed.
    public var blobsHashed = 0
    public var bytesHashed: Int64 = 0
    public var bytesDecompressed: Int64 = 0
    /// Wall time of the re-hashing, in seconds.
    public var hashSeconds: Double = 0
    /// Wall time of the whole check, in seconds.
    public var seconds: Double = 0
    public var ok: Bool { problems.isEmpty }
}

/// `dogestry verify`: refs that point at missing manifests, manifests naming missing blobs,
/// diffID-index entries that disagree; with `deep`, every blob re-hashed (layers decompressed to
/// check their diffIDs). Read-only: it never writes to the remote.
public final class Verifier {
    public let repo: Repository
    let progress: ProgressReporter
    /// Threads re-hashing blobs at once.
    public var threads = 3

    public init(repository: Repository, progress: ProgressReporter = SilentProgress()) {
        self.repo = repository; self.progress = progress
    }

    /// What a layer blob is expected to hold, and who says so.
    struct Expectation { var diffID: Digest; var uncompressedSize: Int64?; var mediaType: String; var source: String; var fromIndex: Bool }

    private var problems: [VerifyProblem] = []
    /// The index entries read, by diffID (what `repair` compares with before it removes one).
    private var indexBytes: [Digest: [UInt8]] = [:]
    private var listed: [Digest: RemoteObject]?
    private var statCache: [Digest: RemoteObject?] = [:]
    private var remote: ReadableRemote { repo.remote }

    private func add(_ kind: String, _ object: String, _ message: String) {
        problems.append(VerifyProblem(kind: kind, object: object, message: message))
    }

    /// A blob as listed (whole-remote mode) or stat'ed; a blob the listing lacks is stat'ed too (a
    /// push may have written it since).
    private func blobObject(_ d: Digest) throws -> RemoteObject? {
        if let o = listed?[d] { return o }
        if let c = statCache[d] { return c }
        let o = try remote.stat(Repository.blobKey(d))
        statCache[d] = o
        return o
    }

    /// Reads a small blob; reports it missing (nil, `missing` called) or corrupt (nil).
    private func readSmall(_ d: Digest, missing: () -> Void, context: String) throws -> [UInt8]? {
        let bytes: [UInt8]
        do { bytes = try remote.read(Repository.blobKey(d), limit: 16 << 20) } catch let e as DogestryError where e.kind == .notFound {
            missing(); return nil
        } catch let e as DogestryError where e.kind == .invalidInput {
            add("blob-corrupt", d.description, "blob \(d) (\(context)): \(e.message)"); return nil
        }
        let got = Digest.of(bytes)
        guard got == d else {
            add("blob-corrupt", d.description, "blob \(d) (\(context)): content hashes to \(got) (corrupt)"); return nil
        }
        return bytes
    }

    /// Checks the whole remote (`images` empty) or the images named (`name[:tag]`,
    /// `name@sha256:…`, image-ID prefixes); `deep` re-hashes every blob checked (the whole remote:
    /// every blob stored).
    public func verify(images: [String] = [], deep: Bool = false) throws -> VerifyReport {
        let start = Date()
        problems = []; listed = nil; statCache = [:]; indexBytes = [:]
        var report = VerifyReport()
        report.deep = deep
        let whole = images.isEmpty

        // Blobs, then the roots (refs written meanwhile name blobs written before them).
        if whole { listed = try repo.listByDigest(Repository.blobsPrefix) }
        var roots: [(label: String, manifest: Digest)] = []
        if whole {
            roots = try listRoots()
        } else {
            for spec in images { roots.append(try resolveRoot(spec)) }
        }
        report.refs = roots.count

        // Manifests and configs.
        var labels: [Digest: [String]] = [:]
        for r in roots where !(labels[r.manifest]?.contains(r.label) ?? false) { labels[r.manifest, default: []].append(r.label) }
        var manifests: [(Digest, ImageManifest, [Digest]?)] = []   // digest, manifest, config diffIDs
        var hashedSmall = Set<Digest>()
        var expect: [Digest: [Expectation]] = [:]
        // Image indexes (format version 2): each entry must be there with its size; the image
        // entries are checked as manifests of their own, labelled with their platform.
        var preread: [Digest: [UInt8]] = [:]
        var indexes = Set<Digest>()
        for (md, ls) in labels.sorted(by: { $0.key < $1.key }) {
            let lbl = ls.joined(separator: ", ")
            guard let bytes = try readSmall(md, missing: {
                for l in ls { add("manifest-missing", l, "ref \(l) -> \(md): manifest missing") }
            }, context: "manifest of \(lbl)") else { labels[md] = nil; continue }
            hashedSmall.insert(md)
            guard ManifestKind.of(bytes) == .index else { preread[md] = bytes; continue }
            labels[md] = nil
            indexes.insert(md)
            let index: ImageIndex
            do { index = try ImageIndex.decode(bytes, what: "image index \(md) (\(lbl))") } catch let e as DogestryError {
                add("manifest-invalid", md.description, e.message); continue
            }
            report.indexes += 1
            let images = Set(index.images.map(\.digest))
            for e in index.manifests {
                let what = "image index \(md) (\(lbl)): \(e.platform?.description ?? "entry") \(e.digest)"
                if MediaType.isIndex(e.mediaType) { add("manifest-invalid", md.description, "\(what) is a nested index"); continue }
                guard let o = try blobObject(e.digest) else { add("manifest-missing", e.digest.description, "\(what) missing"); continue }
                if o.size != e.size { add("manifest-invalid", e.digest.description, "\(what) has \(o.size) bytes, the index says \(e.size)"); continue }
                if images.contains(e.digest) {
                    labels[e.digest, default: []].append(ls.map { "\($0) [\(e.platform?.description ?? "?")]" }.joined(separator: ", "))
                } else {
                    indexes.insert(e.digest)   // an attestation or other artifact: present is enough
                }
            }
        }
        var unannotated: [(layer: Descriptor, diffID: Digest?, what: String)] = []
        for (md, ls) in labels.sorted(by: { $0.key < $1.key }) {
            let lbl = ls.joined(separator: ", ")
            guard let bytes = try preread[md] ?? readSmall(md, missing: {
                for l in ls { add("manifest-missing", l, "ref \(l) -> \(md): manifest missing") }
            }, context: "manifest of \(lbl)") else { continue }
            hashedSmall.insert(md)
            let m: ImageManifest
            do { m = try ImageManifest.decode(bytes, what: "manifest \(md) (\(lbl))") } catch let e as DogestryError {
                add("manifest-invalid", md.description, e.message); continue
            }
            report.manifests += 1
            let cd = m.config.digest
            var diffIDs: [Digest]?
            if let cb = try readSmall(cd, missing: {
                add("config-missing", cd.description, "manifest \(md) (\(lbl)): config \(cd) missing")
            }, context: "config of \(lbl)") {
                hashedSmall.insert(cd)
                do {
                    let cfg = try ImageConfig(bytes: cb, what: "config \(cd) (\(lbl))")
                    diffIDs = cfg.diffIDs
                    if cfg.diffIDs.count != m.layers.count {
                        add("manifest-invalid", md.description, "manifest \(md) (\(lbl)) lists \(m.layers.count) layers but its config has \(cfg.diffIDs.count) diff_ids")
                    }
                } catch let e as DogestryError { add("config-invalid", cd.description, e.message) }
                if Int64(cb.count) != m.config.size {
                    add("manifest-invalid", md.description, "manifest \(md) (\(lbl)): config \(cd) has \(cb.count) bytes, manifest says \(m.config.size)")
                }
            }
            for (i, l) in m.layers.enumerated() {
                let configDiffID = diffIDs.flatMap { i < $0.count ? $0[i] : nil }
                if Compression(layerMediaType: l.mediaType) == nil {
                    add("layer-invalid", l.digest.description, "manifest \(md) (\(lbl)): layer \(l.digest) has unsupported media type \(l.mediaType)")
                }
                if l.uncompressedSize == nil {
                    // A registry's manifest (stored byte for byte): the layer index must say it.
                    unannotated.append((l, configDiffID ?? l.diffID, "manifest \(md) (\(lbl)): layer \(l.digest)"))
                }
                if let a = l.diffID, let c = configDiffID, a != c {
                    add("layer-diffid", l.digest.description, "manifest \(md) (\(lbl)): layer \(l.digest) is annotated with diffID \(a), its config says \(c)")
                }
                if let o = try blobObject(l.digest) {
                    if o.size != l.size {
                        add("layer-size", l.digest.description, "manifest \(md) (\(lbl)): layer \(l.digest) has \(o.size) bytes, manifest says \(l.size)")
                    }
                } else {
                    add("layer-missing", l.digest.description, "manifest \(md) (\(lbl)): layer \(l.digest) missing")
                }
                if let d = configDiffID ?? l.diffID {
                    expect[l.digest, default: []].append(Expectation(diffID: d, uncompressedSize: l.uncompressedSize, mediaType: l.mediaType,
                                                                     source: "manifest \(md) (\(lbl))", fromIndex: false))
                }
            }
            manifests.append((md, m, diffIDs))
        }

        // Pull tickets (whole remote): an unexpired ticket must name blobs that exist.
        if whole { report.tickets = try checkTickets() }

        // The diffID index.
        var indexKeys: [Digest] = []
        if whole {
            indexKeys = Array(try repo.listByDigest(Repository.diffIDPrefix) { o in
                self.add("index-invalid", o.key, "index key \(o.key) is not named by a sha256 diffID")
            }.keys)
        } else {
            var s = Set<Digest>()
            for (_, m, ids) in manifests {
                for (i, l) in m.layers.enumerated() { if let d = Self.diffID(ofLayer: i, l, config: ids) { s.insert(d) } }
            }
            indexKeys = Array(s)
        }
        indexKeys.sort()
        let entries: [[UInt8]?] = try parallelMap(indexKeys, threads: threads) { d in try self.repo.readIndexEntry(diffID: d) }
        var byBlob: [Digest: [(diffID: Digest, layer: Descriptor, manifest: Digest)]] = [:]   // layer blob -> its uses
        for (md, m, ids) in manifests {
            for (i, l) in m.layers.enumerated() {
                if let d = Self.diffID(ofLayer: i, l, config: ids) { byBlob[l.digest, default: []].append((d, l, md)) }
            }
        }
        for (d, bytes) in zip(indexKeys, entries) {
            guard let bytes else { continue }
            report.indexEntries += 1
            indexBytes[d] = bytes
            let key = Repository.diffIDKey(d)
            guard let e = Repository.decodeIndexEntry(bytes) else {
                add("index-invalid", key, "index diffid \(d): not a valid index entry"); continue
            }
            if Compression(layerMediaType: e.mediaType) == nil {
                add("index-invalid", key, "index diffid \(d) -> blob \(e.digest): unsupported media type \(e.mediaType)")
            }
            if let o = try blobObject(e.digest) {
                if o.size != e.size {
                    add("index-disagrees", key, "index diffid \(d) -> blob \(e.digest): the blob has \(o.size) bytes, index says \(e.size)")
                }
            } else {
                add("index-blob-missing", key, "index diffid \(d) -> blob \(e.digest) missing")
            }
            for (manifestDiffID, l, md) in byBlob[e.digest] ?? [] {
                if manifestDiffID != d {
                    add("index-disagrees", key, "layer \(e.digest): manifest \(md) says diffID \(manifestDiffID), index says \(d)")
                } else if l.size != e.size || (l.uncompressedSize.map { $0 != e.uncompressedSize } ?? false) {
                    add("index-disagrees", key, "index diffid \(d) -> blob \(e.digest) disagrees with manifest \(md): size \(e.size)/\(e.uncompressedSize) uncompressed, manifest says \(l.size)/\(l.uncompressedSize ?? 0)")
                }
            }
            expect[e.digest, default: []].append(Expectation(diffID: d, uncompressedSize: e.uncompressedSize, mediaType: e.mediaType,
                                                             source: "index", fromIndex: true))
        }

        // A layer without the uncompressed-size annotation needs an index entry for it.
        for u in unannotated {
            let e = u.diffID.flatMap { indexBytes[$0] }.flatMap(Repository.decodeIndexEntry)
            if e?.digest != u.layer.digest || e?.size != u.layer.size {
                add("layer-invalid", u.layer.digest.description,
                    "\(u.what) has no \(Annotation.uncompressedSize) annotation and no layer index entry records its uncompressed size")
            }
        }

        // Presence was checked for every referenced blob.
        var referenced = indexes
        for (md, m, _) in manifests { referenced.insert(md); referenced.insert(m.config.digest); for l in m.layers { referenced.insert(l.digest) } }
        report.blobsChecked = referenced.count

        if deep {
            let t0 = Date()
            // Every blob checked, and (images named) the blobs their index entries name.
            let toHash = referenced.union(listed.map { Set($0.keys) } ?? Set(expect.keys))
            let missing = Set(problems.filter { $0.kind == "layer-missing" || $0.kind == "manifest-missing" || $0.kind == "config-missing" }.map(\.object))
            let order = toHash.subtracting(hashedSmall).filter { !missing.contains($0.description) }.sorted()
            let results = try parallelMap(order, threads: threads) { d in try self.hash(d, expect[d] ?? [], mustExist: referenced.contains(d)) }
            for r in results {
                problems.append(contentsOf: r.problems)
                if r.hashed { report.blobsHashed += 1 }
                report.bytesHashed += r.bytes
                report.bytesDecompressed += r.plain
            }
            // Manifests and configs were hashed when read.
            for d in hashedSmall { report.blobsHashed += 1; report.bytesHashed += (try blobObject(d))?.size ?? 0 }
            report.hashSeconds = Date().timeIntervalSince(t0)
        }
        report.problems = problems
        report.seconds = Date().timeIntervalSince(start)
        return report
    }

    /// The kinds of problem that make an index entry wrong beyond doubt: its blob (re-hashed)
    /// does not decompress to its diffID or size, or the entry cannot be read as one.
    public static let wrongIndexKinds: Set<String> = ["index-diffid", "index-uncompressed-size", "index-invalid"]

    /// `verify --repair`: removes the index entries `report` (a deep verify by this verifier)
    /// found wrong (`wrongIndexKinds`) and nothing else; returns their keys. An entry is removed
    /// only if it still holds what verify read (a push may have rewritten it since). A push then
    /// stores the layer again and writes a proven entry.
    public func repair(_ report: VerifyReport) throws -> [String] {
        var removed: [String] = []
        let keys = Set(report.problems.filter { Self.wrongIndexKinds.contains($0.kind) }.map(\.object))
        for key in keys.sorted() {
            guard key.hasPrefix(Repository.diffIDPrefix), let d = try? Digest(hex: String(key.dropFirst(Repository.diffIDPrefix.count))),
                  let seen = indexBytes[d], try repo.readIndexEntry(diffID: d) == seen else { continue }
            try repo.writer.delete(key)
            removed.append(key)
        }
        return removed
    }

    /// The diffID of a manifest's layer `i`: its config's, else the layer's own annotation.
    static func diffID(ofLayer i: Int, _ l: Descriptor, config diffIDs: [Digest]?) -> Digest? {
        diffIDs.flatMap { i < $0.count ? $0[i] : nil } ?? l.diffID
    }

    /// Every ref of the remote as (label, manifest); bad ref keys and contents are problems.
    func listRoots() throws -> [(label: String, manifest: Digest)] {
        var keys: [String] = []
        try remote.list(prefix: Repository.refsPrefix) { keys.append($0.key) }
        var out: [(String, Digest)] = []
        for key in keys.sorted() {
            guard let (name, tag) = Repository.parseRefKey(key) else {
                add("ref-invalid", key, "ref key \(key) is not repositories/NAME/_tags/TAG with a valid name and tag"); continue
            }
            let label = name + ":" + tag
            let bytes: [UInt8]
            do { bytes = try remote.read(key, limit: 4096) } catch let e as DogestryError where e.kind == .notFound { continue } catch let e as DogestryError where e.kind == .invalidInput {
                add("ref-invalid", key, "ref \(label): \(e.message)"); continue
            }
            guard let d = Repository.refDigest(bytes) else {
                add("ref-invalid", key, "ref \(label) (\(key)) does not hold a sha256 digest"); continue
            }
            out.append((label, d))
        }
        return out
    }

    /// The manifest an IMAGE argument names; an image that is not there is an error, not a problem.
    func resolveRoot(_ spec: String) throws -> (label: String, manifest: Digest) {
        if !spec.hasPrefix("sha256:"), let ref = try? ImageReference(parsing: spec) {
            if let d = ref.digest { return (spec, d) }
            let tag = ref.tag ?? "latest"
            if let d = try repo.readRef(name: ref.name, tag: tag) { return ("\(ref.name):\(tag)", d) }
            if Digest.idPrefix(spec) == nil { throw DogestryError.notFound("image \(ref) is not on \(remote.displayURL)") }
        }
        let img = try Puller(repository: repo, progress: SilentProgress()).resolve(spec)
        return (img.tags.first ?? spec, img.manifestDigest)
    }

    /// Checks the unexpired pull tickets; returns how many.
    func checkTickets() throws -> Int {
        var keys: [String] = []
        try remote.list(prefix: PullTicket.keyPrefix) { keys.append($0.key) }
        var n = 0
        let now = Date()
        for key in keys.sorted() where key.hasSuffix(".json") {
            let t: PullTicket
            do { t = try PullTicket.decode(try remote.read(key, limit: PullTicket.sizeLimit), what: "ticket \(key)") } catch let e as DogestryError {
                if e.kind == .notFound { continue }
                add("ticket-invalid", key, e.message); continue
            }
            guard let exp = try? t.expiryDate(), exp > now else { continue }
            n += 1
            for b in t.blobs {
                let o = try blobObject(b.digest)
                if o == nil || o?.size != b.size {
                    add("ticket-blob-missing", key, "ticket \(key) (\(t.image.tags.first ?? t.image.name), until \(t.expires)): blob \(b.digest) " + (o == nil ? "missing" : "has \(o!.size) bytes, ticket says \(b.size)"))
                }
            }
        }
        return n
    }

    struct HashResult { var problems: [VerifyProblem] = []; var hashed = false; var bytes: Int64 = 0; var plain: Int64 = 0 }

    /// Re-hashes one blob; a layer (known from a manifest or the index) is decompressed and its diffID checked.
    func hash(_ d: Digest, _ expectations: [Expectation], mustExist: Bool) throws -> HashResult {
        var r = HashResult()
        func add(_ kind: String, _ m: String) { r.problems.append(VerifyProblem(kind: kind, object: d.description, message: m)) }
        let raw: ByteSource
        do { raw = try remote.open(Repository.blobKey(d)) } catch let e as DogestryError where e.kind == .notFound {
            if mustExist { add("layer-missing", "blob \(d) vanished while verify ran") }
            return r
        }
        let media = expectations.first { !$0.fromIndex }?.mediaType ?? expectations.first?.mediaType
        let compression = media.flatMap { Compression(layerMediaType: $0) }
        let id = d.short
        if compression != nil { progress.report(.begin(id: id, action: "verifying", total: nil)) }
        let blob = HashingSource(ProgressSource(raw, id: id, progress: compression != nil ? progress : SilentProgress()))
        var plainDigest: Digest?
        var plainCount: Int64 = 0
        var decompressError: String?
        if let c = compression {
            do {
                let plain = HashingSource(try c.decompressor(from: blob))
                try plain.drain()
                plainDigest = plain.hasher.finalize()
                plainCount = plain.count
            } catch let e as DogestryError where e.kind == .corrupt || e.kind == .invalidInput {
                decompressError = "cannot be decompressed as \(c.rawValue): \(e.message)"
            }
        }
        try blob.drain()
        r.hashed = true
        r.bytes = blob.count
        r.plain = plainCount
        let got = blob.hasher.finalize()
        if compression != nil { progress.report(.end(id: id, summary: got == d ? "verified \(formatBytes(blob.count))" : "CORRUPT")) }
        guard got == d else {
            add("blob-corrupt", "blob \(d): content hashes to \(got) (corrupt)")
            return r
        }
        if let e = decompressError { add("layer-invalid", "layer \(d): \(e)"); return r }
        guard let pd = plainDigest else { return r }
        var reported = Set<String>()
        for x in expectations {
            // A wrong index entry is the entry's problem (its key), a wrong manifest the layer's.
            func report(_ kind: String, _ m: String) {
                guard reported.insert(m).inserted else { return }
                if x.fromIndex {
                    r.problems.append(VerifyProblem(kind: "index-" + kind, object: Repository.diffIDKey(x.diffID), message: m))
                } else { add("layer-" + kind, m) }
            }
            if x.diffID != pd {
                report("diffid", x.fromIndex ? "layer \(d): diffID is \(pd), index says \(x.diffID)"
                                             : "layer \(d) (\(x.source)): diffID is \(pd), manifest says \(x.diffID)")
            } else if let u = x.uncompressedSize, u != plainCount {
                report("uncompressed-size", "layer \(d): decompresses to \(plainCount) bytes, \(x.fromIndex ? "index" : x.source) says \(u)")
            }
        }
        return r
    }
}
