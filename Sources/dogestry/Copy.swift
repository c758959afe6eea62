import ArgumentParser
import DogestryCore
import DogestryRemotes
import DogestrySync
import Foundation

struct Copy: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Copy images from one remote to another; only the blobs the destination lacks move.",
        discussion: """
        IMAGE is name, name:tag, name@sha256:… or an image ID prefix, as for pull; --all copies every \
        tag of SRC. Each blob is verified against its digest and size as it streams (several at \
        once, bounded memory); manifests go after their blobs and refs last, so an interrupted copy \
        leaves no tag pointing at something missing and running it again moves only the rest. \
        Layers keep their stored compression; manifests and configs are copied byte for byte, so \
        manifest digests and image IDs stay the same.

        Between buckets of one S3 endpoint (same region and access key) layers are copied by the \
        store itself (CopyObject, checked by size), unless --no-server-side-copy. SRC may be a pull \
        ticket's URL (then IMAGE is optional).

        Either end may be an OCI registry (registry://HOST[:PORT]/NAMESPACE, docker://…): image \
        NAME is repository NAMESPACE/NAME there. An image index (multi-platform image) is copied \
        whole, byte for byte, unless --platform narrows it. Registry credentials come from \
        --src-creds/--dest-creds (or --creds), REGISTRY_AUTH_FILE, or ~/.docker/config.json with its \
        credential helpers; between repositories of one registry, blobs are mounted, not moved.
        """)

    @OptionGroup var global: GlobalOptions
    @Argument(help: .init("The remote to copy from: \(RemoteHelp.phrase(RemoteHelp.kinds + [RemoteHelp.ticket, "an OCI registry, " + RemoteHelp.registry])).")) var source: String
    @Argument(help: .init("The remote to copy to: \(RemoteHelp.phrase(RemoteHelp.kinds + ["an OCI registry, " + RemoteHelp.registry])).")) var destination: String
    @Argument(help: "Images to copy.") var images: [String] = []
    @Flag(name: .long, help: "Copy every tag of SRC.") var all = false
    @Flag(name: .customLong("dry-run"), help: "List what would move; write nothing.") var dryRun = false
    @Option(name: .long, help: "Blobs copied at once (default: [transfer] concurrency, else 3).") var threads: Int?
    @Option(name: .long, help: "Recompress the layers DST lacks: zstd, lz4, gzip or none (default: keep the stored compression). The manifests are then new; image IDs and tags stay.") var compression: String?
    @Option(name: .long, help: "Compression level with --compression.") var level: Int?
    @Flag(name: .customLong("no-server-side-copy"), help: "Stream every blob through dogestry even between buckets of one S3 endpoint (default: the store copies them itself).") var noServerSideCopy = false
    @Flag(name: .long, help: "Print the result as JSON.") var json = false
    @Option(name: .long, help: ArgumentHelp("Keep only this platform of an image index (repeatable); one platform makes the tags point at its manifest.", valueName: "os/arch[/variant]")) var platform: [String] = []
    @Option(name: .customLong("src-creds"), help: ArgumentHelp("Credentials for a registry SRC.", valueName: "USER:PASS")) var srcCreds: String?
    @Option(name: .customLong("dest-creds"), help: ArgumentHelp("Credentials for a registry DST.", valueName: "USER:PASS")) var destCreds: String?

    func validate() throws {
        if all && !images.isEmpty { throw ValidationError("--all copies every tag: name no IMAGE with it") }
        if !all && images.isEmpty && !SignedURL.isTicketURL(source) { throw ValidationError("name at least one IMAGE to copy, or --all") }
        if let t = threads, !(1...64).contains(t) { throw ValidationError("--threads must be 1…64") }
    }

    func run() throws {
        let config = try global.loadConfig()
        let src = try RemoteResolver.openStore(source, config: config, registry: try global.registryOptions(creds: srcCreds))
        let writable = try global.destination(try RemoteResolver.openStore(destination, config: config, registry: try global.registryOptions(creds: destCreds)), command: "copy")
        let platforms = try platform.map { try Platform.parse($0) }
        guard writable.displayURL != src.displayURL else {
            throw DogestryError.invalid("SRC and DST are the same remote (\(src.displayURL)): nothing to copy")
        }
        let progress: ProgressReporter = json ? (global.quiet ? SilentProgress() as ProgressReporter : WarningsOnlyProgress()) : global.progress()
        let copier = Copier(source: src, destination: writable, progress: progress,
                            threads: threads ?? config.concurrency ?? 3, touchAfter: config.touchAfter ?? ReuseGuard.defaultTouchAfter,
                            serverSide: !noServerSideCopy)
        copier.platforms = platforms.isEmpty ? nil : platforms
        if compression != nil || level != nil {
            guard platforms.count <= 1 else { throw DogestryError.invalid("--compression copies one platform of an index: give at most one --platform") }
            let resolved = try copier.resolveImages(images, all: all, platform: platforms.first)
            guard !dryRun else { throw DogestryError.invalid("--dry-run cannot be combined with --compression") }
            let options = try transferOptions(config, compression: compression ?? config.compression?.rawValue ?? "zstd", level: level)
            let pushed = try copier.copyRecompressing(resolved, options: options)
            if json {
                JSONOutput.print(PushOutput(pushed, remote: writable))
            } else if !global.quiet {
                for i in pushed.images {
                    print("copied \(i.tags.isEmpty ? i.manifest.description : i.tags.joined(separator: ", ")) (image \(i.id.short), manifest \(i.manifest)) as \(options.compression.rawValue)")
                }
                print("\(pushed.layersUploaded) layer(s) recompressed and uploaded (\(formatBytes(pushed.bytesUploaded))), \(pushed.layersPresent) already on \(writable.displayURL)")
            }
            return
        }
        let report = try copier.copy(try copier.resolve(images, all: all), dryRun: dryRun)
        if json {
            JSONOutput.print(CopyOutput(report, source: src, destination: writable, dryRun: dryRun))
            return
        }
        if global.quiet { return }
        for b in report.blobs {
            let state: String
            switch b.state {
            case .present: state = "already there"
            case .copied: state = "copied"
            case .mounted: state = "mounted from \(b.mountedFrom ?? "another repository")"
            case .wouldCopy: state = "would copy"
            }
            print("\(b.kind.rawValue) \(b.digest): \(state)\(b.serverSide == true ? " server-side" : "") (\(formatBytes(b.size)))")
        }
        let moved = report.moved
        print("\(dryRun ? "would copy" : "copied") \(moved.count) blob(s) (\(formatBytes(moved.reduce(0) { $0 + $1.size }))), \(report.blobs.count - moved.count) already on \(writable.displayURL); \(report.items.map(\.label).joined(separator: "; "))\(dryRun ? " (dry run: nothing written)" : "")")
    }
}
