import DogestryCore
import Foundation
import NIOCore
import NIOHTTP1
import NIOPosix
import NIOSSL

/// Where and how `serve` listens.
public struct ServerOptions: Sendable {
    public var host = "127.0.0.1"
    public var port = 5000
    /// PEM certificate chain and key: HTTPS instead of HTTP.
    public var tlsCert: String?
    public var tlsKey: String?
    /// PEM CA bundle: clients must present a certificate it signed (mTLS).
    public var tlsClientCA: String?
    /// Print an access line per request.
    public var accessLog = true
    /// Threads that read the remote for responses (each streams one response at a time).
    public var workers = 64
    public init() {}
}

/// An HTTP/1.1 server (SwiftNIO) answering the pull side of the OCI Distribution API from a
/// `RegistryFrontEnd`. Requests are read on the event loops; each response is made and streamed
/// on a worker thread, which reads the remote with dogestry's blocking streams and writes at
/// most a few chunks ahead of what the socket has taken (memory stays bounded per response).
public final class RegistryServer: @unchecked Sendable {  // (mutable state is guarded by `state`)
    public let frontEnd: RegistryFrontEnd
    public let options: ServerOptions
    let log: @Sendable (String) -> Void
    let warn: @Sendable (String) -> Void
    let group: MultiThreadedEventLoopGroup
    let pool: NIOThreadPool
    private var serverChannel: Channel?
    private let state = NSCondition()
    private var inFlight = 0
    private var stopping = false
    /// Chunk size of streamed bodies and how many may wait in the socket's queue.
    static let chunk = 256 << 10
    static let ahead = 4

    public init(frontEnd: RegistryFrontEnd, options: ServerOptions,
                log: @escaping @Sendable (String) -> Void, warn: @escaping @Sendable (String) -> Void) {
        self.frontEnd = frontEnd; self.options = options; self.log = log; self.warn = warn
        group = MultiThreadedEventLoopGroup(numberOfThreads: max(1, min(4, System.coreCount)))
        pool = NIOThreadPool(numberOfThreads: max(1, options.workers))
    }

    /// Binds the listening socket; returns the address it listens on (`host:port`).
    public func start() throws -> String {
        let ssl: NIOSSLContext? = try makeTLSContext()
        pool.start()
        let bootstrap = ServerBootstrap(group: group)
            .serverChannelOption(ChannelOptions.backlog, value: 256)
            .serverChannelOption(ChannelOptions.socketOption(.so_reuseaddr), value: 1)
            .childChannelOption(ChannelOptions.socketOption(.tcp_nodelay), value: 1)
            .childChannelInitializer { [self] channel in
                channel.eventLoop.makeCompletedFuture {
                    let sync = channel.pipeline.syncOperations
                    if let ssl { try sync.addHandler(NIOSSLServerHandler(context: ssl)) }
                    try sync.configureHTTPServerPipeline(withErrorHandling: true)
                    try sync.addHandler(IdleStateHandler(allTimeout: .seconds(120)))
                    try sync.addHandler(RequestHandler(server: self))
                }
            }
        let ch: Channel
        do { ch = try bootstrap.bind(host: options.host, port: options.port).wait() } catch {
            pool.shutdownGracefully { _ in }
            try? group.syncShutdownGracefully()
            throw DogestryError(.io, "cannot listen on \(Self.show(options.host)):\(options.port): \(Self.describe(error))")
        }
        serverChannel = ch
        let port = ch.localAddress?.port ?? options.port
        return "\(Self.show(options.host)):\(port)"
    }

    /// `host` as it stands in a URL or `host:port` (an IPv6 address in brackets).
    public static func show(_ host: String) -> String { host.contains(":") ? "[\(host)]" : host }

    static func describe(_ error: Error) -> String {
        if let e = error as? IOError {
            switch e.errnoCode {
            case EADDRINUSE: return "the address is already in use"
            case EACCES: return "permission denied"
            case EADDRNOTAVAIL: return "the address is not one of this host's"
            default: return String(cString: strerror(e.errnoCode))
            }
        }
        return "\(error)"
    }

    func makeTLSContext() throws -> NIOSSLContext? {
        guard let certPath = options.tlsCert else {
            if options.tlsKey != nil { throw DogestryError.invalid("--tls-key needs --tls-cert") }
            if options.tlsClientCA != nil { throw DogestryError.invalid("--tls-client-ca needs --tls-cert and --tls-key") }
            return nil
        }
        guard let keyPath = options.tlsKey else { throw DogestryError.invalid("--tls-cert needs --tls-key") }
        let chain: [NIOSSLCertificate]
        do { chain = try NIOSSLCertificate.fromPEMFile(certPath) } catch {
            throw DogestryError.invalid("cannot read TLS certificate \(certPath): \(FileManager.default.isReadableFile(atPath: certPath) ? "not a PEM certificate" : "no such readable file")")
        }
        guard !chain.isEmpty else { throw DogestryError.invalid("TLS certificate \(certPath) holds no PEM certificate") }
        let key: NIOSSLPrivateKey
        do { key = try NIOSSLPrivateKey(file: keyPath, format: .pem) } catch {
            throw DogestryError.invalid("cannot read TLS key \(keyPath): \(FileManager.default.isReadableFile(atPath: keyPath) ? "not a PEM private key" : "no such readable file")")
        }
        var config = TLSConfiguration.makeServerConfiguration(certificateChain: chain.map { .certificate($0) }, privateKey: .privateKey(key))
        if let ca = options.tlsClientCA {
            let roots: [NIOSSLCertificate]
            do { roots = try NIOSSLCertificate.fromPEMFile(ca) } catch {
                throw DogestryError.invalid("cannot read TLS client CA \(ca): \(FileManager.default.isReadableFile(atPath: ca) ? "not a PEM certificate" : "no such readable file")")
            }
            guard !roots.isEmpty else { throw DogestryError.invalid("TLS client CA \(ca) holds no PEM certificate") }
            config.trustRoots = .certificates(roots)
            config.certificateVerification = .noHostnameVerification
        }
        do { return try NIOSSLContext(configuration: config) } catch {
            throw DogestryError.invalid("TLS certificate \(certPath) and key \(keyPath) cannot be used together: \(error)")
        }
    }

    /// Blocks until `stop()` has finished.
    public func wait() {
        try? serverChannel?.closeFuture.wait()
        state.lock()
        while !stopping || inFlight > 0 { state.wait() }
        state.unlock()
        pool.shutdownGracefully { _ in }
        try? group.syncShutdownGracefully()
    }

    /// Stops accepting connections; the responses being sent finish, then `wait()` returns.
    public func stop() {
        state.lock(); stopping = true; state.broadcast(); state.unlock()
        serverChannel?.close(promise: nil)
    }

    var isStopping: Bool { state.lock(); defer { state.unlock() }; return stopping }

    func begin() { state.lock(); inFlight += 1; state.unlock() }
    func end() { state.lock(); inFlight -= 1; state.broadcast(); state.unlock() }

    // MARK: answering

    /// A response before its body is written.
    struct Response {
        var status: HTTPResponseStatus
        var headers = HTTPHeaders()
        var body: Body = .empty
        enum Body { case empty, bytes([UInt8]), stream(() throws -> ByteSource, Int64) }
        var length: Int64 {
            switch body { case .empty: return 0; case .bytes(let b): return Int64(b.count); case .stream(_, let n): return n }
        }
    }

    /// Answers one request on a worker thread: makes the response, writes it, logs it.
    func serve(_ head: HTTPRequestHead, channel: Channel) {
        let started = DispatchTime.now()
        let target = head.uri.split(separator: "?", maxSplits: 1, omittingEmptySubsequences: false)
        let path = String(target.first ?? "")
        var response = respond(head, path: path, query: Query(target.count > 1 ? target[1] : nil))
        let keepAlive = head.isKeepAlive && !isStopping
        response.headers.replaceOrAdd(name: "Docker-Distribution-API-Version", value: "registry/2.0")
        response.headers.replaceOrAdd(name: "Connection", value: keepAlive ? "keep-alive" : "close")
        if response.headers["Content-Length"].isEmpty {
            response.headers.replaceOrAdd(name: "Content-Length", value: String(response.length))
        }
        var sent: Int64 = 0
        var failure: String? = nil
        let headOnly = head.method == .HEAD
        do {
            _ = channel.write(HTTPServerResponsePart.head(HTTPResponseHead(version: head.version, status: response.status, headers: response.headers)))
            if !headOnly {
                switch response.body {
                case .empty: break
                case .bytes(let b):
                    var buf = channel.allocator.buffer(capacity: b.count)
                    buf.writeBytes(b)
                    _ = channel.write(HTTPServerResponsePart.body(.byteBuffer(buf)))
                    sent = Int64(b.count)
                case .stream(let open, let length):
                    sent = try stream(open, length: length, to: channel)
                }
            }
            // Every byte has been handed over: a client that closes as soon as it has them all
            // (the end of an HTTP/1.1 body writes nothing) has its response.
            try? channel.writeAndFlush(HTTPServerResponsePart.end(nil)).wait()
            if !keepAlive { channel.close(promise: nil) }
        } catch {
            // The body could not be completed: closing the connection mid-body tells the client.
            channel.close(promise: nil)
            failure = (error as? DogestryError)?.message ?? (error as? RegistryError)?.message ?? "\(error)"
        }
        let ms = (DispatchTime.now().uptimeNanoseconds - started.uptimeNanoseconds) / 1_000_000
        if options.accessLog {
            log("\(head.method.rawValue) \(Route.printable(path)) \(response.status.code) \(sent) \(ms)ms\(failure.map { " aborted: \($0)" } ?? "")")
        } else if let failure {
            warn("\(head.method.rawValue) \(Route.printable(path)): response aborted: \(failure)")
        }
    }

    /// Streams a body of `length` bytes, each chunk written only once the next one was read (so
    /// a blob that fails its digest check at the end never arrives whole). Returns bytes sent.
    func stream(_ open: () throws -> ByteSource, length: Int64, to channel: Channel) throws -> Int64 {
        let source = try open()
        var pending: [EventLoopFuture<Void>] = []
        var held: ByteBuffer? = nil
        var total: Int64 = 0, sent: Int64 = 0
        while true {
            var buf = channel.allocator.buffer(capacity: Self.chunk)
            var eof = false
            try buf.writeWithUnsafeMutableBytes(minimumWritableBytes: Self.chunk) { ptr in
                let n = try source.fill(UnsafeMutableRawBufferPointer(rebasing: ptr[0..<Self.chunk]))
                eof = n < Self.chunk
                return n
            }
            total += Int64(buf.readableBytes)
            if total > length { throw DogestryError.corrupt("the body is longer than its \(length) bytes") }
            if let h = held {
                sent += Int64(h.readableBytes)
                pending.append(channel.writeAndFlush(HTTPServerResponsePart.body(.byteBuffer(h))))
                if pending.count >= Self.ahead { try pending.removeFirst().wait() }
            }
            held = buf.readableBytes > 0 ? buf : nil
            if eof { break }
        }
        guard total == length else { throw DogestryError.corrupt("the body ended after \(total) of its \(length) bytes") }
        if let h = held {
            sent += Int64(h.readableBytes)
            pending.append(channel.writeAndFlush(HTTPServerResponsePart.body(.byteBuffer(h))))
        }
        for f in pending { try f.wait() }
        return sent
    }

    func respond(_ head: HTTPRequestHead, path: String, query: Query) -> Response {
        do {
            let route = try Route.parse(path)
            guard head.method == .GET || head.method == .HEAD else { return readOnly("\(head.method.rawValue) is") }
            switch route {
            case .write:
                return readOnly("uploads are")
            case .base:
                return json(Array("{}".utf8))
            case .catalog:
                let names = try frontEnd.catalog()
                let (page, next) = try paginate(names, query: query)
                var r = json(jsonBytes(["repositories": page]))
                if let next { r.headers.add(name: "Link", value: "</v2/_catalog?n=\(page.count)&last=\(next)>; rel=\"next\"") }
                return r
            case .tags(let name):
                let (_, tags) = try frontEnd.tagList(name: name, ns: query["ns"])
                let (page, next) = try paginate(tags, query: query)
                struct Tags: Encodable { var name: String; var tags: [String] }
                var r = json(jsonBytes(Tags(name: name, tags: page)))
                if let next { r.headers.add(name: "Link", value: "</v2/\(name)/tags/list?n=\(page.count)&last=\(next)>; rel=\"next\"") }
                return r
            case .manifest(let name, let reference):
                let m = try frontEnd.manifest(name: name, ns: query["ns"], reference: reference,
                                              client: ClientCapabilities(userAgent: head.headers.first(name: "User-Agent")))
                let etag = "\"\(m.digest)\""
                var r = Response(status: .ok)
                r.headers.add(name: "Docker-Content-Digest", value: m.digest.description)
                r.headers.add(name: "ETag", value: etag)
                if head.headers["If-None-Match"].contains(where: { $0.split(separator: ",").contains { $0.trimmingCharacters(in: .whitespaces) == etag } }) {
                    r.status = .notModified
                    r.headers.add(name: "Content-Length", value: "0")
                    return r
                }
                r.headers.add(name: "Content-Type", value: m.mediaType)
                r.body = .bytes(m.bytes)
                return r
            case .blob(let name, let digest):
                let answer = try frontEnd.blob(name: name, ns: query["ns"], digest: digest)
                var r = Response(status: .ok)
                r.headers.add(name: "Docker-Content-Digest", value: answer.digest.description)
                if case .redirect(let url, _, _) = answer {
                    r.status = .temporaryRedirect
                    r.headers.add(name: "Location", value: url)
                    return r
                }
                r.headers.add(name: "Content-Type", value: "application/octet-stream")
                r.headers.add(name: "Accept-Ranges", value: "bytes")
                r.headers.add(name: "ETag", value: "\"\(answer.digest)\"")
                let size = answer.size
                let fe = frontEnd
                switch ByteRange.parse(head.headers.first(name: "Range"), size: size) {
                case .none:
                    r.body = .stream({ try fe.open(answer) }, size)
                case .unsatisfiable:
                    r.status = .rangeNotSatisfiable
                    r.headers.add(name: "Content-Range", value: "bytes */\(size)")
                case .satisfiable(let start, let end):
                    let count = end - start + 1
                    r.status = .partialContent
                    r.headers.add(name: "Content-Range", value: "bytes \(start)-\(end)/\(size)")
                    if start == 0 && count == size {
                        r.body = .stream({ try fe.open(answer) }, size)
                    } else {
                        r.body = .stream({ LimitedSource(try fe.open(answer, offset: start), limit: count) }, count)
                    }
                }
                return r
            }
        } catch let e as RegistryError {
            return error(e)
        } catch let e as DogestryError {
            let mapped: RegistryError
            switch e.kind {
            case .notFound: mapped = RegistryError(404, "NOT_FOUND", e.message)
            case .invalidInput: mapped = RegistryError(400, "UNSUPPORTED", e.message)
            case .corrupt: mapped = RegistryError(500, "UNKNOWN", e.message)
            default: mapped = RegistryError.unavailable(e.message)
            }
            warn("\(head.method.rawValue) \(Route.printable(path)): \(e.message)")
            return error(mapped)
        } catch {
            warn("\(head.method.rawValue) \(Route.printable(path)): \(error)")
            return self.error(RegistryError(500, "UNKNOWN", "\(error)"))
        }
    }

    func paginate(_ all: [String], query: Query) throws -> ([String], String?) {
        var items = all
        if let last = query["last"], !last.isEmpty { items = items.filter { $0 > last } }
        guard let nText = query["n"] else { return (items, nil) }
        guard let n = Int(nText), n >= 0 else { throw RegistryError(400, "PAGINATION_NUMBER_INVALID", "invalid number of results \(Route.printable(nText))") }
        if items.count <= n { return (items, nil) }
        let page = Array(items.prefix(n))
        return (page, page.last)
    }

    func json(_ bytes: [UInt8]) -> Response {
        var r = Response(status: .ok)
        r.headers.add(name: "Content-Type", value: "application/json")
        r.body = .bytes(bytes)
        return r
    }

    /// 405 `UNSUPPORTED` for a write (`what` is "PUT is", "uploads are").
    func readOnly(_ what: String) -> Response {
        var r = error(RegistryError(405, "UNSUPPORTED", "this registry is read-only (dogestry serve): \(what) not allowed"))
        r.headers.add(name: "Allow", value: "GET, HEAD")
        return r
    }

    func error(_ e: RegistryError) -> Response {
        var r = Response(status: HTTPResponseStatus(statusCode: e.status))
        r.headers.add(name: "Content-Type", value: "application/json")
        r.body = .bytes(e.body)
        return r
    }
}

/// Reads requests on the event loop and hands each, once whole, to a worker thread. The HTTP
/// pipeline handler holds back pipelined requests until the previous response has ended.
final class RequestHandler: ChannelInboundHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart
    let server: RegistryServer
    var head: HTTPRequestHead?
    var busy = false

    init(server: RegistryServer) { self.server = server }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let h): head = h
        case .body: break   // bodies are never used: every method that sends one is refused
        case .end:
            guard let h = head else { return }
            head = nil
            busy = true
            let channel = context.channel
            let server = self.server
            let loop = context.eventLoop
            let handler = NIOLoopBound(self, eventLoop: loop)
            server.begin()
            server.pool.submit { state in
                if state == .active { server.serve(h, channel: channel) } else { channel.close(promise: nil) }
                server.end()
                loop.execute { handler.value.busy = false }
            }
        }
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if event is IdleStateHandler.IdleStateEvent, !busy { context.close(promise: nil); return }
        context.fireUserInboundEventTriggered(event)
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) {
        context.close(promise: nil)
    }
}
