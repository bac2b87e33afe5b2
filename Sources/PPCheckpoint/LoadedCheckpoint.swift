import PPFileIO
import PPJSON
import PPTensor

/// What a model predicts, and on which time axis. The weights cannot say; metadata or the user must.
public enum Objective: String, Codable, Sendable, CaseIterable {
    /// SiT / PPFlow: velocity x1 - x0 of the linear path, t in [0, 1], t = 0 noise, t = 1 data.
    case velocity
    /// DiT: DDPM epsilon with integer steps 0...999 (999 = pure noise), linear betas 1e-4...0.02.
    case epsilon
    case unknown

    public var timeConvention: String {
        switch self {
        case .velocity: return "flow t in [0,1], 0 = noise, 1 = data"
        case .epsilon: return "DDPM steps 0..999, 999 = noise"
        case .unknown: return "unknown"
        }
    }

    public init?(userName: String) {
        switch userName.lowercased() {
        case "velocity", "v", "flow", "sit": self = .velocity
        case "epsilon", "eps", "noise", "dit", "ddpm": self = .epsilon
        case "unknown": self = .unknown
        default: return nil
        }
    }
}

/// The key layout of a state dict, from the names alone.
public enum KeyLayout: Equatable, Sendable, CustomStringConvertible {
    /// DiT and SiT share every name and shape.
    case ditSit
    /// PPFlow with 2 or 3 pyramid levels.
    case ppflow(levels: Int)
    case unknown(reason: String)

    public static func detect(_ names: [String]) -> KeyLayout {
        let set = Set(names)
        guard set.contains("x_embedder.proj.weight") else {
            return .unknown(reason: "no x_embedder.proj.weight, so not a DiT/SiT/PPFlow state dict")
        }
        guard set.contains("blocks.0.attn.qkv.weight") else {
            return .unknown(reason: "no blocks.0.attn.qkv.weight, so not a DiT/SiT/PPFlow transformer")
        }
        if set.contains("x_embedder.proj1.weight") {
            return .ppflow(levels: set.contains("x_embedder.proj2.weight") ? 3 : 2)
        }
        return .ditSit
    }

    public var description: String {
        switch self {
        case .ditSit: return "DiT/SiT"
        case .ppflow(let levels): return "PPFlow-\(levels)"
        case .unknown(let reason): return "unknown (\(reason))"
        }
    }
}

/// Where a checkpoint's weights came from and what is known about them.
public struct LoadedCheckpoint: Sendable {
    /// The path the user gave.
    public var path: String
    /// How the weights are stored, outermost first, e.g. ["zip archive", "torch.save"].
    public var containers: [String]
    /// The file inside the source that held the weights (relative path) when it was a folder or archive.
    public var weightsFile: String?
    /// Tensors under the official DiT/SiT/PPFlow key names (diffusers names already mapped).
    public var tensors: TensorDict
    public var layout: KeyLayout
    /// "DiT", "SiT", "PPFlow-2", "diffusers DiT", ... or "DiT/SiT" when the objective is not known.
    public var family: String
    public var objective: Objective
    /// Where the objective came from ("config.json prediction", "train checkpoint args", ...), or why unknown.
    public var objectiveSource: String
    /// True for diffusers DiT models: their time features use frequency shift 1 and their MLP LayerNorm eps 1e-5.
    public var diffusersNumerics: Bool
    /// Keys the source does not store and a model can compute (diffusers' pos_embed).
    public var computedKeys: [String]
    /// Architecture facts from metadata (config.json, diffusers config, native config), by official
    /// constructor argument name: num_heads, input_size, hidden_size, ...
    public var architectureHints: [String: JSONValue]
    /// The JSON the source came with (config.json beside or inside it, the native config).
    public var sidecarConfig: JSONValue?
    /// Native PPFlow folders: their config (format, pyramid, guidance, provenance).
    public var nativeConfig: JSONValue?
    /// Sub-dicts of a train checkpoint ("model", "ema") and which one was taken.
    public var availableStateDicts: [String]
    public var selectedStateDict: String?
    /// A train checkpoint's non-tensor entries (args attributes, optimizer summary), as text.
    public var extraEntries: [(key: String, summary: String)]
    /// Things the reader wants the user to know (choices made, conversions applied).
    public var notes: [String]

    public var numHeads: Int? { architectureHints["num_heads"]?.intValue.map(Int.init) }
    public var inputSize: Int? { architectureHints["input_size"]?.intValue.map(Int.init) }

    public var parameterCount: Int { tensors.totalElements }

    /// Takes the objective the user gave (`--objective`) where metadata is silent; refuses it where
    /// metadata says otherwise.
    public mutating func applyGivenObjective(_ given: Objective?) throws {
        guard let given, given != .unknown else { return }
        if objective == .unknown {
            objective = given
            objectiveSource = "--objective"
        } else if objective != given {
            throw PPError(.usage, file: path, entry: "--objective",
                          "says \(given.rawValue) but the checkpoint says \(objective.rawValue) (\(objectiveSource))")
        }
    }

    /// Refuses a checkpoint whose objective nothing settled (see `CheckpointLoader.load(requireObjective:)`).
    public func requireKnownObjective() throws {
        guard objective == .unknown else { return }
        throw PPError(.usage, file: path, entry: "objective",
                      "unknown (\(objectiveSource)); convert it with `ppconvert from-dit --objective velocity` (SiT) or `--objective epsilon` (DiT), or pass --objective")
    }
    public var containerDescription: String { containers.joined(separator: " > ") }
}
