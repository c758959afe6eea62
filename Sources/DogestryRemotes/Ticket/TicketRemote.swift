import DogestryCore
import DogestryHTTP
import Foundation

/// A read-only remote made of one pull ticket (`dogestry pull https://…`).
///
/// It holds the ticket's image and nothing else: `open` GETs the presigned URL of a blob the
/// ticket lists (no credentials, no signing), the ticket's tags are served as refs, and every
/// other key is "not in this pull ticket". `stat` answers from the sizes the ticket records.
/// Nothing in the ticket is trusted beyond what digests prove: the normal pull path verifies
/// the manifest, the config and every layer against their digests and diffIDs.
public final class TicketRemote: ReadableRemote, ImageScopedRemote, @unchecked Sendable {  // (fixed after set-up)
    public let ticket: PullTicket
    /// The ticket's URL without its query string (safe to print).
    public let displayURL: String
    /// When the ticket and its URLs stop working (the earlier of the ticket's URL and its `expires`).
    public let expiresAt: Date
    let client: HTTPClient
    let blobs: [String: PullTicket.Blob]      // by hex
    let refs: [String: [UInt8]]              // ref key -> content
    /// Retries of one request or one resumed body (the one policy of every network remote).
    var retry = TicketRemote.retryPolicy
    static let retryPolicy = RetryPolicy(maxRetries: 4, baseDelay: 0.3)

    init(ticket: PullTicket, displayURL: String, expiresAt: Date, client: HTTPClient) throws {
        self.ticket = ticket
        self.displayURL = displayURL
        self.expiresAt = expiresAt
        self.client = client
        var blobs: [String: PullTicket.Blob] = [:]
        for b in ticket.blobs {
            guard SignedURL.isTicketURL(b.url) else {
                throw DogestryError.corrupt("pull ticket \(displayURL): blob \(b.digest) has no http(s) URL")
            }
            guard b.size >= 0 else { throw DogestryError.corrupt("pull ticket \(displayURL): blob \(b.digest) has a negative size") }
            blobs[b.digest.hex] = b
        }
        guard ImageReference.isValidName(ticket.image.name) else {
            throw DogestryError.corrupt("pull ticket \(displayURL): invalid image name \"\(ticket.image.name)\"")
        }
        var refs: [String: [UInt8]] = [:]
        for t in ticket.image.tags {
            guard let r = try? ImageReference(parsing: t, defaultTag: nil), let tag = r.tag, r.digest == nil else {
                throw DogestryError.corrupt("pull ticket \(displayURL): invalid tag \"\(t)\"")
            }
            refs[Repository.refKey(name: r.name, tag: tag)] = Array((ticket.image.manifest.description + "\n").utf8)
        }
        guard blobs[ticket.image.manifest.hex] != nil, blobs[ticket.image.config.hex] != nil else {
            throw DogestryError.corrupt("pull ticket \(displayURL) lacks a URL for its manifest or config")
        }
        self.blobs = blobs
        self.refs = refs
    }

    // MARK: fetching a ticket

    /// The transport options for ticket and blob URLs: TLS trust from AWS_CA_BUNDLE or CURL_CA_BUNDLE.
    public static func transport(environment: [String: String], timeouts: HTTPTimeouts = .remoteDefault) -> HTTPTransportOptions {
        let ca = [environment["AWS_CA_BUNDLE"], environment["CURL_CA_BUNDLE"]].compactMap { $0 }.first { !$0.isEmpty }
        return HTTPTransportOptions(caBundle: ca, timeouts: timeouts, userAgent: "dogestry")
    }

    /// Fetches the ticket at `url` with a plain GET, checks its version and expiry.
    public static func fetch(_ url: String, environment: [String: String] = ProcessInfo.processInfo.environment,
                             timeouts: HTTPTimeouts = .remoteDefault, now: Date = Date()) throws -> TicketRemote {
        guard SignedURL.isTicketURL(url) else { throw DogestryError.invalid("\(SignedURL.display(url)) is not an http(s) URL") }
        let display = SignedURL.display(url)
        let urlExpiry = SignedURL.expiry(of: url)
        if let e = urlExpiry, now >= e { throw SignedURL.expiredError(e) }
        let client = HTTPClient(options: transport(environment: environment, timeouts: timeouts))
        let (resp, body) = try retryPolicy.run(what: "pull ticket \(display)") { _ in
            try client.fetch(HTTPRequest(method: "GET", url: url), limit: PullTicket.sizeLimit)
        }
        guard resp.isSuccess else {
            throw refusal(resp, what: "pull ticket \(display)", urlExpiry: urlExpiry, ticketExpiry: nil)
        }
        let ticket = try PullTicket.decode(body, what: "pull ticket \(display)")
        let ticketExpiry = try ticket.expiryDate()
        let expiresAt = min(ticketExpiry, urlExpiry ?? ticketExpiry)
        if Date() >= ticketExpiry { throw SignedURL.expiredError(ticketExpiry) }
        return try TicketRemote(ticket: ticket, displayURL: display, expiresAt: expiresAt, client: client)
    }

    /// The error for a non-2xx answer to a signed URL: expired, refused or missing, in one line
    /// that names `what` (never the URL's query).
    public static func refusal(_ resp: HTTPResponse, what: String, urlExpiry: Date?, ticketExpiry: Date?) -> DogestryError {
        let text = String(decoding: resp.errorBody, as: UTF8.self)
        let code = xmlText(text, "Code") ?? resp.header("x-amz-error-code")
        let message = xmlText(text, "Message")
        let now = Date()
        if resp.status == 403 || resp.status == 400 || resp.status == 401 {
            let saysExpired = (message?.localizedCaseInsensitiveContains("expired") ?? false) || code == "ExpiredToken"
            let limits = [urlExpiry, ticketExpiry].compactMap { $0 }
            if let past = limits.filter({ now >= $0 }).min() { return SignedURL.expiredError(past) }
            if saysExpired {
                let at = limits.min() ?? xmlText(text, "Expires").flatMap(RFC3339.parse) ?? now
                return SignedURL.expiredError(at)
            }
        }
        var line = "\(what): the server answered \(code ?? HTTPStatus.name(resp.status)) (\(resp.status))"
        if let m = message, !m.isEmpty { line += ": " + (m.count > 200 ? String(m.prefix(197)) + "..." : m) }
        let kind: DogestryError.Kind
        switch resp.status {
        case 401, 403: kind = .auth
        case 404: kind = .notFound
        default: kind = .remote
        }
        return DogestryError(kind, line)
    }

    /// The text of the first `<name>…</name>` element of a small XML error body.
    static func xmlText(_ xml: String, _ name: String) -> String? {
        guard let a = xml.range(of: "<\(name)>"), let b = xml.range(of: "</\(name)>", range: a.upperBound..<xml.endIndex) else { return nil }
        let v = xml[a.upperBound..<b.lowerBound]
            .replacingOccurrences(of: "&lt;", with: "<").replacingOccurrences(of: "&gt;", with: ">")
            .replacingOccurrences(of: "&quot;", with: "\"").replacingOccurrences(of: "&apos;", with: "'")
            .replacingOccurrences(of: "&amp;", with: "&")
        let flat = v.split(whereSeparator: { $0.isNewline || $0 == "\t" }).joined(separator: " ").trimmingCharacters(in: .whitespaces)
        return flat.isEmpty ? nil : flat
    }

    // MARK: what the ticket holds

    /// The image specs a pull without IMAGE arguments uses: the ticket's tags, else name@manifest.
    public var defaultSpecs: [String] {
        ticket.image.tags.isEmpty ? ["\(ticket.image.name)@\(ticket.image.manifest)"] : ticket.image.tags
    }

    /// Describes the ticket's image for messages.
    public var scopedManifest: Digest { ticket.image.manifest }
    public var scopedConfig: Digest { ticket.image.config }

    public var imageDescription: String {
        (ticket.image.tags.first ?? "\(ticket.image.name)@\(ticket.image.manifest)") + " (image \(ticket.image.config.short))"
    }

    // MARK: Remote

    func blob(_ key: String) -> PullTicket.Blob? {
        guard key.hasPrefix(Repository.blobsPrefix) else { return nil }
        return blobs[String(key.dropFirst(Repository.blobsPrefix.count))]
    }

    public func stat(_ key: String) throws -> RemoteObject? {
        if let b = blob(key) { return RemoteObject(key: key, size: b.size) }
        if let r = refs[key] { return RemoteObject(key: key, size: Int64(r.count)) }
        return nil
    }

    public func open(_ key: String) throws -> ByteSource {
        if let r = refs[key] { return MemorySource(r) }
        guard let b = blob(key) else {
            throw DogestryError.notFound("\(key) is not in this pull ticket (\(displayURL))")
        }
        let what = "blob \(b.digest) of pull ticket \(displayURL)"
        if Date() >= expiresAt { throw SignedURL.expiredError(expiresAt) }
        let urlExpiry = SignedURL.expiry(of: b.url)
        let get = { [self] (headers: [(String, String)]) throws -> (HTTPResponse, StreamingBody) in
            let resp: HTTPResponse, body: StreamingBody
            do {
                (resp, body) = try retry.run(what: what) { _ in
                    try client.open(HTTPRequest(method: "GET", url: b.url, headers: headers))
                }
            } catch let e as DogestryError where e.cause?.isTransient == false {
                throw e.prefixed(what)   // (a transient one that used up the budget already says what)
            }
            guard resp.isSuccess else {
                body.cancel()
                throw Self.refusal(resp, what: what, urlExpiry: urlExpiry, ticketExpiry: expiresAt)
            }
            return (resp, body)
        }
        let (resp, body) = try get([])
        // A dropped or stalled body resumes with a ranged GET (Range is not part of what the URL signs).
        return ResumingBody(response: resp, body: body, policy: retry, what: what) { from, end in
            let (r, b) = try get([("Range", "bytes=\(from)-" + (end.map(String.init) ?? ""))])
            return (r, b)
        }
    }


    public func list(prefix: String, _ each: (RemoteObject) throws -> Void) throws {
        for (k, v) in refs where k.hasPrefix(prefix) { try each(RemoteObject(key: k, size: Int64(v.count))) }
        for b in ticket.blobs {
            let k = Repository.blobKey(b.digest)
            if k.hasPrefix(prefix) { try each(RemoteObject(key: k, size: b.size)) }
        }
    }


    public func check() throws -> String {
        "pull ticket for \(imageDescription), expires at \(RFC3339.format(expiresAt)) (read-only)"
    }
}

