import Foundation

/// Media types used by dogestry.
public enum MediaType {
    public static let ociManifest = "application/vnd.oci.image.manifest.v1+json"
    public static let ociIndex = "application/vnd.oci.image.index.v1+json"
    public static let ociConfig = "application/vnd.oci.image.config.v1+json"
    public static let dockerManifest = "application/vnd.docker.distribution.manifest.v2+json"
    public static let dockerConfig = "application/vnd.docker.container.image.v1+json"
    public static let dockerManifestList = "application/vnd.docker.distribution.manifest.list.v2+json"

    /// Whether `mt` names an image index (OCI) or a manifest list (Docker).
    public static func isIndex(_ mt: String?) -> Bool { mt == ociIndex || mt == dockerManifestList }
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
    /// The platform of an index entry.
    public var platform: Platform?

    public init(mediaType: String, digest: Digest, size: Int64, annotations: [String: String]? = nil, platform: Platform? = nil) {
        self.mediaType = mediaType; self.digest = digest; self.size = size; self.annotations = annotations; self.platform = platform
    }
}

/// An image's platform: `os/architecture[/variant]` (`linux/arm64/v8`).
public struct Platform: Codable, Hashable, Sendable, CustomStringConvertible {
    public var architecture: String
    public var os: String
    public var variant: String?
    public var osVersion: String?

    enum CodingKeys: String, CodingKey { case architecture, os, variant, osVersion = "os.version" }

    public init(os: String, architecture: String, variant: String? = nil) {
        self.os = os; self.architecture = architecture; self.variant = variant
    }

    public var description: String { "\(os)/\(architecture)" + (variant.map { "/" + $0 } ?? "") }

    /// Parses `os/arch[/variant]` (`--platform`).
    public static func parse(_ s: String) throws -> Platform {
        let p = s.split(separator: "/", omittingEmptySubsequences: false).map(String.init)
        guard (2...3).contains(p.count), p.allSatisfy({ !$0.isEmpty && $0.allSatisfy { $0.isLetter || $0.isNumber || $0 == "-" || $0 == "_" || $0 == "." } }) else {
            throw DogestryError.invalid("invalid platform \"\(s)\" (use os/arch[/variant], e.g. linux/arm64)")
        }
        return Platform(os: p[0].lowercased(), architecture: p[1].lowercased(), variant: p.count == 3 ? p[2].lowercased() : nil)
    }

    /// The machine dogestry runs on (Go's names, as images use them).
    public static var host: Platform {
        var u = utsname()
        uname(&u)
        let machine = withUnsafeBytes(of: &u.machine) { String(decoding: $0.prefix(while: { $0 != 0 }), as: UTF8.self) }
        switch machine {
        case "x86_64", "amd64": return Platform(os: "linux", architecture: "amd64")
        case "aarch64", "arm64": return Platform(os: "linux", architecture: "arm64")
        case "armv7l": return Platform(os: "linux", architecture: "arm", variant: "v7")
        case "ppc64le": return Platform(os: "linux", architecture: "ppc64le")
        case "s390x": return Platform(os: "linux", architecture: "s390x")
        default: return Platform(os: "linux", architecture: machine)
        }
    }

    /// Whether an image of platform `other` serves a request for this one (a variant asked for
    /// must match; none asked takes any, `arm64` treating a missing variant as `v8`).
    public func accepts(_ other: Platform) -> Bool {
        guard os == other.os, architecture == other.architecture else { return false }
        guard let v = variant else { return true }
        let ov = other.variant ?? (other.architecture == "arm64" ? "v8" : nil)
        return v == ov
    }
}

/// An image index (OCI) or manifest list (Docker): one manifest per platform.
public struct ImageIndex: Codable, Sendable {
    public var schemaVersion: Int = 2
    public var mediaType: String? = MediaType.ociIndex
    public var manifests: [Descriptor]
    public var annotations: [String: String]?

    public init(manifests: [Descriptor], mediaType: String? = MediaType.ociIndex, annotations: [String: String]? = nil) {
        self.manifests = manifests; self.mediaType = mediaType; self.annotations = annotations
    }

    /// Canonical JSON bytes (sorted keys), as dogestry writes the indexes it makes.
    public func encoded() -> [UInt8] {
        let enc = JSONEncoder()
        enc.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        return [UInt8](try! enc.encode(self))
    }

    public static func decode(_ bytes: [UInt8], what: String) throws -> ImageIndex {
        do {
            let i = try JSONDecoder().decode(ImageIndex.self, from: Data(bytes))
            guard i.schemaVersion == 2 else { throw DogestryError.corrupt("\(what): unsupported schemaVersion \(i.schemaVersion)") }
            guard i.manifests.count <= RepositoryLimits.layers else {
                throw DogestryError.invalid("\(what) lists \(i.manifests.count) manifests, more than the \(RepositoryLimits.layers) an index may have")
            }
            return i
        } catch let e as DogestryError { throw e } catch {
            throw DogestryError.corrupt("\(what) is not a valid image index: \(jsonErrorSummary(error))")
        }
    }

    /// The image manifests of the index: not nested indexes, and not the attestation manifests
    /// buildx adds (platform `unknown/unknown`, annotated `vnd.docker.reference.type`), which
    /// travel with the index but are never "the platform".
    public var images: [Descriptor] {
        manifests.filter { !MediaType.isIndex($0.mediaType) && !Self.isAttestation($0) }
    }

    /// Whether index entry `d` is an attestation (an in-toto manifest that refers to an image).
    public static func isAttestation(_ d: Descriptor) -> Bool {
        d.platform?.architecture == "unknown" || d.platform?.os == "unknown" || d.annotations?["vnd.docker.reference.type"] != nil
    }

    /// Throws a one-line error when the index names another index (dogestry reads one level).
    public func refuseNested(what: String) throws {
        if let n = manifests.first(where: { MediaType.isIndex($0.mediaType) }) {
            throw DogestryError(.unsupported, "\(what) names another index (\(n.digest)); nested indexes are not supported")
        }
    }

    /// The entry for `platform`, or a one-line error listing those the index has.
    public func manifest(for platform: Platform, what: String) throws -> Descriptor {
        if let d = images.first(where: { $0.platform.map(platform.accepts) ?? false }) { return d }
        let have = images.compactMap { $0.platform?.description }
        throw DogestryError.notFound("\(what) has no image for \(platform) (it has \(have.isEmpty ? "none with a platform" : have.joined(separator: ", ")))")
    }
}

/// What a manifest-like blob is, judged by its content.
public enum ManifestKind: Sendable {
    case manifest, index

    /// `bytes`' kind from its `mediaType`, else its shape (`manifests` or `layers`); nil for other JSON.
    public static func of(_ bytes: [UInt8]) -> ManifestKind? {
        guard bytes.first == UInt8(ascii: "{"),
              let obj = (try? JSONSerialization.jsonObject(with: Data(bytes))) as? [String: Any] else { return nil }
        let mt = obj["mediaType"] as? String
        if MediaType.isIndex(mt) { return .index }
        if mt == MediaType.ociManifest || mt == MediaType.dockerManifest { return .manifest }
        guard (obj["schemaVersion"] as? Int) == 2 else { return nil }
        if obj["manifests"] is [Any] { return .index }
        if obj["layers"] is [Any], obj["config"] is [String: Any] { return .manifest }
        return nil
    }

    /// The media type to store or serve `bytes` with: its own `mediaType`, else the OCI type of its shape.
    public static func mediaType(of bytes: [UInt8]) -> String? {
        guard let k = of(bytes) else { return nil }
        if let obj = (try? JSONSerialization.jsonObject(with: Data(bytes))) as? [String: Any], let mt = obj["mediaType"] as? String { return mt }
        return k == .index ? MediaType.ociIndex : MediaType.ociManifest
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
