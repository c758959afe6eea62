import DogestryCore
import Foundation

/// Something a transfer reports while it runs.
public enum ProgressEvent: Sendable {
    /// A layer (or blob) transfer starts; `total` is its size when known.
    case begin(id: String, action: String, total: Int64?)
    /// `bytes` more were processed for `id`.
    case advance(id: String, bytes: Int64)
    /// The transfer of `id` finished with a short summary ("pushed 12.1 MB", "present").
    case end(id: String, summary: String)
    /// A line of information.
    case info(String)
    /// A warning that does not stop the command.
    case warning(String)
}

/// Receives progress events; implementations must be thread-safe.
public protocol ProgressReporter: AnyObject, Sendable {
    func report(_ event: ProgressEvent)
}

/// Ignores everything.
public final class SilentProgress: ProgressReporter {
    public init() {}
    public func report(_ event: ProgressEvent) {}
}

/// A sink wrapper reporting bytes as they pass, in steps of at least 4 MiB.
final class ProgressSink: ByteSink {
    let inner: ByteSink
    let id: String
    let progress: ProgressReporter
    var pending: Int64 = 0
    init(_ inner: ByteSink, id: String, progress: ProgressReporter) { self.inner = inner; self.id = id; self.progress = progress }
    func write(_ b: UnsafeRawBufferPointer) throws {
        try inner.write(b)
        pending += Int64(b.count)
        if pending >= 4 << 20 { progress.report(.advance(id: id, bytes: pending)); pending = 0 }
    }
    func close() throws {
        if pending > 0 { progress.report(.advance(id: id, bytes: pending)); pending = 0 }
        try inner.close()
    }
}

/// Human-readable byte counts (decimal units, as docker prints them).
public func formatBytes(_ n: Int64) -> String {
    let units = ["B", "kB", "MB", "GB", "TB"]
    var v = Double(n), i = 0
    while v >= 1000 && i < units.count - 1 { v /= 1000; i += 1 }
    return i == 0 ? "\(n) B" : String(format: "%.1f %@", v, units[i])
}

/// Reports bytes read through it as progress, in steps of at least 4 MiB.
final class ProgressSource: ByteSource {
    let inner: ByteSource
    let id: String
    let progress: ProgressReporter
    var pending: Int64 = 0
    init(_ inner: ByteSource, id: String, progress: ProgressReporter) { self.inner = inner; self.id = id; self.progress = progress }
    func read(into buffer: UnsafeMutableRawBufferPointer) throws -> Int {
        let n = try inner.read(into: buffer)
        pending += Int64(n)
        if pending >= 4 << 20 || (n == 0 && pending > 0) { progress.report(.advance(id: id, bytes: pending)); pending = 0 }
        return n
    }
}
