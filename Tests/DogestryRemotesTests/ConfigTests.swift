import DogestryCore
import DogestryHTTP
import DogestryRemotes
@testable import DogestrySync
import Foundation
import XCTest

final class ConfigTests: XCTestCase {
    // MARK: Helpers

    private func parse(_ text: String, path: String = "dogestry.cfg") throws -> DogestryConfig {
        try DogestryConfig.parse(text, path: path)
    }

    /// Asserts `text` fails to parse with exactly `message`, as a `.config` error.
    private func assertError(_ text: String, _ message: String, path: String = "dogestry.cfg",
                             file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertThrowsError(try DogestryConfig.parse(text, path: path), file: file, line: line) { error in
            guard let e = error as? DogestryError else { return XCTFail("not a DogestryError: \(error)", file: file, line: line) }
            XCTAssertEqual(e.kind, .config, file: file, line: line)
            XCTAssertEqual(e.message, message, file: file, line: line)
        }
    }

    /// The message of the error `text` fails with (or nil).
    private func errorMessage(_ text: String, path: String = "dogestry.cfg") -> String? {
        do {
            _ = try DogestryConfig.parse(text, path: path)
            return nil
        } catch let e as DogestryError {
            XCTAssertEqual(e.kind, .config)
            XCTAssertFalse(e.message.contains("\n"))
            return e.message
        } catch {
            XCTFail("not a DogestryError: \(error)")
            return nil
        }
    }

    private func makeTempDir() throws -> String {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("dogestry-config-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        addTeardownBlock { try? FileManager.default.removeItem(atPath: dir) }
        return dir
    }

    private func write(_ text: String, to path: String) throws {
        try FileManager.default.createDirectory(atPath: (path as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
        try Data(text.utf8).write(to: URL(fileURLWithPath: path))
    }

    // MARK: Syntax

    func testDocumentedExample() throws {
        let cfg = try parse("""
            # comment        ; comment
            [remote "central"]
                url = s3://my-bucket/images?region=eu-west-1
            [docker]
                connection = unix:///var/run/docker.sock
            [compression]
                algorithm = zstd      ; zstd | lz4 | gzip | none
                level = 1
            """)
        XCTAssertEqual(cfg.path, "dogestry.cfg")
        XCTAssertEqual(cfg.remotes, ["central": "s3://my-bucket/images?region=eu-west-1"])
        XCTAssertEqual(cfg.dockerConnection, "unix:///var/run/docker.sock")
        XCTAssertEqual(cfg.compression, .zstd)
        XCTAssertEqual(cfg.compressionLevel, 1)
        XCTAssertNil(cfg.concurrency)
        XCTAssertNil(cfg.tempDir)
        XCTAssertEqual(cfg.s3, [:])
        XCTAssertEqual(cfg.manta, [:])
        XCTAssertNil(cfg.s3PartSize)
    }

    func testEmptyAndCommentOnlyText() throws {
        var expected = DogestryConfig.empty
        expected.path = "x.cfg"
        XCTAssertEqual(try parse("", path: "x.cfg"), expected)
        XCTAssertEqual(try parse("\n\n   \n\t\n", path: "x.cfg"), expected)
        XCTAssertEqual(try parse("# one\n; two\n   # three [docker]\n\t; four = 4\n", path: "x.cfg"), expected)
        XCTAssertNil(DogestryConfig.empty.path)
        XCTAssertTrue(DogestryConfig.empty.remotes.isEmpty)
        XCTAssertNil(DogestryConfig.empty.compression)
    }

    func testInlineComments() throws {
        let cfg = try parse("""
            [transfer] ; a comment after a header
                tempdir = /tmp/a#not part of it
                concurrency = 8;also a comment
            [docker]   # another
                connection = "tcp://h:2375#x;y"  # quoted # and ; are kept
            """)
        XCTAssertEqual(cfg.tempDir, "/tmp/a")
        XCTAssertEqual(cfg.concurrency, 8)
        XCTAssertEqual(cfg.dockerConnection, "tcp://h:2375#x;y")
    }

    func testSectionNamesAreCaseInsensitiveSubsectionsAreNot() throws {
        let cfg = try parse("""
            [DOCKER]
            connection = tcp://a:1
            [Remote "Central"]
            url = /a
            [REMOTE "central"]
            url = /b
            [Compression]
            Algorithm = LZ4
            """)
        XCTAssertEqual(cfg.dockerConnection, "tcp://a:1")
        XCTAssertEqual(cfg.remotes, ["Central": "/a", "central": "/b"])
        XCTAssertEqual(cfg.compression, .lz4)
    }

    func testKeysAreCaseInsensitive() throws {
        let cfg = try parse("""
            [remote "r"]
            URL = /x
            [docker]
            CoNnEcTiOn = unix:///s
            [s3]
            Access-Key-ID = AKIA
            PART-SIZE = 8M
            [manta]
            KEY_ID = SHA256:abc
            """)
        XCTAssertEqual(cfg.remotes["r"], "/x")
        XCTAssertEqual(cfg.dockerConnection, "unix:///s")
        XCTAssertEqual(cfg.s3["access-key-id"], "AKIA")
        XCTAssertEqual(cfg.s3["part-size"], "8M")
        XCTAssertEqual(cfg.manta["key_id"], "SHA256:abc")
    }

    func testSubsectionEscapes() throws {
        // As in git, \x in a subsection name gives x.
        XCTAssertEqual(try parse("[remote \"c\\entral\"]\nurl = /x\n").remotes, ["central": "/x"])
        // \" and \\ are part of the name (which is then not a valid remote name).
        assertError("[remote \"a\\\"b\\\\c\"]\nurl = /x\n",
                    #"dogestry.cfg:1: invalid remote name "a\"b\\c" (names must match [A-Za-z0-9][A-Za-z0-9._-]*)"#)
        assertError("[docker \"x\\\"y\"]\n", #"dogestry.cfg:1: unknown section [docker "x\"y"]"#)
        // Spaces between the section name and the quoted name are allowed.
        XCTAssertEqual(try parse("[remote  \t\"a.b_c-1\"]\nurl=/x").remotes, ["a.b_c-1": "/x"])
    }

    func testQuotedValuesAndEscapes() throws {
        let cfg = try parse(#"""
            [transfer]
            tempdir = "  spaced  "
            [s3]
            profile = a"  b  "c  d   ; comment
            region = "eu-west-1"
            [manta]
            role = "tab\there\nnewline \"quoted\" back\\slash" # comment
            root = /a\\b
            user = "" x
            """#)
        XCTAssertEqual(cfg.tempDir, "  spaced  ")
        XCTAssertEqual(cfg.s3["profile"], "a  b  c  d")  // as in git, unquoted inner whitespace is kept
        XCTAssertEqual(cfg.s3["region"], "eu-west-1")
        XCTAssertEqual(cfg.manta["role"], "tab\there\nnewline \"quoted\" back\\slash")
        XCTAssertEqual(cfg.manta["root"], "/a\\b")
        XCTAssertEqual(cfg.manta["user"], "x")
    }

    func testWhitespaceIsTrimmed() throws {
        let cfg = try parse("  [docker]  \n\t connection\t=\t  unix:///var/run/docker.sock  \t\n  [transfer]\n tempdir=/a b   c  \n")
        XCTAssertEqual(cfg.dockerConnection, "unix:///var/run/docker.sock")
        XCTAssertEqual(cfg.tempDir, "/a b   c")
    }

    func testLineContinuationValuesAndLineNumbers() throws {
        let cfg = try parse("[remote \"r\"]\nurl = s3://bucket/\\\nprefix?region=\\\neu-west-1\n[transfer]\ntempdir = \"/a \\\nb\"\n")
        XCTAssertEqual(cfg.remotes["r"], "s3://bucket/prefix?region=eu-west-1")
        XCTAssertEqual(cfg.tempDir, "/a b")
        assertError("[remote \"r\"]\nurl = a\\\nb\\\nc\n[docker]\nconnection = x\n",
                    #"dogestry.cfg:6: connection in [docker] must be unix://…, tcp://…, http://… or https://…, not "x""#)
        // A backslash in a comment does not continue the line.
        XCTAssertEqual(try parse("[transfer]\ntempdir = /a # \\\nconcurrency = 2\n").concurrency, 2)
    }

    func testBooleans() throws {
        for (text, expected) in [("true", "true"), ("TRUE", "true"), ("yes", "true"), ("on", "true"), ("1", "true"),
                                 ("false", "false"), ("No", "false"), ("off", "false"), ("0", "false"), ("", "false"),
                                 ("\"yes\"", "true")] {
            XCTAssertEqual(try parse("[manta]\ninsecure = \(text)\n").manta["insecure"], expected, text)
        }
        // A bare key means true, also before a comment or the end of the file.
        XCTAssertEqual(try parse("[manta]\ninsecure\n").manta["insecure"], "true")
        XCTAssertEqual(try parse("[manta]\n  insecure   # yes\n").manta["insecure"], "true")
        XCTAssertEqual(try parse("[manta]\ninsecure").manta["insecure"], "true")
        assertError("[manta]\n\ninsecure = maybe\n",
                    #"dogestry.cfg:3: insecure in [manta] must be a boolean (true/false, yes/no, on/off, 1/0), not "maybe""#)
        assertError("[manta]\ninsecure = 2\n",
                    #"dogestry.cfg:2: insecure in [manta] must be a boolean (true/false, yes/no, on/off, 1/0), not "2""#)
    }

    func testDuplicateKeyLastWins() throws {
        let cfg = try parse("""
            [docker]
            connection = unix:///a
            connection = unix:///b
            [compression]
            algorithm = gzip
            level = 3
            [docker]
            connection = tcp://c:1
            [compression]
            level = 9
            algorithm = zstd
            [s3]
            region = a
            region = b
            """)
        XCTAssertEqual(cfg.dockerConnection, "tcp://c:1")
        XCTAssertEqual(cfg.compression, .zstd)
        XCTAssertEqual(cfg.compressionLevel, 9)
        XCTAssertEqual(cfg.s3["region"], "b")
    }

    func testRepeatedRemoteSectionsMerge() throws {
        let cfg = try parse("""
            [remote "a"]
            [remote "b"]
            url = /b
            [remote "a"]
            url = /a1
            [remote "b"]
            url = /b2
            """)
        XCTAssertEqual(cfg.remotes, ["a": "/a1", "b": "/b2"])
    }

    func testCRLFAndByteOrderMark() throws {
        let cfg = try parse("\u{FEFF}[docker]\r\nconnection = unix:///x \r\n[transfer]\r\nconcurrency = 3\r\n")
        XCTAssertEqual(cfg.dockerConnection, "unix:///x")
        XCTAssertEqual(cfg.concurrency, 3)
        assertError("[docker]\r\n\r\nconnection = nope\r\n",
                    #"dogestry.cfg:3: connection in [docker] must be unix://…, tcp://…, http://… or https://…, not "nope""#)
    }

    func testKeyOnTheHeaderLine() throws {
        let cfg = try parse("[docker] connection = tcp://h:2376\n[remote \"x\"] url = /x")
        XCTAssertEqual(cfg.dockerConnection, "tcp://h:2376")
        XCTAssertEqual(cfg.remotes, ["x": "/x"])
    }

    // MARK: Schema and values

    func testAllSections() throws {
        let cfg = try parse("""
            [remote "central"]
            url = s3://my-bucket/images?region=eu-west-1
            [remote "local"]
            url = /srv/dogestry
            [docker]
            connection = https://docker.example:2376
            [compression]
            algorithm = gzip
            level = 9
            [transfer]
            concurrency = 64
            tempdir = /var/tmp
            [s3]
            access-key-id = AKIAEXAMPLE
            secret-key = s3cr3t/+x
            session-token = tok==
            region = eu-west-1
            endpoint = http://minio:9000
            part-size = 5MiB
            concurrency = 1
            profile = work
            [manta]
            url = https://us-central.manta.mnx.io
            account = acct
            user = sub
            key_id = aa:bb:cc
            private_key = /k/id_rsa
            algo = ECDSA-SHA256
            root = /acct/stor
            durability = 6
            insecure = yes
            role = r1,r2
            """)
        XCTAssertEqual(cfg.remotes, ["central": "s3://my-bucket/images?region=eu-west-1", "local": "/srv/dogestry"])
        XCTAssertEqual(cfg.dockerConnection, "https://docker.example:2376")
        XCTAssertEqual(cfg.compression, .gzip)
        XCTAssertEqual(cfg.compressionLevel, 9)
        XCTAssertEqual(cfg.concurrency, 64)
        XCTAssertEqual(cfg.tempDir, "/var/tmp")
        XCTAssertEqual(cfg.s3, [
            "access-key-id": "AKIAEXAMPLE", "secret-key": "s3cr3t/+x", "session-token": "tok==", "region": "eu-west-1",
            "endpoint": "http://minio:9000", "part-size": "5MiB", "concurrency": "1", "profile": "work",
        ])
        XCTAssertEqual(cfg.s3PartSize, 5 << 20)
        XCTAssertEqual(cfg.manta, [
            "url": "https://us-central.manta.mnx.io", "account": "acct", "user": "sub", "key_id": "aa:bb:cc",
            "private_key": "/k/id_rsa", "algo": "ecdsa-sha256", "root": "/acct/stor", "durability": "6",
            "insecure": "true", "role": "r1,r2",
        ])
    }

    func testCompressionAlgorithmsAndLevels() throws {
        for c in Compression.allCases {
            for level in [c.levelRange.lowerBound, c.levelRange.upperBound] {
                let cfg = try parse("[compression]\nalgorithm = \(c.rawValue)\nlevel = \(level)\n")
                XCTAssertEqual(cfg.compression, c)
                XCTAssertEqual(cfg.compressionLevel, level)
            }
        }
        // The level is checked against the algorithm once the whole file is read, whatever the order.
        XCTAssertEqual(try parse("[compression]\nlevel = 12\nalgorithm = lz4\n").compressionLevel, 12)
        XCTAssertEqual(try parse("[compression]\nlevel = 19\n").compressionLevel, 19)  // default zstd
        XCTAssertNil(try parse("[compression]\nalgorithm = none\n").compressionLevel)
    }

    func testPartSizes() throws {
        let cases: [(String, Int64)] = [
            ("5242880", 5 << 20), ("5120K", 5 << 20), ("5120k", 5 << 20), ("5120KiB", 5 << 20), ("8M", 8 << 20),
            ("8 MiB", 8 << 20), ("16mib", 16 << 20), ("1G", 1 << 30), ("5GiB", 5 << 30), ("\"64MiB\"", 64 << 20),
        ]
        for (text, bytes) in cases {
            XCTAssertEqual(try parse("[s3]\npart-size = \(text)\n").s3PartSize, bytes, text)
        }
    }

    // MARK: Errors

    func testUnknownKey() {
        let text = (1...11).map { _ in "# filler" }.joined(separator: "\n") + "\n" + "[remote \"central\"] urll = s3://b\n"
        assertError(text, #"dogestry.cfg:12: unknown key "urll" in [remote "central"]"#)
        assertError("[remote \"central\"]\nurl = /x\n\n\nUrll = y", #"dogestry.cfg:5: unknown key "Urll" in [remote "central"]"#)
        assertError("[docker]\nhost = x\n", #"dogestry.cfg:2: unknown key "host" in [docker]"#)
        assertError("[s3]\nsecret_key = x\n", #"dogestry.cfg:2: unknown key "secret_key" in [s3]"#)
        assertError("[manta]\nkey-id = x\n", #"dogestry.cfg:2: unknown key "key-id" in [manta]"#)
        assertError("[transfer]\nlevel = 1\n", #"dogestry.cfg:2: unknown key "level" in [transfer]"#)
        assertError("[compression]\nconcurrency = 1\n", #"dogestry.cfg:2: unknown key "concurrency" in [compression]"#)
    }

    func testUnknownSection() {
        assertError("# a\n\n[dokcer]\nconnection = x\n", "dogestry.cfg:3: unknown section [dokcer]")
        assertError("[Dokcer]\n", "dogestry.cfg:1: unknown section [dokcer]")
        assertError("[include]\npath = x\n", "dogestry.cfg:1: unknown section [include]")
        assertError("[docker.x]\n", "dogestry.cfg:1: unknown section [docker.x]")
        assertError("[s3 \"eu\"]\n", #"dogestry.cfg:1: unknown section [s3 "eu"]"#)
        assertError("[remote]\nurl = /x\n", #"dogestry.cfg:1: section [remote] needs a name, as in [remote "central"]"#)
    }

    func testRemoteNames() throws {
        XCTAssertEqual(try parse("[remote \"A9._-z\"]\nurl=/x\n").remotes.keys.sorted(), ["A9._-z"])
        XCTAssertEqual(try parse("[remote \"9\"]\nurl=/x\n").remotes.keys.sorted(), ["9"])
        for bad in ["", "-a", ".a", "_a", "a b", "a/b", "a:b", "é"] {
            assertError("\n[remote \"\(bad)\"]\nurl = /x\n",
                        "dogestry.cfg:2: invalid remote name \(DogestryConfig.quoted(bad)) (names must match [A-Za-z0-9][A-Za-z0-9._-]*)")
        }
    }

    func testRemoteURLIsRequired() {
        assertError("[remote \"a\"]\n[docker]\n", #"dogestry.cfg:1: [remote "a"] has no url"#)
        assertError("[remote \"ok\"]\nurl=/x\n\n[remote \"b\"]\n# nothing\n[remote \"b\"]\n", #"dogestry.cfg:4: [remote "b"] has no url"#)
        assertError("[remote \"a\"]\nurl =\n", #"dogestry.cfg:2: url in [remote "a"] must not be empty"#)
        assertError("[remote \"a\"]\nurl = \"\"  # empty\n", #"dogestry.cfg:2: url in [remote "a"] must not be empty"#)
        assertError("[remote \"a\"]\n url\n", #"dogestry.cfg:2: url in [remote "a"] needs a value"#)
    }

    func testCompressionErrors() {
        assertError("[compression]\nalgorithm = zstd\n\n\n\n\nlevel = 40\n", "dogestry.cfg:7: compression level 40 is out of range 1…19 for zstd")
        assertError("[compression]\nlevel = 40\n", "dogestry.cfg:2: compression level 40 is out of range 1…19 for zstd")
        assertError("[compression]\nlevel = 0\n", "dogestry.cfg:2: compression level 0 is out of range 1…19 for zstd")
        assertError("[compression]\nlevel = 10\nalgorithm = gzip\n", "dogestry.cfg:2: compression level 10 is out of range 1…9 for gzip")
        assertError("[compression]\nalgorithm = lz4\nlevel = 13\n", "dogestry.cfg:3: compression level 13 is out of range 0…12 for lz4")
        assertError("[compression]\nalgorithm = none\nlevel = 1\n", "dogestry.cfg:3: compression level 1 is out of range 0…0 for none")
        assertError("[compression]\nlevel = fast\n", #"dogestry.cfg:2: compression level must be an integer, not "fast""#)
        assertError("[compression]\nalgorithm = bzip2\n", #"dogestry.cfg:2: unknown compression algorithm "bzip2" (expected zstd, lz4, gzip or none)"#)
        assertError("[compression]\nalgorithm\n", "dogestry.cfg:2: algorithm in [compression] needs a value")
    }

    func testDockerConnectionErrors() throws {
        for ok in ["unix:///var/run/docker.sock", "tcp://127.0.0.1:2375", "http://h:2375", "https://h:2376", "TCP://h:1"] {
            XCTAssertEqual(try parse("[docker]\nconnection = \(ok)\n").dockerConnection, ok)
        }
        for bad in ["/var/run/docker.sock", "ssh://host", "tcp://", "npipe:////./pipe/docker_engine", "tcp://a b"] {
            assertError("[docker]\nconnection = \(bad)\n",
                        "dogestry.cfg:2: connection in [docker] must be unix://…, tcp://…, http://… or https://…, not \(DogestryConfig.quoted(bad))")
        }
    }

    func testTransferErrors() {
        assertError("[transfer]\nconcurrency = 0\n", "dogestry.cfg:2: concurrency 0 in [transfer] is out of range 1…64")
        assertError("[transfer]\nconcurrency = 65\n", "dogestry.cfg:2: concurrency 65 in [transfer] is out of range 1…64")
        assertError("[transfer]\nconcurrency = lots\n", #"dogestry.cfg:2: concurrency in [transfer] must be an integer, not "lots""#)
        assertError("[transfer]\nconcurrency = 4.5\n", #"dogestry.cfg:2: concurrency in [transfer] must be an integer, not "4.5""#)
        assertError("[transfer]\ntempdir =\n", "dogestry.cfg:2: tempdir in [transfer] must not be empty")
    }

    func testPruneSettings() throws {
        let cfg = try DogestryConfig.parse("[prune]\ngrace = 7d\ntouch-after = 0\n", path: "dogestry.cfg")
        XCTAssertEqual(cfg.pruneGrace, 7 * 86400)
        XCTAssertEqual(cfg.touchAfter, 0)
        XCTAssertEqual(try DogestryConfig.parse("[prune]\ngrace = 1h30m\n", path: "dogestry.cfg").pruneGrace, 5400)
        XCTAssertEqual(try DogestryConfig.parse("[prune]\ngrace = 0s\n", path: "dogestry.cfg").pruneGrace, 0)
        XCTAssertNil(try DogestryConfig.parse("[prune]\n", path: "dogestry.cfg").pruneGrace)
        assertError("[prune]\ngrace = soon\n", #"dogestry.cfg:2: invalid duration "soon" for grace in [prune]: use a number followed by s, m, h or d (e.g. 30m, 1h, 12h, 7d)"#)
        assertError("[prune]\ntouch-after = 10\n", #"dogestry.cfg:2: invalid duration "10" for touch-after in [prune]: use a number followed by s, m, h or d (e.g. 30m, 1h, 12h, 7d)"#)
        assertError("[prune]\ngrace =\n", "dogestry.cfg:2: grace in [prune] must not be empty")
        assertError("[prune]\ndry-run = true\n", #"dogestry.cfg:2: unknown key "dry-run" in [prune]"#)
    }

    func testS3Errors() {
        assertError("[s3]\npart-size = 4MiB\n", "dogestry.cfg:2: part-size 4MiB in [s3] is out of range 5 MiB…5 GiB")
        assertError("[s3]\npart-size = 5242879\n", "dogestry.cfg:2: part-size 5242879 in [s3] is out of range 5 MiB…5 GiB")
        assertError("[s3]\npart-size = 6G\n", "dogestry.cfg:2: part-size 6G in [s3] is out of range 5 MiB…5 GiB")
        for bad in ["16MB", "abc", "-8M", "8.5M", "M", "99999999999999999999", "9999999999999G"] {
            assertError("[s3]\npart-size = \(bad)\n",
                        "dogestry.cfg:2: part-size in [s3] must be a size like 16MiB (suffixes K, M, G, KiB, MiB, GiB), not \(DogestryConfig.quoted(bad))")
        }
        assertError("[s3]\nconcurrency = 100\n", "dogestry.cfg:2: concurrency 100 in [s3] is out of range 1…64")
        assertError("[s3]\nendpoint = minio:9000\n", #"dogestry.cfg:2: endpoint in [s3] must be an http:// or https:// URL, not "minio:9000""#)
        assertError("[s3]\nendpoint = https://\n", #"dogestry.cfg:2: endpoint in [s3] must be an http:// or https:// URL, not "https://""#)
        assertError("[s3]\nregion = eu west\n", #"dogestry.cfg:2: region in [s3] must be a region name like eu-west-1, not "eu west""#)
        assertError("[s3]\nprofile\n", "dogestry.cfg:2: profile in [s3] needs a value")
        assertError("[s3]\naccess-key-id = \"\"\n", "dogestry.cfg:2: access-key-id in [s3] must not be empty")
    }

    func testMantaErrors() throws {
        for a in DogestryConfig.mantaAlgorithms {
            XCTAssertEqual(try parse("[manta]\nalgo = \(a)\n").manta["algo"], a)
        }
        assertError("[manta]\nalgo = rsa-md5\n",
                    #"dogestry.cfg:2: algo in [manta] must be one of rsa-sha1, rsa-sha256, rsa-sha512, ecdsa-sha1, ecdsa-sha256, ecdsa-sha512, dsa-sha1, dsa-sha256, not "rsa-md5""#)
        assertError("[manta]\ndurability = 0\n", "dogestry.cfg:2: durability 0 in [manta] is out of range 1…6")
        assertError("[manta]\ndurability = 7\n", "dogestry.cfg:2: durability 7 in [manta] is out of range 1…6")
        assertError("[manta]\ndurability = two\n", #"dogestry.cfg:2: durability in [manta] must be an integer, not "two""#)
        assertError("[manta]\nurl = manta.example\n", #"dogestry.cfg:2: url in [manta] must be an http:// or https:// URL, not "manta.example""#)
        assertError("[manta]\naccount = a/b\n", #"dogestry.cfg:2: account in [manta] must not contain spaces or "/", not "a/b""#)
        assertError("[manta]\nkey_id = \"aa bb\"\n", #"dogestry.cfg:2: key_id in [manta] must not contain spaces or "/", not "aa bb""#)
        assertError("[manta]\nrole =\n", "dogestry.cfg:2: role in [manta] must not be empty")
    }

    func testSyntaxErrors() {
        assertError("[docker]\nconnection = \"unix:///x\n", "dogestry.cfg:2: syntax error: unterminated quoted string (missing closing quote)")
        assertError("[docker]\nconnection = \"unix:///x", "dogestry.cfg:2: syntax error: unterminated quoted string (missing closing quote)")
        assertError("\n[docker\nconnection = x\n", #"dogestry.cfg:2: syntax error: unterminated section header (missing "]")"#)
        assertError("[docker", #"dogestry.cfg:1: syntax error: unterminated section header (missing "]")"#)
        assertError("[]\n", "dogestry.cfg:1: syntax error: empty section name")
        assertError("[dock_er]\n", #"dogestry.cfg:1: syntax error: invalid character in section name (use letters, digits, "-" and ".")"#)
        assertError("[ docker]\n", #"dogestry.cfg:1: syntax error: invalid character in section name (use letters, digits, "-" and ".")"#)
        assertError("[remote \"x]\n", "dogestry.cfg:1: syntax error: unterminated subsection name (missing closing quote)")
        assertError("[remote x]\n", #"dogestry.cfg:1: syntax error: expected a quoted subsection name after the section name, as in [remote "name"]"#)
        assertError("[remote \"x\" ]\n", #"dogestry.cfg:1: syntax error: expected "]" after the subsection name"#)
        assertError("connection = x\n", "dogestry.cfg:1: syntax error: key outside any section (add a [section] header first)")
        assertError("[docker]\n\nconnection: x\n",
                    #"dogestry.cfg:3: syntax error: invalid character in key name, or missing "=" after the key (keys are letters, digits, "-" and "_")"#)
        assertError("[docker]\nconnection x\n",
                    #"dogestry.cfg:2: syntax error: invalid character in key name, or missing "=" after the key (keys are letters, digits, "-" and "_")"#)
        assertError("[docker]\n-connection = x\n", #"dogestry.cfg:2: syntax error: expected a [section] header, a "key = value" line or a comment"#)
        assertError("[docker]\n= x\n", #"dogestry.cfg:2: syntax error: expected a [section] header, a "key = value" line or a comment"#)
        assertError("[transfer]\ntempdir = \"a\\qb\"\n", #"dogestry.cfg:2: syntax error: invalid escape sequence \q (valid: \n \t \b \" \\)"#)
        assertError("[transfer]\ntempdir = a\\", "dogestry.cfg:2: syntax error: backslash at end of file")
        // The continuation is counted: the bad escape is on line 3.
        assertError("[transfer]\ntempdir = a\\\nb\\x\n", #"dogestry.cfg:3: syntax error: invalid escape sequence \x (valid: \n \t \b \" \\)"#)
        // An unterminated quote is reported where it opened.
        assertError("[transfer]\ntempdir = \"a\\\nb\\\nc\n", "dogestry.cfg:2: syntax error: unterminated quoted string (missing closing quote)")
    }

    func testTheFirstErrorInTheFileIsReported() {
        // A bad value on line 2 comes before a syntax error on line 3.
        assertError("[transfer]\nconcurrency = 0\n[docker\n", "dogestry.cfg:2: concurrency 0 in [transfer] is out of range 1…64")
        // A syntax error on line 2 comes before a bad value on line 3.
        assertError("[transfer]\n!\nconcurrency = 0\n", #"dogestry.cfg:2: syntax error: expected a [section] header, a "key = value" line or a comment"#)
    }

    func testErrorsNameTheGivenPath() {
        assertError("[x]", "conf/my.cfg:1: unknown section [x]", path: "conf/my.cfg")
        assertError("[x]", "/etc/dogestry.cfg:1: unknown section [x]", path: "/etc/dogestry.cfg")
    }

    // MARK: Secrets

    func testSecretsAreNeverShown() {
        let secret = "wJalrXUtnFEMIK7MDENGbPxRfiCYEXAMPLEKEY"
        let texts = [
            "[s3]\nsecret-key = \"\(secret)\n",                   // unterminated quote
            "[s3]\nsecret-key = \(secret)\\q\n",                   // bad escape
            "[s3]\nsecret-key = \"\(secret) \(secret)\"\n",      // space in the value
            "[s3]\nsession-token = \"\(secret)\\z\"\n",
            "[s3]\nsession-token = \"\(secret)\t\"\n",
            "[s3]\nsecret-key = \(secret)\\",                      // backslash at end of file
            "[s3]\nsecret-key: \(secret)\n",
            "[s3]\nsecret-key \(secret)\n",
            "[s3]\nsecret-key = \(secret)\n\(secret)\n",          // a stray secret on its own line
            "[s3]\nsecret-key = \(secret)\n\(secret)/abc+def\n",
            "[s3]\nsecret-key = \(secret)\n+\(secret)\n",
            "[docker]\nsecret-key = \(secret)\n",                   // in the wrong section
            "[\(secret)]\n",
            "[remote \"\(secret)x/\"]\n",
            "[s3]\nsecret-key = \(secret)\n[compression]\nlevel = 99\n",
            "[s3]\nsecret-key = \(secret)\n[s3 \"\(secret)\"]\n",
        ]
        for text in texts {
            guard let message = errorMessage(text) else { XCTFail("no error for \(text)"); continue }
            // Not the secret, nor a sizeable part of it.
            for start in stride(from: 0, to: secret.count - 8, by: 1) {
                let part = String(secret.dropFirst(start).prefix(8))
                XCTAssertFalse(message.contains(part), "\(message) shows part of the secret")
            }
        }
        // The secret's key may be named; its value is not.
        XCTAssertEqual(errorMessage("[s3]\nsecret-key = \"abc\\q\"\n"),
                       #"dogestry.cfg:2: syntax error: invalid escape sequence (valid: \n \t \b \" \\)"#)
        XCTAssertEqual(errorMessage("[s3]\nsecret-key = \"a b\"\n"), "dogestry.cfg:2: secret-key in [s3] must not contain spaces")
        XCTAssertEqual(errorMessage("[s3]\n\(secret)\n"), "dogestry.cfg:2: unknown key (a 38-character name, not shown) in [s3]")
    }

    // MARK: Loading

    func testLoadPrecedence() throws {
        let root = try makeTempDir()
        let cwd = root + "/work"
        let home = root + "/home"
        let xdg = root + "/xdg"
        try FileManager.default.createDirectory(atPath: cwd, withIntermediateDirectories: true)
        try write("[remote \"from\"]\nurl = home\n", to: home + "/.config/dogestry/dogestry.cfg")
        try write("[remote \"from\"]\nurl = xdg\n", to: xdg + "/dogestry/dogestry.cfg")
        try write("[remote \"from\"]\nurl = cwd\n", to: cwd + "/dogestry.cfg")
        try write("[remote \"from\"]\nurl = explicit\n", to: cwd + "/conf/explicit.cfg")
        try write("[remote \"from\"]\nurl = absolute\n", to: root + "/abs.cfg")
        let env = ["HOME": home, "XDG_CONFIG_HOME": xdg]

        // --config wins, relative to the current directory, shown as given.
        var cfg = try DogestryConfig.load(explicit: "conf/explicit.cfg", environment: env, currentDirectory: cwd)
        XCTAssertEqual(cfg.remotes["from"], "explicit")
        XCTAssertEqual(cfg.path, "conf/explicit.cfg")
        cfg = try DogestryConfig.load(explicit: root + "/abs.cfg", environment: env, currentDirectory: cwd)
        XCTAssertEqual(cfg.remotes["from"], "absolute")
        XCTAssertEqual(cfg.path, root + "/abs.cfg")
        cfg = try DogestryConfig.load(explicit: "~/.config/dogestry/dogestry.cfg", environment: env, currentDirectory: cwd)
        XCTAssertEqual(cfg.remotes["from"], "home")
        XCTAssertEqual(cfg.path, "~/.config/dogestry/dogestry.cfg")

        // Then ./dogestry.cfg.
        cfg = try DogestryConfig.load(explicit: nil, environment: env, currentDirectory: cwd)
        XCTAssertEqual(cfg.remotes["from"], "cwd")
        XCTAssertEqual(cfg.path, "dogestry.cfg")

        // Then $XDG_CONFIG_HOME/dogestry/dogestry.cfg.
        try FileManager.default.removeItem(atPath: cwd + "/dogestry.cfg")
        cfg = try DogestryConfig.load(explicit: nil, environment: env, currentDirectory: cwd)
        XCTAssertEqual(cfg.remotes["from"], "xdg")
        XCTAssertEqual(cfg.path, xdg + "/dogestry/dogestry.cfg")

        // XDG_CONFIG_HOME defaults to ~/.config; a relative one is ignored.
        cfg = try DogestryConfig.load(explicit: nil, environment: ["HOME": home], currentDirectory: cwd)
        XCTAssertEqual(cfg.remotes["from"], "home")
        XCTAssertEqual(cfg.path, home + "/.config/dogestry/dogestry.cfg")
        cfg = try DogestryConfig.load(explicit: nil, environment: ["HOME": home, "XDG_CONFIG_HOME": "rel"], currentDirectory: cwd)
        XCTAssertEqual(cfg.remotes["from"], "home")
        cfg = try DogestryConfig.load(explicit: nil, environment: ["HOME": home, "XDG_CONFIG_HOME": ""], currentDirectory: cwd)
        XCTAssertEqual(cfg.remotes["from"], "home")

        // An XDG_CONFIG_HOME without the file does not fall back to ~/.config.
        cfg = try DogestryConfig.load(explicit: nil, environment: ["HOME": home, "XDG_CONFIG_HOME": root + "/none"], currentDirectory: cwd)
        XCTAssertEqual(cfg, .empty)
    }

    func testLoadDefaultsWhenNothingIsFound() throws {
        let root = try makeTempDir()
        XCTAssertEqual(try DogestryConfig.load(explicit: nil, environment: ["HOME": root, "XDG_CONFIG_HOME": root + "/x"], currentDirectory: root), .empty)
        XCTAssertEqual(try DogestryConfig.load(explicit: nil, environment: ["HOME": root], currentDirectory: root), .empty)
        XCTAssertEqual(try DogestryConfig.load(explicit: nil, environment: [:], currentDirectory: root), .empty)
        // Not even the process's real environment is consulted.
        let cfg = try DogestryConfig.load(explicit: nil, environment: [:], currentDirectory: root + "/missing")
        XCTAssertNil(cfg.path)
        XCTAssertTrue(cfg.remotes.isEmpty)
    }

    private func assertLoadError(explicit: String?, env: [String: String] = [:], cwd: String, _ message: String,
                                 file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertThrowsError(try DogestryConfig.load(explicit: explicit, environment: env, currentDirectory: cwd), file: file, line: line) { error in
            guard let e = error as? DogestryError else { return XCTFail("not a DogestryError: \(error)", file: file, line: line) }
            XCTAssertEqual(e.kind, .config, file: file, line: line)
            XCTAssertEqual(e.message, message, file: file, line: line)
        }
    }

    func testLoadErrors() throws {
        let root = try makeTempDir()
        // A missing --config file is an error naming it, even when others exist.
        try write("[docker]\n", to: root + "/dogestry.cfg")
        assertLoadError(explicit: "nope.cfg", cwd: root, "nope.cfg: config file not found")
        assertLoadError(explicit: root + "/nope.cfg", cwd: root, "\(root)/nope.cfg: config file not found")
        assertLoadError(explicit: "", cwd: root, "the config file name is empty")
        // A directory.
        try FileManager.default.createDirectory(atPath: root + "/dir", withIntermediateDirectories: true)
        assertLoadError(explicit: "dir", cwd: root, "dir: is a directory, not a config file")
        try FileManager.default.createDirectory(atPath: root + "/d2/dogestry.cfg", withIntermediateDirectories: true)
        assertLoadError(explicit: nil, cwd: root + "/d2", "dogestry.cfg: is a directory, not a config file")
        // A dangling symlink.
        try FileManager.default.createSymbolicLink(atPath: root + "/link.cfg", withDestinationPath: root + "/absent")
        assertLoadError(explicit: "link.cfg", cwd: root, "link.cfg: cannot read config file: No such file or directory")
        // Not UTF-8.
        try Data([0x5B, 0xFF, 0xFE, 0x5D]).write(to: URL(fileURLWithPath: root + "/bin.cfg"))
        assertLoadError(explicit: "bin.cfg", cwd: root, "bin.cfg: config file is not valid UTF-8")
        // Errors inside a file name it as it was found.
        try write("[docker]\nconnection = x\n", to: root + "/e/dogestry.cfg")
        assertLoadError(explicit: nil, cwd: root + "/e",
                        #"dogestry.cfg:2: connection in [docker] must be unix://…, tcp://…, http://… or https://…, not "x""#)
        assertLoadError(explicit: "e/dogestry.cfg", cwd: root,
                        #"e/dogestry.cfg:2: connection in [docker] must be unix://…, tcp://…, http://… or https://…, not "x""#)
        try write("[bad]\n", to: root + "/h/.config/dogestry/dogestry.cfg")
        assertLoadError(explicit: nil, env: ["HOME": root + "/h"], cwd: root + "/dir",
                        "\(root)/h/.config/dogestry/dogestry.cfg:1: unknown section [bad]")
    }

    func testLoadUnreadableFile() throws {
        // A file whose reading fails (this works as root too): /proc/self/mem cannot be read at offset 0.
        if FileManager.default.fileExists(atPath: "/proc/self/mem") {
            XCTAssertThrowsError(try DogestryConfig.load(explicit: "/proc/self/mem", environment: [:], currentDirectory: "/")) { error in
                let e = error as? DogestryError
                XCTAssertEqual(e?.kind, .config)
                XCTAssertTrue(e?.message.hasPrefix("/proc/self/mem: cannot read config file: ") ?? false, "\(error)")
            }
        }
        // A file of mode 0. Root reads files whatever their mode, so as root the loads run on a
        // thread whose file-system user is `nobody` (Linux setfsuid is per thread and drops the
        // file capabilities with it): the same case an unprivileged user meets.
        let root = try makeTempDir()
        try write("[docker]\n", to: root + "/dogestry.cfg")
        XCTAssertEqual(chmod(root + "/dogestry.cfg", 0), 0)
        try Self.asUnprivilegedFileUser {
            self.assertLoadError(explicit: nil, cwd: root, "dogestry.cfg: cannot read config file: Permission denied")
            self.assertLoadError(explicit: "dogestry.cfg", cwd: root, "dogestry.cfg: cannot read config file: Permission denied")
        }
    }

    /// Runs `body` on a new thread whose file-system user is 65534 (nobody) when this process is
    /// root; as another user, on this thread as it is.
    static func asUnprivilegedFileUser(_ body: @escaping () -> Void) throws {
        guard getuid() == 0 else { return body() }
        guard let h = dlopen(nil, RTLD_NOW), let f = dlsym(h, "setfsuid") else { throw XCTSkip("no setfsuid") }
        let setfsuid = unsafeBitCast(f, to: (@convention(c) (UInt32) -> Int32).self)
        let done = DispatchSemaphore(value: 0)
        let work = Unchecked(body)   // (run while this thread waits: never at the same time)
        let t = Thread {
            defer { done.signal() }
            _ = setfsuid(65534)
            guard setfsuid(UInt32.max) == 65534 else { return XCTFail("setfsuid(65534) did not take") }   // (-1 reads it back)
            work.value()
        }
        t.start()
        done.wait()
    }

    func testLoadRefusesHugeFiles() throws {
        let root = try makeTempDir()
        try write(String(repeating: "# padding padding padding padding padding padding padding padding\n", count: 20_000), to: root + "/big.cfg")
        assertLoadError(explicit: "big.cfg", cwd: root, "big.cfg: config file is larger than 1 MiB")
    }

    // MARK: The example file

    private var examplePath: String {
        // Tests/DogestryRemotesTests/ConfigTests.swift -> the package root.
        URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("dogestry.cfg.example").path
    }

    func testTransferTimeoutsReachTheRemotesClients() throws {
        let cfg = try DogestryConfig.parse("[transfer]\n    stall-timeout = 7s\n    connect-timeout = 3\n    first-byte-timeout = 2m\n",
                                           path: "t.cfg")
        XCTAssertEqual(cfg.httpTimeouts, HTTPTimeouts(connect: 3, firstByte: 120, stall: 7))
        let env = ["AWS_ACCESS_KEY_ID": "AK", "AWS_SECRET_ACCESS_KEY": "SK", "HOME": "/nonexistent"]
        let s3 = try XCTUnwrap(try RemoteResolver.open("s3://bucket/p?endpoint=http://127.0.0.1:9", config: cfg, environment: env) as? S3Remote)
        XCTAssertEqual(s3.options.timeouts, cfg.httpTimeouts, "the S3 remote's requests use the [transfer] timeouts")
        XCTAssertThrowsError(try DogestryConfig.parse("[transfer]\n    stall-timeout = soon\n", path: "t.cfg")) { e in
            XCTAssertTrue("\(e)".hasPrefix("t.cfg:2: "), "\(e)")
            XCTAssertTrue("\(e)".contains("stall-timeout in [transfer]"), "\(e)")
        }
        XCTAssertThrowsError(try DogestryConfig.parse("[transfer]\n    connect-timeout = 2d\n", path: "t.cfg"))
    }

    func testServeSection() throws {
        let cfg = try DogestryConfig.parse("[serve]\n    listen = 0.0.0.0:5001\n    tag-ttl = 1m\n    layers = Stored\n    redirect\n    access-log = no\n", path: "t.cfg")
        XCTAssertEqual(cfg.serve.listen, "0.0.0.0:5001")
        XCTAssertEqual(cfg.serve.tagTTL, 60)
        XCTAssertEqual(cfg.serve.layers, "stored")
        XCTAssertEqual(cfg.serve.redirect, true)
        XCTAssertEqual(cfg.serve.accessLog, false)
        for (text, message) in [("[serve]\n    layers = zstd\n", "t.cfg:2: layers in [serve] must be compatible, plain or stored"),
                                ("[serve]\n    tag-ttl = soon\n", "t.cfg:2: "), ("[serve]\n    port = 1\n", "t.cfg:2: unknown key \"port\" in [serve]")] {
            XCTAssertThrowsError(try DogestryConfig.parse(text, path: "t.cfg")) { e in
                XCTAssertTrue((e as? DogestryError)?.message.hasPrefix(message) ?? false, "\(e)")
            }
        }
    }

    func testExampleFileParses() throws {
        let cfg = try DogestryConfig.load(explicit: examplePath, environment: [:], currentDirectory: "/")
        XCTAssertEqual(cfg.compression, .zstd)
        XCTAssertEqual(cfg.compressionLevel, Compression.zstd.defaultLevel)
    }

    func testExampleFileDocumentsEveryKey() throws {
        let text = try String(contentsOfFile: examplePath, encoding: .utf8)
        // Lines starting with ";" are disabled settings: enabled, the file must still be valid and set every key.
        let enabled = text.split(separator: "\n", omittingEmptySubsequences: false).map { line -> String in
            let trimmed = line.drop(while: { $0 == " " || $0 == "\t" })
            return trimmed.hasPrefix(";") ? String(trimmed.dropFirst()) : String(line)
        }.joined(separator: "\n")
        let cfg = try DogestryConfig.parse(enabled, path: "dogestry.cfg.example")

        var sections = Set<String>()
        for (section, keys) in DogestryConfig.schema {
            sections.insert(section)
            for key in keys {
                let set: Bool
                switch (section, key) {
                case ("remote", "url"): set = !cfg.remotes.isEmpty
                case ("docker", "connection"): set = cfg.dockerConnection != nil
                case ("docker", "read-image-store"): set = cfg.dockerReadImageStore == true
                case ("compression", "algorithm"): set = cfg.compression != nil
                case ("compression", "level"): set = cfg.compressionLevel != nil
                case ("transfer", "concurrency"): set = cfg.concurrency != nil
                case ("transfer", "tempdir"): set = cfg.tempDir != nil
                case ("transfer", "connect-timeout"): set = cfg.connectTimeout == 10
                case ("transfer", "first-byte-timeout"): set = cfg.firstByteTimeout == 60
                case ("transfer", "stall-timeout"): set = cfg.stallTimeout == 30
                case ("s3", _): set = cfg.s3[key] != nil
                case ("manta", _): set = cfg.manta[key] != nil
                case ("prune", "grace"): set = cfg.pruneGrace != nil
                case ("prune", "touch-after"): set = cfg.touchAfter != nil
                case ("serve", "remote"): set = cfg.serve.remote == "central"
                case ("serve", "listen"): set = cfg.serve.listen == "127.0.0.1:5000"
                case ("serve", "tls-cert"): set = cfg.serve.tlsCert != nil
                case ("serve", "tls-key"): set = cfg.serve.tlsKey != nil
                case ("serve", "tls-client-ca"): set = cfg.serve.tlsClientCA != nil
                case ("serve", "tag-ttl"): set = cfg.serve.tagTTL == 5
                case ("serve", "layers"): set = cfg.serve.layers == "compatible"
                case ("serve", "redirect"): set = cfg.serve.redirect == false
                case ("serve", "access-log"): set = cfg.serve.accessLog == true
                case ("registry", "insecure"): set = cfg.registries["registry.example.com:5000"]?.insecure == false
                case ("registry", "ca"): set = cfg.registries["registry.example.com:5000"]?.ca == "/etc/dogestry/registry-ca.crt"
                case ("registry", "chunk-size"): set = cfg.registries["registry.example.com:5000"]?.chunkSize == 0
                default: set = false; XCTFail("the test does not know [\(section)] \(key)")
                }
                XCTAssertTrue(set, "[\(section)] \(key) is not set by the example")
                // And each key is documented by a comment line that starts with its name.
                XCTAssertTrue(text.contains("\n# \(key): "), "[\(section)] \(key) has no comment line")
            }
        }
        XCTAssertEqual(sections, ["remote", "docker", "compression", "transfer", "s3", "manta", "prune", "serve", "registry"])
        XCTAssertEqual(cfg.pruneGrace, 86400)
        XCTAssertEqual(cfg.touchAfter, 600)
        XCTAssertEqual(cfg.httpTimeouts, HTTPTimeouts.remoteDefault, "the example shows the defaults")
        XCTAssertNotNil(cfg.s3PartSize)

        // Every remote URL form is shown.
        let urls = Set(cfg.remotes.values)
        XCTAssertTrue(urls.contains { $0.hasPrefix("/") }, "a path")
        XCTAssertTrue(urls.contains { $0.hasPrefix("file:///") }, "file:///path")
        XCTAssertTrue(urls.contains { $0.hasPrefix("s3://") && $0.contains("?region=") && $0.contains("&endpoint=") }, "s3://…?region=&endpoint=")
        XCTAssertTrue(urls.contains { $0.hasPrefix("manta://") && $0.contains("/stor/") }, "manta://HOST/ACCOUNT/stor/path")

        // Environment variables are documented.
        for variable in ["DOCKER_HOST", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_REGION",
                         "AWS_ENDPOINT_URL_S3", "AWS_PROFILE", "MANTA_URL", "MANTA_USER", "MANTA_SUBUSER", "MANTA_KEY_ID",
                         "MANTA_ROLE", "MANTA_TLS_INSECURE"] {
            XCTAssertTrue(text.contains(variable), "\(variable) is not documented")
        }
    }
}
