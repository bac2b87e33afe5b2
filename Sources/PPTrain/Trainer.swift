import PPCheckpoint
import PPConvert
import PPFileIO
import PPJSON
import PPKernels
import PPLatents
import PPModel
import PPModelIO
import PPTensor
import PPVAE

#if canImport(Glibc)
import Glibc
#endif

/// What one optimizer step reported.
public struct StepReport: Sendable {
    public var step: Int
    public var totalSteps: Int
    public var loss: Float
    /// Mean loss of the batch's samples at each level (NaN for a level with no sample).
    public var levelLoss: [Float]
    public var learningRate: Double
    public var gradientNorm: Double
    public var phase: Int
}

/// Per-level validation loss of the model (EMA) weights at a step.
public struct ValidationReport: Sendable {
    public var step: Int
    public var levelLoss: [Double]
}

/// A fine-tuning run: the model, optimizer, EMA, data order and random state, with checkpoints that
/// hold all of it, so a resumed run continues bit for bit.
public final class FineTuneRun {
    public let recipe: Recipe
    public let folder: String
    public let config: ModelConfig
    public let train: LatentDataset
    public let validation: LatentDataset
    public private(set) var step = 0
    public let model: TrainingModel
    public private(set) var optimizer: AdamW
    public private(set) var ema: ExponentialMovingAverage
    var random: SeededRandom
    var cursor: DataCursor
    let nativeConfig: JSONObject
    public let resumedFrom: String?
    /// The start model's validation (step 0), when this process computed it.
    public private(set) var startValidation: ValidationReport?
    public var log: (String) -> Void
    private var validationInputs: [(x: [Float], t: [Float], y: [Int32], target: [Float])] = []  // per level: x [n,C,S,S], t [n], y [n], target [n,C,S,S]
    private var evaluator: Model?

    /// Loads the start model (converting a DiT/SiT if the recipe says so) and the data, checks that they
    /// fit, or restores everything from the newest checkpoint of `resume`. `verifyHashes`: check native
    /// checkpoints (the start model, the one resumed from) against the sha256 in their config.json.
    public init(recipe: Recipe, folder: String, resume: Bool, verifyHashes: Bool = true,
                log: @escaping (String) -> Void = { print($0) }) throws {
        self.recipe = recipe
        self.folder = folder
        self.log = log
        var config: ModelConfig
        var parameters: [Float]           // [P] raw weights
        var native: JSONObject
        var restored: (checkpoint: String, state: TrainState, ema: [Float])? = nil
        if resume {
            guard let latest = RunFolder.latestCheckpoint(folder) else {
                throw PPError(.missingInput, file: folder, "no checkpoint to resume from (checkpoints/step-* or final/)")
            }
            let loaded = try ModelLoader.load(latest.path, verifyHashes: verifyHashes)
            let state = try TrainState.read(RunFolder.statePath(latest.path), layout: loaded.weights.layout)
            guard state.recipeHash == recipe.hash else {
                throw PPError(.usage, file: recipe.recipePath, "differs from the recipe the run in \(folder) was started with (hash \(state.recipeHash.prefix(12)) vs \(recipe.hash.prefix(12))); resume needs the same recipe")
            }
            config = loaded.config
            parameters = state.parameters
            native = loaded.checkpoint.nativeConfig?.objectValue ?? JSONObject()
            restored = (latest.path, state, loaded.parameters().values)
        } else {
            (config, parameters, native) = try Self.startModel(recipe, verifyHashes: verifyHashes, log: log)
        }
        resumedFrom = restored?.checkpoint
        guard config.levels == recipe.levelShares.count else {
            throw PPError.badInput(recipe.recipePath, entry: "pyramid.shares", "\(recipe.levelShares.count) shares, but the model has \(config.levels) level(s)")
        }
        if let thresholds = recipe.thresholds, thresholds != config.thresholds {
            guard restored == nil else { throw PPError(.usage, file: recipe.recipePath, entry: "pyramid.thresholds", "differ from the run's") }
            config.thresholds = thresholds
            if var pyramid = native["pyramid"]?.objectValue {
                pyramid["thresholds"] = .array(thresholds.map { .double($0) }); native["pyramid"] = .object(pyramid)
            }
        }
        self.config = config
        nativeConfig = native

        // Data: image folders encoded first (into the run folder, resumable); all of it refused before
        // training when it does not fit the model.
        var scratch: [String] = []
        defer { scratch.forEach(FileOutput.removeTree) }
        let trainFiles = try Self.encodeImageFolders(recipe.dataFiles, role: "train", recipe: recipe, config: config, folder: folder, scratch: &scratch, log: log)
        let validationFiles = try Self.encodeImageFolders(recipe.validationFiles, role: "validation", recipe: recipe, config: config, folder: folder, scratch: &scratch, log: log)
        let all = try LatentDataset.load(trainFiles, channels: config.inChannels, side: config.inputSize, classes: config.numClasses)
        if recipe.validationFiles.isEmpty {
            let split = all.split(validationFraction: recipe.validationFraction, seed: recipe.seed ^ 0x5EED_0F_DA7A)
            train = split.train
            validation = split.validation.subset(Array(0..<min(split.validation.count, recipe.validationSamples)))
        } else {
            train = all
            let held = try LatentDataset.load(validationFiles, channels: config.inChannels, side: config.inputSize, classes: config.numClasses)
            validation = held.subset(Array(0..<min(held.count, recipe.validationSamples)))
        }

        model = TrainingModel(config: TrainConfig(model: config), parameters: parameters)
        model.attentionScope = recipe.attention
        optimizer = AdamW(options: AdamWOptions(learningRate: Float(recipe.learningRate), beta1: Float(recipe.beta1), beta2: Float(recipe.beta2),
                                                eps: Float(recipe.eps), weightDecay: Float(recipe.weightDecay), maxGradNorm: recipe.maxGradNorm.map(Float.init)),
                          parameterCount: parameters.count)
        ema = ExponentialMovingAverage(initial: parameters, decay: Float(recipe.emaDecay))
        random = SeededRandom(seed: recipe.seed)
        cursor = DataCursor(count: train.count, seed: recipe.seed)
        if let restored {
            step = restored.state.step
            optimizer.firstMoment = restored.state.firstMoment
            optimizer.secondMoment = restored.state.secondMoment
            optimizer.tensorSteps = restored.state.tensorSteps
            optimizer.step = restored.state.step
            ema.values = restored.ema
            random = SeededRandom(seed: restored.state.randomState)  // SplitMix64: the state is a seed
            cursor = DataCursor(count: train.count, seed: recipe.seed, epoch: restored.state.dataEpoch, position: restored.state.dataPosition)
        }
        try checkPhases()
        prepareValidation()
    }

    /// The model a recipe starts from: (configuration, weights [P], native config.json).
    static func startModel(_ recipe: Recipe, verifyHashes: Bool, log: (String) -> Void) throws -> (ModelConfig, [Float], JSONObject) {
        switch recipe.start {
        case .checkpoint(let path, let heads):
            let loaded = try ModelLoader.load(path, heads: heads, requireObjective: true, verifyHashes: verifyHashes)
            if loaded.checkpoint.objective == .epsilon {
                throw PPError.badInput(path, "an epsilon (DDPM) model; the trainer fine-tunes velocity (flow) models")
            }
            // A one-level (SiT) start is continued training: the baseline a pyramid fine-tune is judged against.
            let levels = loaded.config.levels
            let native = loaded.checkpoint.nativeConfig?.objectValue
                ?? FromDiT.nativeConfig(for: loaded.config, objective: .velocity,
                                        cfgScales: FromDiT.defaultCFGScales(levels: levels),
                                        family: levels > 1 ? "PPFlow-\(levels)" : "SiT", provenance: JSONObject([("source", .string(path))]))
            return (loaded.config, loaded.parameters().values, native)
        case .fromDiT(let f):
            var options = FromDiTOptions()
            options.levels = f.levels
            options.heads = f.heads
            options.thresholds = recipe.thresholds
            options.initializer = f.initializer == "calibrated" ? .calibrated : .repeat
            if let objective = f.objective { options.objective = Objective(rawValue: objective) }
            if let data = f.calibrationData {
                var calibration = CalibratedInitializer.Options(dataPath: data)
                if let n = f.calibrationSamples { calibration.samples = n }
                if let scale = f.detailScale { calibration.detailScale = scale }
                options.calibration = calibration
            }
            let source = try CheckpointLoader.load(f.source, verifyHashes: verifyHashes)
            let result = try FromDiT.convert(source, options: options, sourceSHA256: try CheckpointLoader.fileSHA256(f.source))
            for warning in result.warnings { log("warning: \(warning)") }
            guard result.nativeConfig["objective"]?.stringValue == Objective.velocity.rawValue else {
                throw PPError.badInput(f.source, "objective \(result.nativeConfig["objective"]?.stringValue ?? "unknown"); the trainer fine-tunes velocity (SiT) models (set start.from_dit.objective for a SiT without metadata)")
            }
            let detail = f.detailScale.map { $0 > 0 ? ", detail \($0)" : "" } ?? ""
            log("converted \(f.source) to a \(f.levels)-level PPFlow model (\(f.initializer) initializer\(detail))")
            return (result.config, try ModelParameters(config: result.config, tensors: result.tensors).values, result.nativeConfig)
        }
    }

    // MARK: Phases

    /// Names of the tensors each phase trains (fixed position tables never train).
    public var phaseTensors: [[String]] {
        recipe.phases.map { phase in
            model.layout.learnableNames.filter { name in phase.train.contains { NamePattern.matches($0, name) } }
        }
    }

    private func checkPhases() throws {
        for (i, phase) in recipe.phases.enumerated() {
            for pattern in phase.train where !model.layout.learnableNames.contains(where: { NamePattern.matches(pattern, $0) }) {
                throw PPError.badInput(recipe.recipePath, entry: "phases[\(i)].train", "'\(pattern)' matches no trainable tensor of this model")
            }
        }
    }

    // MARK: Training

    /// The (lo, hi] time band of a level.
    func band(_ level: Int) -> (Double, Double) {
        (level == 0 ? 0 : config.thresholds[level - 1], level == config.levels - 1 ? 1 : config.thresholds[level])
    }

    /// Draws the next batch: per-level counts from the shares, t uniform in each level's band, Gaussian
    /// noise, label dropout to the null class. Every draw comes from `random`; samples from `cursor`.
    func nextBatch() -> (batch: TrainBatch, levels: [Int]) {
        let counts = recipe.levelCounts(), S = train.sampleSize, K = config.numClasses
        let trainConfig = model.config
        var x1: [Float] = [], x0: [Float] = [], t: [Float] = [], y: [Int] = [], levels: [Int] = []
        x1.reserveCapacity(recipe.batchSize * S); x0.reserveCapacity(recipe.batchSize * S)
        for (level, n) in counts.enumerated() {
            let (lo, hi) = band(level)
            for _ in 0..<n {
                let index = cursor.next()
                x1 += train.latents[(index * S)..<((index + 1) * S)]
                var time = Float(hi - (hi - lo) * random.uniform())  // (lo, hi]
                if trainConfig.level(forTime: time) != level { time = Float(lo).nextUp }
                t.append(time)
                x0 += random.normals(S)
                y.append(random.uniform() < recipe.labelDropout ? K : train.labels[index])
                levels.append(level)
            }
        }
        return (TrainBatch(x1: x1, x0: x0, t: t, y: y), levels)
    }

    /// One optimizer step. A non-finite loss or gradient stops before anything changes.
    public func trainStep() throws -> StepReport {
        let next = step + 1
        let (batch, levels) = nextBatch()
        let (loss, perSample) = try model.forwardBackward(batch)
        let phase = recipe.phaseIndex(atStep: next)
        let tensors = model.layout.ranges(of: phaseTensors[phase])
        optimizer.options.learningRate = Float(recipe.learningRate(atStep: next))
        guard loss.isFinite else { throw nonFinite("loss is \(loss)", next) }
        var gradientSquares = 0.0
        for r in tensors { for i in r { gradientSquares += Double(model.gradients[i]) * Double(model.gradients[i]) } }
        guard gradientSquares.isFinite else { throw nonFinite("gradient is not finite", next) }
        let norm = optimizer.update(parameters: &model.parameters, gradients: &model.gradients, tensors: tensors)
        ema.update(with: model.parameters)
        step = next
        var sums = [Double](repeating: 0, count: config.levels), counts = [Int](repeating: 0, count: config.levels)
        for (i, l) in levels.enumerated() { sums[l] += Double(perSample[i]); counts[l] += 1 }
        return StepReport(step: next, totalSteps: recipe.steps, loss: loss,
                          levelLoss: (0..<config.levels).map { counts[$0] > 0 ? Float(sums[$0] / Double(counts[$0])) : .nan },
                          learningRate: recipe.learningRate(atStep: next), gradientNorm: norm, phase: phase)
    }

    private func nonFinite(_ what: String, _ at: Int) -> PPError {
        let last = RunFolder.latestCheckpoint(folder).map { "\($0.path) (step \($0.step))" } ?? "none written yet"
        return PPError(.mismatch, file: folder, "step \(at): \(what); training stopped. Last good checkpoint: \(last)")
    }

    // MARK: Validation

    /// Fixed validation inputs: every held-out sample at every level, t and noise from a seed of their own.
    private func prepareValidation() {
        var r = SeededRandom(seed: recipe.seed ^ 0x0A11_DA7E)
        let S = validation.sampleSize
        validationInputs = (0..<config.levels).map { level in
            let (lo, hi) = band(level)
            var x: [Float] = [], t: [Float] = [], target: [Float] = []
            for i in 0..<validation.count {
                let time = Float(lo + (hi - lo) * (0.5 + 0.9 * (r.uniform() - 0.5)))  // away from the band's ends
                let noise = r.normals(S)
                for e in 0..<S {
                    let data = validation.latents[i * S + e]
                    x.append(time * data + (1 - time) * noise[e])
                    target.append(data - noise[e])
                }
                t.append(time)
            }
            return (x, t, validation.labels.map { Int32($0) }, target)
        }
    }

    /// Mean squared error of the prediction channels against x1 - x0, per level, for weights `values` [P].
    public func validate(_ values: [Float]) -> [Double] {
        let parameters = ModelParameters(config: config)
        parameters.values = values
        let net = Model(config: config, parameters: parameters)
        let S = validation.sampleSize, C = config.inChannels, outSize = config.outChannels * config.inputSize * config.inputSize
        let chunk = 32
        return validationInputs.map { input in
            var sum = 0.0
            var start = 0
            while start < validation.count {
                let n = min(chunk, validation.count - start)
                let out = net.forward(x: Array(input.x[(start * S)..<((start + n) * S)]), t: Array(input.t[start..<(start + n)]),
                                      y: Array(input.y[start..<(start + n)]), batch: n)  // [n, Cout, H, W]
                for i in 0..<n {
                    for e in 0..<(C * config.inputSize * config.inputSize) {
                        let d = Double(out[i * outSize + e]) - Double(input.target[(start + i) * S + e])
                        sum += d * d
                    }
                }
                start += n
            }
            return sum / Double(validation.count * S)
        }
    }

    // MARK: The loop

    /// Trains to the recipe's last step, validating and checkpointing on schedule; `onStep` sees every step.
    public func run(onStep: (StepReport) -> Void, onValidation: (ValidationReport) -> Void) throws {
        let metrics = try MetricsLog(path: "\(folder)/metrics.jsonl", keepingThrough: step)
        if step == 0 {
            let report = ValidationReport(step: 0, levelLoss: validate(ema.values))
            startValidation = report
            try metrics.append(report.json)
            onValidation(report)
        }
        while step < recipe.steps {
            let report = try trainStep()
            if step % recipe.logEvery == 0 || step == recipe.steps { try metrics.append(report.json) }
            onStep(report)
            if step % recipe.validateEvery == 0 || step == recipe.steps {
                let v = ValidationReport(step: step, levelLoss: validate(ema.values))
                try metrics.append(v.json)
                onValidation(v)
            }
            if step % recipe.checkpointEvery == 0 || step == recipe.steps { try writeCheckpoint() }
        }
    }

    /// The checkpoint folder of the current step, written atomically: the model (EMA weights, native
    /// PPFlow) and `state/train-state.safetensors` (everything else a resume needs).
    public func writeCheckpoint() throws {
        let path = step == recipe.steps ? "\(folder)/final" : "\(folder)/checkpoints/\(RunFolder.checkpointName(step))"
        if step != recipe.steps { _ = mkdir("\(folder)/checkpoints", 0o755) }
        var native = nativeConfig
        var provenance = native["provenance"]?.objectValue ?? JSONObject()
        provenance["fine_tune"] = .object(JSONObject([
            ("recipe", .string(recipe.name)), ("recipe_sha256", .string(recipe.hash)), ("step", .int(Int64(step))),
            ("weights", .string("ema")), ("ema_decay", .double(recipe.emaDecay)),
            ("attention", .string(recipe.attention == .perSample ? "per-sample" : "official")),
        ]))
        native["provenance"] = .object(provenance)
        let emaParameters = ModelParameters(config: config)
        emaParameters.values = ema.values
        let state = TrainState(step: step, parameters: model.parameters, firstMoment: optimizer.firstMoment, secondMoment: optimizer.secondMoment,
                               tensorSteps: optimizer.tensorSteps, randomState: random.state, dataEpoch: cursor.epoch,
                               dataPosition: cursor.position, recipeHash: recipe.hash)
        try FileOutput.writeFolder(path) { temporary in
            _ = try NativeCheckpoint.writeContents(tensors: emaParameters.tensors(), config: native, into: temporary)
            _ = mkdir("\(temporary)/\(RunFolder.stateFolder)", 0o755)
            try state.write(to: RunFolder.statePath(temporary), layout: model.layout)
        }
        RunFolder.prune(folder, keep: recipe.keepCheckpoints)
    }
}

extension StepReport {
    public var json: JSONValue {
        .object(JSONObject([
            ("step", .int(Int64(step))), ("loss", .double(Double(loss))),
            ("loss_level", .array(levelLoss.map { $0.isNaN ? .null : .double(Double($0)) })),
            ("lr", .double(learningRate)), ("grad_norm", .double(gradientNorm)), ("phase", .int(Int64(phase))),
        ]))
    }
}

extension ValidationReport {
    public var json: JSONValue {
        .object(JSONObject([("step", .int(Int64(step))), ("validation_level", .array(levelLoss.map { .double($0) }))]))
    }
}


/// What a finished run reports.
public struct RunSummary {
    public var folder: String
    public var finalCheckpoint: String
    public var metrics: String
    public var pictures: [String]
    public var steps: Int
    public var seconds: Double
    /// Validation loss per level at step 0 (the start model) and at the end, from the metrics log.
    public var before: [Double]?
    public var after: [Double]?

    public var json: JSONValue {
        .object(JSONObject([
            ("folder", .string(folder)), ("final_checkpoint", .string(finalCheckpoint)), ("metrics", .string(metrics)),
            ("loss_curves", .array(pictures.map { .string($0) })), ("steps", .int(Int64(steps))), ("seconds", .double(seconds)),
            ("validation_before", before.map { .array($0.map { .double($0) }) } ?? .null),
            ("validation_after", after.map { .array($0.map { .double($0) }) } ?? .null),
        ]))
    }
}

extension FineTuneRun {
    /// Creates the run folder (or checks it when resuming) and records the recipe as run.
    /// The folder `ppfinetune validate` passes: nothing is written there; image folders are tried on a
    /// first shard in a temporary folder instead of being encoded whole.
    public static let validateOnlyFolder = "/nonexistent-validate-only"

    /// Image folders among `sources` encoded with the recipe's VAE into `RUN/latents/ROLE-I` (a latent
    /// cache: a resumed run continues an unfinished encode), at the model's latent size, as the
    /// official train.py does (posterior sample times the scaling factor; noise seeded by the recipe seed).
    static func encodeImageFolders(_ sources: [DataSource], role: String, recipe: Recipe, config: ModelConfig, folder: String,
                                   scratch: inout [String], log: @escaping (String) -> Void) throws -> [DataSource] {
        guard sources.contains(where: { if case .imageFolder = $0 { return true } else { return false } }) else { return sources }
        guard let vaePath = recipe.vae else { throw PPError(.usage, file: recipe.recipePath, entry: "data.vae", "needed to encode image folders") }
        let vae = try VAEInput.load(vaePath)
        guard vae.config.latentChannels == config.inChannels else {
            throw PPError(.usage, file: recipe.recipePath, entry: "data.vae",
                "\(vaePath) has \(vae.config.latentChannels) latent channels, the model takes \(config.inChannels)")
        }
        let validateOnly = folder == validateOnlyFolder
        let size = config.inputSize * vae.config.downsamplingFactor
        var out: [DataSource] = []
        for (index, source) in sources.enumerated() {
            guard case .imageFolder(let images) = source else { out.append(source); continue }
            let cache: String
            if validateOnly {
                var template = Array("/tmp/ppfinetune-validate-XXXXXX".utf8CString)
                cache = template.withUnsafeMutableBufferPointer { String(cString: mkdtemp($0.baseAddress!)) } + "/cache"
                scratch.append(FileOutput.directory(of: cache))
            } else {
                _ = mkdir("\(folder)/latents", 0o755)
                cache = "\(folder)/latents/\(role)-\(index)"
            }
            let options = LatentEncodeOptions(size: size, mode: .sample, seed: recipe.seed, shardSize: validateOnly ? 16 : 4096)
            log("encoding \(images) at \(size)x\(size) with \(vaePath) into \(validateOnly ? "a temporary cache (first 16 images only)" : cache)")
            let report = try LatentCache.encode(folder: images, vae: vae, vaeName: vaePath, options: options, to: cache,
                                                stopAfterShards: validateOnly ? 1 : nil, skipped: { log("skipped " + $0) })
            log("\(images): \(report.samples) latents, \(report.skipped.count) image(s) skipped\(report.shardsReused > 0 ? ", \(report.shardsReused) shard(s) from the earlier run" : "")")
            out.append(validateOnly ? .safetensors(cache + "/" + LatentCache.shardName(0)) : .latentCache(cache))
        }
        return out
    }

    public static func prepareFolder(_ folder: String, recipe: Recipe, resume: Bool, force: Bool = false) throws {
        var st = stat()
        if resume {
            guard stat(folder, &st) == 0 else { throw PPError(.missingInput, file: folder, "no such run folder to resume") }
            return
        }
        if !force && stat(folder, &st) == 0 && RunFolder.latestCheckpoint(folder) != nil {
            throw PPError(.outputRefused, file: folder, "already holds a run; pass --resume \(folder) to continue it, --force to start over, or another --out")
        }
        try OutputTarget.check(folder, kind: .folder, force: force, createParents: true, toolkitEntries: RunFolder.toolkitEntries)
        // --force on an earlier run (the check above refused anything else): remove what that run wrote.
        if force, let owned = RunFolder.toolkitEntries(in: folder) {
            for name in OutputTarget.listFolder(folder) where owned.contains(name) { FileOutput.removeTree("\(folder)/\(name)") }
        }
        var path = folder.hasPrefix("/") ? "" : "."
        for part in folder.split(separator: "/") {
            path += "/" + part
            _ = mkdir(path, 0o755)
        }
        guard stat(folder, &st) == 0 else { throw PPError(.io, file: folder, "cannot create the run folder") }
        var recorded = recipe.json.objectValue ?? JSONObject()
        recorded["recipe_sha256"] = .string(recipe.hash)
        try FileOutput.writeFile("\(folder)/recipe.json", bytes: Array((JSON.serialize(.object(recorded), pretty: true) + "\n").utf8))
    }

    /// Loss pictures and summary.json from the metrics log.
    public func finish(seconds: Double) throws -> RunSummary {
        let metrics = "\(folder)/metrics.jsonl"
        let pictures = try LossCurve.write(metrics: metrics, levels: config.levels, into: folder)
        let series = try LossCurve.read(metrics: metrics, levels: config.levels)
        func at(_ step: Int) -> [Double]? {
            let values = series.compactMap { s in s.validation.last(where: { $0.step == step })?.loss }
            return values.count == config.levels ? values : nil
        }
        let summary = RunSummary(folder: folder, finalCheckpoint: "\(folder)/final", metrics: metrics, pictures: pictures,
                                 steps: step, seconds: seconds, before: at(0), after: at(step))
        try FileOutput.writeFile("\(folder)/summary.json", bytes: Array((JSON.serialize(summary.json, pretty: true) + "\n").utf8))
        return summary
    }
}
