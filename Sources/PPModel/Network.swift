import PPFileIO
import PPKernels
import PPTensor

/// Which tokens attend to each other when the samples of one level run as one batch.
public enum AttentionScope: Sendable {
    /// Every sample attends only to its own tokens (the correct objective, and all of inference).
    case perSample
    /// Bit-parity with the official PPFlow trainer: coarse samples are packed `k` at a time into one
    /// sequence of the finest length with their tokens INTERLEAVED (position m·k + j holds token m of
    /// sample j), while the attention mask keeps contiguous blocks of T positions. Each block therefore
    /// holds a band of T/k token rows of all k samples, and samples of a pack attend to each other.
    /// The official fixtures `ref_ppf*_train_step` were produced this way. Needs the samples of each
    /// level in groups of k (4 at the coarsest level, 2 at the 3-level middle one).
    case officialPacking
}

/// Where a pyramid level lives for a latent of a given side: its layout of the latent and the tensors
/// that serve it. The one definition of a level's geometry (sampling, training, FLOP counts).
public struct LevelGeometry: Sendable, Equatable {
    public let level: Int
    public let layout: LevelLayout
    public let side: Int            // S: the latent's side in the full layout
    public let channels: Int        // Cl: C, 2C (down_w) or 4C (down_square)
    public let height: Int          // Hl
    public let width: Int           // Wl
    public let gridRows: Int
    public let gridCols: Int
    public var tokens: Int { gridRows * gridCols }
    public let outputChannels: Int  // 2·Cl with learn_sigma, else Cl
    public let embedKey: String     // x_embedder.proj{,1,2}
    public let outputKey: String    // final_layer.linear{,1,2}
    public let positionKey: String  // pos_embed{,.0,.1,.2}

    public init(config: ModelConfig, level: Int, side: Int) {
        self.level = level
        self.side = side
        layout = config.levelLayouts[level]
        channels = layout.channelFactor * config.inChannels
        let grid = config.grid(level: level, latentSize: side)
        gridRows = grid.rows; gridCols = grid.cols
        height = grid.rows * config.patchSize
        width = grid.cols * config.patchSize
        outputChannels = config.learnSigma ? 2 * channels : channels
        embedKey = config.patchEmbedName(level: level)
        outputKey = config.finalLinearName(level: level)
        positionKey = config.positionEmbedName(level: level)
    }

    /// x [b, C, S, S] (full layout) -> out [b, Cl, Hl, Wl] (this level's layout).
    public func rearrange(_ x: UnsafePointer<Float>, into out: UnsafeMutablePointer<Float>, batch: Int) {
        let c = channels / layout.channelFactor
        switch layout {
        case .full: out.update(from: x, count: batch * c * side * side)
        case .square: Kernels.downSquare(x, out, batch: batch, channels: c, height: side, width: side)
        case .width: Kernels.downW(x, out, batch: batch, channels: c, height: side, width: side)
        }
    }

    /// The inverse of `rearrange` for a network output [b, Cout_l, Hl, Wl] -> [b, Cout, S, S]: with
    /// learn_sigma each half of the channels (prediction, sigma) is a level-layout tensor of Cl channels,
    /// so [b, 2, Cl, ...] is rearranged as [2b, Cl, ...].
    public func restore(_ levelImage: UnsafePointer<Float>, into out: UnsafeMutablePointer<Float>, batch: Int) {
        restoreLayout(levelImage, into: out, batch: batch * (outputChannels / channels))
    }

    /// The inverse of `rearrange`: x [b, Cl, Hl, Wl] (this level's layout) -> out [b, C, S, S].
    public func restoreLayout(_ levelImage: UnsafePointer<Float>, into out: UnsafeMutablePointer<Float>, batch: Int) {
        let c = channels / layout.channelFactor
        switch layout {
        case .full: out.update(from: levelImage, count: batch * c * side * side)
        case .square: Kernels.upSquare(levelImage, out, batch: batch, channels: c, height: side, width: side)
        case .width: Kernels.upW(levelImage, out, batch: batch, channels: c, height: side, width: side)
        }
    }
}

extension ModelConfig {
    /// The geometry of `level` for a latent of side `side` (the training size unless given).
    public func geometry(level: Int, side: Int? = nil) -> LevelGeometry {
        LevelGeometry(config: self, level: level, side: side ?? inputSize)
    }
}

/// A growable float block reused across calls, so repeated forwards do not allocate.
final class Scratch {
    private(set) var pointer: UnsafeMutablePointer<Float>
    private(set) var capacity: Int

    init() { pointer = .allocate(capacity: 1); capacity = 1 }

    /// At least `count` floats; earlier contents are lost when it grows.
    func reserve(_ count: Int) -> UnsafeMutablePointer<Float> {
        if count > capacity {
            pointer.deallocate()
            pointer = .allocate(capacity: count)
            capacity = count
        }
        return pointer
    }

    deinit { pointer.deallocate() }
}

/// Bump allocator of offsets into one float arena, 16-float aligned.
struct ArenaPlanner {
    var total = 0
    mutating func take(_ count: Int) -> Int {
        let offset = total
        total += (count + 15) & ~15
        return offset
    }
}

/// Arena offsets of one transformer block's tensors. At inference they alias (one residual stream updated
/// in place, one normalized buffer, one modulation for all blocks); when training, every tensor the
/// backward pass reads has its own slot.
struct BlockSlots {
    var modulation = 0 // [n, 6D] shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp
    var input = 0      // [n, T, D] residual stream entering the block
    var xhat1 = 0      // [n, T, D] LayerNorm 1 output
    var invStd1: Int?  // [n·T]
    var h1 = 0         // [n, T, D] modulated
    var qkv = 0        // [n, T, 3D]
    var packedQKV: Int? // [n, T, 3D] qkv regrouped for official packing
    var probs: Int?    // [n, H, T, T]
    var attnOut = 0    // [n, T, D]
    var projOut = 0    // [n, T, D]
    var mid = 0        // [n, T, D] residual after attention
    var xhat2 = 0      // [n, T, D]
    var invStd2: Int?  // [n·T]
    var h2 = 0         // [n, T, D]
    var fc1Out = 0     // [n, T, F] before GELU
    var geluOut = 0    // [n, T, F]
    var fc2Out = 0     // [n, T, D]
    var output = 0     // [n, T, D] residual stream leaving the block
}

/// One forward pass of n samples at one level: where its tensors live in the network's arena, and (when
/// it keeps activations) what its backward twin needs.
public struct ForwardPass {
    public let geometry: LevelGeometry
    public let count: Int           // n
    public let keepsActivations: Bool
    let labels: [Int]               // [n]
    let packing: [Int]?             // attention row r of the regrouped [n, T] grid reads token row packing[r]
    var timeFeatures = 0, timeHidden = 0, timeHiddenAct = 0, condition = 0, conditionAct = 0  // [n, 256], [n, D] ×4
    var patches = 0                 // [n, T, Cl·p·p]
    var blocks: [BlockSlots] = []
    var packedOut: Int?             // [n, T, D] attention output in the regrouped order
    var finalModulation = 0         // [n, 2D]
    var xhatFinal = 0               // [n, T, D]
    var invStdFinal: Int?           // [n·T]
    var hFinal = 0                  // [n, T, D] modulated final features
    var tokensOut = 0               // [n, T, p·p·Cout_l]
    // Backward scratch (training only).
    var dResidual = 0, dScratchA = 0, dScratchB = 0  // [n, T, D]
    var dQKV = 0                    // [n, T, 3D]
    var dHiddenA = 0                // [n, T, max(F, 3D)] (also the regrouped dQKV)
    var dHiddenB = 0                // [n, T, F]
    var dTokens = 0                 // [n, T, p·p·Cout_l]
    var dModulation = 0             // [n, 6D]
    var dFinalModulation = 0        // [n, 2D]
    var dConditionAct = 0, dCondition = 0, dTimeHiddenAct = 0, dTimeHidden = 0  // [n, D]
    var arenaCount = 0
}

/// Where the network reads each weight: one float32 pointer per tensor of the layout, in layout order
/// (into a flat parameter buffer, or straight into a checkpoint's mapped file: `ModelWeights`).
public struct WeightTable {
    let pointers: [UnsafePointer<Float>]
    public init(pointers: [UnsafePointer<Float>]) { self.pointers = pointers }
    /// Every tensor inside one flat buffer [totalCount] laid out by `layout`.
    public init(flat base: UnsafePointer<Float>, layout: ParameterLayout) { pointers = layout.offsets.map { base + $0 } }
    @inline(__always) subscript(index: Int) -> UnsafePointer<Float> { pointers[index] }
}

/// The DiT / SiT / PPFlow transformer, defined once: the forward pass of one level's samples (which keeps
/// what backward needs only when asked) and its hand-written backward twin, on one flat parameter buffer
/// in `ParameterLayout` order. Sampling, verification, the calibrated initializer and the trainer all run
/// this code; `Kernels` and `Backward` hold the kernels, `Reference` their plain oracles. Weights are read
/// through a `WeightTable`, so inference can run on a checkpoint where it lies in memory.
/// Not thread-safe: one pass at a time per instance (the arena is shared).
public final class Network {
    public let config: ModelConfig
    public let layout: ParameterLayout
    /// Floating-point operations of the matrix products since the last `resetFlops` (2·m·n·k each).
    public private(set) var matmulFlops: Double = 0

    /// Tensor indices (in `layout`) of a weight and its bias.
    typealias Pair = (weight: Int, bias: Int)
    private struct BlockWeights {
        let qkv, proj, fc1, fc2, ada: Pair
    }
    private let blockWeights: [BlockWeights]
    private let arena = Scratch()
    /// Sin-cos tables [tokens, D] by "level/side", computed from the config on first use. The official code
    /// keeps them as fixed buffers (never trained), so the stored `pos_embed*` tensors are not read.
    private var positionTables: [String: [Float]] = [:]

    public init(config: ModelConfig, layout: ParameterLayout) {
        precondition(layout.names == ParameterLayout(config: config).names, "parameters were laid out for another configuration")
        self.config = config
        self.layout = layout
        func pair(_ key: String) -> Pair { (layout.index(key + ".weight"), layout.index(key + ".bias")) }
        blockWeights = (0..<config.depth).map { i in
            let b = "blocks.\(i)."
            return BlockWeights(qkv: pair(b + "attn.qkv"), proj: pair(b + "attn.proj"), fc1: pair(b + "mlp.fc1"),
                                fc2: pair(b + "mlp.fc2"), ada: pair(b + "adaLN_modulation.1"))
        }
    }

    /// Bytes the arena holds (the largest pass so far).
    public var arenaBytes: Int { arena.capacity * 4 }

    public func resetFlops() { matmulFlops = 0 }

    // MARK: Planning

    /// The token regrouping of the official trainer's packing (`AttentionScope.officialPacking`) for n samples
    /// at `g`'s level: attention row r of the regrouped [n, T] grid reads token row packing[r]; nil when the
    /// level has the finest length (nothing is packed). Needs n to be a multiple of the pack size.
    public func officialPacking(geometry g: LevelGeometry, count n: Int) throws -> [Int]? {
        let T = g.tokens, k = config.geometry(level: config.levels - 1, side: g.side).tokens / T
        guard n % k == 0 else { throw PPError(.usage, "official packing needs the \(n) samples of level \(g.level) in groups of \(k)") }
        guard k > 1 else { return nil }
        // Pack P holds samples P·k ..< P·k + k; its position m·k + j is token m of sample P·k + j.
        var packing = [Int](repeating: 0, count: n * T)
        for pack in 0..<(n / k) { for m in 0..<T { for j in 0..<k { packing[pack * k * T + m * k + j] = (pack * k + j) * T + m } } }
        return packing
    }

    /// Plans a pass of `labels.count` samples at `geometry`'s level (their class labels, numClasses = null)
    /// and reserves its arena. `keepActivations` for a pass that backward follows; `packing` (training
    /// parity only) from `officialPacking`.
    public func plan(geometry g: LevelGeometry, labels: [Int], keepActivations keep: Bool, packing: [Int]? = nil) -> ForwardPass {
        let n = labels.count, D = config.hiddenSize, F = config.mlpHiddenSize, p = config.patchSize
        let T = g.tokens, rows = n * T
        var r = ForwardPass(geometry: g, count: n, keepsActivations: keep, labels: labels, packing: packing)
        var a = ArenaPlanner()
        r.timeFeatures = a.take(n * 256)
        r.timeHidden = a.take(n * D); r.timeHiddenAct = keep ? a.take(n * D) : r.timeHidden
        r.condition = a.take(n * D); r.conditionAct = keep ? a.take(n * D) : r.condition
        r.finalModulation = a.take(n * 2 * D)
        r.patches = a.take(rows * g.channels * p * p)
        if keep {
            var stream = a.take(rows * D)
            for _ in 0..<config.depth {
                var s = BlockSlots()
                s.modulation = a.take(n * 6 * D)
                s.input = stream
                s.xhat1 = a.take(rows * D); s.invStd1 = a.take(rows); s.h1 = a.take(rows * D)
                s.qkv = a.take(rows * 3 * D); s.probs = a.take(n * config.numHeads * T * T)
                if packing != nil { s.packedQKV = a.take(rows * 3 * D) }
                s.attnOut = a.take(rows * D); s.projOut = a.take(rows * D); s.mid = a.take(rows * D)
                s.xhat2 = a.take(rows * D); s.invStd2 = a.take(rows); s.h2 = a.take(rows * D)
                s.fc1Out = a.take(rows * F); s.geluOut = a.take(rows * F); s.fc2Out = a.take(rows * D)
                stream = a.take(rows * D)
                s.output = stream
                r.blocks.append(s)
            }
            if packing != nil { r.packedOut = a.take(rows * D) }
            r.xhatFinal = a.take(rows * D); r.invStdFinal = a.take(rows); r.hFinal = a.take(rows * D)
            r.dResidual = a.take(rows * D); r.dScratchA = a.take(rows * D); r.dScratchB = a.take(rows * D)
            r.dQKV = a.take(rows * 3 * D)
            r.dHiddenA = a.take(rows * max(F, 3 * D)); r.dHiddenB = a.take(rows * F)
            r.dTokens = a.take(rows * p * p * g.outputChannels)
            r.dModulation = a.take(n * 6 * D); r.dFinalModulation = a.take(n * 2 * D)
            r.dConditionAct = a.take(n * D); r.dCondition = a.take(n * D)
            r.dTimeHiddenAct = a.take(n * D); r.dTimeHidden = a.take(n * D)
        } else {
            // Inference: the residual stream is updated in place and the per-block buffers are shared.
            var s = BlockSlots()
            s.modulation = a.take(n * 6 * D)
            s.input = a.take(rows * D); s.mid = s.input; s.output = s.input
            let normed = a.take(rows * D)
            s.xhat1 = normed; s.h1 = normed; s.projOut = normed; s.xhat2 = normed; s.h2 = normed; s.fc2Out = normed
            s.qkv = a.take(rows * 3 * D)
            s.attnOut = a.take(rows * D)
            s.fc1Out = a.take(rows * F); s.geluOut = s.fc1Out
            r.blocks = [BlockSlots](repeating: s, count: config.depth)
            r.xhatFinal = normed; r.hFinal = normed
        }
        r.tokensOut = a.take(rows * p * p * g.outputChannels)
        r.arenaCount = a.total
        _ = arena.reserve(a.total)
        return r
    }

    @inline(__always) private func at(_ offset: Int) -> UnsafeMutablePointer<Float> { arena.pointer + offset }

    private func positionTable(_ g: LevelGeometry) -> [Float] {
        let key = "\(g.level)/\(g.side)"
        if let table = positionTables[key] { return table }
        let table = ModelParameters.positionTable(config: config, level: g.level, latentSize: g.side)
        positionTables[key] = table
        return table
    }

    // MARK: Products (counted)

    private func linear(_ input: UnsafePointer<Float>, _ P: WeightTable, _ w: Pair,
                        _ output: UnsafeMutablePointer<Float>, rows: Int, inFeatures: Int, outFeatures: Int) {
        Kernels.linear(input: input, weight: P[w.weight], bias: P[w.bias], output: output, rows: rows, inFeatures: inFeatures, outFeatures: outFeatures)
        matmulFlops += 2 * Double(rows) * Double(inFeatures) * Double(outFeatures)
    }

    private func linearBackward(_ input: UnsafePointer<Float>, _ P: WeightTable, _ G: UnsafeMutablePointer<Float>,
                                _ w: Pair, dOutput: UnsafePointer<Float>, dInput: UnsafeMutablePointer<Float>?,
                                rows: Int, inFeatures: Int, outFeatures: Int) {
        Backward.linear(input: input, weight: P[w.weight], dOutput: dOutput, dInput: dInput,
                        dWeight: G + layout.offsets[w.weight], dBias: G + layout.offsets[w.bias],
                        rows: rows, inFeatures: inFeatures, outFeatures: outFeatures)
        matmulFlops += (dInput == nil ? 2 : 4) * Double(rows) * Double(inFeatures) * Double(outFeatures)
    }

    private func key(_ name: String) -> Pair { (layout.index(name + ".weight"), layout.index(name + ".bias")) }

    // MARK: Forward

    /// The forward pass planned by `plan`: input [n, Cl, Hl, Wl] in the level's layout, t [n] (the model's
    /// own time convention), y [n] class labels (numClasses = null). Writes the network output
    /// [n, Cout_l, Hl, Wl] in the level's layout to `image`; with `image` nil it stops after the final
    /// layer's modulation (`finalFeatures`).
    public func forward(_ r: ForwardPass, input: UnsafePointer<Float>, t: UnsafePointer<Float>, weights P: WeightTable,
                        image: UnsafeMutablePointer<Float>?) {
        let g = r.geometry, n = r.count, T = g.tokens, rows = n * T
        let D = config.hiddenSize, F = config.mlpHiddenSize, p = config.patchSize, H = config.numHeads

        // 1. Patch embedding plus the fixed position table.
        Kernels.patchify(input, at(r.patches), batch: n, channels: g.channels, height: g.height, width: g.width, patch: p)
        let stream0 = at(r.blocks[0].input)
        linear(at(r.patches), P, key(g.embedKey), stream0, rows: rows, inFeatures: g.channels * p * p, outFeatures: D)
        positionTable(g).withUnsafeBufferPointer { table in
            for i in 0..<n { let row = stream0 + i * T * D; for e in 0..<(T * D) { row[e] += table[e] } }
        }

        // 2. Conditioning c = t_emb + y_emb (+ level_emb), used as SiLU(c) by every adaLN.
        Kernels.timestepFeatures(t, count: n, output: at(r.timeFeatures), half: 128, divisor: config.timeFeatures.frequencyDivisor)
        linear(at(r.timeFeatures), P, key("t_embedder.mlp.0"), at(r.timeHidden), rows: n, inFeatures: 256, outFeatures: D)
        Kernels.silu(at(r.timeHidden), at(r.timeHiddenAct), count: n * D)
        let c = at(r.condition)
        linear(at(r.timeHiddenAct), P, key("t_embedder.mlp.2"), c, rows: n, inFeatures: D, outFeatures: D)
        let labelTable = P[layout.index("y_embedder.embedding_table.weight")]
        let levelRow: UnsafePointer<Float>? = config.levels > 1 ? P[layout.index("level_embedder.embedding_table.weight")] + g.level * D : nil
        for i in 0..<n {
            let row = c + i * D, label = labelTable + r.labels[i] * D
            for k in 0..<D { row[k] += label[k] }
            if let levelRow { for k in 0..<D { row[k] += levelRow[k] } }
        }
        let cAct = at(r.conditionAct)
        Kernels.silu(c, cAct, count: n * D)

        // 3. Transformer blocks (adaLN-Zero). Copies are skipped where inference aliases the buffers.
        for (l, s) in r.blocks.enumerated() {
            let w = blockWeights[l], mod = at(s.modulation)
            linear(cAct, P, w.ada, mod, rows: n, inFeatures: D, outFeatures: 6 * D)
            let x = at(s.input)
            // Attention branch: mid = x + gate_msa · proj(attention(qkv(modulate(LN(x))))).
            Kernels.layerNorm(input: x, output: at(s.xhat1), rows: rows, dim: D, eps: 1e-6, inverseStd: s.invStd1.map(at))
            if s.h1 != s.xhat1 { at(s.h1).update(from: at(s.xhat1), count: rows * D) }
            Kernels.modulate(at(s.h1), batch: n, tokens: T, dim: D, shift: mod, scale: mod + D, conditionStride: 6 * D)
            linear(at(s.h1), P, w.qkv, at(s.qkv), rows: rows, inFeatures: D, outFeatures: 3 * D)
            if let packing = r.packing, let packedQKV = s.packedQKV, let packedOut = r.packedOut {
                gatherRows(at(s.qkv), into: at(packedQKV), rows: packing, width: 3 * D)
                Kernels.attention(qkv: at(packedQKV), output: at(packedOut), batch: n, tokens: T, dim: D, heads: H, probabilities: s.probs.map(at))
                scatterRows(at(packedOut), into: at(s.attnOut), rows: packing, width: D, accumulate: false)
            } else {
                Kernels.attention(qkv: at(s.qkv), output: at(s.attnOut), batch: n, tokens: T, dim: D, heads: H, probabilities: s.probs.map(at))
            }
            matmulFlops += 4 * Double(n) * Double(T) * Double(T) * Double(D)
            linear(at(s.attnOut), P, w.proj, at(s.projOut), rows: rows, inFeatures: D, outFeatures: D)
            if s.mid != s.input { at(s.mid).update(from: x, count: rows * D) }
            Kernels.gatedResidual(at(s.mid), branch: at(s.projOut), gate: mod + 2 * D, batch: n, tokens: T, dim: D, conditionStride: 6 * D)
            // MLP branch: output = mid + gate_mlp · fc2(gelu(fc1(modulate(LN(mid))))).
            Kernels.layerNorm(input: at(s.mid), output: at(s.xhat2), rows: rows, dim: D, eps: config.mlpNormEps, inverseStd: s.invStd2.map(at))
            if s.h2 != s.xhat2 { at(s.h2).update(from: at(s.xhat2), count: rows * D) }
            Kernels.modulate(at(s.h2), batch: n, tokens: T, dim: D, shift: mod + 3 * D, scale: mod + 4 * D, conditionStride: 6 * D)
            linear(at(s.h2), P, w.fc1, at(s.fc1Out), rows: rows, inFeatures: D, outFeatures: F)
            Kernels.geluTanh(at(s.fc1Out), at(s.geluOut), count: rows * F)
            linear(at(s.geluOut), P, w.fc2, at(s.fc2Out), rows: rows, inFeatures: F, outFeatures: D)
            if s.output != s.mid { at(s.output).update(from: at(s.mid), count: rows * D) }
            Kernels.gatedResidual(at(s.output), branch: at(s.fc2Out), gate: mod + 5 * D, batch: n, tokens: T, dim: D, conditionStride: 6 * D)
        }

        // 4. Final layer: LayerNorm, adaLN (shift, scale), the level's output projection, unpatchify.
        let fmod = at(r.finalModulation)
        linear(cAct, P, key("final_layer.adaLN_modulation.1"), fmod, rows: n, inFeatures: D, outFeatures: 2 * D)
        Kernels.layerNorm(input: at(r.blocks[config.depth - 1].output), output: at(r.xhatFinal), rows: rows, dim: D, eps: 1e-6,
                          inverseStd: r.invStdFinal.map(at))
        if r.hFinal != r.xhatFinal { at(r.hFinal).update(from: at(r.xhatFinal), count: rows * D) }
        Kernels.modulate(at(r.hFinal), batch: n, tokens: T, dim: D, shift: fmod, scale: fmod + D, conditionStride: 2 * D)
        guard let image else { return }
        let outFeatures = p * p * g.outputChannels
        linear(at(r.hFinal), P, key(g.outputKey), at(r.tokensOut), rows: rows, inFeatures: D, outFeatures: outFeatures)
        Kernels.unpatchify(at(r.tokensOut), image, batch: n, channels: g.outputChannels, gridRows: g.gridRows, gridCols: g.gridCols, patch: p)
    }

    /// The final features [n, T, D] of the last pass (valid until the next `plan`).
    public func finalFeatures(of r: ForwardPass) -> UnsafePointer<Float> { UnsafePointer(at(r.hFinal)) }

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

    /// The backward twin of `forward` for a pass that kept its activations: given dImage [n, Cout_l, Hl, Wl]
    /// (the loss gradient of the level-layout output), ACCUMULATES every parameter gradient into G
    /// [totalCount] in layout order (the fixed position tables get none; the input needs none).
    public func backward(_ r: ForwardPass, dImage: UnsafePointer<Float>, weights P: WeightTable, gradients G: UnsafeMutablePointer<Float>) {
        precondition(r.keepsActivations, "backward needs a forward pass that kept its activations")
        let g = r.geometry, n = r.count, T = g.tokens, rows = n * T
        let D = config.hiddenSize, F = config.mlpHiddenSize, p = config.patchSize, H = config.numHeads
        let dR = at(r.dResidual), dA = at(r.dScratchA), dB = at(r.dScratchB)
        let dQKV = at(r.dQKV), dF1 = at(r.dHiddenA), dF2 = at(r.dHiddenB), dTok = at(r.dTokens)
        let cAct = at(r.conditionAct), dSc = at(r.dConditionAct)
        dSc.update(repeating: 0, count: n * D)
        let outFeatures = p * p * g.outputChannels
        // Final layer.
        dTok.update(repeating: 0, count: rows * outFeatures)
        Backward.unpatchify(dImage: dImage, dTokens: dTok, batch: n, channels: g.outputChannels, gridRows: g.gridRows, gridCols: g.gridCols, patch: p)
        dA.update(repeating: 0, count: rows * D)
        linearBackward(at(r.hFinal), P, G, key(g.outputKey), dOutput: dTok, dInput: dA, rows: rows, inFeatures: D, outFeatures: outFeatures)
        let fmod = at(r.finalModulation), dfmod = at(r.dFinalModulation)
        dfmod.update(repeating: 0, count: n * 2 * D)
        dB.update(repeating: 0, count: rows * D)
        Backward.modulate(dOutput: dA, input: at(r.xhatFinal), scale: fmod + D, dInput: dB, dShift: dfmod, dScale: dfmod + D,
                          batch: n, tokens: T, dim: D, conditionStride: 2 * D)
        linearBackward(cAct, P, G, key("final_layer.adaLN_modulation.1"), dOutput: dfmod, dInput: dSc, rows: n, inFeatures: D, outFeatures: 2 * D)
        dR.update(repeating: 0, count: rows * D)
        Backward.layerNorm(dOutput: dB, normalized: at(r.xhatFinal), inverseStd: at(r.invStdFinal!), dInput: dR, rows: rows, dim: D)

        let dmod = at(r.dModulation)
        for (l, s) in r.blocks.enumerated().reversed() {
            let w = blockWeights[l], mod = at(s.modulation)
            dmod.update(repeating: 0, count: n * 6 * D)
            // MLP branch: output = mid + gate_mlp · fc2(gelu(fc1(modulate(LN(mid))))).
            dA.update(repeating: 0, count: rows * D)
            Backward.gatedResidual(dResidual: dR, branch: at(s.fc2Out), gate: mod + 5 * D, dBranch: dA, dGate: dmod + 5 * D,
                                   batch: n, tokens: T, dim: D, conditionStride: 6 * D)
            dF1.update(repeating: 0, count: rows * F)
            linearBackward(at(s.geluOut), P, G, w.fc2, dOutput: dA, dInput: dF1, rows: rows, inFeatures: F, outFeatures: D)
            dF2.update(repeating: 0, count: rows * F)
            Backward.geluTanh(input: at(s.fc1Out), dOutput: dF1, dInput: dF2, count: rows * F)
            dA.update(repeating: 0, count: rows * D)
            linearBackward(at(s.h2), P, G, w.fc1, dOutput: dF2, dInput: dA, rows: rows, inFeatures: D, outFeatures: F)
            dB.update(repeating: 0, count: rows * D)
            Backward.modulate(dOutput: dA, input: at(s.xhat2), scale: mod + 4 * D, dInput: dB, dShift: dmod + 3 * D, dScale: dmod + 4 * D,
                              batch: n, tokens: T, dim: D, conditionStride: 6 * D)
            Backward.layerNorm(dOutput: dB, normalized: at(s.xhat2), inverseStd: at(s.invStd2!), dInput: dR, rows: rows, dim: D)
            // Attention branch: mid = input + gate_msa · proj(attention(qkv(modulate(LN(input))))).
            dA.update(repeating: 0, count: rows * D)
            Backward.gatedResidual(dResidual: dR, branch: at(s.projOut), gate: mod + 2 * D, dBranch: dA, dGate: dmod + 2 * D,
                                   batch: n, tokens: T, dim: D, conditionStride: 6 * D)
            dB.update(repeating: 0, count: rows * D)
            linearBackward(at(s.attnOut), P, G, w.proj, dOutput: dA, dInput: dB, rows: rows, inFeatures: D, outFeatures: D)
            dQKV.update(repeating: 0, count: rows * 3 * D)
            if let packing = r.packing, let packedQKV = s.packedQKV {
                // dA and dF1 are free here: the regrouped dOutput and dQKV.
                gatherRows(dB, into: dA, rows: packing, width: D)
                dF1.update(repeating: 0, count: rows * 3 * D)
                Backward.attention(qkv: at(packedQKV), probabilities: at(s.probs!), dOutput: dA, dQKV: dF1, batch: n, tokens: T, dim: D, heads: H)
                scatterRows(dF1, into: dQKV, rows: packing, width: 3 * D, accumulate: true)
            } else {
                Backward.attention(qkv: at(s.qkv), probabilities: at(s.probs!), dOutput: dB, dQKV: dQKV, batch: n, tokens: T, dim: D, heads: H)
            }
            matmulFlops += 8 * Double(n) * Double(T) * Double(T) * Double(D)
            dA.update(repeating: 0, count: rows * D)
            linearBackward(at(s.h1), P, G, w.qkv, dOutput: dQKV, dInput: dA, rows: rows, inFeatures: D, outFeatures: 3 * D)
            dB.update(repeating: 0, count: rows * D)
            Backward.modulate(dOutput: dA, input: at(s.xhat1), scale: mod + D, dInput: dB, dShift: dmod, dScale: dmod + D,
                              batch: n, tokens: T, dim: D, conditionStride: 6 * D)
            Backward.layerNorm(dOutput: dB, normalized: at(s.xhat1), inverseStd: at(s.invStd1!), dInput: dR, rows: rows, dim: D)
            // The block's adaLN: mod = SiLU(c) · W_adaᵀ + b.
            linearBackward(cAct, P, G, w.ada, dOutput: dmod, dInput: dSc, rows: n, inFeatures: D, outFeatures: 6 * D)
        }
        // Patch embedding (the position table is fixed; the input needs no gradient).
        linearBackward(at(r.patches), P, G, key(g.embedKey), dOutput: dR, dInput: nil, rows: rows, inFeatures: g.channels * p * p, outFeatures: D)

        // Conditioning: c = mlp.2(SiLU(mlp.0(features(t)))) + y_emb (+ level_emb).
        let dC = at(r.dCondition)
        dC.update(repeating: 0, count: n * D)
        Backward.silu(input: at(r.condition), dOutput: dSc, dInput: dC, count: n * D)
        Backward.embedding(indices: r.labels, dOutput: dC, dTable: G + layout.offset("y_embedder.embedding_table.weight"), dim: D)
        if config.levels > 1 {
            Backward.embedding(indices: [Int](repeating: g.level, count: n), dOutput: dC,
                               dTable: G + layout.offset("level_embedder.embedding_table.weight"), dim: D)
        }
        let dThs = at(r.dTimeHiddenAct), dTh = at(r.dTimeHidden)
        dThs.update(repeating: 0, count: n * D)
        linearBackward(at(r.timeHiddenAct), P, G, key("t_embedder.mlp.2"), dOutput: dC, dInput: dThs, rows: n, inFeatures: D, outFeatures: D)
        dTh.update(repeating: 0, count: n * D)
        Backward.silu(input: at(r.timeHidden), dOutput: dThs, dInput: dTh, count: n * D)
        linearBackward(at(r.timeFeatures), P, G, key("t_embedder.mlp.0"), dOutput: dTh, dInput: nil, rows: n, inFeatures: 256, outFeatures: D)
    }
}
