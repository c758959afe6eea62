import ArgumentParser
import DogestryCore
import DogestryServe
import DogestrySync
import Foundation
#if canImport(Glibc)
import Glibc
#endif

struct Serve: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Serve a remote as a read-only OCI registry, so containerd, Docker, Podman and skopeo pull from it.",
        discussion: """
        A stateless front end in the foreground: it prints where it listens, then an access line per \
        request (method, path, status, bytes, milliseconds) unless --quiet, and stops on SIGTERM or \
        SIGINT once the responses being sent have finished. Every write (push, delete) is refused.

        Names are normalised as Docker does: docker.io/library/x, library/x and x are one image, and \
        containerd's ?ns=HOST names an image HOST/NAME (tried first). By default each client gets layers \
        it reads: zstd as stored to clients that read it (containerd, Podman, skopeo, CRI-O, Docker 23+), \
        else — and lz4 always — as plain tar, decompressed as it streams, in a manifest of its own. \
        --layers plain gives every client plain tar; --layers stored every blob as stored. The image ID \
        is the same either way.

        Bind another address than loopback only with TLS and --tls-client-ca, or on a network you \
        trust. docs/SERVE.md has the containerd hosts.toml, Docker registry-mirrors and Podman \
        registries.conf recipes; --print-hosts-toml REGISTRY prints containerd's.
        """)

    @OptionGroup var global: GlobalOptions
    @Argument(help: .init(RemoteHelp.storeOrTicket + " Default: [serve] remote.")) var remote: String?
    @Option(name: .long, help: "HOST:PORT to listen on (default: [serve] listen, else 127.0.0.1:5000; :PORT is every address).") var listen: String?
    @Option(name: .customLong("tls-cert"), help: "PEM certificate (chain) to serve HTTPS with.") var tlsCert: String?
    @Option(name: .customLong("tls-key"), help: "PEM private key of --tls-cert.") var tlsKey: String?
    @Option(name: .customLong("tls-client-ca"), help: "PEM CA bundle: only clients with a certificate it signed may connect (mTLS).") var tlsClientCA: String?
    @Option(name: .long, help: "compatible (default: zstd layers as stored to clients that read zstd, else as plain tar; lz4 always as plain tar), plain (zstd and lz4 as plain tar to every client) or stored (every blob as stored).") var layers: String?
    @Flag(name: .long, help: "Answer blobs stored in the form asked for with a 307 to a short-lived signed URL (S3, Manta), so the bytes come from the bucket.") var redirect = false
    @Option(name: .customLong("tag-ttl"), help: "How long a tag lookup is reused (default 5s): a moved tag is seen within it.") var tagTTL: String?
    @Option(name: .customLong("print-hosts-toml"), help: "Print containerd's hosts.toml that mirrors REGISTRY (docker.io, ghcr.io, …) through this serve, and exit.") var printHostsToml: String?


    func run() throws {
        let config = try global.loadConfig()
        let listenSpec = listen ?? config.serve.listen ?? "127.0.0.1:5000"
        var options = ServerOptions()
        (options.host, options.port) = try Self.parseListen(listenSpec)
        options.tlsCert = tlsCert ?? config.serve.tlsCert
        options.tlsKey = tlsKey ?? config.serve.tlsKey
        options.tlsClientCA = tlsClientCA ?? config.serve.tlsClientCA
        options.accessLog = !global.quiet && (config.serve.accessLog ?? true)
        let scheme = options.tlsCert != nil ? "https" : "http"

        if let registry = printHostsToml {
            print(try HostsToml.render(registry: registry, mirror: "\(scheme)://\(Self.urlHost(options.host, listenSpec)):\(options.port)",
                                       clientCertificate: options.tlsClientCA != nil))
            return
        }

        var settings = ServeSettings()
        let form = layers ?? config.serve.layers ?? "compatible"
        guard let l = LayerForm(rawValue: form.lowercased()) else {
            throw DogestryError.invalid("unknown --layers \(form) (choose compatible, plain or stored)")
        }
        settings.layers = l
        settings.redirect = redirect || (config.serve.redirect ?? false)
        if let t = tagTTL {
            settings.tagTTL = Double(try Lifetime.parseSeconds(t, option: "--tag-ttl"))
        } else if let t = config.serve.tagTTL { settings.tagTTL = Double(t) }

        guard let spec = remote ?? config.serve.remote else {
            throw DogestryError.invalid("name the REMOTE to serve (or set [serve] remote in \(config.path ?? "the config file"))")
        }
        let store = try RemoteResolver.openStore(spec, config: config, registry: try global.registryOptions())
        let remote = store.repository?.remote
        if settings.redirect && !(remote is SigningRemote) {
            throw DogestryError.invalid("--redirect needs a remote that signs URLs (S3 or Manta); \(store.displayURL) cannot")
        }
        // Reachable, and a repository (a pull ticket was read when it was opened) or a registry.
        if let remote, !(remote is ImageScopedRemote) {
            guard try remote.stat(Repository.layoutKey) != nil else {
                throw DogestryError.notFound("\(remote.displayURL) holds no dogestry repository (no \(Repository.layoutKey)): nothing to serve")
            }
        } else if remote == nil {
            _ = try store.check()
        }
        let out = LineWriter()
        let server = RegistryServer(frontEnd: RegistryFrontEnd(store: store, settings: settings),
                                    options: options, log: { out.line($0) }, warn: { printWarning($0) })
        let address = try server.start()
        if !Self.isLoopback(options.host) && options.tlsClientCA == nil {
            printWarning("listening on \(address) without --tls-client-ca: anyone who can reach it can pull every image of \(store.displayURL)")
        }
        out.line("dogestry serve: listening on \(scheme)://\(address) (\(store.displayURL), layers \(settings.layers.rawValue)\(settings.redirect ? ", redirects" : ""))")
        // Under systemd (Type=notify): ready only now that it listens, so units ordered after it
        // (containerd, kubelet) start against a mirror that answers.
        SystemdNotify.send("READY=1\nSTATUS=listening on \(scheme)://\(address)")

        let signals = SignalWatch(SIGTERM, SIGINT) { first in
            if first {
                out.line("dogestry serve: stopping; the responses being sent finish first")
                SystemdNotify.send("STOPPING=1")
                server.stop()
            } else {
                Glibc.exit(130)
            }
        }
        server.wait()
        signals.cancel()
        out.line("dogestry serve: stopped")
    }

    /// HOST and PORT of `HOST:PORT`, `[V6]:PORT` or `:PORT` (every address).
    static func parseListen(_ s: String) throws -> (String, Int) {
        let bad = DogestryError.invalid("invalid --listen \"\(s)\": expected HOST:PORT, [IPV6]:PORT or :PORT")
        var host: String, portText: Substring
        if s.hasPrefix("[") {
            guard let close = s.firstIndex(of: "]"), s[s.index(after: close)...].hasPrefix(":") else { throw bad }
            host = String(s[s.index(after: s.startIndex)..<close])
            portText = s[s.index(close, offsetBy: 2)...]
        } else {
            guard let colon = s.lastIndex(of: ":"), !s[..<colon].contains(":") else { throw bad }
            host = String(s[..<colon]); portText = s[s.index(after: colon)...]
            if host.isEmpty { host = "0.0.0.0" }
        }
        guard let port = Int(portText), (0...65535).contains(port), !host.contains(where: { $0.isWhitespace || $0 == "/" }) else { throw bad }
        return (host, port)
    }

    static func isLoopback(_ host: String) -> Bool {
        host == "localhost" || host == "::1" || host.hasPrefix("127.")
    }

    static func urlHost(_ host: String, _ spec: String) -> String {
        if host == "0.0.0.0" && spec.hasPrefix(":") { return "127.0.0.1" }
        return RegistryServer.show(host)
    }
}

/// Writes whole lines to standard output, unbuffered and one at a time (access lines come from
/// many threads).
final class LineWriter: @unchecked Sendable {
    private let lock = NSLock()
    func line(_ s: String) {
        let bytes = Array((s + "\n").utf8)
        lock.lock(); defer { lock.unlock() }
        var off = 0
        while off < bytes.count {
            let n = bytes[off...].withUnsafeBytes { Glibc.write(1, $0.baseAddress, $0.count) }
            if n <= 0 { if errno == EINTR { continue }; return }
            off += n
        }
    }
}

/// Calls `handler(first)` on each of `signals`; the default action is turned off meanwhile.
final class SignalWatch: @unchecked Sendable {
    private var sources: [DispatchSourceSignal] = []
    private let lock = NSLock()
    private var seen = false

    init(_ signals: Int32..., handler: @escaping @Sendable (Bool) -> Void) {
        for s in signals {
            Glibc.signal(s, SIG_IGN)
            let src = DispatchSource.makeSignalSource(signal: s, queue: .global())
            src.setEventHandler { [self] in
                lock.lock(); let first = !seen; seen = true; lock.unlock()
                handler(first)
            }
            src.resume()
            sources.append(src)
        }
    }

    func cancel() { for s in sources { s.cancel() } }
}
