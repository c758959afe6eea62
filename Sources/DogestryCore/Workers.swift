import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// The one worker-pool primitive: S3's part uploads and ranged downloads, verify's and prune's
/// parallel reads all run on it. Workers are plain threads (they block on the network, so the
/// pool is sized by what should be in flight, not by the number of cores).
public enum Workers {
    /// Starts `threads` named threads, each running `body(workerIndex)`; returns at once.
    public static func start(threads: Int, name: String, _ body: @escaping @Sendable (Int) -> Void) {
        for w in 0..<max(1, threads) {
            let t = Thread { body(w) }
            t.name = name
            t.start()
        }
    }

    /// Runs `body(context, i)` for every `i` in `0..<count` on up to `threads` threads, each with
    /// its own context made once by `makeContext` (a connection, say); returns the results in
    /// order. The first error stops the handing out of items and is rethrown once every worker
    /// has stopped.
    public static func map<C, R>(_ count: Int, threads: Int, name: String = "dogestry-worker",
                                 context makeContext: () -> C, _ body: (C, Int) throws -> R) throws -> [R] {
        if count == 0 { return [] }
        let n = max(1, min(threads, count))
        if n == 1 {
            let c = makeContext()
            return try (0..<count).map { try body(c, $0) }
        }
        let state = MapState<R>(count: count)
        try withoutActuallyEscaping(body) { body in
            try withoutActuallyEscaping(makeContext) { makeContext in
                // pthreads, joined before the closures go out of scope: nothing outlives this call.
                let job = Job {
                    let c = makeContext()
                    while let i = state.next() {
                        do { state.done(i, try body(c, i)) } catch { state.fail(error) }
                    }
                }
                var threads: [pthread_t] = []
                for _ in 0..<n {
                    var t = pthread_t()
                    let arg = Unmanaged.passRetained(job).toOpaque()
                    if pthread_create(&t, nil, { arg in
                        let job = Unmanaged<Job>.fromOpaque(arg!).takeRetainedValue()
                        job.run()
                        return nil
                    }, arg) == 0 {
                        threads.append(t)
                    } else {
                        Unmanaged<Job>.fromOpaque(arg).release()
                    }
                }
                if threads.isEmpty { job.run() }   // no thread could be made: do it here
                for t in threads { pthread_join(t, nil) }
                if let e = state.failure { throw e }
            }
        }
        return state.results.map { $0! }
    }

    /// `map` over the elements of `items`, with no per-worker context.
    public static func map<T, R>(_ items: [T], threads: Int, _ body: (T) throws -> R) throws -> [R] {
        try map(items.count, threads: threads, context: { () }) { _, i in try body(items[i]) }
    }
}

/// The loop every thread of a `map` runs.
private final class Job {
    let run: () -> Void
    init(_ run: @escaping () -> Void) { self.run = run }
}

private final class MapState<R>: @unchecked Sendable {
    private let lock = NSLock()
    private var nextIndex = 0
    private let count: Int
    private(set) var results: [R?]
    private(set) var failure: Error?

    init(count: Int) { self.count = count; results = Array(repeating: nil, count: count) }

    func next() -> Int? {
        lock.lock(); defer { lock.unlock() }
        guard failure == nil, nextIndex < count else { return nil }
        nextIndex += 1
        return nextIndex - 1
    }
    func done(_ i: Int, _ r: R) { lock.lock(); results[i] = r; lock.unlock() }
    func fail(_ e: Error) { lock.lock(); if failure == nil { failure = e }; lock.unlock() }
}

/// Hands a value to another thread that the compiler cannot prove safe to share: the value is
/// either guarded by its own lock or used by one thread at a time (the hand-over is the only
/// synchronisation it needs, as with a value moved into a new thread before it starts).
/// A mutable value handed from one thread to another; the handing over (a semaphore, a pipe, a
/// thread's end) must order the accesses.
public final class Box<T>: @unchecked Sendable {
    public var value: T
    public init(_ value: T) { self.value = value }
}

public struct Unchecked<T>: @unchecked Sendable {
    public let value: T
    public init(_ value: T) { self.value = value }
}
