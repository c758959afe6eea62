import DogestryCore
import Foundation
import XCTest

/// What `scripts/package` ships, checked where users meet it: the .deb installed with apt in a
/// clean Debian 12 root with no Swift (scripts/lib/cleanhost.sh), the tarball's contents, and the
/// deployment files of docs/kubernetes parsed by real YAML and TOML parsers.
final class PackagingTests: XCTestCase {
    typealias T = ServeClientTests

    static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent().path

    func artefact(_ suffix: String) throws -> String {
        let dir = try CLITest.requiredEnvironment("DOGESTRY_TEST_PACKAGE_DIR")
        let names = try FileManager.default.contentsOfDirectory(atPath: dir).filter { $0.hasSuffix(suffix) }
        XCTAssertEqual(names.count, 1, "\(dir): \(names)")
        return dir + "/" + (try XCTUnwrap(names.first))
    }

    /// Every check of the clean host passes: install with apt, --version with its commit, only
    /// Debian's libraries (nothing under /opt/swift opened), push and pull back byte for byte,
    /// serve answering, man page, bash completion, conffile, the unit verified and not enabled.
    func testDebianPackageOnACleanDebianRoot() throws {
        let deb = try artefact(".deb")
        let work = try EngineTestSupport.makeTempDirectory("cleanhost")
        defer { try? FileManager.default.removeItem(atPath: work) }
        let r = try T.sh(["bash", Self.root + "/scripts/lib/cleanhost.sh", deb, try EngineTestSupport.fixture("docker-app-v1.tar"),
                          try EngineTestSupport.dogestryBinary(), work], timeout: 900)
        let lines = r.out.split(separator: "\n").map(String.init)
        let passed = Set(lines.filter { $0.hasPrefix("PASS ") }.map { String($0.dropFirst(5).prefix { $0 != ":" }) })
        for check in ["rootfs", "install", "version", "libraries", "opt-swift", "push", "pull", "serve", "man", "completion",
                      "conffile", "unit-enabled", "unit"] {
            XCTAssertTrue(passed.contains(check), "clean host: \(check) did not pass:\n" + lines.filter { $0.hasPrefix("FAIL ") || $0.hasPrefix("PASS ") }.joined(separator: "\n"))
        }
        XCTAssertEqual(r.status, 0, r.out.suffix(4000) + r.err)
        // The transcript goes to the test log: the closing note quotes it.
        print(lines.filter { $0.hasPrefix("PASS ") || $0.hasPrefix("FAIL ") }.joined(separator: "\n"))
    }

    /// The tarball holds the binary (self-contained: no Swift library), the man pages, the three
    /// completion scripts, the unit, the example config and the licence.
    func testTarballContents() throws {
        let tgz = try artefact(".tar.gz")
        let list = try T.sh(["tar", "-tzf", tgz])
        XCTAssertEqual(list.status, 0, list.err)
        let top = (tgz as NSString).lastPathComponent.replacingOccurrences(of: ".tar.gz", with: "")
        for f in ["bin/dogestry", "share/man/man1/dogestry.1", "share/man/man1/dogestry-pull.1", "share/man/man1/dogestry-serve.1",
                  "completions/dogestry.bash", "completions/_dogestry", "completions/dogestry.fish", "systemd/dogestry-serve.service",
                  "dogestry.cfg.example", "LICENSE", "README.md"] {
            XCTAssertTrue(list.out.split(separator: "\n").contains { $0 == "\(top)/\(f)" }, "\(f) is not in \(tgz)")
        }
        let dir = try EngineTestSupport.makeTempDirectory("tarball")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        XCTAssertEqual(try T.sh(["tar", "-xzf", tgz, "-C", dir]).status, 0)
        let ldd = try T.sh(["ldd", "\(dir)/\(top)/bin/dogestry"])
        XCTAssertFalse(ldd.out.contains("swift") || ldd.out.contains("not found"), ldd.out)
        let v = try T.sh(["\(dir)/\(top)/bin/dogestry", "--version"])
        XCTAssertTrue(v.out.range(of: #"^dogestry \S+ \(commit [0-9a-f]{40}\)"#, options: .regularExpression) != nil, v.out)
    }

    /// docs/kubernetes: the DaemonSet and ConfigMap parse as Kubernetes objects of the shape the
    /// README describes; the containerd 1.x and 2.x configs parse as TOML with config_path where
    /// each version reads it; hosts.toml is exactly what --print-hosts-toml writes.
    func testDeploymentFilesParse() throws {
        let k = Self.root + "/docs/kubernetes"
        let script = """
        import sys, json, yaml, tomllib
        k = sys.argv[1]
        docs = list(yaml.safe_load_all(open(k + "/dogestry-serve-daemonset.yaml")))
        kinds = [d["kind"] for d in docs]
        assert kinds == ["ConfigMap", "DaemonSet"], kinds
        cfg = docs[0]["data"]["dogestry.cfg"]
        assert "[serve]" in cfg and "remote = central" in cfg, cfg
        spec = docs[1]["spec"]["template"]["spec"]
        assert spec["hostNetwork"] is True
        init = spec["initContainers"][0]
        assert "--print-hosts-toml" in " ".join(init["command"]), init
        assert init["volumeMounts"][0]["mountPath"] == "/host-certs.d"
        assert any(v.get("hostPath", {}).get("path") == "/etc/containerd/certs.d" for v in spec["volumes"])
        c = spec["containers"][0]
        assert c["args"][:3] == ["serve", "--config", "/etc/dogestry/dogestry.cfg"], c["args"]
        assert c["readinessProbe"]["httpGet"]["host"] == "127.0.0.1" and c["readinessProbe"]["httpGet"]["path"] == "/v2/"
        assert docs[1]["spec"]["selector"]["matchLabels"] == docs[1]["spec"]["template"]["metadata"]["labels"]
        v1 = tomllib.load(open(k + "/containerd-1.x-config.toml", "rb"))
        assert v1["version"] == 2 and v1["plugins"]["io.containerd.grpc.v1.cri"]["registry"]["config_path"] == "/etc/containerd/certs.d", v1
        v2 = tomllib.load(open(k + "/containerd-2.x-config.toml", "rb"))
        assert v2["version"] == 3 and v2["plugins"]["io.containerd.cri.v1.images"]["registry"]["config_path"] == "/etc/containerd/certs.d", v2
        h = tomllib.load(open(k + "/hosts.toml", "rb"))
        assert h["server"] == "https://registry-1.docker.io" and h["host"]["http://127.0.0.1:5000"]["capabilities"] == ["pull", "resolve"], h
        print("ok")
        """
        let r = try T.sh(["python3", "-c", script, k])
        XCTAssertEqual(r.status, 0, r.out + r.err)
        let printed = try T.sh([try EngineTestSupport.dogestryBinary(), "serve", "--print-hosts-toml", "docker.io", "--listen", "127.0.0.1:5000"])
        XCTAssertEqual(printed.out, try String(contentsOfFile: k + "/hosts.toml", encoding: .utf8))
    }
}
