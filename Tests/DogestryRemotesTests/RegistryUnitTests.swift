import DogestryCore
@testable import DogestryRemotes
import Foundation
import XCTest

/// The registry client's pure parts: `WWW-Authenticate` challenges, `--creds`, the credential
/// files and helper programs Docker, Podman and skopeo use, and registry URLs.
final class RegistryUnitTests: XCTestCase {
    // MARK: challenges

    func testBearerChallengeWithQuotedCommaScopeAndEscapes() throws {
        let c = try XCTUnwrap(AuthChallenge.parse(#"Bearer realm="https://auth.example.com/token",service="registry.example.com",scope="repository:team/app:pull,push",error="insufficient_scope""#))
        XCTAssertEqual(c.scheme, "bearer")
        XCTAssertEqual(c.parameters["realm"], "https://auth.example.com/token")
        XCTAssertEqual(c.parameters["service"], "registry.example.com")
        XCTAssertEqual(c.parameters["scope"], "repository:team/app:pull,push", "a comma inside quotes belongs to the value")
        XCTAssertEqual(c.parameters["error"], "insufficient_scope")
        let e = try XCTUnwrap(AuthChallenge.parse(#"bearer Realm="a\"b", service=plain"#))
        XCTAssertEqual(e.parameters["realm"], #"a"b"#)
        XCTAssertEqual(e.parameters["service"], "plain", "unquoted values and any case of the names")
    }

    func testBasicAndBareAndEmptyChallenges() {
        XCTAssertEqual(AuthChallenge.parse(#"Basic realm="Registry Realm""#), AuthChallenge(scheme: "basic", parameters: ["realm": "Registry Realm"]))
        XCTAssertEqual(AuthChallenge.parse("Negotiate"), AuthChallenge(scheme: "negotiate", parameters: [:]))
        XCTAssertNil(AuthChallenge.parse("   "))
    }

    // MARK: --creds

    func testCredsKeepColonsInThePasswordAndRefuseNoUser() throws {
        let c = try RegistryCredentials.parse("ci:pa:ss:word", origin: "--creds")
        XCTAssertEqual(c.username, "ci")
        XCTAssertEqual(c.password, "pa:ss:word")
        XCTAssertFalse(c.description.contains("pa:ss"), "description never shows the password: \(c.description)")
        for bad in ["nocolon", ":only-password", ""] {
            XCTAssertThrowsError(try RegistryCredentials.parse(bad, origin: "--creds"), bad) { e in
                XCTAssertEqual((e as? DogestryError)?.message, "--creds must be USER:PASSWORD")
            }
        }
    }

    // MARK: credential files and helpers

    var dir = ""
    override func setUpWithError() throws {
        dir = FileManager.default.temporaryDirectory.appendingPathComponent("dogestry-regunit-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: dir + "/bin", withIntermediateDirectories: true)
    }
    override func tearDownWithError() throws { try? FileManager.default.removeItem(atPath: dir) }

    func write(_ path: String, _ json: String) throws {
        try FileManager.default.createDirectory(atPath: (path as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
        try Data(json.utf8).write(to: URL(fileURLWithPath: path))
    }

    /// A real `docker-credential-NAME` program in `dir/bin` that answers with `script`.
    func helper(_ name: String, _ script: String) throws {
        let p = dir + "/bin/docker-credential-" + name
        try Data(("#!/bin/sh\n" + script + "\n").utf8).write(to: URL(fileURLWithPath: p))
        chmod(p, 0o755)
    }

    func store(_ env: [String: String], explicit: RegistryCredentials? = nil) -> RegistryCredentialStore {
        var e = env
        e["PATH"] = dir + "/bin:/usr/bin:/bin"
        return RegistryCredentialStore(explicit: explicit, environment: e, home: dir + "/home")
    }

    func b64(_ s: String) -> String { Data(s.utf8).base64EncodedString() }

    func testAuthsEntriesByHostAndDockerHubsKeys() throws {
        try write(dir + "/home/.docker/config.json", """
            {"auths": {"registry.example.com:5000": {"auth": "\(b64("alice:s3cret"))"},
                       "https://index.docker.io/v1/": {"auth": "\(b64("hubuser:hubpass"))"},
                       "ghcr.io": {"username": "bob", "password": "pw"},
                       "token.example.com": {"identitytoken": "refresh-me"}}}
            """)
        let s = store([:])
        XCTAssertEqual(try s.lookup(host: "registry.example.com:5000")?.password, "s3cret")
        XCTAssertEqual(try s.lookup(host: "docker.io")?.username, "hubuser", "Docker Hub's entry is filed under its v1 index URL")
        XCTAssertEqual(try s.lookup(host: "ghcr.io")?.password, "pw")
        XCTAssertEqual(try s.lookup(host: "token.example.com")?.identityToken, "refresh-me")
        XCTAssertNil(try s.lookup(host: "other.example.com"), "no entry: anonymous")
        XCTAssertEqual(try s.lookup(host: "registry.example.com:5000")?.origin, "~/.docker/config.json")
    }

    func testOrderExplicitThenAuthFileThenDockerConfigThenPodman() throws {
        try write(dir + "/auth.json", #"{"auths": {"r.example.com": {"auth": "\#(b64("from-auth-file:1"))"}}}"#)
        try write(dir + "/dc/config.json", #"{"auths": {"r.example.com": {"auth": "\#(b64("from-docker-config:2"))"}, "p.example.com": {}}}"#)
        try write(dir + "/run/containers/auth.json", #"{"auths": {"p.example.com": {"auth": "\#(b64("from-podman:3"))"}}}"#)
        let env = ["REGISTRY_AUTH_FILE": dir + "/auth.json", "DOCKER_CONFIG": dir + "/dc", "XDG_RUNTIME_DIR": dir + "/run"]
        XCTAssertEqual(try store(env).lookup(host: "r.example.com")?.username, "from-auth-file")
        XCTAssertEqual(try store(env, explicit: RegistryCredentials(username: "flag", password: "x", origin: "--creds")).lookup(host: "r.example.com")?.username, "flag")
        XCTAssertEqual(try store(["DOCKER_CONFIG": dir + "/dc"]).lookup(host: "r.example.com")?.username, "from-docker-config")
        XCTAssertEqual(try store(env).lookup(host: "p.example.com")?.username, "from-podman", "an empty auths entry falls through")
    }

    func testCredentialHelpersAndCredsStore() throws {
        try helper("good", #"read k; [ "$k" = "r.example.com" ] || exit 3; echo '{"ServerURL":"r.example.com","Username":"helped","Secret":"helper-secret"}'"#)
        try helper("tok", #"echo '{"Username":"<token>","Secret":"refresh-token"}'"#)
        try helper("none", #"echo "credentials not found in native keychain"; exit 1"#)
        try helper("broken", #"echo "boom helper-secret" >&2; exit 2"#)
        try write(dir + "/home/.docker/config.json", """
            {"credHelpers": {"r.example.com": "good", "t.example.com": "tok", "n.example.com": "none", "b.example.com": "broken"},
             "credsStore": "good"}
            """)
        let s = store([:])
        let c = try XCTUnwrap(try s.lookup(host: "r.example.com"))
        XCTAssertEqual([c.username, c.password, c.origin], ["helped", "helper-secret", "docker-credential-good"])
        XCTAssertEqual(try s.lookup(host: "t.example.com")?.identityToken, "refresh-token")
        XCTAssertNil(try s.lookup(host: "n.example.com"), "\"credentials not found\" is anonymous access")
        XCTAssertThrowsError(try s.lookup(host: "b.example.com")) { e in
            let m = (e as? DogestryError)?.message ?? ""
            XCTAssertEqual(m, "credential helper docker-credential-broken failed for b.example.com (exit 2)")
        }
        // credsStore for a host no helper names; the helper is asked for that host's key.
        XCTAssertThrowsError(try s.lookup(host: "elsewhere.example.com"), "the good helper exits 3 for another key")
    }

    func testBadFilesAndHelperNamesAreOneLineConfigErrors() throws {
        try write(dir + "/home/.docker/config.json", "{not json")
        XCTAssertThrowsError(try store([:]).lookup(host: "r.example.com")) { e in
            XCTAssertEqual((e as? DogestryError)?.message, "\(dir)/home/.docker/config.json is not valid JSON")
        }
        try write(dir + "/home/.docker/config.json", #"{"auths": {"r.example.com": {"auth": "%%%"}}}"#)
        XCTAssertThrowsError(try store([:]).lookup(host: "r.example.com")) { e in
            XCTAssertEqual((e as? DogestryError)?.message, "~/.docker/config.json: the auth entry for r.example.com is not base64 USER:PASSWORD")
        }
        try write(dir + "/home/.docker/config.json", #"{"credHelpers": {"r.example.com": "../../bin/sh"}}"#)
        XCTAssertThrowsError(try store([:]).lookup(host: "r.example.com")) { e in
            XCTAssertEqual((e as? DogestryError)?.message, #"credential helper name "../../bin/sh" is not valid"#)
        }
    }

    // MARK: registry URLs

    func testRegistryURLs() throws {
        let e = try RegistryEndpoint.parse("registry://Registry.Example.com:5000/team/sub/")
        XCTAssertEqual([e.host, e.namespace], ["registry.example.com:5000", "team/sub"])
        XCTAssertEqual(e.repository("app"), "team/sub/app")
        XCTAssertEqual(e.name(ofRepository: "team/sub/app"), "app")
        XCTAssertNil(e.name(ofRepository: "other/app"), "outside the namespace")
        XCTAssertEqual(e.baseURL, "https://registry.example.com:5000")
        let hub = try RegistryEndpoint.parse("docker://library")
        XCTAssertEqual([hub.host, hub.namespace, hub.apiHost], ["docker.io", "library", "registry-1.docker.io"])
        XCTAssertEqual(try RegistryEndpoint.parse("docker://").repository("alpine"), "library/alpine")
        XCTAssertEqual(try RegistryEndpoint.parse("registry://localhost:5000").repository("a/b"), "a/b")
        XCTAssertEqual(try RegistryEndpoint.parse("registry://[::1]:5000").host, "[::1]:5000")
        for (bad, want) in [("s3://bucket", "is not a registry:// or docker:// URL"),
                            ("registry://bad_host:1/x", "is not a host[:port]"),
                            ("registry://r.example.com/Team", "is not a valid repository namespace"),
                            ("registry://r.example.com/a//b", "is not a valid repository namespace")] {
            XCTAssertThrowsError(try RegistryEndpoint.parse(bad), bad) { e in
                XCTAssertTrue(((e as? DogestryError)?.message ?? "").contains(want), "\(bad): \(e)")
            }
        }
    }

    func testCertificatesFoundWhereDockerAndPodmanKeepThem() throws {
        let docker = dir + "/docker-certs.d", podman = dir + "/containers-certs.d"
        try write(podman + "/r.example.com:5000/ca.crt", "podman ca")
        try write(podman + "/r.example.com:5000/client.cert", "c")
        try write(podman + "/r.example.com:5000/client.key", "k")
        var e = try RegistryEndpoint.parse("registry://r.example.com:5000")
        e.findCertificates(in: [docker, podman])
        XCTAssertEqual(e.caFile, podman + "/r.example.com:5000/ca.crt")
        XCTAssertEqual(e.clientCert, podman + "/r.example.com:5000/client.cert")
        XCTAssertEqual(e.clientKey, podman + "/r.example.com:5000/client.key")
        try write(docker + "/r.example.com:5000/ca.crt", "docker ca")
        var d = try RegistryEndpoint.parse("registry://r.example.com:5000")
        d.findCertificates(in: [docker, podman])
        XCTAssertEqual(d.caFile, docker + "/r.example.com:5000/ca.crt", "Docker's directory first")
        var none = try RegistryEndpoint.parse("registry://other.example.com")
        none.findCertificates(in: [docker, podman])
        XCTAssertNil(none.caFile)
    }
}
