import CBzip2
import CLzma
import Foundation

/// How a `docker save` archive handed to dogestry may be compressed as a whole: every format
/// `docker load` reads (`docker save img | gzip > img.tar.gz`), recognised by its magic bytes.
public enum ArchiveCompression: String, CaseIterable, Sendable {
    case none, gzip, bzip2, xz, zstd

    /// The most leading bytes `detect` looks at.
    public static let magicLength = 6

    /// Detects the compression from the first bytes of a stream (anything unknown is `.none`).
    public static func detect(_ magic: [UInt8]) -> ArchiveCompression {
        if magic.starts(with: [0x1F, 0x8B]) { return .gzip }
        if magic.starts(with: [0x42, 0x5A, 0x68]) { return .bzip2 }   // "BZh"
        if magic.starts(with: [0xFD, 0x37, 0x7A, 0x58, 0x5A, 0x00]) { return .xz }
        if magic.starts(with: [0x28, 0xB5, 0x2F, 0xFD]) { return .zstd }
        return .none
    }

    /// A source that decompresses `source`.
    public func decompressor(from source: ByteSource) throws -> ByteSource {
        switch self {
        case .none: return source
        case .gzip: return try GzipDecompressor(source)
        case .bzip2: return try Bzip2Decompressor(source)
        case .xz: return try XzDecompressor(source)
        case .zstd: return try ZstdDecompressor(source)
        }
    }

    /// Wraps `source` in the decompressor its magic bytes call for, and returns the compression
    /// found. Nothing is buffered beyond the magic bytes; an uncompressed source stays seekable
    /// if it was. Errors of the decompressor name the archive (`what`).
    public static func decompressing(_ source: ByteSource, what: String) throws -> (ByteSource, ArchiveCompression) {
        let p = PeekableSource(source)
        let c = detect(try p.peek(magicLength))
        if c == .none { return (p, c) }
        return (NamingErrorsSource(try c.decompressor(from: p), what: "\(what) (\(c.rawValue)-compressed)"), c)
    }
}

/// Passes reads through, prefixing the message of any `DogestryError` with `what`.
final class NamingErrorsSource: ByteSource {
    let inner: ByteSource
    let what: String
    init(_ inner: ByteSource, what: String) { self.inner = inner; self.what = what }
    func read(into buffer: UnsafeMutableRawBufferPointer) throws -> Int {
        do { return try inner.read(into: buffer) } catch let e as DogestryError {
            throw DogestryError(e.kind, "\(what): \(e.message)")
        }
    }
}

// MARK: - bzip2

/// Decompresses a bzip2 stream (several concatenated streams too, as `pbzip2` writes them).
final class Bzip2Decompressor: ByteSource {
    let compressed: DecoderInput
    var strm = bz_stream()
    var inStream = true   // inside a stream that has not ended (an empty input is truncated)

    init(_ source: ByteSource) throws {
        compressed = DecoderInput(source)
        let r = BZ2_bzDecompressInit(&strm, 0, 0)
        if r != BZ_OK { throw DogestryError.io("bzip2: cannot initialise the decoder (\(r))") }
    }
    deinit { BZ2_bzDecompressEnd(&strm) }

    func read(into buffer: UnsafeMutableRawBufferPointer) throws -> Int {
        if buffer.count == 0 { return 0 }
        while true {
            if let n = try compressed.refill(pending: Int(strm.avail_in)) {
                strm.next_in = compressed.buffer.baseAddress!.assumingMemoryBound(to: CChar.self)
                strm.avail_in = UInt32(n)
            }
            if strm.avail_in == 0 && compressed.eof {
                if inStream { throw DogestryError.corrupt("bzip2 stream is truncated") }
                return 0
            }
            strm.next_out = buffer.baseAddress!.assumingMemoryBound(to: CChar.self)
            strm.avail_out = UInt32(min(buffer.count, Int(UInt32.max)))
            let before = Int(strm.avail_out)
            inStream = true
            let r = BZ2_bzDecompress(&strm)
            let produced = before - Int(strm.avail_out)
            if r == BZ_STREAM_END {
                // A following stream, if any, continues the data: start a fresh decoder on it.
                inStream = false
                let (next, avail) = (strm.next_in, strm.avail_in)
                BZ2_bzDecompressEnd(&strm)
                strm = bz_stream()
                if BZ2_bzDecompressInit(&strm, 0, 0) != BZ_OK { throw DogestryError.io("bzip2: cannot initialise the decoder") }
                strm.next_in = next; strm.avail_in = avail
            } else if r != BZ_OK {
                throw DogestryError.corrupt("bzip2 stream is corrupt (libbz2 error \(r))")
            }
            if produced > 0 { return produced }
        }
    }
}

// MARK: - xz

/// Decompresses an xz stream (concatenated streams too), with the decoder's memory bounded.
final class XzDecompressor: ByteSource {
    /// The most memory the decoder may use; `xz -9` needs 65 MiB.
    static let memoryLimit: UInt64 = 256 << 20

    let compressed: DecoderInput
    var strm = lzma_stream()
    var eof: Bool { compressed.eof }
    var done = false

    init(_ source: ByteSource) throws {
        compressed = DecoderInput(source)
        let concatenated: UInt32 = 0x08   // LZMA_CONCATENATED
        let r = lzma_stream_decoder(&strm, Self.memoryLimit, concatenated)
        if r != LZMA_OK { throw DogestryError.io("xz: cannot initialise the decoder (\(r.rawValue))") }
    }
    deinit { lzma_end(&strm) }

    func read(into buffer: UnsafeMutableRawBufferPointer) throws -> Int {
        if buffer.count == 0 || done { return 0 }
        while true {
            if let n = try compressed.refill(pending: strm.avail_in) {
                strm.next_in = UnsafePointer(compressed.buffer.baseAddress!.assumingMemoryBound(to: UInt8.self))
                strm.avail_in = n
            }
            strm.next_out = buffer.baseAddress!.assumingMemoryBound(to: UInt8.self)
            strm.avail_out = buffer.count
            let r = lzma_code(&strm, eof ? LZMA_FINISH : LZMA_RUN)
            let produced = buffer.count - strm.avail_out
            switch r {
            case LZMA_STREAM_END:
                done = true
                return produced
            case LZMA_OK:
                break
            case LZMA_BUF_ERROR where eof && produced == 0:
                throw DogestryError.corrupt("xz stream is truncated")
            case LZMA_BUF_ERROR:
                break
            case LZMA_MEMLIMIT_ERROR:
                throw DogestryError.corrupt("xz stream needs more than \(Self.memoryLimit >> 20) MiB of memory to decompress")
            default:
                throw DogestryError.corrupt("xz stream is corrupt (liblzma error \(r.rawValue))")
            }
            if produced > 0 { return produced }
        }
    }
}
