import Foundation

/// Runs a call that must not block (opening a FIFO, say) on a thread of its own: a regression
/// fails the test after `seconds` instead of hanging the suite.
public enum Watchdog {
    /// `body`'s result (or its error) when it returns within `seconds`; nil when it did not, after
    /// `release` ran (something that unblocks it, so the thread does not stay stuck).
    public static func run<T>(seconds: Double, release: () -> Void = {}, _ body: @escaping @Sendable () throws -> T) -> Result<T, Error>? {
        let box = WatchdogBox<T>()
        let done = DispatchSemaphore(value: 0)
        let t = Thread {
            box.result = Result { try body() }
            done.signal()
        }
        t.start()
        if done.wait(timeout: .now() + seconds) == .timedOut {
            release()
            _ = done.wait(timeout: .now() + 5)
            return nil
        }
        return box.result
    }
}

/// The result of a watched call, handed from its thread (read only after the semaphore).
final class WatchdogBox<T>: @unchecked Sendable {
    var result: Result<T, Error>?
}
