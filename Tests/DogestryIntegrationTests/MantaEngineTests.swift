import DogestryCore
import DogestryEngine
import DogestryHTTP
@testable import DogestryRemotes
import DogestrySync
import Foundation
import XCTest

/// Push from and pull into the real engines through a Manta remote (the simulator scripts/test
/// starts), and credential-less pulls from a Manta signed URL.
final class MantaEngineTests: EngineRemoteTestCase {
    override var namePrefix: String { "manta" }

    func freshRemote() throws -> MantaRemote {
        let e = ProcessInfo.processInfo.environment
        guard let url = e["DOGESTRY_TEST_MANTA_URL"], let acct = e["DOGESTRY_TEST_MANTA_USER"], let key = e["DOGESTRY_TEST_MANTA_KEY"] else {
            let msg = "no Manta simulator: DOGESTRY_TEST_MANTA_* are not set (run scripts/test)"
            if e["DOGESTRY_REQUIRE_ENGINES"] == "1" { XCTFail(msg) }
            throw XCTSkip(msg)
        }
        let s = MantaSettings(url: url, account: acct, user: nil, keyID: nil, privateKeyPath: key, algorithm: nil,
                              root: "/\(acct)/stor/engine-" + UUID().uuidString.lowercased(), durability: 2,
                              insecure: false, role: nil, sshDir: "/nonexistent")
        return try MantaRemote(settings: s)
    }

    func testRoundTripThroughMantaIntoDockerAndPodman() throws {
        try roundTrip(try makeImage("docker-app-v1.tar", "roundtrip"), remote: try freshRemote())
    }

    func testPushOfV2AfterV1UploadsOnlyTheChangedLayer() throws {
        let docker = try S.docker()
        let remote = try freshRemote()
        let v1 = try makeImage("docker-app-v1.tar", "v1", uniqueTopLayer: true)
        try load(v1, into: docker)
        XCTAssertEqual(try enginePush([v1.tag], from: docker, to: remote).layersUploaded, v1.layers.count)
        let v2img = try Image(fixture: "docker-app-v1.tar", tag: v1.name + ":v2-" + S.uniqueSuffix(), label: S.uniqueSuffix(), uniqueTopLayer: true)
        try load(v2img, into: docker)
        let shared = zip(v1.diffIDs, v2img.diffIDs).prefix { $0 == $1 }.count
        let report = try enginePush([v2img.tag], from: docker, to: remote)
        XCTAssertEqual(report.layersUploaded, v2img.layers.count - shared)
        XCTAssertEqual(report.layersPresent, shared)
    }

    /// `dogestry sign` on Manta, then `dogestry pull URL` with no config and no credentials.
    func testSignedURLPullIntoDockerWithAnEmptyEnvironment() throws {
        let docker = try S.docker()
        let remote = try freshRemote()
        let image = try makeImage("docker-app-v1.tar", "ticket", uniqueTopLayer: true)
        try load(image, into: docker)
        _ = try enginePush([image.tag], from: docker, to: remote)
        let signer = TicketSigner(remote: remote)
        let signed = try signer.sign(image.tag, lifetime: 600)
        try docker.removeImage(image.id.hex, force: true)
        let dir = try S.makeTempDirectory("manta-ticket")
        let r = try S.runCLI(["pull", signed.url, "--host", docker.address.description, "-q"], in: dir,
                             environment: ["HOME": dir])
        XCTAssertEqual(r.status, 0, r.stderr)
        XCTAssertEqual(try docker.inspectImage(image.tag)?.id, image.id)
    }
}
