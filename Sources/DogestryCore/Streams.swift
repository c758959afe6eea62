import Foundation

/// A pull-based stream of bytes.
///
/// `read(into:)` fills at most `buffer.count` bytes and returns how many it wrote;
/// it returns 0 only at the end of the stream.
public protocol ByteSource: AnyObject {
    func read(into buffer: UnsafeMutableRawBufferPointer) throws -> Int
}

/// A source that can jump forward without reading (a regular file).
public protocol SeekableSource: ByteSource {
    /// Moves `count` bytes forward; returns false if this source cannot seek (then nothing moved).
    /// Throws if the jump would pass the end of the data.
    func skipForward(_ count: Int64) throws -> Bool
}

/// A push-based destination for bytes. `close()` flushes and finishes the stream.
public protocol ByteSink: AnyObject {
    func write(_ bytes: UnsafeRawBufferPointer) throws
    func close() throws
}

/// The chunk size used for streaming copies.
public let streamChunkSize = 1 << 20

extension ByteSource {
    /// Reads exactly `buffer.count` bytes or throws at early end of stream.
    public func readFully(into buffer: UnsafeMutableRawBufferPointer, what: String = "stream") throws {
        var off = 0
        while off < buffer.count {
            let n = try read(into: UnsafeMutableRawBufferPointer(rebasing: buffer[off...]))
            if n == 0 { throw DogestryError.corrupt("\(what): unexpected end of data") }
            off += n
        }
    }

    /// Moves `count` bytes on: a seek where the source can, else reads them past. Throws,
    /// naming `what`, when the stream ends first.
    public func skip(_ count: Int64, what: String) throws {
        if count <= 0 { return }
        if let seekable = self as? SeekableSource, try seekable.skipForward(count) { return }
        let scratch = UnsafeMutableRawBufferPointer.allocate(byteCount: 256 << 10, alignment: 16)
        defer { scratch.deallocate() }
        var left = count
        while left > 0 {
            let n = try read(into: UnsafeMutableRawBufferPointer(rebasing: scratch[0..<Int(min(Int64(scratch.count), left))]))
            if n == 0 { throw DogestryError.corrupt("\(what) ended before byte \(count)") }
            left -= Int64(n)
        }
    }

    /// Fills as much of `buffer` as the stream gives: fewer bytes only at its end (0 then).
    public func fill(_ buffer: UnsafeMutableRawBufferPointer) throws -> Int {
        var n = 0
        while n < buffer.count {
            let r = try read(into: UnsafeMutableRawBufferPointer(rebasing: buffer[n...]))
            if r == 0 { break }
            n += r
        }
        return n
    }

    /// Reads the whole stream into memory, refusing more than `limit` bytes.
    public func readAll(limit: Int, what: String) throws -> [UInt8] {
        var out = [UInt8]()
        var chunk = [UInt8](repeating: 0, count: 64 * 1024)
        while true {
            let n = try chunk.withUnsafeMutableBytes { try read(into: $0) }
            if n == 0 { break }
            if out.count + n > limit { throw DogestryError.invalid("\(what) is larger than \(limit) bytes") }
            out.append(contentsOf: chunk[0..<n])
        }
        return out
    }

    /// Copies the rest of this stream into `sink` (without closing it); returns bytes copied.
    @discardableResult
    public func copy(to sink: ByteSink, chunkSize: Int = streamChunkSize) throws -> Int64 {
        let buf = UnsafeMutableRawBufferPointer.allocate(byteCount: chunkSize, alignment: 16)
        defer { buf.deallocate() }
        var total: Int64 = 0
        while true {
            let n = try read(into: buf)
            if n == 0 { return total }
            try sink.write(UnsafeRawBufferPointer(rebasing: buf[0..<n]))
            total += Int64(n)
        }
    }

    /// Reads and discards the rest of the stream; returns bytes skipped.
    @discardableResult
    public func drain() throws -> Int64 { try copy(to: NullSink()) }
}

extension ByteSink {
    public func write(_ bytes: [UInt8]) throws { try bytes.withUnsafeBytes { try write($0) } }
    public func write(_ data: Data) throws { try data.withUnsafeBytes { try write($0) } }
    public func write(_ string: String) throws { try write(Array(string.utf8)) }
}

/// Discards everything.
public final class NullSink: ByteSink {
    public private(set) var count: Int64 = 0
    public init() {}
    public func write(_ bytes: UnsafeRawBufferPointer) throws { count += Int64(bytes.count) }
    public func close() throws {}
}

/// Collects bytes in memory (for small objects only).
public final class MemorySink: ByteSink {
    public private(set) var bytes: [UInt8] = []
    public let limit: Int
    public init(limit: Int = 64 << 20) { self.limit = limit }
    public func write(_ b: UnsafeRawBufferPointer) throws {
        if bytes.count + b.count > limit { throw DogestryError.invalid("object larger than \(limit) bytes") }
        bytes.append(contentsOf: b)
    }
    public func close() throws {}
    public var data: Data { Data(bytes) }
}

/// Reads from an in-memory buffer.
public final class MemorySource: ByteSource {
    private let bytes: [UInt8]
    private var pos = 0
    public init(_ bytes: [UInt8]) { self.bytes = bytes }
    public convenience init(_ data: Data) { self.init([UInt8](data)) }
    public convenience init(_ s: String) { self.init(Array(s.utf8)) }
    public func read(into buffer: UnsafeMutableRawBufferPointer) throws -> Int {
        let n = min(buffer.count, bytes.count - pos)
        if n <= 0 { return 0 }
        bytes.withUnsafeBytes { src in
            buffer.baseAddress!.copyMemory(from: src.baseAddress! + pos, byteCount: n)
        }
        pos += n
        return n
    }
}

/// Counts the bytes that pass through to an inner sink.
public final class CountingSink: ByteSink {
    public let inner: ByteSink
    public private(set) var count: Int64 = 0
    public init(_ inner: ByteSink) { self.inner = inner }
    public func write(_ b: UnsafeRawBufferPointer) throws { count += Int64(b.count); try inner.write(b) }
    public func close() throws { try inner.close() }
}

/// Sends every write to several sinks.
public final class TeeSink: ByteSink {
    public let sinks: [ByteSink]
    public init(_ sinks: [ByteSink]) { self.sinks = sinks }
    public func write(_ b: UnsafeRawBufferPointer) throws { for s in sinks { try s.write(b) } }
    public func close() throws { for s in sinks { try s.close() } }
}

/// A source limited to the first `limit` bytes of another source.
public final class LimitedSource: ByteSource {
    let inner: ByteSource
    public private(set) var remaining: Int64
    public init(_ inner: ByteSource, limit: Int64) { self.inner = inner; self.remaining = limit }
    public func read(into buffer: UnsafeMutableRawBufferPointer) throws -> Int {
        if remaining <= 0 || buffer.count == 0 { return 0 }
        let want = Int(min(Int64(buffer.count), remaining))
        let n = try inner.read(into: UnsafeMutableRawBufferPointer(rebasing: buffer[0..<want]))
        if n == 0 { throw DogestryError.corrupt("unexpected end of data (\(remaining) bytes missing)") }
        remaining -= Int64(n)
        return n
    }
}

/// Passes a source through while hashing what is read.
public final class HashingSource: ByteSource {
    let inner: ByteSource
    public let hasher = SHA256Hasher()
    public private(set) var count: Int64 = 0
    public init(_ inner: ByteSource) { self.inner = inner }
    public func read(into buffer: UnsafeMutableRawBufferPointer) throws -> Int {
        let n = try inner.read(into: buffer)
        if n > 0 { hasher.update(UnsafeRawBufferPointer(rebasing: buffer[0..<n])); count += Int64(n) }
        return n
    }
}

/// Hashes what is written and forwards it.
public final class HashingSink: ByteSink {
    public let inner: ByteSink?
    public let hasher = SHA256Hasher()
    public private(set) var count: Int64 = 0
    public init(_ inner: ByteSink? = nil) { self.inner = inner }
    public func write(_ b: UnsafeRawBufferPointer) throws {
        hasher.update(b); count += Int64(b.count)
        try inner?.write(b)
    }
    public func close() throws { try inner?.close() }
    public func digest() -> Digest { hasher.finalize() }
}
