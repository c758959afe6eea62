import DogestryCore
import DogestryHTTP
import Foundation
import XCTest

/// A resumed body and the retrying GETs that reopen it share one budget of retries.
final class RetryBudgetTests: XCTestCase {
    /// Gives `bytes` bytes, then fails as a dropped connection does.
    final class DroppingSource: ByteSource {
        var left: Int
        let drops: Bool
        init(_ bytes: Int, drops: Bool = true) { left = bytes; self.drops = drops }
        func read(into buffer: UnsafeMutableRawBufferPointer) throws -> Int {
            guard left > 0 else {
                if drops { throw DogestryError(.remote, "connection reset", cause: .reset) }
                return 0
            }
            let n = min(left, buffer.count)
            for i in 0..<n { buffer[i] = 7 }
            left -= n
            return n
        }
    }

    /// Every reopen is answered 503 first, then 206 with a body that drops at once: without a
    /// shared budget each of the 3 resumes would retry its own 503s (6 GETs, 4 "attempts");
    /// with it the GETs stop when the body's 3 retries are spent, whoever spent them.
    func testReopeningGETsDrawFromTheBodysBudget() throws {
        let policy = RetryPolicy(maxRetries: 3, baseDelay: 0, maxDelay: 0)
        var gets = 0
        let first = HTTPResponse(status: 200, headers: ["content-length": "100"])
        let body = ResumingBody(response: first, body: DroppingSource(10), policy: policy, what: "blob x") { from, _ in
            XCTAssertEqual(from, 10)
            var answers = 0
            let (resp, b): (HTTPResponse, ByteSource) = try policy.run(what: "GET blob x") { _ in
                gets += 1; answers += 1
                if answers == 1 { return (HTTPResponse(status: 503), DroppingSource(0)) }
                return (HTTPResponse(status: 206, headers: ["content-range": "bytes 10-99/100"]), DroppingSource(0))
            }
            guard resp.isSuccess else { throw DogestryError(.remote, "GET blob x: HTTP \(resp.status)") }
            return (resp, b)
        }
        var buf = [UInt8](repeating: 0, count: 64)
        var message = ""
        XCTAssertThrowsError(try buf.withUnsafeMutableBytes { p in while try body.read(into: p) > 0 {} }) { message = "\($0)" }
        XCTAssertEqual(gets, 3, "one budget of 3 retries for the resumes and their GETs: \(message)")
        XCTAssertTrue(message.contains("HTTP 503"), message)
    }

    /// Progress starts the budget again; a budget of 0 shared on a thread stops retries there.
    func testProgressRefillsAndASharedBudgetBinds() throws {
        let policy = RetryPolicy(maxRetries: 1, baseDelay: 0, maxDelay: 0)
        var reopens = 0
        // 10 bytes, drop; resume gives 10 more, drop; and so on: each drop follows progress.
        let body = ResumingBody(response: HTTPResponse(status: 200, headers: ["content-length": "50"]), body: DroppingSource(10),
                                policy: policy, what: "blob y") { from, _ in
            reopens += 1
            return (HTTPResponse(status: 206, headers: ["content-range": "bytes \(from)-49/50"]), DroppingSource(10, drops: from + 10 < 50))
        }
        var total = 0
        var buf = [UInt8](repeating: 0, count: 64)
        try buf.withUnsafeMutableBytes { p in
            while true { let n = try body.read(into: p); if n == 0 { break }; total += n }
        }
        XCTAssertEqual(total, 50)
        XCTAssertEqual(reopens, 4, "a drop after progress is one retry in a row, however many came before")

        var calls = 0
        XCTAssertThrowsError(try RetryBudget(0).shared {
            try policy.run(what: "GET z") { _ -> (HTTPResponse, Void) in
                calls += 1
                throw DogestryError(.remote, "reset", cause: .reset)
            }
        })
        XCTAssertEqual(calls, 1, "no retry is left in the shared budget")
    }
}
