import ArgumentParser
import DogestryCore
import DogestrySync
import Foundation

// Keeping a remote healthy: tag, rm, inspect, prune, verify. The logic is in DogestrySync
// (Maintenance.swift, Inspect.swift, Prune.swift, Verify.swift); these commands parse and print.

extension GlobalOptions {
    /// Opens a remote for a maintenance command; one that `writes` refuses a read-only remote
    /// (a pull ticket) up front, the others (inspect, verify) read any remote.
    func openRepository(_ spec: String, command: String, writes: Bool) throws -> (DogestryConfig, Repository) {
        if writes {
            let (config, remote) = try openWritableRemote(spec, command: command)
            return (config, Repository(remote: remote))
        }
        let (config, remote) = try openRemote(spec, command: command)
        return (config, Repository(remote: remote))
    }
}

struct Tag: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Point a new tag at an image already on a remote (no blob moves).",
        discussion: """
        SOURCE is resolved as by pull: name, name:tag, name@sha256:<manifest digest>, or an image ID \
        prefix. TARGET is name or name:tag (default tag: latest). One ref object is written.
        """)

    @OptionGroup var global: GlobalOptions
    @Argument(help: .init(RemoteHelp.storeOrRegistry)) var remote: String
    @Argument(help: "The image to tag.") var source: String
    @Argument(help: "The new tag, NAME[:TAG].") var target: String
    @Flag(name: .long, help: "Print the result as JSON.") var json = false

    func run() throws {
        let (config, store) = try global.openDestination(remote, command: "tag")
        let r = try Tagger(store: store, touchAfter: config.touchAfter ?? ReuseGuard.defaultTouchAfter).tag(source, as: target)
        if json {
            JSONOutput.print(TagOutput(r, remote: store))
        } else if !global.quiet {
            let was = r.previous.map { $0 == r.manifest ? " (unchanged)" : " (was \($0))" } ?? ""
            print("tagged \(r.reference) -> \(r.manifest) (image \(r.id.short))\(was)")
        }
    }
}

struct Rm: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Remove tags from a remote.",
        discussion: """
        Each IMAGE is name or name:tag (default tag: latest). A tag that is not there is an error \
        naming it; the other tags are still removed. Blobs stay until `dogestry prune` finds them \
        unreferenced and older than its grace period.
        """)

    @OptionGroup var global: GlobalOptions
    @Argument(help: .init(RemoteHelp.storeOrRegistry)) var remote: String
    @Argument(help: "Tags to remove, NAME[:TAG].") var images: [String] = []
    @Flag(name: .long, help: "Print the result as JSON.") var json = false

    func validate() throws {
        if images.isEmpty { throw ValidationError("name at least one NAME:TAG to remove") }
    }

    func run() throws {
        let (_, store) = try global.openDestination(remote, command: "rm")
        let results = Tagger(store: store).untag(images)
        let failed = results.filter { $0.error != nil }
        if json {
            JSONOutput.print(RmOutput(results, remote: store))
        } else {
            for r in results {
                if let e = r.error { printError(e) } else if !global.quiet, let ref = r.reference, let md = r.manifest {
                    print("untagged \(ref) (was \(md))")
                }
            }
        }
        if !failed.isEmpty { throw ExitCode(1) }
    }
}

struct Inspect: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Show an image on a remote: manifest, config summary, layers, and what it shares.",
        discussion: """
        IMAGE is resolved as by pull. "Shared" layers are also used by another tagged image on the \
        remote; "unique" is what removing the image's tags and pruning would free.
        """)

    @OptionGroup var global: GlobalOptions
    @Argument(help: .init(RemoteHelp.storeOrTicket)) var remote: String
    @Argument(help: "The image to inspect.") var image: String
    @Option(name: .long, help: .init("Of a multi-platform image, the platform to show (os/arch[/variant]; default: this machine's).", valueName: "platform"))
    var platform: String?
    @Flag(name: .long, help: "Print JSON.") var json = false

    func run() throws {
        let (_, store) = try global.openStore(remote)
        let i = try Inspector(store: store).inspect(image, platform: try platform.map(Platform.parse))
        for w in i.warnings { printWarning(w) }
        if json {
            JSONOutput.print(InspectOutput(i, remote: store))
            return
        }
        print("image     \(i.tags.isEmpty ? image : i.tags.joined(separator: ", "))")
        if let ix = i.index { print("index     \(ix): \(i.platforms.joined(separator: ", "))") }
        print("manifest  \(i.manifestDigest) (\(formatBytes(i.manifestSize)))")
        print("id        \(i.id) (config \(formatBytes(i.configSize)))")
        if i.os != nil || i.architecture != nil { print("platform  \(i.os ?? "?")/\(i.architecture ?? "?")") }
        if let c = i.created { print("created   \(c)") }
        print("layers    \(i.layers.count): \(formatBytes(i.layerBytes)) compressed, \(formatBytes(i.uncompressedBytes)) uncompressed")
        let table = [["#", "BLOB", "DIFFID", "COMPRESSION", "COMPRESSED", "UNCOMPRESSED", "SHARED"]] + i.layers.enumerated().map { n, l in
            ["\(n + 1)", l.digest.short, l.diffID.short, l.compression ?? l.mediaType, formatBytes(l.size), formatBytes(l.uncompressedSize), l.shared ? "yes" : "no"]
        }
        let widths = (0..<7).map { c in table.map { $0[c].count }.max()! }
        for row in table {
            print("  " + row.enumerated().map { $0.offset == 6 ? $0.element : $0.element.padding(toLength: widths[$0.offset], withPad: " ", startingAt: 0) }.joined(separator: "  "))
        }
        print("total     \(formatBytes(i.storedBytes)) stored (manifest, config, layers); shared with other images \(formatBytes(i.sharedBytes)); unique \(formatBytes(i.uniqueBytes))")
    }
}

struct Prune: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Remove what no tag or pull ticket needs; safe while others push.",
        discussion: """
        Marks everything reachable from the refs and unexpired pull tickets, then removes blobs, \
        diffID-index entries, expired tickets and abandoned uploads that are unreferenced AND older \
        than the grace period (--grace, else [prune] grace, else 24h). Every push must finish within \
        the grace period minus [prune] touch-after (default 10m), so a grace shorter than touch-after \
        plus a 30m margin (the time a push that touches nothing may take, plus clock skew) is refused \
        unless --force says that nobody pushes while prune runs (then any grace, even 0, is allowed). \
        A ref or manifest that cannot be read is reported on stderr, and no blob is removed (what \
        that image needs is unknown); the rest is pruned and the exit status is 1. See \
        docs/FORMAT.md.
        """)

    @OptionGroup var global: GlobalOptions
    @Argument(help: .init(RemoteHelp.store)) var remote: String
    @Flag(name: .long, help: "List what would be removed; remove nothing.") var dryRun = false
    @Option(name: .long, help: "Only remove objects unreferenced and older than this: 90s, 30m, 24h, 7d, or 0.") var grace: String?
    @Flag(name: .long, help: "Allow a grace shorter than touch-after plus 30m: nobody pushes to the remote while prune runs.") var force = false
    @Flag(name: .long, help: "Print the result as JSON.") var json = false

    func run() throws {
        let config = try global.loadConfig()
        var options = PruneOptions()
        if let g = grace { options.grace = try Lifetime.parseDuration(g, option: "--grace") } else if let g = config.pruneGrace { options.grace = g }
        options.dryRun = dryRun
        options.force = force
        options.touchAfter = config.touchAfter ?? ReuseGuard.defaultTouchAfter
        let (_, repo) = try global.openRepository(remote, command: "prune", writes: true)
        let r = try Pruner(repository: repo, progress: global.progress()).prune(options)
        for u in r.unreadable { printWarning("cannot read \(u)") }
        show(r, repo)
        if !r.unreadable.isEmpty {
            printError("\(r.unreadable.count) root(s) on \(repo.remote.displayURL) cannot be read: kept \(r.keptUnknownBlobs) unreferenced blob(s) (\(formatBytes(r.keptUnknownBytes))) they may need (see dogestry verify; remove a broken ref with dogestry rm)")
            throw ExitCode(1)
        }
    }

    func show(_ r: PruneReport, _ repo: Repository) {
        if json {
            JSONOutput.print(PruneOutput(r, remote: repo.remote))
            return
        }
        guard !global.quiet else { return }
        let verb = r.dryRun ? "would remove" : "removed"
        for i in r.removed {
            let what: String
            switch i.kind {
            case .blob: what = "blob sha256:\(i.key.dropFirst(Repository.blobsPrefix.count))"
            case .index: what = "index entry diffid sha256:\(i.key.dropFirst(Repository.diffIDPrefix.count))"
            case .ticket: what = "ticket \(i.key)"
            case .upload: what = "incomplete upload of \(i.key)"
            }
            print("\(verb) \(what) (\([i.size.map(formatBytes), i.note].compactMap { $0 }.joined(separator: ", ")))")
        }
        for i in r.repointed {
            print("\(r.dryRun ? "would point" : "pointed") index entry diffid sha256:\(i.key.dropFirst(Repository.diffIDPrefix.count)) at a blob in use (\(i.note))")
        }
        for k in r.keptYoung { print("kept \(k): a push reused it while prune ran") }
        print("\(verb) \(r.count(.blob)) blobs (\(formatBytes(r.bytes(.blob)))), \(r.count(.index)) index entries, \(r.count(.ticket)) tickets, \(r.count(.upload)) uploads; \(r.dryRun ? "would free" : "freed") \(formatBytes(r.bytesFreed))")
        print("kept \(r.liveBlobs) blobs in use (\(formatBytes(r.liveBytes))) by \(r.refs) tags and \(r.tickets) tickets, \(r.youngBlobs) unreferenced blobs younger than \(Lifetime.format(r.grace)) (\(formatBytes(r.youngBytes)))")
    }
}

struct Verify: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Check a remote: refs, manifests, blobs, the diffID index; --deep re-hashes every blob.",
        discussion: """
        With IMAGEs, only those images (and their index entries) are checked; otherwise the whole \
        remote, pull tickets included. --deep reads every blob (the whole remote: every blob stored), \
        checks its digest and, for layers, decompresses it to check the diffID. Each problem is one \
        line; the exit status is non-zero when there is any. --repair (which implies --deep) then \
        removes the diffID-index entries found wrong (their blob does not decompress to their diffID \
        or size, or they are not index entries) and nothing else, so the next push stores those \
        layers again; the exit status is non-zero only when other problems remain.
        """)

    @OptionGroup var global: GlobalOptions
    @Argument(help: .init(RemoteHelp.store)) var remote: String
    @Argument(help: "Images to check (default: the whole remote).") var images: [String] = []
    @Flag(name: .long, help: "Re-hash every blob (layers decompressed to check their diffIDs).") var deep = false
    @Flag(name: .long, help: "Remove the diffID-index entries found wrong (implies --deep).") var repair = false
    @Option(name: .long, help: "Blobs re-hashed at once.") var threads: Int = 3
    @Flag(name: .long, help: "Print the result as JSON.") var json = false

    func validate() throws {
        if threads < 1 || threads > 64 { throw ValidationError("--threads must be 1…64") }
    }

    func run() throws {
        let (_, repo) = try global.openRepository(remote, command: repair ? "verify --repair" : "verify", writes: repair)
        let v = Verifier(repository: repo, progress: deep ? global.progress() : SilentProgress())
        v.threads = threads
        let r = try v.verify(images: images, deep: deep || repair)
        let repaired = repair ? try v.repair(r) : []
        let remaining = r.problems.filter { !repaired.contains($0.object) }
        let gb = Double(r.bytesHashed) / 1e9
        if json {
            JSONOutput.print(VerifyOutput(r, remote: repo.remote, repaired: repaired))
        } else {
            for p in r.problems { print(p.message) }
            for k in repaired { print("removed index entry \(k)") }
            if !global.quiet {
                print("checked \(r.refs) refs, \(r.manifests) manifests, \(r.indexes > 0 ? "\(r.indexes) image indexes, " : "")\(r.blobsChecked) blobs, \(r.indexEntries) index entries, \(r.tickets) tickets: \(r.ok ? "no problems" : "\(r.problems.count) problem(s)")")
                if r.deep {
                    let rate = r.hashSeconds > 0 ? Double(r.bytesHashed) / 1e6 / r.hashSeconds : 0
                    print(String(format: "re-hashed %d blobs, %@ (%@ uncompressed) in %.2f s: %.0f MB/s, %.2f s per GB", r.blobsHashed,
                                 formatBytes(r.bytesHashed), formatBytes(r.bytesDecompressed), r.hashSeconds, rate, gb > 0 ? r.hashSeconds / gb : 0))
                }
            }
        }
        if !remaining.isEmpty {
            printError("\(remaining.count) problem(s) on \(repo.remote.displayURL)" + (repaired.isEmpty ? "" : " (\(repaired.count) index entr\(repaired.count == 1 ? "y" : "ies") removed)"))
            throw ExitCode(1)
        }
    }
}
