import XCTest
import PPModel
@testable import PPSample

final class BenchmarkArithmeticTests: XCTestCase {
    /// The fixture shape: C=4, S=8, p=2, D=64, depth 2, MLP 256, learn_sigma. Counted by hand:
    /// full level, 16 tokens: patch 32768 + time MLP 40960 + 2 blocks × 1687552 + final 16384 + 65536.
    /// square level, 4 tokens of 16 channels: 32768 + 40960 + 2 × 446464 + 16384 + 65536.
    func testForwardFLOPsCountEveryMatrixProduct() {
        let config = ModelConfig(inChannels: 4, inputSize: 8, patchSize: 2, hiddenSize: 64, depth: 2, numHeads: 4, numClasses: 10, levels: 3)
        XCTAssertEqual(SampleBenchmark.forwardFLOPs(config: config, level: 2, latentSide: 8), 3_530_752)
        XCTAssertEqual(SampleBenchmark.forwardFLOPs(config: config, level: 0, latentSide: 8), 1_048_576)
        // width level, 8 tokens of 8 channels: patch 32768 + 40960 + 2 × (196608 + 8192 + 8192 + 65536
        // + 524288 + 49152) + 16384 + 65536.
        XCTAssertEqual(SampleBenchmark.forwardFLOPs(config: config, level: 1, latentSide: 8), 1_859_584)
    }

    func testFLOPRatioWeightsLevelsByTheirShareOfEulerSteps() {
        // 8 Euler steps evaluate t = 0, 1/8, ..., 7/8: five at t <= 0.5 (level 0), three above.
        let config = ModelConfig(inChannels: 4, inputSize: 8, patchSize: 2, hiddenSize: 64, depth: 2, numHeads: 4, numClasses: 10, levels: 2)
        let average = SampleBenchmark.eulerAverageFLOPs(config: config, steps: 8, latentSide: 8)
        XCTAssertEqual(average, (5 * 1_048_576 + 3 * 3_530_752) / 8.0)
    }

    func testReleasedShapesGiveThePaperScaleRatios() {
        // With many steps the shares approach 1/2 (2 levels) and 1/2, 1/4, 1/4 (3 levels); attention makes
        // the coarse levels cheaper than a quarter, so the ideal speedups exceed 1.6 and 2.
        for name in ["S/2", "B/2"] {
            let full = SampleBenchmark.forwardFLOPs(config: SampleBenchmark.config(name, levels: 1), level: 0, latentSide: 32)
            let two = full / SampleBenchmark.eulerAverageFLOPs(config: SampleBenchmark.config(name, levels: 2), steps: 1000, latentSide: 32)
            let three = full / SampleBenchmark.eulerAverageFLOPs(config: SampleBenchmark.config(name, levels: 3), steps: 1000, latentSide: 32)
            XCTAssertGreaterThan(two, 1.55)
            XCTAssertLessThan(two, 2)
            XCTAssertGreaterThan(three, 1.9)
            XCTAssertLessThan(three, 2.7)
        }
    }
}
