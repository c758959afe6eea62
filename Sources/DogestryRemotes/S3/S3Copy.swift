import DogestryCore
import DogestryHTTP
import Foundation

// Server-side copies (CopyObject, UploadPartCopy): objects move between buckets of one S3 endpoint without
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

    /// Copies `key` from `source` to `key` here inside the store: one CopyObject up to 5 GiB,
    /// above that a multipart upload of UploadPartCopy ranges (parts in parallel, aborted on
    /// failure). The copy is checked by the size the store then reports.
    public func copyServerSide(from source: ReadableRemote, key: String, size: Int64) throws {
        guard let s = source as? S3Remote, canCopyServerSide(from: source) else {
            throw DogestryError(.unsupported, "\(source.displayURL) cannot be copied server-side to \(displayURL)")
        }
        let from = try s.objectKey(key), to = try objectKey(key)
        let copySource = "/" + s.bucket + "/" + (from.addingPercentEncoding(withAllowedCharacters: Self.copySourceAllowed) ?? from)
        if size <= options.singleCopyLimit {
            let r = Request(method: "PUT", key: to, headers: [("x-amz-copy-source", copySource)])
            let (resp, body) = try fetch(r)
            // A CopyObject can fail after its 200: the error is then the body.
            if !resp.isSuccess || S3XMLElement.parse(body)?.name == "Error" { throw error(resp, to, body: body) }
        } else {
            try multipartCopy(copySource, to: to, size: size)
        }
        guard let copied = try stat(key), copied.size == size else {
            throw DogestryError.corrupt("server-side copy of \(s.display(from)) to \(display(to)) did not leave \(size) bytes")
        }
    }

    func multipartCopy(_ copySource: String, to k: String, size: Int64) throws {
        var partSize = options.copyPartSize
        if (size + partSize - 1) / partSize > Self.maxParts { partSize = (size + Self.maxParts - 1) / Self.maxParts }
        let count = Int((size + partSize - 1) / partSize)
        let uploadID = try createMultipart(k)
        do {
            let etags = try Workers.map(count, threads: options.concurrency, name: "dogestry-s3-copy",
                                        context: { HTTPClient(options: transport) }) { c, i -> String in
                let first = Int64(i) * partSize, last = min(size, first + partSize) - 1
                let r = Request(method: "PUT", key: k, query: [("partNumber", String(i + 1)), ("uploadId", uploadID)],
                                headers: [("x-amz-copy-source", copySource), ("x-amz-copy-source-range", "bytes=\(first)-\(last)")])
                let (resp, body) = try fetch(r, client: c)
                let xml = S3XMLElement.parse(body)
                guard resp.isSuccess, xml?.name != "Error" else {
                    var e = error(resp, k, body: body)
                    e.message += " (copying part \(i + 1))"
                    throw e
                }
                guard let etag = xml?.text("ETag") ?? resp.header("etag"), !etag.isEmpty else {
                    throw DogestryError(.remote, "\(display(k)): UploadPartCopy of part \(i + 1) returned no ETag")
                }
                return etag
            }
            try completeMultipart(k, uploadID, etags)
        } catch {
            abortMultipart(k, uploadID)
            throw error
        }
    }

    static let copySourceAllowed: CharacterSet = {
        var c = CharacterSet.alphanumerics
        c.insert(charactersIn: "-._~/")
        return c
    }()
}
