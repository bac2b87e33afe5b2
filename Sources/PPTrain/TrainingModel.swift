import PPKernels
import PPTensor
import PPModel

/// One training batch in the caller's sample order.
public struct TrainBatch {
    public var x1: [Float]   // [B, C, S, S] data
    public var x0: [Float]   // [B, C, S, S] noise
    public var t: [Float]    // [B] flow time, 0 = noise, 1 = data
    public var y: [Int]      // [B] class labels (K = null class)
    public var count: Int { t.count }

    public init(x1: [Float], x0: [Float], t: [Float], y: [Int]) {
        self.x1 = x1; self.x0 = x0; self.t = t; self.y = y
    }
}

/// Which tokens attend to each other in a training batch.
public enum AttentionScope: Sendable {
    /// Every sample attends only to its own tokens (the correct objective).
    case perSample
    /// Bit-parity with the official PPFlow trainer: coarse samples are packed `k` at a time into one
    /// sequence of the finest length with their tokens INTERLEAVED (position m·k + j holds token m of
    /// sample j), while the attention mask keeps contiguous blocks of T positions. Each block therefore
    /// holds a band of T/k token rows of all k samples, and samples of a pack attend to each other.
    /// The official fixtures `ref_ppf*_train_step` were produced this way. Needs the samples of each
    /// level in groups of k (4 at the coarsest level, 2 at the 3-level middle one).
    case officialPacking
}

/// Bump allocator of offsets into one Float arena, 16-float aligned.
struct ArenaPlanner {
    var total = 0
    mutating func take(_ count: Int) -> Int {
        let offset = total
        total += (count + 15) & ~15
        return offset
    }
}

/// Offsets (into the activation arena) of what one block's backward needs, for one level group.
struct BlockSlots {
    var input = 0     // [n, T, D] residual stream entering the block
    var xhat1 = 0     // [n, T, D] LayerNorm 1 output
    var invStd1 = 0   // [n·T]
    var h1 = 0        // [n, T, D] modulated
    var qkv = 0       // [n, T, 3D]
    var probs = 0     // [n, H, T, T]
    var attnOut = 0   // [n, T, D]
    var projOut = 0   // [n, T, D]
    var mid = 0       // [n, T, D] residual after attention
    var xhat2 = 0     // [n, T, D]
    var invStd2 = 0   // [n·T]
    var h2 = 0        // [n, T, D]
    var fc1Out = 0    // [n, T, 4D] before GELU
    var geluOut = 0   // [n, T, 4D]
    var fc2Out = 0    // [n, T, D]
}

/// The samples of one pyramid level, run as one batch (samples never attend to each other).
struct LevelGroup {
    let geometry: LevelGeometry
    let start: Int          // first sample in level-sorted order
    let count: Int          // n
    var input = 0           // [n, Cl, Hl, Wl] x_t in the level layout
    var target = 0          // [n, Cl, Hl, Wl] x1 - x0 in the level layout
    var patches = 0         // [n, T, Cl·p·p]
    var blocks: [BlockSlots] = []
    var output = 0          // [n, T, D] residual stream after the last block
    var xhatFinal = 0       // [n, T, D]
    var invStdFinal = 0     // [n·T]
    var hFinal = 0          // [n, T, D] modulated final features
    var tokensOut = 0       // [n, T, p·p·Cout_l]
    var image = 0           // [n, Cout_l, Hl, Wl] unpatchified output
    var dImage = 0          // [n, Cout_l, Hl, Wl]
    /// Official packing: attention row r of the regrouped [n, T] token grid reads token row packing[r]; nil = per sample.
    var packing: [Int]? = nil
    var packedQKV: [Int] = []  // depth × [n, T, 3D] qkv in the regrouped order (official packing only)
}

/// Activation memory for one batch shape (the number of samples at each level), planned once and
/// reused by every step with that shape.
final class ActivationPlan {
    let levelCounts: [Int]
    let batch: Int
    var groups: [LevelGroup] = []
    // Conditioning, whole batch in level-sorted order.
    var timeFeatures = 0    // [B, 256]
    var timeHidden = 0      // [B, D] before SiLU
    var timeHiddenAct = 0   // [B, D] after SiLU
    var condition = 0       // [B, D] c = t_emb + y_emb + level_emb
    var conditionAct = 0    // [B, D] SiLU(c)
    var modulations: [Int] = []  // depth × [B, 6D]
    var finalModulation = 0 // [B, 2D]
    // Gradients of the conditioning path.
    var dModulations: [Int] = [] // depth × [B, 6D]
    var dFinalModulation = 0     // [B, 2D]
    var dConditionAct = 0   // [B, D]
    var dCondition = 0      // [B, D]
    var dTimeHiddenAct = 0  // [B, D]
    var dTimeHidden = 0     // [B, D]
    // Backward scratch shared by the level groups, sized for the largest.
    var dResidual = 0       // [n, T, D]
    var dScratchA = 0       // [n, T, D]
    var dScratchB = 0       // [n, T, D]
    var dQKV = 0            // [n, T, 3D]
    var dHiddenA = 0        // [n, T, 4D]
    var dHiddenB = 0        // [n, T, 4D]
    var dTokens = 0         // [n, T, p·p·Cout_l]
    let arena: UnsafeMutablePointer<Float>
    let arenaCount: Int

    init(config: TrainConfig, levelCounts: [Int], scope: AttentionScope) throws {
        self.levelCounts = levelCounts
        let B = levelCounts.reduce(0, +), D = config.hidden, F = config.mlpHidden, p = config.patch
        batch = B
        var plan = ArenaPlanner()
        timeFeatures = plan.take(B * 256)
        timeHidden = plan.take(B * D); timeHiddenAct = plan.take(B * D)
        condition = plan.take(B * D); conditionAct = plan.take(B * D)
        modulations = (0..<config.depth).map { _ in plan.take(B * 6 * D) }
        finalModulation = plan.take(B * 2 * D)
        dModulations = (0..<config.depth).map { _ in plan.take(B * 6 * D) }
        dFinalModulation = plan.take(B * 2 * D)
        dConditionAct = plan.take(B * D); dCondition = plan.take(B * D)
        dTimeHiddenAct = plan.take(B * D); dTimeHidden = plan.take(B * D)
        var start = 0, largestRows = 0, largestTokensOut = 0
        for (level, n) in levelCounts.enumerated() where n > 0 {
            let g = config.geometry(level: level)
            let T = g.tokens, rows = n * T
            var group = LevelGroup(geometry: g, start: start, count: n)
            if scope == .officialPacking {
                let finest = (config.side / p) * (config.side / p), k = finest / T
                guard n % k == 0 else {
                    throw PPError(.usage, "official packing needs the \(n) samples of level \(level) in groups of \(k)")
                }
                if k > 1 {
                    // Pack P holds samples P·k ..< P·k + k; its position m·k + j is token m of sample P·k + j.
                    var packing = [Int](repeating: 0, count: rows)
                    for pack in 0..<(n / k) { for m in 0..<T { for j in 0..<k {
                        packing[pack * k * T + m * k + j] = (pack * k + j) * T + m
                    } } }
                    group.packing = packing
                    group.packedQKV = (0..<config.depth).map { _ in plan.take(rows * 3 * D) }
                }
            }
            group.input = plan.take(n * g.channels * g.height * g.width)
            group.target = plan.take(n * g.channels * g.height * g.width)
            group.patches = plan.take(rows * g.channels * p * p)
            for _ in 0..<config.depth {
                var s = BlockSlots()
                s.input = plan.take(rows * D)
                s.xhat1 = plan.take(rows * D); s.invStd1 = plan.take(rows); s.h1 = plan.take(rows * D)
                s.qkv = plan.take(rows * 3 * D); s.probs = plan.take(n * config.heads * T * T)
                s.attnOut = plan.take(rows * D); s.projOut = plan.take(rows * D); s.mid = plan.take(rows * D)
                s.xhat2 = plan.take(rows * D); s.invStd2 = plan.take(rows); s.h2 = plan.take(rows * D)
                s.fc1Out = plan.take(rows * F); s.geluOut = plan.take(rows * F); s.fc2Out = plan.take(rows * D)
                group.blocks.append(s)
            }
            group.output = plan.take(rows * D)
            group.xhatFinal = plan.take(rows * D); group.invStdFinal = plan.take(rows); group.hFinal = plan.take(rows * D)
            group.tokensOut = plan.take(rows * p * p * g.outputChannels)
            group.image = plan.take(n * g.outputChannels * g.height * g.width)
            group.dImage = plan.take(n * g.outputChannels * g.height * g.width)
            groups.append(group)
            largestRows = max(largestRows, rows)
            largestTokensOut = max(largestTokensOut, rows * p * p * g.outputChannels)
            start += n
        }
        dResidual = plan.take(largestRows * D); dScratchA = plan.take(largestRows * D); dScratchB = plan.take(largestRows * D)
        dQKV = plan.take(largestRows * 3 * D)
        dHiddenA = plan.take(largestRows * max(F, 3 * D))  // also the regrouped dQKV
        dHiddenB = plan.take(largestRows * F)
        dTokens = plan.take(largestTokensOut)
        arenaCount = plan.total
        arena = UnsafeMutablePointer<Float>.allocate(capacity: max(1, plan.total))
        arena.initialize(repeating: 0, count: max(1, plan.total))
    }

    deinit { arena.deallocate() }

    @inline(__always) func at(_ offset: Int) -> UnsafeMutablePointer<Float> { arena + offset }
}

/// A SiT / PPFlow network for training: forward that keeps what backward needs, hand-written backward
/// into a flat gradient buffer, and the flow-matching loss of the official PPFlow trainer.
public final class TrainingModel {
    public let config: TrainConfig
    public let layout: ParameterLayout
    /// [P] parameters in `layout` order.
    public var parameters: [Float]
    /// [P] gradients of the last `forwardBackward` (frozen tensors stay zero).
    public var gradients: [Float]
    /// Floating-point operations of the matrix products of the last forward + backward (2·m·n·k each).
    public private(set) var matmulFlops: Double = 0
    /// Which tokens attend to each other (per sample unless parity with the official trainer is wanted).
    public var attentionScope: AttentionScope = .perSample
    private var plans: [[Int]: ActivationPlan] = [:]

    public init(config: TrainConfig, parameters: [Float]) {
        self.config = config
        layout = ParameterLayout(config: config.model)
        precondition(parameters.count == layout.totalCount, "parameter buffer does not match the layout")
        self.parameters = parameters
        gradients = [Float](repeating: 0, count: layout.totalCount)
    }

    /// Checks the exact key set and every shape (ModelParameters) and copies the tensors in.
    public convenience init(config: TrainConfig, tensors: TensorDict, origin: String = "model") throws {
        let values: [Float]
        do { values = try ModelParameters(config: config.model, tensors: tensors).values } catch let error as PPError { throw error.inFile(origin) }
        self.init(config: config, parameters: values)
    }

    /// Trains the values of PPModel parameters (same flat layout); heads and sizes come from their config.
    public convenience init(model: ModelParameters) {
        self.init(config: TrainConfig(model: model.config), parameters: model.values)
    }

    /// Bytes of activation memory planned for all batch shapes seen so far.
    public var activationBytes: Int { plans.values.reduce(0) { $0 + $1.arenaCount * 4 } }

    /// Forward, loss and backward for one batch; gradients land in `gradients` (overwritten).
    /// Returns the mean loss and the per-sample losses in the caller's sample order.
    public func forwardBackward(_ batch: TrainBatch) throws -> (loss: Float, perSample: [Float]) {
        let C = config.channels, S = config.side, B = batch.count
        guard B > 0, batch.x1.count == B * C * S * S, batch.x0.count == B * C * S * S, batch.y.count == B else {
            throw PPError(.usage, "training batch: x1, x0 must be [\(B), \(C), \(S), \(S)] and y [\(B)]")
        }
        for label in batch.y where label < 0 || label > config.classes {
            throw PPError(.usage, "training batch: label \(label) is outside 0...\(config.classes)")
        }
        // Level-sorted order (stable): samples of a level are contiguous.
        let levels = batch.t.map { config.level(forTime: $0) }
        let order = (0..<B).sorted { (levels[$0], $0) < (levels[$1], $1) }
        var counts = [Int](repeating: 0, count: config.levels)
        for l in levels { counts[l] += 1 }
        let plan: ActivationPlan
        let planKey = counts + [attentionScope == .perSample ? 0 : 1]
        if let existing = plans[planKey] { plan = existing } else {
            plan = try ActivationPlan(config: config, levelCounts: counts, scope: attentionScope)
            plans[planKey] = plan
        }
        matmulFlops = 0
        var sortedLoss = [Double](repeating: 0, count: B)
        let sortedT = order.map { batch.t[$0] }, sortedY = order.map { batch.y[$0] }, sortedLevel = order.map { levels[$0] }
        parameters.withUnsafeBufferPointer { pp in
            gradients.withUnsafeMutableBufferPointer { gp in
                let P = UnsafeMutablePointer(mutating: pp.baseAddress!), G = gp.baseAddress!
                G.update(repeating: 0, count: layout.totalCount)
                for offset in plan.dModulations { plan.at(offset).update(repeating: 0, count: B * 6 * config.hidden) }
                plan.at(plan.dFinalModulation).update(repeating: 0, count: B * 2 * config.hidden)
                prepareInputs(plan, batch: batch, order: order)
                forwardConditioning(plan, P: P, t: sortedT, y: sortedY, level: sortedLevel)
                for group in plan.groups {
                    forwardGroup(plan, group, P: P)
                    lossAndGradient(plan, group, batch: B, losses: &sortedLoss)
                }
                for group in plan.groups { backwardGroup(plan, group, P: P, G: G) }
                backwardConditioning(plan, P: P, G: G, y: sortedY, level: sortedLevel)
            }
        }
        var perSample = [Float](repeating: 0, count: B)
        for (sortedIndex, original) in order.enumerated() { perSample[original] = Float(sortedLoss[sortedIndex]) }
        let mean = sortedLoss.reduce(0, +) / Double(B)
        return (Float(mean), perSample)
    }

    // MARK: Inputs

    /// x_t = t·x1 + (1-t)·x0 and the target x1 - x0, each in its level's layout.
    private func prepareInputs(_ plan: ActivationPlan, batch: TrainBatch, order: [Int]) {
        let C = config.channels, S = config.side, sampleSize = C * S * S
        var interpolated = [Float](repeating: 0, count: sampleSize)  // [C, S, S]
        var velocity = [Float](repeating: 0, count: sampleSize)      // [C, S, S]
        for group in plan.groups {
            let g = group.geometry, levelSize = g.channels * g.height * g.width
            for i in 0..<group.count {
                let source = order[group.start + i], t = batch.t[source], base = source * sampleSize
                for e in 0..<sampleSize {
                    let a = batch.x1[base + e], b = batch.x0[base + e]
                    interpolated[e] = t * a + (1 - t) * b
                    velocity[e] = a - b
                }
                let inputDst = plan.at(group.input + i * levelSize), targetDst = plan.at(group.target + i * levelSize)
                interpolated.withUnsafeBufferPointer { xs in velocity.withUnsafeBufferPointer { us in
                    switch g.layout {
                    case .full:
                        inputDst.update(from: xs.baseAddress!, count: sampleSize)
                        targetDst.update(from: us.baseAddress!, count: sampleSize)
                    case .square:
                        Kernels.downSquare(xs.baseAddress!, inputDst, batch: 1, channels: C, height: S, width: S)
                        Kernels.downSquare(us.baseAddress!, targetDst, batch: 1, channels: C, height: S, width: S)
                    case .width:
                        Kernels.downW(xs.baseAddress!, inputDst, batch: 1, channels: C, height: S, width: S)
                        Kernels.downW(us.baseAddress!, targetDst, batch: 1, channels: C, height: S, width: S)
                    }
                } }
            }
        }
    }

    // MARK: Products (counted)

    private func linearForward(_ input: UnsafePointer<Float>, _ P: UnsafeMutablePointer<Float>, _ key: String,
                               _ output: UnsafeMutablePointer<Float>, rows: Int, inFeatures: Int, outFeatures: Int) {
        Kernels.linear(input: input, weight: P + layout.start(key + ".weight"), bias: P + layout.start(key + ".bias"),
                       output: output, rows: rows, inFeatures: inFeatures, outFeatures: outFeatures)
        matmulFlops += 2 * Double(rows) * Double(inFeatures) * Double(outFeatures)
    }

    private func linearBackward(_ input: UnsafePointer<Float>, _ P: UnsafeMutablePointer<Float>, _ G: UnsafeMutablePointer<Float>,
                                _ key: String, dOutput: UnsafePointer<Float>, dInput: UnsafeMutablePointer<Float>?,
                                rows: Int, inFeatures: Int, outFeatures: Int) {
        let w = layout.start(key + ".weight"), b = layout.start(key + ".bias")
        Backward.linear(input: input, weight: P + w, dOutput: dOutput, dInput: dInput, dWeight: G + w, dBias: G + b,
                        rows: rows, inFeatures: inFeatures, outFeatures: outFeatures)
        matmulFlops += (dInput == nil ? 2 : 4) * Double(rows) * Double(inFeatures) * Double(outFeatures)
    }

    // MARK: Forward

    private func forwardConditioning(_ plan: ActivationPlan, P: UnsafeMutablePointer<Float>, t: [Float], y: [Int], level: [Int]) {
        let B = plan.batch, D = config.hidden
        t.withUnsafeBufferPointer { Kernels.timestepFeatures($0.baseAddress!, count: B, output: plan.at(plan.timeFeatures)) }
        linearForward(plan.at(plan.timeFeatures), P, "t_embedder.mlp.0", plan.at(plan.timeHidden), rows: B, inFeatures: 256, outFeatures: D)
        Kernels.silu(plan.at(plan.timeHidden), plan.at(plan.timeHiddenAct), count: B * D)
        let c = plan.at(plan.condition)
        linearForward(plan.at(plan.timeHiddenAct), P, "t_embedder.mlp.2", c, rows: B, inFeatures: D, outFeatures: D)
        let labels = P + layout.start("y_embedder.embedding_table.weight")
        let levelTable = config.levels > 1 ? P + layout.start("level_embedder.embedding_table.weight") : nil
        for b in 0..<B {
            let row = c + b * D, label = labels + y[b] * D
            for d in 0..<D { row[d] += label[d] }
            if let levelTable { let lv = levelTable + level[b] * D; for d in 0..<D { row[d] += lv[d] } }
        }
        Kernels.silu(c, plan.at(plan.conditionAct), count: B * D)
        for l in 0..<config.depth {
            linearForward(plan.at(plan.conditionAct), P, "blocks.\(l).adaLN_modulation.1", plan.at(plan.modulations[l]),
                          rows: B, inFeatures: D, outFeatures: 6 * D)
        }
        linearForward(plan.at(plan.conditionAct), P, "final_layer.adaLN_modulation.1", plan.at(plan.finalModulation),
                      rows: B, inFeatures: D, outFeatures: 2 * D)
    }

    private func forwardGroup(_ plan: ActivationPlan, _ group: LevelGroup, P: UnsafeMutablePointer<Float>) {
        let g = group.geometry, n = group.count, T = g.tokens, rows = n * T
        let D = config.hidden, F = config.mlpHidden, p = config.patch, H = config.heads
        // Patch embedding plus the frozen position table.
        Kernels.patchify(plan.at(group.input), plan.at(group.patches), batch: n, channels: g.channels,
                         height: g.height, width: g.width, patch: p)
        var x = group.blocks.first.map { plan.at($0.input) } ?? plan.at(group.output)
        linearForward(plan.at(group.patches), P, g.embedKey, x, rows: rows, inFeatures: g.channels * p * p, outFeatures: D)
        let position = P + layout.start(g.positionKey)  // [T, D]
        for i in 0..<n { let row = x + i * T * D; for e in 0..<(T * D) { row[e] += position[e] } }

        for (l, s) in group.blocks.enumerated() {
            let mod = plan.at(plan.modulations[l] + group.start * 6 * D)  // [n, 6D] rows, chunks of D
            let key = "blocks.\(l)."
            // Attention branch.
            Kernels.layerNorm(input: x, output: plan.at(s.xhat1), rows: rows, dim: D, eps: 1e-6, inverseStd: plan.at(s.invStd1))
            plan.at(s.h1).update(from: plan.at(s.xhat1), count: rows * D)
            Kernels.modulate(plan.at(s.h1), batch: n, tokens: T, dim: D, shift: mod, scale: mod + D, conditionStride: 6 * D)
            linearForward(plan.at(s.h1), P, key + "attn.qkv", plan.at(s.qkv), rows: rows, inFeatures: D, outFeatures: 3 * D)
            if let packing = group.packing {
                let packed = plan.at(group.packedQKV[l]), packedOut = plan.at(plan.dScratchA)
                gatherRows(plan.at(s.qkv), into: packed, rows: packing, width: 3 * D)
                Kernels.attention(qkv: packed, output: packedOut, batch: n, tokens: T, dim: D, heads: H, probabilities: plan.at(s.probs))
                scatterRows(packedOut, into: plan.at(s.attnOut), rows: packing, width: D, accumulate: false)
            } else {
                Kernels.attention(qkv: plan.at(s.qkv), output: plan.at(s.attnOut), batch: n, tokens: T, dim: D, heads: H,
                                  probabilities: plan.at(s.probs))
            }
            matmulFlops += 4 * Double(n) * Double(T) * Double(T) * Double(D)
            linearForward(plan.at(s.attnOut), P, key + "attn.proj", plan.at(s.projOut), rows: rows, inFeatures: D, outFeatures: D)
            plan.at(s.mid).update(from: x, count: rows * D)
            Kernels.gatedResidual(plan.at(s.mid), branch: plan.at(s.projOut), gate: mod + 2 * D, batch: n, tokens: T, dim: D, conditionStride: 6 * D)
            // MLP branch.
            Kernels.layerNorm(input: plan.at(s.mid), output: plan.at(s.xhat2), rows: rows, dim: D, eps: 1e-6, inverseStd: plan.at(s.invStd2))
            plan.at(s.h2).update(from: plan.at(s.xhat2), count: rows * D)
            Kernels.modulate(plan.at(s.h2), batch: n, tokens: T, dim: D, shift: mod + 3 * D, scale: mod + 4 * D, conditionStride: 6 * D)
            linearForward(plan.at(s.h2), P, key + "mlp.fc1", plan.at(s.fc1Out), rows: rows, inFeatures: D, outFeatures: F)
            Kernels.geluTanh(plan.at(s.fc1Out), plan.at(s.geluOut), count: rows * F)
            linearForward(plan.at(s.geluOut), P, key + "mlp.fc2", plan.at(s.fc2Out), rows: rows, inFeatures: F, outFeatures: D)
            let next = l + 1 < group.blocks.count ? plan.at(group.blocks[l + 1].input) : plan.at(group.output)
            next.update(from: plan.at(s.mid), count: rows * D)
            Kernels.gatedResidual(next, branch: plan.at(s.fc2Out), gate: mod + 5 * D, batch: n, tokens: T, dim: D, conditionStride: 6 * D)
            x = next
        }
        // Final layer: LayerNorm, adaLN (shift, scale), the level's output projection, unpatchify.
        let fmod = plan.at(plan.finalModulation + group.start * 2 * D)
        Kernels.layerNorm(input: plan.at(group.output), output: plan.at(group.xhatFinal), rows: rows, dim: D, eps: 1e-6,
                          inverseStd: plan.at(group.invStdFinal))
        plan.at(group.hFinal).update(from: plan.at(group.xhatFinal), count: rows * D)
        Kernels.modulate(plan.at(group.hFinal), batch: n, tokens: T, dim: D, shift: fmod, scale: fmod + D, conditionStride: 2 * D)
        let outFeatures = p * p * g.outputChannels
        linearForward(plan.at(group.hFinal), P, g.outputKey, plan.at(group.tokensOut), rows: rows, inFeatures: D, outFeatures: outFeatures)
        Kernels.unpatchify(plan.at(group.tokensOut), plan.at(group.image), batch: n, channels: g.outputChannels,
                           gridRows: g.gridRows, gridCols: g.gridCols, patch: p)
    }

    /// Per-sample mean squared error of the prediction channels against x1 - x0, and its gradient
    /// (the loss is the mean over all B samples).
    private func lossAndGradient(_ plan: ActivationPlan, _ group: LevelGroup, batch B: Int, losses: inout [Double]) {
        let g = group.geometry, plane = g.height * g.width, elements = g.channels * plane
        let image = plan.at(group.image), target = plan.at(group.target), dImage = plan.at(group.dImage)
        dImage.update(repeating: 0, count: group.count * g.outputChannels * plane)
        let scale = Float(2.0 / (Double(elements) * Double(B)))
        for i in 0..<group.count {
            let prediction = image + i * g.outputChannels * plane, u = target + i * elements
            let dPrediction = dImage + i * g.outputChannels * plane
            var sum = 0.0
            for e in 0..<elements {
                let d = prediction[e] - u[e]
                sum += Double(d) * Double(d)
                dPrediction[e] = scale * d
            }
            losses[group.start + i] = sum / Double(elements)
        }
    }

    // MARK: Token regrouping (official packing)

    /// destination[r] = source[rows[r]], rows of `width` floats.
    private func gatherRows(_ source: UnsafePointer<Float>, into destination: UnsafeMutablePointer<Float>, rows: [Int], width: Int) {
        for (r, from) in rows.enumerated() { (destination + r * width).update(from: source + from * width, count: width) }
    }

    /// destination[rows[r]] (+)= source[r], rows of `width` floats.
    private func scatterRows(_ source: UnsafePointer<Float>, into destination: UnsafeMutablePointer<Float>, rows: [Int], width: Int,
                             accumulate: Bool) {
        for (r, to) in rows.enumerated() {
            let dst = destination + to * width, src = source + r * width
            if accumulate { for e in 0..<width { dst[e] += src[e] } } else { dst.update(from: src, count: width) }
        }
    }

    // MARK: Backward

    private func backwardGroup(_ plan: ActivationPlan, _ group: LevelGroup, P: UnsafeMutablePointer<Float>, G: UnsafeMutablePointer<Float>) {
        let g = group.geometry, n = group.count, T = g.tokens, rows = n * T
        let D = config.hidden, F = config.mlpHidden, p = config.patch, H = config.heads
        let dR = plan.at(plan.dResidual), dA = plan.at(plan.dScratchA), dB = plan.at(plan.dScratchB)
        let dQKV = plan.at(plan.dQKV), dF1 = plan.at(plan.dHiddenA), dF2 = plan.at(plan.dHiddenB), dTok = plan.at(plan.dTokens)
        let outFeatures = p * p * g.outputChannels
        // Final layer.
        dTok.update(repeating: 0, count: rows * outFeatures)
        Backward.unpatchify(dImage: plan.at(group.dImage), dTokens: dTok, batch: n, channels: g.outputChannels,
                            gridRows: g.gridRows, gridCols: g.gridCols, patch: p)
        dA.update(repeating: 0, count: rows * D)
        linearBackward(plan.at(group.hFinal), P, G, g.outputKey, dOutput: dTok, dInput: dA, rows: rows, inFeatures: D, outFeatures: outFeatures)
        let fmod = plan.at(plan.finalModulation + group.start * 2 * D), dfmod = plan.at(plan.dFinalModulation + group.start * 2 * D)
        dB.update(repeating: 0, count: rows * D)
        Backward.modulate(dOutput: dA, input: plan.at(group.xhatFinal), scale: fmod + D, dInput: dB, dShift: dfmod, dScale: dfmod + D,
                          batch: n, tokens: T, dim: D, conditionStride: 2 * D)
        dR.update(repeating: 0, count: rows * D)
        Backward.layerNorm(dOutput: dB, normalized: plan.at(group.xhatFinal), inverseStd: plan.at(group.invStdFinal), dInput: dR, rows: rows, dim: D)

        for (l, s) in group.blocks.enumerated().reversed() {
            let mod = plan.at(plan.modulations[l] + group.start * 6 * D), dmod = plan.at(plan.dModulations[l] + group.start * 6 * D)
            let key = "blocks.\(l)."
            // MLP branch: next = mid + gate_mlp · fc2(gelu(fc1(modulate(LN(mid))))).
            dA.update(repeating: 0, count: rows * D)
            Backward.gatedResidual(dResidual: dR, branch: plan.at(s.fc2Out), gate: mod + 5 * D, dBranch: dA, dGate: dmod + 5 * D,
                                   batch: n, tokens: T, dim: D, conditionStride: 6 * D)
            dF1.update(repeating: 0, count: rows * F)
            linearBackward(plan.at(s.geluOut), P, G, key + "mlp.fc2", dOutput: dA, dInput: dF1, rows: rows, inFeatures: F, outFeatures: D)
            dF2.update(repeating: 0, count: rows * F)
            Backward.geluTanh(input: plan.at(s.fc1Out), dOutput: dF1, dInput: dF2, count: rows * F)
            dA.update(repeating: 0, count: rows * D)
            linearBackward(plan.at(s.h2), P, G, key + "mlp.fc1", dOutput: dF2, dInput: dA, rows: rows, inFeatures: D, outFeatures: F)
            dB.update(repeating: 0, count: rows * D)
            Backward.modulate(dOutput: dA, input: plan.at(s.xhat2), scale: mod + 4 * D, dInput: dB, dShift: dmod + 3 * D, dScale: dmod + 4 * D,
                              batch: n, tokens: T, dim: D, conditionStride: 6 * D)
            Backward.layerNorm(dOutput: dB, normalized: plan.at(s.xhat2), inverseStd: plan.at(s.invStd2), dInput: dR, rows: rows, dim: D)
            // Attention branch: mid = input + gate_msa · proj(attention(qkv(modulate(LN(input))))).
            dA.update(repeating: 0, count: rows * D)
            Backward.gatedResidual(dResidual: dR, branch: plan.at(s.projOut), gate: mod + 2 * D, dBranch: dA, dGate: dmod + 2 * D,
                                   batch: n, tokens: T, dim: D, conditionStride: 6 * D)
            dB.update(repeating: 0, count: rows * D)
            linearBackward(plan.at(s.attnOut), P, G, key + "attn.proj", dOutput: dA, dInput: dB, rows: rows, inFeatures: D, outFeatures: D)
            dQKV.update(repeating: 0, count: rows * 3 * D)
            if let packing = group.packing {
                // dA and dF1 are free here: the regrouped dOutput and dQKV.
                gatherRows(dB, into: dA, rows: packing, width: D)
                dF1.update(repeating: 0, count: rows * 3 * D)
                Backward.attention(qkv: plan.at(group.packedQKV[l]), probabilities: plan.at(s.probs), dOutput: dA, dQKV: dF1,
                                   batch: n, tokens: T, dim: D, heads: H)
                scatterRows(dF1, into: dQKV, rows: packing, width: 3 * D, accumulate: true)
            } else {
                Backward.attention(qkv: plan.at(s.qkv), probabilities: plan.at(s.probs), dOutput: dB, dQKV: dQKV,
                                   batch: n, tokens: T, dim: D, heads: H)
            }
            matmulFlops += 8 * Double(n) * Double(T) * Double(T) * Double(D)
            dA.update(repeating: 0, count: rows * D)
            linearBackward(plan.at(s.h1), P, G, key + "attn.qkv", dOutput: dQKV, dInput: dA, rows: rows, inFeatures: D, outFeatures: 3 * D)
            dB.update(repeating: 0, count: rows * D)
            Backward.modulate(dOutput: dA, input: plan.at(s.xhat1), scale: mod + D, dInput: dB, dShift: dmod, dScale: dmod + D,
                              batch: n, tokens: T, dim: D, conditionStride: 6 * D)
            Backward.layerNorm(dOutput: dB, normalized: plan.at(s.xhat1), inverseStd: plan.at(s.invStd1), dInput: dR, rows: rows, dim: D)
        }
        // Patch embedding (the position table is frozen; the input needs no gradient).
        linearBackward(plan.at(group.patches), P, G, g.embedKey, dOutput: dR, dInput: nil,
                       rows: rows, inFeatures: g.channels * p * p, outFeatures: D)
    }

    private func backwardConditioning(_ plan: ActivationPlan, P: UnsafeMutablePointer<Float>, G: UnsafeMutablePointer<Float>, y: [Int], level: [Int]) {
        let B = plan.batch, D = config.hidden
        let dSc = plan.at(plan.dConditionAct), dC = plan.at(plan.dCondition)
        dSc.update(repeating: 0, count: B * D)
        for l in 0..<config.depth {
            linearBackward(plan.at(plan.conditionAct), P, G, "blocks.\(l).adaLN_modulation.1", dOutput: plan.at(plan.dModulations[l]),
                           dInput: dSc, rows: B, inFeatures: D, outFeatures: 6 * D)
        }
        linearBackward(plan.at(plan.conditionAct), P, G, "final_layer.adaLN_modulation.1", dOutput: plan.at(plan.dFinalModulation),
                       dInput: dSc, rows: B, inFeatures: D, outFeatures: 2 * D)
        dC.update(repeating: 0, count: B * D)
        Backward.silu(input: plan.at(plan.condition), dOutput: dSc, dInput: dC, count: B * D)
        Backward.embedding(indices: y, dOutput: dC, dTable: G + layout.start("y_embedder.embedding_table.weight"), dim: D)
        if config.levels > 1 {
            Backward.embedding(indices: level, dOutput: dC, dTable: G + layout.start("level_embedder.embedding_table.weight"), dim: D)
        }
        let dThs = plan.at(plan.dTimeHiddenAct), dTh = plan.at(plan.dTimeHidden)
        dThs.update(repeating: 0, count: B * D)
        linearBackward(plan.at(plan.timeHiddenAct), P, G, "t_embedder.mlp.2", dOutput: dC, dInput: dThs, rows: B, inFeatures: D, outFeatures: D)
        dTh.update(repeating: 0, count: B * D)
        Backward.silu(input: plan.at(plan.timeHidden), dOutput: dThs, dInput: dTh, count: B * D)
        linearBackward(plan.at(plan.timeFeatures), P, G, "t_embedder.mlp.0", dOutput: dTh, dInput: nil, rows: B, inFeatures: 256, outFeatures: D)
    }
}
