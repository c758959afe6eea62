import DogestryCore
import DogestryHTTP
@testable import DogestryRemotes
import Foundation
import DogestryTestSupport
import XCTest

/// A loopback stand-in (scripts/lib/aws_standins.py) for the IMDSv2 or container credentials endpoint.
final class AWSStandIn {
    let process = Process()
    let port: Int
    var base: String { "http://127.0.0.1:\(port)" }

    init(_ mode: String, _ args: [String] = []) throws {
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = ["python3", S3AuthTestSupport.script("aws_standins.py"), mode] + args
        let out = Pipe()
        process.standardOutput = out
        process.standardError = FileHandle.standardError
        try process.run()
        var line = Data()
        while !line.contains(UInt8(ascii: "\n")) {
            let chunk = out.fileHandleForReading.availableData
            if chunk.isEmpty { break }
            line.append(chunk)
        }
        guard let p = Int(String(decoding: line, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)) else {
            process.terminate()
            throw DogestryError(.io, "aws_standins.py \(mode) did not start")
        }
        port = p
    }

    func stats() throws -> [String: Int] {
        let client = HTTPClient(options: HTTPTransportOptions(connectTimeout: 2, lowSpeedTimeout: 5))
        let (resp, body) = try client.fetch(HTTPRequest(url: base + "/__stats"))
        XCTAssertEqual(resp.status, 200)
        return (try JSONSerialization.jsonObject(with: Data(body)) as? [String: Int]) ?? [:]
    }

    func stop() { ChildProcess.stop(process) }

    deinit { stop() }
}

final class CredentialsTests: XCTestCase {
    var home = ""
    var standIns: [AWSStandIn] = []
    /// A loopback port where nothing listens (connections are refused at once).
    var closedPort = 0

    override func setUpWithError() throws {
        home = NSTemporaryDirectory() + "dogestry-creds-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: home + "/.aws", withIntermediateDirectories: true)
        closedPort = try LoopbackPort.closed()
    }

    override func tearDown() {
        for s in standIns { s.stop() }
        standIns = []
        try? FileManager.default.removeItem(atPath: home)
    }

    func standIn(_ mode: String, _ args: [String] = []) throws -> AWSStandIn {
        let s = try AWSStandIn(mode, args)
        standIns.append(s)
        return s
    }

    /// An environment in which nothing is found, and instance metadata is refused quickly.
    var emptyEnv: [String: String] { ["AWS_EC2_METADATA_SERVICE_ENDPOINT": "http://127.0.0.1:\(closedPort)"] }

    func write(_ rel: String, _ text: String) throws {
        let path = home + "/" + rel
        try FileManager.default.createDirectory(atPath: (path as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
        try text.write(toFile: path, atomically: true, encoding: .utf8)
    }

    func chain(_ explicit: [String: String] = [:], _ env: [String: String]) -> AWSCredentialChain {
        AWSCredentialChain(explicit: explicit, environment: env, home: home)
    }

    func assertError(_ c: AWSCredentialChain, kind: DogestryError.Kind? = nil, contains parts: [String], secrets: [String] = [],
                     file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertThrowsError(try c.credentials(), file: file, line: line) { e in
            guard let e = e as? DogestryError else { return XCTFail("not a DogestryError: \(e)", file: file, line: line) }
            if let k = kind { XCTAssertEqual(e.kind, k, e.message, file: file, line: line) }
            for p in parts { XCTAssertTrue(e.message.contains(p), "\(e.message) lacks \(p)", file: file, line: line) }
            for s in secrets { XCTAssertFalse(e.message.contains(s), "\(e.message) shows a secret", file: file, line: line) }
        }
    }

    static let profiles = """
        # comment
        [default]
        aws_access_key_id = AKIDDEFAULT
        aws_secret_access_key = secret-default

        [dev]
        aws_access_key_id=AKIDDEV
        aws_secret_access_key=secret/dev+x=
        aws_session_token = token-dev
        ; another comment
        [incomplete]
        aws_access_key_id = AKIDHALF
        """

    // MARK: order of precedence

    func testExplicitConfigWinsOverEnvironmentAndProfile() throws {
        try write(".aws/credentials", Self.profiles)
        var env = emptyEnv
        env["AWS_ACCESS_KEY_ID"] = "AKIDENV"; env["AWS_SECRET_ACCESS_KEY"] = "secret-env"
        let c = chain(["access-key-id": "AKIDCFG", "secret-key": "secret-cfg", "session-token": "tok-cfg", "region": "x"], env)
        XCTAssertEqual(try c.credentials(), AWSCredentials(accessKeyID: "AKIDCFG", secretAccessKey: "secret-cfg", sessionToken: "tok-cfg"))
        XCTAssertEqual(c.sourceDescription, "config [s3]")
    }

    func testEnvironmentWinsOverProfile() throws {
        try write(".aws/credentials", Self.profiles)
        var env = emptyEnv
        env["AWS_ACCESS_KEY_ID"] = "AKIDENV"; env["AWS_SECRET_ACCESS_KEY"] = "secret-env"; env["AWS_SESSION_TOKEN"] = "tok-env"
        let c = chain([:], env)
        XCTAssertEqual(try c.credentials(), AWSCredentials(accessKeyID: "AKIDENV", secretAccessKey: "secret-env", sessionToken: "tok-env"))
        XCTAssertEqual(c.sourceDescription, "environment (AWS_ACCESS_KEY_ID)")
    }

    func testOriginalDogestryEnvironmentNames() throws {
        var env = emptyEnv
        env["AWS_ACCESS_KEY"] = "AKIDOLD"; env["AWS_SECRET_KEY"] = "secret-old"
        let c = chain([:], env)
        XCTAssertEqual(try c.credentials(), AWSCredentials(accessKeyID: "AKIDOLD", secretAccessKey: "secret-old"))
        XCTAssertEqual(c.sourceDescription, "environment (AWS_ACCESS_KEY)")
        // The standard names win.
        env["AWS_ACCESS_KEY_ID"] = "AKIDNEW"; env["AWS_SECRET_ACCESS_KEY"] = "secret-new"
        XCTAssertEqual(try chain([:], env).credentials().accessKeyID, "AKIDNEW")
    }

    func testHalfSetKeysAreErrorsNamingTheSource() throws {
        var env = emptyEnv
        env["AWS_ACCESS_KEY_ID"] = "AKIDENV"
        assertError(chain([:], env), kind: .config, contains: ["AWS_ACCESS_KEY_ID is set but AWS_SECRET_ACCESS_KEY is not"])
        env = emptyEnv
        env["AWS_SECRET_KEY"] = "secret-only"
        assertError(chain([:], env), contains: ["AWS_SECRET_KEY is set but AWS_ACCESS_KEY is not"], secrets: ["secret-only"])
        assertError(chain(["secret-key": "cfg-secret"], emptyEnv), contains: ["[s3] secret-key is set but access-key-id is not"],
                    secrets: ["cfg-secret"])
        try write(".aws/credentials", Self.profiles)
        env = emptyEnv
        env["AWS_PROFILE"] = "incomplete"
        assertError(chain([:], env), kind: .config,
                    contains: ["AWS profile \"incomplete\" in ~/.aws/credentials has aws_access_key_id but no aws_secret_access_key"])
    }

    func testDefaultProfileFromCredentialsFile() throws {
        try write(".aws/credentials", Self.profiles)
        let c = chain([:], emptyEnv)
        XCTAssertEqual(try c.credentials(), AWSCredentials(accessKeyID: "AKIDDEFAULT", secretAccessKey: "secret-default"))
        XCTAssertEqual(c.sourceDescription, "profile \"default\" in ~/.aws/credentials")
    }

    func testNamedProfileFromEnvironmentAndConfig() throws {
        try write(".aws/credentials", Self.profiles)
        var env = emptyEnv
        env["AWS_PROFILE"] = "dev"
        XCTAssertEqual(try chain([:], env).credentials(),
                       AWSCredentials(accessKeyID: "AKIDDEV", secretAccessKey: "secret/dev+x=", sessionToken: "token-dev"))
        // The config's [s3] profile wins over AWS_PROFILE.
        env["AWS_PROFILE"] = "nonexistent"
        XCTAssertEqual(try chain(["profile": "default"], env).credentials().accessKeyID, "AKIDDEFAULT")
    }

    func testProfileInConfigFileAndCredentialsFileWins() throws {
        try write(".aws/config", """
            [default]
            region = eu-west-3
            [profile ci]
            region = ap-southeast-7
            aws_access_key_id = AKIDCFGFILE
            aws_secret_access_key = secret-cfgfile
            s3 =
              max_concurrent_requests = 20
            [profile both]
            aws_access_key_id = AKIDLOSER
            aws_secret_access_key = secret-loser
            [sso-session ci]
            aws_access_key_id = AKIDNOTAPROFILE
            """)
        try write(".aws/credentials", "[both]\naws_access_key_id = AKIDWINNER\naws_secret_access_key = secret-winner\n")
        var env = emptyEnv
        env["AWS_PROFILE"] = "ci"
        let c = chain([:], env)
        XCTAssertEqual(try c.credentials(), AWSCredentials(accessKeyID: "AKIDCFGFILE", secretAccessKey: "secret-cfgfile"))
        XCTAssertEqual(c.sourceDescription, "profile \"ci\" in ~/.aws/config")
        env["AWS_PROFILE"] = "both"
        XCTAssertEqual(try chain([:], env).credentials().accessKeyID, "AKIDWINNER")
        // A "[ci]" section of the config file is not "[profile ci]"; sso-session sections are not profiles.
        try write(".aws/config", "[ci]\naws_access_key_id = A\naws_secret_access_key = B\n")
        env["AWS_PROFILE"] = "ci"
        assertError(chain([:], env), kind: .config, contains: ["AWS profile \"ci\" not found in ~/.aws/credentials or ~/.aws/config"])
    }

    func testFileLocationsFromEnvironment() throws {
        try write("elsewhere/creds", "[x]\naws_access_key_id = AKIDX\naws_secret_access_key = sx\n")
        try write("elsewhere/cfg", "[profile y]\naws_access_key_id = AKIDY\naws_secret_access_key = sy\nregion = us-west-1\n")
        var env = emptyEnv
        env["AWS_SHARED_CREDENTIALS_FILE"] = home + "/elsewhere/creds"
        env["AWS_CONFIG_FILE"] = home + "/elsewhere/cfg"
        env["AWS_PROFILE"] = "x"
        let c = chain([:], env)
        XCTAssertEqual(try c.credentials().accessKeyID, "AKIDX")
        XCTAssertEqual(c.sourceDescription, "profile \"x\" in \(home)/elsewhere/creds")
        env["AWS_PROFILE"] = "y"
        XCTAssertEqual(try chain([:], env).credentials().accessKeyID, "AKIDY")
        XCTAssertEqual(resolveAWSRegion(explicit: nil, environment: env, home: home), "us-west-1")
    }

    func testMissingNamedProfileAndUnsupportedProfileKinds() throws {
        try write(".aws/config", """
            [profile proc]
            credential_process = /usr/bin/get-creds
            [profile role]
            role_arn = arn:aws:iam::123456789012:role/x
            source_profile = default
            [profile regiononly]
            region = eu-north-1
            """)
        assertError(chain(["profile": "nope"], emptyEnv), kind: .config, contains: ["AWS profile \"nope\" not found"])
        assertError(chain(["profile": "proc"], emptyEnv), kind: .unsupported, contains: ["\"proc\" uses credential_process"])
        assertError(chain(["profile": "role"], emptyEnv), kind: .unsupported, contains: ["\"role\" uses role_arn"])
        // A profile without keys lets the chain go on (and then find nothing).
        assertError(chain(["profile": "regiononly"], emptyEnv), kind: .auth,
                    contains: ["no AWS credentials found", "profile \"regiononly\" in ~/.aws/credentials"])
    }

    func testRegionResolution() throws {
        try write(".aws/config", "[default]\nregion = eu-west-3\n[profile dev]\nregion = ap-southeast-7\n")
        try write(".aws/credentials", "[credsonly]\nregion = sa-east-1\n")
        XCTAssertEqual(resolveAWSRegion(explicit: "us-east-2", environment: ["AWS_REGION": "x", "AWS_DEFAULT_REGION": "y"], home: home), "us-east-2")
        XCTAssertEqual(resolveAWSRegion(explicit: nil, environment: ["AWS_REGION": "x", "AWS_DEFAULT_REGION": "y"], home: home), "x")
        XCTAssertEqual(resolveAWSRegion(explicit: "", environment: ["AWS_DEFAULT_REGION": "y"], home: home), "y")
        XCTAssertEqual(resolveAWSRegion(explicit: nil, environment: [:], home: home), "eu-west-3")
        XCTAssertEqual(resolveAWSRegion(explicit: nil, environment: ["AWS_PROFILE": "dev"], home: home), "ap-southeast-7")
        XCTAssertEqual(resolveAWSRegion(explicit: nil, environment: ["AWS_PROFILE": "dev"], home: home, profile: "credsonly"), "sa-east-1")
        XCTAssertNil(resolveAWSRegion(explicit: nil, environment: ["AWS_PROFILE": "none"], home: home))
        XCTAssertNil(resolveAWSRegion(explicit: nil, environment: [:], home: home + "/nowhere"))
    }

    // MARK: container credentials

    func testContainerCredentialsWithAuthorizationToken() throws {
        let s = try standIn("container", ["--auth-token", "Bearer abc123", "--path", "/v2/creds",
                                          "--access-key", "ASIACONTAINER", "--secret-key", "container-secret"])
        var env = emptyEnv
        env["AWS_CONTAINER_CREDENTIALS_FULL_URI"] = s.base + "/v2/creds"
        env["AWS_CONTAINER_AUTHORIZATION_TOKEN"] = "Bearer abc123"
        let c = chain([:], env)
        let creds = try c.credentials()
        XCTAssertEqual(creds.accessKeyID, "ASIACONTAINER")
        XCTAssertEqual(creds.secretAccessKey, "container-secret")
        XCTAssertEqual(creds.sessionToken, "token-1")
        XCTAssertNil(creds.expiration)
        XCTAssertEqual(c.sourceDescription, "container credentials (\(s.base)/v2/creds)")

        // The token file wins over the token variable.
        try write("token", "Bearer abc123\n")
        env["AWS_CONTAINER_AUTHORIZATION_TOKEN"] = "Bearer wrong"
        env["AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE"] = home + "/token"
        XCTAssertEqual(try chain([:], env).credentials().sessionToken, "token-2")

        // A wrong token: an error naming the source, without secrets.
        env["AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE"] = nil
        assertError(chain([:], env), kind: .auth, contains: ["container credentials from \(s.base)/v2/creds", "HTTP 401"],
                    secrets: ["Bearer wrong", "container-secret"])
        XCTAssertEqual(try s.stats()["rejected"], 1)
        XCTAssertEqual(try s.stats()["credential_gets"], 2)
    }

    func testContainerURIRules() throws {
        var env = emptyEnv
        env["AWS_CONTAINER_CREDENTIALS_FULL_URI"] = "http://169.254.1.1/creds"
        assertError(chain([:], env), kind: .config, contains: ["must use https or a loopback host"])
        XCTAssertTrue(AWSCredentialChain.allowedContainerURL("https://example.com/x"))
        XCTAssertTrue(AWSCredentialChain.allowedContainerURL("http://localhost:8080/x"))
        XCTAssertTrue(AWSCredentialChain.allowedContainerURL("http://[::1]:80/x"))
        XCTAssertTrue(AWSCredentialChain.allowedContainerURL("http://169.254.170.23/v1/credentials"))
        XCTAssertFalse(AWSCredentialChain.allowedContainerURL("http://example.com/x"))
        XCTAssertFalse(AWSCredentialChain.allowedContainerURL("http://127.0.0.1.evil.com/x"))
        XCTAssertFalse(AWSCredentialChain.allowedContainerURL("ftp://127.0.0.1/x"))
        // The relative URI goes to 169.254.170.2 (unreachable here: a quick error naming it).
        env = emptyEnv
        env["AWS_CONTAINER_CREDENTIALS_RELATIVE_URI"] = "/v2/credentials/abc"
        // It gives up on a transport failure within the container client's short limits.
        XCTAssertEqual(AWSCredentialChain.containerTransport.connectTimeout, 2)
        XCTAssertEqual(AWSCredentialChain.containerTransport.lowSpeedTimeout, 5)
        XCTAssertThrowsError(try chain([:], env).credentials()) { e in
            let d = e as? DogestryError
            XCTAssertEqual(d?.kind, .auth)
            XCTAssertTrue(d?.message.contains("container credentials from http://169.254.170.2/v2/credentials/abc") ?? false, "\(e)")
            // (Unreachable on most machines, a transport failure then; some networks answer it.)
            XCTAssertTrue(d?.cause != nil || d?.message.contains("HTTP ") == true, "\(e)")
            XCTAssertFalse(d?.message.contains("\n") ?? true)
        }
    }

    func testProfileWinsOverContainerAndContainerOverInstanceMetadata() throws {
        let container = try standIn("container", ["--access-key", "ASIACONTAINER"])
        let imds = try standIn("imds", ["--access-key", "ASIAIMDS"])
        var env: [String: String] = ["AWS_CONTAINER_CREDENTIALS_FULL_URI": container.base + "/v2/credentials/dogestry",
                                     "AWS_EC2_METADATA_SERVICE_ENDPOINT": imds.base]
        XCTAssertEqual(try chain([:], env).credentials().accessKeyID, "ASIACONTAINER")
        XCTAssertEqual(try imds.stats()["token_puts"], 0)
        try write(".aws/credentials", Self.profiles)
        XCTAssertEqual(try chain([:], env).credentials().accessKeyID, "AKIDDEFAULT")
        XCTAssertEqual(try container.stats()["credential_gets"], 1)
        env["AWS_CONTAINER_CREDENTIALS_FULL_URI"] = nil
        try FileManager.default.removeItem(atPath: home + "/.aws/credentials")
        XCTAssertEqual(try chain([:], env).credentials().accessKeyID, "ASIAIMDS")
    }

    // MARK: instance metadata (IMDSv2)

    func testInstanceMetadataV2() throws {
        let s = try standIn("imds", ["--role", "my-role", "--access-key", "ASIAIMDS", "--secret-key", "imds-secret",
                                     "--expires-in", "21600"])
        // The stand-in really requires the session token.
        let raw = HTTPClient(options: HTTPTransportOptions())
        XCTAssertEqual(try raw.fetch(HTTPRequest(url: s.base + "/latest/meta-data/iam/security-credentials/")).0.status, 401)

        let c = chain([:], ["AWS_EC2_METADATA_SERVICE_ENDPOINT": s.base + "/"])
        let creds = try c.credentials()
        XCTAssertEqual(creds.accessKeyID, "ASIAIMDS")
        XCTAssertEqual(creds.secretAccessKey, "imds-secret")
        XCTAssertEqual(creds.sessionToken, "token-1")
        let exp = try XCTUnwrap(creds.expiration)
        XCTAssertEqual(exp.timeIntervalSinceNow, 21600, accuracy: 60)
        XCTAssertEqual(c.sourceDescription, "EC2 instance metadata at \(s.base) (IAM role my-role)")
        let st = try s.stats()
        XCTAssertEqual(st["token_puts"], 1)
        XCTAssertEqual(st["role_lists"], 1)
        XCTAssertEqual(st["credential_gets"], 1)
        XCTAssertEqual(st["rejected"], 1)  // only our own token-less probe above
        // Non-expiring within the window: cached.
        _ = try c.credentials()
        XCTAssertEqual(try s.stats()["credential_gets"], 1)
    }

    func testInstanceMetadataWithoutRoleFindsNothing() throws {
        let s = try standIn("imds", ["--no-role"])
        assertError(chain([:], ["AWS_EC2_METADATA_SERVICE_ENDPOINT": s.base]), kind: .auth,
                    contains: ["no AWS credentials found", "EC2 instance metadata)"])
        XCTAssertEqual(try s.stats()["role_lists"], 1)
    }

    func testMetadataDisabledIsHonoured() throws {
        let s = try standIn("imds")
        assertError(chain([:], ["AWS_EC2_METADATA_SERVICE_ENDPOINT": s.base, "AWS_EC2_METADATA_DISABLED": "TRUE"]), kind: .auth,
                    contains: ["no AWS credentials found", "EC2 instance metadata disabled by AWS_EC2_METADATA_DISABLED"])
        XCTAssertEqual(try s.stats(), ["token_puts": 0, "role_lists": 0, "credential_gets": 0, "rejected": 0])
        // "false" does not disable it.
        XCTAssertEqual(try chain([:], ["AWS_EC2_METADATA_SERVICE_ENDPOINT": s.base, "AWS_EC2_METADATA_DISABLED": "false"])
            .credentials().sessionToken, "token-1")
    }

    // MARK: expiry and refresh

    func testExpiringCredentialsAreRefreshed() throws {
        for mode in ["imds", "container"] {
            let s = try standIn(mode, ["--expires-in", "120"])
            let env = mode == "imds" ? ["AWS_EC2_METADATA_SERVICE_ENDPOINT": s.base]
                : ["AWS_CONTAINER_CREDENTIALS_FULL_URI": s.base + "/v2/credentials/dogestry"]
            let c = chain([:], env)
            XCTAssertEqual(try c.credentials().sessionToken, "token-1", mode)
            XCTAssertEqual(try c.credentials().sessionToken, "token-2", mode)
            XCTAssertEqual(try s.stats()["credential_gets"], 2, mode)
            // A failed refresh while the cached credentials are still valid returns those.
            s.stop()
            XCTAssertEqual(try c.credentials().sessionToken, "token-2", mode)
        }
    }

    func testNonExpiringCredentialsAreFetchedOnce() throws {
        for args in [["--expires-in", "3600"], []] {
            let s = try standIn("container", args)
            let c = chain([:], ["AWS_CONTAINER_CREDENTIALS_FULL_URI": s.base + "/v2/credentials/dogestry"])
            // Several threads at once: still one fetch.
            DispatchQueue.concurrentPerform(iterations: 8) { _ in XCTAssertEqual(try? c.credentials().sessionToken, "token-1") }
            XCTAssertEqual(try c.credentials().sessionToken, "token-1")
            XCTAssertEqual(try s.stats()["credential_gets"], 1, "\(args)")
        }
    }

    func testRefreshUsesTheInjectedClock() throws {
        let s = try standIn("container", ["--expires-in", "3600"])
        let c = chain([:], ["AWS_CONTAINER_CREDENTIALS_FULL_URI": s.base + "/v2/credentials/dogestry"])
        XCTAssertEqual(try c.credentials().sessionToken, "token-1")
        c.now = { Date().addingTimeInterval(3600 - 299) }  // inside the 5-minute window
        XCTAssertEqual(try c.credentials().sessionToken, "token-2")
        c.now = { Date().addingTimeInterval(3600 - 400) }  // outside it
        XCTAssertEqual(try c.credentials().sessionToken, "token-2")
    }

    // MARK: nothing found

    func testNoCredentialsErrorListsSourcesWithoutSecrets() throws {
        try write(".aws/credentials", "[other]\naws_access_key_id = AKIDOTHER\naws_secret_access_key = very-secret-value\n")
        let c = chain(["region": "us-east-1"], emptyEnv)
        XCTAssertThrowsError(try c.credentials()) { e in
            let e = e as! DogestryError
            XCTAssertEqual(e.kind, .auth)
            XCTAssertEqual(e.message, "no AWS credentials found (tried: config [s3], environment, profile \"default\" in ~/.aws/credentials, "
                + "container credentials, EC2 instance metadata)")
            XCTAssertFalse(e.message.contains("very-secret-value"))
        }
    }

    func testUnreachableInstanceMetadataFailsFast() throws {
        // 1. A listener that never answers (the kernel accepts the connection; no response comes).
        let (silentPort, closeSilent) = try LoopbackPort.silent()
        defer { closeSilent() }
        // 2. An address nobody answers on (TEST-NET-1), 3. a refused port.
        // Each probe ends on the metadata client's own 1 s limits, by the cause it names.
        XCTAssertEqual(AWSCredentialChain.metadataTransport.connectTimeout, 1)
        XCTAssertEqual(AWSCredentialChain.metadataTransport.lowSpeedTimeout, 1)
        let expected: [(String, Set<TransportCause>)] = [
            ("http://127.0.0.1:\(silentPort)", [.firstByteTimeout, .stalled, .timeout]),   // connected, never answered
            ("http://192.0.2.1", [.timeout, .refused]),                                     // no route or no answer
            ("http://127.0.0.1:\(closedPort)", [.refused]),
        ]
        for (endpoint, causes) in expected {
            let c = chain([:], ["AWS_EC2_METADATA_SERVICE_ENDPOINT": endpoint])
            assertError(c, kind: .auth, contains: ["no AWS credentials found"])
            let cause = try XCTUnwrap(c.metadataUnreachable, "\(endpoint): the probe was not given up as unreachable")
            XCTAssertTrue(causes.contains(cause), "\(endpoint): \(cause)")
        }
    }
}
