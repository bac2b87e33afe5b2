import PPTensor
import PPModel

/// Shape of a SiT / PPFlow network as the training engine needs it. Everything but the head count is
/// read from the tensors (the head count is not recoverable from weights).
public struct TrainConfig: Sendable, Equatable {
    public var hidden: Int        // D
    public var depth: Int         // L blocks
    public var heads: Int         // H
    public var patch: Int         // p
    public var channels: Int      // C latent channels
    public var side: Int          // S latent side
    public var classes: Int       // K (label table has K + 1 rows)
    public var levels: Int        // 1 (SiT), 2 or 3 (PPFlow)
    public var learnSigma: Bool   // output has 2C channels, the first C are the prediction
    public var mlpHidden: Int     // 4D

    public init(hidden: Int, depth: Int, heads: Int, patch: Int, channels: Int, side: Int, classes: Int,
                levels: Int, learnSigma: Bool = true, mlpHidden: Int? = nil) {
        self.hidden = hidden; self.depth = depth; self.heads = heads; self.patch = patch
        self.channels = channels; self.side = side; self.classes = classes; self.levels = levels
        self.learnSigma = learnSigma; self.mlpHidden = mlpHidden ?? 4 * hidden
    }

    /// Reads D, depth, p, C, S, K, levels and learn_sigma from a state dict.
    public static func infer(from tensors: TensorDict, heads: Int, origin: String = "model") throws -> TrainConfig {
        func shape(_ key: String) throws -> [Int] {
            guard let t = tensors[key] else { throw PPError.badInput(origin, entry: key, "tensor is missing") }
            return t.shape
        }
        let proj = try shape("x_embedder.proj.weight")  // [D, C, p, p]
        guard proj.count == 4, proj[2] == proj[3] else { throw PPError.badInput(origin, entry: "x_embedder.proj.weight", "expected [D, C, p, p], got \(proj)") }
        let hidden = proj[0], channels = proj[1], patch = proj[2]
        var depth = 0
        while tensors.contains("blocks.\(depth).attn.qkv.weight") { depth += 1 }
        let levels = tensors["level_embedder.embedding_table.weight"]?.shape.first ?? 1
        guard (1...3).contains(levels) else { throw PPError(.unsupported, file: origin, "\(levels) pyramid levels are not supported") }
        let finestPos = levels == 1 ? "pos_embed" : "pos_embed.\(levels - 1)"
        let tokens = try shape(finestPos)[1]
        let grid = Int(Double(tokens).squareRoot().rounded())
        guard grid * grid == tokens else { throw PPError.badInput(origin, entry: finestPos, "\(tokens) tokens is not a square grid") }
        let classes = try shape("y_embedder.embedding_table.weight")[0] - 1
        let outFeatures = try shape("final_layer.linear.weight")[0]
        let learnSigma = outFeatures == patch * patch * 2 * channels
        let mlpHidden = try shape("blocks.0.mlp.fc1.weight")[0]
        guard heads > 0, hidden % heads == 0 else { throw PPError(.usage, "hidden size \(hidden) is not divisible by \(heads) heads") }
        return TrainConfig(hidden: hidden, depth: depth, heads: heads, patch: patch, channels: channels,
                           side: grid * patch, classes: classes, levels: levels, learnSigma: learnSigma, mlpHidden: mlpHidden)
    }

    /// The training view of a PPModel configuration (original DiT/SiT time features, official thresholds).
    public init(model: ModelConfig) {
        self.init(hidden: model.hiddenSize, depth: model.depth, heads: model.numHeads, patch: model.patchSize,
                  channels: model.inChannels, side: model.inputSize, classes: model.numClasses, levels: model.levels,
                  learnSigma: model.learnSigma, mlpHidden: model.mlpHiddenSize)
    }

    /// The pyramid level a sample at time t is trained on (PPFlow: t <= 0.5 coarsest, 3 levels: t <= 0.75 middle).
    public func level(forTime t: Float) -> Int {
        switch levels {
        case 1: return 0
        case 2: return t <= 0.5 ? 0 : 1
        default: return t <= 0.5 ? 0 : (t <= 0.75 ? 1 : 2)
        }
    }

    public func geometry(level: Int) -> LevelGeometry { LevelGeometry(config: self, level: level) }

    /// Every tensor name and shape of this configuration, in the official state-dict order (the order of
    /// PPModel's `ParameterLayout`, so a flat buffer is interchangeable with `ModelParameters.values`).
    public var parameterShapes: [(String, [Int])] {
        let D = hidden, C = channels, p = patch, cout = learnSigma ? 2 * C : C, n = (side / p) * (side / p)
        var list: [(String, [Int])] = levels == 1 ? [("pos_embed", [1, n, D])] : []
        list += [("x_embedder.proj.weight", [D, C, p, p]), ("x_embedder.proj.bias", [D])]
        if levels >= 2 { list += [("x_embedder.proj1.weight", [D, 4 * C, p, p]), ("x_embedder.proj1.bias", [D])] }
        if levels == 3 { list += [("x_embedder.proj2.weight", [D, 2 * C, p, p]), ("x_embedder.proj2.bias", [D])] }
        list += [("t_embedder.mlp.0.weight", [D, 256]), ("t_embedder.mlp.0.bias", [D]),
                 ("t_embedder.mlp.2.weight", [D, D]), ("t_embedder.mlp.2.bias", [D]),
                 ("y_embedder.embedding_table.weight", [classes + 1, D])]
        if levels >= 2 { list.append(("level_embedder.embedding_table.weight", [levels, D])) }
        if levels > 1 {
            let fractions = levels == 2 ? [4, 1] : [4, 2, 1]
            for (i, f) in fractions.enumerated() { list.append(("pos_embed.\(i)", [1, n / f, D])) }
        }
        for i in 0..<depth {
            let b = "blocks.\(i)."
            list += [(b + "attn.qkv.weight", [3 * D, D]), (b + "attn.qkv.bias", [3 * D]),
                     (b + "attn.proj.weight", [D, D]), (b + "attn.proj.bias", [D]),
                     (b + "mlp.fc1.weight", [mlpHidden, D]), (b + "mlp.fc1.bias", [mlpHidden]),
                     (b + "mlp.fc2.weight", [D, mlpHidden]), (b + "mlp.fc2.bias", [D]),
                     (b + "adaLN_modulation.1.weight", [6 * D, D]), (b + "adaLN_modulation.1.bias", [6 * D])]
        }
        list += [("final_layer.linear.weight", [p * p * cout, D]), ("final_layer.linear.bias", [p * p * cout]),
                 ("final_layer.adaLN_modulation.1.weight", [2 * D, D]), ("final_layer.adaLN_modulation.1.bias", [2 * D])]
        if levels >= 2 { list += [("final_layer.linear1.weight", [4 * p * p * cout, D]), ("final_layer.linear1.bias", [4 * p * p * cout])] }
        if levels == 3 { list += [("final_layer.linear2.weight", [2 * p * p * cout, D]), ("final_layer.linear2.bias", [2 * p * p * cout])] }
        return list
    }
}

/// Where a pyramid level lives: its layout of the latent and the tensors that serve it.
public struct LevelGeometry: Sendable, Equatable {
    public enum Layout: Sendable { case square, width, full }
    public let layout: Layout
    public let level: Int
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

    init(config: TrainConfig, level: Int) {
        self.level = level
        let C = config.channels, S = config.side, p = config.patch
        let isFull = level == config.levels - 1
        if isFull {
            layout = .full; channels = C; height = S; width = S
            embedKey = "x_embedder.proj"; outputKey = "final_layer.linear"
        } else if level == 0 {
            layout = .square; channels = 4 * C; height = S / 2; width = S / 2
            embedKey = "x_embedder.proj1"; outputKey = "final_layer.linear1"
        } else {
            layout = .width; channels = 2 * C; height = S; width = S / 2
            embedKey = "x_embedder.proj2"; outputKey = "final_layer.linear2"
        }
        gridRows = height / p; gridCols = width / p
        outputChannels = config.learnSigma ? 2 * channels : channels
        positionKey = config.levels == 1 ? "pos_embed" : "pos_embed.\(level)"
    }
}

/// Offsets of named tensors inside one flat Float buffer; parameters, gradients and both AdamW moments
/// share it. Frozen tensors (`pos_embed*`) are in the layout but get no gradient and no update.
public struct FlatParameterLayout: Sendable {
    public struct Entry: Sendable {
        public let name: String
        public let shape: [Int]
        public let offset: Int
        public let count: Int
        public let trainable: Bool
    }
    public let entries: [Entry]
    public let totalCount: Int
    private let index: [String: Int]

    public init(shapes: [(String, [Int])]) {
        var entries: [Entry] = []
        var offset = 0
        for (name, shape) in shapes {
            let count = shape.reduce(1, *)
            entries.append(Entry(name: name, shape: shape, offset: offset, count: count, trainable: !name.hasPrefix("pos_embed")))
            offset += count
        }
        self.entries = entries
        totalCount = offset
        index = Dictionary(uniqueKeysWithValues: entries.enumerated().map { ($1.name, $0) })
    }

    public subscript(name: String) -> Entry? { index[name].map { entries[$0] } }

    /// offset of a tensor that the configuration guarantees exists.
    func offset(_ name: String) -> Int {
        guard let i = index[name] else { preconditionFailure("parameter layout has no tensor \(name)") }
        return entries[i].offset
    }

    /// Copies a state dict into a flat buffer, checking that every tensor exists with the right shape
    /// and that no extra tensor is left over.
    public func flatten(_ tensors: TensorDict, origin: String = "model") throws -> [Float] {
        var values = [Float](repeating: 0, count: totalCount)
        for e in entries {
            guard let t = tensors[e.name] else { throw PPError.badInput(origin, entry: e.name, "tensor is missing") }
            guard t.shape == e.shape else { throw PPError.badInput(origin, entry: e.name, "shape \(t.shape), expected \(e.shape)") }
            values.withUnsafeMutableBufferPointer { t.writeFloats(into: UnsafeMutableBufferPointer(rebasing: $0[e.offset..<(e.offset + e.count)])) }
        }
        for name in tensors.names where index[name] == nil {
            throw PPError.badInput(origin, entry: name, "tensor is not part of the model")
        }
        return values
    }

    /// Named float32 tensors cut out of a flat buffer, `prefix` + name, optionally only trainable ones.
    public func tensors(_ values: [Float], prefix: String = "", trainableOnly: Bool = false) -> TensorDict {
        var dict = TensorDict()
        for e in entries where !trainableOnly || e.trainable {
            dict[prefix + e.name] = TensorView(floats: Array(values[e.offset..<(e.offset + e.count)]), shape: e.shape)
        }
        return dict
    }
}
