import PPTensor
import XCTest

#if canImport(Glibc)
import Glibc
#endif

/// Paths of the committed fixtures and the built-in example.
enum Paths {
    static let repository: String = {
        var dir = FileOutput.directory(of: #filePath)      // Tests/PPConvertTests
        dir = FileOutput.directory(of: dir)                 // Tests
        return FileOutput.directory(of: dir)                // repository root
    }()
    static func fixture(_ name: String) -> String { "\(repository)/Tests/Fixtures/\(name)" }
    static let digitsZip = "\(repository)/examples/digits/digits-sit.zip"

    /// A fresh empty folder under the system temp folder, removed at the end of the test.
    static func scratch(_ test: XCTestCase) -> String {
        var template = Array("/tmp/ppflow-test-XXXXXX".utf8CString)
        let path = template.withUnsafeMutableBufferPointer { String(cString: mkdtemp($0.baseAddress!)) }
        test.addTeardownBlock { FileOutput.removeTree(path) }
        return path
    }
}

func write(_ bytes: [UInt8], to path: String) throws {
    try FileOutput.writeFile(path, bytes: bytes)
}

/// Asserts that `body` throws a PPError of `kind` whose message contains every string in `mentions`.
func assertPPError<T>(_ kind: PPError.Kind, mentions: [String], file: StaticString = #filePath, line: UInt = #line,
                      _ body: () throws -> T) {
    do {
        _ = try body()
        XCTFail("expected a \(kind) error mentioning \(mentions)", file: file, line: line)
    } catch let error as PPError {
        XCTAssertEqual(error.kind, kind, "\(error)", file: file, line: line)
        for m in mentions { XCTAssertTrue(error.description.contains(m), "'\(error)' does not mention '\(m)'", file: file, line: line) }
    } catch {
        XCTFail("unexpected error \(error)", file: file, line: line)
    }
}

/// A file's bytes (a copy; the mapping stays alive while copying).
func fileBytes(_ path: String) throws -> [UInt8] {
    try ByteStorage(mappingFile: path).withBytes { Array($0) }
}
