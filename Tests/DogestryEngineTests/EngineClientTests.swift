import DogestryCore
import DogestryEngine
import DogestryHTTP
import Foundation
import DogestryTestSupport
import XCTest

// MARK: - Fixtures

/// The engine under test, from DOGESTRY_TEST_DOCKER_HOST / DOGESTRY_TEST_PODMAN_HOST.
/// Unset: skip, or fail when DOGESTRY_REQUIRE_ENGINES=1.
func engineFromEnvironment(_ variable: String, file: StaticString = #filePath, line: UInt = #line) throws -> EngineClient {
    let env = ProcessInfo.processInfo.environment
    guard let host = env[variable], !host.isEmpty else {
        if env["DOGESTRY_REQUIRE_ENGINES"] == "1" {
            XCTFail("\(variable) is not set but DOGESTRY_REQUIRE_ENGINES=1", file: file, line: line)
            throw DogestryError.invalid("\(variable) is not set")
        }
        throw XCTSkip("\(variable) is not set (start engines with scripts/lib/engines.sh)")
    }
    return try EngineClient(address: EngineAddress(parsing: host))
}

func randomBytes(_ n: Int) -> [UInt8] { (0..<n).map { _ in UInt8.random(in: 0...255) } }

func uniqueSuffix() -> String { String(UInt64.random(in: 0...UInt64.max), radix: 36) }

/// A small docker-load archive (manifest.json format) built in memory.
struct TestImage {
    var tag: String
    var layers: [[UInt8]]       // layer tars
    var config: [UInt8]
    var id: Digest { Digest.of(config) }
    var diffIDs: [Digest] { layers.map { Digest.of($0) } }
    var chainIDs: [Digest] { Digest.chainIDs(diffIDs) }

    /// `layerCount` layers, each with one random file (content unique to this image).
    init(tag: String, layerCount: Int = 2) throws {
        self.tag = tag
        var layers: [[UInt8]] = []
        for i in 0..<layerCount {
            let sink = MemorySink()
            let w = TarWriter(sink)
            try w.writeFile(name: "layer\(i)/data.bin", bytes: randomBytes(1000 + i))
            try w.writeFile(name: "layer\(i)/hello.txt", bytes: Array("hello from layer \(i) of \(tag)\n".utf8))
            try w.finish()
            layers.append(sink.bytes)
        }
        self.layers = layers
        let diffs = layers.map { "\"\(Digest.of($0))\"" }.joined(separator: ",")
        let history = (0..<layerCount).map { "{\"created\":\"2024-01-01T00:00:00Z\",\"created_by\":\"layer \($0)\"}" }
            .joined(separator: ",")
        config = Array("""
        {"architecture":"amd64","os":"linux","created":"2024-01-01T00:00:00Z","config":{"Cmd":["/bin/true"]},\
        "history":[\(history)],"rootfs":{"type":"layers","diff_ids":[\(diffs)]}}
        """.utf8)
    }

    func write(to sink: ByteSink) throws {
        let w = TarWriter(sink)
        try w.writeFile(name: "\(id.hex).json", bytes: config)
        var names: [String] = []
        for (i, l) in layers.enumerated() {
            let name = "layer\(i)/layer.tar"
            try w.writeFile(name: name, bytes: l)
            names.append(name)
        }
        let manifest = "[{\"Config\":\"\(id.hex).json\",\"RepoTags\":[\"\(tag)\"],\"Layers\":[\(names.map { "\"\($0)\"" }.joined(separator: ","))]}]"
        try w.writeFile(name: "manifest.json", bytes: Array(manifest.utf8))
        try w.finish()
    }

    func archive() throws -> [UInt8] {
        let s = MemorySink()
        try write(to: s)
        return s.bytes
    }
}

func load(_ image: TestImage, into engine: EngineClient) throws -> [String] {
    try engine.loadImages { sink in try image.write(to: sink) }
}

func cleanup(_ engine: EngineClient, _ refs: [String]) {
    for r in refs { try? engine.removeImage(r, force: true) }
}

func assertThrows(_ body: () throws -> Void, containing parts: [String], kind: DogestryError.Kind? = nil,
                  file: StaticString = #filePath, line: UInt = #line) -> DogestryError? {
    do {
        try body()
        XCTFail("no error thrown (expected one containing \(parts))", file: file, line: line)
        return nil
    } catch let e as DogestryError {
        for p in parts { XCTAssertTrue(e.message.contains(p), "\(e.message) does not contain \(p)", file: file, line: line) }
        if let k = kind { XCTAssertEqual(e.kind, k, e.message, file: file, line: line) }
        XCTAssertFalse(e.message.contains("\n"), file: file, line: line)
        return e
    } catch {
        XCTFail("unexpected error type: \(error)", file: file, line: line)
        return nil
    }
}

/// Reads the entries of a tar stream; returns names and the bytes of `want` (if found).
func tarEntries(_ source: ByteSource, capture want: String) throws -> (names: [String], captured: [UInt8]?) {
    let r = TarReader(source, what: "export")
    var names: [String] = []
    var captured: [UInt8]?
    while let h = try r.next() {
        names.append(h.name)
        if h.name == want { captured = try r.body.readAll(limit: 16 << 20, what: want) }
    }
    try source.drain()
    return (names, captured)
}

// MARK: - Engine tests

final class EngineClientTests: XCTestCase {
    func testPingAndVersionDocker() throws {
        let docker = try engineFromEnvironment("DOGESTRY_TEST_DOCKER_HOST")
        try docker.ping()
        let v = try docker.version()
        XCTAssertFalse(v.isPodman)
        XCTAssertFalse(v.version.isEmpty)
        XCTAssertTrue(v.apiVersion.hasPrefix("1."), v.apiVersion)
        XCTAssertNotNil(v.components["Engine"])
        XCTAssertEqual(v.os, "linux")
    }

    func testPingAndVersionPodman() throws {
        let podman = try engineFromEnvironment("DOGESTRY_TEST_PODMAN_HOST")
        try podman.ping()
        let v = try podman.version()
        XCTAssertTrue(v.isPodman)
        XCTAssertTrue(v.version.hasPrefix("4."), v.version)
        XCTAssertTrue(v.apiVersion.hasPrefix("1."), v.apiVersion)
    }

    func testInspectKnownAndUnknownImage() throws {
        for variable in ["DOGESTRY_TEST_DOCKER_HOST", "DOGESTRY_TEST_PODMAN_HOST"] {
            let engine = try engineFromEnvironment(variable)
            let image = try TestImage(tag: "dogestry-test/inspect:\(uniqueSuffix())")
            defer { cleanup(engine, [image.id.hex]) }
            let lines = try load(image, into: engine)
            XCTAssertTrue(lines.contains { $0.hasPrefix("Loaded image") }, "\(variable): \(lines)")

            let byTag = try XCTUnwrap(try engine.inspectImage(image.tag), variable)
            XCTAssertEqual(byTag.id, image.id, variable)
            XCTAssertEqual(byTag.diffIDs, image.diffIDs, variable)
            XCTAssertEqual(byTag.chainIDs, image.chainIDs, variable)
            XCTAssertTrue(byTag.repoTags.contains { $0.hasSuffix(image.tag) }, "\(variable): \(byTag.repoTags)")
            let byID = try XCTUnwrap(try engine.inspectImage(image.id.description), variable)
            XCTAssertEqual(byID.id, image.id)
            let byHex = try XCTUnwrap(try engine.inspectImage(image.id.hex), variable)
            XCTAssertEqual(byHex.id, image.id)

            XCTAssertNil(try engine.inspectImage("dogestry-test/never-loaded:\(uniqueSuffix())"), variable)
            XCTAssertNil(try engine.inspectImage(Digest.of(randomBytes(16)).description), variable)
            XCTAssertNil(try engine.inspectImage(Digest.of(randomBytes(16)).hex), variable)
        }
    }

    func testListImagesAndPresentChainIDs() throws {
        for variable in ["DOGESTRY_TEST_DOCKER_HOST", "DOGESTRY_TEST_PODMAN_HOST"] {
            let engine = try engineFromEnvironment(variable)
            let image = try TestImage(tag: "dogestry-test/list:\(uniqueSuffix())", layerCount: 2)
            defer { cleanup(engine, [image.id.hex]) }
            let before = try engine.presentChainIDs()
            XCTAssertTrue(before.isDisjoint(with: image.chainIDs), variable)
            _ = try load(image, into: engine)

            let list = try engine.listImages()
            let mine = try XCTUnwrap(list.first { $0.id == image.id }, "\(variable): loaded image not listed")
            XCTAssertTrue(mine.repoTags.contains { $0.hasSuffix(image.tag) }, "\(variable): \(mine.repoTags)")
            XCTAssertFalse(list.contains { $0.repoTags.contains("<none>:<none>") })

            let present = try engine.presentChainIDs()
            XCTAssertEqual(image.chainIDs.count, 2)
            for c in image.chainIDs { XCTAssertTrue(present.contains(c), "\(variable): chain \(c) missing") }
        }
    }

    func testExportStreamsArchiveWithManifest() throws {
        for variable in ["DOGESTRY_TEST_DOCKER_HOST", "DOGESTRY_TEST_PODMAN_HOST"] {
            let engine = try engineFromEnvironment(variable)
            let a = try TestImage(tag: "dogestry-test/export-a:\(uniqueSuffix())")
            let b = try TestImage(tag: "dogestry-test/export-b:\(uniqueSuffix())", layerCount: 1)
            defer { cleanup(engine, [a.id.hex, b.id.hex]) }
            _ = try load(a, into: engine)
            _ = try load(b, into: engine)

            let stream = try engine.exportImages([a.tag, b.tag])
            let (names, manifestBytes) = try tarEntries(stream, capture: "manifest.json")
            let manifest = try XCTUnwrap(manifestBytes, "\(variable): no manifest.json in \(names)")
            let entries = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(manifest)) as? [[String: Any]])
            XCTAssertEqual(entries.count, 2, variable)
            let tags = entries.flatMap { $0["RepoTags"] as? [String] ?? [] }
            XCTAssertTrue(tags.contains { $0.hasSuffix(a.tag) }, "\(variable): \(tags)")
            XCTAssertTrue(tags.contains { $0.hasSuffix(b.tag) }, "\(variable): \(tags)")
            let configs = entries.compactMap { $0["Config"] as? String }
            XCTAssertTrue(configs.contains { $0.contains(a.id.hex) }, "\(variable): \(configs)")

            // By image ID (bare hex) too.
            let (_, byID) = try tarEntries(try engine.exportImages([b.id.hex]), capture: "manifest.json")
            let m2 = String(decoding: try XCTUnwrap(byID, variable), as: UTF8.self)
            XCTAssertTrue(m2.contains(b.id.hex), "\(variable): \(m2)")

            _ = assertThrows({ _ = try engine.exportImages(["dogestry-test/never-loaded:\(uniqueSuffix())"]) },
                             containing: ["engine \(engine.address)", "export of image"], kind: .engine)
        }
    }

    func testLoadRoundTripBetweenEngines() throws {
        let docker = try engineFromEnvironment("DOGESTRY_TEST_DOCKER_HOST")
        let podman = try engineFromEnvironment("DOGESTRY_TEST_PODMAN_HOST")
        for (from, to) in [(docker, podman), (podman, docker)] {
            let image = try TestImage(tag: "dogestry-test/roundtrip:\(uniqueSuffix())", layerCount: 2)
            defer { cleanup(from, [image.id.hex]); cleanup(to, [image.id.hex]) }
            _ = try load(image, into: from)
            XCTAssertNil(try to.inspectImage(image.id.hex))

            // export → load, streamed through the upload pipe (nothing buffered whole).
            let stream = try from.exportImages([image.tag])
            var copied: Int64 = 0
            let lines = try to.loadImages { sink in copied = try stream.copy(to: sink, chunkSize: 4096) }
            XCTAssertGreaterThan(copied, 2048)
            XCTAssertFalse(lines.isEmpty)
            let loaded = try XCTUnwrap(try to.inspectImage(image.id.hex), "\(from.address) → \(to.address)")
            XCTAssertEqual(loaded.diffIDs, image.diffIDs)
            XCTAssertTrue(loaded.repoTags.contains { $0.hasSuffix(image.tag) }, "\(loaded.repoTags)")
        }
    }

    func testLoadGarbageThrowsEngineMessage() throws {
        for variable in ["DOGESTRY_TEST_DOCKER_HOST", "DOGESTRY_TEST_PODMAN_HOST"] {
            let engine = try engineFromEnvironment(variable)
            let e = assertThrows({
                _ = try engine.loadImages { sink in
                    try sink.write(Array(repeating: UInt8(ascii: "x"), count: 100_000))
                }
            }, containing: ["engine \(engine.address): load failed: "], kind: .engine)
            // The engine's own words follow.
            XCTAssertGreaterThan(e?.message.count ?? 0, "engine \(engine.address): load failed: ".count + 5)
        }
    }

    func testLoadProducerErrorAbortsUpload() throws {
        struct Boom: Error {}
        let engine = try engineFromEnvironment("DOGESTRY_TEST_DOCKER_HOST")
        let image = try TestImage(tag: "dogestry-test/aborted:\(uniqueSuffix())")
        let bytes = try image.archive()
        do {
            _ = try engine.loadImages { sink in
                try sink.write(Array(bytes[0..<bytes.count / 2]))
                throw Boom()
            }
            XCTFail("load succeeded")
        } catch is Boom {
        }
        XCTAssertNil(try engine.inspectImage(image.id.hex))
        try engine.ping()  // the client still works
    }

    func testTagAndRemove() throws {
        for variable in ["DOGESTRY_TEST_DOCKER_HOST", "DOGESTRY_TEST_PODMAN_HOST"] {
            let engine = try engineFromEnvironment(variable)
            let image = try TestImage(tag: "dogestry-test/tag:\(uniqueSuffix())", layerCount: 1)
            defer { cleanup(engine, [image.id.hex]) }
            _ = try load(image, into: engine)
            let suffix = uniqueSuffix()
            try engine.tag(source: image.tag, repo: "dogestry-test/retagged", tag: suffix)
            let tagged = try XCTUnwrap(try engine.inspectImage("dogestry-test/retagged:\(suffix)"), variable)
            XCTAssertEqual(tagged.id, image.id)
            XCTAssertEqual(try engine.inspectImage(image.id.hex)?.repoTags.count, 2, variable)

            try engine.removeImage("dogestry-test/retagged:\(suffix)", force: false)
            XCTAssertNil(try engine.inspectImage("dogestry-test/retagged:\(suffix)"), variable)
            XCTAssertNotNil(try engine.inspectImage(image.tag), variable)
            try engine.removeImage(image.tag, force: true)
            XCTAssertNil(try engine.inspectImage(image.id.hex), variable)

            let missing = "dogestry-test/never-loaded:\(suffix)"
            _ = assertThrows({ try engine.removeImage(missing, force: true) },
                             containing: ["engine \(engine.address): image \"\(missing)\" not found"], kind: .engine)
            _ = assertThrows({ try engine.tag(source: missing, repo: "x/y", tag: "z") },
                             containing: ["engine \(engine.address): image \"\(missing)\" not found"], kind: .engine)
        }
    }

    func testUnreachableSocketNamesAddress() throws {
        let dir = NSTemporaryDirectory() + "dogestry-nope-\(uniqueSuffix())"
        let engine = try EngineClient(address: EngineAddress(parsing: "unix://\(dir)/nope.sock"))
        _ = assertThrows({ try engine.ping() },
                         containing: ["engine unix://\(dir)/nope.sock: cannot connect (No such file or directory)"], kind: .engine)
        _ = assertThrows({ _ = try engine.inspectImage("x") }, containing: ["engine unix://\(dir)/nope.sock: cannot connect"])
        _ = assertThrows({ _ = try engine.loadImages { try $0.write([1, 2, 3]) } },
                         containing: ["engine unix://\(dir)/nope.sock: cannot connect"])

        // A socket file nobody listens on.
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let path = dir + "/dead.sock"
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
        var addr = sockaddr_un()
        addr.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &addr.sun_path) { p in
            for (i, b) in path.utf8.enumerated() { p[i] = b }
        }
        let rc = withUnsafePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
        XCTAssertEqual(rc, 0)
        close(fd)
        let dead = try EngineClient(address: EngineAddress(parsing: "unix://\(path)"))
        _ = assertThrows({ try dead.ping() }, containing: ["engine unix://\(path): cannot connect (Connection refused)"])
    }

    func testEngineOverTCPClosedPort() throws {
        let port = try LoopbackPort.closed()
        let engine = try EngineClient(address: EngineAddress(parsing: "tcp://127.0.0.1:\(port)"))
        _ = assertThrows({ _ = try engine.version() },
                         containing: ["engine tcp://127.0.0.1:\(port): cannot connect (Connection refused)"], kind: .engine)
    }
}

// MARK: - Address parsing

final class EngineAddressTests: XCTestCase {
    func testParsing() throws {
        let u = try EngineAddress(parsing: "unix:///var/run/docker.sock")
        XCTAssertEqual(u.socketPath, "/var/run/docker.sock")
        XCTAssertEqual(u.description, "unix:///var/run/docker.sock")
        XCTAssertEqual(u.baseURL, "http://localhost")

        let t = try EngineAddress(parsing: "tcp://example.com:2376")
        XCTAssertEqual(t.endpoint, .tcp(host: "example.com", port: 2376))
        XCTAssertEqual(t.baseURL, "http://example.com:2376")
        XCTAssertEqual(t.description, "tcp://example.com:2376")

        XCTAssertEqual(try EngineAddress(parsing: "10.0.0.1:4243").description, "tcp://10.0.0.1:4243")
        XCTAssertEqual(try EngineAddress(parsing: "tcp://h").endpoint, .tcp(host: "h", port: 2375))
        let h = try EngineAddress(parsing: "https://h:9000/")
        XCTAssertTrue(h.tls)
        XCTAssertEqual(h.baseURL, "https://h:9000")
        XCTAssertEqual(try EngineAddress(parsing: "http://h").baseURL, "http://h:80")
        XCTAssertEqual(try EngineAddress(parsing: "tcp://[::1]:2375").baseURL, "http://[::1]:2375")

        for bad in ["", "unix://", "unix://relative.sock", "tcp://", "tcp://h:0", "tcp://h:x", "ftp://h", "tcp://h:1/path", "::1:80"] {
            XCTAssertThrowsError(try EngineAddress(parsing: bad), bad)
        }
        XCTAssertThrowsError(try EngineAddress(parsing: "ssh://user@host")) { e in
            XCTAssertEqual((e as? DogestryError)?.kind, .unsupported)
        }
    }

    func testResolvePrecedenceAndTLS() throws {
        XCTAssertEqual(try EngineAddress.resolve(flag: nil, environment: [:], config: nil).description,
                       "unix:///var/run/docker.sock")
        XCTAssertEqual(try EngineAddress.resolve(flag: nil, environment: [:], config: "tcp://c:1").description, "tcp://c:1")
        XCTAssertEqual(try EngineAddress.resolve(flag: nil, environment: ["DOCKER_HOST": "tcp://e:2"], config: "tcp://c:1").description,
                       "tcp://e:2")
        XCTAssertEqual(try EngineAddress.resolve(flag: "unix:///f.sock", environment: ["DOCKER_HOST": "tcp://e:2"], config: "tcp://c:1").description,
                       "unix:///f.sock")
        XCTAssertEqual(try EngineAddress.resolve(flag: "", environment: ["DOCKER_HOST": ""], config: "tcp://c:1").description,
                       "tcp://c:1")

        let env = ["DOCKER_HOST": "tcp://e:2376", "DOCKER_TLS_VERIFY": "1", "DOCKER_CERT_PATH": "/certs"]
        let a = try EngineAddress.resolve(flag: nil, environment: env, config: nil)
        XCTAssertTrue(a.tls)
        XCTAssertEqual(a.baseURL, "https://e:2376")
        XCTAssertEqual(a.caCert, "/certs/ca.pem")
        XCTAssertEqual(a.clientCert, "/certs/cert.pem")
        XCTAssertEqual(a.clientKey, "/certs/key.pem")

        let home = try EngineAddress.resolve(flag: "tcp://e", environment: ["DOCKER_TLS_VERIFY": "yes", "HOME": "/home/u"], config: nil)
        XCTAssertEqual(home.caCert, "/home/u/.docker/ca.pem")
        XCTAssertEqual(home.baseURL, "https://e:2376")

        let off = try EngineAddress.resolve(flag: "tcp://e:2375", environment: ["DOCKER_TLS_VERIFY": "0"], config: nil)
        XCTAssertFalse(off.tls)
        XCTAssertNil(off.caCert)
        let unix = try EngineAddress.resolve(flag: nil, environment: ["DOCKER_TLS_VERIFY": "1"], config: nil)
        XCTAssertFalse(unix.tls)

        // Missing certificate files are reported when the client is made.
        XCTAssertThrowsError(try EngineClient(address: a)) { e in
            XCTAssertTrue("\(e)".contains("/certs/ca.pem"), "\(e)")
        }
    }
}

// MARK: - HTTP client


/// A tiny HTTP/1.1 server in Python (keep-alive, chunked uploads) for transport tests.
final class TestHTTPServer {
    static let script = #"""
import hashlib, http.server, json, socketserver, sys, time

BLOCK = bytes(range(256)) * 4096  # 1 MiB

class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def log_message(self, *a): pass

    def reply(self, status, body, ctype="application/json", extra=()):
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for k, v in extra: self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)

    def query(self):
        q = {}
        if "?" in self.path:
            for kv in self.path.split("?", 1)[1].split("&"):
                k, _, v = kv.partition("=")
                q[k] = v
        return q

    def read_body(self):
        h = hashlib.sha256(); n = 0
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            while True:
                line = self.rfile.readline()
                if not line: raise ConnectionError("eof")
                size = int(line.split(b";")[0].strip(), 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""): pass
                    break
                while size > 0:
                    b = self.rfile.read(min(size, 1 << 20))
                    if not b: raise ConnectionError("eof")
                    h.update(b); n += len(b); size -= len(b)
                self.rfile.readline()
        else:
            left = int(self.headers.get("Content-Length", "0"))
            while left > 0:
                b = self.rfile.read(min(left, 1 << 20))
                if not b: raise ConnectionError("eof")
                h.update(b); n += len(b); left -= len(b)
        return n, h.hexdigest()

    def do_GET(self):
        p = self.path.split("?", 1)[0]
        q = self.query()
        if p == "/bytes":
            n = int(q.get("n", "0"))
            self.send_response(200)
            self.send_header("Content-Length", str(n))
            self.send_header("X-Test", "a")
            self.send_header("x-test", "b")
            self.end_headers()
            try:
                while n > 0:
                    k = min(n, len(BLOCK)); self.wfile.write(BLOCK[:k]); n -= k
            except (BrokenPipeError, ConnectionResetError):
                self.close_connection = True
        elif p == "/port":
            self.reply(200, str(self.client_address[1]).encode(), "text/plain")
        elif p == "/stall":
            self.send_response(200)
            self.send_header("Content-Length", "1000")
            self.end_headers()
            self.wfile.write(b"x" * 10); self.wfile.flush()
            time.sleep(20)
            self.close_connection = True
        elif p.startswith("/status/"):
            self.reply(int(p[8:]), b'{"message":"you asked for it"}')
        else:
            self.reply(404, b'{"message":"no route"}')

    def do_HEAD(self):
        q = self.query()
        self.send_response(200)
        self.send_header("Content-Length", q.get("n", "0"))
        self.end_headers()

    def do_POST(self):
        try:
            n, digest = self.read_body()
        except (ConnectionError, ValueError):
            self.close_connection = True
            return
        self.reply(200, json.dumps({"count": n, "sha256": digest,
                                    "chunked": self.headers.get("Transfer-Encoding", ""),
                                    "expect": self.headers.get("Expect", ""),
                                    "method": self.command}).encode())
    do_PUT = do_POST

class S(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True

s = S(("127.0.0.1", 0), H)
print(s.server_address[1], flush=True)
s.serve_forever()
"""#

    let process = Process()
    let port: Int
    var base: String { "http://127.0.0.1:\(port)" }

    init() throws {
        let scriptPath = NSTemporaryDirectory() + "dogestry-http-test-\(uniqueSuffix()).py"
        try TestHTTPServer.script.write(toFile: scriptPath, atomically: true, encoding: .utf8)
        let out = Pipe()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = ["python3", scriptPath]
        process.standardOutput = out
        try process.run()
        var line = [UInt8]()
        let h = out.fileHandleForReading
        while true {
            let d = h.readData(ofLength: 1)
            if d.isEmpty || d.first == UInt8(ascii: "\n") { break }
            line.append(contentsOf: d)
        }
        try? FileManager.default.removeItem(atPath: scriptPath)
        guard let p = Int(String(decoding: line, as: UTF8.self)) else {
            process.terminate()
            throw DogestryError.io("test HTTP server did not start")
        }
        port = p
    }

    func stop() {
        if process.isRunning { process.terminate(); process.waitUntilExit() }
    }
}

/// Resident set size now, from /proc/self/statm (bytes).
func currentRSS() -> Int {
    guard let s = try? String(contentsOfFile: "/proc/self/statm", encoding: .utf8) else { return 0 }
    let parts = s.split(separator: " ")
    return parts.count > 1 ? (Int(parts[1]) ?? 0) * Int(sysconf(Int32(_SC_PAGESIZE))) : 0
}

/// Peak RSS of the process so far (bytes).
func maxRSS() -> Int {
    var u = rusage()
    getrusage(0 /* RUSAGE_SELF */, &u)
    return u.ru_maxrss * 1024
}

/// A value shared between threads.
final class Locked<T>: @unchecked Sendable {  // (guarded by its lock)
    private let lock = NSLock()
    private var value: T
    init(_ v: T) { value = v }
    func get() -> T { lock.lock(); defer { lock.unlock() }; return value }
    func update(_ f: (inout T) -> Void) { lock.lock(); f(&value); lock.unlock() }
}

/// Samples the RSS while `body` runs; returns the highest value seen.
func peakRSS(during body: () throws -> Void) rethrows -> Int {
    let peak = Locked(currentRSS())
    let running = Locked(true)
    let sampler = Thread {
        while running.get() {
            let r = currentRSS()
            peak.update { $0 = max($0, r) }
            usleep(5000)
        }
    }
    sampler.start()
    defer { running.update { $0 = false }; usleep(20000) }
    try body()
    return peak.get()
}

final class HTTPClientTests: XCTestCase {
    var server: TestHTTPServer!

    override func setUpWithError() throws {
        server = try TestHTTPServer()
    }
    override func tearDown() {
        server?.stop()
    }

    func testLargeBodiesStreamWithBoundedMemory() throws {
        let client = HTTPClient(options: HTTPTransportOptions())
        let size: Int64 = 200 << 20
        let rssBefore = currentRSS()
        let maxBefore = maxRSS()

        var downloaded: Int64 = 0
        var uploaded: [String: Any] = [:]
        let peak = try peakRSS {
            // Download through open(): transfer thread → BoundedPipe → reader.
            let (resp, body) = try client.open(HTTPRequest(url: "\(server.base)/bytes?n=\(size)"))
            XCTAssertEqual(resp.status, 200)
            XCTAssertEqual(resp.header("Content-Length"), "\(size)")
            let sink = NullSink()
            downloaded = try body.copy(to: sink)

            // Upload a chunked stream of unknown length produced on another thread.
            let reply = MemorySink()
            let r = try client.upload(HTTPRequest(method: "POST", url: "\(server.base)/upload"), into: reply) { sink in
                var chunk = [UInt8](repeating: 0, count: 1 << 20)
                for i in 0..<200 { chunk[0] = UInt8(i & 255); try sink.write(chunk) }
            }
            XCTAssertEqual(r.status, 200)
            uploaded = try JSONSerialization.jsonObject(with: reply.data) as? [String: Any] ?? [:]

            // And a BoundedPipe source of known length through perform().
            let pipe = BoundedPipe(capacity: 1 << 20)
            let producer = Thread {
                let block = [UInt8](repeating: 7, count: 64 << 10)
                do { for _ in 0..<(size / Int64(block.count)) { try pipe.writer.write(block) }; try pipe.writer.close() } catch { pipe.fail(error) }
            }
            producer.start()
            let reply2 = MemorySink()
            let r2 = try client.perform(HTTPRequest(method: "PUT", url: "\(server.base)/put", body: .source(pipe.reader, length: size)),
                                        into: reply2)
            XCTAssertEqual(r2.status, 200)
            let j2 = try JSONSerialization.jsonObject(with: reply2.data) as? [String: Any] ?? [:]
            XCTAssertEqual((j2["count"] as? NSNumber)?.int64Value, size)
            XCTAssertEqual(j2["chunked"] as? String, "")
            XCTAssertEqual(j2["method"] as? String, "PUT")
        }
        XCTAssertEqual(downloaded, size)
        XCTAssertEqual((uploaded["count"] as? NSNumber)?.int64Value, size)
        XCTAssertEqual(uploaded["chunked"] as? String, "chunked")
        XCTAssertEqual(uploaded["expect"] as? String, "", "Expect: 100-continue must be off")
        XCTAssertLessThan(peak - rssBefore, 64 << 20, "RSS grew by \((peak - rssBefore) >> 20) MiB")
        XCTAssertLessThan(maxRSS() - maxBefore, 64 << 20, "max RSS grew by \((maxRSS() - maxBefore) >> 20) MiB")
    }

    func testConnectionReuseAndHeaders() throws {
        let client = HTTPClient(options: HTTPTransportOptions())
        let (r1, b1) = try client.fetch(HTTPRequest(url: "\(server.base)/port"))
        let (r2, b2) = try client.fetch(HTTPRequest(url: "\(server.base)/port"))
        XCTAssertEqual(r1.status, 200)
        XCTAssertEqual(r2.header("CONTENT-TYPE"), "text/plain")
        XCTAssertEqual(b1, b2, "second request used a new connection")

        let (r3, b3) = try client.fetch(HTTPRequest(url: "\(server.base)/bytes?n=10"))
        XCTAssertEqual(b3.count, 10)
        XCTAssertEqual(r3.header("x-test"), "b", "last header wins")
        XCTAssertTrue(r3.errorBody.isEmpty)

        // POST of bytes, Content-Length.
        let (r4, b4) = try client.fetch(HTTPRequest(method: "POST", url: "\(server.base)/p", body: .bytes(Array("hello".utf8))))
        XCTAssertEqual(r4.status, 200)
        let j = try JSONSerialization.jsonObject(with: Data(b4)) as? [String: Any]
        XCTAssertEqual(j?["count"] as? Int, 5)
        XCTAssertEqual(j?["sha256"] as? String, Digest.of("hello").hex)
        // POST without a body.
        let (r5, b5) = try client.fetch(HTTPRequest(method: "POST", url: "\(server.base)/p"))
        XCTAssertEqual(r5.status, 200)
        XCTAssertEqual((try JSONSerialization.jsonObject(with: Data(b5)) as? [String: Any])?["count"] as? Int, 0)
        // HEAD.
        let (r6, b6) = try client.fetch(HTTPRequest(method: "HEAD", url: "\(server.base)/bytes?n=77"))
        XCTAssertEqual(r6.header("content-length"), "77")
        XCTAssertTrue(b6.isEmpty)
    }

    func testErrorStatusesAndLimits() throws {
        let client = HTTPClient(options: HTTPTransportOptions())
        let sink = MemorySink()
        let r = try client.perform(HTTPRequest(url: "\(server.base)/status/503"), into: sink)
        XCTAssertEqual(r.status, 503)
        XCTAssertEqual(String(decoding: r.errorBody, as: UTF8.self), #"{"message":"you asked for it"}"#)
        XCTAssertEqual(sink.bytes, r.errorBody)
        XCTAssertEqual(r.errorText(), #"{"message":"you asked for it"}"#)

        let (r2, body) = try client.open(HTTPRequest(url: "\(server.base)/status/404"))
        XCTAssertEqual(r2.status, 404)
        XCTAssertEqual(try body.readAll(limit: 1000, what: "body"), r2.errorBody)

        _ = assertThrows({ _ = try client.fetch(HTTPRequest(url: "\(server.base)/bytes?n=5000"), limit: 1000) },
                         containing: ["is larger than 1000 bytes"])
        // The client still works afterwards.
        XCTAssertEqual(try client.fetch(HTTPRequest(url: "\(server.base)/bytes?n=3")).1.count, 3)
    }

    func testCancelAbortsStreamingTransfer() throws {
        let client = HTTPClient(options: HTTPTransportOptions())
        let (resp, body) = try client.open(HTTPRequest(url: "\(server.base)/bytes?n=\(Int64(8) << 30)"))
        XCTAssertEqual(resp.status, 200)
        var buf = [UInt8](repeating: 0, count: 1 << 20)
        var got = 0
        while got < 10 << 20 { got += try buf.withUnsafeMutableBytes { try body.read(into: $0) } }
        body.cancel()
        XCTAssertThrowsError(try buf.withUnsafeMutableBytes { p in while try body.read(into: p) > 0 {} }) { e in
            XCTAssertEqual((e as? DogestryError)?.kind, .aborted, "\(e)")
        }
        // Dropping an unread body aborts too; the client goes on working.
        do { _ = try client.open(HTTPRequest(url: "\(server.base)/bytes?n=\(Int64(8) << 30)")) }
        XCTAssertEqual(try client.fetch(HTTPRequest(url: "\(server.base)/bytes?n=3")).1.count, 3)
    }

    func testTransferErrorReachesReader() throws {
        // The server promises 1000 bytes, sends 10, stalls; a 1 s stall limit fires.
        var o = HTTPTransportOptions()
        o.lowSpeedTimeout = 1
        let client = HTTPClient(options: o)
        let (resp, body) = try client.open(HTTPRequest(url: "\(server.base)/stall?X-Amz-Signature=secret"))
        XCTAssertEqual(resp.status, 200)
        let e = assertThrows({ _ = try body.readAll(limit: 1 << 20, what: "body") },
                             containing: ["transfer with \(server.base)/stall stalled: no data moved for 1 s"])
        XCTAssertFalse(e?.message.contains("secret") ?? true)
    }

    func testClosedPortAndBadHost() throws {
        let port = try LoopbackPort.closed()
        let client = HTTPClient(options: HTTPTransportOptions(connectTimeout: 5))
        let e = assertThrows({ _ = try client.fetch(HTTPRequest(url: "http://user:pw@127.0.0.1:\(port)/x?signature=s3cr3t")) },
                             containing: ["cannot connect to http://127.0.0.1:\(port): Connection refused"], kind: .remote)
        XCTAssertFalse(e?.message.contains("s3cr3t") ?? true)
        XCTAssertFalse(e?.message.contains("pw") ?? true)
        _ = assertThrows({ _ = try client.open(HTTPRequest(url: "http://127.0.0.1:\(port)/y")) },
                         containing: ["cannot connect to http://127.0.0.1:\(port)"])
        _ = assertThrows({ _ = try client.upload(HTTPRequest(method: "PUT", url: "http://127.0.0.1:\(port)/y"), into: NullSink()) { s in
            for _ in 0..<100 { try s.write([UInt8](repeating: 1, count: 1 << 20)) }
        } }, containing: ["cannot connect to http://127.0.0.1:\(port)"])
        _ = assertThrows({ _ = try client.fetch(HTTPRequest(url: "http://no-such-host.invalid/")) },
                         containing: ["no-such-host.invalid"])
        _ = assertThrows({ _ = try client.fetch(HTTPRequest(url: "gopher+x://h/")) }, containing: ["gopher+x://h/"])

        let unix = HTTPClient(options: HTTPTransportOptions(unixSocket: "/tmp/dogestry-no-such-dir/x.sock"))
        _ = assertThrows({ _ = try unix.fetch(HTTPRequest(url: "http://localhost/_ping")) },
                         containing: ["cannot connect to unix:///tmp/dogestry-no-such-dir/x.sock: No such file or directory"])
    }

    func testUploadShortSourceAndProducerError() throws {
        struct Boom: Error {}
        let client = HTTPClient(options: HTTPTransportOptions())
        // Declared length larger than what the source has.
        _ = assertThrows({
            _ = try client.perform(HTTPRequest(method: "PUT", url: "\(server.base)/short",
                                               body: .source(MemorySource([1, 2, 3]), length: 10)), into: NullSink())
        }, containing: ["ended after 3 of 10 bytes"])
        do {
            _ = try client.upload(HTTPRequest(method: "PUT", url: "\(server.base)/boom"), into: NullSink()) { sink in
                try sink.write([UInt8](repeating: 1, count: 3 << 20))
                throw Boom()
            }
            XCTFail("no error")
        } catch is Boom {}
        XCTAssertEqual(try client.fetch(HTTPRequest(url: "\(server.base)/bytes?n=3")).1.count, 3)
    }
}

final class BoundedPipeTests: XCTestCase {
    func testBoundsAndOrder() throws {
        let pipe = BoundedPipe(capacity: 1000)
        let total = 1_000_000
        let producer = Thread {
            var i = 0
            while i < total {
                let n = min(777, total - i)
                try? pipe.writer.write((i..<(i + n)).map { UInt8($0 & 255) })
                XCTAssertLessThanOrEqual(pipe.buffered, 1000)
                i += n
            }
            try? pipe.writer.close()
        }
        producer.start()
        var got = 0
        var buf = [UInt8](repeating: 0, count: 333)
        while true {
            let n = try buf.withUnsafeMutableBytes { try pipe.reader.read(into: $0) }
            if n == 0 { break }
            for k in 0..<n { XCTAssertEqual(buf[k], UInt8((got + k) & 255)) }
            got += n
        }
        XCTAssertEqual(got, total)
    }

    func testFailurePropagatesBothWays() throws {
        struct Stop: Error {}
        let pipe = BoundedPipe(capacity: 10)
        let done = DispatchSemaphore(value: 0)
        let writerError = Locked<Error?>(nil)
        Thread {
            do { for _ in 0..<100 { try pipe.writer.write([UInt8](repeating: 1, count: 7)) } } catch { writerError.update { $0 = error } }
            done.signal()
        }.start()
        usleep(50_000)
        pipe.fail(Stop())  // the reader gives up: the blocked writer wakes with the error
        done.wait()
        XCTAssertTrue(writerError.get() is Stop)
        XCTAssertThrowsError(try [UInt8](repeating: 0, count: 4).withUnsafeBytes { _ in
            var b = [UInt8](repeating: 0, count: 4)
            _ = try b.withUnsafeMutableBytes { try pipe.reader.read(into: $0) }
        }) { XCTAssertTrue($0 is Stop) }

        let p2 = BoundedPipe(capacity: 10)
        try p2.writer.write([1, 2, 3])
        p2.fail(DogestryError.io("producer broke"))
        var b = [UInt8](repeating: 0, count: 4)
        XCTAssertThrowsError(try b.withUnsafeMutableBytes { try p2.reader.read(into: $0) }) {
            XCTAssertEqual(($0 as? DogestryError)?.message, "producer broke")
        }
    }
}
