import DogestryCore
@testable import DogestryRemotes
import Foundation
import XCTest

/// Helpers shared by the S3 signer and credential tests.
enum S3AuthTestSupport {
    /// The repository root (three levels above this file).
    static let repoRoot = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
        .deletingLastPathComponent().deletingLastPathComponent()

    static func script(_ name: String) -> String { repoRoot.appendingPathComponent("scripts/lib/\(name)").path }

    /// Runs `python3 script args…` with `stdin`, returns stdout; throws with stderr on failure.
    static func runPython(_ script: String, _ args: [String] = [], stdin: Data = Data()) throws -> Data {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        p.arguments = ["python3", script] + args
        let inPipe = Pipe(), outPipe = Pipe()
        // stderr goes to a file so neither pipe can fill up and block the child.
        let errPath = NSTemporaryDirectory() + "dogestry-py-\(UUID().uuidString).err"
        _ = FileManager.default.createFile(atPath: errPath, contents: nil)
        defer { try? FileManager.default.removeItem(atPath: errPath) }
        let errHandle = try FileHandle(forWritingTo: URL(fileURLWithPath: errPath))
        defer { try? errHandle.close() }
        p.standardInput = inPipe
        p.standardOutput = outPipe
        p.standardError = errHandle
        try p.run()
        inPipe.fileHandleForWriting.write(stdin)
        try inPipe.fileHandleForWriting.close()
        let out = outPipe.fileHandleForReading.readDataToEndOfFile()
        p.waitUntilExit()
        let errData = FileManager.default.contents(atPath: errPath) ?? Data()
        guard p.terminationStatus == 0 else {
            throw DogestryError(.io, "python3 \(script) failed (\(p.terminationStatus)): \(String(decoding: errData, as: UTF8.self))")
        }
        return out
    }
}

final class SigV4Tests: XCTestCase {
    // A secret and a session token with the characters that need care (+ / =).
    static let creds = AWSCredentials(accessKeyID: "AKIDEXAMPLE", secretAccessKey: "wJalrXUtnFEMI/K7MDENG+bPxRfiCY/EXAMPLE=KEY",
                                      sessionToken: "IQoJb3JpZ2luX2VjEPT//////////wEaCXVzLWVhc3QtMSJHMEUCIQ+abc/def==")
    static let noTokenCreds = AWSCredentials(accessKeyID: "AKIDEXAMPLE", secretAccessKey: "wJalrXUtnFEMI/K7MDENG+bPxRfiCY/EXAMPLE=KEY")
    /// 2024-02-29T23:59:59.750Z: the signer must drop the fraction (botocore gets the whole second).
    static let date = Date(timeIntervalSince1970: 1_709_251_199.75)
    static let stamp = "20240229T235959Z"

    struct Case {
        var name: String
        var method: String
        var base: String  // scheme://host[:port]
        var pathSegments: [String]  // decoded
        var params: [(String, String?)] = []  // decoded; nil value: key alone
        var headers: [(String, String)] = []
        var body: [UInt8]? = []  // nil: UNSIGNED-PAYLOAD
        var region = "us-east-1"
        var creds = SigV4Tests.creds
        /// Use this raw query in our URL instead of encoding `params` (still decoded the same).
        var rawQuery: String? = nil

        var path: String { "/" + pathSegments.map { SigV4Signer.uriEncode($0, encodeSlash: true) }.joined(separator: "/") }
        var query: String {
            if let r = rawQuery { return r }
            return params.map { k, v in
                SigV4Signer.uriEncode(k, encodeSlash: true) + (v.map { "=" + SigV4Signer.uriEncode($0, encodeSlash: true) } ?? "")
            }.joined(separator: "&")
        }
        var url: String { base + path + (params.isEmpty && rawQuery == nil ? "" : "?" + query) }
        var payloadHash: String { body.map { SigV4Tests.sha256Hex($0) } ?? "UNSIGNED-PAYLOAD" }

        func botocoreHeaderCase() -> [String: Any] {
            var c: [String: Any] = [
                "kind": "header", "method": method, "url": base + path,
                "params": params.map { [$0.0, $0.1 ?? ""] },
                "headers": headers.map { [$0.0, $0.1] },
                "body_hex": hexString(body ?? []), "unsigned": body == nil,
                "region": region, "service": "s3", "access_key": creds.accessKeyID, "secret_key": creds.secretAccessKey,
                "timestamp": SigV4Tests.stamp,
            ]
            if let t = creds.sessionToken { c["token"] = t }
            return c
        }
    }

    static func sha256Hex(_ b: [UInt8]) -> String { let h = SHA256Hasher(); h.update(b); return hexString(h.finalizeBytes()) }

    static let randomBody: [UInt8] = {
        var g = SystemRandomNumberGenerator()
        return (0..<1000).map { _ in UInt8.random(in: 0...255, using: &g) }
    }()

    static let cases: [Case] = [
        Case(name: "GET, spaces, new region", method: "GET", base: "https://s3.ap-southeast-7.amazonaws.com",
             pathSegments: ["my-bucket", "dir", "file with space.tar"], region: "ap-southeast-7"),
        Case(name: "PUT, unicode + = in key, port, real payload", method: "PUT", base: "http://127.0.0.1:8333",
             pathSegments: ["bucket", "r\u{E9}po", "a+b=c.json"],
             headers: [("Content-Type", "application/json"), ("Content-Length", "24"),
                       ("x-amz-meta-note", "  two   spaces\there  ")],
             body: Array("{\"hello\": \"world\"}\n     ".utf8.prefix(24))),
        Case(name: "ListObjectsV2", method: "GET", base: "http://localhost:9000", pathSegments: ["bucket"],
             params: [("list-type", "2"), ("prefix", "a/b"), ("continuation-token", "1+ab/cd==x"), ("delimiter", "/"),
                      ("max-keys", "1000")],
             region: "eu-central-1", creds: SigV4Tests.noTokenCreds),
        Case(name: "ListObjectsV2 with raw slash in query", method: "GET", base: "http://localhost:9000",
             pathSegments: ["bucket"], params: [("list-type", "2"), ("prefix", "a/b")],
             region: "eu-central-1", rawQuery: "list-type=2&prefix=a/b"),
        Case(name: "CreateMultipartUpload", method: "POST", base: "https://s3.us-east-1.amazonaws.com",
             pathSegments: ["bucket", "images", "layer.tar.zst"], params: [("uploads", nil)],
             headers: [("Content-Type", "application/octet-stream")], body: nil),
        Case(name: "UploadPart, real payload", method: "PUT", base: "https://s3.ap-southeast-7.amazonaws.com",
             pathSegments: ["bucket", "images", "layer.tar"],
             params: [("partNumber", "1"), ("uploadId", "x~y.z_w-(q)!*'/+=")],
             headers: [("Content-Length", "1000"), ("Content-MD5", "1B2M2Y8AsgTpgAmY7PhCfg==")],
             body: SigV4Tests.randomBody, region: "ap-southeast-7"),
        Case(name: "UploadPart, unsigned", method: "PUT", base: "https://s3.ap-southeast-7.amazonaws.com",
             pathSegments: ["bucket", "images", "layer.tar"], params: [("partNumber", "2"), ("uploadId", "abc")],
             body: nil, region: "ap-southeast-7"),
        Case(name: "DELETE, unicode path, no token", method: "DELETE", base: "https://s3.amazonaws.com",
             pathSegments: ["bucket", "\u{65E5}\u{672C}", "u\u{308}ber", "x y"], creds: SigV4Tests.noTokenCreds),
        Case(name: "HEAD, repeated and hop-by-hop headers", method: "HEAD", base: "https://s3.amazonaws.com:443",
             pathSegments: ["bucket", "k"],
             headers: [("X-Amz-Meta-A", "one"), ("x-amz-meta-a", " two  words "), ("User-Agent", "dogestry/1"),
                       ("Expect", "100-continue"), ("Range", "bytes=0-9"), ("If-None-Match", "*")]),
        Case(name: "http on port 80, sorted query (case, repeated keys)", method: "GET", base: "http://s3.local:80",
             pathSegments: ["b", "o"], params: [("versionId", "null"), ("partNumber", "2"), ("Zeta", "1"),
                                                  ("partNumber", "10"), ("a", "dir with space/\u{FC}")]),
    ]

    // MARK: botocore comparison

    private func botocore(_ cases: [[String: Any]]) throws -> [[String: Any]] {
        let input = try JSONSerialization.data(withJSONObject: ["cases": cases])
        let out = try S3AuthTestSupport.runPython(S3AuthTestSupport.script("botocore_sign.py"), stdin: input)
        return try XCTUnwrap(JSONSerialization.jsonObject(with: out) as? [[String: Any]])
    }

    func testHeaderSignaturesMatchBotocore() throws {
        let results = try botocore(Self.cases.map { $0.botocoreHeaderCase() })
        XCTAssertEqual(results.count, Self.cases.count)
        for (c, r) in zip(Self.cases, results) {
            let signer = SigV4Signer(region: c.region)
            let headers = try signer.sign(method: c.method, url: c.url, headers: c.headers, payloadHash: c.payloadHash,
                                          credentials: c.creds, date: Self.date)
            func ours(_ name: String) -> String? { headers.last { $0.0.lowercased() == name }?.1 }
            XCTAssertEqual(ours("authorization"), r["authorization"] as? String,
                           "\(c.name): botocore canonical request:\n\(r["canonical_request"] ?? "")")
            XCTAssertEqual(ours("x-amz-date"), Self.stamp, c.name)
            XCTAssertEqual(ours("x-amz-content-sha256"), r["x-amz-content-sha256"] as? String, c.name)
            XCTAssertEqual(ours("x-amz-security-token"), r["x-amz-security-token"] as? String, c.name)
            // Exactly one of each signer header.
            for h in ["authorization", "x-amz-date", "x-amz-content-sha256", "host"] {
                XCTAssertEqual(headers.filter { $0.0.lowercased() == h }.count, 1, "\(c.name): \(h)")
            }
        }
    }

    func testPresignedURLsMatchBotocore() throws {
        let specs: [(Case, Int)] = [
            (Case(name: "GET with token", method: "GET", base: "https://s3.ap-southeast-7.amazonaws.com",
                  pathSegments: ["bucket", "r\u{E9}po", "a+b=c d.tar"], region: "ap-southeast-7"), 3600),
            (Case(name: "PUT part, no token", method: "PUT", base: "http://127.0.0.1:8333", pathSegments: ["bucket", "k"],
                  params: [("partNumber", "1"), ("uploadId", "x/y+z=")], creds: Self.noTokenCreds), 604_800),
            (Case(name: "HEAD, 1 s", method: "HEAD", base: "https://s3.amazonaws.com", pathSegments: ["b", "x"],
                  params: [("versionId", "abc")]), 1),
        ]
        let input: [[String: Any]] = specs.map { c, exp in
            var d: [String: Any] = ["kind": "presign", "method": c.method, "url": c.url, "expires": exp, "region": c.region,
                                    "access_key": c.creds.accessKeyID, "secret_key": c.creds.secretAccessKey,
                                    "timestamp": Self.stamp]
            if let t = c.creds.sessionToken { d["token"] = t }
            return d
        }
        let results = try botocore(input)
        for ((c, exp), r) in zip(specs, results) {
            let ours = try SigV4Signer(region: c.region).presign(method: c.method, url: c.url, expires: exp,
                                                                 credentials: c.creds, date: Self.date)
            let theirs = try XCTUnwrap(r["url"] as? String)
            let (ourBase, ourQuery) = Self.splitURL(ours), (theirBase, theirQuery) = Self.splitURL(theirs)
            XCTAssertEqual(ourBase, theirBase, c.name)
            XCTAssertEqual(ourQuery, theirQuery, "\(c.name): botocore canonical request:\n\(r["canonical_request"] ?? "")")
            XCTAssertEqual(ourQuery["X-Amz-Security-Token"], c.creds.sessionToken, c.name)
            XCTAssertEqual(ourQuery["X-Amz-SignedHeaders"], "host", c.name)
            XCTAssertEqual(ourQuery["X-Amz-Expires"], String(exp), c.name)
            XCTAssertTrue(ours.hasSuffix("&X-Amz-Signature=" + (ourQuery["X-Amz-Signature"] ?? "?")), ours)
        }
    }

    /// Base URL and decoded query parameters (a key without `=` maps to "").
    static func splitURL(_ url: String) -> (String, [String: String]) {
        let parts = url.split(separator: "?", maxSplits: 1)
        var q: [String: String] = [:]
        if parts.count > 1 {
            for pair in parts[1].split(separator: "&") {
                let kv = pair.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
                let k = String(decoding: SigV4Signer.percentDecoded(kv[0]), as: UTF8.self)
                q[k] = kv.count > 1 ? String(decoding: SigV4Signer.percentDecoded(kv[1]), as: UTF8.self) : ""
            }
        }
        return (String(parts[0]), q)
    }

    // MARK: AWS's published examples (S3 "Signature Calculations for the Authorization Header")

    static let docCreds = AWSCredentials(accessKeyID: "AKIAIOSFODNN7EXAMPLE", secretAccessKey: "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY")
    static let docDate = Date(timeIntervalSince1970: 1_369_353_600)  // 20130524T000000Z

    func testAWSDocumentedGetObjectExample() throws {
        let headers = try SigV4Signer(region: "us-east-1").sign(
            method: "GET", url: "https://examplebucket.s3.amazonaws.com/test.txt", headers: [("Range", "bytes=0-9")],
            payloadHash: SigV4Signer.emptyPayloadHash, credentials: Self.docCreds, date: Self.docDate)
        XCTAssertEqual(headers.last?.0, "Authorization")
        XCTAssertEqual(headers.last?.1,
                       "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request, "
                           + "SignedHeaders=host;range;x-amz-content-sha256;x-amz-date, "
                           + "Signature=f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41")
        XCTAssertTrue(headers.contains { $0 == ("Host", "examplebucket.s3.amazonaws.com") })
        XCTAssertTrue(headers.contains { $0 == ("X-Amz-Date", "20130524T000000Z") })
        XCTAssertTrue(headers.contains { $0 == ("Range", "bytes=0-9") })
        XCTAssertFalse(headers.contains { $0.0 == "X-Amz-Security-Token" })
    }

    func testAWSDocumentedPutObjectExample() throws {
        let body = Array("Welcome to Amazon S3.".utf8)
        let headers = try SigV4Signer(region: "us-east-1").sign(
            method: "PUT", url: "https://examplebucket.s3.amazonaws.com/test%24file.text",
            headers: [("Date", "Fri, 24 May 2013 00:00:00 GMT"), ("x-amz-storage-class", "REDUCED_REDUNDANCY")],
            payloadHash: Self.sha256Hex(body), credentials: Self.docCreds, date: Self.docDate)
        XCTAssertEqual(headers.last?.1,
                       "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request, "
                           + "SignedHeaders=date;host;x-amz-content-sha256;x-amz-date;x-amz-storage-class, "
                           + "Signature=98ad721746da40c64f1a55b78f14c238d841ea1380cd77a1b5971af0ece108bd")
    }

    func testAWSDocumentedListObjectsExample() throws {
        let headers = try SigV4Signer(region: "us-east-1").sign(
            method: "GET", url: "https://examplebucket.s3.amazonaws.com/?max-keys=2&prefix=J", headers: [],
            payloadHash: SigV4Signer.emptyPayloadHash, credentials: Self.docCreds, date: Self.docDate)
        XCTAssertEqual(headers.last?.1,
                       "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request, "
                           + "SignedHeaders=host;x-amz-content-sha256;x-amz-date, "
                           + "Signature=34b48302e7b5fa45bde8084f4b7868a86f0a534bc59db6670ed5711ef69dc6f7")
    }

    func testAWSDocumentedPresignedURLExample() throws {
        let url = try SigV4Signer(region: "us-east-1").presign(
            method: "GET", url: "https://examplebucket.s3.amazonaws.com/test.txt", expires: 86400,
            credentials: Self.docCreds, date: Self.docDate)
        XCTAssertEqual(url, "https://examplebucket.s3.amazonaws.com/test.txt?X-Amz-Algorithm=AWS4-HMAC-SHA256"
            + "&X-Amz-Credential=AKIAIOSFODNN7EXAMPLE%2F20130524%2Fus-east-1%2Fs3%2Faws4_request"
            + "&X-Amz-Date=20130524T000000Z&X-Amz-Expires=86400&X-Amz-SignedHeaders=host"
            + "&X-Amz-Signature=aeeed9bbccd4d02ee5c0109b86d86835f995330da4c265957d157751f604d404")
    }

    // MARK: what SeaweedFS does not check: payload hash and region

    func testPayloadHashAndRegionChangeTheSignature() throws {
        let url = "http://127.0.0.1:8333/bucket/key"
        func auth(region: String, hash: String) throws -> String {
            try SigV4Signer(region: region).sign(method: "PUT", url: url, headers: [], payloadHash: hash,
                                                 credentials: Self.creds, date: Self.date).last!.1
        }
        let h1 = Self.sha256Hex(Array("one".utf8)), h2 = Self.sha256Hex(Array("two".utf8))
        let base = try auth(region: "us-east-1", hash: h1)
        XCTAssertNotEqual(base, try auth(region: "us-east-1", hash: h2))
        XCTAssertNotEqual(base, try auth(region: "us-east-1", hash: "UNSIGNED-PAYLOAD"))
        XCTAssertNotEqual(base, try auth(region: "us-west-2", hash: h1))
        XCTAssertTrue(try auth(region: "ap-southeast-7", hash: h1).contains("/20240229/ap-southeast-7/s3/aws4_request,"))
        XCTAssertEqual(base, try auth(region: "us-east-1", hash: h1.uppercased()), "hex case must not matter")
        // The hash is sent as given.
        let headers = try SigV4Signer(region: "us-east-1").sign(method: "PUT", url: url, headers: [], payloadHash: h2,
                                                                credentials: Self.creds, date: Self.date)
        XCTAssertTrue(headers.contains { $0 == ("X-Amz-Content-SHA256", h2) })
        // Presigned URLs: region and method are in the signature.
        let p1 = try SigV4Signer(region: "us-east-1").presign(method: "GET", url: url, expires: 60, credentials: Self.creds, date: Self.date)
        let p2 = try SigV4Signer(region: "eu-west-1").presign(method: "GET", url: url, expires: 60, credentials: Self.creds, date: Self.date)
        let p3 = try SigV4Signer(region: "us-east-1").presign(method: "PUT", url: url, expires: 60, credentials: Self.creds, date: Self.date)
        XCTAssertNotEqual(Self.splitURL(p1).1["X-Amz-Signature"], Self.splitURL(p2).1["X-Amz-Signature"])
        XCTAssertNotEqual(Self.splitURL(p1).1["X-Amz-Signature"], Self.splitURL(p3).1["X-Amz-Signature"])
    }

    // MARK: details

    func testCallerSignerHeadersAreReplacedAndEmptyHeadersNotSigned() throws {
        let headers = try SigV4Signer(region: "us-east-1").sign(
            method: "GET", url: "http://h:1/b/k",
            headers: [("x-amz-date", "19990101T000000Z"), ("Authorization", "old"), ("X-Amz-Content-Sha256", "x"),
                      ("Accept", ""), ("X-Amz-Security-Token", "stale")],
            payloadHash: "", credentials: Self.creds, date: Self.date)
        XCTAssertEqual(headers.filter { $0.0.lowercased() == "x-amz-date" }.map { $0.1 }, [Self.stamp])
        XCTAssertEqual(headers.filter { $0.0.lowercased() == "authorization" }.count, 1)
        XCTAssertEqual(headers.filter { $0.0.lowercased() == "x-amz-content-sha256" }.map { $0.1 }, ["UNSIGNED-PAYLOAD"])
        XCTAssertEqual(headers.filter { $0.0.lowercased() == "x-amz-security-token" }.map { $0.1 }, [Self.creds.sessionToken!])
        XCTAssertTrue(headers.contains { $0 == ("Accept", "") }, "removal directives are passed through")
        XCTAssertTrue(headers.contains { $0 == ("Host", "h:1") })
        XCTAssertTrue(headers.last!.1.contains("SignedHeaders=host;x-amz-content-sha256;x-amz-date;x-amz-security-token,"))
    }

    func testExplicitHostHeaderIsKept() throws {
        let headers = try SigV4Signer(region: "us-east-1").sign(
            method: "GET", url: "http://127.0.0.1:9000/k", headers: [("Host", "bucket.s3.example")],
            payloadHash: SigV4Signer.emptyPayloadHash, credentials: Self.noTokenCreds, date: Self.date)
        XCTAssertEqual(headers.filter { $0.0.lowercased() == "host" }.map { $0.1 }, ["bucket.s3.example"])
    }

    func testUriEncode() {
        XCTAssertEqual(SigV4Signer.uriEncode("a b+c=d/\u{E9}~_.-AZaz09", encodeSlash: false), "a%20b%2Bc%3Dd/%C3%A9~_.-AZaz09")
        XCTAssertEqual(SigV4Signer.uriEncode("a/b", encodeSlash: true), "a%2Fb")
        XCTAssertEqual(SigV4Signer.uriEncode("!*'();:@&$,?#[]%", encodeSlash: true), "%21%2A%27%28%29%3B%3A%40%26%24%2C%3F%23%5B%5D%25")
        XCTAssertEqual(SigV4Signer.uriEncode("", encodeSlash: true), "")
        XCTAssertEqual(SigV4Signer.canonicalQuery("b=2&a=%2f&uploads&a=1"), "a=%2F&a=1&b=2&uploads=")
        XCTAssertEqual(SigV4Signer.canonicalQuery("k=100%"), "k=100%25")
    }

    func testHMACSHA256() {
        // RFC 4231 test case 2.
        XCTAssertEqual(hexString(hmacSHA256(key: Array("Jefe".utf8), data: Array("what do ya want for nothing?".utf8))),
                       "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843")
        XCTAssertEqual(hexString(hmacSHA256(key: [], data: [])),
                       "b613679a0814d9ec772f95d778c35fc5ff1697c493715653c6c712144292c5ad")
        // RFC 4231 test case 6 (key longer than the block size).
        XCTAssertEqual(hexString(hmacSHA256(key: [UInt8](repeating: 0xaa, count: 131),
                                            data: Array("Test Using Larger Than Block-Size Key - Hash Key First".utf8))),
                       "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54")
    }

    func testErrorsAndDescriptionsNeverShowTheSecret() {
        let secret = Self.creds.secretAccessKey, token = Self.creds.sessionToken!
        XCTAssertFalse(String(describing: Self.creds).contains(secret))
        XCTAssertFalse(String(reflecting: Self.creds).contains(secret))
        XCTAssertFalse(String(describing: Self.creds).contains(token))
        func check(_ f: () throws -> Any, _ expected: String, file: StaticString = #filePath, line: UInt = #line) {
            XCTAssertThrowsError(try f(), file: file, line: line) { e in
                let m = (e as? DogestryError)?.message ?? "\(e)"
                XCTAssertTrue(m.contains(expected), m, file: file, line: line)
                XCTAssertFalse(m.contains(secret), m, file: file, line: line)
                XCTAssertFalse(m.contains(token), m, file: file, line: line)
            }
        }
        let s = SigV4Signer(region: "us-east-1")
        check({ try s.presign(method: "GET", url: "http://h/k", expires: 0, credentials: Self.creds, date: Self.date) }, "1…604800")
        check({ try s.presign(method: "GET", url: "http://h/k", expires: 604_801, credentials: Self.creds, date: Self.date) }, "1…604800")
        check({ try s.sign(method: "GET", url: "http://h/k", headers: [], payloadHash: "abc", credentials: Self.creds, date: Self.date) },
              "payload hash")
        check({ try SigV4Signer(region: "").sign(method: "GET", url: "http://h/k", headers: [], payloadHash: "", credentials: Self.creds, date: Self.date) },
              "region")
        check({ try s.sign(method: "GET", url: "no-scheme/k", headers: [], payloadHash: "", credentials: Self.creds, date: Self.date) },
              "not an absolute URL")
        var noSecret = Self.creds; noSecret.secretAccessKey = ""
        check({ try s.sign(method: "GET", url: "http://h/k", headers: [], payloadHash: "", credentials: noSecret, date: Self.date) },
              "secret access key is empty")
        XCTAssertNoThrow(try s.presign(method: "GET", url: "http://h/k", expires: 604_800, credentials: Self.creds, date: Self.date))
    }

    func testPresignReplacesStaleAuthParametersAndKeepsOthers() throws {
        let url = try SigV4Signer(region: "us-east-1").presign(
            method: "GET", url: "http://h:9/b/k?versionId=v1&X-Amz-Signature=old&X-Amz-Date=19990101T000000Z#frag",
            expires: 10, credentials: Self.noTokenCreds, date: Self.date)
        let (base, q) = Self.splitURL(url)
        XCTAssertEqual(base, "http://h:9/b/k")
        XCTAssertEqual(q["versionId"], "v1")
        XCTAssertEqual(q["X-Amz-Date"], Self.stamp)
        XCTAssertEqual(url.components(separatedBy: "X-Amz-Signature=").count, 2)
        XCTAssertNil(q["X-Amz-Security-Token"])
        XCTAssertFalse(url.contains("#"))
    }
}
