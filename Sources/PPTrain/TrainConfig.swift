import PPFileIO
import PPTensor
import PPModel

/// The training engine's view of a PPModel `ModelConfig`: short names for the sizes the kernels use.
/// Shapes, key names, thresholds and inference all come from `ModelConfig` / `ParameterLayout`.
public struct TrainConfig: Sendable, Equatable {
    public var model: ModelConfig

    public var hidden: Int { model.hiddenSize }        // D
    public var depth: Int { model.depth }              // L blocks
    public var heads: Int { model.numHeads }           // H
    public var patch: Int { model.patchSize }          // p
    public var channels: Int { model.inChannels }      // C latent channels
    public var side: Int { model.inputSize }           // S latent side
    public var classes: Int { model.numClasses }       // K (label table has K + 1 rows)
    public var levels: Int { model.levels }            // 1 (SiT), 2 or 3 (PPFlow)
    public var learnSigma: Bool { model.learnSigma }   // output has 2C channels, the first C are the prediction
    public var mlpHidden: Int { model.mlpHiddenSize }  // 4D for the released models

    public init(model: ModelConfig) { self.model = model }

    /// A configuration by its sizes (tests, benchmarks); thresholds are the official ones unless given.
    public init(hidden: Int, depth: Int, heads: Int, patch: Int, channels: Int, side: Int, classes: Int,
                levels: Int, learnSigma: Bool = true, mlpHidden: Int? = nil, thresholds: [Double]? = nil) {
        let wanted = mlpHidden ?? 4 * hidden
        // ModelConfig stores a ratio; nudge it so that Int(D·ratio) gives back exactly the wanted width.
        var ratio = Double(wanted) / Double(hidden)
        while Int(Double(hidden) * ratio) < wanted { ratio = ratio.nextUp }
        model = ModelConfig(inChannels: channels, inputSize: side, patchSize: patch, hiddenSize: hidden, depth: depth,
                            numHeads: heads, numClasses: classes, mlpRatio: ratio, learnSigma: learnSigma, levels: levels,
                            thresholds: thresholds)
    }

    /// Reads the configuration from a state dict (ModelConfig.infer); heads are not recoverable from weights.
    public static func infer(from tensors: TensorDict, heads: Int, origin: String = "model") throws -> TrainConfig {
        do {
            return TrainConfig(model: try ModelConfig.infer(from: tensors, numHeads: heads, inputSize: nil))
        } catch let error as PPError {
            throw error.inFile(origin)
        }
    }

    /// The pyramid level a sample at time t is trained on (`ModelConfig.level(forTime:)`, the one rule).
    public func level(forTime t: Float) -> Int { model.level(forTime: t) }

    public func geometry(level: Int) -> LevelGeometry { model.geometry(level: level) }

    /// Every tensor name and shape, in the official state-dict order (`ModelConfig.parameterShapes`).
    public var parameterShapes: [(name: String, shape: [Int])] { model.parameterShapes }
}

extension ParameterLayout {
    /// Tensors that never learn: the fixed sin-cos position tables (`pos_embed*`), as in the official code.
    public static func isFixed(_ name: String) -> Bool { name.hasPrefix("pos_embed") }

    /// Names of the tensors that can learn, in layout order.
    public var learnableNames: [String] { names.filter { !Self.isFixed($0) } }

    /// Flat ranges of the named tensors, in layout order (unknown names are a programming error).
    public func ranges(of selected: [String]) -> [Range<Int>] {
        selected.map { name in
            guard let r = range(of: name) else { preconditionFailure("parameter \(name) is not in the layout") }
            return r
        }
    }

    /// Start of a tensor the configuration guarantees exists.
    func start(_ name: String) -> Int {
        guard let r = range(of: name) else { preconditionFailure("parameter \(name) is not in the layout") }
        return r.lowerBound
    }

    /// Named float32 tensors cut out of a flat buffer [totalCount], `prefix` + name, optionally only learnable ones.
    public func tensors(_ values: [Float], prefix: String = "", learnableOnly: Bool = false) -> TensorDict {
        var dict = TensorDict()
        for (i, name) in names.enumerated() where !learnableOnly || !Self.isFixed(name) {
            let r = offsets[i] ..< offsets[i] + shapes[i].reduce(1, *)
            dict[prefix + name] = TensorView(floats: Array(values[r]), shape: shapes[i])
        }
        return dict
    }
}
