import PPModel

/// What a sampling run costs in network arithmetic, from the architecture alone (no timing).
public enum SamplingCost {
    /// FLOPs per evaluation averaged over an Euler run of `steps` steps on linspace(0, 1, steps + 1): each
    /// evaluation at t = grid[i] runs the level that t selects, as the sampler picks it. SiT's per-evaluation
    /// FLOPs divided by this is the ideal speedup of a PPFlow model on the same grid.
    public static func eulerAverageFLOPs(config: ModelConfig, steps: Int, latentSide: Int) -> Double {
        let grid = FixedGridSolver.timeGrid(points: steps + 1)
        let total = grid.dropLast().reduce(0.0) { sum, t in
            sum + config.forwardFLOPs(level: config.level(forTime: t), latentSide: latentSide)
        }
        return total / Double(steps)
    }
}
