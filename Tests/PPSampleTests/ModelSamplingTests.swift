import PPFileIO
import XCTest
import PPModel
import PPTensor
@testable import PPSample

private func loadModel(_ file: String) throws -> Model {
    let tensors = file.hasSuffix(".pt") ? try SampleFixtures.torchStateDict(file) : try SampleFixtures.safetensors(file)
    let config = try ModelConfig.infer(from: tensors, numHeads: 4, inputSize: nil)
    return Model(config: config, parameters: try ModelParameters(config: config, tensors: tensors))
}

/// Rows `range` of a [B, ...] buffer whose rows are `size` values long.
private func rows(_ values: [Float], size: Int, _ range: Range<Int>) -> [Float] {
    Array(values[(range.lowerBound * size)..<(range.upperBound * size)])
}

final class ModelSamplingTests: XCTestCase {
    /// The official sampler ran `forward_with_cfg` on cat([z, z]) with labels [y, null]: its first half is the
    /// guided trajectory (guidance on channels 0..<3, as the official code does), which only depends on
    /// the first half of z.
    private func checkOfficialODE(levels: Int, method: ODEMethod, points: Int, key: String) throws {
        let model = try loadModel("ppf\(levels).pt")
        let reference = try SampleFixtures.safetensors("ref_ppf\(levels)_forward.safetensors")
        let z = reference["\(key)_z"]!.floats(), y = reference["\(key)_y"]!.int64s().map { Int32($0) }
        let expected = reference["\(key)_out"]!.floats()
        let size = z.count / 4
        let scales = reference["cfg_scales"]!.floats()
        XCTAssertEqual(scales.count, levels)
        let field = try VelocityModelField(model: model, guidance: Guidance(scales: scales, channels: .first3))
        let out = try FixedGridSolver.integrate(field, noise: rows(z, size: size, 0..<2), labels: Array(y[0..<2]), batch: 2,
                                                method: method, points: points)
        assertClose(out, rows(expected, size: size, 0..<2), tolerance: 1e-5, "ppf\(levels) \(key)")
        // No scale is 1 here, so every field call ran both passes.
        XCTAssertEqual(field.count.evaluations, 2 * 2 * (points - 1) * method.stagesPerStep)
        XCTAssertEqual(field.count.savedEvaluations, 0)
    }

    func testOfficialEulerSamplerPPF2() throws { try checkOfficialODE(levels: 2, method: .euler, points: 9, key: "ode_euler_9") }
    func testOfficialHeunSamplerPPF2() throws { try checkOfficialODE(levels: 2, method: .heun, points: 7, key: "ode_heun2_7") }
    func testOfficialEulerSamplerPPF3() throws { try checkOfficialODE(levels: 3, method: .euler, points: 9, key: "ode_euler_9") }
    func testOfficialHeunSamplerPPF3() throws { try checkOfficialODE(levels: 3, method: .heun, points: 7, key: "ode_heun2_7") }

    func testScaleOneAtALevelIsUnguidedThereAndRunsOnePass() throws {
        let model = try loadModel("ppf2.pt")
        let reference = try SampleFixtures.safetensors("ref_ppf2_forward.safetensors")
        let x = reference["x"]!.floats(), y = reference["y"]!.int64s().map { Int32($0) }
        let field = try VelocityModelField(model: model, guidance: Guidance(scales: [1, 3], channels: .all))

        // t = 0.3 is level 0, scale 1: the official unguided output, one pass per sample.
        let before = model.forwardCount
        let coarse = try field.velocity(x: x, t: 0.3, labels: y, batch: 2)
        assertClose(coarse, reference["out_t0.3"]!.floats(), tolerance: 1e-5, "scale 1 at level 0")
        XCTAssertEqual(model.forwardCount - before, 2)
        XCTAssertEqual(field.count, EvaluationCount(evaluations: 2, savedEvaluations: 2, fieldCalls: 1))

        // t = 0.8 is level 1, scale 3: guided, two passes, and not the unguided output.
        let fine = try field.velocity(x: x, t: 0.8, labels: y, batch: 2)
        XCTAssertEqual(model.forwardCount - before, 6)
        XCTAssertEqual(field.count, EvaluationCount(evaluations: 6, savedEvaluations: 2, fieldCalls: 2))
        let unguided = reference["out_t0.8"]!.floats()
        let difference = zip(fine, unguided).map { abs($0 - $1) }.max()!
        XCTAssertGreaterThan(difference, 1e-3)
    }

    func testGuidedVelocityMatchesTheOfficialPerLevelGuidance() throws {
        // cfg_out_t* = forward_with_cfg(cat([x, x]), t, [1, 3, null, null], scales): first half guided.
        let model = try loadModel("ppf3.pt")
        let reference = try SampleFixtures.safetensors("ref_ppf3_forward.safetensors")
        let x = reference["cfg_x"]!.floats(), y = reference["cfg_y"]!.int64s().map { Int32($0) }
        let size = x.count / 4
        let field = try VelocityModelField(model: model, guidance: Guidance(scales: reference["cfg_scales"]!.floats(), channels: .first3))
        for t in ["0.3", "0.6", "0.9"] {
            let v = try field.velocity(x: rows(x, size: size, 0..<2), t: Float(t)!, labels: Array(y[0..<2]), batch: 2)
            assertClose(v, rows(reference["cfg_out_t\(t)"]!.floats(), size: size, 0..<2), tolerance: 1e-5, "guided t=\(t)")
        }
    }

    func testBadGuidanceAndUnknownObjectiveAreRefused() throws {
        let model = try loadModel("ppf2.pt")
        XCTAssertThrowsError(try VelocityModelField(model: model, guidance: Guidance(scales: [1, 2, 3])))
        XCTAssertThrowsError(try SampleFields.field(model: model, objective: .unknown, guidance: nil)) { error in
            let message = (error as? PPError)?.description ?? ""
            XCTAssertTrue(message.contains("ppconvert from-dit --objective"), message)
            XCTAssertEqual((error as? PPError)?.kind, .usage)
        }
        XCTAssertTrue(try SampleFields.field(model: model, objective: .velocity, guidance: nil) is VelocityModelField)
    }

    func testDiTEpsilonModelAsAFlowUsesTheOfficialEpsilon() throws {
        // ref_dit_forward: DiT's ε at DDPM steps 999, 500, 120.5, 3 on states x. The flow field at the
        // matching flow time, on the flow state x/k, must feed exactly x at that step and return (x/k - ε)/t.
        let model = try loadModel("dit.pt")
        let reference = try SampleFixtures.safetensors("ref_dit_forward.safetensors")
        let x = reference["x"]!.floats(), y = reference["y"]!.int64s().map { Int32($0) }
        let steps = reference["t"]!.floats(), out = reference["out"]!.floats()
        let c = model.config.inChannels, size = x.count / 4, plane = size / c
        let field = try SampleFields.epsilonField(model: model, guidance: nil)
        let schedule = DDPMSchedule.dit
        for i in 1..<4 {  // step 999 lies at the table's end, where the low-t form applies (tested separately)
            let tau = Double(steps[i])
            let lower = Int(tau), fraction = tau - Double(lower)
            let t = lower == 999 ? schedule.flowTimes[999]
                : schedule.flowTimes[lower] * (1 - fraction) + schedule.flowTimes[min(lower + 1, 999)] * fraction
            let k = 1 / (t * t + (1 - t) * (1 - t)).squareRoot()
            let flowState = rows(x, size: size, i..<(i + 1)).map { Float(Double($0) / k) }
            let v = try field.velocity(x: flowState, t: Float(t), labels: [y[i]], batch: 1)
            let epsilon = Array(out[(i * 2 * size)..<(i * 2 * size + c * plane)])
            let expected = (0..<size).map { Float((Double(flowState[$0]) - Double(epsilon[$0])) / Double(Float(t))) }
            assertClose(v, expected, tolerance: 1e-4, "DiT as flow at step \(tau)")
        }
        XCTAssertEqual(field.count.evaluations, 3)
    }

    func testGuidedEpsilonFieldSkipsTheUnconditionalPassAtScaleOne() throws {
        let model = try loadModel("dit.pt")
        let x = pattern(2 * 4 * 8 * 8)
        let unguided = try SampleFields.epsilonField(model: model, guidance: nil)
        let scaleOne = try SampleFields.epsilonField(model: model, guidance: Guidance(scales: [1]))
        let guided = try SampleFields.epsilonField(model: model, guidance: Guidance(scales: [4]))
        let a = try unguided.velocity(x: x, t: 0.4, labels: [1, 3], batch: 2)
        let b = try scaleOne.velocity(x: x, t: 0.4, labels: [1, 3], batch: 2)
        XCTAssertEqual(a, b)
        XCTAssertEqual(scaleOne.count, EvaluationCount(evaluations: 2, savedEvaluations: 2, fieldCalls: 1))
        // Guidance is affine in ε and v is affine in ε, so guiding ε guides v with the same scale.
        let g = try guided.velocity(x: x, t: 0.4, labels: [1, 3], batch: 2)
        let nullField = try SampleFields.epsilonField(model: model, guidance: nil)
        let u = try nullField.velocity(x: x, t: 0.4, labels: [10, 10], batch: 2)
        assertClose(g, zip(a, u).map { $1 + 4 * ($0 - $1) }, tolerance: 1e-5, "guided ε = guided v")
        XCTAssertEqual(guided.count.evaluations, 4)
    }
}
