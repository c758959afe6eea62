import DogestryCore
import Foundation

// Server-side copies (CopyObject): objects move between buckets of one S3 endpoint without
// passing through dogestry.

extension S3Remote: ServerSideCopying {
    /// Objects of another S3 remote on the same endpoint and region, signed with the same access
    /// key, can be copied by the store (the key must be able to read the source bucket).
    public func canCopyServerSide(from source: ReadableRemote) -> Bool {
        guard let s = source as? S3Remote, s !== self, s.endpoint == endpoint, s.region == region,
              let a = try? s.credentialProvider.credentials().accessKeyID,
              let b = try? credentialProvider.credentials().accessKeyID else { return false }
        return a == b
    }

    /// CopyObject of `key` from `source` to `key` here (at most 5 GiB, S3's limit for one copy);
    /// the copy is checked by the size the store then reports.
    public func copyServerSide(from source: ReadableRemote, key: String, size: Int64) throws {
        guard let s = source as? S3Remote, canCopyServerSide(from: source) else {
            throw DogestryError(.unsupported, "\(source.displayURL) cannot be copied server-side to \(displayURL)")
        }
        guard size <= 5 << 30 else {
            throw DogestryError(.unsupported, "\(s.display(try s.objectKey(key))) is larger than the 5 GiB of one server-side copy")
        }
        let from = try s.objectKey(key), to = try objectKey(key)
        let copySource = "/" + s.bucket + "/" + (from.addingPercentEncoding(withAllowedCharacters: Self.copySourceAllowed) ?? from)
        let r = Request(method: "PUT", key: to, headers: [("x-amz-copy-source", copySource)])
        let (resp, body) = try fetch(r)
        // A CopyObject can fail after its 200: the error is then the body.
        if !resp.isSuccess || S3XMLElement.parse(body)?.name == "Error" { throw error(resp, to, body: body) }
        guard let copied = try stat(key), copied.size == size else {
            throw DogestryError.corrupt("server-side copy of \(s.display(from)) to \(display(to)) did not leave \(size) bytes")
        }
    }

    static let copySourceAllowed: CharacterSet = {
        var c = CharacterSet.alphanumerics
        c.insert(charactersIn: "-._~/")
        return c
    }()
}
