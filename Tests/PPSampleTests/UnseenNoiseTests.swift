import PPCheckpoint
import PPModel
import PPSample
import PPTensor
import XCTest

/// The noise a coarse level cannot see (`UnseenInput`, `UnseenNoise`): found from the weights, invisible
/// to the network, removed where a finer level takes over, nothing removed for projections that see all.
final class UnseenNoiseTests: XCTestCase {
    /// A tiny PPFlow model with random weights; with `repeatRule` the coarse projections are the repeat rule's
    /// averages of the finest one (`repeat_interleave(W / f, f, dim=1)`), as an untuned conversion has them.
    private func model(levels: Int, repeatRule: [Bool]) -> Model {
        let config = ModelConfig(inChannels: 2, inputSize: 8, patchSize: 2, hiddenSize: 32, depth: 1, numHeads: 2,
                                 numClasses: 3, levels: levels)
        let parameters = ModelParameters(config: config)
        var random = SeededRandom(seed: 5)
        parameters.values = random.normals(parameters.layout.totalCount).map { $0 * 0.2 }
        let fine = parameters.layout.range(of: "x_embedder.proj.weight")!  // [D, C, p, p]
        let c = config.inChannels, pp = config.patchSize * config.patchSize
        for level in 0..<(levels - 1) where repeatRule[level] {
            let factor = config.levelLayouts[level].channelFactor
            let coarse = parameters.layout.range(of: config.patchEmbedName(level: level) + ".weight")!  // [D, f·C, p, p]
            for d in 0..<config.hiddenSize { for ch in 0..<c { for k in 0..<factor { for q in 0..<pp {
                parameters.values[coarse.lowerBound + ((d * c + ch) * factor + k) * pp + q] =
                    parameters.values[fine.lowerBound + (d * c + ch) * pp + q] / Float(factor)
            } } } }
        }
        return Model(config: config, parameters: parameters)
    }

    private func noise(batch: Int, seed: UInt64 = 9) -> [Float] {
        var random = SeededRandom(seed: seed)
        return random.normals(batch * 2 * 8 * 8)
    }

    private func maxDifference(_ a: [Float], _ b: [Float]) -> Float { zip(a, b).map { abs($0 - $1) }.max()! }

    /// The repeat rule's coarse level is blind to exactly the within-group differences (3 of every 4
    /// values of a merged group), its output does not move along them, and does move along the rest.
    func testRepeatRuleLevelCannotSeeWithinGroupDifferences() throws {
        let net = model(levels: 2, repeatRule: [true])
        let coarse = UnseenInput(weights: net.weights, level: 0), fine = UnseenInput(weights: net.weights, level: 1)
        XCTAssertEqual(coarse.dimensions, 3 * 2 * 2 * 2)  // of 4C·p·p = 32
        XCTAssertEqual(fine.dimensions, 0)
        let batch = 2
        let x = noise(batch: batch), z = noise(batch: batch, seed: 10)
        let unseen = coarse.project(z, batch: batch)
        XCTAssertLessThan(maxDifference(coarse.project(unseen, batch: batch), unseen), 1e-5)  // a projection
        XCTAssertEqual(fine.project(z, batch: batch), [Float](repeating: 0, count: z.count))
        let t: [Float] = [0.2, 0.3], y: [Int32] = [0, 1]
        let base = net.forward(x: x, t: t, y: y, batch: batch, level: 0)
        let alongUnseen = net.forward(x: zip(x, unseen).map(+), t: t, y: y, batch: batch, level: 0)
        let alongSeen = net.forward(x: zip(x, zip(z, unseen).map(-)).map(+), t: t, y: y, batch: batch, level: 0)
        XCTAssertLessThan(maxDifference(base, alongUnseen), 1e-4)
        XCTAssertGreaterThan(maxDifference(base, alongSeen), 1e-2)
    }

    /// A projection that sees every direction (random, or fine-tuned) leaves nothing to remove.
    func testProjectionsThatSeeEverythingRemoveNothing() {
        let net = model(levels: 3, repeatRule: [false, false])
        XCTAssertEqual((0..<3).map { UnseenInput(weights: net.weights, level: $0).dimensions }, [0, 0, 0])
        XCTAssertNil(UnseenNoisePlan(model: net, objective: .velocity))
        XCTAssertNil(UnseenNoisePlan(model: model(levels: 2, repeatRule: [true]), objective: .epsilon))
    }

    /// Under a zero field the state only changes by the removals: at the first evaluation of each finer
    /// level (time t), `drop` takes all of the start noise's component the coarser level could not see and
    /// it can, `flow` t times it.
    func testRemovalWhereAFinerLevelTakesOver() throws {
        let batch = 2, z = noise(batch: batch)
        let zero = ClosureVelocityField(channels: 2) { x, _, _, _ in [Float](repeating: 0, count: x.count) }
        for method in ODEMethod.allCases {
            for (mode, share) in [(UnseenNoise.drop, { (_: Float) in Float(1) }), (.flow, { (t: Float) in t })] {
                // 2 levels, threshold 0.5 on the grid 0, 0.1, ..., 1: the fine level first runs at t = 0.6.
                let plan2 = try XCTUnwrap(UnseenNoisePlan(model: model(levels: 2, repeatRule: [true]), objective: .velocity, mode: mode))
                XCTAssertEqual(plan2.dimensions, [24, 0])
                let out2 = try FixedGridSolver.integrate(zero, noise: z, labels: [0, 1], batch: batch, method: method, points: 11,
                                                         unseenNoise: plan2.removal(noise: z, batch: batch))
                let p0 = plan2.unseen[0].project(z, batch: batch)
                XCTAssertLessThan(maxDifference(out2, zip(z, p0).map { $0 - share(0.6) * $1 }), 1e-5, "\(method) \(mode)")

                // 3 levels, thresholds 0.5 and 0.75: what level 1 sees goes at t = 0.6, the rest at t = 0.8.
                let plan3 = try XCTUnwrap(UnseenNoisePlan(model: model(levels: 3, repeatRule: [true, true]), objective: .velocity, mode: mode))
                XCTAssertEqual(plan3.dimensions, [24, 8, 0])
                let out3 = try FixedGridSolver.integrate(zero, noise: z, labels: [0, 1], batch: batch, method: method, points: 11,
                                                         unseenNoise: plan3.removal(noise: z, batch: batch))
                let q0 = plan3.unseen[0].project(z, batch: batch), q1 = plan3.unseen[1].project(z, batch: batch)
                let expected = z.indices.map { z[$0] - share(0.6) * (q0[$0] - q1[$0]) - share(0.8) * q1[$0] }
                XCTAssertLessThan(maxDifference(out3, expected), 1e-5, "\(method) \(mode)")
            }
            let kept = try FixedGridSolver.integrate(zero, noise: z, labels: [0, 1], batch: batch, method: method, points: 11)
            XCTAssertEqual(kept, z)
        }
        XCTAssertNil(UnseenNoisePlan(model: model(levels: 2, repeatRule: [true]), objective: .velocity, mode: .keep))
    }

    /// The official code's own files: its repeat-rule conversions of a SiT are blind at their coarse levels
    /// (nested), its trained-from-scratch pyramids see everything, so the default sampler reproduces the
    /// official sampler's fixtures on them (ModelSamplingTests).
    func testOfficialConversionsAreBlindAndTrainedPyramidsAreNot() throws {
        func load(_ name: String) throws -> Model {
            let tensors = name.hasSuffix(".pt") ? try SampleFixtures.torchStateDict(name) : try SampleFixtures.safetensors(name)
            let config = try ModelConfig.infer(from: tensors, numHeads: 4, inputSize: nil)
            return Model(weights: try ModelWeights(config: config, tensors: tensors))
        }
        let c = 4, pp = 4  // latent channels, p·p
        XCTAssertEqual(try XCTUnwrap(UnseenNoisePlan(model: load("ppf2_from_sit.safetensors"), objective: .velocity)).dimensions,
                       [3 * c * pp, 0])
        let plan3 = try XCTUnwrap(UnseenNoisePlan(model: load("ppf3_from_sit.safetensors"), objective: .velocity))
        XCTAssertEqual(plan3.dimensions, [3 * c * pp, c * pp, 0])
        var random = SeededRandom(seed: 3)
        XCTAssertNoThrow(try plan3.removal(noise: random.normals(c * 8 * 8), batch: 1))  // nested: 8x8 latents of 4 channels
        XCTAssertNil(UnseenNoisePlan(model: try load("ppf2.pt"), objective: .velocity))
        XCTAssertNil(UnseenNoisePlan(model: try load("ppf3.pt"), objective: .velocity))
    }

    /// A level blind to what a coarser one saw has no defined removal: refused with the way out.
    func testRefusesUnseenSpacesThatAreNotNested() throws {
        let net = model(levels: 3, repeatRule: [false, true])
        let plan = try XCTUnwrap(UnseenNoisePlan(model: net, objective: .velocity))
        XCTAssertEqual(plan.dimensions, [0, 8, 0])
        assertPPError(.usage, mentions: ["level 1 cannot see", "--unseen-noise keep"]) {
            _ = try plan.removal(noise: self.noise(batch: 1), batch: 1)
        }
    }
}
