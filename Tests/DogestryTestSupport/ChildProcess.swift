import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// Stopping a test's helper process without `Process.waitUntilExit`, which can wait forever on
/// Linux when the exit is noticed late: SIGTERM, then SIGKILL, each followed by a bounded poll.
public enum ChildProcess {
    public static func stop(_ p: Process, grace: Double = 5) {
        let pid = p.processIdentifier
        guard pid > 0, running(p) else { return }
        kill(pid, SIGTERM)
        if waitGone(p, seconds: grace) { return }
        kill(pid, SIGKILL)
        _ = waitGone(p, seconds: 5)
    }

    private static func waitGone(_ p: Process, seconds: Double) -> Bool {
        let deadline = Date().addingTimeInterval(seconds)
        while Date() < deadline {
            if !running(p) { return true }
            usleep(20_000)
        }
        return !running(p)
    }

    /// Still running: Foundation says so and /proc shows it alive (not gone, not a zombie).
    static func running(_ p: Process) -> Bool {
        guard p.isRunning else { return false }
        guard let stat = try? String(contentsOfFile: "/proc/\(p.processIdentifier)/stat", encoding: .utf8),
              let close = stat.lastIndex(of: ")") else { return false }
        let state = stat[stat.index(after: close)...].trimmingCharacters(in: .whitespaces).first
        return state != "Z" && state != "X"
    }
}
