import PPFileIO
import PPTensor

/// Samples a DDPM epsilon network (DiT) as a flow model through the exact change of variables of
/// `DDPMSchedule` (see there): for flow time t the network sees x·k at the fractional step τ(t) with
/// k = 1/sqrt(t² + (1-t)²) = sqrt(alphā(t))/t, and its ε̂ becomes v = (x - ε̂)/t.
///
/// Outside the table's flow-time range [t(999) ≈ 0.0063, t(0) ≈ 0.990] τ is clamped to the end step and
/// the state still gets the unit-variance scale k (continuous at both ends, and the input the network
/// saw in training: a unit-variance mix of data and noise):
/// - t < t(999): v = (x - ε̂)/t would divide two vanishing quantities (at t = 0 the state is the noise
///   itself and ε̂ ≈ x). Instead the network's data estimate at step 999,
///   d̂ = (x·k - sqrt(1-alphā₉₉₉)·ε̂)/sqrt(alphā₉₉₉), gives v = (d̂ - x)/(1 - t), the flow identity
///   x = t·d + (1-t)·ε solved for ε. Both forms agree at t = t(999); at t = 0 it is E[data | x] - x, the
///   exact velocity of the linear path there. No division by t.
/// - t > t(0): v = (x - ε̂)/t is well conditioned (t ≈ 1); the network runs at step 0.
public final class EpsilonFlowField: VelocityField {
    public let channels: Int
    public let schedule: DDPMSchedule
    public private(set) var count = EvaluationCount()
    /// The ε network: DDPM state [B, C, S, S], fractional step τ (float, as DiT's embedder takes it), the
    /// flow time it stands for (a pyramid model picks its level from it), labels [B]
    /// -> (ε̂ [B, C, S, S], evaluations spent, evaluations saved).
    public typealias EpsilonNetwork = (_ state: [Float], _ step: Float, _ flowTime: Float, _ labels: [Int32], _ batch: Int) throws
        -> (epsilon: [Float], evaluations: Int, saved: Int)
    private let network: EpsilonNetwork

    public init(channels: Int, schedule: DDPMSchedule = .dit, network: @escaping EpsilonNetwork) {
        self.channels = channels
        self.schedule = schedule
        self.network = network
    }

    public func velocity(x: [Float], t: Float, labels: [Int32], batch: Int) throws -> [Float] {
        let time = Double(t)
        guard (0...1).contains(time) else { throw PPError(.usage, "flow time \(t) outside [0, 1]") }
        let tau = schedule.fractionalStep(flowTime: time)
        let scale = 1 / (time * time + (1 - time) * (1 - time)).squareRoot()
        let state = x.map { $0 * Float(scale) }  // [B, C, S, S]
        let (epsilon, evaluations, saved) = try network(state, Float(tau), t, labels, batch)  // [B, C, S, S]
        guard epsilon.count == x.count else {
            throw PPError(.mismatch, "epsilon network returned \(epsilon.count) values for an input of \(x.count)")
        }
        count.evaluations += evaluations
        count.savedEvaluations += saved
        count.fieldCalls += 1
        var v = [Float](repeating: 0, count: x.count)  // [B, C, S, S]
        if time >= schedule.flowTimeRange.lowerBound {
            let inverseT = Float(1 / time)
            for i in v.indices { v[i] = (x[i] - epsilon[i]) * inverseT }
        } else {
            let last = schedule.alphaBars[schedule.steps - 1]
            let signal = last.squareRoot(), noise = (1 - last).squareRoot()
            for i in v.indices {
                let dataEstimate = (Double(state[i]) - noise * Double(epsilon[i])) / signal
                v[i] = Float((dataEstimate - Double(x[i])) / (1 - time))
            }
        }
        return v
    }
}
