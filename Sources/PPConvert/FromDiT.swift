import PPCheckpoint
import PPFileIO
import PPJSON
import PPKernels
import PPModel
import PPModelIO
import PPTensor

/// Options of `ppconvert from-dit`.
public struct FromDiTOptions {
    public var levels = 2
    public var initializer: InitializerKind = .repeat
    public var thresholds: [Double]? = nil
    public var cfgScales: [Double]? = nil
    public var objective: Objective? = nil
    public var dtype: OutputDType = .keep
    public var heads: Int? = nil
    /// A key-mapping table to use instead of the built-in one (`--rules FILE`).
    public var rulesFile: String? = nil
    /// For `initializer == .calibrated`: the latents and fit settings.
    public var calibration: CalibratedInitializer.Options? = nil
    /// Progress of long steps (calibration): (what, done, total).
    public var progress: ((String, Int, Int) -> Void)? = nil
    public init() {}

    public var resolvedThresholds: [Double] { thresholds ?? ModelConfig.officialThresholds(levels: levels) }
    public var resolvedCFGScales: [Double] { cfgScales ?? FromDiT.defaultCFGScales(levels: levels) }
}

/// What a conversion does to each tensor, for `--dry-run` and the JSON report.
public struct ConversionPlan: Sendable {
    public var copied: [String] = []
    public var derived: [(target: String, source: String, rule: String)] = []
    public var created: [(target: String, rule: String)] = []
    public var dropped: [(source: String, why: String)] = []
    public var outputBytes = 0
}

public struct ConversionResult: Sendable {
    public var tensors: TensorDict          // official PPFlow key order
    public var config: ModelConfig           // the PPFlow model's configuration
    public var nativeConfig: JSONObject      // config.json for a native folder (without model_sha256)
    public var plan: ConversionPlan
    public var warnings: [String]
    public var calibration: CalibratedInitializer.Report?
}

public enum FromDiT {
    public static let toolVersion = "ppflow-toolkit 0.1.0"

    /// Converts a DiT/SiT source into a PPFlow model with the rules of `converters/ppflow-from-dit.json`.
    /// The repeat-rule conversion of `source` with the levels and thresholds of `config`: the baseline a
    /// calibrated model is compared with.
    public static func repeatRuleWeights(of source: LoadedCheckpoint, like config: ModelConfig) throws -> ModelWeights {
        var options = FromDiTOptions()
        options.levels = config.levels
        options.thresholds = config.thresholds
        options.heads = config.numHeads
        // The objective only labels a conversion; the repeat rule's weights do not depend on it. A source
        // without one (a bare SiT .pt converted with --objective) would otherwise be refused here.
        if source.objective == .unknown { options.objective = .velocity }
        let result = try convert(source, options: options, sourceSHA256: nil)
        return try ModelWeights(config: result.config, tensors: result.tensors)
    }

    /// `config` (a native config.json) with the source's sha256 in `provenance.source.sha256`.
    public static func recordingSourceHash(_ sha256: String?, in config: JSONObject) -> JSONObject {
        var config = config
        var provenance = config["provenance"]?.objectValue ?? JSONObject()
        var source = provenance["source"]?.objectValue ?? JSONObject()
        source["sha256"] = sha256.map { .string($0) } ?? .null
        provenance["source"] = .object(source)
        config["provenance"] = .object(provenance)
        return config
    }

    public static func convert(_ source: LoadedCheckpoint, options: FromDiTOptions, sourceSHA256: String?) throws -> ConversionResult {
        guard options.levels == 2 || options.levels == 3 else {
            throw PPError(.usage, entry: "--levels", "must be 2 or 3, got \(options.levels)")
        }
        let thresholds = options.resolvedThresholds
        guard thresholds.count == options.levels - 1, thresholds == thresholds.sorted(), thresholds.allSatisfy({ $0 > 0 && $0 < 1 }) else {
            throw PPError(.usage, entry: "--thresholds", "need \(options.levels - 1) increasing value(s) inside (0, 1), got \(thresholds)")
        }
        guard options.resolvedCFGScales.count == options.levels else {
            throw PPError(.usage, entry: "--cfg-scales", "need one scale per level (\(options.levels)), got \(options.resolvedCFGScales.count)")
        }
        guard case .ditSit = source.layout else {
            throw PPError.badInput(source.path, "from-dit needs a DiT/SiT model; this one is \(source.layout)")
        }
        let warnings: [String] = []

        // The objective: metadata wins; the flag fills a gap or must agree.
        var objective = source.objective
        var objectiveSource = source.objectiveSource
        if let wanted = options.objective, wanted != .unknown {
            if objective != .unknown && objective != wanted {
                throw PPError(.usage, file: source.path, entry: "--objective",
                    "says \(wanted.rawValue) but the source's metadata says \(objective.rawValue) (\(objectiveSource))")
            }
            if objective == .unknown { objectiveSource = "--objective" }
            objective = wanted
        }
        if objective == .unknown {
            // Settled here, once: a converted model whose objective is unknown cannot be sampled or trained.
            throw PPError(.usage, file: source.path, entry: "objective",
                "unknown (\(source.objectiveSource)); pass --objective velocity for SiT weights, --objective epsilon for DiT weights")
        }

        let heads = options.heads ?? source.numHeads
        let sourceConfig = try ModelLoader.configuration(of: source, heads: heads)
        var target = sourceConfig
        target.levels = options.levels
        target.thresholds = thresholds

        let rules = try options.rulesFile.map(KeyRules.load(file:)) ?? KeyRules.builtIn()
        var plan = ConversionPlan()
        var out = TensorDict()
        var used = Set<String>()
        let wantedDType = options.dtype.dtype
        func cast(_ t: TensorView) -> TensorView {
            guard let wantedDType, t.dtype.isFloatingPoint, t.dtype != wantedDType else { return t }
            return t.converted(to: wantedDType)
        }
        func sourceTensor(_ name: String, for targetKey: String) throws -> TensorView {
            guard let t = source.tensors[name] else {
                throw PPError.badInput(source.path, entry: name, "needed for \(targetKey) but missing from the source")
            }
            used.insert(name)
            return t
        }
        let floatDType = source.tensors["x_embedder.proj.weight"]?.dtype ?? .f32
        for (key, shape) in target.parameterShapes {
            let tensor: TensorView
            if let rule = rules.rule(for: key) {
                switch rule.operation {
                case .copy:
                    tensor = try sourceTensor(rule.source!, for: key)
                    plan.derived.append((key, rule.source!, "copy"))
                case .inputProjection:
                    tensor = RepeatRule.inputProjection(try sourceTensor(rule.source!, for: key), factor: rule.factor)
                    plan.derived.append((key, rule.source!, "repeat_interleave(W/\(rule.factor), \(rule.factor), dim=1)"))
                case .outputProjection:
                    tensor = RepeatRule.outputProjection(try sourceTensor(rule.source!, for: key), factor: rule.factor)
                    plan.derived.append((key, rule.source!, "repeat_interleave(W, \(rule.factor), dim=0)"))
                case .zeros:
                    tensor = RepeatRule.zeros(shape: shape, dtype: floatDType)
                    plan.created.append((key, "zeros"))
                case .positionTable:
                    guard let level = Int(key.split(separator: ".").last ?? "") else {
                        throw PPError.badInput(rules.name, entry: key, "position_table rule on a key without a level index")
                    }
                    tensor = TensorView(floats: target.positionTable(level: level), shape: shape, dtype: floatDType)
                    plan.created.append((key, "sin-cos table, level \(level)"))
                }
            } else if rules.copySameName, source.tensors.contains(key) {
                tensor = try sourceTensor(key, for: key)
                plan.copied.append(key)
            } else {
                throw PPError.badInput(source.path, entry: key, "the PPFlow model needs it and no rule or source key provides it")
            }
            guard tensor.shape == shape else {
                throw PPError.badInput(source.path, entry: key, "shape \(tensor.shape) but the PPFlow model needs \(shape)")
            }
            out[key] = cast(tensor)
        }
        // Every source key must be used or explicitly dropped.
        let droppable = Dictionary(rules.dropped.map { ($0.key, $0.why) }, uniquingKeysWith: { a, _ in a })
        for name in source.tensors.names where !used.contains(name) {
            if let why = droppable[name] {
                plan.dropped.append((name, why))
            } else {
                throw PPError.badInput(source.path, entry: name, "unused by the \(rules.name) rules; refusing to drop it silently")
            }
        }
        plan.outputBytes = out.totalBytes

        var calibrationReport: CalibratedInitializer.Report?
        var initializerRecord = JSONObject([
            ("name", .string(options.initializer.rawValue)),
            ("rules", .string(options.rulesFile.map { "\(FileOutput.baseName(of: $0)) (--rules)" } ?? KeyRules.builtInName)),
            ("level_embedder", .string("zeros")),
        ])
        if options.initializer == .calibrated {
            guard let calibration = options.calibration else {
                throw PPError(.usage, entry: "--init calibrated", "needs --data LATENTS (safetensors with latents [N,C,H,W] and optional labels [N])")
            }
            guard objective == .velocity else {
                throw PPError(.usage, file: source.path, entry: "--init calibrated",
                    "fits the coarse levels to the source's velocity, so the source must be a velocity (SiT) model; this one is \(objective.rawValue)")
            }
            let sourceModel = Model(weights: try ModelWeights(config: sourceConfig, tensors: try ModelLoader.completeTensors(source, config: sourceConfig)))
            let report = try CalibratedInitializer.apply(to: &out, config: target, source: sourceModel, options: calibration, progress: options.progress)
            calibrationReport = report
            initializerRecord["data"] = .string(FileOutput.baseName(of: calibration.dataPath))
            initializerRecord["data_sha256"] = .string(report.dataSHA256)
            initializerRecord["calibration_samples"] = .int(Int64(report.samplesUsed))
            initializerRecord["seed"] = .int(Int64(bitPattern: calibration.seed))
            initializerRecord["ridge_factor"] = .double(calibration.ridgeFactor)
            if calibration.detailScale > 0 { initializerRecord["detail_scale"] = .double(calibration.detailScale) }
            initializerRecord["fits"] = report.json["levels"]
            for fit in report.fits {
                plan.derived.append((fit.tensor + ".weight", "calibration data", "ridge refit of the prediction rows"))
            }
        }

        var provenance = JSONObject([
            ("tool", .string(toolVersion)),
            ("source", .object(JSONObject([
                ("file", .string(FileOutput.baseName(of: source.path))),
                ("format", .string(source.containerDescription)),
                ("weights_file", source.weightsFile.map { .string($0) } ?? .null),
                ("state_dict", source.selectedStateDict.map { .string($0) } ?? .null),
                ("family", .string(source.family)),
                ("sha256", sourceSHA256.map { .string($0) } ?? .null),
            ]))),
            ("initializer", .object(initializerRecord)),
        ])
        provenance["objective_source"] = .string(objectiveSource)
        let native = nativeConfig(for: target, objective: objective, cfgScales: options.resolvedCFGScales,
                                  family: "PPFlow-\(options.levels)", provenance: provenance)
        return ConversionResult(tensors: out, config: target, nativeConfig: native, plan: plan, warnings: warnings,
                                calibration: calibrationReport)
    }

    /// Guidance scales a native config records when none are given: the paper's FID settings for PPFlow
    /// (no guidance at the coarsest level), DiT's usual 4.0 for a one-level model.
    public static func defaultCFGScales(levels: Int) -> [Double] {
        levels == 3 ? [1.0, 3.5, 3.75] : levels == 2 ? [1.0, 3.0] : [4.0]
    }

    /// config.json of a native folder (everything but model_sha256, which the writer adds).
    public static func nativeConfig(for config: ModelConfig, objective: Objective, cfgScales: [Double], family: String,
                                    provenance: JSONObject) -> JSONObject {
        let layouts = config.levels == 3 ? ["down_square", "down_w", "full"] : config.levels == 2 ? ["down_square", "full"] : ["full"]
        return JSONObject([
            ("format", .string(NativeCheckpoint.formatName)),
            ("format_version", .int(NativeCheckpoint.formatVersion)),
            ("family", .string(family)),
            ("architecture", .object(JSONObject([
                ("input_size", .int(Int64(config.inputSize))),
                ("patch_size", .int(Int64(config.patchSize))),
                ("in_channels", .int(Int64(config.inChannels))),
                ("hidden_size", .int(Int64(config.hiddenSize))),
                ("depth", .int(Int64(config.depth))),
                ("num_heads", .int(Int64(config.numHeads))),
                ("mlp_ratio", .double(config.mlpRatio)),
                ("num_classes", .int(Int64(config.numClasses))),
                ("learn_sigma", .bool(config.learnSigma)),
            ]))),
            ("pyramid", .object(JSONObject([
                ("levels", .int(Int64(config.levels))),
                ("thresholds", .array(config.thresholds.map { .double($0) })),
                ("layouts", .array(layouts.map { .string($0) })),
            ]))),
            ("guidance", .object(JSONObject([
                ("scales", .array(cfgScales.map { .double($0) })),
                ("channels", .string("all")),
            ]))),
            ("objective", .string(objective.rawValue)),
            ("time_convention", .string(objective.timeConvention)),
            ("time_features", .string(config.timeFeatures.rawValue)),
            ("provenance", .object(provenance)),
        ])
    }
}
