import XCTest
import PPModel
import PPTensor
import PPTrain

/// Training and inference run one network (`PPModel.Network`): its training pass (which keeps every
/// activation for backward) and its inference pass (aliased, in-place buffers) must compute the same
/// function, for every architecture variant the loaders produce, and both must pick the same level for
/// a time at a threshold.
final class OneNetworkTests: XCTestCase {
    /// Small models of every variant: SiT and DiT (learned sigma), a diffusers-derived one (no sigma,
    /// MLP LayerNorm eps 1e-5), PPFlow with 2 and 3 levels; each with both time-feature conventions.
    private func variants() -> [(name: String, config: ModelConfig)] {
        var out: [(String, ModelConfig)] = []
        for features in [TimeFeatures.original, .diffusers] {
            func make(levels: Int, learnSigma: Bool, eps: Float, classes: Int) -> ModelConfig {
                ModelConfig(inChannels: 2, inputSize: 8, patchSize: 2, hiddenSize: 32, depth: 2, numHeads: 4, numClasses: classes,
                            learnSigma: learnSigma, levels: levels, timeFeatures: features, mlpNormEps: eps)
            }
            out.append(("SiT/\(features)", make(levels: 1, learnSigma: true, eps: 1e-6, classes: 5)))
            out.append(("DiT/\(features)", make(levels: 1, learnSigma: true, eps: 1e-6, classes: 7)))
            out.append(("diffusers/\(features)", make(levels: 1, learnSigma: false, eps: 1e-5, classes: 5)))
            out.append(("PPFlow-2/\(features)", make(levels: 2, learnSigma: true, eps: 1e-6, classes: 5)))
            out.append(("PPFlow-3/\(features)", make(levels: 3, learnSigma: true, eps: 1e-6, classes: 5)))
        }
        return out
    }

    private func randomParameters(_ config: ModelConfig, seed: UInt64) -> ModelParameters {
        let parameters = ModelParameters(config: config)
        var random = SeededValues(seed: seed)
        parameters.values = random.floats(parameters.layout.totalCount, scale: 0.2)
        return parameters
    }

    /// The network's training pass and inference pass give bit-identical outputs at every level.
    func testTrainingPassEqualsInferencePass() throws {
        for (name, config) in variants() {
            let parameters = randomParameters(config, seed: 7)
            let network = Network(config: config, layout: parameters.layout)
            var random = SeededValues(seed: 11)
            for level in 0..<config.levels {
                let g = config.geometry(level: level), n = 3
                let input = random.floats(n * g.channels * g.height * g.width)
                let t: [Float] = [0.1, 0.55, 0.9], labels = [0, config.numClasses, 2]
                func run(keep: Bool) -> [Float] {
                    var image = [Float](repeating: .nan, count: n * g.outputChannels * g.height * g.width)
                    let pass = network.plan(geometry: g, labels: labels, keepActivations: keep)
                    parameters.values.withUnsafeBufferPointer { p in
                        network.forward(pass, input: input, t: t, weights: WeightTable(flat: p.baseAddress!, layout: parameters.layout), image: &image)
                    }
                    return image
                }
                let training = run(keep: true), inference = run(keep: false)
                XCTAssertFalse(training.contains { !$0.isFinite }, "\(name) level \(level)")
                XCTAssertEqual(training, inference, "\(name) level \(level): training and inference passes differ")
            }
        }
    }

    /// The trainer's per-sample loss equals the loss of the sampler's forward (`Model.forward`) on the same
    /// x_t, t, y: the same levels, time features, norms and layouts are used end to end.
    func testTrainerLossEqualsSamplerForward() throws {
        for (name, config) in variants() {
            let parameters = randomParameters(config, seed: 3)
            let C = config.inChannels, S = config.inputSize, sampleSize = C * S * S
            var random = SeededValues(seed: 5)
            let t: [Float] = [0.05, 0.5, 0.62, 0.75, 0.8, 0.99]
            let B = t.count
            let x1 = random.floats(B * sampleSize), x0 = random.floats(B * sampleSize)
            let y = (0..<B).map { $0 % (config.numClasses + 1) }
            let trainer = TrainingModel(model: parameters)
            let (_, trained) = try trainer.forwardBackward(TrainBatch(x1: x1, x0: x0, t: t, y: y))

            var xt = [Float](repeating: 0, count: B * sampleSize)
            for b in 0..<B { for e in 0..<sampleSize { let i = b * sampleSize + e; xt[i] = t[b] * x1[i] + (1 - t[b]) * x0[i] } }
            let output = Model(config: config, parameters: parameters).forward(x: xt, t: t, y: y.map { Int32($0) }, batch: B)
            for b in 0..<B {
                var sum = 0.0
                for e in 0..<sampleSize {
                    let d = output[b * config.outChannels * S * S + e] - (x1[b * sampleSize + e] - x0[b * sampleSize + e])
                    sum += Double(d) * Double(d)
                }
                let sampled = sum / Double(sampleSize)
                XCTAssertEqual(Double(trained[b]), sampled, accuracy: 1e-6 * max(1, sampled), "\(name) sample \(b) at t = \(t[b])")
            }
        }
    }

    /// One level-of-t rule: a time exactly at a threshold belongs to the level below it, in the config, the
    /// sampler's model and the trainer alike.
    func testLevelAtThresholdIsOneRule() {
        for (thresholds, expected) in [([0.3, 0.6], [0, 0, 1, 1, 2]), ([0.5], [0, 0, 1, 0, 1])] {
            let config = ModelConfig(inChannels: 2, inputSize: 8, hiddenSize: 32, depth: 1, numHeads: 4, numClasses: 3,
                                     levels: thresholds.count + 1, thresholds: thresholds)
            let times: [Float] = [0.1, Float(thresholds[0]), Float(thresholds[0]).nextUp, Float(thresholds.last!), 0.9]
            let model = Model(config: config, parameters: ModelParameters(config: config))
            let trainer = TrainConfig(model: config)
            XCTAssertEqual(times.map(config.level(forTime:)), expected, "thresholds \(thresholds)")
            XCTAssertEqual(times.map(model.level(forTime:)), expected, "sampler, thresholds \(thresholds)")
            XCTAssertEqual(times.map(trainer.level(forTime:)), expected, "trainer, thresholds \(thresholds)")
        }
    }

    /// `ppfinetune step` and `ppsample forward` pick the same level for t exactly at a threshold (and
    /// compute the same function there: the step's per-sample loss is the forward's).
    func testStepAndForwardCommandsAgreeAtThresholds() throws {
        let scratch = Paths.scratch(self)
        for (thresholds, expected) in [("0.3,0.6", [0, 0, 1, 1, 2]), ("0.5", [0, 0, 1, 0, 1])] {
            let levels = thresholds.split(separator: ",").count + 1
            let folder = "\(scratch)/digits-\(levels)"
            let convert = try Binaries.run("ppconvert", ["from-dit", Paths.digitsZip, "--levels", "\(levels)", "--thresholds", thresholds,
                                                         "--no-verify", "--out", folder], scratch: scratch)
            XCTAssertEqual(convert.status, 0, convert.stderr)
            let values = thresholds.split(separator: ",").map { Float(String($0))! }
            let t: [Float] = [0.2, values[0], values[0].nextUp, values.last!, 0.95]
            let B = t.count, sampleSize = 16 * 16
            var random = SeededValues(seed: 21)
            let x1 = random.floats(B * sampleSize), x0 = random.floats(B * sampleSize)
            var xt = [Float](repeating: 0, count: B * sampleSize)
            for b in 0..<B { for e in 0..<sampleSize { let i = b * sampleSize + e; xt[i] = t[b] * x1[i] + (1 - t[b]) * x0[i] } }
            let y = TensorView(int64s: [1, 2, 3, 4, 10], shape: [B])
            var batch = TensorDict()
            batch["x1"] = TensorView(floats: x1, shape: [B, 1, 16, 16]); batch["x0"] = TensorView(floats: x0, shape: [B, 1, 16, 16])
            batch["t"] = TensorView(floats: t, shape: [B]); batch["y"] = y
            var inputs = TensorDict()
            inputs["x"] = TensorView(floats: xt, shape: [B, 1, 16, 16]); inputs["t"] = batch["t"]; inputs["y"] = y
            try TensorFiles.writeSafetensors(batch, to: "\(scratch)/batch-\(levels).safetensors")
            try TensorFiles.writeSafetensors(inputs, to: "\(scratch)/inputs-\(levels).safetensors")

            let step = try Binaries.run("ppfinetune", ["step", folder, "--batch", "\(scratch)/batch-\(levels).safetensors", "--lr", "1e-3",
                                                       "--ema-decay", "0.99", "--out", "\(scratch)/step-\(levels).safetensors"], scratch: scratch)
            XCTAssertEqual(step.status, 0, step.stderr)
            let forward = try Binaries.run("ppsample", ["forward", folder, "--inputs", "\(scratch)/inputs-\(levels).safetensors",
                                                        "--out", "\(scratch)/forward-\(levels).safetensors"], scratch: scratch)
            XCTAssertEqual(forward.status, 0, forward.stderr)
            let stepOut = try TensorFiles.read(path: "\(scratch)/step-\(levels).safetensors")
            let forwardOut = try TensorFiles.read(path: "\(scratch)/forward-\(levels).safetensors")
            let stepLevels = try XCTUnwrap(stepOut["level"]).int64s().map { Int($0) }
            XCTAssertEqual(stepLevels, expected, "ppfinetune step, thresholds \(thresholds)")
            XCTAssertEqual(try XCTUnwrap(forwardOut["level"]).int64s().map { Int($0) }, expected, "ppsample forward, thresholds \(thresholds)")

            let prediction = try XCTUnwrap(forwardOut["prediction"]).floats()
            let losses = try XCTUnwrap(stepOut["per_sample_loss"]).floats()
            for b in 0..<B {
                var sum = 0.0
                for e in 0..<sampleSize {
                    let i = b * sampleSize + e, d = prediction[i] - (x1[i] - x0[i])
                    sum += Double(d) * Double(d)
                }
                XCTAssertEqual(Double(losses[b]), sum / Double(sampleSize), accuracy: 1e-5 * max(1, sum / Double(sampleSize)),
                               "thresholds \(thresholds), sample \(b) at t = \(t[b])")
            }
        }
    }
}
