import CCurl
import DogestryCore
import Foundation

/// libcurl's process-wide initialisation, done once (Swift initialises static lets thread-safely).
enum CurlGlobal {
    static let ready: Bool = {
        curl_global_init(3 /* CURL_GLOBAL_ALL */) == CURLE_OK
    }()
}

/// One libcurl easy handle with its error buffer. Kept alive between requests so that
/// libcurl's connection cache (which lives in the handle) reuses connections.
final class CurlHandle {
    let easy: UnsafeMutableRawPointer
    let errbuf: UnsafeMutablePointer<CChar>

    init() throws {
        guard CurlGlobal.ready else { throw DogestryError.io("libcurl initialisation failed") }
        guard let e = curl_easy_init() else { throw DogestryError.io("libcurl: cannot create a handle") }
        easy = e
        errbuf = UnsafeMutablePointer<CChar>.allocate(capacity: Int(CURL_ERROR_SIZE) + 1)
        errbuf.initialize(repeating: 0, count: Int(CURL_ERROR_SIZE) + 1)
    }

    deinit {
        curl_easy_cleanup(easy)
        errbuf.deallocate()
    }

    var errorText: String { String(cString: errbuf) }
}

/// State of one transfer, shared with libcurl's callbacks through an unretained pointer.
final class Transfer: @unchecked Sendable {  // (its cancel flag is locked; the rest is the transfer thread's)
    let sink: ByteSink
    /// When set, the body of a non-2xx response is kept in `errorBody` only (not written to `sink`).
    let divertErrorBody: Bool
    static let errorBodyLimit = 64 << 10

    var status = 0
    var headers: [String: String] = [:]
    var headersDone = false
    var errorBody: [UInt8] = []
    /// Called on the transfer thread once the final response headers have arrived.
    var onHeaders: ((HTTPResponse) -> Void)?

    var bodyBytes: [UInt8]?
    var bodySource: ByteSource?
    var bodyLength: Int64?
    var sent: Int64 = 0
    var target = ""
    var timeouts = HTTPTimeouts.remoteDefault

    /// The first error thrown by the sink or body source inside a callback.
    var callbackError: Error?

    private let lock = NSLock()
    private var cancelledFlag = false

    // Timing, touched only on the transfer thread (libcurl's callbacks).
    /// When the transfer last moved a byte, or last came back from dogestry's own reader or
    /// writer (time spent blocked there is not the network's).
    var lastActivity: UInt64 = 0
    /// Bytes moved (both directions) as libcurl last reported them.
    var lastProgress: Int64 = -1
    /// Set when a timeout of ours ended the transfer.
    var timedOut: (kind: HTTPTransportFailure.Kind, seconds: Double)?

    init(sink: ByteSink, divertErrorBody: Bool) {
        self.sink = sink
        self.divertErrorBody = divertErrorBody
    }

    var isCancelled: Bool { lock.lock(); defer { lock.unlock() }; return cancelledFlag }
    func cancel() { lock.lock(); cancelledFlag = true; lock.unlock() }

    var isSuccessStatus: Bool { (200..<300).contains(status) }

    var response: HTTPResponse {
        HTTPResponse(status: status, headers: headers, errorBody: isSuccessStatus ? [] : errorBody)
    }

    func headerLine(_ raw: UnsafeRawBufferPointer) {
        if headersDone { return }  // trailers
        // (Swift treats "\r\n" as one Character: trim as a character set.)
        let line = String(decoding: raw, as: UTF8.self).trimmingCharacters(in: .newlines)
        if line.isEmpty {
            // End of a header block: 1xx blocks are followed by another one.
            if status >= 200 || status == 0 {
                headersDone = true
                onHeaders?(response)
            }
            return
        }
        if line.hasPrefix("HTTP/") {
            let parts = line.split(separator: " ", maxSplits: 2, omittingEmptySubsequences: true)
            status = parts.count > 1 ? Int(parts[1]) ?? 0 : 0
            headers = [:]
            return
        }
        guard let colon = line.firstIndex(of: ":") else { return }
        let name = line[..<colon].trimmingCharacters(in: .whitespaces).lowercased()
        let value = line[line.index(after: colon)...].trimmingCharacters(in: .whitespacesAndNewlines)
        headers[name] = value
    }

    static func now() -> UInt64 { DispatchTime.now().uptimeNanoseconds }

    /// Called by libcurl about once a second and whenever data moves; false ends the transfer
    /// with `timedOut` set when no byte moved for the stall limit or no response came within
    /// the first-byte limit.
    func progress(down: Int64, up: Int64, upTotal: Int64, timeouts: HTTPTimeouts) -> Bool {
        if isCancelled { return false }
        let t = Self.now()
        let moved = down + up
        if moved != lastProgress { lastProgress = moved; lastActivity = t; return true }
        let idle = Double(t &- lastActivity) / 1e9
        let requestSent = upTotal <= 0 || up >= upTotal
        if status == 0 && down == 0 && requestSent {
            if timeouts.firstByte > 0 && idle >= timeouts.firstByte {
                timedOut = (.firstByteTimeout, timeouts.firstByte); return false
            }
            return true
        }
        if timeouts.stall > 0 && idle >= timeouts.stall {
            timedOut = (.stalled, timeouts.stall); return false
        }
        return true
    }

    func bodyData(_ raw: UnsafeRawBufferPointer) -> Bool {
        defer { lastActivity = Self.now() }
        if !headersDone {
            headersDone = true
            onHeaders?(response)
        }
        if !isSuccessStatus {
            let room = Transfer.errorBodyLimit - errorBody.count
            if room > 0 { errorBody.append(contentsOf: raw.prefix(room)) }
            if divertErrorBody { return true }
        }
        do {
            try sink.write(raw)
            return true
        } catch {
            if callbackError == nil { callbackError = error }
            return false
        }
    }

    /// Fills `buf` with request body bytes; returns the count, 0 at end, or nil to abort.
    func bodyRead(_ buf: UnsafeMutableRawBufferPointer) -> Int? {
        defer { lastActivity = Self.now() }
        if let bytes = bodyBytes {
            let n = min(buf.count, bytes.count - Int(sent))
            if n <= 0 { return 0 }
            bytes.withUnsafeBytes { src in
                buf.baseAddress!.copyMemory(from: src.baseAddress! + Int(sent), byteCount: n)
            }
            sent += Int64(n)
            return n
        }
        guard let src = bodySource else { return 0 }
        var want = buf.count
        if let len = bodyLength {
            want = Int(min(Int64(want), len - sent))
            if want <= 0 { return 0 }
        }
        do {
            let n = try src.read(into: UnsafeMutableRawBufferPointer(rebasing: buf[0..<want]))
            if n == 0, let len = bodyLength, sent < len {
                callbackError = DogestryError.corrupt("request body for \(target) ended after \(sent) of \(len) bytes")
                return nil
            }
            sent += Int64(n)
            return n
        } catch {
            if callbackError == nil { callbackError = error }
            return nil
        }
    }

    /// Rewinds the request body (libcurl asks when it retries on a fresh connection).
    func seek(to offset: Int64) -> Bool {
        if bodyBytes != nil, offset >= 0, offset <= Int64(bodyBytes!.count) { sent = offset; return true }
        return offset == sent && sent == 0
    }
}

private func transfer(_ p: UnsafeMutableRawPointer?) -> Transfer {
    Unmanaged<Transfer>.fromOpaque(p!).takeUnretainedValue()
}

/// A small synchronous HTTP/1.1 client over libcurl.
///
/// Bodies are streamed in both directions (memory does not grow with body size). Easy handles,
/// and with them libcurl's connection cache, are reused between requests: a client keeps its
/// handles in a small pool, so sequential requests share one handle and connection, and it is
/// safe to use one client from several threads (each concurrent request takes its own handle).
public final class HTTPClient: @unchecked Sendable {  // (the handle pool is locked; options are set once)
    public let options: HTTPTransportOptions
    /// Turns transport failures into the error thrown. Callers (e.g. the engine client) may
    /// replace it to phrase errors in their own terms.
    public var describeFailure: (HTTPTransportFailure) -> DogestryError = { $0.defaultError }

    /// Bytes buffered between the transfer thread and the reader of `open` (a few MiB at most).
    public static let streamBufferSize = 4 << 20

    private let poolLock = NSLock()
    private var idle: [CurlHandle] = []
    private static let maxIdle = 4

    public init(options: HTTPTransportOptions) {
        self.options = options
    }

    // MARK: public API

    /// Performs the request, streaming the response body into `sink` (which is not closed).
    /// Returns status and headers whatever the status is; for non-2xx statuses the beginning
    /// of the body is also kept in `HTTPResponse.errorBody`.
    public func perform(_ req: HTTPRequest, into sink: ByteSink) throws -> HTTPResponse {
        let t = Transfer(sink: sink, divertErrorBody: false)
        return try run(req, t)
    }

    /// Performs the request and returns the whole response body in memory (whatever the status),
    /// refusing bodies larger than `limit` bytes.
    public func fetch(_ req: HTTPRequest, limit: Int = 16 << 20) throws -> (HTTPResponse, [UInt8]) {
        let sink = LimitedMemorySink(limit: limit, what: "response from \(displayTarget(req.url, path: true))")
        let resp = try perform(req, into: sink)
        return (resp, sink.bytes)
    }

    /// Starts the request and returns once the response headers have arrived; the body is then
    /// pulled from the returned source while a background thread runs the transfer (at most
    /// `streamBufferSize` bytes are buffered). A transfer error after the headers is thrown by
    /// the source's `read`. `cancel()` (or dropping the source) aborts the transfer.
    ///
    /// For a non-2xx status the call waits for the (error) body, keeps its first 64 KiB in
    /// `errorBody`, and the returned source yields those bytes.
    public func open(_ req: HTTPRequest) throws -> (HTTPResponse, StreamingBody) {
        let pipe = BoundedPipe(capacity: HTTPClient.streamBufferSize)
        let t = Transfer(sink: pipe.writer, divertErrorBody: true)
        let gate = OpenGate()
        t.onHeaders = { resp in
            if resp.isSuccess { gate.set(.success(resp)) }
        }
        let target = displayTarget(req.url, path: true)
        // The request and transfer are used by the transfer thread only from here on.
        let moved = Unchecked((req, t))
        let thread = Thread { [self] in
            let (req, t) = moved.value
            do {
                let resp = try self.run(req, t)
                gate.set(.success(resp))
                pipe.finish()
            } catch {
                gate.set(.failure(error))
                pipe.fail(error)
            }
        }
        thread.name = "dogestry-http"
        thread.start()
        let resp = try gate.wait().get()
        if resp.isSuccess {
            return (resp, StreamingBody(source: pipe.reader, pipe: pipe, transfer: t, target: target))
        }
        var r = resp
        r.errorBody = t.errorBody
        return (r, StreamingBody(source: MemorySource(t.errorBody), pipe: nil, transfer: nil, target: target))
    }

    /// Sends a request whose body is written by `producer`, which runs on a background thread and
    /// writes into a bounded pipe feeding the upload (chunked unless `length` is given); the
    /// request's own `body` is ignored. The response body goes into `sink`.
    ///
    /// If the producer throws, the upload is aborted and the producer's error is thrown. If the
    /// transfer ends first (failure, or an early response), the producer's writes start to throw
    /// so it stops, and the transfer's error (or the response) is returned.
    public func upload(_ req: HTTPRequest, length: Int64? = nil, into sink: ByteSink,
                       producer: @escaping (ByteSink) throws -> Void) throws -> HTTPResponse {
        let pipe = BoundedPipe(capacity: HTTPClient.streamBufferSize)
        let state = UploadState()
        let target = displayTarget(req.url, path: true)
        let moved = Unchecked(producer)
        let thread = Thread {
            let producer = moved.value
            do {
                try producer(pipe.writer)
                try pipe.writer.close()
            } catch {
                state.producerFailed(error)
                pipe.fail(error)
            }
            state.producerDone()
        }
        thread.name = "dogestry-http-producer"
        thread.start()
        var r = req
        r.body = .source(pipe.reader, length: length)
        var result: Result<HTTPResponse, Error>
        do { result = .success(try run(r, Transfer(sink: sink, divertErrorBody: false))) } catch { result = .failure(error) }
        state.transferEnded()
        pipe.fail(DogestryError(.aborted, "upload to \(target) ended before all data was sent"))
        if let pe = state.waitForProducer() { throw pe }
        return try result.get()
    }

    // MARK: transfer

    func run(_ req: HTTPRequest, _ t: Transfer) throws -> HTTPResponse {
        let h = try acquire()
        var reusable = true
        defer { release(h, reusable: reusable) }
        let easy = h.easy
        curl_easy_reset(easy)
        h.errbuf[0] = 0
        t.target = displayTarget(req.url, path: true)
        t.timeouts = options.timeouts

        var list: UnsafeMutablePointer<curl_slist>?
        defer { curl_slist_free_all(list) }
        func addHeader(_ s: String) { list = curl_slist_append(list, s) }

        let o = options
        var rc = CURLE_OK
        func set(_ opt: CURLoption, _ v: Int) { if rc == CURLE_OK { rc = dg_curl_setopt_long(easy, opt, v) } }
        func set(_ opt: CURLoption, _ v: String) { if rc == CURLE_OK { rc = dg_curl_setopt_str(easy, opt, v) } }
        func setPtr(_ opt: CURLoption, _ v: UnsafeRawPointer?) { if rc == CURLE_OK { rc = dg_curl_setopt_ptr(easy, opt, v) } }

        set(CURLOPT_URL, req.url)
        set(CURLOPT_NOSIGNAL, 1)
        setPtr(CURLOPT_ERRORBUFFER, UnsafeRawPointer(h.errbuf))
        set(CURLOPT_HTTP_VERSION, 2 /* CURL_HTTP_VERSION_1_1 */)
        set(CURLOPT_FOLLOWLOCATION, 0)
        set(CURLOPT_PATH_AS_IS, 1)  // send the path as given ("../" in S3 keys, image names)
        set(CURLOPT_TCP_KEEPALIVE, 1)
        set(CURLOPT_SUPPRESS_CONNECT_HEADERS, 1)
        set(CURLOPT_BUFFERSIZE, 256 << 10)
        set(CURLOPT_UPLOAD_BUFFERSIZE, 512 << 10)
        if let sock = o.unixSocket {
            set(CURLOPT_UNIX_SOCKET_PATH, sock)
            set(CURLOPT_PROXY, "")
        }
        if o.timeouts.connect > 0 { set(CURLOPT_CONNECTTIMEOUT_MS, Int(o.timeouts.connect * 1000)) }
        t.lastActivity = Transfer.now()
        set(CURLOPT_USERAGENT, o.userAgent)
        if let ca = o.caBundle { set(CURLOPT_CAINFO, ca) }
        if let cert = o.clientCert { set(CURLOPT_SSLCERT, cert) }
        if let key = o.clientKey { set(CURLOPT_SSLKEY, key) }
        if o.insecure {
            set(CURLOPT_SSL_VERIFYPEER, 0)
            set(CURLOPT_SSL_VERIFYHOST, 0)
        }

        let ud = UnsafeRawPointer(Unmanaged.passUnretained(t).toOpaque())
        if rc == CURLE_OK {
            rc = dg_curl_setopt_iofunc(easy, CURLOPT_HEADERFUNCTION) { ptr, size, n, ud in
                let len = size * n
                transfer(ud).headerLine(UnsafeRawBufferPointer(start: ptr, count: len))
                return len
            }
        }
        setPtr(CURLOPT_HEADERDATA, ud)
        if rc == CURLE_OK {
            rc = dg_curl_setopt_iofunc(easy, CURLOPT_WRITEFUNCTION) { ptr, size, n, ud in
                let len = size * n
                let t = transfer(ud)
                if t.isCancelled { return 0 }
                return t.bodyData(UnsafeRawBufferPointer(start: ptr, count: len)) ? len : 0
            }
        }
        setPtr(CURLOPT_WRITEDATA, ud)
        set(CURLOPT_NOPROGRESS, 0)
        if rc == CURLE_OK {
            rc = dg_curl_setopt_xferinfo(easy) { ud, _, dlnow, ultotal, ulnow in
                let t = transfer(ud)
                return t.progress(down: Int64(dlnow), up: Int64(ulnow), upTotal: Int64(ultotal), timeouts: t.timeouts) ? 0 : 1
            }
        }
        setPtr(CURLOPT_XFERINFODATA, ud)

        // Method and body.
        let method = req.method.uppercased()
        var body = req.body
        if case .none = body, method == "POST" || method == "PUT" || method == "PATCH" { body = .bytes([]) }
        switch body {
        case .none:
            if method == "GET" {
                set(CURLOPT_HTTPGET, 1)
            } else if method == "HEAD" {
                set(CURLOPT_NOBODY, 1)
            } else {
                set(CURLOPT_CUSTOMREQUEST, method)
            }
        case .bytes(let b):
            t.bodyBytes = b
            t.bodyLength = Int64(b.count)
        case .source(let s, let len):
            t.bodySource = s
            t.bodyLength = len
        }
        if t.bodyBytes != nil || t.bodySource != nil {
            set(CURLOPT_UPLOAD, 1)
            set(CURLOPT_CUSTOMREQUEST, method)
            if rc == CURLE_OK {
                rc = dg_curl_setopt_iofunc(easy, CURLOPT_READFUNCTION) { ptr, size, n, ud in
                    let t = transfer(ud)
                    if t.isCancelled { return 0x1000_0000 /* CURL_READFUNC_ABORT */ }
                    guard let ptr = ptr else { return 0 }
                    return t.bodyRead(UnsafeMutableRawBufferPointer(start: ptr, count: size * n)) ?? 0x1000_0000
                }
            }
            setPtr(CURLOPT_READDATA, ud)
            if rc == CURLE_OK {
                rc = dg_curl_setopt_seek(easy) { ud, offset, origin in
                    origin == SEEK_SET && transfer(ud).seek(to: Int64(offset)) ? 0 : 2 /* CURL_SEEKFUNC_CANTSEEK */
                }
            }
            setPtr(CURLOPT_SEEKDATA, ud)
            if let len = t.bodyLength {
                if rc == CURLE_OK { rc = dg_curl_setopt_off(easy, CURLOPT_INFILESIZE_LARGE, curl_off_t(len)) }
            } else {
                addHeader("Transfer-Encoding: chunked")
            }
            addHeader("Expect:")
        }
        for (name, value) in req.headers {
            addHeader(value.isEmpty ? "\(name);" : "\(name): \(value)")
        }
        if list != nil { setPtr(CURLOPT_HTTPHEADER, UnsafeRawPointer(list)) }

        if rc != CURLE_OK {
            reusable = false
            throw describeFailure(HTTPTransportFailure(
                kind: .other, target: t.target, reason: "cannot set up request (\(String(cString: curl_easy_strerror(rc))))",
                curlCode: Int(rc.rawValue)))
        }

        let code = curl_easy_perform(easy)
        if code != CURLE_OK {
            if let e = t.callbackError { throw e }
            var osErrno = 0
            _ = dg_curl_getinfo_long(easy, CURLINFO_OS_ERRNO, &osErrno)
            var f = failure(code, osErrno: Int32(osErrno), handle: h, req: req, cancelled: t.isCancelled)
            if let (kind, seconds) = t.timedOut, !t.isCancelled { f.kind = kind; f.seconds = seconds }
            throw describeFailure(f)
        }
        var status = 0
        _ = dg_curl_getinfo_long(easy, CURLINFO_RESPONSE_CODE, &status)
        if status != 0 { t.status = status }
        return t.response
    }

    func failure(_ code: CURLcode, osErrno: Int32, handle: CurlHandle, req: HTTPRequest, cancelled: Bool) -> HTTPTransportFailure {
        let curlText = handle.errorText.isEmpty ? String(cString: curl_easy_strerror(code)) : handle.errorText
        let target = displayTarget(req.url, path: true)
        var f = HTTPTransportFailure(kind: .other, target: target, reason: curlText, curlCode: Int(code.rawValue))
        if cancelled { f.kind = .cancelled; return f }
        switch code.rawValue {
        case 1, 3:  // UNSUPPORTED_PROTOCOL, URL_MALFORMAT
            f.kind = .invalidURL
        case 5, 6:  // COULDNT_RESOLVE_PROXY, COULDNT_RESOLVE_HOST
            f.kind = .resolve
        case 7:     // COULDNT_CONNECT
            f.kind = .connect
            f.target = displayTarget(req.url, path: false)
            if osErrno != 0 { f.reason = errnoString(osErrno) }
        case 28:    // OPERATION_TIMEDOUT
            f.kind = .timeout
        case 35, 53, 54, 58, 59, 60, 64, 66, 77, 80, 82, 83, 90, 91, 98:  // SSL/TLS
            f.kind = .tls
        case 18:    // PARTIAL_FILE: the body ended before its Content-Length
            f.kind = .truncated
        case 52, 55, 56, 92:  // GOT_NOTHING, SEND_ERROR, RECV_ERROR, HTTP2_STREAM
            f.kind = .connection
        case 42:    // ABORTED_BY_CALLBACK
            f.kind = .cancelled
        default:
            break
        }
        return f
    }

    /// The printable name of what `url` talks to: no query string, fragment or credentials;
    /// for unix-socket transports `unix://<socket>` (followed by the path when `path`).
    func displayTarget(_ url: String, path: Bool) -> String {
        let clean = redactedURL(url)
        guard let sock = options.unixSocket else {
            if path { return clean }
            // Scheme and authority only.
            if let r = clean.range(of: "://") {
                let rest = clean[r.upperBound...]
                let end = rest.firstIndex(of: "/") ?? rest.endIndex
                return String(clean[..<end])
            }
            return clean
        }
        guard path else { return "unix://" + sock }
        var p = ""
        if let r = clean.range(of: "://") {
            let rest = clean[r.upperBound...]
            if let slash = rest.firstIndex(of: "/") { p = String(rest[slash...]) }
        }
        return "unix://" + sock + (p.isEmpty || p == "/" ? "" : " " + p)
    }

    // MARK: handle pool

    private func acquire() throws -> CurlHandle {
        poolLock.lock()
        if let h = idle.popLast() { poolLock.unlock(); return h }
        poolLock.unlock()
        return try CurlHandle()
    }

    private func release(_ h: CurlHandle, reusable: Bool) {
        guard reusable else { return }
        poolLock.lock()
        if idle.count < HTTPClient.maxIdle { idle.append(h) }
        poolLock.unlock()
    }
}

/// A streaming response body (see `HTTPClient.open`).
public final class StreamingBody: ByteSource {
    private let source: ByteSource
    private let pipe: BoundedPipe?
    private let transfer: Transfer?
    private let target: String
    private var finished = false

    init(source: ByteSource, pipe: BoundedPipe?, transfer: Transfer?, target: String) {
        self.source = source
        self.pipe = pipe
        self.transfer = transfer
        self.target = target
    }

    public func read(into buffer: UnsafeMutableRawBufferPointer) throws -> Int {
        let n = try source.read(into: buffer)
        if n == 0 && buffer.count > 0 { finished = true }
        return n
    }

    /// Aborts the transfer; later reads throw.
    public func cancel() {
        transfer?.cancel()
        pipe?.fail(DogestryError(.aborted, "transfer from \(target) cancelled"))
    }

    deinit {
        if !finished { cancel() }
    }
}

/// One-shot hand-over of the response from the transfer thread to `open`'s caller.
final class OpenGate: @unchecked Sendable {  // (guarded by its condition)
    private let cond = NSCondition()
    private var result: Result<HTTPResponse, Error>?

    func set(_ r: Result<HTTPResponse, Error>) {
        cond.lock()
        if result == nil { result = r; cond.broadcast() }
        cond.unlock()
    }

    func wait() -> Result<HTTPResponse, Error> {
        cond.lock(); defer { cond.unlock() }
        while result == nil { cond.wait() }
        return result!
    }
}

/// Coordination between `upload`'s caller and its producer thread.
final class UploadState: @unchecked Sendable {  // (guarded by its condition)
    private let cond = NSCondition()
    private var ended = false
    private var done = false
    private var error: Error?

    func producerFailed(_ e: Error) {
        cond.lock()
        if !ended && error == nil { error = e }  // errors after the transfer ended are consequences
        cond.unlock()
    }
    func producerDone() { cond.lock(); done = true; cond.broadcast(); cond.unlock() }
    func transferEnded() { cond.lock(); ended = true; cond.unlock() }
    func waitForProducer() -> Error? {
        cond.lock(); defer { cond.unlock() }
        while !done { cond.wait() }
        return error
    }
}

/// Collects a response body in memory, refusing more than `limit` bytes.
final class LimitedMemorySink: ByteSink {
    private(set) var bytes: [UInt8] = []
    let limit: Int
    let what: String
    init(limit: Int, what: String) { self.limit = limit; self.what = what }
    func write(_ b: UnsafeRawBufferPointer) throws {
        if bytes.count + b.count > limit { throw DogestryError.invalid("\(what) is larger than \(limit) bytes") }
        bytes.append(contentsOf: b)
    }
    func close() throws {}
}
