import DogestryCore
@testable import DogestryRemotes
import Foundation
import XCTest

/// Incomplete multipart uploads on a real S3 server (SeaweedFS): what `dogestry prune` sweeps.
final class S3UploadsTests: XCTestCase {
    func freshRemote() throws -> S3Remote {
        let s = try S3RemoteTests.server()
        return try S3RemoteTests.remote(s, bucket: try S3RemoteTests.bucket(s), prefix: "uploads/" + UUID().uuidString.lowercased())
    }

    /// Uploads begun and never completed are listed (only those under the remote's prefix, every
    /// page), sized from their parts, and aborted; a completed multipart put leaves none.
    func testIncompleteUploadsAreListedPagedSizedAndAborted() throws {
        let r = try freshRemote()
        let other = try freshRemote()   // another prefix of the same bucket
        var ids: [String: String] = [:]
        for i in 0..<5 {
            let key = "blobs/sha256/" + Digest.of("upload \(i)").hex
            ids[key] = try r.startAbandonedUpload(key, part: Array(repeating: UInt8(i), count: 1000 + i))
        }
        let otherID = try other.startAbandonedUpload("blobs/sha256/" + Digest.of("elsewhere").hex, part: [1, 2, 3])
        // A multipart put that completes leaves no upload behind.
        let staged = try r.makeStagedFile()
        let sink = try staged.sink()
        try sink.write(Array(repeating: 7, count: Int(S3Options().partSize) + 10))
        try sink.close()
        try r.put("complete", file: staged, size: S3Options().partSize + 10)
        staged.discard()

        for pageSize in [nil, 2] as [Int?] {
            var seen: [IncompleteUpload] = []
            try r.listIncompleteUploads(pageSize: pageSize) { seen.append($0) }
            XCTAssertEqual(Dictionary(uniqueKeysWithValues: seen.map { ($0.key, $0.id) }), ids, "page size \(pageSize.map(String.init) ?? "default")")
            XCTAssertEqual(seen.count, 5)
            for u in seen {
                let started = try XCTUnwrap(u.initiated, "no Initiated time for \(u.key)")
                XCTAssertLessThan(abs(started.timeIntervalSinceNow), 300)
            }
        }
        var all: [IncompleteUpload] = []
        try r.listIncompleteUploads { all.append($0) }
        for u in all {
            XCTAssertEqual(try r.incompleteUploadSize(u), Int64(1000 + (0..<5).first { u.key == "blobs/sha256/" + Digest.of("upload \($0)").hex }!))
            try r.abortIncompleteUpload(u)
            try r.abortIncompleteUpload(u)   // gone already: fine
        }
        var left: [IncompleteUpload] = []
        try r.listIncompleteUploads { left.append($0) }
        XCTAssertEqual(left, [])
        var elsewhere: [String] = []
        try other.listIncompleteUploads { elsewhere.append($0.id) }
        XCTAssertEqual(elsewhere, [otherID], "another prefix's upload must be untouched")
        for u in [IncompleteUpload(key: "blobs/sha256/" + Digest.of("elsewhere").hex, id: otherID, initiated: nil, size: nil)] {
            try other.abortIncompleteUpload(u)
        }
        XCTAssertNotNil(try r.stat("complete"))
    }
}
