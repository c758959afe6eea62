import DogestryCore
import Foundation

/// Keeps the objects a writer reuses from being pruned under it (docs/FORMAT.md, "Pruning and
/// concurrency").
///
/// `prune` removes an unreferenced object only when it is older than its grace period. An object
/// a push has just uploaded is young, so it is safe; but a push may also *reuse* an old,
/// unreferenced object it finds on the remote (a layer through the diffID index, a config or
/// manifest by its digest) instead of uploading it. Such an object is "touched" when its
/// modification time is older than `touchAfter`: the writer re-PUTs a small object that vouches for
/// it — a layer's diffID index entry (prune counts a layer blob as young when its index entry is),
/// or the config or manifest bytes themselves — which refreshes the store's modification time on
/// every remote. Objects younger than `touchAfter` are not touched (rapid re-pushes cost nothing):
/// they stay safe as long as the push ends within `grace − touchAfter`.
///
/// A touch made while the layer's bytes are still to come (`recheck`) is followed by a look at the
/// blob: if a prune took it between the look-up and the touch, the layer counts as missing and is
/// uploaded. Before a ref is written, `verify` checks that every touched layer blob still exists
/// (and puts touched configs and manifests again if they vanished); if one is gone the push fails
/// before tagging (`vanished` is set, so a caller that can read its source again starts over),
/// never leaving a ref to a missing blob.
public final class ReuseGuard {
    /// The default of `[prune] touch-after`: 10 minutes.
    public static let defaultTouchAfter = 600

    let repo: Repository
    /// Objects older than this many seconds are touched when reused.
    public let touchAfter: TimeInterval
    /// Layers whose index entry was touched (or found young), by diffID.
    private var layers: [Digest: LayerIndexEntry] = [:]
    /// Configs and manifests put again, by digest (their bytes, to put once more if they vanish).
    private var blobs: [Digest: [UInt8]] = [:]
    /// Index entries this guard wrote (removed again if their blob turns out to be gone).
    private var wroteIndex = Set<Digest>()
    /// Layers whose blob was found gone after the touch, by diffID.
    public private(set) var forgotten = Set<Digest>()
    /// Set when `verify` found a reused layer blob gone: the push failed, and may start over.
    public private(set) var vanished = false
    /// Objects re-PUT so far.
    public private(set) var touches = 0

    public init(repository: Repository, touchAfter: Int = ReuseGuard.defaultTouchAfter) {
        self.repo = repository
        self.touchAfter = TimeInterval(max(0, touchAfter))
    }

    /// Whether an object with this `stat` needs a touch to count as young (no time known: yes).
    public func isStale(_ object: RemoteObject?, now: Date = Date()) -> Bool {
        guard let m = object?.modified else { return true }
        return now.timeIntervalSince(m) >= touchAfter
    }

    /// Whether the layer `diffID` was touched already.
    public func hasTouched(layer diffID: Digest) -> Bool { layers[diffID] != nil }

    /// Touches the layer stored as `entry` (its blob as last seen: `blob`) if the blob is stale:
    /// the layer's index entry is put again unless it is young itself. `indexPointsHere` says the
    /// entry was read from the index (so a young index entry vouches for this very blob); when it
    /// was made from a manifest, the entry is always put.
    ///
    /// With `recheck`, the blob is looked at again after the touch; returns false when it is gone
    /// (the index entry written is removed again): the caller must store the layer itself.
    @discardableResult
    public func protectLayer(diffID: Digest, entry: LayerIndexEntry, blob: RemoteObject?, indexPointsHere: Bool,
                             recheck: Bool = false) throws -> Bool {
        guard layers[diffID] == nil, isStale(blob) else { return true }
        var needPut = true
        if indexPointsHere, let idx = try repo.remote.stat(Repository.diffIDKey(diffID)), !isStale(idx) { needPut = false }
        if needPut {
            try repo.recordLayer(diffID: diffID, entry)
            wroteIndex.insert(diffID)
            touches += 1
        }
        if recheck, !(try blobIsThere(entry)) {
            try forget(diffID)
            return false
        }
        layers[diffID] = entry
        return true
    }

    private func blobIsThere(_ e: LayerIndexEntry) throws -> Bool {
        guard let o = try repo.remote.stat(Repository.blobKey(e.digest)) else { return false }
        return o.size == e.size
    }

    /// A touched layer whose blob is gone: its index entry (if this guard wrote it) is removed, so
    /// no push trusts it, and the layer is no longer counted as stored.
    private func forget(_ diffID: Digest) throws {
        if wroteIndex.contains(diffID) { try repo.writer.delete(Repository.diffIDKey(diffID)) }
        layers[diffID] = nil
        forgotten.insert(diffID)
    }

    /// Records that a layer the push relied on is gone and fails (sets `vanished`).
    public func layerVanished(_ diffID: Digest, blob: Digest?) -> DogestryError {
        vanished = true
        return DogestryError(.aborted, "layer \(blob.map { "blob \($0) (diffID \(diffID))" } ?? diffID.description) vanished from \(repo.remote.displayURL) while it was being reused (a prune with a grace period shorter than this push?); nothing was tagged: push again")
    }

    /// Touches a config or manifest (`bytes`, whose `stat` was `object`) by putting it again if stale.
    public func protectBlob(_ bytes: [UInt8], digest: Digest, object: RemoteObject?) throws {
        guard blobs[digest] == nil, object != nil, isStale(object) else { return }
        try repo.writer.put(Repository.blobKey(digest), bytes: bytes)
        touches += 1
        blobs[digest] = bytes
    }

    /// Checks, just before refs are written, that what was touched for an image is still there:
    /// the touched layer blobs among `diffIDs` (a missing one fails: its bytes are not at hand) and
    /// the configs or manifests among `digests` (a missing one is put again).
    public func verify(layers diffIDs: [Digest], blobs digests: [Digest]) throws {
        for d in Set(diffIDs).sorted() {
            guard let e = layers[d] else { continue }
            if !(try blobIsThere(e)) {
                try forget(d)
                throw layerVanished(d, blob: e.digest)
            }
        }
        for d in Set(digests) {
            guard let bytes = blobs[d] else { continue }
            if try repo.remote.stat(Repository.blobKey(d)) == nil {
                try repo.writer.put(Repository.blobKey(d), bytes: bytes)
                touches += 1
            }
        }
    }
}
