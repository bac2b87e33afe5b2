import PPCheckpoint
import PPJSON
import PPModel
import PPTensor
import PPTorchFormat

/// A train.py checkpoint `{model, ema, opt, args}` that the official PPFlow trainer resumes with
/// `--ckpt`, for moving a fine-tuning run to PyTorch DDP on many GPUs.
///
/// Two properties of the official trainer shape this file (docs/FORMATS.md):
/// - it reads `args` by attribute (`args.model`, `args.initialize_from`), so `args` is an
///   `argparse.Namespace`; `torch.load(weights_only=True)` (the default since torch 2.6) refuses that
///   class unless it is allow-listed, exactly as for the official trainer's own checkpoints;
/// - after loading it re-applies `initialize_from`, which would overwrite the resumed weights, so
///   `initialize_from` is None here.
public enum TrainCheckpointExport {
    public struct OptimizerState {
        public var step: Int
        public var expAvg: TensorDict        // first moments, by parameter name
        public var expAvgSq: TensorDict      // second moments
        public var learningRate: Double
        public var weightDecay: Double
        /// Per-tensor step counts where they differ from `step` (tensors that trained in fewer phases).
        public var tensorSteps: [String: Int] = [:]
        public init(step: Int, expAvg: TensorDict, expAvgSq: TensorDict, learningRate: Double, weightDecay: Double) {
            self.step = step; self.expAvg = expAvg; self.expAvgSq = expAvgSq
            self.learningRate = learningRate; self.weightDecay = weightDecay
        }
    }

    /// The official constructor name (`PPFlow_XL_2` ...) for released sizes, else nil.
    public static func officialModelName(_ config: ModelConfig) -> String? {
        let size: String
        switch (config.hiddenSize, config.depth, config.numHeads) {
        case (1152, 28, 16): size = "XL"
        case (1024, 24, 16): size = "L"
        case (768, 12, 12): size = "B"
        case (384, 12, 6): size = "S"
        default: return nil
        }
        return config.levels > 1 ? "PPFlow_\(size)_\(config.levels)" : "SiT-\(size)/\(config.patchSize)"
    }

    public static func write(model: TensorDict, ema: TensorDict, config: ModelConfig, objective: Objective,
                             optimizer: OptimizerState? = nil, cfgScales: [Double]? = nil, to path: String) throws {
        let names = model.names
        let scales = cfgScales ?? FromDiT.defaultCFGScales(levels: config.levels)
        // AdamW param indices follow model.parameters() order = state_dict order (pos_embed included).
        var state: [(Int64, TorchWriteValue)] = []
        if let optimizer {
            for (index, name) in names.enumerated() {
                guard let m = optimizer.expAvg[name], let v = optimizer.expAvgSq[name] else { continue }
                state.append((Int64(index), .dict([
                    ("step", .tensor(TensorView(floats: [Float(optimizer.tensorSteps[name] ?? optimizer.step)], shape: []))),
                    ("exp_avg", .tensor(m)),
                    ("exp_avg_sq", .tensor(v)),
                ])))
            }
        }
        let paramGroup: TorchWriteValue = .dict([
            ("lr", .float(optimizer?.learningRate ?? 1e-4)),
            ("betas", .tuple([.float(0.9), .float(0.999)])),
            ("eps", .float(1e-8)),
            ("weight_decay", .float(optimizer?.weightDecay ?? 0)),
            ("amsgrad", .bool(false)),
            ("maximize", .bool(false)),
            ("foreach", .none),
            ("capturable", .bool(false)),
            ("differentiable", .bool(false)),
            ("fused", .none),
            ("params", .list(names.indices.map { .int(Int64($0)) })),
        ])
        let modelName = officialModelName(config) ?? "custom (not an official constructor; build the model yourself)"
        let args: TorchWriteValue = .namespace([
            ("data_path", .string("")),
            ("results_dir", .string("results")),
            ("model", .string(modelName)),
            ("patch_level", .int(Int64(config.levels))),
            ("image_size", .int(Int64(config.inputSize * 8))),
            ("num_classes", .int(Int64(config.numClasses))),
            ("epochs", .int(1400)),
            ("global_batch_size", .int(256)),
            ("global_seed", .int(0)),
            ("vae", .string("ema")),
            ("num_workers", .int(4)),
            ("log_every", .int(100)),
            ("ckpt_every", .int(50_000)),
            ("sample_every", .int(10_000)),
            ("cfg_scales", .list(scales.map { .float($0) })),
            ("wandb", .bool(false)),
            ("ckpt", .none),
            ("initialize_from", .none),
            ("path_type", .string("Linear")),
            ("prediction", .string(objective == .epsilon ? "noise" : "velocity")),
            ("loss_weight", .none),
            ("sample_eps", .none),
            ("train_eps", .none),
        ])
        let root: TorchWriteValue = .dict([
            ("model", .stateDict(model)),
            ("ema", .stateDict(ema)),
            ("opt", .dict([
                ("state", .intDict(state)),
                ("param_groups", .list([paramGroup])),
            ])),
            ("args", args),
        ])
        // The toolkit's description record: the file reads back with no flags (heads, objective, pyramid).
        let family = config.levels > 1 ? "PPFlow-\(config.levels)" : (objective == .epsilon ? "DiT" : "SiT")
        let description = FromDiT.nativeConfig(for: config, objective: objective, cfgScales: scales, family: family, provenance: JSONObject())
        try TorchWriter.write(root, to: path, archiveName: CheckpointWriter.archiveName(for: path),
                              description: NativeCheckpoint.descriptionRecord(of: description))
    }
}
