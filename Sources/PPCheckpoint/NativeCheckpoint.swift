import PPFileIO
import PPJSON
import PPSafetensors
import PPTensor

/// The toolkit's own checkpoint: a folder with `model.safetensors` (official PPFlow key names, so the
/// official code loads it with safetensors and `load_state_dict(strict=True)`) and `config.json`
/// (format, architecture, pyramid, guidance, objective, provenance, and the sha256 of the weights).
/// The config without `provenance` and `model_sha256` is also stored in the safetensors `__metadata__`
/// under `ppflow_config`, so the weights file describes itself (architecture, pyramid, objective);
/// provenance (with the source's sha256, which may still be computing while the weights are written)
/// lives in config.json.
public enum NativeCheckpoint {
    public static let formatName = "ppflow-native"
    public static let formatVersion: Int64 = 1
    public static let weightsFileName = "model.safetensors"
    public static let configFileName = "config.json"
    public static let metadataKey = "ppflow_config"

    /// Writes the folder atomically (built under a temporary name, then renamed into place).
    /// `config` must not contain `model_sha256`; it is computed here. Returns the weights' sha256.
    /// `completeConfig` runs after the weights are written and before config.json is: the place to
    /// fill in what was computed meanwhile (the source's sha256).
    @discardableResult
    public static func write(tensors: TensorDict, config: JSONObject, to folder: String,
                             completeConfig: ((inout JSONObject) throws -> Void)? = nil,
                             progress: ((Int, Int) -> Void)? = nil) throws -> String {
        var hash = ""
        try FileOutput.writeFolder(folder) { temporary in
            hash = try writeContents(tensors: tensors, config: config, into: temporary, completeConfig: completeConfig, progress: progress)
        }
        return hash
    }

    /// What the weights file says about itself: the config without provenance and hashes (so it is the
    /// same whatever the source's path, and computable before the weights are hashed).
    public static func description(of config: JSONObject) -> JSONObject {
        var described = config
        described["format"] = .string(formatName)
        described["format_version"] = .int(formatVersion)
        described["provenance"] = nil
        described["model_sha256"] = nil
        return described
    }

    /// `description(of:)` as the bytes of a `.pt`'s description record (sorted keys: deterministic).
    public static func descriptionRecord(of config: JSONObject) -> [UInt8] {
        Array((JSON.serialize(.object(description(of: config)), pretty: true, sortKeys: true) + "\n").utf8)
    }

    /// Writes the two files into an existing (temporary) folder.
    public static func writeContents(tensors: TensorDict, config: JSONObject, into folder: String,
                                     completeConfig: ((inout JSONObject) throws -> Void)? = nil,
                                     progress: ((Int, Int) -> Void)? = nil) throws -> String {
        var withFormat = config
        withFormat["format"] = .string(formatName)
        withFormat["format_version"] = .int(formatVersion)
        withFormat["model_sha256"] = nil
        let metadata = [(metadataKey, JSON.serialize(.object(description(of: withFormat)), pretty: false, sortKeys: true))]
        let weightsPath = "\(folder)/\(weightsFileName)"
        let hash = try SafetensorsWriter.write(tensors, metadata: metadata, to: weightsPath, progress: progress)
        try completeConfig?(&withFormat)
        var full = withFormat
        full["model_sha256"] = .string(hash)
        try FileOutput.writeFile("\(folder)/\(configFileName)", bytes: Array((JSON.serialize(.object(full), pretty: true) + "\n").utf8))
        return hash
    }

    /// The entries of `folder` the toolkit wrote, when it is a native checkpoint folder (its config.json
    /// names the format); nil otherwise. `state/` is a run checkpoint's training state.
    public static func toolkitEntries(in folder: String) -> Set<String>? {
        guard let config = try? JSON.parse(file: "\(folder)/\(configFileName)"),
              config["format"]?.stringValue == formatName else { return nil }
        return [configFileName, weightsFileName, "state"]
    }

    /// Loads a native folder found by `CheckpointLoader` and checks the weights against the recorded hash.
    static func load(tree: FileTree, root: String, config: JSONValue, verifyHash: Bool,
                     requireObjective: Bool = false) throws -> LoadedCheckpoint {
        if requireObjective, Objective(rawValue: config["objective"]?.stringValue ?? "") ?? .unknown == .unknown {
            throw PPError(.usage, file: tree.origin, entry: "config.json objective",
                          "unknown; convert the source again with --objective velocity (SiT) or epsilon (DiT)")
        }
        let rel = root.isEmpty ? weightsFileName : "\(root)/\(weightsFileName)"
        guard tree.contains(rel) else {
            throw PPError.badInput(tree.origin, entry: weightsFileName, "missing from a \(formatName) folder")
        }
        if let version = config["format_version"]?.intValue, version > formatVersion {
            throw PPError(.unsupported, file: tree.displayPath(rel), "written by a newer toolkit (format_version \(version) > \(formatVersion))")
        }
        let storage = try tree.open(rel)
        if verifyHash, let recorded = config["model_sha256"]?.stringValue {
            let actual = SHA256.hash(storage)
            guard actual == recorded else {
                throw PPError.badInput(tree.displayPath(rel),
                    "sha256 \(actual) differs from \(recorded) recorded in config.json (the file was changed or corrupted; --no-verify-hash skips this check)")
            }
        }
        let file = try SafetensorsFile.parse(storage, origin: tree.displayPath(rel))
        var loaded = CheckpointLoader.describe(file.tensors, containers: [formatName, "safetensors"], origin: tree.origin)
        loaded.weightsFile = rel
        apply(config, source: configFileName, to: &loaded)
        return loaded
    }

    /// Takes architecture, objective, numerics, family and pyramid from a native config (or a `.pt`'s
    /// description record).
    static func apply(_ config: JSONValue, source: String, to loaded: inout LoadedCheckpoint) {
        loaded.nativeConfig = config
        loaded.sidecarConfig = config
        if let architecture = config["architecture"]?.objectValue {
            for key in architecture.keys { loaded.architectureHints[key] = architecture[key] }
        }
        if let name = config["objective"]?.stringValue, let objective = Objective(rawValue: name) {
            loaded.objective = objective
            loaded.objectiveSource = "\(source) objective"
        }
        if config["time_features"]?.stringValue == "diffusers" { loaded.diffusersNumerics = true }
        if let family = config["family"]?.stringValue { loaded.family = family }
    }

    /// sha256 of a file, streamed through the mapping with flat memory.
    public static func sha256(ofFile path: String) throws -> String {
        try SHA256.hashFile(path)
    }
}
