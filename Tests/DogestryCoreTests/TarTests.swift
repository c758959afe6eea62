import DogestryCore
import Foundation
import XCTest

final class TarTests: XCTestCase {
    struct Entry {
        var header: TarHeader
        var body: [UInt8]
    }

    /// Reads every entry of an in-memory archive, bodies included.
    func readEntries(_ bytes: [UInt8], chunk: Int? = nil, bodyBuffer: Int = 64 * 1024, what: String = "archive test.tar") throws -> [Entry] {
        var src: ByteSource = MemorySource(bytes)
        if let c = chunk { src = TS.ChunkedSource(src, chunk: c) }
        let r = TarReader(src, what: what)
        var out: [Entry] = []
        while let h = try r.next() {
            out.append(Entry(header: h, body: try TS.readAllBytes(r.body, bufferSize: bodyBuffer)))
        }
        return out
    }

    func byName(_ entries: [Entry]) -> [String: Entry] {
        var d: [String: Entry] = [:]
        for e in entries {
            XCTAssertNil(d[e.header.name], "duplicate entry \(e.header.name)")
            d[e.header.name] = e
        }
        return d
    }

    // MARK: writer -> reader

    func testWriterReaderRoundTrip() throws {
        let sink = MemorySink()
        let w = TarWriter(sink)
        let prefixName = String(repeating: "d/", count: 60) + "file"          // 124 bytes: ustar prefix split
        let paxName = String(repeating: "x", count: 200)                      // one component: needs PAX
        let longTarget = String(repeating: "../", count: 50) + "target"       // 156 bytes: PAX linkpath
        let big = TS.testBytes((1 << 20) + 7)

        try w.writeHeader(TarHeader(name: "dir", type: .directory, mode: 0o755, mtime: 1_700_000_000))
        try w.writeFile(name: "dir/hello.txt", bytes: Array("hello\n".utf8))
        try w.writeFile(name: "empty", bytes: [])
        try w.writeFile(name: prefixName, bytes: Array("prefix".utf8), mode: 0o640)
        let s = try w.beginFile(name: paxName, size: Int64(big.count), mode: 0o600)
        var off = 0
        while off < big.count {  // uneven pieces
            let n = min(big.count - off, 100_003)
            try s.write(Array(big[off..<(off + n)]))
            off += n
        }
        try s.close()
        try w.writeHeader(TarHeader(name: "link", type: .symlink, linkName: "dir/hello.txt"))
        try w.writeHeader(TarHeader(name: "hard", type: .hardlink, linkName: "dir/hello.txt"))
        try w.writeHeader(TarHeader(name: "longlink", type: .symlink, linkName: longTarget))
        let e = try w.beginEntry(TarHeader(name: "./x//y/", size: 3, mtime: -5))  // normalized; negative mtime
        try e.write(Array("abc".utf8))
        try e.close()
        try w.finish()
        XCTAssertEqual(sink.bytes.count % 512, 0)
        XCTAssertEqual(Array(sink.bytes.suffix(1024)), [UInt8](repeating: 0, count: 1024))

        for chunk in [nil, 1, 511, 513] as [Int?] {
            let entries = try readEntries(sink.bytes, chunk: chunk)
            XCTAssertEqual(entries.map(\.header.name),
                           ["dir", "dir/hello.txt", "empty", prefixName, paxName, "link", "hard", "longlink", "x/y"])
            let d = byName(entries)
            XCTAssertEqual(d["dir"]?.header.type, .directory)
            XCTAssertEqual(d["dir"]?.header.mode, 0o755)
            XCTAssertEqual(d["dir"]?.header.mtime, 1_700_000_000)
            XCTAssertEqual(d["dir/hello.txt"]?.body, Array("hello\n".utf8))
            XCTAssertEqual(d["dir/hello.txt"]?.header.mode, 0o644)
            XCTAssertEqual(d["empty"]?.header.size, 0)
            XCTAssertEqual(d["empty"]?.body, [])
            XCTAssertEqual(d[prefixName]?.body, Array("prefix".utf8))
            XCTAssertEqual(d[prefixName]?.header.mode, 0o640)
            XCTAssertEqual(d[paxName]?.header.size, Int64(big.count))
            XCTAssertEqual(d[paxName]?.header.mode, 0o600)
            XCTAssertTrue(d[paxName]?.body == big)
            XCTAssertEqual(d["link"]?.header.type, .symlink)
            XCTAssertEqual(d["link"]?.header.linkName, "dir/hello.txt")
            XCTAssertEqual(d["hard"]?.header.type, .hardlink)
            XCTAssertEqual(d["hard"]?.header.linkName, "dir/hello.txt")
            XCTAssertEqual(d["longlink"]?.header.linkName, longTarget)
            XCTAssertEqual(d["x/y"]?.body, Array("abc".utf8))
            XCTAssertEqual(d["x/y"]?.header.mtime, -5)
        }
    }

    func testWriterUsesUstarPrefixAndPAXOnlyWhenNeeded() throws {
        let sink = MemorySink()
        let w = TarWriter(sink)
        let prefixName = String(repeating: "abcdefghi/", count: 13) + "file.txt"  // 138 bytes
        try w.writeFile(name: prefixName, bytes: [1, 2, 3])
        try w.finish()
        let b = sink.bytes
        XCTAssertEqual(b[156], UInt8(ascii: "0"), "no PAX header expected for a splittable name")
        XCTAssertEqual(Array(b[257..<265]), Array("ustar\u{0}00".utf8))
        let prefix = String(decoding: b[345..<500].prefix { $0 != 0 }, as: UTF8.self)
        let name = String(decoding: b[0..<100].prefix { $0 != 0 }, as: UTF8.self)
        XCTAssertEqual(prefix + "/" + name, prefixName)

        let sink2 = MemorySink()
        let w2 = TarWriter(sink2)
        try w2.writeFile(name: String(repeating: "n", count: 101), bytes: [])
        try w2.finish()
        XCTAssertEqual(sink2.bytes[156], UInt8(ascii: "x"))
    }

    func testGNUTarReadsWriterOutput() throws {
        let tmp = try TS.TempDir()
        let sink = MemorySink()
        let w = TarWriter(sink)
        let paxName = "top/" + String(repeating: "p", count: 200)
        let prefixName = "top/" + String(repeating: "sub-directory/", count: 9) + "file.bin"
        let longTarget = String(repeating: "../", count: 40) + "nowhere"
        let big = TS.testBytes(2 << 20)
        try w.writeHeader(TarHeader(name: "top", type: .directory, mode: 0o755, mtime: 1_600_000_000))
        try w.writeFile(name: "top/small.txt", bytes: Array("small\n".utf8), mode: 0o600)
        try w.writeFile(name: paxName, bytes: Array("long name content".utf8))
        try w.writeFile(name: "top/empty", bytes: [])
        let s = try w.beginFile(name: prefixName, size: Int64(big.count))
        try s.write(big)
        try s.close()
        try w.writeHeader(TarHeader(name: "top/sym", type: .symlink, mode: 0o777, linkName: "small.txt"))
        try w.writeHeader(TarHeader(name: "top/longsym", type: .symlink, mode: 0o777, linkName: longTarget))
        try w.writeHeader(TarHeader(name: "top/hard", type: .hardlink, linkName: "top/small.txt"))
        try w.finish()
        try tmp.write("ours.tar", sink.bytes)

        let listing = try TS.run("/usr/bin/tar", ["--utc", "-tvf", tmp.file("ours.tar").path])
        let lines = listing.split(separator: "\n").map(String.init)
        XCTAssertEqual(lines.count, 8, listing)
        XCTAssertTrue(lines.contains { $0.hasPrefix("-rw-------") && $0.hasSuffix(" top/small.txt") }, listing)
        XCTAssertTrue(lines.contains { $0.hasPrefix("drwxr-xr-x") && $0.hasSuffix(" top/") }, listing)
        XCTAssertTrue(lines.contains { $0.hasSuffix(" " + paxName) }, listing)
        XCTAssertTrue(lines.contains { $0.hasSuffix(" \(prefixName)") && $0.contains(" \(big.count) ") }, listing)
        XCTAssertTrue(lines.contains { $0.hasSuffix("top/longsym -> " + longTarget) }, listing)
        XCTAssertTrue(lines.contains { $0.hasSuffix("top/hard link to top/small.txt") }, listing)
        XCTAssertTrue(lines.contains { $0.contains("2020-09-13") && $0.hasSuffix(" top/") }, listing)

        try FileManager.default.createDirectory(at: tmp.file("out"), withIntermediateDirectories: true)
        try TS.run("/usr/bin/tar", ["xf", tmp.file("ours.tar").path, "-C", tmp.file("out").path])
        XCTAssertEqual(try tmp.read("out/top/small.txt"), Array("small\n".utf8))
        XCTAssertEqual(try tmp.read("out/" + paxName), Array("long name content".utf8))
        XCTAssertEqual(try tmp.read("out/top/empty"), [])
        XCTAssertTrue(try tmp.read("out/" + prefixName) == big)
        XCTAssertEqual(try FileManager.default.destinationOfSymbolicLink(atPath: tmp.file("out/top/sym").path), "small.txt")
        XCTAssertEqual(try FileManager.default.destinationOfSymbolicLink(atPath: tmp.file("out/top/longsym").path), longTarget)
        XCTAssertEqual(try tmp.read("out/top/hard"), Array("small\n".utf8))
        let a = try FileManager.default.attributesOfItem(atPath: tmp.file("out/top/hard").path)
        XCTAssertEqual((a[.referenceCount] as? NSNumber)?.intValue, 2)
    }

    // MARK: archives made by GNU tar

    func testReadsGNUFormatLongNamesLinksAndDirectories() throws {
        let tmp = try TS.TempDir()
        let longDir = String(repeating: "long-directory-name/", count: 4)
        let longFile = longDir + String(repeating: "f", count: 60)  // 140 bytes
        let longTarget = String(repeating: "../", count: 40) + "x"
        try tmp.write("src/short.txt", Array("short\n".utf8))
        try tmp.write("src/" + longFile, Array("long\n".utf8))
        try tmp.write("src/empty", [])
        try FileManager.default.createDirectory(at: tmp.file("src/emptydir"), withIntermediateDirectories: true)
        try FileManager.default.createSymbolicLink(atPath: tmp.file("src/sym").path, withDestinationPath: "short.txt")
        try FileManager.default.createSymbolicLink(atPath: tmp.file("src/longsym").path, withDestinationPath: longTarget)
        try FileManager.default.linkItem(at: tmp.file("src/short.txt"), to: tmp.file("src/hard"))
        try TS.run("/usr/bin/tar", ["--format=gnu", "-cf", tmp.file("gnu.tar").path, "-C", tmp.file("src").path, "."])
        let raw = try tmp.read("gnu.tar")
        XCTAssertTrue(String(decoding: raw, as: UTF8.self).contains("././@LongLink"), "expected GNU long names")

        let d = byName(try readEntries(raw))
        XCTAssertEqual(d["."]?.header.type, .directory)
        XCTAssertEqual(d["short.txt"]?.header.type, d["hard"]?.header.type == .hardlink ? .file : .hardlink)
        // One of short.txt / hard is stored as a hardlink to the other (raw link name, "./" kept).
        if d["hard"]?.header.type == .hardlink {
            XCTAssertEqual(d["hard"]?.header.linkName, "./short.txt")
            XCTAssertEqual(d["hard"]?.body, [])
            XCTAssertEqual(d["short.txt"]?.body, Array("short\n".utf8))
        } else {
            XCTAssertEqual(d["short.txt"]?.header.linkName, "./hard")
            XCTAssertEqual(d["hard"]?.body, Array("short\n".utf8))
        }
        XCTAssertEqual(d[longFile]?.header.type, .file)
        XCTAssertEqual(d[longFile]?.body, Array("long\n".utf8))
        XCTAssertEqual(d["long-directory-name"]?.header.type, .directory)
        XCTAssertEqual(d[String(longDir.dropLast())]?.header.type, .directory)
        XCTAssertEqual(d["empty"]?.header.size, 0)
        XCTAssertEqual(d["empty"]?.header.type, .file)
        XCTAssertEqual(d["emptydir"]?.header.type, .directory)
        XCTAssertEqual(d["sym"]?.header.type, .symlink)
        XCTAssertEqual(d["sym"]?.header.linkName, "short.txt")
        XCTAssertEqual(d["longsym"]?.header.type, .symlink)
        XCTAssertEqual(d["longsym"]?.header.linkName, longTarget)
        XCTAssertEqual(d.count, 12)
    }

    func testReadsPAXFormatWithGlobalHeader() throws {
        let tmp = try TS.TempDir()
        let longName = String(repeating: "n", count: 180)  // one component: cannot be split
        let longTarget = String(repeating: "t", count: 150)
        try tmp.write("src/" + longName, Array("pax body".utf8))
        try FileManager.default.createSymbolicLink(atPath: tmp.file("src/sym").path, withDestinationPath: longTarget)
        try TS.run("/usr/bin/tar", ["--format=pax", "--pax-option=comment=hello", "-cf", tmp.file("pax.tar").path,
                                    "-C", tmp.file("src").path, longName, "sym"])
        let raw = try tmp.read("pax.tar")
        XCTAssertEqual(raw[156], UInt8(ascii: "g"), "expected a global header first")
        let entries = try readEntries(raw)
        XCTAssertEqual(entries.map(\.header.name), [longName, "sym"])
        XCTAssertEqual(entries[0].body, Array("pax body".utf8))
        XCTAssertEqual(entries[1].header.type, .symlink)
        XCTAssertEqual(entries[1].header.linkName, longTarget)
    }

    func testReadsUstarPrefixSplitNames() throws {
        let tmp = try TS.TempDir()
        let name = String(repeating: "abcdefghij/", count: 12) + "file.txt"  // 140 bytes
        try tmp.write("src/" + name, Array("in prefix".utf8))
        try TS.run("/usr/bin/tar", ["--format=ustar", "-cf", tmp.file("u.tar").path, "-C", tmp.file("src").path, name])
        let raw = try tmp.read("u.tar")
        XCTAssertEqual(raw[156], UInt8(ascii: "0"))
        XCTAssertNotEqual(raw[345], 0, "GNU tar should have used the prefix field")
        let entries = try readEntries(raw)
        XCTAssertEqual(entries.map(\.header.name), [name])
        XCTAssertEqual(entries[0].body, Array("in prefix".utf8))
    }

    func testBigFileSmallAndLargeReadsAndSkipping() throws {
        let tmp = try TS.TempDir()
        let big = TS.testBytes(5 << 20, seed: 42)
        try tmp.write("src/big.bin", big)
        try tmp.write("src/after.txt", Array("after".utf8))
        try TS.run("/usr/bin/tar", ["-cf", tmp.file("big.tar").path, "-C", tmp.file("src").path, "big.bin", "after.txt"])
        let raw = try tmp.read("big.tar")
        let want = Digest.of(big)

        // Large reads from a source that hands out everything at once; small body reads from a short-read source.
        for (chunk, buffer) in [(nil, 1 << 20), (nil, 4096), (777, 1000)] as [(Int?, Int)] {
            let entries = try readEntries(raw, chunk: chunk, bodyBuffer: buffer)
            XCTAssertEqual(entries.count, 2)
            XCTAssertEqual(entries[0].header.size, Int64(big.count))
            XCTAssertEqual(Digest.of(entries[0].body), want)
            XCTAssertEqual(entries[1].body, Array("after".utf8))
        }

        // Partial read, then skip the rest of the body.
        let r = TarReader(MemorySource(raw), what: "archive big.tar")
        let h = try XCTUnwrap(r.next())
        XCTAssertEqual(h.name, "big.bin")
        var three = [UInt8](repeating: 0, count: 3)
        XCTAssertEqual(try three.withUnsafeMutableBytes { try r.body.read(into: $0) }, 3)
        XCTAssertEqual(three, Array(big[0..<3]))
        let h2 = try XCTUnwrap(r.next())
        XCTAssertEqual(h2.name, "after.txt")
        XCTAssertEqual(try TS.readAllBytes(r.body), Array("after".utf8))
        XCTAssertEqual(try TS.readAllBytes(r.body), [], "body at end keeps returning 0")
        XCTAssertNil(try r.next())
        XCTAssertNil(try r.next())
    }

    func testReaderConsumesTrailingPaddingForHashing() throws {
        let tmp = try TS.TempDir()
        try tmp.write("src/a", Array("a".utf8))
        try TS.run("/usr/bin/tar", ["-cf", tmp.file("a.tar").path, "-C", tmp.file("src").path, "a"])
        let raw = try tmp.read("a.tar")
        XCTAssertEqual(raw.count, 10240, "GNU tar pads to a 10 KiB record")
        let hs = HashingSource(MemorySource(raw))
        let r = TarReader(hs, what: "archive a.tar")
        while try r.next() != nil {}
        XCTAssertEqual(hs.count, Int64(raw.count))
        XCTAssertEqual(hs.hasher.finalize(), Digest.of(raw))
    }

    func testBase256NegativeMtime() throws {
        let tmp = try TS.TempDir()
        try tmp.write("src/f", Array("hi\n".utf8))
        try TS.run("/usr/bin/tar", ["--format=gnu", "--mtime=@-2208988800", "-cf", tmp.file("n.tar").path, "-C", tmp.file("src").path, "f"])
        let raw = try tmp.read("n.tar")
        XCTAssertEqual(raw[136], 0xFF, "expected a base-256 mtime")
        let e = try readEntries(raw)
        XCTAssertEqual(e.count, 1)
        XCTAssertEqual(e[0].header.mtime, -2_208_988_800)
        XCTAssertEqual(e[0].body, Array("hi\n".utf8))
    }

    func testHugeSizeUsesPAXAndBase256() throws {
        let sink = MemorySink()
        let w = TarWriter(sink)
        let size: Int64 = 9 << 30
        _ = try w.beginFile(name: "huge", size: size)
        let raw = sink.bytes
        XCTAssertEqual(raw[156], UInt8(ascii: "x"))
        let r = TarReader(MemorySource(raw), what: "archive huge.tar")
        let h = try XCTUnwrap(r.next())
        XCTAssertEqual(h.name, "huge")
        XCTAssertEqual(h.size, size)
        TS.assertError(try r.body.drain(), contains: "archive huge.tar is truncated", kind: .corrupt)
        // The ustar header alone (without the PAX header in front) carries the size in base-256.
        let paxBlocks = 512 + (Int(String(decoding: raw[124..<135], as: UTF8.self), radix: 8)! + 511) / 512 * 512
        let ustarOnly = Array(raw[paxBlocks...])
        XCTAssertEqual(ustarOnly[124], 0x80)
        let h2 = try XCTUnwrap(TarReader(MemorySource(ustarOnly), what: "archive huge.tar").next())
        XCTAssertEqual(h2.size, size)
    }

    func testNegativeMtimeInUstarHeader() throws {
        let sink = MemorySink()
        let w = TarWriter(sink)
        try w.writeHeader(TarHeader(name: "old", type: .directory, mtime: -2_208_988_800))
        try w.writeHeader(TarHeader(name: "older", type: .directory, mtime: -1))
        try w.finish()
        // Without the PAX headers, the ustar headers alone still carry the mtime (base-256).
        var ustarOnly: [UInt8] = []
        var i = 0
        while i + 512 <= sink.bytes.count {
            let block = Array(sink.bytes[i..<(i + 512)])
            if block[156] == UInt8(ascii: "x") { i += 1024; continue }  // small PAX body: one block
            ustarOnly += block
            i += 512
        }
        let entries = try readEntries(ustarOnly)
        XCTAssertEqual(entries.map(\.header.mtime), [-2_208_988_800, -1])
        XCTAssertEqual(try readEntries(sink.bytes).map(\.header.mtime), [-2_208_988_800, -1])
        let tmp = try TS.TempDir()
        try tmp.write("neg.tar", sink.bytes)
        let listing = try TS.run("/usr/bin/tar", ["--utc", "-tvf", tmp.file("neg.tar").path])
        XCTAssertTrue(listing.contains("1900-01-01 00:00 old/"), listing)
        XCTAssertTrue(listing.contains("1969-12-31 23:59 older/"), listing)
        try tmp.write("ustar-only.tar", ustarOnly)
        let listing2 = try TS.run("/usr/bin/tar", ["--utc", "-tvf", tmp.file("ustar-only.tar").path])
        XCTAssertTrue(listing2.contains("1900-01-01 00:00 old/"), listing2)
    }

    // MARK: damaged input

    func testTruncatedArchives() throws {
        let sink = MemorySink()
        let w = TarWriter(sink)
        try w.writeFile(name: "one", bytes: TS.testBytes(3000))
        try w.writeFile(name: "two", bytes: Array("two".utf8))
        try w.writeFile(name: String(repeating: "p", count: 150), bytes: Array("pax".utf8))
        try w.finish()
        let full = sink.bytes
        // Layout: 512 header + 3072 body, 512 header + 512 body, 512 PAX header + 512 PAX body + 512 header + 512 body, 1024 end.
        XCTAssertEqual(full.count, 512 + 3072 + 1024 + 2048 + 1024)

        // Mid-body: the body read fails.
        let midBody = Array(full[0..<(512 + 1000)])
        let r1 = TarReader(MemorySource(midBody), what: "archive t.tar")
        XCTAssertEqual(try r1.next()?.name, "one")
        TS.assertError(try r1.body.drain(), contains: "archive t.tar is truncated", kind: .corrupt)
        // Mid-body, skipped by next().
        let r2 = TarReader(MemorySource(midBody), what: "archive t.tar")
        _ = try r2.next()
        TS.assertError(try r2.next(), contains: "archive t.tar is truncated", kind: .corrupt)
        // Mid-header.
        TS.assertError(try readEntries(Array(full[0..<(512 + 3072 + 100)]), what: "archive t.tar"),
                       contains: "archive t.tar is truncated", kind: .corrupt)
        // Mid-padding of the first entry.
        TS.assertError(try readEntries(Array(full[0..<(512 + 3000 + 10)]), what: "archive t.tar"),
                       contains: "is truncated", kind: .corrupt)
        // After a PAX header, before the entry it describes.
        TS.assertError(try readEntries(Array(full[0..<(512 + 3072 + 1024 + 1024)]), what: "archive t.tar"),
                       contains: "is truncated", kind: .corrupt)
        // Cleanly after a complete entry, without the end-of-archive blocks: accepted.
        let noEnd = try readEntries(Array(full[0..<(512 + 3072 + 1024)]))
        XCTAssertEqual(noEnd.map(\.header.name), ["one", "two"])
        XCTAssertEqual(noEnd[1].body, Array("two".utf8))
        // Only one of the two zero blocks: accepted.
        XCTAssertEqual(try readEntries(Array(full.dropLast(512))).count, 3)
        // Empty stream: no entries.
        XCTAssertEqual(try readEntries([]).count, 0)
    }

    func testGarbageIsNotATarArchive() throws {
        let garbage = TS.testBytes(10_000, seed: 7)
        TS.assertError(try readEntries(garbage, what: "archive junk.tar"),
                       contains: "archive junk.tar: entry header at offset 0 is not a tar header", kind: .corrupt)
        TS.assertError(try readEntries(Array("not a tar file\n".utf8), what: "archive junk.tar"),
                       contains: "archive junk.tar", kind: .corrupt)
        let text = Array(String(repeating: "hello world, this is text\n", count: 100).utf8)
        TS.assertError(try readEntries(text, what: "archive text.tar"), contains: "is not a tar header", kind: .corrupt)

        // A damaged second header is reported with its offset.
        let sink = MemorySink()
        let w = TarWriter(sink)
        try w.writeFile(name: "a", bytes: Array("a".utf8))
        try w.writeFile(name: "b", bytes: Array("b".utf8))
        try w.finish()
        var damaged = sink.bytes
        damaged[1024 + 5] ^= 0x01
        TS.assertError(try readEntries(damaged, what: "archive d.tar"),
                       contains: "archive d.tar: entry header at offset 1024 is not a tar header", kind: .corrupt)
        // A non-numeric size field (with a correct checksum) is rejected.
        var badSize = sink.bytes
        badSize.replaceSubrange(124..<136, with: Array("00000000x01\0".utf8))
        fixChecksum(&badSize, at: 0)
        TS.assertError(try readEntries(badSize, what: "archive s.tar"), contains: "archive s.tar: entry header at offset 0 has an invalid size field")
    }

    /// TarCheckingSource passes a real tar (GNU long names, PAX, trailing padding) through byte for
    /// byte, whatever the read sizes, and fails on a stream that is not a tar, as it streams.
    func testTarCheckingSource() throws {
        let tmp = try TS.TempDir()
        try tmp.write("src/" + String(repeating: "n", count: 150), TS.testBytes(300_000, seed: 5))
        try tmp.write("src/small", Array("small\n".utf8))
        for format in ["gnu", "pax", "ustar"] {
            let name = format == "ustar" ? "src/small" : "src"
            try TS.run("/usr/bin/tar", ["--format=\(format)", "-cf", tmp.file("\(format).tar").path, "-C", tmp.path, name])
            let bytes = try tmp.read("\(format).tar")
            for chunk in [1, 511, 4096, 1 << 20] {
                let src = TarCheckingSource(TS.ChunkedSource(MemorySource(bytes), chunk: chunk), what: "layer x")
                XCTAssertTrue(try TS.readAllBytes(src, bufferSize: 700) == bytes, "\(format), chunk \(chunk)")
            }
        }
        let text = Array(String(repeating: "not a tar at all\n", count: 1000).utf8)
        TS.assertError(try TS.readAllBytes(TarCheckingSource(MemorySource(text), what: "archive a.tar: layer l.tar")),
                       contains: "archive a.tar: layer l.tar: entry header at offset 0 is not a tar header", kind: .corrupt)
        // Damage in a later header is found too, and a stream cut inside an entry is truncated.
        let good = try tmp.read("gnu.tar")
        let sink = MemorySink()
        let w = TarWriter(sink)
        try w.writeFile(name: "a", bytes: Array("a".utf8))
        try w.writeFile(name: "b", bytes: Array("b".utf8))
        try w.finish()
        var damaged = sink.bytes
        damaged[1024 + 5] ^= 0x01
        TS.assertError(try TS.readAllBytes(TarCheckingSource(MemorySource(damaged), what: "l")),
                       contains: "l: entry header at offset 1024 is not a tar header", kind: .corrupt)
        TS.assertError(try TS.readAllBytes(TarCheckingSource(MemorySource(Array(good[0..<5000])), what: "l")), contains: "truncated", kind: .corrupt)
    }

    func testReaderRejectsUnsafeNames() throws {
        let tmp = try TS.TempDir()
        try tmp.write("src/sub/x", Array("x".utf8))
        try tmp.write("src/file", Array("f".utf8))
        try TS.run("/usr/bin/tar", ["-P", "-cf", tmp.file("dots.tar").path, "sub/../file"], cwd: tmp.file("src").path)
        TS.assertError(try readEntries(try tmp.read("dots.tar"), what: "archive dots.tar"),
                       contains: "archive dots.tar: path \"sub/../file\" contains a \"..\" component", kind: .invalidInput)
        try TS.run("/usr/bin/tar", ["-P", "-cf", tmp.file("abs.tar").path, tmp.file("src/file").path])
        TS.assertError(try readEntries(try tmp.read("abs.tar"), what: "archive abs.tar"), contains: "is absolute", kind: .invalidInput)
    }

    /// Recomputes the checksum of the header block at `at`.
    func fixChecksum(_ b: inout [UInt8], at: Int) {
        for i in 148..<156 { b[at + i] = 0x20 }
        let sum = b[at..<(at + 512)].reduce(0) { $0 + Int($1) }
        let s = Array(String(format: "%06o", sum).utf8)
        for (i, c) in s.enumerated() { b[at + 148 + i] = c }
        b[at + 154] = 0
    }

    // MARK: paths and links

    func testNormalizeArchivePath() throws {
        XCTAssertEqual(try normalizeArchivePath("./a//b/", what: "archive x"), "a/b")
        XCTAssertEqual(try normalizeArchivePath("a", what: "archive x"), "a")
        XCTAssertEqual(try normalizeArchivePath("a/./b", what: "archive x"), "a/b")
        XCTAssertEqual(try normalizeArchivePath("sha256/abc/layer.tar", what: "archive x"), "sha256/abc/layer.tar")
        XCTAssertEqual(try normalizeArchivePath("a..b/c..", what: "archive x"), "a..b/c..")
        TS.assertError(try normalizeArchivePath("/etc/passwd", what: "archive x.tar"), contains: "archive x.tar: path \"/etc/passwd\" is absolute", kind: .invalidInput)
        TS.assertError(try normalizeArchivePath("a/../../x", what: "archive x.tar"), contains: "archive x.tar", kind: .invalidInput)
        TS.assertError(try normalizeArchivePath("a/../../x", what: "archive x.tar"), contains: "a/../../x")
        TS.assertError(try normalizeArchivePath("../x", what: "archive x.tar"), contains: "\"..\"", kind: .invalidInput)
        TS.assertError(try normalizeArchivePath("a/..", what: "archive x.tar"), contains: "\"..\"", kind: .invalidInput)
        TS.assertError(try normalizeArchivePath("a/\u{0}b", what: "archive x.tar"), contains: "control character", kind: .invalidInput)
        TS.assertError(try normalizeArchivePath("a/b\nc", what: "archive x.tar"), contains: "control character", kind: .invalidInput)
        TS.assertError(try normalizeArchivePath("a\u{7F}", what: "archive x.tar"), contains: "control character", kind: .invalidInput)
        TS.assertError(try normalizeArchivePath("", what: "archive x.tar"), contains: "empty", kind: .invalidInput)
        TS.assertError(try normalizeArchivePath("./", what: "archive x.tar"), contains: "empty", kind: .invalidInput)
        TS.assertError(try normalizeArchivePath("//", what: "archive x.tar"), kind: .invalidInput)
    }

    func testResolveArchiveLink() throws {
        XCTAssertEqual(try resolveArchiveLink(from: "a/layer.tar", target: "../abc.tar", what: "archive x"), "abc.tar")
        XCTAssertEqual(try resolveArchiveLink(from: "a/b/c", target: "../d/./e", what: "archive x"), "a/d/e")
        XCTAssertEqual(try resolveArchiveLink(from: "top", target: "other", what: "archive x"), "other")
        XCTAssertEqual(try resolveArchiveLink(from: "./a//link", target: "x//y/", what: "archive x"), "a/x/y")
        TS.assertError(try resolveArchiveLink(from: "a/b", target: "../../x", what: "archive x.tar"),
                       contains: "archive x.tar: link \"a/b\" -> \"../../x\" points outside the archive", kind: .invalidInput)
        TS.assertError(try resolveArchiveLink(from: "a", target: "../x", what: "archive x.tar"), contains: "outside", kind: .invalidInput)
        TS.assertError(try resolveArchiveLink(from: "a/b", target: "/etc/passwd", what: "archive x.tar"), contains: "absolute", kind: .invalidInput)
        TS.assertError(try resolveArchiveLink(from: "a/b", target: "..", what: "archive x.tar"), contains: "root", kind: .invalidInput)
        TS.assertError(try resolveArchiveLink(from: "a/b", target: "c\u{0}", what: "archive x.tar"), contains: "control", kind: .invalidInput)
        TS.assertError(try resolveArchiveLink(from: "../a", target: "b", what: "archive x.tar"), kind: .invalidInput)
    }

    func testLimitedSource() throws {
        let l = LimitedSource(MemorySource(Array("abcdef".utf8)), limit: 4)
        var empty = [UInt8]()
        XCTAssertEqual(try empty.withUnsafeMutableBytes { try l.read(into: $0) }, 0, "a zero-length read is not an end of data")
        XCTAssertEqual(try TS.readAllBytes(l, bufferSize: 3), Array("abcd".utf8))
        XCTAssertEqual(l.remaining, 0)
        TS.assertError(try LimitedSource(MemorySource(Array("ab".utf8)), limit: 4).drain(), contains: "unexpected end", kind: .corrupt)
    }

    // MARK: writer misuse

    func testBeginFileWrongByteCount() throws {
        let w = TarWriter(MemorySink())
        let short = try w.beginFile(name: "short", size: 10)
        try short.write(Array("12345".utf8))
        TS.assertError(try short.close(), contains: "declared as 10 bytes but 5 were written", kind: .invalidInput)
        TS.assertError(try w.writeFile(name: "next", bytes: []), contains: "was not closed", kind: .invalidInput)

        let w2 = TarWriter(MemorySink())
        let long = try w2.beginFile(name: "long", size: 3)
        TS.assertError(try long.write(Array("1234".utf8)), contains: "declared as 3 bytes", kind: .invalidInput)
        try long.write(Array("123".utf8))
        try long.close()
        try long.close()  // idempotent
        TS.assertError(try long.write(Array("4".utf8)), contains: "closed", kind: .invalidInput)
        try w2.finish()
        TS.assertError(try w2.writeFile(name: "late", bytes: []), contains: "finished")

        let w3 = TarWriter(MemorySink())
        TS.assertError(try w3.writeHeader(TarHeader(name: "f", size: 5)), contains: "body", kind: .invalidInput)
        TS.assertError(try w3.writeHeader(TarHeader(name: "../f")), contains: "\"..\"", kind: .invalidInput)
        TS.assertError(try w3.writeHeader(TarHeader(name: "/f")), contains: "absolute", kind: .invalidInput)
        TS.assertError(try w3.writeHeader(TarHeader(name: "l", type: .symlink)), contains: "no target", kind: .invalidInput)
    }

    func testEntrySinkDoesNotCloseUnderlyingSink() throws {
        final class CloseTracking: ByteSink {
            var closed = false
            let inner = MemorySink()
            func write(_ bytes: UnsafeRawBufferPointer) throws {
                if closed { throw DogestryError.io("write after close") }
                try inner.write(bytes)
            }
            func close() throws { closed = true }
        }
        let sink = CloseTracking()
        let w = TarWriter(sink)
        let f = try w.beginFile(name: "a", size: 1)
        try f.write([7])
        try f.close()
        try w.finish()
        XCTAssertFalse(sink.closed)
        XCTAssertEqual(sink.inner.bytes.count, 512 + 512 + 1024)
        XCTAssertEqual(try readEntries(sink.inner.bytes).first?.body, [7])
    }
}
// MARK: - Shared helpers for the DogestryCore tests (used by TarTests, CompressionTests, DigestTests).

enum TS {

    /// A fresh temporary directory, removed by `cleanup`.
    final class TempDir {
        let url: URL
        init() throws {
            url = FileManager.default.temporaryDirectory.appendingPathComponent("dogestry-test-\(UUID().uuidString)")
            try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
        }
        var path: String { url.path }
        func file(_ name: String) -> URL { url.appendingPathComponent(name) }
        func write(_ name: String, _ bytes: [UInt8]) throws {
            let u = file(name)
            try FileManager.default.createDirectory(at: u.deletingLastPathComponent(), withIntermediateDirectories: true)
            try Data(bytes).write(to: u)
        }
        func read(_ name: String) throws -> [UInt8] { [UInt8](try Data(contentsOf: file(name))) }
        deinit { try? FileManager.default.removeItem(at: url) }
    }

    struct ProcessFailure: Error, CustomStringConvertible {
        var description: String
    }

    /// Runs a command (no shell unless the command is /bin/sh), failing on a non-zero exit; returns stdout.
    /// Output is collected into files so large outputs cannot deadlock a pipe.
    @discardableResult static func run(_ executable: String, _ args: [String], cwd: String? = nil) throws -> String {
        let tmp = FileManager.default.temporaryDirectory.appendingPathComponent("dogestry-run-\(UUID().uuidString)")
        _ = FileManager.default.createFile(atPath: tmp.path + ".out", contents: nil)
        _ = FileManager.default.createFile(atPath: tmp.path + ".err", contents: nil)
        defer {
            try? FileManager.default.removeItem(atPath: tmp.path + ".out")
            try? FileManager.default.removeItem(atPath: tmp.path + ".err")
        }
        let out = try FileHandle(forWritingTo: URL(fileURLWithPath: tmp.path + ".out"))
        let err = try FileHandle(forWritingTo: URL(fileURLWithPath: tmp.path + ".err"))
        let p = Process()
        p.executableURL = URL(fileURLWithPath: executable)
        p.arguments = args
        if let cwd = cwd { p.currentDirectoryURL = URL(fileURLWithPath: cwd) }
        p.standardOutput = out
        p.standardError = err
        p.standardInput = FileHandle.nullDevice
        try p.run()
        p.waitUntilExit()
        try out.close(); try err.close()
        let stdout = String(decoding: (try? Data(contentsOf: URL(fileURLWithPath: tmp.path + ".out"))) ?? Data(), as: UTF8.self)
        let stderr = String(decoding: (try? Data(contentsOf: URL(fileURLWithPath: tmp.path + ".err"))) ?? Data(), as: UTF8.self)
        if p.terminationStatus != 0 {
            throw ProcessFailure(description: "\(executable) \(args.joined(separator: " ")) exited \(p.terminationStatus): \(stderr)")
        }
        return stdout
    }

    /// Runs a shell command line.
    @discardableResult static func sh(_ command: String, cwd: String? = nil) throws -> String { try run("/bin/sh", ["-c", command], cwd: cwd) }

    /// Deterministic test data: pseudo-random bytes interleaved with highly repetitive runs.
    static func testBytes(_ count: Int, seed: UInt64 = 0x9E3779B97F4A7C15) -> [UInt8] {
        var out = [UInt8](repeating: 0, count: count)
        var x = seed | 1
        var i = 0
        while i < count {
            // 64 KiB random, then 64 KiB of a repeated phrase.
            let end = min(count, i + 64 * 1024)
            if (i / (64 * 1024)) % 2 == 0 {
                while i < end {
                    x ^= x << 13; x ^= x >> 7; x ^= x << 17
                    out[i] = UInt8(truncatingIfNeeded: x)
                    i += 1
                }
            } else {
                let phrase = Array("the quick brown fox jumps over the lazy dog \(i / 65536) ".utf8)
                var j = 0
                while i < end { out[i] = phrase[j % phrase.count]; i += 1; j += 1 }
            }
        }
        return out
    }

    /// A source that returns at most `chunk` bytes per read (to exercise short reads).
    final class ChunkedSource: ByteSource {
        let inner: ByteSource
        let chunk: Int
        init(_ inner: ByteSource, chunk: Int) { self.inner = inner; self.chunk = chunk }
        func read(into buffer: UnsafeMutableRawBufferPointer) throws -> Int {
            let n = min(buffer.count, chunk)
            return try inner.read(into: UnsafeMutableRawBufferPointer(rebasing: buffer[0..<n]))
        }
    }

    /// Reads a source to the end with reads of `bufferSize` bytes.
    static func readAllBytes(_ s: ByteSource, bufferSize: Int = 1 << 20) throws -> [UInt8] {
        var out = [UInt8]()
        var buf = [UInt8](repeating: 0, count: bufferSize)
        while true {
            let n = try buf.withUnsafeMutableBytes { try s.read(into: $0) }
            if n == 0 { return out }
            out.append(contentsOf: buf[0..<n])
        }
    }

    /// Asserts that `body` throws a DogestryError whose message contains `substring` (and of `kind`, if given).
    static func assertError<T>(_ body: @autoclosure () throws -> T, contains substring: String = "", kind: DogestryError.Kind? = nil,
                                file: StaticString = #filePath, line: UInt = #line) {
        do {
            _ = try body()
            XCTFail("expected an error containing \"\(substring)\"", file: file, line: line)
        } catch let e as DogestryError {
            if !substring.isEmpty {
                XCTAssertTrue(e.message.contains(substring), "error \"\(e.message)\" does not contain \"\(substring)\"", file: file, line: line)
            }
            if let k = kind { XCTAssertEqual(e.kind, k, "error \"\(e.message)\"", file: file, line: line) }
            XCTAssertFalse(e.message.contains("\n"), file: file, line: line)
        } catch {
            XCTFail("expected a DogestryError, got \(error)", file: file, line: line)
        }
    }
}
