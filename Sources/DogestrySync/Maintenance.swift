import DogestryCore
import Foundation

// Keeping a remote healthy: tag operations (this file), `inspect` (Inspect.swift), `prune`
// (Prune.swift) and `verify` (Verify.swift). Everything goes through the `Remote` protocol, so it
// works the same on every remote.

extension Lifetime {
    /// Parses a duration that may be zero (`0`, `0s`, `0m`…) — otherwise as `parse`.
    public static func parseDuration(_ text: String, option: String) throws -> Int {
        let t = text.trimmingCharacters(in: .whitespaces).lowercased()
        let digits = t.filter { $0.isASCII && $0.isNumber }
        if !digits.isEmpty, digits.allSatisfy({ $0 == "0" }) {
            if t.allSatisfy({ $0 == "0" }) { return 0 }
            // "0s", "0h0m": valid once the zeros are made ones.
            _ = try parse(String(t.map { $0 == "0" ? "1" : $0 }), option: option)
            return 0
        }
        return try parse(text, option: option)
    }

    /// Plain seconds (not negative), or a duration as `parseDuration` takes it (30s, 2m).
    public static func parseSeconds(_ text: String, option: String) throws -> Int {
        guard let n = Int(text.trimmingCharacters(in: .whitespaces)) else { return try parseDuration(text, option: option) }
        guard n >= 0 else { throw DogestryError.invalid("\(option) must not be negative") }
        return n
    }
}

/// Runs `body` on every item with up to `threads` threads (the shared `Workers` pool); returns the
/// results in the items' order. The first error is rethrown once every thread has stopped.
func parallelMap<T, R>(_ items: [T], threads: Int, _ body: (T) throws -> R) throws -> [R] {
    try Workers.map(items, threads: threads, body)
}

/// What `Tagger.tag` did.
public struct TagResult: Sendable {
    /// The new reference (`name:tag`).
    public var reference: String
    /// The manifest it now points at.
    public var manifest: Digest
    /// The image ID (config digest).
    public var id: Digest
    /// The manifest the tag pointed at before (nil: a new tag).
    public var previous: Digest?
}

/// What `Tagger.untag` did for one argument.
public struct UntagResult: Sendable {
    /// The argument as given.
    public var spec: String
    /// The reference removed (`name:tag`), when it parsed.
    public var reference: String?
    /// The manifest the removed tag pointed at.
    public var manifest: Digest?
    /// Why nothing was removed (one line), or nil.
    public var error: String?
}

/// `dogestry tag` and `dogestry rm`: refs are written and deleted; no blob moves.
public final class Tagger {
    public let store: ImageDestination
    let touchAfter: Int

    public init(store: ImageDestination, touchAfter: Int = ReuseGuard.defaultTouchAfter) {
        self.store = store; self.touchAfter = touchAfter
    }

    public convenience init(repository: Repository, touchAfter: Int = ReuseGuard.defaultTouchAfter) {
        self.init(store: RepositoryImageStore(repository), touchAfter: touchAfter)
    }

    /// Points `destination` (`name[:tag]`, tag `latest` by default) at the image `source` names
    /// (`name[:tag]`, `name@sha256:…`, or an image-ID prefix, as `pull` resolves it). The image's
    /// manifest, config and layer index entries are touched when old (see `ReuseGuard`), since a
    /// manifest named by digest may be unreferenced and due for pruning.
    public func tag(_ source: String, as destination: String) throws -> TagResult {
        let dst = try ImageReference(parsing: destination)
        guard dst.digest == nil, let tag = dst.tag else {
            throw DogestryError.invalid("tag \(destination): the new name must be NAME[:TAG], not a digest reference")
        }
        let img = try Puller(store: store, progress: SilentProgress()).resolve(source)
        guard let repo = store.repository else { return try tagInRegistry(img, name: dst.name, tag: tag) }
        let previous = try repo.readRef(name: dst.name, tag: tag)
        let result = TagResult(reference: "\(dst.name):\(tag)", manifest: img.manifestDigest, id: img.id, previous: previous)
        if previous == img.manifestDigest { return result }
        let guardian = ReuseGuard(repository: repo, touchAfter: touchAfter)
        for (i, l) in img.manifest.layers.enumerated() {
            let diffID = img.config.diffIDs[i]
            let blob = try repo.remote.stat(Repository.blobKey(l.digest))
            guard let b = blob, b.size == l.size else {
                throw DogestryError.notFound("layer blob \(l.digest) of \(source) is missing from \(repo.remote.displayURL) (run dogestry verify)")
            }
            let entry = LayerIndexEntry(digest: l.digest, mediaType: l.mediaType, size: l.size, uncompressedSize: l.uncompressedSize ?? 0,
                                        manifest: img.manifestDigest)
            try guardian.protectLayer(diffID: diffID, entry: entry, blob: b, indexPointsHere: false)
        }
        try guardian.protectBlob(img.config.bytes, digest: img.id, object: try repo.remote.stat(Repository.blobKey(img.id)))
        let manifestObject = try repo.remote.stat(Repository.blobKey(img.manifestDigest))
        if guardian.isStale(manifestObject) {
            try guardian.protectBlob(try repo.readBlob(img.manifestDigest, what: "manifest"), digest: img.manifestDigest, object: manifestObject)
        }
        try guardian.verify(layers: img.config.diffIDs, blobs: [img.id, img.manifestDigest])
        try repo.writeRef(name: dst.name, tag: tag, manifest: img.manifestDigest)
        return result
    }

    /// A tag in a registry: the manifest (or the index the source named) PUT under the new tag;
    /// under another name its blobs are mounted there first (a copy within the registry).
    func tagInRegistry(_ img: ResolvedImage, name: String, tag: String) throws -> TagResult {
        let top = img.index ?? img.manifestDigest
        let previous = try store.manifest(name, reference: tag)?.digest
        let result = TagResult(reference: "\(name):\(tag)", manifest: top, id: img.id, previous: previous)
        if previous == top { return result }
        let copier = Copier(source: store, destination: store)
        _ = try copier.copy([try copier.item(name: ImageReference.normalizedName(name), sourceName: img.name, top: top, tags: ["\(name):\(tag)"])])
        return result
    }

    /// Removes the tags `specs` name (`name[:tag]`, tag `latest` by default). Each is handled on
    /// its own: a missing tag or a bad name is reported in its result and the others are still
    /// removed. Blobs stay until `prune` finds them unreferenced and older than its grace period.
    public func untag(_ specs: [String]) -> [UntagResult] {
        specs.map { spec in
            do {
                let r = try ImageReference(parsing: spec)
                guard r.digest == nil, let tag = r.tag else {
                    return UntagResult(spec: spec, error: "\(spec) is not a tag: rm removes tags (NAME[:TAG]); unreferenced manifests go with prune")
                }
                let reference = "\(r.name):\(tag)"
                // (A dogestry ref is read, not its manifest: a ref to a missing manifest can still go.)
                let current = try store.repository.map { try $0.readRef(name: r.name, tag: tag) } ?? store.manifest(r.name, reference: tag)?.digest
                guard let md = current else {
                    return UntagResult(spec: spec, reference: reference, error: "tag \(reference) is not on \(store.displayURL)")
                }
                try store.deleteTag(r.name, tag)
                return UntagResult(spec: spec, reference: reference, manifest: md)
            } catch let e as DogestryError {
                return UntagResult(spec: spec, error: e.message)
            } catch {
                return UntagResult(spec: spec, error: "\(spec): \(error)")
            }
        }
    }
}
