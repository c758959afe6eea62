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

    /// Waits at most `timeout` seconds for `p` to exit and returns its exit status (128 + the
    /// signal for a killed process); nil on timeout. The exit is seen through /proc and
    /// `waitpid` as well as Foundation's own notice, which on Linux can come late or never.
    public static func wait(_ p: Process, timeout: Double) -> Int32? {
        let pid = p.processIdentifier
        let deadline = Date().addingTimeInterval(timeout)
        while Date() < deadline {
            if !p.isRunning { return p.terminationStatus }
            var st: Int32 = 0
            let r = waitpid(pid, &st, WNOHANG)
            if r == pid { return (st & 0x7f) == 0 ? (st >> 8) & 0xff : 128 + (st & 0x7f) }
            if r < 0 && errno == ECHILD {
                // Foundation reaped it: its status follows.
                let until = Date().addingTimeInterval(5)
                while p.isRunning && Date() < until { usleep(10_000) }
                return p.isRunning ? nil : p.terminationStatus
            }
            usleep(20_000)
        }
        return nil
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
