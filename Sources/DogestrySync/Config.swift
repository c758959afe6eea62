import DogestryCore
import DogestryHTTP
import Foundation

/// dogestry's configuration, read from a git-config style file (`dogestry.cfg`).
///
/// ```
/// # comment        ; comment
/// [remote "central"]
///     url = s3://my-bucket/images?region=eu-west-1
/// [docker]
///     connection = unix:///var/run/docker.sock
/// [compression]
///     algorithm = zstd      ; zstd | lz4 | gzip | none
///     level = 1
/// ```
///
/// The syntax follows git-config: `[section]` and `[section "subsection"]` headers (section names
/// case-insensitive, subsections case-sensitive with `\"` and `\\` escapes), case-insensitive keys,
/// `#`/`;` comments (also after a value, unless quoted), double-quoted parts with `\n \t \b \" \\`
/// escapes, a trailing backslash continuing a value on the next line, and booleans
/// (`true/false/yes/no/on/off/1/0`; a bare key means true, an empty value false).
///
/// Unknown sections and keys, and invalid values, are errors. Every error is a one-line
/// `DogestryError` of kind `.config` of the form `FILE:LINE: message`; messages never contain the
/// values of secret keys.
public struct DogestryConfig: Sendable, Equatable {
    /// The file the configuration came from, as it was given (nil = defaults, no file).
    public var path: String?
    /// Remote aliases: alias -> url.
    public var remotes: [String: String]
    /// `[docker] connection`: how to reach the engine (unix://, tcp://, http://, https://).
    public var dockerConnection: String?
    /// `[docker] read-image-store`: a push reads layers from a local engine's image store rather
    /// than waiting for its export (nil: the default, true).
    public var dockerReadImageStore: Bool? = nil
    /// `[compression] algorithm`; nil means the default (zstd).
    public var compression: Compression?
    /// `[compression] level`, already checked against the algorithm's level range.
    public var compressionLevel: Int?
    /// `[transfer] concurrency`: parallel blob transfers (1…64).
    public var concurrency: Int?
    /// `[transfer] tempdir`: where temporary files go.
    public var tempDir: String?
    /// `[transfer] connect-timeout`, `first-byte-timeout`, `stall-timeout` in seconds (0: no limit).
    public var connectTimeout: Int? = nil
    public var firstByteTimeout: Int? = nil
    public var stallTimeout: Int? = nil
    /// `[s3]` settings, validated, by key (`access-key-id`, `secret-key`, `session-token`, `region`,
    /// `endpoint`, `part-size`, `concurrency`, `profile`). Values are as written.
    public var s3: [String: String]
    /// `[manta]` settings, validated, by key (`url`, `account`, `user`, `key_id`, `private_key`,
    /// `algo`, `root`, `durability`, `insecure`, `role`). Values are as written, except `algo`
    /// (lower-cased) and `insecure` (normalised to `true` or `false`).
    public var manta: [String: String]
    /// `[s3] part-size` in bytes.
    public var s3PartSize: Int64?
    /// `[prune] grace` in seconds: how old an unreferenced object must be before `prune` removes it.
    public var pruneGrace: Int? = nil
    /// `[prune] touch-after` in seconds: a push or `tag` reusing an object older than this
    /// refreshes it, so a concurrent prune cannot take it (docs/FORMAT.md, "Pruning and concurrency").
    public var touchAfter: Int? = nil
    /// `[serve]`: defaults of `dogestry serve`'s options.
    public var serve = ServeConfig()
    /// `[registry "HOST"]`: per-registry settings (`insecure`, `ca`, `chunk-size`), by lower-cased HOST[:PORT].
    public var registries: [String: RegistryConfig] = [:]

    /// The timeouts every request to a remote gets: the `[transfer]` keys over the defaults.
    public var httpTimeouts: HTTPTimeouts {
        var t = HTTPTimeouts.remoteDefault
        if let c = connectTimeout { t.connect = Double(c) }
        if let f = firstByteTimeout { t.firstByte = Double(f) }
        if let s = stallTimeout { t.stall = Double(s) }
        return t
    }

    /// No configuration file: every setting at its default.
    public static let empty = DogestryConfig(
        path: nil, remotes: [:], dockerConnection: nil, compression: nil, compressionLevel: nil,
        concurrency: nil, tempDir: nil, s3: [:], manta: [:], s3PartSize: nil)

    /// The name of the configuration file looked for in the current directory and in
    /// `$XDG_CONFIG_HOME/dogestry/`.
    public static let fileName = "dogestry.cfg"

    /// Parses configuration text; `path` is used in error messages (and stored in `path`).
    public static func parse(_ text: String, path: String) throws -> DogestryConfig {
        var parser = ConfigFileParser(text: text, path: path)
        let (entries, syntaxError) = parser.parse()
        // Entries before a syntax error are checked first, so the first error in the file is reported.
        let cfg = try build(entries, path: path, complete: syntaxError == nil)
        if let e = syntaxError { throw e }
        return cfg
    }

    /// Finds and reads the configuration.
    ///
    /// `explicit` (the --config flag) is used if given and must exist; otherwise `./dogestry.cfg`
    /// (relative to `currentDirectory`), else `$XDG_CONFIG_HOME/dogestry/dogestry.cfg`
    /// (`XDG_CONFIG_HOME` defaulting to `$HOME/.config`). If none is found the result is `.empty`.
    /// Only `environment` is consulted for variables, never the process environment.
    public static func load(explicit: String?, environment: [String: String], currentDirectory: String) throws -> DogestryConfig {
        if let explicit = explicit {
            if explicit.isEmpty { throw DogestryError(.config, "the config file name is empty") }
            var full = explicit
            if explicit == "~" || explicit.hasPrefix("~/"), let home = environment["HOME"], home.hasPrefix("/") {
                full = home + explicit.dropFirst()
            } else if !explicit.hasPrefix("/") {
                full = joinPath(currentDirectory, explicit)
            }
            guard let text = try readConfigFile(full, display: explicit, mustExist: true) else {
                throw DogestryError(.config, "\(explicit): config file not found")
            }
            return try parse(text, path: explicit)
        }
        let local = joinPath(currentDirectory, fileName)
        if let text = try readConfigFile(local, display: fileName, mustExist: false) {
            return try parse(text, path: fileName)
        }
        if let dir = userConfigDirectory(environment) {
            let user = joinPath(joinPath(dir, "dogestry"), fileName)
            if let text = try readConfigFile(user, display: user, mustExist: false) {
                return try parse(text, path: user)
            }
        }
        return .empty
    }
}

/// One `[registry "HOST[:PORT]"]` section.
public struct RegistryConfig: Sendable, Equatable {
    /// Plain HTTP instead of HTTPS (a lab registry).
    public var insecure = false
    /// A CA bundle that verifies the registry's certificate.
    public var ca: String?
    /// Upload blobs in PATCH chunks of this many bytes (0: one PUT per blob).
    public var chunkSize: Int64 = 0
    public init() {}
}

/// The `[serve]` section: defaults of `dogestry serve`'s options (nil: not set).
public struct ServeConfig: Sendable, Equatable {
    /// `listen`: HOST:PORT to bind.
    /// The remote `serve` serves when the command line names none (the packaged unit's way).
    public var remote: String?
    public var listen: String?
    public var tlsCert: String?
    public var tlsKey: String?
    public var tlsClientCA: String?
    /// `tag-ttl` in seconds.
    public var tagTTL: Int?
    /// `layers`: `compatible` or `stored`.
    public var layers: String?
    public var redirect: Bool?
    /// `access-log`: an access line per request.
    public var accessLog: Bool?
    public init() {}
}

// MARK: - Schema

extension DogestryConfig {
    /// Every section and the keys it accepts (lower-case, as matched).
    static let schema: [(section: String, keys: [String])] = [
        ("remote", ["url"]),
        ("docker", ["connection", "read-image-store"]),
        ("compression", ["algorithm", "level"]),
        ("transfer", ["concurrency", "tempdir", "connect-timeout", "first-byte-timeout", "stall-timeout"]),
        ("s3", ["access-key-id", "secret-key", "session-token", "region", "endpoint", "part-size", "concurrency", "profile"]),
        ("manta", ["url", "account", "user", "key_id", "private_key", "algo", "root", "durability", "insecure", "role"]),
        ("prune", ["grace", "touch-after"]),
        ("registry", ["insecure", "ca", "chunk-size"]),
        ("serve", ["remote", "listen", "tls-cert", "tls-key", "tls-client-ca", "tag-ttl", "layers", "redirect", "access-log"]),
    ]

    /// Keys whose values are secret: never shown in a message, not even in part.
    static let secretKeys: Set<String> = ["secret-key", "session-token"]

    static let mantaAlgorithms = [
        "rsa-sha1", "rsa-sha256", "rsa-sha512", "ecdsa-sha1", "ecdsa-sha256", "ecdsa-sha512", "dsa-sha1", "dsa-sha256",
    ]

    static let s3MinPartSize: Int64 = 5 << 20
    /// S3's own limit on the size of one part.
    static let s3MaxPartSize: Int64 = 5 << 30

    /// Validates parsed entries and builds the configuration.
    /// Whole-file checks (a remote's url, the compression level's range) are made only when `complete`.
    static func build(_ entries: [ConfigEntry], path: String, complete: Bool = true) throws -> DogestryConfig {
        var cfg = DogestryConfig.empty
        cfg.path = path
        var remoteHeaderLine: [String: Int] = [:]     // first header line of each remote
        var remoteOrder: [String] = []
        var levelLine = 0
        var rawLevel: Int?

        func fail(_ line: Int, _ message: String) -> DogestryError {
            DogestryError(.config, "\(path):\(line): \(message)")
        }

        for e in entries {
            let sec = e.sectionDisplay
            func err(_ m: String) -> DogestryError { fail(e.line, m) }
            // A value is required (a bare key is only allowed for booleans).
            func value(allowEmpty: Bool = false) throws -> String {
                guard let v = e.value else { throw err("\(e.key) in \(sec) needs a value") }
                if !allowEmpty && v.isEmpty { throw err("\(e.key) in \(sec) must not be empty") }
                return v
            }
            // Shows a value in a message (never for secrets).
            func show(_ v: String) -> String { secretKeys.contains(e.key) ? "(hidden)" : quoted(v) }
            func integer(_ r: ClosedRange<Int>) throws -> Int {
                let v = try value()
                guard let n = Int(v) else { throw err("\(e.key) in \(sec) must be an integer, not \(show(v))") }
                guard r.contains(n) else { throw err("\(e.key) \(n) in \(sec) is out of range \(r.lowerBound)…\(r.upperBound)") }
                return n
            }
            func boolean() throws -> Bool {
                guard let v = e.value else { return true }
                switch v.lowercased() {
                case "true", "yes", "on", "1": return true
                case "false", "no", "off", "0", "": return false
                default: throw err("\(e.key) in \(sec) must be a boolean (true/false, yes/no, on/off, 1/0), not \(show(v))")
                }
            }
            func httpURL() throws -> String {
                let v = try value()
                guard let rest = stripScheme(v, ["http://", "https://"]), !rest.isEmpty, !rest.hasPrefix("/"),
                      !v.contains(where: { $0.isWhitespace }) else {
                    throw err("\(e.key) in \(sec) must be an http:// or https:// URL, not \(show(v))")
                }
                return v
            }
            func word() throws -> String {
                let v = try value()
                if v.contains(where: { $0.isWhitespace || $0 == "/" }) {
                    throw err("\(e.key) in \(sec) must not contain spaces or \"/\", not \(show(v))")
                }
                return v
            }

            switch e.section {
            case "remote":
                let name = e.subsection ?? ""
                if remoteHeaderLine[name] == nil { remoteHeaderLine[name] = e.headerLine; remoteOrder.append(name) }
                if e.key.isEmpty { continue }  // header marker only
                switch e.key {
                case "url": cfg.remotes[name] = try value()
                default: throw err("unknown key \(displayName(e.rawKey)) in \(sec)")
                }
            case "docker":
                switch e.key {
                case "connection":
                    let v = try value()
                    guard let rest = stripScheme(v, ["unix://", "tcp://", "http://", "https://"]), !rest.isEmpty,
                          !v.contains(where: { $0.isWhitespace }) else {
                        throw err("connection in [docker] must be unix://…, tcp://…, http://… or https://…, not \(quoted(v))")
                    }
                    cfg.dockerConnection = v
                case "read-image-store": cfg.dockerReadImageStore = try boolean()
                default: throw err("unknown key \(displayName(e.rawKey)) in \(sec)")
                }
            case "compression":
                switch e.key {
                case "algorithm":
                    let v = try value()
                    guard let c = Compression(rawValue: v.lowercased()) else {
                        throw err("unknown compression algorithm \(quoted(v)) (expected zstd, lz4, gzip or none)")
                    }
                    cfg.compression = c
                case "level":
                    let v = try value()
                    guard let n = Int(v) else {
                        throw err("compression level must be an integer, not \(quoted(v))")
                    }
                    rawLevel = n
                    levelLine = e.line
                default: throw err("unknown key \(displayName(e.rawKey)) in \(sec)")
                }
            case "transfer":
                switch e.key {
                case "concurrency": cfg.concurrency = try integer(1...64)
                case "tempdir": cfg.tempDir = try value()
                case "connect-timeout", "first-byte-timeout", "stall-timeout":
                    let seconds: Int
                    let v = try value()
                    do { seconds = try Lifetime.parseSeconds(v, option: "\(e.key) in [transfer]") } catch let d as DogestryError {
                        throw err(d.message)
                    }
                    guard seconds <= 86_400 else { throw err("\(e.key) in [transfer] is longer than a day") }
                    switch e.key {
                    case "connect-timeout": cfg.connectTimeout = seconds
                    case "first-byte-timeout": cfg.firstByteTimeout = seconds
                    default: cfg.stallTimeout = seconds
                    }
                default: throw err("unknown key \(displayName(e.rawKey)) in \(sec)")
                }
            case "s3":
                let v: String
                switch e.key {
                case "access-key-id", "secret-key", "session-token":
                    v = try value()
                    if v.contains(where: { $0.isWhitespace }) { throw err("\(e.key) in [s3] must not contain spaces") }
                case "profile": v = try value()
                case "region":
                    v = try value()
                    if !v.unicodeScalars.allSatisfy({ isASCIIAlnum($0) || $0 == "-" || $0 == "_" || $0 == "." }) {
                        throw err("region in [s3] must be a region name like eu-west-1, not \(quoted(v))")
                    }
                case "endpoint": v = try httpURL()
                case "part-size":
                    v = try value()
                    guard let n = parseSize(v) else {
                        throw err("part-size in [s3] must be a size like 16MiB (suffixes K, M, G, KiB, MiB, GiB), not \(quoted(v))")
                    }
                    guard n >= s3MinPartSize && n <= s3MaxPartSize else {
                        throw err("part-size \(v) in [s3] is out of range 5 MiB…5 GiB")
                    }
                    cfg.s3PartSize = n
                case "concurrency": _ = try integer(1...64); v = try value()
                default: throw err("unknown key \(displayName(e.rawKey)) in \(sec)")
                }
                cfg.s3[e.key] = v
            case "manta":
                var v: String
                switch e.key {
                case "url": v = try httpURL()
                case "account", "user", "key_id": v = try word()
                case "private_key", "root", "role": v = try value()
                case "algo":
                    v = try value().lowercased()
                    guard mantaAlgorithms.contains(v) else {
                        throw err("algo in [manta] must be one of \(mantaAlgorithms.joined(separator: ", ")), not \(quoted(e.value!))")
                    }
                case "durability": _ = try integer(1...6); v = e.value!
                case "insecure": v = try boolean() ? "true" : "false"
                default: throw err("unknown key \(displayName(e.rawKey)) in \(sec)")
                }
                cfg.manta[e.key] = v
            case "prune":
                let v = try value()
                let seconds: Int
                do { seconds = try Lifetime.parseDuration(v, option: "\(e.key) in [prune]") } catch let d as DogestryError {
                    throw err(d.message)
                }
                switch e.key {
                case "grace": cfg.pruneGrace = seconds
                case "touch-after": cfg.touchAfter = seconds
                default: throw err("unknown key \(displayName(e.rawKey)) in \(sec)")
                }
            case "registry":
                let host = (e.subsection ?? "").lowercased()
                guard !host.isEmpty, !host.contains("/"), !host.contains(where: { $0.isWhitespace }) else {
                    throw err("[registry] needs a host, as in [registry \"ghcr.io\"] or [registry \"127.0.0.1:5000\"]")
                }
                var r = cfg.registries[host] ?? RegistryConfig()
                switch e.key {
                case "": break
                case "insecure": r.insecure = try boolean()
                case "ca": r.ca = try value()
                case "chunk-size":
                    let v = try value()
                    guard let n = Self.parseSize(v), n >= 0 else { throw err("chunk-size in \(sec) must be a size such as 16M, not \(show(v))") }
                    r.chunkSize = n
                default: throw err("unknown key \(displayName(e.rawKey)) in \(sec)")
                }
                cfg.registries[host] = r
            case "serve":
                switch e.key {
                case "remote": cfg.serve.remote = try value()
                case "listen": cfg.serve.listen = try value()
                case "tls-cert": cfg.serve.tlsCert = try value()
                case "tls-key": cfg.serve.tlsKey = try value()
                case "tls-client-ca": cfg.serve.tlsClientCA = try value()
                case "tag-ttl":
                    let v = try value()
                    do { cfg.serve.tagTTL = try Lifetime.parseSeconds(v, option: "tag-ttl in [serve]") } catch let d as DogestryError {
                        throw err(d.message)
                    }
                case "layers":
                    let v = try value().lowercased()
                    guard ["compatible", "plain", "stored"].contains(v) else { throw err("layers in [serve] must be compatible, plain or stored, not \(show(v))") }
                    cfg.serve.layers = v
                case "redirect": cfg.serve.redirect = try boolean()
                case "access-log": cfg.serve.accessLog = try boolean()
                default: throw err("unknown key \(displayName(e.rawKey)) in \(sec)")
                }
            default:
                // The parser only yields known sections.
                throw err("unknown section \(sec)")
            }
        }

        if !complete { return cfg }
        for name in remoteOrder where cfg.remotes[name] == nil {
            throw fail(remoteHeaderLine[name] ?? 0, "[remote \(quoted(name))] has no url")
        }
        if let level = rawLevel {
            let algorithm = cfg.compression ?? .zstd
            let r = algorithm.levelRange
            guard r.contains(level) else {
                throw fail(levelLine, "compression level \(level) is out of range \(r.lowerBound)…\(r.upperBound) for \(algorithm.rawValue)")
            }
            cfg.compressionLevel = level
        }
        return cfg
    }

    /// Parses a size: digits with an optional K/M/G/KiB/MiB/GiB suffix (case-insensitive, 1024-based).
    static func parseSize(_ s: String) -> Int64? {
        let t = s.trimmingCharacters(in: .whitespaces)
        let digits = t.prefix(while: { $0.isASCII && $0.isNumber })
        guard !digits.isEmpty, let n = Int64(digits) else { return nil }
        let suffix = t.dropFirst(digits.count).trimmingCharacters(in: .whitespaces).lowercased()
        let mult: Int64
        switch suffix {
        case "": mult = 1
        case "k", "kib": mult = 1 << 10
        case "m", "mib": mult = 1 << 20
        case "g", "gib": mult = 1 << 30
        default: return nil
        }
        let (r, overflow) = n.multipliedReportingOverflow(by: mult)
        return overflow ? nil : r
    }
}

// MARK: - Files

extension DogestryConfig {
    /// The directory holding per-user configuration: `$XDG_CONFIG_HOME`, else `$HOME/.config`.
    /// A relative `XDG_CONFIG_HOME` is ignored, as the XDG specification asks.
    static func userConfigDirectory(_ env: [String: String]) -> String? {
        if let x = env["XDG_CONFIG_HOME"], x.hasPrefix("/") { return x }
        if let h = env["HOME"], h.hasPrefix("/") { return joinPath(h, ".config") }
        return nil
    }

    static func joinPath(_ a: String, _ b: String) -> String {
        if b.hasPrefix("/") { return b }
        if a.isEmpty { return b }
        return a.hasSuffix("/") ? a + b : a + "/" + b
    }

    /// The largest configuration file read (guards against e.g. `--config /dev/zero`).
    static let maxFileSize = 1 << 20

    /// Reads a configuration file. Returns nil if nothing is there; throws a one-line error naming
    /// `display` if something is there but cannot be read as a configuration file.
    static func readConfigFile(_ path: String, display: String, mustExist: Bool) throws -> String? {
        var st = stat()
        if stat(path, &st) != 0 {
            let code = errno
            var lst = stat()
            if code == ENOENT && lstat(path, &lst) != 0 { return nil }  // nothing there (a dangling symlink is an error)
            if code == ENOTDIR && !mustExist { return nil }
            throw DogestryError(.config, "\(display): cannot read config file: \(errnoString(code))")
        }
        if (st.st_mode & S_IFMT) == S_IFDIR {
            throw DogestryError(.config, "\(display): is a directory, not a config file")
        }
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        if fd < 0 { throw DogestryError(.config, "\(display): cannot read config file: \(errnoString())") }
        defer { close(fd) }
        var bytes: [UInt8] = []
        var buf = [UInt8](repeating: 0, count: 64 * 1024)
        while true {
            let n = buf.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            if n < 0 {
                if errno == EINTR { continue }
                throw DogestryError(.config, "\(display): cannot read config file: \(errnoString())")
            }
            if n == 0 { break }
            bytes.append(contentsOf: buf[0..<n])
            if bytes.count > maxFileSize { throw DogestryError(.config, "\(display): config file is larger than 1 MiB") }
        }
        guard let text = String(validating: bytes, as: UTF8.self) else {
            throw DogestryError(.config, "\(display): config file is not valid UTF-8")
        }
        return text
    }
}

// MARK: - Helpers

extension DogestryConfig {
    /// Quotes a value as messages show it.
    static func quoted(_ s: String) -> String { DogestrySync.quoted(s) }
}

/// Quotes a value for a message.
fileprivate func quoted(_ s: String) -> String {
    var out = "\""
    for c in s.unicodeScalars {
        switch c {
        case "\"": out += "\\\""
        case "\\": out += "\\\\"
        case "\n": out += "\\n"
        case "\t": out += "\\t"
        default:
            if c.value < 0x20 || c.value == 0x7F { out += "\\u{\(String(c.value, radix: 16))}" } else { out.unicodeScalars.append(c) }
        }
    }
    return out + "\""
}

/// A key or section name as shown in a message. Names far longer than any real key are not
/// shown: such a "name" is more likely a stray credential on a line of its own.
fileprivate func displayName(_ name: String) -> String {
    name.count > 32 ? "(a \(name.count)-character name, not shown)" : quoted(name)
}

private func stripScheme(_ v: String, _ schemes: [String]) -> Substring? {
    let lower = v.lowercased()
    for s in schemes where lower.hasPrefix(s) { return v.dropFirst(s.count) }
    return nil
}

private func isASCIIAlnum(_ c: Unicode.Scalar) -> Bool {
    (c >= "a" && c <= "z") || (c >= "A" && c <= "Z") || (c >= "0" && c <= "9")
}

// MARK: - Syntax

/// One `key = value` line (or, with an empty `key`, a section header), before validation.
struct ConfigEntry: Equatable {
    /// Lower-cased section name.
    var section: String
    var subsection: String?
    /// Lower-cased key; empty for a header marker.
    var key: String
    /// The key as written.
    var rawKey: String
    /// nil for a bare key (`key` without `=`).
    var value: String?
    /// The line the key is on.
    var line: Int
    /// The line of the section header the key is under.
    var headerLine: Int

    var sectionDisplay: String {
        if let s = subsection { return "[\(section) \(quoted(s))]" }
        return "[\(section)]"
    }
}

/// A git-config syntax reader. Checks section names against the schema as headers are read,
/// so that an unknown section is reported at its header.
struct ConfigFileParser {
    let s: [Unicode.Scalar]
    let path: String
    var i = 0
    var line = 1

    init(text: String, path: String) {
        var scalars: [Unicode.Scalar] = []
        scalars.reserveCapacity(text.unicodeScalars.count)
        var it = text.unicodeScalars.makeIterator()
        var pending: Unicode.Scalar? = it.next()
        if pending == "\u{FEFF}" { pending = it.next() }  // byte-order mark
        while let c = pending {
            let next = it.next()
            if c == "\r" && next == "\n" { pending = next; continue }  // CRLF
            scalars.append(c)
            pending = next
        }
        s = scalars
        self.path = path
    }

    private mutating func next() -> Unicode.Scalar? {
        guard i < s.count else { return nil }
        let c = s[i]
        i += 1
        if c == "\n" { line += 1 }
        return c
    }

    private func peek() -> Unicode.Scalar? { i < s.count ? s[i] : nil }

    private func syntax(_ m: String, line l: Int? = nil) -> DogestryError {
        DogestryError(.config, "\(path):\(l ?? line): syntax error: \(m)")
    }

    private static func isSpace(_ c: Unicode.Scalar) -> Bool {
        c == " " || c == "\t" || c == "\r" || c == "\u{0B}" || c == "\u{0C}"
    }

    private static func isAlnum(_ c: Unicode.Scalar) -> Bool { isASCIIAlnum(c) }
    private static func isLetter(_ c: Unicode.Scalar) -> Bool { (c >= "a" && c <= "z") || (c >= "A" && c <= "Z") }

    /// Reads entries up to the end or the first error (returned with the entries before it).
    mutating func parse() -> ([ConfigEntry], DogestryError?) {
        var entries: [ConfigEntry] = []
        do {
            try parse(into: &entries)
            return (entries, nil)
        } catch let e as DogestryError {
            return (entries, e)
        } catch {
            return (entries, DogestryError(.config, "\(path):\(line): \(error)"))
        }
    }

    private mutating func parse(into entries: inout [ConfigEntry]) throws {
        var section: (name: String, sub: String?, line: Int)?
        while let c = next() {
            if c == "\n" || Self.isSpace(c) { continue }
            if c == "#" || c == ";" { skipToEndOfLine(); continue }
            if c == "[" {
                let startLine = line
                let (name, sub) = try parseHeader(startLine)
                try checkSection(name, sub, line: startLine)
                section = (name, sub, startLine)
                if name == "remote" {
                    entries.append(ConfigEntry(section: name, subsection: sub, key: "", rawKey: "", value: nil,
                                               line: startLine, headerLine: startLine))
                }
                continue
            }
            if Self.isLetter(c) {
                let keyLine = line
                guard let sec = section else { throw syntax("key outside any section (add a [section] header first)") }
                var rawKey = String(c)
                while let k = peek(), Self.isAlnum(k) || k == "-" || k == "_" { rawKey.unicodeScalars.append(k); i += 1 }
                let key = rawKey.lowercased()
                let value = try parseKeyRest(secret: DogestryConfig.secretKeys.contains(key))
                if !DogestryConfig.schema.contains(where: { $0.section == sec.name && $0.keys.contains(key) }) {
                    let shown = sec.sub.map { "[\(sec.name) \(quoted($0))]" } ?? "[\(sec.name)]"
                    throw DogestryError(.config, "\(path):\(keyLine): unknown key \(displayName(rawKey)) in \(shown)")
                }
                entries.append(ConfigEntry(section: sec.name, subsection: sec.sub, key: key, rawKey: rawKey, value: value,
                                           line: keyLine, headerLine: sec.line))
                continue
            }
            throw syntax("expected a [section] header, a \"key = value\" line or a comment")
        }
    }

    private mutating func skipToEndOfLine() {
        while let c = next(), c != "\n" {}
    }

    /// Reads a header after its `[`; returns the lower-cased name and the subsection.
    private mutating func parseHeader(_ l: Int) throws -> (String, String?) {
        func syntax(_ m: String) -> DogestryError { self.syntax(m, line: l) }
        var name = ""
        while true {
            guard let c = next(), c != "\n" else { throw syntax("unterminated section header (missing \"]\")") }
            if Self.isAlnum(c) || c == "-" || c == "." { name.unicodeScalars.append(c); continue }
            if c == "]" {
                if name.isEmpty { throw syntax("empty section name") }
                return (name.lowercased(), nil)
            }
            if Self.isSpace(c) && !name.isEmpty { break }
            throw syntax("invalid character in section name (use letters, digits, \"-\" and \".\")")
        }
        while let c = peek(), Self.isSpace(c) { i += 1 }
        guard next() == "\"" else { throw syntax("expected a quoted subsection name after the section name, as in [remote \"name\"]") }
        var sub = ""
        while true {
            guard let c = next(), c != "\n" else { throw syntax("unterminated subsection name (missing closing quote)") }
            if c == "\"" { break }
            if c == "\\" {
                guard let e = next(), e != "\n" else { throw syntax("unterminated subsection name (missing closing quote)") }
                sub.unicodeScalars.append(e)  // as git does: \" and \\ (and any other \x gives x)
                continue
            }
            sub.unicodeScalars.append(c)
        }
        guard next() == "]" else { throw syntax("expected \"]\" after the subsection name") }
        return (name.lowercased(), sub)
    }

    private func checkSection(_ name: String, _ sub: String?, line l: Int) throws {
        let shown = sub.map { "[\(name) \(quoted($0))]" } ?? "[\(name)]"
        let known = DogestryConfig.schema.contains { $0.section == name }
        if name == "remote" {
            guard let sub = sub else {
                throw DogestryError(.config, "\(path):\(l): section [remote] needs a name, as in [remote \"central\"]")
            }
            let ok = sub.unicodeScalars.enumerated().allSatisfy { idx, c in
                isASCIIAlnum(c) || (idx > 0 && (c == "." || c == "_" || c == "-"))
            }
            if sub.isEmpty || !ok {
                throw DogestryError(.config, "\(path):\(l): invalid remote name \(displayName(sub)) (names must match [A-Za-z0-9][A-Za-z0-9._-]*)")
            }
            return
        }
        if name == "registry" {
            guard let sub, !sub.isEmpty, !sub.contains("/"), !sub.contains(where: { $0.isWhitespace }) else {
                throw DogestryError(.config, "\(path):\(l): section [registry] needs a host, as in [registry \"ghcr.io\"] or [registry \"127.0.0.1:5000\"]")
            }
            return
        }
        if !known || sub != nil {
            if name.count > 32 || (sub?.count ?? 0) > 32 {
                throw DogestryError(.config, "\(path):\(l): unknown section (a \(name.count + (sub?.count ?? 0))-character name, not shown)")
            }
            throw DogestryError(.config, "\(path):\(l): unknown section \(shown)")
        }
    }

    /// Reads what follows a key: nothing (a bare key, nil), or `= value`.
    private mutating func parseKeyRest(secret: Bool) throws -> String? {
        while let c = peek(), Self.isSpace(c) { i += 1 }
        guard let c = peek() else { return nil }
        if c == "\n" { return nil }
        if c == "#" || c == ";" { skipToEndOfLine(); return nil }
        if c != "=" {
            throw syntax("invalid character in key name, or missing \"=\" after the key (keys are letters, digits, \"-\" and \"_\")")
        }
        i += 1
        return try parseValue(secret: secret)
    }

    /// Reads a value after `=`, up to the end of its (possibly continued) line, as git does.
    private mutating func parseValue(secret: Bool) throws -> String {
        var value = String.UnicodeScalarView()
        var quote = false
        var comment = false
        var spaces = 0
        var quoteLine = line
        while true {
            let here = line
            guard let c = next(), c != "\n" else {
                if quote { throw syntax("unterminated quoted string (missing closing quote)", line: quoteLine) }
                break
            }
            if comment { continue }
            if Self.isSpace(c) && !quote {
                if !value.isEmpty { spaces += 1 }
                continue
            }
            if !quote && (c == "#" || c == ";") { comment = true; continue }
            for _ in 0..<spaces { value.append(" ") }
            spaces = 0
            if c == "\\" {
                guard let e = next() else { throw syntax("backslash at end of file", line: here) }
                switch e {
                case "\n": continue  // line continuation
                case "n": value.append("\n")
                case "t": value.append("\t")
                case "b": value.append("\u{08}")
                case "\"": value.append("\"")
                case "\\": value.append("\\")
                default:
                    if secret || e.value < 0x21 || e.value > 0x7E {
                        throw syntax("invalid escape sequence (valid: \\n \\t \\b \\\" \\\\)", line: here)
                    }
                    throw syntax("invalid escape sequence \\\(Character(e)) (valid: \\n \\t \\b \\\" \\\\)", line: here)
                }
                continue
            }
            if c == "\"" {
                quote.toggle()
                quoteLine = here
                continue
            }
            value.append(c)
        }
        return String(value)
    }
}
