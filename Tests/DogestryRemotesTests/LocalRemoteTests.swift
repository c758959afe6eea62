import DogestryCore
@testable import DogestryRemotes
import Foundation
import DogestryTestSupport
import XCTest
#if canImport(Glibc)
import Glibc
#endif

/// What is particular to `LocalRemote` (the shared conformance suite runs in ConformanceTests).
final class LocalRemoteTests: XCTestCase {
    /// A fresh directory per test, removed afterwards.
    private func makeDir() throws -> String {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("dogestry-local-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        addTeardownBlock { try? FileManager.default.removeItem(atPath: dir) }
        return dir
    }

    // MARK: opening

    private func assertError(_ kind: DogestryError.Kind, naming: String, file: StaticString = #filePath, line: UInt = #line,
                             _ body: () throws -> Void) {
        do {
            try body()
            XCTFail("expected an error naming \(naming)", file: file, line: line)
        } catch let e as DogestryError {
            XCTAssertEqual(e.kind, kind, e.message, file: file, line: line)
            XCTAssertTrue(e.message.contains(naming), "\"\(e.message)\" does not name \(naming)", file: file, line: line)
            XCTAssertFalse(e.message.contains("\n"), file: file, line: line)
        } catch {
            XCTFail("not a DogestryError: \(error)", file: file, line: line)
        }
    }

    func testMissingDirectoryIsAnErrorNamingIt() throws {
        let dir = try makeDir() + "/does/not/exist"
        assertError(.notFound, naming: dir) { _ = try LocalRemote(path: dir) }
        XCTAssertFalse(FS.exists(dir), "opening a missing remote must not create it")
    }

    func testFileIsNotADirectory() throws {
        let file = try makeDir() + "/plain-file"
        try Data("x".utf8).write(to: URL(fileURLWithPath: file))
        assertError(.invalidInput, naming: file) { _ = try LocalRemote(path: file) }
    }

    func testRelativePathIsMadeAbsolute() throws {
        let dir = try makeDir()
        let saved = FileManager.default.currentDirectoryPath
        XCTAssertTrue(FileManager.default.changeCurrentDirectoryPath((dir as NSString).deletingLastPathComponent))
        defer { _ = FileManager.default.changeCurrentDirectoryPath(saved) }
        let r = try LocalRemote(path: "./" + (dir as NSString).lastPathComponent + "/")
        XCTAssertEqual(r.root, dir)
        XCTAssertEqual(r.displayURL, "file://" + dir)
    }

    /// /proc/sys is a directory nobody, not even root, can create files in.
    func testUnwritableDirectoryUnderProc() throws {
        let dir = "/proc/sys"
        guard FS.isDirectory(dir) else { throw XCTSkip("\(dir) is not available") }
        let r = try LocalRemote(path: dir)
        assertError(.io, naming: dir) { _ = try r.check() }
        assertError(.io, naming: dir) { try r.put("oci-layout", bytes: [1]) }
        assertError(.io, naming: dir) { _ = try r.makeStagedFile() }
        XCTAssertNil(try r.stat("oci-layout"))
    }

    /// A read-only bind mount (root ignores permission bits, not a read-only mount).
    func testUnwritableReadOnlyMount() throws {
        let src = try makeDir(), target = try makeDir()
        try Data("x".utf8).write(to: URL(fileURLWithPath: src + "/existing"))
        guard runMount(["--bind", "-o", "ro", src, target]) else {
            throw XCTSkip("cannot make a read-only bind mount here (mount --bind -o ro failed)")
        }
        defer { _ = runMount(["-u", target]) }
        let r = try LocalRemote(path: target)
        assertError(.io, naming: target) { _ = try r.check() }
        assertError(.io, naming: target) { try r.put("oci-layout", bytes: [1]) }
        // Reading still works.
        XCTAssertEqual(try r.read("existing"), Array("x".utf8))
        XCTAssertEqual(Set(try RemoteConformance.listing(r, "").keys), ["existing"])
    }

    private func runMount(_ args: [String]) -> Bool {
        let p = Process()
        if args.first == "-u" {
            p.executableURL = URL(fileURLWithPath: "/bin/umount")
            p.arguments = Array(args.dropFirst())
        } else {
            p.executableURL = URL(fileURLWithPath: "/bin/mount")
            p.arguments = args
        }
        p.standardError = FileHandle.nullDevice
        p.standardOutput = FileHandle.nullDevice
        do { try p.run() } catch { return false }
        p.waitUntilExit()
        return p.terminationStatus == 0
    }

    // MARK: writes are temp file + rename

    private func stagingEntries(_ r: LocalRemote) -> [String] {
        (try? FileManager.default.contentsOfDirectory(atPath: r.root + "/" + LocalRemote.stagingDirName)) ?? []
    }

    func testObjectsArePlainFilesAtTheirKeys() throws {
        let dir = try makeDir()
        let r = try LocalRemote(path: dir)
        try r.put("blobs/sha256/abc", bytes: [1, 2, 3])
        try RemoteConformance.putStaged(r, "repositories/x/_tags/v1", [4, 5])
        XCTAssertEqual(try Data(contentsOf: URL(fileURLWithPath: dir + "/blobs/sha256/abc")), Data([1, 2, 3]))
        XCTAssertEqual(try Data(contentsOf: URL(fileURLWithPath: dir + "/repositories/x/_tags/v1")), Data([4, 5]))
        XCTAssertEqual(stagingEntries(r), [], "staging directory not empty after puts")
    }

    func testFailedPutOfMissingStagedFileLeavesNothing() throws {
        let r = try LocalRemote(path: try makeDir())
        try r.put("obj", bytes: [7, 7, 7])
        // A staged file (outside the remote) that holds fewer bytes than the put claims.
        let ghost = try StagedFile(in: try makeDir(), prefix: "ghost")
        XCTAssertThrowsError(try r.put("obj", file: ghost, size: 100))
        XCTAssertThrowsError(try r.put("new", file: ghost, size: 100))
        // A staged file of the remote itself that was never written.
        let never = try r.makeStagedFile()
        XCTAssertThrowsError(try r.put("new2", file: never, size: 100))
        never.discard()
        XCTAssertEqual(try r.read("obj"), [7, 7, 7], "a failed overwrite changed the object")
        XCTAssertNil(try r.stat("new"))
        XCTAssertNil(try r.stat("new2"))
        XCTAssertEqual(Set(try RemoteConformance.listing(r, "").keys), ["obj"])
        XCTAssertEqual(stagingEntries(r), [], "a failed put left a temporary file")
    }

    func testFailedPutUnderAFileLeavesNoTemporaryFile() throws {
        let r = try LocalRemote(path: try makeDir())
        try r.put("a", bytes: [1])
        XCTAssertThrowsError(try r.put("a/b", bytes: [2]))
        XCTAssertThrowsError(try RemoteConformance.putStaged(r, "a/c", [3]))
        XCTAssertEqual(try r.read("a"), [1])
        XCTAssertEqual(stagingEntries(r), [], "a failed put left a temporary file")
    }

    func testStagedFilesLiveInTheRemoteUnnamedAndAreLinkedIntoPlace() throws {
        let r = try LocalRemote(path: try makeDir())
        let s = try r.makeStagedFile()
        XCTAssertEqual(s.directory, r.root + "/" + LocalRemote.stagingDirName)
        let sink = try s.sink()
        try sink.write([1])
        try sink.close()
        // Unnamed (O_TMPFILE): not listed, not in the staging directory, gone if the process dies.
        XCTAssertEqual(try RemoteConformance.listing(r, "").count, 0)
        XCTAssertEqual(stagingEntries(r), [])
        var before = stat()
        XCTAssertEqual(stat(s.path, &before), 0)
        // put links that very file into place (no copy).
        try r.put("k", file: s, size: 1)
        var after = stat()
        XCTAssertEqual(stat(r.root + "/k", &after), 0)
        XCTAssertEqual(after.st_ino, before.st_ino, "the object is the staged file itself")
        XCTAssertEqual(try r.read("k"), [1])
        XCTAssertEqual(stagingEntries(r), [])
        s.discard()
        XCTAssertEqual(try r.read("k"), [1])
    }

    /// A hostile directory: a FIFO (or other non-regular file) where an object should be is
    /// refused at once, naming the key, instead of blocking forever; a symlink as an object is
    /// refused too.
    func testNonRegularObjectsAreRefusedWithoutBlocking() throws {
        let dir = try makeDir()
        let r = try LocalRemote(path: dir)
        try r.put("blobs/sha256/real", bytes: Array("x".utf8))
        let fifo = dir + "/blobs/sha256/fifo"
        XCTAssertEqual(mkfifo(fifo, 0o644), 0)
        // A regression that blocks on the FIFO fails here (a writer then unblocks it) instead of hanging.
        let unblock = { let fd = Glibc.open(fifo, O_WRONLY | O_NONBLOCK); if fd >= 0 { Glibc.close(fd) } }
        guard let opened = Watchdog.run(seconds: 10, release: unblock, { try r.open("blobs/sha256/fifo") }) else {
            return XCTFail("opening a FIFO blocked")
        }
        XCTAssertThrowsError(try opened.get()) { e in
            XCTAssertTrue("\(e)".contains("blobs/sha256/fifo") && "\(e)".contains("not a regular file"), "\(e)")
        }
        guard let statted = Watchdog.run(seconds: 10, release: unblock, { try r.stat("blobs/sha256/fifo") }) else {
            return XCTFail("stat of a FIFO blocked")
        }
        XCTAssertThrowsError(try statted.get()) { e in XCTAssertTrue("\(e)".contains("blobs/sha256/fifo"), "\(e)") }
        try FileManager.default.createSymbolicLink(atPath: dir + "/blobs/sha256/link", withDestinationPath: "real")
        XCTAssertThrowsError(try r.open("blobs/sha256/link")) { e in XCTAssertTrue("\(e)".contains("blobs/sha256/link"), "\(e)") }
        XCTAssertEqual(try r.read("blobs/sha256/real"), Array("x".utf8))
    }

    /// A directory symlink leading outside the root (`repositories` → elsewhere) is not followed:
    /// reads, writes, deletes and listings through it are refused naming the key; nothing outside changes.
    func testLinksLeavingTheRootAreRefused() throws {
        let dir = try makeDir(), outside = try makeDir()
        try Data("sha256:0000\n".utf8).write(to: URL(fileURLWithPath: outside + "/secret"))
        try FileManager.default.createSymbolicLink(atPath: dir + "/repositories", withDestinationPath: outside)
        let r = try LocalRemote(path: dir)
        for e in [{ _ = try r.open("repositories/secret") }, { _ = try r.stat("repositories/secret") },
                  { try r.put("repositories/new", bytes: [1]) }, { try r.delete("repositories/secret") },
                  { try r.list(prefix: "repositories/") { _ in } }] as [() throws -> Void] {
            XCTAssertThrowsError(try e()) { err in
                XCTAssertTrue("\(err)".contains("repositories") && "\(err)".contains("outside the remote"), "\(err)")
            }
        }
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: outside), ["secret"])
        // A link that stays inside the root is fine.
        try r.put("blobs/sha256/a", bytes: [7])
        try FileManager.default.createSymbolicLink(atPath: dir + "/index", withDestinationPath: dir + "/blobs")
        XCTAssertEqual(try r.read("index/sha256/a"), [7])
    }

    func testDeleteRemovesEmptyDirectoriesButNotTheRoot() throws {
        let dir = try makeDir()
        let r = try LocalRemote(path: dir)
        try r.put("repositories/a/b/_tags/v1", bytes: [1])
        try r.put("repositories/c/_tags/v1", bytes: [1])
        try r.delete("repositories/a/b/_tags/v1")
        XCTAssertFalse(FS.exists(dir + "/repositories/a"))
        XCTAssertTrue(FS.isDirectory(dir + "/repositories/c/_tags"))
        try r.delete("repositories/c/_tags/v1")
        XCTAssertTrue(FS.isDirectory(dir), "deleting the last object removed the root")
        // A directory is not an object: deleting it is not an error and removes nothing else.
        try r.put("d/e/f", bytes: [1])
        try r.delete("d/e")
        XCTAssertEqual(try r.read("d/e/f"), [1])
    }
}
