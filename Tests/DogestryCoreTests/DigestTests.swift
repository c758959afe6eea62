import DogestryCore
import Foundation
import XCTest

final class DigestTests: XCTestCase {
    let emptyHex = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    let abcHex = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"

    func testSHA256Vectors() throws {
        XCTAssertEqual(Digest.of([UInt8]()).hex, emptyHex)
        XCTAssertEqual(Digest.of("").description, "sha256:" + emptyHex)
        XCTAssertEqual(Digest.of("abc").hex, abcHex)
        XCTAssertEqual(Digest.of(Data("abc".utf8)).hex, abcHex)
        XCTAssertEqual(Digest.of("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq").hex,
                       "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1")
        XCTAssertEqual(Digest.of("abc").short, "ba7816bf8f01")
    }

    func testStreamingEqualsOneShot() throws {
        let data = TS.testBytes(1_000_003, seed: 11)
        let oneShot = Digest.of(data)
        for piece in [1, 63, 64, 65, 4096, 1 << 20] {
            let h = SHA256Hasher()
            var off = 0
            while off < data.count {
                let n = min(piece, data.count - off)
                if piece == 1 && off > 10_000 {  // keep the 1-byte case quick
                    h.update(Array(data[off...])); off = data.count; break
                }
                h.update(Array(data[off..<(off + n)]))
                off += n
            }
            XCTAssertEqual(h.finalize(), oneShot, "pieces of \(piece)")
        }
        let hs = HashingSink(MemorySink(limit: 2 << 20))
        try hs.write(Array(data[0..<500_000]))
        try hs.write(Array(data[500_000...]))
        XCTAssertEqual(hs.digest(), oneShot)
        XCTAssertEqual(hs.count, Int64(data.count))
        let src = HashingSource(MemorySource(data))
        XCTAssertEqual(try src.drain(), Int64(data.count))
        XCTAssertEqual(src.hasher.finalize(), oneShot)
        XCTAssertEqual(hexString([0x00, 0x0f, 0xa0, 0xff]), "000fa0ff")
    }

    func testParsing() throws {
        let d = try Digest(parsing: "sha256:" + abcHex)
        XCTAssertEqual(d.hex, abcHex)
        XCTAssertEqual(d, Digest.of("abc"))
        XCTAssertEqual(try Digest(hex: abcHex), d)
        TS.assertError(try Digest(parsing: "sha256:" + abcHex.uppercased()), contains: "is not a sha256 digest", kind: .invalidInput)
        TS.assertError(try Digest(parsing: "sha256:" + abcHex.dropLast()), kind: .invalidInput)
        TS.assertError(try Digest(parsing: "sha256:" + abcHex + "0"), kind: .invalidInput)
        TS.assertError(try Digest(parsing: "sha256:abc"), kind: .invalidInput)
        TS.assertError(try Digest(parsing: "sha512:" + abcHex + abcHex), kind: .invalidInput)
        TS.assertError(try Digest(parsing: "md5:900150983cd24fb0d6963f7d28e17f72"), kind: .invalidInput)
        TS.assertError(try Digest(parsing: abcHex), kind: .invalidInput)
        TS.assertError(try Digest(parsing: "SHA256:" + abcHex), kind: .invalidInput)
        TS.assertError(try Digest(parsing: "sha256:" + String(repeating: "g", count: 64)), kind: .invalidInput)
        TS.assertError(try Digest(parsing: "", what: "config digest"), contains: "config digest \"\"", kind: .invalidInput)
        TS.assertError(try Digest(hex: "xyz"), kind: .invalidInput)
    }

    func testCodableAndOrdering() throws {
        let d = Digest.of("abc")
        let json = try JSONEncoder().encode([d])
        XCTAssertEqual(String(decoding: json, as: UTF8.self), "[\"sha256:\(abcHex)\"]")
        XCTAssertEqual(try JSONDecoder().decode([Digest].self, from: json), [d])
        XCTAssertThrowsError(try JSONDecoder().decode([Digest].self, from: Data("[\"sha256:ABC\"]".utf8)))
        XCTAssertLessThan(try Digest(hex: abcHex), try Digest(hex: emptyHex))
    }

    func testChainIDs() throws {
        // Hand-computed: A = sha256("a"), B = sha256("b"), C = sha256("c");
        // chain1 = sha256("sha256:A sha256:B"), chain2 = sha256("sha256:chain1 sha256:C") (with printf | sha256sum).
        let a = try Digest(parsing: "sha256:ca978112ca1bbdcafac231b39a23dc4da786eff8147c4e72b9807785afee48bb")
        let b = try Digest(parsing: "sha256:3e23e8160039594a33894f6564e1b1348bbd7a0088d42c4acb73eeaed59c009d")
        let c = try Digest(parsing: "sha256:2e7d2c03a9507ae265ecf5b5356885a53393a2029d241394997265a1a25aefc6")
        XCTAssertEqual([a, b, c], [Digest.of("a"), Digest.of("b"), Digest.of("c")])
        let chain = Digest.chainIDs([a, b, c])
        XCTAssertEqual(chain.map(\.hex), [
            a.hex,
            "51c0c8ace48498d6f5fee6b0592cc06f2da0f3cbe09c5a34a97dce85c3889676",
            "2fce7f8ce91bcf0a1428b36e1024639fdbd9469eea762dba98aa749631885106",
        ])
        XCTAssertEqual(Digest.chainIDs([]), [])
        XCTAssertEqual(Digest.chainIDs([b]), [b])
    }

    func testMD5() {
        let h = MD5Hasher()
        Array("a".utf8).withUnsafeBytes { h.update($0) }
        Array("bc".utf8).withUnsafeBytes { h.update($0) }
        XCTAssertEqual(hexString(h.finalize()), "900150983cd24fb0d6963f7d28e17f72")
        XCTAssertEqual(hexString(MD5Hasher().finalize()), "d41d8cd98f00b204e9800998ecf8427e")
    }
}
