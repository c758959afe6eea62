import DogestryCore
import Foundation

/// Incomplete multipart uploads under the remote's prefix (ListMultipartUploads, every page),
/// and AbortMultipartUpload, for `dogestry prune`. A push that dies between CreateMultipartUpload
/// and CompleteMultipartUpload leaves its parts stored (and billed) but invisible to listings.
extension S3Remote: UploadSweeping {
    public func listIncompleteUploads(_ each: (IncompleteUpload) throws -> Void) throws {
        try listIncompleteUploads(pageSize: nil, each)
    }

    /// The same, asking for at most `pageSize` uploads per page (nil: the store's default, 1000 on AWS).
    func listIncompleteUploads(pageSize: Int?, _ each: (IncompleteUpload) throws -> Void) throws {
        let base = keyBase
        var keyMarker: String?, idMarker: String?
        while true {
            var q: [(String, String)] = [("uploads", "")]
            if !base.isEmpty { q.append(("prefix", base)) }
            if let n = pageSize { q.append(("max-uploads", String(n))) }
            if let k = keyMarker { q.append(("key-marker", k)) }
            if let u = idMarker { q.append(("upload-id-marker", u)) }
            let (resp, body) = try fetch(Request(method: "GET", key: nil, query: q))
            guard resp.isSuccess else { throw error(resp, base.isEmpty ? nil : base + "*", body: body) }
            guard let xml = S3XMLElement.parse(body), xml.name == "ListMultipartUploadsResult" else {
                throw DogestryError(.remote, "\(display(base + "*")): unreadable ListMultipartUploads response")
            }
            for u in xml.children("Upload") {
                guard let k = u.text("Key"), k.hasPrefix(base), let id = u.text("UploadId"), !id.isEmpty else { continue }
                let initiated = u.text("Initiated").flatMap(S3Dates.parseISO)
                try each(IncompleteUpload(key: String(k.dropFirst(base.count)), id: id, initiated: initiated, size: nil))
            }
            let truncated = xml.text("IsTruncated")?.trimmingCharacters(in: .whitespaces).lowercased() == "true"
            guard truncated else { return }
            // The markers exactly as the store returns them: AWS pages by key then upload ID and
            // always names both; SeaweedFS pages by upload ID and gives only NextUploadIdMarker (a
            // key marker made up from the last key would skip uploads there).
            let nk = xml.text("NextKeyMarker") ?? "", nu = xml.text("NextUploadIdMarker") ?? ""
            guard !nk.isEmpty || !nu.isEmpty, nk != keyMarker || nu != idMarker else {
                throw DogestryError(.remote, "\(display(base + "*")): truncated ListMultipartUploads without a next marker")
            }
            keyMarker = nk; idMarker = nu
        }
    }

    /// The bytes the parts of an upload hold (ListParts, every page); nil when the store will not say.
    public func incompleteUploadSize(_ upload: IncompleteUpload) throws -> Int64? {
        if let size = upload.size { return size }
        let k = try objectKey(upload.key)
        var total: Int64 = 0
        var marker: String?
        while true {
            var q: [(String, String)] = [("uploadId", upload.id)]
            if let m = marker { q.append(("part-number-marker", m)) }
            let (resp, body) = try fetch(Request(method: "GET", key: k, query: q))
            if resp.status == 404 { return 0 }   // NoSuchUpload: gone meanwhile
            guard resp.isSuccess, let xml = S3XMLElement.parse(body), xml.name == "ListPartsResult" else { return nil }
            for p in xml.children("Part") {
                total += p.text("Size").flatMap { Int64($0.trimmingCharacters(in: .whitespaces)) } ?? 0
            }
            let truncated = xml.text("IsTruncated")?.trimmingCharacters(in: .whitespaces).lowercased() == "true"
            guard truncated, let next = xml.text("NextPartNumberMarker"), !next.isEmpty, next != marker else { return total }
            marker = next
        }
    }

    public func abortIncompleteUpload(_ upload: IncompleteUpload) throws {
        let k = try objectKey(upload.key)
        let (resp, body) = try fetch(Request(method: "DELETE", key: k, query: [("uploadId", upload.id)]))
        if resp.isSuccess || resp.status == 404 { return }
        throw error(resp, k, body: body)
    }

    /// Starts a multipart upload of `key` and uploads one part, without completing it: what a
    /// push killed mid-upload leaves behind (for tests of `prune`). Returns the upload ID.
    public func startAbandonedUpload(_ key: String, part: [UInt8]) throws -> String {
        let k = try objectKey(key)
        let (cr, cbody) = try fetch(Request(method: "POST", key: k, query: [("uploads", "")],
                                            headers: [("Content-Type", "application/octet-stream")]))
        guard cr.isSuccess, let xml = S3XMLElement.parse(cbody), let id = xml.text("UploadId"), !id.isEmpty else {
            throw error(cr, k, body: cbody)
        }
        let md5 = MD5Hasher()
        part.withUnsafeBytes { md5.update($0) }
        let (pr, pbody) = try fetch(Request(method: "PUT", key: k, query: [("partNumber", "1"), ("uploadId", id)],
                                            headers: [("Content-MD5", Data(md5.finalize()).base64EncodedString())],
                                            payloadHash: Digest.of(part).hex, body: { .bytes(part) }))
        guard pr.isSuccess else { throw error(pr, k, body: pbody) }
        return id
    }
}
