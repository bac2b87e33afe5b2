import PPFileIO
import PPTensor

/// Fixed-grid ODE solvers as torchdiffeq runs them on `torch.linspace(0, 1, points)` (the official
/// SiT/PPFlow `Sampler.sample_ode` with `num_steps = points`): `points - 1` intervals from noise (t = 0)
/// to data (t = 1).
public enum ODEMethod: String, CaseIterable, Sendable {
    /// torchdiffeq `euler`: y1 = y0 + dt·f(t0, y0). One field call per interval.
    case euler
    /// torchdiffeq `heun2`: explicit RK with tableau alpha = [1], beta = [[1]], b = [1/2, 1/2]; the second
    /// stage is evaluated at exactly t1 (torchdiffeq uses t1 itself when alpha == 1, not t0 + dt).
    /// Two field calls per interval.
    case heun

    /// Field calls per interval.
    public var stagesPerStep: Int { self == .euler ? 1 : 2 }

    /// Accepts torchdiffeq's names too (`heun2`).
    public init?(name: String) {
        switch name.lowercased() {
        case "euler": self = .euler
        case "heun", "heun2": self = .heun
        default: return nil
        }
    }
}

public enum FixedGridSolver {
    /// `torch.linspace(0, 1, points)` in float32, reproduced bit for bit: step = 1/(points-1) in float32,
    /// the first half counted up from 0, the second half counted down from 1.
    public static func timeGrid(points: Int) -> [Float] {
        precondition(points >= 2, "a time grid needs at least 2 points")
        let start: Float = 0, end: Float = 1
        let step = (end - start) / Float(points - 1)
        let halfway = points / 2
        return (0..<points).map { i in
            i < halfway ? start + step * Float(i) : end - step * Float(points - 1 - i)
        }
    }

    /// Integrates `field` from x(0) = `noise` [B, C, S, S] to t = 1 on `timeGrid(points:)` and returns
    /// x(1) [B, C, S, S]. `progress(interval, intervals)` is called after each interval. With `unseenNoise`,
    /// every evaluation on a finer level than the one before it first gets the noise removal for its time
    /// (Heun's second stage too, on its own copy).
    public static func integrate(_ field: VelocityField, noise: [Float], labels: [Int32], batch: Int,
                                 method: ODEMethod, points: Int, unseenNoise: UnseenNoiseRemoval? = nil,
                                 progress: ((Int, Int) -> Void)? = nil) throws -> [Float] {
        guard points >= 2 else { throw PPError(.usage, "the sampler needs at least 2 time points (1 step), got \(points)") }
        guard batch > 0, labels.count == batch, noise.count % batch == 0 else {
            throw PPError(.usage, "noise and labels disagree: \(noise.count) values for \(labels.count) labels and batch \(batch)")
        }
        let grid = timeGrid(points: points)
        var x = noise  // [B, C, S, S]
        var level = unseenNoise?.level(grid[0]) ?? 0  // the level x's noise was last treated for
        for i in 0..<(points - 1) {
            let t0 = grid[i], t1 = grid[i + 1]
            let dt = t1 - t0
            if let unseenNoise, unseenNoise.level(t0) != level {
                unseenNoise.apply(&x, from: level, to: unseenNoise.level(t0), t: t0)
                level = unseenNoise.level(t0)
            }
            let k1 = try field.velocity(x: x, t: t0, labels: labels, batch: batch)  // [B, C, S, S]
            switch method {
            case .euler:
                for j in x.indices { x[j] += dt * k1[j] }
            case .heun:
                // Stage 2 at y0 + dt·k1 (beta = [[1]]), time t1; then y0 + dt·(k1/2 + k2/2).
                var stage = x  // [B, C, S, S]
                for j in stage.indices { stage[j] = x[j] + k1[j] * dt }
                if let unseenNoise { unseenNoise.apply(&stage, from: level, to: unseenNoise.level(t1), t: t1) }
                let k2 = try field.velocity(x: stage, t: t1, labels: labels, batch: batch)  // [B, C, S, S]
                let half = dt * 0.5
                for j in x.indices { x[j] += k1[j] * half + k2[j] * half }
            }
            progress?(i + 1, points - 1)
        }
        return x
    }
}
