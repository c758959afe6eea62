import DogestryCore
import Foundation

/// Where a Docker Engine API (Docker Engine or Podman's compatible service) listens.
public struct EngineAddress: CustomStringConvertible, Equatable, Sendable {
    public enum Endpoint: Equatable, Sendable {
        /// A unix socket path.
        case unix(String)
        /// A TCP host (name, IPv4, or IPv6 without brackets) and port.
        case tcp(host: String, port: Int)
    }

    public var endpoint: Endpoint
    /// The scheme as written: "unix", "tcp", "http" or "https".
    public var scheme: String
    /// Talk TLS (https://, or tcp:// with DOCKER_TLS_VERIFY).
    public var tls: Bool
    /// PEM files for TLS: CA bundle to verify the engine with, client certificate and key.
    public var caCert: String?
    public var clientCert: String?
    public var clientKey: String?
    /// Whether the text parsed named a port.
    var explicitPort = false

    public static let defaultSocket = "unix:///var/run/docker.sock"

    /// Parses "unix:///var/run/docker.sock", "tcp://host:2376", "http://host:port", "https://host:port",
    /// or a bare "host:port" (taken as tcp://). Without a port, tcp:// uses 2375, http:// 80, https:// 443.
    public init(parsing text: String) throws {
        let s = text.trimmingCharacters(in: .whitespaces)
        func bad(_ why: String) -> DogestryError {
            DogestryError(.config, "engine address \(EngineAddress.quote(s)): \(why)")
        }
        guard !s.isEmpty else { throw DogestryError(.config, "engine address is empty") }
        caCert = nil; clientCert = nil; clientKey = nil
        var rest: Substring
        if let r = s.range(of: "://") {
            scheme = s[..<r.lowerBound].lowercased()
            rest = s[r.upperBound...]
        } else {
            scheme = "tcp"
            rest = Substring(s)
        }
        switch scheme {
        case "unix":
            guard rest.hasPrefix("/"), rest.count > 1 else { throw bad("needs an absolute socket path (unix:///path)") }
            endpoint = .unix(String(rest))
            tls = false
            return
        case "tcp", "http", "https":
            tls = scheme == "https"
        case "ssh", "npipe", "fd":
            throw DogestryError(.unsupported, "engine address \(EngineAddress.quote(s)): \(scheme):// is not supported (use unix://, tcp://, http:// or https://)")
        default:
            throw bad("unknown scheme \(EngineAddress.quote(scheme))")
        }
        // Authority: host[:port], then optionally "/" and nothing else.
        if let slash = rest.firstIndex(of: "/") {
            guard rest[slash...] == "/" else { throw bad("a path is not supported") }
            rest = rest[..<slash]
        }
        guard !rest.isEmpty else { throw bad("missing host") }
        guard !rest.contains("@"), !rest.contains("?"), !rest.contains("#") else { throw bad("unexpected characters") }
        var host: Substring
        var portText: Substring?
        if rest.hasPrefix("[") {
            guard let close = rest.firstIndex(of: "]") else { throw bad("unterminated IPv6 address") }
            host = rest[rest.index(after: rest.startIndex)..<close]
            let after = rest[rest.index(after: close)...]
            if !after.isEmpty {
                guard after.hasPrefix(":") else { throw bad("unexpected text after the IPv6 address") }
                portText = after.dropFirst()
            }
        } else if let colon = rest.lastIndex(of: ":") {
            host = rest[..<colon]
            portText = rest[rest.index(after: colon)...]
            guard !host.contains(":") else { throw bad("put IPv6 addresses in brackets") }
        } else {
            host = rest
        }
        guard !host.isEmpty else { throw bad("missing host") }
        var port: Int
        if let p = portText {
            guard let n = Int(p), n > 0, n < 65536 else { throw bad("invalid port \(EngineAddress.quote(String(p)))") }
            port = n
            explicitPort = true
        } else {
            port = scheme == "https" ? 443 : scheme == "http" ? 80 : 2375
        }
        endpoint = .tcp(host: String(host), port: port)
    }

    /// Precedence: `flag` (--host), then DOCKER_HOST, then the config's `[docker] connection`, then
    /// unix:///var/run/docker.sock. With DOCKER_TLS_VERIFY set (non-empty, not "0"), tcp:// and https://
    /// addresses use TLS with ca.pem, cert.pem and key.pem from DOCKER_CERT_PATH (default ~/.docker).
    public static func resolve(flag: String?, environment: [String: String], config: String?) throws -> EngineAddress {
        func given(_ s: String?) -> String? {
            guard let t = s?.trimmingCharacters(in: .whitespaces), !t.isEmpty else { return nil }
            return t
        }
        let text = given(flag) ?? given(environment["DOCKER_HOST"]) ?? given(config) ?? defaultSocket
        var a = try EngineAddress(parsing: text)
        let verify = environment["DOCKER_TLS_VERIFY"].map { !$0.isEmpty && $0 != "0" } ?? false
        if verify, case .tcp = a.endpoint, a.scheme != "http" {
            var dir = given(environment["DOCKER_CERT_PATH"]) ?? {
                let home = given(environment["HOME"]) ?? NSHomeDirectory()
                return (home as NSString).appendingPathComponent(".docker")
            }()
            if dir.hasPrefix("~/"), let home = given(environment["HOME"]) {
                dir = (home as NSString).appendingPathComponent(String(dir.dropFirst(2)))
            }
            a.tls = true
            a.caCert = (dir as NSString).appendingPathComponent("ca.pem")
            a.clientCert = (dir as NSString).appendingPathComponent("cert.pem")
            a.clientKey = (dir as NSString).appendingPathComponent("key.pem")
            if a.scheme == "tcp", !a.explicitPort, case .tcp(let h, _) = a.endpoint {
                a.endpoint = .tcp(host: h, port: 2376)  // tcp:// without a port means the TLS port
            }
        }
        return a
    }

    /// "unix:///path", "tcp://host:port", "https://host:port"…
    public var description: String {
        switch endpoint {
        case .unix(let p): return "unix://" + p
        case .tcp(let h, let p): return "\(scheme)://\(EngineAddress.hostForURL(h)):\(p)"
        }
    }

    /// The base URL requests go to (http://localhost for unix sockets).
    public var baseURL: String {
        switch endpoint {
        case .unix: return "http://localhost"
        case .tcp(let h, let p): return "\(tls ? "https" : "http")://\(EngineAddress.hostForURL(h)):\(p)"
        }
    }

    public var socketPath: String? {
        if case .unix(let p) = endpoint { return p }
        return nil
    }

    static func hostForURL(_ h: String) -> String { h.contains(":") ? "[\(h)]" : h }

    static func quote(_ s: String) -> String {
        let clipped = s.count > 80 ? String(s.prefix(77)) + "..." : s
        return "\"" + clipped.unicodeScalars.map { $0.value < 32 || $0.value == 127 ? "?" : String($0) }.joined() + "\""
    }
}
