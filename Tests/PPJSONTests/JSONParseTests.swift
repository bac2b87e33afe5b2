import XCTest
@testable import PPJSON
