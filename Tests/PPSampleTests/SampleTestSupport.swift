import XCTest
import PPTensor
import PPSafetensors
import PPTorchFormat

/// ‖actual − expected‖ / ‖expected‖ <= tolerance, naming the worst element on failure.
func assertRelativeClose(_ actual: [Float], _ expected: [Float], _ tolerance: Double, _ what: String,
                         file: StaticString = #filePath, line: UInt = #line) {
    guard actual.count == expected.count else {
        XCTFail("\(what): \(actual.count) values, expected \(expected.count)", file: file, line: line); return
    }
    var squaredError = 0.0, squaredNorm = 0.0, worst = 0, worstError = -1.0
    for i in actual.indices {
        let d = Double(actual[i]) - Double(expected[i])
        squaredError += d * d
        squaredNorm += Double(expected[i]) * Double(expected[i])
        if !(abs(d) <= worstError) { worstError = abs(d); worst = i }
    }
    let relative = (squaredError / max(squaredNorm, 1e-300)).squareRoot()
    if !(relative <= tolerance) {
        XCTFail("\(what): relative error \(relative) > \(tolerance); worst [\(worst)] \(actual[worst]) vs \(expected[worst])",
                file: file, line: line)
    }
}

enum SampleFixtures {
    static let folder: String = {
        var path = "\(#filePath)"
        for _ in 0..<2 { path = String(path[..<path.lastIndex(of: "/")!]) }
        return path + "/Fixtures"
    }()

    static func safetensors(_ name: String) throws -> TensorDict { try SafetensorsFile.open(folder + "/" + name).tensors }

    /// A bare torch.save state dict.
    static func torchStateDict(_ name: String) throws -> TensorDict {
        let path = folder + "/" + name
        guard let dict = try TorchCheckpoint.read(path: path).stateDicts().first(where: { $0.path == "" })?.tensors else {
            throw PPError(.badInput, file: path, "no bare state dict")
        }
        return dict
    }
}

/// `count` values of a fixed, non-trivial pattern in [-1, 1] (no RNG, so tests read the same everywhere).
func pattern(_ count: Int, seed: Int = 1) -> [Float] {
    (0..<count).map { i in Float(sin(Double(i * 7 + seed * 13) * 0.37)) }
}
