import DogestryCore
import DogestryHTTP
import Foundation

// A multipart upload that sends each part as soon as the staged file holds it: a copy into S3
// downloads and uploads at once instead of one after the other.

extension S3Remote: EarlyUploading {
    public func beginUpload(_ key: String, file: StagedFile, size: Int64) throws -> EarlyUpload? {
        guard size >= options.partSize else { return nil }   // one PUT once it is written
        let k = try objectKey(key)
        let src = try FileSource(path: file.path, what: "staged file for \(display(k))")
        return S3EarlyUpload(self, k, src, uploadID: try createMultipart(k), size: size)
    }
}

/// The parts go out on `options.concurrency` workers, each waiting until its part is written;
/// the object appears only at `commit`, and `abort` (or any failure) aborts the upload.
final class S3EarlyUpload: EarlyUpload, @unchecked Sendable {  // (its state is guarded by `cond`)
    let remote: S3Remote
    let key: String
    let src: FileSource
    let uploadID: String
    let size: Int64
    private let cond = NSCondition()
    private var available: Int64 = 0
    private var stopped = false
    private var failure: Error?
    private var etags: [String] = []
    private let finished = DispatchSemaphore(value: 0)
    private var joined = false

    init(_ remote: S3Remote, _ key: String, _ src: FileSource, uploadID: String, size: Int64) {
        self.remote = remote; self.key = key; self.src = src; self.uploadID = uploadID; self.size = size
        let partSize = remote.partSize(for: size)
        let count = Int((size + partSize - 1) / partSize)
        let t = Thread { [self] in
            defer { finished.signal() }
            do {
                let tags = try Workers.map(count, threads: remote.options.concurrency, name: "dogestry-s3-part",
                                           context: { HTTPClient(options: remote.transport) }) { c, i in
                    let offset = Int64(i) * partSize, length = min(partSize, size - offset)
                    try self.wait(until: offset + length)
                    do {
                        return try remote.uploadPart(key, self.src, uploadID: uploadID, number: i + 1, offset: offset, length: length, client: c)
                    } catch {
                        self.record(error)   // at once: the writer and the waiting workers stop now
                        throw error
                    }
                }
                cond.lock(); etags = tags; cond.unlock()
            } catch {
                record(error)
            }
        }
        t.name = "dogestry-s3-early"
        t.start()
    }

    private func record(_ error: Error) {
        cond.lock(); if failure == nil { failure = error }; cond.broadcast(); cond.unlock()
    }

    private func wait(until end: Int64) throws {
        cond.lock(); defer { cond.unlock() }
        while available < end && !stopped && failure == nil { cond.wait() }
        if available < end || stopped || failure != nil { throw DogestryError(.aborted, "\(remote.display(key)): upload stopped") }
    }

    func written(_ bytes: Int64) throws {
        cond.lock()
        if bytes > available { available = bytes; cond.broadcast() }
        let f = failure
        cond.unlock()
        if let f { throw f }
    }

    func commit() throws {
        cond.lock()
        if failure != nil { stopped = true } else { available = max(available, size) }
        cond.broadcast(); cond.unlock()
        join()
        cond.lock(); let f = failure, tags = etags; cond.unlock()
        do {
            if let f { throw f }
            try remote.completeMultipart(key, uploadID, tags)
        } catch {
            remote.abortMultipart(key, uploadID)
            throw error
        }
    }

    func abort() {
        cond.lock(); stopped = true; cond.broadcast(); cond.unlock()
        join()
        remote.abortMultipart(key, uploadID)
    }

    private func join() { if !joined { finished.wait(); joined = true } }
}
