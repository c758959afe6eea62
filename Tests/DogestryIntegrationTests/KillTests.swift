import DogestryCore
@testable import DogestryRemotes
import DogestrySync
import Foundation
import XCTest

/// `kill -9` and SIGTERM of `dogestry push` and `dogestry pull --archive` at random moments, on a
/// local and an S3 remote: nothing may be left in TMPDIR, in the remote's staging directory or
/// beside the output file, and the remote must stay consistent (`verify`), however the run ends.
///
/// Each test prints `kill: <what> held H/T (M mid-run)`: T runs killed, H of them left nothing
/// behind, M of them were still running when the signal came (a kill that came after the run
/// ended proves nothing, so the kill points are spread over a measured run's length).
final class KillTests: XCTestCase {
    /// A ~128 MB two-layer archive, made once per run from real files.
    nonisolated(unsafe) static var archive: String?
    static let lock = NSLock()

    func bigArchive() throws -> String {
        Self.lock.lock(); defer { Self.lock.unlock() }
        if let a = Self.archive, FS.exists(a) { return a }
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("dogestry-kill-\(getpid())").path
        try FS.makeDirectories(dir)
        let out = dir + "/big.tar"
        let script = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
            .appendingPathComponent("../../scripts/lib/make_bench_archive.py").standardized.path
        let r = try CLITest.runProcess("/usr/bin/env", ["python3", script, "--layers", "64,64", "--tag", "kill/big:v1", out])
        XCTAssertEqual(r.status, 0, r.stderr)
        Self.archive = out
        return out
    }

    struct Target {
        var arg: String
        var env: [String: String]
        var stagingDir: String?
    }

    /// Makes a fresh, empty remote each time it is called.
    func targets(s3: Bool, cwd: String) throws -> () throws -> Target {
        var env = ["XDG_CONFIG_HOME": cwd + "/.xdg-none", "HOME": cwd]
        if !s3 {
            return { [self] in
                let dir = try CLITest.makeTempDir(self, "kill-remote")
                return Target(arg: dir, env: env, stagingDir: dir + "/" + LocalRemote.stagingDirName)
            }
        }
        let s3 = try TestBucket(label: "kill")
        let (bucket, ep) = (s3.bucket, s3.endpoint)
        env.merge(s3.credentials) { $1 }
        // Small parts, so a 64 MB layer goes up as a multipart upload and comes down in ranges.
        try "[s3]\n    part-size = 5MiB\n".write(toFile: cwd + "/dogestry.cfg", atomically: true, encoding: .utf8)
        let e = env
        return { Target(arg: "s3://\(bucket)/kill-\(UUID().uuidString.lowercased())?endpoint=\(ep)", env: e, stagingDir: nil) }
    }

    /// Starts dogestry with `args`; returns the process.
    func start(_ args: [String], cwd: String, env: [String: String]) throws -> Process {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: try CLITest.dogestryBinary())
        p.arguments = args
        var e = ProcessInfo.processInfo.environment
        for (k, v) in env { e[k] = v }
        p.environment = e
        p.currentDirectoryURL = URL(fileURLWithPath: cwd)
        p.standardInput = FileHandle.nullDevice
        p.standardOutput = FileHandle.nullDevice
        p.standardError = FileHandle.nullDevice
        try p.run()
        return p
    }

    /// Runs `args` to the end; returns its wall time (only to spread the kill points).
    func measure(_ args: [String], cwd: String, env: [String: String]) throws -> Double {
        let t0 = Date()
        let p = try start(args, cwd: cwd, env: env)
        p.waitUntilExit()
        XCTAssertEqual(p.terminationStatus, 0, "dogestry \(args.joined(separator: " ")) failed")
        return Date().timeIntervalSince(t0)
    }

    func entries(_ dir: String) -> [String] {
        ((try? FileManager.default.contentsOfDirectory(atPath: dir)) ?? []).sorted()
    }

    /// Kills runs of `args(target)` with `signal` at random points of a run's length, each on the
    /// target `next()` gives, until `runs` kills landed mid-run (at most `2 * runs` attempts); after
    /// each run, `leftovers(target)` must be empty. The length is the fastest of two whole runs, as
    /// a first run on a cold cache can take twice as long as the ones that follow.
    func killRuns(_ what: String, runs: Int, signal: Int32, cwd: String, env: [String: String],
                  next: () throws -> Target, args: (Target) -> [String], leftovers: (Target) -> [String]) throws {
        let length = try (0..<2).map { _ in try measure(args(try next()), cwd: cwd, env: env) }.min()!
        var held = 0, midRun = 0, attempts = 0
        while midRun < runs && attempts < 2 * runs {
            attempts += 1
            let t = try next()
            let p = try start(args(t), cwd: cwd, env: env)
            usleep(UInt32(Double.random(in: 0.02...max(0.05, length * 0.7)) * 1_000_000))
            if p.isRunning { midRun += 1 }
            kill(p.processIdentifier, signal)
            p.waitUntilExit()
            let left = leftovers(t)
            if left.isEmpty { held += 1 } else { XCTFail("\(what): run \(attempts) left \(left)") }
        }
        print("kill: \(what) (signal \(signal)) held \(held)/\(attempts) (\(midRun) mid-run; a whole run takes \(String(format: "%.2f", length)) s)")
        XCTAssertGreaterThanOrEqual(midRun, runs / 2, "most kills must land while the run is going")
    }

    func check(s3: Bool) throws {
        let archive = try bigArchive()
        let cwd = try CLITest.makeTempDir(self, "kill-cwd")
        let tmp = try CLITest.makeTempDir(self, "kill-tmp")
        let out = try CLITest.makeTempDir(self, "kill-out")
        let fresh = try targets(s3: s3, cwd: cwd)
        let t = try fresh()
        var env = t.env
        env["TMPDIR"] = tmp
        let kind = s3 ? "s3" : "local"
        func staging(_ t: Target) -> [String] { t.stagingDir.map { entries($0).map { "staging/" + $0 } } ?? [] }

        for (signal, n) in [(SIGKILL, 10), (SIGTERM, 4)] {
            // Each push goes to an empty remote, so it has everything to upload.
            try killRuns("push \(kind)", runs: n, signal: signal, cwd: cwd, env: env, next: fresh,
                         args: { ["push", $0.arg, "--archive", archive, "--quiet"] }) { t in
                entries(tmp).map { "TMPDIR/" + $0 } + staging(t)
            }
        }
        // Interrupted pulls of one remote holding the image.
        _ = try measure(["push", t.arg, "--archive", archive, "--quiet"], cwd: cwd, env: env)
        for (signal, n) in [(SIGKILL, 10), (SIGTERM, 4)] {
            try killRuns("pull \(kind) --archive", runs: n, signal: signal, cwd: cwd, env: env, next: { t },
                         args: { ["pull", $0.arg, "kill/big:v1", "--archive", out + "/img.tar", "--quiet"] }) { _ in
                entries(tmp).map { "TMPDIR/" + $0 } + entries(out).filter { $0 != "img.tar" }.map { "out/" + $0 }
            }
        }
        // Whatever was interrupted, the remote is consistent and the image pulls whole.
        let v = try CLITest.runProcess(try CLITest.dogestryBinary(), ["verify", t.arg, "--deep"], environment: env, cwd: cwd)
        XCTAssertEqual(v.status, 0, v.stderr)
        let pulled = try CLITest.runProcess(try CLITest.dogestryBinary(), ["pull", t.arg, "kill/big:v1", "--archive", out + "/whole.tar"],
                                            environment: env, cwd: cwd)
        XCTAssertEqual(pulled.status, 0, pulled.stderr)
        XCTAssertEqual(entries(tmp), [])
    }

    func testKilledRunsLeaveNothingLocal() throws { try check(s3: false) }
    func testKilledRunsLeaveNothingS3() throws { try check(s3: true) }

    func testSweepRemovesLeftoversOfDeadRunsOnly() throws {
        let dir = try CLITest.makeTempDir(self, "kill-sweep")
        // A dead process (this one's child, reaped) and a live one (this process).
        let child = Process()
        child.executableURL = URL(fileURLWithPath: "/bin/true")
        try child.run(); child.waitUntilExit()
        let dead = dir + "/.img.tar.partial-\(child.processIdentifier)-abc"
        let live = dir + "/.img.tar.partial-\(getppid())-def"
        let other = dir + "/img.tar"
        for p in [dead, live, other] { XCTAssertTrue(FileManager.default.createFile(atPath: p, contents: Data([1]))) }
        AnonymousFile.sweep(dir, prefix: "img.tar.partial")
        XCTAssertFalse(FS.exists(dead), "a dead run's leftover stays")
        XCTAssertTrue(FS.exists(live), "a live run's file was removed")
        XCTAssertTrue(FS.exists(other))
    }
}

/// `[transfer] tempdir` and a `[remote "NAME"]` alias, proven by what they do to a real run.
final class TransferSettingsTests: XCTestCase {
    func s3Arg() throws -> (arg: String, env: [String: String]) {
        let s3 = try TestBucket(label: "cfg")
        return ("s3://\(s3.bucket)/cfg?endpoint=\(s3.endpoint)", s3.credentials)
    }

    func run(_ args: [String], cwd: String, env: [String: String]) throws -> CLITest.ProcessResult {
        var e = env
        e["XDG_CONFIG_HOME"] = cwd + "/.xdg-none"; e["HOME"] = cwd
        return try CLITest.runProcess(try CLITest.dogestryBinary(), args, environment: e, cwd: cwd)
    }

    func testTempdirIsWhereS3PushesStage() throws {
        let fixtures = try CLITest.Fixtures.load()
        let (arg, env0) = try s3Arg()
        let cwd = try CLITest.makeTempDir(self, "cfg-cwd")
        var env = env0
        // TMPDIR is unusable: only a working [transfer] tempdir lets the push stage its layers.
        let blocker = cwd + "/not-a-dir"
        try Data([1]).write(to: URL(fileURLWithPath: blocker))
        env["TMPDIR"] = blocker + "/tmp"
        let archive = fixtures.path("docker-app-v1.tar")
        let failed = try run(["push", arg, "--archive", archive], cwd: cwd, env: env)
        XCTAssertNotEqual(failed.status, 0)
        XCTAssertTrue(failed.stderr.contains("temporary directory ([transfer] tempdir or TMPDIR) unusable"), failed.stderr)
        XCTAssertTrue(failed.stderr.contains(blocker), failed.stderr)
        XCTAssertEqual(failed.stderrLines.count, 1, failed.stderr)

        let tempdir = cwd + "/spool"
        try "[transfer]\n    tempdir = \(tempdir)\n".write(toFile: cwd + "/dogestry.cfg", atomically: true, encoding: .utf8)
        let ok = try run(["push", arg, "--archive", archive], cwd: cwd, env: env)
        XCTAssertEqual(ok.status, 0, ok.stderr)
        XCTAssertTrue(FS.isDirectory(tempdir), "the push did not use [transfer] tempdir")
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: tempdir), [], "staged files are unnamed")
    }

    func testAliasIsUsedForARealPushAndPull() throws {
        let fixtures = try CLITest.Fixtures.load()
        let (arg, env) = try s3Arg()
        let cwd = try CLITest.makeTempDir(self, "alias-cwd")
        try "[remote \"central\"]\n    url = \(arg)\n".write(toFile: cwd + "/dogestry.cfg", atomically: true, encoding: .utf8)
        let push = try run(["push", "central", "--archive", fixtures.path("docker-app-v1.tar"), "--json"], cwd: cwd, env: env)
        XCTAssertEqual(push.status, 0, push.stderr)
        XCTAssertTrue(push.stdoutText.contains("s3://"), "the alias resolved to the S3 remote: \(push.stdoutText)")
        let ref = try XCTUnwrap(fixtures.archives["docker-app-v1.tar"]?.first)
        let out = cwd + "/out.tar"
        let pull = try run(["pull", "central", ref, "--archive", out], cwd: cwd, env: env)
        XCTAssertEqual(pull.status, 0, pull.stderr)
        XCTAssertTrue(FS.exists(out))
        // And the image is really on the S3 remote behind the alias.
        let list = try run(["list", arg], cwd: cwd, env: env)
        XCTAssertTrue(list.stdoutText.contains(ref.split(separator: ":").first.map(String.init) ?? ref), list.stdoutText)
    }
}

/// A fresh bucket on the test S3 server (SeaweedFS from scripts/test) and the environment that
/// gives the CLI its credentials.
struct TestBucket {
    let bucket: String
    let endpoint: String
    let accessKey: String
    let secretKey: String
    var credentials: [String: String] { ["AWS_ACCESS_KEY_ID": accessKey, "AWS_SECRET_ACCESS_KEY": secretKey] }

    init(label: String) throws {
        endpoint = try CLITest.requiredEnvironment("DOGESTRY_TEST_S3_ENDPOINT")
        accessKey = try CLITest.requiredEnvironment("DOGESTRY_TEST_S3_ACCESS_KEY")
        secretKey = try CLITest.requiredEnvironment("DOGESTRY_TEST_S3_SECRET_KEY")
        bucket = "dogestry-\(label)-" + UUID().uuidString.lowercased().replacingOccurrences(of: "-", with: "").prefix(12)
        try S3Remote(bucket: bucket, prefix: "", region: "us-east-1", endpoint: endpoint,
                     credentials: AWSStaticCredentialProvider(AWSCredentials(accessKeyID: accessKey, secretAccessKey: secretKey),
                                                              sourceDescription: "test credentials")).createBucket()
    }
}
