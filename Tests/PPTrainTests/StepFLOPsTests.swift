import XCTest
import Foundation
import PPTrain
import PPModel

final class StepFLOPsTests: XCTestCase {
    /// The FLOP count of a step, by hand for a tiny 2-level model: every product 2·m·n·k, forward once,
    /// backward twice (input and weight gradients) except the patch embedding and t_embedder's first
    /// linear, whose inputs need no gradient.
    func testStepFlopCountByHand() throws {
        let D = 8.0, F = 32.0, depth = 2.0, B = 4.0, C = 2.0, p = 2.0
        let config = TrainConfig(hidden: 8, depth: 2, heads: 2, patch: 2, channels: 2, side: 8, classes: 3, levels: 2)
        let layout = ParameterLayout(config: config.model)
        let model = TrainingModel(config: config, parameters: [Float](repeating: 0.01, count: layout.totalCount))
        let sample = 2 * 8 * 8
        _ = try model.forwardBackward(TrainBatch(x1: [Float](repeating: 0.5, count: 4 * sample), x0: [Float](repeating: -0.5, count: 4 * sample),
                                                 t: [0.2, 0.4, 0.6, 0.9], y: [0, 1, 2, 3]))
        // Per sample at each level: tokens T and the embed/output widths.
        var expected = 0.0
        for (T, inFeatures, outFeatures) in [(4.0, 4 * C * p * p, 4 * p * p * 2 * C), (16.0, C * p * p, p * p * 2 * C)] {
            let rows = 2 * T  // two samples per level
            let blockLinears = rows * (D * 3 * D + D * D + D * F + F * D)
            let attention = 2 * (2 * 2 * T * T * D)  // QKᵀ and PV, two samples
            expected += 2 * inFeatures * D * rows * 2  // patch embed: forward + weight gradient
            expected += depth * (2 * blockLinears * 3 + attention * 3)
            expected += 2 * rows * D * outFeatures * 3
        }
        let conditioning = B * (256 * D * 2 + D * D * 3 + depth * D * 6 * D * 3 + D * 2 * D * 3)
        expected += 2 * conditioning
        XCTAssertEqual(model.matmulFlops, expected, accuracy: 0.5)
    }
}
