import XCTest

/// Relative error ‖a−b‖/‖b‖ with the worst element named, the one tolerance check of these tests.
func assertClose(_ actual: [Float], _ expected: [Float], tolerance: Double, _ what: String,
                 file: StaticString = #filePath, line: UInt = #line) {
    guard actual.count == expected.count else {
        XCTFail("\(what): \(actual.count) values, expected \(expected.count)", file: file, line: line); return
    }
    var difference = 0.0, norm = 0.0, worst = 0, worstError = -1.0
    for i in 0..<actual.count {
        let d = Double(actual[i]) - Double(expected[i])
        difference += d * d
        norm += Double(expected[i]) * Double(expected[i])
        if abs(d) > worstError { worstError = abs(d); worst = i }
    }
    let relative = (difference / max(norm, 1e-300)).squareRoot()
    if !(relative <= tolerance) {
        XCTFail("\(what): relative error \(relative) > \(tolerance); worst at [\(worst)]: \(actual[worst]) vs \(expected[worst])",
                file: file, line: line)
    }
}

/// Deterministic pseudo-random values (SplitMix64), so failures reproduce.
struct SeededValues {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> Float {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        z ^= z >> 31
        return Float(Double(z >> 11) / Double(1 << 53)) * 2 - 1
    }
    mutating func values(_ count: Int, scale: Float = 1) -> [Float] { (0..<count).map { _ in next() * scale } }
}
