import XCTest
import PPTensor
import PPTrain
import PPModel

/// One training step of the random PPFlow models against the official trainer's numbers
/// (`ref_ppf{2,3}_train_step.safetensors`, written by PyTorch from `ppf{2,3}.pt`). The official trainer
/// packs coarse samples with interleaved tokens under a block mask, so its coarse samples see each
/// other: parity needs `.officialPacking`; the default per-sample attention must agree on the finest
/// level only.
final class TrainStepFixtureTests: XCTestCase {
    func testPPFlow2TrainStepMatchesOfficial() throws { try checkTrainStep(levels: 2) }
    func testPPFlow3TrainStepMatchesOfficial() throws { try checkTrainStep(levels: 3) }

    /// Per-sample attention changes nothing at the finest level (one sample per packed sequence there)
    /// and changes every coarse sample.
    func testPerSampleAttentionDiffersFromOfficialOnlyAtCoarseLevels() throws {
        for levels in [2, 3] {
            let weights = try TensorFiles.read(path: Fixtures.path("ppf\(levels).pt"))
            let reference = try TensorFiles.read(path: Fixtures.path("ref_ppf\(levels)_train_step.safetensors"))
            let t = try XCTUnwrap(reference["t"]).floats()
            let result = try TrainStep.run(tensors: weights, heads: 4, x1: try XCTUnwrap(reference["x1"]), x0: try XCTUnwrap(reference["x0"]),
                                           t: try XCTUnwrap(reference["t"]), y: try XCTUnwrap(reference["y"]),
                                           optimizer: AdamWOptions(learningRate: 1e-3), emaDecay: 0.99, attention: .perSample)
            let expected = try XCTUnwrap(reference["per_sample_loss"]).floats()
            let finest = t.indices.filter { t[$0] > (levels == 2 ? 0.5 : 0.75) }
            let coarse = t.indices.filter { t[$0] <= 0.5 }
            XCTAssertFalse(finest.isEmpty)
            assertClose(finest.map { result.perSampleLoss[$0] }, finest.map { expected[$0] }, tolerance: 1e-5, "ppf\(levels) finest-level losses")
            for i in coarse {
                XCTAssertGreaterThan(abs(result.perSampleLoss[i] - expected[i]), 1e-3 * abs(expected[i]),
                                     "ppf\(levels) coarse sample \(i): per-sample attention should differ from the official packing")
            }
        }
    }

    private func checkTrainStep(levels: Int) throws {
        let weights = try TensorFiles.read(path: Fixtures.path("ppf\(levels).pt"))
        let reference = try TensorFiles.read(path: Fixtures.path("ref_ppf\(levels)_train_step.safetensors"))
        func tensor(_ name: String) throws -> TensorView {
            try XCTUnwrap(reference[name], "fixture lacks \(name)")
        }
        let config = try TrainConfig.infer(from: weights, heads: 4)
        XCTAssertEqual(config.levels, levels)
        let result = try TrainStep.run(tensors: weights, config: config, x1: tensor("x1").floats(), x0: tensor("x0").floats(),
                                       t: tensor("t").floats(), y: tensor("y").int64s().map { Int($0) },
                                       optimizer: AdamWOptions(learningRate: 1e-3, beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0),
                                       emaDecay: 0.99, attention: .officialPacking)
        assertClose([result.loss], try tensor("loss").floats(), tolerance: 1e-5, "loss")
        assertClose(result.perSampleLoss, try tensor("per_sample_loss").floats(), tolerance: 1e-5, "per_sample_loss")

        // Every trainable tensor has a gradient, and no frozen one.
        let expectedGradients = reference.names.filter { $0.hasPrefix("grad.") }.sorted()
        XCTAssertEqual(result.gradients.names.sorted(), expectedGradients)
        var worst = (name: "", error: 0.0)
        for name in expectedGradients {
            let error = assertClose(try XCTUnwrap(result.gradients[name]).floats(), try tensor(name).floats(), tolerance: 1e-4, name)
            if error > worst.error { worst = (name, error) }
        }
        print("ppf\(levels) train step: worst gradient \(worst.name) relative error \(worst.error)")
        // The key part of qkv.bias has an exactly zero gradient (softmax ignores a constant added to a
        // row of scores), so both implementations hold only rounding noise there, and AdamW's first
        // step turns any noise into ±lr. Check that ours is noise, and leave those entries out below.
        let D = config.hidden
        for block in 0..<config.depth {
            let g = try XCTUnwrap(result.gradients["grad.blocks.\(block).attn.qkv.bias"]).floats()
            let keyNorm = g[D..<(2 * D)].reduce(0) { $0 + Double($1) * Double($1) }.squareRoot()
            let queryNorm = g[0..<D].reduce(0) { $0 + Double($1) * Double($1) }.squareRoot()
            XCTAssertLessThan(keyNorm, 1e-5 * queryNorm, "block \(block): key bias gradient should be rounding noise")
        }
        for prefix in ["after.", "ema."] {
            let expectedNames = reference.names.filter { $0.hasPrefix(prefix) }.sorted()
            let actual = prefix == "after." ? result.after : result.ema
            XCTAssertEqual(actual.names.sorted(), expectedNames)
            for name in expectedNames {
                var a = try XCTUnwrap(actual[name]).floats(), e = try tensor(name).floats()
                if name.hasSuffix("attn.qkv.bias") { a.removeSubrange(D..<(2 * D)); e.removeSubrange(D..<(2 * D)) }
                assertClose(a, e, tolerance: 1e-5, name)
            }
        }
    }

    /// AdamW and EMA alone, fed the official gradients: every tensor, key biases included, to 1e-5.
    func testAdamWAndEMAOnOfficialGradients() throws {
        for levels in [2, 3] {
            let weights = try TensorFiles.read(path: Fixtures.path("ppf\(levels).pt"))
            let reference = try TensorFiles.read(path: Fixtures.path("ref_ppf\(levels)_train_step.safetensors"))
            let config = try TrainConfig.infer(from: weights, heads: 4)
            let layout = ParameterLayout(config: config.model)
            var parameters = try ModelParameters(config: config.model, tensors: weights).values
            let before = parameters
            var gradients = [Float](repeating: 0, count: layout.totalCount)
            for name in layout.learnableNames {
                let g = try XCTUnwrap(reference["grad." + name], name).floats()
                gradients.replaceSubrange(layout.range(of: name)!, with: g)
            }
            var optimizer = AdamW(options: AdamWOptions(learningRate: 1e-3, beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0),
                                  parameterCount: layout.totalCount)
            optimizer.update(parameters: &parameters, gradients: &gradients, layout: layout)
            var ema = ExponentialMovingAverage(initial: before, decay: 0.99)
            ema.update(with: parameters)
            for name in layout.names {
                let r = layout.range(of: name)!
                assertClose(Array(parameters[r]), try XCTUnwrap(reference["after." + name]).floats(),
                            tolerance: 1e-5, "ppf\(levels) after.\(name)")
                assertClose(Array(ema.values[r]), try XCTUnwrap(reference["ema." + name]).floats(),
                            tolerance: 1e-5, "ppf\(levels) ema.\(name)")
            }
        }
    }
}

/// Levels follow the model's own thresholds (ModelConfig.thresholds), not the official defaults.
final class LevelThresholdTests: XCTestCase {
    func testLevelsFollowTheConfiguredThresholds() throws {
        let official = TrainConfig(hidden: 8, depth: 1, heads: 2, patch: 2, channels: 1, side: 8, classes: 2, levels: 3)
        XCTAssertEqual([0.3, 0.5, 0.6, 0.75, 0.8].map { official.level(forTime: $0) }, [0, 0, 1, 1, 2])
        let custom = TrainConfig(hidden: 8, depth: 1, heads: 2, patch: 2, channels: 1, side: 8, classes: 2, levels: 3, thresholds: [0.3, 0.6])
        XCTAssertEqual([0.3, 0.5, 0.6, 0.75, 0.8].map { custom.level(forTime: $0) }, [0, 1, 1, 2, 2])
        // A native folder's thresholds reach the trainer through the loaded ModelConfig.
        var model = official.model
        model.thresholds = [0.4]; model.levels = 2
        XCTAssertEqual(TrainConfig(model: model).level(forTime: 0.45), 1)
    }

    /// TrainConfig(hidden:...) round-trips an odd MLP width through ModelConfig's ratio.
    func testOddMLPWidthSurvivesTheRatio() {
        for (hidden, mlp) in [(12, 20), (96, 384), (7, 13), (1152, 4608)] {
            let config = TrainConfig(hidden: hidden, depth: 1, heads: 1, patch: 2, channels: 1, side: 4, classes: 1, levels: 2, mlpHidden: mlp)
            XCTAssertEqual(config.mlpHidden, mlp)
        }
    }
}
