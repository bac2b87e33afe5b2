import Dispatch
import PPModel
import PPTensor

/// `ppfinetune validate`: the recipe, model and data checked as a run would check them, the plan, and
/// a time estimate from a few timed steps on a throwaway copy. Nothing is written.
public struct FineTunePlan {
    public var recipe: Recipe
    public var config: ModelConfig
    public var trainCount: Int
    public var validationCount: Int
    public var phases: [(name: String, steps: Int, tensors: [String], parameters: Int)]
    public var secondsPerStep: Double?

    public static func make(recipe: Recipe, timedSteps: Int, verifyHashes: Bool = true, log: @escaping (String) -> Void) throws -> FineTunePlan {
        let run = try FineTuneRun(recipe: recipe, folder: FineTuneRun.validateOnlyFolder, resume: false, verifyHashes: verifyHashes, log: log)
        var remaining = recipe.steps
        let phases = zip(recipe.phases, run.phaseTensors).map { phase, names in
            let steps = min(remaining, phase.steps ?? remaining)
            remaining -= steps
            let count = run.model.layout.ranges(of: names).reduce(0) { $0 + $1.count }
            return (phase.name, steps, names, count)
        }
        var seconds: Double? = nil
        if timedSteps > 0 {
            _ = try run.trainStep()  // warm-up: plans activation memory
            let start = DispatchTime.now().uptimeNanoseconds
            for _ in 0..<timedSteps { _ = try run.trainStep() }
            seconds = Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9 / Double(timedSteps)
        }
        return FineTunePlan(recipe: recipe, config: run.config, trainCount: run.train.count, validationCount: run.validation.count,
                            phases: phases, secondsPerStep: seconds)
    }

    public func lines() -> [String] {
        let c = config
        var out = ["recipe \(recipe.name) (\(recipe.recipePath)), sha256 \(recipe.hash.prefix(16))...: OK",
                   "model: \(c.levels > 1 ? "\(c.levels)-level PPFlow" : "one-level SiT (continued training)"), D \(c.hiddenSize), depth \(c.depth), heads \(c.numHeads), patch \(c.patchSize), latents \(c.inChannels)x\(c.inputSize)x\(c.inputSize), \(c.numClasses) classes, thresholds \(c.thresholds)",
                   "data: \(trainCount) training, \(validationCount) validation samples",
                   "batch \(recipe.batchSize): \(recipe.levelCounts()) samples per level, label dropout \(recipe.labelDropout), attention \(recipe.attention == .perSample ? "per-sample" : "official packing")",
                   "optimizer: AdamW lr \(recipe.learningRate) (\(recipe.schedule.rawValue), warmup \(recipe.warmupSteps), final \(recipe.finalLearningRate)), betas (\(recipe.beta1), \(recipe.beta2)), eps \(recipe.eps), weight decay \(recipe.weightDecay), clip \(recipe.maxGradNorm.map { "\($0)" } ?? "none"); EMA \(recipe.emaDecay)",
                   "steps \(recipe.steps), checkpoint every \(recipe.checkpointEvery), validation every \(recipe.validateEvery), output \(recipe.output)"]
        for (i, p) in phases.enumerated() {
            let shown = p.tensors.count > 8 ? p.tensors.prefix(8).joined(separator: ", ") + ", ... (\(p.tensors.count) tensors)" : p.tensors.joined(separator: ", ")
            out.append("phase \(i + 1) '\(p.name)': \(p.steps) steps, \(p.parameters) parameters: \(shown)")
        }
        if let s = secondsPerStep {
            let total = s * Double(recipe.steps)
            out.append("time: \(Int((s * 1000).rounded())) ms/step, \(Format3.fixed(1 / s)) steps/s; estimated \(Int(total.rounded())) s for \(recipe.steps) steps (plus validation and checkpoints)")
        }
        return out
    }
}
