import DogestryCore
import DogestrySync
import Foundation

// What each command prints with `--json`: one small Encodable type per report, written by one
// encoder. The field names and shapes are the CLI's interface for scripts (README, Tests/): keep them.

/// The `--json` writer: pretty-printed, keys sorted, slashes unescaped.
enum JSONOutput {
    static let encoder: JSONEncoder = {
        let e = JSONEncoder()
        e.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
        return e
    }()

    /// Writes `value` and a newline to standard output.
    static func print<T: Encodable>(_ value: T) {
        let data = (try? encoder.encode(value)) ?? Data()
        FileHandle.standardOutput.write(data + Data("\n".utf8))
    }
}

/// A report with a network remote's `remoteRequests`, `remoteBytesSent` and `remoteBytesReceived`
/// (every HTTP attempt, retries included, and the body bytes each way) beside its own fields.
struct Metered<Report: Encodable>: Encodable {
    struct Traffic: Encodable {
        var remoteRequests: Int
        var remoteBytesSent: Int64
        var remoteBytesReceived: Int64
    }

    var report: Report
    /// Nil for a remote that does not count its traffic (a local directory): no traffic fields.
    var traffic: Traffic?

    init(_ report: Report, of store: ImageSource) {
        self.report = report
        traffic = ((store as? TrafficCounting) ?? (store.repository?.remote as? TrafficCounting)).map {
            Traffic(remoteRequests: $0.traffic.requests, remoteBytesSent: $0.traffic.bytesSent,
                    remoteBytesReceived: $0.traffic.bytesReceived)
        }
    }

    func encode(to encoder: Encoder) throws {
        try report.encode(to: encoder)   // both write into the same JSON object
        try traffic?.encode(to: encoder)
    }
}

/// An image pushed or pulled.
struct ImageOutput: Encodable {
    var id: String?
    var manifest: String
    var tags: [String]

    init(_ i: PushReport.Image) { id = i.id.description; manifest = i.manifest.description; tags = i.tags }
    init(_ i: ResolvedImage) { id = i.id.description; manifest = i.manifestDigest.description; tags = i.tags }
    /// A copied manifest or index (an index has no single image ID: its platforms are listed).
    init(_ i: CopyItem) {
        id = i.id?.description; manifest = i.top.description; tags = i.tags
        if i.isIndex { platforms = i.manifests.map { $0.platform?.description ?? "unknown" } }
    }
    var platforms: [String]? = nil
}

/// `push --json`.
struct PushOutput: Encodable {
    var remote: String
    var images: [ImageOutput]
    var layersUploaded: Int
    var layersPresent: Int
    /// Layers a registry linked from another of its repositories.
    var layersMounted: Int
    var bytesUploaded: Int64
    var blobsWritten: Int

    init(_ r: PushReport, remote: ImageSource) {
        self.remote = remote.displayURL
        images = r.images.map(ImageOutput.init)
        layersUploaded = r.layersUploaded; layersPresent = r.layersPresent; layersMounted = r.layersMounted
        bytesUploaded = r.bytesUploaded; blobsWritten = r.blobsWritten
    }
}

/// `pull --json`: into an archive (no `hosts`) or into engines.
struct PullOutput: Encodable {
    /// One engine's outcome.
    struct Host: Encodable {
        var address: String
        var engine: String
        var ok: Bool
        var layersFetched: Int
        var layersPresent: Int
        var error: String?

        init(_ r: HostResult) {
            address = r.address; engine = r.engine; ok = r.error == nil
            layersFetched = r.layersFetched; layersPresent = r.layersPresent; error = r.error
        }
    }

    var remote: String
    var images: [ImageOutput]
    var layersFetched: Int
    var bytesFetched: Int64
    var hosts: [Host]?

    init(_ r: PullReport, remote: ImageSource, hosts: [HostResult]? = nil) {
        self.remote = remote.displayURL
        images = r.images.map(ImageOutput.init)
        layersFetched = r.layersFetched; bytesFetched = r.bytesFetched
        self.hosts = hosts?.map(Host.init)
    }
}

/// `sign --json`.
struct SignOutput: Encodable {
    struct Image: Encodable {
        var id: String
        var manifest: String
        var name: String
        var tags: [String]
    }

    var url: String
    var ticket: String
    var remote: String
    var expires: String
    var image: Image

    init(_ s: SignedTicket, remote: ReadableRemote) {
        url = s.url; ticket = s.key; self.remote = remote.displayURL; expires = s.ticket.expires
        let i = s.ticket.image
        image = Image(id: i.config.description, manifest: i.manifest.description, name: i.name, tags: i.tags)
    }
}

/// One row of `list --json` (an array of them).
struct ListRow: Encodable {
    var repository: String
    var tag: String
    /// The manifest digest.
    var digest: String
    /// The image ID (config digest); empty for an image index.
    var id: String
    /// Config plus distinct layer blobs, in bytes (of every platform, for an index).
    var size: Int64
    /// For an image index (multi-platform image): the platforms it holds, in its order
    /// (attestations are not platforms); nil for a single image.
    var platforms: [String]? = nil
}

/// `remote --json`.
struct RemoteOutput: Encodable {
    var remote: String
    var status: String
    /// How many tags the remote holds.
    var tags: Int
}

/// `tag --json`.
struct TagOutput: Encodable {
    var remote: String
    var reference: String
    var manifest: String
    var id: String
    var previous: String?

    init(_ r: TagResult, remote: ImageSource) {
        self.remote = remote.displayURL; reference = r.reference; manifest = r.manifest.description
        id = r.id.description; previous = r.previous?.description
    }
}

/// `rm --json`.
struct RmOutput: Encodable {
    struct Removed: Encodable { var reference: String; var manifest: String }
    struct Failure: Encodable { var image: String; var error: String }

    var remote: String
    var removed: [Removed]
    var errors: [Failure]

    init(_ results: [UntagResult], remote: ImageSource) {
        self.remote = remote.displayURL
        removed = results.compactMap { r in
            guard let ref = r.reference, let md = r.manifest else { return nil }
            return Removed(reference: ref, manifest: md.description)
        }
        errors = results.compactMap { r in r.error.map { Failure(image: r.spec, error: $0) } }
    }
}

/// `inspect --json`.
struct InspectOutput: Encodable {
    struct Layer: Encodable {
        var digest: String
        var diffID: String
        var mediaType: String
        var compression: String?
        var size: Int64
        var uncompressedSize: Int64
        var shared: Bool

        init(_ l: ImageInspection.Layer) {
            digest = l.digest.description; diffID = l.diffID.description; mediaType = l.mediaType
            compression = l.compression; size = l.size; uncompressedSize = l.uncompressedSize; shared = l.shared
        }
    }

    var remote: String
    var manifest: String
    /// The image index the tags point at (a multi-platform image), and its platforms.
    var index: String?
    var platforms: [String]?
    var manifestSize: Int64
    var id: String
    var configSize: Int64
    var tags: [String]
    var layers: [Layer]
    var layerBytes: Int64
    var uncompressedBytes: Int64
    var sharedBytes: Int64
    var storedBytes: Int64
    var uniqueBytes: Int64
    var os: String?
    var architecture: String?
    var created: String?

    init(_ i: ImageInspection, remote: ImageSource) {
        self.remote = remote.displayURL; manifest = i.manifestDigest.description; manifestSize = i.manifestSize
        index = i.index?.description; platforms = i.index == nil ? nil : i.platforms
        id = i.id.description; configSize = i.configSize; tags = i.tags; layers = i.layers.map(Layer.init)
        layerBytes = i.layerBytes; uncompressedBytes = i.uncompressedBytes; sharedBytes = i.sharedBytes
        storedBytes = i.storedBytes; uniqueBytes = i.uniqueBytes
        os = i.os; architecture = i.architecture; created = i.created
    }
}

/// `prune --json`.
struct PruneOutput: Encodable {
    struct Item: Encodable {
        var kind: String
        var key: String
        var note: String
        var size: Int64?

        init(_ i: PruneReport.Item) { kind = i.kind.rawValue; key = i.key; note = i.note; size = i.size }
    }
    struct Counts: Encodable { var blobs, index, tickets, uploads: Int }
    struct Amount: Encodable { var blobs: Int; var bytes: Int64 }
    struct Roots: Encodable { var refs, tickets: Int }

    var remote: String
    var dryRun: Bool
    /// The grace period in seconds.
    var grace: Int
    var removed: [Item]
    var repointed: [Item]
    var keptYoung: [String]
    var counts: Counts
    var blobBytes: Int64
    var bytesFreed: Int64
    var live: Amount
    var young: Amount
    var roots: Roots
    /// Refs and manifests that could not be read (no blob is removed while any cannot).
    var unreadable: [String]
    /// Unreferenced blobs kept because an unreadable root may need them.
    var keptUnknown: Amount

    init(_ r: PruneReport, remote: ReadableRemote) {
        self.remote = remote.displayURL; dryRun = r.dryRun; grace = r.grace
        removed = r.removed.map(Item.init); repointed = r.repointed.map(Item.init); keptYoung = r.keptYoung
        counts = Counts(blobs: r.count(.blob), index: r.count(.index), tickets: r.count(.ticket), uploads: r.count(.upload))
        blobBytes = r.bytes(.blob); bytesFreed = r.bytesFreed
        live = Amount(blobs: r.liveBlobs, bytes: r.liveBytes); young = Amount(blobs: r.youngBlobs, bytes: r.youngBytes)
        roots = Roots(refs: r.refs, tickets: r.tickets)
        unreadable = r.unreadable
        keptUnknown = Amount(blobs: r.keptUnknownBlobs, bytes: r.keptUnknownBytes)
    }
}

/// `verify --json`.
struct VerifyOutput: Encodable {
    struct Problem: Encodable { var kind, object, message: String }
    struct Checked: Encodable { var refs, manifests, blobs, indexEntries, tickets: Int }
    /// What `--deep` re-hashed.
    struct Hashed: Encodable {
        var blobs: Int
        var bytes: Int64
        var uncompressedBytes: Int64
        var seconds: Double
        var secondsPerGB: Double
    }

    var remote: String
    var ok: Bool
    var deep: Bool
    var problems: [Problem]
    /// Index entries `--repair` removed.
    var repaired: [String]
    var checked: Checked
    var seconds: Double
    var hashed: Hashed?

    init(_ r: VerifyReport, remote: ReadableRemote, repaired: [String] = []) {
        self.remote = remote.displayURL; ok = r.ok; deep = r.deep; self.repaired = repaired
        problems = r.problems.map { Problem(kind: $0.kind, object: $0.object, message: $0.message) }
        checked = Checked(refs: r.refs, manifests: r.manifests, blobs: r.blobsChecked, indexEntries: r.indexEntries, tickets: r.tickets)
        seconds = Self.millis(r.seconds)
        let gb = Double(r.bytesHashed) / 1e9
        hashed = r.deep ? Hashed(blobs: r.blobsHashed, bytes: r.bytesHashed, uncompressedBytes: r.bytesDecompressed,
                                 seconds: Self.millis(r.hashSeconds), secondsPerGB: gb > 0 ? Self.millis(r.hashSeconds / gb) : 0)
                        : nil
    }

    /// Seconds rounded to the millisecond.
    static func millis(_ s: Double) -> Double { (s * 1000).rounded() / 1000 }
}

/// `copy --json`.
struct CopyOutput: Encodable {
    var source: String
    var destination: String
    var dryRun: Bool
    var images: [ImageOutput]
    var blobs: [CopiedBlob]
    var blobsCopied: Int
    var blobsPresent: Int
    var bytesCopied: Int64

    init(_ r: CopyReport, source: ImageSource, destination: ImageSource, dryRun: Bool) {
        self.source = source.displayURL; self.destination = destination.displayURL; self.dryRun = dryRun
        images = r.items.map(ImageOutput.init)
        blobs = r.blobs
        blobsCopied = r.moved.count
        blobsPresent = r.blobs.count - blobsCopied
        bytesCopied = dryRun ? 0 : r.bytesCopied
    }
}
