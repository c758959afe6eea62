import DogestryCore
import DogestryHTTP
import Foundation

/// The project's proxy (`scripts/lib/proxy.py http`) between a remote and its real server:
/// counts requests and arms faults (a TCP reset, a FIN, a stall) at a byte offset of a response.
public final class FaultProxy {
    public static let scriptPath = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
        .appendingPathComponent("../../scripts/lib/proxy.py").standardized.path

    let process: Process?
    public let base: String
    private let control: HTTPClient

    /// Starts a proxy to `upstream` (`http://host:port`).
    /// Talks to a proxy someone else started (`base`: its `http(s)://127.0.0.1:PORT`; `caFile`
    /// trusts its certificate).
    public init(attachingTo base: String, caFile: String? = nil) {
        process = nil
        self.base = base
        control = HTTPClient(options: HTTPTransportOptions(caBundle: caFile, connectTimeout: 5, lowSpeedTimeout: 10))
    }

    /// Starts a proxy to `upstream` (`http(s)://host:port`); with `tls` (a certificate, its key
    /// and the CA that signed it) it speaks HTTPS to its clients.
    public init(upstream: String, tls: (cert: String, key: String, ca: String)? = nil) throws {
        let process = Process()
        self.process = process
        control = HTTPClient(options: HTTPTransportOptions(caBundle: tls?.ca, connectTimeout: 5, lowSpeedTimeout: 10))
        let out = Pipe()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = ["python3", Self.scriptPath, "http", upstream] + (tls.map { ["0", "--tls", $0.cert, $0.key] } ?? [])
        process.standardOutput = out
        process.standardError = FileHandle.nullDevice
        try process.run()
        let line = out.fileHandleForReading.availableData
        guard let port = Int(String(decoding: line, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)) else {
            process.terminate()
            throw DogestryError.io("the fault proxy did not start")
        }
        base = (tls == nil ? "http" : "https") + "://127.0.0.1:\(port)"
    }

    deinit { process?.terminate(); process?.waitUntilExit() }

    public struct Stats: Decodable {
        public var requests: Int
        public var bytesSent: Int64
        public var bytesReceived: Int64
        public var byMethod: [String: Int]
        public var faults: Int
        public var stalling: Int
        /// Requests by the scheme of their `Authorization` header ("none" without one).
        public var authorization: [String: Int]
        /// Requests whose query carries a signature (presigned URLs).
        public var presigned: Int
        /// Responses by status code.
        public var byStatus: [String: Int]
    }

    @discardableResult
    public func call(_ path: String) throws -> Stats {
        let (resp, body) = try control.fetch(HTTPRequest(url: base + path))
        guard resp.status == 200 else { throw DogestryError.io("proxy \(path): HTTP \(resp.status)") }
        return try JSONDecoder().decode(Stats.self, from: Data(body))
    }

    public var stats: Stats { get throws { try call("/__stats") } }
    public func reset() throws { try call("/__reset") }

    /// Arms `kind` (reset, close, stall) after `after` body bytes of the next `times` GETs whose
    /// request line contains `match`.
    public func arm(_ kind: String, after: Int, times: Int = 1, match: String = "GET ", seconds: Double = 60) throws {
        let m = match.addingPercentEncoding(withAllowedCharacters: .alphanumerics) ?? ""
        try call("/__fault?kind=\(kind)&after=\(after)&times=\(times)&match=\(m)&seconds=\(seconds)")
    }

    /// Answers the next `times` requests whose request line contains `match` (HEAD too) with
    /// `status`, a registry error body with `error`, and `Retry-After` when given.
    public func armStatus(_ status: Int, match: String, times: Int = 1, skip: Int = 0, retryAfter: Int? = nil, error: String = "UNAVAILABLE") throws {
        let m = match.addingPercentEncoding(withAllowedCharacters: .alphanumerics) ?? ""
        try call("/__fault?kind=status&code=\(status)&times=\(times)&skip=\(skip)&match=\(m)&error=\(error)" + (retryAfter.map { "&retry_after=\($0)" } ?? ""))
    }

    /// Holds the next `times` matching requests `seconds` before forwarding them unchanged.
    public func armDelay(_ seconds: Double, match: String, times: Int = 1, skip: Int = 0) throws {
        let m = match.addingPercentEncoding(withAllowedCharacters: .alphanumerics) ?? ""
        try call("/__fault?kind=delay&seconds=\(seconds)&times=\(times)&skip=\(skip)&match=\(m)")
    }

    /// Forwards the next `times` matching mounts as plain upload starts (a registry declining them).
    public func armStripMount(match: String = "mount=", times: Int = 100) throws {
        let m = match.addingPercentEncoding(withAllowedCharacters: .alphanumerics) ?? ""
        try call("/__fault?kind=strip-mount&times=\(times)&match=\(m)")
    }

    /// Sets query parameter `name=value` on the next `times` matching requests.
    public func armParam(_ name: String, _ value: String, match: String, times: Int = 100) throws {
        let m = match.addingPercentEncoding(withAllowedCharacters: .alphanumerics) ?? ""
        try call("/__fault?kind=param&name=\(name)&value=\(value)&times=\(times)&match=\(m)")
    }
}
