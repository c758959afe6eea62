import DogestryCore
import Foundation

/// The entries of a `tar-split.json.gz`: one JSON object a line, either raw bytes of the tar
/// (`type` 2, `payload` base64: headers, padding, the end blocks) or a file whose content comes
/// from the layer's files (`type` 1, `name` or `name_raw`, `size`).
///
/// A layer of many small files has two lines a file (100,000 files: 200,000 lines, 116 MB of
/// JSON), and the push reads the lines once for the stream's length and once to stream, so the
/// lines are read by `TarSplitLine`, which knows only this flat shape, not by a general JSON
/// parser that builds a dictionary a line.
final class TarSplitReader {
    enum Entry { case segment([UInt8]), file(path: [UInt8], size: Int64) }

    private let source: ByteSource
    private var buf = [UInt8](repeating: 0, count: 256 << 10)
    private var start = 0, end = 0, eof = false
    /// A tar-split line holds one header's worth of bytes; far longer ones are not tar-split.
    static let maxLine = 4 << 20

    init(path: String) throws {
        let file: ByteSource
        do { file = try FileSource(regularFile: path, what: path) } catch let e as DogestryError { throw LayerStoreUnusable(e.message) }
        source = try Compression.gzip.decompressor(from: file)
    }

    /// The next entry, its payload or name decoded.
    func next() throws -> Entry? {
        guard let line = try nextLine() else { return nil }
        return try line.entry()
    }

    /// The number of bytes the next entry adds to the tar stream, without decoding its payload;
    /// a file's name is checked as the stream will check it.
    func nextLength() throws -> Int64? {
        guard let line = try nextLine() else { return nil }
        if line.type == 2 { return Int64(try line.payloadLength()) }
        // Not a segment: a file entry, or entry() throws for the unknown type.
        guard case .file(let path, let size) = try line.entry() else { return 0 }
        _ = try TarSplitSource.components(path)
        return size
    }

    private func nextLine() throws -> TarSplitLine? {
        while true {
            guard let r = try readLine() else { return nil }
            let line = try buf.withUnsafeBufferPointer { try TarSplitLine(UnsafeBufferPointer(rebasing: $0[r])) }
            if let line { return line }  // nil: a blank line
        }
    }

    /// The next line's range in `buf`, valid until the next call.
    private func readLine() throws -> Range<Int>? {
        while true {
            if let nl = buf[start..<end].firstIndex(of: 0x0a) {
                defer { start = nl + 1 }
                return start..<nl
            }
            if eof {
                guard start < end else { return nil }
                defer { start = end }
                return start..<end
            }
            if start > 0 { buf.replaceSubrange(0..<(end - start), with: buf[start..<end]); end -= start; start = 0 }
            if end == buf.count {
                guard buf.count < Self.maxLine else { throw LayerStoreUnusable("tar-split line longer than \(Self.maxLine) bytes") }
                buf += [UInt8](repeating: 0, count: buf.count)
            }
            let n = try buf.withUnsafeMutableBytes { try source.read(into: UnsafeMutableRawBufferPointer(rebasing: $0[end...])) }
            if n == 0 { eof = true } else { end += n }
        }
    }
}

/// One tar-split line, parsed: a flat JSON object whose values are strings, integers, `null`,
/// `true` or `false` (the shape tar-split writes). Anything else — nesting, fractions, bad
/// escapes, trailing bytes — is a `LayerStoreUnusable`, on which the push exports instead.
struct TarSplitLine {
    var type: Int64?
    var size: Int64?
    var name: [UInt8]?
    /// The base64 text of `name_raw` and `payload` (nil when absent or `null`).
    var nameRaw: [UInt8]?
    var payload: [UInt8]?

    static let notAnEntry = LayerStoreUnusable("tar-split holds a line that is not an entry")

    /// Nil for a line of only blanks.
    init?(_ p: UnsafeBufferPointer<UInt8>) throws {
        var i = 0
        func blanks() { while i < p.count, p[i] == 0x20 || p[i] == 0x09 || p[i] == 0x0d { i += 1 } }
        func expect(_ c: UInt8) throws { guard i < p.count, p[i] == c else { throw Self.notAnEntry }; i += 1 }
        blanks()
        if i == p.count { return nil }
        try expect(0x7b)  // {
        blanks()
        if i < p.count, p[i] == 0x7d { i += 1 } else {
            while true {
                blanks()
                try expect(0x22)
                let key = try Self.string(p, &i)
                blanks(); try expect(0x3a); blanks()  // :
                guard i < p.count else { throw Self.notAnEntry }
                switch p[i] {
                case 0x22:
                    i += 1
                    let s = try Self.string(p, &i)
                    switch key {
                    case Self.kName: name = s
                    case Self.kNameRaw: nameRaw = s
                    case Self.kPayload: payload = s
                    case Self.kType, Self.kSize: throw Self.notAnEntry
                    default: break
                    }
                case 0x2d, 0x30...0x39:
                    let n = try Self.integer(p, &i)
                    switch key {
                    case Self.kType: type = n
                    case Self.kSize: size = n
                    case Self.kName, Self.kNameRaw, Self.kPayload: throw Self.notAnEntry
                    default: break
                    }
                case 0x6e: try Self.word(p, &i, Self.null); if key == Self.kPayload { payload = nil } else if key == Self.kNameRaw { nameRaw = nil }
                case 0x74: try Self.word(p, &i, Self.true)
                case 0x66: try Self.word(p, &i, Self.false)
                default: throw Self.notAnEntry
                }
                blanks()
                guard i < p.count else { throw Self.notAnEntry }
                if p[i] == 0x2c { i += 1; continue }  // ,
                try expect(0x7d)
                break
            }
        }
        blanks()
        guard i == p.count, type != nil else { throw Self.notAnEntry }
    }

    static let kType = Array("type".utf8), kSize = Array("size".utf8), kName = Array("name".utf8)
    static let kNameRaw = Array("name_raw".utf8), kPayload = Array("payload".utf8)
    static let null = Array("null".utf8), `true` = Array("true".utf8), `false` = Array("false".utf8)

    /// The entry this line describes.
    func entry() throws -> TarSplitReader.Entry {
        switch type {
        case 2:
            guard let payload else { return .segment([]) }
            guard let b = Base64Bytes.decode(payload) else { throw LayerStoreUnusable("tar-split segment with an unreadable payload") }
            return .segment(b)
        case 1:
            let size = size ?? 0
            guard size >= 0 else { throw LayerStoreUnusable("tar-split file entry with a negative size") }
            if let nameRaw {
                guard let raw = Base64Bytes.decode(nameRaw) else { throw LayerStoreUnusable("tar-split file entry with an unreadable name_raw") }
                return .file(path: raw, size: size)
            }
            guard let name else { throw LayerStoreUnusable("tar-split file entry without a name") }
            return .file(path: name, size: size)
        default:
            throw LayerStoreUnusable("tar-split entry of unknown type \(type.map(String.init) ?? "?")")
        }
    }

    /// The decoded length of a segment's payload (its base64 text is checked when it streams).
    func payloadLength() throws -> Int {
        guard let payload else { return 0 }
        guard let n = Base64Bytes.decodedLength(payload) else { throw LayerStoreUnusable("tar-split segment with an unreadable payload") }
        return n
    }

    /// A JSON string's bytes, from just after its opening quote to its closing one (consumed).
    static func string(_ p: UnsafeBufferPointer<UInt8>, _ i: inout Int) throws -> [UInt8] {
        let from = i
        while i < p.count, p[i] != 0x22, p[i] != 0x5c, p[i] >= 0x20 { i += 1 }
        guard i < p.count else { throw notAnEntry }
        if p[i] == 0x22 { defer { i += 1 }; return Array(UnsafeBufferPointer(rebasing: p[from..<i])) }
        guard p[i] == 0x5c else { throw notAnEntry }  // a raw control character
        var out = Array(UnsafeBufferPointer(rebasing: p[from..<i]))
        while true {
            guard i < p.count else { throw notAnEntry }
            let c = p[i]
            if c == 0x22 { i += 1; return out }
            guard c >= 0x20 else { throw notAnEntry }
            guard c == 0x5c else { out.append(c); i += 1; continue }
            i += 1
            guard i < p.count else { throw notAnEntry }
            let e = p[i]; i += 1
            switch e {
            case 0x22, 0x5c, 0x2f: out.append(e)
            case 0x62: out.append(0x08)
            case 0x66: out.append(0x0c)
            case 0x6e: out.append(0x0a)
            case 0x72: out.append(0x0d)
            case 0x74: out.append(0x09)
            case 0x75:
                var u = try hex4(p, &i)
                if (0xD800..<0xDC00).contains(u) {
                    guard i + 1 < p.count, p[i] == 0x5c, p[i + 1] == 0x75 else { throw notAnEntry }
                    i += 2
                    let low = try hex4(p, &i)
                    guard (0xDC00..<0xE000).contains(low) else { throw notAnEntry }
                    u = 0x10000 + ((u - 0xD800) << 10) + (low - 0xDC00)
                } else if (0xDC00..<0xE000).contains(u) {
                    throw notAnEntry
                }
                out.append(contentsOf: String(Character(Unicode.Scalar(u)!)).utf8)
            default: throw notAnEntry
            }
        }
    }

    static func hex4(_ p: UnsafeBufferPointer<UInt8>, _ i: inout Int) throws -> UInt32 {
        guard i + 4 <= p.count else { throw notAnEntry }
        var v: UInt32 = 0
        for _ in 0..<4 {
            let c = p[i]; i += 1
            let d: UInt32
            switch c {
            case 0x30...0x39: d = UInt32(c - 0x30)
            case 0x41...0x46: d = UInt32(c - 0x41 + 10)
            case 0x61...0x66: d = UInt32(c - 0x61 + 10)
            default: throw notAnEntry
            }
            v = v << 4 | d
        }
        return v
    }

    /// An integer (tar-split writes no fractions or exponents); one that overflows is refused.
    static func integer(_ p: UnsafeBufferPointer<UInt8>, _ i: inout Int) throws -> Int64 {
        var negative = false
        if p[i] == 0x2d { negative = true; i += 1 }
        let from = i
        var v: Int64 = 0
        while i < p.count, (0x30...0x39).contains(p[i]) {
            let (m, o1) = v.multipliedReportingOverflow(by: 10)
            let (s, o2) = m.addingReportingOverflow(Int64(p[i] - 0x30))
            guard !o1, !o2 else { throw notAnEntry }
            v = s; i += 1
        }
        guard i > from else { throw notAnEntry }
        if i < p.count, p[i] == 0x2e || p[i] == 0x65 || p[i] == 0x45 { throw notAnEntry }
        return negative ? -v : v
    }

    static func word(_ p: UnsafeBufferPointer<UInt8>, _ i: inout Int, _ w: [UInt8]) throws {
        guard i + w.count <= p.count, p[i..<(i + w.count)].elementsEqual(w) else { throw notAnEntry }
        i += w.count
    }
}

/// Standard base64 with padding (what Go's encoding/json writes for `[]byte`).
enum Base64Bytes {
    static let table: [UInt8] = {
        var t = [UInt8](repeating: 0xff, count: 256)
        for (n, c) in "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/".utf8.enumerated() { t[Int(c)] = UInt8(n) }
        return t
    }()

    /// The decoded length of `text`, from its length and padding; nil if that shape is wrong.
    static func decodedLength(_ text: [UInt8]) -> Int? {
        guard text.count % 4 == 0 else { return nil }
        guard let last = text.last else { return 0 }
        let pad = last != 0x3d ? 0 : (text[text.count - 2] == 0x3d ? 2 : 1)
        return text.count / 4 * 3 - pad
    }

    static func decode(_ text: [UInt8]) -> [UInt8]? {
        guard let n = decodedLength(text) else { return nil }
        var out = [UInt8](); out.reserveCapacity(n)
        let t = table
        var i = 0
        while i < text.count {
            let a = t[Int(text[i])], b = t[Int(text[i + 1])]
            let last = i + 4 == text.count
            let cPad = last && text[i + 2] == 0x3d, dPad = last && text[i + 3] == 0x3d
            let c = cPad ? 0 : t[Int(text[i + 2])], d = dPad ? 0 : t[Int(text[i + 3])]
            guard a < 64, b < 64, c < 64, d < 64, !cPad || dPad else { return nil }
            out.append(a << 2 | b >> 4)
            if !cPad { out.append(b << 4 | c >> 2) }
            if !dPad { out.append(c << 6 | d) }
            i += 4
        }
        return out.count == n ? out : nil
    }
}

/// A layer's tar stream rebuilt from tar-split and the layer's files. A file is opened one
/// component at a time without following links, so nothing outside the layer's directory is
/// read, and must be a regular file of the recorded size. The directories of the last file
/// stay open, so the next file of the same directory costs one `openat`.
final class TarSplitSource: ByteSource {
    private let reader: TarSplitReader
    /// The layer's files directory, opened once.
    private let root: Int32
    /// Open directories below `root`, outermost first, with their names.
    private var dirs: [(name: [UInt8], fd: Int32)] = []
    private var segment: [UInt8] = [], segOff = 0
    private var file: FileSource?
    private var fileLeft: Int64 = 0
    private var fileName = ""

    init(reader: TarSplitReader, files: String) throws {
        self.reader = reader
        root = Glibc.open(files, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        guard root >= 0 else { throw LayerStoreUnusable("cannot read the layer files at \(files)") }
    }

    deinit {
        for d in dirs { close(d.fd) }
        close(root)
    }

    /// A tar entry's name as path components below the layer's root (`./` and `/` prefixes
    /// dropped, as the engine joins them); `..` is refused.
    static func components(_ raw: [UInt8]) throws -> [[UInt8]] {
        var out: [[UInt8]] = []
        for c in raw.split(separator: 0x2f, omittingEmptySubsequences: true) {
            if c.elementsEqual([0x2e]) { continue }
            if c.elementsEqual([0x2e, 0x2e]) || c.contains(0) { throw LayerStoreUnusable("tar-split names a file outside the layer") }
            out.append(Array(c))
        }
        guard !out.isEmpty else { throw LayerStoreUnusable("tar-split names a file with an empty path") }
        return out
    }

    /// Fills as much of `buffer` as the entries give before a file read, so a run of small
    /// headers and files goes on in one call rather than one call each.
    func read(into buffer: UnsafeMutableRawBufferPointer) throws -> Int {
        var filled = 0
        while filled < buffer.count {
            if segOff < segment.count {
                let n = min(buffer.count - filled, segment.count - segOff)
                segment.withUnsafeBytes { (buffer.baseAddress! + filled).copyMemory(from: $0.baseAddress! + segOff, byteCount: n) }
                segOff += n; filled += n
                continue
            }
            if let f = file {
                do {
                    if fileLeft == 0 {
                        // The file must end where its header said: a longer one changed since.
                        var one: UInt8 = 0
                        let extra = try withUnsafeMutableBytes(of: &one) { try f.read(into: $0) }
                        file = nil
                        if extra != 0 { throw LayerStoreUnusable("\(fileName) in the layer files is longer than its tar header says") }
                        continue
                    }
                    let want = Int(min(Int64(buffer.count - filled), fileLeft))
                    let n = try f.read(into: UnsafeMutableRawBufferPointer(rebasing: buffer[filled..<(filled + want)]))
                    if n == 0 { throw LayerStoreUnusable("\(fileName) in the layer files is shorter than its tar header says") }
                    fileLeft -= Int64(n); filled += n
                    continue
                } catch let e as DogestryError {
                    throw LayerStoreUnusable("cannot read \(fileName) in the layer files: \(e.message)")
                }
            }
            guard let e = try reader.next() else { break }
            switch e {
            case .segment(let b): segment = b; segOff = 0
            case .file(let path, let size):
                guard size > 0 else { continue }
                try open(path, size: size)
            }
        }
        return filled
    }

    private func open(_ path: [UInt8], size: Int64) throws {
        let comps = try Self.components(path)
        fileName = String(decoding: path, as: UTF8.self)
        func unusable(_ why: String) -> LayerStoreUnusable { LayerStoreUnusable("cannot open \(fileName) in the layer files: \(why)") }
        // Keep the open directories this path shares; open the rest one component at a time,
        // never through a link. Then the file, which `FileSource` opens only if it is a regular
        // file (a FIFO cannot hang it).
        let parents = comps.dropLast()
        var keep = 0
        while keep < dirs.count, keep < parents.count, dirs[keep].name == parents[parents.startIndex + keep] { keep += 1 }
        while dirs.count > keep { close(dirs.removeLast().fd) }
        for c in parents.dropFirst(keep) {
            let parent = dirs.last?.fd ?? root
            let next = (c + [0]).withUnsafeBufferPointer { b in
                b.withMemoryRebound(to: CChar.self) { openat(parent, $0.baseAddress!, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_DIRECTORY) }
            }
            guard next >= 0 else { throw unusable(String(cString: strerror(errno))) }
            dirs.append((c, next))
        }
        let dir = dirs.last?.fd ?? root
        let f: FileSource
        do {
            f = try (comps[comps.count - 1] + [0]).withUnsafeBufferPointer { b in
                try b.withMemoryRebound(to: CChar.self) { try FileSource(regularFile: $0.baseAddress!, in: dir, path: fileName, what: fileName) }
            }
        } catch let e as DogestryError { throw unusable(e.message) }
        guard f.size() == size else {
            throw LayerStoreUnusable("\(fileName) in the layer files is not a regular file of the \(size) bytes its tar header says")
        }
        file = f; fileLeft = size
    }
}
