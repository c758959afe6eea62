import XCTest
final class PlaceholderDogestryIntegrationTests: XCTestCase { func testNothing() {} }
