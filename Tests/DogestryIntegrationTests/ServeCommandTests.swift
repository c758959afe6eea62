import DogestryCore
import DogestryRemotes
import DogestryServe
import DogestrySync
import Foundation
import XCTest
#if canImport(Glibc)
import Glibc
#endif

/// `dogestry serve` as a process and as an HTTP peer: the protocol's errors, refused writes,
/// start-up failures, graceful stop, TLS and mTLS, redirects to S3.
final class ServeCommandTests: XCTestCase {
    typealias T = ServeClientTests

    /// `url` gets no HTTP answer with `args` because the TLS handshake (or the protocol) was
    /// refused — curl's exit code tells that from a dead port (7) or a hang (28) — and serve still
    /// answers `alive` with `aliveArgs` right after.
    func assertRefusedByTLS(_ url: String, _ args: [String], alive: String, _ aliveArgs: [String], _ what: String,
                            file: StaticString = #filePath, line: UInt = #line) throws {
        let r = try T.sh(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "30"] + args + [url])
        XCTAssertEqual(r.out, "000", "\(what): answered", file: file, line: line)
        // 35: TLS handshake failed; 56: receive failure (the peer closed during the handshake);
        // 52: empty reply; 16: HTTP/2 framing. Never 7 (nothing listening) or 28 (timed out).
        XCTAssertTrue([35, 56, 52, 16].contains(r.status), "\(what): curl exit \(r.status): \(r.err)", file: file, line: line)
        XCTAssertEqual(try curl(alive, aliveArgs).code, 200, "\(what): serve stopped answering", file: file, line: line)
    }

    /// `curl` of `url` with `args`; the status code and body.
    func curl(_ url: String, _ args: [String] = []) throws -> (code: Int, body: String, err: String) {
        let r = try T.sh(["curl", "-s", "-o", "-", "-w", "\n%{http_code}", "--max-time", "30"] + args + [url])
        let parts = r.out.split(separator: "\n", omittingEmptySubsequences: false)
        return (Int(parts.last ?? "") ?? 0, parts.dropLast().joined(separator: "\n"), r.err)
    }

    func errorCode(_ body: String) -> String? {
        guard let o = try? JSONSerialization.jsonObject(with: Data(body.utf8)) as? [String: Any],
              let errs = o["errors"] as? [[String: Any]] else { return nil }
        return errs.first?["code"] as? String
    }

    func keys(_ remote: Remote) throws -> [String: Int64] {
        var out: [String: Int64] = [:]
        try remote.list(prefix: "") { out[$0.key] = $0.size }
        return out
    }

    func testWritesAreRefusedAndUnknownNamesAre404() throws {
        let remote = try T.localRemote()
        let img = try EngineTestSupport.Image(fixture: "docker-app-v1.tar", tag: "proto/app:1", label: "proto")
        try img.push(to: remote)
        let serve = try T.InProcessServe(remote)
        defer { serve.stop() }
        let base = "http://\(serve.address)"
        let before = try keys(remote)
        let writes: [(String, String)] = [
            ("POST", "/v2/proto/app/blobs/uploads/"), ("PUT", "/v2/proto/app/manifests/1"),
            ("PATCH", "/v2/proto/app/blobs/uploads/x"), ("DELETE", "/v2/proto/app/manifests/1"),
            ("DELETE", "/v2/proto/app/blobs/\(img.id)"), ("PUT", "/v2/proto/app/blobs/uploads/x?digest=\(img.id)"),
        ]
        for (method, path) in writes {
            let r = try curl(base + path, ["-X", method, "--data-binary", "junk"])
            XCTAssertEqual(r.code, 405, "\(method) \(path)")
            XCTAssertEqual(errorCode(r.body), "UNSUPPORTED", "\(method) \(path): \(r.body)")
        }
        XCTAssertEqual(try keys(remote), before, "a refused write changed the remote")
        XCTAssertNotEqual(try T.sh(["docker", "push", "\(serve.address)/proto/app:1"],
                                   env: ["DOCKER_HOST": try CLITest.requiredEnvironment("DOGESTRY_TEST_DOCKER_HOST")]).status, 0)

        for (path, code, status) in [("/v2/nobody/here/manifests/latest", "NAME_UNKNOWN", 404), ("/v2/nobody/tags/list", "NAME_UNKNOWN", 404),
                                     ("/v2/proto/app/manifests/nosuchtag", "MANIFEST_UNKNOWN", 404),
                                     ("/v2/proto/app/manifests/sha256:\(String(repeating: "0", count: 64))", "MANIFEST_UNKNOWN", 404),
                                     ("/v2/proto/app/blobs/sha256:\(String(repeating: "0", count: 64))", "BLOB_UNKNOWN", 404),
                                     ("/v2/proto/app/blobs/sha256:nothex", "DIGEST_INVALID", 400),
                                     ("/v2/Proto/app/manifests/1", "NAME_INVALID", 400),
                                     ("/v2/proto%2F..%2Fx/manifests/1", "NAME_INVALID", 400)] {
            let r = try curl(base + path)
            XCTAssertEqual(r.code, status, path)
            XCTAssertEqual(errorCode(r.body), code, "\(path): \(r.body)")
        }
        // The protocol's successes, headers included.
        let v2 = try T.sh(["curl", "-si", base + "/v2/"])
        XCTAssertTrue(v2.out.hasPrefix("HTTP/1.1 200"), v2.out)
        XCTAssertTrue(v2.out.contains("Docker-Distribution-API-Version: registry/2.0"), v2.out)
        let head = try T.sh(["curl", "-sI", base + "/v2/proto/app/manifests/1"])
        XCTAssertTrue(head.out.contains("Docker-Content-Digest: sha256:"), head.out)
        XCTAssertTrue(head.out.contains("Content-Type: application/vnd.oci.image.manifest.v1+json"), head.out)
        let tags = try curl(base + "/v2/proto/app/tags/list?n=1")
        XCTAssertEqual(tags.body, #"{"name":"proto/app","tags":["1"]}"#)
        XCTAssertEqual(try curl(base + "/v2/_catalog").body, #"{"repositories":["proto/app"]}"#)
        // A single range of a blob: 206 with the bytes; past the end: 416.
        let cfgPath = base + "/v2/proto/app/blobs/\(img.id)"
        let part = try curl(cfgPath, ["-r", "2-9"])
        XCTAssertEqual(part.code, 206)
        XCTAssertEqual(Array(part.body.utf8), Array(img.config[2...9]))
        XCTAssertEqual(try curl(cfgPath, ["-r", "\(img.config.count)-"]).code, 416)
    }

    /// The process: where it listens, access lines, a graceful stop that lets a slow response
    /// finish, and one-line errors when the port is taken or the remote cannot be read.
    func testProcessStartsLogsAndStopsGracefully() throws {
        let dir = try EngineTestSupport.makeTempDirectory("serve-cli")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try FS.makeDirectories(dir + "/remote")
        let remote = try LocalRemote(path: dir + "/remote")
        // A layer of a few MiB to read slowly.
        var big = [UInt8](repeating: 0, count: 4 << 20)
        for i in stride(from: 0, to: big.count, by: 4096) { big[i] = UInt8(truncatingIfNeeded: i >> 12) }
        let repo = Repository(remote: remote)
        try repo.ensureLayout()
        let blob = try repo.putBlob(big)
        let serve = try ServeProcess(arguments: [dir + "/remote", "--listen", "127.0.0.1:0"], in: dir)
        defer { serve.kill() }
        let base = "http://\(serve.address)"
        XCTAssertEqual(try curl(base + "/v2/").code, 200)

        // Port taken: a second serve on the same address fails with one line naming it.
        let taken = try EngineTestSupport.runCLI(["serve", dir + "/remote", "--listen", serve.address], in: dir, timeout: 30)
        XCTAssertEqual(taken.status, 1)
        XCTAssertEqual(taken.stderrLines, ["dogestry: error: cannot listen on \(serve.address): the address is already in use"])

        // A slow download is in flight when SIGTERM comes: it completes, then serve exits 0.
        let slow = Process()
        slow.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        slow.arguments = ["curl", "-s", "--limit-rate", "2M", "-o", dir + "/slow", base + "/v2/any/blobs/\(blob)"]
        try slow.run()
        // SIGTERM once the response is under way (its first bytes have arrived), not after a guess.
        let begun = Date().addingTimeInterval(30)
        while (try? FileManager.default.attributesOfItem(atPath: dir + "/slow")[.size] as? Int) ?? 0 == 0, Date() < begun, slow.isRunning {
            usleep(10_000)
        }
        XCTAssertGreaterThan((try? FileManager.default.attributesOfItem(atPath: dir + "/slow")[.size] as? Int) ?? 0, 0, "the slow download never started")
        XCTAssertLessThan((try? FileManager.default.attributesOfItem(atPath: dir + "/slow")[.size] as? Int) ?? Int.max, big.count, "the download ended before SIGTERM")
        serve.terminate()
        slow.waitUntilExit()
        XCTAssertEqual(slow.terminationStatus, 0)
        XCTAssertEqual(FileManager.default.contents(atPath: dir + "/slow").map { [UInt8]($0) }, big, "the in-flight response was cut")
        XCTAssertEqual(serve.wait(), 0)
        let log = serve.output
        XCTAssertTrue(log.contains("dogestry serve: listening on \(base) (file://"), log)
        XCTAssertTrue(log.contains("GET /v2/ 200 2 "), log)
        XCTAssertTrue(log.contains("GET /v2/any/blobs/\(blob) 200 \(big.count) "), log)
        XCTAssertTrue(log.hasSuffix("dogestry serve: stopped\n"), log)

        // A remote that is not there, or not a repository, or unreachable: one line, exit 1.
        for (args, expect) in [([dir + "/nothere"], "nothere"), ([dir], "holds no dogestry repository"),
                               (["s3://bucket/p?endpoint=http://127.0.0.1:1&region=us-east-1"], "127.0.0.1:1")] {
            let r = try EngineTestSupport.runCLI(["serve"] + args + ["--listen", "127.0.0.1:0"], in: dir,
                                                 environment: ["AWS_ACCESS_KEY_ID": "AK", "AWS_SECRET_ACCESS_KEY": "SECRETVALUE"], timeout: 60)
            XCTAssertEqual(r.status, 1, "\(args): \(r.stdout)\(r.stderr)")
            XCTAssertEqual(r.stderrLines.count, 1, r.stderr)
            XCTAssertTrue(r.stderr.contains(expect), r.stderr)
            XCTAssertFalse(r.stderr.contains("SECRETVALUE"))
        }
        let badListen = try EngineTestSupport.runCLI(["serve", dir + "/remote", "--listen", "nonsense"], in: dir, timeout: 30)
        XCTAssertEqual(badListen.status, 1)
        XCTAssertTrue(badListen.stderr.contains("invalid --listen \"nonsense\""), badListen.stderr)
    }

    /// HTTPS with --tls-cert/--tls-key, and with --tls-client-ca only clients holding a
    /// certificate that CA signed get an answer.
    func testTLSAndClientCertificates() throws {
        let dir = try EngineTestSupport.makeTempDirectory("serve-tls")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try FS.makeDirectories(dir + "/remote")
        let remote = try LocalRemote(path: dir + "/remote")
        try EngineTestSupport.Image(fixture: "docker-app-v1.tar", tag: "tls/app:1", label: "tls").push(to: remote)
        let ssl = """
        set -e; cd '\(dir)'
        openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.crt -days 2 -subj /CN=test-ca 2>/dev/null
        openssl req -newkey rsa:2048 -nodes -keyout server.key -out server.csr -subj /CN=127.0.0.1 2>/dev/null
        printf 'subjectAltName=IP:127.0.0.1\\n' > san.ext
        openssl x509 -req -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial -out server.crt -days 2 -extfile san.ext 2>/dev/null
        openssl req -newkey rsa:2048 -nodes -keyout client.key -out client.csr -subj /CN=node 2>/dev/null
        openssl x509 -req -in client.csr -CA ca.crt -CAkey ca.key -CAcreateserial -out client.crt -days 2 2>/dev/null
        openssl req -x509 -newkey rsa:2048 -nodes -keyout other.key -out other.crt -days 2 -subj /CN=stranger 2>/dev/null
        """
        XCTAssertEqual(try T.sh(["bash", "-c", ssl]).status, 0)
        let tls = ["--tls-cert", dir + "/server.crt", "--tls-key", dir + "/server.key"]

        let https = try ServeProcess(arguments: [dir + "/remote", "--listen", "127.0.0.1:0", "-q"] + tls, in: dir)
        XCTAssertTrue(https.output.contains("listening on https://"), https.output)
        XCTAssertEqual(try curl("https://\(https.address)/v2/tls/app/tags/list", ["--cacert", dir + "/ca.crt"]).code, 200)
        try assertRefusedByTLS("http://\(https.address)/v2/", [], alive: "https://\(https.address)/v2/", ["--cacert", dir + "/ca.crt"], "plain HTTP on an HTTPS port")
        https.terminate(); XCTAssertEqual(https.wait(), 0)
        XCTAssertFalse(https.output.contains("GET /v2/"), "--quiet prints no access lines")

        let mtls = try ServeProcess(arguments: [dir + "/remote", "--listen", "127.0.0.1:0", "--tls-client-ca", dir + "/ca.crt"] + tls, in: dir)
        defer { mtls.kill() }
        let url = "https://\(mtls.address)/v2/tls/app/tags/list"
        let good = ["--cacert", dir + "/ca.crt", "--cert", dir + "/client.crt", "--key", dir + "/client.key"]
        try assertRefusedByTLS(url, ["--cacert", dir + "/ca.crt"], alive: url, good, "no client certificate")
        try assertRefusedByTLS(url, ["--cacert", dir + "/ca.crt", "--cert", dir + "/other.crt", "--key", dir + "/other.key"], alive: url, good, "a certificate of another CA")
        let ok = try curl(url, good)
        XCTAssertEqual(ok.code, 200)
        XCTAssertEqual(ok.body, #"{"name":"tls/app","tags":["1"]}"#)

        let missing = try EngineTestSupport.runCLI(["serve", dir + "/remote", "--tls-cert", dir + "/nope.crt", "--tls-key", dir + "/server.key"], in: dir, timeout: 30)
        XCTAssertEqual(missing.status, 1)
        XCTAssertEqual(missing.stderrLines, ["dogestry: error: cannot read TLS certificate \(dir)/nope.crt: no such readable file"])
    }

    /// With --redirect over S3, blobs stored in the form asked for are a 307 to a signed URL, so
    /// a client reads them from the bucket and serve reads none of their bytes.
    func testRedirectSendsClientsToTheBucket() throws {
        let remote = try T.s3Remote()
        let img = try EngineTestSupport.Image(fixture: "docker-app-v1.tar", tag: "redir/app:1", label: "redirect-" + EngineTestSupport.uniqueSuffix())
        try img.push(to: remote)
        var s = ServeSettings(); s.redirect = true; s.layers = .stored
        let serve = try T.InProcessServe(remote, settings: s)
        defer { serve.stop() }
        let head = try T.sh(["curl", "-sI", "http://\(serve.address)/v2/redir/app/blobs/\(img.id)"])
        XCTAssertTrue(head.out.hasPrefix("HTTP/1.1 307"), head.out)
        XCTAssertTrue(head.out.contains("Location: \(try CLITest.requiredEnvironment("DOGESTRY_TEST_S3_ENDPOINT"))"), head.out)
        let dir = try EngineTestSupport.makeTempDirectory("serve-redirect")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let r = try T.sh(["skopeo", "copy", "--src-tls-verify=false", "docker://\(serve.address)/redir/app:1", "oci:\(dir):x"])
        XCTAssertEqual(r.status, 0, r.err)
        let manifest = try Repository(remote: remote).readManifest(try XCTUnwrap(Repository(remote: remote).readRef(name: "redir/app", tag: "1")))
        XCTAssertEqual(serve.read(manifest.layers.map(\.digest) + [img.id]), 0, "serve read blob bytes it redirected")
        XCTAssertTrue(FileManager.default.fileExists(atPath: dir + "/blobs/sha256/\(manifest.layers[0].digest.hex)"))
    }
}

extension ServeCommandTests {
    /// Hostile or broken HTTP gets an error response or a closed connection, never a crash: serve
    /// answers normally afterwards. Tag pagination follows the spec (`n`, `last`, `Link`).
    func testHostileRequestsAndPagination() throws {
        let remote = try T.localRemote()
        let img = try EngineTestSupport.Image(fixture: "docker-app-v1.tar", tag: "page/app:a", label: "page")
        try img.push(to: remote)
        let repo = Repository(remote: remote)
        let md = try XCTUnwrap(repo.readRef(name: "page/app", tag: "a"))
        for t in ["b", "c", "d", "e"] { try repo.writeRef(name: "page/app", tag: t, manifest: md) }
        let serve = try T.InProcessServe(remote)
        defer { serve.stop() }
        let base = "http://\(serve.address)"

        let first = try T.sh(["curl", "-si", base + "/v2/page/app/tags/list?n=2"])
        XCTAssertTrue(first.out.contains(#"{"name":"page/app","tags":["a","b"]}"#), first.out)
        XCTAssertTrue(first.out.contains("Link: </v2/page/app/tags/list?n=2&last=b>; rel=\"next\""), first.out)
        XCTAssertEqual(try curl(base + "/v2/page/app/tags/list?n=2&last=b").body, #"{"name":"page/app","tags":["c","d"]}"#)
        let last = try T.sh(["curl", "-si", base + "/v2/page/app/tags/list?n=2&last=d"])
        XCTAssertTrue(last.out.contains(#"{"name":"page/app","tags":["e"]}"#) && !last.out.contains("Link:"), last.out)
        XCTAssertEqual(errorCode(try curl(base + "/v2/page/app/tags/list?n=-1").body), "PAGINATION_NUMBER_INVALID")

        // Raw junk on the socket: request lines that are not HTTP, huge headers, a truncated
        // request, a bare LF storm. Each is answered with 4xx or closed, and serve answers the
        // next connection every time.
        let port = String(serve.address.split(separator: ":").last!)
        let script = """
        import socket, sys
        port = int(sys.argv[1])
        cases = [b"GARBAGE\\r\\n\\r\\n", b"GET / HTTP/9.9\\r\\n\\r\\n", b"GET /v2/ HTTP/1.1\\r\\nHost: x\\r\\nX: " + b"a" * 200000 + b"\\r\\n\\r\\n",
                 b"GET /v2/ HTT", b"\\n" * 10000, b"GET /v2/\\x00\\xff/manifests/1 HTTP/1.1\\r\\nHost: x\\r\\n\\r\\n",
                 b"GET /v2/" + b"a/" * 5000 + b"manifests/1 HTTP/1.1\\r\\nHost: x\\r\\n\\r\\n"]
        for c in cases:
            s = socket.create_connection(("127.0.0.1", port), timeout=10)
            data = b""
            try:
                s.sendall(c)
                s.shutdown(socket.SHUT_WR)
                while True:
                    chunk = s.recv(65536)
                    if not chunk: break
                    data += chunk
            except socket.timeout:
                print("TIMEOUT", c[:20]); sys.exit(1)
            except (ConnectionResetError, BrokenPipeError):
                pass   # closed on us: allowed
            s.close()
            line = data.split(b"\\r\\n", 1)[0]
            if data and not (line.startswith(b"HTTP/1.1 4") or line.startswith(b"HTTP/1.0 4")):
                print("UNEXPECTED", c[:20], line); sys.exit(1)
            # Whatever happened to that connection, serve answers the next one (a crash is not "closed").
            a = socket.create_connection(("127.0.0.1", port), timeout=10)
            a.sendall(b"GET /v2/ HTTP/1.1\\r\\nHost: x\\r\\nConnection: close\\r\\n\\r\\n")
            answer = b""
            while True:
                chunk = a.recv(65536)
                if not chunk: break
                answer += chunk
            a.close()
            if not answer.startswith(b"HTTP/1.1 200"):
                print("DEAD after", c[:20], answer[:40]); sys.exit(1)
            print("ok", c[:12], line[:30])
        """
        let r = try T.sh(["python3", "-c", script, port], timeout: 120)
        XCTAssertEqual(r.status, 0, r.out + r.err)
        XCTAssertEqual(try curl(base + "/v2/page/app/tags/list").code, 200, "serve stopped answering")
    }

    /// Run as the packaged unit runs it: the remote from `[serve] remote` of --config, and
    /// systemd's readiness protocol — READY=1 on NOTIFY_SOCKET only once it listens (a request
    /// then succeeds), STOPPING=1 on SIGTERM.
    func testServeFromConfigTellsSystemdWhenReady() throws {
        let dir = try EngineTestSupport.makeTempDirectory("serve-notify")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try FS.makeDirectories(dir + "/remote")
        try EngineTestSupport.Image(fixture: "docker-app-v1.tar", tag: "notify/app:1", label: "notify").push(to: try LocalRemote(path: dir + "/remote"))
        try Data("[remote \"central\"]\n    url = \(dir)/remote\n[serve]\n    remote = central\n    listen = 127.0.0.1:0\n".utf8)
            .write(to: URL(fileURLWithPath: dir + "/dogestry.cfg"))
        // The notify socket systemd would create (a datagram socket), with a receive timeout.
        let sockPath = dir + "/notify.sock"
        let fd = socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue), 0)
        XCTAssertGreaterThanOrEqual(fd, 0)
        defer { close(fd) }
        var addr = sockaddr_un(); addr.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &addr.sun_path) { p in for (i, b) in sockPath.utf8.enumerated() { p[i] = b } }
        let bound = withUnsafePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) } }
        XCTAssertEqual(bound, 0)
        var tv = timeval(tv_sec: 30, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
        func receive() -> String {
            var buf = [UInt8](repeating: 0, count: 4096)
            let n = recv(fd, &buf, buf.count, 0)
            return n > 0 ? String(decoding: buf[0..<n], as: UTF8.self) : ""
        }
        let serve = try ServeProcess(arguments: ["--config", dir + "/dogestry.cfg"], in: dir, environment: ["NOTIFY_SOCKET": sockPath])
        defer { serve.kill() }
        let ready = receive()
        XCTAssertTrue(ready.hasPrefix("READY=1"), ready)
        XCTAssertTrue(ready.contains("STATUS=listening on http://\(serve.address)"), ready)
        XCTAssertEqual(try curl("http://\(serve.address)/v2/notify/app/tags/list").body, #"{"name":"notify/app","tags":["1"]}"#)
        serve.terminate()
        XCTAssertEqual(receive(), "STOPPING=1")
        XCTAssertEqual(serve.wait(), 0)

        // Neither an argument nor [serve] remote: one line saying what to set.
        let none = try EngineTestSupport.runCLI(["serve", "--listen", "127.0.0.1:0"], in: dir + "/remote", timeout: 30)
        XCTAssertEqual(none.status, 1)
        XCTAssertTrue(none.stderr.contains("[serve] remote"), none.stderr)
    }

    /// `dogestry serve URL` of a pull ticket serves that one image, with no config or credentials.
    func testServingAPullTicket() throws {
        let remote = try T.s3Remote()
        let img = try EngineTestSupport.Image(fixture: "docker-app-v1.tar", tag: "ticket/app:1", label: "ticket-" + EngineTestSupport.uniqueSuffix())
        try img.push(to: remote)
        try EngineTestSupport.Image(fixture: "docker-app-v2.tar", tag: "ticket/other:1", label: "other").push(to: remote)
        let signed = try TicketSigner(remote: remote as! SigningRemote).sign("ticket/app:1", lifetime: 600)
        let dir = try EngineTestSupport.makeTempDirectory("serve-ticket")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let serve = try ServeProcess(arguments: [signed.url, "--listen", "127.0.0.1:0"], in: dir, environment: ["AWS_ACCESS_KEY_ID": "", "AWS_SECRET_ACCESS_KEY": ""])
        defer { serve.kill() }
        XCTAssertFalse(serve.output.contains("X-Amz-Signature"), "the ticket's signature is printed: \(serve.output)")
        let r = try T.sh(["skopeo", "copy", "--src-tls-verify=false", "docker://\(serve.address)/ticket/app:1", "oci:\(dir)/oci:x"])
        XCTAssertEqual(r.status, 0, r.err)
        let m = try T.sh(["skopeo", "inspect", "--tls-verify=false", "--raw", "docker://\(serve.address)/ticket/app:1"])
        XCTAssertEqual(try T.configDigest(m.out), img.id.description)
        let other = try curl("http://\(serve.address)/v2/ticket/other/manifests/1")
        XCTAssertEqual(other.code, 404)
        XCTAssertEqual(errorCode(other.body), "NAME_UNKNOWN")
        XCTAssertEqual(try curl("http://\(serve.address)/v2/_catalog").body, #"{"repositories":["ticket/app"]}"#)
    }
}

/// `dogestry serve` as a child process; `address` is where it said it listens.
final class ServeProcess {
    let process = Process()
    let outPath: String
    private(set) var address = ""

    init(arguments: [String], in dir: String, environment extra: [String: String] = [:], file: StaticString = #filePath, line: UInt = #line) throws {
        outPath = dir + "/serve-\(EngineTestSupport.uniqueSuffix()).out"
        _ = FileManager.default.createFile(atPath: outPath, contents: nil)
        process.executableURL = URL(fileURLWithPath: try EngineTestSupport.dogestryBinary())
        process.arguments = ["serve"] + arguments
        var env = ProcessInfo.processInfo.environment
        env["XDG_CONFIG_HOME"] = dir + "/xdg"
        for (k, v) in extra { env[k] = v }
        process.environment = env
        process.currentDirectoryURL = URL(fileURLWithPath: dir)
        let h = try FileHandle(forWritingTo: URL(fileURLWithPath: outPath))
        process.standardOutput = h; process.standardError = h
        try process.run()
        let deadline = Date().addingTimeInterval(30)
        while Date() < deadline {
            if let r = output.range(of: "listening on "), let end = output[r.upperBound...].firstIndex(of: " ") {
                let url = output[r.upperBound..<end]
                address = String(url.split(separator: "/").last ?? "")
                return
            }
            if !process.isRunning { break }
            Thread.sleep(forTimeInterval: 0.05)
        }
        XCTFail("dogestry serve did not say where it listens: \(output)", file: file, line: line)
        throw DogestryError.io("serve did not start")
    }

    var output: String { (try? String(contentsOfFile: outPath, encoding: .utf8)) ?? "" }
    func terminate() { if process.isRunning { Glibc.kill(process.processIdentifier, SIGTERM) } }
    func wait() -> Int32 { process.waitUntilExit(); return process.terminationStatus }
    func kill() { if process.isRunning { Glibc.kill(process.processIdentifier, SIGKILL); process.waitUntilExit() } }
}
