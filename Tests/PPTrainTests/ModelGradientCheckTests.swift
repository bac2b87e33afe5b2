import XCTest
import PPTrain
import PPModel

/// Finite differences through the whole training model (one transformer block, both pyramid levels,
/// conditioning, patch embedding and output layers) on a tiny odd configuration.
/// Float model with central differences of step 1e-2 on the loss; the model's loss sums in Double,
/// leaving rounding near 1e-7·|L|/h. A few entries of every trainable tensor are checked; tolerance 1e-2
/// relative over each tensor's checked entries (a wrong term gives errors of order 1).
final class ModelGradientCheckTests: XCTestCase {
    func testWholeModelGradientMatchesFiniteDifferences() throws {
        let config = TrainConfig(hidden: 12, depth: 1, heads: 3, patch: 2, channels: 2, side: 8, classes: 3, levels: 3, mlpHidden: 20)
        let layout = ParameterLayout(config: config.model)
        var random = SeededValues(seed: 11)
        let parameters = random.floats(layout.totalCount, scale: 0.4)
        let B = 8, sample = config.channels * config.side * config.side
        let batch = TrainBatch(x1: random.floats(B * sample), x0: random.floats(B * sample),
                               t: [0.1, 0.45, 0.3, 0.2, 0.6, 0.7, 0.8, 0.95], y: [0, 3, 2, 1, 1, 0, 3, 2])
        for scope in [AttentionScope.perSample, .officialPacking] {
            let model = TrainingModel(config: config, parameters: parameters)
            model.attentionScope = scope
            _ = try model.forwardBackward(batch)
            let analytic = model.gradients
            XCTAssertTrue(layout.names.filter(ParameterLayout.isFixed).allSatisfy { name in analytic[layout.range(of: name)!].allSatisfy { $0 == 0 } },
                          "fixed tensors get no gradient")
            let step: Float = 1e-2
            for name in layout.learnableNames {
                let e = layout.range(of: name)!
                var checkedAnalytic: [Float] = [], checkedNumeric: [Float] = []
                for k in 0..<min(4, e.count) {
                    let i = e.lowerBound + (k * 7919) % e.count
                    model.parameters = parameters; model.parameters[i] += step
                    let plus = try model.forwardBackward(batch).loss
                    model.parameters = parameters; model.parameters[i] -= step
                    let minus = try model.forwardBackward(batch).loss
                    let h = Double(parameters[i] + step) - Double(parameters[i] - step)
                    checkedNumeric.append(Float((Double(plus) - Double(minus)) / h))
                    checkedAnalytic.append(analytic[i])
                }
                assertClose(checkedAnalytic, checkedNumeric, tolerance: 1e-2, "\(scope) \(name)")
            }
        }
    }
}
