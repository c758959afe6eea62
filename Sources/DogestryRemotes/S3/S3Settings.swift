import DogestryCore
import DogestryHTTP
import Foundation

/// Where and how to reach an S3 repository: from an `s3://BUCKET[/PREFIX][?region=R&endpoint=URL]`
/// URL, the `[s3]` config section and the AWS environment, in that order of precedence.
public struct S3Settings: Sendable {
    public var bucket: String
    public var prefix: String
    public var region: String
    /// An explicit endpoint (path-style addressing), nil for AWS's own.
    public var endpoint: String?
    public var options: S3Options
    /// `[s3]` as written (credentials among them), for the credential chain.
    public var section: [String: String]

    /// Resolves `url` with `section` (`[s3]`), `partSize` (`[s3] part-size` in bytes),
    /// `concurrency` (`[s3] concurrency`, else `[transfer] concurrency`) and `environment`.
    public static func resolve(url: String, section: [String: String], partSize: Int64?, transferConcurrency: Int?,
                               timeouts: HTTPTimeouts, environment: [String: String], home: String) throws -> S3Settings {
        let parsed = try S3Remote.parse(url: url)
        let endpoint = parsed.endpoint ?? section["endpoint"] ?? environment["AWS_ENDPOINT_URL_S3"] ?? environment["AWS_ENDPOINT_URL"]
        guard let region = parsed.region ?? resolveAWSRegion(explicit: section["region"], environment: environment, home: home)
                ?? (endpoint != nil ? "us-east-1" : nil) else {
            throw DogestryError(.config, "remote \(url): no AWS region (add ?region=…, [s3] region, or AWS_REGION)")
        }
        var options = S3Options()
        if let p = partSize { options.partSize = p }
        if let c = section["concurrency"].flatMap({ Int($0) }) ?? transferConcurrency { options.concurrency = c }
        options.caBundle = environment["AWS_CA_BUNDLE"]
        options.timeouts = timeouts
        return S3Settings(bucket: parsed.bucket, prefix: parsed.prefix, region: region, endpoint: endpoint,
                          options: options, section: section)
    }
}

extension S3Remote {
    /// The remote `settings` describe, with credentials from the AWS chain (`[s3]` first).
    public convenience init(settings s: S3Settings, environment: [String: String], home: String) throws {
        let creds = AWSCredentialChain(explicit: s.section, environment: environment, home: home)
        try self.init(bucket: s.bucket, prefix: s.prefix, region: s.region, endpoint: s.endpoint,
                      credentials: creds, options: s.options)
    }
}
