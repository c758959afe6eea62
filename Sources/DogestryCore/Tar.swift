import Foundation

// A streaming tar reader and writer.
//
// The reader understands v7, ustar (with the prefix field), GNU (long names 'L', long links 'K',
// base-256 numbers) and PAX ('x' per-entry and 'g' global extended headers) archives. Bodies are
// never buffered: `TarReader.body` reads straight from the underlying source.
//
// The writer produces POSIX ustar headers ("ustar\0" "00", octal fields, uid/gid 0) and emits a PAX
// 'x' header in front of an entry whose name or link name does not fit ustar, or whose size or
// mtime does not fit the octal fields. GNU tar and Go's archive/tar (Docker) read its output.

/// The kind of a tar entry.
public enum TarEntryType: Equatable, Sendable {
    case file, directory, symlink, hardlink
    /// Any other type flag (character/block devices, FIFOs, contiguous files' vendor variants, ...).
    case other(UInt8)

    /// The ustar type flag byte.
    public var flag: UInt8 {
        switch self {
        case .file: return UInt8(ascii: "0")
        case .hardlink: return UInt8(ascii: "1")
        case .symlink: return UInt8(ascii: "2")
        case .directory: return UInt8(ascii: "5")
        case .other(let f): return f
        }
    }
}

/// One entry's metadata.
public struct TarHeader: Sendable {
    /// The normalized path (see `normalizeArchivePath`). The root directory entry ("./") of an
    /// archive made with `tar -C dir .` is reported as ".".
    public var name: String
    public var type: TarEntryType
    /// The body size. Always 0 for directories, symlinks and hardlinks when read.
    public var size: Int64
    public var mode: Int
    /// The link target for symlinks and hardlinks, raw as in the archive.
    public var linkName: String
    /// Modification time, seconds since the epoch.
    public var mtime: Int64

    public init(name: String, type: TarEntryType = .file, size: Int64 = 0, mode: Int = 0o644, linkName: String = "", mtime: Int64 = 0) {
        self.name = name
        self.type = type
        self.size = size
        self.mode = mode
        self.linkName = linkName
        self.mtime = mtime
    }
}

private let blockSize = 512

// MARK: - Paths

/// Validates a path found in an archive and returns it normalized (strip leading "./", collapse "//",
/// drop "." components and a trailing "/"). Throws `DogestryError.invalid` naming the archive (`what`)
/// and the path for absolute paths, any ".." component, NUL or other control characters, and empty names.
public func normalizeArchivePath(_ path: String, what: String) throws -> String {
    let comps = try archivePathComponents(path, what: what, kind: "path")
    for c in comps where c == ".." {
        throw DogestryError.invalid("\(what): path \(quotePath(path)) contains a \"..\" component")
    }
    if comps.isEmpty { throw DogestryError.invalid("\(what): empty path \(quotePath(path))") }
    return comps.joined(separator: "/")
}

/// Resolves a link target relative to the directory of `from` inside the archive; throws if it is
/// absolute, escapes the archive root, or names the root itself.
///
/// This is the resolution rule for symlinks. (Hardlink targets in tar are relative to the archive
/// root: pass them to `normalizeArchivePath` instead.)
public func resolveArchiveLink(from path: String, target: String, what: String) throws -> String {
    let fromComps = try normalizeArchivePath(path, what: what).split(separator: "/").map(String.init)
    let targetComps = try archivePathComponents(target, what: what, kind: "link target")
    var out = Array(fromComps.dropLast())
    for c in targetComps {
        if c == ".." {
            if out.isEmpty {
                throw DogestryError.invalid("\(what): link \(quotePath(path)) -> \(quotePath(target)) points outside the archive")
            }
            out.removeLast()
        } else {
            out.append(c)
        }
    }
    if out.isEmpty {
        throw DogestryError.invalid("\(what): link \(quotePath(path)) -> \(quotePath(target)) points at the archive root")
    }
    return out.joined(separator: "/")
}

/// Splits a relative path into components, dropping empty and "." components; ".." is kept.
private func archivePathComponents(_ path: String, what: String, kind: String) throws -> [String] {
    if path.isEmpty { throw DogestryError.invalid("\(what): empty \(kind)") }
    for u in path.unicodeScalars where u.value < 0x20 || u.value == 0x7F || (u.value >= 0x80 && u.value < 0xA0) {
        throw DogestryError.invalid("\(what): \(kind) \(quotePath(path)) contains a control character")
    }
    if path.hasPrefix("/") { throw DogestryError.invalid("\(what): \(kind) \(quotePath(path)) is absolute") }
    return path.split(separator: "/", omittingEmptySubsequences: true).map(String.init).filter { $0 != "." }
}

/// Quotes a path for an error message: control characters become "?", long paths are clipped.
private func quotePath(_ s: String) -> String {
    let clipped = s.count > 120 ? String(s.prefix(117)) + "..." : s
    return "\"" + clipped.unicodeScalars.map { $0.value < 32 || $0.value == 127 ? "?" : String($0) }.joined() + "\""
}

// MARK: - Reader

/// Reads a tar archive entry by entry from a stream.
public final class TarReader {
    let source: ByteSource
    let what: String
    /// Bytes consumed from `source` so far.
    private(set) var offset: Int64 = 0
    private var current: TarEntryBody?
    private var pendingPadding = 0
    private var finished = false
    private var scratch: UnsafeMutableRawBufferPointer?
    private var header = [UInt8](repeating: 0, count: blockSize)

    /// Limits for extended-header bodies, which are read into memory.
    static let maxLongNameSize: Int64 = 64 * 1024
    static let maxPAXSize: Int64 = 1 << 20

    /// Whether the end-of-archive marker makes `next()` read the rest of the source (see `next`).
    var drainsTrailer = true

    /// `what` names the archive in error messages, e.g. "archive app.tar".
    public init(_ source: ByteSource, what: String) {
        self.source = source
        self.what = what
    }

    deinit { scratch?.deallocate() }

    /// The current entry's body; reads at most `header.size` bytes; returns 0 at end of the entry.
    public var body: ByteSource { current ?? TarEntryBody(reader: nil, size: 0) }

    /// Skips any unread body of the previous entry and returns the next entry (nil at end of archive).
    ///
    /// Directory entries are returned too. At the end-of-archive marker the rest of the source
    /// (normally zero padding) is read and discarded, so a hashing source underneath sees every byte.
    /// A clean end of stream right after a complete entry is accepted as the end of the archive.
    public func next() throws -> TarHeader? {
        if finished { return nil }
        if let c = current {
            try skip(c.remaining)
            c.remaining = 0
            c.reader = nil
            current = nil
        }
        if pendingPadding > 0 { try skip(Int64(pendingPadding)); pendingPadding = 0 }

        var paxPath: String?, paxLink: String?, paxSize: Int64?, paxMtime: Int64?
        var gnuName: String?, gnuLink: String?
        while true {
            let headerOffset = offset
            guard try readHeaderBlock() else {
                // Clean end of stream between entries. Lenient: accept it unless an extended header
                // promised an entry.
                if paxPath != nil || paxLink != nil || paxSize != nil || gnuName != nil || gnuLink != nil {
                    throw truncated()
                }
                finished = true
                return nil
            }
            if header.allSatisfy({ $0 == 0 }) {
                finished = true
                if drainsTrailer { try skipToEnd() }
                return nil
            }
            try verifyChecksum(at: headerOffset)

            let flag = header[156]
            var size = try numeric(124, 12, field: "size", at: headerOffset)
            if size < 0 { throw badField("size", at: headerOffset) }
            let padded = { (n: Int64) -> Int64 in (n + 511) / 512 * 512 }

            switch flag {
            case UInt8(ascii: "L"), UInt8(ascii: "K"):
                if size > TarReader.maxLongNameSize { throw badField("long name size", at: headerOffset) }
                var bytes = try readMeta(Int(size))
                try skip(padded(size) - size)
                if let nul = bytes.firstIndex(of: 0) { bytes.removeSubrange(nul...) }
                let s = String(decoding: bytes, as: UTF8.self)
                if flag == UInt8(ascii: "L") { gnuName = s } else { gnuLink = s }
                continue
            case UInt8(ascii: "x"), UInt8(ascii: "g"):
                if size > TarReader.maxPAXSize { throw badField("extended header size", at: headerOffset) }
                let bytes = try readMeta(Int(size))
                try skip(padded(size) - size)
                let records = try parsePAX(bytes, at: headerOffset)
                if flag == UInt8(ascii: "g") { continue }  // global headers are parsed and ignored
                for (k, v) in records {
                    switch k {
                    case "path": paxPath = v.isEmpty ? nil : v
                    case "linkpath": paxLink = v.isEmpty ? nil : v
                    case "size":
                        if v.isEmpty { paxSize = nil; break }
                        guard v.utf8.allSatisfy({ $0 >= 48 && $0 <= 57 }), let n = Int64(v) else {
                            throw badField("PAX size", at: headerOffset)
                        }
                        paxSize = n
                    case "mtime":
                        if v.isEmpty { paxMtime = nil; break }
                        let intPart = v.split(separator: ".", maxSplits: 1, omittingEmptySubsequences: false)[0]
                        guard let n = Int64(intPart) else { throw badField("PAX mtime", at: headerOffset) }
                        paxMtime = n
                    default: break
                    }
                }
                continue
            default:
                break
            }

            // A real entry.
            let isUstar = header[257..<263].elementsEqual(Array("ustar\0".utf8))
            var rawName: String
            if let p = paxPath {
                rawName = p
            } else if let g = gnuName {
                rawName = g
            } else {
                let n = cString(0, 100)
                let prefix = isUstar ? cString(345, 155) : ""
                rawName = prefix.isEmpty ? n : prefix + "/" + n
            }
            let linkName = paxLink ?? gnuLink ?? cString(157, 100)
            if let s = paxSize { size = s }
            let mode = try numeric(100, 8, field: "mode", at: headerOffset)
            let mtime = try paxMtime ?? numeric(136, 12, field: "mtime", at: headerOffset)

            let type: TarEntryType
            switch flag {
            case 0: type = rawName.hasSuffix("/") ? .directory : .file
            case UInt8(ascii: "0"), UInt8(ascii: "7"): type = .file
            case UInt8(ascii: "1"): type = .hardlink
            case UInt8(ascii: "2"): type = .symlink
            case UInt8(ascii: "5"): type = .directory
            default: type = .other(flag)
            }
            // Header-only types carry no body whatever their size field says (as in Go's archive/tar).
            switch flag {
            case UInt8(ascii: "1"), UInt8(ascii: "2"), UInt8(ascii: "3"), UInt8(ascii: "4"), UInt8(ascii: "5"), UInt8(ascii: "6"):
                size = 0
            default:
                if type == .directory { size = 0 }
            }

            let name: String
            if type == .directory && isRootDirectory(rawName) {
                name = "."
            } else {
                name = try normalizeArchivePath(rawName, what: what)
            }

            let body = TarEntryBody(reader: self, size: size)
            current = body
            pendingPadding = Int((512 - size % 512) % 512)
            return TarHeader(name: name, type: type, size: size, mode: Int(mode), linkName: linkName, mtime: mtime)
        }
    }

    // MARK: internals

    fileprivate func readBody(into buffer: UnsafeMutableRawBufferPointer, remaining: Int64) throws -> Int {
        let want = Int(min(Int64(buffer.count), remaining))
        if want == 0 { return 0 }
        let n = try source.read(into: UnsafeMutableRawBufferPointer(rebasing: buffer[0..<want]))
        if n == 0 { throw truncated() }
        offset += Int64(n)
        return n
    }

    private func truncated() -> DogestryError { DogestryError.corrupt("\(what) is truncated") }

    private func badField(_ field: String, at off: Int64) -> DogestryError {
        DogestryError.corrupt("\(what): entry header at offset \(off) has an invalid \(field) field")
    }

    /// Reads one 512-byte block into `header`; false at a clean end of stream before its first byte.
    private func readHeaderBlock() throws -> Bool {
        var got = 0
        while got < blockSize {
            let n = try header.withUnsafeMutableBytes { buf in
                try source.read(into: UnsafeMutableRawBufferPointer(rebasing: buf[got...]))
            }
            if n == 0 {
                if got == 0 { return false }
                throw offset == Int64(got) ? DogestryError.corrupt("\(what) is truncated (or is not a tar archive)") : truncated()
            }
            got += n
            offset += Int64(n)
        }
        return true
    }

    private func readMeta(_ size: Int) throws -> [UInt8] {
        var out = [UInt8](repeating: 0, count: size)
        var got = 0
        while got < size {
            let n = try out.withUnsafeMutableBytes { buf in
                try source.read(into: UnsafeMutableRawBufferPointer(rebasing: buf[got...]))
            }
            if n == 0 { throw truncated() }
            got += n
            offset += Int64(n)
        }
        return out
    }

    private func scratchBuffer() -> UnsafeMutableRawBufferPointer {
        if let s = scratch { return s }
        let s = UnsafeMutableRawBufferPointer.allocate(byteCount: 256 * 1024, alignment: 16)
        scratch = s
        return s
    }

    /// Skips exactly `count` bytes of the source.
    private func skip(_ count: Int64) throws {
        var left = count
        if left <= 0 { return }
        if left >= 64 * 1024, let seekable = source as? SeekableSource {
            do {
                if try seekable.skipForward(left) { offset += left; return }
            } catch { throw truncated() }
        }
        let buf = scratchBuffer()
        while left > 0 {
            let want = Int(min(Int64(buf.count), left))
            let n = try source.read(into: UnsafeMutableRawBufferPointer(rebasing: buf[0..<want]))
            if n == 0 { throw truncated() }
            left -= Int64(n)
            offset += Int64(n)
        }
    }

    /// Reads and discards the rest of the source (the padding after the end-of-archive marker).
    private func skipToEnd() throws {
        let buf = scratchBuffer()
        while true {
            let n = try source.read(into: buf)
            if n == 0 { return }
            offset += Int64(n)
        }
    }

    private func verifyChecksum(at off: Int64) throws {
        let notTar = DogestryError.corrupt("\(what): entry header at offset \(off) is not a tar header")
        guard let stored = try? parseOctal(header[148..<156]) else { throw notTar }
        var unsigned: Int64 = 0, signed: Int64 = 0
        for i in 0..<blockSize {
            let b = (i >= 148 && i < 156) ? UInt8(ascii: " ") : header[i]
            unsigned += Int64(b)
            signed += Int64(Int8(bitPattern: b))
        }
        if stored != unsigned && stored != signed { throw notTar }
    }

    /// A NUL-terminated string field.
    private func cString(_ start: Int, _ len: Int) -> String {
        let field = header[start..<(start + len)]
        let end = field.firstIndex(of: 0) ?? field.endIndex
        return String(decoding: header[start..<end], as: UTF8.self)
    }

    /// An octal or base-256 numeric field.
    private func numeric(_ start: Int, _ len: Int, field: String, at off: Int64) throws -> Int64 {
        let f = header[start..<(start + len)]
        if f.first! & 0x80 != 0 {
            // Base-256 (GNU): big-endian two's complement; the top bit of the first byte is the marker.
            let inv: UInt8 = f.first! & 0x40 != 0 ? 0xFF : 0
            var x: UInt64 = 0
            for (i, c0) in f.enumerated() {
                var c = c0 ^ inv
                if i == 0 { c &= 0x7F }
                if x >> 56 != 0 { throw badField(field, at: off) }
                x = x << 8 | UInt64(c)
            }
            if x >> 63 != 0 { throw badField(field, at: off) }
            return inv == 0xFF ? ~Int64(x) : Int64(x)
        }
        do { return try parseOctal(f) } catch { throw badField(field, at: off) }
    }

    private struct BadNumber: Error {}

    private func parseOctal(_ f: ArraySlice<UInt8>) throws -> Int64 {
        // Trim leading and trailing spaces and NULs, then require only octal digits.
        var s = f.startIndex, e = f.endIndex
        while s < e && (f[s] == 0x20 || f[s] == 0) { s += 1 }
        while e > s && (f[e - 1] == 0x20 || f[e - 1] == 0) { e -= 1 }
        var v: Int64 = 0
        for i in s..<e {
            let b = f[i]
            guard b >= 48 && b <= 55 else { throw BadNumber() }
            if v > (Int64.max >> 3) { throw BadNumber() }
            v = v << 3 | Int64(b - 48)
        }
        return v
    }

    private func parsePAX(_ bytes: [UInt8], at off: Int64) throws -> [(String, String)] {
        var out: [(String, String)] = []
        var i = 0
        while i < bytes.count {
            if bytes[i] == 0 && bytes[i...].allSatisfy({ $0 == 0 }) { break }  // tolerate NUL padding
            // "<len> <key>=<value>\n", where len counts the whole record.
            var j = i, len = 0
            while j < bytes.count && bytes[j] >= 48 && bytes[j] <= 57 {
                len = len * 10 + Int(bytes[j] - 48)
                if len > bytes.count { throw badField("PAX record", at: off) }
                j += 1
            }
            guard j > i, j < bytes.count, bytes[j] == 0x20, len > j - i + 1, i + len <= bytes.count,
                  bytes[i + len - 1] == 0x0A else { throw badField("PAX record", at: off) }
            let rec = bytes[(j + 1)..<(i + len - 1)]
            guard let eq = rec.firstIndex(of: UInt8(ascii: "=")), eq > rec.startIndex else {
                throw badField("PAX record", at: off)
            }
            let key = String(decoding: rec[rec.startIndex..<eq], as: UTF8.self)
            let value = String(decoding: rec[(eq + 1)...], as: UTF8.self)
            out.append((key, value))
            i += len
        }
        return out
    }

    private func isRootDirectory(_ raw: String) -> Bool {
        !raw.hasPrefix("/") && !raw.isEmpty && raw.split(separator: "/").allSatisfy { $0 == "." }
    }
}

/// The body of one tar entry; reads pass straight through to the archive's source.
final class TarEntryBody: ByteSource {
    fileprivate var reader: TarReader?
    fileprivate var remaining: Int64
    fileprivate init(reader: TarReader?, size: Int64) { self.reader = reader; self.remaining = size }
    func read(into buffer: UnsafeMutableRawBufferPointer) throws -> Int {
        guard let r = reader, remaining > 0 else { return 0 }
        let n = try r.readBody(into: buffer, remaining: remaining)
        remaining -= Int64(n)
        return n
    }
}

// MARK: - Checking a tar as it streams

/// Passes a stream through unchanged while checking, as the bytes go by, that it is a tar
/// archive: every header's checksum and fields are validated by a `TarReader` reading the same
/// bytes, so a layer that is not a tar fails while it streams, naming `what`. Entry bodies go
/// straight into the caller's buffer; only headers (and extended-header bodies, at most 1 MiB)
/// are held. Whatever follows the end-of-archive marker is passed through unchecked.
public final class TarCheckingSource: ByteSource {
    /// Reads from the inner source; while `recording`, keeps a copy of what it hands out.
    private final class Tap: ByteSource {
        let inner: ByteSource
        var recording = true
        var recorded: [UInt8] = []
        init(_ inner: ByteSource) { self.inner = inner }
        func read(into buffer: UnsafeMutableRawBufferPointer) throws -> Int {
            let n = try inner.read(into: buffer)
            if recording, n > 0 { recorded.append(contentsOf: UnsafeRawBufferPointer(rebasing: buffer[0..<n])) }
            return n
        }
    }

    private let tap: Tap
    private let reader: TarReader
    private var pos = 0
    private var ended = false

    /// `what` names the stream in errors, e.g. "archive app.tar: layer abc/layer.tar".
    public init(_ inner: ByteSource, what: String) {
        tap = Tap(inner)
        reader = TarReader(tap, what: what)
        reader.drainsTrailer = false
    }

    public func read(into buffer: UnsafeMutableRawBufferPointer) throws -> Int {
        if buffer.count == 0 { return 0 }
        while true {
            if pos < tap.recorded.count {
                let n = min(buffer.count, tap.recorded.count - pos)
                tap.recorded.withUnsafeBytes { buffer.baseAddress!.copyMemory(from: $0.baseAddress! + pos, byteCount: n) }
                pos += n
                return n
            }
            tap.recorded.removeAll(keepingCapacity: true); pos = 0
            if ended { tap.recording = false; return try tap.inner.read(into: buffer) }
            tap.recording = false
            let n = try reader.body.read(into: buffer)
            if n > 0 { return n }
            tap.recording = true
            if try reader.next() == nil { ended = true }
        }
    }
}

// MARK: - Writer

/// Writes a tar archive to a sink, entry by entry.
public final class TarWriter {
    let sink: ByteSink
    private var open: TarEntrySink?
    private var finished = false
    let what = "tar output"

    /// The largest value of an 11-digit octal field (8 GiB - 1).
    static let maxOctal11: Int64 = 0o77777777777

    public init(_ sink: ByteSink) { self.sink = sink }

    /// Writes a header with no body: directories, symlinks, hardlinks, empty files (emitting a PAX 'x'
    /// header first when the name or link name does not fit ustar). Use `beginEntry`/`beginFile` for
    /// entries with a body.
    public func writeHeader(_ h: TarHeader) throws {
        if carriesBody(h.type) && h.size != 0 {
            throw DogestryError.invalid("\(what): entry \(quotePath(h.name)) has a \(h.size)-byte body; write it with beginEntry")
        }
        try writeHeaderRaw(h)
    }

    /// Writes a whole small file.
    public func writeFile(name: String, bytes: [UInt8], mode: Int = 0o644) throws {
        let s = try beginFile(name: name, size: Int64(bytes.count), mode: mode)
        try s.write(bytes)
        try s.close()
    }

    /// Starts a file of exactly `size` bytes; the returned sink must receive exactly that many bytes
    /// and then be closed (close pads to 512 and throws if the count is wrong; it does not close the
    /// underlying sink).
    public func beginFile(name: String, size: Int64, mode: Int = 0o644) throws -> ByteSink {
        try beginEntry(TarHeader(name: name, type: .file, size: size, mode: mode))
    }

    /// Like `beginFile`, for any header (mtime, type flag, ...). For header-only types the body must be empty.
    public func beginEntry(_ h: TarHeader) throws -> ByteSink {
        if !carriesBody(h.type) && h.size != 0 {
            throw DogestryError.invalid("\(what): entry \(quotePath(h.name)) of this type cannot have a body")
        }
        try writeHeaderRaw(h)
        let s = TarEntrySink(writer: self, name: h.name, size: h.size)
        open = s
        return s
    }

    /// Writes the end-of-archive marker (two zero blocks). Does not close the underlying sink.
    public func finish() throws {
        try checkState()
        finished = true
        try sink.write([UInt8](repeating: 0, count: 2 * blockSize))
    }

    // MARK: internals

    private func carriesBody(_ t: TarEntryType) -> Bool {
        switch t {
        case .file: return true
        case .directory, .symlink, .hardlink: return false
        case .other(let f): return !(f >= UInt8(ascii: "1") && f <= UInt8(ascii: "6"))
        }
    }

    private func checkState() throws {
        if finished { throw DogestryError.invalid("\(what): archive already finished") }
        if let o = open, !o.closed {
            throw DogestryError.invalid("\(what): entry \(quotePath(o.name)) was not closed before the next one")
        }
        open = nil
    }

    fileprivate func entryClosed(_ s: TarEntrySink) throws {
        let pad = Int((512 - s.size % 512) % 512)
        if pad > 0 { try sink.write([UInt8](repeating: 0, count: pad)) }
    }

    fileprivate func writeBody(_ b: UnsafeRawBufferPointer) throws { try sink.write(b) }

    private func writeHeaderRaw(_ h: TarHeader) throws {
        try checkState()
        if h.size < 0 { throw DogestryError.invalid("\(what): entry \(quotePath(h.name)) has a negative size") }
        var name = try normalizeArchivePath(h.name, what: what)
        if h.type == .directory { name += "/" }
        if h.linkName.utf8.contains(0) {
            throw DogestryError.invalid("\(what): link target of \(quotePath(h.name)) contains NUL")
        }
        if (h.type == .symlink || h.type == .hardlink) && h.linkName.isEmpty {
            throw DogestryError.invalid("\(what): link \(quotePath(h.name)) has no target")
        }

        var pax: [(String, String)] = []
        let nameBytes = Array(name.utf8)
        let split = ustarSplit(nameBytes)
        if split == nil { pax.append(("path", name)) }
        let linkBytes = Array(h.linkName.utf8)
        if linkBytes.count > 100 { pax.append(("linkpath", h.linkName)) }
        let sizeFits = h.size <= TarWriter.maxOctal11
        if !sizeFits { pax.append(("size", String(h.size))) }
        let mtimeFits = h.mtime >= 0 && h.mtime <= TarWriter.maxOctal11
        if !mtimeFits { pax.append(("mtime", String(h.mtime))) }

        if !pax.isEmpty {
            var body: [UInt8] = []
            for (k, v) in pax { body += paxRecord(k, v) }
            let base = nameBytes.split(separator: UInt8(ascii: "/")).last.map(Array.init) ?? []
            let safeBase = base.prefix(80).map { $0 < 0x20 || $0 >= 0x7F ? UInt8(ascii: "_") : $0 }
            let paxName = Array("PaxHeaders/".utf8) + safeBase
            try sink.write(ustarBlock(name: paxName, prefix: [], flag: UInt8(ascii: "x"), size: Int64(body.count),
                                      mode: 0o644, link: [], mtime: mtimeFits ? h.mtime : 0))
            try sink.write(body)
            let pad = (512 - body.count % 512) % 512
            if pad > 0 { try sink.write([UInt8](repeating: 0, count: pad)) }
        }

        let (prefix, short) = split ?? ([], truncatedUTF8(nameBytes, 100))
        try sink.write(ustarBlock(name: short, prefix: prefix, flag: h.type.flag, size: h.size, mode: h.mode,
                                  link: truncatedUTF8(linkBytes, 100), mtime: h.mtime))
    }

    /// Splits a name into ustar (prefix, name), or nil if it does not fit.
    private func ustarSplit(_ b: [UInt8]) -> ([UInt8], [UInt8])? {
        if b.count <= 100 { return ([], b) }
        if b.count > 256 { return nil }
        // The prefix is everything before some "/", at most 155 bytes; the name after it at most 100.
        var i = min(155, b.count - 1)
        while i > 0 {
            if b[i] == UInt8(ascii: "/") {
                let rest = b.count - i - 1
                if rest > 100 { return nil }
                if rest > 0 { return (Array(b[0..<i]), Array(b[(i + 1)...])) }
            }
            i -= 1
        }
        return nil
    }

    private func truncatedUTF8(_ b: [UInt8], _ max: Int) -> [UInt8] {
        if b.count <= max { return b }
        var n = max
        while n > 0 && (b[n] & 0xC0) == 0x80 { n -= 1 }  // do not cut a multi-byte character
        return Array(b[0..<n])
    }

    private func paxRecord(_ key: String, _ value: String) -> [UInt8] {
        let payload = Array(" \(key)=\(value)\n".utf8)
        var len = payload.count + 1
        while String(len).utf8.count + payload.count != len { len = String(len).utf8.count + payload.count }
        return Array(String(len).utf8) + payload
    }

    private func ustarBlock(name: [UInt8], prefix: [UInt8], flag: UInt8, size: Int64, mode: Int, link: [UInt8], mtime: Int64) -> [UInt8] {
        var b = [UInt8](repeating: 0, count: blockSize)
        func put(_ bytes: [UInt8], _ at: Int) { for (i, x) in bytes.enumerated() { b[at + i] = x } }
        func octal(_ v: Int64, _ at: Int, _ width: Int) {
            // width-1 zero-padded octal digits, then NUL.
            let s = String(v, radix: 8)
            put(Array((String(repeating: "0", count: max(0, width - 1 - s.count)) + s).utf8), at)
        }
        func base256(_ v: Int64, _ at: Int, _ width: Int) {
            var x = v  // arithmetic shifts sign-extend negative values over the whole field
            for i in stride(from: width - 1, through: 1, by: -1) { b[at + i] = UInt8(truncatingIfNeeded: x); x >>= 8 }
            b[at] = v < 0 ? 0xFF : 0x80
        }
        put(name, 0)
        octal(Int64(mode & 0o7777777), 100, 8)
        octal(0, 108, 8)  // uid
        octal(0, 116, 8)  // gid
        if size <= TarWriter.maxOctal11 { octal(size, 124, 12) } else { base256(size, 124, 12) }
        if mtime >= 0 && mtime <= TarWriter.maxOctal11 { octal(mtime, 136, 12) } else { base256(mtime, 136, 12) }
        b[156] = flag
        put(link, 157)
        put(Array("ustar\0".utf8), 257)
        put(Array("00".utf8), 263)
        octal(0, 329, 8)  // devmajor
        octal(0, 337, 8)  // devminor
        put(prefix, 345)
        // Checksum: computed with the field as spaces; written as 6 octal digits, NUL, space.
        for i in 148..<156 { b[i] = 0x20 }
        let sum = b.reduce(0) { $0 + Int($1) }
        let s = String(sum, radix: 8)
        put(Array((String(repeating: "0", count: max(0, 6 - s.count)) + s).utf8), 148)
        b[154] = 0
        b[155] = 0x20
        return b
    }
}

/// The sink for one entry's body.
final class TarEntrySink: ByteSink {
    private weak var writer: TarWriter?
    let name: String
    let size: Int64
    private(set) var written: Int64 = 0
    private(set) var closed = false

    fileprivate init(writer: TarWriter, name: String, size: Int64) {
        self.writer = writer
        self.name = name
        self.size = size
    }

    func write(_ bytes: UnsafeRawBufferPointer) throws {
        if closed { throw DogestryError.invalid("tar output: entry \(quotePath(name)) is already closed") }
        if bytes.count == 0 { return }
        if written + Int64(bytes.count) > size {
            throw DogestryError.invalid("tar output: entry \(quotePath(name)) is declared as \(size) bytes but more were written")
        }
        guard let w = writer else { throw DogestryError.invalid("tar output: writer is gone") }
        try w.writeBody(bytes)
        written += Int64(bytes.count)
    }

    func close() throws {
        if closed { return }
        if written != size {
            throw DogestryError.invalid("tar output: entry \(quotePath(name)) is declared as \(size) bytes but \(written) were written")
        }
        guard let w = writer else { throw DogestryError.invalid("tar output: writer is gone") }
        closed = true
        try w.entryClosed(self)
    }
}
