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

/// DiT / SiT (levels == 1) and PPFlow (2 or 3 levels) forward pass in float32.
/// Not thread-safe: one forward at a time per instance (the scratch buffers are shared).
public final class Model {
    public let config: ModelConfig
    /// What the network reads: flat parameters, or a checkpoint's tensors where they lie.
    public let weights: ModelWeights
    /// Model evaluations done (samples × passes), for reports.
    public private(set) var forwardCount = 0

    /// The one network definition (shared with the trainer).
    private let network: Network

    // Scratch, reused across calls.
    private let levelInput = Scratch()     // [b, Cl, Hl, Wl] a group's latents in its level's layout
    private let levelImage = Scratch()     // [b, Cout_l, Hl, Wl] its output in the level's layout
    private let groupInput = Scratch()     // [m, C, S, S] gathered samples of one level
    private let groupOutput = Scratch()    // [m, Cout, S, S]

    /// `config` may differ from the weights' own in what the weights do not fix (thresholds, time features, norm eps).
    public init(weights: ModelWeights, config: ModelConfig? = nil) {
        let config = config ?? weights.config
        self.config = config
        self.weights = weights
        network = Network(config: config, layout: weights.layout)
    }

    public convenience init(config: ModelConfig, parameters: ModelParameters) {
        precondition(parameters.config == config || parameters.layout.names == ParameterLayout(config: config).names,
                     "parameters were laid out for another configuration")
        self.init(weights: ModelWeights(parameters: parameters), config: config)
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
        weights.withTable { params in
            x.withUnsafeBufferPointer { xs in t.withUnsafeBufferPointer { ts in y.withUnsafeBufferPointer { ys in
                output.withUnsafeMutableBufferPointer { out in
                    for level in Set(sampleLevels).sorted() {
                        let members = (0..<batch).filter { sampleLevels[$0] == level }
                        if members.count == batch {
                            runLevel(level, x: xs.baseAddress!, t: ts.baseAddress!, y: ys.baseAddress!, batch: batch, side: side,
                                     output: out.baseAddress!, params: params)
                            continue
                        }
                        // Gather this level's samples, run them together, scatter the results back.
                        let m = members.count
                        let gx = groupInput.reserve(m * inSize), gout = groupOutput.reserve(m * outSize)
                        for (j, i) in members.enumerated() { (gx + j * inSize).update(from: xs.baseAddress! + i * inSize, count: inSize) }
                        let gt = members.map { t[$0] }, gy = members.map { y[$0] }
                        gt.withUnsafeBufferPointer { gtp in gy.withUnsafeBufferPointer { gyp in
                            runLevel(level, x: gx, t: gtp.baseAddress!, y: gyp.baseAddress!, batch: m, side: side, output: gout, params: params)
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
        var features = [Float](repeating: 0, count: batch * config.geometry(level: level, side: side).tokens * config.hiddenSize)
        weights.withTable { params in
            x.withUnsafeBufferPointer { xs in t.withUnsafeBufferPointer { ts in y.withUnsafeBufferPointer { ys in
                features.withUnsafeMutableBufferPointer { out in
                    runLevel(level, x: xs.baseAddress!, t: ts.baseAddress!, y: ys.baseAddress!, batch: batch, side: side,
                             output: out.baseAddress!, params: params, stopAtFinalFeatures: true)
                }
            } } }
        }
        forwardCount += batch
        return features
    }

    // MARK: One level, one group

    /// x [b, C, S, S] -> output [b, Cout, S, S] at `level`; or, with `stopAtFinalFeatures`, the modulated
    /// final-layer input [b, T, D].
    private func runLevel(_ level: Int, x: UnsafePointer<Float>, t: UnsafePointer<Float>, y: UnsafePointer<Int32>, batch b: Int,
                          side: Int, output: UnsafeMutablePointer<Float>, params: WeightTable, stopAtFinalFeatures: Bool = false) {
        let g = config.geometry(level: level, side: side)
        let labels = (0..<b).map { Int(y[$0]) }
        let pass = network.plan(geometry: g, labels: labels, keepActivations: false)
        var input = x
        if g.layout != .full {
            let buffer = levelInput.reserve(b * g.channels * g.height * g.width)
            g.rearrange(x, into: buffer, batch: b)
            input = UnsafePointer(buffer)
        }
        if stopAtFinalFeatures {
            network.forward(pass, input: input, t: t, weights: params, image: nil)
            output.update(from: network.finalFeatures(of: pass), count: b * g.tokens * config.hiddenSize)
        } else if g.layout == .full {
            network.forward(pass, input: input, t: t, weights: params, image: output)
        } else {
            let image = levelImage.reserve(b * g.outputChannels * g.height * g.width)
            network.forward(pass, input: input, t: t, weights: params, image: image)
            g.restore(image, into: output, batch: b)
        }
    }
}
