// What the test targets share: fixture paths, scratch folders, error and tolerance assertions.
import PPFileIO
import XCTest

#if canImport(Glibc)
import Glibc
#endif

/// Paths of the committed fixtures and the built-in example.
public enum Paths {
    public static let repository: String = {
        var dir = FileOutput.directory(of: #filePath)      // Tests/PPTestSupport
        dir = FileOutput.directory(of: dir)                 // Tests
        return FileOutput.directory(of: dir)                // repository root
    }()
    public static func fixture(_ name: String) -> String { "\(repository)/Tests/Fixtures/\(name)" }
    public static let digitsZip = "\(repository)/examples/digits/digits-sit.zip"

    /// A fresh empty folder under the system temp folder, removed at the end of the test.
    public static func scratch(_ test: XCTestCase) -> String {
        var template = Array("/tmp/ppflow-test-XXXXXX".utf8CString)
        let path = template.withUnsafeMutableBufferPointer { String(cString: mkdtemp($0.baseAddress!)) }
        test.addTeardownBlock { FileOutput.removeTree(path) }
        return path
    }
}

/// The built executables, run as users and CI scripts run them (exit status, stdout, stderr).
public enum Binaries {
    /// The products folder that holds the test bundle holds the executables too.
    public static let folder: String = {
        var buffer = [CChar](repeating: 0, count: 4096)
        let n = readlink("/proc/self/exe", &buffer, buffer.count - 1)
        return FileOutput.directory(of: String(cString: Array(buffer[0..<max(n, 0)]) + [0]))
    }()

    public struct Run { public var status: Int32; public var stdout: String; public var stderr: String }

    /// Runs `tool` with `arguments` (each quoted for the shell), no standard input; output captured in `scratch`.
    public static func run(_ tool: String, _ arguments: [String], scratch: String) throws -> Run {
        let quoted = arguments.map { "'" + $0.split(separator: "'", omittingEmptySubsequences: false).joined(separator: "'\\''") + "'" }
        let raw = system("\(folder)/\(tool) \(quoted.joined(separator: " ")) >\(scratch)/out 2>\(scratch)/err </dev/null")
        return Run(status: (raw >> 8) & 0xff, stdout: String(decoding: try fileBytes("\(scratch)/out"), as: UTF8.self),
                   stderr: String(decoding: try fileBytes("\(scratch)/err"), as: UTF8.self))
    }
}

public func write(_ bytes: [UInt8], to path: String) throws {
    try FileOutput.writeFile(path, bytes: bytes)
}

/// A file's bytes (a copy; the mapping stays alive while copying).
public func fileBytes(_ path: String) throws -> [UInt8] {
    try ByteStorage(mappingFile: path).withBytes { Array($0) }
}

/// Asserts that `body` throws a PPError of `kind` whose message contains every string in `mentions`.
public func assertPPError<T>(_ kind: PPError.Kind, mentions: [String], file: StaticString = #filePath, line: UInt = #line,
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

/// The one tolerance check: relative error ‖a−b‖/‖b‖ against `tolerance`; on failure names the worst
/// element with both values. Returns the relative error so callers can report the worst tensor.
@discardableResult
public func assertClose<T: BinaryFloatingPoint>(_ actual: [T], _ expected: [T], tolerance: Double, _ what: String,
                                                file: StaticString = #filePath, line: UInt = #line) -> Double {
    guard actual.count == expected.count else {
        XCTFail("\(what): \(actual.count) values, expected \(expected.count)", file: file, line: line); return .infinity
    }
    var difference = 0.0, norm = 0.0, worst = 0, worstError = -1.0
    for i in 0..<actual.count {
        let d = Double(actual[i]) - Double(expected[i])
        difference += d * d
        norm += Double(expected[i]) * Double(expected[i])
        if !(abs(d) <= worstError) { worstError = abs(d); worst = i }
    }
    let relative = norm > 0 ? (difference / norm).squareRoot() : difference.squareRoot()
    if !(relative <= tolerance) {
        XCTFail("\(what): relative error \(relative) > \(tolerance); worst at [\(worst)]: \(actual[worst]) vs \(expected[worst]) (|d| \(worstError))",
                file: file, line: line)
    }
    return relative
}
