import PPCheckpoint
import PPFileIO
import PPModel

/// What the sampler does with the part of the starting noise a coarse pyramid level cannot see.
///
/// A level whose patch projection is blind to some directions (`UnseenInput`: the repeat rule's coarse
/// projection averages each group of pixels it merges) cannot denoise them: its velocity does not depend
/// on them, so while it runs they keep the starting noise z at full strength, where the flow
/// x_t = t·x1 + (1 - t)·z has (1 - t)·z. The finer level then takes over with far more high-frequency
/// noise than it was trained for. At the first evaluation of the level that sees them (time t) the sampler
/// removes that noise; whatever the coarse level wrote into those directions (its prediction of the data's
/// detail) stays. Fine-tuned projections see every direction, so nothing changes for them.
public enum UnseenNoise: String, CaseIterable, Sendable {
    /// Remove all of z's unseen component: the default, chosen by sample quality (docs/QUALITY.md: on the
    /// digits example FD 21.3 -> 16.8 for the untuned calibrated PPFlow-2, against 17.6 for `flow`).
    case drop
    /// Remove t·z's unseen component, leaving the (1 - t)·z the flow has at time t.
    case flow
    /// Leave it, as the official PPFlow sampler does: its samples exactly.
    case keep

    /// The share of z's unseen component removed at a switch at time t.
    func share(at t: Float) -> Float {
        switch self { case .drop: return 1; case .flow: return t; case .keep: return 0 }
    }
}

/// The unseen spaces of a velocity pyramid model's levels, found once per model.
public struct UnseenNoisePlan {
    public let config: ModelConfig
    public let mode: UnseenNoise
    /// Per level, coarse to fine.
    public let unseen: [UnseenInput]
    /// Unseen dimensions per patch of each level.
    public var dimensions: [Int] { unseen.map(\.dimensions) }

    /// Nil when there is nothing to remove: `keep`, one level, an epsilon model (its state is not the linear
    /// flow's), or every level seeing everything.
    public init?(model: Model, objective: Objective, mode: UnseenNoise = .drop) {
        guard mode != .keep, objective == .velocity, model.config.levels > 1 else { return nil }
        let levels = (0..<model.config.levels).map { UnseenInput(weights: model.weights, level: $0) }
        guard levels.contains(where: { $0.dimensions > 0 }) else { return nil }
        config = model.config
        self.mode = mode
        unseen = levels
    }

    /// The removals for one start: the unseen component of its noise at every level. Refuses a pyramid whose
    /// unseen spaces are not nested coarse to fine (each level blind only to what the coarser ones were
    /// blind to): a direction seen earlier has been partly denoised already, and no share removes the rest.
    /// No initializer of the toolkit writes such a model.
    public func removal(noise: [Float], batch: Int) throws -> UnseenNoiseRemoval {
        let parts = unseen.map { $0.project(noise, batch: batch) }  // per level [B, C, S, S]
        for level in 1..<parts.count where unseen[level].dimensions > 0 {
            let again = unseen[level - 1].project(parts[level], batch: batch)
            var error: Float = 0, size: Float = 0
            for i in again.indices { error += (again[i] - parts[level][i]) * (again[i] - parts[level][i]); size += parts[level][i] * parts[level][i] }
            guard error <= 1e-6 * size else {
                throw PPError(.usage, entry: "--unseen-noise", "level \(level) cannot see directions that level \(level - 1) sees: "
                    + "the unseen noise has no defined removal here; sample with --unseen-noise keep")
            }
        }
        return UnseenNoiseRemoval(config: config, mode: mode, parts: parts)
    }
}

/// The unseen-noise removals of one start, applied by the ODE solver where the level changes.
public struct UnseenNoiseRemoval {
    let config: ModelConfig
    let mode: UnseenNoise
    /// Per level: the start noise's component the level cannot see, [B, C, S, S].
    let parts: [[Float]]

    func level(_ t: Float) -> Int { config.level(forTime: t) }

    /// x [B, C, S, S] about to be evaluated at time t by level `to` after level `from` (coarser):
    /// x -= share(t)·(unseen(from) - unseen(to)) of the start noise.
    func apply(_ x: inout [Float], from: Int, to: Int, t: Float) {
        guard to > from else { return }
        let seenNow = parts[from], stillUnseen = parts[to], share = mode.share(at: t)
        for i in x.indices { x[i] -= share * (seenNow[i] - stillUnseen[i]) }
    }
}
