import DogestryCore
import Foundation

/// Why the layer store could not give a layer; a push then asks the engine for an export instead.
public struct LayerStoreUnusable: Error, Sendable, CustomStringConvertible {
    public var reason: String
    public init(_ reason: String) { self.reason = reason }
    public var description: String { reason }
}

/// Reads image layers and configs straight from a local Docker Engine's image store, the way the
/// engine itself assembles them for `docker save`, without waiting for the export.
///
/// Docker 20.10's `/images/get` copies every layer of an export into a temporary directory before
/// it sends the first byte: for a 1 GB layer that is seconds of waiting in which nothing can be
/// compressed. The engine keeps each layer as its files (`overlay2/<cache-id>/diff`) plus the
/// layer's original tar headers and padding (`tar-split.json.gz`, vbatts/tar-split), from which it
/// rebuilds the layer tar byte for byte. This type does the same from the files when dogestry runs
/// beside the engine and may read its data root.
///
/// Nothing read here is trusted: a config must hash to its image ID, and the caller checks that a
/// layer stream hashes to its diffID before it stores anything. Any surprise is a
/// `LayerStoreUnusable`, on which the caller falls back to the engine's export.
public final class DockerLayerStore: @unchecked Sendable {  // (immutable after init)
    /// The engine's data root (`DockerRootDir`) and storage driver.
    public let root: String
    public let driver: String
    let imageDir: String

    /// Storage drivers whose layer files sit in one plain directory per layer.
    static let drivers: Set<String> = ["overlay2", "vfs"]

    /// The store of an engine whose `/info` reported `root` and `driver`; nil when the driver's
    /// layout is not one this reads or the image store cannot be read from here.
    public init?(root: String, driver: String) {
        guard root.hasPrefix("/"), Self.drivers.contains(driver) else { return nil }
        self.root = root; self.driver = driver
        imageDir = root + "/image/" + driver
        guard access(imageDir + "/layerdb/sha256", R_OK | X_OK) == 0,
              access(imageDir + "/imagedb/content/sha256", R_OK | X_OK) == 0 else { return nil }
    }

    /// The config of image `id`, checked against its digest.
    public func config(_ id: Digest) throws -> [UInt8] {
        let bytes = try small(imageDir + "/imagedb/content/sha256/" + id.hex, limit: RepositoryLimits.metadataBytes)
        guard Digest.of(bytes) == id else { throw LayerStoreUnusable("the image store's config of \(id.short) does not hash to its ID") }
        return bytes
    }

    /// One layer as the engine would export it: its tar stream, and the stream's length.
    /// `chainID` names the layer in the store; its recorded diffID must be `diffID`.
    public func layer(chainID: Digest, diffID: Digest) throws -> (source: ByteSource, size: Int64) {
        let dir = imageDir + "/layerdb/sha256/" + chainID.hex
        let recorded = String(decoding: try small(dir + "/diff", limit: 200), as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
        guard recorded == diffID.description else { throw LayerStoreUnusable("layer \(chainID.short) of the image store records diffID \(recorded)") }
        let cacheID = String(decoding: try small(dir + "/cache-id", limit: 200), as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
        guard !cacheID.isEmpty, cacheID.allSatisfy({ $0.isLetter || $0.isNumber || $0 == "-" || $0 == "_" }) else {
            throw LayerStoreUnusable("layer \(chainID.short) has an unusable cache-id")
        }
        let files = driver == "vfs" ? root + "/vfs/dir/" + cacheID : root + "/" + driver + "/" + cacheID + "/diff"
        let split = dir + "/tar-split.json.gz"
        // A first pass over the (small) tar-split gives the stream's length and checks its names.
        var size: Int64 = 0
        let scan = try TarSplitReader(path: split)
        while let e = try scan.next() {
            switch e {
            case .segment(let b): size += Int64(b.count)
            case .file(let path, let n): _ = try TarSplitSource.components(path); size += n
            }
        }
        return (try TarSplitSource(reader: try TarSplitReader(path: split), files: files), size)
    }

    func small(_ path: String, limit: Int) throws -> [UInt8] {
        do {
            return try FileSource(regularFile: path, what: path).readAll(limit: limit, what: path)
        } catch let e as DogestryError {
            throw LayerStoreUnusable(e.message)
        }
    }
}

/// The entries of a `tar-split.json.gz`: one JSON object a line, either raw bytes of the tar
/// (`type` 2, `payload` base64: headers, padding, the end blocks) or a file whose content comes
/// from the layer's files (`type` 1, `name` or `name_raw`, `size`).
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

    func next() throws -> Entry? {
        while true {
            guard let line = try readLine() else { return nil }
            if line.allSatisfy({ $0 == 0x20 || $0 == 0x0d }) { continue }
            return try Self.parse(line)
        }
    }

    static func parse(_ line: [UInt8]) throws -> Entry {
        guard let obj = try? JSONSerialization.jsonObject(with: Data(line)) as? [String: Any], let type = obj["type"] as? Int else {
            throw LayerStoreUnusable("tar-split holds a line that is not an entry")
        }
        func bytes(_ key: String) -> [UInt8]? {
            guard let s = obj[key] as? String, let d = Data(base64Encoded: s) else { return nil }
            return [UInt8](d)
        }
        switch type {
        case 2:
            guard obj["payload"] is NSNull || obj["payload"] == nil else {
                guard let p = bytes("payload") else { throw LayerStoreUnusable("tar-split segment with an unreadable payload") }
                return .segment(p)
            }
            return .segment([])
        case 1:
            let size = (obj["size"] as? NSNumber)?.int64Value ?? 0
            guard size >= 0 else { throw LayerStoreUnusable("tar-split file entry with a negative size") }
            if let raw = bytes("name_raw") { return .file(path: raw, size: size) }
            guard let n = obj["name"] as? String else { throw LayerStoreUnusable("tar-split file entry without a name") }
            return .file(path: Array(n.utf8), size: size)
        default:
            throw LayerStoreUnusable("tar-split entry of unknown type \(type)")
        }
    }

    private func readLine() throws -> [UInt8]? {
        while true {
            if let nl = buf[start..<end].firstIndex(of: 0x0a) {
                let line = Array(buf[start..<nl]); start = nl + 1
                return line
            }
            if eof {
                guard start < end else { return nil }
                let line = Array(buf[start..<end]); start = end
                return line
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

/// A layer's tar stream rebuilt from tar-split and the layer's files. A file is opened one
/// component at a time without following links, so nothing outside the layer's directory is
/// read, and must be a regular file of the recorded size.
final class TarSplitSource: ByteSource {
    private let reader: TarSplitReader
    private let files: String
    private var segment: [UInt8] = [], segOff = 0
    private var file: FileSource?
    private var fileLeft: Int64 = 0
    private var fileName = ""

    init(reader: TarSplitReader, files: String) throws {
        self.reader = reader; self.files = files
        guard access(files, R_OK | X_OK) == 0 else { throw LayerStoreUnusable("cannot read the layer files at \(files)") }
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

    func read(into buffer: UnsafeMutableRawBufferPointer) throws -> Int {
        guard buffer.count > 0 else { return 0 }
        while true {
            if segOff < segment.count {
                let n = min(buffer.count, segment.count - segOff)
                segment.withUnsafeBytes { buffer.baseAddress!.copyMemory(from: $0.baseAddress! + segOff, byteCount: n) }
                segOff += n
                return n
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
                    let n = try f.read(into: UnsafeMutableRawBufferPointer(rebasing: buffer[0..<Int(min(Int64(buffer.count), fileLeft))]))
                    if n == 0 { throw LayerStoreUnusable("\(fileName) in the layer files is shorter than its tar header says") }
                    fileLeft -= Int64(n)
                    return n
                } catch let e as DogestryError {
                    throw LayerStoreUnusable("cannot read \(fileName) in the layer files: \(e.message)")
                }
            }
            guard let e = try reader.next() else { return 0 }
            switch e {
            case .segment(let b): segment = b; segOff = 0
            case .file(let path, let size):
                guard size > 0 else { continue }
                try open(path, size: size)
            }
        }
    }

    private func open(_ path: [UInt8], size: Int64) throws {
        let comps = try Self.components(path)
        fileName = String(decoding: path, as: UTF8.self)
        func unusable(_ why: String) -> LayerStoreUnusable { LayerStoreUnusable("cannot open \(fileName) in the layer files: \(why)") }
        var dir = Glibc.open(files, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        guard dir >= 0 else { throw LayerStoreUnusable("cannot open the layer files at \(files)") }
        defer { close(dir) }
        // Directories one component at a time, never through a link; then the file, which
        // `FileSource` opens only if it is a regular file (a FIFO cannot hang it).
        for c in comps.dropLast() {
            let next = (c + [0]).withUnsafeBufferPointer { b in
                b.withMemoryRebound(to: CChar.self) { openat(dir, $0.baseAddress!, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_DIRECTORY) }
            }
            guard next >= 0 else { throw unusable(String(cString: strerror(errno))) }
            close(dir); dir = next
        }
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
