import DogestryCore
import DogestryHTTP
import DogestryRemotes
import Foundation

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
