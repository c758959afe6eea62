import DogestryCore
import Foundation

/// Decides whether a diffID index entry may be relied on (docs/FORMAT.md, "Layer index").
///
/// An index entry is a mutable claim ("diffID d is stored as blob B"); a push that believed a
/// wrong one would publish a manifest nobody can pull. Re-hashing B would prove the claim but
/// costs a download of the layer, so the proof is a manifest instead: the entry is trusted only
/// when an image manifest on the remote — the one the entry names as its `manifest`, else any
/// manifest a ref points at — lists B (with the entry's size and media type) at a position where
/// its config's `rootfs.diff_ids` names d. Manifests and configs are content-addressed and read
/// with their digests checked, and dogestry only writes a manifest whose pairs it proved (by
/// compressing the layer itself, or through such a manifest), so a wrong entry alone can never
/// make a push publish a wrong pair. Reading a proof costs two small GETs per distinct manifest,
/// once per push.
final class IndexTrust {
    let repo: Repository
    /// The layers each manifest read so far stores, by diffID (nil: the manifest could not be read).
    private var pairs: [Digest: [Digest: [Descriptor]]?] = [:]
    /// The manifests of every ref, read once, the first time an entry's own proof fails.
    private var published: [Digest]?
    /// The configs read for proofs, by digest.
    private var configs: [Digest: ImageConfig] = [:]

    init(repository: Repository) { self.repo = repository }

    /// The manifest that proves `entry` for `diffID`, or nil when none does (the layer must then
    /// be stored by the push itself).
    func proof(for entry: LayerIndexEntry, diffID: Digest) throws -> Digest? {
        if let m = entry.manifest, try proves(m, entry, diffID) { return m }
        for m in try publishedManifests() where m != entry.manifest {
            if try proves(m, entry, diffID) { return m }
        }
        return nil
    }

    /// Whether manifest `md` stores `diffID` as `entry`'s blob.
    func proves(_ md: Digest, _ entry: LayerIndexEntry, _ diffID: Digest) throws -> Bool {
        guard let layers = try layers(of: md) else { return false }
        return layers[diffID]?.contains { entry.matches($0) } ?? false
    }

    /// The layers of manifest `md` by the diffIDs its config gives them; nil when the manifest or
    /// its config is missing, corrupt or disagrees with itself (it proves nothing then).
    private func layers(of md: Digest) throws -> [Digest: [Descriptor]]? {
        if let cached = pairs[md] { return cached }
        var out: [Digest: [Descriptor]]?
        do {
            let m = try repo.readManifest(md)
            let cfg = try config(m.config.digest)
            if cfg.diffIDs.count == m.layers.count {
                var byDiffID: [Digest: [Descriptor]] = [:]
                for (d, l) in zip(cfg.diffIDs, m.layers) where l.diffID.map({ $0 == d }) ?? true { byDiffID[d, default: []].append(l) }
                out = byDiffID
            }
        } catch let e as DogestryError where [.notFound, .corrupt, .invalidInput].contains(e.kind) {
            out = nil
        }
        pairs[md] = .some(out)
        return out
    }

    /// The image config `digest` from the remote (verified), read once per push: a push that
    /// needs the config of an image whose layers a proof already read costs no request more.
    func config(_ digest: Digest) throws -> ImageConfig {
        if let c = configs[digest] { return c }
        let c = try repo.readConfig(digest)
        configs[digest] = c
        return c
    }

    /// The distinct manifests the refs point at (refs that cannot be read are left out).
    private func publishedManifests() throws -> [Digest] {
        if let p = published { return p }
        let refs = try repo.listRefs(invalid: { _ in }, unreadable: { _, _ in })
        let p = Array(Set(refs.map(\.manifest))).sorted()
        published = p
        return p
    }
}
