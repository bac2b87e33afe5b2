import PPKernels
import PPTensor

/// Which channels classifier-free guidance mixes.
public enum GuidanceChannels: String, Codable, Sendable {
    /// The official DiT/SiT/PPFlow `forward_with_cfg`: only channels 0..<3 (bit parity; channel 4 of a
    /// 4-channel latent stays conditional).
    case first3
    /// The standard: every prediction channel (0..<C).
    case all
}

/// A growable scratch block reused across calls, so repeated forwards do not allocate.
final class Scratch {
    private(set) var pointer: UnsafeMutablePointer<Float>
    private(set) var capacity: Int

    init() { pointer = .allocate(capacity: 1); capacity = 1 }

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

/// DiT / SiT (levels == 1) and PPFlow (2 or 3 levels) forward pass in float32.
/// Not thread-safe: one forward at a time per instance (the scratch buffers are shared).
public final class Model {
    public let config: ModelConfig
    public let parameters: ModelParameters
    /// Model evaluations done (samples × passes), for reports.
    public private(set) var forwardCount = 0

    private struct BlockOffsets {
        let qkvWeight, qkvBias, projWeight, projBias, fc1Weight, fc1Bias, fc2Weight, fc2Bias, adaWeight, adaBias: Int
    }
    private let blocks: [BlockOffsets]
    private let layout: ParameterLayout
    /// Sin-cos tables [tokens, D] by "level/latentSize", computed from the config on first use.
    private var positionTables: [String: [Float]] = [:]

    // Scratch, reused across calls. Shapes for a group of b samples with T tokens at some level.
    private let levelInput = Scratch()     // [b, C·f, H_l, W_l]
    private let patches = Scratch()        // [b, T, C·f·p·p]
    private let tokens = Scratch()         // [b, T, D] residual stream
    private let normed = Scratch()         // [b, T, D]
    private let qkv = Scratch()            // [b, T, 3D]
    private let attended = Scratch()       // [b, T, D]
    private let mlpHidden = Scratch()      // [b, T, mlpHidden]
    private let timeFeatures = Scratch()   // [b, 256]
    private let timeHidden = Scratch()     // [b, D]
    private let condition = Scratch()      // [b, D] SiLU(c)
    private let modulation = Scratch()     // [b, 6D]
    private let headOutput = Scratch()     // [b, T, p·p·Cout·f]
    private let image = Scratch()          // [b, Cout·f, H_l, W_l]
    private let groupInput = Scratch()     // [m, C, S, S] gathered samples of one level
    private let groupOutput = Scratch()    // [m, Cout, S, S]

    public init(config: ModelConfig, parameters: ModelParameters) {
        precondition(parameters.config == config || parameters.layout.names == ParameterLayout(config: config).names,
                     "parameters were laid out for another configuration")
        self.config = config
        self.parameters = parameters
        layout = parameters.layout
        blocks = (0..<config.depth).map { i in
            let b = "blocks.\(i)."
            return BlockOffsets(qkvWeight: parameters.layout.offset(b + "attn.qkv.weight"), qkvBias: parameters.layout.offset(b + "attn.qkv.bias"),
                                projWeight: parameters.layout.offset(b + "attn.proj.weight"), projBias: parameters.layout.offset(b + "attn.proj.bias"),
                                fc1Weight: parameters.layout.offset(b + "mlp.fc1.weight"), fc1Bias: parameters.layout.offset(b + "mlp.fc1.bias"),
                                fc2Weight: parameters.layout.offset(b + "mlp.fc2.weight"), fc2Bias: parameters.layout.offset(b + "mlp.fc2.bias"),
                                adaWeight: parameters.layout.offset(b + "adaLN_modulation.1.weight"), adaBias: parameters.layout.offset(b + "adaLN_modulation.1.bias"))
        }
    }

    /// The pyramid level a time selects (`ModelConfig.level(forTime:)`).
    public func level(forTime t: Float) -> Int { config.level(forTime: t) }

    /// x [B, C, S, S], t [B] (the model's own time convention), y [B] (K = null class).
    /// Returns the whole network output [B, Cout, S, S] in the full layout at every level (first C channels
    /// = prediction, next C = the sigma half when learnSigma). Samples of different levels run as separate
    /// groups; `level` forces one level for all.
    public func forward(x: [Float], t: [Float], y: [Int32], batch: Int, level forcedLevel: Int? = nil) -> [Float] {
        let c = config.inChannels
        precondition(batch > 0 && t.count == batch && y.count == batch, "forward: t and y need one value per sample")
        let side = Int((Double(x.count / (batch * c))).squareRoot().rounded())
        precondition(side * side * c * batch == x.count, "forward: x must be [B, C, S, S]")
        precondition(y.allSatisfy { $0 >= 0 && Int($0) <= config.numClasses }, "forward: class labels must lie in 0...numClasses")
        if let forcedLevel { precondition((0..<config.levels).contains(forcedLevel), "forward: no level \(forcedLevel)") }
        let sampleLevels = t.map { forcedLevel ?? level(forTime: $0) }
        let inSize = c * side * side, outSize = config.outChannels * side * side
        var output = [Float](repeating: 0, count: batch * outSize)
        parameters.values.withUnsafeBufferPointer { params in
            x.withUnsafeBufferPointer { xs in t.withUnsafeBufferPointer { ts in y.withUnsafeBufferPointer { ys in
                output.withUnsafeMutableBufferPointer { out in
                    for level in Set(sampleLevels).sorted() {
                        let members = (0..<batch).filter { sampleLevels[$0] == level }
                        if members.count == batch {
                            runLevel(level, x: xs.baseAddress!, t: ts.baseAddress!, y: ys.baseAddress!, batch: batch, side: side,
                                     output: out.baseAddress!, params: params.baseAddress!)
                            continue
                        }
                        // Gather this level's samples, run them together, scatter the results back.
                        let m = members.count
                        let gx = groupInput.reserve(m * inSize), gout = groupOutput.reserve(m * outSize)
                        for (j, i) in members.enumerated() { (gx + j * inSize).update(from: xs.baseAddress! + i * inSize, count: inSize) }
                        let gt = members.map { t[$0] }, gy = members.map { y[$0] }
                        gt.withUnsafeBufferPointer { gtp in gy.withUnsafeBufferPointer { gyp in
                            runLevel(level, x: gx, t: gtp.baseAddress!, y: gyp.baseAddress!, batch: m, side: side, output: gout, params: params.baseAddress!)
                        } }
                        for (j, i) in members.enumerated() { (out.baseAddress! + i * outSize).update(from: gout + j * outSize, count: outSize) }
                    }
                }
            } } }
        }
        forwardCount += batch
        return output
    }

    /// Classifier-free guidance: x [B, C, S, S], t [B], y [B] conditional labels; `scales` per level (one
    /// value = every level). Returns [B, Cout, S, S]: guided = uncond + s·(cond − uncond) on the channels
    /// `channels` names, the conditional output elsewhere. Matches the first half of the official
    /// `forward_with_cfg` on `cat([x, x])`, `cat([y, null])`. Samples whose scale is 1 skip the
    /// unconditional pass entirely.
    public func forwardWithGuidance(x: [Float], t: [Float], y: [Int32], batch: Int, scales: [Float], channels: GuidanceChannels) -> [Float] {
        precondition(scales.count == 1 || scales.count == config.levels, "forwardWithGuidance: one scale, or one per level")
        let sampleScales = t.map { scales.count == 1 ? scales[0] : scales[level(forTime: $0)] }
        let guided = (0..<batch).filter { sampleScales[$0] != 1 }
        if guided.isEmpty { return forward(x: x, t: t, y: y, batch: batch) }
        // One call: the conditional batch, then the unconditional copies of the guided samples.
        let inSize = x.count / batch
        var combinedX = x
        combinedX.reserveCapacity(x.count + guided.count * inSize)
        for i in guided { combinedX.append(contentsOf: x[(i * inSize)..<((i + 1) * inSize)]) }
        let combinedT = t + guided.map { t[$0] }
        let combinedY = y + [Int32](repeating: Int32(config.numClasses), count: guided.count)
        var out = forward(x: combinedX, t: combinedT, y: combinedY, batch: batch + guided.count)
        let plane = inSize / config.inChannels
        let outSize = config.outChannels * plane
        let mixed = (channels == .first3 ? min(3, config.inChannels) : config.inChannels) * plane
        for (j, i) in guided.enumerated() {
            let s = sampleScales[i]
            let condBase = i * outSize, uncondBase = (batch + j) * outSize
            for k in 0..<mixed {
                let u = out[uncondBase + k]
                out[condBase + k] = u + s * (out[condBase + k] - u)
            }
        }
        out.removeLast(guided.count * outSize)
        return out
    }

    /// The final layer's input features after its adaLN modulation, [B, T_level, D], for every sample at
    /// `level` (what the output projection of that level multiplies; used to refit coarse projections).
    public func finalFeatures(x: [Float], t: [Float], y: [Int32], batch: Int, level: Int) -> [Float] {
        let c = config.inChannels
        precondition(batch > 0 && t.count == batch && y.count == batch, "finalFeatures: t and y need one value per sample")
        precondition((0..<config.levels).contains(level), "finalFeatures: no level \(level)")
        let side = Int((Double(x.count / (batch * c))).squareRoot().rounded())
        precondition(side * side * c * batch == x.count, "finalFeatures: x must be [B, C, S, S]")
        let grid = config.grid(level: level, latentSize: side)
        var features = [Float](repeating: 0, count: batch * grid.rows * grid.cols * config.hiddenSize)
        parameters.values.withUnsafeBufferPointer { params in
            x.withUnsafeBufferPointer { xs in t.withUnsafeBufferPointer { ts in y.withUnsafeBufferPointer { ys in
                features.withUnsafeMutableBufferPointer { out in
                    runLevel(level, x: xs.baseAddress!, t: ts.baseAddress!, y: ys.baseAddress!, batch: batch, side: side,
                             output: out.baseAddress!, params: params.baseAddress!, stopAtFinalFeatures: true)
                }
            } } }
        }
        forwardCount += batch
        return features
    }

    // MARK: One level, one group

    private func positionTable(level: Int, side: Int) -> [Float] {
        let key = "\(level)/\(side)"
        if let table = positionTables[key] { return table }
        let table = ModelParameters.positionTable(config: config, level: level, latentSize: side)
        positionTables[key] = table
        return table
    }

    /// x [b, C, S, S] -> output [b, Cout, S, S] at `level`; or, with `stopAtFinalFeatures`, the modulated
    /// final-layer input [b, T, D].
    private func runLevel(_ level: Int, x: UnsafePointer<Float>, t: UnsafePointer<Float>, y: UnsafePointer<Int32>, batch b: Int,
                          side: Int, output: UnsafeMutablePointer<Float>, params: UnsafePointer<Float>, stopAtFinalFeatures: Bool = false) {
        let c = config.inChannels, p = config.patchSize, d = config.hiddenSize, hidden = config.mlpHiddenSize
        let levelLayout = config.levelLayouts[level]
        let factor = levelLayout.channelFactor
        let grid = config.grid(level: level, latentSize: side)
        let tokenCount = grid.rows * grid.cols, rows = b * tokenCount
        let levelHeight = grid.rows * p, levelWidth = grid.cols * p
        let levelChannels = c * factor

        // 1. Rearrange the latent into the level's layout and embed its patches.
        var input = x
        switch levelLayout {
        case .square:
            let buffer = levelInput.reserve(b * levelChannels * levelHeight * levelWidth)
            Kernels.downSquare(x, buffer, batch: b, channels: c, height: side, width: side)
            input = UnsafePointer(buffer)
        case .width:
            let buffer = levelInput.reserve(b * levelChannels * levelHeight * levelWidth)
            Kernels.downW(x, buffer, batch: b, channels: c, height: side, width: side)
            input = UnsafePointer(buffer)
        case .full:
            break
        }
        let patchFeatures = levelChannels * p * p
        let patchBuffer = patches.reserve(rows * patchFeatures)
        Kernels.patchify(input, patchBuffer, batch: b, channels: levelChannels, height: levelHeight, width: levelWidth, patch: p)
        let stream = tokens.reserve(rows * d)  // [b, T, D]
        let embed = config.patchEmbedName(level: level)
        Kernels.linear(input: patchBuffer, weight: params + layout.offset(embed + ".weight"), bias: params + layout.offset(embed + ".bias"),
                       output: stream, rows: rows, inFeatures: patchFeatures, outFeatures: d)
        positionTable(level: level, side: side).withUnsafeBufferPointer { table in
            for i in 0..<b {
                let row = stream + i * tokenCount * d
                for k in 0..<(tokenCount * d) { row[k] += table[k] }
            }
        }

        // 2. Conditioning c = t_emb + y_emb (+ level_emb), used as SiLU(c) by every adaLN.
        let features = timeFeatures.reserve(b * 256)
        Kernels.timestepFeatures(t, count: b, output: features, half: 128, divisor: config.timeFeatures.frequencyDivisor)
        let timeMid = timeHidden.reserve(b * d)
        Kernels.linear(input: features, weight: params + layout.offset("t_embedder.mlp.0.weight"), bias: params + layout.offset("t_embedder.mlp.0.bias"),
                       output: timeMid, rows: b, inFeatures: 256, outFeatures: d)
        Kernels.silu(timeMid, timeMid, count: b * d)
        let cond = condition.reserve(b * d)
        Kernels.linear(input: timeMid, weight: params + layout.offset("t_embedder.mlp.2.weight"), bias: params + layout.offset("t_embedder.mlp.2.bias"),
                       output: cond, rows: b, inFeatures: d, outFeatures: d)
        let labels = params + layout.offset("y_embedder.embedding_table.weight")
        let levelRow: UnsafePointer<Float>? = config.levels > 1 ? params + layout.offset("level_embedder.embedding_table.weight") + level * d : nil
        for i in 0..<b {
            let label = labels + Int(y[i]) * d
            for k in 0..<d { cond[i * d + k] += label[k] }
            if let levelRow { for k in 0..<d { cond[i * d + k] += levelRow[k] } }
        }
        Kernels.silu(cond, cond, count: b * d)

        // 3. Transformer blocks (adaLN-Zero).
        let mod = modulation.reserve(b * 6 * d)
        let h = normed.reserve(rows * d)
        let qkvBuffer = qkv.reserve(rows * 3 * d)
        let attn = attended.reserve(rows * d)
        let mid = mlpHidden.reserve(rows * hidden)
        for block in blocks {
            Kernels.linear(input: cond, weight: params + block.adaWeight, bias: params + block.adaBias, output: mod, rows: b, inFeatures: d, outFeatures: 6 * d)
            // chunks of mod: shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp
            Kernels.layerNorm(input: stream, output: h, rows: rows, dim: d, eps: 1e-6)
            Kernels.modulate(h, batch: b, tokens: tokenCount, dim: d, shift: mod, scale: mod + d, conditionStride: 6 * d)
            Kernels.linear(input: h, weight: params + block.qkvWeight, bias: params + block.qkvBias, output: qkvBuffer, rows: rows, inFeatures: d, outFeatures: 3 * d)
            Kernels.attention(qkv: qkvBuffer, output: attn, batch: b, tokens: tokenCount, dim: d, heads: config.numHeads)
            Kernels.linear(input: attn, weight: params + block.projWeight, bias: params + block.projBias, output: h, rows: rows, inFeatures: d, outFeatures: d)
            Kernels.gatedResidual(stream, branch: h, gate: mod + 2 * d, batch: b, tokens: tokenCount, dim: d, conditionStride: 6 * d)
            Kernels.layerNorm(input: stream, output: h, rows: rows, dim: d, eps: config.mlpNormEps)
            Kernels.modulate(h, batch: b, tokens: tokenCount, dim: d, shift: mod + 3 * d, scale: mod + 4 * d, conditionStride: 6 * d)
            Kernels.linear(input: h, weight: params + block.fc1Weight, bias: params + block.fc1Bias, output: mid, rows: rows, inFeatures: d, outFeatures: hidden)
            Kernels.geluTanh(mid, mid, count: rows * hidden)
            Kernels.linear(input: mid, weight: params + block.fc2Weight, bias: params + block.fc2Bias, output: h, rows: rows, inFeatures: hidden, outFeatures: d)
            Kernels.gatedResidual(stream, branch: h, gate: mod + 5 * d, batch: b, tokens: tokenCount, dim: d, conditionStride: 6 * d)
        }

        // 4. Final layer: modulated LayerNorm (shift, scale), then the level's output projection.
        Kernels.linear(input: cond, weight: params + layout.offset("final_layer.adaLN_modulation.1.weight"),
                       bias: params + layout.offset("final_layer.adaLN_modulation.1.bias"), output: mod, rows: b, inFeatures: d, outFeatures: 2 * d)
        Kernels.layerNorm(input: stream, output: h, rows: rows, dim: d, eps: 1e-6)
        Kernels.modulate(h, batch: b, tokens: tokenCount, dim: d, shift: mod, scale: mod + d, conditionStride: 2 * d)
        if stopAtFinalFeatures {
            output.update(from: h, count: rows * d)
            return
        }
        let levelOutChannels = config.outChannels * factor
        let headFeatures = p * p * levelOutChannels
        let head = headOutput.reserve(rows * headFeatures)
        let linearName = config.finalLinearName(level: level)
        Kernels.linear(input: h, weight: params + layout.offset(linearName + ".weight"), bias: params + layout.offset(linearName + ".bias"),
                       output: head, rows: rows, inFeatures: d, outFeatures: headFeatures)

        // 5. Unpatchify on the level grid, then back to the full layout. With learn_sigma each half of the
        //    channels (prediction, sigma) is a level-layout tensor of C·f channels: [b, 2, C·f, ...] = [2b, C·f, ...].
        if levelLayout == .full {
            Kernels.unpatchify(head, output, batch: b, channels: levelOutChannels, gridRows: grid.rows, gridCols: grid.cols, patch: p)
            return
        }
        let levelImage = image.reserve(b * levelOutChannels * levelHeight * levelWidth)
        Kernels.unpatchify(head, levelImage, batch: b, channels: levelOutChannels, gridRows: grid.rows, gridCols: grid.cols, patch: p)
        let halves = b * config.outChannels / c
        if levelLayout == .square {
            Kernels.upSquare(levelImage, output, batch: halves, channels: c, height: side, width: side)
        } else {
            Kernels.upW(levelImage, output, batch: halves, channels: c, height: side, width: side)
        }
    }
}
