import XCTest
import PPModel
import PPSample

final class SamplingCostTests: XCTestCase {
    func testFLOPRatioWeightsLevelsByTheirShareOfEulerSteps() {
        // 8 Euler steps evaluate t = 0, 1/8, ..., 7/8: five at t <= 0.5 (level 0), three above. The per-level
        // counts are ForwardFLOPsTests' hand counts.
        let config = ModelConfig(inChannels: 4, inputSize: 8, patchSize: 2, hiddenSize: 64, depth: 2, numHeads: 4, numClasses: 10, levels: 2)
        let average = SamplingCost.eulerAverageFLOPs(config: config, steps: 8, latentSide: 8)
        XCTAssertEqual(average, (5 * 1_048_576 + 3 * 3_530_752) / 8.0)
    }

    func testReleasedShapesGiveThePaperScaleRatios() {
        // With many steps the shares approach 1/2 (2 levels) and 1/2, 1/4, 1/4 (3 levels); attention makes
        // the coarse levels cheaper than a quarter, so the ideal speedups exceed 1.6 and 2.
        for hidden in [384, 768] {  // S/2 and B/2 at 256 px
            func config(levels: Int) -> ModelConfig {
                ModelConfig(inChannels: 4, inputSize: 32, patchSize: 2, hiddenSize: hidden, depth: 12,
                            numHeads: ModelConfig.releasedHeads[hidden]!, numClasses: 1000, levels: levels)
            }
            let full = config(levels: 1).forwardFLOPs(level: 0, latentSide: 32)
            let two = full / SamplingCost.eulerAverageFLOPs(config: config(levels: 2), steps: 1000, latentSide: 32)
            let three = full / SamplingCost.eulerAverageFLOPs(config: config(levels: 3), steps: 1000, latentSide: 32)
            XCTAssertGreaterThan(two, 1.55, "D \(hidden)")
            XCTAssertLessThan(two, 2, "D \(hidden)")
            XCTAssertGreaterThan(three, 1.9, "D \(hidden)")
            XCTAssertLessThan(three, 2.7, "D \(hidden)")
        }
    }
}
