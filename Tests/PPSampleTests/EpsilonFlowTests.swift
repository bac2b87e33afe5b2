import XCTest
@testable import PPSample

/// Gaussian data, independent per element: data_i ~ N(mean_i, std_i²). Everything about it is analytic.
private struct GaussianData {
    let mean: [Double]
    let std: [Double]

    /// The exact velocity of the linear path x_t = t·data + (1-t)·noise:
    /// v = mean + (t·s² − (1−t))·(x − t·mean)/(t²·s² + (1−t)²).
    func velocity(x: [Float], t: Double) -> [Float] {
        x.indices.map { i in
            let s2 = std[i % std.count] * std[i % std.count], m = mean[i % mean.count]
            let v = m + (t * s2 - (1 - t)) * (Double(x[i]) - t * m) / (t * t * s2 + (1 - t) * (1 - t))
            return Float(v)
        }
    }

    /// The flow map from noise z at t = 0 to t = 1.
    func sample(noise: [Float]) -> [Float] { noise.indices.map { Float(mean[$0 % mean.count] + std[$0 % std.count] * Double(noise[$0])) } }
}

/// DiT's alphā computed here from its definition (not through DDPMSchedule), interpolated linearly at a
/// fractional step.
private let referenceAlphaBars: [Double] = {
    var product = 1.0
    return (0..<1000).map { i in
        product *= 1 - (1e-4 + Double(i) * (0.02 - 1e-4) / 999)
        return product
    }
}()

/// alphā at a fractional step: the matching flow time t(τ) = sqrt(ᾱ)/(sqrt(ᾱ)+sqrt(1−ᾱ)) interpolated
/// linearly between integer steps, turned back into alphā = t²/(t² + (1−t)²). Between integer steps the
/// network was never trained, so this only fixes the convention (Diff2Flow's); at integer steps it is exact.
private func referenceAlphaBar(_ tau: Double) -> Double {
    func flowTime(_ alphaBar: Double) -> Double { alphaBar.squareRoot() / (alphaBar.squareRoot() + (1 - alphaBar).squareRoot()) }
    let i = min(Int(tau), 998), f = tau - Double(i)
    let t = flowTime(referenceAlphaBars[i]) * (1 - f) + flowTime(referenceAlphaBars[i + 1]) * f
    return t * t / (t * t + (1 - t) * (1 - t))
}

/// The Bayes-optimal ε prediction for Gaussian data at a DDPM state α·data + σ·ε:
/// E[ε | x] = σ·(x − α·mean)/(α²·s² + σ²).
private func perfectEpsilonField(_ data: GaussianData, channels: Int = 1) -> EpsilonFlowField {
    EpsilonFlowField(channels: channels) { state, step, _, _, batch in
        let alphaBar = referenceAlphaBar(Double(step))
        let a = alphaBar.squareRoot(), s = (1 - alphaBar).squareRoot()
        let eps = state.indices.map { i -> Float in
            let s2 = data.std[i % data.std.count] * data.std[i % data.std.count]
            let m = data.mean[i % data.mean.count]
            return Float(s * (Double(state[i]) - a * m) / (a * a * s2 + s * s))
        }
        return (eps, batch, 0)
    }
}

final class EpsilonFlowTests: XCTestCase {
    func testScheduleMatchesThePublishedDiTNumbers() {
        let schedule = DDPMSchedule.dit
        XCTAssertEqual(schedule.steps, 1000)
        XCTAssertEqual(schedule.betas[0], 1e-4)
        XCTAssertEqual(schedule.betas[999], 0.02)
        XCTAssertEqual(schedule.alphaBars[999], 4.0e-5, accuracy: 0.1e-5)  // formats.md §2.1
        for i in [0, 1, 250, 999] { XCTAssertEqual(schedule.alphaBars[i], referenceAlphaBars[i], accuracy: 1e-15) }
        // formats.md §2.4: τ=999 -> 0.0063, τ=0 -> 0.9901, τ=250 -> 0.511, τ=100 -> 0.745, τ=500 -> 0.225.
        XCTAssertEqual(schedule.flowTimes[999], 0.0063, accuracy: 0.00005)
        XCTAssertEqual(schedule.flowTimes[0], 0.9901, accuracy: 0.00005)
        XCTAssertEqual(schedule.flowTimes[250], 0.511, accuracy: 0.0005)
        XCTAssertEqual(schedule.flowTimes[100], 0.745, accuracy: 0.0005)
        XCTAssertEqual(schedule.flowTimes[500], 0.225, accuracy: 0.0005)
    }

    func testFractionalStepInvertsTheTable() {
        let schedule = DDPMSchedule.dit
        for tau in [0, 1, 97, 255, 500, 998, 999] {
            XCTAssertEqual(schedule.fractionalStep(flowTime: schedule.flowTimes[tau]), Double(tau), accuracy: 1e-9)
        }
        // Halfway in flow time between two steps is halfway in τ; outside the table the end steps.
        let mid = (schedule.flowTimes[300] + schedule.flowTimes[301]) / 2
        XCTAssertEqual(schedule.fractionalStep(flowTime: mid), 300.5, accuracy: 1e-9)
        XCTAssertEqual(schedule.fractionalStep(flowTime: 0), 999)
        XCTAssertEqual(schedule.fractionalStep(flowTime: 1), 0)
        // Matching step: the state's signal-to-noise ratio equals the flow time's, sqrt(ᾱ/(1−ᾱ)) = t/(1−t).
        for t in [0.05, 0.3, 0.5, 0.75, 0.95] {
            let alphaBar = referenceAlphaBar(schedule.fractionalStep(flowTime: t))
            XCTAssertEqual((alphaBar / (1 - alphaBar)).squareRoot(), t / (1 - t), accuracy: 1e-9 * t / (1 - t))
        }
    }

    func testPerfectEpsilonOracleGivesTheExactGaussianVelocity() throws {
        let data = GaussianData(mean: [0.5, -1, 0, 2], std: [0.3, 1, 2, 0.5])
        let field = perfectEpsilonField(data)
        // States as the path produces them: x = t·(mean + std·a) + (1−t)·b.
        let a: [Double] = [0.7, -0.4, 1.3, -2.1], b: [Double] = [-1.1, 0.2, 0.9, 1.6]
        func state(_ t: Double) -> [Float] { (0..<4).map { Float(t * (data.mean[$0] + data.std[$0] * a[$0]) + (1 - t) * b[$0]) } }
        // Inside the table: exact up to float32 (ε̂ rounding is amplified by 1/t near t = 0.0063).
        for t in [0.0063, 0.02, 0.2, 0.5, 0.77, 0.98, 0.99] {
            let x = state(t)
            let v = try field.velocity(x: x, t: Float(t), labels: [0, 0, 0, 0], batch: 4)
            assertClose(v, data.velocity(x: x, t: t), tolerance: 1e-4, "velocity at t=\(t)")
        }
        // Clamped ends (t = 0: pure noise; t = 1: data): the network runs at the end step, whose noise
        // level differs from the state's, so the result is close but not exact.
        for t in [0.0, 0.003, 0.995, 1.0] {
            let x = state(t)
            let v = try field.velocity(x: x, t: Float(t), labels: [0, 0, 0, 0], batch: 4)
            assertClose(v, data.velocity(x: x, t: t), tolerance: 2e-2, "clamped velocity at t=\(t)")
            XCTAssertTrue(v.allSatisfy(\.isFinite))
        }
        XCTAssertEqual(field.count.fieldCalls, 11)
    }

    func testVelocityIsContinuousAtTheEndOfTheTable() throws {
        let data = GaussianData(mean: [0.2], std: [0.8])
        let field = perfectEpsilonField(data)
        let edge = DDPMSchedule.dit.flowTimeRange.lowerBound
        let below = try field.velocity(x: [0.9], t: Float(edge) * (1 - 1e-5), labels: [0], batch: 1)
        let above = try field.velocity(x: [0.9], t: Float(edge) * (1 + 1e-5), labels: [0], batch: 1)
        XCTAssertEqual(below[0], above[0], accuracy: 1e-3)
    }

    func testFlowSamplerOnThePerfectOracleReproducesTheGaussian() throws {
        let data = GaussianData(mean: [0.5, -1, 0, 2, 1], std: [0.3, 1, 2, 0.05, 1.5])
        let field = perfectEpsilonField(data, channels: 5)
        let noise: [Float] = [1.2, -0.3, 0.8, -1.7, 0.05, -0.6, 2.1, 0.4, -1.1, 0.9]  // [2, 5, 1, 1]
        let out = try FixedGridSolver.integrate(field, noise: noise, labels: [0, 1], batch: 2, method: .heun, points: 201)
        assertClose(out, data.sample(noise: noise), tolerance: 1e-3, "Heun, 200 steps, perfect ε")
    }
}
