import PPCheckpoint
import PPJSON
import PPModel
import PPModelIO
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

/// `ppconvert convert RUN_DIR OUT.pt --format torch-train`: the newest checkpoint of a ppfinetune run
/// as the official trainer's `{model, ema, opt, args}`: raw weights as `model`, EMA as `ema`, the AdamW
/// moments and per-tensor step counts as `opt`, so `train.py --ckpt OUT.pt` continues the run on GPUs.
public enum TrainingRunExport {
    public static func isRunFolder(_ path: String) -> Bool {
        RunFolder.exists("\(path)/recipe.json") && RunFolder.latestCheckpoint(path) != nil
    }

    @discardableResult
    public static func write(run: String, to output: String) throws -> (checkpoint: String, step: Int) {
        guard let latest = RunFolder.latestCheckpoint(run) else { throw PPError(.missingInput, file: run, "no checkpoint in this run folder") }
        let loaded = try ModelLoader.load(latest.path)
        let emaTensors = loaded.parameters.tensors()
        let statePath = RunFolder.statePath(latest.path)
        let state = try SafetensorsFile.open(statePath)
        let recipe = try JSON.parse(file: "\(run)/recipe.json")
        let stepsJSON = try JSON.parse(state.metadata.first(where: { $0.0 == "adam_steps" })?.1 ?? "{}", origin: statePath)
        var model = TensorDict(), expAvg = TensorDict(), expAvgSq = TensorDict(), steps: [String: Int] = [:]
        for name in loaded.parameters.layout.names {
            guard let p = state.tensors["param." + name] else { throw PPError.badInput(statePath, entry: "param." + name, "missing") }
            model[name] = p
            if let k = stepsJSON[name]?.intValue, k > 0, let m = state.tensors["adam_m." + name], let v = state.tensors["adam_v." + name] {
                expAvg[name] = m; expAvgSq[name] = v; steps[name] = Int(k)
            }
        }
        var optimizer = TrainCheckpointExport.OptimizerState(step: latest.step, expAvg: expAvg, expAvgSq: expAvgSq,
                                                             learningRate: recipe["learning_rate"]?["peak"]?.doubleValue ?? 1e-4,
                                                             weightDecay: recipe["adamw"]?["weight_decay"]?.doubleValue ?? 0)
        optimizer.tensorSteps = steps
        try TrainCheckpointExport.write(model: model, ema: emaTensors, config: loaded.config, objective: .velocity, optimizer: optimizer, to: output)
        return (latest.path, latest.step)
    }
}
