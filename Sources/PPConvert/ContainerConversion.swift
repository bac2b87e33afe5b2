import Dispatch
import PPCheckpoint
import PPFileIO
import PPJSON
import PPModel
import PPModelIO
import PPTensor

/// `ppconvert convert`: the same model in another container (official PPF-XL-2.pt to native, native to
/// .pt, diffusers to safetensors, ...). Weights are not changed except by an explicit `--dtype`.
public enum ContainerConversion {
    public struct Summary {
        public var tensorCount: Int
        public var bytes: Int
        public var outputSHA256: String?
    }

    public static func modelConfig(of source: LoadedCheckpoint, heads: Int? = nil) throws -> ModelConfig {
        try ModelLoader.configuration(of: source, heads: heads)
    }

    /// The native config of `source`: its own (a native folder, a described `.pt`), else one built from
    /// the inferred architecture with the paper's guidance defaults and a container-conversion provenance.
    static func nativeConfig(of source: LoadedCheckpoint, heads: Int?) throws -> JSONObject {
        let config = try modelConfig(of: source, heads: heads)
        let provenance = JSONObject([
            ("tool", .string(FromDiT.toolVersion)),
            ("source", .object(JSONObject([
                ("file", .string(FileOutput.baseName(of: source.path))),
                ("format", .string(source.containerDescription)),
                ("sha256", .null),
            ]))),
            ("initializer", .object(JSONObject([("name", .string("none (container conversion)"))]))),
            ("objective_source", .string(source.objectiveSource)),
        ])
        if var existing = source.nativeConfig?.objectValue {
            existing["model_sha256"] = nil
            if existing["provenance"] == nil { existing["provenance"] = .object(provenance) }
            return existing
        }
        let family = config.levels > 1 ? "PPFlow-\(config.levels)" : source.family
        return FromDiT.nativeConfig(for: config, objective: source.objective, cfgScales: FromDiT.defaultCFGScales(levels: config.levels),
                                    family: family, provenance: provenance)
    }

    public static func run(_ source: LoadedCheckpoint, to output: String, format: OutputFormat, dtype: OutputDType,
                           sourceSHA256: (@Sendable () throws -> String?)? = nil, heads: Int? = nil,
                           progress: ((Int, Int) -> Void)? = nil) throws -> Summary {
        // Container-only formats need no configuration unless keys must be computed (diffusers' pos_embed).
        let complete = source.computedKeys.isEmpty ? source.tensors
            : try ModelLoader.completeTensors(source, config: try modelConfig(of: source, heads: heads))
        let tensors = dtype.apply(to: complete)
        switch format {
        case .safetensors:
            try CheckpointWriter.writeSafetensors(tensors, to: output, progress: progress)
            return Summary(tensorCount: tensors.count, bytes: tensors.totalBytes, outputSHA256: nil)
        case .torch:
            // Described when the architecture is known, so the toolkit reads the file back without flags.
            let config = try? nativeConfig(of: source, heads: heads)
            try CheckpointWriter.writeTorchStateDict(tensors, config: config, to: output, progress: progress)
            return Summary(tensorCount: tensors.count, bytes: tensors.totalBytes, outputSHA256: nil)
        case .torchTrain:
            let config = try modelConfig(of: source, heads: heads)
            try TrainCheckpointExport.write(model: tensors, ema: tensors, config: config, objective: source.objective, to: output)
            return Summary(tensorCount: tensors.count, bytes: tensors.totalBytes, outputSHA256: nil)
        case .native:
            let native = try nativeConfig(of: source, heads: heads)
            // The source's hash runs on the second core while the weights are written.
            let sourceHash = BackgroundValue { try sourceSHA256?() }
            defer { sourceHash.finish() }
            let hash = try NativeCheckpoint.write(tensors: tensors, config: native, to: output, completeConfig: { config in
                guard let value = try sourceHash.value() ?? nil else { return }
                config = FromDiT.recordingSourceHash(value, in: config)
            }, progress: progress)
            return Summary(tensorCount: tensors.count, bytes: tensors.totalBytes, outputSHA256: hash)
        }
    }
}

/// A value computed on another thread; `value()` waits for it (and rethrows its error).
/// `@unchecked Sendable` because `result` is written on the worker and read by `value()` without a lock:
/// the worker writes it once and then leaves the group, and `value()` reads it only after `done.wait()`
/// returns, which the group orders after that leave, so the write happens before every read.
final class BackgroundValue<T: Sendable>: @unchecked Sendable {
    private var result: Result<T, Error>?
    private let done = DispatchGroup()

    init(_ compute: @escaping @Sendable () throws -> T) {
        done.enter()
        DispatchQueue.global().async {
            self.result = Result { try compute() }
            self.done.leave()
        }
    }

    func value() throws -> T {
        done.wait()
        return try result!.get()
    }

    /// Waits for the worker, whatever it gave. Callers that may leave early (an error) call it on the way
    /// out: a command exits right after, and exit() running OpenSSL's cleanup under a hash still in
    /// progress on the worker crashed the process (SIGILL) instead of ending it with the error's exit code.
    func finish() { done.wait() }
}
