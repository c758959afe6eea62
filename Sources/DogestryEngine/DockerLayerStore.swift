import DogestryCore
import Foundation

/// Why the layer store could not give a layer; a push then asks the engine for an export instead.
public struct LayerStoreUnusable: Error, Sendable, CustomStringConvertible {
    public var reason: String
    public init(_ reason: String) { self.reason = reason }
    public var description: String { reason }
}

/// Reads image layers and configs straight from a local Docker Engine's image store, the way the
/// engine itself assembles them for `docker save`, without waiting for the export.
///
/// Docker 20.10's `/images/get` copies every layer of an export into a temporary directory before
/// it sends the first byte: for a 1 GB layer that is seconds of waiting in which nothing can be
/// compressed. The engine keeps each layer as its files (`overlay2/<cache-id>/diff`) plus the
/// layer's original tar headers and padding (`tar-split.json.gz`, vbatts/tar-split), from which it
/// rebuilds the layer tar byte for byte. This type does the same from the files when dogestry runs
/// beside the engine and may read its data root.
///
/// Nothing read here is trusted: a config must hash to its image ID, and the caller checks that a
/// layer stream hashes to its diffID before it stores anything. Any surprise is a
/// `LayerStoreUnusable`, on which the caller falls back to the engine's export.
public final class DockerLayerStore: @unchecked Sendable {  // (immutable after init)
    /// The engine's data root (`DockerRootDir`) and storage driver.
    public let root: String
    public let driver: String
    let imageDir: String

    /// Storage drivers whose layer files sit in one plain directory per layer.
    static let drivers: Set<String> = ["overlay2", "vfs"]

    /// The store of an engine whose `/info` reported `root` and `driver`; nil when the driver's
    /// layout is not one this reads or the image store cannot be read from here.
    public init?(root: String, driver: String) {
        guard root.hasPrefix("/"), Self.drivers.contains(driver) else { return nil }
        self.root = root; self.driver = driver
        imageDir = root + "/image/" + driver
        guard access(imageDir + "/layerdb/sha256", R_OK | X_OK) == 0,
              access(imageDir + "/imagedb/content/sha256", R_OK | X_OK) == 0 else { return nil }
    }

    /// The config of image `id`, checked against its digest.
    public func config(_ id: Digest) throws -> [UInt8] {
        let bytes = try small(imageDir + "/imagedb/content/sha256/" + id.hex, limit: RepositoryLimits.metadataBytes)
        guard Digest.of(bytes) == id else { throw LayerStoreUnusable("the image store's config of \(id.short) does not hash to its ID") }
        return bytes
    }

    /// One layer as the engine would export it: its tar stream, and the stream's length.
    /// `chainID` names the layer in the store; its recorded diffID must be `diffID`.
    public func layer(chainID: Digest, diffID: Digest) throws -> (source: ByteSource, size: Int64) {
        let dir = imageDir + "/layerdb/sha256/" + chainID.hex
        let recorded = String(decoding: try small(dir + "/diff", limit: 200), as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
        guard recorded == diffID.description else { throw LayerStoreUnusable("layer \(chainID.short) of the image store records diffID \(recorded)") }
        let cacheID = String(decoding: try small(dir + "/cache-id", limit: 200), as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
        guard !cacheID.isEmpty, cacheID.allSatisfy({ $0.isLetter || $0.isNumber || $0 == "-" || $0 == "_" }) else {
            throw LayerStoreUnusable("layer \(chainID.short) has an unusable cache-id")
        }
        let files = driver == "vfs" ? root + "/vfs/dir/" + cacheID : root + "/" + driver + "/" + cacheID + "/diff"
        let split = dir + "/tar-split.json.gz"
        // A first pass over the (small) tar-split gives the stream's length and checks its names.
        var size: Int64 = 0
        let scan = try TarSplitReader(path: split)
        while let n = try scan.nextLength() { size += n }
        return (try TarSplitSource(reader: try TarSplitReader(path: split), files: files), size)
    }

    func small(_ path: String, limit: Int) throws -> [UInt8] {
        do {
            return try FileSource(regularFile: path, what: path).readAll(limit: limit, what: path)
        } catch let e as DogestryError {
            throw LayerStoreUnusable(e.message)
        }
    }
}
