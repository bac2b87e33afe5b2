import PPConvert
import PPFileIO
import PPJSON
import PPModelIO
import PPTensor

/// `ppconvert convert RUN_DIR OUT.pt --format torch-train`: the newest checkpoint of a ppfinetune run
/// as the official trainer's `{model, ema, opt, args}`: raw weights as `model`, EMA as `ema`, the AdamW
/// moments and per-tensor step counts as `opt`, so `train.py --ckpt OUT.pt` continues the run on GPUs.
public enum TrainingRunExport {
    public static func isRunFolder(_ path: String) -> Bool {
        RunFolder.exists("\(path)/recipe.json") && RunFolder.latestCheckpoint(path) != nil
    }

    /// `verifyHashes`: check the checkpoint's weights against the sha256 in its config.json.
    @discardableResult
    public static func write(run: String, to output: String, verifyHashes: Bool = true) throws -> (checkpoint: String, step: Int) {
        guard let latest = RunFolder.latestCheckpoint(run) else { throw PPError(.missingInput, file: run, "no checkpoint in this run folder") }
        let loaded = try ModelLoader.load(latest.path, verifyHashes: verifyHashes)
        let layout = loaded.weights.layout
        let state = try TrainState.read(RunFolder.statePath(latest.path), layout: layout)
        let recipe = try JSON.parse(file: "\(run)/recipe.json")
        let model = layout.tensors(state.parameters)
        let firstMoments = layout.tensors(state.firstMoment), secondMoments = layout.tensors(state.secondMoment)
        // Only tensors that were updated carry AdamW moments (the official optimizer has no state for the others).
        var expAvg = TensorDict(), expAvgSq = TensorDict(), steps: [String: Int] = [:]
        for (i, name) in layout.names.enumerated() {
            guard let k = state.tensorSteps[layout.offsets[i]], k > 0 else { continue }
            expAvg[name] = firstMoments[name]; expAvgSq[name] = secondMoments[name]; steps[name] = k
        }
        var optimizer = TrainCheckpointExport.OptimizerState(step: latest.step, expAvg: expAvg, expAvgSq: expAvgSq,
                                                             learningRate: recipe["learning_rate"]?["peak"]?.doubleValue ?? 1e-4,
                                                             weightDecay: recipe["adamw"]?["weight_decay"]?.doubleValue ?? 0)
        optimizer.tensorSteps = steps
        try TrainCheckpointExport.write(model: model, ema: loaded.parameters().tensors(), config: loaded.config, objective: .velocity,
                                        optimizer: optimizer, to: output)
        return (latest.path, latest.step)
    }
}
