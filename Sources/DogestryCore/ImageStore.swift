import Foundation

/// A manifest or image index exactly as a store holds it.
public struct StoredManifest: Sendable, Equatable {
    /// The bytes, unchanged (their digest is the manifest's identity).
    public var bytes: [UInt8]
    /// The media type it is stored and served with.
    public var mediaType: String
    /// `sha256` of `bytes`.
    public var digest: Digest

    public init(bytes: [UInt8], mediaType: String? = nil) {
        self.bytes = bytes
        self.mediaType = mediaType ?? ManifestKind.mediaType(of: bytes) ?? MediaType.ociManifest
        self.digest = Digest.of(bytes)
    }

    public var isIndex: Bool { MediaType.isIndex(mediaType) || ManifestKind.of(bytes) == .index }
}

/// How a blob came to be in a repository of a destination (`ImageDestination.placeBlob`).
public enum BlobPlacement: Sendable, Equatable {
    /// The repository already had it.
    case present
    /// The store linked it from another of its repositories (`from`) without moving its bytes.
    case mounted(from: String)
}

/// The read side of an image store: repositories of images, each with tags, manifests and blobs.
///
/// This is the interface `copy`, `pull`, `list`, `inspect`, `tag` and `rm` work on. Two kinds of
/// store implement it: a dogestry remote (`RepositoryImageStore`, over the repository format of
/// docs/FORMAT.md, where blobs are shared by every name) and an OCI registry (where blobs belong
/// to a repository). The contract, checked by one conformance suite over both:
/// - every call names its repository (`name`, dogestry's canonical image name such as `team/api`);
///   the store keeps no "current name";
/// - `manifest` returns exactly the bytes stored; a digest reference is verified against the
///   content, and nil means the store answered that it has no such manifest — every other failure
///   (unreachable, refused, corrupt) throws;
/// - `blobSize` is the blob's size in repository `name`, nil when that repository lacks it;
/// - `openBlob` streams the blob; the caller verifies the digest as it reads (stores may resume a
///   dropped transfer, never change its bytes);
/// - `tags` lists the tags of `name` (empty when it has none or the store does not know it);
///   `refs` lists every `name:tag` with its manifest digest, sorted by name then tag.
public protocol ImageSource: AnyObject, Sendable {
    /// The store as the user named it (for messages).
    var displayURL: String { get }
    /// The manifest or index `reference` (a tag, or `sha256:…`) names in repository `name`.
    func manifest(_ name: String, reference: String) throws -> StoredManifest?
    /// The size of blob `digest` in repository `name`, or nil when that repository lacks it.
    func blobSize(_ name: String, _ digest: Digest) throws -> Int64?
    /// Streams blob `digest` of repository `name`; a `.notFound` error when it lacks it.
    func openBlob(_ name: String, _ digest: Digest) throws -> ByteSource
    /// The tags of repository `name`, sorted.
    func tags(_ name: String) throws -> [String]
    /// Every tag of every repository the store lists, sorted by name then tag. `warn` hears of a
    /// tag that cannot be read (the others are still listed).
    func refs(warn: (String) -> Void) throws -> [RemoteRef]
    /// A one-line description of the store after checking that it answers (`dogestry remote`).
    func check() throws -> String
    /// The dogestry repository behind this store, when it is one: its layer index, reuse guard
    /// and store-level copies are dogestry's own bookkeeping, which a registry does not have.
    var repository: Repository? { get }
}

/// The write side of an image store.
///
/// Contract (same suite as `ImageSource`):
/// - `placeBlob` makes a blob part of repository `name` without sending its bytes when it can:
///   `.present` when the repository has it, `.mounted(from:)` when the store linked it from another
///   of its repositories (one known to hold it, or `from` when it names a repository of this same
///   store), nil when the bytes must be sent with `putBlob`;
/// - `putBlob` stores a blob the caller has already verified (a staged file of `size` bytes); the
///   store may check the digest again, never store it under another one;
/// - `putManifest` stores a manifest by its digest, and under `tag` when one is given, only after
///   every blob (and, for an index, every manifest) it names is in repository `name`;
/// - `deleteTag` removes one tag and nothing else, or throws a one-line error saying why not.
public protocol ImageDestination: ImageSource {
    func placeBlob(_ name: String, _ digest: Digest, size: Int64, from source: (store: ImageSource, name: String)?) throws -> BlobPlacement?
    func putBlob(_ name: String, _ digest: Digest, file: StagedFile, size: Int64) throws
    /// `putBlob` for a small blob held in memory (a config).
    func putBlob(_ name: String, _ digest: Digest, bytes: [UInt8]) throws
    /// True when it wrote anything, false when the store already had the manifest there (and
    /// the tag pointed at it).
    @discardableResult
    func putManifest(_ name: String, _ manifest: StoredManifest, tag: String?) throws -> Bool
    func deleteTag(_ name: String, _ tag: String) throws
    /// A temporary file to stage a blob in before `putBlob`.
    func makeStagedFile() throws -> StagedFile
}

extension ImageSource {
    /// Reads a small blob (a config) of repository `name`, checking its digest.
    public func readBlob(_ name: String, _ d: Digest, what: String, limit: Int = RepositoryLimits.metadataBytes) throws -> [UInt8] {
        let bytes: [UInt8]
        do { bytes = try openBlob(name, d).readAll(limit: limit, what: "\(what) \(d)") } catch let e as DogestryError where e.kind == .notFound {
            throw DogestryError.notFound("\(what) \(d) is missing from \(displayURL)")
        }
        let got = Digest.of(bytes)
        guard got == d else { throw DogestryError.corrupt("\(what) \(d) on \(displayURL) is corrupt: its content hashes to \(got)") }
        return bytes
    }

    /// The manifest or index `d` of repository `name`, or a `.notFound` error naming it.
    public func requireManifest(_ name: String, _ d: Digest, what: String = "manifest") throws -> StoredManifest {
        guard let m = try manifest(name, reference: d.description) else {
            throw DogestryError.notFound("\(what) \(d) is missing from \(displayURL)")
        }
        return m
    }

    public var repository: Repository? { nil }
}

/// A dogestry remote seen as an image store: every name shares the remote's blobs, manifests are
/// blobs, tags are refs (docs/FORMAT.md).
public final class RepositoryImageStore: ImageDestination, @unchecked Sendable {  // (immutable; the remote is Sendable)
    public let repo: Repository
    public init(_ repo: Repository) { self.repo = repo }
    public convenience init(remote: ReadableRemote) { self.init(Repository(remote: remote)) }

    public var repository: Repository? { repo }
    public var displayURL: String { repo.remote.displayURL }

    public func manifest(_ name: String, reference: String) throws -> StoredManifest? {
        let d: Digest
        if let parsed = try? Digest(parsing: reference) { d = parsed } else {
            guard let r = try repo.readRef(name: name, tag: reference) else { return nil }
            d = r
        }
        do { return StoredManifest(bytes: try repo.readBlob(d, what: "manifest")) } catch let e as DogestryError where e.kind == .notFound {
            // A tag naming a missing manifest is damage, not absence.
            if (try? Digest(parsing: reference)) == nil { throw e }
            return nil
        }
    }

    public func blobSize(_ name: String, _ digest: Digest) throws -> Int64? {
        try repo.remote.stat(Repository.blobKey(digest))?.size
    }

    public func openBlob(_ name: String, _ digest: Digest) throws -> ByteSource {
        do { return try repo.remote.open(Repository.blobKey(digest)) } catch let e as DogestryError where e.kind == .notFound {
            throw DogestryError.notFound("blob \(digest) is missing from \(displayURL)")
        }
    }

    public func tags(_ name: String) throws -> [String] { try repo.listTags(name: name) }

    public func refs(warn: (String) -> Void) throws -> [RemoteRef] {
        try withoutActuallyEscaping(warn) { warn in
            Repository.resolvedView(try repo.listRefs(invalid: { warn("ignoring \($0): not a valid ref key") },
                                                      unreadable: { key, e in warn("skipping \(key): \(e.message)") }))
        }
    }

    public func check() throws -> String { try repo.remote.check() }

    public func placeBlob(_ name: String, _ digest: Digest, size: Int64, from source: (store: ImageSource, name: String)?) throws -> BlobPlacement? {
        guard let o = try repo.remote.stat(Repository.blobKey(digest)), o.size == size else { return nil }
        return .present
    }

    public func putBlob(_ name: String, _ digest: Digest, file: StagedFile, size: Int64) throws {
        try repo.writer.put(Repository.blobKey(digest), file: file, size: size)
    }

    public func putBlob(_ name: String, _ digest: Digest, bytes: [UInt8]) throws {
        try repo.writer.put(Repository.blobKey(digest), bytes: bytes)
    }

    @discardableResult
    public func putManifest(_ name: String, _ manifest: StoredManifest, tag: String?) throws -> Bool {
        var wrote = false
        if try repo.remote.stat(Repository.blobKey(manifest.digest)) == nil {
            try repo.writer.put(Repository.blobKey(manifest.digest), bytes: manifest.bytes)
            wrote = true
        }
        if let tag, try repo.readRef(name: name, tag: tag) != manifest.digest {
            try repo.writeRef(name: name, tag: tag, manifest: manifest.digest)
            wrote = true
        }
        return wrote
    }

    public func deleteTag(_ name: String, _ tag: String) throws { try repo.deleteRef(name: name, tag: tag) }

    public func makeStagedFile() throws -> StagedFile { try repo.writer.makeStagedFile() }
}
