import ArgumentParser
import DogestryCore
import DogestryRemotes
import DogestryEngine
import DogestrySync
import Foundation
#if canImport(Glibc)
import Glibc
#endif

@main
struct Dogestry: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "dogestry",
        abstract: "Move container images between engines, plain storage (a directory, S3, Manta) and OCI registries.",
        discussion: """
        REMOTE is \(RemoteHelp.schemes). `pull`, `list` and `remote` also take the https:// URL \
        printed by `sign` (a pull ticket: no config or credentials needed). `push`, `pull`, `list`, \
        `remote`, `tag`, `rm`, `inspect`, `copy` and `serve` also take an OCI registry: \
        \(RemoteHelp.registry). `sign`, `prune` and `verify` work on dogestry remotes only.

        The config file is --config, else ./dogestry.cfg, else \
        $XDG_CONFIG_HOME/dogestry/dogestry.cfg.
        """,
        version: DogestryVersion.description,
        subcommands: [Push.self, Pull.self, Sign.self, List.self, RemoteInfo.self,
                      Tag.self, Rm.self, Inspect.self, Prune.self, Verify.self, Serve.self, Copy.self]
    )

    static func main() {
        signal(SIGPIPE, SIG_IGN)
        do {
            var command = try parseAsRoot()
            try command.run()
        } catch let e as DogestryError {
            fail(e.message)
        } catch let e as ExitCode {
            Glibc.exit(e.rawValue)
        } catch {
            exit(withError: error)
        }
    }

    static func fail(_ message: String) -> Never {
        printError(message)
        Glibc.exit(1)
    }
}

/// Prints `line` to standard error in dogestry's one-line error format.
func printError(_ line: String) {
    try? FileHandle.standardError.write(contentsOf: Data("dogestry: error: \(line)\n".utf8))
}

/// Prints `line` to standard error as a one-line warning.
func printWarning(_ line: String) {
    try? FileHandle.standardError.write(contentsOf: Data("dogestry: warning: \(line)\n".utf8))
}

/// The help of the REMOTE argument: every scheme it takes, by what the command does with it.
enum RemoteHelp {
    /// Every kind of remote that can be written.
    static let kinds = ["a directory path", "file:///PATH", "s3://BUCKET[/PREFIX][?region=R&endpoint=URL]",
                        "manta://HOST/ACCOUNT/stor/PATH", "the NAME of a [remote \"NAME\"] alias in the config file"]
    static let ticket = "an https:// URL printed by `dogestry sign` (a pull ticket)"
    static let registry = "registry://HOST[:PORT][/NAMESPACE] (docker://… too; docker:// alone is Docker Hub)"
    /// `kinds` as one phrase.
    static let schemes = phrase(kinds)
    /// For commands that work on the repository format itself (prune, verify).
    static let store = "The remote: \(schemes)."
    /// For commands that write images: a dogestry remote or a registry.
    static let storeOrRegistry = "The remote: \(phrase(kinds + ["an OCI registry, " + registry]))."
    /// For commands that read images only: a pull ticket works too.
    static let storeOrTicket = "The remote: \(phrase(kinds + [ticket, "an OCI registry, " + registry]))."
    /// For `sign`: only S3 and Manta can sign URLs.
    static let signing = "The remote to sign on: \(phrase([kinds[2], kinds[3], "the NAME of a [remote \"NAME\"] alias of one"]))."

    /// "a, b, or c".
    static func phrase(_ items: [String]) -> String {
        items.dropLast().joined(separator: ", ") + ", or " + items.last!
    }
}

/// Options shared by every command.
struct GlobalOptions: ParsableArguments {
    @Option(name: .long, help: "Config file (default: ./dogestry.cfg, then $XDG_CONFIG_HOME/dogestry/dogestry.cfg).")
    var config: String?

    @Flag(name: [.short, .long], help: "Print nothing but errors.")
    var quiet = false

    @Option(name: .long, help: ArgumentHelp("Credentials for registry remotes, instead of those in ~/.docker/config.json or REGISTRY_AUTH_FILE.", valueName: "USER:PASS"))
    var creds: String?

    @Flag(name: .long, help: "Talk plain HTTP to registry remotes (a lab registry; also [registry \"HOST\"] insecure = true).")
    var insecure = false

    /// `--creds` and `--insecure` for the remote resolver.
    func registryOptions(creds override: String? = nil) throws -> RemoteResolver.RegistryOptions {
        let c = try (override ?? creds).map { try RegistryCredentials.parse($0, origin: "--creds") }
        return RemoteResolver.RegistryOptions(credentials: c, insecure: insecure)
    }

    func loadConfig() throws -> DogestryConfig {
        try DogestryConfig.load(explicit: config, environment: ProcessInfo.processInfo.environment,
                                currentDirectory: FileManager.default.currentDirectoryPath)
    }

    /// Loads the config and resolves the REMOTE argument with it as a dogestry remote (the
    /// repository format itself: `sign`, `prune`, `verify`); a registry is refused.
    func openRemote(_ spec: String, command: String) throws -> (DogestryConfig, ReadableRemote) {
        let config = try loadConfig()
        return (config, try RemoteResolver.openReadable(spec, config: config, registry: try registryOptions(), command: command))
    }

    /// The same for a command that writes: a read-only remote (a pull ticket) is refused.
    func openWritableRemote(_ spec: String, command: String) throws -> (DogestryConfig, Remote) {
        let (config, r) = try openRemote(spec, command: command)
        return (config, try writable(r, command: command))
    }

    /// Loads the config and resolves the REMOTE argument as an image store: a dogestry remote,
    /// a pull ticket or a registry.
    func openStore(_ spec: String, creds: String? = nil) throws -> (DogestryConfig, ImageSource) {
        let config = try loadConfig()
        return (config, try RemoteResolver.openStore(spec, config: config, registry: try registryOptions(creds: creds)))
    }

    /// The same for a command that writes images: a read-only remote (a pull ticket) is refused.
    func openDestination(_ spec: String, command: String, creds: String? = nil) throws -> (DogestryConfig, ImageDestination) {
        let (config, store) = try openStore(spec, creds: creds)
        return (config, try destination(store, command: command))
    }

    /// `store` as a destination `command` can write, or a one-line error naming it read-only.
    func destination(_ store: ImageSource, command: String) throws -> ImageDestination {
        if let repo = store.repository { _ = try writable(repo.remote, command: command) }
        guard let d = store as? ImageDestination else {
            throw DogestryError(.unsupported, "\(store.displayURL) is read-only: \(command) needs a remote it can write")
        }
        return d
    }

    /// `r` as a remote `command` can write, or a one-line error naming it read-only.
    func writable(_ r: ReadableRemote, command: String) throws -> Remote {
        guard let w = r as? Remote else {
            throw DogestryError(.unsupported, "\(r.displayURL) is read-only: \(command) needs a remote it can write (for a pull ticket, the remote it was signed on)")
        }
        return w
    }

    func progress(json: Bool = false) -> ProgressReporter {
        if quiet { return SilentProgress() }
        return isatty(2) != 0 ? TerminalProgress() : LineProgress()
    }
}

func transferOptions(_ config: DogestryConfig, compression: String?, level: Int?) throws -> TransferOptions {
    var o = TransferOptions()
    if let c = config.compression { o.compression = c }
    if let l = config.compressionLevel { o.level = l }
    if let c = compression {
        guard let v = Compression(rawValue: c) else {
            throw DogestryError.invalid("unknown compression \"\(c)\" (choose zstd, lz4, gzip or none)")
        }
        o.compression = v
        if config.compression != v { o.level = nil }
    }
    if let l = level { o.level = l }
    if let t = config.touchAfter { o.touchAfter = t }
    if let l = o.level, !o.compression.levelRange.contains(l) {
        throw DogestryError.invalid("compression level \(l) is out of range \(o.compression.levelRange.lowerBound)…\(o.compression.levelRange.upperBound) for \(o.compression.rawValue)")
    }
    return o
}

struct Push: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Push images to a remote; only layers the remote lacks are compressed and uploaded.",
        discussion: """
        IMAGE is name, name:tag (default tag: latest) or an image ID prefix. With --archive and no IMAGE, \
        every tagged image in the archive is pushed under all its tags.

        Into an OCI registry (registry://HOST/NAMESPACE), images are staged in a dogestry remote under \
        the temporary directory first, layers gzip unless --compression says otherwise; the registry \
        then gets only the blobs it lacks, tags last.
        """)

    @OptionGroup var global: GlobalOptions
    @Argument(help: .init(RemoteHelp.storeOrRegistry)) var remote: String
    @Argument(help: "Images to push.") var images: [String] = []
    @Option(name: .long, help: "Read images from a `docker save` archive (FILE, or - for standard input), plain or compressed with gzip, bzip2, xz or zstd.") var archive: String?
    @Option(name: .long, help: "Layer compression: zstd (default), lz4, gzip or none.") var compression: String?
    @Option(name: .long, help: "Compression level.") var level: Int?
    @Option(name: [.customShort("H"), .long], help: "Docker engine address (default: $DOCKER_HOST, then [docker] connection, then unix:///var/run/docker.sock).") var host: String?
    @Flag(name: .long, help: "Always read layers through the engine's export (`docker save`), never straight from its image store ([docker] read-image-store).") var noImageStore = false
    @Flag(name: .long, help: "Print the result as JSON.") var json = false

    func validate() throws {
        if archive == nil && images.isEmpty { throw ValidationError("name at least one IMAGE to push from the engine") }
    }

    func run() throws {
        let config = try global.loadConfig()
        var options = try transferOptions(config, compression: compression, level: level)   // checked before the remote is touched
        let (_, remote) = try global.openDestination(self.remote, command: "push")
        let progress = global.progress()
        let images = self.images, host = self.host
        let body: (Pusher) throws -> PushReport = { pusher in
            if let archive {
                let what = archive == "-" ? "archive on standard input" : "archive \(archive)"
                if archive == "-" { return try pusher.pushArchive(FileSource.standardInput(), what: what, selections: images) }
                _ = try FileSource(path: archive, what: "archive \(archive)")   // fail early, clearly
                return try pusher.pushArchive(reopen: { try FileSource(path: archive, what: "archive \(archive)") }, what: what, selections: images)
            }
            let address = try EngineAddress.resolve(flag: host, environment: ProcessInfo.processInfo.environment, config: config.dockerConnection)
            let client = try EngineClient(address: address)
            let engine = EnginePusher(client: client, pusher: pusher, progress: progress)
            if noImageStore || config.dockerReadImageStore == false { engine.imageStore = nil }
            return try engine.push(images)
        }
        // Into a registry: what every registry client reads, unless --compression or [transfer] says otherwise.
        if remote.repository == nil && compression == nil && config.compression == nil { options.compression = .gzip }
        let report = try StagedRegistryPush.run(into: remote, options: options, progress: progress,
                                                threads: config.concurrency ?? 3, push: body)
        if json {
            JSONOutput.print(Metered(PushOutput(report, remote: remote), of: remote))
        } else if !global.quiet {
            for i in report.images { print("pushed \(i.tags.joined(separator: ", ")) (image \(i.id.short), manifest \(i.manifest))") }
            print("\(report.layersUploaded) layer(s) uploaded (\(formatBytes(report.bytesUploaded))), \(report.layersPresent) already on \(remote.displayURL)" +
                  (report.layersMounted > 0 ? ", \(report.layersMounted) mounted from another repository" : ""))
        }
    }
}

struct Pull: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Pull images from a remote; every blob and layer is verified against its digest.",
        discussion: """
        IMAGE is name, name:tag (default tag: latest), name@sha256:<manifest digest>, or a unique \
        image ID prefix.

        REMOTE may also be the URL printed by `dogestry sign` (a pull ticket): then no config and no \
        credentials are needed, and IMAGE is optional (default: the ticket's image with its tags).
        """)

    @OptionGroup var global: GlobalOptions
    @Argument(help: .init(RemoteHelp.storeOrTicket)) var remote: String
    @Argument(help: "Images to pull (optional with a signed URL).") var images: [String] = []
    @Option(name: .long, help: "Write a `docker load` archive to FILE (or - for standard output) instead of loading into an engine.") var archive: String?
    @Option(name: [.customShort("H"), .long], help: "Docker engine address (default: $DOCKER_HOST, then [docker] connection, then unix:///var/run/docker.sock).") var host: String?
    @Option(name: .long, help: "Pull into several engines at once: comma-separated addresses (unix:///…, tcp://host:port). Each blob is read from the remote once.") var pullhosts: String?
    @Option(name: .long, help: .init("Of a multi-platform image, the platform to pull (os/arch[/variant]; default: this machine's).", valueName: "platform"))
    var platform: String?
    @Flag(name: .long, help: "Print the result as JSON.") var json = false

    func validate() throws {
        if images.isEmpty && !SignedURL.isTicketURL(remote) { throw ValidationError("name at least one IMAGE to pull") }
        if archive != nil && (pullhosts != nil || host != nil) { throw ValidationError("--archive cannot be combined with --host or --pullhosts") }
    }

    func run() throws {
        let (config, remote) = try global.openStore(self.remote)
        let progress = global.progress()
        let puller = Puller(store: remote, progress: progress, platform: try platform.map(Platform.parse))
        let resolved = try puller.resolveRequested(images)
        guard let archive else {
            try pullIntoEngines(puller, resolved, config: config, remote: remote)
            return
        }
        let out = try OutputFile(path: archive)
        let report: PullReport
        do {
            report = try puller.writeArchive(resolved, to: out.sink)
            try out.commit()
        } catch { out.abort(); throw error }
        if json {
            JSONOutput.print(Metered(PullOutput(report, remote: remote), of: remote))
        } else if !global.quiet {
            let toStdout = archive == "-"
            for i in report.images {
                let line = "pulled \(i.tags.isEmpty ? i.manifestDigest.description : i.tags.joined(separator: ", ")) (image \(i.id.short))"
                if toStdout { try? FileHandle.standardError.write(contentsOf: Data((line + "\n").utf8)) } else { print(line) }
            }
        }
    }
}

extension Pull {
    func pullIntoEngines(_ puller: Puller, _ images: [ResolvedImage], config: DogestryConfig, remote: ImageSource) throws {
        let env = ProcessInfo.processInfo.environment
        var addresses: [EngineAddress] = []
        if let hosts = pullhosts {
            for h in hosts.split(separator: ",").map({ $0.trimmingCharacters(in: .whitespaces) }) where !h.isEmpty {
                addresses.append(try EngineAddress(parsing: h))
            }
            guard !addresses.isEmpty else { throw DogestryError.invalid("--pullhosts names no engine") }
        } else {
            addresses = [try EngineAddress.resolve(flag: host, environment: env, config: config.dockerConnection)]
        }
        let clients = try addresses.map { try EngineClient(address: $0) }
        let (report, results) = EnginePuller(puller: puller, progress: global.progress()).pull(images, into: clients)
        let failed = results.filter { $0.error != nil }
        if json {
            JSONOutput.print(Metered(PullOutput(report, remote: remote, hosts: results), of: remote))
        } else {
            for r in results {
                if let e = r.error {
                    let line = e.contains(r.address) ? e : "\(r.address): \(e)"
                    printError(line)
                } else if !global.quiet {
                    print("\(r.address) (\(r.engine)): pulled \(images.map { $0.tags.isEmpty ? $0.id.short : $0.tags.joined(separator: ", ") }.joined(separator: "; ")) — \(r.layersFetched) layer(s) fetched, \(r.layersPresent) already present")
                }
            }
            if !global.quiet { print("\(formatBytes(report.bytesFetched)) read from \(remote.displayURL)") }
        }
        if !failed.isEmpty {
            throw ExitCode(1)
        }
    }
}

struct Sign: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Print one signed URL that pulls an image with no config and no credentials (a pull ticket).",
        discussion: """
        IMAGE is resolved on the remote as by pull (name, name:tag, name@sha256:…, or an image ID prefix). \
        A small ticket is written to tickets/<random>.json on the remote; it holds presigned GET URLs of \
        the image's manifest, config and layers, and everything expires together after --expires \
        (s, m, h or d: 30m, 1h, 12h, 7d; at most 7 days on S3). Anyone with the URL can then run \
        `dogestry pull URL` on any host.

        Needs a remote that can sign URLs: S3 (presigned URLs) or Manta (signed URLs, as msign \
        makes them). A local directory cannot.
        """)

    @OptionGroup var global: GlobalOptions
    @Argument(help: .init(RemoteHelp.signing)) var remote: String
    @Argument(help: "The image to sign.") var image: String
    @Option(name: .long, help: "How long the URL works: 90s, 30m, 1h, 12h, 7d.") var expires: String = "1h"
    @Flag(name: .long, help: "Print the result as JSON.") var json = false

    func run() throws {
        let lifetime = try Lifetime.parse(expires)   // checked before the remote is touched
        let (_, remote) = try global.openWritableRemote(self.remote, command: "sign")
        let signed = try TicketSigner(remote: remote, progress: global.progress()).sign(image, lifetime: lifetime, lifetimeText: expires)
        if json {
            JSONOutput.print(SignOutput(signed, remote: remote))
        } else {
            print(signed.url)
            if !global.quiet {
                let what = signed.ticket.image.tags.first ?? "\(signed.ticket.image.name)@\(signed.ticket.image.manifest)"
                try? FileHandle.standardError.write(contentsOf: Data("signed \(what) (image \(signed.ticket.image.config.short)) until \(signed.ticket.expires): ticket \(signed.key) on \(remote.displayURL)\n".utf8))
            }
        }
    }
}

struct List: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "List the images on a remote: repository, tag, manifest digest, size.")

    @OptionGroup var global: GlobalOptions
    @Argument(help: .init(RemoteHelp.storeOrTicket)) var remote: String
    @Flag(name: .long, help: "Print JSON.") var json = false

    func run() throws {
        let (_, store) = try global.openStore(self.remote)
        let rows = ImageLister(store: store, warn: printWarning).rows()
        if json { JSONOutput.print(rows); return }
        let table = [["REPOSITORY", "TAG", "IMAGE ID", "DIGEST", "SIZE", "PLATFORMS"]] + rows.map {
            [$0.repository, $0.tag, $0.platforms == nil ? String($0.id.dropFirst(7).prefix(12)) : "(index)", $0.digest, formatBytes($0.size),
             $0.platforms?.joined(separator: ",") ?? ""]
        }
        let hasIndex = rows.contains { $0.platforms != nil }
        let columns = hasIndex ? 6 : 5
        let widths = (0..<columns).map { c in table.map { $0[c].count }.max()! }
        for row in table {
            print(row.prefix(columns).enumerated().map { $0.offset == columns - 1 ? $0.element : $0.element.padding(toLength: widths[$0.offset], withPad: " ", startingAt: 0) }.joined(separator: "   "))
        }
    }
}

/// The rows of `dogestry list`: one per tag, an image index with the platforms it holds. One
/// object that cannot be read is a warning naming it; the other images are still listed.
struct ImageLister {
    let store: ImageSource
    let warn: (String) -> Void

    func rows() -> [ListRow] {
        var rows: [ListRow] = []
        var cache: [Digest: Result<ListRow, DogestryError>] = [:]
        let refs: [RemoteRef]
        do { refs = try store.refs(warn: warn) } catch let e as DogestryError { Dogestry.fail(e.message) } catch { Dogestry.fail("\(error)") }
        for r in refs {
            let summary = cache[r.manifest] ?? Result { try summarize(r.name, r.manifest) }.mapError { $0 as? DogestryError ?? DogestryError.io("\($0)") }
            cache[r.manifest] = summary
            switch summary {
            case .success(var row):
                row.repository = r.name; row.tag = r.tag
                rows.append(row)
            case .failure(let e) where [.notFound, .corrupt, .invalidInput, .unsupported].contains(e.kind):
                warn("skipping \(r.name):\(r.tag): \(e.message)")
            case .failure(let e):
                Dogestry.fail(e.message)
            }
        }
        return rows
    }

    /// A row for manifest or index `d` (repository and tag filled in by the caller).
    func summarize(_ name: String, _ d: Digest) throws -> ListRow {
        let stored = try store.requireManifest(name, d)
        guard stored.isIndex else {
            let m = try ImageManifest.decode(stored.bytes, what: "manifest \(d)")
            return ListRow(repository: name, tag: "", digest: d.description, id: m.config.digest.description, size: Self.size([m]))
        }
        let index = try ImageIndex.decode(stored.bytes, what: "image index \(d)")
        try index.refuseNested(what: "image index \(d)")
        var manifests: [ImageManifest] = []
        for e in index.manifests {
            manifests.append(try ImageManifest.decode(try store.requireManifest(name, e.digest).bytes, what: "manifest \(e.digest)"))
        }
        return ListRow(repository: name, tag: "", digest: d.description, id: "", size: Self.size(manifests),
                       platforms: index.images.compactMap { $0.platform?.description })
    }

    /// Configs plus distinct layer blobs (a blob listed twice is stored once).
    static func size(_ manifests: [ImageManifest]) -> Int64 {
        var seen = Set<Digest>()
        return manifests.reduce(0) { total, m in
            ([m.config] + m.layers).reduce(total) { seen.insert($1.digest).inserted ? $0 + $1.size : $0 }
        }
    }
}

struct RemoteInfo: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "remote", abstract: "Describe a remote and check that it is reachable and writable.")

    @OptionGroup var global: GlobalOptions
    @Argument(help: .init(RemoteHelp.storeOrTicket)) var remote: String
    @Flag(name: .long, help: "Print JSON.") var json = false

    func run() throws {
        let (_, remote) = try global.openStore(self.remote)
        let status = try remote.check()
        let refs = try remote.refs(warn: printWarning)
        if json {
            JSONOutput.print(RemoteOutput(remote: remote.displayURL, status: status, tags: refs.count))
        } else {
            print("\(remote.displayURL): \(status); \(refs.count) tag(s)")
        }
    }
}
