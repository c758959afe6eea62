import DogestryCore
import DogestryEngine
import DogestryRemotes
import DogestrySync
import Foundation
import XCTest

/// Shared steps of the engine tests (local, S3 and Manta remotes): images made from
/// fixtures, loaded into the real engines, pushed and pulled with the library API.
class EngineRemoteTestCase: XCTestCase {
    typealias S = EngineTestSupport
    typealias Image = EngineTestSupport.Image

    /// Distinguishes the images of each subclass (`dogestry-test/<prefix>-…`).
    var namePrefix: String { "remote" }

    // MARK: helpers

    func makeImage(_ fixture: String, _ what: String, uniqueTopLayer: Bool = false) throws -> Image {
        let sfx = S.uniqueSuffix()
        return try Image(fixture: fixture, tag: "dogestry-test/\(namePrefix)-\(what):\(sfx)", label: sfx, uniqueTopLayer: uniqueTopLayer)
    }

    func removeAtEnd(_ image: Image, from engines: [EngineClient]) {
        let id = image.id.hex
        addTeardownBlock { for e in engines { try? e.removeImage(id, force: true) } }
    }

    func load(_ image: Image, into engine: EngineClient) throws {
        removeAtEnd(image, from: [engine])
        try image.load(into: engine)
        XCTAssertNotNil(try engine.inspectImage(image.id.hex), "\(engine.address): \(image.tag) not there after the load")
    }

    /// Pushes from the engine: layers from its image store when it is readable here (as the CLI
    /// does by default), or through its export with `exportOnly`; `store` stands in for the store.
    func enginePush(_ specs: [String], from engine: EngineClient, to remote: Remote, exportOnly: Bool = false,
                    store: DockerLayerStore? = nil, progress: ProgressReporter = SilentProgress()) throws -> PushReport {
        let pusher = Pusher(repository: Repository(remote: remote), options: TransferOptions(), progress: progress)
        let p = EnginePusher(client: engine, pusher: pusher, progress: progress)
        if exportOnly { p.imageStore = nil } else if let store { p.imageStore = store }
        return try p.push(specs)
    }

    /// Resolves `specs` on the remote, runs `beforeLoad` (e.g. to reset counters), pulls into the engines.
    func enginePull(_ specs: [String], from remote: Remote, into engines: [EngineClient],
                    beforeLoad: (() -> Void)? = nil) throws -> (PullReport, [HostResult], [ResolvedImage]) {
        let puller = Puller(repository: Repository(remote: remote), progress: SilentProgress())
        let resolved = try puller.resolveAll(specs)
        beforeLoad?()
        let (report, results) = EnginePuller(puller: puller, progress: SilentProgress()).pull(resolved, into: engines)
        return (report, results, resolved)
    }

    /// Pushes `image` from Docker, removes it, pulls it into Docker and Podman at once, and checks
    /// both hold it with the same ID, layers and tags as before.
    func roundTrip(_ image: Image, remote: Remote, file: StaticString = #filePath, line: UInt = #line) throws {
        let docker = try S.docker()
        let podman = try S.podman()
        try load(image, into: docker)
        removeAtEnd(image, from: [podman])
        let before = try XCTUnwrap(try docker.inspectImage(image.id.hex))

        let push = try enginePush([image.tag], from: docker, to: remote)
        XCTAssertEqual(push.images.map { $0.id }, [image.id], file: file, line: line)
        XCTAssertEqual(push.layersUploaded, image.layers.count, file: file, line: line)

        try docker.removeImage(image.id.hex, force: true)
        XCTAssertNil(try docker.inspectImage(image.id.hex))
        XCTAssertNil(try podman.inspectImage(image.id.hex))

        let (report, results, _) = try enginePull([image.tag], from: remote, into: [docker, podman])
        XCTAssertEqual(results.count, 2, file: file, line: line)
        for r in results { XCTAssertNil(r.error, "\(r.address): \(r.error ?? "")", file: file, line: line) }
        XCTAssertEqual(report.images.map { $0.id }, [image.id], file: file, line: line)
        let d = try XCTUnwrap(try docker.inspectImage(image.id.hex), "docker: image missing after the pull", file: file, line: line)
        let p = try XCTUnwrap(try podman.inspectImage(image.id.hex), "podman: image missing after the pull", file: file, line: line)
        XCTAssertEqual(d.id, before.id, file: file, line: line)
        XCTAssertEqual(p.id, before.id, file: file, line: line)
        XCTAssertEqual(d.diffIDs, before.diffIDs, file: file, line: line)
        XCTAssertEqual(p.diffIDs, before.diffIDs, file: file, line: line)
        XCTAssertEqual(d.repoTags.sorted(), before.repoTags.sorted(), file: file, line: line)
        // (Podman names unqualified images localhost/NAME.)
        XCTAssertEqual(p.repoTags.map { $0.hasPrefix("localhost/") ? String($0.dropFirst(10)) : $0 }.sorted(),
                       before.repoTags.sorted(), file: file, line: line)
        XCTAssertEqual(try docker.inspectImage(image.tag)?.id, image.id, file: file, line: line)
    }

}
