import DogestryCore
import DogestryRemotes
import Foundation

/// Turns a REMOTE argument into a `Remote`: a config alias, `file:///path`, or a plain path.
/// (`s3://` and `manta://` remotes plug in here.)
public enum RemoteResolver {
    public static func open(_ spec: String, config: DogestryConfig, environment: [String: String] = ProcessInfo.processInfo.environment) throws -> Remote {
        var url = spec
        if let aliased = config.remotes[spec] { url = aliased }
        if url.hasPrefix("file://") {
            let rest = String(url.dropFirst(7))
            guard rest.hasPrefix("/") else {
                throw DogestryError.invalid("remote \(url): file URLs need an absolute path (file:///path)")
            }
            return try LocalRemote(path: rest.removingPercentEncoding ?? rest)
        }
        if let scheme = url.range(of: "://").map({ String(url[..<$0.lowerBound]) }) {
            throw DogestryError(.unsupported, "remote \(url): \(scheme):// remotes are not supported yet")
        }
        if !url.contains("/") && !url.hasPrefix(".") && !FS.exists(url) {
            let known = config.remotes.keys.sorted()
            throw DogestryError.notFound("remote \"\(url)\" is neither a directory nor an alias in \(config.path ?? "any dogestry.cfg")" +
                                         (known.isEmpty ? "" : " (aliases: \(known.joined(separator: ", ")))"))
        }
        return try LocalRemote(path: url)
    }
}
