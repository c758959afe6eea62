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

    /// Two consecutive free ports (PORT and PORT+1, for a server and its companion, such as a
    /// registry and its token server), chosen by the kernel rather than from a fixed range that
    /// another run or the benchmarks may be using.
    public static func freePair() throws -> Int {
        for _ in 0..<64 {
            let a = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
            defer { close(a) }
            let p = try bound(a, listening: false)
            guard p < 65535 else { continue }
            let b = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
            defer { close(b) }
            if (try? bound(b, listening: false, port: p + 1)) != nil { return p }
        }
        throw LoopbackPortError(what: "find two consecutive free ports for")
    }

    private static func bound(_ fd: Int32, listening: Bool, port: Int = 0) throws -> Int {
        guard fd >= 0 else { throw LoopbackPortError(what: "socket") }
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_addr.s_addr = inet_addr("127.0.0.1")
        addr.sin_port = UInt16(port).bigEndian
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
