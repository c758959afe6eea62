import DogestryCore
import DogestryHTTP
import Foundation
#if canImport(Glibc)
import Glibc
#endif

// MARK: - parallel ranged download

/// A large object fetched by `options.concurrency` threads with ranged GETs (each with its own
/// connection, each range retried on its own) into an unlinked temporary file, and read from that
/// file in order as the ranges arrive.
///
/// Range 0 is the first `2 × partSize` bytes, whose response `open` already has: it is readable
/// as it streams in and, if it breaks off, resumed where it stopped. The others are `partSize`
/// bytes each, `If-Match` the first response's ETag (so all come from one version of the object),
/// and readable once their response proved whole (206, `Content-Range`, length). Threads start a
/// range only while it lies within `window` bytes of the reader, and the file's consumed head is
/// punched out, so memory stays at a few buffers and disk at about `window` whatever the object's
/// size. Dropping the source stops the threads.
final class RangedDownload: @unchecked Sendable {  // (its state is guarded by `cond`)
    struct Part { let start: Int64; let length: Int64 }

    let remote: S3Remote
    let key: String
    let total: Int64
    let etag: String?
    let firstLength: Int64
    let partSize: Int64
    let window: Int64
    let fd: Int32
    let what: String

    /// The ranges, in order (fixed once made).
    let parts: [Part]
    private let cond = NSCondition()
    /// Bytes of each part in the file so far (guarded by `cond`, like everything below).
    private var done: [Int64]
    private var nextPart = 1     // part 0 is the response open() has
    private var readerPos: Int64 = 0
    private var failure: Error?
    private var cancelled = false
    private var first: ByteSource?

    init(remote: S3Remote, key: String, total: Int64, firstLength: Int64, etag: String?, first: ByteSource) throws {
        self.remote = remote; self.key = key; self.total = total; self.etag = etag
        self.firstLength = firstLength
        self.partSize = remote.options.partSize
        self.window = Int64(2 * remote.options.concurrency + 2) * partSize
        self.what = remote.display(key)
        self.first = first
        var parts = [Part(start: 0, length: firstLength)]
        var off = firstLength
        while off < total {
            parts.append(Part(start: off, length: min(partSize, total - off)))
            off += partSize
        }
        self.parts = parts
        self.done = Array(repeating: 0, count: parts.count)
        try FS.makeDirectories(TempDirectory.path)
        let path = FS.tempPath(in: TempDirectory.path, prefix: "dogestry-s3-get")
        let fd = Glibc.open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0o600)
        if fd < 0 { throw DogestryError.io("cannot create a temporary file in \(TempDirectory.path): \(errnoString())") }
        unlink(path)   // nothing is left behind, whatever happens next
        self.fd = fd
    }

    deinit { Glibc.close(fd) }

    /// Starts the threads; returns the reader.
    func start() -> ByteSource {
        Workers.start(threads: min(remote.options.concurrency, parts.count), name: "dogestry-s3-range") { [self] w in
            self.work(first: w == 0)
        }
        return Reader(self)
    }

    // MARK: threads

    func work(first isFirst: Bool) {
        let client = HTTPClient(options: remote.transport)
        if isFirst {
            let body = takeFirst()
            do {
                if let body { try drain(body) }
                if written(0) < parts[0].length { try fetch(part: 0, client) }
            } catch let e as DogestryError where e.cause?.isTransient == true {
                // The first response broke off: resume it where it stopped.
                do { try fetch(part: 0, client) } catch { fail(error); return }
            } catch { fail(error); return }
        }
        while let i = takePart() {
            do { try fetch(part: i, client) } catch { fail(error); return }
        }
    }

    private func takeFirst() -> ByteSource? {
        cond.lock(); defer { cond.unlock() }
        let f = first; first = nil
        return f
    }

    /// The next part to fetch, once it lies within the window; nil when done, failed or cancelled.
    private func takePart() -> Int? {
        cond.lock(); defer { cond.unlock() }
        while true {
            if cancelled || failure != nil || nextPart >= parts.count { return nil }
            if parts[nextPart].start < readerPos + window {
                nextPart += 1
                return nextPart - 1
            }
            cond.wait()
        }
    }

    private func written(_ i: Int) -> Int64 { cond.lock(); defer { cond.unlock() }; return done[i] }

    /// GETs what part `i` still lacks, retrying transient failures. The response body goes
    /// straight from libcurl into the file (no extra buffer or thread); the part counts as
    /// arrived only once its response proved to be the whole requested range (206, Content-Range,
    /// length), so an error document or a broken-off body is simply overwritten by the retry.
    private func fetch(part i: Int, _ client: HTTPClient) throws {
        let p = parts[i]
        let last = p.start + p.length - 1
        if isCancelled { throw DogestryError(.aborted, "download of \(what) cancelled") }
        let (resp, _) = try remote.withRetries({ () -> S3Remote.Request in
            var h = [("Range", "bytes=\(p.start + written(i))-\(last)")]
            if let etag { h.append(("If-Match", etag)) }
            return S3Remote.Request(method: "GET", key: key, headers: h)
        }) { req -> (HTTPResponse, Void) in
            let from = p.start + written(i)
            let sink = PartSink(self, at: from, room: last - from + 1)
            let resp = try client.perform(req, into: sink)
            if resp.isSuccess {
                _ = try S3Remote.contentRange(resp, from: from, to: last, total: total, what: what)
                guard sink.count == last - from + 1 else {
                    throw DogestryError(.remote, "\(what): the ranged GET of bytes \(from)-\(last) returned \(sink.count) bytes")
                }
                cond.lock(); done[i] = p.length; cond.broadcast(); cond.unlock()
            }
            return (resp, ())
        }
        if resp.status == 412 {
            throw DogestryError(.remote, "\(what): the object changed while it was read (If-Match \(etag ?? "") failed)")
        }
        guard resp.isSuccess else { throw remote.error(resp, key) }
        guard written(i) == p.length else {
            throw DogestryError(.remote, "\(what): range \(p.start)-\(last) ended after \(written(i)) bytes")
        }
    }

    /// Where libcurl writes one response body: the file from `at`, at most `room` bytes (an
    /// error document longer than what is left of the part is counted, not written).
    final class PartSink: ByteSink {
        let d: RangedDownload
        let at: Int64
        let room: Int64
        private(set) var count: Int64 = 0
        init(_ d: RangedDownload, at: Int64, room: Int64) { self.d = d; self.at = at; self.room = room }
        func write(_ b: UnsafeRawBufferPointer) throws {
            if d.isCancelled { throw DogestryError(.aborted, "download of \(d.what) cancelled") }
            d.remote.meter.received(Int64(b.count))
            let n = Int(max(0, min(Int64(b.count), room - count)))
            if n > 0 { try d.pwriteAll(UnsafeRawBufferPointer(rebasing: b[0..<n]), at: at + count) }
            count += Int64(b.count)
        }
        func close() throws {}
    }

    func pwriteAll(_ b: UnsafeRawBufferPointer, at offset: Int64) throws {
        var off = 0
        while off < b.count {
            let w = pwrite(fd, b.baseAddress! + off, b.count - off, off_t(offset + Int64(off)))
            if w < 0 {
                if errno == EINTR { continue }
                throw DogestryError.io("cannot write the temporary file for \(what) in \(TempDirectory.path): \(errnoString())")
            }
            off += w
        }
    }

    /// Copies the first response's body into part 0, which grows as it arrives.
    private func drain(_ body: ByteSource) throws {
        let buf = UnsafeMutableRawBufferPointer.allocate(byteCount: 1 << 20, alignment: 16)
        defer { buf.deallocate() }
        let p = parts[0]
        while true {
            if isCancelled { throw DogestryError(.aborted, "download of \(what) cancelled") }
            let n = try body.read(into: buf)
            if n == 0 { return }
            remote.meter.received(Int64(n))
            let at = written(0)
            guard at + Int64(n) <= p.length else {
                throw DogestryError(.remote, "\(what): bytes 0-\(p.length - 1) came with more bytes than asked for")
            }
            try pwriteAll(UnsafeRawBufferPointer(rebasing: buf[0..<n]), at: at)
            cond.lock(); done[0] += Int64(n); cond.broadcast(); cond.unlock()
        }
    }

    var isCancelled: Bool { cond.lock(); defer { cond.unlock() }; return cancelled }

    private func fail(_ e: Error) {
        cond.lock()
        if failure == nil && !cancelled { failure = e }
        cond.broadcast()
        cond.unlock()
    }

    func cancel() {
        cond.lock(); cancelled = true; cond.broadcast(); cond.unlock()
        (takeFirst() as? StreamingBody)?.cancel()
    }

    /// glibc's fallocate(2) (Swift's Glibc module does not declare it).
    static let fallocate: (@convention(c) (Int32, Int32, Int64, Int64) -> Int32)? = {
        guard let h = dlopen(nil, RTLD_NOW), let f = dlsym(h, "fallocate64") ?? dlsym(h, "fallocate") else { return nil }
        return unsafeBitCast(f, to: (@convention(c) (Int32, Int32, Int64, Int64) -> Int32).self)
    }()

    // MARK: reading

    /// Reads the file in order, waiting for the ranges to arrive.
    final class Reader: ByteSource {
        let d: RangedDownload
        private var pos: Int64 = 0
        private var punched: Int64 = 0
        init(_ d: RangedDownload) { self.d = d }
        deinit { d.cancel() }

        func read(into buffer: UnsafeMutableRawBufferPointer) throws -> Int {
            if buffer.count == 0 { return 0 }
            var avail: Int64 = 0
            d.cond.lock()
            while true {
                if pos >= d.total { d.cond.unlock(); return 0 }
                let i = pos < d.firstLength ? 0 : 1 + Int((pos - d.firstLength) / d.partSize)
                avail = d.parts[i].start + d.done[i] - pos
                if avail > 0 { break }
                if let e = d.failure { d.cond.unlock(); throw e }
                d.cond.wait()
            }
            d.cond.unlock()
            let want = Int(min(Int64(buffer.count), avail))
            var n: Int
            repeat { n = pread(d.fd, buffer.baseAddress, want, off_t(pos)) } while n < 0 && errno == EINTR
            if n < 0 { throw DogestryError.io("cannot read the temporary file for \(d.what): \(errnoString())") }
            if n == 0 { throw DogestryError.io("the temporary file for \(d.what) ended at \(pos) bytes") }
            pos += Int64(n)
            d.cond.lock(); d.readerPos = pos; d.cond.broadcast(); d.cond.unlock()
            // Give back the disk space of what was read (ignored where holes are not supported).
            let upTo = pos / (4 << 20) * (4 << 20)
            if upTo - punched >= 16 << 20 {
                _ = RangedDownload.fallocate?(d.fd, 0x01 | 0x02 /* FALLOC_FL_KEEP_SIZE | FALLOC_FL_PUNCH_HOLE */, punched, upTo - punched)
                punched = upTo
            }
            return n
        }
    }
}
