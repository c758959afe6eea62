import DogestryCore
import DogestryEngine
import DogestryHTTP
import Foundation

/// Pushes images straight from a Docker engine.
///
/// The engine is inspected first; when the remote already has every layer and the config,
/// only the manifest and refs are written and nothing is exported. Otherwise one export
/// (`/images/get`) streams all requested images and only missing layers are compressed.
public final class EnginePusher {
    public let client: EngineClient
    public let pusher: Pusher
    let progress: ProgressReporter

    /// Where layers are read without waiting for the engine's export: by default the engine's own
    /// image store when dogestry runs beside it and may read it (`DockerLayerStore`); nil reads
    /// through the export only (`[docker] read-image-store = false`, `push --no-image-store`).
    public lazy var imageStore: DockerLayerStore? = client.layerStore()

    public init(client: EngineClient, pusher: Pusher, progress: ProgressReporter) {
        self.client = client; self.pusher = pusher; self.progress = progress
    }

    struct Target { var image: EngineImage; var tags: [ImageReference] }

    /// Resolves what the user named against the engine.
    func inspect(_ specs: [String]) throws -> [Target] {
        var out: [Target] = []
        for spec in specs {
            let sel = try ArchiveSelection(parsing: spec)
            let query: String
            switch sel {
            case .reference(let r): query = r.description
            case .idPrefix(let p): query = p
            }
            guard let img = try client.inspectImage(query) else {
                throw DogestryError(.notFound, "engine \(client.address): image \(spec) not found")
            }
            var tags: [ImageReference]
            switch sel {
            case .reference(let r): tags = [r]
            case .idPrefix:
                tags = img.repoTags.compactMap { try? ImageReference(parsing: $0) }
                guard !tags.isEmpty else {
                    throw DogestryError.invalid("engine image \(spec) has no tag: push it as NAME:TAG")
                }
            }
            if let i = out.firstIndex(where: { $0.image.id == img.id }) {
                for t in tags where !out[i].tags.contains(t) { out[i].tags.append(t) }
            } else { out.append(Target(image: img, tags: tags)) }
        }
        return out
    }

    public func push(_ specs: [String]) throws -> PushReport {
        try pusher.retryingIfPruned { try pushOnce(specs) }
    }

    func pushOnce(_ specs: [String]) throws -> PushReport {
        let repo = pusher.repo
        try repo.ensureLayout()
        let targets = try inspect(specs)
        var needExport: [Target] = []
        var needConfigOnly: [Target] = []
        for t in targets {
            let (_, missing) = try pusher.prefetchIndex(t.image.diffIDs)
            if missing > 0 { needExport.append(t); continue }
            if try repo.hasBlob(t.image.id) {
                let cfg = try pusher.trust.config(t.image.id)   // often read already, for the layers' proof
                for d in t.image.diffIDs { pusher.notePresent(id: d.short, d) }
                try pusher.publish(cfg, tags: t.tags)
            } else {
                needConfigOnly.append(t)
            }
        }
        for t in needConfigOnly {
            // The image store has the config at once; the export only after copying every layer.
            let cfg = try (imageStore.flatMap { try? storeConfig(t.image, $0) }) ?? fetchConfigOnly(t.image)
            for d in t.image.diffIDs { pusher.notePresent(id: d.short, d) }
            try pusher.publish(cfg, tags: t.tags)
        }
        if !needExport.isEmpty, let store = imageStore {
            needExport = try pushFromStore(needExport, store)
        }
        if !needExport.isEmpty {
            try pusher.beginReuseProtection()   // an export takes a while: protect reused layers now
            let names = needExport.map { $0.image.id.hex }
            let what = "export of \(needExport.map { $0.tags.first?.description ?? $0.image.id.short }.joined(separator: ", ")) from engine \(client.address)"
            let images = try pusher.readArchive(try client.exportImages(names), what: what,
                                                plan: ArchiveReadPlan(reopen: { try self.client.exportImages(names) }))
            for t in needExport {
                guard let img = images.first(where: { $0.id == t.image.id }) else {
                    throw DogestryError(.engine, "engine \(client.address): the export lacks image \(t.image.id.short)")
                }
                try pusher.publish(img.config, tags: t.tags)
            }
        }
        return pusher.report
    }

    /// Pushes `targets` with their layers read from the engine's image store; returns those it
    /// could not (the export handles them). Layers stored before a failure stay stored and are
    /// not read again; nothing is stored whose bytes did not hash to the diffID the engine lists.
    func pushFromStore(_ targets: [Target], _ store: DockerLayerStore) throws -> [Target] {
        var left: [Target] = []
        for (n, t) in targets.enumerated() {
            let presentBefore = pusher.report.layersPresent   // the export counts them again
            do {
                let cfg = try storeConfig(t.image, store)
                let chains = Digest.chainIDs(cfg.diffIDs)
                for (i, d) in cfg.diffIDs.enumerated() {
                    if try pusher.storedLayer(d) != nil { pusher.notePresent(id: d.short, d); continue }
                    let (source, size) = try store.layer(chainID: chains[i], diffID: d)
                    try pusher.beginReuseProtection()
                    let layer = ArchiveLayer(path: "layer \(chains[i].short)", expectedDiffID: d, size: size, mustRead: true,
                                             what: "layer \(d.short) in the image store of engine \(client.address)")
                    try pusher.storeLayer(layer, source) { got in
                        LayerStoreUnusable("layer \(d.short) read from the image store hashes to \(got.short)")
                    }
                }
                try pusher.publish(cfg, tags: t.tags)
            } catch let e as LayerStoreUnusable {
                pusher.report.layersPresent = presentBefore
                progress.report(.warning("reading image \(t.image.id.short) from the engine's image store failed (\(e.reason)); exporting it instead"))
                left.append(contentsOf: targets[n...])
                break
            }
        }
        return left
    }

    /// An image's config from the image store: its digest is the image ID, and it lists the
    /// layers the engine lists.
    func storeConfig(_ image: EngineImage, _ store: DockerLayerStore) throws -> ImageConfig {
        let what = "config of image \(image.id.short) in the engine's image store"
        let bytes = try store.config(image.id)
        guard let cfg = try? ImageConfig(bytes: bytes, what: what) else {
            throw LayerStoreUnusable("\(what) is not an image config")
        }
        guard cfg.diffIDs == image.diffIDs else { throw LayerStoreUnusable("\(what) lists other layers than the engine") }
        return cfg
    }

    /// Gets an image's config from an export, stopping the export as soon as the config passed.
    func fetchConfigOnly(_ image: EngineImage) throws -> ImageConfig {
        let body = try client.exportImages([image.id.hex])
        defer { body.cancel() }
        let what = "export of image \(image.id.short) from engine \(client.address)"
        let tar = TarReader(body, what: what)
        while let h = try tar.next() {
            let name = try normalizeArchivePath(h.name, what: what)
            guard h.type == .file, name == image.id.hex + ".json" || name == "blobs/sha256/" + image.id.hex else { continue }
            let bytes = try tar.body.readAll(limit: 16 << 20, what: "\(what): \(name)")
            let cfg = try ImageConfig(bytes: bytes, what: "\(what): config")
            guard cfg.digest == image.id else { throw DogestryError.corrupt("\(what): config does not match image ID \(image.id)") }
            progress.report(.info("config of \(image.id.short) read from the engine; no layer exported"))
            return cfg
        }
        throw DogestryError(.engine, "\(what): the export has no config for the image")
    }
}

/// Outcome of a pull into one engine.
public struct HostResult: Sendable {
    public var address: String
    public var engine: String
    public var error: String?
    public var layersFetched = 0
    public var layersPresent = 0
    public var loaded: [String] = []
}

/// Pulls images into one or more engines at once: each blob is read from the remote once and
/// fanned out to every engine that lacks it; the engines are fed concurrently.
public final class EnginePuller {
    public let puller: Puller
    let progress: ProgressReporter

    public init(puller: Puller, progress: ProgressReporter) { self.puller = puller; self.progress = progress }

    final class Host: @unchecked Sendable {  // (one thread works on a host at a time; the caller waits for it)
        let client: EngineClient
        var result: HostResult
        var isPodman = false
        var skip: Set<Digest> = []
        var needsLoad = true
        var pipe: BoundedPipe?
        var thread: Thread?
        /// Written only by the loader thread; read after `done`.
        var loaded: [String] = []
        var loadError: String?
        let done = DispatchSemaphore(value: 0)
        init(client: EngineClient) {
            self.client = client
            self.result = HostResult(address: client.address.description, engine: "unknown")
        }
    }

    public func pull(_ images: [ResolvedImage], into clients: [EngineClient]) -> (PullReport, [HostResult]) {
        let hosts = clients.map(Host.init)
        // Learn what each engine has.
        let group = DispatchGroup()
        for h in hosts {
            group.enter()
            DispatchQueue.global().async {
                defer { group.leave() }
                do {
                    let v = try h.client.version()
                    h.isPodman = v.isPodman
                    h.result.engine = v.isPodman ? "podman \(v.version)" : "docker \(v.version)"
                    var allPresent = true
                    for img in images where try h.client.inspectImage(img.id.hex) == nil { allPresent = false }
                    h.needsLoad = !allPresent
                    if h.needsLoad && !h.isPodman { h.skip = try h.client.presentChainIDs() }
                } catch {
                    h.result.error = message(error)
                }
            }
        }
        group.wait()

        var report = PullReport(images: images)
        let loading = hosts.filter { $0.result.error == nil && $0.needsLoad }
        for h in hosts where h.result.error == nil && !h.needsLoad {
            h.result.layersPresent = Set(images.flatMap { $0.config.diffIDs }).count
            progress.report(.info("\(h.result.address): images already present; tagging only"))
        }
        // One loader thread per engine, each reading its own pipe.
        for h in loading {
            let pipe = BoundedPipe(capacity: 8 << 20)
            h.pipe = pipe
            let address = h.result.address
            let t = Thread {
                defer { h.done.signal() }
                do {
                    h.loaded = try h.client.loadImages { sink in
                        try pipe.reader.copy(to: sink)
                    }
                } catch {
                    h.loadError = message(error)
                }
                pipe.fail(DogestryError(.aborted, "engine \(address) stopped reading"))
            }
            t.name = "dogestry-load"
            h.thread = t
            t.start()
        }
        if !loading.isEmpty {
            let targets = loading.map { ArchiveTarget(name: $0.result.address, sink: $0.pipe!.writer, skip: $0.skip) }
            do {
                report = try puller.writeArchives(images, to: targets)
                for (h, t) in zip(loading, targets) {
                    h.result.layersFetched = t.layersWritten
                    h.result.layersPresent = t.layersSkipped
                    if t.error == nil { try? h.pipe!.writer.close() } else { h.pipe!.fail(t.error!) }
                }
            } catch {
                for h in loading {
                    h.pipe!.fail(error)
                    if h.result.error == nil { h.result.error = message(error) }
                }
            }
            for h in loading {
                h.done.wait()
                // The remote's failure (set above) comes first, then the engine's, then the target's.
                h.result.loaded = h.loaded
                if h.result.error == nil, let e = h.loadError { h.result.error = e }
            }
            for (h, t) in zip(loading, targets) where h.result.error == nil && t.error != nil {
                h.result.error = message(t.error!)
            }
        }
        // Tag as requested and check the images arrived.
        for h in hosts where h.result.error == nil {
            do {
                for img in images {
                    guard try h.client.inspectImage(img.id.hex) != nil else {
                        throw DogestryError(.engine, "engine \(h.result.address): image \(img.id.short) is missing after the load")
                    }
                    for t in img.tags {
                        let r = try ImageReference(parsing: t)
                        try h.client.tag(source: img.id.hex, repo: r.name, tag: r.tag ?? "latest")
                    }
                }
            } catch { h.result.error = message(error) }
        }
        return (report, hosts.map { $0.result })
    }
}

func message(_ error: Error) -> String {
    (error as? DogestryError)?.message ?? String(describing: error)
}
