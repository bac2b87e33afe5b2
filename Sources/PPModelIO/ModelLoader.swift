import PPCheckpoint
import PPFileIO
import PPJSON
import PPModel
import PPTensor

/// A runnable model from any checkpoint the readers accept: checkpoint IO (`PPCheckpoint`) meets the model
/// (`PPModel`) here, so that the model module only computes. Its weights are read where the loader put
/// them (float32 tensors of a mapped file are not copied).
public struct LoadedModel {
    public var checkpoint: LoadedCheckpoint
    public var config: ModelConfig
    public var weights: ModelWeights

    public func makeModel() -> Model { Model(weights: weights) }

    /// The weights copied into flat parameters (for training or changing them).
    public func parameters() -> ModelParameters { weights.parameters() }
}

public enum ModelLoader {
    /// Loads `path`, infers the configuration (weights plus metadata; `heads` when no metadata says)
    /// and fills the parameter layout.
    /// `objective`: what the user says the model predicts, for checkpoints without metadata (it must agree
    /// with metadata that speaks); `requireObjective`: refuse, before the weights are read, a checkpoint
    /// whose objective is still unknown (the sampler and the trainer need it); `verifyHashes`: check a native
    /// folder's weights against the sha256 its config.json records (`--no-verify-hash` turns it off).
    public static func load(_ path: String, weights: WeightsChoice? = nil, heads: Int? = nil,
                            objective: Objective? = nil, requireObjective: Bool = false, verifyHashes: Bool = true) throws -> LoadedModel {
        let given = objective == .unknown ? nil : objective
        var checkpoint = try CheckpointLoader.load(path, weights: weights, requireObjective: requireObjective && given == nil,
                                                   verifyHashes: verifyHashes)
        try checkpoint.applyGivenObjective(given)
        let config = try configuration(of: checkpoint, heads: heads)
        let weights = try ModelWeights(config: config, tensors: try completeTensors(checkpoint, config: config))
        return LoadedModel(checkpoint: checkpoint, config: config, weights: weights)
    }

    /// The model configuration of a loaded checkpoint: shapes from the weights, heads and input size
    /// from metadata, diffusers numerics, and a native folder's thresholds.
    public static func configuration(of checkpoint: LoadedCheckpoint, heads: Int? = nil) throws -> ModelConfig {
        if case .unknown(let reason) = checkpoint.layout {
            throw PPError.badInput(checkpoint.path, "not a DiT/SiT/PPFlow model: \(reason)")
        }
        var config = try ModelConfig.infer(from: checkpoint.tensors, numHeads: heads ?? checkpoint.numHeads, inputSize: checkpoint.inputSize)
        if checkpoint.diffusersNumerics {
            config.timeFeatures = .diffusers
            config.mlpNormEps = 1e-5
        }
        if let thresholds = checkpoint.nativeConfig?["pyramid"]?["thresholds"]?.arrayValue?.compactMap(\.doubleValue),
           thresholds.count == config.levels - 1 {
            config.thresholds = thresholds
        }
        return config
    }

    /// The tensors a checkpoint stands for, completed with the keys it does not store (diffusers'
    /// pos_embed), in the official state_dict order.
    public static func completeTensors(_ checkpoint: LoadedCheckpoint, config: ModelConfig) throws -> TensorDict {
        guard !checkpoint.computedKeys.isEmpty else { return checkpoint.tensors }
        let floatDType = checkpoint.tensors["x_embedder.proj.weight"]?.dtype ?? .f32
        var out = TensorDict()
        for (name, shape) in config.parameterShapes {
            if let t = checkpoint.tensors[name] {
                out[name] = t
            } else if checkpoint.computedKeys.contains(name) {
                let level = name == "pos_embed" ? config.levels - 1 : Int(name.split(separator: ".").last ?? "") ?? 0
                out[name] = TensorView(floats: ModelParameters.positionTable(config: config, level: level, latentSize: config.inputSize),
                                       shape: shape, dtype: floatDType)
            } else {
                throw PPError.badInput(checkpoint.path, entry: name, "missing")
            }
        }
        return out
    }
}
