import XCTest
final class PlaceholderDogestryRemotesTests: XCTestCase { func testNothing() {} }
