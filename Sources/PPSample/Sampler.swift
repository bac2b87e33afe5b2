import PPFileIO
import PPTensor

/// Samples and what they cost.
public struct SampleResult: Sendable {
    /// [B, C, S, S] latents at t = 1.
    public var samples: [Float]
    /// [B, C, S, S]
    public var shape: [Int]
    /// [B]
    public var labels: [Int32]
    public var count: EvaluationCount
}

public enum Sampler {
    /// Integrates `field` from `start` with `method` on `points` grid points (`points - 1` steps) and reports
    /// the evaluations spent and saved by this run.
    /// With `unseenNoise`, the starting noise coarse levels cannot see is removed where finer levels take over.
    public static func run(_ field: VelocityField, start: SampleStart, method: ODEMethod, points: Int,
                           unseenNoise: UnseenNoisePlan? = nil,
                           progress: ((Int, Int) -> Void)? = nil) throws -> SampleResult {
        guard start.channels == field.channels else {
            throw PPError(.usage, "the noise has \(start.channels) channels, the model \(field.channels)")
        }
        let before = field.count
        let samples = try FixedGridSolver.integrate(field, noise: start.noise, labels: start.labels, batch: start.batch,
                                                    method: method, points: points,
                                                    unseenNoise: try unseenNoise?.removal(noise: start.noise, batch: start.batch),
                                                    progress: progress)
        let after = field.count
        let spent = EvaluationCount(evaluations: after.evaluations - before.evaluations,
                                    savedEvaluations: after.savedEvaluations - before.savedEvaluations,
                                    fieldCalls: after.fieldCalls - before.fieldCalls)
        return SampleResult(samples: samples, shape: [start.batch, start.channels, start.side, start.side],
                            labels: start.labels, count: spent)
    }
}
