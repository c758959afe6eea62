import DogestryCore
import DogestryEngine
import DogestryRemotes
import DogestrySync
import DogestryTestSupport
import Foundation
import XCTest
#if canImport(Glibc)
import Glibc
#endif

/// Helpers for tests that talk to the real engines (dockerd, podman) started by scripts/test.
///
/// Everything is namespaced under `EngineTestSupport` so it cannot clash with helpers of other
/// test files in this module.
enum EngineTestSupport {
    static var environment: [String: String] { ProcessInfo.processInfo.environment }
    static var enginesRequired: Bool { environment["DOGESTRY_REQUIRE_ENGINES"] == "1" }

    /// Skips the test, or fails it when DOGESTRY_REQUIRE_ENGINES=1.
    static func unavailable(_ why: String, file: StaticString, line: UInt) -> Error {
        if enginesRequired {
            XCTFail("\(why) but DOGESTRY_REQUIRE_ENGINES=1", file: file, line: line)
            return DogestryError.invalid(why)
        }
        return XCTSkip("\(why) (start engines with scripts/lib/engines.sh, or run scripts/test)")
    }

    /// The engine named by DOGESTRY_TEST_DOCKER_HOST / DOGESTRY_TEST_PODMAN_HOST.
    static func engine(_ variable: String, file: StaticString = #filePath, line: UInt = #line) throws -> EngineClient {
        guard let host = environment[variable], !host.isEmpty else {
            throw unavailable("\(variable) is not set", file: file, line: line)
        }
        return try EngineClient(address: EngineAddress(parsing: host))
    }

    static func docker(file: StaticString = #filePath, line: UInt = #line) throws -> EngineClient {
        try engine("DOGESTRY_TEST_DOCKER_HOST", file: file, line: line)
    }

    static func podman(file: StaticString = #filePath, line: UInt = #line) throws -> EngineClient {
        try engine("DOGESTRY_TEST_PODMAN_HOST", file: file, line: line)
    }

    /// A fixture archive from $DOGESTRY_FIXTURES (default ~/.cache/dogestry-fixtures).
    static func fixture(_ name: String, file: StaticString = #filePath, line: UInt = #line) throws -> String {
        let dir = environment["DOGESTRY_FIXTURES"].flatMap { $0.isEmpty ? nil : $0 }
            ?? (environment["HOME"] ?? "/root") + "/.cache/dogestry-fixtures"
        let path = dir + "/" + name
        guard FileManager.default.isReadableFile(atPath: path) else {
            throw unavailable("fixture \(path) is missing (scripts/test builds it)", file: file, line: line)
        }
        return path
    }

    static func uniqueSuffix() -> String { String(UInt64.random(in: 0...UInt64.max), radix: 36) }

    /// A fresh directory under the temporary directory.
    static func makeTempDirectory(_ prefix: String) throws -> String {
        let base = ProcessInfo.processInfo.environment["TMPDIR"].flatMap { $0.isEmpty ? nil : $0 } ?? "/tmp"
        let path = base + "/\(prefix)-\(uniqueSuffix())"
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        return path
    }

    /// Every object key under `prefix` on a remote.
    static func keys(_ remote: Remote, prefix: String) throws -> Set<String> {
        var out = Set<String>()
        try remote.list(prefix: prefix) { out.insert($0.key) }
        return out
    }
}

// MARK: - Test images derived from the fixtures

extension EngineTestSupport {
    /// A single-image docker-load archive held in memory, derived from a fixture archive so the
    /// test owns it: a label makes its config (and so its image ID) unique, and the top layer can
    /// be made unique too (a small file appended), so no other test's images can interfere.
    struct Image {
        var tag: String
        var layers: [[UInt8]]
        var config: [UInt8]
        var id: Digest { Digest.of(config) }
        var diffIDs: [Digest] { layers.map { Digest.of($0) } }
        var chainIDs: [Digest] { Digest.chainIDs(diffIDs) }
        /// name (without tag) and tag of `tag`.
        var name: String { String(tag[..<tag.lastIndex(of: ":")!]) }
        var tagPart: String { String(tag[tag.index(after: tag.lastIndex(of: ":")!)...]) }

        /// Reads the single image of `fixture` (e.g. docker-app-v1.tar).
        init(fixture: String, tag: String, label: String, cmd: [String]? = nil, uniqueTopLayer: Bool = false) throws {
            let path = try EngineTestSupport.fixture(fixture)
            let files = try EngineTestSupport.readTar(path)
            guard let mbytes = files["manifest.json"],
                  let manifest = try JSONSerialization.jsonObject(with: Data(mbytes)) as? [[String: Any]],
                  manifest.count == 1, let cfgName = manifest[0]["Config"] as? String,
                  let layerNames = manifest[0]["Layers"] as? [String], let cfgBytes = files[cfgName] else {
                throw DogestryError.invalid("fixture \(fixture) is not a single-image docker-save archive")
            }
            var layers = try layerNames.map { n -> [UInt8] in
                guard let l = files[n] else { throw DogestryError.invalid("fixture \(fixture) lacks \(n)") }
                return l
            }
            if uniqueTopLayer {
                layers[layers.count - 1] = try EngineTestSupport.appendFile(
                    to: layers[layers.count - 1], name: "dogestry-unique-\(label).txt",
                    bytes: Array("unique top layer \(label) \(UUID().uuidString)\n".utf8))
            }
            guard var cfg = try JSONSerialization.jsonObject(with: Data(cfgBytes)) as? [String: Any] else {
                throw DogestryError.invalid("fixture \(fixture): config is not a JSON object")
            }
            var c = cfg["config"] as? [String: Any] ?? [:]
            var labels = c["Labels"] as? [String: Any] ?? [:]
            labels["io.dogestry.test"] = label
            c["Labels"] = labels
            if let cmd { c["Cmd"] = cmd }
            cfg["config"] = c
            var rootfs = cfg["rootfs"] as? [String: Any] ?? ["type": "layers"]
            rootfs["diff_ids"] = layers.map { Digest.of($0).description }
            cfg["rootfs"] = rootfs
            self.tag = tag
            self.layers = layers
            self.config = [UInt8](try JSONSerialization.data(withJSONObject: cfg, options: [.sortedKeys, .withoutEscapingSlashes]))
        }

        /// The same layers with another config (e.g. a different Cmd).
        func withConfig(tag: String, label: String, cmd: [String]) throws -> Image {
            var copy = self
            guard var cfg = try JSONSerialization.jsonObject(with: Data(config)) as? [String: Any] else {
                throw DogestryError.invalid("config is not a JSON object")
            }
            var c = cfg["config"] as? [String: Any] ?? [:]
            var labels = c["Labels"] as? [String: Any] ?? [:]
            labels["io.dogestry.test"] = label
            c["Labels"] = labels
            c["Cmd"] = cmd
            cfg["config"] = c
            copy.config = [UInt8](try JSONSerialization.data(withJSONObject: cfg, options: [.sortedKeys, .withoutEscapingSlashes]))
            copy.tag = tag
            return copy
        }

        func write(to sink: ByteSink) throws {
            let w = TarWriter(sink)
            try w.writeFile(name: "\(id.hex).json", bytes: config)
            var names: [String] = []
            for (i, l) in layers.enumerated() {
                let name = "\(diffIDs[i].hex)/layer.tar"
                if names.contains(name) { continue }
                try w.writeHeader(TarHeader(name: diffIDs[i].hex, type: .directory, mode: 0o755))
                try w.writeFile(name: name, bytes: l)
                names.append(name)
            }
            let manifest: [[String: Any]] = [["Config": "\(id.hex).json", "RepoTags": [tag],
                                              "Layers": diffIDs.map { "\($0.hex)/layer.tar" }]]
            try w.writeFile(name: "manifest.json", bytes: [UInt8](try JSONSerialization.data(withJSONObject: manifest, options: [.withoutEscapingSlashes])))
            try w.finish()
        }

        func archive() throws -> [UInt8] {
            let s = MemorySink(limit: 256 << 20)
            try write(to: s)
            return s.bytes
        }

        /// Loads the image into an engine (streamed through `POST /images/load`).
        func load(into engine: EngineClient) throws {
            _ = try engine.loadImages { sink in try self.write(to: sink) }
        }

        /// Pushes the image from its archive (no engine involved) to `remote`.
        @discardableResult
        func push(to remote: Remote) throws -> PushReport {
            let pusher = Pusher(repository: Repository(remote: remote), options: TransferOptions(), progress: SilentProgress())
            return try pusher.pushArchive(MemorySource(try archive()), what: "test archive \(tag)", selections: [tag])
        }
    }

    /// The regular files of a (small) tar file by normalized path.
    static func readTar(_ path: String) throws -> [String: [UInt8]] {
        let src = try FileSource(path: path)
        let tar = TarReader(src, what: path)
        var out: [String: [UInt8]] = [:]
        while let h = try tar.next() {
            guard h.type == .file else { continue }
            let name = try normalizeArchivePath(h.name, what: path)
            out[name] = try tar.body.readAll(limit: 256 << 20, what: "\(path): \(name)")
        }
        return out
    }

    /// Appends a regular file to a tar (before its end-of-archive marker).
    static func appendFile(to tar: [UInt8], name: String, bytes: [UInt8]) throws -> [UInt8] {
        var off = 0
        while off + 512 <= tar.count {
            let header = tar[off..<off + 512]
            if header.allSatisfy({ $0 == 0 }) { break }
            let field = tar[(off + 124)..<(off + 136)]
            var size = 0
            if field.first! & 0x80 != 0 {
                for b in field.dropFirst() { size = size << 8 | Int(b) }
            } else {
                for b in field where b >= 0x30 && b <= 0x37 { size = size * 8 + Int(b - 0x30) }
            }
            off += 512 + (size + 511) / 512 * 512
        }
        guard off <= tar.count else { throw DogestryError.invalid("layer tar is truncated") }
        let sink = MemorySink(limit: 256 << 20)
        try sink.write(Array(tar[0..<off]))
        let w = TarWriter(sink)
        try w.writeFile(name: name, bytes: bytes)
        try w.finish()
        return sink.bytes
    }
}

// MARK: - A remote that counts what is read from it

extension EngineTestSupport {
    /// Wraps a remote and counts, per key, how often it was opened and how many bytes were read.
    final class CountingRemote: Remote, @unchecked Sendable {  // (counters are locked)
        let inner: Remote
        private let lock = NSLock()
        private var read: [String: Int64] = [:]
        private var opened: [String: Int] = [:]

        init(_ inner: Remote) { self.inner = inner }

        var displayURL: String { inner.displayURL }
        func stat(_ key: String) throws -> RemoteObject? { try inner.stat(key) }
        func open(_ key: String) throws -> ByteSource {
            let s = try inner.open(key)
            lock.lock(); opened[key, default: 0] += 1; lock.unlock()
            return CountingSource(s) { [weak self] n in
                guard let self else { return }
                self.lock.lock(); self.read[key, default: 0] += Int64(n); self.lock.unlock()
            }
        }
        func put(_ key: String, bytes: [UInt8]) throws { try inner.put(key, bytes: bytes) }
        func put(_ key: String, file: StagedFile, size: Int64) throws { try inner.put(key, file: file, size: size) }
        func delete(_ key: String) throws { try inner.delete(key) }
        func list(prefix: String, _ each: (RemoteObject) throws -> Void) throws { try inner.list(prefix: prefix, each) }
        func makeStagedFile() throws -> StagedFile { try inner.makeStagedFile() }
        func check() throws -> String { try inner.check() }

        /// Bytes read per key.
        var bytesRead: [String: Int64] { lock.lock(); defer { lock.unlock() }; return read }
        /// Opens per key.
        var opens: [String: Int] { lock.lock(); defer { lock.unlock() }; return opened }
        func bytesRead(keys: [String]) -> Int64 { let r = bytesRead; return keys.reduce(0) { $0 + (r[$1] ?? 0) } }
        func reset() { lock.lock(); read = [:]; opened = [:]; lock.unlock() }
    }

    final class CountingSource: ByteSource {
        let inner: ByteSource
        let onRead: (Int) -> Void
        init(_ inner: ByteSource, onRead: @escaping (Int) -> Void) { self.inner = inner; self.onRead = onRead }
        func read(into buffer: UnsafeMutableRawBufferPointer) throws -> Int {
            let n = try inner.read(into: buffer)
            if n > 0 { onRead(n) }
            return n
        }
    }
}

// MARK: - A logging proxy in front of an engine socket

extension EngineTestSupport {
    /// A loopback unix-socket proxy (a small Python script) that forwards to an engine's socket
    /// and logs every byte the client sends, so a test can see which API requests were made.
    final class RequestLogProxy {
        /// The project's one proxy script (`proxy.py unix`).
        static let scriptPath = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
            .appendingPathComponent("../../scripts/lib/proxy.py").standardized.path

        let dir: String
        let socketPath: String
        let logPath: String
        let process = Process()

        /// Starts a proxy to the engine at `target` (a unix:// address).
        init(target: EngineAddress) throws {
            guard let targetPath = target.socketPath else { throw DogestryError.invalid("the proxy needs a unix socket engine") }
            dir = try EngineTestSupport.makeTempDirectory("dg-proxy")
            socketPath = dir + "/engine.sock"
            logPath = dir + "/requests.log"
            _ = FileManager.default.createFile(atPath: logPath, contents: nil)
            process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
            process.arguments = ["python3", Self.scriptPath, "unix", socketPath, targetPath, logPath]
            process.standardInput = FileHandle.nullDevice
            process.standardOutput = FileHandle.nullDevice
            try process.run()
            let deadline = Date().addingTimeInterval(15)
            while !FS.exists(socketPath) {
                guard process.isRunning, Date() < deadline else {
                    stop()
                    throw DogestryError.io("the request-logging proxy did not start")
                }
                usleep(20_000)
            }
        }

        var address: EngineAddress { get throws { try EngineAddress(parsing: "unix://" + socketPath) } }

        /// Everything clients sent so far.
        var log: String { (try? String(contentsOfFile: logPath, encoding: .isoLatin1)) ?? "" }

        /// Forgets what was logged so far.
        func clearLog() { _ = truncate(logPath, 0) }

        /// The HTTP request lines clients sent ("GET /v1.41/images/x/json HTTP/1.1").
        var requestLines: [String] {
            log.components(separatedBy: "\r\n").filter { l in
                ["GET ", "POST ", "DELETE ", "HEAD ", "PUT "].contains { l.hasPrefix($0) } && l.contains(" HTTP/1.")
            }
        }

        func stop() {
            ChildProcess.stop(process)
            try? FileManager.default.removeItem(atPath: dir)
        }

        deinit { stop() }
    }
}

// MARK: - Running the CLI

extension EngineTestSupport {
    struct CLIResult {
        var status: Int32
        var stdout: String
        var stderr: String
        var stderrLines: [String] { stderr.split(separator: "\n").map(String.init) }
    }

    /// The `dogestry` binary built next to the test bundle (`<scratch>/debug/dogestry`), or $DOGESTRY_BIN.
    static func dogestryBinary(file: StaticString = #filePath, line: UInt = #line) throws -> String {
        if let b = environment["DOGESTRY_BIN"], !b.isEmpty { return b }
        var candidates: [URL] = []
        for b in Bundle.allBundles + [Bundle.main] where b.bundlePath.hasSuffix(".xctest") {
            candidates.append(b.bundleURL.deletingLastPathComponent())
        }
        for a in CommandLine.arguments where a.hasSuffix(".xctest") {
            candidates.append(URL(fileURLWithPath: a).deletingLastPathComponent())
        }
        candidates.append(URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent())
        for dir in candidates {
            let p = dir.appendingPathComponent("dogestry").path
            if FileManager.default.isExecutableFile(atPath: p) { return p }
        }
        XCTFail("cannot find the dogestry binary next to the test bundle (looked in \(candidates.map { $0.path }))", file: file, line: line)
        throw DogestryError.notFound("dogestry binary")
    }

    /// Runs the CLI in `directory` (no dogestry.cfg there or in XDG_CONFIG_HOME). DOCKER_HOST is
    /// removed from the environment unless `environment` sets it.
    static func runCLI(_ arguments: [String], in directory: String, environment extra: [String: String] = [:],
                       timeout: TimeInterval = 90) throws -> CLIResult {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: try dogestryBinary())
        p.arguments = arguments
        var env = environment
        env.removeValue(forKey: "DOCKER_HOST")
        env["XDG_CONFIG_HOME"] = directory + "/xdg"
        for (k, v) in extra { env[k] = v }
        p.environment = env
        p.currentDirectoryURL = URL(fileURLWithPath: directory)
        let outPath = directory + "/.cli-stdout-\(uniqueSuffix())", errPath = directory + "/.cli-stderr-\(uniqueSuffix())"
        _ = FileManager.default.createFile(atPath: outPath, contents: nil)
        _ = FileManager.default.createFile(atPath: errPath, contents: nil)
        defer { FS.remove(outPath); FS.remove(errPath) }
        let out = try FileHandle(forWritingTo: URL(fileURLWithPath: outPath))
        let err = try FileHandle(forWritingTo: URL(fileURLWithPath: errPath))
        p.standardInput = FileHandle.nullDevice
        p.standardOutput = out
        p.standardError = err
        try p.run()
        let done = DispatchSemaphore(value: 0)
        DispatchQueue.global().async { p.waitUntilExit(); done.signal() }
        if done.wait(timeout: .now() + timeout) == .timedOut {
            ChildProcess.stop(p)
            XCTFail("dogestry \(arguments.joined(separator: " ")) did not finish within \(Int(timeout)) s")
        }
        try out.close(); try err.close()
        return CLIResult(status: p.terminationStatus,
                         stdout: (try? String(contentsOfFile: outPath, encoding: .utf8)) ?? "",
                         stderr: (try? String(contentsOfFile: errPath, encoding: .utf8)) ?? "")
    }
}
