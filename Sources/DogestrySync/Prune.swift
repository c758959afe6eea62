import DogestryCore
import DogestryRemotes
import Foundation

/// How `prune` runs.
public struct PruneOptions: Sendable {
    /// Seconds an unreferenced object must have been left alone before it is removed. Every push
    /// must finish within this time (docs/FORMAT.md, "Pruning and concurrency"); 0 is only safe
    /// when no push is running.
    public var grace: Int = PruneOptions.defaultGrace
    /// List what would go, remove nothing.
    public var dryRun = false
    /// Threads reading index entries, tickets and manifests.
    public var threads = 4
    /// The default grace period: 24 hours.
    public static let defaultGrace = 86_400
    /// The remote's `[prune] touch-after` in seconds: a push touches only what is older, so a
    /// grace shorter than `touchAfter + safetyMargin` could remove what a running push reuses.
    public var touchAfter: Int = ReuseGuard.defaultTouchAfter
    /// Says that nobody pushes to the remote while prune runs: any grace is then allowed.
    public var force = false
    /// What a grace must exceed `touchAfter` by (30 minutes): the time a push may take from its
    /// first look-up to its refs when everything it reuses is younger than `touchAfter` (so it
    /// touches nothing), plus clock skew between the store and prune.
    public static let safetyMargin = 1_800
    /// The shortest grace prune accepts without `force`.
    public var minimumGrace: Int { max(0, touchAfter) + Self.safetyMargin }
    public init() {}

    /// Refuses a grace that cannot be safe while others push, unless `force`.
    public func checkSafe(on remote: String) throws {
        guard !force, grace < minimumGrace else { return }
        throw DogestryError.invalid("grace \(Lifetime.format(grace)) is shorter than touch-after (\(Lifetime.format(max(0, touchAfter)))) plus a margin of \(Lifetime.format(Self.safetyMargin)): a push to \(remote) running now could lose objects it reuses; use a grace of at least \(Lifetime.format(minimumGrace)), or --force if nobody pushes while prune runs")
    }
}

/// What `prune` removed (or, with `dryRun`, would remove).
public struct PruneReport: Sendable {
    public enum Kind: String, Sendable { case blob, index, ticket, upload }
    public struct Item: Sendable, Equatable {
        public var kind: Kind
        /// The key removed (an upload: the key it was for).
        public var key: String
        /// Bytes freed, when known.
        public var size: Int64?
        /// A short note: a blob's role, a ticket's expiry, an upload's ID, an index entry repointed.
        public var note: String
    }
    public var dryRun = false
    public var grace = 0
    public var removed: [Item] = []
    /// Index entries that pointed at a removed (or missing) blob and were pointed at the blob a
    /// tagged image stores the same layer in, instead of being removed.
    public var repointed: [Item] = []
    /// Objects that were candidates but had become young (a push reused them) when checked again
    /// right before removal, and were kept.
    public var keptYoung: [String] = []
    /// Blobs in use (reachable from a ref or an unexpired ticket), and their bytes.
    public var liveBlobs = 0
    public var liveBytes: Int64 = 0
    /// Unreferenced blobs kept because they are younger than the grace period, and their bytes.
    public var youngBlobs = 0
    public var youngBytes: Int64 = 0
    /// Refs and unexpired tickets marked from.
    public var refs = 0, tickets = 0
    /// Roots that could not be read (a ref that holds no digest, a manifest missing, too large or
    /// not a manifest), one line each. While there is any, no blob is removed: what such an image
    /// needs is unknown.
    public var unreadable: [String] = []
    /// Unreferenced blobs old enough to go, kept because a root could not be read, and their bytes.
    public var keptUnknownBlobs = 0
    public var keptUnknownBytes: Int64 = 0
    /// Whether the remote can list incomplete uploads (S3, local) — Manta has none.
    public var sweepsUploads = false

    /// How many objects of kind `k` were removed.
    public func count(_ k: Kind) -> Int { removed.filter { $0.kind == k }.count }
    /// The bytes the removed objects of kind `k` held (those whose size is known).
    public func bytes(_ k: Kind) -> Int64 { removed.filter { $0.kind == k }.reduce(0) { $0 + ($1.size ?? 0) } }
    /// Every byte freed (blobs, index entries, tickets, uploads whose size is known).
    public var bytesFreed: Int64 { removed.reduce(0) { $0 + ($1.size ?? 0) } }
}

/// `dogestry prune`: mark and sweep, safe while others push.
///
/// 1. List blobs, index entries, tickets and incomplete uploads (the candidates) FIRST.
/// 2. Then list refs and tickets and mark everything they reach (so a ref written meanwhile is seen).
/// 3. A candidate goes when it is unmarked AND older than the grace period — a layer blob's age
///    being the youngest of its own modification time and its index entries' (a push that reuses
///    an old layer touches its index entry, see `ReuseGuard`). Each candidate (and its index
///    entries) is stat'ed again right before it is removed and kept if it became young.
/// 4. Index entries go before their blob (a push that still reads one finds the blob missing and
///    uploads the layer again); manifests and configs before layers; expired tickets; incomplete
///    uploads older than the grace period.
///
/// A ref or manifest that cannot be read is reported (`unreadable`) and the rest is pruned, except
/// blobs: none is removed then, since prune could not tell what that image needs (`dogestry
/// verify` says what is wrong, `dogestry rm` removes a broken ref). A grace shorter than
/// touch-after plus `PruneOptions.safetyMargin` is refused unless `force` (see `checkSafe`).
public final class Pruner {
    public let repo: Repository
    let progress: ProgressReporter
    var remote: ReadableRemote { repo.remote }

    public init(repository: Repository, progress: ProgressReporter = SilentProgress()) {
        self.repo = repository; self.progress = progress
    }

    public func prune(_ options: PruneOptions) throws -> PruneReport {
        var report = PruneReport()
        report.dryRun = options.dryRun
        report.grace = options.grace
        try options.checkSafe(on: remote.displayURL)
        let grace = TimeInterval(max(0, options.grace))

        // 1. Candidates.
        let blobs = try repo.listByDigest(Repository.blobsPrefix)
        let indexObjects = try repo.listByDigest(Repository.diffIDPrefix)
        var ticketObjects: [String: RemoteObject] = [:]
        try remote.list(prefix: PullTicket.keyPrefix) { o in ticketObjects[o.key] = o }
        var uploads: [IncompleteUpload] = []
        if let sweeper = remote as? UploadSweeping {
            report.sweepsUploads = true
            try sweeper.listIncompleteUploads { uploads.append($0) }
        }
        let indexKeys = indexObjects.keys.sorted()
        // nil: gone meanwhile; .some(nil): unreadable.
        let indexEntries: [LayerIndexEntry??] = try parallelMap(indexKeys, threads: options.threads) { d in
            try self.repo.readIndexEntry(diffID: d).map { Repository.decodeIndexEntry($0) }
        }
        var index: [Digest: LayerIndexEntry?] = [:]
        for (d, e) in zip(indexKeys, indexEntries) { if let e { index[d] = e } }
        var tickets = try readTickets(ticketObjects.keys.sorted(), threads: options.threads)
        progress.report(.info("listed \(blobs.count) blob(s), \(index.count) index entr\(index.count == 1 ? "y" : "ies"), \(ticketObjects.count) ticket(s), \(uploads.count) incomplete upload(s) on \(remote.displayURL)"))

        // 2. Roots, listed after the candidates.
        let refs = try repo.listRefs(invalid: { _ in }, unreadable: { _, e in report.unreadable.append(e.message) })
        report.refs = refs.count
        var laterTickets: [String] = []
        try remote.list(prefix: PullTicket.keyPrefix) { o in if tickets[o.key] == nil { laterTickets.append(o.key) } }
        tickets.merge(try readTickets(laterTickets, threads: options.threads)) { a, _ in a }
        let now = Date()
        var marked = Set<Digest>()
        var liveLayers: [Digest: LayerIndexEntry] = [:]   // diffID -> a live blob storing it, proven by its manifest
        var manifestsToRead: [Digest: String] = [:]
        for r in refs where manifestsToRead[r.manifest] == nil { manifestsToRead[r.manifest] = "ref \(r.name):\(r.tag)" }
        for (_, t) in tickets.sorted(by: { $0.key < $1.key }) {
            guard let t, let exp = try? t.expiryDate(), exp > now else { continue }
            report.tickets += 1
            for b in t.blobs { marked.insert(b.digest) }   // a ticket lists its manifest, config and layers
        }
        // What the refs point at: manifests, or image indexes whose entries are all live too.
        let rootDigests = manifestsToRead.keys.sorted()
        let roots: [Result<[UInt8], DogestryError>] = try parallelMap(rootDigests, threads: options.threads) { md in
            do { return .success(try self.repo.readBlob(md, what: "manifest")) } catch let e as DogestryError where [.notFound, .corrupt, .invalidInput].contains(e.kind) {
                return .failure(e)
            }
        }
        var manifestDigests: [Digest] = []
        var manifests: [Result<ImageManifest, DogestryError>] = []
        var children: [Digest] = []
        for (md, raw) in zip(rootDigests, roots) {
            guard case .success(let bytes) = raw, ManifestKind.of(bytes) == .index else {
                manifestDigests.append(md)
                switch raw {
                case .failure(let e): manifests.append(.failure(e))
                case .success(let b):
                    do { manifests.append(.success(try ImageManifest.decode(b, what: "manifest \(md)"))) } catch let e as DogestryError {
                        manifests.append(.failure(e))
                    }
                }
                continue
            }
            marked.insert(md)
            do {
                let index = try ImageIndex.decode(bytes, what: "image index \(md)")
                let images = Set(index.images.map(\.digest))
                for e in index.manifests {
                    marked.insert(e.digest)
                    if images.contains(e.digest), manifestsToRead[e.digest] == nil, !children.contains(e.digest) {
                        children.append(e.digest)
                        manifestsToRead[e.digest] = "\(manifestsToRead[md]!) [\(e.platform?.description ?? "?")]"
                    }
                }
            } catch let e as DogestryError { report.unreadable.append("\(manifestsToRead[md]!) -> \(md): \(e.message)") }
        }
        manifestDigests += children
        manifests += try parallelMap(children, threads: options.threads) { md in
            do { return .success(try self.repo.readManifest(md)) } catch let e as DogestryError where [.notFound, .corrupt, .invalidInput].contains(e.kind) {
                return .failure(e)
            }
        }
        for (md, result) in zip(manifestDigests, manifests) {
            marked.insert(md)
            let m: ImageManifest
            switch result {
            case .success(let v): m = v
            case .failure(let e): report.unreadable.append("\(manifestsToRead[md]!) -> \(md): \(e.message)"); continue
            }
            marked.insert(m.config.digest)
            for l in m.layers {
                marked.insert(l.digest)
                if let d = l.diffID, let u = l.uncompressedSize, liveLayers[d] == nil, blobs[l.digest]?.size == l.size {
                    liveLayers[d] = LayerIndexEntry(digest: l.digest, mediaType: l.mediaType, size: l.size, uncompressedSize: u, manifest: md)
                }
            }
        }
        let blobsKnownSafe = report.unreadable.isEmpty

        // 3. What is old enough to go.
        let cutoff = now.addingTimeInterval(-grace)
        func isOld(_ o: RemoteObject?) -> Bool {
            if grace == 0 { return true }
            guard let m = o?.modified else { return false }   // no time known: never old
            return m < cutoff
        }
        var owners: [Digest: [Digest]] = [:]                 // blob -> diffIDs whose index entry names it
        for (d, e) in index { if let e = e { owners[e.digest, default: []].append(d) } }
        var blobCandidates: [Digest] = []
        for (d, o) in blobs {
            if marked.contains(d) {
                report.liveBlobs += 1; report.liveBytes += o.size
            } else if isOld(o) && (owners[d] ?? []).allSatisfy({ isOld(indexObjects[$0]) }) {
                if blobsKnownSafe { blobCandidates.append(d) } else { report.keptUnknownBlobs += 1; report.keptUnknownBytes += o.size }
            } else {
                report.youngBlobs += 1; report.youngBytes += o.size
            }
        }
        let sweptBlobs = Set(blobCandidates)
        // Index entries that do not lead to a live blob: unreadable, or naming a blob that is
        // missing or has another size (entries of blobs being swept go with their blob).
        var danglingIndex: [Digest] = []
        for d in indexKeys {
            guard let e = index[d], isOld(indexObjects[d]) else { continue }
            if let e {
                if sweptBlobs.contains(e.digest) { continue }
                if let b = blobs[e.digest], b.size == e.size { continue }
            }
            danglingIndex.append(d)
        }
        var ticketCandidates: [String] = []
        for (key, t) in tickets where ticketObjects[key] != nil {
            if let t, let exp = try? t.expiryDate() {
                if exp <= now { ticketCandidates.append(key) }
            } else if isOld(ticketObjects[key]) {
                ticketCandidates.append(key)   // unreadable: protects nothing; removed after the grace period
            }
        }
        let uploadCandidates = uploads.filter { u in
            grace == 0 || (u.initiated.map { $0 < cutoff } ?? false)
        }

        // 4. Remove, checking each candidate again right before.
        // Index entries without a live blob.
        for d in danglingIndex {
            let key = Repository.diffIDKey(d)
            guard let now = try remote.stat(key) else { continue }
            if !isOld(now) { report.keptYoung.append(key); continue }
            // The blob may have arrived meanwhile (a push writes the blob before the entry).
            if let e = index[d] ?? nil, let b = try remote.stat(Repository.blobKey(e.digest)), b.size == e.size { continue }
            try dropIndexEntry(d, key: key, size: now.size, note: "blob missing", live: liveLayers[d], &report, dryRun: options.dryRun)
        }
        // Blobs: the ones no index entry names (manifests, configs) before layers.
        let ordered = blobCandidates.sorted { a, b in
            let la = owners[a] != nil, lb = owners[b] != nil
            return la != lb ? !la : a < b
        }
        for d in ordered {
            let key = Repository.blobKey(d)
            guard let o = try remote.stat(key) else { continue }   // gone meanwhile
            var young = !isOld(o)
            var entries: [(Digest, RemoteObject)] = []
            for od in owners[d] ?? [] {
                guard let io = try remote.stat(Repository.diffIDKey(od)) else { continue }
                if !isOld(io) { young = true; break }
                entries.append((od, io))
            }
            if young { report.keptYoung.append(key); continue }
            for (od, io) in entries {
                try dropIndexEntry(od, key: Repository.diffIDKey(od), size: io.size, note: "named removed blob \(d.short)",
                                   live: liveLayers[od], &report, dryRun: options.dryRun)
            }
            if !options.dryRun { try repo.writer.delete(key) }
            report.removed.append(.init(kind: .blob, key: key, size: o.size, note: owners[d] != nil ? "layer" : "unreferenced"))
        }
        for key in ticketCandidates.sorted() {
            if !options.dryRun { try repo.writer.delete(key) }
            let t = tickets[key] ?? nil
            report.removed.append(.init(kind: .ticket, key: key, size: ticketObjects[key]?.size,
                                        note: t.map { "expired \($0.expires)" } ?? "unreadable"))
        }
        if let sweeper = remote as? UploadSweeping {
            for u in uploadCandidates {
                let size = try sweeper.incompleteUploadSize(u)
                if !options.dryRun { try sweeper.abortIncompleteUpload(u) }
                report.removed.append(.init(kind: .upload, key: u.key, size: size,
                                            note: "upload \(u.id)" + (u.initiated.map { ", started \(RFC3339.format($0))" } ?? "")))
            }
        }
        return report
    }

    /// Removes the index entry of `diffID`, or points it at `live` (a blob, present, in which a
    /// tagged image stores the same layer) when there is one, so pushes keep finding the layer.
    func dropIndexEntry(_ diffID: Digest, key: String, size: Int64, note: String, live: LayerIndexEntry?,
                        _ report: inout PruneReport, dryRun: Bool) throws {
        if let l = live {
            if !dryRun { try repo.recordLayer(diffID: diffID, l) }
            report.repointed.append(.init(kind: .index, key: key, size: nil, note: "now names \(l.digest.short)"))
            return
        }
        if !dryRun { try repo.writer.delete(key) }
        report.removed.append(.init(kind: .index, key: key, size: size, note: note))
    }

    /// Reads tickets by key: nil for one that cannot be read as a ticket; keys gone meanwhile are left out.
    func readTickets(_ keys: [String], threads: Int) throws -> [String: PullTicket?] {
        let read: [PullTicket??] = try parallelMap(keys, threads: threads) { key in
            let bytes: [UInt8]
            do { bytes = try self.remote.read(key, limit: PullTicket.sizeLimit) } catch let e as DogestryError where e.kind == .notFound {
                return nil
            } catch let e as DogestryError where e.kind == .invalidInput {
                return .some(nil)   // too large to be a ticket
            }
            return .some(try? PullTicket.decode(bytes, what: "ticket \(key)"))
        }
        var out: [String: PullTicket?] = [:]
        for (k, t) in zip(keys, read) { if let t { out[k] = t } }
        return out
    }
}
