import DogestryCore
import DogestryRemotes
import DogestrySync
import Foundation
import XCTest

/// Where a setting comes from when it is given in several places: the command-line flag (or the
/// remote URL), then the environment, then dogestry.cfg. Each case is proven by its effect on a
/// real run of the CLI (which engine it dials, which compression the stored layers have, which
/// S3 endpoint it talks to), not by reading the parsed values back.
final class PrecedenceTests: XCTestCase {
    func run(_ args: [String], cwd: String, env: [String: String] = [:], config: String? = nil) throws -> CLITest.ProcessResult {
        if let config { try config.write(toFile: cwd + "/dogestry.cfg", atomically: true, encoding: .utf8) }
        var e = env
        e["XDG_CONFIG_HOME"] = cwd + "/.xdg-none"; e["HOME"] = cwd
        if e["DOCKER_HOST"] == nil { e["DOCKER_HOST"] = "" }
        return try CLITest.runProcess(try CLITest.dogestryBinary(), args, environment: e, cwd: cwd)
    }

    func testEngineAddressFlagThenDockerHostThenConfig() throws {
        let cwd = try CLITest.makeTempDir(self, "prec-engine")
        let remote = try CLITest.makeTempDir(self, "prec-remote")
        let cfg = "[docker]\n    connection = unix:///nonexistent/cfg.sock\n"
        func dialed(_ flag: String?, env: String?) throws -> String {
            let r = try run(["push", remote, "some/image:1"] + (flag.map { ["--host", $0] } ?? []), cwd: cwd,
                            env: ["DOCKER_HOST": env ?? ""], config: cfg)
            XCTAssertNotEqual(r.status, 0)
            return r.stderr
        }
        XCTAssertTrue(try dialed("unix:///nonexistent/flag.sock", env: "unix:///nonexistent/env.sock").contains("/nonexistent/flag.sock"))
        XCTAssertTrue(try dialed(nil, env: "unix:///nonexistent/env.sock").contains("/nonexistent/env.sock"))
        XCTAssertTrue(try dialed(nil, env: nil).contains("/nonexistent/cfg.sock"))
    }

    func testCompressionFlagThenConfig() throws {
        let fixtures = try CLITest.Fixtures.load()
        let cwd = try CLITest.makeTempDir(self, "prec-comp")
        let archive = fixtures.path("docker-app-v1.tar")
        func storedMediaTypes(_ extra: [String], config: String) throws -> Set<String> {
            let remote = try CLITest.makeTempDir(self, "prec-comp-remote")
            let push = try run(["push", remote, "--archive", archive] + extra, cwd: cwd, config: config)
            XCTAssertEqual(push.status, 0, push.stderr)
            var types = Set<String>()
            let repo = Repository(remote: try LocalRemote(path: remote))
            for ref in try repo.listRefs() {
                let m = try ImageManifest.decode(try repo.readBlob(ref.manifest, what: "manifest"), what: "manifest")
                for l in m.layers { types.insert(l.mediaType) }
            }
            return types
        }
        let cfg = "[compression]\n    algorithm = lz4\n"
        XCTAssertEqual(try storedMediaTypes([], config: cfg), [Compression.lz4.layerMediaType], "the config's algorithm")
        XCTAssertEqual(try storedMediaTypes(["--compression", "gzip"], config: cfg), [Compression.gzip.layerMediaType], "the flag wins")
        XCTAssertEqual(try storedMediaTypes([], config: ""), [Compression.zstd.layerMediaType], "the default")
    }

    func testS3EndpointURLThenConfigThenEnvironment() throws {
        let s3 = try TestBucket(label: "prec")
        let (bucket, ep) = (s3.bucket, s3.endpoint)
        let cwd = try CLITest.makeTempDir(self, "prec-s3")
        let dead1 = "http://127.0.0.1:9", dead2 = "http://127.0.0.1:7"   // nothing listens there
        let creds = s3.credentials
        func list(url: String, config: String?, env: String?) throws -> CLITest.ProcessResult {
            var e = creds
            if let env { e["AWS_ENDPOINT_URL_S3"] = env }
            return try run(["list", url], cwd: cwd, env: e, config: config.map { "[s3]\n    endpoint = \($0)\n" } ?? "")
        }
        let plain = "s3://\(bucket)/p"
        XCTAssertEqual(try list(url: plain + "?endpoint=\(ep)", config: dead1, env: dead2).status, 0, "the URL's endpoint wins")
        XCTAssertEqual(try list(url: plain, config: ep, env: dead2).status, 0, "then [s3] endpoint")
        XCTAssertEqual(try list(url: plain, config: nil, env: ep).status, 0, "then AWS_ENDPOINT_URL_S3")
        let r = try list(url: plain, config: dead1, env: ep)
        XCTAssertNotEqual(r.status, 0)
        XCTAssertTrue(r.stderr.contains("127.0.0.1:9"), "[s3] endpoint comes before the environment: \(r.stderr)")

        // Region: the URL, then [s3] region, then AWS_REGION (the signing scope of the remote the CLI builds).
        func region(_ url: String, config: String?, env: String?) throws -> String {
            var cfgText = "[s3]\n    endpoint = \(ep)\n"
            if let config { cfgText += "    region = \(config)\n" }
            let cfg = try DogestryConfig.parse(cfgText, path: "t.cfg")
            var e = creds; e["HOME"] = cwd
            if let env { e["AWS_REGION"] = env }
            return try XCTUnwrap(try RemoteResolver.open(url, config: cfg, environment: e) as? S3Remote).region
        }
        XCTAssertEqual(try region(plain + "?region=eu-west-1", config: "us-west-2", env: "ap-south-1"), "eu-west-1")
        XCTAssertEqual(try region(plain, config: "us-west-2", env: "ap-south-1"), "us-west-2")
        XCTAssertEqual(try region(plain, config: nil, env: "ap-south-1"), "ap-south-1")
    }

    func testSecretsInRemoteURLsAreNeverEchoed() throws {
        let cwd = try CLITest.makeTempDir(self, "prec-secret")
        for url in ["s3://AKIA:SECRETX@bucket/p", "s3://bucket/p?endpoint=http://u:SECRETX@127.0.0.1:9",
                    "s3://bucket/p?endpoint=http://127.0.0.1:9/?sig=SECRETX", "ftp://u:SECRETX@h/x?k=SECRETX",
                    "https://127.0.0.1:9/t.json?X-Amz-Signature=SECRETX", "file://u:SECRETX@/x",
                    "http://u:SECRETX@127.0.0.1:9/ticket.json"] {
            let r = try run(["list", url], cwd: cwd, env: ["AWS_ACCESS_KEY_ID": "a", "AWS_SECRET_ACCESS_KEY": "b"])
            XCTAssertNotEqual(r.status, 0, url)
            XCTAssertEqual(r.stderrLines.count, 1, "\(url): \(r.stderr)")
            XCTAssertFalse(r.stderr.contains("SECRETX"), "\(url) leaked: \(r.stderr)")
            XCTAssertFalse(r.stdoutText.contains("SECRETX"), url)
        }
    }
}
