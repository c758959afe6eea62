import DogestryCore
import Foundation
import XCTest

final class CompressionTests: XCTestCase {
    static let algorithms: [Compression] = [.zstd, .lz4, .gzip, .none]
    /// 0 bytes, 1 byte, 3 MiB of random and repetitive data.
    static let samples: [[UInt8]] = [[], [0x42], TS.testBytes(3 << 20, seed: 99)]

    func compress(_ data: [UInt8], _ c: Compression, level: Int? = nil, threads: Int = 0, piece: Int = 1 << 20) throws -> [UInt8] {
        let sink = MemorySink(limit: 64 << 20)
        let z = try c.compressor(into: sink, level: level, threads: threads)
        var off = 0
        while off < data.count {
            let n = min(piece, data.count - off)
            try z.write(Array(data[off..<(off + n)]))
            off += n
        }
        try z.close()
        return sink.bytes
    }

    func decompress(_ data: [UInt8], _ c: Compression, chunk: Int? = nil, buffer: Int = 1 << 20) throws -> [UInt8] {
        var src: ByteSource = MemorySource(data)
        if let k = chunk { src = TS.ChunkedSource(src, chunk: k) }
        return try TS.readAllBytes(try c.decompressor(from: src), bufferSize: buffer)
    }

    func testRoundTripEveryAlgorithmAndSize() throws {
        for c in Self.algorithms {
            for data in Self.samples {
                let z = try compress(data, c, piece: 100_000)
                if c != .none {
                    XCTAssertEqual(Compression.detect(Array(z.prefix(4))), c, "\(c) output must carry its magic")
                }
                if data.count > 1000 && c != .none { XCTAssertLessThan(z.count, data.count * 3 / 4, "\(c) did not compress") }
                XCTAssertTrue(try decompress(z, c) == data, "\(c) \(data.count) bytes")
                // Short reads on both sides.
                XCTAssertTrue(try decompress(z, c, chunk: 1000, buffer: 777) == data, "\(c) \(data.count) bytes, short reads")
            }
            // One compressed byte at a time (on a smaller sample, to stay fast).
            let small = TS.testBytes(150_000, seed: 17)
            XCTAssertTrue(try decompress(try compress(small, c), c, chunk: 1, buffer: 1 << 16) == small, "\(c), 1-byte input reads")
        }
    }

    func testLevels() throws {
        let data = Self.samples[2]
        for c in [Compression.zstd, .lz4, .gzip] {
            for level in [c.levelRange.lowerBound, c.levelRange.upperBound > 9 ? 9 : c.levelRange.upperBound] {
                XCTAssertTrue(try decompress(try compress(data, c, level: level), c) == data, "\(c) level \(level)")
            }
            XCTAssertTrue(c.levelRange.contains(c.defaultLevel))
        }
    }

    func testZstdWithThreads() throws {
        let data = TS.testBytes(6 << 20, seed: 5)
        let z = try compress(data, .zstd, threads: 2)
        XCTAssertTrue(try decompress(z, .zstd) == data)
        let tmp = try TS.TempDir()
        try tmp.write("mt.zst", z)
        try TS.sh("zstd -q -d -c mt.zst > mt", cwd: tmp.path)
        XCTAssertTrue(try tmp.read("mt") == data)
    }

    /// The CLI tools decode our output.
    func testCLIToolsDecodeOurOutput() throws {
        let tmp = try TS.TempDir()
        let tools: [(Compression, String)] = [(.zstd, "zstd -q -d -c"), (.lz4, "lz4 -q -d -c"), (.gzip, "gzip -d -c")]
        for (c, cmd) in tools {
            for (i, data) in Self.samples.enumerated() {
                try tmp.write("in.\(c)", try compress(data, c))
                try TS.sh("\(cmd) in.\(c) > out", cwd: tmp.path)
                XCTAssertTrue(try tmp.read("out") == data, "\(cmd) on sample \(i)")
            }
        }
    }

    /// Our decoders read the CLI tools' output, including concatenated members/frames.
    func testWeDecodeCLIToolsOutput() throws {
        let tmp = try TS.TempDir()
        let a = Self.samples[2]
        let b = Array("second member\n".utf8) + TS.testBytes(200_000, seed: 3)
        try tmp.write("a", a)
        try tmp.write("b", b)
        try tmp.write("empty", [])
        let tools: [(Compression, String)] = [(.zstd, "zstd -1 -q -c"), (.lz4, "lz4 -q -c"), (.gzip, "gzip -c")]
        for (c, cmd) in tools {
            try TS.sh("\(cmd) a > a.z && \(cmd) b > b.z && \(cmd) empty > e.z && cat a.z b.z > ab.z", cwd: tmp.path)
            XCTAssertTrue(try decompress(try tmp.read("a.z"), c) == a, "\(cmd)")
            XCTAssertTrue(try decompress(try tmp.read("e.z"), c) == [], "\(cmd) of an empty file")
            // Multi-member gzip, multi-frame zstd and lz4.
            XCTAssertTrue(try decompress(try tmp.read("ab.z"), c) == a + b, "\(cmd), two concatenated streams")
            XCTAssertTrue(try decompress(try tmp.read("ab.z"), c, chunk: 4093, buffer: 10_000) == a + b, "\(cmd), concatenated, short reads")
            let (src, detected) = try autoDecompress(MemorySource(try tmp.read("ab.z")))
            XCTAssertEqual(detected, c)
            XCTAssertTrue(try TS.readAllBytes(src) == a + b)
        }
        // gzip -9 and zstd -19 too (different block types).
        try TS.sh("gzip -9 -c b > b9.gz && zstd -19 -q -c b > b19.zst && lz4 -9 -q -c b > b9.lz4", cwd: tmp.path)
        XCTAssertTrue(try decompress(try tmp.read("b9.gz"), .gzip) == b)
        XCTAssertTrue(try decompress(try tmp.read("b19.zst"), .zstd) == b)
        XCTAssertTrue(try decompress(try tmp.read("b9.lz4"), .lz4) == b)
    }

    /// Whole-archive compressions (what `docker load` reads): the CLI tools' output, concatenated
    /// streams included, is detected and decoded; a truncated stream is corrupt and says so.
    func testArchiveCompressionsDecodeCLIToolsOutput() throws {
        let tmp = try TS.TempDir()
        let a = Self.samples[2], b = Array("second stream\n".utf8)
        try tmp.write("a", a)
        try tmp.write("b", b)
        let tools: [(ArchiveCompression, String)] = [(.gzip, "gzip -c"), (.bzip2, "bzip2 -c"), (.xz, "xz -c"), (.zstd, "zstd -q -c")]
        for (c, cmd) in tools {
            try TS.sh("\(cmd) a > a.z && \(cmd) b > b.z && cat a.z b.z > ab.z", cwd: tmp.path)
            let z = try tmp.read("ab.z")
            let (src, detected) = try ArchiveCompression.decompressing(TS.ChunkedSource(MemorySource(z), chunk: 4093), what: "archive x")
            XCTAssertEqual(detected, c, cmd)
            XCTAssertTrue(try TS.readAllBytes(src, bufferSize: 10_000) == a + b, "\(cmd), two concatenated streams")
            let (cut, _) = try ArchiveCompression.decompressing(MemorySource(Array(z[0..<(z.count / 3)])), what: "archive x")
            TS.assertError(try TS.readAllBytes(cut), contains: "archive x (\(c.rawValue)-compressed): ", kind: .corrupt)
        }
        let (plain, none) = try ArchiveCompression.decompressing(MemorySource(a), what: "archive x")
        XCTAssertEqual(none, .none)
        XCTAssertTrue(try TS.readAllBytes(plain) == a)
    }

    func testDetect() {
        XCTAssertEqual(Compression.detect([0x28, 0xB5, 0x2F, 0xFD, 0x00]), .zstd)
        XCTAssertEqual(Compression.detect([0x04, 0x22, 0x4D, 0x18]), .lz4)
        XCTAssertEqual(Compression.detect([0x1F, 0x8B, 0x08, 0x00]), .gzip)
        XCTAssertEqual(Compression.detect([0x1F, 0x8B]), .gzip)
        XCTAssertEqual(Compression.detect([0x28, 0xB5, 0x2F]), .none)
        XCTAssertEqual(Compression.detect([]), .none)
        XCTAssertEqual(Compression.detect(Array("abcd".utf8)), .none)
        XCTAssertEqual(Compression.detect(Array("ustar".utf8)), .none)
    }

    func testMediaTypes() {
        for c in Compression.allCases {
            XCTAssertEqual(Compression(layerMediaType: c.layerMediaType), c)
        }
        XCTAssertEqual(Compression(layerMediaType: "application/vnd.docker.image.rootfs.diff.tar.gzip"), .gzip)
        XCTAssertNil(Compression(layerMediaType: "application/json"))
    }

    func testAutoDecompress() throws {
        let data = Self.samples[2]
        for c in Self.algorithms {
            let (src, detected) = try autoDecompress(MemorySource(try compress(data, c)))
            XCTAssertEqual(detected, c)
            XCTAssertTrue(try TS.readAllBytes(src, bufferSize: 65_536) == data, "\(c)")
        }
        // Short inputs are passed through untouched.
        for short in [[], [0x1F], [0x28, 0xB5, 0x2F], Array("abc".utf8)] as [[UInt8]] {
            let (src, detected) = try autoDecompress(MemorySource(short))
            XCTAssertEqual(detected, .none)
            XCTAssertEqual(try TS.readAllBytes(src), short)
        }
        // Peeking through a short-read source still sees all four magic bytes.
        let small = TS.testBytes(100_000, seed: 8)
        let (src, detected) = try autoDecompress(TS.ChunkedSource(MemorySource(try compress(small, .zstd)), chunk: 1))
        XCTAssertEqual(detected, .zstd)
        XCTAssertTrue(try TS.readAllBytes(src) == small)
    }

    func testPeekableSource() throws {
        let p = PeekableSource(TS.ChunkedSource(MemorySource(Array("abcdefgh".utf8)), chunk: 3))
        XCTAssertEqual(try p.peek(2), Array("ab".utf8))
        XCTAssertEqual(try p.peek(5), Array("abcde".utf8))
        XCTAssertEqual(try TS.readAllBytes(p, bufferSize: 2), Array("abcdefgh".utf8))
        let q = PeekableSource(MemorySource(Array("xy".utf8)))
        XCTAssertEqual(try q.peek(4), Array("xy".utf8))
        XCTAssertEqual(try TS.readAllBytes(q), Array("xy".utf8))
    }

    func testTruncatedInputIsCorrupt() throws {
        for c in [Compression.zstd, .lz4, .gzip] {
            for data in Self.samples {
                let z = try compress(data, c)
                var cuts = [z.count - 1, z.count / 2, 1, 0]
                if z.count > 20 { cuts.append(z.count - 5) }
                for cut in Set(cuts) where cut >= 0 && cut < z.count {
                    TS.assertError(try decompress(Array(z[0..<cut]), c), kind: .corrupt)
                }
            }
        }
        // The truncation error names the algorithm.
        let z = try compress(Self.samples[2], .gzip)
        TS.assertError(try decompress(Array(z[0..<(z.count / 2)]), .gzip), contains: "gzip stream is truncated", kind: .corrupt)
    }

    func testCorruptedInputIsAnError() throws {
        let data = Self.samples[2]
        for c in [Compression.zstd, .lz4, .gzip] {
            let z = try compress(data, c)
            for pos in [z.count / 3, z.count / 2, z.count - 3] {
                var bad = z
                bad[pos] ^= 0x5A
                bad[pos + 1] ^= 0xA5
                TS.assertError(try decompress(bad, c), kind: .corrupt)
            }
            // Trailing garbage after a complete stream.
            TS.assertError(try decompress(z + Array("garbage!".utf8), c), kind: .corrupt)
        }
        // A gzip member whose CRC-32 or size trailer disagrees with its content.
        let g = try compress(data, .gzip)
        for pos in [g.count - 8, g.count - 1] {
            var bad = g
            bad[pos] ^= 0x01
            TS.assertError(try decompress(bad, .gzip), contains: "gzip stream is corrupt (CRC-32 or size check failed)", kind: .corrupt)
        }
        // Not compressed at all.
        TS.assertError(try decompress(Array(String(repeating: "plain text ", count: 100).utf8), .zstd), kind: .corrupt)
        TS.assertError(try decompress(Array(String(repeating: "plain text ", count: 100).utf8), .gzip), kind: .corrupt)
        TS.assertError(try decompress(Array(String(repeating: "plain text ", count: 100).utf8), .lz4), kind: .corrupt)
    }

    func testCompressorClosesUnderlyingSink() throws {
        final class Tracking: ByteSink {
            var closed = 0
            func write(_ bytes: UnsafeRawBufferPointer) throws {}
            func close() throws { closed += 1 }
        }
        for c in [Compression.zstd, .lz4, .gzip] {
            let t = Tracking()
            let z = try c.compressor(into: t)
            try z.write(Array("x".utf8))
            try z.close()
            XCTAssertEqual(t.closed, 1, "\(c)")
        }
    }
}
