import DogestryCore
import DogestryHTTP
import DogestryRemotes
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

    public struct Image: Codable, Sendable, Equatable {
        /// The repository name (e.g. `dogestry-test/app`).
        public var name: String
        /// The references the pulled image is tagged with (`name:tag`; may be empty).
        public var tags: [String]
        public var manifest: Digest
        /// The config digest, i.e. the image ID.
        public var config: Digest
    }

    public struct Blob: Codable, Sendable, Equatable {
        public var digest: Digest
        public var size: Int64
        /// A presigned GET URL of `blobs/sha256/<hex>` (carries a signature: never print it).
        public var url: String
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

/// Lifetimes as users type them: `90s`, `30m`, `1h`, `12h`, `7d`, or combinations (`1h30m`).
public enum Lifetime {
    /// Parses a lifetime into seconds (at least 1).
    public static func parse(_ text: String, option: String = "--expires") throws -> Int {
        func bad() -> DogestryError {
            DogestryError.invalid("invalid duration \"\(text)\" for \(option): use a number followed by s, m, h or d (e.g. 30m, 1h, 12h, 7d)")
        }
        let s = text.trimmingCharacters(in: .whitespaces).lowercased()
        guard !s.isEmpty else { throw bad() }
        var total = 0
        var number = ""
        for c in s {
            if c.isASCII && c.isNumber {
                number.append(c)
                continue
            }
            let unit: Int
            switch c {
            case "s": unit = 1
            case "m": unit = 60
            case "h": unit = 3600
            case "d": unit = 86400
            default: throw bad()
            }
            guard !number.isEmpty, number.count <= 9, let n = Int(number) else { throw bad() }
            total += n * unit
            number = ""
        }
        guard number.isEmpty else { throw bad() }   // a trailing number without unit
        guard total >= 1 else {
            throw DogestryError.invalid("duration \"\(text)\" for \(option) must be at least 1 second")
        }
        return total
    }

    /// A short form for messages: `1h`, `7d`, `90s`, `1h30m`.
    public static func format(_ seconds: Int) -> String {
        var rest = seconds
        var out = ""
        for (unit, name) in [(86400, "d"), (3600, "h"), (60, "m"), (1, "s")] where rest >= unit {
            out += "\(rest / unit)\(name)"
            rest %= unit
        }
        return out.isEmpty ? "0s" : out
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

/// What `TicketSigner.sign` made.
public struct SignedTicket: Sendable {
    /// The presigned GET URL of the ticket: the one thing a puller needs (it carries a signature).
    public var url: String
    /// The ticket's key on the remote (`tickets/<hex>.json`).
    public var key: String
    public var ticket: PullTicket
    public var expires: Date
}

/// Writes pull tickets (`dogestry sign`).
public final class TicketSigner {
    public let remote: Remote
    let progress: ProgressReporter

    public init(remote: Remote, progress: ProgressReporter = SilentProgress()) {
        self.remote = remote; self.progress = progress
    }

    /// The longest lifetime the remote's signed URLs can have (S3: 7 days), if it has a limit.
    public static func maxLifetime(of remote: Remote) -> Int? {
        remote is S3Remote ? 604_800 : nil
    }

    /// The error for a remote that cannot sign URLs.
    public static func cannotSign(_ remote: Remote) -> DogestryError {
        DogestryError(.unsupported, "remote \(remote.displayURL) cannot sign URLs; sign works on S3 (and Manta) remotes")
    }

    /// Checks a lifetime against the remote before anything is read.
    public func checkLifetime(_ seconds: Int, text: String) throws -> SigningRemote {
        guard let signing = remote as? SigningRemote else { throw Self.cannotSign(remote) }
        if let max = Self.maxLifetime(of: remote), seconds > max {
            throw DogestryError.invalid("--expires \(text) is too long: signed URLs of \(remote.displayURL) last at most \(Lifetime.format(max)) (7 days)")
        }
        return signing
    }

    /// Resolves `spec` on the remote, stores a ticket for it valid for `lifetime` seconds, and
    /// returns the ticket's presigned URL. Every URL (ticket and blobs) expires at the same second.
    public func sign(_ spec: String, lifetime: Int, lifetimeText: String? = nil) throws -> SignedTicket {
        let signing = try checkLifetime(lifetime, text: lifetimeText ?? Lifetime.format(lifetime))
        let puller = Puller(repository: Repository(remote: remote), progress: progress)
        let img = try puller.resolve(spec)
        let name: String
        if let first = img.tags.first, let r = try? ImageReference(parsing: first) {
            name = r.name
        } else if let r = try? ImageReference(parsing: spec) {
            name = r.name
        } else {
            throw DogestryError.invalid("image \(spec) on \(remote.displayURL) has no name to put in a ticket")
        }
        // Sizes: the manifest's from the remote, the config's from its verified bytes, the layers' from the manifest.
        guard let manifestObject = try remote.stat(Repository.blobKey(img.manifestDigest)) else {
            throw DogestryError.notFound("manifest \(img.manifestDigest) is missing from \(remote.displayURL)")
        }
        var wanted: [(Digest, Int64)] = [(img.manifestDigest, manifestObject.size)]
        wanted.append((img.id, Int64(img.config.bytes.count)))
        for l in img.manifest.layers where !wanted.contains(where: { $0.0 == l.digest }) {
            wanted.append((l.digest, l.size))
        }
        let key = PullTicket.newKey()
        // Sign everything against one expiry second; start again if a clock second passes in between
        // (a URL that would get a different expiry, or no time left at all).
        var attempt = 0
        while true {
            attempt += 1
            let now = Date()
            let expires = Date(timeIntervalSince1970: floor(now.timeIntervalSince1970) + Double(lifetime))
            if let (ticketURL, blobs) = try signAll(signing, key: key, blobs: wanted, expires: expires) {
                let ticket = PullTicket(kind: PullTicket.kindValue, version: PullTicket.currentVersion,
                                        created: RFC3339.format(now), expires: RFC3339.format(expires),
                                        image: .init(name: name, tags: img.tags, manifest: img.manifestDigest, config: img.id),
                                        blobs: blobs)
                try remote.put(key, bytes: ticket.encoded())
                return SignedTicket(url: ticketURL, key: key, ticket: ticket, expires: expires)
            }
            if attempt >= 5 { throw DogestryError(.remote, "cannot sign URLs of \(remote.displayURL) with one expiry time (the clock moved while signing)") }
        }
    }

    /// Signs the blobs and the ticket so they all expire at `expires`; nil when a second passed meanwhile.
    func signAll(_ signing: SigningRemote, key: String, blobs: [(Digest, Int64)], expires: Date) throws -> (String, [PullTicket.Blob])? {
        func sign(_ k: String) throws -> String? {
            let left = Int(expires.timeIntervalSince1970 - floor(Date().timeIntervalSince1970))
            guard left >= 1 else { return nil }
            let url = try signing.signedURL(forGet: k, expires: left)
            if let got = SignedURL.expiry(of: url), abs(got.timeIntervalSince(expires)) >= 0.5 { return nil }
            return url
        }
        var out: [PullTicket.Blob] = []
        for (d, size) in blobs {
            guard let u = try sign(Repository.blobKey(d)) else { return nil }
            out.append(.init(digest: d, size: size, url: u))
        }
        guard let t = try sign(key) else { return nil }
        return (t, out)
    }
}
