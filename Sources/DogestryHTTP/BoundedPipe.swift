import DogestryCore
import Foundation

/// A bounded in-memory pipe between two threads.
///
/// One thread writes into `writer` (a `ByteSink`), another reads from `reader` (a `ByteSource`).
/// At most `capacity` bytes are buffered: a writer that gets ahead of the reader blocks.
/// `writer.close()` (or `finish()`) ends the stream: the reader sees end of data once the buffer
/// is drained. `fail(_:)` from either side wakes both sides; every later read or write throws that
/// error (the first error given wins).
public final class BoundedPipe: @unchecked Sendable {  // (its state is guarded by a condition)
    public let writer: ByteSink
    public let reader: ByteSource
    let state: PipeState

    public init(capacity: Int) {
        precondition(capacity > 0, "BoundedPipe capacity must be positive")
        state = PipeState(capacity: capacity)
        writer = PipeWriter(state)
        reader = PipeReader(state)
    }

    /// Fails the pipe: blocked and later reads and writes throw `error`.
    public func fail(_ error: Error) { state.fail(error) }

    /// Ends the stream from the writing side (same as `writer.close()`).
    public func finish() { state.closeWriter() }

    /// The error the pipe failed with, if any.
    public var failure: Error? { state.cond.lock(); defer { state.cond.unlock() }; return state.error }

    /// Bytes currently buffered.
    public var buffered: Int { state.cond.lock(); defer { state.cond.unlock() }; return state.count }
}

final class PipeState: @unchecked Sendable {
    let cond = NSCondition()
    let capacity: Int
    let buf: UnsafeMutableRawPointer
    var head = 0          // read position
    var count = 0         // bytes buffered
    var writerClosed = false
    var error: Error?

    init(capacity: Int) {
        self.capacity = capacity
        buf = UnsafeMutableRawPointer.allocate(byteCount: capacity, alignment: 16)
    }
    deinit { buf.deallocate() }

    func fail(_ e: Error) {
        cond.lock()
        if error == nil { error = e }
        cond.broadcast()
        cond.unlock()
    }

    func closeWriter() {
        cond.lock()
        writerClosed = true
        cond.broadcast()
        cond.unlock()
    }

    func write(_ bytes: UnsafeRawBufferPointer) throws {
        var off = 0
        let total = bytes.count
        guard total > 0, let src = bytes.baseAddress else { return }
        cond.lock()
        defer { cond.unlock() }
        while off < total {
            while count == capacity && error == nil { cond.wait() }
            if let e = error { throw e }
            if writerClosed { throw DogestryError.io("write to a closed pipe") }
            // Copy into the free region (up to two segments of the ring).
            var n = min(total - off, capacity - count)
            while n > 0 {
                let tail = (head + count) % capacity
                let seg = min(n, capacity - tail)
                (buf + tail).copyMemory(from: src + off, byteCount: seg)
                count += seg; off += seg; n -= seg
            }
            cond.broadcast()
        }
    }

    func read(into buffer: UnsafeMutableRawBufferPointer) throws -> Int {
        guard buffer.count > 0, let dst = buffer.baseAddress else { return 0 }
        cond.lock()
        defer { cond.unlock() }
        while count == 0 && error == nil && !writerClosed { cond.wait() }
        if let e = error { throw e }
        if count == 0 { return 0 }
        var n = min(buffer.count, count)
        var out = 0
        while n > 0 {
            let seg = min(n, capacity - head)
            (dst + out).copyMemory(from: buf + head, byteCount: seg)
            head = (head + seg) % capacity
            count -= seg; out += seg; n -= seg
        }
        if count == 0 { head = 0 }
        cond.broadcast()
        return out
    }
}

final class PipeWriter: ByteSink {
    let state: PipeState
    init(_ s: PipeState) { state = s }
    func write(_ bytes: UnsafeRawBufferPointer) throws { try state.write(bytes) }
    func close() throws {
        state.closeWriter()
        state.cond.lock(); defer { state.cond.unlock() }
        if let e = state.error { throw e }
    }
}

final class PipeReader: ByteSource {
    let state: PipeState
    init(_ s: PipeState) { state = s }
    func read(into buffer: UnsafeMutableRawBufferPointer) throws -> Int { try state.read(into: buffer) }
}

/// A stream whose bytes `produce` writes, on a thread of its own, into a bounded pipe.
///
/// An error `produce` throws is thrown by the read that meets it; the read that returns the end
/// has waited for `produce` to return, so whatever it recorded is then visible to the reader.
/// `stop()` (or dropping the stream) makes the producer's next write throw and waits for it.
public final class ProducedStream: ByteSource {
    private let pipe: BoundedPipe
    private let done = DispatchSemaphore(value: 0)
    private let state = ProducerState()
    private var joined = false

    public init(capacity: Int, name: String, _ produce: @escaping (ByteSink) throws -> Void) {
        let pipe = BoundedPipe(capacity: capacity)
        self.pipe = pipe
        let work = Unchecked(produce), state = self.state, done = self.done
        let t = Thread {
            defer { done.signal() }
            do {
                try work.value(pipe.writer)
                try pipe.writer.close()
            } catch {
                state.record(error)
                pipe.fail(error)
            }
        }
        t.name = name
        t.start()
    }

    deinit { _ = stop() }

    public func read(into buffer: UnsafeMutableRawBufferPointer) throws -> Int {
        let n = try pipe.reader.read(into: buffer)
        if n == 0 { join() }
        return n
    }

    /// Stops the producer and waits for it; returns the error it failed with on its own (not the
    /// one stopping it caused), if any.
    public func stop() -> Error? {
        state.stopping()
        pipe.fail(DogestryError(.aborted, "the stream's reader stopped"))
        join()
        return state.error
    }

    private func join() {
        if !joined { done.wait(); joined = true }
    }
}

/// What a producer failed with, ignoring the failure a stop caused.
final class ProducerState: @unchecked Sendable {  // (guarded by `lock`)
    private let lock = NSLock()
    private var stopped = false
    private var failure: Error?
    func stopping() { lock.lock(); stopped = true; lock.unlock() }
    func record(_ e: Error) { lock.lock(); if !stopped && failure == nil { failure = e }; lock.unlock() }
    var error: Error? { lock.lock(); defer { lock.unlock() }; return failure }
}
