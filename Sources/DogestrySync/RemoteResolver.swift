import DogestryCore
import DogestryRemotes
import Foundation

/// Turns a REMOTE argument into a `Remote`: a config alias, `file:///path`, `s3://…`, a plain
/// path, or an `http(s)://` pull-ticket URL (a read-only `TicketRemote`; needs no config and no
/// credentials), or `manta://HOST/ACCOUNT/stor/PATH`.
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
        if url.hasPrefix("s3://") { return try openS3(url, config: config, environment: environment) }
        if url.hasPrefix("manta://") {
            let home = environment["HOME"] ?? NSHomeDirectory()
            return try MantaRemote(settings: MantaSettings.resolve(remoteURL: url, config: config.manta, environment: environment, home: home))
        }
        if SignedURL.isTicketURL(url) { return try TicketRemote.fetch(url, environment: environment) }
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

    /// `s3://bucket/prefix?region=R&endpoint=URL`; credentials from the AWS chain (config [s3] first).
    static func openS3(_ url: String, config: DogestryConfig, environment: [String: String]) throws -> Remote {
        let parsed = try S3Remote.parse(url: url)
        let home = environment["HOME"] ?? NSHomeDirectory()
        let endpoint = parsed.endpoint ?? config.s3["endpoint"] ?? environment["AWS_ENDPOINT_URL_S3"] ?? environment["AWS_ENDPOINT_URL"]
        guard let region = parsed.region ?? resolveAWSRegion(explicit: config.s3["region"], environment: environment, home: home)
                ?? (endpoint != nil ? "us-east-1" : nil) else {
            throw DogestryError(.config, "remote \(url): no AWS region (add ?region=…, [s3] region, or AWS_REGION)")
        }
        var options = S3Options()
        if let p = config.s3PartSize { options.partSize = p }
        if let c = config.s3["concurrency"].flatMap({ Int($0) }) ?? config.concurrency { options.concurrency = c }
        options.caBundle = environment["AWS_CA_BUNDLE"]
        let creds = AWSCredentialChain(explicit: config.s3, environment: environment, home: home)
        return try S3Remote(bucket: parsed.bucket, prefix: parsed.prefix, region: region, endpoint: endpoint,
                            credentials: creds, options: options)
    }
}
