import DogestryCore
@testable import DogestryEngine
import Foundation
import XCTest

/// `TarSplitLine` reads tar-split's flat JSON lines without a general JSON parser: what it reads
/// must be what JSON says (checked against Foundation's encoder and decoder), and every shape
/// tar-split does not write is refused, never misread.
final class TarSplitLineTests: XCTestCase {
    func parse(_ s: String) throws -> TarSplitLine? {
        let b = Array(s.utf8)
        return try b.withUnsafeBufferPointer { try TarSplitLine($0) }
    }

    func testNamesDecodeAsJSONSaysForEveryKindOfCharacter() throws {
        var rng = SystemRandomNumberGenerator()
        let pool: [Character] = ["a", "/", "\"", "\\", "\n", "\t", "\u{01}", "\u{1f}", "é", "€", "😀", "<", "&", "\u{2028}", " ", "."]
        for _ in 0..<500 {
            let name = String((0..<Int.random(in: 1...24, using: &rng)).map { _ in pool.randomElement(using: &rng)! })
            // Foundation's encoder escapes / and control characters; Go's escapes < > & and U+2028.
            let encoded = String(decoding: try JSONEncoder().encode(name), as: UTF8.self)
            let goStyle = encoded.replacingOccurrences(of: "<", with: "\\u003c").replacingOccurrences(of: "&", with: "\\u0026")
                .replacingOccurrences(of: "\u{2028}", with: "\\u2028")
            for text in [encoded, goStyle] {
                let line = try XCTUnwrap(try parse(#"{"type":1,"name":\#(text),"size":7,"payload":"AAAAAAAAAAA=","position":3}"#))
                guard case .file(let path, let size) = try line.entry() else { return XCTFail("not a file entry") }
                XCTAssertEqual(path, Array(name.utf8), text)
                XCTAssertEqual(size, 7)
            }
        }
        // A character beyond the BMP written as a surrogate pair.
        let pair = try XCTUnwrap(try parse(#"{"type":1,"name":"x\ud83d\ude00","size":0}"#))
        guard case .file(let path, _) = try pair.entry() else { return XCTFail("not a file entry") }
        XCTAssertEqual(path, Array("x😀".utf8))
    }

    func testPayloadsAndRawNamesDecodeAsFoundationDoes() throws {
        for n in 0..<40 {
            let bytes = (0..<n).map { _ in UInt8.random(in: 0...255) }
            let b64 = Data(bytes).base64EncodedString()
            let seg = try XCTUnwrap(try parse(#"{"type":2,"payload":"\#(b64)","position":0}"#))
            guard case .segment(let got) = try seg.entry() else { return XCTFail("not a segment") }
            XCTAssertEqual(got, bytes)
            XCTAssertEqual(try seg.payloadLength(), n)
            XCTAssertEqual(Base64Bytes.decode(Array(b64.utf8)), bytes)
        }
        let raw = try XCTUnwrap(try parse(#"{"name_raw":"ZP8uYmlu","size":4,"type":1,"name":"d\ufffd.bin"}"#))
        guard case .file(let path, _) = try raw.entry() else { return XCTFail("not a file entry") }
        XCTAssertEqual(path, [0x64, 0xff, 0x2e, 0x62, 0x69, 0x6e], "name_raw wins over name")
        guard case .segment(let empty) = try XCTUnwrap(try parse(#" { "type" : 2 , "payload" : null , "x" : true, "y": false } "#)).entry() else {
            return XCTFail("not a segment")
        }
        XCTAssertEqual(empty, [])
        XCTAssertNil(try parse("   \r"), "a blank line is no entry")
    }

    func testShapesTarSplitDoesNotWriteAreRefused() {
        let bad = [
            #"{"type":2,"payload":"AA=="}x"#,             // trailing bytes
            #"{"type":2,"payload":{"a":1}}"#,              // nesting
            #"{"type":1,"name":"a","size":1.5}"#,          // a fraction
            #"{"type":1,"name":"a","size":1e3}"#,          // an exponent
            #"{"type":1,"name":"a","size":99999999999999999999}"#,  // overflow
            #"{"type":"1","name":"a"}"#,                   // a string type
            #"{"type":1,"name":5}"#,                       // a number name
            #"{"name":"a","size":1}"#,                     // no type
            #"{"type":1,"name":"a"#,                       // unterminated
            #"{"type":1,"name":"\ud83d"}"#,                // a lone surrogate
            #"{"type":1,"name":"\ude00"}"#,
            #"{"type":1,"name":"\x"}"#,                    // an unknown escape
            "{\"type\":1,\"name\":\"a\u{01}\"}",           // a raw control character
            #"{"type":1 "name":"a"}"#,                     // no comma
            #"["type",1]"#,
            #"{"type":1,"name":"a",}"#,                    // a trailing comma
        ]
        for s in bad {
            XCTAssertThrowsError(try parse(s), s) { e in XCTAssertTrue(e is LayerStoreUnusable, "\(s): \(e)") }
        }
        let entries = [
            (#"{"type":2,"payload":"A==="}"#, "unreadable payload"),
            (#"{"type":2,"payload":"AB"}"#, "unreadable payload"),
            (#"{"type":2,"payload":"A*=="}"#, "unreadable payload"),
            (#"{"type":2,"payload":"AA=A"}"#, "unreadable payload"),
            (#"{"type":1,"name_raw":"%%%%","size":1}"#, "unreadable name_raw"),
            (#"{"type":1,"size":1}"#, "without a name"),
            (#"{"type":1,"name":"a","size":-1}"#, "negative size"),
            (#"{"type":3}"#, "unknown type 3"),
        ]
        for (s, why) in entries {
            XCTAssertThrowsError(try XCTUnwrap(try parse(s)).entry(), s) { e in
                XCTAssertTrue((e as? LayerStoreUnusable)?.reason.contains(why) == true, "\(s): \(e)")
            }
        }
    }
}
