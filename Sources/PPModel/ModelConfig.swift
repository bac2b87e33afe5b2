import PPFileIO
import PPTensor

/// Which sinusoidal time features the timestep embedder was trained with.
public enum TimeFeatures: String, Codable, Sendable {
    /// DiT/SiT/PPFlow: f_k = exp(-ln(10000)·k/128).
    case original
    /// diffusers' `downscale_freq_shift = 1`: f_k = exp(-ln(10000)·k/127).
    case diffusers

    /// The frequency divisor of `Kernels.timestepFeatures`.
    public var frequencyDivisor: Float { self == .original ? 128 : 127 }
}

/// How a pyramid level rearranges the latent before patchifying (PPFlow; DiT/SiT use `.full` only).
public enum LevelLayout: String, Codable, Sendable {
    /// `down_square`: C -> 4C channels, both sides halved.
    case square
    /// `down_w`: C -> 2C channels, width halved.
    case width
    /// The latent as it is.
    case full

    /// Channel multiplier of the rearranged latent.
    public var channelFactor: Int {
        switch self { case .square: return 4; case .width: return 2; case .full: return 1 }
    }
}

public struct ModelConfig: Equatable, Codable, Sendable {
    public var inChannels: Int
    public var inputSize: Int
    public var patchSize: Int
    public var hiddenSize: Int
    public var depth: Int
    public var numHeads: Int
    public var numClasses: Int
    public var mlpRatio: Double
    public var learnSigma: Bool
    /// 1 = DiT/SiT, 2 or 3 = PPFlow.
    public var levels: Int
    /// Upper time bound (inclusive) of every level but the last: [] / [0.5] / [0.5, 0.75].
    public var thresholds: [Double]
    public var timeFeatures: TimeFeatures
    /// LayerNorm eps of the MLP branch: 1e-6 in DiT/SiT/PPFlow, 1e-5 in diffusers (its `norm3`).
    public var mlpNormEps: Float

    public init(inChannels: Int = 4, inputSize: Int = 32, patchSize: Int = 2, hiddenSize: Int, depth: Int, numHeads: Int,
                numClasses: Int = 1000, mlpRatio: Double = 4, learnSigma: Bool = true, levels: Int = 1,
                thresholds: [Double]? = nil, timeFeatures: TimeFeatures = .original, mlpNormEps: Float = 1e-6) {
        self.inChannels = inChannels
        self.inputSize = inputSize
        self.patchSize = patchSize
        self.hiddenSize = hiddenSize
        self.depth = depth
        self.numHeads = numHeads
        self.numClasses = numClasses
        self.mlpRatio = mlpRatio
        self.learnSigma = learnSigma
        self.levels = levels
        self.thresholds = thresholds ?? ModelConfig.officialThresholds(levels: levels)
        self.timeFeatures = timeFeatures
        self.mlpNormEps = mlpNormEps
    }

    /// The pyramid level a sample at flow time t uses, in training and in sampling alike: the first level
    /// whose threshold (inclusive upper bound) is not below t, else the finest. Compared in float32, as the
    /// official code compares its float32 t tensor with a Python number (torch casts the number to the
    /// tensor's dtype): with thresholds [0.3, 0.6], t = Float(0.3) is level 0. The one rule of the toolkit.
    public func level(forTime t: Float) -> Int {
        for (i, threshold) in thresholds.enumerated() where t <= Float(threshold) { return i }
        return levels - 1
    }

    /// PPFlow's t1 = 0.5 and t2 = 0.75.
    public static func officialThresholds(levels: Int) -> [Double] {
        switch levels { case 2: return [0.5]; case 3: return [0.5, 0.75]; default: return [] }
    }

    /// Heads of the released models by hidden size (S, B, L, XL); the weights do not record it.
    public static let releasedHeads: [Int: Int] = [384: 6, 768: 12, 1024: 16, 1152: 16]

    public var outChannels: Int { learnSigma ? 2 * inChannels : inChannels }
    public var mlpHiddenSize: Int { Int(Double(hiddenSize) * mlpRatio) }
    /// Tokens per side at the finest level for the training latent size.
    public var gridSize: Int { inputSize / patchSize }

    /// The levels coarse to fine.
    public var levelLayouts: [LevelLayout] {
        switch levels { case 2: return [.square, .full]; case 3: return [.square, .width, .full]; default: return [.full] }
    }

    /// Token grid (rows, cols) of `level` for a latent of side `latentSize`.
    public func grid(level: Int, latentSize: Int) -> (rows: Int, cols: Int) {
        let g = latentSize / patchSize
        switch levelLayouts[level] {
        case .square: return (g / 2, g / 2)
        case .width: return (g, g / 2)
        case .full: return (g, g)
        }
    }

    /// Official key names of a level's patch embedding, final linear and position table.
    public func patchEmbedName(level: Int) -> String {
        switch levelLayouts[level] { case .square: return "x_embedder.proj1"; case .width: return "x_embedder.proj2"; case .full: return "x_embedder.proj" }
    }
    public func finalLinearName(level: Int) -> String {
        switch levelLayouts[level] { case .square: return "final_layer.linear1"; case .width: return "final_layer.linear2"; case .full: return "final_layer.linear" }
    }
    public func positionEmbedName(level: Int) -> String { levels == 1 ? "pos_embed" : "pos_embed.\(level)" }

    /// The official state_dict keys and shapes for this config, in state_dict order.
    public var parameterShapes: [(name: String, shape: [Int])] {
        let d = hiddenSize, c = inChannels, p = patchSize, hidden = mlpHiddenSize
        var shapes: [(name: String, shape: [Int])] = []
        func tokens(_ level: Int) -> Int { let g = grid(level: level, latentSize: inputSize); return g.rows * g.cols }
        if levels == 1 { shapes.append(("pos_embed", [1, tokens(0), d])) }
        shapes.append(("x_embedder.proj.weight", [d, c, p, p]))
        shapes.append(("x_embedder.proj.bias", [d]))
        if levels > 1 {
            shapes.append(("x_embedder.proj1.weight", [d, 4 * c, p, p]))
            shapes.append(("x_embedder.proj1.bias", [d]))
        }
        if levels > 2 {
            shapes.append(("x_embedder.proj2.weight", [d, 2 * c, p, p]))
            shapes.append(("x_embedder.proj2.bias", [d]))
        }
        shapes += [("t_embedder.mlp.0.weight", [d, 256]), ("t_embedder.mlp.0.bias", [d]),
                   ("t_embedder.mlp.2.weight", [d, d]), ("t_embedder.mlp.2.bias", [d]),
                   ("y_embedder.embedding_table.weight", [numClasses + 1, d])]
        if levels > 1 {
            shapes.append(("level_embedder.embedding_table.weight", [levels, d]))
            for level in 0..<levels { shapes.append(("pos_embed.\(level)", [1, tokens(level), d])) }
        }
        for i in 0..<depth {
            let b = "blocks.\(i)."
            shapes += [(b + "attn.qkv.weight", [3 * d, d]), (b + "attn.qkv.bias", [3 * d]),
                       (b + "attn.proj.weight", [d, d]), (b + "attn.proj.bias", [d]),
                       (b + "mlp.fc1.weight", [hidden, d]), (b + "mlp.fc1.bias", [hidden]),
                       (b + "mlp.fc2.weight", [d, hidden]), (b + "mlp.fc2.bias", [d]),
                       (b + "adaLN_modulation.1.weight", [6 * d, d]), (b + "adaLN_modulation.1.bias", [6 * d])]
        }
        let out = p * p * outChannels
        shapes += [("final_layer.linear.weight", [out, d]), ("final_layer.linear.bias", [out]),
                   ("final_layer.adaLN_modulation.1.weight", [2 * d, d]), ("final_layer.adaLN_modulation.1.bias", [2 * d])]
        if levels > 1 { shapes += [("final_layer.linear1.weight", [4 * out, d]), ("final_layer.linear1.bias", [4 * out])] }
        if levels > 2 { shapes += [("final_layer.linear2.weight", [2 * out, d]), ("final_layer.linear2.bias", [2 * out])] }
        return shapes
    }

    /// Reads the configuration from official key names and shapes. Heads come from `numHeads` or the
    /// released-model table; the input size from `inputSize` or the (finest) position table.
    public static func infer(from tensors: TensorDict, numHeads: Int?, inputSize: Int?) throws -> ModelConfig {
        func shape(_ name: String) throws -> [Int] {
            guard let t = tensors[name] else {
                throw PPError(.badInput, entry: name, "missing: not a DiT/SiT/PPFlow state dict (official key names expected)")
            }
            return t.shape
        }
        let patchWeight = try shape("x_embedder.proj.weight")
        guard patchWeight.count == 4, patchWeight[2] == patchWeight[3] else {
            throw PPError(.badInput, entry: "x_embedder.proj.weight", "shape \(patchWeight), expected [D, C, p, p]")
        }
        let hidden = patchWeight[0], channels = patchWeight[1], patch = patchWeight[2]
        var depth = 0
        while tensors.contains("blocks.\(depth).attn.qkv.weight") { depth += 1 }
        guard depth > 0 else { throw PPError(.badInput, entry: "blocks.0.attn.qkv.weight", "missing: the model has no transformer blocks") }
        let classes = try shape("y_embedder.embedding_table.weight")[0] - 1
        let levels = tensors["level_embedder.embedding_table.weight"]?.shape.first ?? 1
        guard (1...3).contains(levels) else {
            throw PPError(.unsupported, entry: "level_embedder.embedding_table.weight", "\(levels) levels; PPFlow has 2 or 3")
        }
        let outRows = try shape("final_layer.linear.weight")[0]
        let learnSigma: Bool
        if outRows == patch * patch * 2 * channels { learnSigma = true }
        else if outRows == patch * patch * channels { learnSigma = false }
        else {
            throw PPError(.badInput, entry: "final_layer.linear.weight", "\(outRows) output rows, expected \(patch * patch * channels) or \(patch * patch * 2 * channels)")
        }
        let mlpRows = try shape("blocks.0.mlp.fc1.weight")[0]
        let size: Int
        if let inputSize { size = inputSize } else {
            let name = levels == 1 ? "pos_embed" : "pos_embed.\(levels - 1)"
            guard let table = tensors[name] else {
                throw PPError(.usage, entry: name, "missing, so the latent size is unknown: pass the input size")
            }
            let tokens = table.shape.count == 3 ? table.shape[1] : 0
            let side = Int(Double(tokens).squareRoot().rounded())
            guard side * side == tokens, side > 0 else { throw PPError(.badInput, entry: name, "shape \(table.shape) is not a square token grid") }
            size = side * patch
        }
        guard let heads = numHeads ?? releasedHeads[hidden] else {
            throw PPError(.usage, "hidden size \(hidden) is not a released model's, so the number of heads is unknown: pass --heads")
        }
        guard heads > 0, hidden % heads == 0 else { throw PPError(.usage, "\(heads) heads do not divide the hidden size \(hidden)") }
        return ModelConfig(inChannels: channels, inputSize: size, patchSize: patch, hiddenSize: hidden, depth: depth, numHeads: heads,
                           numClasses: classes, mlpRatio: Double(mlpRows) / Double(hidden), learnSigma: learnSigma, levels: levels)
    }
}
