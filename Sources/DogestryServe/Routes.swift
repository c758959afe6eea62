import DogestryCore
import Foundation

/// What a request asks for, from its method and path (the OCI Distribution API's pull side).
enum Route: Equatable {
    case base
    case catalog
    case tags(name: String)
    case manifest(name: String, reference: String)
    case blob(name: String, digest: String)
    /// A write endpoint (uploads, manifest PUT, DELETE): always refused.
    case write

    /// Parses a request target (`/v2/…?…`). Percent-escapes are decoded, but an escaped `/`,
    /// `\`, NUL or `%` is refused, and so is any path that is not one of the API's.
    static func parse(_ path: String) throws -> Route {
        let decoded = try decode(path)
        guard decoded == "/v2" || decoded.hasPrefix("/v2/") else { throw RegistryError(404, "NOT_FOUND", "\(printable(decoded)) is not an endpoint of the registry API (/v2/)") }
        let rest = decoded.dropFirst(4)
        if rest.isEmpty { return .base }
        if rest == "_catalog" { return .catalog }
        var comps = rest.split(separator: "/", omittingEmptySubsequences: false).map(String.init)
        if comps.last == "" { comps.removeLast() }
        func name(_ count: Int) throws -> String {
            let n = comps.prefix(count).joined(separator: "/")
            guard count > 0, ImageReference.isValidName(n) else { throw RegistryError.nameInvalid(printable(n)) }
            return n
        }
        let c = comps.count
        if c >= 3, comps[c - 2] == "tags", comps[c - 1] == "list" { return .tags(name: try name(c - 2)) }
        if c >= 3, comps[c - 2] == "manifests" { return .manifest(name: try name(c - 2), reference: comps[c - 1]) }
        if c >= 3, comps[c - 2] == "blobs", comps[c - 1] != "uploads" { return .blob(name: try name(c - 2), digest: comps[c - 1]) }
        if let i = comps.lastIndex(of: "blobs"), i + 1 < c, comps[i + 1] == "uploads" { return .write }
        if c >= 2, comps[c - 1] == "uploads", comps[c - 2] == "blobs" { return .write }
        throw RegistryError(404, "NOT_FOUND", "\(printable(decoded)) is not an endpoint of the registry API")
    }

    static func decode(_ s: String) throws -> String {
        guard s.contains("%") else { return s }
        var out: [UInt8] = []
        let u = Array(s.utf8)
        var i = 0
        while i < u.count {
            if u[i] == 37 {   // %
                guard i + 2 < u.count, let v = UInt8(String(decoding: u[(i + 1)...(i + 2)], as: UTF8.self), radix: 16) else {
                    throw RegistryError(400, "NAME_INVALID", "malformed percent-escape in the request path")
                }
                guard v != 47, v != 92, v != 0, v != 37 else {
                    throw RegistryError(400, "NAME_INVALID", "an escaped '/', '\\', '%' or NUL in the request path is not allowed")
                }
                out.append(v); i += 3
            } else { out.append(u[i]); i += 1 }
        }
        return String(decoding: out, as: UTF8.self)
    }

    /// `s` cut short and stripped of control characters, for messages.
    static func printable(_ s: String) -> String {
        let clean = String(s.unicodeScalars.map { $0.value < 32 || $0.value == 127 ? "?" : Character($0) })
        return clean.count > 200 ? String(clean.prefix(200)) + "…" : clean
    }
}

/// The query parameters of a request target.
struct Query {
    var items: [String: String] = [:]
    init(_ raw: Substring?) {
        guard let raw else { return }
        for pair in raw.split(separator: "&") {
            let kv = pair.split(separator: "=", maxSplits: 1)
            let k = String(kv[0]).removingPercentEncoding ?? String(kv[0])
            let v = kv.count > 1 ? (String(kv[1]).replacingOccurrences(of: "+", with: " ").removingPercentEncoding ?? "") : ""
            if items[k] == nil { items[k] = v }
        }
    }
    subscript(_ k: String) -> String? { items[k] }
}

/// A single `Range: bytes=…` request against an object of `size` bytes.
enum ByteRange: Equatable {
    case none
    case satisfiable(start: Int64, end: Int64)   // inclusive
    case unsatisfiable

    /// `header` parsed as RFC 9110 says. Several ranges, or a header that is not a byte range,
    /// are ignored (the whole object is sent), as a server may.
    static func parse(_ header: String?, size: Int64) -> ByteRange {
        guard let h = header?.trimmingCharacters(in: .whitespaces), h.lowercased().hasPrefix("bytes=") else { return .none }
        let spec = h.dropFirst(6).trimmingCharacters(in: .whitespaces)
        guard !spec.contains(","), let dash = spec.firstIndex(of: "-") else { return .none }
        let a = spec[..<dash].trimmingCharacters(in: .whitespaces), b = spec[spec.index(after: dash)...].trimmingCharacters(in: .whitespaces)
        if a.isEmpty {
            guard let n = Int64(b), n >= 0 else { return .none }
            if n == 0 || size == 0 { return .unsatisfiable }
            return .satisfiable(start: max(0, size - n), end: size - 1)
        }
        guard let start = Int64(a), start >= 0 else { return .none }
        var end = size - 1
        if !b.isEmpty {
            guard let e = Int64(b), e >= start else { return .none }
            end = min(e, size - 1)
        }
        guard start < size else { return .unsatisfiable }
        return .satisfiable(start: start, end: end)
    }
}
