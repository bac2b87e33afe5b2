import Foundation
import XCTest
import PPTensor

enum Fixtures {
    static func path(_ name: String) -> String {
        let here = URL(fileURLWithPath: #filePath)
        return here.deletingLastPathComponent().deletingLastPathComponent().appendingPathComponent("Fixtures").appendingPathComponent(name).path
    }
}

/// The one tolerance check: relative error ‖a−b‖/‖b‖ against `tolerance`; on failure names the worst
/// element with both values. Returns the relative error so callers can report the worst tensor.
@discardableResult
func assertClose<T: BinaryFloatingPoint>(_ actual: [T], _ expected: [T], tolerance: Double, _ what: String,
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

/// Deterministic pseudo-random values (SplitMix64), so failures reproduce.
struct SeededValues {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> Double {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        z ^= z >> 31
        return Double(z >> 11) / Double(1 << 53) * 2 - 1
    }
    mutating func floats(_ count: Int, scale: Double = 1) -> [Float] { (0..<count).map { _ in Float(next() * scale) } }
}
