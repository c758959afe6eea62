import DogestryCore
import DogestrySync
import Foundation

/// Plain one-line events, for CI logs and pipes.
final class LineProgress: ProgressReporter, @unchecked Sendable {
    let lock = NSLock()
    func report(_ event: ProgressEvent) {
        let line: String?
        switch event {
        case .begin, .advance: line = nil
        case .end(let id, let summary): line = "\(id): \(summary)"
        case .info(let s): line = s
        case .warning(let s): line = "warning: \(s)"
        }
        guard let line else { return }
        lock.lock(); defer { lock.unlock() }
        try? FileHandle.standardError.write(contentsOf: Data((line + "\n").utf8))
    }
}

/// Warnings only (on standard error), for `--json` runs whose standard output is the report.
final class WarningsOnlyProgress: ProgressReporter, @unchecked Sendable {
    let lock = NSLock()
    func report(_ event: ProgressEvent) {
        guard case .warning(let s) = event else { return }
        lock.lock(); defer { lock.unlock() }
        try? FileHandle.standardError.write(contentsOf: Data(("warning: " + s + "\n").utf8))
    }
}

/// Per-layer progress bars (bytes, rate) redrawn in place on a terminal.
final class TerminalProgress: ProgressReporter, @unchecked Sendable {
    struct Bar { var action: String; var total: Int64?; var done: Int64; var start: Date }
    let lock = NSLock()
    var bars: [(String, Bar)] = []
    var drawn = 0

    func report(_ event: ProgressEvent) {
        lock.lock(); defer { lock.unlock() }
        switch event {
        case .begin(let id, let action, let total):
            bars.removeAll { $0.0 == id }
            bars.append((id, Bar(action: action, total: total, done: 0, start: Date())))
        case .advance(let id, let bytes):
            if let i = bars.firstIndex(where: { $0.0 == id }) { bars[i].1.done += bytes }
        case .end(let id, let summary):
            bars.removeAll { $0.0 == id }
            emit("\(id): \(summary)")
        case .info(let s): emit(s)
        case .warning(let s): emit("warning: \(s)")
        }
        redraw()
    }

    private func emit(_ line: String) {
        clear()
        try? FileHandle.standardError.write(contentsOf: Data((line + "\n").utf8))
    }

    private func clear() {
        var s = ""
        for _ in 0..<drawn { s += "\u{1B}[1A\u{1B}[2K" }
        drawn = 0
        if !s.isEmpty { try? FileHandle.standardError.write(contentsOf: Data(s.utf8)) }
    }

    private func redraw() {
        clear()
        var s = ""
        for (id, b) in bars {
            let secs = max(Date().timeIntervalSince(b.start), 0.001)
            let rate = formatBytes(Int64(Double(b.done) / secs)) + "/s"
            if let t = b.total, t > 0 {
                let frac = min(Double(b.done) / Double(t), 1)
                let width = 30, fill = Int(frac * Double(width))
                s += "\(id): \(b.action) [\(String(repeating: "=", count: fill))\(String(repeating: " ", count: width - fill))] \(formatBytes(b.done))/\(formatBytes(t)) \(rate)\n"
            } else {
                s += "\(id): \(b.action) \(formatBytes(b.done)) \(rate)\n"
            }
        }
        drawn = bars.count
        if !s.isEmpty { try? FileHandle.standardError.write(contentsOf: Data(s.utf8)) }
    }
}
