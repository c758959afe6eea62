import DogestryCore
import DogestryHTTP
import Foundation
#if canImport(Glibc)
import Glibc
#endif

// Multipart uploads: parts hashed, sent in parallel and retried one by one; aborted on failure.

extension S3Remote {
    // MARK: multipart

    func multipartPut(_ k: String, _ src: FileSource, size: Int64) throws {
        let partSize = self.partSize(for: size)
        let count = Int((size + partSize - 1) / partSize)
        let uploadID = try createMultipart(k)
        do {
            let etags = try uploadParts(k, src, uploadID: uploadID, size: size, partSize: partSize, count: count)
            try completeMultipart(k, uploadID, etags)
        } catch {
            abortMultipart(k, uploadID)
            throw error
        }
    }

    /// The part size for an object of `size` bytes: `options.partSize`, grown (to whole MiB) so
    /// that a huge object needs at most 10,000 parts.
    func partSize(for size: Int64) -> Int64 {
        var partSize = options.partSize
        if (size + partSize - 1) / partSize > Self.maxParts {
            let need = (size + Self.maxParts - 1) / Self.maxParts
            partSize = (need + (1 << 20) - 1) / (1 << 20) * (1 << 20)
        }
        return partSize
    }

    /// CreateMultipartUpload: the upload's ID.
    func createMultipart(_ k: String) throws -> String {
        let (cr, cbody) = try fetch(Request(method: "POST", key: k, query: [("uploads", "")],
                                            headers: [("Content-Type", "application/octet-stream")]))
        guard cr.isSuccess else { throw error(cr, k, body: cbody) }
        guard let xml = S3XMLElement.parse(cbody), let uploadID = xml.text("UploadId"), !uploadID.isEmpty else {
            throw DogestryError(.remote, "\(display(k)): CreateMultipartUpload returned no UploadId")
        }
        return uploadID
    }

    /// CompleteMultipartUpload of the parts with `etags`, in order: the object appears whole.
    func completeMultipart(_ k: String, _ uploadID: String, _ etags: [String]) throws {
        var doc = "<CompleteMultipartUpload xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\">"
        for (i, e) in etags.enumerated() {
            doc += "<Part><PartNumber>\(i + 1)</PartNumber><ETag>\(s3XMLEscape(e))</ETag></Part>"
        }
        doc += "</CompleteMultipartUpload>"
        let body = Array(doc.utf8)
        let md5 = MD5Hasher()
        body.withUnsafeBytes { md5.update($0) }
        let md5b64 = Data(md5.finalize()).base64EncodedString()
        let (resp, rbody) = try fetch(Request(method: "POST", key: k, query: [("uploadId", uploadID)],
                                              headers: [("Content-Type", "application/xml"), ("Content-MD5", md5b64)],
                                              payloadHash: Digest.of(body).hex, body: { .bytes(body) }))
        guard resp.isSuccess else { throw error(resp, k, body: rbody) }
        // S3 may answer 200 and report the failure in the body.
        if let x = S3XMLElement.parse(rbody), x.name == "Error" {
            let code = x.text("Code") ?? "InternalError"
            throw DogestryError(Self.authCodes.contains(code) ? .auth : .remote,
                                "\(display(k)): \(code) completing multipart upload")
        }
    }

    /// Uploads every part with `options.concurrency` threads, each with its own connection;
    /// returns the ETags in part order. A failed part is retried on its own.
    func uploadParts(_ k: String, _ src: FileSource, uploadID: String, size: Int64, partSize: Int64, count: Int) throws -> [String] {
        // Each worker has its own client (and connection).
        try Workers.map(count, threads: options.concurrency, name: "dogestry-s3-part", context: { HTTPClient(options: transport) }) { c, i in
            let offset = Int64(i) * partSize
            return try uploadPart(k, src, uploadID: uploadID, number: i + 1, offset: offset,
                                  length: min(partSize, size - offset), client: c)
        }
    }

    func uploadPart(_ k: String, _ src: FileSource, uploadID: String, number: Int, offset: Int64, length: Int64,
                    client c: HTTPClient) throws -> String {
        let (sha, md5) = try Self.hashRange(src, offset: offset, length: length, what: display(k))
        let r = Request(method: "PUT", key: k, query: [("partNumber", String(number)), ("uploadId", uploadID)],
                        headers: [("Content-MD5", md5)], payloadHash: sha,
                        body: { .source(FileRangeSource(src, offset: offset, length: length), length: length) })
        let (resp, body) = try fetch(r, client: c)
        guard resp.isSuccess else {
            var e = error(resp, k, body: body)
            e.message += " (part \(number))"
            throw e
        }
        guard let etag = resp.header("etag"), !etag.isEmpty else {
            throw DogestryError(.remote, "\(display(k)): part \(number) was stored without an ETag")
        }
        return etag
    }

    func abortMultipart(_ k: String, _ uploadID: String) {
        _ = try? fetch(Request(method: "DELETE", key: k, query: [("uploadId", uploadID)]))
    }
}
