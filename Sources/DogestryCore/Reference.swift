import Foundation

/// A Docker image reference as users type it: `name`, `name:tag` or `name@sha256:…`.
///
/// Names follow Docker's grammar: an optional registry domain (`host[:port]/`) and one or more
/// lowercase path components (`[a-z0-9]+` joined by `.`, `_`, `__` or runs of `-`), 255 characters at most.
/// Tags match `[A-Za-z0-9_][A-Za-z0-9._-]{0,127}`. These rules also make names safe as storage keys:
/// no component can be empty, `.` or `..`.
public struct ImageReference: Hashable, CustomStringConvertible, Sendable {
    public var name: String
    public var tag: String?
    public var digest: Digest?

    public init(name: String, tag: String? = nil, digest: Digest? = nil) {
        self.name = name; self.tag = tag; self.digest = digest
    }

    /// Parses a reference; `defaultTag` fills in a missing tag when there is no digest.
    public init(parsing s: String, defaultTag: String? = "latest") throws {
        var rest = s
        var digest: Digest? = nil
        if let at = rest.firstIndex(of: "@") {
            digest = try Digest(parsing: String(rest[rest.index(after: at)...]), what: "digest in image reference \(Digest.quote(s))")
            rest = String(rest[..<at])
        }
        var tag: String? = nil
        if let colon = rest.lastIndex(of: ":"), !rest[colon...].contains("/") {
            tag = String(rest[rest.index(after: colon)...])
            rest = String(rest[..<colon])
            guard ImageReference.isValidTag(tag!) else {
                throw DogestryError.invalid("invalid tag \(Digest.quote(tag!)) in image reference \(Digest.quote(s)): tags are [A-Za-z0-9_][A-Za-z0-9._-], at most 128 characters")
            }
        }
        guard ImageReference.isValidName(rest) else {
            throw DogestryError.invalid("invalid image name \(Digest.quote(rest)): names are lowercase path components ([a-z0-9] joined by '.', '_', '__' or '-'), separated by '/', with an optional registry host")
        }
        self.name = ImageReference.normalizedName(rest)
        self.digest = digest
        self.tag = tag ?? (digest == nil ? defaultTag : nil)
    }

    /// `name:tag`, `name@digest` or `name:tag@digest`.
    public var description: String {
        var s = name
        if let t = tag { s += ":" + t }
        if let d = digest { s += "@" + d.description }
        return s
    }

    // MARK: Docker Hub names

    /// The canonical form of a valid name, as Docker shows it (its "familiar" form):
    /// `docker.io/library/x`, `index.docker.io/library/x`, `docker.io/x` and `library/x` are all
    /// `x`; `docker.io/user/x` is `user/x`; names with any other registry host are unchanged.
    /// Refs are stored under this form (docs/FORMAT.md, *Names*).
    public static func normalizedName(_ name: String) -> String {
        var comps = name.split(separator: "/", omittingEmptySubsequences: false).map(String.init)
        if comps.count > 1, isDomain(comps[0]) {
            guard comps[0] == "docker.io" || comps[0] == "index.docker.io" else { return name }
            comps.removeFirst()
        }
        if comps.count == 2, comps[0] == "library" { comps.removeFirst() }
        return comps.joined(separator: "/")
    }

    /// Other spellings of a canonical Docker Hub name under which refs written before names were
    /// normalised may be stored, in the order they are looked up after the canonical one.
    public static func legacySpellings(of canonical: String) -> [String] {
        let comps = canonical.split(separator: "/", omittingEmptySubsequences: false)
        if comps.count > 1, isDomain(String(comps[0])) { return [] }
        if comps.count == 1 {
            return ["library/\(canonical)", "docker.io/library/\(canonical)", "docker.io/\(canonical)",
                    "index.docker.io/library/\(canonical)", "index.docker.io/\(canonical)"]
        }
        return ["docker.io/\(canonical)", "index.docker.io/\(canonical)"]
    }

    public static func isValidTag(_ t: String) -> Bool {
        let u = Array(t.utf8)
        guard !u.isEmpty, u.count <= 128 else { return false }
        func word(_ c: UInt8) -> Bool { (c >= 48 && c <= 57) || (c >= 65 && c <= 90) || (c >= 97 && c <= 122) || c == 95 }
        guard word(u[0]) else { return false }
        return u.dropFirst().allSatisfy { word($0) || $0 == 46 || $0 == 45 }
    }

    public static func isValidName(_ n: String) -> Bool {
        guard !n.isEmpty, n.utf8.count <= 255 else { return false }
        var comps = n.split(separator: "/", omittingEmptySubsequences: false).map(String.init)
        if comps.count > 1, isDomain(comps[0]) { comps.removeFirst() }
        return comps.allSatisfy(isPathComponent)
    }

    /// Docker treats a first component as a registry domain when it has a '.', a ':' or is "localhost".
    static func isDomain(_ c: String) -> Bool {
        guard c.contains(".") || c.contains(":") || c == "localhost" else { return false }
        var host = Substring(c)
        if let colon = c.firstIndex(of: ":") {
            let port = c[c.index(after: colon)...]
            guard !port.isEmpty, port.count <= 5, port.allSatisfy({ $0.isASCII && $0.isNumber }) else { return false }
            host = c[..<colon]
        }
        let labels = host.split(separator: ".", omittingEmptySubsequences: false)
        return !labels.isEmpty && labels.allSatisfy { l in
            let u = Array(l.utf8)
            guard !u.isEmpty else { return false }
            func an(_ c: UInt8) -> Bool { (c >= 48 && c <= 57) || (c >= 65 && c <= 90) || (c >= 97 && c <= 122) }
            return an(u.first!) && an(u.last!) && u.allSatisfy { an($0) || $0 == 45 }
        }
    }

    static func isPathComponent(_ c: String) -> Bool {
        let u = Array(c.utf8)
        func an(_ c: UInt8) -> Bool { (c >= 48 && c <= 57) || (c >= 97 && c <= 122) }
        guard let f = u.first, let l = u.last, an(f), an(l) else { return false }
        var i = 0
        while i < u.count {
            if an(u[i]) { i += 1; continue }
            // a separator: '.', '_', '__' or one or more '-'
            var j = i
            if u[i] == 46 { j = i + 1 }
            else if u[i] == 95 { j = (i + 1 < u.count && u[i + 1] == 95) ? i + 2 : i + 1 }
            else if u[i] == 45 { while j < u.count && u[j] == 45 { j += 1 } }
            else { return false }
            guard j < u.count, an(u[j]) else { return false }
            i = j
        }
        return true
    }
}
