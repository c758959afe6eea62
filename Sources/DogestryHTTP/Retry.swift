import DogestryCore
import Foundation

/// The one retry policy of every network remote: which answers and failures are transient,
/// exponential backoff with jitter, the server's `Retry-After`, and an attempt budget.
///
/// Transport failures are judged by their typed cause (`DogestryError.cause`), never by message
/// text; responses by status, plus whatever a remote adds (S3's `SlowDown` error codes).
public struct RetryPolicy: Sendable {
    /// Retries after the first attempt (the budget of one request, or of one resumed body).
    public var maxRetries: Int
    /// The first retry waits between half and all of this many seconds; each further one doubles it.
    public var baseDelay: Double
    /// No wait is longer than this, whatever the backoff or `Retry-After` says.
    public var maxDelay: Double

    public init(maxRetries: Int = 5, baseDelay: Double = 0.2, maxDelay: Double = 20) {
        self.maxRetries = maxRetries; self.baseDelay = baseDelay; self.maxDelay = maxDelay
    }

    /// Statuses worth another attempt: request timeout, too many requests, and server errors
    /// other than "not implemented" and "version not supported".
    public static func isTransientStatus(_ s: Int) -> Bool {
        s == 408 || s == 429 || (s >= 500 && s != 501 && s != 505)
    }

    /// Seconds to wait before retry number `attempt` (0-based): the server's `Retry-After`
    /// (seconds or an HTTP date) when it gave one, else the backoff with jitter; at most `maxDelay`.
    public func delay(_ attempt: Int, retryAfter: String? = nil) -> Double {
        if let ra = retryAfter?.trimmingCharacters(in: .whitespaces), !ra.isEmpty {
            if let s = Double(ra), s >= 0 { return min(s, maxDelay) }
            if let d = HTTPDate.parse(ra) { return min(max(0, d.timeIntervalSinceNow), maxDelay) }
        }
        let cap = min(maxDelay, baseDelay * pow(2.0, Double(min(attempt, 30))))
        return cap > 0 ? Double.random(in: (cap / 2)...cap) : 0
    }

    /// Sleeps before retry number `attempt`.
    public func backoff(_ attempt: Int, retryAfter: String? = nil) {
        let d = delay(attempt, retryAfter: retryAfter)
        if d > 0 { usleep(UInt32(d * 1_000_000)) }
    }

    /// Runs `attempt` (given its 0-based number) until it returns a response that `retryable`
    /// does not flag, or the budget is spent; the last response is returned whatever its status.
    /// A transient transport failure is retried too; once the budget is spent it is rethrown
    /// with `what` and the attempt count in front, its cause kept.
    public func run<T>(what: @autoclosure () -> String, retryable: (HTTPResponse) -> Bool = { RetryPolicy.isTransientStatus($0.status) },
                       _ attempt: (Int) throws -> (HTTPResponse, T)) throws -> (HTTPResponse, T) {
        var n = 0
        while true {
            do {
                let (resp, value) = try attempt(n)
                if !resp.isSuccess && n < maxRetries && retryable(resp) && RetryBudget.takeShared() {
                    backoff(n, retryAfter: resp.header("retry-after")); n += 1
                    continue
                }
                return (resp, value)
            } catch let e as DogestryError where e.cause?.isTransient == true {
                if n >= maxRetries || !RetryBudget.takeShared() {
                    throw DogestryError(e.kind, "\(what()): \(e.message) (after \(n + 1) attempts)", cause: e.cause)
                }
                backoff(n); n += 1
            }
        }
    }
}

/// HTTP dates (RFC 9110's IMF-fixdate, e.g. `Tue, 01 Dec 2026 10:00:00 GMT`), for `Date`,
/// `Last-Modified` and `Retry-After` headers.
/// Retries that nested retry loops draw from together. A resumed body (`ResumingBody`) reopens
/// itself through the remote's own retrying GET; while it does, that GET's retries come out of
/// the body's budget, so a body gets the policy's retries in all, not retries of retries.
public final class RetryBudget: @unchecked Sendable {  // (guarded by `lock`)
    private let lock = NSLock()
    private var left: Int
    public init(_ retries: Int) { left = retries }

    /// Takes one retry; false when none is left.
    public func take() -> Bool {
        lock.lock(); defer { lock.unlock() }
        guard left > 0 else { return false }
        left -= 1
        return true
    }

    /// Retries left.
    public var remaining: Int { lock.lock(); defer { lock.unlock() }; return left }

    /// Sets the retries left (progress was made: the budget starts again).
    public func refill(_ retries: Int) { lock.lock(); left = retries; lock.unlock() }

    private static let key = "dogestry.retry-budget"

    /// Runs `body` with every `RetryPolicy.run` on this thread drawing its retries from `self`.
    public func shared<T>(_ body: () throws -> T) rethrows -> T {
        let dict = Thread.current.threadDictionary
        let outer = dict[Self.key]
        dict[Self.key] = self
        defer { dict[Self.key] = outer }
        return try body()
    }

    /// Takes a retry from the budget shared on this thread, if one is; true when there is none.
    static func takeShared() -> Bool {
        guard let b = Thread.current.threadDictionary[key] as? RetryBudget else { return true }
        return b.take()
    }
}

public enum HTTPDate {
    private static let formatter: DateFormatter = {
        let f = DateFormatter()
        f.locale = Locale(identifier: "en_US_POSIX")
        f.timeZone = TimeZone(identifier: "GMT")
        f.dateFormat = "EEE, dd MMM yyyy HH:mm:ss 'GMT'"
        return f
    }()
    private static let lock = NSLock()

    public static func format(_ d: Date) -> String {
        lock.lock(); defer { lock.unlock() }
        return formatter.string(from: d)
    }

    public static func parse(_ s: String) -> Date? {
        lock.lock(); defer { lock.unlock() }
        return formatter.date(from: s.trimmingCharacters(in: .whitespaces))
    }
}

/// Names of HTTP statuses, for one-line errors when a server gives no code of its own.
public enum HTTPStatus {
    public static func name(_ s: Int) -> String {
        switch s {
        case 301: return "PermanentRedirect"
        case 307: return "TemporaryRedirect"
        case 400: return "BadRequest"
        case 401: return "Unauthorized"
        case 403: return "Forbidden"
        case 404: return "NotFound"
        case 405: return "MethodNotAllowed"
        case 408: return "RequestTimeout"
        case 409: return "Conflict"
        case 410: return "Gone"
        case 412: return "PreconditionFailed"
        case 416: return "RangeNotSatisfiable"
        case 429: return "TooManyRequests"
        case 500: return "InternalError"
        case 501: return "NotImplemented"
        case 502: return "BadGateway"
        case 503: return "ServiceUnavailable"
        case 504: return "GatewayTimeout"
        default: return "HTTP \(s)"
        }
    }
}
