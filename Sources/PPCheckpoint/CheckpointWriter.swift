import PPFileIO
import PPJSON
import PPSafetensors
import PPTensor
import PPTorchFormat

/// Output containers: the same tensors, different files.
public enum OutputFormat: String, CaseIterable, Sendable {
    /// A native PPFlow folder (config.json + model.safetensors).
    case native
    /// A torch.save bare state dict, for the official `sample.py --ckpt`.
    case torch
    /// A train.py checkpoint `{model, ema, opt, args}` for the official trainer.
    case torchTrain = "torch-train"
    /// One safetensors file.
    case safetensors

    /// Checks `path` as an output of this format before any work (see `OutputTarget`): a native folder may
    /// replace an earlier native folder with `force`, a file an existing file with `force`, nothing else.
    public func checkOutput(_ path: String, force: Bool) throws {
        try OutputTarget.check(path, kind: self == .native ? .folder : .file, force: force,
                               toolkitEntries: NativeCheckpoint.toolkitEntries)
    }
}

/// Output element type: keep what the source had, or cast floating-point tensors.
public enum OutputDType: String, CaseIterable, Sendable {
    case keep, f32, f16, bf16

    public var dtype: DType? {
        switch self {
        case .keep: return nil
        case .f32: return .f32
        case .f16: return .f16
        case .bf16: return .bf16
        }
    }

    /// `tensors` with every floating-point tensor cast (rounding to nearest even); others untouched.
    public func apply(to tensors: TensorDict) -> TensorDict {
        guard let target = dtype else { return tensors }
        var out = TensorDict()
        for (name, tensor) in tensors.items {
            out[name] = tensor.dtype.isFloatingPoint && tensor.dtype != target ? tensor.converted(to: target) : tensor
        }
        return out
    }
}

public enum CheckpointWriter {
    /// Writes a bare state dict as torch.save does (`OrderedDict` root), atomically.
    /// `config`: the model's native config; its description (no provenance) goes into the archive so the
    /// toolkit reads the file back with no flags (torch.load and load_state_dict ignore the record).
    public static func writeTorchStateDict(_ tensors: TensorDict, config: JSONObject? = nil, to path: String,
                                           progress: ((Int, Int) -> Void)? = nil) throws {
        try TorchWriter.write(.stateDict(tensors), to: path, archiveName: archiveName(for: path),
                              description: config.map(NativeCheckpoint.descriptionRecord), progress: progress)
    }

    /// Writes one safetensors file with diffusers/transformers' `{"format": "pt"}` metadata plus `extra`.
    public static func writeSafetensors(_ tensors: TensorDict, extraMetadata: [(String, String)] = [], to path: String,
                                        progress: ((Int, Int) -> Void)? = nil) throws {
        try SafetensorsWriter.write(tensors, metadata: [("format", "pt")] + extraMetadata, to: path, progress: progress)
    }

    /// torch.save names the archive's root folder after the file (without extension).
    public static func archiveName(for path: String) -> String {
        var name = FileOutput.baseName(of: path)
        if let dot = name.lastIndex(of: "."), dot != name.startIndex { name = String(name[..<dot]) }
        let allowed = name.unicodeScalars.map { CharacterSet.isPortable($0) ? Character($0) : "_" }
        return allowed.isEmpty ? "archive" : String(allowed)
    }
}

private enum CharacterSet {
    static func isPortable(_ s: Unicode.Scalar) -> Bool {
        (s >= "a" && s <= "z") || (s >= "A" && s <= "Z") || (s >= "0" && s <= "9") || s == "_" || s == "-" || s == "."
    }
}
