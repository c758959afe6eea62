import DogestryCore
import DogestryHTTP
import Foundation

/// A pull ticket (docs/FORMAT.md, "Pull tickets"): a small JSON object stored on a signing remote
/// at `tickets/<32 hex>.json` that names one image and holds presigned GET URLs for its manifest,
/// config and layer blobs, all expiring at `expires`. The presigned URL of the ticket itself
/// (same expiry) is all a puller needs: no config, no credentials.
public struct PullTicket: Codable, Sendable, Equatable {
    public static let kindValue = "dogestry-pull-ticket"
    public static let currentVersion = 1
    /// Where tickets live on a remote.
    public static let keyPrefix = "tickets/"
    /// Tickets are small; anything larger is refused.
    public static let sizeLimit = 4 << 20

    /// Always `dogestry-pull-ticket`.
    public var kind: String
    /// The format version (1).
    public var version: Int
    /// When the ticket was signed (RFC 3339, UTC).
    public var created: String
    /// When the ticket and every URL in it stop working (RFC 3339, UTC).
    public var expires: String
    public var image: Image
    /// Manifest, config, then the layers in manifest order.
    public var blobs: [Blob]

    public init(kind: String, version: Int, created: String, expires: String, image: Image, blobs: [Blob]) {
        self.kind = kind; self.version = version; self.created = created; self.expires = expires
        self.image = image; self.blobs = blobs
    }

    public struct Image: Codable, Sendable, Equatable {
        /// The repository name (e.g. `dogestry-test/app`).
        public var name: String
        /// The references the pulled image is tagged with (`name:tag`; may be empty).
        public var tags: [String]
        public var manifest: Digest
        /// The config digest, i.e. the image ID.
        public var config: Digest

        public init(name: String, tags: [String], manifest: Digest, config: Digest) {
            self.name = name; self.tags = tags; self.manifest = manifest; self.config = config
        }
    }

    public struct Blob: Codable, Sendable, Equatable {
        public var digest: Digest
        public var size: Int64
        /// A presigned GET URL of `blobs/sha256/<hex>` (carries a signature: never print it).
        public var url: String

        public init(digest: Digest, size: Int64, url: String) { self.digest = digest; self.size = size; self.url = url }
    }

    /// The ticket's `expires` as a date.
    public func expiryDate() throws -> Date {
        guard let d = RFC3339.parse(expires) else {
            throw DogestryError.corrupt("the pull ticket's expiry \"\(expires)\" is not an RFC 3339 time")
        }
        return d
    }

    public func encoded() -> [UInt8] {
        let enc = JSONEncoder()
        enc.outputFormatting = [.sortedKeys, .prettyPrinted, .withoutEscapingSlashes]
        return [UInt8](try! enc.encode(self)) + [10]
    }

    /// Decodes a ticket, checking its kind and version first so a newer format gets a clear error.
    public static func decode(_ bytes: [UInt8], what: String) throws -> PullTicket {
        struct Head: Decodable { var kind: String?; var version: Int? }
        guard let head = try? JSONDecoder().decode(Head.self, from: Data(bytes)) else {
            throw DogestryError.corrupt("\(what) is not a pull ticket (not a JSON object)")
        }
        guard head.kind == kindValue, let v = head.version else {
            throw DogestryError.corrupt("\(what) is not a pull ticket (no \"kind\": \"\(kindValue)\" with a version)")
        }
        guard v == currentVersion else {
            throw DogestryError(.unsupported, "\(what) is a version \(v) pull ticket; this dogestry reads version \(currentVersion)")
        }
        do {
            return try JSONDecoder().decode(PullTicket.self, from: Data(bytes))
        } catch {
            throw DogestryError.corrupt("\(what) is not a valid pull ticket: \(jsonErrorSummary(error))")
        }
    }

    /// A ticket key: `tickets/<32 random hex>.json`.
    public static func newKey() -> String {
        var g = SystemRandomNumberGenerator()
        let bytes = (0..<16).map { _ in UInt8.random(in: 0...255, using: &g) }
        return keyPrefix + hexString(bytes) + ".json"
    }
}

/// RFC 3339 times in UTC with whole seconds (`2026-11-26T07:00:00Z`).
public enum RFC3339 {
    public static func format(_ d: Date) -> String {
        let f = ISO8601DateFormatter()
        f.formatOptions = [.withInternetDateTime]
        f.timeZone = TimeZone(identifier: "UTC")
        return f.string(from: d)
    }

    public static func parse(_ s: String) -> Date? {
        let f = ISO8601DateFormatter()
        f.formatOptions = [.withInternetDateTime]
        if let d = f.date(from: s) { return d }
        f.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
        return f.date(from: s)
    }
}

/// Facts about signed URLs (S3 presigned, Manta signed).
public enum SignedURL {
    /// The query parameters of `url`, percent-decoded, names as given.
    static func queryItems(_ url: String) -> [(String, String)] {
        guard let q = url.firstIndex(of: "?") else { return [] }
        var query = url[url.index(after: q)...]
        if let hash = query.firstIndex(of: "#") { query = query[..<hash] }
        return query.split(separator: "&", omittingEmptySubsequences: true).map { pair in
            let kv = pair.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
            let name = String(kv[0]).removingPercentEncoding ?? String(kv[0])
            let value = kv.count > 1 ? (String(kv[1]).removingPercentEncoding ?? String(kv[1])) : ""
            return (name, value)
        }
    }

    /// When `url` stops working, if it says: `X-Amz-Date` + `X-Amz-Expires` (S3 SigV4), or
    /// `expires=<unix seconds>` (Manta).
    public static func expiry(of url: String) -> Date? {
        var amzDate: String?, amzExpires: String?, expires: String?
        for (k, v) in queryItems(url) {
            switch k.lowercased() {
            case "x-amz-date": amzDate = v
            case "x-amz-expires": amzExpires = v
            case "expires": expires = v
            default: break
            }
        }
        if let d = amzDate, let e = amzExpires.flatMap({ Int($0) }), let start = parseAmzDate(d) {
            return start.addingTimeInterval(TimeInterval(e))
        }
        if let e = expires.flatMap({ Int64($0) }) { return Date(timeIntervalSince1970: TimeInterval(e)) }
        return nil
    }

    /// `20260101T000000Z`.
    static func parseAmzDate(_ s: String) -> Date? {
        let u = Array(s.utf8)
        guard u.count == 16, u[8] == 84 /* T */, u[15] == 90 /* Z */ else { return nil }
        func num(_ a: Int, _ n: Int) -> Int? {
            var v = 0
            for i in a..<(a + n) { guard u[i] >= 48 && u[i] <= 57 else { return nil }; v = v * 10 + Int(u[i] - 48) }
            return v
        }
        guard let y = num(0, 4), let mo = num(4, 2), let d = num(6, 2), let h = num(9, 2), let mi = num(11, 2), let se = num(13, 2) else { return nil }
        var c = DateComponents()
        c.year = y; c.month = mo; c.day = d; c.hour = h; c.minute = mi; c.second = se
        var cal = Calendar(identifier: .gregorian)
        cal.timeZone = TimeZone(identifier: "UTC")!
        return cal.date(from: c)
    }

    /// `scheme://host/path` of a URL: no query string (it carries the signature), fragment or credentials.
    public static func display(_ url: String) -> String { redactedURL(url) }

    /// Whether a REMOTE argument is a URL to fetch a pull ticket from.
    public static func isTicketURL(_ s: String) -> Bool {
        let l = s.lowercased()
        return l.hasPrefix("http://") || l.hasPrefix("https://")
    }

    /// The one-line error for an expired signed URL.
    public static func expiredError(_ at: Date) -> DogestryError {
        DogestryError(.auth, "this signed URL expired at \(RFC3339.format(at)); ask for a new one with dogestry sign")
    }
}
