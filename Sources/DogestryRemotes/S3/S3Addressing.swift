import DogestryCore
import DogestryHTTP
import Foundation
#if canImport(Glibc)
import Glibc
#endif

// Bucket, key and endpoint validation; virtual-hosted and path-style URLs.

extension S3Remote {
    // MARK: URLs

    /// Parses `s3://bucket[/prefix][?region=R&endpoint=URL]`.
    public static func parse(url: String) throws -> (bucket: String, prefix: String, region: String?, endpoint: String?) {
        guard url.hasPrefix("s3://") else { throw DogestryError.invalid("\"\(url)\" is not an s3:// URL") }
        var rest = Substring(url.dropFirst(5))
        var query: Substring = ""
        if let q = rest.firstIndex(of: "?") {
            query = rest[rest.index(after: q)...]
            rest = rest[..<q]
        }
        if rest.contains("#") { throw DogestryError.invalid("S3 URL \"\(redactedURL(url))\" has a fragment") }
        let bucket: String, rawPrefix: String
        if let slash = rest.firstIndex(of: "/") {
            bucket = String(rest[..<slash])
            rawPrefix = String(rest[rest.index(after: slash)...])
        } else {
            bucket = String(rest)
            rawPrefix = ""
        }
        if bucket.contains("@") {
            // Never echo what stands before the "@": it is a credential.
            throw DogestryError.invalid("S3 URL \"\(redactedURL(url))\" carries credentials; give them through the AWS credential chain or [s3], not in the URL")
        }
        guard !bucket.isEmpty else { throw DogestryError.invalid("S3 URL \"\(redactedURL(url))\" names no bucket") }
        guard isValidBucketName(bucket) else { throw DogestryError.invalid("invalid S3 bucket name \"\(bucket)\" in \(redactedURL(url))") }
        let prefix = rawPrefix.split(separator: "/", omittingEmptySubsequences: true).joined(separator: "/")
        if !prefix.isEmpty && !isValidKey(prefix) {
            throw DogestryError.invalid("invalid S3 prefix \"\(rawPrefix)\" in s3://\(bucket)")
        }
        var region: String?, endpoint: String?
        for item in query.split(separator: "&", omittingEmptySubsequences: true) {
            let kv = item.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
            let name = String(kv[0])
            let raw = kv.count > 1 ? String(kv[1]) : ""
            guard let value = raw.replacingOccurrences(of: "+", with: " ").removingPercentEncoding, !value.isEmpty else {
                throw DogestryError.invalid("S3 URL parameter \"\(name)\" of s3://\(bucket) has no valid value")
            }
            switch name {
            case "region": region = value
            case "endpoint": endpoint = try validateEndpoint(value)
            default:
                throw DogestryError.invalid("unknown S3 URL parameter \"\(name)\" in s3://\(bucket) (known: region, endpoint)")
            }
        }
        return (bucket, prefix, region, endpoint)
    }

    /// An endpoint is `http(s)://host[:port][/path]`, without query or credentials; returned without trailing slash.
    static func validateEndpoint(_ ep: String) throws -> String {
        var e = ep
        while e.hasSuffix("/") { e.removeLast() }
        let lower = e.lowercased()
        guard lower.hasPrefix("http://") || lower.hasPrefix("https://") else {
            throw DogestryError.invalid("S3 endpoint \"\(redactedURL(ep))\" must start with http:// or https://")
        }
        let afterScheme = e[e.range(of: "://")!.upperBound...]
        let host = afterScheme.prefix { $0 != "/" }
        guard !host.isEmpty, !e.contains("?"), !e.contains("#"), !host.contains("@") else {
            throw DogestryError.invalid("S3 endpoint \"\(redactedURL(ep))\" must be http(s)://host[:port] without query or credentials")
        }
        return e
    }

    static func isValidBucketName(_ b: String) -> Bool {
        // S3's rules, relaxed to the legacy ones (upper case and "_" in old us-east-1 buckets).
        guard (3...255).contains(b.utf8.count) else { return false }
        return b.utf8.allSatisfy { c in
            (c >= 97 && c <= 122) || (c >= 65 && c <= 90) || (c >= 48 && c <= 57) || c == 45 || c == 46 || c == 95
        } && !b.hasPrefix(".") && !b.hasSuffix(".")
    }

    /// The rules of the repository layer: no empty, "." or ".." components, no leading "/", no NUL.
    static func isValidKey(_ key: String) -> Bool {
        guard !key.isEmpty, !key.utf8.contains(0) else { return false }
        return key.split(separator: "/", omittingEmptySubsequences: false).allSatisfy { !$0.isEmpty && $0 != "." && $0 != ".." }
    }

    /// `<prefix>/`, or "" at the bucket root.
    var keyBase: String { prefix.isEmpty ? "" : prefix + "/" }

    /// The S3 key of a repository key, after validating it.
    func objectKey(_ key: String) throws -> String {
        guard Self.isValidKey(key) else { throw DogestryError.invalid("invalid object key \"\(key)\" for \(displayURL)") }
        return keyBase + key
    }

    /// `s3://bucket/<object key>` for messages.
    func display(_ objectKey: String?) -> String {
        "s3://" + bucket + (objectKey.map { "/" + $0 } ?? "")
    }

    func url(_ objectKey: String?, _ query: [(String, String)]) -> String {
        var u = bucketURL
        if let k = objectKey {
            u += "/" + SigV4Signer.uriEncode(k, encodeSlash: false)
        } else if virtualHosted {
            u += "/"
        }
        if !query.isEmpty {
            u += "?" + query.map { SigV4Signer.uriEncode($0.0, encodeSlash: true) + "=" + SigV4Signer.uriEncode($0.1, encodeSlash: true) }
                .joined(separator: "&")
        }
        return u
    }

}
