import DogestryCore
import Foundation
import XCTest

/// The behaviour every `Remote` must have, as a reusable suite.
///
/// Use it from an `XCTestCase`, one test method per check (so a failure names the check):
///
/// ```
/// let suite = RemoteConformance { try MyRemote(...) }   // a new, EMPTY namespace per call
/// func testRoundTripSmall() throws { try suite.checkSmallRoundTrip() }
/// ```
///
/// or all at once with `suite.runAll()`. `makeRemote` is called once per check and must return a
/// remote over a store that holds nothing yet (a fresh directory, bucket prefix, Manta directory),
/// because several checks compare a whole listing with what they wrote.
final class RemoteConformance: @unchecked Sendable {  // (immutable once made)
    let makeRemote: () throws -> Remote
    /// Whether the remote reports modification times (in `list` and `stat`).
    let reportsModifiedTimes: Bool
    /// The size of the "large" object (20 MiB by default: larger than a multipart part).
    let largeSize: Int
    /// How many objects the long-listing check writes (more than 1500: past every store's page size).
    let manyCount: Int
    /// Threads used by the concurrent-put check.
    let threads: Int

    init(reportsModifiedTimes: Bool = true, largeSize: Int = 20 << 20, manyCount: Int = 1503, threads: Int = 4,
         makeRemote: @escaping () throws -> Remote) {
        self.makeRemote = makeRemote
        self.reportsModifiedTimes = reportsModifiedTimes
        self.largeSize = largeSize
        self.manyCount = manyCount
        self.threads = threads
    }

    /// Every check, by name.
    nonisolated(unsafe) static let checks: [(name: String, run: (RemoteConformance) -> () throws -> Void)] = [   // (constant)
        ("smallRoundTrip", checkSmallRoundTrip),
        ("largeStagedRoundTrip", checkLargeStagedRoundTrip),
        ("missingKeys", checkMissingKeys),
        ("overwrite", checkOverwrite),
        ("delete", checkDelete),
        ("listPrefixes", checkListPrefixes),
        ("listModifiedTimes", checkListModifiedTimes),
        ("overwriteRefreshesModifiedTime", checkOverwriteRefreshesModifiedTime),
        ("invalidKeys", checkInvalidKeys),
        ("longListing", checkLongListing),
        ("stagedPutLeavesNoTemporaryFile", checkStagedPutLeavesNoTemporaryFile),
        ("concurrentPuts", checkConcurrentPuts),
        ("check", checkCheck),
    ]

    /// Runs every check; a check that throws is reported as a failure naming it.
    func runAll(file: StaticString = #filePath, line: UInt = #line) {
        for c in Self.checks {
            do { try c.run(self)() } catch {
                XCTFail("remote conformance check \(c.name) failed: \(error)", file: file, line: line)
            }
        }
    }

    // MARK: helpers

    /// Deterministic pseudo-random bytes (xorshift64), fast enough for tens of MiB.
    static func bytes(_ n: Int, seed: UInt64) -> [UInt8] {
        var out = [UInt8](repeating: 0, count: n)
        var x = seed &* 0x9E37_79B9_7F4A_7C15 | 1
        out.withUnsafeMutableBytes { buf in
            let words = n / 8
            let w = buf.baseAddress!.bindMemory(to: UInt64.self, capacity: words)
            for i in 0..<words {
                x ^= x << 13; x ^= x >> 7; x ^= x << 17
                w[i] = x
            }
            for i in (words * 8)..<n {
                x ^= x << 13; x ^= x >> 7; x ^= x << 17
                buf[i] = UInt8(truncatingIfNeeded: x)
            }
        }
        return out
    }

    /// The whole content of `key`.
    static func content(_ remote: ReadableRemote, _ key: String, limit: Int = 64 << 20) throws -> [UInt8] {
        try remote.open(key).readAll(limit: limit, what: key)
    }

    /// Digest and size of `key`'s content, streamed.
    static func streamDigest(_ remote: ReadableRemote, _ key: String) throws -> (Digest, Int64) {
        let h = HashingSink()
        let n = try remote.open(key).copy(to: h)
        return (h.digest(), n)
    }

    /// Every listed object under `prefix`, by key; fails on duplicates.
    static func listing(_ remote: ReadableRemote, _ prefix: String, file: StaticString = #filePath, line: UInt = #line) throws -> [String: RemoteObject] {
        var out: [String: RemoteObject] = [:]
        try remote.list(prefix: prefix) { obj in
            XCTAssertNil(out[obj.key], "list(prefix: \"\(prefix)\") returned \(obj.key) twice", file: file, line: line)
            out[obj.key] = obj
        }
        return out
    }

    /// Writes `bytes` through a staged file of `remote` and puts it at `key`.
    static func putStaged(_ remote: Remote, _ key: String, _ bytes: [UInt8]) throws {
        let staged = try remote.makeStagedFile()
        defer { staged.discard() }
        let sink = try staged.sink(sync: true)
        try sink.write(bytes)
        try sink.close()
        try remote.put(key, file: staged, size: Int64(bytes.count))
    }

    /// Asserts `body` throws a `DogestryError` of `kind`.
    static func assertThrows(_ kind: DogestryError.Kind, _ what: String, file: StaticString = #filePath, line: UInt = #line,
                             _ body: () throws -> Void) {
        do {
            try body()
            XCTFail("\(what): expected a .\(kind) error, got success", file: file, line: line)
        } catch let e as DogestryError {
            XCTAssertEqual(e.kind, kind, "\(what): \(e.message)", file: file, line: line)
            XCTAssertFalse(e.message.isEmpty, file: file, line: line)
            XCTAssertFalse(e.message.contains("\n"), "\(what): error message is not one line", file: file, line: line)
        } catch {
            XCTFail("\(what): expected a DogestryError, got \(error)", file: file, line: line)
        }
    }

    // MARK: checks

    /// put(bytes) and put(file) of small objects (including an empty one) read back identically.
    func checkSmallRoundTrip() throws {
        let r = try makeRemote()
        let cases: [(String, [UInt8])] = [
            ("oci-layout", Array("{\"imageLayoutVersion\":\"1.0.0\"}\n".utf8)),
            ("blobs/sha256/" + Digest.of("x").hex, (0...255).map { UInt8($0) }),
            ("repositories/a/b/_tags/v1", Array("sha256:\(Digest.of("y").hex)\n".utf8)),
            ("empty", []),
        ]
        for (key, bytes) in cases {
            try r.put(key, bytes: bytes)
            let st = try XCTUnwrap(try r.stat(key), "stat(\(key)) after put")
            XCTAssertEqual(st.key, key)
            XCTAssertEqual(st.size, Int64(bytes.count), "size of \(key)")
            XCTAssertEqual(try Self.content(r, key), bytes, "content of \(key)")
            XCTAssertEqual(try r.read(key), bytes, "read(\(key))")
        }
        let staged = Self.bytes(100_000, seed: 1)
        try Self.putStaged(r, "staged/small", staged)
        XCTAssertEqual(try r.stat("staged/small")?.size, 100_000)
        XCTAssertEqual(try Self.content(r, "staged/small"), staged)
        // A staged empty file.
        try Self.putStaged(r, "staged/empty", [])
        XCTAssertEqual(try r.stat("staged/empty")?.size, 0)
        XCTAssertEqual(try Self.content(r, "staged/empty"), [])
    }

    /// A large object put from a staged file streams back with the same digest; the staged file's
    /// discard after a put does not remove the object. A file staged elsewhere can be put too.
    func checkLargeStagedRoundTrip() throws {
        let r = try makeRemote()
        let data = Self.bytes(largeSize, seed: 2)
        let want = Digest.of(data)
        let key = "blobs/sha256/" + want.hex
        let staged = try r.makeStagedFile()
        let sink = try staged.sink(sync: true)
        // Written in pieces, as a compressor would.
        var off = 0
        while off < data.count {
            let n = min(1 << 20 + 17, data.count - off)
            try data[off..<(off + n)].withUnsafeBytes { try sink.write($0) }
            off += n
        }
        try sink.close()
        try r.put(key, file: staged, size: Int64(data.count))
        staged.discard()
        let st = try XCTUnwrap(try r.stat(key))
        XCTAssertEqual(st.size, Int64(largeSize))
        let (got, n) = try Self.streamDigest(r, key)
        XCTAssertEqual(n, Int64(largeSize))
        XCTAssertEqual(got, want, "digest of the large object read back")
        var listed = try Self.listing(r, "blobs/")
        XCTAssertEqual(listed.removeValue(forKey: key)?.size, Int64(largeSize))
        XCTAssertEqual(listed.count, 0)

        // A file staged in the shared temporary directory (as remotes without local staging do).
        let other = try TempDirectory.staged(prefix: "dogestry-conformance")
        defer { other.discard() }
        let small = Self.bytes(300_000, seed: 3)
        let s2 = try other.sink()
        try s2.write(small)
        try s2.close()
        try r.put("elsewhere", file: other, size: Int64(small.count))
        XCTAssertEqual(try Self.content(r, "elsewhere"), small)
    }

    /// stat of a missing key is nil; open of it throws .notFound.
    func checkMissingKeys() throws {
        let r = try makeRemote()
        for key in ["missing", "blobs/sha256/" + Digest.of("none").hex, "deep/ly/nested/missing"] {
            XCTAssertNil(try r.stat(key), "stat(\(key))")
            Self.assertThrows(.notFound, "open(\(key))") { _ = try r.open(key) }
            Self.assertThrows(.notFound, "read(\(key))") { _ = try r.read(key) }
        }
        // A key below an existing object, and a key that is only a "directory" of other keys.
        try r.put("file", bytes: [1, 2, 3])
        try r.put("dir/child", bytes: [4])
        XCTAssertNil(try r.stat("file/below"), "stat of a key below an object")
        Self.assertThrows(.notFound, "open of a key below an object") { _ = try r.open("file/below") }
        XCTAssertNil(try r.stat("dir"), "stat of a key that is only a prefix of other keys")
        XCTAssertNil(try r.stat("fil"), "stat of a partial key")
    }

    /// Overwriting replaces the object whole: readers see the old or the new content, never a mix.
    func checkOverwrite() throws {
        let r = try makeRemote()
        let a = Self.bytes(100_000, seed: 4), b = Self.bytes(300_001, seed: 5)
        try r.put("obj", bytes: a)
        try r.put("obj", bytes: b)
        XCTAssertEqual(try r.stat("obj")?.size, Int64(b.count))
        XCTAssertEqual(try Self.content(r, "obj"), b)
        try Self.putStaged(r, "obj", a)
        XCTAssertEqual(try r.stat("obj")?.size, Int64(a.count))
        XCTAssertEqual(try Self.content(r, "obj"), a)
        XCTAssertEqual(try Self.listing(r, "").count, 1, "an overwrite leaves exactly one object")

        // A stream opened before an overwrite yields one whole version.
        let early = try r.open("obj")
        try r.put("obj", bytes: b)
        let seen = try early.readAll(limit: 1 << 20, what: "obj")
        XCTAssertTrue(seen == a || seen == b, "a stream opened before an overwrite read \(seen.count) bytes of neither version")

        // Readers racing a writer only ever see whole versions.
        let rounds = 20
        let problems = Collected()
        DispatchQueue.concurrentPerform(iterations: 2) { t in
            for i in 0..<rounds {
                do {
                    if t == 0 {
                        try r.put("obj", bytes: i % 2 == 0 ? a : b)
                    } else {
                        let got = try Self.content(r, "obj")
                        if got != a && got != b {
                            problems.add("read \(got.count) bytes of neither version")
                        }
                        if let s = try r.stat("obj"), s.size != Int64(a.count) && s.size != Int64(b.count) {
                            problems.add("stat size \(s.size) of neither version")
                        }
                    }
                } catch {
                    problems.add("\(error)")
                }
            }
        }
        XCTAssertEqual(problems.all, [], "concurrent overwrite and read")
    }

    /// delete removes; deleting a missing key is fine; siblings are untouched.
    func checkDelete() throws {
        let r = try makeRemote()
        try r.put("x/y/z", bytes: [1])
        try r.put("x/y/sibling", bytes: [2, 2])
        try r.put("x/other", bytes: [3, 3, 3])
        try r.delete("x/y/z")
        XCTAssertNil(try r.stat("x/y/z"))
        Self.assertThrows(.notFound, "open after delete") { _ = try r.open("x/y/z") }
        XCTAssertEqual(try r.stat("x/y/sibling")?.size, 2)
        try r.delete("x/y/z")                     // again
        try r.delete("never/existed/at/all")      // never there
        try r.delete("x/y")                       // a prefix, not an object: nothing to do
        XCTAssertEqual(Set(try Self.listing(r, "").keys), ["x/y/sibling", "x/other"])
        try r.delete("x/y/sibling")
        XCTAssertEqual(Set(try Self.listing(r, "x/").keys), ["x/other"])
        XCTAssertEqual(try Self.listing(r, "x/y/").count, 0)
        // A deleted key can be written again.
        try r.put("x/y/z", bytes: [9, 9])
        XCTAssertEqual(try Self.content(r, "x/y/z"), [9, 9])
    }

    /// list(prefix:) returns exactly the keys that start with the prefix, with their sizes.
    func checkListPrefixes() throws {
        let r = try makeRemote()
        let keys = [
            "oci-layout", "blobs/sha256/ab01", "blobs/sha256/ab02", "blobs/sha256/ac03", "blobs/sha256/abx/deep",
            "blobsX", "blobs-other/1", "repositories/a/_tags/v1", "repositories/a/b/_tags/v1",
            "repositories/ab/_tags/v1", "index/diffid/sha256/ff",
        ]
        var sizes: [String: Int64] = [:]
        for (i, k) in keys.enumerated() {
            let n = 10 + i * 7
            try r.put(k, bytes: Self.bytes(n, seed: UInt64(100 + i)))
            sizes[k] = Int64(n)
        }
        func check(_ prefix: String, _ expected: Set<String>, line: UInt = #line) throws {
            let got = try Self.listing(r, prefix, line: line)
            XCTAssertEqual(Set(got.keys), expected, "list(prefix: \"\(prefix)\")", line: line)
            for (k, o) in got {
                XCTAssertEqual(o.key, k, line: line)
                XCTAssertEqual(o.size, sizes[k], "size of \(k) in list(prefix: \"\(prefix)\")", line: line)
            }
        }
        try check("", Set(keys))
        try check("blobs/sha256/ab", ["blobs/sha256/ab01", "blobs/sha256/ab02", "blobs/sha256/abx/deep"])
        try check("blobs/sha256/", ["blobs/sha256/ab01", "blobs/sha256/ab02", "blobs/sha256/ac03", "blobs/sha256/abx/deep"])
        try check("blobs/", ["blobs/sha256/ab01", "blobs/sha256/ab02", "blobs/sha256/ac03", "blobs/sha256/abx/deep"])
        try check("blobs", ["blobs/sha256/ab01", "blobs/sha256/ab02", "blobs/sha256/ac03", "blobs/sha256/abx/deep", "blobsX", "blobs-other/1"])
        try check("blobs/sha256/abx/", ["blobs/sha256/abx/deep"])
        try check("blobs/sha256/ab01", ["blobs/sha256/ab01"])
        try check("repositories/a/", ["repositories/a/_tags/v1", "repositories/a/b/_tags/v1"])
        try check("repositories/a", ["repositories/a/_tags/v1", "repositories/a/b/_tags/v1", "repositories/ab/_tags/v1"])
        try check("oci-layout", ["oci-layout"])
        try check("blobs/sha256/zz", [])
        try check("nothing/", [])
        try check("nothing", [])
        try check("blobs/sha256/ab01/", [])
        // A prefix that tries to climb out of the remote finds nothing (or is refused).
        for bad in ["../", "../../", "/"] {
            do {
                let got = try Self.listing(r, bad)
                XCTAssertEqual(got.count, 0, "list(prefix: \"\(bad)\") escaped the remote: \(got.keys.sorted().prefix(5))")
            } catch let e as DogestryError {
                XCTAssertEqual(e.kind, .invalidInput, "list(prefix: \"\(bad)\"): \(e.message)")
            }
        }
    }

    /// Listed objects carry a plausible modification time when the remote reports times.
    func checkListModifiedTimes() throws {
        let r = try makeRemote()
        let before = Date()
        try r.put("t/one", bytes: [1])
        try Self.putStaged(r, "t/two", [2, 2])
        let after = Date()
        let listed = try Self.listing(r, "t/")
        XCTAssertEqual(listed.count, 2)
        guard reportsModifiedTimes else { return }
        // Generous slack: remote clocks drift, and some stores keep whole seconds.
        let window = before.addingTimeInterval(-300)...after.addingTimeInterval(300)
        for (k, o) in listed {
            let m = try XCTUnwrap(o.modified, "list gave no modification time for \(k)")
            XCTAssertTrue(window.contains(m), "modification time \(m) of \(k) is not near now")
            let s = try XCTUnwrap(try r.stat(k))
            let sm = try XCTUnwrap(s.modified, "stat gave no modification time for \(k)")
            XCTAssertTrue(window.contains(sm), "stat modification time \(sm) of \(k) is not near now")
        }
    }

    /// Putting an object again, even with the same bytes, refreshes its modification time in
    /// `stat` and `list`: `prune` tells young objects from old ones by it, and a push that reuses an
    /// old object "touches" it this way (docs/FORMAT.md, "Pruning and concurrency").
    func checkOverwriteRefreshesModifiedTime() throws {
        let r = try makeRemote()
        try r.put("touch/index-entry", bytes: [1, 2, 3])
        try Self.putStaged(r, "touch/staged", [4, 5])
        guard reportsModifiedTimes else { return }
        let first = try XCTUnwrap(try r.stat("touch/index-entry")?.modified)
        let firstStaged = try XCTUnwrap(try r.stat("touch/staged")?.modified)
        Thread.sleep(forTimeInterval: 1.1)   // past a whole second, for stores that keep whole seconds
        try r.put("touch/index-entry", bytes: [1, 2, 3])
        try Self.putStaged(r, "touch/staged", [4, 5])
        let again = try XCTUnwrap(try r.stat("touch/index-entry")?.modified)
        XCTAssertGreaterThan(again, first, "a second put of the same bytes did not refresh the modification time")
        XCTAssertGreaterThan(try XCTUnwrap(try r.stat("touch/staged")?.modified), firstStaged, "a second staged put did not refresh the modification time")
        let listed = try Self.listing(r, "touch/")
        XCTAssertEqual(listed.count, 2)
        XCTAssertGreaterThan(try XCTUnwrap(listed["touch/index-entry"]?.modified), first, "list shows the old modification time")
        XCTAssertEqual(try Self.content(r, "touch/index-entry"), [1, 2, 3])
    }

    /// Keys with "..", a leading "/" or empty components are refused with .invalidInput, by every operation.
    func checkInvalidKeys() throws {
        let r = try makeRemote()
        try r.put("a/b", bytes: [1])
        let bad = ["..", "../x", "../../etc/passwd", "a/../b", "a/..", "/a", "/", "//a", "a//b", "a/", "", "a/b/"]
        for key in bad {
            Self.assertThrows(.invalidInput, "stat(\"\(key)\")") { _ = try r.stat(key) }
            Self.assertThrows(.invalidInput, "open(\"\(key)\")") { _ = try r.open(key) }
            Self.assertThrows(.invalidInput, "put(\"\(key)\", bytes:)") { try r.put(key, bytes: [6, 6, 6]) }
            Self.assertThrows(.invalidInput, "put(\"\(key)\", file:)") { try Self.putStaged(r, key, [6, 6, 6]) }
            Self.assertThrows(.invalidInput, "delete(\"\(key)\")") { try r.delete(key) }
        }
        XCTAssertEqual(Set(try Self.listing(r, "").keys), ["a/b"], "refused keys must not leave objects")
        XCTAssertEqual(try Self.content(r, "a/b"), [1])
    }

    /// A listing of more objects than any store returns in one page is complete.
    func checkLongListing() throws {
        let r = try makeRemote()
        let want = Set((0..<manyCount).map { String(format: "many/%05d", $0) })
        // Written by several threads (each put may be a round trip or an fsync).
        let errors = Collected()
        let workers = max(threads, 8)
        DispatchQueue.concurrentPerform(iterations: workers) { t in
            for i in stride(from: t, to: manyCount, by: workers) {
                do { try r.put(String(format: "many/%05d", i), bytes: [UInt8(i & 0xff)]) } catch {
                    errors.add("\(error)")
                }
            }
        }
        XCTAssertEqual(errors.all, [])
        try r.put("many-not/x", bytes: [0])
        try r.put("manyx", bytes: [0])
        let got = try Self.listing(r, "many/")
        XCTAssertEqual(got.count, manyCount)
        XCTAssertEqual(Set(got.keys), want)
        XCTAssertTrue(got.values.allSatisfy { $0.size == 1 })
        XCTAssertEqual(try Self.listing(r, "").count, manyCount + 2)
        for p in ["many/0100", "many/015", "many/1"] {
            XCTAssertEqual(Set(try Self.listing(r, p).keys), want.filter { $0.hasPrefix(p) }, "list(prefix: \"\(p)\")")
        }
    }

    /// Staging, putting, failing and discarding leave nothing but the objects put in a listing.
    func checkStagedPutLeavesNoTemporaryFile() throws {
        let r = try makeRemote()
        try Self.putStaged(r, "blobs/sha256/one", Self.bytes(5000, seed: 6))
        try Self.putStaged(r, "blobs/sha256/two", Self.bytes(70_000, seed: 7))
        try r.put("bytes", bytes: [1, 2])
        // Staged and discarded without a put.
        do {
            let s = try r.makeStagedFile()
            let sink = try s.sink()
            try sink.write([1, 2, 3])
            try sink.close()
            s.discard()
        }
        // Staged, written, dropped without discard (deinit cleans up).
        do {
            let s = try r.makeStagedFile()
            let sink = try s.sink()
            try sink.write([4, 5, 6])
            try sink.close()
        }
        // A put of a staged file that was never written fails (or stores an empty object), cleanly.
        let never = try r.makeStagedFile()
        do {
            try r.put("never-written", file: never, size: 0)
            XCTAssertEqual(try r.stat("never-written")?.size, 0)
            try r.delete("never-written")
        } catch is DogestryError {
            XCTAssertNil(try r.stat("never-written"), "a failed put left an object")
        }
        never.discard()
        XCTAssertEqual(Set(try Self.listing(r, "").keys), ["blobs/sha256/one", "blobs/sha256/two", "bytes"])
        XCTAssertEqual(try Self.content(r, "blobs/sha256/two"), Self.bytes(70_000, seed: 7))
    }

    /// Puts of different keys from several threads all land, whole.
    func checkConcurrentPuts() throws {
        let r = try makeRemote()
        let perThread = 25
        let errors = Collected()
        DispatchQueue.concurrentPerform(iterations: threads) { t in
            for i in 0..<perThread {
                // Shared parent directories, so creating them races too.
                let key = "concurrent/\(i % 5)/t\(t)-\(i)"
                let data = Self.bytes(1000 + 37 * i + t, seed: UInt64(t * 1000 + i))
                do {
                    if i % 2 == 0 { try r.put(key, bytes: data) } else { try Self.putStaged(r, key, data) }
                } catch {
                    errors.add("\(key): \(error)")
                }
            }
        }
        XCTAssertEqual(errors.all, [])
        let listed = try Self.listing(r, "concurrent/")
        XCTAssertEqual(listed.count, threads * perThread)
        for t in 0..<threads {
            for i in 0..<perThread {
                let key = "concurrent/\(i % 5)/t\(t)-\(i)"
                let data = Self.bytes(1000 + 37 * i + t, seed: UInt64(t * 1000 + i))
                XCTAssertEqual(listed[key]?.size, Int64(data.count), "size of \(key)")
                XCTAssertEqual(try Self.content(r, key), data, "content of \(key)")
            }
        }
    }

    /// check() succeeds with a one-line description and leaves nothing behind.
    func checkCheck() throws {
        let r = try makeRemote()
        let d = try r.check()
        XCTAssertFalse(d.isEmpty)
        XCTAssertFalse(d.contains("\n"))
        XCTAssertFalse(r.displayURL.isEmpty)
        XCTAssertEqual(try Self.listing(r, "").count, 0, "check() left objects behind")
    }
}

/// Messages collected from several threads.
final class Collected: @unchecked Sendable {  // (guarded by its lock)
    private let lock = NSLock()
    private var items: [String] = []
    func add(_ s: String) { lock.lock(); items.append(s); lock.unlock() }
    var all: [String] { lock.lock(); defer { lock.unlock() }; return items }
}
