import Foundation

/// DiT's DDPM noise schedule (`create_diffusion` defaults): 1000 steps, betas = linspace(1e-4, 0.02) in
/// float64, alphā_τ = ∏_{s<=τ} (1 - beta_s); x_τ = sqrt(alphā_τ)·data + sqrt(1 - alphā_τ)·ε.
/// τ = 0 is almost clean, τ = 999 almost pure noise.
///
/// The link to flow time (SiT: x_t = t·data + (1-t)·noise, t = 0 noise): both are a data + b noise, so they
/// describe the same distribution up to a scale k when
///     k·t = sqrt(alphā),  k·(1-t) = sqrt(1-alphā).
/// The ratio gives the matching step, sqrt(alphā)/sqrt(1-alphā) = t/(1-t) (the square root of the SNR), i.e.
///     alphā(t) = t² / (t² + (1-t)²),  t(τ) = sqrt(alphā)/(sqrt(alphā) + sqrt(1-alphā)),
/// and the unit-variance condition alphā + (1-alphā) = 1 fixes k = 1/sqrt(t² + (1-t)²) = sqrt(alphā)/t.
/// So the DDPM state is x_DDPM = x_t·sqrt(alphā)/t, with the very same noise ε, and the network's ε̂ gives
/// data ≈ (x_t - (1-t)·ε̂)/t and v = data - ε = (x_t - ε̂)/t.
public struct DDPMSchedule: Sendable {
    /// [steps] in float64.
    public let betas: [Double]
    /// [steps] cumulative products of (1 - beta).
    public let alphaBars: [Double]
    /// [steps] flow time matching each step; strictly decreasing in τ.
    public let flowTimes: [Double]

    /// DiT's schedule: linear betas 1e-4 ... 0.02 over 1000 steps.
    public static let dit = DDPMSchedule(steps: 1000, betaStart: 1e-4, betaEnd: 0.02)

    public init(steps: Int, betaStart: Double, betaEnd: Double) {
        precondition(steps >= 2, "a DDPM schedule needs at least 2 steps")
        // numpy.linspace: start + i·(end - start)/(steps - 1), the last value exactly `end`.
        let delta = (betaEnd - betaStart) / Double(steps - 1)
        betas = (0..<steps).map { i in i == steps - 1 ? betaEnd : betaStart + Double(i) * delta }
        var product = 1.0
        alphaBars = betas.map { beta in product *= 1 - beta; return product }
        flowTimes = alphaBars.map { DDPMSchedule.flowTime(alphaBar: $0) }
    }

    public var steps: Int { betas.count }

    /// t = sqrt(alphā)/(sqrt(alphā) + sqrt(1-alphā)).
    public static func flowTime(alphaBar: Double) -> Double {
        let a = alphaBar.squareRoot(), s = (1 - alphaBar).squareRoot()
        return a / (a + s)
    }

    /// Flow times the table covers: t(τ = steps-1) ≈ 0.0063 ... t(τ = 0) ≈ 0.990 for DiT.
    public var flowTimeRange: ClosedRange<Double> { flowTimes[steps - 1]...flowTimes[0] }

    /// The fractional DDPM step whose flow time is `t`, by linear interpolation of τ between the two
    /// neighbouring integer steps of the table (as Diff2Flow's `convert_fm_t_to_dm_t`); clamped to
    /// [0, steps-1] outside the covered range.
    public func fractionalStep(flowTime t: Double) -> Double {
        if t >= flowTimes[0] { return 0 }
        if t <= flowTimes[steps - 1] { return Double(steps - 1) }
        // flowTimes decreases: find i with flowTimes[i] > t >= flowTimes[i+1].
        var low = 0, high = steps - 1
        while high - low > 1 {
            let mid = (low + high) / 2
            if flowTimes[mid] > t { low = mid } else { high = mid }
        }
        let fraction = (flowTimes[low] - t) / (flowTimes[low] - flowTimes[high])
        return Double(low) + fraction
    }

    /// alphā at a fractional step, linearly interpolated between integer steps (for inspection and tests).
    public func alphaBar(atStep tau: Double) -> Double {
        let clamped = min(max(tau, 0), Double(steps - 1))
        let i = min(Int(clamped), steps - 2)
        let f = clamped - Double(i)
        return alphaBars[i] * (1 - f) + alphaBars[i + 1] * f
    }
}
