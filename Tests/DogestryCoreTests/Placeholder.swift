import XCTest
final class PlaceholderDogestryCoreTests: XCTestCase { func testNothing() {} }
