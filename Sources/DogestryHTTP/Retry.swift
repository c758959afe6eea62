import DogestryCore
import Foundation

/// Exponential backoff with jitter for requests to object stores.
public struct RetryPolicy: Sendable {
    public var maxRetries: Int
    /// The first retry waits between half and all of this many seconds; each further one doubles it (cap 20 s).
    public var baseDelay: Double

    public init(maxRetries: Int = 5, baseDelay: Double = 0.2) { self.maxRetries = maxRetries; self.baseDelay = baseDelay }

    /// Sleeps before retry number `attempt` (0-based).
    public func backoff(_ attempt: Int) {
        let cap = min(20.0, baseDelay * pow(2.0, Double(attempt)))
        let d = Double.random(in: (cap / 2)...max(cap, cap / 2))
        if d > 0 { usleep(UInt32(d * 1_000_000)) }
    }

    /// A transport failure worth retrying: a timeout or a dropped connection.
    public static func isTransient(_ e: DogestryError) -> Bool {
        e.message.hasPrefix("timeout talking to ") || e.message.hasPrefix("connection to ")
    }

    /// Runs `attempt` until it returns a response that `retryable` does not flag, or retries run out.
    /// Transient transport errors are retried too; the last one is rethrown with `what` and the count.
    public func run<T>(what: String, retryable: (HTTPResponse) -> Bool,
                       _ attempt: () throws -> (HTTPResponse, T)) throws -> (HTTPResponse, T) {
        var n = 0
        while true {
            do {
                let (resp, value) = try attempt()
                if !resp.isSuccess && n < maxRetries && retryable(resp) { backoff(n); n += 1; continue }
                return (resp, value)
            } catch let e as DogestryError where Self.isTransient(e) {
                if n >= maxRetries { throw DogestryError(e.kind, "\(what): \(e.message) (after \(n + 1) attempts)") }
                backoff(n); n += 1
            }
        }
    }
}
