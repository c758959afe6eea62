import Foundation

/// Media types used by dogestry.
public enum MediaType {
    public static let ociManifest = "application/vnd.oci.image.manifest.v1+json"
    public static let ociIndex = "application/vnd.oci.image.index.v1+json"
    public static let ociConfig = "application/vnd.oci.image.config.v1+json"
    public static let dockerManifest = "application/vnd.docker.distribution.manifest.v2+json"
    public static let dockerConfig = "application/vnd.docker.container.image.v1+json"
}

/// Annotation keys dogestry writes on layer descriptors.
public enum Annotation {
    /// The layer's uncompressed digest (its diffID).
    public static let diffID = "io.dogestry.layer.diffid"
    /// The layer's uncompressed size in bytes (a docker-load tar entry needs it up front).
    public static let uncompressedSize = "io.dogestry.layer.uncompressed-size"
}

/// An OCI content descriptor.
public struct Descriptor: Codable, Hashable, Sendable {
    public var mediaType: String
    public var digest: Digest
    public var size: Int64
    public var annotations: [String: String]?

    public init(mediaType: String, digest: Digest, size: Int64, annotations: [String: String]? = nil) {
        self.mediaType = mediaType; self.digest = digest; self.size = size; self.annotations = annotations
    }
}

/// An OCI image manifest, as stored in `blobs/sha256/` of a repository.
public struct ImageManifest: Codable, Sendable {
    public var schemaVersion: Int = 2
    public var mediaType: String? = MediaType.ociManifest
    public var config: Descriptor
    public var layers: [Descriptor]
    public var annotations: [String: String]?

    public init(config: Descriptor, layers: [Descriptor], annotations: [String: String]? = nil) {
        self.config = config; self.layers = layers; self.annotations = annotations
    }

    /// Canonical JSON bytes (sorted keys, no extra whitespace), so equal manifests have equal digests.
    public func encoded() -> [UInt8] {
        let enc = JSONEncoder()
        enc.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        return [UInt8](try! enc.encode(self))
    }

    public static func decode(_ bytes: [UInt8], what: String) throws -> ImageManifest {
        do {
            let m = try JSONDecoder().decode(ImageManifest.self, from: Data(bytes))
            guard m.schemaVersion == 2 else { throw DogestryError.corrupt("\(what): unsupported schemaVersion \(m.schemaVersion)") }
            try RepositoryLimits.checkLayerCount(m.layers.count, what: what)
            return m
        } catch let e as DogestryError { throw e } catch {
            throw DogestryError.corrupt("\(what) is not a valid image manifest: \(jsonErrorSummary(error))")
        }
    }
}

/// The parts of an image configuration dogestry needs; the raw bytes are kept verbatim
/// because their digest is the image ID.
public struct ImageConfig: Sendable {
    public let bytes: [UInt8]
    public let digest: Digest
    public let diffIDs: [Digest]
    public let os: String?
    public let architecture: String?
    public let created: String?

    public init(bytes: [UInt8], what: String) throws {
        self.bytes = bytes
        self.digest = Digest.of(bytes)
        guard let obj = (try? JSONSerialization.jsonObject(with: Data(bytes))) as? [String: Any] else {
            throw DogestryError.corrupt("\(what) is not valid JSON")
        }
        guard let rootfs = obj["rootfs"] as? [String: Any], let ids = rootfs["diff_ids"] as? [Any] else {
            throw DogestryError.corrupt("\(what) has no rootfs.diff_ids")
        }
        try RepositoryLimits.checkLayerCount(ids.count, what: what)
        self.diffIDs = try ids.map { v in
            guard let s = v as? String else { throw DogestryError.corrupt("\(what): rootfs.diff_ids holds a non-string") }
            return try Digest(parsing: s, what: "\(what): diff_id")
        }
        self.os = obj["os"] as? String
        self.architecture = obj["architecture"] as? String
        self.created = obj["created"] as? String
    }
}

/// The uncompressed size recorded for a layer descriptor.
extension Descriptor {
    public var uncompressedSize: Int64? { annotations?[Annotation.uncompressedSize].flatMap { Int64($0) } }
    public var diffID: Digest? { annotations?[Annotation.diffID].flatMap { try? Digest(parsing: $0) } }
}

/// One-line summary of a JSON decoding error.
public func jsonErrorSummary(_ error: Error) -> String {
    switch error {
    case DecodingError.keyNotFound(let k, let ctx):
        return "missing field \"\((ctx.codingPath + [k]).map { $0.stringValue }.joined(separator: "."))\""
    case DecodingError.typeMismatch(_, let ctx), DecodingError.valueNotFound(_, let ctx):
        return "wrong type at \"\(ctx.codingPath.map { $0.stringValue }.joined(separator: "."))\""
    case DecodingError.dataCorrupted(let ctx):
        if let e = ctx.underlyingError as? DogestryError { return e.message }
        return ctx.codingPath.isEmpty ? "not valid JSON" : "bad value at \"\(ctx.codingPath.map { $0.stringValue }.joined(separator: "."))\""
    case let e as DogestryError: return e.message
    default: return "not valid JSON"
    }
}
