import DogestryCore
import DogestryHTTP
@testable import DogestryRemotes
import DogestrySync
import Foundation
import XCTest

/// The one remote conformance suite (`RemoteConformance`), run over every remote: the local
/// directory, the in-memory remote, S3 (SeaweedFS) and Manta (the simulator); and its read side
/// (`ReadConformance`) over those and the read-only pull-ticket remote. Each test is one
/// check, run on every backend in turn; a failure names the check (its test) and the backend
/// (the `[name]` before its message). Signing and upload sweeping are checked on the remotes
/// that offer them.
final class ConformanceTests: XCTestCase {
    /// A remote kind: its name and how to make a fresh, empty one.
    struct Backend: Sendable {
        let name: String
        let make: @Sendable (XCTestCase) throws -> Remote
    }

    static func tempDir(_ test: XCTestCase) throws -> String {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("dogestry-conf-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        test.addTeardownBlock { try? FileManager.default.removeItem(atPath: dir) }
        return dir
    }

    static let backends: [Backend] = [
        Backend(name: "local") { t in try LocalRemote(path: try tempDir(t)) },
        Backend(name: "memory") { _ in MemoryRemote() },
        Backend(name: "s3") { _ in
            let s = try S3RemoteTests.server()
            return try S3RemoteTests.remote(s, bucket: try S3RemoteTests.bucket(s), prefix: "conf/" + UUID().uuidString.lowercased())
        },
        Backend(name: "manta") { _ in try MantaRemoteTests.makeRemote() },
    ]

    /// What the read-side suite runs over: every remote above holding the image it was written,
    /// and the read-only pull-ticket remote, signed on S3 and on Manta, holding just that image.
    struct ReadBackend: Sendable {
        let name: String
        let make: @Sendable (XCTestCase) throws -> (remote: ReadableRemote, holds: [String: [UInt8]])
    }

    static let readBackends: [ReadBackend] = backends.map { b in
        ReadBackend(name: b.name) { t in
            let r = try b.make(t)
            return (r, try ReadConformance.storeImage(r))
        }
    } + ["s3", "manta"].map { origin in
        ReadBackend(name: "ticket on \(origin)") { t in
            guard let b = backends.first(where: { $0.name == origin }) else { throw DogestryError.notFound("no \(origin) backend") }
            let r = try b.make(t)
            let holds = try ReadConformance.storeImage(r)
            let signed = try TicketSigner(remote: r).sign("\(ReadConformance.imageName):\(ReadConformance.imageTag)", lifetime: 600)
            return (try TicketRemote.fetch(signed.url), holds)
        }
    }

    /// The backend the running check is on: every failure recorded meanwhile is prefixed with
    /// it, so a failed assertion deep inside `RemoteConformance` names its backend as a
    /// parameterised test's case would.
    private var backendOnTrial: String?

    override func recordFailure(withDescription description: String, inFile filePath: String, atLine lineNumber: Int, expected: Bool) {
        let prefixed = backendOnTrial.map { "[\($0)] " + description } ?? description
        super.recordFailure(withDescription: prefixed, inFile: filePath, atLine: lineNumber, expected: expected)
    }

    /// Runs check `name` of `checks` on every backend, each on the suite `suite` makes for it (a
    /// failure on one backend does not stop the others; every failure names its backend).
    func runEach<Suite, Backend>(_ name: String, of checks: [(name: String, run: (Suite) -> () throws -> Void)],
                                 on backends: [Backend], named: (Backend) -> String, suite: (Backend) -> Suite,
                                 file: StaticString, line: UInt) {
        guard let check = checks.first(where: { $0.name == name }) else {
            return XCTFail("no conformance check \(name)", file: file, line: line)
        }
        for b in backends {
            print("conformance: \(name) on \(named(b))")
            backendOnTrial = named(b)
            defer { backendOnTrial = nil }
            do { try check.run(suite(b))() } catch {
                XCTFail("conformance check \(name) failed: \(error)", file: file, line: line)
            }
        }
    }

    /// Runs check `name` of the remote suite on every backend.
    func run(_ name: String, file: StaticString = #filePath, line: UInt = #line) {
        runEach(name, of: RemoteConformance.checks, on: Self.backends, named: \.name, suite: { b in
            RemoteConformance(reportsModifiedTimes: true) { [unowned self] in try b.make(self) }
        }, file: file, line: line)
    }

    /// Runs check `name` of the read-side suite on every read backend.
    func runRead(_ name: String, file: StaticString = #filePath, line: UInt = #line) {
        runEach(name, of: ReadConformance.checks, on: Self.readBackends, named: \.name, suite: { b in
            ReadConformance { [unowned self] in try b.make(self) }
        }, file: file, line: line)
    }

    func testReadsWhatItHolds() { runRead("readsWhatItHolds") }
    func testMissingKeysOnRead() { runRead("missingKeysOnRead") }
    func testListsWhatItHolds() { runRead("listsWhatItHolds") }
    func testCheckOnRead() { runRead("checkOnRead") }

    func testSmallRoundTrip() { run("smallRoundTrip") }
    func testLargeStagedRoundTrip() { run("largeStagedRoundTrip") }
    func testMissingKeys() { run("missingKeys") }
    func testOverwrite() { run("overwrite") }
    func testDelete() { run("delete") }
    func testListPrefixes() { run("listPrefixes") }
    func testListModifiedTimes() { run("listModifiedTimes") }
    func testOverwriteRefreshesModifiedTime() { run("overwriteRefreshesModifiedTime") }
    func testInvalidKeys() { run("invalidKeys") }
    func testLongListing() { run("longListing") }
    func testStagedPutLeavesNoTemporaryFile() { run("stagedPutLeavesNoTemporaryFile") }
    func testConcurrentPuts() { run("concurrentPuts") }
    func testCheck() { run("check") }

    /// Every check of the suite has its test above (a new check cannot be forgotten).
    func testEveryCheckIsRun() throws {
        let source = try String(contentsOfFile: #filePath, encoding: .utf8)
        for c in RemoteConformance.checks {
            XCTAssertTrue(source.contains("run(\"\(c.name)\")"), "conformance check \(c.name) is not run")
        }
        for c in ReadConformance.checks {
            XCTAssertTrue(source.contains("runRead(\"\(c.name)\")"), "read conformance check \(c.name) is not run")
        }
        XCTAssertEqual(Self.readBackends.map(\.name), Self.backends.map(\.name) + ["ticket on s3", "ticket on manta"])
    }

    /// A signing remote's URL reads the object with no credentials, and only that object.
    func testSignedURLsOnEveryRemoteThatSigns() throws {
        var signers = 0
        for b in Self.backends {
            let r = try b.make(self)
            guard let s = r as? SigningRemote else { continue }
            signers += 1
            let bytes = RemoteConformance.bytes(70_000, seed: 9)
            try r.put("blobs/sha256/signed", bytes: bytes)
            let url = try s.signedURL(forGet: "blobs/sha256/signed", expires: 300)
            let client = HTTPClient(options: HTTPTransportOptions())
            let (resp, body) = try client.fetch(HTTPRequest(url: url))
            XCTAssertEqual(resp.status, 200, "\(b.name): \(resp.errorText())")
            XCTAssertEqual(body, bytes, b.name)
            // The same signature does not open another key.
            let other = url.replacingOccurrences(of: "signed", with: "unsigned")
            XCTAssertNotEqual(try client.fetch(HTTPRequest(url: other)).0.status, 200, "\(b.name): a signed URL opened another key")
        }
        XCTAssertEqual(signers, 2, "S3 and Manta sign")
    }

    /// A sweeping remote lists what an interrupted upload left, sized, and aborts it.
    func testUploadSweepingOnEveryRemoteThatSweeps() throws {
        var sweepers = 0
        for b in Self.backends {
            let r = try b.make(self)
            guard let sw = r as? UploadSweeping else { continue }
            sweepers += 1
            var before: [IncompleteUpload] = []
            try sw.listIncompleteUploads { before.append($0) }
            XCTAssertEqual(before, [], b.name)
            let expected: String
            switch r {
            case let s3 as S3Remote:
                expected = Repository.blobKey(Digest.of("abandoned"))
                _ = try s3.startAbandonedUpload(expected, part: RemoteConformance.bytes(100_000, seed: 3))
            case let l as LocalRemote:
                let s = try l.makeStagedFile(); s.discard()
                let p = FS.tempPath(in: s.directory, prefix: "blob")   // a named file, as older runs left
                try Data(RemoteConformance.bytes(100_000, seed: 3)).write(to: URL(fileURLWithPath: p))
                expected = LocalRemote.stagingDirName + "/" + (p as NSString).lastPathComponent
            default:
                XCTFail("\(b.name): no way to leave an upload behind in this test"); continue
            }
            var found: [IncompleteUpload] = []
            try sw.listIncompleteUploads { found.append($0) }
            XCTAssertEqual(found.map(\.key), [expected], b.name)
            for u in found {
                XCTAssertEqual(try sw.incompleteUploadSize(u), 100_000, b.name)
                try sw.abortIncompleteUpload(u)
            }
            var after: [IncompleteUpload] = []
            try sw.listIncompleteUploads { after.append($0) }
            XCTAssertEqual(after, [], "\(b.name): aborted uploads are gone")
        }
        XCTAssertEqual(sweepers, 2, "S3 and the local remote sweep")
    }
}
