import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// Loopback TCP ports for tests that need nothing listening, or a listener that never answers.
public enum LoopbackPort {
    /// A port of 127.0.0.1 that was free a moment ago (bound, read back, closed): connecting
    /// to it is refused.
    public static func closed() throws -> Int {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(fd) }
        return try bound(fd, listening: false)
    }

    /// A listening socket on 127.0.0.1 that accepts (in the kernel) and never answers; the
    /// port and a closure that closes it.
    public static func silent() throws -> (port: Int, close: () -> Void) {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        do {
            let port = try bound(fd, listening: true)
            return (port, { _ = Glibc.close(fd) })
        } catch {
            close(fd)
            throw error
        }
    }

    private static func bound(_ fd: Int32, listening: Bool) throws -> Int {
        guard fd >= 0 else { throw LoopbackPortError(what: "socket") }
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_addr.s_addr = inet_addr("127.0.0.1")
        addr.sin_port = 0
        var len = socklen_t(MemoryLayout<sockaddr_in>.size)
        let ok = withUnsafeMutablePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { p in
                bind(fd, p, len) == 0 && (!listening || listen(fd, 16) == 0) && getsockname(fd, p, &len) == 0
            }
        }
        guard ok else { throw LoopbackPortError(what: "bind") }
        return Int(UInt16(bigEndian: addr.sin_port))
    }
}

public struct LoopbackPortError: Error, CustomStringConvertible {
    public let what: String
    public var description: String { "cannot \(what) a loopback TCP socket: \(String(cString: strerror(errno)))" }
}

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
