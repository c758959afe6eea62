import Foundation

/// An object as a remote lists it.
public struct RemoteObject: Sendable, Equatable {
    /// The key, relative to the remote's root, `/`-separated (e.g. `blobs/sha256/ab…`).
    public var key: String
    public var size: Int64
    /// Last modification time, when the store reports one.
    public var modified: Date?
    public init(key: String, size: Int64, modified: Date? = nil) { self.key = key; self.size = size; self.modified = modified }
}

/// A temporary file being prepared for upload, e.g. a compressed layer.
///
/// Where the system allows it, the file has no name (Linux `O_TMPFILE`): it vanishes with the
/// process however that ends (`kill -9` included) until `publish(at:)` gives it one. A remote
/// may place it next to its objects (the local remote does, so uploading is a link and a rename).
public final class StagedFile {
    private let file: AnonymousFile
    private var consumed = false
    /// A path that opens the file (`/proc/self/fd/N` for an unnamed one).
    public var path: String { file.path }
    /// The directory the file lives in.
    public var directory: String { file.directory }

    /// Whether publishing makes this very file the stored object (a local remote's staging), so
    /// it is written for durability; a file that is only read for an upload never needs a sync.
    public let durable: Bool

    /// A new staged file in `directory`.
    public init(in directory: String, prefix: String, durable: Bool = false) throws {
        file = try AnonymousFile(in: directory, prefix: prefix)
        self.durable = durable
    }

    /// Opens the file for writing, fsynced on close when `sync` (by default: when `durable`; then
    /// writeback also starts while it is written, so the final fsync has little left).
    public func sink(sync: Bool? = nil) throws -> FileSink { try FileSink(path: path, exclusive: false, sync: sync ?? durable) }
    /// Gives the file the name `target` atomically (same file system), replacing what was there.
    public func publish(at target: String) throws {
        try file.publish(at: target)
        consumed = true
    }
    public func discard() { if !consumed { file.discard(); consumed = true } }
    deinit { discard() }
}

/// What can be read from a store: a flat namespace of immutable-by-convention objects.
///
/// Four operations (in the manner of restic's backends): `stat`, `open`, `list`, `check`. A
/// read-only store (a signed-URL pull ticket, a public registry) offers only these; `Remote`
/// adds the writing ones. Keys are validated by the repository layer; a remote need not trust
/// them and must still refuse keys that would escape its root.
public protocol ReadableRemote: AnyObject, Sendable {
    /// Where the remote is, for messages; never contains secrets.
    var displayURL: String { get }

    /// Size and time of `key`, or nil if it does not exist.
    func stat(_ key: String) throws -> RemoteObject?

    /// The content of `key` as a stream. Throws `DogestryError` of kind `.notFound` if it does not exist.
    func open(_ key: String) throws -> ByteSource

    /// Calls `each` for every object whose key starts with `prefix`, in no particular order.
    func list(prefix: String, _ each: (RemoteObject) throws -> Void) throws

    /// Checks the remote is reachable (and, for a `Remote`, writable); returns a one-line description.
    func check() throws -> String
}

/// A store that can be written too: `put` (atomic: readers see the whole object or none),
/// `delete`, and staged files for large uploads.
public protocol Remote: ReadableRemote {
    /// Stores `bytes` at `key`, replacing any existing object, atomically.
    func put(_ key: String, bytes: [UInt8]) throws

    /// Stores the content of a staged file at `key`, atomically; may move the file rather than copy it.
    func put(_ key: String, file: StagedFile, size: Int64) throws

    /// Removes `key`; removing a missing key is not an error.
    func delete(_ key: String) throws

    /// A new temporary file for content that will be `put` to this remote.
    func makeStagedFile() throws -> StagedFile
}

/// A remote that can send a staged file while it is still being written, when the key is known
/// before the content (a copy: blobs are named by the digest their manifest gives). Nothing is
/// stored at the key before `commit`, so content found bad at its end is never published.
public protocol EarlyUploading: Remote {
    /// Starts storing `file` at `key`; `size` is the length it will have. Nil when the remote
    /// would gain nothing (a small object): `put(_:file:size:)` it once it is written.
    func beginUpload(_ key: String, file: StagedFile, size: Int64) throws -> EarlyUpload?
}

/// A store of a staged file under way (see `EarlyUploading`).
public protocol EarlyUpload: AnyObject {
    /// The first `bytes` bytes of the file are written (and final); what they hold may be sent.
    /// Throws when sending has already failed, so the writer stops early.
    func written(_ bytes: Int64) throws
    /// The whole file is written and checked: stores it at its key, atomically.
    func commit() throws
    /// Gives up: waits for sends under way, and leaves nothing at the key.
    func abort()
}

extension ReadableRemote {
    /// Reads a whole small object, refusing more than `limit` bytes.
    public func read(_ key: String, limit: Int = RepositoryLimits.metadataBytes) throws -> [UInt8] {
        try open(key).readAll(limit: limit, what: "object \(key) on \(displayURL)")
    }

    /// `self` as a writable remote, or a one-line error naming it as read-only.
    public func writable() throws -> Remote {
        guard let w = self as? Remote else {
            throw DogestryError(.unsupported, "\(displayURL) is read-only: it can be pulled from, not written to")
        }
        return w
    }
}

/// A remote that holds one image and nothing else (a pull ticket): what a pull with no image
/// named takes, and the one image it may resolve to.
public protocol ImageScopedRemote: ReadableRemote {
    /// The references a pull takes when none is named (the image's tags, or `name@digest`).
    var defaultSpecs: [String] { get }
    /// The image's manifest and config (image ID) digests.
    var scopedManifest: Digest { get }
    var scopedConfig: Digest { get }
    /// The image, for messages (`tag (image abc123)`).
    var imageDescription: String { get }
}

/// A temporary directory shared by remotes that cannot stage next to their objects.
public enum TempDirectory {
    nonisolated(unsafe) public static var path: String = ProcessInfo.processInfo.environment["TMPDIR"] ?? "/tmp"
    private static let sweepOnce = NSLock()
    nonisolated(unsafe) private static var swept = false
    public static func staged(prefix: String = "dogestry") throws -> StagedFile {
        do { try FS.makeDirectories(path) } catch let e as DogestryError {
            throw DogestryError.io("temporary directory ([transfer] tempdir or TMPDIR) unusable: \(e.message)")
        }
        sweepOnce.lock()
        if !swept { swept = true; AnonymousFile.sweep(path, prefix: "dogestry") }
        sweepOnce.unlock()
        return try StagedFile(in: path, prefix: prefix)
    }
}

/// A remote that can hand out time-limited URLs that read one object without credentials
/// (S3 presigned URLs, Manta signed URLs). Pull tickets are built from them.
public protocol SigningRemote: Remote {
    /// A URL that GETs `key` until `expires` seconds from now, with no credentials needed.
    func signedURL(forGet key: String, expires: Int) throws -> String
}

/// A remote whose store can copy objects from another remote itself (S3's CopyObject between
/// buckets of one endpoint), so the bytes never pass through dogestry.
public protocol ServerSideCopying: Remote {
    /// Whether objects of `source` can be copied here by the store.
    func canCopyServerSide(from source: ReadableRemote) -> Bool
    /// Copies `key` of `source` (`size` bytes) to `key` here.
    func copyServerSide(from source: ReadableRemote, key: String, size: Int64) throws
}

/// What a network remote sent and received, for `--json` reports and benchmarks.
public struct RemoteTraffic: Sendable, Equatable {
    public var requests = 0
    public var bytesSent: Int64 = 0
    public var bytesReceived: Int64 = 0
    public init() {}
}

/// A remote that counts its traffic.
public protocol TrafficCounting: AnyObject {
    var traffic: RemoteTraffic { get }
}

/// An upload a store holds but that never completed: an S3 multipart upload that was neither
/// completed nor aborted, or a local staging file left by an interrupted push. It is invisible to
/// `list` and `stat`, yet it takes space; `dogestry prune` aborts those older than its grace period.
public struct IncompleteUpload: Sendable, Equatable {
    /// The repository key the upload was for (S3), or the staging file's name (local).
    public var key: String
    /// What identifies the upload to the store (S3's UploadId; the file name locally).
    public var id: String
    /// When the upload began (S3's `Initiated`) or was last written (a staging file's mtime).
    public var initiated: Date?
    /// Bytes the upload holds, when known.
    public var size: Int64?

    public init(key: String, id: String, initiated: Date?, size: Int64?) {
        self.key = key; self.id = id; self.initiated = initiated; self.size = size
    }
}

/// A remote that can find and abort incomplete uploads (optional: Manta's remote uploads with
/// single streaming PUTs and leaves nothing behind when one fails).
public protocol UploadSweeping: AnyObject {
    /// Calls `each` for every incomplete upload under the remote's root (every page of the store's listing).
    func listIncompleteUploads(_ each: (IncompleteUpload) throws -> Void) throws
    /// Aborts `upload` and frees what it holds; an upload that is already gone is not an error.
    func abortIncompleteUpload(_ upload: IncompleteUpload) throws
    /// The bytes `upload` holds, asking the store when the listing did not say (nil: unknown).
    func incompleteUploadSize(_ upload: IncompleteUpload) throws -> Int64?
}

extension UploadSweeping {
    /// What the listing said.
    public func incompleteUploadSize(_ upload: IncompleteUpload) throws -> Int64? { upload.size }
}
