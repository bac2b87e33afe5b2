import PPFileIO
import PPJSON
import PPModel
import PPSafetensors
import PPTensor

#if canImport(Glibc)
import Glibc
#endif

/// The layout of a run folder:
///   recipe.json                       the recipe as run (after command-line overrides)
///   metrics.jsonl                     one JSON object per logged step and per validation
///   checkpoints/step-NNNNNNN/         native PPFlow folder (EMA weights) + state/train-state.safetensors
///   final/                            the same at the last step
///   loss-level-L.svg, summary.json    written at the end
public enum RunFolder {
    public static let stateFolder = "state"
    public static let stateFile = "train-state.safetensors"

    public static func checkpointName(_ step: Int) -> String {
        let digits = String(step)
        return "step-" + String(repeating: "0", count: max(0, 7 - digits.count)) + digits
    }

    public static func statePath(_ checkpoint: String) -> String { "\(checkpoint)/\(stateFolder)/\(stateFile)" }

    public static func exists(_ path: String) -> Bool { var st = stat(); return stat(path, &st) == 0 }

    /// Checkpoints in `run/checkpoints`, by step.
    public static func checkpoints(_ run: String) -> [(step: Int, path: String)] {
        guard let dir = opendir("\(run)/checkpoints") else { return [] }
        defer { closedir(dir) }
        var found: [(Int, String)] = []
        while let entry = readdir(dir) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) { String(cString: $0.bindMemory(to: CChar.self).baseAddress!) }
            guard name.hasPrefix("step-"), let step = Int(name.dropFirst(5)), exists(statePath("\(run)/checkpoints/\(name)")) else { continue }
            found.append((step, "\(run)/checkpoints/\(name)"))
        }
        return found.sorted { $0.0 < $1.0 }
    }

    /// The newest complete checkpoint: `final` if present, else the highest step.
    public static func latestCheckpoint(_ run: String) -> (step: Int, path: String)? {
        if exists(statePath("\(run)/final")), let state = try? readStep(statePath("\(run)/final")) {
            return (state, "\(run)/final")
        }
        return checkpoints(run).last
    }

    /// The step recorded in a training state file's metadata.
    public static func readStep(_ path: String) throws -> Int {
        let file = try SafetensorsFile.open(path)
        guard let text = file.metadata.first(where: { $0.0 == "step" })?.1, let step = Int(text) else {
            throw PPError.badInput(path, entry: "__metadata__.step", "missing or not an integer")
        }
        return step
    }

    /// The entries of `folder` a run writes, when it is a run folder (its recipe.json carries the
    /// recipe hash the trainer records); nil otherwise.
    public static func toolkitEntries(in folder: String) -> Set<String>? {
        guard let recipe = try? JSON.parse(file: "\(folder)/recipe.json"), recipe["recipe_sha256"]?.stringValue != nil else { return nil }
        return Set(["recipe.json", "metrics.jsonl", "summary.json", "checkpoints", "final", "latents"] + (0..<8).map { "loss-level-\($0).svg" })
    }

    /// Removes all but the newest `keep` step checkpoints.
    public static func prune(_ run: String, keep: Int) {
        let all = checkpoints(run)
        for old in all.dropLast(keep) { FileOutput.removeTree(old.path) }
    }
}

/// Everything besides the EMA weights that a resume needs. Stored as safetensors: `param.<key>`,
/// `adam_m.<key>`, `adam_v.<key>` (float32, layout shapes), and in `__metadata__`: step, rng_state,
/// data_epoch, data_position, recipe_sha256, adam_steps (JSON: key -> updates).
public struct TrainState {
    public var step: Int
    public var parameters: [Float]     // [P]
    public var firstMoment: [Float]    // [P]
    public var secondMoment: [Float]   // [P]
    public var tensorSteps: [Int: Int] // by flat offset
    public var randomState: UInt64
    public var dataEpoch: Int
    public var dataPosition: Int
    public var recipeHash: String

    public func write(to path: String, layout: ParameterLayout) throws {
        var tensors = TensorDict()
        for (prefix, values) in [("param.", parameters), ("adam_m.", firstMoment), ("adam_v.", secondMoment)] {
            for (name, t) in layout.tensors(values, prefix: prefix).items { tensors[name] = t }
        }
        var steps = JSONObject()
        for (i, name) in layout.names.enumerated() { if let k = tensorSteps[layout.offsets[i]] { steps[name] = .int(Int64(k)) } }
        let metadata: [(String, String)] = [
            ("step", String(step)), ("rng_state", String(randomState)), ("data_epoch", String(dataEpoch)),
            ("data_position", String(dataPosition)), ("recipe_sha256", recipeHash),
            ("adam_steps", JSON.serialize(.object(steps), pretty: false)),
        ]
        _ = try SafetensorsWriter.write(tensors, metadata: metadata, to: path)
    }

    static func metadata(_ file: SafetensorsFile, _ key: String, _ path: String) throws -> String {
        guard let value = file.metadata.first(where: { $0.0 == key })?.1 else { throw PPError.badInput(path, entry: "__metadata__.\(key)", "missing from the training state") }
        return value
    }

    public static func read(_ path: String, layout: ParameterLayout) throws -> TrainState {
        let file = try SafetensorsFile.open(path)
        func flat(_ prefix: String) throws -> [Float] {
            var values = [Float](repeating: 0, count: layout.totalCount)
            for (i, name) in layout.names.enumerated() {
                guard let t = file.tensors[prefix + name], t.shape == layout.shapes[i], t.dtype == .f32 else {
                    throw PPError.badInput(path, entry: prefix + name, "missing or not float32 \(layout.shapes[i])")
                }
                values.withUnsafeMutableBufferPointer { t.writeFloats(into: UnsafeMutableBufferPointer(rebasing: $0[layout.offsets[i]..<(layout.offsets[i] + t.elementCount)])) }
            }
            return values
        }
        func integer(_ key: String) throws -> Int {
            guard let v = Int(try metadata(file, key, path)) else { throw PPError.badInput(path, entry: "__metadata__.\(key)", "not an integer") }
            return v
        }
        guard let rng = UInt64(try metadata(file, "rng_state", path)) else { throw PPError.badInput(path, entry: "__metadata__.rng_state", "not an integer") }
        let stepsJSON = try JSON.parse(try metadata(file, "adam_steps", path), origin: path)
        var tensorSteps: [Int: Int] = [:]
        for (i, name) in layout.names.enumerated() { if let k = stepsJSON[name]?.intValue { tensorSteps[layout.offsets[i]] = Int(k) } }
        return TrainState(step: try integer("step"), parameters: try flat("param."), firstMoment: try flat("adam_m."), secondMoment: try flat("adam_v."),
                          tensorSteps: tensorSteps, randomState: rng, dataEpoch: try integer("data_epoch"), dataPosition: try integer("data_position"),
                          recipeHash: try metadata(file, "recipe_sha256", path))
    }
}

/// metrics.jsonl: appended line by line (flushed), cut back to `step` when a run resumes.
final class MetricsLog {
    let path: String
    private var file: UnsafeMutablePointer<FILE>?

    init(path: String, keepingThrough step: Int) throws {
        self.path = path
        var kept: [String] = []
        if step > 0, let text = try? MetricsLog.readLines(path) {
            kept = text.filter { line in (try? JSON.parse(line, origin: path))?["step"]?.intValue.map { Int($0) <= step } ?? false }
        }
        let content = kept.map { $0 + "\n" }.joined()
        try FileOutput.writeFile(path, bytes: Array(content.utf8))
        guard let f = fopen(path, "a") else { throw PPError(.io, file: path, "cannot open for appending") }
        file = f
    }

    deinit { if let file { fclose(file) } }

    func append(_ value: JSONValue) throws {
        let line = JSON.serialize(value, pretty: false) + "\n"
        guard fputs(line, file) >= 0, fflush(file) == 0 else { throw PPError(.io, file: path, "write failed") }
    }

    static func readLines(_ path: String) throws -> [String] {
        let storage = try ByteStorage(mappingFile: path)
        return String(decoding: storage.bytes, as: UTF8.self).split(separator: "\n").map(String.init)
    }
}
