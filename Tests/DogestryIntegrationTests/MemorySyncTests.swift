import DogestryCore
import DogestryRemotes
import DogestrySync
import Foundation
import XCTest

/// The sync logic on the in-memory remote: every fixture archive pushed and pulled back with
/// its image IDs and diffIDs intact, a second push moving nothing. No disk, no network: seconds.
final class MemorySyncTests: XCTestCase {
    func testEveryFixtureRoundTripsThroughTheMemoryRemote() throws {
        let fx = try CLITest.Fixtures.load()
        let out = try CLITest.makeTempDir(self, "mem-pull")
        for archive in CLITest.Fixtures.good {
            let remote = MemoryRemote(name: archive)
            let first = try CLITest.libraryPush(fx.path(archive), to: remote)
            XCTAssertGreaterThan(first.layersUploaded, 0, archive)
            let again = try CLITest.libraryPush(fx.path(archive), to: remote)
            XCTAssertEqual(again.layersUploaded, 0, "\(archive): a second push uploaded layers")
            XCTAssertEqual(again.bytesUploaded, 0, archive)
            let refs = try XCTUnwrap(fx.archives[archive], archive)
            let stored = refs.map { CLITest.Fixtures.remoteRef($0, in: archive) }
            let path = out + "/\(archive)"
            try CLITest.libraryPull(stored, from: remote, to: path)
            let images = try CLITest.readArchive(path)
            for ref in refs {
                let want = try XCTUnwrap(fx.images[ref], ref)
                let got = try XCTUnwrap(images.first { $0.id == want.id }, "\(archive): \(ref) was not pulled back")
                XCTAssertEqual(got.config.diffIDs, want.diffIDs, "\(archive): \(ref)")
            }
        }
    }
}
