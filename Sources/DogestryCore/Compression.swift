import CIsal
import CLZ4
import CZlib
import CZstd
import Foundation

/// Layer compression used in a repository.
public enum Compression: String, CaseIterable, Codable, Sendable {
    case zstd, lz4, gzip, none

    /// The OCI media type of a layer stored with this compression.
    ///
    /// lz4 has no standard OCI media type; dogestry uses its own (see docs/FORMAT.md).
    public var layerMediaType: String {
        switch self {
        case .zstd: return "application/vnd.oci.image.layer.v1.tar+zstd"
        case .gzip: return "application/vnd.oci.image.layer.v1.tar+gzip"
        case .none: return "application/vnd.oci.image.layer.v1.tar"
        case .lz4: return "application/vnd.dogestry.image.layer.v1.tar+lz4"
        }
    }

    /// The compression a layer media type denotes (Docker's and OCI's types are both understood).
    public init?(layerMediaType mt: String) {
        switch mt {
        case "application/vnd.oci.image.layer.v1.tar+zstd": self = .zstd
        case "application/vnd.oci.image.layer.v1.tar+gzip",
             "application/vnd.docker.image.rootfs.diff.tar.gzip": self = .gzip
        case "application/vnd.oci.image.layer.v1.tar",
             "application/vnd.docker.image.rootfs.diff.tar": self = .none
        case "application/vnd.dogestry.image.layer.v1.tar+lz4": self = .lz4
        default: return nil
        }
    }

    /// The default level for each algorithm (fast settings: dogestry favours throughput).
    public var defaultLevel: Int {
        switch self { case .zstd: return 1; case .lz4: return 0; case .gzip: return 1; case .none: return 0 }
    }

    /// The valid level range for each algorithm.
    public var levelRange: ClosedRange<Int> {
        switch self { case .zstd: return 1...19; case .lz4: return 0...12; case .gzip: return 1...9; case .none: return 0...0 }
    }

    /// Detects compression from the first bytes of a stream (at least 4 bytes; fewer means uncompressed).
    public static func detect(_ magic: [UInt8]) -> Compression {
        if magic.count >= 4 && magic[0] == 0x28 && magic[1] == 0xB5 && magic[2] == 0x2F && magic[3] == 0xFD { return .zstd }
        if magic.count >= 4 && magic[0] == 0x04 && magic[1] == 0x22 && magic[2] == 0x4D && magic[3] == 0x18 { return .lz4 }
        if magic.count >= 2 && magic[0] == 0x1F && magic[1] == 0x8B { return .gzip }
        return .none
    }

    /// A sink that compresses what it is given into `sink`. Closing it finishes the frame and closes `sink`.
    public func compressor(into sink: ByteSink, level: Int? = nil, threads: Int = 0) throws -> ByteSink {
        let lvl = level ?? defaultLevel
        switch self {
        case .none: return sink
        case .zstd: return try ZstdCompressor(sink, level: lvl, threads: threads)
        case .lz4: return try LZ4Compressor(sink, level: lvl)
        case .gzip: return try GzipCompressor(sink, level: lvl)
        }
    }

    /// A source that decompresses `source`.
    public func decompressor(from source: ByteSource) throws -> ByteSource {
        switch self {
        case .none: return source
        case .zstd: return try ZstdDecompressor(source)
        case .lz4: return try LZ4Decompressor(source)
        case .gzip: return try GzipDecompressor(source)
        }
    }
}

/// A source whose first bytes can be inspected before they are read. It seeks when its inner
/// source does.
public final class PeekableSource: SeekableSource {
    let inner: ByteSource
    private var head: [UInt8] = []
    private var headPos = 0
    public init(_ inner: ByteSource) { self.inner = inner }

    /// Returns up to `n` leading bytes without consuming them (fewer only at end of stream).
    public func peek(_ n: Int) throws -> [UInt8] {
        if head.count - headPos >= n { return Array(head[headPos..<(headPos + n)]) }
        head = Array(head[headPos...]); headPos = 0
        var buf = [UInt8](repeating: 0, count: n - head.count)
        var got = 0
        while got < buf.count {
            let r = try buf.withUnsafeMutableBytes { try inner.read(into: UnsafeMutableRawBufferPointer(rebasing: $0[got...])) }
            if r == 0 { break }
            got += r
        }
        head.append(contentsOf: buf[0..<got])
        return head
    }

    public func read(into buffer: UnsafeMutableRawBufferPointer) throws -> Int {
        if headPos < head.count {
            let n = min(buffer.count, head.count - headPos)
            head.withUnsafeBytes { buffer.baseAddress!.copyMemory(from: $0.baseAddress! + headPos, byteCount: n) }
            headPos += n
            return n
        }
        return try inner.read(into: buffer)
    }

    public func skipForward(_ count: Int64) throws -> Bool {
        guard let seekable = inner as? SeekableSource else { return false }
        let buffered = Int64(head.count - headPos)
        if count <= buffered { headPos += Int(count); return true }
        guard try seekable.skipForward(count - buffered) else { return false }
        headPos = head.count
        return true
    }
}

/// Wraps `source` in the decompressor its magic bytes call for; returns the detected compression too.
public func autoDecompress(_ source: ByteSource) throws -> (ByteSource, Compression) {
    let p = PeekableSource(source)
    let c = Compression.detect(try p.peek(4))
    return (try c.decompressor(from: p), c)
}

// MARK: - zstd

final class ZstdCompressor: ByteSink {
    let sink: ByteSink
    let ctx: OpaquePointer
    let out: UnsafeMutableRawBufferPointer
    init(_ sink: ByteSink, level: Int, threads: Int) throws {
        self.sink = sink
        guard let c = ZSTD_createCCtx() else { throw DogestryError.io("zstd: cannot allocate a compression context") }
        ctx = c
        ZSTD_CCtx_setParameter(ctx, ZSTD_c_compressionLevel, Int32(level))
        ZSTD_CCtx_setParameter(ctx, ZSTD_c_checksumFlag, 1)
        if threads > 1 {
            ZSTD_CCtx_setParameter(ctx, ZSTD_c_nbWorkers, Int32(threads))
            // 1.5 MiB jobs instead of level 1's 2 MiB: the jobs' input and output buffers are most
            // of what a multi-threaded compression holds, so this takes ~5 MiB off a push's peak
            // memory for no measurable time (1 MiB would take ~9 MiB but cost 6 %; BENCHMARKS.md).
            ZSTD_CCtx_setParameter(ctx, ZSTD_c_jobSize, 3 << 19)
        }
        out = .allocate(byteCount: ZSTD_CStreamOutSize(), alignment: 16)
    }
    deinit { ZSTD_freeCCtx(ctx); out.deallocate() }

    private func pump(_ bytes: UnsafeRawBufferPointer, _ mode: ZSTD_EndDirective) throws {
        var input = ZSTD_inBuffer(src: bytes.baseAddress, size: bytes.count, pos: 0)
        while true {
            var output = ZSTD_outBuffer(dst: out.baseAddress, size: out.count, pos: 0)
            let r = ZSTD_compressStream2(ctx, &output, &input, mode)
            if ZSTD_isError(r) != 0 { throw DogestryError.io("zstd: " + String(cString: ZSTD_getErrorName(r))) }
            if output.pos > 0 { try sink.write(UnsafeRawBufferPointer(rebasing: out[0..<output.pos])) }
            if mode == ZSTD_e_end ? r == 0 : input.pos == input.size { return }
        }
    }
    func write(_ bytes: UnsafeRawBufferPointer) throws { if bytes.count > 0 { try pump(bytes, ZSTD_e_continue) } }
    func close() throws { try pump(UnsafeRawBufferPointer(start: nil, count: 0), ZSTD_e_end); try sink.close() }
}

final class ZstdDecompressor: ByteSource {
    let compressed: DecoderInput
    let ctx: OpaquePointer
    var input: ZSTD_inBuffer
    /// The decoder's last hint: 0 when a frame has just been completed. Starts non-zero so that an
    /// empty input (no frame at all) is reported as truncated, as `zstd -d` does.
    var lastResult = 1
    init(_ source: ByteSource) throws {
        guard let c = ZSTD_createDCtx() else { throw DogestryError.io("zstd: cannot allocate a decompression context") }
        ctx = c
        compressed = DecoderInput(source, size: ZSTD_DStreamInSize())
        input = ZSTD_inBuffer(src: compressed.buffer.baseAddress, size: 0, pos: 0)
    }
    deinit { ZSTD_freeDCtx(ctx) }
    func read(into buffer: UnsafeMutableRawBufferPointer) throws -> Int {
        if buffer.count == 0 { return 0 }
        while true {
            if let n = try compressed.refill(pending: input.size - input.pos) { input = ZSTD_inBuffer(src: compressed.buffer.baseAddress, size: n, pos: 0) }
            if input.pos == input.size && compressed.eof {
                // Flush anything still buffered in the decoder.
                var output = ZSTD_outBuffer(dst: buffer.baseAddress, size: buffer.count, pos: 0)
                var empty = ZSTD_inBuffer(src: nil, size: 0, pos: 0)
                let r = ZSTD_decompressStream(ctx, &output, &empty)
                if ZSTD_isError(r) != 0 { throw DogestryError.corrupt("zstd stream is corrupt: " + String(cString: ZSTD_getErrorName(r))) }
                if output.pos > 0 { lastResult = r; return output.pos }
                if lastResult != 0 { throw DogestryError.corrupt("zstd stream is truncated") }
                return 0
            }
            var output = ZSTD_outBuffer(dst: buffer.baseAddress, size: buffer.count, pos: 0)
            let r = ZSTD_decompressStream(ctx, &output, &input)
            if ZSTD_isError(r) != 0 { throw DogestryError.corrupt("zstd stream is corrupt: " + String(cString: ZSTD_getErrorName(r))) }
            lastResult = r
            if output.pos > 0 { return output.pos }
        }
    }
}

// MARK: - compressed input

/// The compressed side of every streaming decoder here: a buffer read from `source` again once the
/// decoder has used all of it, and whether `source` has ended.
final class DecoderInput {
    private let source: ByteSource
    let buffer: UnsafeMutableRawBufferPointer
    private(set) var eof = false

    init(_ source: ByteSource, size: Int = 256 << 10) {
        self.source = source
        buffer = .allocate(byteCount: size, alignment: 16)
    }
    deinit { buffer.deallocate() }

    /// When the decoder has nothing left unread (`pending` is 0) and the source has more, reads
    /// the next chunk into `buffer` and returns its length; nil otherwise.
    func refill(pending: Int) throws -> Int? {
        guard pending == 0, !eof else { return nil }
        let n = try source.read(into: buffer)
        if n == 0 { eof = true; return nil }
        return n
    }
}

// MARK: - lz4 (frame format)

final class LZ4Compressor: ByteSink {
    let sink: ByteSink
    var ctx: OpaquePointer?
    var prefs = LZ4F_preferences_t()
    var out: UnsafeMutableRawBufferPointer
    let blockInput = 64 * 1024
    init(_ sink: ByteSink, level: Int) throws {
        self.sink = sink
        var c: OpaquePointer?
        if LZ4F_isError(LZ4F_createCompressionContext(&c, UInt32(LZ4F_VERSION))) != 0 { throw DogestryError.io("lz4: cannot allocate a context") }
        ctx = c
        prefs.compressionLevel = Int32(level)
        prefs.frameInfo.contentChecksumFlag = LZ4F_contentChecksumEnabled
        prefs.frameInfo.blockSizeID = LZ4F_max4MB
        prefs.autoFlush = 0
        let cap = LZ4F_compressBound(blockInput, &prefs) + 64
        out = .allocate(byteCount: max(cap, 1 << 16), alignment: 16)
        let n = LZ4F_compressBegin(ctx, out.baseAddress, out.count, &prefs)
        if LZ4F_isError(n) != 0 { throw DogestryError.io("lz4: " + String(cString: LZ4F_getErrorName(n))) }
        try sink.write(UnsafeRawBufferPointer(rebasing: out[0..<n]))
    }
    deinit { LZ4F_freeCompressionContext(ctx); out.deallocate() }
    func write(_ bytes: UnsafeRawBufferPointer) throws {
        var off = 0
        while off < bytes.count {
            let len = min(blockInput, bytes.count - off)
            let n = LZ4F_compressUpdate(ctx, out.baseAddress, out.count, bytes.baseAddress! + off, len, nil)
            if LZ4F_isError(n) != 0 { throw DogestryError.io("lz4: " + String(cString: LZ4F_getErrorName(n))) }
            if n > 0 { try sink.write(UnsafeRawBufferPointer(rebasing: out[0..<n])) }
            off += len
        }
    }
    func close() throws {
        let n = LZ4F_compressEnd(ctx, out.baseAddress, out.count, nil)
        if LZ4F_isError(n) != 0 { throw DogestryError.io("lz4: " + String(cString: LZ4F_getErrorName(n))) }
        try sink.write(UnsafeRawBufferPointer(rebasing: out[0..<n]))
        try sink.close()
    }
}

final class LZ4Decompressor: ByteSource {
    let compressed: DecoderInput
    var ctx: OpaquePointer?
    var inPos = 0, inLen = 0
    var eof: Bool { compressed.eof }
    var lastHint = 1
    init(_ source: ByteSource) throws {
        var c: OpaquePointer?
        if LZ4F_isError(LZ4F_createDecompressionContext(&c, UInt32(LZ4F_VERSION))) != 0 { throw DogestryError.io("lz4: cannot allocate a context") }
        ctx = c
        compressed = DecoderInput(source)
    }
    deinit { LZ4F_freeDecompressionContext(ctx) }
    func read(into buffer: UnsafeMutableRawBufferPointer) throws -> Int {
        if buffer.count == 0 { return 0 }
        let inBuf = compressed.buffer
        while true {
            if let n = try compressed.refill(pending: inLen - inPos) { inLen = n; inPos = 0 }
            // A completed frame (hint 0) followed by the end of input is a clean end. (Calling
            // LZ4F_decompress again here would return the next frame header's size as the hint.)
            if eof && inPos == inLen && lastHint == 0 { return 0 }
            var dstSize = buffer.count
            var srcSize = inLen - inPos
            let hint = LZ4F_decompress(ctx, buffer.baseAddress, &dstSize, inBuf.baseAddress! + inPos, &srcSize, nil)
            if LZ4F_isError(hint) != 0 { throw DogestryError.corrupt("lz4 stream is corrupt: " + String(cString: LZ4F_getErrorName(hint))) }
            inPos += srcSize
            lastHint = hint
            if dstSize > 0 { return dstSize }
            if eof && inPos == inLen {
                if lastHint != 0 { throw DogestryError.corrupt("lz4 stream is truncated") }
                return 0
            }
        }
    }
}

// MARK: - gzip (zlib)

final class GzipCompressor: ByteSink {
    let sink: ByteSink
    var strm = z_stream()
    let out: UnsafeMutableRawBufferPointer
    init(_ sink: ByteSink, level: Int) throws {
        self.sink = sink
        out = .allocate(byteCount: 256 * 1024, alignment: 16)
        let r = deflateInit2_(&strm, Int32(level), Z_DEFLATED, 31, 8, Z_DEFAULT_STRATEGY, ZLIB_VERSION, Int32(MemoryLayout<z_stream>.size))
        if r != Z_OK { throw DogestryError.io("gzip: deflateInit failed (\(r))") }
    }
    deinit { deflateEnd(&strm); out.deallocate() }
    private func pump(_ bytes: UnsafeRawBufferPointer, flush: Int32) throws {
        strm.next_in = UnsafeMutablePointer(mutating: bytes.baseAddress?.assumingMemoryBound(to: UInt8.self))
        strm.avail_in = UInt32(bytes.count)
        while true {
            strm.next_out = out.baseAddress!.assumingMemoryBound(to: UInt8.self)
            strm.avail_out = UInt32(out.count)
            let r = deflate(&strm, flush)
            if r == Z_STREAM_ERROR { throw DogestryError.io("gzip: deflate failed") }
            let n = out.count - Int(strm.avail_out)
            if n > 0 { try sink.write(UnsafeRawBufferPointer(rebasing: out[0..<n])) }
            if flush == Z_FINISH { if r == Z_STREAM_END { return } } else if strm.avail_in == 0 && strm.avail_out != 0 { return }
        }
    }
    func write(_ bytes: UnsafeRawBufferPointer) throws {
        var off = 0
        while off < bytes.count {  // avail_in is 32-bit
            let len = min(bytes.count - off, 1 << 30)
            try pump(UnsafeRawBufferPointer(rebasing: bytes[off..<(off + len)]), flush: Z_NO_FLUSH)
            off += len
        }
    }
    func close() throws { try pump(UnsafeRawBufferPointer(start: nil, count: 0), flush: Z_FINISH); try sink.close() }
}

/// Inflates a gzip stream (every member of a multi-member one) with ISA-L's igzip, which runs
/// 2-3x faster than zlib's inflate on the same input and checks each member's CRC-32 and size.
final class GzipDecompressor: ByteSource {
    let compressed: DecoderInput
    let state: UnsafeMutablePointer<inflate_state>
    var eof: Bool { compressed.eof }
    var inMember = true  // inside a gzip member that has not ended (at the start one is expected: empty input is truncated)
    init(_ source: ByteSource) throws {
        compressed = DecoderInput(source)
        state = .allocate(capacity: 1)
        isal_inflate_init(state)
        state.pointee.crc_flag = UInt32(ISAL_GZIP)
    }
    deinit { state.deallocate() }
    func read(into buffer: UnsafeMutableRawBufferPointer) throws -> Int {
        if buffer.count == 0 { return 0 }
        while true {
            if let n = try compressed.refill(pending: Int(state.pointee.avail_in)) {
                state.pointee.next_in = compressed.buffer.baseAddress!.assumingMemoryBound(to: UInt8.self)
                state.pointee.avail_in = UInt32(n)
            }
            if !inMember {
                // The last member ended: more input is a following member, none is the end.
                if state.pointee.avail_in == 0 { return 0 }
                isal_inflate_reset(state)
                state.pointee.crc_flag = UInt32(ISAL_GZIP)
                inMember = true
            }
            state.pointee.next_out = buffer.baseAddress!.assumingMemoryBound(to: UInt8.self)
            state.pointee.avail_out = UInt32(min(buffer.count, Int(UInt32.max)))
            let before = Int(state.pointee.avail_out)
            let r = isal_inflate(state)
            let produced = before - Int(state.pointee.avail_out)
            guard r == ISAL_DECOMP_OK else { throw DogestryError.corrupt("gzip stream is corrupt (\(Self.describe(r)))") }
            if state.pointee.block_state == ISAL_BLOCK_FINISH { inMember = false }
            if produced > 0 { return produced }
            // No input left and the member did not end (igzip's own buffered bits were drained).
            if inMember && state.pointee.avail_in == 0 && eof { throw DogestryError.corrupt("gzip stream is truncated") }
        }
    }

    static func describe(_ r: Int32) -> String {
        switch r {
        case ISAL_INVALID_BLOCK: return "invalid deflate block"
        case ISAL_INVALID_SYMBOL: return "invalid deflate symbol"
        case ISAL_INVALID_LOOKBACK: return "invalid back-reference distance"
        case ISAL_INVALID_WRAPPER: return "not a gzip header"
        case ISAL_UNSUPPORTED_METHOD: return "unsupported compression method"
        case ISAL_INCORRECT_CHECKSUM: return "CRC-32 or size check failed"
        case ISAL_NEED_DICT: return "needs a preset dictionary"
        default: return "igzip error \(r)"
        }
    }
}
